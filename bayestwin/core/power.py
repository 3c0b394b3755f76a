"""Power of the real two-arm test: classic sample size, assurance, outcome variances.

Pure NumPy and SciPy: array and float in, numbers out. Nothing here knows about
models, twins or pydantic (:mod:`bayestwin.core.sample_size` packs the answers into a
:class:`~bayestwin.schemas.SampleSizeReport`).

The test is a two-sided z-test of the difference of means at level ``alpha``, with
``n`` units in each arm and per-arm outcome variances ``var_control`` and
``var_treated``. Its standard error is ``sqrt((var_control + var_treated) / n)``.

*Power* is counted **in the direction of the expected effect**: a significant result
of the wrong sign is a failure, not a success. For effect ``delta``::

    power(n) = Phi(|delta| * sqrt(n) / sqrt(var_control + var_treated) - z_{1 - alpha/2})

which is the textbook power less the negligible wrong-tail term, and which the classic
sample size formula inverts exactly::

    n = ceil((z_{1 - alpha/2} + z_{power})**2 * (var_control + var_treated) / delta**2)

For a bernoulli outcome the per-arm variances are ``p (1 - p)`` (the two-proportion
formula with unpooled variances). For the other families the variance of one outcome
drawn from the eligible population is the *total* variance: the mean unit variance
plus the between-unit variance of expected outcomes, ``E[Var(Y | unit)] + Var(mu)``
(:func:`outcome_variance_from_moments`). For a bernoulli outcome that total is exactly
``p (1 - p)`` with ``p`` the population mean.

*Assurance* (the Bayesian "probability of success") averages that directional power
over posterior draws of the effect. As ``n`` grows it plateaus at the posterior
probability that the effect has the expected sign, so a target above that probability
is never reached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from bayestwin.core.families import check_family

__all__ = [
    "assurance",
    "assurance_curve",
    "assurance_n",
    "default_n_grid",
    "directional_power",
    "n_per_arm",
    "outcome_variance_from_moments",
    "total_outcome_variance",
    "z_critical",
]

#: Largest n per arm the assurance search looks at.
N_MAX = 10**9


def _check_alpha_power(alpha: float, power: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")


def z_critical(alpha: float = 0.05) -> float:
    """Two-sided critical value ``z_{1 - alpha/2}``.

    Parameters
    ----------
    alpha : float
        Significance level in (0, 1).

    Returns
    -------
    float
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(special.ndtri(1.0 - alpha / 2.0))


