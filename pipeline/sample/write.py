"""Writing the synthetic sample to disk (the only module of :mod:`pipeline.sample` with I/O).

:func:`generate_sample` draws the layout (:func:`pipeline.sample.scene.make_layout`), renders
both epochs and writes the GeoTIFF tiles, the GeoPackages, a README and finally the
``.complete`` marker. Every file is written to a temporary sibling and renamed into place,
so an interrupted run never leaves a file that looks finished, and the marker only exists
once everything else does.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import fiona
import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import shapely
from affine import Affine
from rasterio.windows import Window

from pipeline.atomic import atomic_path
from pipeline.sample.blocks import BlockRenderer
from pipeline.sample.scene import (
    BAND_NAMES,
    CONSTRUCTION_KINDS,
    CRS,
    DECOY_KINDS,
    DEFAULT_OPTIONS,
    EPOCHS,
    RES_M,
    ROOF_COVERS,
    TILE_LAYOUTS,
    Layout,
    SceneOptions,
    make_layout,
    render_epoch,
    tile_windows,
)
from pipeline.schema import (
    APPROVALS_LAYER,
    FARMLAND_LAYER,
    SEASONAL_LAYER,
    TRUTH_LAYER,
    Level,
    T,
)

log = logging.getLogger(__name__)

# File names of the sample (its layer and column names are in pipeline.schema)
IMAGERY_DIR = "imagery"
APPROVALS_FILE = "approvals.gpkg"
FARMLAND_FILE = "farmland.gpkg"
TRUTH_FILE = "truth.gpkg"
GRIDS_FILE = "grids.gpkg"
README_FILE = "README.txt"
COMPLETE_MARKER = ".complete"
SYNTHETIC_LABEL = "landwatch synthetic sample - not real imagery"
GTIFF_PROFILE = {
    "driver": "GTiff",
    "dtype": "uint16",
    "count": 4,
    "nodata": 0,
    "tiled": True,
    "blockxsize": 256,
    "blockysize": 256,
    "compress": "deflate",
    "zlevel": 6,
    "predictor": 2,
    "interleave": "pixel",
}
"""Fixed creation options: the same array always gives the same bytes."""
OTHER_CRS_BLOCK = 512
"""Internal tile size of an epoch written in another CRS (deliveries differ in tiling too)."""
_GDAL_CACHE_MB = 256
"""GDAL's block cache while writing in row blocks (partly written tiles wait there)."""
_FIXED_DATE = "2017-12-31T00:00:00Z"
"""Written as ``gpkg_contents.last_change`` instead of the clock (byte-stable GeoPackages)."""


@dataclass(frozen=True)
class SampleInfo:
    """What :func:`generate_sample` wrote: paths and counts."""

    out_dir: Path
    imagery: dict[str, tuple[Path, ...]]
    approvals: Path
    farmland: Path
    truth: Path
    grids: Path
    readme: Path
    complete: Path
    size_px: int
    seed: int
    truth_by_kind: dict[str, int] = field(default_factory=dict)
    n_townships: int = 0
    n_villages: int = 0
    n_approvals: int = 0
    n_farmland: int = 0
    n_seasonal: int = 0
    n_off_farmland: int = 0
    options: SceneOptions = DEFAULT_OPTIONS
    band_names: tuple[str, ...] = BAND_NAMES
    """The bands of every image file, in file order."""
    crs: str = CRS
    """The scene's (target grid's) CRS; the first epoch is written on that grid."""
    res_m: float = RES_M
    epoch_crs: dict[str, str] = field(default_factory=dict)
    """CRS of each epoch's files (the later one may differ: ``SceneOptions.later_crs``)."""

    @property
    def bands(self) -> dict[str, int]:
        """Band number per name, as ``imagery.bands`` of a config wants it."""
        return {name: i for i, name in enumerate(self.band_names, start=1)}

    def __str__(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in self.truth_by_kind.items())
        tiles = ", ".join(
            f"{label}: {len(p)} tiles ({self.epoch_crs.get(label, self.crs)})"
            for label, p in self.imagery.items()
        )
        return (
            f"{self.size_px} x {self.size_px} px (seed {self.seed}); "
            f"{len(self.band_names)} bands ({', '.join(self.band_names)}); imagery {tiles}; "
            f"{self.n_townships} townships, {self.n_villages} villages (grid: {self.grids}); "
            f"truth {sum(self.truth_by_kind.values())} objects ({kinds}); "
            f"{self.n_seasonal} seasonal parcels; {self.n_approvals} approvals; "
            f"{self.n_farmland} farmland parcels"
        )


