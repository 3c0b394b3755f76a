"""Fitting a calibration world, long enough to pass the diagnostics gate.

A calibration run samples short chains (2 x 500 draws) to cover many worlds, and fits
that short miss the gate's effective sample sizes, so their coverage would not be that
of fits the package serves. With ``RunSettings.gate_draws`` set, a fit that misses the
gate only on ESS or r_hat is sampled again, once, with as many draws as its own ESS per
draw says the gate needs, with a margin: ESS grows in proportion to the draws of a
chain that has mixed, so ``draws * threshold / ess`` reaches the threshold in
expectation, and ``GATE_MARGIN`` covers the spread of the ESS estimate. A fit that
diverged, or whose energy BFMI is low, is not sampled again: more draws of a sampler
that cannot explore the posterior do not mend it.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from bayestwin.calibration.loop import draw_experiments

if TYPE_CHECKING:
    import pandas as pd

    from bayestwin.calibration.worlds import RunSettings, WorldConfig
    from bayestwin.model.fitted import Diagnostics, FittedTwinModel
    from bayestwin.model.spec import DiagnosticThresholds
    from bayestwin.synthetic import SyntheticTwinData

__all__ = ["GATE_MARGIN", "fit_world", "gate_draws_needed"]

#: Factor on the draws the first fit's ESS per draw asks for. The bulk-ESS estimate of
#: 1,000 draws has a relative sd of roughly 10-20% on these models; 1.3 puts the
#: expected ESS of the refit about two of those sds above the threshold.
GATE_MARGIN = 1.3


def gate_draws_needed(
    diagnostics: Diagnostics,
    thresholds: DiagnosticThresholds,
    draws: int,
    cap: int,
) -> int | None:
    """Draws per chain a refit needs to pass the gate, or None when none would help.

    Parameters
    ----------
    diagnostics : Diagnostics
        The first fit's diagnostics.
    thresholds : DiagnosticThresholds
        The gate.
    draws : int
        Draws per chain of the first fit.
    cap : int
        Most draws per chain of the refit; 0 or ``cap <= draws`` never refits.

    Returns
    -------
    int or None
        ``ceil(GATE_MARGIN * draws * max(threshold / ess))`` over bulk and tail ESS,
        at least ``draws + 1`` and at most ``cap``; None when the fit passed, when
        ``cap`` allows no more draws, or when it failed on divergences or BFMI.
    """
    if diagnostics.passed or cap <= draws:
        return None
    if diagnostics.divergences > thresholds.max_divergences:
        return None
    if not diagnostics.min_bfmi >= thresholds.min_bfmi:
        return None
    ratios = [
        threshold / max(ess, 1.0)
        for threshold, ess in (
            (thresholds.min_ess_bulk, diagnostics.min_ess_bulk),
            (thresholds.min_ess_tail, diagnostics.min_ess_tail),
        )
        if math.isfinite(ess)
    ]
    # r_hat alone missing: the chains disagree, and twice the draws is the usual remedy
    factor = max([*ratios, 2.0 if diagnostics.max_r_hat > thresholds.max_r_hat else 0.0])
    wanted = math.ceil(GATE_MARGIN * draws * factor)
    return min(cap, max(wanted, draws + 1))


def _season_length(history: pd.DataFrame, season_length: int) -> int | None:
    """The run's season length for a history with more periods than it, else None."""
    if season_length < 2 or "period" not in history:
        return None
    return season_length if history["period"].nunique() > season_length else None


def fit_world(
    config: WorldConfig,
    run: RunSettings,
    sd: SyntheticTwinData,
    numeric: list[str],
    world: dict[str, Any],
    brand: str,
) -> FittedTwinModel:
    """Fit the twin model on a world's history (diagnostics recorded, not enforced).

    A world with ``experiments > 0`` first runs them on its truth and gives them to
    the fit (:func:`bayestwin.calibration.loop.draw_experiments`). A fit that misses
    the gate is sampled once more when :func:`gate_draws_needed` says more draws would
    pass it (``run.gate_draws``); the second fit is the one kept.

    Parameters
    ----------
    config : WorldConfig
        The world.
    run : RunSettings
        Sampler settings (and the refit's cap, ``gate_draws``).
    sd : SyntheticTwinData
        The world's history and truth.
    numeric : list of str
        Numeric features the model sees.
    world : dict
        The world's record, updated with the fit's facts: seconds (both fits),
        attempts, draws per chain used, the first fit's min bulk ESS and the kept
        fit's diagnostics.
    brand : str
        Brand of the history.

    Returns
    -------
    FittedTwinModel
        The kept fit.
    """
    from bayestwin.model.fit import TwinGenerator
    from bayestwin.model.spec import default_spec

    spec = default_spec(
        config.twin_type,
        brand,
        family=config.family,  # type: ignore[arg-type]
        numeric_features=numeric,
        categorical_features=sd.categorical_features,
        sampler=run.sampler(config.seed),
        season_length=_season_length(sd.data, run.season_length),
    )
    experiments = draw_experiments(config, run, sd, brand) if config.experiments else []
    t_fit = time.perf_counter()

    def fit(draws: int) -> FittedTwinModel:
        sampler = spec.sampler.model_copy(update={"draws": draws})
        return TwinGenerator(spec.model_copy(update={"sampler": sampler})).fit(
            sd.data, experiments=experiments, keep_trace=False, override_diagnostics=True
        )

    model = fit(run.draws)
    first = model.diagnostics
    more = gate_draws_needed(first, spec.thresholds, run.draws, run.gate_draws)
    if more is not None:
        model = fit(more)
    diag = model.diagnostics
    world.update(
        experiments_used=len(experiments),
        experiment_types=",".join(e.intervention_type for e in experiments),
        experiment_ses=",".join(f"{e.se:.6g}" for e in experiments),
        fit_seconds=time.perf_counter() - t_fit,
        fit_attempts=1 if more is None else 2,
        draws_used=run.draws if more is None else more,
        first_min_ess_bulk=first.min_ess_bulk,
        diagnostics_passed=diag.passed,
        max_r_hat=diag.max_r_hat,
        min_ess_bulk=diag.min_ess_bulk,
        divergences=diag.divergences,
    )
    return model
