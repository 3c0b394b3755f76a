"""Fit benchmark: bayestwin's default fit against the same model written plainly.

The reference workload is a synthetic HCP history of 20,000 rows (2,000 units x 10
periods), 10 segments, 3 intervention types and 8 covariates (6 numeric features and a
3-level categorical), with a bernoulli outcome. Every contender fits the *same*
hierarchical model with 4 chains x 1,000 tuning + 1,000 draws on 2 cores:

* ``bayestwin``: the default fit (rows collapsed into binomial counts, nutpie);
* ``plain_pymc``: one likelihood term per row, ``pm.sample(nuts_sampler="pymc")``;
* ``plain_nutpie``: one likelihood term per row, ``pm.sample(nuts_sampler="nutpie")``
  (PyMC 6's default NUTS when nutpie is installed);
* ``plain_pymc_non_centred``: as ``plain_pymc``, with every level of every hierarchy
  non-centred, the textbook parameterisation a PyMC user would write. The other plain
  cases share bayestwin's data-driven choice of which levels to centre, so they
  measure only what collapsing and calling nutpie directly buy; this one adds what the
  choice of parameterisation buys.

A scale run fits bayestwin's default on a 100,000-row panel (10,000 units x 10 periods).

The panel cases fit a Poisson (patient) history with persistent unit differences (ICC
0.3 on the log scale) and campaigns that start mid-history, at 20,000 rows (2,000 units
x 10 periods) and 1,000,000 rows (100,000 units x 10 periods):

* ``panel_poisson``: the default fit, each unit's gamma effect integrated out of the
  collapsed likelihood (no unit parameter is sampled);
* ``panel_poisson_plain``: the same model written plainly, one likelihood term per row
  with sampled non-centred unit effects, nutpie through ``pm.sample``;
* ``panel_poisson_1m``: the default fit at 1,000,000 rows, 2 chains x 600 tune + 900
  draws (one chain per core: the budget of five minutes on two cores).
Each fit runs in its own process, so wall time includes compilation and peak memory is
that process's own (resident set, including sampler worker processes). CPU time (user +
system, sampler threads included) is recorded beside the wall time: on a machine shared
with other work it is the fairer measure of what a fit costs.

Run ``python -m benchmarks.bench_fit --out reports/benchmark``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CASES: dict[str, dict[str, Any]] = {
    "bayestwin": {"units": 2000, "periods": 10, "mode": "bayestwin"},
    "plain_pymc": {"units": 2000, "periods": 10, "mode": "plain", "sampler": "pymc"},
    "plain_nutpie": {"units": 2000, "periods": 10, "mode": "plain", "sampler": "nutpie"},
    "plain_pymc_non_centred": {
        "units": 2000,
        "periods": 10,
        "mode": "plain",
        "sampler": "pymc",
        "parameterization": "non_centred",
    },
    "bayestwin_100k": {"units": 10000, "periods": 10, "mode": "bayestwin"},
    "panel_poisson": {"units": 2000, "periods": 10, "mode": "bayestwin", "panel": True},
    "panel_poisson_plain": {
        "units": 2000,
        "periods": 10,
        "mode": "plain",
        "sampler": "nutpie",
        "panel": True,
    },
    "panel_poisson_1m": {
        "units": 100_000,
        "periods": 10,
        "mode": "bayestwin",
        "panel": True,
        "sampling": {"chains": 2, "tune": 600, "draws": 900},
    },
}
#: The cases a plain ``run`` skips unless named: the 1M-row fit takes minutes.
LONG_CASES = ("panel_poisson_1m",)


def reference_data(units: int, periods: int, seed: int = 11, panel: bool = False) -> Any:
    """The reference workload's synthetic history (``panel``: the panel cases' one)."""
    from bayestwin.synthetic import generate_synthetic_twin_data

    if panel:
        return generate_synthetic_twin_data(
            "patient",
            n_units=units,
            n_periods=periods,
            brands=("Kisqali",),
            n_segments=10,
            n_numeric=6,
            n_categorical=1,
            n_intervention_types=3,
            family="poisson",
            unit_icc=0.3,
            adoption="staggered",
            random_seed=seed,
        )
    return generate_synthetic_twin_data(
        "hcp",
        n_units=units,
        n_periods=periods,
        brands=("Kisqali",),
        n_segments=10,
        n_numeric=6,
        n_categorical=1,
        n_intervention_types=3,
        random_seed=seed,
    )


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_case(name: str) -> dict[str, Any]:
    """Fit one case in this process and return its measurements."""
    import numpy as np

    from bayestwin.model.diagnostics import compute_diagnostics
    from bayestwin.model.fit import TwinGenerator
    from bayestwin.model.spec import DiagnosticThresholds, SamplerSettings, default_spec

    case = CASES[name]
    panel = bool(case.get("panel"))
    data = reference_data(case["units"], case["periods"], panel=panel)
    sampler = SamplerSettings(cores=2, progressbar=False, random_seed=1, **case.get("sampling", {}))
    extra: dict[str, Any] = {}
    if panel and case["mode"] == "plain":
        extra["unit_likelihood"] = "sampled"
    spec = default_spec(
        "patient" if panel else "hcp",
        "Kisqali",
        family="poisson" if panel else "bernoulli",
        **extra,
        numeric_features=data.numeric_features,
        categorical_features=data.categorical_features,
        sampler=sampler,
        collapse=case["mode"] == "bayestwin",
        intercept_parameterization=case.get("parameterization", "auto"),
        effect_parameterization=case.get("parameterization", "auto"),
    )
    t0, cpu0 = time.perf_counter(), _cpu_s()
    if case["mode"] == "bayestwin":
        model = TwinGenerator(spec).fit(data.data, keep_trace=False)
        wall = time.perf_counter() - t0
        diag = model.diagnostics
        rows = model.provenance["n_likelihood_rows"]
    else:
        import pymc as pm

        pm_model = TwinGenerator(spec).build_model(data.data)
        with pm_model:
            trace = pm.sample(
                draws=1000,
                tune=1000,
                chains=4,
                cores=2,
                random_seed=1,
                progressbar=False,
                nuts_sampler=case["sampler"],
                compute_convergence_checks=False,
            )
        wall = time.perf_counter() - t0
        diag = compute_diagnostics(trace, DiagnosticThresholds())
        rows = len(data.data)
    return {
        "case": name,
        "rows": int(len(data.data)),
        "likelihood_rows": int(rows),
        "wall_s": wall,
        "cpu_s": _cpu_s() - cpu0,
        "min_ess_bulk": diag.min_ess_bulk,
        "min_ess_tail": diag.min_ess_tail,
        "min_ess_bulk_per_s": diag.min_ess_bulk / wall,
        "min_ess_bulk_per_cpu_s": diag.min_ess_bulk / max(_cpu_s() - cpu0, 1e-9),
        "max_r_hat": diag.max_r_hat,
        "divergences": diag.divergences,
        "min_bfmi": diag.min_bfmi,
        "passed": bool(diag.passed),
        "peak_rss_mb": _peak_rss_mb(),
        "numpy": np.__version__,
    }


def _run_in_subprocess(name: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_fit", "--case", name],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(out_dir: str | Path, cases: list[str] | None = None) -> dict[str, Any]:
    """Run every case (each in a fresh process) and write JSON and markdown reports.

    Parameters
    ----------
    out_dir : path-like
        Directory for ``fit.json`` and ``fit.md``.
    cases : list of str, optional
        Subset of :data:`CASES` (default: all).

    Returns
    -------
    dict
        The report.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in cases or [c for c in CASES if c not in LONG_CASES]:
        print(f"[bench_fit] {name} ...", file=sys.stderr, flush=True)
        results[name] = _run_in_subprocess(name)
        print(f"[bench_fit] {name}: {results[name]['wall_s']:.1f} s", file=sys.stderr)
    report: dict[str, Any] = {"results": results, "ratios": {}, "checks": {}}
    ours = results.get("bayestwin")
    for other in ("plain_pymc", "plain_nutpie", "plain_pymc_non_centred"):
        if ours and other in results:
            report["ratios"][f"ess_per_s_vs_{other}"] = (
                ours["min_ess_bulk_per_s"] / results[other]["min_ess_bulk_per_s"]
            )
    if ours and "plain_pymc" in results:
        report["checks"]["ess_per_s_at_least_5x_plain_pymc"] = (
            report["ratios"]["ess_per_s_vs_plain_pymc"] >= 5.0
        )
    panel, plain = results.get("panel_poisson"), results.get("panel_poisson_plain")
    if panel and plain:
        ratio = panel["min_ess_bulk_per_s"] / plain["min_ess_bulk_per_s"]
        report["ratios"]["panel_ess_per_s_vs_plain_nutpie"] = ratio
        if "min_ess_bulk_per_cpu_s" in panel and "min_ess_bulk_per_cpu_s" in plain:
            report["ratios"]["panel_ess_per_cpu_s_vs_plain_nutpie"] = (
                panel["min_ess_bulk_per_cpu_s"] / plain["min_ess_bulk_per_cpu_s"]
            )
        report["checks"]["panel_ess_per_s_at_least_5x_plain_nutpie"] = ratio >= 5.0
    million = results.get("panel_poisson_1m")
    if million:
        report["checks"]["panel_1m_passes_gate_within_5_min"] = bool(
            million["passed"] and million["wall_s"] <= 300.0
        )
    if ours:
        report["checks"]["r_hat_le_1.01"] = ours["max_r_hat"] <= 1.01
        report["checks"]["zero_divergences"] = ours["divergences"] == 0
    big = results.get("bayestwin_100k")
    if big and "plain_pymc" in results:
        report["checks"]["100k_faster_than_plain_pymc_20k"] = (
            big["wall_s"] < results["plain_pymc"]["wall_s"]
        )
    (out / "fit.json").write_text(json.dumps(report, indent=2))
    (out / "fit.md").write_text(to_markdown(report))
    return report


