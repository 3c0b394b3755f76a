"""The configurations of a calibration run: the synthetic worlds and the shared settings.

:func:`draw_world_configs` draws, reproducibly, the :class:`WorldConfig` of every world
(twin type and family, sizes, effect design, assignment, rare types); effects of the
``prior`` worlds come from the twin model's prior (:func:`prior_effects`).
:class:`RunSettings` holds the sampler and simulation settings every world shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bayestwin.core.families import Family
from bayestwin.model.pymc_model import MIN_TYPES_FOR_A_LEARNED_SCALE
from bayestwin.model.spec import SamplerSettings, TwinPriors
from bayestwin.vocabulary import TwinType

__all__ = [
    "ASSIGNMENTS",
    "Assignment",
    "EffectDesign",
    "RunSettings",
    "WorldConfig",
    "draw_world_configs",
    "prior_effects",
]

#: sd of the mean effect ``mu_tau`` of the in-model worlds (link scale).
WORLD_EFFECT_MEAN_SD = 0.5

_FAMILY_OF_COMBO: tuple[tuple[TwinType, Family], ...] = (
    (TwinType.HCP, "bernoulli"),
    (TwinType.PATIENT, "poisson"),
    (TwinType.TERRITORY, "gaussian"),
    (TwinType.HCP, "bernoulli"),
    (TwinType.PATIENT, "neg_binomial"),
    (TwinType.TERRITORY, "gaussian"),
    (TwinType.PATIENT, "poisson"),
    (TwinType.HCP, "bernoulli"),
)
# Magnitude range of non-zero mean effects (link scale; gaussian: share of the scale)
# and the spread of effects across segments, per family.
_EFFECT_RANGE: dict[str, tuple[float, float]] = {
    "bernoulli": (0.05, 0.40),
    "poisson": (0.03, 0.20),
    "neg_binomial": (0.03, 0.20),
    "gaussian": (0.02, 0.15),
}
_SEGMENT_SD: dict[str, float] = {
    "bernoulli": 0.10,
    "poisson": 0.05,
    "neg_binomial": 0.05,
    "gaussian": 0.04,
}

EffectDesign = Literal["mix", "zero", "prior"]
Assignment = Literal["random", "confounded_observed", "confounded_hidden"]
#: The assignment groups of the report, in order.
ASSIGNMENTS: tuple[Assignment, ...] = ("random", "confounded_observed", "confounded_hidden")


@dataclass(frozen=True)
class WorldConfig:
    """Everything that makes one synthetic world (arguments of the generator and more).

    Attributes
    ----------
    world_id : int
        Index of the world in the run.
    seed : int
        Seed of the history (and of the fit and the twin draw).
    twin_type : str
        ``hcp``, ``patient`` or ``territory``.
    family : str
        Outcome family.
    n_units, n_periods, n_segments, n_numeric, n_intervention_types : int
        Sizes of the history (one brand).
    effect_design : {"mix", "zero", "prior"}
        ``mix``: each type's mean effect is 0, negative or positive; ``zero``: every
        effect exactly 0 (no segment or covariate variation); ``prior``: effects drawn
        from the model's prior (the SBC worlds).
    effect_means : tuple of float
        Mean effect per type (link scale; gaussian: share of the outcome scale).
    effect_segment_sd, interaction_sd, dose_rate : float
        Effect heterogeneity and the dose-response curvature.
    n_interacting : int
        Numeric features that interact with treatment.
    treated_fraction : float
        Share of units treated.
    type_weights : tuple of float
        Relative frequency of each type; ``rare_type`` names a rare one.
    rare_type : int or None
        Index of the rare type, if any.
    segment_concentration : float
        Dirichlet concentration of segment shares (small: uneven).
    confounding : float
        0: random assignment; > 0: units with a high baseline are treated more often.
    primary_type : int
        Index of the world's primary target type.
    hidden_confounder : bool
        Withhold from the model and the baselines the numeric feature that moves the
        baseline most (largest ``|beta|``): with ``confounding > 0`` assignment then
        depends on something no method sees, and ignorability fails.
    kind : str
        The world kind (:data:`bayestwin.calibration.kinds.WORLD_KINDS`); ``in_model``
        for the worlds of :func:`draw_world_configs`.
    unit_icc, adoption, min_pre_periods, trend, season_amplitude, timing_confounding, \
