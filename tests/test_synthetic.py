"""The synthetic ground truth: shapes, reproducibility, dose-response, and its statistics."""

from __future__ import annotations

import runpy
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayestwin.core.families import FAMILIES, Family
from bayestwin.synthetic import (
    DEFAULT_FAMILY,
    SyntheticTwinData,
    dose_response,
    generate_synthetic_twin_data,
    main,
    truth_posterior,
)
from bayestwin.vocabulary import TwinType

INTENSITY_GRID = {0.5, 1.0, 1.5, 2.0}


@st.composite
def generator_args(draw: st.DrawFn) -> dict[str, Any]:
    n_numeric = draw(st.integers(1, 8))
    return {
        "twin_type": draw(st.sampled_from(list(TwinType))),
        "family": draw(st.none() | st.sampled_from(FAMILIES)),
        "n_units": draw(st.integers(1, 30)),
        "n_periods": draw(st.integers(1, 3)),
        "brands": draw(st.sampled_from([("A",), ("A", "B"), ("Remibrutinib", "Fabhalta", "C")])),
        "n_segments": draw(st.integers(1, 12)),
        "n_numeric": n_numeric,
        "n_interacting": draw(st.integers(0, n_numeric)),
        "n_categorical": draw(st.integers(0, 2)),
        "n_intervention_types": draw(st.integers(1, 4)),
        "treated_fraction": draw(st.sampled_from([0.0, 0.1, 0.5, 0.9])),
        "confounding": draw(st.sampled_from([0.0, 1.0, 3.0])),
        "dose_rate": draw(st.floats(0.05, 5.0)),
        "random_seed": draw(st.integers(0, 2**32 - 1)),
    }


# -- shapes and dtypes -------------------------------------------------------------------------


@settings(max_examples=60)
@given(args=generator_args())
def test_shapes_and_dtypes_hold(args: dict[str, Any]) -> None:
    sd = generate_synthetic_twin_data(**args)
    data, truth = sd.data, sd.truth
    n_brands = len(args["brands"])

    assert len(data) == n_brands * args["n_units"] * args["n_periods"]
    assert list(data.columns) == [
        "unit_id",
        "brand",
        "twin_type",
        "period",
        "segment",
        *sd.numeric_features,
        *sd.categorical_features,
        "intervention_type",
        "intensity",
        "outcome",
    ]
    assert len(sd.numeric_features) == args["n_numeric"]
    assert len(sd.categorical_features) == args["n_categorical"]
    assert sd.feature_columns == [*sd.numeric_features, *sd.categorical_features]
    assert not data.isna().any().any()

    for col in ("unit_id", "brand", "twin_type", "segment", "intervention_type"):
        assert pd.api.types.is_string_dtype(data[col]), col
    for col in sd.categorical_features:
        assert pd.api.types.is_string_dtype(data[col]), col
    for col in (*sd.numeric_features, "intensity"):
        assert data[col].dtype == np.float64, col
    assert data["period"].dtype == np.int64

    family = args["family"] or DEFAULT_FAMILY[args["twin_type"]]
    assert truth.family == family
    outcome = data["outcome"]
    if family == "gaussian":
        assert outcome.dtype == np.float64
        assert np.isfinite(outcome).all()
    else:
        assert outcome.dtype == np.int64
        assert (outcome >= 0).all()
        if family == "bernoulli":
            assert set(outcome.unique()) <= {0, 1}

    assert set(data["twin_type"]) == {TwinType(args["twin_type"]).value}
    assert set(data["brand"]) == set(args["brands"])
    assert set(data["segment"]) <= set(truth.segments)
    assert len(truth.segments) == args["n_segments"]
    assert len(truth.intervention_types) == args["n_intervention_types"]
    assert set(data["intervention_type"]) <= {"", *truth.intervention_types}
    for col, levels in truth.categorical_features.items():
        assert set(data[col]) <= set(levels)

    # one row per unit and period; a unit keeps its features and assignment
    assert data["unit_id"].nunique() == n_brands * args["n_units"]
    per_unit = data.groupby("unit_id")
    assert (per_unit["period"].nunique() == args["n_periods"]).all()
    constant = ["brand", "segment", *sd.feature_columns, "intervention_type", "intensity"]
    assert (per_unit[constant].nunique() == 1).all().all()
    assert len(sd.population()) == n_brands * args["n_units"]
    assert len(sd.population(args["brands"][0])) == args["n_units"]

    # untreated rows have no type and intensity 0; treated rows a type and a grid intensity
    untreated = data["intervention_type"] == ""
    assert (data.loc[untreated, "intensity"] == 0.0).all()
    assert set(data.loc[~untreated, "intensity"]) <= INTENSITY_GRID
    if args["treated_fraction"] == 0.0:
        assert untreated.all()


