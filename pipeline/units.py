"""Units, areas and dates.

Areas are stored in m². 1 亩 (mu) is exactly 10000/15 m²; 15 亩 = 1 公顷. Dates are
calendar dates (:class:`datetime.date`) read from text by :func:`parse_date`.

Notes
-----
Patch areas are computed on the ellipsoid of the target CRS's datum with
:meth:`pyproj.Geod.geometry_area_perimeter` (for the sample, CGCS2000's ellipsoid), never
in degrees. For a conformal projection such as Gauss-Krüger the planar area differs from the
ellipsoidal area by the squared scale factor (well under 0.1 % inside a 3° zone), which is
why both are not interchangeable in exact reports.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import numpy as np
import pyproj
import shapely

MU_M2 = 10000.0 / 15.0
"""One 亩 in square metres (exact by definition)."""

_DATE = re.compile(
    r"(\d{4})\s*(?:[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?|(\d{2})(\d{2}))"
    r"(?:[ T]00:00(?::00)?)?"
)
"""The date forms :func:`parse_date` reads: year, month, day (optionally followed by a
midnight time, as spreadsheets export dates)."""


def m2_to_mu(area_m2):
    """Square metres to 亩 (works on scalars and arrays)."""
    return np.asarray(area_m2, dtype="float64") / MU_M2 if np.ndim(area_m2) else area_m2 / MU_M2


def mu_to_m2(area_mu):
    """亩 to square metres."""
    return np.asarray(area_mu, dtype="float64") * MU_M2 if np.ndim(area_mu) else area_mu * MU_M2


def format_mu(area_m2: float) -> str:
    """An area in m² shown as 亩 with two decimals and no thousands separator."""
    return f"{area_m2 / MU_M2:.2f}"


def geodesic_areas_m2(geoms, crs) -> np.ndarray:
    """Ellipsoidal area in m² of each geometry.

    Parameters
    ----------
    geoms : array-like of shapely geometries
        Polygons or MultiPolygons in ``crs``.
    crs : anything :class:`pyproj.CRS` accepts
        The CRS of ``geoms``; its datum's ellipsoid is used.

    Notes
    -----
    Geometries are transformed to the CRS's geographic counterpart and measured with
    :class:`pyproj.Geod`. Empty geometries measure 0. Orientation does not matter (the
    absolute value is taken).
    """
    crs = pyproj.CRS(crs)
    geographic = crs.geodetic_crs
    geod = geographic.get_geod()
    geoms = np.asarray(geoms, dtype=object)
    if geoms.size == 0:
        return np.zeros(0)
    if crs != geographic:
        transformer = pyproj.Transformer.from_crs(crs, geographic, always_xy=True)
        geoms = shapely.transform(
            geoms, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
        )
    # orient rings consistently: the Geod sums signed part areas, so parts wound both ways
    # would cancel out
    geoms = shapely.orient_polygons(geoms)
    out = np.empty(len(geoms))
    for i, geom in enumerate(geoms):
        out[i] = (
            0.0 if geom is None or geom.is_empty else abs(geod.geometry_area_perimeter(geom)[0])
        )
    return out


def parse_date(value: Any) -> dt.date | None:
    """The calendar date written in ``value``; None when ``value`` is empty.

    Parameters
    ----------
    value : str or None
        Text such as ``2024-05-03`` (ISO), ``2024/5/3``, ``2024.5.3``, ``2024年5月3日`` or
        ``20240503``, optionally followed by a midnight time (``2024-05-03 00:00:00``, as
        spreadsheets export dates). Leading and trailing blanks are ignored. Anything else
        is converted with :class:`str` first.

    Returns
    -------
    datetime.date or None
        None for ``None`` and for blank text.

    Raises
    ------
    ValueError
        When the text is not a date in one of these forms, or names no real day
        (``2024-02-30``). Callers decide what that means: a bad option is a
        :class:`~pipeline.errors.ConfigError`, a bad cell of a field return a rejection.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    m = _DATE.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not a date; expected YYYY-MM-DD, e.g. '2024-05-01'")
    year, month, day = m.group(1), m.group(2) or m.group(4), m.group(3) or m.group(5)
    try:
        return dt.date(int(year), int(month), int(day))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a date: {exc}") from None
