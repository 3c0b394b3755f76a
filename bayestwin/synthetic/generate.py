"""Draw a synthetic panel history and its ground truth.

:func:`generate_synthetic_twin_data` draws a panel of units x periods for one twin type
from the same hierarchical GLM that :mod:`bayestwin.model` fits (DESIGN.md, "The
statistics")::

    eta = a[brand, segment] + z . beta + c[level]
          + treated * g(intensity) * (tau[brand, k, segment] + z_int . gamma[k])

with ``z`` the numeric features standardised by the generating process's own location
and scale, ``z_int`` the first ``n_interacting`` of them, and the dose-response
``g(s) = (1 - exp(-lam * s)) / (1 - exp(-lam))`` (monotone, ``g(0) = 0``, ``g(1) = 1``).

Every unit keeps its features, segment and assignment across periods; outcomes are
independent across periods given the mean. Assignment is random, or confounded
(``confounding > 0``): units with a high untreated mean (given its features) are treated
more often.

The panel options (:mod:`bayestwin.synthetic.panel`, all off by default) add unit random
intercepts, staggered or on/off adoption, trend and seasonality, adoption timing that
follows the hidden unit level, a threshold in the effect and Student-t noise; the mean
of a row is then that of its unit, period and treatment in that period.

The history's columns (the contract every later module reads):

``unit_id`` (str), ``brand`` (str), ``twin_type`` (str), ``period`` (int),
``segment`` (str), the numeric feature columns (float), the categorical feature
columns (str), ``intervention_type`` (str, ``""`` when untreated), ``intensity``
(float, 0 when untreated) and ``outcome`` (float for gaussian, int otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import special

from bayestwin.core.families import Family, check_family
from bayestwin.synthetic.catalog import (
    BASELINE,
    CATEGORICAL,
    DEFAULT_DISPERSION,
    DEFAULT_EFFECTS,
    DEFAULT_FAMILY,
    GAUSSIAN_SCALE,
    INTENSITY_GRID,
    INTERVENTIONS,
    NUMERIC,
    SEGMENTS,
)
from bayestwin.synthetic.panel import Adoption, PanelOptions, adoption_schedule
from bayestwin.synthetic.truth import BrandTruth, GroundTruth, SyntheticTwinData
from bayestwin.vocabulary import TwinType

__all__ = ["generate_synthetic_twin_data"]

#: Spread of the intercept-free coefficients (features, categorical levels).
_COEF_SD = 0.25


@dataclass(frozen=True)
class _Arguments:
    """The arguments of :func:`generate_synthetic_twin_data`, as given."""

    twin_type: TwinType | str
    n_units: int
    n_periods: int
    brands: Sequence[str]
    n_segments: int
    n_numeric: int
    n_categorical: int
    n_intervention_types: int
    family: Family | None
    effect_means: Mapping[str, float] | Sequence[float] | None
    effect_segment_sd: float
    interaction_sd: float
    n_interacting: int
    dose_rate: float
    treated_fraction: float
    type_weights: Sequence[float] | None
    confounding: float
    segment_concentration: float
    feature_correlation: float
    dispersion: float | None
    random_seed: int | None
    unit_icc: float
    adoption: Adoption
    min_pre_periods: int
    on_share: float
    trend: float
    season_amplitude: float
    season_length: int
    timing_confounding: float
    unit_trend_sd: float
    trend_confounding: float
    threshold_effect: float
    threshold_at: float
    noise_df: float | None

    def panel(self) -> PanelOptions:
        """The panel options among the arguments."""
        return PanelOptions(**{f.name: getattr(self, f.name) for f in fields(PanelOptions)})


@dataclass(frozen=True)
class _Layout:
    """What the arguments resolve to: names, feature scales, effect means, weights."""

    twin_type: TwinType
    family: Family
    segments: tuple[str, ...]
    types: tuple[str, ...]
    numeric: tuple[str, ...]
    loc: NDArray
    scale: NDArray
    categorical: dict[str, tuple[str, ...]]
    means: NDArray
    weights: NDArray
    dispersion: float | None


def _check_arguments(a: _Arguments, tt: TwinType) -> None:
    if a.n_units < 1:
        raise ValueError(f"n_units must be >= 1, got {a.n_units}")
    if a.n_periods < 1:
        raise ValueError(f"n_periods must be >= 1, got {a.n_periods}")
    for name, value, low, table in (
        ("n_segments", a.n_segments, 1, SEGMENTS[tt]),
        ("n_numeric", a.n_numeric, 1, NUMERIC[tt]),
        ("n_categorical", a.n_categorical, 0, CATEGORICAL[tt]),
    ):
        if not low <= value <= len(table):
            raise ValueError(f"{name} must be in [{low}, {len(table)}], got {value}")
    if not 1 <= a.n_intervention_types <= len(INTERVENTIONS[tt]):
        raise ValueError(f"n_intervention_types must be in [1, {len(INTERVENTIONS[tt])}]")
    if not 0.0 <= a.treated_fraction < 1.0:
        raise ValueError(f"treated_fraction must be in [0, 1), got {a.treated_fraction}")
    if a.dose_rate <= 0:
        raise ValueError(f"dose_rate must be > 0, got {a.dose_rate}")
    if not 0 <= a.n_interacting <= a.n_numeric:
        raise ValueError(f"n_interacting must be in [0, n_numeric={a.n_numeric}]")
    if a.confounding < 0:
        raise ValueError(f"confounding must be >= 0, got {a.confounding}")
    if isinstance(a.brands, str) or not a.brands:
        raise ValueError("brands must be a non-empty sequence of brand names")
    if len(set(a.brands)) != len(a.brands):
        raise ValueError(f"brands must be distinct, got {list(a.brands)}")
    if a.dispersion is not None and not a.dispersion > 0:
        raise ValueError(f"dispersion must be > 0, got {a.dispersion}")


def _effect_means(a: _Arguments, family: Family, types: tuple[str, ...]) -> NDArray:
    if a.effect_means is None:
        return np.array(DEFAULT_EFFECTS[family][: a.n_intervention_types], dtype=float)
    if isinstance(a.effect_means, Mapping):
        unknown = set(a.effect_means) - set(types)
        if unknown:
            raise ValueError(f"effect_means names unknown types {sorted(unknown)}; known: {types}")
        return np.array([float(a.effect_means.get(k, 0.0)) for k in types])
    means = np.asarray(a.effect_means, dtype=float)
    if means.shape != (a.n_intervention_types,):
        raise ValueError(f"effect_means needs {a.n_intervention_types} values")
    return means


def _type_weights(a: _Arguments) -> NDArray:
    n = a.n_intervention_types
    weights = np.ones(n) if a.type_weights is None else np.asarray(a.type_weights, float)
    if weights.shape != (n,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("type_weights must hold one non-negative weight per intervention type")
    return weights / weights.sum()


def _resolve(a: _Arguments) -> _Layout:
    """Check the arguments and resolve names, scales, effect means and weights."""
    tt = TwinType(a.twin_type)
    fam: Family = check_family(a.family) if a.family is not None else DEFAULT_FAMILY[tt]
    _check_arguments(a, tt)
    types = INTERVENTIONS[tt][: a.n_intervention_types]
    numeric = NUMERIC[tt][: a.n_numeric]
    means = _effect_means(a, fam, types)
    dispersion = a.dispersion if a.dispersion is not None else DEFAULT_DISPERSION.get(fam)
    a.panel().check(fam, a.n_periods)
    return _Layout(
        twin_type=tt,
        family=fam,
        segments=SEGMENTS[tt][: a.n_segments],
        types=types,
        numeric=tuple(n for n, _, _ in numeric),
        loc=np.array([lc for _, lc, _ in numeric]),
        scale=np.array([sc for _, _, sc in numeric]),
        categorical=dict(CATEGORICAL[tt][: a.n_categorical]),
        means=means,
        weights=_type_weights(a),
        dispersion=dispersion,
    )


def _draw_brand_truth(a: _Arguments, lay: _Layout, rng: np.random.Generator) -> BrandTruth:
    """Draw one brand's true parameters."""
    base = BASELINE[lay.family]
    intercept = base + rng.normal(0.0, 0.1) + rng.normal(0.0, 0.3, a.n_segments)
    beta = rng.normal(0.0, _COEF_SD, a.n_numeric)
    cat_effects = {
        col: np.concatenate([[0.0], rng.normal(0.0, _COEF_SD, len(levels) - 1)])
        for col, levels in lay.categorical.items()
    }
    n_types = a.n_intervention_types
    tau = lay.means[:, None] + rng.normal(0.0, a.effect_segment_sd, (n_types, a.n_segments))
    gamma = rng.normal(0.0, a.interaction_sd, (n_types, a.n_interacting))
    if lay.family == "gaussian":
        # keep gaussian coefficients a fraction of the intercept's scale
        beta *= 0.4
        cat_effects = {c: v * 0.4 for c, v in cat_effects.items()}
        intercept = 1.0 + (intercept - base) * 0.4
    return BrandTruth(intercept, beta, cat_effects, tau, gamma)


