"""The panel options of the synthetic ground truth, and the history's period check."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from bayestwin.errors import InvalidInputError
from bayestwin.model.history import check_history
from bayestwin.model.spec import default_spec
from bayestwin.synthetic import SyntheticTwinData, dose_response, generate_synthetic_twin_data
from bayestwin.synthetic.panel import PanelOptions, link_residual_variance

# -- the defaults draw what they always drew ---------------------------------------------------

#: Fingerprints of histories drawn before the panel options existed (same seeds).
PINNED: dict[str, tuple[dict[str, Any], str, tuple[int, int], float, float]] = {
    "default": (
        {},
        "aee8f2a34a4a2caf1e5bd39abe1cc5c8",
        (8000, 13),
        0.04225966102353045,
        0.21178551443245147,
    ),
    "bern_small": (
        {"n_units": 200, "n_periods": 3, "random_seed": 7},
        "6a17aa38f9b50414d4d36ce4be8c05f8",
        (1200, 13),
        0.04821171788115094,
        0.16682284833456731,
    ),
    "poisson_conf": (
        {
            "twin_type": "patient",
            "n_units": 300,
            "n_periods": 5,
            "confounding": 1.0,
            "random_seed": 11,
            "brands": ("A",),
        },
        "76dc432e565704467a383a5a1294a68e",
        (1500, 13),
        0.6740188930184106,
        4.0595703168386645,
    ),
    "gauss": (
        {
            "twin_type": "territory",
            "n_units": 150,
            "n_periods": 6,
            "random_seed": 3,
            "n_intervention_types": 2,
            "type_weights": [1, 0.1],
        },
        "7e8f252e6acc2eb413aeab063262c68f",
        (1800, 13),
        8.012359873396887,
        87.13634140438887,
    ),
    "nb": (
        {"twin_type": "patient", "family": "neg_binomial", "n_units": 100, "random_seed": 5},
        "b2bb4c4cb56f6ef5d88ee0e68a75ec65",
        (800, 13),
        0.7357071144318702,
        3.295575511178311,
    ),
}


def _fingerprint(data: pd.DataFrame) -> str:
    return hashlib.sha256(
        pd.util.hash_pandas_object(data, index=True).to_numpy().tobytes()
    ).hexdigest()


@pytest.mark.parametrize("case", sorted(PINNED))
def test_default_output_is_unchanged(case: str) -> None:
    kwargs, digest, shape, ate, control = PINNED[case]
    kw = dict(kwargs)
    sd = generate_synthetic_twin_data(kw.pop("twin_type", "hcp"), **kw)
    assert sd.data.shape == shape
    assert _fingerprint(sd.data)[:32] == digest
    truth = sd.truth
    effect = truth.ate(sd.population(next(iter(truth.brands))), truth.intervention_types[0])
    # the data are pinned bit for bit; the truth's means are sums whose last bit may
    # follow the BLAS and SIMD path, so they are pinned to 1e-12
    assert effect.ate == pytest.approx(ate, rel=1e-12, abs=1e-15)
    assert effect.control_mean == pytest.approx(control, rel=1e-12)
    assert truth.unit_effects is None and truth.horizon == kwargs.get("n_periods", 4)


def test_panel_options_keep_features_and_assignment() -> None:
    """The options draw from their own stream: a seed's units (and assignment) stay put."""
    base: dict[str, Any] = {"n_units": 300, "n_periods": 4, "random_seed": 2, "brands": ("A",)}
    plain = generate_synthetic_twin_data("patient", **base)
    icc = generate_synthetic_twin_data("patient", **base, unit_icc=0.3, threshold_effect=0.2)
    same = [c for c in plain.data.columns if c != "outcome"]
    pd.testing.assert_frame_equal(plain.data[same], icc.data[same])
    assert not plain.data["outcome"].equals(icc.data["outcome"])


# -- unit random intercepts ----------------------------------------------------------------------


def _one_brand(**kwargs: Any) -> SyntheticTwinData:
    base: dict[str, Any] = {"brands": ("A",), "random_seed": 4}
    return generate_synthetic_twin_data(**{**base, **kwargs})


