"""TwinGenerator: a model spec becomes a PyMC model, a fit, and a FittedTwinModel.

The model for one (brand, twin type) is the hierarchical GLM of DESIGN.md::

    eta_i = a[seg_i] + X_i . beta
            + treated_i * g(s_i) * (tau[k_i, seg_i] + Z_i . gamma[k_i])

* ``a[seg] = mu_a + sigma_a * z_a[seg]``: segment intercepts, partially pooled;
* ``tau[k, seg] = mu_tau + sigma_type * z_type[k] + sigma_seg * z_tau[k, seg]``:
  effects partially pooled across intervention types and across segments, so a rare
  type borrows strength from the others;
* ``gamma[k] = interaction_sd * z_gamma[k]``: covariate-by-treatment interactions on
  the standardised numeric features, shrunk toward zero by a tight fixed prior scale
  (a learned scale would add a funnel that costs far more ESS than it buys);
* ``g(s) = (1 - exp(-rate s)) / (1 - exp(-rate))``: monotone dose-response with
  ``g(0) = 0`` and ``g(1) = 1``, so ``tau`` is the effect at intensity 1;
* each level of a hierarchy is non-centred, with zero-sum standardised deviations so
  that the group means are identified on their own, unless every group in the level is
  rich in data, when the centred form (``a[seg] ~ Normal(mu_a, sigma_a)``,
  ``tau_type[k] ~ Normal(mu_tau, sigma_type)``,
  ``tau[k, seg] ~ Normal(tau_type[k], sigma_seg)``) samples far better
  (``intercept_parameterization``, ``effect_parameterization``);
* hierarchical scales get boundary-avoiding ``Gamma(2, 2 / scale)`` priors, which keep
  the sampler out of the funnel at zero when there are few groups.

Fitting is made fast by collapsing rows that share a design (the same segment,
features, intervention and intensity, for example one unit over many periods) into
sufficient statistics: a binomial count for bernoulli outcomes, a Poisson (or negative
binomial) total for counts, and the group mean plus the within-group sum of squares for
gaussian outcomes. The likelihood is the same up to a constant; N shrinks by the number
of periods. (For negative binomial outcomes the total is not sufficient, so rows are
collapsed by design and outcome value, with the multiplicity as a weight.) nutpie, the
default backend, is called directly with its compiled numba model; numpyro and PyMC's
own NUTS go through ``pm.sample``.

The assumption behind every effect is conditional ignorability: given the features and
the segment, who was treated is unrelated to the potential outcomes. The fidelity
tracker is there to catch it when it fails.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bayestwin.core.families import Family
from bayestwin.model.fitted import Diagnostics, FittedTwinModel
from bayestwin.core.posterior import FeatureEncoder, TwinPosterior
from bayestwin.vocabulary import TwinType

__all__ = [
    "DiagnosticThresholds",
    "HistoryError",
    "ModelVersionError",
    "SamplerSettings",
    "TwinGenerator",
    "TwinModelSpec",
    "TwinPriors",
    "collapse_history",
    "fit_all",
    "load_model",
    "save_model",
]

MODEL_FORMAT_VERSION = "1"


class HistoryError(ValueError):
    """The history cannot be fitted; the message names the column or value at fault."""


class ModelVersionError(ValueError):
    """A saved model was written by an incompatible version or spec."""


def _package_version() -> str:
    try:
        return importlib.metadata.version("bayestwin")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        from bayestwin import __version__

        return __version__


class TwinPriors(BaseModel):
    """Scales of the weakly-informative priors (link scale; gaussian: standardised).

    Every scale is the standard deviation of a normal or half-normal prior.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    intercept_sd: float = Field(1.5, gt=0, description="mu_a ~ Normal(link(mean y), .)")
    segment_sd: float = Field(0.5, gt=0, description="sigma_a ~ HalfNormal(.)")
    beta_sd: float = Field(0.5, gt=0, description="beta ~ Normal(0, .)")
    effect_mean_sd: float = Field(0.5, gt=0, description="mu_tau ~ Normal(0, .)")
    effect_type_sd: float = Field(0.3, gt=0, description="sigma_type ~ HalfNormal(.)")
    effect_segment_sd: float = Field(0.2, gt=0, description="sigma_seg ~ HalfNormal(.)")
    interaction_sd: float = Field(0.1, gt=0, description="gamma ~ Normal(0, .)")
    dose_log_rate_sd: float = Field(1.0, gt=0, description="log(rate) ~ Normal(0, .)")
    dispersion_sd: float = Field(1.0, gt=0, description="sigma ~ HalfNormal(.) (gaussian)")


class SamplerSettings(BaseModel):
    """NUTS settings. ``backend`` picks nutpie (default), numpyro (JAX) or PyMC's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["nutpie", "numpyro", "pymc"] = "nutpie"
    draws: int = Field(1000, gt=0)
    tune: int = Field(1000, ge=0)
    chains: int = Field(4, gt=0)
    cores: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), gt=0)
    target_accept: float = Field(0.95, gt=0, lt=1)
    random_seed: int | None = Field(0, ge=0)
    progressbar: bool = True


class DiagnosticThresholds(BaseModel):
    """The diagnostics gate: a fit that misses any of these is not fit for use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_r_hat: float = Field(1.01, gt=1.0)
    min_ess_bulk: float = Field(400.0, ge=0)
    min_ess_tail: float = Field(400.0, ge=0)
    max_divergences: int = Field(0, ge=0)
    min_bfmi: float = Field(0.3, ge=0)


