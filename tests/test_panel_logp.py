"""The block layout of the panel likelihood computes the same log density as the cells.

The integrated panel likelihoods (gaussian, poisson) are evaluated on blocks of a unit's
cells that share a design (:func:`bayestwin.model.panel_terms._block_layout`). These
tests check, at random parameter values, that the model's log density equals the
cell-wise graph's and an independent numpy/scipy evaluation of the marginals (the
compound-symmetric gaussian and the negative multinomial), to 1e-8 relative, on
histories with staggered and on/off treatment, several intensities within a unit,
features that change over a unit's periods, several segments and missing periods.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from bayestwin.model.history import check_history
from bayestwin.model.pymc_model import build_design, build_pymc_model
from bayestwin.model.spec import TwinModelSpec, default_spec
from bayestwin.synthetic import generate_synthetic_twin_data

RTOL = 1e-8
#: No C compilation: these graphs are evaluated a few times on a few hundred rows.
MODE = "FAST_COMPILE"
PARAMS = ("a", "beta", "tau", "gamma", "dose_rate", "dose_jump", "lambda_unit", "time_effect")


def _history(
    family: str, adoption: str, seed: int, *, varying_feature: bool = True
) -> tuple[pd.DataFrame, TwinModelSpec]:
    """A small panel with mixed intensities, a time-varying feature and missing rows."""
    data = generate_synthetic_twin_data(
        "patient",
        n_units=50,
        n_periods=6,
        brands=("B",),
        n_segments=3,
        n_numeric=2,
        n_categorical=1,
        n_intervention_types=2,
        family=family,  # type: ignore[arg-type]
        unit_icc=0.3,
        adoption=adoption,  # type: ignore[arg-type]
        random_seed=seed,
    )
    df = data.data.copy()
    rng = np.random.default_rng(seed)
    units = df["unit_id"].drop_duplicates().to_numpy()
    dose = dict(zip(units, rng.choice([0.5, 1.0, 2.0], size=len(units)), strict=True))
    treated = (df["intervention_type"] != "").to_numpy()
    df.loc[treated, "intensity"] = df.loc[treated, "unit_id"].map(dose)
    ever = set(df.loc[treated, "unit_id"])
    # ten treated units double their dose in the last period
    late = (df["period"] == df["period"].max()).to_numpy()
    up = treated & late & df["unit_id"].isin(sorted(ever)[:10]).to_numpy()
    df.loc[up, "intensity"] = 2 * df.loc[up, "intensity"]
    if varying_feature:  # a feature of five untreated units steps up mid-history
        moving = (
            df["unit_id"].isin(sorted(set(units) - ever)[:5]).to_numpy()
            & (df["period"] >= df["period"].median()).to_numpy()
        )
        col = data.numeric_features[0]
        df.loc[moving, col] = df.loc[moving, col] + 1.0
    df = df.drop(index=df.sample(frac=0.1, random_state=seed).index).reset_index(drop=True)
    spec = default_spec(
        "patient",
        "B",
        family=family,  # type: ignore[arg-type]
        numeric_features=data.numeric_features,
        categorical_features=data.categorical_features,
    )
    return check_history(df, spec), spec


def _points(model: Any, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` random points around the initial point, on the unconstrained scale."""
    rng = np.random.default_rng(seed)
    start = model.initial_point()
    return [
        {k: v + rng.normal(0.0, 0.4, size=np.shape(v)) for k, v in start.items()} for _ in range(n)
    ]


