"""Fitting: a model spec and a history become a :class:`FittedTwinModel`.

:class:`TwinGenerator` checks the history (:mod:`bayestwin.model.history`), builds the
PyMC model (:mod:`bayestwin.model.pymc_model`), samples it with NUTS, gates the fit on
its diagnostics (:mod:`bayestwin.model.diagnostics`) and returns the posterior as
arrays with the population and the provenance (:mod:`bayestwin.model.io`). nutpie, the
default backend, is called directly with its compiled numba model; numpyro and PyMC's
own NUTS go through ``pm.sample``. :func:`fit_all` fits every (brand, twin type) of a
history. Real experiments given to :meth:`TwinGenerator.fit` join the likelihood
(:mod:`bayestwin.model.experiment_terms`).

Reproducibility: with the nutpie backend, a fit with a ``random_seed`` gives
bit-identical posterior draws for the same history and spec, on the same machine and
package versions, whatever the number of cores, the hash seed (``PYTHONHASHSEED``) and
whether pytensor's compile cache is empty or full (the log density is compiled without
fast-math, :data:`REPRODUCIBLE_FLAGS`). Other package versions or another CPU may give
other draws; ``random_seed=None`` draws a fresh seed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayestwin.core.posterior import FeatureEncoder, SegmentHyper, TwinPosterior
from bayestwin.errors import InvalidInputError
from bayestwin.model.diagnostics import compute_diagnostics
from bayestwin.model.experiment_terms import experiment_designs, experiments_provenance
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.model.history import check_history, latest_population
from bayestwin.model.io import provenance
from bayestwin.model.pymc_model import build_design, build_pymc_model
from bayestwin.model.spec import SamplerSettings, TwinModelSpec
from bayestwin.model.time_terms import season_ahead
from bayestwin.model.unit_posterior import unit_effects_from_trace
from bayestwin.schemas import ExperimentEvidence
from bayestwin.vocabulary import TwinType

__all__ = [
    "EXPERIMENTS_KEY",
    "LOW_RANK_MAX_DIM",
    "REPRODUCIBLE_FLAGS",
    "TwinGenerator",
    "fit_all",
    "nutpie_adaptation",
]

#: The provenance key of the real experiments a fit used (count, ids, hash). The
#: experiments are data, like the history (whose hash the provenance keeps too), so the
#: spec and its hash do not change: a saved model's spec must hash to its recorded hash.
EXPERIMENTS_KEY = "experiments"

#: pytensor settings in force while a model is compiled and sampled. With fast-math on
#: (pytensor's default), LLVM may reassociate and contract floating-point operations
#: differently in a function compiled from scratch and in the same function loaded
#: from pytensor's on-disk numba cache, where the pieces are linked without inlining:
#: the log density then differs in its last bits, and NUTS, a chaotic map, turns that
#: into different draws (the first fit after the cache was emptied disagreed with every
#: later fit of the same seed). Strict IEEE arithmetic gives one answer either way.
REPRODUCIBLE_FLAGS: dict[str, Any] = {"numba__fastmath": False}

#: The most free parameters for which ``adaptation="auto"`` picks nutpie's low-rank
#: mass matrix. On seven of the calibration session's random-assignment worlds
#: (2,000-6,000 units x 12 periods, gaussian and poisson, about 100 free parameters, the
#: unit effects integrated out), each fitted both ways at 2 x 500 draws, it cut the
#: leapfrog steps per draw from 33-50 to 16-24 and the fit time by 32-54%, and raised
#: the min bulk ESS per second on all seven (1.1x to 7.8x). With sampled unit effects
#: it lost: at 550 bernoulli units (about 650 parameters) and 482 negative binomial
#: units it took the same 31 steps per draw at twice the time per step, and at 4,002
#: bernoulli units 1.5x the time for a lower min ESS; the few corrected directions do
#: not pay for their cost per step over many weakly informed unit effects.
LOW_RANK_MAX_DIM = 300


class TwinGenerator:
    """Build and fit the hierarchical twin model of one (brand, twin type).

    Parameters
    ----------
    spec : TwinModelSpec
        What to fit. Nothing is sampled until :meth:`fit`.
    """

    def __init__(self, spec: TwinModelSpec) -> None:
        self.spec = spec

    def build_model(
        self, history: pd.DataFrame, *, experiments: Sequence[ExperimentEvidence] = ()
    ) -> Any:
        """Return the PyMC model for ``history`` (validated), without sampling.

        Parameters
        ----------
        history : DataFrame
            One row per unit and period; see :class:`TwinModelSpec`.
        experiments : sequence of ExperimentEvidence
            Real experiments, as in :meth:`fit`.

        Returns
        -------
        pymc.Model
            The model.
        """
        df = check_history(history, self.spec)
        return build_pymc_model(self._design(df, experiments), self.spec)

    def _design(
        self, df: pd.DataFrame, experiments: Sequence[ExperimentEvidence]
    ) -> dict[str, Any]:
        """The history's design, with the experiments' arrays when there are any."""
        d = build_design(df, self.spec)
        if isinstance(experiments, ExperimentEvidence) or not isinstance(experiments, Sequence):
            raise InvalidInputError(
                "experiments must be a sequence of ExperimentEvidence", field="experiments"
            )
        if experiments:
            d["experiments"] = experiment_designs(experiments, df, self.spec, d)
        return d

    def fit(
        self,
        history: pd.DataFrame,
        *,
        experiments: Sequence[ExperimentEvidence] = (),
        override_diagnostics: bool = False,
        keep_trace: bool = True,
    ) -> FittedTwinModel:
        """Validate the history, sample the posterior and return the fitted model.

        Parameters
        ----------
        history : DataFrame
            One row per unit and period (see :class:`TwinModelSpec` for the columns).
        experiments : sequence of ExperimentEvidence
            Real experiments of this brand and twin type: each adds an observation of
            the model's ATE over its population, and the history gets its own bias
            term (:mod:`bayestwin.model.experiment_terms`). Empty (the default): the
            model is exactly the history's. The fitted model's provenance records
            them under ``"experiments"`` (count, ids, hash).
        override_diagnostics : bool
            Let the model serve even if it fails the diagnostics gate.
        keep_trace : bool
            Keep the full ``DataTree`` on the fitted model (needed for MLflow artifacts
            and ArviZ plots).

        Returns
        -------
        FittedTwinModel
            Posterior arrays, population, diagnostics and provenance.

        Raises
        ------
        InvalidInputError
            Code ``"invalid_history"`` if the history cannot be fitted; field
            ``experiments[i].<name>`` if an experiment does not fit the history
            (:func:`~bayestwin.model.experiment_terms.experiment_designs`).
        """
        spec = self.spec
        df = check_history(history, spec)
        d = self._design(df, experiments)
        model = build_pymc_model(d, spec)
        t0 = time.perf_counter()
        trace = _sample(model, spec.sampler)
        fit_seconds = time.perf_counter() - t0
        return FittedTwinModel(
            brand=spec.brand,
            twin_type=spec.twin_type,
            posterior=_posterior_arrays(trace, d, spec.family),
            population=latest_population(df, spec),
            diagnostics=compute_diagnostics(trace, spec.thresholds),
            spec_hash=spec.spec_hash(),
            spec=spec.model_dump(mode="json"),
            provenance={
                **provenance(
                    df,
                    spec.sampler,
                    fit_seconds=fit_seconds,
                    n_rows=d["n_rows"],
                    n_likelihood_rows=len(d["total"]),
                ),
                EXPERIMENTS_KEY: experiments_provenance(experiments),
            },
            trace=trace if keep_trace else None,
            override_diagnostics=override_diagnostics,
            max_intensity=float(df[spec.intensity_column].max()),
        )


def _sample(model: Any, smp: SamplerSettings) -> Any:
    """Run NUTS with the chosen backend and return the ``DataTree``.

    The log density is compiled with strict IEEE arithmetic (pytensor's
    ``numba__fastmath`` off), so that a seeded fit gives the same draws whether its
    functions were compiled now or loaded from pytensor's on-disk cache (see
    :data:`REPRODUCIBLE_FLAGS`).
    """
    import pytensor

    with pytensor.config.change_flags(**REPRODUCIBLE_FLAGS):
        return _sample_with(model, smp)


def nutpie_adaptation(n_dim: int, smp: SamplerSettings) -> str:
    """Choose the nutpie mass-matrix adaptation for a model of ``n_dim`` free parameters.

    Parameters
    ----------
    n_dim : int
        Free (unconstrained) parameters of the compiled model.
    smp : SamplerSettings
        Its ``adaptation`` decides unless it is ``"auto"``, which picks ``"low_rank"``
        up to :data:`LOW_RANK_MAX_DIM` parameters and ``"diag"`` above.

    Returns
    -------
    str
        ``"low_rank"`` or ``"diag"``.
    """
    if smp.adaptation != "auto":
        return smp.adaptation
    return "low_rank" if n_dim <= LOW_RANK_MAX_DIM else "diag"


def _sample_with(model: Any, smp: SamplerSettings) -> Any:
    if smp.backend == "nutpie":
        import nutpie

        compiled = nutpie.compile_pymc_model(model)
        return nutpie.sample(
            compiled,
            adaptation=nutpie_adaptation(int(compiled.n_dim), smp),
            draws=smp.draws,
            tune=smp.tune,
            chains=smp.chains,
            cores=min(smp.cores, smp.chains),
            seed=smp.random_seed,
            progress_bar=smp.progressbar,
            save_warmup=False,
            target_accept=smp.target_accept,
        )
    import pymc as pm

    with model:
        return pm.sample(
            draws=smp.draws,
            tune=smp.tune,
            chains=smp.chains,
            cores=smp.cores,
            target_accept=smp.target_accept,
            random_seed=smp.random_seed,
            progressbar=smp.progressbar,
            compute_convergence_checks=False,
            nuts_sampler=smp.backend,
        )


def _flat(post: Any, name: str) -> np.ndarray:
    arr = post[name].values
    return np.ascontiguousarray(arr.reshape(-1, *arr.shape[2:]), dtype=np.float64)


def _posterior_arrays(trace: Any, d: dict[str, Any], family: str) -> TwinPosterior:
    """The posterior draws as arrays (chains flattened), with the design's encoder."""
    post = trace["posterior"].to_dataset()
    n = int(post.sizes["chain"] * post.sizes["draw"])
    enc: FeatureEncoder = d["encoder"]
    beta = _flat(post, "beta") if enc.columns else np.zeros((n, 0))
    gamma = _flat(post, "gamma") if enc.numeric else np.zeros((n, len(d["types"]), 0))
    disp = _flat(post, "dispersion") if "dispersion" in post else None
    optional = (
        "dose_jump", "sigma_time", "time_drift", "sigma_unit", "lambda_unit", "time_effect",
        "z_unit",
    )  # fmt: skip
    extra = {name: _flat(post, name) for name in optional if name in post}
    units = None
    if d["choices"].units:
        tau_history = _flat(post, "tau")
        if "history_bias" in post:  # the history's rows saw tau + bias
            tau_history = tau_history + _flat(post, "history_bias")[:, :, None]
        arrays = {
            "a": _flat(post, "a"),
            "beta": beta,
            "tau": tau_history,
            "gamma": gamma,
            "dose_rate": _flat(post, "dose_rate"),
            **extra,
        }
        if disp is not None:
            arrays["dispersion"] = disp
        units = unit_effects_from_trace(arrays, d, family)
    return TwinPosterior(
        family=family,  # type: ignore[arg-type]
        encoder=enc,
        intervention_types=tuple(d["types"]),
        intercept=_flat(post, "a"),
        beta=beta,
        tau=_flat(post, "tau"),
        gamma=gamma,
        dose_rate=_flat(post, "dose_rate"),
        dispersion=disp,
        outcome_loc=d["outcome_loc"],
        outcome_scale=d["outcome_scale"],
        dose_jump=extra.get("dose_jump"),
        unit_effects=units,
        time_scale=extra.get("sigma_time"),
        time_drift=extra.get("time_drift"),
        season_ahead=season_ahead(
            _flat(post, "season"), d["season_position"][-1], d["season_ahead_position"]
        )
        if "season" in post
        else None,
        segment_hyper=_segment_hyper(post, n, len(d["types"])),
    )


