"""Importing field returns into the registry: the I/O around :mod:`pipeline.registry.field_returns`.

Each file is applied all-or-nothing; a rejected file leaves the registry untouched and gets a
rejection report (file, row, reason). The same file imported twice changes nothing (its
content fingerprint is recorded in the registry). Two entry points:

- :func:`import_returns` — ``landwatch field import FILE…`` (takes the workspace lock);
- :func:`import_inbox` — the nightly run's ``inbox`` stage: files dropped in the inbox are
  imported, then moved to ``inbox/done/`` or to ``inbox/rejected/`` with the rejection report
  beside them.

No inbox file is left behind in silence: a file of a format the importer does not read
(``.doc``, ``.pdf``, a lone ``.dbf``, ...) is moved to ``inbox/rejected/`` too, with a report
naming the formats that are read, and counted as ``unsupported``. Only hidden files and
Office lock files (``.DS_Store``, ``~$return.xlsx``) and sub-folders stay where they are,
each with a WARNING in the log. No file is lost either: a file whose name is taken in
``done/`` or ``rejected/`` (a township's second return under the same name) is moved in with
the run id added to its name.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.atomic import fingerprint_file
from pipeline.config import Config
from pipeline.errors import FieldReturnError, InputDataError
from pipeline.ops import runlog
from pipeline.ops.workspace import Workspace, WorkspaceLock
from pipeline.registry.field_returns import ImportSummary, apply_return
from pipeline.registry.io.photo_files import iter_zip_photos, store_photo
from pipeline.registry.io.registry_file import load_registry, save_registry
from pipeline.registry.io.return_files import SUFFIXES as RETURN_SUFFIXES
from pipeline.registry.io.return_files import (
    check_zip_members,
    read_return,
    write_rejections,
)
from pipeline.registry.photos import link_photos, photo_events
from pipeline.registry.store import append_events

log = logging.getLogger(__name__)

SHAPEFILE_SIDECARS = (".dbf", ".shx", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".xml")
"""Suffixes of the files that belong to the ``.shp`` of the same stem."""

INBOX_SUBFOLDERS = ("done", "rejected")

INBOX_OUTCOMES = ("applied", "rejected", "unsupported", "left")
"""What became of each inbox entry; their counts add up to the ``files`` count."""


@dataclass(frozen=True)
class ImportResult:
    file: Path
    applied: bool
    message: str
    rejections: tuple[tuple[str, int | None, str], ...] = ()
    summary: ImportSummary | None = None
    """What applying the file did (None for a rejected file)."""
    n_photos: int = 0
    """Photos of a zipped return newly linked to their patches."""
    photo_problems: tuple[str, ...] = ()
    """Photos reported, not stored (bad, unmatched) or linked far from their patch."""


def apply_files(
    state,
    files: list[Path],
    *,
    encoding: str | None,
    today: dt.date,
    run_id: str,
    now: str,
    photos: PhotoStore | None = None,
):
    """Apply each file to ``state`` (pure apart from reading the files and storing photos).

    Returns the new state and one :class:`ImportResult` per file; a rejected file leaves
    the state as it was before that file. With ``photos``, the photos of a zipped return are
    linked to their patches (``photo`` events) and stored, whether or not its table was
    applied: the table keeps its own all-or-nothing rule.
    """
    results: list[ImportResult] = []
    for path in files:
        if photos is not None:
            state, n_photos, problems = _apply_photos(state, path, photos, run_id=run_id, now=now)
        else:
            n_photos, problems = 0, ()
        try:
            rows = read_return(path, encoding=encoding)
            state, summary = apply_return(
                state, rows, source_file=path.name, fingerprint=fingerprint_file(path),
                now=now, today=today, run_id=run_id,
                unknown_columns=tuple(rows.attrs.get("unknown_columns", ())),
            )  # fmt: skip
        except (FieldReturnError, InputDataError) as exc:
            # an unreadable file is rejected like a file with bad rows; the others go on
            reasons = getattr(exc, "rejections", None) or [(path.name, None, str(exc))]
            for file, row, reason in reasons:
                log.error("%s row %s: %s", file, row, reason)
            message = f"rejected, nothing applied: {exc}" + _describe_photos(n_photos, problems)
            results.append(ImportResult(path, False, message, tuple(reasons), None,
                                        n_photos, problems))  # fmt: skip
        else:
            message = describe(summary) + _describe_photos(n_photos, problems)
            results.append(ImportResult(path, True, message, (), summary, n_photos, problems))
    return state, results


@dataclass(frozen=True)
class PhotoStore:
    """Where photos go and how far from its patch a photo may be taken without a warning."""

    workspace: Path
    radius_m: float = 100.0

    @property
    def folder(self) -> Path:
        return Workspace(self.workspace).photos_dir


def _apply_photos(state, path: Path, store: PhotoStore, *, run_id: str, now: str):
    """Link, store and record the photos of one zipped return; (state, newly linked,
    problems). Photos are read one at a time, twice: to link them, then to store the linked
    ones (memory stays flat)."""
    if path.suffix.lower() != ".zip":
        return state, 0, ()
    try:
        check_zip_members(path)
    except InputDataError:
        return state, 0, ()  # the table reader rejects the file with the reason
    photos = [photo for photo, _ in iter_zip_photos(path)]
    links, problems = link_photos(photos, state.patches, radius_m=store.radius_m)
    wanted = {link.photo.sha256 for link in links}
    stored = {}
    for photo, data in iter_zip_photos(path):
        if data is not None and photo.sha256 in wanted and photo.sha256 not in stored:
            rel = store_photo(store.folder, photo, data).relative_to(store.workspace)
            stored[photo.sha256] = rel.as_posix()
    events = photo_events(state.events, links, source=f"field:{path.name}", stored=stored)
    for problem in problems:
        log.warning("%s: %s", path.name, problem)
    if events:
        state = replace(state, events=append_events(state.events, events, run_id=run_id, now=now))
    return state, len(events), tuple(problems)


def _describe_photos(n_photos: int, problems: tuple[str, ...]) -> str:
    if not n_photos and not problems:
        return ""
    text = f"; {n_photos} photo(s) linked"
    return text + (f"; photos: {'; '.join(problems)}" if problems else "")


def import_returns(
    cfg: Config, files: list[Path], *, encoding: str | None = None, today: dt.date | None = None
) -> list[ImportResult]:
    """``landwatch field import``: apply the files, write a rejection report per rejected file
    to ``{workspace}/rejections/``, and raise :class:`FieldReturnError` at the end if any file
    was rejected (the others are applied)."""
    ws = Workspace(cfg.workspace)
    with WorkspaceLock(ws):
        if not ws.registry.exists():
            raise FieldReturnError(
                f"no registry at {ws.registry}: run `landwatch run` before importing field returns"
            )
        state = load_registry(ws.registry, cfg.area.crs)
        state, results = apply_files(
            state, files, encoding=encoding or cfg.field_returns.encoding,
            today=today or dt.date.today(), run_id=runlog.new_run_id(), now=runlog.utc_now(),
            photos=PhotoStore(ws.root, cfg.field_returns.photo_radius_m),
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
    """Return the files waiting in the inbox (not in done/ or rejected/), sorted by name.

    Every file counts (returns, unsupported files, hidden files) except the sidecar files
    of a ``.shp`` that is there too (they travel with it).
    """
    if not inbox.is_dir():
        return []
    files = [p for p in inbox.iterdir() if p.is_file()]
    shapefiles = {p.stem.lower() for p in files if p.suffix.lower() == ".shp"}
    return sorted(p for p in files if not _is_sidecar(p, shapefiles))


def import_inbox(
    cfg: Config, ws: Workspace, *, run_id: str, now: str, today: dt.date | None = None
) -> dict[str, int]:
    """The ``inbox`` stage (the caller holds the lock): import, save, then move the files.

    Returns
    -------
    dict
        Counts for the run record: ``files`` (every entry looked at: files and sub-folders,
        the sum of the next four), ``applied``, ``rejected``, ``unsupported`` (moved to
        rejected/ unread), ``left`` (hidden/lock files and sub-folders left in place, each
        with a WARNING), ``rows_not_filled``. :func:`describe_inbox` says them in a line.
    """
    inbox = cfg.field_returns.inbox
    files = inbox_files(inbox)
    left = _left_in_place(inbox, files)
    returns = [p for p in files if _is_return(p)]
    unsupported = [p for p in files if not _is_return(p) and not _is_hidden(p)]
    if not returns and not unsupported:
        counts = {"files": len(left), "left": len(left)} if left else {"files": 0}
        _log_inbox(counts)
        return counts
    results: list[ImportResult] = []
    if returns:
        state = load_registry(ws.registry, cfg.area.crs)
        state, results = apply_files(
            state, returns, encoding=cfg.field_returns.encoding,
            today=today or dt.date.today(), run_id=run_id, now=now,
            photos=PhotoStore(ws.root, cfg.field_returns.photo_radius_m),
        )  # fmt: skip
        # the registry is saved before any file moves: a kill in between re-imports the file
        # next night, which its recorded fingerprint turns into a no-op
        save_registry(ws.registry, state)
    results += [_unsupported(p) for p in unsupported]
    for result in results:
        _file_away(inbox, result, run_id)
    counts = {
        "files": len(results) + len(left),
        "applied": sum(r.applied for r in results),
        "rejected": sum(not r.applied for r in results) - len(unsupported),
        "unsupported": len(unsupported),
        "left": len(left),
        "rows_not_filled": sum(r.summary.n_not_filled for r in results if r.summary),
    }
    _log_inbox(counts)
    return counts


def describe_inbox(counts: dict[str, int]) -> str:
    """The inbox stage's counts in one line: ``3 file(s): 1 applied, 1 rejected, 0
    unsupported, 1 left in place; 2 row(s) not filled``."""
    outcomes = ", ".join(
        f"{counts.get(k, 0)} {'left in place' if k == 'left' else k}" for k in INBOX_OUTCOMES
    )
    text = f"{counts.get('files', 0)} file(s): {outcomes}"
    if counts.get("rows_not_filled"):
        text += f"; {counts['rows_not_filled']} row(s) not filled"
    return text


def _log_inbox(counts: dict[str, int]) -> None:
    """One log line with the counts: a WARNING when a file was rejected or left."""
    trouble = any(counts.get(k) for k in ("rejected", "unsupported", "left"))
    level = logging.WARNING if trouble else logging.INFO
    log.log(level, "inbox: %s", describe_inbox(counts))


def describe(summary: ImportSummary) -> str:
    """One line saying what applying a file did, for the CLI and the run log."""
    if summary.already_imported:
        return "already imported (same content); nothing changed"
    text = (
        f"applied {summary.n_applied} of {summary.n_rows} row(s), "
        f"{summary.n_not_filled} not filled; {summary.n_verdict_changes} verdict change(s), "
        f"{summary.n_rectification_updates} rectification update(s)"
    )
    if summary.warnings:
        text += "; warnings: " + "; ".join(summary.warnings)
    return text


def _file_away(inbox: Path, result: ImportResult, run_id: str) -> None:
    """Move a file (and its sidecars) to done/ or rejected/, with the report if rejected,
    under a name no earlier file there has."""
    folder = inbox / ("done" if result.applied else "rejected")
    folder.mkdir(exist_ok=True)
    parts = _with_sidecars(result.file)
    stem = _free_stem(folder, result.file, parts, run_id, report=not result.applied)
    if stem != result.file.stem:
        log.warning(
            "inbox: %s/%s exists already (an earlier return of that name); %s is kept as %s",
            folder.name,
            result.file.name,
            result.file.name,
            stem + result.file.name[len(result.file.stem) :],
        )
    for part in parts:
        shutil.move(part, folder / (stem + part.name[len(result.file.stem) :]))
    name = stem + result.file.name[len(result.file.stem) :]
    if result.applied:
        log.info("inbox: %s %s", result.file.name, result.message)
    else:
        write_rejections(folder / f"{name}.rejected.csv", result.rejections)
        log.warning("inbox: %s rejected; see %s", result.file.name, folder)


def _free_stem(folder: Path, file: Path, parts: list[Path], run_id: str, *, report: bool) -> str:
    """``file``'s stem, or with the run id (and a counter, if need be) added, so that none
    of ``parts`` (nor the rejection report) lands on a file already in ``folder``."""
    stem = file.stem
    candidates = [stem, f"{stem}.{run_id}", *(f"{stem}.{run_id}-{n}" for n in range(2, 1000))]
    for candidate in candidates:
        names = [candidate + p.name[len(stem) :] for p in parts]
        if report:
            names.append(f"{names[0]}.rejected.csv")
        if not any((folder / n).exists() for n in names):
            return candidate
    raise FileExistsError(f"{folder}: no free name for {file.name}")


def _unsupported(path: Path) -> ImportResult:
    suffixes = ", ".join(RETURN_SUFFIXES)
    reason = (
        f"unsupported file type '{path.suffix or path.name}': field returns are read from "
        f"{suffixes} (a Shapefile with its .dbf/.shx beside the .shp); save the return in one "
        "of these formats and put it in the inbox again"
    )
    log.warning("inbox: %s: %s", path.name, reason)
    return ImportResult(path, False, f"rejected, not read: {reason}", ((path.name, None, reason),))


def _left_in_place(inbox: Path, files: list[Path]) -> list[Path]:
    """Hidden files, Office lock files and sub-folders: left where they are, with a WARNING."""
    if not inbox.is_dir():
        return []
    folders = [p for p in inbox.iterdir() if p.is_dir() and p.name not in INBOX_SUBFOLDERS]
    left = [p for p in files if _is_hidden(p)] + sorted(folders)
    for path in left:
        what = "folder" if path.is_dir() else "hidden or lock file"
        log.warning(
            "inbox: %s %s left in place, not read: put each return file (or a zip) directly in %s",
            what,
            path.name,
            inbox,
        )
    return left


def _is_return(path: Path) -> bool:
    return path.suffix.lower() in RETURN_SUFFIXES and not _is_hidden(path)


def _is_hidden(path: Path) -> bool:
    # ~$name.xlsx is the lock file Excel and WPS keep beside a workbook that is open;
    # .~lock.name# is LibreOffice's
    return path.name.startswith((".", "~$"))


def _is_sidecar(path: Path, shapefiles: set[str]) -> bool:
    name = path.name.lower()
    return any(
        name.endswith(suffix) and name[: -len(suffix)] in shapefiles
        for suffix in (*SHAPEFILE_SIDECARS, ".shp.xml")
    )


def _with_sidecars(path: Path) -> list[Path]:
    if path.suffix.lower() != ".shp":
        return [path]
    shapefiles = {path.stem.lower()}
    sidecars = [p for p in path.parent.iterdir() if p.is_file() and _is_sidecar(p, shapefiles)]
    return [path, *sorted(sidecars)]
