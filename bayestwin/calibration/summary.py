"""The calibration summary: a :class:`~bayestwin.calibration.run.CalibrationRun` reduced to a dict.

:func:`summarize` computes, JSON-ready, the acceptance numbers, every method's coverage,
errors and decision quality by assignment, the breakdowns (family, effect design, true
lift, type frequency, segment size), sample-size adequacy, the SBC test and the sampler
diagnostics; the rules are in :mod:`bayestwin.calibration`.

**By world kind** (:mod:`bayestwin.calibration.kinds`), each kind apart: 80% and 95%
coverage with Wilson intervals, the median relative error, the *sd ratio* and the share
of fits that pass the diagnostics gate, with coverage on the gate-passing fits apart.
The sd ratio is ``sqrt(mean(sd**2)) / sqrt(mean(error**2))``, the posterior sd of the
ATE over the root mean square of its actual error (estimate minus truth), both in lift
points (divided by the true control mean) so that worlds of different scales pool: 1
for honest intervals, below 1 for overconfident ones. ``rms_z``, the root mean square
of ``error / sd``, is its per-world cousin (1 when honest). The *median error the
intervals imply* is the median over records of ``0.674 sd / max(|true ATE|, error
floor)``: the median relative error of an estimate whose error is normal with the
posterior's own sd (``0.674`` is the normal's median absolute value). Beside the
measured median error it tells a world's information apart from a model's bias: an
honest model on a history that holds little information has both large, and a
biased one has a measured error above the implied. When the records have several
kinds, every other section reads the ``in_model`` worlds only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, cast

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.calibration.loop import experiment_series, rehearsal_agreement
from bayestwin.calibration.run import CalibrationRun
from bayestwin.calibration.stats import SBC_DRAWS, coverage_summary, rank_uniformity
from bayestwin.calibration.worlds import ASSIGNMENTS, Assignment
from bayestwin.core.grading import prediction_error
from bayestwin.core.intervals import INTERVAL_LEVELS
from bayestwin.vocabulary import Recommendation

__all__ = [
    "COVERAGE_TARGETS",
    "MEDIAN_ERROR_TARGET",
    "METHODS",
    "SPEC_ERROR_TARGET",
    "by_kind",
    "by_type_count",
    "methods_in",
    "summarize",
    "with_assignment",
]

#: Methods compared, the twin model first.
METHODS: tuple[str, ...] = (
    "twin", "no_pooling", "complete_pooling", "naive", "linear_dml", "twfe",
)  # fmt: skip
#: Acceptance ranges of the coverage over random-assignment worlds.
COVERAGE_TARGETS: dict[float, tuple[float, float]] = {0.8: (0.72, 0.88), 0.95: (0.91, 0.99)}
#: Acceptance bound of the median relative error (the spec's success metric is 0.20).
MEDIAN_ERROR_TARGET = 0.10
SPEC_ERROR_TARGET = 0.20


def methods_in(effects: pd.DataFrame) -> list[str]:
    """The methods (of :data:`METHODS`) that have estimates in ``effects``."""
    return [m for m in METHODS if f"{m}_ate" in effects.columns]


def _quantiles(values: pd.Series | NDArray) -> dict[str, float | None]:
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"n": 0, "median": None, "q25": None, "q75": None, "q90": None, "mean": None}
    q = np.quantile(arr, [0.25, 0.5, 0.75, 0.9])
    return {
        "n": int(arr.size),
        "median": float(q[1]),
        "q25": float(q[0]),
        "q75": float(q[2]),
        "q90": float(q[3]),
        "mean": float(arr.mean()),
    }


def _method_summary(effects: pd.DataFrame, method: str) -> dict[str, Any]:
    est = effects[f"{method}_ate"].to_numpy(dtype=float)
    n = len(effects)
    rel = effects[f"{method}_rel_error"]
    out: dict[str, Any] = {
        "n": n,
        "estimable": int(np.isfinite(est).sum()),
        "coverage": {
            f"{lv:g}": coverage_summary(effects[f"{method}_hit_{lv:g}"].to_numpy(dtype=float))
            for lv in INTERVAL_LEVELS
            if f"{method}_hit_{lv:g}" in effects
        },
        "rel_error": _quantiles(rel),
        "abs_error_lift_points": _quantiles(effects[f"{method}_abs_error"]),
        "share_rel_error_below_0.2": (
            float(np.mean(rel.dropna() < SPEC_ERROR_TARGET)) if rel.notna().any() else None
        ),
    }
    dec_col = "twin_threshold_decision" if method == "twin" else f"{method}_threshold_decision"
    if dec_col in effects:
        out["decisions"] = _decision_quality(effects, dec_col)
    return out


def _decision_quality(effects: pd.DataFrame, column: str, threshold: float = 0.05) -> dict:
    dec = effects[column].fillna("").astype(str)
    made = dec != ""
    above = effects["true_lift"] >= threshold
    below = ~above

    def share(mask: pd.Series, value: str) -> dict[str, Any]:
        m = made & mask
        n = int(m.sum())
        k = int((dec[m] == value).sum())
        return {"n": n, "count": k, "share": (k / n) if n else None}

    return {
        "false_deploy": share(below, Recommendation.DEPLOY.value),
        "false_skip": share(above, Recommendation.SKIP.value),
        "true_deploy": share(above, Recommendation.DEPLOY.value),
        "true_skip": share(below, Recommendation.SKIP.value),
        "refine": share(made | ~made, Recommendation.REFINE.value),
        "no_decision": int((~made).sum()),
    }


def _sample_size_summary(effects: pd.DataFrame) -> dict[str, Any]:
    dep = effects[effects["twin_decision"] == Recommendation.DEPLOY.value]
    out: dict[str, Any] = {"n_deploy": len(dep)}
    for kind in ("classic", "assurance", "adjusted"):
        p = dep[f"power_{kind}"].to_numpy(dtype=float)
        p = p[np.isfinite(p)]
        out[kind] = {
            "n": int(p.size),
            "median_power": float(np.median(p)) if p.size else None,
            "share_power_ge_0.7": float(np.mean(p >= 0.7)) if p.size else None,
            "share_power_ge_0.8": float(np.mean(p >= 0.8)) if p.size else None,
        }
    return out


def with_assignment(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the ``assignment`` column to records that only have ``confounded``."""
    if "assignment" in frame or frame.empty:
        return frame
    out = frame.copy()
    out["assignment"] = np.where(out["confounded"], "confounded_observed", "random")
    return out


