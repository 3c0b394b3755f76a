"""Tests of the fidelity maths (core predictive, outcomes, grading, calibration), the
FidelityTracker and bayestwin.plots."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime, timedelta

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bayestwin.core.calibration import retrospective_cusum, wilson_interval
from bayestwin.core.calibration_report import calibration_report
from bayestwin.core.grading import (
    FidelityThresholds,
    error_floor,
    fidelity_warning,
    grade_prediction_error,
    model_fidelity_score,
    prediction_error,
    validation_score,
)
from bayestwin.core.outcomes import outcome_from_frame, outcome_standard_error
from bayestwin.core.predictive import ATEPredictive, observed_ate_predictive
from bayestwin.engine.fidelity import FidelityTracker
from bayestwin.engine.simulation import SimulationEngine
from bayestwin.errors import InvalidInputError
from bayestwin.model.fitted import Diagnostics, FittedTwinModel
from bayestwin.schemas import ExperimentOutcome, FidelityResult, SimulationResult
from bayestwin.settings import load_settings
from bayestwin.synthetic import generate_synthetic_twin_data, truth_posterior
from bayestwin.vocabulary import FidelityGrade

Z975 = 1.959963984540054
T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def tracker():
    return FidelityTracker()


def test_threshold_defaults_are_the_settings_defaults():
    # the tracker's defaults for Python users mirror config/digital_twin_config.yaml
    cfg = load_settings(environ={})
    defaults = FidelityThresholds()
    for name in (
        "min_effect_threshold",
        "min_fidelity_score",
        "fidelity_validation_window_days",
        "min_validations_for_score",
    ):
        assert getattr(defaults, name) == getattr(cfg, name), name


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_effect_threshold": -0.1}, "min_effect_threshold"),
        ({"min_fidelity_score": 1.5}, "min_fidelity_score"),
        ({"fidelity_validation_window_days": 0}, "fidelity_validation_window_days"),
        ({"min_validations_for_score": 0}, "min_validations_for_score"),
    ],
)
def test_thresholds_name_the_bad_field(kwargs, field):
    with pytest.raises(InvalidInputError) as info:
        FidelityThresholds(**kwargs)
    assert info.value.field == field


def make_sim(draws=None, *, ate=None, ci=None, **kw) -> SimulationResult:
    if ate is None:
        ate = float(np.mean(draws))
    lo, hi = ci if ci is not None else (None, None)
    fields = {
        "brand": "Remibrutinib",
        "twin_type": "hcp",
        "intervention_type": "email_campaign",
        "twin_count": 1000,
        "simulation_status": "completed",
        "simulated_ate": ate,
        "simulated_ci_lower": lo,
        "simulated_ci_upper": hi,
        "ate_draws": None if draws is None else [float(v) for v in np.atleast_1d(draws)],
        "outcome_family": "bernoulli",
        "control_mean": 0.2,
    }
    fields.update(kw)
    return SimulationResult(**fields)


def outcome(ate, se, n=1000, control_mean=None, **kw) -> ExperimentOutcome:
    return ExperimentOutcome(
        actual_ate=ate, actual_se=se, n_treatment=n, n_control=n, control_mean=control_mean, **kw
    )


# -- grades ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "grade"),
    [
        (0.0, FidelityGrade.EXCELLENT),
        (0.05, FidelityGrade.EXCELLENT),
        (math.nextafter(0.10, 0.0), FidelityGrade.EXCELLENT),
        (0.10, FidelityGrade.GOOD),
        (math.nextafter(0.10, 1.0), FidelityGrade.GOOD),
        (math.nextafter(0.20, 0.0), FidelityGrade.GOOD),
        (0.20, FidelityGrade.FAIR),
        (math.nextafter(0.20, 1.0), FidelityGrade.FAIR),
        (math.nextafter(0.35, 0.0), FidelityGrade.FAIR),
        (0.35, FidelityGrade.FAIR),
        (math.nextafter(0.35, 1.0), FidelityGrade.POOR),
        (1.0, FidelityGrade.POOR),
        (1e9, FidelityGrade.POOR),
        (None, FidelityGrade.UNVALIDATED),
    ],
)
def test_grade_boundaries(error, grade):
    assert grade_prediction_error(error) is grade


@pytest.mark.parametrize("bad", [-1e-12, -1.0, float("nan")])
def test_grade_rejects_invalid_error(bad):
    with pytest.raises(ValueError, match=">= 0"):
        grade_prediction_error(bad)


RANK = {
    FidelityGrade.EXCELLENT: 0,
    FidelityGrade.GOOD: 1,
    FidelityGrade.FAIR: 2,
    FidelityGrade.POOR: 3,
}


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=0.0, max_value=10.0, allow_nan=False),
    st.floats(min_value=0.0, max_value=10.0, allow_nan=False),
)
def test_grade_is_monotone_in_error(a, b):
    lo, hi = min(a, b), max(a, b)
    assert RANK[grade_prediction_error(lo)] <= RANK[grade_prediction_error(hi)]


@pytest.mark.parametrize(
    ("sim", "grade"),
    [(1.0625, "excellent"), (0.875, "good"), (1.25, "fair"), (1.375, "poor"), (1.0, "excellent")],
)
def test_validate_grades_exact_dyadic_errors(tracker, sim, grade):
    # real ATE 1.0, floor 0.05 * 1.0: error = |sim - 1| exactly in binary
    res = tracker.validate(
        make_sim([sim], outcome_family="gaussian", control_mean=1.0), outcome(1.0, 0.5)
    )
    assert res.prediction_error == abs(sim - 1.0)
    assert res.fidelity_grade.value == grade


def test_unvalidated_before_any_comparison(tracker):
    res = tracker.validate(make_sim([0.05]), None)
    assert res.fidelity_grade is FidelityGrade.UNVALIDATED
    assert res.actual_ate is None and res.prediction_error is None and res.pit is None
    assert validation_score(res) is None


def test_validate_needs_completed_simulation(tracker):
    sim = SimulationResult(brand="b", twin_type="hcp", intervention_type="e", twin_count=10)
    with pytest.raises(ValueError, match="simulated_ate"):
        tracker.validate(sim, outcome(0.1, 0.01))


# -- prediction error -------------------------------------------------------------------


def test_error_floor_rule():
    assert error_floor(
        control_mean=0.2, min_effect_threshold=0.05, actual_se=0.03
    ) == pytest.approx(0.01, abs=1e-15)
    assert error_floor(control_mean=-40.0, min_effect_threshold=0.05, actual_se=0.3) == 2.0
    assert error_floor(control_mean=None, min_effect_threshold=0.05, actual_se=0.03) == 0.03
    assert error_floor(control_mean=0.0, min_effect_threshold=0.05, actual_se=0.03) == 0.03
    assert error_floor(control_mean=0.2, min_effect_threshold=0.0, actual_se=0.03) == 0.03
    assert error_floor(control_mean=None, min_effect_threshold=None, actual_se=None) == 0.0


def test_prediction_error_finite_at_zero_real_ate():
    assert prediction_error(0.02, 0.0, 0.04) == 0.5
    assert prediction_error(0.5, 1.0, 0.04) == 0.5  # |real| above the floor
    assert prediction_error(-0.5, -1.0, 0.04) == 0.5
    with pytest.raises(ValueError, match="undefined"):
        prediction_error(0.1, 0.0, 0.0)
    with pytest.raises(ValueError, match="floor"):
        prediction_error(0.1, 0.0, -1.0)


def test_validate_uses_floor_near_zero(tracker):
    # real ATE 0: denominator = min_effect_threshold (0.05) * control mean 0.25 = 0.0125
    res = tracker.validate(
        make_sim([0.0025], control_mean=0.3), outcome(0.0, 0.01, control_mean=0.25)
    )
    assert tracker.thresholds.min_effect_threshold == 0.05
    assert res.prediction_error == pytest.approx(0.0025 / 0.0125, rel=1e-12)
    # the simulation's own threshold wins over the tracker's
    res = tracker.validate(
        make_sim([0.0025], control_mean=0.25, min_effect_threshold=0.1), outcome(0.0, 0.01)
    )
    assert res.prediction_error == pytest.approx(0.0025 / 0.025, rel=1e-12)
    # no control mean anywhere: the real SE is the floor
    res = tracker.validate(make_sim([0.0025], control_mean=None), outcome(0.0, 0.01))
    assert res.prediction_error == pytest.approx(0.25, rel=1e-12)


# -- the real result ------------------------------------------------------------------------


def test_outcome_se_from_ci():
    out = ExperimentOutcome(
        actual_ate=0.1,
        ci_lower=0.1 - Z975 * 0.02,
        ci_upper=0.1 + Z975 * 0.02,
        n_treatment=5,
        n_control=5,
    )
    assert outcome_standard_error(out) == pytest.approx(0.02, rel=1e-12)
    out90 = ExperimentOutcome(
        actual_ate=0.0,
        ci_lower=-1.6448536269514722,
        ci_upper=1.6448536269514722,
        ci_level=0.9,
        n_treatment=5,
        n_control=5,
    )
    assert outcome_standard_error(out90) == pytest.approx(1.0, rel=1e-12)
    assert outcome_standard_error(outcome(0.1, 0.03)) == 0.03


def frame(treated, control, **extra):
    return pd.DataFrame(
        {
            "unit_id": [f"u{i}" for i in range(len(treated) + len(control))],
            "arm": ["treatment"] * len(treated) + ["control"] * len(control),
            "outcome": list(treated) + list(control),
            **extra,
        }
    )


def test_frame_bernoulli_by_hand():
    out = outcome_from_frame(frame([1, 1, 0, 1], [0, 1, 0, 0, 0]), "bernoulli")
    assert out.actual_ate == pytest.approx(0.75 - 0.2, abs=1e-15)
    se = math.sqrt(0.75 * 0.25 / 4 + 0.2 * 0.8 / 5)
    assert out.actual_se == pytest.approx(se, rel=1e-12)
    assert (out.n_treatment, out.n_control) == (4, 5)
    assert out.control_mean == pytest.approx(0.2)
    assert out.ci_lower == pytest.approx(0.55 - Z975 * se, rel=1e-12)
    assert out.ci_upper == pytest.approx(0.55 + Z975 * se, rel=1e-12)


@pytest.mark.parametrize("family", ["gaussian", "poisson", "neg_binomial"])
def test_frame_welch_by_hand(family):
    t = [3.0, 5.0, 4.0, 8.0, 2.0, 6.0]
    c = [1.0, 2.0, 2.0, 4.0]
    out = outcome_from_frame(frame(t, c), family, ci_level=0.9)
    vt = sum((v - 14 / 3) ** 2 for v in t) / 5
    vc = sum((v - 2.25) ** 2 for v in c) / 3
    se = math.sqrt(vt / 6 + vc / 4)
    assert out.actual_ate == pytest.approx(28 / 6 - 2.25, rel=1e-12)
    assert out.actual_se == pytest.approx(se, rel=1e-12)
    welch = stats.ttest_ind(t, c, equal_var=False).confidence_interval(0.9)
    assert out.ci_lower == pytest.approx(welch.low, rel=1e-10)
    assert out.ci_upper == pytest.approx(welch.high, rel=1e-10)


def test_frame_custom_labels_and_ids():
    df = pd.DataFrame({"group": ["B", "A", "B", "A"], "y": [1.0, 0.0, 3.0, 1.0]})
    out = outcome_from_frame(
        df,
        "gaussian",
        arm_column="group",
        outcome_column="y",
        treatment="B",
        control="A",
        actual_experiment_id="exp-7",
    )
    assert out.actual_ate == pytest.approx(1.5)
    assert out.actual_experiment_id == "exp-7"


@pytest.mark.parametrize(
    ("df", "family", "match"),
    [
        (frame([1, 0], [0, 1]).drop(columns="arm"), "bernoulli", "lacks column"),
        (frame([1, 0], [0, 1]).replace({"arm": {"control": "holdout"}}), "bernoulli", "holdout"),
        (frame([1, 2], [0, 1]), "bernoulli", "0 or 1"),
        (frame([1], [0, 1, 1]), "bernoulli", "at least 2"),
        (frame([1.0, float("nan")], [0.0, 1.0]), "gaussian", "missing"),
        (frame(["a", "b"], ["c", "d"]), "gaussian", "numeric"),
        (frame([1, 1], [0, 0]), "bernoulli", "standard error is 0"),
        (frame([1, 1], [0, 0]), "lognormal", "family"),
    ],
)
def test_frame_errors_name_the_problem(df, family, match):
    with pytest.raises(ValueError, match=match):
        outcome_from_frame(df, family)


def test_validate_accepts_frame(tracker):
    df = frame([1, 1, 0, 1] * 50, [0, 1, 0, 0, 0] * 40)
    res = tracker.validate(make_sim([0.5, 0.6]), df, actual_experiment_id="exp-1")
    direct = outcome_from_frame(df, "bernoulli")
    assert res.actual_ate == pytest.approx(direct.actual_ate)
    assert res.actual_se == pytest.approx(direct.actual_se)
    assert res.actual_experiment_id == "exp-1"
    with pytest.raises(ValueError, match="family"):
        tracker.validate(make_sim([0.5], outcome_family=None), df)


# -- predictive distribution, PIT, intervals --------------------------------------------------


def test_predictive_single_normal_closed_form():
    pred = ATEPredictive(np.array([0.0]), 1.0)
    lo, hi = pred.interval(0.95)
    assert lo == pytest.approx(-Z975, abs=1e-9) and hi == pytest.approx(Z975, abs=1e-9)
    lo, hi = pred.interval(0.5)
    assert hi == pytest.approx(0.6744897501960817, abs=1e-9) and lo == pytest.approx(-hi, abs=1e-9)
    assert pred.cdf(1.0) == pytest.approx(stats.norm.cdf(1.0), abs=1e-14)
    assert pred.mean == 0.0 and pred.var == 1.0


def test_predictive_two_point_mixture_closed_form():
    pred = ATEPredictive(np.array([-1.0, 1.0]), 0.5)
    x = np.linspace(-3, 3, 13)
    expected = 0.5 * (stats.norm.cdf(x, -1, 0.5) + stats.norm.cdf(x, 1, 0.5))
    np.testing.assert_allclose(pred.cdf(x), expected, atol=1e-14)
    assert pred.cdf(0.0) == pytest.approx(0.5, abs=1e-14)
    for q in (0.01, 0.2, 0.5, 0.77, 0.99):
        assert pred.cdf(pred.quantile(q)) == pytest.approx(q, abs=1e-10)
    assert pred.var == pytest.approx(1.25)


def test_predictive_mixture_of_normal_draws_is_normal():
    # draws from N(m, s) plus noise sd: N(m, s^2 + noise^2) up to Monte Carlo error
    m, s, noise = 0.05, 0.02, 0.015
    draws = np.random.default_rng(1).normal(m, s, 20_000)
    pred = ATEPredictive(draws, noise)
    sd = math.hypot(s, noise)
    for level in (0.5, 0.8, 0.95):
        lo, hi = pred.interval(level)
        z = stats.norm.ppf(0.5 + level / 2)
        assert lo == pytest.approx(m - z * sd, abs=0.02 * sd * 5)
        assert hi == pytest.approx(m + z * sd, abs=0.02 * sd * 5)


def test_predictive_without_noise_is_empirical():
    draws = np.arange(101, dtype=float)
    pred = ATEPredictive(draws, 0.0)
    assert pred.interval(0.8) == pytest.approx((10.0, 90.0), abs=1e-12)
    assert pred.cdf(49.5) == pytest.approx(50 / 101)


def test_predictive_from_arm_sizes():
    pred = ATEPredictive.for_experiment([0.0], 400, 100, sd_control=1.0, sd_treated=2.0)
    assert pred.noise_sd == pytest.approx(math.sqrt(4 / 400 + 1 / 100))
    with pytest.raises(ValueError, match="arm sizes"):
        ATEPredictive.for_experiment([0.0], 0, 100, sd_control=1.0)
    with pytest.raises(ValueError, match="noise_sd"):
        ATEPredictive(np.array([0.0]), -1.0)
    with pytest.raises(ValueError, match="non-empty"):
        ATEPredictive(np.array([]), 1.0)


def test_analytic_predictive_matches_simulation_sampler():
    # the simulation module samples the same observed-ATE predictive
    draws = np.random.default_rng(2).gamma(4.0, 0.01, 500)
    pred = ATEPredictive.for_experiment(draws, 800, 1200, sd_control=0.4, sd_treated=0.45)
    sampled = observed_ate_predictive(
        draws, 800, 1200, sd_control=0.4, sd_treated=0.45, random_seed=9, draws_per_ate=20
    )
    ks = stats.kstest(sampled, pred.cdf)
    assert ks.statistic < 0.02  # 10,000 draws: the KS 99% critical value is 0.016
    assert sampled.var() == pytest.approx(pred.var, rel=0.02)


@pytest.mark.parametrize(
    ("z", "inside"),
    [
        (0.0, {"0.5": True, "0.8": True, "0.95": True}),
        (1.0, {"0.5": False, "0.8": True, "0.95": True}),
        (-1.5, {"0.5": False, "0.8": False, "0.95": True}),
        (2.5, {"0.5": False, "0.8": False, "0.95": False}),
    ],
)
def test_validate_pit_and_coverage_closed_form(tracker, z, inside):
    # one posterior draw at 0.05, real SE 0.01: the predictive is N(0.05, 0.01^2)
    real = 0.05 + 0.01 * z
    res = tracker.validate(make_sim([0.05]), outcome(real, 0.01))
    assert res.pit == pytest.approx(stats.norm.cdf(z), abs=1e-12)
    assert res.standardized_error == pytest.approx(-z, abs=1e-9)
    assert res.in_predictive_interval == inside
    lo, hi = res.predictive_intervals["0.95"]
    assert lo == pytest.approx(0.05 - Z975 * 0.01, abs=1e-10)
    assert hi == pytest.approx(0.05 + Z975 * 0.01, abs=1e-10)
    assert res.actual_se == 0.01
    assert "PIT" in (res.validation_notes or "")


def test_validate_standardized_error_uses_draw_variance(tracker):
    draws = np.array([0.02, 0.04, 0.06, 0.08])
    # simulated_ate (the engine's median) differs from the mean: z uses the mean
    res = tracker.validate(make_sim(draws, ate=0.045), outcome(0.03, 0.02))
    expected = (0.05 - 0.03) / math.sqrt(draws.var(ddof=1) + 0.02**2)
    assert res.standardized_error == pytest.approx(expected, rel=1e-12)
    assert res.prediction_error == pytest.approx(0.015 / 0.03, rel=1e-12)
    pit = np.mean(stats.norm.cdf((0.03 - draws) / 0.02))
    assert res.pit == pytest.approx(pit, abs=1e-14)


def test_validate_without_draws_uses_normal_from_ci(tracker):
    sim = make_sim(None, ate=0.05, ci=(0.05 - Z975 * 0.02, 0.05 + Z975 * 0.02))
    res = tracker.validate(sim, outcome(0.08, 0.01))
    sd = math.sqrt(0.02**2 + 0.01**2)
    assert res.pit == pytest.approx(stats.norm.cdf(0.03 / sd), abs=1e-10)
    assert res.standardized_error == pytest.approx(-0.03 / sd, rel=1e-9)


def test_model_noise_from_arm_sizes():
    tracker = FidelityTracker(noise="model")
    sim = make_sim([0.05], outcome_sd_control=0.4, outcome_sd_treated=0.4)
    res = tracker.validate(sim, outcome(0.06, 0.5, n=1600))
    se = math.sqrt(2 * 0.16 / 1600)
    assert res.pit == pytest.approx(stats.norm.cdf(0.01 / se), abs=1e-12)
    with pytest.raises(ValueError, match="outcome_sd"):
        tracker.validate(make_sim([0.05]), outcome(0.06, 0.5))
    with pytest.raises(InvalidInputError, match="noise") as info:
        FidelityTracker(noise="bootstrap")  # type: ignore[arg-type]
    assert info.value.field == "noise"


def test_interval_hits_agree_with_pit(tracker):
    draws = np.random.default_rng(5).normal(0.05, 0.01, 300)
    for real in np.linspace(0.0, 0.1, 21):
        res = tracker.validate(make_sim(draws), outcome(float(real), 0.01))
        for key, hit in res.in_predictive_interval.items():
            level = float(key)
            assert hit == (abs(res.pit - 0.5) <= level / 2)


# -- score and warning --------------------------------------------------------------------


def fr(error, pit=0.5, *, days=0.0, hits=None, validated=True):
    return FidelityResult(
        simulated_ate=0.05,
        actual_ate=0.05 if validated else None,
        prediction_error=error if validated else None,
        fidelity_grade=grade_prediction_error(error if validated else None),
        pit=pit if validated else None,
        in_predictive_interval=hits or {},
        validated_at=T0 + timedelta(days=days) if validated else None,
        created_at=T0 + timedelta(days=days),
    )


@pytest.mark.parametrize(
    ("error", "pit", "hits", "score"),
    [
        (0.0, 0.5, None, 1.0),
        (0.35, 0.5, None, 0.5),
        (0.7, 0.5, None, 0.5),
        (0.175, 0.5, None, 0.75),
        (0.0, 0.0125, None, 0.75),  # two-sided tail 0.025: calibration term 0.5
        (0.0, 0.975, None, 1.0),  # edge of the 95% interval
        (0.0, 1.0, None, 0.5),
        (0.0, None, {"0.95": True}, 1.0),
        (0.0, None, {"0.95": False}, 0.5),
        (0.07, None, {}, 0.8),  # no calibration information: accuracy alone
    ],
)
def test_validation_score_closed_form(error, pit, hits, score):
    assert validation_score(fr(error, pit, hits=hits)) == pytest.approx(score, abs=1e-12)


def test_score_unvalidated_until_min_count():
    assert FidelityThresholds().min_validations_for_score == 3
    as_of = T0 + timedelta(days=10)
    hist = [fr(0.0, days=1), fr(0.35, days=2), fr(None, validated=False)]
    assert model_fidelity_score(hist, as_of=as_of, window_days=90, min_validations=3) is None
    hist.append(fr(0.175, days=3))
    score = model_fidelity_score(hist, as_of=as_of, window_days=90, min_validations=3)
    assert score == pytest.approx((1.0 + 0.5 + 0.75) / 3, abs=1e-12)


def test_score_window_boundaries():
    as_of = T0 + timedelta(days=100)
    hist = [
        fr(0.0, days=10),  # exactly 90 days before as_of: outside (window is open on the left)
        fr(0.0, days=10.001),  # inside
        fr(0.35, days=100),  # exactly as_of: inside
        fr(0.35, days=100.5),  # after as_of: outside
    ]
    score = model_fidelity_score(hist, as_of=as_of, window_days=90, min_validations=2)
    assert score == pytest.approx(0.75, abs=1e-12)
    assert model_fidelity_score(hist, as_of=as_of, window_days=90, min_validations=3) is None


def test_fidelity_warning():
    defaults = FidelityThresholds()
    warn, reason = fidelity_warning(0.69, defaults, n_validations=5)
    assert warn is True
    assert "0.69" in reason and "0.70" in reason and "5 validations" in reason
    assert "90 days" in reason
    assert fidelity_warning(0.7, defaults) == (False, None)
    assert fidelity_warning(0.95) == (False, None)
    assert fidelity_warning(None, defaults) == (False, None)
    strict = FidelityThresholds(min_fidelity_score=0.9, fidelity_validation_window_days=30)
    warn, reason = fidelity_warning(0.8, strict)
    assert warn is True and "0.90" in reason and "30 days" in reason


def test_tracker_uses_its_thresholds():
    hist = [fr(0.05, days=d) for d in (1, 2)]
    as_of = T0 + timedelta(days=3)
    assert FidelityTracker().model_fidelity_score(hist, as_of=as_of) is None
    lenient = FidelityTracker(FidelityThresholds(min_validations_for_score=2))
    assert lenient.model_fidelity_score(hist, as_of=as_of) is not None
    strict = FidelityTracker(
        FidelityThresholds(min_fidelity_score=0.99, min_validations_for_score=2)
    )
    summary = strict.summarize(hist, as_of=as_of)
    assert summary.warning and summary.n_required == 2
    short = FidelityTracker(FidelityThresholds(fidelity_validation_window_days=1))
    assert short.summarize(hist, as_of=as_of).n_validations == 0


def test_tracker_history_score_and_warning(tracker):
    hist = [fr(0.5, pit=0.999, days=1), fr(0.6, pit=0.001, days=2)]
    first = tracker.validate(
        make_sim([0.05]),
        outcome(0.0, 0.01, control_mean=0.2),
        validated_at=T0 + timedelta(days=3),
        history=hist[:1],
    )
    assert first.model_fidelity_score is None and first.fidelity_warning is False
    res = tracker.validate(
        make_sim([0.05]),
        outcome(0.0, 0.01, control_mean=0.2),
        validated_at=T0 + timedelta(days=3),
        history=hist,
    )
    assert res.model_fidelity_score is not None and res.model_fidelity_score < 0.7
    assert res.fidelity_warning is True
    summary = tracker.summarize([*hist, res], as_of=T0 + timedelta(days=3))
    assert summary.n_validations == 3 and summary.warning and summary.reason
    assert summary.grade_counts["poor"] == 3
    assert tracker.warning([*hist, res], as_of=T0 + timedelta(days=3))[0] is True
    good = [fr(0.05, days=d) for d in (1, 2, 3)]
    assert tracker.warning(good, as_of=T0 + timedelta(days=3)) == (False, None)
    assert tracker.model_fidelity_score(good, as_of=T0 + timedelta(days=3)) == pytest.approx(
        0.5 * (1 - 0.05 / 0.35) + 0.5
    )
    assert json.loads(json.dumps(summary.to_dict()))["n_required"] == 3


# -- calibration report --------------------------------------------------------------------


def test_wilson_interval_closed_form():
    lo, hi = wilson_interval(8, 10, 0.95)
    assert lo == pytest.approx(0.4901625, abs=1e-6)
    assert hi == pytest.approx(0.9433178, abs=1e-6)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(InvalidInputError) as info:
        wilson_interval(11, 10)
    assert info.value.field == "hits"
    with pytest.raises(InvalidInputError):
        wilson_interval(0, 0)


def test_retrospective_cusum_locates_a_step():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 60), rng.normal(1.5, 1, 40)])
    stat, p, idx = retrospective_cusum(x)
    assert p < 1e-4 and 55 <= idx <= 64
    stat0, p0, _ = retrospective_cusum(rng.normal(0, 1, 100))
    assert p0 > 0.01
    assert retrospective_cusum([1.0, 1.0, 1.0]) == (0.0, 1.0, None)


N_VAL = 240
GROUPS = [("Remibrutinib", "hcp"), ("Fabhalta", "hcp"), ("Remibrutinib", "patient")]


def simulated_validations(kind: str, tracker: FidelityTracker, seed: int = 2024):
    """Validations of a model whose predictions are calibrated, over-confident or biased.

    Each experiment: true ATE ~ N(0.05, 0.02); the posterior's centre is the truth plus
    N(0, s) (s = 0.01) and its spread is s (calibrated); an over-confident posterior
    is off by N(0, 1.5 s) but spreads only s / 4 (its 95% predictive intervals cover
    about 74%); the real test reports the truth plus N(0, se) with se = 0.01. "biased" shifts the
    posterior by 0.6 predictive sd; "drift" shifts it by 1.5 predictive sd in the
    second half of one group.
    """
    rng = np.random.default_rng(seed)
    s, se = 0.01, 0.01
    results, groups = [], []
    for i in range(N_VAL):
        group = GROUPS[i % len(GROUPS)]
        truth = rng.normal(0.05, 0.02)
        over = kind == "overconfident"
        centre = truth + (1.5 * s if over else s) * rng.standard_normal()
        spread = s / 4 if over else s
        if kind == "biased":
            centre += 0.6 * math.hypot(s, se)
        if kind == "drift" and group == GROUPS[0] and i >= N_VAL // 2:
            centre += 1.5 * math.hypot(s, se)
        draws = centre + spread * rng.standard_normal(200)
        real = truth + se * rng.standard_normal()
        res = tracker.validate(
            make_sim(draws),
            outcome(real, se, control_mean=0.2),
            validated_at=T0 + timedelta(days=i),
        )
        results.append(res)
        groups.append(group)
    return results, groups


@pytest.fixture(scope="module")
def validation_sets(tracker):
    return {
        k: simulated_validations(k, tracker)
        for k in ("calibrated", "overconfident", "biased", "drift")
    }


def test_calibrated_predictions_pass(validation_sets):
    # each flag's test has family-wise level alpha = 0.01
    report = calibration_report(*validation_sets["calibrated"])
    assert report.flags == [], report.reasons
    assert report.calibrated
    assert report.n_validated == N_VAL
    for row in report.coverage:
        assert row.lower <= row.level <= row.upper
    assert abs(report.mean_standardized_error) < 0.2
    assert report.sd_standardized_error == pytest.approx(1.0, abs=0.15)
    assert report.pit_ks_p_value > 0.01
    assert all(not d.drift for d in report.drift_by_group)
    assert len(report.drift_by_group) == 3


def test_overconfident_predictions_flagged(validation_sets):
    report = calibration_report(*validation_sets["overconfident"])
    assert report.overconfident
    assert not report.underconfident and not report.biased
    assert report.pit_nonuniform
    assert report.sd_standardized_error > 1.3
    row95 = next(r for r in report.coverage if r.level == 0.95)
    assert row95.upper < 0.95
    assert any("overconfident" in r for r in report.reasons)


def test_biased_predictions_flagged(validation_sets):
    report = calibration_report(*validation_sets["biased"])
    assert report.biased
    assert report.mean_standardized_error == pytest.approx(0.6, abs=0.2)
    assert not report.underconfident


def test_drift_flagged_in_its_group_only(validation_sets):
    report = calibration_report(*validation_sets["drift"])
    assert report.drift
    by = {d.group: d for d in report.drift_by_group}
    drifting = by["Remibrutinib/hcp"]
    assert drifting.drift and drifting.mean_after > drifting.mean_before
    # the change is found near the middle of the group's 80 validations
    assert 30 <= drifting.change_index <= 50
    assert not by["Fabhalta/hcp"].drift and not by["Remibrutinib/patient"].drift


def test_report_serialises_and_counts(validation_sets):
    results, groups = validation_sets["calibrated"]
    pending = FidelityResult(simulated_ate=0.1)
    report = calibration_report([*results, pending], [*groups, GROUPS[0]])
    assert report.n_results == N_VAL + 1 and report.n_validated == N_VAL
    assert report.grade_counts["unvalidated"] == 1
    assert sum(report.grade_counts.values()) == N_VAL + 1
    assert report.median_error is not None and report.mean_error >= 0
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["flags"] == [] and len(payload["coverage"]) == 3
    md = report.to_markdown()
    assert "| nominal |" in md and "Remibrutinib/hcp" in md
    with pytest.raises(ValueError, match="groups"):
        calibration_report(results, groups[:-1])


def test_report_coverage_from_pit_at_any_level():
    pits = np.linspace(0.005, 0.995, 100)
    results = [
        FidelityResult(
            simulated_ate=0.0,
            actual_ate=0.0,
            prediction_error=0.0,
            fidelity_grade="excellent",
            pit=float(p),
            validated_at=T0,
        )
        for p in pits
    ]
    report = calibration_report(results, levels=(0.2, 0.5, 0.9))
    assert [r.hits for r in report.coverage] == [20, 50, 90]
    assert report.flags == []
    assert report.pit_chi2_p_value == pytest.approx(1.0)


def test_report_small_samples_do_not_flag():
    results = [
        fr(0.1, pit=0.99, days=d).model_copy(update={"standardized_error": 3.0}) for d in range(3)
    ]
    report = calibration_report(results)
    assert report.pit_ks_p_value is None and report.pit_chi2_p_value is None
    assert report.drift_by_group[0].statistic is None
    assert not report.drift


# -- plots ---------------------------------------------------------------------------------


def test_plots_render(validation_sets):
    from matplotlib.axes import Axes

    from bayestwin import plots

    results, groups = validation_sets["drift"]
    report = calibration_report(results, groups, levels=np.linspace(0.05, 0.95, 19))
    try:
        ax = plots.reliability_diagram(report)
        assert isinstance(ax, Axes)
        ax.figure.canvas.draw()
        ax = plots.pit_histogram(report, bins=12)
        ax.figure.canvas.draw()
        ax = plots.error_over_time(results, groups)
        ax.figure.canvas.draw()
        fig, axes = plt.subplots(1, 2)
        out = plots.error_over_time(results, groups, standardized=True, ax=axes[0])
        assert out is axes[0]
        plots.pit_histogram(calibration_report([]), ax=axes[1])
        fig.canvas.draw()
    finally:
        plt.close("all")


# -- end to end: a calibrated posterior and real experiments from the ground truth ---------


@pytest.mark.slow
def test_end_to_end_predictive_coverage():
    """200 real experiments against a calibrated fake posterior, at a fixed seed.

    Every replicate centres the posterior's effects at truth + N(0, s) with spread s
    (so the true effects behave like a posterior draw), simulates with the
    SimulationEngine, runs a "real" experiment on the ground truth with its sampling
    noise, and validates. The central predictive intervals must cover the real ATE at
    their nominal rates, within the 99.9% binomial band over 200 experiments, with the
    reported SE and with the model's outcome sds as the sampling noise.
    """
    n_rep, s, n_draws = 200, 0.15, 200
    data = generate_synthetic_twin_data(
        "hcp", n_units=400, n_periods=1, brands=("A",), random_seed=3
    )
    truth, pop = data.truth, data.population("A")
    k = truth.intervention_types[0]
    base = truth_posterior(truth, "A", n_draws=n_draws, effect_sd=s, random_seed=0)
    diagnostics = Diagnostics(1.0, 1000.0, 1000.0, 0, 1.0, True)
    engine = SimulationEngine()
    trackers = {"reported": FidelityTracker(), "model": FidelityTracker(noise="model")}
    rng = np.random.default_rng(11)
    hits = {name: dict.fromkeys(("0.5", "0.8", "0.95"), 0) for name in trackers}
    posterior_only = 0
    pits = []
    for rep in range(n_rep):
        offset = s * rng.standard_normal(base.tau.shape[1:])
        spread = s * rng.standard_normal(base.tau.shape)
        post = dataclasses.replace(base, tau=truth.brands["A"].tau[None] + offset + spread)
        model = FittedTwinModel(
            brand="A",
            twin_type=truth.twin_type,
            posterior=post,
            population=pop,
            diagnostics=diagnostics,
            spec_hash="calibrated-fake",
        )
        sim = engine.simulate(model, k, twin_count=10_000, random_seed=rep, dose_grid=())
        real = truth.run_experiment(pop, k, n_per_arm=1500, random_seed=1000 + rep)
        for name, tr in trackers.items():
            res = tr.validate(sim, real)
            for key in hits[name]:
                hits[name][key] += res.in_predictive_interval[key]
            if name == "reported":
                pits.append(res.pit)
                lo, hi = ATEPredictive(np.asarray(sim.ate_draws), 0.0).interval(0.95)
                posterior_only += lo <= res.actual_ate <= hi
    for name, counts in hits.items():
        for key, count in counts.items():
            band = stats.binom.ppf([0.0005, 0.9995], n_rep, float(key))
            assert band[0] <= count <= band[1], (name, key, count, band)
    assert stats.kstest(pits, "uniform").pvalue > 0.001
    # without the real test's sampling noise the posterior interval under-covers
    assert posterior_only / n_rep < 0.9
