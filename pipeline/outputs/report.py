"""The rectification-rate report: ``rates.csv``, ``rates.xlsx``, ``report.html`` and PNG charts.

:func:`write_report` is the only function here that touches files. The tables and numbers
it shows are built by pure functions (:func:`rates_csv_text`, :func:`rates_workbook`,
:func:`headline`, :func:`unrectified_patches`, ...), the figures by :mod:`pipeline.outputs.charts`
and the page by the jinja2 template ``templates/report.html.j2``.

The report reads the rates exactly as :mod:`pipeline.registry.rates` computed them (columns
:data:`pipeline.schema.RATES_COLUMNS`); it does not recompute any rate.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from pipeline import __version__
from pipeline.atomic import atomic_write_bytes
from pipeline.config import ReportConfig
from pipeline.errors import InputDataError
from pipeline.outputs.cycle_report import assessment_workbook, cycle_charts, cycle_context
from pipeline.outputs.formatting import (
    UNDEFINED,
    check_columns,
    floats,
    fmt_float,
    isna,
    label,
    output_date,
    render_page,
    text,
    workbook_bytes,
)
from pipeline.outputs.web_map import map_html
from pipeline.registry.cycle import CycleTables
from pipeline.registry.urgency import in_work_order
from pipeline.schema import (
    HISTORY_DATE,
    LEGAL_HINT_LABELS,
    LEVEL_LABELS,
    LEVELS,
    LOW_CONFIDENCE,
    P_REAL_CHANGE,
    PATCH_COLUMNS,
    RATES_COLUMNS,
    RATES_LABELS,
    RC,
    UNASSIGNED,
    G,
    Level,
    P,
    Verdict,
)
from pipeline.units import MU_M2

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- local constants
RATE_COLUMNS = (RC.ILLEGAL_RATIO, RC.ILLEGAL_RATIO_UPPER, RC.RECT_RATE_AREA, RC.RECT_RATE_COUNT)
MET_COLUMNS = (RC.ILLEGAL_RATIO_MET, RC.RECT_RATE_MET)
AREA_M2_COLUMNS = (
    RC.PATCHES_M2,
    RC.ILLEGAL_M2,
    RC.ILLEGAL_FARMLAND_M2,
    RC.PENDING_FARMLAND_M2,
    RC.CONSTRUCTION_FARMLAND_M2,
    RC.RECTIFIED_M2,
)
COUNT_COLUMNS = (
    RC.N_PATCHES,
    RC.N_PENDING,
    RC.N_LEGAL,
    RC.N_ILLEGAL,
    RC.N_FALSE_CHANGE,
    RC.N_OTHER,
    RC.N_RECTIFIED,
)
TEXT_COLUMNS = (RC.LEVEL, RC.CODE, RC.NAME, RC.PARENT_CODE)

MISS_FILL = PatternFill(fill_type="solid", start_color="FFFFC7CE", end_color="FFFFC7CE")
MISS_FONT = Font(color="FF9C0006")
HEADER_FILL = PatternFill(fill_type="solid", start_color="FFDDEBF7", end_color="FFDDEBF7")


@dataclass(frozen=True)
class ReportPaths:
    """Files written by :func:`write_report`."""

    rates_csv: Path
    rates_xlsx: Path
    html: Path
    map_png: Path
    ranking_png: Path
    trend_png: Path | None
    """None when there were fewer than two report dates to draw a trend from."""
    assessment_xlsx: Path | None = None
    """The assessment sheet (考核); None without cycle tables or without a year."""
    map_html: Path | None = None
    """The interactive map (``map.html``)."""


# --------------------------------------------------------------------------- entry point
def write_report(
    rates: pd.DataFrame,
    patches: gpd.GeoDataFrame,
    townships: gpd.GeoDataFrame,
    villages: gpd.GeoDataFrame,
    out_dir: Path,
    *,
    cfg: ReportConfig,
    area_name: str,
    date: str,
    history: pd.DataFrame | None = None,
    relapsed_ids: Iterable[str] | None = None,
    cycle: CycleTables | None = None,
    chip_dir: Path | None = None,
    dossier_dir: Path | None = None,
    learning: Mapping[str, Any] | None = None,
) -> ReportPaths:
    """Write ``rates.csv``, ``rates.xlsx``, ``report.html`` and the chart PNGs to ``out_dir``.

    Parameters
    ----------
    rates : DataFrame
        Exactly :data:`~pipeline.schema.RATES_COLUMNS`, rows of levels district / township /
        village; NaN for undefined rates; ``*_met`` True / False / NaN.
    patches : GeoDataFrame
        The registry's patches (:data:`~pipeline.schema.PATCH_COLUMNS` + geometry).
    townships, villages : GeoDataFrame
        Grid polygons with :attr:`G.CODE` and :attr:`G.NAME`, in the patches' CRS.
    out_dir : Path
        Created if missing. Existing files of the same names are replaced atomically.
    cfg : ReportConfig
        Targets: ``rect_rate_target`` (met when rate >= target) and
        ``illegal_ratio_target`` (met when ratio < target).
    area_name, date : str
        Shown in titles; ``date`` is ISO (``YYYY-MM-DD``).
    history : DataFrame, optional
        Earlier district figures, one row per report: :data:`HISTORY_DATE` plus any of
        ``rect_rate_area``, ``rect_rate_count``, ``illegal_ratio``. The current district
        row is appended (unless its date is already there); with two or more dates a trend
        chart is drawn, otherwise the report says why there is none.
    relapsed_ids : iterable of str, optional
        Patch ids with a ``relapse`` event; None means "not known" (the table says so).
    cycle : CycleTables, optional
        The enforcement-cycle tables (:func:`pipeline.registry.cycle.cycle_tables`): the
        report then shows the funnel, how cases end, the burn-up, cases per period, stock
        and new and the assessment, and writes ``assessment.xlsx``.
    chip_dir : Path, optional
        Folder of before/after chips (``{patch_id}.png``) the interactive map links to, by
        a path relative to ``out_dir``.
    dossier_dir : Path, optional
        Folder of patch dossiers (``{patch_id}.html`` / ``.pdf``) the map's popup links to.
    learning : mapping, optional
        What the model learned from the field verdicts said (``model.json``: ``used``,
        ``reason``); the report then lists the pending patches in their learned order with
        ``p_real_change`` (a column of ``patches`` when a model is used).

    Returns
    -------
    ReportPaths

    Notes
    -----
    Charts need a CJK font for Chinese names; without one they label units by code and
    a warning is logged (the HTML tables always show the Chinese names). The HTML file is
    self-contained: CSS inline, charts as base64 PNG, the CJK font subset for its text as a
    base64 ``@font-face`` (:mod:`pipeline.outputs.webfont`), no external URL.
    """
    _check_rates(rates)
    check_columns(patches, PATCH_COLUMNS, "patches")
    check_columns(townships, (G.CODE, G.NAME), "townships")
    check_columns(villages, (G.CODE, G.NAME), "villages")
    output_date(date)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(
        rates_csv=out_dir / "rates.csv",
        rates_xlsx=out_dir / "rates.xlsx",
        html=out_dir / "report.html",
        map_png=out_dir / "map_rect_rate.png",
        ranking_png=out_dir / "township_ranking.png",
        trend_png=None,
    )
    atomic_write_bytes(paths.rates_csv, rates_csv_text(rates).encode("utf-8-sig"))
    atomic_write_bytes(paths.rates_xlsx, workbook_bytes(rates_workbook(rates, cfg=cfg), date=date))

    series = trend_series(rates, history, date=date)
    charts = render_charts(rates, townships, villages, cfg=cfg, series=series, cycle=cycle)
    atomic_write_bytes(paths.map_png, charts["map"])
    atomic_write_bytes(paths.ranking_png, charts["ranking"])
    trend_path = out_dir / "trend.png"
    if "trend" in charts:
        atomic_write_bytes(trend_path, charts["trend"])
        paths = dataclasses.replace(paths, trend_png=trend_path)
    else:
        trend_path.unlink(missing_ok=True)  # a stale chart from an earlier run would mislead

    context = report_context(
        rates, patches, cfg=cfg, area_name=area_name, date=date, relapsed_ids=relapsed_ids
    )
    context["images"] = {k: base64.b64encode(v).decode("ascii") for k, v in charts.items()}
    context["trend_note"] = (
        None
        if "trend" in charts
        else f"趋势图需要至少两期报告（当前 {len(series)} 期）。"
        f" A trend needs at least two report dates (found {len(series)})."
    )
    context["cycle"] = None if cycle is None else cycle_context(cycle, cfg)
    context["learning"] = None if learning is None else _learning_context(patches, learning)
    workbook = None if cycle is None else assessment_workbook(cycle, cfg)
    if workbook is not None:
        paths = dataclasses.replace(paths, assessment_xlsx=out_dir / "assessment.xlsx")
        atomic_write_bytes(paths.assessment_xlsx, workbook_bytes(workbook, date=date))
    page = _map_page(out_dir, patches, townships, villages, f"{area_name} 图斑地图 patch map {date}",
                     chip_dir=chip_dir, dossier_dir=dossier_dir)  # fmt: skip
    atomic_write_bytes(out_dir / "map.html", page.encode("utf-8"))
    paths = dataclasses.replace(paths, map_html=out_dir / "map.html")
    html = render_page("report.html.j2", **context)
    atomic_write_bytes(paths.html, html.encode("utf-8"))
    log.info("report for %s (%s) written to %s", area_name, date, out_dir)
    return paths


def _map_page(out_dir: Path, patches, townships, villages, title: str, *, chip_dir, dossier_dir):
    """``map.html``'s text, linking the chips and dossiers that exist by relative paths."""
    chips, chip_href = _linked(out_dir, chip_dir, "*.png")
    dossiers, dossier_href = _linked(out_dir, dossier_dir, "*.html")
    return map_html(patches, townships, villages, title=title, chips=chips, chip_href=chip_href,
                    dossiers=dossiers, dossier_href=dossier_href)  # fmt: skip


