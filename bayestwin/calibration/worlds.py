"""Synthetic worlds: their configurations, one world's run, and many worlds in parallel.

In each world (:func:`run_world`): draw the history, fit the twin model, simulate every
intervention type at the run's intensity on twins drawn from the brand's population,
compute the true ATE of *those same twins* from the ground truth (overall and per
segment), and estimate the same ATEs with the baselines. The records are plain dicts,
so worlds can run in other processes (:func:`run_calibration`).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import special

from bayestwin.calibration.baselines import (
    BaselineEstimate,
    complete_pooling_glm,
    linear_dml,
    naive_difference,
    no_pooling_glm,
    unit_data,
)
from bayestwin.calibration.stats import COVERAGE_LEVELS, interval_hits, normal_hits, sbc_rank
from bayestwin.core.families import Family
from bayestwin.engine.fidelity import error_floor, prediction_error
from bayestwin.model.fit import TwinPriors
from bayestwin.vocabulary import TwinType

__all__ = [
    "ASSIGNMENTS",
    "Assignment",
    "CalibrationRun",
    "EffectDesign",
    "RunSettings",
    "WorldConfig",
    "draw_world_configs",
    "prior_effects",
    "run_calibration",
    "run_world",
]

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


# -- world configurations --------------------------------------------------------------
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
    mu_tau = rng.normal(0.0, pr.effect_mean_sd)
    # Gamma(2, rate = 2 / scale), as in the generator's boundary-avoiding scale prior
    sigma_type = rng.gamma(2.0, pr.effect_type_sd / 2.0)
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
    if n_worlds < 1:
        raise ValueError(f"n_worlds must be >= 1, got {n_worlds}")
    if not 1 <= n_units[0] <= n_units[1]:
        raise ValueError(f"n_units must be a range (lo, hi) with 1 <= lo <= hi, got {n_units}")
    if n_periods < 1 or neg_binomial_periods < 1 or neg_binomial_units < 1:
        raise ValueError("n_periods, neg_binomial_periods and neg_binomial_units must be >= 1")
    for name, share in (("confounded_share", confounded_share), ("hidden_share", hidden_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {share}")
    rng = np.random.default_rng(random_seed)
    n_confounded = round(n_worlds * confounded_share)
    confounded_ids = (
        set(np.linspace(0, n_worlds - 1, n_confounded).round().astype(int).tolist())
        if n_confounded
        else set()
    )
    hidden_ids = {
        w
        for j, w in enumerate(sorted(confounded_ids))
        if math.floor((j + 1) * hidden_share) > math.floor(j * hidden_share)
    }
    configs = []
    for i in range(n_worlds):
        twin_type, family = _FAMILY_OF_COMBO[i % len(_FAMILY_OF_COMBO)]
        confounded = i in confounded_ids
        n_types = int(rng.integers(2, 5))
        n_numeric = 3
        u = rng.random()
        design: EffectDesign
        if u < zero_share:
            design = "zero"
        elif not confounded and family != "gaussian" and u < zero_share + prior_share:
            design = "prior"
        else:
            design = "mix"
        extra: dict[str, Any]
        if design == "prior":
            extra = prior_effects(n_types, n_numeric, rng)
        elif design == "zero":
            extra = {
                "effect_means": (0.0,) * n_types,
                "effect_segment_sd": 0.0,
                "interaction_sd": 0.0,
                "n_interacting": 2,
                "dose_rate": 1.0,
            }
        else:
            extra = {
                "effect_means": _mix_effects(family, n_types, rng),
                "effect_segment_sd": float(_SEGMENT_SD[family] * rng.uniform(0.5, 1.5)),
                "interaction_sd": 0.05,
                "n_interacting": 2,
                "dose_rate": 1.0,
            }
        rare = rng.random() < rare_share
        rare_type = int(rng.integers(n_types)) if rare else None
        weights = tuple(0.08 if j == rare_type else 1.0 for j in range(n_types))
        nb = family == "neg_binomial"
        hi = min(n_units[1], neg_binomial_units) if nb else n_units[1]
        lo = min(n_units[0], hi)
        configs.append(
            WorldConfig(
                world_id=i,
                seed=random_seed + i,
                twin_type=twin_type.value,
                family=family,
                n_units=int(rng.integers(lo, hi + 1)),
                n_periods=min(n_periods, neg_binomial_periods) if nb else n_periods,
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
                hidden_confounder=i in hidden_ids,
                **extra,
            )
        )
    return configs


# -- one world --------------------------------------------------------------------------
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
    """

    draws: int = 500
    tune: int = 500
    chains: int = 2
    cores: int = 1
    twin_count: int = 2000
    intensity: float = 1.0
    baselines: bool = True


