"""TwinRepository on SQLite and on PostgreSQL.

SQLite tests use a fresh database file each. PostgreSQL tests (BAYESTWIN_TEST_POSTGRES_URL)
share one scratch database, migrated once, and start from empty tables.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from bayestwin.errors import ConflictError, InvalidInputError, NotFoundError
from bayestwin.schemas import (
    FidelityResult,
    InterventionConfig,
    NumericRange,
    SimulateInterventionRequest,
    SimulationResult,
    TwinModelInfo,
)
from bayestwin.settings import load_settings
from bayestwin.store.db import database_url, make_engine, temporary_database
from bayestwin.store.migrations import upgrade
from bayestwin.store.repository import TwinRepository
from bayestwin.store.repository.matching import config_distance, request_hash
from bayestwin.store.tables import TwinSimulation
from bayestwin.vocabulary import FidelityGrade, Recommendation, SimulationStatus, TwinType

PG_URL = os.environ.get("BAYESTWIN_TEST_POSTGRES_URL")
NO_PG = "set BAYESTWIN_TEST_POSTGRES_URL to run PostgreSQL tests"


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[Engine]:
    if not PG_URL:
        pytest.skip(NO_PG)
    with temporary_database(PG_URL) as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            yield engine
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'twins.db'}")
        try:
            yield eng
        finally:
            eng.dispose()
    else:
        eng = request.getfixturevalue("pg_engine")
        with eng.begin() as conn:
            conn.exec_driver_sql(
                "TRUNCATE twin_fidelity_tracking, twin_simulations, digital_twin_models"
            )
        yield eng


@pytest.fixture
def repo(engine: Engine) -> TwinRepository:
    return TwinRepository(engine)


# -- builders ------------------------------------------------------------------------------


def make_model(
    brand: str = "brandx",
    twin_type: TwinType = TwinType.HCP,
    version: str = "1",
    **kw: Any,
) -> TwinModelInfo:
    data: dict[str, Any] = {
        "model_id": uuid.uuid4(),
        "model_name": f"{brand}-{twin_type.value}",
        "twin_type": twin_type,
        "model_version": version,
        "brand": brand,
        "mlflow_run_id": f"run-{version}",
        "training_config": {"draws": 1000, "family": "bernoulli"},
        "feature_columns": ["specialty", "decile"],
        "target_columns": ["converted"],
        "performance_metrics": {"max_r_hat": 1.003, "loo": {"elpd": -1234.5}},
    }
    data.update(kw)
    return TwinModelInfo(**data)


def make_sim(model: TwinModelInfo, **kw: Any) -> SimulationResult:
    data: dict[str, Any] = {
        "model_id": model.model_id,
        "brand": model.brand,
        "twin_type": model.twin_type,
        "intervention_type": "email_campaign",
        "intervention_config": {"intensity": 1.0, "target": {"specialty": ["onc", "card"]}},
        "twin_count": 1000,
        "random_seed": 7,
    }
    data.update(kw)
    return SimulationResult.model_validate(data)


def finished(sim: SimulationResult, ate: float = 0.04, **kw: Any) -> SimulationResult:
    data = sim.model_dump()
    data.update(
        simulated_ate=ate,
        simulated_ci_lower=ate - 0.02,
        simulated_ci_upper=ate + 0.02,
        recommendation=Recommendation.DEPLOY,
        recommended_sample_size=2400,
        relative_lift=0.12,
        prob_effect_above_threshold=0.81,
        segment_effects=[
            {
                "segment": "onc",
                "n_twins": 600,
                "ate": ate,
                "ci_lower": ate - 0.03,
                "ci_upper": ate + 0.03,
                "relative_lift": 0.1,
                "prob_above_threshold": 0.7,
            }
        ],
        ate_draws=[ate - 0.01, ate, ate + 0.01],
        twin_unit_ids=[f"u{i}" for i in range(5)],
    )
    data.update(kw)
    return SimulationResult.model_validate(data)


def run_to_completion(repo: TwinRepository, sim: SimulationResult, **kw: Any) -> SimulationResult:
    repo.create_simulation(sim)
    repo.mark_running(sim.simulation_id)
    return repo.complete_simulation(finished(sim, **kw))


def run_to_failure(repo: TwinRepository, sim: SimulationResult, error: str) -> SimulationResult:
    repo.create_simulation(sim)
    repo.mark_running(sim.simulation_id)
    return repo.fail_simulation(sim.simulation_id, error)


# -- models --------------------------------------------------------------------------------


def test_register_and_get_model_round_trip(repo: TwinRepository) -> None:
    info = make_model(fidelity_score=0.8, artifact_uri="models:/m-1", is_active=True)
    stored = repo.register_model(info)
    assert stored == info
    assert repo.get_model(str(info.model_id)) == info
    assert stored.created_at.tzinfo is not None


def test_register_refuses_duplicates(repo: TwinRepository) -> None:
    info = repo.register_model(make_model())
    with pytest.raises(ConflictError, match=str(info.model_id)) as err:
        repo.register_model(info.model_copy(update={"model_version": "2"}))
    assert err.value.code == "already_exists"
    with pytest.raises(ConflictError, match="version '1'") as err:
        repo.register_model(make_model())
    assert err.value.code == "already_exists"


def test_missing_rows_raise_not_found_naming_the_id(repo: TwinRepository) -> None:
    missing = uuid.uuid4()
    calls = {
        repo.get_model: "model_id",
        repo.get_simulation: "simulation_id",
        repo.get_validation: "tracking_id",
        repo.mark_running: "simulation_id",
    }
    for call, field in calls.items():
        with pytest.raises(NotFoundError, match=str(missing)) as info:
            call(missing)
        assert isinstance(info.value, LookupError)
        assert (info.value.code, info.value.field) == ("not_found", field)
    with pytest.raises(InvalidInputError, match="model_id must be a UUID") as bad:
        repo.get_model("not-a-uuid")
    assert bad.value.field == "model_id"


def test_active_model_swap(repo: TwinRepository) -> None:
    v1 = repo.register_model(make_model(version="1"), activate=True)
    other = repo.register_model(make_model(twin_type=TwinType.PATIENT), activate=True)
    v2 = repo.register_model(make_model(version="2"), activate=True)
    assert repo.get_active_model("brandx", "hcp").model_id == v2.model_id
    assert repo.get_model(v1.model_id).is_active is False
    assert repo.set_active_model(v1.model_id).is_active is True
    assert repo.get_model(v2.model_id).is_active is False
    assert repo.get_active_model("brandx", TwinType.HCP).model_id == v1.model_id
    assert repo.get_active_model("brandx", TwinType.PATIENT).model_id == other.model_id
    assert repo.list_models(brand="brandx", twin_type="hcp", active_only=True).total == 1
    repo.deactivate_model(v1.model_id)
    with pytest.raises(NotFoundError, match=r"brand 'brandx', twin type hcp") as err:
        repo.get_active_model("brandx", "hcp")
    assert (err.value.code, err.value.field) == ("no_active_model", "brand")
    assert str(v1.model_id) in str(err.value)  # names the versions that could be activated


def test_no_active_model_for_unknown_brand(repo: TwinRepository) -> None:
    with pytest.raises(NotFoundError, match="fit and register a model") as err:
        repo.get_active_model("nobrand", "territory")
    assert err.value.code == "no_active_model"


def test_unfit_model_cannot_be_active(repo: TwinRepository) -> None:
    unfit = make_model(fit_for_use=False, diagnostics_reason="r_hat 1.2 > 1.01")
    with pytest.raises(ConflictError, match="r_hat") as err:
        repo.register_model(unfit, activate=True)
    assert err.value.code == "invalid_state"
    repo.register_model(unfit)
    with pytest.raises(ConflictError, match="not fit for use") as err:
        repo.set_active_model(unfit.model_id)
    assert err.value.code == "invalid_state"


def test_concurrent_swaps_leave_exactly_one_active(repo: TwinRepository) -> None:
    models = [repo.register_model(make_model(version=str(i))) for i in range(3)]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def swap(worker: int) -> None:
        try:
            start.wait()
            for i in range(10):
                repo.set_active_model(models[(worker + i) % 3].model_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=swap, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert repo.list_models(active_only=True).total == 1


def test_list_models_filters_and_pages(repo: TwinRepository) -> None:
    for i in range(5):
        repo.register_model(make_model(version=str(i)))
    repo.register_model(make_model(brand="brandy"))
    page = repo.list_models(brand="brandx", limit=2, offset=0)
    rest = repo.list_models(brand="brandx", limit=10, offset=2)
    assert page.total == rest.total == 5
    assert len(page.items) == 2 and len(rest.items) == 3
    assert {m.model_id for m in page.items}.isdisjoint({m.model_id for m in rest.items})
    with pytest.raises(ValueError, match="limit"):
        repo.list_models(limit=0)


def test_update_fidelity_score(repo: TwinRepository) -> None:
    model = repo.register_model(make_model())
    assert repo.update_fidelity_score(model.model_id, 0.65).fidelity_score == 0.65
    with pytest.raises(ValueError, match="fidelity_score"):
        repo.update_fidelity_score(model.model_id, 1.5)


# -- simulations -----------------------------------------------------------------------------


def test_simulation_life_cycle(repo: TwinRepository) -> None:
    model = repo.register_model(make_model(), activate=True)
    sim = make_sim(model, experiment_design_id="design-42")
    pending = repo.create_simulation(sim)
    assert pending.simulation_status is SimulationStatus.PENDING
    assert pending == sim
    running = repo.mark_running(sim.simulation_id)
    assert running.simulation_status is SimulationStatus.RUNNING
    done = repo.complete_simulation(finished(sim, execution_time_ms=1234))
    assert done.simulation_status is SimulationStatus.COMPLETED
    assert done.completed_at is not None and done.execution_time_ms == 1234
    assert done.ate_draws == [0.03, 0.04, 0.05]
    assert done.segment_effects[0].segment == "onc"
    assert repo.get_simulation(sim.simulation_id) == done
    light = repo.get_simulation(sim.simulation_id, include_draws=False)
    assert light.ate_draws is None and light.twin_unit_ids is None
    assert light.model_dump(exclude={"ate_draws", "twin_unit_ids"}) == done.model_dump(
        exclude={"ate_draws", "twin_unit_ids"}
    )
    listed = repo.list_simulations().items
    assert [s.simulation_id for s in listed] == [sim.simulation_id]
    assert listed[0].ate_draws is None and listed[0].simulated_ate == done.simulated_ate


def test_invalid_transitions_are_refused(repo: TwinRepository) -> None:
    model = repo.register_model(make_model())
    sim = make_sim(model)
    repo.create_simulation(sim)
    with pytest.raises(ConflictError) as exists:
        repo.create_simulation(sim)
    assert exists.value.code == "already_exists"
    with pytest.raises(ConflictError, match="not running") as err:
        repo.complete_simulation(finished(sim))
    assert err.value.code == "invalid_state"
    repo.mark_running(sim.simulation_id)
    with pytest.raises(ConflictError, match="not pending"):
        repo.mark_running(sim.simulation_id)
    wrong = finished(sim).model_copy(update={"brand": "brandy"})
    with pytest.raises(ConflictError, match="brand"):
        repo.complete_simulation(wrong)
    repo.complete_simulation(finished(sim))
    with pytest.raises(ConflictError, match="already completed"):
        repo.fail_simulation(sim.simulation_id, "late error")
    with pytest.raises(ConflictError, match="must be pending"):
        repo.create_simulation(
            finished(make_sim(model)).model_copy(
                update={"simulation_status": SimulationStatus.COMPLETED}
            )
        )
    with pytest.raises(NotFoundError, match="model"):
        repo.create_simulation(make_sim(model, model_id=uuid.uuid4()))


def test_fail_simulation_stores_the_error_and_the_time(repo: TwinRepository) -> None:
    model = repo.register_model(make_model())
    sim = make_sim(model)
    repo.create_simulation(sim)
    repo.mark_running(sim.simulation_id)
    repo.fail_simulation(sim.simulation_id, RuntimeError("sampler exploded"), execution_time_ms=12)
    failed = repo.get_simulation(sim.simulation_id)
    assert failed.simulation_status is SimulationStatus.FAILED
    assert failed.error_message == "RuntimeError: sampler exploded"
    assert failed.execution_time_ms == 12
    assert failed.simulated_ate is None and failed.recommendation is None
    assert repo.list_simulations(status="completed").total == 0


def test_error_inside_the_completing_write_leaves_no_completed_row(repo: TwinRepository) -> None:
    """The completing UPDATE runs, then the transaction dies: nothing of it survives."""
    model = repo.register_model(make_model())
    sim = make_sim(model)

    def explode(mapper: Any, connection: Any, target: TwinSimulation) -> None:
        if target.simulation_status is SimulationStatus.COMPLETED:
            raise OSError("disk full")

    event.listen(TwinSimulation, "after_update", explode)
    try:
        with pytest.raises(OSError, match="disk full"):
            run_to_completion(repo, sim)
    finally:
        event.remove(TwinSimulation, "after_update", explode)
    row = repo.get_simulation(sim.simulation_id)
    assert row.simulation_status is SimulationStatus.RUNNING
    assert row.completed_at is None and row.error_message is None
    assert row.simulated_ate is None and row.ate_draws is None and row.recommendation is None


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys, uuid
    from sqlalchemy import event
    from bayestwin.schemas import SimulationResult
    from bayestwin.store.repository import TwinRepository
    from bayestwin.store.tables import TwinSimulation
    from bayestwin.vocabulary import SimulationStatus

    url, model_id, simulation_id = sys.argv[1:4]
    repo = TwinRepository(url, ensure_schema=False)
    sim = SimulationResult(
        simulation_id=uuid.UUID(simulation_id), model_id=uuid.UUID(model_id),
        brand="brandx", twin_type="hcp", intervention_type="email_campaign", twin_count=10,
    )

    @event.listens_for(TwinSimulation, "after_update")
    def die(mapper, connection, target):
        if target.simulation_status is SimulationStatus.COMPLETED:
            os._exit(17)  # the process dies with the completing UPDATE sent, not committed

    repo.create_simulation(sim)
    repo.mark_running(sim.simulation_id)
    repo.complete_simulation(sim.model_copy(update={
        "simulated_ate": 0.1, "simulated_ci_lower": 0.0, "simulated_ci_upper": 0.2,
    }))
    """
)


