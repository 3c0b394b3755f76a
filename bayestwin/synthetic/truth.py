"""The ground truth of a synthetic history: its data-generating process, evaluable anywhere.

:class:`GroundTruth` computes, exactly from the data-generating process, the expected
outcome of any unit under any intervention, and so the true ATE (absolute and
relative) of any intervention config on any set of units. It can also run a "real"
randomised experiment with sampling noise. :class:`SyntheticTwinData` pairs a history
with its truth.

**Panel processes** (:mod:`bayestwin.synthetic.panel`). A unit of the history carries
its own intercept ``u_i`` (its ``unit_id`` finds it); a unit the truth does not know
gets the population's distribution of ``u``: its expected outcome is the average over
``u ~ Normal(0, unit_sd**2)`` (Gauss-Hermite quadrature, exact for gaussian). The time
effect is evaluated at a *period*; the default is the **horizon**, the period right
after the history (``n_periods``, the history's periods being ``0 .. n_periods - 1``).
Treatment effects act within the period they are given in (no carry-over, no
anticipation), so the ATE of a config at a period compares each unit treated and
untreated in that period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.core.families import Family, inverse_link
from bayestwin.vocabulary import TwinType

__all__ = ["BrandTruth", "GroundTruth", "SyntheticTwinData", "TrueEffect", "dose_response"]

#: Gauss-Hermite nodes of the average over the unit-effect distribution.
_QUADRATURE_NODES = 32


def dose_response(intensity: NDArray | float, rate: float) -> NDArray:
    """Monotone dose-response ``g(s) = (1 - exp(-rate s)) / (1 - exp(-rate))``.

    Parameters
    ----------
    intensity : array_like
        Intensities ``s >= 0``.
    rate : float
        Curvature ``rate > 0``; ``g`` tends to ``s`` as ``rate`` tends to 0.

    Returns
    -------
    ndarray
        ``g(s)``, with ``g(0) = 0`` and ``g(1) = 1``.
    """
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    s = np.asarray(intensity, dtype=float)
    return np.expm1(-rate * s) / np.expm1(-rate)


@dataclass(frozen=True)
class TrueEffect:
    """The true effect of an intervention on a set of units."""

    ate: float
    control_mean: float
    treated_mean: float

    @property
    def relative(self) -> float:
        """ATE relative to the control mean (the lift)."""
        return self.ate / self.control_mean


@dataclass(frozen=True)
class BrandTruth:
    """True parameters of one brand."""

    intercept: NDArray  # (n_segments,)
    beta: NDArray  # (n_numeric,)
    cat_effects: dict[str, NDArray]  # column -> (n_levels,), first level 0
    tau: NDArray  # (n_types, n_segments)
    gamma: NDArray  # (n_types, n_interacting)


@dataclass(frozen=True)
class GroundTruth:
    """The data-generating process of a synthetic history, evaluable on any units.

    The panel attributes (``n_periods`` onwards) default to a history without panel
    processes; see :mod:`bayestwin.synthetic.panel` for their meaning. ``unit_effects``
    maps ``unit_id`` to the unit's link-scale intercept ``u_i`` (None: no unit effects);
    ``unit_trends`` maps it to the unit's hidden drift per period ``v_i``, which adds
    ``v_i * (t - horizon)`` in period ``t`` (0 at the horizon; None: no drifts).
    """

    twin_type: TwinType
    family: Family
    segments: tuple[str, ...]
    intervention_types: tuple[str, ...]
    numeric_features: tuple[str, ...]
    numeric_loc: NDArray
    numeric_scale: NDArray
    categorical_features: dict[str, tuple[str, ...]]
    n_interacting: int
    dose_rate: float
    brands: dict[str, BrandTruth]
    dispersion: float | None
    outcome_scale: float
    n_periods: int = 1
    unit_effects: pd.Series | None = None
    unit_sd: float = 0.0
    unit_trends: pd.Series | None = None
    trend: float = 0.0
    season_amplitude: float = 0.0
    season_length: int = 4
    threshold_effect: float = 0.0
    threshold_at: float = 0.0
    noise_df: float | None = None

    # -- the panel processes --------------------------------------------------------
    @property
    def horizon(self) -> int:
        """The default period of every evaluation: the one right after the history."""
        return self.n_periods

    def time_effect(self, period: float | NDArray | None = None) -> NDArray:
        """Link-scale time effect ``trend * t + season_amplitude * sin(2 pi t / L)``.

        Parameters
        ----------
        period : float or array, optional
            Period(s) ``t``; default :attr:`horizon`.
        """
        t = np.asarray(self.horizon if period is None else period, dtype=float)
        return self.trend * t + self.season_amplitude * np.sin(2 * np.pi * t / self.season_length)

    def unit_level(self, units: pd.DataFrame) -> tuple[NDArray, NDArray[np.bool_]]:
        """Each unit's intercept ``u_i`` (0 where unknown) and whether the truth knows it.

        Parameters
        ----------
        units : DataFrame
            Rows with a ``unit_id`` column (without one, no unit is known).
        """
        n = len(units)
        if self.unit_effects is None:
            return np.zeros(n), np.ones(n, dtype=bool)
        if "unit_id" not in units:
            return np.zeros(n), np.zeros(n, dtype=bool)
        u = units["unit_id"].astype(str).map(self.unit_effects).to_numpy(dtype=float)
        known = np.isfinite(u)
        return np.where(known, u, 0.0), known

    def _has_time_effect(self) -> bool:
        return self.trend != 0.0 or self.season_amplitude != 0.0

    # -- evaluation -----------------------------------------------------------------
    def _z(self, units: pd.DataFrame) -> NDArray:
        x = units[list(self.numeric_features)].to_numpy(dtype=float)
        return (x - self.numeric_loc) / self.numeric_scale

    def _type_index(self, intervention_type: str) -> int:
        try:
            return self.intervention_types.index(intervention_type)
        except ValueError:
            raise ValueError(
                f"unknown intervention_type {intervention_type!r}; "
                f"known: {', '.join(self.intervention_types)}"
            ) from None

    def linear_predictor(
        self,
        units: pd.DataFrame,
        intervention_type: str | None,
        intensity: float | NDArray = 1.0,
        *,
        period: float | NDArray | None = None,
        unit_effects: bool = True,
    ) -> NDArray:
        """Linear predictor of each unit under an intervention (or none).

        Parameters
        ----------
        units : DataFrame
            Rows with ``brand``, ``segment`` and the feature columns.
        intervention_type : str or None
            Intervention applied to every unit; ``None`` (or ``""``) for control.
        intensity : float or array
            Intensity of the intervention (>= 0), per unit or shared.
        period : float or array, optional
            Period of the time effect, per unit or shared; default :attr:`horizon`.
        unit_effects : bool
            Add each known unit's intercept ``u_i`` (unknown units: the mean, 0).

        Raises
        ------
        ValueError
            If a brand, segment, categorical level or intervention type is unknown to
            the ground truth, or an intensity is negative or not finite.
        """
        z = self._z(units)
        seg_idx = pd.Index(self.segments).get_indexer(pd.Index(units["segment"]))
        if (seg_idx < 0).any():
            raise ValueError("units contain a segment unknown to the ground truth")
        eta = np.zeros(len(units))
        brands = units["brand"].to_numpy()
        k = self._type_index(intervention_type) if intervention_type else -1
        treated = k >= 0
        s = np.broadcast_to(np.asarray(intensity, float), (len(units),))
        if not (np.isfinite(s).all() and (s >= 0).all()):
            raise ValueError("intensity must be finite and >= 0")
        g = dose_response(s, self.dose_rate)
        for brand in np.unique(brands):
            if brand not in self.brands:
                raise ValueError(f"unknown brand {brand!r}; known: {', '.join(self.brands)}")
            m = brands == brand
            bt = self.brands[brand]
            e = bt.intercept[seg_idx[m]] + z[m] @ bt.beta
            for col, levels in self.categorical_features.items():
                codes = pd.Index(levels).get_indexer(pd.Index(units.loc[m, col]))
                if (codes < 0).any():
                    raise ValueError(
                        f"units contain a {col!r} level unknown to the ground truth; "
                        f"known: {', '.join(levels)}"
                    )
                e = e + bt.cat_effects[col][codes]
            if treated:
                het = bt.tau[k, seg_idx[m]] + z[m, : self.n_interacting] @ bt.gamma[k]
                if self.threshold_effect != 0.0:
                    het = het + self.threshold_effect * (z[m, 0] > self.threshold_at)
                e = e + g[m] * het
            eta[m] = e
        if unit_effects and self.unit_effects is not None:
            eta = eta + self.unit_level(units)[0]
        if self._has_time_effect():
            eta = eta + self.time_effect(period)
        if unit_effects and self.unit_trends is not None and period is not None and len(units):
            eta = eta + self._drift(units) * (np.asarray(period, dtype=float) - self.horizon)
        return eta

    def _drift(self, units: pd.DataFrame) -> NDArray:
        """Each unit's hidden drift per period ``v_i`` (0 for units the truth lacks)."""
        if self.unit_trends is None or "unit_id" not in units:
            return np.zeros(len(units))
        v = units["unit_id"].astype(str).map(self.unit_trends).to_numpy(dtype=float)
        return np.where(np.isfinite(v), v, 0.0)

    def expected_outcome(
        self,
        units: pd.DataFrame,
        intervention_type: str | None,
        intensity: float | NDArray = 1.0,
        *,
        period: float | NDArray | None = None,
    ) -> NDArray:
        """Expected outcome of each unit in a period (see :meth:`linear_predictor`).

        A unit the truth does not know is averaged over the unit-effect distribution.
        """
        eta = self.linear_predictor(units, intervention_type, intensity, period=period)
        mu = inverse_link(self.family, eta)
        if self.unit_effects is not None and self.family != "gaussian":
            unknown = ~self.unit_level(units)[1]
            if unknown.any():
                nodes, weights = np.polynomial.hermite_e.hermegauss(_QUADRATURE_NODES)
                spread = eta[unknown, None] + self.unit_sd * nodes[None, :]
                mu[unknown] = inverse_link(self.family, spread) @ (weights / weights.sum())
        return mu * self.outcome_scale if self.family == "gaussian" else mu

    def ate(
        self,
        units: pd.DataFrame,
        intervention_type: str,
        intensity: float = 1.0,
        *,
        period: int | Sequence[int] | None = None,
    ) -> TrueEffect:
        """True average treatment effect of the intervention on ``units``.

        Parameters
        ----------
        units : DataFrame
            The units (twins) the effect is averaged over, each with its own unit
            effect when the truth knows its ``unit_id``; repeated rows count twice.
        intervention_type : str
            The intervention.
        intensity : float
            Its intensity.
        period : int or sequence of int, optional
            The period the effect is evaluated in, or several periods to average over
            (for example the next ``H``); default :attr:`horizon`.
        """
        periods: list[int | None] = (
            [period] if period is None or isinstance(period, int | np.integer) else list(period)
        )
        if not periods:
            raise ValueError("period must name at least one period")
        control = np.concatenate([self.expected_outcome(units, None, period=p) for p in periods])
        treated = np.concatenate(
            [self.expected_outcome(units, intervention_type, intensity, period=p) for p in periods]
        )
        return TrueEffect(
            ate=float(np.mean(treated - control)),
            control_mean=float(np.mean(control)),
            treated_mean=float(np.mean(treated)),
        )

    def sample_outcomes(self, mu: NDArray, rng: np.random.Generator) -> NDArray:
        """Draw one outcome per mean ``mu`` from the family's distribution."""
        if self.family == "bernoulli":
            return (rng.random(mu.shape) < mu).astype(np.int64)
        if self.family == "poisson":
            return rng.poisson(mu).astype(np.int64)
        if self.family == "neg_binomial":
            alpha = float(self.dispersion or 1.0)
            lam = rng.gamma(alpha, mu / alpha)
            return rng.poisson(lam).astype(np.int64)
        sigma = float(self.dispersion or 1.0) * self.outcome_scale
        if self.noise_df is not None:
            return mu + sigma * rng.standard_t(self.noise_df, mu.shape)
        return mu + sigma * rng.standard_normal(mu.shape)

    def run_experiment(
        self,
        units: pd.DataFrame,
        intervention_type: str,
        intensity: float = 1.0,
        *,
        n_per_arm: int,
        random_seed: int | np.random.Generator | None = None,
    ) -> pd.DataFrame:
        """Run a "real" randomised two-arm experiment on units drawn from ``units``.

        Parameters
        ----------
        units : DataFrame
            The eligible population; ``2 * n_per_arm`` units are drawn with replacement.
        intervention_type, intensity
            The intervention of the treatment arm.
        n_per_arm : int
            Units per arm.
        random_seed : int or Generator, optional
            Seed of the draw.

        Returns
        -------
        DataFrame
            Columns ``unit_id``, ``arm`` (``"treatment"`` / ``"control"``), ``outcome``.
        """
        rng = np.random.default_rng(random_seed)
        idx = rng.integers(0, len(units), size=2 * n_per_arm)
        sample = units.iloc[idx].reset_index(drop=True)
        arm = np.repeat(np.array(["treatment", "control"]), n_per_arm)
        mu = np.where(
            arm == "treatment",
            self.expected_outcome(sample, intervention_type, intensity),
            self.expected_outcome(sample, None),
        )
        return pd.DataFrame(
            {
                "unit_id": sample["unit_id"].to_numpy(),
                "arm": arm,
                "outcome": self.sample_outcomes(mu, rng),
            }
        )


@dataclass(frozen=True)
class SyntheticTwinData:
    """A synthetic history and its ground truth."""

    data: pd.DataFrame
    truth: GroundTruth
    numeric_features: list[str] = field(default_factory=list)
    categorical_features: list[str] = field(default_factory=list)
    outcome: str = "outcome"
    segment: str = "segment"

    @property
    def feature_columns(self) -> list[str]:
        """Numeric then categorical feature columns."""
        return [*self.numeric_features, *self.categorical_features]

    def population(self, brand: str | None = None) -> pd.DataFrame:
        """One row per unit at its latest period (optionally for one brand)."""
        df = self.data if brand is None else self.data[self.data["brand"] == brand]
        latest = df.sort_values("period").groupby("unit_id", sort=False).tail(1)
        return latest.sort_values("unit_id").reset_index(drop=True)