class TwinModelSpec(BaseModel):
    """What to fit for one (brand, twin type).

    The history has one row per unit and period with the columns named here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    twin_type: TwinType
    brand: str = Field(..., min_length=1)
    outcome: str = "outcome"
    family: Family = "bernoulli"
    numeric_features: tuple[str, ...] = ()
    categorical_features: tuple[str, ...] = ()
    segment_columns: tuple[str, ...] = ("segment",)
    unit_column: str = "unit_id"
    period_column: str | None = "period"
    brand_column: str = "brand"
    twin_type_column: str | None = "twin_type"
    intervention_column: str = "intervention_type"
    intensity_column: str = "intensity"
    min_rows: int = Field(50, gt=0, description="Fewer rows than this is refused.")
    collapse: bool = Field(True, description="Collapse rows sharing a design.")
    intercept_parameterization: Literal["auto", "centred", "non_centred"] = Field(
        "auto",
        description=(
            "Segment intercepts: centred suits segments rich in data, non-centred sparse "
            "ones; 'auto' picks by the data (see TwinGenerator)."
        ),
    )
    effect_parameterization: Literal["auto", "centred", "non_centred"] = Field(
        "auto",
        description=(
            "Intervention effects, per level of the hierarchy (type means, then type x "
            "segment effects): 'auto' centres a level when every group in it is rich in "
            "treated data (see TwinGenerator)."
        ),
    )
    priors: TwinPriors = Field(default_factory=TwinPriors)
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)
    thresholds: DiagnosticThresholds = Field(default_factory=DiagnosticThresholds)

    @model_validator(mode="after")
    def _disjoint(self) -> TwinModelSpec:
        if not self.segment_columns:
            raise ValueError("segment_columns needs at least one grouping column")
        both = set(self.numeric_features) & set(self.categorical_features)
        if both:
            raise ValueError(f"columns {sorted(both)} are both numeric and categorical")
        return self

    @property
    def segment_column(self) -> str:
        """Name of the (possibly combined) segment column in the population."""
        return "|".join(self.segment_columns)

    def model_id(self) -> str:
        """Hash of this spec and the package version (``ModelBuilder``-style id)."""
        payload = json.dumps(
            {"spec": self.model_dump(mode="json"), "version": _package_version()},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


# -- history validation and collapsing ---------------------------------------------------


def _check_history(history: pd.DataFrame, spec: TwinModelSpec) -> pd.DataFrame:
    """Validate and select the rows of ``spec``'s brand and twin type."""
    if not isinstance(history, pd.DataFrame):
        raise HistoryError("history must be a pandas DataFrame")
    needed = [
        spec.unit_column,
        spec.brand_column,
        spec.outcome,
        spec.intervention_column,
        spec.intensity_column,
        *spec.segment_columns,
        *spec.numeric_features,
        *spec.categorical_features,
    ]
    if spec.period_column:
        needed.append(spec.period_column)
    missing = [c for c in dict.fromkeys(needed) if c not in history.columns]
    if missing:
        raise HistoryError(
            f"history lacks column(s) {missing}; the spec needs {list(dict.fromkeys(needed))}"
        )
    mask = history[spec.brand_column].astype(str) == spec.brand
    if spec.twin_type_column and spec.twin_type_column in history.columns:
        mask &= history[spec.twin_type_column].astype(str) == spec.twin_type.value
    df = history.loc[mask, list(dict.fromkeys(needed))]
    if len(df) < spec.min_rows:
        raise HistoryError(
            f"brand {spec.brand!r}, twin type {spec.twin_type.value!r} has {len(df)} rows; "
            f"at least min_rows={spec.min_rows} are needed"
        )
    for col in df.columns:
        if col == spec.intervention_column:
            continue
        n_nan = int(df[col].isna().sum())
        if n_nan:
            raise HistoryError(
                f"column {col!r} has {n_nan} missing value(s) (NaN); clean them first"
            )
    for col in (*spec.numeric_features, spec.outcome, spec.intensity_column):
        if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            raise HistoryError(
                f"column {col!r} has dtype {df[col].dtype}, which is not numeric; declare it "
                "in categorical_features if it is categorical"
            )
        if not np.isfinite(df[col].to_numpy(dtype=float)).all():
            raise HistoryError(f"column {col!r} has infinite values")
    intensity = df[spec.intensity_column].to_numpy(dtype=float)
    if (intensity < 0).any():
        raise HistoryError(
            f"column {spec.intensity_column!r} has negative values (min {intensity.min()}); "
            "intensity must be >= 0"
        )
    itype = df[spec.intervention_column].fillna("").astype(str).to_numpy()
    bad = (itype == "") & (intensity > 0)
    if bad.any():
        raise HistoryError(
            f"{int(bad.sum())} row(s) have {spec.intensity_column} > 0 but no "
            f"{spec.intervention_column}; name the intervention or set intensity 0"
        )
    y = df[spec.outcome].to_numpy(dtype=float)
    if spec.family == "bernoulli" and not np.isin(y, (0.0, 1.0)).all():
        raise HistoryError(f"outcome {spec.outcome!r} must be 0/1 for family 'bernoulli'")
    if spec.family in ("poisson", "neg_binomial") and (
        (y < 0).any() or not np.allclose(y, np.round(y))
    ):
        raise HistoryError(
            f"outcome {spec.outcome!r} must hold non-negative integers for family {spec.family!r}"
        )
    df = df.copy()
    df[spec.intervention_column] = itype
    # rows with a named intervention but intensity 0 are untreated
    df.loc[intensity == 0, spec.intervention_column] = ""
    if len(spec.segment_columns) > 1:
        df[spec.segment_column] = df[list(spec.segment_columns)].astype(str).agg("|".join, axis=1)
    else:
        df[spec.segment_column] = df[spec.segment_column].astype(str)
    for col in spec.categorical_features:
        df[col] = df[col].astype(str)
    return df


