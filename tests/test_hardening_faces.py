"""Bad input at every face: seeds, strict numbers, lengths, one request check, short
errors and the API key (tool, CLI, and REST through a real server on loopback)."""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import BRAND, make_settings, truth_model
from pydantic import BaseModel

from bayestwin import tools
from bayestwin.cli import main
from bayestwin.errors import (
    ECHO_LIMIT,
    FIELD_LIMIT,
    MESSAGE_LIMIT,
    PROBLEM_LIMIT,
    InvalidInputError,
    echo,
    field_problems,
)
from bayestwin.schemas import (
    ExperimentOutcome,
    FidelityResult,
    FitRequest,
    InterventionConfig,
    RegisterExperimentRequest,
    SimulateInterventionRequest,
    SimulationResult,
    SimulationSubmission,
    TwinModelInfo,
    ValidateFidelityRequest,
)
from bayestwin.schemas.limits import COLUMN_LENGTHS, MAX_RANDOM_SEED
from bayestwin.service import TwinService
from bayestwin.settings import load_settings
from bayestwin.tools import ToolError

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from bayestwin.api import PREFIX, PROBLEM_JSON, create_app  # noqa: E402

API_KEY = "a key of some length"
OUTCOME = {"actual_ate": 0.05, "actual_se": 0.01, "n_treatment": 500, "n_control": 500}
BIG = "b" * 1_000_000


# -- the three faces ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A uvicorn server in a background thread on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faces")


@pytest.fixture(scope="module")
def service(data_dir: Path) -> Iterator[TwinService]:
    with TwinService(make_settings(data_dir), registry=None) as svc:
        svc.register(truth_model("hcp")[1])
        yield svc


@pytest.fixture(scope="module")
def client(service: TwinService) -> Iterator[Any]:
    with Server(create_app(service)) as server, httpx.Client(base_url=server.url + PREFIX) as c:
        yield c


@pytest.fixture(scope="module")
def keyed(service: TwinService) -> Iterator[str]:
    with Server(create_app(service, api_key=API_KEY)) as server:
        yield server.url


def tool_args(**change: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "intervention_type": "email_campaign",
        "intervention_config": {"intensity": 1.0},
        "target_population": "hcp",
        "brand": BRAND,
        "twin_count": 500,
    }
    args.update(change)
    return args


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def cli_error(data_dir: Path, *argv: str) -> dict[str, Any]:
    """Run a command that must fail as bad input; return its ``--json`` error."""
    code, out, err = cli(*argv, "--data-dir", str(data_dir), "--json")
    assert code == 2, (out, err)
    assert "Traceback" not in err and err.startswith("bayestwin: error:"), err
    error: dict[str, Any] = json.loads(out)["error"]
    assert error["kind"] == "invalid_input", error
    return error


def tool_error(result: Any, field: str) -> ToolError:
    assert isinstance(result, ToolError), result
    assert result.error.type == "invalid_input", result.error
    assert result.error.field == field, result.error
    return result


def problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


SIMULATE = ("simulate", "--brand", BRAND, "--twin-type", "hcp", "--intervention", "email_campaign")


def completed_simulation(service: TwinService, seed: int) -> str:
    result = tools.simulate_intervention(**tool_args(random_seed=seed), service=service)
    assert isinstance(result, SimulationResult), result
    return str(result.simulation_id)


# -- 2. random_seed within BIGINT -----------------------------------------------------------

BAD_SEEDS = [2**63, 2**64, 18446744073709551616 * 10, -1]


@pytest.mark.parametrize("seed", BAD_SEEDS)
def test_seed_out_of_range_is_a_field_error_on_the_tool(service: TwinService, seed: int) -> None:
    tool_error(
        tools.simulate_intervention(**tool_args(random_seed=seed), service=service), "random_seed"
    )


@pytest.mark.parametrize("seed", BAD_SEEDS)
def test_seed_out_of_range_is_a_422_on_rest(client: Any, seed: int) -> None:
    problem(client.post("/simulate", json=tool_args(random_seed=seed)), 422, "random_seed")


@pytest.mark.parametrize("seed", BAD_SEEDS)
def test_seed_out_of_range_is_a_clear_cli_error(data_dir: Path, seed: int) -> None:
    error = cli_error(data_dir, *SIMULATE, "--seed", str(seed))
    assert error["field"] == "random_seed"


