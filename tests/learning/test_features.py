"""Patch features: shape, overlay shares, distances and neighbourhood from the detections, the
detector's built-up rule per pixel, and the table rows (one per patch and pair)."""

from __future__ import annotations

import json
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
    add_features,
    feature_rows,
    features_for,
    patch_features,
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


def test_rows_are_one_per_patch_and_pair_kept_for_good_and_the_current_pair_wins():
    det = _detections()
    f = patch_features(det)
    f.loc[1, "score_max"] = np.nan
    f.loc[0, "score_max"] = 0.9
    ids = pd.Series(["A", "A", "B"])  # two detections became patch A: the larger is kept whole
    rows = feature_rows(f, ids, ("2016", "2017"), "r1")
    assert sorted(rows[PF.PATCH_ID]) == ["A", "B"]
    a = json.loads(rows.set_index(PF.PATCH_ID).loc["A", PF.VALUES])
    assert a["elongation"] == pytest.approx(4.0) and a["score_max"] is None  # not mixed
    later = feature_rows(f.iloc[[2]], pd.Series(["A"], index=[2]), ("2017", "2018"), "r2")
    table = add_features(rows, later)
    again = feature_rows(f.iloc[[0]], pd.Series(["B"]), ("2016", "2017"), "r3")
    table = add_features(table, again)
    assert len(table) == 3  # A has two pairs; B's stored row is kept, not replaced
    assert set(table[PF.RUN_ID]) == {"r1", "r2"}
    patches = pd.DataFrame({P.PATCH_ID: ["A", "B", "C"], P.EPOCH_FROM: ["2016"] * 3,
                            P.EPOCH_TO: ["2017"] * 3})  # fmt: skip
    x = features_for(table, patches)
    assert x.loc["A", "elongation"] == pytest.approx(4.0)  # the current pair's row
    assert x.loc["B", "compactness"] < 1  # B's own first row
    assert x.loc["C"].isna().all()


def test_a_newer_feature_version_replaces_a_stored_row():
    f = patch_features(_detections())
    old = feature_rows(f.iloc[[0]], pd.Series(["A"]), ("2016", "2017"), "r1")
    old[PF.VALUES] = [json.dumps({"compactness": 0.1})]  # written before versions existed
    new = feature_rows(f.iloc[[0]], pd.Series(["A"]), ("2016", "2017"), "r2")
    table = add_features(old, new)
    assert table[PF.RUN_ID].tolist() == ["r2"]


def test_infinite_values_are_stored_as_unknown():
    f = patch_features(_detections())
    f.loc[0, "elongation"] = np.inf
    rows = feature_rows(f, pd.Series(["A", "B", "C"]), ("2016", "2017"), "r1")
    assert json.loads(rows[PF.VALUES].iloc[0])["elongation"] is None
