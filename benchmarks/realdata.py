"""Real randomized experiments: fit the twin on one half, predict the other half's test.

Two published experiments, as the ``causaldata`` package ships them:

* **Thornton (2008)**, ``causaldata.thornton_hiv``: cash incentives, of a randomized
  amount, to learn one's HIV test result. Outcome ``got`` (bernoulli); treatment: any
  incentive (``intervention_type`` ``"incentive"``), intensity the amount divided by
  the largest amount, so in (0, 1]; features ``age``, ``distvct`` (distance to the
  results centre) and ``hiv2004``; rows with a missing value are dropped.
* **NSW** (LaLonde; the Dehejia-Wahba sample), ``causaldata.nsw_mixtape``: job
  training and 1978 earnings. Outcome ``re78`` (gaussian); treatment ``treat``
  (``"training"``, intensity 1); features ``age``, ``educ``, ``black``, ``hisp``,
  ``marr``, ``nodegree``, ``re74``, ``re75``.

Neither has a grouping column: both are fitted with ``segment_column=None``.

**Protocol.** For each of ``--splits`` seeded splits, the units are split 50/50 at
random. Half A is the history (one row per unit, one period; treated rows carry the
intervention type and their intensity, control rows ``""`` and 0). The twin is fitted
on it; then half B's experiment is predicted: the effect of B's treated arm against
B's control arm. B's difference in means and its standard error are the real result.

* *Population.* When :meth:`SimulationEngine.simulate` accepts a ``population``, B's
  units are passed; otherwise the twins are drawn from the fitted population (half A's
  units, a sample of the same experiment). The report records which was used.
* *Doses.* B's treated arm holds many amounts. Each incentive band's treated units
  are simulated at the band's mean intensity and the ATE draws are averaged with the
  band's share of the arm as weight (the same twins and posterior draws in every
  run, so the average is draw by draw). :func:`mixed_arm_config` is the hook for an
  engine that takes a mixed-intensity ``intervention_config`` at once.
* *Intervals.* The posterior interval is the equal-tailed 95% interval of the
  population ATE draws. The predictive interval adds B's sampling noise: the normal
  mixture ``mean_d Normal(ate_d, se_B^2)`` (:class:`bayestwin.core.predictive.ATEPredictive`,
  the fidelity tracker's predictive), its central 95% interval exact.
* *Grades* come from :class:`bayestwin.FidelityTracker` (the real test's reported
  SE as its noise); the decision and the sample size from the simulation at the arm's
  mean intensity. The recommended size (both arms) is compared with statsmodels'
  ``NormalIndPower`` at the model's own effect and outcome sds (bernoulli: at
  ``proportion_effectsize`` of the model's treated and control means).
* *Bands* (Thornton): every band's held-out response, its treated units' mean minus
  B's control mean, against its own predictive 95% interval (the band's simulation
  plus the band's sampling noise). The $0 band is B's control arm: its mean is shown
  beside the model's control mean.

Run ``python -m benchmarks.realdata --out reports/realdata --splits 20`` (``nox -s
realdata``). It writes ``realdata.json`` and ``realdata.md`` under ``--out`` after every
split, so a long run can be read while it goes. Needs the ``realdata`` extra
(``causaldata``, ``statsmodels``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DATASETS",
    "Band",
    "RealDataSet",
    "RunSettings",
    "arm_estimate",
    "load_nsw",
    "load_thornton",
    "main",
    "mixed_arm_config",
    "predictive_interval",
    "run_realdata",
    "statsmodels_n_per_arm",
    "summarise",
]

#: Level of every interval checked.
LEVEL = 0.95
#: Relative gap to statsmodels' sample size that counts as a match.
N_TOLERANCE = 0.10


# -- the data sets -----------------------------------------------------------------------
@dataclass(frozen=True)
class Band:
    """Treated units whose raw dose lies in ``(low, high]``."""

    label: str
    low: float
    high: float

    def mask(self, dose: np.ndarray) -> np.ndarray:
        """Boolean mask of the doses in the band."""
        return (dose > self.low) & (dose <= self.high)


@dataclass(frozen=True)
class RealDataSet:
    """One real randomized experiment, as a unit-level frame and how to fit it.

    Attributes
    ----------
    name : str
        Short name (``thornton``, ``nsw``), also the brand of its fits.
    title : str
        What it is, for the report.
    family : str
        Outcome family of the twin model.
    intervention_type : str
        Name of the intervention in the history.
    features : tuple of str
        Numeric features.
    load : callable
        Returns the unit-level frame: ``unit_id``, ``outcome``, ``treated`` (bool),
        ``dose`` (raw amount, 0 for control), ``intensity`` (in [0, 1]) and the features.
    bands : tuple of Band
        Dose bands of the treated arm; empty for a single-dose experiment.
    dose_unit : str
        Unit of the raw dose, for the report.
    """

    name: str
    title: str
    family: str
    intervention_type: str
    features: tuple[str, ...]
    load: Callable[[], pd.DataFrame]
    bands: tuple[Band, ...] = ()
    dose_unit: str = ""


def _require_causaldata() -> Any:
    try:
        import causaldata
    except ImportError as exc:  # pragma: no cover - exercised when the extra is missing
        raise SystemExit(
            "the realdata benchmark needs the 'realdata' extra: pip install '.[realdata]'"
        ) from exc
    return causaldata


def load_thornton() -> pd.DataFrame:
    """Thornton (2008) HIV incentives as a unit-level frame (rows with a NaN dropped).

    Returns
    -------
    DataFrame
        ``unit_id``, ``outcome`` (``got``), ``treated`` (``any``), ``dose`` (``tinc``,
        dollars), ``intensity`` (``tinc / max(tinc)``), ``age``, ``distvct``, ``hiv2004``.
    """
    raw = _require_causaldata().thornton_hiv.load_pandas().data
    cols = ["got", "any", "tinc", "age", "distvct", "hiv2004"]
    df = raw[cols].dropna().reset_index()
    dose = df["tinc"].to_numpy(dtype=float)
    treated = df["any"].to_numpy(dtype=float) == 1.0
    if not np.array_equal(treated, dose > 0):
        raise ValueError("thornton_hiv: 'any' disagrees with 'tinc' > 0")
    return pd.DataFrame(
        {
            "unit_id": [f"t{i}" for i in df["index"]],
            "outcome": df["got"].to_numpy(dtype=float),
            "treated": treated,
            "dose": dose,
            "intensity": dose / dose.max(),
            "age": df["age"].to_numpy(dtype=float),
            "distvct": df["distvct"].to_numpy(dtype=float),
            "hiv2004": df["hiv2004"].to_numpy(dtype=float),
        }
    )


NSW_FEATURES = ("age", "educ", "black", "hisp", "marr", "nodegree", "re74", "re75")


def load_nsw() -> pd.DataFrame:
    """NSW job training (Dehejia-Wahba sample) as a unit-level frame.

    Returns
    -------
    DataFrame
        ``unit_id``, ``outcome`` (``re78``), ``treated`` (``treat``), ``dose`` and
        ``intensity`` (both ``treat``) and the features of :data:`NSW_FEATURES`.
    """
    raw = _require_causaldata().nsw_mixtape.load_pandas().data
    df = raw[["re78", "treat", *NSW_FEATURES]].dropna().reset_index()
    treated = df["treat"].to_numpy(dtype=float) == 1.0
    out = pd.DataFrame(
        {
            "unit_id": [f"n{i}" for i in df["index"]],
            "outcome": df["re78"].to_numpy(dtype=float),
            "treated": treated,
            "dose": treated.astype(float),
            "intensity": treated.astype(float),
        }
    )
    for col in NSW_FEATURES:
        out[col] = df[col].to_numpy(dtype=float)
    return out


#: Thornton's incentive bands in dollars. The first one, up to $0.20, holds the
#: smallest amounts, where the response jumps at first contact.
THORNTON_BANDS = (
    Band("$0-0.2", 0.0, 0.2),
    Band("$0.2-1", 0.2, 1.0),
    Band("$1-2", 1.0, 2.0),
    Band("$2-3", 2.0, 3.0),
)

DATASETS: dict[str, RealDataSet] = {
    "thornton": RealDataSet(
        name="thornton",
        title="Thornton (2008): cash incentives to learn one's HIV result",
        family="bernoulli",
        intervention_type="incentive",
        features=("age", "distvct", "hiv2004"),
        load=load_thornton,
        bands=THORNTON_BANDS,
        dose_unit="$",
    ),
    "nsw": RealDataSet(
        name="nsw",
        title="NSW (LaLonde, Dehejia-Wahba sample): job training and 1978 earnings",
        family="gaussian",
        intervention_type="training",
        features=NSW_FEATURES,
        load=load_nsw,
    ),
}


# -- settings ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSettings:
    """How each split is fitted and simulated.

    Attributes
    ----------
    splits : int
        Number of seeded 50/50 splits.
    seed : int
        Base seed; split ``r`` uses ``seed + r`` for the split, the sampler and the twins.
    draws, tune, chains : int
        NUTS draws and tuning steps per chain, and chains.
    cores : int
        Cores for the chains.
    twins : int
        Twins per simulation.
    """

    splits: int = 20
    seed: int = 2008
    draws: int = 1000
    tune: int = 1000
    chains: int = 2
    cores: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    twins: int = 10_000


# -- small pure pieces -------------------------------------------------------------------
def predictive_interval(
    ate_draws: Sequence[float] | np.ndarray, se: float, level: float = LEVEL
) -> tuple[float, float]:
    """Central predictive interval of an observed ATE: posterior draws plus test noise.

    The predictive is the normal mixture ``mean_d Normal(ate_d, se^2)``, the
    distribution of ``ate_d + Normal(0, se)`` for a random posterior draw ``d``; its
    quantiles are solved exactly (:class:`bayestwin.core.predictive.ATEPredictive`).

    Parameters
    ----------
    ate_draws : array_like
        Posterior draws of the population ATE.
    se : float
        Standard error of the real test's difference in means (>= 0).
    level : float
        Level in (0, 1).

    Returns
    -------
    (float, float)
        Lower and upper bounds.
    """
    from bayestwin.core.predictive import ATEPredictive

    return ATEPredictive(np.asarray(ate_draws, dtype=float), float(se)).interval(level)


def arm_estimate(y_treated: np.ndarray, y_control: np.ndarray) -> tuple[float, float]:
    """Difference in means of two arms and its (unpooled) standard error.

    Parameters
    ----------
    y_treated, y_control : ndarray
        Outcomes of each arm (at least two each).

    Returns
    -------
    (float, float)
        ``mean(y_t) - mean(y_c)`` and ``sqrt(var(y_t) / n_t + var(y_c) / n_c)``
        (``ddof=1``).
    """
    yt = np.asarray(y_treated, dtype=float)
    yc = np.asarray(y_control, dtype=float)
    if yt.size < 2 or yc.size < 2:
        raise ValueError(f"each arm needs >= 2 units, got {yt.size} and {yc.size}")
    se = math.sqrt(yt.var(ddof=1) / yt.size + yc.var(ddof=1) / yc.size)
    return float(yt.mean() - yc.mean()), se


def statsmodels_n_per_arm(
    family: str,
    effect: float,
    *,
    control_mean: float | None = None,
    sd_control: float | None = None,
    sd_treated: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float | None:
    """Units per arm of a two-sided two-sample z-test, from statsmodels' ``NormalIndPower``.

    Parameters
    ----------
    family : str
        ``"bernoulli"``: the effect size is ``proportion_effectsize(p1, p0)`` (Cohen's
        h) with ``p0 = control_mean`` and ``p1 = p0 + effect``. Otherwise the effect
        over the pooled sd ``sqrt((sd_control^2 + sd_treated^2) / 2)``.
    effect : float
        Difference of means (treated - control).
    control_mean : float, optional
        Control mean (bernoulli).
    sd_control, sd_treated : float, optional
        Outcome sds per arm (other families).
    alpha, power : float
        Two-sided level and target power.

    Returns
    -------
    float or None
        The (fractional) n per arm; None when the effect size is 0.
    """
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    if family == "bernoulli":
        if control_mean is None:
            raise ValueError("a bernoulli outcome needs control_mean")
        p0 = float(control_mean)
        p1 = min(1.0, max(0.0, p0 + float(effect)))
        size = float(proportion_effectsize(p1, p0))
    else:
        if sd_control is None or sd_treated is None:
            raise ValueError("a non-bernoulli outcome needs sd_control and sd_treated")
        size = float(effect) / math.sqrt((sd_control**2 + sd_treated**2) / 2.0)
    if size == 0.0 or not math.isfinite(size):
        return None
    n = NormalIndPower().solve_power(
        effect_size=abs(size), alpha=alpha, power=power, ratio=1.0, alternative="two-sided"
    )
    return float(np.asarray(n).item())


def mixed_arm_config(
    intensities: Sequence[float], weights: Sequence[float]
) -> Mapping[str, Any] | None:
    """The ``intervention_config`` of a mixed-intensity arm (``intensity_mix``).

    The arm is then simulated in one call; the per-band runs beside it give each band's
    own prediction.

    Parameters
    ----------
    intensities : sequence of float
        Intensities of the arm's parts (those > 0 enter the mix).
    weights : sequence of float
        Their shares of the arm (summing to 1).

    Returns
    -------
    mapping or None
        The config, or None when no part has a positive intensity and weight.
    """
    mix = [
        {"intensity": float(s), "weight": float(w)}
        for s, w in zip(intensities, weights, strict=True)
        if s > 0 and w > 0
    ]
    return {"intensity_mix": mix} if mix else None


# -- one split ---------------------------------------------------------------------------
def _history(units: pd.DataFrame, ds: RealDataSet) -> pd.DataFrame:
    """Half A as a history: one row per unit, one period."""
    treated = units["treated"].to_numpy(dtype=bool)
    hist = pd.DataFrame(
        {
            "unit_id": units["unit_id"].to_numpy(),
            "brand": ds.name,
            "outcome": units["outcome"].to_numpy(dtype=float),
            "intervention_type": np.where(treated, ds.intervention_type, ""),
            "intensity": np.where(treated, units["intensity"].to_numpy(dtype=float), 0.0),
        }
    )
    for col in ds.features:
        hist[col] = units[col].to_numpy(dtype=float)
    return hist


def _spec(ds: RealDataSet, settings: RunSettings, seed: int) -> Any:
    from bayestwin.model.spec import SamplerSettings, default_spec

    return default_spec(
        "patient",
        ds.name,
        family=ds.family,  # type: ignore[arg-type]
        numeric_features=ds.features,
        segment_column=None,
        period_column=None,
        twin_type_column=None,
        sampler=SamplerSettings(
            draws=settings.draws,
            tune=settings.tune,
            chains=settings.chains,
            cores=settings.cores,
            random_seed=seed,
            progressbar=False,
        ),
    )


def _population_kwargs(
    engine: Any, model: Any, units_b: pd.DataFrame, ds: RealDataSet
) -> tuple[dict[str, Any], str]:
    """The ``simulate`` keyword for B's units when the engine takes one, and its label."""
    if "population" not in inspect.signature(engine.simulate).parameters:
        return {}, f"fitted (half A, {len(model.population)} units): simulate takes no population"
    from bayestwin.model.spec import IMPLICIT_SEGMENT

    pop = pd.DataFrame({"unit_id": units_b["unit_id"].astype(str).to_numpy()})
    pop["segment"] = IMPLICIT_SEGMENT
    for col in ds.features:
        pop[col] = units_b[col].to_numpy(dtype=float)
    return {"population": pop}, f"held-out (half B, {len(pop)} units)"


