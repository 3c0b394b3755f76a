"""The model layer: input checks, collapsed likelihood, parameterisation, diagnostics,
recovery, pooling, save/load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bayestwin.errors import InvalidInputError, NotFitError, UnavailableError
from bayestwin.model.diagnostics import compute_diagnostics
from bayestwin.model.fit import TwinGenerator, fit_all
from bayestwin.model.fitted import Diagnostics, FittedTwinModel
from bayestwin.model.history import check_history, collapse_history, latest_population
from bayestwin.model.io import MODEL_FORMAT_VERSION, load_model, save_model
from bayestwin.model.spec import (
    DiagnosticThresholds,
    SamplerSettings,
    TwinModelSpec,
    TwinPriors,
    default_spec,
)
from bayestwin.synthetic import SyntheticTwinData, generate_synthetic_twin_data, truth_posterior
from bayestwin.vocabulary import TwinType

BRAND = "Remibrutinib"
Fit = tuple[SyntheticTwinData, FittedTwinModel]
FAST = SamplerSettings(draws=500, tune=500, chains=2, cores=2, progressbar=False, random_seed=7)


def _data(twin_type: str = "hcp", family: str | None = None, **kw: object) -> SyntheticTwinData:
    args: dict[str, object] = {
        "n_units": 600,
        "n_periods": 4,
        "brands": (BRAND,),
        "n_segments": 4,
        "n_numeric": 3,
        "n_categorical": 1,
        "n_intervention_types": 3,
        "random_seed": 5,
    }
    args.update(kw)
    return generate_synthetic_twin_data(twin_type, family=family, **args)  # type: ignore[arg-type]


def _spec(s: SyntheticTwinData, **kw: object) -> TwinModelSpec:
    kw.setdefault("sampler", FAST)
    return default_spec(
        s.truth.twin_type,
        BRAND,
        family=s.truth.family,
        numeric_features=s.numeric_features,
        categorical_features=s.categorical_features,
        **kw,
    )


# -- bad input, refused before any sampling ----------------------------------------------


@pytest.fixture(scope="module")
def small() -> SyntheticTwinData:
    return _data(n_units=100, n_periods=2)


@pytest.fixture(scope="module")
def stand_in(small: SyntheticTwinData) -> Fit:
    """A fitted-model stand-in on the truth's posterior: save/load needs no sampling."""
    spec = _spec(small)
    model = FittedTwinModel(
        brand=BRAND,
        twin_type=TwinType(small.truth.twin_type),
        posterior=truth_posterior(small.truth, BRAND, n_draws=50, effect_sd=0.1),
        population=small.population(BRAND),
        diagnostics=Diagnostics(1.001, 900.0, 800.0, 0, 0.9, True),
        spec_hash=spec.spec_hash(),
        spec=spec.model_dump(mode="json"),
        provenance={"fit_seconds": 0.0},
    )
    return small, model


def test_missing_column_is_named(small: SyntheticTwinData) -> None:
    df = small.data.drop(columns=[small.numeric_features[0]])
    with pytest.raises(InvalidInputError, match=small.numeric_features[0]) as err:
        TwinGenerator(_spec(small)).fit(df)
    assert err.value.code == "invalid_history"
    assert err.value.field == small.numeric_features[0]


def test_nan_is_refused(small: SyntheticTwinData) -> None:
    df = small.data.copy()
    df.loc[3, small.numeric_features[1]] = np.nan
    with pytest.raises(InvalidInputError, match=rf"{small.numeric_features[1]}.*NaN") as err:
        TwinGenerator(_spec(small)).fit(df)
    assert err.value.field == small.numeric_features[1]


def test_non_numeric_feature_must_be_declared_categorical(small: SyntheticTwinData) -> None:
    spec = _spec(small).model_copy(
        update={"numeric_features": (*small.numeric_features, small.categorical_features[0])}
    )
    with pytest.raises(InvalidInputError, match="not numeric; declare it in categorical_features"):
        TwinGenerator(spec).fit(small.data)


def test_negative_intensity_is_refused(small: SyntheticTwinData) -> None:
    df = small.data.copy()
    df.loc[df.index[0], "intensity"] = -0.5
    with pytest.raises(InvalidInputError, match="intensity.*negative"):
        TwinGenerator(_spec(small)).fit(df)


