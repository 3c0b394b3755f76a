"""The records of one world: one per intervention type, one per type and segment.

Every record compares the twin model's estimate (and the baselines') with the true ATE
of the same twins; the rules are in :mod:`bayestwin.calibration`. Records are plain
dicts, so worlds can run in other processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import special

from bayestwin.calibration.baselines import BaselineEstimate
from bayestwin.calibration.stats import interval_hits, normal_hits, sbc_rank
from bayestwin.calibration.worlds import RunSettings, WorldConfig
from bayestwin.core.decision import decide
from bayestwin.core.grading import error_floor, prediction_error
from bayestwin.core.intervals import INTERVAL_LEVELS
from bayestwin.core.power import directional_power, total_outcome_variance
from bayestwin.schemas import SegmentEffect, SimulationResult
from bayestwin.synthetic import GroundTruth, TrueEffect

__all__ = ["WorldSample", "effect_record", "segment_records", "unit_treatment"]

#: Baseline estimates of a world: ``{method: {type: {group: estimate}}}``.
Baselines = dict[str, dict[str, dict[str, BaselineEstimate]]]


@dataclass(frozen=True)
class WorldSample:
    """What the records of one world are computed from.

    Attributes
    ----------
    config, run : WorldConfig, RunSettings
        The world and the run's settings.
    truth : GroundTruth
        The world's data-generating process.
    twins : DataFrame
        The twins every simulation drew (the same for every type).
    segments : list of str
        Segments with twins; ``segment_masks`` selects their twins.
    treated_units : DataFrame
        Per unit of the history: ``intervention_type``, ``intensity``, ``segment``.
    segment_sizes : Series
        Units per segment in the brand's population of ``population_size`` units.
    baselines : dict
        ``{method: {type: {group: BaselineEstimate}}}``.
    var_c, rho2 : float
        True total outcome variance of the twins untreated, and the prognostic rho**2.
    natural_dispersion : float or None
        The truth's dispersion on the natural outcome scale.
    min_effect_threshold, confidence_threshold, power_alpha : float
        The decision thresholds and the level of the real test.
    diagnostics_passed : bool
        Whether the fit passed the diagnostics gate.
    """

    config: WorldConfig
    run: RunSettings
    truth: GroundTruth
    twins: pd.DataFrame
    segments: list[str]
    segment_masks: dict[str, NDArray[np.bool_]]
    treated_units: pd.DataFrame
    segment_sizes: pd.Series
    population_size: int
    baselines: Baselines
    var_c: float
    rho2: float
    natural_dispersion: float | None
    min_effect_threshold: float
    confidence_threshold: float
    power_alpha: float
    diagnostics_passed: bool


def unit_treatment(history: pd.DataFrame) -> pd.DataFrame:
    """Per unit: its intervention type, intensity and segment when it is treated.

    A unit's first treated row (its first row if it is never treated), so that a unit
    that starts mid-history, or goes on and off, counts as treated with its type.
    """
    cols = ["intervention_type", "intensity", "segment"]
    on = history["intensity"].to_numpy(dtype=float) > 0
    ordered = history.assign(_off=~on).sort_values(["_off", "period"], kind="stable")
    return ordered.groupby("unit_id", sort=True)[cols].first()


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


def _decision_from_normal(
    est: BaselineEstimate, threshold: float, confidence: float
) -> tuple[float, str]:
    if not est.estimable:
        return float("nan"), ""
    floor = threshold * abs(est.control_mean)
    p = float(special.ndtr((est.ate - floor) / est.se)) if est.se > 0 else float(est.ate > floor)
    decision = decide(p, min_effect_threshold=threshold, confidence_threshold=confidence)
    return p, decision.recommendation.value


def _true_power(
    n: int | None, true_ate: float, var_c: float, var_t: float, alpha: float, shrink: float = 1.0
) -> float:
    if n is None:
        return float("nan")
    return float(directional_power(true_ate, var_c * shrink, var_t * shrink, n, alpha=alpha))


def _base_record(ws: WorldSample, kind: str, true_eff: TrueEffect, floor: float) -> dict[str, Any]:
    """The world's facts and the truth of one (world, type) pair."""
    config, j = ws.config, ws.truth.intervention_types.index(kind)
    kind_units = ws.treated_units["intervention_type"] == kind
    at_intensity = np.isclose(ws.treated_units["intensity"], ws.run.intensity)
    return {
        "world_id": config.world_id,
        "kind": config.kind,
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
        "treated_units_at_intensity": int((kind_units & at_intensity).sum()),
        "true_ate": true_eff.ate,
        "true_control_mean": true_eff.control_mean,
        "true_lift": true_eff.relative,
        "error_floor": floor,
        "diagnostics_passed": ws.diagnostics_passed,
    }


