"""Hand each patch to its township and village (pure).

A patch goes to the village holding the largest part of its area (``majority``), and the
shares of every village it touches are recorded; or it is cut into one part per village
(``split``). A patch outside every village is ``unassigned`` — never dropped.
"""

from __future__ import annotations

import json
import logging
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely

from pipeline.config import AssignConfig
from pipeline.errors import ConfigError, GridError
from pipeline.overlay.classify import union_by_group
from pipeline.schema import PART, PART_OF, UNASSIGNED, UNASSIGNED_NAME, G, P
from pipeline.units import MU_M2, geodesic_areas_m2

log = logging.getLogger(__name__)

__all__ = ["assign_patches"]

SHARE_DECIMALS = 4

OVERLAY_COLUMNS = (
    P.FARMLAND_M2,
    P.BASIC_FARMLAND_M2,
    P.APPROVED_M2,
    P.APPROVED_SHARE,
    P.APPROVAL_REFS,
    P.LEGAL_HINT,
)
"""Columns of ``classify`` that no longer hold for a part; dropped in split mode."""


def assign_patches(
    patches: gpd.GeoDataFrame,
    villages: gpd.GeoDataFrame,
    townships: gpd.GeoDataFrame | None,
    *,
    mode: Literal["majority", "split"] = "majority",
    min_part_m2: float = 1.0,
    cfg: AssignConfig | None = None,
) -> gpd.GeoDataFrame:
    """Township and village of each patch.

    Parameters
    ----------
    patches
        Patch polygons (any other columns are kept).
    villages
        Village grid with ``code``, ``name``, ``township_code`` (:class:`schema.G`), e.g.
        :attr:`pipeline.overlay.admin_grid.Grids.villages`.
    townships
        Township grid with ``code`` and ``name`` (gives the township names), or ``None``.
    mode
        ``"majority"``: one row per patch, given to the village holding most of its area.
        ``"split"``: one row per (patch, village) part.
    min_part_m2
        Split mode: parts smaller than this (ellipsoidal m²) are merged into the majority part.
    cfg
        The ``assign`` config section; when given, its ``mode`` and ``min_part_m2`` are used.

    Returns
    -------
    GeoDataFrame
        A copy with ``township_code``, ``township_name``, ``village_code``, ``village_name``,
        ``village_share`` (share of the patch in its village) and ``village_shares`` (JSON text
        ``{"code": share, ...}`` of every village the patch shares area with, largest first,
        shares rounded to 4 decimals). Majority mode keeps the index and the row order.

    Raises
    ------
    GridError
        ``villages`` lacks ``code``, ``name`` or ``township_code``.
    ConfigError
        ``mode`` is not ``majority`` or ``split``.

    Notes
    -----
    *Unassigned*: a patch touching no village gets ``schema.UNASSIGNED`` as township and
    village code, ``"未分配 (unassigned)"`` as name, share 0 and ``{}``. A patch partly in a
    grid gap still goes to its majority village; its share < 1 records the gap. Equal
    shares go to the smaller village code (deterministic).

    *Shares* are ratios of planar areas in the patches' CRS (use the projected target CRS;
    the scale factor cancels in a ratio). Villages in another CRS are reprojected.

    *Split mode* cuts along village boundaries; where villages overlap, the overlap goes to
    the village with the larger part. The piece of the patch outside every village becomes
    an unassigned part, unless it is smaller than ``min_part_m2``. The parts' areas sum to
    the patch area. Each part carries ``part_of`` (the patch's index label), ``part``
    (1 = majority part), ``village_share`` (its share of the patch), the patch's
    ``village_shares``, and ``area_m2``/``area_mu`` recomputed on the ellipsoid.
    Farmland/approval overlaps cannot be apportioned by area, so split mode must run
    **before** :func:`pipeline.overlay.classify.classify_patches` (classify the parts); overlay
    columns already present are dropped with a warning.
    """
    if cfg is not None:
        mode, min_part_m2 = cfg.mode, cfg.min_part_m2
    if mode not in ("majority", "split"):
        raise ConfigError(f"assign: mode {mode!r} is not allowed (allowed: majority, split)")
    _check_grid(villages, "village", (G.CODE, G.NAME, G.TOWNSHIP_CODE))
    if townships is not None:
        _check_grid(townships, "township", (G.CODE, G.NAME))
    if (
        patches.crs is not None
        and villages.crs is not None
        and not villages.crs.equals(pyproj.CRS(patches.crs))
    ):
        villages = villages.to_crs(patches.crs)

    pgeoms = np.asarray(patches.geometry.values, dtype=object)
    vgeoms = np.asarray(villages.geometry.values, dtype=object)
    pi, vi, pieces, inter = _pieces(pgeoms, vgeoms)
    parea = shapely.area(pgeoms)
    vcodes = villages[G.CODE].to_numpy(dtype=object)

    # per (patch, village code): duplicate village codes add up
    pairs = pd.DataFrame({"p": pi, "code": vcodes[vi], "v": vi, "a": inter})
    per_code = pairs.groupby(["p", "code"], sort=False, as_index=False).agg(
        a=("a", "sum"), v=("v", "first")
    )
    per_code["share"] = per_code["a"].to_numpy() / parea[per_code["p"].to_numpy()]
    per_code = per_code.sort_values(["p", "a", "code"], ascending=[True, False, True])
    shares_json = _shares_json(per_code, len(patches))
    best = per_code.drop_duplicates("p")  # first = largest area per patch

    village_of = np.full(len(patches), -1, dtype=np.intp)
    village_of[best["p"].to_numpy()] = best["v"].to_numpy()
    share = np.zeros(len(patches))
    share[best["p"].to_numpy()] = best["share"].to_numpy()

    if mode == "majority":
        out = patches.copy()
        _set_units(out, villages, townships, village_of)
        out[P.VILLAGE_SHARE] = np.minimum(share, 1.0)
        out[P.VILLAGE_SHARES] = shares_json
    else:
        out = _split(patches, villages, townships, pi, vi, pieces, inter, min_part_m2)
        out[P.VILLAGE_SHARES] = shares_json[out[PART_OF + "_pos"].to_numpy()]
        out = out.drop(columns=PART_OF + "_pos")

    n_unassigned = int((out[P.VILLAGE_CODE] == UNASSIGNED).sum())
    if n_unassigned:
        log.warning("assign: %d of %d rows are outside every village", n_unassigned, len(out))
    log.info("assign (%s): %d patches -> %d rows", mode, len(patches), len(out))
    return out