def _row_eta(df: pd.DataFrame, d: dict[str, Any], spec: TwinModelSpec, p: dict[str, Any]) -> Any:
    """``eta`` of every history row (without the unit effect), from the parameters."""
    x, z, seg = d["encoder"].encode(df)
    types = list(d["types"])
    itype = df[spec.intervention_column].to_numpy()
    s = df[spec.intensity_column].to_numpy(dtype=float)
    eta = p["a"][seg] + x @ p["beta"]
    smooth = np.expm1(-p["dose_rate"] * s) / np.expm1(-p["dose_rate"])
    jump = p.get("dose_jump", 0.0)
    g = np.where(s > 0, jump + (1 - jump) * smooth, 0.0)
    for j, t in enumerate(types):
        on = itype == t
        eta[on] += g[on] * (p["tau"][j, seg[on]] + z[on] @ p["gamma"][j])
    unit = df[spec.unit_column].astype(str).to_numpy()
    if "lambda_unit" in p:
        shares = pd.DataFrame({t: itype == t for t in types}, dtype=float).groupby(unit).mean()
        m = shares - shares.mean(axis=0)
        eta += (m.to_numpy() @ p["lambda_unit"])[np.searchsorted(shares.index, unit)]
    if "time_effect" in p:
        periods = np.sort(df[spec.period_column].unique())
        eta += p["time_effect"][np.searchsorted(periods, df[spec.period_column])]
    return eta, unit


def _reference(df: pd.DataFrame, d: dict[str, Any], spec: TwinModelSpec, p: dict[str, Any]) -> Any:
    """The panel log likelihood from numpy/scipy, with the model's constants dropped.

    Gaussian: each unit's standardised rows are multivariate normal with covariance
    ``sigma**2 I + sigma_unit**2 11'`` (scipy's density), plus the ``N/2 log 2 pi`` the
    model drops. Poisson: the negative multinomial marginal of a Gamma(phi, phi)
    multiplier, plus the ``sum log y!`` the model drops.
    """
    eta, unit = _row_eta(df, d, spec, p)
    y = df[spec.outcome].to_numpy(dtype=float)
    su = float(p["sigma_unit"])
    total = 0.0
    if spec.family == "gaussian":
        ystd = (y - d["outcome_loc"]) / d["outcome_scale"]
        sigma = float(p["dispersion"])
        for u in np.unique(unit):
            on = unit == u
            n = int(on.sum())
            cov = sigma**2 * np.eye(n) + su**2 * np.ones((n, n))
            total += stats.multivariate_normal(eta[on], cov).logpdf(ystd[on])
        return total + 0.5 * len(y) * np.log(2 * np.pi)
    phi = 1.0 / su**2
    for u in np.unique(unit):
        on = unit == u
        mu = np.exp(eta[on])
        y_u, m_u = y[on].sum(), mu.sum()
        total += (
            (y[on] * np.log(mu) - special.gammaln(y[on] + 1)).sum()
            + special.gammaln(y_u + phi) - special.gammaln(phi)
            + phi * np.log(phi) - (y_u + phi) * np.log(phi + m_u)
        )  # fmt: skip
    return total + special.gammaln(y + 1).sum()


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "blocks"}


@pytest.mark.parametrize(
    ("family", "adoption", "seed", "varying"),
    [
        ("poisson", "staggered", 3, True),
        ("poisson", "on_off", 4, True),
        ("gaussian", "staggered", 5, True),
        ("gaussian", "on_off", 6, True),
        ("poisson", "staggered", 9, False),
        ("gaussian", "on_off", 10, False),
    ],
)
def test_block_log_density_equals_the_cells_and_scipy(
    family: str, adoption: str, seed: int, varying: bool
) -> None:
    df, spec = _history(family, adoption, seed, varying_feature=varying)
    d = build_design(df, spec)
    assert "blocks" in d
    # features fixed within every unit: the unit terms are computed once per unit
    assert ("unit_x" in d["blocks"]) is not varying
    n_units, n_q, n_periods = d["blocks"]["shape"]
    assert n_q > 1  # units with several designs (intensities, moving feature)
    assert d["blocks"]["count"].sum() == len(df)
    assert (d["blocks"]["count"] == 0).any()  # missing periods are padding
    blocks, cells = build_pymc_model(d, spec), build_pymc_model(_flat(d), spec)
    assert [v.name for v in blocks.value_vars] == [v.name for v in cells.value_vars]
    names = [n for n in (*PARAMS, "sigma_unit", "dispersion") if n in blocks.named_vars]
    assert {"lambda_unit", "time_effect", "dose_jump"} <= set(names)
    outs = blocks.replace_rvs_by_values([blocks[n] for n in names])
    values = blocks.compile_fn(outs, inputs=blocks.value_vars, on_unused_input="ignore", mode=MODE)
    logp_b, logp_c = blocks.compile_logp(mode=MODE), cells.compile_logp(mode=MODE)
    like_b = blocks.compile_logp(vars=blocks.potentials, mode=MODE)
    like_c = cells.compile_logp(vars=cells.potentials, mode=MODE)
    for point in _points(blocks, 4, seed):
        lb, lc = float(like_b(point)), float(like_c(point))
        ref = _reference(df, d, spec, dict(zip(names, values(point), strict=True)))
        assert lb == pytest.approx(ref, rel=RTOL)
        assert lb == pytest.approx(lc, rel=RTOL)
        assert float(logp_b(point)) == pytest.approx(float(logp_c(point)), rel=RTOL)