def test_unit_icc_recovers_from_gaussian_outcomes() -> None:
    """One-way ANOVA of the outcome net of the features recovers the ICC (+- 0.04)."""
    icc, units, periods = 0.4, 2000, 10
    sd = _one_brand(
        twin_type="territory", n_units=units, n_periods=periods, unit_icc=icc, treated_fraction=0
    )
    truth, data = sd.truth, sd.data
    eta = truth.linear_predictor(data, None, unit_effects=False)
    resid = data["outcome"].to_numpy() / truth.outcome_scale - eta
    by_unit = pd.Series(resid).groupby(data["unit_id"].to_numpy())
    within = float(by_unit.var(ddof=1).mean())
    between = float(by_unit.mean().var(ddof=1)) - within / periods
    assert within == pytest.approx(truth.dispersion**2, rel=0.03)  # type: ignore[operator]
    assert between / (between + within) == pytest.approx(icc, abs=0.04)


@pytest.mark.parametrize(
    ("twin_type", "family"),
    [("hcp", "bernoulli"), ("patient", "poisson"), ("patient", "neg_binomial")],
)
def test_unit_effects_have_the_sd_of_the_icc(twin_type: str, family: str) -> None:
    sd = _one_brand(twin_type=twin_type, family=family, n_units=3000, n_periods=2, unit_icc=0.3)
    truth = sd.truth
    assert truth.unit_effects is not None and len(truth.unit_effects) == 3000
    v = link_residual_variance(family, truth.dispersion)  # type: ignore[arg-type]
    assert truth.unit_sd == pytest.approx(math.sqrt(0.3 / 0.7 * v))
    var_u = float(truth.unit_effects.var())
    assert var_u / (var_u + v) == pytest.approx(0.3, abs=0.03)
    assert set(truth.unit_effects.index) == set(sd.data["unit_id"])


def test_link_residual_variances() -> None:
    assert link_residual_variance("bernoulli", None) == pytest.approx(math.pi**2 / 3)
    assert link_residual_variance("gaussian", 0.25) == pytest.approx(0.0625)
    assert link_residual_variance("poisson", None) == pytest.approx(math.log1p(math.exp(-1.0)))
    nb = math.log1p(math.exp(-1.0) + 1 / 5)
    assert link_residual_variance("neg_binomial", 5.0) == pytest.approx(nb)


def test_unknown_units_average_over_the_unit_distribution() -> None:
    sd = _one_brand(twin_type="hcp", n_units=200, n_periods=2, unit_icc=0.4)
    truth = sd.truth
    units = sd.population("A").head(5)
    eta = truth.linear_predictor(units, None, unit_effects=False)
    known = truth.expected_outcome(units, None)
    u = truth.unit_effects.loc[units["unit_id"]].to_numpy()  # type: ignore[union-attr]
    np.testing.assert_allclose(known, special.expit(eta + u))
    stranger = units.assign(unit_id=[f"new-{i}" for i in range(5)])
    draws = np.random.default_rng(0).normal(0.0, truth.unit_sd, 200_000)
    mc = special.expit(eta[:, None] + draws[None, :]).mean(axis=1)
    np.testing.assert_allclose(truth.expected_outcome(stranger, None), mc, atol=2e-3)
    np.testing.assert_allclose(
        truth.expected_outcome(units.drop(columns="unit_id"), None), mc, atol=2e-3
    )


# -- adoption over time --------------------------------------------------------------------------


def _treated(data: pd.DataFrame) -> pd.DataFrame:
    """Units x periods: treated (intensity > 0), periods in order."""
    wide = data.pivot(index="unit_id", columns="period", values="intensity")
    return (wide > 0).sort_index(axis=1)


def test_staggered_units_are_untreated_then_treated() -> None:
    sd = _one_brand(n_units=600, n_periods=8, unit_icc=0.3, adoption="staggered", min_pre_periods=2)
    on = _treated(sd.data).to_numpy()
    ever = on.any(axis=1)
    assert 0.3 < ever.mean() < 0.7  # treated_fraction 0.5; the rest never treated
    start = on.argmax(axis=1)[ever]
    assert (start >= 2).all() and set(start) == set(range(2, 8))
    # once on, on for good; and every adopter has untreated periods first
    assert (np.diff(on.astype(int), axis=1) >= 0).all()
    assert not on[:, :2].any()
    # a unit's type is the same in every treated period
    types = sd.data[sd.data["intensity"] > 0].groupby("unit_id")["intervention_type"].nunique()
    assert (types == 1).all()


