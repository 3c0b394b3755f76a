"""Each unit's log likelihood of its rows: the pointwise terms of a model comparison.

PSIS-LOO (:mod:`bayestwin.model.comparison`) leaves out one *unit* at a time: a unit's
rows are not independent given the model's global parameters once the unit has an
effect of its own, and a twin is a unit, so the unit is what a comparison should
predict. The term of unit ``i`` is ``log p(y_i | theta)``, the joint density of all its
rows with its unit effect ``u_i`` integrated out (the *integrated* or marginal
likelihood that makes leave-one-unit-out importance sampling stable; Merkle, Furr and
Rabe-Hesketh, 2019). It carries every constant of the row-level density, so a model
with unit effects and one without are compared on the same data:

* **gaussian**: the unit's rows are jointly normal with covariance
  ``sigma**2 I + sigma_unit**2 11'`` (``sigma_unit = 0`` without unit effects), on the
  outcome's own scale (the standardisation's Jacobian included);
* **poisson**: with a gamma multiplier ``exp(u_i) ~ Gamma(phi, phi)``, the negative
  multinomial marginal; without it, the product of the rows' Poisson densities;
* **bernoulli** and **neg_binomial**: the unit effect ``u_i ~ Normal(0, sigma_unit)``
  is integrated numerically by adaptive Gauss-Hermite quadrature with :data:`GH_NODES`
  nodes placed around each unit's mode (Pinheiro and Bates, 1995); without unit
  effects, the rows' densities are summed.

The rows are those of the cell layout (:func:`bayestwin.model.pymc_model.build_design`
with ``cells=True``): one likelihood row per (unit, period, design), which is exact for
every family. Bernoulli rows are the unit's 0/1 outcomes (no binomial coefficient):
the density of the rows themselves, not of their count.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.special import gammaln

from bayestwin.model.history import unit_index
from bayestwin.model.panel_terms import scale_prior
from bayestwin.model.spec import TwinModelSpec

__all__ = [
    "GH_NODES",
    "NEWTON_STEPS",
    "POINTWISE_NAME",
    "UNIT_DIM",
    "cell_index",
    "gauss_hermite",
    "unit_log_likelihood",
]

#: Gauss-Hermite nodes of the numerical integration over a unit's effect.
GH_NODES = 16

#: Newton steps to each unit's mode before the adaptive quadrature.
NEWTON_STEPS = 8

#: The deterministic that holds each unit's log likelihood, and its dimension.
POINTWISE_NAME = "unit_loglik"
UNIT_DIM = "loo_unit"


def cell_index(df: pd.DataFrame, design: pd.DataFrame, spec: TwinModelSpec) -> dict[str, Any]:
    """The unit index of the cell layout's likelihood rows.

    Parameters
    ----------
    df : DataFrame
        The validated history rows.
    design : DataFrame
        One row per (unit, period, design) cell (the collapsed history).
    spec : TwinModelSpec
        The columns and the family.

    Returns
    -------
    dict
        ``cell_unit_ids`` (the sorted unit ids), ``cell_unit`` (each cell's index into
        them) and, for poisson, ``unit_log_factorial`` (each unit's sum of ``log y!``
        over its rows, the constant a collapsed total loses).
    """
    unit_ids, unit = unit_index(df, design, spec)
    out: dict[str, Any] = {"cell_unit_ids": unit_ids, "cell_unit": unit}
    if spec.family == "poisson":
        y = df[spec.outcome].to_numpy(dtype=float)
        ids = df[spec.unit_column].astype(str).to_numpy()
        log_fact = pd.Series(gammaln(y + 1.0)).groupby(ids).sum()
        out["unit_log_factorial"] = log_fact.reindex(unit_ids).to_numpy()
    return out


def gauss_hermite(n: int = GH_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and log weights for ``E[f(Z)]``, ``Z ~ Normal(0, 1)``: ``sum w_j f(x_j)``.

    Parameters
    ----------
    n : int
        Number of nodes.

    Returns
    -------
    nodes, log_weights : ndarray
        The probabilists' Hermite nodes and the logs of their weights, normalised to
        sum to 1.
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    return nodes, np.log(weights / weights.sum())


def _per_unit(values: Any, unit: np.ndarray, n_units: int) -> Any:
    """Sum ``values`` (cells, ...) over each unit's cells: shape (units, ...)."""
    import pytensor.tensor as pt

    return pt.inc_subtensor(pt.zeros((n_units, *values.shape[1:]))[unit], values)


