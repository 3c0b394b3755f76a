"""Database errors as :mod:`bayestwin.errors` types, without the SQL.

SQLAlchemy's errors carry the statement and its parameters in their message. Those
belong in the log, never in an answer: :func:`database_error` turns an error of the
database into an :class:`~bayestwin.errors.InvalidInputError`,
:class:`~bayestwin.errors.ConflictError` or :class:`~bayestwin.errors.UnavailableError`
whose message is short, names the field where it can be known and shows no value. The
statement and its parameters are logged at debug level; the database's own message at
info level for a refused value (the request's fault), at warning level otherwise.

* A NUL character: the field is the parameter that holds it.
* A string longer than its column (``value too long for type character varying(N)``):
  the field is the one parameter longer than ``N``.
* A unique, foreign-key or not-null violation: the field is the column the database
  names (PostgreSQL's ``DETAIL: Key (column)=...``, or SQLite's ``table.column``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import exc as sa_exc

from bayestwin.errors import BayesTwinError, ConflictError, InvalidInputError, UnavailableError

__all__ = ["database_error"]

logger = logging.getLogger(__name__)

_SUFFIX = re.compile(r"_\d+$")
_TOO_LONG = re.compile(r"character varying\((\d+)\)")
_KEY = re.compile(r"Key \(([^)]+)\)=")
_SQLITE_COLUMN = re.compile(r"constraint failed: \w+\.(\w+)")
_NUL = ("\x00", "\\u0000")
_MISSING_OBJECT = ("42P01", "42703")  # PostgreSQL: undefined table, undefined column


def _params(exc: sa_exc.StatementError) -> Iterator[tuple[str, Any]]:
    """The statement's parameters as ``(column-like name, value)`` pairs."""
    params = exc.params
    batches = params if isinstance(params, list | tuple) else [params]
    for batch in batches:
        if isinstance(batch, Mapping):
            for key, value in batch.items():
                yield _SUFFIX.sub("", str(key)), value


def _field_with(exc: sa_exc.StatementError, test: Any) -> str | None:
    names = sorted({name for name, value in _params(exc) if isinstance(value, str) and test(value)})
    return names[0] if len(names) == 1 else None


def _first_line(exc: sa_exc.StatementError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _diag(exc: sa_exc.StatementError, name: str) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    value = getattr(diag, name, None) if diag is not None else None
    return str(value) if value else None


def _data_error(exc: sa_exc.StatementError) -> InvalidInputError:
    message = _first_line(exc)
    if any(nul in message for nul in ("NUL", "0x00", "\\u0000")) or _field_with(
        exc, lambda v: any(n in v for n in _NUL)
    ):
        field = _field_with(exc, lambda v: any(n in v for n in _NUL))
        where = field or "a text field"
        return InvalidInputError(
            f"{where} contains a NUL character (\\x00), which the database cannot store",
            field=field,
            code="invalid_character",
        )
    too_long = _TOO_LONG.search(message)
    if too_long is not None:
        limit = int(too_long.group(1))
        field = _field_with(exc, lambda v: len(v) > limit)
        return InvalidInputError(
            f"{field or 'a text field'} is too long for the database: at most {limit} characters",
            field=field,
            code="too_long",
        )
    # e.g. "invalid input syntax for type uuid: "..."": keep the reason, not the value.
    reason = message.split(":", 1)[0].strip()
    return InvalidInputError(
        f"a value cannot be stored by the database ({reason})", code="invalid_value"
    )


def _integrity_error(exc: sa_exc.StatementError) -> BayesTwinError:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    message = _first_line(exc)
    keys = _KEY.search(_diag(exc, "message_detail") or "")
    column = _SQLITE_COLUMN.search(message)
    field = (
        keys.group(1).split(",")[0].strip()
        if keys
        else (_diag(exc, "column_name") or (column.group(1) if column else None))
    )
    constraint = _diag(exc, "constraint_name")
    named = f" ({constraint})" if constraint else ""
    if sqlstate == "23505" or "UNIQUE constraint failed" in message:
        return ConflictError(
            f"{field or 'the row'} already exists{named}", field=field, code="already_exists"
        )
    if sqlstate == "23503" or "FOREIGN KEY constraint failed" in message:
        return InvalidInputError(
            f"{field or 'a reference'} names a row that does not exist{named}",
            field=field,
            code="invalid_reference",
        )
    return InvalidInputError(
        f"the database refused the row{named}: {field or 'a value'} breaks a constraint",
        field=field,
        code="constraint_violation",
    )


def database_error(exc: sa_exc.StatementError) -> BayesTwinError:
    """Return the :mod:`bayestwin.errors` type of a database error, without its SQL.

    Parameters
    ----------
    exc : sqlalchemy.exc.StatementError
        What SQLAlchemy raised (a ``DBAPIError`` such as ``DataError``, or an error
        raised while binding a parameter).

    Returns
    -------
    BayesTwinError
        ``InvalidInputError`` for a value the database refuses (codes
        ``invalid_character``, ``too_long``, ``invalid_value``, ``invalid_reference``,
        ``constraint_violation``); ``ConflictError`` (``already_exists``) for a
        duplicate; ``UnavailableError`` with code ``schema_out_of_date`` when a table
        or column is missing (the migrations were not applied),
        ``database_unavailable`` when the database cannot be reached or is locked, and
        ``database_error`` for anything else.
    """
    logger.debug("database error on %s with %r", exc.statement, exc.params, exc_info=exc)
    if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
        # The request's fault: worth a line in the log, not a warning.
        logger.info("database refused a value: %s", _first_line(exc))
        if isinstance(exc, sa_exc.DataError):
            return _data_error(exc)
        return _integrity_error(exc)
    logger.warning("database error: %s: %s", type(exc).__name__, _first_line(exc))
    message = _first_line(exc)
    if getattr(exc.orig, "sqlstate", None) in _MISSING_OBJECT or message.startswith(
        ("no such table", "no such column")
    ):
        return UnavailableError(
            "the database schema is out of date; run `bayestwin db upgrade`",
            code="schema_out_of_date",
        )
    if isinstance(exc, sa_exc.OperationalError):
        return UnavailableError(
            f"the database is unavailable: {_first_line(exc)}", code="database_unavailable"
        )
    if not isinstance(exc, sa_exc.DBAPIError) and _field_with(
        exc, lambda v: any(n in v for n in _NUL)
    ):
        return _data_error(exc)
    return UnavailableError(
        f"the database failed the request ({type(exc).__name__}); see the server log",
        code="database_error",
    )
