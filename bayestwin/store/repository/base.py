"""The engine, the sessions and the transactions every repository job shares."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from bayestwin.store.db import make_engine, session_factory
from bayestwin.store.migrations import upgrade
from bayestwin.store.repository.dberrors import database_error

__all__ = ["RepositoryBase"]


class RepositoryBase:
    """Engine, session factories and one-transaction helpers (see :class:`TwinRepository`).

    Parameters
    ----------
    engine : Engine, str or URL, optional
        An engine, or a URL to build one with :func:`bayestwin.store.db.make_engine`.
    ensure_schema : bool
        Apply the pending migrations first (:func:`bayestwin.store.migrations.upgrade`).
    """

    def __init__(
        self, engine: Engine | str | URL | None = None, *, ensure_schema: bool = True
    ) -> None:
        self._owns_engine = not isinstance(engine, Engine)
        self._engine = engine if isinstance(engine, Engine) else make_engine(engine)
        self._write_session = session_factory(self._engine, mode="write")
        self._read_session = session_factory(self._engine, mode="read")
        if ensure_schema:
            upgrade(self._engine)

    @property
    def engine(self) -> Engine:
        """The engine in use."""
        return self._engine

    def close(self) -> None:
        """Dispose of the engine if this repository created it."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One writing transaction (SQLite: ``BEGIN IMMEDIATE``), committed on exit.

        A database error becomes a :mod:`bayestwin.errors` type without the SQL
        (:func:`~bayestwin.store.repository.dberrors.database_error`).
        """
        try:
            with self._write_session.begin() as session:
                yield session
        except sa_exc.StatementError as exc:
            raise database_error(exc) from None

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """One reading transaction (database errors as in :meth:`_write`)."""
        try:
            with self._read_session.begin() as session:
                yield session
        except sa_exc.StatementError as exc:
            raise database_error(exc) from None