def to_markdown(report: dict[str, Any]) -> str:
    """Render the fit report as a markdown table."""
    lines = [
        "# Fit benchmark",
        "",
        "Hierarchical bernoulli twin model (panel cases: poisson with unit effects); "
        "4 chains x 1,000 tune + 1,000 draws, 2 cores.",
        "Wall time includes compilation. ESS/s is the minimum bulk ESS over wall time.",
        "",
        "| case | rows | likelihood rows | wall (s) | CPU (s) | min ESS bulk | ESS/s "
        "| max r_hat | divergences | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"].values():
        cpu = f"{r['cpu_s']:.0f}" if "cpu_s" in r else "-"
        lines.append(
            f"| {r['case']} | {r['rows']:,} | {r['likelihood_rows']:,} | {r['wall_s']:.1f} "
            f"| {cpu} | {r['min_ess_bulk']:.0f} | {r['min_ess_bulk_per_s']:.2f} "
            f"| {r['max_r_hat']:.4f} | {r['divergences']} | {r['peak_rss_mb']:.0f} |"
        )
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report["ratios"].items()]
    lines += ["", "| check | holds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["checks"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/benchmark")
    parser.add_argument("--case", choices=list(CASES), help="run one case here, print JSON")
    parser.add_argument("--cases", nargs="*", choices=list(CASES))
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case)))
        return
    report = run(args.out, args.cases)
    print(to_markdown(report))


if __name__ == "__main__":
    main()
