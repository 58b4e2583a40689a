"""Accuracy measures of ``landwatch evaluate`` (pipeline.detection.accuracy), by hand."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely

from pipeline.detection.accuracy import match_objects, object_scores, pixel_scores


def test_pixel_scores_by_hand():
    pred = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    truth = np.array([1, 0, 1, 0, 1, 0], dtype=bool)
    s = pixel_scores(pred, truth)
    assert (s.tp, s.fp, s.fn, s.tn) == (2, 1, 1, 2)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 / 3) and s.iou == pytest.approx(0.5)
    # kappa: observed 4/6, expected (3*3 + 3*3)/36 = 0.5
    assert s.kappa == pytest.approx((4 / 6 - 0.5) / 0.5)
    valid = np.array([1, 1, 1, 1, 0, 0], dtype=bool)
    assert pixel_scores(pred, truth, valid).tp == 1
    assert np.isnan(pixel_scores(np.zeros(3, bool), np.zeros(3, bool)).precision)  # undefined


def test_object_scores_hits_and_false_patches():
    truth = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 10, 10), shapely.box(100, 0, 110, 10)])
    patches = gpd.GeoDataFrame(
        geometry=[
            shapely.box(0, 0, 10, 6),
            shapely.box(100, 0, 102, 10),
            shapely.box(500, 500, 510, 510),
        ]
    )
    best, touched = match_objects(patches, truth, min_cover=0.5)
    assert best.tolist() == [0, -1]  # the second object is only 20 % covered
    assert touched.tolist() == [True, True, False]
    s = object_scores(patches, truth, area_km2=2.0)
    assert (s.n_hit, s.n_false, s.false_per_km2) == (1, 1, 0.5)
