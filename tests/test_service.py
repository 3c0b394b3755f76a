"""TwinService: register, activate, simulate life cycle, cache, timeout, validation, registry.

Most tests use models whose "posterior" is the synthetic ground truth (nothing is
sampled); one tiny real fit covers the fit -> register -> simulate path. Every test
runs on SQLite, and the life-cycle tests also on PostgreSQL when
``BAYESTWIN_TEST_POSTGRES_URL`` is set.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import BRAND, FAILED, make_settings, truth_model
from pydantic import ValidationError

from bayestwin.errors import (
    ConflictError,
    InvalidInputError,
    NotFitError,
    NotFoundError,
    UnavailableError,
)
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.model.spec import default_spec
from bayestwin.schemas import ExperimentOutcome
from bayestwin.service import TwinService
from bayestwin.service.experiments import (
    JsonExperimentResultStore,
    MappingExperimentResultSource,
)
from bayestwin.service.fitting import history_spec, infer_features
from bayestwin.service.jobs import JobRunner
from bayestwin.store.db import temporary_database
from bayestwin.store.repository import TwinRepository
from bayestwin.synthetic import SyntheticTwinData, generate_synthetic_twin_data
from bayestwin.vocabulary import FidelityGrade, SimulationStatus, TwinType

POSTGRES_ENV = "BAYESTWIN_TEST_POSTGRES_URL"


# -- helpers ------------------------------------------------------------------------------


def request(kind: str = "email_campaign", **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "intervention_type": kind,
        "intervention_config": {"intensity": 1.0},
        "target_population": "hcp",
        "brand": BRAND,
        "twin_count": 2000,
        "random_seed": 7,
    }
    body.update(kw)
    return body


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hcp() -> tuple[SyntheticTwinData, FittedTwinModel]:
    return truth_model("hcp")


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], scope="module"
)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'twins.db'}"
        return
    with temporary_database(os.environ[POSTGRES_ENV]) as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[TwinService]:
    settings = make_settings(tmp_path, database_url=database_url)
    repo = TwinRepository(database_url)
    svc = TwinService(settings, repository=repo, registry=None)
    # Each test gets a brand of its own, so one database serves the whole module.
    yield svc
    svc.close()
    repo.close()


_counter = iter(range(10_000))


@pytest.fixture
def brand() -> str:
    return f"{BRAND}{next(_counter)}"


def registered(
    service: TwinService, brand: str, seed: int = 0, **kw: Any
) -> tuple[SyntheticTwinData, FittedTwinModel]:
    syn, model = truth_model("hcp", brand, seed=seed, **kw)
    service.register(model)
    return syn, model


# -- registration and activation ---------------------------------------------------------


def test_register_saves_directory_row_and_activates(service: TwinService, brand: str) -> None:
    _, model = truth_model("hcp", brand)
    info = service.register(model)
    assert info.is_active and info.fit_for_use
    assert info.model_name == f"bayestwin-{brand.lower()}-hcp"
    assert info.model_version == "1"
    assert (Path(str(info.artifact_uri)) / "metadata.json").exists()
    assert Path(str(info.artifact_uri)).parent == service.model_store_dir
    assert info.training_config["intervention_types"] == list(model.posterior.intervention_types)
    assert service.active_model(brand, "hcp").model_id == info.model_id

    second = service.register(truth_model("hcp", brand, seed=1)[1])
    assert second.model_version == "2" and second.is_active
    assert not service.get_model(info.model_id).is_active
    service.activate(info.model_id)
    assert service.active_model(brand, TwinType.HCP).model_id == info.model_id


def test_failed_diagnostics_refused_unless_overridden(service: TwinService, brand: str) -> None:
    _, bad = truth_model("hcp", brand, diagnostics=FAILED)
    with pytest.raises(NotFitError, match="r_hat"):
        service.register(bad)
    assert service.list_models(brand=brand).total == 0
    assert not list(service.model_store_dir.glob("*")) if service.model_store_dir.exists() else True

    parked = service.register(bad, activate=False)
    assert not parked.is_active and not parked.fit_for_use
    with pytest.raises(NotFitError, match="override_diagnostics") as refused:
        service.activate(parked.model_id)
    assert refused.value.code == "model_not_usable"
    with pytest.raises(NotFoundError):
        service.simulate(request(brand=brand))

    forced = service.register(bad, override_diagnostics=True)
    assert forced.is_active and forced.fit_for_use
    assert forced.diagnostics_reason is not None and forced.diagnostics_reason.startswith(
        "overridden"
    )
    # a fresh service loads the model from disk; the row's override lets it serve
    other = TwinService(service.settings, repository=service.repository, registry=None)
    try:
        loaded = other.load_model(forced.model_id)
        assert loaded.fit_for_use and not loaded.diagnostics.passed
        assert other.simulate(request(brand=brand)).simulation_status is SimulationStatus.COMPLETED
    finally:
        other.close()


def test_load_model_from_disk_equals_registered(
    service: TwinService, brand: str, tmp_path: Path
) -> None:
    _, model = truth_model("hcp", brand)
    info = service.register(model)
    other = TwinService(service.settings, repository=service.repository, registry=None)
    try:
        loaded = other.load_model(info.model_id)
        np.testing.assert_array_equal(loaded.posterior.tau, model.posterior.tau)
        assert other.load_model(info.model_id) is loaded  # cached in memory
        Path(str(info.artifact_uri), "metadata.json").unlink()
        third = TwinService(service.settings, repository=service.repository, registry=None)
        with pytest.raises(NotFoundError, match="missing"):
            third.load_model(info.model_id)
        third.close()
    finally:
        other.close()


# -- simulation ----------------------------------------------------------------------------


def test_simulate_life_cycle_and_procedural_cache(service: TwinService, brand: str) -> None:
    _, model = registered(service, brand)
    result = service.simulate(request(brand=brand))
    assert result.simulation_status is SimulationStatus.COMPLETED
    assert not result.from_cache
    assert result.model_id == service.active_model(brand, "hcp").model_id
    assert result.simulated_ate is not None and result.recommendation is not None
    assert result.ate_draws is not None and len(result.ate_draws) == model.posterior.n_draws
    stored = service.get_simulation(result.simulation_id, include_draws=True)
    assert stored.simulated_ate == result.simulated_ate
    assert stored.completed_at is not None and stored.execution_time_ms is not None

    again = service.simulate(request(brand=brand))
    assert again.simulation_id == result.simulation_id  # cache hit, no new row
    assert again.from_cache and again.simulated_ate == result.simulated_ate
    assert again.ate_draws == result.ate_draws
    assert service.list_simulations(brand=brand).total == 1

    fresh = service.simulate(request(brand=brand, random_seed=8))
    assert fresh.simulation_id != result.simulation_id and not fresh.from_cache
    unseeded = service.simulate(request(brand=brand, random_seed=None))
    assert unseeded.random_seed is not None  # the engine's seed is recorded
    assert service.list_simulations(brand=brand).total == 3
    similar = service.similar_simulations(request(brand=brand))
    assert similar and similar[0].distance == 0.0


def test_results_list_similar_simulations_with_their_real_outcomes(
    service: TwinService, brand: str
) -> None:
    registered(service, brand)
    first = service.simulate(request(brand=brand, random_seed=1))
    assert first.similar_simulations == []
    outcome = {"actual_ate": 0.05, "actual_se": 0.01, "n_treatment": 500, "n_control": 500}
    service.validate(first.simulation_id, "exp-first", outcome=outcome)

    near = service.simulate(request(brand=brand, random_seed=2))
    (item,) = near.similar_simulations
    assert item.simulation.simulation_id == first.simulation_id and item.distance == 0.0
    assert item.validation is not None and item.validation.actual_ate == 0.05
    assert item.simulation.ate_draws is None  # listed without the heavy fields

    far = service.simulate(
        request(brand=brand, random_seed=3, intervention_config={"intensity": 3.0})
    )
    listed = [s.simulation.simulation_id for s in far.similar_simulations]
    assert listed == [near.simulation_id, first.simulation_id]  # equal distance: newest first
    assert far.similar_simulations[0].validation is None  # not validated
    # a cache hit lists the others, never itself
    cached = service.simulate(request(brand=brand, random_seed=2))
    assert cached.from_cache and cached.simulation_id == near.simulation_id
    assert {s.simulation.simulation_id for s in cached.similar_simulations} == {
        first.simulation_id,
        far.simulation_id,
    }
    # another intervention type is another question
    other = service.simulate(request("call_frequency", brand=brand, random_seed=1))
    assert other.similar_simulations == []


def test_default_twin_count_and_thresholds_come_from_the_settings(
    database_url: str, tmp_path: Path, brand: str
) -> None:
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        default_twin_count=1234,
        min_effect_threshold=0.2,
        min_fidelity_score=0.6,
    )
    with TwinService(settings, registry=None) as svc:
        registered(svc, brand)
        body = request(brand=brand)
        del body["twin_count"]
        result = svc.simulate(body)
        assert result.twin_count == 1234
        assert result.min_effect_threshold == 0.2
        assert svc.tracker.thresholds.min_fidelity_score == 0.6
        # the count written out asks the same question: answered from the cache
        assert svc.simulate(request(brand=brand, twin_count=1234)).from_cache


def test_no_active_model_is_a_clear_error_and_stores_nothing(service: TwinService) -> None:
    with pytest.raises(NotFoundError, match="fit and register a model") as info:
        service.simulate(request(brand="NoSuchBrand"))
    assert info.value.code == "no_active_model"
    assert service.list_simulations(brand="NoSuchBrand").total == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"twin_count": 60_000}, "twin_count"),
        ({"intervention_type": "telepathy"}, "intervention_type"),
        ({"intervention_config": {"target": {"specialty": ["x"]}}}, "intervention_config.target"),
        (
            {"intervention_config": {"target": {"segment": ["nowhere"]}}},
            "intervention_config.target",
        ),
    ],
)
def test_bad_requests_name_the_field_before_any_row(
    service: TwinService, brand: str, change: dict[str, Any], field: str
) -> None:
    registered(service, brand)
    with pytest.raises(InvalidInputError) as info:
        service.simulate(request(brand=brand, **change))
    assert info.value.field == field
    assert service.list_simulations(brand=brand).total == 0


def test_schema_errors_are_pydantic_errors(service: TwinService) -> None:
    with pytest.raises(ValidationError, match="target_population"):
        service.simulate(request(target_population="dog"))
    with pytest.raises(ValidationError, match="intensity"):
        service.simulate(request(intervention_config={"intensity": -1}))


def test_engine_failure_marks_the_row_failed(
    service: TwinService, brand: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered(service, brand)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("numerical trouble")

    monkeypatch.setattr(service.engine, "simulate", boom)
    with pytest.raises(RuntimeError, match="numerical trouble"):
        service.simulate(request(brand=brand))
    (row,) = service.list_simulations(brand=brand).items
    assert row.simulation_status is SimulationStatus.FAILED
    assert row.error_message is not None and "numerical trouble" in row.error_message


def _slow_engine(
    service: TwinService, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> threading.Event:
    released = threading.Event()
    real = service.engine.simulate

    def slow(*args: Any, **kwargs: Any) -> Any:
        released.wait(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(service.engine, "simulate", slow)
    return released


def test_timeout_marks_failed(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, database_url=database_url, simulation_timeout_seconds=0.3)
    with TwinService(settings, registry=None) as svc:
        brand = f"{BRAND}-timeout-{time.time_ns()}"
        registered(svc, brand)
        release = _slow_engine(svc, monkeypatch, 5.0)
        with pytest.raises(UnavailableError, match="0.3 s") as info:
            svc.simulate(request(brand=brand))
        assert info.value.code == "timeout"
        (row,) = svc.list_simulations(brand=brand).items
        assert row.simulation_status is SimulationStatus.FAILED
        assert "timed out" in str(row.error_message)

        pending = svc.submit(request(brand=brand, random_seed=9))
        assert pending.simulation_status is SimulationStatus.PENDING
        deadline = time.monotonic() + 5
        while svc.get_simulation(pending.simulation_id).simulation_status in (
            SimulationStatus.PENDING,
            SimulationStatus.RUNNING,
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (
            svc.get_simulation(pending.simulation_id).simulation_status is SimulationStatus.FAILED
        )
        release.set()


def test_submit_runs_in_the_background(service: TwinService, brand: str) -> None:
    registered(service, brand)
    done = threading.Event()
    row = service.submit(request(brand=brand, random_seed=11), on_done=lambda _f: done.set())
    assert row.simulation_status is SimulationStatus.PENDING
    assert done.wait(30)
    final = service.get_simulation(row.simulation_id)
    assert final.simulation_status is SimulationStatus.COMPLETED
    # the same seeded request is now answered from the cache, completed at once
    cached = service.submit(request(brand=brand, random_seed=11))
    assert cached.simulation_id == row.simulation_id
    assert cached.simulation_status is SimulationStatus.COMPLETED


# -- validation ----------------------------------------------------------------------------


def test_validate_by_id_records_and_scores(service: TwinService, brand: str) -> None:
    syn, _ = registered(service, brand, n_units=600)
    population = syn.population(brand)
    grades = []
    for i, kind in enumerate(syn.truth.intervention_types[:3]):
        sim = service.simulate(request(kind, brand=brand))
        frame = syn.truth.run_experiment(population, kind, 1.0, n_per_arm=3000, random_seed=i)
        exp_id = f"{brand}/exp {i}"
        service.register_experiment_result(exp_id, service.outcome_from_frame(frame, "bernoulli"))
        result = service.validate(sim.simulation_id, exp_id)
        assert result.actual_experiment_id == exp_id
        assert result.fidelity_grade is not FidelityGrade.UNVALIDATED
        grades.append(result)
    assert grades[0].model_fidelity_score is None  # below min_validations_for_score
    assert grades[-1].model_fidelity_score is not None
    info = service.active_model(brand, "hcp")
    assert info.fidelity_score == pytest.approx(grades[-1].model_fidelity_score)
    fid = service.model_fidelity(info.model_id)
    assert fid.summary.n_validations == 3 and len(fid.history) == 3


def test_validate_with_outcome_or_frame(service: TwinService, brand: str) -> None:
    syn, _ = registered(service, brand)
    sim = service.simulate(request(brand=brand))
    outcome = {"actual_ate": 0.05, "actual_se": 0.01, "n_treatment": 500, "n_control": 500}
    by_dict = service.validate(sim.simulation_id, "exp-dict", outcome=outcome)
    assert by_dict.actual_ate == 0.05
    frame = syn.truth.run_experiment(syn.population(brand), "email_campaign", n_per_arm=400)
    by_frame = service.validate(sim.simulation_id, "exp-frame", outcome=frame, replace=True)
    assert by_frame.actual_se is not None and by_frame.actual_experiment_id == "exp-frame"


def test_validate_errors(service: TwinService, brand: str) -> None:
    registered(service, brand)
    sim = service.simulate(request(brand=brand))
    with pytest.raises(NotFoundError, match="register_experiment_result") as missing:
        service.validate(sim.simulation_id, "never-run")
    assert missing.value.code == "experiment_not_found"
    assert missing.value.field == "actual_experiment_id"
    with pytest.raises(InvalidInputError) as neither:
        service.validate(sim.simulation_id, None)
    assert neither.value.field == "actual_experiment_id"
    with pytest.raises(NotFoundError):
        service.validate("00000000-0000-0000-0000-000000000000", "x")
    failed = service.repository.create_simulation(
        sim.model_copy(
            update={
                "simulation_id": uuid.uuid4(),
                "simulation_status": SimulationStatus.PENDING,
                "simulated_ate": None,
                "simulated_ci_lower": None,
                "simulated_ci_upper": None,
            }
        )
    )
    with pytest.raises(ConflictError, match="pending"):
        service.validate(
            failed.simulation_id,
            "x",
            outcome={"actual_ate": 0.1, "actual_se": 0.1, "n_treatment": 5, "n_control": 5},
        )


def test_fidelity_warning_follows_a_poor_history(service: TwinService, brand: str) -> None:
    registered(service, brand)
    for i in range(3):
        sim = service.simulate(request(brand=brand, random_seed=100 + i))
        assert not sim.fidelity_warning
        far = float(sim.simulated_ate or 0.0) + 1.0  # nowhere near the prediction
        service.validate(
            sim.simulation_id,
            f"bad-{i}",
            outcome={"actual_ate": far, "actual_se": 0.001, "n_treatment": 900, "n_control": 900},
        )
    warned = service.simulate(request(brand=brand, random_seed=200))
    assert warned.fidelity_warning
    assert warned.fidelity_warning_reason is not None
    assert "min_fidelity_score" in warned.fidelity_warning_reason


# -- experiment result stores -------------------------------------------------------------


def test_json_experiment_store(tmp_path: Path) -> None:
    store = JsonExperimentResultStore(tmp_path / "experiments")
    outcome = ExperimentOutcome(actual_ate=0.1, actual_se=0.02, n_treatment=100, n_control=100)
    assert store.get_result("a/b c?") is None
    stored = store.register_result("a/b c?", outcome)
    assert stored.actual_experiment_id == "a/b c?"
    assert store.get_result("a/b c?") == stored
    assert store.get_result("a-b-c") is None  # same slug, other id: another file
    with pytest.raises(ConflictError, match="overwrite"):
        store.register_result("a/b c?", outcome)
    newer = outcome.model_copy(update={"actual_ate": 0.2})
    assert store.register_result("a/b c?", newer, overwrite=True).actual_ate == 0.2
    assert store.get_result("a/b c?").actual_ate == 0.2  # type: ignore[union-attr]
    assert not list((tmp_path / "experiments").glob(".*tmp"))
    with pytest.raises(InvalidInputError, match="actual_experiment_id"):
        store.register_result("x", outcome.model_copy(update={"actual_experiment_id": "y"}))


def test_pluggable_experiment_source(tmp_path: Path) -> None:
    source = MappingExperimentResultSource(
        {"e1": ExperimentOutcome(actual_ate=0.1, actual_se=0.02, n_treatment=9, n_control=9)}
    )
    settings = make_settings(tmp_path)
    with TwinService(settings, experiment_source=source, registry=None) as svc:
        assert svc.experiment_result("e1").actual_ate == 0.1
        with pytest.raises(NotFoundError):
            svc.experiment_result("e2")


# -- fitting from a history, naming, eligibility, the database ---------------------------


def test_history_spec_infers_the_features_and_the_family() -> None:
    syn, _ = truth_model("patient")
    spec = history_spec(syn.data, brand=BRAND, twin_type="patient")
    assert spec.family == "poisson"  # the patient twins' default
    assert list(spec.numeric_features) == list(syn.numeric_features)
    assert list(spec.categorical_features) == list(syn.categorical_features)
    given = history_spec(syn.data, brand=BRAND, twin_type="patient", numeric_features=["x"])
    assert given.numeric_features == ("x",) and given.categorical_features == ()
    with pytest.raises(InvalidInputError, match="draws"):
        history_spec(syn.data, brand=BRAND, twin_type="patient", sampler={"draws": 0})
    with pytest.raises(InvalidInputError) as bad:
        history_spec(syn.data, brand=BRAND, twin_type="patient", family="cauchy")
    assert bad.value.field == "family"


def test_infer_features_skips_reserved_and_empty_columns() -> None:
    history = pd.DataFrame(
        {
            "unit_id": ["a", "b"],
            "segment": ["s", "s"],
            "outcome": [0, 1],
            "age": [30.0, 40.0],
            "region": ["n", "s"],
            "other_type_only": [np.nan, np.nan],
        }
    )
    spec = default_spec("hcp", BRAND, family="bernoulli", numeric_features=())
    assert infer_features(history, spec) == (["age"], ["region"])


def test_fit_all_fits_and_registers_each_brand_and_twin_type(
    service: TwinService, brand: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    syn_h, model_h = truth_model("hcp", brand)
    syn_p, model_p = truth_model("patient", brand)
    history = pd.concat([syn_h.data, syn_p.data], ignore_index=True)
    seen: dict[TwinType, Any] = {}

    def fake_fit_all(part: pd.DataFrame, *, base: Any, **kwargs: Any) -> dict[Any, Any]:
        assert set(part["twin_type"]) == {base.twin_type.value}
        seen[base.twin_type] = base
        fitted = model_h if base.twin_type is TwinType.HCP else model_p
        return {(brand, base.twin_type): fitted}

    monkeypatch.setattr("bayestwin.service.fitting_all.fit_each", fake_fit_all)
    infos = service.fit_all(history)
    assert [(i.brand, i.twin_type) for i in infos] == [
        (brand, TwinType.HCP),
        (brand, TwinType.PATIENT),
    ]
    assert all(i.is_active for i in infos)
    assert seen[TwinType.HCP].family == "bernoulli" and seen[TwinType.PATIENT].family == "poisson"
    assert list(seen[TwinType.HCP].numeric_features) == list(syn_h.numeric_features)
    assert list(seen[TwinType.PATIENT].numeric_features) == list(syn_p.numeric_features)


def test_model_names_follow_the_registry_rule_without_mlflow(service: TwinService) -> None:
    from bayestwin.store.mlflow.registry import registered_model_name

    for brand in ("Kisqali", "Brand A/B", "Ωmega"):
        expected = registered_model_name(brand, TwinType.HCP)
        assert service.default_model_name(brand, "hcp") == expected


def test_eligible_count(service: TwinService, brand: str) -> None:
    _, model = registered(service, brand)
    population = model.population
    assert service.eligible_count(brand, "hcp", None) == len(population)
    segment = str(population["segment"].iloc[0])
    expected = int((population["segment"] == segment).sum())
    assert service.eligible_count(brand, "hcp", {"segment": [segment]}) == expected
    with pytest.raises(InvalidInputError) as info:
        service.eligible_count(brand, "hcp", {"nowhere": ["x"]})
    assert info.value.field == "intervention_config.target"
    with pytest.raises(NotFoundError):
        service.eligible_count("NoSuchBrand", "hcp", None)


def test_upgrade_database_reports_each_migration_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with TwinService(settings, registry=None) as svc:
        applied = svc.upgrade_database()
        assert applied  # the service applied them when it opened the new database
        assert svc.upgrade_database() == []
    with TwinService(settings, registry=None) as again:
        assert again.upgrade_database() == []


def test_job_runner_times_out_only_unfinished_jobs() -> None:
    expired: list[uuid.UUID] = []
    release = threading.Event()
    runner = JobRunner(2, 0.2, expired.append)
    try:
        quick, slow = uuid.uuid4(), uuid.uuid4()
        assert runner.submit(quick, lambda: 1).result(5) == 1
        runner.submit(slow, release.wait, 5)
        deadline = time.monotonic() + 5
        while not expired:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)  # past the quick job's deadline too
        assert expired == [slow]
        assert not runner.cancel_deadline(slow)  # timed out already
        spared = uuid.uuid4()
        runner.submit(spared, release.wait, 5)
        assert runner.cancel_deadline(spared)
        time.sleep(0.4)
        assert expired == [slow]  # once each, and never the spared one
    finally:
        release.set()
        runner.close()
    with pytest.raises(RuntimeError, match="close"):
        runner.submit(uuid.uuid4(), lambda: None)


# -- a real (tiny) fit ---------------------------------------------------------------------


@pytest.mark.slow
def test_fit_history_register_simulate_with_a_real_tiny_fit(tmp_path: Path) -> None:
    syn = generate_synthetic_twin_data(
        "hcp",
        n_units=200,
        n_periods=3,
        brands=(BRAND,),
        n_segments=3,
        n_numeric=2,
        n_categorical=1,
    )
    sampler = {"draws": 150, "tune": 150, "chains": 2, "cores": 2, "progressbar": False}
    with TwinService(make_settings(tmp_path), registry=None) as svc:
        info = svc.fit_history(
            syn.data, brand=BRAND, twin_type="hcp", sampler=sampler, override_diagnostics=True
        )
        assert info.is_active and info.performance_metrics["n_rows"] == len(syn.data)
        assert info.target_columns == ["outcome"]
        assert set(syn.numeric_features) <= set(info.feature_columns)
        assert info.training_config["spec"]["family"] == "bernoulli"  # the hcp default
        result = svc.simulate(
            request(intervention_config={"target": {"segment": ["oncology", "cardiology"]}})
        )
        assert result.simulation_status is SimulationStatus.COMPLETED
        assert result.ate_draws is not None and len(result.ate_draws) == 300


# -- the MLflow registry -------------------------------------------------------------------


def test_mlflow_registry_is_used_when_available(tmp_path: Path, brand: str) -> None:
    registry = pytest.importorskip("bayestwin.store.mlflow.registry")
    from mlflow.tracking import MlflowClient

    settings = make_settings(tmp_path)
    with TwinService(settings) as svc:
        assert svc.registry_enabled, svc.registry_status
        _, model = truth_model("hcp", brand)
        info = svc.register(model)
        assert info.mlflow_run_id and info.model_version == "1"
        assert info.model_name == registry.registered_model_name(brand, "hcp")
        uri = settings.resolved_mlflow_uri()
        assert registry.active_version(info.model_name, tracking_uri=uri) == "1"
        sim = svc.simulate(request(brand=brand))
        svc.validate(
            sim.simulation_id,
            "exp",
            outcome={"actual_ate": 0.05, "actual_se": 0.01, "n_treatment": 500, "n_control": 500},
        )
        run = MlflowClient(uri).get_run(info.mlflow_run_id)
        assert "fidelity.actual_ate" in run.data.metrics
        # with the model directory gone, the registered version is loaded instead
        other = TwinService(settings)
        try:
            shutil.rmtree(str(info.artifact_uri))
            loaded = other.load_model(info.model_id)
            np.testing.assert_array_equal(loaded.posterior.tau, model.posterior.tau)
        finally:
            other.close()