def _lift_bins(effects: pd.DataFrame) -> pd.Series:
    return pd.cut(
        effects["true_lift"].abs(),
        bins=[-np.inf, 0.02, 0.05, 0.10, 0.20, np.inf],
        labels=["a: < 2%", "b: 2-5%", "c: 5-10%", "d: 10-20%", "e: >= 20%"],
        right=False,
    ).astype(str)


def _segment_bins(segments: pd.DataFrame) -> pd.Series:
    return pd.cut(
        segments["segment_treated_units"],
        bins=[-1, 4, 19, 49, np.inf],
        labels=["a: 0-4", "b: 5-19", "c: 20-49", "d: 50+"],
    ).astype(str)


def _breakdown(
    frame: pd.DataFrame, by: pd.Series, methods: Sequence[str], level: float = 0.95
) -> list[dict[str, Any]]:
    rows = []
    for key, grp in frame.groupby(by.to_numpy(), sort=True):
        row: dict[str, Any] = {"group": str(key), "n": len(grp)}
        for m in methods:
            if f"{m}_ate" not in grp:
                continue
            hit = f"{m}_hit_{level:g}"
            row[m] = {
                "estimable": float(np.isfinite(grp[f"{m}_ate"].to_numpy(dtype=float)).mean()),
                "median_rel_error": _quantiles(grp[f"{m}_rel_error"])["median"],
                f"coverage_{level:g}": (
                    coverage_summary(grp[hit].to_numpy(dtype=float))["coverage"]
                    if hit in grp
                    else None
                ),
            }
        rows.append(row)
    return rows


def _meta(run: CalibrationRun, worlds: pd.DataFrame) -> dict[str, Any]:
    """Counts, settings and timing of the run."""
    failed = worlds[worlds["error"].notna()] if "error" in worlds else worlds.iloc[:0]
    return {
        "n_worlds": len(worlds),
        "n_failed": len(failed),
        "failures": failed[["world_id", "error"]].to_dict("records") if len(failed) else [],
        "n_by_assignment": {a: int((worlds["assignment"] == a).sum()) for a in ASSIGNMENTS},
        "families": worlds["family"].value_counts().sort_index().to_dict(),
        "effect_designs": worlds["effect_design"].value_counts().sort_index().to_dict(),
        "settings": asdict(run.settings),
        "workers": run.workers,
        "wall_seconds": run.wall_seconds,
        "median_world_seconds": float(worlds["seconds"].median()) if len(worlds) else None,
        **run.meta,
    }


