"""fit_all and the calibration worlds on a real Dask LocalCluster of 2 worker processes.

Every test shares one cluster (module scope). Each fit is small (2,000 rows in all,
2 chains x 300 draws, one core); the stores (the database, the MLflow tracking store
and the model directory) live in each test's tmp_path, as a cluster's workers would
share them. The MLflow store is SQLite-backed: MLflow 3 refuses the plain file store
unless told otherwise.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from distributed import Client
from helpers import make_settings
from mlflow.tracking import MlflowClient

from bayestwin.calibration import RunSettings, draw_world_configs, run_calibration
from bayestwin.cli import main as cli_main
from bayestwin.cluster import TaskResult, open_client, run_tasks, worker_cores
from bayestwin.errors import InvalidInputError
from bayestwin.service import TwinService
from bayestwin.service.distributed import FIT_KEY, FitAllResult, ServiceState
from bayestwin.service.fitting import history_spec
from bayestwin.service.histories import read_history, spec_columns
from bayestwin.store.repository import TwinRepository
from bayestwin.synthetic import generate_synthetic_twin_data
from bayestwin.vocabulary import TwinType

pytestmark = pytest.mark.slow

PG_URL = os.environ.get("BAYESTWIN_TEST_POSTGRES_URL")
# two cores asked for: each task samples on the one core its worker gives it
SAMPLER = {"draws": 300, "tune": 300, "chains": 2, "cores": 2, "progressbar": False}
TYPES = (TwinType.HCP, TwinType.PATIENT)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """A LocalCluster of 2 worker processes, one thread each, for the whole module."""
    with open_client(n_workers=2, dashboard_address=None) as c:
        c.wait_for_workers(2, timeout=120)
        yield c


def _brands() -> tuple[str, str]:
    """Two brands of this test alone (a shared PostgreSQL database outlives the test)."""
    tag = uuid.uuid4().hex[:6]
    return f"Alpha{tag}", f"Beta{tag}"


def _history(brands: tuple[str, str]) -> pd.DataFrame:
    """2 brands x 2 twin types, 125 units x 4 periods each: 2,000 rows."""
    parts = [
        generate_synthetic_twin_data(
            kind, n_units=125, n_periods=4, brands=brands, n_numeric=2, random_seed=i
        ).data
        for i, kind in enumerate(TYPES)
    ]
    return pd.concat(parts, ignore_index=True)


def _service(tmp_path: Path, database_url: str | None = None) -> TwinService:
    settings = make_settings(tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    url = database_url or f"sqlite:///{tmp_path / 'bayestwin.db'}"
    return TwinService(settings, repository=TwinRepository(url))


def _fit_all(service: TwinService, history: Any, client: Client, **kw: Any) -> FitAllResult:
    return service.fit_all(
        history, engine="dask", client=client, sampler=SAMPLER, override_diagnostics=True, **kw
    )


def _versions(service: TwinService, brands: tuple[str, str]) -> list[Any]:
    """Every MLflow model version of the brands' registered models."""
    uri = service.settings.resolved_mlflow_uri()
    mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
    names = [service.default_model_name(b, k) for b in brands for k in TYPES]
    return [v for name in names for v in mlflow.search_model_versions(f"name = '{name}'")]


def _check_registered(service: TwinService, brands: tuple[str, str]) -> None:
    """4 models, one per pair, active, each with exactly one MLflow version of its run."""
    rows = [m for b in brands for m in service.list_models(brand=b).items]
    assert sorted((m.brand, m.twin_type) for m in rows) == sorted(
        (b, k) for b in brands for k in TYPES
    )
    assert all(m.is_active and m.mlflow_run_id for m in rows)
    versions = _versions(service, brands)
    assert len(versions) == 4
    assert sorted(v.run_id for v in versions) == sorted(m.mlflow_run_id for m in rows)
    assert {(v.name, str(v.version)) for v in versions} == {(m.model_name, "1") for m in rows}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        assert PG_URL
        return PG_URL
    return f"sqlite:///{tmp_path / 'bayestwin.db'}"


# -- the cluster itself -------------------------------------------------------------------


