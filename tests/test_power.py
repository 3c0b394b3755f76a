"""Sample size: classic formulas, assurance, twin-covariate adjustment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayestwin.core.power import (
    assurance,
    assurance_curve,
    assurance_n,
    default_n_grid,
    directional_power,
    n_per_arm,
    outcome_variance_from_moments,
    total_outcome_variance,
    z_critical,
)
from bayestwin.core.sample_size import covariate_adjusted_n, prognostic_rho2, sample_size_report
from bayestwin.schemas import SampleSizeReport

Z_975 = 1.959963984540054
Z_80 = 0.8416212335729143


def textbook_two_proportion(p0: float, p1: float) -> float:
    return (Z_975 + Z_80) ** 2 * (p0 * (1 - p0) + p1 * (1 - p1)) / (p1 - p0) ** 2


def textbook_two_mean(delta: float, sd: float) -> float:
    return 2 * (Z_975 + Z_80) ** 2 * sd**2 / delta**2


def test_z_critical() -> None:
    assert z_critical(0.05) == pytest.approx(Z_975, abs=1e-12)
    with pytest.raises(ValueError, match="alpha"):
        z_critical(1.5)


@pytest.mark.parametrize(("p0", "p1"), [(0.2, 0.25), (0.1, 0.12), (0.5, 0.6), (0.3, 0.2)])
def test_two_proportion_matches_textbook(p0: float, p1: float) -> None:
    n = n_per_arm(p1 - p0, p0 * (1 - p0), p1 * (1 - p1))
    assert n is not None
    assert abs(n - textbook_two_proportion(p0, p1)) <= 1
    assert n == math.ceil(textbook_two_proportion(p0, p1) - 1e-9)


def test_two_mean_matches_textbook() -> None:
    # Cohen's d = 0.5 needs 63 per arm with the normal approximation
    assert n_per_arm(0.5, 1.0, 1.0) == 63
    for delta, sd in [(0.2, 1.0), (3.0, 10.0), (0.05, 0.4)]:
        n = n_per_arm(delta, sd**2, sd**2)
        assert n is not None
        assert abs(n - textbook_two_mean(delta, sd)) <= 1


def test_unequal_variances_and_alpha_power() -> None:
    n = n_per_arm(1.0, 2.0, 3.0, alpha=0.01, power=0.9)
    z = 2.5758293035489004 + 1.2815515655446004
    assert n == math.ceil(z**2 * 5.0)


def test_zero_effect_and_bad_input() -> None:
    assert n_per_arm(0.0, 1.0, 1.0) is None
    with pytest.raises(ValueError, match="power"):
        n_per_arm(1.0, 1.0, 1.0, power=1.0)
    with pytest.raises(ValueError, match="variances"):
        n_per_arm(1.0, -1.0, 0.5)
    with pytest.raises(ValueError, match="effect"):
        n_per_arm(float("nan"), 1.0, 1.0)


def test_classic_n_reaches_power() -> None:
    n = n_per_arm(0.3, 1.0, 1.5)
    assert n is not None
    assert directional_power(0.3, 1.0, 1.5, n) >= 0.8
    assert directional_power(0.3, 1.0, 1.5, n - 1) < 0.8
    # direction: a negative effect is powered when success means a decrease
    assert directional_power(-0.3, 1.0, 1.5, n, direction=-1) >= 0.8
    assert directional_power(-0.3, 1.0, 1.5, n) < 0.01


def test_assurance_below_power_when_wide_and_converges_when_narrow() -> None:
    rng = np.random.default_rng(0)
    delta, var = 0.2, 1.0
    n = n_per_arm(delta, var, var)
    assert n is not None
    power = float(directional_power(delta, var, var, n))
    z = rng.standard_normal(20_000)
    wide = float(assurance(delta + 0.2 * z, var, var, n))
    assert wide < power - 0.05
    gaps = [abs(float(assurance(delta + s * z, var, var, n)) - power) for s in (0.1, 0.03, 0.001)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-3


def test_assurance_n_is_the_first_crossing() -> None:
    rng = np.random.default_rng(1)
    draws = 0.25 + 0.05 * rng.standard_normal(4000)
    n = assurance_n(draws, 1.0, 1.0, target=0.8)
    assert n is not None
    assert assurance(draws, 1.0, 1.0, n) >= 0.8
    assert assurance(draws, 1.0, 1.0, n - 1) < 0.8
    # narrower than the classic n? no: uncertainty costs units
    classic = n_per_arm(float(np.median(draws)), 1.0, 1.0)
    assert classic is not None and n >= classic


def test_assurance_plateaus_at_probability_of_sign() -> None:
    rng = np.random.default_rng(2)
    draws = 0.1 + 0.2 * rng.standard_normal(10_000)  # P(effect > 0) ~ 0.69
    p_sign = float(np.mean(draws > 0))
    assert assurance_n(draws, 1.0, 1.0, target=0.8) is None
    big = float(assurance(draws, 1.0, 1.0, 10**9))
    assert big == pytest.approx(p_sign, abs=0.01)
    assert big < 0.8


def test_assurance_curve_and_grid() -> None:
    grid = default_n_grid(400)
    assert grid == sorted(set(grid))
    assert grid[0] >= 2 and grid[0] <= 20 and grid[-1] >= 8000
    curve = assurance_curve(np.array([0.2, 0.25, 0.3]), 1.0, 1.0, grid)
    assert [n for n, _ in curve] == grid
    values = [a for _, a in curve]
    assert values == sorted(values)
    assert default_n_grid(None)[0] == 10


def test_covariate_adjusted_n() -> None:
    for n, rho in [(100, 0.5), (393, 0.3), (1, 0.9), (1234, 0.71)]:
        assert covariate_adjusted_n(n, rho) == max(1, math.ceil(n * (1 - rho**2)))
    assert covariate_adjusted_n(None, 0.5) is None
    with pytest.raises(ValueError, match="rho"):
        covariate_adjusted_n(10, 1.5)


def test_outcome_variance_from_moments() -> None:
    assert outcome_variance_from_moments("bernoulli", 0.2) == pytest.approx(0.16)
    # poisson: E[mu] + Var(mu)
    assert outcome_variance_from_moments("poisson", 2.0, 5.0) == pytest.approx(3.0)
    # neg_binomial: E[mu] + E[mu^2]/alpha + Var(mu)
    assert outcome_variance_from_moments("neg_binomial", 2.0, 5.0, 4.0) == pytest.approx(4.25)
    assert outcome_variance_from_moments("gaussian", 10.0, 104.0, 3.0) == pytest.approx(13.0)
    with pytest.raises(ValueError, match="second moment"):
        outcome_variance_from_moments("poisson", 2.0)
    with pytest.raises(ValueError, match="dispersion"):
        outcome_variance_from_moments("gaussian", 1.0, 2.0)


@pytest.mark.parametrize("family", ["bernoulli", "poisson", "neg_binomial", "gaussian"])
def test_total_outcome_variance_matches_monte_carlo(family: str) -> None:
    rng = np.random.default_rng(3)
    n = 400_000
    if family == "bernoulli":
        mu = rng.uniform(0.05, 0.6, n)
        y = rng.random(n) < mu
        disp = None
    elif family == "poisson":
        mu = rng.gamma(3.0, 1.0, n)
        y = rng.poisson(mu)
        disp = None
    elif family == "neg_binomial":
        mu = rng.gamma(3.0, 1.0, n)
        disp = 4.0
        y = rng.poisson(rng.gamma(disp, mu / disp))
    else:
        mu = rng.normal(100.0, 10.0, n)
        disp = 5.0
        y = mu + disp * rng.standard_normal(n)
    expected = total_outcome_variance(family, mu, dispersion=disp)
    assert float(np.var(y)) == pytest.approx(expected, rel=0.02)


def test_prognostic_rho2() -> None:
    rng = np.random.default_rng(4)
    mu = rng.normal(10.0, 2.0, 200_000)
    y = mu + 3.0 * rng.standard_normal(mu.size)
    rho2 = prognostic_rho2(mu, 4.0 + 9.0)
    assert rho2 == pytest.approx(np.corrcoef(mu, y)[0, 1] ** 2, abs=0.01)
    # weights are multiplicities
    w = rng.integers(1, 4, 50)
    x = rng.normal(size=50)
    assert prognostic_rho2(x, 10.0, w) == pytest.approx(
        prognostic_rho2(np.repeat(x, w), 10.0), rel=1e-12
    )
    assert prognostic_rho2(x, 0.0) == 0.0
    assert prognostic_rho2(x * 100, 1.0) == 1.0


def test_sample_size_report_is_uncapped_with_a_feasibility_flag() -> None:
    rng = np.random.default_rng(5)
    draws = 0.05 + 0.01 * rng.standard_normal(2000)
    rep = sample_size_report(draws, 0.16, 0.2, rho=0.5)
    classic = n_per_arm(float(np.median(draws)), 0.16, 0.2)
    assert rep.classic_n_per_arm == classic
    assert rep.covariate_adjusted_n_per_arm == math.ceil(classic * 0.75)
    assert rep.assurance_n_per_arm is not None and rep.assurance_n_per_arm >= classic
    assert rep.population_sufficient is None and rep.eligible_population is None
    assert rep.alpha == 0.05 and rep.power == 0.8
    assert len(rep.assurance_curve) > 10

    # a population too small for the test changes no size, only the flag
    short = sample_size_report(draws, 0.16, 0.2, rho=0.5, eligible_population=500)
    assert 2 * classic > 500
    assert short.population_sufficient is False and short.eligible_population == 500
    assert short.classic_n_per_arm == classic
    assert short.covariate_adjusted_n_per_arm == rep.covariate_adjusted_n_per_arm
    assert short.assurance_n_per_arm == rep.assurance_n_per_arm
    # exactly enough units for both arms is enough
    exact = sample_size_report(draws, 0.16, 0.2, eligible_population=2 * classic)
    assert exact.population_sufficient is True and exact.classic_n_per_arm == classic
    assert (
        sample_size_report(
            draws, 0.16, 0.2, eligible_population=2 * classic - 1
        ).population_sufficient
        is False
    )
    # a report stored with the old "capped" flag still loads
    legacy = SampleSizeReport.model_validate({**short.model_dump(), "capped": True})
    assert legacy == short

    no_rho = sample_size_report(draws, 0.16, 0.2, effect=0.1)
    assert no_rho.covariate_adjusted_n_per_arm is None and no_rho.rho is None
    assert no_rho.classic_n_per_arm == n_per_arm(0.1, 0.16, 0.2)


@settings(max_examples=50, deadline=None)
@given(
    small=st.floats(1e-3, 10.0),
    factor=st.floats(1.0, 10.0),
    var_c=st.floats(1e-2, 100.0),
    var_t=st.floats(1e-2, 100.0),
)
def test_n_decreases_as_effect_grows(
    small: float, factor: float, var_c: float, var_t: float
) -> None:
    n_small = n_per_arm(small, var_c, var_t)
    n_big = n_per_arm(small * factor, var_c, var_t)
    assert n_small is not None and n_big is not None
    assert n_big <= n_small
    assert n_per_arm(-small, var_c, var_t) == n_small
