"""Real experiments as likelihood terms: the closed form, direction, pooling, errors, faces."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import pytest
from helpers import make_settings
from numpy.typing import NDArray

from bayestwin.cli import main
from bayestwin.core.families import inverse_link
from bayestwin.errors import InvalidInputError, from_validation_error
from bayestwin.model.experiment_terms import MAX_EXPERIMENT_UNITS, experiments_provenance
from bayestwin.model.fit import EXPERIMENTS_KEY, TwinGenerator
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.model.spec import SamplerSettings, TwinModelSpec, default_spec
from bayestwin.schemas import ExperimentEvidence, ExperimentOutcome
from bayestwin.service import TwinService

BRAND = "B"
SAMPLER = SamplerSettings(draws=500, tune=500, chains=2, cores=1, random_seed=11, progressbar=False)


def _history(
    family: str, effects: dict[str, float], *, n: int = 360, seed: int = 0
) -> pd.DataFrame:
    """Cross-sectional toy: one segment, no features, a control arm and one arm per type.

    ``effects`` are the effects the history shows (link scale; gaussian: outcome sds).
    """
    rng = np.random.default_rng(seed)
    arms = ["", *effects]
    itype = np.array(arms)[np.arange(n) % len(arms)]
    shift = np.array([effects.get(t, 0.0) for t in itype])
    if family == "gaussian":
        y = 1.0 + shift + rng.normal(0.0, 1.0, n)
    elif family == "bernoulli":
        y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(-0.4 + shift)))).astype(int)
    else:
        y = rng.poisson(np.exp(1.0 + shift))
    return pd.DataFrame(
        {
            "unit_id": [f"u{i:04d}" for i in range(n)],
            "brand": BRAND,
            "twin_type": "hcp",
            "period": 1,
            "intervention_type": itype,
            "intensity": (itype != "").astype(float),
            "outcome": y,
        }
    )


def _spec(family: str) -> TwinModelSpec:
    return default_spec(
        "hcp", BRAND, family=family, numeric_features=(), segment_column=None, sampler=SAMPLER
    )


def _evidence(history: pd.DataFrame, itype: str, ate: float, se: float) -> ExperimentEvidence:
    return ExperimentEvidence(
        experiment_id=f"exp-{itype}",
        intervention_type=itype,
        ate=ate,
        se=se,
        n_treatment=200,
        n_control=200,
        unit_ids=tuple(history["unit_id"]),
    )


def _ate_draws(model: FittedTwinModel, k: int = 0) -> np.ndarray:
    """ATE draws at intensity 1 of a one-segment, featureless model (outcome scale)."""
    post = model.posterior
    a, tau = post.intercept[:, 0], post.tau[:, k, 0]
    if post.family == "gaussian":
        return post.outcome_scale * tau
    if post.family == "bernoulli":
        return 1.0 / (1.0 + np.exp(-(a + tau))) - 1.0 / (1.0 + np.exp(-a))
    return np.exp(a + tau) - np.exp(a)


def _mcse(model: FittedTwinModel, k: int = 0) -> float:
    """Monte Carlo standard error of the posterior mean of the ATE (from its bulk ESS)."""
    draws = _ate_draws(model, k).reshape(SAMPLER.chains, SAMPLER.draws)
    ess = float(az.ess(draws))
    return float(draws.std() / np.sqrt(ess))


@pytest.fixture(scope="module")
def gaussian_fits() -> dict[str, Any]:
    history = _history("gaussian", {"email": 0.4})
    spec = _spec("gaussian")
    ex = _evidence(history, "email", ate=1.5, se=0.5)
    return {
        "history": history,
        "spec": spec,
        "experiment": ex,
        "without": TwinGenerator(spec).fit(history),
        "with": TwinGenerator(spec).fit(history, experiments=[ex]),
    }


# -- (a) the closed form on a gaussian toy ---------------------------------------------------


def _exact_posterior(
    m_hist: float, v_hist: float, a: float, se2: float, v_prior: float, bias_scale: float, df: float
) -> tuple[float, float, NDArray[np.float64]]:
    """Mean, variance and quartiles of the ATE given the history, experiment and bias prior.

    Given the bias ``b``, everything is normal: the prior ``Normal(0, v_prior)``, the
    history ``m_hist ~ Normal(ATE + b, v_hist)`` and the experiment ``a ~ Normal(ATE,
    se2)``. ``b`` has the Student-t prior ``bias_scale * t(df)``; it is integrated out on a
    fine grid (the exact posterior, to quadrature error): a mixture of normals of one
    variance, whose quartiles come from its CDF on a grid.
    """
    from scipy import stats

    b = np.linspace(-40 * bias_scale, 40 * bias_scale, 40_001)
    prec = 1.0 / v_prior + 1.0 / v_hist + 1.0 / se2
    mean_b = ((m_hist - b) / v_hist + a / se2) / prec
    cov = np.array([[v_prior + v_hist, v_prior], [v_prior, v_prior + se2]])
    obs = np.column_stack([m_hist - b, np.full_like(b, a)])
    log_w = stats.t.logpdf(b / bias_scale, df) + stats.multivariate_normal(cov=cov).logpdf(obs)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    mean = float(w @ mean_b)
    var = float(1.0 / prec + w @ mean_b**2 - mean**2)
    keep = w > 1e-12 * w.max()
    x = np.linspace(mean - 12 * np.sqrt(var), mean + 12 * np.sqrt(var), 4_001)
    cdf = stats.norm.cdf((x[:, None] - mean_b[keep]) * np.sqrt(prec)) @ w[keep]
    return mean, var, np.interp([0.25, 0.5, 0.75], cdf / cdf[-1], x)


def test_gaussian_posterior_matches_the_exact_posterior(
    gaussian_fits: dict[str, Any],
) -> None:
    """The experiment combines with the history's estimate through the bias prior.

    With ``ATE = s * tau`` (``s`` the outcome scale), the history's likelihood of
    ``tau + bias`` is about ``Normal(m_L, s_L**2)``, and the bias prior is
    ``s * bias_mean_sd * t(bias_df)`` on the ATE scale. The fit without the experiment
    gives ``m0, s0`` under the effect prior ``Normal(0, (s * 1.5)**2)``, from which
    ``m_L, s_L`` follow (precisions subtract). The expected posterior integrates the bias
    out exactly (:func:`_exact_posterior`). Tolerance: 4 Monte Carlo standard errors of
    the two posterior means (each from its ESS) plus 5% of the posterior sd for the
    normal approximation of the history (the unknown dispersion makes its likelihood
    slightly heavier-tailed).
    """
    without, with_ = gaussian_fits["without"], gaussian_fits["with"]
    ex: ExperimentEvidence = gaussian_fits["experiment"]
    pr = gaussian_fits["spec"].priors
    scale = without.posterior.outcome_scale
    d0 = _ate_draws(without)
    m0, v0 = float(d0.mean()), float(d0.var())
    v_prior = (scale * pr.effect_mean_sd) ** 2
    v_hist = 1.0 / (1.0 / v0 - 1.0 / v_prior)
    m_hist = m0 * v_hist / v0
    expected, v_post, quartiles = _exact_posterior(
        m_hist, v_hist, ex.ate, ex.se**2, v_prior, scale * pr.bias_mean_sd, pr.bias_df
    )
    d1 = _ate_draws(with_)
    mc = np.hypot(_mcse(with_), _mcse(without))
    tol = 4.0 * mc + 0.05 * float(np.sqrt(v_post))
    assert abs(float(d1.mean()) - expected) < tol
    # the spread by the interquartile range: the bias prior's t(2) tails make the sd of
    # 1,000 draws a poor estimate of the exact sd (its tail draws are few and slow to
    # mix), the quartiles a steady one; 15% allowed
    iqr = np.subtract(*np.quantile(d1, [0.75, 0.25]))
    assert iqr == pytest.approx(quartiles[2] - quartiles[0], rel=0.15)
    # and it moved from the history toward the experiment, as the exact posterior does
    assert abs(expected - ex.ate) < abs(m0 - ex.ate)
    assert abs(float(d1.mean()) - ex.ate) < abs(m0 - ex.ate)


def test_the_fit_records_its_experiments(gaussian_fits: dict[str, Any]) -> None:
    with_, without = gaussian_fits["with"], gaussian_fits["without"]
    ex = gaussian_fits["experiment"]
    assert with_.provenance[EXPERIMENTS_KEY] == experiments_provenance([ex])
    assert with_.provenance[EXPERIMENTS_KEY]["ids"] == ["exp-email"]
    assert without.provenance[EXPERIMENTS_KEY] == {"count": 0, "ids": [], "hash": None}
    post = with_.trace["posterior"]
    model_ate = post["experiment_model_ate"].values.reshape(-1)
    np.testing.assert_allclose(model_ate, _ate_draws(with_), rtol=1e-9)


# -- (b) bernoulli and poisson: direction and size --------------------------------------------


@pytest.mark.parametrize("family", ["bernoulli", "poisson"])
def test_an_experiment_moves_the_posterior_toward_its_ate(family: str) -> None:
    """The shift agrees with the linearised normal-normal prediction.

    Linearised at the posterior mean, ``ATE ~ J * tau`` with ``J = dATE / dtau``
    (``p (1 - p)`` at the treated mean for bernoulli, the treated mean for poisson): the
    effect prior has sd ``J * effect_mean_sd`` (mean 0) and the bias prior is
    ``J * bias_mean_sd * t(bias_df)``, integrated out as in the gaussian case
    (:func:`_exact_posterior`). The experiment sits 6 history sds below the history's
    estimate with an se of 2; the posterior mean must move toward it and match the
    prediction to within 15% of the gap (linearisation and Monte Carlo error).
    """
    history = _history(family, {"email": 0.6}, seed=1)
    spec = _spec(family)
    without = TwinGenerator(spec).fit(history)
    d0 = _ate_draws(without)
    m0, v0 = float(d0.mean()), float(d0.var())
    post = without.posterior
    treated = float(np.mean(inverse_link(family, post.intercept[:, 0] + post.tau[:, 0, 0])))
    jac = treated * (1.0 - treated) if family == "bernoulli" else treated
    ate, se = m0 - 6.0 * np.sqrt(v0), 2.0 * np.sqrt(v0)
    with_ = TwinGenerator(spec).fit(history, experiments=[_evidence(history, "email", ate, se)])
    m1 = float(_ate_draws(with_).mean())
    assert ate < m1 < m0
    pr = spec.priors
    v_prior = (jac * pr.effect_mean_sd) ** 2
    v_hist = 1.0 / (1.0 / v0 - 1.0 / v_prior)
    m_hist = m0 * v_hist / v0
    expected, _, _ = _exact_posterior(
        m_hist, v_hist, ate, se**2, v_prior, jac * pr.bias_mean_sd, pr.bias_df
    )
    assert abs(m1 - expected) < 0.15 * (m0 - ate)


# -- (c) pooling of the bias across types ----------------------------------------------------


def test_an_experiment_on_one_type_corrects_a_related_type() -> None:
    """Both types' history effects are 0.5 sd too high; an experiment on A corrects B."""
    truth = {"a": 0.3, "b": 0.6}
    bias = 0.5
    history = _history("gaussian", {t: e + bias for t, e in truth.items()}, n=450, seed=2)
    spec = _spec("gaussian")
    without = TwinGenerator(spec).fit(history)
    ex = _evidence(history, "a", ate=truth["a"], se=0.05)
    with_ = TwinGenerator(spec).fit(history, experiments=[ex])
    b0, b1 = float(_ate_draws(without, 1).mean()), float(_ate_draws(with_, 1).mean())
    a1 = float(_ate_draws(with_, 0).mean())
    assert abs(a1 - truth["a"]) < 0.1
    # B moves toward its truth by most of the shared bias (pooled through mu_bias)
    assert b0 - b1 > 0.6 * bias
    assert abs(b1 - truth["b"]) < abs(b0 - truth["b"]) / 2