def test_process_crash_mid_completion_leaves_no_half_written_row(
    repo: TwinRepository, engine: Engine
) -> None:
    model = repo.register_model(make_model())
    simulation_id = uuid.uuid4()
    url = engine.url.render_as_string(hide_password=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAYESTWIN_")}
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, url, str(model.model_id), str(simulation_id)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 17, proc.stderr
    row = repo.get_simulation(simulation_id)
    assert row.simulation_status is SimulationStatus.RUNNING
    assert row.simulated_ate is None and row.completed_at is None
    # Start-up clean-up closes rows abandoned by dead processes.
    assert repo.fail_stale_simulations(timedelta(0)) == [simulation_id]
    row = repo.get_simulation(simulation_id)
    assert row.simulation_status is SimulationStatus.FAILED
    assert row.error_message is not None and row.error_message.startswith("abandoned")


def test_database_refuses_inconsistent_rows(repo: TwinRepository, engine: Engine) -> None:
    model = repo.register_model(make_model())
    sim = repo.create_simulation(make_sim(model))
    table = cast(sa.Table, TwinSimulation.__table__)
    key = table.c.simulation_id == sim.simulation_id
    bad_updates: list[dict[str, Any]] = [
        {"simulation_status": SimulationStatus.COMPLETED},  # completed without a result
        {"simulation_status": SimulationStatus.FAILED},  # failed without an error
        {"simulated_ci_lower": 1.0, "simulated_ci_upper": 0.0},
        {"twin_count": 0},
        {"execution_time_ms": -1},
    ]
    for values in bad_updates:
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.update(table).where(key).values(**values))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.update(table).where(key).values(model_id=uuid.uuid4()))
    assert repo.get_simulation(sim.simulation_id) == sim


