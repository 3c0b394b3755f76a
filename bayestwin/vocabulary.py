"""The digital-twin vocabulary: the enums of ``config/domain_vocabulary.yaml`` (v3.2.0).

These string enums are the one source of truth for the values a user, an agent or the
database sees. ``tests/test_vocabulary.py`` proves they equal the YAML file.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["VOCABULARY", "FidelityGrade", "Recommendation", "SimulationStatus", "TwinType"]


class TwinType(StrEnum):
    """Kind of unit a twin stands for."""

    HCP = "hcp"
    PATIENT = "patient"
    TERRITORY = "territory"


class SimulationStatus(StrEnum):
    """Life cycle of a simulation row: pending -> running -> completed | failed."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class Recommendation(StrEnum):
    """What to do with the proposed experiment."""

    DEPLOY = "deploy"
    SKIP = "skip"
    REFINE = "refine"


class FidelityGrade(StrEnum):
    """Grade of a simulation against the real experiment's outcome."""

    EXCELLENT = "excellent"
    GOOD = "good"
    FAIR = "fair"
    POOR = "poor"
    UNVALIDATED = "unvalidated"


VOCABULARY: dict[str, type[StrEnum]] = {
    "twin_types": TwinType,
    "simulation_statuses": SimulationStatus,
    "simulation_recommendations": Recommendation,
    "fidelity_grades": FidelityGrade,
}
"""Each list of ``config/domain_vocabulary.yaml``, by its key, and the enum that mirrors it."""
