"""The repository's fidelity rows: simulations checked against real experiments."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bayestwin.errors import ConflictError, InvalidInputError
from bayestwin.schemas import FidelityResult, utcnow
from bayestwin.store.repository.base import RepositoryBase
from bayestwin.store.repository.rows import as_uuid, fidelity_result, json_fields, not_found, reload
from bayestwin.store.tables import DigitalTwinModel, TwinFidelityTracking, TwinSimulation
from bayestwin.vocabulary import SimulationStatus

__all__ = ["ValidationRecords", "already_validated"]


def _since(since: datetime | None, window_days: int | None) -> datetime | None:
    if since is not None and window_days is not None:
        raise InvalidInputError("give since or window_days, not both", field="window_days")
    if window_days is None:
        return since
    if window_days <= 0:
        raise InvalidInputError(f"window_days must be > 0, got {window_days}", field="window_days")
    return utcnow() - timedelta(days=window_days)


def already_validated(simulation_id: uuid.UUID) -> ConflictError:
    """The error of a second validation of a simulation."""
    return ConflictError(
        f"simulation {simulation_id} is already validated; pass replace=True to replace "
        "its validation",
        field="simulation_id",
        code="already_validated",
    )


def _replace_earlier(session: Session, simulation_id: uuid.UUID, *, replace: bool) -> None:
    """Refuse a second validation of a simulation, or delete the earlier ones."""
    earlier = sa.select(TwinFidelityTracking.tracking_id).where(
        TwinFidelityTracking.simulation_id == simulation_id
    )
    if session.scalar(earlier.limit(1)) is None:
        return
    if not replace:
        raise already_validated(simulation_id)
    session.execute(
        sa.delete(TwinFidelityTracking).where(TwinFidelityTracking.simulation_id == simulation_id)
    )
    session.flush()


class ValidationRecords(RepositoryBase):
    """Rows of ``twin_fidelity_tracking``: one per comparison with a real experiment."""

    def record_validation(self, result: FidelityResult, *, replace: bool = False) -> FidelityResult:
        """Store a validation and, when it carries one, the model's new fidelity score.

        A simulation is validated once: a second validation is refused unless
        ``replace`` is given, when the earlier ones are deleted. The check, the delete,
        the insert and the model's score are one transaction, with the simulation's row
        locked, so two concurrent validations of one simulation cannot both be stored.
        The score is taken from ``result.model_fidelity_score``; when it is None the
        model's score is left as is.

        Parameters
        ----------
        result : FidelityResult
            The comparison; ``simulation_id`` names a completed simulation.
        replace : bool
            Replace the simulation's earlier validation instead of refusing.

        Returns
        -------
        FidelityResult
            The stored row.

        Raises
        ------
        NotFoundError
            If the simulation does not exist.
        ConflictError
            ``invalid_state`` if the simulation has not completed; ``already_validated``
            if it has a validation and ``replace`` is False; ``already_exists`` if the
            tracking id is taken.
        """
        if result.simulation_id is None:
            raise InvalidInputError(
                "simulation_id is required to record a validation", field="simulation_id"
            )
        with self._write() as session:
            sim = session.get(TwinSimulation, result.simulation_id, with_for_update=True)
            if sim is None:
                not_found("simulation", result.simulation_id)
            if sim.simulation_status is not SimulationStatus.COMPLETED:
                raise ConflictError(
                    f"simulation {result.simulation_id} is {sim.simulation_status}; only a "
                    "completed simulation can be validated",
                    code="invalid_state",
                )
            _replace_earlier(session, result.simulation_id, replace=replace)
            if session.get(TwinFidelityTracking, result.tracking_id) is not None:
                raise ConflictError(
                    f"validation {result.tracking_id} already exists", code="already_exists"
                )
            data = result.model_dump(mode="python")
            data.update(json_fields(result, {"in_predictive_interval", "predictive_intervals"}))
            row = TwinFidelityTracking(**data)
            session.add(row)
            if result.model_fidelity_score is not None:
                model = session.get(DigitalTwinModel, sim.model_id, with_for_update=True)
                assert model is not None
                model.fidelity_score = result.model_fidelity_score
                model.updated_at = utcnow()
            reload(session, row)
            return fidelity_result(row)

    def get_validation(self, tracking_id: uuid.UUID | str) -> FidelityResult:
        """Return one validation.

        Raises
        ------
        NotFoundError
            If no validation has this id.
        """
        key = as_uuid(tracking_id, "tracking_id")
        with self._read() as session:
            row = session.get(TwinFidelityTracking, key)
            if row is None:
                not_found("validation", key)
            return fidelity_result(row)

    def list_validations(self, simulation_id: uuid.UUID | str) -> list[FidelityResult]:
        """Return a simulation's validations, oldest first.

        Raises
        ------
        NotFoundError
            If the simulation does not exist.
        """
        key = as_uuid(simulation_id, "simulation_id")
        with self._read() as session:
            if session.get(TwinSimulation, key) is None:
                not_found("simulation", key)
            rows = session.scalars(
                sa.select(TwinFidelityTracking)
                .where(TwinFidelityTracking.simulation_id == key)
                .order_by(TwinFidelityTracking.created_at, TwinFidelityTracking.tracking_id)
            ).all()
            return [fidelity_result(r) for r in rows]

    def fidelity_history(
        self,
        model_id: uuid.UUID | str,
        *,
        since: datetime | None = None,
        window_days: int | None = None,
    ) -> list[FidelityResult]:
        """Return a model's validations, oldest first.

        A validation's time is ``validated_at``, else ``created_at``.

        Parameters
        ----------
        model_id : UUID or str
            The model.
        since : datetime, optional
            Only validations at or after this time.
        window_days : int, optional
            Only validations of the last ``window_days`` days (e.g. the settings'
            ``fidelity_validation_window_days``). Not together with ``since``.

        Raises
        ------
        NotFoundError
            If the model does not exist.
        """
        key = as_uuid(model_id, "model_id")
        since = _since(since, window_days)
        when = sa.func.coalesce(TwinFidelityTracking.validated_at, TwinFidelityTracking.created_at)
        stmt = (
            sa.select(TwinFidelityTracking)
            .join(
                TwinSimulation, TwinSimulation.simulation_id == TwinFidelityTracking.simulation_id
            )
            .where(TwinSimulation.model_id == key)
            .order_by(when, TwinFidelityTracking.created_at, TwinFidelityTracking.tracking_id)
        )
        if since is not None:
            stmt = stmt.where(
                sa.or_(
                    TwinFidelityTracking.validated_at >= since,
                    sa.and_(
                        TwinFidelityTracking.validated_at.is_(None),
                        TwinFidelityTracking.created_at >= since,
                    ),
                )
            )
        with self._read() as session:
            if session.get(DigitalTwinModel, key) is None:
                not_found("model", key)
            return [fidelity_result(r) for r in session.scalars(stmt).all()]