def collapse_history(
    df: pd.DataFrame, spec: TwinModelSpec
) -> tuple[pd.DataFrame, pd.Series, pd.Series, pd.Series]:
    """Collapse rows that share a design into sufficient statistics.

    Parameters
    ----------
    df : DataFrame
        Validated history rows of one (brand, twin type).
    spec : TwinModelSpec
        The spec naming the columns.

    Returns
    -------
    design : DataFrame
        One row per distinct design (segment, features, intervention, intensity).
    total : Series
        Sum of the outcome over the design's rows.
    count : Series
        Number of rows.
    sumsq : Series
        Within-design sum of squared deviations of the outcome (gaussian only; 0 else).

    Notes
    -----
    For ``neg_binomial`` the total is not a sufficient statistic (the dispersion is
    learned from the spread within a design), so rows are collapsed by design *and*
    outcome value: ``total`` is then the outcome value and ``count`` its multiplicity,
    which the model uses as a likelihood weight. That is exact too.
    """
    keys = [
        spec.segment_column,
        *spec.numeric_features,
        *spec.categorical_features,
        spec.intervention_column,
        spec.intensity_column,
    ]
    if spec.family == "neg_binomial":
        weights = df.groupby([*keys, spec.outcome], sort=True, observed=True).size()
        stats = weights.rename("count").reset_index()
        zeros = pd.Series(np.zeros(len(stats)))
        return stats[keys], stats[spec.outcome].astype(float), stats["count"].astype(float), zeros
    grouped = df.groupby(keys, sort=True, observed=True)[spec.outcome]
    stats = grouped.agg(["sum", "count", "var"]).reset_index()
    count = stats["count"].astype(float)
    sumsq = (stats["var"].fillna(0.0) * (count - 1)).clip(lower=0.0)
    return stats[keys], stats["sum"].astype(float), count, sumsq


def _scale_prior(pm: Any, name: str, mean: float) -> Any:
    """Boundary-avoiding prior for a hierarchical scale: ``Gamma(2, 2 / mean)``.

    Its density is 0 at 0 and rises linearly, so the sampler does not fall into the
    funnel at sigma -> 0 that half-normal scales open when there are few groups (three
    intervention types, say); the mode is ``mean / 2`` and the prior still allows
    strong pooling.
    """
    return pm.Gamma(name, alpha=2.0, beta=2.0 / mean)


#: A level of the effect hierarchy is centred when every group's likelihood sd is below
#: this share of the level's prior scale (see ``TwinGenerator._centred_effects``).
_EFFECT_CENTRING_FACTOR = 0.1


def _pinned_down(n_rows: float, weight: float, scale: float) -> bool:
    """Whether ``n_rows`` rows of Fisher weight ``weight`` give a likelihood sd under ``scale``."""
    return bool(1.0 / np.sqrt(max(float(n_rows) * weight, 1e-12)) < scale)


def _zero_sum(pm: Any, name: str, dims: tuple[str, ...], coords: dict[str, list[str]]) -> Any:
    """Standardised group deviations that sum to zero over the last dimension.

    With the deviations centred, the group mean (``mu_a``, ``mu_tau``) is identified
    on its own instead of trading off against every deviation, which removes the ridge
    that otherwise limits the ESS of hierarchical means. A single group has no
    deviation (zeros).
    """
    import pytensor.tensor as pt

    if len(coords[dims[-1]]) < 2:
        return pt.zeros(tuple(len(coords[d]) for d in dims))
    return pm.ZeroSumNormal(name, sigma=1.0, dims=dims, n_zerosum_axes=1)


def _link_of_mean(family: str, ybar: float) -> float:
    if family == "bernoulli":
        p = min(max(ybar, 1e-3), 1 - 1e-3)
        return float(np.log(p / (1 - p)))
    if family in ("poisson", "neg_binomial"):
        return float(np.log(max(ybar, 1e-3)))
    return 0.0


# -- the generator -------------------------------------------------------------------------


