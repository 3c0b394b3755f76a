"""Hardening of the service and the store: repeated validations, crashed workers,
database errors and broken model artifacts, on the tool, the CLI and the REST API.

Every test runs on SQLite and, with ``BAYESTWIN_TEST_POSTGRES_URL`` set, on a scratch
PostgreSQL database of its own; the database-error tests need PostgreSQL (SQLite stores
NUL characters and strings of any length).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import BRAND, make_settings, truth_model

from bayestwin.cli import main
from bayestwin.errors import InvalidInputError, UnavailableError
from bayestwin.schemas import SimulationResult, utcnow
from bayestwin.service import TwinService
from bayestwin.settings import Settings
from bayestwin.store.db import make_engine, temporary_database
from bayestwin.store.migrations import applied_migrations, upgrade
from bayestwin.store.repository import TwinRepository
from bayestwin.store.tables import TwinSimulation
from bayestwin.tools import ToolError, simulate_intervention, validate_twin_fidelity
from bayestwin.vocabulary import SimulationStatus

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from bayestwin.api import PREFIX, PROBLEM_JSON, create_app  # noqa: E402

POSTGRES_ENV = "BAYESTWIN_TEST_POSTGRES_URL"
TESTS = Path(__file__).resolve().parent
OUTCOME = {"actual_ate": 0.04, "actual_se": 0.01, "n_treatment": 800, "n_control": 800}
SQL_WORDS = ("INSERT", "SELECT", "UPDATE", "%(", "[SQL", "parameters")


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of the test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'twins.db'}"
        return
    with temporary_database(os.environ[POSTGRES_ENV]) as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A scratch PostgreSQL database (the test is skipped without one)."""
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"{POSTGRES_ENV} is not set")
    with temporary_database(os.environ[POSTGRES_ENV]) as url:
        yield url.render_as_string(hide_password=False)


