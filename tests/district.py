"""The fake district shared by the export and report tests.

Two townships side by side in EPSG:4548, 1 km each: 城关镇 (villages 东村 and 西村) and 河西乡
(南庄村). Five patches of 20 × 20 m with the registry's columns: two illegal in 城关镇 (one
rectified, one with 50 m² left), one pending in 东村, one legal in 南庄村, and one pending
outside every grid polygon (unassigned).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import box

from pipeline.config import ReportConfig, RewardConfig
from pipeline.outputs.report import write_report
from pipeline.registry.cycle import Units, cycle_tables
from pipeline.registry.store import empty_state, normalise_patches
from pipeline.schema import HISTORY_DATE, PATCH_COLUMNS, RATES_COLUMNS, RC, UNASSIGNED, G, P
from pipeline.units import MU_M2

CRS = "EPSG:4548"  # CGCS2000 / 3-degree Gauss-Kruger CM 117E
X0, Y0 = 500_000.0, 4_000_000.0
DISTRICT = "130609000000"
TOWN_A, TOWN_B = "130609101000", "130609201000"
VIL_A1, VIL_A2, VIL_B1 = "130609101001", "130609101002", "130609201001"
DATE = "2024-05-01"


def make_grids(*, persons: bool = False) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Townships and villages; ``persons`` adds the responsible person of each unit."""
    townships = gpd.GeoDataFrame(
        {G.CODE: [TOWN_A, TOWN_B], G.NAME: ["城关镇", "河西乡"]},
        geometry=[box(X0, Y0, X0 + 1000, Y0 + 1000), box(X0 + 1000, Y0, X0 + 2000, Y0 + 1000)],
        crs=CRS,
    )
    villages = gpd.GeoDataFrame(
        {
            G.CODE: [VIL_A1, VIL_A2, VIL_B1],
            G.NAME: ["东村", "西村", "南庄村"],
            G.TOWNSHIP_CODE: [TOWN_A, TOWN_A, TOWN_B],
        },
        geometry=[
            box(X0, Y0, X0 + 500, Y0 + 1000),
            box(X0 + 500, Y0, X0 + 1000, Y0 + 1000),
            box(X0 + 1000, Y0, X0 + 2000, Y0 + 1000),
        ],
        crs=CRS,
    )
    if persons:
        townships[G.PERSON] = ["张三", "李四"]
        villages[G.PERSON] = ["王五", "赵六", "钱七"]
    return townships, villages


def make_patches(area_m2: float = 400.0) -> gpd.GeoDataFrame:
    """The five patches in registry column order: codes as text, remaining area NaN unless
    illegal, ``area_m2`` each (300 m² of it farmland)."""
    rows = [
        # patch id, township, township name, village, village name, verdict, remaining, x
        ("130609201700001", TOWN_A, "城关镇", VIL_A1, "东村", "pending", np.nan, 100),
        ("130609201700002", TOWN_A, "城关镇", VIL_A2, "西村", "illegal", 0.0, 600),
        ("130609201700003", TOWN_A, "城关镇", VIL_A1, "东村", "illegal", 50.0, 300),
        ("130609201700004", TOWN_B, "河西乡", VIL_B1, "南庄村", "legal", np.nan, 1500),
        ("130609201700005", *[UNASSIGNED] * 4, "pending", np.nan, 3000),
    ]
    n = len(rows)
    data = {
        P.PATCH_ID: [r[0] for r in rows],
        P.EPOCH_FROM: ["2016"] * n,
        P.EPOCH_TO: ["2017"] * n,
        P.AREA_M2: [area_m2] * n,
        P.AREA_MU: [area_m2 / MU_M2] * n,
        P.FARMLAND_M2: [300.0] * n,
        P.BASIC_FARMLAND_M2: [0.0] * n,
        P.APPROVED_M2: [0.0] * n,
        P.APPROVED_SHARE: [0.0] * n,
        P.APPROVAL_REFS: [None] * n,
        P.LEGAL_HINT: ["suspected"] * n,
        P.TOWNSHIP_CODE: [r[1] for r in rows],
        P.TOWNSHIP_NAME: [r[2] for r in rows],
        P.VILLAGE_CODE: [r[3] for r in rows],
        P.VILLAGE_NAME: [r[4] for r in rows],
        P.VILLAGE_SHARE: [1.0] * n,
        P.VILLAGE_SHARES: [json.dumps({r[3]: 1.0}, ensure_ascii=False) for r in rows],
        P.CHANGE_TYPE: ["veg_to_construction"] * n,
        P.SCORE: [3.5] * n,
        P.VERDICT: [r[5] for r in rows],
        P.VERDICT_SUBTYPE: [None] * n,
        P.RECT_METHOD: ["demolished_restored" if r[5] == "illegal" else None for r in rows],
        P.REMAINING_M2: [r[6] for r in rows],
        P.FIRST_SEEN: ["2017-06-01"] * n,
        P.LAST_SEEN: ["2017-06-01"] * n,
        P.CHECKED_ON: [None] * n,
        P.INSPECTOR: [None] * n,
        P.NOTE: [None] * n,
        P.UPDATED_AT: ["2024-04-30T12:00:00Z"] * n,
    }
    geoms = [box(X0 + r[7], Y0 + 100, X0 + r[7] + 20, Y0 + 120) for r in rows]
    return gpd.GeoDataFrame(
        {c: data.get(c, [None] * n) for c in PATCH_COLUMNS}, geometry=geoms, crs=CRS
    )


