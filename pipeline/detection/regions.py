"""The scene cut into work units, and the jobs the workers run on them.

Pass 1 reads sampled cells of :data:`SAMPLE_CELL_PX` (:func:`sample_cells`, one in
``stride²`` on large scenes) in :func:`sample_job`. Pass 2 hands each worker a region of whole
blocks (:func:`pass2_regions`); :func:`detect_region_job` streams it top to bottom in row
chunks with a halo (:func:`region_chunks`), reading every input row once: read both epochs
onto the grid → score → threshold → refine edges → clean → crop the halo → write score and
mask into the region's own part files (with their overview levels) → polygon pieces with
per-label sums. The driver (:mod:`pipeline.detection.pair`) builds the :class:`BlockJob`,
merges the pieces and publishes the parts; nothing here imports it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.io import DatasetWriter
from rasterio.windows import Window
from threadpoolctl import threadpool_limits

from pipeline.detection import neighbourhood, sampling
from pipeline.detection import scores as detect
from pipeline.detection.io.cogs import (
    change_pyramid,
    decimated_grid,
    mean_pyramid,
    overview_factors,
    part_writer,
)
from pipeline.detection.io.imagery import READ_ROWS_PX, EpochSource, RowStream, read_block
from pipeline.detection.methods import novelty, selftrain
from pipeline.detection.methods.irmad import IrmadModel
from pipeline.detection.target_grid import TargetGrid
from pipeline.detection.vectorize import PatchFilter, Pieces, block_pieces

MASK_CHANGE, MASK_NO_CHANGE, MASK_NODATA = 1, 0, 255
"""Values of ``mask.tif``: 1 = a pixel of a returned detection, 0 = no change (including the
pixels of patches dropped by ``min_area_m2`` / ``min_mean_score`` / the screens), 255 = invalid
(nodata/masked in either epoch). ``mask == 1`` is exactly the union of the detections."""
ChangeModel = novelty.NoveltyModel | IrmadModel | selftrain.SelfTrainModel
"""The fitted model a method scores with (``None`` for the closed-form methods)."""
REGION_PX = 5120
"""Pass 2 hands each worker a region of whole blocks about this many pixels wide and
:data:`REGION_ROWS_PX` tall (2 for a 10240² scene). The worker streams the region top to
bottom in chunks of :data:`CHUNK_ROWS_PX` rows over its full width
(:class:`~pipeline.detection.io.imagery.RowStream`), so every input tile is decoded once,
plus one tile row or column under the halo at each region edge — tall regions have fewer
such edges than square ones of the same width (at 10240²: 10 % of the tiles decoded twice
instead of 20 %) at the same worker memory. Each worker writes its score and mask into its own part
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


@dataclass(frozen=True, kw_only=True)
class BlockJob:
    """Everything a pass-2 worker needs (picklable); built by keyword."""

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
    model: ChangeModel | None = None
    smooth_px: float = 0.0
    patch_filter: PatchFilter | None = None
    score_overviews: tuple[int, ...] = ()  # factors of the overviews the worker builds


@dataclass(kw_only=True)
class RegionOutput:
    """What :func:`detect_region_job` hands back to the driver for one region."""

    region: Window
    files: tuple[str, str]  # score and mask part files
    pieces: list[tuple[int, int, Pieces]]  # (row_off, col_off, pieces) per chunk
    timings: dict[str, float] = field(default_factory=dict)  # worker wall / CPU per step
    n_small: int = 0  # whole patches dropped in the worker by the patch filter
    n_low_score: int = 0
    overviews: list[tuple[int, Window, str]] = field(default_factory=list)  # score levels
    mask_overviews: list[tuple[int, Window, str]] = field(default_factory=list)


@dataclass(kw_only=True)
class BlockOutput:
    """One chunk (or block) of pass 2, halo cropped: :func:`detect_block`'s result."""

    window: Window
    score: np.ndarray  # float32, NaN where invalid
    mask: np.ndarray  # uint8, MASK_* values
    pieces: Pieces
    n_small: int = 0
    n_low_score: int = 0


# --------------------------------------------------------------------------- work units
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
    chunk_rows = pass2_chunk_rows(block_px)
    return tuple(factors) if block_px % top == 0 and chunk_rows % top == 0 else ()


def pass2_chunk_rows(block_px: int) -> int:
    """Rows per pass-2 chunk: :data:`CHUNK_ROWS_PX`, at most ``block_px``."""
    return min(block_px, CHUNK_ROWS_PX)


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