def _linked(out_dir: Path, folder: Path | None, pattern: str) -> tuple[set[str], str]:
    """The stems of the files of ``folder`` matching ``pattern``, and the folder relative to
    ``out_dir`` (empty without a folder)."""
    if folder is None or not Path(folder).is_dir():
        return set(), ""
    stems = {p.stem for p in Path(folder).glob(pattern)}
    return stems, Path(os.path.relpath(folder, out_dir)).as_posix()


# --------------------------------------------------------------------------- rates.csv
def rates_csv_text(rates: pd.DataFrame) -> str:
    """``rates`` as CSV text: exactly RATES_COLUMNS, rates with 4 decimals, areas with 2.

    Notes
    -----
    Undefined values (NaN) are empty cells; codes are written as given (text, leading zeros
    kept); ``*_met`` and ``zero_case`` are ``True`` / ``False`` / empty. Encode the text as
    ``utf-8-sig`` (with BOM) so Excel shows the Chinese names.
    """
    _check_rates(rates)
    out = pd.DataFrame(index=rates.index)
    for col in RATES_COLUMNS:
        values = rates[col]
        if col in RATE_COLUMNS:
            out[col] = [fmt_float(v, 4) for v in values]
        elif col in (*AREA_M2_COLUMNS, RC.ILLEGAL_MU):
            out[col] = [fmt_float(v, 2) for v in values]
        elif col in COUNT_COLUMNS:
            out[col] = ["" if isna(v) else str(int(v)) for v in values]
        elif col in (*MET_COLUMNS, RC.ZERO_CASE):
            out[col] = ["" if isna(v) else str(bool(v)) for v in values]
        else:
            out[col] = ["" if isna(v) else str(v) for v in values]
    return out.to_csv(index=False, lineterminator="\n")


