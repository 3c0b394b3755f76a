"""Grading one prediction against a real result, and scoring a model's track record.

**Prediction error** (:func:`prediction_error`)::

    error = |simulated_ate - actual_ate| / max(|actual_ate|, floor)
    floor = min_effect_threshold * |control_mean|   (when positive)
            actual_se                                (otherwise)

``min_effect_threshold`` is the relative lift the simulation was judged against (the
simulation's own, else the tracker's); ``control_mean`` is the real control arm's mean
(else the simulation's). So when the real effect is smaller than the smallest effect
worth acting on, the error is measured in units of that smallest effect, and it stays
finite at a real ATE of exactly zero.

**Grade** (:func:`grade_prediction_error`), on the spec's boundaries:
``[0, 0.10)`` excellent, ``[0.10, 0.20)`` good, ``[0.20, 0.35]`` fair, ``(0.35, inf)``
poor; unvalidated when there is no real result. Each boundary belongs to the worse
grade except 0.35, which stays fair because the spec calls poor "> 35%".

**Model fidelity score** (:func:`model_fidelity_score`): the mean, over the validations
whose time falls in ``(as_of - fidelity_validation_window_days, as_of]``, of::

    s_v = 0.5 * max(0, 1 - error_v / 0.35) + 0.5 * min(1, tail_v / 0.05)
    tail_v = 2 * min(PIT_v, 1 - PIT_v)      # two-sided predictive tail probability

The first half rewards accuracy (1 at no error, 0 at the poor boundary); the second
rewards calibration (1 whenever the real ATE is inside the central 95% predictive
interval, falling linearly to 0 in the outer 5%). A validation without a PIT uses 1 or
0 for "inside the 95% interval"; one with neither uses its accuracy term alone. A
calibrated model averages about 0.975 on the second half, so it scores at least
``min_fidelity_score = 0.7`` when its mean error is under about 20% (the spec's
success metric). The score is ``None`` (unvalidated) below
``min_validations_for_score`` validations in the window.

The thresholds are arguments (:class:`FidelityThresholds` holds them, with the defaults
of ``config/digital_twin_config.yaml``); nothing here reads the settings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from bayestwin.core.predictive import level_key
from bayestwin.errors import InvalidInputError
from bayestwin.schemas import FidelityResult, utcnow
from bayestwin.vocabulary import FidelityGrade

__all__ = [
    "GRADE_BOUNDARIES",
    "FidelityThresholds",
    "error_floor",
    "fidelity_warning",
    "grade_prediction_error",
    "model_fidelity_score",
    "prediction_error",
    "result_time",
    "validation_score",
    "validations_in_window",
]

GRADE_BOUNDARIES: tuple[float, float, float] = (0.10, 0.20, 0.35)
"""Relative-error boundaries excellent | good | fair | poor (spec section 4)."""

SCORE_ERROR_CEILING = 0.35
"""Error at which a validation's accuracy term reaches 0 (the poor boundary)."""
SCORE_TAIL_ALPHA = 0.05
"""Two-sided predictive tail below which the calibration term falls under 1."""
SCORE_ACCURACY_WEIGHT = 0.5
"""Weight of the accuracy term in a validation's score."""


@dataclass(frozen=True)
class FidelityThresholds:
    """The thresholds of fidelity tracking (the settings of the same names).

    The defaults are those of ``config/digital_twin_config.yaml``; the service builds
    one from its settings.

    Attributes
    ----------
    min_effect_threshold : float
        Relative lift used for the error floor when the simulation carries none.
    min_fidelity_score : float
        Model fidelity score under which simulations warn.
    fidelity_validation_window_days : int
        Window of validations that make up the score.
    min_validations_for_score : int
        Validations in the window needed for a score (fewer: unvalidated).
    """

    min_effect_threshold: float = 0.05
    min_fidelity_score: float = 0.7
    fidelity_validation_window_days: int = 90
    min_validations_for_score: int = 3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_effect_threshold) and self.min_effect_threshold >= 0.0):
            raise InvalidInputError(
                f"min_effect_threshold must be >= 0, got {self.min_effect_threshold}",
                field="min_effect_threshold",
            )
        if not 0.0 <= self.min_fidelity_score <= 1.0:
            raise InvalidInputError(
                f"min_fidelity_score must be in [0, 1], got {self.min_fidelity_score}",
                field="min_fidelity_score",
            )
        for name in ("fidelity_validation_window_days", "min_validations_for_score"):
            if getattr(self, name) <= 0:
                raise InvalidInputError(
                    f"{name} must be > 0, got {getattr(self, name)}", field=name
                )


def error_floor(
    *,
    control_mean: float | None,
    min_effect_threshold: float | None,
    actual_se: float | None,
) -> float:
    """Denominator floor of the relative prediction error.

    Parameters
    ----------
    control_mean : float, optional
        Mean outcome of the control arm.
    min_effect_threshold : float, optional
        Smallest relative lift worth acting on.
    actual_se : float, optional
        Standard error of the real ATE.

    Returns
    -------
    float
        ``min_effect_threshold * |control_mean|`` when both are given and the product is
        positive, else ``actual_se`` (0 when that is missing too).
    """
    if control_mean is not None and min_effect_threshold is not None:
        floor = abs(min_effect_threshold * control_mean)
        if floor > 0.0 and math.isfinite(floor):
            return float(floor)
    return float(actual_se) if actual_se is not None else 0.0