def _pid_and_cores() -> tuple[int, int]:
    return os.getpid(), worker_cores(default=7)


def _fails_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"bad item {x}")
    return x


def test_tasks_run_in_worker_processes_with_one_core_each(client: Client) -> None:
    results = run_tasks(client, _pid_and_cores, {f"t{i}": () for i in range(4)})
    assert sorted(r.name for r in results) == ["t0", "t1", "t2", "t3"]
    assert all(r.ok and r.worker in client.nthreads() for r in results)
    assert {r.value[1] for r in results if r.value} == {1}  # one thread per worker
    assert os.getpid() not in {r.value[0] for r in results if r.value}
    assert worker_cores(default=7) == 7  # outside a worker


def test_a_task_that_keeps_failing_is_recorded_with_its_error(client: Client) -> None:
    seen: list[TaskResult[int]] = []
    results = run_tasks(
        client, _fails_on_odd, {"bad": (3,), "good": (4,)}, retries=1, on_result=seen.append
    )
    assert {r.name: r.error for r in results} == {"bad": "ValueError: bad item 3", "good": None}
    assert [r.name for r in seen] == [r.name for r in results]


def test_a_database_in_memory_cannot_be_shared(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    repository = TwinRepository("sqlite://")
    with (
        TwinService(settings, repository=repository, registry=None) as service,
        pytest.raises(InvalidInputError) as raised,
    ):
        ServiceState.of(service)
    assert raised.value.field == "database_url"


# -- fit_all ------------------------------------------------------------------------------


def test_fit_all_registers_four_models_in_mlflow_and_the_database(
    client: Client, tmp_path: Path, database_url: str
) -> None:
    brands = _brands()
    history = _history(brands)
    assert len(history) == 2000
    seen: list[tuple[int, int, str]] = []
    with _service(tmp_path, database_url) as service:
        result = _fit_all(
            service, history, client, progress=lambda d, n, o: seen.append((d, n, o.status))
        )
        assert [o.status for o in result.outcomes] == ["fitted"] * 4
        assert seen == [(i, 4, "fitted") for i in range(1, 5)]
        assert {o.worker for o in result.outcomes} <= set(client.nthreads())
        assert [(m.brand, m.twin_type) for m in result] == [(b, k) for b in brands for k in TYPES]
        _check_registered(service, brands)
        # each fit used the worker's one core, and keeps its fit key
        for info in result:
            assert info.training_config["spec"]["sampler"]["cores"] == 1
            assert info.training_config["provenance"][FIT_KEY]

        # again, from parquet read by columns and with a pair that cannot be fitted:
        # the four are skipped, the new one fails on its own, nothing is refitted
        untreated = history[history["brand"] == brands[0]].copy()
        untreated["brand"] = f"Gamma{brands[0][5:]}"
        untreated["intervention_type"] = ""
        untreated["intensity"] = 0.0
        path = tmp_path / "history.parquet"
        pd.concat([history, untreated], ignore_index=True).to_parquet(path)
        again = _fit_all(service, path, client)
        statuses = {(o.brand, o.twin_type): o.status for o in again.outcomes}
        assert statuses == {
            **{(b, k): "skipped" for b in brands for k in TYPES},
            **{(untreated["brand"].iloc[0], k): "failed" for k in TYPES},
        }
        assert all("no treated rows" in str(o.error) for o in again.failures)
        assert sorted(m.model_id for m in again) == sorted(m.model_id for m in result)
        _check_registered(service, brands)


def test_a_killed_worker_is_replaced_and_its_fit_run_again(client: Client, tmp_path: Path) -> None:
    brands = _brands()
    history = _history(brands)
    results: list[FitAllResult] = []
    with _service(tmp_path) as service:
        thread = threading.Thread(target=lambda: results.append(_fit_all(service, history, client)))
        thread.start()
        victim, key = _wait_for_a_running_fit(client)
        time.sleep(1.0)  # mid-fit
        pids = client.run(os.getpid)
        os.kill(pids[victim], signal.SIGKILL)
        thread.join(timeout=600)
        assert not thread.is_alive()
        (result,) = results
        assert [o.status for o in result.outcomes] == ["fitted"] * 4, result.failures
        assert victim not in {o.worker for o in result.outcomes}  # it never finished a task
        # the fit it was running was run again, elsewhere, and registered once
        (rerun,) = [o for o in result.outcomes if f"-{o.brand}-{o.twin_type.value}-" in key]
        assert rerun.status == "fitted" and rerun.worker in client.nthreads()
        _check_registered(service, brands)  # nothing lost, nothing twice
    client.wait_for_workers(2, timeout=120)  # the nanny started a new worker
    assert victim not in client.nthreads()


def _executing(dask_worker: Any) -> list[str]:
    return [str(ts.key) for ts in dask_worker.state.executing]


def _wait_for_a_running_fit(client: Client, timeout: float = 300) -> tuple[str, str]:
    """The address of a worker running a fit task, and the task's key."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = client.run(_executing)
        for address, keys in running.items():
            for key in keys:
                if key.startswith("fit-"):
                    return str(address), key
        time.sleep(0.2)
    raise AssertionError("no fit started")


def test_parquet_history_is_read_by_columns_and_rows(tmp_path: Path) -> None:
    brands = ("Alpha", "Beta")
    history = _history(brands)
    history["unused"] = np.arange(len(history))
    path = tmp_path / "h.parquet"
    history.to_parquet(path)
    spec = history_spec(
        history[history["twin_type"] == "hcp"].drop(columns="unused"),
        brand="Beta",
        twin_type="hcp",
    )
    part = read_history(path, spec, brand="Beta", twin_type="hcp")
    assert list(part.columns) == spec_columns(spec) and "unused" not in part.columns
    assert set(part["brand"]) == {"Beta"} and set(part["twin_type"]) == {"hcp"}
    assert len(part) == 500


def test_the_command_fits_all_on_the_scheduler_it_is_given(client: Client, tmp_path: Path) -> None:
    brand = _brands()[0]
    history = generate_synthetic_twin_data(
        "hcp", n_units=125, n_periods=4, brands=(brand,), n_numeric=2, random_seed=3
    ).data
    path = tmp_path / "history.parquet"
    history.to_parquet(path)
    address = client.scheduler.address
    argv = [
        "fit", str(path), "--all", "--scheduler", address, "--data-dir", str(tmp_path),
        "--draws", "300", "--tune", "300", "--chains", "2", "--override-diagnostics",
    ]  # fmt: skip
    runs = []
    for _ in range(2):
        out, err = io.StringIO(), io.StringIO()
        status = cli_main(argv, stdout=out, stderr=err)
        runs.append((status, out.getvalue(), err.getvalue()))
    (first, first_out, first_err), (second, second_out, _) = runs
    assert (first, second) == (0, 0), first_err
    assert "Dask dashboard:" in first_err
    assert f"[1/1] {brand}/hcp fitted in " in first_err
    assert first_out.endswith("1 fitted, 0 skipped, 0 failed\n")
    assert second_out.endswith("0 fitted, 1 skipped, 0 failed\n")


# -- calibration --------------------------------------------------------------------------

_TIMING = ("seconds", "fit_seconds")


def _records(frame: pd.DataFrame) -> pd.DataFrame:
    """A run's records without its wall times, in a fixed order."""
    kept = frame.drop(columns=[c for c in _TIMING if c in frame.columns])
    return kept.sort_index(axis=1).reset_index(drop=True)


def test_calibration_on_the_cluster_gives_the_records_of_a_run_in_process(
    client: Client,
) -> None:
    configs = draw_world_configs(4, random_seed=11, n_units=(300, 400), n_periods=4)
    run = RunSettings(draws=300, tune=300, chains=2, cores=1, twin_count=300, baselines=False)
    here = run_calibration(configs, run, workers=1)
    there = run_calibration(configs, run, engine="dask", client=client)
    assert there.workers == 2
    assert here.worlds["error"].isna().all() and there.worlds["error"].isna().all()
    for name in ("worlds", "effects", "segments"):
        pd.testing.assert_frame_equal(
            _records(getattr(here, name)), _records(getattr(there, name)), check_exact=True
        )
    assert len(here.effects) > 0
