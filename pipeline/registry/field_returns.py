"""Field returns (核查结果): validate a return and apply it to the registry.

Pure: a :class:`~pipeline.registry.store.RegistryState` and the rows of one return file (as read
by :func:`pipeline.registry.io.return_files.read_return`) in, a new state and an :class:`ImportSummary` out.

Rules (DESIGN §2, §3)
---------------------
- A return is applied **all or nothing**: every bad row is collected as
  ``(file, row, reason)`` and :class:`~pipeline.errors.FieldReturnError` is raised with the
  full list; the state is then unchanged.
- The same file (same content fingerprint) imported twice changes nothing.
- A *blank* row (a patch id but none of the columns the team fills,
  :data:`~pipeline.schema.FIELD_RETURN_FILLED_COLUMNS`) is a patch not visited yet: it
  changes nothing, writes no event and is counted in :attr:`ImportSummary.n_not_filled`.
  A blank row whose patch id is not in the registry is not a patch waiting for a visit but
  a wrong id: it is listed as a warning (:attr:`ImportSummary.warnings`), not counted.
  A cell holding only a dash or slash (``/``, ``-``, ``—``) counts as empty.
- An empty ``verdict`` keeps the patch's current verdict (a follow-up return that only
  reports rectification progress); a verdict never becomes empty.
- Verdict ``illegal`` without ``remaining_m2`` sets ``remaining_m2 = area_m2`` when the
  patch was not illegal before (nothing rectified yet) and keeps the current remaining area
  otherwise. Only an explicit ``remaining_m2`` changes it: a method such as
  ``demolished_restored`` alone does *not* mark the patch rectified, because the team must
  say how much is left.
- ``remaining_m2`` may exceed the patch area by the rounding of the value written: 0.01 m²,
  or, for an area written in another unit (亩), half a unit of its last written decimal
  (``0.62`` 亩: 0.005 亩 ≈ 3.33 m², the column
  :data:`~pipeline.schema.FIELD_RETURN_TOLERANCES` of the rows); such a value is stored as
  the patch area. A larger one is rejected.
- ``rect_method`` and ``remaining_m2`` are only accepted when the patch's verdict after the
  row is ``illegal``. A patch that leaves ``illegal`` loses its ``rect_method`` and
  ``remaining_m2`` (they only mean something for illegal patches).
- Verdict ``other`` without ``verdict_subtype`` is accepted but warned about
  (:attr:`ImportSummary.warnings`): the sub-type is wanted for reports, but a missing one
  must not block the rest of the return.
- Duplicate rows for one patch: identical rows count once; conflicting rows are all
  rejected.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from pipeline import units
from pipeline.errors import FieldReturnError
from pipeline.registry.enforcement import (
    PatchStage,
    StageRow,
    as_date,
    parse_demolished_by,
    parse_stage,
    stage_problems,
    stage_values,
)
from pipeline.registry.store import (
    IMPORTS_TABLE,
    I,
    RegistryState,
    append_events,
    normalise_patches,
    normalise_table,
    to_json,
)
from pipeline.schema import (
    EVENT_BEFORE_SUFFIX,
    FIELD_DATE,
    FIELD_RETURN_COLUMNS,
    FIELD_RETURN_FILLED_COLUMNS,
    FIELD_RETURN_ROW,
    FIELD_RETURN_TOLERANCES,
    FINAL_STAGES,
    STAGE_DEMOLISHED_BY,
    VALUE_ALIASES,
    VALUE_SYNONYMS,
    DemolishedBy,
    E,
    EnforcementStage,
    EventKind,
    P,
    RectMethod,
    Verdict,
)
from pipeline.units import m2_to_mu

log = logging.getLogger(__name__)

ROW = FIELD_RETURN_ROW
"""Column of the return rows holding the row number the user sees in the file."""

PLACEHOLDERS = frozenset({"/", "\\", "／", "-", "－", "--", "—", "——", "–"})
"""Cell contents that mean "nothing to say here" (forms use them for "not applicable")."""

REMAINING_TOLERANCE_M2 = 0.01
"""``remaining_m2`` may exceed the patch area by this much (rounding to 2 decimals), or by
the rounding margin of the unit it was written in when that is more
(:data:`~pipeline.schema.FIELD_RETURN_TOLERANCES`)."""

TOLERANCE = FIELD_RETURN_TOLERANCES[P.REMAINING_M2]
"""Column of the return rows: the rounding margin (m²) of each row's ``remaining_m2``."""


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    """What applying one return file did."""

    file: str
    fingerprint: str
    already_imported: bool = False
    n_rows: int = 0
    """Rows in the file (after dropping fully empty rows)."""
    n_applied: int = 0
    """Rows applied (identical duplicates count once)."""
    n_not_filled: int = 0
    """Blank rows: a patch id but nothing the team fills; the patch is left as it was."""
    n_verdict_changes: int = 0
    n_rectification_updates: int = 0
    unknown_columns: tuple[str, ...] = ()
    """Columns of the file that mean nothing to the importer (their content was not read)."""
    warnings: tuple[str, ...] = ()


