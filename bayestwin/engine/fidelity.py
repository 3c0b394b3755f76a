"""Fidelity: compare simulations with real experiments, grade them, check calibration.

Pure NumPy, SciPy and pandas; nothing here touches storage. The tracker works on the
results it is given (a list of past :class:`~bayestwin.schemas.FidelityResult`) and
returns new values; persisting them is the store's job.

The rules, in one place
-----------------------

**Real result.** An :class:`~bayestwin.schemas.ExperimentOutcome`, or a DataFrame with
one row per unit (``arm``, ``outcome``) turned into one by :func:`outcome_from_frame`:
the ATE is the difference in arm means and its standard error is
``sqrt(v_t / n_t + v_c / n_c)`` with ``v = p (1 - p)`` per arm for a bernoulli outcome and
the sample variance (``ddof=1``, Welch) otherwise. When an outcome gives a CI but no SE,
``se = (ci_upper - ci_lower) / (2 z)`` with ``z`` the normal quantile of ``ci_level``.

**Predictive distribution of the observed ATE** (:class:`ATEPredictive`). The
simulation's ``ate_draws`` are the posterior of the *population* ATE; a real test
observes that ATE plus its own sampling noise. The predictive is the normal mixture
``(1 / D) sum_d Normal(ate_d, se^2)`` with ``se`` the real test's standard error (the
reported one by default, or :func:`bayestwin.engine.simulation.observed_ate_se`,
``sqrt(sd_t^2 / n_t + sd_c^2 / n_c)``, from the simulation's predicted outcome sds and
the arm sizes). Its CDF, quantiles and intervals are exact (no sampling); the
simulation module's ``observed_ate_predictive`` draws from the same distribution. A
simulation without ``ate_draws`` is approximated by a normal posterior with sd
``sd_ci = (ci_upper - ci_lower) / (2 z)``.

**Prediction error** (:func:`prediction_error`)::

    error = |simulated_ate - actual_ate| / max(|actual_ate|, floor)
    floor = min_effect_threshold * |control_mean|   (when positive)
            actual_se                                (otherwise)

``min_effect_threshold`` is the relative lift the simulation was judged against (the
simulation's own, else the settings'); ``control_mean`` is the real control arm's
mean (else the simulation's). So when the real effect is smaller than the smallest
effect worth acting on, the error is measured in units of that smallest effect, and it
stays finite at a real ATE of exactly zero.

**Grade** (:func:`grade_prediction_error`), on the spec's boundaries:
``[0, 0.10)`` excellent, ``[0.10, 0.20)`` good, ``[0.20, 0.35]`` fair, ``(0.35, inf)``
poor; unvalidated when there is no real result. Each boundary belongs to the worse
grade except 0.35, which stays fair because the spec calls poor "> 35%".

**Standardised error**: ``(mean(ate_draws) - actual_ate) / sqrt(var(ate_draws) + se^2)``
(``var`` with ``ddof=1``): the real result's distance from the predictive mean in
predictive sds, about Normal(0, 1) for a calibrated model. It uses the posterior *mean*
rather than ``simulated_ate`` (the engine reports the median), so that a skewed but
calibrated posterior is not read as biased. Without draws it is
``(simulated_ate - actual_ate) / sqrt(sd_ci^2 + se^2)``.

**PIT**: the predictive CDF at the real ATE, ``mean_d Phi((actual - ate_d) / se)``. The
real ATE is inside the central ``p`` predictive interval exactly when
``(1 - p) / 2 <= PIT <= (1 + p) / 2``.

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

**Calibration report** (:func:`calibration_report`), all tests at ``alpha = 0.01``:
``overconfident`` when, at some nominal level, the Wilson interval of the empirical
coverage (at confidence ``1 - alpha / L`` for ``L`` levels) lies wholly below the
nominal level (``underconfident``: wholly above); ``biased`` when a one-sample t-test
rejects a zero mean standardised error (``p < alpha``) and that mean is at least 0.1
in absolute value; ``drift`` when, in some (brand, twin type) group, the retrospective
CUSUM of standardised errors ``max_t |sum_{i<=t} (z_i - mean z)| / (sd z * sqrt(n))``
exceeds the Kolmogorov (Brownian-bridge) critical value at ``alpha / G`` for ``G``
groups (needs 8 validations in the group). Drift is a *change* in the mean error over
time; a constant offset is bias. ``pit_nonuniform`` when a Kolmogorov-Smirnov test of
the PIT values against Uniform(0, 1) gives ``p < alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special, stats

from bayestwin.settings import Settings, load_settings
from bayestwin.core.families import check_family
from bayestwin.schemas import ExperimentOutcome, FidelityResult, SimulationResult, utcnow
from bayestwin.engine.simulation import observed_ate_se
from bayestwin.vocabulary import FidelityGrade

__all__ = [
    "GRADE_BOUNDARIES",
    "PREDICTIVE_LEVELS",
    "ATEPredictive",
    "CalibrationReport",
    "CoverageRow",
    "DriftRow",
    "FidelitySummary",
    "FidelityTracker",
    "calibration_report",
    "error_floor",
    "fidelity_warning",
    "grade_prediction_error",
    "model_fidelity_score",
    "outcome_from_frame",
    "outcome_standard_error",
    "prediction_error",
    "retrospective_cusum",
    "validation_score",
    "wilson_interval",
]

PREDICTIVE_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.95)
"""Nominal levels of the central predictive intervals checked at every validation."""

GRADE_BOUNDARIES: tuple[float, float, float] = (0.10, 0.20, 0.35)
"""Relative-error boundaries excellent | good | fair | poor (spec section 4)."""

SCORE_ERROR_CEILING = 0.35
SCORE_TAIL_ALPHA = 0.05
SCORE_ACCURACY_WEIGHT = 0.5

REPORT_ALPHA = 0.01
BIAS_MIN_ABS = 0.1
DRIFT_MIN_N = 8

NoiseSource = Literal["reported", "model"]

_GRADE_RANK: dict[FidelityGrade, int] = {
    FidelityGrade.EXCELLENT: 0,
    FidelityGrade.GOOD: 1,
    FidelityGrade.FAIR: 2,
    FidelityGrade.POOR: 3,
}


def _level_key(level: float) -> str:
    return f"{level:g}"


def _z_two_sided(level: float) -> float:
    return float(special.ndtri(0.5 + level / 2.0))


# -- the real result -------------------------------------------------------------------


def outcome_standard_error(outcome: ExperimentOutcome) -> float:
    """Standard error of a real experiment's ATE.

    Parameters
    ----------
    outcome : ExperimentOutcome
        The real result.

    Returns
    -------
    float
        ``actual_se`` when given, else ``(ci_upper - ci_lower) / (2 z)`` with ``z`` the
        standard normal quantile at ``(1 + ci_level) / 2``.
    """
    if outcome.actual_se is not None:
        return float(outcome.actual_se)
    assert outcome.ci_lower is not None and outcome.ci_upper is not None  # schema-checked
    return float((outcome.ci_upper - outcome.ci_lower) / (2.0 * _z_two_sided(outcome.ci_level)))


def outcome_from_frame(
    frame: pd.DataFrame,
    family: str,
    *,
    arm_column: str = "arm",
    outcome_column: str = "outcome",
    treatment: str = "treatment",
    control: str = "control",
    ci_level: float = 0.95,
    actual_experiment_id: str | None = None,
    completed_at: datetime | None = None,
) -> ExperimentOutcome:
    """Summarise a real two-arm experiment, one row per unit, as an outcome.

    Parameters
    ----------
    frame : DataFrame
        One row per unit with an arm label and an outcome (a ``unit_id`` column may be
        present; it is not used).
    family : str
        Outcome family: ``"bernoulli"`` uses ``p (1 - p) / n`` per arm; ``"poisson"``,
        ``"neg_binomial"`` and ``"gaussian"`` use the sample variance over ``n``
        (``ddof=1``, Welch).
    arm_column, outcome_column : str
        Column names.
    treatment, control : str
        Labels of the two arms; any other label is an error.
    ci_level : float
        Level of the reported CI: normal for bernoulli, Welch t with
        Welch-Satterthwaite degrees of freedom otherwise.
    actual_experiment_id : str, optional
        Identifier carried into the result.
    completed_at : datetime, optional
        When the experiment ended.

    Returns
    -------
    ExperimentOutcome
        ``actual_ate = mean_t - mean_c``, its SE and CI, the arm sizes and the control
        mean.

    Raises
    ------
    ValueError
        On a missing column, an unknown arm label, an arm with fewer than 2 units,
        missing or non-numeric outcomes, non-0/1 bernoulli outcomes, or a standard
        error of 0 (every outcome equal within both arms).
    """
    fam = check_family(family)
    missing = [c for c in (arm_column, outcome_column) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"experiment frame lacks column(s) {missing}; it has {list(frame.columns)}"
        )
    arms = frame[arm_column].astype(str)
    unknown = sorted(set(arms) - {treatment, control})
    if unknown:
        raise ValueError(
            f"column {arm_column!r} has unknown arm label(s) {unknown[:5]}; "
            f"allowed: {treatment!r}, {control!r}"
        )
    try:
        y = pd.to_numeric(frame[outcome_column], errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"column {outcome_column!r} must be numeric: {exc}") from None
    if not np.isfinite(y).all():
        raise ValueError(f"column {outcome_column!r} has missing or infinite values")
    if fam == "bernoulli" and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"bernoulli outcomes in {outcome_column!r} must be 0 or 1")
    is_t = (arms == treatment).to_numpy()
    y_t, y_c = y[is_t], y[~is_t]
    n_t, n_c = len(y_t), len(y_c)
    if n_t < 2 or n_c < 2:
        raise ValueError(
            f"each arm needs at least 2 units; got {n_t} {treatment!r} and {n_c} {control!r}"
        )
    m_t, m_c = float(y_t.mean()), float(y_c.mean())
    if fam == "bernoulli":
        v_t, v_c = m_t * (1.0 - m_t), m_c * (1.0 - m_c)
    else:
        v_t, v_c = float(y_t.var(ddof=1)), float(y_c.var(ddof=1))
    a_t, a_c = v_t / n_t, v_c / n_c
    se = math.sqrt(a_t + a_c)
    if se <= 0.0:
        raise ValueError("the standard error is 0: every outcome is equal within both arms")
    if fam == "bernoulli":
        crit = _z_two_sided(ci_level)
    else:
        df = (a_t + a_c) ** 2 / (a_t**2 / (n_t - 1) + a_c**2 / (n_c - 1))
        crit = float(stats.t.ppf(0.5 + ci_level / 2.0, df))
    ate = m_t - m_c
    return ExperimentOutcome(
        actual_experiment_id=actual_experiment_id,
        actual_ate=ate,
        actual_se=se,
        ci_lower=ate - crit * se,
        ci_upper=ate + crit * se,
        ci_level=ci_level,
        n_treatment=n_t,
        n_control=n_c,
        control_mean=m_c,
        completed_at=completed_at,
    )


# -- the predictive distribution of the observed ATE ----------------------------------


@dataclass(frozen=True)
class ATEPredictive:
    """Predictive distribution of a real test's observed ATE: a normal mixture.

    ``(1 / D) sum_d Normal(draws[d], noise_sd^2)``; with ``noise_sd = 0`` it is the
    empirical distribution of the draws.

    Attributes
    ----------
    draws : ndarray, shape (D,)
        Posterior draws of the population ATE.
    noise_sd : float
        Standard deviation of the real test's sampling noise (its standard error).
    """

    draws: NDArray[np.float64]
    noise_sd: float

    def __post_init__(self) -> None:
        d = np.asarray(self.draws, dtype=float).reshape(-1)
        if d.size == 0 or not np.isfinite(d).all():
            raise ValueError("ATE draws must be a non-empty array of finite values")
        if not (math.isfinite(self.noise_sd) and self.noise_sd >= 0.0):
            raise ValueError(f"noise_sd must be finite and >= 0, got {self.noise_sd}")
        object.__setattr__(self, "draws", d)

    @property
    def mean(self) -> float:
        """Predictive mean: the mean of the draws."""
        return float(self.draws.mean())

    @property
    def var(self) -> float:
        """Predictive variance: ``var(draws) + noise_sd^2`` (draw variance with ddof=0)."""
        return float(self.draws.var() + self.noise_sd**2)

    def cdf(self, x: ArrayLike) -> NDArray[np.float64]:
        """Predictive CDF at ``x`` (any shape), exact.

        Parameters
        ----------
        x : array_like
            Values of the observed ATE.

        Returns
        -------
        ndarray
            ``P(observed ATE <= x)``, the shape of ``x``.
        """
        xa = np.asarray(x, dtype=float)
        if self.noise_sd == 0.0:
            return np.asarray((self.draws <= xa[..., None]).mean(axis=-1), dtype=float)
        u = (xa[..., None] - self.draws) / self.noise_sd
        return np.asarray(special.ndtr(u).mean(axis=-1), dtype=float)

    def pit(self, x: float) -> float:
        """Probability integral transform of one observed ATE: ``cdf(x)``."""
        return float(self.cdf(x))

    def quantile(self, q: float) -> float:
        """Predictive quantile (the root of ``cdf(x) = q``), exact to ~1e-10 of its scale.

        Parameters
        ----------
        q : float
            Probability in (0, 1).
        """
        if not 0.0 < q < 1.0:
            raise ValueError(f"q must be in (0, 1), got {q}")
        if self.noise_sd == 0.0:
            return float(np.quantile(self.draws, q))
        lo = float(self.draws.min()) - 12.0 * self.noise_sd
        hi = float(self.draws.max()) + 12.0 * self.noise_sd
        root = optimize.brentq(
            lambda v: float(self.cdf(v)) - q, lo, hi, xtol=1e-12 * (hi - lo), rtol=1e-14
        )
        return float(root)

    def interval(self, level: float) -> tuple[float, float]:
        """Central predictive interval at ``level``: quantiles ``(1 -+ level) / 2``."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        return (self.quantile(0.5 - level / 2.0), self.quantile(0.5 + level / 2.0))

    @classmethod
    def for_experiment(
        cls,
        ate_draws: ArrayLike,
        n_treatment: int,
        n_control: int,
        sd_control: float,
        sd_treated: float | None = None,
    ) -> ATEPredictive:
        """Predictive of a test with the given arm sizes and per-arm outcome sds.

        The noise sd is :func:`bayestwin.engine.simulation.observed_ate_se`,
        ``sqrt(sd_treated^2 / n_treatment + sd_control^2 / n_control)``; that module's
        :func:`~bayestwin.engine.simulation.observed_ate_predictive` samples the same
        distribution.

        Parameters
        ----------
        ate_draws : array_like
            Posterior draws of the population ATE.
        n_treatment, n_control : int
            Arm sizes.
        sd_control, sd_treated : float
            Outcome sd per unit in each arm (``sd_treated`` defaults to ``sd_control``).
        """
        se = float(observed_ate_se(n_treatment, n_control, sd_control, sd_treated))
        return cls(np.asarray(ate_draws, dtype=float), se)


