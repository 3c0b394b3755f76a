"""From effect draws to the numbers of a simulation result, and the decision.

:func:`summarise_effects` turns :class:`~bayestwin.core.effects.EffectDraws` into an
:class:`EffectSummary`: the posterior median and equal-tailed interval of the ATE and
of the relative lift, ``P(lift > min_effect_threshold)``, the effects per segment and
per intensity (dose response), the sample size of the real test, the decision of
:func:`~bayestwin.core.decision.decide`, the refine suggestions and the effect prior
handed to the real test's analysis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bayestwin.core.decision import Decision, DecisionRule, decide
from bayestwin.core.effects import EffectDraws
from bayestwin.core.intervals import equal_tailed_interval
from bayestwin.core.sample_size import prognostic_rho2, sample_size_report
from bayestwin.schemas import DosePoint, EffectPrior, SampleSizeReport, SegmentEffect
from bayestwin.vocabulary import Recommendation

__all__ = [
    "DEFAULT_DOSE_GRID",
    "PRIOR_QUANTILES",
    "EffectSummary",
    "default_dose_grid",
    "summarise_effects",
]

#: Intensities of the default dose-response grid (the config's intensity is added).
DEFAULT_DOSE_GRID: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
#: Quantiles of the ATE kept in the :class:`~bayestwin.schemas.EffectPrior`.
PRIOR_QUANTILES: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)


def default_dose_grid(intensity: float) -> tuple[float, ...]:
    """The default dose-response grid: :data:`DEFAULT_DOSE_GRID` plus ``intensity``."""
    grid = {float(v) for v in DEFAULT_DOSE_GRID}
    if intensity > 0:
        grid.add(float(intensity))
    return tuple(sorted(grid))


@dataclass(frozen=True)
class EffectSummary:
    """What a simulation reports about the effect, and what it recommends.

    Attributes
    ----------
    ate, lift : (float, float, float)
        Posterior median and equal-tailed interval of the ATE and of the relative lift.
    prob_above : float
        ``P(lift > min_effect_threshold)``.
    control_mean, treated_mean : float
        Posterior medians of the mean expected outcome per arm.
    segments : list of SegmentEffect
        Effects of the segments that hold twins.
    dose : list of DosePoint
        Effects on the dose grid, by intensity.
    min_intensity : float, optional
        Smallest intensity (> 0) of the grid that clears the confidence threshold.
    sample_size : SampleSizeReport
        The real test's size three ways.
    sd_control, sd_treated : float
        Total outcome sds per arm used for it.
    decision : Decision
        The recommendation and its rationale.
    suggestions : list of str
        How to refine (empty unless the recommendation is refine).
    recommended_sample_size : int, optional
        Units of the real test (both arms); None for a skip.
    prior : EffectPrior
        Summary of the ATE draws for the real test's analysis.
    """

    ate: tuple[float, float, float]
    lift: tuple[float, float, float]
    prob_above: float
    control_mean: float
    treated_mean: float
    segments: list[SegmentEffect]
    dose: list[DosePoint]
    min_intensity: float | None
    sample_size: SampleSizeReport
    sd_control: float
    sd_treated: float
    decision: Decision
    suggestions: list[str]
    recommended_sample_size: int | None
    prior: EffectPrior


def _summary(draws: NDArray, prob: float) -> tuple[float, float, float]:
    lo, hi = equal_tailed_interval(draws, prob)
    return float(np.median(draws)), lo, hi


def _segment_effects(
    draws: EffectDraws, names: Sequence[str], prob: float, thr: float
) -> list[SegmentEffect]:
    present = np.flatnonzero(draws.segment_counts > 0)
    if present.size == 0:
        return []
    tail = (1.0 - prob) / 2.0
    ate_q = np.quantile(draws.segment_ate[:, present], [0.5, tail, 1.0 - tail], axis=0)
    lift = draws.segment_lift[:, present]
    lift_med = np.median(lift, axis=0)
    p_above = np.mean(lift > thr, axis=0)
    return [
        SegmentEffect(
            segment=str(names[s]),
            n_twins=int(round(draws.segment_counts[s])),
            ate=float(ate_q[0, i]),
            ci_lower=float(ate_q[1, i]),
            ci_upper=float(ate_q[2, i]),
            relative_lift=float(lift_med[i]),
            prob_above_threshold=float(p_above[i]),
        )
        for i, s in enumerate(present.tolist())
    ]


def _dose_points(
    draws: EffectDraws, grid: Sequence[float], prob: float, thr: float
) -> list[DosePoint]:
    wanted = {float(v) for v in grid}
    lift = draws.lift
    points = []
    for j, level in enumerate(draws.intensities):
        if float(level) not in wanted:
            continue
        med, lo, hi = _summary(draws.ate[j], prob)
        points.append(
            DosePoint(
                intensity=float(level),
                ate=med,
                ci_lower=lo,
                ci_upper=hi,
                relative_lift=float(np.median(lift[j])),
                prob_above_threshold=float(np.mean(lift[j] > thr)),
            )
        )
    return sorted(points, key=lambda p: p.intensity)


def _sample_size(
    draws: EffectDraws, ate_med: float, eligible: int, family: str, rule: DecisionRule
) -> tuple[SampleSizeReport, int | None, float, float]:
    if family == "bernoulli":
        # two-proportion formula at the posterior medians; p (1 - p) is the total
        # variance of a bernoulli outcome in the population
        p0 = float(np.median(draws.control_mean))
        p1 = min(1.0, max(0.0, p0 + ate_med))
        var_c, var_t = p0 * (1.0 - p0), p1 * (1.0 - p1)
    else:
        var_c = float(np.mean(draws.var_control))
        var_t = float(np.mean(draws.var_treated))
    rho2 = prognostic_rho2(draws.predicted_control, var_c, draws.weights)
    alpha, power = rule.power_alpha, rule.power_target
    report = sample_size_report(
        draws.ate[0],
        var_c,
        var_t,
        effect=ate_med,
        rho=math.sqrt(rho2),
        eligible_population=eligible,
        alpha=alpha,
        power=power,
    )
    # the report's sizes are never capped: the test needs 2 n distinct units
    classic = report.classic_n_per_arm
    needed = None if classic is None else 2 * classic
    return report, needed, var_c, var_t


def _suggestions(
    segments: list[SegmentEffect],
    min_intensity: float | None,
    intensity: float,
    needed: int | None,
    eligible: int,
    p_above: float,
    rule: DecisionRule,
) -> list[str]:
    thr, ct = rule.min_effect_threshold, rule.confidence_threshold
    out = []
    if needed is not None and needed > eligible:
        out.append(
            f"The eligible population is too small: the test needs {needed} units "
            f"(both arms) and only {eligible} are eligible; widen the target filters."
        )
    strong = [s for s in segments if s.prob_above_threshold >= ct]
    if strong:
        names = ", ".join(
            f"{s.segment} (P(lift > {thr:.1%}) = {s.prob_above_threshold:.2f})"
            for s in sorted(strong, key=lambda s: -s.prob_above_threshold)
        )
        out.append(f"Target the segments that respond: {names}.")
    if min_intensity is not None and min_intensity > intensity:
        out.append(
            f"Raise the intensity to {min_intensity:g}: there P(lift > {thr:.1%}) >= {ct:.2f}."
        )
    if not out and p_above < ct:
        out.append(
            "No segment or intensity clears the threshold with enough confidence; "
            "consider a different intervention or more history to narrow the posterior."
        )
    return out


def _effect_prior(draws: EffectDraws, family: str) -> EffectPrior:
    ate = draws.ate[0]
    return EffectPrior(
        scale="absolute",
        mean=float(np.mean(ate)),
        sd=float(np.std(ate, ddof=1)) if ate.size > 1 else 0.0,
        quantiles={
            str(q): float(v)
            for q, v in zip(PRIOR_QUANTILES, np.quantile(ate, PRIOR_QUANTILES), strict=True)
        },
        control_mean=float(np.median(draws.control_mean)),
        outcome_family=family,
    )


def summarise_effects(
    draws: EffectDraws,
    *,
    segment_names: Sequence[str],
    family: str,
    eligible: int,
    intensity: float,
    dose_grid: Sequence[float],
    prob: float,
    rule: DecisionRule,
) -> EffectSummary:
    """Summarise effect draws and decide.

    Parameters
    ----------
    draws : EffectDraws
        Draws whose first intensity is ``intensity`` and which hold every intensity of
        ``dose_grid``.
    segment_names : sequence of str
        Name of each model segment.
    family : str
        Outcome family.
    eligible : int
        Units that pass the target filters (the real test draws from them).
    intensity : float
        The intervention's intensity.
    dose_grid : sequence of float
        Intensities of the dose-response curve (may be empty).
    prob : float
        Level of the credible intervals, in (0, 1).
    rule : DecisionRule
        Thresholds of the decision and design of the real test.

    Returns
    -------
    EffectSummary
    """
    thr, ct = rule.min_effect_threshold, rule.confidence_threshold
    ate_med, ate_lo, ate_hi = _summary(draws.ate[0], prob)
    lift = draws.lift[0]
    p_above = float(np.mean(lift > thr))
    segments = _segment_effects(draws, segment_names, prob, thr)
    dose = _dose_points(draws, dose_grid, prob, thr)
    min_intensity = next(
        (p.intensity for p in dose if p.prob_above_threshold >= ct and p.intensity > 0), None
    )
    report, needed, var_c, var_t = _sample_size(draws, ate_med, eligible, family, rule)
    decision = decide(
        p_above,
        min_effect_threshold=thr,
        confidence_threshold=ct,
        needed_sample=needed,
        eligible_population=eligible,
    )
    suggestions: list[str] = []
    if decision.recommendation is Recommendation.REFINE:
        suggestions = _suggestions(
            segments, min_intensity, intensity, needed, eligible, p_above, rule
        )
    recommended = None
    if decision.recommendation is not Recommendation.SKIP and report.classic_n_per_arm:
        recommended = 2 * report.classic_n_per_arm
    return EffectSummary(
        ate=(ate_med, ate_lo, ate_hi),
        lift=_summary(lift, prob),
        prob_above=p_above,
        control_mean=float(np.median(draws.control_mean)),
        treated_mean=float(np.median(draws.treated_mean)),
        segments=segments,
        dose=dose,
        min_intensity=min_intensity,
        sample_size=report,
        sd_control=math.sqrt(var_c),
        sd_treated=math.sqrt(var_t),
        decision=decision,
        suggestions=suggestions,
        recommended_sample_size=recommended,
        prior=_effect_prior(draws, family),
    )
