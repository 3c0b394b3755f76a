"""The calibration report in markdown: :func:`to_markdown` renders the summary dict.

One function per section, in the report's order (:data:`_SECTIONS`); a section whose
numbers are missing from the summary renders as nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bayestwin.calibration.markdown_cells import GROUPS, LABELS, cov_cell, dec, fmt
from bayestwin.calibration.markdown_kinds import (
    _kind_section,
    _rehearsal_section,
    _series_section,
    _type_count_section,
)
from bayestwin.calibration.summary import COVERAGE_TARGETS, METHODS
from bayestwin.core.intervals import INTERVAL_LEVELS

__all__ = ["GROUPS", "LABELS", "to_markdown"]


def _intro(summary: Mapping[str, Any]) -> list[str]:
    """The title, the run's facts, the rules in words and the failed worlds."""
    meta = summary["meta"]
    s = meta["settings"]
    lines = [
        "# Calibration on synthetic worlds",
        "",
        f"{meta['n_worlds']} worlds ("
        + ", ".join(f"{n} {GROUPS[a]}" for a, n in meta["n_by_assignment"].items())
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
    return lines


def _acceptance_section(summary: Mapping[str, Any]) -> list[str]:
    """The acceptance table."""
    lines: list[str] = []
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
                f"| {lv:.0%} interval coverage | {fmt(a['value'])} | "
                f"[{fmt(a['target'][0], digits=0)}, {fmt(a['target'][1], digits=0)}] | "
                f"{'yes' if a['met'] else 'NO'} |"
            )
        m = acc["median_rel_error"]
        lines.append(
            f"| median relative error | {fmt(m['value'])} | < {fmt(m['target'], digits=0)} "
            f"(spec < {fmt(m['spec_target'], digits=0)}) | "
            f"{'yes' if m['met'] else 'NO'} (spec: {'yes' if m['met_spec'] else 'NO'}) |"
        )
        lines.append(
            f"| worlds | {acc['n_worlds']} | >= 100 | {'yes' if acc['n_worlds_ok'] else 'NO'} |"
        )
        lines.append("")
    return lines


def _methods_section(summary: Mapping[str, Any]) -> list[str]:
    """Every method side by side, per assignment."""
    lines: list[str] = []
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
                f"### {GROUPS.get(g, g)}",
                "",
                "| method | n (estimable) | 50% | 80% | 95% | median rel. error | "
                "rel. error q75 | median abs. error (lift pts) | rel. error < 20% |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for m, ms in methods.items():
                cov = ms["coverage"]
                lines.append(
                    f"| {LABELS.get(m, m)} | {ms['n']} ({ms['estimable']}) | "
                    + " | ".join(cov_cell(cov.get(f"{lv:g}", {})) for lv in INTERVAL_LEVELS)
                    + f" | {fmt(ms['rel_error']['median'])} | {fmt(ms['rel_error']['q75'])} | "
                    f"{fmt(ms['abs_error_lift_points']['median'], digits=2)} | "
                    f"{fmt(ms['share_rel_error_below_0.2'])} |"
                )
            lines.append("")
    return lines


def _decision_section(summary: Mapping[str, Any]) -> list[str]:
    """Decision quality of every method and of the engine."""
    lines: list[str] = []
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
                    f"| {GROUPS.get(g, g)} | {LABELS.get(m, m)} | {dec(d['false_deploy'])} | "
                    f"{dec(d['false_skip'])} | {dec(d['true_deploy'])} | {dec(d['refine'])} |"
                )
        lines.append("")
        eng = summary.get("engine_decisions")
        if eng:
            lines += ["Engine recommendation (twin model):", ""]
            for g, d in eng.items():
                lines.append(
                    f"- {GROUPS.get(g, g)}: false deploy {dec(d['false_deploy'])}, false skip "
                    f"{dec(d['false_skip'])}, true deploy {dec(d['true_deploy'])}, refine "
                    f"{dec(d['refine'])}"
                )
            lines.append("")
    return lines


def _sample_size_section(summary: Mapping[str, Any]) -> list[str]:
    """Power of the recommended sample sizes against the true effect."""
    lines: list[str] = []
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
                    f"| {GROUPS.get(g, g)} | {d['n_deploy']} | {kind} ({k['n']}) | "
                    f"{fmt(k['median_power'], pct=False, digits=2)} | "
                    f"{fmt(k['share_power_ge_0.8'])} | {fmt(k['share_power_ge_0.7'])} |"
                )
        lines.append("")
    return lines


