"""Small statistics of the calibration report: interval hits, coverage, SBC ranks.

Pure NumPy and SciPy (plus :func:`bayestwin.core.calibration.wilson_interval`): arrays in,
numbers out. The levels checked are :data:`bayestwin.core.intervals.INTERVAL_LEVELS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from bayestwin.core.calibration import wilson_interval
from bayestwin.core.intervals import INTERVAL_LEVELS, z_two_sided
from bayestwin.errors import InvalidInputError

__all__ = [
    "SBC_BINS",
    "SBC_DRAWS",
    "coverage_summary",
    "interval_hits",
    "normal_hits",
    "rank_uniformity",
    "sbc_rank",
]

#: Thinned posterior draws per SBC rank (ranks take L + 1 = 100 values).
SBC_DRAWS = 99
#: Bins of the SBC chi-square test.
SBC_BINS = 10


def interval_hits(
    draws: ArrayLike, truth: float, levels: Sequence[float] = INTERVAL_LEVELS
) -> dict[float, bool]:
    """Whether ``truth`` lies in the central equal-tailed interval of ``draws``.

    Parameters
    ----------
    draws : array_like
        Posterior draws.
    truth : float
        The true value.
    levels : sequence of float
        Nominal levels in (0, 1).

    Returns
    -------
    dict
        ``{level: lower <= truth <= upper}``, the bounds being the ``(1 - level) / 2``
        and ``(1 + level) / 2`` quantiles (linear interpolation).
    """
    arr = np.asarray(draws, dtype=float).ravel()
    out = {}
    for level in levels:
        if not 0.0 < level < 1.0:
            raise InvalidInputError(f"levels must be in (0, 1), got {level}", field="levels")
        lo, hi = np.quantile(arr, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
        out[float(level)] = bool(lo <= truth <= hi)
    return out


def normal_hits(
    estimate: float, se: float, truth: float, levels: Sequence[float] = INTERVAL_LEVELS
) -> dict[float, bool]:
    """Whether ``truth`` lies in ``estimate +- z_level * se`` at each level."""
    out = {}
    for level in levels:
        z = z_two_sided(level)
        out[float(level)] = bool(abs(truth - estimate) <= z * se)
    return out


def coverage_summary(hits: ArrayLike, confidence: float = 0.95) -> dict[str, Any]:
    """Empirical coverage of a set of interval hits with its Wilson interval.

    Parameters
    ----------
    hits : array_like of bool
        One entry per interval (NaN entries, for missing estimates, are dropped).
    confidence : float
        Confidence of the Wilson interval.

    Returns
    -------
    dict
        ``n``, ``hits``, ``coverage`` and ``lower``/``upper`` (None when ``n == 0``).
    """
    arr = np.asarray(hits, dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    n = int(arr.size)
    k = int(arr.sum())
    if n == 0:
        return {"n": 0, "hits": 0, "coverage": None, "lower": None, "upper": None}
    lo, hi = wilson_interval(k, n, confidence)
    return {"n": n, "hits": k, "coverage": k / n, "lower": lo, "upper": hi}


def sbc_rank(draws: ArrayLike, truth: float, n_thin: int = SBC_DRAWS) -> int:
    """Rank of ``truth`` among ``n_thin`` draws thinned evenly from ``draws``.

    Parameters
    ----------
    draws : array_like
        Posterior draws (chains concatenated).
    truth : float
        The true value.
    n_thin : int
        Draws kept (evenly spaced, to weaken autocorrelation).

    Returns
    -------
    int
        Number of kept draws strictly below ``truth``, in ``[0, n_thin]``.
    """
    arr = np.asarray(draws, dtype=float).ravel()
    if arr.size == 0:
        raise InvalidInputError("draws is empty", field="draws")
    if n_thin < 1:
        raise InvalidInputError(f"n_thin must be >= 1, got {n_thin}", field="n_thin")
    keep = arr[np.linspace(0, arr.size - 1, min(n_thin, arr.size)).round().astype(int)]
    return int(np.sum(keep < truth))


def rank_uniformity(
    ranks: ArrayLike, n_draws: int = SBC_DRAWS, bins: int = SBC_BINS
) -> dict[str, Any]:
    """Test that SBC ranks are uniform on ``{0, ..., n_draws}``.

    Parameters
    ----------
    ranks : array_like of int
        Ranks from :func:`sbc_rank`.
    n_draws : int
        Draws each rank was taken among (``L``).
    bins : int
        Equal-width bins for the chi-square test; ``L + 1`` must be a multiple.

    Returns
    -------
    dict
        ``n``, bin ``counts``, ``chi2`` and ``chi2_p_value`` (Pearson, ``bins - 1``
        degrees of freedom), ``ks`` and ``ks_p_value`` (Kolmogorov-Smirnov of
        ``(rank + 0.5) / (L + 1)`` against Uniform(0, 1)).
    """
    r = np.asarray(ranks, dtype=int).ravel()
    if (n_draws + 1) % bins:
        raise InvalidInputError(
            f"n_draws + 1 = {n_draws + 1} is not a multiple of bins = {bins}", field="bins"
        )
    if r.size and ((r < 0).any() or (r > n_draws).any()):
        raise InvalidInputError(f"ranks must be in [0, {n_draws}]", field="ranks")
    counts = np.bincount(r // ((n_draws + 1) // bins), minlength=bins)
    out: dict[str, Any] = {"n": int(r.size), "bins": bins, "counts": counts.tolist()}
    if r.size == 0:
        out.update(chi2=None, chi2_p_value=None, ks=None, ks_p_value=None)
        return out
    chi = stats.chisquare(counts)
    ks = stats.kstest((r + 0.5) / (n_draws + 1), "uniform")
    out.update(
        chi2=float(chi.statistic),
        chi2_p_value=float(chi.pvalue),
        ks=float(ks.statistic),
        ks_p_value=float(ks.pvalue),
    )
    return out
