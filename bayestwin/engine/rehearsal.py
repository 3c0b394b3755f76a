"""A rehearsal at fit time: placebo campaigns on the model's own history.

A simulation that says "deploy" should also say how often it says so when nothing
happens. :func:`rehearse` measures that on the history a model was fitted on:

1. **Placebo history** (:func:`placebo_history`). Only the untreated rows are kept:
   the never-treated units, and the periods before a treated unit's first treatment.
   ``K`` placebo intervention types go to disjoint random subsets of units, as large
   as the history's own campaigns (the median number of units per intervention type),
   at most a ``1 / (2K)`` share of the units each, so that at least half stay
   untreated. In a panel history the units the history treats later, with enough
   untreated periods, are taken first: their fake start comes before their real one,
   so the rehearsal meets whatever drew the campaigns to them. A placebo unit of a
   panel history gets a fake start drawn among its
   untreated periods, leaving :data:`MIN_PRE_PERIODS` periods before it where it has
   enough (staggered adoption, as the history's campaigns start); a unit with one row
   (a cross-sectional history) is treated in it. Each placebo unit's intensity is
   drawn from the history's treated intensities. The true effect of every placebo is
   zero: its rows are untreated rows.
2. **One refit** of the same spec (features, family, panel choices and priors) on the
   placebo history, with all ``K`` placebo types together: they are pooled like new
   intervention types, which is what a new null campaign would meet. The sampler may
   be lighter (:func:`rehearsal_sampler`).
3. **A simulation per placebo type**, run by the given engine as a user's simulation
   would be (its decision thresholds, a 95% interval), at the median placebo
   intensity; the 80% interval comes from the same ATE draws.

The result is a :class:`~bayestwin.core.rehearsal.Rehearsal`: the false-deploy rate,
the skip rate, the coverage of zero by the 95% and 80% intervals, their Wilson
intervals, ``K``, the seed and the time it took. A history with too few untreated
rows or units for ``K`` placebos gives a rehearsal with a ``reason`` and no numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayestwin.core.rehearsal import PlaceboOutcome, Rehearsal
from bayestwin.engine.simulation import SimulationEngine
from bayestwin.errors import InvalidInputError
from bayestwin.model.fit import TwinGenerator
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.model.history import check_history
from bayestwin.model.spec import SamplerSettings, TwinModelSpec

__all__ = [
    "MIN_PLACEBO_UNITS",
    "MIN_PRE_PERIODS",
    "PLACEBO_PREFIX",
    "REHEARSAL_MAX_DRAWS",
    "PlaceboHistory",
    "Rehearsal",
    "placebo_history",
    "rehearsal_sampler",
    "rehearse",
]

MIN_PRE_PERIODS = 2
"""Untreated periods left before a placebo's fake start, where a unit has enough."""
MIN_PLACEBO_UNITS = 5
"""Fewest units a placebo type may be given; fewer and the rehearsal gives a reason."""
PLACEBO_PREFIX = "placebo_"
"""Name of the placebo types: ``placebo_1`` ... ``placebo_K``."""
REHEARSAL_MAX_DRAWS = 500
"""Most draws (and tuning steps) per chain of the default rehearsal refit."""

_Z95 = 1.959963984540054


@dataclass(frozen=True)
class PlaceboHistory:
    """The untreated rows of a history, with placebo campaigns on some units.

    Attributes
    ----------
    history : DataFrame
        The rows (columns of the validated history); placebo rows name a placebo type.
    types : tuple of str
        The placebo types, in order.
    units : dict of str to list
        The units given each placebo type.
    intensity : float
        The median intensity of the placebo rows: what the simulations ask for.
    """

    history: pd.DataFrame
    types: tuple[str, ...]
    units: dict[str, list[object]]
    intensity: float


def _untreated(df: pd.DataFrame, spec: TwinModelSpec) -> pd.DataFrame:
    """Never-treated units, and the periods before a treated unit's first treatment."""
    treated = df[spec.intervention_column] != ""
    unit = df[spec.unit_column]
    if spec.period_column is None:
        return df.loc[~unit.isin(unit[treated].unique())]
    first = df.loc[treated].groupby(spec.unit_column)[spec.period_column].min()
    start = unit.map(first)
    before = start.isna() | (df[spec.period_column] < start)
    return df.loc[before & ~treated]


