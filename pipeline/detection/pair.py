"""The two-pass blockwise driver: align + detect + vectorize one epoch pair.

:func:`detect_pair` is a sequence of named steps:

1. set-up (:func:`open_pair`): both epochs, the target grid, its blocks, which screens run;
2. pass 1 (:func:`pair_statistics`): a regular sample of every block (every
   ``sample_step``-th global row and column, :func:`sample_pair`) → the normalisation and
   the method's model (:func:`fit_model`) → the threshold (:func:`threshold_cut`);
3. pass 2 (:func:`run_pass2`): each worker streams a region of whole blocks top to bottom
   in row chunks with a halo (:func:`cleanup_reach`), reading every input row once, and
   writes score and mask into the region's own part files; it returns polygon pieces with
   per-label sums (the worker side is :mod:`pipeline.detection.regions`);
4. merge (:func:`merge_patches`): the pieces merged across chunk and region edges, the
   object-level filters;
5. screens (:func:`screen_patches`): cloud or haze, wetting or drying;
6. outputs (:func:`publish_outputs`): the pixels of dropped patches set back to "no change"
   in the mask parts (so ``mask.tif`` is exactly the detections), both rasters published as
   COGs assembled from the parts through a VRT; the stats (:func:`detection_stats`).

Memory stays flat in the image size: the driver never holds a pixel array, a worker holds
at most two chunks of its region per epoch, and the pass-1 threshold sample is capped at
:data:`MAX_SCORE_SAMPLE` pixels.
"""

from __future__ import annotations

import contextlib
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

