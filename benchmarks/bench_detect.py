"""Benchmark: the detect stage (align + detect + vectorize) against a naive whole-array script.

Builds once, cached in ``--data`` (default ``/tmp/landwatch-bench``), a pair of
``--size`` × ``--size`` (default 10240²) 4-band uint16 GeoTIFFs, deflate, tiled 512, on one
grid at 2 m: smooth field parcels with a slow illumination gradient and sensor noise; in the
second epoch a gain/offset change, seasonal change on some parcels and new roof rectangles.

Then, each in its own subprocess (so peak memory is measured per contender):

(a) ``landwatch``: :func:`pipeline.detection.pair.detect_pair` with a Config built in code with
    the default detect setting (``method: auto``, which for these blue, green, red, nir bands
    is the ``rgbn`` profile: ``novelty``, fixed cut 6 with hysteresis), ``--workers``
    processes, ``--block`` px blocks: what a user who leaves ``detect`` empty gets;
(b) ``naive``: read both epochs whole, z-score in float64, CVA, Otsu, binary opening,
    :func:`rasterio.features.shapes` — the script people write first;
(c) ``decode``: only decoding both epochs to float32 in ``--workers`` processes — the
    ceiling any detector reading these files can reach;
(d) GDAL command-line tools (``gdal_calc.py`` + ``gdal_polygonize.py``) if installed.

Wall time and peak RSS are measured from outside: the parent samples the summed RSS of the
child's whole process tree (workers included) from ``/proc`` every 50 ms, and also reports
``ru_maxrss`` of the largest single process from ``os.wait4``.

Usage::

    python benchmarks/bench_detect.py [--size 10240] [--data DIR] [--workers 2] [--block 1024]
                                      [--skip-naive] [--repeat 1]

``--repeat N`` runs landwatch and the decode ceiling N times each, alternating, and keeps the
best of each (other processes on the machine slow single runs by tens of per cent).

The last line is machine-readable:
``landwatch_mpx_s=… decode_mpx_s=… share_of_decode=… naive_mpx_s=… speedup=…
landwatch_peak_mb=…`` (``share_of_decode``: landwatch's rate over the decode ceiling measured
in the same run; peak MB: the summed RSS of landwatch's process tree).
Mpx/s counts pixels of the target grid (each is read from both epochs: "pair-Mpx/s").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CRS = "EPSG:32650"
RES = 2.0
X0, Y0 = 500000.0, 4000000.0
TILE = 512
BANDS = {"blue": 1, "green": 2, "red": 3, "nir": 4}
PARCEL_PX = (96, 160)  # parcel height, width
ROOF = (2200, 2300, 2400, 2600)


# --------------------------------------------------------------------------- data
def build_data(folder: Path, size: int, seed: int = 0) -> tuple[Path, Path]:
    """Write (once) the before/after pair of ``size``² px; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / f"before_{size}.tif", folder / f"after_{size}.tif")
    if all(p.exists() for p in paths):
        return paths
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    ph, pw = PARCEL_PX
    npr, npc = -(-size // ph), -(-size // pw)
    # parcel spectra: vegetation, soil or crops of varying brightness
    kinds = np.array(
        [(400, 700, 500, 3000), (1000, 1400, 1900, 2300), (600, 900, 800, 2200)], np.float32
    )
    kind = rng.integers(0, 3, size=(npr, npc))
    spectra_a = kinds[kind] * rng.uniform(0.85, 1.15, size=(npr, npc, 1)).astype(np.float32)
    seasonal = rng.random((npr, npc)) < 0.1  # some parcels harvested / sown in between
    spectra_b = spectra_a.copy()
    spectra_b[seasonal] = kinds[(kind[seasonal] + 1) % 3]
    n_rect = max(4, size * size // 50_000)
    rects = np.column_stack(
        [rng.integers(0, size - 40, n_rect), rng.integers(0, size - 40, n_rect)]
    )
    rect_size = rng.integers(5, 40, size=(n_rect, 2))
    transform = Affine(RES, 0.0, X0, 0.0, -RES, Y0)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 4,
        "dtype": "uint16",
        "crs": CRS,
        "transform": transform,
        "nodata": 0,
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    cols = np.arange(size)
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        for epoch, (path, spectra) in enumerate(zip(paths, (spectra_a, spectra_b))):
            tmp = path.with_suffix(".part.tif")
            with rasterio.open(tmp, "w", **profile) as dst:
                for r0 in range(0, size, TILE):
                    rows = np.arange(r0, min(r0 + TILE, size))
                    img = spectra[rows[:, None] // ph, cols[None, :] // pw]  # (h, w, 4)
                    img = np.moveaxis(img, -1, 0)
                    shade = 1.0 + 0.08 * np.sin(rows / 900.0)[:, None] * np.cos(cols / 1300.0)
                    img = img * shade.astype(np.float32)
                    if epoch == 1:
                        img = img * np.float32(1.05) + np.float32(20.0)
                        for (rr, cc), (hh, ww) in zip(rects, rect_size):
                            if rr + hh <= r0 or rr >= rows[-1] + 1:
                                continue
                            sl = slice(max(rr, r0) - r0, min(rr + hh, rows[-1] + 1) - r0)
                            img[:, sl, cc : cc + ww] = np.array(ROOF, np.float32)[:, None, None]
                    noise_rng = np.random.default_rng([seed, epoch, r0])
                    img += noise_rng.standard_normal(img.shape, dtype=np.float32) * 40.0
                    dst.write(
                        np.clip(np.rint(img), 1, 10000).astype(np.uint16),
                        window=((r0, r0 + len(rows)), (0, size)),
                    )
            os.replace(tmp, path)
    return paths


# --------------------------------------------------------------------------- contenders
def run_landwatch(before: Path, after: Path, out: Path, workers: int, block: int) -> dict:
    """The detect stage as ``landwatch run`` runs it."""
    from pipeline.config import (
        AreaConfig,
        Config,
        DetectConfig,
        ImageryConfig,
        LayerConfig,
        LayersConfig,
        RunConfig,
    )
    from pipeline.detection.pair import detect_pair
    from pipeline.ops.executor import make_executor

    dummy = LayerConfig(path=out / "unused.gpkg", code_field="code", name_field="name")
    cfg = Config(
        area=AreaConfig(name="bench", county_code="130609", crs=CRS, resolution_m=RES),
        imagery=ImageryConfig(
            epochs={"a": (before.name,), "b": (after.name,)},
            bands=dict(BANDS),
            nodata=0,
            base_dir=before.parent,
        ),
        layers=LayersConfig(township=dummy, village=dummy),
        detect=DetectConfig(block_px=block),  # the default setting (method auto)
        run=RunConfig(workers=workers),
    )
    t0 = time.perf_counter()
    with make_executor(workers) as ex:
        t1 = time.perf_counter()
        res = detect_pair(cfg, ("a", "b"), out, ex)
    t2 = time.perf_counter()
    timings = {
        k: round(v, 3) if isinstance(v, float) else v for k, v in res.stats["timings"].items()
    }
    timings["pool_start_s"] = round(t1 - t0, 3)
    timings["detect_pair_s"] = round(t2 - t1, 3)
    return {"n_patches": len(res.detections), "method": res.stats["method"], "timings": timings}


def run_naive(before: Path, after: Path, out: Path) -> dict:
    """Whole-array numpy/rasterio/scikit-image: what one writes first."""
    import rasterio
    import shapely
    from rasterio.features import shapes
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    t = {}
    t0 = time.perf_counter()
    with rasterio.open(before) as src:
        a = src.read().astype(np.float64)
        transform = src.transform
    with rasterio.open(after) as src:
        b = src.read().astype(np.float64)
    t["read_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    valid = (a != 0).all(axis=0) & (b != 0).all(axis=0)
    za = (a - a.mean(axis=(1, 2), keepdims=True)) / a.std(axis=(1, 2), keepdims=True)
    zb = (b - b.mean(axis=(1, 2), keepdims=True)) / b.std(axis=(1, 2), keepdims=True)
    score = np.sqrt(((zb - za) ** 2).sum(axis=0))
    del a, b, za, zb
    t["score_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cut = threshold_otsu(score[valid])
    mask = ndimage.binary_opening(
        (score > cut) & valid, structure=ndimage.generate_binary_structure(2, 1)
    )
    t["threshold_open_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    polys = [
        shapely.geometry.shape(g)
        for g, _ in shapes(mask.astype(np.uint8), mask=mask, transform=transform)
    ]
    t["shapes_s"] = time.perf_counter() - t0
    keep = [p for p in polys if p.area >= 200.0]
    t["total_s"] = sum(t.values())
    return {"n_patches": len(keep), "timings": {k: round(v, 3) for k, v in t.items()}}


def run_decode(before: Path, after: Path, out: Path, workers: int) -> dict:
    """The ceiling: decode both epochs to float32 (what the detect stage must read), in
    ``workers`` processes each decoding column strips top to bottom, nothing else."""
    from concurrent.futures import ProcessPoolExecutor

    import rasterio

    with rasterio.open(before) as src:
        width = src.width
    step = -(-width // max(workers, 1))
    jobs = [
        (str(p), c, min(step, width - c)) for p in (before, after) for c in range(0, width, step)
    ]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_decode_strip, jobs[:workers]))  # start the workers (imports)
        t0 = time.perf_counter()
        list(pool.map(_decode_strip, jobs))
        seconds = time.perf_counter() - t0
    return {"n_patches": -1, "timings": {"total_s": round(seconds, 3)}}


def _decode_strip(job: tuple[str, int, int]) -> int:
    import rasterio
    from rasterio.windows import Window

    path, col, width = job
    with rasterio.open(path) as src:
        buf = np.empty((src.count, TILE, width), np.float32)
        for row in range(0, src.height, TILE):
            h = min(TILE, src.height - row)
            src.read(window=Window(col, row, width, h), out=buf[:, :h])
    return width


def gdal_commands(before: Path, after: Path, out: Path) -> list[list[str]] | None:
    """GDAL's own tools: ``gdal_calc.py`` (a red-band difference cut, the simplest change
    mask) then ``gdal_polygonize.py``; None when the tools are not installed."""
    calc, poly = shutil.which("gdal_calc.py"), shutil.which("gdal_polygonize.py")
    if not calc or not poly:
        return None
    mask = out / "gdal_mask.tif"
    return [
        [
            calc,
            "--quiet",
            "--overwrite",
            "--type=Byte",
            "-A",
            str(before),
            "--A_band=3",
            "-B",
            str(after),
            "--B_band=3",
            f"--outfile={mask}",
            "--calc=abs(B.astype(float32)-A.astype(float32))>600",
            "--co=TILED=YES",
            "--co=COMPRESS=DEFLATE",
        ],
        [poly, "-q", str(mask), "-f", "GPKG", str(out / "gdal.gpkg")],
    ]


# --------------------------------------------------------------------------- measuring
RSS_SAMPLE_S = 0.05
"""How often the parent samples the RSS of the measured process tree."""
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _tree_rss_kb(root: int) -> int:
    """Summed resident memory (kB) of ``root`` and all its descendants.

    From ``/proc/<pid>/stat`` (parent pid and resident pages): a sample costs well under a
    millisecond, so sampling steals next to no CPU from the contender it measures (parsing
    every ``status`` file took ~4 ms, a sixth of a core at 20 ms intervals)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rindex(b")") + 2 :].split()  # after "pid (comm) "
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * PAGE_KB
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``; wall time, peak summed RSS of its process tree, max single ru_maxrss,
    and the JSON its last stdout line holds (if any)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss_kb(proc.pid))
            done.wait(RSS_SAMPLE_S)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    thread.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed with exit code {proc.returncode}")
    lines = [ln for ln in out.splitlines() if ln.strip()]
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    result.update(wall_s=wall, peak_tree_mb=peak[0] / 1024, maxrss_one_mb=usage.ru_maxrss / 1024)
    return result


def _child(args: argparse.Namespace) -> int:
    """Entry point of the measured subprocesses: run one contender, print JSON."""
    logging.basicConfig(level=logging.WARNING)
    before, after = build_data(args.data, args.size)
    out = Path(tempfile.mkdtemp(prefix=f"{args.child}-", dir=args.data))
    try:
        if args.child == "landwatch":
            result = run_landwatch(before, after, out, args.workers, args.block)
        elif args.child == "decode":
            result = run_decode(before, after, out, args.workers)
        else:
            result = run_naive(before, after, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10240, help="grid side in pixels")
    parser.add_argument("--data", type=Path, default=Path("/tmp/landwatch-bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of landwatch and of decode (best kept)"
    )
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--child", choices=["landwatch", "naive", "decode"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)

    t = time.perf_counter()
    before, after = build_data(args.data, args.size)
    print(f"data: {before.name}, {after.name} in {args.data} ({time.perf_counter() - t:.1f} s)")
    mpx = args.size * args.size / 1e6
    base = [sys.executable, __file__, "--size", str(args.size), "--data", str(args.data)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rows = []
    lw_cmd = [*base, "--child", "landwatch", "--workers", str(args.workers)]
    lw_cmd += ["--block", str(args.block)]
    decode_cmd = [*base, "--child", "decode", "--workers", str(args.workers)]
    lw_runs, decode_runs = [], []
    for _ in range(args.repeat):  # alternating: both see the same load on the machine
        lw_runs.append(measure(lw_cmd, env))
        decode_runs.append(measure(decode_cmd, env))
    lw = min(lw_runs, key=lambda r: r["timings"]["detect_pair_s"])
    decode = min(decode_runs, key=lambda r: r["timings"]["total_s"])
    rows.append(("landwatch", lw))
    rows.append(("decode", decode))
    naive = None
    if not args.skip_naive:
        naive = measure([*base, "--child", "naive"], env)
        rows.append(("naive", naive))
    with tempfile.TemporaryDirectory(dir=args.data) as tmp:
        cmds = gdal_commands(before, after, Path(tmp))
        if cmds is None:
            print("gdal: gdal_calc.py / gdal_polygonize.py not installed; skipped")
        else:
            t0 = time.perf_counter()
            for cmd in cmds:
                subprocess.run(cmd, check=True)
            rows.append(
                (
                    "gdal",
                    {
                        "wall_s": time.perf_counter() - t0,
                        "peak_tree_mb": float("nan"),
                        "maxrss_one_mb": float("nan"),
                        "n_patches": -1,
                    },
                )
            )

    print(
        f"\n{args.size}x{args.size} px pair ({mpx:.1f} Mpx), workers={args.workers}, "
        f"block={args.block}"
    )
    print(
        f"{'contender':<10} {'wall s':>8} {'Mpx/s':>8} {'peak tree MB':>13} "
        f"{'max 1 proc MB':>14} {'patches':>8}"
    )
    for name, r in rows:
        print(
            f"{name:<10} {r['wall_s']:8.2f} {mpx / r['wall_s']:8.2f} {r['peak_tree_mb']:13.0f} "
            f"{r['maxrss_one_mb']:14.0f} {r.get('n_patches', -1):8d}"
        )
    print(f"landwatch method: {lw.get('method')} (the default, method auto)")
    print("landwatch timings:", json.dumps(lw["timings"]))
    if naive:
        print("naive timings:", json.dumps(naive["timings"]))
    # the stage itself (detect_pair), not interpreter start-up and imports
    lw_s = lw["timings"]["detect_pair_s"]
    lw_rate = mpx / lw_s
    naive_rate = mpx / naive["timings"]["total_s"] if naive else float("nan")
    print(
        f"rates below: in-process stage time (landwatch detect_pair {lw_s:.2f} s, naive "
        f"{naive['timings']['total_s'] if naive else float('nan'):.2f} s); the table's wall "
        "time adds interpreter start-up, imports and the worker pool"
    )
    decode_rate = mpx / decode["timings"]["total_s"]
    print(
        f"decoding the pair alone (the ceiling, {args.workers} processes): "
        f"{decode_rate:.1f} Mpx/s; landwatch reaches {100 * lw_rate / decode_rate:.0f} % of it"
    )
    print(
        f"landwatch_mpx_s={lw_rate:.2f} decode_mpx_s={decode_rate:.2f} "
        f"share_of_decode={lw_rate / decode_rate:.3f} naive_mpx_s={naive_rate:.2f} "
        f"speedup={lw_rate / naive_rate:.2f} landwatch_peak_mb={lw['peak_tree_mb']:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
