"""Persistence of twin models, simulations and fidelity checks.

Import rule: this package knows SQL and the pydantic schemas of
:mod:`bayestwin.schemas`; it imports nothing from the math modules (generator,
simulation, power, fidelity) nor from the faces (tools, api, cli).

* :mod:`bayestwin.store.tables`: the SQLAlchemy mirror of
  ``migrations/011_digital_twin_tables.sql``.
* :mod:`bayestwin.store.db`: engines, sessions and :func:`upgrade`.
* :mod:`bayestwin.store.repository`: :class:`TwinRepository`, the service layer that
  owns transactions and returns pydantic objects.
"""

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

__all__ = [
    "AlreadyExistsError",
    "InvalidStateError",
    "NoActiveModelError",
    "NotFoundError",
    "Page",
    "SimilarSimulation",
    "SimulationRun",
    "StoreError",
    "TwinRepository",
    "config_distance",
    "database_url",
    "make_engine",
    "request_hash",
    "session_factory",
    "temporary_database",
    "upgrade",
]
