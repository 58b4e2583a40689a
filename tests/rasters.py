"""Small helpers to make real GeoTIFFs and configs for the raster-engine tests.

Spectra are uint16 reflectance × 10000, like the sample data: vegetation is dark in the
visible and bright in NIR; roofs are bright and flat; fill soil rises from blue to red.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from pipeline.config import (
    AreaConfig,
    Config,
    DetectConfig,
    ImageryConfig,
    LayerConfig,
    LayersConfig,
    RunConfig,
)

UTM = "EPSG:32650"  # UTM 50N, metres
X0, Y0 = 500000.0, 4000000.0
BANDS = {"blue": 1, "green": 2, "red": 3, "nir": 4}

VEGETATION = (400, 700, 500, 3000)
ROOF = (2200, 2300, 2400, 2600)
SOIL = (1000, 1400, 1900, 2300)
RED_TILE = (900, 1000, 1900, 2200)  # red tile roof
FACTORY = (2800, 2300, 1500, 1700)  # blue steel roof
GROUND = (1200, 1300, 1400, 1800)  # bare village ground


def write_tif(
    path: Path,
    array: np.ndarray,
    transform: Affine,
    crs: str = UTM,
    nodata: float | None = None,
    blocksize: int = 64,
) -> Path:
    """Write a tiled, deflate GeoTIFF (array (bands, h, w) or (h, w))."""
    if array.ndim == 2:
        array = array[None]
    count, h, w = array.shape
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": count,
        "dtype": array.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
    }
    if h >= blocksize and w >= blocksize:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def grid_transform(res: float = 2.0, x0: float = X0, y0: float = Y0) -> Affine:
    return Affine(res, 0.0, x0, 0.0, -res, y0)


def scene(shape: tuple[int, int], squares=(), spectrum=ROOF, seed: int = 0, noise: float = 30.0):
    """A 4-band uint16 vegetation scene with ``squares`` (row, col, size) of ``spectrum``."""
    rng = np.random.default_rng(seed)
    h, w = shape
    base = np.array(VEGETATION, dtype=np.float64)[:, None, None]
    img = base + rng.normal(0.0, noise, size=(4, h, w))
    for r, c, s in squares:
        img[:, r : r + s, c : c + s] = np.array(spectrum, dtype=np.float64)[:, None, None]
    return np.clip(np.round(img), 1, 10000).astype(np.uint16)


def make_config(
    base: Path,
    epochs: dict[str, list[str]],
    *,
    bands: dict[str, int] | None = None,
    band_files: dict[str, str] | None = None,
    nodata: float | None = 0,
    masks: dict[str, tuple[str, ...]] | None = None,
    resampling: str = "bilinear",
    crs: str = UTM,
    resolution_m: float = 2.0,
    bounds=None,
    detect: DetectConfig | None = None,
    workers: int = 1,
) -> Config:
    """A Config built in code (no YAML); layers point at dummy paths the engine never reads."""
    if bands is None and band_files is None:
        bands = dict(BANDS)
    dummy = LayerConfig(path=base / "grids.gpkg", code_field="code", name_field="name")
    return Config(
        area=AreaConfig(
            name="test", county_code="130609", crs=crs, resolution_m=resolution_m, bounds=bounds
        ),
        imagery=ImageryConfig(
            epochs={k: tuple(v) for k, v in epochs.items()},
            bands=bands,
            band_files=band_files,
            nodata=nodata,
            masks=masks,
            resampling=resampling,
            base_dir=base,
        ),
        layers=LayersConfig(township=dummy, village=dummy),
        detect=detect or DetectConfig(method="cva"),
        run=RunConfig(workers=workers),
    )