def _draw_units(
    a: _Arguments, lay: _Layout, rng: np.random.Generator, brand_index: int, brand: str
) -> pd.DataFrame:
    """Draw one brand's units: segment (uneven shares), numeric and categorical features."""
    n_units, n_numeric = a.n_units, a.n_numeric
    rho = a.feature_correlation
    corr = np.full((n_numeric, n_numeric), rho) + (1 - rho) * np.eye(n_numeric)
    chol = np.linalg.cholesky(corr)
    shares = rng.dirichlet(np.full(a.n_segments, a.segment_concentration))
    seg_idx = rng.choice(a.n_segments, size=n_units, p=shares)
    seg_shift = rng.normal(0.0, 0.5, (a.n_segments, n_numeric))
    z = rng.standard_normal((n_units, n_numeric)) @ chol.T + seg_shift[seg_idx]
    x = lay.loc + lay.scale * z
    cat_cols: dict[str, NDArray] = {}
    for col, levels in lay.categorical.items():
        latent = 0.8 * z[:, 0] + rng.standard_normal(n_units)
        cuts = np.quantile(latent, np.linspace(0, 1, len(levels) + 1)[1:-1])
        cat_cols[col] = np.asarray(levels, dtype=object)[np.searchsorted(cuts, latent)]
    return pd.DataFrame(
        {
            "unit_id": [f"{lay.twin_type.value}-{brand_index:02d}-{i:06d}" for i in range(n_units)],
            "brand": brand,
            "segment": np.asarray(lay.segments, dtype=object)[seg_idx],
            **{name: x[:, j] for j, name in enumerate(lay.numeric)},
            **cat_cols,
        }
    )