# --------------------------------------------------------------------------- helpers
def _pieces(
    pgeoms: np.ndarray, vgeoms: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(patch, village) index pairs sharing area, the shared pieces and their planar areas.

    One ``STRtree.query(predicate="intersects")``; where the village covers the patch (the
    common case) the piece is the patch itself and no intersection is computed.
    """
    tree = shapely.STRtree(vgeoms)
    pi, vi = tree.query(pgeoms, predicate="intersects")
    pieces = np.empty(len(pi), dtype=object)
    if len(pi):
        shapely.prepare(vgeoms)
        covered = shapely.covers(vgeoms[vi], pgeoms[pi])
        pieces[covered] = pgeoms[pi[covered]]
        rest = ~covered
        pieces[rest] = shapely.intersection(pgeoms[pi[rest]], vgeoms[vi[rest]])
    inter = shapely.area(pieces) if len(pi) else np.zeros(0)
    keep = inter > 0  # touching-only neighbours share no area
    return pi[keep], vi[keep], pieces[keep], inter[keep]


def _shares_json(per_code: pd.DataFrame, n: int) -> np.ndarray:
    """``{"code": share, ...}`` per patch from rows sorted by patch, largest share first."""
    out = np.full(n, "{}", dtype=object)
    if len(per_code) == 0:
        return out
    codes = per_code["code"].map(lambda c: json.dumps(str(c), ensure_ascii=False))
    values = np.round(np.minimum(per_code["share"].to_numpy(), 1.0), SHARE_DECIMALS)
    items = (codes + ": " + pd.Series(values, index=per_code.index).map(repr)).to_numpy()
    groups = per_code["p"].to_numpy()  # sorted
    starts = np.r_[0, np.flatnonzero(groups[1:] != groups[:-1]) + 1]
    later = _rank_in_group(groups) > 0
    items[later] = ", " + items[later]
    joined = np.add.reduceat(items, starts)  # string concatenation within each patch
    out[groups[starts]] = "{" + joined + "}"
    return out


def _set_units(out, villages, townships, village_of: np.ndarray) -> None:
    """Write township/village code and name columns of ``out`` (``-1`` = unassigned)."""
    hit = village_of >= 0
    rows = village_of[hit]

    def column(values: np.ndarray) -> np.ndarray:
        col = np.full(len(village_of), UNASSIGNED, dtype=object)
        col[hit] = values[rows]
        return col

    tcode = column(villages[G.TOWNSHIP_CODE].to_numpy(dtype=object))
    names = {}
    if townships is not None:
        names = dict(townships.drop_duplicates(G.CODE)[[G.CODE, G.NAME]].itertuples(index=False))
    tname = np.array([names.get(c, "") for c in tcode], dtype=object)
    tname[tcode == UNASSIGNED] = UNASSIGNED_NAME
    vname = column(villages[G.NAME].to_numpy(dtype=object))
    vname[~hit] = UNASSIGNED_NAME
    missing = sorted({c for c in tcode[hit] if c not in names and c != UNASSIGNED})
    if missing:
        log.warning("assign: township code(s) not in the township layer: %s", ", ".join(missing))
    out[P.TOWNSHIP_CODE] = tcode
    out[P.TOWNSHIP_NAME] = tname
    out[P.VILLAGE_CODE] = column(villages[G.CODE].to_numpy(dtype=object))
    out[P.VILLAGE_NAME] = vname


def _check_grid(gdf: gpd.GeoDataFrame, name: str, columns) -> None:
    missing = [c for c in columns if c not in gdf.columns]
    if missing:
        raise GridError(
            f"assign: the {name} grid lacks column(s) {', '.join(missing)}; it has "
            f"{', '.join(map(str, gdf.columns))}. Load grids with pipeline.overlay.io.grid_layers.load_grids, "
            "which normalises the columns"
        )


def _sliver_areas(geoms: np.ndarray, crs) -> np.ndarray:
    """Areas (m²) to compare with ``min_part_m2``: planar in a projected CRS (within the
    scale factor, plenty for a sliver threshold), ellipsoidal otherwise."""
    if crs is not None and pyproj.CRS(crs).is_projected:
        return shapely.area(geoms)
    return geodesic_areas_m2(geoms, crs or "EPSG:4326")


def _rank_in_group(groups: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal values (``groups`` sorted)."""
    if len(groups) == 0:
        return np.zeros(0, dtype=np.intp)
    starts = np.r_[0, np.flatnonzero(groups[1:] != groups[:-1]) + 1]
    return np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))


