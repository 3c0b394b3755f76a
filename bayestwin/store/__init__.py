"""Persistence of twin models, simulations and fidelity checks.

Import rule: this package knows SQL and the pydantic schemas of
:mod:`bayestwin.schemas`; it imports nothing from the math modules (generator,
simulation, power, fidelity) nor from the faces (tools, api, cli).

* :mod:`bayestwin.store.tables`: the SQLAlchemy mirror of
  ``migrations/011_digital_twin_tables.sql``.
* :mod:`bayestwin.store.db`: engines, sessions and :func:`upgrade`.
* :mod:`bayestwin.store.repository`: :class:`TwinRepository`, the service layer that
  owns transactions and returns pydantic objects.
* :mod:`bayestwin.store.mlflow.registry`: MLflow runs, registered model versions and aliases.
  The one exception to the import rule: it saves and loads the model directory of
  :mod:`bayestwin.model.fit`. Its names are exported here but imported on first use,
  so that ``import bayestwin.store`` does not import MLflow.
"""

from typing import TYPE_CHECKING, Any

from bayestwin.store.db import (
    database_url,
    make_engine,
    session_factory,
    temporary_database,
    upgrade,
)
from bayestwin.store.repository import (
    AlreadyExistsError,
    InvalidStateError,
    NoActiveModelError,
    NotFoundError,
    Page,
    SimilarSimulation,
    SimulationRun,
    StoreError,
    TwinRepository,
    config_distance,
    request_hash,
)

if TYPE_CHECKING:
    from bayestwin.store.mlflow.registry import (
        RegisteredTwin,
        load_fitted,
        load_pyfunc,
        log_fidelity,
        log_fit,
        model_info_from,
        registered_model_name,
        set_active,
    )

_REGISTRY_NAMES = frozenset(
    {
        "RegisteredTwin",
        "load_fitted",
        "load_pyfunc",
        "log_fidelity",
        "log_fit",
        "model_info_from",
        "registered_model_name",
        "set_active",
    }
)


def __getattr__(name: str) -> Any:
    """Import the MLflow registry's names on first use."""
    if name in _REGISTRY_NAMES:
        from bayestwin.store.mlflow import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AlreadyExistsError",
    "InvalidStateError",
    "NoActiveModelError",
    "NotFoundError",
    "Page",
    "RegisteredTwin",
    "SimilarSimulation",
    "SimulationRun",
    "StoreError",
    "TwinRepository",
    "config_distance",
    "database_url",
    "load_fitted",
    "load_pyfunc",
    "log_fidelity",
    "log_fit",
    "make_engine",
    "model_info_from",
    "registered_model_name",
    "request_hash",
    "session_factory",
    "set_active",
    "temporary_database",
    "upgrade",
]