# -- reproducibility ---------------------------------------------------------------------------


def _assert_same(a: SyntheticTwinData, b: SyntheticTwinData) -> None:
    pd.testing.assert_frame_equal(a.data, b.data)
    assert a.truth.brands.keys() == b.truth.brands.keys()
    for brand, bt in a.truth.brands.items():
        other = b.truth.brands[brand]
        for name in ("intercept", "beta", "tau", "gamma"):
            np.testing.assert_array_equal(getattr(bt, name), getattr(other, name))
        for col, effects in bt.cat_effects.items():
            np.testing.assert_array_equal(effects, other.cat_effects[col])


@settings(max_examples=20)
@given(args=generator_args())
def test_same_seed_reproduces_the_data_and_truth(args: dict[str, Any]) -> None:
    _assert_same(generate_synthetic_twin_data(**args), generate_synthetic_twin_data(**args))


def test_another_seed_gives_other_data() -> None:
    a = generate_synthetic_twin_data(n_units=50, random_seed=1)
    b = generate_synthetic_twin_data(n_units=50, random_seed=2)
    assert not a.data[a.numeric_features].equals(b.data[b.numeric_features])


# -- the dose-response and intensity 0 -----------------------------------------------------------


@given(rate=st.floats(0.01, 20.0), s=st.lists(st.floats(0.0, 10.0), min_size=2, max_size=20))
def test_dose_response_is_monotone_with_g0_0_and_g1_1(rate: float, s: list[float]) -> None:
    assert dose_response(0.0, rate) == 0.0
    assert dose_response(1.0, rate) == pytest.approx(1.0)
    grid = np.sort(np.asarray(s))
    assert (np.diff(dose_response(grid, rate)) >= 0).all()


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_dose_response_needs_a_positive_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="rate must be > 0"):
        dose_response(1.0, rate)


@settings(max_examples=30)
@given(args=generator_args())
def test_intensity_zero_means_untreated(args: dict[str, Any]) -> None:
    sd = generate_synthetic_twin_data(**args)
    units = sd.population()
    control = sd.truth.expected_outcome(units, None)
    for kind in sd.truth.intervention_types:
        np.testing.assert_array_equal(sd.truth.expected_outcome(units, kind, 0.0), control)
        assert sd.truth.ate(units, kind, 0.0).ate == 0.0
    # and in the history, intensity 0 goes with no intervention
    data = sd.data
    assert ((data["intensity"] == 0.0) == (data["intervention_type"] == "")).all()


@settings(max_examples=30)
@given(
    family=st.sampled_from(FAMILIES),
    effect=st.floats(0.01, 1.0),
    dose_rate=st.floats(0.05, 5.0),
    seed=st.integers(0, 2**16),
)
def test_true_effect_is_increasing_in_intensity_for_a_positive_effect(
    family: Family, effect: float, dose_rate: float, seed: int
) -> None:
    sd = generate_synthetic_twin_data(
        n_units=40,
        n_intervention_types=1,
        family=family,
        effect_means=[effect],
        effect_segment_sd=0.0,
        interaction_sd=0.0,
        dose_rate=dose_rate,
        random_seed=seed,
    )
    units = sd.population()
    kind = sd.truth.intervention_types[0]
    ates = [sd.truth.ate(units, kind, s).ate for s in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)]
    assert ates[0] == 0.0
    assert all(later > earlier for earlier, later in zip(ates, ates[1:], strict=False))


