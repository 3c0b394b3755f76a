"""Outcome families: links, inverse links and per-unit variances.

Pure NumPy. The generator, the simulation engine, the power calculations and the
synthetic ground truth all use these, so a family means the same thing everywhere.

============  ==========  =========================  ==============================
family        link        mean ``mu``                 variance of one outcome
============  ==========  =========================  ==============================
bernoulli     logit       ``1 / (1 + exp(-eta))``     ``mu (1 - mu)``
poisson       log         ``exp(eta)``                ``mu``
neg_binomial  log         ``exp(eta)``                ``mu + mu**2 / alpha``
gaussian      identity    ``eta``                     ``sigma**2``
============  ==========  =========================  ==============================

For ``neg_binomial`` the dispersion is the shape ``alpha`` (PyMC's ``NegativeBinomial``
``alpha``); for ``gaussian`` it is the residual standard deviation ``sigma``.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "FAMILIES",
    "Family",
    "check_family",
    "inverse_link",
    "unit_variance",
]

Family = Literal["bernoulli", "poisson", "neg_binomial", "gaussian"]
FAMILIES: tuple[str, ...] = get_args(Family)


def check_family(family: str) -> Family:
    """Return ``family`` if it is known, else raise a ``ValueError`` naming the choices.

    Parameters
    ----------
    family : str
        Candidate family name.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}")
    return family  # type: ignore[return-value]


def inverse_link(family: str, eta: ArrayLike, out: NDArray[np.floating] | None = None) -> NDArray:
    """Map the linear predictor to the mean outcome.

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`.
    eta : array_like
        Linear predictor.
    out : ndarray, optional
        Array to write into (same shape and a floating dtype); saves an allocation in
        hot loops.

    Returns
    -------
    ndarray
        The mean outcome, the same shape as ``eta``.
    """
    check_family(family)
    eta_arr = np.asarray(eta)
    if out is None and not np.issubdtype(eta_arr.dtype, np.floating):
        eta_arr = eta_arr.astype(np.float64)
    if family == "bernoulli":
        res = np.negative(eta_arr, out=out)
        with np.errstate(over="ignore"):  # exp(-eta) = inf gives the exact limit mu = 0
            np.exp(res, out=res)
        res += 1.0
        np.reciprocal(res, out=res)
        return res
    if family in ("poisson", "neg_binomial"):
        return np.exp(eta_arr, out=out)
    if out is None:
        return np.array(eta_arr, dtype=np.result_type(eta_arr, np.float64), copy=True)
    out[...] = eta_arr
    return out


def unit_variance(family: str, mu: ArrayLike, dispersion: ArrayLike | None = None) -> NDArray:
    """Variance of a single outcome with mean ``mu``.

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`.
    mu : array_like
        Mean outcome.
    dispersion : array_like, optional
        ``alpha`` for ``neg_binomial``, ``sigma`` for ``gaussian``; ignored otherwise.

    Returns
    -------
    ndarray
        The variance, broadcast over ``mu`` and ``dispersion``.
    """
    check_family(family)
    mu_arr = np.asarray(mu, dtype=float)
    if family == "bernoulli":
        return mu_arr * (1.0 - mu_arr)
    if family == "poisson":
        return mu_arr.copy()
    if dispersion is None:
        raise ValueError(f"family {family!r} needs a dispersion parameter")
    disp = np.asarray(dispersion, dtype=float)
    if family == "neg_binomial":
        return mu_arr + mu_arr**2 / disp
    return np.broadcast_to(disp**2, np.broadcast_shapes(mu_arr.shape, disp.shape)).copy()
