"""Agent tools: JSON Schema of the inputs, structured errors naming the field, persistence."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import BRAND, make_settings, truth_model

from bayestwin import tools
from bayestwin.core.outcomes import outcome_from_frame
from bayestwin.errors import (
    ConflictError,
    InvalidInputError,
    NotFitError,
    NotFoundError,
    UnavailableError,
)
from bayestwin.schemas import FidelityResult, SimulationResult
from bayestwin.service import TwinService
from bayestwin.settings import load_agent_config
from bayestwin.synthetic import SyntheticTwinData
from bayestwin.tools import (
    ToolError,
    as_langchain_tools,
    register_experiment_result,
    simulate_intervention,
    tool_schemas,
    validate_twin_fidelity,
)
from bayestwin.vocabulary import SimulationStatus

jsonschema = pytest.importorskip("jsonschema")

GOOD: dict[str, Any] = {
    "intervention_type": "email_campaign",
    "intervention_config": {"intensity": 1.0, "target": {"segment": ["cardiology"]}},
    "target_population": "hcp",
    "brand": BRAND,
    "twin_count": 2000,
    "confidence_level": 0.9,
}

BAD: list[tuple[dict[str, Any], str]] = [
    ({"twin_count": "many"}, "twin_count"),
    ({"twin_count": 0}, "twin_count"),
    ({"confidence_level": 1.5}, "confidence_level"),
    ({"target_population": "dog"}, "target_population"),
    ({"intervention_type": ""}, "intervention_type"),
    ({"intervention_config": {"intensity": -2}}, "intervention_config.intensity"),
    ({"intervention_config": {"dose": 3}}, "intervention_config.dose"),
    ({"brand": 42}, "brand"),
]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TwinService, SyntheticTwinData]]:
    settings = make_settings(tmp_path_factory.mktemp("tools"))
    with TwinService(settings, registry=None) as service:
        syn, model = truth_model("hcp")
        service.register(model)
        yield service, syn


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    return tool_schemas()


# -- schemas -------------------------------------------------------------------------------


def test_schemas_carry_the_agent_config(schemas: dict[str, dict[str, Any]]) -> None:
    config = load_agent_config()
    assert set(schemas) == set(tools.TOOL_NAMES)
    for name, schema in schemas.items():
        spec = config.tool(name)
        assert schema["description"] == spec.description
        params = schema["parameters"]
        jsonschema.Draft202012Validator.check_schema(params)
        assert set(spec.required()) <= set(params["required"])
        for pname, param in spec.parameters.items():
            assert params["properties"][pname]["description"] == param.description
    sim = schemas["simulate_intervention"]["parameters"]["properties"]
    assert sim["twin_count"]["default"] is None  # the service fills in default_twin_count
    assert sim["confidence_level"]["default"] == 0.95


def test_good_input_passes_the_schema(schemas: dict[str, dict[str, Any]]) -> None:
    jsonschema.validate(GOOD, schemas["simulate_intervention"]["parameters"])
    jsonschema.validate(
        {"simulation_id": str(uuid.uuid4()), "actual_experiment_id": "exp-1"},
        schemas["validate_twin_fidelity"]["parameters"],
    )


@pytest.mark.parametrize(("change", "field"), BAD)
def test_bad_input_fails_the_schema_and_the_tool_names_the_field(
    world: tuple[TwinService, SyntheticTwinData],
    schemas: dict[str, dict[str, Any]],
    change: dict[str, Any],
    field: str,
) -> None:
    args = {**GOOD, **change}
    with pytest.raises(jsonschema.ValidationError) as raised:
        jsonschema.validate(args, schemas["simulate_intervention"]["parameters"])
    path = [str(p) for p in raised.value.absolute_path]
    assert path[0] == field.split(".")[0]

    result = simulate_intervention(**args, service=world[0])
    assert isinstance(result, ToolError)
    assert result.error.type == "invalid_input"
    assert result.error.field == field
    assert field in result.error.message


def test_missing_required_parameter_is_named(
    world: tuple[TwinService, SyntheticTwinData], schemas: dict[str, dict[str, Any]]
) -> None:
    args = {k: v for k, v in GOOD.items() if k != "brand"}
    with pytest.raises(jsonschema.ValidationError, match="'brand' is a required property"):
        jsonschema.validate(args, schemas["simulate_intervention"]["parameters"])
    pytest.importorskip("langchain_core")
    (tool, _) = as_langchain_tools(world[0])
    out = tool.invoke(args)
    assert out["error"]["type"] == "invalid_input" and out["error"]["field"] == "brand"


# -- behaviour -----------------------------------------------------------------------------


def test_simulate_persists_and_returns_a_lean_result(
    world: tuple[TwinService, SyntheticTwinData],
) -> None:
    service, _ = world
    result = simulate_intervention(**GOOD, service=service)
    assert isinstance(result, SimulationResult), result
    assert result.simulation_status is SimulationStatus.COMPLETED
    assert result.confidence_interval == (result.simulated_ci_lower, result.simulated_ci_upper)
    assert result.recommendation is not None
    assert result.ate_draws is None and result.twin_unit_ids is None  # kept out of the agent
    stored = service.get_simulation(result.simulation_id, include_draws=True)
    assert stored.ate_draws is not None and stored.simulated_ate == result.simulated_ate


def test_twin_count_defaults_to_the_setting(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, default_twin_count=1234)
    with TwinService(settings, registry=None) as service:
        service.register(truth_model("hcp")[1])
        args = {k: v for k, v in GOOD.items() if k != "twin_count"}
        result = simulate_intervention(**args, service=service)
    assert isinstance(result, SimulationResult), result
    assert result.twin_count == 1234


def test_no_active_model_is_a_structured_error(
    world: tuple[TwinService, SyntheticTwinData],
) -> None:
    result = simulate_intervention(**{**GOOD, "brand": "Unknown"}, service=world[0])
    assert isinstance(result, ToolError)
    assert result.model_dump()["error"]["type"] == "no_active_model"
    assert "Unknown" in result.error.message
    other = simulate_intervention(**{**GOOD, "target_population": "territory"}, service=world[0])
    assert isinstance(other, ToolError) and other.error.type == "no_active_model"


def test_unknown_intervention_and_target_are_named(
    world: tuple[TwinService, SyntheticTwinData],
) -> None:
    result = simulate_intervention(**{**GOOD, "intervention_type": "telepathy"}, service=world[0])
    assert isinstance(result, ToolError) and result.error.field == "intervention_type"
    assert "email_campaign" in result.error.message  # lists the known ones
    config = {"target": {"segment": ["nowhere"]}}
    result = simulate_intervention(**{**GOOD, "intervention_config": config}, service=world[0])
    assert isinstance(result, ToolError) and result.error.field == "intervention_config.target"


def test_validate_by_experiment_id(world: tuple[TwinService, SyntheticTwinData]) -> None:
    service, syn = world
    sim = simulate_intervention(**{**GOOD, "random_seed": 3}, service=service)
    assert isinstance(sim, SimulationResult)
    frame = syn.truth.run_experiment(
        syn.population(BRAND), "email_campaign", n_per_arm=2000, random_seed=1
    )
    register_experiment_result("EXP-42", outcome_from_frame(frame, "bernoulli"), service=service)
    result = validate_twin_fidelity(str(sim.simulation_id), "EXP-42", service=service)
    assert isinstance(result, FidelityResult), result
    assert result.actual_experiment_id == "EXP-42"
    assert service.repository.list_validations(sim.simulation_id)[0].tracking_id == (
        result.tracking_id
    )


def test_validate_with_explicit_outcome(world: tuple[TwinService, SyntheticTwinData]) -> None:
    service, _ = world
    sim = simulate_intervention(**{**GOOD, "random_seed": 4}, service=service)
    assert isinstance(sim, SimulationResult)
    outcome = {
        "actual_ate": 0.02,
        "ci_lower": 0.0,
        "ci_upper": 0.04,
        "n_treatment": 800,
        "n_control": 800,
    }
    result = validate_twin_fidelity(str(sim.simulation_id), "EXP-43", outcome, service=service)
    assert isinstance(result, FidelityResult) and result.actual_ate == 0.02


@pytest.mark.parametrize(
    ("simulation_id", "experiment_id", "outcome", "kind", "field"),
    [
        ("not-a-uuid", "EXP", None, "invalid_input", "simulation_id"),
        (None, "", None, "invalid_input", "actual_experiment_id"),
        (None, "EXP", {"actual_ate": 0.1}, "invalid_input", "outcome.n_treatment"),
        (str(uuid.UUID(int=1)), "EXP", None, "not_found", "simulation_id"),
        (None, "never-registered", None, "experiment_not_found", "actual_experiment_id"),
    ],
)
def test_validate_errors_name_the_field(
    world: tuple[TwinService, SyntheticTwinData],
    simulation_id: str | None,
    experiment_id: str,
    outcome: dict[str, Any] | None,
    kind: str,
    field: str,
) -> None:
    service, _ = world
    if simulation_id is None:
        sim = simulate_intervention(**{**GOOD, "random_seed": 5}, service=service)
        assert isinstance(sim, SimulationResult)
        simulation_id = str(sim.simulation_id)
    result = validate_twin_fidelity(simulation_id, experiment_id, outcome, service=service)
    assert isinstance(result, ToolError), result
    assert result.error.type == kind
    assert result.error.field == field


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (NotFoundError("no model", code="no_active_model", field="brand"), "no_active_model"),
        (NotFoundError("no result", code="experiment_not_found"), "experiment_not_found"),
        (NotFoundError("simulation x not found", code="not_found"), "not_found"),
        (ConflictError("unfinished", code="invalid_state"), "invalid_state"),
        (ConflictError("exists", code="already_exists"), "invalid_state"),
        (NotFitError("failed its diagnostics", code="model_not_usable"), "model_not_usable"),
        (UnavailableError("too slow", code="timeout"), "timeout"),
        (UnavailableError("old format", code="model_version"), "simulation_failed"),
        (InvalidInputError("bad", field="brand", code="no_active_model"), "invalid_input"),
        (RuntimeError("boom"), "simulation_failed"),
    ],
)
def test_error_types_follow_the_code_then_the_kind(error: Exception, kind: str) -> None:
    detail = tools.to_error(error).error
    assert detail.type == kind and detail.message == str(error)


# -- LangChain wrappers and the default service ------------------------------------------


def test_langchain_tools(world: tuple[TwinService, SyntheticTwinData]) -> None:
    pytest.importorskip("langchain_core")
    service, _ = world
    simulate, validate = as_langchain_tools(service)
    assert simulate.name == "simulate_intervention" and validate.name == "validate_twin_fidelity"
    assert simulate.description == load_agent_config().tool("simulate_intervention").description
    assert "twin_count" in simulate.args
    out = simulate.invoke({**GOOD, "random_seed": 6})
    assert out["simulation_status"] == "completed" and "ate_draws" in out
    bad = simulate.invoke({**GOOD, "twin_count": -1})
    assert bad["error"]["field"] == "twin_count"
    extra = simulate.invoke({**GOOD, "colour": "blue"})
    assert extra["error"]["type"] == "invalid_input" and extra["error"]["field"] == "colour"
    missing = validate.invoke({"simulation_id": out["simulation_id"], "actual_experiment_id": "x"})
    assert missing["error"]["type"] == "experiment_not_found"


def test_default_service(world: tuple[TwinService, SyntheticTwinData], tmp_path: Path) -> None:
    service, _ = world
    tools.set_default_service(service)
    try:
        assert tools.get_default_service() is service
        result = simulate_intervention(**{**GOOD, "random_seed": 7})
        assert isinstance(result, SimulationResult)
    finally:
        tools.set_default_service(None)
