"""The observed-experiment predictive: the ATE a real two-arm test would report.

A simulation's ``ate_draws`` are the posterior of the *population* ATE; a real test
observes that ATE plus its own sampling noise, normal with the test's standard error
``se``. The predictive is the normal mixture::

    (1 / D) sum_d Normal(ate_d, se^2)

with ``se`` the real test's reported standard error, or
``sqrt(sd_treated^2 / n_treatment + sd_control^2 / n_control)`` (:func:`observed_ate_se`)
from the simulation's predicted outcome sds and the arm sizes.
:class:`ATEPredictive` gives its CDF, quantiles and central intervals exactly (no
sampling); :func:`observed_ate_predictive` samples the same distribution.

**PIT**: the predictive CDF at the real ATE, ``mean_d Phi((actual - ate_d) / se)``. The
real ATE is inside the central ``p`` predictive interval exactly when
``(1 - p) / 2 <= PIT <= (1 + p) / 2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special

from bayestwin.errors import InvalidInputError

__all__ = [
    "ATEPredictive",
    "level_key",
    "observed_ate_predictive",
    "observed_ate_se",
]


def level_key(level: float) -> str:
    """Key of an interval level in ``FidelityResult.in_predictive_interval`` (``"0.95"``).

    Parameters
    ----------
    level : float
        Nominal level of a central interval.

    Returns
    -------
    str
        ``f"{level:g}"``.
    """
    return f"{level:g}"


def observed_ate_se(
    n_treatment: int, n_control: int, sd_control: ArrayLike, sd_treated: ArrayLike | None = None
) -> NDArray:
    """Standard error of a two-arm test's difference of means.

    Parameters
    ----------
    n_treatment, n_control : int
        Arm sizes (> 0).
    sd_control : array_like
        Total outcome sd in the control arm.
    sd_treated : array_like, optional
        Same in the treated arm (default ``sd_control``).

    Returns
    -------
    ndarray
        ``sqrt(sd_treated**2 / n_treatment + sd_control**2 / n_control)``.
    """
    if n_treatment <= 0 or n_control <= 0:
        raise InvalidInputError(
            f"arm sizes must be > 0, got {n_treatment} and {n_control}",
            field="n_treatment" if n_treatment <= 0 else "n_control",
        )
    sc = np.asarray(sd_control, dtype=float)
    st = sc if sd_treated is None else np.asarray(sd_treated, dtype=float)
    return np.sqrt(st * st / n_treatment + sc * sc / n_control)


def observed_ate_predictive(
    ate_draws: ArrayLike,
    n_treatment: int,
    n_control: int,
    sd_control: ArrayLike,
    sd_treated: ArrayLike | None = None,
    *,
    random_seed: int | np.random.Generator | None = None,
    draws_per_ate: int = 1,
) -> NDArray:
    """Predictive draws of the ATE a real experiment would observe.

    This is the *observed-experiment predictive*: population ATE draws (posterior
    uncertainty) plus the test's sampling noise, normal with the standard error of
    :func:`observed_ate_se`. Compare a real result with these draws, not with the
    population credible interval.

    Parameters
    ----------
    ate_draws : array_like, shape (D,)
        Population ATE draws (``SimulationResult.ate_draws``).
    n_treatment, n_control : int
        Arm sizes of the experiment.
    sd_control, sd_treated : array_like
        Total outcome sds per arm (``SimulationResult.outcome_sd_control`` and
        ``outcome_sd_treated``), scalars or one per draw.
    random_seed : int or Generator, optional
        Seed of the noise.
    draws_per_ate : int
        Noise draws per ATE draw.

    Returns
    -------
    ndarray, shape (D * draws_per_ate,)
    """
    ate = np.asarray(ate_draws, dtype=float).ravel()
    if ate.size == 0:
        raise InvalidInputError("ate_draws is empty", field="ate_draws")
    if draws_per_ate < 1:
        raise InvalidInputError(
            f"draws_per_ate must be >= 1, got {draws_per_ate}", field="draws_per_ate"
        )
    se = np.broadcast_to(observed_ate_se(n_treatment, n_control, sd_control, sd_treated), ate.shape)
    rng = np.random.default_rng(random_seed)
    noise = rng.standard_normal((draws_per_ate, ate.size))
    return (ate[None, :] + se[None, :] * noise).ravel()


@dataclass(frozen=True)
class ATEPredictive:
    """Predictive distribution of a real test's observed ATE: a normal mixture.

    ``(1 / D) sum_d Normal(draws[d], noise_sd^2)``; with ``noise_sd = 0`` it is the
    empirical distribution of the draws.

    Attributes
    ----------
    draws : ndarray, shape (D,)
        Posterior draws of the population ATE.
    noise_sd : float
        Standard deviation of the real test's sampling noise (its standard error).
    """

    draws: NDArray[np.float64]
    noise_sd: float

    def __post_init__(self) -> None:
        d = np.asarray(self.draws, dtype=float).reshape(-1)
        if d.size == 0 or not np.isfinite(d).all():
            raise InvalidInputError(
                "ATE draws must be a non-empty array of finite values", field="draws"
            )
        if not (math.isfinite(self.noise_sd) and self.noise_sd >= 0.0):
            raise InvalidInputError(
                f"noise_sd must be finite and >= 0, got {self.noise_sd}", field="noise_sd"
            )
        object.__setattr__(self, "draws", d)

    @property
    def mean(self) -> float:
        """Predictive mean: the mean of the draws."""
        return float(self.draws.mean())

    @property
    def var(self) -> float:
        """Predictive variance: ``var(draws) + noise_sd^2`` (draw variance with ddof=0)."""
        return float(self.draws.var() + self.noise_sd**2)

    def cdf(self, x: ArrayLike) -> NDArray[np.float64]:
        """Predictive CDF at ``x`` (any shape), exact.

        Parameters
        ----------
        x : array_like
            Values of the observed ATE.

        Returns
        -------
        ndarray
            ``P(observed ATE <= x)``, the shape of ``x``.
        """
        xa = np.asarray(x, dtype=float)
        if self.noise_sd == 0.0:
            return np.asarray((self.draws <= xa[..., None]).mean(axis=-1), dtype=float)
        u = (xa[..., None] - self.draws) / self.noise_sd
        return np.asarray(special.ndtr(u).mean(axis=-1), dtype=float)

    def pit(self, x: float) -> float:
        """Probability integral transform of one observed ATE: ``cdf(x)``."""
        return float(self.cdf(x))

    def quantile(self, q: float) -> float:
        """Predictive quantile (the root of ``cdf(x) = q``), exact to ~1e-10 of its scale.

        Parameters
        ----------
        q : float
            Probability in (0, 1).

        Returns
        -------
        float
            The quantile.
        """
        if not 0.0 < q < 1.0:
            raise InvalidInputError(f"q must be in (0, 1), got {q}", field="q")
        if self.noise_sd == 0.0:
            return float(np.quantile(self.draws, q))
        lo = float(self.draws.min()) - 12.0 * self.noise_sd
        hi = float(self.draws.max()) + 12.0 * self.noise_sd
        root = optimize.brentq(
            lambda v: float(self.cdf(v)) - q, lo, hi, xtol=1e-12 * (hi - lo), rtol=1e-14
        )
        return float(root)

    def interval(self, level: float) -> tuple[float, float]:
        """Central predictive interval at ``level``: quantiles ``(1 -+ level) / 2``.

        Parameters
        ----------
        level : float
            Level in (0, 1).

        Returns
        -------
        (float, float)
            Lower and upper bounds.
        """
        if not 0.0 < level < 1.0:
            raise InvalidInputError(f"level must be in (0, 1), got {level}", field="level")
        return (self.quantile(0.5 - level / 2.0), self.quantile(0.5 + level / 2.0))

    @classmethod
    def for_experiment(
        cls,
        ate_draws: ArrayLike,
        n_treatment: int,
        n_control: int,
        sd_control: float,
        sd_treated: float | None = None,
    ) -> ATEPredictive:
        """Predictive of a test with the given arm sizes and per-arm outcome sds.

        The noise sd is :func:`observed_ate_se`; :func:`observed_ate_predictive` samples
        the same distribution.

        Parameters
        ----------
        ate_draws : array_like
            Posterior draws of the population ATE.
        n_treatment, n_control : int
            Arm sizes.
        sd_control, sd_treated : float
            Outcome sd per unit in each arm (``sd_treated`` defaults to ``sd_control``).

        Returns
        -------
        ATEPredictive
        """
        se = float(observed_ate_se(n_treatment, n_control, sd_control, sd_treated))
        return cls(np.asarray(ate_draws, dtype=float), se)
