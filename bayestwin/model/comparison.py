"""PSIS-LOO of a panel fit against the same model without its unit and period effects.

A panel history gets unit effects, a correlated-random-effects term and period
effects (:mod:`bayestwin.model.panel_terms`). Whether the history supports them is a
question for the data: :func:`compare_panel_terms` fits the *pooled* model (the same
spec with ``unit_effects`` and ``time_effects`` off, which collapses to one likelihood
row per design), and scores both on leaving out one unit at a time, by Pareto-smoothed
importance sampling (Vehtari, Gelman and Gabry, 2017; ``arviz.loo`` and
``arviz.compare``). Each unit's term is its rows' joint density with its own effect
integrated out (:mod:`bayestwin.model.pointwise`), so the scores predict a new unit
of the same population: what a twin of an unseen unit is.

A large history is scored on a seeded subsample of ``max_units`` units (the elpd is
then the subsample's sum, and comparable between the two models because both score
the same units); the per-unit terms cost draws x cells x (1, or
:data:`~bayestwin.model.pointwise.GH_NODES` for the families whose unit effect is
integrated numerically).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd

from bayestwin.core.comparison import ModelComparison, ModelScore
from bayestwin.model.fit import EXPERIMENTS_KEY, TwinGenerator
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.model.history import check_history
from bayestwin.model.panel_terms import PanelChoices, panel_choices
from bayestwin.model.pointwise import POINTWISE_NAME
from bayestwin.model.spec import TwinModelSpec

__all__ = [
    "DEFAULT_MAX_UNITS",
    "compare_panel_terms",
    "pointwise_log_likelihood",
    "scored_units",
    "with_comparison",
]

logger = logging.getLogger(__name__)

#: Units scored by default; a larger history is scored on a seeded subsample.
DEFAULT_MAX_UNITS = 2000

#: Per-cell arrays of a design, sliced when the scored units are a subsample.
_CELL_ARRAYS = (
    "x", "z", "seg", "k", "treated", "intensity", "total", "count", "sumsq", "period",
)  # fmt: skip


def _terms(choices: PanelChoices) -> str:
    """The panel terms of a model, in words."""
    words = []
    if choices.units:
        words.append("unit effects")
    if choices.crre:
        words.append("correlated random effects")
    if choices.time:
        words.append("period effects")
    return ", ".join(words) or "no unit or period effects"


def _keep_units(d: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
    """The cell design restricted to the units ``keep`` (sorted indices into its ids)."""
    mask = np.isin(d["cell_unit"], keep)
    out = dict(d)
    for name in _CELL_ARRAYS:
        if name in d:
            out[name] = d[name][mask]
    remap = np.full(len(d["cell_unit_ids"]), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    out["cell_unit"] = remap[d["cell_unit"][mask]]
    out["cell_unit_ids"] = d["cell_unit_ids"][keep]
    if "unit" in d:  # the panel's unit index uses the same sorted ids
        out["unit"] = remap[d["unit"][mask]]
        out["unit_ids"] = d["unit_ids"][keep]
        out["mundlak"] = d["mundlak"][keep]
    if "unit_log_factorial" in d:
        out["unit_log_factorial"] = d["unit_log_factorial"][keep]
    return out


def scored_units(n_units: int, max_units: int, seed: int) -> np.ndarray:
    """The sorted indices of the units a comparison scores (all, or a seeded subsample)."""
    if n_units <= max_units:
        return np.arange(n_units)
    return np.sort(np.random.default_rng(seed).choice(n_units, size=max_units, replace=False))


def pointwise_log_likelihood(
    trace: Any, df: pd.DataFrame, spec: TwinModelSpec, units: np.ndarray | None = None
) -> Any:
    """Each unit's log likelihood at every posterior draw of a fit.

    Parameters
    ----------
    trace : DataTree
        The fit's trace (its ``posterior`` group).
    df : DataFrame
        The validated history it was fitted on.
    spec : TwinModelSpec
        Its spec.
    units : ndarray of int, optional
        Indices of the units to score, into the sorted unit ids (default all).

    Returns
    -------
    xarray.Dataset
        ``unit_loglik`` with dims (chain, draw, ``loo_unit``).
    """
    import pymc as pm

    from bayestwin.model.pymc_model import build_design, build_pymc_model

    d = build_design(df, spec, cells=True)
    if units is not None:
        d = _keep_units(d, units)
    model = build_pymc_model(d, spec, pointwise=True)
    return pm.compute_deterministics(
        trace.posterior, var_names=[POINTWISE_NAME], model=model, progressbar=False
    )


def _loo_tree(trace: Any, loglik: Any) -> Any:
    import xarray as xr

    return xr.DataTree.from_dict(
        {"posterior": trace.posterior.to_dataset(), "log_likelihood": loglik}
    )


def compare_panel_terms(
    spec: TwinModelSpec,
    df: pd.DataFrame,
    trace: Any,
    *,
    max_units: int = DEFAULT_MAX_UNITS,
    seed: int = 0,
) -> ModelComparison:
    """Score a panel fit and the pooled model by PSIS-LOO over units.

    Parameters
    ----------
    spec : TwinModelSpec
        The fitted model's spec.
    df : DataFrame
        The validated history it was fitted on.
    trace : DataTree
        The fit's trace.
    max_units : int
        Units scored at most (a seeded subsample beyond).
    seed : int
        Seed of the subsample and of the pooled fit's sampler.

    Returns
    -------
    ModelComparison
        Both models' scores, the better first; with a ``reason`` and no scores when the
        model has no unit or period effects.

    Raises
    ------
    ValueError
        If ``max_units`` is below 2.
    """
    import arviz as az

    if max_units < 2:
        raise ValueError(f"max_units must be at least 2: {max_units}")
    start = time.perf_counter()
    choices = panel_choices(df, spec)
    n_units = int(df[spec.unit_column].nunique())
    if not (choices.units or choices.time):
        return ModelComparison(
            units=n_units,
            seed=seed,
            reason="the model has no unit or period effects: there is nothing to compare",
        )
    sampler = spec.sampler.model_copy(update={"random_seed": seed, "progressbar": False})
    pooled_spec = spec.model_copy(
        update={"unit_effects": "off", "time_effects": "off", "sampler": sampler}
    )
    pooled = TwinGenerator(pooled_spec).fit(df, override_diagnostics=True)
    units = scored_units(n_units, max_units, seed)
    trees = {
        "panel": _loo_tree(trace, pointwise_log_likelihood(trace, df, spec, units)),
        "pooled": _loo_tree(
            pooled.trace, pointwise_log_likelihood(pooled.trace, df, pooled_spec, units)
        ),
    }
    with warnings.catch_warnings():
        # ArviZ warns of high Pareto k; the scores count those units instead
        warnings.filterwarnings("ignore", message=".*Pareto distribution", category=UserWarning)
        loos = {n: az.loo(t, var_name=POINTWISE_NAME, pointwise=True) for n, t in trees.items()}
    table = az.compare(loos, round_to="none")  # ranks the LOO results above, computed once
    terms = {"panel": _terms(choices), "pooled": _terms(panel_choices(df, pooled_spec))}
    scores = []
    for name, row in table.iterrows():
        loo = loos[str(name)]
        high = int((np.asarray(loo.pareto_k) > float(loo.good_k)).sum())
        scores.append(
            ModelScore(
                name=str(name),
                terms=terms[str(name)],
                elpd=float(row["elpd"]),
                se=float(row["se"]),
                p=float(row["p"]),
                rank=int(row["rank"]),
                elpd_diff=float(row["elpd_diff"]),
                dse=float(row["dse"]),
                weight=float(row["weight"]),
                high_pareto_k=high,
            )
        )
    scores.sort(key=lambda s: s.rank)
    return ModelComparison(
        models=scores,
        units_scored=len(units),
        units=n_units,
        seed=seed,
        seconds=time.perf_counter() - start,
    )


def with_comparison(
    fitted: FittedTwinModel,
    history: pd.DataFrame,
    *,
    max_units: int = DEFAULT_MAX_UNITS,
    seed: int | None = None,
) -> FittedTwinModel:
    """Return ``fitted`` with its :attr:`~FittedTwinModel.comparison` filled in.

    Parameters
    ----------
    fitted : FittedTwinModel
        A fresh fit, with its trace.
    history : DataFrame
        The history it was fitted on.
    max_units : int
        Units scored at most (see :func:`compare_panel_terms`).
    seed : int, optional
        Seed of the subsample and the pooled fit (default: the fit's own seed, 0 when
        it drew a fresh one).

    Returns
    -------
    FittedTwinModel
        A copy with ``comparison`` set. A fit without a trace, a fit with experiment
        terms (whose pointwise terms would need the experiments too), and a comparison
        that raises get a comparison whose ``reason`` says why and that holds no
        scores; the error is logged. The fit itself always stands.
    """
    if seed is None:
        seed = fitted.fit_seed
    n_units = len(fitted.population)
    used = int((fitted.provenance.get(EXPERIMENTS_KEY) or {}).get("count", 0))
    start = time.perf_counter()
    if fitted.trace is None:
        comparison = ModelComparison(units=n_units, seed=seed, reason="the fit kept no trace")
    elif used:
        comparison = ModelComparison(
            units=n_units,
            seed=seed,
            reason=f"the fit has {used} experiment term(s); the comparison scores histories alone",
        )
    else:
        try:
            spec = TwinModelSpec.model_validate(fitted.spec)
            comparison = compare_panel_terms(
                spec, check_history(history, spec), fitted.trace, max_units=max_units, seed=seed
            )
        except Exception as exc:  # noqa: BLE001 - the fit stands; the comparison says why not
            logger.warning(
                "model comparison of %s/%s failed",
                fitted.brand,
                fitted.twin_type.value,
                exc_info=True,
            )
            comparison = ModelComparison(
                units=n_units,
                seed=seed,
                seconds=time.perf_counter() - start,
                reason=f"the comparison failed: {type(exc).__name__}: {exc}"[:2000],
            )
    return dataclasses.replace(fitted, comparison=comparison)
