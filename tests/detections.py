"""Builder of classified + assigned detections for the register, registry, rates and
reassessment tests (a test helper module: test modules import from here, not from each other)."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import shapely

from pipeline.schema import DETECTION_INPUT_COLUMNS, ChangeType, LegalHint, P
from pipeline.units import MU_M2

CRS = "EPSG:4548"
X0, Y0 = 500000.0, 4300000.0
"""Offset so the test geometries sit inside the CGCS2000 zone of EPSG:4548."""
NOW = "2024-05-01T08:00:00Z"


def make_detections(
    geoms,
    *,
    epoch_from: str = "2016",
    epoch_to: str = "2017",
    village_codes=None,
    village_names=None,
    farmland=None,
) -> gpd.GeoDataFrame:
    """Classified + assigned detections (every non-registry column) around (X0, Y0).

    ``geoms`` are in local metres, shifted by (X0, Y0); areas are planar.
    """
    geoms = shapely.transform(np.asarray(geoms, dtype=object), lambda xy: xy + np.array([X0, Y0]))
    n = len(geoms)
    area = shapely.area(geoms)
    vcodes = list(village_codes or ["130609100001"] * n)
    data = {
        P.EPOCH_FROM: [epoch_from] * n,
        P.EPOCH_TO: [epoch_to] * n,
        P.AREA_M2: area,
        P.AREA_MU: area / MU_M2,
        P.FARMLAND_M2: area * 0.5 if farmland is None else farmland,
        P.BASIC_FARMLAND_M2: np.zeros(n),
        P.APPROVED_M2: np.zeros(n),
        P.APPROVED_SHARE: np.zeros(n),
        P.APPROVAL_REFS: [None] * n,
        P.LEGAL_HINT: [LegalHint.SUSPECTED.value] * n,
        P.TOWNSHIP_CODE: [c[:9] + "000" for c in vcodes],
        P.TOWNSHIP_NAME: ["一镇"] * n,
        P.VILLAGE_CODE: vcodes,
        P.VILLAGE_NAME: list(village_names or ["一村"] * n),
        P.VILLAGE_SHARE: np.ones(n),
        P.VILLAGE_SHARES: [json.dumps({c: 1.0}) for c in vcodes],
        P.CHANGE_TYPE: [ChangeType.CONSTRUCTION.value] * n,
        P.SCORE: np.linspace(1.0, 2.0, n),
    }
    assert set(data) == set(DETECTION_INPUT_COLUMNS)
    return gpd.GeoDataFrame(data, geometry=list(geoms), crs=CRS)