def _acceptance(random: pd.DataFrame) -> dict[str, Any]:
    """The twin model over random-assignment worlds, one interval per world."""
    twin = _method_summary(random, "twin")
    acc: dict[str, Any] = {"n_worlds": twin["n"]}
    for lv, (lo, hi) in COVERAGE_TARGETS.items():
        cov = twin["coverage"][f"{lv:g}"]["coverage"]
        acc[f"coverage_{lv:g}"] = {
            "value": cov,
            "target": [lo, hi],
            "met": cov is not None and lo <= cov <= hi,
        }
    med = twin["rel_error"]["median"]
    acc["median_rel_error"] = {
        "value": med,
        "target": MEDIAN_ERROR_TARGET,
        "spec_target": SPEC_ERROR_TARGET,
        "met": med is not None and med < MEDIAN_ERROR_TARGET,
        "met_spec": med is not None and med < SPEC_ERROR_TARGET,
    }
    acc["n_worlds_ok"] = bool(twin["n"] >= 100)
    return acc


def _breakdowns(
    groups: Mapping[Assignment, pd.DataFrame],
    random: pd.DataFrame,
    unconf_all: pd.DataFrame,
    segments: pd.DataFrame,
    methods: list[str],
) -> dict[str, Any]:
    """By family, effect design, true lift, type frequency and segment size."""
    out: dict[str, Any] = {
        "by_family": {
            g: _breakdown(frame, frame["family"], ["twin"], 0.95) for g, frame in groups.items()
        },
        "by_effect_design": _breakdown(random, random["effect_design"], ["twin"], 0.95),
        "by_true_lift": _breakdown(random, _lift_bins(random), methods, 0.95),
    }
    freq = np.where(unconf_all["rare"], "rare type", "common type")
    out["by_type_frequency"] = _breakdown(unconf_all, pd.Series(freq), methods, 0.95)
    if not segments.empty:
        seg_u = segments[with_assignment(segments)["assignment"] == "random"]
        out["by_segment_size"] = _breakdown(seg_u, _segment_bins(seg_u), methods, 0.95)
    return out


def _sbc(unconf_all: pd.DataFrame) -> dict[str, Any]:
    """The rank-uniformity test over the random-assignment prior worlds."""
    sbc_frame = unconf_all[unconf_all["effect_design"] == "prior"]
    return {
        **rank_uniformity(sbc_frame["twin_sbc_rank"].to_numpy(dtype=int)),
        "n_worlds": int(sbc_frame["world_id"].nunique()),
        "n_draws": SBC_DRAWS,
        "ranks": sbc_frame["twin_sbc_rank"].astype(int).tolist(),
    }


def _diagnostics(eff: pd.DataFrame, worlds: pd.DataFrame, random: pd.DataFrame) -> dict[str, Any]:
    """Sampler diagnostics, ESS of the ATE draws, coverage among fits that passed."""
    ok = worlds[worlds["error"].isna()] if "error" in worlds else worlds
    passed = random[random["diagnostics_passed"].astype(bool)]
    ess = eff["twin_ess"].to_numpy(dtype=float) if "twin_ess" in eff else np.array([])
    ess = ess[np.isfinite(ess)]
    return {
        "ate_ess_median": float(np.median(ess)) if ess.size else None,
        "ate_ess_min": float(np.min(ess)) if ess.size else None,
        "ate_ess_share_ge_400": float(np.mean(ess >= 400)) if ess.size else None,
        "share_passed": float(ok["diagnostics_passed"].mean()) if len(ok) else None,
        "median_min_ess_bulk": float(ok["min_ess_bulk"].median()) if len(ok) else None,
        "max_r_hat": float(ok["max_r_hat"].max()) if len(ok) else None,
        "total_divergences": int(ok["divergences"].sum()) if len(ok) else 0,
        "random_passed_coverage": {
            f"{lv:g}": coverage_summary(passed[f"twin_hit_{lv:g}"].to_numpy(dtype=float))
            for lv in INTERVAL_LEVELS
        },
    }


