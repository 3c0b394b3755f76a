"""Calibration on synthetic worlds: does the twin model recover known effects.

A *world* is one synthetic history drawn by
:func:`bayestwin.synthetic.generate_synthetic_twin_data` with its own seed, twin type,
outcome family, true effects, segment sizes, intervention-type frequencies and
assignment. In each world (:func:`run_world`):

1. fit the twin model (:class:`bayestwin.model.fit.TwinGenerator`);
2. for every intervention type, simulate it at intensity 1 on twins drawn from the
   brand's population (:class:`bayestwin.engine.simulation.SimulationEngine`; one seed, so
   every type and every method sees the same twins);
3. compute the true ATE of *those same twins* from the ground truth
   (``truth.ate(twins, k, 1.0)``), overall and per segment;
4. estimate the same ATEs with the baselines (below) on the same history and twins.

:func:`summarize` turns the records of many worlds into the report: coverage of the
50%, 80% and 95% equal-tailed intervals of the population ATE (computed from the
simulation's ``ate_draws``) with Wilson intervals; relative and absolute errors;
decision quality; the power of the recommended sample size against the true effect;
simulation-based calibration ranks; the baselines side by side; and breakdowns by
size of the true lift, intervention-type frequency and segment size.

**Assignment**, reported apart: ``random``; ``confounded_observed``, where units with a
high untreated mean are treated more often and that mean is a function of features
every method sees (so ignorability holds given the features, and the model should
adjust for it); ``confounded_hidden``, the same with the numeric feature that moves the
baseline most withheld from every method (ignorability fails: the realistic threat).
The acceptance numbers use the random worlds.

The rules, in one place
-----------------------

**Primary target.** Each world names one intervention type at random as its primary
target; the acceptance numbers use one interval per world (independent across worlds).
Tables "over all types" pool every (world, type) pair (dependent within a world).

**Relative error** is fidelity's rule (:func:`bayestwin.core.grading.prediction_error`)::

    |estimate - true ATE| / max(|true ATE|, min_effect_threshold * |true control mean|)

so near a zero effect the error is measured in units of the smallest lift worth acting
on (5% of the control mean by default). The point estimate of the twin model is the
simulation's ``simulated_ate`` (posterior median). **Absolute error** is reported in
lift points: ``|estimate - true ATE| / |true control mean|``.

**Decision quality.** The true lift is ``true ATE / true control mean``. "False deploy"
is the share of deploy recommendations among (world, target) pairs whose true lift is
below ``min_effect_threshold``; "false skip" the share of skips among those whose true
lift reaches it. The engine's recommendation also refines when the needed sample
exceeds the eligible population; the *threshold rule* (``decide`` on
``P(lift > threshold)`` alone) is what the baselines are compared with. A baseline's
``P(lift > threshold)`` is the normal approximation
``Phi((ate - threshold * |control mean|) / se)``.

**Sample-size adequacy.** For every deploy, the power of the recommended ``n`` per arm
(classic, assurance and twin-covariate-adjusted) to detect the *true* effect, computed
with :func:`bayestwin.core.power.directional_power` and the true total outcome variances of
the twins (for the covariate-adjusted ``n``, the variance times ``1 - rho**2`` with the
true prognostic ``rho**2``). The target is ``power_target`` (0.8).

**Simulation-based calibration, reduced** (Talts et al. 2018). In the ``prior`` worlds
the effect parameters are drawn from the model's prior (:func:`prior_effects`):
``mu_tau ~ Normal(0, effect_mean_sd)``, ``sigma_type`` and ``sigma_seg`` from their
``Gamma(2, 2 / scale)`` priors, zero-sum type deviations, ``gamma ~ Normal(0,
interaction_sd)`` on every numeric feature and ``log(dose rate) ~ Normal(0,
dose_log_rate_sd)``. The rank of the true ATE among ``L = 99`` posterior draws thinned
evenly from the ``ate_draws`` is then uniform on ``{0, ..., L}`` when the posterior is
calibrated; :func:`rank_uniformity` tests it with a chi-square test on 10 equal bins
and a Kolmogorov-Smirnov test on ``(rank + 0.5) / (L + 1)``. The simplifications:
only the effect parameters come from the prior; the intercepts, coefficients, feature
distribution and assignment come from the generator's own distributions (narrower than
the prior and well identified by the data); the generator's segment deviations are iid
rather than zero-sum (so each type mean carries an extra ``Normal(0, sigma_seg**2 /
S)`` term); the generator standardises interacting features with its own location and
scale, the model with the sample's. Only bernoulli, poisson and negative binomial worlds
take part (the gaussian model's effects live on a standardised scale the generator does
not share). Ranks of all intervention types of a world are pooled.

**Baselines** (:mod:`bayestwin.calibration.baselines`): a no-pooling GLM, a
complete-pooling GLM, the naive difference in means and, when econml is installed,
EconML's ``LinearDML``, each on the same history and twins; their intervals are normal.

Layout: :mod:`~bayestwin.calibration.stats` (interval hits, Wilson coverage, SBC ranks;
NumPy and SciPy only), :mod:`~bayestwin.calibration.baselines` (with their GLM,
:mod:`~bayestwin.calibration.glm`),
:mod:`~bayestwin.calibration.worlds` (the world configurations and the run's settings),
:mod:`~bayestwin.calibration.kinds` (world kinds: the model's own structure beside the
panel processes it does not assume, reported per kind),
:mod:`~bayestwin.calibration.run` (one world, many in parallel),
:mod:`~bayestwin.calibration.pool` (worker processes that end with their parent),
:mod:`~bayestwin.calibration.records` (the records of one world),
:mod:`~bayestwin.calibration.summary`, :mod:`~bayestwin.calibration.markdown`,
:mod:`~bayestwin.calibration.plots` and :mod:`~bayestwin.calibration.report` (JSON, CSVs
and everything on disk). Run the whole thing with ``python -m benchmarks.calibration``
(``nox -s calibration``).

Import rule: this package sits above the engine, the model and the core (it fits,
simulates and compares with :mod:`bayestwin.synthetic`) and reads the settings' default
thresholds; nothing below imports it, and it imports no store, service or face.
"""