class TwinGenerator:
    """Build and fit the hierarchical twin model of one (brand, twin type).

    Parameters
    ----------
    spec : TwinModelSpec
        What to fit. Nothing is sampled until :meth:`fit`.
    """

    def __init__(self, spec: TwinModelSpec) -> None:
        self.spec = spec

    # The design arrays the PyMC model is built from.
    def _design(self, df: pd.DataFrame) -> dict[str, Any]:
        spec = self.spec
        num = list(spec.numeric_features)
        raw = df[num].to_numpy(dtype=float) if num else np.empty((len(df), 0))
        loc = raw.mean(axis=0) if num else np.empty(0)
        scale = raw.std(axis=0) if num else np.empty(0)
        scale = np.where(scale > 0, scale, 1.0)
        categorical = {
            c: tuple(sorted(df[c].astype(str).unique())) for c in spec.categorical_features
        }
        segments = tuple(sorted(df[spec.segment_column].unique()))
        encoder = FeatureEncoder(
            numeric=tuple(num),
            loc=loc,
            scale=scale,
            categorical=categorical,
            segment_column=spec.segment_column,
            segments=segments,
        )
        itype = df[spec.intervention_column].to_numpy()
        types = tuple(sorted(set(itype) - {""}))
        if not types:
            raise HistoryError(
                f"no treated rows for brand {spec.brand!r}: the history needs at least one "
                f"row with a named {spec.intervention_column} and intensity > 0"
            )
        if spec.collapse:
            design, total, count, sumsq = collapse_history(df, spec)
        else:
            design = df
            total = df[spec.outcome].astype(float)
            count = pd.Series(np.ones(len(df)))
            sumsq = pd.Series(np.zeros(len(df)))
        x, z, seg = encoder.encode(design)
        d_itype = design[spec.intervention_column].to_numpy()
        treated = d_itype != ""
        k_idx = np.zeros(len(design), dtype=np.int64)
        k_idx[treated] = [types.index(t) for t in d_itype[treated]]
        y_all = df[spec.outcome].to_numpy(dtype=float)
        outcome_loc, outcome_scale = 0.0, 1.0
        if spec.family == "gaussian":
            outcome_loc = float(y_all.mean())
            outcome_scale = float(y_all.std()) or 1.0
        return {
            "encoder": encoder,
            "types": types,
            "x": x,
            "z": z,
            "seg": seg,
            "k": k_idx,
            "treated": treated.astype(float),
            "intensity": design[spec.intensity_column].to_numpy(dtype=float),
            "total": total.to_numpy(dtype=float),
            "count": count.to_numpy(dtype=float),
            "sumsq": sumsq.to_numpy(dtype=float),
            "outcome_loc": outcome_loc,
            "outcome_scale": outcome_scale,
            "center": _link_of_mean(spec.family, float(y_all.mean())),
            "centred_intercepts": self._centred_intercepts(df),
            "centred_effects": self._centred_effects(df, types),
            "n_rows": len(df),
        }

    def _family_weight(self, df: pd.DataFrame) -> float:
        """Fisher weight of one row at the mean outcome, on the link scale."""
        ybar = float(df[self.spec.outcome].to_numpy(dtype=float).mean())
        return {
            "bernoulli": ybar * (1 - ybar),
            "poisson": ybar,
            "neg_binomial": ybar,
        }.get(self.spec.family, 1.0)

    def _centred_effects(self, df: pd.DataFrame, types: tuple[str, ...]) -> tuple[bool, bool]:
        """Whether to centre the type means and the type x segment effects.

        When the data pin every effect of a level down, a non-centred level leaves a
        funnel between its scale and its standardised deviations (divergences, poor
        r_hat); when some group is sparse, the centred form has the funnel instead.
        The rule of :meth:`_centred_intercepts`, level by level, made stricter: a
        level is centred when the approximate likelihood sd of every group's effect,
        ``1 / sqrt(n w)`` with ``n`` the treated rows of the group and ``w`` the
        family's weight, is below a tenth of the prior scale of that level
        (``effect_type_sd`` for the type means, ``effect_segment_sd`` for the
        effects per segment). Effects often vary far less across groups than the
        prior scale allows, and a centred level whose true scale is small has its
        own funnel: half the prior scale centred too eagerly (divergences on data
        sets where the non-centred form had none). A level with a single group has
        no deviations and stays as it is.
        """
        spec = self.spec
        choice = spec.effect_parameterization
        n_seg = df[spec.segment_column].nunique()
        if choice != "auto":
            return (choice == "centred" and len(types) > 1, choice == "centred" and n_seg > 1)
        w = self._family_weight(df)
        treated = df[df[spec.intervention_column] != ""]
        per_type = treated.groupby(spec.intervention_column).size().reindex(types, fill_value=0)
        per_cell = (
            treated.groupby([spec.intervention_column, spec.segment_column])
            .size()
            .reindex(
                pd.MultiIndex.from_product([types, sorted(df[spec.segment_column].unique())]),
                fill_value=0,
            )
        )

        pr, f = spec.priors, _EFFECT_CENTRING_FACTOR
        return (
            len(types) > 1 and _pinned_down(per_type.min(), w, f * pr.effect_type_sd),
            n_seg > 1 and _pinned_down(per_cell.min(), w, f * pr.effect_segment_sd),
        )

    def _centred_intercepts(self, df: pd.DataFrame) -> bool:
        """Whether to centre the segment intercepts.

        A centred hierarchy samples well when the data pin every segment's intercept
        down far more tightly than the prior spreads them; a non-centred one when they
        do not (Betancourt and Girolami, 2015). ``"auto"`` compares the approximate
        likelihood sd of each segment's intercept, ``1 / sqrt(n_s * w)`` with ``w`` the
        family's weight at the mean outcome (``p (1 - p)`` for bernoulli, the mean for
        counts, 1 for the standardised gaussian), with half the prior scale of the
        segment deviations, and centres only when every segment is below it.
        """
        choice = self.spec.intercept_parameterization
        if choice != "auto":
            return choice == "centred"
        n_min = df.groupby(self.spec.segment_column).size().min()
        return _pinned_down(n_min, self._family_weight(df), 0.5 * self.spec.priors.segment_sd)

    def build_model(self, history: pd.DataFrame) -> Any:
        """Return the PyMC model for ``history`` (validated), without sampling.

        Parameters
        ----------
        history : DataFrame
            One row per unit and period; see :class:`TwinModelSpec`.
        """
        df = _check_history(history, self.spec)
        return self._build(self._design(df))

    def _build(self, d: dict[str, Any]) -> Any:
        import pymc as pm
        import pytensor.tensor as pt

        spec, pr = self.spec, self.spec.priors
        enc: FeatureEncoder = d["encoder"]
        coords = {
            "segment": list(enc.segments),
            "intervention_type": list(d["types"]),
            "feature": enc.columns,
            "numeric": list(enc.numeric),
        }
        treated_rows = np.flatnonzero(d["treated"] > 0)
        with pm.Model(coords=coords) as model:
            mu_a = pm.Normal("mu_a", d["center"], pr.intercept_sd)
            sigma_a = _scale_prior(pm, "sigma_a", pr.segment_sd)
            if d["centred_intercepts"]:
                a = pm.Normal("a", mu_a, sigma_a, dims="segment")
            else:
                z_a = _zero_sum(pm, "z_a", ("segment",), coords)
                a = pm.Deterministic("a", mu_a + sigma_a * z_a, dims="segment")
            beta = pm.Normal("beta", 0.0, pr.beta_sd, dims="feature")

            mu_tau = pm.Normal("mu_tau", 0.0, pr.effect_mean_sd)
            sigma_type = _scale_prior(pm, "sigma_type", pr.effect_type_sd)
            sigma_seg = _scale_prior(pm, "sigma_seg", pr.effect_segment_sd)
            centred_types, centred_cells = d["centred_effects"]
            if centred_types:
                tau_type = pm.Normal("tau_type", mu_tau, sigma_type, dims="intervention_type")
            else:
                z_type = _zero_sum(pm, "z_type", ("intervention_type",), coords)
                tau_type = pm.Deterministic(
                    "tau_type", mu_tau + sigma_type * z_type, dims="intervention_type"
                )
            if centred_cells:
                tau = pm.Normal(
                    "tau", tau_type[:, None], sigma_seg, dims=("intervention_type", "segment")
                )
            else:
                z_tau = _zero_sum(pm, "z_tau", ("intervention_type", "segment"), coords)
                tau = pm.Deterministic(
                    "tau",
                    tau_type[:, None] + sigma_seg * z_tau,
                    dims=("intervention_type", "segment"),
                )
            # a fixed, tight scale: shrinkage toward 0 without a funnel to sample
            z_gamma = pm.Normal("z_gamma", 0.0, 1.0, dims=("intervention_type", "numeric"))
            gamma = pm.Deterministic(
                "gamma", pr.interaction_sd * z_gamma, dims=("intervention_type", "numeric")
            )
            log_rate = pm.Normal("log_rate", 0.0, pr.dose_log_rate_sd)
            rate = pm.Deterministic("dose_rate", pt.exp(log_rate))

            x = pt.as_tensor_variable(d["x"])
            eta = a[d["seg"]] + (x @ beta if d["x"].shape[1] else 0.0)
            if treated_rows.size:
                rows = treated_rows
                k = d["k"][rows]
                s = d["intensity"][rows]
                g = pt.expm1(-rate * s) / pt.expm1(-rate)
                het = tau[k, d["seg"][rows]]
                if d["z"].shape[1]:
                    het = het + (gamma[k] * d["z"][rows]).sum(axis=1)
                eta = pt.inc_subtensor(eta[rows], g * het)

            total, count = d["total"], d["count"]
            if spec.family == "bernoulli":
                pm.Binomial("y", n=count.astype(np.int64), logit_p=eta, observed=total)
            elif spec.family == "poisson":
                pm.Poisson("y", mu=count * pt.exp(eta), observed=total)
            elif spec.family == "neg_binomial":
                alpha = pm.HalfNormal("dispersion", 10.0)
                if spec.collapse:
                    # rows collapsed by (design, outcome): weight each distinct value
                    dist = pm.NegativeBinomial.dist(mu=pt.exp(eta), alpha=alpha)
                    pm.Potential("y", (count * pm.logp(dist, total)).sum())
                else:
                    pm.NegativeBinomial("y", mu=pt.exp(eta), alpha=alpha, observed=total)
            else:
                sigma = pm.HalfNormal("dispersion", pr.dispersion_sd)
                ybar = (total / count - d["outcome_loc"]) / d["outcome_scale"]
                pm.Normal("y", mu=eta, sigma=sigma / np.sqrt(count), observed=ybar)
                ss = d["sumsq"] / d["outcome_scale"] ** 2
                if (count > 1).any():
                    pm.Potential(
                        "within_ss",
                        -((count - 1).sum()) * pt.log(sigma) - ss.sum() / (2 * sigma**2),
                    )
        return model

    def fit(
        self,
        history: pd.DataFrame,
        *,
        override_diagnostics: bool = False,
        keep_trace: bool = True,
    ) -> FittedTwinModel:
        """Validate the history, sample the posterior and return the fitted model.

        Parameters
        ----------
        history : DataFrame
            One row per unit and period (see :class:`TwinModelSpec` for the columns).
        override_diagnostics : bool
            Let the model serve even if it fails the diagnostics gate.
        keep_trace : bool
            Keep the full ``DataTree`` on the fitted model (needed for MLflow artifacts
            and ArviZ plots).

        Returns
        -------
        FittedTwinModel
            Posterior arrays, population, diagnostics and provenance.
        """
        spec = self.spec
        df = _check_history(history, spec)
        d = self._design(df)
        model = self._build(d)
        smp = spec.sampler
        t0 = time.perf_counter()
        trace = _sample(model, smp)
        fit_seconds = time.perf_counter() - t0
        diagnostics = compute_diagnostics(trace, spec.thresholds)
        posterior = _posterior_arrays(trace, d, spec.family)
        population = _population(df, spec)
        provenance = {
            "bayestwin_version": _package_version(),
            "format_version": MODEL_FORMAT_VERSION,
            "packages": package_versions(),
            "data_hash": _hash_frame(df),
            "random_seed": smp.random_seed,
            "sampler": smp.backend,
            "fit_seconds": fit_seconds,
            "n_rows": d["n_rows"],
            "n_likelihood_rows": len(d["total"]),
            "fitted_at": pd.Timestamp.now(tz="UTC").isoformat(),
        }
        return FittedTwinModel(
            brand=spec.brand,
            twin_type=spec.twin_type,
            posterior=posterior,
            population=population,
            diagnostics=diagnostics,
            model_id=spec.model_id(),
            spec=spec.model_dump(mode="json"),
            provenance=provenance,
            trace=trace if keep_trace else None,
            override_diagnostics=override_diagnostics,
        )