def _twin_fields(ws: WorldSample, sim: SimulationResult, true_ate: float) -> dict[str, Any]:
    """The twin model's intervals, spread, ESS, SBC rank and decisions."""
    draws = np.asarray(sim.ate_draws, dtype=float)
    threshold_decision = decide(
        float(sim.prob_effect_above_threshold or 0.0),
        min_effect_threshold=ws.min_effect_threshold,
        confidence_threshold=ws.confidence_threshold,
    )
    return {
        **{f"twin_hit_{lv:g}": h for lv, h in interval_hits(draws, true_ate).items()},
        "twin_sd": float(draws.std(ddof=1)),
        "twin_width_0.95": float(np.subtract(*np.quantile(draws, [0.975, 0.025]))),
        "twin_ess": _ess(draws, ws.run.chains),
        "twin_sbc_rank": sbc_rank(draws, true_ate),
        "twin_prob_above": sim.prob_effect_above_threshold,
        "twin_decision": sim.recommendation.value if sim.recommendation else "",
        "twin_threshold_decision": threshold_decision.recommendation.value,
    }


def _sample_size_fields(
    ws: WorldSample, sim: SimulationResult, kind: str, true_ate: float
) -> dict[str, Any]:
    """The recommended sample sizes and their power against the true effect."""
    mu_t = ws.truth.expected_outcome(ws.twins, kind, ws.run.intensity)
    var_t = total_outcome_variance(ws.truth.family, mu_t, dispersion=ws.natural_dispersion)
    ss = sim.sample_size
    sizes = {
        "classic": ss.classic_n_per_arm if ss else None,
        "assurance": ss.assurance_n_per_arm if ss else None,
        "adjusted": ss.covariate_adjusted_n_per_arm if ss else None,
    }
    out: dict[str, Any] = {}
    for name, n in sizes.items():
        out[f"{name}_n_per_arm"] = n
        out[f"power_{name}"] = _true_power(
            n,
            true_ate,
            ws.var_c,
            var_t,
            ws.power_alpha,
            shrink=1.0 - ws.rho2 if name == "adjusted" else 1.0,
        )
    return out


def _baseline_fields(
    ws: WorldSample, kind: str, true_ate: float, control_mean: float, floor: float
) -> dict[str, Any]:
    """Each baseline's estimate, errors, interval hits and threshold decision."""
    out: dict[str, Any] = {}
    for name, by_type in ws.baselines.items():
        est = by_type[kind]["all"]
        out.update(_method_record(name, est.ate, true_ate, control_mean, floor))
        out[f"{name}_se"] = est.se
        hits = normal_hits(est.ate, est.se, true_ate) if est.estimable else {}
        for lv in INTERVAL_LEVELS:
            out[f"{name}_hit_{lv:g}"] = hits.get(lv, float("nan"))
        p, dec = _decision_from_normal(est, ws.min_effect_threshold, ws.confidence_threshold)
        out[f"{name}_prob_above"] = p
        out[f"{name}_threshold_decision"] = dec
    return out


