"""Detection accuracy on synthetic samples of several seeds and sizes (not a test).

For each (size, seed) it generates the sample (cached under --cache), runs the pipeline up to
``register`` with the detection settings of ``config.yaml`` (or --detect YAML), and scores:

- recall of illegal-truth buildings of at least 200 m² that come out as a patch assigned to the
  right village (the end-to-end criterion; a building split nearly evenly between two
  villages, with no village above 60 %, counts when it lands in either);
- the object hit rate over every truth kind ≥ 200 m², and false patches per km².

Ends with one machine-readable line ``illegal_recall=… false_per_km2=… samples=…``.

    .venv/bin/python benchmarks/eval_sample.py --samples 4000:2017 2000:7 2500:11 1500:3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pyogrio
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.detection.accuracy import match_objects  # noqa: E402
from pipeline.sample import generate_sample  # noqa: E402


def score_run(patches, truth, grid_villages, *, min_area_m2: float = 200.0) -> dict:
    """The end-to-end figures of one run (see module docstring)."""
    from pipeline.testing import right_village

    truth = truth[truth["area_m2"] >= min_area_m2].reset_index(drop=True)
    best, _ = match_objects(patches, truth)
    ok = right_village(patches, truth, best, grid_villages)
    illegal = (truth["kind"] == "illegal").to_numpy()
    return {
        "illegal_total": int(illegal.sum()),
        "illegal_right_village": int((ok & illegal).sum()),
        "hit_all_kinds": int((best >= 0).sum()),
        "truth_all_kinds": len(truth),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--samples", nargs="+", default=["4000:2017", "2000:7", "2500:11", "1500:3"]
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/landwatch-samples"))
    parser.add_argument("--detect", help="YAML mapping replacing the config's detect section")
    args = parser.parse_args()

    base = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    if args.detect:
        base["detect"] = yaml.safe_load(args.detect)
    totals = {"illegal": 0, "ok": 0, "false": 0, "km2": 0.0}
    for spec in args.samples:
        size, seed = (int(x) for x in spec.split(":"))
        folder = args.cache / f"{size}_{seed}"
        if not (folder / ".complete").exists():
            generate_sample(folder, size_px=size, seed=seed)
        cfg = json.loads(json.dumps(base))
        cfg["imagery"]["epochs"] = {
            k: [str(folder / "imagery" / k / "*.tif")] for k in cfg["imagery"]["epochs"]
        }
        for layer in cfg["layers"].values():
            layer["path"] = str(folder / Path(layer["path"]).name)
        cfg["workspace"] = str(folder / "out")
        (folder / "config.yaml").write_text(
            yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8"
        )
        subprocess.run(["rm", "-rf", str(folder / "out")], check=True)
        subprocess.run(
            [sys.executable, "-m", "pipeline", "run", "--config", str(folder / "config.yaml"), "--until", "register"],
            check=True, capture_output=True,
        )  # fmt: skip
        patches = pyogrio.read_dataframe(folder / "out" / "registry.gpkg", layer="patches")
        truth = pyogrio.read_dataframe(folder / "truth.gpkg", layer="changes")
        villages = pyogrio.read_dataframe(folder / "grids.gpkg", layer="village")
        district = pyogrio.read_dataframe(folder / "grids.gpkg", layer="district")
        fig = score_run(patches, truth, villages)
        _, touched = match_objects(patches, truth)
        n_false = int((~touched).sum())
        km2 = float(district.geometry.area.sum()) / 1e6
        totals["illegal"] += fig["illegal_total"]
        totals["ok"] += fig["illegal_right_village"]
        totals["false"] += n_false
        totals["km2"] += km2
        print(
            f"{size:>5} px seed {seed:>5}: illegal ≥200 m² right village {fig['illegal_right_village']}/"
            f"{fig['illegal_total']}, all kinds hit {fig['hit_all_kinds']}/{fig['truth_all_kinds']}, "
            f"patches {len(patches)}, false {n_false} ({n_false / km2:.2f}/km² of district)"
        )
    recall = totals["ok"] / totals["illegal"] if totals["illegal"] else float("nan")
    print(
        f"illegal_recall={recall:.3f} false_per_km2={totals['false'] / totals['km2']:.3f} "
        f"samples={len(args.samples)}"
    )


if __name__ == "__main__":
    main()
