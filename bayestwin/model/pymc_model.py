"""The PyMC model of one (brand, twin type): design arrays, parameterisation and graph.

The model is the hierarchical GLM of DESIGN.md::

    eta_i = a[seg_i] + X_i . beta
            + treated_i * g(s_i) * (tau[k_i, seg_i] + Z_i . gamma[k_i])

* ``a[seg] = mu_a + sigma_a * z_a[seg]``: segment intercepts, partially pooled;
* ``tau[k, seg] = mu_tau + sigma_type * z_type[k] + sigma_seg * z_tau[k, seg]``:
  effects partially pooled across intervention types and across segments, so a rare
  type borrows strength from the others (``sigma_type`` is learned from three types on
  and fixed at its prior scale for two, :func:`type_scale`);
* ``gamma[k] = interaction_sd * z_gamma[k]``: covariate-by-treatment interactions on
  the standardised numeric features, shrunk toward zero by a tight fixed prior scale
  (a learned scale would add a funnel that costs far more ESS than it buys);
* ``g(s) = delta + (1 - delta) (1 - exp(-rate s)) / (1 - exp(-rate))`` for ``s > 0``
  and ``g(0) = 0``: a monotone dose response with ``g(1) = 1``, so ``tau`` is the
  effect at intensity 1. ``delta ~ Beta(1, 2)`` is the share of the effect that the
  first contact brings (real campaigns often do most of their work at the smallest
  dose); it is learned when the treated rows have three or more distinct intensities
  (``dose_jump``) and 0 otherwise, where it could not be told from the rate;
* the effect prior ``mu_tau ~ Normal(0, 1.5)`` lets through shifts of 2-3 logits (or a
  factor of four in counts, 1.5 outcome sds) that a tighter scale would shrink;
* a history whose units have several periods adds unit effects, a
  correlated-random-effects term and period effects (a random walk with drift, and a
  seasonal wave when asked for), each unit's effect
  integrated out of a collapsed likelihood (:mod:`bayestwin.model.panel_terms`);
* each level of a hierarchy is non-centred, with zero-sum standardised deviations so
  that the group means are identified on their own, unless every group in the level is
  rich in data, when the centred form (``a[seg] ~ Normal(mu_a, sigma_a)``,
  ``tau_type[k] ~ Normal(mu_tau, sigma_type)``,
  ``tau[k, seg] ~ Normal(tau_type[k], sigma_seg)``) samples far better
  (``intercept_parameterization``, ``effect_parameterization``; see
  :mod:`bayestwin.model.centring`);
* a history with a single segment (no grouping column, or one value) has no
  segment-level hierarchy: ``a = mu_a`` and ``tau[k, seg] = tau_type[k]``, with no
  ``sigma_a`` or ``sigma_seg`` (scales no data inform);
* hierarchical scales get boundary-avoiding ``Gamma(2, 2 / scale)`` priors, which keep
  the sampler out of the funnel at zero when there are few groups.

Rows that share a design (the same segment, features, intervention and intensity, for
example one unit over many periods) are collapsed into sufficient statistics
(:func:`bayestwin.model.history.collapse_history`): a binomial count for bernoulli
outcomes, a Poisson (or negative binomial) total for counts, and the group mean plus the
within-group sum of squares for gaussian outcomes. The likelihood is the same up to a
constant; N shrinks by the number of periods. (For negative binomial outcomes the total
is not sufficient, so rows are collapsed by design and outcome value, with the
multiplicity as a weight.)

The assumption behind every effect is conditional ignorability: given the features and
the segment, who was treated is unrelated to the potential outcomes. The fidelity
tracker is there to catch it when it fails.

PyMC and pytensor are imported inside the functions that build the graph, so importing
this module stays cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bayestwin.core.posterior import FeatureEncoder
from bayestwin.errors import InvalidInputError
from bayestwin.model.centring import centred_effects, centred_intercepts
from bayestwin.model.history import collapse_history
from bayestwin.model.panel_terms import (
    add_panel_design,
    collapse_keys,
    panel_choices,
    panel_likelihood,
    panel_terms,
    sampled_unit_term,
    samples_units,
    scale_prior,
)
from bayestwin.model.pointwise import cell_index, unit_log_likelihood
from bayestwin.model.spec import TwinModelSpec, TwinPriors

__all__ = ["build_design", "build_pymc_model"]

# -- the design arrays -------------------------------------------------------------------


def _encoder(df: pd.DataFrame, spec: TwinModelSpec) -> FeatureEncoder:
    """The feature encoding learned from the history (numeric moments, levels)."""
    num = list(spec.numeric_features)
    raw = df[num].to_numpy(dtype=float) if num else np.empty((len(df), 0))
    loc = raw.mean(axis=0) if num else np.empty(0)
    scale = raw.std(axis=0) if num else np.empty(0)
    scale = np.where(scale > 0, scale, 1.0)
    categorical = {c: tuple(sorted(df[c].astype(str).unique())) for c in spec.categorical_features}
    return FeatureEncoder(
        numeric=tuple(num),
        loc=loc,
        scale=scale,
        categorical=categorical,
        segment_column=spec.segment_column,
        segments=tuple(sorted(df[spec.segment_column].unique())),
    )


def build_design(df: pd.DataFrame, spec: TwinModelSpec, *, cells: bool = False) -> dict[str, Any]:
    """The arrays the PyMC model is built from.

    Parameters
    ----------
    df : DataFrame
        Validated history rows (:func:`bayestwin.model.history.check_history`).
    spec : TwinModelSpec
        What is fitted.
    cells : bool
        One likelihood row per (unit, period, design) whatever the panel terms, no block
        layout, with the unit index of :func:`bayestwin.model.pointwise.cell_index`.

    Returns
    -------
    dict
        The ``encoder``, intervention ``types``, the likelihood rows' design (``x``,
        ``z``, ``seg``, ``k``, ``treated``, ``intensity``) and statistics (``total``,
        ``count``, ``sumsq``), the gaussian outcome scaling, the intercept ``center``,
        the parameterisation choices, ``n_rows`` and the panel arrays
        (:func:`~bayestwin.model.panel_terms.add_panel_design`).

    Raises
    ------
    InvalidInputError
        Code ``"invalid_history"`` when no row is treated.
    """
    encoder = _encoder(df, spec)
    itype = df[spec.intervention_column].to_numpy()
    types = tuple(sorted(set(itype) - {""}))
    if not types:
        raise InvalidInputError(
            f"no treated rows for brand {spec.brand!r}: the history needs at least one "
            f"row with a named {spec.intervention_column} and intensity > 0",
            code="invalid_history",
            field=spec.intervention_column,
        )
    choices = panel_choices(df, spec)
    keys = collapse_keys(spec, choices)
    if cells:
        keys = tuple(c for c in (spec.unit_column, spec.period_column) if c)
    if spec.collapse or cells:
        design, total, count, sumsq = collapse_history(df, spec, keys)
    else:
        design = df
        total = df[spec.outcome].astype(float)
        count = pd.Series(np.ones(len(df)))
        sumsq = pd.Series(np.zeros(len(df)))
    x, z, seg = encoder.encode(design)
    d_itype = design[spec.intervention_column].to_numpy()
    treated = d_itype != ""
    k_idx = np.zeros(len(design), dtype=np.int64)
    k_idx[treated] = [types.index(t) for t in d_itype[treated]]
    y_all = df[spec.outcome].to_numpy(dtype=float)
    outcome_loc, outcome_scale = 0.0, 1.0
    if spec.family == "gaussian":
        outcome_loc = float(y_all.mean())
        outcome_scale = float(y_all.std()) or 1.0
    d = {
        "encoder": encoder,
        "types": types,
        "x": x,
        "z": z,
        "seg": seg,
        "k": k_idx,
        "treated": treated.astype(float),
        "intensity": design[spec.intensity_column].to_numpy(dtype=float),
        "total": total.to_numpy(dtype=float),
        "count": count.to_numpy(dtype=float),
        "sumsq": sumsq.to_numpy(dtype=float),
        "outcome_loc": outcome_loc,
        "outcome_scale": outcome_scale,
        "center": _link_of_mean(spec.family, float(y_all.mean())),
        "centred_intercepts": centred_intercepts(df, spec),
        "centred_effects": centred_effects(df, spec, types),
        "n_rows": len(df),
    }
    add_panel_design(d, df, design, spec, choices, types)
    if cells:
        d.pop("blocks", None)
        d.update(cell_index(df, design, spec))
    return d


def _link_of_mean(family: str, ybar: float) -> float:
    if family == "bernoulli":
        p = min(max(ybar, 1e-3), 1 - 1e-3)
        return float(np.log(p / (1 - p)))
    if family in ("poisson", "neg_binomial"):
        return float(np.log(max(ybar, 1e-3)))
    return 0.0


# -- the graph ---------------------------------------------------------------------------


def _zero_sum(pm: Any, name: str, dims: tuple[str, ...], coords: dict[str, list[str]]) -> Any:
    """Standardised group deviations that sum to zero over the last dimension.

    With the deviations centred, the group mean (``mu_a``, ``mu_tau``) is identified
    on its own instead of trading off against every deviation, which removes the ridge
    that otherwise limits the ESS of hierarchical means. A single group has no
    deviation (zeros).
    """
    import pytensor.tensor as pt

    if len(coords[dims[-1]]) < 2:
        return pt.zeros(tuple(len(coords[d]) for d in dims))
    return pm.ZeroSumNormal(name, sigma=1.0, dims=dims, n_zerosum_axes=1)


def build_pymc_model(d: dict[str, Any], spec: TwinModelSpec, *, pointwise: bool = False) -> Any:
    """Return the PyMC model of the design ``d`` (from :func:`build_design`).

    With real experiments in the design (``d["experiments"]``, from
    :func:`bayestwin.model.experiment_terms.experiment_designs`), the history's rows
    see the effects plus the history's bias, ``tau + history_bias``, and each
    experiment adds an observation of the model's ATE over its population
    (:mod:`bayestwin.model.experiment_terms`); without them the graph has neither.

    Parameters
    ----------
    d : dict
        The design arrays.
    spec : TwinModelSpec
        The priors, the family and whether rows were collapsed.
    pointwise : bool
        Instead of the likelihood, add the deterministic ``unit_loglik``: each unit's
        log density of its rows, its unit effect integrated out
        (:func:`bayestwin.model.pointwise.unit_log_likelihood`). ``d`` must then have
        the cell layout (``build_design(..., cells=True)``); the model has no
        ``z_unit`` and no experiment terms, and serves to evaluate a fit's draws, not
        to sample.

    Returns
    -------
    pymc.Model
        The model, not sampled.
    """
    import pymc as pm

    from bayestwin.model.experiment_terms import experiment_likelihood, history_bias

    enc: FeatureEncoder = d["encoder"]
    coords = {
        "segment": list(enc.segments),
        "intervention_type": list(d["types"]),
        "feature": enc.columns,
        "numeric": list(enc.numeric),
    }
    pr = spec.priors
    with pm.Model(coords=coords) as model:
        a = _intercepts(pm, d, pr, coords)
        beta = pm.Normal("beta", 0.0, pr.beta_sd, dims="feature")
        tau = _effects(pm, d, pr, coords)
        experiments = d.get("experiments")
        if experiments and pointwise:
            raise ValueError("the pointwise model has no experiment terms")
        tau_history = tau + history_bias(pm, pr, coords)[:, None] if experiments else tau
        eta = _linear_predictor(pm, d, pr, a, beta, tau_history) + panel_terms(pm, d, pr)
        if pointwise:
            unit_log_likelihood(pm, d, spec, eta)
        elif d["choices"].units and not samples_units(spec):
            panel_likelihood(pm, d, spec, eta)
        else:
            if d["choices"].units:
                eta = eta + sampled_unit_term(pm, d, pr)
            _likelihood(pm, d, spec, eta)
        if experiments:
            experiment_likelihood(pm, model, d, spec, a, beta, tau)
    return model


def _intercepts(pm: Any, d: dict[str, Any], pr: TwinPriors, coords: dict[str, list[str]]) -> Any:
    """Segment intercepts ``a``: centred or non-centred around ``mu_a``.

    A single segment has no segment-level hierarchy: ``a = mu_a`` and no ``sigma_a``
    (a scale no data inform, which only opens a funnel for the sampler).
    """
    import pytensor.tensor as pt

    mu_a = pm.Normal("mu_a", d["center"], pr.intercept_sd)
    if len(coords["segment"]) < 2:
        return pm.Deterministic("a", mu_a * pt.ones(len(coords["segment"])), dims="segment")
    sigma_a = scale_prior(pm, "sigma_a", pr.segment_sd)
    if d["centred_intercepts"]:
        return pm.Normal("a", mu_a, sigma_a, dims="segment")
    z_a = _zero_sum(pm, "z_a", ("segment",), coords)
    return pm.Deterministic("a", mu_a + sigma_a * z_a, dims="segment")


#: Fewest intervention types whose spread ``sigma_type`` is learned; below it the scale
#: is fixed at ``effect_type_sd`` (see :func:`type_scale`).
MIN_TYPES_FOR_A_LEARNED_SCALE = 3


def type_scale(pm: Any, pr: TwinPriors, n_types: int) -> Any:
    """The spread of the type means: learned from three types on, fixed for two.

    Two types inform their spread through one contrast, so ``sigma_type``'s posterior
    keeps the breadth of its prior (0.05-1 at the default scale) and the likelihood sd
    of the type means falls inside it: whichever parameterisation, the type means have
    a funnel somewhere in that range. On the calibration session's panel worlds
    (1,000-3,000 units x 10 periods, gaussian and poisson) every fit that diverged had
    two types: 6 of the 7 two-type worlds of a 17-world run, none of the 10 with three
    or four. With two types the spread is therefore the prior's scale, a fixed
    ``Normal(mu_tau, effect_type_sd)`` around the mean: the difference of the two
    effects has prior sd ``effect_type_sd * sqrt(2)`` (0.42 at the default), and the
    two are pooled no harder than that; a learned scale, which one contrast cannot pin
    down, reaches small values that pool them far harder. It does not remove every
    divergence: with the fixed scale, 2 of 9 two-type panel worlds of a later run still
    diverged, and 4 of 7 two-type worlds shaped like the model.

    Parameters
    ----------
    pm : module
        ``pymc``.
    pr : TwinPriors
        Its ``effect_type_sd``.
    n_types : int
        Intervention types of the model.

    Returns
    -------
    tensor or float
        The random variable ``sigma_type``, or ``effect_type_sd`` for fewer than
        :data:`MIN_TYPES_FOR_A_LEARNED_SCALE` types.
    """
    if n_types < MIN_TYPES_FOR_A_LEARNED_SCALE:
        return pr.effect_type_sd
    return scale_prior(pm, "sigma_type", pr.effect_type_sd)


def _effects(pm: Any, d: dict[str, Any], pr: TwinPriors, coords: dict[str, list[str]]) -> Any:
    """Effects ``tau[k, seg]`` at intensity 1, pooled across types, then segments.

    A single segment has no segment-level deviations and no ``sigma_seg``:
    ``tau[k, seg] = tau_type[k]``.
    """
    mu_tau = pm.Normal("mu_tau", 0.0, pr.effect_mean_sd)
    sigma_type = type_scale(pm, pr, len(coords["intervention_type"]))
    one_segment = len(coords["segment"]) < 2
    if not one_segment:
        sigma_seg = scale_prior(pm, "sigma_seg", pr.effect_segment_sd)
    centred_types, centred_cells = d["centred_effects"]
    if centred_types:
        tau_type = pm.Normal("tau_type", mu_tau, sigma_type, dims="intervention_type")
    else:
        z_type = _zero_sum(pm, "z_type", ("intervention_type",), coords)
        tau_type = pm.Deterministic(
            "tau_type", mu_tau + sigma_type * z_type, dims="intervention_type"
        )
    if one_segment:
        return pm.Deterministic("tau", tau_type[:, None], dims=("intervention_type", "segment"))
    if centred_cells:
        return pm.Normal("tau", tau_type[:, None], sigma_seg, dims=("intervention_type", "segment"))
    z_tau = _zero_sum(pm, "z_tau", ("intervention_type", "segment"), coords)
    return pm.Deterministic(
        "tau",
        tau_type[:, None] + sigma_seg * z_tau,
        dims=("intervention_type", "segment"),
    )


def _linear_predictor(
    pm: Any, d: dict[str, Any], pr: TwinPriors, a: Any, beta: Any, tau: Any
) -> Any:
    """``eta``: intercepts and features, plus the dosed effect on treated rows.

    Creates the interactions ``gamma`` and the dose-response rate on the way. A design
    with the block layout (``d["blocks"]``, :mod:`bayestwin.model.panel_terms`) gets
    one ``eta`` per block of a unit's cells sharing a design, shape (units, Q).
    """
    import pytensor.tensor as pt

    # a fixed, tight scale: shrinkage toward 0 without a funnel to sample
    z_gamma = pm.Normal("z_gamma", 0.0, 1.0, dims=("intervention_type", "numeric"))
    gamma = pm.Deterministic(
        "gamma", pr.interaction_sd * z_gamma, dims=("intervention_type", "numeric")
    )
    log_rate = pm.Normal("log_rate", 0.0, pr.dose_log_rate_sd)
    rate = pm.Deterministic("dose_rate", pt.exp(log_rate))
    jump = (
        pm.Beta("dose_jump", pr.dose_jump_alpha, pr.dose_jump_beta) if d["choices"].jump else None
    )

    src = d.get("blocks", d)
    per_unit = "unit_x" in src  # unit terms computed once per unit, then spread
    x, seg = (src["unit_x"], src["unit_seg"]) if per_unit else (src["x"], src["seg"])
    eta = a[seg] + (pt.as_tensor_variable(x) @ beta if x.shape[1] else 0.0)
    if per_unit:
        eta = pt.repeat(eta, src["shape"][1]) if "blocks" in d else eta[d["unit"]]
    rows = np.flatnonzero(src["treated"] > 0)
    if rows.size:
        rows = rows[np.argsort(src["k"][rows], kind="stable")]  # grouped by type
        k = src["k"][rows]
        s = src["intensity"][rows]
        g = pt.expm1(-rate * s) / pt.expm1(-rate)
        if jump is not None:
            g = pt.where(s > 0, jump + (1.0 - jump) * g, 0.0)
        het = tau[k, src["seg"][rows]]
        if src["z"].shape[1]:
            # one product per type over its rows, not a row-wise gather of gamma
            cut = np.searchsorted(k, np.arange(len(d["types"]) + 1))
            het = het + pt.concatenate(
                [
                    pt.dot(src["z"][rows[lo:hi]], gamma[j])
                    for j, (lo, hi) in enumerate(zip(cut[:-1], cut[1:], strict=True))
                    if hi > lo
                ]
            )
        eta = pt.inc_subtensor(eta[rows], g * het)
    if "blocks" in d:
        return eta.reshape(d["blocks"]["shape"][:2])
    return eta


def _likelihood(pm: Any, d: dict[str, Any], spec: TwinModelSpec, eta: Any) -> None:
    """The family's likelihood of the (collapsed) rows."""
    import pytensor.tensor as pt

    total, count = d["total"], d["count"]
    if spec.family == "bernoulli":
        pm.Binomial("y", n=count.astype(np.int64), logit_p=eta, observed=total)
    elif spec.family == "poisson":
        pm.Poisson("y", mu=count * pt.exp(eta), observed=total)
    elif spec.family == "neg_binomial":
        alpha = pm.HalfNormal("dispersion", 10.0)
        if spec.collapse:
            # rows collapsed by (design, outcome): weight each distinct value
            dist = pm.NegativeBinomial.dist(mu=pt.exp(eta), alpha=alpha)
            pm.Potential("y", (count * pm.logp(dist, total)).sum())
        else:
            pm.NegativeBinomial("y", mu=pt.exp(eta), alpha=alpha, observed=total)
    else:
        sigma = pm.HalfNormal("dispersion", spec.priors.dispersion_sd)
        ybar = (total / count - d["outcome_loc"]) / d["outcome_scale"]
        pm.Normal("y", mu=eta, sigma=sigma / np.sqrt(count), observed=ybar)
        ss = d["sumsq"] / d["outcome_scale"] ** 2
        if (count > 1).any():
            pm.Potential(
                "within_ss",
                -((count - 1).sum()) * pt.log(sigma) - ss.sum() / (2 * sigma**2),
            )
