"""Real experiments as likelihood terms, and the history-bias term they make learnable.

A real randomised experiment of an intervention is an observation of the model's own
ATE of that intervention over the experiment's population (the lift-test calibration
pattern)::

    ate_obs_e ~ Normal(ATE_e(theta), se_e)
    ATE_e(theta) = sum_j w_j (1 / N_e) sum_i [mu_i(treated at s_j) - mu_i(control)]

with ``mu_i = outcome_loc + outcome_scale * inverse_link(eta_i)`` and ``eta_i`` the
linear predictor of :mod:`bayestwin.model.pymc_model`: the segment intercept, the
features, and on the treated arm ``g(s) * (tau[k, seg] + Z_i . gamma[k])`` with the
dose curve ``g`` (and its first-contact jump). It is the ATE the simulation engine
computes (:func:`bayestwin.core.effects.effect_draws`, averaged over the arm's
intensities as :func:`~bayestwin.core.effects.average_effect_draws` does), inside the
PyMC graph, over a fixed subsample of at most :data:`MAX_EXPERIMENT_UNITS` of the
experiment's units (drawn without replacement by a generator seeded with
:data:`SUBSAMPLE_SEED` and the experiment id, so the same experiment always uses the
same units). Each experiment's model ATE is kept in the trace as
``experiment_model_ate``.

The unit effects of a panel model, per family:

* **gaussian**: the identity link makes the ATE free of any additive term (unit
  effect, correlated-random-effects term, period level): it cancels in the difference;
* **bernoulli** (unit effects sampled as ``sigma_unit * z_unit``): a unit of the
  history carries its own ``z_unit`` and its correlated-random-effects term
  ``lambda . m_i``; a unit the history lacks is averaged over the population
  distribution ``u ~ Normal(0, sigma_unit)`` by Gauss-Hermite quadrature
  (:data:`QUADRATURE_NODES` nodes), with the correlated term at its population mean 0
  (``m`` is centred over units);
* **poisson** (unit effects integrated out as a gamma multiplier of mean 1): every unit
  uses the population average ``E exp(u) = 1``; a unit of the history keeps its
  correlated-random-effects term;
* **neg_binomial**, and poisson with ``unit_likelihood="sampled"`` (normal ``u``): a
  unit of the history carries its sampled effect; a unit it lacks multiplies its mean
  by ``E exp(u) = exp(sigma_unit**2 / 2)``.

A model with period effects evaluates the experiment at its period's level when the
experiment names a period of the history, else at the last period's (where the period
effects are 0, as for a simulation one period ahead).

**History bias.** A history confounded in a way the model cannot see pins ``tau``
down far more tightly than any experiment's ``se``: a plain likelihood term would leave
the posterior at the history's biased value. So a fit with experiments gives the
history its own bias on the link scale: the history's rows see
``tau[k, seg] + bias[k]``, the experiments (and every simulation) see ``tau[k, seg]``,
with ``bias[k] = mu_bias + sigma_bias * z_bias[k]`` (``z_bias`` zero-sum over types;
one type: ``bias = mu_bias``). The bias is pooled across types, so an experiment on
one type corrects the others through ``mu_bias``. Its priors are
:class:`~bayestwin.model.spec.TwinPriors`' ``bias_mean_sd`` and ``bias_type_sd``. What
is assumed: the bias is one shift per intervention type, the same in every segment,
at every intensity and for every unit; the experiments themselves are unbiased
(randomised, on the population given); their ``se`` is the sampling sd of their ATE.
Without experiments the model has no bias term and is exactly as before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.core.posterior import FeatureEncoder
from bayestwin.errors import InvalidInputError
from bayestwin.model.history import latest_population
from bayestwin.model.spec import IMPLICIT_SEGMENT, TwinModelSpec, TwinPriors
from bayestwin.schemas import ExperimentEvidence

__all__ = [
    "MAX_EXPERIMENT_UNITS",
    "QUADRATURE_NODES",
    "SUBSAMPLE_SEED",
    "ExperimentDesign",
    "experiment_designs",
    "experiment_likelihood",
    "experiments_provenance",
    "history_bias",
]

#: Most units of an experiment's population the in-graph ATE averages over.
MAX_EXPERIMENT_UNITS = 500
#: Seed (with the experiment id) of the fixed subsample of a larger population.
SUBSAMPLE_SEED = 20_170_517
#: Gauss-Hermite nodes averaging a new unit's sampled effect out of a logit mean.
QUADRATURE_NODES = 9


@dataclass(frozen=True)
class ExperimentDesign:
    """The arrays of one experiment's term.

    Attributes
    ----------
    experiment_id : str
        The experiment.
    k : int
        Index of its intervention type among the model's types.
    levels, weights : ndarray, shape (J,)
        The treated arm's intensities and their shares (summing to 1).
    x, z : ndarray, shape (N, P) and (N, P_numeric)
        Encoded features of the units used (see :class:`FeatureEncoder`).
    seg : ndarray of intp, shape (N,)
        Segment index of each unit.
    unit : ndarray of intp, shape (N,)
        Index of each unit among the history's units (``d["unit_ids"]``), -1 for a
        unit the history lacks or a model without unit effects.
    period : int
        Index of the experiment's period (``d["periods"]``), -1 for the last one.
    ate, se : float
        The observed ATE and its standard error.
    n_population : int
        Units in the experiment's population (``N`` is at most
        :data:`MAX_EXPERIMENT_UNITS` of them).
    """

    experiment_id: str
    k: int
    levels: NDArray
    weights: NDArray
    x: NDArray
    z: NDArray
    seg: NDArray[np.intp]
    unit: NDArray[np.intp]
    period: int
    ate: float
    se: float
    n_population: int


def _field(i: int, name: str) -> str:
    return f"experiments[{i}].{name}"


def _population(
    i: int, ex: ExperimentEvidence, df: pd.DataFrame, spec: TwinModelSpec, enc: FeatureEncoder
) -> pd.DataFrame:
    """The experiment's units as rows with ``unit_id``, the segment and the features."""
    parts: list[pd.DataFrame] = []
    given: set[str] = set()
    if ex.units is not None:
        rows = pd.DataFrame(list(ex.units))
        if enc.segment_column not in rows.columns and enc.segments == (IMPLICIT_SEGMENT,):
            rows[enc.segment_column] = IMPLICIT_SEGMENT
        missing = [c for c in enc.raw_columns if c not in rows.columns]
        if missing:
            raise InvalidInputError(
                f"experiment {ex.experiment_id!r}: its units lack the column(s) {missing}; "
                f"the model needs {enc.raw_columns}",
                field=_field(i, "units"),
            )
        if "unit_id" not in rows.columns:
            rows["unit_id"] = [f"new-{j}" for j in range(len(rows))]
        rows["unit_id"] = rows["unit_id"].astype(str)
        given = set(rows["unit_id"])
        parts.append(rows)
    if ex.unit_ids is not None:
        pop = latest_population(df, spec)
        known = pd.Index(pop["unit_id"])
        wanted = [u for u in dict.fromkeys(ex.unit_ids) if u not in given]
        pos = known.get_indexer(pd.Index(wanted))
        missing_ids = [u for u, p in zip(wanted, pos, strict=True) if p < 0]
        if missing_ids:
            shown = ", ".join(repr(u) for u in missing_ids[:5])
            raise InvalidInputError(
                f"experiment {ex.experiment_id!r} names {len(missing_ids)} unit id(s) the "
                f"history lacks ({shown}) and gives no features for them: pass their rows "
                "as units",
                field=_field(i, "unit_ids"),
            )
        parts.append(pop.iloc[pos])
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    frame = frame.drop_duplicates("unit_id").reset_index(drop=True)
    frame[enc.segment_column] = frame[enc.segment_column].astype(str)
    for col in enc.categorical:
        frame[col] = frame[col].astype(str)
    return frame


