"""What every part of :class:`~bayestwin.service.TwinService` shares.

Each job of the service (models, memory, simulations, validations) is a mixin over
:class:`ServiceBase`, which only declares the state that
:class:`~bayestwin.service.TwinService` sets up; the mixins hold no state of their own.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bayestwin.engine.fidelity import FidelityTracker
    from bayestwin.engine.simulation import SimulationEngine
    from bayestwin.model.fitted import FittedTwinModel
    from bayestwin.service.experiments import ExperimentResultSource
    from bayestwin.service.jobs import JobRunner
    from bayestwin.service.registry import MlflowRegistry
    from bayestwin.settings import Settings
    from bayestwin.store.repository import TwinRepository

__all__ = ["ServiceBase"]


class ServiceBase:
    """The state of a :class:`~bayestwin.service.TwinService`, declared for its mixins.

    Attributes
    ----------
    settings : Settings
        Thresholds, limits and storage locations.
    repository : TwinRepository
        Database access.
    model_store_dir : Path
        Where model directories are written.
    experiment_source : ExperimentResultSource
        Where real experiments' results are looked up by id.
    engine : SimulationEngine
        Runs simulations, with the settings' thresholds.
    tracker : FidelityTracker
        Grades validations, with the settings' thresholds.
    registry_status : str
        ``"enabled (<uri>)"``, ``"disabled"`` or why the registry is unavailable.
    worker_id : str
        This service's id on the simulation rows it runs (``host:pid:random``).
    heartbeat_seconds : float
        Seconds between two heartbeats of this worker.
    """

    settings: Settings
    repository: TwinRepository
    model_store_dir: Path
    experiment_source: ExperimentResultSource
    engine: SimulationEngine
    tracker: FidelityTracker
    registry_status: str
    worker_id: str
    heartbeat_seconds: float
    _registry: MlflowRegistry | None
    _models: dict[uuid.UUID, tuple[FittedTwinModel, tuple[tuple[str, int, int], ...] | None]]
    _models_lock: threading.Lock
    _runner: JobRunner

    def _registry_call(self, name: str, *args: object) -> None:
        """Call the registry when it is on; a failure is logged, never raised."""
        if self._registry is not None:
            self._registry.call_quietly(name, *args)
