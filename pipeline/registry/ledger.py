"""The registry's events as a ledger of dated facts: when each patch was detected, first
exported, judged illegal, moved through the enforcement steps and rectified.

Pure: a :class:`~pipeline.registry.store.RegistryState` in, frames out.

Dates
-----
An event's *date* is the day the fact happened, not the day it was imported: the day its
field row reports (:data:`~pipeline.schema.FIELD_DATE`: the row's own ``checked_on``, a
stage's ``stage_date``), else the day of the event's time in China Standard Time
(:data:`~pipeline.schema.LOCAL_TIMEZONE`; events are stored in UTC). Detection and export
facts are dated by their event time: the *detection date* of a patch is the date of its
``detected`` event, its *first export* the date of its first ``exported`` event (DESIGN §2).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from pipeline.registry.store import RegistryState
from pipeline.schema import FIELD_DATE, LOCAL_TIMEZONE, PD, E, EventKind, P, Verdict

DATE = PD.DATE
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
    for col in (FIELD_DATE, P.VERDICT, P.REMAINING_M2, P.ENFORCEMENT_STAGE):
        if col not in out.columns:
            out[col] = np.nan
    times = pd.to_datetime(ev[E.TIME].astype("str"), errors="coerce", utc=True)
    time_day = pd.Series(times.dt.tz_convert(LOCAL_TIMEZONE).dt.date, index=ev.index)
    field_day = pd.to_datetime(out[FIELD_DATE], errors="coerce").dt.date
    out[DATE] = time_day.where(field_day.isna(), field_day).astype(object)
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
    out[PD.DETECTED_ON] = _first_day(by_kind, EventKind.DETECTED, book)
    out[PD.FIRST_EXPORTED] = _first_day(by_kind, EventKind.EXPORTED, book)
    judged = (book[E.KIND] == EventKind.FIELD_VERDICT) & (book[P.VERDICT] == Verdict.ILLEGAL)
    out[PD.ILLEGAL_ON] = book[judged].groupby(E.PATCH_ID)[DATE].min()
    out[PD.RECTIFIED_ON] = _rectified_on(state, book)
    return out.astype(object).where(out.notna(), None)


def stages_reached(book: pd.DataFrame) -> pd.DataFrame:
    """One row per (patch, stage) it reached since its enforcement last started over (a
    relapse, or an ``enforcement`` event emptying the stage when the patch left
    ``illegal``): ``patch_id``, ``enforcement_stage``, :data:`DATE`."""
    steps = book[book[E.KIND] == EventKind.ENFORCEMENT]
    restart = (book[E.KIND] == EventKind.RELAPSE) | (
        (book[E.KIND] == EventKind.ENFORCEMENT) & book[P.ENFORCEMENT_STAGE].isna()
    )
    last_restart = book[restart].groupby(E.PATCH_ID)[E.EVENT_ID].max()
    after = steps[E.EVENT_ID] > steps[E.PATCH_ID].map(last_restart).fillna(-1)
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