def unit_log_likelihood(pm: Any, d: dict[str, Any], spec: TwinModelSpec, eta: Any) -> Any:
    """Add the deterministic :data:`POINTWISE_NAME` (dims :data:`UNIT_DIM`) to the model.

    Parameters
    ----------
    pm : module
        ``pymc``, inside the model's context.
    d : dict
        The design in the cell layout (``cell_unit``, ``cell_unit_ids``).
    spec : TwinModelSpec
        The family and the priors (the scales it creates must have the fit's names:
        ``sigma_unit``, ``dispersion``).
    eta : TensorVariable
        Each cell's linear predictor without the unit effect.

    Returns
    -------
    TensorVariable
        Each unit's log density of its rows.
    """
    import pytensor.tensor as pt

    unit, ids = d["cell_unit"], d["cell_unit_ids"]
    n_units = len(ids)
    total, count = d["total"], d["count"]
    sigma_u = scale_prior(pm, "sigma_unit", spec.priors.unit_sd) if d["choices"].units else None
    fam = spec.family
    if fam == "gaussian":
        sigma = pm.HalfNormal("dispersion", spec.priors.dispersion_sd)
        scale = d["outcome_scale"]
        resid = (total / count - d["outcome_loc"]) / scale - eta
        n = np.bincount(unit, weights=count, minlength=n_units)
        within = np.bincount(unit, weights=d["sumsq"], minlength=n_units) / scale**2
        r = _per_unit(count * resid, unit, n_units)
        q = within + _per_unit(count * resid**2, unit, n_units)
        su2 = sigma_u**2 if sigma_u is not None else 0.0
        v = sigma**2 + n * su2
        ll = (
            -0.5 * n * np.log(2 * np.pi) - n * np.log(scale)
            - (n - 1) * pt.log(sigma) - 0.5 * pt.log(v)
            - q / (2 * sigma**2) + su2 * r**2 / (2 * sigma**2 * v)
        )  # fmt: skip
    elif fam == "poisson":
        linear = _per_unit(total * eta, unit, n_units) - d["unit_log_factorial"]
        m = _per_unit(count * pt.exp(eta), unit, n_units)
        if sigma_u is None:
            ll = linear - m
        else:
            phi = 1.0 / sigma_u**2
            y = np.bincount(unit, weights=total, minlength=n_units)
            ll = linear + (
                pt.gammaln(y + phi) - pt.gammaln(phi) + phi * pt.log(phi)
                - (y + phi) * pt.log(phi + m)
            )  # fmt: skip
    else:
        ll = _integrated(pm, d, spec, eta, sigma_u)
    model = pm.modelcontext(None)
    if UNIT_DIM not in model.coords:
        model.add_coord(UNIT_DIM, list(ids))
    return pm.Deterministic(POINTWISE_NAME, ll, dims=UNIT_DIM)


def _integrated(pm: Any, d: dict[str, Any], spec: TwinModelSpec, eta: Any, sigma_u: Any) -> Any:
    """Bernoulli and negative binomial: each unit's rows, ``u_i`` integrated by quadrature.

    Adaptive Gauss-Hermite: the nodes sit around each unit's mode ``m_i`` of
    ``L_i(u) + log N(u; 0, sigma_unit)`` (``L_i`` the log density of its rows), spaced by
    the curvature there, ``s_i = (-d2/du2)^(-1/2)``; the mode is found by
    :data:`NEWTON_STEPS` Newton steps from 0 (the function is strictly concave in ``u``
    for both families). With the nodes where the integrand is, a unit with many
    informative rows (a peaked integrand) is integrated as accurately as one with few.
    """
    import pytensor.tensor as pt

    unit, n_units = d["cell_unit"], len(d["cell_unit_ids"])
    y, w = d["total"], d["count"]
    nb = spec.family == "neg_binomial"
    alpha = pm.HalfNormal("dispersion", 10.0) if nb else None

    def cell_logp(e: Any, y: Any = y, w: Any = w) -> Any:
        if nb:
            return w * pm.logp(pm.NegativeBinomial.dist(mu=pt.exp(e), alpha=alpha), y)
        return y * e - w * pt.softplus(e)

    def slopes(e: Any) -> tuple[Any, Any]:
        """First and second derivatives of each cell's log density in ``eta``."""
        if nb:
            mu = pt.exp(e)
            share = mu / (alpha + mu)
            return w * (y - (y + alpha) * share), -w * (y + alpha) * share * alpha / (alpha + mu)
        p = pt.sigmoid(e)
        return y - w * p, -w * p * (1.0 - p)

    if sigma_u is None:
        return _per_unit(cell_logp(eta), unit, n_units)
    prec = 1.0 / sigma_u**2
    mode: Any = pt.zeros(n_units)
    for _ in range(NEWTON_STEPS):
        g1, g2 = slopes(eta + mode[unit])
        grad = _per_unit(g1, unit, n_units) - prec * mode
        curv = _per_unit(g2, unit, n_units) - prec
        mode = mode - grad / curv
    _, g2 = slopes(eta + mode[unit])
    spread = 1.0 / pt.sqrt(prec - _per_unit(g2, unit, n_units))
    nodes, log_w = gauss_hermite()
    u = mode[:, None] + spread[:, None] * nodes[None, :]  # (units, nodes)
    rows = _per_unit(cell_logp(eta[:, None] + u[unit], y[:, None], w[:, None]), unit, n_units)
    log_prior = -0.5 * u**2 * prec - pt.log(sigma_u) - 0.5 * np.log(2 * np.pi)
    log_std = -0.5 * nodes**2 - 0.5 * np.log(2 * np.pi)  # the nodes' own weight function
    terms = rows + log_prior + pt.log(spread)[:, None] - log_std[None, :] + log_w[None, :]
    return pt.logsumexp(terms, axis=1)
