"""Fail fast: ``config check`` and ``run`` open every layer before any stage (pipeline.overlay.io.layer_check,
pipeline.ops.inputs.check_inputs).

The tiny county of tests/shapefiles.py: GBK Shapefiles without ``.cpg``, 9-digit township
codes, villages naming their township in the 12-digit form, a DLTB with mixed land-use codes.
"""

from __future__ import annotations

import zipfile

import geopandas as gpd
import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.config import load_config
from pipeline.errors import GridError, InputDataError
from pipeline.overlay.io.layer_check import check_layers
from tests import shapefiles as shp


def check(config) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["config", "check", "--config", str(config)])
    return result.exit_code, result.output


def test_every_layer_is_reported_with_its_encoding_and_codes(tmp_path):
    """One report per layer: features, CRS, the encoding found and why, and for the DLTB
    how many parcels the codes keep."""
    cfg = load_config(shp.write_county(tmp_path))
    reports = {r.key: r for r in check_layers(cfg.layers)}
    assert list(reports) == ["layers.township", "layers.village", "layers.farmland"]
    town = reports["layers.township"]
    assert (town.n_features, town.crs) == (2, "EPSG:4548")
    assert town.encoding.startswith("GB18030 (detected: no .cpg")
    assert reports["layers.farmland"].note == "2 of 6 with DLBM in 0101, 0102, 0103"


def test_config_check_passes_nine_digit_township_codes(tmp_path):
    """``config check`` on the county exits 0 and lists each layer with its encoding."""
    code, output = check(shp.write_county(tmp_path))
    assert code == 0, output
    assert "OK" in output
    assert "layers.township: XZQ_XZ.shp, 2 features, EPSG:4548, text GB18030" in output
    assert "layers.farmland: DLTB.shp, 6 features" in output


def test_config_check_names_layer_code_and_pattern_of_a_malformed_code(tmp_path):
    """A township code of 10 digits fails ``config check`` (exit 3), naming the layer, the
    code and the pattern."""
    towns = shp.townships_frame().assign(XZDM=["1306090010", shp.TOWN_B])
    code, output = check(shp.write_county(tmp_path, townships=towns))
    assert code == 3, output
    assert "bad_code in layer township (1306090010)" in output
    assert r"does not match the township code pattern '^\d{9}(?:000)?$'" in output
    assert "XZQ_XZ.shp" in output


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda d: d.joinpath("XZQ_CJ.prj").unlink(), "has no coordinate reference system"),
        (
            lambda d: d.joinpath("XZQ_CJ.cpg").write_text("UTF-8"),
            "not valid UTF-8 as the .cpg file ('UTF-8') says",
        ),
    ],
)
def test_config_check_opens_the_layers(tmp_path, damage, expected):
    """A village layer without CRS, or whose .cpg does not match its bytes, fails
    ``config check`` with the reason (it used to say OK without opening the layers)."""
    config = shp.write_county(tmp_path)
    damage(tmp_path)
    code, output = check(config)
    assert code == 3, output
    assert expected in output and "layers.village" in output


def test_missing_field_names_the_field_and_lists_those_found(tmp_path):
    """A misspelt field fails the check with the fields the layer has."""
    cfg = load_config(shp.write_county(tmp_path))
    bad = cfg.layers.village.__class__(**{**vars(cfg.layers.village), "name_field": "CJMC2"})
    layers = cfg.layers.__class__(**{**vars(cfg.layers), "village": bad})
    with pytest.raises(GridError, match=r"'CJMC2' not found; the layer has fields: CJDM, CJMC"):
        check_layers(layers)


def test_farmland_codes_that_match_nothing_fail_the_check(tmp_path):
    """Farmland ``codes`` that no parcel carries fail before any stage."""
    cfg = load_config(shp.write_county(tmp_path))
    bad = cfg.layers.farmland.__class__(**{**vars(cfg.layers.farmland), "codes": ("011",)})
    layers = cfg.layers.__class__(**{**vars(cfg.layers), "farmland": bad})
    with pytest.raises(InputDataError, match="no feature has DLBM in 011; the field holds: 0101"):
        check_layers(layers)


def test_run_fails_on_a_bad_grid_before_detect(tmp_path):
    """``landwatch run`` makes the same checks before the stages: a malformed township code
    stops it (exit 3) with nothing detected."""
    towns = shp.townships_frame().assign(XZDM=["1306090010", shp.TOWN_B])
    config = shp.write_county(tmp_path, townships=towns)
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--date", "2024-05-01"])
    assert result.exit_code == 3, result.output
    assert "1306090010" in result.output
    assert not list((tmp_path / "out").rglob("detections.gpkg"))


@pytest.mark.slow
def test_run_with_nine_digit_codes_and_gbk_names(tmp_path):
    """The whole pipeline runs on the county: the check passes, and the assigned patches
    carry the grid's Chinese names and 9-digit township codes."""
    config = shp.write_county(tmp_path)
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--date", "2024-05-01"])
    assert result.exit_code == 0, result.output
    (assigned,) = (tmp_path / "out").rglob("assigned.gpkg")
    (patch,) = gpd.read_file(assigned).itertuples()  # the new roof
    assert (patch.township_code, patch.township_name) == (shp.TOWN_A, "青宁街道")
    assert (patch.village_code, patch.village_name) == ("130609001001", "东村")
    # on 旱地 for three quarters, on 果园 (not farmland) for the rest
    assert patch.farmland_m2 / patch.area_m2 == pytest.approx(0.75, abs=0.1)
    registry = gpd.read_file(tmp_path / "out" / "registry.gpkg", layer="patches")
    assert list(registry["township_name"]) == ["青宁街道"]
    assert list(registry["village_name"]) == ["东村"]
    (package,) = (tmp_path / "out" / "exports" / "2024-05-01").glob("*.zip")
    assert package.name == f"{shp.TOWN_A}_青宁街道.zip"
    with zipfile.ZipFile(package) as zf:
        dbf_name = next(n for n in zf.namelist() if n.endswith(".dbf"))
        cpg = zf.read(dbf_name[:-4] + ".cpg").decode("ascii")
        fields = shp.dbf_text_fields(zf.read(dbf_name), cpg)
    assert (fields["town_name"], fields["vill_name"]) == (["青宁街道"], ["东村"])
