"""Records: what the store keeps and lists (model rows, pages of a listing)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bayestwin.schemas._base import Schema, utcnow
from bayestwin.schemas.limits import (
    BRAND_LENGTH,
    MLFLOW_RUN_ID_LENGTH,
    MODEL_NAME_LENGTH,
    MODEL_VERSION_LENGTH,
)
from bayestwin.vocabulary import TwinType

__all__ = ["Page", "TwinModelInfo"]


class TwinModelInfo(Schema):
    """A fitted twin model as ``digital_twin_models`` stores it."""

    model_id: uuid.UUID
    model_name: str = Field(..., max_length=MODEL_NAME_LENGTH)
    twin_type: TwinType
    model_version: str = Field(..., max_length=MODEL_VERSION_LENGTH)
    mlflow_run_id: str | None = Field(None, max_length=MLFLOW_RUN_ID_LENGTH)
    training_config: dict[str, Any] = Field(default_factory=dict)
    feature_columns: list[str] = Field(default_factory=list)
    target_columns: list[str] = Field(default_factory=list)
    performance_metrics: dict[str, Any] = Field(default_factory=dict)
    fidelity_score: float | None = Field(None, ge=0.0, le=1.0)
    is_active: bool = False
    brand: str = Field(..., max_length=BRAND_LENGTH)
    fit_for_use: bool = True
    diagnostics_reason: str | None = None
    artifact_uri: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Page[T](BaseModel):
    """One page of a listing.

    Attributes
    ----------
    items : list
        The rows of this page.
    total : int
        Number of rows that match the filters, over all pages.
    limit, offset : int
        The page window that was asked for.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[T]
    total: int = Field(..., ge=0)
    limit: int = Field(..., gt=0)
    offset: int = Field(..., ge=0)
