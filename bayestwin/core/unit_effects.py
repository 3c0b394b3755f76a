"""Unit effects and time effects of a panel posterior, as plain NumPy arrays.

A panel history (units observed over several periods) gives every unit its own
link-scale deviation from its segment's intercept, and every period its own shift. The
twin of unit ``i`` carries ``i``'s deviation: that is what makes it ``i``'s twin.

:class:`UnitEffects` keeps, for every unit of the history, the posterior mean and
standard deviation of its *total* deviation (the correlated-random-effects term
``lambda . m_i`` plus the unit's own effect ``u_i``), and the posterior draws of the
population scale of ``u``. :meth:`UnitEffects.draws` turns them into one deviation per
unit and posterior draw:

* a unit of the history draws ``Normal(mean_i, sd_i)`` (its marginal posterior; the
  fit summarises it per draw from the exact conditional posterior, see
  :mod:`bayestwin.model.unit_posterior`), by stratified normal scores in a rotation of
  its own (:func:`_rotated_normals`);
* a unit the history does not know draws from the population distribution: the
  correlated term of a history unit drawn at random, plus a fresh ``u`` from the
  fitted distribution (``Normal(0, scale_d)``, or ``log Gamma(phi, phi)`` with
  ``phi = 1 / scale_d**2`` for the gamma unit effects of a count model).

:func:`time_effect_draws` gives the period shift ``H`` periods past the history under
the fitted random walk of the period effects (zero at the last period of the history),
with the seasonal wave's change when the model has one.

NumPy, SciPy and pandas.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import DTypeLike, NDArray
from scipy import special

__all__ = ["UnitEffectKind", "UnitEffects", "UnitOffsets", "time_effect_draws"]

#: How the population distribution of the unit effects is shaped.
UnitEffectKind = Literal["normal", "log_gamma"]


@dataclass(frozen=True)
class UnitEffects:
    """Posterior summary of the unit effects of a panel model.

    Attributes
    ----------
    kind : {"normal", "log_gamma"}
        Shape of the population distribution of ``u``.
    unit_ids : ndarray of str, shape (U,)
        The history's units, in the order of the arrays below.
    mean, sd : ndarray, shape (U,)
        Posterior mean and sd of each unit's total deviation (link scale).
    offset : ndarray, shape (U,)
        Posterior mean of each unit's correlated-random-effects term ``lambda . m_i``
        (zeros without it): what an unseen unit draws its offset from.
    scale : ndarray, shape (D,)
        Posterior draws of the population scale of ``u`` (sd on the link scale, or the
        coefficient of variation of the gamma multiplier).
    """

    kind: UnitEffectKind
    unit_ids: NDArray
    mean: NDArray
    sd: NDArray
    offset: NDArray
    scale: NDArray

    def __post_init__(self) -> None:
        n = len(self.unit_ids)
        for name in ("mean", "sd", "offset"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected {(n,)}")
        if self.scale.ndim != 1:
            raise ValueError(f"scale must be one-dimensional, got shape {self.scale.shape}")
        if self.kind not in ("normal", "log_gamma"):
            raise ValueError(f"kind must be 'normal' or 'log_gamma', got {self.kind!r}")

    @property
    def n_draws(self) -> int:
        """Posterior draws ``D`` of the scale."""
        return int(self.scale.shape[0])

    def index_of(self, unit_ids: Sequence[object] | NDArray) -> NDArray[np.intp]:
        """Position of each id among :attr:`unit_ids`; -1 for a unit the history lacks."""
        wanted = pd.Index(np.asarray(unit_ids).astype(str))
        return np.asarray(self._index.get_indexer(wanted), dtype=np.intp)

    @functools.cached_property
    def _index(self) -> pd.Index:
        return pd.Index(self.unit_ids.astype(str))

    def population_draws(self, n_units: int, rng: np.random.Generator) -> NDArray:
        """Deviations of ``n_units`` units the history does not know, shape ``(n_units, D)``.

        Parameters
        ----------
        n_units : int
            How many units.
        rng : numpy Generator
            The random stream.
        """
        d = self.n_draws
        pick = (
            rng.integers(0, len(self.unit_ids), size=(n_units, d)) if len(self.unit_ids) else None
        )
        base = self.offset[pick] if pick is not None else np.zeros((n_units, d))
        scale = np.maximum(self.scale, 1e-12)[None, :]
        if self.kind == "normal":
            return base + scale * rng.standard_normal((n_units, d))
        phi = 1.0 / scale**2
        theta = rng.gamma(np.broadcast_to(phi, (n_units, d)), 1.0) / phi
        return base + np.log(np.maximum(theta, 1e-300))

    def draws(
        self,
        unit_ids: Sequence[object] | NDArray,
        rng: np.random.Generator,
        dtype: type[np.floating] = np.float64,
    ) -> NDArray:
        """One deviation per unit and posterior draw, shape ``(len(unit_ids), D)``.

        Parameters
        ----------
        unit_ids : sequence
            The units (twins' sources); ids the history lacks draw from the population.
        rng : numpy Generator
            The random stream (seeded by the simulation's seed).
        dtype : numpy floating type
            dtype of the result.

        Returns
        -------
        ndarray
            Link-scale deviations.
        """
        draws = self.lazy_draws(unit_ids, rng, dtype)
        return draws if isinstance(draws, np.ndarray) else np.asarray(draws)

    def lazy_draws(
        self,
        unit_ids: Sequence[object] | NDArray,
        rng: np.random.Generator,
        dtype: type[np.floating] = np.float64,
    ) -> UnitOffsets | NDArray:
        """:meth:`draws`, left as :class:`UnitOffsets` when every unit is in the history.

        The same random stream gives the same values as :meth:`draws`; the simulation
        kernel writes them per chunk of units (:func:`bayestwin.core.effects.effect_draws`
        takes either form).

        Parameters
        ----------
        unit_ids, rng, dtype
            As in :meth:`draws`.

        Returns
        -------
        UnitOffsets or ndarray
            An array when some unit is not in the history.
        """
        return self.lazy_draws_at(self.index_of(unit_ids), rng, dtype)

    def lazy_draws_at(
        self,
        idx: NDArray[np.intp],
        rng: np.random.Generator,
        dtype: type[np.floating] = np.float64,
    ) -> UnitOffsets | NDArray:
        """:meth:`lazy_draws` of the units at positions ``idx`` of :attr:`unit_ids`.

        Parameters
        ----------
        idx : ndarray of int
            Positions from :meth:`index_of` (-1: a unit the history lacks); a caller
            that simulates the same units again keeps them instead of looking the ids
            up each time.
        rng, dtype
            As in :meth:`draws`.

        Returns
        -------
        UnitOffsets or ndarray
            An array when some unit is not in the history.
        """
        idx = np.asarray(idx, dtype=np.intp)
        known = idx >= 0
        if known.all():  # the usual case: every twin is a unit of the history
            cycle, starts = _rotation(idx.size, self.n_draws, rng, np.dtype(dtype))
            return UnitOffsets(
                mean=self.mean[idx].astype(dtype),
                sd=self.sd[idx].astype(dtype),
                cycle=cycle,
                starts=starts,
            )
        out = np.empty((len(idx), self.n_draws), dtype=dtype)
        if known.any():
            k = idx[known]
            noise = _rotated_normals(k.size, self.n_draws, rng, out.dtype)
            noise *= self.sd[k, None].astype(out.dtype)
            noise += self.mean[k, None].astype(out.dtype)
            out[known] = noise
        if (~known).any():
            out[~known] = self.population_draws(int((~known).sum()), rng)
        return out


@dataclass(frozen=True)
class UnitOffsets:
    """The deviations of units of the history, per posterior draw, not yet written out.

    Row ``i`` is ``mean_i + sd_i * cycle[starts_i : starts_i + D]``: the stratified
    normal scores of :func:`_rotation`, rotated per row. The simulation kernel writes
    the rows of one chunk of units at a time into a buffer that stays in cache
    (:meth:`fill`), instead of reading a (units x D) array from memory for every arm;
    ``np.asarray`` gives the full array, equal to :meth:`UnitEffects.draws`.

    Attributes
    ----------
    mean, sd : ndarray, shape (N,)
        Each row's posterior mean and sd (working dtype).
    cycle : ndarray, shape (2 D - 1,)
        The shuffled scores, twice over (working dtype).
    starts : ndarray of int, shape (N,)
        Each row's position in the cycle.
    """

    mean: NDArray
    sd: NDArray
    cycle: NDArray
    starts: NDArray

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, draws)."""
        return (int(self.mean.shape[0]), (self.cycle.shape[0] + 1) // 2)

    def take(self, order: NDArray[np.intp], dtype: type[np.floating]) -> UnitOffsets:
        """The rows ``order``, in ``dtype``."""
        return UnitOffsets(
            mean=self.mean[order].astype(dtype),
            sd=self.sd[order].astype(dtype),
            cycle=self.cycle.astype(dtype),
            starts=self.starts[order],
        )

    def scaled(self, factor: float) -> UnitOffsets:
        """Every deviation times ``factor``."""
        f = self.mean.dtype.type(factor)
        return UnitOffsets(self.mean * f, self.sd * f, self.cycle, self.starts)

    def fill(self, start: int, end: int, out: NDArray) -> NDArray:
        """Write the rows ``start:end`` into ``out[: end - start]`` and return that view."""
        rows = out[: end - start]
        d = self.shape[1]
        cycle = self.cycle
        # one contiguous slice copy per row: measured 3x faster than ``np.take`` over
        # the cycle's sliding windows, which copies the whole (D, D) window view first
        for i, j in enumerate(self.starts[start:end].tolist()):
            rows[i] = cycle[j : j + d]
        rows *= self.sd[start:end, None]
        rows += self.mean[start:end, None]
        return rows

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> NDArray:
        out = np.empty(self.shape, dtype=self.cycle.dtype)
        self.fill(0, self.shape[0], out)
        return out if dtype is None else out.astype(dtype)


def _rotation(n: int, d: int, rng: np.random.Generator, dtype: np.dtype) -> tuple[NDArray, NDArray]:
    """The score cycle and each of ``n`` rows' start in it (see :func:`_rotated_normals`)."""
    scores = special.ndtri((np.arange(d) + 0.5) / d)[rng.permutation(d)].astype(dtype)
    return np.concatenate([scores, scores[:-1]]), rng.integers(0, d, size=n)


def _rotated_normals(n: int, d: int, rng: np.random.Generator, dtype: np.dtype) -> NDArray:
    """``n`` rows of ``d`` standard normal scores: one stratified set, rotated per row.

    The ``d`` normal quantiles at ``(j + 1/2) / d``, shuffled once, then each row starts
    at its own random position in that cycle: every row holds the same exact marginal
    (a unit's posterior is represented without Monte Carlo noise in its moments), rows
    are decorrelated across draws by their rotations, and it costs a copy rather than
    ``n x d`` fresh normal draws (several times faster for 10,000 twins x 1,000 draws).
    """
    cycle, starts = _rotation(n, d, rng, dtype)
    return np.lib.stride_tricks.sliding_window_view(cycle, d)[starts]


def time_effect_draws(
    scale: NDArray,
    horizon: int,
    rng: np.random.Generator,
    season: NDArray | None = None,
    drift: NDArray | None = None,
) -> NDArray:
    """Period shifts ``1..horizon`` periods past the history, shape ``(horizon, D)``.

    The period effects follow a Gaussian random walk with innovation sd ``scale_d``,
    zero at the last period of the history, so ``h`` periods later the shift is the sum
    of ``h`` innovations (plus ``h`` times the drift), plus the seasonal wave's change
    from the last period to that one when the model has a wave.

    Parameters
    ----------
    scale : ndarray, shape (D,)
        Posterior draws of the random walk's innovation sd.
    horizon : int
        Periods ahead (>= 1).
    rng : numpy Generator
        The random stream.
    season : ndarray, shape (D, S), optional
        The seasonal part of the shift ``h = 1..S`` periods ahead (column ``h - 1``),
        repeating with period ``S`` (:func:`bayestwin.model.time_terms.season_ahead`).
    drift : ndarray, shape (D,), optional
        Posterior draws of the walk's drift (mean step).

    Returns
    -------
    ndarray
        Row ``h - 1`` holds the shift ``h`` periods ahead.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    steps = rng.standard_normal((horizon, scale.shape[0])) * np.asarray(scale)[None, :]
    shifts = np.cumsum(steps, axis=0)
    if drift is not None:
        shifts = shifts + np.arange(1, horizon + 1)[:, None] * np.asarray(drift)[None, :]
    if season is not None:
        season = np.asarray(season)
        shifts = shifts + season[:, np.arange(horizon) % season.shape[1]].T
    return shifts