def _ground_truth(
    a: _Arguments,
    lay: _Layout,
    brands: dict[str, BrandTruth],
    unit_effects: pd.Series | None,
    unit_trends: pd.Series | None = None,
) -> GroundTruth:
    opts = a.panel()
    return GroundTruth(
        twin_type=lay.twin_type,
        family=lay.family,
        segments=tuple(lay.segments),
        intervention_types=tuple(lay.types),
        numeric_features=lay.numeric,
        numeric_loc=lay.loc,
        numeric_scale=lay.scale,
        categorical_features={c: tuple(v) for c, v in lay.categorical.items()},
        n_interacting=a.n_interacting,
        dose_rate=float(a.dose_rate),
        brands=brands,
        dispersion=lay.dispersion,
        outcome_scale=GAUSSIAN_SCALE if lay.family == "gaussian" else 1.0,
        n_periods=a.n_periods,
        unit_effects=unit_effects,
        unit_sd=opts.unit_sd(lay.family, lay.dispersion),
        unit_trends=unit_trends,
        trend=opts.trend,
        season_amplitude=opts.season_amplitude,
        season_length=opts.season_length,
        threshold_effect=opts.threshold_effect,
        threshold_at=opts.threshold_at,
        noise_df=opts.noise_df,
    )


def _unit_effects(
    a: _Arguments, lay: _Layout, frames: list[pd.DataFrame], rng: np.random.Generator
) -> pd.Series | None:
    """Each unit's intercept ``u_i ~ Normal(0, sigma_u**2)`` (None without unit effects)."""
    sigma_u = a.panel().unit_sd(lay.family, lay.dispersion)
    if sigma_u == 0.0:
        return None
    ids = np.concatenate([f["unit_id"].to_numpy(dtype=str) for f in frames])
    return pd.Series(rng.normal(0.0, sigma_u, len(ids)), index=pd.Index(ids, name="unit_id"))


def _unit_trends(
    a: _Arguments, frames: list[pd.DataFrame], rng: np.random.Generator
) -> pd.Series | None:
    """Each unit's hidden drift ``v_i ~ Normal(0, unit_trend_sd**2)`` (None without)."""
    sd = a.panel().unit_trend_sd
    if sd == 0.0:
        return None
    ids = np.concatenate([f["unit_id"].to_numpy(dtype=str) for f in frames])
    return pd.Series(rng.normal(0.0, sd, len(ids)), index=pd.Index(ids, name="unit_id"))


