"""The registry's events as a ledger of dated facts: when each patch was detected, first
exported, judged illegal, moved through the enforcement steps and rectified.

Pure: a :class:`~pipeline.registry.store.RegistryState` in, frames out.

Dates
-----
An event's *date* is the day the fact happened, not the day it was imported: a field row's
``checked_on`` (its ``stage_date`` for an ``enforcement`` event), else the day of the event's
time (UTC). Detection and export facts are dated by their event time: the *detection date*
of a patch is the date of its ``detected`` event, its *first export* the date of its first
``exported`` event (DESIGN §2).
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd

from pipeline.registry.store import RegistryState
from pipeline.schema import E, EventKind, P, Verdict

DATE = "date"
"""Column of the ledger: the day the fact happened (``datetime.date``)."""


def ledger(state: RegistryState) -> pd.DataFrame:
    """The events with their values unpacked and dated.

    Returns
    -------
    DataFrame
        ``event_id``, ``patch_id``, ``kind``, ``source``, :data:`DATE` and the value
        columns the events carry (``verdict``, ``remaining_m2``, ``enforcement_stage``,
        ``stage_date``, ``checked_on``, ...), ordered by ``event_id``.
    """
    ev = state.events.sort_values(E.EVENT_ID)
    values = pd.DataFrame(
        [json.loads(v) if isinstance(v, str) and v else {} for v in ev[E.VALUES]],
        index=ev.index,
    )
    out = pd.concat([ev[[E.EVENT_ID, E.PATCH_ID, E.KIND, E.SOURCE]], values], axis=1)
    for col in (P.CHECKED_ON, P.STAGE_DATE, P.VERDICT, P.REMAINING_M2, P.ENFORCEMENT_STAGE):
        if col not in out.columns:
            out[col] = np.nan
    time_day = pd.to_datetime(ev[E.TIME].astype("str").str[:10], errors="coerce").dt.date
    checked = _field_dates(out)
    stage_day = pd.to_datetime(out[P.STAGE_DATE], errors="coerce").dt.date
    day = time_day.where(checked.isna(), checked)
    enforcement = out[E.KIND] == EventKind.ENFORCEMENT
    day = day.where(~(enforcement & stage_day.notna()), stage_day)
    out[DATE] = day
    out[P.REMAINING_M2] = pd.to_numeric(out[P.REMAINING_M2], errors="coerce")
    return out.reset_index(drop=True)


def patch_dates(state: RegistryState, book: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per patch (index ``patch_id``): ``detected_on``, ``first_exported``, ``illegal_on``
    (the first verdict ``illegal``) and ``rectified_on`` (the day its remaining area last
    became 0, for an illegal patch that is rectified now; else None)."""
    book = ledger(state) if book is None else book
    by_kind = book.groupby(E.KIND)
    ids = state.patches[P.PATCH_ID]
    out = pd.DataFrame(index=pd.Index(ids, name=P.PATCH_ID))
    out["detected_on"] = _first_day(by_kind, EventKind.DETECTED, book)
    out["first_exported"] = _first_day(by_kind, EventKind.EXPORTED, book)
    verdicts = book[(book[E.KIND] == EventKind.FIELD_VERDICT) & (book[P.VERDICT] == "illegal")]
    out["illegal_on"] = verdicts.groupby(E.PATCH_ID)[DATE].min()
    out["rectified_on"] = _rectified_on(state, book)
    return out.astype(object).where(out.notna(), None)


def stages_reached(book: pd.DataFrame) -> pd.DataFrame:
    """One row per (patch, stage) it reached since its last relapse: ``patch_id``,
    ``enforcement_stage``, :data:`DATE`."""
    relapse = book[book[E.KIND] == EventKind.RELAPSE].groupby(E.PATCH_ID)[E.EVENT_ID].max()
    steps = book[book[E.KIND] == EventKind.ENFORCEMENT]
    after = steps[E.EVENT_ID] > steps[E.PATCH_ID].map(relapse).fillna(-1)
    steps = steps[after & steps[P.ENFORCEMENT_STAGE].notna()]
    return steps[[E.PATCH_ID, P.ENFORCEMENT_STAGE, DATE]].reset_index(drop=True)


def rectification_records(book: pd.DataFrame) -> pd.DataFrame:
    """The facts that move a rectification rate: ``patch_id``, :data:`DATE`, ``verdict``
    (carried forward per patch) and ``remaining_m2`` after the event (NaN: the whole patch),
    in event order."""
    kinds = {EventKind.FIELD_VERDICT, EventKind.RECTIFICATION, EventKind.RELAPSE}
    rec = book[book[E.KIND].isin([k.value for k in kinds])].copy()
    rec[P.VERDICT] = rec[P.VERDICT].where(rec[E.KIND] == EventKind.FIELD_VERDICT)
    rec[P.VERDICT] = rec.groupby(E.PATCH_ID)[P.VERDICT].ffill()
    rec[P.VERDICT] = rec[P.VERDICT].fillna(Verdict.ILLEGAL.value)  # relapse: still illegal
    cols = [E.EVENT_ID, E.PATCH_ID, DATE, P.VERDICT, P.REMAINING_M2]
    return rec[cols].sort_values([DATE, E.EVENT_ID], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- helpers
def _field_dates(book: pd.DataFrame) -> pd.Series:
    """The ``checked_on`` of each event's field row (shared by the events of one source)."""
    field = book[E.SOURCE].astype("str").str.startswith("field:")
    if not field.any():
        return pd.Series(None, index=book.index, dtype=object)
    checked = pd.to_datetime(book[P.CHECKED_ON], errors="coerce").dt.date
    per_source = checked[field].groupby(book.loc[field, E.SOURCE]).first()
    return book[E.SOURCE].map(per_source).where(field)


def _first_day(by_kind, kind: EventKind, book: pd.DataFrame) -> pd.Series:
    if kind.value not in by_kind.groups:
        return pd.Series(dtype=object)
    rows = book.loc[by_kind.groups[kind.value]]
    return rows.groupby(E.PATCH_ID)[DATE].min()


def _rectified_on(state: RegistryState, book: pd.DataFrame) -> pd.Series:
    p = state.patches
    done = p[(p[P.VERDICT] == Verdict.ILLEGAL) & (p[P.REMAINING_M2] == 0)][P.PATCH_ID]
    rec = rectification_records(book)
    zero = rec[rec[P.PATCH_ID].isin(done)]
    # the day of the last event that brought the remaining area to 0
    last_open = zero[~(zero[P.REMAINING_M2] == 0)].groupby(P.PATCH_ID)[E.EVENT_ID].max()
    closing = zero[(zero[P.REMAINING_M2] == 0)]
    closing = closing[closing[E.EVENT_ID] > closing[P.PATCH_ID].map(last_open).fillna(-1)]
    return closing.groupby(P.PATCH_ID)[DATE].min()


def days_between(start: pd.Series, end: pd.Series) -> pd.Series:
    """Whole days from ``start`` to ``end`` (dates or None) as float, NaN when either is
    missing."""
    s = pd.to_datetime(start, errors="coerce")
    e = pd.to_datetime(end, errors="coerce")
    return (e - s).dt.days.astype("float64")


def as_day(value: object) -> dt.date | None:
    """A date, ISO text or None as a date (None when empty)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])
