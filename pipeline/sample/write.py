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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import fiona
import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import shapely
from affine import Affine

from pipeline.atomic import atomic_path
from pipeline.sample.scene import (
    BAND_NAMES,
    CRS,
    EPOCHS,
    TILE_LAYOUTS,
    Kind,
    Layout,
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

    def __str__(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in self.truth_by_kind.items())
        tiles = ", ".join(f"{label}: {len(p)} tiles" for label, p in self.imagery.items())
        return (
            f"{self.size_px} x {self.size_px} px (seed {self.seed}); imagery {tiles}; "
            f"{self.n_townships} townships, {self.n_villages} villages (grid: {self.grids}); "
            f"truth {sum(self.truth_by_kind.values())} objects ({kinds}); "
            f"{self.n_seasonal} seasonal parcels; {self.n_approvals} approvals; "
            f"{self.n_farmland} farmland parcels"
        )


def generate_sample(
    out_dir: Path, *, size_px: int = 4000, seed: int = 2017, grids_path: Path | None = None
) -> SampleInfo:
    """Write the deterministic synthetic sample area into ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Folder to write (created if missing). Existing sample files in it are replaced.
    size_px : int
        Scene width and height in 2 m pixels (4000 = 8 km x 8 km; >= 300).
    seed : int
        The same ``(size_px, seed)`` gives byte-identical rasters and identical vectors.
    grids_path : Path, optional
        Where to write the grid GeoPackage; default ``out_dir / "grids.gpkg"``.

    Returns
    -------
    SampleInfo

    Notes
    -----
    Files: ``imagery/{2016,2017}/sample_{epoch}_r{i}c{j}.tif`` (4-band uint16 reflectance x
    10000, nodata 0, EPSG:4548, 2 m, 256 px tiles, DEFLATE; 2 x 2 tiles in 2016, 3 x 3 in
    2017, overlapping by a few pixels), ``approvals.gpkg``, ``farmland.gpkg``,
    ``truth.gpkg`` (layers ``changes`` and ``seasonal``), the grid, ``README.txt`` and,
    last, ``.complete``. The caller decides whether an existing sample may be replaced
    (the CLI asks for ``--overwrite``); this function removes ``.complete`` first so a
    crash midway never leaves a sample that looks finished.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    grids_path = Path(grids_path) if grids_path is not None else out_dir / GRIDS_FILE
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / COMPLETE_MARKER).unlink(missing_ok=True)

    layout = make_layout(size_px, seed)
    log.info("sample layout drawn in %.1f s", time.perf_counter() - start)
    imagery = {}
    for e, label in enumerate(EPOCHS):
        image = render_epoch(layout, e)
        imagery[label] = tuple(write_tiles(image, layout, e, out_dir / IMAGERY_DIR / label))
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
    counts = {str(k): int((layout.truth[T.KIND] == k).sum()) for k in Kind}
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
    )
    _write_text(info.readme, readme_text(layout, info))
    marker = {"size_px": size_px, "seed": seed, "truth_by_kind": counts}
    _write_text(info.complete, json.dumps(marker, sort_keys=True) + "\n")
    log.info("synthetic sample complete in %.1f s: %s", time.perf_counter() - start, info)
    return info


def write_tiles(image: np.ndarray, layout: Layout, epoch: int, folder: Path) -> list[Path]:
    """Write one epoch as overlapping GeoTIFF tiles; returns the paths, sorted.

    Notes
    -----
    Old tiles of this generator (``sample_{epoch}_*.tif``) in ``folder`` are removed first so
    a different tile layout cannot leave stale tiles behind; other files are left alone.
    """
    label = EPOCHS[epoch]
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"sample_{label}_r*c*.tif"):
        old.unlink()
    frame = layout.frame
    n_rows, n_cols, overlap = TILE_LAYOUTS[epoch]
    rad = layout.radiometry[epoch]
    tags = {
        "TIFFTAG_IMAGEDESCRIPTION": f"{SYNTHETIC_LABEL} (epoch {label})",
        "TIFFTAG_SOFTWARE": "landwatch sample generator",
        "LANDWATCH_SYNTHETIC": "yes",
        "LANDWATCH_EPOCH": label,
        "LANDWATCH_SEED": str(layout.seed),
        "LANDWATCH_SIZE_PX": str(frame.width),
        "SCALE": "reflectance x 10000",
        "MISREGISTRATION_PX": f"{rad.shift_px[0]} {rad.shift_px[1]}",
    }
    paths = []
    for i, j, (r0, c0, h, w) in tile_windows(frame.height, frame.width, n_rows, n_cols, overlap):
        path = folder / f"sample_{label}_r{i}c{j}.tif"
        profile = {
            **GTIFF_PROFILE,
            "width": w,
            "height": h,
            "crs": CRS,
            "transform": frame.transform @ Affine.translation(c0, r0),
        }
        with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            dst.write(image[:, r0 : r0 + h, c0 : c0 + w])
            dst.update_tags(**tags)
            for b, name in enumerate(BAND_NAMES, start=1):
                dst.set_band_description(b, name)
        paths.append(path)
    return sorted(paths)


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
    return f"""LANDWATCH SYNTHETIC SAMPLE AREA - NOT REAL IMAGERY, NOT A REAL PLACE
=====================================================================

Generated by `landwatch sample` (pipeline.sample) with size_px={f.width}, seed={layout.seed}.
Everything here is invented: imagery, parcels, approvals, villages, names and persons.
The same size_px and seed always give the same files.

Grid: {CRS} (CGCS2000 / 3-degree Gauss-Kruger CM 117E), {f.res} m pixels,
{f.width} x {f.height} px, upper-left corner x={f.x0} y={f.y0} (near 115.65 E, 39.05 N).

imagery/2016/*.tif, imagery/2017/*.tif
    4-band uint16, band 1 blue, 2 green, 3 red, 4 nir; reflectance x 10000; nodata 0.
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
    layer changes: every new object of 2017 with truth_id, kind, cover, area_m2 (planar),
    farmland_m2, approved_m2, village_code (majority village or "unassigned"),
    village_share, township_code, epoch_from, epoch_to. Counts by kind:
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
"""


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
