"""Growth benchmark: what the default fit costs as the history grows, up to 5M rows.

Each size is a synthetic HCP panel of ``rows / periods`` units x ``--periods`` periods
(default 50: the 100,000 HCPs x 52 weeks of a real platform is about 5M rows), one
brand, 5 segments, 3 intervention types, 4 numeric features and a categorical one,
with a bernoulli outcome. The history is written to parquet once (cached under
``--data``); the fit then, in a process of its own,

1. reads the parquet by columns: only the columns the spec needs
   (:func:`bayestwin.service.histories.read_history`);
2. fits the default model with :class:`bayestwin.model.fit.TwinGenerator`, which
   collapses the rows to one likelihood row per distinct design (its sufficient
   statistics) before the sampler sees them.

Wall time (the read, the whole fit and the sampling alone), the number of distinct
designs the sampler saw and the process's peak resident memory
(``resource.getrusage``) are recorded per size. The report (``growth.json``,
``growth.md``, ``growth.png``) fits a power law ``cost ~ size^k`` by least squares on
log-log axes, of the fit's wall time and the peak memory against rows and against
distinct designs, and states ``k``.

``--bins K`` cuts every numeric feature into ``K`` quantile bins (each value becomes
its bin's median), so that the number of distinct designs saturates while rows grow:
that series separates what rows cost from what designs cost.

``--panel-terms off`` fits the model without its panel terms (no unit or period
effects: ``unit_effects`` and ``time_effects`` off), whose likelihood rows are the
distinct designs of the history's covariates and treatment; ``default`` (the default)
fits the spec's defaults, where a panel history keeps one likelihood row per unit and
period.

Run ``python -m benchmarks.bench_growth --out reports/benchmark/growth`` (sizes with
``--rows 10000,100000,1000000,5000000``), or ``python -m benchmarks.run --growth``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_ROWS = (10_000, 100_000, 1_000_000, 5_000_000)
DEFAULT_PERIODS = 50
SEED = 5


def _peak_rss_mb() -> float:
    """The peak resident set of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def data_path(data: Path, rows: int, periods: int, bins: int | None) -> Path:
    """Where the history of one size is cached."""
    tag = f"-bins{bins}" if bins else ""
    return data / f"growth-{rows}-p{periods}{tag}.parquet"


