"""The client, the tasks and their results (see :mod:`bayestwin.cluster`)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bayestwin.errors import InvalidInputError, UnavailableError

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "DEFAULT_ALLOWED_FAILURES",
    "DEFAULT_RETRIES",
    "TaskResult",
    "available_cores",
    "dashboard_link",
    "open_client",
    "quiet_process",
    "run_tasks",
    "worker_address",
    "worker_cores",
]

#: Times a task that raises is run again before its failure is recorded.
DEFAULT_RETRIES = 2

#: Times an embedded cluster reschedules a task whose worker died while running it.
DEFAULT_ALLOWED_FAILURES = 2

_QUIET_LOGGERS = ("pymc", "pytensor", "nutpie", "bayestwin", "mlflow")
_INSTALL_HINT = "install the 'scale' extra: pip install 'bayestwin[scale]'"


def quiet_process() -> None:
    """Single-threaded BLAS, library logs at ERROR, no progress bars or warnings (a worker)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class TaskResult[R]:
    """What one task gave: its value, or the error that ended it.

    Attributes
    ----------
    name : str
        The item's name (as given to :func:`run_tasks`).
    value : object or None
        What the task returned; None when it failed.
    error : str or None
        ``"<ExceptionType>: <message>"`` of the last failure once the retries (or the
        rescheduling after worker deaths) are spent; None when it succeeded.
    worker : str or None
        Address of the worker that ran the successful attempt.
    seconds : float
        Wall time of the successful attempt (0 when it failed).
    """

    name: str
    value: R | None
    error: str | None = None
    worker: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the task succeeded."""
        return self.error is None


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise UnavailableError(
            f"running tasks on a Dask cluster needs dask.distributed; {_INSTALL_HINT}",
            code="missing_dependency",
        ) from None
    return distributed


@contextlib.contextmanager
def open_client(
    scheduler: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    dashboard_address: str | None = ":8787",
    allowed_failures: int = DEFAULT_ALLOWED_FAILURES,
    timeout: float = 30.0,
) -> Iterator[Client]:
    """A Dask client of a scheduler, or of an embedded ``LocalCluster`` closed on exit.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``). None starts a
        ``LocalCluster`` of worker processes in this process (closed on exit).
    n_workers : int, optional
        Worker processes of the embedded cluster (default: :func:`available_cores`).
        Ignored with ``scheduler``.
    threads_per_worker : int
        Threads of each embedded worker (1: one task at a time per process).
    dashboard_address : str or None
        Where the embedded cluster serves its dashboard (``":8787"``, or another free
        port when taken; ``":0"`` any free port; None none). The dashboard needs bokeh.
    allowed_failures : int
        Times the embedded cluster's scheduler reschedules a task whose worker died
        under it before the task fails with ``KilledWorker`` (a remote scheduler keeps
        its own ``distributed.scheduler.allowed-failures``).
    timeout : float
        Seconds to wait for a remote scheduler.

    Yields
    ------
    distributed.Client
        The client; its workers run :func:`run_tasks`' tasks.

    Raises
    ------
    UnavailableError
        ``missing_dependency`` without dask.distributed; ``scheduler_unreachable``
        (field ``dask_scheduler``) when no scheduler answers at the address.
    InvalidInputError
        If ``n_workers``, ``threads_per_worker`` or ``allowed_failures`` are out of range.
    """
    distributed = _distributed()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise UnavailableError(
                f"no Dask scheduler answers at {scheduler!r} ({type(exc).__name__}); start "
                "one (dask scheduler) or set dask_scheduler to a running scheduler's "
                "address, e.g. tcp://host:8786",
                code="scheduler_unreachable",
                field="dask_scheduler",
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    workers = available_cores() if n_workers is None else n_workers
    for name, value, low in (
        ("n_workers", workers, 1),
        ("threads_per_worker", threads_per_worker, 1),
        ("allowed_failures", allowed_failures, 0),
    ):
        if value < low:
            raise InvalidInputError(f"{name} must be >= {low}, got {value}", field=name)
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=dashboard_address,
            silence_logs=logging.CRITICAL,
        )
    try:
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def dashboard_link(client: Client) -> str | None:
    """The address of the scheduler's dashboard, or None when it serves none."""
    try:
        services = client.scheduler_info().get("services", {})
    except Exception:  # noqa: BLE001 - a link is a courtesy, never a failure
        return None
    if "dashboard" not in services:
        return None
    return str(client.dashboard_link)