def n_per_arm(
    effect: float,
    var_control: float,
    var_treated: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int | None:
    """Classic sample size per arm to detect ``effect`` with the given power.

    Parameters
    ----------
    effect : float
        Difference of means (treated - control); its sign does not matter.
    var_control, var_treated : float
        Variance of one outcome in each arm (>= 0, not both 0).
    alpha : float
        Two-sided significance level.
    power : float
        Target power.

    Returns
    -------
    int or None
        ``ceil((z_{1-alpha/2} + z_power)**2 * (var_control + var_treated) / effect**2)``,
        at least 1; None when the effect is 0 (no finite n detects it).
    """
    _check_alpha_power(alpha, power)
    var = float(var_control) + float(var_treated)
    if not math.isfinite(var) or var < 0:
        raise ValueError(f"variances must be finite and >= 0, got {var_control}, {var_treated}")
    effect = float(effect)
    if not math.isfinite(effect):
        raise ValueError(f"effect must be finite, got {effect}")
    if effect == 0.0:
        return None
    z = z_critical(alpha) + float(special.ndtri(power))
    return max(1, math.ceil(z * z * var / (effect * effect)))


def directional_power(
    effect: ArrayLike,
    var_control: ArrayLike,
    var_treated: ArrayLike,
    n: ArrayLike,
    *,
    alpha: float = 0.05,
    direction: float = 1.0,
) -> NDArray:
    """Probability of a significant result in ``direction``, per effect and ``n``.

    Parameters
    ----------
    effect : array_like
        Effect(s) (treated - control mean).
    var_control, var_treated : array_like
        Per-arm outcome variances, broadcast against ``effect``.
    n : array_like
        Units per arm, broadcast against ``effect``.
    alpha : float
        Two-sided level.
    direction : float
        ``+1`` when success is a significant increase, ``-1`` a decrease.

    Returns
    -------
    ndarray
        ``Phi(direction * effect * sqrt(n / (var_control + var_treated)) - z)``.
    """
    z = z_critical(alpha)
    eff = np.asarray(effect, dtype=float)
    var = np.asarray(var_control, dtype=float) + np.asarray(var_treated, dtype=float)
    nn = np.asarray(n, dtype=float)
    sign = 1.0 if direction >= 0 else -1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = sign * eff * np.sqrt(nn / var)
        # no variance: certain power for a non-zero effect, undefined (nan) for a zero one
        snr = np.where(var > 0, snr, np.sign(sign * eff) * np.inf)
    return np.asarray(special.ndtr(snr - z))


def _direction(effect_draws: NDArray) -> float:
    return 1.0 if float(np.median(effect_draws)) >= 0 else -1.0


def assurance(
    effect_draws: ArrayLike,
    var_control: float,
    var_treated: float,
    n: ArrayLike,
    *,
    alpha: float = 0.05,
    direction: float | None = None,
) -> NDArray:
    """Assurance: directional power averaged over posterior effect draws.

    Parameters
    ----------
    effect_draws : array_like, shape (D,)
        Posterior draws of the effect.
    var_control, var_treated : float
        Per-arm outcome variances.
    n : array_like
        Units per arm (scalar or shape ``(G,)``).
    alpha : float
        Two-sided level.
    direction : float, optional
        Direction counted as success; default the sign of the posterior median.

    Returns
    -------
    ndarray
        Assurance, the shape of ``n``.
    """
    draws = np.asarray(effect_draws, dtype=float).ravel()
    if draws.size == 0:
        raise ValueError("effect_draws is empty")
    sign = _direction(draws) if direction is None else direction
    nn = np.asarray(n, dtype=float)
    pw = directional_power(
        draws[:, None], var_control, var_treated, nn.ravel()[None, :], alpha=alpha, direction=sign
    )
    return pw.mean(axis=0).reshape(nn.shape)


def assurance_n(
    effect_draws: ArrayLike,
    var_control: float,
    var_treated: float,
    *,
    alpha: float = 0.05,
    target: float = 0.8,
    n_max: int = N_MAX,
) -> int | None:
    """Smallest ``n`` per arm whose assurance reaches ``target``.

    The search doubles ``n`` from 1 until the assurance reaches the target, then
    bisects on integers inside that bracket (assurance rises with ``n`` except
    for the tiny wrong-sign tail, so the bracket holds the first crossing).

    Parameters
    ----------
    effect_draws : array_like, shape (D,)
        Posterior draws of the effect.
    var_control, var_treated : float
        Per-arm outcome variances.
    alpha : float
        Two-sided level.
    target : float
        Target assurance in (0, 1).
    n_max : int
        Give up above this ``n``.

    Returns
    -------
    int or None
        None when the target is never reached: the assurance plateaus at the
        posterior probability that the effect has the expected sign.
    """
    _check_alpha_power(alpha, target)
    draws = np.asarray(effect_draws, dtype=float).ravel()
    sign = _direction(draws)

    def a(n: int) -> float:
        return float(assurance(draws, var_control, var_treated, n, alpha=alpha, direction=sign))

    plateau = float(np.mean(sign * draws > 0))
    if plateau < target:
        return None
    hi = 1
    while a(hi) < target:
        if hi >= n_max:
            return None
        hi = min(2 * hi, n_max)
    lo = hi // 2
    if lo >= 1 and a(lo) >= target:  # only when hi == 1
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def default_n_grid(n_hint: int | None, n_points: int = 30) -> list[int]:
    """Geometric grid of per-arm sizes around ``n_hint`` for an assurance curve.

    Parameters
    ----------
    n_hint : int, optional
        A size of interest (e.g. the classic ``n``); the grid spans ``n_hint / 20`` to
        ``20 n_hint`` (10 to 10,000 without a hint).
    n_points : int
        Number of points before rounding and de-duplication.

    Returns
    -------
    list of int
        Sorted distinct sizes >= 2.
    """
    if n_hint is None or n_hint <= 0:
        lo, hi = 10.0, 10_000.0
    else:
        lo, hi = max(2.0, n_hint / 20.0), max(20.0, 20.0 * n_hint)
    grid = np.unique(np.round(np.geomspace(lo, hi, n_points)).astype(np.int64))
    return [int(v) for v in grid if v >= 2]


def assurance_curve(
    effect_draws: ArrayLike,
    var_control: float,
    var_treated: float,
    n_grid: Sequence[int],
    *,
    alpha: float = 0.05,
) -> list[tuple[int, float]]:
    """Assurance at each ``n`` of a grid, as ``(n, assurance)`` pairs.

    Parameters
    ----------
    effect_draws : array_like, shape (D,)
        Posterior draws of the effect.
    var_control, var_treated : float
        Per-arm outcome variances.
    n_grid : sequence of int
        Units per arm.
    alpha : float
        Two-sided level.

    Returns
    -------
    list of (int, float)
    """
    ns = np.asarray(list(n_grid), dtype=np.int64)
    if ns.size == 0:
        return []
    values = assurance(effect_draws, var_control, var_treated, ns, alpha=alpha)
    return [(int(n), float(v)) for n, v in zip(ns, values, strict=True)]


def outcome_variance_from_moments(
    family: str,
    mean: ArrayLike,
    second_moment: ArrayLike | None = None,
    dispersion: ArrayLike | None = None,
) -> NDArray:
    """Total variance of one outcome drawn from a population of units.

    ``Var(Y) = E[Var(Y | unit)] + Var(mu)`` from the population moments of the
    expected outcomes ``mu`` (natural scale).

    Parameters
    ----------
    family : str
        Outcome family.
    mean : array_like
        ``E[mu]`` over units (e.g. one value per posterior draw).
    second_moment : array_like, optional
        ``E[mu**2]`` over units; not needed for bernoulli.
    dispersion : array_like, optional
        ``alpha`` (neg_binomial) or natural-scale ``sigma`` (gaussian).

    Returns
    -------
    ndarray
        The total variance, broadcast over the inputs.
    """
    fam = check_family(family)
    m = np.asarray(mean, dtype=float)
    if fam == "bernoulli":
        return m * (1.0 - m)
    if second_moment is None:
        raise ValueError(f"family {fam!r} needs the second moment of the expected outcomes")
    m2 = np.asarray(second_moment, dtype=float)
    between = np.maximum(m2 - m * m, 0.0)
    if fam == "poisson":
        return m + between
    if dispersion is None:
        raise ValueError(f"family {fam!r} needs a dispersion parameter")
    disp = np.asarray(dispersion, dtype=float)
    if fam == "neg_binomial":
        return m + m2 / disp + between
    return disp * disp + between


def total_outcome_variance(
    family: str,
    mu: ArrayLike,
    weights: ArrayLike | None = None,
    dispersion: float | None = None,
) -> float:
    """Total outcome variance over units with expected outcomes ``mu``.

    Parameters
    ----------
    family : str
        Outcome family.
    mu : array_like, shape (N,)
        Expected outcome of each unit (natural scale).
    weights : array_like, optional
        Multiplicity of each unit (default 1).
    dispersion : float, optional
        ``alpha`` (neg_binomial) or natural-scale ``sigma`` (gaussian).

    Returns
    -------
    float
        ``E[Var(Y | unit)] + Var(mu)``, weighted.
    """
    mu_arr = np.asarray(mu, dtype=float)
    w = np.ones_like(mu_arr) if weights is None else np.asarray(weights, dtype=float)
    mean = float(np.average(mu_arr, weights=w))
    second = float(np.average(mu_arr * mu_arr, weights=w))
    return float(outcome_variance_from_moments(family, mean, second, dispersion))