def _subsample(frame: pd.DataFrame, experiment_id: str) -> pd.DataFrame:
    """At most :data:`MAX_EXPERIMENT_UNITS` rows, the same ones for the same experiment."""
    if len(frame) <= MAX_EXPERIMENT_UNITS:
        return frame
    key = int.from_bytes(hashlib.sha256(experiment_id.encode()).digest()[:8], "little")
    rng = np.random.default_rng([SUBSAMPLE_SEED, key])
    rows = np.sort(rng.choice(len(frame), size=MAX_EXPERIMENT_UNITS, replace=False))
    return frame.iloc[rows].reset_index(drop=True)


def _period_index(ex: ExperimentEvidence, d: dict[str, Any]) -> int:
    periods = d.get("periods")
    if ex.period is None or periods is None:
        return -1
    names = [str(p) for p in np.asarray(periods)]
    return names.index(str(ex.period)) if str(ex.period) in names else -1


def _one_design(
    i: int, ex: ExperimentEvidence, df: pd.DataFrame, spec: TwinModelSpec, d: dict[str, Any]
) -> ExperimentDesign:
    types: tuple[str, ...] = tuple(d["types"])
    if ex.intervention_type not in types:
        raise InvalidInputError(
            f"experiment {ex.experiment_id!r} tested {ex.intervention_type!r}, which the "
            f"history has no treated row of; known types: {list(types)}",
            field=_field(i, "intervention_type"),
        )
    enc: FeatureEncoder = d["encoder"]
    frame = _population(i, ex, df, spec, enc)
    used = _subsample(frame, ex.experiment_id)
    try:
        x, z, seg = enc.encode(used)
    except ValueError as exc:
        raise InvalidInputError(
            f"experiment {ex.experiment_id!r}: {exc}", field=_field(i, "units")
        ) from None
    unit = np.full(len(used), -1, dtype=np.intp)
    if d["choices"].units:
        ids = np.asarray(d["unit_ids"])
        pos = np.searchsorted(ids, used["unit_id"].to_numpy(dtype=str))
        pos = np.minimum(pos, len(ids) - 1)
        found = ids[pos] == used["unit_id"].to_numpy(dtype=str)
        unit = np.where(found, pos, -1).astype(np.intp)
    levels, weights = zip(*ex.intensity_levels, strict=True)
    return ExperimentDesign(
        experiment_id=ex.experiment_id,
        k=types.index(ex.intervention_type),
        levels=np.asarray(levels, dtype=float),
        weights=np.asarray(weights, dtype=float),
        x=np.ascontiguousarray(x),
        z=np.ascontiguousarray(z),
        seg=seg,
        unit=unit,
        period=_period_index(ex, d),
        ate=float(ex.ate),
        se=float(ex.se),
        n_population=len(frame),
    )


