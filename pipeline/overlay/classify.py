"""Overlay of detected patches with farmland, basic farmland and approvals (pure).

Each patch gets its ellipsoidal area (m² and 亩), the area of farmland, of permanent basic
farmland and of approved land inside it, the approved share, the approval document numbers
and a legal hint (DESIGN §2: a hint, never a verdict).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely

from pipeline.config import ClassifyConfig
from pipeline.errors import InputDataError
from pipeline.schema import LegalHint, P
from pipeline.units import MU_M2, geodesic_areas_m2

log = logging.getLogger(__name__)

__all__ = [
    "classify_patches",
    "code_matches",
    "code_text",
    "ellipsoidal_areas_m2",
    "overlay_union_areas",
    "union_by_group",
]

REFS_SEPARATOR = ";"
"""Joins document numbers in ``approval_refs`` (belongs in ``schema``)."""

SHARE_EPS = 1e-9
"""A share this close below ``legal_share`` counts as reaching it (area round-off)."""

TRUE_TEXT = frozenset({"1", "true", "t", "yes", "y", "是", "基本农田", "永久基本农田"})
"""Text values of the farmland ``basic_field`` read as "basic farmland"."""


def classify_patches(
    detections: gpd.GeoDataFrame,
    *,
    farmland: gpd.GeoDataFrame | None = None,
    basic_farmland: gpd.GeoDataFrame | None = None,
    approvals: gpd.GeoDataFrame | None = None,
    legal_share: float = 0.95,
    basic_field: str | None = "basic",
    ref_field: str = "doc_no",
    cfg: ClassifyConfig | None = None,
    crs: str | pyproj.CRS | None = None,
) -> gpd.GeoDataFrame:
    """Areas and farmland / approval overlaps of each patch.

    Parameters
    ----------
    detections
        Patch polygons (any other columns are kept).
    farmland
        Farmland (耕地) polygons, or ``None``.
    basic_farmland
        Permanent basic farmland (永久基本农田) polygons. ``None``: the ``farmland`` polygons
        whose ``basic_field`` is true (``1``, ``true``, ``yes``, ``是`` ...).
    approvals
        Approved land (批准用地) polygons with a document number in ``ref_field``, or ``None``.
    legal_share
        Approved share at or above which the hint is ``probably_legal``.
    basic_field
        Field of ``farmland`` flagging basic farmland; ``None`` when there is none.
    ref_field
        Field of ``approvals`` holding the document number.
    cfg
        The ``classify`` config section; when given, its ``legal_share`` is used.
    crs
        CRS of ``detections`` when the frame carries none.

    Returns
    -------
    GeoDataFrame
        A copy of ``detections`` with ``area_m2``, ``area_mu``, ``farmland_m2``,
        ``basic_farmland_m2``, ``approved_m2``, ``approved_share``, ``approval_refs``
        (sorted unique document numbers joined with ``;``) and ``legal_hint``.

    Raises
    ------
    InputDataError
        ``detections`` has no CRS, ``approvals`` lacks ``ref_field`` or ``farmland`` lacks
        ``basic_field`` (with no separate basic farmland layer).

    Notes
    -----
    All areas are ellipsoidal (:func:`pipeline.units.geodesic_areas_m2`), so ``area_m2``
    replaces any planar area the detections carried. Overlap areas are those of the *union*
    of the overlay polygons inside the patch: overlapping approvals are not counted twice.
    Overlay layers in another CRS are reprojected to the detections' CRS; one without a CRS
    is assumed to be in it. A patch without overlay gets 0 (never NaN) and ``""`` refs.
    The hint compares the share with ``legal_share`` allowing 1e-9 of area round-off.
    """
    if cfg is not None:
        legal_share = cfg.legal_share
    crs = detections.crs or crs
    if crs is None:
        raise InputDataError(
            "classify: the detections have no CRS; pass crs= (the target grid's CRS) so areas "
            "can be measured on the ellipsoid"
        )
    geoms = np.asarray(detections.geometry.values, dtype=object)
    out = detections.copy()

    area = ellipsoidal_areas_m2(geoms, crs)
    out[P.AREA_M2] = area
    out[P.AREA_MU] = area / MU_M2

    farmland = _in_crs(farmland, crs, "farmland")
    basic_farmland = _in_crs(basic_farmland, crs, "basic_farmland")
    approvals = _in_crs(approvals, crs, "approvals")
    if basic_farmland is None and farmland is not None and basic_field is not None:
        _check_field(farmland, basic_field, "farmland", "basic_field")
        basic_farmland = farmland[_truthy(farmland[basic_field])]

    out[P.FARMLAND_M2] = _overlay(geoms, farmland, crs)[0]
    out[P.BASIC_FARMLAND_M2] = _overlay(geoms, basic_farmland, crs)[0]

    refs = np.full(len(out), "", dtype=object)
    if approvals is not None:
        _check_field(approvals, ref_field, "approvals", "ref_field")
    approved, pi, oi = _overlay(geoms, approvals, crs)
    if len(pi):
        docs = approvals[ref_field].to_numpy()[oi]
        refs = _join_refs(pi, docs, len(out))
    out[P.APPROVED_M2] = approved
    share = np.divide(approved, area, out=np.zeros(len(out)), where=area > 0)
    out[P.APPROVED_SHARE] = np.minimum(share, 1.0)  # rounding can push it a hair above 1
    out[P.APPROVAL_REFS] = refs
    probably_legal = share >= legal_share - SHARE_EPS
    out[P.LEGAL_HINT] = np.where(
        probably_legal, LegalHint.PROBABLY_LEGAL.value, LegalHint.SUSPECTED.value
    )
    log.info(
        "classify: %d patches, %.0f m²; %d touch farmland, %d probably legal",
        len(out),
        area.sum(),
        int((out[P.FARMLAND_M2] > 0).sum()),
        int(probably_legal.sum()),
    )
    return out


def overlay_union_areas(patches, overlay, crs) -> np.ndarray:
    """Ellipsoidal area (m²) of the union of ``overlay`` inside each of ``patches``.

    ``patches`` and ``overlay`` are arrays of polygons in ``crs``. See :func:`_overlay`.
    """
    return _overlay(np.asarray(patches, dtype=object), overlay, crs)[0]


def code_matches(values: pd.Series, codes: Sequence[str]) -> np.ndarray:
    """Which ``values`` are one of ``codes`` (e.g. the 三调 DLBM of 耕地: 0101, 0102, 0103).

    Parameters
    ----------
    values
        A code column as read: text, integers or floats (a numeric DBF field), missing values.
    codes
        The codes to keep, as text.

    Returns
    -------
    ndarray of bool
        One per value.

    Notes
    -----
    Compared as text, after :func:`code_text`. A value of digits shorter than a code of
    digits matches it when left-padded with zeros to the code's length: a numeric field holds
    ``0101`` as ``101``, so ``101`` (and the text ``"101"``) match ``"0101"``. Longer values
    are never cut (``"010101"`` does not match ``"0101"``), letters must match exactly
    (``"0201K"`` is not ``"0201"``).
    """
    wanted = {str(c).strip() for c in codes}
    text = values.map(code_text).astype(object)
    hit = text.isin(wanted).to_numpy(dtype=bool).copy()
    digits = text.map(lambda t: t.isascii() and t.isdigit()).to_numpy(dtype=bool) & ~hit
    for width in sorted({len(c) for c in wanted if c.isascii() and c.isdigit()}):
        padded = text[digits].map(lambda t, w=width: t.zfill(w))
        hit[np.flatnonzero(digits)] |= padded.isin(wanted).to_numpy(dtype=bool)
    return hit


def code_text(value) -> str:
    """A code as text: numbers with an integral value without ``.0``, text stripped, ``""``
    for missing values."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