def _posterior_draws(simulation: SimulationResult) -> tuple[NDArray[np.float64], float]:
    """Posterior ATE draws and the extra normal sd that stands for missing draws."""
    if simulation.ate_draws:
        return np.asarray(simulation.ate_draws, dtype=float), 0.0
    if simulation.simulated_ate is None:
        raise ValueError("the simulation has no simulated_ate; only a completed one validates")
    lo, hi = simulation.simulated_ci_lower, simulation.simulated_ci_upper
    sd = 0.0
    if lo is not None and hi is not None:
        sd = (hi - lo) / (2.0 * _z_two_sided(simulation.confidence_level))
    return np.array([simulation.simulated_ate]), float(sd)


# -- scalar rules ---------------------------------------------------------------------


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
    ValueError
        If both ``|actual_ate|`` and ``floor`` are 0 (the error is undefined).
    """
    if floor < 0.0 or not math.isfinite(floor):
        raise ValueError(f"floor must be finite and >= 0, got {floor}")
    denom = max(abs(actual_ate), floor)
    if denom == 0.0:
        raise ValueError("prediction error undefined: the real ATE and the floor are both 0")
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
    """
    if error is None:
        return FidelityGrade.UNVALIDATED
    if math.isnan(error) or error < 0.0:
        raise ValueError(f"prediction error must be >= 0, got {error}")
    excellent, good, fair = GRADE_BOUNDARIES
    if error < excellent:
        return FidelityGrade.EXCELLENT
    if error < good:
        return FidelityGrade.GOOD
    if error <= fair:
        return FidelityGrade.FAIR
    return FidelityGrade.POOR