@pytest.mark.parametrize(
    "argv",
    [
        ("demo", "--quick", "--seed", str(2**64)),
        ("fit", "no-such-history.csv", "--twin-type", "hcp", "--brand", "B", "--seed", "-1"),
    ],
    ids=["demo", "fit"],
)
def test_other_seeds_are_checked_before_any_work(data_dir: Path, argv: tuple[str, ...]) -> None:
    assert cli_error(data_dir, *argv)["field"] == "random_seed"


def test_the_largest_seed_is_stored_and_answered_from_the_cache(
    service: TwinService, client: Any
) -> None:
    first = tools.simulate_intervention(**tool_args(random_seed=MAX_RANDOM_SEED), service=service)
    assert isinstance(first, SimulationResult), first
    assert first.random_seed == MAX_RANDOM_SEED
    stored = service.get_simulation(first.simulation_id)
    assert stored.random_seed == MAX_RANDOM_SEED
    again = client.post("/simulate", json=tool_args(random_seed=MAX_RANDOM_SEED))
    assert again.status_code == 200, again.text
    assert again.json()["simulation_id"] == str(first.simulation_id)


# -- 4. strict numbers ------------------------------------------------------------------------

NOT_INTEGERS = [True, "100", 100.0]
NOT_NUMBERS = [True, "0.9"]
STRICT_CASES: list[tuple[dict[str, Any], str]] = [
    *[({"twin_count": v}, "twin_count") for v in NOT_INTEGERS],
    *[({"random_seed": v}, "random_seed") for v in NOT_INTEGERS],
    *[({"confidence_level": v}, "confidence_level") for v in NOT_NUMBERS],
    *[
        ({"intervention_config": {"intensity": v}}, "intervention_config.intensity")
        for v in NOT_NUMBERS
    ],
    *[
        ({"intervention_config": {"duration_weeks": v}}, "intervention_config.duration_weeks")
        for v in NOT_INTEGERS
    ],
]
STRICT_IDS = [f"{next(iter(c))}={json.dumps(c[next(iter(c))])}" for c, _ in STRICT_CASES]


@pytest.mark.parametrize(("change", "field"), STRICT_CASES, ids=STRICT_IDS)
def test_strict_numbers_on_the_tool(
    service: TwinService, change: dict[str, Any], field: str
) -> None:
    tool_error(tools.simulate_intervention(**tool_args(**change), service=service), field)


@pytest.mark.parametrize(("change", "field"), STRICT_CASES, ids=STRICT_IDS)
def test_strict_numbers_on_rest(client: Any, change: dict[str, Any], field: str) -> None:
    problem(client.post("/simulate", json=tool_args(**change)), 422, field)


def test_a_boolean_twin_count_is_not_one_twin(client: Any) -> None:
    body = problem(client.post("/simulate", json=tool_args(twin_count=True)), 422, "twin_count")
    assert "valid integer" in body["detail"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("n_treatment", True),
        ("n_treatment", "500"),
        ("n_control", 500.0),
        ("actual_ate", True),
        ("actual_ate", "0.05"),
        ("actual_se", "0.01"),
    ],
)
def test_strict_numbers_in_the_outcome_on_every_face(
    service: TwinService, client: Any, data_dir: Path, key: str, value: Any
) -> None:
    outcome = {**OUTCOME, key: value}
    sid = str(uuid.UUID(int=11))
    tool_error(tools.validate_twin_fidelity(sid, "E-1", outcome, service=service), f"outcome.{key}")
    body = {"simulation_id": sid, "actual_experiment_id": "E-1", "outcome": outcome}
    problem(client.post("/validate", json=body), 422, f"outcome.{key}")
    error = cli_error(
        data_dir, "validate", sid, "--experiment-id", "E-1", "--outcome", json.dumps(outcome)
    )
    assert error["field"] == key


def test_strict_numbers_in_the_cli_config_json(data_dir: Path) -> None:
    error = cli_error(data_dir, *SIMULATE, "--config-json", '{"duration_weeks": true}')
    assert error["field"] == "intervention_config.duration_weeks"


# -- 7. lengths: the column sizes, at every face ------------------------------------------------

