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