def validation_score(result: FidelityResult) -> float | None:
    """Score of one validation in [0, 1] (module docstring); ``None`` if unvalidated."""
    if result.actual_ate is None or result.prediction_error is None:
        return None
    accuracy = max(0.0, 1.0 - result.prediction_error / SCORE_ERROR_CEILING)
    if result.pit is not None:
        tail = 2.0 * min(result.pit, 1.0 - result.pit)
        calibration: float | None = min(1.0, tail / SCORE_TAIL_ALPHA)
    else:
        hit = result.in_predictive_interval.get(_level_key(1.0 - SCORE_TAIL_ALPHA))
        calibration = None if hit is None else float(hit)
    if calibration is None:
        return accuracy
    return SCORE_ACCURACY_WEIGHT * accuracy + (1.0 - SCORE_ACCURACY_WEIGHT) * calibration


def _result_time(result: FidelityResult) -> datetime:
    return result.validated_at if result.validated_at is not None else result.created_at


def _in_window(
    history: Sequence[FidelityResult], as_of: datetime, window_days: int
) -> list[FidelityResult]:
    start = as_of - timedelta(days=window_days)
    return [
        r
        for r in history
        if r.actual_ate is not None
        and r.prediction_error is not None
        and start < _result_time(r) <= as_of
    ]