def test_concurrent_simulations_lose_nothing(repo: TwinRepository, engine: Engine) -> None:
    model = repo.register_model(make_model(), activate=True)
    n_threads, per_thread = 8, 10
    start = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                sim = make_sim(model, random_seed=w * 100 + i)
                if i % 5 == 4:
                    run_to_failure(repo, sim, f"worker {w} sim {i}")
                else:
                    run_to_completion(repo, sim, ate=w + i / 100)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = n_threads * per_thread
    with engine.connect() as conn:
        counts = dict(
            conn.execute(
                sa.select(TwinSimulation.simulation_status, sa.func.count()).group_by(
                    TwinSimulation.simulation_status
                )
            ).all()
        )
    assert counts == {
        SimulationStatus.COMPLETED: total * 4 // 5,
        SimulationStatus.FAILED: total // 5,
    }
    completed = repo.list_simulations(status="completed", limit=1000).items
    ates = [s.simulated_ate if s.simulated_ate is not None else math.nan for s in completed]
    assert sorted(ates) == sorted(
        w + i / 100 for w in range(n_threads) for i in range(per_thread) if i % 5 != 4
    )


def test_list_simulations_filters_and_pagination(repo: TwinRepository) -> None:
    hcp = repo.register_model(make_model(), activate=True)
    patient = repo.register_model(make_model(twin_type=TwinType.PATIENT), activate=True)
    other = repo.register_model(make_model(brand="brandy"), activate=True)
    base = datetime(2025, 1, 1, tzinfo=UTC)
    ids = []
    for i in range(7):
        sim = make_sim(hcp, created_at=base + timedelta(minutes=i))
        ids.append(sim.simulation_id)
        run_to_completion(repo, sim)
    repo.create_simulation(make_sim(hcp, intervention_type="call_frequency"))
    repo.create_simulation(make_sim(patient))
    repo.create_simulation(make_sim(other))

    assert repo.list_simulations().total == 10
    assert repo.list_simulations(brand="brandx").total == 9
    assert repo.list_simulations(twin_type="patient").total == 1
    assert repo.list_simulations(status=SimulationStatus.PENDING).total == 3
    assert repo.list_simulations(intervention_type="call_frequency").total == 1
    assert repo.list_simulations(model_id=hcp.model_id).total == 8
    f = {"brand": "brandx", "twin_type": TwinType.HCP, "status": "completed"}
    pages = [repo.list_simulations(**f, limit=3, offset=o) for o in (0, 3, 6)]
    assert [p.total for p in pages] == [7, 7, 7]
    assert [len(p.items) for p in pages] == [3, 3, 1]
    seen = [s.simulation_id for p in pages for s in p.items]
    assert seen == ids[::-1]  # newest first, nothing twice, nothing lost
    with pytest.raises(ValueError, match="'bogus' is not a valid SimulationStatus"):
        repo.list_simulations(status="bogus")


