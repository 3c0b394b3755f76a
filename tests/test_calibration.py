from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from bayestwin.calibration import (
    CalibrationRun,
    RunSettings,
    complete_pooling_glm,
    coverage_summary,
    draw_world_configs,
    fit_glm,
    interval_hits,
    linear_dml,
    naive_difference,
    no_pooling_glm,
    normal_hits,
    prior_effects,
    rank_uniformity,
    read_run,
    run_calibration,
    sbc_rank,
    summarize,
    to_markdown,
    unit_data,
    write_report,
)
from bayestwin.calibration.gate import GATE_MARGIN, gate_draws_needed
from bayestwin.core.intervals import INTERVAL_LEVELS
from bayestwin.model.spec import DiagnosticThresholds
from bayestwin.synthetic import generate_synthetic_twin_data


# -- small statistics on closed forms ----------------------------------------------------
def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_coverage_summary_is_the_wilson_interval() -> None:
    hits = np.array([True] * 83 + [False] * 17)
    out = coverage_summary(hits)
    lo, hi = _wilson(83, 100, float(special.ndtri(0.975)))
    assert out["n"] == 100 and out["hits"] == 83
    assert out["coverage"] == pytest.approx(0.83, abs=1e-12)
    assert out["lower"] == pytest.approx(lo, abs=1e-12)
    assert out["upper"] == pytest.approx(hi, abs=1e-12)


def test_coverage_summary_drops_missing_and_handles_empty() -> None:
    out = coverage_summary([1.0, np.nan, 0.0, 1.0])
    assert (out["n"], out["hits"]) == (3, 2)
    assert coverage_summary([np.nan])["coverage"] is None


def test_interval_hits_are_equal_tailed_quantiles() -> None:
    draws = np.linspace(0.0, 1.0, 1001)
    # central 50%: [0.25, 0.75]; 80%: [0.1, 0.9]; 95%: [0.025, 0.975]
    assert interval_hits(draws, 0.2) == {0.5: False, 0.8: True, 0.95: True}
    assert interval_hits(draws, 0.05) == {0.5: False, 0.8: False, 0.95: True}
    assert interval_hits(draws, 0.5) == {0.5: True, 0.8: True, 0.95: True}
    with pytest.raises(ValueError, match="levels"):
        interval_hits(draws, 0.5, levels=(1.0,))


def test_normal_hits() -> None:
    # 1.5 se away: outside the 50% (0.674) and 80% (1.28) intervals, inside 95% (1.96)
    assert normal_hits(0.0, 2.0, 3.0) == {0.5: False, 0.8: False, 0.95: True}


def test_sbc_rank_counts_thinned_draws_below_truth() -> None:
    draws = np.arange(1000.0)
    # 99 evenly spaced draws, step 999 / 98 = 10.19: those <= 500 are i = 0..49
    assert sbc_rank(draws, 500.5) == 50
    assert sbc_rank(draws, -1.0) == 0
    assert sbc_rank(draws, 1e9) == 99
    assert sbc_rank(np.arange(10.0), 4.5, n_thin=99) == 5  # fewer draws than n_thin


def test_rank_uniformity_closed_forms() -> None:
    flat = rank_uniformity(np.arange(100))
    assert flat["counts"] == [10] * 10
    assert flat["chi2"] == pytest.approx(0.0, abs=1e-12)
    assert flat["chi2_p_value"] == pytest.approx(1.0, abs=1e-12)
    assert flat["ks"] == pytest.approx(0.005, abs=1e-12)
    spike = rank_uniformity(np.zeros(50, dtype=int))
    # all 50 in one of 10 bins: chi2 = sum (o - 5)^2 / 5 = 45^2/5 + 9 * 5 = 450
    assert spike["chi2"] == pytest.approx(450.0)
    assert spike["chi2_p_value"] < 1e-50
    with pytest.raises(ValueError, match="multiple"):
        rank_uniformity([1, 2], n_draws=100, bins=10)
    with pytest.raises(ValueError, match="ranks"):
        rank_uniformity([120])


def _conjugate_ranks(scale: float, shift: float, n: int = 400) -> np.ndarray:
    """SBC on theta ~ N(0, 1), y ~ N(theta, 1): the posterior is N(y / 2, 1 / 2)."""
    rng = np.random.default_rng(3)
    theta = rng.standard_normal(n)
    y = theta + rng.standard_normal(n)
    ranks = []
    for t, obs in zip(theta, y, strict=True):
        draws = obs / 2 + shift + scale * math.sqrt(0.5) * rng.standard_normal(500)
        ranks.append(sbc_rank(draws, float(t)))
    return np.asarray(ranks)