def _sample(model: Any, smp: SamplerSettings) -> Any:
    """Run NUTS with the chosen backend and return the ``DataTree``."""
    if smp.backend == "nutpie":
        import nutpie

        compiled = nutpie.compile_pymc_model(model)
        return nutpie.sample(
            compiled,
            draws=smp.draws,
            tune=smp.tune,
            chains=smp.chains,
            cores=min(smp.cores, smp.chains),
            seed=smp.random_seed,
            progress_bar=smp.progressbar,
            save_warmup=False,
            target_accept=smp.target_accept,
        )
    import pymc as pm

    with model:
        return pm.sample(
            draws=smp.draws,
            tune=smp.tune,
            chains=smp.chains,
            cores=smp.cores,
            target_accept=smp.target_accept,
            random_seed=smp.random_seed,
            progressbar=smp.progressbar,
            compute_convergence_checks=False,
            nuts_sampler=smp.backend,
        )


# -- after sampling --------------------------------------------------------------------

_PARAMS = [
    "mu_a", "sigma_a", "z_a", "a", "beta", "mu_tau", "sigma_type", "sigma_seg", "z_type",
    "tau_type", "z_tau", "tau", "z_gamma", "log_rate", "dispersion",
]  # fmt: skip


def compute_diagnostics(trace: Any, thresholds: DiagnosticThresholds) -> Diagnostics:
    """Convergence diagnostics of a PyMC/ArviZ ``DataTree`` and the gate's verdict.

    Parameters
    ----------
    trace : xarray.DataTree
        Result of ``pm.sample`` (groups ``posterior`` and ``sample_stats``).
    thresholds : DiagnosticThresholds
        The gate.

    Returns
    -------
    Diagnostics
        Worst r_hat, ESS bulk and tail, divergences, lowest BFMI and the verdict.
    """
    import arviz as az

    post = trace["posterior"].to_dataset()
    names = [v for v in _PARAMS if v in post.data_vars]
    sub = post[names]
    rhat = az.rhat(sub)
    ess_bulk = az.ess(sub, method="bulk")
    ess_tail = az.ess(sub, method="tail")

    def _extreme(ds: Any, fn: Any) -> float:
        vals = np.concatenate([np.ravel(ds[v].values) for v in ds.data_vars] or [np.empty(0)])
        vals = vals[~np.isnan(vals)]
        # no defined value (e.g. r_hat of a single chain) fails the gate as NaN
        return float(fn(vals)) if vals.size else float("nan")

    max_rhat = _extreme(rhat, np.max)
    min_bulk = _extreme(ess_bulk, np.min)
    min_tail = _extreme(ess_tail, np.min)
    stats = trace["sample_stats"].to_dataset()
    div = int(stats["diverging"].sum()) if "diverging" in stats else 0
    try:
        bfmi = np.asarray(az.bfmi(trace)).ravel()
        if bfmi.dtype == object or bfmi.size == 0:
            raise TypeError
        min_bfmi = float(np.min(bfmi))
    except Exception:  # noqa: BLE001 - fall back to the definition on the energy
        energy = stats["energy"].values
        num = np.mean(np.diff(energy, axis=1) ** 2, axis=1)
        min_bfmi = float(np.min(num / np.var(energy, axis=1)))
    reasons = []
    t = thresholds
    if not max_rhat <= t.max_r_hat:
        reasons.append(f"max r_hat {max_rhat:.4f} > {t.max_r_hat}")
    if not min_bulk >= t.min_ess_bulk:
        reasons.append(f"min ESS bulk {min_bulk:.0f} < {t.min_ess_bulk:.0f}")
    if not min_tail >= t.min_ess_tail:
        reasons.append(f"min ESS tail {min_tail:.0f} < {t.min_ess_tail:.0f}")
    if div > t.max_divergences:
        reasons.append(f"{div} divergent transition(s) > {t.max_divergences}")
    if not min_bfmi >= t.min_bfmi:
        reasons.append(f"min BFMI {min_bfmi:.3f} < {t.min_bfmi}")
    return Diagnostics(
        max_r_hat=max_rhat,
        min_ess_bulk=min_bulk,
        min_ess_tail=min_tail,
        divergences=div,
        min_bfmi=min_bfmi,
        passed=not reasons,
        reasons=reasons,
    )