def _spread_fields(frame: pd.DataFrame) -> dict[str, float | None]:
    """The sd ratio and the root mean square z of the twin model's ATE (module docstring)."""
    need = ("twin_sd", "twin_ate", "true_ate", "true_control_mean")
    if frame.empty or any(c not in frame for c in need):
        return {"sd_ratio": None, "rms_z": None}
    scale = frame["true_control_mean"].abs().to_numpy(dtype=float)
    sd = frame["twin_sd"].to_numpy(dtype=float) / scale
    err = (frame["twin_ate"] - frame["true_ate"]).to_numpy(dtype=float) / scale
    ok = np.isfinite(sd) & np.isfinite(err) & (sd > 0)
    if not ok.any():
        return {"sd_ratio": None, "rms_z": None}
    rms_err = float(np.sqrt(np.mean(err[ok] ** 2)))
    return {
        "sd_ratio": float(np.sqrt(np.mean(sd[ok] ** 2))) / rms_err if rms_err > 0 else None,
        "rms_z": float(np.sqrt(np.mean((err[ok] / sd[ok]) ** 2))),
    }


#: The median of ``|Z|`` for a standard normal ``Z``: ``Phi^-1(0.75)``.
_NORMAL_MEDIAN_ABS = 0.6744897501960817


def _implied_error(frame: pd.DataFrame) -> float | None:
    """The median relative error the posterior sds imply (module docstring)."""
    need = ("twin_sd", "true_ate", "error_floor")
    if frame.empty or any(c not in frame for c in need):
        return None
    cols = frame[list(need)].to_numpy(dtype=float)
    implied = [
        prediction_error(truth + _NORMAL_MEDIAN_ABS * sd, truth, floor)
        for sd, truth, floor in cols[np.isfinite(cols).all(axis=1)]
        if max(abs(truth), floor) > 0
    ]
    return float(np.median(implied)) if implied else None


def _kind_figures(frame: pd.DataFrame) -> dict[str, Any]:
    """The twin model's figures over one set of (world, type) records."""
    if frame.empty:
        frame = pd.DataFrame(
            columns=["diagnostics_passed", "twin_hit_0.8", "twin_hit_0.95", "twin_rel_error"]
        )
    passed = frame["diagnostics_passed"].astype(bool)
    gate = coverage_summary(passed.to_numpy(dtype=float))
    levels = ("0.8", "0.95")
    return {
        "n": len(frame),
        "coverage": {
            lv: coverage_summary(frame[f"twin_hit_{lv}"].to_numpy(float)) for lv in levels
        },
        "median_rel_error": _quantiles(frame["twin_rel_error"])["median"],
        "implied_rel_error": _implied_error(frame),
        **_spread_fields(frame),
        "gate_passed": gate,
        "coverage_gate_passed": {
            lv: coverage_summary(frame.loc[passed, f"twin_hit_{lv}"].to_numpy(float))
            for lv in levels
        },
    }


def by_kind(effects: pd.DataFrame, worlds: pd.DataFrame) -> dict[str, Any]:
    """The twin model (and baselines) per world kind, each kind apart.

    Parameters
    ----------
    effects, worlds : DataFrame
        A run's records, with a ``kind`` column.

    Returns
    -------
    dict
        ``{kind: {"n_worlds", "n_failed", "families", "median_min_ess_bulk",
        "primary", "all_types", "baselines"}}`` in the order of
        :data:`~bayestwin.calibration.kinds.WORLD_KINDS`; ``primary`` and ``all_types``
        are :func:`_kind_figures` of one target per world and of every type.
    """
    from bayestwin.calibration.kinds import WORLD_KINDS

    seen = [k for k in WORLD_KINDS if (worlds["kind"] == k).any()]
    seen += sorted(set(worlds["kind"].astype(str)) - set(seen))
    methods = [m for m in methods_in(effects) if m != "twin"]
    out: dict[str, Any] = {}
    for kind in seen:
        w = worlds[worlds["kind"] == kind]
        failed = w["error"].notna() if "error" in w else pd.Series(False, index=w.index)
        eff = effects[effects["kind"] == kind] if "kind" in effects else effects.iloc[:0]
        primary = eff[eff["primary"].astype(bool)] if len(eff) else eff
        ok = w[~failed]
        out[kind] = {
            "n_worlds": int(len(w)),
            "n_failed": int(failed.sum()),
            "families": ok["family"].value_counts().sort_index().to_dict(),
            "median_min_ess_bulk": float(ok["min_ess_bulk"].median()) if len(ok) else None,
            "primary": _kind_figures(primary),
            "all_types": _kind_figures(eff),
            "baselines": {
                m: {
                    "estimable": int(np.isfinite(primary[f"{m}_ate"].to_numpy(float)).sum()),
                    "coverage_0.95": coverage_summary(primary[f"{m}_hit_0.95"].to_numpy(float)),
                    "median_rel_error": _quantiles(primary[f"{m}_rel_error"])["median"],
                }
                for m in methods
            },
        }
    return out


