"""Panel twins: unit effects, period effects, the dose jump, and simulating any population.

Closed forms on hand-built posteriors (no sampling), then fits at a fixed seed with a
stated tolerance.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import special

from bayestwin.core.effects import average_effect_draws, effect_draws
from bayestwin.core.posterior import (
    FeatureEncoder,
    SegmentHyper,
    TwinPosterior,
    dose_response_draws,
)
from bayestwin.core.unit_effects import UnitEffects, UnitOffsets, time_effect_draws
from bayestwin.engine.simulation import SimulationEngine
from bayestwin.errors import InvalidInputError
from bayestwin.model.diagnostics import Diagnostics
from bayestwin.model.fit import TwinGenerator
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.model.history import check_history
from bayestwin.model.io import load_model, save_model
from bayestwin.model.panel_terms import panel_choices
from bayestwin.model.pymc_model import build_design
from bayestwin.model.spec import SamplerSettings, default_spec
from bayestwin.model.unit_posterior import unit_effects_from_trace
from bayestwin.synthetic import generate_synthetic_twin_data
from bayestwin.vocabulary import TwinType

D = 400


def _unit_effects(means: dict[str, float], scale: float = 0.5, sd: float = 0.0) -> UnitEffects:
    ids = np.array(sorted(means), dtype=str)
    mean = np.array([means[i] for i in ids])
    return UnitEffects(
        kind="normal",
        unit_ids=ids,
        mean=mean,
        sd=np.full(len(ids), sd),
        offset=np.zeros(len(ids)),
        scale=np.full(D, scale),
    )


def _panel_model(
    units: UnitEffects | None,
    *,
    family: str = "bernoulli",
    time_scale: float | None = None,
    hyper: bool = True,
) -> FittedTwinModel:
    enc = FeatureEncoder(numeric=("x",), loc=np.zeros(1), scale=np.ones(1), segments=("s0",))
    post = TwinPosterior(
        family=family,  # type: ignore[arg-type]
        encoder=enc,
        intervention_types=("email",),
        intercept=np.full((D, 1), -1.0),
        beta=np.zeros((D, 1)),
        tau=np.full((D, 1, 1), 0.8),
        gamma=np.zeros((D, 1, 1)),
        dose_rate=np.ones(D),
        dispersion=np.ones(D) if family == "gaussian" else None,
        unit_effects=units,
        time_scale=None if time_scale is None else np.full(D, time_scale),
        segment_hyper=SegmentHyper(
            intercept_mean=np.full(D, -1.0),
            intercept_sd=np.full(D, 0.3),
            tau_type=np.full((D, 1), 0.8),
            tau_sd=np.full(D, 0.2),
        )
        if hyper
        else None,
    )
    ids = [] if units is None else list(units.unit_ids)
    population = pd.DataFrame({"unit_id": ids, "segment": "s0", "x": 0.0})
    return FittedTwinModel(
        brand="B",
        twin_type=TwinType.HCP,
        posterior=post,
        population=population,
        diagnostics=Diagnostics(1.0, 1000.0, 1000.0, 0, 1.0, True, []),
        spec_hash="panel-test",
    )


# -- pure maths ------------------------------------------------------------------------


def test_dose_jump_closed_form() -> None:
    rate, jump = np.array([2.0]), np.array([0.4])
    s = np.array([0.0, 0.1, 0.5, 1.0])
    g = dose_response_draws(s, rate, jump)[0]
    smooth = np.expm1(-2.0 * s) / np.expm1(-2.0)
    np.testing.assert_allclose(g, np.where(s > 0, 0.4 + 0.6 * smooth, 0.0))
    assert g[0] == 0.0 and g[-1] == pytest.approx(1.0)
    assert dose_response_draws(0.0, rate, jump)[0] == 0.0
    assert dose_response_draws(0.1, rate, jump)[0] == pytest.approx(g[1])


def test_time_effect_draws_are_a_random_walk() -> None:
    scale = np.full(20_000, 0.3)
    b = time_effect_draws(scale, 4, np.random.default_rng(0))
    # h steps ahead: sd 0.3 sqrt(h), mean 0
    np.testing.assert_allclose(b.std(axis=1), 0.3 * np.sqrt([1, 2, 3, 4]), rtol=0.03)
    assert np.abs(b.mean(axis=1)).max() < 0.01
    with pytest.raises(ValueError, match="horizon"):
        time_effect_draws(scale, 0, np.random.default_rng(0))


def test_unseen_units_draw_from_the_population_distribution() -> None:
    ue = _unit_effects({"a": 2.0, "b": -2.0}, scale=0.7)
    rng = np.random.default_rng(1)
    out = ue.draws(["a", "zzz"], rng)
    assert out.shape == (2, D)
    np.testing.assert_allclose(out[0], 2.0)  # sd 0: exactly its posterior mean
    big = ue.population_draws(200, np.random.default_rng(2))
    assert big.std() == pytest.approx(0.7, rel=0.05)
    gamma = dataclasses.replace(ue, kind="log_gamma", scale=np.full(D, 0.5))
    theta = np.exp(gamma.population_draws(500, np.random.default_rng(3)))
    # exp(u) ~ Gamma(phi, phi) with phi = 1 / 0.25: mean 1, variance 1 / phi
    assert theta.mean() == pytest.approx(1.0, rel=0.02)
    assert theta.var() == pytest.approx(0.25, rel=0.05)


def test_unit_offset_enters_the_kernel_exactly() -> None:
    model = _panel_model(_unit_effects({"a": 1.5}))
    post = model.posterior
    units = pd.DataFrame({"segment": ["s0", "s0"], "x": [0.0, 0.0]})
    offset = np.vstack([np.full(D, 1.5), np.full(D, -0.5)])
    got = effect_draws(post, units, "email", 1.0, unit_offset=offset, dtype=np.float64)
    eta0 = -1.0 + np.array([1.5, -0.5])
    want = (special.expit(eta0 + 0.8) - special.expit(eta0)).mean()
    np.testing.assert_allclose(got.ate[0], want, rtol=1e-10)
    with pytest.raises(ValueError, match="unit_offset"):
        effect_draws(post, units, "email", 1.0, unit_offset=offset[:1])


@pytest.mark.parametrize("family", ["bernoulli", "poisson", "gaussian"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lazy_unit_offsets_give_the_dense_results_bit_for_bit(family: str, dtype: type) -> None:
    rng = np.random.default_rng(5)
    ids = [f"u{i:03d}" for i in range(300)]
    ue = dataclasses.replace(
        _unit_effects(dict(zip(ids, rng.normal(0, 0.5, 300), strict=True))),
        sd=rng.uniform(0.05, 0.4, 300),
    )
    twins = rng.choice(ids, size=250)
    lazy = ue.lazy_draws(twins, np.random.default_rng(9), dtype=dtype)
    dense = ue.draws(twins, np.random.default_rng(9), dtype=dtype)
    assert isinstance(lazy, UnitOffsets) and lazy.shape == dense.shape == (250, D)
    np.testing.assert_array_equal(np.asarray(lazy), dense)
    # the positions kept by a caller give the same rows as the ids
    idx = ue.index_of(twins)
    at = ue.lazy_draws_at(idx, np.random.default_rng(9), dtype=dtype)
    np.testing.assert_array_equal(np.asarray(at), dense)
    # each row: the unit's mean and sd, without Monte Carlo noise in its moments
    np.testing.assert_allclose(dense.mean(axis=1), ue.mean[idx], atol=1e-5)
    np.testing.assert_allclose(dense.std(axis=1), ue.sd[idx], rtol=2e-3)
    post = _panel_model(ue, family=family).posterior
    units = pd.DataFrame({"segment": "s0", "x": rng.normal(size=250)})
    kw = {"dtype": dtype, "batch_size": 64, "threads": 1}
    got = effect_draws(post, units, "email", [1.0, 0.5], unit_offset=lazy, **kw)
    want = effect_draws(post, units, "email", [1.0, 0.5], unit_offset=dense, **kw)
    for name in ("ate", "control_mean", "var_control", "segment_ate", "predicted_control"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    # a unit the history lacks: the population draws, as an array
    assert isinstance(ue.lazy_draws(["u000", "new"], np.random.default_rng(0)), np.ndarray)


def test_average_over_periods_pools_the_variance() -> None:
    model = _panel_model(None, family="gaussian")
    units = pd.DataFrame({"segment": ["s0"] * 3, "x": [0.0, 1.0, 2.0]})
    one = effect_draws(model.posterior, units, "email", 1.0, dtype=np.float64)
    shifted = effect_draws(
        model.posterior, units, "email", 1.0, dtype=np.float64, unit_offset=np.full((3, D), 2.0)
    )
    both = average_effect_draws([one, shifted])
    np.testing.assert_allclose(both.control_mean, one.control_mean + 1.0)
    # pooled variance = within (unit variance 1) + between periods (1 = half of 2, squared)
    np.testing.assert_allclose(both.var_control, one.var_control + 1.0)
    assert average_effect_draws([one]) is one


# -- the engine -------------------------------------------------------------------------


def test_twin_of_unit_i_carries_its_unit_effect() -> None:
    engine = SimulationEngine(dtype=np.float64)
    model = _panel_model(_unit_effects({"high": 2.0, "low": -2.0}))
    hi = engine.simulate(model, "email", twin_count=50, random_seed=0, population=["high"])
    lo = engine.simulate(model, "email", twin_count=50, random_seed=0, population=["low"])
    assert set(hi.twin_unit_ids or []) == {"high"}
    assert hi.control_mean == pytest.approx(special.expit(-1.0 + 2.0), rel=1e-6)
    assert lo.control_mean == pytest.approx(special.expit(-1.0 - 2.0), rel=1e-6)
    assert hi.simulated_ate == pytest.approx(special.expit(1.8) - special.expit(1.0), rel=1e-6)


def test_horizon_widens_with_time_effects_and_is_recorded() -> None:
    engine = SimulationEngine(dtype=np.float64)
    model = _panel_model(_unit_effects({"a": 0.0}), time_scale=0.5)
    near = engine.simulate(model, "email", twin_count=20, random_seed=0, horizon=1)
    far = engine.simulate(model, "email", twin_count=20, random_seed=0, horizon=8)
    assert (near.horizon, far.horizon) == (1, 8)
    width = [r.simulated_ci_upper - r.simulated_ci_lower for r in (near, far)]
    # periods further out have more uncertain levels, which a bernoulli ATE feels
    assert width[1] > width[0]
    static = engine.simulate(_panel_model(_unit_effects({"a": 0.0})), "email", twin_count=20)
    assert static.horizon is None
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError) as err:
            engine.simulate(model, "email", twin_count=20, horizon=bad)  # type: ignore[arg-type]
        assert err.value.field == "horizon"


def test_population_frame_with_unseen_segment_and_units() -> None:
    engine = SimulationEngine(dtype=np.float64)
    model = _panel_model(_unit_effects({"a": 0.0}, scale=0.01))
    frame = pd.DataFrame({"unit_id": ["n1", "n2"], "segment": ["new", "s0"], "x": [0.0, 0.0]})
    r = engine.simulate(model, "email", twin_count=200, random_seed=3, population=frame)
    assert {s.segment for s in r.segment_effects} >= {"new", "s0"}
    assert r.eligible_population == 2
    # the unseen segment's effect varies across draws by sigma_seg = 0.2 around 0.8
    assert r.simulated_ci_upper - r.simulated_ci_lower > 0.01
    # without the segments' population distribution an unseen segment is refused
    strict = _panel_model(_unit_effects({"a": 0.0}), hyper=False)
    with pytest.raises(InvalidInputError) as err:
        engine.simulate(strict, "email", twin_count=10, population=frame)
    assert err.value.field == "population"


@pytest.mark.parametrize(
    ("population", "message"),
    [
        (["a", "ghost"], "lacks"),
        ([], "no unit id"),
        ("a", "DataFrame"),
        (pd.DataFrame({"segment": ["s0"]}), "lacks the column"),
        (pd.DataFrame({"segment": ["s0"], "x": [np.nan]}), "missing"),
        (pd.DataFrame({"unit_id": ["u", "u"], "segment": "s0", "x": [0.0, 1.0]}), "repeated"),
    ],
)
def test_population_errors_name_the_field(population: object, message: str) -> None:
    model = _panel_model(_unit_effects({"a": 0.0}))
    with pytest.raises(InvalidInputError, match=message) as err:
        SimulationEngine().simulate(model, "email", twin_count=10, population=population)  # type: ignore[arg-type]
    assert err.value.field == "population"


def test_population_target_filters_apply_to_the_given_units() -> None:
    model = _panel_model(_unit_effects({"a": 0.0}))
    frame = pd.DataFrame({"unit_id": ["p", "q"], "segment": "s0", "x": [0.0, 5.0]})
    r = SimulationEngine().simulate(
        model,
        "email",
        {"intensity": 1.0, "target": {"x": {"min": 1.0}}},
        twin_count=10,
        population=frame,
    )
    assert set(r.twin_unit_ids or []) == {"q"} and r.eligible_population == 1


# -- the design ---------------------------------------------------------------------------


def _panel_world(family: str = "gaussian", **kw: object) -> object:
    return generate_synthetic_twin_data(
        {"gaussian": "territory", "poisson": "patient", "bernoulli": "hcp"}[family],
        n_units=400, n_periods=6, brands=("B",), family=family, n_intervention_types=2,
        n_segments=3, random_seed=7, unit_icc=0.4, adoption="staggered", **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _spec(s: object, family: str, **kw: object) -> object:
    return default_spec(
        {"gaussian": "territory", "poisson": "patient", "bernoulli": "hcp"}[family],
        "B", family=family, numeric_features=s.numeric_features,  # type: ignore[attr-defined]
        categorical_features=s.categorical_features, **kw,  # type: ignore[attr-defined]
    )  # fmt: skip


def test_auto_panel_choices() -> None:
    s = _panel_world()
    spec = _spec(s, "gaussian")
    df = check_history(s.data, spec)  # type: ignore[attr-defined, arg-type]
    assert panel_choices(df, spec) == panel_choices(df, spec)  # type: ignore[arg-type]
    c = panel_choices(df, spec)  # type: ignore[arg-type]
    assert c.units and c.time and c.crre  # staggered: treatment changes within units
    fixed = generate_synthetic_twin_data(
        "territory", n_units=200, n_periods=4, brands=("B",), family="gaussian", random_seed=1
    )
    fixed_df = check_history(fixed.data, _spec(fixed, "gaussian"))  # type: ignore[arg-type]
    c_fixed = panel_choices(fixed_df, _spec(fixed, "gaussian"))  # type: ignore[arg-type]
    # no within-unit change: the share of treated periods would be the treatment itself
    assert c_fixed.units and not c_fixed.crre
    one = df[df["period"] == df["period"].max()]
    c1 = panel_choices(one, spec)  # type: ignore[arg-type]
    assert not c1.units and not c1.time
    off = _spec(s, "gaussian", unit_effects="off", time_effects="off")
    c2 = panel_choices(df, off)  # type: ignore[arg-type]
    assert not c2.units and not c2.time


def test_design_collapses_by_unit_and_period_and_centres_mundlak() -> None:
    s = _panel_world()
    spec = _spec(s, "gaussian")
    df = check_history(s.data, spec)  # type: ignore[attr-defined, arg-type]
    d = build_design(df, spec)  # type: ignore[arg-type]
    n_units = df["unit_id"].nunique()
    assert len(d["unit_ids"]) == n_units and d["mundlak"].shape == (n_units, 2)
    np.testing.assert_allclose(d["mundlak"].mean(axis=0), 0.0, atol=1e-12)
    assert d["count"].sum() == len(df)
    assert sorted(set(d["period"])) == list(range(df["period"].nunique()))


def test_gaussian_unit_posterior_matches_the_closed_form() -> None:
    """One unit, no other terms: E[u | y] = s2u sum(y - mu) / (s2 + n s2u)."""
    d = {
        "seg": np.zeros(3, dtype=np.intp),
        "x": np.zeros((3, 0)),
        "z": np.zeros((3, 0)),
        "treated": np.zeros(3),
        "k": np.zeros(3, dtype=np.intp),
        "intensity": np.zeros(3),
        "total": np.array([2.0, 4.0, 3.0]),
        "count": np.array([1.0, 2.0, 1.0]),
        "outcome_loc": 0.0,
        "outcome_scale": 1.0,
        "unit": np.zeros(3, dtype=np.intp),
        "unit_ids": np.array(["u"]),
        "mundlak": np.zeros((1, 1)),
    }
    arrays = {
        "a": np.zeros((2, 1)),
        "beta": np.zeros((2, 0)),
        "tau": np.zeros((2, 1, 1)),
        "gamma": np.zeros((2, 1, 0)),
        "dose_rate": np.ones(2),
        "sigma_unit": np.array([1.0, 1.0]),
        "dispersion": np.array([1.0, 1.0]),
    }
    ue = unit_effects_from_trace(arrays, d, "gaussian")
    # rows: 2, 2, 2, 3 (n = 4, sum 9): mean 9 / (1 + 4), var 1 / 5
    assert ue.mean[0] == pytest.approx(9 / 5)
    assert ue.sd[0] == pytest.approx(np.sqrt(1 / 5))


def test_poisson_unit_posterior_matches_the_gamma_closed_form() -> None:
    d = {
        "seg": np.zeros(2, dtype=np.intp),
        "x": np.zeros((2, 0)),
        "z": np.zeros((2, 0)),
        "treated": np.zeros(2),
        "k": np.zeros(2, dtype=np.intp),
        "intensity": np.zeros(2),
        "total": np.array([3.0, 5.0]),
        "count": np.array([1.0, 2.0]),
        "unit": np.zeros(2, dtype=np.intp),
        "unit_ids": np.array(["u"]),
        "mundlak": np.zeros((1, 1)),
    }
    arrays = {
        "a": np.zeros((1, 1)),
        "beta": np.zeros((1, 0)),
        "tau": np.zeros((1, 1, 1)),
        "gamma": np.zeros((1, 1, 0)),
        "dose_rate": np.ones(1),
        "sigma_unit": np.array([0.5]),
    }
    ue = unit_effects_from_trace(arrays, d, "poisson")
    phi, y, m = 4.0, 8.0, 3.0  # exp(eta) = 1 on each of 3 rows
    assert ue.mean[0] == pytest.approx(special.digamma(phi + y) - np.log(phi + m))
    assert ue.sd[0] == pytest.approx(np.sqrt(special.polygamma(1, phi + y)))
    assert ue.kind == "log_gamma"


# -- fits at a fixed seed ---------------------------------------------------------------


@pytest.fixture(scope="module")
def staggered_fit() -> tuple[object, FittedTwinModel]:
    s = _panel_world("gaussian", timing_confounding=1.5)
    sampler = SamplerSettings(draws=500, tune=500, chains=2, cores=1, progressbar=False)
    spec = _spec(s, "gaussian", sampler=sampler)
    return s, TwinGenerator(spec).fit(s.data, override_diagnostics=True)  # type: ignore[attr-defined, arg-type]


@pytest.mark.slow
def test_recovers_unit_scale_and_effect_on_a_staggered_confounded_world(
    staggered_fit: tuple[object, FittedTwinModel], tmp_path: object
) -> None:
    s, model = staggered_fit
    truth = s.truth  # type: ignore[attr-defined]
    ue = model.posterior.unit_effects
    assert ue is not None
    # the model's gaussian scale is the history's outcome sd: convert the true scale
    y_sd = float(s.data["outcome"].std(ddof=0))  # type: ignore[attr-defined]
    true_scale = truth.unit_sd * truth.outcome_scale / y_sd
    # 400 units: the posterior mean of sigma_unit within 25% of the truth
    assert ue.scale.mean() == pytest.approx(true_scale, rel=0.25)
    true_u = truth.unit_effects.reindex(ue.unit_ids).to_numpy()
    assert np.corrcoef(ue.mean, true_u)[0, 1] > 0.7
    engine = SimulationEngine()
    for itype in model.posterior.intervention_types:
        r = engine.simulate(model, itype, twin_count=4000, random_seed=5)
        twins = model.population.set_index("unit_id").loc[r.twin_unit_ids].reset_index()
        twins["brand"] = "B"
        true_ate = truth.ate(twins, itype, 1.0).ate
        assert r.simulated_ci_lower <= true_ate <= r.simulated_ci_upper, (itype, true_ate, r)
    saved = save_model(model, tmp_path / "m")  # type: ignore[operator]
    again = load_model(saved)
    assert again.posterior.unit_effects is not None
    np.testing.assert_array_equal(again.posterior.unit_effects.mean, ue.mean)
    np.testing.assert_array_equal(again.posterior.time_scale, model.posterior.time_scale)


# -- a mixed-intensity arm --------------------------------------------------------------


@pytest.mark.parametrize("with_units", [False, True])
def test_mixed_intensity_arm_is_the_weighted_average_of_single_runs(with_units: bool) -> None:
    engine = SimulationEngine(dtype=np.float64)
    units = _unit_effects({"a": 0.5, "b": -0.5}, sd=0.3) if with_units else None
    model = _panel_model(units)
    if units is None:
        model = dataclasses.replace(
            model, population=pd.DataFrame({"unit_id": ["a", "b"], "segment": "s0", "x": 0.0})
        )
    post = model.posterior
    model = dataclasses.replace(
        model, posterior=dataclasses.replace(post, dose_rate=np.full(D, 3.0))
    )
    mix = [{"intensity": 0.2, "weight": 1.0}, {"intensity": 1.0, "weight": 3.0}]
    kw = {"twin_count": 300, "random_seed": 9, "include_draws": True}
    mixed = engine.simulate(model, "email", {"intensity_mix": mix}, **kw)  # type: ignore[arg-type]
    singles = [
        engine.simulate(model, "email", {"intensity": s}, **kw)  # type: ignore[arg-type]
        for s in (0.2, 1.0)
    ]
    want = 0.25 * np.asarray(singles[0].ate_draws) + 0.75 * np.asarray(singles[1].ate_draws)
    np.testing.assert_allclose(mixed.ate_draws, want, rtol=1e-10, atol=1e-12)
    assert mixed.intervention_config.intensity == pytest.approx(0.8)
    low, high = sorted(r.treated_mean for r in singles)  # type: ignore[type-var]
    assert low < mixed.treated_mean < high  # type: ignore[operator]


def test_intensity_mix_is_checked() -> None:
    model = _panel_model(_unit_effects({"a": 0.0}))
    engine = SimulationEngine()
    bad = [
        [],
        [{"intensity": 0.5, "weight": 1.0}, {"intensity": 0.5, "weight": 2.0}],
        [{"intensity": 0.0, "weight": 1.0}],
        [{"intensity": 0.5, "weight": 0.0}],
    ]
    for mix in bad:
        with pytest.raises((InvalidInputError, ValueError)):
            engine.simulate(model, "email", {"intensity_mix": mix}, twin_count=10)


@pytest.mark.slow
def test_simulate_on_units_and_a_segment_the_history_lacks() -> None:
    """Fit without one segment and a fifth of the units; simulate on exactly those."""
    s = _panel_world("gaussian")
    data = s.data  # type: ignore[attr-defined]
    units = np.array(sorted(data["unit_id"].unique()))
    rng = np.random.default_rng(4)
    held = set(rng.choice(units, size=len(units) // 5, replace=False))
    lost_segment = sorted(data["segment"].unique())[0]
    out = data["unit_id"].isin(held) | (data["segment"] == lost_segment)
    sampler = SamplerSettings(draws=500, tune=500, chains=2, cores=1, progressbar=False)
    model = TwinGenerator(_spec(s, "gaussian", sampler=sampler)).fit(  # type: ignore[attr-defined]
        data[~out], override_diagnostics=True
    )
    assert lost_segment not in model.posterior.encoder.segments
    target = data[out].sort_values("period").groupby("unit_id").tail(1)
    frame = target[["unit_id", "segment", *s.numeric_features, *s.categorical_features]]  # type: ignore[attr-defined]
    engine = SimulationEngine()
    truth = s.truth  # type: ignore[attr-defined]
    for itype in model.posterior.intervention_types:
        r = engine.simulate(model, itype, twin_count=4000, random_seed=2, population=frame)
        assert set(r.twin_unit_ids or []) <= set(frame["unit_id"])
        twins = frame.set_index("unit_id").loc[r.twin_unit_ids].reset_index()
        twins["brand"] = "B"
        true_ate = truth.ate(twins, itype, 1.0).ate
        assert r.simulated_ci_lower <= true_ate <= r.simulated_ci_upper, (itype, true_ate, r)
        assert any(seg.segment == lost_segment for seg in r.segment_effects)
