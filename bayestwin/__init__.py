"""bayestwin: pre-screen A/B tests with Bayesian digital twins.

The public API. The spec's classes (``TwinGenerator``, ``SimulationEngine``,
``FidelityTracker``, ``TwinRepository``) are imported on first use, so
``import bayestwin`` stays light (no SQLAlchemy or SciPy until they are needed).

Modules inside the package never import this one (the version lives in
:mod:`bayestwin._version`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bayestwin._version import __version__
from bayestwin.settings import Settings, load_settings
from bayestwin.vocabulary import FidelityGrade, Recommendation, SimulationStatus, TwinType

if TYPE_CHECKING:
    from bayestwin.engine.fidelity import FidelityTracker
    from bayestwin.engine.simulation import SimulationEngine
    from bayestwin.model.fit import TwinGenerator
    from bayestwin.model.fitted import FittedTwinModel
    from bayestwin.model.io import load_model, save_model
    from bayestwin.model.spec import SamplerSettings, TwinModelSpec
    from bayestwin.store.repository import TwinRepository
    from bayestwin.synthetic import generate_synthetic_twin_data

_LAZY = {
    "FidelityTracker": "bayestwin.engine.fidelity",
    "FittedTwinModel": "bayestwin.model.fitted",
    "SamplerSettings": "bayestwin.model.spec",
    "SimulationEngine": "bayestwin.engine.simulation",
    "TwinGenerator": "bayestwin.model.fit",
    "TwinModelSpec": "bayestwin.model.spec",
    "TwinRepository": "bayestwin.store.repository",
    "generate_synthetic_twin_data": "bayestwin.synthetic",
    "load_model": "bayestwin.model.io",
    "save_model": "bayestwin.model.io",
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
    "__version__",
    "generate_synthetic_twin_data",
    "load_model",
    "load_settings",
    "save_model",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bayestwin' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