def _decision_from_normal(
    est: BaselineEstimate, threshold: float, confidence: float
) -> tuple[float, str]:
    from bayestwin.engine.simulation import decide

    if not est.estimable:
        return float("nan"), ""
    floor = threshold * abs(est.control_mean)
    p = float(special.ndtr((est.ate - floor) / est.se)) if est.se > 0 else float(est.ate > floor)
    decision = decide(p, min_effect_threshold=threshold, confidence_threshold=confidence)
    return p, decision.recommendation.value


def _true_power(
    n: int | None, true_ate: float, var_c: float, var_t: float, alpha: float, shrink: float = 1.0
) -> float:
    from bayestwin.core.power import directional_power

    if n is None:
        return float("nan")
    return float(directional_power(true_ate, var_c * shrink, var_t * shrink, n, alpha=alpha))


def run_world(config: WorldConfig, run: RunSettings | None = None) -> dict[str, Any]:
    """Fit, simulate and compare one world with its ground truth and the baselines.

    Parameters
    ----------
    config : WorldConfig
        The world.
    run : RunSettings, optional
        Sampler and simulation settings.

    Returns
    -------
    dict
        ``world`` (the config and fit facts), ``effects`` (one record per
        intervention type) and ``segments`` (one record per type and segment with
        twins). A world that fails records ``error`` and empty lists.
    """
    run = run if run is not None else RunSettings()
    t0 = time.perf_counter()
    world: dict[str, Any] = {
        **asdict(config),
        "confounded": config.confounded,
        "assignment": config.assignment,
    }
    try:
        effects, segments = _run_world(config, run, world)
    except Exception as exc:  # noqa: BLE001 - one failed world must not stop the run
        world.update(error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0)
        return {"world": world, "effects": [], "segments": []}
    world.update(error=None, seconds=time.perf_counter() - t0)
    return {"world": world, "effects": effects, "segments": segments}