def simulate_arm(
    engine: Any,
    model: Any,
    intervention_type: str,
    intensities: Sequence[float],
    weights: Sequence[float],
    *,
    twins: int,
    seed: int,
    population: Mapping[str, Any],
) -> tuple[np.ndarray, list[np.ndarray]]:
    """ATE draws of a treated arm that mixes intensities, and of each part.

    Parameters
    ----------
    engine : SimulationEngine
        The engine.
    model : FittedTwinModel
        The fitted twin.
    intervention_type : str
        The intervention.
    intensities, weights : sequence of float
        The arm's intensities and their shares (summing to 1).
    twins : int
        Twins per simulation.
    seed : int
        Seed of the twins: every run draws the same twins.
    population : mapping
        Extra keywords of ``simulate`` (the population, when it takes one).

    Returns
    -------
    arm : ndarray, shape (D,)
        ``sum_b w_b ate_b``, draw by draw (or the engine's own, see
        :func:`mixed_arm_config`).
    parts : list of ndarray
        The ATE draws at each intensity.
    """
    parts = [
        np.asarray(
            engine.simulate(
                model,
                intervention_type,
                {"intensity": float(s)},
                twin_count=twins,
                random_seed=seed,
                dose_grid=[],
                **population,
            ).ate_draws,
            dtype=float,
        )
        for s in intensities
    ]
    native = mixed_arm_config(intensities, weights)
    if native is not None:
        result = engine.simulate(
            model,
            intervention_type,
            native,
            twin_count=twins,
            random_seed=seed,
            dose_grid=[],
            **population,
        )
        return np.asarray(result.ate_draws, dtype=float), parts
    w = np.asarray(weights, dtype=float)
    arm = np.tensordot(w / w.sum(), np.vstack(parts), axes=1)
    return arm, parts