unit_trend_sd, trend_confounding, threshold_effect, threshold_at, noise_df
        The generator's panel options (:class:`bayestwin.synthetic.panel.PanelOptions`);
        their defaults leave them off.
    experiments : int
        Real experiments drawn from the world's truth and given to the fit
        (:mod:`bayestwin.calibration.loop`); 0: the history alone.
    """

    world_id: int
    seed: int
    twin_type: str
    family: str
    n_units: int
    n_periods: int
    n_segments: int
    n_numeric: int
    n_intervention_types: int
    effect_design: EffectDesign
    effect_means: tuple[float, ...]
    effect_segment_sd: float
    interaction_sd: float
    n_interacting: int
    dose_rate: float
    treated_fraction: float
    type_weights: tuple[float, ...]
    rare_type: int | None
    segment_concentration: float
    confounding: float
    primary_type: int
    hidden_confounder: bool = False
    kind: str = "in_model"
    unit_icc: float = 0.0
    adoption: str = "fixed"
    min_pre_periods: int = 2
    trend: float = 0.0
    season_amplitude: float = 0.0
    timing_confounding: float = 0.0
    unit_trend_sd: float = 0.0
    trend_confounding: float = 0.0
    threshold_effect: float = 0.0
    threshold_at: float = 0.0
    noise_df: float | None = None
    experiments: int = 0

    @property
    def treatment_fixed(self) -> bool:
        """Whether every unit keeps its treatment in every period."""
        return self.adoption == "fixed"

    def panel_arguments(self) -> dict[str, Any]:
        """The generator's panel options of this world (keyword arguments)."""
        return {
            "unit_icc": self.unit_icc,
            "adoption": self.adoption,
            "min_pre_periods": self.min_pre_periods,
            "trend": self.trend,
            "season_amplitude": self.season_amplitude,
            "timing_confounding": self.timing_confounding,
            "unit_trend_sd": self.unit_trend_sd,
            "trend_confounding": self.trend_confounding,
            "threshold_effect": self.threshold_effect,
            "threshold_at": self.threshold_at,
            "noise_df": self.noise_df,
        }

    @property
    def confounded(self) -> bool:
        """Whether assignment depends on the baseline outcome."""
        return self.confounding > 0

    @property
    def assignment(self) -> Assignment:
        """``random``, ``confounded_observed`` or ``confounded_hidden``."""
        if not self.confounded:
            return "random"
        return "confounded_hidden" if self.hidden_confounder else "confounded_observed"


def prior_effects(
    n_types: int,
    n_numeric: int,
    rng: np.random.Generator,
    priors: TwinPriors | None = None,
) -> dict[str, Any]:
    """Draw a world's effect parameters from the twin model's prior.

    Parameters
    ----------
    n_types : int
        Intervention types.
    n_numeric : int
        Numeric features (all of them interact with treatment).
    rng : numpy Generator
        Source of randomness.
    priors : TwinPriors, optional
        The model's prior scales (default: :class:`~bayestwin.model.fit.TwinPriors`).

    Returns
    -------
    dict
        ``effect_means`` (tuple), ``effect_segment_sd``, ``interaction_sd``,
        ``n_interacting`` and ``dose_rate``: generator arguments.
    """
    pr = priors if priors is not None else TwinPriors()
    # the worlds keep the effect scale they always had: the model's prior on mu_tau is
    # wider, so that large effects pass, and these worlds show that small ones stay
    # calibrated under it
    mu_tau = rng.normal(0.0, WORLD_EFFECT_MEAN_SD)
    # Gamma(2, rate = 2 / scale), as in the generator's boundary-avoiding scale prior
    sigma_type = rng.gamma(2.0, pr.effect_type_sd / 2.0)
    if n_types < MIN_TYPES_FOR_A_LEARNED_SCALE:  # the model's fixed scale for two types
        sigma_type = pr.effect_type_sd
    sigma_seg = rng.gamma(2.0, pr.effect_segment_sd / 2.0)
    e = rng.standard_normal(n_types)
    z_type = e - e.mean() if n_types > 1 else np.zeros(1)
    means = mu_tau + sigma_type * z_type
    return {
        "effect_means": tuple(float(v) for v in means),
        "effect_segment_sd": float(sigma_seg),
        "interaction_sd": float(pr.interaction_sd),
        "n_interacting": int(n_numeric),
        "dose_rate": float(math.exp(rng.normal(0.0, pr.dose_log_rate_sd))),
    }


def _mix_effects(family: str, n_types: int, rng: np.random.Generator) -> tuple[float, ...]:
    lo, hi = _EFFECT_RANGE[family]
    out = []
    for _ in range(n_types):
        u = rng.random()
        if u < 0.25:
            out.append(0.0)
        elif u < 0.5:
            out.append(-float(rng.uniform(lo, hi)))
        else:
            out.append(float(rng.uniform(lo, hi)))
    return tuple(out)


