"""The synthetic sample scene: its layout (vector) and its rendering (numpy).

:func:`make_layout` draws the whole sample as vector objects — road grid, crop parcels with a
crop state per epoch, villages with roofs, a river, trees, the administrative grid, approvals
and the new construction of epoch 2 (the truth). :func:`render_epoch` turns the layout into a
4-band reflectance image of one epoch. Both are pure and deterministic: the same
``(size_px, seed)`` gives the same objects and bit-identical arrays. Nothing here opens a file.

The scene is built so that a naive per-pixel difference does not solve it: most changed
pixels are seasonal (crop growth, harvest, ploughing), the epochs differ in per-band gain and
offset, noise and haze, and epoch 2 is shifted by a fraction of a pixel.

:class:`SceneOptions` makes it harder (every roof colour, buildings off farmland at village
edges, strong haze in one epoch, flooded paddies, plastic film, RGB-only files, the later
epoch in another CRS); the default options leave the scene exactly as it was. Large scenes
and the later epoch in another CRS are rendered by :mod:`pipeline.sample.blocks`.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
from affine import Affine
from rasterio import features
from scipy import ndimage

from pipeline.errors import ConfigError
from pipeline.sample.admin_layers import (
    Grid,
    assign_majority,
    cut_gap,
    district_outline,
    interior_boundaries,
    make_grid,
    village_seeds,
)
from pipeline.schema import T

CRS = "EPSG:4548"
"""CGCS2000 / 3-degree Gauss-Krüger CM 117E (metres)."""
RES_M = 2.0
ORIGIN_LONLAT = (115.65, 39.05)
"""Upper-left corner of the scene (CGCS2000 longitude, latitude) before rounding."""
FULL_SIZE_PX = 4000
MIN_SIZE_PX = 300
EPOCHS = ("2016", "2017")
BAND_NAMES = ("blue", "green", "red", "nir")
TILE_LAYOUTS = ((2, 2, 6), (3, 3, 4))
"""Per epoch: tile rows, tile columns, overlap in pixels (different on purpose)."""


class Kind(StrEnum):
    """Kinds of new objects in epoch 2 (the truth): construction (the first five) and, with
    ``SceneOptions.decoys``, the decoys (:data:`DECOY_KINDS`)."""

    ILLEGAL = "illegal"  # on farmland, outside every approval
    LEGAL = "legal"  # on farmland, fully inside an approval
    PARTIAL = "partial"  # on farmland, partly inside an approval
    NONFARM = "nonfarm"  # on land that is not farmland
    EARTHWORKS = "earthworks"  # fill soil on farmland
    TEMPORARY = "temporary"  # decoy: film tunnels / temporary farm sheds (设施农用地)
    SPOIL = "spoil"  # decoy: spoil heap / stockpile of field works


CONSTRUCTION_KINDS = (Kind.ILLEGAL, Kind.LEGAL, Kind.PARTIAL, Kind.NONFARM, Kind.EARTHWORKS)
"""Kinds of new construction: what a field team finds built (every sample has each)."""
DECOY_KINDS = (Kind.TEMPORARY, Kind.SPOIL)
"""Kinds of the decoys (``SceneOptions.decoys``): new in epoch 2 and bright like
construction, but a field team finds no construction (a false change)."""


class CropState(StrEnum):
    """State of a crop parcel at one date (the last three only with :class:`SceneOptions`)."""

    GREEN = "green"
    STUBBLE = "stubble"
    PLOUGHED = "ploughed"
    FLOODED = "flooded"  # paddy under water or wet soil (transplanting season)
    FILM = "film"  # plastic mulch film on the rows
    GREENHOUSE = "greenhouse"  # film-covered tunnels (agricultural, not construction)


class C(IntEnum):
    """Land-cover classes of the renderer (index into the spectral tables)."""

    GRASS = 0
    GRASS_DRY = 1
    CROP_GREEN = 2
    CROP_STUBBLE = 3
    CROP_PLOUGHED = 4
    BARE_SOIL = 5
    FILL_SOIL = 6
    CONCRETE = 7
    ROOF_CONCRETE = 8
    ROOF_BLUE = 9
    ROOF_RED = 10
    ASPHALT = 11
    WATER = 12
    TREES = 13
    VILLAGE_GROUND = 14
    FLOODED = 15
    FILM = 16
    GREENHOUSE = 17
    ROOF_STEEL_RED = 18
    ROOF_WHITE = 19
    ROOF_ASPHALT = 20
    FILM_WHITE = 21  # decoy tunnels: white / translucent plastic film
    FILM_BLUE = 22  # decoy tunnels: light-blue film
    SPOIL = 23  # decoy spoil heap: bright bare soil
    SPOIL_SHADED = 24  # its north (shaded) side


# Reflectance x 10000, bands blue, green, red, nir: (low, high) per class. One tone per object
# picks a point between low and high for all bands at once, then a small per-band jitter.
_SPECTRA = {
    C.GRASS: ((380, 650, 480, 2500), (520, 850, 650, 3200)),
    C.GRASS_DRY: ((600, 800, 850, 2000), (750, 980, 1050, 2500)),
    C.CROP_GREEN: ((300, 600, 300, 3500), (500, 900, 500, 5000)),
    C.CROP_STUBBLE: ((740, 930, 1110, 1850), (860, 1070, 1290, 2150)),
    C.CROP_PLOUGHED: ((700, 900, 1100, 1500), (900, 1100, 1400, 1900)),
    C.BARE_SOIL: ((1000, 1150, 1350, 1700), (1200, 1350, 1550, 2000)),
    C.FILL_SOIL: ((1300, 1600, 1900, 2300), (1600, 1900, 2300, 2600)),
    C.CONCRETE: ((1800, 1900, 1900, 2000), (2300, 2400, 2400, 2500)),
    C.ROOF_CONCRETE: ((2000, 2100, 2100, 2200), (2600, 2700, 2700, 2800)),
    C.ROOF_BLUE: ((2500, 2000, 1200, 1500), (3200, 2500, 1600, 2000)),
    C.ROOF_RED: ((830, 920, 1750, 2020), (970, 1080, 2050, 2380)),
    C.ASPHALT: ((830, 920, 1010, 1100), (970, 1080, 1190, 1300)),
    C.WATER: ((550, 650, 450, 150), (650, 750, 550, 260)),
    C.TREES: ((250, 450, 280, 2600), (350, 600, 380, 3400)),
    C.VILLAGE_GROUND: ((1050, 1150, 1250, 1600), (1350, 1450, 1550, 1900)),
    # from open water (low) to wet soil with seedlings (high)
    C.FLOODED: ((520, 640, 470, 200), (760, 880, 950, 1350)),
    C.FILM: ((1900, 2000, 2100, 2500), (2700, 2800, 2900, 3300)),
    C.GREENHOUSE: ((2500, 2600, 2600, 2800), (3500, 3600, 3600, 3800)),
    # red / orange colour-steel sheet as measured on delivered imagery
    C.ROOF_STEEL_RED: ((1350, 1250, 1800, 1700), (1575, 1500, 2000, 1950)),
    C.ROOF_WHITE: ((3400, 3500, 3500, 3300), (5400, 5500, 5500, 5200)),
    C.ROOF_ASPHALT: ((450, 480, 500, 550), (650, 700, 720, 800)),
    # decoys: film close to a white / a blue roof (the crop under translucent film lifts nir)
    C.FILM_WHITE: ((2900, 3000, 3000, 3100), (4600, 4700, 4700, 4800)),
    C.FILM_BLUE: ((2500, 2150, 1450, 1900), (3300, 2800, 2000, 2600)),
    C.SPOIL: ((1350, 1600, 1950, 2250), (1750, 2050, 2450, 2700)),
    C.SPOIL_SHADED: ((800, 950, 1150, 1350), (1050, 1250, 1500, 1650)),
}
_STRIPE = {  # relative amplitude of row stripes / furrows / tracks per band
    C.CROP_GREEN: (-0.10, -0.07, -0.14, 0.08),
    C.CROP_STUBBLE: (0.05, 0.05, 0.05, 0.04),
    C.CROP_PLOUGHED: (0.07, 0.07, 0.07, 0.06),
    C.FILL_SOIL: (0.03, 0.03, 0.03, 0.03),
    C.FILM: (0.22, 0.22, 0.22, 0.18),  # film rows between strips of bare soil
    C.GREENHOUSE: (0.15, 0.15, 0.15, 0.12),  # tunnels and the gaps between them
}
_TEXTURE = {C.TREES: 0.28, C.VILLAGE_GROUND: 0.12, C.GRASS: 0.10, C.GRASS_DRY: 0.10}
_TEXTURE |= {C.SPOIL: 0.10, C.SPOIL_SHADED: 0.12}  # lumpy heaps
_LOWFREQ = {C.CROP_GREEN: 0.07, C.CROP_STUBBLE: 0.05, C.CROP_PLOUGHED: 0.06, C.GRASS: 0.06}
_STATE_CLASS = {CropState.GREEN: C.CROP_GREEN, CropState.STUBBLE: C.CROP_STUBBLE}
_STATE_CLASS[CropState.PLOUGHED] = C.CROP_PLOUGHED
_STATE_CLASS[CropState.FLOODED] = C.FLOODED
_STATE_CLASS[CropState.FILM] = C.FILM
_STATE_CLASS[CropState.GREENHOUSE] = C.GREENHOUSE
_CROP_CLASSES = tuple(_STATE_CLASS.values())
_STATES = tuple(CropState)
_STATE_P1 = (0.45, 0.30, 0.25)
_STATE_TRANSITION = ((0.45, 0.30, 0.25), (0.40, 0.25, 0.35), (0.55, 0.10, 0.35))
_FULL_COUNTS = {
    Kind.ILLEGAL: 55,
    Kind.LEGAL: 22,
    Kind.PARTIAL: 12,
    Kind.NONFARM: 16,
    Kind.EARTHWORKS: 16,
}
"""Randomly placed objects per kind on the full 4000 px sample (plus the special ones)."""
_MIN_COUNTS = {
    Kind.ILLEGAL: 2,
    Kind.LEGAL: 2,
    Kind.PARTIAL: 2,
    Kind.NONFARM: 2,
    Kind.EARTHWORKS: 2,
}
_CLEARANCE_M = 12.0
_SELECT_CHUNK = 1024
"""Candidates tested at a time when placing objects (speed only)."""
_SHADOW_FACTOR = 0.5
_PALETTE = {
    "blue_roof": (C.ROOF_BLUE, 0.22),  # blue colour-steel sheet
    "red_steel_roof": (C.ROOF_STEEL_RED, 0.20),  # red / orange colour-steel sheet
    "red_roof": (C.ROOF_RED, 0.16),  # red clay tile
    "white_roof": (C.ROOF_WHITE, 0.14),
    "concrete_roof": (C.ROOF_CONCRETE, 0.16),  # grey concrete
    "asphalt_roof": (C.ROOF_ASPHALT, 0.12),  # black asphalt / bitumen
}
"""Roof covers of ``SceneOptions(roofs="all")``: renderer class and share among roofs."""
ROOF_COVERS = tuple(_PALETTE)
"""Every roof cover of the ``cover`` truth column (besides ``compound`` and ``fill_soil``)."""
LATER_CRS = "EPSG:32650"
"""WGS 84 / UTM zone 50N: the later epoch's CRS of :meth:`SceneOptions.hard`."""
STREAM_ABOVE_PX = 8000
"""Scenes larger than this are always rendered and written in row blocks."""
_LOCAL_CUT_ABOVE_PX = 8000
"""Scenes larger than this cut their parcels against the obstacles tile by tile
(:func:`_cut_locally`); smaller ones keep the exact whole-geometry difference, so the
samples made before stay byte for byte the same."""