def _family_section(summary: Mapping[str, Any]) -> list[str]:
    """The twin model by outcome family."""
    lines: list[str] = []
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
                        f"| {GROUPS.get(g, g)} | {r['group']} | {r['n']} | "
                        f"{fmt(t['coverage_0.95'])} | "
                        f"{fmt(t['median_rel_error'])} |"
                    )
            lines.append("")
    return lines


def _design_section(summary: Mapping[str, Any]) -> list[str]:
    """The twin model by effect design."""
    lines: list[str] = []
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
                f"| {r['group']} | {r['n']} | {fmt(t['coverage_0.95'])} | "
                f"{fmt(t['median_rel_error'])} |"
            )
        lines.append("")
    return lines


def _breakdown_sections(summary: Mapping[str, Any]) -> list[str]:
    """Error by true lift, type frequency and segment size."""
    lines: list[str] = []
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
            "| group | n | " + " | ".join(LABELS[m] for m in methods) + " |",
            "|---|---|" + "---|" * len(methods),
        ]
        for r in rows:
            cells = []
            for m in methods:
                c = r.get(m)
                cells.append(
                    "–"
                    if c is None
                    else f"{fmt(c['coverage_0.95'])} / {fmt(c['median_rel_error'])} / "
                    f"{fmt(c['estimable'], digits=0)}"
                )
            lines.append(f"| {r['group']} | {r['n']} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _sbc_section(summary: Mapping[str, Any]) -> list[str]:
    """The simulation-based calibration test."""
    lines: list[str] = []
    sbc = summary.get("sbc")
    if sbc:
        lines += [
            "## Simulation-based calibration (reduced)",
            "",
            f"{sbc['n']} ranks from {sbc['n_worlds']} random-assignment worlds whose effect "
            f"parameters were drawn from the model's prior; each is the rank of the true ATE "
            f"among {sbc['n_draws']} thinned posterior draws. Chi-square ({sbc['bins']} bins) "
            f"p = {fmt(sbc['chi2_p_value'], pct=False, digits=3)}; KS p = "
            f"{fmt(sbc['ks_p_value'], pct=False, digits=3)}. Bin counts: {sbc['counts']}.",
            "Simplifications (see `bayestwin.calibration`): only the effect parameters come "
            "from the prior; bernoulli and count worlds only; ranks of a world's types pooled.",
            "",
        ]
    return lines


def _diagnostics_section(summary: Mapping[str, Any]) -> list[str]:
    """Sampler diagnostics and the ESS of the ATE draws."""
    lines: list[str] = []
    diag = summary.get("diagnostics")
    if diag:
        cov = diag["random_passed_coverage"]
        lines += [
            "## Sampler diagnostics",
            "",
            f"{fmt(diag['share_passed'])} of fits passed the default gate (r_hat <= 1.01, "
            f"ESS >= 400, no divergences); median min ESS bulk "
            f"{fmt(diag['median_min_ess_bulk'], pct=False, digits=0)}, worst r_hat "
            f"{fmt(diag['max_r_hat'], pct=False, digits=3)}, {diag['total_divergences']} "
            "divergences in all (the gate asks for all of this on every parameter; "
            "the defaults sample 4 x 1000 draws). Every fit was used (diagnostics "
            "overridden). Coverage among random-assignment fits that passed: "
            + ", ".join(f"{k}: {cov_cell(v)}" for k, v in cov.items())
            + ".",
            f"ESS of the ATE draws themselves: median "
            f"{fmt(diag['ate_ess_median'], pct=False, digits=0)}, minimum "
            f"{fmt(diag['ate_ess_min'], pct=False, digits=0)}, "
            f"{fmt(diag['ate_ess_share_ge_400'])} at least 400.",
            "",
        ]
    return lines


_SECTIONS: tuple[Callable[[Mapping[str, Any]], list[str]], ...] = (
    _intro,
    _kind_section,
    _type_count_section,
    _series_section,
    _rehearsal_section,
    _acceptance_section,
    _methods_section,
    _decision_section,
    _sample_size_section,
    _family_section,
    _design_section,
    _breakdown_sections,
    _sbc_section,
    _diagnostics_section,
)


def to_markdown(summary: Mapping[str, Any]) -> str:
    """Render :func:`~bayestwin.calibration.summary.summarize`'s dict as a markdown report.

    Parameters
    ----------
    summary : mapping
        The summary.

    Returns
    -------
    str
        The report, one section after another.
    """
    lines: list[str] = []
    for section in _SECTIONS:
        lines += section(summary)
    return "\n".join(lines)
