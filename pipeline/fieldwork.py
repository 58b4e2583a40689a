"""Importing field returns into the registry: the I/O around :mod:`pipeline.field`.

Each file is applied all-or-nothing under the workspace lock; a rejected file leaves the
registry untouched and gets a rejection report (file, row, reason) in
``{workspace}/rejections/``. The same file imported twice changes nothing (its content
fingerprint is recorded in the registry).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.atomic import fingerprint_file
from pipeline.config import Config
from pipeline.errors import FieldReturnError, InputDataError
from pipeline.workspace import Workspace, WorkspaceLock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportResult:
    file: Path
    applied: bool
    message: str
    rejection_report: Path | None = None


def import_returns(
    cfg: Config, files: list[Path], *, encoding: str | None = None, today: dt.date | None = None
) -> list[ImportResult]:
    """Apply each return file to the registry; raise :class:`FieldReturnError` at the end if
    any file was rejected (the others are applied)."""
    from pipeline.field import apply_return
    from pipeline.field_io import read_return, write_rejections
    from pipeline.registry import load_registry, save_registry
    from pipeline.stages import new_run_id, utc_now

    ws = Workspace(cfg.workspace)
    today = today or dt.date.today()
    run_id = new_run_id()
    results: list[ImportResult] = []
    rejected: list[tuple[str, int | None, str]] = []
    with WorkspaceLock(ws):
        if not ws.registry.exists():
            raise FieldReturnError(
                f"no registry at {ws.registry}: run `landwatch run` before importing field returns"
            )
        state = load_registry(ws.registry, cfg.area.crs)
        for path in files:
            try:
                rows = read_return(path, encoding=encoding)
                state, summary = apply_return(
                    state, rows, source_file=path.name, fingerprint=fingerprint_file(path),
                    now=utc_now(), today=today, run_id=run_id,
                )  # fmt: skip
            except (FieldReturnError, InputDataError) as exc:
                # an unreadable file is rejected like a file with bad rows; the others go on
                reasons = getattr(exc, "rejections", None) or [(path.name, None, str(exc))]
                report = write_rejections(
                    ws.root / "rejections" / f"{path.stem}.rejected.csv", reasons
                )
                rejected += reasons
                for file, row, reason in reasons:
                    log.error("%s row %s: %s", file, row, reason)
                results.append(
                    ImportResult(path, False, f"rejected, nothing applied: {exc}", report)
                )
            else:
                results.append(ImportResult(path, True, _describe(summary)))
        save_registry(ws.registry, state)
    if rejected:
        reports = ", ".join(str(r.rejection_report) for r in results if r.rejection_report)
        raise FieldReturnError(
            f"{sum(not r.applied for r in results)} of {len(results)} file(s) rejected "
            f"({len(rejected)} bad row(s)); see {reports}",
            rejected,
        )
    return results


def _describe(summary) -> str:
    if dataclasses.is_dataclass(summary):
        fields = dataclasses.asdict(summary)
        return ", ".join(f"{k}={v}" for k, v in fields.items())
    return str(summary)