def generate_sample(
    out_dir: Path,
    *,
    size_px: int = 4000,
    seed: int = 2017,
    grids_path: Path | None = None,
    options: SceneOptions = DEFAULT_OPTIONS,
) -> SampleInfo:
    """Write the deterministic synthetic sample area into ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Folder to write (created if missing). Existing sample files in it are replaced.
    size_px : int
        Scene width and height in 2 m pixels (4000 = 8 km x 8 km; 300..20000).
    seed : int
        The same ``(size_px, seed, options)`` gives byte-identical rasters and identical
        vectors.
    grids_path : Path, optional
        Where to write the grid GeoPackage; default ``out_dir / "grids.gpkg"``.
    options : SceneOptions
        What makes the scene harder (:meth:`SceneOptions.hard` turns everything on); the
        default writes the default sample.

    Returns
    -------
    SampleInfo

    Notes
    -----
    Files: ``imagery/{2016,2017}/sample_{epoch}_r{i}c{j}.tif`` (4-band uint16 reflectance x
    10000, or 3 bands with ``options.bands="rgb"``; nodata 0, EPSG:4548, 2 m, 256 px tiles,
    DEFLATE; 2 x 2 tiles in 2016, 3 x 3 in 2017, overlapping by a few pixels; with
    ``options.later_crs`` the 2017 files are on their own grid in that CRS, 512 px tiles),
    ``approvals.gpkg``, ``farmland.gpkg``, ``truth.gpkg`` (layers ``changes`` and
    ``seasonal``), the grid, ``README.txt`` and, last, ``.complete``. The caller decides
    whether an existing sample may be replaced (the CLI asks for ``--overwrite``); this
    function removes ``.complete`` first so a crash midway never leaves a sample that looks
    finished. Scenes are rendered and written in row blocks of ``options.block_rows`` (flat
    memory) when :meth:`SceneOptions.streamed` says so.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    grids_path = Path(grids_path) if grids_path is not None else out_dir / GRIDS_FILE
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / COMPLETE_MARKER).unlink(missing_ok=True)

    layout = make_layout(size_px, seed, options)
    log.info("sample layout drawn in %.1f s", time.perf_counter() - start)
    imagery = {}
    for e, label in enumerate(EPOCHS):
        folder = out_dir / IMAGERY_DIR / label
        if options.streamed(size_px):
            imagery[label] = tuple(write_tiles_in_blocks(layout, e, folder))
        else:
            image = render_epoch(layout, e)
            imagery[label] = tuple(write_tiles(image, layout, e, folder))
            del image
        log.info("epoch %s written (%.1f s)", label, time.perf_counter() - start)

    with _fixed_gpkg_date():
        approvals = _write_approvals(layout.approvals, out_dir / APPROVALS_FILE)
        farmland = write_layers({FARMLAND_LAYER: layout.farmland}, out_dir / FARMLAND_FILE)
        truth = write_layers(
            {TRUTH_LAYER: layout.truth, SEASONAL_LAYER: layout.seasonal}, out_dir / TRUTH_FILE
        )
        grid = layout.grid
        grids = write_layers(
            {
                Level.DISTRICT: grid.district,
                Level.TOWNSHIP: grid.township,
                Level.VILLAGE: grid.village,
            },
            grids_path,
        )
    kinds = CONSTRUCTION_KINDS + (DECOY_KINDS if options.decoys else ())
    counts = {str(k): int((layout.truth[T.KIND] == k).sum()) for k in kinds}
    info = SampleInfo(
        out_dir=out_dir,
        imagery=imagery,
        approvals=approvals,
        farmland=farmland,
        truth=truth,
        grids=grids,
        readme=out_dir / README_FILE,
        complete=out_dir / COMPLETE_MARKER,
        size_px=size_px,
        seed=seed,
        truth_by_kind=counts,
        n_townships=len(grid.township),
        n_villages=len(grid.village),
        n_approvals=len(layout.approvals),
        n_farmland=len(layout.farmland),
        n_seasonal=len(layout.seasonal),
        n_off_farmland=int(layout.truth[T.OFF_FARMLAND].sum()),
        options=options,
        band_names=options.band_names,
        epoch_crs={label: layout.epoch_frame(e).crs for e, label in enumerate(EPOCHS)},
    )
    _write_text(info.readme, readme_text(layout, info))
    marker = {"size_px": size_px, "seed": seed, "truth_by_kind": counts}
    if options != DEFAULT_OPTIONS:
        marker["options"] = options_record(options)
    _write_text(info.complete, json.dumps(marker, sort_keys=True) + "\n")
    log.info("synthetic sample complete in %.1f s: %s", time.perf_counter() - start, info)
    return info


def write_tiles(image: np.ndarray, layout: Layout, epoch: int, folder: Path) -> list[Path]:
    """Write one whole epoch as overlapping GeoTIFF tiles; returns the paths, sorted.

    Notes
    -----
    Old tiles of this generator (``sample_{epoch}_*.tif``) in ``folder`` are removed first so
    a different tile layout cannot leave stale tiles behind; other files are left alone.
    Only the bands of ``layout.options.bands`` are written.
    """
    n_bands = len(layout.options.band_names)
    paths = []
    for path, profile, (r0, c0, h, w) in _tile_specs(layout, epoch, folder):
        with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            dst.write(image[:n_bands, r0 : r0 + h, c0 : c0 + w])
            _describe(dst, layout, epoch)
        paths.append(path)
    return sorted(paths)


def write_tiles_in_blocks(
    layout: Layout,
    epoch: int,
    folder: Path,
    *,
    block_rows: int | None = None,
) -> list[Path]:
    """Render and write one epoch in row blocks (flat memory); returns the tile paths, sorted.

    Parameters
    ----------
    layout : Layout
    epoch : int
    folder : Path
    block_rows : int, optional
        Rows rendered and written at a time; default ``layout.options.block_rows``.

    Notes
    -----
    Every tile of the epoch is open while the blocks pass from top to bottom; each block is
    rendered once (:class:`~pipeline.sample.blocks.BlockRenderer`) and its rows written into
    the tiles it crosses. Memory: a few copies of one block plus GDAL's block cache.
    """
    rows = block_rows or layout.options.block_rows
    renderer = BlockRenderer(layout, epoch)
    specs = _tile_specs(layout, epoch, folder)
    height = layout.epoch_frame(epoch).height
    with ExitStack() as stack, rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_MB):
        tiles = []
        for path, profile, window in specs:
            tmp = stack.enter_context(atomic_path(path))
            dst = stack.enter_context(rasterio.open(tmp, "w", **profile))
            _describe(dst, layout, epoch)
            tiles.append((_BlockRowWriter(dst, profile["blockysize"]), window))
        for o0 in range(0, height, rows):
            o1 = min(height, o0 + rows)
            block = renderer.rows(o0, o1)
            for writer, (r0, c0, h, w) in tiles:
                a, b = max(o0, r0), min(o1, r0 + h)
                if a < b:
                    writer.add(block[:, a - o0 : b - o0, c0 : c0 + w])
            del block
    return sorted(path for path, _, _ in specs)


class _BlockRowWriter:
    """Writes a tile's rows, arriving top to bottom, in whole rows of its internal blocks.

    A compressed GeoTIFF block written in two parts is compressed and stored twice (the
    first copy stays in the file as dead space); this keeps the rows short of a full block
    row until the next rows complete it.
    """

    def __init__(self, dst, block_height: int) -> None:
        self.dst = dst
        self.block_height = block_height
        self.next_row = 0
        self.carry: np.ndarray | None = None

    def add(self, rows: np.ndarray) -> None:
        """Append ``rows`` (bands, n, width) below those added before."""
        data = rows if self.carry is None else np.concatenate([self.carry, rows], axis=1)
        end = self.next_row + data.shape[1]
        if end >= self.dst.height:
            n_write = data.shape[1]
        else:
            n_write = end // self.block_height * self.block_height - self.next_row
        if n_write > 0:
            window = Window(0, self.next_row, data.shape[2], n_write)
            self.dst.write(data[:, :n_write], window=window)
            self.next_row += n_write
        self.carry = data[:, n_write:].copy() if n_write < data.shape[1] else None


def _tile_specs(layout: Layout, epoch: int, folder: Path) -> list[tuple[Path, dict, tuple]]:
    """Path, creation profile and window ``(row, col, height, width)`` of each tile of an
    epoch; removes the generator's old tiles of that epoch from ``folder`` first."""
    label = EPOCHS[epoch]
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"sample_{label}_r*c*.tif"):
        old.unlink()
    frame = layout.epoch_frame(epoch)
    n_rows, n_cols, overlap = TILE_LAYOUTS[epoch]
    base = {**GTIFF_PROFILE, "count": len(layout.options.band_names), "crs": frame.crs}
    if frame.crs != CRS:
        base.update(blockxsize=OTHER_CRS_BLOCK, blockysize=OTHER_CRS_BLOCK)
    specs = []
    for i, j, (r0, c0, h, w) in tile_windows(frame.height, frame.width, n_rows, n_cols, overlap):
        profile = {
            **base,
            "width": w,
            "height": h,
            "transform": frame.transform @ Affine.translation(c0, r0),
        }
        specs.append((folder / f"sample_{label}_r{i}c{j}.tif", profile, (r0, c0, h, w)))
    return specs


