"""The report's enforcement-cycle sections: the funnel, how cases end, the burn-up towards the
deadline, new cases per period, stock against new and the assessment sheet (考核).

Pure: :class:`~pipeline.registry.cycle.CycleTables` in; PNG bytes, an openpyxl workbook and
plain template values out. :func:`pipeline.outputs.report.write_report` writes them.
Amounts (land value, rewards, deductions) appear only when the configuration sets them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from pipeline.config import ReportConfig
from pipeline.outputs import charts
from pipeline.outputs.formatting import UNDEFINED, isna
from pipeline.registry.cycle import CycleTables
from pipeline.schema import (
    CHINESE_LABELS,
    CY,
    CYCLE_LABELS,
    NEW,
    RATES_LABELS,
    RC,
    STAGE_ORDER,
    STOCK,
    Level,
    P,
)

HEADER_FILL = PatternFill(fill_type="solid", start_color="FFDDEBF7", end_color="FFDDEBF7")
ZERO_FILL = PatternFill(fill_type="solid", start_color="FFC6EFCE", end_color="FFC6EFCE")

ASSESSMENT_COLUMNS = (
    RC.CODE,
    RC.NAME,
    RC.PARENT_CODE,
    CY.N_NEW,
    CY.NEW_MU,
    CY.N_RECTIFIED,
    CY.REMAINING_MU,
    CY.N_PENDING,
    CY.ZERO_CASE,
    CY.REWARD,
    CY.DEDUCTION,
)
"""Columns of the assessment sheet, in order (amount columns only when configured)."""


def cycle_charts(tables: CycleTables, cfg: ReportConfig, *, zh: bool) -> dict[str, bytes]:
    """PNG bytes: ``funnel``, ``months`` (or the finest period with cases) and, with a
    deadline, ``burnup``. Call inside :func:`pipeline.outputs.charts.font_context`."""

    def title(chinese: str, english: str) -> str:
        return f"{chinese}  {english}" if zh else english

    out: dict[str, bytes] = {}
    district = tables.funnel[tables.funnel[RC.LEVEL] == Level.DISTRICT]
    fig = charts.funnel(
        [_stage_label(s, zh) for s in district[CY.STAGE]],
        list(district[CY.N_REACHED]),
        total=int(district[CY.N_ILLEGAL].iloc[0]) if len(district) else 0,
        title=title("查处阶段漏斗（全区违法图斑）", "Enforcement funnel (illegal patches)"),
    )
    out["funnel"] = charts.figure_png(fig)
    periods = _district_periods(tables)
    if len(periods):
        fig = charts.cases_per_period(
            list(periods[CY.PERIOD]),
            list(periods[CY.N_NEW]),
            title=title("新增违法图斑（按时相期）", "New illegal cases per period of the epoch"),
        )
        out["months"] = charts.figure_png(fig)
    if tables.burnup is not None and cfg.deadline is not None:
        out["burnup"] = charts.figure_png(_burnup_figure(tables, cfg, title))
    return out


def _burnup_figure(tables: CycleTables, cfg: ReportConfig, title):
    burn = tables.burnup
    lines = {}
    for (level, code), rows in burn.groupby([RC.LEVEL, RC.CODE], sort=True):
        if rows[CY.RECT_RATE].notna().any():
            lines[_unit_name(tables, level, code)] = list(rows[CY.RECT_RATE])
    days = sorted(set(burn[CY.DATE]))
    start = days[0]
    track = tables.on_track
    first = track[track[RC.LEVEL] == Level.DISTRICT]
    return charts.burnup(
        days,
        lines,
        start=start if first.empty else _plan_start(tables, start),
        deadline=cfg.deadline,
        target=cfg.rect_rate_target,
        today=tables.as_of,
        title=title("整改率进度（截止日期）", f"Rectification rate towards {cfg.deadline}"),
        plan_label=f"plan → {cfg.rect_rate_target:.0%} on {cfg.deadline}",
        emphasis=_unit_name(tables, Level.DISTRICT, tables.figures[RC.CODE].iloc[0]),
    )


def _plan_start(tables: CycleTables, default):
    """The district's first illegal verdict: where the plan line starts."""
    burn = tables.burnup
    district = burn[(burn[RC.LEVEL] == Level.DISTRICT) & burn[CY.RECT_RATE].notna()]
    return district[CY.DATE].min() if len(district) else default


