"""Enforcement stages in field returns: allowed steps, their dates, who demolished, the
rectification method that must agree, and the append-only history of every step."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import FieldReturnError
from pipeline.registry import ledger
from pipeline.registry.enforcement import (
    PatchStage,
    StageRow,
    parse_demolished_by,
    parse_stage,
    stage_problems,
)
from pipeline.registry.field_returns import ROW, apply_return
from pipeline.schema import FINAL_STAGES, PD, STAGE_TRANSITIONS, E, EnforcementStage, EventKind, P
from tests.field_returns import NOW, patch_ids, township_state

TODAY = dt.date(2024, 6, 1)
ID1, ID2 = patch_ids(2)


def rows(*records):
    """Return rows as the reader gives them: text values and the spreadsheet row."""
    frame = pd.DataFrame(records, dtype="str")
    frame[ROW] = range(2, len(frame) + 2)
    return frame


def apply(state, frame, fingerprint):
    return apply_return(
        state, frame, source_file="r.csv", fingerprint=fingerprint, now=NOW, today=TODAY
    )


def step(pid, stage, date):
    """A row saying the illegal patch ``pid`` reached ``stage`` on ``date``."""
    return {P.PATCH_ID: pid, P.VERDICT: "违法", P.ENFORCEMENT_STAGE: stage, P.STAGE_DATE: date}


def patch(state, pid):
    return state.patches.set_index(P.PATCH_ID).loc[pid]


@pytest.fixture
def state():
    """Two pending patches of epoch 2017 (stage dates from 2017-01-01 on are allowed)."""
    return township_state(2)


def test_three_steps_in_chinese_make_a_history_of_events(state):
    """告知 → 立案 → 处罚决定 → 申请法院强制执行 → 强制拆除, one return per step: every step is an
    ``enforcement`` event with its date, and the final one sets who demolished and the method."""
    s = state
    steps = [
        ("告知", "2024-01-10"),
        ("立案", "2024-02-01"),
        ("处罚决定", "2024-03-01"),
        ("申请法院强制执行", "2024-04-01"),
        ("强制拆除", "2024-05-20"),
    ]
    for i, (word, date) in enumerate(steps):
        s, _ = apply(s, rows(step(ID1, word, date)), f"f{i}")
    p = patch(s, ID1)
    assert p[P.ENFORCEMENT_STAGE] == "forced_demolished" and p[P.STAGE_DATE] == "2024-05-20"
    assert p[P.DEMOLISHED_BY] == "forced" and p[P.RECT_METHOD] == "demolished_restored"
    ev = s.events[s.events[E.KIND] == EventKind.ENFORCEMENT]
    values = [json.loads(v) for v in ev[E.VALUES]]
    assert [v[P.ENFORCEMENT_STAGE] for v in values] == [
        "notified", "case_filed", "penalty_decided", "court", "forced_demolished",
    ]  # fmt: skip
    assert [v[P.STAGE_DATE] for v in values] == [d for _, d in steps]
    assert values[1][P.ENFORCEMENT_STAGE + "_before"] == "notified"


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        ("notified", "court", "cannot follow 'notified'"),
        ("self_demolished", "case_filed", "already final"),
        ("case_filed", "notified", "cannot follow 'case_filed'"),
    ],
)
def test_a_step_the_table_does_not_allow_is_rejected_with_its_row(state, first, second, reason):
    """Whole return rejected, the row and the reason named, the registry unchanged."""
    s, _ = apply(state, rows(step(ID1, first, "2024-01-10")), "f1")
    bad = rows(step(ID2, "notified", "2024-02-01"), step(ID1, second, "2024-02-01"))
    with pytest.raises(FieldReturnError) as err:
        apply(s, bad, "f2")
    assert [(row, reason in why) for _, row, why in err.value.rejections] == [(3, True)]
    assert patch(s, ID2)[P.ENFORCEMENT_STAGE] != "notified"  # nothing applied


@pytest.mark.parametrize(
    ("date", "reason"),
    [
        ("2016-12-31", "before the patch's epoch 2017"),
        ("2024-06-02", "in the future"),
        ("2023-12-01", "before the date of the current stage"),
    ],
)
def test_bad_stage_dates_are_rejected(state, date, reason):
    s, _ = apply(state, rows(step(ID1, "notified", "2024-01-10")), "f1")
    with pytest.raises(FieldReturnError, match=reason):
        apply(s, rows(step(ID1, "case_filed", date)), "f2")


def test_a_stage_needs_a_date_and_falls_back_to_the_check_date(state):
    without = {P.PATCH_ID: ID1, P.VERDICT: "illegal", P.ENFORCEMENT_STAGE: "notified"}
    with pytest.raises(FieldReturnError, match="needs its date"):
        apply(state, rows(without), "f1")
    s, _ = apply(state, rows(without | {P.CHECKED_ON: "2024-03-03"}), "f2")
    assert patch(s, ID1)[P.STAGE_DATE] == "2024-03-03"


def test_a_stage_on_a_patch_that_is_not_illegal_is_rejected(state):
    row = step(ID1, "notified", "2024-01-10") | {P.VERDICT: "legal"}
    with pytest.raises(FieldReturnError, match="stages only apply to illegal patches"):
        apply(state, rows(row), "f1")


@pytest.mark.parametrize(
    ("stage", "extra", "reason"),
    [
        ("legalized", {P.RECT_METHOD: "拆除复耕"}, "disagrees with the final stage 'legalized'"),
        ("self_demolished", {P.RECT_METHOD: "没收"}, "disagrees with the final stage"),
        ("self_demolished", {P.DEMOLISHED_BY: "强制"}, "demolished_by 'forced' disagrees"),
        ("confiscated", {P.DEMOLISHED_BY: "self"}, "(no demolition)"),
    ],
)
def test_method_and_demolisher_must_agree_with_the_final_stage(state, stage, extra, reason):
    with pytest.raises(FieldReturnError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        apply(state, rows(step(ID1, stage, "2024-01-10") | extra), "f1")


@pytest.mark.parametrize(
    ("stage", "method", "by"),
    [
        ("legalized", "legalized", None),
        ("confiscated", "confiscated", None),
        ("self_demolished", "demolished_restored", "self"),
    ],
)
def test_a_final_stage_sets_the_method_and_who_demolished(state, stage, method, by):
    s, _ = apply(state, rows(step(ID1, stage, "2024-01-10")), "f1")
    p = patch(s, ID1)
    assert p[P.RECT_METHOD] == method
    assert (p[P.DEMOLISHED_BY] if isinstance(p[P.DEMOLISHED_BY], str) else None) == by


def test_the_same_stage_again_changes_nothing(state):
    """A follow-up return restating the current stage writes no second event."""
    s, _ = apply(state, rows(step(ID1, "notified", "2024-01-10")), "f1")
    s, _ = apply(s, rows(step(ID1, "notified", "2024-01-10")), "f2")
    assert (s.events[E.KIND] == EventKind.ENFORCEMENT).sum() == 1


def test_leaving_illegal_clears_the_stage(state):
    s, _ = apply(state, rows(step(ID1, "notified", "2024-01-10")), "f1")
    s, _ = apply(s, rows({P.PATCH_ID: ID1, P.VERDICT: "合法"}), "f2")
    assert not isinstance(patch(s, ID1)[P.ENFORCEMENT_STAGE], str)


def test_words_for_stages_and_demolishers():
    assert parse_stage("自行拆除") == "self_demolished"
    assert parse_stage("Penalty decided") == "penalty_decided"
    assert parse_stage("拆除复耕") is None  # a method, not a stage
    assert parse_demolished_by("强制拆除") == "forced"  # the stage says who
    assert parse_demolished_by("自行") == "self"


_STAGES = [None, *EnforcementStage]


@settings(max_examples=200, deadline=None)
@given(current=st.sampled_from(_STAGES), new=st.sampled_from(list(EnforcementStage)))
def test_transition_check_is_the_table(current, new):
    """A well-dated step is accepted exactly when the table allows it (or repeats the
    current stage); nothing follows a final stage."""
    row = StageRow(new.value, dt.date(2024, 2, 1), None, None, "illegal", None)
    patch_stage = PatchStage(current.value if current else None, dt.date(2024, 2, 1), "2017")
    ok = not stage_problems(row, patch_stage, TODAY)
    allowed = new == current or new in STAGE_TRANSITIONS[current]
    assert ok == allowed
    if current in FINAL_STAGES and new != current:
        assert not ok


def test_leaving_illegal_is_an_event_and_the_cycle_starts_over(state):
    """illegal (case filed) → legal → illegal: the emptied stage is an event, and the steps
    before it no longer count (ledger.stages_reached), so any stage may follow."""
    s, _ = apply(state, rows(step(ID1, "case_filed", "2024-01-10")), "f1")
    s, _ = apply(s, rows({P.PATCH_ID: ID1, P.VERDICT: "合法", P.CHECKED_ON: "2024-02-01"}), "f2")
    emptied = [json.loads(v) for v in s.events[s.events[E.KIND] == EventKind.ENFORCEMENT][E.VALUES]]
    assert emptied[-1][P.ENFORCEMENT_STAGE] is None
    assert emptied[-1][P.ENFORCEMENT_STAGE + "_before"] == "case_filed"
    s, _ = apply(s, rows(step(ID1, "notified", "2024-03-01")), "f3")  # would not follow case_filed
    reached = ledger.stages_reached(ledger.ledger(s))
    assert reached[P.ENFORCEMENT_STAGE].tolist() == ["notified"]


def test_a_final_stage_replaces_a_method_of_none(state):
    """A patch recorded 未整改 (method none) then self-demolished, without a method in the row:
    the stage sets its own method instead of being rejected."""
    first = {P.PATCH_ID: ID1, P.VERDICT: "违法", P.RECT_METHOD: "未整改"}
    s, _ = apply(state, rows(first), "f1")
    row = step(ID1, "自行拆除", "2024-02-01") | {P.REMAINING_M2: "0"}
    s, _ = apply(s, rows(row), "f2")
    assert patch(s, ID1)[P.RECT_METHOD] == "demolished_restored"


def test_the_same_stage_with_another_date_is_rejected(state):
    s, _ = apply(state, rows(step(ID1, "notified", "2024-01-10")), "f1")
    with pytest.raises(FieldReturnError, match="was reached on 2024-01-10, not 2024-01-20"):
        apply(s, rows(step(ID1, "notified", "2024-01-20")), "f2")


def test_a_stage_edited_by_hand_in_the_registry_is_reported_not_crashed_on(state):
    s = state
    s.patches.loc[s.patches[P.PATCH_ID] == ID1, P.ENFORCEMENT_STAGE] = "通知"
    with pytest.raises(FieldReturnError, match="holds enforcement_stage '通知'"):
        apply(s, rows(step(ID1, "case_filed", "2024-01-10")), "f1")


def test_each_event_is_dated_by_its_own_row_even_under_one_file_name(state):
    """Two rounds returned under the same file name: the rectification is dated by the second
    round's stage date, not the first round's check date."""
    first = step(ID1, "notified", "2024-01-10") | {P.CHECKED_ON: "2024-01-10"}
    s, _ = apply_return(state, rows(first), source_file="核查结果.csv", fingerprint="a",
                        now=NOW, today=TODAY)  # fmt: skip
    second = {P.PATCH_ID: ID1, P.ENFORCEMENT_STAGE: "自行拆除", P.STAGE_DATE: "2024-04-02",
              P.REMAINING_M2: "0"}  # fmt: skip
    s, _ = apply_return(s, rows(second), source_file="核查结果.csv", fingerprint="b",
                        now=NOW, today=TODAY)  # fmt: skip
    assert ledger.patch_dates(s).at[ID1, PD.RECTIFIED_ON] == dt.date(2024, 4, 2)


def test_a_demolition_that_leaves_the_whole_patch_is_warned_about(state):
    _, summary = apply(state, rows(step(ID1, "自行拆除", "2024-01-10")), "f1")
    assert any("demolition stage" in w for w in summary.warnings)
