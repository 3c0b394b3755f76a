"""Results: what bayestwin answers (a simulation, a fidelity check) and their parts.

Which number is which (the output contract):

* ``simulated_ate`` and ``simulated_ci_lower`` / ``simulated_ci_upper`` describe the
  **population ATE** of the twins on the outcome's natural scale: for every posterior
  draw, the mean over twins of E[Y | treated] - E[Y | control]. They carry posterior
  uncertainty only (no sampling noise).
* ``relative_lift`` is the same ATE divided by the control mean, draw by draw.
* The *predictive* distribution of an experiment's *observed* ATE adds the real test's
  sampling noise at its arm sizes; it is computed at validation time by
  :mod:`bayestwin.engine.fidelity` from ``ate_draws`` and is never stored as the CI.

The heavy fields of a simulation (:data:`HEAVY_FIELDS`: the ATE draws and the twin ->
unit links) are kept in the store and left out of what the faces show;
:meth:`SimulationResult.lean` is the one way to leave them out.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from bayestwin.schemas._base import Schema, utcnow
from bayestwin.schemas.limits import (
    BRAND_LENGTH,
    EXTERNAL_ID_LENGTH,
    INTERVENTION_TYPE_LENGTH,
    MAX_RANDOM_SEED,
)
from bayestwin.schemas.requests import InterventionConfig
from bayestwin.vocabulary import FidelityGrade, Recommendation, SimulationStatus, TwinType

__all__ = [
    "HEAVY_FIELDS",
    "DosePoint",
    "EffectPrior",
    "FidelityResult",
    "RehearsalSummary",
    "SampleSizeReport",
    "SegmentEffect",
    "SimilarSimulation",
    "SimulationResult",
]

HEAVY_FIELDS: tuple[str, ...] = ("ate_draws", "twin_unit_ids")
"""Fields of :class:`SimulationResult` too large to show: kept in the store only."""


class SegmentEffect(Schema):
    """Effect of the intervention within one segment of the twins."""

    segment: str
    n_twins: int = Field(..., ge=0)
    ate: float
    ci_lower: float
    ci_upper: float
    relative_lift: float
    prob_above_threshold: float = Field(..., ge=0.0, le=1.0)


class DosePoint(Schema):
    """Effect at one intensity of a dose-response grid."""

    intensity: float = Field(..., ge=0.0)
    ate: float
    ci_lower: float
    ci_upper: float
    relative_lift: float
    prob_above_threshold: float = Field(..., ge=0.0, le=1.0)


class EffectPrior(Schema):
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


class SampleSizeReport(Schema):
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
    eligible_population: int | None = Field(
        None,
        ge=0,
        description="Units eligible for the real test (both arms draw from them); None if "
        "unknown. The sizes above are never capped at it.",
    )
    population_sufficient: bool | None = Field(
        None,
        description="True when the eligible population can supply the classic test "
        "(2 x classic_n_per_arm <= eligible_population), False when it falls short; None "
        "when either is unknown.",
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_legacy_cap(cls, data: Any) -> Any:
        # reports stored before the sizes were uncapped carry a "capped" flag
        if isinstance(data, dict) and "capped" in data:
            data = {k: v for k, v in data.items() if k != "capped"}
        return data


class RehearsalSummary(Schema):
    """The model's rehearsal as a simulation shows it: placebo campaigns, true effect zero.

    At fit time the model ran ``placebos`` placebo intervention types on its own
    history (random untreated units, or fake start periods before the real ones) and
    simulated each as this simulation was run, with the same decision rule.
    """

    placebos: int = Field(..., ge=0, description="Placebo types simulated (K); 0 with a reason.")
    false_deploy_rate: float | None = Field(
        None, ge=0.0, le=1.0, description='Share of placebos recommended "deploy".'
    )
    false_deploy_ci_lower: float | None = Field(None, ge=0.0, le=1.0)
    false_deploy_ci_upper: float | None = Field(
        None, ge=0.0, le=1.0, description="95% Wilson interval of the false-deploy rate."
    )
    skip_rate: float | None = Field(
        None, ge=0.0, le=1.0, description='Share of placebos recommended "skip".'
    )
    zero_coverage: float | None = Field(
        None, ge=0.0, le=1.0, description="Share of placebos whose 95% interval holds 0."
    )
    zero_coverage_80: float | None = Field(
        None, ge=0.0, le=1.0, description="Share of placebos whose 80% interval holds 0."
    )
    nominal_false_deploy_rate: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="The false-deploy rate a calibrated posterior of the same width would "
        "show (bayestwin.core.rehearsal.null_deploy_probability).",
    )
    warn_rate: float = Field(
        ..., ge=0.0, le=1.0, description="The setting rehearsal_warn_rate it is judged by."
    )
    warning: str | None = Field(None, description="Set when false_deploy_rate is above warn_rate.")
    reason: str | None = Field(
        None, description="Why no placebo ran (too few untreated rows or units)."
    )
    seed: int | None = Field(None, ge=0)


class SimulationResult(Schema):
    """Result of one simulation: spec 6.1 and every column of ``twin_simulations``."""

    simulation_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    model_id: uuid.UUID | None = None
    experiment_design_id: str | None = Field(None, max_length=EXTERNAL_ID_LENGTH)
    brand: str = Field(..., max_length=BRAND_LENGTH)
    twin_type: TwinType
    intervention_type: str = Field(..., max_length=INTERVENTION_TYPE_LENGTH)
    intervention_config: InterventionConfig = Field(default_factory=InterventionConfig)
    twin_count: int = Field(..., gt=0)
    confidence_level: float = Field(0.95, gt=0.0, lt=1.0)
    random_seed: int | None = Field(None, ge=0, le=MAX_RANDOM_SEED)

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
    eligible_population: int | None = Field(
        None, ge=0, description="Units that pass the target filters (the real test's pool)."
    )
    population_sufficient: bool | None = Field(
        None,
        description="True when the eligible population can supply recommended_sample_size "
        "(which is never capped at it), False when it falls short (the recommendation is "
        "then refine); None when unknown.",
    )
    horizon: int | None = Field(
        None,
        ge=1,
        description="Periods after the history the ATE is averaged over (a model with "
        "time effects); None for a model without them.",
    )
    rehearsal: RehearsalSummary | None = Field(
        None,
        description="The model's placebo rehearsal at fit time (false-deploy rate, coverage "
        "of zero); None for a model fitted without one.",
    )
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

    # -- memory ---------------------------------------------------------------------
    from_cache: bool = Field(
        False,
        description=(
            "True when the result is a stored one, served again for an identical request "
            "(same model, intervention config, twin count, confidence level and seed)."
        ),
    )
    similar_simulations: list[SimilarSimulation] = Field(
        default_factory=list,
        description=(
            "The most similar past simulations of the same brand and intervention type, "
            "nearest first, each with its validation (the real outcome) when it has one."
        ),
    )

    def lean(self) -> SimulationResult:
        """Return a copy without the heavy fields (:data:`HEAVY_FIELDS` set to None).

        The similar simulations it lists are made lean too.

        Returns
        -------
        SimulationResult
            The copy; this result is left as it is.
        """
        update: dict[str, object] = dict.fromkeys(HEAVY_FIELDS)
        if self.similar_simulations:
            update["similar_simulations"] = [s.lean() for s in self.similar_simulations]
        return self.model_copy(update=update)

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


class SimilarSimulation(Schema):
    """A past simulation and its distance to a request (episodic memory)."""

    model_config = ConfigDict(frozen=True)

    simulation: SimulationResult
    distance: float = Field(..., ge=0.0, description="config_distance to the request.")
    validation: FidelityResult | None = Field(
        None,
        description="The simulation's check against its real experiment, when validated.",
    )

    def lean(self) -> SimilarSimulation:
        """Return a copy whose simulation is :meth:`SimulationResult.lean`."""
        return self.model_copy(update={"simulation": self.simulation.lean()})


class FidelityResult(Schema):
    """Comparison of one simulation with its real experiment (``twin_fidelity_tracking``)."""

    tracking_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    simulation_id: uuid.UUID | None = None
    actual_experiment_id: str | None = Field(None, max_length=EXTERNAL_ID_LENGTH)
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
