"""What to fit: the model spec of one (brand, twin type), its priors, sampler and gate.

:class:`TwinModelSpec` names the history's columns and holds the priors
(:class:`TwinPriors`), the NUTS settings (:class:`SamplerSettings`) and the diagnostics
gate (:class:`DiagnosticThresholds`). Its :meth:`TwinModelSpec.spec_hash` identifies a
fit's configuration; it is not the registry's model UUID.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bayestwin._version import __version__
from bayestwin.core.families import Family
from bayestwin.vocabulary import TwinType

__all__ = [
    "IMPLICIT_SEGMENT",
    "DiagnosticThresholds",
    "SamplerSettings",
    "TwinModelSpec",
    "TwinPriors",
    "default_spec",
]

#: The one segment of a history fitted without a grouping column.
IMPLICIT_SEGMENT = "all"


class TwinPriors(BaseModel):
    """Scales of the weakly-informative priors (link scale; gaussian: standardised).

    Every scale is the standard deviation of a normal or half-normal prior, or the
    mean of a boundary-avoiding gamma prior.

    The history-bias priors act only in a fit with real experiments
    (:mod:`bayestwin.model.experiment_terms`): the history's rows see
    ``tau[k, seg] + bias[k]``, the experiments ``tau[k, seg]``, with
    ``bias[k] = mu_bias + sigma_bias * z_bias[k]``. ``mu_bias`` has a Student-t prior
    of ``bias_df = 2`` degrees of freedom and scale ``bias_mean_sd = 0.03``: its mass
    sits close to zero, so a history that the experiments confirm keeps nearly all its
    weight, while its polynomial tails let experiments that contradict the history move
    it as far as they say (a confounder of half a logit is 17 scales out, where the
    t(2) density has fallen by 10^3 and a normal one beyond 10^60). ``sigma_bias ~
    HalfNormal(bias_type_sd = 0.02)`` keeps the types' biases close to their shared one,
    and lets their spread be zero: confounding comes from how units are chosen for
    campaigns, which all types share, so an experiment on one type corrects the others.
    Measured on calibration worlds of 400-600 units x 6 periods with three experiments
    each (3 in-model and 3 time-varying-confounder worlds, 15 (world, type) pairs), the
    earlier ``0.1 * t(3)`` with a ``Gamma(2, 40)`` spread widened the in-model worlds'
    intervals instead of narrowing them (posterior sd over the sd without experiments,
    median 1.39 on the first two worlds, 1.09 now, where combining the experiments as
    unbiased evidence would give 0.89), and both covered every confounded pair.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    intercept_sd: float = Field(1.5, gt=0, description="mu_a ~ Normal(link(mean y), .)")
    segment_sd: float = Field(0.5, gt=0, description="sigma_a ~ HalfNormal(.)")
    beta_sd: float = Field(0.5, gt=0, description="beta ~ Normal(0, .)")
    effect_mean_sd: float = Field(
        1.5,
        gt=0,
        description=(
            "mu_tau ~ Normal(0, .): wide enough that a shift of 2-3 logits (bernoulli), "
            "a factor of 4 (counts) or 1.5 outcome sds (gaussian) is not shrunk"
        ),
    )
    effect_type_sd: float = Field(0.3, gt=0, description="sigma_type ~ HalfNormal(.)")
    effect_segment_sd: float = Field(0.2, gt=0, description="sigma_seg ~ HalfNormal(.)")
    interaction_sd: float = Field(0.1, gt=0, description="gamma ~ Normal(0, .)")
    dose_log_rate_sd: float = Field(1.0, gt=0, description="log(rate) ~ Normal(0, .)")
    dispersion_sd: float = Field(1.0, gt=0, description="sigma ~ HalfNormal(.) (gaussian)")
    dose_jump_alpha: float = Field(1.0, gt=0, description="delta ~ Beta(., dose_jump_beta)")
    dose_jump_beta: float = Field(2.0, gt=0, description="delta ~ Beta(dose_jump_alpha, .)")
    unit_sd: float = Field(
        0.5, gt=0, description="sigma_unit ~ Gamma(2, 2 / .): scale of the unit effects"
    )
    time_sd: float = Field(
        0.1, gt=0, description="sigma_time ~ Gamma(2, 2 / .): step sd of the period random walk"
    )
    drift_sd: float = Field(
        0.1, gt=0, description="time_drift ~ Normal(0, .): mean step of the period walk"
    )
    season_sd: float = Field(
        0.5,
        gt=0,
        description=(
            "season ~ ZeroSumNormal(.): the seasonal wave of the period effects (link "
            "scale), with season_length only"
        ),
    )
    mundlak_sd: float = Field(
        1.0, gt=0, description="lambda ~ Normal(0, .): unit effect on treatment history"
    )
    bias_mean_sd: float = Field(
        0.03,
        gt=0,
        description=(
            "mu_bias ~ StudentT(bias_df, 0, .): the history's bias of the effects (link "
            "scale), in a fit with real experiments only"
        ),
    )
    bias_df: float = Field(2.0, gt=0, description="degrees of freedom of mu_bias's prior")
    bias_type_sd: float = Field(
        0.02,
        gt=0,
        description="sigma_bias ~ HalfNormal(.): spread of the bias across types",
    )