def _flat(post: Any, name: str) -> np.ndarray:
    arr = post[name].values
    return np.ascontiguousarray(arr.reshape(-1, *arr.shape[2:]), dtype=np.float64)


def _posterior_arrays(trace: Any, d: dict[str, Any], family: str) -> TwinPosterior:
    post = trace["posterior"].to_dataset()
    n = int(post.sizes["chain"] * post.sizes["draw"])
    enc: FeatureEncoder = d["encoder"]
    beta = _flat(post, "beta") if enc.columns else np.zeros((n, 0))
    gamma = _flat(post, "gamma") if enc.numeric else np.zeros((n, len(d["types"]), 0))
    disp = _flat(post, "dispersion") if "dispersion" in post else None
    return TwinPosterior(
        family=family,  # type: ignore[arg-type]
        encoder=enc,
        intervention_types=tuple(d["types"]),
        intercept=_flat(post, "a"),
        beta=beta,
        tau=_flat(post, "tau"),
        gamma=gamma,
        dose_rate=_flat(post, "dose_rate"),
        dispersion=disp,
        outcome_loc=d["outcome_loc"],
        outcome_scale=d["outcome_scale"],
    )


def _population(df: pd.DataFrame, spec: TwinModelSpec) -> pd.DataFrame:
    cols = [
        spec.unit_column,
        spec.segment_column,
        *spec.numeric_features,
        *spec.categorical_features,
    ]
    ordered = df.sort_values(spec.period_column, kind="stable") if spec.period_column else df
    latest = ordered.groupby(spec.unit_column, sort=True).tail(1)
    pop = latest[list(dict.fromkeys(cols))].sort_values(spec.unit_column).reset_index(drop=True)
    if spec.unit_column != "unit_id":
        pop = pop.rename(columns={spec.unit_column: "unit_id"})
    pop["unit_id"] = pop["unit_id"].astype(str)
    return pop