def settings_for(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    return make_settings(tmp_path / "data", database_url=url, **overrides)


def request(seed: int = 7, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "intervention_type": "email_campaign",
        "intervention_config": {"intensity": 1.0},
        "target_population": "hcp",
        "brand": BRAND,
        "twin_count": 500,
        "random_seed": seed,
    }
    body.update(kw)
    return body


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def cli_db(settings: Settings) -> tuple[str, ...]:
    return (
        "--data-dir",
        str(settings.resolved_data_dir()),
        "--database-url",
        settings.resolved_database_url(),
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A uvicorn server on a free loopback port, in a background thread."""

    def __init__(self, app: Any) -> None:
        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Any:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "no server"
            time.sleep(0.02)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}{PREFIX}", timeout=30)
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem: dict[str, Any] = response.json()
    return problem


def assert_clean(message: str, *, limit: int = 240) -> None:
    """A short message with no SQL, no parameters and no path."""
    assert len(message) <= limit, message
    for word in SQL_WORDS:
        assert word not in message, message
    assert "/" not in message and "Traceback" not in message, message


def row_status(url: str, simulation_id: uuid.UUID | str) -> SimulationResult:
    with TwinRepository(url) as repo:
        return repo.get_simulation(simulation_id, include_draws=False)


# -- 1. a simulation is validated once; the score counts each real experiment once --------


def test_tool_refuses_a_second_validation_unless_replaced(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, database_url)
    with TwinService(settings, registry=None) as service:
        service.register(truth_model("hcp")[1])
        sim = service.simulate(request())
        sid = str(sim.simulation_id)
        first = validate_twin_fidelity(sid, "EXP-1", OUTCOME, service=service)
        assert not isinstance(first, ToolError), first
        again = validate_twin_fidelity(sid, "EXP-1", OUTCOME, service=service)
        assert isinstance(again, ToolError)
        assert again.error.type == "invalid_state"
        assert again.error.field == "simulation_id"
        assert "already validated" in again.error.message
        replaced = validate_twin_fidelity(sid, "EXP-1", OUTCOME, replace=True, service=service)
        assert not isinstance(replaced, ToolError), replaced
        rows = service.repository.list_validations(sim.simulation_id)
        assert [r.tracking_id for r in rows] == [replaced.tracking_id]
        fidelity = service.model_fidelity(sim.model_id)  # type: ignore[arg-type]
        assert fidelity.summary.n_validations == 1
        assert fidelity.summary.score is None  # one experiment: below the three required


def test_one_experiment_counts_once_across_simulations(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, database_url)
    with TwinService(settings, registry=None) as service:
        info = service.register(truth_model("hcp")[1])
        sims = [service.simulate(request(seed=seed)) for seed in (1, 2, 3)]
        for sim in sims:  # three simulations, one real experiment
            result = service.validate(sim.simulation_id, "EXP-SAME", outcome=OUTCOME)
            assert result.model_fidelity_score is None
        summary = service.model_fidelity(info.model_id).summary
        assert summary.n_validations == 1 and summary.score is None
        assert service.get_model(info.model_id).fidelity_score is None
        for seed, experiment in ((4, "EXP-B"), (5, "EXP-C")):
            sim = service.simulate(request(seed=seed))
            last = service.validate(sim.simulation_id, experiment, outcome=OUTCOME)
        summary = service.model_fidelity(info.model_id).summary
        assert summary.n_validations == 3 and summary.score is not None
        assert last.model_fidelity_score == pytest.approx(summary.score)
        assert len(service.model_fidelity(info.model_id).history) == 5  # every row is kept


def test_cli_refuses_a_second_validation_unless_replaced(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, database_url)
    with TwinService(settings, registry=None) as service:
        service.register(truth_model("hcp")[1])
    db = cli_db(settings)
    code, out, err = run_cli(
        "simulate", *db, "--brand", BRAND, "--twin-type", "hcp", "--intervention",
        "email_campaign", "--intensity", "1", "--twins", "500", "--seed", "3", "--json",
    )  # fmt: skip
    assert code == 0, err
    sid = json.loads(out)["simulation_id"]
    validate = ("validate", sid, *db, "--experiment-id", "EXP-1", "--outcome", json.dumps(OUTCOME))
    assert run_cli(*validate)[0] == 0
    code, _, err = run_cli(*validate)
    assert code == 2
    assert "already validated" in err and "Traceback" not in err
    code, out, err = run_cli(*validate, "--replace", "--json")
    assert code == 0, err
    with TwinRepository(settings.resolved_database_url()) as repo:
        rows = repo.list_validations(sid)
    assert [str(r.tracking_id) for r in rows] == [json.loads(out)["tracking_id"]]


def test_rest_answers_409_to_a_second_validation(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, database_url)
    with TwinService(settings, registry=None) as service, Server(create_app(service)) as client:
        info = service.register(truth_model("hcp")[1])
        sim = service.simulate(request())
        body = {
            "simulation_id": str(sim.simulation_id),
            "actual_experiment_id": "EXP-1",
            "outcome": OUTCOME,
        }
        assert client.post("/validate", json=body).status_code == 201
        problem = assert_problem(client.post("/validate", json=body), 409)
        assert "already validated" in problem["detail"]
        assert [e["field"] for e in problem["errors"]] == ["simulation_id"]
        assert client.post("/validate", json={**body, "replace": True}).status_code == 201
        history = client.get(f"/models/{info.model_id}/fidelity").json()
        assert history["total"] == 1
        assert history["summary"]["n_validations"] == 1
        assert history["summary"]["score"] is None


# -- 3. rows that no live worker owns are failed ----------------------------------------------

_KILLED_WORKER = textwrap.dedent(
    """
    import json, sys, threading
    sys.path.insert(0, {tests!r})
    from helpers import make_settings
    from bayestwin.service import TwinService

    settings = make_settings({data!r}, database_url={url!r})
    service = TwinService(settings, registry=None, max_workers=1, heartbeat_seconds=0.2)
    service.engine.simulate = lambda *a, **k: threading.Event().wait()  # never finishes
    rows = [service.submit({request!r} | {{"random_seed": seed}}) for seed in (11, 12, 13)]
    print(json.dumps([str(r.simulation_id) for r in rows]), flush=True)
    threading.Event().wait()
    """
)


def test_rows_of_a_killed_worker_are_failed_when_a_service_starts(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, database_url)
    with TwinService(settings, registry=None) as service:
        service.register(truth_model("hcp")[1])
    script = _KILLED_WORKER.format(
        tests=str(TESTS), data=str(tmp_path / "data"), url=database_url, request=request()
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        ids = json.loads(worker.stdout.readline() or "null")
        assert ids, worker.stderr.read() if worker.stderr else "no output"
        deadline = time.monotonic() + 20
        while row_status(database_url, ids[0]).simulation_status is not SimulationStatus.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)  # no clean-up runs
        worker.wait(10)
    statuses = [row_status(database_url, sid).simulation_status for sid in ids]
    assert statuses == [
        SimulationStatus.RUNNING,
        SimulationStatus.PENDING,
        SimulationStatus.PENDING,
    ]
    time.sleep(1.0)  # more than three missed heartbeats of 0.2 s
    with TwinService(settings, registry=None, heartbeat_seconds=0.2):
        rows = [row_status(database_url, sid) for sid in ids]
    for row in rows:
        assert row.simulation_status is SimulationStatus.FAILED
        assert row.error_message is not None
        assert row.error_message.startswith("abandoned: no live worker owned it at start-up")


def test_a_live_workers_rows_are_left_alone(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, database_url)
    release = threading.Event()
    with TwinService(settings, registry=None, max_workers=1, heartbeat_seconds=0.2) as owner:
        owner.register(truth_model("hcp")[1])
        real = owner.engine.simulate

        def held(*args: Any, **kwargs: Any) -> SimulationResult:
            release.wait(30)
            return real(*args, **kwargs)

        owner.engine.simulate = held  # type: ignore[method-assign]
        rows = [owner.submit(request(seed=seed)) for seed in (21, 22)]
        time.sleep(1.0)  # older than the grace period, but the owner's heartbeat is alive
        with TwinService(settings, registry=None, heartbeat_seconds=0.2) as other:
            time.sleep(0.8)  # the other service's heartbeats leave them alone too
            assert other.fail_abandoned_simulations() == []
            for row in rows:
                status = other.get_simulation(row.simulation_id).simulation_status
                assert status in (SimulationStatus.PENDING, SimulationStatus.RUNNING)
        release.set()
        deadline = time.monotonic() + 30
        while owner.get_simulation(rows[-1].simulation_id).simulation_status in (
            SimulationStatus.PENDING,
            SimulationStatus.RUNNING,
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert [owner.get_simulation(r.simulation_id).simulation_status for r in rows] == [
            SimulationStatus.COMPLETED,
            SimulationStatus.COMPLETED,
        ]


def test_a_running_service_fails_rows_whose_worker_went_silent(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, database_url)
    with TwinService(settings, registry=None, heartbeat_seconds=0.2) as service:
        service.register(truth_model("hcp")[1])
        template = service.simulate(request())
        pending = template.model_copy(
            update={
                "simulation_id": uuid.uuid4(),
                "simulation_status": SimulationStatus.PENDING,
                "simulated_ate": None,
                "simulated_ci_lower": None,
                "simulated_ci_upper": None,
            }
        )
        # A worker that wrote its row and died right after (its heartbeat is fresh).
        orphan = service.repository.create_simulation(pending, worker_id="gone:1:00000000")
        assert service.fail_abandoned_simulations() == []  # within the grace period
        deadline = time.monotonic() + 10
        while service.get_simulation(orphan.simulation_id).simulation_status == "pending":
            assert time.monotonic() < deadline, "the heartbeat never failed the row"
            time.sleep(0.05)
        row = service.get_simulation(orphan.simulation_id)
    assert row.simulation_status is SimulationStatus.FAILED
    assert row.error_message is not None
    assert row.error_message.startswith("abandoned: no live worker owned it (")
    assert "worker gone:1:00000000" in row.error_message


def test_closing_fails_the_rows_that_never_ran(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, database_url)
    release = threading.Event()
    service = TwinService(settings, registry=None, max_workers=1)
    service.register(truth_model("hcp")[1])
    real = service.engine.simulate

    def held(*args: Any, **kwargs: Any) -> SimulationResult:
        release.wait(30)
        return real(*args, **kwargs)

    service.engine.simulate = held  # type: ignore[method-assign]
    running, queued = (service.submit(request(seed=seed)) for seed in (31, 32))
    deadline = time.monotonic() + 20
    while service.get_simulation(running.simulation_id).simulation_status != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    threading.Timer(0.3, release.set).start()
    service.close()  # the running one finishes; the queued one never starts
    assert row_status(database_url, running.simulation_id).simulation_status == "completed"
    left = row_status(database_url, queued.simulation_id)
    assert left.simulation_status is SimulationStatus.FAILED
    assert left.error_message == "abandoned: the service closed before it ran (it was pending)"


def test_server_start_up_fails_orphaned_rows(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, database_url)
    with TwinService(settings, registry=None) as service:
        service.register(truth_model("hcp")[1])
        template = service.simulate(request())
    orphans = []
    with TwinRepository(database_url) as repo:
        for worker in ("dead-host:4242:0badf00d", None):  # a dead worker; a row from before 012
            pending = template.model_copy(
                update={
                    "simulation_id": uuid.uuid4(),
                    "simulation_status": SimulationStatus.PENDING,
                    "simulated_ate": None,
                    "simulated_ci_lower": None,
                    "simulated_ci_upper": None,
                    "created_at": utcnow() - timedelta(minutes=5),
                }
            )
            orphans.append(repo.create_simulation(pending, worker_id=worker).simulation_id)
        with repo.engine.begin() as conn:
            conn.execute(
                sa.update(TwinSimulation)
                .where(TwinSimulation.simulation_id == orphans[0])
                .values(heartbeat_at=utcnow() - timedelta(minutes=5))
            )
    with Server(create_app(settings=settings)) as client:  # the app builds its service
        for sid in orphans:
            row = client.get(f"/simulations/{sid}").json()
            assert row["simulation_status"] == "failed"
            assert row["error_message"].startswith("abandoned: no live worker owned it")
    assert "worker dead-host:4242:0badf00d" in row_status(database_url, orphans[0]).error_message


def test_an_old_sqlite_database_gets_the_worker_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.begin() as conn:  # as a database made before migration 012
            conn.exec_driver_sql("ALTER TABLE twin_simulations DROP COLUMN worker_id")
            conn.exec_driver_sql("ALTER TABLE twin_simulations DROP COLUMN heartbeat_at")
            conn.exec_driver_sql("DELETE FROM bayestwin_schema_migrations WHERE version = '012'")
        with pytest.raises(UnavailableError, match="db upgrade") as stale:
            TwinRepository(engine, ensure_schema=False).list_simulations()
        assert stale.value.code == "schema_out_of_date"
        assert_clean(stale.value.message)
        assert upgrade(engine) == ["012_simulation_workers.sql"]
        columns = {c["name"] for c in sa.inspect(engine).get_columns("twin_simulations")}
        assert {"worker_id", "heartbeat_at"} <= columns
        assert [m.version for m in applied_migrations(engine)] == ["011", "012", "013"]
    finally:
        engine.dispose()


# -- 5. database errors name the field and never carry the SQL --------------------------------


def test_store_maps_database_errors_to_fields(postgres_url: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, postgres_url)
    with TwinService(settings, registry=None) as service:
        service.register(truth_model("hcp")[1])
        sim = service.simulate(request())
        repo = service.repository
        with pytest.raises(InvalidInputError) as nul:
            repo.get_active_model("Kis\x00qali", "hcp")
        assert (nul.value.field, nul.value.code) == ("brand", "invalid_character")
        long_design = sim.model_copy(
            update={
                "simulation_id": uuid.uuid4(),
                "simulation_status": SimulationStatus.PENDING,
                "experiment_design_id": "D" * 300,
            }
        )
        with pytest.raises(InvalidInputError) as too_long:
            repo.create_simulation(long_design)
        assert (too_long.value.field, too_long.value.code) == ("experiment_design_id", "too_long")
        assert "255" in too_long.value.message
        for error in (nul.value, too_long.value):
            assert_clean(error.message)
            assert error.__cause__ is None and error.__suppress_context__


def test_tool_and_rest_database_errors_are_short(postgres_url: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, postgres_url)
    with TwinService(settings, registry=None) as service, Server(create_app(service)) as client:
        service.register(truth_model("hcp")[1])
        sim = service.simulate(request())
        cases: list[tuple[str, Any]] = [
            ("experiment_design_id", {"experiment_design_id": "D" * 300}),
            ("experiment_design_id", {"experiment_design_id": "D\x00-1"}),
            ("brand", {"brand": "Kis\x00qali"}),
        ]
        for field, change in cases:
            tool = simulate_intervention(**request(seed=None, **change), service=service)
            assert isinstance(tool, ToolError), (field, tool)
            assert tool.error.type == "invalid_input" and tool.error.field == field
            assert_clean(tool.error.message)
            fresh = request(seed=None, **change)  # no cache hit: the row is written
            problem = assert_problem(client.post("/simulate", json=fresh), 422)
            assert field in [e["field"] for e in problem["errors"]], problem
            assert_clean(problem["detail"])
            assert len(json.dumps(problem)) < 1500
        for experiment in ("E" * 300, "E\x00-1"):
            tool_v = validate_twin_fidelity(
                str(sim.simulation_id), experiment, OUTCOME, service=service
            )
            assert isinstance(tool_v, ToolError)
            assert tool_v.error.field == "actual_experiment_id"
            assert_clean(tool_v.error.message)
            body = {"simulation_id": str(sim.simulation_id), "actual_experiment_id": experiment}
            problem = assert_problem(
                client.post("/validate", json={**body, "outcome": OUTCOME}), 422
            )
            assert "actual_experiment_id" in [e["field"] for e in problem["errors"]]
            assert_clean(problem["detail"])


# -- 6. a broken model artifact is a clear, path-free error, noticed on the next load ---------


def _break(directory: Path) -> bytes:
    posterior = directory / "posterior.npz"
    original = posterior.read_bytes()
    posterior.write_bytes(original[: len(original) // 3])
    return original


def test_broken_artifact_on_tool_cli_and_rest(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, database_url)
    with TwinService(settings, registry=None) as service, Server(create_app(service)) as client:
        info = service.register(truth_model("hcp")[1])
        expected = (
            f"model artifact unreadable: model {info.model_name}, version "
            f"{info.model_version}; refit or re-register"
        )
        args = request(seed=None)
        assert isinstance(simulate_intervention(**args, service=service), SimulationResult)
        original = _break(Path(str(info.artifact_uri)))

        tool = simulate_intervention(**args, service=service)  # the running service notices
        assert isinstance(tool, ToolError)
        assert tool.error.type == "simulation_failed" and tool.error.message == expected
        with pytest.raises(UnavailableError) as raised:
            service.load_model(info.model_id)
        assert raised.value.code == "model_artifact"

        problem = assert_problem(client.post("/simulate", json=args), 503)
        assert problem["detail"] == expected
        assert str(tmp_path) not in json.dumps(problem)

        code, out, err = run_cli(
            "simulate", *cli_db(settings), "--brand", BRAND, "--twin-type", "hcp",
            "--intervention", "email_campaign", "--twins", "500",
        )  # fmt: skip
        assert code == 2
        assert err.strip() == f"bayestwin: error: {expected}"
        assert "Traceback" not in err + out and str(tmp_path) not in err

        # A failed load is not kept: mended files serve again.
        (Path(str(info.artifact_uri)) / "posterior.npz").write_bytes(original)
        assert isinstance(simulate_intervention(**args, service=service), SimulationResult)
        assert client.post("/simulate", json=args).status_code == 202


def test_other_version_artifact_names_the_model_not_the_path(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'twins.db'}")
    with TwinService(settings, registry=None) as service:
        info = service.register(truth_model("hcp")[1])
        meta = Path(str(info.artifact_uri)) / "metadata.json"
        data = json.loads(meta.read_text())
        meta.write_text(json.dumps({**data, "bayestwin_version": "0.0.1"}))
        with pytest.raises(UnavailableError) as raised:
            service.load_model(info.model_id)
    assert raised.value.code == "model_version"
    assert raised.value.message.startswith(f"model {info.model_name}, version 1: it was saved")
    assert str(tmp_path) not in raised.value.message
