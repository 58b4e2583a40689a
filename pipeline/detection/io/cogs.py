"""Raster outputs written in parts, then published as Cloud-Optimized GeoTIFFs.

Each worker writes its own tiled part GeoTIFF (:func:`part_writer`; one writer per file, since
GDAL's GTiff driver is not safe for concurrent writers). The driver stitches the parts with a
VRT and copies it with the ``COG`` driver to a temporary sibling that is renamed over the
target with :func:`os.replace` — so a crash never leaves a half-written file under the final
name.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.errors
import rasterio.shutil
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.windows import Window

from pipeline.detection.target_grid import TargetGrid

log = logging.getLogger(__name__)

TILE_PX = 512
"""Tile size of the temporary GeoTIFF and of the COG."""

COG_COMPRESS = "DEFLATE"
"""Compression of the published COGs (readable by every GDAL, QGIS and ArcGIS)."""
COG_LEVEL = 6
"""DEFLATE level of the COGs (zlib's default)."""
COG_ZSTD_LEVEL = 1
"""ZSTD level of COGs written with ``compress="ZSTD"``."""
TMP_COMPRESS = ("ZSTD", "ZSTD_LEVEL", 1)
"""Compression of the temporary GeoTIFF: the fastest codec that still keeps it small, so the
driver's writes and the COG step's re-read cost little; falls back to
:data:`TMP_COMPRESS_FALLBACK` where GDAL lacks ZSTD."""
TMP_COMPRESS_FALLBACK = ("DEFLATE", "ZLEVEL", 1)
COG_CACHE_MB = 64
"""GDAL block cache (MB) while the COGs are written. The conversion streams the source
twice (overviews, then full resolution) and never re-reads a block soon, so a larger cache
only fills up: at GDAL's default (5 % of RAM) the driver grew to ~0.9 GB at 10240² for no
speed gain; 64 MB keeps it under ~0.2 GB at the same speed."""
COG_THREADS = "ALL_CPUS"
"""``NUM_THREADS`` of the COG step: it runs after the workers are done, so compression may
use every core."""


def _tmp_sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}.tif")


@dataclass(frozen=True)
class RasterSpec:
    """One output raster of :func:`parts_to_cogs`: target path, dtype, nodata, overview resampling
    (``nearest`` for masks, ``average`` for scores) and COG compression."""

    path: Path
    dtype: str
    nodata: float | None
    overview_resampling: str = "nearest"
    compress: str = COG_COMPRESS


def to_cog(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    overview_resampling: str = "nearest",
    compress: str = COG_COMPRESS,
    existing_overviews: bool = False,
) -> Path:
    """Copy ``src`` to ``dst`` as a COG (deflate, tiled, overviews), atomically.

    With ``existing_overviews`` the source's overviews are copied as they are
    (``OVERVIEWS=FORCE_USE_EXISTING``) instead of being computed with
    ``overview_resampling``."""
    dst = Path(dst)
    tmp = _tmp_sibling(dst, "cog")
    try:
        rasterio.shutil.copy(
            src,
            tmp,
            driver="COG",
            COMPRESS=compress,
            LEVEL=COG_LEVEL if compress == "DEFLATE" else COG_ZSTD_LEVEL,
            NUM_THREADS=COG_THREADS,
            BLOCKSIZE=TILE_PX,
            OVERVIEW_RESAMPLING=overview_resampling.upper(),
            OVERVIEWS="FORCE_USE_EXISTING" if existing_overviews else "AUTO",
            BIGTIFF="IF_SAFER",
        )
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s", dst)
    return dst