def _hash_frame(df: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(df, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


PROVENANCE_PACKAGES = (
    "bayestwin", "pymc", "pytensor", "arviz", "nutpie", "numpy", "pandas", "xarray",
)  # fmt: skip


def package_versions(names: Iterable[str] = PROVENANCE_PACKAGES) -> dict[str, str]:
    """Installed versions of the named distributions (missing ones are left out).

    Parameters
    ----------
    names : iterable of str
        Distribution names.
    """
    out = {}
    for pkg in names:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def fit_all(
    history: pd.DataFrame,
    specs: Iterable[TwinModelSpec] | None = None,
    *,
    base: TwinModelSpec | None = None,
    **fit_kwargs: Any,
) -> dict[tuple[str, TwinType], FittedTwinModel]:
    """Fit one model per (brand, twin type) found in ``history``.

    Parameters
    ----------
    history : DataFrame
        History with ``brand`` and ``twin_type`` columns (names from the spec).
    specs : iterable of TwinModelSpec, optional
        Explicit specs; when omitted, ``base`` is copied for every combination found.
    base : TwinModelSpec, optional
        Template whose ``brand`` and ``twin_type`` are replaced per combination.
    **fit_kwargs
        Passed to :meth:`TwinGenerator.fit`.

    Returns
    -------
    dict
        ``{(brand, twin_type): FittedTwinModel}``.
    """
    if specs is None:
        if base is None:
            raise ValueError("give specs, or a base spec to copy per (brand, twin type)")
        if base.twin_type_column is None:
            raise ValueError("base.twin_type_column is needed to find the twin types")
        combos = (
            history[[base.brand_column, base.twin_type_column]]
            .astype(str)
            .drop_duplicates()
            .itertuples(index=False, name=None)
        )
        specs = [
            base.model_copy(update={"brand": b, "twin_type": TwinType(t)})
            for b, t in sorted(combos)
        ]
    return {(s.brand, s.twin_type): TwinGenerator(s).fit(history, **fit_kwargs) for s in specs}


# -- save and load ---------------------------------------------------------------------

_ARRAYS = ("intercept", "beta", "tau", "gamma", "dose_rate", "dispersion")


def save_model(model: FittedTwinModel, path: str | os.PathLike[str]) -> Path:
    """Save a fitted model to a directory.

    Writes ``posterior.npz`` (the arrays), ``trace.nc`` (the full ``DataTree``, when
    kept), ``population.parquet``, ``spec.json`` and ``metadata.json`` (encoder,
    diagnostics, provenance, model id). The directory is written next to its final
    place and renamed into it, so a crash never leaves a half-written model.

    Parameters
    ----------
    model : FittedTwinModel
        The model.
    path : path-like
        Target directory; it must not exist yet.

    Returns
    -------
    Path
        The directory.
    """
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{target} exists; choose a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    post = model.posterior
    arrays = {k: getattr(post, k) for k in _ARRAYS if getattr(post, k) is not None}
    np.savez(tmp / "posterior.npz", **arrays)
    if model.trace is not None:
        model.trace.to_netcdf(tmp / "trace.nc", engine="h5netcdf")
    model.population.to_parquet(tmp / "population.parquet", index=False)
    (tmp / "spec.json").write_text(json.dumps(model.spec, indent=2, sort_keys=True))
    meta = {
        "format_version": MODEL_FORMAT_VERSION,
        "bayestwin_version": _package_version(),
        "model_id": model.model_id,
        "brand": model.brand,
        "twin_type": model.twin_type.value,
        "family": post.family,
        "intervention_types": list(post.intervention_types),
        "outcome_loc": post.outcome_loc,
        "outcome_scale": post.outcome_scale,
        "encoder": post.encoder.to_dict(),
        "diagnostics": model.diagnostics.to_dict(),
        "provenance": model.provenance,
        "override_diagnostics": model.override_diagnostics,
    }
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    tmp.rename(target)
    return target


def load_model(path: str | os.PathLike[str], *, load_trace: bool = False) -> FittedTwinModel:
    """Load a model written by :func:`save_model`.

    Parameters
    ----------
    path : path-like
        The model directory.
    load_trace : bool
        Also open the full ``DataTree`` (``trace.nc``).

    Returns
    -------
    FittedTwinModel

    Raises
    ------
    ModelVersionError
        If the model was saved by another bayestwin version or format, or its id does
        not match its spec.
    """
    src = Path(path)
    meta_path = src / "metadata.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{src} holds no bayestwin model (no metadata.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelVersionError(
            f"model at {src} has format {meta.get('format_version')!r}; this bayestwin reads "
            f"format {MODEL_FORMAT_VERSION!r}"
        )
    if meta.get("bayestwin_version") != _package_version():
        raise ModelVersionError(
            f"model at {src} was saved by bayestwin {meta.get('bayestwin_version')}; this is "
            f"bayestwin {_package_version()}. Refit it, or load it with the matching version."
        )
    spec_dict = json.loads((src / "spec.json").read_text())
    spec = TwinModelSpec.model_validate(spec_dict)
    if spec.model_id() != meta["model_id"]:
        raise ModelVersionError(
            f"model at {src} has id {meta['model_id']}, but its spec hashes to {spec.model_id()}"
        )
    with np.load(src / "posterior.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    posterior = TwinPosterior(
        family=meta["family"],
        encoder=FeatureEncoder.from_dict(meta["encoder"]),
        intervention_types=tuple(meta["intervention_types"]),
        intercept=arrays["intercept"],
        beta=arrays["beta"],
        tau=arrays["tau"],
        gamma=arrays["gamma"],
        dose_rate=arrays["dose_rate"],
        dispersion=arrays.get("dispersion"),
        outcome_loc=float(meta["outcome_loc"]),
        outcome_scale=float(meta["outcome_scale"]),
    )
    trace = None
    if load_trace and (src / "trace.nc").exists():
        import xarray as xr

        trace = xr.open_datatree(src / "trace.nc", engine="h5netcdf").load()
    return FittedTwinModel(
        brand=meta["brand"],
        twin_type=TwinType(meta["twin_type"]),
        posterior=posterior,
        population=pd.read_parquet(src / "population.parquet"),
        diagnostics=Diagnostics(**meta["diagnostics"]),
        model_id=meta["model_id"],
        spec=spec_dict,
        provenance=meta["provenance"],
        trace=trace,
        override_diagnostics=bool(meta.get("override_diagnostics", False)),
    )


def default_spec(
    twin_type: TwinType | str,
    brand: str,
    *,
    family: Family,
    numeric_features: Sequence[str],
    categorical_features: Sequence[str] = (),
    **kwargs: Any,
) -> TwinModelSpec:
    """Shorthand for a :class:`TwinModelSpec` with the synthetic data's column names.

    Parameters
    ----------
    twin_type, brand, family, numeric_features, categorical_features
        As in :class:`TwinModelSpec`.
    **kwargs
        Any other :class:`TwinModelSpec` field (``sampler=SamplerSettings(...)``...).
    """
    return TwinModelSpec(
        twin_type=TwinType(twin_type),
        brand=brand,
        family=family,
        numeric_features=tuple(numeric_features),
        categorical_features=tuple(categorical_features),
        **kwargs,
    )
