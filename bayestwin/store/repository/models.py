"""The repository's model rows: register, read, list, activate, score.

A row's ``rehearsal_*`` columns (migration 013) are copied, when it is registered, from
the rehearsal record its ``performance_metrics`` hold under ``"rehearsal"``
(:func:`bayestwin.store.mlflow.fit_record.rehearsal_record`), and read back by
:meth:`ModelRecords.get_model_rehearsal`.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bayestwin.errors import ConflictError, InvalidInputError, NotFoundError
from bayestwin.schemas import Page, TwinModelInfo, utcnow
from bayestwin.store.repository.base import RepositoryBase
from bayestwin.store.repository.rows import (
    as_uuid,
    check_window,
    json_fields,
    model_info,
    not_found,
    reload,
)
from bayestwin.store.tables import DigitalTwinModel
from bayestwin.vocabulary import TwinType

__all__ = ["REHEARSAL_COLUMNS", "ModelRecords", "rehearsal_columns"]

REHEARSAL_COLUMNS = {
    "rehearsal_false_deploy_rate": "false_deploy_rate",
    "rehearsal_zero_coverage": "zero_coverage",
    "rehearsal_placebos": "placebos",
    "rehearsal_reason": "reason",
}
"""The row's rehearsal columns and the keys of the rehearsal record they hold."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def rehearsal_columns(performance_metrics: dict[str, Any]) -> dict[str, Any]:
    """The ``rehearsal_*`` column values of a row, from its performance metrics.

    Parameters
    ----------
    performance_metrics : dict
        The row's metrics; a rehearsal record under ``"rehearsal"``, when the model ran
        one.

    Returns
    -------
    dict
        Every column of :data:`REHEARSAL_COLUMNS`: None without a record, and for a
        value it lacks or that is not a finite number (the reason: not a string).
    """
    record = performance_metrics.get("rehearsal")
    if not isinstance(record, dict):
        return dict.fromkeys(REHEARSAL_COLUMNS)
    rate, coverage = _number(record.get("false_deploy_rate")), _number(record.get("zero_coverage"))
    placebos = _number(record.get("placebos"))
    reason = record.get("reason")
    return {
        "rehearsal_false_deploy_rate": rate,
        "rehearsal_zero_coverage": coverage,
        "rehearsal_placebos": None if placebos is None else int(placebos),
        "rehearsal_reason": reason if isinstance(reason, str) else None,
    }


