"""Pixel accuracy of the detect stage on the OSCD Sentinel-2 cities (not a test).

Runs :func:`pipeline.detection.pair.detect_pair` on every OSCD city in a data folder with ONE detect
configuration, each city on a 10 m grid in its own UTM zone, and scores the change mask
against the city's label with :func:`pipeline.detection.accuracy.pixel_scores`:

- cities are the subfolders holding ``imgs_1/`` and ``imgs_2/`` (one GeoTIFF per band);
- the label is ``<city>-cm.tif`` beside them or under ``cm/`` (1 = no change, 2 = change). It
  has no georeferencing: it is on the grid of ``imgs_1/*B02.tif``, so it is read with that
  file's transform and CRS and warped (nearest) onto the 10 m UTM grid of the mask;
- a city without a label (``norcia``: farmland with strong seasonal change, imagery only) is
  a false-alarm test: every patch there counts against the field teams, reported per km².

Prints a table per city (precision, recall, F1, IoU, kappa, changed-pixel share), the mean F1
over the labelled cities, and ends with one machine-readable line ``mean_f1=… cities=…``.

    .venv/bin/python benchmarks/eval_oscd.py                       # the default configuration
    .venv/bin/python benchmarks/eval_oscd.py --detect '{method: cva, threshold: otsu}'
    .venv/bin/python benchmarks/eval_oscd.py /path/to/oscd --workers 1

The data folder defaults to ``$LANDWATCH_DATA/oscd`` (``LANDWATCH_DATA`` defaults to
``../shared/data`` from the project root). Nothing is written inside the project: masks go to
a temporary folder unless ``--out`` names one.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import yaml
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import reproject, transform_bounds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import ClassifyConfig, Config, parse_config  # noqa: E402
from pipeline.detection.accuracy import PixelScores, pixel_scores  # noqa: E402
from pipeline.detection.pair import MASK_CHANGE, MASK_NODATA, detect_pair  # noqa: E402
from pipeline.ops.executor import make_executor  # noqa: E402
from pipeline.schema import P  # noqa: E402

log = logging.getLogger("eval_oscd")

DATA_ENV = "LANDWATCH_DATA"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
BEFORE, AFTER = "imgs_1", "imgs_2"
LABEL_CHANGE = 2
"""OSCD ``-cm.tif`` coding: 1 = no change, 2 = change."""
LABEL_OUTSIDE = 255
"""Warped label value outside the label's extent (not scored)."""
RESOLUTION_M = 10.0
BAND_FILES = {
    "blue": "*_B02.tif",
    "green": "*_B03.tif",
    "red": "*_B04.tif",
    "nir": "*_B08.tif",
    "swir1": "*_B11.tif",
    "swir2": "*_B12.tif",
    "coastal": "*_B01.tif",
    "cirrus": "*_B10.tif",
}
"""The six surface bands the methods use, and the two atmospheric bands of the cloud screen
(``detect.cloud_screen``, on by default when both are configured)."""
DEFAULT_DETECT: dict = {
    "method": "selftrain",
    "selftrain_change_quantile": 0.99,
    "selftrain_nochange_quantile": 0.8,
    "threshold": "fixed",
    "threshold_value": 0.6,
    "sample_step": 3,
    "smooth_sigma_m": 20.0,
    "hysteresis_low": 0.7,
    "min_mean_score": 1.0,
    "min_area_m2": 200,
    "edge_ratio": None,
}
"""The best single configuration measured: self-training — a logistic regression fitted per
scene on its own confident IR-MAD change (top 1 % of the sample; vegetation-in-both-epochs and
water-in-both-epochs pixels excluded and taught as no change) and no-change (bottom 80 %)
pixels of a pass-1 sample of every 3rd row and column, with the shift-tolerant difference
among its features — its P(change) smoothed with a 20 m Gaussian, weighted by the
scene-relative vegetation change, cut at 0.6 with hysteresis, and merged patches that are
a cloud in one epoch dropped (the cloud screen, on with the ``coastal`` and ``cirrus`` bands
of :data:`BAND_FILES`), and patches whose SWIR changed 2.5 times more than their visible
brightness dropped (the moisture screen): mean F1 0.368, norcia 1.1 patches/km²; 0.362
without the moisture screen, 0.346 without either (``--detect`` with this mapping plus
``moisture_screen: false`` / ``cloud_screen: false``). Without the screens and before the
warp scale was fixed, with ``sample_step`` 4 (the detect default): 0.337, 1.3/km². Cuts 0.5
/ 0.55 / 0.65 gave 0.323 / 0.327 / 0.330 at ``sample_step`` 4 (the 0.6 was chosen on these
same cities); without the vegetation weight 0.305 (best cut 0.55: 0.328), without the shift
feature 0.324, with neither and cut 0.5 0.302 (1.0/km²); the selftrain of before, without the
nuisance rule, 0.296; cva + otsu: 0.181. About 110 single settings around this one gave
0.33–0.35 (examples/oscd_france/README.md)."""
FALSE_ALARM_CITIES = ("norcia",)
"""Imagery-only cities scored by patches per km² (every patch there is a false alarm)."""


