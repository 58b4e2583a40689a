"""Importing field returns into the registry: the I/O around :mod:`pipeline.field`.

Each file is applied all-or-nothing; a rejected file leaves the registry untouched and gets a
rejection report (file, row, reason). The same file imported twice changes nothing (its
content fingerprint is recorded in the registry). Two entry points:

- :func:`import_returns` — ``landwatch field import FILE…`` (takes the workspace lock);
- :func:`import_inbox` — the nightly run's ``inbox`` stage: files dropped in the inbox are
  imported, then moved to ``inbox/done/`` or to ``inbox/rejected/`` with the rejection report
  beside them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.atomic import fingerprint_file
from pipeline.config import Config
from pipeline.errors import FieldReturnError, InputDataError
from pipeline.workspace import Workspace, WorkspaceLock

log = logging.getLogger(__name__)

RETURN_SUFFIXES = (".csv", ".txt", ".xlsx", ".shp", ".gpkg", ".zip")
"""Files the inbox picks up (a Shapefile's sidecar files travel with its .shp)."""


@dataclass(frozen=True)
class ImportResult:
    file: Path
    applied: bool
    message: str
    rejections: tuple[tuple[str, int | None, str], ...] = ()


def apply_files(
    state, files: list[Path], *, encoding: str | None, today: dt.date, run_id: str, now: str
):
    """Apply each file to ``state`` (pure apart from reading the files).

    Returns the new state and one :class:`ImportResult` per file; a rejected file leaves
    the state as it was before that file.
    """
    from pipeline.field import apply_return
    from pipeline.field_io import read_return

    results: list[ImportResult] = []
    for path in files:
        try:
            rows = read_return(path, encoding=encoding)
            state, summary = apply_return(
                state, rows, source_file=path.name, fingerprint=fingerprint_file(path),
                now=now, today=today, run_id=run_id,
            )  # fmt: skip
        except (FieldReturnError, InputDataError) as exc:
            # an unreadable file is rejected like a file with bad rows; the others go on
            reasons = getattr(exc, "rejections", None) or [(path.name, None, str(exc))]
            for file, row, reason in reasons:
                log.error("%s row %s: %s", file, row, reason)
            results.append(
                ImportResult(path, False, f"rejected, nothing applied: {exc}", tuple(reasons))
            )
        else:
            results.append(ImportResult(path, True, _describe(summary)))
    return state, results


def import_returns(
    cfg: Config, files: list[Path], *, encoding: str | None = None, today: dt.date | None = None
) -> list[ImportResult]:
    """``landwatch field import``: apply the files, write a rejection report per rejected file
    to ``{workspace}/rejections/``, and raise :class:`FieldReturnError` at the end if any file
    was rejected (the others are applied)."""
    from pipeline.field_io import write_rejections
    from pipeline.registry import load_registry, save_registry
    from pipeline.stages import new_run_id, utc_now

    ws = Workspace(cfg.workspace)
    with WorkspaceLock(ws):
        if not ws.registry.exists():
            raise FieldReturnError(
                f"no registry at {ws.registry}: run `landwatch run` before importing field returns"
            )
        state = load_registry(ws.registry, cfg.area.crs)
        state, results = apply_files(
            state, files, encoding=encoding or cfg.field_returns.encoding,
            today=today or dt.date.today(), run_id=new_run_id(), now=utc_now(),
        )  # fmt: skip
        save_registry(ws.registry, state)
    rejected = [r for r in results if not r.applied]
    if rejected:
        reports = [
            write_rejections(ws.root / "rejections" / f"{r.file.stem}.rejected.csv", r.rejections)
            for r in rejected
        ]
        n_rows = sum(len(r.rejections) for r in rejected)
        raise FieldReturnError(
            f"{len(rejected)} of {len(results)} file(s) rejected, nothing of them applied "
            f"({n_rows} bad row(s)); reasons in {', '.join(map(str, reports))}",
            [reason for r in rejected for reason in r.rejections],
        )
    return results


def inbox_files(inbox: Path) -> list[Path]:
    """Return files waiting in the inbox (not in done/ or rejected/), sorted by name."""
    if not inbox.is_dir():
        return []
    return sorted(p for p in inbox.iterdir() if p.is_file() and p.suffix.lower() in RETURN_SUFFIXES)


def import_inbox(
    cfg: Config, ws: Workspace, *, run_id: str, now: str, today: dt.date | None = None
) -> dict:
    """The ``inbox`` stage (the caller holds the lock): import, save, then move the files."""
    from pipeline.field_io import write_rejections
    from pipeline.registry import load_registry, save_registry

    inbox = cfg.field_returns.inbox
    files = inbox_files(inbox)
    if not files:
        return {"files": 0}
    state = load_registry(ws.registry, cfg.area.crs)
    state, results = apply_files(
        state, files, encoding=cfg.field_returns.encoding, today=today or dt.date.today(),
        run_id=run_id, now=now,
    )  # fmt: skip
    # the registry is saved before any file moves: a kill in between re-imports the file
    # next night, which its recorded fingerprint turns into a no-op
    save_registry(ws.registry, state)
    for result in results:
        folder = inbox / ("done" if result.applied else "rejected")
        folder.mkdir(exist_ok=True)
        for part in _with_sidecars(result.file):
            shutil.move(part, folder / part.name)
        if not result.applied:
            write_rejections(folder / f"{result.file.name}.rejected.csv", result.rejections)
            log.warning("inbox: %s rejected; see %s", result.file.name, folder)
    return {
        "files": len(results),
        "applied": sum(r.applied for r in results),
        "rejected": sum(not r.applied for r in results),
    }


def _with_sidecars(path: Path) -> list[Path]:
    if path.suffix.lower() != ".shp":
        return [path]
    return sorted(p for p in path.parent.glob(f"{path.stem}.*") if p.is_file())


def _describe(summary) -> str:
    if dataclasses.is_dataclass(summary):
        return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(summary).items())
    return str(summary)