from pipeline.config import Config, DetectConfig, check_cleanup_radii
from pipeline.detection import context, neighbourhood, sampling
from pipeline.detection import scores as detect
from pipeline.detection.change_type import classify_change
from pipeline.detection.defaults import resolve_detect
from pipeline.detection.io.cogs import RasterSpec, change_pyramid, parts_to_cogs
from pipeline.detection.io.imagery import (
    EpochSource,
    check_masks_overlap,
    epoch_source,
    scene_grid,
)
from pipeline.detection.methods import novelty, selftrain
from pipeline.detection.methods.irmad import IrmadModel, fit_irmad
from pipeline.detection.regions import (
    MASK_CHANGE,
    MASK_NO_CHANGE,
    MASK_NODATA,
    BlockJob,
    ChangeModel,
    detect_region_job,
    pass2_chunk_rows,
    pass2_regions,
    sample_cell_stride,
    sample_cells,
    sample_job,
    score_overviews,
)
from pipeline.detection.screens import cloud_patches, moisture_patches
from pipeline.detection.target_grid import TargetGrid, blocks
from pipeline.detection.vectorize import (
    PatchFilter,
    Pieces,
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
"""Its values: :data:`~pipeline.detection.regions.MASK_CHANGE` and the other ``MASK_*``."""
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


@dataclass(frozen=True)
class DetectionResult:
    """Output of :func:`detect_pair`."""

    detections: gpd.GeoDataFrame
    score_path: Path
    mask_path: Path
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PairInputs:
    """Both epochs of a pair on their target grid (:func:`open_pair`)."""

    labels: tuple[str, str]
    source_a: EpochSource
    source_b: EpochSource
    grid: TargetGrid
    windows: list[Window]  # the blocks of ``detect.block_px``, row-major
    cloud_screen: bool  # whether each patch-level screen runs (setting and bands)
    moisture_screen: bool
    smooth_px: float  # ``detect.smooth_sigma_m`` in pixels; 0 = no smoothing
    detect: DetectConfig  # the detect section with ``method: auto`` resolved for this imagery

    @property
    def bands(self) -> tuple[str, ...]:
        """Every band read: the surface bands first, then the atmospheric ones."""
        return self.source_a.band_names

    @property
    def surface(self) -> tuple[str, ...]:
        """The bands the methods use: the leading ``len(surface)`` rows of a read block."""
        return self.source_a.surface_names


@dataclass(frozen=True, kw_only=True)
class Pass1Result:
    """The regular pass-1 sample of both epochs (:func:`sample_pair`)."""

    moments_a: sampling.Moments  # of the surface bands, over the whole sample
    moments_b: sampling.Moments
    sample_a: np.ndarray  # (surface bands, pixels), canonical (key-sorted) order
    sample_b: np.ndarray
    context: np.ndarray | None  # the selftrain neighbourhood features of the sample
    scene_a: np.ndarray  # scene mean of every band (NaN where a band has no valid pixel)
    scene_b: np.ndarray


@dataclass(frozen=True)
class FittedModel:
    """The global normalisation and the method's model, fitted on the pass-1 sample."""

    norm: sampling.Normalisation
    irmad: IrmadModel | None  # also fitted for selftrain and the irmad_regression normalisation
    model: ChangeModel | None  # what the method scores with (None: a closed-form method)


@dataclass(frozen=True, kw_only=True)
class PairStatistics:
    """What pass 1 leaves for pass 2 (:func:`pair_statistics`)."""

    fitted: FittedModel
    cut: float  # the threshold on the change score
    n_sample: int  # pixels of the sample the cut was taken from
    scene_from: dict[str, float]  # scene mean of every band, before and after
    scene_to: dict[str, float]
    spread: tuple[float, ...]  # per surface band, the std pooled over both epochs


@dataclass(frozen=True)
class CleanupReach:
    """Pixel reach of the mask clean-up, and the halo a pass-2 chunk is read with."""

    open_px: int
    close_px: int
    halo_px: int


@dataclass(frozen=True, kw_only=True)
class Pass2Result:
    """What the pass-2 workers handed back (:func:`run_pass2`), in completion order."""

    pieces: list[tuple[int, int, Pieces]]  # (row_off, col_off, pieces) per chunk
    parts: list[tuple[Window, tuple[str, str]]]  # (region, (score part, mask part))
    score_levels: list[tuple[int, Window, str]]  # (factor, window, file) overview parts
    mask_levels: dict[str, list[tuple[int, Window, str]]]  # the same, by mask part file
    n_small: int  # whole patches the workers dropped below min_area_m2 …
    n_low_score: int  # … and below min_mean_score
    worker_timings: dict[str, float]  # wall / CPU seconds per step, summed over regions


@dataclass(frozen=True, kw_only=True)
class MergedPatches:
    """The patches merged across chunk and region edges (:func:`merge_patches`)."""

    geoms: np.ndarray  # Polygons in global pixel coordinates
    sums: np.ndarray  # per-patch sums, columns :func:`~pipeline.detection.vectorize.sums_columns`
    keep: np.ndarray  # bool: the patch passes the patch filter
    n_small: int  # patches below min_area_m2, the workers' included
    n_before: int  # patches before any filter, the workers' included


@dataclass(frozen=True, kw_only=True)
class ScreenedPatches:
    """The merged patches the screens leave (:func:`screen_patches`)."""

    keep: np.ndarray  # bool: passes the patch filter and every screen
    n_cloud: int
    cloud_m2: float
    n_moisture: int
    moisture_m2: float
    n_context: int
    context_m2: float


@dataclass(frozen=True)
class KeptPatches:
    """The detections and the patches dropped from ``mask.tif`` (:func:`keep_patches`)."""

    detections: gpd.GeoDataFrame
    dropped: np.ndarray  # Polygons in global pixel coordinates
    n_pixels_changed: int


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
    out_dir = Path(out_dir)
    in_flight = max(2, 2 * cfg.run.workers)
    timings: dict = {}
    inputs = open_pair(cfg, pair)
    d = inputs.detect

    t0 = time.perf_counter()
    statistics = pair_statistics(d, inputs, executor, in_flight)
    timings["pass1_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    reach = cleanup_reach(d, inputs.grid.resolution, inputs.smooth_px, statistics.fitted.model)
    patch_filter = make_patch_filter(d, inputs.grid.resolution, statistics.cut)
    job = block_job(d, inputs, statistics, reach, patch_filter)
    specs = output_specs(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # workers write their parts here (a shared folder when the workers are remote)
    parts_dir = Path(tempfile.mkdtemp(prefix=f".{MASK_FILE}.parts-", dir=out_dir))
    try:
        pass2 = run_pass2(job, inputs.windows, d.block_px, executor, in_flight, parts_dir, progress)
        timings["pass2_s"] = time.perf_counter() - t0
        # summed over regions (all workers): compare wall with CPU to see waiting/contention
        timings["pass2_worker"] = {k: round(v, 3) for k, v in sorted(pass2.worker_timings.items())}

        t0 = time.perf_counter()
        merged = merge_patches(pass2, patch_filter, inputs.bands)
        screened = screen_patches(d, inputs, merged, statistics, executor, in_flight)
        kept = keep_patches(inputs, merged, screened.keep, statistics)
        timings["merge_s"] = time.perf_counter() - t0

        # mask.tif = the detections: dropped patches back to "no change", then the COGs
        n_erased, output_timings = publish_outputs(specs, pass2, kept.dropped, inputs, parts_dir)
        timings.update(output_timings)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    _log_summary(d, inputs, merged, screened, kept)
    stats = detection_stats(d, inputs, statistics, reach, merged, screened, kept, n_erased)
    stats["timings"] = timings
    return DetectionResult(kept.detections, specs[0].path, specs[1].path, stats)


# --------------------------------------------------------------------------- set-up
def open_pair(cfg: Config, pair: tuple[str, str]) -> PairInputs:
    """Open both epochs of ``pair``, put them on the target grid and cut it into blocks.

    Raises
    ------
    ConfigError
        No ``area.resolution_m`` and no first file in ``area.crs`` to take it from, or
        clean-up radii too large for the imagery's pixel size.
    InputDataError
        Missing/unreadable imagery, epochs that do not overlap, masks off the grid.
    """
    label_a, label_b = pair
    source_a = epoch_source(cfg.imagery, label_a)
    source_b = epoch_source(cfg.imagery, label_b)
    grid = scene_grid(cfg.area, cfg.imagery, (source_a, source_b))
    d = resolve_detect(cfg.detect, source_a.surface_names, grid.resolution)
    if cfg.area.resolution_m is None:  # the imagery's pixel size: check the radii on it
        check_cleanup_radii(d, grid.resolution, f"on the {grid.resolution:g} m imagery grid")
    check_masks_overlap(source_a, grid)
    check_masks_overlap(source_b, grid)
    windows = blocks(grid, d.block_px)
    log.info("%s→%s: %d blocks of ≤%d px", label_a, label_b, len(windows), d.block_px)
    return PairInputs(
        labels=(label_a, label_b),
        source_a=source_a,
        source_b=source_b,
        grid=grid,
        windows=windows,
        cloud_screen=d.cloud_screen_on(source_a.band_names),
        moisture_screen=d.moisture_screen_on(source_a.surface_names),
        smooth_px=d.smooth_sigma_m / grid.resolution if d.smooth_sigma_m else 0.0,
        detect=d,
    )


# --------------------------------------------------------------------------- pass 1
def pair_statistics(
    d: DetectConfig, inputs: PairInputs, executor: Executor, in_flight: int
) -> PairStatistics:
    """Pass 1: the global statistics and the threshold, from a regular sample of the scene.

    The sample itself is dropped on return: pass 2 needs only its summaries.
    """
    pass1 = sample_pair(d, inputs, executor, in_flight)
    fitted = fit_model(d, inputs.surface, pass1)
    scores = score_sample(d, inputs.surface, pass1, fitted)
    cut = threshold_cut(d, scores, len(inputs.surface), inputs.labels)
    return PairStatistics(
        fitted=fitted,
        cut=cut,
        n_sample=int(scores.size),
        scene_from=dict(zip(inputs.bands, pass1.scene_a)),
        scene_to=dict(zip(inputs.bands, pass1.scene_b)),
        spread=pooled_spread(pass1.moments_a, pass1.moments_b),
    )


def pooled_spread(moments_a: sampling.Moments, moments_b: sampling.Moments) -> tuple[float, ...]:
    """Per band, the standard deviation pooled over both epochs (the context screen's unit,
    whatever ``detect.normalise`` says); 1 for a band constant in both."""
    std_a, std_b = moments_a.mean_std()[1], moments_b.mean_std()[1]
    pooled = np.sqrt((np.square(std_a) + np.square(std_b)) / 2)
    return tuple(float(x) if x > 0 else 1.0 for x in pooled)


def sample_pair(
    d: DetectConfig, inputs: PairInputs, executor: Executor, in_flight: int
) -> Pass1Result:
    """Read the pass-1 sample of both epochs in the workers (:func:`~pipeline.detection.
    regions.sample_job`): every ``sample_step``-th global row and column of the sampled cells,
    thinned to at most :data:`MAX_SCORE_SAMPLE` pixels."""
    grid, ns = inputs.grid, len(inputs.surface)
    n_sample_est = math.ceil(grid.height / d.sample_step) * math.ceil(grid.width / d.sample_step)
    cell_stride = sample_cell_stride(n_sample_est)
    n_sample_est = math.ceil(n_sample_est / cell_stride**2)
    thin = max(1, math.ceil(math.sqrt(n_sample_est / MAX_SCORE_SAMPLE)))
    uses_context = d.method == "selftrain" and (
        d.selftrain_shift_feature or d.selftrain_vegetation_weight
    )
    context_sigma = inputs.smooth_px if uses_context else None
    sample_args = [
        (inputs.source_a, inputs.source_b, grid, cells, d.sample_step, thin, context_sigma)
        for w in inputs.windows
        if (cells := sample_cells(w, cell_stride))
    ]
    chunks = [
        chunk
        for part in _run_bounded(executor, sample_job, sample_args, in_flight)
        for chunk in part
    ]
    mom_a, mom_b, sample_a, sample_b = sampling.combine_samples(chunks)
    # scene means of every band, for the change types and the cloud screen: the surface
    # bands' from their moments, the atmospheric bands' from the sample (gaps are NaN)
    return Pass1Result(
        moments_a=mom_a,
        moments_b=mom_b,
        sample_a=sample_a[:ns],
        sample_b=sample_b[:ns],
        context=sampling.combine_context(chunks),
        scene_a=np.concatenate([mom_a.mean_std()[0], sampling.nan_means(sample_a[ns:])]),
        scene_b=np.concatenate([mom_b.mean_std()[0], sampling.nan_means(sample_b[ns:])]),
    )


def fit_model(d: DetectConfig, surface: tuple[str, ...], pass1: Pass1Result) -> FittedModel:
    """The normalisation and the model of ``detect.method``, fitted on the pass-1 sample.

    Every fit uses the canonical (key-sorted) sample: the same whatever the block size.
    """
    sample_a, sample_b = pass1.sample_a, pass1.sample_b
    irmad = None
    if d.method in ("irmad", "selftrain") or d.normalise == "irmad_regression":
        irmad = fit_irmad(sample_a, sample_b)
    norm = detect.normalisation(
        pass1.moments_a, pass1.moments_b, d.normalise, len(surface), sample_a, sample_b, irmad
    )
    model: ChangeModel | None = irmad if d.method == "irmad" else None
    if d.method == "selftrain":
        model = selftrain.fit_self_train(
            sample_a,
            sample_b,
            irmad,
            change_quantile=d.selftrain_change_quantile,
            nochange_quantile=d.selftrain_nochange_quantile,
            band_names=surface,
            context=pass1.context,
            shift_feature=d.selftrain_shift_feature,
            vegetation_weight=d.selftrain_vegetation_weight,
        )
    if d.method == "novelty":
        model = novelty.fit_novelty_model(
            sample_a,
            sample_b,
            norm,
            n_components=d.novelty_components,
            min_weight=d.novelty_min_weight,
            trim=d.novelty_trim,
        )
    return FittedModel(norm, irmad, model)


def score_sample(
    d: DetectConfig, surface: tuple[str, ...], pass1: Pass1Result, fitted: FittedModel
) -> np.ndarray:
    """The change score of every pixel of the pass-1 sample (1-D), as pass 2 scores them
    (without the spatial smoothing: the sample pixels are not neighbours)."""
    sample_a, sample_b, context = pass1.sample_a, pass1.sample_b, pass1.context
    sample_valid = np.ones(sample_a.shape[1:], dtype=bool)
    scores = detect.change_score(
        sample_a[:, :, None],
        sample_b[:, :, None],
        sample_valid[:, None],
        fitted.norm,
        d.method,
        surface,
        fitted.model,
        None if context is None else context[:, :, None],
    ).ravel()
    model = fitted.model
    if isinstance(model, selftrain.SelfTrainModel) and model.vegetation_ref is not None:
        scores = selftrain.vegetation_weight(scores, context[1], model.vegetation_ref)
    return scores


def threshold_cut(
    d: DetectConfig, scores: np.ndarray, nbands: int, labels: tuple[str, str]
) -> float:
    """The cut of ``detect.threshold`` on the sample ``scores`` of ``nbands`` surface bands;
    warns when more than :data:`CHANGED_SHARE_WARN` of the sample is above it."""
    cut = detect.threshold(
        scores, d.threshold, d.threshold_value, nbands=nbands, squared=d.method == "irmad"
    )
    log.info("threshold %s = %.4f from %d sampled pixels", d.threshold, cut, scores.size)
    above = float(np.mean(scores > cut)) if scores.size else 0.0
    if above > CHANGED_SHARE_WARN:
        log.warning(
            "%s→%s: %.0f %% of the sampled pixels are above the cut %.4g (%s); expected new "
            "construction to be a small share of a scene — check 'detect.threshold' and "
            "'detect.threshold_value'",
            *labels, 100 * above, cut, d.threshold,
        )  # fmt: skip
    return cut


# --------------------------------------------------------------------------- pass 2
def cleanup_reach(
    d: DetectConfig, resolution: float, smooth_px: float, model: ChangeModel | None
) -> CleanupReach:
    """Opening and closing radii in pixels, and the halo every pass-2 chunk is read with:
    the clean-up's reach, the smoothing's, one pixel for the shift-tolerant difference and
    the edge refinement's."""
    open_px = detect.radius_px(d.opening_radius_m, resolution)
    close_px = detect.radius_px(d.closing_radius_m, resolution)
    halo = detect.cleaning_halo(open_px, close_px)
    halo += neighbourhood.smoothing_halo(smooth_px)  # the score's (and the vegetation change's)
    if isinstance(model, selftrain.SelfTrainModel) and model.shift_feature:
        halo += 1  # the shift-tolerant difference looks one pixel around
    if d.edge_ratio is not None:
        halo += detect.EDGE_HALO_PX
    return CleanupReach(open_px, close_px, halo)


def make_patch_filter(d: DetectConfig, resolution: float, cut: float) -> PatchFilter:
    """The object-level filters: ``min_area_m2``, ``min_mean_score`` (× the cut) and, with
    hysteresis, a pixel above the cut."""
    return PatchFilter(
        resolution * resolution,
        d.min_area_m2,
        None if d.min_mean_score is None else d.min_mean_score * cut,
        None if d.hysteresis_low is None else cut,  # hysteresis: a pixel above the cut
    )


def block_job(
    d: DetectConfig,
    inputs: PairInputs,
    statistics: PairStatistics,
    reach: CleanupReach,
    patch_filter: PatchFilter,
) -> BlockJob:
    """Everything a pass-2 worker needs, from the settings and the pass-1 statistics."""
    return BlockJob(
        source_a=inputs.source_a,
        source_b=inputs.source_b,
        grid=inputs.grid,
        method=d.method,
        norm=statistics.fitted.norm,
        cut=statistics.cut,
        hysteresis_low=d.hysteresis_low,
        edge_ratio=d.edge_ratio,
        open_px=reach.open_px,
        close_px=reach.close_px,
        halo=reach.halo_px,
        model=statistics.fitted.model,
        smooth_px=inputs.smooth_px,
        patch_filter=patch_filter,
        score_overviews=score_overviews(inputs.grid, d.block_px),
    )


def run_pass2(
    job: BlockJob,
    windows: list[Window],
    block_px: int,
    executor: Executor,
    in_flight: int,
    parts_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> Pass2Result:
    """Pass 2: the regions of ``windows`` streamed by the workers
    (:func:`~pipeline.detection.regions.detect_region_job`), each writing its own part files
    into ``parts_dir``; ``progress(done, total)`` counts blocks."""
    regions = pass2_regions(windows, block_px)
    chunk_rows = pass2_chunk_rows(block_px)
    args = [(job, region, chunk_rows, str(parts_dir)) for region, _ in regions]
    n_blocks = {(int(r.row_off), int(r.col_off)): n for r, n in regions}
    pieces: list[tuple[int, int, Pieces]] = []
    parts: list[tuple[Window, tuple[str, str]]] = []
    score_levels: list[tuple[int, Window, str]] = []
    mask_levels: dict[str, list[tuple[int, Window, str]]] = {}  # by mask part file
    done = 0
    worker_timings: dict[str, float] = {}
    n_small = n_low = 0
    for out in _run_bounded(executor, detect_region_job, args, in_flight):
        pieces.extend(out.pieces)
        n_small += out.n_small
        n_low += out.n_low_score
        _add_timings(worker_timings, out.timings)
        parts.append((out.region, out.files))
        score_levels.extend(out.overviews)
        mask_levels[out.files[1]] = out.mask_overviews
        done += n_blocks[(int(out.region.row_off), int(out.region.col_off))]
        if progress is not None:
            progress(done, len(windows))
    return Pass2Result(
        pieces=pieces,
        parts=parts,
        score_levels=score_levels,
        mask_levels=mask_levels,
        n_small=n_small,
        n_low_score=n_low,
        worker_timings=worker_timings,
    )


# --------------------------------------------------------------------------- merge
def merge_patches(
    pass2: Pass2Result, patch_filter: PatchFilter, bands: tuple[str, ...]
) -> MergedPatches:
    """The pieces merged across chunk and region edges into patches, with the patch filter
    applied to them (the patches the workers completed were filtered there)."""
    pieces = sorted(pass2.pieces, key=lambda p: (p[0], p[1]))  # deterministic union order
    geoms, sums, peaks = merge_pieces([p for _, _, p in pieces])
    if len(geoms) == 0:
        sums = np.zeros((0, len(sums_columns(bands))))
    return MergedPatches(
        geoms=geoms,
        sums=sums,
        keep=patch_filter.keep(sums[:, 0], sums[:, 1], peaks),
        n_small=int(np.count_nonzero(patch_filter.too_small(sums[:, 0]))) + pass2.n_small,
        n_before=len(geoms) + pass2.n_small + pass2.n_low_score,
    )


# --------------------------------------------------------------------------- screens
def screen_patches(
    d: DetectConfig,
    inputs: PairInputs,
    merged: MergedPatches,
    statistics: PairStatistics,
    executor: Executor | None = None,
    in_flight: int = 2,
) -> ScreenedPatches:
    """The patch-level screens, in order: cloud or haze in one epoch, then wetting or
    drying; each drops the kept patches its rule hits and logs them."""
    scene_from, scene_to = statistics.scene_from, statistics.scene_to
    res = inputs.grid.resolution
    keep, sums = merged.keep.copy(), merged.sums
    # (on, log level, what the patches are, rule)
    screens = (
        (inputs.cloud_screen, logging.WARNING, "cloud or haze in one epoch (detect.cloud_screen)",
         lambda m0, m1: cloud_patches(m0, m1, scene_from, scene_to,
                                      d.cloud_cirrus_ratio, d.cloud_coastal_ratio)),
        (inputs.moisture_screen, logging.INFO, "wetting or drying (detect.moisture_screen)",
         lambda m0, m1: moisture_patches(m0, m1, scene_from, scene_to, d.moisture_ratio)),
    )  # fmt: skip
    screened = []  # (patches, m²) per screen
    any_on = any(s[0] for s in screens) and len(merged.geoms)
    means = patch_means(sums, inputs.bands) if any_on else None
    for on, level, what, rule in screens:
        hit = keep & rule(*means) if on and means is not None else np.zeros_like(keep)
        keep &= ~hit
        screened.append((int(hit.sum()), float(sums[hit, 0].sum()) * res * res))
        if hit.any():
            log.log(
                level, "%s→%s: %d patch(es), %.2f ha, screened as %s; their pixels are "
                "'no change' in %s", *inputs.labels, screened[-1][0],
                screened[-1][1] / 1e4, what, MASK_FILE,
            )  # fmt: skip
    (n_cloud, cloud_m2), (n_moisture, moisture_m2) = screened
    hit = context_screen(d, inputs, merged, keep, statistics, executor, in_flight)
    keep &= ~hit
    n_context, context_m2 = int(hit.sum()), float(sums[hit, 0].sum()) * res * res
    if n_context:
        log.info(
            "%s→%s: %d patch(es), %.2f ha, screened as the change of the ground around them "
            "(detect.context_contrast %.2f); their pixels are 'no change' in %s",
            *inputs.labels, n_context, context_m2 / 1e4, d.context_contrast, MASK_FILE,
        )  # fmt: skip
    return ScreenedPatches(
        keep=keep,
        n_cloud=n_cloud,
        cloud_m2=cloud_m2,
        n_moisture=n_moisture,
        moisture_m2=moisture_m2,
        n_context=n_context,
        context_m2=context_m2,
    )


def context_screen(
    d: DetectConfig,
    inputs: PairInputs,
    merged: MergedPatches,
    keep: np.ndarray,
    statistics: PairStatistics,
    executor: Executor | None = None,
    in_flight: int = 2,
) -> np.ndarray:
    """Bool per merged patch: kept so far, and its change is that of the ground around it
    (contrast under ``detect.context_contrast``, :mod:`pipeline.detection.context`)."""
    hit = np.zeros_like(keep)
    if d.context_contrast is None or not keep.any():
        return hit
    idx = np.flatnonzero(keep)

    def run(fn: Callable, args: list[tuple]) -> Iterable:
        return _run_bounded(executor, fn, args, in_flight)

    contrast = context.patch_contrasts(
        merged.geoms[idx],
        merged.geoms,
        (inputs.source_a, inputs.source_b),
        inputs.grid,
        statistics.spread,
        run if executor is not None else None,
    )
    hit[idx] = contrast < d.context_contrast  # NaN (no ring to compare with): kept
    return hit


def keep_patches(
    inputs: PairInputs, merged: MergedPatches, keep: np.ndarray, statistics: PairStatistics
) -> KeptPatches:
    """The detections (the ``keep`` patches, as :func:`_detections_frame`) and the dropped
    patches."""
    geoms, sums = merged.geoms[keep], merged.sums[keep]
    detections = _detections_frame(
        geoms,
        sums,
        inputs.grid,
        inputs.bands,
        inputs.labels,
        statistics.scene_from,
        statistics.scene_to,
    )
    return KeptPatches(detections, merged.geoms[~keep], int(sums[:, 0].sum()))


# --------------------------------------------------------------------------- outputs
def output_specs(out_dir: Path) -> list[RasterSpec]:
    """``score.tif`` and ``mask.tif`` in ``out_dir``."""
    return [
        RasterSpec(
            out_dir / SCORE_FILE, "float32", float("nan"), "average", compress=OUTPUT_COMPRESS
        ),
        RasterSpec(out_dir / MASK_FILE, "uint8", MASK_NODATA, "nearest", compress=OUTPUT_COMPRESS),
    ]


def publish_outputs(
    specs: list[RasterSpec],
    pass2: Pass2Result,
    dropped: np.ndarray,
    inputs: PairInputs,
    parts_dir: Path,
) -> tuple[int, dict[str, float]]:
    """Erase the ``dropped`` patches from the mask parts (so ``mask.tif`` is exactly the
    detections), then assemble both COGs from the parts; returns the pixels erased and the
    timings of both steps."""
    timings = {}
    t0 = time.perf_counter()
    n_erased = erase_dropped(
        [(w, files[1]) for w, files in pass2.parts], dropped, pass2.mask_levels
    )
    timings["erase_s"] = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    all_mask_levels = [level for levels in pass2.mask_levels.values() for level in levels]
    parts_to_cogs(specs, pass2.parts, inputs.grid, parts_dir, [pass2.score_levels, all_mask_levels])
    timings["cog_s"] = time.perf_counter() - t0
    timings["cog_cpu_s"] = time.process_time() - c0  # GDAL's threads included
    return n_erased, timings


def _log_summary(
    d: DetectConfig,
    inputs: PairInputs,
    merged: MergedPatches,
    screened: ScreenedPatches,
    kept: KeptPatches,
) -> None:
    n_patches = len(kept.detections)
    log.info(
        "%s→%s: %d changed pixels, %d patches (dropped: %d below %.0f m² or the mean score, "
        "%d cloud, %d wetting/drying, %d like their surroundings)",
        *inputs.labels,
        kept.n_pixels_changed,
        n_patches,
        merged.n_before - _n_screened(screened) - n_patches,
        d.min_area_m2,
        screened.n_cloud,
        screened.n_moisture,
        screened.n_context,
    )


def _n_screened(screened: ScreenedPatches) -> int:
    return screened.n_cloud + screened.n_moisture + screened.n_context


def detection_stats(
    d: DetectConfig,
    inputs: PairInputs,
    statistics: PairStatistics,
    reach: CleanupReach,
    merged: MergedPatches,
    screened: ScreenedPatches,
    kept: KeptPatches,
    n_erased: int,
) -> dict:
    """``DetectionResult.stats`` without the timings: settings, threshold, normalisation,
    grid and counts."""
    norm, model, irmad = statistics.fitted.norm, statistics.fitted.model, statistics.fitted.irmad
    surface, grid = inputs.surface, inputs.grid
    n_patches = len(kept.detections)
    return {
        "method": d.method,
        "normalise": d.normalise,
        "threshold_method": d.threshold,
        "threshold": statistics.cut,
        "mean_from": dict(zip(surface, norm.mean_a)),
        "std_from": dict(zip(surface, norm.std_a)),
        "mean_to": dict(zip(surface, norm.mean_b)),
        "std_to": dict(zip(surface, norm.std_b)),
        "n_sample": statistics.n_sample,
        "novelty_weights": (
            list(model.weights) if isinstance(model, novelty.NoveltyModel) else None
        ),
        "irmad_rho": list(irmad.rho) if irmad is not None else None,
        "n_blocks": len(inputs.windows),
        "block_px": d.block_px,
        "halo_px": reach.halo_px,
        "opening_px": reach.open_px,
        "closing_px": reach.close_px,
        "grid": {
            "width": grid.width,
            "height": grid.height,
            "bounds": grid.bounds,
            "res": grid.resolution,
        },
        "n_pixels_changed": kept.n_pixels_changed,
        "n_patches": n_patches,
        "n_patches_below_min_area": merged.n_small,
        "n_pixels_erased": n_erased,
        "n_patches_below_min_mean_score": (
            merged.n_before - merged.n_small - _n_screened(screened) - n_patches
        ),
        "cloud_screen": inputs.cloud_screen,
        "n_patches_cloud": screened.n_cloud,
        "cloud_m2": screened.cloud_m2,
        "moisture_screen": inputs.moisture_screen,
        "n_patches_moisture": screened.n_moisture,
        "moisture_m2": screened.moisture_m2,
        "context_contrast": d.context_contrast,
        "n_patches_context": screened.n_context,
        "context_m2": screened.context_m2,
    }


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
                if sub.width <= 0 or sub.height <= 0:  # touches the part only on its edge
                    continue
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


# --------------------------------------------------------------------------- helpers
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
