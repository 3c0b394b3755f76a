"""The learning loop in the calibration session: real experiments and rehearsals.

Two questions the loop must answer on worlds with a known truth:

**Do real experiments correct the twin?** :func:`with_experiments` copies each world
for every ``k`` of a series (``0, 1, 3``): the same seed, so the same history and
truth, now followed by ``k`` real experiments. :func:`draw_experiments` runs them on
the truth: experiment ``j`` tests intervention type ``(primary + j) mod n_types`` at
the run's intensity on ``2 * n_per_arm`` history units drawn without replacement and
split at random into two arms; its ATE is the difference of the arms' sampled means,
its SE the usual two-sample one, its population the units of both arms. The fit gets
them as :class:`~bayestwin.schemas.ExperimentEvidence`, and every type is simulated
and graded against the truth as in any world. A world copy with ``k`` experiments has
the kind ``"<kind>+k<k>"`` and the world id ``world_id + 100000 * k``.

**Does the rehearsal predict real false deploys?** With ``RunSettings.rehearsal`` the
fit is rehearsed on its own history (:func:`bayestwin.engine.rehearsal.rehearse`) and
the world records the placebos' counts. :func:`rehearsal_agreement` sets them beside the
real false deploys of the same worlds: deploy recommendations among the (world, type)
pairs whose true lift is below the threshold (as in the decision-quality table),
pooled, each with its Wilson interval; and the share of the worlds with a real false
deploy that the rehearsal flagged (placebo false-deploy rate above the warning rate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.calibration.worlds import RunSettings, WorldConfig
from bayestwin.core.calibration import wilson_interval

if TYPE_CHECKING:
    from bayestwin.engine.simulation import SimulationEngine
    from bayestwin.model.fitted import FittedTwinModel
    from bayestwin.schemas import ExperimentEvidence
    from bayestwin.synthetic import SyntheticTwinData

__all__ = [
    "EXPERIMENT_ID_STRIDE",
    "draw_experiments",
    "experiment_fields",
    "experiment_precision",
    "experiment_series",
    "rehearsal_agreement",
    "rehearsal_fields",
    "with_experiments",
]

#: World ids of a world's copy with ``k`` experiments: ``world_id + k * stride``.
EXPERIMENT_ID_STRIDE = 100_000


def with_experiments(configs: Sequence[WorldConfig], ks: Sequence[int]) -> list[WorldConfig]:
    """Every world once per ``k`` of ``ks``: the same history, ``k`` experiments after it.

    Parameters
    ----------
    configs : sequence of WorldConfig
        The worlds.
    ks : sequence of int
        Numbers of experiments (>= 0), for example ``(0, 1, 3)``.

    Returns
    -------
    list of WorldConfig
        World by world, one copy per ``k``; ``k = 0`` keeps the world as it is.

    Raises
    ------
    ValueError
        If a ``k`` is negative or repeated.
    """
    ks = [int(k) for k in ks]
    if any(k < 0 for k in ks) or len(set(ks)) != len(ks):
        raise ValueError(f"experiments must be distinct integers >= 0, got {ks}")
    out = []
    for c in configs:
        for k in ks:
            if k == 0:
                out.append(replace(c, experiments=0))
                continue
            out.append(
                replace(
                    c,
                    experiments=k,
                    kind=f"{c.kind}+k{k}",
                    world_id=c.world_id + EXPERIMENT_ID_STRIDE * k,
                )
            )
    return out


def draw_experiments(
    config: WorldConfig, run: RunSettings, sd: SyntheticTwinData, brand: str
) -> list[ExperimentEvidence]:
    """Run ``config.experiments`` randomised experiments on the world's truth.

    Parameters
    ----------
    config : WorldConfig
        The world (its ``experiments``, ``primary_type`` and seed).
    run : RunSettings
        ``intensity`` and ``experiment_n_per_arm``.
    sd : SyntheticTwinData
        The world's history and truth.
    brand : str
        The brand whose units the experiments run on.

    Returns
    -------
    list of ExperimentEvidence
        One per experiment, in order (module docstring).
    """
    from bayestwin.schemas import ExperimentEvidence

    truth = sd.truth
    types = truth.intervention_types
    units = sd.population(brand).reset_index(drop=True)
    n = min(run.experiment_n_per_arm, len(units) // 2)
    rng = np.random.default_rng([config.seed, 7_919])
    out = []
    for j in range(config.experiments):
        kind = types[(config.primary_type + j) % len(types)]
        idx = rng.choice(len(units), size=2 * n, replace=False)
        sample = units.iloc[idx].reset_index(drop=True)
        treated, control = sample.iloc[:n], sample.iloc[n:]
        y_t = truth.sample_outcomes(truth.expected_outcome(treated, kind, run.intensity), rng)
        y_c = truth.sample_outcomes(truth.expected_outcome(control, None), rng)
        se = float(np.sqrt(np.var(y_t, ddof=1) / n + np.var(y_c, ddof=1) / n))
        out.append(
            ExperimentEvidence(
                experiment_id=f"world-{config.world_id}-exp-{j + 1}",
                intervention_type=kind,
                intensity=float(run.intensity),
                ate=float(np.mean(y_t) - np.mean(y_c)),
                se=max(se, 1e-9),
                n_treatment=n,
                n_control=n,
                unit_ids=tuple(sample["unit_id"].astype(str)),
            )
        )
    return out


def rehearsal_fields(
    model: FittedTwinModel,
    history: pd.DataFrame,
    run: RunSettings,
    seed: int,
    engine: SimulationEngine | None = None,
) -> dict[str, Any]:
    """Rehearse a world's fit on its history; the placebo counts for the world record.

    Parameters
    ----------
    model : FittedTwinModel
        The world's fit.
    history : DataFrame
        The history it was fitted on.
    run : RunSettings
        ``placebos``, the sampler settings (the rehearsal's refit uses the world's own
        draws) and ``twin_count``.
    seed : int
        The world's seed.
    engine : SimulationEngine, optional
        The engine (decision thresholds) of the world's own simulations.

    Returns
    -------
    dict
        ``rehearsal_placebos``, ``rehearsal_false_deploys``, ``rehearsal_false_deploy_rate``,
        ``rehearsal_zero_covered`` (95%) and ``rehearsal_reason`` (why there are no
        numbers, or None).
    """
    from bayestwin.engine.rehearsal import rehearse

    sampler = run.sampler(seed + 1)
    reh = rehearse(
        model,
        history,
        placebos=run.placebos,
        seed=seed,
        sampler=sampler,
        engine=engine,
        twin_count=run.twin_count,
    )
    covered = sum(o.covers_zero_95 for o in reh.outcomes) if reh.outcomes else 0
    return {
        "rehearsal_placebos": reh.n,
        "rehearsal_false_deploys": reh.false_deploys,
        "rehearsal_false_deploy_rate": reh.false_deploy_rate,
        "rehearsal_zero_covered": covered,
        "rehearsal_reason": reh.reason,
    }


def _pooled(hits: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(hits, n) if n else (float("nan"), float("nan"))
    return {"count": hits, "n": n, "rate": hits / n if n else None, "wilson_95": [lo, hi]}


def rehearsal_agreement(
    worlds: pd.DataFrame, effects: pd.DataFrame, *, threshold: float = 0.05, warn_rate: float = 0.05
) -> dict[str, Any] | None:
    """The rehearsal's false-deploy rate beside the real one, over the rehearsed worlds.

    Parameters
    ----------
    worlds, effects : DataFrame
        A run's records (worlds with the ``rehearsal_*`` columns).
    threshold : float
        The smallest true lift worth deploying (the decision-quality table's).
    warn_rate : float
        The rehearsal flags a world whose placebo false-deploy rate is above this.

    Returns
    -------
    dict or None
        ``placebo`` and ``real`` (pooled counts, rates and Wilson intervals),
        ``intervals_overlap``, ``worlds_with_real_false_deploys``, ``flagged`` and
        ``flagged_share``; None when no world was rehearsed.
    """
    if "rehearsal_placebos" not in worlds:
        return None
    w = worlds[worlds["rehearsal_placebos"].fillna(0) > 0]
    if w.empty:
        return None
    placebo = _pooled(int(w["rehearsal_false_deploys"].sum()), int(w["rehearsal_placebos"].sum()))
    eff = effects[effects["world_id"].isin(w["world_id"])]
    null = eff[(eff["true_lift"] < threshold) & eff["twin_decision"].fillna("").ne("")]
    deploy = null["twin_decision"] == "deploy"
    real = _pooled(int(deploy.sum()), len(null))
    overlap = None
    if placebo["n"] and real["n"]:
        (a, b), (c, d) = placebo["wilson_95"], real["wilson_95"]
        overlap = bool(a <= d and c <= b)
    bad = set(null.loc[deploy, "world_id"])
    flagged = w[w["world_id"].isin(bad) & (w["rehearsal_false_deploy_rate"] > warn_rate)]
    return {
        "placebo": placebo,
        "real": real,
        "intervals_overlap": overlap,
        "worlds": len(w),
        "worlds_with_real_false_deploys": len(bad),
        "flagged": len(flagged),
        "flagged_share": len(flagged) / len(bad) if bad else None,
        "threshold": threshold,
        "warn_rate": warn_rate,
    }


def experiment_precision(kind: str, types: str | None, ses: str | None) -> float:
    """The summed precision ``sum 1 / se**2`` of the experiments that tested ``kind``.

    Parameters
    ----------
    kind : str
        An intervention type.
    types, ses : str or None
        A world record's ``experiment_types`` and ``experiment_ses``: comma-separated,
        one entry per experiment, in order.

    Returns
    -------
    float
        0.0 when no experiment tested the type.
    """
    names = str(types or "").split(",")
    values = [float(v) for v in str(ses or "").split(",") if v]
    return float(sum(1.0 / se**2 for t, se in zip(names, values, strict=False) if t == kind))


def experiment_fields(kind: str, world: Mapping[str, Any]) -> dict[str, Any]:
    """A type's effect-record fields from its world's experiments.

    Parameters
    ----------
    kind : str
        An intervention type.
    world : mapping
        The world record, with ``experiment_types`` and ``experiment_ses``.

    Returns
    -------
    dict
        ``experimented`` (an experiment tested the type) and ``experiment_precision``
        (:func:`experiment_precision`).
    """
    types = world.get("experiment_types")
    return {
        "experimented": kind in str(types or "").split(","),
        "experiment_precision": experiment_precision(kind, types, world.get("experiment_ses")),
    }


def experiment_series(
    effects: pd.DataFrame, worlds: pd.DataFrame | None = None
) -> dict[str, Any] | None:
    """Coverage, error and interval width of each world kind as its experiments grow.

    Parameters
    ----------
    effects : DataFrame
        A run's effect records, with kinds ``"<kind>"`` and ``"<kind>+k<k>"``.
    worlds : DataFrame, optional
        The world records: their ``experiment_types`` mark the tested types where the
        effect records lack an ``experimented`` column.

    Returns
    -------
    dict or None
        ``{kind: {k: {"n", "coverage_0.95", "coverage_0.8", "median_rel_error",
        "median_sd_ratio", "median_width_ratio", "median_expected_sd_ratio",
        "experimented"}}}``: every intervention type of the worlds; ``median_sd_ratio``
        is the posterior sd over the same (world, type)'s sd without experiments,
        ``median_width_ratio`` the same for the 95% interval's width (robust to the
        heavy tails a history-bias term gives the posterior; None for records without
        it); ``median_expected_sd_ratio``
        the ratio that combining the k = 0 posterior with the type's experiments as
        unbiased evidence would give, ``(1 + sd0**2 * sum 1 / se**2) ** -0.5`` (1 for an
        untested type; None without the records' ``experiment_precision``);
        ``experimented`` the same figures over the types an experiment tested. None
        when no world had experiments.
    """
    if "kind" not in effects or effects.empty:
        return None
    kinds = effects["kind"].astype(str)
    base = kinds.str.partition("+k")[0]
    k = pd.to_numeric(kinds.str.partition("+k")[2].replace("", "0"), errors="coerce")
    if not (k > 0).any():
        return None
    if "experimented" not in effects and worlds is not None and "experiment_types" in worlds:
        tested = worlds.set_index("world_id")["experiment_types"].fillna("").astype(str)
        types = effects["world_id"].map(tested).fillna("").str.split(",")
        pairs = zip(effects["intervention_type"], types, strict=True)
        effects = effects.assign(experimented=[t in ts for t, ts in pairs])
    frame = effects.assign(
        base_kind=base, k=k, base_world=effects["world_id"] % EXPERIMENT_ID_STRIDE
    )
    out: dict[str, Any] = {}
    for kind in sorted(frame.loc[frame["k"] > 0, "base_kind"].unique()):
        series: dict[str, Any] = {}
        for kk, grp in frame[frame["base_kind"] == kind].groupby("k"):
            base_sd = _at_k0(frame, grp, "twin_sd")
            ratio = grp["twin_sd"].to_numpy(float) / base_sd
            width = (
                grp["twin_width_0.95"].to_numpy(float) / _at_k0(frame, grp, "twin_width_0.95")
                if "twin_width_0.95" in grp
                else np.full(len(grp), np.nan)
            )
            tested = grp["experimented"] if "experimented" in grp else grp["k"] < 0
            expected = (
                (1.0 + base_sd**2 * grp["experiment_precision"].to_numpy(float)) ** -0.5
                if "experiment_precision" in grp
                else np.full(len(grp), np.nan)
            )
            entry = _series_figures(grp, ratio, width, expected)
            mask = tested.to_numpy(bool)
            entry["experimented"] = (
                _series_figures(grp[mask], ratio[mask], width[mask], expected[mask])
                if mask.any()
                else None
            )
            series[str(int(kk))] = entry
        out[kind] = series
    return out


def _at_k0(frame: pd.DataFrame, grp: pd.DataFrame, column: str) -> NDArray[np.float64]:
    """``column`` of the same (world, type) without experiments, row by row of ``grp``."""
    k0 = frame[frame["k"] == 0].set_index(["base_world", "intervention_type"])[column]
    keys = pd.MultiIndex.from_arrays([grp["base_world"], grp["intervention_type"]])
    return k0.reindex(keys).to_numpy(float)


def _median(values: NDArray[np.float64]) -> float | None:
    return float(np.nanmedian(values)) if np.isfinite(values).any() else None


def _series_figures(
    g: pd.DataFrame,
    sd_ratio: NDArray[np.float64],
    width_ratio: NDArray[np.float64],
    expected: NDArray[np.float64],
) -> dict[str, Any]:
    """Coverage, error and the medians of the ratios to k = 0 of one group of pairs."""
    from bayestwin.calibration.stats import coverage_summary

    return {
        "n": len(g),
        "coverage_0.95": coverage_summary(g["twin_hit_0.95"]),
        "coverage_0.8": coverage_summary(g["twin_hit_0.8"]),
        "median_rel_error": float(np.nanmedian(g["twin_rel_error"])) if len(g) else None,
        "median_sd_ratio": _median(sd_ratio),
        "median_width_ratio": _median(width_ratio),
        "median_expected_sd_ratio": _median(expected),
    }