def test_sbc_flags_overconfident_and_biased_posteriors() -> None:
    calibrated = rank_uniformity(_conjugate_ranks(1.0, 0.0))
    overconfident = rank_uniformity(_conjugate_ranks(0.4, 0.0))
    biased = rank_uniformity(_conjugate_ranks(1.0, 0.6))
    assert calibrated["chi2_p_value"] > 0.01 and calibrated["ks_p_value"] > 0.01
    assert overconfident["chi2_p_value"] < 1e-6
    assert biased["ks_p_value"] < 1e-6


# -- baselines with known answers ----------------------------------------------------------
def _hand_history() -> pd.DataFrame:
    rows = []
    spec = {  # unit: (segment, type, intensity, outcomes over 2 periods)
        "u1": ("a", "t", 1.0, (3, 5)),
        "u2": ("a", "t", 1.0, (4, 4)),
        "u3": ("b", "t", 2.0, (9, 9)),  # other intensity: not used
        "u4": ("a", "", 0.0, (1, 2)),
        "u5": ("b", "", 0.0, (2, 2)),
        "u6": ("b", "", 0.0, (0, 3)),
        "u7": ("b", "t", 1.0, (6, 2)),
    }
    for i, (unit, (seg, kind, s, ys)) in enumerate(spec.items()):
        for period, y in enumerate(ys):
            rows.append(
                {
                    "unit_id": unit,
                    "segment": seg,
                    "x1": float(i),
                    "c": "p" if i % 2 else "q",
                    "intervention_type": kind,
                    "intensity": s,
                    "period": period,
                    "outcome": y,
                }
            )
    return pd.DataFrame(rows)


def test_naive_difference_matches_hand_computation() -> None:
    data = unit_data(_hand_history(), ["x1"], ["c"])
    out = naive_difference(data, ["t"], 1.0, {"all": None, "seg:a": "a"})["t"]
    treated = np.array([4.0, 4.0, 4.0])  # u1, u2, u7 per-period means
    control = np.array([1.5, 2.0, 1.5])  # u4, u5, u6
    assert out["all"].ate == pytest.approx(treated.mean() - control.mean())
    se = math.sqrt(treated.var(ddof=1) / 3 + control.var(ddof=1) / 3)
    assert out["all"].se == pytest.approx(se)
    assert out["all"].control_mean == pytest.approx(control.mean())
    # segment a has one untreated unit: no estimate
    assert not out["seg:a"].estimable


def test_fit_glm_gaussian_is_weighted_least_squares() -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(200), rng.standard_normal((200, 2))])
    m = rng.integers(1, 5, 200).astype(float)
    ybar = x @ np.array([1.0, 2.0, -0.5]) + rng.standard_normal(200)
    fit = fit_glm(x, ybar * m, m, "gaussian")
    w = np.sqrt(m)
    expected = np.linalg.lstsq(x * w[:, None], ybar * w, rcond=None)[0]
    np.testing.assert_allclose(fit.coef, expected, atol=1e-10)
    assert fit.converged


@pytest.mark.parametrize("family", ["bernoulli", "poisson"])
def test_fit_glm_solves_the_score_equations(family: str) -> None:
    rng = np.random.default_rng(1)
    n = 500
    x = np.column_stack([np.ones(n), rng.standard_normal((n, 2)), np.zeros(n)])
    m = np.full(n, 3.0)
    eta = x[:, :3] @ np.array([-0.5, 0.8, -0.3])
    if family == "bernoulli":
        y = rng.binomial(3, special.expit(eta)).astype(float)
        mu = special.expit(x @ np.nan_to_num(fit_glm(x, y, m, family).coef))
    else:
        y = rng.poisson(3 * np.exp(eta)).astype(float)
        mu = np.exp(x @ np.nan_to_num(fit_glm(x, y, m, family).coef))
    fit = fit_glm(x, y, m, family)
    assert fit.converged
    assert np.isnan(fit.coef[3])  # all-zero column dropped
    score = x[:, :3].T @ (y - m * mu)
    np.testing.assert_allclose(score, 0.0, atol=1e-6)
    np.testing.assert_allclose(fit.coef[:3], [-0.5, 0.8, -0.3], atol=0.15)


@pytest.fixture(scope="module")
def big_world() -> object:
    """A large bernoulli world whose no-pooling GLM is correctly specified."""
    return generate_synthetic_twin_data(
        "hcp",
        n_units=12000,
        n_periods=4,
        brands=("B",),
        n_segments=3,
        n_numeric=2,
        n_categorical=1,
        n_intervention_types=2,
        effect_means=[0.4, -0.2],
        effect_segment_sd=0.2,
        interaction_sd=0.0,
        segment_concentration=50.0,
        random_seed=5,
    )