SCHEMA_COLUMNS: list[tuple[type[BaseModel], str, tuple[str, str]]] = [
    (SimulateInterventionRequest, "brand", ("twin_simulations", "brand")),
    (SimulateInterventionRequest, "intervention_type", ("twin_simulations", "intervention_type")),
    (InterventionConfig, "intervention_type", ("twin_simulations", "intervention_type")),
    (SimulationSubmission, "experiment_design_id", ("twin_simulations", "experiment_design_id")),
    (
        ValidateFidelityRequest,
        "actual_experiment_id",
        ("twin_fidelity_tracking", "actual_experiment_id"),
    ),
    (
        RegisterExperimentRequest,
        "actual_experiment_id",
        ("twin_fidelity_tracking", "actual_experiment_id"),
    ),
    (ExperimentOutcome, "actual_experiment_id", ("twin_fidelity_tracking", "actual_experiment_id")),
    (FitRequest, "brand", ("digital_twin_models", "brand")),
    (FitRequest, "model_name", ("digital_twin_models", "model_name")),
    (TwinModelInfo, "brand", ("digital_twin_models", "brand")),
    (TwinModelInfo, "model_name", ("digital_twin_models", "model_name")),
    (TwinModelInfo, "model_version", ("digital_twin_models", "model_version")),
    (TwinModelInfo, "mlflow_run_id", ("digital_twin_models", "mlflow_run_id")),
    (SimulationResult, "brand", ("twin_simulations", "brand")),
    (SimulationResult, "intervention_type", ("twin_simulations", "intervention_type")),
    (SimulationResult, "experiment_design_id", ("twin_simulations", "experiment_design_id")),
    (FidelityResult, "actual_experiment_id", ("twin_fidelity_tracking", "actual_experiment_id")),
]


INTERNAL_COLUMNS = {("twin_simulations", "request_hash"), ("twin_simulations", "worker_id")}
"""Bounded text columns that only bayestwin writes (no request field reaches them)."""


def _max_length(schema: dict[str, Any]) -> int:
    if "maxLength" in schema:
        return int(schema["maxLength"])
    (length,) = {int(s["maxLength"]) for s in schema.get("anyOf", []) if "maxLength" in s}
    return length


def _orm_length(table: str, column: str) -> int:
    from sqlalchemy.dialects import postgresql

    from bayestwin.store.tables import metadata

    ddl = metadata.tables[table].c[column].type.compile(dialect=postgresql.dialect())
    found = re.fullmatch(r"VARCHAR\((\d+)\)", str(ddl))
    assert found, ddl
    return int(found.group(1))


def _sql_length(repo_root: Path, table: str, column: str) -> int:
    sql = (repo_root / "migrations" / "011_digital_twin_tables.sql").read_text()
    body = re.search(rf"CREATE TABLE IF NOT EXISTS {table} \((.*?)\n\);", sql, re.DOTALL)
    assert body, table
    found = re.search(rf"^\s+{column}\s+VARCHAR\((\d+)\)", body.group(1), re.MULTILINE)
    assert found, (table, column)
    return int(found.group(1))


@pytest.mark.parametrize(("table", "column"), sorted(COLUMN_LENGTHS))
def test_each_cap_equals_its_column(repo_root: Path, table: str, column: str) -> None:
    cap = COLUMN_LENGTHS[table, column]
    assert _orm_length(table, column) == cap
    assert _sql_length(repo_root, table, column) == cap


