"""The workspace folder: where every output lives, and the lock that keeps runs apart.

Layout (DESIGN §3)::

    {workspace}/registry.gpkg                   system of record
    {workspace}/changes/{from}_{to}/            score.tif, mask.tif (COG) + stage outputs
    {workspace}/exports/{date}/                 field packages, one zip per township
    {workspace}/reports/{date}/                 rates.csv, rates.xlsx, report.html, PNGs
    {workspace}/chips/, photos/, dossiers/      image chips, field photos, patch dossiers
    {workspace}/state.json                      stage records (what ran, on what, with what)
    {workspace}/logs/{run_id}.jsonl             one JSON-lines log per run
    {workspace}/.lock                           held (flock) while a run writes
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import WorkspaceLockedError
from pipeline.schema import REGISTRY_FILE


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def registry(self) -> Path:
        return self.root / REGISTRY_FILE

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def pair_dir(self, pair: tuple[str, str]) -> Path:
        return self.root / "changes" / f"{pair[0]}_{pair[1]}"

    def exports_dir(self, date: str) -> Path:
        return self.root / "exports" / date

    def reports_dir(self, date: str) -> Path:
        return self.root / "reports" / date

    @property
    def chips_dir(self) -> Path:
        """Before/after chips of the patches (``{patch_id}.png``), written by the export and
        linked by the reports' maps."""
        return self.root / "chips"

    @property
    def photos_dir(self) -> Path:
        """Field photos, by content hash."""
        return self.root / "photos"

    @property
    def dossiers_dir(self) -> Path:
        """Patch dossiers (``{patch_id}.pdf`` and ``.html``), written by the export and
        ``landwatch dossier``, linked by the reports' maps."""
        return self.root / "dossiers"

    @property
    def learn_dir(self) -> Path:
        """The model learned from the field verdicts (``model.joblib``, ``model.json``)."""
        return self.root / "learn"

    def log_file(self, run_id: str) -> Path:
        return self.root / "logs" / f"{run_id}.jsonl"

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)


class WorkspaceLock:
    """An exclusive, non-blocking lock on the workspace.

    Notes
    -----
    The lock is a ``flock`` on ``.lock``: the kernel releases it when the holding process
    dies, so a lock left behind by a killed run is never stale — the next run simply takes
    it. The file's content (pid, host, start time) only serves the error message.
    """

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._fd: int | None = None

    def __enter__(self) -> WorkspaceLock:
        self.workspace.ensure()
        fd = os.open(self.workspace.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise WorkspaceLockedError(
                f"workspace {self.workspace.root} is in use by another landwatch run ({holder}); "
                "wait for it to finish — two runs never write one workspace at once"
            ) from None
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
