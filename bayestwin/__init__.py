"""bayestwin: pre-screen A/B tests with Bayesian digital twins.

The public API. The spec's classes (``TwinGenerator``, ``SimulationEngine``,
``FidelityTracker``, ``TwinRepository``) are imported on first use, so
``import bayestwin`` stays light (no SQLAlchemy or SciPy until they are needed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bayestwin.settings import Settings, load_settings
from bayestwin.vocabulary import FidelityGrade, Recommendation, SimulationStatus, TwinType

if TYPE_CHECKING:
    from bayestwin.engine.fidelity import FidelityTracker
    from bayestwin.model.fit import (
        SamplerSettings,
        TwinGenerator,
        TwinModelSpec,
        load_model,
        save_model,
    )
    from bayestwin.model.fitted import FittedTwinModel
    from bayestwin.engine.simulation import SimulationEngine
    from bayestwin.store.repository import TwinRepository
    from bayestwin.synthetic import generate_synthetic_twin_data

_LAZY = {
    "FidelityTracker": "bayestwin.engine.fidelity",
    "FittedTwinModel": "bayestwin.model.fitted",
    "SamplerSettings": "bayestwin.model.fit",
    "SimulationEngine": "bayestwin.engine.simulation",
    "TwinGenerator": "bayestwin.model.fit",
    "TwinModelSpec": "bayestwin.model.fit",
    "TwinRepository": "bayestwin.store.repository",
    "generate_synthetic_twin_data": "bayestwin.synthetic",
    "load_model": "bayestwin.model.fit",
    "save_model": "bayestwin.model.fit",
}

__all__ = [
    "FidelityGrade",
    "FidelityTracker",
    "FittedTwinModel",
    "Recommendation",
    "SamplerSettings",
    "Settings",
    "SimulationEngine",
    "SimulationStatus",
    "TwinGenerator",
    "TwinModelSpec",
    "TwinRepository",
    "TwinType",
    "generate_synthetic_twin_data",
    "load_model",
    "load_settings",
    "save_model",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bayestwin' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
