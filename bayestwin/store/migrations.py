"""Versioned schema migrations of the twin tables.

The migrations are the SQL files shipped in the package's migrations folder (read
through :mod:`bayestwin.resources`), named ``<version>_<name>.sql`` and applied in
name order. A database records what it received in the table
``bayestwin_schema_migrations``: one row per migration with its ``version``, ``name``,
the SHA-256 ``checksum`` of the file and ``applied_at``. :func:`upgrade` applies only
the migrations missing from that table, so a migration already applied is never run
again.

* PostgreSQL: each pending file runs whole (``DO`` blocks included) in one
  transaction with its version row. A transaction-level advisory lock serialises
  concurrent upgrades of one database; the second waits, then finds nothing to do.
  The files themselves stay idempotent, so a database built before the version table
  existed takes them once more and is recorded.
* SQLite: the files are written for PostgreSQL, so the ORM's ``metadata.create_all``
  builds the current schema, the nullable columns a table made by an older version
  lacks are added (``ALTER TABLE ... ADD COLUMN``), and the pending migrations are
  recorded as applied, in the same ``BEGIN IMMEDIATE`` transaction (concurrent upgrades
  queue on the write lock).

A file whose checksum differs from the recorded one was edited after it was applied;
:func:`upgrade` refuses to go on (:class:`~bayestwin.errors.ConflictError`), because the
database no longer matches the files. Add a new migration instead.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from bayestwin.errors import ConflictError, InvalidInputError
from bayestwin.resources import migration_files as shipped_migration_files
from bayestwin.store.db import make_engine
from bayestwin.store.tables import UTCDateTime, metadata

__all__ = [
    "VERSION_TABLE",
    "AppliedMigration",
    "Migration",
    "applied_migrations",
    "load_migrations",
    "migration_files",
    "upgrade",
]

VERSION_TABLE = "bayestwin_schema_migrations"
"""Name of the table that records the applied migrations."""

# Serialises concurrent upgrades of one PostgreSQL database (any constant works).
_UPGRADE_LOCK_KEY = 0x62617965_73747769  # "bayestwi"
_FILE_NAME = re.compile(r"(?P<version>\d+)_(?P<name>\w+)\.sql")

# The version table is not part of the twin tables' metadata: the ORM does not map it
# and the migration files do not create it.
_versions = sa.Table(
    VERSION_TABLE,
    sa.MetaData(),
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("checksum", sa.String(64), nullable=False),
    sa.Column("applied_at", UTCDateTime(), nullable=False),
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file.

    Attributes
    ----------
    version : str
        The leading digits of the file name (``"011"``).
    name : str
        The rest of the name, without ``.sql`` (``"digital_twin_tables"``).
    path : Path
        The file.
    checksum : str
        SHA-256 of the file's text (UTF-8, Unix line ends), in hexadecimal.
    """

    version: str
    name: str
    path: Path
    checksum: str

    @classmethod
    def from_path(cls, path: Path) -> Migration:
        """Read a migration file named ``<version>_<name>.sql``.

        Raises
        ------
        InvalidInputError
            If the file name does not have that form.
        """
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise InvalidInputError(
                f"migration file {path.name!r} is not named <version>_<name>.sql",
                code="invalid_migration",
            )
        text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
        checksum = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return cls(match["version"], match["name"], path, checksum)


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """One row of the version table: a migration a database received, and when."""

    version: str
    name: str
    checksum: str
    applied_at: datetime