def _assign(
    a: _Arguments,
    lay: _Layout,
    truth: GroundTruth,
    units: pd.DataFrame,
    rng: np.random.Generator,
    extra_logit: NDArray | None = None,
) -> tuple[NDArray, NDArray, NDArray]:
    """Assign each unit a type (``""``: untreated) and an intensity; its mean outcome.

    ``extra_logit`` adds to each unit's log-odds of treatment (the hidden-level timing).
    """
    n = len(units)
    eta0 = truth.linear_predictor(units, None, unit_effects=False)
    tf = a.treated_fraction
    logit_p = np.log(tf / (1 - tf)) if tf > 0 else -np.inf
    if a.confounding > 0 and np.std(eta0) > 0:
        logit_p = logit_p + a.confounding * (eta0 - eta0.mean()) / eta0.std()
    if extra_logit is not None:
        logit_p = logit_p + extra_logit
    p_treat = special.expit(logit_p) * np.ones(n)
    treated = rng.random(n) < p_treat
    k_idx = rng.choice(a.n_intervention_types, size=n, p=lay.weights)
    itype = np.where(treated, np.asarray(lay.types, dtype=object)[k_idx], "")
    intensity = np.where(treated, rng.choice(np.array(INTENSITY_GRID), size=n), 0.0)
    mu = np.empty(n)
    for k in lay.types:
        m = itype == k
        if m.any():
            mu[m] = truth.expected_outcome(units[m], k, intensity[m])
    m0 = ~treated
    if m0.any():
        mu[m0] = truth.expected_outcome(units[m0], None)
    return itype, intensity, mu


def _row_means(
    truth: GroundTruth, rows: pd.DataFrame, itype: NDArray, dose: NDArray, period: NDArray
) -> NDArray:
    """The mean outcome of every row, in its own period and treatment."""
    mu = np.empty(len(rows))
    for k in ("", *truth.intervention_types):
        m = itype == k
        if m.any():
            mu[m] = truth.expected_outcome(rows[m], k or None, dose[m], period=period[m])
    return mu


def _panel(
    a: _Arguments,
    lay: _Layout,
    truth: GroundTruth,
    units: pd.DataFrame,
    rngs: tuple[np.random.Generator, np.random.Generator],
) -> pd.DataFrame:
    """One brand's panel: every unit repeated over the periods, with its outcomes.

    ``rngs`` is the history's stream and the panel options' own stream.
    """
    rng, panel_rng = rngs
    opts = a.panel()
    level = truth.unit_level(units)[0] if truth.unit_effects is not None else None
    drift = truth._drift(units) if truth.unit_trends is not None else None
    extra_logit = opts.adoption_logit(level, drift)
    itype, intensity, mu = _assign(a, lay, truth, units, rng, extra_logit)
    periods = a.n_periods
    panel = units.loc[units.index.repeat(periods)].reset_index(drop=True)
    panel.insert(2, "twin_type", lay.twin_type.value)
    panel.insert(3, "period", np.tile(np.arange(periods), len(units)))
    if not opts.time_varying:
        panel["intervention_type"] = np.repeat(itype, periods)
        panel["intervention_type"] = panel["intervention_type"].astype(str)
        panel["intensity"] = np.repeat(intensity, periods)
        panel["outcome"] = truth.sample_outcomes(np.repeat(mu, periods), rng)
        return panel
    on, dose = adoption_schedule(opts, itype != "", intensity, periods, level, panel_rng)
    row_type = np.where(on.ravel(), np.repeat(itype, periods), "").astype(str)
    row_dose = dose.ravel().astype(float)
    panel["intervention_type"] = row_type
    panel["intensity"] = row_dose
    mu_rows = _row_means(truth, panel, row_type, row_dose, panel["period"].to_numpy())
    panel["outcome"] = truth.sample_outcomes(mu_rows, rng)
    return panel


def _draw(a: _Arguments) -> SyntheticTwinData:
    lay = _resolve(a)
    rng = np.random.default_rng(a.random_seed)
    # the panel options draw from their own stream: the rest of the history is the same
    panel_rng = rng.spawn(1)[0]
    brands: dict[str, BrandTruth] = {}
    frames: list[pd.DataFrame] = []
    for b_i, brand in enumerate(a.brands):
        brands[brand] = _draw_brand_truth(a, lay, rng)
        frames.append(_draw_units(a, lay, rng, b_i, brand))
    unit_effects = _unit_effects(a, lay, frames, panel_rng)
    truth = _ground_truth(a, lay, brands, unit_effects, _unit_trends(a, frames, panel_rng))
    rngs = (rng, panel_rng)
    data = pd.concat([_panel(a, lay, truth, u, rngs) for u in frames], ignore_index=True)
    for col in ("unit_id", "brand", "twin_type", "segment", *lay.categorical):
        data[col] = data[col].astype(str)
    return SyntheticTwinData(
        data=data,
        truth=truth,
        numeric_features=list(lay.numeric),
        categorical_features=list(lay.categorical),
    )


