"""The repository's simulation rows and their life cycle.

::

    create_simulation   -> pending
    mark_running        -> running
    complete_simulation -> completed   (one UPDATE; the table refuses a completed row
                                        without its ATE, interval, time and result)
    fail_simulation     -> failed      (with the error and the execution time)

A process that dies mid-simulation leaves its row pending or running, never
half-written completed; :meth:`SimulationRecords.fail_stale_simulations` (by age) and
:meth:`~bayestwin.store.repository.workers.WorkerRecords.fail_unowned_simulations` (by
the worker's heartbeat) close such rows.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, undefer

from bayestwin.errors import ConflictError, InvalidInputError
from bayestwin.schemas import HEAVY_FIELDS, Page, SimulationResult, utcnow
from bayestwin.store.repository import matching
from bayestwin.store.repository.base import RepositoryBase
from bayestwin.store.repository.rows import (
    REQUEST_FIELDS,
    SERVED_FIELDS,
    as_uuid,
    check_seed,
    check_window,
    error_text,
    json_fields,
    not_found,
    reload,
    simulation_result,
)
from bayestwin.store.tables import DigitalTwinModel, TwinSimulation
from bayestwin.vocabulary import SimulationStatus, TwinType

__all__ = ["SimulationRecords"]


def _invalid_state(message: str) -> ConflictError:
    return ConflictError(message, code="invalid_state")


def _locked_simulation(session: Session, key: uuid.UUID) -> TwinSimulation:
    row = session.get(TwinSimulation, key, with_for_update=True, populate_existing=True)
    if row is None:
        not_found("simulation", key)
    return row


def _completed(result: SimulationResult) -> SimulationResult:
    """``result`` as a completed simulation, checked before it is written."""
    payload = result.model_dump()
    payload["simulation_status"] = SimulationStatus.COMPLETED
    payload["completed_at"] = result.completed_at or utcnow()
    done = SimulationResult.model_validate(payload)
    if done.simulated_ci_lower is None or done.simulated_ci_upper is None:
        raise InvalidInputError("a completed simulation needs simulated_ci_lower and _upper")
    check_seed(done.random_seed)
    return done


def _check_completable(row: TwinSimulation, done: SimulationResult) -> None:
    if row.simulation_status is not SimulationStatus.RUNNING:
        raise _invalid_state(
            f"simulation {done.simulation_id} is {row.simulation_status}, not running; "
            "cannot complete it"
        )
    for name in REQUEST_FIELDS:
        stored, given = getattr(row, name), getattr(done, name)
        if stored != given:
            raise _invalid_state(
                f"result does not belong to simulation {done.simulation_id}: "
                f"{name} is {given!r}, stored {stored!r}"
            )


def _write_result(row: TwinSimulation, done: SimulationResult) -> None:
    summary = json.loads(done.model_dump_json(exclude={*HEAVY_FIELDS, *SERVED_FIELDS}))
    heavy = json_fields(done, set(HEAVY_FIELDS))
    row.simulation_status = SimulationStatus.COMPLETED
    row.simulated_ate = done.simulated_ate
    row.simulated_ci_lower = done.simulated_ci_lower
    row.simulated_ci_upper = done.simulated_ci_upper
    row.recommendation = done.recommendation
    row.recommended_sample_size = done.recommended_sample_size
    row.execution_time_ms = done.execution_time_ms
    row.completed_at = done.completed_at
    row.intervention_config = done.intervention_config.model_dump(mode="json")
    row.confidence_level = done.confidence_level
    if done.random_seed is not None:
        row.random_seed = done.random_seed
    if done.experiment_design_id is not None:
        row.experiment_design_id = done.experiment_design_id
    row.error_message = None
    row.result = summary
    row.ate_draws = heavy.get("ate_draws")
    row.twin_unit_ids = heavy.get("twin_unit_ids")


def _pending_row(
    simulation: SimulationResult, request_hash: str, worker_id: str | None
) -> TwinSimulation:
    return TwinSimulation(
        simulation_id=simulation.simulation_id,
        model_id=simulation.model_id,
        experiment_design_id=simulation.experiment_design_id,
        brand=simulation.brand,
        twin_type=simulation.twin_type,
        intervention_type=simulation.intervention_type,
        intervention_config=simulation.intervention_config.model_dump(mode="json"),
        twin_count=simulation.twin_count,
        confidence_level=simulation.confidence_level,
        random_seed=simulation.random_seed,
        request_hash=request_hash,
        simulation_status=SimulationStatus.PENDING,
        created_at=simulation.created_at,
        worker_id=worker_id,
        heartbeat_at=utcnow() if worker_id is not None else None,
    )


class SimulationRecords(RepositoryBase):
    """Rows of ``twin_simulations``: one per simulation, from request to result."""

    def create_simulation(
        self,
        simulation: SimulationResult,
        *,
        request_hash: str | None = None,
        worker_id: str | None = None,
    ) -> SimulationResult:
        """Store a new simulation as pending.

        Parameters
        ----------
        simulation : SimulationResult
            The request's fields (brand, twin type, intervention, twin count, ...), in
            status pending. ``model_id`` must name a registered model.
        request_hash : str, optional
            Cache key of the request; defaults to
            :func:`~bayestwin.store.repository.matching.request_hash` of ``simulation``.
        worker_id : str, optional
            The live worker that will run it (see
            :class:`~bayestwin.store.repository.workers.WorkerRecords`); None: nobody
            reports it alive, so it counts as abandoned once it is older than the grace
            period of :meth:`fail_unowned_simulations`.

        Returns
        -------
        SimulationResult
            The pending row.

        Raises
        ------
        NotFoundError
            If the model does not exist.
        ConflictError
            ``already_exists`` if the simulation id is taken; ``invalid_state`` if
            ``simulation`` is not pending.
        InvalidInputError
            If ``model_id`` is missing or the seed cannot be stored.
        """
        if simulation.simulation_status is not SimulationStatus.PENDING:
            raise _invalid_state(
                f"a new simulation must be pending, got {simulation.simulation_status}"
            )
        if simulation.model_id is None:
            raise InvalidInputError("model_id is required to store a simulation", field="model_id")
        check_seed(simulation.random_seed)
        key = request_hash or matching.request_hash(simulation)
        with self._write() as session:
            if session.get(DigitalTwinModel, simulation.model_id) is None:
                not_found("model", simulation.model_id)
            if session.get(TwinSimulation, simulation.simulation_id) is not None:
                raise ConflictError(
                    f"simulation {simulation.simulation_id} already exists", code="already_exists"
                )
            row = _pending_row(simulation, key, worker_id)
            session.add(row)
            reload(session, row)
            return simulation_result(row, include_draws=False)

    def mark_running(self, simulation_id: uuid.UUID | str) -> SimulationResult:
        """Move a simulation from pending to running.

        Raises
        ------
        NotFoundError
            If the simulation does not exist.
        ConflictError
            ``invalid_state`` if it is not pending.
        """
        key = as_uuid(simulation_id, "simulation_id")
        with self._write() as session:
            row = _locked_simulation(session, key)
            if row.simulation_status is not SimulationStatus.PENDING:
                raise _invalid_state(
                    f"simulation {key} is {row.simulation_status}, not pending; cannot start it"
                )
            row.simulation_status = SimulationStatus.RUNNING
            row.started_at = row.heartbeat_at = utcnow()
            reload(session, row)
            return simulation_result(row, include_draws=False)

    def complete_simulation(self, result: SimulationResult) -> SimulationResult:
        """Store a simulation's result and mark it completed, in one transaction.

        Parameters
        ----------
        result : SimulationResult
            The computed result; ``simulation_id`` names a running simulation and the
            request's fields (model, brand, twin type, intervention type, twin count)
            must equal the stored ones. ``completed_at`` defaults to now. How it was
            served (``from_cache``, ``similar_simulations``) is not stored.

        Returns
        -------
        SimulationResult
            The completed row, draws included.

        Raises
        ------
        NotFoundError
            If the simulation does not exist.
        ConflictError
            ``invalid_state`` if it is not running, or the result belongs to another
            request.
        """
        done = _completed(result)
        with self._write() as session:
            row = _locked_simulation(session, done.simulation_id)
            _check_completable(row, done)
            _write_result(row, done)
            reload(session, row)
            return simulation_result(row, include_draws=True)

    def fail_simulation(
        self,
        simulation_id: uuid.UUID | str,
        error: str | BaseException,
        *,
        execution_time_ms: int | None = None,
    ) -> SimulationResult:
        """Mark a pending or running simulation failed, with its error.

        Parameters
        ----------
        simulation_id : UUID or str
            The simulation.
        error : str or exception
            What went wrong; an exception is stored as ``"Type: message"``.
        execution_time_ms : int, optional
            Time spent before the failure.

        Raises
        ------
        NotFoundError
            If the simulation does not exist.
        ConflictError
            ``invalid_state`` if it already completed or failed.
        """
        key = as_uuid(simulation_id, "simulation_id")
        if execution_time_ms is not None and execution_time_ms < 0:
            raise InvalidInputError(
                f"execution_time_ms must be >= 0, got {execution_time_ms}",
                field="execution_time_ms",
            )
        with self._write() as session:
            row = _locked_simulation(session, key)
            if row.simulation_status in (SimulationStatus.COMPLETED, SimulationStatus.FAILED):
                raise _invalid_state(
                    f"simulation {key} is already {row.simulation_status}; cannot fail it"
                )
            row.simulation_status = SimulationStatus.FAILED
            row.error_message = error_text(error)
            row.execution_time_ms = execution_time_ms
            row.completed_at = utcnow()
            reload(session, row)
            return simulation_result(row, include_draws=False)

    def get_simulation(
        self, simulation_id: uuid.UUID | str, *, include_draws: bool = True
    ) -> SimulationResult:
        """Return one simulation.

        Parameters
        ----------
        simulation_id : UUID or str
            The simulation.
        include_draws : bool
            Load the heavy fields (``ate_draws`` and ``twin_unit_ids``) too.

        Raises
        ------
        NotFoundError
            If the simulation does not exist.
        """
        key = as_uuid(simulation_id, "simulation_id")
        options = [undefer(TwinSimulation.ate_draws), undefer(TwinSimulation.twin_unit_ids)]
        with self._read() as session:
            row = session.get(TwinSimulation, key, options=options if include_draws else [])
            if row is None:
                not_found("simulation", key)
            return simulation_result(row, include_draws=include_draws)

    def list_simulations(
        self,
        *,
        brand: str | None = None,
        twin_type: TwinType | str | None = None,
        status: SimulationStatus | str | None = None,
        intervention_type: str | None = None,
        model_id: uuid.UUID | str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[SimulationResult]:
        """List simulations, newest first, without their draws.

        Parameters
        ----------
        brand, twin_type, status, intervention_type, model_id : optional
            Filters (all must hold).
        limit, offset : int
            Page window (``1 <= limit <= 1000``).

        Returns
        -------
        Page of SimulationResult
            ``total`` counts every match.
        """
        check_window(limit, offset)
        conditions: list[sa.ColumnElement[bool]] = []
        if brand is not None:
            conditions.append(TwinSimulation.brand == brand)
        if twin_type is not None:
            conditions.append(TwinSimulation.twin_type == TwinType(twin_type))
        if status is not None:
            conditions.append(TwinSimulation.simulation_status == SimulationStatus(status))
        if intervention_type is not None:
            conditions.append(TwinSimulation.intervention_type == intervention_type)
        if model_id is not None:
            conditions.append(TwinSimulation.model_id == as_uuid(model_id, "model_id"))
        with self._read() as session:
            total = session.scalar(
                sa.select(sa.func.count()).select_from(TwinSimulation).where(*conditions)
            )
            rows = session.scalars(
                sa.select(TwinSimulation)
                .where(*conditions)
                .order_by(TwinSimulation.created_at.desc(), TwinSimulation.simulation_id)
                .limit(limit)
                .offset(offset)
            ).all()
            return Page[SimulationResult](
                items=[simulation_result(r, include_draws=False) for r in rows],
                total=total or 0,
                limit=limit,
                offset=offset,
            )

    def fail_stale_simulations(
        self, older_than: timedelta, *, reason: str = "abandoned"
    ) -> list[uuid.UUID]:
        """Mark pending or running simulations created before ``now - older_than`` failed.

        Call this at start-up, e.g. with the settings' ``simulation_timeout_seconds``,
        to close the rows of processes that died mid-simulation.

        Parameters
        ----------
        older_than : timedelta
            Age after which an unfinished simulation counts as abandoned.
        reason : str
            Start of the error message stored on each row.

        Returns
        -------
        list of UUID
            The simulations marked failed.
        """
        if older_than < timedelta(0):
            raise InvalidInputError(f"older_than must be >= 0, got {older_than}")
        now = utcnow()
        with self._write() as session:
            rows = session.scalars(
                sa.select(TwinSimulation)
                .where(
                    TwinSimulation.simulation_status.in_(
                        [SimulationStatus.PENDING, SimulationStatus.RUNNING]
                    ),
                    TwinSimulation.created_at < now - older_than,
                )
                .order_by(TwinSimulation.simulation_id)
                .with_for_update()
            ).all()
            for row in rows:
                row.error_message = f"{reason}: still {row.simulation_status} after {older_than}"
                row.simulation_status = SimulationStatus.FAILED
                row.completed_at = now
            session.flush()
            return [row.simulation_id for row in rows]
