"""The one error type of bayestwin, and how pydantic's validation errors map onto it.

Every error the package raises on purpose is a :class:`BayesTwinError`. It carries

* a :class:`ErrorKind`: what sort of failure it is, which each face maps once
  (the CLI to an exit code, the REST API to an HTTP status with a problem+json body,
  the agent tools to a structured tool error);
* a ``code``: a finer, stable name (``"no_active_model"``, ``"timeout"``...) that the
  faces show as the error's type;
* the ``field`` at fault, as a dotted path (``"intervention_config.target"``), when the
  error is about one field of a request; and every :class:`FieldProblem` when there are
  several.

The subclasses only fix the kind (and keep the matching builtin base, so that
``except ValueError`` and ``except LookupError`` go on working). This module imports
nothing from the rest of the package.

Errors never carry a caller's input in full: a value quoted back is cut to
:data:`ECHO_LIMIT` characters (:func:`echo`), a message to :data:`MESSAGE_LIMIT`, a
field's path to :data:`FIELD_LIMIT` and the list of field problems to
:data:`PROBLEM_LIMIT` entries, so that an error's size does not grow with the input's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

__all__ = [
    "ECHO_LIMIT",
    "FIELD_LIMIT",
    "MESSAGE_LIMIT",
    "PROBLEM_LIMIT",
    "BayesTwinError",
    "ConflictError",
    "ErrorKind",
    "FieldProblem",
    "InvalidInputError",
    "NotFitError",
    "NotFoundError",
    "UnavailableError",
    "clip",
    "echo",
    "field_problems",
    "from_validation_error",
    "summarize",
]

ECHO_LIMIT = 80
"""Characters of an input value that an error quotes back."""

MESSAGE_LIMIT = 1000
"""Characters of an error message (and of each field problem's message)."""

FIELD_LIMIT = 200
"""Characters of a field's dotted path (a path can hold a caller's key)."""

PROBLEM_LIMIT = 20
"""Field problems an error lists; the message counts those left out."""


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Return ``text`` cut to ``limit`` characters, marked with its full length.

    Parameters
    ----------
    text : str
        The text.
    limit : int, default MESSAGE_LIMIT
        Characters kept.

    Returns
    -------
    str
        ``text`` itself when short enough, else its first ``limit`` characters followed
        by ``"…(N chars)"``.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text)} chars)"


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """Return the ``repr`` of an input value, cut to a short prefix for an error message.

    Parameters
    ----------
    value : object
        The value given.
    limit : int, default ECHO_LIMIT
        Characters of the value kept.

    Returns
    -------
    str
        ``repr(value)`` when short; else the repr of a string's first ``limit``
        characters, or the first ``limit`` characters of another value's repr, followed
        by ``"…(N chars)"``, N the length of the string or of the repr.
    """
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}…({len(value)} chars)"
    return clip(repr(value), limit)


class ErrorKind(StrEnum):
    """What sort of failure an error is; each face maps a kind to its own signal."""

    INVALID_INPUT = "invalid_input"
    """The request or the data is wrong; the message names the field and what is allowed."""
    NOT_FOUND = "not_found"
    """A model, simulation, validation or experiment result does not exist."""
    CONFLICT = "conflict"
    """The request does not fit the current state (a duplicate, a finished row)."""
    NOT_FIT = "not_fit"
    """No usable fitted model: none is fitted, or its diagnostics failed."""
    UNAVAILABLE = "unavailable"
    """A dependency, an artifact or the time budget failed; retrying may help."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One problem with one field of a request.

    Attributes
    ----------
    field : str
        Dotted path of the field (``"(request)"`` when the problem is the whole request).
    message : str
        What is wrong and what is allowed.
    type : str or None
        pydantic's error type (``"int_type"``...), when the problem comes from pydantic.
    """

    field: str
    message: str
    type: str | None = None


