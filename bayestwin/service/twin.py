""":class:`TwinService`: the service's jobs put together over one state.

The service builds everything below it from its settings: the repository, the
simulation engine and the fidelity tracker (with the settings' thresholds), the
experiment result source, the MLflow registry and the job runner.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import fields
from pathlib import Path
from typing import Literal

from bayestwin.core.grading import FidelityThresholds
from bayestwin.engine.fidelity import FidelityTracker
from bayestwin.engine.simulation import EngineSettings, SimulationEngine
from bayestwin.service.experiments import ExperimentResultSource, JsonExperimentResultStore
from bayestwin.service.fitting_all import FitAllMixin
from bayestwin.service.heartbeat import Heartbeat, worker_token
from bayestwin.service.jobs import JobRunner
from bayestwin.service.registry import MlflowRegistry
from bayestwin.service.rehearsals import RehearsalsMixin
from bayestwin.service.simulations import SimulationsMixin
from bayestwin.service.validations import ValidationsMixin
from bayestwin.settings import Settings, load_settings
from bayestwin.store.migrations import upgrade
from bayestwin.store.repository import TwinRepository

__all__ = ["TwinService"]

logger = logging.getLogger(__name__)


def _tracker(settings: Settings) -> FidelityTracker:
    return FidelityTracker(
        FidelityThresholds(
            min_effect_threshold=settings.min_effect_threshold,
            min_fidelity_score=settings.min_fidelity_score,
            fidelity_validation_window_days=settings.fidelity_validation_window_days,
            min_validations_for_score=settings.min_validations_for_score,
        )
    )


def _engine(settings: Settings) -> SimulationEngine:
    return SimulationEngine(**{f.name: getattr(settings, f.name) for f in fields(EngineSettings)})


class TwinService(FitAllMixin, SimulationsMixin, ValidationsMixin, RehearsalsMixin):
    """Fit, register, activate, simulate and validate twin models.

    Parameters
    ----------
    settings : Settings, optional
        Thresholds, limits and storage locations (default
        :func:`~bayestwin.settings.load_settings`).
    repository : TwinRepository, optional
        Database access; by default one on the settings' database (closed by
        :meth:`close`), whose migrations the service applies when it opens it.
    model_store_dir : path-like, optional
        Where model directories are written (default ``<data_dir>/models``).
    experiment_source : ExperimentResultSource, optional
        Where real experiments' results are looked up by id (default a
        :class:`~bayestwin.service.experiments.JsonExperimentResultStore` in
        ``<data_dir>/experiments``).
    registry : {"auto", None} or MlflowRegistry
        ``"auto"`` uses the MLflow registry of the settings' tracking store when
        :mod:`bayestwin.store.mlflow.registry` is importable; None turns it off.
    max_workers : int
        Simulations that run at the same time (each uses one BLAS thread).
    heartbeat_seconds : float
        Seconds between two heartbeats of this worker (see
        :mod:`bayestwin.service.heartbeat`): its unfinished rows are stamped alive, and
        rows whose worker missed three heartbeats are marked failed.

    Notes
    -----
    Safe to share between threads. Loaded models are kept in memory by model id, and
    used while their files are unchanged.

    When it starts, the service marks failed every pending or running simulation that
    no live worker owns (:meth:`fail_abandoned_simulations`); when it closes, it marks
    failed its own rows that never ran. Several services (processes) may share one
    database: each one's heartbeat keeps its own rows alive.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        repository: TwinRepository | None = None,
        model_store_dir: str | os.PathLike[str] | None = None,
        *,
        experiment_source: ExperimentResultSource | None = None,
        registry: Literal["auto"] | MlflowRegistry | None = "auto",
        max_workers: int = 2,
        heartbeat_seconds: float = 5.0,
    ) -> None:
        if not heartbeat_seconds > 0:
            raise ValueError(f"heartbeat_seconds must be > 0, got {heartbeat_seconds}")
        self.settings = settings if settings is not None else load_settings()
        self._owns_repository = repository is None
        self._applied: list[str] = []
        if repository is None:
            repository = TwinRepository(self.settings.resolved_database_url(), ensure_schema=False)
            self._applied = upgrade(repository.engine)
        self.repository = repository
        data_dir = self.settings.resolved_data_dir()
        self.model_store_dir = (
            Path(model_store_dir) if model_store_dir is not None else data_dir / "models"
        )
        self.experiment_source = (
            experiment_source
            if experiment_source is not None
            else JsonExperimentResultStore(data_dir / "experiments")
        )
        if registry == "auto":
            self._registry, self.registry_status = MlflowRegistry.discover(self.settings)
        elif registry is None:
            self._registry, self.registry_status = None, "disabled"
        else:
            self._registry, self.registry_status = registry, f"enabled ({registry.tracking_uri})"
        self.engine = _engine(self.settings)
        self.tracker = _tracker(self.settings)
        self._models = {}
        self._models_lock = threading.Lock()
        self._runner = JobRunner(
            max_workers, float(self.settings.simulation_timeout_seconds), self._expire
        )
        self._closed = False
        self.worker_id = worker_token()
        self.heartbeat_seconds = float(heartbeat_seconds)
        try:
            self.fail_abandoned_simulations(at_startup=True)
        except Exception:
            logger.warning("could not fail the abandoned simulations at start-up", exc_info=True)
        self._heartbeat = Heartbeat(self.heartbeat_seconds, self._beat)
        self._heartbeat.start()

    # -- life cycle --------------------------------------------------------------------
    def close(self) -> None:
        """Stop the workers and the heartbeat; close the repository if this service made it.

        Running simulations finish first; queued ones are marked failed.
        """
        if self._closed:
            return
        self._closed = True
        self._runner.close()
        try:
            self.repository.fail_worker_simulations(
                self.worker_id, reason="abandoned: the service closed before it ran"
            )
        except Exception:
            logger.warning("could not fail the simulations left at close", exc_info=True)
        self._heartbeat.stop()
        if self._owns_repository:
            self.repository.close()

    def __enter__(self) -> TwinService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def registry_enabled(self) -> bool:
        """Whether fits and validations are logged to the MLflow registry."""
        return self._registry is not None

    def upgrade_database(self) -> list[str]:
        """Bring the database's tables up to date.

        Returns
        -------
        list of str
            The migrations applied to the database and not reported before: those
            the service applied when it opened the database, and any applied now.
        """
        applied, self._applied = self._applied, []
        return applied + upgrade(self.repository.engine)
