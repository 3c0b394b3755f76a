"""Rows to pydantic objects and back, and the argument checks every repository job uses.

No ORM object leaves the repository: these helpers turn rows of
:mod:`bayestwin.store.tables` into :class:`~bayestwin.schemas.TwinModelInfo`,
:class:`~bayestwin.schemas.SimulationResult` and :class:`~bayestwin.schemas.FidelityResult`.

A simulation row keeps the request and the headline numbers in columns, the rest of the
result in the JSON column ``result``, and the heavy fields
(:data:`~bayestwin.schemas.HEAVY_FIELDS`) in deferred columns, loaded only on demand.
How a result was served (``from_cache``, ``similar_simulations``) is not part of it
and is never stored.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, NoReturn

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from bayestwin.errors import InvalidInputError, NotFoundError
from bayestwin.schemas import HEAVY_FIELDS, FidelityResult, SimulationResult, TwinModelInfo
from bayestwin.store.tables import DigitalTwinModel, TwinFidelityTracking, TwinSimulation

__all__ = [
    "MAX_ERROR_LENGTH",
    "MAX_PAGE_SIZE",
    "MAX_SEED",
    "REQUEST_FIELDS",
    "SERVED_FIELDS",
    "as_uuid",
    "check_seed",
    "check_window",
    "error_text",
    "fidelity_result",
    "json_fields",
    "model_info",
    "not_found",
    "reload",
    "simulation_result",
]

MAX_PAGE_SIZE = 1000
"""Largest page a listing returns."""
MAX_ERROR_LENGTH = 10_000
"""Longest error message stored on a failed simulation."""
MAX_SEED = 2**63 - 1
"""Largest random seed the ``BIGINT`` column holds."""

SERVED_FIELDS = ("from_cache", "similar_simulations")
"""Fields of a result that say how it was served; never stored."""
REQUEST_FIELDS = ("model_id", "brand", "twin_type", "intervention_type", "twin_count")
"""Fields a completed result must share with its stored request."""

_SIMULATION_COLUMNS = sorted(
    (set(SimulationResult.model_fields) & set(sa.inspect(TwinSimulation).columns.keys()))
    - set(HEAVY_FIELDS)
)


def simulation_result(row: TwinSimulation, *, include_draws: bool) -> SimulationResult:
    """The :class:`SimulationResult` of a row; the heavy fields only when asked for."""
    data: dict[str, Any] = {
        k: v
        for k, v in (row.result or {}).items()
        if k in SimulationResult.model_fields and k not in SERVED_FIELDS
    }
    for name in _SIMULATION_COLUMNS:
        data[name] = getattr(row, name)
    for name in HEAVY_FIELDS:
        data[name] = getattr(row, name) if include_draws else None
    return SimulationResult.model_validate(data)


def model_info(row: DigitalTwinModel) -> TwinModelInfo:
    """The :class:`TwinModelInfo` of a row."""
    return TwinModelInfo.model_validate(row)


def fidelity_result(row: TwinFidelityTracking) -> FidelityResult:
    """The :class:`FidelityResult` of a row."""
    return FidelityResult.model_validate(row)


def reload(session: Session, row: object) -> None:
    """Write pending changes and read the row back, so callers get what was stored."""
    session.flush()
    session.refresh(row)


def json_fields(obj: BaseModel, names: set[str]) -> dict[str, Any]:
    """JSON-ready values of some fields; non-finite floats become null, as in JSON."""
    return dict(json.loads(obj.model_dump_json(include=names)))


def not_found(what: str, key: object) -> NoReturn:
    """Raise the :class:`~bayestwin.errors.NotFoundError` of a missing row.

    Parameters
    ----------
    what : {"model", "simulation", "validation"}
        The kind of row; the error's field is the row's id (``"simulation_id"``...).
    key : object
        The id that matched nothing.
    """
    field = "tracking_id" if what == "validation" else f"{what}_id"
    raise NotFoundError(f"{what} {key} not found", code="not_found", field=field)


def as_uuid(value: uuid.UUID | str, name: str) -> uuid.UUID:
    """``value`` as a UUID; :class:`~bayestwin.errors.InvalidInputError` otherwise."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidInputError(f"{name} must be a UUID, got {value!r}", field=name) from None


def check_seed(seed: int | None) -> None:
    """Refuse a seed the database cannot store."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InvalidInputError(
            f"random_seed must be between 0 and 2**63 - 1 to be stored, got {seed}",
            field="random_seed",
        )


def check_window(limit: int, offset: int) -> None:
    """Refuse a page window outside ``1 <= limit <= MAX_PAGE_SIZE``, ``offset >= 0``."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInputError(
            f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}", field="limit"
        )
    if offset < 0:
        raise InvalidInputError(f"offset must be >= 0, got {offset}", field="offset")


def error_text(error: str | BaseException) -> str:
    """The message stored on a failed simulation (``"Type: message"``, truncated)."""
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    else:
        text = error.strip() or "unknown error"
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 15] + " ...[truncated]"
    return text
