"""The panel baseline: two-way fixed effects (difference in differences) on the rows.

:func:`two_way_fixed_effects` regresses the outcome on unit and period fixed effects and
one treatment indicator per intervention type in the history, by least squares on the rows (a linear
probability model for bernoulli outcomes, linear for counts), with standard errors
clustered by unit (CR1). Only untreated rows and rows treated at the run's intensity
enter, as for the other baselines. The fixed effects are swept out by alternating
projections (demeaning by unit, then by period, until the change is below 1e-10 of the
outcome's sd), so an unbalanced panel is handled exactly.

The coefficient of type ``k`` is its ATE on the natural scale; it is the same for every
set of twins (the model has no effect modifiers), so every group of twins gets it. With
staggered adoption and effects that vary over time or units, two-way fixed effects is
known to weight effects oddly (Goodman-Bacon, 2021); it is the standard panel
estimator all the same, and the one the twin model's panel terms mirror.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.calibration.baselines import BaselineEstimate

__all__ = ["demean_two_way", "two_way_fixed_effects"]

_MAX_SWEEPS = 500


def demean_two_way(values: NDArray, unit: NDArray[np.intp], period: NDArray[np.intp]) -> NDArray:
    """Sweep unit and period means out of the columns of ``values`` (rows, cols).

    Parameters
    ----------
    values : ndarray, shape (rows, cols)
        The columns to transform.
    unit, period : ndarray of intp, shape (rows,)
        Each row's unit and period index.

    Returns
    -------
    ndarray
        The residual of each column after projecting out both sets of dummies.
    """
    out = np.array(values, dtype=float, copy=True)
    n_u, n_t = int(unit.max()) + 1, int(period.max()) + 1
    size_u = np.bincount(unit, minlength=n_u)[:, None]
    size_t = np.bincount(period, minlength=n_t)[:, None]
    tol = 1e-10 * max(float(np.std(out)), 1e-300)
    for _ in range(_MAX_SWEEPS):
        before = out.copy()
        sums_u = np.zeros((n_u, out.shape[1]))
        np.add.at(sums_u, unit, out)
        out -= (sums_u / size_u)[unit]
        sums_t = np.zeros((n_t, out.shape[1]))
        np.add.at(sums_t, period, out)
        out -= (sums_t / size_t)[period]
        if np.max(np.abs(out - before)) < tol:
            break
    return out


def two_way_fixed_effects(
    history: pd.DataFrame,
    types: Sequence[str],
    intensity: float,
    groups: Mapping[str, NDArray[np.bool_]],
    control_mean: float,
) -> dict[str, dict[str, BaselineEstimate]]:
    """Two-way fixed effects ATE of each type, with unit-clustered standard errors.

    Parameters
    ----------
    history : DataFrame
        Rows with ``unit_id``, ``period``, ``intervention_type``, ``intensity`` and
        ``outcome``.
    types : sequence of str
        The intervention types.
    intensity : float
        Only untreated rows and rows treated at this intensity enter.
    groups : mapping of str to bool array
        The groups of twins to report (each gets the type's coefficient).
    control_mean : float
        Reported as the estimate's control mean (the untreated rows' mean outcome).

    Returns
    -------
    dict
        ``{type: {group: BaselineEstimate}}``; NaN where a type has no treated row.
    """
    itype = history["intervention_type"].fillna("").astype(str).to_numpy()
    s = history["intensity"].to_numpy(dtype=float)
    keep = (itype == "") | np.isclose(s, intensity)
    rows = history[keep]
    itype = itype[keep]
    unit = pd.factorize(rows["unit_id"])[0].astype(np.intp)
    period = pd.factorize(rows["period"], sort=True)[0].astype(np.intp)
    # every treated type gets its indicator (those not asked for are nuisances that
    # would otherwise sit in the control rows)
    present = sorted(set(itype) - {""})
    y = rows["outcome"].to_numpy(dtype=float)
    x = np.column_stack([(itype == t).astype(float) for t in present]) if present else None
    est: dict[str, BaselineEstimate] = {}
    if x is not None:
        both = demean_two_way(np.column_stack([y, x]), unit, period)
        yt, xt = both[:, 0], both[:, 1:]
        xtx = xt.T @ xt
        if np.linalg.matrix_rank(xtx) == xt.shape[1]:
            coef = np.linalg.solve(xtx, xt.T @ yt)
            resid = yt - xt @ coef
            n_u = int(unit.max()) + 1
            scores = np.zeros((n_u, xt.shape[1]))
            np.add.at(scores, unit, xt * resid[:, None])
            bread = np.linalg.inv(xtx)
            dof = n_u / max(n_u - 1, 1) * (len(y) - 1) / max(len(y) - xt.shape[1], 1)
            cov = dof * bread @ (scores.T @ scores) @ bread
            se = np.sqrt(np.maximum(np.diag(cov), 0.0))
            for j, t in enumerate(present):
                est[t] = BaselineEstimate(float(coef[j]), float(se[j]), control_mean)
    missing = BaselineEstimate(float("nan"), float("nan"), float("nan"))
    return {t: {g: est.get(t, missing) for g in groups} for t in types}