def apply_return(
    state: RegistryState,
    rows: pd.DataFrame,
    *,
    source_file: str,
    fingerprint: str,
    now: str,
    today: dt.date,
    run_id: str | None = None,
    unknown_columns: tuple[str, ...] = (),
) -> tuple[RegistryState, ImportSummary]:
    """Validate one field return and apply it to the registry, all or nothing.

    Parameters
    ----------
    state : RegistryState
        The current registry (not modified).
    rows : pandas.DataFrame
        Canonical columns (``patch_id`` and any of
        :data:`~pipeline.schema.FIELD_RETURN_COLUMNS`), values as text, plus :data:`ROW`
        (the row number shown to the user; default: 1-based position) and, optionally,
        :data:`TOLERANCE` (m² the remaining area may exceed the patch area by; default
        :data:`REMAINING_TOLERANCE_M2`).
    source_file : str
        The file name, used in events (``field:<name>#<row>``) and rejections.
    fingerprint : str
        Content hash of the file (:func:`pipeline.atomic.fingerprint_file`).
    now : str
        ISO-8601 UTC time: event time, ``updated_at``, ``applied_at``.
    today : datetime.date
        ``checked_on`` later than this is rejected.
    run_id : str, optional
        Recorded in the events and the imports table.
    unknown_columns : tuple of str
        Headers of the file the reader did not recognise
        (``rows.attrs["unknown_columns"]`` from :func:`~pipeline.registry.io.return_files.read_return`);
        listed as a warning in the summary.

    Returns
    -------
    (RegistryState, ImportSummary)

    Raises
    ------
    FieldReturnError
        Any row is bad; ``rejections`` lists every ``(file, row, reason)``.

    Notes
    -----
    See the module docstring for the rules. Verdicts and methods are accepted as the
    English values (any case) or the words of :data:`~pipeline.schema.VALUE_SYNONYMS`.
    ``checked_on`` accepts ``YYYY-MM-DD``, ``YYYY/MM/DD``, ``YYYYMMDD`` and ``YYYY年M月D日``
    and is stored as ``YYYY-MM-DD``.
    """
    name = PurePath(source_file).name
    if fingerprint in set(state.imports[I.FINGERPRINT].dropna()):
        log.info("%s already imported (fingerprint %s); nothing to do", name, fingerprint[:12])
        return state, ImportSummary(name, fingerprint, already_imported=True)
    table, blank = _canonical(rows, name)
    patches = state.patches.set_index(P.PATCH_ID, drop=False)
    unknown_blank = blank[~blank[P.PATCH_ID].isin(patches.index)]
    n_not_filled = len(blank) - len(unknown_blank)
    table, rejections, warnings = _validate(table, patches, name, today)
    warnings = (
        _file_warnings(name, unknown_columns, len(table), n_not_filled)
        + _unknown_blank_warnings(name, unknown_blank)
        + warnings
    )
    if rejections:
        _reject(name, rejections)
    new_patches, events, n_verdicts, n_rect = _apply(table, patches, name, now)
    imported = {
        I.FINGERPRINT: fingerprint,
        I.FILE: name,
        I.APPLIED_AT: now,
        I.N_ROWS: len(table) + len(blank),
        I.RUN_ID: run_id,
    }
    new_state = dataclasses.replace(
        state,
        patches=normalise_patches(new_patches.reset_index(drop=True)),
        events=append_events(state.events, events, run_id=run_id, now=now),
        imports=pd.concat(
            [state.imports, normalise_table(IMPORTS_TABLE, pd.DataFrame([imported]))],
            ignore_index=True,
        ),
    )
    summary = ImportSummary(
        file=name,
        fingerprint=fingerprint,
        n_rows=int(table.attrs.get("n_rows", len(table))) + len(blank),
        n_applied=len(table),
        n_not_filled=n_not_filled,
        n_verdict_changes=n_verdicts,
        n_rectification_updates=n_rect,
        unknown_columns=tuple(unknown_columns),
        warnings=tuple(warnings),
    )
    for warning in warnings:
        log.warning("%s", warning)
    log.info("%s applied: %s", name, summary)
    return new_state, summary