def prediction_error(simulated_ate: float, actual_ate: float, floor: float) -> float:
    """Relative prediction error ``|simulated - actual| / max(|actual|, floor)``.

    Parameters
    ----------
    simulated_ate, actual_ate : float
        Predicted and real ATE.
    floor : float
        Smallest denominator (see :func:`error_floor`), >= 0.

    Returns
    -------
    float
        The error (0.12 is 12%).

    Raises
    ------
    InvalidInputError
        If ``floor`` is negative, or both ``|actual_ate|`` and ``floor`` are 0 (the
        error is undefined).
    """
    if floor < 0.0 or not math.isfinite(floor):
        raise InvalidInputError(f"floor must be finite and >= 0, got {floor}", field="floor")
    denom = max(abs(actual_ate), floor)
    if denom == 0.0:
        raise InvalidInputError(
            "prediction error undefined: the real ATE and the floor are both 0",
            field="actual_ate",
        )
    return abs(simulated_ate - actual_ate) / denom


def grade_prediction_error(error: float | None) -> FidelityGrade:
    """Fidelity grade of a relative prediction error (spec section 4).

    ``[0, 0.10)`` excellent, ``[0.10, 0.20)`` good, ``[0.20, 0.35]`` fair,
    ``(0.35, inf)`` poor; ``None`` (no real result yet) is unvalidated. Comparisons are
    exact on the float given.

    Parameters
    ----------
    error : float or None
        Relative error, >= 0.

    Returns
    -------
    FidelityGrade
    """
    if error is None:
        return FidelityGrade.UNVALIDATED
    if math.isnan(error) or error < 0.0:
        raise InvalidInputError(
            f"prediction error must be >= 0, got {error}", field="prediction_error"
        )
    excellent, good, fair = GRADE_BOUNDARIES
    if error < excellent:
        return FidelityGrade.EXCELLENT
    if error < good:
        return FidelityGrade.GOOD
    if error <= fair:
        return FidelityGrade.FAIR
    return FidelityGrade.POOR


def validation_score(result: FidelityResult) -> float | None:
    """Score of one validation in [0, 1] (module docstring).

    Parameters
    ----------
    result : FidelityResult
        One validation.

    Returns
    -------
    float or None
        The score; ``None`` if the result is unvalidated.
    """
    if result.actual_ate is None or result.prediction_error is None:
        return None
    accuracy = max(0.0, 1.0 - result.prediction_error / SCORE_ERROR_CEILING)
    if result.pit is not None:
        tail = 2.0 * min(result.pit, 1.0 - result.pit)
        calibration: float | None = min(1.0, tail / SCORE_TAIL_ALPHA)
    else:
        hit = result.in_predictive_interval.get(level_key(1.0 - SCORE_TAIL_ALPHA))
        calibration = None if hit is None else float(hit)
    if calibration is None:
        return accuracy
    return SCORE_ACCURACY_WEIGHT * accuracy + (1.0 - SCORE_ACCURACY_WEIGHT) * calibration


def result_time(result: FidelityResult) -> datetime:
    """When a validation happened: ``validated_at``, else ``created_at``."""
    return result.validated_at if result.validated_at is not None else result.created_at


def validations_in_window(
    history: Sequence[FidelityResult], as_of: datetime, window_days: int
) -> list[FidelityResult]:
    """The validated results whose time lies in ``(as_of - window_days, as_of]``.

    Parameters
    ----------
    history : sequence of FidelityResult
        A model's results; unvalidated ones are left out.
    as_of : datetime
        End of the window.
    window_days : int
        Length of the window.

    Returns
    -------
    list of FidelityResult
        In the order given.
    """
    start = as_of - timedelta(days=window_days)
    return [
        r
        for r in history
        if r.actual_ate is not None
        and r.prediction_error is not None
        and start < result_time(r) <= as_of
    ]


def model_fidelity_score(
    history: Sequence[FidelityResult],
    *,
    as_of: datetime | None = None,
    window_days: int = FidelityThresholds.fidelity_validation_window_days,
    min_validations: int = FidelityThresholds.min_validations_for_score,
) -> float | None:
    """Model fidelity score over a window of validations (module docstring).

    Parameters
    ----------
    history : sequence of FidelityResult
        Past results of one model; unvalidated ones are ignored.
    as_of : datetime, optional
        End of the window (default: now, UTC).
    window_days : int
        Length of the window; a validation counts when its ``validated_at`` (else
        ``created_at``) lies in ``(as_of - window_days, as_of]``.
    min_validations : int
        Fewer validations in the window give ``None`` (unvalidated).

    Returns
    -------
    float or None
        The mean validation score, in [0, 1].
    """
    end = as_of if as_of is not None else utcnow()
    scores = [validation_score(r) for r in validations_in_window(history, end, window_days)]
    valid = [s for s in scores if s is not None]
    if len(valid) < min_validations:
        return None
    return float(np.clip(np.mean(valid), 0.0, 1.0))


def fidelity_warning(
    score: float | None,
    thresholds: FidelityThresholds | None = None,
    *,
    n_validations: int | None = None,
) -> tuple[bool, str | None]:
    """Whether simulations of a model should carry a fidelity warning.

    Parameters
    ----------
    score : float or None
        The model fidelity score; ``None`` (unvalidated) never warns.
    thresholds : FidelityThresholds, optional
        Source of ``min_fidelity_score`` and the window length (default: the defaults).
    n_validations : int, optional
        Validations behind the score, quoted in the reason.

    Returns
    -------
    (bool, str or None)
        ``(True, reason)`` when ``score < min_fidelity_score``, else ``(False, None)``.
    """
    limits = thresholds if thresholds is not None else FidelityThresholds()
    if score is None or score >= limits.min_fidelity_score:
        return False, None
    basis = f"{n_validations} validations" if n_validations is not None else "validations"
    return True, (
        f"model fidelity score {score:.2f} is below min_fidelity_score "
        f"{limits.min_fidelity_score:.2f} ({basis} in the last "
        f"{limits.fidelity_validation_window_days} days); treat this simulation with caution"
    )