def generate_synthetic_twin_data(
    twin_type: TwinType | str = TwinType.HCP,
    *,
    n_units: int = 1000,
    n_periods: int = 4,
    brands: Sequence[str] = ("Remibrutinib", "Fabhalta"),
    n_segments: int = 5,
    n_numeric: int = 4,
    n_categorical: int = 1,
    n_intervention_types: int = 3,
    family: Family | None = None,
    effect_means: Mapping[str, float] | Sequence[float] | None = None,
    effect_segment_sd: float = 0.1,
    interaction_sd: float = 0.08,
    n_interacting: int = 2,
    dose_rate: float = 1.0,
    treated_fraction: float = 0.5,
    type_weights: Sequence[float] | None = None,
    confounding: float = 0.0,
    segment_concentration: float = 4.0,
    feature_correlation: float = 0.35,
    dispersion: float | None = None,
    random_seed: int | None = 0,
    unit_icc: float = 0.0,
    adoption: Adoption = "fixed",
    min_pre_periods: int = 2,
    on_share: float = 0.5,
    trend: float = 0.0,
    season_amplitude: float = 0.0,
    season_length: int = 4,
    timing_confounding: float = 0.0,
    unit_trend_sd: float = 0.0,
    trend_confounding: float = 0.0,
    threshold_effect: float = 0.0,
    threshold_at: float = 0.0,
    noise_df: float | None = None,
) -> SyntheticTwinData:
    """Draw a synthetic panel history for one twin type, with its ground truth.

    Parameters
    ----------
    twin_type : TwinType or str
        ``"hcp"``, ``"patient"`` or ``"territory"``; picks names and the default family.
    n_units, n_periods, brands : int, int, sequence of str
        Units per brand, periods (rows) per unit, and the brand names.
    n_segments, n_intervention_types, n_numeric, n_categorical : int
        Numbers of segments (of uneven sizes), intervention types, and numeric and
        categorical features. Numerics are correlated (``feature_correlation``) and
        shifted by segment; categoricals are cut from a latent correlated with the first.
    family : str, optional
        ``"bernoulli"``, ``"poisson"``, ``"neg_binomial"`` or ``"gaussian"``; default by
        twin type (hcp: bernoulli, patient: poisson, territory: gaussian).
    effect_means : mapping or sequence of float, optional
        Mean effect of each type on the link scale (gaussian: a fraction of the outcome
        scale); zero and negative values are allowed.
    effect_segment_sd, interaction_sd, n_interacting : float, float, int
        Spread of effects across segments around each type's mean, and of the
        interactions ``gamma`` of the first ``n_interacting`` numerics with treatment.
    dose_rate, treated_fraction : float
        Curvature of the dose-response (> 0); share of units treated, in [0, 1).
    type_weights : sequence of float, optional
        Relative frequency of each intervention type (to make a type rare).
    confounding : float
        0 for random assignment; > 0: the log-odds of treatment rise by ``confounding``
        per sd of the untreated mean given the features.
    segment_concentration, feature_correlation : float
        Dirichlet concentration of segment shares (small: uneven), latent feature correlation.
    dispersion : float, optional
        ``alpha`` for neg_binomial (default 5), ``sigma`` for gaussian as a fraction of
        the outcome scale (default 0.25).
    random_seed : int, optional
        Seed; the same seed gives the same data and truth.
    unit_icc, adoption, min_pre_periods, on_share, trend, season_amplitude, ... : optional
        The panel options (also ``season_length``, ``timing_confounding``,
        ``unit_trend_sd``, ``trend_confounding``, ``threshold_*``, ``noise_df``), all off
        by default: :class:`~bayestwin.synthetic.panel.PanelOptions`.

    Returns
    -------
    SyntheticTwinData
        The history (columns in :mod:`bayestwin.synthetic.generate`) and its truth.
    """
    return _draw(_Arguments(**locals()))
