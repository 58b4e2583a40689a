"""The console every ``landwatch`` command prints to (stderr, safe when its reader goes away)."""

from __future__ import annotations

import contextlib
import os
import sys

from rich.console import Console


class PipeSafeStderr:
    """``sys.stderr`` (looked up at each write, as test runners swap it) that stops writing
    once the reader is gone: a nightly job piped into ``head`` or a closed log viewer must
    not fail half-way through a run because a progress line could not be printed.

    On the first :class:`BrokenPipeError` file descriptor 2 is pointed at ``/dev/null``, so
    later writes from anywhere (and the interpreter's final flush) are discarded quietly.
    """

    broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return sys.stderr.write(text)
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                sys.stderr.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stderr.fileno())
            os.close(devnull)

    def isatty(self) -> bool:
        return not self.broken and sys.stderr.isatty()

    def fileno(self) -> int:
        return sys.stderr.fileno()

    @property
    def encoding(self) -> str:
        return getattr(sys.stderr, "encoding", None) or "utf-8"


console = Console(file=PipeSafeStderr())
