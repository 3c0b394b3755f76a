"""Tables and plots of the report pages, from the JSON that the nox sessions write.

``nox -s calibration`` writes ``reports/calibration/calibration.json`` and ``nox -s
benchmark`` writes ``reports/benchmark/fit.json`` and ``bench_simulation.json``. When a
file is missing, the committed snapshot under ``docs/_data/`` stands in, and the page
says so. The report pages (``docs/results/*.md``) call these functions in their code
cells, executed when the site is built.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(os.environ.get("DOCS_BAYESTWIN_ROOT", Path(__file__).resolve().parents[2]))
METHOD_NAMES = {
    "twin": "twin model (partial pooling)",
    "no_pooling": "no-pooling GLM",
    "complete_pooling": "complete-pooling GLM",
    "naive": "naive difference in means",
    "linear_dml": "EconML LinearDML",
}
ASSIGNMENT_NAMES = {
    "random": "random assignment",
    "confounded_observed": "confounded, observed",
    "confounded_hidden": "confounded, hidden",
}
LEVELS = ("0.5", "0.8", "0.95")


@dataclass(frozen=True)
class Report:
    """One JSON report and where it came from."""

    data: dict[str, Any]
    path: Path
    snapshot: bool

    @property
    def source(self) -> str:
        """A sentence saying which file the page renders."""
        rel = self.path.relative_to(ROOT).as_posix()
        if self.snapshot:
            return (
                f"Rendered from the committed snapshot `{rel}`: no report of the nox session "
                "was found under `reports/` when the site was built."
            )
        return f"Rendered from `{rel}`, written by the nox session."


def load(kind: str, name: str) -> Report | None:
    """The report ``reports/<kind>/<name>``, else its snapshot ``docs/_data/<kind>/<name>``."""
    for path, snapshot in (
        (ROOT / "reports" / kind / name, False),
        (ROOT / "docs" / "_data" / kind / name, True),
    ):
        if path.is_file():
            return Report(json.loads(path.read_text()), path, snapshot)
    return None


# -- formatting --------------------------------------------------------------------------


def pct(value: float | None, digits: int = 1) -> str:
    """A share as a percentage; a dash when missing."""
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def num(value: float | None, fmt: str = ".2f") -> str:
    """A number; a dash when missing."""
    return "–" if value is None else format(value, fmt)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown pipe table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- calibration -------------------------------------------------------------------------


def calibration_settings(data: Mapping[str, Any]) -> str:
    """The run: worlds, families, sampler settings, wall time and command."""
    meta = data["meta"]
    s = meta.get("settings", {})
    assignments = ", ".join(
        f"{ASSIGNMENT_NAMES.get(k, k)} {v}" for k, v in meta.get("n_by_assignment", {}).items()
    )
    families = ", ".join(f"{k} {v}" for k, v in meta.get("families", {}).items())
    rows = [
        ("worlds", f"{meta['n_worlds']} ({assignments}); {meta.get('n_failed', 0)} failed"),
        ("families", families),
        (
            "each fit",
            f"{s.get('chains')} chains x {s.get('draws')} draws ({s.get('tune')} tuning)"
            + (
                f"; a fit that misses the gate on ESS or r_hat is sampled again with the "
                f"draws per chain its ESS asks for, up to {s['gate_draws']}"
                if s.get("gate_draws")
                else ""
            ),
        ),
        ("twins per simulation", f"{s.get('twin_count')} at intensity {s.get('intensity')}"),
        (
            "wall time",
            f"{meta['wall_seconds'] / 60:.1f} min with {meta.get('workers')} process(es)",
        ),
    ]
    if meta.get("command"):
        rows.append(("command", f"`{meta['command']}`"))
    return table(("run", ""), rows)


def acceptance_table(data: Mapping[str, Any]) -> str:
    """The acceptance numbers of the twin model on random-assignment worlds."""
    acc = data.get("acceptance", {})
    rows = []
    for level in ("0.8", "0.95"):
        item = acc.get(f"coverage_{level}")
        if item:
            lo, hi = item["target"]
            rows.append(
                (
                    f"{pct(float(level), 0)} interval coverage",
                    pct(item["value"]),
                    f"{pct(lo, 0)} to {pct(hi, 0)}",
                    "yes" if item["met"] else "no",
                )
            )
    err = acc.get("median_rel_error")
    if err:
        rows.append(
            (
                "median relative error",
                pct(err["value"]),
                f"< {pct(err['target'], 0)} (specification: < {pct(err['spec_target'], 0)})",
                "yes" if err["met"] else ("specification only" if err["met_spec"] else "no"),
            )
        )
    if "n_worlds" in acc:
        rows.append(
            ("worlds", acc["n_worlds"], ">= 100", "yes" if acc.get("n_worlds_ok") else "no")
        )
    return table(("metric", "value", "target", "met"), rows)


def _wilson_cell(c: Mapping[str, Any] | None) -> str:
    """A coverage summary as "hits/n (Wilson lower-upper)"; a dash when missing."""
    if not c or c.get("coverage") is None:
        return "–"
    return f"{c['hits']}/{c['n']} ({pct(c['lower'], 0)}-{pct(c['upper'], 0)})"


def kind_table(data: Mapping[str, Any], part: str = "primary") -> str:
    """The twin model per world kind: coverage, errors, spread and the gate.

    Parameters
    ----------
    data : Mapping
        A calibration report whose ``by_kind`` holds the kinds.
    part : {"primary", "all_types"}
        One primary target per world, or every (world, type) pair.
    """
    rows = []
    for kind, block in data.get("by_kind", {}).items():
        f = block[part]
        gated = f["coverage_gate_passed"]["0.95"]
        rows.append(
            (
                f"`{kind}`",
                f["n"],
                _wilson_cell(f["coverage"]["0.95"]),
                _wilson_cell(f["coverage"]["0.8"]),
                pct(f["median_rel_error"]),
                pct(f.get("implied_rel_error")),
                num(f["rms_z"]),
                f"{f['gate_passed']['hits']}/{f['gate_passed']['n']}",
                "–" if gated["coverage"] is None else f"{gated['hits']}/{gated['n']}",
            )
        )
    header = (
        "world kind",
        "n",
        "95% covers",
        "80% covers",
        "median rel. error",
        "implied by the sd",
        "rms z",
        "gate passed",
        "95% on gate-passing fits",
    )
    return table(header, rows)


def methods_table(data: Mapping[str, Any], assignment: str = "random") -> str:
    """Coverage and errors of every method, one primary target per world."""
    methods = data.get("by_assignment", {}).get(assignment, {})
    rows = []
    for key, m in methods.items():
        cov = m.get("coverage", {})
        rel = m.get("rel_error", {})
        rows.append(
            (
                METHOD_NAMES.get(key, key),
                f"{m['n']} ({m['estimable']})",
                *(pct(cov.get(level, {}).get("coverage")) for level in LEVELS),
                pct(rel.get("median")),
                pct(m.get("share_rel_error_below_0.2")),
            )
        )
    header = ("method", "n (estimable)", "50% covers", "80% covers", "95% covers")
    return table((*header, "median rel. error", "rel. error < 20%"), rows)


def decisions_table(data: Mapping[str, Any]) -> str:
    """The engine's decisions against the truth, by assignment."""
    rows = []
    for assignment, d in data.get("engine_decisions", {}).items():
        cells = []
        for key in ("true_deploy", "false_deploy", "true_skip", "false_skip", "refine"):
            item = d.get(key, {})
            cells.append(f"{item.get('count', 0)}/{item.get('n', 0)}")
        rows.append((ASSIGNMENT_NAMES.get(assignment, assignment), *cells))
    header = ("assignment", "true deploys", "false deploys", "true skips", "false skips")
    return table((*header, "refine"), rows)


