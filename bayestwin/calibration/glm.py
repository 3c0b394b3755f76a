"""Canonical-link GLMs fitted by IRLS to per-unit totals, with a sandwich covariance.

The GLM of the no-pooling and complete-pooling baselines
(:mod:`bayestwin.calibration.baselines`): bernoulli (logit), poisson and negative
binomial (log; Poisson quasi-likelihood) and gaussian (identity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special

__all__ = ["GlmFit", "fit_glm"]


@dataclass(frozen=True)
class GlmFit:
    """A GLM fitted by IRLS, with a sandwich covariance.

    The outcome of row ``i`` is the total ``y_i`` over ``m_i`` periods, with mean
    ``m_i * h(eta_i)`` for the canonical inverse link ``h`` of the family.

    Attributes
    ----------
    family : str
        bernoulli (logit), poisson or neg_binomial (log; Poisson quasi-likelihood) or
        gaussian (identity).
    coef : ndarray, shape (P,)
        Coefficients (NaN for columns dropped as all-zero).
    cov : ndarray, shape (P, P)
        HC1 sandwich covariance (NaN rows and columns for dropped columns).
    converged : bool
        Whether IRLS met its tolerance.
    """

    family: str
    coef: NDArray
    cov: NDArray
    converged: bool

    def mean(self, x: NDArray) -> tuple[NDArray, NDArray]:
        """Mean per period ``h(x @ coef)`` and its derivative ``h'(eta)`` per row."""
        eta = x @ np.nan_to_num(self.coef)
        return _inverse_and_derivative(self.family, eta)


def _inverse_and_derivative(family: str, eta: NDArray) -> tuple[NDArray, NDArray]:
    if family == "bernoulli":
        p = special.expit(eta)
        return p, p * (1.0 - p)
    if family in ("poisson", "neg_binomial"):
        mu = np.exp(np.clip(eta, -30.0, 30.0))
        return mu, mu
    return eta, np.ones_like(eta)


def fit_glm(
    x: NDArray,
    y: NDArray,
    periods: NDArray,
    family: str,
    *,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> GlmFit:
    """Fit a canonical-link GLM to per-unit totals by IRLS; sandwich covariance.

    Parameters
    ----------
    x : ndarray, shape (N, P)
        Design matrix (no implicit intercept).
    y : ndarray, shape (N,)
        Outcome total of each unit over its periods.
    periods : ndarray, shape (N,)
        Periods per unit (binomial trials, Poisson exposure, gaussian weight).
    family : str
        Outcome family.
    max_iter : int
        IRLS iterations.
    tol : float
        Relative change of the deviance proxy that stops IRLS.

    Returns
    -------
    GlmFit
        Columns that are all zero are dropped (NaN coefficient and covariance).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    m = np.asarray(periods, dtype=float)
    n, p = x.shape
    keep = np.flatnonzero(np.any(x != 0.0, axis=0))
    xk = x[:, keep]
    beta = np.zeros(keep.size)
    if family in ("poisson", "neg_binomial"):
        beta = np.linalg.lstsq(xk, np.log((y + 0.5) / m), rcond=None)[0]
    converged = False
    last = np.inf
    for _ in range(max_iter if family != "gaussian" else 1):
        eta = xk @ beta
        mu, dmu = _inverse_and_derivative(family, eta)
        w = m * np.maximum(dmu, 1e-12)
        z = eta + (y - m * mu) / w
        xtw = xk.T * w
        beta_new = np.linalg.lstsq(xtw @ xk, xtw @ z, rcond=None)[0]
        eta_new = xk @ beta_new
        mu_new, _ = _inverse_and_derivative(family, eta_new)
        crit = float(np.sum((y - m * mu_new) ** 2 / np.maximum(w, 1e-12)))
        beta = beta_new
        if abs(last - crit) <= tol * (abs(crit) + 1e-12):
            converged = True
            break
        last = crit
    if family == "gaussian":
        converged = True
    mu, dmu = _inverse_and_derivative(family, xk @ beta)
    w = m * np.maximum(dmu, 1e-12)
    bread = np.linalg.pinv((xk.T * w) @ xk)
    resid = y - m * mu
    score = xk * resid[:, None]
    meat = score.T @ score
    dof = n / max(n - keep.size, 1)
    cov_k = dof * bread @ meat @ bread
    coef = np.full(p, np.nan)
    cov = np.full((p, p), np.nan)
    coef[keep] = beta
    cov[np.ix_(keep, keep)] = cov_k
    return GlmFit(family=family, coef=coef, cov=cov, converged=converged)
