"""Hardening of the maths layers: seeded fits reproduce, pool workers end with their
parent, and intensities far outside the history are refused on every face."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import BRAND, make_settings, truth_model

from bayestwin import tools
from bayestwin.calibration import run as calibration_run
from bayestwin.cli import main
from bayestwin.engine.requests import INTENSITY_RANGE_FACTOR, allowed_intensity
from bayestwin.engine.simulation import SimulationEngine
from bayestwin.errors import InvalidInputError
from bayestwin.model import fit as model_fit
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.model.io import load_model, save_model
from bayestwin.service import TwinService
from bayestwin.tools import ToolError

REPO = Path(__file__).resolve().parent.parent
#: The largest intensity of the stand-in's "history" (the synthetic intensity grid's top).
TOP = 2.0
LIMIT = INTENSITY_RANGE_FACTOR * TOP


# -- 11. a seeded fit is bit-identical ------------------------------------------------------

_FIT = """
import sys
import numpy as np
from bayestwin.model.fit import TwinGenerator
from bayestwin.model.spec import SamplerSettings, default_spec
from bayestwin.synthetic import generate_synthetic_twin_data

s = generate_synthetic_twin_data(
    "hcp", n_units=100, n_periods=2, brands=("B",), n_segments=3, n_numeric=2,
    n_categorical=1, n_intervention_types=2, random_seed=5,
)
sampler = SamplerSettings(draws=50, tune=50, chains=2, cores=2, progressbar=False, random_seed=3)
spec = default_spec(
    "hcp", "B", family=s.truth.family, numeric_features=s.numeric_features,
    categorical_features=s.categorical_features, sampler=sampler,
)
m = TwinGenerator(spec).fit(s.data, keep_trace=False, override_diagnostics=True)
p = m.posterior
np.savez(
    sys.argv[1], intercept=p.intercept, beta=p.beta, tau=p.tau, gamma=p.gamma,
    dose_rate=p.dose_rate, max_intensity=np.array(m.max_intensity),
    history_max=np.array(s.data["intensity"].max()),
)
"""


def _fit_in_subprocess(out: Path, hash_seed: str, compiledir: Path) -> dict[str, np.ndarray]:
    flags = os.environ.get("PYTENSOR_FLAGS", "")
    env = {
        **os.environ,
        "PYTHONHASHSEED": hash_seed,
        "PYTENSOR_FLAGS": ",".join(f for f in (flags, f"base_compiledir={compiledir}") if f),
    }
    subprocess.run(
        [sys.executable, "-c", _FIT, str(out)], env=env, check=True, cwd=REPO, timeout=1200
    )
    with np.load(out) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.mark.slow
def test_seeded_fit_is_bit_identical_across_processes_and_the_compile_cache(
    tmp_path: Path,
) -> None:
    """The first fit compiles into an empty pytensor cache, the second loads from it.

    With fast-math on, these two gave different draws (the cause of "two of nine runs
    differ"); the hash seeds differ too, so that no set or dict order can matter.
    """
    compiledir = tmp_path / "pytensor"
    cold = _fit_in_subprocess(tmp_path / "cold.npz", "1", compiledir)
    warm = _fit_in_subprocess(tmp_path / "warm.npz", "2", compiledir)
    for name in ("intercept", "beta", "tau", "gamma", "dose_rate"):
        assert np.array_equal(cold[name], warm[name]), name
    assert float(cold["max_intensity"]) == float(cold["history_max"]) > 0


def test_sampling_runs_with_strict_floating_point(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytensor

    seen: list[bool] = []

    def fake(model: object, smp: object) -> None:
        seen.append(bool(pytensor.config.numba__fastmath))

    monkeypatch.setattr(model_fit, "_sample_with", fake)
    before = bool(pytensor.config.numba__fastmath)
    model_fit._sample(object(), model_fit.SamplerSettings())
    assert seen == [False]
    assert bool(pytensor.config.numba__fastmath) == before  # restored afterwards


def test_auto_adaptation_is_low_rank_for_small_models_only() -> None:
    auto = model_fit.SamplerSettings()
    limit = model_fit.LOW_RANK_MAX_DIM
    assert model_fit.nutpie_adaptation(1, auto) == "low_rank"
    assert model_fit.nutpie_adaptation(limit, auto) == "low_rank"
    assert model_fit.nutpie_adaptation(limit + 1, auto) == "diag"
    for chosen in ("diag", "low_rank"):
        smp = model_fit.SamplerSettings(adaptation=chosen)
        assert model_fit.nutpie_adaptation(1, smp) == chosen
        assert model_fit.nutpie_adaptation(10 * limit, smp) == chosen
    with pytest.raises(ValueError, match="adaptation"):
        model_fit.SamplerSettings(adaptation="dense")


def test_nutpie_receives_the_chosen_adaptation(monkeypatch: pytest.MonkeyPatch) -> None:
    import nutpie
    import pymc as pm

    real = nutpie.sample
    seen: list[str] = []

    def recording(compiled: object, **kwargs: object) -> object:
        seen.append(str(kwargs["adaptation"]))
        return real(compiled, **kwargs)

    monkeypatch.setattr(nutpie, "sample", recording)
    with pm.Model() as toy:
        pm.Normal("x", 1.0, 2.0, shape=3)
    for chosen in ("auto", "diag"):
        smp = model_fit.SamplerSettings(
            adaptation=chosen, draws=200, tune=200, chains=1, cores=1, progressbar=False
        )
        trace = model_fit._sample_with(toy, smp)
        # 200 draws of N(1, 2): the mean's standard error is about 0.14 per coordinate
        assert abs(float(trace.posterior["x"].mean()) - 1.0) < 0.5
    assert seen == ["low_rank", "diag"]


# -- 12. pool workers end with their parent ------------------------------------------------

_POOL = """
import os, sys, time
from pathlib import Path
from bayestwin.calibration import pool

def spin(folder):
    Path(folder, str(os.getpid())).write_text("")
    end = time.monotonic() + 300
    while time.monotonic() < end:  # busy, then idle, like a fit between chains
        t = time.monotonic() + 0.05
        while time.monotonic() < t:
            pass
        time.sleep(0.05)
    return 0

if __name__ == "__main__":
    if sys.argv[2] == "watchdog-only":
        pool._die_with_parent_linux = lambda: None
    pool.run_in_processes(spin, [sys.argv[1]] * 6, workers=2)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


@pytest.fixture
def pool_parent(tmp_path: Path) -> Iterator[Any]:
    """Start the pool in a child process (its own group); give (process, worker pids)."""
    script = tmp_path / "pool_parent.py"
    script.write_text(_POOL)
    started: list[subprocess.Popen[bytes]] = []
    pids: list[int] = []

    def start(mode: str = "full") -> tuple[subprocess.Popen[bytes], list[int]]:
        folder = tmp_path / "pids"
        folder.mkdir()
        proc = subprocess.Popen(
            [sys.executable, str(script), str(folder), mode], cwd=REPO, start_new_session=True
        )
        started.append(proc)
        assert _wait(lambda: len(list(folder.iterdir())) >= 2, 120), "workers did not start"
        pids.extend(int(p.name) for p in folder.iterdir())
        assert all(_alive(p) for p in pids)
        return proc, pids

    yield start
    for proc in started:  # clean up whatever a failed test left
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_to_the_parent_alone_ends_its_workers(pool_parent: Any) -> None:
    proc, workers = pool_parent()
    proc.send_signal(signal.SIGTERM)  # the parent only, not its process group
    assert proc.wait(20) == 128 + signal.SIGTERM
    assert _wait(lambda: not any(_alive(p) for p in workers), 5), "workers outlived the parent"


@pytest.mark.parametrize("mode", ["full", "watchdog-only"])
def test_workers_end_when_the_parent_is_killed(pool_parent: Any, mode: str) -> None:
    """SIGKILL leaves the parent no say: the workers notice by themselves."""
    proc, workers = pool_parent(mode)
    proc.kill()
    proc.wait(10)
    assert _wait(lambda: not any(_alive(p) for p in workers), 5), "workers outlived the parent"


def test_run_calibration_uses_the_guarded_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake(fn: Any, items: Any, *, workers: int, on_result: Any) -> list[Any]:
        calls.append(workers)
        for i, _ in enumerate(items):
            on_result({"world": {"world_id": 10 - i}, "effects": [], "segments": []})
        return []

    monkeypatch.setattr(calibration_run, "run_in_processes", fake)
    configs: list[Any] = [object(), object()]
    out = calibration_run.run_calibration(configs, workers=2)
    assert calls == [2]
    assert out.worlds["world_id"].tolist() == [9, 10]


# -- 13. intensities far outside the history -----------------------------------------------


@pytest.fixture(scope="module")
def model() -> FittedTwinModel:
    """A stand-in that records its history's largest intensity."""
    return dataclasses.replace(truth_model("hcp")[1], max_intensity=TOP)


def _steep(model: FittedTwinModel, **changes: Any) -> FittedTwinModel:
    """The model with a steep dose response (rate * 1e308 overflows)."""
    post = dataclasses.replace(
        model.posterior, dose_rate=np.full_like(model.posterior.dose_rate, 3.0)
    )
    return dataclasses.replace(model, posterior=post, **changes)


def test_allowed_intensity_is_a_multiple_of_the_history_top(model: FittedTwinModel) -> None:
    assert allowed_intensity(model) == LIMIT == 20.0
    assert allowed_intensity(dataclasses.replace(model, max_intensity=None)) == np.inf


@pytest.mark.parametrize("intensity", [1e308, LIMIT * 1.0001, 1e6])
def test_engine_refuses_an_intensity_far_above_the_history(
    model: FittedTwinModel, intensity: float
) -> None:
    engine = SimulationEngine(threads=1)
    with pytest.raises(InvalidInputError) as raised:
        engine.simulate(model, "email_campaign", {"intensity": intensity}, twin_count=200)
    err = raised.value
    assert err.field == "intervention_config.intensity"
    assert "[0, 20]" in str(err) and "largest intensity" in str(err)


def test_engine_refuses_a_dose_grid_far_above_the_history(model: FittedTwinModel) -> None:
    engine = SimulationEngine(threads=1)
    with pytest.raises(InvalidInputError) as raised:
        engine.simulate(model, "email_campaign", {"intensity": 1.0}, dose_grid=[1.0, 1e9])
    assert raised.value.field == "dose_grid"


def test_allowed_intensities_simulate_without_overflow_warnings(model: FittedTwinModel) -> None:
    engine = SimulationEngine(threads=1)
    steep = _steep(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*overflow", category=RuntimeWarning)
        for intensity in (0.0, 0.5, TOP, LIMIT):
            r = engine.simulate(
                steep, "email_campaign", {"intensity": intensity}, twin_count=200, random_seed=1
            )
            assert r.simulated_ate is not None and np.isfinite(r.simulated_ate)
        # a model that records no range accepts any finite intensity, quietly
        unknown = dataclasses.replace(steep, max_intensity=None)
        r = engine.simulate(
            unknown, "email_campaign", {"intensity": 1e308}, twin_count=200, random_seed=1
        )
    saturated = engine.simulate(
        steep, "email_campaign", {"intensity": LIMIT}, twin_count=200, random_seed=1
    )
    assert r.simulated_ate == pytest.approx(saturated.simulated_ate, rel=1e-6)


def test_max_intensity_survives_save_and_load(tmp_path: Path, model: FittedTwinModel) -> None:
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert loaded.max_intensity == TOP
    # metadata written without the field still loads, with no range check
    meta_path = tmp_path / "m" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["max_intensity"]
    meta_path.write_text(json.dumps(meta))
    assert load_model(tmp_path / "m").max_intensity is None


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, model: FittedTwinModel) -> Iterator[Any]:
    path = tmp_path_factory.mktemp("intensity")
    with TwinService(make_settings(path), registry=None) as svc:
        svc.register(model)
        yield svc, path


def test_tool_refuses_an_absurd_intensity(service: Any) -> None:
    svc, _ = service
    before = svc.list_simulations().total
    out = tools.simulate_intervention(
        "email_campaign", {"intensity": 1e308}, "hcp", BRAND, twin_count=500, service=svc
    )
    assert isinstance(out, ToolError)
    assert out.error.type == "invalid_input"
    assert out.error.field == "intervention_config.intensity"
    assert "[0, 20]" in out.error.message
    assert svc.list_simulations().total == before  # nothing stored
    ok = tools.simulate_intervention(
        "email_campaign", {"intensity": LIMIT}, "hcp", BRAND, twin_count=500, service=svc
    )
    assert not isinstance(ok, ToolError) and ok.intervention_config.intensity == LIMIT


def test_cli_refuses_an_absurd_intensity(service: Any) -> None:
    _, path = service
    out, err = io.StringIO(), io.StringIO()
    args = ["simulate", "--data-dir", str(path), "--brand", BRAND, "--twin-type", "hcp"]
    args += ["--intervention", "email_campaign", "--intensity", "1e308", "--json"]
    code = main(args, stdout=out, stderr=err)
    assert code == 2
    assert "intervention_config.intensity" in err.getvalue() + out.getvalue()
    assert "Traceback" not in err.getvalue()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_rest_refuses_an_absurd_intensity(service: Any) -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    uvicorn = pytest.importorskip("uvicorn")
    from bayestwin.api import PREFIX, create_app

    svc, _ = service
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(svc), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert _wait(lambda: server.started, 20)
        body = {
            "intervention_type": "email_campaign",
            "intervention_config": {"intensity": 1e308},
            "target_population": "hcp",
            "brand": BRAND,
            "twin_count": 500,
        }
        response = httpx.post(f"http://127.0.0.1:{port}{PREFIX}/simulate", json=body, timeout=30)
    finally:
        server.should_exit = True
        thread.join(10)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert "intervention_config.intensity" in [e["field"] for e in problem["errors"]]