# --------------------------------------------------------------------------- rates.xlsx
def rates_workbook(rates: pd.DataFrame, *, cfg: ReportConfig) -> Workbook:
    """One sheet per level with Chinese and English headers, areas in 亩, rates in percent.

    Notes
    -----
    Row 1 holds the Chinese headers, row 2 the English ones; data start in row 3. Area
    columns (m² in ``rates``) are converted to 亩 (number format ``0.00``); ``illegal_mu``
    is left out as it repeats ``illegal_m2``. A rate cell that misses its target is filled
    red: rectification rates below ``cfg.rect_rate_target``, illegal ratios at or above
    ``cfg.illegal_ratio_target``; a ``*_met`` cell saying 未达标 is filled too. Undefined
    values show "—". Codes are text cells.
    """
    _check_rates(rates)
    columns = [c for c in RATES_COLUMNS if c not in (RC.LEVEL, RC.ILLEGAL_MU)]
    wb = Workbook()
    wb.remove(wb.active)
    for level in LEVELS:
        ws = wb.create_sheet(level)
        rows = rates[rates[RC.LEVEL] == level]
        for j, col in enumerate(columns, start=1):
            en, zh = RATES_LABELS[col]
            if col in AREA_M2_COLUMNS:
                en, zh = en.replace("(m²)", "(mu)"), zh.replace("(平方米)", "(亩)")
            for row, header in ((1, zh), (2, en)):
                cell = ws.cell(row=row, column=j, value=header)
                cell.font = Font(bold=True)
                cell.fill = HEADER_FILL
                cell.alignment = Alignment(wrap_text=True, vertical="center")
            ws.column_dimensions[get_column_letter(j)].width = 16 if col != RC.NAME else 20
        for i, record in enumerate(rows.to_dict("records"), start=3):
            for j, col in enumerate(columns, start=1):
                _write_rate_cell(ws.cell(row=i, column=j), col, record[col], cfg)
        ws.freeze_panes = "C3"
        ws.auto_filter.ref = f"A2:{get_column_letter(len(columns))}{max(2, len(rows) + 2)}"
    return wb