def by_type_count(effects: pd.DataFrame, worlds: pd.DataFrame) -> list[dict[str, Any]]:
    """The twin model by the number of intervention types of a world, over every kind.

    Parameters
    ----------
    effects, worlds : DataFrame
        A run's records; worlds with ``n_intervention_types``.

    Returns
    -------
    list of dict
        Per type count: ``types``, ``n_worlds``, ``divergent_fits`` (worlds whose kept
        fit diverged), ``primary`` (:func:`_kind_figures` of one target per world).
    """
    if "n_intervention_types" not in worlds or effects.empty:
        return []
    ok = worlds[worlds["error"].isna()] if "error" in worlds else worlds
    types = ok.set_index("world_id")["n_intervention_types"]
    eff = effects[effects["world_id"].isin(types.index)]
    eff = eff.assign(_types=types.loc[eff["world_id"]].to_numpy())
    out = []
    for n, w in ok.groupby("n_intervention_types", sort=True):
        primary = eff[(eff["_types"] == n) & eff["primary"].astype(bool)]
        out.append(
            {
                "types": int(cast(int, n)),
                "n_worlds": int(len(w)),
                "divergent_fits": int((w["divergences"].fillna(0) > 0).sum()),
                "primary": _kind_figures(primary),
            }
        )
    return out


def summarize(run: CalibrationRun) -> dict[str, Any]:
    """The calibration report as a JSON-ready dict.

    Parameters
    ----------
    run : CalibrationRun
        From :func:`~bayestwin.calibration.run.run_calibration`.

    Returns
    -------
    dict
        ``meta``, ``acceptance``, ``by_assignment`` (per method, primary targets),
        ``all_types``, ``by_family``, ``by_effect_design``, ``by_true_lift``,
        ``by_type_frequency``, ``by_segment_size``, ``engine_decisions``,
        ``sample_size``, ``sbc``, ``diagnostics``. Groups are the assignments
        ``random``, ``confounded_observed`` and ``confounded_hidden``. With world
        kinds, ``by_kind`` and ``by_type_count`` too (:func:`by_kind`,
        :func:`by_type_count`, over every kind), and the rest reads the ``in_model``
        worlds only. Where worlds were rehearsed, ``rehearsal``
        (:func:`~bayestwin.calibration.loop.rehearsal_agreement`, over every kind); where
        worlds had real experiments, ``experiment_series``
        (:func:`~bayestwin.calibration.loop.experiment_series`).
    """
    eff = with_assignment(run.effects)
    worlds = with_assignment(run.worlds)
    out: dict[str, Any] = {"meta": _meta(run, worlds)}
    rehearsal = rehearsal_agreement(worlds, eff) if not worlds.empty else None
    if rehearsal is not None:
        out["rehearsal"] = rehearsal
    series = experiment_series(eff, worlds)
    if series is not None:
        out["experiment_series"] = series
    if "kind" in worlds and not worlds.empty:
        out["by_kind"] = by_kind(eff, worlds)
        out["by_type_count"] = by_type_count(eff, worlds)
        if worlds["kind"].nunique() > 1:
            # the sections below are about the worlds shaped like the model
            worlds = worlds[worlds["kind"] == "in_model"]
            eff = eff[eff["kind"] == "in_model"] if "kind" in eff else eff
    if eff.empty:
        out["acceptance"] = {}
        return out
    methods = methods_in(eff)
    primary = eff[eff["primary"]]
    groups = {
        a: primary[primary["assignment"] == a]
        for a in ASSIGNMENTS
        if (primary["assignment"] == a).any()
    }
    out["by_assignment"] = {
        g: {m: _method_summary(frame, m) for m in methods} for g, frame in groups.items()
    }
    out["all_types"] = {
        g: {m: _method_summary(eff[eff["assignment"] == g], m) for m in methods} for g in groups
    }
    random = groups.get("random", primary.iloc[:0])
    out["acceptance"] = _acceptance(random)
    unconf_all = eff[eff["assignment"] == "random"]
    out.update(_breakdowns(groups, random, unconf_all, run.segments, methods))
    out["engine_decisions"] = {
        g: _decision_quality(frame, "twin_decision") for g, frame in groups.items()
    }
    out["sample_size"] = {g: _sample_size_summary(frame) for g, frame in groups.items()}
    out["sbc"] = _sbc(unconf_all)
    out["diagnostics"] = _diagnostics(eff, worlds, random)
    return out