def test_intensity_without_intervention_is_refused(small: SyntheticTwinData) -> None:
    df = small.data.copy()
    untreated = df.index[df["intervention_type"] == ""][0]
    df.loc[untreated, "intensity"] = 1.0
    with pytest.raises(InvalidInputError, match="no intervention_type") as err:
        TwinGenerator(_spec(small)).fit(df)
    assert err.value.field == "intervention_type"


@pytest.mark.parametrize(
    "column",
    [
        lambda it: (it != "").astype(int),
        lambda it: (it != "").astype(float).where(it != "", np.nan),
        lambda it: it.where(it == "", 1).astype(object),
        lambda it: it != "",
    ],
    ids=["int-0-1", "float-1-nan", "mixed-object", "bool"],
)
def test_non_string_intervention_type_is_refused(small: SyntheticTwinData, column) -> None:
    df = small.data.assign(intervention_type=column(small.data["intervention_type"]))
    with pytest.raises(InvalidInputError, match="must hold strings.*empty string or None") as err:
        check_history(df, _spec(small))
    assert (err.value.code, err.value.field) == ("invalid_history", "intervention_type")


def test_string_intervention_type_with_missing_untreated_is_accepted(
    small: SyntheticTwinData,
) -> None:
    it = small.data["intervention_type"]
    for column in (it.where(it != "", None), it.astype("string"), it.astype("category")):
        df = check_history(small.data.assign(intervention_type=column), _spec(small))
        assert set(df["intervention_type"]) == set(it)


def test_history_without_treated_rows_is_refused(small: SyntheticTwinData) -> None:
    df = small.data.assign(intervention_type="", intensity=0.0)
    with pytest.raises(InvalidInputError, match="no treated rows") as err:
        TwinGenerator(_spec(small)).build_model(df)
    assert (err.value.code, err.value.field) == ("invalid_history", "intervention_type")


def test_too_few_rows_for_brand(small: SyntheticTwinData) -> None:
    with pytest.raises(InvalidInputError, match="min_rows=10000"):
        TwinGenerator(_spec(small, min_rows=10_000)).fit(small.data)
    other = _spec(small).model_copy(update={"brand": "NoSuchBrand"})
    with pytest.raises(InvalidInputError, match="'NoSuchBrand'.* 0 rows"):
        TwinGenerator(other).fit(small.data)


def test_wrong_outcome_values_for_family(small: SyntheticTwinData) -> None:
    df = small.data.copy()
    df.loc[df.index[0], "outcome"] = 2
    with pytest.raises(InvalidInputError, match="0/1") as err:
        TwinGenerator(_spec(small)).fit(df)
    assert err.value.field == "outcome"


def test_spec_refuses_overlapping_feature_kinds() -> None:
    with pytest.raises(ValueError, match="both numeric and categorical"):
        TwinModelSpec(
            twin_type="hcp", brand="b", numeric_features=("a",), categorical_features=("a",)
        )


# -- the collapsed likelihood equals the per-row likelihood --------------------------------


@pytest.mark.parametrize("family", ["bernoulli", "poisson", "neg_binomial", "gaussian"])
def test_collapsed_likelihood_matches_per_row(family: str) -> None:
    """logp differences between two parameter points agree to 1e-8 (constants cancel)."""
    s = _data("patient", family=family, n_units=80, n_periods=5)
    collapsed = TwinGenerator(_spec(s)).build_model(s.data)
    plain = TwinGenerator(_spec(s, collapse=False)).build_model(s.data)
    rng = np.random.default_rng(0)
    logp_c = collapsed.compile_logp()
    logp_p = plain.compile_logp()
    pts = []
    for _ in range(3):
        pt = collapsed.initial_point()
        pts.append({k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in pt.items()})
    diffs_c = [logp_c(p) - logp_c(pts[0]) for p in pts[1:]]
    diffs_p = [logp_p(p) - logp_p(pts[0]) for p in pts[1:]]
    np.testing.assert_allclose(diffs_c, diffs_p, rtol=1e-8, atol=1e-6)


