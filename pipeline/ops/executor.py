"""One executor interface for the raster stages: in-process, process pool or Dask.

Everything submitted must be a picklable top-level function with picklable arguments
(rasterio datasets are not: workers open files themselves, see :mod:`pipeline.detection.io.imagery`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor

from pipeline.config import check_scheduler_address
from pipeline.errors import InputDataError

log = logging.getLogger(__name__)


WORKER_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "GDAL_NUM_THREADS": "1",
}
"""Set in every pool worker before it imports numpy or opens a raster: ``workers`` processes
already fill the cores, so a worker that also spread BLAS or GDAL work over all cores
would oversubscribe them (2 processes × N threads on N cores)."""
WORKER_PRELOAD = ("pipeline.detection.pair",)
"""Modules each pool worker imports in its initializer, so the pool start-up (≈ 1–2 s of
imports: rasterio, geopandas, scipy) is paid when the pool is made, in parallel, not in
the first pass of the first stage."""


PARENT_CHECK_S = 2.0
"""How often a pool worker checks that the process that made the pool is still alive."""


def _init_worker(env: dict[str, str], preload: tuple[str, ...], parent: int | None = None) -> None:
    """Pool initializer: thread limits (:data:`WORKER_THREAD_ENV`), warm imports, and with
    ``parent`` a watchdog that ends the worker once that process is gone (:func:`_orphan_watch`)."""
    os.environ.update(env)
    # Ctrl-C goes to the whole process group: the run handles it (it stops, and the next
    # run resumes); a worker printing its own KeyboardInterrupt traceback would only add noise
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in preload:
        importlib.import_module(module)
    if parent is not None:
        threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()


def _orphan_watch(parent: int, every_s: float = PARENT_CHECK_S) -> None:
    """End this worker when process ``parent`` no longer exists.

    Notes
    -----
    A run killed outright (SIGKILL, the OOM killer) cannot shut its pool down: the workers
    are children of the forkserver, not of the run, and would wait for tasks forever, each
    holding its memory (and keeping the forkserver and resource tracker alive). Polling the
    run's pid with signal 0 is enough to notice; ``os._exit`` skips any clean-up that could
    block on the dead parent's pipes.
    """
    while True:
        time.sleep(every_s)
        try:
            os.kill(parent, 0)
        except (ProcessLookupError, PermissionError):  # gone (or its pid reused by another user)
            os._exit(1)


def _ready() -> int:
    return os.getpid()


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
    elsewhere): forking a process that holds GDAL state or threads is unsafe. Its workers
    run single-threaded numeric libraries (:data:`WORKER_THREAD_ENV`) and are started and
    warmed up (:data:`WORKER_PRELOAD`) before the executor is yielded.
    """
    if scheduler:
        # distributed is imported only here: it is slow to import and only a run with
        # a Dask scheduler needs it
        from distributed import Client

        check_scheduler_address(scheduler, "'--scheduler'")

        log.info("submitting raster work to the Dask scheduler at %s", scheduler)
        try:
            client = Client(scheduler)
        except OSError as exc:  # distributed raises OSError on a timeout or refusal
            raise InputDataError(
                f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one there "
                "(`dask scheduler`) or fix '--scheduler' / 'run.scheduler'"
            ) from exc
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
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(method),
        initializer=_init_worker,
        initargs=(WORKER_THREAD_ENV, WORKER_PRELOAD, os.getpid()),
    )
    try:
        # one task per worker: each submit without an idle worker starts a process
        pids = {f.result() for f in [pool.submit(_ready) for _ in range(workers)]}
        log.debug("process pool of %d workers ready (%d started)", workers, len(pids))
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