def make_history(rows: int, periods: int, bins: int | None, path: Path) -> dict[str, Any]:
    """Draw one size's history and write it to parquet (run in a process of its own)."""
    import numpy as np

    from bayestwin.synthetic import generate_synthetic_twin_data

    t0 = time.perf_counter()
    units = max(1, rows // periods)
    sd = generate_synthetic_twin_data(
        "hcp",
        n_units=units,
        n_periods=periods,
        brands=("Growth",),
        n_segments=5,
        n_numeric=4,
        n_categorical=1,
        n_intervention_types=3,
        random_seed=SEED,
    )
    frame = sd.data
    if bins:
        for name in sd.numeric_features:
            codes = np.searchsorted(
                np.quantile(frame[name], np.linspace(0, 1, bins + 1)[1:-1]), frame[name]
            )
            medians = frame[name].groupby(codes).median()
            frame[name] = medians.to_numpy()[codes]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return {
        "rows": len(frame),
        "units": units,
        "numeric_features": list(sd.numeric_features),
        "categorical_features": list(sd.categorical_features),
        "make_seconds": time.perf_counter() - t0,
        "file_mb": path.stat().st_size / 1e6,
    }


def panel_options(panel_terms: str) -> dict[str, str]:
    """The spec fields that turn the panel terms off (``"off"``), or none (``"default"``)."""
    from bayestwin.model.spec import TwinModelSpec

    if panel_terms == "default":
        return {}
    fields = ("unit_effects", "time_effects")
    return {name: "off" for name in fields if name in TwinModelSpec.model_fields}


def fit_history(
    path: Path,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    draws: int,
    tune: int,
    chains: int,
    cores: int,
    panel_terms: str = "default",
) -> dict[str, Any]:
    """Read one size's parquet by columns and fit the default model (own process)."""
    from bayestwin.model.fit import TwinGenerator
    from bayestwin.model.spec import SamplerSettings, default_spec
    from bayestwin.service.histories import read_history

    spec = default_spec(
        "hcp",
        "Growth",
        family="bernoulli",
        numeric_features=numeric,
        categorical_features=categorical,
        sampler=SamplerSettings(
            draws=draws, tune=tune, chains=chains, cores=cores, progressbar=False, random_seed=0
        ),
        **panel_options(panel_terms),
    )
    rss_start = _peak_rss_mb()
    t0 = time.perf_counter()
    history = read_history(path, spec)
    read_seconds = time.perf_counter() - t0
    read_mb = float(history.memory_usage(deep=True).sum()) / 1e6
    rss_read = _peak_rss_mb()
    t1 = time.perf_counter()
    model = TwinGenerator(spec).fit(history, keep_trace=False, override_diagnostics=True)
    fit_seconds = time.perf_counter() - t1
    prov = model.provenance
    diag = model.diagnostics
    return {
        "rows": int(prov["n_rows"]),
        "designs": int(prov["n_likelihood_rows"]),
        "columns_read": len(history.columns),
        "frame_mb": read_mb,
        "read_seconds": read_seconds,
        "fit_seconds": fit_seconds,
        "sampling_seconds": float(prov["fit_seconds"]),
        "wall_seconds": read_seconds + fit_seconds,
        "rss_start_mb": rss_start,
        "rss_after_read_mb": rss_read,
        "peak_rss_mb": _peak_rss_mb(),
        "max_r_hat": diag.max_r_hat,
        "min_ess_bulk": diag.min_ess_bulk,
        "divergences": diag.divergences,
        "draws": draws,
        "tune": tune,
        "chains": chains,
        "cores": cores,
        "panel_terms": panel_terms,
        "spec_options": panel_options(panel_terms),
    }


def _run_child(args: list[str], timeout: float | None) -> dict[str, Any]:
    """Run this module with ``args`` in a fresh process; its last stdout line is JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_growth", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def exponent(x: Sequence[float], y: Sequence[float]) -> float | None:
    """The least-squares slope of ``log y`` on ``log x`` (None with fewer than 2 points)."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(x, y, strict=True) if a > 0 and b > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def run(
    out: Path,
    rows: Sequence[int] = DEFAULT_ROWS,
    *,
    periods: int = DEFAULT_PERIODS,
    bins: int | None = None,
    draws: int = 300,
    tune: int = 300,
    chains: int = 2,
    cores: int = 1,
    panel_terms: str = "default",
    data: Path | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Measure every size (each in its own processes) and write the report under ``out``.

    Parameters
    ----------
    out : Path
        Report folder (``growth.json``, ``growth.md``, ``growth.png``).
    rows : sequence of int
        History sizes.
    periods : int
        Periods per unit (units = rows / periods).
    bins : int, optional
        Quantile bins of every numeric feature (None: continuous features).
    draws, tune, chains, cores : int
        NUTS settings of every fit.
    panel_terms : {"default", "off"}
        Fit the spec's defaults, or the model without unit and period effects.
    data : Path, optional
        Where the parquet histories are cached (default ``out / "data"``).
    timeout : float, optional
        Seconds allowed to each fit.

    Returns
    -------
    dict
        The settings, one record per size and the fitted exponents.
    """
    out.mkdir(parents=True, exist_ok=True)
    data = data if data is not None else out / "data"
    results: list[dict[str, Any]] = []
    unfinished: list[dict[str, Any]] = []
    facts: dict[str, Any] = {
        "periods": periods,
        "bins": bins,
        "panel": panel_terms,
        "previous": _read_json(out / "growth.json"),
    }
    for n in rows:
        path = data_path(data, n, periods, bins)
        meta_path = path.with_suffix(".json")
        if not path.exists() or not meta_path.exists():
            made = _run_child(
                ["--make", str(n), "--periods", str(periods), *_bins(bins), "--data", str(data)],
                None,
            )
            meta_path.write_text(json.dumps(made))
        made = json.loads(meta_path.read_text())
        print(f"growth: {n:>9,} rows: fitting ...", flush=True)
        try:
            fit = _fit_child(path, made, draws, tune, chains, cores, panel_terms, timeout)
        except subprocess.TimeoutExpired:
            print(f"growth: {n:,} rows did not finish within {timeout} s; stopping", flush=True)
            unfinished.append({"rows": n, "timeout_seconds": timeout})
            write_report(_report(results, unfinished=unfinished, **facts), out)
            break
        record = {"requested_rows": n, "periods": periods, "bins": bins, **made, **fit}
        results.append(record)
        print(
            f"growth: {record['rows']:>9,} rows, {record['designs']:>8,} designs: "
            f"wall {record['wall_seconds']:7.1f} s (sampling {record['sampling_seconds']:6.1f} s), "
            f"peak RSS {record['peak_rss_mb']:7.0f} MB",
            flush=True,
        )
        write_report(_report(results, unfinished=unfinished, **facts), out)
    return _report(results, unfinished=unfinished, **facts)


def _fit_child(
    path: Path,
    made: dict[str, Any],
    draws: int,
    tune: int,
    chains: int,
    cores: int,
    panel_terms: str,
    timeout: float | None,
) -> dict[str, Any]:
    """Fit one size in a fresh process (so that its peak memory is its own)."""
    return _run_child(
        [
            "--fit",
            str(path),
            "--numeric",
            ",".join(made["numeric_features"]),
            "--categorical",
            ",".join(made["categorical_features"]),
            "--draws",
            str(draws),
            "--tune",
            str(tune),
            "--chains",
            str(chains),
            "--cores",
            str(cores),
            "--panel-terms",
            panel_terms,
        ],
        timeout,
    )


def _bins(bins: int | None) -> list[str]:
    return ["--bins", str(bins)] if bins else []


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded


def _report(
    results: list[dict[str, Any]],
    *,
    unfinished: list[dict[str, Any]],
    periods: int,
    bins: int | None,
    panel: str,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """The records and exponents of this series, with the other series already written."""
    rows = [r["rows"] for r in results]
    designs = [r["designs"] for r in results]
    wall = [r["fit_seconds"] for r in results]
    sampling = [r["sampling_seconds"] for r in results]
    rss = [r["peak_rss_mb"] for r in results]
    name = (f"bins{bins}" if bins else "continuous") + ("" if panel == "default" else "-pooled")
    series = {
        "name": name,
        "periods": periods,
        "bins": bins,
        "panel_terms": panel,
        "records": results,
        "unfinished": unfinished,
        "exponents": {
            "fit_seconds_vs_rows": exponent(rows, wall),
            "fit_seconds_vs_designs": exponent(designs, wall),
            "sampling_seconds_vs_designs": exponent(designs, sampling),
            "peak_rss_vs_rows": exponent(rows, rss),
        },
        # the slope between each size and the next: the fixed costs (compiling) flatten
        # the fit over all sizes, these show how the cost grows where it is large
        "local_exponents": {
            "fit_seconds_vs_designs": [
                exponent(designs[i : i + 2], wall[i : i + 2]) for i in range(len(results) - 1)
            ],
            "peak_rss_vs_rows": [
                exponent(rows[i : i + 2], rss[i : i + 2]) for i in range(len(results) - 1)
            ],
        },
    }
    others = [s for s in (previous or {}).get("series", []) if s.get("name") != name]
    return {
        "benchmark": "growth",
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
        "series": [*others, series],
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def to_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: one table per series, with the fitted exponents."""
    lines = ["## Growth: the default fit against the history's size", ""]
    for series in report["series"]:
        records = series["records"]
        if not records:
            continue
        first = records[0]
        bins = f", numeric features in {series['bins']} quantile bins" if series["bins"] else ""
        if series.get("panel_terms", "default") != "default":
            bins += ", without the panel terms (no unit or period effects)"
        lines += [
            f"### Series `{series['name']}`: {series['periods']} periods per unit{bins}",
            "",
            f"{first['chains']} chains x {first['tune']} tuning + {first['draws']} draws, "
            f"{first['cores']} core(s); the parquet read by columns "
            f"({first['columns_read']} columns); fit = check, collapse, compile, sample "
            "and diagnostics; NUTS = compile and sample; each size in a fresh process.",
            "",
            "| rows | units | distinct designs | read s | fit s | NUTS s | peak RSS MB | "
            "max r_hat | min ESS bulk |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in records:
            lines.append(
                f"| {r['rows']:,} | {r['units']:,} | {r['designs']:,} | {r['read_seconds']:.1f} "
                f"| {r['fit_seconds']:.1f} | {r['sampling_seconds']:.1f} | "
                f"{r['peak_rss_mb']:.0f} | {r['max_r_hat']:.3f} | {r['min_ess_bulk']:.0f} |"
            )
        e = series["exponents"]
        lines += [
            "",
            "Fitted exponents `k` of `cost ~ size^k` (least squares on log-log axes):",
            "",
            f"* fit wall time vs rows: **{_fmt(e['fit_seconds_vs_rows'])}**",
            f"* fit wall time vs distinct designs: **{_fmt(e['fit_seconds_vs_designs'])}**",
            f"* sampling time vs distinct designs: **{_fmt(e['sampling_seconds_vs_designs'])}**",
            f"* peak memory vs rows: **{_fmt(e['peak_rss_vs_rows'])}**",
            "",
        ]
        local = series.get("local_exponents", {})
        if local.get("fit_seconds_vs_designs"):
            pairs = zip(records[:-1], records[1:], strict=True)
            sizes = [f"{a['rows']:,} to {b['rows']:,}" for a, b in pairs]
            steps = zip(
                sizes, local["fit_seconds_vs_designs"], local["peak_rss_vs_rows"], strict=True
            )
            lines += [
                "Between consecutive sizes (fixed costs such as compiling weigh less there):",
                "",
                "| rows | fit time vs designs | peak memory vs rows |",
                "|---|---:|---:|",
                *(f"| {size} | {_fmt(t)} | {_fmt(m)} |" for size, t, m in steps),
                "",
            ]
        for u in series.get("unfinished", []):
            lines += [
                f"Not measured: {u['rows']:,} rows did not finish within {u['timeout_seconds']} s.",
                "",
            ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> Path | None:
    """Log-log plots of wall time and peak memory against rows and designs (matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for series in report["series"]:
        records = series["records"]
        if not records:
            continue
        label = series["name"]
        rows = [r["rows"] for r in records]
        designs = [r["designs"] for r in records]
        e = series["exponents"]
        axes[0].loglog(
            rows,
            [r["fit_seconds"] for r in records],
            "o-",
            label=f"{label} (k={_fmt(e['fit_seconds_vs_rows'])})",
        )
        axes[1].loglog(
            designs,
            [r["fit_seconds"] for r in records],
            "o-",
            label=f"{label} (k={_fmt(e['fit_seconds_vs_designs'])})",
        )
        axes[2].loglog(
            rows,
            [r["peak_rss_mb"] for r in records],
            "o-",
            label=f"{label} (k={_fmt(e['peak_rss_vs_rows'])})",
        )
    titles = (
        ("rows", "fit wall time (s)"),
        ("distinct designs", "fit wall time (s)"),
        ("rows", "peak resident memory (MB)"),
    )
    for ax, (xlabel, ylabel) in zip(axes, titles, strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("bayestwin default fit: cost against the history's size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``growth.json``, ``growth.md`` and ``growth.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "growth.json", "md": out / "growth.md"}
    files["json"].write_text(json.dumps(report, indent=2))
    files["md"].write_text(to_markdown(report))
    png = plot(report, out / "growth.png")
    if png is not None:
        files["png"] = png
    return files


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_growth", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", default="reports/benchmark/growth", help="report folder")
    p.add_argument(
        "--rows",
        default=",".join(str(n) for n in DEFAULT_ROWS),
        help="history sizes, comma-separated",
    )
    p.add_argument("--periods", type=int, default=DEFAULT_PERIODS, help="periods per unit")
    p.add_argument("--bins", type=int, default=None, help="quantile bins of numeric features")
    p.add_argument("--draws", type=int, default=300)
    p.add_argument("--tune", type=int, default=300)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--cores", type=int, default=1)
    p.add_argument(
        "--panel-terms",
        choices=("default", "off"),
        default="default",
        help="off: fit without unit and period effects",
    )
    p.add_argument("--data", default=None, help="parquet cache (default OUT/data)")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed to each fit")
    # the child processes
    p.add_argument("--make", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--fit", default=None, help=argparse.SUPPRESS)
    p.add_argument("--numeric", default="", help=argparse.SUPPRESS)
    p.add_argument("--categorical", default="", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    if args.make is not None:
        path = data_path(data, args.make, args.periods, args.bins)
        print(json.dumps(make_history(args.make, args.periods, args.bins, path)))
        return 0
    if args.fit is not None:
        split = (
            [c for c in args.numeric.split(",") if c],
            [c for c in args.categorical.split(",") if c],
        )
        result = fit_history(
            Path(args.fit),
            split[0],
            split[1],
            draws=args.draws,
            tune=args.tune,
            chains=args.chains,
            cores=args.cores,
            panel_terms=args.panel_terms,
        )
        print(json.dumps(result))
        return 0
    rows = [int(v) for v in args.rows.split(",") if v.strip()]
    report = run(
        out,
        rows,
        periods=args.periods,
        bins=args.bins,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        cores=args.cores,
        panel_terms=args.panel_terms,
        data=data,
        timeout=args.timeout,
    )
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