def test_collapse_shrinks_rows_by_periods() -> None:
    s = _data(n_units=50, n_periods=6)
    spec = _spec(s)
    design, total, count, _ = collapse_history(s.data, spec)
    # every unit keeps its design across periods: one likelihood row per unit
    assert len(design) == 50
    assert count.sum() == 300
    assert total.sum() == s.data["outcome"].sum()


# -- the diagnostics gate ------------------------------------------------------------------


def _trace(
    chains: int = 4,
    draws: int = 500,
    *,
    stuck: bool = False,
    divergent: int = 0,
    sticky: bool = False,
) -> xr.DataTree:
    """A DataTree shaped like a sampler's: i.i.d. draws unless told otherwise."""
    rng = np.random.default_rng(3)
    mu_a = rng.normal(size=(chains, draws))
    if stuck:  # every chain in its own place: r_hat far above 1
        mu_a = mu_a + 5.0 * np.arange(chains)[:, None]
    energy = rng.normal(size=(chains, draws))
    if sticky:  # energy as a random walk: momentum resampling barely moves it
        energy = energy.cumsum(axis=1)
    diverging = np.zeros((chains, draws), dtype=bool)
    diverging.flat[:divergent] = True
    dims = ("chain", "draw")
    posterior = xr.Dataset(
        {
            "mu_a": (dims, mu_a),
            "a": ((*dims, "segment"), rng.normal(size=(chains, draws, 3))),
            "y_hat": (dims, np.zeros((chains, draws))),  # not a parameter: not checked
        }
    )
    stats = xr.Dataset({"energy": (dims, energy), "diverging": (dims, diverging)})
    return xr.DataTree.from_dict({"posterior": posterior, "sample_stats": stats})


def test_gate_passes_well_mixed_chains() -> None:
    diag = compute_diagnostics(_trace(), DiagnosticThresholds())
    assert diag.passed, diag.reasons
    assert diag.max_r_hat < 1.01 and diag.min_ess_bulk > 400 and diag.min_bfmi > 0.3
    assert diag.divergences == 0


@pytest.mark.parametrize(
    ("trace", "reason"),
    [
        (_trace(stuck=True), "max r_hat"),
        (_trace(draws=100), "min ESS bulk"),
        (_trace(divergent=3), "3 divergent transition(s) > 0"),
        (_trace(sticky=True), "min BFMI"),
        (_trace(chains=1), "max r_hat nan"),
    ],
)
def test_gate_names_what_failed(trace: xr.DataTree, reason: str) -> None:
    diag = compute_diagnostics(trace, DiagnosticThresholds())
    assert not diag.passed
    assert any(r.startswith(reason) for r in diag.reasons), diag.reasons


def test_gate_thresholds_are_the_specs() -> None:
    loose = DiagnosticThresholds(min_ess_bulk=50, min_ess_tail=50, max_divergences=5)
    assert compute_diagnostics(_trace(draws=100, divergent=3), loose).passed


# -- fitting ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hcp_fit() -> Fit:
    s = _data("hcp", n_units=800, n_periods=5)
    return s, TwinGenerator(_spec(s)).fit(s.data)


def _recovery(s: SyntheticTwinData, model: FittedTwinModel) -> None:
    """True effects inside the 90% intervals.

    Checked per intervention type on the population ATE at intensity 1 (every type
    must be inside), and per (type, segment) on the segment's ATE: at least 70% of
    those cells inside their 90% intervals (a 90% interval misses 10% of cells by
    design, and small segments are pooled toward their type's mean). ATEs, not raw
    coefficients, are compared: the model standardises features by their sample
    moments, the truth by its own constants, so ``tau`` differs by ``gamma . z``.
    """
    post = model.posterior
    pop = s.population(BRAND)
    inside = []
    for k in post.intervention_types:
        effect = post.expected_outcome(pop, k, 1.0) - post.expected_outcome(pop)
        lo, hi = np.quantile(effect.mean(axis=1), [0.05, 0.95])
        true_ate = s.truth.ate(pop, k, 1.0).ate
        assert lo <= true_ate <= hi, (k, lo, true_ate, hi)
        for seg in post.encoder.segments:
            m = (pop["segment"] == seg).to_numpy()
            lo, hi = np.quantile(effect[:, m].mean(axis=1), [0.05, 0.95])
            inside.append(lo <= s.truth.ate(pop[m], k, 1.0).ate <= hi)
    assert np.mean(inside) >= 0.7, inside


