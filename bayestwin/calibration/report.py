"""The calibration report: summary dict, markdown, JSON, CSVs and plots.

:func:`summarize` reduces a :class:`~bayestwin.calibration.worlds.CalibrationRun` to a
JSON-ready dict (the rules are in :mod:`bayestwin.calibration`); :func:`to_markdown`
renders it; :func:`write_report` writes everything under one directory. matplotlib is
imported only by :func:`write_plots`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats

from bayestwin.calibration.stats import (
    COVERAGE_LEVELS,
    SBC_BINS,
    SBC_DRAWS,
    coverage_summary,
    rank_uniformity,
)
from bayestwin.calibration.worlds import ASSIGNMENTS, CalibrationRun
from bayestwin.vocabulary import Recommendation

__all__ = [
    "COVERAGE_TARGETS",
    "MEDIAN_ERROR_TARGET",
    "METHODS",
    "SPEC_ERROR_TARGET",
    "read_run",
    "summarize",
    "to_markdown",
    "write_plots",
    "write_report",
]

#: Methods compared, the twin model first.
METHODS: tuple[str, ...] = ("twin", "no_pooling", "complete_pooling", "naive", "linear_dml")
#: Acceptance ranges of the coverage over random-assignment worlds.
COVERAGE_TARGETS: dict[float, tuple[float, float]] = {0.8: (0.72, 0.88), 0.95: (0.91, 0.99)}
#: Acceptance bound of the median relative error (the spec's success metric is 0.20).
MEDIAN_ERROR_TARGET = 0.10
SPEC_ERROR_TARGET = 0.20


def _methods_in(effects: pd.DataFrame) -> list[str]:
    return [m for m in METHODS if f"{m}_ate" in effects.columns]


def _quantiles(values: pd.Series | NDArray) -> dict[str, float | None]:
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"n": 0, "median": None, "q25": None, "q75": None, "q90": None, "mean": None}
    q = np.quantile(arr, [0.25, 0.5, 0.75, 0.9])
    return {
        "n": int(arr.size),
        "median": float(q[1]),
        "q25": float(q[0]),
        "q75": float(q[2]),
        "q90": float(q[3]),
        "mean": float(arr.mean()),
    }


def _method_summary(effects: pd.DataFrame, method: str) -> dict[str, Any]:
    est = effects[f"{method}_ate"].to_numpy(dtype=float)
    n = len(effects)
    rel = effects[f"{method}_rel_error"]
    out: dict[str, Any] = {
        "n": n,
        "estimable": int(np.isfinite(est).sum()),
        "coverage": {
            f"{lv:g}": coverage_summary(effects[f"{method}_hit_{lv:g}"].to_numpy(dtype=float))
            for lv in COVERAGE_LEVELS
            if f"{method}_hit_{lv:g}" in effects
        },
        "rel_error": _quantiles(rel),
        "abs_error_lift_points": _quantiles(effects[f"{method}_abs_error"]),
        "share_rel_error_below_0.2": (
            float(np.mean(rel.dropna() < SPEC_ERROR_TARGET)) if rel.notna().any() else None
        ),
    }
    dec_col = "twin_threshold_decision" if method == "twin" else f"{method}_threshold_decision"
    if dec_col in effects:
        out["decisions"] = _decision_quality(effects, dec_col)
    return out


def _decision_quality(effects: pd.DataFrame, column: str, threshold: float = 0.05) -> dict:
    dec = effects[column].fillna("").astype(str)
    made = dec != ""
    above = effects["true_lift"] >= threshold
    below = ~above

    def share(mask: pd.Series, value: str) -> dict[str, Any]:
        m = made & mask
        n = int(m.sum())
        k = int((dec[m] == value).sum())
        return {"n": n, "count": k, "share": (k / n) if n else None}

    return {
        "false_deploy": share(below, Recommendation.DEPLOY.value),
        "false_skip": share(above, Recommendation.SKIP.value),
        "true_deploy": share(above, Recommendation.DEPLOY.value),
        "true_skip": share(below, Recommendation.SKIP.value),
        "refine": share(made | ~made, Recommendation.REFINE.value),
        "no_decision": int((~made).sum()),
    }


def _sample_size_summary(effects: pd.DataFrame) -> dict[str, Any]:
    dep = effects[effects["twin_decision"] == Recommendation.DEPLOY.value]
    out: dict[str, Any] = {"n_deploy": len(dep)}
    for kind in ("classic", "assurance", "adjusted"):
        p = dep[f"power_{kind}"].to_numpy(dtype=float)
        p = p[np.isfinite(p)]
        out[kind] = {
            "n": int(p.size),
            "median_power": float(np.median(p)) if p.size else None,
            "share_power_ge_0.7": float(np.mean(p >= 0.7)) if p.size else None,
            "share_power_ge_0.8": float(np.mean(p >= 0.8)) if p.size else None,
        }
    return out


def _with_assignment(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the ``assignment`` column to records that only have ``confounded``."""
    if "assignment" in frame or frame.empty:
        return frame
    out = frame.copy()
    out["assignment"] = np.where(out["confounded"], "confounded_observed", "random")
    return out


