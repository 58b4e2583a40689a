"""The development scoreboard: the detector's defaults on every kind of imagery (not a test).

One command, one configuration: the ``detect`` section is EMPTY (the code's defaults),
except ``min_area_m2: 50`` for the RGB pairs. It prints per-item figures for each dataset,
a table, and ends with one machine-readable line::

    synthetic_recall=… synthetic_fp_km2=… offfarm_recall=… seasonal_fp_km2=… oscd_f1=…
    norcia_fp_km2=… landsat_f1=… levir_f1=… dsifn_f1=… levir_shift_loss=…

Datasets (data root ``$LANDWATCH_DATA``, default ``../shared/data`` beside the project; a
missing folder skips its dataset, shown as ``nan``):

- ``synthetic``: hard synthetic samples (every roof colour, new buildings off farmland next
  to villages, haze, flooded paddies, film, the later epoch in UTM with a sub-pixel offset),
  seeds 1–8 at 2500 px with four bands, seeds 1–4 RGB-only, and one 20000 px county
  (``--no-county`` skips it), generated once into ``--cache``; the pipeline runs up to
  ``register``. Recall of unapproved new construction ≥ 200 m² found as a patch (covered at
  least half by one), its off-farmland subset, false patches (touching no truth object) per
  km² of district, and the false patches on seasonal parcels per km²;
- ``oscd``: the OSCD development cities (mean pixel F1 over the labelled ones) and norcia
  (every patch is false: patches per km²), as ``eval_oscd.py`` runs them;
- ``landsat``: the Landsat 5 TM Nanjing pair, pixel F1 on the sampled labels only;
- ``levir``: the LEVIR-CD crops and five whole 1024² tiles (0.5 m), mean pixel F1, and the
  tiles again with the later image displaced by 1, 2 and 3 px along both axes: the F1 lost
  against the unshifted run on the same pixels (the worst of the three is
  ``levir_shift_loss``);
- ``dsifn``: the DSIFN-CD crops (2 m assumed: the dataset states no pixel size), mean F1.

Usage::

    .venv/bin/python benchmarks/scoreboard.py                      # everything (~25 min)
    .venv/bin/python benchmarks/scoreboard.py --no-county          # without the county
    .venv/bin/python benchmarks/scoreboard.py --quick --only synthetic,levir
    .venv/bin/python benchmarks/scoreboard.py --json /tmp/board.json
    .venv/bin/python benchmarks/scoreboard.py --detect '{method: cva}'   # NOT the defaults

``--detect`` replaces the empty section for development comparisons only; the header then
says so. Samples are cached under ``--cache`` (default /tmp/landwatch-scoreboard; the first
run generates them, the county takes minutes); masks and runs go there too, never into the
project.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import eval_oscd  # noqa: E402
from benchmarks import scoreboard_data as data  # noqa: E402
from benchmarks import scoreboard_synthetic as synthetic  # noqa: E402
from benchmarks.scoreboard_score import mean_defined, pooled_synthetic, summary_line  # noqa: E402
from pipeline.config import DetectConfig  # noqa: E402
from pipeline.ops.executor import make_executor  # noqa: E402

log = logging.getLogger("scoreboard")

DATASETS = ("synthetic", "oscd", "landsat", "levir", "dsifn")
RGB_MIN_AREA_M2 = 50.0
SHIFTS_PX = (1, 2, 3)
DEFAULT_CACHE = Path("/tmp/landwatch-scoreboard")


@dataclass
class Row:
    """One line of the summary table."""

    dataset: str
    n: str
    value: float
    metric: str
    fp_km2: float = math.nan
    target: str = ""
    seconds: float = math.nan


@dataclass
class Board:
    """Everything measured: table rows, the summary figures, per-item records."""

    rows: list[Row] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    items: dict[str, list[dict]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    detect: dict
    rgb_detect: dict
    root: Path
    cache: Path
    work: Path
    workers: int
    quick: bool
    county: bool


# --------------------------------------------------------------------------- helpers
def attempt(board: Board, what: str, fn: Callable[[], dict]) -> dict | None:
    """``fn()``, or None with the error recorded and printed (the board goes on)."""
    try:
        return fn()
    except Exception as exc:  # one failing item must not stop the board
        message = f"{what}: {type(exc).__name__}: {exc}"
        board.errors.append(message)
        print(f"  ERROR {message}", flush=True)
        return None


def count(ok: list, total: int) -> str:
    return f"{len(ok)}" if len(ok) == total else f"{len(ok)}/{total}"


# --------------------------------------------------------------------------- sections
def run_synthetic(s: Settings, board: Board, executor) -> None:
    """Hard synthetic scenes up to ``register`` (see :mod:`scoreboard_synthetic`)."""
    del executor  # each scene runs in its own landwatch process
    t0 = time.perf_counter()
    plan = synthetic.scenes(quick=s.quick, county=s.county)
    items, generated = [], 0.0
    for scene in plan:
        made = attempt(board, f"generating {scene.name}", lambda sc=scene: _sample(s, sc))
        if made is None:
            continue
        folder, generate_s = made
        generated += generate_s
        item = attempt(
            board,
            scene.name,
            lambda sc=scene, f=folder: synthetic.run_scene(sc, f, s.cache, s.detect, s.workers),
        )
        if item is not None:
            print(synthetic.scene_line(item), flush=True)
            items.append(item)
    if generated:
        print(f"  sample generation took {generated:.0f} s (not in the table's time)")
    seconds = time.perf_counter() - t0 - generated
    board.items["synthetic"] = items
    pooled = pooled_synthetic(items)
    board.figures |= {
        "synthetic_recall": pooled["recall"],
        "synthetic_fp_km2": pooled["fp_km2"],
        "offfarm_recall": pooled["offfarm_recall"],
        "seasonal_fp_km2": pooled["seasonal_fp_km2"],
    }
    target = "recall ≥ 0.97, ≤ 0.5 FP/km²"
    board.rows.append(
        Row("synthetic, all scenes", count(items, len(plan)), pooled["recall"], "recall",
            pooled["fp_km2"], target, seconds)
    )  # fmt: skip
    groups = {
        "  four bands": lambda i: i["bands"] == "rgbn" and i["size_px"] < 20_000,
        "  RGB-only": lambda i: i["bands"] == "rgb",
        "  county (20000 px)": lambda i: i["size_px"] >= 20_000,
    }
    for label, keep in groups.items():
        part = [i for i in items if keep(i)]
        if part:
            p = pooled_synthetic(part)
            board.rows.append(Row(label, str(len(part)), p["recall"], "recall", p["fp_km2"]))
    board.rows.append(
        Row("off-farmland subset", str(len(items)), pooled["offfarm_recall"], "recall",
            target="recall ≥ 0.90")
    )  # fmt: skip
    board.rows.append(
        Row("seasonal false patches", str(len(items)), math.nan, "", pooled["seasonal_fp_km2"])
    )


def _sample(s: Settings, scene) -> tuple[Path, float]:
    folder, seconds = synthetic.sample_folder(s.cache, scene)
    if seconds:
        print(f"  generated {scene.name} in {seconds:.0f} s", flush=True)
    return folder, seconds


def run_oscd(s: Settings, board: Board, executor) -> None:
    """The OSCD cities with ``eval_oscd``'s own functions and the scoreboard's detect."""
    t0 = time.perf_counter()
    folder = s.root / "oscd"
    cities = eval_oscd.find_cities(folder) if folder.is_dir() else []
    if not cities:
        print(f"  skipped: no OSCD cities under {folder}")
        return
    work = s.work / "oscd"
    results = []
    for city in cities:
        r = attempt(
            board, city.name,
            lambda c=city: eval_oscd.evaluate_city(c, s.detect, work, executor, s.workers),
        )  # fmt: skip
        if r is not None:
            results.append(r)
    seconds = time.perf_counter() - t0
    if results:
        print(eval_oscd.format_table(results))
    value, n = eval_oscd.mean_f1(results)
    labelled = [c for c in cities if c.label is not None]
    board.figures["oscd_f1"] = value
    board.rows.append(
        Row("OSCD development cities", count([0] * n, len(labelled)), value, "mean F1",
            target="mean F1 ≥ 0.40", seconds=seconds)
    )  # fmt: skip
    alarms = [r for r in results if r.scores is None]
    fp = sum(r.n_patches for r in alarms) / sum(r.area_km2 for r in alarms) if alarms else math.nan
    board.figures["norcia_fp_km2"] = fp
    names = ", ".join(r.city for r in alarms) or "norcia"
    board.rows.append(Row(names, str(len(alarms)), math.nan, "", fp, "≤ 0.5 FP/km²"))
    board.items["oscd"] = [_city_record(r) for r in results]


def _city_record(r) -> dict:
    record = {k: v for k, v in vars(r).items() if k != "scores"}
    return record | (r.scores.as_dict() if r.scores is not None else {})


def run_landsat(s: Settings, board: Board, executor) -> None:
    """The Nanjing Landsat TM pair, scored on its sampled labels."""
    t0 = time.perf_counter()
    pairs = data.find_landsat(s.root)
    if not pairs:
        print(f"  skipped: no Landsat pair under {s.root / data.LANDSAT_DIR}")
        return
    item = attempt(
        board, "nanjing",
        lambda: data.run_landsat(pairs[0], s.detect, s.work / "landsat", executor, s.workers),
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    items = [item] if item else []
    for i in items:
        print(
            f"  {i['name']}: precision {i['precision']:.3f} recall {i['recall']:.3f} "
            f"F1 {i['f1']:.3f} on {i['tp'] + i['fp'] + i['fn'] + i['tn']} labelled pixels; "
            f"{i['patches']} patches, mask covers {i['covered']:.1%} of the grid"
        )
    value = items[0]["f1"] if items else math.nan
    board.figures["landsat_f1"] = value
    board.items["landsat"] = items
    board.rows.append(
        Row("Landsat Nanjing (sampled)", count(items, 1), value, "F1",
            target="F1 ≥ 0.80", seconds=seconds)
    )  # fmt: skip


def run_pairs(s: Settings, board: Board, executor, dataset: str, limit: int | None, shifts=()):
    """Every pair of one RGB dataset; returns the per-pair records."""
    items = []
    pairs = data.find_pairs(s.root, dataset, limit)
    for index, pair in enumerate(pairs):
        item = attempt(
            board, f"{dataset}/{pair.name}",
            lambda p=pair, i=index: data.run_pair(
                p, i, s.rgb_detect, s.work / "rgb", executor, s.workers, shifts
            ),
        )  # fmt: skip
        if item is None:
            continue
        extra = "".join(
            f"  shift {k}: {item[f'f1_base{k}']:.3f}→{item[f'f1_shift{k}']:.3f}" for k in shifts
        )
        if item["covered"] < 1.0:
            extra += f"  (mask covers {item['covered']:.1%} of the label)"
        print(
            f"  {dataset}/{pair.name:<24} F1 {item['f1']:.3f} (P {item['precision']:.3f} "
            f"R {item['recall']:.3f}) patches {item['patches']:>3} {item['seconds']:5.1f} s{extra}",
            flush=True,
        )
        items.append(item)
    board.items[dataset] = items
    return items, len(pairs)


def run_levir(s: Settings, board: Board, executor) -> None:
    """LEVIR crops and whole tiles, and the misregistration test on the tiles."""
    t0 = time.perf_counter()
    shifts = (2,) if s.quick else SHIFTS_PX
    crops, n_crops = run_pairs(s, board, executor, "levir_samples", 3 if s.quick else None)
    tiles, n_tiles = run_pairs(s, board, executor, "levir_tiles", 2 if s.quick else None, shifts)
    seconds = time.perf_counter() - t0
    if not n_crops + n_tiles:
        print(f"  skipped: no LEVIR pairs under {s.root / data.RGB_DIR}")
        return
    both = mean_defined(i["f1"] for i in crops + tiles)
    board.figures["levir_f1"] = both
    board.rows += [
        Row("LEVIR crops + tiles", count(crops + tiles, n_crops + n_tiles), both, "mean F1",
            target="mean F1 ≥ 0.45", seconds=seconds),
        Row("  LEVIR crops", count(crops, n_crops), mean_defined(i["f1"] for i in crops), "mean F1"),
        Row("  LEVIR tiles", count(tiles, n_tiles), mean_defined(i["f1"] for i in tiles), "mean F1"),
    ]  # fmt: skip
    losses = []
    for k in shifts:
        loss = mean_defined(i[f"f1_base{k}"] - i[f"f1_shift{k}"] for i in tiles)
        losses.append(loss)
        board.rows.append(
            Row(f"  tiles shifted {k} px", str(len(tiles)), loss, "F1 loss", target="≤ 0.05")
        )
    board.figures["levir_shift_loss"] = max(losses) if tiles else math.nan


def run_dsifn(s: Settings, board: Board, executor) -> None:
    t0 = time.perf_counter()
    items, n = run_pairs(s, board, executor, "dsifn_samples", 3 if s.quick else None)
    if not n:
        print(f"  skipped: no DSIFN pairs under {s.root / data.RGB_DIR}")
        return
    value = mean_defined(i["f1"] for i in items)
    board.figures["dsifn_f1"] = value
    board.rows.append(
        Row("DSIFN crops (2 m assumed)", count(items, n), value, "mean F1",
            target="mean F1 ≥ 0.45", seconds=time.perf_counter() - t0)
    )  # fmt: skip


SECTIONS = {
    "synthetic": run_synthetic,
    "oscd": run_oscd,
    "landsat": run_landsat,
    "levir": run_levir,
    "dsifn": run_dsifn,
}


# --------------------------------------------------------------------------- report
def format_table(rows: list[Row]) -> str:
    """The summary table (dataset, n, F1 / recall, FP per km², target, time)."""

    def num(v: float, digits: int) -> str:
        return "-" if math.isnan(v) else f"{v:.{digits}f}"

    head = (
        f"{'dataset':<28} {'n':>6} {'value':>7} {'metric':<8} {'FP/km²':>7}  "
        f"{'target':<28} {'time':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        secs = "" if math.isnan(r.seconds) else f"{r.seconds:6.0f}s"
        lines.append(
            f"{r.dataset:<28} {r.n:>6} {num(r.value, 3):>7} {r.metric:<8} "
            f"{num(r.fp_km2, 2):>7}  {r.target:<28} {secs:>7}"
        )
    return "\n".join(lines)


def header(s: Settings, only: list[str], overridden: bool) -> str:
    if overridden:
        detect = (
            f"detect: OVERRIDDEN by --detect, NOT the defaults: "
            f"{yaml.safe_dump(s.detect, default_flow_style=True).strip()}"
        )
    else:
        detect = f"detect: the defaults (empty section, method {DetectConfig().method})"
    return (
        f"landwatch scoreboard — {detect}; RGB pairs: min_area_m2 {RGB_MIN_AREA_M2:g}\n"
        f"datasets: {', '.join(only)}{' (quick)' if s.quick else ''}; data: {s.root}; "
        f"cache: {s.cache}; workers: {s.workers}"
    )


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help=f"comma-separated datasets among {', '.join(DATASETS)}")
    parser.add_argument("--quick", action="store_true", help="fewer, smaller items")
    parser.add_argument("--no-county", action="store_true", help="skip the 20000 px scene")
    parser.add_argument("--detect", help="YAML mapping replacing the EMPTY detect section")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--json", type=Path, help="write every per-item figure here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.only = [n.strip() for n in args.only.split(",")] if args.only else list(DATASETS)
    unknown = [n for n in args.only if n not in DATASETS]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; expected among {', '.join(DATASETS)}")
    if args.detect is not None:
        given = yaml.safe_load(args.detect) or {}
        if not isinstance(given, dict):
            parser.error(f"--detect must be a YAML mapping, got {args.detect!r}")
        args.detect = given
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    level = logging.INFO if args.verbose else logging.ERROR
    logging.basicConfig(level=level, format="  %(name)s: %(message)s")
    logging.getLogger("scoreboard").setLevel(logging.INFO if args.verbose else logging.WARNING)
    detect = args.detect if args.detect is not None else {}
    rgb_detect = detect if "min_area_m2" in detect else {**detect, "min_area_m2": RGB_MIN_AREA_M2}
    args.cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=args.cache))
    s = Settings(detect, rgb_detect, data.data_root(), args.cache, work, args.workers,
                 args.quick, not args.no_county)  # fmt: skip
    print(header(s, args.only, args.detect is not None), flush=True)
    board = Board()
    start = time.perf_counter()
    try:
        with make_executor(args.workers) as executor:
            for name in args.only:
                print(f"\n== {name}", flush=True)
                SECTIONS[name](s, board, executor)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - start
    print()
    print(format_table(board.rows))
    for message in board.errors:
        print(f"error: {message}")
    print(f"wall time {total / 60:.1f} min")
    if args.json:
        record = {"header": header(s, args.only, args.detect is not None), "detect": detect,
                  "rgb_detect": rgb_detect, "figures": board.figures, "items": board.items,
                  "errors": board.errors, "seconds": total}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    print(summary_line(board.figures))
    return 1 if board.errors else 0


if __name__ == "__main__":
    sys.exit(main())
