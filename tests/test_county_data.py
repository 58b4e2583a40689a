"""The whole pipeline on county data as it comes (issue 13, item 8).

The fixture (:mod:`tests.county`) is what a county bureau hands over: GBK Shapefiles without
``.cpg``, 9-digit township codes, a 三调 DLTB with mixed land-use codes and a separate YJJBNT,
approvals with Chinese document numbers, imagery in EPSG:4490 degrees, and field returns as
townships fill them (``.xls``, ``.xlsx``, GBK CSV, Chinese headers, rows left blank).

The pipeline runs once per module: a first ``landwatch run``, then the returns — the village
CSV and the township ``.xlsx`` through ``field import``, the township ``.xls`` dropped in the
inbox of a second run. Each test checks one promise on the outputs: names intact, farmland
only from 0101–0103, returns applied exactly, codes as they came.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import rasterio.crs
import shapely
from click.testing import CliRunner, Result

from pipeline.cli.main import cli
from pipeline.config import load_config
from pipeline.overlay.classify import REFS_SEPARATOR
from pipeline.schema import EVENTS_TABLE, PATCHES_LAYER, RC, SHAPEFILE_FIELDS, UNASSIGNED, E, P
from pipeline.units import geodesic_areas_m2
from tests.county import (
    CRS,
    FARMLAND_CODES,
    SHAPEFILES,
    County,
    Returns,
    build_county,
    check_county_files,
    write_returns,
)

RUN_DATE, RETURN_DATE = "2026-11-25", "2026-11-26"
slow = pytest.mark.slow


@dataclass(frozen=True)
class FirstRun:
    """The county, its workspace and the registry's patches after the first run."""

    county: County
    workspace: Path
    patches: pd.DataFrame


@dataclass(frozen=True)
class Imported:
    """The returns, the CLI results of importing them, and the registry afterwards."""

    returns: Returns
    field_import: Result
    second_run: Result
    workspace: Path
    patches: pd.DataFrame
    events: pd.DataFrame


@pytest.fixture(scope="module")
def county(sample_area, tmp_path_factory) -> County:
    return build_county(tmp_path_factory.mktemp("county"), sample_area(600, 2017))


@pytest.fixture(scope="module")
def first_run(county) -> FirstRun:
    """``landwatch run`` on the county, through the CLI, once per module."""
    result = CliRunner().invoke(cli, ["run", "--config", str(county.config), "--date", RUN_DATE])
    assert result.exit_code == 0, result.output
    workspace = load_config(county.config).workspace
    return FirstRun(county, workspace, _patches(workspace))


@pytest.fixture(scope="module")
def imported(first_run, tmp_path_factory) -> Imported:
    """The returns built from the first run's patches, then imported: the village CSV before
    the township ``.xlsx`` (its blank rows come after the village's values), the ``.xls``
    through the inbox of a second run. Exit codes are checked by the tests, not here."""
    returns = write_returns(first_run.patches, tmp_path_factory.mktemp("returns"))
    config = str(first_run.county.config)
    runner = CliRunner()
    field_import = runner.invoke(
        cli, ["field", "import", "--config", config, str(returns.csv), str(returns.xlsx)]
    )
    inbox = first_run.workspace / "inbox"
    inbox.mkdir(exist_ok=True)
    shutil.copy(returns.xls, inbox / returns.xls.name)
    second_run = runner.invoke(cli, ["run", "--config", config, "--date", RETURN_DATE])
    ws = first_run.workspace
    events = pyogrio.read_dataframe(ws / "registry.gpkg", layer=EVENTS_TABLE, read_geometry=False)
    return Imported(returns, field_import, second_run, ws, _patches(ws), events)


def _patches(workspace: Path) -> pd.DataFrame:
    return pyogrio.read_dataframe(workspace / "registry.gpkg", layer=PATCHES_LAYER)


def _assigned(patches: pd.DataFrame) -> pd.DataFrame:
    return patches[patches[P.TOWNSHIP_CODE] != UNASSIGNED]


# --------------------------------------------------------------------------- the inputs
def test_fixture_is_county_data_as_it_comes(county):
    """The fixture is what it claims, so a failure below is the pipeline's: Shapefiles with no
    ``.cpg``, language byte 0 and GBK text; 9-digit township codes; a DLTB mixing farmland
    with other land uses; imagery in EPSG:4490."""
    check_county_files(county)
    assert (county.townships["XZDM"].str.fullmatch(r"\d{9}")).all()
    assert (county.villages["CJDM"].str.fullmatch(r"\d{12}")).all()
    assert set(county.dltb["DLBM"]) > set(FARMLAND_CODES)


