"""Background jobs with a deadline each: one worker pool and one watchdog thread.

:class:`JobRunner` runs jobs on a thread pool. Every job has a deadline (a fixed number
of seconds after it is submitted); one watchdog thread sleeps until the nearest
deadline and hands each job still unfinished at its deadline to the ``on_timeout``
callback (the service marks the simulation failed). A job that finishes first is
forgotten. A Python thread cannot be stopped, so a job past its deadline runs on; the
service refuses its late result.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["JobRunner"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class JobRunner:
    """A worker pool whose jobs each get a deadline, watched by a single thread.

    Parameters
    ----------
    max_workers : int
        Jobs that run at the same time.
    timeout_seconds : float
        Time from submission to a job's deadline.
    on_timeout : callable
        Called with a job's key, from the watchdog thread, when the job is still
        unfinished at its deadline; at most once per job.
    thread_name_prefix : str
        Names of the worker threads.
    """

    def __init__(
        self,
        max_workers: int,
        timeout_seconds: float,
        on_timeout: Callable[[uuid.UUID], None],
        *,
        thread_name_prefix: str = "bayestwin-sim",
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be > 0, got {timeout_seconds}")
        self.timeout_seconds = float(timeout_seconds)
        self._on_timeout = on_timeout
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=thread_name_prefix
        )
        self._deadlines: dict[uuid.UUID, float] = {}
        self._heap: list[tuple[float, uuid.UUID]] = []
        self._wake = threading.Condition()
        self._watchdog: threading.Thread | None = None
        self._closed = False

    def submit(self, key: uuid.UUID, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on a worker, with a deadline ``timeout_seconds`` from now.

        Parameters
        ----------
        key : UUID
            The job's key (the simulation id), passed to ``on_timeout``.
        fn : callable
            The job.
        *args
            Its arguments.

        Returns
        -------
        Future
            The job's future.

        Raises
        ------
        RuntimeError
            If the runner is closed.
        """
        deadline = time.monotonic() + self.timeout_seconds
        with self._wake:
            if self._closed:
                raise RuntimeError("cannot schedule new jobs after close()")
            self._deadlines[key] = deadline
            heapq.heappush(self._heap, (deadline, key))
            self._start_watchdog()
            self._wake.notify()
        try:
            future = self._executor.submit(fn, *args)
        except RuntimeError:
            self._forget(key)
            raise
        future.add_done_callback(lambda _f: self._forget(key))
        return future

    @property
    def active(self) -> int:
        """Jobs submitted and neither finished nor past their deadline."""
        with self._wake:
            return len(self._deadlines)

    def cancel_deadline(self, key: uuid.UUID) -> bool:
        """Drop a job's deadline, so that ``on_timeout`` is never called for it.

        Returns
        -------
        bool
            True when the job had a deadline; False when it finished or its deadline
            passed already (``on_timeout`` may then still be running).
        """
        return self._forget(key)

    def close(self) -> None:
        """Stop the watchdog, then wait for the running jobs; queued ones are cancelled."""
        with self._wake:
            self._closed = True
            self._deadlines.clear()
            self._heap.clear()
            self._wake.notify()
            watchdog = self._watchdog
        if watchdog is not None:
            watchdog.join()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _forget(self, key: uuid.UUID) -> bool:
        """Drop a job's deadline; True when it had one (it was neither done nor expired)."""
        with self._wake:
            return self._deadlines.pop(key, None) is not None

    def _start_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch, name="bayestwin-sim-watchdog", daemon=True
            )
            self._watchdog.start()

    def _due(self) -> list[uuid.UUID]:
        """Wait (holding the condition) until a deadline passes; return the jobs due."""
        while not self._closed:
            now = time.monotonic()
            due = []
            while self._heap and self._heap[0][0] <= now:
                deadline, key = heapq.heappop(self._heap)
                if self._deadlines.get(key) == deadline:
                    del self._deadlines[key]
                    due.append(key)
            if due:
                return due
            self._wake.wait(self._heap[0][0] - now if self._heap else None)
        return []

    def _watch(self) -> None:
        while True:
            with self._wake:
                due = self._due()
            if not due:
                return
            for key in due:
                try:
                    self._on_timeout(key)
                except Exception:
                    logger.warning("timing out job %s failed", key, exc_info=True)