# -- (d) the errors, named by field ----------------------------------------------------------


def _error(**fields: Any) -> InvalidInputError:
    base: dict[str, Any] = {
        "experiment_id": "e",
        "intervention_type": "email",
        "ate": 0.1,
        "se": 0.05,
        "unit_ids": ["u0000"],
    }
    base.update(fields)
    try:
        ExperimentEvidence.model_validate(base)
    except Exception as exc:  # pydantic's ValidationError, as every face turns it
        return from_validation_error(exc, what="experiment")
    raise AssertionError(f"{fields} was accepted")


def test_schema_errors_name_the_field() -> None:
    assert _error(se=0.0).field == "se"
    assert _error(se=-1.0).field == "se"
    assert _error(n_treatment=0).field == "n_treatment"
    assert _error(experiment_id="").field == "experiment_id"
    assert _error(unit_ids=[]).field == "unit_ids"
    assert _error(units=[]).field == "units"
    assert _error(intensity=0.0).field == "intensity"
    assert "population is empty" in str(_error(unit_ids=None))
    mix = [{"intensity": 1.0, "weight": 1.0}, {"intensity": 1.0, "weight": 2.0}]
    assert "more than once" in str(_error(intensity_mix=mix))
    ok = ExperimentEvidence(
        experiment_id="e",
        intervention_type="email",
        ate=0.1,
        se=0.05,
        units=pd.DataFrame({"unit_id": ["x"], "segment": ["all"]}),
    )
    assert ok.units == ({"unit_id": "x", "segment": "all"},)
    with pytest.raises(Exception, match="frozen"):
        ok.ate = 3.0  # type: ignore[misc]


