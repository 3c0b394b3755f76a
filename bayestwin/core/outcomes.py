"""The real result of a two-arm experiment: its ATE, standard error and CI.

An :class:`~bayestwin.schemas.ExperimentOutcome` is given directly, or built by
:func:`outcome_from_frame` from a DataFrame with one row per unit (``arm``,
``outcome``): the ATE is the difference in arm means and its standard error is
``sqrt(v_t / n_t + v_c / n_c)`` with ``v = p (1 - p)`` per arm for a bernoulli outcome
and the sample variance (``ddof=1``, Welch) otherwise. When an outcome gives a CI but no
SE, :func:`outcome_standard_error` reads ``se = (ci_upper - ci_lower) / (2 z)`` with
``z`` the normal quantile of ``ci_level``.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats

from bayestwin.core.families import check_family
from bayestwin.core.intervals import z_two_sided
from bayestwin.errors import InvalidInputError
from bayestwin.schemas import ExperimentOutcome

__all__ = ["outcome_from_frame", "outcome_standard_error"]


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
    return float((outcome.ci_upper - outcome.ci_lower) / (2.0 * z_two_sided(outcome.ci_level)))


def _arm_outcomes(
    frame: pd.DataFrame,
    family: str,
    arm_column: str,
    outcome_column: str,
    treatment: str,
    control: str,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Check a per-unit experiment frame and return the treated and control outcomes."""
    missing = [c for c in (arm_column, outcome_column) if c not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"experiment frame lacks column(s) {missing}; it has {list(frame.columns)}",
            field=missing[0],
        )
    arms = frame[arm_column].astype(str)
    unknown = sorted(set(arms) - {treatment, control})
    if unknown:
        raise InvalidInputError(
            f"column {arm_column!r} has unknown arm label(s) {unknown[:5]}; "
            f"allowed: {treatment!r}, {control!r}",
            field=arm_column,
        )
    try:
        y = pd.to_numeric(frame[outcome_column], errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"column {outcome_column!r} must be numeric: {exc}", field=outcome_column
        ) from None
    if not np.isfinite(y).all():
        raise InvalidInputError(
            f"column {outcome_column!r} has missing or infinite values", field=outcome_column
        )
    if family == "bernoulli" and not np.isin(y, (0.0, 1.0)).all():
        raise InvalidInputError(
            f"bernoulli outcomes in {outcome_column!r} must be 0 or 1", field=outcome_column
        )
    is_t = (arms == treatment).to_numpy()
    y_t, y_c = y[is_t], y[~is_t]
    if len(y_t) < 2 or len(y_c) < 2:
        raise InvalidInputError(
            f"each arm needs at least 2 units; got {len(y_t)} {treatment!r} and "
            f"{len(y_c)} {control!r}",
            field=arm_column,
        )
    return y_t, y_c


def _critical_value(
    family: str, ci_level: float, treated: tuple[float, int], control: tuple[float, int]
) -> float:
    """Critical value of the CI: normal for bernoulli, else Welch t (Welch-Satterthwaite df).

    ``treated`` and ``control`` are ``(variance / n, n)`` of each arm.
    """
    if family == "bernoulli":
        return z_two_sided(ci_level)
    (a_t, n_t), (a_c, n_c) = treated, control
    df = (a_t + a_c) ** 2 / (a_t**2 / (n_t - 1) + a_c**2 / (n_c - 1))
    return float(stats.t.ppf(0.5 + ci_level / 2.0, df))


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
    InvalidInputError
        On a missing column, an unknown arm label, an arm with fewer than 2 units,
        missing or non-numeric outcomes, non-0/1 bernoulli outcomes, or a standard
        error of 0 (every outcome equal within both arms).
    """
    fam = check_family(family)
    y_t, y_c = _arm_outcomes(frame, fam, arm_column, outcome_column, treatment, control)
    n_t, n_c = len(y_t), len(y_c)
    m_t, m_c = float(y_t.mean()), float(y_c.mean())
    if fam == "bernoulli":
        v_t, v_c = m_t * (1.0 - m_t), m_c * (1.0 - m_c)
    else:
        v_t, v_c = float(y_t.var(ddof=1)), float(y_c.var(ddof=1))
    a_t, a_c = v_t / n_t, v_c / n_c
    se = math.sqrt(a_t + a_c)
    if se <= 0.0:
        raise InvalidInputError(
            "the standard error is 0: every outcome is equal within both arms",
            field=outcome_column,
        )
    crit = _critical_value(fam, ci_level, (a_t, n_t), (a_c, n_c))
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