@dataclass(frozen=True)
class City:
    name: str
    folder: Path
    label: Path | None


@dataclass(frozen=True)
class CityResult:
    city: str
    scores: PixelScores | None
    changed_share: float
    truth_share: float
    n_patches: int
    n_registered: int
    area_km2: float
    threshold: float
    seconds: float


# --------------------------------------------------------------------------- discovery
def find_cities(data: Path) -> list[City]:
    """Subfolders of ``data`` with ``imgs_1`` and ``imgs_2``, and their label (or None)."""
    cities = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        if not ((folder / BEFORE).is_dir() and (folder / AFTER).is_dir()):
            continue
        name = folder.name
        candidates = [folder / f"{name}-cm.tif", folder / "cm" / f"{name}-cm.tif"]
        label = next((c for c in candidates if c.is_file()), None)
        cities.append(City(name, folder, label))
    return cities


def utm_crs(lon: float, lat: float) -> str:
    """The WGS 84 / UTM zone holding (lon, lat), as ``EPSG:326zz`` (north) or ``327zz``."""
    zone = math.floor((lon + 180.0) / 6.0) % 60 + 1
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def reference_band(city: City) -> Path:
    """``imgs_1/*B02.tif``: the grid the OSCD label is on."""
    found = sorted((city.folder / BEFORE).glob("*B02.tif"))
    if not found:
        raise FileNotFoundError(f"{city.folder / BEFORE}: no *B02.tif (the label's grid)")
    return found[0]


def city_config(city: City, detect: dict, grid_dir: Path, workers: int) -> Config:
    """A landwatch config for one city: 10 m UTM grid, :data:`BAND_FILES`, the given detect
    section.

    Notes
    -----
    ``layers`` are required by the config but never read by the detect stage: they point at
    a one-polygon placeholder GeoPackage in ``grid_dir``.
    """
    with rasterio.open(reference_band(city)) as src:
        lon0, lat0, lon1, lat1 = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    grid = placeholder_grid(grid_dir)
    layer = {"path": str(grid), "code_field": "code", "name_field": "name"}
    raw = {
        "area": {
            "name": city.name,
            "county_code": "000000",
            "crs": utm_crs((lon0 + lon1) / 2, (lat0 + lat1) / 2),
            "resolution_m": RESOLUTION_M,
        },
        "imagery": {
            "epochs": {"1": [f"{BEFORE}/*.tif"], "2": [f"{AFTER}/*.tif"]},
            "band_files": BAND_FILES,
            "nodata": 0,
        },
        "layers": {"township": layer, "village": layer},
        "detect": detect,
        "run": {"workers": workers},
        "workspace": str(grid_dir),
    }
    return parse_config(raw, base_dir=city.folder)


def placeholder_grid(folder: Path) -> Path:
    """A one-polygon GeoPackage to satisfy the config's required grid layers."""
    import geopandas as gpd
    import shapely

    path = folder / "placeholder_grid.gpkg"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        gdf = gpd.GeoDataFrame(
            {"code": ["000000000000"], "name": ["placeholder"]},
            geometry=[shapely.box(0, 0, 1, 1)],
            crs="EPSG:4326",
        )
        gdf.to_file(path, driver="GPKG", engine="pyogrio")
    return path


# --------------------------------------------------------------------------- scoring
def label_on_mask_grid(city: City, mask_profile: dict) -> np.ndarray:
    """The city's label on the mask's grid: 1 change, 0 no change, 255 outside the label.

    Notes
    -----
    ``<city>-cm.tif`` carries no georeferencing; it shares the pixel grid of
    ``imgs_1/*B02.tif`` (EPSG:4326), whose transform and CRS are used. Nearest-neighbour
    warping keeps the 0/1 coding.
    """
    assert city.label is not None
    with rasterio.open(reference_band(city)) as ref:
        src_transform, src_crs, shape = ref.transform, ref.crs, ref.shape
    with warnings.catch_warnings():  # the label has no georeferencing, as documented
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(city.label) as lab:
            raw = lab.read(1)
    if raw.shape != shape:
        raise ValueError(
            f"{city.label}: label is {raw.shape[1]}×{raw.shape[0]} px but "
            f"{reference_band(city).name} is {shape[1]}×{shape[0]}; expected the same grid"
        )
    codes = (raw == LABEL_CHANGE).astype(np.uint8)
    out = np.full((mask_profile["height"], mask_profile["width"]), LABEL_OUTSIDE, np.uint8)
    reproject(
        codes,
        out,
        src_transform=src_transform,
        src_crs=src_crs,
        src_nodata=LABEL_OUTSIDE,
        dst_transform=mask_profile["transform"],
        dst_crs=mask_profile["crs"],
        dst_nodata=LABEL_OUTSIDE,
        resampling=Resampling.nearest,
    )
    return out


