"""Independent tasks on a Dask cluster: an embedded ``LocalCluster`` or any scheduler.

bayestwin runs work made of independent tasks (the fits of
:meth:`~bayestwin.service.TwinService.fit_all`, one per brand and twin type; the worlds
of a calibration run) on :mod:`dask.distributed`:

* :func:`open_client` connects to the scheduler at an address (``tcp://host:8786``,
  the setting ``dask_scheduler``), or starts an embedded ``LocalCluster`` of worker
  processes with one thread each, as many as the cores;
* :func:`run_tasks` submits one task per item, retries a task that raises up to
  ``retries`` times, reschedules a task whose worker dies (up to the scheduler's
  ``allowed-failures``), and gives one :class:`TaskResult` per item, a failed one with
  its error, as the tasks complete;
* :func:`worker_cores` tells a task how many cores it may use: the worker's ``cores``
  resource when it declares one, else its threads.

Dask is an optional dependency (the ``scale`` extra); without it :func:`open_client`
raises an :class:`~bayestwin.errors.UnavailableError` that says what to install.

Import rule: this layer imports the kernel (errors) and Dask only; the calibration and
the service, above it, decide what the tasks are and read the settings.
"""

from bayestwin.cluster.tasks import (
    DEFAULT_RETRIES,
    TaskResult,
    available_cores,
    dashboard_link,
    open_client,
    quiet_process,
    run_tasks,
    worker_address,
    worker_cores,
)

__all__ = [
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