@settings(max_examples=20)
@given(family=st.sampled_from(FAMILIES), seed=st.integers(0, 2**16))
def test_each_unit_moves_monotonely_in_the_direction_of_its_own_effect(
    family: Family, seed: int
) -> None:
    sd = generate_synthetic_twin_data(
        n_units=40,
        family=family,
        interaction_sd=0.3,
        random_seed=seed,
    )
    units = sd.population()
    truth = sd.truth
    for kind in truth.intervention_types:
        direction = np.sign(
            truth.linear_predictor(units, kind, 1.0) - truth.linear_predictor(units, None)
        )
        mus = np.stack([truth.expected_outcome(units, kind, s) for s in (0.0, 0.5, 1.0, 2.0)])
        steps = np.diff(mus, axis=0) * direction
        assert (steps >= -1e-12).all()


# -- statistics of the ground truth ------------------------------------------------------------

N_PER_ARM = 20_000
TOLERANCE_SE = 4.0  # |difference in means - true ATE| must be within 4 standard errors


@pytest.mark.parametrize("family", FAMILIES)
def test_randomised_experiment_agrees_with_the_true_ate(family: Family) -> None:
    sd = generate_synthetic_twin_data(
        "hcp",
        n_units=2000,
        n_periods=1,
        family=family,
        random_seed=11,
    )
    units = sd.population("Remibrutinib")
    kind = sd.truth.intervention_types[0]  # the largest default effect
    true = sd.truth.ate(units, kind, 1.0)

    trial = sd.truth.run_experiment(units, kind, 1.0, n_per_arm=N_PER_ARM, random_seed=2024)
    assert len(trial) == 2 * N_PER_ARM
    assert trial["arm"].value_counts().to_dict() == {"treatment": N_PER_ARM, "control": N_PER_ARM}
    assert set(trial["unit_id"]) <= set(units["unit_id"])
    treated = trial.loc[trial["arm"] == "treatment", "outcome"].to_numpy(float)
    control = trial.loc[trial["arm"] == "control", "outcome"].to_numpy(float)
    diff = treated.mean() - control.mean()
    se = np.sqrt(treated.var(ddof=1) / N_PER_ARM + control.var(ddof=1) / N_PER_ARM)

    assert abs(diff - true.ate) <= TOLERANCE_SE * se, (family, diff, true.ate, se)
    # the check has teeth: the effect is many standard errors away from zero
    assert abs(true.ate) > 2 * TOLERANCE_SE * se
    assert true.relative == pytest.approx(true.ate / true.control_mean)
    assert control.mean() == pytest.approx(true.control_mean, abs=TOLERANCE_SE * se)


def test_run_experiment_is_reproducible() -> None:
    sd = generate_synthetic_twin_data(n_units=100, random_seed=3)
    units = sd.population()
    kind = sd.truth.intervention_types[0]
    a = sd.truth.run_experiment(units, kind, n_per_arm=500, random_seed=9)
    b = sd.truth.run_experiment(units, kind, n_per_arm=500, random_seed=9)
    pd.testing.assert_frame_equal(a, b)


def _baseline_gap(confounding: float) -> tuple[float, float]:
    """Treated minus untreated mean of the untreated expected outcome, and its SE."""
    sd = generate_synthetic_twin_data(
        "hcp", n_units=4000, n_periods=1, confounding=confounding, random_seed=5
    )
    units = sd.population()
    baseline = sd.truth.expected_outcome(units, None)
    treated = (units["intervention_type"] != "").to_numpy()
    a, b = baseline[treated], baseline[~treated]
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return float(a.mean() - b.mean()), float(se)


def test_confounded_assignment_treats_units_with_a_higher_baseline() -> None:
    gap, se = _baseline_gap(confounding=1.5)
    assert gap > TOLERANCE_SE * se


def test_random_assignment_balances_the_baseline() -> None:
    gap, se = _baseline_gap(confounding=0.0)
    assert abs(gap) <= TOLERANCE_SE * se


def test_ate_averages_over_the_rows_given() -> None:
    sd = generate_synthetic_twin_data(n_units=30, random_seed=4)
    units = sd.population()
    kind = sd.truth.intervention_types[0]
    once = sd.truth.ate(units, kind)
    twice = sd.truth.ate(pd.concat([units, units], ignore_index=True), kind)
    assert twice.ate == pytest.approx(once.ate)
    per_unit = sd.truth.expected_outcome(units, kind) - sd.truth.expected_outcome(units, None)
    assert once.ate == pytest.approx(per_unit.mean())


