"""What the command prints: JSON documents and the text of single objects and lists."""

from __future__ import annotations

import json
from typing import Any, TextIO

from pydantic import BaseModel

from bayestwin.demo import fmt_count, fmt_number, indent, text_table
from bayestwin.schemas import (
    FidelityResult,
    RehearsalSummary,
    SampleSizeReport,
    SimulationResult,
    TwinModelInfo,
)
from bayestwin.vocabulary import SimulationStatus

__all__ = [
    "fit_comparison_text",
    "fit_rehearsal_text",
    "models_text",
    "print_json",
    "simulation_text",
    "simulations_text",
    "validation_text",
]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, SimulationResult):
        return obj.lean().model_dump(mode="json")
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, list):
        return [_jsonable(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    return obj


def print_json(obj: Any, out: TextIO) -> None:
    """Write ``obj`` as indented JSON (a simulation without its heavy fields)."""
    out.write(json.dumps(_jsonable(obj), indent=2, default=str) + "\n")


def _shortfall(ss: SampleSizeReport) -> str:
    """The mark of an eligible population too small for the classic test, or ``""``."""
    if ss.population_sufficient is not False or ss.classic_n_per_arm is None:
        return ""
    return f"; SHORT: the classic test needs {fmt_count(2 * ss.classic_n_per_arm)} units"


def simulation_text(sim: SimulationResult) -> str:
    """A simulation: what was asked, its effect, decision, sample sizes and segments."""
    lines = [
        f"simulation {sim.simulation_id}  [{sim.simulation_status}]",
        f"  {sim.brand} / {sim.twin_type.value} / {sim.intervention_type} "
        f"(intensity {sim.intervention_config.intensity:g}), {sim.twin_count} twins, "
        f"model {sim.model_id}",
    ]
    if sim.simulation_status is SimulationStatus.FAILED:
        lines.append(f"  error: {sim.error_message}")
        return "\n".join(lines)
    if sim.simulated_ate is None:
        return "\n".join(lines)
    level = f"{sim.confidence_level:.0%}"
    lines.append(
        f"  ATE {sim.simulated_ate:+.4g}  ({level} CI {sim.simulated_ci_lower:+.4g} to "
        f"{sim.simulated_ci_upper:+.4g}); control mean {fmt_number(sim.control_mean)}; "
        f"lift {fmt_number(sim.relative_lift, '.1%', True)}"
    )
    if sim.prob_effect_above_threshold is not None and sim.min_effect_threshold is not None:
        lines.append(
            f"  P(lift > {sim.min_effect_threshold:.0%}) = {sim.prob_effect_above_threshold:.2f}"
        )
    lines.append(f"  recommendation: {sim.recommendation}  {sim.recommendation_rationale or ''}")
    ss = sim.sample_size
    if ss is not None:
        lines.append(
            f"  sample size per arm: classic {fmt_count(ss.classic_n_per_arm)}, assurance "
            f"{fmt_count(ss.assurance_n_per_arm)}, covariate-adjusted "
            f"{fmt_count(ss.covariate_adjusted_n_per_arm)} "
            f"(eligible {fmt_count(ss.eligible_population)}{_shortfall(ss)})"
        )
    for tip in sim.refine_suggestions:
        lines.append(f"  - {tip}")
    if sim.fidelity_warning:
        lines.append(f"  FIDELITY WARNING: {sim.fidelity_warning_reason}")
    if sim.rehearsal is not None:
        lines.extend(_rehearsal_lines(sim.rehearsal))
    if sim.segment_effects:
        rows = [
            [
                s.segment,
                str(s.n_twins),
                f"{s.ate:+.4g}",
                f"{s.relative_lift:+.1%}",
                f"{s.prob_above_threshold:.2f}",
            ]
            for s in sim.segment_effects
        ]
        lines.append(indent(text_table(rows, ["segment", "twins", "ATE", "lift", "P(>thr)"])))
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _rehearsal_line(
    placebos: int,
    rate: float | None,
    interval: tuple[float, float] | None,
    coverage: float | None,
    coverage_80: float | None,
) -> str:
    deploys = "n/a" if rate is None else str(round(rate * placebos))
    bracket = "" if interval is None else f", 95% interval {interval[0]:.0%} to {interval[1]:.0%}"
    return (
        f"  rehearsal: {deploys} of {placebos} placebo campaigns recommended deploy "
        f"(false-deploy rate {_pct(rate)}{bracket}); zero inside the 95% interval "
        f"{_pct(coverage)}, the 80% interval {_pct(coverage_80)}"
    )


def _rehearsal_lines(rehearsal: RehearsalSummary) -> list[str]:
    """A simulation's rehearsal: its rates, and its warning when it has one."""
    if rehearsal.reason is not None:
        return [f"  rehearsal not run: {rehearsal.reason}"]
    lo, hi = rehearsal.false_deploy_ci_lower, rehearsal.false_deploy_ci_upper
    lines = [
        _rehearsal_line(
            rehearsal.placebos,
            rehearsal.false_deploy_rate,
            None if lo is None or hi is None else (lo, hi),
            rehearsal.zero_coverage,
            rehearsal.zero_coverage_80,
        )
    ]
    if rehearsal.warning:
        lines.append(f"  REHEARSAL WARNING: {rehearsal.warning}")
    return lines


def fit_rehearsal_text(info: TwinModelInfo, warn_rate: float) -> str | None:
    """The rehearsal a fit ran, as ``fit`` prints it (None when the fit ran none).

    Parameters
    ----------
    info : TwinModelInfo
        The registered row; its ``performance_metrics`` hold the rehearsal record.
    warn_rate : float
        The setting ``rehearsal_warn_rate``: above it the text warns.

    Returns
    -------
    str or None
        One line with the false-deploy rate, its interval and the coverage of zero,
        and a warning line when the rate is above ``warn_rate``; or the reason no
        placebo ran.
    """
    record = info.performance_metrics.get("rehearsal")
    if not isinstance(record, dict):
        return None
    if record.get("reason"):
        return f"  rehearsal not run: {record['reason']}"
    rate = record.get("false_deploy_rate")
    ci = record.get("false_deploy_ci")
    line = _rehearsal_line(
        int(record.get("placebos") or 0),
        rate,
        None if not ci else (float(ci[0]), float(ci[1])),
        record.get("zero_coverage"),
        record.get("zero_coverage_80"),
    )
    if rate is not None and rate > warn_rate:
        line += (
            f"\n  REHEARSAL WARNING: false-deploy rate {rate:.0%} is above "
            f"rehearsal_warn_rate {warn_rate:.0%}; treat a deploy recommendation with caution"
        )
    return line


def fit_comparison_text(info: TwinModelInfo) -> str | None:
    """The model comparison a fit ran, as ``fit`` prints it (None when it ran none).

    Parameters
    ----------
    info : TwinModelInfo
        The registered row; its ``performance_metrics["model_comparison"]`` holds the
        comparison (:meth:`~bayestwin.core.comparison.ModelComparison.to_dict`).

    Returns
    -------
    str or None
        A line per model (elpd, its SE, ``p``, the difference to the better model and
        its SE, the stacking weight) under a heading, or the reason none ran.
    """
    record = info.performance_metrics.get("model_comparison")
    if not isinstance(record, dict):
        return None
    if record.get("reason"):
        return f"  model comparison not run: {record['reason']}"
    lines = [
        "  model comparison (PSIS-LOO, one unit left out at a time, "
        f"{record.get('units_scored')} of {record.get('units')} units):"
    ]
    for m in record.get("models", []):
        diff = "best" if m["rank"] == 0 else f"{m['elpd_diff']:+.1f} (se {m['dse']:.1f})"
        high = m.get("high_pareto_k") or 0
        warn = f", {high} units with Pareto k above the threshold" if high else ""
        lines.append(
            f"    {m['name']} ({m['terms']}): elpd {m['elpd']:.1f} (se {m['se']:.1f}), "
            f"p {m['p']:.1f}, {diff}, weight {m['weight']:.2f}{warn}"
        )
    return "\n".join(lines)


def validation_text(val: FidelityResult) -> str:
    """A validation: grade, simulated against real, interval hits, the model's score."""
    lines = [
        f"validation {val.tracking_id} of simulation {val.simulation_id} against "
        f"experiment {val.actual_experiment_id}",
        f"  grade {val.fidelity_grade}; simulated {val.simulated_ate:+.4g} vs real "
        f"{fmt_number(val.actual_ate, '.4g', True)} (SE {fmt_number(val.actual_se, '.3g')}); "
        f"error {fmt_number(val.prediction_error, '.1%')}; PIT {fmt_number(val.pit, '.3f')}",
    ]
    if val.in_predictive_interval:
        hits = ", ".join(
            f"{float(k):.0%}: {'yes' if v else 'no'}" for k, v in val.in_predictive_interval.items()
        )
        lines.append(f"  inside the predictive interval: {hits}")
    score = val.model_fidelity_score
    lines.append(
        "  model fidelity score "
        + (f"{score:.2f}" if score is not None else "not yet available (too few validations)")
        + ("  WARNING: below min_fidelity_score" if val.fidelity_warning else "")
    )
    return "\n".join(lines)


_MODEL_HEADER = [
    "model_id",
    "name",
    "version",
    "brand",
    "type",
    "active",
    "usable",
    "fidelity",
    "created",
]

_SIMULATION_HEADER = [
    "simulation_id",
    "brand",
    "type",
    "intervention",
    "status",
    "ATE",
    "decision",
    "n",
    "created",
]


def models_text(items: list[TwinModelInfo], total: int) -> str:
    """A page of models as a table, with ``shown of total``."""
    if not items:
        return "no models"
    rows = [
        [
            str(m.model_id),
            m.model_name,
            m.model_version,
            m.brand,
            m.twin_type.value,
            "yes" if m.is_active else "",
            "yes" if m.fit_for_use else "NO",
            fmt_number(m.fidelity_score, ".2f"),
            m.created_at.strftime("%Y-%m-%d %H:%M"),
        ]
        for m in items
    ]
    return text_table(rows, _MODEL_HEADER) + f"\n{len(items)} of {total}"


def simulations_text(items: list[SimulationResult], total: int) -> str:
    """A page of simulations as a table, with ``shown of total``."""
    if not items:
        return "no simulations"
    rows = [
        [
            str(s.simulation_id),
            s.brand,
            s.twin_type.value,
            s.intervention_type,
            str(s.simulation_status),
            fmt_number(s.simulated_ate, ".4g", True),
            str(s.recommendation or ""),
            fmt_count(s.recommended_sample_size),
            s.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        ]
        for s in items
    ]
    return text_table(rows, _SIMULATION_HEADER) + f"\n{len(items)} of {total}"
