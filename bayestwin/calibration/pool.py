"""Worker processes that end with their parent.

:func:`run_in_processes` maps a function over items in a pool of spawned processes and
makes sure no worker outlives the run:

* in the parent, SIGTERM (as SIGINT already does) stops the run: the queued items are
  cancelled, the running workers are terminated, and the exception (``SystemExit``
  with status ``128 + 15`` for SIGTERM, ``KeyboardInterrupt`` for SIGINT) goes on up;
* in each worker (:func:`init_worker`), the kernel sends SIGTERM when the parent dies
  (``prctl(PR_SET_PDEATHSIG)`` on Linux), and a watchdog thread ends the worker when
  its parent process changes (every platform, for a parent killed with SIGKILL too).

Each worker starts with one BLAS thread (``OMP_NUM_THREADS`` and the like in the
environment it is spawned with), as a Dask worker does.

The worlds run on a Dask cluster instead when :func:`~bayestwin.calibration.run_calibration`
is given ``engine="dask"`` (:mod:`bayestwin.cluster`); this pool stays the way to run
them without Dask. :func:`quiet_process` is :func:`bayestwin.cluster.quiet_process`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from types import FrameType
from typing import Any

from bayestwin.cluster import quiet_process

__all__ = ["WATCHDOG_INTERVAL", "init_worker", "quiet_process", "run_in_processes"]

#: Seconds between two checks of a worker's watchdog that its parent still lives.
WATCHDOG_INTERVAL = 0.5

_PR_SET_PDEATHSIG = 1


def _die_with_parent_linux() -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux only; else nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # no libc or no prctl: the watchdog still runs
        return


def _watch_parent(parent: int, interval: float) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(128 + signal.SIGTERM)


def init_worker(parent: int, quiet: bool = True) -> None:
    """Set a worker process up to end with ``parent`` (the pool's initializer).

    Parameters
    ----------
    parent : int
        Process id of the parent that started the pool.
    quiet : bool
        Also call :func:`quiet_process`.
    """
    _die_with_parent_linux()
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(128 + signal.SIGTERM)
    watchdog = threading.Thread(
        target=_watch_parent, args=(parent, WATCHDOG_INTERVAL), name="parent-watchdog"
    )
    watchdog.daemon = True
    watchdog.start()
    if quiet:
        quiet_process()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` for the block (main thread only; else nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """One BLAS thread in the processes spawned meanwhile; this one's environment after.

    A spawned worker imports NumPy (and loads its BLAS, which reads these variables
    once) before its initializer runs, so the variables must be in the environment it
    starts with; else two workers on two cores would each run two BLAS threads.
    """
    saved = {name: os.environ.get(name) for name in _BLAS_THREADS}
    for name in _BLAS_THREADS:
        os.environ.setdefault(name, "1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what is queued and terminate the workers now."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.terminate()
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()


def run_in_processes[T, R](
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int,
    on_result: Callable[[R], None] | None = None,
) -> list[R]:
    """Map ``fn`` over ``items`` in ``workers`` spawned processes that end with this one.

    Parameters
    ----------
    fn : callable
        A module-level function (it is pickled by reference).
    items : sequence
        Its arguments, one call each.
    workers : int
        Processes.
    on_result : callable, optional
        Called with each result as it arrives, in the parent.

    Returns
    -------
    list
        The results, in the order they completed.

    Raises
    ------
    SystemExit
        Status ``128 + 15`` when the parent receives SIGTERM; the workers are gone.
    KeyboardInterrupt
        On SIGINT; the workers are gone.
    """
    import multiprocessing as mp

    results: list[R] = []
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=init_worker,
        initargs=(os.getpid(),),
    )
    with _sigterm_raises():
        try:
            with _single_threaded_children():  # the workers start as the items go in
                futures: list[Future[Any]] = [pool.submit(fn, item) for item in items]
            for fut in as_completed(futures):
                results.append(fut.result())
                if on_result is not None:
                    on_result(results[-1])
        except BaseException:
            _stop(pool)
            raise
        pool.shutdown(wait=True)
    return results
