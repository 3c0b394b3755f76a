"""The JAX path: numpyro runs the panel model, and the accelerator benchmark case."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from bayestwin.model.fit import TwinGenerator
from bayestwin.model.spec import SamplerSettings, default_spec
from bayestwin.synthetic import generate_synthetic_twin_data

pytest.importorskip("numpyro", reason="numpyro comes with the [jax] extra")

ROOT = Path(__file__).resolve().parents[1]


def _bench_jax() -> ModuleType:
    """``benchmarks/bench_jax.py`` from the checkout (the tests run on the installed package)."""
    spec = importlib.util.spec_from_file_location("bench_jax", ROOT / "benchmarks" / "bench_jax.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fit(data: object, backend: str) -> object:
    spec = default_spec(
        "patient",
        "A",
        family="poisson",
        numeric_features=data.numeric_features,  # type: ignore[attr-defined]
        categorical_features=data.categorical_features,  # type: ignore[attr-defined]
        sampler=SamplerSettings(
            draws=400, tune=400, chains=2, cores=1, backend=backend, random_seed=3,
            progressbar=False,
        ),
    )  # fmt: skip
    return TwinGenerator(spec).fit(data.data, override_diagnostics=True)  # type: ignore[attr-defined]


def test_numpyro_fits_the_panel_model_like_nutpie() -> None:
    """The same model on JAX: unit effects integrated out, period effects, Mundlak term.

    Both backends sample one posterior, so their posterior means of the effects agree
    within Monte Carlo error: 4 sd of the difference of two means of 800 draws each
    (autocorrelation is accounted for by the effective sample sizes of the slower one,
    bounded below by 100 draws).
    """
    data = generate_synthetic_twin_data(
        "patient", n_units=200, n_periods=5, brands=("A",), n_segments=2,
        n_intervention_types=2, unit_icc=0.3, adoption="staggered", random_seed=8,
    )  # fmt: skip
    fits = {b: _fit(data, b) for b in ("nutpie", "numpyro")}
    jax_trace = fits["numpyro"].trace  # type: ignore[attr-defined]
    for name in ("sigma_unit", "lambda_unit", "sigma_time"):
        assert name in jax_trace["posterior"]  # the panel terms are in the JAX graph
    tau = {b: f.posterior.tau for b, f in fits.items()}  # type: ignore[attr-defined]
    diff = tau["numpyro"].mean(axis=0) - tau["nutpie"].mean(axis=0)
    sd = np.sqrt(tau["numpyro"].var(axis=0) / 100 + tau["nutpie"].var(axis=0) / 100)
    assert np.all(np.abs(diff) < 4 * sd), (diff, sd)


def test_accelerator_case_skips_with_its_reason_without_a_gpu(tmp_path: Path) -> None:
    bench_jax = _bench_jax()
    device, reason = bench_jax.accelerator()
    if device is not None:
        pytest.skip(f"a GPU is present ({device}): the case would run in full")
    report = bench_jax.run(tmp_path, units=50, periods=3)
    assert report["skipped"] == reason and "no GPU" in reason
    assert report["results"] == {}
    saved = json.loads((tmp_path / "jax.json").read_text())
    assert saved["skipped"] == reason
    assert "skipped: no GPU" in (tmp_path / "jax.md").read_text()
