"""REST API against a real uvicorn server on loopback, through httpx, plus schemathesis."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
schemathesis = pytest.importorskip("schemathesis")

from helpers import BRAND, make_settings, truth_model  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from bayestwin.api import PREFIX, PROBLEM_JSON, create_app  # noqa: E402
from bayestwin.api.problems import problem_for  # noqa: E402
from bayestwin.core.outcomes import outcome_from_frame  # noqa: E402
from bayestwin.errors import (  # noqa: E402
    BayesTwinError,
    ConflictError,
    InvalidInputError,
    NotFitError,
    NotFoundError,
    UnavailableError,
)
from bayestwin.service import TwinService  # noqa: E402
from bayestwin.synthetic import SyntheticTwinData  # noqa: E402

API_KEY = "correct horse battery staple"


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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TwinService, SyntheticTwinData]]:
    settings = make_settings(tmp_path_factory.mktemp("api"))
    with TwinService(settings, registry=None) as service:
        syn, model = truth_model("hcp")
        service.register(model)
        yield service, syn


@pytest.fixture(scope="module")
def base_url(world: tuple[TwinService, SyntheticTwinData]) -> Iterator[str]:
    with Server(create_app(world[0])) as server:
        yield server.url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[Any]:
    with httpx.Client(base_url=base_url + PREFIX, timeout=30) as c:
        yield c


def body(**kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "intervention_type": "email_campaign",
        "intervention_config": {"intensity": 1.0},
        "target_population": "hcp",
        "brand": BRAND,
        "twin_count": 3000,
    }
    out.update(kw)
    return out


def poll(client: Any, simulation_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/simulations/{simulation_id}")
        assert response.status_code == 200
        data: dict[str, Any] = response.json()
        if data["simulation_status"] in ("completed", "failed"):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.05)


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["type"].startswith("urn:bayestwin:problem:")
    assert problem["title"] and problem["detail"]
    if field is not None:
        assert field in [e["field"] for e in problem["errors"]], problem
    return problem


# -- the six endpoints -------------------------------------------------------------------


def test_simulate_is_asynchronous_and_polls_to_completion(client: Any) -> None:
    response = client.post("/simulate", json=body(random_seed=1, experiment_design_id="D-1"))
    assert response.status_code == 202, response.text
    row = response.json()
    assert row["simulation_status"] in ("pending", "running")
    assert response.headers["location"] == f"{PREFIX}/simulations/{row['simulation_id']}"
    done = poll(client, row["simulation_id"])
    assert done["simulation_status"] == "completed"
    assert done["experiment_design_id"] == "D-1"
    assert done["simulated_ate"] is not None and done["ate_draws"] is None
    with_draws = client.get(f"/simulations/{row['simulation_id']}", params={"include_draws": True})
    assert len(with_draws.json()["ate_draws"]) == 200

    again = client.post("/simulate", json=body(random_seed=1))
    assert again.status_code == 200  # answered from the cache
    assert again.json()["simulation_id"] == row["simulation_id"]
    assert again.json()["from_cache"] is True


def test_twin_count_defaults_to_the_setting(
    client: Any, world: tuple[TwinService, SyntheticTwinData]
) -> None:
    response = client.post("/simulate", json={**body(random_seed=9), "twin_count": None})
    assert response.status_code == 202, response.text
    done = poll(client, response.json()["simulation_id"])
    assert done["twin_count"] == world[0].settings.default_twin_count


def test_list_simulations_is_paginated_and_filtered(client: Any) -> None:
    ids = [
        client.post("/simulate", json=body(random_seed=50 + i)).json()["simulation_id"]
        for i in range(3)
    ]
    for sid in ids:
        poll(client, sid)
    page = client.get("/simulations", params={"limit": 2, "brand": BRAND}).json()
    assert page["limit"] == 2 and len(page["items"]) == 2 and page["total"] >= 3
    rest = client.get("/simulations", params={"limit": 2, "offset": 2, "brand": BRAND}).json()
    assert {i["simulation_id"] for i in page["items"]}.isdisjoint(
        i["simulation_id"] for i in rest["items"]
    )
    none = client.get("/simulations", params={"brand": "Other"}).json()
    assert none["total"] == 0 and none["items"] == []
    completed = client.get("/simulations", params={"status": "completed", "twin_type": "hcp"})
    assert all(i["simulation_status"] == "completed" for i in completed.json()["items"])
    assert_problem(client.get("/simulations", params={"limit": 0}), 422, "limit")
    assert_problem(client.get("/simulations", params={"status": "done"}), 422, "status")


def test_validate_models_and_fidelity(
    client: Any, world: tuple[TwinService, SyntheticTwinData]
) -> None:
    service, syn = world
    sid = client.post("/simulate", json=body(random_seed=3)).json()["simulation_id"]
    poll(client, sid)
    frame = syn.truth.run_experiment(syn.population(BRAND), "email_campaign", n_per_arm=2000)
    service.register_experiment_result("EXP-API", outcome_from_frame(frame, "bernoulli"))
    response = client.post(
        "/validate", json={"simulation_id": sid, "actual_experiment_id": "EXP-API"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["fidelity_grade"] in ("excellent", "good", "fair", "poor")
    other = client.post("/simulate", json=body(random_seed=5)).json()["simulation_id"]
    poll(client, other)  # a simulation is validated once: the inline result gets its own
    inline = client.post(
        "/validate",
        json={
            "simulation_id": other,
            "actual_experiment_id": "EXP-INLINE",
            "outcome": {
                "actual_ate": 0.05,
                "actual_se": 0.01,
                "n_treatment": 900,
                "n_control": 900,
            },
        },
    )
    assert inline.status_code == 201

    models = client.get("/models", params={"active_only": True}).json()
    (model,) = models["items"]
    fidelity = client.get(f"/models/{model['model_id']}/fidelity").json()
    assert fidelity["total"] == 2 and len(fidelity["items"]) == 2
    assert fidelity["summary"]["n_validations"] == 2
    assert fidelity["summary"]["score"] is None  # below min_validations_for_score
    assert fidelity["window_days"] == 90
    one = client.get(f"/models/{model['model_id']}/fidelity", params={"limit": 1, "offset": 1})
    assert len(one.json()["items"]) == 1


# -- errors are problem details naming the field ------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"twin_count": "many"}, "twin_count"),
        ({"twin_count": 60_000}, "twin_count"),
        ({"confidence_level": 0}, "confidence_level"),
        ({"target_population": "dog"}, "target_population"),
        ({"intervention_type": "telepathy"}, "intervention_type"),
        ({"intervention_config": {"intensity": -1}}, "intervention_config.intensity"),
        ({"intervention_config": {"target": {"segment": ["mars"]}}}, "intervention_config.target"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bad_simulate_bodies(client: Any, change: dict[str, Any], field: str) -> None:
    assert_problem(client.post("/simulate", json=body(**change)), 422, field)


def test_other_errors(client: Any) -> None:
    problem = assert_problem(client.post("/simulate", json=body(brand="NoModel")), 422, "brand")
    assert problem["type"] == "urn:bayestwin:problem:no-active-model"
    assert_problem(client.post("/simulate", content=b"{not json"), 422)
    missing = str(uuid.UUID(int=7))
    assert_problem(client.get(f"/simulations/{missing}"), 404, "simulation_id")
    assert_problem(client.get("/simulations/not-a-uuid"), 422, "simulation_id")
    assert_problem(client.get(f"/models/{missing}/fidelity"), 404, "model_id")
    assert_problem(
        client.post("/validate", json={"simulation_id": missing, "actual_experiment_id": "X"}),
        404,
        "simulation_id",
    )
    sid = client.post("/simulate", json=body(random_seed=4)).json()["simulation_id"]
    poll(client, sid)
    assert_problem(
        client.post("/validate", json={"simulation_id": sid, "actual_experiment_id": "nope"}),
        404,
        "actual_experiment_id",
    )
    assert_problem(client.get("/no-such-endpoint"), 404)
    assert_problem(client.delete("/models"), 405)


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (InvalidInputError("bad", field="brand"), 422, "invalid-input"),
        (NotFoundError("no model", code="no_active_model", field="brand"), 422, "no-active-model"),
        (NotFoundError("x not found", code="not_found"), 404, "not-found"),
        (
            NotFoundError("no result", code="experiment_not_found"),
            404,
            "experiment-result-not-found",
        ),
        (ConflictError("unfinished", code="invalid_state"), 409, "invalid-state"),
        (ConflictError("exists", code="already_exists"), 409, "already-exists"),
        (NotFitError("failed its diagnostics", code="model_not_usable"), 409, "model-not-usable"),
        (UnavailableError("too slow", code="timeout"), 504, "timeout"),
        (UnavailableError("old format", code="model_version"), 503, "unavailable"),
    ],
)
def test_error_statuses_follow_the_code_then_the_kind(
    error: BayesTwinError, status: int, kind: str
) -> None:
    problem = problem_for(error)
    assert (problem.status, problem.slug) == (status, kind)


def test_openapi_schema(base_url: str) -> None:
    spec = httpx.get(base_url + "/openapi.json").json()
    paths = {p.removeprefix(PREFIX) for p in spec["paths"]}
    assert {
        "/simulate",
        "/simulations",
        "/simulations/{simulation_id}",
        "/validate",
        "/models",
        "/models/{model_id}/fidelity",
    } <= paths
    responses = spec["paths"][PREFIX + "/simulate"]["post"]["responses"]
    assert "202" in responses and PROBLEM_JSON in responses["422"]["content"]


# -- timeout and API key -------------------------------------------------------------------


def test_simulation_over_time_is_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path, simulation_timeout_seconds=0.3)
    with TwinService(settings, registry=None) as service:
        service.register(truth_model("hcp")[1])
        release = threading.Event()
        real = service.engine.simulate

        def slow(*args: Any, **kwargs: Any) -> Any:
            release.wait(5)
            return real(*args, **kwargs)

        monkeypatch.setattr(service.engine, "simulate", slow)
        with (
            Server(create_app(service)) as server,
            httpx.Client(base_url=server.url + PREFIX, timeout=30) as c,
        ):
            response = c.post("/simulate", json=body(random_seed=1))
            assert response.status_code == 202
            done = poll(c, response.json()["simulation_id"], timeout=10)
            assert done["simulation_status"] == "failed"
            assert "timed out" in done["error_message"]
            release.set()


def test_api_key(world: tuple[TwinService, SyntheticTwinData]) -> None:
    with Server(create_app(world[0], api_key=API_KEY)) as server:
        url = server.url + PREFIX + "/models"
        problem = assert_problem(httpx.get(url), 401)
        assert problem["type"] == "urn:bayestwin:problem:unauthorized"
        assert_problem(httpx.get(url, headers={"X-API-Key": "wrong"}), 401)
        assert httpx.get(url, headers={"X-API-Key": API_KEY}).status_code == 200
        assert_problem(httpx.get(server.url + "/openapi.json"), 401)  # the docs need it too
        spec = httpx.get(server.url + "/openapi.json", headers={"X-API-Key": API_KEY}).json()
        assert "APIKeyHeader" in spec["components"]["securitySchemes"]


def test_api_key_from_settings(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_key="from-settings")
    app = create_app(settings=settings)
    with Server(app) as server:
        url = server.url + PREFIX + "/models"
        assert httpx.get(url).status_code == 401
        ok = httpx.get(url, headers={"X-API-Key": "from-settings"})
        assert ok.status_code == 200 and ok.json()["total"] == 0


# -- property-based: no 5xx anywhere -------------------------------------------------------


def test_no_server_errors(base_url: str) -> None:
    """Schemathesis cases for every operation; none may get a 5xx."""
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 6
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        check()