def test_timestamps_come_back_as_the_same_instant_in_utc(repo: TwinRepository) -> None:
    model = repo.register_model(make_model())
    cet = timezone(timedelta(hours=1))
    created = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=cet)
    sim = repo.create_simulation(make_sim(model, created_at=created))
    assert sim.created_at == created
    assert sim.created_at.utcoffset() == timedelta(0)


# -- fidelity ------------------------------------------------------------------------------


def _validation(sim: SimulationResult, **kw: Any) -> FidelityResult:
    data: dict[str, Any] = {
        "simulation_id": sim.simulation_id,
        "actual_experiment_id": "exp-1",
        "simulated_ate": sim.simulated_ate,
        "actual_ate": 0.045,
        "actual_se": 0.01,
        "prediction_error": 0.11,
        "fidelity_grade": FidelityGrade.GOOD,
        "standardized_error": -0.4,
        "pit": 0.35,
        "in_predictive_interval": {"0.5": True, "0.8": True, "0.95": True},
        "predictive_intervals": {"0.95": (0.01, 0.07)},
        "validated_at": datetime.now(UTC),
    }
    data.update(kw)
    return FidelityResult(**data)


def test_record_validation_updates_the_model_score(repo: TwinRepository) -> None:
    model = repo.register_model(make_model())
    sim = run_to_completion(repo, make_sim(model))
    stored = repo.record_validation(_validation(sim, model_fidelity_score=0.75))
    assert stored.predictive_intervals == {"0.95": (0.01, 0.07)}
    assert repo.get_validation(stored.tracking_id) == stored
    assert repo.get_model(model.model_id).fidelity_score == 0.75
    # A simulation is validated once: a second validation replaces the first or is refused.
    second = repo.record_validation(_validation(sim), replace=True)
    assert repo.get_model(model.model_id).fidelity_score == 0.75  # no score: keeps 0.75
    assert [v.tracking_id for v in repo.list_validations(sim.simulation_id)] == [second.tracking_id]
    with pytest.raises(ConflictError) as err:
        repo.record_validation(_validation(sim))
    assert err.value.code == "already_validated"
    other = run_to_completion(repo, make_sim(model))
    with pytest.raises(ConflictError) as err:
        repo.record_validation(second.model_copy(update={"simulation_id": other.simulation_id}))
    assert err.value.code == "already_exists"


