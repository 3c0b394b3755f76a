"""Which live worker owns a pending or running simulation: worker ids and heartbeats.

A simulation row carries the ``worker_id`` of the service instance that runs it and
``heartbeat_at``, the last time that instance reported it alive. A live instance calls
:meth:`WorkerRecords.heartbeat` every few seconds; an instance that died stops doing so.
:meth:`WorkerRecords.fail_unowned_simulations` then marks failed every pending or
running row of another worker (or of none) whose last report is older than a grace
period, so that no row stays unfinished forever, whatever stopped its process.
:meth:`WorkerRecords.fail_worker_simulations` closes an instance's own unfinished rows
when it shuts down.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa

from bayestwin.errors import InvalidInputError
from bayestwin.schemas import utcnow
from bayestwin.store.repository.base import RepositoryBase
from bayestwin.store.tables import WORKER_ID_LENGTH, TwinSimulation
from bayestwin.vocabulary import SimulationStatus

__all__ = ["WorkerRecords"]

_UNFINISHED = (SimulationStatus.PENDING, SimulationStatus.RUNNING)


def _check_worker(worker_id: str) -> None:
    if not worker_id or len(worker_id) > WORKER_ID_LENGTH:
        raise InvalidInputError(
            f"worker_id must have 1 to {WORKER_ID_LENGTH} characters", field="worker_id"
        )


def _seconds(since: datetime, now: datetime) -> str:
    return f"{max((now - since).total_seconds(), 0.0):.0f} s"


class WorkerRecords(RepositoryBase):
    """The worker columns of ``twin_simulations`` (``worker_id``, ``heartbeat_at``)."""

    def heartbeat(self, worker_id: str) -> int:
        """Report a worker's pending and running simulations alive.

        Parameters
        ----------
        worker_id : str
            The worker.

        Returns
        -------
        int
            How many rows were reported.
        """
        _check_worker(worker_id)
        with self._write() as session:
            done = session.execute(
                sa.update(TwinSimulation)
                .where(
                    TwinSimulation.worker_id == worker_id,
                    TwinSimulation.simulation_status.in_(_UNFINISHED),
                )
                .values(heartbeat_at=utcnow())
            )
            return int(getattr(done, "rowcount", 0) or 0)

    def fail_unowned_simulations(
        self, worker_id: str, grace: timedelta, *, reason: str
    ) -> list[uuid.UUID]:
        """Mark failed the unfinished rows that no live worker owns.

        A pending or running row is abandoned when it belongs to another worker (or to
        none) and its last heartbeat (``created_at`` when it has none) is older than
        ``grace``.

        Parameters
        ----------
        worker_id : str
            The calling worker; its own rows are left alone.
        grace : timedelta
            How long a worker may go without a heartbeat and still count as alive.
        reason : str
            Start of the error message stored on each row; the worker and the age of
            its last heartbeat follow.

        Returns
        -------
        list of UUID
            The simulations marked failed.
        """
        _check_worker(worker_id)
        if grace < timedelta(0):
            raise InvalidInputError(f"grace must be >= 0, got {grace}", field="grace")
        now = utcnow()
        last_seen = sa.func.coalesce(TwinSimulation.heartbeat_at, TwinSimulation.created_at)
        abandoned = (
            TwinSimulation.simulation_status.in_(_UNFINISHED),
            sa.or_(TwinSimulation.worker_id.is_(None), TwinSimulation.worker_id != worker_id),
            last_seen < now - grace,
        )
        with self._read() as session:  # the common case: nothing to fail, no write lock
            if (
                session.scalar(sa.select(TwinSimulation.simulation_id).where(*abandoned).limit(1))
                is None
            ):
                return []
        with self._write() as session:
            rows = session.scalars(
                sa.select(TwinSimulation)
                .where(*abandoned)
                .order_by(TwinSimulation.simulation_id)
                .with_for_update()
            ).all()
            for row in rows:
                seen = row.heartbeat_at or row.created_at
                row.error_message = (
                    f"{reason} (it was {row.simulation_status}; worker "
                    f"{row.worker_id or 'unknown'}, last heartbeat {_seconds(seen, now)} ago)"
                )
                row.simulation_status = SimulationStatus.FAILED
                row.completed_at = now
            session.flush()
            return [row.simulation_id for row in rows]

    def fail_worker_simulations(self, worker_id: str, *, reason: str) -> list[uuid.UUID]:
        """Mark failed a worker's own pending and running rows (it is shutting down).

        Parameters
        ----------
        worker_id : str
            The worker.
        reason : str
            The error message stored on each row.

        Returns
        -------
        list of UUID
            The simulations marked failed.
        """
        _check_worker(worker_id)
        now = utcnow()
        with self._write() as session:
            rows = session.scalars(
                sa.select(TwinSimulation)
                .where(
                    TwinSimulation.worker_id == worker_id,
                    TwinSimulation.simulation_status.in_(_UNFINISHED),
                )
                .order_by(TwinSimulation.simulation_id)
                .with_for_update()
            ).all()
            for row in rows:
                row.error_message = f"{reason} (it was {row.simulation_status})"
                row.simulation_status = SimulationStatus.FAILED
                row.completed_at = now
            session.flush()
            return [row.simulation_id for row in rows]
