"""Enforcement stages of illegal patches (查处阶段): the checks a field-return row must pass
and the values a new stage sets.

Pure: one row's parsed values and the patch's current values in, reasons or new values out.
:mod:`pipeline.registry.field_returns` calls these for every row of a return.

Rules
-----
- A stage is only accepted for a patch whose verdict after the row is ``illegal``.
- A new stage must be allowed after the patch's current one
  (:data:`~pipeline.schema.STAGE_TRANSITIONS`); a final stage is never left. Giving the
  current stage again changes nothing.
- Every new stage has a ``stage_date``: the row's, else its ``checked_on``. It may not be
  before the first day of the patch's epoch, before the current stage's date, or after
  today. A ``stage_date`` without a stage is rejected.
- ``demolished_by`` follows from the final stage (``self_demolished`` → ``self``,
  ``forced_demolished`` → ``forced``); a value given that disagrees, or given for a stage
  that demolishes nothing, is rejected.
- ``rect_method`` given in the row must agree with a final stage
  (:data:`~pipeline.schema.STAGE_RECT_METHODS`): ``legalized`` ↔ ``legalized``,
  ``confiscated`` ↔ ``confiscated``, a demolition ↔ ``demolished_restored`` or ``combined``.
  A final stage without a method keeps the patch's method when it agrees, else sets the first
  of these.
- The patch's epoch is the one it was first seen in (``first_seen``), which a later detection
  does not move.
- Giving the current stage again with another date is rejected (the date of a step is kept).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pandas as pd

from pipeline.epochs import epoch_start
from pipeline.schema import (
    DEMOLISHED_BY_ALIASES,
    FINAL_STAGES,
    STAGE_DEMOLISHED_BY,
    STAGE_RECT_METHODS,
    STAGE_TRANSITIONS,
    VALUE_ALIASES,
    DemolishedBy,
    EnforcementStage,
    RectMethod,
    Verdict,
)


@dataclasses.dataclass(frozen=True)
class StageRow:
    """What one return row says about the enforcement of its patch, parsed."""

    stage: str | None
    stage_date: dt.date | None
    demolished_by: str | None
    checked_on: dt.date | None
    verdict_after: str
    method_given: str | None
    """The rectification method the row itself gives (None: none given)."""


@dataclasses.dataclass(frozen=True)
class PatchStage:
    """The patch's current enforcement values, its method and the epoch it was first seen in."""

    stage: str | None
    stage_date: dt.date | None
    epoch: str
    method: str | None = None


def parse_stage(value: Any) -> str | None:
    """An enforcement stage (English value or a word of
    :data:`~pipeline.schema.VALUE_SYNONYMS`) as its value; None when it is not one."""
    key = _key(value)
    if key is None:
        return None
    key = VALUE_ALIASES.get(key, key)
    return key if key in set(EnforcementStage) else None


def parse_demolished_by(value: Any) -> str | None:
    """``self`` / ``forced`` from the value, a word for it, or a stage word that implies it
    (``自行拆除``); None when it is none of these."""
    key = _key(value)
    if key is None:
        return None
    if key in DEMOLISHED_BY_ALIASES:
        return DEMOLISHED_BY_ALIASES[key]
    if key in set(DemolishedBy):
        return key
    stage = parse_stage(value)
    implied = STAGE_DEMOLISHED_BY.get(stage) if stage else None
    return None if implied is None else implied.value


def stage_problems(row: StageRow, patch: PatchStage, today: dt.date) -> list[str]:
    """Why the row's enforcement values cannot be applied; empty when they can."""
    if patch.stage is not None and patch.stage not in set(EnforcementStage):
        return [
            f"the registry holds enforcement_stage {patch.stage!r} for this patch, which is no "
            f"stage ({', '.join(EnforcementStage)}); correct it in registry.gpkg"
        ]
    if row.stage is None:
        problems = []
        if row.stage_date is not None:
            problems.append("stage_date given without enforcement_stage (查处阶段)")
        if row.demolished_by is not None and patch.stage is None:
            problems.append("demolished_by given but the patch has no enforcement stage")
        return problems + _agreement(patch.stage, row)
    if row.verdict_after != Verdict.ILLEGAL:
        return [
            f"enforcement_stage {row.stage!r} given but the verdict is {row.verdict_after!r}; "
            "stages only apply to illegal patches"
        ]
    problems = []
    if row.stage != patch.stage:
        problems += _transition(patch.stage, row.stage)
        problems += _date_problems(row, patch, today)
    elif row.stage_date is not None and patch.stage_date not in (None, row.stage_date):
        problems.append(
            f"enforcement_stage {row.stage!r} was reached on {patch.stage_date}, not "
            f"{row.stage_date}; give the next stage, or correct the date in registry.gpkg"
        )
    return problems + _agreement(row.stage, row)


