"""Urgent patches and the order patches are worked in.

Pure: patches, their dates (:func:`pipeline.registry.ledger.patch_dates`) and the report
settings in, a frame out.

A patch still open (pending, or illegal and not rectified) is *urgent* when it holds at least ``urgent_basic_farmland_mu`` 亩 of basic farmland
or ``urgent_farmland_mu`` 亩 of farmland (defaults 5 and 10). Its ``report_due`` is
``report_working_days`` (3) working days after its first export (DESIGN §2: the report
deadline counts from the first export; an export today is the first one of a patch never
exported), skipping weekends and official holidays and counting make-up working days
(:mod:`pipeline.workdays`).

Order everywhere (packages, patch lists, the report): urgent patches first, by
``report_due``; then the others by ``priority`` when a learned ranking gives one, else by
``score`` (highest first); ties by ``patch_id``.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from pipeline.config import ReportConfig
from pipeline.schema import CY, PRIORITY, P, Verdict
from pipeline.units import MU_M2
from pipeline.workdays import WorkCalendar, add_working_days


def urgency(
    patches: pd.DataFrame, first_exported: pd.Series, cfg: ReportConfig, *, today: dt.date
) -> pd.DataFrame:
    """``urgent``, ``first_exported`` and ``report_due`` per patch (index as ``patches``).

    ``first_exported`` maps patch id -> date of its first export (missing: not exported
    yet, so its first export is ``today``); ``report_due`` is None for a patch that is not
    urgent.
    """
    big = (patches[P.BASIC_FARMLAND_M2].fillna(0) >= cfg.urgent_basic_farmland_mu * MU_M2) | (
        patches[P.FARMLAND_M2].fillna(0) >= cfg.urgent_farmland_mu * MU_M2
    )
    open_ = (patches[P.VERDICT] == Verdict.PENDING) | (
        (patches[P.VERDICT] == Verdict.ILLEGAL) & ~(patches[P.REMAINING_M2] == 0)
    )
    urgent = big & open_
    calendar = WorkCalendar.from_config(cfg.extra_holidays, cfg.extra_workdays)
    exported = patches[P.PATCH_ID].map(first_exported)
    exported = exported.where(exported.notna(), today)
    due = [
        add_working_days(day, cfg.report_working_days, calendar) if flag else None
        for day, flag in zip(exported, urgent, strict=True)
    ]
    return pd.DataFrame(
        {CY.URGENT: urgent.astype(bool), CY.FIRST_EXPORTED: exported, CY.REPORT_DUE: due},
        index=patches.index,
    )


def work_order(patches: pd.DataFrame, urgent: pd.DataFrame) -> pd.DataFrame:
    """``patches`` sorted as they are worked in: urgent first by ``report_due``, then by
    ``priority`` (a learned rank of the pending patches, when the column is there; patches
    without one come after), then by score, highest first; ties by patch id."""
    key = pd.DataFrame(index=patches.index)
    key["_urgent"] = ~urgent[CY.URGENT].reindex(patches.index).fillna(False).astype(bool)
    due = urgent[CY.REPORT_DUE].reindex(patches.index)
    key["_due"] = pd.to_datetime(due.where(key["_urgent"].eq(False)), errors="coerce")
    key["_rank"] = (
        pd.to_numeric(patches[PRIORITY], errors="coerce") if PRIORITY in patches.columns else 0.0
    )  # a learned rank (pending patches); the others after them
    if P.SCORE in patches.columns:
        key["_score"] = -pd.to_numeric(patches[P.SCORE], errors="coerce").fillna(-np.inf)
    else:
        key["_score"] = 0.0
    key["_id"] = patches[P.PATCH_ID].astype("str")
    order = key.sort_values(
        ["_urgent", "_due", "_rank", "_score", "_id"], kind="stable", na_position="last"
    )
    return patches.loc[order.index]


def in_work_order(patches: pd.DataFrame) -> pd.DataFrame:
    """``patches`` in :func:`work_order`, reading ``urgent`` / ``report_due`` from the frame
    itself when it carries them (as export and report frames do); otherwise nobody is urgent."""
    if CY.URGENT in patches.columns:
        flags = patches[[CY.URGENT, CY.REPORT_DUE]]
    else:
        flags = pd.DataFrame({CY.URGENT: False, CY.REPORT_DUE: None}, index=patches.index)
    return work_order(patches, flags)
