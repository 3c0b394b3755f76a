"""Panel options of the synthetic histories: unit effects, adoption, time, nonlinearity, tails.

:class:`PanelOptions` holds the processes a real panel has and the default history
lacks. Each is off by default, and with every one off the history is the one the
generator has always drawn (same seed, same bytes):

* **Unit random intercepts** at a chosen intra-class correlation on the link scale,
  ``u_i ~ Normal(0, sigma_u**2)`` with ``sigma_u**2 = icc / (1 - icc) * v``, where ``v``
  is the family's residual variance on the link scale (:func:`link_residual_variance`).
* **Adoption**: ``"fixed"`` (a unit keeps its assignment in every period),
  ``"staggered"`` (a treated unit is untreated before its start period, drawn from
  ``min_pre_periods`` to the last period, and treated from then on) or ``"on_off"``
  (a treated unit's campaign is on in each period with probability ``on_share``, at an
  intensity drawn afresh each period).
* **Trend and seasonality**: the link-scale time effect
  ``f(t) = trend * t + season_amplitude * sin(2 pi t / season_length)``, ``f(0) = 0``.
* **Timing that depends on the unit's hidden level** (``timing_confounding``, with
  staggered adoption and unit effects): per sd of ``u_i`` the log-odds of ever being
  treated rise by ``timing_confounding``, and the start period comes earlier (a latent
  ``-timing_confounding * u_i / sigma_u + Normal(0, 1)`` cut into equal-probability
  start periods). ``u_i`` is never a column of the history: a time-invariant hidden
  confounder.
* **Timing that follows the unit's hidden trend** (``unit_trend_sd`` and
  ``trend_confounding``, with staggered adoption): each unit's link-scale level drifts
  by ``v_i ~ Normal(0, unit_trend_sd**2)`` per period, ``v_i * (t - T)`` at period ``t``
  (``T`` the period after the history, where every unit is back at its own level), and
  per sd of ``v_i`` the log-odds of ever being treated rise by ``trend_confounding``:
  campaigns aimed at units whose level is rising. A hidden confounder that varies over
  time, which neither unit nor period effects absorb.
* **A threshold in the effect**: units whose first numeric feature, standardised, is
  above ``threshold_at`` get ``threshold_effect`` more effect (link scale).
* **Heavy tails** (gaussian only): noise ``sigma * t(noise_df)`` instead of
  ``sigma * Normal(0, 1)``.

The draws of these options come from their own random stream, spawned from the
history's generator, so a seed draws the same features with or without them (and, in a
one-brand history, the same assignment and intensities).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import special

from bayestwin.core.families import Family
from bayestwin.synthetic.catalog import BASELINE, INTENSITY_GRID

__all__ = [
    "ADOPTIONS",
    "Adoption",
    "PanelOptions",
    "adoption_schedule",
    "link_residual_variance",
]

Adoption = Literal["fixed", "staggered", "on_off"]
#: The adoption patterns, in order.
ADOPTIONS: tuple[Adoption, ...] = ("fixed", "staggered", "on_off")


def link_residual_variance(family: Family, dispersion: float | None) -> float:
    """The residual variance on the link scale that the unit ICC is measured against.

    Bernoulli: ``pi**2 / 3`` (the logistic latent variable). Gaussian: ``sigma**2``,
    ``sigma`` being the noise scale as a share of the outcome scale (for Student-t
    noise, its scale). Poisson: ``log(1 + 1 / mu0)`` and negative binomial
    ``log(1 + 1 / mu0 + 1 / alpha)``, the lognormal approximation of Nakagawa, Johnson
    and Schielzeth (2017) at the family's baseline mean ``mu0 = exp(BASELINE)``.

    Parameters
    ----------
    family : str
        The outcome family.
    dispersion : float or None
        ``sigma`` (gaussian) or ``alpha`` (negative binomial).

    Returns
    -------
    float
        ``v`` in ``icc = sigma_u**2 / (sigma_u**2 + v)``.
    """
    if family == "bernoulli":
        return math.pi**2 / 3.0
    if family == "gaussian":
        return float(dispersion or 1.0) ** 2
    mu0 = math.exp(BASELINE[family])
    extra = 1.0 / float(dispersion or 1.0) if family == "neg_binomial" else 0.0
    return math.log1p(1.0 / mu0 + extra)


@dataclass(frozen=True)
class PanelOptions:
    """The panel options of a synthetic history (module docstring); all off by default.

    Attributes
    ----------
    unit_icc : float
        Intra-class correlation of the unit intercepts on the link scale, in [0, 1).
    adoption : {"fixed", "staggered", "on_off"}
        How treatment runs over a treated unit's periods.
    min_pre_periods : int
        Untreated periods every staggered unit has before its start (>= 1).
    on_share : float
        Probability that an on/off unit's campaign is on in a period, in (0, 1].
    trend, season_amplitude : float
        Link-scale trend per period and amplitude of the seasonal wave (gaussian: shares
        of the outcome scale).
    season_length : int
        Periods per seasonal cycle (>= 2).
    timing_confounding : float
        How strongly treatment (whether and when) follows the hidden unit level (>= 0).
    unit_trend_sd : float
        Link-scale sd of each unit's hidden drift per period (>= 0; gaussian: a share of
        the outcome scale).
    trend_confounding : float
        How strongly treatment (whether) follows the hidden drift (>= 0).
    threshold_effect, threshold_at : float
        Extra effect above a cut of the first numeric feature (standardised).
    noise_df : float or None
        Degrees of freedom of Student-t noise (gaussian only, > 1); None: normal noise.
    """

    unit_icc: float = 0.0
    adoption: Adoption = "fixed"
    min_pre_periods: int = 2
    on_share: float = 0.5
    trend: float = 0.0
    season_amplitude: float = 0.0
    season_length: int = 4
    timing_confounding: float = 0.0
    unit_trend_sd: float = 0.0
    trend_confounding: float = 0.0
    threshold_effect: float = 0.0
    threshold_at: float = 0.0
    noise_df: float | None = None

    @property
    def time_varying(self) -> bool:
        """Whether a unit's mean can change from period to period."""
        return (
            self.adoption != "fixed"
            or self.trend != 0.0
            or self.season_amplitude != 0.0
            or self.unit_trend_sd != 0.0
        )

    def check(self, family: Family, n_periods: int) -> None:
        """Refuse options that are out of range or do not fit the family and periods.

        Raises
        ------
        ValueError
            Naming the option at fault.
        """
        if not 0.0 <= self.unit_icc < 1.0:
            raise ValueError(f"unit_icc must be in [0, 1), got {self.unit_icc}")
        if self.adoption not in ADOPTIONS:
            raise ValueError(f"adoption must be one of {ADOPTIONS}, got {self.adoption!r}")
        if self.adoption == "staggered" and not 1 <= self.min_pre_periods < n_periods:
            raise ValueError(
                f"staggered adoption needs 1 <= min_pre_periods < n_periods={n_periods}, "
                f"got min_pre_periods={self.min_pre_periods}"
            )
        if not 0.0 < self.on_share <= 1.0:
            raise ValueError(f"on_share must be in (0, 1], got {self.on_share}")
        if self.season_length < 2:
            raise ValueError(f"season_length must be >= 2, got {self.season_length}")
        if self.timing_confounding < 0:
            raise ValueError(f"timing_confounding must be >= 0, got {self.timing_confounding}")
        if self.timing_confounding > 0 and (self.adoption != "staggered" or self.unit_icc == 0):
            raise ValueError("timing_confounding needs adoption='staggered' and unit_icc > 0")
        if self.unit_trend_sd < 0 or self.trend_confounding < 0:
            raise ValueError(
                f"unit_trend_sd and trend_confounding must be >= 0, got "
                f"{self.unit_trend_sd} and {self.trend_confounding}"
            )
        if self.trend_confounding > 0 and (self.adoption != "staggered" or self.unit_trend_sd == 0):
            raise ValueError("trend_confounding needs adoption='staggered' and unit_trend_sd > 0")
        if self.noise_df is not None and (family != "gaussian" or not self.noise_df > 1):
            raise ValueError("noise_df needs family 'gaussian' and a value > 1")
        for name in ("trend", "season_amplitude", "threshold_effect", "threshold_at"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")

    def unit_sd(self, family: Family, dispersion: float | None) -> float:
        """``sigma_u``, the sd of the unit intercepts that gives :attr:`unit_icc`."""
        if self.unit_icc == 0.0:
            return 0.0
        v = link_residual_variance(family, dispersion)
        return math.sqrt(self.unit_icc / (1.0 - self.unit_icc) * v)

    def adoption_logit(
        self, unit_level: NDArray | None, unit_trend: NDArray | None = None
    ) -> NDArray | None:
        """Extra log-odds of being treated per unit (None when treatment ignores both).

        Parameters
        ----------
        unit_level : ndarray or None
            The hidden unit intercepts ``u_i``.
        unit_trend : ndarray or None
            The hidden drifts ``v_i``.
        """
        out: NDArray | None = None
        if self.timing_confounding > 0.0 and unit_level is not None:
            out = self.timing_confounding * _standardised(unit_level)
        if self.trend_confounding > 0.0 and unit_trend is not None:
            extra = self.trend_confounding * _standardised(unit_trend)
            out = extra if out is None else out + extra
        return out


def _standardised(u: NDArray) -> NDArray:
    sd = float(np.std(u))
    return (u - np.mean(u)) / sd if sd > 0 else np.zeros_like(u)


def _start_periods(
    opts: PanelOptions, n_periods: int, unit_level: NDArray | None, rng: np.random.Generator
) -> NDArray:
    """Start period of each unit, from ``min_pre_periods`` to ``n_periods - 1``."""
    n = n_periods - opts.min_pre_periods
    c = opts.timing_confounding
    if c > 0 and unit_level is not None:
        latent = -c * _standardised(unit_level) + rng.standard_normal(unit_level.shape)
        # equal-probability cuts of the latent's marginal: every start is as likely
        u = special.ndtr(latent / math.sqrt(1.0 + c**2))
        slot = np.minimum((u * n).astype(int), n - 1)
    else:
        size = 0 if unit_level is None else len(unit_level)
        slot = rng.integers(0, n, size=size)
    return opts.min_pre_periods + slot


def adoption_schedule(
    opts: PanelOptions,
    treated: NDArray[np.bool_],
    intensity: NDArray,
    n_periods: int,
    unit_level: NDArray | None,
    rng: np.random.Generator,
) -> tuple[NDArray[np.bool_], NDArray]:
    """Which periods each unit is treated in, and at what intensity.

    Parameters
    ----------
    opts : PanelOptions
        The adoption pattern.
    treated, intensity : ndarray
        Per unit: whether it is ever treated, and its intensity (fixed adoption).
    n_periods : int
        Periods per unit.
    unit_level : ndarray or None
        The hidden unit intercepts ``u_i`` (timing confounding reads them).
    rng : numpy Generator
        The panel options' random stream.

    Returns
    -------
    on : ndarray of bool, shape (n_units, n_periods)
        Treated in that period.
    dose : ndarray, shape (n_units, n_periods)
        Intensity in that period (0 when off).
    """
    n_units = len(treated)
    t = np.arange(n_periods)[None, :]
    if opts.adoption == "fixed":
        on = np.repeat(treated[:, None], n_periods, axis=1)
        dose = np.where(on, intensity[:, None], 0.0)
    elif opts.adoption == "staggered":
        level = unit_level if unit_level is not None else np.zeros(n_units)
        start = _start_periods(opts, n_periods, level, rng)
        on = treated[:, None] & (t >= start[:, None])
        dose = np.where(on, intensity[:, None], 0.0)
    else:
        on = treated[:, None] & (rng.random((n_units, n_periods)) < opts.on_share)
        redrawn = rng.choice(np.array(INTENSITY_GRID), size=(n_units, n_periods))
        dose = np.where(on, redrawn, 0.0)
    return on, dose