@pytest.mark.parametrize(
    ("model", "field", "column"),
    SCHEMA_COLUMNS,
    ids=[f"{m.__name__}.{f}" for m, f, _ in SCHEMA_COLUMNS],
)
def test_each_schema_field_is_capped_at_its_column(
    model: type[BaseModel], field: str, column: tuple[str, str]
) -> None:
    schema = model.model_json_schema()
    if "$ref" in schema:  # a recursive schema (a result lists similar results)
        schema = schema["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    prop = schema["properties"][field]
    assert _max_length(prop) == COLUMN_LENGTHS[column] == _orm_length(*column)


def test_every_bounded_text_column_has_a_cap() -> None:
    from sqlalchemy import Enum, String

    from bayestwin.store.tables import ExternalId, metadata

    bounded = {
        (t.name, c.name)
        for t in metadata.sorted_tables
        for c in t.columns
        if (isinstance(c.type, String) and c.type.length and not isinstance(c.type, Enum))
        or isinstance(c.type, ExternalId)
    }
    assert bounded - INTERNAL_COLUMNS == set(COLUMN_LENGTHS)


LONG_CASES: list[tuple[dict[str, Any], str]] = [
    ({"brand": "B" * 101}, "brand"),
    ({"intervention_type": "k" * 101}, "intervention_type"),
    ({"experiment_design_id": "D" * 256}, "experiment_design_id"),
    ({"experiment_design_id": ""}, "experiment_design_id"),
]


@pytest.mark.parametrize(("change", "field"), LONG_CASES, ids=[f for _, f in LONG_CASES])
def test_lengths_on_the_tool_and_rest(
    service: TwinService, client: Any, change: dict[str, Any], field: str
) -> None:
    tool_error(tools.simulate_intervention(**tool_args(**change), service=service), field)
    problem(client.post("/simulate", json=tool_args(**change)), 422, field)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        ((*SIMULATE[:2], "B" * 101, *SIMULATE[3:]), "brand"),
        ((*SIMULATE[:6], "k" * 101), "intervention_type"),
        ((*SIMULATE, "--experiment-design-id", "D" * 256), "experiment_design_id"),
        ((*SIMULATE, "--experiment-design-id", ""), "experiment_design_id"),
        (("validate", str(uuid.UUID(int=5)), "--experiment-id", "E" * 256), "actual_experiment_id"),
        (
            ("register-experiment", "E" * 256, "--outcome", json.dumps(OUTCOME)),
            "actual_experiment_id",
        ),
        (("fit", "h.csv", "--twin-type", "hcp", "--brand", "B" * 101), "brand"),
        (("fit", "h.csv", "--twin-type", "hcp", "--brand", "B", "--name", "n" * 256), "model_name"),
    ],
    ids=[
        "brand",
        "intervention",
        "design-id",
        "empty-design-id",
        "validate",
        "register",
        "fit-brand",
        "fit-name",
    ],
)
def test_lengths_on_the_cli(data_dir: Path, argv: tuple[str, ...], field: str) -> None:
    assert cli_error(data_dir, *argv)["field"] == field


def test_an_experiment_id_too_long_for_its_column(service: TwinService, client: Any) -> None:
    sid = completed_simulation(service, seed=701)
    long_id = "E" * 256
    tool_error(
        tools.validate_twin_fidelity(sid, long_id, OUTCOME, service=service), "actual_experiment_id"
    )
    body = {"simulation_id": sid, "actual_experiment_id": long_id, "outcome": OUTCOME}
    problem(client.post("/validate", json=body), 422, "actual_experiment_id")
    with pytest.raises(InvalidInputError) as raised:
        tools.register_experiment_result(long_id, OUTCOME, service=service)
    assert raised.value.field == "actual_experiment_id"


def test_values_at_the_caps_are_accepted_and_stored(service: TwinService, client: Any) -> None:
    design = "D" * 255
    result = tools.simulate_intervention(
        **tool_args(random_seed=702, experiment_design_id=design), service=service
    )
    assert isinstance(result, SimulationResult), result
    assert service.get_simulation(result.simulation_id).experiment_design_id == design
    response = client.post(
        "/simulate", json=tool_args(random_seed=703, experiment_design_id=design)
    )
    assert response.status_code == 202, response.text
    # a 100-character brand passes the schema: the answer is that it has no model
    longest = tools.simulate_intervention(**tool_args(brand="B" * 100), service=service)
    assert isinstance(longest, ToolError) and longest.error.type == "no_active_model"
    experiment = "X" * 255
    tools.register_experiment_result(experiment, OUTCOME, service=service)
    fid = tools.validate_twin_fidelity(
        completed_simulation(service, 704), experiment, service=service
    )
    assert isinstance(fid, FidelityResult), fid
    assert fid.actual_experiment_id == experiment


# -- 8. one request check for every face --------------------------------------------------------


def test_an_empty_experiment_id_is_refused_by_every_face(
    service: TwinService, client: Any, data_dir: Path
) -> None:
    sid = completed_simulation(service, seed=801)
    tool_error(
        tools.validate_twin_fidelity(sid, "", OUTCOME, service=service), "actual_experiment_id"
    )
    body = {"simulation_id": sid, "actual_experiment_id": "", "outcome": OUTCOME}
    problem(client.post("/validate", json=body), 422, "actual_experiment_id")
    for extra in ((), ("--outcome", json.dumps(OUTCOME))):
        error = cli_error(data_dir, "validate", sid, "--experiment-id", "", *extra)
        assert error["field"] == "actual_experiment_id"
    # nothing was recorded: the simulation can still be validated once
    assert isinstance(
        tools.validate_twin_fidelity(sid, "E-801", OUTCOME, service=service), FidelityResult
    )


def test_the_cli_validates_the_simulation_id_like_the_others(
    service: TwinService, client: Any, data_dir: Path
) -> None:
    tool_error(tools.validate_twin_fidelity("nope", "E", OUTCOME, service=service), "simulation_id")
    body = {"simulation_id": "nope", "actual_experiment_id": "E", "outcome": OUTCOME}
    problem(client.post("/validate", json=body), 422, "simulation_id")
    error = cli_error(data_dir, "validate", "nope", "--experiment-id", "E")
    assert error["field"] == "simulation_id"


