"""Units (pipeline.units): 亩, ellipsoidal areas and dates."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import shapely

from pipeline.units import MU_M2, format_mu, geodesic_areas_m2, m2_to_mu, parse_date

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


# --------------------------------------------------------------------------- dates
@pytest.mark.parametrize(
    "text",
    ["2024-05-03", "2024/5/3", "2024.05.03", "2024年5月3日", "20240503", "2024-05-03 00:00:00"],
)
def test_parse_date_reads_the_forms_people_write(text):
    """ISO dates and the forms spreadsheets and field teams write all give the same day."""
    assert parse_date(text) == dt.date(2024, 5, 3)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_parse_date_of_nothing_is_none(value):
    """An empty value is no date, not an error: the caller decides whether it is required."""
    assert parse_date(value) is None


@pytest.mark.parametrize("text", ["2024-02-30", "3.5.2024", "soon", "2024-05-03 12:00"])
def test_parse_date_rejects_what_is_not_a_day(text):
    """Malformed text and impossible days raise ValueError, naming the text."""
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_date(text)
