"""The enforcement cycle per unit: the funnel of the stages, how cases end and how fast, the
rectification rate's burn-up towards the deadline, new cases per period, stock against new,
the yearly assessment (考核) and urgent patches.

Pure: patches, the ledger (:mod:`pipeline.registry.ledger`) and the grid's units in, frames
with the columns of :class:`~pipeline.schema.CY` out. Counts are per patch (a patch split
between villages counts in the village of its majority).

Definitions
-----------
- *Illegal patch*: verdict ``illegal``; *rectified*: ``remaining_m2 == 0`` (DESIGN §2).
- *Funnel*: illegal patches that reached each stage (a patch that went
  ``notified → case_filed`` counts in both).
- *Share demolished voluntarily*: ``self`` / (``self`` + ``forced``) among demolished patches.
- *Days to rectified*: from the detection date (the ``detected`` event) to the day the
  remaining area became 0 (the field row's date); median and 90th percentile.
- *Burn-up*: the rectification rate by area replayed from the dated events, per day.
  *On track*: the rate today is at least the straight line from 0 on the unit's first
  ``illegal`` verdict to the target on the deadline.
- *New case of a period*: an illegal patch whose epoch (``epoch_to``) lies in the period
  (:mod:`pipeline.epochs`).
- *New* (增量): epoch in the report year; *stock* (存量): epochs of earlier years back to
  ``base_year``.
- *Zero-case unit* of a year: no illegal patch with its epoch in the year and no patch of
  the year still pending; stock of earlier years does not block it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd

from pipeline.config import ReportConfig
from pipeline.epochs import epoch_in, epoch_year
from pipeline.registry import ledger
from pipeline.registry.ledger import DATE, days_between
from pipeline.registry.rates import unit_codes
from pipeline.registry.store import RegistryState
from pipeline.registry.urgency import urgency, work_order
from pipeline.schema import (
    CY,
    NEW,
    PD,
    RC,
    STAGE_DEMOLISHED_BY,
    STAGE_ORDER,
    STOCK,
    UNASSIGNED,
    UNASSIGNED_NAME,
    DemolishedBy,
    E,
    EnforcementStage,
    EventKind,
    G,
    Level,
    P,
    RectMethod,
    Verdict,
)
from pipeline.units import MU_M2


@dataclasses.dataclass(frozen=True)
class Units:
    """The units reported on: the district and its townships and villages (grid frames with
    ``code`` and ``name``; villages also ``township_code``)."""

    district: tuple[str, str]
    townships: pd.DataFrame
    villages: pd.DataFrame

    def frame(self, level: str, extra: tuple[str, ...] = ()) -> pd.DataFrame:
        """``level``, ``code``, ``name``, ``parent_code`` of every unit of one level, plus the
        ``extra`` codes patches carry that are no unit of the grid (``unassigned`` is named
        :data:`~pipeline.schema.UNASSIGNED_NAME`; the others by their code), last."""
        if level == Level.DISTRICT:
            code, name = self.district
            return pd.DataFrame({RC.LEVEL: [level], RC.CODE: [code], RC.NAME: [name],
                                 RC.PARENT_CODE: [None]})  # fmt: skip
        src = self.townships if level == Level.TOWNSHIP else self.villages
        parent = src[G.TOWNSHIP_CODE] if level == Level.VILLAGE else self.district[0]
        out = pd.DataFrame(
            {RC.LEVEL: level, RC.CODE: src[G.CODE].astype(str), RC.NAME: src[G.NAME]}
        )
        out[RC.PARENT_CODE] = parent if np.isscalar(parent) else parent.astype(str).to_numpy()
        out = out.sort_values(RC.CODE, kind="stable")
        missing = sorted(set(extra) - set(out[RC.CODE]))
        names = [UNASSIGNED_NAME if c == UNASSIGNED else c for c in missing]
        more = pd.DataFrame({RC.LEVEL: level, RC.CODE: missing, RC.NAME: names,
                             RC.PARENT_CODE: None})  # fmt: skip
        return pd.concat([out, more], ignore_index=True) if missing else out.reset_index(drop=True)

    def key(self, patches: pd.DataFrame, level: str) -> pd.Series:
        """The unit code of each patch at ``level``."""
        if level == Level.DISTRICT:
            return pd.Series(self.district[0], index=patches.index)
        return unit_codes(patches[P.TOWNSHIP_CODE if level == Level.TOWNSHIP else P.VILLAGE_CODE])


def per_unit(
    units: Units, patches: pd.DataFrame, levels: tuple[str, ...], aggregate
) -> pd.DataFrame:
    """``aggregate(patches of one unit) -> dict`` for every unit of ``levels`` (units without
    patches get the aggregate of an empty frame), with the unit columns first."""
    rows = []
    for level in levels:
        key = units.key(patches, level)
        groups = {code: patches.loc[idx] for code, idx in patches.groupby(key).groups.items()}
        for unit in units.frame(level, tuple(groups)).to_dict("records"):
            rows.append(unit | aggregate(groups.get(unit[RC.CODE], patches.iloc[0:0])))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- funnel
def funnel(patches: pd.DataFrame, reached: pd.DataFrame, units: Units) -> pd.DataFrame:
    """Illegal patches that reached each stage, per unit (district and townships): one row
    per unit and stage, in :data:`~pipeline.schema.STAGE_ORDER`.

    The steps count as a funnel: a patch counts in every step up to the furthest it reached,
    its outcome included (a forced demolition went through the court, a confiscation through
    a penalty decision; any stage means the party was at least notified). Outcomes count the
    patches that ended so.
    """
    illegal = _illegal(patches)
    steps = reached[reached[P.PATCH_ID].isin(illegal[P.PATCH_ID])]
    pairs = set(zip(steps[P.PATCH_ID], steps[P.ENFORCEMENT_STAGE], strict=True))
    current = illegal[[P.PATCH_ID, P.ENFORCEMENT_STAGE]].dropna()
    pairs |= set(zip(current[P.PATCH_ID], current[P.ENFORCEMENT_STAGE], strict=True))
    pairs |= _implied_steps(pairs)

    def count(group: pd.DataFrame) -> dict:
        ids = set(group[P.PATCH_ID])
        return {s.value: sum((pid, s.value) in pairs for pid in ids) for s in STAGE_ORDER} | {
            CY.N_ILLEGAL: len(ids)
        }

    wide = per_unit(units, illegal, (Level.DISTRICT, Level.TOWNSHIP), count)
    unit_cols = [RC.LEVEL, RC.CODE, RC.NAME, RC.PARENT_CODE, CY.N_ILLEGAL]
    long = wide.melt(id_vars=unit_cols, var_name=CY.STAGE, value_name=CY.N_REACHED)
    long[CY.STAGE] = pd.Categorical(long[CY.STAGE], [s.value for s in STAGE_ORDER])
    return long.sort_values([RC.LEVEL, RC.CODE, CY.STAGE], kind="stable").reset_index(drop=True)


def _implied_steps(pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The ladder steps each patch passed through on its way to the stages it reached."""
    out = set()
    for pid, stage in pairs:
        furthest = STAGE_IMPLIES.get(stage, stage)
        if furthest in LADDER:
            out |= {(pid, step) for step in LADDER[: LADDER.index(furthest) + 1]}
        else:
            out.add((pid, LADDER[0]))
    return out


