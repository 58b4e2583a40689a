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
from rasterio._err import CPLE_BaseError
from rasterio.windows import Window

from pipeline.grid import TargetGrid

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
) -> Path:
    """Copy ``src`` to ``dst`` as a COG (deflate, tiled, overviews), atomically."""
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
    """
    codec, level_key, level = _tmp_codec()
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
        compress=codec,
        **{level_key: level},
    ) as dst:
        yield dst


def parts_vrt(
    parts: Sequence[tuple[Window, str | os.PathLike]],
    grid: TargetGrid,
    dtype: str,
    nodata: float | None,
    path: str | os.PathLike,
) -> Path:
    """Write a VRT mosaic of non-overlapping ``parts`` ((window on the grid, file)) at ``path``.

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
    xml = (
        f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">'
        f"<SRS>{escape(grid.rio_crs.to_wkt())}</SRS>"
        f"<GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>"
        f'<VRTRasterBand dataType="{_VRT_TYPES[dtype]}" band="1">{nd}{sources}</VRTRasterBand>'
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
) -> list[Path]:
    """Publish each spec as a COG assembled from ``parts`` ((window, one file per spec)).

    The conversions run concurrently, one thread each (GDAL releases the GIL), each written
    to a temporary sibling and renamed into place (:func:`to_cog`). VRTs go to ``work_dir``.

    Notes
    -----
    GDAL's block cache is capped at :data:`COG_CACHE_MB` during the conversion (it is
    process-wide: the cap also applies to other threads of the process meanwhile).
    """
    vrts = [
        parts_vrt(
            [(w, files[k]) for w, files in parts],
            grid,
            spec.dtype,
            spec.nodata,
            Path(work_dir) / f"{Path(spec.path).stem}.vrt",
        )
        for k, spec in enumerate(specs)
    ]
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
            )
            for vrt, spec in zip(vrts, specs)
        ]
        return [future.result() for future in futures]