def _interval_record(draws: np.ndarray, real: float, se: float) -> dict[str, Any]:
    """Posterior and predictive 95% intervals of ``draws`` and whether ``real`` is inside."""
    lo, hi = (float(v) for v in np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))
    plo, phi = predictive_interval(draws, se)
    sim = float(np.median(draws))
    return {
        "real": real,
        "real_se": se,
        "simulated": sim,
        "error": sim - real,
        "relative_error": abs(sim - real) / abs(real) if real != 0 else None,
        "posterior_interval": [lo, hi],
        "in_posterior": bool(lo <= real <= hi),
        "predictive_interval": [plo, phi],
        "in_predictive": bool(plo <= real <= phi),
    }


def _sample_size_record(result: Any, family: str) -> dict[str, Any]:
    """The simulation's sample size next to statsmodels' at its own effect and sds."""
    report = result.sample_size
    classic = None if report is None else report.classic_n_per_arm
    sm = statsmodels_n_per_arm(
        family,
        float(result.simulated_ate),
        control_mean=result.control_mean,
        sd_control=result.outcome_sd_control,
        sd_treated=result.outcome_sd_treated,
    )
    sm_total = None if sm is None else 2 * math.ceil(sm)
    rec = result.recommended_sample_size
    ours = rec if rec is not None else (None if classic is None else 2 * classic)
    return {
        "recommended_sample_size": rec,
        "classic_n_per_arm": classic,
        "statsmodels_n_per_arm": sm,
        "statsmodels_total": sm_total,
        "ratio_to_statsmodels": None if ours is None or not sm_total else ours / sm_total,
        "capped": bool(rec is not None and classic is not None and rec < 2 * classic),
        "eligible_population": result.eligible_population,
        "population_sufficient": result.population_sufficient,
    }


