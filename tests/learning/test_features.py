"""Patch features: shape, overlay shares, distances and neighbourhood from the detections, the
detector's built-up rule per pixel, and the table rows (one per patch and pair)."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.detection.change_type import built_up
from pipeline.learning.features import (
    APPROVAL_CAP_M,
    FEATURE_NAMES,
    detection_patch_ids,
    feature_rows,
    features_for,
    patch_features,
    upsert_features,
)
from pipeline.schema import PF, P
from tests.district import CRS, X0, Y0


def _detections() -> gpd.GeoDataFrame:
    geoms = [
        shapely.box(X0, Y0, X0 + 20, Y0 + 20),  # a square
        shapely.box(X0 + 100, Y0, X0 + 140, Y0 + 10),  # a 4:1 strip, 100 m away
        shapely.box(X0 + 5000, Y0, X0 + 5020, Y0 + 20),  # alone, far away
    ]
    return gpd.GeoDataFrame(
        {
            P.SCORE: [3.0, 5.0, 1.0],
            P.CHANGE_TYPE: ["veg_to_construction", "veg_to_bare", "other_change"],
            P.AREA_M2: [400.0, 400.0, 400.0],
            P.FARMLAND_M2: [400.0, 100.0, 0.0],
            P.BASIC_FARMLAND_M2: [200.0, 0.0, 0.0],
            P.APPROVED_SHARE: [0.0, 0.5, 0.0],
            "mean_from_red": [800.0, 800.0, 800.0],
            "mean_to_red": [1600.0, 800.0, 400.0],
        },
        geometry=geoms,
        crs=CRS,
    )


def test_shape_shares_distances_and_neighbourhood():
    det = _detections()
    approvals = gpd.GeoSeries([shapely.box(X0 + 10, Y0 + 10, X0 + 30, Y0 + 30)], crs=CRS)
    f = patch_features(det, approvals=approvals)
    assert list(f.columns) == list(FEATURE_NAMES)
    assert f.loc[0, "compactness"] == pytest.approx(math.pi / 4)  # a square: π/4
    assert f.loc[1, "elongation"] == pytest.approx(4.0)
    assert f.loc[0, "farmland_share"] == 1.0 and f.loc[1, "farmland_share"] == 0.25
    assert f.loc[0, "basic_share"] == 0.5
    assert f.loc[0, "dist_approval_m"] == 0.0  # overlaps the approval
    assert f.loc[1, "dist_approval_m"] == pytest.approx(70.0)
    assert f.loc[2, "dist_approval_m"] == APPROVAL_CAP_M  # none within the cap
    assert f.loc[0, "density_per_km2"] > 0 and f.loc[2, "density_per_km2"] == 0
    assert f.loc[0, "log_ratio_red"] == pytest.approx(math.log(2))
    assert np.isnan(f.loc[0, "mean_from_nir"])  # a band not given stays unknown
    assert list(f["change_type"]) == [0.0, 1.0, 2.0]


def test_built_up_follows_the_detector_rule_per_pixel():
    names = ["blue", "green", "red", "nir"]
    # columns: grey roof, green field, bare soil, dark water
    x = np.array(
        [[1800, 500, 700, 400], [1850, 900, 1000, 500], [1900, 600, 1400, 300],
         [2000, 3500, 1900, 100]], dtype=float,
    )  # fmt: skip
    assert built_up(x, names).tolist() == [True, False, False, False]
    assert not built_up(x[:2], ["blue", "green"]).any()  # without red nothing is judged


def test_rows_are_one_per_patch_and_pair_and_the_current_pair_wins():
    det = _detections()
    f = patch_features(det)
    ids = pd.Series(["A", "A", "B"])  # two detections became patch A: the larger is kept
    rows = feature_rows(f, ids, ("2016", "2017"), "r1")
    assert sorted(rows[PF.PATCH_ID]) == ["A", "B"]
    later = feature_rows(f.iloc[[2]], pd.Series(["A"], index=[2]), ("2017", "2018"), "r2")
    table = upsert_features(rows, later)
    table = upsert_features(
        table, feature_rows(f.iloc[[0]], pd.Series(["B"]), ("2016", "2017"), "r3")
    )
    assert len(table) == 3  # B's row of 2016-2017 replaced, A has two pairs
    patches = pd.DataFrame({P.PATCH_ID: ["A", "B", "C"], P.EPOCH_FROM: ["2016"] * 3,
                            P.EPOCH_TO: ["2017"] * 3})  # fmt: skip
    x = features_for(table, patches)
    assert x.loc["A", "elongation"] == pytest.approx(4.0)  # the current pair's row
    assert x.loc["B", "compactness"] == pytest.approx(math.pi / 4)  # replaced by r3
    assert x.loc["C"].isna().all()


def test_each_detection_goes_to_the_patch_it_overlaps_most():
    det = _detections()
    patches = gpd.GeoDataFrame(
        {P.PATCH_ID: ["P1", "P2"]},
        geometry=[
            shapely.box(X0 - 5, Y0 - 5, X0 + 15, Y0 + 15),
            shapely.box(X0 + 10, Y0, X0 + 120, Y0 + 30),
        ],
        crs=CRS,
    )
    ids = detection_patch_ids(det, patches)
    assert ids.iloc[:2].tolist() == ["P1", "P2"] and pd.isna(ids.iloc[2])