from __future__ import annotations

from bayestwin.calibration.baselines import (
    BaselineEstimate,
    UnitData,
    complete_pooling_glm,
    linear_dml,
    naive_difference,
    no_pooling_glm,
    unit_data,
)
from bayestwin.calibration.glm import GlmFit, fit_glm
from bayestwin.calibration.kinds import KIND_LABELS, WORLD_KINDS, draw_kind_configs, parse_kinds
from bayestwin.calibration.markdown import to_markdown
from bayestwin.calibration.plots import write_plots
from bayestwin.calibration.report import read_run, write_report
from bayestwin.calibration.run import CalibrationRun, run_calibration, run_world
from bayestwin.calibration.stats import (
    coverage_summary,
    interval_hits,
    normal_hits,
    rank_uniformity,
    sbc_rank,
)
from bayestwin.calibration.summary import (
    COVERAGE_TARGETS,
    MEDIAN_ERROR_TARGET,
    METHODS,
    by_kind,
    by_type_count,
    summarize,
)
from bayestwin.calibration.worlds import (
    RunSettings,
    WorldConfig,
    draw_world_configs,
    prior_effects,
)

__all__ = [
    "COVERAGE_TARGETS",
    "KIND_LABELS",
    "MEDIAN_ERROR_TARGET",
    "METHODS",
    "WORLD_KINDS",
    "BaselineEstimate",
    "CalibrationRun",
    "GlmFit",
    "RunSettings",
    "UnitData",
    "WorldConfig",
    "by_kind",
    "by_type_count",
    "complete_pooling_glm",
    "coverage_summary",
    "draw_kind_configs",
    "draw_world_configs",
    "fit_glm",
    "interval_hits",
    "linear_dml",
    "naive_difference",
    "no_pooling_glm",
    "normal_hits",
    "parse_kinds",
    "prior_effects",
    "rank_uniformity",
    "read_run",
    "run_calibration",
    "run_world",
    "sbc_rank",
    "summarize",
    "to_markdown",
    "unit_data",
    "write_plots",
    "write_report",
]