# -- 9. errors do not echo the input in full ----------------------------------------------------


def test_echo_cuts_long_values_and_keeps_short_ones() -> None:
    assert echo("abc") == "'abc'"
    assert echo(12) == "12"
    cut = echo(BIG)
    assert cut.startswith("'" + "b" * ECHO_LIMIT + "'") and cut.endswith("…(1000000 chars)")
    assert len(echo(list(range(100_000)))) < ECHO_LIMIT + 40
    (p,) = field_problems(
        [{"loc": ("twin_count",), "msg": "bad", "type": "int_type", "input": BIG}]
    )
    assert len(p.message) < 200 and "(1000000 chars)" in p.message


def test_messages_and_problem_lists_are_bounded() -> None:
    error = InvalidInputError("x" * 50_000, field="f" * 10_000)
    assert len(error.message) < MESSAGE_LIMIT + 40 and len(error.field or "") < FIELD_LIMIT + 40
    many = InvalidInputError(
        "bad",
        problems=field_problems(
            [{"loc": (f"f{i}",), "msg": "bad", "type": "value_error"} for i in range(500)]
        ),
    )
    assert len(many.problems) == PROBLEM_LIMIT


HUGE_CASES: list[dict[str, Any]] = [
    {"brand": BIG},
    {"intervention_type": BIG},
    {"twin_count": BIG},
    {"experiment_design_id": BIG},
    {"intervention_config": {"target": {BIG: ["a"]}}},
    {"intervention_config": {"target": {"segment": [{"x": i} for i in range(5000)]}}},
]
HUGE_IDS = ["brand", "intervention-type", "twin-count", "design-id", "target-column", "many-errors"]


@pytest.mark.parametrize("change", HUGE_CASES, ids=HUGE_IDS)
def test_a_huge_input_gets_a_short_error_on_the_tool(
    service: TwinService, change: dict[str, Any]
) -> None:
    result = tools.simulate_intervention(**tool_args(**change), service=service)
    assert isinstance(result, ToolError) and result.error.type == "invalid_input", result
    assert len(result.model_dump_json()) < 10_000
    assert len(result.error.errors) <= PROBLEM_LIMIT


@pytest.mark.parametrize("change", HUGE_CASES, ids=HUGE_IDS)
def test_a_huge_input_gets_a_short_problem_on_rest(client: Any, change: dict[str, Any]) -> None:
    response = client.post("/simulate", json=tool_args(**change))
    body = problem(response, 422)
    assert len(response.content) < 10_000, len(response.content)
    assert len(body["errors"]) <= PROBLEM_LIMIT
    assert BIG[:1000] not in response.text


def test_a_huge_input_gets_a_short_error_on_the_cli(data_dir: Path) -> None:
    code, out, err = cli(*SIMULATE[:2], BIG, *SIMULATE[3:], "--data-dir", str(data_dir))
    assert code == 2 and "Traceback" not in err
    assert len(err) < 2_000 and "brand" in err


@pytest.mark.parametrize(
    ("ate", "se"), [(1e308, 1e-300), (-1e308, 1e-300), (1.0, 1e300)], ids=["big", "negative", "se"]
)
def test_an_extreme_outcome_names_the_input_not_an_output(
    service: TwinService, client: Any, data_dir: Path, ate: float, se: float
) -> None:
    sid = completed_simulation(service, seed=901)
    outcome = {**OUTCOME, "actual_ate": ate, "actual_se": se}
    result = tool_error(
        tools.validate_twin_fidelity(sid, "E-9", outcome, service=service), "actual_ate"
    )
    fields = [e.field for e in result.error.errors]
    assert (
        fields == ["actual_ate", "actual_se"]
        and "standardized_error" not in result.model_dump_json()
    )
    body = {"simulation_id": sid, "actual_experiment_id": "E-9", "outcome": outcome}
    response = client.post("/validate", json=body)
    problem(response, 422, "actual_ate")
    assert "standardized_error" not in response.text
    error = cli_error(
        data_dir, "validate", sid, "--experiment-id", "E-9", "--outcome", json.dumps(outcome)
    )
    assert error["field"] == "actual_ate" and "standardized_error" not in json.dumps(error)


