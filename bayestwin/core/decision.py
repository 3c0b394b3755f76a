"""The deploy / skip / refine rule on the posterior probability of a worthwhile lift.

:func:`decide` turns ``P(lift > min_effect_threshold)`` into a recommendation;
:class:`DecisionRule` holds its thresholds together with the level and power of the
real test that the needed sample size is computed for. Neither has defaults: the
caller passes the thresholds it reads from its settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from bayestwin.vocabulary import Recommendation

__all__ = ["Decision", "DecisionRule", "decide"]


@dataclass(frozen=True)
class Decision:
    """A recommendation and the sentence that explains it."""

    recommendation: Recommendation
    rationale: str


@dataclass(frozen=True)
class DecisionRule:
    """Thresholds of the decision and the design of the real test.

    Attributes
    ----------
    min_effect_threshold : float
        Threshold on the relative lift (spec 7: "Skip if ATE < 5%").
    confidence_threshold : float
        In [0.5, 1): the probability of clearing the threshold needed to deploy
        (and, mirrored, to skip).
    power_alpha : float
        Two-sided significance level of the real test, in (0, 1).
    power_target : float
        Target power (and assurance) of the real test, in (0, 1).
    """

    min_effect_threshold: float
    confidence_threshold: float
    power_alpha: float
    power_target: float

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence_threshold < 1.0:
            raise ValueError(
                "confidence_threshold must be in [0.5, 1) for the deploy/skip/refine rule, "
                f"got {self.confidence_threshold}"
            )
        for name in ("power_alpha", "power_target"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")


def decide(
    prob_above: float,
    *,
    min_effect_threshold: float,
    confidence_threshold: float,
    needed_sample: int | None = None,
    eligible_population: int | None = None,
) -> Decision:
    """The decision rule of DESIGN.md.

    * deploy (run the real test) when ``P(lift > threshold) >= confidence_threshold``
      and the test fits in the eligible population;
    * skip when ``P(lift > threshold) <= 1 - confidence_threshold``;
    * refine otherwise, and when the needed sample exceeds the eligible population.

    Parameters
    ----------
    prob_above : float
        Posterior probability that the relative lift exceeds the threshold.
    min_effect_threshold : float
        The threshold on the relative lift (for the rationale).
    confidence_threshold : float
        In [0.5, 1): the probability needed to deploy (and, mirrored, to skip).
    needed_sample : int, optional
        Units the real test needs (both arms together).
    eligible_population : int, optional
        Units eligible for it.

    Returns
    -------
    Decision
    """
    if not 0.0 <= prob_above <= 1.0:
        raise ValueError(f"prob_above must be in [0, 1], got {prob_above}")
    if not 0.5 <= confidence_threshold < 1.0:
        raise ValueError(
            f"confidence_threshold must be in [0.5, 1) for the decision rule, got "
            f"{confidence_threshold}"
        )
    claim = f"P(lift > {min_effect_threshold:.1%}) = {prob_above:.2f}"
    if prob_above >= confidence_threshold:
        if (
            needed_sample is not None
            and eligible_population is not None
            and needed_sample > eligible_population
        ):
            return Decision(
                Recommendation.REFINE,
                f"{claim} >= {confidence_threshold:.2f}, but the real test needs "
                f"{needed_sample} units and only {eligible_population} are eligible.",
            )
        size = f" with {needed_sample} units" if needed_sample is not None else ""
        return Decision(
            Recommendation.DEPLOY,
            f"{claim} >= {confidence_threshold:.2f}: promising; run the real A/B test{size}.",
        )
    if prob_above <= 1.0 - confidence_threshold:
        return Decision(
            Recommendation.SKIP,
            f"{claim} <= {1.0 - confidence_threshold:.2f}: the lift is unlikely to reach "
            "the threshold; skip the test.",
        )
    return Decision(
        Recommendation.REFINE,
        f"{claim} is between {1.0 - confidence_threshold:.2f} and "
        f"{confidence_threshold:.2f}: too uncertain to deploy or skip; refine the design.",
    )
