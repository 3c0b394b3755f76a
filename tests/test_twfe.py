"""Two-way fixed effects baseline: exact on a noiseless staggered panel, honest SEs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayestwin.calibration.twfe import demean_two_way, two_way_fixed_effects


def _panel(noise: float, seed: int = 0, units: int = 300, periods: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    unit_level = rng.normal(0, 2, units)
    period_level = rng.normal(0, 1, periods)
    start = rng.integers(2, periods + 3, units)  # some never start
    kind = np.where(rng.random(units) < 0.5, "email", "call")
    rows = []
    for i in range(units):
        for t in range(periods):
            on = t >= start[i]
            effect = {"email": 0.7, "call": -0.3}[kind[i]] if on else 0.0
            y = unit_level[i] + period_level[t] + effect + noise * rng.standard_normal()
            rows.append((f"u{i}", t, kind[i] if on else "", 1.0 if on else 0.0, y))
    cols = ["unit_id", "period", "intervention_type", "intensity", "outcome"]
    return pd.DataFrame(rows, columns=cols)


def test_exact_on_a_noiseless_staggered_panel_whose_timing_follows_the_level() -> None:
    df = _panel(noise=0.0)
    groups = {"all": np.ones(5, bool)}
    est = two_way_fixed_effects(df, ["email", "call", "none"], 1.0, groups, 0.0)
    assert est["email"]["all"].ate == pytest.approx(0.7, abs=1e-8)
    assert est["call"]["all"].ate == pytest.approx(-0.3, abs=1e-8)
    assert not est["none"]["all"].estimable


def test_demeaning_removes_both_sets_of_means() -> None:
    df = _panel(noise=1.0, seed=3)
    unit = pd.factorize(df["unit_id"])[0]
    period = df["period"].to_numpy()
    out = demean_two_way(df[["outcome"]].to_numpy(), unit, period)
    by_unit = pd.Series(out[:, 0]).groupby(unit).mean()
    by_period = pd.Series(out[:, 0]).groupby(period).mean()
    assert np.abs(by_unit).max() < 1e-8 and np.abs(by_period).max() < 1e-8


def test_clustered_se_matches_the_spread_over_seeds() -> None:
    groups = {"all": np.ones(1, bool)}
    draws, ses = [], []
    for seed in range(40):
        est = two_way_fixed_effects(_panel(1.0, seed), ["email"], 1.0, groups, 0.0)
        draws.append(est["email"]["all"].ate)
        ses.append(est["email"]["all"].se)
    # 40 replications: the sd of an sd estimate is about 11%; allow 30%
    assert np.mean(ses) == pytest.approx(np.std(draws, ddof=1), rel=0.3)
    assert abs(np.mean(draws) - 0.7) < 3 * np.std(draws) / np.sqrt(40)