def test_glm_baselines_recover_a_large_sample_effect(big_world: object) -> None:
    sd = big_world
    data = unit_data(sd.data, sd.numeric_features, sd.categorical_features)  # type: ignore[attr-defined]
    pop = sd.population("B")  # type: ignore[attr-defined]
    twins = pop.sample(3000, replace=True, random_state=0).reset_index(drop=True)
    groups = {"all": np.ones(len(twins), bool)}
    for seg in sorted(twins["segment"].unique()):
        groups[seg] = (twins["segment"] == seg).to_numpy()
    truth = sd.truth  # type: ignore[attr-defined]
    unpooled = no_pooling_glm(data, "bernoulli", list(truth.intervention_types), 1.0, twins, groups)
    pooled = complete_pooling_glm(
        data, "bernoulli", list(truth.intervention_types), 1.0, twins, groups
    )
    for kind in truth.intervention_types:
        true_ate = truth.ate(twins, kind, 1.0).ate
        est = unpooled[kind]["all"]
        assert est.se < 0.02
        assert abs(est.ate - true_ate) < 3.5 * est.se
        for seg in truth.segments:
            seg_est = unpooled[kind][seg]
            seg_true = truth.ate(twins[groups[seg]], kind, 1.0).ate
            assert abs(seg_est.ate - seg_true) < 3.5 * seg_est.se
        # complete pooling ignores the segment spread of 0.2: still close overall
        assert abs(pooled[kind]["all"].ate - true_ate) < 0.03


def test_linear_dml_recovers_a_large_sample_effect(big_world: object) -> None:
    if not os.environ.get("CI"):  # CI installs the calibration extra: there it must run
        pytest.importorskip("econml")
    sd = big_world
    data = unit_data(sd.data, sd.numeric_features, sd.categorical_features)  # type: ignore[attr-defined]
    twins = sd.population("B").sample(2000, replace=True, random_state=1)  # type: ignore[attr-defined]
    twins = twins.reset_index(drop=True)
    truth = sd.truth  # type: ignore[attr-defined]
    out = linear_dml(
        data, list(truth.intervention_types), 1.0, twins, {"all": np.ones(len(twins), bool)}
    )
    assert out is not None
    for kind in truth.intervention_types:
        est = out[kind]["all"]
        assert abs(est.ate - truth.ate(twins, kind, 1.0).ate) < max(4 * est.se, 0.02)


# -- worlds and the report --------------------------------------------------------------------
def test_world_configs_are_reproducible_and_varied() -> None:
    a = draw_world_configs(48, random_seed=7)
    assert a == draw_world_configs(48, random_seed=7)
    assert sum(c.confounded for c in a) == round(48 * 0.3)
    hidden = [c for c in a if c.hidden_confounder]
    assert all(c.confounded for c in hidden) and len(hidden) == round(48 * 0.3) // 2
    assert {c.assignment for c in a} == {"random", "confounded_observed", "confounded_hidden"}
    assert {c.family for c in a} == {"bernoulli", "poisson", "neg_binomial", "gaussian"}
    assert {c.effect_design for c in a} == {"mix", "zero", "prior"}
    for c in a:
        if c.effect_design == "prior":
            assert not c.confounded and c.family != "gaussian"
        if c.effect_design == "zero":
            assert set(c.effect_means) == {0.0} and c.effect_segment_sd == 0.0
        assert len(c.effect_means) == c.n_intervention_types == len(c.type_weights)
    means = [m for c in a if c.effect_design == "mix" for m in c.effect_means]
    assert min(means) < 0 < max(means) and 0.0 in means
    assert any(c.rare_type is not None for c in a)
    assert len({c.seed for c in a}) == 48
    for c in a:
        if c.family == "neg_binomial":
            assert c.n_periods == 6 and c.n_units == 1500
        else:
            assert c.n_periods == 12 and 2000 <= c.n_units <= 6000


def test_world_config_sizes_checked() -> None:
    with pytest.raises(ValueError, match="n_units"):
        draw_world_configs(4, n_units=(500, 100))
    with pytest.raises(ValueError, match="n_periods"):
        draw_world_configs(4, n_periods=0)
    small = draw_world_configs(8, n_units=(100, 200), n_periods=3)
    assert all(100 <= c.n_units <= 200 and c.n_periods == 3 for c in small)


