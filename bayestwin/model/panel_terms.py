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
* ``b_t``: period effects, a Gaussian random walk with step sd ``sigma_time``, zero at
  the last period of the history. A random walk rather than a trend plus seasonality:
  it needs no season length, follows level changes of any shape, pools neighbouring
  periods, and its forecast ``h`` periods ahead widens honestly (``h`` steps). The
  intercepts are then the levels of the last period.

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
  each cost 24 times the likelihood.

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

from bayestwin.model.spec import TwinModelSpec, TwinPriors

__all__ = [
    "PanelChoices",
    "add_panel_design",
    "panel_choices",
    "panel_likelihood",
    "panel_terms",
    "sampled_unit_term",
    "samples_units",
    "scale_prior",
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
    """

    units: bool
    crre: bool
    time: bool
    jump: bool


def panel_choices(df: pd.DataFrame, spec: TwinModelSpec) -> PanelChoices:
    """Resolve the spec's ``"auto"`` panel options on a validated history.

    Parameters
    ----------
    df : DataFrame
        Validated history rows.
    spec : TwinModelSpec
        Its ``unit_effects``, ``time_effects`` and ``dose_jump``.

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
        units=units, crre=units and _treatment_varies(df, spec), time=time, jump=jump
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
    and ``mundlak`` (units x types, centred shares of treated periods); with time
    effects ``period`` (each cell's period index) and ``periods`` (the sorted values).
    """
    d["choices"] = choices
    if choices.units:
        ids = df[spec.unit_column].astype(str)
        unit_ids = np.array(sorted(ids.unique()), dtype=str)
        d["unit_ids"] = unit_ids
        d["unit"] = np.searchsorted(unit_ids, design[spec.unit_column].astype(str).to_numpy())
        itype = df[spec.intervention_column].to_numpy()
        shares = pd.DataFrame({t: itype == t for t in types}).astype(float)
        shares["__unit"] = ids.to_numpy()
        m = shares.groupby("__unit", sort=True).mean().reindex(unit_ids).to_numpy()
        d["mundlak"] = m - m.mean(axis=0)
    if choices.time and spec.period_column:
        periods = np.sort(df[spec.period_column].unique())
        d["periods"] = periods
        d["period"] = np.searchsorted(periods, design[spec.period_column].to_numpy())


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

    Creates ``lambda_unit`` and ``sigma_time`` with the period effects ``time_effect``
    (zero at the last period) on the way.
    """
    import pytensor.tensor as pt

    choices: PanelChoices = d["choices"]
    extra: Any = 0.0
    if choices.crre:
        lam = pm.Normal("lambda_unit", 0.0, pr.mundlak_sd, dims="intervention_type")
        extra = extra + pt.dot(pt.as_tensor_variable(d["mundlak"]), lam)[d["unit"]]
    if choices.time and len(d["periods"]) > 1:
        sigma_time = scale_prior(pm, "sigma_time", pr.time_sd)
        z = pm.Normal("z_time", 0.0, 1.0, shape=len(d["periods"]) - 1)
        # b_t = -sigma * sum_{j >= t} z_j: a random walk that is 0 at the last period
        tail = pt.cumsum(z[::-1])[::-1]
        b = pm.Deterministic("time_effect", pt.concatenate([-sigma_time * tail, pt.zeros(1)]))
        extra = extra + b[d["period"]]
    return extra


def _scatter(values: Any, unit: np.ndarray, shape: Any) -> Any:
    """Sum ``values`` (cells, ...) over the cells of each unit: an array of ``shape``."""
    import pytensor.tensor as pt

    return pt.inc_subtensor(pt.zeros(shape)[unit], values)


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
        v = sigma**2 + n_unit * sigma_u**2
        logp = (
            -(n_unit.sum() - n_units) * pt.log(sigma)
            - 0.5 * pt.log(v).sum()
            - q_total / (2 * sigma**2)
            + (sigma_u**2 * r_unit**2 / (2 * sigma**2 * v)).sum()
        )
        pm.Potential("y", logp)
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
