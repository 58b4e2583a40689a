"""Nightly operation: inbox, run log, and a battery of bad inputs.

Every bad input must give a clear error that names the file and the problem, a non-zero
exit code, and leave the registry's patches and events as they were.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
import yaml
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.schema import EVENTS_TABLE, PATCHES_LAYER, RUNS_TABLE, P, R
from tests.samples import ROOT, write_sample_config

DATE = "2026-11-25"


@pytest.fixture(scope="module")
def small_run(sample_area, tmp_path_factory) -> Path:
    """A small sample with one good run done (shared; each test works on a copy)."""
    folder = sample_area(800, 2017, copy_to=tmp_path_factory.mktemp("small"))
    config = write_sample_config(folder, folder / "out")
    result = _run(config)
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture()
def area(small_run, tmp_path):
    """A private copy of the small sample and its workspace (file times kept, so the copy
    is up to date: stage inputs are recorded relative to the config's folder)."""
    folder = tmp_path / "area"
    shutil.copytree(small_run, folder)
    config = write_sample_config(folder, folder / "out")
    return folder, config


def _run(config: Path, *args: str):
    return CliRunner().invoke(cli, ["run", "--config", str(config), "--date", DATE, *args])


def _registry(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    path = folder / "out" / "registry.gpkg"
    patches = pyogrio.read_dataframe(path, layer=PATCHES_LAYER)
    events = pyogrio.read_dataframe(path, layer=EVENTS_TABLE, read_geometry=False)
    return patches.drop(columns=[P.UPDATED_AT]), events


def _edit_config(config: Path, change) -> None:
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    change(raw)
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")


def _first_tile(folder: Path, epoch: str = "2017") -> Path:
    return sorted((folder / "imagery" / epoch).glob("*.tif"))[0]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _strip_crs(path: Path) -> None:
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    profile.pop("crs")
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _all_nodata(path: Path) -> None:
    with rasterio.open(path, "r+") as dst:
        dst.write(dst.read() * 0)


def _move_epoch_far_away(folder: Path) -> None:
    for path in (folder / "imagery" / "2017").glob("*.tif"):
        with rasterio.open(path, "r+") as dst:
            t = dst.transform
            dst.transform = rasterio.Affine(t.a, t.b, t.c + 500_000, t.d, t.e, t.f)


def _overlapping_grid(folder: Path) -> None:
    villages = pyogrio.read_dataframe(folder / "grids.gpkg", layer="village")
    villages.loc[0, "geometry"] = villages.geometry.iloc[0].buffer(50)
    pyogrio.write_dataframe(villages, folder / "grids.gpkg", layer="village")


def _duplicate_codes(folder: Path) -> None:
    villages = pyogrio.read_dataframe(folder / "grids.gpkg", layer="village")
    villages.loc[1, "code"] = villages["code"].iloc[0]
    pyogrio.write_dataframe(villages, folder / "grids.gpkg", layer="village")


def _invalid_polygon(folder: Path) -> None:
    villages = pyogrio.read_dataframe(folder / "grids.gpkg", layer="village")
    x0, y0, x1, y1 = villages.geometry.iloc[0].bounds
    bowtie = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])
    villages.loc[0, "geometry"] = shapely.MultiPolygon([bowtie])
    pyogrio.write_dataframe(villages, folder / "grids.gpkg", layer="village")


def _empty_approvals(folder: Path) -> None:
    approvals = pyogrio.read_dataframe(folder / "approvals.gpkg")
    pyogrio.write_dataframe(approvals.iloc[:0], folder / "approvals.gpkg", layer="approvals")


BATTERY = [
    ("truncated GeoTIFF", lambda f: _truncate(_first_tile(f)), "r0c0.tif: cannot be opened", 3),
    ("zero-byte file", lambda f: _zero_bytes(_first_tile(f)), "r0c0.tif: cannot be opened", 3),
    ("raster with no CRS", lambda f: _strip_crs(_first_tile(f)), "CRS", 3),
    (
        "all-nodata tile",
        lambda f: _all_nodata(_first_tile(f)),
        "r0c0.tif: holds no valid pixel",
        3,
    ),
    ("epochs that do not overlap", _move_epoch_far_away, "overlap", 3),
    ("grid with overlapping villages", _overlapping_grid, "overlap", 3),
    ("grid with duplicate codes", _duplicate_codes, "duplicate_code", 3),
    ("grid with an invalid polygon", _invalid_polygon, "invalid_geometry", 3),
    ("empty approvals layer", _empty_approvals, "has no features", 3),
]