# -- refused input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_units": 0}, "n_units"),
        ({"n_periods": 0}, "n_periods"),
        ({"n_segments": 13}, "n_segments"),
        ({"n_numeric": 0}, "n_numeric"),
        ({"n_categorical": 3}, "n_categorical"),
        ({"n_intervention_types": 5}, "n_intervention_types"),
        ({"treated_fraction": 1.0}, "treated_fraction"),
        ({"dose_rate": 0.0}, "dose_rate"),
        ({"confounding": -1.0}, "confounding"),
        ({"n_interacting": 5, "n_numeric": 4}, "n_interacting"),
        ({"brands": ()}, "brands"),
        ({"brands": "Remibrutinib"}, "brands"),
        ({"brands": ("A", "A")}, "distinct"),
        ({"family": "binomial"}, "family"),
        ({"twin_type": "doctor"}, "doctor"),
        ({"effect_means": {"unknown_type": 0.1}}, "unknown"),
        ({"effect_means": [0.1]}, "effect_means"),
        ({"type_weights": [1.0, -1.0, 1.0]}, "type_weights"),
        ({"dispersion": 0.0, "family": "neg_binomial"}, "dispersion"),
    ],
)
def test_bad_generator_arguments_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_synthetic_twin_data(**{"n_units": 5, **kwargs})


@pytest.fixture(scope="module")
def small() -> SyntheticTwinData:
    return generate_synthetic_twin_data(n_units=20, n_categorical=1, random_seed=8)


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        ("segment", "astrology", "segment"),
        ("brand", "Unknown", "brand"),
        ("practice_setting", "spaceship", "practice_setting"),
    ],
)
def test_truth_refuses_units_it_does_not_know(
    small: SyntheticTwinData, column: str, value: str, match: str
) -> None:
    units = small.population().assign(**{column: value})
    with pytest.raises(ValueError, match=match):
        small.truth.expected_outcome(units, None)


@pytest.mark.parametrize("intensity", [-0.5, float("nan"), float("inf")])
def test_truth_refuses_bad_intensity(small: SyntheticTwinData, intensity: float) -> None:
    kind = small.truth.intervention_types[0]
    with pytest.raises(ValueError, match="intensity"):
        small.truth.ate(small.population(), kind, intensity)


def test_truth_refuses_unknown_intervention_type(small: SyntheticTwinData) -> None:
    with pytest.raises(ValueError, match="unknown intervention_type 'fax_blast'"):
        small.truth.ate(small.population(), "fax_blast")


@pytest.mark.parametrize("family", FAMILIES)
def test_truth_posterior_reproduces_the_truth(family: Family) -> None:
    sd = generate_synthetic_twin_data(n_units=40, n_categorical=2, family=family, random_seed=6)
    post = truth_posterior(sd.truth, "Fabhalta", n_draws=3)
    units = sd.population("Fabhalta")
    kind = sd.truth.intervention_types[0]
    for k, s in ((None, 1.0), (kind, 1.0), (kind, 0.5)):
        expected = sd.truth.expected_outcome(units, k, s)
        np.testing.assert_allclose(post.expected_outcome(units, k, s), np.tile(expected, (3, 1)))


def test_truth_posterior_spreads_only_the_effects(small: SyntheticTwinData) -> None:
    post = truth_posterior(small.truth, "Remibrutinib", n_draws=400, effect_sd=0.2, random_seed=1)
    bt = small.truth.brands["Remibrutinib"]
    np.testing.assert_array_equal(post.intercept, np.tile(bt.intercept, (400, 1)))
    assert post.tau.std(axis=0) == pytest.approx(np.full(bt.tau.shape, 0.2), rel=0.2)
    with pytest.raises(TypeError, match="GroundTruth"):
        truth_posterior(object(), "Remibrutinib")  # type: ignore[arg-type]


# -- the demo ----------------------------------------------------------------------------------


def test_demo_prints_true_effects(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--n-units", "60", "--n-per-arm", "200", "--seed", "1"])
    out = capsys.readouterr().out
    assert "Synthetic hcp history" in out
    for word in ("true_ate", "experiment_ate", "email_campaign", "Remibrutinib", "Fabhalta"):
        assert word in out


def test_module_runs_as_a_script(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["bayestwin.synthetic", "--n-units", "30", "--n-per-arm", "50"])
    runpy.run_module("bayestwin.synthetic", run_name="__main__")
    assert "Synthetic hcp history: 240 rows, 60 units" in capsys.readouterr().out
