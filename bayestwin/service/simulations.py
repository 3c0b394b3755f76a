"""Simulations: a request's life from its checks to a completed (or failed) row.

A request is checked before any row is written: its fields by the schema, and what
depends on the active model (twin count, intervention type, target filters) by
:func:`bayestwin.engine.requests.check_request`, which also fills a twin count left
out with the setting ``default_twin_count``. An identical completed request is
answered from the cache (:mod:`bayestwin.service.memory`); else a pending row is
written and a worker of the :class:`~bayestwin.service.jobs.JobRunner` marks it
running, runs :meth:`~bayestwin.engine.simulation.SimulationEngine.simulate` and
completes it, or fails it with the error. A simulation still pending or running
``simulation_timeout_seconds`` after it was submitted is marked failed.

Each row names the worker (the service instance) that runs it, and the worker's
heartbeat stamps its unfinished rows alive every ``heartbeat_seconds``. A row whose
worker stopped reporting for ``3 * heartbeat_seconds`` (its process was killed,
crashed, or the server restarted) is marked failed by the next service that starts
or beats (:meth:`SimulationsMixin.fail_abandoned_simulations`), and a service that
closes fails its own rows that never ran: no row stays pending or running forever.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from pydantic import ValidationError

from bayestwin.engine.population import resolve_population
from bayestwin.engine.requests import check_request
from bayestwin.errors import ConflictError, NotFoundError, UnavailableError
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.schemas import (
    Page,
    SimulateInterventionRequest,
    SimulationResult,
    TwinModelInfo,
)
from bayestwin.service.memory import MemoryMixin, as_request
from bayestwin.service.models import ModelsMixin
from bayestwin.service.validations import one_per_experiment
from bayestwin.store.repository.matching import request_hash
from bayestwin.vocabulary import SimulationStatus

__all__ = ["SimulationsMixin"]

logger = logging.getLogger(__name__)

TIMEOUT_CODE = "timeout"

ABANDONED_AFTER_HEARTBEATS = 3
"""Heartbeats a worker may miss before its unfinished rows count as abandoned."""


@dataclass(frozen=True)
class _Prepared:
    request: SimulateInterventionRequest
    info: TwinModelInfo
    model: FittedTwinModel
    key: str
    warning: bool
    reason: str | None
    experiment_design_id: str | None

    @property
    def fidelity(self) -> dict[str, Any]:
        return {"fidelity_warning": self.warning, "fidelity_warning_reason": self.reason}


def _log_failure(future: Future[SimulationResult]) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    timed_out = isinstance(exc, UnavailableError) and exc.code == TIMEOUT_CODE
    if exc is not None and not timed_out and not isinstance(exc, ValidationError):
        logger.info("simulation failed: %s: %s", type(exc).__name__, exc)


class SimulationsMixin(ModelsMixin, MemoryMixin):
    """Submit, run, time out and list simulations."""

    # -- checks and the row ----------------------------------------------------------
    def _prepare(
        self,
        request: SimulateInterventionRequest | Mapping[str, Any],
        experiment_design_id: str | None,
    ) -> _Prepared:
        req = as_request(request)
        info, model = self.load_active_model(req.brand, req.target_population)
        checked = check_request(
            model,
            req.intervention_type,
            req.intervention_config,
            req.twin_count,
            req.confidence_level,
            req.random_seed,
            max_twin_count=self.settings.max_twin_count,
            default_twin_count=self.settings.default_twin_count,
        )
        if req.population_ids is not None:
            # unknown ids are refused here, before a row is written
            resolve_population(model, req.population_ids, np.random.default_rng(0))
        req = req.model_copy(update={"twin_count": checked.twin_count})
        key = request_hash(req, extra=self._decision_settings())
        history = self.repository.fidelity_history(
            info.model_id, window_days=self.settings.fidelity_validation_window_days
        )
        warning, reason = self.tracker.warning(one_per_experiment(history))
        return _Prepared(req, info, model, key, warning, reason, experiment_design_id)

    def _decision_settings(self) -> dict[str, Any]:
        st = self.settings
        return {
            "min_effect_threshold": st.min_effect_threshold,
            "confidence_threshold": st.confidence_threshold,
            "power_alpha": st.power_alpha,
            "power_target": st.power_target,
        }

    def _from_cache(self, prep: _Prepared) -> SimulationResult | None:
        return self._cached(prep.info.model_id, prep.key, prep.request.random_seed, **prep.fidelity)

    def _pending_row(self, prep: _Prepared, simulation_id: uuid.UUID | None) -> SimulationResult:
        req = prep.request
        assert req.twin_count is not None  # filled in by _prepare
        pending = SimulationResult(
            simulation_id=simulation_id or uuid.uuid4(),
            model_id=prep.info.model_id,
            experiment_design_id=prep.experiment_design_id,
            brand=req.brand,
            twin_type=req.target_population,
            intervention_type=req.intervention_type,
            intervention_config=req.intervention_config.model_copy(
                update={"intervention_type": req.intervention_type}
            ),
            twin_count=req.twin_count,
            confidence_level=req.confidence_level,
            random_seed=req.random_seed,
            simulation_status=SimulationStatus.PENDING,
        )
        return self.repository.create_simulation(
            pending, request_hash=prep.key, worker_id=self.worker_id
        )

    # -- the job -------------------------------------------------------------------
    def _timeout_error(self, simulation_id: uuid.UUID) -> UnavailableError:
        seconds = float(self.settings.simulation_timeout_seconds)
        return UnavailableError(
            f"simulation {simulation_id} did not finish within {seconds:g} s "
            "(simulation_timeout_seconds) and was marked failed",
            code=TIMEOUT_CODE,
        )

    def _expire(self, simulation_id: uuid.UUID) -> None:
        """Mark a simulation past its deadline failed (unless it finished meanwhile)."""
        seconds = float(self.settings.simulation_timeout_seconds)
        with suppress(ConflictError, NotFoundError):
            self.repository.fail_simulation(
                simulation_id,
                f"timed out after {seconds:g} s (simulation_timeout_seconds)",
                execution_time_ms=int(seconds * 1000),
            )

    def _execute(self, prep: _Prepared, simulation_id: uuid.UUID) -> SimulationResult:
        try:
            self.repository.mark_running(simulation_id)
        except ConflictError:
            # It timed out while it waited for a worker.
            raise self._timeout_error(simulation_id) from None
        started = time.perf_counter()
        req = prep.request
        try:
            result = self.engine.simulate(
                prep.model,
                req.intervention_type,
                req.intervention_config,
                twin_count=req.twin_count,
                confidence_level=req.confidence_level,
                random_seed=req.random_seed,
                fidelity_warning=prep.warning,
                fidelity_warning_reason=prep.reason,
                experiment_design_id=prep.experiment_design_id,
                horizon=req.horizon if req.horizon is not None else self.settings.horizon,
                population=req.population_ids,
            )
        except BaseException as exc:
            elapsed = int(round((time.perf_counter() - started) * 1000))
            with suppress(ConflictError):
                self.repository.fail_simulation(simulation_id, exc, execution_time_ms=elapsed)
            raise
        done = result.model_copy(
            update={"simulation_id": simulation_id, "model_id": prep.info.model_id}
        )
        try:
            stored = self.repository.complete_simulation(done)
        except ConflictError:
            raise self._timeout_error(simulation_id) from None
        return self._remembered(stored)

    def _launch(self, prep: _Prepared, pending: SimulationResult) -> Future[SimulationResult]:
        sid = pending.simulation_id
        try:
            return self._runner.submit(sid, self._execute, prep, sid)
        except RuntimeError as exc:  # the runner is closed
            with suppress(ConflictError):
                self.repository.fail_simulation(sid, exc)
            raise

    # -- public ----------------------------------------------------------------------
    def submit(
        self,
        request: SimulateInterventionRequest | Mapping[str, Any],
        *,
        experiment_design_id: str | None = None,
        simulation_id: uuid.UUID | None = None,
        on_done: Callable[[Future[SimulationResult]], None] | None = None,
    ) -> SimulationResult:
        """Start a simulation in the background and return its row at once.

        Parameters
        ----------
        request : SimulateInterventionRequest or mapping
            What to simulate; a ``twin_count`` left out is ``default_twin_count``.
        experiment_design_id : str, optional
            The experiment design this simulation belongs to.
        simulation_id : UUID, optional
            Id of the new row (default: a new UUID).
        on_done : callable, optional
            Called with the worker's future when it finishes.

        Returns
        -------
        SimulationResult
            The pending row, or the completed cached result of the same request, model
            and seed (``from_cache=True``); with the similar past simulations. Poll
            :meth:`get_simulation` for the outcome.

        Raises
        ------
        pydantic.ValidationError, InvalidInputError
            A request field is wrong (before anything is stored).
        NotFoundError
            No model is active for the brand and twin type (code ``no_active_model``).
        """
        prep = self._prepare(request, experiment_design_id)
        cached = self._from_cache(prep)
        if cached is not None:
            return cached
        pending = self._pending_row(prep, simulation_id)
        future = self._launch(prep, pending)
        future.add_done_callback(_log_failure)
        if on_done is not None:
            future.add_done_callback(on_done)
        return self._remembered(pending, **prep.fidelity)

    def simulate(
        self,
        request: SimulateInterventionRequest | Mapping[str, Any],
        *,
        experiment_design_id: str | None = None,
    ) -> SimulationResult:
        """Run a simulation and wait for it (at most ``simulation_timeout_seconds``).

        Parameters
        ----------
        request : SimulateInterventionRequest or mapping
            What to simulate (spec 6.1); a ``twin_count`` left out is
            ``default_twin_count``.
        experiment_design_id : str, optional
            The experiment design this simulation belongs to.

        Returns
        -------
        SimulationResult
            The completed, stored result (draws included), with ``fidelity_warning`` set
            from the model's fidelity history, ``from_cache`` telling whether it was
            served from the cache, and the similar past simulations.

        Raises
        ------
        pydantic.ValidationError, InvalidInputError
            A request field is wrong (nothing is stored).
        NotFoundError
            No model is active for the brand and twin type (code ``no_active_model``).
        UnavailableError
            It ran past the timeout (code ``timeout``); the row is failed.
        Exception
            Whatever the engine raised; the row is failed with it.
        """
        prep = self._prepare(request, experiment_design_id)
        cached = self._from_cache(prep)
        if cached is not None:
            return cached
        pending = self._pending_row(prep, None)
        future = self._launch(prep, pending)
        try:
            return future.result(timeout=float(self.settings.simulation_timeout_seconds))
        except FutureTimeout:
            # Fail the row before answering, whether or not the watchdog got there first.
            self._runner.cancel_deadline(pending.simulation_id)
            self._expire(pending.simulation_id)
            future.add_done_callback(_log_failure)
            raise self._timeout_error(pending.simulation_id) from None

    def get_simulation(
        self, simulation_id: uuid.UUID | str, *, include_draws: bool = False
    ) -> SimulationResult:
        """Return one simulation (:class:`~bayestwin.errors.NotFoundError` when unknown)."""
        return self.repository.get_simulation(simulation_id, include_draws=include_draws)

    def list_simulations(self, **filters: Any) -> Page[SimulationResult]:
        """List simulations (see :meth:`TwinRepository.list_simulations`)."""
        return self.repository.list_simulations(**filters)

    def fail_abandoned_simulations(self, *, at_startup: bool = False) -> list[uuid.UUID]:
        """Mark failed the pending and running rows that no live worker owns.

        A row is abandoned when its worker is another one (or none) and has not
        reported it alive for three heartbeats (``3 * heartbeat_seconds``): its process
        stopped (killed, crashed, or the server restarted). The service calls this when
        it starts and on every heartbeat.

        Parameters
        ----------
        at_startup : bool
            Say in the stored reason that the row was found at start-up.

        Returns
        -------
        list of UUID
            The simulations marked failed.
        """
        when = " at start-up" if at_startup else ""
        failed = self.repository.fail_unowned_simulations(
            self.worker_id,
            timedelta(seconds=ABANDONED_AFTER_HEARTBEATS * self.heartbeat_seconds),
            reason=f"abandoned: no live worker owned it{when} (its process stopped or the "
            "server restarted)",
        )
        if failed:
            logger.warning("marked %d abandoned simulations failed", len(failed))
        return failed

    def _beat(self) -> None:
        """One heartbeat: report this worker's rows alive, fail the abandoned ones."""
        if self._runner.active:
            self.repository.heartbeat(self.worker_id)
        self.fail_abandoned_simulations()

    def fail_stale_simulations(self) -> list[uuid.UUID]:
        """Mark simulations left pending or running past the timeout (a crash) failed."""
        seconds = float(self.settings.simulation_timeout_seconds)
        return self.repository.fail_stale_simulations(
            timedelta(seconds=seconds), reason="abandoned (timed out or the process stopped)"
        )
