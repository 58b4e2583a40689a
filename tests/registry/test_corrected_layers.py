"""A corrected input layer reaches the registry through the real pipeline (issue 13, item 2),
and history records changes, not repeats (item 7).

One small sample is run once (module fixture); each test works on a copy. The village
常家庄村 (130609100201) of 丰庄镇 is corrected into 常家庄社区 (130609001005) of 青宁街道,
the township polygons are redrawn to match, and the farmland parcels under one patch are
removed. Run times are fixed with a patched clock so that ``report --as-of`` can tell the
dates apart.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyogrio
import pytest
import shapely
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.ops import runlog
from pipeline.registry.store import same_patch_value
from pipeline.schema import DERIVED_COLUMNS, EVENTS_TABLE, PATCHES_LAYER, E, EventKind, P
from tests.samples import write_sample_config

OLD_VILLAGE, NEW_VILLAGE = "130609100201", "130609001005"
OLD_TOWN, NEW_TOWN = "130609100000", "130609001000"
FIRST, RETURNED, CORRECTED = (
    "2026-11-25T01:00:00+00:00",
    "2026-11-26T01:00:00+00:00",
    "2026-12-01T01:00:00+00:00",
)


def _invoke(monkeypatch, now: str, *args: str):
    monkeypatch.setattr(runlog, "utc_now", lambda: now)
    return CliRunner().invoke(cli, list(args))


def _registry(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    path = folder / "out" / "registry.gpkg"
    patches = pyogrio.read_dataframe(path, layer=PATCHES_LAYER).set_index(P.PATCH_ID)
    events = pyogrio.read_dataframe(path, layer=EVENTS_TABLE, read_geometry=False)
    return patches, events


@pytest.fixture(scope="module")
def first_run(sample_area, tmp_path_factory) -> Path:
    """A 600 px sample run once, on 2026-11-25 (shared; tests copy it)."""
    folder = sample_area(600, 2017, copy_to=tmp_path_factory.mktemp("corrected"))
    config = write_sample_config(folder, folder / "out")
    with pytest.MonkeyPatch.context() as mp:
        result = _invoke(mp, FIRST, "run", "--config", str(config), "--date", "2026-11-25")
    assert result.exit_code == 0, result.output
    patches, _ = _registry(folder)
    assert (patches[P.VILLAGE_CODE] == OLD_VILLAGE).any(), "the sample has a patch to move"
    return folder


@pytest.fixture()
def area(first_run, tmp_path):
    """A private copy of the run (file times kept, so it is up to date)."""
    folder = tmp_path / "area"
    shutil.copytree(first_run, folder)
    return folder, write_sample_config(folder, folder / "out")


def _correct_grid(folder: Path) -> None:
    """常家庄村 becomes 常家庄社区 of 青宁街道: new code, name and township; the township
    polygons are redrawn so the grid stays consistent."""
    grids = folder / "grids.gpkg"
    villages = pyogrio.read_dataframe(grids, layer="village")
    townships = pyogrio.read_dataframe(grids, layer="township")
    moved = villages["code"] == OLD_VILLAGE
    outline = villages.geometry[moved].iloc[0]
    villages.loc[moved, ["code", "name", "township_code"]] = [NEW_VILLAGE, "常家庄社区", NEW_TOWN]
    geoms = townships.geometry.to_numpy()
    new, old = (
        (townships["code"] == NEW_TOWN).to_numpy(),
        (townships["code"] == OLD_TOWN).to_numpy(),
    )
    geoms[new] = shapely.union(geoms[new], outline)
    geoms[old] = shapely.difference(geoms[old], outline)
    townships = townships.set_geometry(list(geoms), crs=townships.crs)
    pyogrio.write_dataframe(villages, grids, layer="village")
    pyogrio.write_dataframe(townships, grids, layer="township")


def _remove_farmland_under(folder: Path, patch_geometry) -> None:
    path = folder / "farmland.gpkg"
    farmland = pyogrio.read_dataframe(path)
    layer = pyogrio.list_layers(path)[0][0]
    kept = farmland[~farmland.intersects(patch_geometry)]
    assert len(kept) < len(farmland)
    path.unlink()
    pyogrio.write_dataframe(kept, path, layer=layer)


def _return_file(folder: Path, patch_id: str) -> Path:
    path = folder / "return.csv"
    pd.DataFrame(
        {
            P.PATCH_ID: [patch_id],
            P.VERDICT: ["illegal"],
            P.RECT_METHOD: ["demolished_restored"],
            P.REMAINING_M2: [0],
            P.CHECKED_ON: ["2026-11-26"],
        }
    ).to_csv(path, index=False)
    return path


def _changed(before: pd.DataFrame, after: pd.DataFrame) -> dict[str, list[str]]:
    """Patch id -> derived columns whose value differs between two registry snapshots."""
    out = {}
    for pid in before.index:
        cols = [
            c
            for c in DERIVED_COLUMNS
            if not same_patch_value(c, before.at[pid, c], after.at[pid, c])
        ]
        if cols:
            out[pid] = cols
    return out


def _in_package(zip_path: Path) -> set[str]:
    stem = zip_path.stem
    code = stem.split("_", 1)[0]
    frame = pyogrio.read_dataframe(
        f"/vsizip/{zip_path}/{stem}/{code}_patches.gpkg", layer="patches"
    )
    return set(frame[P.PATCH_ID])


def test_a_corrected_layer_reaches_registry_packages_and_dated_reports(area, monkeypatch):
    """After a field return and a corrected grid and farmland layer, a plain ``run``:

    - gives every patch the derived attributes of its detection in ``assigned.gpkg``;
    - records one ``reassessed`` event per changed patch with the old and new values of
      exactly the changed columns, and keeps the imported verdict and rectification;
    - puts the moved patch into its new township's package, and records ``exported`` events
      only for patches whose package content changed;
    - leaves ``report --as-of`` before the correction on the old village and farmland.
    """
    folder, config = area
    patches, _ = _registry(folder)
    moved = patches.index[patches[P.VILLAGE_CODE] == OLD_VILLAGE][0]
    on_farmland = patches[(patches[P.FARMLAND_M2] > 0) & (patches.index != moved)].index[0]
    returned = _invoke(
        monkeypatch, RETURNED, "field", "import", "--config", str(config),
        str(_return_file(folder, moved)),
    )  # fmt: skip
    assert returned.exit_code == 0, returned.output
    before, events_before = _registry(folder)

    _correct_grid(folder)
    _remove_farmland_under(folder, patches.geometry[on_farmland])
    result = _invoke(monkeypatch, CORRECTED, "run", "--config", str(config), "--date", "2026-12-01")
    assert result.exit_code == 0, result.output
    after, events = _registry(folder)

    # the registry follows assigned.gpkg, patch by patch
    assigned = pyogrio.read_dataframe(folder / "out" / "changes" / "2016_2017" / "assigned.gpkg")
    points = shapely.point_on_surface(after.geometry.to_numpy())
    hit, det = shapely.STRtree(assigned.geometry.to_numpy()).query(points, predicate="within")
    assert sorted(hit) == list(range(len(after)))
    for i, d in zip(hit, det, strict=True):
        for col in DERIVED_COLUMNS:
            assert same_patch_value(col, after[col].iloc[i], assigned[col].iloc[d]), col
    changed = _changed(before, after)
    assert set(changed[moved]) >= {P.VILLAGE_CODE, P.VILLAGE_NAME, P.TOWNSHIP_CODE}
    assert P.FARMLAND_M2 in changed[on_farmland]
    assert after.at[moved, P.VILLAGE_NAME] == "常家庄社区"
    assert after.at[on_farmland, P.FARMLAND_M2] < before.at[on_farmland, P.FARMLAND_M2]

    # one event per changed patch, old -> new of exactly the changed columns
    new_events = events.iloc[len(events_before) :]
    reassessed = new_events[new_events[E.KIND] == EventKind.REASSESSED]
    assert sorted(reassessed[E.PATCH_ID]) == sorted(changed)
    for pid, text in zip(reassessed[E.PATCH_ID], reassessed[E.VALUES], strict=True):
        values = json.loads(text)
        assert set(values) == {k for c in changed[pid] for k in (c, f"{c}_before")}
        for col in changed[pid]:
            assert same_patch_value(col, values[f"{col}_before"], before.at[pid, col])
            assert same_patch_value(col, values[col], after.at[pid, col])
    # the field return is kept
    assert after.at[moved, P.VERDICT] == "illegal" and after.at[moved, P.REMAINING_M2] == 0
    assert after.at[moved, P.RECT_METHOD] == "demolished_restored"
    kept = [P.VERDICT, P.REMAINING_M2, P.FIRST_SEEN, P.LAST_SEEN, P.CHECKED_ON]
    pd.testing.assert_frame_equal(after[kept], before[kept])

    # the moved patch is in its new township's package; exported events only where changed
    exports = folder / "out" / "exports" / "2026-12-01"
    new_zip = next(exports.glob(f"{NEW_TOWN}_*.zip"))
    assert moved in _in_package(new_zip)
    assert all(moved not in _in_package(z) for z in exports.glob("*.zip") if z != new_zip)
    exported = new_events[new_events[E.KIND] == EventKind.EXPORTED]
    assert sorted(exported[E.PATCH_ID]) == sorted(set(changed) | {moved})

    # rates as of a date before the correction use the attributes of that date
    for as_of, date in (("2026-11-30", "2026-12-02"), ("2026-12-01", "2026-12-03")):
        report = _invoke(
            monkeypatch, CORRECTED, "report", "--config", str(config), "--date", date,
            "--as-of", as_of,
        )  # fmt: skip
        assert report.exit_code == 0, report.output
    rates = {
        as_of: pd.read_csv(
            folder / "out" / "reports" / date / "rates.csv", dtype={"code": str},
            encoding="utf-8-sig",
        ).set_index(["level", "code"])
        for as_of, date in (("old", "2026-12-02"), ("new", "2026-12-03"))
    }  # fmt: skip
    n_old = int((before[P.VILLAGE_CODE] == OLD_VILLAGE).sum())
    assert rates["old"].loc[("village", OLD_VILLAGE), "n_patches"] == n_old
    assert rates["old"].loc[("village", OLD_VILLAGE), "n_illegal"] == 1
    assert ("village", NEW_VILLAGE) not in rates["old"].index or (
        rates["old"].loc[("village", NEW_VILLAGE), "n_patches"] == 0
    )
    assert rates["new"].loc[("village", NEW_VILLAGE), "n_patches"] == n_old
    assert rates["new"].loc[("village", NEW_VILLAGE), "n_illegal"] == 1
    district = {k: r.xs("district", level="level").iloc[0] for k, r in rates.items()}
    farm_old, farm_new = before[P.FARMLAND_M2].sum(), after[P.FARMLAND_M2].sum()
    assert farm_new < farm_old
    for key, farm in (("old", farm_old), ("new", farm_new)):
        expected = district[key]["pending_farmland_m2"] + district[key]["construction_farmland_m2"]
        assert expected == pytest.approx(farm, abs=0.01)


def test_unchanged_inputs_add_no_event(area, monkeypatch):
    """A rerun with the same inputs on a later date, ``--force --from register`` and a
    second ``landwatch export`` of an unchanged registry add no event at all: packages are
    reused and nothing is recorded as exported again."""
    folder, config = area
    _, events = _registry(folder)
    for now, args in (
        ("2026-11-27T01:00:00+00:00", ("run", "--date", "2026-11-27")),
        (
            "2026-11-28T01:00:00+00:00",
            ("run", "--date", "2026-11-28", "--force", "--from", "register"),
        ),
        ("2026-11-28T02:00:00+00:00", ("export", "--date", "2026-11-28")),
    ):
        result = _invoke(monkeypatch, now, *args[:1], "--config", str(config), *args[1:])
        assert result.exit_code == 0, result.output
        assert len(_registry(folder)[1]) == len(events), args