def _district_periods(tables: CycleTables) -> pd.DataFrame:
    """The district's new cases per month; per quarter or year when no label has a month."""
    for frame in (tables.months, tables.quarters, tables.years):
        rows = frame[frame[RC.LEVEL] == Level.DISTRICT]
        if len(rows):
            return rows.sort_values(CY.PERIOD)
    return tables.months.iloc[0:0]


def _listed_units(frame: pd.DataFrame) -> pd.DataFrame:
    """The district, the townships and the villages with a case (the others are counted)."""
    return frame[(frame[RC.LEVEL] != Level.VILLAGE) | frame[CY.LAST_CASE].notna()]


def _n_coarse(tables: CycleTables) -> int:
    """Illegal cases of the years table that the table shown per period leaves out (their
    label is coarser than its period)."""
    shown = _district_periods(tables)[CY.N_NEW].sum()
    years = tables.years[tables.years[RC.LEVEL] == Level.DISTRICT][CY.N_NEW].sum()
    return int(years - shown)


def _unit_name(tables: CycleTables, level: str, code: str) -> str:
    names = tables.figures.set_index([RC.LEVEL, RC.CODE])[RC.NAME]
    return str(names.get((level, code), code))


def _stage_label(stage: str, zh: bool) -> str:
    return f"{CHINESE_LABELS.get(stage, stage)} {stage}" if zh else stage


# --------------------------------------------------------------------------- page values
def cycle_context(tables: CycleTables, cfg: ReportConfig) -> dict[str, Any]:
    """Plain values for the cycle sections of ``report.html.j2``."""
    funnel = tables.funnel[tables.funnel[RC.LEVEL] == Level.DISTRICT]
    return {
        "as_of": tables.as_of.isoformat(),
        "year": tables.year,
        "funnel": _funnel_rows(funnel),
        "figures": _records(tables.figures),
        "funnel_units": _funnel_units(tables.funnel),
        "stage_labels": [CHINESE_LABELS.get(s.value, s.value) for s in STAGE_ORDER],
        "show_value": cfg.land_price_per_mu is not None,
        "land_price": cfg.land_price_per_mu,
        "deadline": cfg.deadline.isoformat() if cfg.deadline else None,
        "on_track": None if tables.on_track is None else _records(tables.on_track),
        "periods": _records(_district_periods(tables)),
        "n_coarse": _n_coarse(tables),
        "quarters": _records(tables.quarters[tables.quarters[RC.LEVEL] == Level.DISTRICT]),
        "years": _records(tables.years[tables.years[RC.LEVEL] == Level.DISTRICT]),
        "no_case_since": _records(_listed_units(tables.no_case_since)),
        "n_villages_without_case": int(
            len(tables.no_case_since) - len(_listed_units(tables.no_case_since))
        ),
        "township_names": dict(zip(tables.figures[RC.CODE], tables.figures[RC.NAME], strict=True)),
        "stock_new": None if tables.stock_and_new is None else _stock_rows(tables.stock_and_new),
        "base_year": cfg.base_year,
        "assessment": None if tables.assessment is None else _records(tables.assessment),
        "show_reward": cfg.reward.township is not None or cfg.reward.village is not None,
        "show_deduction": cfg.penalty_per_case is not None,
        "part_labels": {STOCK: "存量 stock", NEW: "增量 new"},
        "urgent": [] if tables.urgent is None else _urgent_rows(tables.urgent),
        "urgent_rule": (
            f"基本农田 ≥ {cfg.urgent_basic_farmland_mu:g} 亩 或 耕地 ≥ {cfg.urgent_farmland_mu:g} 亩；"
            f"首次下发后 {cfg.report_working_days} 个工作日内报告。 Basic farmland ≥ "
            f"{cfg.urgent_basic_farmland_mu:g} mu or farmland ≥ {cfg.urgent_farmland_mu:g} mu; "
            f"due {cfg.report_working_days} working days after the first export."
        ),
    }


def _urgent_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            "patch_id": r[P.PATCH_ID],
            "township": r[P.TOWNSHIP_NAME],
            "village": r[P.VILLAGE_NAME],
            "farmland_m2": r[P.FARMLAND_M2],
            "basic_farmland_m2": r[P.BASIC_FARMLAND_M2],
            "verdict": CHINESE_LABELS.get(r[P.VERDICT], r[P.VERDICT]),
            "first_exported": str(r[CY.FIRST_EXPORTED]),
            "report_due": str(r[CY.REPORT_DUE]),
        }
        for r in frame.to_dict("records")
    ]


