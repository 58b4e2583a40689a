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

PACK_CELL_PX = 16
"""Cell size (px) of the occupancy grid that groups a block's patches for polygonising
(:func:`_polygonise`)."""
PACK_MAX_GROUPS = 1024
"""Above this many groups, or when their boxes cover more than :data:`PACK_MAX_SHARE` of the
core, the core is polygonised whole (packing would not pay)."""
PACK_MAX_SHARE = 0.7
"""See :data:`PACK_MAX_GROUPS`."""
PACK_WIDTH_DIVISORS = (1, 2, 3, 4, 6, 8, 12, 16)
"""Canvas widths :func:`pack_boxes` tries: the block width divided by these."""


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
    h, w = mask.shape
    # the labelled pixels only (masks are sparse), row-major like ravel()
    pixels = np.flatnonzero(mask)
    flat, n = label_pixels(pixels, w)  # 4-connectivity, numbered as scipy.ndimage.label
    if n == 0:
        return BlockPieces(Pieces.empty(ncols), mask)
    rows, cols = np.divmod(pixels, w)
    values = score.reshape(-1)[pixels] if score.flags.c_contiguous else score[rows, cols]
    count = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    score_sum = np.bincount(flat, weights=values, minlength=n + 1)[1:]
    peak = np.full(n + 1, np.nan)
    if patch_filter is not None and patch_filter.min_peak is not None:
        peak[1:] = -np.inf
        np.maximum.at(peak, flat, values.astype(np.float64))
    peak = peak[1:]

    edge = np.zeros(n + 1, dtype=bool)
    if row_off > 0:
        edge[flat[rows == 0]] = True
    if row_off + h < grid_shape[0]:
        edge[flat[rows == h - 1]] = True
    if col_off > 0:
        edge[flat[cols == 0]] = True
    if col_off + w < grid_shape[1]:
        edge[flat[cols == w - 1]] = True
    edge = edge[1:]

    n_small = n_low = 0
    if patch_filter is not None:
        small = ~edge & patch_filter.too_small(count)
        keep = edge | patch_filter.keep(count, score_sum, peak)
        n_small = int(np.count_nonzero(small))
        n_low = int(np.count_nonzero(~keep)) - n_small
        if not keep.all():
            lut = np.zeros(n + 1, dtype=np.int32)  # old label -> kept label 1..k, 0 = dropped
            lut[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
            new = lut[flat]
            kept = new > 0
            mask = mask.copy()
            mask[rows[~kept], cols[~kept]] = False
            rows, cols, flat, values = rows[kept], cols[kept], new[kept], values[kept]
            count, score_sum, edge, peak = count[keep], score_sum[keep], edge[keep], peak[keep]
            n = len(count)
            if n == 0:
                return BlockPieces(Pieces.empty(ncols), mask, n_small, n_low)

    sums = np.empty((n, ncols), dtype=np.float64)
    sums[:, 0] = count
    sums[:, 1] = score_sum
    sums[:, 2:] = _band_sums(flat, n, [data[:, rows, cols] for data in (data_a, data_b)])
    geoms = _polygonise((h, w), rows, cols, flat, n, row_off, col_off)
    return BlockPieces(Pieces(geoms, sums, edge, peak), mask, n_small, n_low)


def label_pixels(pixels: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """4-connected component labels of the set pixels of a mask ``width`` px wide.

    Parameters
    ----------
    pixels : ndarray int (m,)
        Flat (row-major) indices of the set pixels, increasing (:func:`numpy.flatnonzero`).
    width : int
        Of the mask.

    Returns
    -------
    labels : ndarray int32 (m,)
        The label of each pixel, 1..n, numbered in the order of each component's first
        pixel in row-major order — the labels :func:`scipy.ndimage.label` gives them.
    n : int
        Number of components.

    Notes
    -----
    Works on the runs of consecutive set pixels in a row, not on the image: a change mask
    sets ~1 % of a block's pixels, and labelling the whole block (an int32 image) was half
    of the cost of :func:`block_pieces`. Runs of neighbouring rows join when their column
    ranges overlap (4-connectivity); the components of that graph are the patches.
    """
    if pixels.size == 0:
        return np.zeros(0, dtype=np.int32), 0
    brk = np.flatnonzero((np.diff(pixels) != 1) | (pixels[1:] % width == 0)) + 1
    starts = np.concatenate(([0], brk))
    lengths = np.diff(np.concatenate((starts, [pixels.size])))
    first = pixels[starts]
    row, c0 = np.divmod(first, width)
    c1 = c0 + lengths
    # runs are ordered by (row, c0), so both keys below increase; a key counts w + 1
    # per row so that c1 = width stays inside its row
    stride = width + 1
    key_start, key_end = row * stride + c0, row * stride + c1
    # the runs of the next row that overlap [c0, c1): from the first ending after c0 to the
    # last starting before c1
    lo = np.searchsorted(key_end, (row + 1) * stride + c0, side="right")
    hi = np.searchsorted(key_start, (row + 1) * stride + c1, side="left")
    cnt = np.maximum(hi - lo, 0)
    nr = starts.size
    src = np.repeat(np.arange(nr), cnt)
    dst = np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(src.size)
    graph = coo_matrix((np.ones(src.size, dtype=np.int8), (src, dst)), shape=(nr, nr))
    n, comp = connected_components(graph, directed=False)
    # runs are in row-major order: a component's first run holds its first pixel
    first_run = np.full(n, nr, dtype=np.int64)
    np.minimum.at(first_run, comp, np.arange(nr))
    rank = np.empty(n, dtype=np.int32)
    rank[np.argsort(first_run)] = np.arange(1, n + 1, dtype=np.int32)
    return np.repeat(rank[comp], lengths), int(n)


def _band_sums(flat: np.ndarray, n: int, values: Sequence[np.ndarray]) -> np.ndarray:
    """Per-label sums (n, total bands) of ``values`` ((bands, m) each, one column per labelled
    pixel, labels ``flat`` in 1..n), in float64: one :func:`numpy.bincount` per band, each
    summing in pixel order (4× faster than one sparse product over a stacked copy)."""
    out = np.empty((n, sum(v.shape[0] for v in values)), dtype=np.float64)
    k = 0
    for v in values:
        for row in v:
            out[:, k] = np.bincount(flat, weights=row, minlength=n + 1)[1:]
            k += 1
    return out


def pack_boxes(
    sizes: Sequence[tuple[int, int]], max_width: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """Non-overlapping places for boxes of ``sizes`` ((height, width) each) on a small canvas.

    Returns (the (row, col) of each box, (canvas height, canvas width)). Shelf packing
    (next fit, tallest first) tried at a few canvas widths from ``max_width`` down to the
    widest box; the smallest canvas wins. One tall box on a full-width canvas would make the
    canvas as large as the block, a narrower one packs to within ~15 % of the boxes' area.
    """
    order = sorted(range(len(sizes)), key=lambda k: (-sizes[k][0], k))  # tallest first
    widest = max(ww for _, ww in sizes)
    best: tuple[list[tuple[int, int]], tuple[int, int]] | None = None
    for cw in sorted({max(widest, max_width // d) for d in PACK_WIDTH_DIVISORS}):
        place = [(0, 0)] * len(sizes)
        y = x = shelf = 0
        for k in order:
            hh, ww = sizes[k]
            if x + ww > cw:
                y, x, shelf = y + shelf, 0, 0
            place[k] = (y, x)
            x += ww
            shelf = max(shelf, hh)
        if best is None or (y + shelf) * cw < best[1][0] * best[1][1]:
            best = place, (y + shelf, cw)
    return np.array(best[0], dtype=np.int64).reshape(-1, 2), best[1]


def _polygonise(
    shape: tuple[int, int],
    rows: np.ndarray,
    cols: np.ndarray,
    flat: np.ndarray,
    n: int,
    row_off: int,
    col_off: int,
) -> np.ndarray:
    """Polygons (global pixel coordinates) of the labels 1..n of one ``shape`` block core,
    from its labelled pixels ``rows, cols`` and their labels ``flat``.

    Notes
    -----
    GDAL's polygoniser costs about the same per pixel scanned whether it is empty or not, so
    scanning the whole core spent most of the time on empty ground. The pixels are
    grouped instead by the connected components of the :data:`PACK_CELL_PX` cells they occupy
    (a patch lies inside one group's box), the group boxes are packed into one smaller
    canvas (:func:`pack_boxes`), polygonised in ONE :func:`rasterio.features.shapes` call (a call
    has a fixed cost) and moved back by their box's offset — integer shifts, so the
    coordinates are those the whole-core call gives. When the boxes would cover most of the
    core anyway, the core is polygonised as it is.
    """
    h, w = shape
    cell_r, cell_c = rows // PACK_CELL_PX, cols // PACK_CELL_PX
    occupied = np.zeros((-(-h // PACK_CELL_PX), -(-w // PACK_CELL_PX)), dtype=bool)
    occupied[cell_r, cell_c] = True
    group, n_groups = ndimage.label(occupied)
    pixel_group = group[cell_r, cell_c]  # 1..n_groups
    group_of = np.zeros(n + 1, dtype=np.int32)  # label -> its group
    group_of[flat] = pixel_group
    boxes = [
        (
            sr.start * PACK_CELL_PX,
            min(sr.stop * PACK_CELL_PX, h),
            sc.start * PACK_CELL_PX,
            min(sc.stop * PACK_CELL_PX, w),
        )
        for sr, sc in ndimage.find_objects(group)
    ]
    box_area = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in boxes)
    if n_groups > PACK_MAX_GROUPS or box_area > PACK_MAX_SHARE * h * w:
        canvas = np.zeros((h, w), dtype=np.int32)
        canvas[rows, cols] = flat
        shift = None
    else:
        sizes = [(r1 - r0, c1 - c0) for r0, r1, c0, c1 in boxes]
        place, (canvas_h, canvas_w) = pack_boxes(sizes, w)
        # every pixel moves with its group's box: canvas = box place + offset in the box
        box_origin = np.array([(b[0], b[2]) for b in boxes], dtype=np.int64)
        move = place - box_origin  # (dy, dx) per group
        canvas = np.zeros((canvas_h, canvas_w), dtype=np.int32)
        g = pixel_group - 1
        canvas[rows + move[g, 0], cols + move[g, 1]] = flat
        # canvas -> core offset of each label, through its group's box
        shift = np.zeros((n + 1, 2), dtype=np.float64)
        shift[1:] = -move[group_of[1:] - 1][:, ::-1]  # (dx, dy)
    found = list(shapes(canvas, mask=canvas > 0, connectivity=4))
    idx = np.array([int(value) for _, value in found], dtype=np.int64)
    polys = np.array([shapely.geometry.shape(geom) for geom, _ in found], dtype=object)
    offset = np.array([col_off, row_off], dtype=np.float64)
    if len(polys):
        coords, which = shapely.get_coordinates(polys, return_index=True)
        coords += offset if shift is None else offset + shift[idx[which]]
        polys = shapely.set_coordinates(polys, coords)
    geoms = np.empty(n, dtype=object)
    if len(np.unique(idx)) == len(idx):
        geoms[idx - 1] = polys
    else:  # one label in several polygons should not happen with 4-connectivity; be safe
        for i in np.unique(idx):
            geoms[i - 1] = shapely.union_all(polys[idx == i])
    return geoms


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