def _write_rate_cell(cell, col: str, value: Any, cfg: ReportConfig) -> None:
    if col in TEXT_COLUMNS:
        cell.value = "" if isna(value) else str(value)
        cell.number_format = "@"
        return
    if isna(value):
        cell.value = UNDEFINED
        cell.alignment = Alignment(horizontal="center")
        return
    if col in COUNT_COLUMNS:
        cell.value = int(value)
        cell.number_format = "0"
    elif col in AREA_M2_COLUMNS:
        cell.value = round(float(value) / MU_M2, 2)
        cell.number_format = "0.00"
    elif col in RATE_COLUMNS:
        cell.value = float(value)
        cell.number_format = "0.00%"
        if _misses_target(col, float(value), cfg):
            cell.fill, cell.font = MISS_FILL, MISS_FONT
    elif col in MET_COLUMNS:
        cell.value = "达标 met" if bool(value) else "未达标 missed"
        if not bool(value):
            cell.fill, cell.font = MISS_FILL, MISS_FONT
    elif col == RC.ZERO_CASE:
        cell.value = "是 yes" if bool(value) else "否 no"
    else:
        cell.value = value


def _misses_target(col: str, value: float, cfg: ReportConfig) -> bool:
    if col in (RC.RECT_RATE_AREA, RC.RECT_RATE_COUNT):
        return value < cfg.rect_rate_target
    if col == RC.ILLEGAL_RATIO:
        return value >= cfg.illegal_ratio_target
    return False  # the upper bound is context, not judged


# --------------------------------------------------------------------------- charts
def trend_series(rates: pd.DataFrame, history: pd.DataFrame | None, *, date: str) -> pd.DataFrame:
    """District figures per report date, oldest first: ``history`` plus the current row.

    Notes
    -----
    The current district row replaces a history row of the same ``date`` (a rerun on
    the same day reports the newest numbers).
    """
    district = _district_row(rates)
    current = pd.DataFrame([{HISTORY_DATE: date, **{c: district[c] for c in _TREND_COLUMNS}}])
    if history is None or history.empty:
        return current
    check_columns(history, (HISTORY_DATE,), "history")
    present = [c for c in _TREND_COLUMNS if c in history.columns]
    if not present:
        raise InputDataError(
            f"history has columns {list(history.columns)}; expected {HISTORY_DATE!r} and at "
            f"least one of {list(_TREND_COLUMNS)} (district rows of earlier rates.csv files)"
        )
    past = history.loc[:, [HISTORY_DATE, *present]].copy()
    past[HISTORY_DATE] = past[HISTORY_DATE].astype(str)
    past = pd.concat([past[past[HISTORY_DATE] != date], current], ignore_index=True)
    for col in _TREND_COLUMNS:
        past[col] = floats(past[col]) if col in past.columns else np.nan
    return past.sort_values(HISTORY_DATE, kind="stable").reset_index(drop=True)


_TREND_COLUMNS = (RC.RECT_RATE_AREA, RC.RECT_RATE_COUNT, RC.ILLEGAL_RATIO)