def migration_files(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """Return the SQL migrations in the order they apply.

    Parameters
    ----------
    directory : path-like, optional
        Folder of ``*.sql`` files. Defaults to the migrations shipped with the package.

    Returns
    -------
    list of Path
        ``*.sql`` files sorted by name.

    Raises
    ------
    FileNotFoundError
        If there is no ``*.sql`` file.
    """
    if directory is None:
        files = shipped_migration_files()
        where = "the package's migrations"
    else:
        folder = Path(directory)
        files = sorted(folder.glob("*.sql")) if folder.is_dir() else []
        where = str(folder)
    if not files:
        raise FileNotFoundError(f"no SQL migrations (*.sql) found in {where}")
    return files


def load_migrations(directory: str | os.PathLike[str] | None = None) -> list[Migration]:
    """Return the migrations of :func:`migration_files`, read and checked.

    Raises
    ------
    InvalidInputError
        If a file name is malformed or two files share a version.
    """
    found = [Migration.from_path(path) for path in migration_files(directory)]
    versions = [m.version for m in found]
    twice = sorted({v for v in versions if versions.count(v) > 1})
    if twice:
        raise InvalidInputError(
            f"several migration files have the version(s) {twice}", code="invalid_migration"
        )
    return found


def _recorded(conn: Connection) -> dict[str, AppliedMigration]:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return {}
    rows = conn.execute(sa.select(_versions).order_by(_versions.c.version)).all()
    return {row.version: AppliedMigration(*row) for row in rows}


def _pending(conn: Connection, wanted: list[Migration]) -> list[Migration]:
    """The migrations not yet recorded; refuses a recorded one whose file changed."""
    recorded = _recorded(conn)
    for migration in wanted:
        done = recorded.get(migration.version)
        if done is not None and done.checksum != migration.checksum:
            raise ConflictError(
                f"migration {migration.path.name} changed after it was applied "
                f"(checksum {migration.checksum[:12]}, recorded {done.checksum[:12]}); "
                "add a new migration instead of editing an applied one",
                code="migration_changed",
            )
    return [m for m in wanted if m.version not in recorded]


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the upgrade lock of the database."""
    if engine.dialect.name == "sqlite":
        with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as conn:
            yield conn
        return
    with engine.begin() as conn:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_UPGRADE_LOCK_KEY})")
        yield conn


def _add_missing_columns(conn: Connection) -> None:
    """Add to existing SQLite tables the nullable ORM columns they lack."""
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise ConflictError(
                    f"table {table.name} lacks the NOT NULL column {column.name}; "
                    "rebuild the SQLite database",
                    code="migration_failed",
                )
            ddl = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {ddl}')


def _apply(conn: Connection, pending: list[Migration]) -> None:
    if conn.dialect.name == "sqlite":
        metadata.create_all(conn)
        _add_missing_columns(conn)
    else:
        raw = conn.connection.driver_connection
        assert raw is not None
        for migration in pending:
            # psycopg sends a statement without parameters as a simple query, so one
            # call runs the whole file, DO blocks included.
            raw.execute(migration.path.read_text(encoding="utf-8"))
    now = datetime.now(UTC)
    conn.execute(
        sa.insert(_versions),
        [
            {"version": m.version, "name": m.name, "checksum": m.checksum, "applied_at": now}
            for m in pending
        ],
    )


def _engine_for(url: str | URL | Engine | None) -> Engine:
    engine = url if isinstance(url, Engine) else make_engine(url)
    if engine.dialect.name not in ("sqlite", "postgresql"):
        raise InvalidInputError(
            f"cannot upgrade a {engine.dialect.name!r} database: use SQLite or PostgreSQL",
            code="unsupported_database",
        )
    return engine


def upgrade(
    url: str | URL | Engine | None = None,
    *,
    migrations_dir: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Apply the migrations a database has not received yet.

    Parameters
    ----------
    url : str, URL or Engine, optional
        Database to upgrade. Defaults to the settings' database
        (:func:`bayestwin.store.db.database_url`).
    migrations_dir : path-like, optional
        Folder of SQL migrations (see :func:`migration_files`).

    Returns
    -------
    list of str
        File names of the migrations applied by this call, in order; empty when the
        database was up to date.

    Raises
    ------
    InvalidInputError
        If the backend is neither SQLite nor PostgreSQL, or a migration file is
        misnamed.
    ConflictError
        If an applied migration's file has changed since.
    """
    engine = _engine_for(url)
    try:
        wanted = load_migrations(migrations_dir)
        with engine.connect() as conn:  # the common case: nothing to do, no lock taken
            if not _pending(conn, wanted):
                return []
        with _locked(engine) as conn:
            _versions.create(conn, checkfirst=True)
            pending = _pending(conn, wanted)  # another process may have applied some
            if pending:
                _apply(conn, pending)
        return [m.path.name for m in pending]
    finally:
        if engine is not url:
            engine.dispose()


def applied_migrations(url: str | URL | Engine) -> list[AppliedMigration]:
    """Return the rows of the version table, by version (empty before any upgrade).

    Parameters
    ----------
    url : str, URL or Engine
        The database.
    """
    engine = _engine_for(url)
    try:
        with engine.connect() as conn:
            return list(_recorded(conn).values())
    finally:
        if engine is not url:
            engine.dispose()
