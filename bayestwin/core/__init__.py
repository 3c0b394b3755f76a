"""The core layer: the statistics of digital twins on plain NumPy arrays.

Import rule: this package imports NumPy, SciPy, pandas and arviz-stats' array
functions, and from bayestwin only the shared kernel (:mod:`bayestwin.errors`,
:mod:`bayestwin.vocabulary`) and :mod:`bayestwin.schemas`. It imports no sampler
(PyMC, pytensor, nutpie, numpyro, JAX), no settings, no store, no engine, service or
face: every threshold is an argument. This ``__init__`` imports nothing; import from
the submodules:

* :mod:`~bayestwin.core.families`: outcome families and their links;
* :mod:`~bayestwin.core.posterior`: ``TwinPosterior``, ``FeatureEncoder``,
  ``dose_response_draws``;
* :mod:`~bayestwin.core.population`: ``eligible_mask``, ``draw_twins``, ``TwinSample``;
* :mod:`~bayestwin.core.effects` (with :mod:`~bayestwin.core.effects_chunks`):
  ``effect_draws``, ``EffectDraws``, ``EncodedUnits``;
* :mod:`~bayestwin.core.effects_summary`: ``summarise_effects``, ``default_dose_grid``;
* :mod:`~bayestwin.core.decision`: ``Decision``, ``DecisionRule``, ``decide``;
* :mod:`~bayestwin.core.intervals`: ``INTERVAL_LEVELS``, ``equal_tailed_interval``,
  ``z_two_sided``;
* :mod:`~bayestwin.core.power` and :mod:`~bayestwin.core.sample_size`: power,
  assurance, outcome variances and the real test's sample size;
* :mod:`~bayestwin.core.predictive`, :mod:`~bayestwin.core.outcomes`,
  :mod:`~bayestwin.core.grading`, :mod:`~bayestwin.core.calibration`: the
  observed-experiment predictive, real outcomes, grades and calibration statistics;
* :mod:`~bayestwin.core.rehearsal` and :mod:`~bayestwin.core.comparison`: the plain
  records of a fit's rehearsal and of its model comparison.
"""