def _current_worker() -> Any:
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker()
    except ValueError:  # not in a task
        return None


def worker_cores(default: int = 1) -> int:
    """The cores one task of this worker may use, or ``default`` outside a worker.

    A worker that declares a ``cores`` resource (``dask worker --resources cores=8``)
    shares those cores among its threads; else each thread gets one core.

    Parameters
    ----------
    default : int
        The answer outside a Dask worker.

    Returns
    -------
    int
        ``max(1, cores // nthreads)``, with ``cores`` the resource (or ``nthreads``).
    """
    worker = _current_worker()
    if worker is None:
        return max(1, default)
    nthreads = max(1, int(worker.state.nthreads))
    declared = worker.state.total_resources.get("cores")
    total = int(declared) if declared else nthreads
    return max(1, total // nthreads)


def worker_address() -> str | None:
    """The address of the worker running this task, or None outside a worker."""
    worker = _current_worker()
    return None if worker is None else str(worker.address)


def _call(fn: Callable[..., Any], args: Sequence[Any]) -> tuple[Any, str | None, float]:
    """Run one task on a worker: quiet logs, the value, the worker, the wall time."""
    quiet_process()
    t0 = time.perf_counter()
    value = fn(*args)
    return value, worker_address(), time.perf_counter() - t0


def _error(exc: BaseException | None) -> str:
    if exc is None:  # pragma: no cover - a cancelled future
        return "CancelledError: the task was cancelled"
    return f"{type(exc).__name__}: {exc}"


def run_tasks[R](
    client: Client,
    fn: Callable[..., R],
    calls: Mapping[str, Sequence[Any]],
    *,
    retries: int = DEFAULT_RETRIES,
    on_result: Callable[[TaskResult[R]], None] | None = None,
    prefix: str = "bayestwin",
) -> list[TaskResult[R]]:
    """Run ``fn(*args)`` for every item of ``calls`` on the client's workers.

    Each item is one task. A task that raises is run again, up to ``retries`` times; a
    task whose worker dies is rescheduled by the scheduler. A task that still fails
    gives a :class:`TaskResult` with its error; the other tasks go on.

    Parameters
    ----------
    client : distributed.Client
        From :func:`open_client`.
    fn : callable
        A module-level function (pickled by reference); it runs on a worker.
    calls : mapping of str to sequence
        Item name -> the arguments of its call. They are held by the task, so that a
        task whose worker dies can run elsewhere with them (futures are passed on as
        their values, but scattered data is lost with its worker).
    retries : int
        Extra attempts of a task that raises.
    on_result : callable, optional
        Called in this process with each result, as the tasks complete.
    prefix : str
        Start of the tasks' keys (as the dashboard shows them).

    Returns
    -------
    list of TaskResult
        One per item, in the order they completed.

    Raises
    ------
    InvalidInputError
        If ``retries`` is negative.
    """
    if retries < 0:
        raise InvalidInputError(f"retries must be >= 0, got {retries}", field="retries")
    distributed = _distributed()
    token = uuid.uuid4().hex[:8]
    with warnings.catch_warnings():
        # arguments held in the task itself are intended: the scheduler keeps them to
        # rerun the task elsewhere when its worker dies (scattered data would be lost)
        warnings.filterwarnings("ignore", message=".*large graph.*", category=UserWarning)
        futures = {
            client.submit(
                _call, fn, list(args), key=f"{prefix}-{name}-{token}", retries=retries, pure=False
            ): name
            for name, args in calls.items()
        }
    results: list[TaskResult[R]] = []
    try:
        for future in distributed.as_completed(list(futures)):
            name = futures[future]
            if future.status == "finished":
                value, worker, seconds = future.result()
                result: TaskResult[R] = TaskResult(name, value, None, worker, seconds)
            else:
                result = TaskResult(name, None, _error(future.exception()))
            results.append(result)
            if on_result is not None:
                on_result(result)
    except BaseException:
        client.cancel(list(futures))
        raise
    return results
