"""The seasonal wave of the period effects: its positions, its forecast, and a fit.

Closed forms first (no sampling), then one fit at a fixed seed with a stated tolerance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic
import pytest

from bayestwin.core.unit_effects import time_effect_draws
from bayestwin.engine.simulation import SimulationEngine
from bayestwin.errors import InvalidInputError
from bayestwin.model.fit import TwinGenerator
from bayestwin.model.io import load_model, save_model
from bayestwin.model.spec import SamplerSettings, default_spec
from bayestwin.model.time_terms import (
    period_design,
    season_ahead,
    season_positions,
    walk_basis,
)
from bayestwin.synthetic import generate_synthetic_twin_data


def test_integer_periods_keep_their_phase_across_a_gap() -> None:
    positions, ahead = season_positions(np.array([0, 1, 2, 3, 5, 6]), 4)
    np.testing.assert_array_equal(positions, [0, 1, 2, 3, 1, 2])
    np.testing.assert_array_equal(ahead, [3, 0, 1, 2])  # periods 7, 8, 9, 10


def test_other_periods_count_by_rank() -> None:
    positions, ahead = season_positions(np.array(["2024Q1", "2024Q2", "2024Q3"]), 2)
    np.testing.assert_array_equal(positions, [0, 1, 0])
    np.testing.assert_array_equal(ahead, [1, 0])


def test_too_short_a_history_for_the_wave_names_the_field() -> None:
    with pytest.raises(InvalidInputError, match="needs more than 4 periods") as err:
        season_positions(np.arange(4), 4)
    assert err.value.field == "season_length"


def test_spec_refuses_a_cycle_of_one_period() -> None:
    with pytest.raises(pydantic.ValidationError, match="season_length"):
        default_spec("hcp", "B", family="poisson", numeric_features=(), season_length=1)


def test_season_ahead_is_the_change_from_the_last_position() -> None:
    season = np.array([[0.3, -0.1, -0.4, 0.2], [0.0, 0.1, 0.0, -0.1]])
    out = season_ahead(season, last=2, ahead=np.array([3, 0, 1, 2]))
    np.testing.assert_allclose(out, [[0.6, 0.7, 0.3, 0.0], [-0.1, 0.0, 0.1, 0.0]])


def test_forecast_adds_the_wave_to_the_walk_and_repeats_it() -> None:
    season = np.array([[0.5, -0.5], [1.0, 0.0]])
    flat = time_effect_draws(np.zeros(2), 5, np.random.default_rng(0), season)
    np.testing.assert_allclose(flat[:, 0], [0.5, -0.5, 0.5, -0.5, 0.5])
    np.testing.assert_allclose(flat[:, 1], [1.0, 0.0, 1.0, 0.0, 1.0])
    walk = time_effect_draws(np.full(2, 0.2), 3, np.random.default_rng(1))
    both = time_effect_draws(np.full(2, 0.2), 3, np.random.default_rng(1), season)
    np.testing.assert_allclose(both - walk, flat[:3])  # same steps, plus the wave
    drift = np.array([0.1, -0.2])
    drifted = time_effect_draws(np.full(2, 0.2), 3, np.random.default_rng(1), None, drift)
    np.testing.assert_allclose(drifted - walk, np.outer([1, 2, 3], drift))  # h * drift


@pytest.mark.parametrize(("n_periods", "length"), [(10, 4), (13, 4), (9, 3), (5, 4)])
def test_the_walk_deviates_off_the_drift_and_every_wave(n_periods: int, length: int) -> None:
    positions, _ = season_positions(np.arange(n_periods), length)
    basis = walk_basis(positions, length)
    n_steps = n_periods - 1
    # T steps, of which the constant one and the wave's S - 1 patterns are spanned
    assert basis.shape == (n_steps, n_steps - length)
    np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-12)
    np.testing.assert_allclose(basis.T @ np.ones(n_steps), 0.0, atol=1e-12)
    wave = np.random.default_rng(0).normal(size=(20, length))[:, positions]
    np.testing.assert_allclose(np.diff(wave, axis=1) @ basis, 0.0, atol=1e-12)
    # any step pattern is a drift, a wave's steps and a walk deviation, exactly
    steps = np.random.default_rng(1).normal(size=n_steps)
    spanned = np.concatenate([np.ones((n_steps, 1)), np.diff(np.eye(length)[positions], axis=0)], 1)
    other = steps - basis @ (basis.T @ steps)
    coef, *_ = np.linalg.lstsq(spanned, other, rcond=None)
    np.testing.assert_allclose(spanned @ coef, other, atol=1e-10)


def test_the_model_samples_a_walk_off_its_wave() -> None:
    s = generate_synthetic_twin_data(
        "patient", n_units=60, n_periods=10, brands=("B",), family="poisson",
        n_intervention_types=1, n_segments=2, random_seed=1, unit_icc=0.3,
        adoption="staggered",
    )  # fmt: skip
    sizes = {}
    for length in (4, None):
        spec = default_spec(
            "patient", "B", family="poisson", numeric_features=s.numeric_features,
            categorical_features=s.categorical_features, season_length=length,
        )  # fmt: skip
        model = TwinGenerator(spec).build_model(s.data)
        sizes[length] = model["z_time"].eval().shape[0]
    # 9 steps: 5 deviations beside a wave of four periods, else 9 zero-sum ones
    assert sizes == {4: 5, None: 9}


def test_period_design_without_a_wave_has_no_positions() -> None:
    df = pd.DataFrame({"period": [0, 1, 2, 0, 1, 2]})
    out = period_design(df, df.iloc[[0, 4]], "period", 0)
    np.testing.assert_array_equal(out["period"], [0, 1])
    assert "season_position" not in out


# -- a fit at a fixed seed --------------------------------------------------------------


@pytest.mark.slow
def test_fit_forecasts_the_wave_into_the_next_periods_ate(tmp_path: object) -> None:
    # 600 units x 9 periods; the wave 0.3 sin(pi t / 2) is 0 at the last period (8) and
    # 0.3 in the next, and the trend -0.05 per period: the count ATE in the next period
    # is exp(0.25) = 1.28 times the last period's
    s = generate_synthetic_twin_data(
        "patient", n_units=600, n_periods=9, brands=("B",), family="poisson",
        n_intervention_types=1, n_segments=2, random_seed=11, unit_icc=0.3,
        adoption="staggered", season_amplitude=0.3, season_length=4, trend=-0.05,
    )  # fmt: skip
    sampler = SamplerSettings(draws=500, tune=500, chains=2, cores=1, progressbar=False)
    fits = {}
    for length in (4, None):
        spec = default_spec(
            "patient", "B", family="poisson", numeric_features=s.numeric_features,
            categorical_features=s.categorical_features, sampler=sampler,
            season_length=length,
        )  # fmt: skip
        fits[length] = TwinGenerator(spec).fit(s.data, override_diagnostics=True)
    post = fits[4].posterior
    assert post.season_ahead is not None and post.season_ahead.shape == (1000, 4)
    true_step = s.truth.time_effect(9) - s.truth.time_effect(8)
    assert post.time_drift is not None
    # the trend and the wave's step into the next period, from 5,400 rows: within 0.03
    # and 0.06 (a few posterior sds)
    assert post.time_drift.mean() == pytest.approx(-0.05, abs=0.03)
    step = post.season_ahead[:, 0] + post.time_drift
    assert step.mean() == pytest.approx(true_step, abs=0.06)
    assert fits[None].posterior.season_ahead is None
    engine = SimulationEngine()
    errors = {}
    for length, model in fits.items():
        r = engine.simulate(model, s.truth.intervention_types[0], twin_count=3000, random_seed=3)
        twins = model.population.set_index("unit_id").loc[r.twin_unit_ids].reset_index()
        twins["brand"] = "B"
        truth = s.truth.ate(twins, s.truth.intervention_types[0], 1.0).ate
        errors[length] = (r.simulated_ate - truth) / truth
        if length == 4:
            assert r.simulated_ci_lower <= truth <= r.simulated_ci_upper, (truth, r)
    # without the wave the forecast misses the wave's step: about 26% low; with it
    # within 12%
    assert abs(errors[4]) < 0.12 and errors[None] < -0.15, errors
    again = load_model(save_model(fits[4], tmp_path / "m"))  # type: ignore[operator]
    np.testing.assert_array_equal(again.posterior.season_ahead, post.season_ahead)


def test_calibration_fits_get_the_wave_only_on_histories_longer_than_a_cycle() -> None:
    from bayestwin.calibration.gate import _season_length

    history = pd.DataFrame({"period": np.repeat(np.arange(10), 3)})
    assert _season_length(history, 4) == 4
    assert _season_length(history.iloc[:12], 4) is None  # 4 periods: not one more
    assert _season_length(history, 0) is None
    assert _season_length(history.drop(columns="period"), 4) is None
