"""Calibration world kinds: their configurations, records and the per-kind report."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from bayestwin.calibration import (
    KIND_LABELS,
    WORLD_KINDS,
    CalibrationRun,
    RunSettings,
    by_kind,
    by_type_count,
    draw_kind_configs,
    draw_world_configs,
    parse_kinds,
    read_run,
    run_calibration,
    summarize,
    to_markdown,
    write_report,
)
from bayestwin.calibration.kinds import PANEL_KINDS
from bayestwin.calibration.records import unit_treatment
from bayestwin.calibration.run import _draw_history
from bayestwin.synthetic import generate_synthetic_twin_data

# -- configurations ----------------------------------------------------------------------------


def test_kind_configs_are_reproducible_and_independent_of_the_other_kinds() -> None:
    every = draw_kind_configs(WORLD_KINDS, 3)
    assert every == draw_kind_configs(WORLD_KINDS, 3)
    assert len(every) == 3 * len(WORLD_KINDS)
    assert len({c.world_id for c in every}) == len({c.seed for c in every}) == len(every)
    alone = draw_kind_configs(["staggered"], 3)
    assert alone == [c for c in every if c.kind == "staggered"]
    assert [c.kind for c in every[: len(WORLD_KINDS)]] == list(WORLD_KINDS)  # interleaved
    assert set(KIND_LABELS) == set(WORLD_KINDS)


def test_each_kind_adds_its_process() -> None:
    configs = {c.kind: c for c in draw_kind_configs(WORLD_KINDS, 1)}
    base = configs["in_model"]
    assert base.panel_arguments() == draw_world_configs(1)[0].panel_arguments()
    assert base.treatment_fixed and base.unit_icc == 0.0 and base.confounding == 0.0
    for kind in PANEL_KINDS:
        assert 0.2 <= configs[kind].unit_icc <= 0.5
    assert configs["unit_intercept_fixed"].adoption == "fixed"
    assert configs["staggered"].adoption == "staggered"
    assert configs["on_off"].adoption == "on_off"
    assert configs["trend_season"].trend != 0.0 and configs["trend_season"].season_amplitude > 0
    assert 1.0 <= configs["hidden_timing_confounder"].timing_confounding <= 2.0
    assert configs["threshold_effect"].threshold_effect != 0.0
    drift = configs["time_varying_confounder"]
    assert drift.adoption == "staggered" and drift.unit_icc > 0
    assert drift.unit_trend_sd > 0 and 1.0 <= drift.trend_confounding <= 2.0
    assert configs["heavy_tail"].family == "gaussian" and configs["heavy_tail"].noise_df
    two = configs["synthetic_default_two_types"]
    assert two.n_intervention_types == 2 and two.effect_means[0] > two.effect_means[1] > 0
    heavy = draw_kind_configs(["heavy_tail"], 4)
    assert {c.family for c in heavy} == {"gaussian"}
    fams = {c.family for c in draw_kind_configs(["staggered"], 3)}
    assert fams == {"bernoulli", "poisson", "gaussian"}


def test_kind_arguments_are_checked() -> None:
    assert parse_kinds("all") == WORLD_KINDS
    assert parse_kinds("staggered, on_off,staggered") == ("staggered", "on_off")
    with pytest.raises(ValueError, match="unknown world kind"):
        parse_kinds("staggered,bogus")
    with pytest.raises(ValueError, match="unknown world kind"):
        draw_kind_configs(["bogus"], 1)
    with pytest.raises(ValueError, match="n_periods"):
        draw_kind_configs(["staggered"], 1, n_periods=2)


def test_a_kind_config_draws_its_history() -> None:
    cfg = draw_kind_configs(["staggered"], 1, n_units=(80, 80), n_periods=6)[0]
    sd = _draw_history(cfg)
    assert sd.truth.unit_effects is not None and sd.truth.horizon == 6
    on = sd.data.pivot(index="unit_id", columns="period", values="intensity") > 0
    assert not on[0].any() and on.iloc[:, -1].any()


def test_unit_treatment_reads_a_unit_treated_mid_history() -> None:
    sd = generate_synthetic_twin_data(
        "hcp", n_units=200, n_periods=6, brands=("A",), adoption="staggered", random_seed=1
    )
    per_unit = unit_treatment(sd.data)
    ever = sd.data.groupby("unit_id")["intensity"].max() > 0
    assert (per_unit["intervention_type"].ne("") == ever.loc[per_unit.index]).all()
    assert (per_unit.loc[ever[ever].index, "intensity"] > 0).all()
    fixed = generate_synthetic_twin_data("hcp", n_units=50, n_periods=3, brands=("A",))
    old = fixed.data.groupby("unit_id")[["intervention_type", "intensity", "segment"]].first()
    pd.testing.assert_frame_equal(unit_treatment(fixed.data), old)


# -- the per-kind summary ------------------------------------------------------------------------


def _fake_kind_run() -> CalibrationRun:
    """Two kinds of records (nothing fitted): one honest, one overconfident."""
    rng = np.random.default_rng(5)
    worlds, effects = [], []
    for w in range(40):
        kind = "in_model" if w % 2 else "staggered"
        sd = 0.02
        err = rng.normal(0.0, sd if kind == "in_model" else 4 * sd)
        passed = w % 4 != 0
        worlds.append(
            {
                "world_id": w,
                "kind": kind,
                "family": "poisson",
                "confounded": False,
                "effect_design": "mix",
                "error": None,
                "seconds": 5.0,
                "diagnostics_passed": passed,
                "min_ess_bulk": 300.0 + w,
                "max_r_hat": 1.0,
                "divergences": 2 if w % 5 == 0 else 0,
                "n_intervention_types": 2 + w % 3,
            }
        )
        rec = {
            "world_id": w,
            "kind": kind,
            "family": "poisson",
            "confounded": False,
            "effect_design": "mix",
            "primary": True,
            "rare": False,
            "true_ate": 0.1,
            "true_control_mean": 2.0,
            "true_lift": 0.05,
            "error_floor": 0.1,
            "diagnostics_passed": passed,
            "twin_ate": 0.1 + err,
            "twin_sd": sd,
            "twin_rel_error": abs(err) / 0.1,
            "twin_abs_error": abs(err) / 2.0,
            "twin_sbc_rank": 50,
            "twin_decision": "deploy",
            "twin_threshold_decision": "deploy",
            "power_classic": 0.8,
            "power_assurance": 0.8,
            "power_adjusted": 0.8,
        }
        for lv, z in ((0.5, 0.674), (0.8, 1.2816), (0.95, 1.96)):
            rec[f"twin_hit_{lv:g}"] = bool(abs(err) <= z * sd)
        effects.append(rec)
    return CalibrationRun(
        worlds=pd.DataFrame(worlds),
        effects=pd.DataFrame(effects),
        segments=pd.DataFrame(),
        settings=RunSettings(),
        wall_seconds=10.0,
        workers=1,
    )


def test_by_kind_reports_each_kind_apart() -> None:
    run = _fake_kind_run()
    block = by_kind(run.effects, run.worlds)
    assert list(block) == ["in_model", "staggered"]  # the order of WORLD_KINDS
    eff = run.effects
    for kind, k in block.items():
        rows = eff[eff["kind"] == kind]
        f = k["primary"]
        assert k["n_worlds"] == f["n"] == 20
        assert f["coverage"]["0.95"]["coverage"] == pytest.approx(rows["twin_hit_0.95"].mean())
        lo, hi = f["coverage"]["0.95"]["lower"], f["coverage"]["0.95"]["upper"]
        assert lo <= f["coverage"]["0.95"]["coverage"] <= hi
        err = (rows["twin_ate"] - rows["true_ate"]) / 2.0
        ratio = np.sqrt(np.mean((rows["twin_sd"] / 2.0) ** 2)) / np.sqrt(np.mean(err**2))
        assert f["sd_ratio"] == pytest.approx(ratio)
        assert f["rms_z"] == pytest.approx(1.0 / ratio)  # one sd for every world
        assert f["gate_passed"]["hits"] == int(rows["diagnostics_passed"].sum())
        gated = rows[rows["diagnostics_passed"]]
        assert f["coverage_gate_passed"]["0.8"]["n"] == len(gated)
        assert f["coverage_gate_passed"]["0.8"]["coverage"] == pytest.approx(
            gated["twin_hit_0.8"].mean()
        )
        assert f["median_rel_error"] == pytest.approx(rows["twin_rel_error"].median())
        # every record: sd 0.02 over max(|0.1|, floor 0.1), times the normal's median |Z|
        assert f["implied_rel_error"] == pytest.approx(0.6744897501960817 * 0.02 / 0.1)
    assert 0.6 < block["in_model"]["primary"]["sd_ratio"] < 1.6
    assert block["staggered"]["primary"]["sd_ratio"] < 0.5


def test_the_report_gives_each_number_of_types_apart() -> None:
    run = _fake_kind_run()
    rows = by_type_count(run.effects, run.worlds)
    w = run.worlds
    assert [r["types"] for r in rows] == [2, 3, 4]
    for r in rows:
        mine = w[w["n_intervention_types"] == r["types"]]
        assert r["n_worlds"] == len(mine)
        assert r["divergent_fits"] == int((mine["divergences"] > 0).sum())
        eff = run.effects[run.effects["world_id"].isin(mine["world_id"])]
        assert r["primary"]["n"] == len(eff)
        assert r["primary"]["coverage"]["0.95"]["coverage"] == pytest.approx(
            eff["twin_hit_0.95"].mean()
        )
    text = to_markdown(summarize(run))
    assert "## By number of intervention types (every kind, primary targets)" in text
    n2 = rows[0]
    assert f"| 2 | {n2['n_worlds']} | {n2['divergent_fits']} |" in text


def test_summary_and_markdown_with_kinds() -> None:
    run = _fake_kind_run()
    summary = summarize(run)
    assert set(summary["by_kind"]) == {"in_model", "staggered"}
    # the other sections read the in-model worlds only
    assert summary["acceptance"]["n_worlds"] == 20
    text = to_markdown(summary)
    assert "## By world kind (twin model)" in text
    assert "| unit intercept, treatment starts mid-history (`staggered`) | 20 |" in text
    assert "| median rel. error | implied by the sd | sd ratio |" in text
    assert "The sections below read the `in_model` worlds only." in text
    # a run of in-model worlds only (as draw_world_configs draws) reads as before
    legacy = replace(
        run, worlds=run.worlds.assign(kind="in_model"), effects=run.effects.assign(kind="in_model")
    )
    plain = summarize(legacy)
    assert plain["acceptance"]["n_worlds"] == 40 and list(plain["by_kind"]) == ["in_model"]
    assert "## By world kind" not in to_markdown(plain)


# -- a small real run ----------------------------------------------------------------------------


@pytest.mark.slow
def test_small_staggered_calibration_run_reports_the_kind(tmp_path: object) -> None:
    configs = draw_kind_configs(["in_model", "staggered"], 1, n_units=(200, 200), n_periods=5)
    run = run_calibration(
        configs, RunSettings(draws=100, tune=100, chains=2, cores=1, twin_count=300), workers=1
    )
    assert run.worlds["error"].isna().all(), run.worlds["error"].tolist()
    assert set(run.effects["kind"]) == {"in_model", "staggered"}
    stag = run.effects[run.effects["kind"] == "staggered"]
    assert stag["treated_units"].gt(0).all()
    assert "no_pooling_ate" not in stag or stag["no_pooling_ate"].isna().all()
    files = write_report(run, tmp_path)  # type: ignore[arg-type]
    report = json.loads(files["json"].read_text())
    assert report["by_kind"]["staggered"]["primary"]["n"] == 1
    assert "## By world kind" in files["markdown"].read_text()
    again = summarize(read_run(tmp_path))  # type: ignore[arg-type]
    assert again["by_kind"]["staggered"]["primary"]["n"] == 1