def test_config_check_passes(county):
    """``config check`` opens the layers (GBK found without being told) and the imagery
    headers, and accepts the 9-digit township codes and the DLTB code selection."""
    result = CliRunner().invoke(cli, ["config", "check", "--config", str(county.config)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


# --------------------------------------------------------------------------- names intact
@slow
def test_imagery_in_degrees_is_detected_on_the_projected_grid(first_run):
    """The EPSG:4490 imagery is warped onto ``area.crs`` (metres): the change score is
    written in it and the scene's new buildings come out as patches."""
    with rasterio.open(first_run.workspace / "changes" / "2016_2017" / "score.tif") as src:
        assert src.crs == rasterio.crs.CRS.from_string(CRS), src.crs
        assert src.res == pytest.approx((2.0, 2.0))
    assert len(first_run.patches) >= 10


@slow
def test_run_log_names_the_encoding_of_each_layer(first_run):
    """Nothing says GBK in the files; the run log says which encoding was detected for each
    of the six Shapefiles (GBK or its superset GB18030)."""
    logs = sorted((first_run.workspace / "logs").glob("*.jsonl"))
    lines = [line for log in logs for line in log.read_text("utf-8").splitlines()]
    messages = [json.loads(line)["message"] for line in lines]
    for name in SHAPEFILES:
        said = [m for m in messages if name in m and re.search("gbk|gb18030", m, re.I)]
        assert said, f"no log line gives the encoding of {name}"


@slow
def test_registry_names_are_the_grid_names(first_run):
    """Township and village names in the registry are the Chinese names of the GBK grid,
    not mojibake (青宁街道, not ÇàÄþ½ÖµÀ)."""
    patches, county = _assigned(first_run.patches), first_run.county
    towns = county.townships.set_index("XZDM")["XZMC"]
    villages = county.villages.set_index("CJDM")["CJMC"]
    assert len(patches) > 0
    names = patches[[P.TOWNSHIP_CODE, P.TOWNSHIP_NAME, P.VILLAGE_CODE, P.VILLAGE_NAME]]
    assert (patches[P.TOWNSHIP_NAME] == patches[P.TOWNSHIP_CODE].map(towns)).all(), names
    assert (patches[P.VILLAGE_NAME] == patches[P.VILLAGE_CODE].map(villages)).all(), names


@slow
def test_package_zip_names_carry_the_township_name(first_run):
    """Each township's package is ``{code}_{name}.zip`` with the Chinese name."""
    zips = {p.name for p in (first_run.workspace / "exports" / RUN_DATE).glob("*.zip")}
    towns = first_run.county.townships.set_index("XZDM")["XZMC"]
    for code in _assigned(first_run.patches)[P.TOWNSHIP_CODE].unique():
        assert f"{code}_{towns[code]}.zip" in zips, zips


@slow
def test_package_shapefile_decodes_with_its_cpg(first_run, tmp_path):
    """The package Shapefile's ``.cpg`` names the encoding its ``.dbf`` bytes are in: read
    with it, township names, village names and approval refs are the registry's."""
    towns = first_run.county.townships.set_index("XZDM")["XZMC"]
    patches = _assigned(first_run.patches)
    for code in patches[P.TOWNSHIP_CODE].unique():
        (package,) = (first_run.workspace / "exports" / RUN_DATE).glob(f"{code}_*.zip")
        shp = _extract_shapefile(package, tmp_path / code)
        encoding = shp.with_suffix(".cpg").read_text(encoding="ascii").strip()
        assert towns[code].encode(encoding) in shp.with_suffix(".dbf").read_bytes(), encoding
        read = pyogrio.read_dataframe(shp, encoding=encoding)
        read = read.set_index(SHAPEFILE_FIELDS[P.PATCH_ID])
        mine = patches[patches[P.TOWNSHIP_CODE] == code].set_index(P.PATCH_ID)
        field = SHAPEFILE_FIELDS
        assert (read.loc[mine.index, field[P.TOWNSHIP_NAME]] == towns[code]).all()
        assert (read.loc[mine.index, field[P.VILLAGE_NAME]] == mine[P.VILLAGE_NAME]).all()
        refs = read.loc[mine.index, field[P.APPROVAL_REFS]].fillna("")
        assert (refs == mine[P.APPROVAL_REFS].fillna("")).all()


def _extract_shapefile(package: Path, folder: Path) -> Path:
    with zipfile.ZipFile(package) as zf:
        names = [n for n in zf.namelist() if n.endswith("_patches.shp")]
        assert len(names) == 1, zf.namelist()
        stem = names[0][: -len(".shp")]
        folder.mkdir(parents=True)
        for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
            (folder / f"patches{ext}").write_bytes(zf.read(stem + ext))
    return folder / "patches.shp"


@slow
def test_approval_refs_are_the_chinese_document_numbers(first_run):
    """Each patch's approval refs are exactly the document numbers (冀政转征〔…〕…号) of the
    approvals it overlaps, computed here with shapely, and some patch has one."""
    approvals = first_run.county.approvals
    patches = first_run.patches
    left, right = shapely.STRtree(approvals.geometry.values).query(
        patches.geometry.values, predicate="intersects"
    )
    pieces = shapely.intersection(patches.geometry.values[left], approvals.geometry.values[right])
    has_area = shapely.area(pieces) > 0
    expected = [""] * len(patches)
    for i in np.unique(left[has_area]):
        docs = approvals["PZWH"].to_numpy()[right[has_area & (left == i)]]
        expected[i] = REFS_SEPARATOR.join(sorted(set(docs)))
    assert any(expected), "fixture: no detected patch overlaps an approval"
    assert patches[P.APPROVAL_REFS].fillna("").tolist() == expected


# --------------------------------------------------------------------------- farmland
@slow
def test_farmland_is_only_0101_to_0103(first_run):
    """``farmland_m2`` is the ellipsoidal area of each patch inside the DLTB parcels coded
    0101/0102/0103 only (orchard, forest, homestead and road parcels do not count);
    ``basic_farmland_m2`` the area inside YJJBNT. Both computed here with shapely."""
    county, patches = first_run.county, first_run.patches
    dltb = county.dltb
    farmland = dltb[dltb["DLBM"].isin(FARMLAND_CODES)]
    others = dltb[~dltb["DLBM"].isin(FARMLAND_CODES)]
    assert (_inside_m2(patches, others) > 1.0).any(), "fixture: no patch on non-farmland codes"
    np.testing.assert_allclose(patches[P.FARMLAND_M2], _inside_m2(patches, farmland), atol=0.01)
    np.testing.assert_allclose(
        patches[P.BASIC_FARMLAND_M2], _inside_m2(patches, county.yjjbnt), atol=0.01
    )


def _inside_m2(patches: pd.DataFrame, layer) -> np.ndarray:
    """Ellipsoidal area (m², as the pipeline measures, in the CRS it works in) of the part of
    each patch inside ``layer``: pairwise intersections, unioned per patch (overlapping
    polygons count once; one big union first is both slower and less robust in GEOS)."""
    geoms = patches.geometry.values
    left, right = shapely.STRtree(layer.geometry.values).query(geoms, predicate="intersects")
    pieces = shapely.intersection(geoms[left], layer.geometry.values[right])
    per_patch = [shapely.union_all(pieces[left == i]) for i in range(len(geoms))]
    return geodesic_areas_m2(per_patch, CRS)


# --------------------------------------------------------------------------- codes
@slow
def test_township_codes_are_stored_as_they_came(first_run):
    """9-digit township codes are kept as 9 digits (not padded, not rejected) in the
    registry and the rates, and each village sits under its own township's code."""
    patches, county = _assigned(first_run.patches), first_run.county
    assert set(patches[P.TOWNSHIP_CODE]) <= set(county.townships["XZDM"])
    town_of = county.villages.set_index("CJDM")["XZDM"]
    assert (patches[P.TOWNSHIP_CODE] == patches[P.VILLAGE_CODE].map(town_of)).all()
    rates = _rates(first_run.workspace, RUN_DATE)
    townships = rates[rates[RC.LEVEL] == "township"]
    assert set(townships[RC.CODE]) - {UNASSIGNED} == set(patches[P.TOWNSHIP_CODE])
    villages = rates[rates[RC.LEVEL] == "village"].set_index(RC.CODE)
    known = villages.index[villages.index != UNASSIGNED]
    assert (villages.loc[known, RC.PARENT_CODE] == known.map(town_of)).all()


def _rates(workspace: Path, date: str) -> pd.DataFrame:
    path = workspace / "reports" / date / "rates.csv"
    return pd.read_csv(path, dtype={RC.CODE: str, RC.PARENT_CODE: str}, encoding="utf-8-sig")


# --------------------------------------------------------------------------- returns
@slow
def test_every_return_file_is_imported(imported):
    """``field import`` takes the GBK CSV and the ``.xlsx``; the ``.xls`` dropped in the inbox
    is imported by the next run and moved to ``inbox/done``."""
    assert imported.field_import.exit_code == 0, imported.field_import.output
    assert imported.second_run.exit_code == 0, imported.second_run.output
    inbox = imported.workspace / "inbox"
    assert (inbox / "done" / imported.returns.xls.name).exists(), list(inbox.rglob("*"))


@slow
def test_filled_rows_are_applied_exactly(imported):
    """Each filled row gives its verdict, method and remaining area (亩 converted to m²),
    with Chinese values and header synonyms; a village's values survive the township's
    blank row for the same patch imported after them."""
    expected = imported.returns.expected
    filled = expected[expected["source"] != ""]
    got = imported.patches.set_index(P.PATCH_ID).loc[filled.index]
    assert got[P.VERDICT].tolist() == filled["verdict"].tolist()
    assert _texts(got[P.RECT_METHOD]) == _texts(filled["rect_method"])
    np.testing.assert_allclose(
        got[P.REMAINING_M2].astype(float), filled["remaining_m2"].astype(float), atol=0.01
    )


def _texts(values: pd.Series) -> list[str | None]:
    """Values as text, None for missing (None, NaN, NA or "")."""
    return [v if isinstance(v, str) and v else None for v in values]


@slow
def test_import_summary_counts_the_rows_not_filled(imported):
    """``field import`` says how many rows of each file were left blank ("not filled"), so
    an unfinished return is visible instead of applied in silence."""
    text = " ".join(imported.field_import.output.split())  # undo the console's line wrapping
    kinds = imported.returns.expected["kind"]
    towns = imported.returns.expected["township_code"]
    second = sorted(set(towns))[1]  # the township answering in .xlsx
    n_xlsx = int((kinds[towns == second].isin(["blank", "village"])).sum())
    for name, n in ((imported.returns.csv.name, 1), (imported.returns.xlsx.name, n_xlsx)):
        found = re.search(rf"{re.escape(name)}: .*?(\d+) not filled", text)
        assert found and int(found.group(1)) == n, (name, n, text)


@slow
def test_blank_rows_stay_pending_without_event(imported):
    """A row with only the pre-filled patch id, village and area changes nothing: the patch
    stays pending and no field event is written for it; filled rows have theirs."""
    expected = imported.returns.expected
    blank = expected.index[expected["source"] == ""]
    assert len(blank) > 0, "fixture: no blank row"
    patches = imported.patches.set_index(P.PATCH_ID)
    assert (patches.loc[blank, P.VERDICT] == "pending").all(), patches.loc[blank, P.VERDICT]
    field = imported.events[imported.events[E.SOURCE].astype(str).str.startswith("field:")]
    assert not field[E.PATCH_ID].isin(blank).any(), field[field[E.PATCH_ID].isin(blank)]
    sources = field.groupby(E.PATCH_ID)[E.SOURCE].agg(" ".join)  # "field:<file>#<row> ..."
    for pid, source in expected.loc[expected["source"] != "", "source"].items():
        assert f"field:{source}#" in sources.get(pid, ""), (pid, source, sources.get(pid))


@slow
def test_rates_count_blank_rows_as_pending(imported):
    """The report after the import counts every patch in exactly one verdict category, the
    blank rows as pending (the unfilled returns are visible, not lost)."""
    rates = _rates(imported.workspace, RETURN_DATE)
    categories = [RC.N_PENDING, RC.N_LEGAL, RC.N_ILLEGAL, RC.N_FALSE_CHANGE, RC.N_OTHER]
    assert (rates[categories].sum(axis=1) == rates[RC.N_PATCHES]).all(), rates
    expected = imported.returns.expected
    pending = expected[expected["verdict"] == "pending"].groupby("township_code").size()
    towns = rates[rates[RC.LEVEL] == "township"].set_index(RC.CODE)
    for code, n in pending.items():
        assert towns.loc[code, RC.N_PENDING] == n, (code, towns.loc[code])
    district = rates[rates[RC.LEVEL] == "district"].iloc[0]
    assert district[RC.N_PENDING] == (imported.patches[P.VERDICT] == "pending").sum()
