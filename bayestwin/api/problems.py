"""Errors as problem details (RFC 9457, ``application/problem+json``).

One mapping, :func:`problem_for`, turns a :class:`~bayestwin.errors.BayesTwinError` into
an HTTP status, a problem type and a title: by its ``code`` where the code has its own
entry in :data:`CODE_PROBLEMS`, else by its kind (:data:`KIND_PROBLEMS`). FastAPI's own
request errors, pydantic's validation errors and HTTP errors get the same body, with
an ``errors`` list naming each field at fault (``field``, ``location``).

A body never quotes the request in full: FastAPI's request errors go through the same
formatter as every other validation error (:func:`bayestwin.errors.field_problems`),
which cuts a quoted value to a short prefix; the detail and each message are cut to
:data:`bayestwin.errors.MESSAGE_LIMIT` characters and the list to
:data:`bayestwin.errors.PROBLEM_LIMIT` fields.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from bayestwin.errors import (
    FIELD_LIMIT,
    PROBLEM_LIMIT,
    BayesTwinError,
    ErrorKind,
    FieldProblem,
    InvalidInputError,
    clip,
    field_problems,
    from_validation_error,
    summarize,
)

__all__ = [
    "CODE_PROBLEMS",
    "KIND_PROBLEMS",
    "PROBLEM_JSON",
    "Problem",
    "ProblemField",
    "ProblemKind",
    "install_handlers",
    "problem_for",
    "unauthorized",
]

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_LOCATIONS = ("body", "query", "path", "header", "cookie")


class ProblemField(BaseModel):
    """One field at fault."""

    field: str = Field(..., description="Dotted path of the field, e.g. 'twin_count'.")
    location: str | None = Field(None, description="'body', 'query', 'path' or 'header'.")
    message: str
    type: str = "value_error"


class Problem(BaseModel):
    """Problem details (RFC 9457)."""

    type: str = Field(..., description="URI that identifies the kind of problem.")
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemField] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ProblemKind:
    """How one kind of error shows over HTTP."""

    status: int
    slug: str
    """Last part of the problem type ``urn:bayestwin:problem:<slug>``."""
    title: str


KIND_PROBLEMS: dict[ErrorKind, ProblemKind] = {
    ErrorKind.INVALID_INPUT: ProblemKind(422, "invalid-input", "Invalid input"),
    ErrorKind.NOT_FOUND: ProblemKind(404, "not-found", "Not found"),
    ErrorKind.CONFLICT: ProblemKind(409, "conflict", "Conflict"),
    ErrorKind.NOT_FIT: ProblemKind(409, "not-fit", "Model not usable"),
    ErrorKind.UNAVAILABLE: ProblemKind(503, "unavailable", "Service unavailable"),
}
"""The HTTP signal of each error kind."""

CODE_PROBLEMS: dict[str, ProblemKind] = {
    "no_active_model": ProblemKind(422, "no-active-model", "No active model"),
    "experiment_not_found": ProblemKind(
        404, "experiment-result-not-found", "Experiment result not found"
    ),
    "invalid_state": ProblemKind(409, "invalid-state", "Conflict"),
    "already_exists": ProblemKind(409, "already-exists", "Conflict"),
    "model_not_usable": ProblemKind(409, "model-not-usable", "Model not usable"),
    "timeout": ProblemKind(504, "timeout", "Simulation timed out"),
}
"""Codes whose HTTP signal differs from their kind's (a missing model is the request's
fault: 422; a timeout is the gateway's: 504)."""

_HTTP_PROBLEMS: dict[int, tuple[str, str]] = {
    401: ("unauthorized", "Unauthorized"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
}


def problem_for(error: BayesTwinError) -> ProblemKind:
    """Return the HTTP status, problem type and title of an error (by code, else kind)."""
    return CODE_PROBLEMS.get(error.code, KIND_PROBLEMS[error.kind])


def _problem_response(
    request: Request,
    status: int,
    slug: str,
    title: str,
    detail: str,
    errors: list[ProblemField] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response for ``request``."""
    body = Problem(
        type=f"urn:bayestwin:problem:{slug}",
        title=title,
        status=status,
        detail=detail,
        instance=str(request.url.path),
        errors=errors or [],
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def unauthorized(request: Request, detail: str) -> JSONResponse:
    """The ``401`` problem for a request without the right API key."""
    slug, title = _HTTP_PROBLEMS[401]
    return _problem_response(
        request, 401, slug, title, detail, headers={"WWW-Authenticate": "ApiKey"}
    )


def _location(request: Request, field: str) -> str | None:
    """Where in the request a field is: its path, its query or (for a write) its body."""
    name = field.split(".", 1)[0]
    if name in request.path_params:
        return "path"
    if name in request.query_params:
        return "query"
    return "body" if request.method in ("POST", "PUT", "PATCH") else None


def _error_response(request: Request, error: BayesTwinError) -> JSONResponse:
    signal = problem_for(error)
    fields = [
        ProblemField(
            field=p.field,
            location=_location(request, p.field),
            message=p.message,
            type=p.type or error.code,
        )
        for p in error.problems
    ]
    return _problem_response(
        request, signal.status, signal.slug, signal.title, error.message, fields
    )


def _request_fields(errors: list[Any]) -> list[ProblemField]:
    """FastAPI's request errors as fields; each location starts its error's ``loc``."""
    out = []
    for err in errors[:PROBLEM_LIMIT]:
        loc = list(err.get("loc", ()))
        location = str(loc[0]) if loc and loc[0] in _LOCATIONS else None
        (problem,) = field_problems([err], skip=1 if location else 0)
        field = location if problem.field == "(request)" and location else problem.field
        out.append(
            ProblemField(
                field=clip(field, FIELD_LIMIT),
                location=location,
                message=clip(problem.message),
                type=problem.type or "value_error",
            )
        )
    return out


async def _on_request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    fields = _request_fields(errors)
    listed = [FieldProblem(f.field, f.message) for f in fields]
    summary = summarize(listed) or "invalid request"
    if len(errors) > len(fields):
        summary += f" (and {len(errors) - len(fields)} more)"
    signal = KIND_PROBLEMS[ErrorKind.INVALID_INPUT]
    return _problem_response(
        request, signal.status, signal.slug, signal.title, clip(summary), fields
    )


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    return _error_response(request, from_validation_error(exc, what="request"))


async def _on_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BayesTwinError)
    return _error_response(request, exc)


async def _on_data_error(request: Request, exc: Exception) -> JSONResponse:
    error = InvalidInputError(
        "a value in the request cannot be stored or compared by the database "
        "(e.g. a NUL character in a string)"
    )
    return _error_response(request, error)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug, title = _HTTP_PROBLEMS.get(exc.status_code, ("http-error", "HTTP error"))
    headers = dict(exc.headers) if exc.headers else None
    return _problem_response(
        request, exc.status_code, slug, title, str(exc.detail), headers=headers
    )


async def _on_internal(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return _problem_response(
        request,
        500,
        "internal-error",
        "Internal server error",
        "the server failed to handle the request; see its log",
    )


def install_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem+json body."""
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(ValidationError, _on_validation)
    app.add_exception_handler(BayesTwinError, _on_error)
    app.add_exception_handler(DataError, _on_data_error)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_internal)
