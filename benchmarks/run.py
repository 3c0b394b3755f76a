"""Run every benchmark and gather the figures into one report.

``nox -s benchmark`` calls :func:`main`; it writes ``fit.json``/``fit.md`` (the fit
benchmark), ``bench_simulation.json``/``.md`` (the simulation benchmark) and
``jax.json``/``.md`` (the panel model on JAX where a GPU is present,
:mod:`benchmarks.bench_jax`; on a CPU-only machine it records why it was skipped) and
``summary.md`` (all of them, side by side) under the output folder. ``--growth`` adds the
growth benchmark (:mod:`benchmarks.bench_growth`: the default fit at 10k to 5M rows,
``growth/growth.{json,md,png}``); it takes long, so it is off by default
(``--growth-rows`` picks the sizes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import bench_fit, bench_growth, bench_jax, bench_simulation


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: ``python -m benchmarks.run --out reports/benchmark``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/benchmark")
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--skip-simulation", action="store_true")
    parser.add_argument("--skip-jax", action="store_true", help="skip the accelerator case")
    parser.add_argument(
        "--growth", action="store_true", help="also run the growth benchmark (long)"
    )
    parser.add_argument(
        "--growth-rows",
        default=",".join(str(n) for n in bench_growth.DEFAULT_ROWS),
        help="sizes of the growth benchmark, comma-separated",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = ["# bayestwin benchmarks", ""]
    if not args.skip_fit:
        fit = bench_fit.run(out)
        parts.append(bench_fit.to_markdown(fit))
    if not args.skip_simulation:
        bench_simulation.run(out)
        parts.append((out / "bench_simulation.md").read_text())
    if not args.skip_jax:
        parts.append(bench_jax.to_markdown(bench_jax.run(out)))
    if args.growth:
        rows = [int(v) for v in args.growth_rows.split(",") if v.strip()]
        parts.append(bench_growth.to_markdown(bench_growth.run(out / "growth", rows)))
    (out / "summary.md").write_text("\n".join(parts))
    print("\n".join(parts))


if __name__ == "__main__":
    main()
