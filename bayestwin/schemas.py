"""Pydantic schemas at the edges: requests, results and model info.

These are the objects that cross a boundary (an agent tool, the REST API, the database,
a JSON file). They round-trip through JSON and export JSON Schema
(``Model.model_json_schema()``), which agents use to validate tool calls.

Which number is which (the output contract):

* ``simulated_ate`` and ``simulated_ci_lower`` / ``simulated_ci_upper`` describe the
  **population ATE** of the twins on the outcome's natural scale: for every posterior
  draw, the mean over twins of E[Y | treated] - E[Y | control]. They carry posterior
  uncertainty only (no sampling noise).
* ``relative_lift`` is the same ATE divided by the control mean, draw by draw.
* The *predictive* distribution of an experiment's *observed* ATE adds the real test's
  sampling noise at its arm sizes; it is computed at validation time by
  :mod:`bayestwin.engine.fidelity` from ``ate_draws`` and is never stored as the CI.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from bayestwin.vocabulary import FidelityGrade, Recommendation, SimulationStatus, TwinType

__all__ = [
    "DosePoint",
    "EffectPrior",
    "ExperimentOutcome",
    "FidelityResult",
    "InterventionConfig",
    "NumericRange",
    "SampleSizeReport",
    "SegmentEffect",
    "SimulateInterventionRequest",
    "SimulationResult",
    "TwinModelInfo",
    "ValidateFidelityRequest",
    "utcnow",
]


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class _Schema(BaseModel):
    # JSON has no NaN or infinity: refusing them keeps every schema round-trippable.
    model_config = ConfigDict(extra="forbid", from_attributes=True, allow_inf_nan=False)


class NumericRange(_Schema):
    """Inclusive numeric range filter on a feature column."""

    min: float | None = Field(None, description="Lower bound (inclusive); None for open.")
    max: float | None = Field(None, description="Upper bound (inclusive); None for open.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("a numeric range needs at least one of 'min' or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"range min ({self.min}) must be <= max ({self.max})")
        return self


TargetFilter = Annotated[
    list[str | int | float] | NumericRange,
    Field(description="Allowed values of a categorical column, or a numeric range."),
]


class InterventionConfig(_Schema):
    """Parameters of an intervention and the population it targets."""

    intervention_type: str | None = Field(
        None,
        description="Intervention type; optional here when given beside the config.",
    )
    intensity: float = Field(
        1.0, ge=0.0, description="Dose of the intervention (>= 0; 0 means untreated)."
    )
    duration_weeks: int | None = Field(
        None, gt=0, description="Planned duration of the intervention, in weeks."
    )
    target: dict[str, TargetFilter] = Field(
        default_factory=dict,
        description=(
            "Target filters by column: a list of allowed values (categorical) or "
            "{'min': ..., 'max': ...} (numeric). Empty: the whole population."
        ),
    )

    @field_validator("target")
    @classmethod
    def _non_empty_lists(cls, value: dict[str, Any]) -> dict[str, Any]:
        for column, flt in value.items():
            if isinstance(flt, list) and not flt:
                raise ValueError(f"target filter for column {column!r} is an empty list")
        return value


class SimulateInterventionRequest(_Schema):
    """Input of the ``simulate_intervention`` tool (spec 6.1)."""

    intervention_type: str = Field(
        ..., min_length=1, description='e.g. "email_campaign", "call_frequency".'
    )
    intervention_config: InterventionConfig = Field(default_factory=InterventionConfig)
    target_population: TwinType = Field(..., description='"hcp", "patient" or "territory".')
    brand: str = Field(..., min_length=1, description="Brand whose model is used.")
    twin_count: int = Field(10_000, gt=0, description="Number of twins to simulate.")
    confidence_level: float = Field(0.95, gt=0.0, lt=1.0, description="CI confidence.")
    random_seed: int | None = Field(None, ge=0, description="Seed; None draws one.")

    @model_validator(mode="after")
    def _same_type(self) -> Self:
        inner = self.intervention_config.intervention_type
        if inner is not None and inner != self.intervention_type:
            raise ValueError(
                f"intervention_config.intervention_type ({inner!r}) differs from "
                f"intervention_type ({self.intervention_type!r})"
            )
        return self


class SegmentEffect(_Schema):
    """Effect of the intervention within one segment of the twins."""

    segment: str
    n_twins: int = Field(..., ge=0)
    ate: float
    ci_lower: float
    ci_upper: float
    relative_lift: float
    prob_above_threshold: float = Field(..., ge=0.0, le=1.0)


class DosePoint(_Schema):
    """Effect at one intensity of a dose-response grid."""

    intensity: float = Field(..., ge=0.0)
    ate: float
    ci_lower: float
    ci_upper: float
    relative_lift: float
    prob_above_threshold: float = Field(..., ge=0.0, le=1.0)


class EffectPrior(_Schema):
    """Compact summary of the effect that a power step can take in as its prior."""

    scale: Literal["absolute", "relative"] = Field(
        "absolute", description='"absolute" (outcome units) or "relative".'
    )
    mean: float
    sd: float = Field(..., ge=0.0)
    quantiles: dict[str, float] = Field(
        default_factory=dict, description='Quantiles keyed by probability, e.g. "0.025".'
    )
    control_mean: float | None = None
    outcome_family: str | None = None


class SampleSizeReport(_Schema):
    """Sample size per arm for the real two-arm test, three ways, side by side."""

    alpha: float = Field(..., gt=0.0, lt=1.0)
    power: float = Field(..., gt=0.0, lt=1.0)
    classic_n_per_arm: int | None = Field(
        None, description="Power at the posterior median effect; None if effect is 0."
    )
    assurance_n_per_arm: int | None = Field(
        None, description="Smallest n whose assurance reaches the target; None if never."
    )
    assurance_curve: list[tuple[int, float]] = Field(
        default_factory=list, description="(n per arm, assurance) pairs."
    )
    covariate_adjusted_n_per_arm: int | None = Field(
        None, description="Classic n with variance x (1 - rho^2) (PROCOVA-style)."
    )
    rho: float | None = Field(None, ge=-1.0, le=1.0)
    eligible_population: int | None = Field(None, ge=0)
    capped: bool = Field(False, description="True when a size was capped at eligibility.")


class SimulationResult(_Schema):
    """Result of one simulation: spec 6.1 and every column of ``twin_simulations``."""

    simulation_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    model_id: uuid.UUID | None = None
    experiment_design_id: str | None = None
    brand: str
    twin_type: TwinType
    intervention_type: str
    intervention_config: InterventionConfig = Field(default_factory=InterventionConfig)
    twin_count: int = Field(..., gt=0)
    confidence_level: float = Field(0.95, gt=0.0, lt=1.0)
    random_seed: int | None = None

    simulation_status: SimulationStatus = SimulationStatus.PENDING
    simulated_ate: float | None = None
    simulated_ci_lower: float | None = None
    simulated_ci_upper: float | None = None
    recommendation: Recommendation | None = None
    recommended_sample_size: int | None = Field(None, ge=0)
    execution_time_ms: int | None = Field(None, ge=0)
    fidelity_warning: bool = False
    fidelity_warning_reason: str | None = None
    error_message: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None

    # -- beyond the spec ------------------------------------------------------------
    outcome_family: str | None = None
    control_mean: float | None = None
    treated_mean: float | None = None
    relative_lift: float | None = None
    relative_lift_ci_lower: float | None = None
    relative_lift_ci_upper: float | None = None
    prob_effect_above_threshold: float | None = Field(None, ge=0.0, le=1.0)
    min_effect_threshold: float | None = None
    recommendation_rationale: str | None = None
    refine_suggestions: list[str] = Field(default_factory=list)
    segment_effects: list[SegmentEffect] = Field(default_factory=list)
    dose_response: list[DosePoint] = Field(default_factory=list)
    min_effective_intensity: float | None = None
    sample_size: SampleSizeReport | None = None
    prior_estimate: EffectPrior | None = None
    eligible_population: int | None = Field(None, ge=0)
    ate_draws: list[float] | None = Field(
        None, description="Posterior draws of the population ATE (for fidelity checks)."
    )
    outcome_sd_control: float | None = Field(
        None, description="Predicted outcome sd per unit under control (for power)."
    )
    outcome_sd_treated: float | None = Field(
        None, description="Predicted outcome sd per unit under treatment (for power)."
    )
    twin_unit_ids: list[str] | None = Field(
        None, description="Source unit id of every twin (the twin -> unit links)."
    )

    @property
    def confidence_interval(self) -> tuple[float | None, float | None]:
        """The spec's ``confidence_interval``: (lower, upper)."""
        return (self.simulated_ci_lower, self.simulated_ci_upper)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        lo, hi = self.simulated_ci_lower, self.simulated_ci_upper
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"simulated_ci_lower ({lo}) must be <= simulated_ci_upper ({hi})")
        for name in ("simulated_ate", "simulated_ci_lower", "simulated_ci_upper"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        if self.simulation_status is SimulationStatus.COMPLETED and self.simulated_ate is None:
            raise ValueError("a completed simulation needs simulated_ate")
        return self


class ExperimentOutcome(_Schema):
    """Summary of a real experiment's result, for fidelity validation.

    Give ``actual_ate`` with either ``actual_se`` or a CI (``ci_lower``, ``ci_upper``
    and ``ci_level``), and the arm sizes.
    """

    actual_experiment_id: str | None = None
    actual_ate: float
    actual_se: float | None = Field(None, gt=0.0)
    ci_lower: float | None = None
    ci_upper: float | None = None
    ci_level: float = Field(0.95, gt=0.0, lt=1.0)
    n_treatment: int = Field(..., gt=0)
    n_control: int = Field(..., gt=0)
    control_mean: float | None = None
    completed_at: datetime | None = None

    @model_validator(mode="after")
    def _has_uncertainty(self) -> Self:
        if self.actual_se is None and (self.ci_lower is None or self.ci_upper is None):
            raise ValueError("give actual_se, or both ci_lower and ci_upper")
        lo, hi = self.ci_lower, self.ci_upper
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"ci_lower ({lo}) must be <= ci_upper ({hi})")
        return self


