"""Synthetic twin histories with known ground truth.

:func:`generate_synthetic_twin_data` draws a panel of units x periods for one twin type
from the same hierarchical GLM that :mod:`bayestwin.model.fit` fits (DESIGN.md, "The
statistics")::

    eta = a[brand, segment] + z . beta + c[level]
          + treated * g(intensity) * (tau[brand, k, segment] + z_int . gamma[k])

with ``z`` the numeric features standardised by the generating process's own location
and scale, ``z_int`` the first ``n_interacting`` of them, and the dose-response
``g(s) = (1 - exp(-lam * s)) / (1 - exp(-lam))`` (monotone, ``g(0) = 0``, ``g(1) = 1``).

Every unit keeps its features, segment and assignment across periods; outcomes are
independent across periods given the mean. Assignment is random, or confounded
(``confounding > 0``): units with a high untreated mean are treated more often.

The returned :class:`GroundTruth` computes, exactly from the data-generating process,
the expected outcome of any unit under any intervention, and so the true ATE (absolute
and relative) of any intervention config on any set of units. It can also run a "real"
randomised experiment with sampling noise.

The history's columns (the contract every later module reads):

``unit_id`` (str), ``brand`` (str), ``twin_type`` (str), ``period`` (int),
``segment`` (str), the numeric feature columns (float), the categorical feature
columns (str), ``intervention_type`` (str, ``""`` when untreated), ``intensity``
(float, 0 when untreated) and ``outcome`` (float for gaussian, int otherwise).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import special

from bayestwin.core.families import FAMILIES, Family, check_family, inverse_link
from bayestwin.vocabulary import TwinType

__all__ = [
    "DEFAULT_FAMILY",
    "BrandTruth",
    "GroundTruth",
    "SyntheticTwinData",
    "TrueEffect",
    "dose_response",
    "generate_synthetic_twin_data",
    "main",
]

DEFAULT_FAMILY: dict[TwinType, Family] = {
    TwinType.HCP: "bernoulli",
    TwinType.PATIENT: "poisson",
    TwinType.TERRITORY: "gaussian",
}

_INTERVENTIONS: dict[TwinType, tuple[str, ...]] = {
    TwinType.HCP: ("email_campaign", "call_frequency", "speaker_program", "sample_drop"),
    TwinType.PATIENT: ("adherence_reminder", "copay_assistance", "nurse_outreach", "app_coaching"),
    TwinType.TERRITORY: ("digital_campaign", "rep_visit_increase", "local_event", "kol_program"),
}

_SEGMENTS: dict[TwinType, tuple[str, ...]] = {
    TwinType.HCP: (
        "cardiology",
        "oncology",
        "primary_care",
        "neurology",
        "endocrinology",
        "rheumatology",
        "dermatology",
        "psychiatry",
        "pulmonology",
        "nephrology",
        "gastroenterology",
        "urology",
    ),
    TwinType.PATIENT: (
        "newly_diagnosed",
        "stable_maintenance",
        "switcher",
        "lapsed",
        "high_risk",
        "elderly",
        "pediatric",
        "comorbid",
        "rural",
        "specialty_care",
        "treatment_naive",
        "refractory",
    ),
    TwinType.TERRITORY: (
        "northeast",
        "southeast",
        "midwest",
        "southwest",
        "west",
        "northwest",
        "mountain",
        "gulf",
        "mid_atlantic",
        "great_lakes",
        "plains",
        "pacific",
    ),
}

# (name, location, scale) of the numeric features, per twin type.
_NUMERIC: dict[TwinType, tuple[tuple[str, float, float], ...]] = {
    TwinType.HCP: (
        ("years_in_practice", 18.0, 8.0),
        ("patient_volume", 120.0, 35.0),
        ("digital_engagement", 0.5, 0.2),
        ("prior_rx_rate", 0.3, 0.1),
        ("call_history", 6.0, 2.5),
        ("sample_requests", 4.0, 1.5),
        ("formulary_access", 0.6, 0.15),
        ("peer_influence", 0.0, 1.0),
    ),
    TwinType.PATIENT: (
        ("age", 58.0, 13.0),
        ("comorbidity_index", 2.0, 1.2),
        ("prior_adherence", 0.7, 0.15),
        ("visits_last_year", 5.0, 2.0),
        ("out_of_pocket_cost", 40.0, 15.0),
        ("disease_severity", 0.0, 1.0),
        ("days_since_diagnosis", 700.0, 300.0),
        ("refill_gap_days", 8.0, 4.0),
    ),
    TwinType.TERRITORY: (
        ("population_density", 800.0, 300.0),
        ("market_potential", 1.0, 0.3),
        ("competitor_share", 0.4, 0.1),
        ("rep_coverage", 0.8, 0.1),
        ("payer_mix_commercial", 0.55, 0.1),
        ("historical_growth", 0.02, 0.03),
        ("account_count", 60.0, 20.0),
        ("access_score", 0.0, 1.0),
    ),
}

_CATEGORICAL: dict[TwinType, tuple[tuple[str, tuple[str, ...]], ...]] = {
    TwinType.HCP: (
        ("practice_setting", ("private", "clinic", "hospital")),
        ("region", ("north", "south", "east", "west")),
    ),
    TwinType.PATIENT: (
        ("insurance_type", ("commercial", "medicare", "medicaid")),
        ("channel", ("retail", "mail", "specialty")),
    ),
    TwinType.TERRITORY: (
        ("urbanicity", ("urban", "suburban", "rural")),
        ("market_access", ("open", "restricted", "mixed")),
    ),
}

# Intercept (on the link scale) and, for gaussian, the outcome scale.
_BASELINE: dict[str, float] = {
    "bernoulli": -1.4,  # ~ 20% base rate
    "poisson": 1.0,  # ~ 2.7 events per period
    "neg_binomial": 1.0,
    "gaussian": 1.0,  # times the outcome scale
}
# Default mean intervention effects on the link scale (per intervention type).
_DEFAULT_EFFECTS: dict[str, tuple[float, ...]] = {
    "bernoulli": (0.35, 0.20, 0.08, 0.0),
    "poisson": (0.15, 0.08, 0.03, 0.0),
    "neg_binomial": (0.15, 0.08, 0.03, 0.0),
    "gaussian": (0.12, 0.06, 0.02, 0.0),
}
_GAUSSIAN_SCALE = 100.0


def dose_response(intensity: NDArray | float, rate: float) -> NDArray:
    """Monotone dose-response ``g(s) = (1 - exp(-rate s)) / (1 - exp(-rate))``.

    Parameters
    ----------
    intensity : array_like
        Intensities ``s >= 0``.
    rate : float
        Curvature ``rate > 0``; ``g`` tends to ``s`` as ``rate`` tends to 0.

    Returns
    -------
    ndarray
        ``g(s)``, with ``g(0) = 0`` and ``g(1) = 1``.
    """
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    s = np.asarray(intensity, dtype=float)
    return np.expm1(-rate * s) / np.expm1(-rate)


@dataclass(frozen=True)
class TrueEffect:
    """The true effect of an intervention on a set of units."""

    ate: float
    control_mean: float
    treated_mean: float

    @property
    def relative(self) -> float:
        """ATE relative to the control mean (the lift)."""
        return self.ate / self.control_mean


@dataclass(frozen=True)
class BrandTruth:
    """True parameters of one brand."""

    intercept: NDArray  # (n_segments,)
    beta: NDArray  # (n_numeric,)
    cat_effects: dict[str, NDArray]  # column -> (n_levels,), first level 0
    tau: NDArray  # (n_types, n_segments)
    gamma: NDArray  # (n_types, n_interacting)


@dataclass(frozen=True)
class GroundTruth:
    """The data-generating process of a synthetic history, evaluable on any units."""

    twin_type: TwinType
    family: Family
    segments: tuple[str, ...]
    intervention_types: tuple[str, ...]
    numeric_features: tuple[str, ...]
    numeric_loc: NDArray
    numeric_scale: NDArray
    categorical_features: dict[str, tuple[str, ...]]
    n_interacting: int
    dose_rate: float
    brands: dict[str, BrandTruth]
    dispersion: float | None
    outcome_scale: float

    # -- evaluation -----------------------------------------------------------------
    def _z(self, units: pd.DataFrame) -> NDArray:
        x = units[list(self.numeric_features)].to_numpy(dtype=float)
        return (x - self.numeric_loc) / self.numeric_scale

    def _type_index(self, intervention_type: str) -> int:
        try:
            return self.intervention_types.index(intervention_type)
        except ValueError:
            raise ValueError(
                f"unknown intervention_type {intervention_type!r}; "
                f"known: {', '.join(self.intervention_types)}"
            ) from None

    def linear_predictor(
        self,
        units: pd.DataFrame,
        intervention_type: str | None,
        intensity: float | NDArray = 1.0,
    ) -> NDArray:
        """Linear predictor of each unit under an intervention (or none).

        Parameters
        ----------
        units : DataFrame
            Rows with ``brand``, ``segment`` and the feature columns.
        intervention_type : str or None
            Intervention applied to every unit; ``None`` (or ``""``) for control.
        intensity : float or array
            Intensity of the intervention (>= 0), per unit or shared.

        Raises
        ------
        ValueError
            If a brand, segment, categorical level or intervention type is unknown to
            the ground truth, or an intensity is negative or not finite.
        """
        z = self._z(units)
        seg_idx = pd.Index(self.segments).get_indexer(pd.Index(units["segment"]))
        if (seg_idx < 0).any():
            raise ValueError("units contain a segment unknown to the ground truth")
        eta = np.zeros(len(units))
        brands = units["brand"].to_numpy()
        k = self._type_index(intervention_type) if intervention_type else -1
        treated = k >= 0
        s = np.broadcast_to(np.asarray(intensity, float), (len(units),))
        if not (np.isfinite(s).all() and (s >= 0).all()):
            raise ValueError("intensity must be finite and >= 0")
        g = dose_response(s, self.dose_rate)
        for brand in np.unique(brands):
            if brand not in self.brands:
                raise ValueError(f"unknown brand {brand!r}; known: {', '.join(self.brands)}")
            m = brands == brand
            bt = self.brands[brand]
            e = bt.intercept[seg_idx[m]] + z[m] @ bt.beta
            for col, levels in self.categorical_features.items():
                codes = pd.Index(levels).get_indexer(pd.Index(units.loc[m, col]))
                if (codes < 0).any():
                    raise ValueError(
                        f"units contain a {col!r} level unknown to the ground truth; "
                        f"known: {', '.join(levels)}"
                    )
                e = e + bt.cat_effects[col][codes]
            if treated:
                het = bt.tau[k, seg_idx[m]] + z[m, : self.n_interacting] @ bt.gamma[k]
                e = e + g[m] * het
            eta[m] = e
        return eta

    def expected_outcome(
        self,
        units: pd.DataFrame,
        intervention_type: str | None,
        intensity: float | NDArray = 1.0,
    ) -> NDArray:
        """Expected outcome per period of each unit (see :meth:`linear_predictor`)."""
        mu = inverse_link(self.family, self.linear_predictor(units, intervention_type, intensity))
        return mu * self.outcome_scale if self.family == "gaussian" else mu

    def ate(
        self, units: pd.DataFrame, intervention_type: str, intensity: float = 1.0
    ) -> TrueEffect:
        """True average treatment effect of the intervention on ``units``.

        Parameters
        ----------
        units : DataFrame
            The units (twins) the effect is averaged over; repeated rows count twice.
        intervention_type : str
            The intervention.
        intensity : float
            Its intensity.
        """
        control = self.expected_outcome(units, None)
        treated = self.expected_outcome(units, intervention_type, intensity)
        return TrueEffect(
            ate=float(np.mean(treated - control)),
            control_mean=float(np.mean(control)),
            treated_mean=float(np.mean(treated)),
        )

    def sample_outcomes(self, mu: NDArray, rng: np.random.Generator) -> NDArray:
        """Draw one outcome per mean ``mu`` from the family's distribution."""
        if self.family == "bernoulli":
            return (rng.random(mu.shape) < mu).astype(np.int64)
        if self.family == "poisson":
            return rng.poisson(mu).astype(np.int64)
        if self.family == "neg_binomial":
            alpha = float(self.dispersion or 1.0)
            lam = rng.gamma(alpha, mu / alpha)
            return rng.poisson(lam).astype(np.int64)
        sigma = float(self.dispersion or 1.0) * self.outcome_scale
        return mu + sigma * rng.standard_normal(mu.shape)

    def run_experiment(
        self,
        units: pd.DataFrame,
        intervention_type: str,
        intensity: float = 1.0,
        *,
        n_per_arm: int,
        random_seed: int | np.random.Generator | None = None,
    ) -> pd.DataFrame:
        """Run a "real" randomised two-arm experiment on units drawn from ``units``.

        Parameters
        ----------
        units : DataFrame
            The eligible population; ``2 * n_per_arm`` units are drawn with replacement.
        intervention_type, intensity
            The intervention of the treatment arm.
        n_per_arm : int
            Units per arm.
        random_seed : int or Generator, optional
            Seed of the draw.

        Returns
        -------
        DataFrame
            Columns ``unit_id``, ``arm`` (``"treatment"`` / ``"control"``), ``outcome``.
        """
        rng = np.random.default_rng(random_seed)
        idx = rng.integers(0, len(units), size=2 * n_per_arm)
        sample = units.iloc[idx].reset_index(drop=True)
        arm = np.repeat(np.array(["treatment", "control"]), n_per_arm)
        mu = np.where(
            arm == "treatment",
            self.expected_outcome(sample, intervention_type, intensity),
            self.expected_outcome(sample, None),
        )
        return pd.DataFrame(
            {
                "unit_id": sample["unit_id"].to_numpy(),
                "arm": arm,
                "outcome": self.sample_outcomes(mu, rng),
            }
        )