@functools.cache
def _tmp_codec() -> tuple[str, str, int]:
    """:data:`TMP_COMPRESS` if this GDAL has it, else :data:`TMP_COMPRESS_FALLBACK`."""
    codec, level_key, level = TMP_COMPRESS
    profile = {"driver": "GTiff", "width": 1, "height": 1, "count": 1, "dtype": "uint8"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.MemoryFile() as mem, mem.open(**profile, compress=codec) as probe:
                probe.write(np.zeros((1, 1, 1), np.uint8))
    except (rasterio.errors.RasterioError, CPLE_BaseError):
        log.info("GDAL has no %s; temporary rasters use %s", codec, TMP_COMPRESS_FALLBACK[0])
        return TMP_COMPRESS_FALLBACK
    return codec, level_key, level


# --------------------------------------------------------------------------- parts
_VRT_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "float32": "Float32"}


@contextlib.contextmanager
def part_writer(
    path: str | os.PathLike, grid: TargetGrid, window: Window, dtype: str, nodata: float | None
) -> Iterator[rasterio.io.DatasetWriter]:
    """A tiled GeoTIFF covering ``window`` of ``grid``: one worker's part of an output.

    Write with ``dst.write(array, 1, window=...)`` in coordinates *of the part*. Parts are
    assembled by :func:`parts_to_cogs`; each is written by one process only, so workers write
    their results themselves and the driver never handles pixel arrays.

    Integer parts (masks) are compressed with :data:`TMP_COMPRESS`; float parts (scores)
    are written uncompressed: a noisy float32 score barely compresses (ZSTD saves ~10 %),
    so encoding it here and decoding it again for the COG only cost CPU time.
    """
    codec, level_key, level = _tmp_codec()
    options = {} if np.dtype(dtype).kind == "f" else {"compress": codec, level_key: level}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=int(window.width),
        height=int(window.height),
        count=1,
        dtype=dtype,
        crs=grid.rio_crs,
        transform=grid.window_transform(window),
        nodata=nodata,
        tiled=True,
        blockxsize=TILE_PX,
        blockysize=TILE_PX,
        BIGTIFF="IF_SAFER",
        **options,
    ) as dst:
        yield dst


