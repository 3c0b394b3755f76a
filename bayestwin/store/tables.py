"""SQLAlchemy ORM mirror of the SQL migrations in ``migrations/`` (011 to 013).

The SQL files (``011_digital_twin_tables.sql``, ``012_simulation_workers.sql``,
``013_model_rehearsal.sql``) are the schema users run on PostgreSQL; these classes
describe the same tables for the ORM and build them on SQLite (``metadata.create_all``).
The migration test (``tests/test_store_migration.py``) applies the SQL to an empty
PostgreSQL and proves, by reflection, that tables, columns, types, nullability, server
defaults, enums, keys, checks and indexes equal this module.

Portable types: JSONB and ``TEXT[]`` on PostgreSQL become JSON on SQLite; UUIDs are
native on PostgreSQL and 32-character strings on SQLite; timestamps are stored in UTC
and always read back timezone-aware.

The references from ``experiment_design_id``, ``actual_experiment_id`` and
``mlflow_run_id`` to the platform's ``ml_experiments`` table exist only where that table
does, so they are added by the migration and not declared here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.compiler import DDLCompiler
from sqlalchemy.types import TypeDecorator, UserDefinedType

from bayestwin.vocabulary import FidelityGrade, Recommendation, SimulationStatus, TwinType

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "DigitalTwinModel",
    "TwinFidelityTracking",
    "TwinSimulation",
    "metadata",
]

NAMING_CONVENTION: dict[str, str] = {
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


# -- portable column types -------------------------------------------------------------


class UTCDateTime(TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that stores UTC and reads back aware UTC datetimes.

    SQLite keeps no offset, so values are converted to UTC before they are written and
    marked UTC when read. Naive datetimes are taken to be UTC already.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC (and drop the offset on SQLite)."""
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware datetime in UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ExternalId(UserDefinedType[str]):
    """Identifier of a row in another system's table, always handled as ``str``.

    Created as ``VARCHAR(255)``. Where the platform's ``ml_experiments`` key is not a
    string type, the migration turns the column into that type (e.g. ``UUID``); this type
    therefore binds plain strings without a cast, so PostgreSQL converts them to the
    column's type, and reads any value back as ``str``.
    """

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        """Return the DDL type."""
        return "VARCHAR(255)"

    def bind_processor(self, dialect: Dialect) -> Any:
        """Bind as a plain string."""

        def process(value: Any) -> str | None:
            return None if value is None else str(value)

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        """Read any key type back as a string."""

        def process(value: Any) -> str | None:
            return None if value is None else str(value)

        return process


JSONDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
"""JSONB on PostgreSQL, JSON (text) elsewhere."""

TextList = sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")
"""``TEXT[]`` on PostgreSQL, a JSON list elsewhere."""


class _EmptyDocument(sa.sql.expression.ColumnElement[Any]):
    """Server default of an empty JSON object (``'{}'``)."""

    inherit_cache = True


class _EmptyList(sa.sql.expression.ColumnElement[Any]):
    """Server default of an empty list: ``'{}'`` for ``TEXT[]``, ``'[]'`` for JSON."""

    inherit_cache = True


class _NewUuid(sa.sql.expression.ColumnElement[Any]):
    """Server default of a random UUID (``gen_random_uuid()`` on PostgreSQL)."""

    inherit_cache = True


@compiles(_EmptyDocument)
def _compile_empty_document(element: _EmptyDocument, compiler: DDLCompiler, **kw: Any) -> str:
    return "'{}'"


@compiles(_EmptyList)
def _compile_empty_list(element: _EmptyList, compiler: DDLCompiler, **kw: Any) -> str:
    return "'[]'"


@compiles(_NewUuid)
def _compile_new_uuid(element: _NewUuid, compiler: DDLCompiler, **kw: Any) -> str:
    # SQLite stores sa.Uuid as 32 hex digits.
    return "(lower(hex(randomblob(16))))"


@compiles(_NewUuid, "postgresql")
def _compile_new_uuid_pg(element: _NewUuid, compiler: DDLCompiler, **kw: Any) -> str:
    return "gen_random_uuid()"


@compiles(_EmptyList, "postgresql")
def _compile_empty_list_pg(element: _EmptyList, compiler: DDLCompiler, **kw: Any) -> str:
    return "'{}'"


def _enum(enum_cls: type[StrEnum], name: str) -> sa.Enum:
    """A vocabulary enum stored by value, as the PostgreSQL type ``name``."""
    return sa.Enum(
        enum_cls,
        name=name,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
        create_constraint=True,
    )


TWIN_TYPE = _enum(TwinType, "twin_type")
SIMULATION_STATUS = _enum(SimulationStatus, "simulation_status")
SIMULATION_RECOMMENDATION = _enum(Recommendation, "simulation_recommendation")
FIDELITY_GRADE = _enum(FidelityGrade, "fidelity_grade")

