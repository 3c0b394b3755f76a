"""SimulationEngine: posterior effect of an intervention on digital twins, and a decision.

Which number is which (the output contract of this module):

**Population ATE** (:func:`bayestwin.core.effects.effect_draws`,
``SimulationResult.simulated_ate`` and its interval). For every posterior draw ``d``,
the mean over the twins of the *expected* outcome under treatment minus the expected
outcome under control::

    ATE_d = (1 / N) sum_twins [E(Y | treated, unit, theta_d) - E(Y | control, unit, theta_d)]
    lift_d = ATE_d / |control mean_d|

It carries posterior uncertainty only: no outcome noise, no sampling of units into arms.
``simulated_ate`` is the posterior **median** of ``ATE_d`` (robust to skewed posteriors,
and the effect at which the classic sample size is computed); the interval is the
equal-tailed credible interval at ``confidence_level``; ``relative_lift`` is the median
of ``lift_d``.

**Observed-experiment predictive**
(:func:`bayestwin.core.predictive.observed_ate_predictive`). The ATE that a real two-arm
test with ``n_treatment`` and ``n_control`` units would *report*: each population ATE
draw plus normal sampling noise with standard error
``sqrt(sd_treated**2 / n_treatment + sd_control**2 / n_control)``, the per-arm sds being
the total outcome sds of the eligible population (``outcome_sd_control`` and
``outcome_sd_treated``: unit variance plus between-unit variance of expected outcomes).
The fidelity tracker compares real results with this wider distribution, never with the
population interval.

**Threshold.** ``min_effect_threshold`` (spec 7: "Skip if ATE < 5%") applies to the
*relative* lift: ``P(lift > min_effect_threshold)`` drives the decision (see
:func:`bayestwin.core.decision.decide`).

The computation (chunks, threads, precision) is :mod:`bayestwin.core.effects`'s; the
summary and the decision are :mod:`bayestwin.core.effects_summary`'s; the request
checks are :func:`bayestwin.engine.requests.check_request`. The engine reads no
settings: its thresholds and limits are constructor arguments (:class:`EngineSettings`
holds their defaults, the shipped configuration's).

**Panel models** (:mod:`bayestwin.model.panel_terms`). The twin of unit ``i`` carries
``i``'s posterior unit deviation; a unit the history lacks draws one from the fitted
population distribution. The ATE is for the ``horizon`` periods right after the
history: each period's shift is drawn from the fitted walk, drift and seasonal wave,
and the ATE is averaged over them
(:meth:`~bayestwin.core.posterior.TwinPosterior.period_shifts`).

Randomness: the random steps (the draw of twins; for a panel model the unit deviations
and period shifts) are seeded by ``random_seed``; the same seed gives bit-identical
numbers.
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.core.decision import DecisionRule
from bayestwin.core.effects import (
    EffectDraws,
    EncodedUnits,
    average_effect_draws,
    effect_draws,
)
from bayestwin.core.effects_summary import EffectSummary, default_dose_grid, summarise_effects
from bayestwin.core.population import TwinSample, draw_twins
from bayestwin.core.posterior import TwinPosterior
from bayestwin.core.rehearsal import rehearsal_summary
from bayestwin.core.unit_effects import UnitOffsets
from bayestwin.engine.population import TargetPopulation, resolve_population
from bayestwin.engine.requests import CheckedRequest, check_request
from bayestwin.errors import InvalidInputError
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.schemas import InterventionConfig, SimulationResult, utcnow
from bayestwin.vocabulary import SimulationStatus

__all__ = ["EngineSettings", "SimulationEngine"]


@dataclass(frozen=True)
class EngineSettings:
    """Thresholds and limits of a :class:`SimulationEngine`.

    The defaults are the values of the shipped ``digital_twin_config.yaml``; the
    service passes the loaded settings' values instead.

    Attributes
    ----------
    min_effect_threshold : float
        Threshold on the relative lift.
    confidence_threshold : float
        In [0.5, 1): the probability of clearing it needed to deploy.
    power_alpha, power_target : float
        Two-sided level and target power of the real test, in (0, 1).
    default_twin_count : int
        Twins drawn when a call gives no count.
    max_twin_count : int
        Most twins a call may ask for.
    batch_size : int
        Units per vectorised chunk.
    horizon : int
        Periods after the history that a panel model's ATE is averaged over (>= 1).
    rehearsal_warn_rate : float
        Rehearsal false-deploy rate above which a result's ``rehearsal`` warns.
    """

    min_effect_threshold: float = 0.05
    confidence_threshold: float = 0.70
    power_alpha: float = 0.05
    power_target: float = 0.80
    default_twin_count: int = 10_000
    max_twin_count: int = 50_000
    batch_size: int = 1000
    horizon: int = 1
    rehearsal_warn_rate: float = 0.05

    def __post_init__(self) -> None:
        _ = self.rule  # checks the thresholds
        if not 0.0 <= self.rehearsal_warn_rate <= 1.0:
            raise ValueError(f"rehearsal_warn_rate must be in [0, 1]: {self.rehearsal_warn_rate}")
        for name in ("default_twin_count", "max_twin_count", "batch_size", "horizon"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_twin_count < self.default_twin_count:
            raise ValueError(
                f"max_twin_count ({self.max_twin_count}) must be >= "
                f"default_twin_count ({self.default_twin_count})"
            )

    @property
    def rule(self) -> DecisionRule:
        """The decision thresholds and the real test's design."""
        return DecisionRule(
            min_effect_threshold=self.min_effect_threshold,
            confidence_threshold=self.confidence_threshold,
            power_alpha=self.power_alpha,
            power_target=self.power_target,
        )


