"""Benchmark the simulation engine against PyMC's posterior predictive and a NumPy floor.

For each size (twins x posterior draws) this times, and separately measures the peak
traced memory (``tracemalloc``) of:

* ``engine``: ``SimulationEngine.simulate`` doing the same work as the PyMC
  comparison (expected outcomes under treatment and control, population ATE draws,
  interval, segments, decision, sample size) with ``dose_grid=()``;
* ``engine_panel``: ``engine`` on the same posterior with unit effects for every
  population unit and random-walk period effects (each twin carries its unit's
  deviation, and the period shift one period ahead);
* ``engine_full``: the same call with the default dose-response grid (six more
  treated intensities);
* ``engine_one_thread``: ``engine`` with the vectorised core on the calling thread
  only (``SimulationEngine(threads=1)``), to show what the worker threads add;
* ``engine_kernel_all_distinct``: the vectorised core (:func:`effect_draws`) on every
  twin as if all were distinct, i.e. without the distinct-unit weighting;
* ``pymc``: a PyMC model of the same structure, ``pm.set_data`` with the twins, then
  ``pm.sample_posterior_predictive(..., predictions=True)`` of the expected outcome
  under treatment and under control, and the ATE draws from the two;
* ``numpy_floor``: one matrix product ``(draws x P) @ (P x twins)`` plus the inverse
  link (:func:`bayestwin.core.families.inverse_link`), float32, unchunked, at the process's
  BLAS threads and at one thread (the faster counts). ``numpy_floor_tanh_link`` is
  the same with the logit link computed as the engine does (``1 + tanh(eta / 2)``),
  for reference.

Targets: ``engine`` and ``engine_panel`` at least 20 times faster than ``pymc``, and
``engine`` within 2 times of ``numpy_floor``. Results go to ``bench_simulation.json``
and ``bench_simulation.md`` under ``--out`` (default ``reports/``).

Usage::

    python benchmarks/bench_simulation.py --out reports/
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayestwin.core.effects import effect_draws
from bayestwin.core.families import inverse_link
from bayestwin.core.population import TwinSample, draw_twins
from bayestwin.core.posterior import TwinPosterior
from bayestwin.core.unit_effects import UnitEffects
from bayestwin.engine.simulation import EngineSettings, SimulationEngine
from bayestwin.model.fitted import Diagnostics, FittedTwinModel
from bayestwin.settings import Settings, load_settings
from bayestwin.synthetic import generate_synthetic_twin_data, truth_posterior
from bayestwin.vocabulary import TwinType

SIZES: tuple[tuple[int, int], ...] = ((10_000, 1_000), (50_000, 1_000))
POPULATION = 50_000
SEED = 20_250_101
TARGET_SPEEDUP_VS_PYMC = 20.0
TARGET_RATIO_VS_FLOOR = 2.0
#: Idle pause before each timed call. OpenBLAS threads keep spinning for a moment after
#: a multi-threaded product (the floor at default threads); without the pause the next
#: case would run beside them and be charged for their CPU time.
IDLE_GAP_S = 0.3


# -- measurement helpers ------------------------------------------------------------------------
def _best_time(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        time.sleep(IDLE_GAP_S)
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _interleaved_best_times(
    cases: dict[str, Callable[[], object]], repeats: int
) -> dict[str, float]:
    """Best time of each case, the cases taking turns so that load spikes hit all."""
    for fn in cases.values():
        fn()  # warm-up
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeats):
        for name, fn in cases.items():
            gc.collect()
            time.sleep(IDLE_GAP_S)
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _peak_mb(fn: Callable[[], object]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


# -- set-up -------------------------------------------------------------------------------------
def _model(population: int, n_draws: int) -> tuple[FittedTwinModel, str]:
    syn = generate_synthetic_twin_data(
        TwinType.HCP,
        n_units=population,
        n_periods=1,
        brands=("Remibrutinib",),
        n_segments=12,
        n_numeric=8,
        n_categorical=2,
        n_intervention_types=3,
        random_seed=SEED,
    )
    posterior = truth_posterior(
        syn.truth, "Remibrutinib", n_draws=n_draws, effect_sd=0.05, random_seed=SEED
    )
    model = FittedTwinModel(
        brand="Remibrutinib",
        twin_type=TwinType.HCP,
        posterior=posterior,
        population=syn.population("Remibrutinib"),
        diagnostics=Diagnostics(1.0, 1000.0, 1000.0, 0, 1.0, True),
        spec_hash="benchmark",
    )
    return model, syn.truth.intervention_types[0]


def _panel_model(model: FittedTwinModel) -> FittedTwinModel:
    """``model`` with unit effects for every population unit and random-walk period effects.

    Each unit's deviation is ``Normal(mean_i, 0.2)`` with ``mean_i ~ Normal(0, 0.5)``;
    the period step sd is 0.05. The simulation then carries every twin's deviation and
    the period shift one period ahead.
    """
    post = model.posterior
    ids = np.array(sorted(model.population["unit_id"].astype(str).unique()), dtype=str)
    rng = np.random.default_rng(SEED)
    units = UnitEffects(
        kind="normal",
        unit_ids=ids,
        mean=rng.normal(0.0, 0.5, ids.size),
        sd=np.full(ids.size, 0.2),
        offset=np.zeros(ids.size),
        scale=np.full(post.n_draws, 0.5),
    )
    panel = dataclasses.replace(post, unit_effects=units, time_scale=np.full(post.n_draws, 0.05))
    return dataclasses.replace(model, posterior=panel)


# -- the competitors ----------------------------------------------------------------------------
def _numpy_floor(
    posterior: TwinPosterior, twins: pd.DataFrame, *, tanh: bool = False
) -> Callable[[], np.ndarray]:
    x, _, _ = posterior.encoder.encode(twins, dtype=np.float32)
    xt = np.ascontiguousarray(x.T)
    beta = np.ascontiguousarray(posterior.beta, dtype=np.float32)
    half_beta = np.ascontiguousarray(0.5 * beta)

    def run() -> np.ndarray:
        eta = beta @ xt  # (draws, twins)
        return inverse_link(posterior.family, eta, out=eta)

    def run_tanh() -> np.ndarray:
        # the logit link as the engine computes it: 1 + tanh(eta / 2) = 2 expit(eta)
        eta = half_beta @ xt
        np.tanh(eta, out=eta)
        eta += 1.0
        return eta

    return run_tanh if tanh else run


def _pymc_predictive(
    posterior: TwinPosterior, twins: pd.DataFrame, intervention_type: str, intensity: float
) -> tuple[Callable[[], np.ndarray], Any]:
    import arviz as az
    import pymc as pm

    enc = posterior.encoder
    k = posterior.type_index(intervention_type)
    x, z, seg = enc.encode(twins)
    n_num = z.shape[1]
    coords = {
        "segment": list(enc.segments),
        "feature": enc.columns,
        "numeric": list(enc.numeric),
        "itype": list(posterior.intervention_types),
        "unit": np.arange(len(twins)),
    }
    with pm.Model(coords=coords) as model:
        x_data = pm.Data("X", x, dims=("unit", "feature"))
        seg_data = pm.Data("seg", seg, dims="unit")
        treated = pm.Data("treated", np.ones(len(twins)), dims="unit")
        intercept = pm.Normal("intercept", 0.0, 1.0, dims="segment")
        beta = pm.Normal("beta", 0.0, 1.0, dims="feature")
        tau = pm.Normal("tau", 0.0, 1.0, dims=("itype", "segment"))
        gamma = pm.Normal("gamma", 0.0, 1.0, dims=("itype", "numeric"))
        rate = pm.HalfNormal("dose_rate", 1.0)
        g = pm.math.expm1(-rate * intensity) / pm.math.expm1(-rate)
        het = tau[k, seg_data] + pm.math.dot(x_data[:, :n_num], gamma[k])
        eta = intercept[seg_data] + pm.math.dot(x_data, beta) + treated * g * het
        mu = pm.Deterministic("mu", pm.math.invlogit(eta), dims="unit")
        pm.Bernoulli("y", p=mu, observed=np.zeros(len(twins), dtype=np.int64), dims="unit")

    def draws(a: np.ndarray) -> np.ndarray:
        return a[None, ...]

    idata = az.from_dict(
        {
            "posterior": {
                "intercept": draws(posterior.intercept),
                "beta": draws(posterior.beta),
                "tau": draws(posterior.tau),
                "gamma": draws(posterior.gamma),
                "dose_rate": draws(posterior.dose_rate),
            }
        },
        dims={
            "intercept": ["segment"],
            "beta": ["feature"],
            "tau": ["itype", "segment"],
            "gamma": ["itype", "numeric"],
        },
        coords={k_: v for k_, v in coords.items() if k_ != "unit"},
    )

    def run() -> np.ndarray:
        out = {}
        with model:
            for arm, flag in (("treated", 1.0), ("control", 0.0)):
                pm.set_data(
                    {"X": x, "seg": seg, "treated": np.full(len(twins), flag)},
                    coords={"unit": np.arange(len(twins))},
                )
                pred = pm.sample_posterior_predictive(
                    idata, var_names=["mu"], predictions=True, progressbar=False, random_seed=0
                )
                out[arm] = pred["predictions"]["mu"].to_numpy()
        return (out["treated"] - out["control"]).mean(axis=-1).ravel()

    return run, model


# -- one size -----------------------------------------------------------------------------------
def _engine(settings: Settings, threads: int | None = None) -> SimulationEngine:
    """An engine with the settings' thresholds and limits."""
    values = {f.name: getattr(settings, f.name) for f in fields(EngineSettings)}
    return SimulationEngine(**values, threads=threads)


