"""Does learning from field verdicts cut wasted visits? Precision of the visiting order at 90 %
and 95 % recall of real changes, before (the detector's score) and after (the learned model).

Two evaluations, one configuration (the defaults of :mod:`pipeline.learning.model`):

1. **Synthetic years.** Eight hard synthetic scenes of the sample generator (seeds 1–8, four
   bands, ``SceneOptions.hard``: every roof colour, haze, flooded paddies, mulch film, seasonal
   crops, longer shadows; plus :data:`DECOYS` decoys each: temporary plastic sheds and spoil
   heaps, which look like new roofs or earthworks but are false changes), each run through ``landwatch run --until register``, stand for eight
   years of one district: the verdicts of a year are simulated from its truth as the demo
   does (:func:`pipeline.sample.returns.verdicts`: a patch covering no truth object is a false
   change). Years 4–8 are each ranked by a model trained on all the years before them. The
   generator makes two epochs per scene, so the "years" are eight areas of the same kind, not
   eight epochs of one area.
2. **OSCD, leave one city out.** Detection on each labelled Sentinel-2 city; a patch is a real
   change when at least 20 % of it is labelled change. Each city is ranked by a model trained
   on the seven others.

Run::

    LANDWATCH_DATA=../shared/data python benchmarks/eval_learning.py [--no-oscd] [--workers 2]

The last line is ``precision_at_95_before=… precision_at_95_after=… visits_saved=…`` over the
synthetic years held back (precision averaged over them; visits saved = false changes above
the 95 %-recall cut of the score order minus those above the same-recall cut of the learned
order, summed).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from rasterio.features import rasterize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import eval_oscd  # noqa: E402
from benchmarks.scoreboard_synthetic import (  # noqa: E402
    COMPLETE,
    Scene,
    generator_fingerprint,
    sample_config,
)
from pipeline.detection.pair import detect_pair  # noqa: E402
from pipeline.learning.features import features_for, patch_features  # noqa: E402
from pipeline.learning.io.rasters import raster_features  # noqa: E402
from pipeline.learning.model import RECALLS, FeatureModel, cut_at_recall  # noqa: E402
from pipeline.ops.executor import make_executor  # noqa: E402
from pipeline.overlay.io.vectors import read_layer  # noqa: E402
from pipeline.registry.io.registry_file import load_registry  # noqa: E402
from pipeline.sample import SceneOptions, generate_sample  # noqa: E402
from pipeline.sample.returns import verdicts  # noqa: E402
from pipeline.schema import TRUTH_LAYER, P, Verdict  # noqa: E402

log = logging.getLogger("eval_learning")

CACHE = Path(os.environ.get("LANDWATCH_CACHE", "/tmp/landwatch-scoreboard"))
YEARS = (1, 2, 3, 4, 5, 6, 7, 8)
"""Seeds of the synthetic scenes standing for consecutive years."""
FIRST_HELD = 4
"""Years 1–3 only train; each later year is ranked by a model trained on all years before it."""
DECOYS = 40
"""Temporary sheds and spoil heaps per synthetic scene (false alarms by design)."""
LABEL_SHARE = 0.2
"""A detected OSCD patch is a real change when this share of it is labelled change."""


# --------------------------------------------------------------------------- data
def synthetic_year(seed: int, workers: int) -> pd.DataFrame:
    """Features, truth and score of every registered patch of one synthetic scene."""
    scene = Scene(2500, seed, "rgbn")
    folder = _decoy_sample(scene)
    run_dir = CACHE / "learn-runs" / scene.name
    config = sample_config(folder, run_dir, scene, {}, workers)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--config", str(config), "--until", "register"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"run failed on {scene.name}: {done.stderr[-2000:]}")
    state = load_registry(run_dir / "out" / "registry.gpkg", "EPSG:4548")
    truth = read_layer(folder / "truth.gpkg", layer=TRUTH_LAYER).to_crs(state.patches.crs)
    verdict = verdicts(state.patches, truth)
    frame = features_for(state.features, state.patches).reset_index()
    frame["y"] = (verdict.to_numpy() != Verdict.FALSE_CHANGE.value).astype(int)
    frame["score"] = pd.to_numeric(state.patches[P.SCORE], errors="coerce").to_numpy()
    frame["group"] = f"year{seed}"
    return frame


def oscd_city(city, work: Path, executor, workers: int) -> pd.DataFrame:
    """Features, label and score of every patch detected in one OSCD city."""
    out_dir = work / city.name
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = eval_oscd.city_config(city, {}, work, workers)
    result = detect_pair(cfg, ("1", "2"), out_dir, executor)
    det = result.detections.reset_index(drop=True)
    if len(det) == 0:
        return pd.DataFrame()
    raster = raster_features(cfg, ("1", "2"), det, out_dir / "score.tif")
    frame = patch_features(det, raster)
    with rasterio.open(result.mask_path) as src:
        profile = src.profile
    label = eval_oscd.label_on_mask_grid(city, profile) == 1
    ids = rasterize(
        [(g, i + 1) for i, g in enumerate(det.geometry)],
        out_shape=label.shape, transform=profile["transform"], fill=0, dtype="int32",
    )  # fmt: skip
    n = np.bincount(ids.ravel(), minlength=len(det) + 1)[1:]
    hit = np.bincount(ids.ravel(), weights=label.ravel(), minlength=len(det) + 1)[1:]
    frame["y"] = (hit >= LABEL_SHARE * np.maximum(n, 1)).astype(int)
    frame["score"] = pd.to_numeric(det[P.SCORE], errors="coerce").to_numpy()
    frame["group"] = city.name
    return frame


def _decoy_sample(scene: Scene) -> Path:
    """The hard scene with :data:`DECOYS` decoys, generated once into the cache."""
    folder = CACHE / "samples" / f"{scene.name}_decoys{DECOYS}_{generator_fingerprint()}"
    if not (folder / COMPLETE).exists():
        options = dataclasses.replace(SceneOptions.hard(bands=scene.bands), decoys=DECOYS)
        generate_sample(folder, size_px=scene.size_px, seed=scene.seed, options=options)
    return folder


# --------------------------------------------------------------------------- scoring
def compared(train: pd.DataFrame, test: pd.DataFrame) -> dict:
    """Precision and false changes above the cut at each recall, score order vs learned."""
    features = [c for c in train.columns if c not in ("y", "score", "group", P.PATCH_ID)]
    model = FeatureModel.trained(train[features].to_numpy(dtype=float), train["y"].to_numpy())
    p = model.predict_proba(test[features].to_numpy(dtype=float))[:, 1]
    y, score = test["y"].to_numpy(), test["score"].fillna(-np.inf).to_numpy()
    out = {"n": len(test), "n_real": int(y.sum()), "n_false": int(len(y) - y.sum())}
    for r in RECALLS:
        out[f"before_{r:.2f}"], out[f"false_before_{r:.2f}"] = cut_at_recall(y, score, r)
        out[f"after_{r:.2f}"], out[f"false_after_{r:.2f}"] = cut_at_recall(y, p, r)
    return out


def table(rows: list[dict]) -> str:
    head = (f"{'held back':<14} {'trained on':<22} {'n':>5} {'real':>5} {'false':>5}  "
            "P@90 before/after   P@95 before/after   false above 95% cut before/after")  # fmt: skip
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['test']:<14} {r['train']:<22} {r['n']:>5} {r['n_real']:>5} {r['n_false']:>5}  "
            f"{r['before_0.90']:.3f} / {r['after_0.90']:.3f}       "
            f"{r['before_0.95']:.3f} / {r['after_0.95']:.3f}       "
            f"{r['false_before_0.95']:>4} / {r['false_after_0.95']:<4}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-oscd", action="store_true", help="Skip the OSCD cities.")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    years = [synthetic_year(s, args.workers) for s in YEARS]
    rows = []
    for k in range(FIRST_HELD - 1, len(YEARS)):
        train, test = pd.concat(years[:k], ignore_index=True), years[k]
        rows.append({"test": test["group"].iloc[0], "train": "+".join(f"year{s}" for s in YEARS[:k]),
                     **compared(train, test)})  # fmt: skip
    rows.append({"test": "sum", "train": "", **_pooled(rows)})
    print(f"Synthetic years (hard scenes with {DECOYS} decoys each, 2500 px, four bands):")
    print(table(rows))
    if not args.no_oscd:
        print("\nOSCD, leave one city out:")
        print(table(oscd_rows(args.workers)))
    last = rows[-1]  # the sum over the held-back years
    print(f"\n{time.perf_counter() - t0:.0f} s")
    print(
        f"precision_at_95_before={last['before_0.95']:.3f} "
        f"precision_at_95_after={last['after_0.95']:.3f} "
        f"visits_saved={last['false_before_0.95'] - last['false_after_0.95']}"
    )
    return 0


def oscd_rows(workers: int) -> list[dict]:
    data = Path(os.environ.get(eval_oscd.DATA_ENV, eval_oscd.DEFAULT_DATA))
    data = data / "oscd" if (data / "oscd").is_dir() else data
    cities = [c for c in eval_oscd.find_cities(data) if c.label is not None]
    work = CACHE / "learn-oscd"
    with make_executor(workers) as executor:
        frames = [oscd_city(c, work, executor, workers) for c in cities]
    frames = [f for f in frames if len(f)]
    rows = []
    for i, test in enumerate(frames):
        train = pd.concat([f for j, f in enumerate(frames) if j != i], ignore_index=True)
        if test["y"].sum() == 0:
            continue
        rows.append(
            {"test": test["group"].iloc[0], "train": "the other cities", **compared(train, test)}
        )
    rows.append({"test": "mean / sum", "train": "", **_pooled(rows)})
    return rows


def _pooled(rows: list[dict]) -> dict:
    """Counts and false changes summed, precisions averaged over the held-back groups."""
    pooled = {k: sum(r[k] for r in rows) for k in ("n", "n_real", "n_false")}
    for r in RECALLS:
        for side in ("before", "after"):
            pooled[f"{side}_{r:.2f}"] = float(np.nanmean([x[f"{side}_{r:.2f}"] for x in rows]))
            pooled[f"false_{side}_{r:.2f}"] = sum(x[f"false_{side}_{r:.2f}"] for x in rows)
    return pooled


if __name__ == "__main__":
    raise SystemExit(main())
