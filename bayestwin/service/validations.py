"""Validations: real experiments' results, fidelity checks and a model's fidelity.

A completed simulation is compared with its real experiment by
:meth:`~bayestwin.engine.fidelity.FidelityTracker.validate`; the real result is given,
or looked up by experiment id in the service's
:class:`~bayestwin.service.experiments.ExperimentResultSource`. The check is stored and,
with the MLflow registry, logged on the run of the model's fit.

**Each real experiment counts once.** A simulation is validated once: validating it
again is a :class:`~bayestwin.errors.ConflictError` (code ``already_validated``) unless
``replace=True``, which deletes the earlier validation. A model's fidelity score (and
its warning and validation count) counts each real experiment once: when one
experiment validated several simulations of the model, only its latest validation
counts (:func:`one_per_experiment`). A validation without an experiment id counts on
its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from bayestwin.core.outcomes import outcome_from_frame
from bayestwin.engine.fidelity import FidelitySummary
from bayestwin.errors import ConflictError, InvalidInputError, NotFoundError
from bayestwin.schemas import ExperimentOutcome, FidelityResult, TwinModelInfo, utcnow
from bayestwin.service.base import ServiceBase
from bayestwin.store.repository.validations import already_validated
from bayestwin.vocabulary import SimulationStatus

__all__ = ["ModelFidelity", "ValidationsMixin", "one_per_experiment"]

_EXPERIMENT_FIELD = "actual_experiment_id"


def one_per_experiment(history: Sequence[FidelityResult]) -> list[FidelityResult]:
    """Keep each real experiment's latest validation, in the order given.

    Parameters
    ----------
    history : sequence of FidelityResult
        A model's validations, oldest first.

    Returns
    -------
    list of FidelityResult
        For each ``actual_experiment_id`` its last entry; entries without an
        experiment id are all kept.
    """
    last = {r.actual_experiment_id: r.tracking_id for r in history if r.actual_experiment_id}
    return [
        r
        for r in history
        if not r.actual_experiment_id or last[r.actual_experiment_id] == r.tracking_id
    ]


@dataclass(frozen=True)
class ModelFidelity:
    """A model's fidelity: the summary over its window and the validations behind it.

    Attributes
    ----------
    model : TwinModelInfo
        The model row.
    summary : FidelitySummary
        Score, validation count, warning and grade counts over the window.
    history : list of FidelityResult
        The model's validations, oldest first.
    """

    model: TwinModelInfo
    summary: FidelitySummary
    history: list[FidelityResult]


class ValidationsMixin(ServiceBase):
    """Register real results, validate simulations, report a model's fidelity."""

    def register_experiment_result(
        self,
        experiment_id: str,
        outcome: ExperimentOutcome | Mapping[str, Any],
        *,
        overwrite: bool = False,
    ) -> ExperimentOutcome:
        """Store a real experiment's result so that it can be validated against by id.

        Parameters
        ----------
        experiment_id : str
            The experiment's id.
        outcome : ExperimentOutcome or mapping
            Its result.
        overwrite : bool
            Replace an existing result.

        Returns
        -------
        ExperimentOutcome
            What was stored.

        Raises
        ------
        TypeError
            If the experiment source cannot store results.
        ConflictError
            If the experiment has a result and ``overwrite`` is False.
        """
        register = getattr(self.experiment_source, "register_result", None)
        if register is None:
            raise TypeError(
                f"{type(self.experiment_source).__name__} is read-only; it cannot store results"
            )
        parsed = (
            outcome
            if isinstance(outcome, ExperimentOutcome)
            else ExperimentOutcome.model_validate(dict(outcome))
        )
        stored: ExperimentOutcome = register(experiment_id, parsed, overwrite=overwrite)
        return stored

    def experiment_result(self, experiment_id: str) -> ExperimentOutcome:
        """Return a real experiment's result from the source.

        Raises
        ------
        NotFoundError
            With code ``"experiment_not_found"`` if the source has none.
        """
        found = self.experiment_source.get_result(experiment_id)
        if found is None:
            raise NotFoundError(
                f"result of experiment {experiment_id!r} not found; register it with "
                "register_experiment_result, or pass the outcome",
                field=_EXPERIMENT_FIELD,
                code="experiment_not_found",
            )
        return found

    def outcome_from_frame(
        self, frame: pd.DataFrame, family: str, **kwargs: Any
    ) -> ExperimentOutcome:
        """Summarise a real two-arm experiment, one row per unit, as an outcome.

        Parameters
        ----------
        frame : DataFrame
            One row per unit with an arm label and an outcome.
        family : str
            The outcome family.
        **kwargs
            Passed to :func:`bayestwin.core.outcomes.outcome_from_frame`
            (``arm_column``, ``outcome_column``, ``actual_experiment_id``...).

        Returns
        -------
        ExperimentOutcome
            The summary.
        """
        return outcome_from_frame(frame, family, **kwargs)

    def _real_outcome(
        self,
        actual_experiment_id: str | None,
        outcome: ExperimentOutcome | pd.DataFrame | Mapping[str, Any] | None,
    ) -> ExperimentOutcome | pd.DataFrame:
        if outcome is None:
            if not actual_experiment_id:
                raise InvalidInputError(
                    "give the experiment id (actual_experiment_id) or the outcome",
                    field=_EXPERIMENT_FIELD,
                )
            return self.experiment_result(actual_experiment_id)
        if isinstance(outcome, ExperimentOutcome | pd.DataFrame):
            return outcome
        return ExperimentOutcome.model_validate(dict(outcome))

    def validate(
        self,
        simulation_id: uuid.UUID | str,
        actual_experiment_id: str | None = None,
        outcome: ExperimentOutcome | pd.DataFrame | Mapping[str, Any] | None = None,
        *,
        family: str | None = None,
        validated_at: datetime | None = None,
        replace: bool = False,
    ) -> FidelityResult:
        """Compare a completed simulation with its real experiment and record it.

        Parameters
        ----------
        simulation_id : UUID or str
            The simulation.
        actual_experiment_id : str, optional
            The real experiment; its result is looked up in the experiment source when
            ``outcome`` is not given.
        outcome : ExperimentOutcome, DataFrame or mapping, optional
            The real result: a summary, or one row per unit (``arm``, ``outcome``).
        family : str, optional
            Outcome family of a DataFrame (default: the simulation's).
        validated_at : datetime, optional
            Time of the validation (default now).
        replace : bool
            Replace the simulation's earlier validation (it is deleted) instead of
            refusing a second one.

        Returns
        -------
        FidelityResult
            The stored validation, with the model's fidelity score over its window,
            each real experiment counted once.

        Raises
        ------
        NotFoundError
            If the simulation does not exist, or (code ``"experiment_not_found"``) no
            ``outcome`` is given and no result is registered for the experiment.
        ConflictError
            If the simulation has not completed (code ``"invalid_state"``), or is
            validated already and ``replace`` is False (code ``"already_validated"``).
        InvalidInputError
            If neither the experiment id nor the outcome is given.
        """
        simulation = self.repository.get_simulation(simulation_id, include_draws=True)
        if simulation.simulation_status is not SimulationStatus.COMPLETED:
            raise ConflictError(
                f"simulation {simulation.simulation_id} is {simulation.simulation_status}; "
                "only a completed simulation can be validated",
                code="invalid_state",
            )
        earlier = self.repository.list_validations(simulation.simulation_id)
        if earlier and not replace:
            raise already_validated(simulation.simulation_id)
        real = self._real_outcome(actual_experiment_id, outcome)
        assert simulation.model_id is not None
        result = self.tracker.validate(
            simulation,
            real,
            family=family,
            actual_experiment_id=actual_experiment_id,
            validated_at=validated_at,
        )
        history = [
            r
            for r in self._window_history(simulation.model_id)
            if r.simulation_id != simulation.simulation_id
        ]
        stored = self.repository.record_validation(self._scored(result, history), replace=replace)
        if self._registry is not None:
            model = self.repository.get_model(simulation.model_id)
            if model.mlflow_run_id:
                self._registry_call("log_fidelity", model, stored, len(history))
        return stored

    def _scored(self, result: FidelityResult, history: list[FidelityResult]) -> FidelityResult:
        """``result`` with the model's score over its history, one per experiment."""
        counted = one_per_experiment([*history, result])
        summary = self.tracker.summarize(counted, as_of=result.validated_at or utcnow())
        return result.model_copy(
            update={"model_fidelity_score": summary.score, "fidelity_warning": summary.warning}
        )

    def _window_history(self, model_id: uuid.UUID) -> list[FidelityResult]:
        """A model's validations in the fidelity window, oldest first."""
        return self.repository.fidelity_history(
            model_id, window_days=self.settings.fidelity_validation_window_days
        )

    def model_fidelity(
        self, model_id: uuid.UUID | str, *, all_history: bool = False
    ) -> ModelFidelity:
        """Return a model's fidelity summary and its validations.

        Parameters
        ----------
        model_id : UUID or str
            The model.
        all_history : bool
            Return every validation, not only those in the window (the summary always
            covers the window).
        """
        info = self.repository.get_model(model_id)
        window = self.settings.fidelity_validation_window_days
        history = self.repository.fidelity_history(
            info.model_id, window_days=None if all_history else window
        )
        in_window = history if not all_history else self._window_history(info.model_id)
        summary = self.tracker.summarize(one_per_experiment(in_window))
        return ModelFidelity(model=info, summary=summary, history=history)