def _describe(dst, layout: Layout, epoch: int) -> None:
    """The tags and band descriptions of a tile of ``epoch``."""
    label = EPOCHS[epoch]
    rad = layout.radiometry[epoch]
    tags = {
        "TIFFTAG_IMAGEDESCRIPTION": f"{SYNTHETIC_LABEL} (epoch {label})",
        "TIFFTAG_SOFTWARE": "landwatch sample generator",
        "LANDWATCH_SYNTHETIC": "yes",
        "LANDWATCH_EPOCH": label,
        "LANDWATCH_SEED": str(layout.seed),
        "LANDWATCH_SIZE_PX": str(layout.frame.width),
        "SCALE": "reflectance x 10000",
        "MISREGISTRATION_PX": f"{rad.shift_px[0]} {rad.shift_px[1]}",
    }
    if layout.options != DEFAULT_OPTIONS:
        tags["LANDWATCH_OPTIONS"] = json.dumps(options_record(layout.options), sort_keys=True)
    dst.update_tags(**tags)
    for b, name in enumerate(layout.options.band_names, start=1):
        dst.set_band_description(b, name)


def options_record(options: SceneOptions) -> dict:
    """The options as written into the files (``.complete``, the GeoTIFF tags): every field,
    but ``decoys`` only when there are some (samples made before it existed keep their
    bytes)."""
    record = asdict(options)
    if not options.decoys:
        del record["decoys"]
    return record


