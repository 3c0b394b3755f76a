"""Persistence of twin models, simulations and fidelity checks: SQL and MLflow.

Import rule: this package knows SQL (SQLAlchemy), MLflow, the settings and the pydantic
schemas of :mod:`bayestwin.schemas`. For model artifacts it imports
:mod:`bayestwin.model.io` (save and load) and :mod:`bayestwin.model.fitted`, and for the
pyfunc's predictions :mod:`bayestwin.engine.outcomes`; never the fitter
(:mod:`bayestwin.model.fit`), the service or the faces (cli, api, tools, agents).

Import from the submodules; this package exports nothing itself.

* :mod:`bayestwin.store.tables`: the SQLAlchemy mirror of the SQL migrations.
* :mod:`bayestwin.store.db`: engines and sessions.
* :mod:`bayestwin.store.migrations`: versioned migrations and their version table.
* :mod:`bayestwin.store.repository`: :class:`~bayestwin.store.repository.TwinRepository`,
  which owns transactions and returns pydantic objects.
* :mod:`bayestwin.store.mlflow`: MLflow runs, registered model versions and aliases.
"""