def _segment_hyper(post: Any, n: int, n_types: int) -> SegmentHyper:
    """The segment terms' population distribution (scales 0 for one segment)."""
    zeros = np.zeros(n)
    mu_tau = _flat(post, "mu_tau")
    return SegmentHyper(
        intercept_mean=_flat(post, "mu_a"),
        intercept_sd=_flat(post, "sigma_a") if "sigma_a" in post else zeros,
        tau_type=_flat(post, "tau_type")
        if "tau_type" in post
        else np.repeat(mu_tau[:, None], n_types, axis=1),
        tau_sd=_flat(post, "sigma_seg") if "sigma_seg" in post else zeros,
    )


def fit_all(
    history: pd.DataFrame,
    specs: Iterable[TwinModelSpec] | None = None,
    *,
    base: TwinModelSpec | None = None,
    **fit_kwargs: Any,
) -> dict[tuple[str, TwinType], FittedTwinModel]:
    """Fit one model per (brand, twin type) found in ``history``.

    Parameters
    ----------
    history : DataFrame
        History with ``brand`` and ``twin_type`` columns (names from the spec).
    specs : iterable of TwinModelSpec, optional
        Explicit specs; when omitted, ``base`` is copied for every combination found.
    base : TwinModelSpec, optional
        Template whose ``brand`` and ``twin_type`` are replaced per combination.
    **fit_kwargs
        Passed to :meth:`TwinGenerator.fit`.

    Returns
    -------
    dict
        ``{(brand, twin_type): FittedTwinModel}``.

    Raises
    ------
    InvalidInputError
        If neither ``specs`` nor ``base`` is given, or ``base`` names no twin type column.
    """
    if specs is None:
        if base is None:
            raise InvalidInputError(
                "give specs, or a base spec to copy per (brand, twin type)", field="specs"
            )
        if base.twin_type_column is None:
            raise InvalidInputError(
                "base.twin_type_column is needed to find the twin types",
                field="base.twin_type_column",
            )
        combos = (
            history[[base.brand_column, base.twin_type_column]]
            .astype(str)
            .drop_duplicates()
            .itertuples(index=False, name=None)
        )
        specs = [
            base.model_copy(update={"brand": b, "twin_type": TwinType(t)})
            for b, t in sorted(combos)
        ]
    return {(s.brand, s.twin_type): TwinGenerator(s).fit(history, **fit_kwargs) for s in specs}