def experiment_designs(
    experiments: Sequence[ExperimentEvidence],
    df: pd.DataFrame,
    spec: TwinModelSpec,
    d: dict[str, Any],
) -> list[ExperimentDesign]:
    """Check the experiments against the history and build their arrays.

    Parameters
    ----------
    experiments : sequence of ExperimentEvidence
        The real experiments (ids unique).
    df : DataFrame
        The validated history rows.
    spec : TwinModelSpec
        The spec fitted.
    d : dict
        The history's design (:func:`bayestwin.model.pymc_model.build_design`).

    Returns
    -------
    list of ExperimentDesign
        One per experiment, in order.

    Raises
    ------
    InvalidInputError
        Field ``experiments[i].<name>``: an intervention type the history has no
        treated row of, unit ids the history lacks with no rows for them, rows without
        the model's columns or with an unknown segment or level; field
        ``experiments`` for a repeated id or an entry that is not an experiment.
    """
    seen: set[str] = set()
    out = []
    for i, ex in enumerate(experiments):
        if not isinstance(ex, ExperimentEvidence):
            raise InvalidInputError(
                f"experiments[{i}] is a {type(ex).__name__}, not an ExperimentEvidence",
                field="experiments",
            )
        if ex.experiment_id in seen:
            raise InvalidInputError(
                f"experiment {ex.experiment_id!r} is given twice; each counts once",
                field="experiments",
            )
        seen.add(ex.experiment_id)
        out.append(_one_design(i, ex, df, spec, d))
    return out


def experiments_provenance(experiments: Sequence[ExperimentEvidence]) -> dict[str, Any]:
    """What a fitted model records of the experiments it used.

    Parameters
    ----------
    experiments : sequence of ExperimentEvidence
        The experiments of the fit (may be empty).

    Returns
    -------
    dict
        ``count``, ``ids`` (in order) and ``hash``: 16 hex digits of the experiments'
        JSON (None without experiments), so two fits on different evidence differ.
    """
    ids = [ex.experiment_id for ex in experiments]
    digest = None
    if experiments:
        payload = json.dumps([ex.model_dump(mode="json") for ex in experiments], sort_keys=True)
        digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return {"count": len(ids), "ids": ids, "hash": digest}


# -- the graph ---------------------------------------------------------------------------


def history_bias(pm: Any, pr: TwinPriors, coords: dict[str, list[str]]) -> Any:
    """The history's bias per intervention type, ``history_bias`` (link scale).

    ``bias[k] = mu_bias + sigma_bias * z_bias[k]``, ``z_bias`` zero-sum over the types;
    with one type ``bias = mu_bias`` (no ``sigma_bias``: a scale no data inform).
    ``mu_bias = bias_mean_sd * t``, ``t ~ StudentT(bias_df)``: a heavy-tailed prior
    centred at no bias (see :class:`~bayestwin.model.spec.TwinPriors`).
    """
    import pytensor.tensor as pt

    n_types = len(coords["intervention_type"])
    z_mu = pm.StudentT("z_mu_bias", nu=pr.bias_df, mu=0.0, sigma=1.0)
    mu = pm.Deterministic("mu_bias", pr.bias_mean_sd * z_mu)
    if n_types < 2:
        return pm.Deterministic("history_bias", mu * pt.ones(n_types), dims="intervention_type")
    # half-normal, not boundary-avoiding: a history may be biased alike for every type
    sigma = pm.HalfNormal("sigma_bias", pr.bias_type_sd)
    z = pm.ZeroSumNormal("z_bias", sigma=1.0, dims="intervention_type", n_zerosum_axes=1)
    return pm.Deterministic("history_bias", mu + sigma * z, dims="intervention_type")