@dataclass(frozen=True, kw_only=True)
class SceneOptions:
    """What makes a sample harder than the default one (every field off by default).

    The default options reproduce the default sample byte for byte; :meth:`hard` turns
    everything on.
    """

    roofs: Literal["classic", "all"] = "classic"
    """``"all"``: every roof, old and new, drawn from :data:`ROOF_COVERS` (blue and red /
    orange colour-steel, red clay tile, white, grey concrete, black asphalt)."""
    off_farmland: int = 0
    """New unapproved buildings next to village edges, off farmland (kind ``nonfarm``), per
    full 4000 px scene (scaled by area, at least 3 when > 0)."""
    haze: bool = False
    """Strong additive haze (path radiance, strongest in blue) in one epoch."""
    flooded_paddies: bool = False
    """Some paddy parcels under water (or wet soil) in one epoch."""
    film: bool = False
    """Plastic mulch or greenhouse film on some dry-land parcels in one epoch."""
    bands: Literal["rgbn", "rgb"] = "rgbn"
    """``"rgb"``: files hold blue, green and red only."""
    later_crs: str | None = None
    """CRS of the later epoch's files (reprojected, own grid with a sub-pixel origin offset);
    ``None``: the scene's CRS and grid."""
    stream: bool = False
    """Render and write in row blocks (flat memory); always on above
    :data:`STREAM_ABOVE_PX` and with ``later_crs``."""
    block_rows: int = 256
    """Rows per block when streaming (memory only)."""
    decoys: int = 0
    """Decoys on farmland in the later epoch, in all (not scaled by area): half temporary
    film tunnels / farm sheds (kind ``temporary``: 1-4 parallel strips of white or
    light-blue film, 6-10 m x 30-80 m), half spoil heaps (kind ``spoil``: bright bare soil,
    15-40 m across, some with a shaded north side). New and bright like construction but
    not construction: a field team finds a false change. Not part of :meth:`hard`."""

    def __post_init__(self) -> None:
        checks = (
            ("roofs", self.roofs in ("classic", "all"), "'classic' or 'all'"),
            ("bands", self.bands in ("rgbn", "rgb"), "'rgbn' or 'rgb'"),
            ("off_farmland", _is_count(self.off_farmland), "a count >= 0"),
            ("block_rows", _is_count(self.block_rows) and self.block_rows >= 16, "rows >= 16"),
            ("decoys", _is_count(self.decoys), "a count >= 0"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"SceneOptions.{name} = {getattr(self, name)!r}; expected {expected}"
                )
        if self.later_crs is not None:
            try:
                crs = pyproj.CRS(self.later_crs)
            except pyproj.exceptions.CRSError as exc:
                raise ConfigError(
                    f"SceneOptions.later_crs = {self.later_crs!r} is not a CRS ({exc}); "
                    f"expected e.g. {LATER_CRS!r}"
                ) from None
            if not crs.is_projected:
                raise ConfigError(
                    f"SceneOptions.later_crs = {self.later_crs!r} is not projected; expected a "
                    f"projected CRS in metres such as {LATER_CRS!r}"
                )

    @classmethod
    def hard(cls, bands: Literal["rgbn", "rgb"] = "rgbn") -> SceneOptions:
        """Everything on: all roof colours, new buildings off farmland next to villages,
        haze, flooded paddies, film, the later epoch in UTM, written in row blocks."""
        return cls(
            roofs="all",
            off_farmland=24,
            haze=True,
            flooded_paddies=True,
            film=True,
            bands=bands,
            later_crs=LATER_CRS,
            stream=True,
        )

    @property
    def band_names(self) -> tuple[str, ...]:
        """The bands written, in file order."""
        return BAND_NAMES if self.bands == "rgbn" else BAND_NAMES[:3]

    def streamed(self, size_px: int) -> bool:
        """Whether a ``size_px`` scene with these options is rendered in row blocks."""
        return self.stream or self.later_crs is not None or size_px > STREAM_ABOVE_PX


def _is_count(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 0


DEFAULT_OPTIONS = SceneOptions()
"""The default sample's options (nothing added)."""


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Frame:
    """The target grid of the sample: ``width`` x ``height`` pixels of ``res`` metres."""

    x0: float
    y0: float
    width: int
    height: int
    res: float = RES_M
    crs: str = CRS

    @property
    def transform(self) -> Affine:
        return Affine(self.res, 0.0, self.x0, 0.0, -self.res, self.y0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (
            self.x0,
            self.y0 - self.height * self.res,
            self.x0 + self.width * self.res,
            self.y0,
        )


@dataclass(frozen=True)
class SceneObjects:
    """Everything the renderer paints, in painting order (later objects cover earlier ones).

    Object 0 is the background (no geometry). ``cls[e, i]`` is the class of object ``i`` in
    epoch ``e`` or -1 when the object is absent in that epoch.
    """

    geoms: np.ndarray
    cls: np.ndarray
    tone: np.ndarray
    band_jitter: np.ndarray
    epoch_jitter: np.ndarray
    orient: np.ndarray
    period: np.ndarray
    phase: np.ndarray


@dataclass(frozen=True)
class Radiometry:
    """How one epoch differs from the ideal scene (all in reflectance x 10000 units)."""

    gain: tuple[float, ...]
    offset: tuple[float, ...]
    haze: tuple[float, ...]
    noise_sd: float
    shift_px: tuple[float, float]
    """(rows, cols) sub-pixel shift applied in scene space (misregistration)."""


@dataclass(frozen=True)
class Layout:
    """The whole sample as vector data plus what the renderer needs."""

    frame: Frame
    seed: int
    objects: SceneObjects
    shadows: tuple[np.ndarray, np.ndarray]
    nodata: tuple[shapely.Geometry | None, shapely.Geometry | None]
    radiometry: tuple[Radiometry, Radiometry]
    grid: Grid
    farmland: gpd.GeoDataFrame
    approvals: gpd.GeoDataFrame
    truth: gpd.GeoDataFrame
    seasonal: gpd.GeoDataFrame
    options: SceneOptions = DEFAULT_OPTIONS
    later_frame: Frame | None = None
    """The later epoch's own grid when it is written in another CRS."""

    def epoch_frame(self, epoch: int) -> Frame:
        """The grid the files of epoch ``epoch`` are written on."""
        if epoch == 1 and self.later_frame is not None:
            return self.later_frame
        return self.frame


# --------------------------------------------------------------------------- public
def make_frame(size_px: int) -> Frame:
    """The target grid: EPSG:4548, 2 m pixels, upper-left corner near 115.65 E, 39.05 N.

    Notes
    -----
    The corner is projected with pyproj (CGCS2000 geographic -> EPSG:4548, ``always_xy`` so
    x is easting although EPSG:4548 lists northing first) and rounded to whole 10 m.
    """
    to_gk = pyproj.Transformer.from_crs("EPSG:4490", CRS, always_xy=True)
    x, y = to_gk.transform(*ORIGIN_LONLAT)
    return Frame(x0=float(round(x, -1)), y0=float(round(y, -1)), width=size_px, height=size_px)


def tile_windows(
    height: int, width: int, n_rows: int, n_cols: int, overlap: int
) -> list[tuple[int, int, tuple[int, int, int, int]]]:
    """Overlapping tiles covering a ``height`` x ``width`` grid.

    Returns
    -------
    list of (tile_row, tile_col, (row_off, col_off, height, width))
        Tiles split the grid at ``round(k * size / n)`` and extend ``overlap`` pixels past
        each internal split, so neighbours share ``2 * overlap`` pixels.
    """
    rs = [round(k * height / n_rows) for k in range(n_rows + 1)]
    cs = [round(k * width / n_cols) for k in range(n_cols + 1)]
    out = []
    for i in range(n_rows):
        r0, r1 = max(0, rs[i] - overlap), min(height, rs[i + 1] + overlap)
        for j in range(n_cols):
            c0, c1 = max(0, cs[j] - overlap), min(width, cs[j + 1] + overlap)
            out.append((i, j, (r0, c0, r1 - r0, c1 - c0)))
    return out


def make_layout(
    size_px: int = FULL_SIZE_PX, seed: int = 2017, options: SceneOptions = DEFAULT_OPTIONS
) -> Layout:
    """Draw the whole synthetic sample as vector objects.

    Parameters
    ----------
    size_px : int
        Scene width and height in 2 m pixels (300..20000; 4000 = 8 km x 8 km).
    seed : int
        Seed of every random choice; the same arguments give the same layout.
    options : SceneOptions
        What to add to the default scene (default: nothing; the default layout is unchanged).

    Returns
    -------
    Layout

    Notes
    -----
    Each component draws from its own stream ``default_rng([seed, k])``, so changing how
    many objects one component draws does not reshuffle the others. Counts scale with the
    area; the full sample has 8-12 townships, 80-150 villages and about 130 new objects; a
    small one keeps at least 2 townships, 6 villages and 2 objects per kind. Each option
    draws from streams of its own (14 and up) after the default draws; the decoys (stream 19)
    are placed after every other object and painted last, in the later epoch only.
    """
    _check_args(size_px, seed)
    if not isinstance(options, SceneOptions):
        raise ConfigError(f"options = {options!r}; expected a SceneOptions")
    frame = make_frame(size_px)
    area_f = (size_px / FULL_SIZE_PX) ** 2

    def rng(k: int) -> np.random.Generator:
        return np.random.default_rng([seed, k])

    land = _draw_land(frame, area_f, rng)
    parcels, settle, roads, river = land["parcels"], land["settle"], land["roads"], land["river"]
    states = land["states"]
    if options.flooded_paddies or options.film:
        states = _seasonal_states(parcels, states, options, rng(15))
    crop = parcels["use"] == "crop"
    scale = min(1.0, land["spacing"] / 450.0)  # villages of small samples are small: so is the gap
    nodata1 = _nodata_triangle(frame)
    xmin, ymin, xmax, ymax = frame.bounds
    avoid = shapely.union(
        shapely.difference(
            shapely.box(xmin - 1, ymin - 1, xmax + 1, ymax + 1),
            shapely.box(xmin + 20, ymin + 20, xmax - 20, ymax - 20),
        ),
        shapely.buffer(nodata1, 20.0),
    )
    gap, gap_building = _choose_gap(land["grid0"], parcels["geom"][crop], scale, avoid, rng(9))
    grid = cut_gap(land["grid0"], gap)
    decoy_rng = rng(19) if options.decoys else None
    placed = _place_changes(
        frame,
        grid,
        parcels,
        states,
        gap_building,
        settle,
        roads,
        river,
        avoid,
        area_f,
        scale,
        rng(10),
        edges=(max(3, round(options.off_farmland * area_f)), rng(14))
        if options.off_farmland
        else None,
        decoys=(options.decoys, decoy_rng) if options.decoys else None,
    )
    palette = rng(16) if options.roofs == "all" else None
    objects, shadows = _scene_objects(
        frame, roads, river, settle, parcels, states, placed, rng(11), palette
    )
    if options.decoys:
        objects, placed = _add_decoys(objects, placed, decoy_rng)
    radiometry = _radiometry(rng(12))
    if options.haze:
        radiometry = _hazy(radiometry, rng(17))
    crs = pyproj.CRS(CRS)
    grid = Grid(
        district=grid.district.set_crs(crs),
        township=grid.township.set_crs(crs),
        village=grid.village.set_crs(crs),
        gap=grid.gap,
    )
    farmland = _farmland_layer(parcels, crs)
    approvals = _approvals_layer(placed["approvals"], crs, rng(13))
    truth = _truth_layer(placed, grid, farmland, approvals, crs)
    seasonal = _seasonal_layer(parcels, states, truth, crs)
    later = None if options.later_crs is None else later_frame(frame, options.later_crs, rng(18))
    return Layout(
        frame=frame,
        seed=seed,
        objects=objects,
        shadows=shadows,
        nodata=(nodata1, None),
        radiometry=radiometry,
        grid=grid,
        farmland=farmland,
        approvals=approvals,
        truth=truth,
        seasonal=seasonal,
        options=options,
        later_frame=later,
    )


def _draw_land(frame: Frame, area_f: float, rng) -> dict:
    """The district, villages, roads, river, settlements, parcels and crop states."""
    n_villages = int(np.clip(round(110 * area_f), 6, 150))
    n_towns = int(np.clip(round(10 * area_f), 2, 12))
    district = district_outline(frame.bounds, rng(1))
    seeds = village_seeds(district, n_villages, rng(2))
    spacing = float(np.sqrt(district.area / n_villages))
    grid0 = make_grid(district, seeds, n_towns, rng(3))
    roads = _roads(frame, rng(4))
    river = _river(frame, rng(5))
    settle = _settlements(seeds, spacing, frame, river["corridor"], rng(6))
    fringe = shapely.buffer(settle["union"], settle["fringe_m"], join_style="mitre")
    obstacles = shapely.union_all([roads["corridor"], river["corridor"], fringe])
    parcels = _parcels(frame, roads, obstacles, river["line"], rng(7))
    crop = parcels["use"] == "crop"
    states = _crop_states(int(crop.sum()), rng(8))
    return {
        "spacing": spacing,
        "grid0": grid0,
        "roads": roads,
        "river": river,
        "settle": settle,
        "parcels": parcels,
        "states": states,
    }


def later_frame(frame: Frame, crs: str, rng: np.random.Generator) -> Frame:
    """The later epoch's own grid in ``crs``: inside the scene, same resolution, its origin
    off the ``crs`` resolution multiples by a random 0.15-0.85 pixel in x and y."""
    to = pyproj.Transformer.from_crs(frame.crs, crs, always_xy=True)
    xmin, ymin, xmax, ymax = frame.bounds
    n = 64
    edge = np.linspace(0.0, 1.0, n)
    xs = np.concatenate([xmin + edge * (xmax - xmin), np.full(n, xmax)])
    ys = np.concatenate([np.full(n, ymax), ymax - edge * (ymax - ymin)])
    xs = np.concatenate([xs, xmax - edge * (xmax - xmin), np.full(n, xmin)])
    ys = np.concatenate([ys, np.full(n, ymin), ymin + edge * (ymax - ymin)])
    tx, ty = to.transform(xs, ys)
    tx, ty = np.asarray(tx), np.asarray(ty)
    # the largest axis-aligned box inside the scene's outline (nearly a rectangle there)
    left = tx[3 * n :].max()
    right = tx[n : 2 * n].min()
    top = ty[:n].min()
    bottom = ty[2 * n : 3 * n].max()
    res = frame.res
    fx, fy = rng.uniform(0.15, 0.85, 2)
    x0 = (np.ceil(left / res) + fx) * res
    y0 = (np.floor(top / res) - fy) * res
    width = int(np.floor((right - x0) / res))
    height = int(np.floor((y0 - bottom) / res))
    return Frame(
        x0=round(float(x0), 4), y0=round(float(y0), 4), width=width, height=height, res=res, crs=crs
    )


def render_epoch(layout: Layout, epoch: int, *, block_rows: int = 512) -> np.ndarray:
    """The 4-band uint16 image (bands, rows, cols) of epoch ``epoch`` (0 or 1).

    Parameters
    ----------
    layout : Layout
    epoch : int
        0 for the first epoch (2016), 1 for the second (2017).
    block_rows : int
        Rows rendered at a time (memory only; the result does not depend on it).

    Notes
    -----
    Values are reflectance x 10000, bands blue, green, red, nir, clipped to 1..65535 so that
    0 means nodata only. Order: object spectra with stripes and texture -> shadows -> 0.5 px
    Gaussian blur (soft edges) -> sub-pixel shift (epoch 2) -> per-band gain and offset,
    haze -> sensor noise -> nodata area set to 0. Memory is about 4 float32 copies of one
    band plus the result. Always on the scene's grid (``layout.frame``), all four bands: the
    files of scenes rendered in row blocks, and of a later epoch in another CRS, come from
    :class:`pipeline.sample.blocks.BlockRenderer`.
    """
    if epoch not in (0, 1):
        raise ConfigError(f"epoch = {epoch!r}; expected 0 (first) or 1 (second)")
    frame, obj = layout.frame, layout.objects
    h, w = frame.height, frame.width
    present = obj.cls[epoch] >= 0
    ids_all = np.arange(len(obj.geoms))
    shapes = zip(obj.geoms[present][1:], ids_all[present][1:], strict=True)
    ids = features.rasterize(
        shapes, out_shape=(h, w), transform=frame.transform, fill=0, dtype="int32"
    )
    shadow = _mask(layout.shadows[epoch], frame)
    spec, stripe_amp, tex_amp, lf_amp = _object_tables(obj, epoch)
    texture = _texture(h, w, layout.seed)
    rng_field = np.random.default_rng([layout.seed, 20])
    lowfreq = _smooth_field(rng_field, (150.0, 800.0), frame.res)
    out = np.empty((4, h, w), dtype=np.float32)
    cols = np.arange(w, dtype=np.float32)
    for r0 in range(0, h, block_rows):
        r1 = min(h, r0 + block_rows)
        idb = ids[r0:r1]
        rows = np.arange(r0, r1, dtype=np.float32)[:, None]
        along = np.where(obj.orient[idb], cols[None, :], rows)
        stripe = np.sin(
            (2 * np.pi) * along / obj.period[epoch][idb] + obj.phase[epoch][idb], dtype=np.float32
        )
        common = 1.0 + lf_amp[idb] * lowfreq(r0, r1, w) + tex_amp[idb] * texture[r0:r1]
        dark = np.where(shadow[r0:r1], np.float32(_SHADOW_FACTOR), np.float32(1.0))
        for b in range(4):
            out[b, r0:r1] = spec[:, b][idb] * (common + stripe_amp[:, b][idb] * stripe) * dark
    del ids, texture, shadow
    rad = layout.radiometry[epoch]
    haze = _smooth_field(
        np.random.default_rng([layout.seed, 21 + epoch]), (2500.0, 6000.0), frame.res
    )
    # one noise stream per band, drawn in row order: blocks do not change the values
    noise_rngs = [np.random.default_rng([layout.seed, 30 + epoch, b]) for b in range(4)]
    result = np.empty((4, h, w), dtype=np.uint16)
    for b in range(4):
        band = ndimage.gaussian_filter(out[b], sigma=0.5, mode="nearest")
        if rad.shift_px != (0.0, 0.0):
            band = ndimage.shift(band, rad.shift_px, order=1, mode="nearest")
        out[b] = band
    del band
    for r0 in range(0, h, block_rows):
        r1 = min(h, r0 + block_rows)
        hz = 0.5 + 0.5 * haze(r0, r1, w)
        for b in range(4):
            v = out[b, r0:r1] * np.float32(rad.gain[b]) + np.float32(rad.offset[b])
            v += np.float32(rad.haze[b]) * hz
            v += noise_rngs[b].standard_normal(v.shape, dtype=np.float32) * np.float32(rad.noise_sd)
            result[b, r0:r1] = np.clip(np.rint(v), 1, 65535).astype(np.uint16)
    nodata = layout.nodata[epoch]
    if nodata is not None:
        result[:, _mask(np.array([nodata], dtype=object), frame)] = 0
    return result


def truth_mask(layout: Layout) -> np.ndarray:
    """Boolean (rows, cols) mask of the truth objects (pixel centres inside)."""
    return _mask(layout.truth.geometry.values, layout.frame)


# --------------------------------------------------------------------------- layout parts
def _check_args(size_px: int, seed: int) -> None:
    if isinstance(size_px, bool) or not isinstance(size_px, int | np.integer):
        raise ConfigError(f"size_px = {size_px!r}; expected an integer number of pixels")
    if not MIN_SIZE_PX <= size_px <= 20000:
        raise ConfigError(
            f"size_px = {size_px}; expected {MIN_SIZE_PX}..20000 pixels of 2 m "
            f"({FULL_SIZE_PX} is the full 8 km sample)"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed = {seed!r}; expected a non-negative integer")


def _road_positions(lo: float, hi: float, rng: np.random.Generator) -> list[float]:
    pos, p = [], lo + rng.uniform(150, 420)
    while p < hi - 150:
        pos.append(round(p, 1))
        p += rng.uniform(380, 720)
    return pos


def _segments(lo: float, hi: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    out, s = [], lo + rng.uniform(0, 80)
    while s < hi:
        length = rng.uniform(60, 260)
        out.append((s, min(s + length, hi)))
        s += length + rng.uniform(15, 90)
    return out


def _roads(frame: Frame, rng: np.random.Generator) -> dict:
    """Road polygons with a class each, the corridor kept free of fields, tree rows."""
    xmin, ymin, xmax, ymax = frame.bounds
    polys, classes, corridors, trees = [], [], [], []
    xs = _road_positions(xmin, xmax, rng)
    ys = _road_positions(ymin, ymax, rng)
    for axis, positions in ((0, xs), (1, ys)):
        for p in positions:
            main = rng.random() < 0.3
            half = 5.0 if main else 3.0
            has_trees = rng.random() < 0.35
            if axis == 0:
                polys.append(shapely.box(p - half, ymin - 50, p + half, ymax + 50))
            else:
                polys.append(shapely.box(xmin - 50, p - half, xmax + 50, p + half))
            classes.append(C.ASPHALT if main else C.CONCRETE)
            verge = 8.0 if has_trees else 2.0
            corridors.append(shapely.buffer(polys[-1], verge, join_style="mitre"))
            if has_trees:
                lo, hi = (ymin, ymax) if axis == 0 else (xmin, xmax)
                for a, b in _segments(lo, hi, rng):
                    for side in (-1, 1):
                        o0 = p + side * (half + 1.5)
                        o1 = p + side * (half + 7.0)
                        lo_o, hi_o = min(o0, o1), max(o0, o1)
                        trees.append(
                            shapely.box(lo_o, a, hi_o, b)
                            if axis == 0
                            else shapely.box(a, lo_o, b, hi_o)
                        )
    if frame.width >= 1500:  # a diagonal highway across the larger samples
        t = rng.uniform(0.2, 0.4)
        line = shapely.LineString(
            [
                (xmin - 50, ymin + t * (ymax - ymin)),
                (xmax + 50, ymin + (t + 0.45) * (ymax - ymin)),
            ]
        )
        polys.append(shapely.buffer(line, 7.0, cap_style="flat"))
        classes.append(C.ASPHALT)
        corridors.append(shapely.buffer(line, 10.0, cap_style="flat"))
    return {
        "geom": np.array(polys, dtype=object),
        "cls": np.array(classes, dtype=int),
        "corridor": shapely.union_all(corridors) if corridors else shapely.Polygon(),
        "trees": np.array(trees, dtype=object),
        "xs": xs,
        "ys": ys,
    }


def _river(frame: Frame, rng: np.random.Generator) -> dict:
    """A meandering river across the scene, its corridor and bank tree clumps."""
    xmin, ymin, xmax, ymax = frame.bounds
    height = ymax - ymin
    x = np.arange(xmin - 60, xmax + 80, 20.0)
    amp = min(250.0, 0.12 * height)
    lam = rng.uniform(1500, 3000)
    y = (
        ymin
        + height * rng.uniform(0.3, 0.7)
        + amp * np.sin(2 * np.pi * x / lam + rng.uniform(0, 6.3))
        + amp / 3 * np.sin(2 * np.pi * x / (lam / 2.7) + rng.uniform(0, 6.3))
    )
    line = shapely.LineString(np.column_stack([x, y]))
    half = rng.uniform(12, 18)
    water = shapely.buffer(line, half)
    banks = [shapely.offset_curve(line, s * (half + 6.0)) for s in (-1, 1)]
    n = max(4, int(line.length / 60))
    which = rng.integers(0, 2, n)
    dist = rng.uniform(0, 1, n) * np.array([shapely.length(banks[k]) for k in which])
    pts = np.array([shapely.line_interpolate_point(banks[k], d) for k, d in zip(which, dist)])
    clumps = shapely.buffer(pts, rng.uniform(4, 9, n), quad_segs=3)
    return {
        "line": line,
        "water": water,
        "corridor": shapely.buffer(line, half + 12.0),
        "trees": clumps,
    }


def _settlements(
    seeds: np.ndarray, spacing: float, frame: Frame, avoid: shapely.Geometry, rng
) -> dict:
    """Village settlements at most seeds: ground polygons, house plots with roofs, trees."""
    xmin, ymin, xmax, ymax = frame.bounds
    inner = shapely.box(xmin + 20, ymin + 20, xmax - 20, ymax - 20)
    size_hi = min(320.0, max(70.0, 0.38 * spacing))
    # villages stop growing at 320 m; in large scenes (spacing over ~1.3 km) the lower
    # bound would pass the upper one
    size_lo = min(max(50.0, 0.22 * spacing), 0.9 * size_hi)
    polys = []
    for sx, sy in seeds:
        if rng.random() > 0.75:
            continue
        w, h = rng.uniform(size_lo, size_hi, 2)
        cx, cy = sx + rng.uniform(-0.1, 0.1) * w, sy + rng.uniform(-0.1, 0.1) * h
        parts = [shapely.box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)]
        for _ in range(int(rng.integers(0, 3))):
            ew, eh = rng.uniform(0.3, 0.6) * w, rng.uniform(0.3, 0.6) * h
            ex = cx + rng.choice([-1, 1]) * (w / 2 + ew / 2 - 10)
            ey = cy + rng.uniform(-0.3, 0.3) * h
            parts.append(shapely.box(ex - ew / 2, ey - eh / 2, ex + ew / 2, ey + eh / 2))
        polys.append(shapely.intersection(shapely.union_all(parts), inner))
    polys = np.array([p for p in polys if not p.is_empty], dtype=object)
    if len(polys):  # drop settlements touching the river or an earlier settlement
        ok = ~shapely.intersects(polys, avoid)
        buf = shapely.buffer(polys, min(40.0, 0.18 * spacing), join_style="mitre")
        a, b = shapely.STRtree(buf).query(buf, predicate="intersects")
        for i, j in zip(a, b):
            if j < i and ok[j]:
                ok[i] = False
        polys = polys[ok]
    union = shapely.union_all(polys) if len(polys) else shapely.Polygon()
    fringe_m = float(np.clip(0.18 * spacing, 15.0, 40.0))  # non-farm land around each village
    return {"geom": polys, "union": union, "fringe_m": fringe_m}


def _house_plots(settle: dict, corridor: shapely.Geometry, rng) -> dict:
    """Courtyard houses in every settlement: roofs (north side), side wings, garden trees."""
    boxes = []
    for poly in settle["geom"]:
        x0, y0, x1, y1 = poly.bounds
        pw, pd = rng.uniform(16, 22), rng.uniform(22, 30)
        lane = rng.uniform(4, 6)
        xs = np.arange(x0 + rng.uniform(1, 4), x1 - pw, pw + 1.0)
        ys = np.arange(y0 + rng.uniform(1, 4), y1 - pd, pd + lane)
        gx, gy = np.meshgrid(xs, ys)
        cand = shapely.box(gx.ravel(), gy.ravel(), gx.ravel() + pw, gy.ravel() + pd)
        boxes.append(cand[shapely.contains(poly, cand)])
    plots = np.concatenate(boxes) if boxes else np.array([], dtype=object)
    if len(plots):
        shapely.prepare(corridor)
        plots = plots[~shapely.intersects(corridor, plots)]
    b = shapely.bounds(plots).reshape(-1, 4)
    n = len(plots)
    garden = rng.random(n) < 0.08
    depth = rng.uniform(7, 10, n)
    main = shapely.box(b[:, 0] + 1, b[:, 3] - 1 - depth, b[:, 2] - 1, b[:, 3] - 1)
    main_cls = rng.choice([C.ROOF_RED, C.ROOF_CONCRETE, C.ROOF_BLUE], n, p=[0.4, 0.35, 0.25])
    wing = (rng.random(n) < 0.4) & ~garden
    wing_w = rng.uniform(4, 6, n)
    wings = shapely.box(b[:, 0] + 1, b[:, 1] + 2, b[:, 0] + 1 + wing_w, b[:, 3] - 2 - depth)
    wing_cls = rng.choice([C.ROOF_BLUE, C.ROOF_CONCRETE, C.ROOF_RED], n, p=[0.5, 0.3, 0.2])
    centres = shapely.centroid(plots)
    gardens = shapely.buffer(centres[garden], rng.uniform(5, 9, int(garden.sum())), quad_segs=3)
    return {
        "roofs": np.concatenate([main[~garden], wings[wing]]),
        "roof_cls": np.concatenate([main_cls[~garden], wing_cls[wing]]),
        "trees": gardens,
    }


def _parcels(frame: Frame, roads: dict, obstacles, river_line, rng) -> dict:
    """Field parcels (0.25-5 ha) in strips between the roads, with a land use each."""
    xmin, ymin, xmax, ymax = frame.bounds
    xb = [xmin, *roads["xs"], xmax]
    yb = [ymin, *roads["ys"], ymax]
    quads, block_of = [], []
    block = 0
    for i in range(len(xb) - 1):
        for j in range(len(yb) - 1):
            bx0, bx1, by0, by1 = xb[i], xb[i + 1], yb[j], yb[j + 1]
            vertical = rng.random() < 0.5  # strips run north-south: width along x
            lo, hi = (bx0, bx1) if vertical else (by0, by1)
            length = (by1 - by0) if vertical else (bx1 - bx0)
            cuts = [lo]
            while cuts[-1] < hi:
                width = rng.uniform(max(25.0, 5200.0 / length), 110.0)
                nxt = cuts[-1] + width
                cuts.append(hi if hi - nxt < 25.0 else nxt)
            for a, b in itertools.pairwise(cuts):
                pieces = int(np.ceil((b - a) * length / rng.uniform(25000, 50000)))
                edges = np.linspace(0, 1, pieces + 1)
                llo = by0 if vertical else bx0
                for e0, e1 in itertools.pairwise(edges):
                    s0, s1 = llo + e0 * length, llo + e1 * length
                    rect = (a, s0, b, s1) if vertical else (s0, a, s1, b)
                    quads.append(rect)
                    block_of.append(block)
            block += 1
    r = np.array(quads)
    d = rng.uniform(0.8, 2.5, (len(r), 4, 2))  # each corner pulled inwards: field margins
    ring = np.stack(
        [
            np.column_stack([r[:, 0] + d[:, 0, 0], r[:, 1] + d[:, 0, 1]]),
            np.column_stack([r[:, 2] - d[:, 1, 0], r[:, 1] + d[:, 1, 1]]),
            np.column_stack([r[:, 2] - d[:, 2, 0], r[:, 3] - d[:, 2, 1]]),
            np.column_stack([r[:, 0] + d[:, 3, 0], r[:, 3] - d[:, 3, 1]]),
        ],
        axis=1,
    )
    cells = shapely.polygons(np.round(ring, 2))
    if frame.width > _LOCAL_CUT_ABOVE_PX:
        cut = _cut_locally(cells, obstacles)
    else:
        cut = shapely.difference(cells, obstacles)
    parts, src = shapely.get_parts(cut, return_index=True)
    parts = shapely.make_valid(parts)
    area = shapely.area(parts)
    env = shapely.area(shapely.oriented_envelope(parts))
    keep = (area >= 2500) & (area / np.maximum(env, 1) >= 0.6) & (shapely.get_type_id(parts) == 3)
    parts, src = parts[keep], np.asarray(src)[keep]
    blocks = np.asarray(block_of)[src]
    n = len(parts)
    use = rng.choice(
        np.array(["crop", "grass", "bare", "factory", "pond"]), n, p=[0.88, 0.05, 0.02, 0.03, 0.02]
    )
    small_enough = shapely.area(parts) < 20000
    use = np.where((use == "factory") & ~small_enough, "grass", use)
    if (np.isin(use, ["grass", "bare"])).sum() < 2:
        use[rng.choice(n, 2, replace=False)] = "grass"
    basic_block = rng.random(block + 1) < 0.7
    near_river = shapely.distance(shapely.centroid(parts), river_line) < 400
    paddy = near_river & (rng.random(n) < 0.6)
    orient = np.array(
        [(b[2] - b[0]) < (b[3] - b[1]) for b in shapely.bounds(parts)], dtype=bool
    )  # True: narrow in x, rows run north-south -> stripes vary along x
    return {
        "geom": parts,
        "use": use,
        "basic": basic_block[blocks].astype("int32"),
        "dlbm": np.where(paddy, "0101", "0103"),
        "orient": orient,
    }


def _cut_locally(cells: np.ndarray, obstacles, tile_m: float = 1000.0) -> np.ndarray:
    """``difference(cells, obstacles)`` against the obstacles clipped to each ``tile_m``
    tile of cell centres: the same parcels (to 1e-6 m) in a fraction of the time on large
    scenes, where each difference with the whole road network dominated the layout."""
    b = shapely.bounds(cells)
    key = np.floor((b[:, :2] + b[:, 2:]) / 2 / tile_m).astype(np.int64)
    _, group = np.unique(key, axis=0, return_inverse=True)
    order = np.argsort(group.ravel(), kind="stable")
    bounds = np.searchsorted(group.ravel()[order], np.arange(group.max() + 2))
    out = np.empty(len(cells), dtype=object)
    for g in range(len(bounds) - 1):
        idx = order[bounds[g] : bounds[g + 1]]
        x0, y0 = b[idx, :2].min(axis=0) - 5.0
        x1, y1 = b[idx, 2:].max(axis=0) + 5.0
        local = shapely.clip_by_rect(obstacles, x0, y0, x1, y1)
        if not shapely.is_valid(local):  # clip_by_rect may leave an invalid polygon
            local = shapely.intersection(obstacles, shapely.box(x0, y0, x1, y1))
        out[idx] = shapely.difference(cells[idx], local)
    return out


def _crop_states(n: int, rng: np.random.Generator) -> np.ndarray:
    """Crop state per parcel and epoch, shape (2, n): indices into :class:`CropState`."""
    s1 = rng.choice(3, n, p=_STATE_P1)
    u = rng.random(n)
    cum = np.cumsum(np.asarray(_STATE_TRANSITION), axis=1)[s1]
    s2 = (u[:, None] > cum).sum(axis=1).clip(0, 2)
    return np.stack([s1, s2])


def _choose_gap(grid: Grid, crop: np.ndarray, scale: float, avoid, rng) -> tuple:
    """A hole of about 100 x 150 m (times ``scale``) strictly inside one village, centred on
    a point of a crop parcel that can hold an illegal building there."""
    gw, gh = 100.0 * scale, 150.0 * scale
    bw, bh = 22.0 * max(scale, 0.6), 28.0 * max(scale, 0.6)
    b = np.repeat(shapely.bounds(crop), 8, axis=0)
    xy = np.round(rng.uniform(b[:, :2], b[:, 2:]), 1)  # 8 random centres per parcel
    crop = np.repeat(crop, 8)
    gaps = shapely.box(xy[:, 0] - gw / 2, xy[:, 1] - gh / 2, xy[:, 0] + gw / 2, xy[:, 1] + gh / 2)
    builds = shapely.box(xy[:, 0] - bw / 2, xy[:, 1] - bh / 2, xy[:, 0] + bw / 2, xy[:, 1] + bh / 2)
    tree = shapely.STRtree(shapely.buffer(grid.village.geometry.values, -3.0))
    shapely.prepare(avoid)
    chunk = 4096  # the first good candidate wins: test them a chunk at a time
    for start in range(0, len(gaps), chunk):
        gi, _ = tree.query(gaps[start : start + chunk], predicate="within")
        gi = gi + start
        fits = shapely.contains_properly(crop[gi], builds[gi])
        good = gi[fits & ~shapely.intersects(shapely.buffer(builds[gi], 15.0), avoid)]
        if len(good):
            k = int(good.min())  # candidates are already in random order
            return gaps[k], builds[k]
    raise ConfigError(
        "no place for the deliberate grid gap: no village holds a crop parcel with room "
        "around it; use a larger size_px or another seed"
    )


def _nodata_triangle(frame: Frame) -> shapely.Polygon:
    """The bottom-right corner of epoch 1 lies outside the image swath (nodata)."""
    _xmin, ymin, xmax, _ = frame.bounds
    leg = round(0.07 * min(frame.width, frame.height)) * frame.res
    return shapely.Polygon([(xmax, ymin), (xmax - leg, ymin), (xmax, ymin + leg)])


def _rect_sizes(n: int, area_range: tuple[float, float], rng) -> tuple[np.ndarray, np.ndarray]:
    area = np.exp(rng.uniform(np.log(area_range[0]), np.log(area_range[1]), n))
    aspect = rng.uniform(1.0, 2.5, n)
    w = np.sqrt(area * aspect)
    h = area / w
    swap = rng.random(n) < 0.5
    return np.where(swap, h, w), np.where(swap, w, h)


def _boxes_at(x, y, w, h) -> np.ndarray:
    return shapely.box(
        np.round(x - w / 2, 1),
        np.round(y - h / 2, 1),
        np.round(x + w / 2, 1),
        np.round(y + h / 2, 1),
    )


def _in_parcels(parcels: np.ndarray, n: int, area_range, rng) -> np.ndarray:
    """``n`` candidate boxes, each inside a random parcel (area-weighted); invalid = None."""
    if len(parcels) == 0:
        return np.array([], dtype=object)
    weights = shapely.area(parcels)
    idx = rng.choice(len(parcels), n, p=weights / weights.sum())
    w, h = _rect_sizes(n, area_range, rng)
    b = shapely.bounds(parcels[idx])
    x = rng.uniform(b[:, 0], b[:, 2])
    y = rng.uniform(b[:, 1], b[:, 3])
    boxes = _boxes_at(x, y, w, h)
    ok = shapely.contains_properly(parcels[idx], boxes)
    return boxes[ok]


def _on_lines(lines, n: int, area_range, rng) -> np.ndarray:
    """Candidate boxes centred near random points of ``lines`` (so they straddle them)."""
    if lines.is_empty:
        return np.array([], dtype=object)
    pts = shapely.line_interpolate_point(lines, rng.uniform(0, lines.length, n))
    xy = shapely.get_coordinates(pts)
    w, h = _rect_sizes(n, area_range, rng)
    return _boxes_at(
        xy[:, 0] + rng.uniform(-0.25, 0.25, n) * w, xy[:, 1] + rng.uniform(-0.25, 0.25, n) * h, w, h
    )


def _select(cands: np.ndarray, n: int, blocked: list, footprints: np.ndarray | None = None):
    """Indices of up to ``n`` candidates, in order, that keep ``_CLEARANCE_M`` from
    everything in ``blocked`` and from each other. ``footprints`` (default the candidates)
    is what must stay clear (e.g. an object with its approval).

    Notes
    -----
    Greedy in candidate order: a candidate is taken unless it is blocked or a candidate
    taken before it lies within the clearance. Candidates are tested a chunk at a time and
    the test stops once ``n`` are taken (the result is the same as testing all at once).
    """
    fp = cands if footprints is None else footprints
    if len(fp) == 0 or n <= 0:
        return np.array([], dtype=int)
    blocked = np.asarray(blocked, dtype=object)
    big = shapely.get_num_coordinates(blocked) > 64 if len(blocked) else np.zeros(0, bool)
    for geom in blocked[big]:  # large areas: their prepared geometry tests faster
        shapely.prepare(geom)
    small = shapely.STRtree(blocked[~big]) if (~big).any() else None
    chosen: list[int] = []
    chosen_grown: list = []
    for start in range(0, len(fp), _SELECT_CHUNK):
        part = fp[start : start + _SELECT_CHUNK]
        grown = shapely.buffer(part, _CLEARANCE_M, join_style="mitre")
        taken = np.zeros(len(part), dtype=bool)
        for geom in blocked[big]:
            taken |= shapely.intersects(geom, grown)
        if small is not None:
            taken[small.query(grown, predicate="intersects")[0]] = True
        if chosen_grown:  # near a candidate taken from an earlier chunk
            near = shapely.STRtree(np.asarray(chosen_grown, dtype=object))
            taken[near.query(part, predicate="intersects")[0]] = True
        a, b = shapely.STRtree(part).query(grown, predicate="intersects")
        pair = a != b
        a, b = a[pair], b[pair]
        order = np.argsort(a, kind="stable")
        a, b = a[order], b[order]
        starts = np.searchsorted(a, np.arange(len(part) + 1))
        for i in range(len(part)):
            if taken[i]:
                continue
            chosen.append(start + i)
            chosen_grown.append(grown[i])
            taken[b[starts[i] : starts[i + 1]]] = True
            if len(chosen) == n:
                return np.array(chosen, dtype=int)
    return np.array(chosen, dtype=int)


def _octagons(boxes: np.ndarray, rng) -> np.ndarray:
    """Chamfered versions of axis-aligned boxes (irregular earthworks outlines)."""
    b = shapely.bounds(boxes).reshape(-1, 4)
    n = len(b)
    c = rng.uniform(0.12, 0.35, (n, 4)) * np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])[:, None]
    x0, y0, x1, y1 = b.T
    ring = np.stack(
        [
            np.column_stack([x0 + c[:, 0], y0]),
            np.column_stack([x1 - c[:, 1], y0]),
            np.column_stack([x1, y0 + c[:, 1]]),
            np.column_stack([x1, y1 - c[:, 2]]),
            np.column_stack([x1 - c[:, 2], y1]),
            np.column_stack([x0 + c[:, 3], y1]),
            np.column_stack([x0, y1 - c[:, 3]]),
            np.column_stack([x0, y0 + c[:, 0]]),
        ],
        axis=1,
    )
    return shapely.polygons(np.round(ring, 1))


def _place_changes(
    frame,
    grid,
    parcels,
    states,
    gap_building,
    settle,
    roads,
    river,
    avoid,
    area_f,
    scale,
    rng,
    edges: tuple[int, np.random.Generator] | None = None,
    decoys: tuple[int, np.random.Generator] | None = None,
) -> dict:
    """New objects of epoch 2 by kind, and the approvals (see :class:`Kind`).

    ``avoid`` is where no object may go (scene edge, epoch-1 nodata); ``scale`` (<= 1)
    shrinks the largest objects on small samples so every kind still finds room.
    ``edges`` (count, stream): that many more non-farm buildings at village edges.
    ``decoys`` (count, stream): that many decoys on crop parcels, last (:func:`_place_decoys`);
    they are returned apart (``placed["decoys"]``), not among the new objects.

    Notes
    -----
    The steps draw from ``rng`` in a fixed order (boundary objects, approved ones, the rest):
    reordering them changes every sample.
    """
    crop_geoms = parcels["geom"][parcels["use"] == "crop"]
    xmin, ymin, xmax, ymax = frame.bounds
    outside = shapely.difference(
        shapely.box(xmin, ymin, xmax, ymax),
        shapely.buffer(grid.district.geometry.iloc[0], -5.0),
    )  # objects outside the district would be unassigned: only the gap object is meant to be
    want = {k: max(_MIN_COUNTS[k], round(_FULL_COUNTS[k] * area_f)) for k in CONSTRUCTION_KINDS}
    placing = _Placement(
        rng=rng,
        crop_geoms=crop_geoms,
        many=max(400, 40 * sum(want.values())),
        hi=max(600.0, 4000.0 * scale**2),
        blocked=[avoid, outside, grid.gap],  # the gap holds only the gap building
        objects=[(gap_building, Kind.ILLEGAL)],
    )
    _place_on_boundaries(placing, frame, grid, area_f)
    _place_approved(placing, want, scale)
    _place_unapproved(placing, want, parcels, states, settle, roads, river)
    if edges is not None:
        _place_village_edges(placing, *edges, settle, roads, river)
    objects = placing.objects
    missing = [str(k) for k in CONSTRUCTION_KINDS if not any(kind == k for _, kind in objects)]
    if missing:
        raise ConfigError(
            f"no room for new objects of kind {', '.join(missing)} in a {frame.width} px "
            "sample; use a larger size_px or another seed"
        )
    placed = {
        "geom": np.array([g for g, _ in objects], dtype=object),
        "kind": np.array([str(k) for _, k in objects], dtype=object),
        "approvals": np.array(placing.approvals, dtype=object),
    }
    if decoys is not None:
        placed["decoys"] = _place_decoys(placing, *decoys)
        if len(placed["decoys"]["geom"]) < decoys[0]:
            raise ConfigError(
                f"no room for {decoys[0]} decoys in a {frame.width} px sample (placed "
                f"{len(placed['decoys']['geom'])}); use fewer decoys or a larger size_px"
            )
    return placed


@dataclass
class _Placement:
    """The new objects placed so far, the approvals drawn with them, and what they block.

    Mutable on purpose: each placement step adds to it, in the order of the random draws.
    """

    rng: np.random.Generator
    crop_geoms: np.ndarray
    """Crop parcels (most objects go on farmland)."""
    many: int
    """Candidates drawn per try."""
    hi: float
    """Area (m²) of the largest objects."""
    blocked: list
    """Where no further object (nor its approval) may go."""
    objects: list
    """``(geometry, kind)`` of each object placed."""
    approvals: list = field(default_factory=list)

    def take(self, cands, n, kind, footprints=None, extra=None) -> int:
        """Place up to ``n`` of ``cands`` that keep clear of everything placed; how many."""
        idx = _select(cands, n, self.blocked, footprints)
        for i in idx:
            self.objects.append((cands[i], kind))
            self.blocked.append(cands[i] if footprints is None else footprints[i])
            if extra is not None:
                self.approvals.append(extra[i])
        return len(idx)

    def fill(self, make, n, kind, approval=None) -> int:
        """Place ``n`` objects of ``kind``, drawing fresh candidates up to three times."""
        placed = 0
        for _ in range(3):
            if placed >= n:
                break
            cands = make()
            if approval is None:
                placed += self.take(cands, n - placed, kind)
            else:
                appr = approval(cands)
                fp = shapely.union(cands, appr)
                placed += self.take(cands, n - placed, kind, footprints=fp, extra=appr)
        return placed

    def in_crop(self, cands):
        """The candidates that lie within one crop parcel."""
        if len(cands) == 0:
            return cands
        gi, _ = shapely.STRtree(self.crop_geoms).query(cands, predicate="within")
        return cands[np.unique(gi)]


def _place_on_boundaries(placing: _Placement, frame, grid, area_f) -> None:
    """Illegal objects across village boundaries and across the tile edges of each epoch."""
    rng, many, hi = placing.rng, placing.many, placing.hi
    xmin, ymin, xmax, ymax = frame.bounds
    lines = interior_boundaries(grid.village, grid.district.geometry.iloc[0])

    def across_villages():
        cands = placing.in_crop(_on_lines(lines, many, (150.0, min(1500.0, hi)), rng))
        if len(cands) == 0:
            return cands
        gi, _ = shapely.STRtree(grid.village.geometry.values).query(cands, predicate="intersects")
        two = np.bincount(gi, minlength=len(cands)) == 2
        return cands[two & shapely.intersects(cands, lines)]

    n_vb = placing.fill(across_villages, 3 if area_f > 0.5 else 2, Kind.ILLEGAL)
    n_tile = 0
    for e, (nr, nc, _) in enumerate(TILE_LAYOUTS):
        x = xmin + frame.res * round(frame.width / nc)
        y = ymax - frame.res * round(frame.height / nr)
        tile_lines = [shapely.LineString([(x, ymin), (x, ymax)])]
        if area_f > 0.5 or e == 1:
            tile_lines.append(shapely.LineString([(xmin, y), (xmax, y)]))
        for line in tile_lines:

            def across_tiles(line=line):
                cands = placing.in_crop(_on_lines(line, many // 4, (150.0, min(2000.0, hi)), rng))
                return cands[shapely.intersects(cands, line)]

            n_tile += placing.fill(across_tiles, 1, Kind.ILLEGAL)
    if n_vb == 0 or n_tile == 0:
        raise ConfigError(
            f"could not place objects across village boundaries ({n_vb}) or tile edges "
            f"({n_tile}); use a larger size_px or another seed"
        )


def _place_approved(placing: _Placement, want: dict, scale: float) -> None:
    """Legal objects inside an approval with a margin, partial ones that an approval covers at
    one end, and approvals with no construction yet."""
    rng, crop_geoms, many, hi = placing.rng, placing.crop_geoms, placing.many, placing.hi
    big = (100.0, hi)
    placing.fill(
        lambda: _in_parcels(crop_geoms, many, big, rng),
        want[Kind.LEGAL],
        Kind.LEGAL,
        approval=lambda c: shapely.buffer(c, rng.uniform(8, 35, len(c)), join_style="mitre"),
    )
    placing.fill(
        lambda: _in_parcels(crop_geoms, many, (min(300.0, hi / 2), hi), rng),
        want[Kind.PARTIAL],
        Kind.PARTIAL,
        approval=lambda c: _partial_approvals(c, rng),
    )
    n_empty = max(1, round(0.3 * want[Kind.LEGAL]))
    empty = _in_parcels(crop_geoms, many, (2500.0 * scale, 15000.0 * scale), rng)
    for i in _select(empty, n_empty, placing.blocked):
        placing.approvals.append(empty[i])
        placing.blocked.append(empty[i])


def _place_unapproved(
    placing: _Placement, want: dict, parcels, states, settle, roads, river
) -> None:
    """Illegal buildings, earthworks (on green crops in epoch 1) and non-farm buildings."""
    rng, crop_geoms, many, hi = placing.rng, placing.crop_geoms, placing.many, placing.hi
    big = (100.0, hi)
    placing.fill(lambda: _in_parcels(crop_geoms, many, big, rng), want[Kind.ILLEGAL], Kind.ILLEGAL)
    green = crop_geoms[states[0] == 0]  # veg -> bare; other crop parcels only as a fallback
    placing.fill(
        lambda: _octagons(
            np.concatenate(
                [
                    _in_parcels(green, many, (300.0, hi * 1.25), rng),
                    _in_parcels(crop_geoms, many // 4, (300.0, hi), rng),
                ]
            ),
            rng,
        ),
        want[Kind.EARTHWORKS],
        Kind.EARTHWORKS,
    )
    free = _nonfarm_space(parcels, settle, roads, river)
    placing.fill(lambda: _in_free_space(free, settle, many, rng), want[Kind.NONFARM], Kind.NONFARM)


def _place_village_edges(placing: _Placement, n: int, rng, settle, roads, river) -> None:
    """``n`` non-farm buildings right at village edges: 0.5-4 m outside the settlement
    ground, inside its non-farm fringe, clear of roads, the river and each other."""
    union = settle["union"]
    if union.is_empty or n <= 0:
        return
    fringe = settle["fringe_m"]
    room = shapely.difference(
        shapely.buffer(union, fringe - 1.5, join_style="mitre"),
        shapely.union_all(
            [
                shapely.buffer(union, 0.5, join_style="mitre"),
                roads["corridor"],
                river["corridor"],
            ]
        ),
    )
    touch = shapely.buffer(union, 4.0, join_style="mitre")
    shapely.prepare(room)
    shapely.prepare(touch)
    outline = shapely.boundary(union)
    hi = float(np.clip(0.8 * (fringe - 2.0) ** 2, 120.0, 1500.0))

    def make():
        k = 40 * n
        pts = shapely.line_interpolate_point(outline, rng.uniform(0, outline.length, k))
        xy = shapely.get_coordinates(pts)
        w, h = _rect_sizes(k, (100.0, hi), rng)
        # push the box out of the village by half its size along a random axis direction
        sx, sy = rng.choice([-1.0, 1.0], (2, k))
        along_x = rng.random(k) < 0.5
        dx = np.where(along_x, sx * (w / 2 + rng.uniform(0.5, 3.5, k)), 0.0)
        dy = np.where(along_x, 0.0, sy * (h / 2 + rng.uniform(0.5, 3.5, k)))
        boxes = _boxes_at(xy[:, 0] + dx, xy[:, 1] + dy, w, h)
        ok = shapely.contains(room, boxes) & shapely.intersects(touch, boxes)
        return boxes[ok]

    placing.fill(make, n, Kind.NONFARM)


_DECOY_TRIES = 5
_DECOY_MARGIN_M = 2.0
"""Decoys keep this far inside their crop parcel (off the field margins)."""
_TUNNELS_P = (0.35, 0.25, 0.25, 0.15)
"""Share of decoy tunnel groups of 1, 2, 3 and 4 parallel tunnels."""
_WHITE_FILM_P = 0.65
"""Share of the decoy tunnel groups under white film (the rest light-blue film)."""
_SHADED_SPOIL_P = 0.5
"""Share of the spoil heaps showing a shaded north side."""


def _place_decoys(placing: _Placement, n: int, rng: np.random.Generator) -> dict:
    """``n`` decoys on crop parcels, clear of everything placed (objects, approvals, the scene
    edge, epoch-1 nodata, the grid gap, outside the district): ``(n + 1) // 2`` groups of
    film tunnels (:func:`_tunnel_groups`), then ``n // 2`` spoil heaps (:func:`_spoil_heaps`).

    Returns
    -------
    dict
        ``geom`` (the truth geometry of each decoy), ``kind``, ``cover`` and ``parts``
        (per decoy, the ``(geometry, class)`` pairs to paint, in order).
    """
    fields = shapely.buffer(placing.crop_geoms, -_DECOY_MARGIN_M, join_style="mitre")
    fields = fields[~shapely.is_empty(fields)]
    out: dict[str, list] = {"geom": [], "kind": [], "cover": [], "parts": []}
    n_temp = (n + 1) // 2
    for kind, count, make in (
        (Kind.TEMPORARY, n_temp, _tunnel_groups),
        (Kind.SPOIL, n - n_temp, _spoil_heaps),
    ):
        placed = 0
        for _ in range(_DECOY_TRIES):
            if placed >= count or len(fields) == 0:
                break
            cands = make(fields, placing.many, rng)
            idx = _select(cands["footprint"], count - placed, placing.blocked)
            for i in idx:
                out["geom"].append(cands["geom"][i])
                out["kind"].append(str(kind))
                out["cover"].append(cands["cover"][i])
                out["parts"].append(cands["parts"][i])
                placing.blocked.append(cands["footprint"][i])
            placed += len(idx)
    return out


def _in_fields(fields: np.ndarray, k: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``k`` random parcels (area-weighted) and a random point in each one's bounds:
    (parcel indices, x, y)."""
    weights = shapely.area(fields)
    idx = rng.choice(len(fields), k, p=weights / weights.sum())
    b = shapely.bounds(fields[idx])
    return idx, rng.uniform(b[:, 0], b[:, 2]), rng.uniform(b[:, 1], b[:, 3])


def _tunnel_groups(fields: np.ndarray, k: int, rng) -> dict:
    """Candidate groups of film tunnels (temporary farm sheds, 设施农用地) inside
    ``fields``: 1-4 parallel strips 6-10 m wide, 30-80 m long, 3-5 m apart, running along
    the parcel's long side, under white or light-blue film. ``footprint``: the group's
    bounding box; ``geom``: the tunnels."""
    idx, x, y = _in_fields(fields, k, rng)
    count = rng.choice(np.arange(1, 5), k, p=_TUNNELS_P)
    width = rng.uniform(6.0, 10.0, k)
    length = rng.uniform(30.0, 80.0, k)
    gap = rng.uniform(3.0, 5.0, k)
    white = rng.random(k) < _WHITE_FILM_P
    b = shapely.bounds(fields[idx])
    along_y = (b[:, 2] - b[:, 0]) < (b[:, 3] - b[:, 1])  # tunnels along the rows
    span = count * width + (count - 1) * gap
    boxes = _boxes_at(x, y, np.where(along_y, span, length), np.where(along_y, length, span))
    ok = np.flatnonzero(shapely.contains_properly(fields[idx], boxes))
    geoms, parts, covers = [], [], []
    for i in ok:
        x0, y0, x1, y1 = shapely.bounds(boxes[i])
        starts = np.round((x0 if along_y[i] else y0) + np.arange(count[i]) * (width[i] + gap[i]), 1)
        ends = np.round(starts + width[i], 1)
        if along_y[i]:
            strips = shapely.box(starts, y0, ends, y1)
        else:
            strips = shapely.box(x0, starts, x1, ends)
        cls = C.FILM_WHITE if white[i] else C.FILM_BLUE
        geoms.append(strips[0] if len(strips) == 1 else shapely.MultiPolygon(list(strips)))
        parts.append([(g, cls) for g in strips])
        covers.append("white_film" if white[i] else "blue_film")
    return {"footprint": boxes[ok], "geom": geoms, "parts": parts, "cover": covers}


def _spoil_heaps(fields: np.ndarray, k: int, rng) -> dict:
    """Candidate spoil heaps inside ``fields``: irregular blobs 15-40 m across (a wobbly,
    noisy star-shaped outline, somewhat elongated) of bright bare soil, about half with a
    shaded north side (sun in the south). ``footprint`` and ``geom``: the blob."""
    idx, x, y = _in_fields(fields, k, rng)
    m = 24
    theta = np.linspace(0.0, 2 * np.pi, m, endpoint=False)
    radius = rng.uniform(7.5, 20.0, k)
    amp = rng.uniform(0.03, 0.12, (k, 3))
    phase = rng.uniform(0.0, 2 * np.pi, (k, 3))
    wobble = sum(
        amp[:, j, None] * np.cos(order * theta[None, :] + phase[:, j, None])
        for j, order in enumerate((2, 3, 5))
    )
    rough = rng.uniform(-0.08, 0.08, (k, m))
    stretch = np.sqrt(rng.uniform(1.0, 1.6, k))
    turn = rng.uniform(0.0, np.pi, k)
    shaded = rng.random(k) < _SHADED_SPOIL_P
    cut = rng.uniform(0.05, 0.35, k)  # where the shaded side starts, north of the centre
    r = radius[:, None] * (1.0 + wobble + rough)  # > 0.5 radius: a star-shaped simple ring
    u, v = r * np.cos(theta) * stretch[:, None], r * np.sin(theta) / stretch[:, None]
    cos, sin = np.cos(turn)[:, None], np.sin(turn)[:, None]
    ring = np.stack([x[:, None] + u * cos - v * sin, y[:, None] + u * sin + v * cos], axis=2)
    blobs = shapely.polygons(np.round(ring, 1))
    ok = np.flatnonzero(shapely.contains_properly(fields[idx], blobs))
    parts = []
    for i in ok:
        parts.append([(blobs[i], C.SPOIL)])
        if shaded[i]:
            x0, _, x1, y1 = shapely.bounds(blobs[i])
            north = shapely.box(x0 - 1.0, y[i] + cut[i] * radius[i], x1 + 1.0, y1 + 1.0)
            side = shapely.intersection(blobs[i], north)
            if not side.is_empty and side.area > 4.0:
                parts[-1].append((side, C.SPOIL_SHADED))
    return {
        "footprint": blobs[ok],
        "geom": list(blobs[ok]),
        "parts": parts,
        "cover": ["bare_soil"] * len(ok),
    }


def _add_decoys(objects: SceneObjects, placed: dict, rng) -> tuple[SceneObjects, dict]:
    """The decoys of ``placed["decoys"]`` painted after every other object, in the later
    epoch only (their tone, jitter and stripes drawn from ``rng``, the decoys' own stream,
    so the other objects keep theirs), and appended to the new objects (the truth)."""
    decoys = placed["decoys"]
    paint = [(g, c) for parts in decoys["parts"] for g, c in parts]
    group = np.repeat(np.arange(len(decoys["parts"])), [len(p) for p in decoys["parts"]])
    n = len(paint)
    geoms = np.empty(n, dtype=object)
    geoms[:] = [g for g, _ in paint]
    cls = np.stack([np.full(n, -1), np.array([int(c) for _, c in paint], dtype=int)])
    # the tunnels of a group share their film: one tone per decoy, a little apart per part
    tone = np.clip(rng.random(len(decoys["parts"]))[group] + rng.normal(0, 0.04, n), 0, 1)
    b = shapely.bounds(geoms).reshape(-1, 4)
    merged = SceneObjects(
        geoms=np.concatenate([objects.geoms, geoms]),
        cls=np.concatenate([objects.cls, cls.astype(objects.cls.dtype)], axis=1),
        tone=np.concatenate([objects.tone, tone.astype(np.float32)]),
        band_jitter=np.concatenate(
            [objects.band_jitter, rng.normal(0, 0.025, (n, 4)).astype(np.float32)]
        ),
        epoch_jitter=np.concatenate(
            [objects.epoch_jitter, rng.normal(0, 0.015, (2, n)).astype(np.float32)], axis=1
        ),
        orient=np.concatenate([objects.orient, (b[:, 2] - b[:, 0]) < (b[:, 3] - b[:, 1])]),
        period=np.concatenate(
            [objects.period, rng.uniform(3.0, 7.0, (2, n)).astype(np.float32)], axis=1
        ),
        phase=np.concatenate(
            [objects.phase, rng.uniform(0, 2 * np.pi, (2, n)).astype(np.float32)], axis=1
        ),
    )
    truth_geoms = np.empty(len(decoys["geom"]), dtype=object)
    truth_geoms[:] = decoys["geom"]
    placed = placed | {
        "geom": np.concatenate([placed["geom"], truth_geoms]),
        "kind": np.concatenate([placed["kind"], np.array(decoys["kind"], dtype=object)]),
        "cover": np.concatenate([placed["cover"], np.array(decoys["cover"], dtype=object)]),
    }
    return merged, placed


def _partial_approvals(cands: np.ndarray, rng) -> np.ndarray:
    """Approvals covering 30-70 % of each box along its long axis, from one end."""
    b = shapely.bounds(cands).reshape(-1, 4)
    n = len(b)
    frac = rng.uniform(0.3, 0.7, n)
    m = rng.uniform(8, 25, n)
    wide = (b[:, 2] - b[:, 0]) >= (b[:, 3] - b[:, 1])
    low = rng.random(n) < 0.5  # the approval covers the west (south) end
    cx = np.where(low, b[:, 0] + frac * (b[:, 2] - b[:, 0]), b[:, 2] - frac * (b[:, 2] - b[:, 0]))
    cy = np.where(low, b[:, 1] + frac * (b[:, 3] - b[:, 1]), b[:, 3] - frac * (b[:, 3] - b[:, 1]))
    return np.where(
        wide,
        np.where(
            low,
            shapely.box(b[:, 0] - m, b[:, 1] - m, cx, b[:, 3] + m),
            shapely.box(cx, b[:, 1] - m, b[:, 2] + m, b[:, 3] + m),
        ),
        np.where(
            low,
            shapely.box(b[:, 0] - m, b[:, 1] - m, b[:, 2] + m, cy),
            shapely.box(b[:, 0] - m, cy, b[:, 2] + m, b[:, 3] + m),
        ),
    )


def _nonfarm_space(parcels, settle, roads, river) -> shapely.Geometry:
    """Land that is neither farmland nor built: grass/bare parcels and village fringes."""
    waste = parcels["geom"][np.isin(parcels["use"], ["grass", "bare"])]
    ring = shapely.difference(
        shapely.buffer(settle["union"], settle["fringe_m"] - 2.0, join_style="mitre"),
        shapely.buffer(settle["union"], 4.0, join_style="mitre"),
    )
    space = shapely.union_all([*shapely.buffer(waste, -3.0, join_style="mitre"), ring])
    space = shapely.difference(space, shapely.union(roads["corridor"], river["corridor"]))
    shapely.prepare(space)
    return space


def _in_free_space(free, settle, n: int, rng) -> np.ndarray:
    """Candidate boxes inside ``free``; those next to a settlement first."""
    if free.is_empty:
        return np.array([], dtype=object)
    out = []
    for source in ("fringe", "anywhere"):
        if source == "fringe" and settle["union"].is_empty:
            continue
        region = (
            shapely.buffer(settle["union"], 25.0, join_style="mitre")
            if source == "fringe"
            else free
        )
        x0, y0, x1, y1 = region.bounds
        xy = _first_inside(free, rng.uniform([x0, y0], [x1, y1], (n * 20, 2)), n)
        w, h = _rect_sizes(len(xy), (100.0, 1500.0), rng)
        boxes = _boxes_at(xy[:, 0], xy[:, 1], w, h)
        out.append(boxes[shapely.contains(free, boxes)])
    return np.concatenate(out) if out else np.array([], dtype=object)


def _first_inside(area, xy: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` points of ``xy`` inside ``area`` (tested a chunk at a time)."""
    found = []
    count = 0
    for start in range(0, len(xy), 8 * _SELECT_CHUNK):
        part = xy[start : start + 8 * _SELECT_CHUNK]
        part = part[shapely.contains_xy(area, part[:, 0], part[:, 1])]
        found.append(part)
        count += len(part)
        if count >= n:
            break
    return np.concatenate(found)[:n] if found else xy[:0]


# --------------------------------------------------------------------------- objects to paint
class _Painter:
    """Collects objects in painting order with their classes per epoch."""

    def __init__(self) -> None:
        self.geoms: list = [None]
        self.cls: list[tuple[int, int]] = [(C.GRASS, C.GRASS_DRY)]
        self.orient: list[bool] = [False]

    def add(self, geoms, cls1, cls2, orient=None) -> None:
        geoms = np.asarray(geoms, dtype=object)
        n = len(geoms)
        c1 = np.broadcast_to(np.asarray(cls1), (n,))
        c2 = np.broadcast_to(np.asarray(cls2), (n,))
        o = np.zeros(n, bool) if orient is None else np.broadcast_to(np.asarray(orient), (n,))
        self.geoms.extend(geoms)
        self.cls.extend(zip(c1.tolist(), c2.tolist(), strict=True))
        self.orient.extend(o.tolist())


def _scene_objects(frame, roads, river, settle, parcels, states, placed, rng, palette=None):
    """The painting list and the roof shadows of both epochs.

    ``palette`` (a stream, or None for the classic colours) redraws every roof's colour from
    :data:`ROOF_COVERS` after the classic draws, which stay as they are.
    """
    p = _Painter()
    use = parcels["use"]
    geom = parcels["geom"]
    crop = use == "crop"
    state_cls = np.array([_STATE_CLASS[s] for s in _STATES])
    p.add(geom[use == "grass"], C.GRASS, C.GRASS_DRY)
    p.add(geom[use == "bare"], C.BARE_SOIL, C.BARE_SOIL)
    p.add(geom[crop], state_cls[states[0]], state_cls[states[1]], parcels["orient"][crop])
    ponds = shapely.buffer(geom[use == "pond"], -5.0, join_style="mitre")
    p.add(ponds[~shapely.is_empty(ponds)], C.WATER, C.WATER)
    p.add([river["water"]], C.WATER, C.WATER)
    p.add(np.concatenate([roads["trees"], river["trees"]]), C.TREES, C.TREES)
    p.add(settle["geom"], C.VILLAGE_GROUND, C.VILLAGE_GROUND)
    houses = _house_plots(settle, roads["corridor"], rng)
    if palette is not None:
        houses["roof_cls"] = _roof_classes(len(houses["roof_cls"]), palette)[1]
    p.add(houses["trees"], C.TREES, C.TREES)
    roofs = [houses["roofs"]]
    p.add(houses["roofs"], houses["roof_cls"], houses["roof_cls"])
    # existing factories on some non-farm parcels: concrete yard and steel roofs
    yards = shapely.buffer(geom[use == "factory"], -3.0, join_style="mitre")
    yards = yards[~shapely.is_empty(yards)]
    p.add(yards, C.CONCRETE, C.CONCRETE)
    fac_roofs = _roofs_in(yards, rng)
    fac_cls = rng.choice([C.ROOF_BLUE, C.ROOF_CONCRETE], len(fac_roofs), p=[0.7, 0.3])
    if palette is not None:
        fac_cls = _roof_classes(len(fac_roofs), palette)[1]
    p.add(fac_roofs, fac_cls, fac_cls)
    roofs.append(fac_roofs)
    p.add(roads["geom"], roads["cls"], roads["cls"])
    # epoch 2: the new objects
    kind = placed["kind"]
    new = placed["geom"]
    earth = kind == Kind.EARTHWORKS
    p.add(new[earth], -1, C.FILL_SOIL, rng.random(int(earth.sum())) < 0.5)
    build = new[~earth]
    cover = _covers(build, rng)
    compound = cover == "compound"
    if palette is not None:
        cover = np.where(compound, cover, _roof_classes(len(cover), palette, every=True)[0])
    names = np.array(list(_PALETTE), dtype=object)
    roof_cls = np.select(
        [cover == name for name in names], [_PALETTE[name][0] for name in names], C.CONCRETE
    )
    p.add(build, -1, roof_cls)
    inner = _roofs_in(build[compound], rng)
    inner_cls = rng.choice([C.ROOF_BLUE, C.ROOF_CONCRETE], len(inner), p=[0.6, 0.4])
    if palette is not None:
        inner_cls = _roof_classes(len(inner), palette)[1]
    p.add(inner, -1, inner_cls)
    new_roofs = np.concatenate([build[~compound], inner])
    covers = np.empty(len(new), dtype=object)
    covers[earth] = "fill_soil"
    covers[~earth] = cover
    placed["cover"] = covers

    existing = np.concatenate(roofs)
    heights_old = rng.uniform(3.5, 8.0, len(existing))
    heights_new = rng.uniform(3.5, 9.0, len(new_roofs))
    shadows = (
        _shadows(existing, heights_old * 0.45),
        np.concatenate(
            [_shadows(existing, heights_old * 0.6), _shadows(new_roofs, heights_new * 0.6)]
        ),
    )
    n = len(p.geoms)
    cls = np.array(p.cls, dtype=int).T
    period = rng.uniform(3.0, 7.0, (2, n)).astype(np.float32)
    period[1] = np.where(cls[0] == cls[1], period[0], period[1])  # same state, same rows
    period[cls == C.GREENHOUSE] *= 2.0  # tunnels 6-14 m wide
    objects = SceneObjects(
        geoms=np.array(p.geoms, dtype=object),
        cls=cls,
        tone=rng.random(n).astype(np.float32),
        band_jitter=rng.normal(0, 0.025, (n, 4)).astype(np.float32),
        epoch_jitter=np.where(
            np.isin(cls, _CROP_CLASSES),
            rng.normal(0, 0.05, (2, n)),
            rng.normal(0, 0.015, (2, n)),
        ).astype(np.float32),
        orient=np.array(p.orient, dtype=bool),
        period=period,
        phase=rng.uniform(0, 2 * np.pi, (2, n)).astype(np.float32),
    )
    return objects, shadows


def _roof_classes(n: int, rng, *, every: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` roof covers drawn from the full palette: (cover names, renderer classes).

    ``every``: each cover at least once when ``n`` allows (the rest drawn by share), in
    random order.
    """
    names = np.array(list(_PALETTE), dtype=object)
    share = np.array([v[1] for v in _PALETTE.values()])
    pick = rng.choice(len(names), n, p=share / share.sum())
    if every:
        pick = rng.permutation(np.concatenate([np.arange(len(names)), pick])[:n])
    classes = np.array([int(v[0]) for v in _PALETTE.values()], dtype=int)
    return names[pick], classes[pick]


def _seasonal_states(parcels: dict, states: np.ndarray, options, rng) -> np.ndarray:
    """Flooded paddies (half of the paddy parcels) and film on dry land (8 %: mulch film or
    greenhouses), each in one epoch: seasonal change that is not construction."""
    crop = parcels["use"] == "crop"
    paddy = parcels["dlbm"][crop] == "0101"
    n = len(paddy)
    states = states.copy()
    epoch = rng.integers(0, 2, n)
    u = rng.random(n)
    mulch = rng.random(n) < 0.6
    idx = np.arange(n)
    if options.flooded_paddies:
        flood = paddy & (u < 0.5)
        states[epoch[flood], idx[flood]] = _STATES.index(CropState.FLOODED)
    if options.film:
        film = ~paddy & (u < 0.08)
        states[epoch[film], idx[film]] = np.where(
            mulch[film], _STATES.index(CropState.FILM), _STATES.index(CropState.GREENHOUSE)
        )
    return states


def _hazy(radiometry: tuple[Radiometry, Radiometry], rng) -> tuple[Radiometry, Radiometry]:
    """Strong haze in one epoch: extra path radiance (blue > green > red > nir, about
    lambda^-2) and a 3-6 % loss of transmission."""
    e = int(rng.integers(0, 2))
    blue = float(rng.uniform(700.0, 1100.0))
    extra = (blue, 0.72 * blue, 0.5 * blue, 0.18 * blue)
    loss = float(rng.uniform(0.94, 0.97))
    old = radiometry[e]
    hazy = replace(
        old,
        gain=tuple(round(g * loss, 4) for g in old.gain),
        haze=tuple(round(h + x, 1) for h, x in zip(old.haze, extra, strict=True)),
    )
    return (hazy, radiometry[1]) if e == 0 else (radiometry[0], hazy)


def _covers(build: np.ndarray, rng) -> np.ndarray:
    """What each new building looks like: a roof material or a compound (yard + roofs)."""
    n = len(build)
    area = shapely.area(build)
    cover = rng.choice(
        np.array(["blue_roof", "concrete_roof", "red_roof"], dtype=object), n, p=[0.45, 0.35, 0.2]
    )
    compound = (area > 1200) & (rng.random(n) < 0.5)
    return np.where(compound, "compound", cover)


def _roofs_in(yards: np.ndarray, rng) -> np.ndarray:
    """One or two roofs inside each yard, taking 40-60 % of its length each."""
    if len(yards) == 0:
        return np.array([], dtype=object)
    b = shapely.bounds(yards)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    f = rng.uniform(0.4, 0.6, len(b))
    wide = w >= h
    first = np.where(
        wide,
        shapely.box(b[:, 0] + 3, b[:, 1] + 3, b[:, 0] + 3 + f * (w - 6), b[:, 3] - 3),
        shapely.box(b[:, 0] + 3, b[:, 3] - 3 - f * (h - 6), b[:, 2] - 3, b[:, 3] - 3),
    )
    two = rng.random(len(b)) < 0.5
    second = np.where(
        wide,
        shapely.box(b[:, 2] - 3 - 0.3 * (w - 6), b[:, 1] + 3, b[:, 2] - 3, b[:, 3] - 3),
        shapely.box(b[:, 0] + 3, b[:, 1] + 3, b[:, 2] - 3, b[:, 1] + 3 + 0.3 * (h - 6)),
    )
    roofs = np.concatenate([first, second[two]])
    roofs = shapely.intersection(roofs, np.concatenate([yards, yards[two]]))
    return roofs[~shapely.is_empty(roofs) & (shapely.area(roofs) > 8)]


def _shadows(roofs: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Shadow strips north of each roof (sun in the south), ``length`` metres long."""
    if len(roofs) == 0:
        return np.array([], dtype=object)
    b = shapely.bounds(roofs)
    return shapely.box(b[:, 0], b[:, 3], b[:, 2], b[:, 3] + length)


def _radiometry(rng: np.random.Generator) -> tuple[Radiometry, Radiometry]:
    """Epoch 1 is almost ideal; epoch 2 has larger gain/offset changes, haze and a shift."""
    angle = rng.uniform(0, 2 * np.pi)
    mag = rng.uniform(0.3, 0.6)
    return (
        Radiometry(
            gain=tuple(np.round(rng.uniform(0.97, 1.03, 4), 4).tolist()),
            offset=tuple(np.round(rng.uniform(-30, 30, 4), 1).tolist()),
            haze=(60.0, 45.0, 30.0, 10.0),
            noise_sd=30.0,
            shift_px=(0.0, 0.0),
        ),
        Radiometry(
            gain=tuple(np.round(rng.uniform(0.9, 1.15, 4), 4).tolist()),
            offset=tuple(np.round(rng.uniform(-150, 150, 4), 1).tolist()),
            haze=(260.0, 190.0, 120.0, 50.0),
            noise_sd=55.0,
            shift_px=(round(float(mag * np.sin(angle)), 3), round(float(mag * np.cos(angle)), 3)),
        ),
    )


# --------------------------------------------------------------------------- vector layers
def _farmland_layer(parcels: dict, crs) -> gpd.GeoDataFrame:
    crop = parcels["use"] == "crop"
    n = int(crop.sum())
    return gpd.GeoDataFrame(
        {
            T.PARCEL_ID: pd.array([f"F{i + 1:05d}" for i in range(n)], dtype="str"),
            T.DLBM: pd.array(parcels["dlbm"][crop].tolist(), dtype="str"),
            T.BASIC: parcels["basic"][crop],
        },
        geometry=parcels["geom"][crop],
        crs=crs,
    )


def _approvals_layer(geoms: np.ndarray, crs, rng) -> gpd.GeoDataFrame:
    n = len(geoms)
    start = dt.date(2015, 3, 1)
    days = np.sort(rng.integers(0, (dt.date(2017, 6, 30) - start).days, n))
    dates = [start + dt.timedelta(days=int(d)) for d in days]
    order = rng.permutation(n)  # approval dates do not follow placement order
    kinds = rng.choice(np.array(["农转用", "供地"], dtype=object), n, p=[0.7, 0.3])
    # document serials 1..399 (more in very large scenes, which have more approvals)
    serial = np.sort(rng.choice(np.arange(1, max(400, n + 1)), n, replace=False))
    prefix = {"农转用": "冀政转征", "供地": "冀示国土供"}
    docs = [f"{prefix[k]}〔{d.year}〕第{s:04d}号" for k, d, s in zip(kinds, dates, serial)]
    return gpd.GeoDataFrame(
        {
            T.DOC_NO: pd.array(docs, dtype="str"),
            T.APPROVED_ON: dates,
            T.APPROVAL_KIND: pd.array(kinds.tolist(), dtype="str"),
        },
        geometry=np.asarray(geoms, dtype=object)[order] if n else [],
        crs=crs,
    )


def _truth_layer(placed: dict, grid: Grid, farmland, approvals, crs) -> gpd.GeoDataFrame:
    geoms = placed["geom"]
    v_code, t_code, share = assign_majority(geoms, grid.village)
    n = len(geoms)
    return gpd.GeoDataFrame(
        {
            T.TRUTH_ID: pd.array([f"T{i + 1:04d}" for i in range(n)], dtype="str"),
            T.KIND: pd.array(placed["kind"].tolist(), dtype="str"),
            T.COVER: pd.array(placed["cover"].tolist(), dtype="str"),
            T.OFF_FARMLAND: placed["kind"] == str(Kind.NONFARM),
            T.AREA_M2: np.round(shapely.area(geoms), 2),
            T.FARMLAND_M2: np.round(_overlap_area(geoms, farmland.geometry.values), 2),
            T.APPROVED_M2: np.round(_overlap_area(geoms, approvals.geometry.values), 2),
            T.VILLAGE_CODE: pd.array(v_code.tolist(), dtype="str"),
            T.VILLAGE_SHARE: share,
            T.TOWNSHIP_CODE: pd.array(t_code.tolist(), dtype="str"),
            T.EPOCH_FROM: pd.array([EPOCHS[0]] * n, dtype="str"),
            T.EPOCH_TO: pd.array([EPOCHS[1]] * n, dtype="str"),
        },
        geometry=geoms,
        crs=crs,
    )


def _minus(geoms: np.ndarray, others: np.ndarray) -> np.ndarray:
    """``difference(geoms, union_all(others))``, computed against the union only for the
    geometries that meet one of ``others`` (the rest against a far point: GEOS returns the
    same normalised polygon either way)."""
    if len(geoms) == 0:
        return geoms
    x1, y1 = shapely.total_bounds(geoms)[2:]
    out = shapely.difference(geoms, shapely.Point(x1 + 1e6, y1 + 1e6))
    if len(others):
        hit = np.unique(shapely.STRtree(others).query(geoms, predicate="intersects")[0])
        out[hit] = shapely.difference(geoms[hit], shapely.union_all(others))
    return out


def _overlap_area(geoms: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Area of each geometry inside the union of ``others`` (disjoint polygons, as parcels
    and approvals are): summed over the few it meets, never against the whole union."""
    if len(geoms) == 0 or len(others) == 0:
        return np.zeros(len(geoms))
    i, j = shapely.STRtree(others).query(geoms, predicate="intersects")
    pieces = shapely.area(shapely.intersection(geoms[i], others[j]))
    return np.bincount(i, pieces, minlength=len(geoms))


def _seasonal_layer(parcels: dict, states: np.ndarray, truth, crs) -> gpd.GeoDataFrame:
    """Crop parcels whose state changed (not construction), minus the truth objects."""
    crop = parcels["use"] == "crop"
    changed = states[0] != states[1]
    ids = np.array([f"F{i + 1:05d}" for i in range(int(crop.sum()))], dtype=object)
    geoms = _minus(parcels["geom"][crop][changed], truth.geometry.values)
    names = np.array([str(s) for s in _STATES], dtype=object)
    return gpd.GeoDataFrame(
        {
            T.PARCEL_ID: pd.array(ids[changed].tolist(), dtype="str"),
            T.STATE_FROM: pd.array(names[states[0][changed]].tolist(), dtype="str"),
            T.STATE_TO: pd.array(names[states[1][changed]].tolist(), dtype="str"),
            T.AREA_M2: np.round(shapely.area(geoms), 2),
        },
        geometry=geoms,
        crs=crs,
    )


# --------------------------------------------------------------------------- render helpers
def _mask(geoms: np.ndarray, frame: Frame) -> np.ndarray:
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        return np.zeros((frame.height, frame.width), dtype=bool)
    return features.rasterize(
        ((g, 1) for g in geoms),
        out_shape=(frame.height, frame.width),
        transform=frame.transform,
        fill=0,
        dtype="uint8",
    ).astype(bool)


def _object_tables(obj: SceneObjects, epoch: int):
    """Per-object spectrum (N, 4), stripe amplitude (N, 4), texture and low-frequency
    amplitude (N,) of one epoch, all float32."""
    cls = obj.cls[epoch].clip(0)
    lo = np.array([_SPECTRA[C(c)][0] for c in range(len(C))], dtype=np.float32)
    hi = np.array([_SPECTRA[C(c)][1] for c in range(len(C))], dtype=np.float32)
    spec = lo[cls] + obj.tone[:, None] * (hi[cls] - lo[cls])
    spec *= (1 + obj.band_jitter) * (1 + obj.epoch_jitter[epoch])[:, None]
    stripe = np.array([_STRIPE.get(C(c), (0.0,) * 4) for c in range(len(C))], np.float32)
    tex = np.array([_TEXTURE.get(C(c), 0.03) for c in range(len(C))], np.float32)
    lowf = np.array([_LOWFREQ.get(C(c), 0.02) for c in range(len(C))], np.float32)
    return spec.astype(np.float32), stripe[cls], tex[cls], lowf[cls]


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    """Spatially correlated noise (sigma 1 px), unit standard deviation, same every epoch."""
    rng = np.random.default_rng([seed, 22])
    tex = ndimage.gaussian_filter(rng.standard_normal((h, w), dtype=np.float32), 1.0)
    tex /= np.float32(tex.std())
    return tex


def wave_parameters(
    rng: np.random.Generator, wavelengths_m: tuple[float, float], res: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The six plane waves of a smooth field: amplitudes (RMS sum 1), wavelengths in pixels,
    directions and phases, drawn from ``rng`` in this order."""
    k = 6
    lam = rng.uniform(*wavelengths_m, k) / res
    theta = rng.uniform(0, np.pi, k)
    phase = rng.uniform(0, 2 * np.pi, k)
    amp = rng.uniform(0.5, 1.0, k)
    amp /= np.sqrt((amp**2).sum() / 2)
    return amp, lam, theta, phase


def _smooth_field(rng: np.random.Generator, wavelengths_m: tuple[float, float], res: float):
    """A smooth random field of about unit amplitude: a sum of six plane waves.

    Returns a function ``f(r0, r1, width)`` giving rows ``r0:r1`` of the field, so it can be
    evaluated block by block without storing it.
    """
    amp, lam, theta, phase = wave_parameters(rng, wavelengths_m, res)

    def field(r0: int, r1: int, width: int) -> np.ndarray:
        rows = np.arange(r0, r1, dtype=np.float32)[:, None]
        cols = np.arange(width, dtype=np.float32)[None, :]
        out = np.zeros((r1 - r0, width), dtype=np.float32)
        for a, lm, th, ph in zip(amp, lam, theta, phase):
            arg = (2 * np.pi / lm) * (rows * np.cos(th) + cols * np.sin(th)) + ph
            out += np.float32(a) * np.sin(arg.astype(np.float32))
        return np.clip(out, -1.5, 1.5) / np.float32(1.5)

    return field