@pytest.mark.slow
def test_recovery_bernoulli(hcp_fit: Fit) -> None:
    s, model = hcp_fit
    assert model.diagnostics.divergences <= 5
    _recovery(s, model)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("twin_type", "family"),
    [("patient", "poisson"), ("patient", "neg_binomial"), ("territory", "gaussian")],
)
def test_recovery_other_families(twin_type: str, family: str) -> None:
    s = _data(twin_type, family=family, n_units=800, n_periods=5)
    model = TwinGenerator(_spec(s)).fit(s.data, keep_trace=False)
    _recovery(s, model)


@pytest.mark.slow
def test_partial_pooling_shrinks_small_segment() -> None:
    """A segment with few units is pulled from its raw estimate toward the type mean."""
    s = _data("territory", family="gaussian", n_units=900, n_periods=3, random_seed=21)
    df = s.data
    seg_counts = df.groupby("segment")["unit_id"].nunique()
    small_seg = seg_counts.idxmin()
    k = sorted(s.truth.intervention_types)[0]
    units = df[df["segment"] == small_seg].drop_duplicates("unit_id")
    keep = pd.concat(
        [
            units.loc[units["intervention_type"] == k, "unit_id"].iloc[:6],
            units.loc[units["intervention_type"] == "", "unit_id"].iloc[:6],
        ]
    )
    df = df[(df["segment"] != small_seg) | df["unit_id"].isin(keep)]
    model = TwinGenerator(_spec(s)).fit(df, keep_trace=False)
    post = model.posterior
    k_i = post.intervention_types.index(k)
    seg_i = post.encoder.segments.index(small_seg)
    sub = df[df["segment"] == small_seg]
    treated = sub[(sub["intervention_type"] == k)]
    control = sub[sub["intervention_type"] == ""]
    if treated.empty or control.empty:
        pytest.fail("the small segment needs treated and control rows for this test")
    # raw (no-pooling) estimate on the model's standardised link scale, per unit intensity
    g = treated["intensity"].to_numpy()
    raw = (treated["outcome"].mean() - control["outcome"].mean()) / post.outcome_scale / g.mean()
    pooled_mean = post.tau[:, k_i, :].mean()
    small_mean = post.tau[:, k_i, seg_i].mean()
    # shrinkage: the posterior sits between the raw estimate and the pooled mean
    assert min(raw, pooled_mean) - 0.02 <= small_mean <= max(raw, pooled_mean) + 0.02
    assert abs(small_mean - pooled_mean) < abs(raw - pooled_mean)


@pytest.mark.slow
def test_diagnostics_gate_blocks_a_poor_fit() -> None:
    s = _data(n_units=200, n_periods=2)
    poor = SamplerSettings(draws=30, tune=30, chains=2, cores=2, progressbar=False)
    model = TwinGenerator(_spec(s, sampler=poor)).fit(s.data, keep_trace=False)
    assert not model.diagnostics.passed
    assert model.diagnostics.reasons
    with pytest.raises(NotFitError, match="not fit for use") as err:
        model.require_usable()
    assert err.value.code == "model_not_usable"
    forced = dataclasses.replace(model, override_diagnostics=True)
    assert forced.fit_for_use
    forced.require_usable()


def test_unknown_intervention_at_prediction_time(stand_in: Fit) -> None:
    s, model = stand_in
    with pytest.raises(ValueError, match="unknown intervention_type 'teleportation'"):
        model.posterior.expected_outcome(s.population(BRAND), "teleportation")


def test_population_is_latest_period(small: SyntheticTwinData) -> None:
    spec = _spec(small)
    df = check_history(small.data, spec)
    pop = latest_population(df, spec)
    assert pop["unit_id"].is_unique
    assert len(pop) == small.data["unit_id"].nunique()
    assert {"segment", *spec.numeric_features, *spec.categorical_features} <= set(pop.columns)
    last = df.sort_values("period", kind="stable").groupby("unit_id").tail(1)
    last = last.assign(unit_id=last["unit_id"].astype(str)).set_index("unit_id")
    feature = spec.numeric_features[0]
    np.testing.assert_array_equal(
        pop.set_index("unit_id")[feature], last.loc[pop["unit_id"], feature]
    )