@pytest.mark.parametrize(
    ("what", "damage", "expected", "code"), BATTERY, ids=[b[0] for b in BATTERY]
)
def test_bad_input_fails_clearly_and_leaves_the_registry(area, what, damage, expected, code):
    folder, config = area
    before = _registry(folder)
    damage(folder)
    result = _run(config)
    assert result.exit_code == code, result.output  # 3: bad input data
    assert expected.lower() in result.output.lower(), result.output
    after = _registry(folder)
    pd.testing.assert_frame_equal(before[0], after[0])
    pd.testing.assert_frame_equal(before[1], after[1])


@pytest.mark.parametrize(
    ("change", "expected", "code"),
    [
        (lambda r: r["detect"].update(treshold="otsu"), "did you mean 'threshold'", 2),
        (lambda r: r["detect"].update(min_area_m2="200m2"), "'detect.min_area_m2' = '200m2'", 2),
        (
            lambda r: r["layers"]["farmland"].update(path="missing.gpkg"),
            "'layers.farmland.path'",
            2,
        ),
        (
            lambda r: r["imagery"]["epochs"].update({"2017": ["nowhere/*.tif"]}),
            "matches no files",
            2,
        ),
    ],
)
def test_bad_config_fails_clearly_and_leaves_the_registry(area, change, expected, code):
    folder, config = area
    before = _registry(folder)
    _edit_config(config, change)
    result = _run(config)
    assert result.exit_code != 0 and expected in result.output, result.output
    assert _registry(folder)[0].equals(before[0])


def test_noop_rerun_dry_run_and_status(area):
    _, config = area
    again = _run(config)  # a copied workspace is up to date too
    assert again.exit_code == 0 and "nothing to do" in again.output, again.output
    _edit_config(config, lambda r: r["detect"].update(min_area_m2=300))
    dry = _run(config, "--dry-run")
    assert "would run detect[2016_2017] — parameters changed" in " ".join(dry.output.split())
    assert "skipped" in dry.output  # nothing downstream is claimed before its inputs change
    status = CliRunner().invoke(cli, ["status", "--config", str(config)])
    assert (
        status.exit_code == 0 and "stale" in status.output and "parameters changed" in status.output
    )