def _lift_bins(effects: pd.DataFrame) -> pd.Series:
    return pd.cut(
        effects["true_lift"].abs(),
        bins=[-np.inf, 0.02, 0.05, 0.10, 0.20, np.inf],
        labels=["a: < 2%", "b: 2-5%", "c: 5-10%", "d: 10-20%", "e: >= 20%"],
        right=False,
    ).astype(str)


def _segment_bins(segments: pd.DataFrame) -> pd.Series:
    return pd.cut(
        segments["segment_treated_units"],
        bins=[-1, 4, 19, 49, np.inf],
        labels=["a: 0-4", "b: 5-19", "c: 20-49", "d: 50+"],
    ).astype(str)


def _breakdown(
    frame: pd.DataFrame, by: pd.Series, methods: Sequence[str], level: float = 0.95
) -> list[dict[str, Any]]:
    rows = []
    for key, grp in frame.groupby(by.to_numpy(), sort=True):
        row: dict[str, Any] = {"group": str(key), "n": len(grp)}
        for m in methods:
            if f"{m}_ate" not in grp:
                continue
            hit = f"{m}_hit_{level:g}"
            row[m] = {
                "estimable": float(np.isfinite(grp[f"{m}_ate"].to_numpy(dtype=float)).mean()),
                "median_rel_error": _quantiles(grp[f"{m}_rel_error"])["median"],
                f"coverage_{level:g}": (
                    coverage_summary(grp[hit].to_numpy(dtype=float))["coverage"]
                    if hit in grp
                    else None
                ),
            }
        rows.append(row)
    return rows