class ValidateFidelityRequest(_Schema):
    """Input of the ``validate_twin_fidelity`` tool (spec 6.2)."""

    simulation_id: uuid.UUID
    actual_experiment_id: str = Field(..., min_length=1)
    outcome: ExperimentOutcome | None = Field(
        None, description="The real result; when omitted it is looked up by experiment id."
    )


class FidelityResult(_Schema):
    """Comparison of one simulation with its real experiment (``twin_fidelity_tracking``)."""

    tracking_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    simulation_id: uuid.UUID | None = None
    actual_experiment_id: str | None = None
    simulated_ate: float
    actual_ate: float | None = None
    actual_se: float | None = Field(None, ge=0.0)
    prediction_error: float | None = Field(None, ge=0.0)
    fidelity_grade: FidelityGrade = FidelityGrade.UNVALIDATED
    standardized_error: float | None = None
    pit: float | None = Field(None, ge=0.0, le=1.0)
    in_predictive_interval: dict[str, bool] = Field(
        default_factory=dict, description='Keys "0.5", "0.8", "0.95".'
    )
    predictive_intervals: dict[str, tuple[float, float]] = Field(default_factory=dict)
    validation_notes: str | None = None
    validated_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    model_fidelity_score: float | None = Field(None, ge=0.0, le=1.0)
    fidelity_warning: bool = False


class TwinModelInfo(_Schema):
    """A fitted twin model as ``digital_twin_models`` stores it."""

    model_id: uuid.UUID
    model_name: str
    twin_type: TwinType
    model_version: str
    mlflow_run_id: str | None = None
    training_config: dict[str, Any] = Field(default_factory=dict)
    feature_columns: list[str] = Field(default_factory=list)
    target_columns: list[str] = Field(default_factory=list)
    performance_metrics: dict[str, Any] = Field(default_factory=dict)
    fidelity_score: float | None = Field(None, ge=0.0, le=1.0)
    is_active: bool = False
    brand: str
    fit_for_use: bool = True
    diagnostics_reason: str | None = None
    artifact_uri: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
