"""Pydantic schemas at the edges: requests, results and records.

These are the objects that cross a boundary (an agent tool, the REST API, the database,
a JSON file). They round-trip through JSON and export JSON Schema
(``Model.model_json_schema()``), which agents use to validate tool calls.

* :mod:`~bayestwin.schemas.requests`: what a caller asks for;
* :mod:`~bayestwin.schemas.results`: what bayestwin answers (and its output contract);
* :mod:`~bayestwin.schemas.records`: what the store keeps and lists;
* :mod:`~bayestwin.schemas.limits`: the bounds of the stored fields (column lengths).

Import rule: the schemas import only pydantic, :mod:`bayestwin.vocabulary` and each
other. Every schema is importable from ``bayestwin.schemas``; the bounds from
``bayestwin.schemas.limits``.
"""

from bayestwin.schemas._base import utcnow
from bayestwin.schemas.records import Page, TwinModelInfo
from bayestwin.schemas.requests import (
    ExperimentEvidence,
    ExperimentOutcome,
    FitRequest,
    IntensityShare,
    InterventionConfig,
    NumericRange,
    RandomSeed,
    RegisterExperimentRequest,
    SimulateInterventionRequest,
    SimulationSubmission,
    TargetFilter,
    ValidateFidelityRequest,
)
from bayestwin.schemas.results import (
    HEAVY_FIELDS,
    DosePoint,
    EffectPrior,
    FidelityResult,
    RehearsalSummary,
    SampleSizeReport,
    SegmentEffect,
    SimilarSimulation,
    SimulationResult,
)

__all__ = [
    "HEAVY_FIELDS",
    "DosePoint",
    "EffectPrior",
    "ExperimentEvidence",
    "ExperimentOutcome",
    "FidelityResult",
    "FitRequest",
    "IntensityShare",
    "InterventionConfig",
    "NumericRange",
    "Page",
    "RandomSeed",
    "RegisterExperimentRequest",
    "RehearsalSummary",
    "SampleSizeReport",
    "SegmentEffect",
    "SimilarSimulation",
    "SimulateInterventionRequest",
    "SimulationResult",
    "SimulationSubmission",
    "TargetFilter",
    "TwinModelInfo",
    "ValidateFidelityRequest",
    "utcnow",
]