def diagnostics_table(data: Mapping[str, Any]) -> str:
    """The sampler diagnostics of the fits."""
    d = data.get("diagnostics", {})
    rows = [
        ("share of fits passing the diagnostics gate", pct(d.get("share_passed"))),
        ("median minimum bulk ESS", num(d.get("median_min_ess_bulk"), ".0f")),
        ("largest r-hat", num(d.get("max_r_hat"), ".3f")),
        ("divergences, all fits", d.get("total_divergences", "–")),
        ("median ESS of the ATE", num(d.get("ate_ess_median"), ".0f")),
    ]
    return table(("diagnostic", "value"), rows)


def coverage_plot(data: Mapping[str, Any], assignment: str = "random") -> Any:
    """Empirical against nominal coverage of every method, with Wilson intervals."""
    import matplotlib.pyplot as plt

    methods = data.get("by_assignment", {}).get(assignment, {})
    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    ax.plot([0.4, 1.0], [0.4, 1.0], color="0.5", ls="--", lw=1, label="calibrated")
    targets = {0.8: (0.72, 0.88), 0.95: (0.91, 0.99)}
    for level, (lo, hi) in targets.items():
        ax.plot([level, level], [lo, hi], color="C2", lw=6, alpha=0.3)
    ax.plot([], [], color="C2", lw=6, alpha=0.3, label="acceptance range")
    offsets = np.linspace(-0.012, 0.012, max(len(methods), 1))
    for (key, m), dx in zip(methods.items(), offsets, strict=False):
        cov = m.get("coverage", {})
        pts = [(float(level), cov[level]) for level in LEVELS if cov.get(level, {}).get("n")]
        if not pts:
            continue
        x = np.array([p[0] for p in pts]) + dx
        y = np.array([p[1]["coverage"] for p in pts])
        err = np.array(
            [[c - p[1]["lower"], p[1]["upper"] - c] for p, c in zip(pts, y, strict=True)]
        ).T
        marker = "o" if key == "twin" else "."
        ax.errorbar(x, y, yerr=err, fmt=marker, capsize=2, label=METHOD_NAMES.get(key, key))
    ax.set_xlim(0.4, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("nominal level of the interval")
    ax.set_ylabel("share of true ATEs inside")
    ax.set_title(f"Interval coverage, {ASSIGNMENT_NAMES.get(assignment, assignment)}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def error_plot(data: Mapping[str, Any]) -> Any:
    """Median relative error of every method by assignment, with its quartiles."""
    import matplotlib.pyplot as plt

    groups = data.get("by_assignment", {})
    methods = [m for m in METHOD_NAMES if any(m in g for g in groups.values())]
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    width = 0.8 / max(len(methods), 1)
    for i, key in enumerate(methods):
        xs, med, lo, hi = [], [], [], []
        for j, g in enumerate(groups.values()):
            rel = g.get(key, {}).get("rel_error", {})
            if rel.get("median") is None:
                continue
            xs.append(j + (i - (len(methods) - 1) / 2) * width)
            med.append(rel["median"])
            lo.append(rel["median"] - rel["q25"])
            hi.append(rel["q75"] - rel["median"])
        ax.bar(xs, med, width=width, yerr=[lo, hi], capsize=2, label=METHOD_NAMES[key])
    ax.axhline(0.2, color="C3", ls="--", lw=1, label="specification: 20%")
    ax.set_xticks(range(len(groups)), [ASSIGNMENT_NAMES.get(k, k) for k in groups])
    ax.set_ylabel("relative error (median, quartiles)")
    ax.set_ylim(bottom=0.0)
    ax.set_title("ATE error by method and assignment")
    ax.legend(fontsize=7, ncols=2, loc="upper left")
    fig.tight_layout()
    return fig


def sbc_plot(data: Mapping[str, Any]) -> Any:
    """Histogram of the SBC ranks of the ATE with the band of a uniform histogram."""
    import matplotlib.pyplot as plt
    from scipy import stats

    sbc = data.get("sbc", {})
    counts = np.asarray(sbc.get("counts", []), dtype=float)
    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    if counts.size:
        n = counts.sum()
        bins = counts.size
        ax.bar(np.arange(bins), counts, width=0.9, color="C0", alpha=0.8)
        lo, hi = stats.binom.ppf([0.025, 0.975], n, 1.0 / bins)
        ax.axhspan(lo, hi, color="0.5", alpha=0.25, label="95% band if uniform")
        ax.legend(fontsize=8)
    p = sbc.get("chi2_p_value")
    ax.set_title(f"SBC ranks of the ATE (n={sbc.get('n', 0)}, chi-square p={num(p)})")
    ax.set_xlabel("rank bin")
    ax.set_ylabel("count")
    fig.tight_layout()
    return fig


# -- benchmarks --------------------------------------------------------------------------


def fit_table(data: Mapping[str, Any]) -> str:
    """The fit benchmark's cases."""
    rows = []
    for r in data.get("results", {}).values():
        rows.append(
            (
                r["case"],
                f"{r['rows']:,}",
                f"{r['likelihood_rows']:,}",
                f"{r['wall_s']:.1f}",
                f"{r['min_ess_bulk']:.0f}",
                f"{r['min_ess_bulk_per_s']:.2f}",
                f"{r['max_r_hat']:.3f}",
                r["divergences"],
            )
        )
    header = ("case", "rows", "likelihood rows", "wall (s)", "min ESS bulk", "ESS/s")
    return table((*header, "max r-hat", "divergences"), rows)


def fit_ratios_table(data: Mapping[str, Any]) -> str:
    """The fit benchmark's ratios and checks."""
    rows = [(k, f"{v:.2f}") for k, v in data.get("ratios", {}).items()]
    rows += [(k, "holds" if v else "does not hold") for k, v in data.get("checks", {}).items()]
    return table(("ratio or check", "value"), rows)


def fit_plot(data: Mapping[str, Any]) -> Any:
    """Minimum bulk ESS per second of every fit case."""
    import matplotlib.pyplot as plt

    results = list(data.get("results", {}).values())
    fig, ax = plt.subplots(figsize=(6.0, 0.5 + 0.5 * max(len(results), 1)))
    names = [r["case"] for r in results]
    ax.barh(names, [r["min_ess_bulk_per_s"] for r in results], color="C0")
    ax.invert_yaxis()
    ax.set_xlabel("minimum bulk ESS per second of wall time")
    ax.set_title("Fit benchmark")
    fig.tight_layout()
    return fig


SIMULATION_CASES = {
    "engine": "bayestwin engine",
    "engine_one_thread": "engine, one thread",
    "engine_full": "engine with the dose-response grid",
    "numpy_floor": "NumPy floor (one product + link, one arm)",
    "pymc": "pm.sample_posterior_predictive (compiled)",
}


def simulation_table(data: Mapping[str, Any]) -> str:
    """Seconds per simulation for every size and case."""
    rows = []
    for size in data.get("sizes", []):
        sec = size.get("seconds", {})
        label = f"{size['twins']:,} twins x {size['draws']:,} draws"
        for key, name in SIMULATION_CASES.items():
            if key in sec:
                rows.append((label, name, f"{sec[key]:.4f}"))
        ratio = size.get("ratios", {}).get("pymc_over_engine")
        if ratio is not None:
            rows.append((label, "PyMC time / engine time", f"{ratio:.1f}x"))
    return table(("size", "case", "seconds (best run)"), rows)


def simulation_environment(data: Mapping[str, Any]) -> str:
    """Where the simulation benchmark ran."""
    env = data.get("environment", {})
    load_avg = ", ".join(str(v) for v in env.get("load_average", []))
    rows = [
        ("population", f"{data.get('population', 0):,} units"),
        ("timed runs per case", data.get("repeats", "–")),
        ("CPUs", env.get("cpu_count", "–")),
        ("load average at the end (1, 5, 15 min)", load_avg or "–"),
        ("Python, NumPy, PyMC", f"{env.get('python')}, {env.get('numpy')}, {env.get('pymc', '–')}"),
    ]
    return table(("environment", ""), rows)


def simulation_plot(data: Mapping[str, Any]) -> Any:
    """Seconds per simulation, log scale, for every size."""
    import matplotlib.pyplot as plt

    sizes = data.get("sizes", [])
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    keys = [k for k in SIMULATION_CASES if any(k in s.get("seconds", {}) for s in sizes)]
    width = 0.8 / max(len(keys), 1)
    for i, key in enumerate(keys):
        xs = [j + (i - (len(keys) - 1) / 2) * width for j in range(len(sizes))]
        ys = [s.get("seconds", {}).get(key, np.nan) for s in sizes]
        ax.bar(xs, ys, width=width, label=SIMULATION_CASES[key])
    ax.set_xticks(range(len(sizes)), [f"{s['twins']:,} x {s['draws']:,}" for s in sizes])
    ax.set_yscale("log")
    ax.set_ylabel("seconds (log scale)")
    ax.set_xlabel("twins x posterior draws")
    ax.set_title("Simulation benchmark")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