def evaluate_city(city: City, detect: dict, work: Path, executor, workers: int) -> CityResult:
    """Detect on one city and score it (pixel scores, or patches only without a label)."""
    import time

    out_dir = work / city.name
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = city_config(city, detect, work, workers)
    t0 = time.perf_counter()
    result = detect_pair(cfg, ("1", "2"), out_dir, executor)
    seconds = time.perf_counter() - t0
    with rasterio.open(result.mask_path) as src:
        mask = src.read(1)
        profile = src.profile
    valid = mask != MASK_NODATA
    predicted = mask == MASK_CHANGE
    scores, truth_share = None, float("nan")
    if city.label is not None:
        truth = label_on_mask_grid(city, profile)
        valid &= truth != LABEL_OUTSIDE
        scores = pixel_scores(predicted, truth == 1, valid)
        truth_share = float((truth == 1)[valid].mean())
    n_valid = int(valid.sum())
    detections = result.detections
    registered = detections[P.CHANGE_TYPE].isin(ClassifyConfig().keep_types)
    return CityResult(
        city=city.name,
        scores=scores,
        changed_share=float(predicted[valid].mean()) if n_valid else float("nan"),
        truth_share=truth_share,
        n_patches=len(detections),
        n_registered=int(registered.sum()),
        area_km2=n_valid * RESOLUTION_M**2 / 1e6,
        threshold=float(result.stats["threshold"]),
        seconds=seconds,
    )


# --------------------------------------------------------------------------- report
def format_table(results: list[CityResult]) -> str:
    head = (
        f"{'city':<12} {'prec':>6} {'recall':>6} {'F1':>6} {'IoU':>6} {'kappa':>6} "
        f"{'changed':>7} {'truth':>6} {'patches':>7} {'reg':>5} {'km2':>6} {'cut':>7} {'s':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        s = r.scores
        cells = [s.precision, s.recall, s.f1, s.iou, s.kappa] if s is not None else [math.nan] * 5
        metrics = " ".join(f"{v:6.3f}" if not math.isnan(v) else f"{'-':>6}" for v in cells)
        truth = f"{r.truth_share:6.1%}" if not math.isnan(r.truth_share) else f"{'-':>6}"
        lines.append(
            f"{r.city:<12} {metrics} {r.changed_share:7.1%} {truth} {r.n_patches:7d} "
            f"{r.n_registered:5d} {r.area_km2:6.1f} {r.threshold:7.3f} {r.seconds:5.1f}"
        )
    return "\n".join(lines)


def mean_f1(results: list[CityResult]) -> tuple[float, int]:
    f1 = [r.scores.f1 for r in results if r.scores is not None]
    f1 = [0.0 if math.isnan(v) else v for v in f1]  # no predicted change: F1 counts as 0
    return (float(np.mean(f1)) if f1 else float("nan")), len(f1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_data = Path(os.environ.get(DATA_ENV) or DEFAULT_DATA) / "oscd"
    parser.add_argument("data", nargs="?", type=Path, default=default_data)
    parser.add_argument(
        "--detect",
        help=f"YAML mapping for the detect section (default: {DEFAULT_DETECT})",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="folder for the masks (default: a temp dir)")
    parser.add_argument("--cities", nargs="+", help="only these cities")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    detect = dict(DEFAULT_DETECT)
    if args.detect:
        given = yaml.safe_load(args.detect)
        if not isinstance(given, dict):
            parser.error(f"--detect must be a YAML mapping, got {args.detect!r}")
        detect = given
    if not args.data.is_dir():
        parser.error(f"data folder {args.data} does not exist; pass it or set {DATA_ENV}")
    cities = find_cities(args.data)
    if args.cities:
        cities = [c for c in cities if c.name in args.cities]
    if not cities:
        parser.error(f"no city folders with {BEFORE}/ and {AFTER}/ under {args.data}")

    with tempfile.TemporaryDirectory(prefix="eval_oscd_") as tmp:
        work = args.out or Path(tmp)
        with make_executor(args.workers) as executor:
            results = [evaluate_city(c, detect, work, executor, args.workers) for c in cities]

    print(f"detect: {yaml.safe_dump(detect, default_flow_style=True).strip()}")
    print(format_table(results))
    for r in results:
        if r.city in FALSE_ALARM_CITIES or r.scores is None:
            print(
                f"false alarms on {r.city} (no label, all patches count): "
                f"{r.n_patches / r.area_km2:.1f} patches/km² "
                f"({r.n_registered / r.area_km2:.1f}/km² of registered change types) "
                f"over {r.area_km2:.1f} km²"
            )
    value, n = mean_f1(results)
    print(f"mean_f1={value:.4f} cities={n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