def test_fit_errors_name_the_experiment_field() -> None:
    history = _history("gaussian", {"email": 0.4}, n=120).assign(x=np.linspace(0, 1, 120))
    gen = TwinGenerator(_spec("gaussian").model_copy(update={"numeric_features": ("x",)}))

    def field_of(ex: Any) -> str | None:
        with pytest.raises(InvalidInputError) as bad:
            gen.build_model(history, experiments=[ex])
        return bad.value.field

    good = _evidence(history, "email", 0.1, 0.05)
    assert field_of(good.model_copy(update={"intervention_type": "sms"})) == (
        "experiments[0].intervention_type"
    )
    assert field_of(good.model_copy(update={"unit_ids": ("nobody",)})) == (
        "experiments[0].unit_ids"
    )
    assert field_of(good.model_copy(update={"unit_ids": None, "units": ({"age": 1.0},)})) == (
        "experiments[0].units"
    )
    assert field_of(good.model_copy(update={"units": ({"segment": "north", "x": 0.0},)})) == (
        "experiments[0].units"
    )
    with pytest.raises(InvalidInputError) as twice:
        gen.build_model(history, experiments=[good, good])
    assert twice.value.field == "experiments"
    with pytest.raises(InvalidInputError) as one:
        gen.build_model(history, experiments=good)  # type: ignore[arg-type]
    assert one.value.field == "experiments"
    # new units with their features are accepted; a large population is subsampled
    n_new = MAX_EXPERIMENT_UNITS + 40
    units = pd.DataFrame({"unit_id": [f"n{i}" for i in range(n_new)], "x": np.zeros(n_new)})
    new = ExperimentEvidence(**{**good.model_dump(), "unit_ids": None, "units": units})
    model = gen.build_model(history, experiments=[new])
    assert "experiment_ate" in model.named_vars and "history_bias" in model.named_vars