def test_on_off_units_switch_and_change_intensity() -> None:
    sd = _one_brand(n_units=400, n_periods=8, adoption="on_off", on_share=0.5)
    on = _treated(sd.data).to_numpy()
    switches = np.abs(np.diff(on.astype(int), axis=1)).sum(axis=1)
    assert (switches >= 2).mean() > 0.3  # on, off and on again
    treated = sd.data[sd.data["intensity"] > 0]
    assert (treated.groupby("unit_id")["intensity"].nunique() > 1).mean() > 0.3
    assert treated["intervention_type"].ne("").all()
    assert sd.data.loc[sd.data["intensity"] == 0, "intervention_type"].eq("").all()


def test_hidden_level_drives_adoption_and_timing() -> None:
    sd = _one_brand(
        twin_type="patient",
        n_units=3000,
        n_periods=8,
        unit_icc=0.4,
        adoption="staggered",
        timing_confounding=1.5,
    )
    on = _treated(sd.data)
    u = sd.truth.unit_effects.loc[on.index].to_numpy()  # type: ignore[union-attr]
    ever = on.to_numpy().any(axis=1)
    assert u[ever].mean() - u[~ever].mean() > 0.5 * sd.truth.unit_sd
    start = on.to_numpy().argmax(axis=1)
    assert stats.spearmanr(u[ever], start[ever]).statistic < -0.3  # high level: earlier


def test_hidden_rising_trend_drives_adoption_and_vanishes_at_the_horizon() -> None:
    sd = _one_brand(
        twin_type="patient",
        n_units=3000,
        n_periods=8,
        unit_icc=0.3,
        adoption="staggered",
        unit_trend_sd=0.05,
        trend_confounding=1.5,
    )
    truth = sd.truth
    assert truth.unit_trends is not None
    on = _treated(sd.data)
    v = truth.unit_trends.loc[on.index].to_numpy()
    ever = on.to_numpy().any(axis=1)
    assert v[ever].mean() - v[~ever].mean() > 0.5 * 0.05  # rising units are the treated
    # the drift is v_i * (t - T): zero at the horizon, -v_i * T in period 0
    units = sd.population(sd.data["brand"].iloc[0]).head(50)
    at_t = truth.linear_predictor(units, None, period=truth.horizon)
    assert np.allclose(at_t, truth.linear_predictor(units, None))
    first = truth.linear_predictor(units, None, period=0)
    drift = truth.unit_trends.loc[units["unit_id"]].to_numpy()
    assert np.allclose(first - at_t, -drift * truth.horizon)


# -- the truth at the horizon --------------------------------------------------------------------


def test_truth_ate_at_the_horizon_is_the_closed_form() -> None:
    """Gaussian, one segment, no spread: ATE = effect * scale; control mean at T in closed form."""
    periods, trend, amp = 6, 0.03, 0.05
    sd = _one_brand(
        twin_type="territory",
        n_units=300,
        n_periods=periods,
        n_segments=1,
        n_numeric=1,
        n_interacting=0,
        n_categorical=0,
        n_intervention_types=2,
        effect_means=[0.08, -0.04],
        effect_segment_sd=0.0,
        unit_icc=0.3,
        adoption="staggered",
        trend=trend,
        season_amplitude=amp,
    )
    truth, twins = sd.truth, sd.population("A")
    bt, scale = truth.brands["A"], truth.outcome_scale
    z = (twins[truth.numeric_features[0]].to_numpy() - truth.numeric_loc[0]) / truth.numeric_scale[
        0
    ]
    u = truth.unit_effects.loc[twins["unit_id"]].to_numpy()  # type: ignore[union-attr]

    def control_at(t: float) -> float:
        return scale * float(
            np.mean(
                bt.intercept[0]
                + bt.beta[0] * z
                + u
                + trend * t
                + amp * math.sin(2 * math.pi * t / 4)
            )
        )

    first = truth.ate(twins, "digital_campaign")
    assert truth.horizon == periods
    assert first.ate == pytest.approx(0.08 * scale, rel=1e-12)
    assert first.control_mean == pytest.approx(control_at(periods), rel=1e-12)
    g2 = float(dose_response(2.0, truth.dose_rate))
    assert truth.ate(twins, "rep_visit_increase", 2.0).ate == pytest.approx(-0.04 * scale * g2)
    later = truth.ate(twins, "digital_campaign", period=[periods, periods + 1])
    assert later.control_mean == pytest.approx((control_at(periods) + control_at(periods + 1)) / 2)
    assert later.ate == pytest.approx(first.ate)