@dataclass(frozen=True)
class SyntheticTwinData:
    """A synthetic history and its ground truth."""

    data: pd.DataFrame
    truth: GroundTruth
    numeric_features: list[str] = field(default_factory=list)
    categorical_features: list[str] = field(default_factory=list)
    outcome: str = "outcome"
    segment: str = "segment"

    @property
    def feature_columns(self) -> list[str]:
        """Numeric then categorical feature columns."""
        return [*self.numeric_features, *self.categorical_features]

    def population(self, brand: str | None = None) -> pd.DataFrame:
        """One row per unit at its latest period (optionally for one brand)."""
        df = self.data if brand is None else self.data[self.data["brand"] == brand]
        latest = df.sort_values("period").groupby("unit_id", sort=False).tail(1)
        return latest.sort_values("unit_id").reset_index(drop=True)


def _validate_args(
    n_units: int,
    n_periods: int,
    n_segments: int,
    n_numeric: int,
    n_categorical: int,
    n_types: int,
    treated_fraction: float,
    tt: TwinType,
) -> None:
    if n_units < 1:
        raise ValueError(f"n_units must be >= 1, got {n_units}")
    if n_periods < 1:
        raise ValueError(f"n_periods must be >= 1, got {n_periods}")
    if not 1 <= n_segments <= len(_SEGMENTS[tt]):
        raise ValueError(f"n_segments must be in [1, {len(_SEGMENTS[tt])}], got {n_segments}")
    if not 1 <= n_numeric <= len(_NUMERIC[tt]):
        raise ValueError(f"n_numeric must be in [1, {len(_NUMERIC[tt])}], got {n_numeric}")
    if not 0 <= n_categorical <= len(_CATEGORICAL[tt]):
        raise ValueError(
            f"n_categorical must be in [0, {len(_CATEGORICAL[tt])}], got {n_categorical}"
        )
    if not 1 <= n_types <= len(_INTERVENTIONS[tt]):
        raise ValueError(f"n_intervention_types must be in [1, {len(_INTERVENTIONS[tt])}]")
    if not 0.0 <= treated_fraction < 1.0:
        raise ValueError(f"treated_fraction must be in [0, 1), got {treated_fraction}")


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
) -> SyntheticTwinData:
    """Draw a synthetic panel history for one twin type, with its ground truth.

    Parameters
    ----------
    twin_type : TwinType or str
        ``"hcp"``, ``"patient"`` or ``"territory"``; picks names and the default family.
    n_units : int
        Units per brand.
    n_periods : int
        Periods per unit (rows per unit).
    brands : sequence of str
        Brand names.
    n_segments : int
        Number of segments (specialties, cohorts or regions), of uneven sizes.
    n_numeric, n_categorical : int
        Numbers of numeric and categorical features. Numerics are correlated with each
        other (``feature_correlation``) and shifted by segment; categoricals are cut
        from a latent correlated with the first numeric.
    n_intervention_types : int
        Number of intervention types.
    family : str, optional
        ``"bernoulli"``, ``"poisson"``, ``"neg_binomial"`` or ``"gaussian"``; default by
        twin type (hcp: bernoulli, patient: poisson, territory: gaussian).
    effect_means : mapping or sequence of float, optional
        Mean effect of each intervention type on the link scale (for gaussian, as a
        fraction of the outcome scale). Zero and negative values are allowed.
    effect_segment_sd : float
        Spread of effects across segments, around each type's mean.
    interaction_sd : float
        Spread of the covariate-by-treatment interactions ``gamma``.
    n_interacting : int
        How many numeric features (the first ones) interact with treatment.
    dose_rate : float
        Curvature of the dose-response (> 0).
    treated_fraction : float
        Share of units treated, in [0, 1).
    type_weights : sequence of float, optional
        Relative frequency of each intervention type (to make a type rare).
    confounding : float
        0 for random assignment; > 0 treats units with a high untreated mean more
        often (log-odds of treatment rise by ``confounding`` per sd of baseline).
    segment_concentration : float
        Dirichlet concentration of segment shares (small: very uneven sizes).
    feature_correlation : float
        Correlation between the latent numeric features.
    dispersion : float, optional
        ``alpha`` for neg_binomial (default 5), ``sigma`` for gaussian as a fraction of
        the outcome scale (default 0.25).
    random_seed : int, optional
        Seed; the same seed gives the same data and truth.

    Returns
    -------
    SyntheticTwinData
        The history (columns in the module docstring) and its :class:`GroundTruth`.
    """
    tt = TwinType(twin_type)
    fam: Family = check_family(family) if family is not None else DEFAULT_FAMILY[tt]
    _validate_args(
        n_units,
        n_periods,
        n_segments,
        n_numeric,
        n_categorical,
        n_intervention_types,
        treated_fraction,
        tt,
    )
    if dose_rate <= 0:
        raise ValueError(f"dose_rate must be > 0, got {dose_rate}")
    if not 0 <= n_interacting <= n_numeric:
        raise ValueError(f"n_interacting must be in [0, n_numeric={n_numeric}]")
    if confounding < 0:
        raise ValueError(f"confounding must be >= 0, got {confounding}")
    if isinstance(brands, str) or not brands:
        raise ValueError("brands must be a non-empty sequence of brand names")
    if len(set(brands)) != len(brands):
        raise ValueError(f"brands must be distinct, got {list(brands)}")
    if dispersion is not None and not dispersion > 0:
        raise ValueError(f"dispersion must be > 0, got {dispersion}")
    rng = np.random.default_rng(random_seed)

    segments = _SEGMENTS[tt][:n_segments]
    types = _INTERVENTIONS[tt][:n_intervention_types]
    numeric = _NUMERIC[tt][:n_numeric]
    num_names = tuple(n for n, _, _ in numeric)
    loc = np.array([lc for _, lc, _ in numeric])
    scale = np.array([sc for _, _, sc in numeric])
    cats = dict(_CATEGORICAL[tt][:n_categorical])

    if effect_means is None:
        means = np.array(_DEFAULT_EFFECTS[fam][:n_intervention_types], dtype=float)
    elif isinstance(effect_means, Mapping):
        unknown = set(effect_means) - set(types)
        if unknown:
            raise ValueError(f"effect_means names unknown types {sorted(unknown)}; known: {types}")
        means = np.array([float(effect_means.get(k, 0.0)) for k in types])
    else:
        means = np.asarray(effect_means, dtype=float)
        if means.shape != (n_intervention_types,):
            raise ValueError(f"effect_means needs {n_intervention_types} values")
    if dispersion is None:
        dispersion = {"neg_binomial": 5.0, "gaussian": 0.25}.get(fam)
    weights = (
        np.ones(n_intervention_types) if type_weights is None else np.asarray(type_weights, float)
    )
    if weights.shape != (n_intervention_types,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("type_weights must hold one non-negative weight per intervention type")
    weights = weights / weights.sum()

    base = _BASELINE[fam]
    coef_sd = 0.25
    truths: dict[str, BrandTruth] = {}
    frames: list[pd.DataFrame] = []
    corr = np.full((n_numeric, n_numeric), feature_correlation) + (
        1 - feature_correlation
    ) * np.eye(n_numeric)
    chol = np.linalg.cholesky(corr)
    for b_i, brand in enumerate(brands):
        intercept = base + rng.normal(0.0, 0.1) + rng.normal(0.0, 0.3, n_segments)
        beta = rng.normal(0.0, coef_sd, n_numeric)
        cat_effects = {
            col: np.concatenate([[0.0], rng.normal(0.0, coef_sd, len(levels) - 1)])
            for col, levels in cats.items()
        }
        tau = means[:, None] + rng.normal(
            0.0, effect_segment_sd, (n_intervention_types, n_segments)
        )
        gamma = rng.normal(0.0, interaction_sd, (n_intervention_types, n_interacting))
        if fam == "gaussian":
            # keep gaussian coefficients a fraction of the intercept's scale
            beta *= 0.4
            cat_effects = {c: v * 0.4 for c, v in cat_effects.items()}
            intercept = 1.0 + (intercept - base) * 0.4
        bt = BrandTruth(intercept, beta, cat_effects, tau, gamma)
        truths[brand] = bt

        shares = rng.dirichlet(np.full(n_segments, segment_concentration))
        seg_idx = rng.choice(n_segments, size=n_units, p=shares)
        seg_shift = rng.normal(0.0, 0.5, (n_segments, n_numeric))
        z = rng.standard_normal((n_units, n_numeric)) @ chol.T + seg_shift[seg_idx]
        x = loc + scale * z
        cat_cols: dict[str, NDArray] = {}
        for col, levels in cats.items():
            latent = 0.8 * z[:, 0] + rng.standard_normal(n_units)
            cuts = np.quantile(latent, np.linspace(0, 1, len(levels) + 1)[1:-1])
            cat_cols[col] = np.asarray(levels, dtype=object)[np.searchsorted(cuts, latent)]

        units = pd.DataFrame(
            {
                "unit_id": [f"{tt.value}-{b_i:02d}-{i:06d}" for i in range(n_units)],
                "brand": brand,
                "segment": np.asarray(segments, dtype=object)[seg_idx],
                **{name: x[:, j] for j, name in enumerate(num_names)},
                **cat_cols,
            }
        )
        frames.append(units)

    truth = GroundTruth(
        twin_type=tt,
        family=fam,
        segments=tuple(segments),
        intervention_types=tuple(types),
        numeric_features=num_names,
        numeric_loc=loc,
        numeric_scale=scale,
        categorical_features={c: tuple(v) for c, v in cats.items()},
        n_interacting=n_interacting,
        dose_rate=float(dose_rate),
        brands=truths,
        dispersion=dispersion,
        outcome_scale=_GAUSSIAN_SCALE if fam == "gaussian" else 1.0,
    )

    panels = []
    intensity_grid = np.array([0.5, 1.0, 1.5, 2.0])
    for units in frames:
        n = len(units)
        eta0 = truth.linear_predictor(units, None)
        logit_p = (
            np.log(treated_fraction / (1 - treated_fraction)) if treated_fraction > 0 else -np.inf
        )
        if confounding > 0 and np.std(eta0) > 0:
            logit_p = logit_p + confounding * (eta0 - eta0.mean()) / eta0.std()
        p_treat = special.expit(logit_p) * np.ones(n)
        treated = rng.random(n) < p_treat
        k_idx = rng.choice(n_intervention_types, size=n, p=weights)
        itype = np.where(treated, np.asarray(types, dtype=object)[k_idx], "")
        intensity = np.where(treated, rng.choice(intensity_grid, size=n), 0.0)
        mu = np.empty(n)
        for k in types:
            m = itype == k
            if m.any():
                mu[m] = truth.expected_outcome(units[m], k, intensity[m])
        m0 = ~treated
        if m0.any():
            mu[m0] = truth.expected_outcome(units[m0], None)
        mu_panel = np.repeat(mu, n_periods)
        panel = units.loc[units.index.repeat(n_periods)].reset_index(drop=True)
        panel.insert(2, "twin_type", tt.value)
        panel.insert(3, "period", np.tile(np.arange(n_periods), n))
        panel["intervention_type"] = np.repeat(itype, n_periods)
        panel["intervention_type"] = panel["intervention_type"].astype(str)
        panel["intensity"] = np.repeat(intensity, n_periods)
        panel["outcome"] = truth.sample_outcomes(mu_panel, rng)
        panels.append(panel)

    data = pd.concat(panels, ignore_index=True)
    for col in ("unit_id", "brand", "twin_type", "segment", *cats):
        data[col] = data[col].astype(str)
    return SyntheticTwinData(
        data=data,
        truth=truth,
        numeric_features=list(num_names),
        categorical_features=list(cats),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Print the true effects of a synthetic history: ``python -m bayestwin.synthetic``.

    For every brand and intervention type: the true control mean, ATE and lift on the
    brand's units at intensity 1, and the ATE that a randomised experiment run on them
    (``--n-per-arm`` units per arm) observes.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments (default ``sys.argv[1:]``); ``--help`` lists them.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bayestwin.synthetic",
        description="Draw a synthetic twin history and print its true intervention effects.",
    )
    parser.add_argument("--twin-type", choices=[t.value for t in TwinType], default="hcp")
    parser.add_argument("--family", choices=FAMILIES, default=None)
    parser.add_argument("--n-units", type=int, default=1000, help="units per brand")
    parser.add_argument("--n-per-arm", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sd = generate_synthetic_twin_data(
        args.twin_type, n_units=args.n_units, family=args.family, random_seed=args.seed
    )
    truth = sd.truth
    rows = []
    for b_i, brand in enumerate(truth.brands):
        units = sd.population(brand)
        for k_i, kind in enumerate(truth.intervention_types):
            effect = truth.ate(units, kind)
            trial = truth.run_experiment(
                units,
                kind,
                n_per_arm=args.n_per_arm,
                random_seed=np.random.default_rng([args.seed, b_i, k_i]),
            )
            arm_means = trial.groupby("arm")["outcome"].mean()
            rows.append(
                {
                    "brand": brand,
                    "intervention_type": kind,
                    "control_mean": effect.control_mean,
                    "true_ate": effect.ate,
                    "true_lift": effect.relative,
                    "experiment_ate": arm_means["treatment"] - arm_means["control"],
                }
            )
    print(
        f"Synthetic {truth.twin_type.value} history: {len(sd.data)} rows, "
        f"{sd.data['unit_id'].nunique()} units, {truth.family} outcome, seed {args.seed}."
    )
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
