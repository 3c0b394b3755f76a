"""MLflow registry: runs, versions, aliases, predictions in a new process, fidelity metrics.

Everything runs against a real MLflow store (SQLite in a temporary directory); the
working directory is a scratch directory that must stay empty.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from mlflow.pyfunc import PyFuncModel
from mlflow.tracking import MlflowClient

from bayestwin.engine.fidelity import FidelitySummary
from bayestwin.engine.outcomes import predict_expected_outcomes
from bayestwin.errors import ConflictError, InvalidInputError, NotFitError
from bayestwin.model.fit import TwinGenerator
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.model.spec import SamplerSettings, default_spec
from bayestwin.schemas import FidelityResult, TwinModelInfo
from bayestwin.store.mlflow.fit_record import fit_metrics
from bayestwin.store.mlflow.registry import (
    RegisteredTwin,
    active_version,
    load_fitted,
    log_fidelity,
    log_fit,
    model_info_from,
    registered_model_name,
    set_active,
)
from bayestwin.store.mlflow.tracking import default_artifact_location, fluent, resolve_tracking_uri
from bayestwin.store.repository import TwinRepository
from bayestwin.synthetic import SyntheticTwinData, generate_synthetic_twin_data
from bayestwin.vocabulary import FidelityGrade, TwinType

BRAND = "A"
OUTPUT = ["expected_outcome", "sd", "q05", "q95"]
ARRAYS = ("intercept", "beta", "tau", "gamma", "dose_rate")


def _history() -> SyntheticTwinData:
    return generate_synthetic_twin_data(
        "hcp",
        n_units=150,
        n_periods=2,
        brands=(BRAND,),
        n_segments=2,
        n_numeric=2,
        n_categorical=0,
        random_seed=3,
    )


def _fit(data: SyntheticTwinData, seed: int) -> FittedTwinModel:
    sampler = SamplerSettings(
        draws=100, tune=100, chains=2, cores=2, progressbar=False, random_seed=seed
    )
    spec = default_spec(
        data.truth.twin_type,
        BRAND,
        family=data.truth.family,
        numeric_features=data.numeric_features,
        sampler=sampler,
    )
    return TwinGenerator(spec).fit(data.data, override_diagnostics=True)


def _pyfunc(model_uri: str, store: str) -> PyFuncModel:
    """The registered model as MLflow serves it."""
    with fluent(store):
        return mlflow.pyfunc.load_model(model_uri)


def _units(model: FittedTwinModel) -> pd.DataFrame:
    """The population with a different intervention on each row (controls included)."""
    pop = model.population
    kinds = ["", *model.posterior.intervention_types]
    levels = [1.0, 0.5, 2.0, 0.0]
    return pop.assign(
        intervention_type=[kinds[i % len(kinds)] for i in range(len(pop))],
        intensity=[levels[i % len(levels)] for i in range(len(pop))],
    )


# -- module fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Run the module from an empty directory, and check that it stays empty."""
    path = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(path)
        yield path
    assert sorted(p.name for p in path.iterdir()) == [], "MLflow wrote into the cwd"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow") / "store"


@pytest.fixture(scope="module")
def store(store_dir: Path) -> str:
    return f"sqlite:///{store_dir / 'mlflow.db'}"


@pytest.fixture(scope="module")
def history() -> SyntheticTwinData:
    return _history()


@pytest.fixture(scope="module")
def fitted(history: SyntheticTwinData, workdir: Path) -> FittedTwinModel:
    return _fit(history, seed=1)


@pytest.fixture(scope="module")
def first(fitted: FittedTwinModel, store: str) -> RegisteredTwin:
    return log_fit(fitted, tracking_uri=store)


# -- names and locations (no store) -------------------------------------------------------


def test_registered_model_name_is_uri_safe() -> None:
    assert registered_model_name("Remibrutinib", "hcp") == "bayestwin-remibrutinib-hcp"
    assert (
        registered_model_name("Brand A/B @x", TwinType.PATIENT) == "bayestwin-brand-a-b-x-patient"
    )
    odd = registered_model_name("日本", "territory")
    assert odd.startswith("bayestwin-brand-") and odd.endswith("-territory")
    assert odd == registered_model_name("日本", "territory")
    assert odd != registered_model_name("中国", "territory")