class SamplerSettings(BaseModel):
    """NUTS settings. ``backend`` picks nutpie (default), numpyro (JAX) or PyMC's own.

    ``adaptation`` is nutpie's mass-matrix adaptation: ``"diag"`` (nutpie's diagonal,
    from draw and gradient variances), ``"low_rank"`` (a diagonal corrected along the
    posterior's strongest correlations) or ``"auto"``, low rank for models of at most
    :data:`bayestwin.model.fit.LOW_RANK_MAX_DIM` free parameters and diagonal above
    (see :func:`bayestwin.model.fit.nutpie_adaptation`). The other backends ignore it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["nutpie", "numpyro", "pymc"] = "nutpie"
    draws: int = Field(1000, gt=0)
    tune: int = Field(1000, ge=0)
    chains: int = Field(4, gt=0)
    cores: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), gt=0)
    target_accept: float = Field(0.95, gt=0, lt=1)
    random_seed: int | None = Field(0, ge=0)
    progressbar: bool = True
    adaptation: Literal["auto", "diag", "low_rank"] = "auto"


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
    segment_columns: tuple[str, ...] = Field(
        ("segment",),
        description=(
            "Grouping columns; empty for a history without segments, fitted as one "
            "segment (IMPLICIT_SEGMENT) with no segment-level hierarchy."
        ),
    )
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
            "ones; 'auto' picks by the data (see bayestwin.model.pymc_model)."
        ),
    )
    effect_parameterization: Literal["auto", "centred", "non_centred"] = Field(
        "auto",
        description=(
            "Intervention effects, per level of the hierarchy (type means, then type x "
            "segment effects): 'auto' centres a level when every group in it is rich in "
            "treated data (see bayestwin.model.pymc_model)."
        ),
    )
    unit_effects: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "Partially pooled unit intercepts with the correlated-random-effects term; "
            "'auto': on when some unit has two or more periods."
        ),
    )
    unit_likelihood: Literal["marginal", "sampled"] = Field(
        "marginal",
        description=(
            "'marginal': each unit's effect is integrated out of the likelihood (closed "
            "form for gaussian and poisson, quadrature for neg_binomial); 'sampled': "
            "non-centred unit effects are sampled. Bernoulli outcomes always sample them."
        ),
    )
    time_effects: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "Period effects, a random walk with drift; 'auto': on when the history has two or more "
            "periods and some unit has two or more of them."
        ),
    )
    season_length: int | None = Field(
        None,
        ge=2,
        le=520,
        description=(
            "Periods per seasonal cycle (4 for quarters, 12 for months, 52 for weeks): "
            "the period effects get a seasonal wave beside their random walk, and the "
            "simulation forecasts it (see bayestwin.model.time_terms). None: no wave."
        ),
    )
    dose_jump: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "A first-contact jump delta in the dose response; 'auto': on when the "
            "treated rows have three or more distinct intensities."
        ),
    )
    priors: TwinPriors = Field(default_factory=TwinPriors)
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)
    thresholds: DiagnosticThresholds = Field(default_factory=DiagnosticThresholds)

    @model_validator(mode="after")
    def _disjoint(self) -> TwinModelSpec:
        both = set(self.numeric_features) & set(self.categorical_features)
        if both:
            raise ValueError(f"columns {sorted(both)} are both numeric and categorical")
        return self

    @property
    def segment_column(self) -> str:
        """Name of the (possibly combined) segment column in the population.

        ``"segment"`` when the spec has no grouping column: the history then gets that
        column, holding :data:`IMPLICIT_SEGMENT` on every row.
        """
        return "|".join(self.segment_columns) or "segment"

    def spec_hash(self) -> str:
        """Hash of this spec and the package version (16 hex digits)."""
        payload = json.dumps(
            {"spec": self.model_dump(mode="json"), "version": __version__},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_spec(
    twin_type: TwinType | str,
    brand: str,
    *,
    family: Family,
    numeric_features: Sequence[str],
    categorical_features: Sequence[str] = (),
    segment_column: str | None = "segment",
    **kwargs: Any,
) -> TwinModelSpec:
    """Shorthand for a :class:`TwinModelSpec` with the synthetic data's column names.

    Parameters
    ----------
    twin_type, brand, family, numeric_features, categorical_features
        As in :class:`TwinModelSpec`.
    segment_column : str or None
        The grouping column; None fits the history as one segment, with no
        segment-level hierarchy. Ignored when ``segment_columns`` is given.
    **kwargs
        Any other :class:`TwinModelSpec` field (``sampler=SamplerSettings(...)``...).

    Returns
    -------
    TwinModelSpec
        The spec.
    """
    kwargs.setdefault("segment_columns", (segment_column,) if segment_column else ())
    return TwinModelSpec(
        twin_type=TwinType(twin_type),
        brand=brand,
        family=family,
        numeric_features=tuple(numeric_features),
        categorical_features=tuple(categorical_features),
        **kwargs,
    )