DEMOLITION_METHODS = (RectMethod.DEMOLISHED_RESTORED.value, RectMethod.COMBINED.value)
"""Rectification methods that give the land back (the land value counts their area)."""

LADDER = (
    EnforcementStage.NOTIFIED.value,
    EnforcementStage.CASE_FILED.value,
    EnforcementStage.PENALTY_DECIDED.value,
    EnforcementStage.COURT.value,
)
"""The steps of the funnel, in order (guidance, legal pressure, the court)."""
STAGE_IMPLIES = {
    EnforcementStage.FORCED_DEMOLISHED.value: EnforcementStage.COURT.value,
    EnforcementStage.CONFISCATED.value: EnforcementStage.PENALTY_DECIDED.value,
}
"""Outcome -> the furthest step it cannot be reached without."""


# --------------------------------------------------------------------------- cycle figures
def cycle_figures(
    patches: pd.DataFrame,
    dates: pd.DataFrame,
    units: Units,
    *,
    land_price_per_mu: float | None,
) -> pd.DataFrame:
    """Per unit (district, townships): illegal patches, self / forced demolitions and the
    share demolished voluntarily, median and 90th-percentile days from detection to
    rectified, area rectified (亩), the part of it demolished and restored (method
    ``demolished_restored`` or ``combined``; legalized and confiscated land stays built on)
    and, with a land price, the land value recovered: the demolished area × the price."""
    illegal = _illegal(patches).copy()
    days = days_between(
        illegal[P.PATCH_ID].map(dates[PD.DETECTED_ON]),
        illegal[P.PATCH_ID].map(dates[PD.RECTIFIED_ON]),
    )
    # a field date before the detection run (a back-filled registry) counts as 0 days
    illegal["_days"] = days.clip(lower=0).where(illegal[P.REMAINING_M2] == 0)

    def figures(g: pd.DataFrame) -> dict:
        n_self = int((g[P.DEMOLISHED_BY] == DemolishedBy.SELF).sum())
        n_forced = int((g[P.DEMOLISHED_BY] == DemolishedBy.FORCED).sum())
        done_m2 = g[P.AREA_M2] - g[P.REMAINING_M2].fillna(g[P.AREA_M2])
        rect_mu = float(done_m2.sum() / MU_M2)
        demolished_mu = float(done_m2[g[P.RECT_METHOD].isin(DEMOLITION_METHODS)].sum() / MU_M2)
        d = g["_days"].dropna()
        return {
            CY.N_ILLEGAL: len(g),
            CY.N_SELF: n_self,
            CY.N_FORCED: n_forced,
            CY.SELF_SHARE: n_self / (n_self + n_forced) if n_self + n_forced else np.nan,
            CY.DAYS_MEDIAN: float(d.median()) if len(d) else np.nan,
            CY.DAYS_P90: float(d.quantile(0.9)) if len(d) else np.nan,
            CY.RECTIFIED_MU: rect_mu,
            CY.DEMOLISHED_MU: demolished_mu,
            CY.LAND_VALUE: demolished_mu * land_price_per_mu
            if land_price_per_mu is not None
            else np.nan,
        }

    return per_unit(units, illegal, (Level.DISTRICT, Level.TOWNSHIP), figures)