@dataclass(frozen=True)
class _PopulationCache:
    """What the engine keeps of a model's population between simulations."""

    encoded: EncodedUnits
    unit_ids: NDArray
    unit_id_strings: NDArray
    unit_index: NDArray | None


def _check_horizon(horizon: object) -> int:
    """The horizon as an int in [1, 520]; an error naming the field otherwise."""
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer):
        horizon = None
    if horizon is None or not 1 <= int(horizon) <= 520:
        raise InvalidInputError(
            "horizon must be an integer number of periods in [1, 520]", field="horizon"
        )
    return int(horizon)


def _resolve_seed(random_seed: int | None) -> int:
    if random_seed is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    return int(random_seed)


class SimulationEngine:
    """Simulate an intervention on digital twins drawn from a fitted model's population.

    Parameters
    ----------
    min_effect_threshold, confidence_threshold, power_alpha, power_target : float
        The decision thresholds and the real test's design (see :class:`EngineSettings`).
    default_twin_count, max_twin_count : int
        Twins when a call gives no count, and the most a call may ask for.
    batch_size : int
        Units per vectorised chunk.
    horizon : int
        Default periods after the history a panel model's ATE is for.
    rehearsal_warn_rate : float
        The model's rehearsal warns on a result above this false-deploy rate.
    dtype : numpy floating type
        Working precision of the vectorised core (float32 by default; see
        :mod:`bayestwin.core.effects`).
    blas_threads : int, optional
        BLAS threads inside the vectorised core (default 1; None leaves the process
        setting alone).
    threads : int, optional
        Worker threads of the vectorised core (default: one per CPU, at most
        :data:`~bayestwin.core.effects_chunks.MAX_THREADS`; 1 runs it in the calling
        thread). Results do not depend on it.

    Notes
    -----
    The engine keeps the encoded features of each model's population (weakly, keyed
    by the model object), so repeated simulations on one model skip the encoding. A
    :class:`~bayestwin.model.fitted.FittedTwinModel` is immutable: do not edit its
    population in place.
    """

    def __init__(
        self,
        *,
        min_effect_threshold: float = EngineSettings.min_effect_threshold,
        confidence_threshold: float = EngineSettings.confidence_threshold,
        power_alpha: float = EngineSettings.power_alpha,
        power_target: float = EngineSettings.power_target,
        default_twin_count: int = EngineSettings.default_twin_count,
        max_twin_count: int = EngineSettings.max_twin_count,
        batch_size: int = EngineSettings.batch_size,
        horizon: int = EngineSettings.horizon,
        rehearsal_warn_rate: float = EngineSettings.rehearsal_warn_rate,
        dtype: type[np.floating] = np.float32,
        blas_threads: int | None = 1,
        threads: int | None = None,
    ) -> None:
        self.settings = EngineSettings(
            min_effect_threshold=min_effect_threshold,
            confidence_threshold=confidence_threshold,
            power_alpha=power_alpha,
            power_target=power_target,
            default_twin_count=default_twin_count,
            max_twin_count=max_twin_count,
            batch_size=batch_size,
            horizon=horizon,
            rehearsal_warn_rate=rehearsal_warn_rate,
        )
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        if blas_threads is not None and blas_threads < 1:
            raise ValueError(f"blas_threads must be >= 1 or None, got {blas_threads}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self.dtype = dtype
        self.blas_threads = blas_threads
        self.threads = threads
        self._cache: weakref.WeakKeyDictionary[FittedTwinModel, _PopulationCache] = (
            weakref.WeakKeyDictionary()
        )

    def _population_cache(self, model: FittedTwinModel) -> _PopulationCache:
        cached = self._cache.get(model)
        if cached is None:
            ids = model.population["unit_id"].to_numpy()
            strings = np.array([str(u) for u in ids], dtype=object)
            effects = model.posterior.unit_effects
            cached = _PopulationCache(
                encoded=EncodedUnits.from_frame(model.posterior, model.population),
                unit_ids=ids,
                unit_id_strings=strings,
                unit_index=None if effects is None else effects.index_of(strings),
            )
            self._cache[model] = cached
        return cached

    # -- the public entry point -------------------------------------------------------------
    def simulate(
        self,
        model: FittedTwinModel,
        intervention_type: str,
        intervention_config: InterventionConfig | Mapping[str, Any] | None = None,
        twin_count: int | None = None,
        confidence_level: float = 0.95,
        random_seed: int | None = None,
        *,
        include_draws: bool = True,
        dose_grid: Sequence[float] | None = None,
        fidelity_warning: bool = False,
        fidelity_warning_reason: str | None = None,
        experiment_design_id: str | None = None,
        horizon: int | None = None,
        population: pd.DataFrame | Sequence[object] | None = None,
    ) -> SimulationResult:
        """Simulate an intervention on ``twin_count`` twins and recommend what to do.

        Parameters
        ----------
        model : FittedTwinModel
            A fitted model whose diagnostics passed (or were overridden).
        intervention_type : str
            An intervention type the model knows.
        intervention_config : InterventionConfig or mapping, optional
            Intensity and target filters (default: intensity 1, everyone).
        twin_count : int, optional
            Twins to draw (default ``default_twin_count``; at most ``max_twin_count``).
        confidence_level : float
            Level of the credible intervals, in (0, 1).
        random_seed : int, optional
            Seed of the twin draw; None draws one (recorded in the result).
        include_draws : bool
            Keep the ATE draws and the twin -> unit ids in the result.
        dose_grid : sequence of float, optional
            Intensities of the dose-response curve; default
            :func:`~bayestwin.core.effects_summary.default_dose_grid`; empty to skip it.
        fidelity_warning, fidelity_warning_reason, experiment_design_id
            Passed through to the result (the service sets them).
        horizon : int, optional
            For a model with time effects: the ATE is averaged over the ``horizon``
            periods right after the history (default ``EngineSettings.horizon``).
        population : DataFrame or sequence of unit ids, optional
            The units to draw twins from instead of the fitted history's (see
            :mod:`bayestwin.engine.population`): ids of history units, or a DataFrame
            of any units with the model's feature and segment columns. Target filters
            apply to it.

        Returns
        -------
        SimulationResult
            Status ``completed``; ``model_id`` None (the service sets the row's);
            ``rehearsal`` the model's placebo rehearsal, warning above
            ``rehearsal_warn_rate``.

        Raises
        ------
        InvalidInputError
            A request field is wrong (see :func:`~bayestwin.engine.requests.check_request`).
        NotFitError
            The model failed its diagnostics.
        """
        start = time.perf_counter()
        st = self.settings
        seed = _resolve_seed(random_seed)
        target = (
            None
            if population is None or not model.fit_for_use
            else resolve_population(model, population, np.random.default_rng([seed, 2]))
        )
        checked = check_request(
            model, intervention_type, intervention_config, twin_count, confidence_level,
            random_seed, dose_grid, max_twin_count=st.max_twin_count,
            default_twin_count=st.default_twin_count,
            population=None if target is None else target.frame,
        )  # fmt: skip
        if target is None:
            target = self._history_population(model)
        h = _check_horizon(st.horizon if horizon is None else horizon)
        intensity = checked.config.intensity
        grid = default_dose_grid(intensity) if dose_grid is None else tuple(dose_grid)
        twins, draws = self._draw(target, checked, seed, grid, h)
        summary = self._summarise(target.posterior, draws, twins, grid, confidence_level)
        extra = {
            "ate_draws": draws.ate[0].tolist() if include_draws else None,
            "twin_unit_ids": list(target.unit_ids[twins.rows].tolist()) if include_draws else None,
            "fidelity_warning": fidelity_warning,
            "fidelity_warning_reason": fidelity_warning_reason,
            "experiment_design_id": experiment_design_id,
            "execution_time_ms": int(round((time.perf_counter() - start) * 1000.0)),
            "horizon": h if model.posterior.time_scale is not None else None,
            "rehearsal": rehearsal_summary(model.rehearsal, st.rehearsal_warn_rate),
        }
        return self._result(model, checked, twins, summary, seed, confidence_level, extra)

    # -- the steps ---------------------------------------------------------------------------
    def _history_population(self, model: FittedTwinModel) -> TargetPopulation:
        """The fitted history's units (encoded once per model and kept)."""
        cache = self._population_cache(model)
        return TargetPopulation(
            frame=model.population,
            posterior=model.posterior,
            encoded=cache.encoded,
            unit_ids=cache.unit_id_strings,
            unit_index=cache.unit_index,
        )

    def _draw(
        self,
        target: TargetPopulation,
        checked: CheckedRequest,
        seed: int,
        grid: Sequence[float],
        horizon: int = 1,
    ) -> tuple[TwinSample, EffectDraws]:
        """Draw the twins and the effect draws at the intensity, then the rest of the grid.

        A panel model's twins carry their units' deviations, and the draws are averaged
        over the ``horizon`` periods after the history.
        """
        cfg = checked.config
        twins = draw_twins(
            target.frame,
            checked.twin_count,
            cfg.target,
            random_seed=seed,
            unit_ids=target.unit_ids,
        )
        others = sorted({float(v) for v in grid} - {float(cfg.intensity)})
        post = target.posterior
        rng = np.random.default_rng([seed, 1])
        units = None
        if post.unit_effects is not None:
            rows = twins.unique_rows
            idx = (
                post.unit_effects.index_of(target.unit_ids[rows])
                if target.unit_index is None
                else target.unit_index[rows]
            )
            units = post.unit_effects.lazy_draws_at(idx, rng, dtype=self.dtype)
        periods = []
        for shift in post.period_shifts(horizon, rng):
            # the period shift is the same for every twin: it joins the intercepts
            shifted = post
            if shift is not None:
                shifted = dataclasses.replace(post, intercept=post.intercept + shift[:, None])
            arm = [
                self._effects(shifted, target, twins, cfg, [level, *others], units)
                for level, _ in cfg.intensity_levels
            ]
            periods.append(average_effect_draws(arm, [w for _, w in cfg.intensity_levels]))
        draws = average_effect_draws(periods)
        if cfg.intensity_mix is not None:  # the arm's row: its mean intensity
            levels = np.array([cfg.intensity, *others], dtype=float)
            draws = dataclasses.replace(draws, intensities=levels)
        return twins, draws

    def _effects(
        self,
        post: TwinPosterior,
        target: TargetPopulation,
        twins: TwinSample,
        cfg: InterventionConfig,
        levels: list[float],
        offset: NDArray | UnitOffsets | None,
    ) -> EffectDraws:
        """The effect draws of the twins at ``levels`` (the first is the main one)."""
        # rate * s may overflow to inf for a huge intensity on a model that records no
        # intensity range; exp(-inf) = 0 is then the dose response's exact limit
        with np.errstate(over="ignore"):
            return effect_draws(
                post,
                target.encoded.take(twins.unique_rows),
                str(cfg.intervention_type),
                levels,
                weights=twins.counts,
                batch_size=self.settings.batch_size,
                dtype=self.dtype,
                blas_threads=self.blas_threads,
                threads=self.threads,
                unit_offset=offset,
            )

    def _summarise(
        self,
        posterior: TwinPosterior,
        draws: EffectDraws,
        twins: TwinSample,
        grid: Sequence[float],
        confidence_level: float,
    ) -> EffectSummary:
        return summarise_effects(
            draws,
            segment_names=posterior.encoder.segments,
            family=posterior.family,
            eligible=twins.eligible,
            intensity=float(draws.intensities[0]),
            dose_grid=grid,
            prob=confidence_level,
            rule=self.settings.rule,
        )

    def _result(
        self,
        model: FittedTwinModel,
        checked: CheckedRequest,
        twins: TwinSample,
        summary: EffectSummary,
        seed: int,
        confidence_level: float,
        extra: Mapping[str, Any],
    ) -> SimulationResult:
        """The completed result; ``extra``: the draws, timings and pass-through fields."""
        cfg = checked.config
        ate_med, ate_lo, ate_hi = summary.ate
        lift_med, lift_lo, lift_hi = summary.lift
        return SimulationResult(
            model_id=None,
            brand=model.brand,
            twin_type=model.twin_type,
            intervention_type=str(cfg.intervention_type),
            intervention_config=cfg,
            twin_count=checked.twin_count,
            confidence_level=float(confidence_level),
            random_seed=seed,
            simulation_status=SimulationStatus.COMPLETED,
            simulated_ate=ate_med,
            simulated_ci_lower=ate_lo,
            simulated_ci_upper=ate_hi,
            recommendation=summary.decision.recommendation,
            recommended_sample_size=summary.recommended_sample_size,
            outcome_family=model.posterior.family,
            control_mean=summary.control_mean,
            treated_mean=summary.treated_mean,
            relative_lift=lift_med,
            relative_lift_ci_lower=lift_lo,
            relative_lift_ci_upper=lift_hi,
            prob_effect_above_threshold=summary.prob_above,
            min_effect_threshold=self.settings.min_effect_threshold,
            recommendation_rationale=summary.decision.rationale,
            refine_suggestions=summary.suggestions,
            segment_effects=summary.segments,
            dose_response=summary.dose,
            min_effective_intensity=summary.min_intensity,
            sample_size=summary.sample_size,
            prior_estimate=summary.prior,
            eligible_population=twins.eligible,
            population_sufficient=None
            if summary.recommended_sample_size is None
            else summary.recommended_sample_size <= twins.eligible,
            outcome_sd_control=summary.sd_control,
            outcome_sd_treated=summary.sd_treated,
            completed_at=utcnow(),
            **extra,
        )
