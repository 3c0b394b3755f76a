"""The model layer: fitting the hierarchical twin model and the fitted model it yields.

Import rule: this package is the only place that imports PyMC, pytensor, nutpie,
numpyro (and JAX); it imports the core, the errors and the vocabulary, never the
settings, the store, the service or the faces. The samplers are imported inside the
functions that need them, and :mod:`bayestwin.model.fitted` stays light (no sampler at
all), so everything downstream of fitting works without them. This ``__init__`` imports
nothing; import from the submodules:

* :mod:`~bayestwin.model.spec`: ``TwinModelSpec``, ``TwinPriors``, ``SamplerSettings``,
  ``DiagnosticThresholds``, ``default_spec``;
* :mod:`~bayestwin.model.history`: ``check_history``, ``collapse_history``;
* :mod:`~bayestwin.model.pymc_model`: the PyMC graph and its parameterisation, with
  :mod:`~bayestwin.model.centring` (centred or non-centred, level by level) and
  :mod:`~bayestwin.model.panel_terms` (unit and period effects);
* :mod:`~bayestwin.model.fit`: ``TwinGenerator``, ``fit_all``;
* :mod:`~bayestwin.model.diagnostics`: ``compute_diagnostics``;
* :mod:`~bayestwin.model.fitted`: ``FittedTwinModel``, ``Diagnostics``;
* :mod:`~bayestwin.model.io`: ``save_model``, ``load_model``, ``MODEL_FORMAT_VERSION``,
  ``package_versions``;
* :mod:`~bayestwin.model.pointwise` and :mod:`~bayestwin.model.comparison`: each unit's
  integrated log likelihood, and ``compare_panel_terms`` / ``with_comparison``
  (PSIS-LOO over units against the model without panel terms).
"""
