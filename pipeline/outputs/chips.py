"""Before/after image chips: one PNG per patch, both epochs side by side, patch outlined.

:func:`render_chip` is pure (arrays + geometry in, PNG bytes out); :func:`read_chips` is the
thin reader around it that takes the imagery through the project's own reader
(:func:`pipeline.detection.io.imagery.epoch_source` / :func:`pipeline.detection.io.imagery.read_block` on the
:func:`pipeline.detection.target_grid.target_grid` of each epoch pair). The field packages receive the PNG
bytes per patch id (``export_packages(..., chips=...)``), so export does no raster I/O.

PNGs are drawn with Pillow and carry no time stamp or software text: the same imagery and
patch give the same bytes.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import shapely
from PIL import Image, ImageDraw
from rasterio.windows import Window

from pipeline.config import Config
from pipeline.detection.io.imagery import epoch_source, read_block, scene_grid
from pipeline.detection.target_grid import TargetGrid
from pipeline.schema import P

log = logging.getLogger(__name__)

CHIP_MARGIN_M = 40.0
"""Context around the patch's bounding box on every side, in metres. Belongs in config."""
CHIP_MIN_PX = 48
"""Smallest chip side on the target grid (pixels), so tiny patches still show context."""
CHIP_MAX_PX = 400
"""Largest chip side read (pixels); a bigger patch is shown whole, downsampled."""
CHIP_DISPLAY_PX = 240
"""Side of each epoch panel in the PNG (pixels); the chip is resampled to it."""
STRETCH_PERCENTILES = (2.0, 98.0)
"""Per-band linear stretch between these percentiles of the chip's valid pixels (both
epochs pooled)."""
TRUE_COLOUR = ("red", "green", "blue")
OUTLINE_RGB = (255, 235, 0)
"""Yellow: visible on vegetation, soil and roofs alike."""
NODATA_RGB = (200, 200, 200)
GAP_PX = 6
LABEL_PX = 16


# --------------------------------------------------------------------------- pure core
def chip_window(
    grid: TargetGrid,
    bounds: tuple[float, float, float, float],
    *,
    margin_m: float = CHIP_MARGIN_M,
    min_px: int = CHIP_MIN_PX,
) -> Window:
    """The square pixel window of ``grid`` around ``bounds`` plus ``margin_m`` of context.

    Parameters
    ----------
    grid : TargetGrid
        North-up grid; ``bounds`` are in its CRS (metres).
    bounds : tuple
        (xmin, ymin, xmax, ymax) of the patch in the grid CRS.

    Notes
    -----
    The window is square (equal scale in x and y), centred on the patch and may extend
    past the grid edge: :func:`pipeline.detection.io.imagery.read_block` marks such pixels invalid.
    Rows grow downwards while y grows upwards (``transform.e < 0``).
    """
    res = grid.resolution
    t = grid.transform
    xmin, ymin, xmax, ymax = bounds
    side_m = max(xmax - xmin, ymax - ymin) + 2.0 * margin_m
    side = max(min_px, math.ceil(side_m / res))
    cx = ((xmin + xmax) / 2.0 - t.c) / res
    cy = (t.f - (ymin + ymax) / 2.0) / res
    col = math.floor(cx - side / 2.0)
    row = math.floor(cy - side / 2.0)
    return Window(col, row, side, side)


def stretch_limits(
    panels: Sequence[tuple[np.ndarray, np.ndarray]],
    band_names: Sequence[str],
    *,
    percentiles: tuple[float, float] = STRETCH_PERCENTILES,
) -> np.ndarray:
    """Per-band (low, high) stretch limits, shape (3, 2), red/green/blue, from all ``panels``.

    ``panels`` are ``(data, valid)`` pairs of the same chip (one per epoch); the limits are
    percentiles of their valid pixels pooled, so both epochs share one stretch.

    Notes
    -----
    A shared stretch keeps colours comparable between the panels (a field that did not
    change looks the same) and does not blow up sensor noise on a uniform chip, as a
    per-panel stretch would. Bands without any valid pixel get (0, 1).
    """
    idx = _rgb_indexes(band_names)
    limits = np.tile([0.0, 1.0], (3, 1))
    for i, b in enumerate(idx):
        values = np.concatenate([d[b][v].astype("float64").ravel() for d, v in panels])
        if values.size:
            limits[i] = np.percentile(values, percentiles)
    return limits


def stretch_true_colour(
    data: np.ndarray, valid: np.ndarray, band_names: Sequence[str], limits: np.ndarray
) -> np.ndarray:
    """An RGB uint8 image (h, w, 3) from ``data`` (bands, h, w), stretched linearly.

    ``limits`` (3, 2) are the (low, high) raw values mapped to 0 and 255 for red, green,
    blue (see :func:`stretch_limits`).

    Notes
    -----
    Invalid pixels (``valid`` False: nodata, cloud mask, off the grid) are grey. Needs
    bands named ``red``, ``green`` and ``blue``.
    """
    idx = _rgb_indexes(band_names)
    out = np.empty((*data.shape[1:], 3), dtype=np.uint8)
    for i, b in enumerate(idx):
        lo, hi = limits[i]
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        out[..., i] = np.clip((data[b].astype("float64") - lo) * scale, 0, 255).round()
    out[~valid] = NODATA_RGB
    return out


def _rgb_indexes(band_names: Sequence[str]) -> list[int]:
    missing = [b for b in TRUE_COLOUR if b not in band_names]
    if missing:
        raise ValueError(
            f"true colour needs bands {list(TRUE_COLOUR)}; missing {missing} among "
            f"{list(band_names)}: name them in 'imagery.bands' or 'imagery.band_files'"
        )
    return [list(band_names).index(b) for b in TRUE_COLOUR]


