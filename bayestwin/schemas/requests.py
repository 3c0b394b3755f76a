"""Requests: what a caller asks bayestwin for (simulate, validate) and their parts.

The validators check each request on its own fields; checks that need the settings or
a fitted model (the twin count's upper bound, the columns a filter names) are not here.

Numbers are strict: an integer field takes a JSON integer only (not ``true``, ``"100"``
or ``100.0``) and a number field a JSON number (not ``true`` or ``"0.9"``). Text that the
database stores is capped at its column's length (:mod:`bayestwin.schemas.limits`).
Every face (agent tool, CLI, REST API) builds these requests and lets them validate.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from bayestwin.schemas._base import Schema
from bayestwin.schemas.limits import (
    BRAND_LENGTH,
    EXTERNAL_ID_LENGTH,
    INTERVENTION_TYPE_LENGTH,
    MAX_INTEGER,
    MAX_RANDOM_SEED,
    MODEL_NAME_LENGTH,
    ExternalId,
)
from bayestwin.vocabulary import TwinType

__all__ = [
    "ExperimentEvidence",
    "ExperimentOutcome",
    "FitRequest",
    "IntensityShare",
    "InterventionConfig",
    "NumericRange",
    "RandomSeed",
    "RegisterExperimentRequest",
    "SimulateInterventionRequest",
    "SimulationSubmission",
    "TargetFilter",
    "ValidateFidelityRequest",
]

RandomSeed = Annotated[int, Field(strict=True, ge=0, le=MAX_RANDOM_SEED)]
"""A seed: an integer in ``[0, 2**63 - 1]`` (the ``BIGINT`` column that stores it)."""

Brand = Annotated[str, Field(min_length=1, max_length=BRAND_LENGTH)]
InterventionType = Annotated[str, Field(min_length=1, max_length=INTERVENTION_TYPE_LENGTH)]


class NumericRange(Schema):
    """Inclusive numeric range filter on a feature column."""

    min: float | None = Field(
        None, strict=True, description="Lower bound (inclusive); None for open."
    )
    max: float | None = Field(
        None, strict=True, description="Upper bound (inclusive); None for open."
    )

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


#: Most unit ids a simulation request may name as its population.
MAX_POPULATION_IDS = 1_000_000
#: Most distinct intensities an intensity mix may hold.
MAX_INTENSITY_MIX = 50


class IntensityShare(Schema):
    """One intensity of a mixed-intensity arm and its share of the arm's units."""

    intensity: float = Field(..., strict=True, gt=0.0, description="Dose (> 0).")
    weight: float = Field(..., strict=True, gt=0.0, description="Relative share (> 0).")


class InterventionConfig(Schema):
    """Parameters of an intervention and the population it targets."""

    intervention_type: InterventionType | None = Field(
        None,
        description="Intervention type; optional here when given beside the config.",
    )
    intensity: float = Field(
        1.0, strict=True, ge=0.0, description="Dose of the intervention (>= 0; 0 means untreated)."
    )
    duration_weeks: int | None = Field(
        None,
        strict=True,
        gt=0,
        le=MAX_INTEGER,
        description="Planned duration of the intervention, in weeks.",
    )
    target: dict[str, TargetFilter] = Field(
        default_factory=dict,
        description=(
            "Target filters by column: a list of allowed values (categorical) or "
            "{'min': ..., 'max': ...} (numeric). Empty: the whole population."
        ),
    )
    intensity_mix: list[IntensityShare] | None = Field(
        None,
        max_length=MAX_INTENSITY_MIX,
        description=(
            "A treated arm of mixed intensities: each twin gets intensity s with "
            "probability proportional to its weight, and the ATE is the weighted average "
            "over them. Then 'intensity' is set to the arm's mean intensity."
        ),
    )

    @model_validator(mode="after")
    def _mix_mean(self) -> Self:
        mix = self.intensity_mix
        if mix is not None:
            if not mix:
                raise ValueError("intensity_mix must hold at least one intensity")
            levels = [m.intensity for m in mix]
            if len(set(levels)) != len(levels):
                raise ValueError("intensity_mix lists an intensity more than once")
            total = sum(m.weight for m in mix)
            mean = sum(m.intensity * m.weight for m in mix) / total
            object.__setattr__(self, "intensity", float(mean))
        return self

    @property
    def intensity_levels(self) -> list[tuple[float, float]]:
        """``(intensity, weight)`` pairs of the arm, weights summing to 1."""
        if self.intensity_mix is None:
            return [(self.intensity, 1.0)]
        total = sum(m.weight for m in self.intensity_mix)
        return [(m.intensity, m.weight / total) for m in self.intensity_mix]

    @field_validator("target")
    @classmethod
    def _non_empty_lists(cls, value: dict[str, Any]) -> dict[str, Any]:
        for column, flt in value.items():
            if isinstance(flt, list) and not flt:
                raise ValueError(f"target filter for column {column!r} is an empty list")
        return value