def _placebo_units(
    df: pd.DataFrame,
    kept: pd.DataFrame,
    spec: TwinModelSpec,
    units: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """The units in the order placebos take them: fake starts before real ones first.

    In a panel history, the units the history later treats and that have more than
    :data:`MIN_PRE_PERIODS` untreated periods come first, in random order: their
    placebo starts before their real campaign, so whatever made them campaign targets
    (a level that was rising, say) is rehearsed too. The other units follow, in random
    order. Without a period column every unit is equally likely.
    """
    if spec.period_column is None:
        return rng.permutation(units)
    ever = set(df.loc[df[spec.intervention_column] != "", spec.unit_column].unique())
    rows = kept[spec.unit_column].value_counts()
    first = np.array([u for u in units if u in ever and rows[u] > MIN_PRE_PERIODS], dtype=object)
    rest = np.array([u for u in units if u not in set(first)], dtype=object)
    return np.concatenate([rng.permutation(first), rng.permutation(rest)]).astype(units.dtype)


def _campaign_size(df: pd.DataFrame, spec: TwinModelSpec) -> int:
    """Median number of units per intervention type in the history (0 if none treated)."""
    treated = df.loc[df[spec.intervention_column] != ""]
    if treated.empty:
        return 0
    per_type = treated.groupby(spec.intervention_column)[spec.unit_column].nunique()
    return int(np.median(per_type.to_numpy()))


def _shortage(df: pd.DataFrame, kept: pd.DataFrame, spec: TwinModelSpec, k: int) -> str | None:
    """Why the untreated rows cannot hold ``k`` placebos, or None when they can."""
    n_units = kept[spec.unit_column].nunique()
    if (df[spec.intervention_column] == "").all():
        return "the history has no treated rows: there is no campaign to mimic"
    if len(kept) < spec.min_rows:
        return (
            f"the history has {len(kept)} untreated rows; a placebo refit needs at least "
            f"min_rows={spec.min_rows}"
        )
    if n_units // (2 * k) < MIN_PLACEBO_UNITS:
        return (
            f"the history has {n_units} units with untreated rows; {k} placebo types of "
            f"at least {MIN_PLACEBO_UNITS} units each, with as many units left untreated, "
            f"need {2 * k * MIN_PLACEBO_UNITS}"
        )
    return None


def placebo_history(
    df: pd.DataFrame, spec: TwinModelSpec, *, placebos: int, rng: np.random.Generator
) -> PlaceboHistory | str:
    """Give ``placebos`` placebo types to random untreated units of a validated history.

    Parameters
    ----------
    df : DataFrame
        The history as :func:`~bayestwin.model.history.check_history` returns it
        (untreated rows' intervention ``""``).
    spec : TwinModelSpec
        The spec naming the columns.
    placebos : int
        Placebo types (K, >= 1).
    rng : numpy Generator
        Draws the units, the fake starts and the intensities.

    Returns
    -------
    PlaceboHistory or str
        The placebo history; or, when the untreated rows cannot hold ``placebos``
        placebo types, the reason (see the module docstring).
    """
    kept = _untreated(df, spec)
    reason = _shortage(df, kept, spec, placebos)
    if reason is not None:
        return reason
    units = np.sort(kept[spec.unit_column].unique())
    size = max(MIN_PLACEBO_UNITS, min(_campaign_size(df, spec), len(units) // (2 * placebos)))
    chosen = _placebo_units(df, kept, spec, units, rng)[: size * placebos]
    types = tuple(f"{PLACEBO_PREFIX}{k + 1}" for k in range(placebos))
    assigned = {t: list(chosen[k * size : (k + 1) * size]) for k, t in enumerate(types)}
    doses = df.loc[df[spec.intervention_column] != "", spec.intensity_column].to_numpy(float)
    unit_type = {u: t for t, us in assigned.items() for u in us}
    unit_dose = dict(zip(chosen, rng.choice(doses, size=len(chosen)), strict=True))
    out = kept.copy()
    out[spec.intensity_column] = out[spec.intensity_column].astype(float)
    if spec.period_column is not None:
        out = out.sort_values([spec.unit_column, spec.period_column], kind="stable")
    unit = out[spec.unit_column]
    counts = unit.value_counts()
    # each placebo unit's fake start: uniform over its untreated periods, leaving
    # MIN_PRE_PERIODS before it where it has them (all its rows without a period column)
    start_of = {
        u: 0
        if spec.period_column is None
        else int(rng.integers(min(MIN_PRE_PERIODS, counts[u] - 1), counts[u]))
        for u in chosen
    }
    start = unit.map(start_of)
    rank = out.groupby(spec.unit_column).cumcount()
    on = (start.notna() & (rank >= start.fillna(0))).to_numpy()
    out.loc[on, spec.intervention_column] = unit[on].map(unit_type).to_numpy()
    out.loc[on, spec.intensity_column] = unit[on].map(unit_dose).to_numpy(dtype=float)
    intensity = float(np.median(out.loc[on, spec.intensity_column].to_numpy(float)))
    return PlaceboHistory(out.reset_index(drop=True), types, assigned, intensity)


def rehearsal_sampler(spec: TwinModelSpec, seed: int) -> SamplerSettings:
    """The default sampler of a rehearsal refit: the fit's, lighter and seeded.

    Parameters
    ----------
    spec : TwinModelSpec
        The fitted spec.
    seed : int
        The rehearsal's seed.

    Returns
    -------
    SamplerSettings
        The spec's settings with at most :data:`REHEARSAL_MAX_DRAWS` draws and tuning
        steps per chain, ``random_seed=seed`` and no progress bar.
    """
    smp = spec.sampler
    return smp.model_copy(
        update={
            "draws": min(smp.draws, REHEARSAL_MAX_DRAWS),
            "tune": min(smp.tune, REHEARSAL_MAX_DRAWS),
            "random_seed": seed,
            "progressbar": False,
        }
    )


def _check_arguments(placebos: object, seed: object) -> None:
    if isinstance(placebos, bool) or not isinstance(placebos, int) or placebos < 1:
        raise InvalidInputError(
            f"placebos must be an integer >= 1, got {placebos!r}", field="placebos"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInputError(f"seed must be an integer >= 0, got {seed!r}", field="seed")


def _outcome(
    engine: SimulationEngine,
    model: FittedTwinModel,
    plan: PlaceboHistory,
    index: int,
    seed: int,
    twin_count: int | None,
) -> PlaceboOutcome:
    """Simulate one placebo type as a user would, and read off what it recommended."""
    ptype = plan.types[index]
    res = engine.simulate(
        model,
        ptype,
        {"intensity": plan.intensity},
        twin_count=twin_count,
        confidence_level=0.95,
        random_seed=seed + index,
        include_draws=True,
        dose_grid=(),
    )
    draws = np.asarray(res.ate_draws, dtype=float)
    lo80, hi80 = (float(q) for q in np.quantile(draws, [0.1, 0.9]))
    lift_lo, lift_hi = res.relative_lift_ci_lower, res.relative_lift_ci_upper
    lift_sd = None
    if lift_lo is not None and lift_hi is not None and math.isfinite(lift_hi - lift_lo):
        lift_sd = (lift_hi - lift_lo) / (2.0 * _Z95) or None
    assert res.recommendation is not None and res.simulated_ate is not None
    assert res.simulated_ci_lower is not None and res.simulated_ci_upper is not None
    return PlaceboOutcome(
        intervention_type=ptype,
        n_units=len(plan.units[ptype]),
        recommendation=res.recommendation,
        prob_above=float(res.prob_effect_above_threshold or 0.0),
        ate=res.simulated_ate,
        ci95=(res.simulated_ci_lower, res.simulated_ci_upper),
        ci80=(lo80, hi80),
        lift_sd=lift_sd,
    )


def rehearse(
    fitted: FittedTwinModel,
    history: pd.DataFrame,
    *,
    placebos: int = 8,
    seed: int = 0,
    sampler: SamplerSettings | None = None,
    engine: SimulationEngine | None = None,
    twin_count: int | None = None,
) -> Rehearsal:
    """Run placebo campaigns on a fitted model's history and simulate each one.

    Parameters
    ----------
    fitted : FittedTwinModel
        The model; its spec is refitted on the placebo history.
    history : DataFrame
        The history it was fitted on (other brands and twin types are left out).
    placebos : int
        Placebo intervention types (K, >= 1).
    seed : int
        Seed of the placebo draw, the default refit sampler and the simulations.
    sampler : SamplerSettings, optional
        NUTS settings of the refit (default :func:`rehearsal_sampler`).
    engine : SimulationEngine, optional
        Runs the simulations with its decision thresholds (default: the engine's
        defaults, those of the shipped configuration).
    twin_count : int, optional
        Twins per simulation (default: the engine's ``default_twin_count``).

    Returns
    -------
    Rehearsal
        The placebos' outcomes and rates; with a ``reason`` and no outcomes when the
        history has too few untreated rows or units for ``placebos`` placebo types.

    Raises
    ------
    InvalidInputError
        If ``placebos`` or ``seed`` is not a non-negative integer, or the history does
        not fit the spec (code ``"invalid_history"``).
    """
    _check_arguments(placebos, seed)
    start = time.perf_counter()
    engine = engine if engine is not None else SimulationEngine()
    spec = TwinModelSpec.model_validate(fitted.spec)
    rule = engine.settings.rule
    plan = placebo_history(
        check_history(history, spec), spec, placebos=placebos, rng=np.random.default_rng(seed)
    )
    outcomes: tuple[PlaceboOutcome, ...] = ()
    passed = None
    if not isinstance(plan, str):
        smp = sampler if sampler is not None else rehearsal_sampler(spec, seed)
        refit = TwinGenerator(spec.model_copy(update={"sampler": smp})).fit(
            plan.history, override_diagnostics=True, keep_trace=False
        )
        passed = refit.diagnostics.passed
        outcomes = tuple(
            _outcome(engine, refit, plan, k, seed, twin_count) for k in range(len(plan.types))
        )
    return Rehearsal(
        placebos=placebos,
        seed=seed,
        seconds=time.perf_counter() - start,
        min_effect_threshold=rule.min_effect_threshold,
        confidence_threshold=rule.confidence_threshold,
        outcomes=outcomes,
        reason=plan if isinstance(plan, str) else None,
        fit_passed=passed,
    )
