"""Sample size of the real test three ways: classic, assurance, twin-covariate adjusted.

*Twin covariate adjustment* (PROCOVA-style): when the analysis of the real test adjusts
for each unit's twin-predicted control outcome, the residual variance is
``Var(Y) (1 - rho**2)``, with ``rho`` the correlation between prediction and outcome,
so the classic ``n`` shrinks by the same factor (:func:`covariate_adjusted_n`).
:func:`sample_size_report` packs the three answers (see :mod:`bayestwin.core.power`
for the power and assurance they come from) into a
:class:`~bayestwin.schemas.SampleSizeReport`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from bayestwin.core.power import assurance_curve, assurance_n, default_n_grid, n_per_arm
from bayestwin.schemas import SampleSizeReport

__all__ = [
    "covariate_adjusted_n",
    "population_sufficient",
    "prognostic_rho2",
    "sample_size_report",
]


def covariate_adjusted_n(n: int | None, rho: float) -> int | None:
    """Classic ``n`` with the variance shrunk by ``1 - rho**2`` (PROCOVA-style).

    Parameters
    ----------
    n : int or None
        Classic sample size per arm.
    rho : float
        Correlation between the twin's predicted control outcome and the outcome.

    Returns
    -------
    int or None
        ``ceil(n * (1 - rho**2))``, at least 1; None when ``n`` is None.
    """
    if not -1.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [-1, 1], got {rho}")
    if n is None:
        return None
    return max(1, math.ceil(n * (1.0 - rho * rho)))


def prognostic_rho2(
    predicted: ArrayLike, total_variance: float, weights: ArrayLike | None = None
) -> float:
    """Squared correlation between a twin's predicted outcome and the outcome.

    Under the model ``Y = mu + noise`` with the prediction standing in for ``mu``,
    ``rho**2 = Var(predicted) / Var(Y)`` across units.

    Parameters
    ----------
    predicted : array_like, shape (N,)
        Predicted control outcome of each unit (posterior mean of its expected
        outcome).
    total_variance : float
        ``Var(Y)`` of one outcome in the population (see
        :func:`~bayestwin.core.power.outcome_variance_from_moments`).
    weights : array_like, optional
        Multiplicity of each unit.

    Returns
    -------
    float
        In [0, 1].
    """
    pred = np.asarray(predicted, dtype=float)
    if total_variance <= 0 or pred.size == 0:
        return 0.0
    w = np.ones_like(pred) if weights is None else np.asarray(weights, dtype=float)
    mean = np.average(pred, weights=w)
    var = float(np.average((pred - mean) ** 2, weights=w))
    return float(min(1.0, max(0.0, var / total_variance)))


def population_sufficient(n_per_arm: int | None, eligible_population: int | None) -> bool | None:
    """Whether ``eligible_population`` units can supply a two-arm test of ``n_per_arm``.

    Parameters
    ----------
    n_per_arm : int or None
        Units per arm of the test (``2 n_per_arm`` distinct units in all).
    eligible_population : int or None
        Units eligible for the test.

    Returns
    -------
    bool or None
        ``2 n_per_arm <= eligible_population``; None when either is unknown.
    """
    if n_per_arm is None or eligible_population is None:
        return None
    return 2 * n_per_arm <= eligible_population


def sample_size_report(
    effect_draws: ArrayLike,
    var_control: float,
    var_treated: float,
    *,
    effect: float | None = None,
    rho: float | None = None,
    eligible_population: int | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    n_grid: Sequence[int] | None = None,
) -> SampleSizeReport:
    """Sample size per arm three ways: classic, assurance, twin-covariate adjusted.

    Parameters
    ----------
    effect_draws : array_like, shape (D,)
        Posterior draws of the effect (absolute scale).
    var_control, var_treated : float
        Per-arm total outcome variances.
    effect : float, optional
        Effect for the classic ``n``; default the posterior median.
    rho : float, optional
        Prognostic correlation for the adjusted ``n``; None skips it.
    eligible_population : int, optional
        Units eligible for the real test. The sizes are never capped by it: they
        are what the test needs. A two-arm test uses ``2 n`` distinct units, and
        ``population_sufficient`` says whether the eligible units can supply the
        classic ``n`` (None when it or the eligible count is unknown).
    alpha, power : float
        Two-sided level and target power (and target assurance).
    n_grid : sequence of int, optional
        Sizes of the assurance curve; default :func:`default_n_grid` around the
        classic ``n``.

    Returns
    -------
    SampleSizeReport
    """
    draws = np.asarray(effect_draws, dtype=float).ravel()
    eff = float(np.median(draws)) if effect is None else float(effect)
    classic = n_per_arm(eff, var_control, var_treated, alpha=alpha, power=power)
    assured = assurance_n(draws, var_control, var_treated, alpha=alpha, target=power)
    adjusted = covariate_adjusted_n(classic, rho) if rho is not None else None
    grid = default_n_grid(classic) if n_grid is None else list(n_grid)
    curve = assurance_curve(draws, var_control, var_treated, grid, alpha=alpha)
    return SampleSizeReport(
        alpha=alpha,
        power=power,
        classic_n_per_arm=classic,
        assurance_n_per_arm=assured,
        assurance_curve=curve,
        covariate_adjusted_n_per_arm=adjusted,
        rho=None if rho is None else float(rho),
        eligible_population=eligible_population,
        population_sufficient=population_sufficient(classic, eligible_population),
    )
