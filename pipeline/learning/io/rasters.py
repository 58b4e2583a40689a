"""The raster part of a patch's features (:data:`~pipeline.learning.features.RASTER_FEATURES`):
the score's peak and spread inside the patch (``changes/{pair}/score.tif``) and the distance
from the patch to land that already looked built in the earlier epoch.

"Built" is the detector's own rule for a roof or hard surface
(:func:`pipeline.detection.change_type.built_up`) applied to each pixel of a window around
the patch, after removing specks smaller than :data:`MIN_BUILT_PX` pixels.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.features import geometry_mask
from rasterio.windows import Window, from_bounds
from scipy import ndimage

from pipeline.config import Config
from pipeline.detection.change_type import built_up
from pipeline.detection.io.imagery import epoch_source, read_block, scene_grid
from pipeline.errors import InputDataError
from pipeline.learning.features import RASTER_FEATURES

log = logging.getLogger(__name__)

BUILT_CAP_M = 150.0
"""Distances to built land are measured within this margin around the patch (and capped)."""
MIN_BUILT_PX = 4
"""Built specks smaller than this many pixels are noise (a bright pixel in a field)."""


def raster_features(
    cfg: Config, pair: tuple[str, str], detections: gpd.GeoDataFrame, score_path: Path
) -> pd.DataFrame:
    """:data:`RASTER_FEATURES` per detection (same index; NaN where a read fails)."""
    out = pd.DataFrame(np.nan, index=detections.index, columns=list(RASTER_FEATURES))
    if len(detections) == 0:
        return out
    if score_path.is_file():
        with rasterio.open(score_path) as src:
            for i, geom in zip(detections.index, detections.geometry, strict=True):
                values = _inside(src, geom)
                if values.size:
                    out.loc[i, ["score_max", "score_std"]] = [values.max(), values.std()]
    try:
        source = epoch_source(cfg.imagery, pair[0])
        grid = scene_grid(cfg.area, cfg.imagery, (source, epoch_source(cfg.imagery, pair[1])))
    except (OSError, ValueError) as exc:
        log.warning("no built-up distances for %s-%s: %s", *pair, exc)
        return out
    names = list(source.band_names)
    failed = 0
    for i, geom in zip(detections.index, detections.geometry, strict=True):
        try:
            out.loc[i, "dist_builtup_m"] = _built_distance(source, grid, names, geom)
        except (InputDataError, OSError, ValueError):  # a damaged tile: that patch goes without
            failed += 1
    if failed:
        log.warning("no built-up distance for %d patch(es) of %s-%s: the imagery could not be "
                    "read around them", failed, *pair)  # fmt: skip
    return out


def _inside(src, geom) -> np.ndarray:
    """Finite values of band 1 of ``src`` inside ``geom``."""
    window = _window(from_bounds(*geom.bounds, transform=src.transform))
    data = src.read(1, window=window, boundless=True, fill_value=np.nan).astype(np.float64)
    inside = geometry_mask([geom], data.shape, src.window_transform(window), invert=True)
    values = data[inside]
    return values[np.isfinite(values)]


def _built_distance(source, grid, names: list[str], geom) -> float:
    """Metres from the patch to the nearest built pixel of the earlier epoch (capped)."""
    xmin, ymin, xmax, ymax = geom.bounds
    m = BUILT_CAP_M
    window = _window(from_bounds(xmin - m, ymin - m, xmax + m, ymax + m, transform=grid.transform))
    data, valid = read_block(source, grid, window)
    built = built_up(data, names) & valid
    labels, _ = ndimage.label(built)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0  # the background
    built = (sizes >= MIN_BUILT_PX)[labels]
    if not built.any():
        return m
    distance = ndimage.distance_transform_edt(~built) * grid.resolution
    inside = geometry_mask([geom], built.shape, grid.window_transform(window), invert=True)
    if not inside.any():
        return m
    return float(min(distance[inside].min(), m))


def _window(window: Window) -> Window:
    """Whole pixels covering ``window`` (at least one)."""
    col, row = math.floor(window.col_off), math.floor(window.row_off)
    width = math.ceil(window.col_off + window.width) - col
    height = math.ceil(window.row_off + window.height) - row
    return Window(col, row, max(1, width), max(1, height))