def test_default_store_and_artifacts_live_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAYESTWIN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("BAYESTWIN_MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_tracking_uri()
    assert uri == f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}"
    assert (tmp_path / "data").is_dir()  # created, so SQLite can open the file
    root = tmp_path.resolve()
    assert default_artifact_location(uri) == str(root / "data" / "mlartifacts")
    elsewhere = f"sqlite:///{tmp_path / 'other' / 'm.db'}"
    assert default_artifact_location(elsewhere) == str(root / "other" / "mlartifacts")
    pg = "postgresql+psycopg://u:p@db/mlflow"
    assert default_artifact_location(pg) == str(root / "data" / "mlartifacts")
    assert default_artifact_location("http://tracking:5000") is None
    assert resolve_tracking_uri("http://tracking:5000") == "http://tracking:5000"


# -- logging and registering a fit -------------------------------------------------------


@pytest.mark.slow
def test_log_fit_records_run_and_registers_version_one(
    fitted: FittedTwinModel, first: RegisteredTwin, store: str, store_dir: Path
) -> None:
    client = MlflowClient(store)
    assert first.name == "bayestwin-a-hcp"
    assert first.version == "1"
    assert first.model_uri == "models:/bayestwin-a-hcp/1"
    run = client.get_run(first.run_id)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["family"] == "bernoulli"
    assert params["brand"] == BRAND
    assert params["sampler.draws"] == "100"
    assert params["sampler.backend"] == "nutpie"
    assert params["priors.beta_sd"] == "0.5"
    assert json.loads(params["numeric_features"]) == list(fitted.posterior.encoder.numeric)
    assert params["n_units"] == "150"
    diag = fitted.diagnostics
    assert metrics["max_r_hat"] == pytest.approx(diag.max_r_hat)
    assert metrics["min_ess_bulk"] == pytest.approx(diag.min_ess_bulk)
    assert metrics["min_ess_tail"] == pytest.approx(diag.min_ess_tail)
    assert metrics["divergences"] == diag.divergences
    assert metrics["min_bfmi"] == pytest.approx(diag.min_bfmi)
    assert metrics["diagnostics_passed"] == float(diag.passed)
    assert metrics["fit_seconds"] > 0
    assert metrics == pytest.approx(first.metrics)
    assert tags["bayestwin.brand"] == BRAND
    assert tags["bayestwin.twin_type"] == "hcp"
    assert tags["bayestwin.spec_hash"] == fitted.spec_hash
    assert tags["bayestwin.fit_for_use"] == "true"
    # (on disk: MlflowClient.list_artifacts of a run with a logged model reads the
    # process-wide tracking URI in MLflow 3.17)
    run_files = Path(run.info.artifact_uri) / "twin"
    assert sorted(p.name for p in run_files.iterdir()) == ["metadata.json", "spec.json"]

    version = client.get_model_version(first.name, "1")
    assert version.run_id == first.run_id
    assert version.source == f"models:/{first.logged_model_id}"
    assert version.tags["bayestwin.brand"] == BRAND

    # the files sit in the store's directory, with the posterior netCDF
    experiment = client.get_experiment(first.experiment_id)
    assert experiment.name == "bayestwin"
    assert experiment.artifact_location == str(store_dir.resolve() / "mlartifacts")
    model_dir = Path(first.artifact_uri) / "artifacts" / "twin"
    expected = {"metadata.json", "population.parquet", "posterior.npz", "spec.json", "trace.nc"}
    assert {p.name for p in model_dir.iterdir()} == expected
    assert Path(first.artifact_uri).is_relative_to(store_dir.resolve())


@pytest.mark.slow
def test_load_fitted_returns_the_logged_model(
    fitted: FittedTwinModel, first: RegisteredTwin, store: str
) -> None:
    loaded = load_fitted(first.name, version=1, tracking_uri=store, load_trace=True)
    for name in ARRAYS:
        np.testing.assert_array_equal(
            getattr(loaded.posterior, name), getattr(fitted.posterior, name)
        )
    pd.testing.assert_frame_equal(loaded.population, fitted.population)
    assert loaded.spec == fitted.spec
    assert loaded.spec_hash == fitted.spec_hash
    assert loaded.diagnostics == fitted.diagnostics
    assert loaded.override_diagnostics
    xr.testing.assert_identical(
        loaded.trace["posterior"].to_dataset(), fitted.trace["posterior"].to_dataset()
    )
    # the same model by its logged-model URI and by the row's artifact location
    for ref in (f"models:/{first.logged_model_id}", first.artifact_uri, first.model_uri):
        again = load_fitted(ref, tracking_uri=store)
        np.testing.assert_array_equal(again.posterior.tau, fitted.posterior.tau)
        assert again.trace is None
    with pytest.raises(ValueError, match="not both"):
        load_fitted(first.name, alias="active", version=1, tracking_uri=store)
    with pytest.raises(ValueError, match="is a URI"):
        load_fitted(first.model_uri, version=1, tracking_uri=store)


