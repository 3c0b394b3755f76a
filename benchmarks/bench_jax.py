"""Accelerator benchmark: the panel model on JAX (numpyro) where a GPU is present.

The case ``panel_poisson_jax`` fits the panel benchmark's poisson history (unit effects
integrated out, random-walk period effects, the Mundlak term; see
:mod:`benchmarks.bench_fit`) with ``backend="numpyro"``, which compiles the same PyMC
model to JAX and runs numpyro's NUTS on the accelerator, its chains vectorised on the
device. Beside it, at the same size and seed, the default nutpie fit on the CPU. It
runs only when JAX sees a GPU: on a CPU-only machine the report says it was skipped and
why, and nothing is fitted (JAX on a CPU is no competitor to nutpie's compiled numba
model, and the figure would mislead).

Run ``python -m benchmarks.bench_jax --out reports/benchmark`` (``--units`` and
``--periods`` pick the size, default 100,000 x 10 = 1M rows); writes ``jax.json`` and
``jax.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

#: The sizes of the accelerator case: the 1M-row panel of the fit benchmark.
DEFAULT_UNITS = 100_000
DEFAULT_PERIODS = 10


def accelerator() -> tuple[str | None, str]:
    """The GPU JAX would run on, and why not when there is none.

    Returns
    -------
    device : str or None
        The device's description (``None`` without a GPU).
    reason : str
        Why the case is skipped (empty when it runs).
    """
    try:
        import jax
    except ImportError:
        return None, "jax is not installed (the [jax] extra)"
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if not gpus:
        platforms = sorted({d.platform for d in jax.devices()})
        return None, f"no GPU visible to JAX (devices: {', '.join(platforms)})"
    return str(gpus[0].device_kind), ""


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _fit(data: Any, backend: str, chains: int) -> dict[str, Any]:
    """Fit the panel history with one backend; the measurements of the fit."""
    from bayestwin.model.fit import TwinGenerator
    from bayestwin.model.spec import SamplerSettings, default_spec

    spec = default_spec(
        "patient",
        "Kisqali",
        family="poisson",
        numeric_features=data.numeric_features,
        categorical_features=data.categorical_features,
        sampler=SamplerSettings(
            chains=chains, cores=chains, backend=backend, progressbar=False, random_seed=1
        ),
    )
    t0 = time.perf_counter()
    model = TwinGenerator(spec).fit(data.data, keep_trace=False, override_diagnostics=True)
    wall = time.perf_counter() - t0
    diag = model.diagnostics
    return {
        "backend": backend,
        "wall_s": wall,
        "min_ess_bulk": diag.min_ess_bulk,
        "min_ess_bulk_per_s": diag.min_ess_bulk / wall,
        "max_r_hat": diag.max_r_hat,
        "divergences": diag.divergences,
        "passed": bool(diag.passed),
        "peak_rss_mb": _peak_rss_mb(),
        "mean_effect_by_type": [float(v) for v in model.posterior.tau.mean(axis=(0, 2))],
    }


def run(
    out_dir: str | Path,
    units: int = DEFAULT_UNITS,
    periods: int = DEFAULT_PERIODS,
    chains: int = 4,
) -> dict[str, Any]:
    """Run the accelerator case (or record why it is skipped) and write the reports.

    Parameters
    ----------
    out_dir : path-like
        Directory for ``jax.json`` and ``jax.md``.
    units, periods : int
        Size of the panel history.
    chains : int
        Chains of each fit.

    Returns
    -------
    dict
        The report: ``device``, ``skipped`` (the reason, or None) and ``results``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device, reason = accelerator()
    report: dict[str, Any] = {
        "case": "panel_poisson_jax",
        "rows": units * periods,
        "device": device,
        "skipped": reason or None,
        "results": {},
        "ratios": {},
    }
    if device is not None:
        from benchmarks.bench_fit import reference_data

        data = reference_data(units, periods, panel=True)
        for backend in ("numpyro", "nutpie"):
            report["results"][backend] = _fit(data, backend, chains)
        gpu, cpu = report["results"]["numpyro"], report["results"]["nutpie"]
        report["ratios"]["ess_per_s_numpyro_gpu_vs_nutpie_cpu"] = (
            gpu["min_ess_bulk_per_s"] / cpu["min_ess_bulk_per_s"]
        )
        report["ratios"]["wall_nutpie_cpu_over_numpyro_gpu"] = cpu["wall_s"] / gpu["wall_s"]
    (out / "jax.json").write_text(json.dumps(report, indent=2))
    (out / "jax.md").write_text(to_markdown(report))
    return report


def to_markdown(report: dict[str, Any]) -> str:
    """Render the accelerator report as markdown."""
    lines = ["# Accelerator benchmark (JAX / numpyro)", ""]
    if report["skipped"]:
        lines.append(f"`{report['case']}` ({report['rows']:,} rows) skipped: {report['skipped']}.")
        return "\n".join(lines) + "\n"
    lines += [
        f"`{report['case']}`: {report['rows']:,} rows on {report['device']}; "
        "nutpie on the CPU beside it, same history and seed.",
        "",
        "| backend | wall (s) | min ESS bulk | ESS/s | max r_hat | divergences | gate "
        "| peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"].values():
        lines.append(
            f"| {r['backend']} | {r['wall_s']:.1f} | {r['min_ess_bulk']:.0f} "
            f"| {r['min_ess_bulk_per_s']:.2f} | {r['max_r_hat']:.4f} | {r['divergences']} "
            f"| {'passed' if r['passed'] else 'failed'} | {r['peak_rss_mb']:.0f} |"
        )
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report["ratios"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/benchmark")
    parser.add_argument("--units", type=int, default=DEFAULT_UNITS)
    parser.add_argument("--periods", type=int, default=DEFAULT_PERIODS)
    parser.add_argument("--chains", type=int, default=4)
    args = parser.parse_args(argv)
    report = run(args.out, args.units, args.periods, args.chains)
    print(to_markdown(report))


if __name__ == "__main__":
    main()