_NOW = sa.text("CURRENT_TIMESTAMP")


class Base(DeclarativeBase):
    """Declarative base bound to :data:`metadata`."""

    metadata = metadata


# -- 3.1 digital_twin_models -------------------------------------------------------------


class DigitalTwinModel(Base):
    """A fitted twin generator for one (brand, twin type), one row per version."""

    __tablename__ = "digital_twin_models"

    model_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid(), primary_key=True, default=uuid.uuid4, server_default=_NewUuid()
    )
    model_name: Mapped[str] = mapped_column(sa.String(255))
    twin_type: Mapped[TwinType] = mapped_column(TWIN_TYPE)
    model_version: Mapped[str] = mapped_column(sa.String(100))
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(255))
    training_config: Mapped[dict[str, Any]] = mapped_column(
        JSONDocument, server_default=_EmptyDocument()
    )
    feature_columns: Mapped[list[str]] = mapped_column(TextList, server_default=_EmptyList())
    target_columns: Mapped[list[str]] = mapped_column(TextList, server_default=_EmptyList())
    performance_metrics: Mapped[dict[str, Any]] = mapped_column(
        JSONDocument, server_default=_EmptyDocument()
    )
    fidelity_score: Mapped[float | None] = mapped_column(sa.Double())
    is_active: Mapped[bool] = mapped_column(sa.Boolean(), server_default=sa.false())
    brand: Mapped[str] = mapped_column(sa.String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=_NOW)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=_NOW)
    fit_for_use: Mapped[bool] = mapped_column(sa.Boolean(), server_default=sa.true())
    diagnostics_reason: Mapped[str | None] = mapped_column(sa.Text())
    artifact_uri: Mapped[str | None] = mapped_column(sa.Text())
    rehearsal_false_deploy_rate: Mapped[float | None] = mapped_column(sa.Double())
    """Share of the fit-time placebo campaigns recommended "deploy"; migration 013."""
    rehearsal_zero_coverage: Mapped[float | None] = mapped_column(sa.Double())
    """Share of the placebos whose 95% interval holds zero; migration 013."""
    rehearsal_placebos: Mapped[int | None] = mapped_column(sa.Integer())
    """Placebos simulated (K); migration 013."""
    rehearsal_reason: Mapped[str | None] = mapped_column(sa.Text())
    """Why no placebo ran (too few untreated rows or units); migration 013."""

    __table_args__ = (
        sa.UniqueConstraint("model_name", "model_version"),
        sa.CheckConstraint(
            "fidelity_score >= 0 AND fidelity_score <= 1", name="fidelity_score_range"
        ),
        sa.CheckConstraint("NOT is_active OR fit_for_use", name="active_is_fit"),
        sa.Index(None, "brand"),
        sa.Index(None, "twin_type"),
        sa.Index(None, "is_active"),
        sa.Index(None, "created_at"),
        sa.Index(None, "mlflow_run_id"),
        sa.Index(
            "uix_digital_twin_models_one_active",
            "brand",
            "twin_type",
            unique=True,
            postgresql_where=sa.text("is_active"),
            sqlite_where=sa.text("is_active"),
        ),
    )


# -- 3.2 twin_simulations ----------------------------------------------------------------


WORKER_ID_LENGTH = 64
"""``VARCHAR(64)``: ``twin_simulations.worker_id``."""