def draw_world_configs(
    n_worlds: int = 150,
    *,
    random_seed: int = 20240,
    confounded_share: float = 0.3,
    hidden_share: float = 0.5,
    zero_share: float = 0.12,
    prior_share: float = 0.45,
    rare_share: float = 0.5,
    n_units: tuple[int, int] = (2000, 6000),
    n_periods: int = 12,
    neg_binomial_units: int = 1500,
    neg_binomial_periods: int = 6,
) -> list[WorldConfig]:
    """Draw the configurations of ``n_worlds`` worlds, reproducibly.

    Family and twin type cycle through hcp/bernoulli, patient/poisson,
    territory/gaussian and patient/neg_binomial; ``confounded_share`` of the worlds,
    spread evenly, have confounded assignment. Among unconfounded non-gaussian worlds,
    ``prior_share`` draw their effects from the model's prior (SBC); ``zero_share`` of
    all worlds have every effect exactly 0; the rest mix zero, negative and positive
    mean effects.

    Parameters
    ----------
    n_worlds : int
        Number of worlds.
    random_seed : int
        Seed of the configurations (world ``i`` has history seed ``random_seed + i``).
    confounded_share : float
        Share of worlds with confounded assignment, spread evenly.
    hidden_share : float
        Share of the confounded worlds (every other one at 0.5) whose strongest
        baseline predictor is hidden from every method (see
        :attr:`WorldConfig.hidden_confounder`); in the others the confounding is on
        observed features only, which the model adjusts for.
    zero_share, prior_share : float
        Shares of effect designs (see above).
    rare_share : float
        Share of worlds with one rare intervention type (weight 0.08 against 1).
    n_units : (int, int)
        Range of units per world.
    n_periods : int
        Periods per unit. The bernoulli, poisson and gaussian likelihoods are
        collapsed over periods, so periods add information at almost no cost.
    neg_binomial_units, neg_binomial_periods : int
        Caps on the units and the periods of negative binomial worlds, whose
        likelihood is collapsed only over identical (design, value) pairs.

    Returns
    -------
    list of WorldConfig
    """
    # every argument, as given, in one checked record
    spec = _WorldsSpec(**locals())
    rng = np.random.default_rng(random_seed)
    confounded, hidden = spec.confounded_and_hidden()
    return [_world_config(spec, i, i in confounded, i in hidden, rng) for i in range(n_worlds)]


