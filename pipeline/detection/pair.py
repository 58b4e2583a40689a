"""The two-pass blockwise driver: align + detect + vectorize one epoch pair.

Pass 1 samples every block (every ``sample_step``-th global row and column) for the global
normalisation statistics and the threshold. Pass 2 hands each worker a region of whole blocks
(:data:`REGION_PX`); the worker streams it top to bottom in row chunks with a halo, reading
every input row once: read both epochs onto the grid → score → threshold → refine edges →
clean → crop the halo → write score and mask into the region's own part files → polygon
pieces with per-label sums. The driver merges the pieces across chunk and region edges,
applies the object-level filters, sets the pixels of dropped patches back to "no change" in
the mask parts (so ``mask.tif`` is exactly the detections), and publishes both rasters as
COGs assembled from the parts through a VRT.

Memory stays flat in the image size: the driver never holds a pixel array, a worker holds
at most two chunks of its region per epoch, and the pass-1 threshold sample is capped at
:data:`MAX_SCORE_SAMPLE` pixels.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window

from pipeline.config import Config
from pipeline.detection import neighbourhood, sampling
from pipeline.detection import scores as detect
from pipeline.detection.change_type import classify_change
from pipeline.detection.io.cogs import (
    RasterSpec,
    change_pyramid,
    decimated_grid,
    mean_pyramid,
    overview_factors,
    part_writer,
    parts_to_cogs,
)
from pipeline.detection.io.imagery import (
    READ_ROWS_PX,
    EpochSource,
    RowStream,
    check_masks_overlap,
    epoch_footprint,
    epoch_source,
    read_block,
)
from pipeline.detection.methods import novelty, selftrain
from pipeline.detection.methods.irmad import IrmadModel, fit_irmad
from pipeline.detection.screens import cloud_patches, moisture_patches
from pipeline.detection.target_grid import TargetGrid, blocks, target_grid
from pipeline.detection.vectorize import (
    PatchFilter,
    Pieces,
    block_pieces,
    merge_pieces,
    sums_columns,
    to_map,
)
from pipeline.schema import P

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
"""Values of ``mask.tif``: 1 = a pixel of a returned detection, 0 = no change (including the
pixels of patches dropped by ``min_area_m2`` / ``min_mean_score`` / the screens), 255 = invalid
(nodata/masked in either epoch). ``mask == 1`` is exactly the union of the detections."""
MAX_SCORE_SAMPLE = 2_000_000
"""Pixels in the pass-1 sample kept for the threshold (thinned regularly beyond this)."""
CHANGED_SHARE_WARN = 0.5
"""Above this share of the pass-1 sample over the cut, the run warns: a threshold that marks
most of a scene changed is almost certainly a wrong setting."""
OUTPUT_COMPRESS = "ZSTD"
"""Compression of ``score.tif`` and ``mask.tif``: DEFLATE of a noisy float32 score was the
slowest step of the stage (≈ 20 s for 10240² on two cores) and DEFLATE level 6 of the mask
took twice ZSTD's time at the same size; ZSTD level 1 is several times faster. ZSTD GeoTIFFs
need GDAL ≥ 2.3 (QGIS 3, ArcGIS Pro have it); set "DEFLATE" for older readers."""
REGION_PX = 5120
"""Pass 2 hands each worker a region of whole blocks about this many pixels wide and
:data:`REGION_ROWS_PX` tall (2 for a 10240² scene). The worker streams the region top to
bottom in chunks of :data:`CHUNK_ROWS_PX` rows over its full width
(:class:`~pipeline.detection.io.imagery.RowStream`), so every input tile is decoded once, plus one tile
row or column under the halo at each region edge — tall regions have fewer such edges
than square ones of the same width (at 10240²: 10 % of the tiles decoded twice instead of
20 %) at the same worker memory. Each worker writes its score and mask into its own part
files: the driver only merges polygons."""
REGION_ROWS_PX = 2 * REGION_PX
"""Height of a pass-2 region (see :data:`REGION_PX`)."""
CHUNK_ROWS_PX = 512
"""Rows per pass-2 chunk (at most ``block_px``): bounds a worker's memory to about
``(2 × chunk + halo) × region width × bands × 4 B`` per epoch."""
SAMPLE_CELL_PX = 512
"""Pass 1 reads the scene in cells of this size (global pixel indices; the usual tile size
of the inputs, so a skipped cell is a tile never decoded)."""
PASS1_TARGET_SAMPLE = 400_000
"""From four times this many regularly sampled pixels on, pass 1 reads one cell in ``stride²``
(see :func:`sample_cell_stride`): the statistics are then still from ≥ this many pixels
spread over the whole scene, at a fraction of the decoding cost (a 10240² scene at
``sample_step`` 4: 25 of 400 cells, ~410 000 pixels; scenes up to 5000² are read whole)."""


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
    norm: sampling.Normalisation
    cut: float
    hysteresis_low: float | None
    edge_ratio: float | None
    open_px: int
    close_px: int
    halo: int
    model: novelty.NoveltyModel | IrmadModel | selftrain.SelfTrainModel | None = None
    smooth_px: float = 0.0
    patch_filter: PatchFilter | None = None
    score_overviews: tuple[int, ...] = ()  # factors of the overviews the worker builds


@dataclass
class _RegionOutput:
    region: Window
    files: tuple[str, str]  # score and mask part files
    pieces: list[tuple[int, int, Pieces]]  # (row_off, col_off, pieces) per chunk
    timings: dict[str, float] = field(default_factory=dict)  # worker wall / CPU per step
    n_small: int = 0  # whole patches dropped in the worker by the patch filter
    n_low_score: int = 0
    overviews: list[tuple[int, Window, str]] = field(default_factory=list)  # score levels
    mask_overviews: list[tuple[int, Window, str]] = field(default_factory=list)


@dataclass
class _BlockOutput:
    window: Window
    score: np.ndarray  # float32, NaN where invalid
    mask: np.ndarray  # uint8, MASK_* values
    pieces: Pieces
    n_small: int = 0
    n_low_score: int = 0


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
        From :func:`pipeline.ops.executor.make_executor`.
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
    bands = source_a.band_names  # surface bands first, then the atmospheric ones
    surface = source_a.surface_names  # the bands the methods use: data[:ns]
    ns = len(surface)
    cloud_screen = d.cloud_screen_on(bands)
    moisture_screen = d.moisture_screen_on(surface)
    grid = target_grid(cfg.area, [epoch_footprint(source_a), epoch_footprint(source_b)])
    check_masks_overlap(source_a, grid)
    check_masks_overlap(source_b, grid)
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
    smooth_px = d.smooth_sigma_m / grid.resolution if d.smooth_sigma_m else 0.0
    uses_context = d.method == "selftrain" and (
        d.selftrain_shift_feature or d.selftrain_vegetation_weight
    )
    context_sigma = smooth_px if uses_context else None
    sample_args = [
        (source_a, source_b, grid, cells, d.sample_step, thin, context_sigma)
        for w in windows
        if (cells := sample_cells(w, cell_stride))
    ]
    chunks = [
        chunk
        for part in _run_bounded(executor, _sample_job, sample_args, in_flight)
        for chunk in part
    ]
    mom_a, mom_b, sample_a, sample_b = sampling.combine_samples(chunks)
    context = sampling.combine_context(chunks)
    del chunks
    # scene means of every band, for the change types and the cloud screen: the surface
    # bands' from their moments, the atmospheric bands' from the sample (gaps are NaN)
    scene_a = np.concatenate([mom_a.mean_std()[0], sampling.nan_means(sample_a[ns:])])
    scene_b = np.concatenate([mom_b.mean_std()[0], sampling.nan_means(sample_b[ns:])])
    sample_a, sample_b = sample_a[:ns], sample_b[:ns]
    irmad = None
    if d.method in ("irmad", "selftrain") or d.normalise == "irmad_regression":
        # IR-MAD on the canonical (key-sorted) sample: the same whatever the block size
        irmad = fit_irmad(sample_a, sample_b)
    norm = detect.normalisation(mom_a, mom_b, d.normalise, ns, sample_a, sample_b, irmad)
    model: novelty.NoveltyModel | IrmadModel | selftrain.SelfTrainModel | None = (
        irmad if d.method == "irmad" else None
    )
    if d.method == "selftrain":
        # fitted on the canonical (key-sorted) sample: the same whatever the block size
        model = selftrain.fit_self_train(
            sample_a,
            sample_b,
            irmad,
            change_quantile=d.selftrain_change_quantile,
            nochange_quantile=d.selftrain_nochange_quantile,
            band_names=surface,
            context=context,
            shift_feature=d.selftrain_shift_feature,
            vegetation_weight=d.selftrain_vegetation_weight,
        )
    if d.method == "novelty":
        # fitted on the canonical (key-sorted) sample: the same whatever the block size
        model = novelty.fit_novelty_model(
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
        surface,
        model,
        None if context is None else context[:, :, None],
    ).ravel()
    if isinstance(model, selftrain.SelfTrainModel) and model.vegetation_ref is not None:
        sample_scores = selftrain.vegetation_weight(sample_scores, context[1], model.vegetation_ref)
    cut = detect.threshold(
        sample_scores,
        d.threshold,
        d.threshold_value,
        nbands=ns,
        squared=d.method == "irmad",
    )
    timings["pass1_s"] = time.perf_counter() - t0
    log.info("threshold %s = %.4f from %d sampled pixels", d.threshold, cut, sample_scores.size)
    above = float(np.mean(sample_scores > cut)) if sample_scores.size else 0.0
    if above > CHANGED_SHARE_WARN:
        log.warning(
            "%s→%s: %.0f %% of the sampled pixels are above the cut %.4g (%s); expected new "
            "construction to be a small share of a scene — check 'detect.threshold' and "
            "'detect.threshold_value'",
            label_a, label_b, 100 * above, cut, d.threshold,
        )  # fmt: skip
    del sample_a, sample_b

    # ---- pass 2: regions streamed by the workers, each writing its own part files
    t0 = time.perf_counter()
    res = grid.resolution
    open_px = detect.radius_px(d.opening_radius_m, res)
    close_px = detect.radius_px(d.closing_radius_m, res)
    halo = detect.cleaning_halo(open_px, close_px)
    halo += neighbourhood.smoothing_halo(smooth_px)  # the score's (and the vegetation change's)
    if isinstance(model, selftrain.SelfTrainModel) and model.shift_feature:
        halo += 1  # the shift-tolerant difference looks one pixel around
    if d.edge_ratio is not None:
        halo += detect.EDGE_HALO_PX
    patch_filter = PatchFilter(
        res * res,
        d.min_area_m2,
        None if d.min_mean_score is None else d.min_mean_score * cut,
        None if d.hysteresis_low is None else cut,  # hysteresis: a pixel above the cut
    )
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
        smooth_px,
        patch_filter,
        score_overviews(grid, d.block_px),
    )
    score_path, mask_path = out_dir / SCORE_FILE, out_dir / MASK_FILE
    specs = [
        RasterSpec(score_path, "float32", float("nan"), "average", compress=OUTPUT_COMPRESS),
        RasterSpec(mask_path, "uint8", MASK_NODATA, "nearest", compress=OUTPUT_COMPRESS),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    # workers write their parts here (a shared folder when the workers are remote)
    parts_dir = Path(tempfile.mkdtemp(prefix=f".{MASK_FILE}.parts-", dir=out_dir))
    try:
        regions = pass2_regions(windows, d.block_px)
        chunk_rows = min(d.block_px, CHUNK_ROWS_PX)
        args = [(job, region, chunk_rows, str(parts_dir)) for region, _ in regions]
        n_blocks = {(int(r.row_off), int(r.col_off)): n for r, n in regions}
        pieces: list[tuple[int, int, Pieces]] = []
        parts: list[tuple[Window, tuple[str, str]]] = []
        score_levels: list[tuple[int, Window, str]] = []
        mask_levels: dict[str, list[tuple[int, Window, str]]] = {}  # by mask part file
        done = 0
        worker_timings: dict[str, float] = {}
        n_small_early = n_low_early = 0
        for out in _run_bounded(executor, _detect_region_job, args, in_flight):
            pieces.extend(out.pieces)
            n_small_early += out.n_small
            n_low_early += out.n_low_score
            _add_timings(worker_timings, out.timings)
            parts.append((out.region, out.files))
            score_levels.extend(out.overviews)
            mask_levels[out.files[1]] = out.mask_overviews
            done += n_blocks[(int(out.region.row_off), int(out.region.col_off))]
            if progress is not None:
                progress(done, len(windows))
        timings["pass2_s"] = time.perf_counter() - t0
        # summed over regions (all workers): compare wall with CPU to see waiting/contention
        timings["pass2_worker"] = {k: round(v, 3) for k, v in sorted(worker_timings.items())}

        # ---- merge pieces across block edges, then the minimum area
        t0 = time.perf_counter()
        pieces.sort(key=lambda p: (p[0], p[1]))  # deterministic union order
        geoms, sums, peaks = merge_pieces([p for _, _, p in pieces])
        if len(geoms) == 0:
            sums = np.zeros((0, len(sums_columns(bands))))
        keep = patch_filter.keep(sums[:, 0], sums[:, 1], peaks)
        n_small = int(np.count_nonzero(patch_filter.too_small(sums[:, 0]))) + n_small_early
        n_before = len(geoms) + n_small_early + n_low_early
        scene_from, scene_to = dict(zip(bands, scene_a)), dict(zip(bands, scene_b))
        # patch-level screens, in order: (on, rule, log level, what the patches are)
        screens = (
            (cloud_screen, logging.WARNING, "cloud or haze in one epoch (detect.cloud_screen)",
             lambda m0, m1: cloud_patches(m0, m1, scene_from, scene_to,
                                          d.cloud_cirrus_ratio, d.cloud_coastal_ratio)),
            (moisture_screen, logging.INFO, "wetting or drying (detect.moisture_screen)",
             lambda m0, m1: moisture_patches(m0, m1, scene_from, scene_to, d.moisture_ratio)),
        )  # fmt: skip
        screened = []  # (patches, m²) per screen
        means = patch_means(sums, bands) if any(s[0] for s in screens) and len(geoms) else None
        for on, level, what, rule in screens:
            hit = keep & rule(*means) if on and means is not None else np.zeros_like(keep)
            keep &= ~hit
            screened.append((int(hit.sum()), float(sums[hit, 0].sum()) * res * res))
            if hit.any():
                log.log(
                    level, "%s→%s: %d patch(es), %.2f ha, screened as %s; their pixels are "
                    "'no change' in %s", label_a, label_b, screened[-1][0],
                    screened[-1][1] / 1e4, what, MASK_FILE,
                )  # fmt: skip
        (n_cloud, cloud_m2), (n_moist, moisture_m2) = screened
        dropped = geoms[~keep]
        geoms, sums = geoms[keep], sums[keep]
        n_changed = int(sums[:, 0].sum())
        detections = _detections_frame(geoms, sums, grid, bands, pair, scene_from, scene_to)
        timings["merge_s"] = time.perf_counter() - t0

        # ---- mask.tif = the detections: dropped patches back to "no change", then COGs
        t0 = time.perf_counter()
        n_erased = erase_dropped([(w, files[1]) for w, files in parts], dropped, mask_levels)
        timings["erase_s"] = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        all_mask_levels = [level for levels in mask_levels.values() for level in levels]
        parts_to_cogs(specs, parts, grid, parts_dir, [score_levels, all_mask_levels])
        timings["cog_s"] = time.perf_counter() - t0
        timings["cog_cpu_s"] = time.process_time() - c0  # GDAL's threads included
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    log.info(
        "%s→%s: %d changed pixels, %d patches (dropped: %d below %.0f m² or the mean score, "
        "%d cloud, %d wetting/drying)",
        label_a,
        label_b,
        n_changed,
        len(detections),
        n_before - n_cloud - n_moist - len(detections),
        d.min_area_m2,
        n_cloud,
        n_moist,
    )
    stats = {
        "method": d.method,
        "normalise": d.normalise,
        "threshold_method": d.threshold,
        "threshold": cut,
        "mean_from": dict(zip(surface, norm.mean_a)),
        "std_from": dict(zip(surface, norm.std_a)),
        "mean_to": dict(zip(surface, norm.mean_b)),
        "std_to": dict(zip(surface, norm.std_b)),
        "n_sample": int(sample_scores.size),
        "novelty_weights": (
            list(model.weights) if isinstance(model, novelty.NoveltyModel) else None
        ),
        "irmad_rho": list(irmad.rho) if irmad is not None else None,
        "n_blocks": len(windows),
        "block_px": d.block_px,
        "halo_px": halo,
        "opening_px": open_px,
        "closing_px": close_px,
        "grid": {"width": grid.width, "height": grid.height, "bounds": grid.bounds, "res": res},
        "n_pixels_changed": n_changed,
        "n_patches": len(detections),
        "n_patches_below_min_area": n_small,
        "n_pixels_erased": n_erased,
        "n_patches_below_min_mean_score": (
            n_before - n_small - n_cloud - n_moist - len(detections)
        ),
        "cloud_screen": cloud_screen,
        "n_patches_cloud": n_cloud,
        "cloud_m2": cloud_m2,
        "moisture_screen": moisture_screen,
        "n_patches_moisture": n_moist,
        "moisture_m2": moisture_m2,
        "timings": timings,
    }
    return DetectionResult(detections, score_path, mask_path, stats)


def score_overviews(grid: TargetGrid, block_px: int) -> tuple[int, ...]:
    """The overview factors of ``score.tif`` the pass-2 workers build themselves, or ``()``.

    The COG needs overviews (:func:`~pipeline.detection.io.cogs.overview_factors`); averaging
    float scores over the whole raster twice was the slowest part of publishing it, while a
    worker holds each chunk in memory anyway. Workers can build them when every chunk starts
    on a multiple of the largest factor (``block_px`` and the chunk height are multiples of
    it); otherwise GDAL builds them from the parts (the same means, up to rounding).
    """
    factors = overview_factors(grid.width, grid.height)
    if not factors:
        return ()
    top = factors[-1]
    chunk_rows = min(block_px, CHUNK_ROWS_PX)
    return tuple(factors) if block_px % top == 0 and chunk_rows % top == 0 else ()


def region_chunks(
    r0: int, height: int, chunk_rows: int, halo: int, align: int, factor: int = 1
) -> list[tuple[int, int]]:
    """(first row, number of rows) of the chunks a worker streams the rows
    ``[r0, r0 + height)`` of a region in.

    Chunks end ``lead`` rows before a multiple of ``align`` (the :class:`RowStream`'s
    tile-aligned slab), ``lead`` = ``halo`` rounded up to a multiple of ``factor`` (chunk
    starts stay multiples of the largest overview factor). A chunk's lower halo then ends
    where the slab read for it ends, and the rows the stream keeps for the next chunk are
    ``lead + halo``, not most of a slab: moving those in the buffer before every read was
    a tenth of a worker's CPU, and the buffer is one slab smaller. The first chunk is
    shorter; a last sliver of at most ``lead`` rows joins the chunk before it. Falls back to
    chunks on multiples of ``chunk_rows`` when ``chunk_rows`` is not
    ``align`` or the halo is half a slab or more. The result does not depend on the
    chunking (statistics are global, patches are merged across chunk edges).
    """
    end = r0 + height
    lead = -(-halo // factor) * factor
    if chunk_rows != align or 2 * lead >= align:
        return [(y, min(chunk_rows, end - y)) for y in range(r0, end, chunk_rows)]
    bounds = [r0]
    y = ((r0 + lead) // align + 1) * align - lead  # the first chunk end after r0
    while y < end:
        bounds.append(y)
        y += align
    if len(bounds) > 1 and end - bounds[-1] <= lead:
        bounds.pop()  # a last sliver of at most `lead` rows joins the chunk before it
    bounds.append(end)
    return [(a, b - a) for a, b in itertools.pairwise(bounds)]


def pass2_regions(windows: list[Window], block_px: int) -> list[tuple[Window, int]]:
    """The pass-2 work units: groups of whole blocks about :data:`REGION_PX` wide and
    :data:`REGION_ROWS_PX` tall, each as (its window, its number of blocks), row-major."""
    out = []
    side_rows = max(1, REGION_ROWS_PX // block_px)
    for group in block_groups(windows, max(1, REGION_PX // block_px), side_rows):
        r0 = min(int(w.row_off) for w in group)
        c0 = min(int(w.col_off) for w in group)
        r1 = max(int(w.row_off + w.height) for w in group)
        c1 = max(int(w.col_off + w.width) for w in group)
        out.append((Window(c0, r0, c1 - c0, r1 - r0), len(group)))
    return out


def erase_dropped(
    parts: list[tuple[Window, str | Path]],
    dropped: np.ndarray,
    levels: dict[str, list[tuple[int, Window, str]]] | None = None,
) -> int:
    """Set the pixels of ``dropped`` patches to :data:`MASK_NO_CHANGE` in the mask part files.

    Parameters
    ----------
    parts : list of (window on the grid, mask part file)
        Updated in place.
    dropped : ndarray of Polygon
        Patches removed by the object-level filters, in *global pixel coordinates*.
    levels : dict, optional
        Overview level files of each mask part ((factor, window, file), from the workers):
        rebuilt (:func:`~pipeline.detection.io.cogs.change_pyramid`) for every part changed here.

    Returns
    -------
    int
        Pixels set back to no change.

    Notes
    -----
    The polygons follow pixel edges, so rasterizing them by pixel centre (rasterio's default,
    ``all_touched=False``) gives back exactly their pixels; dropped patches never share a
    pixel with kept ones (they are separate 4-connected components). Each patch is erased in
    a window around it aligned to the largest overview factor, and only that window's
    overview blocks are rebuilt: the cost follows the dropped patches, not the part size.
    """
    if len(dropped) == 0:
        return 0
    tree = shapely.STRtree(dropped)
    n = 0
    for window, path in parts:
        r0, c0 = int(window.row_off), int(window.col_off)
        h, w = int(window.height), int(window.width)
        hits = tree.query(shapely.box(c0, r0, c0 + w, r0 + h), predicate="intersects")
        if len(hits) == 0:
            continue
        part_levels = (levels or {}).get(str(path), [])
        factors = [f for f, _, _ in part_levels]
        align = max(factors, default=1)
        with contextlib.ExitStack() as stack:
            dst = stack.enter_context(rasterio.open(path, "r+"))
            level_dsts = [stack.enter_context(rasterio.open(p, "r+")) for _, _, p in part_levels]
            for poly in dropped[np.sort(hits)]:
                sub = _aligned_window(poly.bounds, r0, c0, h, w, align)
                mask = dst.read(1, window=sub)
                burn = rasterize(
                    [poly],
                    out_shape=mask.shape,
                    transform=Affine.translation(c0 + sub.col_off, r0 + sub.row_off),
                    fill=0,
                    default_value=1,
                    dtype="uint8",
                ).astype(bool)
                burn &= mask == MASK_CHANGE
                if not burn.any():
                    continue
                n += int(burn.sum())
                mask[burn] = MASK_NO_CHANGE
                dst.write(mask, 1, window=sub)
                rebuilt = change_pyramid(mask, factors, MASK_CHANGE, MASK_NO_CHANGE, MASK_NODATA)
                for f, level, level_dst in zip(factors, rebuilt, level_dsts):
                    at = Window(sub.col_off // f, sub.row_off // f, level.shape[1], level.shape[0])
                    level_dst.write(level, 1, window=at)
    return n


def _aligned_window(bounds, r0: int, c0: int, h: int, w: int, align: int) -> Window:
    """The window of an ``h × w`` part at global ``(r0, c0)`` holding ``bounds`` (global
    pixel coordinates: x = column, y = row), grown outwards to multiples of ``align`` (the
    largest overview factor, so its overview blocks lie wholly inside) and clipped to the
    part."""
    minx, miny, maxx, maxy = bounds
    top = max(0, (math.floor(miny) - r0) // align * align)
    left = max(0, (math.floor(minx) - c0) // align * align)
    bottom = min(h, -(-(math.ceil(maxy) - r0) // align) * align)
    right = min(w, -(-(math.ceil(maxx) - c0) // align) * align)
    return Window(left, top, right - left, bottom - top)


def block_groups(
    windows: list[Window], side: int, side_rows: int | None = None
) -> list[list[Window]]:
    """``windows`` (row-major blocks) in groups of up to ``side_rows`` (default ``side``) ×
    ``side`` blocks, each group row-major (the order a worker processes it in)."""
    side_rows = side if side_rows is None else side_rows
    if side <= 1 and side_rows <= 1:
        return [[w] for w in windows]
    rows = sorted({int(w.row_off) for w in windows})
    cols = sorted({int(w.col_off) for w in windows})
    at = {(int(w.row_off), int(w.col_off)): w for w in windows}
    groups = []
    for gr in range(0, len(rows), side_rows):
        for gc in range(0, len(cols), side):
            group = [
                at[(r, c)]
                for r in rows[gr : gr + side_rows]
                for c in cols[gc : gc + side]
                if (r, c) in at
            ]
            if group:
                groups.append(group)
    return groups


def sample_cell_stride(n_sample: int) -> int:
    """How sparsely pass 1 reads: one :data:`SAMPLE_CELL_PX` cell in ``stride × stride``.

    1 (every cell) until the full regular sample reaches four times
    :data:`PASS1_TARGET_SAMPLE` pixels; then ``isqrt(n_sample / target)``, which keeps at
    least the target. Depends only on the grid size and ``sample_step``, never on the block
    size.
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
    context_sigma: float | None = None,
) -> list[sampling.SampleChunk]:
    """Pass 1 for the sampled cells of one block (runs in a worker). With ``context_sigma``
    the cells are read with a halo and the ``selftrain`` neighbourhood features
    (:func:`~pipeline.detection.methods.selftrain.self_train_context`) are sampled too."""
    out = []
    halo = 0 if context_sigma is None else selftrain.context_halo(context_sigma)
    for window in cells:
        a, va = read_block(source_a, grid, window, halo)
        b, vb = read_block(source_b, grid, window, halo)
        valid = va & vb
        context = None
        if context_sigma is not None:
            ns = len(source_a.surface_names)
            context = selftrain.self_train_context(
                a[:ns], b[:ns], valid, source_a.surface_names, context_sigma
            )
            core = (slice(halo, a.shape[1] - halo), slice(halo, a.shape[2] - halo))
            a, b, valid = a[(slice(None), *core)], b[(slice(None), *core)], valid[core]
            context = context[(slice(None), *core)]
        out.append(
            sampling.sample_block(
                a,
                b,
                valid,
                int(window.row_off),
                int(window.col_off),
                step,
                thin,
                grid.width,
                context,
                n_moments=source_a.n_surface,
            )
        )
    return out