# --------------------------------------------------------------------------- helpers
def ellipsoidal_areas_m2(geoms, crs) -> np.ndarray:
    """Ellipsoidal area (m²) of each geometry (see :func:`pipeline.units.geodesic_areas_m2`)."""
    return geodesic_areas_m2(geoms, crs)


def _overlay(geoms: np.ndarray, layer, crs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union area of ``layer`` inside each patch, and the (patch, polygon) pairs with area.

    Steps: ``STRtree.query(predicate="intersects")`` → vectorised ``shapely.intersection`` on
    the pairs (a polygon covering the whole patch contributes the patch itself) → per patch,
    the union of its pieces (``union_all`` along the rows of a padded array, only for
    patches with several pieces) → ellipsoidal area.
    """
    n = len(geoms)
    empty_pairs = np.zeros(0, dtype=np.intp)
    if layer is None or len(layer) == 0 or n == 0:
        return np.zeros(n), empty_pairs, empty_pairs
    if isinstance(layer, gpd.GeoDataFrame | gpd.GeoSeries):
        others = np.asarray(layer.geometry.values, dtype=object)
    else:
        others = np.asarray(layer, dtype=object)
    valid = ~(shapely.is_missing(others) | shapely.is_empty(others))
    tree = shapely.STRtree(np.where(valid, others, None))
    pi, oi = tree.query(geoms, predicate="intersects")
    if len(pi) == 0:
        return np.zeros(n), empty_pairs, empty_pairs
    shapely.prepare(others[valid])
    pieces = np.empty(len(pi), dtype=object)
    covered = shapely.covers(others[oi], geoms[pi])
    pieces[covered] = geoms[pi[covered]]
    rest = ~covered
    pieces[rest] = shapely.intersection(geoms[pi[rest]], others[oi[rest]])
    # keep pairs that share area (touching neighbours give lines or points)
    has_area = shapely.area(pieces) > 0
    pi, oi, pieces = pi[has_area], oi[has_area], pieces[has_area]
    unions = union_by_group(pieces, pi, n)
    return ellipsoidal_areas_m2(unions, crs), pi, oi


def union_by_group(pieces: np.ndarray, groups: np.ndarray, n: int) -> np.ndarray:
    """Union of the pieces of each group ``0..n-1`` (empty polygon for groups without one).

    Groups of one piece are taken as they are; larger groups are padded with ``None`` into
    2-D arrays and reduced with ``shapely.union_all(axis=1)``, bucketed by size (powers of
    two) so one big group does not pad all the others.
    """
    out = np.full(n, shapely.Polygon(), dtype=object)
    if len(pieces) == 0:
        return out
    order = np.argsort(groups, kind="stable")
    groups, pieces = groups[order], pieces[order]
    ids, starts, counts = np.unique(groups, return_index=True, return_counts=True)
    single = counts == 1
    out[ids[single]] = pieces[starts[single]]
    rank = np.arange(len(groups)) - np.repeat(starts, counts)  # position inside its group
    width = 2 ** np.ceil(np.log2(np.maximum(counts, 2))).astype(int)
    member_width = np.repeat(width, counts)
    for w in np.unique(width[~single]):
        rows = ids[(width == w) & ~single]
        sel = (member_width == w) & np.isin(groups, rows)
        row_of = np.searchsorted(rows, groups[sel])
        grid = np.full((len(rows), w), None, dtype=object)
        grid[row_of, rank[sel]] = pieces[sel]
        out[rows] = shapely.union_all(grid, axis=1)
    return out


def _join_refs(pi: np.ndarray, docs: np.ndarray, n: int) -> np.ndarray:
    text = pd.Series(docs, dtype=object).map(_ref_text)
    frame = pd.DataFrame({"patch": pi, "ref": text})
    frame = frame[frame["ref"] != ""].drop_duplicates().sort_values(["patch", "ref"])
    joined = frame.groupby("patch")["ref"].agg(REFS_SEPARATOR.join)
    refs = np.full(n, "", dtype=object)
    refs[joined.index.to_numpy()] = joined.to_numpy()
    return refs


def _ref_text(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _truthy(values: pd.Series) -> np.ndarray:
    """Booleans from a flag column: true/false, non-zero numbers, or text like "是"/"yes"."""
    if pd.api.types.is_bool_dtype(values):
        return values.fillna(False).to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(values):
        return (values.fillna(0) != 0).to_numpy()
    text = values.map(lambda v: "" if v is None or v is pd.NA else str(v).strip().lower())
    return text.isin(TRUE_TEXT).to_numpy()


def _check_field(layer: gpd.GeoDataFrame, field: str, name: str, key: str) -> None:
    if field not in layer.columns:
        found = [str(c) for c in layer.columns if c != layer.geometry.name]
        raise InputDataError(
            f"{name} layer has no field {field!r} (layers.{name}.{key}); the layer has fields: "
            f"{', '.join(found) or 'none'}. Fix layers.{name}.{key} in config.yaml"
        )


def _in_crs(layer: gpd.GeoDataFrame | None, crs, name: str) -> gpd.GeoDataFrame | None:
    if layer is None:
        return None
    if layer.crs is None:
        log.warning("%s layer has no CRS; assuming the detections' CRS %s", name, crs)
        return layer.set_crs(crs)
    if not layer.crs.equals(pyproj.CRS(crs)):
        return layer.to_crs(crs)
    return layer