# -- (f) without experiments the model is as before ------------------------------------------


def test_a_fit_without_experiments_is_unchanged(gaussian_fits: dict[str, Any]) -> None:
    history, spec = gaussian_fits["history"], gaussian_fits["spec"]
    model = TwinGenerator(spec).build_model(history)
    names = set(model.named_vars)
    assert not names & {"mu_bias", "sigma_bias", "z_bias", "history_bias", "experiment_ate"}
    again = TwinGenerator(spec).fit(history, experiments=())
    without = gaussian_fits["without"]
    np.testing.assert_array_equal(again.posterior.tau, without.posterior.tau)
    np.testing.assert_array_equal(again.posterior.intercept, without.posterior.intercept)
    assert again.spec_hash == without.spec_hash == spec.spec_hash()
    assert not {"mu_bias", "history_bias"} & set(without.trace["posterior"].data_vars)


# -- (e) the service and the CLI, with SQLite and a real (SQLite-backed) MLflow store ---


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_service_and_cli_refit_with_the_stored_experiments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow's own store, a real one
    monkeypatch.setenv("BAYESTWIN_MLFLOW_TRACKING_URI", tracking)
    history = _history("gaussian", {"email": 0.4}, n=240, seed=3).assign(segment="all")
    path = tmp_path / "history.csv"
    history.to_csv(path, index=False)
    sampler = {"draws": 300, "tune": 300, "chains": 2, "cores": 1, "random_seed": 1}
    settings = make_settings(data, mlflow_tracking_uri=tracking)
    with TwinService(settings) as svc:
        assert svc.registry_enabled
        first = svc.fit_history(
            history, brand=BRAND, twin_type="hcp", family="gaussian", sampler=sampler,
            override_diagnostics=True,
        )  # fmt: skip
        assert first.training_config["provenance"][EXPERIMENTS_KEY]["count"] == 0
        sim = svc.simulate(
            {
                "intervention_type": "email",
                "target_population": "hcp",
                "brand": BRAND,
                "twin_count": 200,
                "random_seed": 4,
            }
        )
        real = ExperimentOutcome(actual_ate=0.05, actual_se=0.04, n_treatment=120, n_control=110)
        svc.register_experiment_result("exp-1", real)
        svc.validate(sim.simulation_id, "exp-1")
        found = svc.experiments_for(BRAND, "hcp")
        assert [e.experiment_id for e in found] == ["exp-1"]
        ex = found[0]
        assert (ex.intervention_type, ex.ate, ex.se) == ("email", 0.05, 0.04)
        assert (ex.n_treatment, ex.n_control) == (120, 110)
        assert ex.units is not None
        assert sim.twin_unit_ids is not None
        assert {u["unit_id"] for u in ex.units} == set(sim.twin_unit_ids)
    code, out, err = _run(
        "fit", str(path), "--brand", BRAND, "--twin-type", "hcp", "--family", "gaussian",
        "--draws", "300", "--tune", "300", "--chains", "2", "--cores", "1",
        "--with-experiments", "--override-diagnostics", "--data-dir", str(data),
    )  # fmt: skip
    assert code == 0, err
    assert "experiments used: 1 (exp-1)" in out
    with TwinService(make_settings(data, mlflow_tracking_uri=tracking)) as svc:
        active = svc.active_model(BRAND, "hcp")
        assert active.training_config["provenance"][EXPERIMENTS_KEY]["ids"] == ["exp-1"]
        refit = svc.load_model(active)
        assert refit.provenance[EXPERIMENTS_KEY]["count"] == 1
        # the refit moved toward the experiment
        old = svc.load_model(first)
        assert abs(_ate_draws(refit).mean() - 0.05) < abs(_ate_draws(old).mean() - 0.05)
    code, _, err = _run("fit", str(path), "--all", "--with-experiments", "--data-dir", str(data))
    assert code == 2 and "--with-experiments" in err