_CHILD = textwrap.dedent(
    """
    import sys

    import mlflow
    import numpy as np
    import pandas as pd

    from bayestwin.engine.outcomes import predict_expected_outcomes
    from bayestwin.store.mlflow.registry import load_fitted

    uri, name, units_path, out = sys.argv[1:5]
    units = pd.read_parquet(units_path)
    columns = ["expected_outcome", "sd", "q05", "q95"]
    mlflow.set_tracking_uri(uri)
    frames = {
        "pyfunc_version": mlflow.pyfunc.load_model(f"models:/{name}/1").predict(units),
        "pyfunc_alias": mlflow.pyfunc.load_model(f"models:/{name}@active").predict(units),
        "fitted_version": predict_expected_outcomes(
            load_fitted(name, version="1", tracking_uri=uri).posterior, units
        ),
        "fitted_alias": predict_expected_outcomes(
            load_fitted(name, alias="active", tracking_uri=uri).posterior, units
        ),
    }
    for label, frame in frames.items():
        assert list(frame["unit_id"]) == list(units["unit_id"]), label
        np.save(f"{out}/{label}.npy", frame[columns].to_numpy())
    """
)


@pytest.mark.slow
def test_predictions_are_identical_in_a_new_process(
    fitted: FittedTwinModel, first: RegisteredTwin, store: str, tmp_path: Path
) -> None:
    set_active(first.name, first.version, tracking_uri=store)
    units = _units(fitted)
    expected = predict_expected_outcomes(fitted.posterior, units)[OUTPUT].to_numpy()
    here = _pyfunc(f"models:/{first.name}@active", store).predict(units)
    assert isinstance(here, pd.DataFrame)
    assert here[OUTPUT].to_numpy().tobytes() == expected.tobytes()

    units.to_parquet(tmp_path / "units.parquet")
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            store,
            first.name,
            str(tmp_path / "units.parquet"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for label in ("pyfunc_version", "pyfunc_alias", "fitted_version", "fitted_alias"):
        got = np.load(tmp_path / f"{label}.npy")
        assert got.dtype == np.float64 and got.shape == expected.shape, label
        assert got.tobytes() == expected.tobytes(), f"{label} differs from the in-process result"


# -- fidelity -------------------------------------------------------------------------------


@pytest.mark.slow
def test_fidelity_metrics_show_on_the_run(first: RegisteredTwin, store: str) -> None:
    results = [
        FidelityResult(
            simulated_ate=0.020,
            actual_ate=0.025,
            actual_se=0.010,
            prediction_error=0.20,
            fidelity_grade=FidelityGrade.FAIR,
            standardized_error=-0.4,
            pit=0.31,
            in_predictive_interval={"0.5": True, "0.95": True},
            validated_at=datetime(2026, 1, 5, tzinfo=UTC),
        ),
        FidelityResult(
            simulated_ate=0.030,
            actual_ate=0.029,
            actual_se=0.012,
            prediction_error=0.03,
            fidelity_grade=FidelityGrade.EXCELLENT,
            standardized_error=0.1,
            pit=0.55,
            in_predictive_interval={"0.5": False, "0.95": True},
            validated_at=datetime(2026, 2, 5, tzinfo=UTC),
            model_fidelity_score=0.82,
        ),
    ]
    logged = log_fidelity(first.run_id, results, tracking_uri=store)
    assert logged["fidelity.prediction_error"] == 0.03
    summary = FidelitySummary(
        score=0.82, n_validations=2, n_required=3, warning=False, reason=None,
        grade_counts={"excellent": 1, "fair": 1},
    )  # fmt: skip
    log_fidelity(first.run_id, summary.to_dict(), step=2, tracking_uri=store)
    log_fidelity(first.run_id, 0.8, step=3, tracking_uri=store)

    client = MlflowClient(store)
    metrics = client.get_run(first.run_id).data.metrics
    assert metrics["fidelity.score"] == 0.8
    assert metrics["fidelity.prediction_error"] == 0.03
    assert metrics["fidelity.grade"] == 3.0
    assert metrics["fidelity.in_interval_0.5"] == 0.0
    assert metrics["fidelity.in_interval_0.95"] == 1.0
    assert metrics["fidelity.n_validations"] == 2
    assert metrics["fidelity.warning"] == 0.0
    assert metrics["fidelity.grade_counts.fair"] == 1
    assert "fidelity.reason" not in metrics
    assert "max_r_hat" in metrics  # the fit's metrics are still there
    history = sorted(
        client.get_metric_history(first.run_id, "fidelity.prediction_error"), key=lambda m: m.step
    )
    assert [(m.step, m.value) for m in history] == [(0, 0.20), (1, 0.03)]
    assert history[0].timestamp == int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)
    scores = client.get_metric_history(first.run_id, "fidelity.score")
    assert sorted((m.step, m.value) for m in scores) == [(1, 0.82), (2, 0.82), (3, 0.8)]
    with pytest.raises(TypeError):
        log_fidelity(first.run_id, "excellent", tracking_uri=store)  # type: ignore[arg-type]


