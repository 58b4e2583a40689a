"""Fault injection: a run killed with SIGKILL anywhere resumes and gives the same result.

Kill points: before every stage and after register (through the runner's failpoint), plus
several moments inside stages (by wall-clock delay). After each kill, a rerun must complete, the
registry must open and hold exactly the patches and events of an uninterrupted run, and the
report must be identical.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyogrio
import pytest

from pipeline.schema import EVENTS_TABLE, PATCHES_LAYER, P
from tests.samples import ROOT, write_sample_config

pytestmark = pytest.mark.slow
DATE = "2026-11-25"
STAGES = [
    "detect[2016_2017]",
    "classify[2016_2017]",
    "assign[2016_2017]",
    "register",
    "inbox",
    "export",
    "report",
]


def _run(folder: Path, env_extra: dict | None = None, kill_after_s: float | None = None) -> int:
    env = {**os.environ, **(env_extra or {})}
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        "run",
        "--config",
        str(folder / "config.yaml"),
        "--date",
        DATE,
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_after_s is not None:
        time.sleep(kill_after_s)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=300)


def _copy(sample_area, dest: Path) -> Path:
    """A private copy of the 500 px sample (seed 99) with its config, at ``dest``."""
    sample_area(500, 99, copy_to=dest)
    write_sample_config(dest, dest / "out")
    return dest


def _result(folder: Path):
    registry = folder / "out" / "registry.gpkg"
    patches = pyogrio.read_dataframe(registry, layer=PATCHES_LAYER).drop(columns=[P.UPDATED_AT])
    events = pyogrio.read_dataframe(registry, layer=EVENTS_TABLE, read_geometry=False)
    # times and run ids differ between runs by nature; what happened must not
    events = (
        events[["patch_id", "kind", "values_json"]]
        .sort_values(["patch_id", "kind"])
        .reset_index(drop=True)
    )
    rates = (folder / "out" / "reports" / DATE / "rates.csv").read_bytes()
    zips = {p.name: p.read_bytes() for p in (folder / "out" / "exports" / DATE).glob("*.zip")}
    return patches, events, rates, zips


def _assert_same(got, want):
    pd.testing.assert_frame_equal(got[0], want[0])
    pd.testing.assert_frame_equal(got[1], want[1])
    assert got[2] == want[2]
    assert got[3].keys() == want[3].keys()


def test_killed_runs_resume_to_the_same_result(sample_area, tmp_path):
    ref = _copy(sample_area, tmp_path / "ref")
    t0 = time.perf_counter()
    assert _run(ref) == 0
    duration = time.perf_counter() - t0
    want = _result(ref)

    survived = []
    # between stages: before each one (= after the previous one's record is saved), and after
    # register (registry saved, inbox/export/report not yet); inside stages: by delay
    points = [{"LANDWATCH_KILL_AT": f"before:{s}"} for s in STAGES]
    points.append({"LANDWATCH_KILL_AT": "after:register"})
    delays = [duration * f for f in (0.3, 0.5, 0.7, 0.9)]
    cases = [(p, None) for p in points] + [(None, d) for d in delays]
    for i, (env, delay) in enumerate(cases):
        folder = _copy(sample_area, tmp_path / f"case{i}")
        code = _run(folder, env, delay)
        assert code in (0, -signal.SIGKILL), f"case {i}: exit {code}"
        assert _run(folder) == 0, f"case {i} ({env or delay}): the rerun failed"
        _assert_same(_result(folder), want)
        survived.append(env or f"{delay:.1f}s")
    assert len(survived) == len(cases)
    print(f"{len(survived)} kill points survived: {survived}")


def test_pool_workers_end_when_the_run_is_killed(tmp_path):
    """A run killed with SIGKILL cannot shut its process pool down; its workers notice the
    run is gone and exit within a few seconds instead of holding their memory forever."""
    script = tmp_path / "pool.py"
    script.write_text(
        "import os, time\n"
        "from pipeline.ops.executor import make_executor\n"
        "if __name__ == '__main__':\n"
        "    with make_executor(2) as pool:\n"
        "        print(*sorted({pool.submit(os.getpid).result() for _ in range(8)}), flush=True)\n"
        "        time.sleep(600)\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert workers and all(_alive(p) for p in workers)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers), "pool workers outlived the killed run"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