def write_layers(layers: dict[str, gpd.GeoDataFrame], path: Path) -> Path:
    """Write GeoDataFrames as the layers of one GeoPackage (replacing the file atomically).

    Notes
    -----
    Polygons are promoted to MultiPolygon so each layer has one geometry type; text columns
    stay TEXT (codes keep their leading zeros).
    """
    with atomic_path(path) as tmp:
        for name, gdf in layers.items():
            pyogrio.write_dataframe(gdf, tmp, layer=name, driver="GPKG", promote_to_multi=True)
    return path


def readme_text(layout: Layout, info: SampleInfo) -> str:
    """The README of a generated sample (deterministic: no dates, no absolute paths)."""
    f = layout.frame
    r1, r2 = layout.radiometry

    def nums(values) -> str:
        return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"

    gx0, gy0, gx1, gy1 = layout.grid.gap.bounds if layout.grid.gap is not None else (0, 0, 0, 0)
    kinds = "\n".join(f"    {k:<11} {v}" for k, v in info.truth_by_kind.items())
    band_list = "band " + ", ".join(f"{i} {b}" for i, b in enumerate(info.band_names, start=1))
    return f"""LANDWATCH SYNTHETIC SAMPLE AREA - NOT REAL IMAGERY, NOT A REAL PLACE
=====================================================================

Generated by `landwatch sample` (pipeline.sample) with size_px={f.width}, seed={layout.seed}.
Everything here is invented: imagery, parcels, approvals, villages, names and persons.
The same size_px and seed always give the same files.

Grid: {CRS} (CGCS2000 / 3-degree Gauss-Kruger CM 117E), {f.res} m pixels,
{f.width} x {f.height} px, upper-left corner x={f.x0} y={f.y0} (near 115.65 E, 39.05 N).

imagery/2016/*.tif, imagery/2017/*.tif
    {len(info.band_names)}-band uint16, {band_list}; reflectance x 10000; nodata 0.
    Tiled 256 x 256, DEFLATE. 2016: 2 x 2 tiles, 2017: 3 x 3 tiles, overlapping by a few
    pixels (identical values in the overlaps). The bottom-right corner of 2016 is nodata
    (outside the swath). Epoch differences that are NOT land change:
    per-band gain {nums(r1.gain)} -> {nums(r2.gain)},
    offset {nums(r1.offset)} -> {nums(r2.offset)},
    haze (stronger in 2017, mostly blue), noise sd {r1.noise_sd:g} -> {r2.noise_sd:g},
    and 2017 is shifted by {nums(r2.shift_px)} px (rows, cols). Crop parcels change state
    (green crop, stubble, ploughed) between the dates.

approvals.gpkg (layer approvals): doc_no, approved_on (date), kind (农转用/供地).
    Some approvals have no construction yet.
farmland.gpkg (layer farmland): crop parcels; basic (1 = permanent basic farmland),
    dlbm ("0101" paddy, "0103" dry land), parcel_id.
truth.gpkg
    layer changes: every new object of 2017 with truth_id, kind, cover, off_farmland (true
    for kind nonfarm), area_m2 (planar), farmland_m2, approved_m2, village_code (majority
    village or "unassigned"), village_share, township_code, epoch_from, epoch_to. Counts by
    kind:
{kinds}
    illegal: on farmland outside every approval; legal: inside an approval; partial: partly
    inside; nonfarm: on land that is not farmland; earthworks: fill soil on farmland.
    Some objects are below the 200 m2 minimum mapping unit, some straddle village
    boundaries or tile edges, one lies in the deliberate grid gap.
    layer seasonal: crop parcels whose state changed (not construction): state_from,
    state_to - for false-alarm analysis.
{Path(info.grids).name} (layers district, township, village): code (12-digit text),
    name, person; villages also township_code. {info.n_townships} townships,
    {info.n_villages} villages. Villages tile the district exactly except one deliberate
    hole of {gx1 - gx0:.0f} x {gy1 - gy0:.0f} m inside the district (no village, no
    township) that holds an illegal new building.
{_options_text(layout, info)}"""