def model_fidelity_score(
    history: Sequence[FidelityResult],
    *,
    as_of: datetime | None = None,
    window_days: int = 90,
    min_validations: int = 3,
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
    scores = [validation_score(r) for r in _in_window(history, end, window_days)]
    valid = [s for s in scores if s is not None]
    if len(valid) < min_validations:
        return None
    return float(np.clip(np.mean(valid), 0.0, 1.0))


def fidelity_warning(
    score: float | None,
    settings: Settings | None = None,
    *,
    n_validations: int | None = None,
) -> tuple[bool, str | None]:
    """Whether simulations of a model should carry a fidelity warning.

    Parameters
    ----------
    score : float or None
        The model fidelity score; ``None`` (unvalidated) never warns.
    settings : Settings, optional
        Source of ``min_fidelity_score`` and the window length (default: loaded).
    n_validations : int, optional
        Validations behind the score, quoted in the reason.

    Returns
    -------
    (bool, str or None)
        ``(True, reason)`` when ``score < min_fidelity_score``, else ``(False, None)``.
    """
    cfg = settings if settings is not None else load_settings()
    if score is None or score >= cfg.min_fidelity_score:
        return False, None
    basis = f"{n_validations} validations" if n_validations is not None else "validations"
    return True, (
        f"model fidelity score {score:.2f} is below min_fidelity_score "
        f"{cfg.min_fidelity_score:.2f} ({basis} in the last "
        f"{cfg.fidelity_validation_window_days} days); treat this simulation with caution"
    )


# -- the tracker ------------------------------------------------------------------------


@dataclass(frozen=True)
class FidelitySummary:
    """A model's fidelity over its validation window.

    Attributes
    ----------
    score : float or None
        Model fidelity score; ``None`` while unvalidated.
    n_validations : int
        Validations in the window.
    n_required : int
        ``min_validations_for_score``.
    warning : bool
        Whether the score is below ``min_fidelity_score``.
    reason : str or None
        Why it warns.
    grade_counts : dict of str to int
        Validations per grade in the window.
    """

    score: float | None
    n_validations: int
    n_required: int
    warning: bool
    reason: str | None
    grade_counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation."""
        return {
            "score": self.score,
            "n_validations": self.n_validations,
            "n_required": self.n_required,
            "warning": self.warning,
            "reason": self.reason,
            "grade_counts": dict(self.grade_counts),
        }


class FidelityTracker:
    """Validate simulations against real experiments and score a model's fidelity.

    The tracker holds settings only; history is passed in and results are returned.

    Parameters
    ----------
    settings : Settings, optional
        Thresholds (default: :func:`~bayestwin.settings.load_settings`).
    noise : {"reported", "model"}
        Sampling noise of the real test in the predictive: its reported standard error,
        or the simulation's predicted outcome sds at the real arm sizes.
    levels : sequence of float
        Levels of the central predictive intervals to check.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        noise: NoiseSource = "reported",
        levels: Sequence[float] = PREDICTIVE_LEVELS,
    ) -> None:
        if noise not in ("reported", "model"):
            raise ValueError(f"noise must be 'reported' or 'model', got {noise!r}")
        for level in levels:
            if not 0.0 < level < 1.0:
                raise ValueError(f"interval levels must be in (0, 1), got {level}")
        self.settings = settings if settings is not None else load_settings()
        self.noise: NoiseSource = noise
        self.levels = tuple(float(v) for v in levels)

    # -- one validation ----------------------------------------------------------------
    def predictive(self, simulation: SimulationResult, outcome: ExperimentOutcome) -> ATEPredictive:
        """Predictive distribution of the observed ATE of ``outcome``'s test.

        Parameters
        ----------
        simulation : SimulationResult
            A completed simulation.
        outcome : ExperimentOutcome
            The real result (its SE and arm sizes set the sampling noise).
        """
        draws, extra_sd = _posterior_draws(simulation)
        se = self.sampling_se(simulation, outcome)
        return ATEPredictive(draws, math.sqrt(se**2 + extra_sd**2))

    def sampling_se(self, simulation: SimulationResult, outcome: ExperimentOutcome) -> float:
        """Standard error of the real test's ATE used as its sampling noise.

        ``noise="reported"``: the outcome's own SE (or the one implied by its CI).
        ``noise="model"``: ``sqrt(sd_t^2 / n_t + sd_c^2 / n_c)`` from the simulation's
        predicted outcome sds and the real arm sizes.
        """
        if self.noise == "reported":
            return outcome_standard_error(outcome)
        sd_t, sd_c = simulation.outcome_sd_treated, simulation.outcome_sd_control
        if sd_t is None or sd_c is None:
            raise ValueError(
                "noise='model' needs the simulation's outcome_sd_treated and outcome_sd_control"
            )
        return float(observed_ate_se(outcome.n_treatment, outcome.n_control, sd_c, sd_t))

    def validate(
        self,
        simulation: SimulationResult,
        outcome: ExperimentOutcome | pd.DataFrame | None,
        *,
        family: str | None = None,
        actual_experiment_id: str | None = None,
        validated_at: datetime | None = None,
        history: Sequence[FidelityResult] | None = None,
    ) -> FidelityResult:
        """Compare one simulation with its real experiment.

        Parameters
        ----------
        simulation : SimulationResult
            A completed simulation (``simulated_ate`` set; ``ate_draws`` recommended).
        outcome : ExperimentOutcome, DataFrame or None
            The real result; a DataFrame goes through :func:`outcome_from_frame`.
            ``None`` gives an unvalidated result (no comparison yet).
        family : str, optional
            Outcome family for a DataFrame (default: the simulation's).
        actual_experiment_id : str, optional
            Overrides the outcome's identifier.
        validated_at : datetime, optional
            Time of the validation (default: now, UTC).
        history : sequence of FidelityResult, optional
            The model's earlier results; when given, ``model_fidelity_score`` and
            ``fidelity_warning`` of the returned result cover them plus this one.

        Returns
        -------
        FidelityResult
            Error, grade, standardised error, PIT and predictive-interval hits.
        """
        if simulation.simulated_ate is None:
            raise ValueError("the simulation has no simulated_ate; only a completed one validates")
        sim_ate = float(simulation.simulated_ate)
        when = validated_at if validated_at is not None else utcnow()
        if outcome is None:
            pending = FidelityResult(
                simulation_id=simulation.simulation_id,
                actual_experiment_id=actual_experiment_id,
                simulated_ate=sim_ate,
                fidelity_grade=FidelityGrade.UNVALIDATED,
                validation_notes="no real experiment result yet",
            )
            return self._with_score(pending, history, when)
        if isinstance(outcome, pd.DataFrame):
            fam = family if family is not None else simulation.outcome_family
            if fam is None:
                raise ValueError("give family= (the simulation has no outcome_family)")
            outcome = outcome_from_frame(outcome, fam, actual_experiment_id=actual_experiment_id)
        real = float(outcome.actual_ate)
        se = outcome_standard_error(outcome)
        pred = self.predictive(simulation, outcome)

        control_mean = (
            outcome.control_mean if outcome.control_mean is not None else simulation.control_mean
        )
        threshold = (
            simulation.min_effect_threshold
            if simulation.min_effect_threshold is not None
            else self.settings.min_effect_threshold
        )
        floor = error_floor(control_mean=control_mean, min_effect_threshold=threshold, actual_se=se)
        error = prediction_error(sim_ate, real, floor)
        grade = grade_prediction_error(error)

        draws, extra_sd = _posterior_draws(simulation)
        var_sim = float(draws.var(ddof=1)) if draws.size > 1 else extra_sd**2
        denom = math.sqrt(var_sim + self.sampling_se(simulation, outcome) ** 2)
        z = (float(draws.mean()) - real) / denom if denom > 0.0 else None
        pit = float(np.clip(pred.pit(real), 0.0, 1.0))
        intervals = {_level_key(lv): pred.interval(lv) for lv in self.levels}
        hits = {k: bool(lo <= real <= hi) for k, (lo, hi) in intervals.items()}

        notes = (
            f"real ATE {real:.6g} (SE {se:.3g}, n {outcome.n_treatment}/{outcome.n_control}) "
            f"vs simulated {sim_ate:.6g}; error {error:.1%} of max(|real|, {floor:.3g}) "
            f"-> {grade.value}; PIT {pit:.3f}; inside predictive "
            + ", ".join(f"{float(k):.0%}: {'yes' if v else 'no'}" for k, v in hits.items())
        )
        result = FidelityResult(
            simulation_id=simulation.simulation_id,
            actual_experiment_id=actual_experiment_id or outcome.actual_experiment_id,
            simulated_ate=sim_ate,
            actual_ate=real,
            actual_se=se,
            prediction_error=error,
            fidelity_grade=grade,
            standardized_error=z,
            pit=pit,
            in_predictive_interval=hits,
            predictive_intervals=intervals,
            validation_notes=notes,
            validated_at=when,
        )
        return self._with_score(result, history, when)

    def _with_score(
        self,
        result: FidelityResult,
        history: Sequence[FidelityResult] | None,
        as_of: datetime,
    ) -> FidelityResult:
        if history is None:
            return result
        summary = self.summarize([*history, result], as_of=as_of)
        return result.model_copy(
            update={"model_fidelity_score": summary.score, "fidelity_warning": summary.warning}
        )

    # -- a model's history ---------------------------------------------------------------
    def model_fidelity_score(
        self, history: Sequence[FidelityResult], *, as_of: datetime | None = None
    ) -> float | None:
        """Model fidelity score with this tracker's window and minimum count."""
        return model_fidelity_score(
            history,
            as_of=as_of,
            window_days=self.settings.fidelity_validation_window_days,
            min_validations=self.settings.min_validations_for_score,
        )

    def summarize(
        self, history: Sequence[FidelityResult], *, as_of: datetime | None = None
    ) -> FidelitySummary:
        """Score, validation count, warning and grade counts over the window.

        Parameters
        ----------
        history : sequence of FidelityResult
            The model's results.
        as_of : datetime, optional
            End of the window (default: now, UTC).
        """
        end = as_of if as_of is not None else utcnow()
        window = _in_window(history, end, self.settings.fidelity_validation_window_days)
        score = self.model_fidelity_score(history, as_of=end)
        warn, reason = fidelity_warning(score, self.settings, n_validations=len(window))
        counts = {g.value: 0 for g in _GRADE_RANK}
        for r in window:
            counts[r.fidelity_grade.value] = counts.get(r.fidelity_grade.value, 0) + 1
        return FidelitySummary(
            score=score,
            n_validations=len(window),
            n_required=self.settings.min_validations_for_score,
            warning=warn,
            reason=reason,
            grade_counts=counts,
        )

    def warning(
        self, history: Sequence[FidelityResult], *, as_of: datetime | None = None
    ) -> tuple[bool, str | None]:
        """``(True, reason)`` when the model's score is under ``min_fidelity_score``."""
        summary = self.summarize(history, as_of=as_of)
        return summary.warning, summary.reason