# -- versions and the active alias ---------------------------------------------------------


@pytest.mark.slow
def test_second_fit_is_version_two_and_the_alias_moves(
    history: SyntheticTwinData, fitted: FittedTwinModel, first: RegisteredTwin, store: str
) -> None:
    set_active(first.name, first.version, tracking_uri=store)
    refit = _fit(history, seed=2)
    second = log_fit(refit, tracking_uri=store)
    assert (second.name, second.version) == (first.name, "2")
    assert second.run_id != first.run_id
    assert active_version(first.name, tracking_uri=store) == "1"

    set_active(second.name, second.version, tracking_uri=store)
    assert active_version(first.name, tracking_uri=store) == "2"
    assert active_version(first.name, alias="champion", tracking_uri=store) is None
    active = load_fitted(first.name, tracking_uri=store)  # no version: the active one
    np.testing.assert_array_equal(active.posterior.tau, refit.posterior.tau)
    assert not np.array_equal(active.posterior.tau, fitted.posterior.tau)
    units = _units(refit)
    served = _pyfunc(f"models:/{first.name}@active", store).predict(units)
    assert isinstance(served, pd.DataFrame)
    expected = predict_expected_outcomes(refit.posterior, units)
    assert served[OUTPUT].to_numpy().tobytes() == expected[OUTPUT].to_numpy().tobytes()

    set_active(first.name, "1", tracking_uri=store)  # and back
    assert active_version(first.name, tracking_uri=store) == "1"


@pytest.mark.slow
def test_a_model_unfit_for_use_is_recorded_but_not_activated(
    fitted: FittedTwinModel, store: str
) -> None:
    unfit = dataclasses.replace(
        fitted,
        override_diagnostics=False,
        diagnostics=dataclasses.replace(
            fitted.diagnostics, passed=False, reasons=["max r_hat 1.2 > 1.01"]
        ),
    )
    name = "bayestwin-a-hcp-unfit"
    with pytest.raises(ConflictError, match="not fit for use") as err:
        log_fit(unfit, tracking_uri=store, registered_name=name, activate=True)
    assert err.value.code == "invalid_state"
    client = MlflowClient(store)
    version = client.get_model_version(name, "1")  # recorded all the same
    assert version.tags["bayestwin.fit_for_use"] == "false"
    assert "max r_hat 1.2" in (version.description or "")
    assert version.run_id is not None
    assert client.get_run(version.run_id).data.metrics["diagnostics_passed"] == 0.0
    assert active_version(name, tracking_uri=store) is None
    set_active(name, "1", tracking_uri=store, force=True)
    assert active_version(name, tracking_uri=store) == "1"
    with pytest.raises(NotFitError):
        _pyfunc(f"models:/{name}@active", store).predict(_units(fitted))


@pytest.mark.slow
def test_a_registered_name_belongs_to_one_brand(
    fitted: FittedTwinModel, first: RegisteredTwin, store: str
) -> None:
    other = dataclasses.replace(fitted, brand="B")
    client = MlflowClient(store)
    runs_before = len(client.search_runs([first.experiment_id]))
    with pytest.raises(ValueError, match="holds brand 'A'"):
        log_fit(other, tracking_uri=store, registered_name=first.name)
    assert len(client.search_runs([first.experiment_id])) == runs_before


