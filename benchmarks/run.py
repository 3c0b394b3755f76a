"""Run every benchmark and gather the figures into one report.

``nox -s benchmark`` calls :func:`main`; it writes ``fit.json``/``fit.md`` (the fit
benchmark), ``bench_simulation.json``/``.md`` (the simulation benchmark) and
``summary.md`` (both, side by side) under the output folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import bench_fit, bench_simulation


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: ``python -m benchmarks.run --out reports/benchmark``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/benchmark")
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--skip-simulation", action="store_true")
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
    (out / "summary.md").write_text("\n".join(parts))
    print("\n".join(parts))


if __name__ == "__main__":
    main()