@pytest.mark.parametrize("varying", [True, False])
def test_block_gradient_equals_the_cells(varying: bool) -> None:
    df, spec = _history("poisson", "on_off", 7, varying_feature=varying)
    d = build_design(df, spec)
    blocks, cells = build_pymc_model(d, spec), build_pymc_model(_flat(d), spec)
    grad_b, grad_c = blocks.compile_dlogp(mode=MODE), cells.compile_dlogp(mode=MODE)
    for point in _points(blocks, 3, 7):
        np.testing.assert_allclose(grad_b(point), grad_c(point), rtol=RTOL, atol=1e-9)


def test_without_time_effects_each_block_is_one_cell() -> None:
    df, spec = _history("poisson", "staggered", 8, varying_feature=False)
    spec = spec.model_copy(update={"time_effects": "off"})
    d = build_design(df, spec)
    assert d["blocks"]["shape"][2] == 1
    assert "time_effect" not in build_pymc_model(d, spec).named_vars
    blocks, cells = build_pymc_model(d, spec), build_pymc_model(_flat(d), spec)
    like_b = blocks.compile_logp(vars=blocks.potentials, mode=MODE)
    like_c = cells.compile_logp(vars=cells.potentials, mode=MODE)
    for point in _points(blocks, 3, 8):
        assert float(like_b(point)) == pytest.approx(float(like_c(point)), rel=RTOL)


def test_unbalanced_panel_falls_back_to_cells() -> None:
    df, spec = _history("gaussian", "staggered", 9, varying_feature=False)
    # two units with a new design in every period: six blocks of one cell each
    first = df[spec.unit_column].iloc[0]
    rows = (df[spec.unit_column] == first).to_numpy()
    df.loc[rows, spec.intervention_column] = df[spec.intervention_column][
        df[spec.intervention_column] != ""
    ].iloc[0]
    df.loc[rows, spec.intensity_column] = np.linspace(0.2, 3.0, int(rows.sum()))
    df = pd.concat([df, df[rows].assign(unit_id="extra", intensity=4.0)], ignore_index=True)
    many = df[spec.unit_column].isin([first, "extra"]).to_numpy()
    df.loc[many, spec.numeric_features[0]] += np.arange(int(many.sum()), dtype=float)
    df = check_history(df, spec)
    d = build_design(df, spec)
    assert "blocks" not in d  # a grid of 6 blocks x 6 periods per unit: mostly padding
    assert "blocks" in build_design(check_history(df[~many], spec), spec)
    model = build_pymc_model(d, spec)
    names = [n for n in (*PARAMS, "sigma_unit", "dispersion") if n in model.named_vars]
    outs = model.replace_rvs_by_values([model[n] for n in names])
    values = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore", mode=MODE)
    like = model.compile_logp(vars=model.potentials, mode=MODE)
    for point in _points(model, 2, 9):
        ref = _reference(df, d, spec, dict(zip(names, values(point), strict=True)))
        assert float(like(point)) == pytest.approx(ref, rel=RTOL)


# -- the pointwise terms of the model comparison ----------------------------------------


