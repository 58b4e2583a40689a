"""The real-data sections of the development scoreboard: Landsat Nanjing and the RGB pairs.

Each loader returns an empty list when its data folder is absent, so the scoreboard skips
the dataset cleanly. Runners call :func:`pipeline.detection.pair.detect_pair` and read its
``mask.tif`` back onto the label's grid (nearest neighbour; a label pixel the mask does not
cover counts as "no change"); the scoring itself is in ``scoreboard_score.py``.

- Landsat (``landsat/nanjing``): two ENVI files with a ``.hdr`` (6 bands, 30 m, Landsat 5
  TM: blue, green, red, nir, swir1, swir2). Their ``map info`` puts them in UTM zone 50N, so
  they are read as they are; a file without a CRS would be written to a GeoTIFF in
  :data:`LANDSAT_FALLBACK_CRS` first. ``change.bmp`` / ``unchanged.bmp`` mark sampled pixels
  (white) on the same grid: only those are scored.
- RGB pairs (``rgb_pairs/<dataset>/{A,B,label}/*.png``): not georeferenced; each pair is
  written as two GeoTIFFs (bands blue, green, red) in :data:`RGB_CRS` at the dataset's
  pixel size with an origin that is not a multiple of it (:func:`pair_transform`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.enums import Resampling
from rasterio.warp import reproject

from benchmarks.eval_oscd import placeholder_grid
from benchmarks.scoreboard_score import (
    labelled_scores,
    overlap,
    pair_f1,
    shifted_pair,
)
from pipeline.config import Config, parse_config
from pipeline.detection.accuracy import pixel_scores
from pipeline.detection.pair import MASK_CHANGE, detect_pair

log = logging.getLogger("scoreboard")

DATA_ENV = "LANDWATCH_DATA"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LANDSAT_DIR = Path("landsat") / "nanjing"
LANDSAT_BANDS = {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 6}
"""Landsat 5 TM bands 1, 2, 3, 4, 5 and 7, in file order."""
LANDSAT_RESOLUTION_M = 30.0
LANDSAT_FALLBACK_CRS = "EPSG:32650"
"""WGS 84 / UTM 50N (Nanjing): used only if an ENVI file carries no ``map info``."""
RGB_DIR = Path("rgb_pairs")
RGB_CRS = "EPSG:32650"
RGB_BANDS = {"blue": 1, "green": 2, "red": 3}
RGB_RESOLUTION_M = {"levir_samples": 0.5, "levir_tiles": 0.5, "dsifn_samples": 2.0}
"""Ground pixel size per RGB dataset. LEVIR-CD: 0.5 m (its paper). DSIFN-CD: its paper and
README give none (Google Earth, six Chinese cities); 2 m is assumed, consistent with village
houses of 10–15 m spanning 5–8 pixels in the crops."""


@dataclass(frozen=True)
class PairItem:
    """One labelled RGB pair (PNG paths)."""

    dataset: str
    name: str
    before: Path
    after: Path
    label: Path
    resolution_m: float


@dataclass(frozen=True)
class Masked:
    """A detection read back onto a label grid."""

    predicted: np.ndarray
    covered: float
    """Share of the label grid the mask covers (1.0 when the grids match)."""
    n_patches: int
    seconds: float


def data_root() -> Path:
    """``$LANDWATCH_DATA``, else ``../shared/data`` beside the project."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA)


# --------------------------------------------------------------------------- shared
def detect_config(raw_imagery: dict, area: dict, detect: dict, work: Path, workers: int) -> Config:
    """A landwatch config around one image pair (placeholder grid layers, never read)."""
    grid = placeholder_grid(work)
    layer = {"path": str(grid), "code_field": "code", "name_field": "name"}
    raw = {
        "area": {"county_code": "000000", **area},
        "imagery": raw_imagery,
        "layers": {"township": layer, "village": layer},
        "detect": dict(detect),
        "run": {"workers": workers},
        "workspace": str(work),
    }
    return parse_config(raw, base_dir=work)


