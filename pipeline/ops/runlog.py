"""A JSON-lines log per run (``{workspace}/logs/{run_id}.jsonl``): one object per record,
for scripts and monitoring to read without parsing console text."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

OWN_LOGGER = "pipeline"
"""Records of this package's loggers are kept from INFO up; other libraries' from WARNING up
(fontTools alone logs dozens of INFO lines per font subset)."""


def _own_info_or_any_warning(record: logging.LogRecord) -> bool:
    own = record.name == OWN_LOGGER or record.name.startswith(OWN_LOGGER + ".")
    return own or record.levelno >= logging.WARNING


class JsonLinesHandler(logging.Handler):
    """Writes each record as ``{"time", "level", "logger", "message", "run_id", ...extra}``:
    landwatch's own records from INFO, other libraries' from WARNING."""

    def __init__(self, path: Path, run_id: str):
        super().__init__(level=logging.INFO)
        self.addFilter(_own_info_or_any_warning)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self.run_id = run_id

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = {
                "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
                "run_id": self.run_id,
            }
            for key in ("stage", "status", "reason", "seconds", "counts"):
                if hasattr(record, key):
                    entry[key] = getattr(record, key)
            if record.exc_info:
                entry["exception"] = self.format(record).splitlines()[-1]
            self._file.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
            self._file.flush()
        except Exception:  # logging must never break the run
            self.handleError(record)

    def close(self) -> None:
        self._file.close()
        super().close()


@contextlib.contextmanager
def run_log(path: Path, run_id: str) -> Iterator[Path]:
    """Attach a :class:`JsonLinesHandler` to the root logger for the ``with`` block."""
    handler = JsonLinesHandler(path, run_id)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


def new_run_id() -> str:
    """A run id: the UTC start time to the second and 4 random hex digits."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def utc_now() -> str:
    """The current UTC time, ISO-8601 to the second (event and run times)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