def parse_verdict(value: Any) -> str | None:
    """A verdict (English value, any case, or a word of
    :data:`~pipeline.schema.VALUE_SYNONYMS`) as a :class:`Verdict` value; None when it is
    not one."""
    return _parse_enum(value, Verdict)


def parse_rect_method(value: Any) -> str | None:
    """A rectification method (English value or a word of
    :data:`~pipeline.schema.VALUE_SYNONYMS`) as a :class:`RectMethod` value; None when it is
    not one."""
    return _parse_enum(value, RectMethod)


def parse_date(value: Any) -> dt.date | None:
    """A field date as :class:`datetime.date`; None when it is not a date (the forms:
    :func:`pipeline.units.parse_date`)."""
    try:
        return units.parse_date(value)
    except ValueError:
        return None


# --------------------------------------------------------------------------- validation
def _canonical(rows: pd.DataFrame, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical columns as stripped text (NaN for empty), plus ROW as int and the
    remaining-area margin as float, without the blank rows; and the blank rows that name a
    patch (ROW and patch id)."""
    if P.PATCH_ID not in rows.columns:
        raise FieldReturnError(
            f"{name}: no patch_id column (found: {', '.join(map(str, rows.columns))}); "
            "a return needs 图斑编号/patch_id",
            [(name, None, "no patch_id column")],
        )
    out = pd.DataFrame(index=range(len(rows)))
    for col in FIELD_RETURN_COLUMNS:
        if col in rows.columns:
            text = rows[col].reset_index(drop=True).astype("str").str.strip()
            empty = text.eq("") | text.isin(PLACEHOLDERS)
            out[col] = text.where(rows[col].reset_index(drop=True).notna() & ~empty)
        else:
            out[col] = pd.Series(np.nan, index=out.index, dtype="str")
    if ROW in rows.columns:
        out[ROW] = rows[ROW].reset_index(drop=True).astype("int64")
    else:
        out[ROW] = np.arange(1, len(rows) + 1)
    if TOLERANCE in rows.columns:
        margin = pd.to_numeric(rows[TOLERANCE].reset_index(drop=True), errors="coerce")
        out[TOLERANCE] = margin.where(margin > REMAINING_TOLERANCE_M2, REMAINING_TOLERANCE_M2)
    else:
        out[TOLERANCE] = REMAINING_TOLERANCE_M2
    filled = out[list(FIELD_RETURN_FILLED_COLUMNS)].notna().any(axis=1)
    blank = out.loc[~filled & out[P.PATCH_ID].notna(), [ROW, P.PATCH_ID]]
    return out[filled].reset_index(drop=True), blank.reset_index(drop=True)


def _file_warnings(
    name: str, unknown_columns: tuple[str, ...], n_filled: int, n_not_filled: int
) -> list[str]:
    """Warnings about the file as a whole: columns not read, nothing filled."""
    warnings = []
    if unknown_columns:
        warnings.append(
            f"{name}: column(s) {', '.join(map(repr, unknown_columns))} not recognised, their "
            "content was not read (accepted headers: README 'Field returns')"
        )
    if n_filled == 0 and n_not_filled:
        warnings.append(f"{name}: none of its {n_not_filled} row(s) is filled; nothing changed")
    return warnings


def _unknown_blank_warnings(name: str, blank: pd.DataFrame) -> list[str]:
    """A warning naming the blank rows whose patch id is not in the registry (a typo, or a
    template of another registry): they are not patches waiting for a visit."""
    if len(blank) == 0:
        return []
    shown = ", ".join(f"row {r} {pid!r}" for r, pid in blank[[ROW, P.PATCH_ID]].values[:5])
    more = f" (and {len(blank) - 5} more)" if len(blank) > 5 else ""
    return [
        f"{name}: {len(blank)} unknown patch id(s) in rows with nothing filled, not in the "
        f"registry: {shown}{more}; check the ids (nothing was read from these rows)"
    ]


def _validate(
    table: pd.DataFrame, patches: pd.DataFrame, name: str, today: dt.date
) -> tuple[pd.DataFrame, list[tuple[str, int | None, str]], list[str]]:
    """Check every row; return the de-duplicated rows with parsed values added."""
    rejections: list[tuple[str, int | None, str]] = []
    warnings: list[str] = []

    def reject(mask: pd.Series, reason) -> None:
        for row, *_ in table.loc[mask, [ROW]].itertuples(index=False):
            rejections.append((name, int(row), reason(row) if callable(reason) else reason))

    t = table.copy()
    n_rows = len(t)
    pid = t[P.PATCH_ID]
    reject(pid.isna(), "patch_id is empty")
    known = pid.isin(patches.index)
    for row, value in t.loc[pid.notna() & ~known, [ROW, P.PATCH_ID]].itertuples(index=False):
        rejections.append(
            (name, int(row), f"unknown patch_id {value!r} (not in the registry; check the id)")
        )

    t["_verdict"] = t[P.VERDICT].map(parse_verdict)
    for row, value in t.loc[t[P.VERDICT].notna() & t["_verdict"].isna(), [ROW, P.VERDICT]].values:
        rejections.append((name, int(row), f"verdict {value!r} is not one of {_allowed(Verdict)}"))
    t["_method"] = t[P.RECT_METHOD].map(parse_rect_method)
    bad_method = t[P.RECT_METHOD].notna() & t["_method"].isna()
    for row, value in t.loc[bad_method, [ROW, P.RECT_METHOD]].values:
        rejections.append(
            (name, int(row), f"rect_method {value!r} is not one of {_allowed(RectMethod)}")
        )

    remaining = pd.to_numeric(t[P.REMAINING_M2].str.replace(",", "", regex=False), errors="coerce")
    t["_remaining"] = remaining
    for row, value in t.loc[
        t[P.REMAINING_M2].notna() & remaining.isna(), [ROW, P.REMAINING_M2]
    ].values:
        rejections.append((name, int(row), f"remaining_m2 {value!r} is not a number"))
    area = t[P.PATCH_ID].map(patches[P.AREA_M2]) if len(t) else pd.Series(dtype="float64")
    for row, value in t.loc[remaining < 0, [ROW, "_remaining"]].values:
        rejections.append((name, int(row), f"remaining_m2 {value:g} is negative"))
    too_big = known & (remaining > area + t[TOLERANCE])
    for row, value, a in t.loc[too_big, [ROW, "_remaining"]].assign(a=area[too_big]).values:
        rejections.append((name, int(row), _too_big_message(value, a)))

    current = t[P.PATCH_ID].map(patches[P.VERDICT])
    after = t["_verdict"].where(t["_verdict"].notna(), current)
    has_rect = t[P.RECT_METHOD].notna() | t[P.REMAINING_M2].notna()
    not_illegal = known & has_rect & (after != Verdict.ILLEGAL)
    for row, verdict in t.loc[not_illegal, [ROW]].assign(v=after[not_illegal]).values:
        rejections.append(
            (
                name,
                int(row),
                f"rect_method/remaining_m2 given but the verdict is {verdict!r}; rectification "
                "only applies to illegal patches",
            )
        )

    t["_checked"] = t[P.CHECKED_ON].map(lambda v: parse_date(v) if isinstance(v, str) else None)
    for row, value in t.loc[
        t[P.CHECKED_ON].notna() & t["_checked"].isna(), [ROW, P.CHECKED_ON]
    ].values:
        rejections.append((name, int(row), f"checked_on {value!r} is not a date (use YYYY-MM-DD)"))
    future = t["_checked"].map(lambda d: d is not None and d > today)
    for row, value in t.loc[future, [ROW, "_checked"]].values:
        rejections.append(
            (name, int(row), f"checked_on {value.isoformat()} is in the future (today is {today})")
        )

    rejections.extend(_stage_rejections(t, patches, after, name, today))
    demolition = t["_stage"].isin(list(STAGE_DEMOLISHED_BY)) & known
    nothing_done = t["_remaining"].isna() | (t["_remaining"] >= area - t[TOLERANCE])
    for row in t.loc[demolition & nothing_done, ROW]:
        warnings.append(
            f"{name} row {row}: a demolition stage, but remaining_m2 is the whole patch or not "
            "given: the patch stays unrectified until a return gives remaining_m2 (0 when done)"
        )

    other = (after == Verdict.OTHER) & t[P.VERDICT_SUBTYPE].isna() & t["_verdict"].notna()
    for row in t.loc[other, ROW]:
        warnings.append(f"{name} row {row}: verdict 'other' without verdict_subtype (其他类型)")

    t, dup_rejections = _deduplicate(t, name)
    rejections.extend(dup_rejections)
    t.attrs["n_rows"] = n_rows
    return t, rejections, warnings


def _stage_rejections(
    t: pd.DataFrame, patches: pd.DataFrame, after: pd.Series, name: str, today: dt.date
) -> list[tuple[str, int | None, str]]:
    """Parse the enforcement columns into ``_stage``, ``_stage_date``, ``_demolished_by`` and
    check each row (:func:`pipeline.registry.enforcement.stage_problems`)."""
    rejections: list[tuple[str, int | None, str]] = []
    t["_stage"] = t[P.ENFORCEMENT_STAGE].map(parse_stage)
    t["_stage_date"] = t[P.STAGE_DATE].map(lambda v: parse_date(v) if isinstance(v, str) else None)
    t["_demolished_by"] = t[P.DEMOLISHED_BY].map(parse_demolished_by)
    bad_values = (
        (P.ENFORCEMENT_STAGE, "_stage", f"one of {_allowed(EnforcementStage)}"),
        (P.STAGE_DATE, "_stage_date", "a date (use YYYY-MM-DD)"),
        (P.DEMOLISHED_BY, "_demolished_by", f"one of {_allowed(DemolishedBy)}"),
    )
    parsed_ok = pd.Series(True, index=t.index)
    for col, parsed, expected in bad_values:
        bad = t[col].notna() & t[parsed].isna()
        parsed_ok &= ~bad
        for row, value in t.loc[bad, [ROW, col]].values:
            rejections.append((name, int(row), f"{col} {value!r} is not {expected}"))
    known = t[P.PATCH_ID].isin(patches.index)
    for i in t.index[known & parsed_ok]:
        rec, patch = t.loc[i], patches.loc[t.at[i, P.PATCH_ID]]
        for reason in stage_problems(_stage_row(rec, after[i]), _patch_stage(patch), today):
            rejections.append((name, int(rec[ROW]), reason))
    return rejections


def _stage_row(rec: Any, verdict_after: str) -> StageRow:
    return StageRow(
        stage=_none(rec["_stage"]),
        stage_date=_none(rec["_stage_date"]),
        demolished_by=_none(rec["_demolished_by"]),
        checked_on=_none(rec["_checked"]),
        verdict_after=verdict_after,
        method_given=_none(rec["_method"]),
    )


def _none(value: Any) -> Any:
    """None for a missing value (None, NaN, NA), else the value."""
    return None if value is None or (not isinstance(value, dt.date) and pd.isna(value)) else value


def _patch_stage(patch: pd.Series) -> PatchStage:
    stage, method = patch[P.ENFORCEMENT_STAGE], patch[P.RECT_METHOD]
    return PatchStage(
        stage=None if pd.isna(stage) else str(stage),
        stage_date=as_date(patch[P.STAGE_DATE]),
        epoch=str(patch[P.FIRST_SEEN]),
        method=None if pd.isna(method) else str(method),
    )


def _too_big_message(value: float, area: float) -> str:
    """The remaining area and the patch area in m² and 亩, each pair with enough decimals to
    tell them apart (0.6006 亩 is not shown as 0.60 亩, like a 0.60 亩 patch)."""
    m2, area_m2 = _apart(value, area)
    mu, area_mu = _apart(m2_to_mu(value), m2_to_mu(area))
    return (
        f"remaining_m2 {m2} m² ({mu} 亩) exceeds the patch area {area_m2} m² ({area_mu} 亩) by "
        "more than the rounding of the value written"
    )


def _apart(value: float, other: float) -> tuple[str, str]:
    """``value`` and ``other`` as text with 2 decimals, or as many more as it takes (up to
    8) for the two to differ."""
    for decimals in range(2, 9):
        a, b = f"{value:.{decimals}f}", f"{other:.{decimals}f}"
        if a != b:
            break
    return a, b


def _deduplicate(t: pd.DataFrame, name: str) -> tuple[pd.DataFrame, list]:
    """Identical rows for one patch count once; conflicting rows are all rejected."""
    content = [
        "_verdict",
        P.VERDICT_SUBTYPE,
        "_method",
        "_remaining",
        "_checked",
        "_stage",
        "_stage_date",
        "_demolished_by",
        P.INSPECTOR,
        P.NOTE,
    ]
    valid = t[t[P.PATCH_ID].notna()]
    key = valid[content].astype("str")  # NaN/None compare equal as text
    distinct = pd.concat([valid[[P.PATCH_ID]], key], axis=1).drop_duplicates()
    conflicting = distinct[P.PATCH_ID][distinct[P.PATCH_ID].duplicated()].unique()
    rejections = []
    for pid in conflicting:
        rows = t.loc[t[P.PATCH_ID] == pid, ROW].astype(int).tolist()
        for row in rows:
            rejections.append(
                (
                    name,
                    row,
                    f"patch {pid} appears in rows {', '.join(map(str, rows))} with different "
                    "values; keep one row per patch",
                )
            )
    keep = ~pd.concat([t[[P.PATCH_ID]], t[content].astype("str")], axis=1).duplicated()
    return t[keep].reset_index(drop=True), rejections


# --------------------------------------------------------------------------- application
def _apply(
    t: pd.DataFrame, patches: pd.DataFrame, name: str, now: str
) -> tuple[pd.DataFrame, list[dict[str, Any]], int, int]:
    """New values per patch; one ``field_verdict`` (+ ``rectification``) event per row."""
    out = patches.copy()
    events: list[dict[str, Any]] = []
    n_verdicts = n_rect = 0
    for rec in t.sort_values(ROW).to_dict("records"):
        pid = rec[P.PATCH_ID]
        old = out.loc[pid]
        verdict = rec["_verdict"] if pd.notna(rec["_verdict"]) else old[P.VERDICT]
        if pd.isna(verdict):  # a registry damaged by an older import: the patch is pending
            verdict = Verdict.PENDING.value
        method = old[P.RECT_METHOD]
        remaining = old[P.REMAINING_M2]
        if verdict == Verdict.ILLEGAL:
            if old[P.VERDICT] != Verdict.ILLEGAL or pd.isna(remaining):
                remaining = float(old[P.AREA_M2])  # nothing rectified yet
            if pd.notna(rec["_remaining"]):
                remaining = min(float(rec["_remaining"]), float(old[P.AREA_M2]))
            if rec["_method"] is not None:
                method = rec["_method"]
        else:
            method, remaining = np.nan, np.nan
        stage = _stage_update(rec, verdict, old)
        if stage is not None:
            method = stage["rect_method"] if stage["rect_method"] is not None else method
        subtype = rec[P.VERDICT_SUBTYPE]
        if pd.isna(subtype) and verdict == Verdict.OTHER and old[P.VERDICT] == Verdict.OTHER:
            subtype = old[P.VERDICT_SUBTYPE]
        checked = rec["_checked"].isoformat() if rec["_checked"] else old[P.CHECKED_ON]
        inspector = rec[P.INSPECTOR] if pd.notna(rec[P.INSPECTOR]) else old[P.INSPECTOR]
        note = rec[P.NOTE] if pd.notna(rec[P.NOTE]) else old[P.NOTE]
        new = {
            P.VERDICT: verdict,
            P.VERDICT_SUBTYPE: subtype,
            P.RECT_METHOD: method,
            P.REMAINING_M2: remaining,
            P.CHECKED_ON: checked,
            P.INSPECTOR: inspector,
            P.NOTE: note,
            P.UPDATED_AT: now,
        }
        if verdict != Verdict.ILLEGAL:  # stages only mean something for illegal patches
            new |= {P.ENFORCEMENT_STAGE: np.nan, P.STAGE_DATE: np.nan, P.DEMOLISHED_BY: np.nan}
        elif stage is not None:
            new |= {
                P.ENFORCEMENT_STAGE: stage["stage"],
                P.STAGE_DATE: stage["stage_date"],
                P.DEMOLISHED_BY: stage["demolished_by"],
            }
        for col, value in new.items():
            out.at[pid, col] = value
        n_verdicts += verdict != old[P.VERDICT]
        row_events = _row_events(pid, f"field:{name}#{rec[ROW]}", old, new, stage, rec["_checked"])
        n_rect += any(e[E.KIND] == EventKind.RECTIFICATION for e in row_events)
        events.extend(row_events)
    return out, events, n_verdicts, n_rect


def _row_events(
    pid: str,
    source: str,
    old: pd.Series,
    new: dict[str, Any],
    stage: dict[str, Any] | None,
    checked: dt.date | None,
) -> list[dict[str, Any]]:
    """The events of one applied row: ``field_verdict``, then ``enforcement`` (a new stage,
    or the stage emptied when the patch leaves ``illegal``), then ``rectification`` when the
    method or the remaining area changed. Each carries the day it reports
    (:data:`~pipeline.schema.FIELD_DATE`)."""
    day = checked.isoformat() if checked else None
    verdict_values = {c: new[c] for c in (P.VERDICT, P.VERDICT_SUBTYPE, P.CHECKED_ON, P.INSPECTOR,
                                          P.NOTE, P.RECT_METHOD, P.REMAINING_M2)}  # fmt: skip
    verdict_values[P.VERDICT + EVENT_BEFORE_SUFFIX] = old[P.VERDICT]
    events = [_event(pid, EventKind.FIELD_VERDICT, source, verdict_values | {FIELD_DATE: day})]
    if stage is None and pd.notna(old[P.ENFORCEMENT_STAGE]) and new[P.VERDICT] != Verdict.ILLEGAL:
        stage = {"stage": None, "stage_date": day, "demolished_by": None}
    if stage is not None:
        events.append(_stage_event(pid, source, stage, old))
    method, remaining = new[P.RECT_METHOD], new[P.REMAINING_M2]
    if not (_same(method, old[P.RECT_METHOD]) and _same(remaining, old[P.REMAINING_M2])):
        closed_on = stage["stage_date"] if stage and stage["stage"] in FINAL_STAGES else day
        values = {
            P.RECT_METHOD: method,
            P.RECT_METHOD + EVENT_BEFORE_SUFFIX: old[P.RECT_METHOD],
            P.REMAINING_M2: remaining,
            P.REMAINING_M2 + EVENT_BEFORE_SUFFIX: old[P.REMAINING_M2],
            FIELD_DATE: closed_on,
        }
        events.append(_event(pid, EventKind.RECTIFICATION, source, values))
    return events


def _event(pid: str, kind: EventKind, source: str, values: dict[str, Any]) -> dict[str, Any]:
    return {E.PATCH_ID: pid, E.KIND: kind.value, E.SOURCE: source, E.VALUES: to_json(values)}


def _stage_update(rec: dict[str, Any], verdict: str, old: pd.Series) -> dict[str, Any] | None:
    """The new enforcement values of a checked row, None when it sets no new stage."""
    if verdict != Verdict.ILLEGAL:
        return None
    return stage_values(_stage_row(rec, verdict), _patch_stage(old))


def _stage_event(pid: str, source: str, stage: dict[str, Any], old: pd.Series) -> dict[str, Any]:
    """An ``enforcement`` event: the new stage (None: emptied), its date, the stage before."""
    values = {
        P.ENFORCEMENT_STAGE: stage["stage"],
        P.ENFORCEMENT_STAGE + EVENT_BEFORE_SUFFIX: old[P.ENFORCEMENT_STAGE],
        P.STAGE_DATE: stage["stage_date"],
        P.DEMOLISHED_BY: stage["demolished_by"],
        FIELD_DATE: stage["stage_date"],
    }
    return _event(pid, EventKind.ENFORCEMENT, source, values)


def _reject(name: str, rejections: list[tuple[str, int | None, str]]) -> None:
    """Raise :class:`FieldReturnError` listing the first rejections, sorted by row."""
    rejections.sort(key=lambda r: (r[1] is None, r[1] or 0))
    shown = "; ".join(f"row {r}: {why}" for _, r, why in rejections[:5])
    more = f" (and {len(rejections) - 5} more)" if len(rejections) > 5 else ""
    raise FieldReturnError(
        f"{name}: {len(rejections)} bad row(s), nothing applied: {shown}{more}", rejections
    )


def _same(a: Any, b: Any) -> bool:
    return (pd.isna(a) and pd.isna(b)) or a == b


def _parse_enum(value: Any, enum) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip().lower()
    # Chinese words are looked up without any spaces ("已 拆除" is 已拆除), English ones with
    # spaces and hyphens as "_" ("False change" is false_change)
    text = VALUE_ALIASES.get(re.sub(r"\s+", "", text)) or VALUE_ALIASES.get(text, text)
    key = re.sub(r"[\s\-]+", "_", text)
    allowed = {m.value for m in enum}
    return key if key in allowed else None


def _allowed(enum) -> str:
    """Every accepted word per value, for rejection messages."""
    return "; ".join(f"{m.value} ({', '.join(VALUE_SYNONYMS.get(m, ()))})" for m in enum)
