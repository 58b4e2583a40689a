"""Block-wise GeoTIFF writing, then conversion to a Cloud-Optimized GeoTIFF.

Blocks are written into a tiled temporary GeoTIFF beside the target (by one process: GDAL's
GTiff driver is not safe for concurrent writers), which is then copied with the ``COG``
driver to a second temporary sibling and renamed over the target with :func:`os.replace` —
so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from pipeline.grid import TargetGrid

log = logging.getLogger(__name__)

TILE_PX = 512
"""Tile size of the temporary GeoTIFF and of the COG."""


def _tmp_sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}.tif")


@contextlib.contextmanager
def block_writer(
    path: str | os.PathLike,
    grid: TargetGrid,
    dtype: str,
    nodata: float | None,
    *,
    overview_resampling: str = "nearest",
    description: str | None = None,
) -> Iterator[rasterio.io.DatasetWriter]:
    """Open a tiled temporary GeoTIFF on ``grid``; on clean exit publish it as a COG at ``path``.

    Yields the writable dataset: write blocks with ``dst.write(array, 1, window=window)``.
    On an exception the temporaries are removed and ``path`` is left untouched.

    Notes
    -----
    ``overview_resampling``: ``nearest`` for masks (categories), ``average`` for scores.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path, "blocks")
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": dtype,
        "crs": grid.rio_crs,
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": TILE_PX,
        "blockysize": TILE_PX,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            if description:
                dst.set_band_description(1, description)
            yield dst
        to_cog(tmp, path, overview_resampling=overview_resampling)
    finally:
        tmp.unlink(missing_ok=True)


def to_cog(
    src: str | os.PathLike, dst: str | os.PathLike, *, overview_resampling: str = "nearest"
) -> Path:
    """Copy ``src`` to ``dst`` as a COG (deflate, tiled, overviews), atomically."""
    dst = Path(dst)
    tmp = _tmp_sibling(dst, "cog")
    try:
        rasterio.shutil.copy(
            src,
            tmp,
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=TILE_PX,
            OVERVIEW_RESAMPLING=overview_resampling.upper(),
            BIGTIFF="IF_SAFER",
        )
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s", dst)
    return dst


def write_block(dst, array: np.ndarray, window: Window) -> None:
    """Write a 2-D ``array`` into band 1 of ``dst`` at ``window``."""
    dst.write(array, 1, window=window)
