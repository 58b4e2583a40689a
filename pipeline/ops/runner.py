"""The stage runner: decides what is stale, runs only that, and records what ran.

A :class:`Stage` declares its inputs (fingerprints), the parameters it reads and its outputs.
Before running it the runner compares them, plus the code version, with the stage's last
record in ``state.json``; a stage whose record matches and whose outputs exist is skipped,
otherwise the runner says *why* it reruns (DVC's lock-file idea). Records are written
atomically after each stage, so a killed run resumes at the first stage that did not finish.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pipeline
from pipeline.atomic import atomic_path
from pipeline.errors import LandwatchError, StageError
from pipeline.ops.workspace import Workspace

log = logging.getLogger(__name__)

FAULT_ENV = "LANDWATCH_KILL_AT"
"""Fault injection for the crash-safety tests: ``before:<stage id>`` or ``after:<stage id>``
makes the process SIGKILL itself at that point (never set it in production)."""


def _failpoint(where: str, stage_id: str) -> None:
    if os.environ.get(FAULT_ENV) == f"{where}:{stage_id}":
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class Stage:
    """One unit of work of the pipeline.

    ``inputs`` returns ``{name: fingerprint}``; ``params`` returns the parameters the stage
    reads (plain data); ``outputs`` lists the files or folders it writes; ``run`` does the
    work and returns counts for the run record.
    """

    id: str
    inputs: Callable[[], dict[str, str]]
    params: Callable[[], Any]
    outputs: Callable[[], list[Path]]
    run: Callable[[], dict[str, Any]]
    consumes_inputs: bool = False
    """The stage moves its inputs away (the inbox): record them as they are after it ran."""
    describe: Callable[[dict[str, Any]], str] | None = None
    """The counts ``run`` returned, said in one line for the console and the log."""


@dataclass
class StageOutcome:
    id: str
    status: str  # "ran", "skipped", "would run", "failed"
    reason: str
    seconds: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    """What the stage did, in one line (:attr:`Stage.describe` of its counts), when it ran."""


def code_version() -> str:
    """Package version plus a hash of the package's source, so edited code reruns stages."""
    root = Path(pipeline.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".j2") and "__pycache__" not in path.parts:
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return f"{pipeline.__version__}+{digest.hexdigest()[:12]}"