def _unit_reference(
    df: pd.DataFrame, d: dict[str, Any], spec: TwinModelSpec, p: dict[str, Any], units: bool
) -> np.ndarray:
    """Each unit's log density of its raw rows, its effect integrated out, from scipy.

    Gaussian: the multivariate normal of the unit's rows (covariance
    ``scale**2 (sigma**2 I + sigma_unit**2 11')``); poisson: the Poisson rows
    integrated over a Gamma(phi, phi) multiplier numerically; bernoulli and negative
    binomial: the rows integrated over ``u ~ Normal(0, sigma_unit)`` numerically.
    Without unit effects, the sum of the rows' densities.
    """

    eta, unit = _row_eta(df, d, spec, p)
    y = df[spec.outcome].to_numpy(dtype=float)
    su = float(p["sigma_unit"]) if units else 0.0
    out = []
    for u in d["cell_unit_ids"]:
        on = unit == u
        e, yu = eta[on], y[on]
        if spec.family == "gaussian":
            loc, scale, sigma = d["outcome_loc"], d["outcome_scale"], float(p["dispersion"])
            n = int(on.sum())
            cov = scale**2 * (sigma**2 * np.eye(n) + su**2 * np.ones((n, n)))
            out.append(stats.multivariate_normal(loc + scale * e, cov).logpdf(yu))
            continue
        if spec.family == "poisson":

            def rows(w: np.ndarray, e: np.ndarray = e, yu: np.ndarray = yu) -> np.ndarray:
                mu = np.exp(e) * w[:, None]
                return np.asarray(stats.poisson(mu).logpmf(yu).sum(axis=1))

            if not units:
                out.append(float(rows(np.ones(1))[0]))
                continue
            phi = 1.0 / su**2
            prior = stats.gamma(a=phi, scale=1.0 / phi)
        else:
            alpha = float(p.get("dispersion", 1.0))

            def rows(
                w: np.ndarray, e: np.ndarray = e, yu: np.ndarray = yu, alpha: float = alpha
            ) -> np.ndarray:
                mu = np.exp(e) * w[:, None]
                if spec.family == "bernoulli":
                    return np.asarray(stats.bernoulli(mu / (1 + mu)).logpmf(yu).sum(axis=1))
                return np.asarray(stats.nbinom(alpha, alpha / (alpha + mu)).logpmf(yu).sum(axis=1))

            if not units:
                out.append(float(rows(np.ones(1))[0]))
                continue
            prior = stats.lognorm(s=su)  # w = exp(u), u ~ Normal(0, sigma_unit)
        out.append(_log_integral(rows, prior))
    return np.asarray(out)


def _log_integral(rows: Any, prior: Any) -> float:
    """``log of the integral of exp(rows(w)) prior(w) dw`` over ``w > 0``, numerically.

    The integral runs over ``t = log w``, where the integrand is a smooth bump. A coarse
    grid over the prior's central ``1 - 2e-12``, widened by ``e**15`` each way, finds
    where the integrand exceeds ``e**-60`` of its peak (a unit whose counts are far
    below its mean has its bump in the prior's far tail; one with large counts has a
    bump far narrower than the prior); the trapezoid rule on 20,001 points there, whose
    error for a smooth integrand that vanishes at both ends falls faster than any power
    of the step, gives the integral.
    """

    def log_f(t: np.ndarray) -> np.ndarray:
        w = np.exp(t)
        return np.asarray(rows(w) + prior.logpdf(w) + t)

    lo, hi = np.log(prior.ppf(1e-12)) - 15.0, np.log(prior.ppf(1 - 1e-12)) + 15.0
    coarse = np.linspace(lo, hi, 4001)
    logs = log_f(coarse)
    keep = np.flatnonzero(logs > logs.max() - 60.0)
    step = coarse[1] - coarse[0]
    fine = np.linspace(coarse[keep[0]] - step, coarse[keep[-1]] + step, 20001)
    values = log_f(fine)
    shift = float(values.max())
    return shift + float(np.log(np.trapezoid(np.exp(values - shift), fine)))


