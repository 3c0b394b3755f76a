"""A worker's heartbeat: one daemon thread that reports the worker alive every few seconds.

Every :class:`~bayestwin.service.TwinService` is a worker with its own id
(:func:`worker_token`). Its rows in ``twin_simulations`` carry that id; its
:class:`Heartbeat` calls the service every ``heartbeat_seconds`` to stamp them alive
and to fail the unfinished rows that no live worker owns (their worker stopped
reporting for longer than the grace period).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

__all__ = ["Heartbeat", "worker_token"]

logger = logging.getLogger(__name__)


def worker_token() -> str:
    """A new worker id: ``host:pid:random`` (at most 64 characters)."""
    host = (socket.gethostname() or "host")[:40]
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat:
    """Call ``beat`` every ``interval`` seconds on a daemon thread until :meth:`stop`.

    Parameters
    ----------
    interval : float
        Seconds between two calls.
    beat : callable
        What to call; an exception it raises is logged and the heartbeat goes on.
    name : str
        Name of the thread.
    """

    def __init__(
        self, interval: float, beat: Callable[[], object], *, name: str = "bayestwin-heartbeat"
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.interval = float(interval)
        self._beat = beat
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (a call under way finishes first)."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self._beat()
            except Exception:
                logger.warning("heartbeat failed", exc_info=True)