def summarize(run: CalibrationRun) -> dict[str, Any]:
    """The calibration report as a JSON-ready dict.

    Parameters
    ----------
    run : CalibrationRun
        From :func:`run_calibration`.

    Returns
    -------
    dict
        ``meta``, ``acceptance``, ``by_assignment`` (per method, primary targets),
        ``all_types``, ``by_family``, ``by_effect_design``, ``by_true_lift``,
        ``by_type_frequency``, ``by_segment_size``, ``engine_decisions``,
        ``sample_size``, ``sbc``, ``diagnostics``. Groups are the assignments
        ``random``, ``confounded_observed`` and ``confounded_hidden``.
    """
    eff = _with_assignment(run.effects)
    worlds = _with_assignment(run.worlds)
    failed = worlds[worlds["error"].notna()] if "error" in worlds else worlds.iloc[:0]
    meta = {
        "n_worlds": len(worlds),
        "n_failed": len(failed),
        "failures": failed[["world_id", "error"]].to_dict("records") if len(failed) else [],
        "n_by_assignment": {a: int((worlds["assignment"] == a).sum()) for a in ASSIGNMENTS},
        "families": worlds["family"].value_counts().sort_index().to_dict(),
        "effect_designs": worlds["effect_design"].value_counts().sort_index().to_dict(),
        "settings": asdict(run.settings),
        "workers": run.workers,
        "wall_seconds": run.wall_seconds,
        "median_world_seconds": float(worlds["seconds"].median()) if len(worlds) else None,
        **run.meta,
    }
    out: dict[str, Any] = {"meta": meta}
    if eff.empty:
        out["acceptance"] = {}
        return out
    methods = _methods_in(eff)
    primary = eff[eff["primary"]]
    groups = {
        a: primary[primary["assignment"] == a]
        for a in ASSIGNMENTS
        if (primary["assignment"] == a).any()
    }
    out["by_assignment"] = {
        g: {m: _method_summary(frame, m) for m in methods} for g, frame in groups.items()
    }
    out["all_types"] = {
        g: {m: _method_summary(eff[eff["assignment"] == g], m) for m in methods} for g in groups
    }
    random = groups.get("random", primary.iloc[:0])
    # acceptance: the twin model over random-assignment worlds, one interval per world
    twin = _method_summary(random, "twin")
    acc: dict[str, Any] = {"n_worlds": twin["n"]}
    for lv, (lo, hi) in COVERAGE_TARGETS.items():
        cov = twin["coverage"][f"{lv:g}"]["coverage"]
        acc[f"coverage_{lv:g}"] = {
            "value": cov,
            "target": [lo, hi],
            "met": cov is not None and lo <= cov <= hi,
        }
    med = twin["rel_error"]["median"]
    acc["median_rel_error"] = {
        "value": med,
        "target": MEDIAN_ERROR_TARGET,
        "spec_target": SPEC_ERROR_TARGET,
        "met": med is not None and med < MEDIAN_ERROR_TARGET,
        "met_spec": med is not None and med < SPEC_ERROR_TARGET,
    }
    acc["n_worlds_ok"] = bool(twin["n"] >= 100)
    out["acceptance"] = acc

    unconf_all = eff[eff["assignment"] == "random"]
    out["by_family"] = {
        g: _breakdown(frame, frame["family"], ["twin"], 0.95) for g, frame in groups.items()
    }
    out["by_effect_design"] = _breakdown(random, random["effect_design"], ["twin"], 0.95)
    out["by_true_lift"] = _breakdown(random, _lift_bins(random), methods, 0.95)
    freq = np.where(unconf_all["rare"], "rare type", "common type")
    out["by_type_frequency"] = _breakdown(unconf_all, pd.Series(freq), methods, 0.95)
    seg = run.segments
    if not seg.empty:
        seg_u = seg[_with_assignment(seg)["assignment"] == "random"]
        out["by_segment_size"] = _breakdown(seg_u, _segment_bins(seg_u), methods, 0.95)
    out["engine_decisions"] = {
        g: _decision_quality(frame, "twin_decision") for g, frame in groups.items()
    }
    out["sample_size"] = {g: _sample_size_summary(frame) for g, frame in groups.items()}
    sbc_frame = unconf_all[unconf_all["effect_design"] == "prior"]
    out["sbc"] = {
        **rank_uniformity(sbc_frame["twin_sbc_rank"].to_numpy(dtype=int)),
        "n_worlds": int(sbc_frame["world_id"].nunique()),
        "n_draws": SBC_DRAWS,
        "ranks": sbc_frame["twin_sbc_rank"].astype(int).tolist(),
    }
    ok = worlds[worlds["error"].isna()] if "error" in worlds else worlds
    passed = random[random["diagnostics_passed"].astype(bool)]
    ess = eff["twin_ess"].to_numpy(dtype=float) if "twin_ess" in eff else np.array([])
    ess = ess[np.isfinite(ess)]
    out["diagnostics"] = {
        "ate_ess_median": float(np.median(ess)) if ess.size else None,
        "ate_ess_min": float(np.min(ess)) if ess.size else None,
        "ate_ess_share_ge_400": float(np.mean(ess >= 400)) if ess.size else None,
        "share_passed": float(ok["diagnostics_passed"].mean()) if len(ok) else None,
        "median_min_ess_bulk": float(ok["min_ess_bulk"].median()) if len(ok) else None,
        "max_r_hat": float(ok["max_r_hat"].max()) if len(ok) else None,
        "total_divergences": int(ok["divergences"].sum()) if len(ok) else 0,
        "random_passed_coverage": {
            f"{lv:g}": coverage_summary(passed[f"twin_hit_{lv:g}"].to_numpy(dtype=float))
            for lv in COVERAGE_LEVELS
        },
    }
    return out