def test_validation_needs_a_completed_simulation(repo: TwinRepository) -> None:
    model = repo.register_model(make_model())
    pending = repo.create_simulation(make_sim(model))
    with pytest.raises(ConflictError, match="pending"):
        repo.record_validation(_validation(pending, simulated_ate=0.1))
    with pytest.raises(NotFoundError, match="simulation"):
        repo.record_validation(_validation(pending, simulation_id=uuid.uuid4(), simulated_ate=0.1))


def test_fidelity_history_window(repo: TwinRepository) -> None:
    model = repo.register_model(make_model())
    other = repo.register_model(make_model(version="2"))
    now = datetime.now(UTC)
    recs = []
    for days in (200, 60, 5):
        sim = run_to_completion(repo, make_sim(model))
        recs.append(
            repo.record_validation(_validation(sim, validated_at=now - timedelta(days=days)))
        )
    repo.record_validation(_validation(run_to_completion(repo, make_sim(other))))
    history = repo.fidelity_history(model.model_id)
    assert [r.tracking_id for r in history] == [r.tracking_id for r in recs]  # oldest first
    recent = repo.fidelity_history(model.model_id, window_days=90)
    assert [r.tracking_id for r in recent] == [r.tracking_id for r in recs[1:]]
    since = repo.fidelity_history(model.model_id, since=now - timedelta(days=10))
    assert [r.tracking_id for r in since] == [recs[2].tracking_id]
    with pytest.raises(NotFoundError):
        repo.fidelity_history(uuid.uuid4())


