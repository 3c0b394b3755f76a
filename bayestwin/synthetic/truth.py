"""The ground truth of a synthetic history: its data-generating process, evaluable anywhere.

:class:`GroundTruth` computes, exactly from the data-generating process, the expected
outcome of any unit under any intervention, and so the true ATE (absolute and
relative) of any intervention config on any set of units. It can also run a "real"
randomised experiment with sampling noise. :class:`SyntheticTwinData` pairs a history
with its truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.core.families import Family, inverse_link
from bayestwin.vocabulary import TwinType

__all__ = ["BrandTruth", "GroundTruth", "SyntheticTwinData", "TrueEffect", "dose_response"]


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
    """The data-generating process of a synthetic history, evaluable on any units."""

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
                e = e + g[m] * het
            eta[m] = e
        return eta

    def expected_outcome(
        self,
        units: pd.DataFrame,
        intervention_type: str | None,
        intensity: float | NDArray = 1.0,
    ) -> NDArray:
        """Expected outcome per period of each unit (see :meth:`linear_predictor`)."""
        mu = inverse_link(self.family, self.linear_predictor(units, intervention_type, intensity))
        return mu * self.outcome_scale if self.family == "gaussian" else mu

    def ate(
        self, units: pd.DataFrame, intervention_type: str, intensity: float = 1.0
    ) -> TrueEffect:
        """True average treatment effect of the intervention on ``units``.

        Parameters
        ----------
        units : DataFrame
            The units (twins) the effect is averaged over; repeated rows count twice.
        intervention_type : str
            The intervention.
        intensity : float
            Its intensity.
        """
        control = self.expected_outcome(units, None)
        treated = self.expected_outcome(units, intervention_type, intensity)
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