def overview_factors(width: int, height: int, block: int = TILE_PX) -> list[int]:
    """The overview decimation factors GDAL's COG driver builds for a ``width`` × ``height``
    raster: halve (rounding up) until both sides are at most ``block`` — ``[2, 4, …]``."""
    out, f = [], 1
    while width > block or height > block:
        f *= 2
        width, height = -(-width // 2), -(-height // 2)
        out.append(f)
    return out


def decimated_grid(grid: TargetGrid, factor: int) -> TargetGrid:
    """The grid of an overview: ``factor`` times coarser, sides rounded up (as GDAL does)."""
    return TargetGrid(
        grid.crs,
        grid.transform @ Affine.scale(factor),
        -(-grid.width // factor),
        -(-grid.height // factor),
    )


def mean_pyramid(values: np.ndarray, factors: Sequence[int]) -> list[np.ndarray]:
    """Block means of ``values`` for each factor: the overviews of a float raster.

    Parameters
    ----------
    values : ndarray float32 (h, w)
        NaN = nodata.
    factors : sequence of int
        Increasing powers of two (:func:`overview_factors`).

    Returns
    -------
    list of ndarray float32, one per factor, shape ``(ceil(h / f), ceil(w / f))``
        The mean of the non-NaN pixels of each ``f × f`` block (of the pixels inside the
        array, for blocks cut by its edge); NaN where a block has none.

    Notes
    -----
    Each level is built from the previous one's sums and counts (float32 2 × 2 sums), so it
    is the mean of the full-resolution pixels, not a mean of means. For a raster built in row chunks, the
    levels of a chunk are the rows of the raster's levels when the chunk starts on a multiple
    of the largest factor.
    """
    if values.size == 0 or not np.isnan(values.min()):  # min is NaN iff a value is NaN
        # the usual case: counts are the blocks' pixel counts, no masked copy
        total, count, all_valid = values.astype(np.float32, copy=False), None, True
    else:
        all_valid = False
        ok = ~np.isnan(values)
        total = np.where(ok, values, np.float32(0)).astype(np.float32, copy=False)
        count = ok.astype(np.float32)
    out, done = [], 1
    for f in factors:
        for _ in range((f // done).bit_length() - 1):  # halve until this factor
            total = _pair_sum(total)
            if count is not None:
                count = _pair_sum(count)
        if count is None:
            count = _block_counts(values.shape, f)
        if all_valid:  # every block has pixels: no empty block to set to NaN
            out.append((total / count).astype(np.float32, copy=False))
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                level = np.where(count > 0, total / count, np.float32(np.nan))
            out.append(level.astype(np.float32, copy=False))
        done = f
    return out


def change_pyramid(
    mask: np.ndarray, factors: Sequence[int], change: int, no_change: int, nodata: int
) -> list[np.ndarray]:
    """Overviews of a change mask: a block shows ``change`` when any of its pixels does.

    Parameters
    ----------
    mask : ndarray uint8 (h, w)
        ``change``, ``nodata`` or any other value (no change).
    factors : sequence of int
        Increasing powers of two (:func:`overview_factors`).
    change, no_change, nodata : int
        The mask's codes.

    Returns
    -------
    list of ndarray uint8, one per factor, shape ``(ceil(h / f), ceil(w / f))``
        ``change`` where any pixel of the ``f × f`` block is ``change``, else ``no_change``
        where any is valid (not ``nodata``), else ``nodata``.

    Notes
    -----
    Unlike nearest-neighbour overviews (one pixel stands for the block), a small patch stays
    visible when the map is zoomed out — what a reader of a change map looks for.
    """
    is_change = mask == change
    is_valid = mask != nodata
    out, done = [], 1
    for f in factors:
        for _ in range((f // done).bit_length() - 1):
            is_change, is_valid = _pair_any(is_change), _pair_any(is_valid)
        level = np.where(is_valid, np.uint8(no_change), np.uint8(nodata))
        level[is_change] = change
        out.append(level)
        done = f
    return out


def _block_counts(shape: tuple[int, int], f: int) -> np.ndarray:
    """Pixels inside the array of each ``f × f`` block (float32, ``(ceil(h/f), ceil(w/f))``):
    ``f²``, less along the bottom and right edges when a side is not a multiple of ``f``."""
    h, w = shape
    rows = np.minimum(f, h - np.arange(0, h, f)).astype(np.float32)
    cols = np.minimum(f, w - np.arange(0, w, f)).astype(np.float32)
    return np.outer(rows, cols)


def _pair_sum(x: np.ndarray) -> np.ndarray:
    """Sums over 2 × 2 blocks (odd sides padded with zeros): four strided adds."""
    return _pair_reduce(x, np.add)


def _pair_any(x: np.ndarray) -> np.ndarray:
    """Logical OR over 2 × 2 blocks (odd sides padded with False)."""
    return _pair_reduce(x, np.logical_or)


def _pair_reduce(x: np.ndarray, op: np.ufunc) -> np.ndarray:
    """``op`` over the four pixels of each 2 × 2 block, odd sides padded with zeros."""
    h, w = x.shape
    if h % 2 or w % 2:
        x = np.pad(x, ((0, h % 2), (0, w % 2)))
    return op(op(op(x[0::2, 0::2], x[1::2, 0::2]), x[0::2, 1::2]), x[1::2, 1::2])


def parts_vrt(
    parts: Sequence[tuple[Window, str | os.PathLike]],
    grid: TargetGrid,
    dtype: str,
    nodata: float | None,
    path: str | os.PathLike,
    overviews: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write a VRT mosaic of non-overlapping ``parts`` ((window on the grid, file)) at ``path``.

    ``overviews``: rasters (VRTs from this function on :func:`decimated_grid` grids) listed
    as the band's overviews, finest first; GDAL then reads them instead of computing
    overviews.

    Notes
    -----
    Pixels no part covers read as ``nodata``. Written by hand (GDAL's ``gdalbuildvrt`` is
    not part of rasterio); the parts already share the grid's CRS and pixel size.
    """
    t = grid.transform
    nd = ""
    if nodata is not None:
        nd = f"<NoDataValue>{'nan' if np.isnan(nodata) else repr(float(nodata))}</NoDataValue>"
    sources = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(str(Path(f).resolve()))}'
        f"</SourceFilename><SourceBand>1</SourceBand>"
        f'<SrcRect xOff="0" yOff="0" xSize="{int(w.width)}" ySize="{int(w.height)}"/>'
        f'<DstRect xOff="{int(w.col_off)}" yOff="{int(w.row_off)}" xSize="{int(w.width)}" '
        f'ySize="{int(w.height)}"/></SimpleSource>'
        for w, f in parts
    )
    ovr = "".join(
        f'<Overview><SourceFilename relativeToVRT="0">{escape(str(Path(o).resolve()))}'
        "</SourceFilename><SourceBand>1</SourceBand></Overview>"
        for o in overviews
    )
    xml = (
        f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">'
        f"<SRS>{escape(grid.rio_crs.to_wkt())}</SRS>"
        f"<GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>"
        f'<VRTRasterBand dataType="{_VRT_TYPES[dtype]}" band="1">{nd}{sources}{ovr}'
        "</VRTRasterBand>"
        "</VRTDataset>"
    )
    path = Path(path)
    path.write_text(xml, encoding="utf-8")
    return path


def parts_to_cogs(
    specs: Sequence[RasterSpec],
    parts: Sequence[tuple[Window, Sequence[str | os.PathLike]]],
    grid: TargetGrid,
    work_dir: str | os.PathLike,
    overview_parts: Sequence[Sequence[tuple[int, Window, str | os.PathLike]]] | None = None,
) -> list[Path]:
    """Publish each spec as a COG assembled from ``parts`` ((window, one file per spec)).

    ``overview_parts``, optional, one list per spec: (factor, window on
    :func:`decimated_grid` ``(grid, factor)``, file) for every factor of
    :func:`overview_factors` — overviews computed by the workers (:func:`mean_pyramid`);
    the COG driver then copies them instead of building them from the full resolution,
    which would read every part twice. An empty list: GDAL builds that spec's overviews.

    The conversions run concurrently, one thread each (GDAL releases the GIL), each written
    to a temporary sibling and renamed into place (:func:`to_cog`). VRTs go to ``work_dir``.

    Notes
    -----
    GDAL's block cache is capped at :data:`COG_CACHE_MB` during the conversion (it is
    process-wide: the cap also applies to other threads of the process meanwhile).
    """
    vrts, given = [], []
    for k, spec in enumerate(specs):
        stem = Path(spec.path).stem
        levels = []
        for f in sorted({f for f, _, _ in (overview_parts[k] if overview_parts else ())}):
            level_parts = [(w, file) for ff, w, file in overview_parts[k] if ff == f]
            levels.append(
                parts_vrt(
                    level_parts,
                    decimated_grid(grid, f),
                    spec.dtype,
                    spec.nodata,
                    Path(work_dir) / f"{stem}.ov{f}.vrt",
                )
            )
        given.append(bool(levels))
        vrts.append(
            parts_vrt(
                [(w, files[k]) for w, files in parts],
                grid,
                spec.dtype,
                spec.nodata,
                Path(work_dir) / f"{stem}.vrt",
                overviews=levels,
            )
        )
    with (
        rasterio.Env(GDAL_CACHEMAX=COG_CACHE_MB),
        ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool,
    ):
        futures = [
            pool.submit(
                to_cog,
                vrt,
                spec.path,
                overview_resampling=spec.overview_resampling,
                compress=spec.compress,
                existing_overviews=has_overviews,
            )
            for vrt, spec, has_overviews in zip(vrts, specs, given)
        ]
        return [future.result() for future in futures]
