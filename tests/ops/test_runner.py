"""The stage runner reruns exactly what is stale, says why, and records failures."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from pipeline.errors import StageError, WorkspaceLockedError
from pipeline.ops.runner import Stage, run_stages, stage_status
from pipeline.ops.workspace import Workspace, WorkspaceLock


def _stages(ws: Workspace, source, params: dict, calls: list[str], fail: bool = False):
    """Two toy stages: copy source -> a.txt, then a.txt -> b.txt (upper-cased)."""
    a, b = ws.root / "a.txt", ws.root / "b.txt"

    def run_a():
        calls.append("a")
        a.write_text(source.read_text())
        return {"chars": len(a.read_text())}

    def run_b():
        calls.append("b")
        if fail:
            raise RuntimeError("boom")
        b.write_text(a.read_text().upper())
        return {}

    return [
        Stage("a", lambda: {"src": source.read_text()}, lambda: params, lambda: [a], run_a),
        Stage(
            "b", lambda: {"a": a.read_text() if a.exists() else ""}, lambda: {}, lambda: [b], run_b
        ),
    ]


def test_second_run_skips_and_changes_rerun_only_what_is_stale(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.ensure()
    src = tmp_path / "src.txt"
    src.write_text("x")
    calls: list[str] = []
    first = run_stages(ws, _stages(ws, src, {"k": 1}, calls))
    assert [o.status for o in first] == ["ran", "ran"] and first[0].reason == "no earlier run"
    assert first[0].counts == {"chars": 1}

    again = run_stages(ws, _stages(ws, src, {"k": 1}, calls))
    assert [o.status for o in again] == ["skipped", "skipped"] and calls == ["a", "b"]

    # a parameter of stage a changed: a reruns; b reruns only if its input changed (it did not)
    changed = run_stages(ws, _stages(ws, src, {"k": 2}, calls))
    assert [(o.status, o.reason) for o in changed] == [
        ("ran", "parameters changed"),
        ("skipped", "up to date"),
    ]

    src.write_text("yy")
    changed = run_stages(ws, _stages(ws, src, {"k": 2}, calls))
    assert [o.reason for o in changed] == ["inputs changed: src", "inputs changed: a"]
    assert (ws.root / "b.txt").read_text() == "YY"

    (ws.root / "b.txt").unlink()
    dry = run_stages(ws, _stages(ws, src, {"k": 2}, calls), dry_run=True)
    assert [o.status for o in dry] == ["skipped", "would run"] and dry[1].reason.startswith(
        "output missing"
    )
    assert not (ws.root / "b.txt").exists()  # a dry run changes nothing
    forced = run_stages(ws, _stages(ws, src, {"k": 2}, calls), force=True)
    assert [o.reason for o in forced] == ["forced", "output missing: " + str(ws.root / "b.txt")]


def test_failure_is_recorded_and_named(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.ensure()
    src = tmp_path / "src.txt"
    src.write_text("x")
    with pytest.raises(StageError, match="stage b failed: RuntimeError: boom"):
        run_stages(ws, _stages(ws, src, {}, [], fail=True))
    state = json.loads(ws.state_file.read_text())
    assert state["a"]["status"] == "done" and state["b"]["status"] == "failed"
    status = {o.id: o.status for o in stage_status(ws, _stages(ws, src, {}, []))}
    assert status == {"a": "done", "b": "failed"}
    # the next run resumes: a is skipped, b reruns
    outcomes = run_stages(ws, _stages(ws, src, {}, []))
    assert [o.status for o in outcomes] == ["skipped", "ran"]


def _chain(ws: Workspace, calls: list[str]) -> list[Stage]:
    """Stage a writes a.txt; stage b fingerprints a.txt like the real stages (an open that
    fails while a.txt does not exist)."""
    a = ws.root / "a.txt"

    def run_a():
        calls.append("a")
        a.write_text("made")
        return {}

    return [
        Stage("a", lambda: {}, lambda: {}, lambda: [a], run_a),
        Stage("b", lambda: {"a": a.read_text()}, lambda: {}, lambda: [], lambda: calls.append("b")),
    ]


def test_dry_run_on_a_fresh_workspace_names_the_inputs_not_made_yet(tmp_path):
    """A dry run (and ``status``) on a workspace that does not exist says every stage would
    run and why, naming the input an earlier stage makes; it runs and writes nothing."""
    ws = Workspace(tmp_path / "ws")
    calls: list[str] = []
    dry = run_stages(ws, _chain(ws, calls), dry_run=True)
    assert [(o.status, o.reason) for o in dry] == [
        ("would run", "no earlier run"),
        ("would run", "input a.txt not made yet (made by a)"),
    ]
    status = stage_status(ws, _chain(ws, calls))
    assert [o.status for o in status] == ["stale", "stale"] and "a.txt" in status[1].reason
    assert calls == [] and not ws.root.exists()
    ws.ensure()
    outcomes = run_stages(ws, _chain(ws, calls))
    assert [o.status for o in outcomes] == ["ran", "ran"] and calls == ["a", "b"]


def test_a_stage_whose_input_is_missing_fails_clearly(tmp_path):
    """Run alone (``--from b``) before stage a ever ran, stage b stops with an error naming
    its missing input and what to do, instead of a FileNotFoundError traceback."""
    ws = Workspace(tmp_path / "ws")
    ws.ensure()
    with pytest.raises(StageError, match=r"input a\.txt does not exist.*earlier stage"):
        run_stages(ws, _chain(ws, [])[1:])


def test_lock_is_exclusive_and_released_when_holder_dies(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with WorkspaceLock(ws), pytest.raises(WorkspaceLockedError, match="in use by another"):
        WorkspaceLock(ws).__enter__()
    # a process killed while holding the lock leaves no stale lock behind
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from pipeline.ops.workspace import Workspace, WorkspaceLock
        WorkspaceLock(Workspace(Path({str(ws.root)!r}))).__enter__()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -9
    assert (ws.root / ".lock").read_text()  # the dead holder's note is still there
    with WorkspaceLock(ws):  # ... but the lock itself is free
        pass
