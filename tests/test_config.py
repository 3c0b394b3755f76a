"""Settings (digital_twin_config.yaml) and the agent config (agent_config.yaml)."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bayestwin import schemas
from bayestwin.errors import InvalidInputError
from bayestwin.resources import resource_path
from bayestwin.settings import (
    AgentConfig,
    Settings,
    default_config_path,
    load_agent_config,
    load_settings,
)
from bayestwin.vocabulary import Recommendation, TwinType

# Spec section 7, digital_twin block.
SPEC_SECTION_7: dict[str, Any] = {
    "min_effect_threshold": 0.05,
    "confidence_threshold": 0.70,
    "default_twin_count": 10000,
    "max_twin_count": 50000,
    "min_fidelity_score": 0.7,
    "fidelity_validation_window_days": 90,
    "model_update_frequency": "weekly",
    "feature_importance_threshold": 0.01,
    "simulation_timeout_seconds": 300,
    "batch_size": 1000,
}

NO_ENV: dict[str, str] = {}


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- defaults -----------------------------------------------------------------------------


def test_model_defaults_equal_spec_section_7() -> None:
    defaults = Settings().model_dump()
    assert {k: defaults[k] for k in SPEC_SECTION_7} == SPEC_SECTION_7


def test_loaded_settings_equal_spec_section_7() -> None:
    loaded = load_settings(environ=NO_ENV).model_dump()
    assert {k: loaded[k] for k in SPEC_SECTION_7} == SPEC_SECTION_7


def test_shipped_yaml_digital_twin_block_is_spec_section_7(repo_root: Path) -> None:
    raw = yaml.safe_load((repo_root / "config" / "digital_twin_config.yaml").read_text())
    assert raw["digital_twin"] == SPEC_SECTION_7


def test_shipped_yaml_names_every_setting_once(repo_root: Path) -> None:
    raw = yaml.safe_load((repo_root / "config" / "digital_twin_config.yaml").read_text())
    keys = [k for body in raw.values() for k in body]
    assert sorted(keys) == sorted(Settings.model_fields)


def test_shipped_yaml_equals_model_defaults() -> None:
    assert load_settings(environ=NO_ENV) == Settings()


def test_settings_are_frozen() -> None:
    settings = load_settings(environ=NO_ENV)
    with pytest.raises(ValidationError, match="frozen"):
        settings.batch_size = 5  # type: ignore[misc]


def test_settings_are_built_by_a_function_not_at_import(repo_root: Path) -> None:
    # A broken environment and a missing config file do not break the import ...
    env = {
        **os.environ,
        "BAYESTWIN_MAX_TWIN_COUNT": "not-a-number",
        "BAYESTWIN_CONFIG": str(repo_root / "no-such-file.yaml"),
    }
    code = (
        "import bayestwin, bayestwin.settings as c\n"
        "from bayestwin.errors import InvalidInputError\n"
        "assert not [v for v in vars(c).values() if isinstance(v, c.Settings)]\n"
        "try:\n    c.load_settings()\nexcept InvalidInputError as e:\n    print('refused:', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    # ... only building the settings does.
    assert "refused:" in out.stdout
    assert "no-such-file.yaml" in out.stdout


# -- overrides ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "key", "expected"),
    [
        ("BAYESTWIN_MAX_TWIN_COUNT", "60000", "max_twin_count", 60000),
        ("BAYESTWIN_MIN_EFFECT_THRESHOLD", "0.1", "min_effect_threshold", 0.1),
        ("BAYESTWIN_CONFIDENCE_THRESHOLD", "0.9", "confidence_threshold", 0.9),
        ("BAYESTWIN_MODEL_UPDATE_FREQUENCY", "daily", "model_update_frequency", "daily"),
        ("BAYESTWIN_DATABASE_URL", "sqlite:///x.db", "database_url", "sqlite:///x.db"),
        ("BAYESTWIN_DATABASE_URL", "", "database_url", None),
        ("BAYESTWIN_DATA_DIR", "/tmp/twins", "data_dir", Path("/tmp/twins")),
    ],
)
def test_env_overrides(name: str, value: str, key: str, expected: Any) -> None:
    settings = load_settings(environ={name: value})
    assert getattr(settings, key) == expected


def test_env_is_read_from_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAYESTWIN_BATCH_SIZE", "250")
    assert load_settings().batch_size == 250


def test_settings_class_reads_only_its_keywords(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings(...) is the defaults and the keywords; only load_settings reads file and env.
    monkeypatch.setenv("BAYESTWIN_BATCH_SIZE", "250")
    assert Settings().batch_size == 1000
    assert Settings(batch_size=64).batch_size == 64


def test_keyword_overrides() -> None:
    settings = load_settings(environ=NO_ENV, min_effect_threshold=0.02, batch_size=64)
    assert (settings.min_effect_threshold, settings.batch_size) == (0.02, 64)


def test_precedence_keyword_over_env_over_yaml_over_default(tmp_path: Path) -> None:
    cfg = write_yaml(
        tmp_path / "c.yaml", {"digital_twin": {"batch_size": 500, "max_twin_count": 70000}}
    )
    env = {"BAYESTWIN_BATCH_SIZE": "600", "BAYESTWIN_POWER_TARGET": "0.9"}
    settings = load_settings(cfg, environ=env, batch_size=700)
    assert settings.batch_size == 700  # keyword
    assert settings.power_target == 0.9  # env
    assert settings.max_twin_count == 70000  # yaml
    assert settings.default_twin_count == 10000  # default


def test_config_env_var_chooses_the_file(tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", {"statistics": {"power_alpha": 0.01}})
    env = {"BAYESTWIN_CONFIG": str(cfg)}
    assert default_config_path(env) == cfg
    assert load_settings(environ=env).power_alpha == 0.01


def test_test_harness_variables_are_not_settings() -> None:
    env = {"BAYESTWIN_TEST_POSTGRES_URL": "postgresql+psycopg://postgres@localhost/test"}
    assert load_settings(environ=env) == Settings()


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("# nothing\n")
    assert load_settings(cfg, environ=NO_ENV) == Settings()


@given(
    batch_size=st.integers(1, 10**6),
    max_twin_count=st.integers(10_000, 10**7),
    threshold=st.floats(0.0, 10.0, allow_nan=False),
    confidence=st.floats(0.5, 1.0, exclude_min=True, exclude_max=True),
)
def test_valid_values_survive_the_env_as_text(
    batch_size: int, max_twin_count: int, threshold: float, confidence: float
) -> None:
    env = {
        "BAYESTWIN_BATCH_SIZE": str(batch_size),
        "BAYESTWIN_MAX_TWIN_COUNT": str(max_twin_count),
        "BAYESTWIN_MIN_EFFECT_THRESHOLD": repr(threshold),
        "BAYESTWIN_CONFIDENCE_THRESHOLD": repr(confidence),
    }
    settings = load_settings(environ=env)
    assert settings.batch_size == batch_size
    assert settings.max_twin_count == max_twin_count
    assert settings.min_effect_threshold == threshold
    assert settings.confidence_threshold == confidence
    assert Settings.model_validate_json(settings.model_dump_json()) == settings


# -- unknown keys -------------------------------------------------------------------------


def test_config_errors_carry_the_config_code(tmp_path: Path) -> None:
    cases = [
        lambda: load_settings(environ=NO_ENV, max_twin_cont=3),
        lambda: load_settings(environ={"BAYESTWIN_BATCH_SIZE": "lots"}),
        lambda: load_settings(tmp_path / "absent.yaml", environ=NO_ENV),
        lambda: load_agent_config(tmp_path / "absent.yaml"),
    ]
    for build in cases:
        with pytest.raises(InvalidInputError) as info:
            build()
        assert info.value.code == "invalid_config"


def test_invalid_value_error_names_the_field() -> None:
    with pytest.raises(InvalidInputError) as info:
        load_settings(environ=NO_ENV, batch_size=0)
    assert info.value.field == "batch_size"


def test_unknown_keyword_is_refused_with_a_hint() -> None:
    hint = r"'max_twin_cont'.*Did you mean 'max_twin_count'\?"
    with pytest.raises(InvalidInputError, match=hint):
        load_settings(environ=NO_ENV, max_twin_cont=3)


def test_unknown_env_variable_is_refused_with_a_hint() -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"BAYESTWIN_MIN_EFECT_THRESHOLD.*Did you mean 'min_effect_threshold'\?",
    ):
        load_settings(environ={"BAYESTWIN_MIN_EFECT_THRESHOLD": "0.1"})


def test_unknown_yaml_key_is_refused_with_a_hint(tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", {"digital_twin": {"batch_sise": 10}})
    with pytest.raises(InvalidInputError, match=r"'batch_sise'.*Did you mean 'batch_size'\?"):
        load_settings(cfg, environ=NO_ENV)


def test_unknown_yaml_section_is_refused_with_a_hint(tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", {"statistic": {"power_alpha": 0.1}})
    with pytest.raises(InvalidInputError, match=r"'statistic'.*Did you mean 'statistics'\?"):
        load_settings(cfg, environ=NO_ENV)


def test_yaml_key_in_the_wrong_section_is_refused(tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", {"storage": {"batch_size": 10}})
    with pytest.raises(InvalidInputError, match=r"'batch_size'.*belongs in section 'digital_twin'"):
        load_settings(cfg, environ=NO_ENV)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- a\n- b\n", "mapping at the top level"),
        ("digital_twin: [1, 2]\n", "'digital_twin'.*must be a mapping"),
        ("digital_twin: {batch_size: 1\n", "not valid YAML"),
    ],
    ids=["list-at-top", "section-not-mapping", "broken-yaml"],
)
def test_malformed_yaml_is_refused(tmp_path: Path, text: str, match: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(InvalidInputError, match=match):
        load_settings(cfg, environ=NO_ENV)


def test_missing_explicit_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_settings(tmp_path / "absent.yaml", environ=NO_ENV)


# -- refused values: one test each ----------------------------------------------------------

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("negative-min-effect-threshold", {"min_effect_threshold": -0.01}, "min_effect_threshold"),
    ("nan-min-effect-threshold", {"min_effect_threshold": math.nan}, "min_effect_threshold"),
    ("infinite-min-effect-threshold", {"min_effect_threshold": math.inf}, "min_effect_threshold"),
    ("confidence-threshold-zero", {"confidence_threshold": 0.0}, "confidence_threshold"),
    ("confidence-threshold-one", {"confidence_threshold": 1.0}, "confidence_threshold"),
    ("confidence-threshold-above-one", {"confidence_threshold": 1.5}, "confidence_threshold"),
    ("confidence-threshold-at-half", {"confidence_threshold": 0.5}, "confidence_threshold"),
    ("default-twin-count-zero", {"default_twin_count": 0}, "default_twin_count"),
    ("max-twin-count-negative", {"max_twin_count": -5}, "max_twin_count"),
    (
        "max-below-default-twin-count",
        {"max_twin_count": 5000, "default_twin_count": 10000},
        "max_twin_count",
    ),
    ("twin-count-not-integer", {"default_twin_count": 10.5}, "default_twin_count"),
    ("min-fidelity-score-above-one", {"min_fidelity_score": 1.2}, "min_fidelity_score"),
    ("min-fidelity-score-negative", {"min_fidelity_score": -0.1}, "min_fidelity_score"),
    (
        "validation-window-zero-days",
        {"fidelity_validation_window_days": 0},
        "fidelity_validation_window_days",
    ),
    ("update-frequency-unknown", {"model_update_frequency": "hourly"}, "model_update_frequency"),
    (
        "negative-feature-importance-threshold",
        {"feature_importance_threshold": -0.01},
        "feature_importance_threshold",
    ),
    ("timeout-zero", {"simulation_timeout_seconds": 0}, "simulation_timeout_seconds"),
    ("batch-size-zero", {"batch_size": 0}, "batch_size"),
    ("power-alpha-zero", {"power_alpha": 0.0}, "power_alpha"),
    ("power-alpha-one", {"power_alpha": 1.0}, "power_alpha"),
    ("power-target-above-one", {"power_target": 1.2}, "power_target"),
    ("min-validations-zero", {"min_validations_for_score": 0}, "min_validations_for_score"),
]


@pytest.mark.parametrize(
    ("overrides", "key"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_invalid_value_is_refused_naming_the_key(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(InvalidInputError, match=key):
        load_settings(environ=NO_ENV, **overrides)


def test_invalid_env_value_is_refused_naming_the_key() -> None:
    with pytest.raises(InvalidInputError, match=r"batch_size.*'lots'"):
        load_settings(environ={"BAYESTWIN_BATCH_SIZE": "lots"})


def test_invalid_yaml_value_is_refused_naming_the_key(tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", {"digital_twin": {"confidence_threshold": 7}})
    with pytest.raises(InvalidInputError, match="confidence_threshold"):
        load_settings(cfg, environ=NO_ENV)


# -- derived locations --------------------------------------------------------------------


def test_storage_defaults_live_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(environ=NO_ENV, data_dir=tmp_path)
    assert settings.resolved_data_dir() == tmp_path
    assert settings.resolved_database_url() == f"sqlite:///{tmp_path / 'bayestwin.db'}"
    assert settings.resolved_mlflow_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_storage_urls_when_configured() -> None:
    settings = load_settings(
        environ=NO_ENV, database_url="postgresql+psycopg://h/db", mlflow_tracking_uri="http://m"
    )
    assert settings.resolved_database_url() == "postgresql+psycopg://h/db"
    assert settings.resolved_mlflow_uri() == "http://m"


def test_default_data_dir_is_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(environ=NO_ENV).resolved_data_dir() == tmp_path / ".bayestwin"


# -- agent_config.yaml ----------------------------------------------------------------------

WORKFLOW_TEXT = "Query → Context → Twin simulation → Design → Power → Validity → Template"


@pytest.fixture(scope="module")
def agent_config() -> AgentConfig:
    return load_agent_config()


@pytest.fixture
def agent_raw() -> dict[str, Any]:
    return yaml.safe_load(resource_path("config", "agent_config.yaml").read_text())


def test_agent_config_has_the_two_spec_tools(agent_config: AgentConfig) -> None:
    tools = agent_config.agents.experiment_designer.tools
    assert list(tools) == ["simulate_intervention", "validate_twin_fidelity"]


def test_agent_workflow_is_the_updated_one(agent_config: AgentConfig) -> None:
    workflow = agent_config.agents.experiment_designer.workflow
    assert workflow.as_text() == WORKFLOW_TEXT
    gate = workflow.twin_simulation
    assert gate.tool == "simulate_intervention"
    assert gate.stop_on == [Recommendation.SKIP]
    assert (gate.pass_to, gate.pass_field) == ("power", "prior_estimate")
    assert gate.pass_field in schemas.SimulationResult.model_fields


def test_simulate_intervention_signature_is_spec_6_1(agent_config: AgentConfig) -> None:
    tool = agent_config.tool("simulate_intervention")
    assert list(tool.parameters) == [
        "intervention_type",
        "intervention_config",
        "target_population",
        "brand",
        "twin_count",
        "confidence_level",
    ]
    assert tool.required() == [
        "intervention_type",
        "intervention_config",
        "target_population",
        "brand",
    ]
    # no twin-count default here: a request without one gets the setting default_twin_count
    assert tool.defaults() == {"confidence_level": 0.95}
    assert "twin_count" not in tool.required()
    assert schemas.SimulateInterventionRequest.model_fields["twin_count"].default is None
    assert tool.parameters["target_population"].allowed_values() == [t.value for t in TwinType]


def test_validate_twin_fidelity_signature_is_spec_6_2(agent_config: AgentConfig) -> None:
    tool = agent_config.tool("validate_twin_fidelity")
    assert tool.required() == ["simulation_id", "actual_experiment_id"]
    assert tool.defaults() == {}


def _json_type(schema: dict[str, Any], prop: dict[str, Any]) -> str | None:
    """JSON Schema type of a property, following a $ref into $defs."""
    if "$ref" in prop:
        prop = schema["$defs"][prop["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in prop:
        types = {p.get("type") for p in prop["anyOf"]} - {"null"}
        return types.pop() if len(types) == 1 else None
    return prop.get("type")


@pytest.mark.parametrize("name", ["simulate_intervention", "validate_twin_fidelity"])
def test_tool_parameters_agree_with_the_request_schema(
    agent_config: AgentConfig, name: str
) -> None:
    tool = agent_config.tool(name)
    request = getattr(schemas, tool.input_schema)
    assert tool.output_schema in schemas.__all__
    assert tool.input_schema in schemas.__all__
    schema = request.model_json_schema()
    assert set(tool.parameters) <= set(schema["properties"])
    assert set(schema.get("required", [])) <= set(tool.required())
    for pname, param in tool.parameters.items():
        field = request.model_fields[pname]
        if param.default is not None:
            assert field.default == param.default, pname
        assert _json_type(schema, schema["properties"][pname]) == param.type, pname
        allowed = param.allowed_values()
        if allowed is not None:
            prop = schema["properties"][pname]
            enum_schema = schema["$defs"][prop["$ref"].rsplit("/", 1)[1]]
            assert enum_schema["enum"] == allowed


def test_unknown_tool_lookup_hints(agent_config: AgentConfig) -> None:
    with pytest.raises(KeyError, match="Did you mean 'simulate_intervention'"):
        agent_config.tool("simulate_interventions")


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        data = data[key]
    data[last] = value


AGENT_REFUSED: list[tuple[str, str, Any, str]] = [
    (
        "typo-in-tool-key",
        "agents.experiment_designer.tools.simulate_intervention.descripton",
        "x",
        r"'descripton'.*Did you mean 'description'\?",
    ),
    ("unknown-agent", "agents.experiment_desinger", {}, r"Did you mean 'experiment_designer'\?"),
    (
        "bad-parameter-type",
        "agents.experiment_designer.tools.simulate_intervention.parameters.twin_count.type",
        "int",
        r"parameters\.twin_count\.type",
    ),
    (
        "unknown-vocabulary",
        "agents.experiment_designer.tools.simulate_intervention.parameters.target_population.vocabulary",
        "twin_type",
        r"Did you mean 'twin_types'\?",
    ),
    (
        "required-with-default",
        "agents.experiment_designer.tools.simulate_intervention.parameters.confidence_level.required",
        True,
        "required parameter cannot have a default",
    ),
    (
        "no-twin-simulation-step",
        "agents.experiment_designer.workflow.steps",
        ["query", "context", "design", "power"],
        "must include 'twin_simulation'",
    ),
    (
        "repeated-step",
        "agents.experiment_designer.workflow.steps",
        ["query", "twin_simulation", "design", "power", "design"],
        "steps repeat: design",
    ),
    (
        "estimate-passed-backwards",
        "agents.experiment_designer.workflow.twin_simulation.pass_to",
        "context",
        "'context' must come after 'twin_simulation'",
    ),
    (
        "gate-tool-unknown",
        "agents.experiment_designer.workflow.twin_simulation.tool",
        "simulate_interventions",
        r"not one of this agent's tools.*Did you mean 'simulate_intervention'\?",
    ),
    (
        "stop-on-unknown-recommendation",
        "agents.experiment_designer.workflow.twin_simulation.stop_on",
        ["skipp"],
        "stop_on",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "match"), [r[1:] for r in AGENT_REFUSED], ids=[r[0] for r in AGENT_REFUSED]
)
def test_invalid_agent_config_is_refused(
    tmp_path: Path, agent_raw: dict[str, Any], path: str, value: Any, match: str
) -> None:
    data = copy.deepcopy(agent_raw)
    _set(data, path, value)
    with pytest.raises(InvalidInputError, match=match):
        load_agent_config(write_yaml(tmp_path / "agent.yaml", data))


def test_missing_agent_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_agent_config(tmp_path / "absent.yaml")


def test_agent_config_round_trips_through_json(agent_config: AgentConfig) -> None:
    again = AgentConfig.model_validate(json.loads(agent_config.model_dump_json()))
    assert again == agent_config
