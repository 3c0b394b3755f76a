"""The calibration report's sections on world kinds, real experiments and rehearsals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bayestwin.calibration.markdown_cells import LABELS, cov_cell, fmt
from bayestwin.calibration.summary import METHODS

__all__: list[str] = []


def _kind_rows(block: Mapping[str, Any], part: str) -> list[str]:
    """One table row per kind: the twin model's figures over ``part`` of its records."""
    from bayestwin.calibration.kinds import kind_label

    rows = []
    for kind, k in block.items():
        f = k[part]
        cov, gated = f["coverage"], f["coverage_gate_passed"]
        gate = f["gate_passed"]
        gate_cell = (
            "–"
            if gate["coverage"] is None
            else f"{fmt(gate['coverage'], digits=0)} ({gate['hits']}/{gate['n']})"
        )
        rows.append(
            f"| {kind_label(kind)} (`{kind}`) | {f['n']} | "
            f"{cov_cell(cov['0.95'])} | {cov_cell(cov['0.8'])} | "
            f"{fmt(f['median_rel_error'])} | {fmt(f.get('implied_rel_error'))} | "
            f"{fmt(f['sd_ratio'], pct=False, digits=2)} | "
            f"{fmt(f['rms_z'], pct=False, digits=1)} | {gate_cell} | "
            f"{fmt(gated['0.95']['coverage'], digits=0)} / "
            f"{fmt(gated['0.8']['coverage'], digits=0)} (n={gated['0.95']['n']}) |"
        )
    return rows


def _kind_section(summary: Mapping[str, Any]) -> list[str]:
    """The twin model per world kind, each kind apart, and the baselines beside it."""
    block = summary.get("by_kind")
    if not block or (len(block) == 1 and "in_model" in block):
        return []
    head = (
        "| world kind | n | 95% covers truth | 80% covers | median rel. error | implied by "
        "the sd | sd ratio | rms z | gate passed | 95% / 80% on gate-passing fits |"
    )
    rule = "|---|---|---|---|---|---|---|---|---|---|"
    lines = [
        "## By world kind (twin model)",
        "",
        "Each kind adds one process to worlds shaped like the model "
        "(`bayestwin.calibration.kinds`). The truth is the ATE of the simulated twins, "
        "each with its own unit effect, in the period after the history. Implied by the "
        "sd: the median relative error of an estimate whose error is normal with the "
        "posterior's own sd (a history with little information has it large; a measured "
        "error well above it is bias). sd ratio: "
        "posterior sd over the root mean square of the actual error, in lift points (1: "
        "honest; below 1: intervals too narrow). rms z: root mean square of error / "
        "posterior sd (1: honest). Gate: the default diagnostics gate (r_hat, ESS, "
        "divergences); every fit is used, and coverage on the fits that pass it is given "
        "apart. Brackets are 95% Wilson intervals.",
        "",
        "### One primary target per world",
        "",
        head,
        rule,
        *_kind_rows(block, "primary"),
        "",
        "### All intervention types (dependent within a world)",
        "",
        head,
        rule,
        *_kind_rows(block, "all_types"),
        "",
    ]
    methods = [m for m in METHODS if any(m in k["baselines"] for k in block.values())]
    if methods:
        lines += [
            "Baselines per kind (primary targets; 95% coverage / median relative error). "
            "They read one treatment per unit, so they are not run where treatment changes "
            "within a unit (–).",
            "",
            "| world kind | " + " | ".join(LABELS.get(m, m) for m in methods) + " |",
            "|---|" + "---|" * len(methods),
        ]
        for kind, k in block.items():
            cells = []
            for m in methods:
                b = k["baselines"].get(m)
                est = bool(b and b["estimable"])
                cells.append(
                    f"{fmt(b['coverage_0.95']['coverage'])} / {fmt(b['median_rel_error'])}"
                    if b and est
                    else "–"
                )
            lines.append(f"| `{kind}` | " + " | ".join(cells) + " |")
        lines.append("")
    if len(block) > 1:
        lines += ["The sections below read the `in_model` worlds only.", ""]
    return lines


