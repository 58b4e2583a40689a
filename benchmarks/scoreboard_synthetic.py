"""The synthetic section of the development scoreboard: hard samples, run up to ``register``.

Each :class:`Scene` (size, seed, bands) is generated once with
``SceneOptions.hard(bands=…)`` (every roof colour, new buildings off farmland next to
villages, haze, flooded paddies, film, the later epoch in another CRS with a sub-pixel
offset) into a cache folder whose name carries a fingerprint of the generator's source, so
a changed generator regenerates. The pipeline then runs up to ``register`` in a subprocess,
as ``eval_sample.py`` does, with the bundled ``config.yaml`` pointed at the sample and the
given ``detect`` section; the registry's patches are scored by
:func:`scoreboard_score.synthetic_figures`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyogrio
import yaml

from benchmarks.scoreboard_score import synthetic_figures
from pipeline.sample import generate_sample
from pipeline.schema import SEASONAL_LAYER, TRUTH_LAYER

log = logging.getLogger("scoreboard")

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = ("2016", "2017")
SAMPLE_CRS = "EPSG:4548"
BAND_INDEXES = {
    "rgbn": {"blue": 1, "green": 2, "red": 3, "nir": 4},
    "rgb": {"blue": 1, "green": 2, "red": 3},
}
COMPLETE = ".complete"


@dataclass(frozen=True)
class Scene:
    """One synthetic scene of the scoreboard."""

    size_px: int
    seed: int
    bands: str = "rgbn"
    """``rgbn`` (blue, green, red, nir) or ``rgb``."""

    @property
    def name(self) -> str:
        return f"{self.size_px}px_seed{self.seed}_{self.bands}"

    @property
    def county(self) -> bool:
        """A county-sized scene (at least 20000 px, 1600 km² at 2 m)."""
        return self.size_px >= 20_000


def scenes(*, quick: bool, county: bool) -> list[Scene]:
    """The scoreboard's scenes.

    Full: seeds 1–8 at 2500 px (25 km² each) with four bands, seeds 1–4 again RGB-only, and
    (unless ``county`` is false) one 20000 px county (1600 km², seed 2017). Quick: seeds 1
    and 2 at 1500 px with four bands and seed 1 RGB-only.
    """
    if quick:
        return [Scene(1500, 1), Scene(1500, 2), Scene(1500, 1, "rgb")]
    out = [Scene(2500, s) for s in range(1, 9)] + [Scene(2500, s, "rgb") for s in range(1, 5)]
    if county:
        out.append(Scene(20_000, 2017))
    return out


@functools.cache
def generator_fingerprint() -> str:
    """A short hash of the sample generator's source files (part of the cache key), taken
    once per process, when :mod:`pipeline.sample` is imported (at the top of this module)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "pipeline" / "sample").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


generator_fingerprint()  # now: the code imported above, not a later edit of it


def sample_folder(cache: Path, scene: Scene) -> tuple[Path, float]:
    """Generate ``scene`` into the cache unless already there.

    Returns
    -------
    folder : Path
    seconds : float
        Time spent generating (0 when the cached sample was used).

    Notes
    -----
    Folders of the same scene made by another version of the generator are removed.
    """
    folder = cache / "samples" / f"{scene.name}_{generator_fingerprint()}"
    if (folder / COMPLETE).exists():
        return folder, 0.0
    for stale in folder.parent.glob(f"{scene.name}_*"):
        shutil.rmtree(stale, ignore_errors=True)
    t0 = time.perf_counter()
    _generate(folder, scene)
    return folder, time.perf_counter() - t0


def _generate(folder: Path, scene: Scene) -> None:
    try:
        from pipeline.sample import SceneOptions
    except ImportError:  # a generator without the hard options: the default scene
        log.warning("pipeline.sample has no SceneOptions: %s is the default scene", scene.name)
        generate_sample(folder, size_px=scene.size_px, seed=scene.seed)
        return
    options = SceneOptions.hard(bands=scene.bands)
    generate_sample(folder, size_px=scene.size_px, seed=scene.seed, options=options)


def sample_config(folder: Path, run_dir: Path, scene: Scene, detect: dict, workers: int) -> Path:
    """``config.yaml`` pointed at the sample in ``folder`` with ``detect``; written in
    ``run_dir`` (the workspace is ``run_dir / "out"``)."""
    raw = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    raw["area"]["crs"] = SAMPLE_CRS
    raw["area"]["resolution_m"] = 2.0
    raw["imagery"]["epochs"] = {e: [str(folder / "imagery" / e / "*.tif")] for e in EPOCHS}
    raw["imagery"]["bands"] = BAND_INDEXES[scene.bands]
    raw["imagery"].pop("band_files", None)
    raw["imagery"]["nodata"] = 0
    for layer in raw["layers"].values():
        layer["path"] = str(folder / Path(layer["path"]).name)
    raw["detect"] = dict(detect)
    raw["run"] = {**(raw.get("run") or {}), "workers": workers}
    raw["workspace"] = str(run_dir / "out")
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def run_scene(scene: Scene, folder: Path, cache: Path, detect: dict, workers: int) -> dict:
    """Run the pipeline up to ``register`` on the sample of ``scene`` in ``folder`` (from
    :func:`sample_folder`) and score it; the run goes to ``cache / "runs"``."""
    run_dir = cache / "runs" / scene.name
    shutil.rmtree(run_dir, ignore_errors=True)
    config = sample_config(folder, run_dir, scene, detect, workers)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--config", str(config), "--until", "register"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"landwatch run failed on {scene.name}:\n{tail}")
    patches = pyogrio.read_dataframe(run_dir / "out" / "registry.gpkg", layer="patches")
    truth = pyogrio.read_dataframe(folder / "truth.gpkg", layer=TRUTH_LAYER)
    seasonal = pyogrio.read_dataframe(folder / "truth.gpkg", layer=SEASONAL_LAYER)
    district = pyogrio.read_dataframe(folder / "grids.gpkg", layer="district")
    area_km2 = float(district.geometry.area.sum()) / 1e6
    if patches.crs is not None:
        truth, seasonal = truth.to_crs(patches.crs), seasonal.to_crs(patches.crs)
    figures = synthetic_figures(patches, truth, seasonal, area_km2)
    return {
        "name": scene.name,
        "size_px": scene.size_px,
        "seed": scene.seed,
        "bands": scene.bands,
        **figures,
        "seconds": seconds,
        "sample": str(folder),
    }


def scene_line(item: dict) -> str:
    """One line of the per-scene listing."""
    return (
        f"  {item['name']:<26} found {item['found']:>3}/{item['targets']:<3} "
        f"off-farmland {item['offfarm_found']:>2}/{item['offfarm_targets']:<2} "
        f"patches {item['patches']:>4} false {item['false']:>3} "
        f"(seasonal {item['seasonal_false']:>3}) over {item['area_km2']:7.1f} km²  "
        f"{item['seconds']:6.1f} s"
    )
