"""The administrative grid (district → township → village): normalise and validate.

:func:`pipeline.overlay.io.grid_layers.load_grids` reads the township, village and optional
district layers named in ``config.yaml``; here (pure, no file access) their columns are
normalised to :class:`pipeline.schema.G` (:func:`normalise_units`) and :func:`validate_grid`
repairs what it safely can and reports every defect as a :class:`GridIssue`. Defects are
reported, not fatal: a real grid always has some. Only an empty layer or a missing field stops
the run (:class:`~pipeline.errors.GridError`).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from numbers import Number

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from pipeline.config import CHINA_CODE_PATTERN, TOWNSHIP_CODE_PATTERN, VILLAGE_CODE_PATTERN
from pipeline.errors import GridError
from pipeline.overlay.io.vectors import require_fields
from pipeline.schema import UNASSIGNED, G
from pipeline.units import geodesic_areas_m2

log = logging.getLogger(__name__)

__all__ = [
    "GridIssue",
    "Grids",
    "IssueKind",
    "codes_as_text",
    "issues_frame",
    "match_townships",
    "normalise_units",
    "township_by_majority",
    "validate_grid",
]

DEFAULT_TOLERANCE_M2 = 1.0
"""Overlaps, gaps and parts outside a township smaller than this are floating-point noise
along shared boundaries and are not reported. (Belongs in config: ``assign.grid_tolerance_m2``.)"""

TOWNSHIP, VILLAGE, DISTRICT = "township", "village", "district"
"""Layer names used in :attr:`GridIssue.layer` (same as the keys under ``layers:``)."""


class IssueKind(StrEnum):
    """Kinds of grid defects (belongs in ``schema``)."""

    EMPTY_GEOMETRY = "empty_geometry"  # no geometry: dropped
    INVALID_GEOMETRY = "invalid_geometry"  # repaired with make_valid (polygonal parts kept)
    OVERLAP = "overlap"  # two units of the same layer share area
    GAP = "gap"  # part of the district covered by no village
    DUPLICATE_CODE = "duplicate_code"  # the same code on several features of one layer
    BAD_CODE = "bad_code"  # empty, or does not match the code pattern
    CODE_LOST_ZEROS = "code_lost_zeros"  # stored as a number; leading zeros restored
    OUTSIDE_TOWNSHIP = "outside_township"  # a village partly outside its township
    UNKNOWN_TOWNSHIP = "unknown_township"  # a village's township code is not in the township layer
    NO_TOWNSHIP = "no_township"  # majority overlap found no township for a village


@dataclass(frozen=True)
class GridIssue:
    """One grid defect.

    ``code`` is the unit of ``layer`` concerned — for a gap (district area covered by no
    village) the township it lies in (layer ``township``), or empty with layer ``district``
    when it lies outside every township —, ``other_code`` the second unit of an overlap, ``area_m2`` the ellipsoidal area of the defect where it has one, and
    ``geometry`` its location (overlap/gap/outside part, or the repaired polygon).
    """

    kind: str
    layer: str
    code: str
    detail: str
    area_m2: float | None = None
    geometry: shapely.Geometry | None = None
    other_code: str | None = None


@dataclass(frozen=True)
class Grids:
    """The loaded grid, in the target CRS, with normalised columns (:class:`schema.G`).

    ``townships`` and ``villages`` have ``code``, ``name``, ``person`` (``""`` when the layer
    has no person field) and the geometry; ``villages`` also ``township_code``. ``district``
    is ``None`` unless a district layer was configured; it is kept as read (the gap check
    works on a repaired copy).
    """

    district: gpd.GeoDataFrame | None
    townships: gpd.GeoDataFrame
    villages: gpd.GeoDataFrame
    issues: tuple[GridIssue, ...]


# --------------------------------------------------------------------------- normalising
def normalise_units(
    raw: gpd.GeoDataFrame,
    fields: dict[str, str | None],
    *,
    layer: str,
    code_pattern: str,
    township_pattern: str = TOWNSHIP_CODE_PATTERN,
) -> tuple[gpd.GeoDataFrame, list[GridIssue]]:
    """A grid layer as read, with its columns renamed to :class:`schema.G` and made text.

    Parameters
    ----------
    raw
        The layer as read (any columns, a geometry).
    fields
        Column of :class:`schema.G` -> field of ``raw`` holding it; ``None`` for an
        unconfigured field (the column is then ``""``).
    layer
        ``township``, ``village`` or ``district`` (named in the issues).
    code_pattern, township_pattern
        Patterns the ``code`` / ``township_code`` columns must match
        (:func:`codes_as_text`).

    Returns
    -------
    units, issues
        The columns of ``fields`` in their order plus the geometry (CRS kept), and one
        ``code_lost_zeros`` issue per padded code.
    """
    issues: list[GridIssue] = []
    out = {}
    for column, field in fields.items():
        if not field:
            out[column] = pd.Series("", index=raw.index, dtype=object)
        elif column in (G.CODE, G.TOWNSHIP_CODE):
            pattern = township_pattern if column == G.TOWNSHIP_CODE else code_pattern
            out[column], lost = codes_as_text(raw[field], pattern, layer=layer)
            issues.extend(lost)
        else:
            out[column] = raw[field].map(_as_text)
    return gpd.GeoDataFrame(out, geometry=raw.geometry.values, crs=raw.crs), issues


def codes_as_text(
    values: pd.Series, code_pattern: str = CHINA_CODE_PATTERN, *, layer: str = ""
) -> tuple[pd.Series, list[GridIssue]]:
    """Codes as text; numbers that lost their leading zeros are padded back and reported.

    Parameters
    ----------
    values
        A code column as read (text, integers or floats; missing values allowed).
    code_pattern
        The pattern codes must match; a number is zero-padded only when the padded text
        matches it (the width is never guessed otherwise).

    Returns
    -------
    codes, issues
        ``codes``: text, ``""`` for missing values; ``issues``: one ``code_lost_zeros`` per
        padded code.

    Notes
    -----
    Floats with an integral value (``130609001001.0``, what OGR gives for a numeric field with
    nulls) become ``"130609001001"``. Text is stripped of surrounding spaces but never padded.
    """
    pattern = re.compile(code_pattern)
    issues: list[GridIssue] = []
    out = []
    for value in values.tolist():
        if isinstance(value, Number) and not isinstance(value, bool):
            text = _number_text(value)
            if text and not pattern.fullmatch(text):
                padded = _pad(text, pattern)
                if padded is not None:
                    issues.append(
                        GridIssue(
                            IssueKind.CODE_LOST_ZEROS,
                            layer,
                            padded,
                            f"code stored as the number {text} lost its leading zeros; read as "
                            f"{padded!r}. Store codes as text in the source layer",
                        )
                    )
                    text = padded
        else:
            text = _as_text(value)
        out.append(text)
    return pd.Series(out, index=values.index, dtype=object), issues


def _number_text(value: Number) -> str:
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return ""
        if float(value).is_integer():
            return str(int(value))
    return str(value)


def _pad(text: str, pattern: re.Pattern) -> str | None:
    for width in range(len(text) + 1, len(text) + 13):
        if pattern.fullmatch(text.zfill(width)):
            return text.zfill(width)
    return None


def _as_text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, Number) and not isinstance(value, bool):
        return _number_text(value)
    return str(value).strip()


# --------------------------------------------------------------------------- validation (pure)
def validate_grid(
    townships: gpd.GeoDataFrame,
    villages: gpd.GeoDataFrame,
    district: gpd.GeoDataFrame | None = None,
    *,
    code_pattern: str | None = None,
    township_pattern: str = TOWNSHIP_CODE_PATTERN,
    village_pattern: str = VILLAGE_CODE_PATTERN,
    tolerance_m2: float = DEFAULT_TOLERANCE_M2,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, tuple[GridIssue, ...]]:
    """Repair what is safe and report every grid defect.

    Parameters
    ----------
    townships, villages
        Normalised grid layers (columns ``code``, ``name``, geometry; villages may have
        ``township_code``), in one CRS.
    district
        Optional district polygons; default the union of the townships with holes filled.
    code_pattern
        When given, the regular expression every township and village code must match
        (replaces the two patterns below).
    township_pattern, village_pattern
        Regular expressions township / village codes must match.
    tolerance_m2
        Overlaps, gaps and outside parts smaller than this are not reported.

    Returns
    -------
    townships, villages, issues
        New frames: empty geometries dropped, invalid ones repaired (``shapely.make_valid``,
        polygonal parts kept), villages given ``township_code`` by majority overlap when they
        had none, or the township layer's code their ``township_code`` matches
        (:func:`match_townships`: ``320100001`` and ``320100001000`` are one township). ``issues`` lists, in this order: empty and invalid geometries, missing
        townships, bad and duplicate codes, unknown townships, overlaps (both layers), gaps in
        the district not covered by a village, villages partly outside their township.

    Raises
    ------
    GridError
        A layer has no features (or none with a geometry), or lacks ``code``/``name``.

    Notes
    -----
    Areas in issues are ellipsoidal (:func:`pipeline.units.geodesic_areas_m2`) when the
    frames have a CRS, planar otherwise. Inputs are not modified. Overlapping and duplicate
    units are kept (which one is right is a decision for the data owner).
    """
    if code_pattern is not None:
        township_pattern = village_pattern = code_pattern
    issues: list[GridIssue] = []
    crs = townships.crs
    for name, gdf in ((TOWNSHIP, townships), (VILLAGE, villages)):
        _check_layer(gdf, name)
    townships = _repair(townships, TOWNSHIP, crs, issues)
    villages = _repair(villages, VILLAGE, crs, issues)
    if district is not None:
        district = _repair(district, DISTRICT, crs, issues)

    villages = _with_townships(villages, townships, issues)
    for name, gdf, pattern in (
        (TOWNSHIP, townships, township_pattern),
        (VILLAGE, villages, village_pattern),
    ):
        issues.extend(_code_issues(gdf, name, pattern))
    issues.extend(_unknown_townships(villages, townships))
    for name, gdf in ((TOWNSHIP, townships), (VILLAGE, villages)):
        issues.extend(_overlaps(gdf, name, crs, tolerance_m2))
    issues.extend(_gaps(townships, villages, district, crs, tolerance_m2))
    issues.extend(_outside_township(townships, villages, crs, tolerance_m2))
    _log_issues(issues)
    return townships, villages, tuple(issues)


def match_townships(village_township_codes: pd.Series, township_codes: pd.Series) -> pd.Series:
    """The township layer's code each village's township code stands for.

    Parameters
    ----------
    village_township_codes
        The villages' ``township_code`` (text, as read).
    township_codes
        The township layer's codes (text, as read).

    Returns
    -------
    Series
        Per village (same index): the township code exactly as the township layer has it when
        one matches, otherwise the village's value unchanged (reported as an unknown township).

    Notes
    -----
    A code matches when equal, or, both being all digits, when their first 9 digits are equal
    (the GB/T 10114 township code: ``320100001`` and its 12-digit form ``320100001000`` are
    one township). A 9-digit key shared by two township codes matches neither by key (only
    exactly): which one is meant cannot be told.
    """
    codes = [str(c) for c in township_codes]
    exact = set(codes)
    by_key: dict[str, str | None] = {}
    for code in codes:
        key = _township_key(code)
        if key is not None:
            by_key[key] = None if by_key.get(key, code) != code else code
    out = []
    for value in village_township_codes.tolist():
        key = _township_key(value)
        if value in exact or key is None or by_key.get(key) is None:
            out.append(value)
        else:
            out.append(by_key[key])
    return pd.Series(out, index=village_township_codes.index, dtype=object)


def _township_key(code) -> str | None:
    """First 9 digits of an all-digit code of at least 9 digits, else ``None``."""
    code = str(code)
    return code[:9] if len(code) >= 9 and code.isascii() and code.isdigit() else None


def township_by_majority(
    villages: gpd.GeoDataFrame, townships: gpd.GeoDataFrame
) -> tuple[pd.Series, np.ndarray]:
    """The township holding the largest part of each village.

    Returns
    -------
    codes, shares
        ``codes``: township code per village (index of ``villages``), ``UNASSIGNED`` where a
        village overlaps no township; ``shares``: the share of the village's (planar) area in
        that township, 0 where unassigned.

    Notes
    -----
    One ``STRtree.query(predicate="intersects")``, then vectorised ``shapely.intersection``
    on the index pairs (skipped where the township covers the village) and a group-by max.
    Shares are ratios of planar areas in the frames' CRS (use a projected CRS).
    """
    vgeoms = np.asarray(villages.geometry.values, dtype=object)
    tgeoms = np.asarray(townships.geometry.values, dtype=object)
    vi, ti, inter = _pair_areas(vgeoms, tgeoms)
    codes = np.full(len(villages), UNASSIGNED, dtype=object)
    shares = np.zeros(len(villages))
    if len(vi):
        order = np.lexsort((ti, -inter, vi))  # per village: largest area first, ties by row
        vi, ti, inter = vi[order], ti[order], inter[order]
        first = np.r_[True, vi[1:] != vi[:-1]]
        keep = first & (inter > 0)
        codes[vi[keep]] = townships[G.CODE].to_numpy()[ti[keep]]
        areas = shapely.area(vgeoms[vi[keep]])
        shares[vi[keep]] = np.divide(inter[keep], areas, out=np.zeros(keep.sum()), where=areas > 0)
    return pd.Series(codes, index=villages.index, dtype=object), shares


def issues_frame(issues: Sequence[GridIssue], crs=None) -> gpd.GeoDataFrame:
    """The issues as a GeoDataFrame (one row each), e.g. to write a ``grid_issues`` layer."""
    rows = {
        "kind": [str(i.kind) for i in issues],
        "layer": [i.layer for i in issues],
        "code": [i.code for i in issues],
        "other_code": [i.other_code or "" for i in issues],
        "detail": [i.detail for i in issues],
        "area_m2": [np.nan if i.area_m2 is None else i.area_m2 for i in issues],
    }
    return gpd.GeoDataFrame(rows, geometry=[i.geometry for i in issues], crs=crs)


# --------------------------------------------------------------------------- helpers
def _with_townships(
    villages: gpd.GeoDataFrame, townships: gpd.GeoDataFrame, issues: list[GridIssue]
) -> gpd.GeoDataFrame:
    """``villages`` with the township layer's code of their township: by majority overlap
    when they have no ``township_code`` (a ``no_township`` issue each where none overlaps,
    appended to ``issues``), else by :func:`match_townships`."""
    if G.TOWNSHIP_CODE not in villages:
        codes, _ = township_by_majority(villages, townships)
        villages = villages.assign(**{G.TOWNSHIP_CODE: codes})
        for code in villages.loc[codes == UNASSIGNED, G.CODE]:
            issues.append(
                GridIssue(IssueKind.NO_TOWNSHIP, VILLAGE, code, "village overlaps no township")
            )
        return villages
    matched = match_townships(villages[G.TOWNSHIP_CODE], townships[G.CODE])
    return villages.assign(**{G.TOWNSHIP_CODE: matched})


def _unknown_townships(villages: gpd.GeoDataFrame, townships: gpd.GeoDataFrame) -> list[GridIssue]:
    known = set(townships[G.CODE])
    unknown = villages[~villages[G.TOWNSHIP_CODE].isin(known | {UNASSIGNED})]
    return [
        GridIssue(
            IssueKind.UNKNOWN_TOWNSHIP,
            VILLAGE,
            code,
            f"township code {tcode!r} is not in the township layer",
        )
        for code, tcode in zip(unknown[G.CODE], unknown[G.TOWNSHIP_CODE])
    ]


def _log_issues(issues: list[GridIssue]) -> None:
    """Each issue at INFO, and a WARNING counting them by kind."""
    counts = Counter(issue.kind for issue in issues)
    for issue in issues:
        log.info("grid issue: %s %s %s: %s", issue.kind, issue.layer, issue.code, issue.detail)
    if counts:
        log.warning(
            "grid: %d issue(s): %s",
            len(issues),
            ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())),
        )


def _check_layer(gdf: gpd.GeoDataFrame, name: str) -> None:
    require_fields(
        [str(c) for c in gdf.columns], [G.CODE, G.NAME], label=f"{name} layer", error=GridError
    )
    if len(gdf) == 0:
        raise GridError(f"{name} layer has no features; expected one polygon per {name}")


def _measure(geoms: np.ndarray, crs) -> np.ndarray:
    """Ellipsoidal areas (m²) when the CRS is known, planar otherwise."""
    if crs is None:
        return shapely.area(geoms)
    return geodesic_areas_m2(shapely.orient_polygons(geoms), crs)  # see classify._areas_m2


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """The polygonal parts of each geometry, as (Multi)Polygons (empty when none)."""
    parts, idx = shapely.get_parts(geoms, return_index=True)
    keep = np.isin(shapely.get_type_id(parts), (3, 6))  # Polygon, MultiPolygon
    polys, sub = shapely.get_parts(parts[keep], return_index=True)
    out = np.array([shapely.MultiPolygon() for _ in range(len(geoms))], dtype=object)
    if len(polys):
        rows = idx[keep][sub]
        built = shapely.multipolygons(polys, indices=rows)
        present = np.unique(rows)
        out[present] = built[present]
    single = shapely.get_num_geometries(out) == 1
    out[single] = shapely.get_geometry(out[single], 0)
    bad = ~shapely.is_valid(out)
    if bad.any():  # touching parts of one MultiPolygon: dissolve them
        out[bad] = shapely.buffer(out[bad], 0)
    return out


def _repair(gdf: gpd.GeoDataFrame, name: str, crs, issues: list[GridIssue]) -> gpd.GeoDataFrame:
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    codes = gdf[G.CODE].to_numpy() if G.CODE in gdf else np.full(len(gdf), "", dtype=object)
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    invalid = ~empty & ~shapely.is_valid(geoms)
    if invalid.any():
        reasons = shapely.is_valid_reason(geoms[invalid])
        fixed = _polygonal(shapely.make_valid(geoms[invalid]))
        areas = _measure(fixed, crs)
        for code, reason, geom, area in zip(codes[invalid], reasons, fixed, areas):
            issues.append(
                GridIssue(
                    IssueKind.INVALID_GEOMETRY,
                    name,
                    code,
                    f"invalid polygon ({reason}); repaired with make_valid, polygonal parts kept",
                    float(area),
                    geom,
                )
            )
        geoms = geoms.copy()
        geoms[invalid] = fixed
        empty = empty | shapely.is_empty(geoms)  # a polygon that collapsed to a line
    for code in codes[empty]:
        issues.append(
            GridIssue(IssueKind.EMPTY_GEOMETRY, name, code, "no geometry (or no area); dropped")
        )
    out = gdf.set_geometry(geoms)[~empty]  # set_geometry returns a copy
    if len(out) == 0:
        raise GridError(
            f"{name} layer has no polygon with an area ({len(gdf)} features, all empty); "
            "check the file in QGIS"
        )
    return out


def _code_issues(gdf: gpd.GeoDataFrame, name: str, code_pattern: str) -> list[GridIssue]:
    pattern = re.compile(code_pattern)
    codes = gdf[G.CODE]
    issues = []
    for code in codes:
        if not pattern.fullmatch(code):
            what = "empty code" if not code else f"code {code!r}"
            issues.append(
                GridIssue(
                    IssueKind.BAD_CODE,
                    name,
                    code,
                    f"{what} does not match the {name} code pattern '{code_pattern}' "
                    f"(assign.{name}_code_pattern, or assign.code_pattern for both levels)",
                )
            )
    counts = codes[codes != ""].value_counts(sort=False)
    for code, n in counts[counts > 1].items():
        issues.append(
            GridIssue(IssueKind.DUPLICATE_CODE, name, code, f"code used by {n} {name} features")
        )
    return issues


def _pair_areas(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (i into ``a``, j into ``b``) that intersect and the planar area shared.

    Pairs where ``b[j]`` covers ``a[i]`` skip the intersection (their shared area is the
    area of ``a[i]``): most small features lie inside one unit.
    """
    tree = shapely.STRtree(b)
    i, j = tree.query(a, predicate="intersects")
    inter = np.empty(len(i))
    if len(i):
        shapely.prepare(b)
        covered = shapely.covers(b[j], a[i])
        inter[covered] = shapely.area(a[i[covered]])
        rest = ~covered
        inter[rest] = shapely.area(shapely.intersection(a[i[rest]], b[j[rest]]))
    return i, j, inter