# -- memory --------------------------------------------------------------------------------


def test_find_similar_simulations_nearest_first(repo: TwinRepository) -> None:
    model = repo.register_model(make_model(), activate=True)
    patient = repo.register_model(make_model(twin_type=TwinType.PATIENT), activate=True)

    def cfg(intensity: float, specialties: list[str]) -> dict[str, Any]:
        return {"intensity": intensity, "target": {"specialty": specialties}}

    same = run_to_completion(repo, make_sim(model, intervention_config=cfg(1.0, ["onc", "card"])))
    near = run_to_completion(repo, make_sim(model, intervention_config=cfg(1.5, ["onc", "card"])))
    far = run_to_completion(repo, make_sim(model, intervention_config=cfg(4.0, ["derm"])))
    run_to_completion(repo, make_sim(model, intervention_type="call_frequency"))
    run_to_completion(repo, make_sim(patient))
    repo.create_simulation(make_sim(model))  # not completed: not a memory

    request = SimulateInterventionRequest(
        intervention_type="email_campaign",
        intervention_config=InterventionConfig(
            intensity=1.0, target={"specialty": ["card", "onc"]}
        ),
        target_population=TwinType.HCP,
        brand="brandx",
    )
    found = repo.find_similar_simulations(request)
    assert [f.simulation.simulation_id for f in found] == [
        same.simulation_id,
        near.simulation_id,
        far.simulation_id,
    ]
    assert found[0].distance == 0.0
    assert found[1].distance == pytest.approx(math.log1p(1.5) - math.log1p(1.0))
    assert found[2].distance == pytest.approx(math.log1p(4.0) - math.log1p(1.0) + 1.0)
    assert len(repo.find_similar_simulations(request, max_distance=0.5)) == 2
    # A stored simulation is not its own neighbour.
    assert same.simulation_id not in {
        f.simulation.simulation_id for f in repo.find_similar_simulations(same)
    }


def test_result_cache_by_model_request_and_seed(repo: TwinRepository) -> None:
    model = repo.register_model(make_model(), activate=True)
    v2 = repo.register_model(make_model(version="2"))
    sim = make_sim(model, random_seed=11)
    done = run_to_completion(repo, sim)
    request = SimulateInterventionRequest(
        intervention_type="email_campaign",
        intervention_config={"intensity": 1.0, "target": {"specialty": ["card", "onc"]}},
        target_population="hcp",
        brand="brandx",
        twin_count=1000,
        random_seed=11,
    )
    key = request_hash(request)
    assert key == request_hash(sim)
    assert repo.cached_result(model.model_id, key, 11) == done
    assert repo.cached_result(model.model_id, key, 12) is None  # other seed
    assert repo.cached_result(model.model_id, key, None) is None  # no seed: fresh draws
    assert repo.cached_result(v2.model_id, key, 11) is None  # other model version
    other = request.model_copy(update={"twin_count": 2000})
    assert repo.cached_result(model.model_id, request_hash(other), 11) is None
    run_to_failure(repo, make_sim(model, random_seed=12), "no")
    assert repo.cached_result(model.model_id, key, 12) is None  # failures are not cached


# -- pure functions ------------------------------------------------------------------------


