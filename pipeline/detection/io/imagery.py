"""Reading the imagery of one epoch onto the target grid, one window at a time.

An :class:`EpochSource` is a small, picklable description of an epoch (files, which band of
which file holds which named band, nodata, mask files, resampling). :func:`read_block` turns
it into a float32 array on a window of the :class:`~pipeline.detection.target_grid.TargetGrid`: files already
on the grid are read directly; others go through :class:`rasterio.vrt.WarpedVRT` built for
exactly that window. Datasets are opened lazily, once per process, because rasterio datasets
cannot be pickled into worker processes.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as warp_points
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from pipeline.bands import surface_bands, surface_first
from pipeline.config import AreaConfig, ImageryConfig
from pipeline.detection.target_grid import (
    Footprint,
    GridReference,
    TargetGrid,
    expand,
    row_strips,
    same_pixel_size,
    target_grid,
)
from pipeline.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

GDAL_CACHE_MB = 64
"""GDAL block cache per process (set through ``GDAL_CACHEMAX`` before the first open, unless
already set). Reads go through :class:`RowStream` in tile-aligned slabs, each tile decoded
once, so the cache is hardly re-used: 256 MB only added ~200 MB RSS per worker at 10240²
without a measurable speed difference."""

WARP_TOLERANCE_PX = 1e-9
"""Error allowed when GDAL approximates the reprojection (its default is 0.125 px). A tiny
value makes GDAL's approximate transformer effectively exact, so a pixel's value does not
depend on which block it was warped in (block-size independence), at some CPU cost. (0 is
not accepted by rasterio's WarpedVRT: it then installs no transformer at all.)"""

ALIGN_EPS_PX = 1e-6
"""A file is "on the grid" when its origin is a whole number of pixels away within this."""


@dataclass(frozen=True)
class BandSource:
    """One file and which of the epoch's named bands it holds.

    ``positions[i]`` is the index into :attr:`EpochSource.band_names` filled from band number
    ``indexes[i]`` of ``path``.
    """

    path: str
    positions: tuple[int, ...]
    indexes: tuple[int, ...]


@dataclass(frozen=True)
class EpochSource:
    """Picklable description of one epoch's imagery.

    Notes
    -----
    ``files`` is in sorted file order; when files overlap, the first file with a valid pixel
    wins (per band for one-file-per-band inputs, jointly for multi-band files). ``nodata``
    None means: use each file's own nodata value (if any). ``band_names`` lists the surface
    bands first and the :data:`~pipeline.bands.ATMOSPHERIC_BANDS` last
    (:func:`~pipeline.bands.surface_first`): a read block's surface bands are its leading
    ``len(surface_names)`` rows.
    """

    label: str
    band_names: tuple[str, ...]
    files: tuple[BandSource, ...]
    nodata: float | None = None
    mask_files: tuple[str, ...] = ()
    resampling: str = "bilinear"
    offset: float = 0.0
    """Added to every valid value read (``imagery.offset``)."""

    @property
    def surface_names(self) -> tuple[str, ...]:
        """The bands the change methods use (all but the atmospheric ones)."""
        return surface_bands(self.band_names)

    @property
    def n_surface(self) -> int:
        return len(self.surface_names)


# --------------------------------------------------------------------------- building sources
def epoch_source(imagery: ImageryConfig, label: str) -> EpochSource:
    """The :class:`EpochSource` of epoch ``label`` from the ``imagery`` config section.

    Raises
    ------
    ConfigError
        If ``label`` is not a configured epoch.
    InputDataError
        If the epoch's globs match no file, or a band pattern matches none of its files.
    """
    if label not in imagery.epochs:
        raise ConfigError(
            f"epoch {label!r} is not in 'imagery.epochs' (configured: {', '.join(imagery.epochs)})"
        )
    paths = [str(p) for p in imagery.files(label)]
    if not paths:
        raise InputDataError(
            f"epoch {label!r}: the globs {list(imagery.epochs[label])} match no file "
            f"(relative to {imagery.base_dir}); expected GeoTIFF/COG files"
        )
    names = surface_first(imagery.band_names)
    files: list[BandSource] = []
    if imagery.bands is not None:
        positions = tuple(range(len(names)))
        indexes = tuple(int(imagery.bands[n]) for n in names)
        top = max(indexes)
        for p in paths:
            if (count := _open(p).count) < top:
                name = names[indexes.index(top)]
                raise InputDataError(
                    f"{p}: has {count} band(s), but 'imagery.bands.{name}' = {top} reads band "
                    f"{top}; expected every file of epoch {label!r} to hold the configured "
                    "bands — fix 'imagery.bands' or leave the file out of the epoch globs"
                )
        files = [BandSource(p, positions, indexes) for p in paths]
    else:
        assert imagery.band_files is not None
        for pos, name in enumerate(names):
            pattern = imagery.band_files[name]
            matched = [p for p in paths if _matches(p, pattern)]
            if not matched:
                raise InputDataError(
                    f"epoch {label!r}: band {name!r} pattern {pattern!r} matches none of the "
                    f"epoch's {len(paths)} files (e.g. {Path(paths[0]).name}); fix "
                    f"'imagery.band_files.{name}' or the epoch globs"
                )
            files.extend(BandSource(p, (pos,), (1,)) for p in matched)
        _check_tiles_complete(label, names, files)
        files.sort(key=lambda b: (b.path, b.positions))
    mask_files = tuple(str(p) for p in imagery.mask_files(label))
    if imagery.masks and label in imagery.masks and not mask_files:
        raise InputDataError(
            f"epoch {label!r}: the mask globs {list(imagery.masks[label])} match no file "
            f"(relative to {imagery.base_dir}); fix 'imagery.masks.{label}' or remove it"
        )
    return EpochSource(
        label=label,
        band_names=names,
        files=tuple(files),
        nodata=imagery.nodata,
        mask_files=mask_files,
        resampling=imagery.resampling,
        offset=imagery.offset_for(label),
    )


def _check_tiles_complete(label: str, names: Sequence[str], files: Sequence[BandSource]) -> None:
    """Every band covers every tile of a one-file-per-band epoch: the centre of each band
    file lies inside some file of every other band (footprints in the first file's CRS, so
    names, folders and resolutions do not matter).

    Raises
    ------
    InputDataError
        Naming a file and the band(s) with no file there — read as is, those pixels would
        silently be nodata in that band, and so invalid.
    """
    crs = _open(files[0].path).crs
    boxes = {b.path: transform_bounds(_open(b.path).crs, crs, *_open(b.path).bounds) for b in files}
    by_band: dict[int, list[tuple[float, float, float, float]]] = {}
    for b in files:
        by_band.setdefault(b.positions[0], []).append(boxes[b.path])
    for b in files:
        x0, y0, x1, y1 = boxes[b.path]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        missing = [
            names[pos]
            for pos, band_boxes in sorted(by_band.items())
            if not any(bx0 <= cx <= bx1 and by0 <= cy <= by1 for bx0, by0, bx1, by1 in band_boxes)
        ]
        if missing:
            raise InputDataError(
                f"epoch {label!r}: no {', '.join(missing)} file covers the area of {b.path} "
                f"({names[b.positions[0]]}); expected every configured band for every tile — "
                "add the missing file(s), or leave the tile out of the epoch globs"
            )


def check_masks_overlap(source: EpochSource, grid: TargetGrid) -> None:
    """At least one of the epoch's mask files meets the target grid.

    Raises
    ------
    InputDataError
        When masks are configured but none overlaps the grid (a mask in the wrong place or
        CRS would otherwise be ignored without a word).
    """
    if not source.mask_files:
        return
    whole = Window(0, 0, grid.width, grid.height)
    if not any(_overlaps(p, grid, whole) for p in source.mask_files):
        raise InputDataError(
            f"epoch {source.label!r}: none of its {len(source.mask_files)} mask file(s) "
            f"(e.g. {source.mask_files[0]}) overlaps the scene {tuple(round(v) for v in grid.bounds)} "
            f"in {grid.rio_crs.to_string()}; check the masks' CRS and extent"
        )


def epoch_footprint(source: EpochSource) -> Footprint:
    """Bounding box of all files of ``source``, in the CRS of its first file."""
    paths = sorted({b.path for b in source.files})
    crs = _open(paths[0]).crs
    boxes = [transform_bounds(_open(p).crs, crs, *_open(p).bounds) for p in paths]
    bounds = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    return Footprint(crs.to_wkt(), bounds)


def grid_reference(imagery: ImageryConfig, sources: Sequence[EpochSource] = ()) -> GridReference:
    """The file whose pixels the target grid follows: the first file (sorted) of the first
    epoch in ``imagery.epochs``; with ``imagery.band_files``, its first file of the first
    surface band configured.

    ``sources``: epochs already opened (the first epoch's is reused when among them).
    """
    label = imagery.labels[0]
    source = next((s for s in sources if s.label == label), None)
    if source is None:
        source = epoch_source(imagery, label)
    path = next(b.path for b in source.files if 0 in b.positions)
    ds = _open(path)
    return GridReference(path, ds.crs.to_wkt(), ds.transform, ds.width, ds.height)


def scene_grid(
    area: AreaConfig, imagery: ImageryConfig, sources: Sequence[EpochSource]
) -> TargetGrid:
    """The target grid of the epochs ``sources`` (a pair): where they overlap (or
    ``area.bounds``), on the pixels of :func:`grid_reference` when it can
    (:func:`~pipeline.detection.target_grid.target_grid`)."""
    footprints = [epoch_footprint(s) for s in sources]
    return target_grid(area, footprints, grid_reference(imagery, sources))


# --------------------------------------------------------------------------- reading
def read_block(
    source: EpochSource,
    grid: TargetGrid,
    window: Window,
    halo: int = 0,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` (grown by ``halo`` px) of the epoch onto the target grid.

    ``out``, optional: (data, valid) arrays of the returned shapes to fill and return (views
    into a larger buffer are fine); on the common on-grid path GDAL decodes straight into
    them, with no intermediate array.

    Returns
    -------
    data : ndarray, float32, shape (nbands, h, w)
        Values (the files' scale, plus :attr:`EpochSource.offset`) in the order of
        ``source.band_names``; 0 where invalid.
        An atmospheric band (the last rows, :attr:`EpochSource.n_surface` on) is NaN where it
        has no data at a valid pixel.
    valid : ndarray, bool, shape (h, w)
        True where every surface band has data, no mask file says 0, and the pixel is on the
        grid. The atmospheric bands do not take part: a gap in the cirrus band must not
        remove pixels from the change methods, which never read it.

    Raises
    ------
    InputDataError
        A file cannot be opened or decoded (the message names it).

    Notes
    -----
    Pixels of the halo outside the grid are always invalid, so a block at the grid edge
    sees the same neighbourhood as it would in a whole-image computation padded with
    invalid pixels. Mask files: non-zero = usable, 0 = cloud/invalid; pixels no mask file
    covers are treated as usable.
    """
    data, valid = _read_raw(source, grid, expand(window, halo), out)
    if source.offset:
        # after the nodata test, on valid pixels only (invalid ones stay 0)
        np.add(data, np.float32(source.offset), out=data, where=valid)
    return data, valid


def _read_raw(
    source: EpochSource,
    grid: TargetGrid,
    win: Window,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_block` of the already grown window ``win``, without the offset."""
    fast = _read_single_aligned(source, grid, win, out)
    if fast is not None:
        return fast
    if out is not None:
        data, valid = _read_raw(source, grid, win)
        out[0][...] = data
        out[1][...] = valid
        return out
    h, w = int(win.height), int(win.width)
    nb = len(source.band_names)
    data = np.zeros((nb, h, w), dtype=np.float32)
    filled = np.zeros((nb, h, w), dtype=bool)
    resampling = Resampling[source.resampling]
    for band_source in source.files:
        if not _overlaps(band_source.path, grid, win):
            continue
        arr, ok = _read_file(
            band_source.path, grid, win, band_source.indexes, source.nodata, resampling
        )
        for j, pos in enumerate(band_source.positions):
            take = ok & ~filled[pos]
            data[pos][take] = arr[j][take]
            filled[pos] |= take
    ns = source.n_surface
    valid = filled[:ns].all(axis=0)
    if source.mask_files:
        valid &= _read_masks(source.mask_files, grid, win)
    valid &= _on_grid(grid, win)
    data[:, ~valid] = 0.0
    if ns < nb:
        data[ns:][~filled[ns:] & valid] = np.nan
    return data, valid


READ_ROWS_PX = 512
""":class:`RowStream` reads in slabs ending on multiples of this many global rows (the usual
tile height of the inputs), so every input tile under a strip is decoded exactly once."""


class RowStream:
    """The rows of one epoch on a fixed column range of the grid, read top to bottom once.

    ``rows(r0, r1)`` returns rows ``[r0, r1)``; successive calls must not go back up (``r0``
    never decreases). Rows already read are kept while a later call can still need them, so
    the halo rows two neighbouring chunks share are read once, and reads are issued in slabs
    ending on multiples of ``align`` global rows: on inputs tiled on the grid every tile is
    decoded once, instead of up to four times under the halos of separate block reads.

    Parameters
    ----------
    source, grid
        As for :func:`read_block`.
    col_off, width : int
        Columns of the grid to read (may extend past the grid: those pixels are invalid).
    row_end : int
        Last row (exclusive) any call will ask for: slabs never read past it.
    align : int
        Slab boundary in global rows (:data:`READ_ROWS_PX`).

    Notes
    -----
    Values are identical to :func:`read_block` on the same pixels (it is what reads each
    slab). Memory: one reused buffer of at most ``r1 - r0 + align`` rows × ``width`` ×
    bands float32; returned arrays are views into it, overwritten by later calls.
    """

    def __init__(
        self,
        source: EpochSource,
        grid: TargetGrid,
        col_off: int,
        width: int,
        row_end: int,
        align: int = READ_ROWS_PX,
    ) -> None:
        self.source, self.grid = source, grid
        self.col_off, self.width, self.row_end, self.align = col_off, width, row_end, align
        self._nb = len(source.band_names)
        # rows [_r0, _r1) sit at buffer rows [_start, _start + _r1 - _r0)
        self._data = np.zeros((self._nb, 0, width), dtype=np.float32)
        self._valid = np.zeros((0, width), dtype=bool)
        self._start = 0
        self._r0 = self._r1 = None

    def rows(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        """(data (nbands, r1 - r0, width) float32, valid (r1 - r0, width) bool) of rows
        ``[r0, r1)``; views into the stream's buffer, valid until the next call."""
        if self._r0 is None:
            self._r0 = self._r1 = r0
        if r0 < self._r0:
            raise ValueError(f"RowStream: rows {r0}.. asked after {self._r0}..; read top down")
        if r0 > self._r1:  # a gap: nothing buffered is needed any more
            self._r0 = self._r1 = r0
        self._start += r0 - self._r0
        self._r0 = r0
        if self._r1 < r1:
            stop = min(max(r1, -(-r1 // self.align) * self.align), max(self.row_end, r1))
            win = Window(self.col_off, self._r1, self.width, stop - self._r1)
            s = self._make_room(stop - self._r1)
            n_new = stop - self._r1
            read_block(
                self.source,
                self.grid,
                win,
                out=(self._data[:, s : s + n_new], self._valid[s : s + n_new]),
            )
            self._r1 = stop
        i, n = self._start, r1 - r0
        return self._data[:, i : i + n], self._valid[i : i + n]

    def _make_room(self, n_new: int) -> int:
        """Make room for ``n_new`` rows after the kept ones in the reused buffer (moving the
        kept rows to its top when the new rows do not fit below them) and return the buffer
        row where they go. Compared with concatenating (a new buffer per call) this copies
        only the kept rows and never holds two buffers at once; the new rows are decoded
        straight into place. No slack is allocated, to keep worker memory flat."""
        kept = self._r1 - self._r0
        need = kept + n_new
        if self._start + need > self._data.shape[1]:
            if need > self._data.shape[1]:  # grow (first call, or larger requests)
                data = np.empty((self._nb, need, self.width), dtype=np.float32)
                valid = np.empty((need, self.width), dtype=bool)
            else:
                data, valid = self._data, self._valid
            s = self._start
            data[:, :kept] = self._data[:, s : s + kept]  # overlap-safe in numpy
            valid[:kept] = self._valid[s : s + kept]
            self._data, self._valid, self._start = data, valid, 0
        return self._start + kept


def _read_single_aligned(
    source: EpochSource,
    grid: TargetGrid,
    win: Window,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The common case, fast: one on-grid multi-band file holds every band of ``win``.

    Returns None (use the general path) unless exactly one file overlaps ``win``, it holds
    all bands, is on the grid, covers ``win`` entirely and there are no mask files. Then
    GDAL decodes straight into a float32 array (no temporaries, no per-band copies) and the
    result is identical to the general path's.
    """
    if source.mask_files:
        return None
    hits = [b for b in source.files if _overlaps(b.path, grid, win)]
    if len(hits) != 1 or sorted(hits[0].positions) != list(range(len(source.band_names))):
        return None
    band_source = hits[0]
    ds = _open(band_source.path)
    offsets = _grid_offsets(ds, grid)
    if offsets is None:
        return None
    h, w = int(win.height), int(win.width)
    # the part of the window on the grid (a halo may stick out); the file must cover it
    rs, re_ = max(int(win.row_off), 0), min(int(win.row_off) + h, grid.height)
    cs, ce = max(int(win.col_off), 0), min(int(win.col_off) + w, grid.width)
    if rs >= re_ or cs >= ce:
        return None
    fc, fr = cs + offsets[0], rs + offsets[1]
    if fc < 0 or fr < 0 or fc + (ce - cs) > ds.width or fr + (re_ - rs) > ds.height:
        return None
    order = np.argsort(band_source.positions)
    indexes = [band_source.indexes[i] for i in order]
    inner = (
        slice(rs - int(win.row_off), re_ - int(win.row_off)),
        slice(cs - int(win.col_off), ce - int(win.col_off)),
    )
    whole = (re_ - rs, ce - cs) == (h, w)
    nb = len(indexes)
    if out is None:
        data = np.empty((nb, h, w), dtype=np.float32) if whole else np.zeros((nb, h, w), np.float32)
        valid = np.zeros((h, w), dtype=bool)
    else:
        data, valid = out
        if not whole:
            data[...] = 0.0
            valid[...] = False
    part = data[(slice(None), *inner)]
    try:
        ds.read(indexes, window=Window(fc, fr, ce - cs, re_ - rs), out=part)
    except RasterioError as exc:
        raise InputDataError(
            f"{band_source.path}: reading failed ({exc}); the file is damaged or not a "
            "readable raster — re-download or remove it"
        ) from exc
    nodata = source.nodata if source.nodata is not None else ds.nodata
    ns = source.n_surface
    ok = _not_nodata(part[:ns], nodata)
    # atmospheric bands: a gap is NaN at a valid pixel (computed before the zeroing below)
    gaps = ~_not_nodata(part[ns:], nodata, each=True) if ns < nb and nodata is not None else None
    if not ok.all():
        part *= ok  # 0 where invalid, in place
        if nodata is not None and np.isnan(nodata):
            part[:, ~ok] = 0.0  # NaN * 0 is NaN
    if gaps is not None and gaps.any():
        part[ns:][gaps & ok] = np.nan
    valid[inner] = ok
    return data, valid


def _read_masks(paths: Sequence[str], grid: TargetGrid, win: Window) -> np.ndarray:
    usable = np.ones((int(win.height), int(win.width)), dtype=bool)
    covered = np.zeros_like(usable)
    for path in paths:
        if not _overlaps(path, grid, win):
            continue
        arr, ok = _read_file(path, grid, win, (1,), None, Resampling.nearest, coverage_only=True)
        take = ok & ~covered
        usable[take] = arr[0][take] != 0
        covered |= take
    return usable


def _on_grid(grid: TargetGrid, win: Window) -> np.ndarray:
    rows = np.arange(int(win.row_off), int(win.row_off) + int(win.height))
    cols = np.arange(int(win.col_off), int(win.col_off) + int(win.width))
    return ((rows >= 0) & (rows < grid.height))[:, None] & ((cols >= 0) & (cols < grid.width))[
        None, :
    ]


def _read_file(
    path: str,
    grid: TargetGrid,
    win: Window,
    indexes: tuple[int, ...],
    nodata: float | None,
    resampling: Resampling,
    coverage_only: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Values (k, h, w) float32 and a validity mask (h, w) of one file on ``win``.

    With ``coverage_only`` the mask says only where the file has pixels (nodata ignored).
    """
    ds = _open(path)
    if nodata is None and not coverage_only:
        nodata = ds.nodata
    try:
        offsets = _grid_offsets(ds, grid)
        if offsets is not None:
            return _read_aligned(ds, win, offsets, indexes, None if coverage_only else nodata)
        return _read_warped(ds, grid, win, indexes, None if coverage_only else nodata, resampling)
    except RasterioError as exc:
        raise InputDataError(
            f"{path}: reading failed ({exc}); the file is damaged or not a readable raster — "
            "re-download or remove it"
        ) from exc


def _grid_offsets(ds, grid: TargetGrid) -> tuple[int, int] | None:
    """(col, row) of the grid origin in file pixels if the file is on the grid, else None.

    On the grid: same CRS, north-up, the grid's pixel size (:func:`same_pixel_size` over the
    file) and an origin a whole number of pixels (within :data:`ALIGN_EPS_PX`) from the grid's.
    Such a file is read directly, never resampled, whatever ``imagery.resampling`` says.
    """
    t, g = ds.transform, grid.transform
    if ds.crs is None or ds.crs != grid.rio_crs:
        return None
    n_px = max(ds.width, ds.height)
    if t.b != 0 or t.d != 0 or t.e >= 0:
        return None
    if not (same_pixel_size(t.a, g.a, n_px) and same_pixel_size(-t.e, -g.e, n_px)):
        return None
    col = (g.c - t.c) / t.a
    row = (g.f - t.f) / t.e
    if abs(col - round(col)) > ALIGN_EPS_PX or abs(row - round(row)) > ALIGN_EPS_PX:
        return None
    return round(col), round(row)


def _read_aligned(ds, win, offsets, indexes, nodata):
    """Direct windowed read: the part of ``win`` inside the file, placed into the output."""
    h, w = int(win.height), int(win.width)
    arr = np.zeros((len(indexes), h, w), dtype=np.float32)
    ok = np.zeros((h, w), dtype=bool)
    c0 = int(win.col_off) + offsets[0]
    r0 = int(win.row_off) + offsets[1]
    cs, ce = max(c0, 0), min(c0 + w, ds.width)
    rs, re_ = max(r0, 0), min(r0 + h, ds.height)
    if cs >= ce or rs >= re_:
        return arr, ok
    part = ds.read(list(indexes), window=Window(cs, rs, ce - cs, re_ - rs)).astype(np.float32)
    sl = (slice(rs - r0, re_ - r0), slice(cs - c0, ce - c0))
    arr[:, sl[0], sl[1]] = part
    ok[sl] = _not_nodata(part, nodata)
    return arr, ok


def _read_warped(ds, grid, win, indexes, nodata, resampling):
    """Read through a WarpedVRT whose output grid is exactly ``win`` of the target grid.

    The resampling scale is fixed for the whole file (:func:`warp_scale`): GDAL otherwise
    computes it for every warped window from the window's shape, and where the file is
    downsampled along an axis (a 8.6 m-wide EPSG:4326 Sentinel-2 pixel onto a 10 m UTM
    grid) the bilinear or cubic kernel then differs from window to window — 37–57 % of
    the B02 pixels of OSCD Paris and Bordeaux changed between 256 and 1024 px blocks."""
    xscale, yscale = warp_scale(ds.name, ds.crs.to_wkt(), tuple(ds.transform), grid)
    kwargs = {
        "crs": grid.rio_crs,
        "transform": grid.window_transform(win),
        "width": int(win.width),
        "height": int(win.height),
        "resampling": resampling,
        "tolerance": WARP_TOLERANCE_PX,
        "XSCALE": repr(xscale),  # GDAL warp options
        "YSCALE": repr(yscale),
    }
    if nodata is not None:
        kwargs.update(src_nodata=nodata, nodata=nodata)
    else:
        kwargs.update(add_alpha=True)  # alpha band = where the source had pixels
    with WarpedVRT(ds, **kwargs) as vrt:
        arr = vrt.read(list(indexes)).astype(np.float32)
        ok = _not_nodata(arr, nodata) if nodata is not None else vrt.read(vrt.count) > 0
    return arr, ok


@functools.lru_cache(maxsize=256)
def warp_scale(
    path: str, crs_wkt: str, transform: tuple[float, ...], grid: TargetGrid
) -> tuple[float, float]:
    """GDAL's warp ``XSCALE`` / ``YSCALE`` for reading a file onto ``grid``: target pixels per
    file pixel along the grid's x and y axes, at the centre of the grid.

    ``path`` only keys the cache (a file's CRS and transform are the other keys)."""
    g = grid.transform
    cx, cy = g @ (grid.width / 2, grid.height / 2)
    res = grid.resolution
    xs, ys = warp_points(grid.rio_crs, crs_wkt, [cx, cx + res, cx], [cy, cy, cy - res])
    inv = ~Affine(*transform[:6])
    (c0, r0), (c1, _), (_, r2) = (inv @ (x, y) for x, y in zip(xs, ys))
    dx, dy = abs(c1 - c0), abs(r2 - r0)
    if not (np.isfinite(dx) and np.isfinite(dy)) or dx == 0 or dy == 0:
        return 1.0, 1.0
    return 1.0 / dx, 1.0 / dy


def _not_nodata(arr: np.ndarray, nodata: float | None, each: bool = False) -> np.ndarray:
    """True where every band of ``arr`` (nbands, h, w) has data; with ``each``, per band
    (nbands, h, w) — for the few atmospheric bands."""
    if each:
        if nodata is None:
            return np.ones(arr.shape, dtype=bool)
        return ~np.isnan(arr) if np.isnan(nodata) else arr != np.float32(nodata)
    if nodata is None:
        return np.ones(arr.shape[1:], dtype=bool)
    if np.isnan(nodata):
        return ~np.isnan(arr).any(axis=0)
    # band by band into one buffer, in row strips that stay in the CPU cache: no
    # (nbands, h, w) boolean temporary, one pass over memory instead of one per band
    nd = np.float32(nodata)
    ok = np.empty(arr.shape[1:], dtype=bool)
    strips = row_strips(arr.shape[1], arr.shape[2])
    tmp = np.empty((max((r1 - r0 for r0, r1 in strips), default=0), arr.shape[2]), bool)
    for r0, r1 in strips:
        out, t = ok[r0:r1], tmp[: r1 - r0]
        np.not_equal(arr[0, r0:r1], nd, out=out)
        for band in arr[1:, r0:r1]:
            out &= np.not_equal(band, nd, out=t)
    return ok


# --------------------------------------------------------------------------- datasets
_DATASETS: dict[tuple[str, int], tuple[tuple[int, int], object]] = {}
"""Open datasets by (path, thread): a rasterio dataset must not be read by two threads at
once (a threaded Dask worker runs several tasks in one process)."""
_BOUNDS: dict[tuple[str, str], tuple[float, float, float, float]] = {}
_PID: int | None = None


def _open(path: str):
    """A dataset opened once per process and thread (datasets do not survive pickling or
    fork, and are not safe to share between threads)."""
    global _PID
    if os.getpid() != _PID:
        _DATASETS.clear()
        _BOUNDS.clear()
        _PID = os.getpid()
        os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputDataError(f"{path}: cannot be read ({exc}); check the epoch's globs") from exc
    # checked against size and mtime too: a file replaced between runs is reopened
    key, stamp = (path, threading.get_ident()), (st.st_size, st.st_mtime_ns)
    entry = _DATASETS.get(key)
    ds = entry[1] if entry is not None and entry[0] == stamp else None
    if ds is None:
        if entry is not None:  # this thread's handle of a replaced file
            _DATASETS.pop(key)[1].close()
            for k in [k for k in _BOUNDS if k[0] == path]:
                _BOUNDS.pop(k, None)
        try:
            ds = rasterio.open(path)
        except RasterioError as exc:
            raise InputDataError(
                f"{path}: cannot be opened as a raster ({exc}); expected a GeoTIFF/COG — "
                "check the file or remove it from the epoch's globs"
            ) from exc
        if ds.crs is None:
            raise InputDataError(
                f"{path}: has no CRS; expected a georeferenced GeoTIFF (assign one with "
                "gdal_edit.py -a_srs)"
            )
        _DATASETS[key] = (stamp, ds)
    return ds


def _overlaps(path: str, grid: TargetGrid, win: Window) -> bool:
    """Whether the file's footprint (in the grid CRS) meets ``win``."""
    ds = _open(path)  # first: a file replaced since its bounds were cached drops them
    key = (path, grid.crs)
    b = _BOUNDS.get(key)
    if b is None:
        b = transform_bounds(ds.crs, grid.rio_crs, *ds.bounds)
        _BOUNDS[key] = b
    t = grid.window_transform(win)
    wx0, wy1 = t.c, t.f
    wx1 = wx0 + t.a * int(win.width)
    wy0 = wy1 + t.e * int(win.height)
    return b[0] < wx1 and b[2] > wx0 and b[1] < wy1 and b[3] > wy0


def _matches(path: str, pattern: str) -> bool:
    target = path if ("/" in pattern or os.sep in pattern) else Path(path).name
    return fnmatch.fnmatch(target, pattern)


__all__ = [
    "BandSource",
    "EpochSource",
    "RowStream",
    "epoch_footprint",
    "epoch_source",
    "grid_reference",
    "read_block",
    "scene_grid",
]
