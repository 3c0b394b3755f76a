"""Bounds of the request fields that the database stores, stated once.

Each length is the size of the column that keeps the field
(``migrations/011_digital_twin_tables.sql``, mirrored by :mod:`bayestwin.store.tables`);
``tests/test_hardening_faces.py`` proves each one equal to its column, so that a value
the schemas accept always fits. Every face (tool, CLI, REST) validates its input with
the schemas of :mod:`bayestwin.schemas.requests`, which use these bounds.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

__all__ = [
    "BRAND_LENGTH",
    "COLUMN_LENGTHS",
    "EXTERNAL_ID_LENGTH",
    "INTERVENTION_TYPE_LENGTH",
    "MAX_INTEGER",
    "MAX_RANDOM_SEED",
    "MLFLOW_RUN_ID_LENGTH",
    "MODEL_NAME_LENGTH",
    "MODEL_VERSION_LENGTH",
    "ExternalId",
]

BRAND_LENGTH = 100
"""``VARCHAR(100)``: ``digital_twin_models.brand``, ``twin_simulations.brand``."""

INTERVENTION_TYPE_LENGTH = 100
"""``VARCHAR(100)``: ``twin_simulations.intervention_type``."""

EXTERNAL_ID_LENGTH = 255
"""``VARCHAR(255)``: ``experiment_design_id`` and ``actual_experiment_id``."""

MODEL_NAME_LENGTH = 255
"""``VARCHAR(255)``: ``digital_twin_models.model_name``."""

MODEL_VERSION_LENGTH = 100
"""``VARCHAR(100)``: ``digital_twin_models.model_version``."""

MLFLOW_RUN_ID_LENGTH = 255
"""``VARCHAR(255)``: ``digital_twin_models.mlflow_run_id``."""

MAX_RANDOM_SEED = 2**63 - 1
"""Largest ``BIGINT`` (``twin_simulations.random_seed``); seeds are also ``>= 0``."""

MAX_INTEGER = 2**31 - 1
"""Largest ``INTEGER`` (``twin_simulations.twin_count``)."""

COLUMN_LENGTHS: dict[tuple[str, str], int] = {
    ("digital_twin_models", "brand"): BRAND_LENGTH,
    ("digital_twin_models", "model_name"): MODEL_NAME_LENGTH,
    ("digital_twin_models", "model_version"): MODEL_VERSION_LENGTH,
    ("digital_twin_models", "mlflow_run_id"): MLFLOW_RUN_ID_LENGTH,
    ("twin_simulations", "brand"): BRAND_LENGTH,
    ("twin_simulations", "intervention_type"): INTERVENTION_TYPE_LENGTH,
    ("twin_simulations", "experiment_design_id"): EXTERNAL_ID_LENGTH,
    ("twin_fidelity_tracking", "actual_experiment_id"): EXTERNAL_ID_LENGTH,
}
"""The length of every bounded text column, by ``(table, column)``."""

ExternalId = Annotated[str, Field(min_length=1, max_length=EXTERNAL_ID_LENGTH)]
"""Id of a row in another system (an experiment design, a real experiment)."""