def run_on_label_grid(
    cfg: Config, out_dir: Path, executor, shape: tuple[int, int], transform: Affine, crs
) -> Masked:
    """Detect with ``cfg`` and read the change mask onto the grid ``(shape, transform, crs)``."""
    t0 = time.perf_counter()
    result = detect_pair(cfg, tuple(cfg.imagery.labels[:2]), out_dir, executor)
    seconds = time.perf_counter() - t0
    with rasterio.open(result.mask_path) as src:
        mask = src.read(1)
        src_transform, src_crs = src.transform, src.crs
    change = np.full(shape, 2, np.uint8)  # 2 = not covered by the mask
    reproject(
        (mask == MASK_CHANGE).astype(np.uint8),
        change,
        src_transform=src_transform,
        src_crs=src_crs,
        dst_transform=transform,
        dst_crs=crs,
        dst_nodata=2,
        resampling=Resampling.nearest,
    )
    return Masked(change == 1, float((change != 2).mean()), len(result.detections), seconds)


# --------------------------------------------------------------------------- Landsat
@dataclass(frozen=True)
class LandsatPair:
    before: Path
    after: Path
    change: Path
    unchanged: Path


def find_landsat(root: Path) -> list[LandsatPair]:
    """The Nanjing pair (the two ENVI files with a ``.hdr``, by name), or [] when absent."""
    folder = root / LANDSAT_DIR
    if not folder.is_dir():
        return []
    images = sorted(p.with_suffix("") for p in folder.glob("*.hdr"))
    labels = folder / "change.bmp", folder / "unchanged.bmp"
    if len(images) != 2 or not all(p.is_file() for p in (*images, *labels)):
        log.warning("%s: expected 2 ENVI files with .hdr and change/unchanged.bmp", folder)
        return []
    return [LandsatPair(images[0], images[1], *labels)]


def georeferenced(path: Path, work: Path) -> Path:
    """``path`` itself when GDAL finds its CRS (ENVI ``map info``), else a GeoTIFF copy in
    :data:`LANDSAT_FALLBACK_CRS` at 30 m with an origin of (500015, 3500015)."""
    with rasterio.open(path) as src:
        if src.crs is not None:
            return path
        profile = {
            "driver": "GTiff",
            "count": src.count,
            "dtype": src.dtypes[0],
            "width": src.width,
            "height": src.height,
        }
        data = src.read()
    out = work / f"{path.name}.tif"
    res = LANDSAT_RESOLUTION_M
    transform = Affine(res, 0.0, 500_015.0, 0.0, -res, 3_500_015.0)
    with rasterio.open(out, "w", crs=LANDSAT_FALLBACK_CRS, transform=transform, **profile) as d:
        d.write(data)
    return out


def run_landsat(item: LandsatPair, detect: dict, work: Path, executor, workers: int) -> dict:
    """Detect on the Nanjing pair and score the sampled labels (pixel scores)."""
    work.mkdir(parents=True, exist_ok=True)
    before, after = georeferenced(item.before, work), georeferenced(item.after, work)
    with rasterio.open(before) as src:
        shape, transform, crs = src.shape, src.transform, src.crs
    imagery = {
        "epochs": {"1": [str(before)], "2": [str(after)]},
        "bands": LANDSAT_BANDS,
    }
    area = {"name": "nanjing", "crs": crs.to_string(), "resolution_m": LANDSAT_RESOLUTION_M}
    cfg = detect_config(imagery, area, detect, work, workers)
    masked = run_on_label_grid(cfg, work / "out", executor, shape, transform, crs)
    change, unchanged = _read_label(item.change), _read_label(item.unchanged)
    if change.shape != shape:
        raise ValueError(f"{item.change}: label is {change.shape}, imagery {shape}")
    scores = labelled_scores(masked.predicted, change, unchanged)
    return {
        "name": "nanjing",
        **scores.as_dict(),
        "covered": masked.covered,
        "patches": masked.n_patches,
        "seconds": masked.seconds,
    }


# --------------------------------------------------------------------------- RGB pairs
def find_pairs(root: Path, dataset: str, limit: int | None = None) -> list[PairItem]:
    """The pairs of ``rgb_pairs/<dataset>`` (names present in A, B and label), or []."""
    folder = root / RGB_DIR / dataset
    if not folder.is_dir():
        return []
    names = sorted(
        p.name
        for p in (folder / "A").glob("*.png")
        if (folder / "B" / p.name).is_file() and (folder / "label" / p.name).is_file()
    )
    res = RGB_RESOLUTION_M[dataset]
    items = [
        PairItem(dataset, n, folder / "A" / n, folder / "B" / n, folder / "label" / n, res)
        for n in names
    ]
    return items[:limit] if limit else items


