"""The enforcement cycle from a registry built by real field returns: funnel, voluntary share,
days to rectified, land value, burn-up and on-track, cases per period, stock and new, the
assessment with rewards and deductions, urgent patches and the work order."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import pytest

from pipeline.config import ReportConfig, RewardConfig
from pipeline.registry import ledger
from pipeline.registry.cycle import (
    Units,
    assessment,
    burnup,
    burnup_days,
    cases_by_period,
    cycle_tables,
    first_verdicts,
    funnel,
    no_case_since,
    on_track,
    stock_and_new,
)
from pipeline.registry.field_returns import ROW, apply_return
from pipeline.registry.store import append_events
from pipeline.registry.urgency import urgency, work_order
from pipeline.schema import (
    CY,
    NEW,
    PD,
    RC,
    STOCK,
    UNASSIGNED,
    UNASSIGNED_NAME,
    E,
    EventKind,
    Level,
    P,
)
from pipeline.units import MU_M2
from tests.field_returns import NOW, TOWN, VILLAGES, grid_units, patch_ids, township_state

TODAY = dt.date(2024, 9, 1)
IDS = patch_ids(6)
VIL1, VIL2 = VILLAGES
DISTRICT = ("130609", "示例区")


def rows(*records):
    frame = pd.DataFrame(records, dtype="str")
    frame[ROW] = range(2, len(frame) + 2)
    return frame


def apply(state, frame, name):
    new, _ = apply_return(
        state, frame, source_file=f"{name}.csv", fingerprint=name, now=NOW, today=TODAY
    )
    return new


@pytest.fixture
def units():
    villages, townships = grid_units()
    return Units(DISTRICT, townships, villages)


@pytest.fixture
def state():
    """Six patches detected on 2024-05-01; the first three in 东村, the others in 西村.
    Round 1 (2024-05-10): IDS[0..3] illegal and notified, IDS[4] legal, IDS[5] pending.
    Round 2 (2024-06-09): IDS[0] self-demolished (rectified), IDS[1] legalized (rectified),
    IDS[2] case filed, IDS[3] still notified."""
    s = township_state(6)
    detected = [{E.PATCH_ID: pid, E.KIND: EventKind.DETECTED.value, E.SOURCE: "r0",
                 E.VALUES: "{}"} for pid in IDS]  # fmt: skip
    s = dataclasses.replace(
        s, events=append_events(s.events, detected, run_id="r0", now="2024-05-01T08:00:00Z")
    )
    first = {P.VERDICT: "违法", P.ENFORCEMENT_STAGE: "告知", P.CHECKED_ON: "2024-05-10"}
    s = apply(s, rows(*[{P.PATCH_ID: pid} | first for pid in IDS[:4]],
                      {P.PATCH_ID: IDS[4], P.VERDICT: "合法", P.CHECKED_ON: "2024-05-10"}),
              "round1")  # fmt: skip
    day = {P.CHECKED_ON: "2024-06-09"}
    return apply(
        s,
        rows(
            {P.PATCH_ID: IDS[0], P.ENFORCEMENT_STAGE: "自行拆除", P.REMAINING_M2: "0"} | day,
            {P.PATCH_ID: IDS[1], P.ENFORCEMENT_STAGE: "补办手续", P.REMAINING_M2: "0"} | day,
            {P.PATCH_ID: IDS[2], P.ENFORCEMENT_STAGE: "立案"} | day,
        ),
        "round2",
    )


def _row(frame, level, code=None, **where):
    mask = frame[RC.LEVEL] == level
    if code is not None:
        mask &= frame[RC.CODE] == code
    for col, value in where.items():
        mask &= frame[col] == value
    (i,) = frame.index[mask]
    return frame.loc[i]


def test_the_ledger_dates_field_facts_by_the_field_date(state):
    dates = ledger.patch_dates(state)
    assert dates.at[IDS[0], PD.DETECTED_ON] == dt.date(2024, 5, 1)
    assert dates.at[IDS[0], PD.ILLEGAL_ON] == dt.date(2024, 5, 10)
    assert dates.at[IDS[0], PD.RECTIFIED_ON] == dt.date(2024, 6, 9)
    assert dates.at[IDS[2], PD.RECTIFIED_ON] is None


def test_funnel_and_how_cases_end(state, units):
    t = cycle_tables(state, units, ReportConfig(land_price_per_mu=220000), as_of=TODAY)
    funnel = t.funnel[t.funnel[RC.LEVEL] == Level.DISTRICT].set_index(CY.STAGE)[CY.N_REACHED]
    assert funnel["notified"] == 4 and funnel["case_filed"] == 1
    assert funnel["self_demolished"] == 1 and funnel["legalized"] == 1 and funnel["court"] == 0
    d = _row(t.figures, Level.DISTRICT)
    assert d[CY.N_ILLEGAL] == 4 and d[CY.N_SELF] == 1 and d[CY.N_FORCED] == 0
    assert d[CY.SELF_SHARE] == 1.0  # the only demolition was voluntary
    assert d[CY.DAYS_MEDIAN] == 39.0  # 2024-05-01 -> 2024-06-09, both rectified patches
    assert d[CY.RECTIFIED_MU] == pytest.approx(800 / MU_M2)
    assert d[CY.DEMOLISHED_MU] == pytest.approx(400 / MU_M2)  # the legalized one stays built
    assert d[CY.LAND_VALUE] == pytest.approx(400 / MU_M2 * 220000)


def test_no_amount_without_a_price(state, units):
    t = cycle_tables(state, units, ReportConfig(), as_of=TODAY)
    assert t.figures[CY.LAND_VALUE].isna().all()
    assert t.burnup is None and t.on_track is None  # no deadline, no burn-up


def test_burnup_replays_the_rate_by_field_date_and_judges_the_pace(state, units):
    book = ledger.ledger(state)
    days = burnup_days(dt.date(2024, 5, 1), dt.date(2024, 7, 1))
    burn = burnup(ledger.rectification_records(book), state.patches, units, days)
    district = burn[burn[RC.LEVEL] == Level.DISTRICT].set_index(CY.DATE)[CY.RECT_RATE]
    assert pd.isna(district[dt.date(2024, 5, 9)])  # nobody judged illegal yet
    assert district[dt.date(2024, 5, 10)] == 0.0
    assert district[dt.date(2024, 6, 8)] == 0.0
    assert district[dt.date(2024, 6, 9)] == 0.5  # two of four equal patches rectified
    firsts = first_verdicts(state.patches, ledger.patch_dates(state, book), units)
    track = on_track(burn, firsts, units, deadline=dt.date(2024, 9, 15), target=0.85,
                     as_of=dt.date(2024, 7, 1))  # fmt: skip
    d = _row(track, Level.DISTRICT)
    # planned: 0.85 * (2024-07-01 - 2024-05-10) / (2024-09-15 - 2024-05-10) = 0.85 * 52/128
    assert d[CY.PLANNED] == pytest.approx(0.85 * 52 / 128)
    assert d[CY.ON_TRACK] is True or d[CY.ON_TRACK] == True  # noqa: E712 - 0.5 >= 0.345


def test_burnup_days_are_thinned_but_keep_the_last():
    days = burnup_days(dt.date(2024, 1, 1), dt.date(2025, 12, 31), max_points=100)
    assert len(days) <= 101 and days[0] == dt.date(2024, 1, 1) and days[-1] == dt.date(2025, 12, 31)


def test_cases_per_month_quarter_and_year_and_no_new_case_since(units):
    s = township_state(4)
    patches = s.patches.assign(
        **{
            P.VERDICT: "illegal",
            P.FIRST_SEEN: ["2024-03", "2024-05", "2024Q2", "2024"],
            P.LAST_SEEN: "2024-12",
        }
    )
    months = cases_by_period(patches, units, "M")
    assert list(months[months[RC.LEVEL] == Level.DISTRICT][CY.PERIOD]) == ["2024-03", "2024-05"]
    quarters = cases_by_period(patches, units, "Q")
    q = quarters[quarters[RC.LEVEL] == Level.DISTRICT].set_index(CY.PERIOD)[CY.N_NEW]
    assert q.to_dict() == {"2024Q1": 1, "2024Q2": 2}  # the year label fits no quarter
    years = cases_by_period(patches, units, "Y")
    assert years[years[RC.LEVEL] == Level.DISTRICT][CY.N_NEW].tolist() == [4]
    since = no_case_since(patches, units)
    d = _row(since, Level.DISTRICT)
    # the year label ends last; 2025 is not observed yet, so no "since" is claimed
    assert d[CY.LAST_CASE] == "2024" and pd.isna(d[CY.NO_CASE_SINCE])
    v1 = _row(since, Level.VILLAGE, VIL1)
    assert v1[CY.LAST_CASE] == "2024-05" and v1[CY.NO_CASE_SINCE] == "2024-06"


def test_stock_and_new_and_the_assessment(units):
    """Stock (2015) does not block a zero-case unit; a pending patch of the year does."""
    s = township_state(4)
    patches = s.patches.assign(**{
        P.FIRST_SEEN: ["2015", "2017", "2017", "2013"],
        P.VERDICT: ["illegal", "pending", "illegal", "illegal"],
        P.REMAINING_M2: [0.0, float("nan"), 100.0, 400.0],
    })  # fmt: skip
    parts = stock_and_new(patches, units, year=2017, base_year=2014)
    stock = _row(parts, Level.DISTRICT, **{CY.PART: STOCK})
    new = _row(parts, Level.DISTRICT, **{CY.PART: NEW})
    assert stock[CY.N_ILLEGAL] == 1 and stock[CY.RECT_RATE] == 1.0  # 2013 is before base_year
    assert new[CY.N_ILLEGAL] == 1 and new[CY.RECT_RATE] == pytest.approx(0.75)
    sheet = assessment(patches, units, year=2017, reward={"township": 100000.0,
                       "village": 50000.0}, penalty_per_case=2000.0)  # fmt: skip
    v1, v2 = _row(sheet, Level.VILLAGE, VIL1), _row(sheet, Level.VILLAGE, VIL2)
    assert not v1[CY.ZERO_CASE] and v1[CY.N_PENDING] == 1  # its 2017 patch is pending
    assert v2[CY.N_NEW] == 1 and v2[CY.DEDUCTION] == 2000.0 and v2[CY.REWARD] == 0.0
    town = _row(sheet, Level.TOWNSHIP, TOWN)
    assert pd.isna(town[CY.DEDUCTION])  # deductions are the village cadres'
    clean = patches.assign(**{P.VERDICT: ["illegal", "legal", "legal", "illegal"]})
    sheet = assessment(clean, units, year=2017, reward={"township": 100000.0, "village": None},
                       penalty_per_case=None)  # fmt: skip
    assert _row(sheet, Level.TOWNSHIP, TOWN)[CY.ZERO_CASE]  # stock of 2015 does not block
    assert _row(sheet, Level.TOWNSHIP, TOWN)[CY.REWARD] == 100000.0
    assert pd.isna(_row(sheet, Level.VILLAGE, VIL1)[CY.REWARD])  # no village amount set
    assert sheet[CY.DEDUCTION].isna().all()


def test_urgent_patches_come_first_by_due_date_then_by_score():
    """Two urgent patches (basic farmland >= 5 亩, farmland >= 10 亩) first, the earlier due
    first; the others by score, highest first; a working-day deadline skips the holiday."""
    s = township_state(4)
    patches = s.patches.assign(**{
        P.BASIC_FARMLAND_M2: [0.0, 5 * MU_M2, 0.0, 0.0],
        P.FARMLAND_M2: [0.0, 5 * MU_M2, 10 * MU_M2, 0.0],
        P.SCORE: [1.0, 2.0, 3.0, 9.0],
    })  # fmt: skip
    exported = pd.Series({IDS[1]: dt.date(2024, 9, 30), IDS[2]: dt.date(2024, 9, 27)})
    u = urgency(patches, exported, ReportConfig(), today=dt.date(2024, 9, 27))
    assert u[CY.URGENT].tolist() == [False, True, True, False]
    # Fri 27 Sep + 3: Sun 29 Sep is a make-up working day, then 30 Sep, then 8 Oct
    assert u[CY.REPORT_DUE].tolist()[1:3] == [dt.date(2024, 10, 10), dt.date(2024, 10, 8)]
    order = work_order(patches, u)[P.PATCH_ID].tolist()
    assert order == [IDS[2], IDS[1], IDS[3], IDS[0]]


def test_report_config_rewards_are_optional():
    assert ReportConfig().reward == RewardConfig(None, None)


def test_a_patch_outside_the_grid_gets_its_own_row_and_no_reward(units):
    """Township rows add up to the district: a patch without a village or township code is
    counted in an 'unassigned' row, which is never rewarded."""
    s = township_state(2)
    patches = s.patches.assign(**{P.VERDICT: "illegal", P.FIRST_SEEN: "2017"})
    patches.loc[1, [P.TOWNSHIP_CODE, P.VILLAGE_CODE]] = [UNASSIGNED, None]
    sheet = assessment(patches, units, year=2017, reward={"township": 1.0, "village": 1.0},
                       penalty_per_case=None)  # fmt: skip
    lost = _row(sheet, Level.VILLAGE, UNASSIGNED)
    assert lost[CY.N_NEW] == 1 and lost[RC.NAME] == UNASSIGNED_NAME
    assert _row(sheet, Level.TOWNSHIP, UNASSIGNED)[CY.N_NEW] == 1
    assert sheet[CY.N_NEW].sum() == 2 * 2  # each patch once per level


def test_closed_patches_are_never_urgent():
    s = township_state(3)
    patches = s.patches.assign(**{
        P.FARMLAND_M2: 20 * MU_M2, P.VERDICT: ["pending", "legal", "illegal"],
        P.REMAINING_M2: [float("nan"), float("nan"), 0.0],
    })  # fmt: skip
    u = urgency(patches, pd.Series(dtype=object), ReportConfig(), today=TODAY)
    assert u[CY.URGENT].tolist() == [True, False, False]


def test_a_past_report_date_replays_the_cycle(state, units):
    """As of 2024-06-01 (before round 2) nothing was rectified; today two patches are."""
    before = cycle_tables(state, units, ReportConfig(), as_of=dt.date(2024, 6, 1), replay=True)
    now = cycle_tables(state, units, ReportConfig(), as_of=TODAY)
    assert _row(before.figures, Level.DISTRICT)[CY.RECTIFIED_MU] == 0.0
    assert _row(now.figures, Level.DISTRICT)[CY.RECTIFIED_MU] == pytest.approx(800 / MU_M2)
    steps = before.funnel[before.funnel[RC.LEVEL] == Level.DISTRICT].set_index(CY.STAGE)
    assert steps.loc["self_demolished", CY.N_REACHED] == 0
    assert steps.loc["notified", CY.N_REACHED] == 4


def test_the_funnel_counts_the_steps_a_patch_went_through(units):
    """A patch sent straight to the court and forcibly demolished counts in every step of
    the ladder; a confiscation went through a penalty decision; self-demolition after a
    notice counts only as notified."""
    s = township_state(3)
    patches = s.patches.assign(**{P.VERDICT: "illegal"})
    reached = pd.DataFrame({
        P.PATCH_ID: [IDS[0], IDS[0], IDS[1], IDS[2], IDS[2]],
        P.ENFORCEMENT_STAGE: ["court", "forced_demolished", "confiscated", "notified",
                              "self_demolished"],
        ledger.DATE: dt.date(2024, 5, 1),
    })  # fmt: skip
    table = funnel(patches, reached, units)
    d = table[table[RC.LEVEL] == Level.DISTRICT].set_index(CY.STAGE)[CY.N_REACHED]
    assert d[["notified", "case_filed", "penalty_decided", "court"]].tolist() == [3, 2, 2, 1]
    assert d[["self_demolished", "forced_demolished", "confiscated"]].tolist() == [1, 1, 1]