def test_prior_effects_follow_the_model_prior() -> None:
    rng = np.random.default_rng(0)
    draws = [prior_effects(3, 4, rng) for _ in range(4000)]
    mean_effect = np.array([np.mean(d["effect_means"]) for d in draws])  # = mu_tau
    assert stats.kstest(mean_effect, stats.norm(0.0, 0.5).cdf).pvalue > 0.001
    seg_sd = np.array([d["effect_segment_sd"] for d in draws])
    assert seg_sd.mean() == pytest.approx(0.2, rel=0.05)  # Gamma(2, 2 / 0.2) mean
    assert all(d["n_interacting"] == 4 for d in draws)


def _fake_run(n_worlds: int, coverage_95: float) -> CalibrationRun:
    """Records as a run would write them, from a seeded rng (nothing fitted)."""
    rng = np.random.default_rng(11)
    worlds, effects = [], []
    for w in range(n_worlds):
        confounded = w % 4 == 3
        worlds.append(
            {
                "world_id": w,
                "family": "poisson",
                "confounded": confounded,
                "effect_design": "prior" if w % 2 else "mix",
                "error": None,
                "seconds": 10.0,
                "diagnostics_passed": True,
                "min_ess_bulk": 500.0,
                "max_r_hat": 1.0,
                "divergences": 0,
            }
        )
        true_ate = float(rng.normal(0.1, 0.1))
        rec = {
            "world_id": w,
            "family": "poisson",
            "confounded": confounded,
            "effect_design": worlds[-1]["effect_design"],
            "primary": True,
            "rare": False,
            "true_ate": true_ate,
            "true_control_mean": 1.0,
            "true_lift": true_ate,
            "diagnostics_passed": True,
            "twin_ate": true_ate + 0.01,
            "twin_rel_error": 0.05,
            "twin_abs_error": 0.01,
            "twin_sbc_rank": int(rng.integers(0, 100)),
            "twin_decision": "deploy" if true_ate > 0.05 else "skip",
            "twin_threshold_decision": "deploy" if true_ate > 0.05 else "skip",
            "power_classic": 0.8,
            "power_assurance": 0.85,
            "power_adjusted": 0.75,
            "naive_ate": np.nan if w == 0 else true_ate,
            "naive_rel_error": np.nan if w == 0 else 0.5,
            "naive_abs_error": np.nan if w == 0 else 0.1,
            "naive_threshold_decision": "" if w == 0 else "deploy",
        }
        for lv in INTERVAL_LEVELS:
            rec[f"twin_hit_{lv:g}"] = bool(rng.random() < (coverage_95 if lv == 0.95 else lv))
            rec[f"naive_hit_{lv:g}"] = np.nan if w == 0 else True
        effects.append(rec)
    return CalibrationRun(
        worlds=pd.DataFrame(worlds),
        effects=pd.DataFrame(effects),
        segments=pd.DataFrame(),
        settings=RunSettings(),
        wall_seconds=60.0,
        workers=1,
    )


def test_summary_acceptance_and_decisions_on_fake_records() -> None:
    run = _fake_run(160, coverage_95=0.95)
    summary = summarize(run)
    acc = summary["acceptance"]
    assert acc["n_worlds"] == 120 and acc["n_worlds_ok"]
    assert acc["median_rel_error"]["value"] == pytest.approx(0.05)
    assert acc["median_rel_error"]["met"]
    unconf = run.effects[~run.effects["confounded"]]
    cov95 = unconf["twin_hit_0.95"].mean()
    assert acc["coverage_0.95"]["value"] == pytest.approx(cov95)
    assert acc["coverage_0.95"]["met"] == (0.91 <= cov95 <= 0.99)
    naive = summary["by_assignment"]["random"]["naive"]
    assert naive["estimable"] == naive["n"] - 1
    dec = summary["by_assignment"]["random"]["twin"]["decisions"]
    assert dec["false_deploy"]["count"] == 0 and dec["false_skip"]["count"] == 0
    assert summary["sbc"]["n"] == int((unconf["effect_design"] == "prior").sum())
    assert summary["sample_size"]["random"]["classic"]["median_power"] == 0.8
    text = to_markdown(summary)
    assert "## Acceptance" in text and "| 95% interval coverage |" in text
    bad = summarize(_fake_run(160, coverage_95=0.6))["acceptance"]
    assert not bad["coverage_0.95"]["met"]