@pytest.mark.slow
def test_provenance(hcp_fit: Fit) -> None:
    _, model = hcp_fit
    prov = model.provenance
    assert prov["random_seed"] == FAST.random_seed
    assert prov["fit_seconds"] > 0
    assert len(prov["data_hash"]) == 64
    assert {"pymc", "arviz", "numpy"} <= set(prov["packages"])
    # a panel with time effects: one likelihood cell per (unit, period)
    assert prov["n_likelihood_rows"] == prov["n_rows"]


# -- save and load ------------------------------------------------------------------------


@pytest.mark.slow
def test_round_trip(tmp_path: Path, hcp_fit: Fit) -> None:
    import arviz as az

    s, model = hcp_fit
    path = save_model(model, tmp_path / "m")
    back = load_model(path, load_trace=True)
    assert back.spec_hash == model.spec_hash
    pop = s.population(BRAND)
    k = back.posterior.intervention_types[0]
    np.testing.assert_array_equal(
        back.posterior.expected_outcome(pop, k, 1.5),
        model.posterior.expected_outcome(pop, k, 1.5),
    )
    pd.testing.assert_frame_equal(back.population, model.population)
    a = az.summary(model.trace, var_names=["tau"])
    b = az.summary(back.trace, var_names=["tau"])
    pd.testing.assert_frame_equal(pd.DataFrame(a), pd.DataFrame(b))
    assert back.diagnostics == model.diagnostics