def run_split(
    ds: RealDataSet,
    units: pd.DataFrame,
    split: int,
    settings: RunSettings,
    *,
    engine: Any = None,
) -> dict[str, Any]:
    """Fit half A of one seeded split and predict half B's experiment.

    Parameters
    ----------
    ds : RealDataSet
        The data set.
    units : DataFrame
        Its unit-level frame (``ds.load()``).
    split : int
        Index of the split; its seed is ``settings.seed + split``.
    settings : RunSettings
        Fit and simulation settings.
    engine : SimulationEngine, optional
        The engine (default: a new one with the shipped thresholds).

    Returns
    -------
    dict
        The split's record: sizes, diagnostics, the arm's real and predicted ATE with
        both intervals, grade, decision, sample size and, for a dosed data set, the
        bands.
    """
    from bayestwin import FidelityTracker, SimulationEngine, TwinGenerator
    from bayestwin.schemas import ExperimentOutcome

    seed = settings.seed + split
    engine = engine if engine is not None else SimulationEngine()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(units))
    half = len(units) // 2
    units_a = units.iloc[order[:half]].reset_index(drop=True)
    units_b = units.iloc[order[half:]].reset_index(drop=True)

    t0 = time.perf_counter()
    model = TwinGenerator(_spec(ds, settings, seed)).fit(
        _history(units_a, ds), override_diagnostics=True, keep_trace=False
    )
    fit_seconds = time.perf_counter() - t0
    population, population_label = _population_kwargs(engine, model, units_b, ds)

    treated = units_b["treated"].to_numpy(dtype=bool)
    y = units_b["outcome"].to_numpy(dtype=float)
    dose = units_b["dose"].to_numpy(dtype=float)
    intensity = units_b["intensity"].to_numpy(dtype=float)
    y_c = y[~treated]
    real, se = arm_estimate(y[treated], y_c)

    # the arm's parts: its bands (each at its mean intensity), or its one intensity
    if ds.bands:
        masks = [b.mask(dose) & treated for b in ds.bands]
        parts = [(b, m) for b, m in zip(ds.bands, masks, strict=True) if m.any()]
    else:
        parts = [(Band("all", 0.0, math.inf), treated)]
    levels = [float(intensity[m].mean()) for _, m in parts]
    weights = [float(m.sum()) / float(treated.sum()) for _, m in parts]
    arm_draws, part_draws = simulate_arm(
        engine,
        model,
        ds.intervention_type,
        levels,
        weights,
        twins=settings.twins,
        seed=seed,
        population=population,
    )

    # decision and sample size: one simulation at the arm's mean intensity
    mean_intensity = float(intensity[treated].mean())
    decision_run = engine.simulate(
        model,
        ds.intervention_type,
        {"intensity": mean_intensity},
        twin_count=settings.twins,
        random_seed=seed,
        dose_grid=[],
        **population,
    )
    arm_result = decision_run.model_copy(
        update={
            "ate_draws": arm_draws.tolist(),
            "simulated_ate": float(np.median(arm_draws)),
            "simulated_ci_lower": float(np.quantile(arm_draws, (1 - LEVEL) / 2)),
            "simulated_ci_upper": float(np.quantile(arm_draws, (1 + LEVEL) / 2)),
        }
    )
    outcome = ExperimentOutcome(
        actual_experiment_id=f"{ds.name}-split-{split}",
        actual_ate=real,
        actual_se=se,
        n_treatment=int(treated.sum()),
        n_control=int((~treated).sum()),
        control_mean=float(y_c.mean()),
    )
    fidelity = FidelityTracker().validate(arm_result, outcome)

    record: dict[str, Any] = {
        "split": split,
        "seed": seed,
        "n_fit": len(units_a),
        "n_heldout": len(units_b),
        "n_treated": int(treated.sum()),
        "n_control": int((~treated).sum()),
        "population": population_label,
        "fit_seconds": fit_seconds,
        "diagnostics": model.diagnostics.to_dict(),
        "arm": {
            **_interval_record(arm_draws, real, se),
            "mean_intensity": mean_intensity,
            "fidelity_grade": fidelity.fidelity_grade.value,
            "prediction_error": fidelity.prediction_error,
            "pit": fidelity.pit,
            "tracker_in_predictive_95": (fidelity.in_predictive_interval or {}).get("0.95"),
        },
        "decision": {
            "intensity": mean_intensity,
            "recommendation": decision_run.recommendation.value
            if decision_run.recommendation
            else None,
            "simulated_ate": decision_run.simulated_ate,
            "relative_lift": decision_run.relative_lift,
            "prob_effect_above_threshold": decision_run.prob_effect_above_threshold,
            "control_mean": decision_run.control_mean,
            "outcome_sd_control": decision_run.outcome_sd_control,
            "outcome_sd_treated": decision_run.outcome_sd_treated,
            "rationale": decision_run.recommendation_rationale,
        },
        "sample_size": _sample_size_record(decision_run, ds.family),
    }
    if ds.bands:
        bands: list[dict[str, Any]] = [
            {
                "band": "$0",
                "n": int((~treated).sum()),
                "kind": "control level",
                "real": float(y_c.mean()),
                "simulated": decision_run.control_mean,
                "note": "the model's posterior median control mean (no draws of it)",
            }
        ]
        for (band, m), level, weight, draws in zip(parts, levels, weights, part_draws, strict=True):
            b_real, b_se = arm_estimate(y[m], y_c)
            bands.append(
                {
                    "band": band.label,
                    "n": int(m.sum()),
                    "kind": "effect vs control",
                    "intensity": level,
                    "weight": weight,
                    **_interval_record(draws, b_real, b_se),
                }
            )
        record["bands"] = bands
    return record