# -- writing ---------------------------------------------------------------------------------
def _fmt(value: Any, pct: bool = True, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{100 * value:.{digits}f}%" if pct else f"{value:.{digits}f}"


def _cov_cell(c: Mapping[str, Any]) -> str:
    if not c or c.get("coverage") is None:
        return "–"
    return f"{_fmt(c['coverage'])} [{_fmt(c['lower'])}, {_fmt(c['upper'])}] (n={c['n']})"


_LABELS = {
    "twin": "twin model (partial pooling)",
    "no_pooling": "no-pooling GLM",
    "complete_pooling": "complete-pooling GLM",
    "naive": "naive difference in means",
    "linear_dml": "EconML LinearDML",
}
_GROUPS = {
    "random": "random assignment",
    "confounded_observed": "confounded, observed",
    "confounded_hidden": "confounded, hidden",
}


def to_markdown(summary: Mapping[str, Any]) -> str:
    """Render :func:`summarize`'s dict as a markdown report."""
    meta = summary["meta"]
    s = meta["settings"]
    lines = [
        "# Calibration on synthetic worlds",
        "",
        f"{meta['n_worlds']} worlds ("
        + ", ".join(f"{n} {_GROUPS[a]}" for a, n in meta["n_by_assignment"].items())
        + f"), {meta['n_failed']} failed. Families: "
        + ", ".join(f"{k} {v}" for k, v in meta["families"].items())
        + ". Effect designs: "
        + ", ".join(f"{k} {v}" for k, v in meta["effect_designs"].items())
        + ".",
        f"Each fit: {s['chains']} chains x {s['draws']} draws ({s['tune']} tuning); "
        f"{s['twin_count']} twins per simulation at intensity {s['intensity']:g}. "
        f"Wall time {meta['wall_seconds'] / 60:.1f} min with {meta['workers']} process(es); "
        f"median {meta['median_world_seconds'] or 0:.0f} s per world.",
        "",
        "Intervals are the equal-tailed intervals of the population ATE from the "
        "simulation's posterior draws; the truth is the ground-truth ATE of the same twins. "
        "Coverage brackets are 95% Wilson intervals. Relative error: "
        "|estimate - truth| / max(|truth|, 5% of the true control mean). Absolute error "
        "in lift points: |estimate - truth| / true control mean.",
        "",
        "Assignment: *random*; *confounded, observed*: units with a high baseline are "
        "treated more often, the baseline being a function of features every method sees "
        "(ignorability holds given them); *confounded, hidden*: the same, with the feature "
        "that moves the baseline most withheld from every method (ignorability fails).",
        "",
    ]
    if meta["failures"]:
        lines += [
            "Failed worlds: "
            + "; ".join(f"{f['world_id']}: {f['error']}" for f in meta["failures"]),
            "",
        ]
    acc = summary.get("acceptance") or {}
    if acc:
        lines += [
            "## Acceptance (twin model, random assignment, one primary target per world)",
            "",
            "| metric | value | target | met |",
            "|---|---|---|---|",
        ]
        for lv in COVERAGE_TARGETS:
            a = acc[f"coverage_{lv:g}"]
            lines.append(
                f"| {lv:.0%} interval coverage | {_fmt(a['value'])} | "
                f"[{_fmt(a['target'][0], digits=0)}, {_fmt(a['target'][1], digits=0)}] | "
                f"{'yes' if a['met'] else 'NO'} |"
            )
        m = acc["median_rel_error"]
        lines.append(
            f"| median relative error | {_fmt(m['value'])} | < {_fmt(m['target'], digits=0)} "
            f"(spec < {_fmt(m['spec_target'], digits=0)}) | "
            f"{'yes' if m['met'] else 'NO'} (spec: {'yes' if m['met_spec'] else 'NO'}) |"
        )
        lines.append(
            f"| worlds | {acc['n_worlds']} | >= 100 | {'yes' if acc['n_worlds_ok'] else 'NO'} |"
        )
        lines.append("")
    for title, key in (
        ("primary target per world", "by_assignment"),
        ("all intervention types", "all_types"),
    ):
        block = summary.get(key)
        if not block:
            continue
        lines += [f"## Methods side by side ({title})", ""]
        for g, methods in block.items():
            lines += [
                f"### {_GROUPS.get(g, g)}",
                "",
                "| method | n (estimable) | 50% | 80% | 95% | median rel. error | "
                "rel. error q75 | median abs. error (lift pts) | rel. error < 20% |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for m, ms in methods.items():
                cov = ms["coverage"]
                lines.append(
                    f"| {_LABELS.get(m, m)} | {ms['n']} ({ms['estimable']}) | "
                    + " | ".join(_cov_cell(cov.get(f"{lv:g}", {})) for lv in COVERAGE_LEVELS)
                    + f" | {_fmt(ms['rel_error']['median'])} | {_fmt(ms['rel_error']['q75'])} | "
                    f"{_fmt(ms['abs_error_lift_points']['median'], digits=2)} | "
                    f"{_fmt(ms['share_rel_error_below_0.2'])} |"
                )
            lines.append("")
    dq = summary.get("by_assignment")
    if dq:
        lines += [
            "## Decision quality (primary targets; threshold rule on P(lift > 5%) at 0.70)",
            "",
            "False deploy: deploy among targets whose true lift is below 5%. False skip: skip "
            "among targets whose true lift is at least 5%. The twin engine's own "
            "recommendation (which also refines when the test would not fit in the eligible "
            "population) is listed first.",
            "",
            "| assignment | method | false deploy | false skip | true deploy | refine |",
            "|---|---|---|---|---|---|",
        ]
        for g, methods in dq.items():
            for m, ms in methods.items():
                d = ms.get("decisions")
                if not d:
                    continue
                lines.append(
                    f"| {_GROUPS.get(g, g)} | {_LABELS.get(m, m)} | {_dec(d['false_deploy'])} | "
                    f"{_dec(d['false_skip'])} | {_dec(d['true_deploy'])} | {_dec(d['refine'])} |"
                )
        lines.append("")
        eng = summary.get("engine_decisions")
        if eng:
            lines += ["Engine recommendation (twin model):", ""]
            for g, d in eng.items():
                lines.append(
                    f"- {_GROUPS.get(g, g)}: false deploy {_dec(d['false_deploy'])}, false skip "
                    f"{_dec(d['false_skip'])}, true deploy {_dec(d['true_deploy'])}, refine "
                    f"{_dec(d['refine'])}"
                )
            lines.append("")
    ss = summary.get("sample_size")
    if ss:
        lines += [
            "## Sample-size adequacy (deploy recommendations, power against the true effect)",
            "",
            "| assignment | deploys | n | median power | power >= 0.8 | power >= 0.7 |",
            "|---|---|---|---|---|---|",
        ]
        for g, d in ss.items():
            for kind in ("classic", "assurance", "adjusted"):
                k = d[kind]
                lines.append(
                    f"| {_GROUPS.get(g, g)} | {d['n_deploy']} | {kind} ({k['n']}) | "
                    f"{_fmt(k['median_power'], pct=False, digits=2)} | "
                    f"{_fmt(k['share_power_ge_0.8'])} | {_fmt(k['share_power_ge_0.7'])} |"
                )
        lines.append("")
    for title, key in (("By outcome family (twin model, primary targets)", "by_family"),):
        block = summary.get(key)
        if block:
            lines += [
                f"## {title}",
                "",
                "| assignment | family | n | 95% coverage | median rel. error |",
                "|---|---|---|---|---|",
            ]
            for g, rows in block.items():
                for r in rows:
                    t = r["twin"]
                    lines.append(
                        f"| {_GROUPS.get(g, g)} | {r['group']} | {r['n']} | "
                        f"{_fmt(t['coverage_0.95'])} | "
                        f"{_fmt(t['median_rel_error'])} |"
                    )
            lines.append("")
    rows = summary.get("by_effect_design")
    if rows:
        lines += [
            "## By effect design (twin model, random assignment, primary targets)",
            "",
            "| design | n | 95% coverage | median rel. error |",
            "|---|---|---|---|",
        ]
        for r in rows:
            t = r["twin"]
            lines.append(
                f"| {r['group']} | {r['n']} | {_fmt(t['coverage_0.95'])} | "
                f"{_fmt(t['median_rel_error'])} |"
            )
        lines.append("")
    for title, key, note in (
        (
            "Error by size of the true lift (random assignment, primary targets)",
            "by_true_lift",
            "The relative error's floor is 5% of the control mean, so targets whose true "
            "lift is near zero have large relative errors even when the absolute error is "
            "small. Cells: 95% coverage / median relative error / share estimable.",
        ),
        (
            "Where partial pooling wins: intervention-type frequency",
            "by_type_frequency",
            "All (world, type) pairs of random-assignment worlds; a rare type has weight 0.08 "
            "against 1 for the others. Cells: 95% coverage / median relative error / share "
            "estimable.",
        ),
        (
            "Where partial pooling wins: segment size",
            "by_segment_size",
            "Per-segment ATEs of random-assignment worlds, grouped by the units of the segment "
            "treated with the type (any intensity). Cells: 95% coverage / median relative "
            "error / share estimable.",
        ),
    ):
        rows = summary.get(key)
        if not rows:
            continue
        methods = [m for m in METHODS if m in rows[0]]
        lines += [
            f"## {title}",
            "",
            note,
            "",
            "| group | n | " + " | ".join(_LABELS[m] for m in methods) + " |",
            "|---|---|" + "---|" * len(methods),
        ]
        for r in rows:
            cells = []
            for m in methods:
                c = r.get(m)
                cells.append(
                    "–"
                    if c is None
                    else f"{_fmt(c['coverage_0.95'])} / {_fmt(c['median_rel_error'])} / "
                    f"{_fmt(c['estimable'], digits=0)}"
                )
            lines.append(f"| {r['group']} | {r['n']} | " + " | ".join(cells) + " |")
        lines.append("")
    sbc = summary.get("sbc")
    if sbc:
        lines += [
            "## Simulation-based calibration (reduced)",
            "",
            f"{sbc['n']} ranks from {sbc['n_worlds']} random-assignment worlds whose effect "
            f"parameters were drawn from the model's prior; each is the rank of the true ATE "
            f"among {sbc['n_draws']} thinned posterior draws. Chi-square ({sbc['bins']} bins) "
            f"p = {_fmt(sbc['chi2_p_value'], pct=False, digits=3)}; KS p = "
            f"{_fmt(sbc['ks_p_value'], pct=False, digits=3)}. Bin counts: {sbc['counts']}.",
            "Simplifications (see `bayestwin.calibration`): only the effect parameters come "
            "from the prior; bernoulli and count worlds only; ranks of a world's types pooled.",
            "",
        ]
    diag = summary.get("diagnostics")
    if diag:
        cov = diag["random_passed_coverage"]
        lines += [
            "## Sampler diagnostics",
            "",
            f"{_fmt(diag['share_passed'])} of fits passed the default gate (r_hat <= 1.01, "
            f"ESS >= 400, no divergences); median min ESS bulk "
            f"{_fmt(diag['median_min_ess_bulk'], pct=False, digits=0)}, worst r_hat "
            f"{_fmt(diag['max_r_hat'], pct=False, digits=3)}, {diag['total_divergences']} "
            "divergences in all (the gate asks for all of this on every parameter; "
            "the defaults sample 4 x 1000 draws). Every fit was used (diagnostics "
            "overridden). Coverage among random-assignment fits that passed: "
            + ", ".join(f"{k}: {_cov_cell(v)}" for k, v in cov.items())
            + ".",
            f"ESS of the ATE draws themselves: median "
            f"{_fmt(diag['ate_ess_median'], pct=False, digits=0)}, minimum "
            f"{_fmt(diag['ate_ess_min'], pct=False, digits=0)}, "
            f"{_fmt(diag['ate_ess_share_ge_400'])} at least 400.",
            "",
        ]
    return "\n".join(lines)


def _dec(d: Mapping[str, Any]) -> str:
    if not d or d.get("share") is None:
        return "–"
    return f"{_fmt(d['share'])} ({d['count']}/{d['n']})"


def write_plots(run: CalibrationRun, summary: Mapping[str, Any], out: Path) -> list[Path]:
    """Coverage reliability diagram, error histogram and SBC rank histogram (PNG).

    Parameters
    ----------
    run : CalibrationRun
        The records.
    summary : mapping
        :func:`summarize`'s dict.
    out : Path
        Directory to write into.

    Returns
    -------
    list of Path
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    files = []
    block = summary.get("by_assignment", {})
    fig, axes = plt.subplots(1, len(ASSIGNMENTS), figsize=(14, 4.5), sharey=True)
    for ax, group in zip(axes, ASSIGNMENTS, strict=True):
        ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1)
        for i, (m, ms) in enumerate(block.get(group, {}).items()):
            rows = [ms["coverage"].get(f"{lv:g}") for lv in COVERAGE_LEVELS]
            pts = [(lv, r) for lv, r in zip(COVERAGE_LEVELS, rows, strict=True) if r and r["n"]]
            if not pts:
                continue
            x = np.array([p[0] for p in pts]) + (i - 2) * 0.008
            y = np.array([p[1]["coverage"] for p in pts])
            err = np.array(
                [[c - p[1]["lower"], p[1]["upper"] - c] for p, c in zip(pts, y, strict=True)]
            ).T
            ax.errorbar(x, y, yerr=err, fmt="o-", ms=4, capsize=2, label=_LABELS.get(m, m))
        ax.set_title(_GROUPS[group])
        ax.set_xlabel("nominal level")
        ax.set_xlim(0.4, 1.0)
        ax.set_ylim(0.0, 1.02)
    axes[0].set_ylabel("share of true ATEs inside")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Coverage of the population-ATE intervals (95% Wilson bars)")
    fig.tight_layout()
    files.append(out / "coverage.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    eff = _with_assignment(run.effects)
    fig, axes = plt.subplots(1, len(ASSIGNMENTS), figsize=(14, 4), sharey=True)
    if not eff.empty:
        primary = eff[eff["primary"]]
        for ax, group in zip(axes, ASSIGNMENTS, strict=True):
            frame = primary[primary["assignment"] == group]
            for m in _methods_in(frame):
                vals = np.sort(frame[f"{m}_rel_error"].to_numpy(dtype=float))
                vals = np.clip(vals[np.isfinite(vals)], 1e-3, 1e2)
                if vals.size:
                    share = np.arange(1, vals.size + 1) / len(frame)
                    ax.step(vals, share, where="post", lw=1.5, label=_LABELS.get(m, m))
            for bound in (0.1, 0.2):
                ax.axvline(bound, color="0.5", ls=":", lw=1)
            ax.set_xscale("log")
            ax.set_xlim(1e-3, 1e2)
            ax.set_title(_GROUPS[group])
            ax.set_xlabel("relative error (log scale)")
    axes[0].set_ylabel("share of targets with error <= x")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Relative error of the ATE, primary targets (no estimate counts as never)")
    fig.tight_layout()
    files.append(out / "errors.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    sbc = summary.get("sbc", {})
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ranks = np.asarray(sbc.get("ranks", []), dtype=int)
    if ranks.size:
        edges = np.arange(0, SBC_DRAWS + 2, (SBC_DRAWS + 1) // SBC_BINS)
        ax.hist(ranks, bins=edges.tolist(), color="C0", alpha=0.75, edgecolor="white")
        expect = ranks.size / SBC_BINS
        lo, hi = stats.binom.ppf([0.005, 0.995], ranks.size, 1.0 / SBC_BINS)
        ax.axhspan(lo, hi, color="0.5", alpha=0.25, label="99% band if uniform")
        ax.axhline(expect, color="0.3", ls="--", lw=1)
        ax.legend(fontsize=8)
    ax.set_xlabel(f"rank of the true ATE among {SBC_DRAWS} posterior draws")
    ax.set_ylabel("count")
    ax.set_title(f"SBC ranks (n={ranks.size})")
    fig.tight_layout()
    files.append(out / "sbc_ranks.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    return files


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_report(run: CalibrationRun, out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``calibration.md``, ``calibration.json``, the per-target CSVs and the plots.

    Parameters
    ----------
    run : CalibrationRun
        The records.
    out : path-like
        Directory (created if needed).

    Returns
    -------
    dict
        Name to path of every file written.
    """
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    summary = summarize(run)
    files = {
        "markdown": target / "calibration.md",
        "json": target / "calibration.json",
        "worlds": target / "worlds.csv",
        "effects": target / "effects.csv",
        "segments": target / "segments.csv",
    }
    files["markdown"].write_text(to_markdown(summary) + "\n")
    files["json"].write_text(_dump_json(summary))
    run.worlds.to_csv(files["worlds"], index=False)
    run.effects.to_csv(files["effects"], index=False)
    run.segments.to_csv(files["segments"], index=False)
    for path in write_plots(run, summary, target):
        files[path.stem] = path
    return files


def read_run(directory: str | os.PathLike[str]) -> CalibrationRun:
    """Read back the records that :func:`write_report` wrote, to render them again.

    Parameters
    ----------
    directory : path-like
        A report directory (``worlds.csv``, ``effects.csv``, ``segments.csv`` and
        ``calibration.json`` for the settings and timing).

    Returns
    -------
    CalibrationRun
    """
    import json

    from bayestwin.calibration.worlds import RunSettings

    src = Path(directory)

    def csv(name: str) -> pd.DataFrame:
        path = src / f"{name}.csv"
        if not path.exists() or path.stat().st_size <= 1:
            return pd.DataFrame()
        return pd.read_csv(path, keep_default_na=False, na_values=[""])

    meta = json.loads((src / "calibration.json").read_text())["meta"]
    worlds = csv("worlds")
    if "error" in worlds:
        worlds["error"] = worlds["error"].astype(object).where(worlds["error"].notna(), None)
    extra = {k: meta[k] for k in ("command",) if k in meta}
    return CalibrationRun(
        worlds=worlds,
        effects=csv("effects"),
        segments=csv("segments"),
        settings=RunSettings(**meta["settings"]),
        wall_seconds=float(meta["wall_seconds"]),
        workers=int(meta["workers"]),
        meta=extra,
    )


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _dump_json(summary: Mapping[str, Any]) -> str:
    import json

    return json.dumps(_clean(summary), indent=2, default=_json_default, allow_nan=False)