# -- 10. the API key ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_key_is_refused_at_start_up(service: TwinService, key: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        create_app(service, api_key=key)
    assert raised.value.field == "api_key"


def test_an_empty_key_in_the_environment_is_refused(tmp_path: Path) -> None:
    settings = load_settings(environ={"BAYESTWIN_API_KEY": ""}, data_dir=tmp_path)
    assert settings.api_key is not None and settings.api_key.get_secret_value() == ""
    with pytest.raises(InvalidInputError) as raised:
        create_app(settings=settings)
    assert raised.value.field == "api_key"
    # the other settings keep their rule: an empty variable means None
    assert load_settings(environ={"BAYESTWIN_DATABASE_URL": ""}).database_url is None
    assert load_settings(environ={}).api_key is None


def test_serve_refuses_an_empty_key(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    monkeypatch.setenv("BAYESTWIN_API_KEY", "")
    code, _, err = cli("serve", "--data-dir", str(data_dir))
    assert code == 2 and "api_key" in err and "Traceback" not in err
    assert served == []


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_docs_need_the_key_when_one_is_set(keyed: str, client: Any, path: str) -> None:
    assert problem(httpx.get(keyed + path), 401)["type"] == "urn:bayestwin:problem:unauthorized"
    problem(httpx.get(keyed + path, headers={"X-API-Key": "wrong"}), 401)
    assert httpx.get(keyed + path, headers={"X-API-Key": API_KEY}).status_code == 200
    open_url = str(client.base_url).rstrip("/").removesuffix(PREFIX)
    assert httpx.get(open_url + path).status_code == 200  # no key set: open


@pytest.mark.parametrize(
    "content",
    [b"{not json", json.dumps(tool_args(twin_count=True)).encode(), b""],
    ids=["malformed", "invalid", "empty"],
)
def test_401_comes_before_422(keyed: str, content: bytes) -> None:
    url = keyed + PREFIX + "/simulate"
    headers = {"content-type": "application/json"}
    response = httpx.post(url, content=content, headers=headers)
    problem(response, 401)
    assert response.headers["www-authenticate"] == "ApiKey"
    problem(httpx.post(url, content=content, headers={**headers, "X-API-Key": "no"}), 401)
    problem(httpx.post(url, content=content, headers={**headers, "X-API-Key": API_KEY}), 422)


def test_unknown_paths_need_the_key_too(keyed: str) -> None:
    problem(httpx.get(keyed + "/nowhere"), 401)
    problem(httpx.get(keyed + "/nowhere", headers={"X-API-Key": API_KEY}), 404)
    ok = httpx.get(keyed + PREFIX + "/models", headers={"X-API-Key": API_KEY})
    assert ok.status_code == 200 and ok.json()["total"] >= 1


# -- the caps fit the columns on a real database -------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'twins.db'}"
        return
    import os

    from bayestwin.store.db import temporary_database

    with temporary_database(os.environ["BAYESTWIN_TEST_POSTGRES_URL"]) as url:
        yield url.render_as_string(hide_password=False)


def test_values_at_every_cap_are_stored_and_one_more_is_refused_first(
    database_url: str, tmp_path: Path
) -> None:
    brand = "B" * 100
    settings = make_settings(tmp_path, database_url=database_url)
    with TwinService(settings, registry=None) as svc:
        svc.register(truth_model("hcp", brand=brand)[1])
        args = tool_args(brand=brand, random_seed=MAX_RANDOM_SEED, experiment_design_id="D" * 255)
        sim = tools.simulate_intervention(**args, service=svc)
        assert isinstance(sim, SimulationResult), sim
        stored = svc.get_simulation(sim.simulation_id)
        assert (stored.brand, stored.random_seed) == (brand, MAX_RANDOM_SEED)
        assert stored.experiment_design_id == "D" * 255
        fid = tools.validate_twin_fidelity(str(sim.simulation_id), "E" * 255, OUTCOME, service=svc)
        assert isinstance(fid, FidelityResult), fid
        assert svc.model_fidelity(sim.model_id).history[0].actual_experiment_id == "E" * 255
        for change, field in [
            ({"random_seed": MAX_RANDOM_SEED + 1}, "random_seed"),
            ({"experiment_design_id": "D" * 256}, "experiment_design_id"),
            ({"brand": brand + "B"}, "brand"),
        ]:
            refused = tool_error(
                tools.simulate_intervention(**{**args, **change}, service=svc), field
            )
            assert "INSERT" not in refused.error.message and "SELECT" not in refused.error.message