def test_request_hash_is_stable_and_canonical() -> None:
    def req(**kw: Any) -> SimulateInterventionRequest:
        data: dict[str, Any] = {
            "intervention_type": "email_campaign",
            "intervention_config": {
                "intensity": 2,
                "target": {"specialty": ["onc", "card"], "decile": {"min": 3}},
            },
            "target_population": "hcp",
            "brand": "brandx",
            "twin_count": 10_000,
            "random_seed": 1,
        }
        data.update(kw)
        return SimulateInterventionRequest.model_validate(data)

    base = request_hash(req())
    # Pinned: a change of this value invalidates every stored cache entry.
    assert base == "7818d886a888bcddee47b1f412d06f61a1f0ebc750670780442c234ef9272950"
    reordered = req(
        intervention_config={
            "intervention_type": "email_campaign",
            "target": {"decile": {"min": 3.0}, "specialty": ["card", "onc", "card"]},
            "intensity": 2.0,
        },
        random_seed=99,
    )
    assert request_hash(reordered) == base
    assert request_hash(req(twin_count=500)) != base
    assert request_hash(req(confidence_level=0.9)) != base
    assert request_hash(req(brand="brandy")) != base
    assert request_hash(req(intervention_config={"intensity": 3})) != base
    assert request_hash(req(), extra={"min_effect_threshold": 0.05}) != base
    with pytest.raises(TypeError):
        request_hash("not a request")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="twin_count"):
        request_hash(req(twin_count=None))


def test_config_distance() -> None:
    a = InterventionConfig(intensity=1.0, target={"specialty": ["onc", "card"]})
    b = InterventionConfig(intensity=1.0, target={"specialty": ["card", "derm"]})
    assert config_distance(a, a) == 0.0
    assert config_distance(a, b) == pytest.approx(1 - 1 / 3) == config_distance(b, a)
    c = InterventionConfig(intensity=3.0)
    assert config_distance(a, c) == pytest.approx(math.log1p(3.0) - math.log1p(1.0) + 1.0)
    r1 = InterventionConfig(target={"decile": NumericRange(min=2, max=8)})
    r2 = InterventionConfig(target={"decile": NumericRange(min=4, max=8)})
    r3 = InterventionConfig(target={"decile": NumericRange(min=4)})
    assert config_distance(r1, r2) == pytest.approx(0.5 * 0.5)
    assert config_distance(r2, r3) == pytest.approx(0.5)
    assert config_distance(r1, a) == 2.0  # each column filtered on one side only


# -- engine and defaults -------------------------------------------------------------------


def test_default_database_is_a_sqlite_file_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "nested" / "data"
    settings = load_settings(environ={}, data_dir=data_dir)
    assert database_url(settings) == f"sqlite:///{data_dir / 'bayestwin.db'}"
    env = {"BAYESTWIN_DATABASE_URL": "postgresql://u@h/db"}
    assert database_url(load_settings(environ=env)) == "postgresql://u@h/db"
    assert make_engine("postgresql://u@h/db").url.drivername == "postgresql+psycopg"

    for name in [k for k in os.environ if k.startswith("BAYESTWIN_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BAYESTWIN_DATA_DIR", str(data_dir))
    with TwinRepository() as repo:
        repo.register_model(make_model())
        assert repo.list_models().total == 1
    assert (data_dir / "bayestwin.db").exists()


def test_sqlite_engine_settings(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x' / 'twins.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()
    with pytest.raises(ValueError, match="unsupported database backend"):
        make_engine("mysql://u@h/db")


def test_in_memory_sqlite_is_shared_between_threads() -> None:
    with TwinRepository("sqlite://") as repo:
        model = make_model()
        t = threading.Thread(target=repo.register_model, args=(model,))
        t.start()
        t.join()
        assert repo.get_model(model.model_id) == model


def test_how_a_result_was_served_is_not_stored(repo: TwinRepository) -> None:
    model = repo.register_model(make_model())
    past = run_to_completion(repo, make_sim(model))
    sim = make_sim(model)
    repo.create_simulation(sim)
    repo.mark_running(sim.simulation_id)
    served = finished(sim).model_copy(
        update={
            "from_cache": True,
            "similar_simulations": repo.find_similar_simulations(sim),
        }
    )
    assert served.similar_simulations[0].simulation.simulation_id == past.simulation_id
    done = repo.complete_simulation(served)
    assert done.from_cache is False and done.similar_simulations == []
    assert repo.get_simulation(sim.simulation_id) == done