def test_truth_ate_depends_on_the_period_on_a_nonlinear_link() -> None:
    sd = _one_brand(n_units=300, n_periods=4, trend=0.2, unit_icc=0.2)
    truth, twins = sd.truth, sd.population("A")
    k = truth.intervention_types[0]
    at = {t: truth.ate(twins, k, period=t) for t in (0, 4, 8)}
    assert at[4] == truth.ate(twins, k)
    assert at[0].control_mean < at[4].control_mean < at[8].control_mean
    eta0 = truth.linear_predictor(twins, None, period=8)
    eta1 = truth.linear_predictor(twins, k, period=8)
    assert at[8].ate == pytest.approx(float(np.mean(special.expit(eta1) - special.expit(eta0))))


def test_threshold_effect_shifts_the_effect_above_the_cut() -> None:
    sd = _one_brand(
        twin_type="territory",
        n_units=400,
        n_periods=2,
        n_segments=1,
        n_interacting=0,
        effect_means=[0.05, 0.0, 0.0],
        effect_segment_sd=0.0,
        threshold_effect=0.1,
        threshold_at=0.0,
    )
    truth, twins = sd.truth, sd.population("A")
    z0 = (twins[truth.numeric_features[0]] - truth.numeric_loc[0]) / truth.numeric_scale[0]
    k = truth.intervention_types[0]
    above = truth.ate(twins[z0.to_numpy() > 0], k).ate
    below = truth.ate(twins[z0.to_numpy() <= 0], k).ate
    assert above == pytest.approx(0.15 * truth.outcome_scale)
    assert below == pytest.approx(0.05 * truth.outcome_scale)


def test_student_t_noise_has_heavy_tails() -> None:
    sd = _one_brand(
        twin_type="territory", n_units=2000, n_periods=5, treated_fraction=0, noise_df=3.0
    )
    truth, data = sd.truth, sd.data
    resid = data["outcome"].to_numpy() - truth.expected_outcome(data, None)
    assert stats.kurtosis(resid) > 2.0  # a normal's excess kurtosis is 0
    assert np.median(np.abs(resid)) / truth.outcome_scale == pytest.approx(
        0.25 * stats.t.ppf(0.75, 3.0), rel=0.05
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"unit_icc": 1.0}, "unit_icc"),
        ({"adoption": "sometimes"}, "adoption"),
        ({"adoption": "staggered", "min_pre_periods": 4}, "min_pre_periods"),
        ({"timing_confounding": 1.0, "unit_icc": 0.3}, "timing_confounding"),
        ({"timing_confounding": 1.0, "adoption": "staggered"}, "timing_confounding"),
        ({"trend_confounding": 1.0, "adoption": "staggered"}, "trend_confounding"),
        ({"unit_trend_sd": -0.1}, "unit_trend_sd"),
        ({"noise_df": 3.0}, "noise_df"),
        ({"on_share": 0.0}, "on_share"),
        ({"season_length": 1}, "season_length"),
    ],
)
def test_panel_options_are_checked(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_synthetic_twin_data("hcp", n_units=5, n_periods=4, **kwargs)


def test_panel_options_record_defaults() -> None:
    opts = PanelOptions()
    assert not opts.time_varying and opts.unit_sd("bernoulli", None) == 0.0
    assert PanelOptions(trend=0.1).time_varying and PanelOptions(adoption="on_off").time_varying
    assert PanelOptions(unit_trend_sd=0.05).time_varying


# -- the history's periods -----------------------------------------------------------------------


def test_history_refuses_a_repeated_period_naming_unit_and_period() -> None:
    sd = generate_synthetic_twin_data("hcp", n_units=50, n_periods=3, brands=("A",))
    spec = default_spec("hcp", "A", family="bernoulli", numeric_features=sd.numeric_features)
    check_history(sd.data, spec)  # one row per (unit, period): accepted
    dup = sd.data.iloc[[4, 10]].copy()
    history = pd.concat([sd.data, dup], ignore_index=True)
    with pytest.raises(InvalidInputError) as info:
        check_history(history, spec)
    err = info.value
    assert err.code == "invalid_history" and err.field == "period"
    for _, row in dup.iterrows():
        assert f"unit {row['unit_id']!r} period {row['period']!r}" in str(err)
    many = pd.concat([sd.data, sd.data], ignore_index=True)
    with pytest.raises(InvalidInputError, match=r"150 \(unit, period\) pair.*and 145 more"):
        check_history(many, spec)
    assert check_history(history, spec.model_copy(update={"period_column": None})) is not None