def _type_count_section(summary: Mapping[str, Any]) -> list[str]:
    """The twin model by the number of intervention types, over every kind."""
    rows = summary.get("by_type_count")
    if not rows or len(rows) < 2:
        return []
    lines = [
        "## By number of intervention types (every kind, primary targets)",
        "",
        "| types | worlds | fits that diverged | gate passed | 95% covers truth | "
        "80% covers | median rel. error | 95% on gate-passing fits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r["primary"]
        lines.append(
            f"| {r['types']} | {r['n_worlds']} | {r['divergent_fits']} | "
            f"{cov_cell(p['gate_passed'])} | {cov_cell(p['coverage']['0.95'])} | "
            f"{cov_cell(p['coverage']['0.8'])} | {fmt(p['median_rel_error'])} | "
            f"{cov_cell(p['coverage_gate_passed']['0.95'])} |"
        )
    return [*lines, ""]


def _series_section(summary: Mapping[str, Any]) -> list[str]:
    """Coverage, error and interval width as the real experiments grow."""
    block = summary.get("experiment_series")
    if not block:
        return []
    lines = [
        "## Real experiments as data",
        "",
        "The same worlds fitted on their history alone (k = 0) and with k real experiments "
        "drawn from their truth (`bayestwin.calibration.loop`); every intervention type, "
        "and apart the types an experiment tested. sd ratio: posterior sd over the same "
        "(world, type)'s sd at k = 0; width: the same ratio of the 95% intervals' widths "
        "(robust to heavy tails); expected: the ratio if the experiments were combined "
        "with the k = 0 posterior as unbiased evidence, `(1 + sd0^2 sum 1/se^2)^-1/2` "
        "(what a history the experiments confirm should give on the tested types).",
        "",
        "| world kind | k | n | 95% covers | 80% covers | median rel. error | sd ratio "
        "| width | tested types: n, 95%, error, sd ratio, width (expected) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, series in block.items():
        for k, f in series.items():
            t = f["experimented"]
            tested = (
                "–"
                if not t
                else f"{t['n']}, {cov_cell(t['coverage_0.95'])}, {fmt(t['median_rel_error'])}, "
                f"{fmt(t['median_sd_ratio'], pct=False, digits=2)}, "
                f"{fmt(t.get('median_width_ratio'), pct=False, digits=2)} "
                f"({fmt(t.get('median_expected_sd_ratio'), pct=False, digits=2)})"
            )
            lines.append(
                f"| `{kind}` | {k} | {f['n']} | {cov_cell(f['coverage_0.95'])} | "
                f"{cov_cell(f['coverage_0.8'])} | {fmt(f['median_rel_error'])} | "
                f"{fmt(f['median_sd_ratio'], pct=False, digits=2)} | "
                f"{fmt(f.get('median_width_ratio'), pct=False, digits=2)} | {tested} |"
            )
    return [*lines, ""]


def _rehearsal_section(summary: Mapping[str, Any]) -> list[str]:
    """The rehearsal's placebo false-deploy rate beside the real one."""
    r = summary.get("rehearsal")
    if not r:
        return []

    def cell(d: Mapping[str, Any]) -> str:
        lo, hi = d["wilson_95"]
        return f"{d['count']}/{d['n']} = {fmt(d['rate'])} [{fmt(lo)}, {fmt(hi)}]"

    flagged = r["flagged_share"]
    return [
        "## Rehearsal: placebo false deploys against real ones",
        "",
        f"Over {r['worlds']} rehearsed worlds (every kind). Placebo: deploy "
        "recommendations among the placebo campaigns of each fit's rehearsal. Real: deploy "
        f"recommendations among the (world, type) pairs whose true lift is below "
        f"{fmt(r['threshold'], digits=0)}. Brackets: 95% Wilson intervals.",
        "",
        "| | false deploys |",
        "|---|---|",
        f"| placebo (rehearsal) | {cell(r['placebo'])} |",
        f"| real | {cell(r['real'])} |",
        "",
        f"Intervals overlap: {r['intervals_overlap']}. Worlds with a real false deploy: "
        f"{r['worlds_with_real_false_deploys']}; flagged by their rehearsal (placebo rate "
        f"above {fmt(r['warn_rate'], digits=0)}): {r['flagged']}"
        + (f" ({fmt(flagged, digits=0)})." if flagged is not None else "."),
        "",
    ]
