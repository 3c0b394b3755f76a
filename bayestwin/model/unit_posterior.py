"""Each history unit's posterior deviation, from a fit whose likelihood integrated it out.

The panel likelihood (:mod:`bayestwin.model.panel_terms`) never samples a unit's
effect ``u_i``. Given the other parameters ``theta_d`` of a posterior draw, its
conditional posterior is known exactly:

* gaussian: ``Normal(s2u R_i / (s2 + n_i s2u), s2 s2u / (s2 + n_i s2u))``, with ``R_i``
  the sum of the unit's residuals, ``s2`` and ``s2u`` the residual and unit variances;
* poisson: ``exp(u_i) ~ Gamma(phi + Y_i, phi + M_i)``, with ``Y_i`` the unit's total
  outcome and ``M_i`` its total expected count, so ``E u_i = digamma(phi + Y_i) -
  log(phi + M_i)`` and ``Var u_i = trigamma(phi + Y_i)``.

Bernoulli and neg_binomial fits sample their unit effects (``z_unit``); their draws are
used as they are.

:func:`unit_effects_from_trace` averages these over the posterior draws (the law of
total variance), adds the correlated-random-effects term ``lambda_d . m_i``, and keeps
each unit's mean and sd: :class:`~bayestwin.core.unit_effects.UnitEffects`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from bayestwin.core.posterior import dose_response_draws
from bayestwin.core.unit_effects import UnitEffectKind, UnitEffects

__all__ = ["cell_linear_predictor", "unit_effects_from_trace"]

#: Most (cells x draws) values held at once.
_BLOCK_VALUES = 4_000_000


def cell_linear_predictor(arrays: dict[str, NDArray], d: dict[str, Any], rows: slice) -> NDArray:
    """``eta`` of every likelihood cell for the draws ``rows``, without the unit effect.

    Parameters
    ----------
    arrays : dict
        Flattened posterior draws: ``a``, ``beta``, ``tau``, ``gamma``, ``dose_rate``
        and, when the model has them, ``dose_jump``, ``lambda_unit``, ``time_effect``.
    d : dict
        The design (:func:`bayestwin.model.pymc_model.build_design`).
    rows : slice
        Which draws.

    Returns
    -------
    ndarray, shape (cells, draws)
    """
    a = arrays["a"][rows]
    eta = a[:, d["seg"]].T.copy()
    if d["x"].shape[1]:
        eta += d["x"] @ arrays["beta"][rows].T
    treated = np.flatnonzero(d["treated"] > 0)
    if treated.size:
        jump = arrays.get("dose_jump")
        g = dose_response_draws(
            d["intensity"][treated],
            arrays["dose_rate"][rows],
            None if jump is None else jump[rows],
        )  # (D, n)
        k, seg = d["k"][treated], d["seg"][treated]
        het = arrays["tau"][rows][:, k, seg]
        if d["z"].shape[1]:
            gam = arrays["gamma"][rows][:, k, :]  # (D, n, p)
            het = het + np.einsum("dnp,np->dn", gam, d["z"][treated])
        eta[treated] += (g * het).T
    if "lambda_unit" in arrays:
        eta += (d["mundlak"] @ arrays["lambda_unit"][rows].T)[d["unit"]]
    if "time_effect" in arrays:
        eta += arrays["time_effect"][rows].T[d["period"]]
    return eta


def _by_unit(values: NDArray, d: dict[str, Any]) -> NDArray:
    """Sum the rows of ``values`` (cells, ...) over each unit's cells: (units, ...)."""
    unit = d["unit"]
    order = d.get("_unit_order")
    if order is None:
        order = np.argsort(unit, kind="stable")
        d["_unit_order"] = order
        d["_unit_starts"] = np.searchsorted(unit[order], np.arange(len(d["unit_ids"])))
    return np.add.reduceat(values[order], d["_unit_starts"], axis=0)


def _gaussian_moments(
    eta: NDArray, d: dict[str, Any], s2: NDArray, s2u: NDArray
) -> tuple[NDArray, NDArray]:
    count = d["count"]
    ybar = (d["total"] / count - d["outcome_loc"]) / d["outcome_scale"]
    resid = count[:, None] * (ybar[:, None] - eta)
    n_units = len(d["unit_ids"])
    r = _by_unit(resid, d)
    n = np.bincount(d["unit"], weights=count, minlength=n_units)[:, None]
    v = s2[None, :] + n * s2u[None, :]
    return s2u[None, :] * r / v, s2[None, :] * s2u[None, :] / v


def _poisson_moments(eta: NDArray, d: dict[str, Any], s2u: NDArray) -> tuple[NDArray, NDArray]:
    n_units = len(d["unit_ids"])
    phi = 1.0 / s2u[None, :]
    m = _by_unit(d["count"][:, None] * np.exp(eta), d)
    y = np.bincount(d["unit"], weights=d["total"], minlength=n_units)[:, None]
    return special.digamma(phi + y) - np.log(phi + m), special.polygamma(1, phi + y)


def unit_effects_from_trace(
    arrays: dict[str, NDArray], d: dict[str, Any], family: str
) -> UnitEffects:
    """Each history unit's posterior deviation, summarised over the posterior draws.

    Parameters
    ----------
    arrays : dict
        Flattened posterior draws (see :func:`cell_linear_predictor`), with
        ``sigma_unit`` and, for gaussian and neg_binomial, ``dispersion``.
    d : dict
        The design of a fit with unit effects.
    family : str
        The outcome family.

    Returns
    -------
    UnitEffects
        Means and sds of ``lambda . m_i + u_i`` on the link scale (gaussian: the
        standardised scale the model is fitted on).
    """
    su = arrays["sigma_unit"]
    n_draws = su.shape[0]
    n_units = len(d["unit_ids"])
    lam = arrays.get("lambda_unit")
    crre = np.zeros((n_units, n_draws)) if lam is None else d["mundlak"] @ lam.T
    kind: UnitEffectKind = "log_gamma" if family == "poisson" else "normal"
    if "z_unit" in arrays:
        total = crre + (su[:, None] * arrays["z_unit"]).T
        return UnitEffects(
            kind=kind,
            unit_ids=np.asarray(d["unit_ids"], dtype=str),
            mean=total.mean(axis=1),
            sd=total.std(axis=1),
            offset=crre.mean(axis=1),
            scale=su.copy(),
        )
    first = np.zeros(n_units)
    second = np.zeros(n_units)
    step = max(1, _BLOCK_VALUES // max(1, len(d["total"])))
    for start in range(0, n_draws, step):
        rows = slice(start, min(start + step, n_draws))
        eta = cell_linear_predictor(arrays, d, rows)
        if family == "gaussian":
            mean, var = _gaussian_moments(eta, d, arrays["dispersion"][rows] ** 2, su[rows] ** 2)
        elif family == "poisson":
            mean, var = _poisson_moments(eta, d, su[rows] ** 2)
        else:
            raise ValueError(f"family {family!r} samples its unit effects (z_unit)")
        total = mean + crre[:, rows]
        first += total.sum(axis=1)
        second += (var + total**2).sum(axis=1)
    mean_all = first / n_draws
    sd = np.sqrt(np.maximum(second / n_draws - mean_all**2, 0.0))
    return UnitEffects(
        kind=kind,
        unit_ids=np.asarray(d["unit_ids"], dtype=str),
        mean=mean_all,
        sd=sd,
        offset=crre.mean(axis=1),
        scale=su.copy(),
    )