class SimulateInterventionRequest(Schema):
    """Input of the ``simulate_intervention`` tool (spec 6.1)."""

    intervention_type: InterventionType = Field(
        ..., description='e.g. "email_campaign", "call_frequency".'
    )
    intervention_config: InterventionConfig = Field(default_factory=InterventionConfig)
    target_population: TwinType = Field(..., description='"hcp", "patient" or "territory".')
    brand: Brand = Field(..., description="Brand whose model is used.")
    twin_count: int | None = Field(
        None,
        strict=True,
        gt=0,
        le=MAX_INTEGER,
        description="Number of twins to simulate; None: the setting default_twin_count.",
    )
    confidence_level: float = Field(0.95, strict=True, gt=0.0, lt=1.0, description="CI confidence.")
    random_seed: RandomSeed | None = Field(
        None, description="Seed in [0, 2**63 - 1]; None draws one."
    )
    population_ids: (
        list[Annotated[str, Field(min_length=1, max_length=EXTERNAL_ID_LENGTH)]] | None
    ) = Field(
        None,
        min_length=1,
        max_length=MAX_POPULATION_IDS,
        description=(
            "Unit ids of the fitted history to draw the twins from (a named target "
            "list); None: the whole history. Target filters apply to them."
        ),
    )
    horizon: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=520,
        description=(
            "Periods after the history the ATE is averaged over, for a model with time "
            "effects; None: the setting horizon."
        ),
    )

    @model_validator(mode="after")
    def _same_type(self) -> Self:
        inner = self.intervention_config.intervention_type
        if inner is not None and inner != self.intervention_type:
            raise ValueError(
                f"intervention_config.intervention_type ({inner!r}) differs from "
                f"intervention_type ({self.intervention_type!r})"
            )
        return self


class ExperimentOutcome(Schema):
    """Summary of a real experiment's result, for fidelity validation.

    Give ``actual_ate`` with either ``actual_se`` or a CI (``ci_lower``, ``ci_upper``
    and ``ci_level``), and the arm sizes.
    """

    actual_experiment_id: str | None = Field(None, max_length=EXTERNAL_ID_LENGTH)
    actual_ate: float = Field(..., strict=True)
    actual_se: float | None = Field(None, strict=True, gt=0.0)
    ci_lower: float | None = Field(None, strict=True)
    ci_upper: float | None = Field(None, strict=True)
    ci_level: float = Field(0.95, strict=True, gt=0.0, lt=1.0)
    n_treatment: int = Field(..., strict=True, gt=0)
    n_control: int = Field(..., strict=True, gt=0)
    control_mean: float | None = Field(None, strict=True)
    completed_at: datetime | None = None

    @model_validator(mode="after")
    def _has_uncertainty(self) -> Self:
        if self.actual_se is None and (self.ci_lower is None or self.ci_upper is None):
            raise ValueError("give actual_se, or both ci_lower and ci_upper")
        lo, hi = self.ci_lower, self.ci_upper
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"ci_lower ({lo}) must be <= ci_upper ({hi})")
        return self


class ValidateFidelityRequest(Schema):
    """Input of the ``validate_twin_fidelity`` tool (spec 6.2)."""

    simulation_id: uuid.UUID
    actual_experiment_id: ExternalId
    outcome: ExperimentOutcome | None = Field(
        None, description="The real result; when omitted it is looked up by experiment id."
    )
    replace: bool = Field(
        False, description="Replace the simulation's earlier validation instead of a 409."
    )


class SimulationSubmission(SimulateInterventionRequest):
    """A simulation request and the experiment design it belongs to.

    What ``POST /simulate``, the ``simulate_intervention`` tool and ``bayestwin
    simulate`` take; :meth:`request` is the part that defines the simulation.
    """

    experiment_design_id: ExternalId | None = Field(
        None, description="Experiment design the simulation belongs to."
    )

    def request(self) -> SimulateInterventionRequest:
        """Return the simulation request without the experiment design."""
        return SimulateInterventionRequest.model_validate(
            self.model_dump(exclude={"experiment_design_id"})
        )


