"""Change mask → patch polygons, merged seamlessly across block edges.

Per block, :func:`block_pieces` labels the cleaned mask's core (4-connectivity, the same as
:func:`rasterio.features.shapes` uses), polygonises the labels and sums per label the pixel
count, the score and each band of both epochs (``np.bincount``). :func:`merge_pieces` then
joins pieces that share an edge across a block boundary into one polygon and adds up their
sums, so patch means are exact whatever the block size.

Notes
-----
Polygons are built in *global pixel coordinates* (column, row of the target grid; integers),
so pieces from different blocks meet exactly and their union is clean. Convert them to map
coordinates once, at the end, with :func:`to_map`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

log = logging.getLogger(__name__)

SHARED_EDGE = "F***1****"
"""DE-9IM pattern: interiors disjoint, boundaries meet along a line (not only a point).
Pieces of one 4-connected component meet like this; diagonal neighbours only touch at a
point and stay separate, as in the whole-image labelling."""


@dataclass
class Pieces:
    """Polygons of one block (global pixel coordinates) and their per-label sums.

    ``sums`` columns: ``n_pixels``, ``score_sum``, then one column per band of epoch A, then
    one per band of epoch B (raw values). ``on_edge`` marks pieces touching a block edge
    that has a neighbouring block (candidates for merging). ``peak``: the highest score of
    each piece (NaN when not asked for, see :attr:`PatchFilter.min_peak`).
    """

    geoms: np.ndarray
    sums: np.ndarray
    on_edge: np.ndarray
    peak: np.ndarray

    @classmethod
    def empty(cls, ncols: int) -> Pieces:
        return cls(
            np.empty(0, dtype=object),
            np.zeros((0, ncols)),
            np.zeros(0, dtype=bool),
            np.zeros(0, dtype=np.float64),
        )


def sums_columns(band_names: Sequence[str]) -> list[str]:
    """Names of the :attr:`Pieces.sums` columns."""
    return (
        ["n_pixels", "score_sum"]
        + [f"sum_from_{b}" for b in band_names]
        + [f"sum_to_{b}" for b in band_names]
    )


@dataclass(frozen=True)
class PatchFilter:
    """The patch filters of the detect stage, applied to whole patches.

    A patch is kept when ``n_pixels * pixel_area_m2 >= min_area_m2``; with
    ``min_mean_score`` set, ``score_sum / n_pixels >= min_mean_score`` (already multiplied by
    the cut); with ``min_peak`` set, its highest score ``> min_peak`` (hysteresis: the patch
    was drawn at the low cut and needs one pixel above the threshold). :func:`block_pieces`
    applies it to the pieces that are whole patches (not on a block edge), the engine to the
    merged ones — the same expressions, so the result does not depend on where a patch was
    completed.
    """

    pixel_area_m2: float
    min_area_m2: float
    min_mean_score: float | None = None
    min_peak: float | None = None

    def too_small(self, n_pixels: np.ndarray) -> np.ndarray:
        return n_pixels * self.pixel_area_m2 < self.min_area_m2

    def keep(
        self, n_pixels: np.ndarray, score_sum: np.ndarray, peak: np.ndarray | None = None
    ) -> np.ndarray:
        keep = ~self.too_small(n_pixels)
        if self.min_mean_score is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                keep &= score_sum / n_pixels >= self.min_mean_score
        if self.min_peak is not None:
            if peak is None:
                raise ValueError("PatchFilter with min_peak needs the patches' peak scores")
            keep &= peak > self.min_peak
        return keep


@dataclass
class BlockPieces:
    """:func:`block_pieces` output: the pieces, the core mask without the dropped patches,
    and how many whole patches each filter dropped."""

    pieces: Pieces
    mask: np.ndarray
    n_small: int = 0
    n_low_score: int = 0


def block_pieces(
    mask: np.ndarray,
    score: np.ndarray,
    data_a: np.ndarray,
    data_b: np.ndarray,
    row_off: int,
    col_off: int,
    grid_shape: tuple[int, int],
    patch_filter: PatchFilter | None = None,
) -> BlockPieces:
    """Polygons and per-label sums of the change mask of one block core (halo cropped).

    Parameters
    ----------
    mask : ndarray bool (h, w)
        Cleaned change mask of the core.
    score : ndarray float32 (h, w)
    data_a, data_b : ndarray (nbands, h, w)
        Raw values of both epochs on the core.
    row_off, col_off : int
        Global position of the core on the target grid.
    grid_shape : (height, width)
        Of the target grid; edges of the grid are not merge candidates.
    patch_filter : PatchFilter, optional
        Drop the pieces that are whole patches (not touching an edge shared with another
        block) and fail the filter *before* polygonising them: most components of a real
        change mask are specks below the minimum area, and building their polygons was the
        costliest step of the block. Pieces on a shared edge are kept for merging.

    Returns
    -------
    BlockPieces
        ``mask`` is the input mask without the dropped patches (the input itself when
        nothing was dropped).
    """
    nb = data_a.shape[0]
    ncols = 2 + 2 * nb
    labels, n = ndimage.label(mask)  # default structure: 4-connectivity
    if n == 0:
        return BlockPieces(Pieces.empty(ncols), mask)
    labels = labels.astype(np.int32, copy=False)
    # sums over the labelled pixels only (masks are sparse): same pixels, same order, so the
    # same float64 sums as over the whole block, without whole-block float64 temporaries
    where = np.nonzero(labels)  # row-major, like ravel(); works on non-contiguous views
    flat = labels[where]
    count = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    values = score[where]
    score_sum = np.bincount(flat, weights=values, minlength=n + 1)[1:]
    peak = np.full(n + 1, np.nan)
    if patch_filter is not None and patch_filter.min_peak is not None:
        peak[1:] = -np.inf
        np.maximum.at(peak, flat, values.astype(np.float64))
    peak = peak[1:]

    h, w = mask.shape
    edge = np.zeros(n + 1, dtype=bool)
    if row_off > 0:
        edge[labels[0]] = True
    if row_off + h < grid_shape[0]:
        edge[labels[-1]] = True
    if col_off > 0:
        edge[labels[:, 0]] = True
    if col_off + w < grid_shape[1]:
        edge[labels[:, -1]] = True
    edge = edge[1:]

    n_small = n_low = 0
    if patch_filter is not None:
        small = ~edge & patch_filter.too_small(count)
        keep = edge | patch_filter.keep(count, score_sum, peak)
        n_small = int(np.count_nonzero(small))
        n_low = int(np.count_nonzero(~keep)) - n_small
        if not keep.all():
            # renumber the kept labels 1..k (in label order), dropped ones become 0
            lut = np.zeros(n + 1, dtype=np.int32)
            lut[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
            sel = lut[flat] > 0
            where = (where[0][sel], where[1][sel])
            flat = lut[flat][sel]
            labels = lut[labels]
            mask = labels > 0
            count, score_sum, edge, peak = count[keep], score_sum[keep], edge[keep], peak[keep]
            n = len(count)
            if n == 0:
                return BlockPieces(Pieces.empty(ncols), mask, n_small, n_low)

    sums = np.empty((n, ncols), dtype=np.float64)
    sums[:, 0] = count
    sums[:, 1] = score_sum
    for k, data in enumerate((data_a, data_b)):
        for i in range(nb):
            wts = data[i][where].astype(np.float64)
            sums[:, 2 + k * nb + i] = np.bincount(flat, weights=wts, minlength=n + 1)[1:]

    transform = Affine.translation(col_off, row_off)
    geoms = np.empty(n, dtype=object)
    found = [
        (int(value) - 1, shapely.geometry.shape(geom))
        for geom, value in shapes(labels, mask=labels > 0, connectivity=4, transform=transform)
    ]
    idx = np.array([i for i, _ in found])
    polys = np.array([g for _, g in found], dtype=object)
    if len(np.unique(idx)) == len(idx):
        geoms[idx] = polys
    else:  # one label in several polygons should not happen with 4-connectivity; be safe
        for i in np.unique(idx):
            geoms[i] = shapely.union_all(polys[idx == i])
    return BlockPieces(Pieces(geoms, sums, edge, peak), mask, n_small, n_low)


def merge_pieces(pieces: Sequence[Pieces]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Join pieces that share an edge across block boundaries.

    Returns
    -------
    geoms : ndarray of Polygon
        One per connected patch (global pixel coordinates).
    sums : ndarray float64 (n, ncols)
        Summed per-label sums (see :class:`Pieces`).
    peak : ndarray float64 (n,)
        The highest piece peak of each patch.

    Notes
    -----
    Candidate pairs come from one :meth:`shapely.STRtree.query` with
    ``predicate="touches"``, kept if they share an edge (:data:`SHARED_EDGE`); groups are the
    connected components of that graph (so a patch over four blocks is one group), each
    dissolved with :func:`shapely.union_all`. Output geometries are canonical (collinear
    vertices removed, :func:`shapely.normalize`), so equal patches have equal coordinates.
    """
    ncols = pieces[0].sums.shape[1] if len(pieces) else 2
    pieces = [p for p in pieces if len(p.geoms)]
    if not pieces:
        return np.empty(0, dtype=object), np.zeros((0, ncols)), np.zeros(0)
    geoms = np.concatenate([p.geoms for p in pieces])
    sums = np.concatenate([p.sums for p in pieces])
    peaks = np.concatenate([p.peak for p in pieces])
    on_edge = np.concatenate([p.on_edge for p in pieces])
    n = len(geoms)
    cand = np.flatnonzero(on_edge)
    group = np.arange(n)
    if len(cand) > 1:
        tree = shapely.STRtree(geoms[cand])
        left, right = tree.query(geoms[cand], predicate="touches")
        keep = left < right
        left, right = left[keep], right[keep]
        shared = shapely.relate_pattern(geoms[cand][left], geoms[cand][right], SHARED_EDGE)
        left, right = cand[left[shared]], cand[right[shared]]
        graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
        _, group = connected_components(graph, directed=False)
    order = np.argsort(group, kind="stable")
    uniq, start, counts = np.unique(group[order], return_index=True, return_counts=True)
    out_sums = np.add.reduceat(sums[order], start, axis=0)
    out_peak = np.fmax.reduceat(peaks[order], start)
    out_geoms = np.empty(len(uniq), dtype=object)
    single = counts == 1
    out_geoms[single] = geoms[order[start[single]]]
    for k in np.flatnonzero(~single):  # one union per merged patch, not per pair
        out_geoms[k] = shapely.union_all(geoms[order[start[k] : start[k] + counts[k]]])
    # canonical form: drop the collinear vertices left on former block seams, fixed ring
    # order and start point -> the same patch gives the same coordinates whatever the blocks
    out_geoms = shapely.normalize(shapely.simplify(out_geoms, 0.0))
    bad = ~shapely.is_valid(out_geoms)
    if bad.any():
        log.warning("repairing %d invalid merged polygons", int(bad.sum()))
        out_geoms[bad] = shapely.make_valid(out_geoms[bad])
    return out_geoms, out_sums, out_peak


def to_map(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Geometries in global pixel coordinates → map coordinates of the grid ``transform``."""
    t = transform
    matrix = np.array([[t.a, t.d], [t.b, t.e]])
    offset = np.array([t.c, t.f])
    return shapely.transform(geoms, lambda xy: xy @ matrix + offset)