@pytest.mark.slow
def test_small_calibration_run_writes_the_report(tmp_path: object) -> None:
    configs = draw_world_configs(12, random_seed=3, n_units=(250, 300))
    # a confounded bernoulli world with its strongest baseline feature hidden, a poisson
    # and a gaussian world
    assert configs[0].confounded
    chosen = [replace(configs[0], hidden_confounder=True), configs[1], configs[2]]
    run = run_calibration(
        chosen, RunSettings(draws=100, tune=100, chains=2, cores=1, twin_count=300), workers=1
    )
    assert run.worlds["error"].isna().all(), run.worlds["error"].tolist()
    assert set(run.effects["world_id"]) == {c.world_id for c in chosen}
    assert run.worlds.loc[0, "hidden_feature"] in (
        "years_in_practice",
        "patient_volume",
        "digital_engagement",
    )
    assert run.worlds.loc[0, "assignment"] == "confounded_hidden"
    for col in ("twin_ate", "twin_hit_0.95", "twin_width_0.95", "no_pooling_ate", "true_ate"):
        assert col in run.effects
    assert np.isfinite(run.effects["twin_ate"]).all()
    assert not run.segments.empty
    files = write_report(run, tmp_path)  # type: ignore[arg-type]
    for name in ("markdown", "json", "coverage", "errors", "sbc_ranks", "effects"):
        assert files[name].exists() and files[name].stat().st_size > 0
    report = json.loads(files["json"].read_text())
    assert {"meta", "acceptance", "by_assignment", "sbc", "sample_size"} <= set(report)
    assert report["meta"]["n_worlds"] == 3
    assert "twin" in report["by_assignment"]["random"]
    assert files["coverage"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = read_run(tmp_path)  # type: ignore[arg-type]
    assert again.wall_seconds == pytest.approx(run.wall_seconds)
    assert summarize(again)["acceptance"] == report["acceptance"]


def _diag(bulk: float, tail: float, r_hat: float = 1.0, div: int = 0, bfmi: float = 0.9) -> Any:
    from bayestwin.model.fitted import Diagnostics

    t = DiagnosticThresholds()
    passed = bulk >= t.min_ess_bulk and tail >= t.min_ess_tail and r_hat <= t.max_r_hat
    return Diagnostics(r_hat, bulk, tail, div, bfmi, passed and div == 0 and bfmi >= 0.3)


def test_gate_draws_scale_with_the_worst_ess() -> None:
    t = DiagnosticThresholds()  # 400 bulk and tail
    # bulk 100 of 500 draws: 4x the draws, times the margin
    assert gate_draws_needed(_diag(100, 300), t, 500, 10_000) == math.ceil(GATE_MARGIN * 2000)
    # the tail is the worse one
    assert gate_draws_needed(_diag(350, 200), t, 500, 10_000) == math.ceil(GATE_MARGIN * 1000)
    assert gate_draws_needed(_diag(100, 300), t, 500, 1500) == 1500  # capped
    # nearly there: still at least one more draw than before
    assert gate_draws_needed(_diag(399.9, 500), t, 500, 10_000) == math.ceil(
        GATE_MARGIN * 500 * 400 / 399.9
    )
    # r_hat alone: twice the draws, with the margin
    assert gate_draws_needed(_diag(900, 900, r_hat=1.03), t, 500, 10_000) == 1300


def test_gate_draws_refuse_what_more_draws_cannot_mend() -> None:
    t = DiagnosticThresholds()
    assert gate_draws_needed(_diag(900, 900), t, 500, 10_000) is None  # passed
    assert gate_draws_needed(_diag(100, 100), t, 500, 0) is None  # refits off
    assert gate_draws_needed(_diag(100, 100), t, 500, 500) is None  # no room
    assert gate_draws_needed(_diag(100, 100, div=3), t, 500, 10_000) is None
    assert gate_draws_needed(_diag(100, 100, bfmi=0.1), t, 500, 10_000) is None


@pytest.mark.slow
def test_a_fit_that_misses_the_gate_is_sampled_again_with_more_draws() -> None:
    config = draw_world_configs(3, random_seed=5, n_units=(250, 300))[2]  # gaussian
    run = RunSettings(
        draws=100, tune=150, chains=2, cores=1, twin_count=300, baselines=False, gate_draws=400
    )
    result = run_calibration([config], run, workers=1)
    world = result.worlds.iloc[0]
    assert world["error"] is None or pd.isna(world["error"]), world["error"]
    # 2 x 100 draws of a model with a hundred parameters miss 400 bulk ESS
    assert world["first_min_ess_bulk"] < 400
    assert world["fit_attempts"] == 2
    assert 100 < world["draws_used"] <= 400
    assert world["min_ess_bulk"] > world["first_min_ess_bulk"]
    widths = result.effects["twin_width_0.95"]
    # an equal-tailed 95% interval of roughly normal draws is about 3.92 sd wide
    assert ((widths / result.effects["twin_sd"]).between(3.0, 5.0)).all()