# -- the database row -----------------------------------------------------------------------


@pytest.mark.slow
def test_model_row_links_to_the_run_and_version(
    fitted: FittedTwinModel, first: RegisteredTwin, store: str, tmp_path: Path
) -> None:
    info = model_info_from(fitted, first, is_active=True)
    assert info.model_name == first.name
    assert info.model_version == "1"
    assert info.mlflow_run_id == first.run_id
    assert info.artifact_uri == first.artifact_uri
    assert info.brand == BRAND and info.twin_type is TwinType.HCP
    assert info.feature_columns == ["segment", *fitted.posterior.encoder.numeric]
    assert info.target_columns == ["outcome"]
    assert info.fit_for_use and info.is_active
    assert info.training_config["spec"] == fitted.spec
    assert info.performance_metrics["max_r_hat"] == pytest.approx(fitted.diagnostics.max_r_hat)
    assert info.model_id == model_info_from(fitted, first).model_id  # one row per run
    assert TwinModelInfo.model_validate_json(info.model_dump_json()) == info
    assert info.training_config["spec_hash"] == fitted.spec_hash
    assert info.training_config["intervention_types"] == list(fitted.posterior.intervention_types)
    assert info.performance_metrics["diagnostics"]["passed"] == fitted.diagnostics.passed
    assert info.performance_metrics["n_units"] == len(fitted.population)

    # the same row without MLflow: no run, the name and version given
    row_id = uuid.uuid4()
    local = model_info_from(
        fitted, model_name="local", model_version="7", artifact_uri="/models/x", model_id=row_id
    )
    assert (local.model_id, local.model_name, local.model_version) == (row_id, "local", "7")
    assert local.mlflow_run_id is None and "max_r_hat" not in local.performance_metrics
    assert local.training_config == info.training_config
    with pytest.raises(InvalidInputError, match="without a registered version"):
        model_info_from(fitted, model_name="local")

    with TwinRepository(f"sqlite:///{tmp_path / 'bayestwin.db'}") as repo:
        stored = repo.register_model(info)
        assert (stored.mlflow_run_id, stored.model_version) == (first.run_id, "1")
        assert repo.get_active_model(BRAND, "hcp").model_id == info.model_id
        with pytest.raises(ConflictError):
            repo.register_model(info)
    back = load_fitted(stored.artifact_uri or "", tracking_uri=store)
    np.testing.assert_array_equal(back.posterior.intercept, fitted.posterior.intercept)


# -- optional metrics and the embedded default store ----------------------------------------


@pytest.mark.slow
def test_loo_is_logged_when_the_trace_has_a_log_likelihood(fitted: FittedTwinModel) -> None:
    assert not any(key.startswith("loo_") for key in fit_metrics(fitted))
    rng = np.random.default_rng(0)
    sizes = fitted.trace["posterior"].to_dataset().sizes
    shape = (sizes["chain"], sizes["draw"], 40)
    loglik = xr.Dataset({"y": (("chain", "draw", "obs"), rng.normal(-0.7, 0.05, shape))})
    trace = fitted.trace.copy()
    trace["log_likelihood"] = xr.DataTree(loglik)
    metrics = fit_metrics(dataclasses.replace(fitted, trace=trace))
    assert metrics["loo_elpd"] == pytest.approx(-0.7 * 40, rel=0.05)
    assert {"loo_se", "loo_p", "loo_max_pareto_k"} <= set(metrics)


@pytest.mark.slow
def test_the_embedded_default_store_is_sqlite_in_the_data_dir(
    fitted: FittedTwinModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("BAYESTWIN_DATA_DIR", str(data))
    monkeypatch.delenv("BAYESTWIN_MLFLOW_TRACKING_URI", raising=False)
    registered = log_fit(fitted, activate=True)
    assert registered.tracking_uri == f"sqlite:///{data / 'mlflow.db'}"
    assert (data / "mlflow.db").is_file()
    assert Path(registered.artifact_uri).is_relative_to(data.resolve() / "mlartifacts")
    assert active_version(registered.name) == "1"
    np.testing.assert_array_equal(load_fitted(registered.name).posterior.tau, fitted.posterior.tau)