def _var(model: Any, name: str) -> Any:
    return model.named_vars.get(name)


def _control_offset(model: Any, d: dict[str, Any], e: ExperimentDesign, family: str) -> Any:
    """Link-scale terms of each unit beyond segment and features (both arms)."""
    import pytensor.tensor as pt

    off: Any = pt.zeros(len(e.seg))
    if family == "gaussian":
        return off  # cancels in the difference
    time_effect = _var(model, "time_effect")
    if time_effect is not None and e.period >= 0:
        off = off + time_effect[e.period]
    known = np.flatnonzero(e.unit >= 0)
    if known.size:
        idx = e.unit[known]
        lam = _var(model, "lambda_unit")
        if lam is not None:
            off = pt.inc_subtensor(off[known], pt.dot(d["mundlak"][idx], lam))
        z_unit = _var(model, "z_unit")
        if z_unit is not None:
            off = pt.inc_subtensor(off[known], _var(model, "sigma_unit") * z_unit[idx])
    return off


def _mean(model: Any, eta: Any, e: ExperimentDesign, family: str) -> Any:
    """Each unit's mean outcome on the link's natural scale, its unit effect averaged."""
    import pytensor.tensor as pt

    sampled = _var(model, "z_unit") is not None
    new = np.flatnonzero(e.unit < 0)
    sigma_u = _var(model, "sigma_unit")
    if family == "bernoulli":
        mu = pt.sigmoid(eta)
        if sampled and new.size:
            nodes, w = np.polynomial.hermite_e.hermegauss(QUADRATURE_NODES)
            w = w / w.sum()
            quad = pt.dot(pt.sigmoid(eta[new][:, None] + sigma_u * nodes[None, :]), w)
            mu = pt.set_subtensor(mu[new], quad)
        return mu
    mu = pt.exp(eta)
    if sampled and new.size:  # normal unit effects: E exp(u) = exp(sigma_u^2 / 2)
        mu = pt.set_subtensor(mu[new], mu[new] * pt.exp(0.5 * sigma_u**2))
    return mu  # poisson, marginal: a gamma multiplier of mean 1


def _model_ate(
    model: Any, d: dict[str, Any], spec: TwinModelSpec, e: ExperimentDesign, params: Any
) -> Any:
    """The model's ATE of one experiment on the outcome scale (a scalar tensor)."""
    import pytensor.tensor as pt

    a, beta, tau = params
    rate = _var(model, "dose_rate")
    jump = _var(model, "dose_jump")
    gamma = _var(model, "gamma")
    het = tau[e.k, e.seg]
    if e.z.shape[1]:
        het = het + pt.dot(e.z, gamma[e.k])
    s = e.levels
    g = pt.expm1(-rate * s) / pt.expm1(-rate)
    if jump is not None:
        g = jump + (1.0 - jump) * g
    if spec.family == "gaussian":
        return d["outcome_scale"] * pt.dot(e.weights, g) * het.mean()
    eta_c = a[e.seg] + (pt.dot(e.x, beta) if e.x.shape[1] else 0.0)
    eta_c = eta_c + _control_offset(model, d, e, spec.family)
    control = _mean(model, eta_c, e, spec.family).mean()
    treated = sum(
        float(e.weights[j]) * _mean(model, eta_c + g[j] * het, e, spec.family).mean()
        for j in range(len(s))
    )
    return d["outcome_scale"] * (treated - control)


def experiment_likelihood(
    pm: Any, model: Any, d: dict[str, Any], spec: TwinModelSpec, a: Any, beta: Any, tau: Any
) -> None:
    """Add ``experiment_ate ~ Normal(ATE_e(theta), se_e)`` for the design's experiments.

    Call it inside the model's context, after the history's terms (it reads
    ``gamma``, ``dose_rate``, ``dose_jump`` and the panel terms from the model).

    Parameters
    ----------
    pm : module
        ``pymc``.
    model : pymc.Model
        The model being built.
    d : dict
        The design, with ``d["experiments"]`` (:func:`experiment_designs`).
    spec : TwinModelSpec
        Its family.
    a, beta, tau : tensor
        Segment intercepts, feature coefficients and the unbiased effects.
    """
    import pytensor.tensor as pt

    designs: list[ExperimentDesign] = d["experiments"]
    model.add_coord("experiment", [e.experiment_id for e in designs])
    ates = [_model_ate(model, d, spec, e, (a, beta, tau)) for e in designs]
    mu = pm.Deterministic("experiment_model_ate", pt.stack(ates), dims="experiment")
    pm.Normal(
        "experiment_ate",
        mu=mu,
        sigma=np.array([e.se for e in designs]),
        observed=np.array([e.ate for e in designs]),
        dims="experiment",
    )