def render_chip(
    before: np.ndarray,
    after: np.ndarray,
    outline: shapely.Geometry,
    window_transform: tuple[float, float, float],
    *,
    labels: tuple[str, str],
    display_px: int = CHIP_DISPLAY_PX,
) -> bytes:
    """PNG bytes: ``before`` | ``after`` side by side, the patch outline drawn on both.

    Parameters
    ----------
    before, after : ndarray, uint8, shape (h, w, 3)
        True-colour panels of the same window (see :func:`stretch_true_colour`).
    outline : shapely geometry
        The patch (Polygon / MultiPolygon, holes drawn too) in the grid CRS.
    window_transform : tuple
        (x of the window's left edge, y of its top edge, pixel size) in the grid CRS.
    labels : tuple of str
        Text over each panel, e.g. the epoch labels (ASCII: Pillow's built-in font).

    Notes
    -----
    Panels are resampled (nearest neighbour: pixels stay visible as pixels) to
    ``display_px`` wide. Map coordinates become pixel coordinates as
    ``col = (x - x0) / res``, ``row = (y0 - y) / res`` (y grows up, rows grow down).
    """
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} differ in shape")
    h, w = before.shape[:2]
    scale = display_px / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    x0, y0, res = window_transform
    canvas = Image.new("RGB", (2 * size[0] + GAP_PX, size[1] + LABEL_PX), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    rings = shapely.get_rings(shapely.get_parts(outline))
    for k, (panel, label) in enumerate(zip((before, after), labels, strict=True)):
        left = k * (size[0] + GAP_PX)
        img = Image.fromarray(np.ascontiguousarray(panel), mode="RGB").resize(
            size, Image.Resampling.NEAREST
        )
        canvas.paste(img, (left, LABEL_PX))
        draw.text((left + 2, 2), label, fill=(0, 0, 0))
        for ring in rings:
            xy = shapely.get_coordinates(ring)
            cols = left + (xy[:, 0] - x0) / res * scale
            rows = LABEL_PX + (y0 - xy[:, 1]) / res * scale
            draw.line(
                list(zip(cols.tolist(), rows.tolist(), strict=True)), fill=OUTLINE_RGB, width=2
            )
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


# --------------------------------------------------------------------------- thin reader
def read_chips(
    cfg: Config,
    patches: gpd.GeoDataFrame,
    *,
    margin_m: float = CHIP_MARGIN_M,
) -> dict[str, bytes]:
    """PNG chips (patch id -> bytes) of ``patches`` from the configured imagery.

    Parameters
    ----------
    cfg : Config
        ``imagery`` (epochs, bands, nodata) and ``area`` (target CRS, resolution).
    patches : GeoDataFrame
        With :attr:`P.PATCH_ID`, :attr:`P.EPOCH_FROM`, :attr:`P.EPOCH_TO` and geometry.

    Returns
    -------
    dict
        One PNG per patch whose epochs are configured; others are skipped with a warning.

    Notes
    -----
    Each epoch pair is read on its own target grid (as detection did), in the area CRS;
    patches in another CRS are reprojected first. A chip reads at most
    :data:`CHIP_MAX_PX` pixels a side on output: a bigger window is read whole and reduced by
    block mean (taking every n-th pixel would alias).
    """
    if len(patches) == 0:
        return {}
    frame = patches.to_crs(cfg.area.crs) if patches.crs is not None else patches
    epochs = set(cfg.imagery.epochs)
    out: dict[str, bytes] = {}
    pairs = frame[[P.EPOCH_FROM, P.EPOCH_TO]].astype(str).apply(tuple, axis=1)
    for pair, part in frame.groupby(pairs.to_numpy(), sort=True):
        a, b = pair
        if a not in epochs or b not in epochs:
            log.warning(
                "no chips for %d patch(es) of epochs %s -> %s: not in 'imagery.epochs' (%s)",
                len(part),
                a,
                b,
                ", ".join(epochs),
            )
            continue
        sources = (epoch_source(cfg.imagery, a), epoch_source(cfg.imagery, b))
        grid = scene_grid(cfg.area, cfg.imagery, sources)
        bounds = shapely.bounds(np.asarray(part.geometry.values))
        for pid, geom, bb in zip(part[P.PATCH_ID], part.geometry.values, bounds, strict=True):
            win = chip_window(grid, tuple(bb), margin_m=margin_m)
            step = math.ceil(max(win.width, win.height) / CHIP_MAX_PX)
            raw = [_read_panel(s, grid, win, step) for s in sources]
            names = sources[0].band_names
            limits = stretch_limits(raw, names)
            panels = [stretch_true_colour(d, v, names, limits) for d, v in raw]
            t = grid.window_transform(win)
            out[str(pid)] = render_chip(
                panels[0], panels[1], geom, (t.c, t.f, grid.resolution * step), labels=(a, b)
            )
    log.info("rendered %d image chips", len(out))
    return out


def _read_panel(source, grid: TargetGrid, win: Window, step: int) -> tuple[np.ndarray, np.ndarray]:
    data, valid = read_block(source, grid, win)
    if step > 1:  # decimate big chips by block mean so the PNG stays small
        h, w = (valid.shape[0] // step) * step, (valid.shape[1] // step) * step
        data = data[:, :h, :w].reshape(data.shape[0], h // step, step, w // step, step)
        data = data.mean(axis=(2, 4))
        valid = valid[:h, :w].reshape(h // step, step, w // step, step).all(axis=(1, 3))
    return data, valid
