"""The twin repository: models, simulations, fidelity checks and memory, as pydantic.

:class:`TwinRepository` is the service layer over the tables of
:mod:`bayestwin.store.tables`. Every public method is one transaction: it opens a
session, does its work, converts the ORM rows to pydantic objects
(:class:`~bayestwin.schemas.TwinModelInfo`, :class:`~bayestwin.schemas.SimulationResult`,
:class:`~bayestwin.schemas.FidelityResult`) and commits before it returns. No ORM object
leaves the package.

It is assembled from one part per job:

* :mod:`~bayestwin.store.repository.models`: register, list and activate models;
* :mod:`~bayestwin.store.repository.simulations`: a simulation's row, from pending to
  completed or failed;
* :mod:`~bayestwin.store.repository.workers`: which live worker owns an unfinished
  simulation, and the rows no live worker owns;
* :mod:`~bayestwin.store.repository.validations`: fidelity checks (one per simulation)
  and a model's history;
* :mod:`~bayestwin.store.repository.memory`: the episodic and procedural memory, with
  the request key and distance of :mod:`~bayestwin.store.repository.matching`.

Errors are those of :mod:`bayestwin.errors`: a missing row is a ``NotFoundError`` (code
``not_found``, or ``no_active_model``); a duplicate a ``ConflictError`` with code
``already_exists``; a step that does not fit the row's state a ``ConflictError`` with
code ``invalid_state``; a bad argument an ``InvalidInputError``. A value the database
itself refuses (a NUL character, a string longer than its column, a duplicate key) is
mapped to these types by :mod:`~bayestwin.store.repository.dberrors`: the message names
the field and never holds the SQL statement or its parameters.
"""

from __future__ import annotations

from bayestwin.store.repository.memory import MemoryRecords
from bayestwin.store.repository.models import ModelRecords
from bayestwin.store.repository.simulations import SimulationRecords
from bayestwin.store.repository.validations import ValidationRecords
from bayestwin.store.repository.workers import WorkerRecords

__all__ = ["TwinRepository"]


class TwinRepository(
    ModelRecords, SimulationRecords, WorkerRecords, ValidationRecords, MemoryRecords
):
    """Persistence of twin models, simulations and fidelity checks.

    Parameters
    ----------
    engine : Engine, str or URL, optional
        An engine, or a URL to build one with :func:`bayestwin.store.db.make_engine`.
        Defaults to the settings' database (``BAYESTWIN_DATABASE_URL``, else a SQLite
        file in the data directory).
    ensure_schema : bool
        Apply the migrations the database has not received yet
        (:func:`bayestwin.store.migrations.upgrade`; when it is up to date this only
        reads the version table). Turn it off where the migrations are run separately
        or the database user may not create objects.

    Notes
    -----
    Each public method runs in its own transaction and returns pydantic objects. The
    repository is safe to share between threads; an engine it built itself is disposed
    by :meth:`close`.
    """
