"""bayestwin: pre-screen A/B tests with Bayesian digital twins."""

from bayestwin.config import Settings, load_settings
from bayestwin.vocabulary import FidelityGrade, Recommendation, SimulationStatus, TwinType

__all__ = [
    "FidelityGrade",
    "Recommendation",
    "Settings",
    "SimulationStatus",
    "TwinType",
    "load_settings",
]
__version__ = "0.1.0"