def _detect_region_job(
    job: _BlockJob, region: Window, chunk_rows: int, parts_dir: str
) -> _RegionOutput:
    """Pass 2 for one region (runs in a worker): stream it top to bottom in chunks of
    ``chunk_rows`` rows over its full width, each input row read once
    (:class:`~pipeline.detection.io.imagery.RowStream`), write score and mask into this region's part
    files and return the polygon pieces of every chunk."""
    halo = job.halo
    r0, c0 = int(region.row_off), int(region.col_off)
    h, w = int(region.height), int(region.width)
    stream_args = (job.grid, c0 - halo, w + 2 * halo, r0 + h + halo)
    stream_a = RowStream(job.source_a, *stream_args)
    stream_b = RowStream(job.source_b, *stream_args)
    files = (
        str(Path(parts_dir) / f"score_{r0}_{c0}.tif"),
        str(Path(parts_dir) / f"mask_{r0}_{c0}.tif"),
    )
    pieces = []
    n_small = n_low = 0
    factors = job.score_overviews
    overviews, mask_overviews = (
        [
            (
                f,
                Window(c0 // f, r0 // f, -(-w // f), -(-h // f)),
                str(Path(parts_dir) / f"{kind}_ov{f}_{r0}_{c0}.tif"),
            )
            for f in factors
        ]
        for kind in ("score", "mask")
    )
    clock = _StepClock()
    with contextlib.ExitStack() as stack:
        score_dst = stack.enter_context(
            part_writer(files[0], job.grid, region, "float32", float("nan"))
        )
        mask_dst = stack.enter_context(
            part_writer(files[1], job.grid, region, "uint8", MASK_NODATA)
        )
        level_dsts = [
            stack.enter_context(
                part_writer(path, decimated_grid(job.grid, f), win, "float32", float("nan"))
            )
            for f, win, path in overviews
        ]
        mask_level_dsts = [
            stack.enter_context(
                part_writer(path, decimated_grid(job.grid, f), win, "uint8", MASK_NODATA)
            )
            for f, win, path in mask_overviews
        ]
        top = factors[-1] if factors else 1
        for y, ch in region_chunks(r0, h, chunk_rows, halo, READ_ROWS_PX, top):
            a, va = stream_a.rows(y - halo, y + ch + halo)
            b, vb = stream_b.rows(y - halo, y + ch + halo)
            clock.lap("read")
            out = _detect_job(job, Window(c0, y, w, ch), (a, va, b, vb))
            clock.lap("detect")
            part_window = Window(0, y - r0, w, ch)
            score_dst.write(out.score, 1, window=part_window)
            mask_dst.write(out.mask, 1, window=part_window)
            # chunks start on multiples of the largest factor: their levels are whole rows
            if factors:
                levels = zip(
                    overviews,
                    level_dsts,
                    mask_level_dsts,
                    mean_pyramid(out.score, factors),
                    change_pyramid(out.mask, factors, MASK_CHANGE, MASK_NO_CHANGE, MASK_NODATA),
                )
                for (f, _, _), dst, mask_level_dst, level, mask_level in levels:
                    level_window = Window(0, (y - r0) // f, level.shape[1], level.shape[0])
                    dst.write(level, 1, window=level_window)
                    mask_level_dst.write(mask_level, 1, window=level_window)
            pieces.append((y, c0, out.pieces))
            n_small += out.n_small
            n_low += out.n_low_score
            clock.lap("write")
    clock.lap("close")
    return _RegionOutput(
        region, files, pieces, clock.totals, n_small, n_low, overviews, mask_overviews
    )


def _detect_job(
    job: _BlockJob,
    window: Window,
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> _BlockOutput:
    """Pass 2 for one block (runs in a worker); ``inputs`` = (a, valid_a, b, valid_b) on the
    block + halo when already read (else read here)."""
    halo = job.halo
    if inputs is None:
        a, va = read_block(job.source_a, job.grid, window, halo)
        b, vb = read_block(job.source_b, job.grid, window, halo)
    else:
        a, va, b, vb = inputs
    valid = va & vb
    surface = job.source_a.surface_names
    ns = len(surface)  # the atmospheric bands (last) only go into the patch sums
    score = detect.change_score(a[:ns], b[:ns], valid, job.norm, job.method, surface, job.model)
    score = neighbourhood.smooth_score(score, valid, job.smooth_px)
    if isinstance(job.model, selftrain.SelfTrainModel) and job.model.vegetation_ref is not None:
        veg = selftrain.vegetation_change(a[:ns], b[:ns], valid, surface, job.smooth_px)
        score = selftrain.vegetation_weight(score, veg, job.model.vegetation_ref)
    mask = detect.change_mask(score, valid, job.cut, job.hysteresis_low)
    if mask.any():  # most chunks of a real scene have no candidate: nothing to refine
        mask = detect.clean_mask(
            mask, valid, job.open_px, job.close_px, score=score, edge_ratio=job.edge_ratio
        )
    h, w = int(window.height), int(window.width)
    core = (slice(halo, halo + h), slice(halo, halo + w))
    mask_c, score_c, valid_c = mask[core], score[core], valid[core]
    a_c, b_c = a[(slice(None), *core)], b[(slice(None), *core)]
    found = block_pieces(
        mask_c,
        score_c,
        a_c,
        b_c,
        int(window.row_off),
        int(window.col_off),
        (job.grid.height, job.grid.width),
        job.patch_filter,
    )
    # patches completed in this block and dropped by the filter are "no change" in mask.tif
    # bool True/False -> MASK_CHANGE/MASK_NO_CHANGE (1/0); one pass each, no extra copies
    mask_out = np.where(valid_c, found.mask, np.uint8(MASK_NODATA)).astype(np.uint8, copy=False)
    score_out = np.where(valid_c, score_c, np.float32(np.nan)).astype(np.float32, copy=False)
    return _BlockOutput(window, score_out, mask_out, found.pieces, found.n_small, found.n_low_score)


# --------------------------------------------------------------------------- helpers
class _StepClock:
    """Wall (:func:`time.perf_counter`) and CPU (:func:`time.process_time`, all threads of
    the process) seconds per named step, summed over laps: ``totals["read_wall_s"]`` …"""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, step: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        for kind, dt in (("wall", wall - self._wall), ("cpu", cpu - self._cpu)):
            key = f"{step}_{kind}_s"
            self.totals[key] = self.totals.get(key, 0.0) + dt
        self._wall, self._cpu = wall, cpu


def _add_timings(total: dict[str, float], part: dict[str, float]) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0.0) + value


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


def patch_means(
    sums: np.ndarray, bands: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-patch mean of every band before and after, from the :class:`Pieces` sums
    (:func:`~pipeline.detection.vectorize.sums_columns`); 0 for an empty patch."""
    n = sums[:, 0]
    safe_n = np.where(n > 0, n, 1.0)
    nb = len(bands)
    return (
        {b: sums[:, 2 + i] / safe_n for i, b in enumerate(bands)},
        {b: sums[:, 2 + nb + i] / safe_n for i, b in enumerate(bands)},
    )


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
    safe_n = np.where(n > 0, n, 1.0)
    means_from, means_to = patch_means(sums, bands)
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