def _overlaps(gdf: gpd.GeoDataFrame, name: str, crs, tolerance_m2: float) -> list[GridIssue]:
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    tree = shapely.STRtree(geoms)
    # interiors meet: "overlaps", or one contains the other (duplicates, nested units)
    pairs = [tree.query(geoms, predicate=p) for p in ("overlaps", "contains")]
    i = np.concatenate([p[0] for p in pairs])
    j = np.concatenate([p[1] for p in pairs])
    i, j = np.minimum(i, j), np.maximum(i, j)
    keep = i != j
    if not keep.any():
        return []
    ij = np.unique(np.column_stack([i[keep], j[keep]]), axis=0)
    inter = _polygonal(shapely.intersection(geoms[ij[:, 0]], geoms[ij[:, 1]]))
    areas = _measure(inter, crs)
    codes = gdf[G.CODE].to_numpy()
    issues = []
    for (a, b), geom, area in zip(ij, inter, areas):
        if area > tolerance_m2:
            issues.append(
                GridIssue(
                    IssueKind.OVERLAP,
                    name,
                    codes[a],
                    f"{name}s {codes[a]!r} and {codes[b]!r} overlap by {area:.1f} m²",
                    float(area),
                    geom,
                    other_code=codes[b],
                )
            )
    return issues


