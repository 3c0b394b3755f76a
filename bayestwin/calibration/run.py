"""Run the worlds: one world (history, fit, simulations, baselines, records), many in parallel.

In each world (:func:`run_world`): draw the history, fit the twin model, simulate every
intervention type at the run's intensity on twins drawn from the brand's population,
compute the true ATE of *those same twins* from the ground truth (overall and per
segment), and estimate the same ATEs with the baselines. The records are plain dicts,
so worlds can run in other processes (:func:`run_calibration`): a pool of spawned
processes on this machine (:mod:`bayestwin.calibration.pool`), or the workers of a Dask
cluster (:mod:`bayestwin.cluster`), one task per world. A world gives the same records
either way: its fit and its simulations are seeded by the world's seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.calibration.baselines import (
    UnitData,
    complete_pooling_glm,
    linear_dml,
    naive_difference,
    no_pooling_glm,
    unit_data,
)
from bayestwin.calibration.gate import fit_world
from bayestwin.calibration.loop import experiment_fields, rehearsal_fields
from bayestwin.calibration.pool import quiet_process, run_in_processes
from bayestwin.calibration.records import (
    Baselines,
    WorldSample,
    effect_record,
    segment_records,
    unit_treatment,
)
from bayestwin.calibration.twfe import two_way_fixed_effects
from bayestwin.calibration.worlds import RunSettings, WorldConfig
from bayestwin.cluster import DEFAULT_RETRIES, TaskResult, open_client, run_tasks, worker_cores
from bayestwin.errors import InvalidInputError
from bayestwin.settings import Settings
from bayestwin.synthetic import SyntheticTwinData

if TYPE_CHECKING:
    from distributed import Client

    from bayestwin.engine.simulation import SimulationEngine
    from bayestwin.model.fitted import FittedTwinModel
    from bayestwin.schemas import SimulationResult

__all__ = ["ENGINES", "CalibrationRun", "run_calibration", "run_world", "run_world_task"]

#: Where :func:`run_calibration` runs the worlds: a local process pool, or Dask.
ENGINES = ("processes", "dask")

#: The one brand of every world's history.
BRAND = "Calibra"


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
    world = _world_facts(config)
    try:
        effects, segments = _run_world(config, run, world)
    except Exception as exc:  # noqa: BLE001 - one failed world must not stop the run
        return _failed_world(config, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
    world.update(error=None, seconds=time.perf_counter() - t0)
    return {"world": world, "effects": effects, "segments": segments}


def _world_facts(config: WorldConfig) -> dict[str, Any]:
    """The record of a world before it runs: its config and assignment."""
    return {**asdict(config), "confounded": config.confounded, "assignment": config.assignment}


def _failed_world(config: WorldConfig, error: str, seconds: float = 0.0) -> dict[str, Any]:
    """The records of a world that failed: its facts, the error, no effects."""
    world = _world_facts(config)
    world.update(error=error, seconds=seconds)
    return {"world": world, "effects": [], "segments": []}


def run_world_task(config: WorldConfig, run: RunSettings) -> dict[str, Any]:
    """:func:`run_world` as a Dask task: the fit's cores are the worker's.

    Parameters
    ----------
    config : WorldConfig
        The world.
    run : RunSettings
        The run's settings; ``cores`` becomes :func:`bayestwin.cluster.worker_cores`
        (at most ``chains``), which leaves the seeded draws unchanged.

    Returns
    -------
    dict
        As :func:`run_world`.
    """
    cores = min(run.chains, worker_cores(run.cores))
    return run_world(config, replace(run, cores=cores))


def _draw_history(config: WorldConfig) -> SyntheticTwinData:
    from bayestwin.synthetic import generate_synthetic_twin_data

    return generate_synthetic_twin_data(
        config.twin_type,
        n_units=config.n_units,
        n_periods=config.n_periods,
        brands=(BRAND,),
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
        **config.panel_arguments(),
    )


def _visible_features(
    config: WorldConfig, sd: SyntheticTwinData, world: dict[str, Any]
) -> list[str]:
    """The numeric features every method sees (all but a hidden confounder)."""
    numeric = list(sd.numeric_features)
    if config.hidden_confounder:
        # the feature that moves the baseline most is never seen by any method
        beta = sd.truth.brands[BRAND].beta[: len(numeric)]
        hidden = numeric.pop(int(np.argmax(np.abs(beta))))
        world["hidden_feature"] = hidden
        world["hidden_feature_beta"] = float(np.max(np.abs(beta)))
    return numeric


def _baselines(
    data: UnitData | None,
    family: str,
    types: list[str],
    run: RunSettings,
    twins: pd.DataFrame,
    groups: dict[str, NDArray[np.bool_]],
    seed: int,
    history: pd.DataFrame | None = None,
) -> Baselines:
    """Every baseline's estimates on the same history and twins.

    The per-unit baselines need ``data`` (one treatment per unit); two-way fixed
    effects needs the panel ``history`` (two or more periods).
    """
    out: Baselines = {}
    if run.baselines and history is not None and history["period"].nunique() >= 2:
        untreated = history["intervention_type"].fillna("").astype(str) == ""
        control = float(history.loc[untreated, "outcome"].mean())
        out["twfe"] = two_way_fixed_effects(history, types, run.intensity, groups, control)
    if data is None:
        return out
    s = run.intensity
    out["no_pooling"] = no_pooling_glm(data, family, types, s, twins, groups)
    out["complete_pooling"] = complete_pooling_glm(data, family, types, s, twins, groups)
    segments = {"all": None, **{g: g.removeprefix("seg:") for g in groups if g != "all"}}
    out["naive"] = naive_difference(data, types, s, segments)
    dml = linear_dml(data, types, s, twins, groups, random_seed=seed)
    if dml is not None:
        out["linear_dml"] = dml
    return out


def _world_sample(
    config: WorldConfig,
    run: RunSettings,
    sd: SyntheticTwinData,
    twins: pd.DataFrame,
    data: UnitData | None,
    types: list[str],
    diagnostics_passed: bool,
    settings: Settings,
) -> WorldSample:
    """The truth, twins, groups and baselines every record of the world is computed from."""
    from bayestwin.core.power import total_outcome_variance
    from bayestwin.core.sample_size import prognostic_rho2

    truth, population = sd.truth, sd.population(BRAND)
    seg_names = sorted(twins["segment"].astype(str).unique())
    seg_masks = {s: (twins["segment"].astype(str) == s).to_numpy() for s in seg_names}
    groups = {"all": np.ones(len(twins), bool), **{f"seg:{s}": m for s, m in seg_masks.items()}}
    baselines = _baselines(
        data, truth.family, types, run, twins, groups, config.seed, history=sd.data
    )
    natural_disp = None
    if truth.dispersion is not None:
        natural_disp = truth.dispersion * (truth.outcome_scale if truth.family == "gaussian" else 1)
    mu_c = truth.expected_outcome(twins, None)
    var_c = total_outcome_variance(truth.family, mu_c, dispersion=natural_disp)
    return WorldSample(
        config=config,
        run=run,
        truth=truth,
        twins=twins,
        segments=seg_names,
        segment_masks=seg_masks,
        treated_units=unit_treatment(sd.data),
        segment_sizes=population["segment"].value_counts(),
        population_size=len(population),
        baselines=baselines,
        var_c=var_c,
        rho2=prognostic_rho2(mu_c, var_c),
        natural_dispersion=natural_disp,
        min_effect_threshold=settings.min_effect_threshold,
        confidence_threshold=settings.confidence_threshold,
        power_alpha=settings.power_alpha,
        diagnostics_passed=diagnostics_passed,
    )


def _engine(settings: Settings) -> SimulationEngine:
    """The simulation engine with the settings' thresholds and limits."""
    from bayestwin.engine.simulation import EngineSettings, SimulationEngine

    return SimulationEngine(**{f.name: getattr(settings, f.name) for f in fields(EngineSettings)})


