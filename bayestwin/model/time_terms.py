"""The period effects of a panel model: a random walk, and a seasonal wave when asked for.

A history with time effects gets a shift ``b_t`` per period on the link scale::

    b_t = w_t + s[c(t)] - s[c(T)]

``w`` is a random walk with drift and ``s`` a seasonal wave, the second only with
``season_length`` set.

* ``w_t``: a Gaussian random walk with drift, zero at the last period ``T`` of the
  history: its steps are ``delta + sigma_time * z_j`` with the drift
  ``delta ~ Normal(0, drift_sd)`` and ``z`` zero-sum (an iid normal step splits
  exactly into its mean, which joins the drift, and zero-sum deviations, so the drift
  and the deviations are orthogonal in the posterior instead of competing for the mean
  step). A walk rather than a fixed trend: it needs no functional form, follows level
  changes of any shape, pools neighbouring periods, and its forecast ``h`` periods
  ahead widens honestly (``h`` fresh steps). The drift carries a trend into the
  forecast: without it a walk forecasts the last period's level, and on calibration
  worlds with a trend of -0.05 per period the poisson ATE of the next period was off
  by the missed step. With two periods there is one step and no drift. The walk's
  geometry was measured on the benchmark's poisson panel (2,000 units x 10 periods,
  before the drift): 28-29 leapfrog steps per draw (tree depth 5) at step size
  0.19-0.20, the lowest bulk ESS on ``sigma_time``, ``sigma_seg`` and ``mu_tau``; a
  centred walk did worse (``sigma_time`` ESS 94 against 223 of 600 draws, 35 steps per
  draw against 28; with the drift, on a poisson trend-and-wave world of 2,199 units x
  10 periods, 119 against 190 of 1,000), so it stays non-centred. With a seasonal wave
  the deviations are also orthogonal to every step pattern the wave can make
  (:func:`walk_basis`; ``T - S`` free directions instead of ``T - 1``). Otherwise the
  split of the period shifts into walk and wave is a ridge whose width grows with
  ``sigma_time``: at a large ``sigma_time`` the walk undoes any shape of the wave, whose
  values then wander to their prior, a funnel. On a poisson world without time effects
  (2,907 units x 10 periods) the fit diverged 3 times in 1,000 draws, at
  ``sigma_time``'s highest draws and the wave's most extreme ones, with a min bulk ESS
  of 96 (``sigma_time``); with the orthogonal walk, no divergence and 294. The model
  changes little: under the old prior, with the wave's scale (0.5) several times the
  walk's step sd (0.05-0.1), the wave already took nearly all of the variance along
  those directions.
* ``s``: a seasonal pattern over ``S = season_length`` positions, zero-sum, with prior
  ``ZeroSumNormal(season_sd)`` (:class:`~bayestwin.model.spec.TwinModelSpec`'s
  ``season_length``, :class:`~bayestwin.model.spec.TwinPriors`' ``season_sd``). ``c(t)``
  is a period's position in the cycle: its value modulo ``S`` when the periods are
  integers (so a gap in the numbering keeps the phase), else its rank among the
  history's periods modulo ``S``. Only with ``season_length`` set.

Why a seasonal term beside the walk: in the history both fit the period shifts equally
well, but they forecast differently. A walk forecasts the last period's level; a wave
that is lower in the next period than in the last one shifts every unit's mean, and a
log or logit link carries that shift into the ATE (a count model's ATE scales with the
level). On calibration worlds with a four-period wave of amplitude 0.1-0.2, the
random-walk forecast of the period after the history was off by the wave's full step,
and the poisson ATE with it. The pattern's prior has a fixed scale rather than a
hierarchical one: ``S - 1`` free values barely inform a scale, and period effects
are estimated from every unit at once, so the centred pattern has no funnel to fall
into.

Forecast: ``h`` periods after the history the shift is ``h * delta`` plus the walk's
``h`` fresh deviations plus ``s[c(T + h)] - s[c(T)]``; :func:`season_ahead` gives the
last part for ``h = 1..S`` (it repeats with period ``S``), and the simulation adds them
up (:func:`bayestwin.core.unit_effects.time_effect_draws`).

What is assumed: the wave's shape is the same every cycle and for every unit; the
effect itself does not vary with the season.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.errors import InvalidInputError
from bayestwin.model.spec import TwinPriors

__all__ = ["period_design", "period_effects", "season_ahead", "season_positions", "walk_basis"]


def season_positions(periods: NDArray, season_length: int) -> tuple[NDArray, NDArray]:
    """Each period's position in the seasonal cycle, and the next ``S`` periods'.

    Parameters
    ----------
    periods : ndarray, shape (T + 1,)
        The history's distinct periods, sorted.
    season_length : int
        Periods per cycle ``S`` (>= 2).

    Returns
    -------
    positions : ndarray of intp, shape (T + 1,)
        ``c(t)`` of each period: its value modulo ``S`` for integer periods, else its
        rank modulo ``S``.
    ahead : ndarray of intp, shape (S,)
        ``c(T + h)`` for ``h = 1..S``.

    Raises
    ------
    InvalidInputError
        Field ``season_length``: fewer than ``S + 1`` periods, so that some position of
        the cycle would never be seen twice.
    """
    periods = np.asarray(periods)
    n = len(periods)
    if n <= season_length:
        raise InvalidInputError(
            f"season_length={season_length} needs more than {season_length} periods of "
            f"history to learn a seasonal wave; the history has {n}. Set season_length "
            "to None, or to fewer periods per cycle",
            field="season_length",
        )
    steps = np.arange(1, season_length + 1)
    if np.issubdtype(periods.dtype, np.integer):
        values = periods.astype(np.int64)
    else:
        values = np.arange(n, dtype=np.int64)
    positions = np.mod(values, season_length).astype(np.intp)
    ahead = np.mod(values[-1] + steps, season_length).astype(np.intp)
    return positions, ahead


def period_design(
    df: pd.DataFrame, design: pd.DataFrame, period_column: str, season_length: int
) -> dict[str, Any]:
    """The period arrays of a design with time effects.

    Parameters
    ----------
    df : DataFrame
        The validated history.
    design : DataFrame
        Its likelihood cells, with the period column.
    period_column : str
        The period column.
    season_length : int
        Periods per seasonal cycle (0: no seasonal wave).

    Returns
    -------
    dict
        ``periods`` (the sorted distinct values), ``period`` (each cell's index into
        them), and with a wave ``season_position`` and ``season_ahead_position``
        (:func:`season_positions`).
    """
    periods = np.sort(df[period_column].unique())
    out: dict[str, Any] = {
        "periods": periods,
        "period": np.searchsorted(periods, design[period_column].to_numpy()),
    }
    if season_length:
        out["season_position"], out["season_ahead_position"] = season_positions(
            periods, season_length
        )
    return out


def season_ahead(season: NDArray, last: int, ahead: NDArray) -> NDArray:
    """The seasonal part of the period shift ``h = 1..S`` periods after the history.

    Parameters
    ----------
    season : ndarray, shape (D, S)
        Posterior draws of the seasonal pattern ``s``.
    last : int
        ``c(T)``, the last period's position.
    ahead : ndarray of int, shape (S,)
        ``c(T + h)`` for ``h = 1..S`` (:func:`season_positions`).

    Returns
    -------
    ndarray, shape (D, S)
        Column ``h - 1`` holds ``s[c(T + h)] - s[c(T)]``.
    """
    season = np.asarray(season, dtype=float)
    return season[:, np.asarray(ahead)] - season[:, [int(last)]]


def walk_basis(positions: NDArray, season_length: int) -> NDArray:
    """Orthonormal directions of the walk's step deviations beside a seasonal wave.

    The history's ``T`` steps ``b_{t+1} - b_t`` of the wave ``s[c(t)]`` span at most
    ``S - 1`` directions, and the drift spans the constant one; the walk's deviations
    take every other direction (module docstring).

    Parameters
    ----------
    positions : ndarray of int, shape (T + 1,)
        ``c(t)`` of each period (:func:`season_positions`).
    season_length : int
        Periods per cycle ``S``.

    Returns
    -------
    ndarray, shape (T, T - r)
        Orthonormal columns orthogonal to the constant step and to every step pattern
        of a wave, ``r`` the rank of those together (empty when they span every step).
    """
    positions = np.asarray(positions, dtype=np.intp)
    n_steps = len(positions) - 1
    wave = np.zeros((n_steps, season_length))
    rows = np.arange(n_steps)
    np.add.at(wave, (rows, positions[1:]), 1.0)
    np.add.at(wave, (rows, positions[:-1]), -1.0)
    spanned = np.concatenate([np.ones((n_steps, 1)), wave], axis=1)
    u, sv, _ = np.linalg.svd(spanned, full_matrices=True)
    rank = int((sv > 1e-9 * sv[0]).sum())
    return np.ascontiguousarray(u[:, rank:])


def period_effects(pm: Any, d: dict[str, Any], priors: TwinPriors) -> Any:
    """The period effects ``time_effect`` (zero at the last period), in the model.

    Creates ``sigma_time``, ``z_time`` and (with three or more periods)
    ``time_drift``, and with ``d["season_position"]`` the pattern ``season``; with a
    wave, ``z_time`` holds the walk's coordinates along :func:`walk_basis` (none when
    the drift and the wave span every step).

    Parameters
    ----------
    pm : module
        ``pymc``.
    d : dict
        The design: ``periods``, and ``season_position`` for a seasonal term.
    priors : TwinPriors
        ``time_sd``, ``drift_sd`` and ``season_sd``.

    Returns
    -------
    tensor, shape (T + 1,)
        ``b_t``.
    """
    import pytensor.tensor as pt

    from bayestwin.model.panel_terms import scale_prior

    sigma_time = scale_prior(pm, "sigma_time", priors.time_sd)
    n_steps = len(d["periods"]) - 1
    positions = d.get("season_position")
    if n_steps >= 2:
        drift = pm.Normal("time_drift", 0.0, priors.drift_sd)
        if positions is not None:  # deviations off the mean step and every step of the wave
            basis = walk_basis(positions, len(d["season_ahead_position"]))
            steps = drift * pt.ones(n_steps)
            if basis.shape[1]:
                z = pm.Normal("z_time", 0.0, 1.0, shape=basis.shape[1])
                steps = steps + sigma_time * pt.dot(pt.as_tensor_variable(basis), z)
        else:  # drift plus zero-sum deviations: the two are orthogonal
            z = pm.ZeroSumNormal("z_time", sigma=1.0, shape=n_steps)
            steps = drift + sigma_time * z
    else:  # one step: a drift and a walk are the same thing
        steps = sigma_time * pm.Normal("z_time", 0.0, 1.0, shape=n_steps)
    # w_t = -sum_{j >= t} step_j: a walk that is 0 at the last period
    b = pt.concatenate([-pt.cumsum(steps[::-1])[::-1], pt.zeros(1)])
    if positions is not None:
        n_season = len(d["season_ahead_position"])
        s = pm.ZeroSumNormal("season", sigma=priors.season_sd, shape=n_season)
        b = b + s[positions] - s[positions[-1]]
    return pm.Deterministic("time_effect", b)