# --------------------------------------------------------------------------- burn-up
def burnup(
    records: pd.DataFrame,
    patches: pd.DataFrame,
    units: Units,
    days: pd.DatetimeIndex | list[dt.date],
) -> pd.DataFrame:
    """The rectification rate by area of the district and each township on each day of
    ``days``, replayed from the dated records
    (:func:`pipeline.registry.ledger.rectification_records`): ``date``, ``level``, ``code``,
    ``rect_rate_area`` (NaN while a unit has no illegal patch)."""
    area = patches.set_index(P.PATCH_ID)[P.AREA_M2]
    town = units.key(patches, Level.TOWNSHIP).set_axis(patches[P.PATCH_ID])
    rec = records[records[P.PATCH_ID].isin(area.index)]
    rows = []
    for day in pd.to_datetime(pd.Index(days)).date:
        last = rec[rec[DATE] <= day].groupby(P.PATCH_ID).last()
        last = last[last[P.VERDICT] == Verdict.ILLEGAL]
        a = area.reindex(last.index)
        done = a - last[P.REMAINING_M2].fillna(a).clip(upper=a)
        keys = {Level.DISTRICT: pd.Series(units.district[0], index=last.index),
                Level.TOWNSHIP: town.reindex(last.index)}  # fmt: skip
        for level, key in keys.items():
            num, den = done.groupby(key).sum(), a.groupby(key).sum()
            for unit in units.frame(level, tuple(den.index))[RC.CODE]:
                d = den.get(unit, 0.0)
                rows.append({CY.DATE: day, RC.LEVEL: level, RC.CODE: unit,
                             CY.RECT_RATE: num.get(unit, 0.0) / d if d else np.nan})  # fmt: skip
    return pd.DataFrame(rows, columns=[CY.DATE, RC.LEVEL, RC.CODE, CY.RECT_RATE])


