"""The target grid every epoch is read onto, and the blocks it is processed in.

A :class:`TargetGrid` is a CRS, an affine transform (north-up, square pixels) and a size. By
default it follows the pixels of the imagery: when the first epoch's first file
(:class:`GridReference`) is in ``area.crs`` at ``area.resolution_m``, the grid has that file's
pixel size and an origin a whole number of pixels from the file's, so the file's pixels are
read as they are, never resampled. Otherwise (or with ``area.align: snap``) the origin is
snapped to whole multiples of the resolution, so two runs over overlapping areas put pixel
edges in the same places.
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
from pipeline.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

SNAP_EPS = 1e-6
"""Tolerance (in pixels) when snapping extents outward, so a bound that is already on a pixel
edge up to floating-point noise is not pushed out by a whole pixel."""

RES_DRIFT_PX = 1e-3
"""Two pixel sizes are the same when, across a whole file, they put its far edge less than
this many pixels apart (:func:`same_pixel_size`): floating-point noise in a file's transform
passes, a rounded resolution (0.2999 for 0.3) does not."""


class Footprint(NamedTuple):
    """The extent of one epoch: ``bounds`` (xmin, ymin, xmax, ymax) in ``crs``."""

    crs: str
    bounds: tuple[float, float, float, float]


class GridReference(NamedTuple):
    """The pixel lattice the target grid may follow: one file's path, CRS (WKT), transform
    and size (see :func:`pipeline.detection.io.imagery.grid_reference`)."""

    path: str
    crs: str
    transform: Affine
    width: int
    height: int


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


def target_grid(
    area_cfg: AreaConfig,
    footprints: Sequence[Footprint],
    reference: GridReference | None = None,
) -> TargetGrid:
    """The grid to read all epochs onto.

    Parameters
    ----------
    area_cfg : AreaConfig
        ``crs``, ``resolution_m`` (None = the reference file's), ``align``; ``bounds`` if set
        fixes the extent.
    footprints : sequence of Footprint
        One per epoch (see :func:`pipeline.detection.io.imagery.epoch_footprint`). Ignored when
        ``area_cfg.bounds`` is given.
    reference : GridReference, optional
        The first epoch's first file (:func:`pipeline.detection.io.imagery.grid_reference`).
        Without one the grid is snapped to multiples of ``resolution_m``.

    Returns
    -------
    TargetGrid
        Extent = ``area_cfg.bounds`` or the intersection of the footprints transformed to
        the target CRS, snapped outward onto the reference file's pixel lattice when it can
        be followed (:func:`follow_reason`), else onto whole multiples of ``resolution_m``
        (with an INFO line saying why).

    Raises
    ------
    ConfigError
        If ``area.resolution_m`` is not set and there is no reference file in ``area.crs``
        to take it from.
    InputDataError
        If no footprint is given (and no bounds), or the epochs do not overlap.

    Notes
    -----
    Footprints are transformed with :func:`rasterio.warp.transform_bounds` (densified edges),
    so the bounding box of a reprojected footprint may be slightly larger than the data;
    pixels outside the data are simply invalid.
    """
    crs = CRS.from_user_input(area_cfg.crs)
    xmin, ymin, xmax, ymax = _extent(area_cfg, crs, footprints)
    why = follow_reason(area_cfg, reference)
    if why is None:
        assert reference is not None
        res = abs(float(reference.transform.a))
        ox, oy = float(reference.transform.c), float(reference.transform.f)
    else:
        if area_cfg.resolution_m is None:
            raise ConfigError(
                f"'area.resolution_m' is not set and the target grid cannot take the imagery's "
                f"pixel size: {why}; set 'area.resolution_m' (the grid's pixel size in metres)"
            )
        res, ox, oy = float(area_cfg.resolution_m), 0.0, 0.0
    # outward onto the lattice ox + i·res, oy - j·res (ox = oy = 0: multiples of res)
    x0 = ox + math.floor((xmin - ox) / res + SNAP_EPS) * res
    y1 = oy + math.ceil((ymax - oy) / res - SNAP_EPS) * res
    width = max(1, math.ceil((xmax - x0) / res - SNAP_EPS))
    height = max(1, math.ceil((y1 - ymin) / res - SNAP_EPS))
    grid = TargetGrid(
        crs=crs.to_wkt(),
        transform=Affine(res, 0.0, x0, 0.0, -res, y1),
        width=int(width),
        height=int(height),
    )
    if why is None:
        assert reference is not None
        log.info("target grid follows the pixels of %s (%g m)", reference.path, res)
    elif reference is not None:
        log.info("%s; target grid snapped to multiples of %g m", why, res)
    log.info("target grid %s x %s px at %g m, bounds %s", grid.width, grid.height, res, grid.bounds)
    return grid


def follow_reason(area_cfg: AreaConfig, reference: GridReference | None) -> str | None:
    """Why the target grid cannot follow ``reference``'s pixels, or None when it can.

    It can when ``area.align`` is ``imagery`` and the file is in ``area.crs``, north-up, with
    square pixels of ``area.resolution_m`` (any size when that is not set).
    """
    if area_cfg.align == "snap":
        return "'area.align' is 'snap'"
    if reference is None:
        return "no imagery file to follow"
    t, name = reference.transform, reference.path
    file_crs = CRS.from_user_input(reference.crs)
    if file_crs != CRS.from_user_input(area_cfg.crs):
        return f"first file {name} is in {file_crs.to_string()}, not area.crs ({area_cfg.crs})"
    if t.b != 0 or t.d != 0:
        return f"first file {name} is rotated or sheared (transform {tuple(t)[:6]})"
    n_px = max(reference.width, reference.height)
    if t.e >= 0 or not same_pixel_size(abs(t.e), t.a, n_px):
        return f"first file {name} is not north-up with square pixels ({t.a:g} x {t.e:g} m)"
    res = area_cfg.resolution_m
    if res is not None and not same_pixel_size(t.a, res, n_px):
        return f"first file {name} has {t.a:g} m pixels, not area.resolution_m = {res:g} m"
    return None


def same_pixel_size(size: float, res: float, n_px: int) -> bool:
    """Whether pixel sizes ``size`` and ``res`` agree within :data:`RES_DRIFT_PX` pixels over
    ``n_px`` pixels (the larger side of a file)."""
    return size > 0 and res > 0 and abs(size - res) * max(1, n_px) / res <= RES_DRIFT_PX


def _extent(
    area_cfg: AreaConfig, crs: CRS, footprints: Sequence[Footprint]
) -> tuple[float, float, float, float]:
    """``area.bounds``, or the intersection of the footprints in ``crs`` (not yet snapped)."""
    if area_cfg.bounds is not None:
        return area_cfg.bounds
    if not footprints:
        raise InputDataError(
            "cannot build the target grid: no epoch footprints and no 'area.bounds'; "
            "check that 'imagery.epochs' globs match files"
        )
    boxes = [transform_bounds(CRS.from_user_input(fp.crs), crs, *fp.bounds) for fp in footprints]
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
    return xmin, ymin, xmax, ymax


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