def _run_world(
    config: WorldConfig, run: RunSettings, world: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from bayestwin.settings import Settings
    from bayestwin.model.fit import SamplerSettings, TwinGenerator, default_spec
    from bayestwin.core.power import prognostic_rho2, total_outcome_variance
    from bayestwin.engine.simulation import SimulationEngine, decide
    from bayestwin.synthetic import generate_synthetic_twin_data

    brand = "Calibra"
    sd = generate_synthetic_twin_data(
        config.twin_type,
        n_units=config.n_units,
        n_periods=config.n_periods,
        brands=(brand,),
        n_segments=config.n_segments,
        n_numeric=config.n_numeric,
        n_categorical=1,
        n_intervention_types=config.n_intervention_types,
        family=config.family,  # type: ignore[arg-type]
        effect_means=list(config.effect_means),
        effect_segment_sd=config.effect_segment_sd,
        interaction_sd=config.interaction_sd,
        n_interacting=config.n_interacting,
        dose_rate=config.dose_rate,
        treated_fraction=config.treated_fraction,
        type_weights=list(config.type_weights),
        confounding=config.confounding,
        segment_concentration=config.segment_concentration,
        random_seed=config.seed,
    )
    truth = sd.truth
    numeric = list(sd.numeric_features)
    if config.hidden_confounder:
        # the feature that moves the baseline most is never seen by any method
        beta = truth.brands[brand].beta[: len(numeric)]
        hidden = numeric.pop(int(np.argmax(np.abs(beta))))
        world["hidden_feature"] = hidden
        world["hidden_feature_beta"] = float(np.max(np.abs(beta)))
    spec = default_spec(
        config.twin_type,
        brand,
        family=config.family,  # type: ignore[arg-type]
        numeric_features=numeric,
        categorical_features=sd.categorical_features,
        sampler=SamplerSettings(
            draws=run.draws,
            tune=run.tune,
            chains=run.chains,
            cores=run.cores,
            progressbar=False,
            random_seed=config.seed,
        ),
    )
    t_fit = time.perf_counter()
    model = TwinGenerator(spec).fit(sd.data, keep_trace=False, override_diagnostics=True)
    diag = model.diagnostics
    world.update(
        fit_seconds=time.perf_counter() - t_fit,
        diagnostics_passed=diag.passed,
        max_r_hat=diag.max_r_hat,
        min_ess_bulk=diag.min_ess_bulk,
        divergences=diag.divergences,
    )
    settings = Settings()
    thr, conf = settings.min_effect_threshold, settings.confidence_threshold
    engine = SimulationEngine(settings)
    population = sd.population(brand).set_index("unit_id")
    history = sd.data
    treated_units = history.groupby("unit_id")[
        ["intervention_type", "intensity", "segment"]
    ].first()
    data = unit_data(history, numeric, sd.categorical_features) if run.baselines else None
    natural_disp = None
    if truth.dispersion is not None:
        natural_disp = truth.dispersion * (truth.outcome_scale if truth.family == "gaussian" else 1)

    # every type is simulated on the same twins (same seed), so that the baselines are
    # fitted once per world and all methods average over the same units
    types = [k for k in truth.intervention_types if k in model.posterior.intervention_types]
    world["types_unknown_to_model"] = len(truth.intervention_types) - len(types)
    sims = {
        kind: engine.simulate(
            model,
            kind,
            {"intensity": run.intensity},
            twin_count=run.twin_count,
            confidence_level=0.95,
            random_seed=config.seed,
            dose_grid=(),
        )
        for kind in types
    }
    twin_ids = np.asarray(sims[types[0]].twin_unit_ids)
    twins = population.loc[twin_ids].reset_index()
    seg_names = sorted(twins["segment"].astype(str).unique())
    seg_masks = {s: (twins["segment"].astype(str) == s).to_numpy() for s in seg_names}
    groups = {"all": np.ones(len(twins), bool), **{f"seg:{s}": m for s, m in seg_masks.items()}}
    baselines: dict[str, dict[str, dict[str, BaselineEstimate]]] = {}
    if data is not None:
        baselines["no_pooling"] = no_pooling_glm(
            data, truth.family, types, run.intensity, twins, groups
        )
        baselines["complete_pooling"] = complete_pooling_glm(
            data, truth.family, types, run.intensity, twins, groups
        )
        baselines["naive"] = naive_difference(
            data, types, run.intensity, {"all": None, **{f"seg:{s}": s for s in seg_names}}
        )
        dml = linear_dml(data, types, run.intensity, twins, groups, random_seed=config.seed)
        if dml is not None:
            baselines["linear_dml"] = dml

    mu_c = truth.expected_outcome(twins, None)
    var_c = total_outcome_variance(truth.family, mu_c, dispersion=natural_disp)
    rho2 = prognostic_rho2(mu_c, var_c)
    seg_sizes = population["segment"].value_counts()
    effects: list[dict[str, Any]] = []
    seg_records: list[dict[str, Any]] = []
    for kind in types:
        j = truth.intervention_types.index(kind)
        sim = sims[kind]
        if not np.array_equal(np.asarray(sim.twin_unit_ids), twin_ids):
            raise RuntimeError("simulations with one seed drew different twins")
        draws = np.asarray(sim.ate_draws, dtype=float)
        true_eff = truth.ate(twins, kind, run.intensity)
        mu_t = truth.expected_outcome(twins, kind, run.intensity)
        var_t = total_outcome_variance(truth.family, mu_t, dispersion=natural_disp)
        floor = error_floor(
            control_mean=true_eff.control_mean, min_effect_threshold=thr, actual_se=None
        )
        kind_units = treated_units["intervention_type"] == kind
        rec: dict[str, Any] = {
            "world_id": config.world_id,
            "family": config.family,
            "twin_type": config.twin_type,
            "confounded": config.confounded,
            "assignment": config.assignment,
            "effect_design": config.effect_design,
            "intervention_type": kind,
            "type_index": j,
            "primary": j == config.primary_type,
            "rare": j == config.rare_type,
            "treated_units": int(kind_units.sum()),
            "treated_units_at_intensity": int(
                (kind_units & np.isclose(treated_units["intensity"], run.intensity)).sum()
            ),
            "true_ate": true_eff.ate,
            "true_control_mean": true_eff.control_mean,
            "true_lift": true_eff.relative,
            "error_floor": floor,
            "diagnostics_passed": diag.passed,
        }
        twin_est = float(sim.simulated_ate)  # type: ignore[arg-type]
        rec.update(_method_record("twin", twin_est, true_eff.ate, true_eff.control_mean, floor))
        rec.update(
            {f"twin_hit_{lv:g}": h for lv, h in interval_hits(draws, true_eff.ate).items()},
            twin_sd=float(draws.std(ddof=1)),
            twin_ess=_ess(draws, run.chains),
            twin_sbc_rank=sbc_rank(draws, true_eff.ate),
            twin_prob_above=sim.prob_effect_above_threshold,
            twin_decision=sim.recommendation.value if sim.recommendation else "",
            twin_threshold_decision=decide(
                float(sim.prob_effect_above_threshold or 0.0),
                min_effect_threshold=thr,
                confidence_threshold=conf,
            ).recommendation.value,
        )
        ss = sim.sample_size
        sizes = {
            "classic": ss.classic_n_per_arm if ss else None,
            "assurance": ss.assurance_n_per_arm if ss else None,
            "adjusted": ss.covariate_adjusted_n_per_arm if ss else None,
        }
        for name, n in sizes.items():
            rec[f"{name}_n_per_arm"] = n
            rec[f"power_{name}"] = _true_power(
                n,
                true_eff.ate,
                var_c,
                var_t,
                settings.power_alpha,
                shrink=1.0 - rho2 if name == "adjusted" else 1.0,
            )
        for name, by_type in baselines.items():
            est = by_type[kind]["all"]
            rec.update(_method_record(name, est.ate, true_eff.ate, true_eff.control_mean, floor))
            rec[f"{name}_se"] = est.se
            hits = normal_hits(est.ate, est.se, true_eff.ate) if est.estimable else {}
            for lv in COVERAGE_LEVELS:
                rec[f"{name}_hit_{lv:g}"] = hits.get(lv, float("nan"))
            p, dec = _decision_from_normal(est, thr, conf)
            rec[f"{name}_prob_above"] = p
            rec[f"{name}_threshold_decision"] = dec
        effects.append(rec)

        sim_segments = {s.segment: s for s in sim.segment_effects}
        for s in seg_names:
            mask = seg_masks[s]
            seg_true = truth.ate(twins[mask], kind, run.intensity)
            seg_floor = error_floor(
                control_mean=seg_true.control_mean, min_effect_threshold=thr, actual_se=None
            )
            in_seg = treated_units["segment"] == s
            srec: dict[str, Any] = {
                "world_id": config.world_id,
                "family": config.family,
                "confounded": config.confounded,
                "assignment": config.assignment,
                "intervention_type": kind,
                "rare": j == config.rare_type,
                "segment": s,
                "segment_units": int(seg_sizes.get(s, 0)),
                "segment_share": float(seg_sizes.get(s, 0) / len(population)),
                "segment_treated_units": int((in_seg & kind_units).sum()),
                "true_ate": seg_true.ate,
                "true_control_mean": seg_true.control_mean,
                "error_floor": seg_floor,
            }
            seg_twin = sim_segments.get(s)
            if seg_twin is not None:
                srec.update(
                    _method_record(
                        "twin", seg_twin.ate, seg_true.ate, seg_true.control_mean, seg_floor
                    )
                )
                srec["twin_hit_0.95"] = bool(seg_twin.ci_lower <= seg_true.ate <= seg_twin.ci_upper)
            for name, by_type in baselines.items():
                est = by_type[kind][f"seg:{s}"]
                srec.update(
                    _method_record(name, est.ate, seg_true.ate, seg_true.control_mean, seg_floor)
                )
                srec[f"{name}_hit_0.95"] = (
                    normal_hits(est.ate, est.se, seg_true.ate, (0.95,))[0.95]
                    if est.estimable
                    else float("nan")
                )
            seg_records.append(srec)
    return effects, seg_records


def _ess(draws: np.ndarray, chains: int) -> float:
    """Bulk ESS of ATE draws stored chain after chain."""
    import arviz as az

    if chains < 2 or draws.size % chains:
        return float("nan")
    return float(az.ess(draws.reshape(chains, -1)))


def _method_record(
    name: str, estimate: float, true_ate: float, control_mean: float, floor: float
) -> dict[str, Any]:
    if not np.isfinite(estimate):
        return {
            f"{name}_ate": float("nan"),
            f"{name}_rel_error": float("nan"),
            f"{name}_abs_error": float("nan"),
        }
    return {
        f"{name}_ate": float(estimate),
        f"{name}_rel_error": prediction_error(estimate, true_ate, floor),
        f"{name}_abs_error": abs(estimate - true_ate) / abs(control_mean),
    }


# -- many worlds ---------------------------------------------------------------------------
@dataclass
class CalibrationRun:
    """Records of a calibration run.

    Attributes
    ----------
    worlds : DataFrame
        One row per world (config, fit facts, error).
    effects : DataFrame
        One row per (world, intervention type).
    segments : DataFrame
        One row per (world, intervention type, segment with twins).
    settings : RunSettings
        The run's settings.
    wall_seconds : float
        Wall time of the run.
    workers : int
        Parallel processes used.
    """

    worlds: pd.DataFrame
    effects: pd.DataFrame
    segments: pd.DataFrame
    settings: RunSettings
    wall_seconds: float
    workers: int
    meta: dict[str, Any] = field(default_factory=dict)


def _init_worker() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import logging

    for name in ("pymc", "pytensor", "nutpie", "bayestwin"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")


def _run_world_quiet(config: WorldConfig, run: RunSettings) -> dict[str, Any]:
    _init_worker()
    return run_world(config, run)


def run_calibration(
    configs: Sequence[WorldConfig],
    run: RunSettings | None = None,
    *,
    workers: int = 1,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> CalibrationRun:
    """Run every world, in ``workers`` processes.

    Parameters
    ----------
    configs : sequence of WorldConfig
        The worlds (:func:`draw_world_configs`).
    run : RunSettings, optional
        Shared settings.
    workers : int
        Processes; 1 runs in this process.
    progress : callable, optional
        Called as ``progress(done, total, world_record)`` after each world.

    Returns
    -------
    CalibrationRun
    """
    run = run if run is not None else RunSettings()
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    if workers <= 1:
        for cfg in configs:
            results.append(_run_world_quiet(cfg, run))
            if progress is not None:
                progress(len(results), len(configs), results[-1]["world"])
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_run_world_quiet, cfg, run) for cfg in configs]
            for fut in as_completed(futures):
                results.append(fut.result())
                if progress is not None:
                    progress(len(results), len(configs), results[-1]["world"])
    results.sort(key=lambda r: r["world"]["world_id"])
    worlds = pd.DataFrame([r["world"] for r in results])
    effects = pd.DataFrame([e for r in results for e in r["effects"]])
    segments = pd.DataFrame([s for r in results for s in r["segments"]])
    return CalibrationRun(
        worlds=worlds,
        effects=effects,
        segments=segments,
        settings=run,
        wall_seconds=time.perf_counter() - t0,
        workers=workers,
    )