def _district_outline(townships, district) -> shapely.Geometry:
    if district is not None:
        return shapely.union_all(np.asarray(district.geometry.values, dtype=object))
    union = shapely.union_all(np.asarray(townships.geometry.values, dtype=object))
    rings = shapely.get_exterior_ring(shapely.get_parts(union))
    return shapely.union_all(shapely.polygons(rings))  # holes between townships are gaps too


def _gaps(townships, villages, district, crs, tolerance_m2: float) -> list[GridIssue]:
    outline = _district_outline(townships, district)
    covered = shapely.union_all(np.asarray(villages.geometry.values, dtype=object))
    gaps = _polygonal(shapely.get_parts(shapely.difference(outline, covered)))
    if len(gaps) == 0:
        return []
    areas = _measure(gaps, crs)
    gaps, areas = gaps[areas > tolerance_m2], areas[areas > tolerance_m2]
    # name the township the gap lies in, when there is one
    tgeoms = np.asarray(townships.geometry.values, dtype=object)
    gi, ti = shapely.STRtree(tgeoms).query(shapely.point_on_surface(gaps), predicate="intersects")
    where = np.full(len(gaps), "", dtype=object)
    where[gi[::-1]] = townships[G.CODE].to_numpy()[ti[::-1]]  # first match wins
    return [
        GridIssue(
            IssueKind.GAP,
            TOWNSHIP if code else DISTRICT,
            code,
            f"{area:.1f} m² of the district covered by no village"
            + (f" (in township {code!r})" if code else " (outside every township)"),
            float(area),
            geom,
        )
        for geom, area, code in zip(gaps, areas, where)
    ]