class BayesTwinError(Exception):
    """Base of every error bayestwin raises on purpose.

    Parameters
    ----------
    message : str
        What went wrong, for a person to read.
    field : str, optional
        Dotted path of the field at fault.
    code : str, optional
        Stable, fine-grained name of the error; defaults to the kind's value.
    problems : iterable of FieldProblem, optional
        Every field problem when there are several; defaults to one built from
        ``field`` and ``message``.
    kind : ErrorKind, optional
        Overrides the class's kind.
    """

    kind: ErrorKind = ErrorKind.INVALID_INPUT

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        problems: Iterable[FieldProblem] | None = None,
        kind: ErrorKind | None = None,
    ) -> None:
        message = clip(message)
        super().__init__(message)
        if kind is not None:
            self.kind = kind
        self.message = message
        self.field = None if field is None else clip(field, FIELD_LIMIT)
        self.code = code or self.kind.value
        listed = list(problems or ())[:PROBLEM_LIMIT]
        if not listed and self.field is not None:
            listed = [FieldProblem(field=self.field, message=message)]
        self.problems: list[FieldProblem] = [
            replace(p, field=clip(p.field, FIELD_LIMIT), message=clip(p.message)) for p in listed
        ]

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """Return the error as a JSON-ready mapping (kind, code, message, field, errors)."""
        return {
            "kind": self.kind.value,
            "code": self.code,
            "message": self.message,
            "field": self.field,
            "errors": [
                {"field": p.field, "message": p.message, "type": p.type} for p in self.problems
            ],
        }


class InvalidInputError(BayesTwinError, ValueError):
    """The request or the data is wrong (:attr:`ErrorKind.INVALID_INPUT`)."""

    kind = ErrorKind.INVALID_INPUT


class NotFoundError(BayesTwinError, LookupError):
    """Something looked up does not exist (:attr:`ErrorKind.NOT_FOUND`)."""

    kind = ErrorKind.NOT_FOUND


class ConflictError(BayesTwinError):
    """The operation does not fit the current state (:attr:`ErrorKind.CONFLICT`)."""

    kind = ErrorKind.CONFLICT


class NotFitError(BayesTwinError, RuntimeError):
    """No usable fitted model (:attr:`ErrorKind.NOT_FIT`)."""

    kind = ErrorKind.NOT_FIT


class UnavailableError(BayesTwinError, RuntimeError):
    """A dependency, an artifact or the time budget failed (:attr:`ErrorKind.UNAVAILABLE`)."""

    kind = ErrorKind.UNAVAILABLE


def _location(loc: Iterable[int | str]) -> str:
    return ".".join(str(part) for part in loc)


def field_problems(errors: Iterable[Any], *, skip: int = 0) -> list[FieldProblem]:
    """Turn pydantic's ``ValidationError.errors()`` into :class:`FieldProblem` values.

    Parameters
    ----------
    errors : iterable of mapping
        The entries of ``ValidationError.errors()`` (or FastAPI's request errors).
    skip : int, default 0
        Leading location parts to drop (FastAPI prefixes ``"body"``, ``"query"``...).

    Returns
    -------
    list of FieldProblem
        One per entry, with pydantic's ``"Value error, "`` prefix removed and, for a
        type or parsing error, the value that was given (cut by :func:`echo`).
    """
    problems = []
    for err in errors:
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        kind = str(err.get("type", "")) or None
        if kind and kind.endswith(("_type", "_parsing")) and "input" in err:
            msg = f"{msg} (got {echo(err['input'])})"
        field = _location(list(err.get("loc", ()))[skip:]) or "(request)"
        problems.append(FieldProblem(field=field, message=msg, type=kind))
    return problems


def summarize(problems: Iterable[FieldProblem]) -> str:
    """Return ``"field: message; ..."`` for at most :data:`PROBLEM_LIMIT` problems.

    Parameters
    ----------
    problems : iterable of FieldProblem
        The problems.

    Returns
    -------
    str
        The listed problems, and ``"(and N more)"`` when some are left out.
    """
    listed = list(problems)
    text = "; ".join(f"{p.field}: {p.message}" for p in listed[:PROBLEM_LIMIT])
    if len(listed) > PROBLEM_LIMIT:
        text += f" (and {len(listed) - PROBLEM_LIMIT} more)"
    return text


def from_validation_error(
    exc: Any, *, what: str = "input", skip: int = 0, code: str | None = None
) -> InvalidInputError:
    """Return the :class:`InvalidInputError` for a pydantic ``ValidationError``.

    Parameters
    ----------
    exc : pydantic.ValidationError
        The error pydantic raised.
    what : str, default "input"
        What was being validated, for the message (``"settings"``, ``"request"``).
    skip : int, default 0
        Leading location parts to drop, as in :func:`field_problems`.
    code : str, optional
        The error's code (default: the kind's, ``"invalid_input"``).

    Returns
    -------
    InvalidInputError
        Its message lists the problems as ``field: message`` (at most
        :data:`PROBLEM_LIMIT`, then how many more); its ``field`` is the first
        problem's field.
    """
    problems = field_problems(exc.errors(), skip=skip)
    return InvalidInputError(
        f"invalid {what}: {summarize(problems)}",
        field=problems[0].field if problems else None,
        code=code,
        problems=problems,
    )
