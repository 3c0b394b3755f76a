"""The engine layer: the core's statistics applied to a fitted twin model.

Import rule: this package imports the core, :mod:`bayestwin.model.fitted` (the fitted
model, no sampler), the schemas and the shared kernel. It never reads the settings
(thresholds and limits are constructor or call arguments, passed by the service) and
imports no sampler, no store, no service and no face. This ``__init__`` imports
nothing; import from the submodules:

* :mod:`~bayestwin.engine.simulation`: ``SimulationEngine``, ``EngineSettings``;
* :mod:`~bayestwin.engine.requests`: ``check_request``, the one check of a simulation
  request against its model;
* :mod:`~bayestwin.engine.fidelity`: ``FidelityTracker``, ``FidelitySummary``;
* :mod:`~bayestwin.engine.outcomes`: ``predict_expected_outcomes``.
"""
