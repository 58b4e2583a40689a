"""Rates against hand-computed values (DESIGN §2 formulas), on tiny hand-made frames."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from pipeline.registry.field_returns import apply_return
from pipeline.registry.matching import register_detections
from pipeline.registry.rates import PART_OF, compute_rates, rates_as_of
from pipeline.registry.store import empty_state
from pipeline.schema import RATES_COLUMNS, UNASSIGNED, G, P, Verdict
from tests.detections import CRS, make_detections

T1, T2 = "130609100000", "130609101000"
V1, V2, V3 = "130609100001", "130609100002", "130609101001"
TOWNSHIPS = pd.DataFrame({G.CODE: [T2, T1], G.NAME: ["乙镇", "甲镇"]})
VILLAGES = pd.DataFrame(
    {G.CODE: [V1, V2, V3], G.NAME: ["一村", "二村", "三村"], G.TOWNSHIP_CODE: [T1, T1, T2]}
)


def patches(*rows):
    """Patches frame from (id, village, verdict, area, remaining, farmland[, epoch_to])."""
    records = []
    for pid, village, verdict, area, remaining, farmland, *epoch in rows:
        town = UNASSIGNED if village == UNASSIGNED else village[:9] + "000"
        records.append(
            {
                P.PATCH_ID: pid,
                P.VILLAGE_CODE: village,
                P.VILLAGE_NAME: UNASSIGNED if village == UNASSIGNED else "村",
                P.TOWNSHIP_CODE: town,
                P.TOWNSHIP_NAME: UNASSIGNED if village == UNASSIGNED else "镇",
                P.VERDICT: verdict,
                P.AREA_M2: float(area),
                P.REMAINING_M2: np.nan if remaining is None else float(remaining),
                P.FARMLAND_M2: float(farmland),
                P.EPOCH_TO: epoch[0] if epoch else "2017",
            }
        )
    return pd.DataFrame(records)


# a: partial rectification (1000 m², 400 left); b: legal; c: pending; d: fully rectified;
# e: unassigned illegal, unrectified
SAMPLE = patches(
    ("a", V1, "illegal", 1000, 400, 800),
    ("b", V1, "legal", 500, None, 200),
    ("c", V2, "pending", 300, None, 300),
    ("d", V2, "illegal", 200, 0, 0),
    ("e", UNASSIGNED, "illegal", 100, 100, 100),
)


@pytest.fixture
def rates():
    return compute_rates(SAMPLE, VILLAGES, TOWNSHIPS).set_index(["level", "code"])


def test_columns_and_rows(rates):
    out = rates.reset_index()
    assert tuple(out.columns) == RATES_COLUMNS
    assert out["level"].tolist() == ["district"] + ["township"] * 3 + ["village"] * 4
    assert out["code"].tolist() == [
        "130609000000", T1, T2, UNASSIGNED, V1, V2, V3, UNASSIGNED
    ]  # fmt: skip
    assert out.loc[1, "name"] == "甲镇" and out.loc[1, "parent_code"] == "130609000000"
    assert out.loc[4, "parent_code"] == T1


def test_partial_rectification_by_area_and_count(rates):
    v1 = rates.loc[("village", V1)]
    assert v1["rect_rate_area"] == pytest.approx(0.6)  # (1000 - 400) / 1000
    assert v1["rect_rate_count"] == 0.0  # no illegal patch has remaining 0
    assert v1["rectified_m2"] == 600.0 and v1["n_rectified"] == 0
    assert not v1["rect_rate_met"]


def test_illegal_ratio_and_upper_bound(rates):
    v1 = rates.loc[("village", V1)]
    assert v1["illegal_ratio"] == pytest.approx(800 / 1000)  # illegal / (legal + illegal)
    assert v1["illegal_ratio_upper"] == pytest.approx(800 / 1000)  # no pending here
    v2 = rates.loc[("village", V2)]
    assert math.isnan(v2["illegal_ratio"])  # no farmland in legal + illegal: undefined
    assert v2["illegal_ratio_upper"] == pytest.approx(300 / 300)  # pending counted illegal
    assert pd.isna(v2["illegal_ratio_met"])
    assert v2["rect_rate_area"] == 1.0 and v2["rect_rate_count"] == 1.0 and v2["rect_rate_met"]
    t1 = rates.loc[("township", T1)]
    assert t1["illegal_ratio"] == pytest.approx(800 / 1000)
    assert t1["illegal_ratio_upper"] == pytest.approx((800 + 300) / (1000 + 300))
    assert t1["rect_rate_area"] == pytest.approx(800 / 1200)
    assert t1["rect_rate_count"] == pytest.approx(1 / 2)


def test_district_sums_everything_including_unassigned(rates):
    d = rates.loc[("district", "130609000000")]
    assert d["n_patches"] == 5 and d["n_illegal"] == 3 and d["n_pending"] == 1
    assert d["illegal_m2"] == 1300.0
    assert d["illegal_mu"] == pytest.approx(1.95)  # 1300 m² / (10000/15)
    assert d["rect_rate_area"] == pytest.approx(800 / 1300)
    assert d["rect_rate_count"] == pytest.approx(1 / 3)
    assert d["illegal_ratio"] == pytest.approx(900 / 1100)
    assert d["illegal_ratio_upper"] == pytest.approx(1200 / 1400)
    assert not d["illegal_ratio_met"] and not d["zero_case"]


def test_empty_unit_is_undefined_not_zero(rates):
    for key in (("village", V3), ("township", T2)):
        row = rates.loc[key]
        assert row["n_patches"] == 0
        for col in ("illegal_ratio", "illegal_ratio_upper", "rect_rate_area", "rect_rate_count"):
            assert math.isnan(row[col]), col
        assert pd.isna(row["rect_rate_met"]) and pd.isna(row["illegal_ratio_met"])
        assert row["zero_case"]  # no illegal and no pending patch


def test_unassigned_patches_get_their_own_rows(rates):
    for level in ("township", "village"):
        row = rates.loc[(level, UNASSIGNED)]
        assert row["n_illegal"] == 1 and row["rect_rate_area"] == 0.0
        assert row["name"] == UNASSIGNED


def test_no_unassigned_row_when_all_assigned():
    out = compute_rates(SAMPLE[SAMPLE[P.PATCH_ID] != "e"], VILLAGES, TOWNSHIPS)
    assert UNASSIGNED not in out["code"].tolist()


def test_zero_case_needs_no_pending_either():
    out = compute_rates(
        patches(("x", V3, "pending", 100, None, 0)), VILLAGES, TOWNSHIPS, ("130609000000", "区")
    )
    row = out.set_index("code").loc[V3]
    assert not row["zero_case"]
    assert out.loc[0, "name"] == "区"


def test_year_filter_uses_epoch_to():
    frame = patches(
        ("x", V1, "illegal", 100, 0, 10, "2017"), ("y", V1, "illegal", 50, 50, 5, "2018")
    )
    out = compute_rates(frame, VILLAGES, TOWNSHIPS, year="2018").set_index("code")
    assert out.loc[V1, "n_illegal"] == 1 and out.loc[V1, "illegal_m2"] == 50.0


def test_split_parts_count_once_per_unit():
    """A patch split across V1 and V2 counts once in each village and once in T1."""
    frame = patches(("s-1", V1, "illegal", 60, 0, 0), ("s-2", V2, "illegal", 40, 10, 0))
    frame[PART_OF] = "s"
    out = compute_rates(frame, VILLAGES, TOWNSHIPS).set_index(["level", "code"])
    assert out.loc[("village", V1), "n_illegal"] == 1
    assert out.loc[("village", V1), "n_rectified"] == 1
    t1 = out.loc[("township", T1)]
    assert t1["n_patches"] == 1 and t1["n_illegal"] == 1
    assert t1["n_rectified"] == 0  # one part still has 10 m² left
    assert t1["illegal_m2"] == 100.0 and t1["rect_rate_area"] == pytest.approx(0.9)


def test_bad_target_is_rejected():
    with pytest.raises(ValueError, match="rect_rate_target"):
        compute_rates(SAMPLE, VILLAGES, TOWNSHIPS, rect_rate_target=85)


def test_rates_as_of_replays_events():
    det = make_detections([box(0, 0, 20, 20), box(0, 100, 20, 120)], village_codes=[V1, V1])
    state, summary = register_detections(
        empty_state(CRS), det, run_id="r", now="2024-05-01T00:00:00Z", county_code="130609"
    )
    first = summary.new_ids[0]
    rows = pd.DataFrame({P.PATCH_ID: [first], P.VERDICT: ["违法"], P.REMAINING_M2: ["100"]})
    state, _ = apply_return(
        state, rows, source_file="r.csv", fingerprint="f", now="2024-06-01T09:00:00Z",
        today=dt.date(2024, 6, 1),
    )  # fmt: skip
    before = rates_as_of(state, dt.date(2024, 5, 31), VILLAGES, TOWNSHIPS).iloc[0]
    after = rates_as_of(state, dt.date(2024, 6, 1), VILLAGES, TOWNSHIPS).iloc[0]
    none = rates_as_of(state, "2024-04-30", VILLAGES, TOWNSHIPS).iloc[0]
    assert (before["n_pending"], before["n_illegal"]) == (2, 0)
    assert (after["n_pending"], after["n_illegal"]) == (1, 1)
    assert after["rect_rate_area"] == pytest.approx(300 / 400)
    assert none["n_patches"] == 0
    current = compute_rates(state.patches, VILLAGES, TOWNSHIPS).iloc[0]
    assert after["rect_rate_area"] == current["rect_rate_area"]


def test_rates_as_of_use_the_attributes_of_that_date():
    """A patch moved to another village and township with less farmland by a corrected layer
    (a ``reassessed`` event on 2024-07-01) counts in its old units with its old farmland in
    the rates as of 2024-06-30, and in the new ones from 2024-07-01; its verdict from a field
    return before the correction is replayed in both."""
    det = make_detections([box(0, 0, 20, 20)], village_codes=[V1], farmland=[400.0])
    state, summary = register_detections(
        empty_state(CRS), det, run_id="r", now="2024-05-01T00:00:00Z", county_code="130609"
    )
    rows = pd.DataFrame({P.PATCH_ID: [summary.new_ids[0]], P.VERDICT: ["illegal"]})
    state, _ = apply_return(
        state, rows, source_file="r.csv", fingerprint="f", now="2024-06-01T09:00:00Z",
        today=dt.date(2024, 6, 1),
    )  # fmt: skip
    moved = det.assign(
        **{P.VILLAGE_CODE: V3, P.TOWNSHIP_CODE: T2, P.FARMLAND_M2: 100.0, P.VILLAGE_NAME: "三村"}
    )
    state, summary = register_detections(
        state, moved, run_id="fix", now="2024-07-01T02:00:00Z", county_code="130609"
    )
    assert summary.n_reassessed == 1
    before = rates_as_of(state, "2024-06-30", VILLAGES, TOWNSHIPS).set_index(["level", "code"])
    after = rates_as_of(state, "2024-07-01", VILLAGES, TOWNSHIPS).set_index(["level", "code"])
    for rates, town, village, farmland in ((before, T1, V1, 400.0), (after, T2, V3, 100.0)):
        assert rates.loc[("township", town), "n_illegal"] == 1
        assert rates.loc[("village", village), "n_illegal"] == 1
        assert rates.loc[("village", village), "illegal_farmland_m2"] == farmland
    assert before.loc[("village", V3), "n_patches"] == 0
    assert after.loc[("village", V1), "n_patches"] == 0
    current = compute_rates(state.patches, VILLAGES, TOWNSHIPS).set_index(["level", "code"])
    pd.testing.assert_frame_equal(after, current)


verdicts = st.sampled_from([v.value for v in Verdict])
patch_rows = st.lists(
    st.tuples(
        st.sampled_from([V1, V2, V3, UNASSIGNED]),
        verdicts,
        st.floats(1, 1000),
        st.floats(0, 1),
        st.floats(0, 1),
    ),
    max_size=20,
)


@settings(max_examples=40, deadline=None)
@given(patch_rows)
def test_property_levels_add_up_and_rates_are_shares(rows):
    """Townships (with unassigned) and villages partition the district; rates lie in [0, 1]."""
    frame = patches(
        *[
            (f"p{i}", v, verdict, area, area * rem if verdict == "illegal" else None, area * farm)
            for i, (v, verdict, area, rem, farm) in enumerate(rows)
        ]
    )
    if not len(frame):
        frame = patches(("x", V1, "legal", 1, None, 0)).iloc[0:0]
    out = compute_rates(frame, VILLAGES, TOWNSHIPS)
    district = out[out["level"] == "district"].iloc[0]
    for level in ("township", "village"):
        part = out[out["level"] == level]
        for col in ("n_patches", "n_illegal", "illegal_m2", "rectified_m2", "patches_m2"):
            assert part[col].sum() == pytest.approx(district[col]), (level, col)
    for col in ("illegal_ratio", "illegal_ratio_upper", "rect_rate_area", "rect_rate_count"):
        values = out[col].dropna()
        assert ((values >= -1e-12) & (values <= 1 + 1e-12)).all(), col
    assert (out["illegal_ratio_upper"].fillna(1) >= out["illegal_ratio"].fillna(0) - 1e-12).all()
