"""Atomic file writes and file fingerprints.

An output is written to a temporary sibling and renamed onto its final name only when the
writer finished without an exception (the luigi pattern), so a crash or a kill never leaves
a half-written file that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_SIDECAR_SUFFIXES = ("-journal", "-wal", "-shm", ".aux.xml")
"""Files SQLite/GDAL may leave next to a temporary file; removed with it on failure."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling path that replaces ``target`` only on success.

    Parameters
    ----------
    target : path-like
        The final file. Its folder is created when missing.

    Yields
    ------
    pathlib.Path
        A path in the same folder as ``target`` that does not exist yet, with the same
        suffix (so GDAL/OGR pick the right driver from the name). Write the whole output to
        it; when the ``with`` block ends without an exception it is moved onto ``target``
        with :func:`os.replace` (atomic on POSIX and Windows within one file system).

    Notes
    -----
    - On any exception (including ``KeyboardInterrupt``) the temporary file and its SQLite
      sidecars are removed, the exception propagates and ``target`` is left untouched.
    - If the block does not create the temporary file, ``target`` is left untouched too.
    - Only for single-file outputs: a Shapefile (``.shp`` + ``.dbf`` + ...) needs a
      temporary folder instead.
    - The file content is flushed to disk (``fsync``) before the rename so that a power
      loss cannot leave a renamed but empty file.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(
        f".{target.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{target.suffix}"
    )
    try:
        yield tmp
    except BaseException:
        _remove_with_sidecars(tmp)
        raise
    if not tmp.exists():
        log.warning("atomic_path: nothing was written to %s; %s left unchanged", tmp, target)
        return
    _fsync(tmp)
    os.replace(tmp, target)
    _remove_with_sidecars(tmp)  # stray sidecars of the temporary name, if any
    _fsync_dir(target.parent)


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``target`` through :func:`atomic_path`; returns ``target`` as a Path.

    A crash leaves either the old file or the new one, never a half-written file.
    """
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def fingerprint_file(path: str | os.PathLike[str], *, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, as 64 lowercase hex digits.

    Notes
    -----
    Read in chunks, so memory stays flat for large rasters. The fingerprint depends on the
    bytes only, not on the name or the modification time.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- internals
def _remove_with_sidecars(path: Path) -> None:
    for p in (path, *(path.with_name(path.name + s) for s in _SIDECAR_SUFFIXES)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    # directories cannot be opened on Windows; the rename is still atomic there
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
