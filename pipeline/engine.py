"""The two-pass blockwise driver: align + detect + vectorize one epoch pair.

Pass 1 samples every block (every ``sample_step``-th global row and column) for the global
normalisation statistics and the threshold. Pass 2 processes every block with a halo: read
both epochs onto the grid → score → threshold → refine edges → clean → crop the halo → return the score and
mask blocks plus polygon pieces with per-label sums. The driver writes the blocks into the
output rasters as they arrive and merges the pieces across block edges at the end.

Memory stays flat in the image size: the driver never holds a whole-image array, at most
``2 × workers`` blocks are in flight, and the pass-1 threshold sample is capped at
:data:`MAX_SCORE_SAMPLE` pixels.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio.windows import Window

from pipeline import detect
from pipeline.change_type import classify_change
from pipeline.config import Config
from pipeline.grid import TargetGrid, blocks, target_grid
from pipeline.imagery import EpochSource, check_bands, epoch_footprint, epoch_source, read_block
from pipeline.rasterio_out import RasterSpec, block_writers
from pipeline.schema import P
from pipeline.vectorize import Pieces, block_pieces, merge_pieces, sums_columns, to_map

log = logging.getLogger(__name__)

# Column names this stage adds beside the schema's (candidates for schema.py)
N_PIXELS = "n_pixels"
AREA_PX_M2 = "area_px_m2"
"""Pixel count × resolution² (planar, target CRS); classify adds the ellipsoidal area_m2."""


def mean_column(epoch_side: str, band: str) -> str:
    """Name of a per-patch mean band column: ``mean_from_red``, ``mean_to_nir``."""
    return f"mean_{epoch_side}_{band}"


SCORE_FILE = "score.tif"
MASK_FILE = "mask.tif"
MASK_CHANGE, MASK_NO_CHANGE, MASK_NODATA = 1, 0, 255
"""Values of ``mask.tif``: change, no change, invalid (nodata/masked in either epoch)."""
MAX_SCORE_SAMPLE = 2_000_000
"""Pixels in the pass-1 sample kept for the threshold (thinned regularly beyond this)."""
SCORE_COMPRESS = "ZSTD"
"""Compression of ``score.tif``: DEFLATE of a noisy float32 score is the slowest step of the
stage (≈ 20 s for 10240² on two cores); ZSTD level 1 is ~5× faster at the same size. ZSTD
GeoTIFFs need GDAL ≥ 2.3 (QGIS 3 has it); set "DEFLATE" for older readers."""
GROUP_PX = 3072
"""Pass 2 hands workers groups of blocks covering about this many pixels a side: within a
group the tiles a block's halo shares with its neighbours come from the worker's GDAL cache
instead of being decoded again (with 1024 px blocks and a 6 px halo over 512 px tiles, a
lone block decodes ~3.5× the tiles it needs)."""
SAMPLE_CELL_PX = 512
"""Pass 1 reads the scene in cells of this size (global pixel indices; the usual tile size
of the inputs, so a skipped cell is a tile never decoded)."""
PASS1_TARGET_SAMPLE = 1_000_000
"""Beyond this many regularly sampled pixels pass 1 reads only one cell in ``stride²``
(see :func:`sample_cell_stride`): the statistics are then still from ≥ this many pixels
spread over the whole scene, at a fraction of the decoding cost."""


@dataclass(frozen=True)
class DetectionResult:
    """Output of :func:`detect_pair`."""

    detections: gpd.GeoDataFrame
    score_path: Path
    mask_path: Path
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _BlockJob:
    """Everything a pass-2 worker needs (picklable)."""

    source_a: EpochSource
    source_b: EpochSource
    grid: TargetGrid
    method: str
    norm: detect.Normalisation
    cut: float
    hysteresis_low: float | None
    edge_ratio: float | None
    open_px: int
    close_px: int
    halo: int
    model: detect.NoveltyModel | None = None


@dataclass
class _BlockOutput:
    window: Window
    score: np.ndarray  # float32, NaN where invalid
    mask: np.ndarray  # uint8, MASK_* values
    pieces: Pieces


# --------------------------------------------------------------------------- public
def detect_pair(
    cfg: Config,
    pair: tuple[str, str],
    out_dir: Path,
    executor: Executor,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> DetectionResult:
    """Detect changes between the epochs ``pair = (from_label, to_label)``.

    Parameters
    ----------
    cfg : Config
        Uses ``area``, ``imagery``, ``detect`` and ``run.workers`` (blocks in flight).
    pair : (str, str)
        Epoch labels, before and after.
    out_dir : Path
        Receives ``score.tif`` and ``mask.tif`` (COGs, written atomically).
    executor : concurrent.futures.Executor
        From :func:`pipeline.executor.make_executor`.
    progress : callable, optional
        Called as ``progress(done, total)`` as pass-2 blocks complete (for progress bars).

    Returns
    -------
    DetectionResult
        ``detections``: GeoDataFrame in the target CRS, one row per patch with
        ``epoch_from``, ``epoch_to``, ``score`` (mean), ``change_type``, ``n_pixels``,
        ``area_px_m2``, ``mean_from_<band>``, ``mean_to_<band>`` and ``geometry``, sorted by
        centroid y then x (ascending). ``stats``: threshold, normalisation, counts, timings.

    Raises
    ------
    ConfigError
        The method needs a band that is not configured, or is not implemented.
    InputDataError
        Missing/unreadable imagery, epochs that do not overlap, no valid pixels.

    Notes
    -----
    Results do not depend on ``detect.block_px``: statistics are global, sampling is on
    global pixel indices, the clean-up halo covers the opening and closing reach, and
    patches are merged across block edges before ``min_area_m2`` is applied.
    """
    d = cfg.detect
    out_dir = Path(out_dir)
    label_a, label_b = pair
    source_a = epoch_source(cfg.imagery, label_a)
    source_b = epoch_source(cfg.imagery, label_b)
    bands = source_a.band_names
    if d.method in ("index", "novelty"):
        check_bands(bands, detect.INDEX_BANDS, f"'detect.method' = {d.method!r}")
    grid = target_grid(cfg.area, [epoch_footprint(source_a), epoch_footprint(source_b)])
    windows = blocks(grid, d.block_px)
    in_flight = max(2, 2 * cfg.run.workers)
    timings: dict[str, float] = {}
    log.info("%s→%s: %d blocks of ≤%d px", label_a, label_b, len(windows), d.block_px)

    # ---- pass 1: global statistics and threshold from a regular sample
    t0 = time.perf_counter()
    n_sample_est = math.ceil(grid.height / d.sample_step) * math.ceil(grid.width / d.sample_step)
    cell_stride = sample_cell_stride(n_sample_est)
    n_sample_est = math.ceil(n_sample_est / cell_stride**2)
    thin = max(1, math.ceil(math.sqrt(n_sample_est / MAX_SCORE_SAMPLE)))
    sample_args = [
        (source_a, source_b, grid, cells, d.sample_step, thin)
        for w in windows
        if (cells := sample_cells(w, cell_stride))
    ]
    chunks = [
        chunk
        for part in _run_bounded(executor, _sample_job, sample_args, in_flight)
        for chunk in part
    ]
    mom_a, mom_b, sample_a, sample_b = detect.combine_samples(chunks)
    del chunks
    norm = detect.normalisation(mom_a, mom_b, d.normalise, len(bands))
    model = None
    if d.method == "novelty":
        # fitted on the canonical (key-sorted) sample: the same whatever the block size
        model = detect.fit_novelty_model(
            sample_a,
            sample_b,
            norm,
            n_components=d.novelty_components,
            min_weight=d.novelty_min_weight,
            trim=d.novelty_trim,
        )
    sample_valid = np.ones(sample_a.shape[1:], dtype=bool)
    sample_scores = detect.change_score(
        sample_a[:, :, None],
        sample_b[:, :, None],
        sample_valid[:, None],
        norm,
        d.method,
        bands,
        model,
    ).ravel()
    cut = detect.threshold(sample_scores, d.threshold, d.threshold_value, nbands=len(bands))
    scene_a, _ = mom_a.mean_std()
    scene_b, _ = mom_b.mean_std()
    timings["pass1_s"] = time.perf_counter() - t0
    log.info("threshold %s = %.4f from %d sampled pixels", d.threshold, cut, sample_scores.size)
    del sample_a, sample_b

    # ---- pass 2: blockwise detection, rasters written as blocks arrive
    t0 = time.perf_counter()
    res = grid.resolution
    open_px = detect.radius_px(d.opening_radius_m, res)
    close_px = detect.radius_px(d.closing_radius_m, res)
    halo = detect.cleaning_halo(open_px, close_px)
    if d.hysteresis_low is not None:
        halo += detect.HYSTERESIS_HALO_PX
    if d.edge_ratio is not None:
        halo += detect.EDGE_HALO_PX
    job = _BlockJob(
        source_a,
        source_b,
        grid,
        d.method,
        norm,
        cut,
        d.hysteresis_low,
        d.edge_ratio,
        open_px,
        close_px,
        halo,
        model,
    )
    score_path, mask_path = out_dir / SCORE_FILE, out_dir / MASK_FILE
    pieces: list[tuple[int, int, Pieces]] = []
    n_changed = 0
    specs = [
        RasterSpec(score_path, "float32", float("nan"), "average", compress=SCORE_COMPRESS),
        RasterSpec(mask_path, "uint8", MASK_NODATA, "nearest"),
    ]
    with block_writers(specs, grid) as (score_dst, mask_dst):
        groups = [(job, g) for g in block_groups(windows, max(1, GROUP_PX // d.block_px))]
        outputs = (
            out
            for part in _run_bounded(executor, _detect_group_job, groups, in_flight)
            for out in part
        )
        for out in outputs:
            score_dst.write(out.score, 1, window=out.window)
            mask_dst.write(out.mask, 1, window=out.window)
            n_changed += int((out.mask == MASK_CHANGE).sum())
            pieces.append((int(out.window.row_off), int(out.window.col_off), out.pieces))
            if progress is not None:
                progress(len(pieces), len(windows))
        timings["pass2_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
    timings["cog_s"] = time.perf_counter() - t0

    # ---- merge pieces across block edges, then the minimum area
    t0 = time.perf_counter()
    pieces.sort(key=lambda p: (p[0], p[1]))  # deterministic union order
    geoms, sums = merge_pieces([p for _, _, p in pieces])
    if len(geoms) == 0:
        sums = np.zeros((0, len(sums_columns(bands))))
    n_before = len(geoms)
    keep = sums[:, 0] * res * res >= d.min_area_m2
    n_small = int(np.count_nonzero(~keep))
    if d.min_mean_score is not None:
        # a patch seeded by a few strong pixels in a large weakly changed area (a ploughed
        # field) has a low mean score; real new surfaces change throughout
        with np.errstate(divide="ignore", invalid="ignore"):
            keep &= sums[:, 1] / sums[:, 0] >= d.min_mean_score * cut
    geoms, sums = geoms[keep], sums[keep]
    detections = _detections_frame(
        geoms, sums, grid, bands, pair, dict(zip(bands, scene_a)), dict(zip(bands, scene_b))
    )
    timings["merge_s"] = time.perf_counter() - t0
    log.info(
        "%s→%s: %d changed pixels, %d patches (%d below %.0f m² dropped)",
        label_a,
        label_b,
        n_changed,
        len(detections),
        n_before - len(detections),
        d.min_area_m2,
    )
    stats = {
        "method": d.method,
        "normalise": d.normalise,
        "threshold_method": d.threshold,
        "threshold": cut,
        "mean_from": dict(zip(bands, norm.mean_a)),
        "std_from": dict(zip(bands, norm.std_a)),
        "mean_to": dict(zip(bands, norm.mean_b)),
        "std_to": dict(zip(bands, norm.std_b)),
        "n_sample": int(sample_scores.size),
        "novelty_weights": list(model.weights) if model is not None else None,
        "n_blocks": len(windows),
        "block_px": d.block_px,
        "halo_px": halo,
        "opening_px": open_px,
        "closing_px": close_px,
        "grid": {"width": grid.width, "height": grid.height, "bounds": grid.bounds, "res": res},
        "n_pixels_changed": n_changed,
        "n_patches": len(detections),
        "n_patches_below_min_area": n_small,
        "n_patches_below_min_mean_score": n_before - n_small - len(detections),
        "timings": timings,
    }
    return DetectionResult(detections, score_path, mask_path, stats)


def block_groups(windows: list[Window], side: int) -> list[list[Window]]:
    """``windows`` (row-major blocks) in square groups of up to ``side`` × ``side`` blocks,
    each group row-major (the order a worker processes it in)."""
    if side <= 1:
        return [[w] for w in windows]
    rows = sorted({int(w.row_off) for w in windows})
    cols = sorted({int(w.col_off) for w in windows})
    at = {(int(w.row_off), int(w.col_off)): w for w in windows}
    groups = []
    for gr in range(0, len(rows), side):
        for gc in range(0, len(cols), side):
            group = [
                at[(r, c)]
                for r in rows[gr : gr + side]
                for c in cols[gc : gc + side]
                if (r, c) in at
            ]
            if group:
                groups.append(group)
    return groups


def sample_cell_stride(n_sample: int) -> int:
    """How sparsely pass 1 reads: one :data:`SAMPLE_CELL_PX` cell in ``stride × stride``.

    1 (every cell) until the full regular sample would exceed :data:`PASS1_TARGET_SAMPLE`
    pixels; then the smallest stride that brings it near that size. Depends only on the grid
    size and ``sample_step``, never on the block size.
    """
    return max(1, math.isqrt(max(n_sample, 0) // PASS1_TARGET_SAMPLE))


def sample_cells(window: Window, stride: int) -> list[Window]:
    """The parts of ``window`` inside sampled cells (global cells of :data:`SAMPLE_CELL_PX`
    whose cell row and cell column are multiples of ``stride``).

    Notes
    -----
    Cells are fixed on global pixel indices, so the pass-1 sample (these cells, then every
    ``sample_step``-th global row and column inside them) is the same whatever the block
    size. With 512 px cells on a grid-aligned input tiled 512, unsampled cells are never
    decoded: pass 1 costs ``1 / stride²`` of a full read.
    """
    if stride == 1:
        return [window]
    c = SAMPLE_CELL_PX
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    out = []
    for cr in range(r0 // c, (r1 - 1) // c + 1):
        if cr % stride:
            continue
        for cc in range(c0 // c, (c1 - 1) // c + 1):
            if cc % stride:
                continue
            rs, re_ = max(r0, cr * c), min(r1, (cr + 1) * c)
            cs, ce = max(c0, cc * c), min(c1, (cc + 1) * c)
            out.append(Window(cs, rs, ce - cs, re_ - rs))
    return out


# --------------------------------------------------------------------------- worker tasks
def _sample_job(
    source_a: EpochSource,
    source_b: EpochSource,
    grid: TargetGrid,
    cells: list[Window],
    step: int,
    thin: int,
) -> list[detect.SampleChunk]:
    """Pass 1 for the sampled cells of one block (runs in a worker)."""
    out = []
    for window in cells:
        a, va = read_block(source_a, grid, window)
        b, vb = read_block(source_b, grid, window)
        out.append(
            detect.sample_block(
                a, b, va & vb, int(window.row_off), int(window.col_off), step, thin, grid.width
            )
        )
    return out


def _detect_group_job(job: _BlockJob, windows: list[Window]) -> list[_BlockOutput]:
    """Pass 2 for a group of neighbouring blocks, one after the other in one worker: the
    input tiles under the halo shared by neighbours are decoded once (GDAL's block cache)."""
    return [_detect_job(job, w) for w in windows]


def _detect_job(job: _BlockJob, window: Window) -> _BlockOutput:
    """Pass 2 for one block (runs in a worker)."""
    halo = job.halo
    a, va = read_block(job.source_a, job.grid, window, halo)
    b, vb = read_block(job.source_b, job.grid, window, halo)
    valid = va & vb
    score = detect.change_score(
        a, b, valid, job.norm, job.method, job.source_a.band_names, job.model
    )
    mask = detect.change_mask(score, valid, job.cut, job.hysteresis_low)
    if job.edge_ratio is not None:
        mask = detect.refine_edges(mask, score, valid, job.edge_ratio)
    mask = detect.clean_mask(mask, valid, job.open_px, job.close_px)
    h, w = int(window.height), int(window.width)
    core = (slice(halo, halo + h), slice(halo, halo + w))
    mask_c, score_c, valid_c = mask[core], score[core], valid[core]
    a_c, b_c = a[(slice(None), *core)], b[(slice(None), *core)]
    pieces = block_pieces(
        mask_c,
        score_c,
        a_c,
        b_c,
        int(window.row_off),
        int(window.col_off),
        (job.grid.height, job.grid.width),
    )
    mask_out = np.where(valid_c, mask_c.astype(np.uint8), np.uint8(MASK_NODATA)).astype(np.uint8)
    score_out = np.where(valid_c, score_c, np.float32(np.nan)).astype(np.float32)
    return _BlockOutput(window, score_out, mask_out, pieces)


# --------------------------------------------------------------------------- helpers
def _run_bounded(
    executor: Executor, fn: Callable, arg_list: Iterable[tuple], max_in_flight: int
) -> Iterator:
    """Submit ``fn(*args)`` for each args, at most ``max_in_flight`` at once; yield results
    in completion order."""
    pending: set[Future] = set()
    args_iter = iter(arg_list)
    exhausted = False
    while True:
        while not exhausted and len(pending) < max_in_flight:
            try:
                args = next(args_iter)
            except StopIteration:
                exhausted = True
                break
            pending.add(executor.submit(fn, *args))
        if not pending:
            return
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            try:
                yield future.result()
            except Exception:
                for other in pending:
                    other.cancel()
                raise


def _detections_frame(
    geoms: np.ndarray,
    sums: np.ndarray,
    grid: TargetGrid,
    bands: tuple[str, ...],
    pair: tuple[str, str],
    scene_a: dict[str, float],
    scene_b: dict[str, float],
) -> gpd.GeoDataFrame:
    """Detections GeoDataFrame (map coordinates, means from sums, change type, sorted)."""
    cols = sums_columns(bands)
    n = sums[:, cols.index("n_pixels")]
    nb = len(bands)
    safe_n = np.where(n > 0, n, 1.0)
    means_from = {b: sums[:, 2 + i] / safe_n for i, b in enumerate(bands)}
    means_to = {b: sums[:, 2 + nb + i] / safe_n for i, b in enumerate(bands)}
    geoms_map = to_map(geoms, grid.transform) if len(geoms) else geoms
    data = {
        P.EPOCH_FROM: pd.Series([pair[0]] * len(n), dtype=object),
        P.EPOCH_TO: pd.Series([pair[1]] * len(n), dtype=object),
        P.SCORE: sums[:, cols.index("score_sum")] / safe_n,
        P.CHANGE_TYPE: pd.Series(
            classify_change(means_from, means_to, scene_a, scene_b), dtype=object
        ),
        N_PIXELS: n.astype(np.int64),
        AREA_PX_M2: n * grid.resolution**2,
    }
    data.update({mean_column("from", b): means_from[b] for b in bands})
    data.update({mean_column("to", b): means_to[b] for b in bands})
    frame = gpd.GeoDataFrame(data, geometry=list(geoms_map), crs=grid.rio_crs)
    if len(frame):
        cent = shapely.centroid(frame.geometry.values)
        order = np.lexsort((n, shapely.get_x(cent), shapely.get_y(cent)))
        frame = frame.iloc[order].reset_index(drop=True)
    return frame
