"""Engines and sessions for the twin tables.

Nothing here runs at import time: engines are built by :func:`make_engine` from a URL,
or from the settings (``database_url``, overridable with ``BAYESTWIN_DATABASE_URL``),
whose default is a SQLite file ``bayestwin.db`` in the data directory.

* SQLite: the parent directory is created; every connection turns on foreign keys,
  write-ahead logging and a busy timeout. Transactions begin with ``BEGIN``, or with
  ``BEGIN IMMEDIATE`` on a connection whose execution option ``sqlite_begin`` is
  ``"IMMEDIATE"`` (what :func:`session_factory` does for writers), so that concurrent
  writers queue on the lock instead of failing midway.
* PostgreSQL: through psycopg 3; ``postgresql://`` URLs get the ``+psycopg`` driver.

The schema itself is brought up to date by :func:`bayestwin.store.migrations.upgrade`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, StaticPool

from bayestwin.settings import Settings, load_settings

__all__ = [
    "database_url",
    "make_engine",
    "session_factory",
    "temporary_database",
]

SQLITE_BUSY_TIMEOUT_S = 30.0
"""Seconds a SQLite connection waits for a lock before it gives up."""


def database_url(settings: Settings | None = None) -> str:
    """Return the database URL from the settings.

    Parameters
    ----------
    settings : Settings, optional
        Settings to read; :func:`bayestwin.settings.load_settings` when omitted (so
        ``BAYESTWIN_DATABASE_URL`` applies).

    Returns
    -------
    str
        The configured URL, else ``sqlite:///<data_dir>/bayestwin.db``.
    """
    settings = settings if settings is not None else load_settings()
    return settings.resolved_database_url()


def _normalise_url(url: str | URL) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str | URL | None = None, **kwargs: Any) -> Engine:
    """Create an engine for the twin tables.

    Parameters
    ----------
    url : str or URL, optional
        SQLAlchemy URL. Defaults to :func:`database_url`. ``postgresql://`` means
        psycopg 3.
    **kwargs
        Passed to :func:`sqlalchemy.create_engine`.

    Returns
    -------
    Engine
        For SQLite, with foreign keys, WAL and explicit transaction control on.

    Raises
    ------
    ValueError
        If the URL names a backend other than SQLite or PostgreSQL.
    """
    parsed = _normalise_url(url if url is not None else database_url())
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(parsed, **kwargs)
    if backend != "sqlite":
        raise ValueError(
            f"unsupported database backend {backend!r} in {parsed.render_as_string()!r}: "
            "use sqlite:///path/to/file.db or postgresql+psycopg://..."
        )
    in_memory = parsed.database in (None, "", ":memory:")
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
    if in_memory:
        # One shared connection, so every thread sees the same in-memory database.
        connect_args.setdefault("check_same_thread", False)
        kwargs.setdefault("poolclass", StaticPool)
    else:
        Path(str(parsed.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
    _configure_sqlite(engine, wal=not in_memory)
    return engine


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Take BEGIN away from the sqlite3 module; _on_begin emits it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(f"sqlite_begin must be DEFERRED, IMMEDIATE or EXCLUSIVE, not {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}")


def session_factory(
    engine: Engine, *, mode: Literal["read", "write"] = "write"
) -> sessionmaker[Session]:
    """Return a session factory whose sessions keep loaded values after commit.

    Parameters
    ----------
    engine : Engine
        Engine from :func:`make_engine`.
    mode : {"write", "read"}
        ``"write"`` sessions take SQLite's write lock when they begin
        (``BEGIN IMMEDIATE``), so a read-then-write transaction never fails on a lock
        upgrade; ``"read"`` sessions begin deferred. No effect on PostgreSQL.

    Returns
    -------
    sessionmaker
        Factory with ``expire_on_commit=False``.
    """
    bind = engine
    if mode == "write" and engine.dialect.name == "sqlite":
        bind = engine.execution_options(sqlite_begin="IMMEDIATE")
    return sessionmaker(bind=bind, expire_on_commit=False)


@contextmanager
def temporary_database(url: str | URL, *, prefix: str = "bayestwin_test_") -> Iterator[URL]:
    """Create a scratch PostgreSQL database and drop it afterwards.

    Parameters
    ----------
    url : str or URL
        URL of an existing database on the server; the scratch database is created
        from a connection to it.
    prefix : str
        Name prefix (lower-case letters, digits and ``_``); a random suffix follows.

    Yields
    ------
    URL
        URL of the new, empty database (same server and credentials).

    Raises
    ------
    ValueError
        If ``url`` is not a PostgreSQL URL or ``prefix`` is not a plain identifier.
    """
    base = _normalise_url(url)
    if base.get_backend_name() != "postgresql":
        raise ValueError(f"temporary_database needs a PostgreSQL URL, got {base.drivername!r}")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", prefix):
        raise ValueError(f"prefix must be a lower-case identifier, got {prefix!r}")
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield base.set(database=name)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()