def _unit(level, code, name, parent, *, n, n_pending, n_legal, n_illegal, n_rect, rem_m2):
    """One rates row computed by hand from the fake patches (400 m² each, 300 m² farmland)."""
    illegal_m2 = 400.0 * n_illegal
    construction = 300.0 * (n_legal + n_illegal)
    ratio = 300.0 * n_illegal / construction if construction else np.nan
    upper_den = construction + 300.0 * n_pending
    upper = 300.0 * (n_illegal + n_pending) / upper_den if upper_den else np.nan
    rect = (illegal_m2 - rem_m2) / illegal_m2 if n_illegal else np.nan
    rect_count = n_rect / n_illegal if n_illegal else np.nan
    return {
        RC.LEVEL: level,
        RC.CODE: code,
        RC.NAME: name,
        RC.PARENT_CODE: parent,
        RC.N_PATCHES: n,
        RC.N_PENDING: n_pending,
        RC.N_LEGAL: n_legal,
        RC.N_ILLEGAL: n_illegal,
        RC.N_FALSE_CHANGE: 0,
        RC.N_OTHER: 0,
        RC.PATCHES_M2: 400.0 * n,
        RC.ILLEGAL_M2: illegal_m2,
        RC.ILLEGAL_MU: illegal_m2 / MU_M2,
        RC.ILLEGAL_FARMLAND_M2: 300.0 * n_illegal,
        RC.PENDING_FARMLAND_M2: 300.0 * n_pending,
        RC.CONSTRUCTION_FARMLAND_M2: construction,
        RC.ILLEGAL_RATIO: ratio,
        RC.ILLEGAL_RATIO_UPPER: upper,
        RC.ILLEGAL_RATIO_MET: np.nan if np.isnan(ratio) else bool(ratio < 0.15),
        RC.RECTIFIED_M2: illegal_m2 - rem_m2,
        RC.RECT_RATE_AREA: rect,
        RC.N_RECTIFIED: n_rect,
        RC.RECT_RATE_COUNT: rect_count,
        RC.RECT_RATE_MET: np.nan if np.isnan(rect) else bool(rect >= 0.85),
        RC.ZERO_CASE: n_illegal == 0,
    }


def make_rates() -> pd.DataFrame:
    rows = [
        _unit("district", DISTRICT, "示例区", None, n=5, n_pending=2, n_legal=1, n_illegal=2,
              n_rect=1, rem_m2=50.0),
        _unit("township", TOWN_A, "城关镇", DISTRICT, n=3, n_pending=1, n_legal=0, n_illegal=2,
              n_rect=1, rem_m2=50.0),
        _unit("township", TOWN_B, "河西乡", DISTRICT, n=1, n_pending=0, n_legal=1, n_illegal=0,
              n_rect=0, rem_m2=0.0),
        _unit("village", VIL_A1, "东村", TOWN_A, n=2, n_pending=1, n_legal=0, n_illegal=1,
              n_rect=0, rem_m2=50.0),
        _unit("village", VIL_A2, "西村", TOWN_A, n=1, n_pending=0, n_legal=0, n_illegal=1,
              n_rect=1, rem_m2=0.0),
        _unit("village", VIL_B1, "南庄村", TOWN_B, n=1, n_pending=0, n_legal=1, n_illegal=0,
              n_rect=0, rem_m2=0.0),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=list(RATES_COLUMNS))
    frame[RC.ILLEGAL_RATIO_MET] = frame[RC.ILLEGAL_RATIO_MET].astype(object)
    frame[RC.RECT_RATE_MET] = frame[RC.RECT_RATE_MET].astype(object)
    return frame


def write_district_report(out):
    """One full report of the fake district into ``out`` (a one-row history plus today: two
    dates, so a trend chart), as the report and browser tests read it."""
    townships, villages = make_grids()
    history = make_rates().iloc[[0]].assign(**{HISTORY_DATE: "2024-04-01", RC.RECT_RATE_AREA: 0.2})
    patches = make_patches()
    cfg = ReportConfig(
        deadline=dt.date(2024, 9, 15),
        land_price_per_mu=220000.0,
        reward=RewardConfig(township=100000.0, village=50000.0),
        penalty_per_case=2000.0,
    )
    state = dataclasses.replace(empty_state(CRS), patches=normalise_patches(patches))
    units = Units((DISTRICT, "示例区"), townships, villages)
    cycle = cycle_tables(state, units, cfg, as_of=dt.date.fromisoformat(DATE))
    return write_report(
        make_rates(),
        patches,
        townships,
        villages,
        out,
        cfg=ReportConfig(),
        area_name="示例区（合成样例）",
        date=DATE,
        history=history,
        relapsed_ids={"130609201700002"},
        cycle=cycle,
        learning={"used": False, "reason": "no model: too few verdicts"},
    )