# --------------------------------------------------------------------------- worker tasks
def one_blas_thread(job: Callable) -> Callable:
    """Run the worker task ``job`` with one BLAS thread.

    The pool sets ``OPENBLAS_NUM_THREADS=1`` in each worker, but a worker whose process
    imported numpy before that (the forkserver preloads the main module) keeps one BLAS
    thread per core: two workers on two cores then ran every matrix product of the scores
    on four threads, and pass 2 took three times its CPU time. The limit is set per task,
    at run time, where it always holds.
    """

    @functools.wraps(job)
    def run(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return job(*args, **kwargs)

    return run


@one_blas_thread
def sample_job(
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


@one_blas_thread
def detect_region_job(
    job: BlockJob, region: Window, chunk_rows: int, parts_dir: str
) -> RegionOutput:
    """Pass 2 for one region (runs in a worker): stream it top to bottom in chunks of
    ``chunk_rows`` rows over its full width, each input row read once
    (:class:`~pipeline.detection.io.imagery.RowStream`), write score and mask into this
    region's part files and return the polygon pieces of every chunk."""
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
    factors = job.score_overviews
    overviews, mask_overviews = (
        level_parts(parts_dir, kind, region, factors) for kind in ("score", "mask")
    )
    pieces = []
    n_small = n_low = 0
    clock = _StepClock()
    with contextlib.ExitStack() as stack:
        writers = _PartWriters.open(stack, job.grid, region, files, overviews, mask_overviews)
        top = factors[-1] if factors else 1
        for y, ch in region_chunks(r0, h, chunk_rows, halo, READ_ROWS_PX, top):
            a, va = stream_a.rows(y - halo, y + ch + halo)
            b, vb = stream_b.rows(y - halo, y + ch + halo)
            clock.lap("read")
            out = detect_block(job, Window(c0, y, w, ch), (a, va, b, vb))
            clock.lap("detect")
            writers.write(out, y - r0)
            pieces.append((y, c0, out.pieces))
            n_small += out.n_small
            n_low += out.n_low_score
            clock.lap("write")
    clock.lap("close")
    return RegionOutput(
        region=region,
        files=files,
        pieces=pieces,
        timings=clock.totals,
        n_small=n_small,
        n_low_score=n_low,
        overviews=overviews,
        mask_overviews=mask_overviews,
    )


def level_parts(
    parts_dir: str, kind: str, region: Window, factors: tuple[int, ...]
) -> list[tuple[int, Window, str]]:
    """(factor, window on the overview grid, part file) of each overview level of the
    ``kind`` (``"score"`` or ``"mask"``) part of ``region``."""
    r0, c0 = int(region.row_off), int(region.col_off)
    h, w = int(region.height), int(region.width)
    return [
        (
            f,
            Window(c0 // f, r0 // f, -(-w // f), -(-h // f)),
            str(Path(parts_dir) / f"{kind}_ov{f}_{r0}_{c0}.tif"),
        )
        for f in factors
    ]


@dataclass(frozen=True)
class _PartWriters:
    """The open part files of one region: score, mask and their overview levels."""

    score: DatasetWriter
    mask: DatasetWriter
    factors: tuple[int, ...]  # of the overview levels, increasing
    levels: list[tuple[DatasetWriter, DatasetWriter]]  # (score, mask) per factor

    @classmethod
    def open(
        cls,
        stack: contextlib.ExitStack,
        grid: TargetGrid,
        region: Window,
        files: tuple[str, str],
        overviews: list[tuple[int, Window, str]],
        mask_overviews: list[tuple[int, Window, str]],
    ) -> _PartWriters:
        """Open every part file of ``region`` on ``stack`` (closed when it closes)."""
        score = stack.enter_context(part_writer(files[0], grid, region, "float32", float("nan")))
        mask = stack.enter_context(part_writer(files[1], grid, region, "uint8", MASK_NODATA))
        level_dsts = [
            stack.enter_context(
                part_writer(path, decimated_grid(grid, f), win, "float32", float("nan"))
            )
            for f, win, path in overviews
        ]
        mask_level_dsts = [
            stack.enter_context(
                part_writer(path, decimated_grid(grid, f), win, "uint8", MASK_NODATA)
            )
            for f, win, path in mask_overviews
        ]
        factors = tuple(f for f, _, _ in overviews)
        return cls(score, mask, factors, list(zip(level_dsts, mask_level_dsts)))

    def write(self, out: BlockOutput, row: int) -> None:
        """Write a chunk's score and mask at ``row`` of the part, and their overview levels."""
        part_window = Window(0, row, out.score.shape[1], out.score.shape[0])
        self.score.write(out.score, 1, window=part_window)
        self.mask.write(out.mask, 1, window=part_window)
        if not self.factors:
            return
        # chunks start on multiples of the largest factor: their levels are whole rows
        levels = zip(
            self.factors,
            self.levels,
            mean_pyramid(out.score, self.factors),
            change_pyramid(out.mask, self.factors, MASK_CHANGE, MASK_NO_CHANGE, MASK_NODATA),
        )
        for f, (dst, mask_dst), level, mask_level in levels:
            level_window = Window(0, row // f, level.shape[1], level.shape[0])
            dst.write(level, 1, window=level_window)
            mask_dst.write(mask_level, 1, window=level_window)


def detect_block(
    job: BlockJob,
    window: Window,
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> BlockOutput:
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
    if valid_c.all():  # the usual block: plain contiguous copies, no selection
        mask_out = found.mask.astype(np.uint8)
        score_out = np.ascontiguousarray(score_c, dtype=np.float32)
    else:
        mask_out = np.where(valid_c, found.mask, np.uint8(MASK_NODATA)).astype(np.uint8)
        score_out = np.where(valid_c, score_c, np.float32(np.nan)).astype(np.float32)
    return BlockOutput(
        window=window,
        score=score_out,
        mask=mask_out,
        pieces=found.pieces,
        n_small=found.n_small,
        n_low_score=found.n_low_score,
    )


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