def pair_transform(index: int, resolution_m: float) -> Affine:
    """A north-up transform whose origin is not a multiple of ``resolution_m``.

    Each pair gets its own place (``index`` km apart) and fractional offsets of 0.37 and
    0.61 pixel, so a grid snapped to the CRS origin would not meet the imagery's pixels.
    """
    x0 = 400_000.0 + 1_000.0 * index + 0.37 * resolution_m
    y0 = 3_300_000.0 + 0.61 * resolution_m
    return Affine(resolution_m, 0.0, x0, 0.0, -resolution_m, y0)


def run_rgb_arrays(
    before: np.ndarray,
    after: np.ndarray,
    label: np.ndarray,
    *,
    resolution_m: float,
    transform: Affine,
    detect: dict,
    work: Path,
    executor,
    workers: int,
) -> tuple[np.ndarray, Masked]:
    """Write an RGB pair (arrays in R, G, B order) as GeoTIFFs, detect, and return the
    predicted change on the label's grid."""
    work.mkdir(parents=True, exist_ok=True)
    paths = work / "before.tif", work / "after.tif"
    for path, image in zip(paths, (before, after), strict=True):
        write_bgr(path, image, transform)
    imagery = {"epochs": {"1": [str(paths[0])], "2": [str(paths[1])]}, "bands": RGB_BANDS}
    area = {"name": work.name, "crs": RGB_CRS, "resolution_m": resolution_m}
    cfg = detect_config(imagery, area, detect, work, workers)
    masked = run_on_label_grid(cfg, work / "out", executor, label.shape, transform, RGB_CRS)
    return masked.predicted, masked


def run_pair(
    item: PairItem,
    index: int,
    detect: dict,
    work: Path,
    executor,
    workers: int,
    shifts: tuple[int, ...] = (),
) -> dict:
    """Detect on one RGB pair; with ``shifts``, also on the pair misregistered by each.

    Returns
    -------
    dict
        Pixel scores, ``f1`` (:func:`~scoreboard_score.pair_f1`), patches, seconds; and per
        shift ``k`` the F1 of the shifted run (``f1_shift<k>``) and of the unshifted run on
        the same overlap window (``f1_base<k>``).
    """
    before, after = _read_rgb(item.before), _read_rgb(item.after)
    label = _read_label(item.label)
    transform = pair_transform(index, item.resolution_m)
    folder = work / item.dataset / Path(item.name).stem
    common = {"detect": detect, "executor": executor, "workers": workers}
    predicted, masked = run_rgb_arrays(
        before, after, label, resolution_m=item.resolution_m, transform=transform,
        work=folder, **common,
    )  # fmt: skip
    scores = pixel_scores(predicted, label)
    out = {
        "dataset": item.dataset,
        "name": item.name,
        **scores.as_dict(),
        "f1": pair_f1(scores),
        "covered": masked.covered,
        "patches": masked.n_patches,
        "seconds": masked.seconds,
    }
    for k in shifts:
        b, a, lab = shifted_pair(before, after, label, k)
        rows, cols = overlap(label.shape, k)
        moved = transform * Affine.translation(k, k)
        shifted, m = run_rgb_arrays(
            b, a, lab, resolution_m=item.resolution_m, transform=moved,
            work=folder / f"shift{k}", **common,
        )  # fmt: skip
        out[f"f1_base{k}"] = pair_f1(pixel_scores(predicted[rows, cols], lab))
        out[f"f1_shift{k}"] = pair_f1(pixel_scores(shifted, lab))
        out["seconds"] += m.seconds
    return out


def write_bgr(path: Path, rgb: np.ndarray, transform: Affine) -> None:
    """Write an (3, rows, cols) R, G, B uint8 array as a GeoTIFF with bands blue, green, red
    (no nodata: every value is valid)."""
    _, rows, cols = rgb.shape
    profile = {
        "driver": "GTiff",
        "count": 3,
        "dtype": rgb.dtype,
        "width": cols,
        "height": rows,
        "crs": RGB_CRS,
        "transform": transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rgb[::-1])
        for i, name in enumerate(("blue", "green", "red"), start=1):
            dst.set_band_description(i, name)


def _read_rgb(path: Path) -> np.ndarray:
    """An RGB image file as a (3, rows, cols) array, R, G, B."""
    with Image.open(path) as im:
        return np.moveaxis(np.asarray(im.convert("RGB")), -1, 0)


def _read_label(path: Path) -> np.ndarray:
    """A label image (PNG or BMP, grey or palette) as a bool array: True where marked
    (grey level above 127, i.e. 255 in these labels)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 127
