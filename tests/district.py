"""The fake district shared by the export and report tests.

Two townships side by side in EPSG:4548, 1 km each: 城关镇 (villages 东村 and 西村) and 河西乡
(南庄村). Five patches of 20 × 20 m with the registry's columns: two illegal in 城关镇 (one
rectified, one with 50 m² left), one pending in 东村, one legal in 南庄村, and one pending
outside every grid polygon (unassigned).
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
from shapely.geometry import box

from pipeline.schema import PATCH_COLUMNS, UNASSIGNED, G, P
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
    return gpd.GeoDataFrame({c: data[c] for c in PATCH_COLUMNS}, geometry=geoms, crs=CRS)