class RegisterExperimentRequest(Schema):
    """A real experiment's result, stored to be validated against by id."""

    actual_experiment_id: ExternalId
    outcome: ExperimentOutcome


#: Most units an experiment's population may list (ids or rows).
MAX_EXPERIMENT_UNITS = 1_000_000

UnitRow = dict[str, str | int | float]
"""One unit of an experiment's population: its id, segment and features."""


class ExperimentEvidence(Schema):
    """One real, randomised experiment, used as evidence in a fit.

    The fit adds ``ate ~ Normal(ATE(theta; population, config), se)``: the model's own
    ATE of the intervention over the experiment's population (see
    :mod:`bayestwin.model.experiment_terms`). The population is ``unit_ids`` (units of
    the history fitted), ``units`` (rows with the model's segment and feature columns,
    and ``unit_id`` optionally: any units, as ``simulate(population=...)`` takes), or
    both. What needs the history (the intervention type is one of its types, the ids
    are its units, the rows have its columns) is checked when the fit starts.
    Immutable.
    """

    model_config = ConfigDict(frozen=True)

    experiment_id: ExternalId = Field(..., description="The real experiment's id.")
    intervention_type: InterventionType = Field(
        ..., description="The intervention tested: one of the history's types."
    )
    intensity: float = Field(1.0, strict=True, gt=0.0, description="Dose of the treated arm (> 0).")
    intensity_mix: tuple[IntensityShare, ...] | None = Field(
        None,
        min_length=1,
        max_length=MAX_INTENSITY_MIX,
        description="A treated arm of mixed intensities; then 'intensity' is its mean.",
    )
    ate: float = Field(
        ...,
        strict=True,
        description="Observed ATE on the outcome scale: mean treated - mean control.",
    )
    se: float = Field(..., strict=True, gt=0.0, description="Standard error of 'ate' (> 0).")
    n_treatment: int | None = Field(None, strict=True, gt=0, le=MAX_INTEGER)
    n_control: int | None = Field(None, strict=True, gt=0, le=MAX_INTEGER)
    unit_ids: (
        tuple[Annotated[str, Field(min_length=1, max_length=EXTERNAL_ID_LENGTH)], ...] | None
    ) = Field(
        None,
        min_length=1,
        max_length=MAX_EXPERIMENT_UNITS,
        description="Units of the fitted history the experiment ran on.",
    )
    units: tuple[UnitRow, ...] | None = Field(
        None,
        min_length=1,
        max_length=MAX_EXPERIMENT_UNITS,
        description=(
            "Rows of the units the experiment ran on (a DataFrame is taken too): the "
            "model's segment and feature columns, and 'unit_id' optionally."
        ),
    )
    period: str | int | float | None = Field(
        None,
        description=(
            "The history period the experiment ran in (a model with period effects "
            "uses that period's level); None or a later period: the last period's."
        ),
    )

    @field_validator("units", mode="before")
    @classmethod
    def _frame_rows(cls, value: Any) -> Any:
        """A DataFrame becomes its rows (no pandas import: the schemas stay light)."""
        to_dict = getattr(value, "to_dict", None)
        if callable(to_dict) and hasattr(value, "columns"):
            return tuple(to_dict(orient="records"))
        return value

    @model_validator(mode="after")
    def _population_and_mix(self) -> Self:
        if self.unit_ids is None and self.units is None:
            raise ValueError(
                "the experiment's population is empty: give unit_ids (units of the "
                "history) and/or units (rows with their features)"
            )
        if self.intensity_mix is not None:
            levels = [m.intensity for m in self.intensity_mix]
            if len(set(levels)) != len(levels):
                raise ValueError("intensity_mix lists an intensity more than once")
            total = sum(m.weight for m in self.intensity_mix)
            mean = sum(m.intensity * m.weight for m in self.intensity_mix) / total
            object.__setattr__(self, "intensity", float(mean))
        return self

    @property
    def intensity_levels(self) -> list[tuple[float, float]]:
        """``(intensity, weight)`` pairs of the treated arm, weights summing to 1."""
        if self.intensity_mix is None:
            return [(self.intensity, 1.0)]
        total = sum(m.weight for m in self.intensity_mix)
        return [(m.intensity, m.weight / total) for m in self.intensity_mix]


class FitRequest(Schema):
    """What names a fitted model: its brand, twin type, name and sampler seed."""

    brand: Brand
    twin_type: TwinType
    model_name: str | None = Field(None, min_length=1, max_length=MODEL_NAME_LENGTH)
    random_seed: RandomSeed | None = None
