"""The target grid every epoch is read onto, and the blocks it is processed in.

A :class:`TargetGrid` is a CRS, an affine transform (north-up, square pixels) and a size. Its
origin is snapped to whole multiples of the resolution, so two runs over overlapping areas put
pixel edges in the same places.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from pipeline.config import AreaConfig
from pipeline.errors import InputDataError

log = logging.getLogger(__name__)

SNAP_EPS = 1e-6
"""Tolerance (in pixels) when snapping extents outward, so a bound that is already on a pixel
edge up to floating-point noise is not pushed out by a whole pixel."""


class Footprint(NamedTuple):
    """The extent of one epoch: ``bounds`` (xmin, ymin, xmax, ymax) in ``crs``."""

    crs: str
    bounds: tuple[float, float, float, float]


@dataclass(frozen=True)
class TargetGrid:
    """A north-up raster grid: CRS (as WKT/user string), transform, width and height.

    Notes
    -----
    ``crs`` is kept as a string so the grid pickles cheaply into worker processes; use
    :attr:`rio_crs` for a :class:`rasterio.crs.CRS`. Pixel ``(row, col)`` has its upper-left
    corner at ``transform * (col, row)``.
    """

    crs: str
    transform: Affine
    width: int
    height: int

    @property
    def rio_crs(self) -> CRS:
        return CRS.from_user_input(self.crs)

    @property
    def resolution(self) -> float:
        """Pixel size in CRS units (metres)."""
        return float(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in the grid CRS."""
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def window_transform(self, window: Window) -> Affine:
        """The transform of ``window`` (may extend beyond the grid, e.g. with a halo)."""
        t, col, row = self.transform, int(window.col_off), int(window.row_off)
        return Affine(t.a, t.b, t.c + t.a * col + t.b * row, t.d, t.e, t.f + t.d * col + t.e * row)


def target_grid(area_cfg: AreaConfig, footprints: Sequence[Footprint]) -> TargetGrid:
    """The grid to read all epochs onto.

    Parameters
    ----------
    area_cfg : AreaConfig
        ``crs`` and ``resolution_m``; ``bounds`` if set fixes the extent.
    footprints : sequence of Footprint
        One per epoch (see :func:`pipeline.detection.io.imagery.epoch_footprint`). Ignored when
        ``area_cfg.bounds`` is given.

    Returns
    -------
    TargetGrid
        Extent = ``area_cfg.bounds`` or the intersection of the footprints transformed to
        the target CRS, snapped outward to whole multiples of ``resolution_m``.

    Raises
    ------
    InputDataError
        If no footprint is given (and no bounds), or the epochs do not overlap.

    Notes
    -----
    Footprints are transformed with :func:`rasterio.warp.transform_bounds` (densified edges),
    so the bounding box of a reprojected footprint may be slightly larger than the data;
    pixels outside the data are simply invalid.
    """
    crs = CRS.from_user_input(area_cfg.crs)
    res = float(area_cfg.resolution_m)
    if area_cfg.bounds is not None:
        xmin, ymin, xmax, ymax = area_cfg.bounds
    else:
        if not footprints:
            raise InputDataError(
                "cannot build the target grid: no epoch footprints and no 'area.bounds'; "
                "check that 'imagery.epochs' globs match files"
            )
        boxes = [
            transform_bounds(CRS.from_user_input(fp.crs), crs, *fp.bounds) for fp in footprints
        ]
        xmin = max(b[0] for b in boxes)
        ymin = max(b[1] for b in boxes)
        xmax = min(b[2] for b in boxes)
        ymax = min(b[3] for b in boxes)
        if not (xmin < xmax and ymin < ymax):
            listed = "; ".join(f"[{b[0]:.1f}, {b[1]:.1f}, {b[2]:.1f}, {b[3]:.1f}]" for b in boxes)
            raise InputDataError(
                f"the epochs do not overlap: their extents in {area_cfg.crs} are {listed}; "
                "expected a common area. Check the imagery globs per epoch, or set "
                "'area.bounds' explicitly"
            )
    x0 = math.floor(xmin / res + SNAP_EPS) * res
    y1 = math.ceil(ymax / res - SNAP_EPS) * res
    width = max(1, math.ceil((xmax - x0) / res - SNAP_EPS))
    height = max(1, math.ceil((y1 - ymin) / res - SNAP_EPS))
    grid = TargetGrid(
        crs=crs.to_wkt(),
        transform=Affine(res, 0.0, x0, 0.0, -res, y1),
        width=int(width),
        height=int(height),
    )
    log.info("target grid %s x %s px at %s m, bounds %s", grid.width, grid.height, res, grid.bounds)
    return grid


def blocks(grid: TargetGrid, block_px: int) -> list[Window]:
    """Windows of at most ``block_px`` × ``block_px`` covering ``grid``, row-major.

    Notes
    -----
    Edge blocks are smaller; windows never extend beyond the grid (halos are added by the
    reader, see :func:`expand`).
    """
    if block_px < 1:
        raise ValueError(f"block_px = {block_px}; expected a positive number of pixels")
    out = []
    for row in range(0, grid.height, block_px):
        for col in range(0, grid.width, block_px):
            out.append(
                Window(col, row, min(block_px, grid.width - col), min(block_px, grid.height - row))
            )
    return out


STRIP_PX = 1 << 18
"""Pixels per row strip of the element-wise passes over a block (:func:`row_strips`): a few
float32 arrays of this size fit in the CPU's L2/L3 cache."""


def nonzero_rc(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-D mask (rows, cols in row-major order), about 3× faster on the
    sparse masks of a block: one flat scan, then a division."""
    return np.divmod(np.flatnonzero(mask), mask.shape[1])


def row_strips(height: int, width: int) -> list[tuple[int, int]]:
    """``(r0, r1)`` row ranges of about :data:`STRIP_PX` pixels covering ``height`` rows of
    ``width`` pixels. Element-wise passes done strip by strip keep their operands in the CPU
    cache instead of streaming the whole block through memory once per operation."""
    step = max(1, STRIP_PX // max(1, width))
    return [(r0, min(r0 + step, height)) for r0 in range(0, height, step)]


def expand(window: Window, halo: int) -> Window:
    """``window`` grown by ``halo`` pixels on every side (may leave the grid)."""
    return Window(
        int(window.col_off) - halo,
        int(window.row_off) - halo,
        int(window.width) + 2 * halo,
        int(window.height) + 2 * halo,
    )