# -- calibration across many validations -------------------------------------------------


def wilson_interval(hits: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Parameters
    ----------
    hits : int
        Successes, ``0 <= hits <= n``.
    n : int
        Trials, > 0.
    confidence : float
        Two-sided confidence of the interval.

    Returns
    -------
    (float, float)
        Lower and upper bounds, within [0, 1].
    """
    if n <= 0 or not 0 <= hits <= n:
        raise ValueError(f"need 0 <= hits <= n and n > 0, got hits={hits}, n={n}")
    z = _z_two_sided(confidence)
    p = hits / n
    denom = 1.0 + z**2 / n
    centre = (p + z**2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z**2 / (4.0 * n**2)) / denom
    lower = 0.0 if hits == 0 else max(0.0, centre - half)
    upper = 1.0 if hits == n else min(1.0, centre + half)
    return lower, upper


def retrospective_cusum(values: ArrayLike) -> tuple[float, float, int | None]:
    """Retrospective CUSUM test of a change in mean, in time order.

    The statistic is ``max_t |sum_{i<=t} (x_i - mean x)| / (sd(x) * sqrt(n))``
    (``sd`` with ``ddof=1``); with no change it tends to the supremum of a Brownian
    bridge, whose law (Kolmogorov's, ``scipy.stats.kstwobign``) gives the p-value.

    Parameters
    ----------
    values : array_like
        Standardised errors in time order.

    Returns
    -------
    statistic : float
    p_value : float
    change_index : int or None
        Index of the last value before the most likely change (``None`` when the
        series is too short or constant).
    """
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return 0.0, 1.0, None
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        return 0.0, 1.0, None
    path = np.cumsum(x - x.mean())
    idx = int(np.argmax(np.abs(path[:-1]))) if x.size > 1 else 0
    stat = float(np.abs(path[idx]) / (sd * math.sqrt(x.size)))
    return stat, float(stats.kstwobign.sf(stat)), idx


@dataclass(frozen=True)
class CoverageRow:
    """Empirical coverage of the central predictive interval at one nominal level.

    Attributes
    ----------
    level : float
        Nominal level.
    n, hits : int
        Validations checked and how many fell inside.
    coverage : float or None
        ``hits / n``.
    lower, upper : float or None
        Wilson interval of the coverage at ``confidence``.
    confidence : float
        Confidence of that interval.
    """

    level: float
    n: int
    hits: int
    coverage: float | None
    lower: float | None
    upper: float | None
    confidence: float


@dataclass(frozen=True)
class DriftRow:
    """Retrospective CUSUM of one group's standardised errors.

    Attributes
    ----------
    group : str
        The (brand, twin type) label.
    n : int
        Validations with a standardised error.
    statistic, p_value, critical_value : float or None
        CUSUM statistic, its p-value and the critical value at the report's
        Bonferroni-adjusted level (``None`` below 8 validations).
    change_index : int or None
        Index (in time order) of the last validation before the likely change.
    change_at : datetime or None
        Its time.
    mean_before, mean_after : float or None
        Mean standardised error up to and after the change.
    drift : bool
        Whether the statistic exceeds the critical value.
    """

    group: str
    n: int
    statistic: float | None
    p_value: float | None
    critical_value: float | None
    change_index: int | None
    change_at: datetime | None
    mean_before: float | None
    mean_after: float | None
    drift: bool


@dataclass(frozen=True)
class CalibrationReport:
    """Calibration of a model (or a set of models) across many validations.

    Attributes
    ----------
    n_results, n_validated : int
        Results given, and those with a real ATE.
    alpha : float
        Family-wise level of each flag's test.
    coverage : tuple of CoverageRow
        Empirical vs nominal coverage of the predictive intervals.
    pit_values : tuple of float
        PIT values in time order.
    pit_ks_statistic, pit_ks_p_value : float or None
        Kolmogorov-Smirnov test of the PITs against Uniform(0, 1) (5 values or more).
    pit_chi2_statistic, pit_chi2_p_value : float or None
        Chi-square test of the PIT counts in ``pit_bins`` equal bins (10 values or more).
    pit_bins : int
        Number of bins of that test, ``min(10, max(2, n // 5))``.
    mean_error, median_error : float or None
        Of the relative prediction errors.
    mean_standardized_error, sd_standardized_error : float or None
        Of the standardised errors (0 and 1 when calibrated).
    bias_p_value : float or None
        One-sample t-test of a zero mean standardised error.
    grade_counts : dict of str to int
        Results per fidelity grade (unvalidated included).
    drift_by_group : tuple of DriftRow
        Drift test per (brand, twin type).
    overconfident, underconfident, biased, drift, pit_nonuniform : bool
        The flags (rules in the module docstring).
    reasons : tuple of str
        One line per raised flag.
    """

    n_results: int
    n_validated: int
    alpha: float
    coverage: tuple[CoverageRow, ...]
    pit_values: tuple[float, ...]
    pit_ks_statistic: float | None
    pit_ks_p_value: float | None
    pit_chi2_statistic: float | None
    pit_chi2_p_value: float | None
    pit_bins: int
    mean_error: float | None
    median_error: float | None
    mean_standardized_error: float | None
    sd_standardized_error: float | None
    bias_p_value: float | None
    grade_counts: dict[str, int]
    drift_by_group: tuple[DriftRow, ...]
    overconfident: bool
    underconfident: bool
    biased: bool
    drift: bool
    pit_nonuniform: bool
    reasons: tuple[str, ...] = ()

    @property
    def flags(self) -> list[str]:
        """Names of the raised flags."""
        names = ("overconfident", "underconfident", "biased", "drift", "pit_nonuniform")
        return [name for name in names if getattr(self, name)]

    @property
    def calibrated(self) -> bool:
        """True when no flag is raised."""
        return not self.flags

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation (datetimes as ISO strings)."""
        return {
            "n_results": self.n_results,
            "n_validated": self.n_validated,
            "alpha": self.alpha,
            "coverage": [vars(row).copy() for row in self.coverage],
            "pit_values": list(self.pit_values),
            "pit_ks_statistic": self.pit_ks_statistic,
            "pit_ks_p_value": self.pit_ks_p_value,
            "pit_chi2_statistic": self.pit_chi2_statistic,
            "pit_chi2_p_value": self.pit_chi2_p_value,
            "pit_bins": self.pit_bins,
            "mean_error": self.mean_error,
            "median_error": self.median_error,
            "mean_standardized_error": self.mean_standardized_error,
            "sd_standardized_error": self.sd_standardized_error,
            "bias_p_value": self.bias_p_value,
            "grade_counts": dict(self.grade_counts),
            "drift_by_group": [
                {
                    **vars(row),
                    "change_at": row.change_at.isoformat() if row.change_at else None,
                }
                for row in self.drift_by_group
            ],
            "flags": self.flags,
            "overconfident": self.overconfident,
            "underconfident": self.underconfident,
            "biased": self.biased,
            "drift": self.drift,
            "pit_nonuniform": self.pit_nonuniform,
            "reasons": list(self.reasons),
        }

    def to_markdown(self) -> str:
        """The report as Markdown tables."""

        def num(v: float | None, fmt: str = ".3f") -> str:
            return "–" if v is None else format(v, fmt)

        lines = [
            "## Calibration report",
            "",
            f"{self.n_validated} validated of {self.n_results} results; "
            f"flags: {', '.join(self.flags) or 'none'} (alpha {self.alpha:g}).",
        ]
        lines += [f"- {r}" for r in self.reasons]
        lines += [
            "",
            "| nominal | n | inside | coverage | Wilson interval |",
            "|---|---|---|---|---|",
        ]
        for row in self.coverage:
            lines.append(
                f"| {row.level:.0%} | {row.n} | {row.hits} | {num(row.coverage)} | "
                f"[{num(row.lower)}, {num(row.upper)}] |"
            )
        lines += [
            "",
            "| statistic | value |",
            "|---|---|",
            f"| mean error | {num(self.mean_error)} |",
            f"| median error | {num(self.median_error)} |",
            f"| mean standardised error | {num(self.mean_standardized_error)} |",
            f"| sd standardised error | {num(self.sd_standardized_error)} |",
            f"| bias t-test p | {num(self.bias_p_value, '.3g')} |",
            f"| PIT KS statistic | {num(self.pit_ks_statistic)} |",
            f"| PIT KS p | {num(self.pit_ks_p_value, '.3g')} |",
            f"| PIT chi-square p ({self.pit_bins} bins) | {num(self.pit_chi2_p_value, '.3g')} |",
            "",
            "| grade | count |",
            "|---|---|",
        ]
        lines += [f"| {g} | {c} |" for g, c in self.grade_counts.items()]
        if self.drift_by_group:
            lines += [
                "",
                "| group | n | CUSUM | critical | p | change after | mean z before | mean z after "
                "| drift |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for d in self.drift_by_group:
                when = d.change_at.date().isoformat() if d.change_at else "–"
                lines.append(
                    f"| {d.group} | {d.n} | {num(d.statistic)} | {num(d.critical_value)} | "
                    f"{num(d.p_value, '.3g')} | {when} | {num(d.mean_before)} | "
                    f"{num(d.mean_after)} | {'yes' if d.drift else 'no'} |"
                )
        return "\n".join(lines) + "\n"


def _group_label(group: Hashable) -> str:
    if isinstance(group, tuple):
        return "/".join(str(g) for g in group)
    return str(group)


def _hit(result: FidelityResult, level: float) -> bool | None:
    hit = result.in_predictive_interval.get(_level_key(level))
    if hit is not None:
        return bool(hit)
    if result.pit is not None:
        return abs(result.pit - 0.5) <= level / 2.0
    return None


def calibration_report(
    results: Sequence[FidelityResult],
    groups: Sequence[Hashable] | None = None,
    *,
    levels: Sequence[float] = PREDICTIVE_LEVELS,
    alpha: float = REPORT_ALPHA,
) -> CalibrationReport:
    """Calibration of the predictions behind many validations.

    Parameters
    ----------
    results : sequence of FidelityResult
        Validations (unvalidated ones are only counted).
    groups : sequence of hashable, optional
        The (brand, twin type) of each result, parallel to ``results`` (a tuple is
        shown as ``"brand/twin_type"``); the drift test runs per group. Default: one
        group.
    levels : sequence of float
        Nominal levels whose coverage is reported. A level among the result's
        ``in_predictive_interval`` keys uses that hit; any other level is read from
        the PIT (inside the central ``p`` interval iff ``|PIT - 0.5| <= p / 2``).
    alpha : float
        Family-wise level of each flag (module docstring).

    Returns
    -------
    CalibrationReport
        Coverage, PIT tests, errors, grade counts, drift and flags.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if groups is not None and len(groups) != len(results):
        raise ValueError(f"groups has {len(groups)} entries for {len(results)} results")
    labels = [_group_label(g) for g in groups] if groups is not None else ["all"] * len(results)
    order = sorted(range(len(results)), key=lambda i: _result_time(results[i]))
    validated = [i for i in order if results[i].actual_ate is not None]
    done = [results[i] for i in validated]

    grade_counts = {g.value: 0 for g in FidelityGrade}
    for r in results:
        grade_counts[r.fidelity_grade.value] += 1

    cov_conf = 1.0 - alpha / max(1, len(levels))
    coverage: list[CoverageRow] = []
    for level in levels:
        hits = [h for h in (_hit(r, level) for r in done) if h is not None]
        n, k = len(hits), int(sum(hits))
        lo, hi = wilson_interval(k, n, cov_conf) if n else (None, None)
        coverage.append(CoverageRow(float(level), n, k, k / n if n else None, lo, hi, cov_conf))
    overconfident = any(r.upper is not None and r.upper < r.level for r in coverage)
    underconfident = any(r.lower is not None and r.lower > r.level for r in coverage)

    pits = np.array([r.pit for r in done if r.pit is not None], dtype=float)
    n_bins = min(10, max(2, pits.size // 5))
    ks_stat = ks_p = chi_stat = chi_p = None
    if pits.size >= 5:
        ks = stats.kstest(pits, "uniform")
        ks_stat, ks_p = float(ks.statistic), float(ks.pvalue)
    if pits.size >= 10:
        counts, _ = np.histogram(pits, bins=np.linspace(0.0, 1.0, n_bins + 1))
        chi = stats.chisquare(counts)
        chi_stat, chi_p = float(chi.statistic), float(chi.pvalue)
    pit_nonuniform = ks_p is not None and ks_p < alpha

    errors = np.array([r.prediction_error for r in done if r.prediction_error is not None])
    zs = np.array([r.standardized_error for r in done if r.standardized_error is not None])
    mean_z = float(zs.mean()) if zs.size else None
    sd_z = float(zs.std(ddof=1)) if zs.size > 1 else None
    bias_p = None
    if zs.size > 1 and sd_z:
        bias_p = float(stats.ttest_1samp(zs, 0.0).pvalue)
    biased = bool(
        bias_p is not None and mean_z is not None and bias_p < alpha and abs(mean_z) >= BIAS_MIN_ABS
    )

    by_group: dict[str, list[int]] = {}
    for i in validated:
        if results[i].standardized_error is not None:
            by_group.setdefault(labels[i], []).append(i)
    n_tested = sum(1 for idx in by_group.values() if len(idx) >= DRIFT_MIN_N)
    crit = float(stats.kstwobign.isf(alpha / max(1, n_tested)))
    drift_rows: list[DriftRow] = []
    for label, idx in by_group.items():
        z_g = np.array([results[i].standardized_error for i in idx], dtype=float)
        if z_g.size < DRIFT_MIN_N:
            drift_rows.append(
                DriftRow(label, int(z_g.size), None, None, None, None, None, None, None, False)
            )
            continue
        stat, p, change = retrospective_cusum(z_g)
        at = _result_time(results[idx[change]]) if change is not None else None
        before = float(z_g[: change + 1].mean()) if change is not None else None
        after = float(z_g[change + 1 :].mean()) if change is not None else None
        drift_rows.append(
            DriftRow(label, int(z_g.size), stat, p, crit, change, at, before, after, stat > crit)
        )
    drift = any(d.drift for d in drift_rows)

    reasons: list[str] = []
    for row in coverage:
        if row.upper is not None and row.upper < row.level:
            reasons.append(
                f"overconfident: {row.level:.0%} predictive intervals covered "
                f"{row.coverage:.1%} of {row.n} real results (Wilson upper {row.upper:.1%})"
            )
        if row.lower is not None and row.lower > row.level:
            reasons.append(
                f"underconfident: {row.level:.0%} predictive intervals covered "
                f"{row.coverage:.1%} of {row.n} real results (Wilson lower {row.lower:.1%})"
            )
    if biased:
        reasons.append(f"biased: mean standardised error {mean_z:+.2f} (t-test p = {bias_p:.2g})")
    reasons += [
        f"drift in {d.group}: CUSUM {d.statistic:.2f} > {d.critical_value:.2f}, mean "
        f"standardised error {d.mean_before:+.2f} before and {d.mean_after:+.2f} after "
        f"validation {d.change_index}"
        for d in drift_rows
        if d.drift
    ]
    if pit_nonuniform:
        reasons.append(f"PIT values not uniform (KS p = {ks_p:.2g})")

    return CalibrationReport(
        n_results=len(results),
        n_validated=len(done),
        alpha=alpha,
        coverage=tuple(coverage),
        pit_values=tuple(float(p) for p in pits),
        pit_ks_statistic=ks_stat,
        pit_ks_p_value=ks_p,
        pit_chi2_statistic=chi_stat,
        pit_chi2_p_value=chi_p,
        pit_bins=n_bins,
        mean_error=float(errors.mean()) if errors.size else None,
        median_error=float(np.median(errors)) if errors.size else None,
        mean_standardized_error=mean_z,
        sd_standardized_error=sd_z,
        bias_p_value=bias_p,
        grade_counts=grade_counts,
        drift_by_group=tuple(drift_rows),
        overconfident=overconfident,
        underconfident=underconfident,
        biased=biased,
        drift=drift,
        pit_nonuniform=pit_nonuniform,
        reasons=tuple(reasons),
    )