def _lock_pair(session: Session, brand: str, twin_type: TwinType) -> None:
    """Serialise changes of one (brand, twin type)'s active model.

    PostgreSQL: a transaction-level advisory lock on the pair (it also covers a pair
    with no rows yet). SQLite: writers already hold the database lock.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            sa.select(
                sa.func.pg_advisory_xact_lock(
                    sa.func.hashtextextended(sa.literal(f"bayestwin:{brand}:{twin_type.value}"), 0)
                )
            )
        )


def _deactivate_pair(
    session: Session, brand: str, twin_type: TwinType, keep: uuid.UUID | None
) -> None:
    stmt = (
        sa.update(DigitalTwinModel)
        .where(
            DigitalTwinModel.brand == brand,
            DigitalTwinModel.twin_type == twin_type,
            DigitalTwinModel.is_active.is_(True),
        )
        .values(is_active=False, updated_at=utcnow())
    )
    if keep is not None:
        stmt = stmt.where(DigitalTwinModel.model_id != keep)
    session.execute(stmt)


def _model_row(session: Session, model_id: uuid.UUID | str) -> DigitalTwinModel:
    """The row of ``model_id``; NotFoundError when there is none."""
    key = as_uuid(model_id, "model_id")
    row = session.get(DigitalTwinModel, key)
    if row is None:
        not_found("model", key)
    return row


def _already_exists(message: str) -> ConflictError:
    return ConflictError(message, code="already_exists")


def _insert_model(
    session: Session, info: TwinModelInfo, active: bool, taken: str
) -> DigitalTwinModel:
    _lock_pair(session, info.brand, info.twin_type)
    if session.get(DigitalTwinModel, info.model_id) is not None:
        raise _already_exists(f"model {info.model_id} is already registered")
    same_version = sa.select(DigitalTwinModel.model_id).where(
        DigitalTwinModel.model_name == info.model_name,
        DigitalTwinModel.model_version == info.model_version,
    )
    if session.scalar(same_version) is not None:
        raise _already_exists(taken)
    if active:
        _deactivate_pair(session, info.brand, info.twin_type, keep=None)
    data = info.model_dump(mode="python")
    data.update(json_fields(info, {"training_config", "performance_metrics"}))
    data["is_active"] = active
    data.update(rehearsal_columns(data["performance_metrics"]))
    row = DigitalTwinModel(**data)
    session.add(row)
    reload(session, row)
    return row


class ModelRecords(RepositoryBase):
    """Rows of ``digital_twin_models``: one per registered model version."""

    def register_model(self, info: TwinModelInfo, *, activate: bool | None = None) -> TwinModelInfo:
        """Store a fitted model's row.

        Parameters
        ----------
        info : TwinModelInfo
            The model. Its ``model_id`` and its (``model_name``, ``model_version``) must
            be new.
        activate : bool, optional
            Make it the active model of its (brand, twin type), deactivating the previous
            one in the same transaction. Defaults to ``info.is_active``.

        Returns
        -------
        TwinModelInfo
            The stored row.

        Raises
        ------
        ConflictError
            ``already_exists`` if the id or the (name, version) pair is taken;
            ``invalid_state`` if asked to activate a model that is not fit for use.
        """
        active = info.is_active if activate is None else activate
        if active and not info.fit_for_use:
            reason = info.diagnostics_reason or "failed diagnostics"
            raise ConflictError(
                f"model {info.model_id} is not fit for use ({reason}) and cannot be "
                "registered as active",
                code="invalid_state",
            )
        taken = f"model {info.model_name!r} version {info.model_version!r} is already registered"
        try:
            with self._write() as session:
                return model_info(_insert_model(session, info, active, taken))
        except ConflictError as exc:
            # A concurrent writer took the id or the (name, version) between check and insert.
            if exc.code == "already_exists" and exc.field in ("model_id", "model_name"):
                raise _already_exists(taken) from None
            raise

    def get_model(self, model_id: uuid.UUID | str) -> TwinModelInfo:
        """Return one model.

        Raises
        ------
        NotFoundError
            If no model has this id.
        """
        with self._read() as session:
            return model_info(_model_row(session, model_id))

    def list_models(
        self,
        *,
        brand: str | None = None,
        twin_type: TwinType | str | None = None,
        active_only: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> Page[TwinModelInfo]:
        """List models, newest first.

        Parameters
        ----------
        brand, twin_type : optional
            Filters.
        active_only : bool
            Only active models.
        limit, offset : int
            Page window (``1 <= limit <= 1000``).

        Returns
        -------
        Page of TwinModelInfo
        """
        check_window(limit, offset)
        conditions: list[sa.ColumnElement[bool]] = []
        if brand is not None:
            conditions.append(DigitalTwinModel.brand == brand)
        if twin_type is not None:
            conditions.append(DigitalTwinModel.twin_type == TwinType(twin_type))
        if active_only:
            conditions.append(DigitalTwinModel.is_active.is_(True))
        with self._read() as session:
            total = session.scalar(
                sa.select(sa.func.count()).select_from(DigitalTwinModel).where(*conditions)
            )
            rows = session.scalars(
                sa.select(DigitalTwinModel)
                .where(*conditions)
                .order_by(DigitalTwinModel.created_at.desc(), DigitalTwinModel.model_id)
                .limit(limit)
                .offset(offset)
            ).all()
            return Page[TwinModelInfo](
                items=[model_info(r) for r in rows], total=total or 0, limit=limit, offset=offset
            )

    def set_active_model(self, model_id: uuid.UUID | str) -> TwinModelInfo:
        """Make a model the active one of its (brand, twin type), atomically.

        The previous active model is deactivated in the same transaction; concurrent
        swaps of the same (brand, twin type) are serialised by row locks.

        Raises
        ------
        NotFoundError
            If no model has this id.
        ConflictError
            ``invalid_state`` if the model is not fit for use.
        """
        key = as_uuid(model_id, "model_id")
        with self._write() as session:
            pair = session.execute(
                sa.select(DigitalTwinModel.brand, DigitalTwinModel.twin_type).where(
                    DigitalTwinModel.model_id == key
                )
            ).one_or_none()
            if pair is None:
                not_found("model", key)
            _lock_pair(session, pair.brand, pair.twin_type)
            row = session.get(DigitalTwinModel, key, populate_existing=True)
            assert row is not None
            if not row.fit_for_use:
                raise ConflictError(
                    f"model {key} is not fit for use "
                    f"({row.diagnostics_reason or 'failed diagnostics'}) and cannot be active",
                    code="invalid_state",
                )
            if not row.is_active:
                _deactivate_pair(session, row.brand, row.twin_type, keep=key)
                session.flush()
                row.is_active = True
                row.updated_at = utcnow()
                reload(session, row)
            return model_info(row)

    def deactivate_model(self, model_id: uuid.UUID | str) -> TwinModelInfo:
        """Mark a model inactive (no-op when it is not active).

        Raises
        ------
        NotFoundError
            If no model has this id.
        """
        key = as_uuid(model_id, "model_id")
        with self._write() as session:
            row = session.get(DigitalTwinModel, key, with_for_update=True)
            if row is None:
                not_found("model", key)
            if row.is_active:
                row.is_active = False
                row.updated_at = utcnow()
                reload(session, row)
            return model_info(row)

    def get_active_model(self, brand: str, twin_type: TwinType | str) -> TwinModelInfo:
        """Return the active model of a (brand, twin type).

        Raises
        ------
        NotFoundError
            ``no_active_model`` (field ``brand``) if none is active; the message lists
            the registered versions, if any.
        """
        kind = TwinType(twin_type)
        with self._read() as session:
            row = session.scalars(
                sa.select(DigitalTwinModel).where(
                    DigitalTwinModel.brand == brand,
                    DigitalTwinModel.twin_type == kind,
                    DigitalTwinModel.is_active.is_(True),
                )
            ).one_or_none()
            if row is not None:
                return model_info(row)
            known = session.scalars(
                sa.select(DigitalTwinModel.model_id)
                .where(DigitalTwinModel.brand == brand, DigitalTwinModel.twin_type == kind)
                .order_by(DigitalTwinModel.created_at.desc())
                .limit(5)
            ).all()
        hint = (
            f"activate one of {[str(k) for k in known]} with set_active_model"
            if known
            else "fit and register a model for it first"
        )
        raise NotFoundError(
            f"active model for brand {brand!r}, twin type {kind} not found; {hint}",
            code="no_active_model",
            field="brand",
        )

    def get_model_rehearsal(self, model_id: uuid.UUID | str) -> dict[str, Any]:
        """Return a model row's rehearsal columns.

        Parameters
        ----------
        model_id : UUID or str
            The row.

        Returns
        -------
        dict
            ``{column: value}`` for every column of :data:`REHEARSAL_COLUMNS` (None
            when the model ran no rehearsal).

        Raises
        ------
        NotFoundError
            If no model has this id.
        """
        with self._read() as session:
            row = _model_row(session, model_id)
            return {name: getattr(row, name) for name in REHEARSAL_COLUMNS}

    def update_fidelity_score(
        self, model_id: uuid.UUID | str, score: float | None
    ) -> TwinModelInfo:
        """Set a model's fidelity score (in [0, 1], or None for unvalidated).

        Raises
        ------
        NotFoundError
            If no model has this id.
        InvalidInputError
            If the score is outside [0, 1].
        """
        key = as_uuid(model_id, "model_id")
        if score is not None and not 0.0 <= score <= 1.0:
            raise InvalidInputError(
                f"fidelity_score must be within [0, 1], got {score}", field="fidelity_score"
            )
        with self._write() as session:
            row = session.get(DigitalTwinModel, key, with_for_update=True)
            if row is None:
                not_found("model", key)
            row.fidelity_score = score
            row.updated_at = utcnow()
            reload(session, row)
            return model_info(row)