def _funnel_rows(funnel: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for stage, n, total in zip(
        STAGE_ORDER, funnel[CY.N_REACHED], funnel[CY.N_ILLEGAL], strict=True
    ):
        label = CHINESE_LABELS.get(stage.value, stage.value)
        rows.append({"stage": stage.value, "label": label, "n": int(n),
                     "share": n / total if total else np.nan})  # fmt: skip
    return rows


def _funnel_units(funnel: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per unit (district first, then townships): name, illegal patches and the
    count that reached each stage, in :data:`~pipeline.schema.STAGE_ORDER`."""
    rows = []
    for (level, _code), part in funnel.groupby([RC.LEVEL, RC.CODE], sort=False):
        counts = part.set_index(CY.STAGE)[CY.N_REACHED]
        rows.append({
            "level": level,
            "name": part[RC.NAME].iloc[0],
            "n_illegal": int(part[CY.N_ILLEGAL].iloc[0]),
            "counts": [int(counts.get(s.value, 0)) for s in STAGE_ORDER],
        })  # fmt: skip
    return sorted(rows, key=lambda r: r["level"] != Level.DISTRICT)


def _stock_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    order = {STOCK: 0, NEW: 1}
    frame = frame.assign(_o=frame[CY.PART].map(order)).sort_values(
        [RC.LEVEL, RC.CODE, "_o"], kind="stable"
    )
    return _records(frame.drop(columns="_o"))


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if isna(v) else v) for k, v in r.items()} for r in frame.to_dict("records")]


# --------------------------------------------------------------------------- workbook
def assessment_workbook(tables: CycleTables, cfg: ReportConfig) -> Workbook | None:
    """The assessment sheet (考核) of the year: one sheet per level (township, village),
    Chinese and English headers, areas in 亩, amounts in 元 only when configured, zero-case
    units filled green; None when the registry has no year."""
    if tables.assessment is None:
        return None
    wb = Workbook()
    wb.remove(wb.active)
    for level in (Level.TOWNSHIP, Level.VILLAGE):
        columns = [c for c in ASSESSMENT_COLUMNS if _shown(c, cfg, level)]
        ws = wb.create_sheet(f"{level} {tables.year}")
        for j, col in enumerate(columns, start=1):
            en, zh = CYCLE_LABELS.get(col) or RATES_LABELS[col]
            for row, header in ((1, zh), (2, en)):
                cell = ws.cell(row=row, column=j, value=header)
                cell.font, cell.fill = Font(bold=True), HEADER_FILL
                cell.alignment = Alignment(wrap_text=True, vertical="center")
            ws.column_dimensions[get_column_letter(j)].width = 16
        rows = tables.assessment[tables.assessment[RC.LEVEL] == level]
        for i, rec in enumerate(rows.to_dict("records"), start=3):
            for j, col in enumerate(columns, start=1):
                _assessment_cell(ws.cell(row=i, column=j), col, rec)
        ws.freeze_panes = "C3"
    return wb


def _shown(col: str, cfg: ReportConfig, level: str) -> bool:
    if col == CY.REWARD:
        return cfg.reward.township is not None or cfg.reward.village is not None
    if col == CY.DEDUCTION:
        return cfg.penalty_per_case is not None
    return col != RC.PARENT_CODE or level == Level.VILLAGE


def _assessment_cell(cell, col: str, rec: dict[str, Any]) -> None:
    value = rec[col]
    if col == RC.PARENT_CODE:
        cell.value, cell.number_format = ("" if isna(value) else str(value)), "@"
    elif col in (RC.CODE, RC.NAME):
        cell.value, cell.number_format = str(value), "@"
    elif col == CY.ZERO_CASE:
        cell.value = "是 yes" if value else "否 no"
        if value:
            cell.fill = ZERO_FILL
    elif isna(value):
        cell.value = UNDEFINED
    elif col in (CY.NEW_MU, CY.REMAINING_MU):
        cell.value, cell.number_format = round(float(value), 2), "0.00"
    elif col in (CY.REWARD, CY.DEDUCTION):
        cell.value, cell.number_format = float(value), "#,##0"
    else:
        cell.value, cell.number_format = int(value), "0"