def test_dry_run_on_a_fresh_workspace_with_the_bundled_config(sample_area, tmp_path):
    """``landwatch run --dry-run`` with the bundled config.yaml (its sample generated, no
    workspace yet) exits 0, says that every stage would run and why (a stage whose input
    is not made yet names it and the stage that makes it), and writes nothing."""
    sample = sample_area(300, 2017, copy_to=tmp_path / "sample")
    (sample / "grids.gpkg").rename(tmp_path / "grids.gpkg")  # where the bundled config has it
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(
        cli, ["run", "--config", str(tmp_path / "config.yaml"), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for stage in ("detect[2016_2017]", "inbox", "export", "report"):
        assert f"would run {stage} — no earlier run" in text, text
    for stage, made in (
        ("classify", "detections"),
        ("assign", "classified"),
        ("register", "assigned"),
    ):
        pair = "" if stage == "register" else "[2016_2017]"
        assert (
            f"would run {stage}{pair} — input changes/2016_2017/{made}.gpkg not made yet"
        ) in text, text
    assert sorted(tmp_path.rglob("*")) == before  # no workspace, no log, no state.json


def test_inbox_imports_moves_and_rejects(area):
    folder, config = area
    patches, _ = _registry(folder)
    inbox = folder / "out" / "inbox"
    inbox.mkdir()
    pid = patches[P.PATCH_ID].iloc[0]
    good = pd.DataFrame({"图斑编号": [pid], "核实认定意见": ["违法"], "剩余未整改面积": ["0"]})
    good.to_csv(inbox / "township_a.csv", index=False, encoding="gbk")
    pd.DataFrame({"patch_id": ["130609201799999"], "verdict": ["legal"]}).to_csv(
        inbox / "bad.csv", index=False
    )
    result = _run(config)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    assert "; 2 file(s): 1 applied, 1 rejected, 0 unsupported, 0 left in place" in text, text
    assert (inbox / "done" / "township_a.csv").exists()
    assert (inbox / "rejected" / "bad.csv").exists()
    assert "130609201799999" in (inbox / "rejected" / "bad.csv.rejected.csv").read_text(
        encoding="utf-8-sig"
    )
    assert not list(inbox.glob("*.csv"))
    now, events = _registry(folder)
    assert now.set_index(P.PATCH_ID).loc[pid, P.VERDICT] == "illegal"
    assert (events["source"].str.startswith("field:township_a.csv")).any()
    assert "nothing to do" in _run(config).output  # the inbox is empty again


def test_run_writes_a_json_lines_log(area):
    folder, _ = area
    logs = sorted((folder / "out" / "logs").glob("*.jsonl"))
    assert logs
    entries = [json.loads(line) for line in logs[0].read_text(encoding="utf-8").splitlines()]
    stages = {e["stage"]: e for e in entries if "stage" in e}
    assert stages["detect[2016_2017]"]["status"] == "ran"
    assert {"time", "level", "message", "run_id"} <= set(entries[0])


def test_json_lines_log_keeps_landwatch_info_and_other_libraries_warnings(tmp_path):
    """The run log holds landwatch's INFO records, but only WARNING and above from other
    libraries (fontTools logs dozens of INFO lines per font subset)."""
    import logging

    from pipeline.ops.runlog import run_log

    path = tmp_path / "run.jsonl"
    with run_log(path, "r1"):
        logging.getLogger("pipeline.ops.stages").info("stage done")
        logging.getLogger("fontTools.subset").info("Closed glyph list")
        logging.getLogger("fontTools.subset").warning("a real problem")
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(e["logger"], e["message"]) for e in entries] == [
        ("pipeline.ops.stages", "stage done"),
        ("fontTools.subset", "a real problem"),
    ]


def test_interrupted_run_exits_130_records_it_and_resumes(area, monkeypatch):
    """Ctrl-C during detect: exit status 130 (as shells report SIGINT), one line saying the
    next run resumes, the run recorded as "interrupted", the registry untouched; the next
    run finishes the stage."""
    import pipeline.ops.stages

    folder, config = area
    before = _registry(folder)
    _edit_config(config, lambda r: r["detect"].update(min_area_m2=250))  # detect must rerun

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(pipeline.ops.stages, "detect_pair", interrupted)
        result = _run(config)
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and "Traceback" not in result.output
    runs = pyogrio.read_dataframe(folder / "out" / "registry.gpkg", layer=RUNS_TABLE)
    assert runs[R.OUTCOME].iloc[-1] == "interrupted"
    pd.testing.assert_frame_equal(before[0], _registry(folder)[0])
    again = _run(config)
    assert again.exit_code == 0, again.output
    assert "did not finish last time" in again.output or "ran" in again.output


def test_second_run_exits_at_once_while_the_workspace_is_locked(area):
    """Another run holds the lock: this one exits with 75 and says so, touching nothing."""
    from pipeline.ops.workspace import Workspace, WorkspaceLock

    folder, config = area
    before = _registry(folder)
    with WorkspaceLock(Workspace(folder / "out")):
        result = _run(config, "--force")
    assert result.exit_code == 75, result.output
    assert "in use by another landwatch run" in result.output
    pd.testing.assert_frame_equal(before[0], _registry(folder)[0])


def test_stage_geopackages_depend_on_their_rows_only(tmp_path):
    """The same patches written twice give the same bytes (GDAL's last_change stamp is fixed
    for stage files), so a detect rerun that finds the same patches leaves classify's input
    fingerprint unchanged and classify is skipped."""
    import geopandas as gpd
    from shapely.geometry import box

    from pipeline.atomic import fingerprint_file
    from pipeline.ops.stages import _write_gdf

    gdf = gpd.GeoDataFrame({"n": [1, 2]}, geometry=[box(0, 0, 1, 1), box(2, 2, 3, 3)], crs=3857)
    first, second = tmp_path / "a" / "detections.gpkg", tmp_path / "b" / "detections.gpkg"
    first.parent.mkdir()
    second.parent.mkdir()
    _write_gdf(gdf, first)
    time.sleep(0.01)  # the stamp has millisecond resolution
    _write_gdf(gdf, second)
    assert fingerprint_file(first) == fingerprint_file(second)
