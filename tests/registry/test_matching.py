"""Registering detections: id format and stability, matching, idempotent re-runs, relapse,
derived attributes that follow corrected inputs."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from pipeline.errors import StageError
from pipeline.registry.matching import register_detections
from pipeline.registry.store import empty_state
from pipeline.schema import E, EventKind, P, Verdict
from tests.detections import CRS, NOW, make_detections


def register(state, det, now=NOW, run_id="run"):
    return register_detections(state, det, run_id=run_id, now=now, county_code="130609")


def by_id(state):
    return state.patches.set_index(P.PATCH_ID)


def test_new_patches_get_readable_ids_north_first():
    det = make_detections([box(0, 0, 20, 20), box(0, 100, 20, 120), box(50, 100, 70, 120)])
    state, summary = register(empty_state(CRS), det)
    ids = by_id(state)
    assert summary.n_new == 3 and summary.new_ids[0] == "130609201700001"
    # north first, then west to east
    centroid_y = ids.geometry.centroid.y
    assert ids.index.tolist() == ["130609201700001", "130609201700002", "130609201700003"]
    assert centroid_y.iloc[0] > centroid_y.iloc[2]
    assert ids.geometry.centroid.x.iloc[0] < ids.geometry.centroid.x.iloc[1]
    assert (ids[P.VERDICT] == Verdict.PENDING).all()
    assert (ids[P.FIRST_SEEN] == "2017").all() and (ids[P.LAST_SEEN] == "2017").all()
    assert ids[P.REMAINING_M2].isna().all()
    assert state.events[E.KIND].tolist() == [EventKind.DETECTED] * 3
    assert state.events[E.EVENT_ID].tolist() == [1, 2, 3]
    assert (state.events[E.SOURCE] == "run").all()


def test_rerun_is_idempotent():
    det = make_detections([box(0, 0, 20, 20), box(100, 0, 130, 30)])
    once, _ = register(empty_state(CRS), det)
    twice, summary = register(once, det, now="2024-06-01T00:00:00Z", run_id="run-2")
    assert summary.n_new == 0 and summary.n_unchanged == 2
    assert twice.events.equals(once.events)
    assert twice.patches.equals(once.patches)


def test_ids_are_stable_and_serials_continue():
    first, _ = register(empty_state(CRS), make_detections([box(0, 0, 20, 20)]))
    # next period: the old patch seen again (shifted a little) and a new one
    det = make_detections(
        [box(1, 1, 21, 21), box(200, 0, 220, 20)], epoch_from="2017", epoch_to="2018"
    )
    second, summary = register(first, det)
    ids = by_id(second)
    assert summary.n_redetected == 1 and summary.n_new == 1
    assert ids.index.tolist() == ["130609201700001", "130609201800001"]
    assert ids.loc["130609201700001", P.LAST_SEEN] == "2018"
    assert ids.loc["130609201700001", P.FIRST_SEEN] == "2017"
    assert ids.loc["130609201700001", P.EPOCH_TO] == "2018"
    assert second.events[E.KIND].iloc[-2:].tolist() == [EventKind.REDETECTED, EventKind.DETECTED]


def test_ids_of_deleted_patches_are_never_reused():
    state, _ = register(empty_state(CRS), make_detections([box(0, 0, 20, 20)]))
    pruned = dataclasses.replace(state, patches=state.patches.iloc[0:0])
    _, summary = register(pruned, make_detections([box(500, 0, 520, 20)]))
    assert summary.new_ids == ("130609201700002",)  # serial 1 is in the events table


def test_year_falls_back_to_now_when_epoch_is_not_a_year():
    _, summary = register(empty_state(CRS), make_detections([box(0, 0, 20, 20)], epoch_to="spring"))
    assert summary.new_ids == ("130609202400001",)


def test_grown_patch_takes_new_geometry_and_records_areas():
    state, _ = register(empty_state(CRS), make_detections([box(0, 0, 20, 20)]))
    det = make_detections([box(0, 0, 30, 20)], epoch_from="2017", epoch_to="2018")
    grown, summary = register(state, det)
    assert summary.n_grown == 1
    patch = by_id(grown).iloc[0]
    assert patch[P.AREA_M2] == pytest.approx(600.0)
    assert patch.geometry.area == pytest.approx(600.0)
    values = json.loads(grown.events[E.VALUES].iloc[-1])
    assert values["area_m2_before"] == pytest.approx(400.0) and values["area_m2"] == 600.0
    assert grown.events[E.KIND].iloc[-1] == EventKind.GROWN


def test_relapse_reopens_a_rectified_illegal_patch_and_keeps_the_verdict():
    state, _ = register(empty_state(CRS), make_detections([box(0, 0, 20, 20)]))
    patches = state.patches.copy()
    patches[P.VERDICT] = Verdict.ILLEGAL.value
    patches[P.REMAINING_M2] = 0.0  # rectified in the field
    state = dataclasses.replace(state, patches=patches)
    det = make_detections([box(2, 2, 18, 18)], epoch_from="2017", epoch_to="2018")
    relapsed, summary = register(state, det)
    patch = by_id(relapsed).iloc[0]
    assert summary.n_relapse == 1
    assert patch[P.VERDICT] == Verdict.ILLEGAL
    assert patch[P.REMAINING_M2] == pytest.approx(256.0)  # the detected area
    assert relapsed.events[E.KIND].iloc[-1] == EventKind.RELAPSE
    # the same period again changes nothing
    again, summary = register(relapsed, det)
    assert summary.n_relapse == 0 and len(again.events) == len(relapsed.events)


def test_detection_never_changes_a_verdict():
    state, _ = register(empty_state(CRS), make_detections([box(0, 0, 20, 20)]))
    patches = state.patches.assign(**{P.VERDICT: Verdict.FALSE_CHANGE.value})
    state = dataclasses.replace(state, patches=patches)
    later, summary = register(
        state, make_detections([box(0, 0, 20, 20)], epoch_from="2017", epoch_to="2018")
    )
    assert summary.n_new == 0 and by_id(later)[P.VERDICT].tolist() == [Verdict.FALSE_CHANGE]


def test_matching_threshold_and_fragments():
    state, _ = register(empty_state(CRS), make_detections([box(0, 0, 100, 10)]))
    det = make_detections(
        [
            box(0, 0, 10, 10),  # fragment inside the patch: overlap 1 of the smaller
            box(50, 0, 60, 10),  # a second fragment: absorbed, no new id
            box(95, 0, 125, 10),  # overlaps 50/300 of itself: 1/6 < 0.3 -> new patch
        ],
        epoch_from="2017",
        epoch_to="2018",
    )
    after, summary = register(state, det)
    assert (summary.n_redetected, summary.n_absorbed, summary.n_new) == (1, 1, 1)
    assert len(after.patches) == 2


def _values(state, i=-1) -> dict:
    return json.loads(state.events[E.VALUES].iloc[i])


def test_corrected_layers_update_derived_attributes_with_one_event():
    """The same period's detection with a renamed village, another township and less
    farmland (a corrected grid and farmland layer) updates the patch: one ``reassessed`` event
    with old and new values of exactly the changed columns; verdict, remaining area, seen
    dates and id are kept, and the same detection again adds nothing."""
    det = make_detections([box(0, 0, 20, 20)], village_codes=["130609100001"])
    state, _ = register(empty_state(CRS), det)
    judged = state.patches.assign(**{P.VERDICT: Verdict.ILLEGAL.value, P.REMAINING_M2: 150.0})
    state = dataclasses.replace(state, patches=judged)
    corrected = det.assign(
        **{
            P.VILLAGE_CODE: "130609101001",
            P.VILLAGE_NAME: "新村",
            P.TOWNSHIP_CODE: "130609101000",
            P.FARMLAND_M2: 120.0,
        }
    )
    after, summary = register(state, corrected, now="2024-06-01T00:00:00Z", run_id="fix")
    assert (summary.n_reassessed, summary.n_unchanged, summary.n_new) == (1, 0, 0)
    patch = by_id(after).iloc[0]
    assert (patch[P.VILLAGE_NAME], patch[P.TOWNSHIP_CODE]) == ("新村", "130609101000")
    assert patch[P.FARMLAND_M2] == 120.0 and patch[P.UPDATED_AT] == "2024-06-01T00:00:00Z"
    assert (patch[P.VERDICT], patch[P.REMAINING_M2]) == (Verdict.ILLEGAL, 150.0)
    assert (patch[P.FIRST_SEEN], patch[P.LAST_SEEN]) == ("2017", "2017")
    assert after.events[E.KIND].tolist() == [EventKind.DETECTED, EventKind.REASSESSED]
    assert _values(after) == {
        "farmland_m2": 120.0,
        "farmland_m2_before": 200.0,
        "township_code": "130609101000",
        "township_code_before": "130609100000",
        "village_code": "130609101001",
        "village_code_before": "130609100001",
        "village_name": "新村",
        "village_name_before": "一村",
    }
    again, summary = register(after, corrected, now="2024-07-01T00:00:00Z")
    assert summary.n_reassessed == 0 and summary.n_unchanged == 1
    assert again.events.equals(after.events) and again.patches.equals(after.patches)


def test_an_older_period_never_overwrites_newer_derived_attributes():
    """A patch seen again in 2018 takes the 2018 detection's derived attributes, recorded in
    its single ``redetected`` event; re-registering the 2017 detection (other names) then
    changes nothing."""
    old = make_detections([box(0, 0, 20, 20)], village_names=["旧村"])
    state, _ = register(empty_state(CRS), old)
    new = make_detections(
        [box(1, 0, 21, 20)], epoch_from="2017", epoch_to="2018", village_names=["新村"]
    )
    state, summary = register(state, new)
    assert (summary.n_redetected, summary.n_reassessed) == (1, 1)
    assert state.events[E.KIND].tolist() == [EventKind.DETECTED, EventKind.REDETECTED]
    values = _values(state)
    assert (values["village_name_before"], values["village_name"]) == ("旧村", "新村")
    again, summary = register(state, old)
    assert summary.n_unchanged == 1 and again.events.equals(state.events)
    assert by_id(again)[P.VILLAGE_NAME].tolist() == ["新村"]


def test_pairs_ending_in_the_same_epoch_do_not_take_turns():
    """Pairs 2016-2018 and 2017-2018 both see the patch with different farmland: only the
    pair the patch was registered from defines it, so alternating re-runs add no event."""
    a = make_detections([box(0, 0, 20, 20)], epoch_from="2016", epoch_to="2018", farmland=[100.0])
    b = make_detections([box(0, 0, 20, 20)], epoch_from="2017", epoch_to="2018", farmland=[300.0])
    state, _ = register(empty_state(CRS), a)
    state, _ = register(state, b)
    n_events = len(state.events)
    for det in (a, b, a, b):
        state, _ = register(state, det)
    assert len(state.events) == n_events
    assert by_id(state)[P.FARMLAND_M2].tolist() == [100.0]


def test_bad_inputs_are_reported():
    det = make_detections([box(0, 0, 20, 20)])
    with pytest.raises(StageError, match="village_code"):
        register(empty_state(CRS), det.drop(columns=[P.VILLAGE_CODE]))
    with pytest.raises(StageError, match="reproject"):
        register(empty_state(CRS), det.to_crs("EPSG:4326"))
    with pytest.raises(StageError, match="6 digits"):
        register_detections(empty_state(CRS), det, run_id="r", now=NOW, county_code="1306")


# A batch is a list of grid cells (column, row) on a 50 m lattice; each cell holds a 20 m
# square, jittered by up to 4 m so that re-detections overlap their patch but not neighbours.
cells = st.tuples(st.integers(0, 6), st.integers(0, 6), st.floats(-4, 4), st.floats(-4, 4))
batches = st.lists(st.lists(cells, min_size=0, max_size=8), min_size=1, max_size=4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_property_ids_unique_and_never_renumbered(batches):
    state = empty_state(CRS)
    seen: dict[str, str] = {}  # id -> first_seen
    for i, batch in enumerate(batches):
        geoms = [
            box(c * 50 + dx, r * 50 + dy, c * 50 + dx + 20, r * 50 + dy + 20)
            for c, r, dx, dy in batch
        ]
        det = make_detections(geoms, epoch_from=str(2016 + i), epoch_to=str(2017 + i))
        state, _ = register(state, det)
        ids = state.patches[P.PATCH_ID]
        assert ids.is_unique
        assert ids.str.fullmatch(r"130609\d{4}\d{5}").all()
        current = dict(zip(ids, state.patches[P.FIRST_SEEN]))
        for pid, first in seen.items():  # every earlier id is still there, unchanged
            assert current[pid] == first
        seen = current
        # a re-run of the same batch is a no-op
        again, summary = register(state, det)
        assert summary.n_new == 0 and len(again.events) == len(state.events)
