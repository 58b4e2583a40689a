"""Units (亩, ellipsoidal areas) and the accuracy measures of `landwatch evaluate`."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely

from pipeline.detection.accuracy import match_objects, object_scores, pixel_scores
from pipeline.units import MU_M2, format_mu, geodesic_areas_m2, m2_to_mu

# a point near EPSG:4548's central meridian (117° E), where the projection scale is ~1
X0, Y0 = 500_000.0, 4_320_000.0


def test_mu_is_exact():
    assert MU_M2 * 15 == 10000
    assert m2_to_mu(10000 / 15) == 1.0
    assert format_mu(12345.0) == "18.52"  # two decimals, no thousands separator
    assert format_mu(10_000_000.0) == "15000.00"


def test_geodesic_area_of_a_square_near_the_central_meridian():
    square = shapely.box(X0, Y0, X0 + 100, Y0 + 100)
    area = geodesic_areas_m2([square], "EPSG:4548")[0]
    assert area == pytest.approx(10_000, rel=2e-3)


def test_multipolygon_parts_wound_both_ways_do_not_cancel():
    """Regression: the ellipsoid sums signed part areas; rings must be oriented first."""
    a = shapely.box(X0, Y0, X0 + 1000, Y0 + 1000)  # counter-clockwise
    b = shapely.Polygon(
        list(shapely.box(X0 + 2000, Y0, X0 + 3000, Y0 + 1000).exterior.coords)[::-1]
    )
    multi = shapely.MultiPolygon([a, b])
    areas = geodesic_areas_m2([multi, a, b, shapely.Polygon()], "EPSG:4548")
    assert areas[0] == pytest.approx(areas[1] + areas[2], rel=1e-12)
    assert areas[3] == 0


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
