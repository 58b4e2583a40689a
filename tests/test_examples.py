"""The real-area example (examples/oscd_france) and the OSCD evaluation script's helpers.

The example needs the shared data folder (``$LANDWATCH_DATA``, default ``../shared/data``
beside the project); tests that read it skip with a reason when it is absent. Nothing is
written inside the project: grids and config copies go to ``tmp_path``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import shapely
import yaml

from pipeline.config import load_config
from tests.samples import ROOT

EXAMPLE = ROOT / "examples" / "oscd_france"
CONFIGS = ("bordeaux", "paris")


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


prepare = _load_module("oscd_prepare", EXAMPLE / "prepare.py")
eval_oscd = _load_module("eval_oscd", ROOT / "benchmarks" / "eval_oscd.py")


@pytest.fixture(scope="module")
def data() -> Path:
    folder = Path(os.environ.get("LANDWATCH_DATA") or ROOT.parent / "shared" / "data")
    if not (folder / "admin" / "france").is_dir() or not (folder / "oscd").is_dir():
        pytest.skip(f"shared data folder {folder} absent (set LANDWATCH_DATA to run these)")
    return folder


# --------------------------------------------------------------------------- without data
def test_build_grid_keeps_codes_as_text_and_drops_township_field():
    """Codes with leading zeros (département 01) stay text; villages get no township field."""
    communes = gpd.GeoDataFrame(
        {"code": ["01002", "01001"], "nom": ["L'Abergement-de-Varey", "Ambérieu "]},
        geometry=[shapely.box(1, 0, 2, 1), shapely.box(0, 0, 1, 1)],
        crs="EPSG:4326",
    )
    cantons = gpd.GeoDataFrame(
        {"code": ["01001"], "nom": ["Ambérieu-en-Bugey"]},
        geometry=[shapely.box(0, 0, 2, 1)],
        crs="EPSG:4326",
    )
    townships, villages = prepare.build_grid(communes, cantons)
    assert villages["code"].tolist() == ["01001", "01002"]  # sorted, zeros kept
    assert villages["name"].tolist() == ["Ambérieu", "L'Abergement-de-Varey"]
    assert list(villages.columns) == ["code", "name", "geometry"]
    assert townships["code"].tolist() == ["01001"]
    assert communes["nom"].iloc[1] == "Ambérieu "  # input untouched


def test_townships_from_communes_uses_the_commune_outline():
    """The fallback township is the union of the communes inside the unit, not its own
    (differently simplified) polygon."""
    communes = gpd.GeoDataFrame(
        {"code": ["75056"], "nom": ["Paris"]},
        geometry=[shapely.box(0, 0, 2, 2)],
        crs="EPSG:4326",
    )
    units = gpd.GeoDataFrame(
        {"code": ["75001"], "nom": ["Paris"]},
        geometry=[shapely.box(-0.1, -0.1, 2.2, 2.1)],
        crs="EPSG:4326",
    )
    out = prepare.townships_from_communes(communes, units)
    assert out["code"].tolist() == ["75001"]
    assert out.geometry.iloc[0].equals(shapely.box(0, 0, 2, 2))


def test_utm_zone_of_oscd_cities():
    assert eval_oscd.utm_crs(-0.57, 44.84) == "EPSG:32630"  # Bordeaux
    assert eval_oscd.utm_crs(2.33, 48.82) == "EPSG:32631"  # Paris
    assert eval_oscd.utm_crs(-48.0, -15.8) == "EPSG:32723"  # Aguas Claras, south


def test_find_cities_label_beside_or_under_cm(tmp_path):
    """A city needs imgs_1 and imgs_2; its label is <city>-cm.tif beside them or in cm/."""
    for name in ("a", "b", "c", "d"):
        (tmp_path / name / "imgs_1").mkdir(parents=True)
        if name != "d":
            (tmp_path / name / "imgs_2").mkdir()
    (tmp_path / "a" / "a-cm.tif").touch()
    (tmp_path / "b" / "cm").mkdir()
    (tmp_path / "b" / "cm" / "b-cm.tif").touch()
    cities = {c.name: c.label for c in eval_oscd.find_cities(tmp_path)}
    assert cities == {
        "a": tmp_path / "a" / "a-cm.tif",
        "b": tmp_path / "b" / "cm" / "b-cm.tif",
        "c": None,  # imagery only (like norcia)
    }


def test_prepare_without_the_data_says_where_it_looked(tmp_path, capsys):
    """No admin/france/ under the data folder: a one-line error naming the folder and the
    two ways to point at the data, exit status 2, nothing written."""
    assert (
        prepare.main(["--data", str(tmp_path), "--out", str(tmp_path / "g.gpkg"), "--depts", "33"])
        == 2
    )
    err = capsys.readouterr().err
    assert str(tmp_path / "admin" / "france") in err and "LANDWATCH_DATA" in err and "--data" in err
    assert not (tmp_path / "g.gpkg").exists()


# --------------------------------------------------------------------------- with data
def test_prepare_builds_a_small_grid(data, tmp_path):
    """Départements 75 (no cantons: arrondissement fallback) and 92 (36 communes)."""
    out = prepare.prepare_grid(["75", "92"], tmp_path / "grid.gpkg", data=data)
    assert sorted(pyogrio.list_layers(out)[:, 0]) == ["township", "village"]
    villages = pyogrio.read_dataframe(out, layer="village")
    townships = pyogrio.read_dataframe(out, layer="township")
    assert len(villages) == 37 and "township_code" not in villages
    assert villages["code"].str.fullmatch(r"\d{5}").all()
    assert "75001" in set(townships["code"])  # Paris, from its arrondissement
    assert "Châtillon" in set(villages["name"])  # accents survive
    info = pyogrio.read_info(out, layer="village")
    assert dict(zip(info["fields"], info["dtypes"]))["code"] == "object"  # text, not numbers


@pytest.mark.parametrize("city", CONFIGS)
def test_example_config_loads(city, data, tmp_path, monkeypatch):
    """The example config validates with load_config, its globs find the six bands of both
    epochs, and its epoch labels are the dates of dates.txt.

    The data folder comes from ``$LANDWATCH_DATA`` (the globs read it); the copy differs
    only in the grid (built in tmp_path) and the workspace."""
    source = EXAMPLE / f"{city}.yaml"
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    grid = prepare.prepare_grid(prepare.EXAMPLES[city], tmp_path / "grids.gpkg", data=data)
    monkeypatch.setenv("LANDWATCH_DATA", str(data))
    for globs in raw["imagery"]["epochs"].values():
        assert all(g.startswith("${LANDWATCH_DATA:-../../../shared/data}/oscd/") for g in globs)
    for layer in raw["layers"].values():
        layer["path"] = str(grid)
    raw["workspace"] = str(tmp_path / "out")
    copy = tmp_path / f"{city}.yaml"
    copy.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")

    cfg = load_config(copy)
    assert cfg.imagery.band_names == [
        "blue", "green", "red", "nir", "swir1", "swir2", "coastal", "cirrus",
    ]  # fmt: skip
    assert cfg.detect.cloud_screen_on(cfg.imagery.band_names)
    dates = (data / "oscd" / city / "dates.txt").read_text().split()
    expected = [f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in dates if d.isdigit()]
    assert cfg.imagery.labels == expected
    for label in cfg.imagery.labels:
        names = [p.name for p in cfg.imagery.files(label)]
        for pattern in cfg.imagery.band_files.values():
            assert sum(Path(n).match(pattern) for n in names) == 1, (label, pattern)
    assert cfg.area.resolution_m == 10
    codes = pyogrio.read_dataframe(grid, layer="village", columns=["code"])["code"]
    assert codes.str.fullmatch(cfg.assign.code_pattern.strip("^$")).all()