def _cases(
    model: FittedTwinModel,
    intervention_type: str,
    twin_count: int,
    settings: Settings,
    twins: pd.DataFrame,
) -> dict[str, Callable[[], object]]:
    """The timed cases, in the report's order; ``engine`` first."""
    from threadpoolctl import threadpool_limits

    posterior = model.posterior

    def same_work(eng: SimulationEngine) -> Callable[[], object]:
        def run() -> object:
            return eng.simulate(
                model,
                intervention_type,
                {"intensity": 1.0},
                twin_count,
                random_seed=SEED,
                dose_grid=(),
            )

        return run

    engine = _engine(settings)

    def engine_full() -> object:
        return engine.simulate(
            model, intervention_type, {"intensity": 1.0}, twin_count, random_seed=SEED
        )

    def kernel_all_distinct() -> object:
        return effect_draws(
            posterior, twins, intervention_type, [1.0], batch_size=settings.batch_size
        )

    floor = _numpy_floor(posterior, twins)

    def floor_one_thread() -> object:
        with threadpool_limits(1, user_api="blas"):
            return floor()

    panel = _panel_model(model)

    def engine_panel() -> object:
        return engine.simulate(
            panel,
            intervention_type,
            {"intensity": 1.0},
            twin_count,
            random_seed=SEED,
            dose_grid=(),
        )

    return {
        "engine": same_work(engine),
        "engine_panel": engine_panel,
        "engine_one_thread": same_work(_engine(settings, threads=1)),
        "engine_full": engine_full,
        "engine_kernel_all_distinct": kernel_all_distinct,
        "numpy_floor_default_threads": floor,
        "numpy_floor_one_thread": floor_one_thread,
        "numpy_floor_tanh_link": _numpy_floor(posterior, twins, tanh=True),
    }