def _options_text(layout: Layout, info: SampleInfo) -> str:
    """The README paragraph on the options that made the scene harder ("" by default)."""
    o = layout.options
    if o == DEFAULT_OPTIONS:
        return ""
    lines = [
        "",
        "Options (harder than the default sample):",
        f"    bands: {', '.join(info.band_names)} (band 1 first)",
    ]
    if o.roofs == "all":
        lines.append("    roofs of every colour: " + ", ".join(ROOF_COVERS) + " (truth: cover)")
    if o.off_farmland:
        lines.append(
            f"    {info.n_off_farmland} new buildings off farmland (truth: off_farmland), "
            "many at village edges: new construction without approval"
        )
    hazy = [EPOCHS[e] for e in (0, 1) if layout.radiometry[e].haze[0] > 500]
    if o.haze:
        lines.append(f"    strong haze in {', '.join(hazy)} (additive, strongest in blue)")
    if o.decoys:
        counts = info.truth_by_kind
        lines.append(
            f"    {counts.get('temporary', 0) + counts.get('spoil', 0)} decoys in "
            f"{EPOCHS[1]} on farmland (truth: kind temporary - film tunnels / temporary farm "
            "sheds, cover white_film or blue_film; kind spoil - spoil heaps, cover "
            "bare_soil): new and bright like construction, but a field team finds no "
            "construction (a false change)"
        )
    if o.flooded_paddies or o.film:
        lines.append(
            "    seasonal layer also holds flooded paddies (flooded), plastic mulch (film) "
            "and greenhouse film (greenhouse): not construction"
        )
    if layout.later_frame is not None:
        f = layout.later_frame
        lines.append(
            f"    imagery/{EPOCHS[1]} is in {f.crs} on its own grid: upper-left x={f.x0} "
            f"y={f.y0}, {f.width} x {f.height} px of {f.res} m, {OTHER_CRS_BLOCK} px tiles"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- helpers
def _write_approvals(approvals: gpd.GeoDataFrame, path: Path) -> Path:
    """Approvals through fiona, the engine that writes a real Date field for approved_on."""
    schema = {
        "geometry": "MultiPolygon",
        "properties": {T.DOC_NO: "str", T.APPROVED_ON: "date", T.APPROVAL_KIND: "str"},
    }
    geoms = shapely.get_parts(approvals.geometry.values)  # one polygon per approval
    with (
        atomic_path(path) as tmp,
        fiona.Env(OGR_CURRENT_DATE=_FIXED_DATE),
        fiona.open(tmp, "w", driver="GPKG", layer=APPROVALS_LAYER, crs=CRS, schema=schema) as dst,
    ):
        for row, geom in zip(approvals.itertuples(index=False), geoms, strict=True):
            dst.write(
                {
                    "geometry": shapely.geometry.mapping(shapely.MultiPolygon([geom])),
                    "properties": {
                        T.DOC_NO: getattr(row, T.DOC_NO),
                        T.APPROVED_ON: getattr(row, T.APPROVED_ON).isoformat(),
                        T.APPROVAL_KIND: getattr(row, T.APPROVAL_KIND),
                    },
                }
            )
    return path


@contextmanager
def _fixed_gpkg_date() -> Iterator[None]:
    """Make pyogrio's GDAL write a fixed ``last_change`` date, then restore the option."""
    old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _FIXED_DATE})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})


def _write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (:func:`pipeline.atomic.atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
