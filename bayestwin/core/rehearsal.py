"""The rehearsal's figures: placebo outcomes, their rates, Wilson intervals and warning.

A rehearsal runs placebo campaigns (a true effect of zero) on a model's own history and
simulates each as a user's simulation would (:mod:`bayestwin.engine.rehearsal`). This
module holds what is left once the simulations are done, and is pure arithmetic:

* :class:`PlaceboOutcome`: one placebo's recommendation, probability and intervals;
* :class:`Rehearsal`: all of them, with the false-deploy rate (the share of placebos
  recommended "deploy"), the skip rate, the coverage of zero by the 95% and 80%
  intervals and their Wilson intervals; or, when the history could not hold the
  placebos, a ``reason`` and no numbers;
* :func:`null_deploy_probability`: the rate at which a calibrated posterior recommends
  "deploy" for a null effect, the rehearsal's nominal level;
* :func:`rehearsal_summary`: the :class:`~bayestwin.schemas.RehearsalSummary` a
  simulation result shows, with its warning when the rate is above the warn rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from scipy import stats

from bayestwin.core.calibration import wilson_interval
from bayestwin.schemas import RehearsalSummary
from bayestwin.vocabulary import Recommendation

__all__ = [
    "REHEARSAL_CONFIDENCE",
    "PlaceboOutcome",
    "Rehearsal",
    "null_deploy_probability",
    "rehearsal_summary",
    "rehearsal_warning",
]

REHEARSAL_CONFIDENCE = 0.95
"""Confidence of the Wilson intervals a rehearsal reports."""


def null_deploy_probability(
    lift_sd: float, *, min_effect_threshold: float, confidence_threshold: float
) -> float:
    """Probability that a calibrated posterior recommends "deploy" for a null effect.

    With a normal posterior of the relative lift, centred at ``m`` with sd ``s``,
    ``P(lift > t) >= c`` holds when ``m >= t + s * z_c``. Under a true lift of zero a
    calibrated posterior's centre is itself ``Normal(0, s)`` over repeated histories,
    so the deploy region is reached with probability ``1 - Phi(t / s + z_c)``. Pooling
    (shrinkage toward the other types) only lowers it: this is the nominal level a
    rehearsal's false-deploy rate is judged against.

    Parameters
    ----------
    lift_sd : float
        Posterior sd of the relative lift (> 0).
    min_effect_threshold : float
        The threshold ``t`` on the relative lift.
    confidence_threshold : float
        The probability ``c`` needed to deploy, in [0.5, 1).

    Returns
    -------
    float
        The probability, in [0, 1 - c].

    Raises
    ------
    ValueError
        If ``lift_sd <= 0`` or ``confidence_threshold`` is outside [0.5, 1).
    """
    if not lift_sd > 0 or not math.isfinite(lift_sd):
        raise ValueError(f"lift_sd must be a finite number > 0, got {lift_sd}")
    if not 0.5 <= confidence_threshold < 1.0:
        raise ValueError(f"confidence_threshold must be in [0.5, 1), got {confidence_threshold}")
    z = float(stats.norm.ppf(confidence_threshold))
    return float(stats.norm.sf(min_effect_threshold / lift_sd + z))


@dataclass(frozen=True)
class PlaceboOutcome:
    """The simulation of one placebo intervention type (true effect zero).

    Attributes
    ----------
    intervention_type : str
        The placebo type's name.
    n_units : int
        Units given the placebo in the history.
    recommendation : Recommendation
        What the simulation recommended.
    prob_above : float
        ``P(lift > min_effect_threshold)`` of the simulation.
    ate : float
        Posterior median of the population ATE.
    ci95, ci80 : tuple of float
        Equal-tailed 95% and 80% intervals of the population ATE.
    lift_sd : float or None
        Posterior sd of the relative lift (None when it is 0 or unknown).
    """

    intervention_type: str
    n_units: int
    recommendation: Recommendation
    prob_above: float
    ate: float
    ci95: tuple[float, float]
    ci80: tuple[float, float]
    lift_sd: float | None = None

    @property
    def covers_zero_95(self) -> bool:
        """Whether the 95% interval holds zero, the true effect."""
        return self.ci95[0] <= 0.0 <= self.ci95[1]

    @property
    def covers_zero_80(self) -> bool:
        """Whether the 80% interval holds zero, the true effect."""
        return self.ci80[0] <= 0.0 <= self.ci80[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation."""
        return {
            "intervention_type": self.intervention_type,
            "n_units": self.n_units,
            "recommendation": self.recommendation.value,
            "prob_above": self.prob_above,
            "ate": self.ate,
            "ci95": list(self.ci95),
            "ci80": list(self.ci80),
            "lift_sd": self.lift_sd,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlaceboOutcome:
        """Read what :meth:`to_dict` wrote."""
        lift_sd = data.get("lift_sd")
        return cls(
            intervention_type=str(data["intervention_type"]),
            n_units=int(data["n_units"]),
            recommendation=Recommendation(data["recommendation"]),
            prob_above=float(data["prob_above"]),
            ate=float(data["ate"]),
            ci95=(float(data["ci95"][0]), float(data["ci95"][1])),
            ci80=(float(data["ci80"][0]), float(data["ci80"][1])),
            lift_sd=None if lift_sd is None else float(lift_sd),
        )


def _share(hits: int, n: int) -> float | None:
    return hits / n if n else None


@dataclass(frozen=True)
class Rehearsal:
    """Placebo campaigns on a model's own history, and how its simulations judged them.

    Attributes
    ----------
    placebos : int
        Placebo intervention types asked for (K).
    seed : int
        Seed of the placebo draw, the refit and the simulations.
    seconds : float
        Wall time of the rehearsal (refit and simulations).
    min_effect_threshold, confidence_threshold : float
        The decision rule the simulations used.
    outcomes : tuple of PlaceboOutcome
        One per placebo type; empty when ``reason`` is set.
    reason : str or None
        Why no placebo was run (too few untreated rows or units); None when they ran.
    fit_passed : bool or None
        Whether the placebo refit passed the diagnostics gate (None when not run).
    """

    placebos: int
    seed: int
    seconds: float
    min_effect_threshold: float
    confidence_threshold: float
    outcomes: tuple[PlaceboOutcome, ...] = field(default_factory=tuple)
    reason: str | None = None
    fit_passed: bool | None = None

    @property
    def n(self) -> int:
        """Placebos simulated."""
        return len(self.outcomes)

    def _count(self, recommendation: Recommendation) -> int:
        return sum(o.recommendation is recommendation for o in self.outcomes)

    @property
    def false_deploys(self) -> int:
        """Placebos recommended "deploy"."""
        return self._count(Recommendation.DEPLOY)

    @property
    def false_deploy_rate(self) -> float | None:
        """Share of placebos recommended "deploy" (None when none ran)."""
        return _share(self.false_deploys, self.n)

    @property
    def skip_rate(self) -> float | None:
        """Share of placebos recommended "skip" (None when none ran)."""
        return _share(self._count(Recommendation.SKIP), self.n)

    @property
    def zero_coverage(self) -> float | None:
        """Share of placebos whose 95% interval holds zero (None when none ran)."""
        return _share(sum(o.covers_zero_95 for o in self.outcomes), self.n)

    @property
    def zero_coverage_80(self) -> float | None:
        """Share of placebos whose 80% interval holds zero (None when none ran)."""
        return _share(sum(o.covers_zero_80 for o in self.outcomes), self.n)

    @property
    def false_deploy_interval(self) -> tuple[float, float] | None:
        """95% Wilson interval of the false-deploy rate (None when none ran)."""
        return wilson_interval(self.false_deploys, self.n, REHEARSAL_CONFIDENCE) if self.n else None

    @property
    def zero_coverage_interval(self) -> tuple[float, float] | None:
        """95% Wilson interval of the 95% intervals' coverage of zero."""
        if not self.n:
            return None
        hits = sum(o.covers_zero_95 for o in self.outcomes)
        return wilson_interval(hits, self.n, REHEARSAL_CONFIDENCE)

    @property
    def nominal_false_deploy_rate(self) -> float | None:
        """Mean over placebos of :func:`null_deploy_probability` at their lift sds.

        The false-deploy rate a calibrated model would show on these placebos; None
        when no placebo has a lift sd.
        """
        levels = [
            null_deploy_probability(
                o.lift_sd,
                min_effect_threshold=self.min_effect_threshold,
                confidence_threshold=self.confidence_threshold,
            )
            for o in self.outcomes
            if o.lift_sd is not None and o.lift_sd > 0
        ]
        return sum(levels) / len(levels) if levels else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation (saved with the model)."""
        return {
            "placebos": self.placebos,
            "seed": self.seed,
            "seconds": self.seconds,
            "min_effect_threshold": self.min_effect_threshold,
            "confidence_threshold": self.confidence_threshold,
            "outcomes": [o.to_dict() for o in self.outcomes],
            "reason": self.reason,
            "fit_passed": self.fit_passed,
            "false_deploy_rate": self.false_deploy_rate,
            "skip_rate": self.skip_rate,
            "zero_coverage": self.zero_coverage,
            "zero_coverage_80": self.zero_coverage_80,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rehearsal:
        """Read what :meth:`to_dict` wrote (the rates are recomputed, not read)."""
        passed = data.get("fit_passed")
        return cls(
            placebos=int(data["placebos"]),
            seed=int(data["seed"]),
            seconds=float(data["seconds"]),
            min_effect_threshold=float(data["min_effect_threshold"]),
            confidence_threshold=float(data["confidence_threshold"]),
            outcomes=tuple(PlaceboOutcome.from_dict(o) for o in data.get("outcomes") or ()),
            reason=data.get("reason"),
            fit_passed=None if passed is None else bool(passed),
        )


def rehearsal_warning(rehearsal: Rehearsal, warn_rate: float) -> str | None:
    """The warning a simulation carries when the false-deploy rate exceeds ``warn_rate``.

    Parameters
    ----------
    rehearsal : Rehearsal
        The model's rehearsal.
    warn_rate : float
        The highest false-deploy rate that does not warn, in [0, 1].

    Returns
    -------
    str or None
        The sentence, or None when the rate is at most ``warn_rate`` or was not measured.
    """
    rate, interval = rehearsal.false_deploy_rate, rehearsal.false_deploy_interval
    if rate is None or interval is None or rate <= warn_rate:
        return None
    return (
        f"rehearsal false-deploy rate {rate:.0%} ({rehearsal.false_deploys} of "
        f"{rehearsal.n} placebo campaigns on the model's history recommended deploy; 95% "
        f"interval {interval[0]:.0%} to {interval[1]:.0%}) is above rehearsal_warn_rate "
        f"{warn_rate:.0%}; treat a deploy recommendation with caution"
    )


def rehearsal_summary(rehearsal: Rehearsal | None, warn_rate: float) -> RehearsalSummary | None:
    """What a simulation result shows of its model's rehearsal.

    Parameters
    ----------
    rehearsal : Rehearsal or None
        The model's rehearsal; None for a model fitted without one.
    warn_rate : float
        The setting ``rehearsal_warn_rate``, in [0, 1].

    Returns
    -------
    RehearsalSummary or None
        The rates, the Wilson interval, K, the warning (when the rate is above
        ``warn_rate``) or the reason no placebo ran; None without a rehearsal.
    """
    if rehearsal is None:
        return None
    interval = rehearsal.false_deploy_interval
    return RehearsalSummary(
        placebos=rehearsal.n,
        false_deploy_rate=rehearsal.false_deploy_rate,
        false_deploy_ci_lower=None if interval is None else interval[0],
        false_deploy_ci_upper=None if interval is None else interval[1],
        skip_rate=rehearsal.skip_rate,
        zero_coverage=rehearsal.zero_coverage,
        zero_coverage_80=rehearsal.zero_coverage_80,
        nominal_false_deploy_rate=rehearsal.nominal_false_deploy_rate,
        warn_rate=warn_rate,
        warning=rehearsal_warning(rehearsal, warn_rate),
        reason=rehearsal.reason,
        seed=rehearsal.seed,
    )