def params_hash(params: Any) -> str:
    text = json.dumps(params, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_state(ws: Workspace) -> dict[str, dict]:
    if not ws.state_file.exists():
        return {}
    try:
        return json.loads(ws.state_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        # state.json is written atomically, so this is a hand edit; rerunning is always safe
        log.warning("%s is not valid JSON; every stage will rerun", ws.state_file)
        return {}


def save_state(ws: Workspace, state: dict[str, dict]) -> None:
    with atomic_path(ws.state_file) as tmp:
        tmp.write_text(
            json.dumps(state, indent=1, sort_keys=True, ensure_ascii=False), encoding="utf-8"
        )


class MissingInput(StageError):
    """A stage's input file does not exist (yet): an earlier stage makes it."""

    def __init__(self, stage_id: str, path: str):
        super().__init__(
            f"stage {stage_id}: input {path} does not exist; it is made by an earlier stage: "
            "run those first"
        )
        self.stage_id = stage_id
        self.path = path


def stale_reason(stage: Stage, record: dict | None, version: str) -> tuple[str | None, dict, str]:
    """Why ``stage`` must run (None when it is up to date), its inputs and its params hash.

    Raises
    ------
    MissingInput
        An input file of the stage does not exist (an earlier stage has not made it yet).
    """
    try:
        inputs = stage.inputs()
    except FileNotFoundError as exc:
        raise MissingInput(stage.id, str(exc.filename or exc)) from exc
    phash = params_hash(stage.params())
    if record is None:
        return "no earlier run", inputs, phash
    if record.get("status") != "done":
        return "did not finish last time", inputs, phash
    old = record.get("inputs", {})
    changed = sorted(k for k in inputs.keys() | old.keys() if inputs.get(k) != old.get(k))
    if changed:
        shown = ", ".join(changed[:3]) + (
            f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        )
        return f"inputs changed: {shown}", inputs, phash
    if record.get("params") != phash:
        return "parameters changed", inputs, phash
    if record.get("code_version") != version:
        return "code changed", inputs, phash
    missing = [p for p in stage.outputs() if not p.exists()]
    if missing:
        return f"output missing: {missing[0]}", inputs, phash
    return None, inputs, phash


def run_stages(
    ws: Workspace,
    stages: Sequence[Stage],
    *,
    force: bool = False,
    dry_run: bool = False,
    on_stage: Callable[[StageOutcome], None] | None = None,
) -> list[StageOutcome]:
    """Run the stale stages in order; the caller holds the workspace lock.

    A stage whose upstream ran is checked again against its own inputs (which the upstream
    may have changed), so only what really changed reruns.

    With ``dry_run`` nothing is run or written: a stage whose input an earlier stage has
    not made yet (a fresh workspace) *would run*, and the reason names that input and the
    stage that makes it. Without ``dry_run`` such a stage is an error (:class:`StageError`)
    that says to run the earlier stages first.
    """
    version = code_version()
    state = load_state(ws)
    outcomes: list[StageOutcome] = []
    for stage in stages:
        try:
            reason, inputs, phash = stale_reason(stage, state.get(stage.id), version)
        except MissingInput as exc:
            if not dry_run:
                raise StageError(
                    f"stage {stage.id}: its input {_shown(exc.path, ws)} does not exist; it is "
                    "made by an earlier stage: run those first (without --from)"
                ) from exc
            outcome = StageOutcome(stage.id, "would run", _not_made_yet(exc.path, ws, stages))
            outcomes.append(outcome)
            if on_stage:
                on_stage(outcome)
            continue
        if force and reason is None:
            reason = "forced"
        if reason is None:
            outcome = StageOutcome(stage.id, "skipped", "up to date")
        elif dry_run:
            outcome = StageOutcome(stage.id, "would run", reason)
        else:
            log.info("stage %s: running (%s)", stage.id, reason)
            state[stage.id] = {"status": "running", "started": time.time()}
            save_state(ws, state)
            _failpoint("before", stage.id)
            t0 = time.perf_counter()
            try:
                counts = stage.run() or {}
            except LandwatchError as exc:
                _record_failure(ws, state, stage.id, exc)
                raise StageError(f"stage {stage.id} failed: {exc}") from exc
            except Exception as exc:
                _record_failure(ws, state, stage.id, exc)
                raise StageError(f"stage {stage.id} failed: {type(exc).__name__}: {exc}") from exc
            seconds = time.perf_counter() - t0
            if stage.consumes_inputs:
                inputs = stage.inputs()
            state[stage.id] = {
                "status": "done",
                "inputs": inputs,
                "params": phash,
                "code_version": version,
                "finished": time.time(),
                "seconds": round(seconds, 3),
                "counts": counts,
            }
            save_state(ws, state)
            _failpoint("after", stage.id)
            summary = stage.describe(counts) if stage.describe else ""
            outcome = StageOutcome(stage.id, "ran", reason, seconds, counts, summary)
        outcomes.append(outcome)
        if on_stage:
            on_stage(outcome)
    return outcomes


def _shown(path: str, ws: Workspace) -> str:
    """``path`` relative to the workspace when inside it (shorter in messages)."""
    try:
        return Path(path).resolve().relative_to(ws.root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _not_made_yet(path: str, ws: Workspace, stages: Sequence[Stage]) -> str:
    """The dry-run reason of a stage whose input ``path`` does not exist yet."""
    target = Path(path).resolve()
    makers = [s.id for s in stages if target in {Path(p).resolve() for p in s.outputs()}]
    made_by = f" (made by {makers[0]})" if makers else ""
    return f"input {_shown(path, ws)} not made yet{made_by}"


def _record_failure(ws: Workspace, state: dict, stage_id: str, exc: BaseException) -> None:
    state[stage_id] = {
        "status": "failed",
        "error": f"{type(exc).__name__}: {exc}",
        "finished": time.time(),
    }
    save_state(ws, state)
    # the CLI prints the error itself: the console skips this record, the run log keeps it
    log.error("stage %s failed: %s", stage_id, exc, extra={"reported": True})


def stage_status(ws: Workspace, stages: Iterable[Stage]) -> list[StageOutcome]:
    """done / stale (with the reason) / failed for each stage, without running anything."""
    version = code_version()
    state = load_state(ws)
    stages = list(stages)
    out = []
    for stage in stages:
        record = state.get(stage.id)
        if record and record.get("status") == "failed":
            out.append(StageOutcome(stage.id, "failed", record.get("error", "")))
            continue
        try:
            reason, _, _ = stale_reason(stage, record, version)
        except MissingInput as exc:
            reason = _not_made_yet(exc.path, ws, stages)
        except LandwatchError as exc:
            reason = f"inputs unreadable: {exc}"
        out.append(
            StageOutcome(stage.id, "done" if reason is None else "stale", reason or "up to date")
        )
    return out