@pytest.mark.parametrize(
    ("family", "units", "seed"),
    [
        ("gaussian", True, 11),
        ("gaussian", False, 12),
        ("poisson", True, 13),
        ("poisson", False, 14),
        ("bernoulli", True, 15),
        ("bernoulli", False, 16),
        ("neg_binomial", True, 17),
    ],
)
def test_unit_log_likelihood_is_each_units_integrated_density(
    family: str, units: bool, seed: int
) -> None:
    """The comparison's pointwise terms: each unit's rows, its effect integrated out.

    Closed forms (gaussian, poisson) agree with scipy's densities (and the poisson
    marginal with the numerical integral over the gamma multiplier) to 1e-8; the
    adaptive Gauss-Hermite integral of the bernoulli and negative binomial unit effect
    (16 nodes around each unit's mode) agrees with the numerical integral over the log
    multiplier to 1e-7 of the log density, on six-period units.
    """
    df, spec = _history(family, "staggered", seed, varying_feature=False)
    if not units:
        spec = spec.model_copy(update={"unit_effects": "off"})
    d = build_design(df, spec, cells=True)
    assert "blocks" not in d and d["count"].sum() == len(df)
    assert len(d["cell_unit_ids"]) == df["unit_id"].nunique()
    model = build_pymc_model(d, spec, pointwise=True)
    assert "z_unit" not in model.named_vars
    names = [n for n in (*PARAMS, "sigma_unit", "dispersion") if n in model.named_vars]
    outs = model.replace_rvs_by_values([model[n] for n in [*names, "unit_loglik"]])
    values = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore", mode=MODE)
    tol = 1e-8 if family in ("gaussian", "poisson") else 1e-7
    for point in _points(model, 1 if units and family != "gaussian" else 2, seed):
        *params, loglik = values(point)
        ref = _unit_reference(df, d, spec, dict(zip(names, params, strict=True)), units)
        np.testing.assert_allclose(loglik, ref, rtol=tol)


def test_block_exposure_by_count_pattern_equals_the_grid() -> None:
    """Exposures from the distinct rows of counts equal the product over the grid."""
    import pytensor.tensor as pt

    from bayestwin.model.panel_terms import _block_exposure

    rng = np.random.default_rng(3)
    n_units, n_q, n_cols = 40, 2, 5
    rows = np.array([[1, 1, 0, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=float)
    count = rows[rng.integers(0, 3, n_units * n_q)].reshape(n_units, n_q, n_cols)
    patterns, pattern = np.unique(count.reshape(-1, n_cols), axis=0, return_inverse=True)
    b = rng.normal(size=n_cols)
    want = (count * np.exp(b)).sum(axis=2)
    few = {"shape": count.shape, "count": count, "count_patterns": patterns}
    for bl in (
        {**few, "count_pattern": pattern.ravel()},  # 3 rows for 80 blocks: gathered
        {**few, "count_pattern": pattern.ravel()[:8], "shape": (4, 2, n_cols)},
    ):
        grid = bl["count"][: bl["shape"][0]]
        got = _block_exposure({**bl, "count": grid}, pt.exp(pt.as_tensor_variable(b))).eval()
        np.testing.assert_allclose(got, want[: bl["shape"][0]], rtol=1e-12)


@pytest.mark.parametrize("family", ["bernoulli", "gaussian"])
def test_unit_terms_once_per_unit_give_the_same_log_density(family: str) -> None:
    """Sampled unit effects (bernoulli) and cells: the unit terms spread per row agree."""
    df, spec = _history(family, "staggered", 11, varying_feature=False)
    if family == "gaussian":
        spec = spec.model_copy(update={"unit_likelihood": "sampled"})
    d = build_design(df, spec)
    assert "blocks" not in d and "unit_x" in d
    rows = {k: v for k, v in d.items() if k not in ("unit_x", "unit_seg")}
    once, per_row = build_pymc_model(d, spec), build_pymc_model(rows, spec)
    logp_o, logp_r = once.compile_logp(mode=MODE), per_row.compile_logp(mode=MODE)
    grad_o, grad_r = once.compile_dlogp(mode=MODE), per_row.compile_dlogp(mode=MODE)
    for point in _points(once, 3, 11):
        assert float(logp_o(point)) == pytest.approx(float(logp_r(point)), rel=RTOL)
        np.testing.assert_allclose(grad_o(point), grad_r(point), rtol=RTOL, atol=1e-9)
    # a feature that moves within a unit keeps the row-wise terms
    moved, _ = _history(family, "staggered", 11, varying_feature=True)
    assert "unit_x" not in build_design(moved, spec)