def _split(patches, villages, townships, pi, vi, pieces, inter, min_part_m2: float):
    """One row per (patch, village) part; see :func:`assign_patches` Notes."""
    n = len(patches)
    pgeoms = np.asarray(patches.geometry.values, dtype=object)
    crs = patches.crs
    # rank the pieces of each patch: 0 = largest
    order = np.lexsort((vi, -inter, pi))
    pi, vi, pieces = pi[order], vi[order], pieces[order].copy()
    rank = _rank_in_group(pi)

    # make the pieces disjoint (villages may overlap): each rank loses what higher ranks took
    taken = np.full(n, None, dtype=object)
    first = rank == 0
    taken[pi[first]] = pieces[first]
    for r in range(1, int(rank.max(initial=0)) + 1):
        sel = rank == r
        pieces[sel] = shapely.difference(pieces[sel], taken[pi[sel]])
        taken[pi[sel]] = shapely.union(taken[pi[sel]], pieces[sel])

    # the piece of each patch outside every village (none where a village covers the patch)
    has_pair = np.zeros(n, dtype=bool)
    has_pair[pi] = True
    whole = np.zeros(n, dtype=bool)
    whole[pi[first]] = [a is b for a, b in zip(pieces[first], pgeoms[pi[first]])]  # covered
    rest = np.array(pgeoms, dtype=object)
    cut = has_pair & ~whole
    rest[whole] = shapely.Polygon()
    rest[cut] = shapely.difference(pgeoms[cut], taken[cut])
    rest_empty = shapely.is_empty(rest)

    # small pieces (and a small outside rest) join the majority piece of their patch
    small = (rank > 0) & (_sliver_areas(pieces, crs) < min_part_m2)
    rest_small = has_pair & ~rest_empty
    rest_small[rest_small] = _sliver_areas(rest[rest_small], crs) < min_part_m2
    merge_into = np.r_[pi[small], np.flatnonzero(rest_small)]
    if len(merge_into):
        grow = np.r_[pieces[small], rest[rest_small]]
        head_of = np.full(n, -1)
        head_of[pi[first]] = np.flatnonzero(first)  # position of each patch's majority piece
        targets = head_of[merge_into]
        heads = np.unique(targets)
        merged = union_by_group(np.r_[grow, pieces[heads]], np.r_[targets, heads], len(pieces))
        pieces[heads] = merged[heads]

    keep = ~small
    rest_part = ~has_pair | (~rest_empty & ~rest_small)
    part_patch = np.r_[pi[keep], np.flatnonzero(rest_part)]
    part_geom = np.r_[pieces[keep], rest[rest_part]]
    part_village = np.r_[vi[keep], np.full(rest_part.sum(), -1)]
    # per patch: pieces in rank order (majority first), then the unassigned rest
    order = np.argsort(part_patch, kind="stable")
    part_patch, part_geom, part_village = part_patch[order], part_geom[order], part_village[order]

    overlay = [c for c in OVERLAY_COLUMNS if c in patches.columns]
    if overlay:
        log.warning(
            "assign(split): dropping %s; split parts must be classified after assign "
            "(run classify_patches on the parts)",
            ", ".join(overlay),
        )
    out = patches.drop(columns=overlay).iloc[part_patch].copy()
    out[PART_OF] = patches.index.to_numpy()[part_patch]
    out[PART_OF + "_pos"] = part_patch
    out[PART] = _rank_in_group(part_patch) + 1
    out = out.set_geometry(np.asarray(part_geom, dtype=object), crs=crs)
    out.index = pd.RangeIndex(len(out))
    _set_units(out, villages, townships, part_village)
    parea = shapely.area(pgeoms)[part_patch]
    share = np.divide(shapely.area(part_geom), parea, out=np.zeros(len(out)), where=parea > 0)
    out[P.VILLAGE_SHARE] = np.where(part_village >= 0, np.minimum(share, 1.0), 0.0)
    area = geodesic_areas_m2(part_geom, crs)
    out[P.AREA_M2] = area
    out[P.AREA_MU] = area / MU_M2
    return out