def _time_pymc(
    out: dict[str, Any],
    posterior: TwinPosterior,
    twins: pd.DataFrame,
    intervention_type: str,
    ate_engine: np.ndarray,
    repeats: int,
) -> None:
    """Time PyMC's posterior predictive (first call and best) and compare its ATE draws."""
    pymc_run, _ = _pymc_predictive(posterior, twins, intervention_type, 1.0)
    start = time.perf_counter()
    ate_pymc = pymc_run()
    out["seconds"]["pymc_first_call"] = time.perf_counter() - start
    out["seconds"]["pymc"] = _best_time(pymc_run, max(1, repeats // 2))
    out["peak_mb"]["pymc"] = _peak_mb(pymc_run)
    out["max_abs_ate_difference_engine_vs_pymc"] = float(np.max(np.abs(ate_engine - ate_pymc)))


def _ratios(sec: dict[str, float], with_pymc: bool) -> dict[str, float]:
    floor_s = sec["numpy_floor"]
    ratios = {
        "engine_over_floor": sec["engine"] / floor_s,
        "engine_one_thread_over_floor": sec["engine_one_thread"] / floor_s,
        "engine_full_over_floor": sec["engine_full"] / floor_s,
        "kernel_all_distinct_over_floor": sec["engine_kernel_all_distinct"] / floor_s,
        "engine_over_floor_tanh_link": sec["engine"] / sec["numpy_floor_tanh_link"],
    }
    if with_pymc:
        ratios["pymc_over_engine"] = sec["pymc"] / sec["engine"]
        ratios["pymc_over_engine_panel"] = sec["pymc"] / sec["engine_panel"]
        ratios["pymc_over_engine_one_thread"] = sec["pymc"] / sec["engine_one_thread"]
        ratios["pymc_over_engine_full"] = sec["pymc"] / sec["engine_full"]
        ratios["pymc_over_kernel_all_distinct"] = sec["pymc"] / sec["engine_kernel_all_distinct"]
    return ratios


def _bench_size(
    model: FittedTwinModel,
    intervention_type: str,
    twin_count: int,
    repeats: int,
    with_pymc: bool,
) -> dict[str, Any]:
    settings = load_settings(environ={}, max_twin_count=max(50_000, twin_count))
    posterior = model.posterior
    sample: TwinSample = draw_twins(model.population, twin_count, random_seed=SEED)
    twins = sample.frame(model.population)
    cases = _cases(model, intervention_type, twin_count, settings, twins)
    out: dict[str, Any] = {
        "twins": twin_count,
        "draws": posterior.n_draws,
        "distinct_units": int(sample.unique_rows.size),
        "features": len(posterior.encoder.columns),
        "segments": len(posterior.encoder.segments),
        "seconds": _interleaved_best_times(cases, repeats),
        "peak_mb": {},
    }
    for name, fn in cases.items():
        out["peak_mb"][name] = _peak_mb(fn)
    result = cases["engine"]()
    ate_engine = np.asarray(result.ate_draws)  # type: ignore[attr-defined]
    if with_pymc:
        _time_pymc(out, posterior, twins, intervention_type, ate_engine, repeats)
    sec = out["seconds"]
    sec["numpy_floor"] = min(sec["numpy_floor_default_threads"], sec["numpy_floor_one_thread"])
    out["ratios"] = _ratios(sec, with_pymc)
    out["targets_met"] = {
        "within_2x_of_floor": out["ratios"]["engine_over_floor"] <= TARGET_RATIO_VS_FLOOR,
    }
    if with_pymc:
        out["targets_met"]["at_least_20x_faster_than_pymc"] = (
            out["ratios"]["pymc_over_engine"] >= TARGET_SPEEDUP_VS_PYMC
        )
        out["targets_met"]["panel_at_least_20x_faster_than_pymc"] = (
            out["ratios"]["pymc_over_engine_panel"] >= TARGET_SPEEDUP_VS_PYMC
        )
    return out


# -- report -------------------------------------------------------------------------------------
def _markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        "# Simulation benchmark",
        "",
        f"Population {report['population']} units; bernoulli (hcp) model with "
        f"{report['sizes'][0]['features']} encoded features and "
        f"{report['sizes'][0]['segments']} segments. Times are the best of "
        f"{report['repeats']} runs after a warm-up, the NumPy cases taking turns, each "
        f"run after an idle pause of {IDLE_GAP_S:g} s (PyMC: the best of fewer runs, and "
        "its first call with compilation); peak memory is traced by tracemalloc in a "
        "separate run.",
        "",
        f"Machine: {env['cpu_count']} CPUs, load average {env['load_average']}, "
        f"Python {env['python']}, NumPy {env['numpy']}, PyMC {env.get('pymc', '-')}.",
        "",
        "| twins x draws | distinct units | case | seconds | peak MB |",
        "|---|---|---|---|---|",
    ]
    for size in report["sizes"]:
        label = f"{size['twins']:,} x {size['draws']:,}"
        for name, sec in size["seconds"].items():
            peak = size["peak_mb"].get(name)
            peak_s = f"{peak:.0f}" if peak is not None else "-"
            lines.append(
                f"| {label} | {size['distinct_units']:,} | {name} | {sec:.3f} | {peak_s} |"
            )
    lines += ["", "| twins x draws | ratio | value | target |", "|---|---|---|---|"]
    for size in report["sizes"]:
        label = f"{size['twins']:,} x {size['draws']:,}"
        for name, value in size["ratios"].items():
            target = {
                "engine_over_floor": f"<= {TARGET_RATIO_VS_FLOOR:g}",
                "pymc_over_engine": f">= {TARGET_SPEEDUP_VS_PYMC:g}",
                "pymc_over_engine_panel": f">= {TARGET_SPEEDUP_VS_PYMC:g}",
            }.get(name, "")
            lines.append(f"| {label} | {name} | {value:.2f} | {target} |")
        if "max_abs_ate_difference_engine_vs_pymc" in size:
            lines.append(
                f"| {label} | max abs ATE difference engine vs PyMC | "
                f"{size['max_abs_ate_difference_engine_vs_pymc']:.2e} | |"
            )
    lines += [
        "",
        "`engine` does the work of the PyMC comparison (treated and control expected "
        "outcomes, ATE draws) plus the interval, segments, decision and sample size, "
        "with the vectorised core on one worker thread per CPU; `engine_one_thread` is "
        "the same on the calling thread alone. `engine_panel` is `engine` on the same "
        "posterior with unit effects for every population unit (each twin carries its "
        "unit's deviation) and random-walk period effects (the shift one period ahead); "
        "PyMC's time is that of the model without them. "
        "`engine_full` adds the default dose-response grid. "
        "`engine_kernel_all_distinct` is the vectorised core with every twin treated as "
        "a distinct unit. `numpy_floor` is one float32 product plus the inverse link for "
        "one arm, unchunked (the faster of default BLAS threads and one thread); "
        "`numpy_floor_tanh_link` computes that link as the engine does.",
        "",
    ]
    return "\n".join(lines)


def run(
    out_dir: str | os.PathLike[str] = "reports",
    *,
    sizes: Sequence[tuple[int, int]] = SIZES,
    population: int = POPULATION,
    repeats: int = 15,
    with_pymc: bool = True,
) -> dict[str, Any]:
    """Run the benchmark and write ``bench_simulation.json`` and ``.md`` to ``out_dir``.

    Parameters
    ----------
    out_dir : path-like
        Output folder (created).
    sizes : sequence of (twins, draws)
        Sizes to run.
    population : int
        Units in the population the twins are drawn from.
    repeats : int
        Timed runs per case (the best counts).
    with_pymc : bool
        Include the PyMC comparison (slow: compiles a model per size).

    Returns
    -------
    dict
        The JSON report.
    """
    sizes_out = []
    models: dict[int, tuple[FittedTwinModel, str]] = {}
    for twins, draws in sizes:
        if draws not in models:
            models[draws] = _model(population, draws)
        model, k = models[draws]
        sizes_out.append(_bench_size(model, k, twins, repeats, with_pymc))
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "machine": platform.machine(),
    }
    if with_pymc:
        import pymc as pm

        env["pymc"] = pm.__version__
    report = {
        "benchmark": "simulation",
        "population": population,
        "repeats": repeats,
        "environment": env,
        "targets": {
            "pymc_over_engine_at_least": TARGET_SPEEDUP_VS_PYMC,
            "engine_over_floor_at_most": TARGET_RATIO_VS_FLOOR,
        },
        "sizes": sizes_out,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_simulation.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench_simulation.md").write_text(_markdown(report))
    return report


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports", help="output folder (default reports/)")
    parser.add_argument("--population", type=int, default=POPULATION)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-pymc", action="store_true", help="skip the PyMC comparison")
    parser.add_argument(
        "--sizes",
        default=",".join(f"{t}x{d}" for t, d in SIZES),
        help="comma-separated TWINSxDRAWS (default 10000x1000,50000x1000)",
    )
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    report = run(
        args.out,
        sizes=[(t, d) for t, d in sizes],
        population=args.population,
        repeats=args.repeats,
        with_pymc=not args.no_pymc,
    )
    print(_markdown(report))


if __name__ == "__main__":
    main()
