"""One executor interface for the raster stages: in-process, process pool or Dask.

Everything submitted must be a picklable top-level function with picklable arguments
(rasterio datasets are not: workers open files themselves, see :mod:`pipeline.imagery`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor

log = logging.getLogger(__name__)


class SynchronousExecutor(Executor):
    """Runs each task at submission, in the calling process (``workers == 1``, debugging)."""

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            future.set_exception(exc)
        return future


@contextlib.contextmanager
def make_executor(workers: int = 2, scheduler: str | None = None) -> Iterator[Executor]:
    """A context manager yielding a :class:`concurrent.futures.Executor`.

    Parameters
    ----------
    workers : int
        1 = in-process (synchronous); more = a local process pool of that size.
    scheduler : str, optional
        A Dask scheduler address (``tcp://host:port``); overrides ``workers`` and submits to
        ``distributed.Client(scheduler).get_executor()``.

    Notes
    -----
    The process pool uses the ``forkserver`` start method where available (``spawn``
    elsewhere): forking a process that holds GDAL state or threads is unsafe.
    """
    if scheduler:
        from distributed import Client  # optional engine, imported lazily

        log.info("submitting raster work to the Dask scheduler at %s", scheduler)
        client = Client(scheduler)
        try:
            yield client.get_executor()
        finally:
            client.close()
        return
    if workers < 1:
        raise ValueError(f"workers = {workers}; expected 1 (in-process) or more")
    if workers == 1:
        yield SynchronousExecutor()
        return
    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