@dataclass(frozen=True)
class _WorldsSpec:
    """The arguments of :func:`draw_world_configs`, checked."""

    n_worlds: int
    random_seed: int
    confounded_share: float
    hidden_share: float
    zero_share: float
    prior_share: float
    rare_share: float
    n_units: tuple[int, int]
    n_periods: int
    neg_binomial_units: int
    neg_binomial_periods: int

    def __post_init__(self) -> None:
        if self.n_worlds < 1:
            raise ValueError(f"n_worlds must be >= 1, got {self.n_worlds}")
        if not 1 <= self.n_units[0] <= self.n_units[1]:
            raise ValueError(
                f"n_units must be a range (lo, hi) with 1 <= lo <= hi, got {self.n_units}"
            )
        if self.n_periods < 1 or self.neg_binomial_periods < 1 or self.neg_binomial_units < 1:
            raise ValueError("n_periods, neg_binomial_periods and neg_binomial_units must be >= 1")
        for name in ("confounded_share", "hidden_share"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {share}")

    def confounded_and_hidden(self) -> tuple[set[int], set[int]]:
        """Ids of the confounded worlds (spread evenly) and of those with a hidden confounder."""
        n_confounded = round(self.n_worlds * self.confounded_share)
        confounded = (
            set(np.linspace(0, self.n_worlds - 1, n_confounded).round().astype(int).tolist())
            if n_confounded
            else set()
        )
        share = self.hidden_share
        hidden = {
            w
            for j, w in enumerate(sorted(confounded))
            if math.floor((j + 1) * share) > math.floor(j * share)
        }
        return confounded, hidden


def _effect_design(u: float, confounded: bool, family: str, spec: _WorldsSpec) -> EffectDesign:
    if u < spec.zero_share:
        return "zero"
    if not confounded and family != "gaussian" and u < spec.zero_share + spec.prior_share:
        return "prior"
    return "mix"


def _design_effects(
    design: EffectDesign, family: str, n_types: int, n_numeric: int, rng: np.random.Generator
) -> dict[str, Any]:
    """The effect arguments of the generator for one world's design."""
    if design == "prior":
        return prior_effects(n_types, n_numeric, rng)
    if design == "zero":
        return {
            "effect_means": (0.0,) * n_types,
            "effect_segment_sd": 0.0,
            "interaction_sd": 0.0,
            "n_interacting": 2,
            "dose_rate": 1.0,
        }
    return {
        "effect_means": _mix_effects(family, n_types, rng),
        "effect_segment_sd": float(_SEGMENT_SD[family] * rng.uniform(0.5, 1.5)),
        "interaction_sd": 0.05,
        "n_interacting": 2,
        "dose_rate": 1.0,
    }


def _world_config(
    spec: _WorldsSpec, i: int, confounded: bool, hidden: bool, rng: np.random.Generator
) -> WorldConfig:
    """Draw world ``i`` (the draws happen in a fixed order: the run is reproducible)."""
    twin_type, family = _FAMILY_OF_COMBO[i % len(_FAMILY_OF_COMBO)]
    n_types = int(rng.integers(2, 5))
    n_numeric = 3
    design = _effect_design(rng.random(), confounded, family, spec)
    extra = _design_effects(design, family, n_types, n_numeric, rng)
    rare = rng.random() < spec.rare_share
    rare_type = int(rng.integers(n_types)) if rare else None
    weights = tuple(0.08 if j == rare_type else 1.0 for j in range(n_types))
    nb = family == "neg_binomial"
    hi = min(spec.n_units[1], spec.neg_binomial_units) if nb else spec.n_units[1]
    lo = min(spec.n_units[0], hi)
    return WorldConfig(
        world_id=i,
        seed=spec.random_seed + i,
        twin_type=twin_type.value,
        family=family,
        n_units=int(rng.integers(lo, hi + 1)),
        n_periods=min(spec.n_periods, spec.neg_binomial_periods) if nb else spec.n_periods,
        n_segments=int(rng.integers(4, 9)),
        n_numeric=n_numeric,
        n_intervention_types=n_types,
        effect_design=design,
        treated_fraction=float(rng.uniform(0.3, 0.6)),
        type_weights=weights,
        rare_type=rare_type,
        segment_concentration=float(rng.choice([0.7, 2.0, 6.0])),
        confounding=float(rng.uniform(0.5, 1.5)) if confounded else 0.0,
        primary_type=int(rng.integers(n_types)),
        hidden_confounder=hidden,
        **extra,
    )


@dataclass(frozen=True)
class RunSettings:
    """Sampler and simulation settings shared by every world.

    Attributes
    ----------
    draws, tune, chains, cores : int
        NUTS settings of each fit.
    twin_count : int
        Twins per simulation.
    intensity : float
        Intensity simulated (and whose effect the baselines estimate).
    baselines : bool
        Run the baselines.
    rehearsal : bool
        Rehearse the fit of every world without experiments on its own history
        (placebo campaigns, :func:`bayestwin.engine.rehearsal.rehearse`) and record the
        placebos' false-deploy rate with the world.
    placebos : int
        Placebo types of each rehearsal.
    experiment_n_per_arm : int
        Units per arm of each real experiment a world with ``experiments > 0`` draws
        from its truth (:mod:`bayestwin.calibration.loop`).
    gate_draws : int
        Most draws per chain of the one refit of a fit that misses the diagnostics gate
        on ESS or r_hat alone (:func:`bayestwin.calibration.gate.gate_draws_needed`);
        0 never refits.
    season_length : int
        Periods per seasonal cycle of the fits (``TwinModelSpec.season_length``), given
        to a fit whose history has more periods than that; 0: none. The worlds'
        calendar has four periods per cycle (the ``trend_season`` kind's wave), as a
        user of quarterly data would say.
    """

    draws: int = 500
    tune: int = 500
    chains: int = 2
    cores: int = 1
    twin_count: int = 2000
    intensity: float = 1.0
    baselines: bool = True
    rehearsal: bool = False
    placebos: int = 8
    experiment_n_per_arm: int = 400
    gate_draws: int = 0
    season_length: int = 4

    def sampler(self, random_seed: int) -> SamplerSettings:
        """The NUTS settings of a fit of this run, without a progress bar.

        Parameters
        ----------
        random_seed : int
            The fit's seed.
        """
        return SamplerSettings(
            draws=self.draws,
            tune=self.tune,
            chains=self.chains,
            cores=self.cores,
            progressbar=False,
            random_seed=random_seed,
        )
