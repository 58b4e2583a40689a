"""A township's own return template, returned with only some rows filled (issue 13, item 3).

The template is the one the packages ship (:func:`pipeline.outputs.packages.return_template` and the
same workbook builder), written as ``.xlsx``, GBK ``.csv`` and Excel 97-2003 ``.xls``. Rows
the team did not fill must change nothing: no event, the patch stays ``pending``, and the
rates count it as pending.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import FieldReturnError
from pipeline.ops.field_import import describe
from pipeline.registry.field_returns import ROW, apply_return
from pipeline.registry.io.registry_file import load_registry, save_registry
from pipeline.registry.io.return_files import read_return
from pipeline.registry.rates import compute_rates
from pipeline.registry.store import normalise_patches
from pipeline.schema import RC, E, EventKind, P, Verdict
from tests.field_returns import (
    CRS,
    N_PATCHES,
    NOW,
    TODAY,
    TOWN,
    filled_template,
    grid_units,
    patch_ids,
    template_rows,
    township_state,
    write_csv,
    write_xls,
    write_xlsx,
)

IDS = patch_ids()
FILLED = {
    IDS[0]: {P.VERDICT: "违法", P.RECT_METHOD: "已拆除复耕", P.REMAINING_M2: 0,
             P.CHECKED_ON: "2024-05-20", P.INSPECTOR: "张三"},
    IDS[5]: {P.VERDICT: "合法", P.CHECKED_ON: "2024-05-20", P.INSPECTOR: "张三"},
    IDS[11]: {P.VERDICT: "伪变化", P.NOTE: "大棚"},
}  # fmt: skip
"""Three of the sixteen rows filled, in both villages; the other thirteen left as shipped."""


def _apply(state, frame, name="return_template.xlsx", fingerprint="f1"):
    return apply_return(
        state,
        frame,
        source_file=name,
        fingerprint=fingerprint,
        now=NOW,
        today=dt.date.fromisoformat(TODAY),
        unknown_columns=tuple(frame.attrs.get("unknown_columns", ())),
    )


def _write(fmt, template, tmp_path):
    if fmt == "xlsx":
        return write_xlsx(template, tmp_path / "return_template.xlsx")
    if fmt == "csv":
        return write_csv(template, tmp_path / "return_template.csv", encoding="gbk")
    return write_xls(list(template.columns), template_rows(template), tmp_path / "return.xls")


@pytest.mark.parametrize("fmt", ["xlsx", "csv", "xls"])
def test_partly_filled_template_applies_only_the_filled_rows(fmt, tmp_path):
    """The shipped template with 3 of 16 rows filled: the 3 are applied, the 13 others stay
    ``pending`` (never null) with no event, and the summary counts them as not filled."""
    state = township_state()
    path = _write(fmt, filled_template(state, FILLED), tmp_path)
    frame = read_return(path)
    assert frame.attrs["unknown_columns"] == ()  # the template's own columns are all known
    new, summary = _apply(state, frame, name=path.name)

    verdicts = new.patches.set_index(P.PATCH_ID)[P.VERDICT]
    assert verdicts.notna().all()
    assert verdicts[IDS[0]] == Verdict.ILLEGAL and verdicts[IDS[5]] == Verdict.LEGAL
    assert verdicts[IDS[11]] == Verdict.FALSE_CHANGE
    assert (verdicts.drop([IDS[0], IDS[5], IDS[11]]) == Verdict.PENDING).all()
    assert new.patches.set_index(P.PATCH_ID).loc[IDS[0], P.REMAINING_M2] == 0.0
    assert (summary.n_rows, summary.n_applied, summary.n_not_filled) == (16, 3, 13)
    assert set(new.events[E.PATCH_ID]) == {IDS[0], IDS[5], IDS[11]}
    assert "13 not filled" in describe(summary)


def test_rates_count_the_blank_rows_as_pending(tmp_path):
    """After the partly filled return, every patch is in exactly one rates category: the
    township of 16 shows 13 pending (the report in issue 13 showed ``n_pending 0``)."""
    state = township_state()
    path = write_xlsx(filled_template(state, FILLED), tmp_path / "return_template.xlsx")
    new, _ = _apply(state, read_return(path))
    villages, townships = grid_units()
    rates = compute_rates(new.patches, villages, townships).set_index([RC.LEVEL, RC.CODE])
    town = rates.loc[("township", TOWN)]
    assert town[RC.N_PATCHES] == N_PATCHES
    assert (town[RC.N_PENDING], town[RC.N_ILLEGAL], town[RC.N_LEGAL]) == (13, 1, 1)
    assert town[RC.N_FALSE_CHANGE] == 1 and town[RC.N_OTHER] == 0


def test_blank_template_changes_nothing_and_says_so(tmp_path):
    """A template returned with nothing filled writes no event, changes no patch, and warns
    that no row is filled."""
    state = township_state()
    path = write_xlsx(filled_template(state, {}), tmp_path / "return_template.xlsx")
    new, summary = _apply(state, read_return(path))
    assert len(new.events) == len(state.events)
    pd.testing.assert_frame_equal(
        new.patches.drop(columns=P.UPDATED_AT), state.patches.drop(columns=P.UPDATED_AT)
    )
    assert (summary.n_applied, summary.n_not_filled) == (0, N_PATCHES)
    assert any("none of its 16 row(s) is filled" in w for w in summary.warnings)


def test_blank_row_keeps_an_earlier_verdict(tmp_path):
    """A patch judged in an earlier return and left blank in the next keeps its verdict,
    rectification and history: a blank row is not a reset."""
    state = township_state()
    first, _ = _apply(
        state, read_return(write_xlsx(filled_template(state, FILLED), tmp_path / "a.xlsx"))
    )
    later = {IDS[1]: {P.VERDICT: "合法"}}
    second, summary = _apply(
        first,
        read_return(write_xlsx(filled_template(first, later), tmp_path / "b.xlsx")),
        fingerprint="f2",
    )
    before, after = (s.patches.set_index(P.PATCH_ID) for s in (first, second))
    assert after.loc[IDS[0], P.VERDICT] == Verdict.ILLEGAL
    assert after.loc[IDS[0], P.REMAINING_M2] == 0.0
    assert after.loc[IDS[0], P.RECT_METHOD] == before.loc[IDS[0], P.RECT_METHOD]
    new_events = second.events.iloc[len(first.events) :]
    assert new_events[E.PATCH_ID].tolist() == [IDS[1]]
    assert summary.n_not_filled == N_PATCHES - 1


def test_partly_filled_row_is_validated_as_before():
    """A row with something filled is a real row: a note alone is applied (the verdict
    kept), a remaining area on a pending patch is still rejected."""
    state = township_state()
    note_only = pd.DataFrame({P.PATCH_ID: [IDS[2]], P.NOTE: ["门锁，下周再去"], ROW: [2]})
    new, summary = _apply(state, note_only)
    p = new.patches.set_index(P.PATCH_ID).loc[IDS[2]]
    assert p[P.VERDICT] == Verdict.PENDING and p[P.NOTE] == "门锁，下周再去"
    assert summary.n_applied == 1 and new.events[E.KIND].tolist() == [EventKind.FIELD_VERDICT]
    remaining_only = pd.DataFrame({P.PATCH_ID: [IDS[2]], P.REMAINING_M2: ["10"], ROW: [2]})
    with pytest.raises(FieldReturnError, match="only applies to illegal"):
        _apply(state, remaining_only)


def test_dash_and_slash_cells_count_as_empty():
    """Forms mark "not applicable" with ``/`` or ``—``: a legal patch with ``/`` as method is
    accepted, and a row of dashes only is blank."""
    state = township_state()
    frame = pd.DataFrame(
        {
            P.PATCH_ID: [IDS[3], IDS[4]],
            P.VERDICT: ["合法", "/"],
            P.RECT_METHOD: ["/", "—"],
            P.REMAINING_M2: ["-", "/"],
            ROW: [2, 3],
        }
    )
    new, summary = _apply(state, frame)
    verdicts = new.patches.set_index(P.PATCH_ID)[P.VERDICT]
    assert verdicts[IDS[3]] == Verdict.LEGAL and verdicts[IDS[4]] == Verdict.PENDING
    assert (summary.n_applied, summary.n_not_filled) == (1, 1)


def test_a_null_verdict_left_by_an_older_import_becomes_pending():
    """A registry damaged by the old importer (a blank row had nulled the verdict): a row
    that fills only the inspector leaves the patch ``pending``, not null."""
    state = township_state()
    patches = state.patches.copy()
    patches.loc[patches[P.PATCH_ID] == IDS[7], P.VERDICT] = np.nan
    damaged = dataclasses.replace(state, patches=normalise_patches(patches))
    frame = pd.DataFrame({P.PATCH_ID: [IDS[7]], P.INSPECTOR: ["王五"], ROW: [2]})
    new, _ = _apply(damaged, frame)
    assert new.patches.set_index(P.PATCH_ID).loc[IDS[7], P.VERDICT] == Verdict.PENDING
    values = json.loads(new.events[E.VALUES].iloc[-1])
    assert values[P.VERDICT] == Verdict.PENDING


def test_a_registry_with_null_verdicts_loads_them_as_pending(tmp_path, caplog):
    """A registry saved by the old importer with null verdicts is read with those patches
    ``pending`` and a WARNING naming how many and the first ids."""
    state = township_state()
    patches = state.patches.copy()
    damaged_ids = IDS[2:9]
    patches.loc[patches[P.PATCH_ID].isin(damaged_ids), P.VERDICT] = np.nan
    path = tmp_path / "registry.gpkg"
    save_registry(path, dataclasses.replace(state, patches=normalise_patches(patches)))
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        loaded = load_registry(path, CRS)
    assert (loaded.patches[P.VERDICT] == Verdict.PENDING).all()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "7 patch(es) had no verdict" in warning and "pending" in warning
    assert ", ".join(damaged_ids[:5]) in warning and "(and 2 more)" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        save_registry(path, loaded)  # saved once, the registry is repaired
        load_registry(path, CRS)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_blank_row_with_an_unknown_id_is_an_unknown_id_not_a_row_not_filled():
    """A blank row whose patch id is not in the registry is reported as an unknown id in the
    summary's warnings, not counted as "not filled"; the file is still applied."""
    state = township_state()
    unknown = "130609201799999"
    frame = pd.DataFrame(
        {P.PATCH_ID: [IDS[0], unknown, IDS[1]], P.VERDICT: [None, None, "合法"], ROW: [2, 3, 4]}
    )
    new, summary = _apply(state, frame)
    assert (summary.n_rows, summary.n_applied, summary.n_not_filled) == (3, 1, 1)
    (warning,) = summary.warnings
    assert "unknown patch id" in warning and f"row 3 {unknown!r}" in warning
    assert new.patches.set_index(P.PATCH_ID).loc[IDS[1], P.VERDICT] == Verdict.LEGAL


def test_template_area_is_not_read_as_a_filled_value(tmp_path):
    """The pre-filled ``area_mu`` (and village) columns do not make a row filled, and are
    not reported as unknown columns."""
    state = township_state(2)
    path = write_xlsx(filled_template(state, {}), tmp_path / "t.xlsx")
    frame = read_return(path)
    assert frame[P.PATCH_ID].tolist() == patch_ids(2)
    assert frame.drop(columns=[P.PATCH_ID, ROW]).isna().all().all()
    assert frame.attrs["unknown_columns"] == ()
