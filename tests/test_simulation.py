"""SimulationEngine: closed forms, properties, end to end on synthetic truth, bad input."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bayestwin.core.decision import Decision, DecisionRule, decide
from bayestwin.core.effects import EncodedUnits, effect_draws
from bayestwin.core.effects_summary import default_dose_grid
from bayestwin.core.intervals import equal_tailed_interval
from bayestwin.core.population import draw_twins
from bayestwin.core.posterior import FeatureEncoder, TwinPosterior, dose_response_draws
from bayestwin.core.power import n_per_arm
from bayestwin.core.predictive import observed_ate_predictive, observed_ate_se
from bayestwin.engine.requests import check_request
from bayestwin.engine.simulation import EngineSettings, SimulationEngine
from bayestwin.errors import InvalidInputError, NotFitError
from bayestwin.model.fitted import Diagnostics, FittedTwinModel
from bayestwin.schemas import InterventionConfig
from bayestwin.settings import load_settings
from bayestwin.synthetic import generate_synthetic_twin_data, truth_posterior
from bayestwin.vocabulary import Recommendation, SimulationStatus, TwinType

RANK = {Recommendation.SKIP: 0, Recommendation.REFINE: 1, Recommendation.DEPLOY: 2}
VOLATILE = {"simulation_id", "created_at", "completed_at", "execution_time_ms"}


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def closed_form_model(
    tau: np.ndarray,
    *,
    family: str = "gaussian",
    base: tuple[float, ...] = (10.0, 10.0),
    sigma: float = 2.0,
    n_units: int = 400,
    passed: bool = True,
    seed: int = 0,
    dose_rate: float = 1.0,
) -> FittedTwinModel:
    """Units with no covariate effect: mu = base[seg] (+ tau[d, seg] when treated).

    ``tau`` is (D,) (same effect in every segment) or (D, S). ``base`` is the
    segment intercept on the link scale.
    """
    segments = tuple(f"seg{s}" for s in range(len(base)))
    tau2 = np.broadcast_to(tau[:, None] if tau.ndim == 1 else tau, (tau.shape[0], len(base)))
    d = tau2.shape[0]
    encoder = FeatureEncoder(numeric=("x",), loc=np.zeros(1), scale=np.ones(1), segments=segments)
    posterior = TwinPosterior(
        family=family,  # type: ignore[arg-type]
        encoder=encoder,
        intervention_types=("email_campaign", "call_frequency"),
        intercept=np.tile(np.asarray(base, float), (d, 1)),
        beta=np.zeros((d, 1)),
        tau=np.stack([tau2, np.zeros_like(tau2)], axis=1),
        gamma=np.zeros((d, 2, 1)),
        dose_rate=np.full(d, dose_rate),
        dispersion=np.full(d, sigma) if family in ("gaussian", "neg_binomial") else None,
    )
    rng = np.random.default_rng(seed)
    population = pd.DataFrame(
        {
            "unit_id": [f"u{i:05d}" for i in range(n_units)],
            "segment": rng.choice(segments, n_units),
            "x": rng.standard_normal(n_units),
        }
    )
    diag = Diagnostics(1.0, 1000.0, 1000.0, 0, 1.0, passed, [] if passed else ["r_hat 1.2"])
    return FittedTwinModel(
        brand="Fabhalta",
        twin_type=TwinType.TERRITORY if family == "gaussian" else TwinType.HCP,
        posterior=posterior,
        population=population,
        diagnostics=diag,
        spec_hash="model-test",
    )


@pytest.fixture(scope="module")
def tau_draws() -> np.ndarray:
    return np.random.default_rng(11).normal(0.8, 0.5, 2000)


@pytest.fixture(scope="module")
def engine64() -> SimulationEngine:
    return SimulationEngine(dtype=np.float64)


# -- small pure functions ------------------------------------------------------------------
def test_decide_rule() -> None:
    kw = {"min_effect_threshold": 0.05, "confidence_threshold": 0.7}
    assert decide(0.7, **kw).recommendation is Recommendation.DEPLOY
    assert decide(0.95, **kw, needed_sample=100, eligible_population=1000).recommendation is (
        Recommendation.DEPLOY
    )
    assert decide(0.3, **kw).recommendation is Recommendation.SKIP
    assert decide(0.0, **kw).recommendation is Recommendation.SKIP
    assert decide(0.31, **kw).recommendation is Recommendation.REFINE
    assert decide(0.69, **kw).recommendation is Recommendation.REFINE
    too_big = decide(0.99, **kw, needed_sample=5000, eligible_population=1000)
    assert too_big.recommendation is Recommendation.REFINE
    assert "5000" in too_big.rationale and "1000" in too_big.rationale
    # a skip stays a skip whatever the population
    small = decide(0.1, **kw, needed_sample=5000, eligible_population=10)
    assert small.recommendation is Recommendation.SKIP
    assert isinstance(small, Decision) and "5.0%" in small.rationale
    with pytest.raises(ValueError, match="confidence_threshold"):
        decide(0.5, min_effect_threshold=0.05, confidence_threshold=0.4)
    with pytest.raises(ValueError, match="prob_above"):
        decide(1.5, **kw)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    thresholds=st.lists(st.floats(-0.5, 0.5), min_size=2, max_size=6),
    ct=st.floats(0.5, 0.99),
)
def test_decision_monotone_in_threshold(seed: int, thresholds: list[float], ct: float) -> None:
    lift = np.random.default_rng(seed).normal(0.05, 0.1, 500)
    ranks = [
        RANK[
            decide(
                float(np.mean(lift > t)), min_effect_threshold=t, confidence_threshold=ct
            ).recommendation
        ]
        for t in sorted(thresholds)
    ]
    assert ranks == sorted(ranks, reverse=True)


def test_default_dose_grid() -> None:
    assert default_dose_grid(1.0) == (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
    assert 1.2 in default_dose_grid(1.2)
    assert 0.0 not in default_dose_grid(0.0)


# -- closed forms --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gaussian_closed_form(tau_draws: np.ndarray, dtype: type[np.floating]) -> None:
    model = closed_form_model(tau_draws)
    engine = SimulationEngine(dtype=dtype)
    res = engine.simulate(model, "email_campaign", twin_count=3000, random_seed=1)
    tol = {"atol": 1e-10} if dtype is np.float64 else {"rtol": 2e-5, "atol": 2e-5}
    approx = {"abs": 1e-10} if dtype is np.float64 else {"rel": 2e-5, "abs": 2e-5}

    ate = np.asarray(res.ate_draws)
    np.testing.assert_allclose(ate, tau_draws, **tol)
    assert res.simulated_ate == pytest.approx(np.median(tau_draws), **approx)
    lo, hi = np.quantile(tau_draws, [0.025, 0.975])
    np.testing.assert_allclose([res.simulated_ci_lower, res.simulated_ci_upper], [lo, hi], **tol)
    lift = tau_draws / 10.0
    assert res.relative_lift == pytest.approx(np.median(lift), **approx)
    np.testing.assert_allclose(
        [res.relative_lift_ci_lower, res.relative_lift_ci_upper],
        np.quantile(lift, [0.025, 0.975]),
        **tol,
    )
    p = float(np.mean(lift > 0.05))
    assert res.prob_effect_above_threshold == pytest.approx(
        p, abs=1e-3 if dtype is np.float32 else 0
    )
    expected = decide(p, min_effect_threshold=0.05, confidence_threshold=0.7)
    assert res.recommendation is expected.recommendation
    assert res.control_mean == pytest.approx(10.0, **approx)
    assert res.treated_mean == pytest.approx(10.0 + np.median(tau_draws), **approx)
    # every segment has the same effect
    for seg in res.segment_effects:
        assert seg.ate == pytest.approx(np.median(tau_draws), **approx)
    assert sum(s.n_twins for s in res.segment_effects) == 3000
    # one outcome's variance is sigma^2: every unit has the same expected outcome
    assert res.outcome_sd_control == pytest.approx(2.0, **approx)
    assert res.outcome_sd_treated == pytest.approx(2.0, **approx)
    assert res.simulation_status is SimulationStatus.COMPLETED
    assert res.execution_time_ms is not None and res.execution_time_ms >= 0


def test_gaussian_dose_response_closed_form(
    tau_draws: np.ndarray, engine64: SimulationEngine
) -> None:
    model = closed_form_model(tau_draws)
    res = engine64.simulate(model, "email_campaign", {"intensity": 1.0}, 2000, random_seed=2)
    grid = [p.intensity for p in res.dose_response]
    assert grid == list(default_dose_grid(1.0))
    ct = engine64.settings.confidence_threshold
    first_ok = None
    for point in res.dose_response:
        g = float(dose_response_draws(point.intensity, np.ones(1))[0])
        assert point.ate == pytest.approx(g * np.median(tau_draws), abs=1e-10)
        p = float(np.mean(g * tau_draws / 10.0 > 0.05))
        assert point.prob_above_threshold == pytest.approx(p, abs=1e-12)
        if first_ok is None and p >= ct:
            first_ok = point.intensity
    assert res.min_effective_intensity == first_ok


def test_bernoulli_closed_form(engine64: SimulationEngine) -> None:
    rng = np.random.default_rng(5)
    p0 = 0.2
    tau = rng.normal(0.3, 0.1, 1000)
    p1 = 1.0 / (1.0 + np.exp(-(logit(p0) + tau)))
    model = closed_form_model(tau, family="bernoulli", base=(logit(p0), logit(p0)), n_units=5000)
    res = engine64.simulate(model, "email_campaign", twin_count=1000, random_seed=3)
    np.testing.assert_allclose(res.ate_draws, p1 - p0, atol=1e-12)
    lo, hi = np.quantile(p1 - p0, [0.025, 0.975])
    np.testing.assert_allclose([res.simulated_ci_lower, res.simulated_ci_upper], [lo, hi])
    p_above = float(np.mean((p1 - p0) / p0 > 0.05))
    assert res.prob_effect_above_threshold == pytest.approx(p_above, abs=1e-12)
    assert res.recommendation is Recommendation.DEPLOY
    report = res.sample_size
    assert report is not None
    p1_med = p0 + float(np.median(p1 - p0))
    n = n_per_arm(p1_med - p0, p0 * (1 - p0), p1_med * (1 - p1_med))
    assert report.classic_n_per_arm == n
    assert res.recommended_sample_size == 2 * n  # type: ignore[operator]
    # every unit has the same p: the twin predicts nothing about the outcome
    assert report.rho == pytest.approx(0.0, abs=1e-6)
    assert report.covariate_adjusted_n_per_arm == n
    assert res.outcome_sd_control == pytest.approx(math.sqrt(p0 * (1 - p0)))


def test_covariate_adjustment_uses_between_unit_variance(
    tau_draws: np.ndarray, engine64: SimulationEngine
) -> None:
    model = closed_form_model(tau_draws, base=(10.0, 14.0), sigma=2.0)
    res = engine64.simulate(model, "email_campaign", twin_count=4000, random_seed=4)
    shares = {s.segment: s.n_twins / 4000 for s in res.segment_effects}
    p = shares["seg0"]
    between = p * (1 - p) * 16.0
    var_c = 4.0 + between
    assert res.outcome_sd_control == pytest.approx(math.sqrt(var_c), rel=1e-10)
    report = res.sample_size
    assert report is not None and report.rho is not None
    assert report.rho**2 == pytest.approx(between / var_c, rel=1e-9)
    classic = n_per_arm(float(np.median(tau_draws)), var_c, var_c)
    assert report.classic_n_per_arm == classic
    assert report.covariate_adjusted_n_per_arm == math.ceil(classic * (1 - report.rho**2))


def test_skip_when_effect_is_negligible(engine64: SimulationEngine) -> None:
    tau = np.random.default_rng(6).normal(0.0, 0.1, 1000)
    res = engine64.simulate(closed_form_model(tau), "email_campaign", twin_count=500, random_seed=1)
    assert res.recommendation is Recommendation.SKIP
    assert res.recommended_sample_size is None
    assert res.refine_suggestions == []
    assert "skip" in (res.recommendation_rationale or "")


def test_refine_suggests_segment_and_intensity(engine64: SimulationEngine) -> None:
    rng = np.random.default_rng(7)
    d = 4000
    tau = np.column_stack([rng.normal(1.6, 0.4, d), rng.normal(-0.6, 0.4, d)])
    # nearly linear dose-response: the effect at intensity s is about s times tau
    model = closed_form_model(tau, n_units=2000, dose_rate=0.01)
    res = engine64.simulate(model, "email_campaign", twin_count=5000, random_seed=5)
    assert res.recommendation is Recommendation.REFINE
    text = " ".join(res.refine_suggestions)
    assert "seg0" in text and "seg1" not in text
    assert res.min_effective_intensity is not None and res.min_effective_intensity > 1.0
    assert f"intensity to {res.min_effective_intensity:g}" in text


def test_refine_when_population_too_small(engine64: SimulationEngine) -> None:
    tau = np.random.default_rng(8).normal(1.0, 0.05, 500)
    model = closed_form_model(tau, sigma=10.0, n_units=30)
    res = engine64.simulate(model, "email_campaign", twin_count=1000, random_seed=1)
    assert res.prob_effect_above_threshold == 1.0
    assert res.recommendation is Recommendation.REFINE
    assert res.eligible_population == 30
    report = res.sample_size
    needed = 2 * n_per_arm(float(np.median(tau)), 100.0, 100.0)  # type: ignore[operator]
    assert needed > 30
    # the size is what the real test needs, never capped at the eligible population
    assert report is not None and report.classic_n_per_arm == needed // 2
    assert report.population_sufficient is False and report.eligible_population == 30
    assert res.recommended_sample_size == needed
    assert res.population_sufficient is False
    assert any("too small" in s for s in res.refine_suggestions)
    rationale = res.recommendation_rationale or ""
    assert str(needed) in rationale and "only 30 are eligible" in rationale


def test_decision_monotone_in_threshold_end_to_end(tau_draws: np.ndarray) -> None:
    model = closed_form_model(tau_draws)
    ranks = []
    for thr in (0.0, 0.05, 0.08, 0.1, 0.2):
        eng = SimulationEngine(min_effect_threshold=thr, dtype=np.float64)
        res = eng.simulate(model, "email_campaign", twin_count=500, random_seed=1, dose_grid=())
        ranks.append(RANK[res.recommendation])  # type: ignore[index]
    assert ranks == sorted(ranks, reverse=True)
    assert ranks[0] == 2 and ranks[-1] == 0


def test_effect_prior_summary(tau_draws: np.ndarray, engine64: SimulationEngine) -> None:
    res = engine64.simulate(
        closed_form_model(tau_draws), "email_campaign", twin_count=500, random_seed=1
    )
    prior = res.prior_estimate
    assert prior is not None
    assert prior.mean == pytest.approx(np.mean(tau_draws), abs=1e-10)
    assert prior.sd == pytest.approx(np.std(tau_draws, ddof=1), abs=1e-10)
    assert prior.quantiles["0.025"] == pytest.approx(np.quantile(tau_draws, 0.025), abs=1e-10)
    assert prior.quantiles["0.5"] == pytest.approx(np.median(tau_draws), abs=1e-10)
    assert prior.control_mean == pytest.approx(10.0)
    assert prior.outcome_family == "gaussian" and prior.scale == "absolute"


# -- properties ------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_ate_invariant_to_twin_order(seed: int) -> None:
    data = _synthetic("hcp")
    post, pop, k = data
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(pop), 300)
    units = pop.iloc[idx].reset_index(drop=True)
    perm = rng.permutation(len(units))
    a = effect_draws(post, units, k, [1.0, 2.0], dtype=np.float64)
    b = effect_draws(post, units.iloc[perm], k, [1.0, 2.0], dtype=np.float64)
    np.testing.assert_allclose(a.ate, b.ate, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(a.segment_ate, b.segment_ate, rtol=1e-12, atol=1e-15)
    # distinct units weighted by multiplicity give the same answer as twin by twin
    uniq, counts = np.unique(idx, return_counts=True)
    c = effect_draws(
        post,
        pop.iloc[uniq].reset_index(drop=True),
        k,
        [1.0, 2.0],
        weights=counts,
        dtype=np.float64,
        batch_size=37,
    )
    np.testing.assert_allclose(a.ate, c.ate, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(a.var_control, c.var_control, rtol=1e-12)


@pytest.mark.parametrize("twin_type", ["hcp", "patient", "territory"])
def test_float32_matches_float64(twin_type: str) -> None:
    post, pop, k = _synthetic(twin_type)
    a = effect_draws(post, pop, k, [1.0, 2.0], dtype=np.float64)
    b = effect_draws(post, pop, k, [1.0, 2.0], dtype=np.float32, batch_size=256)
    # draws near 0 are accurate in absolute terms (sums of outcomes of the control mean's size)
    np.testing.assert_allclose(b.ate, a.ate, rtol=1e-5, atol=1e-6 * a.control_mean.mean())
    np.testing.assert_allclose(b.control_mean, a.control_mean, rtol=1e-6)
    np.testing.assert_allclose(b.var_control, a.var_control, rtol=1e-4)
    np.testing.assert_allclose(b.predicted_control, a.predicted_control, rtol=1e-5)


def test_float32_rare_outcomes_stay_accurate() -> None:
    # identical units (errors cannot average out) and a 0.1% base rate: the worst case
    tau = np.random.default_rng(0).normal(0.3, 0.1, 500)
    model = closed_form_model(tau, family="bernoulli", base=(logit(0.001), logit(0.002)))
    a = effect_draws(model.posterior, model.population, "email_campaign", dtype=np.float64)
    b = effect_draws(model.posterior, model.population, "email_campaign", dtype=np.float32)
    np.testing.assert_allclose(b.ate, a.ate, rtol=5e-3)
    np.testing.assert_allclose(b.control_mean, a.control_mean, rtol=1e-5)


def test_effect_draws_inputs() -> None:
    post, pop, k = _synthetic("patient")
    units = pop.iloc[:50]
    encoded = EncodedUnits.from_frame(post, units)
    assert len(encoded) == 50
    a = effect_draws(post, units, k, 1.0, dtype=np.float64)
    b = effect_draws(post, encoded, k, 1.0, dtype=np.float64, blas_threads=None)
    np.testing.assert_array_equal(a.ate, b.ate)
    with pytest.raises(ValueError, match="intensities"):
        effect_draws(post, units, k, [1.0, -0.5])
    with pytest.raises(ValueError, match="batch_size"):
        effect_draws(post, units, k, batch_size=0)
    with pytest.raises(ValueError, match="weights"):
        effect_draws(post, units, k, weights=np.ones(3))
    with pytest.raises(ValueError, match="no units"):
        effect_draws(post, units.iloc[:0], k)
    with pytest.raises(ValueError, match="columns"):
        effect_draws(post, EncodedUnits(encoded.x[:, :2], encoded.segment), k)
    with pytest.raises(ValueError, match="unknown intervention_type"):
        effect_draws(post, units, "carrier_pigeon")


def test_effect_draws_matches_reference_computation() -> None:
    for tt in ("hcp", "patient", "territory"):
        post, pop, k = _synthetic(tt)
        units = pop.iloc[:300]
        ref = post.expected_outcome(units, k, 1.5) - post.expected_outcome(units, None)
        got = effect_draws(post, units, k, [1.5], dtype=np.float64, batch_size=64)
        np.testing.assert_allclose(got.ate[0], ref.mean(axis=1), rtol=1e-10)
        np.testing.assert_allclose(
            got.control_mean, post.expected_outcome(units, None).mean(axis=1), rtol=1e-10
        )


def test_effect_draws_identical_for_any_thread_count() -> None:
    # many small chunks over several segments, weighted; every family's sums
    for tt in ("hcp", "patient", "territory"):
        post, pop, k = _synthetic(tt)
        units = pop.iloc[:700]
        w = np.arange(1, len(units) + 1) % 5
        runs = [
            effect_draws(post, units, k, [1.0, 2.0], weights=w, batch_size=37, threads=t)
            for t in (1, 2, 5)
        ]
        for other in runs[1:]:
            for field in ("ate", "control_mean", "segment_ate", "var_control", "var_treated"):
                assert np.array_equal(
                    getattr(runs[0], field), getattr(other, field), equal_nan=True
                )
            assert np.array_equal(runs[0].predicted_control, other.predicted_control)
        ref = effect_draws(post, units, k, [1.0, 2.0], weights=w, dtype=np.float64, threads=1)
        np.testing.assert_allclose(runs[1].ate, ref.ate, rtol=1e-4, atol=1e-6)


def test_same_seed_same_result(tau_draws: np.ndarray) -> None:
    model = closed_form_model(tau_draws)
    engine = SimulationEngine()
    a = engine.simulate(model, "email_campaign", twin_count=800, random_seed=42)
    b = engine.simulate(model, "email_campaign", twin_count=800, random_seed=42)
    c = engine.simulate(model, "email_campaign", twin_count=800, random_seed=43)
    assert a.model_dump(exclude=VOLATILE) == b.model_dump(exclude=VOLATILE)
    assert a.twin_unit_ids != c.twin_unit_ids
    # a drawn seed is recorded and replays the same simulation
    d = engine.simulate(model, "email_campaign", twin_count=800)
    assert d.random_seed is not None
    e = engine.simulate(model, "email_campaign", twin_count=800, random_seed=d.random_seed)
    assert d.model_dump(exclude=VOLATILE) == e.model_dump(exclude=VOLATILE)


def test_draws_and_twin_links(tau_draws: np.ndarray, engine64: SimulationEngine) -> None:
    model = closed_form_model(tau_draws)
    res = engine64.simulate(
        model, "email_campaign", {"target": {"segment": ["seg1"]}}, 700, random_seed=9
    )
    assert res.twin_unit_ids is not None and len(res.twin_unit_ids) == 700
    pop = model.population.set_index("unit_id")
    assert (pop.loc[res.twin_unit_ids, "segment"] == "seg1").all()
    expected = draw_twins(model.population, 700, {"segment": ["seg1"]}, random_seed=9)
    assert res.twin_unit_ids == [str(u) for u in expected.unit_ids]
    assert res.eligible_population == expected.eligible
    assert [s.segment for s in res.segment_effects] == ["seg1"]
    assert res.ate_draws is not None and len(res.ate_draws) == tau_draws.size
    assert res.intervention_config.intervention_type == "email_campaign"
    lean = engine64.simulate(model, "email_campaign", twin_count=700, include_draws=False)
    assert lean.ate_draws is None and lean.twin_unit_ids is None
    assert lean.outcome_sd_control is not None


def test_pass_through_fields(tau_draws: np.ndarray, engine64: SimulationEngine) -> None:
    res = engine64.simulate(
        closed_form_model(tau_draws),
        "email_campaign",
        twin_count=100,
        random_seed=1,
        fidelity_warning=True,
        fidelity_warning_reason="fidelity score 0.55 < 0.7",
        experiment_design_id="exp-1",
        dose_grid=(),
    )
    assert res.fidelity_warning and res.fidelity_warning_reason == "fidelity score 0.55 < 0.7"
    assert res.experiment_design_id == "exp-1"
    assert res.dose_response == [] and res.min_effective_intensity is None
    assert res.brand == "Fabhalta" and res.twin_type is TwinType.TERRITORY
    assert res.model_id is None  # the service sets the row id
    assert res.twin_count == 100 and res.confidence_level == 0.95
    default = engine64.simulate(closed_form_model(tau_draws), "email_campaign", dose_grid=())
    assert default.twin_count == engine64.settings.default_twin_count


# -- predictive ------------------------------------------------------------------------------
def test_observed_ate_predictive() -> None:
    ate = np.random.default_rng(0).normal(0.5, 0.2, 4000)
    draws = observed_ate_predictive(ate, 400, 500, 2.0, 3.0, random_seed=1, draws_per_ate=5)
    assert draws.shape == (20_000,)
    se = math.sqrt(9.0 / 400 + 4.0 / 500)
    assert float(observed_ate_se(400, 500, 2.0, 3.0)) == pytest.approx(se)
    assert draws.mean() == pytest.approx(ate.mean(), abs=0.01)
    assert draws.var() == pytest.approx(ate.var() + se**2, rel=0.05)
    again = observed_ate_predictive(ate, 400, 500, 2.0, 3.0, random_seed=1, draws_per_ate=5)
    np.testing.assert_array_equal(draws, again)
    # wider than the population interval
    lo, hi = equal_tailed_interval(draws)
    plo, phi = equal_tailed_interval(ate)
    assert lo < plo and hi > phi
    with pytest.raises(ValueError, match="arm sizes"):
        observed_ate_predictive(ate, 0, 10, 1.0)
    with pytest.raises(ValueError, match="empty"):
        observed_ate_predictive([], 10, 10, 1.0)


# -- end to end on synthetic ground truth ------------------------------------------------------
_CACHE: dict[str, tuple[TwinPosterior, pd.DataFrame, str]] = {}


def _synthetic(twin_type: str) -> tuple[TwinPosterior, pd.DataFrame, str]:
    if twin_type not in _CACHE:
        syn = generate_synthetic_twin_data(twin_type, n_units=600, n_periods=1, random_seed=3)
        post = truth_posterior(syn.truth, "Fabhalta", n_draws=200, effect_sd=0.05, random_seed=1)
        _CACHE[twin_type] = (post, syn.population("Fabhalta"), syn.truth.intervention_types[0])
    return _CACHE[twin_type]


@pytest.mark.parametrize(
    ("twin_type", "target"),
    [
        ("hcp", {}),
        ("patient", {}),
        ("territory", {}),
        ("hcp", {"segment": ["cardiology", "oncology"]}),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_true_ate_of_twins_in_interval(twin_type: str, target: dict, seed: int) -> None:
    syn = generate_synthetic_twin_data(twin_type, n_units=1500, n_periods=1, random_seed=seed)
    brand = "Remibrutinib"
    post = truth_posterior(syn.truth, brand, n_draws=500, effect_sd=0.05, random_seed=seed)
    pop = syn.population(brand)
    model = FittedTwinModel(
        brand=brand,
        twin_type=TwinType(twin_type),
        posterior=post,
        population=pop,
        diagnostics=Diagnostics(1.0, 1000.0, 1000.0, 0, 1.0, True),
        spec_hash="synthetic",
    )
    k = syn.truth.intervention_types[0]
    engine = SimulationEngine()
    res = engine.simulate(
        model, k, {"intensity": 1.5, "target": target}, twin_count=4000, random_seed=seed
    )
    twins = pop.set_index("unit_id").loc[res.twin_unit_ids].reset_index()
    truth = syn.truth.ate(twins, k, 1.5)
    assert res.simulated_ci_lower <= truth.ate <= res.simulated_ci_upper  # type: ignore[operator]
    assert res.simulated_ate == pytest.approx(truth.ate, rel=0.1)
    assert res.relative_lift_ci_lower <= truth.relative <= res.relative_lift_ci_upper  # type: ignore[operator]
    assert res.control_mean == pytest.approx(truth.control_mean, rel=1e-4)


# -- bad input ---------------------------------------------------------------------------------
@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a bad call gets as far as drawing twins."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before validation")

    monkeypatch.setattr("bayestwin.engine.simulation.draw_twins", boom)


@pytest.mark.usefixtures("guarded")
@pytest.mark.parametrize(
    ("kwargs", "field", "match"),
    [
        (
            {"intervention_type": "skywriting"},
            "intervention_type",
            "unknown intervention_type 'skywriting'",
        ),
        ({"twin_count": 0}, "twin_count", "twin_count"),
        ({"twin_count": -5}, "twin_count", "twin_count"),
        ({"twin_count": 50_001}, "twin_count", "max_twin_count=50000"),
        ({"twin_count": 2.5}, "twin_count", "twin_count must be an integer"),
        ({"confidence_level": 0.0}, "confidence_level", "confidence_level"),
        ({"confidence_level": 1.0}, "confidence_level", "confidence_level"),
        ({"confidence_level": 1.5}, "confidence_level", "confidence_level"),
        (
            {"intervention_config": InterventionConfig.model_construct(intensity=-0.5)},
            "intervention_config.intensity",
            "intensity must be finite and >= 0",
        ),
        (
            {"intervention_config": {"intervention_type": "call_frequency"}},
            "intervention_config.intervention_type",
            "differs from intervention_type",
        ),
        ({"dose_grid": [0.5, -1.0]}, "dose_grid", "dose_grid"),
        ({"random_seed": -1}, "random_seed", "random_seed"),
        (
            {"intervention_config": {"target": {"segment": ["seg9"]}}},
            "intervention_config.target",
            "matches no unit",
        ),
    ],
)
def test_bad_input_is_refused_before_work(
    tau_draws: np.ndarray, kwargs: dict, field: str, match: str
) -> None:
    call = {"intervention_type": "email_campaign", "twin_count": 100, **kwargs}
    engine = SimulationEngine()
    with pytest.raises(InvalidInputError, match=match) as info:
        engine.simulate(closed_form_model(tau_draws), **call)
    assert info.value.field == field


@pytest.mark.usefixtures("guarded")
def test_badly_shaped_config_is_a_schema_error(tau_draws: np.ndarray) -> None:
    with pytest.raises(ValidationError, match="intensity"):
        SimulationEngine().simulate(
            closed_form_model(tau_draws), "email_campaign", {"intensity": -1.0}, 100
        )


def test_check_request_without_the_engine(tau_draws: np.ndarray) -> None:
    model = closed_form_model(tau_draws)
    limits: dict[str, Any] = {"max_twin_count": 200, "default_twin_count": 150}
    checked = check_request(model, "email_campaign", {"intensity": 2.0}, **limits)
    assert checked.twin_count == 150
    assert checked.config.intervention_type == "email_campaign"
    assert checked.config.intensity == 2.0
    with pytest.raises(InvalidInputError, match="max_twin_count=200") as info:
        check_request(model, "email_campaign", None, 201, **limits)
    assert info.value.field == "twin_count"
    with pytest.raises(NotFitError):
        check_request(closed_form_model(tau_draws, passed=False), "email_campaign", **limits)


@pytest.mark.usefixtures("guarded")
def test_failed_diagnostics_refused(tau_draws: np.ndarray) -> None:
    engine = SimulationEngine()
    with pytest.raises(NotFitError, match="r_hat 1.2"):
        engine.simulate(
            closed_form_model(tau_draws, passed=False), "email_campaign", twin_count=100
        )
    with pytest.raises(TypeError, match="FittedTwinModel"):
        engine.simulate("not a model", "email_campaign", twin_count=100)  # type: ignore[arg-type]


def test_override_diagnostics_allows_use(tau_draws: np.ndarray) -> None:
    model = closed_form_model(tau_draws, passed=False)
    usable = FittedTwinModel(
        brand=model.brand,
        twin_type=model.twin_type,
        posterior=model.posterior,
        population=model.population,
        diagnostics=model.diagnostics,
        spec_hash=model.spec_hash,
        override_diagnostics=True,
    )
    res = SimulationEngine().simulate(usable, "email_campaign", twin_count=100, dose_grid=())
    assert res.simulation_status is SimulationStatus.COMPLETED


def test_bad_targets(tau_draws: np.ndarray) -> None:
    engine = SimulationEngine()
    model = closed_form_model(tau_draws)
    with pytest.raises(ValueError, match=r"unknown column 'specialty'.*'segment'"):
        engine.simulate(model, "email_campaign", {"target": {"specialty": ["a"]}}, 100)
    with pytest.raises(ValueError, match=r"'segment'.*matches no unit.*'seg0', 'seg1'"):
        engine.simulate(model, "email_campaign", {"target": {"segment": ["seg9"]}}, 100)
    with pytest.raises(ValueError, match=r"'x'.*matches no unit"):
        engine.simulate(model, "email_campaign", {"target": {"x": {"min": 1e6}}}, 100)


def test_engine_defaults_are_the_shipped_settings() -> None:
    shipped = load_settings(environ={})
    defaults = SimulationEngine().settings
    assert defaults == EngineSettings()
    for f in dataclasses.fields(EngineSettings):
        assert getattr(defaults, f.name) == getattr(shipped, f.name), f.name
    assert defaults.rule == DecisionRule(0.05, 0.70, 0.05, 0.80)


def test_engine_settings_checked() -> None:
    with pytest.raises(ValueError, match="confidence_threshold"):
        SimulationEngine(confidence_threshold=0.4)
    with pytest.raises(ValueError, match="power_alpha"):
        SimulationEngine(power_alpha=1.5)
    with pytest.raises(ValueError, match="max_twin_count"):
        SimulationEngine(default_twin_count=100, max_twin_count=50)
    with pytest.raises(ValueError, match="batch_size"):
        SimulationEngine(batch_size=0)
    with pytest.raises(ValueError, match="dtype"):
        SimulationEngine(dtype=np.float16)
    with pytest.raises(ValueError, match="blas_threads"):
        SimulationEngine(blas_threads=0)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        SimulationEngine(threads=0)


def test_blas_threads_restored_after_concurrent_simulations(tau_draws: np.ndarray) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    engine = SimulationEngine()
    model = closed_form_model(tau_draws, n_units=3000)

    def run(seed: int) -> float:
        res = engine.simulate(model, "email_campaign", twin_count=3000, random_seed=seed)
        return float(res.simulated_ate)  # type: ignore[arg-type]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, [1, 2, 1, 2]))
    assert results[0] == results[2] and results[1] == results[3]
    assert blas_threads() == before