def _outside_township(townships, villages, crs, tolerance_m2: float) -> list[GridIssue]:
    known = villages[G.TOWNSHIP_CODE].isin(set(townships[G.CODE]))
    if not known.any():
        return []
    # duplicate township codes: the village may lie in any feature carrying its code
    by_code = townships.dissolve(by=G.CODE).geometry
    vgeoms = np.asarray(villages.geometry.values[known.to_numpy()], dtype=object)
    tgeoms = np.asarray(by_code.loc[villages.loc[known, G.TOWNSHIP_CODE]].values, dtype=object)
    shapely.prepare(tgeoms)
    inside = shapely.covers(tgeoms, vgeoms)
    outside = _polygonal(shapely.difference(vgeoms[~inside], tgeoms[~inside]))
    areas = _measure(outside, crs)
    totals = _measure(vgeoms[~inside], crs)
    codes = villages.loc[known, G.CODE].to_numpy()[~inside]
    tcodes = villages.loc[known, G.TOWNSHIP_CODE].to_numpy()[~inside]
    return [
        GridIssue(
            IssueKind.OUTSIDE_TOWNSHIP,
            VILLAGE,
            code,
            f"{area / total:.1%} of the village ({area:.1f} m²) lies outside its township "
            f"{tcode!r}",
            float(area),
            geom,
        )
        for code, tcode, geom, area, total in zip(codes, tcodes, outside, areas, totals)
        if area > tolerance_m2
    ]