def stage_values(row: StageRow, patch: PatchStage) -> dict[str, Any] | None:
    """The new ``enforcement_stage``, ``stage_date``, ``demolished_by`` and ``rect_method``
    of a checked row; None when the row sets no new stage."""
    if row.stage is None or row.stage == patch.stage:
        return None
    date = row.stage_date or row.checked_on
    method = row.method_given
    allowed = STAGE_RECT_METHODS.get(EnforcementStage(row.stage))
    if allowed and method is None:  # the patch's method if it agrees, else the stage's own
        method = patch.method if patch.method in allowed else _default_method(row.stage)
    demolished = STAGE_DEMOLISHED_BY.get(EnforcementStage(row.stage))
    return {
        "stage": row.stage,
        "stage_date": date.isoformat() if date else None,
        "demolished_by": demolished.value if demolished else None,
        "rect_method": method,
    }


def as_date(value: Any) -> dt.date | None:
    """A stored ISO date (text) as a date; None when empty or not a date."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return None
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


# --------------------------------------------------------------------------- helpers
def _transition(current: str | None, new: str) -> list[str]:
    key = EnforcementStage(current) if current else None
    if EnforcementStage(new) in STAGE_TRANSITIONS[key]:
        return []
    if key in FINAL_STAGES:
        return [f"the patch's enforcement is already final ({current!r}); {new!r} cannot follow"]
    allowed = ", ".join(sorted(STAGE_TRANSITIONS[key]))
    return [
        f"enforcement_stage {new!r} cannot follow {current!r} (allowed after {current!r}: "
        f"{allowed})"
    ]


def _date_problems(row: StageRow, patch: PatchStage, today: dt.date) -> list[str]:
    date = row.stage_date or row.checked_on
    if date is None:
        return [f"enforcement_stage {row.stage!r} needs its date (stage_date 阶段日期)"]
    problems = []
    start = epoch_start(patch.epoch)
    if start is not None and date < start:
        problems.append(
            f"stage_date {date} is before the patch's epoch {patch.epoch} (from {start})"
        )
    if patch.stage_date is not None and date < patch.stage_date:
        problems.append(
            f"stage_date {date} is before the date of the current stage {patch.stage!r} "
            f"({patch.stage_date})"
        )
    if date > today:
        problems.append(f"stage_date {date} is in the future (today is {today})")
    return problems


def _agreement(stage: str | None, row: StageRow) -> list[str]:
    """demolished_by and rect_method against the (final) stage after the row."""
    problems = []
    implied = STAGE_DEMOLISHED_BY.get(EnforcementStage(stage)) if stage else None
    if row.demolished_by is not None and row.demolished_by != implied:
        problems.append(
            f"demolished_by {row.demolished_by!r} disagrees with the stage {stage!r}"
            + (f" (which means {implied.value!r})" if implied else " (no demolition)")
        )
    allowed = STAGE_RECT_METHODS.get(EnforcementStage(stage)) if stage else None
    if allowed and row.method_given is not None and row.method_given not in allowed:
        problems.append(
            f"rect_method {row.method_given!r} disagrees with the final stage {stage!r} "
            f"(expected {' or '.join(sorted(allowed))})"
        )
    return problems


def _default_method(stage: str) -> str:
    allowed = STAGE_RECT_METHODS[EnforcementStage(stage)]
    return next(m.value for m in RectMethod if m in allowed)


def _key(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip().lower()
    if not text:
        return None
    compact = "".join(text.split())
    if compact in VALUE_ALIASES or compact in DEMOLISHED_BY_ALIASES:
        return compact
    return "_".join(text.replace("-", " ").split())