def test_round_trip_without_trace(tmp_path: Path, stand_in: Fit) -> None:
    s, model = stand_in
    path = save_model(model, tmp_path / "m")
    assert not (path / "trace.nc").exists()
    meta = json.loads((path / "metadata.json").read_text())
    assert (meta["format_version"], meta["spec_hash"]) == (MODEL_FORMAT_VERSION, model.spec_hash)
    back = load_model(path, load_trace=True)
    assert back.trace is None
    assert (back.brand, back.twin_type, back.spec_hash) == (
        model.brand,
        model.twin_type,
        model.spec_hash,
    )
    assert back.spec == model.spec
    assert back.diagnostics == model.diagnostics
    pd.testing.assert_frame_equal(back.population, model.population)
    k = back.posterior.intervention_types[0]
    pop = s.population(BRAND)
    np.testing.assert_array_equal(
        back.posterior.expected_outcome(pop, k, 0.5),
        model.posterior.expected_outcome(pop, k, 0.5),
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("bayestwin_version", "0.0.1", "saved by bayestwin 0.0.1"),
        ("format_version", "1", "has format '1'"),
    ],
)
def test_load_refuses_other_version(
    tmp_path: Path, stand_in: Fit, key: str, value: str, message: str
) -> None:
    _, model = stand_in
    path = save_model(model, tmp_path / "m")
    meta = json.loads((path / "metadata.json").read_text())
    meta[key] = value
    (path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(UnavailableError, match=message) as err:
        load_model(path)
    assert err.value.code == "model_version"


def test_load_refuses_tampered_spec(tmp_path: Path, stand_in: Fit) -> None:
    _, model = stand_in
    path = save_model(model, tmp_path / "m")
    spec = json.loads((path / "spec.json").read_text())
    spec["min_rows"] = 51
    (path / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(UnavailableError, match="hashes to") as err:
        load_model(path)
    assert err.value.code == "model_version"


def test_load_refuses_a_directory_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no metadata.json"):
        load_model(tmp_path)


def test_save_refuses_existing_dir(tmp_path: Path, stand_in: Fit) -> None:
    _, model = stand_in
    save_model(model, tmp_path / "m")
    with pytest.raises(FileExistsError):
        save_model(model, tmp_path / "m")


@pytest.mark.slow
def test_fit_all_fits_every_brand() -> None:
    s = generate_synthetic_twin_data(
        "hcp",
        n_units=120,
        n_periods=2,
        brands=("A", "B"),
        n_segments=2,
        n_numeric=2,
        n_categorical=0,
        random_seed=1,
    )
    base = default_spec(
        "hcp",
        "A",
        family="bernoulli",
        numeric_features=s.numeric_features,
        sampler=SamplerSettings(draws=50, tune=50, chains=1, cores=1, progressbar=False),
    )
    models = fit_all(s.data, base=base, keep_trace=False)
    assert sorted(b for b, _ in models) == ["A", "B"]
    assert models[("B", TwinType.HCP)].brand == "B"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pymc", "numpyro"])
def test_other_backends_fit(backend: str) -> None:
    """PyMC's own NUTS and numpyro are options; plumbing only (tiny draws)."""
    if backend == "numpyro":
        pytest.importorskip("numpyro", reason="numpyro comes with the [jax] extra")
    s = _data(n_units=80, n_periods=2, n_segments=2, n_numeric=2, n_categorical=0)
    sampler = SamplerSettings(
        backend=backend, draws=20, tune=20, chains=2, cores=1, progressbar=False
    )
    model = TwinGenerator(_spec(s, sampler=sampler)).fit(s.data, keep_trace=False)
    assert model.posterior.n_draws == 40
    assert model.provenance["sampler"] == backend


def test_effect_parameterization_follows_the_data() -> None:
    """'auto' centres a level of the effect hierarchy only when all its groups are rich."""

    def free(s: SyntheticTwinData, **kw: object) -> set[str]:
        return set(TwinGenerator(_spec(s, **kw)).build_model(s.data).named_vars)

    rich = _data("patient", n_units=6000, n_periods=12, n_segments=2)
    names = free(rich)
    # every cell rich: the cells are centred; the type means only under a fiftieth of
    # their prior scale, which a wider scale reaches on the same data
    assert "z_tau" not in names and "z_type" in names
    wide = TwinPriors(effect_type_sd=1.5)
    names = free(rich, priors=wide)
    assert not {"z_type", "z_tau"} & names and {"tau_type", "tau"} <= names
    assert {"z_type", "z_tau"} <= free(rich, priors=wide, effect_parameterization="non_centred")
    # type means rich, type x segment cells not: only the type level is centred
    moderate = _data("patient", n_units=3000, n_periods=8, n_segments=3)
    names = free(moderate, priors=wide)
    assert "z_type" not in names and "z_tau" in names
    sparse = _data("patient", n_units=60, n_periods=1, n_segments=3)
    assert {"z_type", "z_tau"} <= free(sparse)
    # one rare type keeps its level non-centred
    rare = _data("patient", n_units=6000, n_periods=12, n_segments=2, type_weights=[1, 1, 0.01])
    assert {"z_type", "z_tau"} <= free(rare, priors=wide)


@pytest.mark.parametrize(("n_types", "learned"), [(1, False), (2, False), (3, True)])
def test_the_type_spread_is_learned_from_three_types(n_types: int, learned: bool) -> None:
    """Two types inform their spread through one contrast: it is the prior's scale."""
    s = _data("patient", n_units=300, n_periods=2, n_intervention_types=n_types)
    priors = TwinPriors(effect_type_sd=0.25)
    model = TwinGenerator(_spec(s, priors=priors)).build_model(s.data)
    assert ("sigma_type" in model.named_vars) is learned
    if n_types == 2:
        import pymc as pm

        # the two type means sit at mu_tau -+ 0.25 z/sqrt(2): their difference has prior
        # sd 0.25 sqrt(2) (4,000 draws: the sd's relative error is about 1%; 5% allowed)
        draws = pm.draw(model["tau_type"], draws=4000, random_seed=1)
        diff = draws[:, 0] - draws[:, 1]
        assert diff.std() == pytest.approx(0.25 * np.sqrt(2), rel=0.05)


def test_intercept_parameterization_follows_the_data() -> None:
    """'auto' centres the segment intercepts only when every segment is rich in data."""
    rich = _data(n_units=2000, n_periods=5, n_segments=3)
    sparse = _data(n_units=60, n_periods=1, n_segments=3)
    assert "z_a" not in TwinGenerator(_spec(rich)).build_model(rich.data).named_vars
    assert "z_a" in TwinGenerator(_spec(sparse)).build_model(sparse.data).named_vars
    forced = _spec(rich, intercept_parameterization="non_centred")
    assert "z_a" in TwinGenerator(forced).build_model(rich.data).named_vars