def effect_record(ws: WorldSample, kind: str, sim: SimulationResult) -> dict[str, Any]:
    """The record of one (world, intervention type) pair over all the twins.

    Parameters
    ----------
    ws : WorldSample
        The world's truth, twins and baselines.
    kind : str
        The intervention type.
    sim : SimulationResult
        The engine's simulation of ``kind`` on ``ws.twins``.

    Returns
    -------
    dict
        The truth, the twin model's estimate, intervals, decisions and sample sizes,
        and every baseline's estimate (columns ``<method>_ate``, ``<method>_hit_<level>``...).
    """
    true_eff = ws.truth.ate(ws.twins, kind, ws.run.intensity)
    floor = error_floor(
        control_mean=true_eff.control_mean,
        min_effect_threshold=ws.min_effect_threshold,
        actual_se=None,
    )
    rec = _base_record(ws, kind, true_eff, floor)
    twin_est = float(sim.simulated_ate)  # type: ignore[arg-type]
    rec.update(_method_record("twin", twin_est, true_eff.ate, true_eff.control_mean, floor))
    rec.update(_twin_fields(ws, sim, true_eff.ate))
    rec.update(_sample_size_fields(ws, sim, kind, true_eff.ate))
    rec.update(_baseline_fields(ws, kind, true_eff.ate, true_eff.control_mean, floor))
    return rec


def _segment_record(
    ws: WorldSample, kind: str, segment: str, sim_segment: SegmentEffect | None
) -> dict[str, Any]:
    config = ws.config
    mask = ws.segment_masks[segment]
    seg_true = ws.truth.ate(ws.twins[mask], kind, ws.run.intensity)
    seg_floor = error_floor(
        control_mean=seg_true.control_mean,
        min_effect_threshold=ws.min_effect_threshold,
        actual_se=None,
    )
    in_seg = ws.treated_units["segment"] == segment
    kind_units = ws.treated_units["intervention_type"] == kind
    rec: dict[str, Any] = {
        "world_id": config.world_id,
        "kind": config.kind,
        "family": config.family,
        "confounded": config.confounded,
        "assignment": config.assignment,
        "intervention_type": kind,
        "rare": ws.truth.intervention_types.index(kind) == config.rare_type,
        "segment": segment,
        "segment_units": int(ws.segment_sizes.get(segment, 0)),
        "segment_share": float(ws.segment_sizes.get(segment, 0) / ws.population_size),
        "segment_treated_units": int((in_seg & kind_units).sum()),
        "true_ate": seg_true.ate,
        "true_control_mean": seg_true.control_mean,
        "error_floor": seg_floor,
    }
    if sim_segment is not None:
        rec.update(
            _method_record("twin", sim_segment.ate, seg_true.ate, seg_true.control_mean, seg_floor)
        )
        rec["twin_hit_0.95"] = bool(sim_segment.ci_lower <= seg_true.ate <= sim_segment.ci_upper)
    for name, by_type in ws.baselines.items():
        est = by_type[kind][f"seg:{segment}"]
        rec.update(_method_record(name, est.ate, seg_true.ate, seg_true.control_mean, seg_floor))
        rec[f"{name}_hit_0.95"] = (
            normal_hits(est.ate, est.se, seg_true.ate, (0.95,))[0.95]
            if est.estimable
            else float("nan")
        )
    return rec


def segment_records(ws: WorldSample, kind: str, sim: SimulationResult) -> list[dict[str, Any]]:
    """One record per segment with twins: the truth, the twin model's and the baselines'.

    Parameters
    ----------
    ws : WorldSample
        The world's truth, twins and baselines.
    kind : str
        The intervention type.
    sim : SimulationResult
        The engine's simulation of ``kind`` (its ``segment_effects``).

    Returns
    -------
    list of dict
        In the order of ``ws.segments``.
    """
    by_segment: Mapping[str, SegmentEffect] = {s.segment: s for s in sim.segment_effects}
    return [_segment_record(ws, kind, s, by_segment.get(s)) for s in ws.segments]