def render_charts(
    rates: pd.DataFrame,
    townships: gpd.GeoDataFrame,
    villages: gpd.GeoDataFrame,
    *,
    cfg: ReportConfig,
    series: pd.DataFrame,
    cycle: CycleTables | None = None,
) -> dict[str, bytes]:
    """PNG bytes of the charts: ``map``, ``ranking`` and, with >= 2 dates, ``trend``.

    Notes
    -----
    Without a CJK font the charts use codes (villages: the last 6 digits, township +
    village) and English titles, and a warning is logged.
    """
    from pipeline.outputs import charts

    font = charts.find_cjk_font()
    if font is None:
        log.warning(
            "no font with Chinese glyphs is known to matplotlib; the charts label units by "
            "code and use English titles (install e.g. fonts-noto-cjk or fonts-wqy-zenhei, "
            "then delete matplotlib's font cache, to get Chinese names)"
        )
    zh = font is not None

    def title(chinese: str, english: str) -> str:
        return f"{chinese}  {english}" if zh else english

    vill = rates[rates[RC.LEVEL] == Level.VILLAGE].set_index(RC.CODE)
    town = rates[rates[RC.LEVEL] == Level.TOWNSHIP]
    town = town.assign(_key=town[RC.RECT_RATE_AREA].fillna(-1.0)).sort_values(
        ["_key", RC.CODE], ascending=[False, True], kind="stable"
    )
    village_names = villages.set_index(G.CODE)[G.NAME]
    village_labels = (
        village_names if zh else pd.Series(villages[G.CODE].str[-6:].values, villages[G.CODE])
    )
    if townships.crs is not None and villages.crs is not None and townships.crs != villages.crs:
        townships = townships.to_crs(villages.crs)  # outlines must sit on the villages
    out: dict[str, bytes] = {}
    with charts.font_context(font):
        fig = charts.rect_rate_map(
            villages,
            townships,
            vill[RC.RECT_RATE_AREA],
            village_labels,
            target=cfg.rect_rate_target,
            title=title("各村整改率（按面积）", "Rectification rate by area per village"),
            missing_label="无违法图斑 no illegal patch" if zh else "no illegal patch",
        )
        out["map"] = charts.figure_png(fig)
        fig = charts.township_ranking(
            list(town[RC.NAME] if zh else town[RC.CODE]),
            list(town[RC.RECT_RATE_AREA]),
            target=cfg.rect_rate_target,
            title=title("乡镇整改率排名（按面积）", "Township ranking: rectification rate by area"),
            target_label=f"target {cfg.rect_rate_target:.0%}",
            missing_label="无违法 none" if zh else "no illegal patch",
        )
        out["ranking"] = charts.figure_png(fig)
        if len(series) >= 2:
            fig = charts.trend(
                list(series[HISTORY_DATE]),
                {
                    title("整改率(面积)", "rect. rate (area)"): series[RC.RECT_RATE_AREA],
                    title("整改率(宗数)", "rect. rate (count)"): series[RC.RECT_RATE_COUNT],
                    title("违法占地比例", "illegal ratio"): series[RC.ILLEGAL_RATIO],
                },
                {
                    f"target {cfg.rect_rate_target:.0%}": cfg.rect_rate_target,
                    f"limit {cfg.illegal_ratio_target:.0%}": cfg.illegal_ratio_target,
                },
                title=title("全区趋势", "District trend"),
            )
            out["trend"] = charts.figure_png(fig)
        if cycle is not None:
            out |= cycle_charts(cycle, cfg, zh=zh)
    return out


# --------------------------------------------------------------------------- page content
def headline(rates: pd.DataFrame, *, cfg: ReportConfig) -> dict[str, Any]:
    """The district's key numbers with targets and whether each target is met."""
    d = _district_row(rates)
    ratio, rect = d[RC.ILLEGAL_RATIO], d[RC.RECT_RATE_AREA]
    return {
        "n_patches": int(d[RC.N_PATCHES]),
        "patches_m2": float(d[RC.PATCHES_M2]),
        "n_pending": int(d[RC.N_PENDING]),
        "n_illegal": int(d[RC.N_ILLEGAL]),
        "illegal_m2": float(d[RC.ILLEGAL_M2]),
        "illegal_ratio": ratio,
        "illegal_ratio_upper": d[RC.ILLEGAL_RATIO_UPPER],
        "illegal_ratio_target": cfg.illegal_ratio_target,
        "illegal_ratio_ok": None if isna(ratio) else bool(ratio < cfg.illegal_ratio_target),
        "rect_rate_area": rect,
        "rect_rate_count": d[RC.RECT_RATE_COUNT],
        "rect_rate_target": cfg.rect_rate_target,
        "rect_rate_ok": None if isna(rect) else bool(rect >= cfg.rect_rate_target),
        "rectified_m2": float(d[RC.RECTIFIED_M2]),
        "n_rectified": int(d[RC.N_RECTIFIED]),
    }


