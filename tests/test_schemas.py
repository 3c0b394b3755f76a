"""Schemas at the edges: JSON round trips, JSON Schema exports, errors that name the field."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from bayestwin import schemas
from bayestwin.schemas import (
    HEAVY_FIELDS,
    DosePoint,
    EffectPrior,
    ExperimentEvidence,
    ExperimentOutcome,
    FidelityResult,
    FitRequest,
    IntensityShare,
    InterventionConfig,
    NumericRange,
    Page,
    RegisterExperimentRequest,
    RehearsalSummary,
    SampleSizeReport,
    SegmentEffect,
    SimilarSimulation,
    SimulateInterventionRequest,
    SimulationResult,
    SimulationSubmission,
    TwinModelInfo,
    ValidateFidelityRequest,
)
from bayestwin.vocabulary import FidelityGrade, Recommendation, SimulationStatus, TwinType

# -- strategies: valid payloads (plain JSON-like dicts) -------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
nonneg = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
prob = st.floats(0.0, 1.0)
open_unit = st.floats(0.0, 1.0, exclude_min=True, exclude_max=True)
text = st.text(max_size=12)
name = st.text(min_size=1, max_size=12)
counts = st.integers(0, 10**9)
positive = st.integers(1, 10**9)
uuids = st.uuids().map(str)
datetimes = st.datetimes(timezones=st.none() | st.just(UTC)).map(lambda d: d.isoformat())
json_scalars = st.none() | st.booleans() | st.integers() | finite | text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


@st.composite
def ordered_pair(draw: st.DrawFn, values: st.SearchStrategy[float] = finite) -> tuple:
    a, b = draw(values), draw(values)
    return (min(a, b), max(a, b))


@st.composite
def numeric_ranges(draw: st.DrawFn) -> dict[str, Any]:
    lo, hi = draw(ordered_pair())
    which = draw(st.sampled_from(["both", "min", "max"]))
    return {"min": None if which == "max" else lo, "max": None if which == "min" else hi}


target_filters = st.lists(st.integers() | finite | text, min_size=1, max_size=4) | numeric_ranges()

intensity_shares = st.fixed_dictionaries(
    {"intensity": st.floats(1e-3, 1e3), "weight": st.floats(1e-3, 1e3)}
)
intervention_configs = st.fixed_dictionaries(
    {},
    optional={
        "intervention_type": opt(name),
        "intensity": st.floats(0.0, 1e6),
        "duration_weeks": opt(st.integers(1, 520)),
        "target": st.dictionaries(name, target_filters, max_size=3),
        "intensity_mix": opt(
            st.lists(intensity_shares, min_size=1, max_size=4, unique_by=lambda m: m["intensity"])
        ),
    },
)


@st.composite
def simulate_requests(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(name)
    config = draw(intervention_configs)
    if config.get("intervention_type") is not None:
        config["intervention_type"] = kind
    return {
        "intervention_type": kind,
        "intervention_config": config,
        "target_population": draw(st.sampled_from([t.value for t in TwinType])),
        "brand": draw(name),
        "twin_count": draw(opt(positive)),
        "confidence_level": draw(open_unit),
        "random_seed": draw(opt(st.integers(0, 2**63 - 1))),
    }


@st.composite
def simulation_submissions(draw: st.DrawFn) -> dict[str, Any]:
    return {**draw(simulate_requests()), "experiment_design_id": draw(opt(name))}


def _effect_fields(draw: st.DrawFn) -> dict[str, Any]:
    lo, hi = draw(ordered_pair())
    return {
        "ate": draw(finite),
        "ci_lower": lo,
        "ci_upper": hi,
        "relative_lift": draw(finite),
        "prob_above_threshold": draw(prob),
    }


@st.composite
def segment_effects(draw: st.DrawFn) -> dict[str, Any]:
    return {"segment": draw(text), "n_twins": draw(counts), **_effect_fields(draw)}


@st.composite
def dose_points(draw: st.DrawFn) -> dict[str, Any]:
    return {"intensity": draw(nonneg), **_effect_fields(draw)}


effect_priors = st.fixed_dictionaries(
    {"mean": finite, "sd": nonneg},
    optional={
        "scale": st.sampled_from(["absolute", "relative"]),
        "quantiles": st.dictionaries(st.sampled_from(["0.025", "0.5", "0.975"]), finite),
        "control_mean": opt(finite),
        "outcome_family": opt(st.sampled_from(["bernoulli", "poisson", "gaussian"])),
    },
)

sample_size_reports = st.fixed_dictionaries(
    {"alpha": open_unit, "power": open_unit},
    optional={
        "classic_n_per_arm": opt(counts),
        "assurance_n_per_arm": opt(counts),
        "assurance_curve": st.lists(st.tuples(positive, prob), max_size=4),
        "covariate_adjusted_n_per_arm": opt(counts),
        "rho": opt(st.floats(-1.0, 1.0)),
        "eligible_population": opt(counts),
        "population_sufficient": opt(st.booleans()),
    },
)


rehearsal_summaries = st.fixed_dictionaries(
    {"placebos": counts, "warn_rate": prob},
    optional={
        "false_deploy_rate": opt(prob),
        "false_deploy_ci_lower": opt(prob),
        "false_deploy_ci_upper": opt(prob),
        "skip_rate": opt(prob),
        "zero_coverage": opt(prob),
        "zero_coverage_80": opt(prob),
        "nominal_false_deploy_rate": opt(prob),
        "warning": opt(text),
        "reason": opt(text),
        "seed": opt(counts),
    },
)


@st.composite
def simulation_results(draw: st.DrawFn) -> dict[str, Any]:
    status = draw(st.sampled_from([s.value for s in SimulationStatus]))
    has_result = status == "completed" or draw(st.booleans())
    lo, hi = draw(ordered_pair())
    out: dict[str, Any] = {
        "brand": draw(name),
        "twin_type": draw(st.sampled_from([t.value for t in TwinType])),
        "intervention_type": draw(name),
        "twin_count": draw(positive),
        "simulation_status": status,
    }
    optional = {
        "simulation_id": uuids,
        "model_id": opt(uuids),
        "experiment_design_id": opt(text),
        "intervention_config": intervention_configs,
        "confidence_level": open_unit,
        "random_seed": opt(st.integers(0, 2**32)),
        "recommendation": opt(st.sampled_from([r.value for r in Recommendation])),
        "recommended_sample_size": opt(counts),
        "execution_time_ms": opt(counts),
        "fidelity_warning": st.booleans(),
        "fidelity_warning_reason": opt(text),
        "error_message": opt(text),
        "created_at": datetimes,
        "completed_at": opt(datetimes),
        "outcome_family": opt(text),
        "control_mean": opt(finite),
        "relative_lift": opt(finite),
        "prob_effect_above_threshold": opt(prob),
        "refine_suggestions": st.lists(text, max_size=3),
        "segment_effects": st.lists(segment_effects(), max_size=2),
        "dose_response": st.lists(dose_points(), max_size=2),
        "sample_size": opt(sample_size_reports),
        "prior_estimate": opt(effect_priors),
        "eligible_population": opt(counts),
        "rehearsal": opt(rehearsal_summaries),
        "population_sufficient": opt(st.booleans()),
        "ate_draws": opt(st.lists(finite, max_size=5)),
        "twin_unit_ids": opt(st.lists(text, max_size=3)),
        "from_cache": st.booleans(),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            out[key] = draw(strategy)
    if has_result:
        out |= {"simulated_ate": draw(finite), "simulated_ci_lower": lo, "simulated_ci_upper": hi}
    return out


@st.composite
def experiment_outcomes(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {
        "actual_ate": draw(finite),
        "n_treatment": draw(positive),
        "n_control": draw(positive),
        "actual_experiment_id": draw(opt(text)),
        "ci_level": draw(open_unit),
        "control_mean": draw(opt(finite)),
        "completed_at": draw(opt(datetimes)),
    }
    if draw(st.booleans()):
        out["actual_se"] = draw(st.floats(min_value=1e-300, max_value=1e300))
    if "actual_se" not in out or draw(st.booleans()):
        out["ci_lower"], out["ci_upper"] = draw(ordered_pair())
    return out


register_requests = st.fixed_dictionaries(
    {"actual_experiment_id": name, "outcome": experiment_outcomes()}
)

fit_requests = st.fixed_dictionaries(
    {"brand": name, "twin_type": st.sampled_from([t.value for t in TwinType])},
    optional={"model_name": opt(name), "random_seed": opt(st.integers(0, 2**63 - 1))},
)

validate_requests = st.fixed_dictionaries(
    {"simulation_id": uuids, "actual_experiment_id": name},
    optional={"outcome": opt(experiment_outcomes())},
)

fidelity_results = st.fixed_dictionaries(
    {"simulated_ate": finite},
    optional={
        "tracking_id": uuids,
        "simulation_id": opt(uuids),
        "actual_experiment_id": opt(text),
        "actual_ate": opt(finite),
        "actual_se": opt(nonneg),
        "prediction_error": opt(nonneg),
        "fidelity_grade": st.sampled_from([g.value for g in FidelityGrade]),
        "standardized_error": opt(finite),
        "pit": opt(prob),
        "in_predictive_interval": st.dictionaries(
            st.sampled_from(["0.5", "0.8", "0.95"]), st.booleans()
        ),
        "predictive_intervals": st.dictionaries(
            st.sampled_from(["0.5", "0.8", "0.95"]), ordered_pair()
        ),
        "validation_notes": opt(text),
        "validated_at": opt(datetimes),
        "created_at": datetimes,
        "model_fidelity_score": opt(prob),
        "fidelity_warning": st.booleans(),
    },
)

twin_model_infos = st.fixed_dictionaries(
    {
        "model_id": uuids,
        "model_name": name,
        "twin_type": st.sampled_from([t.value for t in TwinType]),
        "model_version": name,
        "brand": name,
    },
    optional={
        "mlflow_run_id": opt(text),
        "training_config": st.dictionaries(text, json_values, max_size=3),
        "feature_columns": st.lists(text, max_size=4),
        "target_columns": st.lists(text, max_size=2),
        "performance_metrics": st.dictionaries(text, json_values, max_size=3),
        "fidelity_score": opt(prob),
        "is_active": st.booleans(),
        "fit_for_use": st.booleans(),
        "diagnostics_reason": opt(text),
        "artifact_uri": opt(text),
        "created_at": datetimes,
        "updated_at": datetimes,
    },
)

similar_simulations = st.fixed_dictionaries(
    {"simulation": simulation_results(), "distance": nonneg},
    optional={"validation": opt(fidelity_results)},
)

pages = st.fixed_dictionaries(
    {
        "items": st.lists(twin_model_infos, max_size=2),
        "total": counts,
        "limit": positive,
        "offset": counts,
    }
)

experiment_evidence = st.fixed_dictionaries(
    {
        "experiment_id": name,
        "intervention_type": name,
        "ate": finite,
        "se": st.floats(1e-6, 1e6),
        "unit_ids": st.lists(name, min_size=1, max_size=4),
    },
    optional={
        "intensity": st.floats(1e-3, 1e3),
        "intensity_mix": opt(
            st.lists(intensity_shares, min_size=1, max_size=3, unique_by=lambda m: m["intensity"])
        ),
        "n_treatment": opt(positive),
        "n_control": opt(positive),
        "units": opt(
            st.lists(
                st.dictionaries(name, st.integers(-10, 10) | finite | text, max_size=3),
                min_size=1,
                max_size=3,
            )
        ),
        "period": opt(st.integers(0, 10**6) | text),
    },
)

STRATEGIES: dict[type[BaseModel], st.SearchStrategy[dict[str, Any]]] = {
    ExperimentEvidence: experiment_evidence,
    RehearsalSummary: rehearsal_summaries,
    NumericRange: numeric_ranges(),
    IntensityShare: intensity_shares,
    InterventionConfig: intervention_configs,
    SimulateInterventionRequest: simulate_requests(),
    SimulationSubmission: simulation_submissions(),
    RegisterExperimentRequest: register_requests,
    FitRequest: fit_requests,
    SegmentEffect: segment_effects(),
    DosePoint: dose_points(),
    EffectPrior: effect_priors,
    SampleSizeReport: sample_size_reports,
    SimulationResult: simulation_results(),
    ExperimentOutcome: experiment_outcomes(),
    ValidateFidelityRequest: validate_requests,
    FidelityResult: fidelity_results,
    TwinModelInfo: twin_model_infos,
    SimilarSimulation: similar_simulations,
    Page: pages,
}
# the schema each public class is checked as (a generic one, with its parameter)
CHECKED_AS: dict[type[BaseModel], type[BaseModel]] = {Page: Page[TwinModelInfo]}
MODELS = [CHECKED_AS.get(m, m) for m in STRATEGIES]
MODEL_IDS = [m.__name__ for m in MODELS]
PAYLOADS = {CHECKED_AS.get(m, m): strategy for m, strategy in STRATEGIES.items()}


def test_every_public_schema_has_a_strategy() -> None:
    public = {
        obj
        for obj in (getattr(schemas, n) for n in schemas.__all__)
        if isinstance(obj, type) and issubclass(obj, BaseModel)
    }
    assert public == set(STRATEGIES)


# -- JSON round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
@given(data=st.data())
def test_round_trips_through_json(model: type[BaseModel], data: st.DataObject) -> None:
    payload = data.draw(PAYLOADS[model])
    obj = model.model_validate(payload)
    text_ = obj.model_dump_json()
    again = model.model_validate_json(text_)
    assert again == obj
    assert again.model_dump_json() == text_
    # plain json module and python-mode dumps agree too
    assert model.model_validate(json.loads(text_)) == obj
    assert model.model_validate(obj.model_dump()) == obj
    # the dump is valid under the exported (serialization) JSON Schema
    Draft202012Validator(model.model_json_schema(mode="serialization")).validate(json.loads(text_))


# -- JSON Schema exports -----------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
@pytest.mark.parametrize("mode", ["validation", "serialization"])
def test_json_schema_exports(model: type[BaseModel], mode: str) -> None:
    schema = model.model_json_schema(mode=mode)  # type: ignore[arg-type]
    Draft202012Validator.check_schema(schema)
    json.dumps(schema)
    if "$ref" in schema:  # a recursive schema (a result lists similar results) refers to itself
        schema = schema["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    assert schema["title"] == model.__name__
    assert schema["type"] == "object"
    assert set(schema["properties"]) == set(model.model_fields)
    assert schema.get("additionalProperties") is False


def _enum_values(schema: dict[str, Any], name: str) -> list[str]:
    return schema["$defs"][name]["enum"]


def test_json_schemas_carry_the_vocabulary() -> None:
    result = SimulationResult.model_json_schema()
    assert _enum_values(result, "TwinType") == [t.value for t in TwinType]
    assert _enum_values(result, "SimulationStatus") == [s.value for s in SimulationStatus]
    assert _enum_values(result, "Recommendation") == [r.value for r in Recommendation]
    fidelity = FidelityResult.model_json_schema()
    assert _enum_values(fidelity, "FidelityGrade") == [g.value for g in FidelityGrade]


def test_tool_request_schema_has_spec_defaults() -> None:
    props = SimulateInterventionRequest.model_json_schema()["properties"]
    assert props["twin_count"]["default"] is None  # the setting default_twin_count
    assert props["confidence_level"]["default"] == 0.95
    assert set(SimulateInterventionRequest.model_json_schema()["required"]) == {
        "intervention_type",
        "target_population",
        "brand",
    }


# -- validation errors name the field -----------------------------------------------------------

REQUEST = {"intervention_type": "email_campaign", "target_population": "hcp", "brand": "B"}
RESULT = {"brand": "B", "twin_type": "hcp", "intervention_type": "email_campaign", "twin_count": 10}
OUTCOME = {"actual_ate": 0.1, "actual_se": 0.02, "n_treatment": 100, "n_control": 100}
MODEL_INFO = {
    "model_id": str(uuid.uuid4()),
    "model_name": "m",
    "twin_type": "hcp",
    "model_version": "1",
    "brand": "B",
}

BAD: list[tuple[str, type[BaseModel], dict[str, Any], str]] = [
    ("twin-count-zero", SimulateInterventionRequest, {**REQUEST, "twin_count": 0}, "twin_count"),
    (
        "confidence-level-one",
        SimulateInterventionRequest,
        {**REQUEST, "confidence_level": 1.0},
        "confidence_level",
    ),
    (
        "unknown-target-population",
        SimulateInterventionRequest,
        {**REQUEST, "target_population": "doctor"},
        "target_population",
    ),
    ("empty-brand", SimulateInterventionRequest, {**REQUEST, "brand": ""}, "brand"),
    (
        "missing-brand",
        SimulateInterventionRequest,
        {k: v for k, v in REQUEST.items() if k != "brand"},
        "brand",
    ),
    ("infinite-actual-ate", ExperimentOutcome, {**OUTCOME, "actual_ate": math.inf}, "actual_ate"),
    (
        "mismatched-intervention-type",
        SimulateInterventionRequest,
        {**REQUEST, "intervention_config": {"intervention_type": "call_frequency"}},
        "intervention_config.intervention_type",
    ),
    (
        "negative-intensity",
        SimulateInterventionRequest,
        {**REQUEST, "intervention_config": {"intensity": -1.0}},
        "intensity",
    ),
    ("empty-target-list", InterventionConfig, {"target": {"segment": []}}, "segment"),
    ("unknown-config-key", InterventionConfig, {"intensty": 1.0}, "intensty"),
    ("range-reversed", NumericRange, {"min": 2.0, "max": 1.0}, "min"),
    ("range-empty", NumericRange, {}, "min"),
    (
        "ci-reversed",
        SimulationResult,
        {**RESULT, "simulated_ate": 0.0, "simulated_ci_lower": 1.0, "simulated_ci_upper": 0.0},
        "simulated_ci_lower",
    ),
    ("nan-ate", SimulationResult, {**RESULT, "simulated_ate": math.nan}, "simulated_ate"),
    (
        "completed-without-ate",
        SimulationResult,
        {**RESULT, "simulation_status": "completed"},
        "simulated_ate",
    ),
    (
        "unknown-status",
        SimulationResult,
        {**RESULT, "simulation_status": "done"},
        "simulation_status",
    ),
    (
        "unknown-recommendation",
        SimulationResult,
        {**RESULT, "recommendation": "go"},
        "recommendation",
    ),
    (
        "misspelt-result-field",
        SimulationResult,
        {**RESULT, "simulated_ates": 1.0},
        "simulated_ates",
    ),
    ("no-treatment-arm", ExperimentOutcome, {**OUTCOME, "n_treatment": 0}, "n_treatment"),
    (
        "no-uncertainty",
        ExperimentOutcome,
        {k: v for k, v in OUTCOME.items() if k != "actual_se"},
        "actual_se",
    ),
    ("pit-above-one", FidelityResult, {"simulated_ate": 0.1, "pit": 1.5}, "pit"),
    (
        "unknown-grade",
        FidelityResult,
        {"simulated_ate": 0.1, "fidelity_grade": "ok"},
        "fidelity_grade",
    ),
    (
        "bad-simulation-id",
        ValidateFidelityRequest,
        {"simulation_id": "x", "actual_experiment_id": "e"},
        "simulation_id",
    ),
    ("unknown-twin-type", TwinModelInfo, {**MODEL_INFO, "twin_type": "doctor"}, "twin_type"),
    ("fidelity-score-two", TwinModelInfo, {**MODEL_INFO, "fidelity_score": 2.0}, "fidelity_score"),
    ("unknown-prior-scale", EffectPrior, {"mean": 0.1, "sd": 0.1, "scale": "log"}, "scale"),
    ("negative-rho-bound", SampleSizeReport, {"alpha": 0.05, "power": 0.8, "rho": -2}, "rho"),
]


@pytest.mark.parametrize(
    ("model", "payload", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_validation_error_names_the_field(
    model: type[BaseModel], payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        model.model_validate(payload)
    assert field in str(info.value)
    leaf = field.rsplit(".", 1)[-1]
    named = [
        err
        for err in info.value.errors()
        if leaf in [str(p) for p in err["loc"]] or leaf in err["msg"]
    ]
    assert named, info.value.errors()


@given(value=st.floats())
def test_any_float_is_refused_or_round_trips(value: float) -> None:
    # JSON has no NaN or infinity: a schema must refuse them, not write null.
    try:
        outcome = ExperimentOutcome.model_validate({**OUTCOME, "actual_ate": value})
    except ValidationError as exc:
        assert not math.isfinite(value)
        assert "actual_ate" in str(exc)
    else:
        assert ExperimentOutcome.model_validate_json(outcome.model_dump_json()) == outcome


# -- other behaviour at the edges ----------------------------------------------------------------


def test_confidence_interval_is_the_stored_bounds() -> None:
    result = SimulationResult.model_validate(
        {**RESULT, "simulated_ate": 0.1, "simulated_ci_lower": 0.05, "simulated_ci_upper": 0.2}
    )
    assert result.confidence_interval == (0.05, 0.2)


def test_timestamps_default_to_aware_utc() -> None:
    result = SimulationResult.model_validate(RESULT)
    assert result.created_at.tzinfo is not None
    assert result.created_at.utcoffset() == UTC.utcoffset(None)


# -- the heavy fields ----------------------------------------------------------------------------


def _heavy_result() -> SimulationResult:
    past = SimulationResult.model_validate({**RESULT, "ate_draws": [0.1], "twin_unit_ids": ["u"]})
    return SimulationResult.model_validate(
        {
            **RESULT,
            "ate_draws": [0.1, 0.2],
            "twin_unit_ids": ["u1", "u2"],
            "similar_simulations": [{"simulation": past, "distance": 0.5}],
        }
    )


def test_heavy_fields_are_simulation_fields() -> None:
    assert set(HEAVY_FIELDS) <= set(SimulationResult.model_fields)


def test_lean_drops_the_heavy_fields_and_keeps_the_rest() -> None:
    result = _heavy_result()
    lean = result.lean()
    assert all(getattr(lean, name) is None for name in HEAVY_FIELDS)
    assert all(getattr(lean.similar_simulations[0].simulation, n) is None for n in HEAVY_FIELDS)
    heavy = set(HEAVY_FIELDS) | {"similar_simulations"}
    assert lean.model_dump(exclude=heavy) == result.model_dump(exclude=heavy)
    assert lean.similar_simulations[0].distance == 0.5
    assert result.ate_draws == [0.1, 0.2]  # the original is left as it is