def burnup_days(
    start: dt.date, end: dt.date, max_points: int = 200, keep: tuple[dt.date, ...] = ()
) -> list[dt.date]:
    """Days from ``start`` to ``end`` (both included), thinned to at most ``max_points``
    evenly spaced days; the last one and the days of ``keep`` inside the range are always
    there."""
    n = (end - start).days + 1
    if n <= 0:
        return [start]
    step = max(1, -(-n // max_points))
    days = {start + dt.timedelta(d) for d in range(0, n, step)} | {end}
    return sorted(days | {d for d in keep if start <= d <= end})


def on_track(
    burn: pd.DataFrame,
    first_verdict: pd.Series,
    units: Units,
    *,
    deadline: dt.date,
    target: float,
    as_of: dt.date,
) -> pd.DataFrame:
    """Per unit (district, townships): the rate on ``as_of``, the planned rate (the straight
    line from 0 on the unit's first illegal verdict to ``target`` on ``deadline``) and
    ``on_track`` (rate >= planned; NA for a unit without illegal patches)."""
    rows = []
    now = burn[burn[CY.DATE] == max(d for d in burn[CY.DATE] if d <= as_of)] if len(burn) else burn
    rate = now.set_index([RC.LEVEL, RC.CODE])[CY.RECT_RATE] if len(now) else pd.Series()
    for level in (Level.DISTRICT, Level.TOWNSHIP):
        extra = tuple(code for lv, code in rate.index if lv == level)
        for unit in units.frame(level, extra).to_dict("records"):
            r = rate.get((level, unit[RC.CODE]), np.nan)
            start = first_verdict.get(unit[RC.CODE])
            plan = _planned(start, deadline, target, as_of)
            ok = pd.NA if np.isnan(r) or plan is None else bool(r >= plan - 1e-12)
            rows.append(unit | {CY.RECT_RATE: r, CY.PLANNED: plan, CY.ON_TRACK: ok})
    return pd.DataFrame(rows)


def first_verdicts(patches: pd.DataFrame, dates: pd.DataFrame, units: Units) -> pd.Series:
    """Unit code -> day of its first ``illegal`` verdict (district and townships)."""
    day = patches[P.PATCH_ID].map(dates[PD.ILLEGAL_ON])
    out = {}
    for level in (Level.DISTRICT, Level.TOWNSHIP):
        firsts = day.groupby(units.key(patches, level)).min()
        out.update({k: v for k, v in firsts.items() if v is not None and not pd.isna(v)})
    return pd.Series(out, dtype=object)


def _planned(start, deadline: dt.date, target: float, as_of: dt.date) -> float | None:
    if start is None or pd.isna(start):
        return None
    total = (deadline - start).days
    if total <= 0:
        return target
    return float(np.clip((as_of - start).days / total, 0.0, 1.0) * target)


# --------------------------------------------------------------------------- periods
def cases_by_period(patches: pd.DataFrame, units: Units, freq: str) -> pd.DataFrame:
    """New illegal cases and their area per ``freq`` period (``M``, ``Q`` or ``Y``) of the
    epoch, per unit (district and townships): one row per unit and period with cases.
    Epochs coarser than ``freq`` (a year label in the monthly table) are left out."""
    illegal = _illegal(patches).copy()
    illegal["_period"] = illegal[P.FIRST_SEEN].map(lambda e: epoch_in(e, freq))
    illegal = illegal[illegal["_period"].notna()]
    rows = []
    for level in (Level.DISTRICT, Level.TOWNSHIP):
        key = units.key(illegal, level)
        names = units.frame(level).set_index(RC.CODE)[RC.NAME]
        grouped = illegal.groupby([key.rename("_unit"), "_period"])[P.AREA_M2]
        for (unit, period), areas in grouped:
            rows.append({RC.LEVEL: level, RC.CODE: unit, RC.NAME: names.get(unit, unit),
                         CY.PERIOD: period, CY.N_NEW: len(areas),
                         CY.NEW_MU: float(areas.sum() / MU_M2)})  # fmt: skip
    cols = [RC.LEVEL, RC.CODE, RC.NAME, CY.PERIOD, CY.N_NEW, CY.NEW_MU]
    return pd.DataFrame(rows, columns=cols).sort_values([RC.LEVEL, RC.CODE, CY.PERIOD])


def no_case_since(patches: pd.DataFrame, units: Units) -> pd.DataFrame:
    """Per unit (all levels): the month (or quarter / year, as fine as the labels allow) of
    its last new illegal case, and "no new case since" the period after it — only when the
    registry holds a later epoch (imagery that could have shown one); else None."""
    illegal = _illegal(patches)
    observed = [p for p in map(_finest, patches[P.LAST_SEEN]) if p is not None]
    newest = max((p.end_time for p in observed), default=None)

    def last(g: pd.DataFrame) -> dict:
        periods = [_finest(e) for e in g[P.FIRST_SEEN]]
        periods = [p for p in periods if p is not None]
        if not periods:
            return {CY.LAST_CASE: None, CY.NO_CASE_SINCE: None}
        latest = max(periods, key=lambda p: (p.end_time, p.start_time))
        after = latest + 1
        seen = newest is not None and after.start_time <= newest
        return {CY.LAST_CASE: str(latest), CY.NO_CASE_SINCE: str(after) if seen else None}

    return per_unit(units, illegal, (Level.DISTRICT, Level.TOWNSHIP, Level.VILLAGE), last)


def _finest(label) -> pd.Period | None:
    for freq in ("M", "Q", "Y"):
        text = epoch_in(label, freq)
        if text is not None:
            return pd.Period(text, freq=freq)
    return None


# --------------------------------------------------------------------------- stock and new
def report_year(patches: pd.DataFrame, year: int | None) -> int | None:
    """The configured year, else the year of the latest epoch in the registry."""
    if year is not None:
        return year
    years = [y for y in map(epoch_year, patches[P.EPOCH_TO]) if y is not None]
    return max(years) if years else None


def stock_and_new(
    patches: pd.DataFrame, units: Units, *, year: int, base_year: int | None
) -> pd.DataFrame:
    """Per unit (district, townships) and part (``stock``, ``new``): illegal patches, those
    rectified, the remaining area (亩) and both rectification rates."""
    illegal = _illegal(patches)
    y = illegal[P.FIRST_SEEN].map(epoch_year)
    parts = {NEW: illegal[y == year],
             STOCK: illegal[(y < year) & (y >= (base_year if base_year else -1))]}  # fmt: skip
    frames = []
    for part, rows in parts.items():
        table = per_unit(units, rows, (Level.DISTRICT, Level.TOWNSHIP), _rect_figures)
        frames.append(table.assign(**{CY.PART: part}))
    return pd.concat(frames, ignore_index=True)


def _rect_figures(g: pd.DataFrame) -> dict:
    area = g[P.AREA_M2].sum()
    remaining = g[P.REMAINING_M2].fillna(g[P.AREA_M2]).sum()
    n_done = int((g[P.REMAINING_M2] == 0).sum())
    return {
        CY.N_ILLEGAL: len(g),
        CY.N_RECTIFIED: n_done,
        CY.REMAINING_MU: float(remaining / MU_M2),
        CY.RECT_RATE: (area - remaining) / area if area else np.nan,
        CY.RECT_RATE_COUNT: n_done / len(g) if len(g) else np.nan,
    }


# --------------------------------------------------------------------------- assessment
def assessment(
    patches: pd.DataFrame,
    units: Units,
    *,
    year: int,
    reward: dict[str, float | None],
    penalty_per_case: float | None,
) -> pd.DataFrame:
    """The assessment sheet (考核) of ``year`` per township and village: new illegal cases
    and area, rectified and remaining, pending patches of the year, ``zero_case``, the
    reward of a zero-case unit (``reward[level]``) and the allowance deduction of a village
    with cases (``penalty_per_case`` × cases); amounts NaN when not configured."""
    of_year = patches[patches[P.FIRST_SEEN].map(epoch_year) == year]

    def sheet(g: pd.DataFrame) -> dict:
        bad = g[g[P.VERDICT] == Verdict.ILLEGAL]
        n_pending = int((g[P.VERDICT] == Verdict.PENDING).sum())
        figures = _rect_figures(bad)
        zero = len(bad) == 0 and n_pending == 0
        return {
            CY.N_NEW: len(bad),
            CY.NEW_MU: float(bad[P.AREA_M2].sum() / MU_M2),
            CY.N_RECTIFIED: figures[CY.N_RECTIFIED],
            CY.REMAINING_MU: figures[CY.REMAINING_MU],
            CY.N_PENDING: n_pending,
            CY.ZERO_CASE: zero,
        }

    out = per_unit(units, of_year, (Level.TOWNSHIP, Level.VILLAGE), sheet)
    amount = out[RC.LEVEL].map(lambda lv: reward.get(lv))
    out[CY.REWARD] = np.where(out[CY.ZERO_CASE] & amount.notna(), amount, np.nan)
    out.loc[~out[CY.ZERO_CASE] & amount.notna(), CY.REWARD] = 0.0
    is_village = out[RC.LEVEL] == Level.VILLAGE
    out[CY.DEDUCTION] = out[CY.N_NEW] * penalty_per_case if penalty_per_case is not None else np.nan
    out.loc[~is_village, CY.DEDUCTION] = np.nan
    return out


# --------------------------------------------------------------------------- helpers
def _illegal(patches: pd.DataFrame) -> pd.DataFrame:
    return patches[patches[P.VERDICT] == Verdict.ILLEGAL]


# --------------------------------------------------------------------------- all tables
@dataclasses.dataclass(frozen=True)
class CycleTables:
    """Every table of the report's enforcement-cycle sections (see the module docstring)."""

    as_of: dt.date
    year: int | None
    funnel: pd.DataFrame
    figures: pd.DataFrame
    burnup: pd.DataFrame | None
    """None without a deadline."""
    on_track: pd.DataFrame | None
    months: pd.DataFrame
    quarters: pd.DataFrame
    years: pd.DataFrame
    no_case_since: pd.DataFrame
    stock_and_new: pd.DataFrame | None
    assessment: pd.DataFrame | None
    """None when the registry has no epoch with a year."""
    urgent: pd.DataFrame | None = None
    """The urgent patches not yet judged or not yet rectified, in work order (patch columns
    plus ``urgent``, ``first_exported``, ``report_due``)."""


def cycle_tables(
    state: RegistryState,
    units: Units,
    cfg: ReportConfig,
    *,
    as_of: dt.date,
    replay: bool = False,
) -> CycleTables:
    """All cycle tables of the registry as of ``as_of`` (the report date).

    With ``replay`` the registry is first taken back to ``as_of`` (:func:`patches_as_of`):
    patches detected later are left out, verdicts, remaining areas and stages are those of
    the events dated up to that day.
    """
    book = ledger.ledger(state)
    dates = ledger.patch_dates(state, book)
    patches = state.patches
    if replay:
        book = book[book[DATE] <= as_of]
        patches = patches_as_of(patches, book, dates, as_of)
    year = report_year(patches, cfg.year)
    burn = track = None
    if cfg.deadline is not None:
        burn, track = _deadline_tables(patches, book, dates, units, cfg, as_of)
    reward = {Level.TOWNSHIP: cfg.reward.township, Level.VILLAGE: cfg.reward.village}
    flags = urgency(patches, dates[PD.FIRST_EXPORTED], cfg, today=as_of)
    pick = flags[CY.URGENT]
    return CycleTables(
        urgent=work_order(patches[pick], flags[pick]).join(flags[pick]),
        as_of=as_of,
        year=year,
        funnel=funnel(patches, ledger.stages_reached(book), units),
        figures=cycle_figures(patches, dates, units, land_price_per_mu=cfg.land_price_per_mu),
        burnup=burn,
        on_track=track,
        months=cases_by_period(patches, units, "M"),
        quarters=cases_by_period(patches, units, "Q"),
        years=cases_by_period(patches, units, "Y"),
        no_case_since=no_case_since(patches, units),
        stock_and_new=None
        if year is None
        else stock_and_new(patches, units, year=year, base_year=cfg.base_year),
        assessment=None
        if year is None
        else assessment(
            patches, units, year=year, reward=reward, penalty_per_case=cfg.penalty_per_case
        ),
    )


def _deadline_tables(patches, book, dates, units: Units, cfg: ReportConfig, as_of: dt.date):
    """The burn-up (rates after ``as_of`` left empty: not known yet) and the on-track table."""
    firsts = first_verdicts(patches, dates, units)
    start = min([d for d in firsts.to_numpy() if d is not None], default=as_of)
    days = burnup_days(min(start, as_of), max(cfg.deadline, as_of), keep=(as_of,))
    burn = burnup(ledger.rectification_records(book), patches, units, days)
    burn.loc[burn[CY.DATE] > as_of, CY.RECT_RATE] = np.nan
    track = on_track(
        burn, firsts, units, deadline=cfg.deadline, target=cfg.rect_rate_target, as_of=as_of
    )
    return burn, track


def patches_as_of(
    patches: pd.DataFrame, book: pd.DataFrame, dates: pd.DataFrame, as_of: dt.date
) -> pd.DataFrame:
    """``patches`` as they stood on ``as_of``, from the ledger ``book`` of events up to that
    day: patches detected later left out; verdict, remaining area, stage and who demolished
    replayed (a patch without any field event is pending)."""
    detected = patches[P.PATCH_ID].map(dates[PD.DETECTED_ON])
    out = patches[detected.isna() | (detected.map(lambda d: d is None or d <= as_of))].copy()
    last = ledger.rectification_records(book).groupby(P.PATCH_ID).last()
    ids = out[P.PATCH_ID]
    out[P.VERDICT] = ids.map(last[P.VERDICT]).fillna(Verdict.PENDING.value).to_numpy()
    remaining = pd.to_numeric(ids.map(last[P.REMAINING_M2]), errors="coerce")
    illegal = out[P.VERDICT] == Verdict.ILLEGAL
    out[P.REMAINING_M2] = remaining.where(illegal, np.nan).to_numpy()
    steps = book[book[E.KIND] == EventKind.ENFORCEMENT].groupby(P.PATCH_ID)[P.ENFORCEMENT_STAGE]
    stage = ids.map(steps.last()).where(illegal)
    out[P.ENFORCEMENT_STAGE] = stage.to_numpy()
    out[P.DEMOLISHED_BY] = stage.map(
        lambda s: STAGE_DEMOLISHED_BY.get(s).value if s in STAGE_DEMOLISHED_BY else None
    ).to_numpy()
    return out