def unrectified_patches(patches: pd.DataFrame) -> pd.DataFrame:
    """Illegal patches not (known to be) rectified: ``remaining_m2`` > 0 or not reported.

    In work order: urgent first by due date, then by score, ties by patch id.
    """
    illegal = patches[P.VERDICT] == Verdict.ILLEGAL
    open_ = ~(floats(patches[P.REMAINING_M2]) == 0)  # NaN = not reported = open
    return _sorted_patches(patches[illegal & open_])


def relapsed_patches(patches: pd.DataFrame, relapsed_ids: Iterable[str]) -> pd.DataFrame:
    """Patches whose id is among ``relapsed_ids`` (compared as text)."""
    ids = {str(i) for i in relapsed_ids}
    return _sorted_patches(patches[patches[P.PATCH_ID].astype(str).isin(ids)])


def unassigned_patches(patches: pd.DataFrame) -> pd.DataFrame:
    """Patches outside every grid polygon (township code :data:`UNASSIGNED`)."""
    return _sorted_patches(patches[patches[P.TOWNSHIP_CODE] == UNASSIGNED])


def zero_case_units(rates: pd.DataFrame) -> pd.DataFrame:
    """Township and village rows flagged ``zero_case`` (reward candidates), by level and code."""
    mask = rates[RC.ZERO_CASE].fillna(False).astype(bool) & rates[RC.LEVEL].isin(
        (Level.TOWNSHIP, Level.VILLAGE)
    )
    out = rates[mask].copy()
    out["_order"] = out[RC.LEVEL].map({Level.TOWNSHIP: 0, Level.VILLAGE: 1})
    return out.sort_values(["_order", RC.CODE], kind="stable").drop(columns="_order")


def villages_by_cases(rates: pd.DataFrame) -> pd.DataFrame:
    """Village rows with at least one illegal patch, most cases first (then larger area)."""
    v = rates[(rates[RC.LEVEL] == Level.VILLAGE) & (rates[RC.N_ILLEGAL].fillna(0) > 0)]
    return v.sort_values(
        [RC.N_ILLEGAL, RC.ILLEGAL_M2, RC.CODE], ascending=[False, False, True], kind="stable"
    )


def report_context(
    rates: pd.DataFrame,
    patches: gpd.GeoDataFrame,
    *,
    cfg: ReportConfig,
    area_name: str,
    date: str,
    relapsed_ids: Iterable[str] | None,
) -> dict[str, Any]:
    """Everything ``report.html.j2`` shows except the images, as plain values."""
    names = dict(zip(rates[RC.CODE], rates[RC.NAME], strict=True))
    town = rates[rates[RC.LEVEL] == Level.TOWNSHIP]
    town = town.assign(_key=town[RC.RECT_RATE_AREA].fillna(-1.0)).sort_values(
        ["_key", RC.CODE], ascending=[False, True], kind="stable"
    )
    locations = _lonlat(patches)
    return {
        "area_name": area_name,
        "date": date,
        "version": __version__,
        "headline": headline(rates, cfg=cfg),
        "townships": _unit_rows(town, names, cfg),
        "villages_ranked": _unit_rows(villages_by_cases(rates), names, cfg),
        "zero_case": _unit_rows(zero_case_units(rates), names, cfg),
        "unrectified": _patch_rows(unrectified_patches(patches), locations),
        "relapses": None
        if relapsed_ids is None
        else _patch_rows(relapsed_patches(patches, relapsed_ids), locations),
        "unassigned": _patch_rows(unassigned_patches(patches), locations),
        "rect_rate_target": cfg.rect_rate_target,
        "illegal_ratio_target": cfg.illegal_ratio_target,
        "level_labels": LEVEL_LABELS,
    }


