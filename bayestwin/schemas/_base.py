"""The base of every schema, and the one clock the schemas stamp rows with."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Schema(BaseModel):
    """Closed, JSON-safe base model of the schemas.

    JSON has no NaN or infinity: refusing them keeps every schema round-trippable.
    """

    model_config = ConfigDict(extra="forbid", from_attributes=True, allow_inf_nan=False)
