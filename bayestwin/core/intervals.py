"""Central intervals: the nominal levels, equal-tailed intervals of draws, normal quantiles.

:data:`INTERVAL_LEVELS` are the levels checked at every validation and in every
calibration world. :func:`equal_tailed_interval` is the credible interval of the
simulation results (arviz-stats' array-level ETI, linear interpolation between
order statistics); :func:`z_two_sided` is the normal quantile of a two-sided level.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

__all__ = ["INTERVAL_LEVELS", "equal_tailed_interval", "z_two_sided"]

INTERVAL_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.95)
"""Nominal levels of the central intervals checked at every validation and in every
calibration world."""


def equal_tailed_interval(draws: ArrayLike, prob: float = 0.95) -> tuple[float, float]:
    """Equal-tailed interval holding ``prob`` of the draws.

    Parameters
    ----------
    draws : array_like
        Posterior draws (flattened).
    prob : float
        Probability mass in (0, 1).

    Returns
    -------
    (float, float)
        The ``(1 - prob) / 2`` and ``(1 + prob) / 2`` quantiles (linear interpolation).
    """
    if not 0.0 < prob < 1.0:
        raise ValueError(f"prob must be in (0, 1), got {prob}")
    # imported here: arviz_stats pulls in xarray, which the rest of the core never needs
    from arviz_stats.base import array_stats

    arr = np.asarray(draws, dtype=float).ravel()
    lo, hi = array_stats.eti(arr, prob)
    return float(lo), float(hi)


def z_two_sided(level: float) -> float:
    """Normal quantile ``z`` with ``P(|Z| <= z) = level``.

    Parameters
    ----------
    level : float
        Two-sided level in (0, 1).

    Returns
    -------
    float
        ``Phi^{-1}(1/2 + level / 2)``.
    """
    return float(special.ndtri(0.5 + level / 2.0))