def _unit_rows(
    frame: pd.DataFrame, names: dict[str, str], cfg: ReportConfig
) -> list[dict[str, Any]]:
    rows = []
    for rank, r in enumerate(frame.to_dict("records"), start=1):
        rows.append(
            {
                "rank": rank,
                "level": r[RC.LEVEL],
                "code": r[RC.CODE],
                "name": r[RC.NAME],
                "parent": names.get(r[RC.PARENT_CODE], "") if not isna(r[RC.PARENT_CODE]) else "",
                "n_patches": int(r[RC.N_PATCHES]),
                "n_pending": int(r[RC.N_PENDING]),
                "n_illegal": int(r[RC.N_ILLEGAL]),
                "n_open": int(r[RC.N_ILLEGAL]) - int(r[RC.N_RECTIFIED]),
                "illegal_m2": r[RC.ILLEGAL_M2],
                "illegal_ratio": r[RC.ILLEGAL_RATIO],
                "rect_rate_area": r[RC.RECT_RATE_AREA],
                "rect_rate_count": r[RC.RECT_RATE_COUNT],
                "rect_miss": not isna(r[RC.RECT_RATE_AREA])
                and _misses_target(RC.RECT_RATE_AREA, r[RC.RECT_RATE_AREA], cfg),
            }
        )
    return rows


def _patch_rows(frame: pd.DataFrame, locations: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for idx, r in zip(frame.index, frame.to_dict("records"), strict=True):
        rows.append(
            {
                "patch_id": r[P.PATCH_ID],
                "township": r[P.TOWNSHIP_NAME],
                "village": r[P.VILLAGE_NAME],
                "area_m2": r[P.AREA_M2],
                "remaining_m2": r[P.REMAINING_M2],
                "verdict": label(r[P.VERDICT]),
                "rect_method": label(r[P.RECT_METHOD]),
                "legal_hint": LEGAL_HINT_LABELS.get(r[P.LEGAL_HINT], text(r[P.LEGAL_HINT])),
                "checked_on": text(r[P.CHECKED_ON]),
                "inspector": text(r[P.INSPECTOR]),
                "lon": locations.at[idx, "lon"],
                "lat": locations.at[idx, "lat"],
            }
        )
    return rows


PENDING_SHOWN = 50
"""Pending patches listed in the report's learned-order section (the packages list all)."""


def _learning_context(patches: gpd.GeoDataFrame, learning: Mapping[str, Any]) -> dict[str, Any]:
    """The model's verdict on itself and the first pending patches in work order, with their
    learned probability (when a model is used)."""
    pending = in_work_order(patches[patches[P.VERDICT] == Verdict.PENDING.value])
    shown = pending.head(PENDING_SHOWN)
    rows = _patch_rows(shown, _lonlat(shown))
    for row, rec in zip(rows, shown.to_dict("records"), strict=True):
        row["p_real_change"] = rec.get(P_REAL_CHANGE)
        row["low_confidence"] = bool(rec.get(LOW_CONFIDENCE) is True)
    return {"used": bool(learning.get("used")), "reason": str(learning.get("reason", "")),
            "pending": rows, "n_pending": len(pending)}  # fmt: skip


def _lonlat(patches: gpd.GeoDataFrame) -> pd.DataFrame:
    """A point inside each patch, in WGS 84 degrees, for finding it in the field."""
    if patches.crs is None or len(patches) == 0:
        return pd.DataFrame({"lon": np.nan, "lat": np.nan}, index=patches.index)
    points = patches.geometry.representative_point().to_crs("EPSG:4326")
    return pd.DataFrame({"lon": points.x, "lat": points.y}, index=patches.index)


def _sorted_patches(frame: pd.DataFrame) -> pd.DataFrame:
    """Patches in work order (:func:`pipeline.registry.urgency.in_work_order`)."""
    return in_work_order(frame)


# --------------------------------------------------------------------------- helpers
def _district_row(rates: pd.DataFrame) -> pd.Series:
    district = rates[rates[RC.LEVEL] == Level.DISTRICT]
    if len(district) != 1:
        raise InputDataError(
            f"rates has {len(district)} district rows; expected exactly one (level "
            "'district'), as pipeline.registry.rates.compute_rates returns"
        )
    return district.iloc[0]


def _check_rates(rates: pd.DataFrame) -> None:
    check_columns(rates, RATES_COLUMNS, "rates")
    levels = set(rates[RC.LEVEL].dropna()) - set(LEVELS)
    if levels:
        raise InputDataError(
            f"rates has unknown levels {sorted(levels)}; expected only {list(LEVELS)}"
        )