class TwinSimulation(Base):
    """One simulation run: pending -> running -> completed | failed."""

    __tablename__ = "twin_simulations"

    simulation_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid(), primary_key=True, default=uuid.uuid4, server_default=_NewUuid()
    )
    model_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid(), sa.ForeignKey(DigitalTwinModel.model_id, ondelete="RESTRICT")
    )
    experiment_design_id: Mapped[str | None] = mapped_column(ExternalId())
    intervention_type: Mapped[str] = mapped_column(sa.String(100))
    intervention_config: Mapped[dict[str, Any]] = mapped_column(
        JSONDocument, server_default=_EmptyDocument()
    )
    twin_count: Mapped[int] = mapped_column(sa.Integer())
    simulated_ate: Mapped[float | None] = mapped_column(sa.Double())
    simulated_ci_lower: Mapped[float | None] = mapped_column(sa.Double())
    simulated_ci_upper: Mapped[float | None] = mapped_column(sa.Double())
    simulation_status: Mapped[SimulationStatus] = mapped_column(
        SIMULATION_STATUS, server_default=SimulationStatus.PENDING.value
    )
    recommendation: Mapped[Recommendation | None] = mapped_column(SIMULATION_RECOMMENDATION)
    recommended_sample_size: Mapped[int | None] = mapped_column(sa.Integer())
    execution_time_ms: Mapped[int | None] = mapped_column(sa.Integer())
    brand: Mapped[str] = mapped_column(sa.String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=_NOW)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    twin_type: Mapped[TwinType] = mapped_column(TWIN_TYPE)
    confidence_level: Mapped[float] = mapped_column(sa.Double(), server_default=sa.text("0.95"))
    random_seed: Mapped[int | None] = mapped_column(sa.BigInteger())
    request_hash: Mapped[str | None] = mapped_column(sa.String(64))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error_message: Mapped[str | None] = mapped_column(sa.Text())
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    ate_draws: Mapped[list[float] | None] = mapped_column(JSONDocument, deferred=True)
    twin_unit_ids: Mapped[list[str] | None] = mapped_column(JSONDocument, deferred=True)
    worker_id: Mapped[str | None] = mapped_column(sa.String(WORKER_ID_LENGTH))
    """The service instance that runs the row (``host:pid:random``); migration 012."""
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When that instance last reported the row alive; migration 012."""

    __table_args__ = (
        sa.CheckConstraint("twin_count > 0", name="twin_count_positive"),
        sa.CheckConstraint("simulated_ci_lower <= simulated_ci_upper", name="ci_ordered"),
        sa.CheckConstraint("recommended_sample_size >= 0", name="sample_size_non_negative"),
        sa.CheckConstraint("execution_time_ms >= 0", name="execution_time_non_negative"),
        sa.CheckConstraint(
            "confidence_level > 0 AND confidence_level < 1", name="confidence_level_range"
        ),
        sa.CheckConstraint("random_seed >= 0", name="random_seed_non_negative"),
        sa.CheckConstraint(
            "simulation_status <> 'completed' OR ("
            "simulated_ate IS NOT NULL AND simulated_ci_lower IS NOT NULL "
            "AND simulated_ci_upper IS NOT NULL AND completed_at IS NOT NULL "
            "AND result IS NOT NULL)",
            name="completed_has_result",
        ),
        sa.CheckConstraint(
            "simulation_status <> 'failed' OR error_message IS NOT NULL",
            name="failed_has_error",
        ),
        sa.Index(None, "model_id"),
        sa.Index(None, "brand"),
        sa.Index(None, "twin_type"),
        sa.Index(None, "intervention_type"),
        sa.Index(None, "simulation_status"),
        sa.Index(None, "created_at"),
        sa.Index(None, "experiment_design_id"),
        sa.Index("ix_twin_simulations_cache_key", "model_id", "request_hash", "random_seed"),
    )


# -- 3.3 twin_fidelity_tracking -----------------------------------------------------------


class TwinFidelityTracking(Base):
    """A simulation compared with its real experiment's outcome."""

    __tablename__ = "twin_fidelity_tracking"

    tracking_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid(), primary_key=True, default=uuid.uuid4, server_default=_NewUuid()
    )
    simulation_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid(), sa.ForeignKey(TwinSimulation.simulation_id, ondelete="CASCADE")
    )
    actual_experiment_id: Mapped[str | None] = mapped_column(ExternalId())
    simulated_ate: Mapped[float] = mapped_column(sa.Double())
    actual_ate: Mapped[float | None] = mapped_column(sa.Double())
    prediction_error: Mapped[float | None] = mapped_column(sa.Double())
    fidelity_grade: Mapped[FidelityGrade] = mapped_column(
        FIDELITY_GRADE, server_default=FidelityGrade.UNVALIDATED.value
    )
    validation_notes: Mapped[str | None] = mapped_column(sa.Text())
    validated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=_NOW)
    actual_se: Mapped[float | None] = mapped_column(sa.Double())
    standardized_error: Mapped[float | None] = mapped_column(sa.Double())
    pit: Mapped[float | None] = mapped_column(sa.Double())
    in_predictive_interval: Mapped[dict[str, bool]] = mapped_column(
        JSONDocument, server_default=_EmptyDocument()
    )
    predictive_intervals: Mapped[dict[str, list[float]]] = mapped_column(
        JSONDocument, server_default=_EmptyDocument()
    )
    model_fidelity_score: Mapped[float | None] = mapped_column(sa.Double())
    fidelity_warning: Mapped[bool] = mapped_column(sa.Boolean(), server_default=sa.false())

    __table_args__ = (
        sa.CheckConstraint("prediction_error >= 0", name="prediction_error_non_negative"),
        sa.CheckConstraint("actual_se >= 0", name="actual_se_non_negative"),
        sa.CheckConstraint("pit >= 0 AND pit <= 1", name="pit_range"),
        sa.CheckConstraint(
            "model_fidelity_score >= 0 AND model_fidelity_score <= 1",
            name="model_fidelity_score_range",
        ),
        sa.Index(None, "simulation_id"),
        sa.Index(None, "actual_experiment_id"),
        sa.Index(None, "fidelity_grade"),
        sa.Index(None, "created_at"),
    )
