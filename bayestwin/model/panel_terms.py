"""The panel terms of the twin model: unit effects, period effects and their likelihoods.

A history whose units have several periods gets, on top of the GLM of
:mod:`bayestwin.model.pymc_model`::

    eta_it = ... + lambda . m_i + u_i + b_t

* ``u_i``: the unit's own intercept, partially pooled, ``u_i ~ Normal(0, sigma_unit)``
  (a gamma multiplier ``exp(u_i) ~ Gamma(phi, phi)``, ``phi = 1 / sigma_unit**2``, for
  poisson outcomes). It is never sampled: the likelihood integrates it out per unit.
* ``lambda . m_i``: the correlated-random-effects (Mundlak) term. ``m_i`` holds the
  unit's share of periods under each intervention type, centred over units. It is
  there when some unit's treatment changes over its periods: when none does, the share
  is the treatment itself, collinear with the effect, and the effect is learned
  between units under conditional ignorability, as in a cross-section. It lets the
  unit effect's mean depend on the unit's treatment history, which is what a partially
  pooled intercept alone cannot do: when units with a high level are treated earlier
  or more often, the random-effects assumption (unit effect independent of treatment)
  fails, and ``lambda`` absorbs the dependence. The effects are then identified from
  within-unit change, as in two-way fixed effects (Mundlak, 1978; Wooldridge, 2021).
* ``b_t``: period effects, a Gaussian random walk with drift, zero at the last period
  of the history, plus a seasonal wave when the spec gives ``season_length``
  (:mod:`bayestwin.model.time_terms`). The intercepts are then the levels of the last
  period.

The likelihoods stay collapsed: rows are grouped by (unit, period, design), and each
unit's effect is integrated out in closed form where the family allows it:

* **gaussian**: the unit's rows are jointly normal with compound-symmetric covariance
  ``sigma**2 I + sigma_unit**2 11'``; its log density needs only the unit's count, the
  sum of its residuals and the sum of their squares;
* **poisson**: a gamma multiplier gives the negative multinomial marginal, from the
  unit's total outcome and total expected count;
* **bernoulli** and **neg_binomial**: sampled non-centred unit effects
  ``u_i = sigma_unit * z_i`` over the binomial counts (weighted values) of each (unit,
  period, design) cell. Measured on a bernoulli history of 1,000 units x 8 periods (one
  chain, 300 + 300 draws), this took 24 s against 71 s for Gauss-Hermite quadrature over
  ``u_i`` with 24 nodes: the quadrature needed fewer leapfrog steps (19 against 31), but
  each cost 24 times the likelihood. They stay non-centred even on a long panel: on a
  bernoulli history of 400 units x 50 periods with little unit heterogeneity (2 chains,
  300 + 300 draws) the centred form ``u_i ~ Normal(0, sigma_unit)`` mixed far worse
  (min bulk ESS 2.6 and r_hat 2.3 against 79 and 1.02, 47 leapfrog steps per draw
  against 31): whether a unit's rows pin its effect down depends on ``sigma_unit``
  itself, which a rule fixed before the fit cannot know.

**Blocks.** Within a unit, cells that share a design (segment, features, intervention,
intensity) differ only by the period effect, so the integrated likelihoods are computed
per *block* of such cells (:func:`_block_layout`), laid out as a dense (units, Q) grid
with ``Q`` the most blocks of any unit, and a (units, Q, periods) grid of the cells'
counts and totals. For poisson, ``sum_cells total * eta`` splits into a block sum and a
period sum, and a unit's expected count is ``sum_blocks exp(eta_b) sum_t count_bt
exp(b_t)``: one ``exp`` per block and per period instead of per cell, no scatter of
cells onto units (a sum over the grid's rows), and ``gammaln(Y_i + phi)`` once per
distinct unit total. For gaussian, the cells' residuals are taken on the grid. A panel
whose grid would hold over :data:`_MAX_PADDING` slots per cell (many designs per unit
spread over few periods each) keeps the cell-wise sums. Measured on the benchmark's
poisson panel (2,000 units x 10 periods: 20,000 cells, 3,023 blocks in a 2,000 x 2
grid), one log density and gradient took 0.69 ms against 2.08 ms cell-wise (numba, same
run, shared machine). Three more savings at scale: when every unit keeps one segment and
one feature row over its blocks, the intercept and feature terms are computed once per
unit; the exposures once per distinct row of counts (:func:`_block_exposure`); and the
interactions as one product per intervention type. On that panel at 20,000 and 100,000
units (200,000 and 1,000,000 rows) one log density and gradient took 0.96 and 13.8 ms
against 1.56 and 23.6 ms before (numba, best of 30, two cores busy with other fits), to
the same log density (the sampler's geometry: :mod:`bayestwin.model.time_terms`).

``nox -s benchmark`` compares the default fit with the plain model (one term per row,
sampled unit effects).

What is still assumed: parallel trends given the features and the period effects (the
untreated outcome of a treated unit would have moved like everyone's), no anticipation
(treatment does not act before it starts), and hidden confounding that is
time-invariant. Confounding that varies over time, for example campaigns aimed at
units whose level is rising, is out of reach; the calibration session reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayestwin.model.history import unit_index
from bayestwin.model.spec import TwinModelSpec, TwinPriors
from bayestwin.model.time_terms import period_design, period_effects

#: Most grid slots per likelihood cell for the block layout (:func:`_block_layout`).
_MAX_PADDING = 4.0

__all__ = [
    "PanelChoices",
    "add_panel_design",
    "panel_choices",
    "panel_likelihood",
    "panel_terms",
    "sampled_unit_term",
    "samples_units",
    "scale_prior",
    "unit_constant_terms",
]


@dataclass(frozen=True)
class PanelChoices:
    """Which panel terms a fit has.

    Attributes
    ----------
    units : bool
        Unit effects.
    crre : bool
        The correlated-random-effects term ``lambda . m_i`` (with unit effects, when
        some unit's treatment changes over its periods).
    time : bool
        Random-walk period effects.
    jump : bool
        A first-contact jump in the dose response.
    season : int
        Periods per cycle of the seasonal wave of the period effects (0: none).
    """

    units: bool
    crre: bool
    time: bool
    jump: bool
    season: int = 0


def panel_choices(df: pd.DataFrame, spec: TwinModelSpec) -> PanelChoices:
    """Resolve the spec's ``"auto"`` panel options on a validated history.

    Parameters
    ----------
    df : DataFrame
        Validated history rows.
    spec : TwinModelSpec
        Its ``unit_effects``, ``time_effects``, ``season_length`` and ``dose_jump``.

    Returns
    -------
    PanelChoices
    """
    per_unit = 1
    n_periods = 1
    if spec.period_column:
        per_unit = int(df.groupby(spec.unit_column).size().max())
        n_periods = int(df[spec.period_column].nunique())
    panel = per_unit >= 2
    units = spec.unit_effects == "on" or (spec.unit_effects == "auto" and panel)
    time = bool(spec.period_column) and (
        spec.time_effects == "on" or (spec.time_effects == "auto" and panel and n_periods >= 2)
    )
    doses = df.loc[df[spec.intervention_column] != "", spec.intensity_column]
    jump = spec.dose_jump == "on" or (spec.dose_jump == "auto" and doses.nunique() >= 3)
    return PanelChoices(
        units=units,
        crre=units and _treatment_varies(df, spec),
        time=time,
        jump=jump,
        season=(spec.season_length or 0) if time else 0,
    )


def _treatment_varies(df: pd.DataFrame, spec: TwinModelSpec) -> bool:
    """Whether some unit's treatment (type or intensity) changes over its periods.

    Without such a change the unit's share of treated periods is its treatment itself,
    and the correlated-random-effects term would be collinear with the effect: the
    effect is then learned between units, under conditional ignorability.
    """
    cols = [spec.intervention_column, spec.intensity_column]
    distinct = df[[spec.unit_column, *cols]].drop_duplicates()
    return bool(distinct[spec.unit_column].duplicated().any())


def collapse_keys(spec: TwinModelSpec, choices: PanelChoices) -> tuple[str, ...]:
    """The columns, beyond the design, that the rows of a panel fit are grouped by."""
    keys: list[str] = []
    if choices.units:
        keys.append(spec.unit_column)
    if choices.time and spec.period_column:
        keys.append(spec.period_column)
    return tuple(keys)


def add_panel_design(
    d: dict[str, Any],
    df: pd.DataFrame,
    design: pd.DataFrame,
    spec: TwinModelSpec,
    choices: PanelChoices,
    types: tuple[str, ...],
) -> None:
    """Add the panel arrays to the design ``d`` (in place).

    Adds ``choices``; with unit effects ``unit`` (each cell's unit index), ``unit_ids``
    and ``mundlak`` (units x types, centred shares of treated periods), and either the
    block layout ``blocks`` or the cells' :func:`unit_constant_terms`; with time effects
    :func:`~bayestwin.model.time_terms.period_design`.
    """
    d["choices"] = choices
    if choices.units:
        ids = df[spec.unit_column].astype(str)
        unit_ids, d["unit"] = unit_index(df, design, spec)
        d["unit_ids"] = unit_ids
        itype = df[spec.intervention_column].to_numpy()
        shares = pd.DataFrame({t: itype == t for t in types}).astype(float)
        shares["__unit"] = ids.to_numpy()
        m = shares.groupby("__unit", sort=True).mean().reindex(unit_ids).to_numpy()
        d["mundlak"] = m - m.mean(axis=0)
    if choices.time and spec.period_column:
        d.update(period_design(df, design, spec.period_column, choices.season))
    if choices.units and spec.collapse and not samples_units(spec):
        blocks = _block_layout(d)
        if blocks is not None:
            d["blocks"] = blocks
    if choices.units and "blocks" not in d:
        d.update(unit_constant_terms(d["seg"], d["x"], d["unit"], len(unit_ids)))


def unit_constant_terms(
    seg: np.ndarray, x: np.ndarray, unit: np.ndarray, n_units: int
) -> dict[str, np.ndarray]:
    """Each unit's segment and feature row, when every row of the unit shares them.

    The intercept and feature terms of the linear predictor are then computed once per
    unit and gathered per row (a bernoulli unit over 50 periods: one product instead of
    50). On the growth benchmark's bernoulli history of 2,000 units x 50 periods
    (100,000 cells, sampled unit effects) one log density and gradient took 3.8 ms
    against 10.3 ms row by row (numba, best of 20, two cores busy with other fits).

    Parameters
    ----------
    seg, x : ndarray
        Each likelihood row's (or block's) segment index and encoded features.
    unit : ndarray of int
        Each row's unit index, in ``[0, n_units)``.
    n_units : int
        Units.

    Returns
    -------
    dict
        ``unit_seg`` and ``unit_x`` (one row per unit), or empty when some unit's rows
        differ in segment or features (a feature that changes over time).
    """
    _, head = np.unique(unit, return_index=True)
    if len(head) != n_units:
        return {}
    if np.array_equal(seg, seg[head][unit]) and np.array_equal(x, x[head][unit]):
        return {"unit_seg": seg[head], "unit_x": x[head]}
    return {}


def _block_layout(d: dict[str, Any]) -> dict[str, Any] | None:
    """The cells of an integrated-likelihood fit laid out as a (units, Q, periods) grid.

    A *block* is a unit's cells that share a design (segment, features, intervention
    and intensity): its ``eta`` differs between periods only by the period effect.
    Blocks sorted by unit fill a (units, Q) grid, ``Q`` the most blocks of any unit; the
    cells fill a (units, Q, periods) grid of counts and totals (zeros where a unit has
    no such cell). ``None`` when that grid would hold more than
    :data:`_MAX_PADDING` slots per cell (a very unbalanced panel), where the cells are
    summed per unit instead.

    Returns
    -------
    dict or None
        ``shape`` (units, Q, periods); per block slot (flattened, units x Q) ``seg``,
        ``x``, ``z``, ``k``, ``treated``, ``intensity``; per cell slot ``count`` and
        ``total``; ``y_unit`` (each unit's total outcome); the distinct rows of the
        (slots, periods) counts, ``count_patterns``, and each slot's row among them,
        ``count_pattern``; and, when every unit keeps one segment and one feature row
        over its blocks, ``unit_seg`` and ``unit_x`` per unit.
    """
    unit, n_units = d["unit"], len(d["unit_ids"])
    col = d.get("period", np.zeros(len(unit), dtype=np.int64))
    n_cols = len(d["periods"]) if "period" in d else 1
    keys = np.column_stack([unit, d["seg"], d["k"], d["treated"], d["intensity"], d["x"], d["z"]])
    _, first, block = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    block = block.ravel()
    unit_b = unit[first]  # sorted: the unit is the first key
    rank = np.arange(len(first)) - np.searchsorted(unit_b, unit_b)
    n_q = int(rank.max()) + 1
    if n_units * n_q * n_cols > _MAX_PADDING * len(unit):
        return None
    slot = unit_b * n_q + rank
    n_slots = n_units * n_q

    def per_slot(values: np.ndarray) -> np.ndarray:
        out = np.zeros((n_slots, *values.shape[1:]), dtype=values.dtype)
        out[slot] = values[first]
        return out

    cell = slot[block] * n_cols + col
    if np.bincount(cell).max() > 1:
        return None
    count = np.zeros(n_slots * n_cols)
    total = np.zeros(n_slots * n_cols)
    count[cell] = d["count"]
    total[cell] = d["total"]
    shape = (n_units, n_q, n_cols)
    patterns, pattern = np.unique(count.reshape(n_slots, n_cols), axis=0, return_inverse=True)
    return {
        **unit_constant_terms(d["seg"][first], d["x"][first], unit_b, n_units),
        "count_patterns": patterns,
        "count_pattern": pattern.ravel(),
        "shape": shape,
        "seg": per_slot(d["seg"]),
        "x": per_slot(d["x"]),
        "z": per_slot(d["z"]),
        "k": per_slot(d["k"]),
        "treated": per_slot(d["treated"]),
        "intensity": per_slot(d["intensity"]),
        "count": count.reshape(shape),
        "total": total.reshape(shape),
        "y_unit": np.bincount(unit, weights=d["total"], minlength=n_units),
    }


# -- the graph ---------------------------------------------------------------------------


def scale_prior(pm: Any, name: str, mean: float) -> Any:
    """Boundary-avoiding prior for a hierarchical scale: ``Gamma(2, 2 / mean)``.

    Its density is 0 at 0 and rises linearly, so the sampler does not fall into the
    funnel at sigma -> 0 that half-normal scales open when there are few groups (three
    intervention types, say); the mode is ``mean / 2`` and the prior still allows
    strong pooling.
    """
    return pm.Gamma(name, alpha=2.0, beta=2.0 / mean)


def panel_terms(pm: Any, d: dict[str, Any], pr: TwinPriors) -> Any:
    """The Mundlak and period terms of each likelihood cell's ``eta`` (0 without them).

    Creates ``lambda_unit`` and the period effects ``time_effect`` (zero at the last
    period, :func:`~bayestwin.model.time_terms.period_effects`) on the way.
    """
    import pytensor.tensor as pt

    choices: PanelChoices = d["choices"]
    blocks = "blocks" in d
    extra: Any = 0.0
    if choices.crre:
        lam = pm.Normal("lambda_unit", 0.0, pr.mundlak_sd, dims="intervention_type")
        m = pt.dot(pt.as_tensor_variable(d["mundlak"]), lam)
        extra = extra + (m[:, None] if blocks else m[d["unit"]])
    if choices.time and len(d["periods"]) > 1:
        b = period_effects(pm, d, pr)
        if not blocks:  # the block likelihood takes the period effects apart
            extra = extra + b[d["period"]]
    return extra


def _scatter(values: Any, unit: np.ndarray, shape: Any) -> Any:
    """Sum ``values`` (cells, ...) over the cells of each unit: an array of ``shape``."""
    import pytensor.tensor as pt

    return pt.inc_subtensor(pt.zeros(shape)[unit], values)


def _gaussian_marginal(sigma: Any, sigma_u: Any, r_unit: Any, n_unit: Any, q_total: Any) -> Any:
    """Log density of gaussian cells with each unit's normal intercept integrated out.

    A unit's rows are jointly normal with covariance ``sigma**2 I + sigma_u**2 11'``;
    the density needs only each unit's count ``n_unit``, the sum of its residuals
    ``r_unit`` and the total sum of squared residuals ``q_total``.
    """
    import pytensor.tensor as pt

    v = sigma**2 + n_unit * sigma_u**2
    return (
        -(n_unit.sum() - n_unit.shape[0]) * pt.log(sigma)
        - 0.5 * pt.log(v).sum()
        - q_total / (2 * sigma**2)
        + (sigma_u**2 * r_unit**2 / (2 * sigma**2 * v)).sum()
    )


def samples_units(spec: TwinModelSpec) -> bool:
    """Whether the unit effects are sampled (bernoulli and neg_binomial, or when asked)."""
    return spec.family in ("bernoulli", "neg_binomial") or spec.unit_likelihood == "sampled"


def sampled_unit_term(pm: Any, d: dict[str, Any], pr: TwinPriors) -> Any:
    """Sampled non-centred unit effects ``sigma_unit * z_unit[unit]`` of each cell."""
    sigma_u = scale_prior(pm, "sigma_unit", pr.unit_sd)
    z = pm.Normal("z_unit", 0.0, 1.0, shape=len(d["unit_ids"]))
    return sigma_u * z[d["unit"]]


def panel_likelihood(pm: Any, d: dict[str, Any], spec: TwinModelSpec, eta: Any) -> None:
    """The family's likelihood of the cells, each unit's effect integrated out.

    Creates ``sigma_unit`` (and ``dispersion``) on the way. Gaussian and poisson only;
    the other families sample their unit effects (:func:`sampled_unit_term`).
    """
    import pytensor.tensor as pt

    if "blocks" in d:
        _block_likelihood(pm, d, spec, eta)
        return
    unit, n_units = d["unit"], len(d["unit_ids"])
    total, count = d["total"], d["count"]
    sigma_u = scale_prior(pm, "sigma_unit", spec.priors.unit_sd)
    fam = spec.family
    if fam == "gaussian":
        sigma = pm.HalfNormal("dispersion", spec.priors.dispersion_sd)
        ybar = (total / count - d["outcome_loc"]) / d["outcome_scale"]
        ss = d["sumsq"] / d["outcome_scale"] ** 2
        resid = ybar - eta
        r_unit = _scatter(count * resid, unit, (n_units,))
        n_unit = np.bincount(unit, weights=count, minlength=n_units)
        q_total = ss.sum() + (count * resid**2).sum()
        pm.Potential("y", _gaussian_marginal(sigma, sigma_u, r_unit, n_unit, q_total))
        return
    if fam == "poisson":
        phi = 1.0 / sigma_u**2
        y_unit = np.bincount(unit, weights=total, minlength=n_units)
        m_unit = _scatter(count * pt.exp(eta), unit, (n_units,))
        logp = (total * eta).sum() + (
            pt.gammaln(y_unit + phi) - pt.gammaln(phi) + phi * pt.log(phi)
            - (y_unit + phi) * pt.log(phi + m_unit)
        ).sum()  # fmt: skip
        pm.Potential("y", logp)
        return
    raise ValueError(f"family {fam!r} samples its unit effects (see samples_units)")


def _block_exposure(bl: dict[str, Any], exp_b: Any) -> Any:
    """Each block's exposure ``sum_t count_bt exp(b_t)``, shape (units, Q).

    Computed once per distinct row of counts (a staggered panel has a few dozen: the
    periods before and after each start) and gathered per block, instead of a product
    over the whole (blocks, periods) grid, when the distinct rows are at most a quarter
    of the blocks.
    """
    import pytensor.tensor as pt

    patterns, pattern = bl["count_patterns"], bl["count_pattern"]
    n_units, n_q, n_cols = bl["shape"]
    if 4 * len(patterns) <= len(pattern):
        return pt.dot(patterns, exp_b)[pattern].reshape((n_units, n_q))
    return pt.dot(bl["count"].reshape(-1, n_cols), exp_b).reshape((n_units, n_q))


def _block_likelihood(pm: Any, d: dict[str, Any], spec: TwinModelSpec, eta: Any) -> None:
    """:func:`panel_likelihood` on the block layout (:func:`_block_layout`).

    ``eta`` holds each block's linear predictor without the period effect, shape
    (units, Q). The log density is the same as the cell-wise one, term by term:

    * poisson: ``sum_cells total * eta = sum_blocks Y_b eta_b + sum_t Y_t b_t`` and
      ``M_i = sum_blocks exp(eta_b) (sum_t count_bt exp(b_t))``: one ``exp`` per block
      and one per period instead of one per cell; ``gammaln(Y_i + phi)`` is summed
      over the distinct unit totals;
    * gaussian: the residuals of the cells, ``ybar - eta_b - b_t``, on the
      (units, Q, periods) grid (padding slots have count 0).
    """
    import pytensor.tensor as pt

    bl = d["blocks"]
    n_units, _, n_cols = bl["shape"]
    count, total = bl["count"], bl["total"]
    b = pm.modelcontext(None).named_vars.get("time_effect")
    sigma_u = scale_prior(pm, "sigma_unit", spec.priors.unit_sd)
    if spec.family == "gaussian":
        sigma = pm.HalfNormal("dispersion", spec.priors.dispersion_sd)
        scale = d["outcome_scale"]
        ybar = np.where(count > 0, (total / np.maximum(count, 1.0) - d["outcome_loc"]) / scale, 0.0)
        fit = eta[:, :, None] + (b[None, None, :] if b is not None else 0.0)
        resid = ybar - fit
        r_unit = (count * resid).sum(axis=(1, 2))
        n_unit = count.sum(axis=(1, 2))
        q_total = d["sumsq"].sum() / scale**2 + (count * resid**2).sum()
        pm.Potential("y", _gaussian_marginal(sigma, sigma_u, r_unit, n_unit, q_total))
        return
    if spec.family == "poisson":
        phi = 1.0 / sigma_u**2
        y_values, y_mult = np.unique(bl["y_unit"], return_counts=True)
        if b is None:
            exposure: Any = count.sum(axis=2)
            linear = (total.sum(axis=2) * eta).sum()
        else:
            exposure = _block_exposure(bl, pt.exp(b))
            linear = (total.sum(axis=2) * eta).sum() + pt.dot(total.sum(axis=(0, 1)), b)
        m_unit = (exposure * pt.exp(eta)).sum(axis=1)
        logp = linear + (y_mult * pt.gammaln(y_values + phi)).sum() + n_units * (
            phi * pt.log(phi) - pt.gammaln(phi)
        ) - ((bl["y_unit"] + phi) * pt.log(phi + m_unit)).sum()  # fmt: skip
        pm.Potential("y", logp)
        return
    raise ValueError(f"family {spec.family!r} samples its unit effects (see samples_units)")