# -- the summary -------------------------------------------------------------------------
def _coverage(hits: Sequence[bool]) -> dict[str, Any]:
    from bayestwin.calibration.stats import coverage_summary

    return coverage_summary(np.asarray(list(hits), dtype=float), LEVEL)


def _median(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.median(vals)) if vals else None


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def _counts(values: Sequence[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        key = str(v)
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def summarise(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Summarise one data set's split records.

    Parameters
    ----------
    records : sequence of dict
        Records of :func:`run_split`.

    Returns
    -------
    dict
        Coverage of the posterior and predictive 95% intervals (with Wilson
        intervals), the median relative error, the mean error, the grades, the
        decisions, the gate's pass rate, the sample sizes against statsmodels and,
        for a dosed data set, the same per band.
    """
    arms = [r["arm"] for r in records]
    sizes = [r["sample_size"] for r in records]
    ratios = [s["ratio_to_statsmodels"] for s in sizes]
    out: dict[str, Any] = {
        "n_splits": len(records),
        "populations": _counts([r["population"] for r in records]),
        "posterior_coverage": _coverage([a["in_posterior"] for a in arms]),
        "predictive_coverage": _coverage([a["in_predictive"] for a in arms]),
        "median_relative_error": _median([a["relative_error"] for a in arms]),
        "median_prediction_error": _median([a["prediction_error"] for a in arms]),
        "mean_error": _mean([a["error"] for a in arms]),
        "median_real": _median([a["real"] for a in arms]),
        "median_simulated": _median([a["simulated"] for a in arms]),
        "grades": _counts([a["fidelity_grade"] for a in arms]),
        "decisions": _counts([r["decision"]["recommendation"] for r in records]),
        "gate": _coverage([r["diagnostics"]["passed"] for r in records]),
        "median_divergences": _median([r["diagnostics"]["divergences"] for r in records]),
        "fits_with_divergences": sum(r["diagnostics"]["divergences"] > 0 for r in records),
        "median_fit_seconds": _median([r["fit_seconds"] for r in records]),
        "sample_size": {
            "median_recommended": _median([s["recommended_sample_size"] for s in sizes]),
            "median_statsmodels_total": _median([s["statsmodels_total"] for s in sizes]),
            "median_ratio": _median(ratios),
            "max_abs_ratio_gap": max((abs(v - 1.0) for v in ratios if v is not None), default=None),
            "within_tolerance": sum(v is not None and abs(v - 1.0) <= N_TOLERANCE for v in ratios),
            "tolerance": N_TOLERANCE,
            "capped": sum(bool(s["capped"]) for s in sizes),
            "population_sufficient": _counts([s["population_sufficient"] for s in sizes]),
        },
    }
    if any("bands" in r for r in records):
        labels = list(dict.fromkeys(b["band"] for r in records for b in r.get("bands", [])))
        bands = []
        for label in labels:
            rows = [b for r in records for b in r.get("bands", []) if b["band"] == label]
            entry: dict[str, Any] = {
                "band": label,
                "kind": rows[0]["kind"],
                "median_n": _median([b["n"] for b in rows]),
                "median_real": _median([b["real"] for b in rows]),
                "median_simulated": _median([b["simulated"] for b in rows]),
                "mean_error": _mean(
                    [None if b["simulated"] is None else b["simulated"] - b["real"] for b in rows]
                ),
            }
            if "in_predictive" in rows[0]:
                entry["median_relative_error"] = _median([b["relative_error"] for b in rows])
                entry["posterior_coverage"] = _coverage([b["in_posterior"] for b in rows])
                entry["predictive_coverage"] = _coverage([b["in_predictive"] for b in rows])
            bands.append(entry)
        out["bands"] = bands
    return out


# -- the report --------------------------------------------------------------------------
def _clean(value: Any) -> Any:
    """JSON-ready: NaN and infinities become None, numpy scalars plain numbers."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _cov(c: Mapping[str, Any]) -> str:
    if not c or not c.get("n"):
        return "-"
    return f"{c['hits']}/{c['n']} ({c['coverage']:.0%}; Wilson {c['lower']:.2f}-{c['upper']:.2f})"


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: settings, one section per data set, its bands.

    Parameters
    ----------
    report : dict
        The report of :func:`run_realdata`.

    Returns
    -------
    str
    """
    meta = report["meta"]
    lines = [
        "# Real experiments: split-half prediction",
        "",
        f"`{meta['command']}`: {meta['settings']['splits']} seeded 50/50 splits per data set; "
        f"{meta['settings']['chains']} chains x {meta['settings']['draws']} draws "
        f"({meta['settings']['tune']} tuning), {meta['settings']['twins']} twins per simulation; "
        f"bayestwin {meta['bayestwin_version']}. "
        f"{'Complete' if meta['complete'] else 'PARTIAL'}: wall time "
        f"{meta['wall_seconds'] / 60:.1f} min.",
        "",
        "The real result is half B's difference in means (treated - control) and its SE; "
        "the twin is fitted on half A. Posterior: the equal-tailed 95% interval of the "
        "population ATE. Predictive: the same draws plus B's sampling noise (normal "
        "mixture). Coverage with 95% Wilson intervals.",
        "",
    ]
    for name, section in report["datasets"].items():
        s = section["summary"]
        if not s:
            continue
        ss = s["sample_size"]
        lines += [
            f"## {section['title']}",
            "",
            f"{section['n_units']} units ({section['family']}), {s['n_splits']} splits. "
            f"Population simulated: {', '.join(s['populations'])}.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| posterior 95% coverage | {_cov(s['posterior_coverage'])} |",
            f"| predictive 95% coverage | {_cov(s['predictive_coverage'])} |",
            f"| median relative error | {_fmt(s['median_relative_error'], '.1%')} |",
            f"| median graded prediction error | {_fmt(s['median_prediction_error'], '.1%')} |",
            f"| median real / simulated ATE | {_fmt(s['median_real'], '.4g')} / "
            f"{_fmt(s['median_simulated'], '.4g')} |",
            f"| mean error (simulated - real) | {_fmt(s['mean_error'], '.4g')} |",
            f"| grades | {', '.join(f'{k} {v}' for k, v in s['grades'].items())} |",
            f"| decisions | {', '.join(f'{k} {v}' for k, v in s['decisions'].items())} |",
            f"| diagnostics gate passed | {_cov(s['gate'])} |",
            f"| fits with divergences | {s['fits_with_divergences']} |",
            f"| median fit time | {_fmt(s['median_fit_seconds'], '.1f')} s |",
            f"| recommended n (both arms), median | {_fmt(ss['median_recommended'], '.0f')} |",
            f"| statsmodels NormalIndPower n (both arms), median | "
            f"{_fmt(ss['median_statsmodels_total'], '.0f')} |",
            f"| ratio to statsmodels: median, worst gap | {_fmt(ss['median_ratio'], '.3f')}, "
            f"{_fmt(ss['max_abs_ratio_gap'], '.1%')} |",
            f"| within {ss['tolerance']:.0%} of statsmodels | {ss['within_tolerance']}/"
            f"{s['n_splits']} |",
            f"| capped sample sizes | {ss['capped']} |",
            f"| population_sufficient | "
            f"{', '.join(f'{k} {v}' for k, v in ss['population_sufficient'].items())} |",
            "",
        ]
        if "bands" in s:
            lines += [
                f"### {name}: by incentive band",
                "",
                "Effect rows: the band's treated mean minus B's control mean, against the "
                "band's own predictive 95% interval. The $0 row is B's control mean beside "
                "the model's posterior median control mean.",
                "",
                "| band | median n | real (median) | twin (median) | mean error | "
                "posterior 95% | predictive 95% |",
                "|---|---|---|---|---|---|---|",
            ]
            for b in s["bands"]:
                lines.append(
                    f"| {b['band']} | {_fmt(b['median_n'], '.0f')} | {_fmt(b['median_real'])} | "
                    f"{_fmt(b['median_simulated'])} | {_fmt(b['mean_error'], '+.3f')} | "
                    f"{_cov(b.get('posterior_coverage', {}))} | "
                    f"{_cov(b.get('predictive_coverage', {}))} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"


def _write(report: Mapping[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "realdata.json", "markdown": out / "realdata.md"}
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(report), indent=2) + "\n")
    tmp.replace(paths["json"])
    paths["markdown"].write_text(render_markdown(_clean(report)))
    return paths


def run_realdata(
    out: str | Path,
    settings: RunSettings,
    *,
    datasets: Sequence[str] = tuple(DATASETS),
    command: str = "python -m benchmarks.realdata",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the split-half protocol on each data set and write the report after every split.

    Parameters
    ----------
    out : str or Path
        Folder of ``realdata.json`` and ``realdata.md``.
    settings : RunSettings
        Splits, seeds, sampler and twins.
    datasets : sequence of str
        Names of :data:`DATASETS` to run.
    command : str
        The command line, for the report.
    progress : callable, optional
        Called with one line per split.

    Returns
    -------
    dict
        The report: ``meta`` and, per data set, its ``records`` and ``summary``.
    """
    from bayestwin import SimulationEngine, __version__

    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        raise ValueError(f"unknown data set(s) {unknown}; choose from {sorted(DATASETS)}")
    start = time.perf_counter()
    report: dict[str, Any] = {
        "meta": {
            "command": command,
            "settings": settings.__dict__,
            "bayestwin_version": __version__,
            "complete": False,
            "wall_seconds": 0.0,
            "level": LEVEL,
        },
        "datasets": {},
    }
    engine = SimulationEngine()
    out_path = Path(out)
    for name in datasets:
        ds = DATASETS[name]
        units = ds.load()
        section: dict[str, Any] = {
            "title": ds.title,
            "family": ds.family,
            "n_units": len(units),
            "features": list(ds.features),
            "bands": [b.__dict__ for b in ds.bands],
            "records": [],
            "summary": {},
        }
        report["datasets"][name] = section
        for split in range(settings.splits):
            rec = run_split(ds, units, split, settings, engine=engine)
            section["records"].append(rec)
            section["summary"] = summarise(section["records"])
            report["meta"]["wall_seconds"] = time.perf_counter() - start
            _write(report, out_path)
            if progress is not None:
                a = rec["arm"]
                progress(
                    f"[{name} {split + 1}/{settings.splits}] fit {rec['fit_seconds']:.1f} s, "
                    f"gate {'ok' if rec['diagnostics']['passed'] else 'FAILED'}; real "
                    f"{a['real']:.4g} (SE {a['real_se']:.3g}), twin {a['simulated']:.4g}, "
                    f"predictive {'in' if a['in_predictive'] else 'OUT'}"
                )
    report["meta"]["complete"] = True
    report["meta"]["wall_seconds"] = time.perf_counter() - start
    _write(report, out_path)
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.realdata",
        description="Fit the twin on half of a real experiment and predict the other half.",
    )
    defaults = RunSettings()
    p.add_argument("--out", default="reports/realdata", help="output directory")
    p.add_argument("--splits", type=int, default=defaults.splits, help="50/50 splits per data set")
    p.add_argument("--seed", type=int, default=defaults.seed, help="base seed")
    p.add_argument("--draws", type=int, default=defaults.draws, help="posterior draws per chain")
    p.add_argument("--tune", type=int, default=defaults.tune, help="tuning steps per chain")
    p.add_argument("--chains", type=int, default=defaults.chains)
    p.add_argument("--twins", type=int, default=defaults.twins, help="twins per simulation")
    p.add_argument(
        "--datasets",
        default=",".join(DATASETS),
        help=f"comma-separated data sets ({', '.join(DATASETS)})",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    settings = RunSettings(
        splits=args.splits,
        seed=args.seed,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        cores=min(args.chains, os.cpu_count() or 1),
        twins=args.twins,
    )
    command = " ".join(["python -m benchmarks.realdata", *(argv or sys.argv[1:])])
    report = run_realdata(
        args.out,
        settings,
        datasets=[d.strip() for d in args.datasets.split(",") if d.strip()],
        command=command,
        progress=lambda line: print(line, flush=True),
    )
    print(f"wall time {report['meta']['wall_seconds'] / 60:.1f} min; wrote {args.out}/realdata.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
