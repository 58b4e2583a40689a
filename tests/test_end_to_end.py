"""`landwatch run` on a generated sample, checked against the sample's truth.

The figures (detection recall of illegal buildings, false patches per km²) are written to
``test-artifacts/e2e_figures.json``; the thresholds below are the acceptance bar.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.config import load_config
from pipeline.detection.accuracy import match_objects
from pipeline.schema import EVENTS_TABLE, PATCHES_LAYER, LegalHint, P
from pipeline.testing import assert_rates_contract, assert_registry_contract, right_village
from tests.samples import ROOT, RUN_DATE

pytestmark = pytest.mark.slow
MIN_AREA_M2 = 200.0


def _patches(config: Path) -> pd.DataFrame:
    cfg = load_config(config)
    return pyogrio.read_dataframe(cfg.workspace / "registry.gpkg", layer=PATCHES_LAYER)


def test_illegal_buildings_are_found_in_their_village(sample_run):
    """≥ 90 % of the illegal new buildings of ≥ 200 m² come out as patches assigned to the
    right village; false patches per km² are measured and kept low."""
    config = sample_run.config
    patches = _patches(config)
    truth = pyogrio.read_dataframe(sample_run.folder / "truth.gpkg", layer="changes")
    villages = pyogrio.read_dataframe(sample_run.folder / "grids.gpkg", layer="village")
    district = pyogrio.read_dataframe(sample_run.folder / "grids.gpkg", layer="district")

    big = truth[truth["area_m2"] >= MIN_AREA_M2].reset_index(drop=True)
    best, _ = match_objects(patches, big)
    ok = right_village(patches, big, best, villages)
    illegal = (big["kind"] == "illegal").to_numpy()
    recall = ok[illegal].mean()
    _, touched = match_objects(patches, truth)
    km2 = float(district.geometry.area.sum()) / 1e6
    false_per_km2 = float((~touched).sum()) / km2
    figures = {
        "illegal_ge_200_m2": int(illegal.sum()),
        "illegal_found_right_village": int(ok[illegal].sum()),
        "recall": round(float(recall), 4),
        "all_kinds_hit": int((best >= 0).sum()),
        "all_kinds": len(big),
        "patches": len(patches),
        "false_patches": int((~touched).sum()),
        "district_km2": round(km2, 3),
        "false_per_km2": round(false_per_km2, 3),
    }
    out = ROOT / "test-artifacts" / "e2e_figures.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=1))
    print(figures)
    assert illegal.sum() >= 8, "the sample should hold enough illegal buildings to measure"
    assert recall >= 0.9, figures
    assert false_per_km2 <= 1.0, figures


def test_legal_buildings_are_covered_by_approvals(sample_run):
    config = sample_run.config
    patches = _patches(config)
    truth = pyogrio.read_dataframe(sample_run.folder / "truth.gpkg", layer="changes")
    legal = truth[(truth["kind"] == "legal") & (truth["area_m2"] >= MIN_AREA_M2)].reset_index(
        drop=True
    )
    best, _ = match_objects(patches, legal)
    found = best[best >= 0]
    assert len(found) >= 0.8 * len(legal)
    hit = patches.iloc[found]
    assert (hit[P.APPROVAL_REFS].str.len() > 0).all()
    assert (hit[P.LEGAL_HINT] == LegalHint.PROBABLY_LEGAL).mean() >= 0.8, hit[[P.APPROVED_SHARE]]
    # and illegal ones are not: no approval touches them
    illegal = truth[truth["kind"] == "illegal"].reset_index(drop=True)
    best_i, _ = match_objects(patches, illegal)
    assert (patches.iloc[best_i[best_i >= 0]][P.LEGAL_HINT] == LegalHint.SUSPECTED).all()


def test_outputs_follow_the_contract(sample_run):
    config, output = sample_run.config, sample_run.output
    cfg = load_config(config)
    ws = cfg.workspace
    assert_registry_contract(ws / "registry.gpkg", county_code="130609")
    patches = _patches(config)
    assert (patches[P.VERDICT] == "pending").all()  # detection is a lead, never a verdict
    np.testing.assert_allclose(patches[P.AREA_MU], patches[P.AREA_M2] * 15 / 10000)
    assert (patches[P.FARMLAND_M2] <= patches[P.AREA_M2] + 1e-6).all()
    assert "unassigned" in set(patches[P.VILLAGE_CODE])  # the deliberate grid gap
    rates = pd.read_csv(
        ws / "reports" / RUN_DATE / "rates.csv", dtype={"code": str}, encoding="utf-8-sig"
    )
    assert_rates_contract(rates)
    assert (rates["code"].str.len() == 12).sum() >= len(
        rates
    ) - 2  # 12-digit text codes (+unassigned)
    for name in ("rates.xlsx", "report.html"):
        assert (ws / "reports" / RUN_DATE / name).stat().st_size > 0
    packages = sorted((ws / "exports" / RUN_DATE).glob("*.zip"))
    towns = set(patches[P.TOWNSHIP_CODE])
    assert len(packages) == len(towns)
    for dirname in ("changes/2016_2017/score.tif", "changes/2016_2017/mask.tif"):
        assert (ws / dirname).exists()
    assert "report:" in output


def test_rerun_is_a_no_op_and_ids_are_stable(sample_run):
    config = sample_run.config
    before = _patches(config)[[P.PATCH_ID, P.AREA_M2]]
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--date", RUN_DATE])
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output
    after = _patches(config)[[P.PATCH_ID, P.AREA_M2]]
    pd.testing.assert_frame_equal(before, after)


def test_field_return_round_trip_changes_the_rates(sample_run, tmp_path):
    """A field team fills the return template of its package; the import applies it once."""
    config = sample_run.config
    cfg = load_config(config)
    patches = _patches(config)
    ids = patches[patches[P.VILLAGE_CODE] != "unassigned"][P.PATCH_ID].tolist()[:3]
    area = patches.set_index(P.PATCH_ID)[P.AREA_M2]
    rows = pd.DataFrame(
        {
            "图斑编号": ids,
            "核实认定意见": ["违法", "illegal", "合法"],
            "整改方式": ["拆除复耕", "", ""],
            "剩余未整改面积": [0, round(area[ids[1]] / 2, 2), ""],
            "核查日期": ["2026-11-20"] * 3,
            "核查人": ["张三"] * 3,
        }
    )
    path = tmp_path / "return.csv"
    rows.to_csv(path, index=False, encoding="gbk")
    runner = CliRunner()
    result = runner.invoke(cli, ["field", "import", "--config", str(config), str(path)])
    assert result.exit_code == 0, result.output
    events = pyogrio.read_dataframe(
        cfg.workspace / "registry.gpkg", layer=EVENTS_TABLE, read_geometry=False
    )
    n_events = len(events)
    again = runner.invoke(cli, ["field", "import", "--config", str(config), str(path)])
    assert again.exit_code == 0, again.output
    events = pyogrio.read_dataframe(
        cfg.workspace / "registry.gpkg", layer=EVENTS_TABLE, read_geometry=False
    )
    assert len(events) == n_events  # the same file twice changes nothing

    now = _patches(config).set_index(P.PATCH_ID)
    assert now.loc[ids[0], P.VERDICT] == "illegal" and now.loc[ids[0], P.REMAINING_M2] == 0
    assert now.loc[ids[2], P.VERDICT] == "legal"

    report = runner.invoke(cli, ["report", "--config", str(config), "--date", "2026-11-26"])
    assert report.exit_code == 0, report.output
    rates = pd.read_csv(
        cfg.workspace / "reports" / "2026-11-26" / "rates.csv",
        dtype={"code": str},
        encoding="utf-8-sig",
    )
    district = rates[rates["level"] == "district"].iloc[0]
    assert district["n_illegal"] == 2 and district["n_rectified"] == 1
    expected = (area[ids[0]] + area[ids[1]] - round(area[ids[1]] / 2, 2)) / (
        area[ids[0]] + area[ids[1]]
    )
    assert district["rect_rate_area"] == pytest.approx(expected, abs=1e-4)


def test_bad_field_return_is_rejected_whole(sample_run, tmp_path):
    config = sample_run.config
    patches = _patches(config)
    pid = patches[P.PATCH_ID].iloc[-1]
    path = tmp_path / "bad.csv"
    pd.DataFrame({"patch_id": [pid, "130609201799999"], "verdict": ["legal", "illegal"]}).to_csv(
        path, index=False
    )
    result = CliRunner().invoke(cli, ["field", "import", "--config", str(config), str(path)])
    assert result.exit_code == 4, result.output
    assert (
        _patches(config).set_index(P.PATCH_ID).loc[pid, P.VERDICT] == "pending"
    )  # nothing applied
    report = load_config(config).workspace / "rejections" / "bad.rejected.csv"
    assert "130609201799999" in report.read_text(encoding="utf-8-sig")