def _simulate(
    model: FittedTwinModel, types: list[str], run: RunSettings, seed: int, settings: Settings
) -> dict[str, SimulationResult]:
    """Simulate every type on the same twins (one seed), at the run's intensity."""
    engine = _engine(settings)
    return {
        kind: engine.simulate(
            model,
            kind,
            {"intensity": run.intensity},
            twin_count=run.twin_count,
            confidence_level=0.95,
            random_seed=seed,
            dose_grid=(),
        )
        for kind in types
    }


def _run_world(
    config: WorldConfig, run: RunSettings, world: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    sd = _draw_history(config)
    numeric = _visible_features(config, sd, world)
    model = fit_world(config, run, sd, numeric, world, BRAND)
    # the baselines read one treatment per unit: none where it changes within a unit
    with_baselines = run.baselines and config.treatment_fixed
    data = unit_data(sd.data, numeric, sd.categorical_features) if with_baselines else None
    # every type is simulated on the same twins (same seed), so that the baselines are
    # fitted once per world and all methods average over the same units
    known = model.posterior.intervention_types
    types = [k for k in sd.truth.intervention_types if k in known]
    world["types_unknown_to_model"] = len(sd.truth.intervention_types) - len(types)
    settings = Settings()
    if run.rehearsal and not config.experiments:
        world.update(rehearsal_fields(model, sd.data, run, config.seed, _engine(settings)))
    sims = _simulate(model, types, run, config.seed, settings)
    twin_ids = np.asarray(sims[types[0]].twin_unit_ids)
    twins = sd.population(BRAND).set_index("unit_id").loc[twin_ids].reset_index()
    passed = model.diagnostics.passed
    ws = _world_sample(config, run, sd, twins, data, types, passed, settings)
    effects: list[dict[str, Any]] = []
    segments: list[dict[str, Any]] = []
    for kind in types:
        sim = sims[kind]
        if not np.array_equal(np.asarray(sim.twin_unit_ids), twin_ids):
            raise RuntimeError("simulations with one seed drew different twins")
        rec = effect_record(ws, kind, sim)
        rec.update(experiments=config.experiments, **experiment_fields(kind, world))
        effects.append(rec)
        segments.extend(segment_records(ws, kind, sim))
    return effects, segments


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
    meta : dict
        Extra facts written with the report (for example the command line).
    """

    worlds: pd.DataFrame
    effects: pd.DataFrame
    segments: pd.DataFrame
    settings: RunSettings
    wall_seconds: float
    workers: int
    meta: dict[str, Any] = field(default_factory=dict)


def _run_world_args(args: tuple[WorldConfig, RunSettings]) -> dict[str, Any]:
    return run_world(*args)


def run_calibration(
    configs: Sequence[WorldConfig],
    run: RunSettings | None = None,
    *,
    workers: int = 1,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    engine: Literal["processes", "dask"] = "processes",
    scheduler: str | None = None,
    client: Client | None = None,
    retries: int = DEFAULT_RETRIES,
) -> CalibrationRun:
    """Run every world, in ``workers`` local processes or on a Dask cluster.

    Parameters
    ----------
    configs : sequence of WorldConfig
        The worlds (:func:`~bayestwin.calibration.worlds.draw_world_configs`).
    run : RunSettings, optional
        Shared settings.
    workers : int
        Processes (``"processes"``; 1 runs in this process), or worker processes of the
        embedded ``LocalCluster`` (``"dask"`` without ``scheduler`` or ``client``).
    progress : callable, optional
        Called as ``progress(done, total, world_record)`` after each world.
    engine : {"processes", "dask"}
        ``"processes"``: a pool of spawned processes that end with this one
        (:mod:`bayestwin.calibration.pool`). ``"dask"``: one task per world on a Dask
        cluster (:mod:`bayestwin.cluster`); a world whose worker dies is run again, and
        one that still fails is recorded with its error.
    scheduler : str, optional
        With ``"dask"``: the scheduler's address; None starts an embedded
        ``LocalCluster`` of ``workers`` processes for the run.
    client : distributed.Client, optional
        With ``"dask"``: a client to run on (it stays open); wins over ``scheduler``.
    retries : int
        With ``"dask"``: extra attempts of a world's task that raises.

    Returns
    -------
    CalibrationRun
        The records, sorted by world id; ``workers`` is the number of processes (or
        Dask workers) that ran them.

    Raises
    ------
    InvalidInputError
        If ``engine`` is unknown.
    UnavailableError
        With ``"dask"``: without dask.distributed, or when no scheduler answers.
    """
    if engine not in ENGINES:
        raise InvalidInputError(f"engine must be one of {ENGINES}, got {engine!r}", field="engine")
    run = run if run is not None else RunSettings()
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    args = [(cfg, run) for cfg in configs]

    def report(result: dict[str, Any]) -> None:
        results.append(result)
        if progress is not None:
            progress(len(results), len(configs), result["world"])

    if engine == "dask":
        workers = _run_on_cluster(configs, run, workers, scheduler, client, retries, report)
    elif workers <= 1:
        quiet_process()
        for item in args:
            report(_run_world_args(item))
    else:
        run_in_processes(_run_world_args, args, workers=workers, on_result=report)
    results.sort(key=lambda r: r["world"]["world_id"])
    return CalibrationRun(
        worlds=pd.DataFrame([r["world"] for r in results]),
        effects=pd.DataFrame([e for r in results for e in r["effects"]]),
        segments=pd.DataFrame([s for r in results for s in r["segments"]]),
        settings=run,
        wall_seconds=time.perf_counter() - t0,
        workers=workers,
    )


def _run_on_cluster(
    configs: Sequence[WorldConfig],
    run: RunSettings,
    workers: int,
    scheduler: str | None,
    client: Client | None,
    retries: int,
    report: Callable[[dict[str, Any]], None],
) -> int:
    """Run the worlds as Dask tasks; returns the number of workers that ran them."""
    by_name = {f"world-{i}-{cfg.world_id}": cfg for i, cfg in enumerate(configs)}
    calls = {name: (cfg, run) for name, cfg in by_name.items()}

    def on_result(result: TaskResult[dict[str, Any]]) -> None:
        if result.ok and result.value is not None:
            report(result.value)
        else:
            report(_failed_world(by_name[result.name], str(result.error)))

    def on(c: Client) -> int:
        run_tasks(c, run_world_task, calls, retries=retries, on_result=on_result)
        return len(c.nthreads()) or workers

    if client is not None:
        return on(client)
    with open_client(scheduler, n_workers=max(1, workers)) as own:
        return on(own)
