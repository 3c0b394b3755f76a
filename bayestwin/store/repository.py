"""The twin repository: models, simulations, fidelity checks and memory, as pydantic.

:class:`TwinRepository` is the service layer over the tables of
:mod:`bayestwin.store.tables`. Every public method is one transaction: it opens a
session, does its work, converts the ORM rows to pydantic objects
(:class:`~bayestwin.schemas.TwinModelInfo`, :class:`~bayestwin.schemas.SimulationResult`,
:class:`~bayestwin.schemas.FidelityResult`) and commits before it returns. No ORM object
leaves this module.

Life cycle of a simulation row::

    create_simulation  -> pending
    mark_running       -> running
    complete_simulation-> completed   (one UPDATE; the table refuses a completed row
                                       without its ATE, interval, time and result)
    fail_simulation    -> failed      (with the error and the execution time)

:meth:`TwinRepository.simulation_run` wraps the whole cycle and marks the row failed
when the body raises, so a crash never leaves a half-written completed row.

Memory (spec 5.3):

* episodic: :meth:`TwinRepository.find_similar_simulations` returns past completed
  simulations of the same brand, twin type and intervention type, nearest first by
  :func:`config_distance`;
* procedural: :meth:`TwinRepository.cached_result` returns the stored result of the same
  request (:func:`request_hash`) on the same model with the same seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, undefer

from bayestwin.schemas import (
    FidelityResult,
    InterventionConfig,
    NumericRange,
    SimulateInterventionRequest,
    SimulationResult,
    TwinModelInfo,
    utcnow,
)
from bayestwin.store.db import make_engine, session_factory, upgrade
from bayestwin.store.tables import DigitalTwinModel, TwinFidelityTracking, TwinSimulation
from bayestwin.vocabulary import SimulationStatus, TwinType

__all__ = [
    "AlreadyExistsError",
    "InvalidStateError",
    "NoActiveModelError",
    "NotFoundError",
    "Page",
    "SimilarSimulation",
    "SimulationRun",
    "StoreError",
    "TwinRepository",
    "config_distance",
    "request_hash",
]

MAX_PAGE_SIZE = 1000
MAX_ERROR_LENGTH = 10_000
MAX_SEED = 2**63 - 1
REQUEST_HASH_VERSION = 1

RequestLike = SimulateInterventionRequest | SimulationResult


# -- errors ------------------------------------------------------------------------------


class StoreError(Exception):
    """Base class of the repository's errors."""


class NotFoundError(StoreError, LookupError):
    """A row does not exist.

    Attributes
    ----------
    kind : str
        What was looked for, e.g. ``"simulation"``.
    key : object
        The id (or description) that matched nothing.
    """

    def __init__(self, kind: str, key: object, hint: str = "") -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"{kind} {key} not found" + (f"; {hint}" if hint else ""))


class NoActiveModelError(NotFoundError):
    """No model is active for a (brand, twin type)."""


class AlreadyExistsError(StoreError):
    """A row with the same id (or the same unique key) exists already."""


class InvalidStateError(StoreError):
    """The operation does not fit the row's state (e.g. completing a failed simulation)."""


# -- small value types -------------------------------------------------------------------


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

    model_config = ConfigDict(frozen=True)

    items: list[T]
    total: int = Field(..., ge=0)
    limit: int = Field(..., gt=0)
    offset: int = Field(..., ge=0)


class SimilarSimulation(BaseModel):
    """A past simulation and its distance to a request (episodic memory)."""

    model_config = ConfigDict(frozen=True)

    simulation: SimulationResult
    distance: float = Field(..., ge=0.0, description="config_distance to the request.")


# -- request identity and distance -------------------------------------------------------


def _canonical_filter(flt: Any) -> Any:
    if isinstance(flt, NumericRange):
        return {"min": flt.min, "max": flt.max}
    values = {json.dumps(v, sort_keys=True): v for v in flt}
    return [values[k] for k in sorted(values)]


def _request_parts(request: RequestLike) -> tuple[str, TwinType, str, InterventionConfig]:
    if isinstance(request, SimulateInterventionRequest):
        twin_type = request.target_population
    elif isinstance(request, SimulationResult):
        twin_type = request.twin_type
    else:
        raise TypeError(
            "request must be a SimulateInterventionRequest or a SimulationResult, "
            f"not {type(request).__name__}"
        )
    return request.brand, twin_type, request.intervention_type, request.intervention_config


def request_hash(request: RequestLike, *, extra: Mapping[str, Any] | None = None) -> str:
    """Return a stable hash of what a simulation request asks for.

    Two requests hash equal when they ask the same question of a model: the same brand,
    twin type, intervention type, intensity, duration, target filters (order of listed
    values and of columns does not matter), twin count and confidence level. The random
    seed is *not* part of the hash; the result cache keys on it separately.

    Parameters
    ----------
    request : SimulateInterventionRequest or SimulationResult
        The request, or a result that carries the request's fields.
    extra : mapping, optional
        Anything else that changes the answer and should separate cache entries, e.g.
        the decision thresholds in force (``{"min_effect_threshold": 0.05}``). Must be
        JSON-serialisable.

    Returns
    -------
    str
        64 hexadecimal characters (SHA-256 of a canonical JSON document).
    """
    brand, twin_type, intervention_type, config = _request_parts(request)
    canonical_config = {
        "intervention_type": intervention_type,
        "intensity": float(config.intensity),
        "duration_weeks": config.duration_weeks,
        "target": {col: _canonical_filter(flt) for col, flt in sorted(config.target.items())},
    }
    document = {
        "version": REQUEST_HASH_VERSION,
        "brand": brand,
        "twin_type": twin_type.value,
        "intervention_type": intervention_type,
        "intervention_config": canonical_config,
        "twin_count": request.twin_count,
        "confidence_level": float(request.confidence_level),
        "extra": to_jsonable_python(dict(extra or {})),
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_request_hash = request_hash  # for methods whose parameter shadows the name


def _relative_gap(x: float | None, y: float | None) -> float:
    if x is None and y is None:
        return 0.0
    if x is None or y is None:
        return 1.0
    scale = max(abs(x), abs(y))
    return 0.0 if scale == 0.0 else min(1.0, abs(x - y) / scale)


def _filter_distance(a: Any, b: Any) -> float:
    if a is None or b is None:
        return 0.0 if a is b else 1.0
    if isinstance(a, NumericRange) and isinstance(b, NumericRange):
        return 0.5 * (_relative_gap(a.min, b.min) + _relative_gap(a.max, b.max))
    if isinstance(a, list) and isinstance(b, list):
        set_a, set_b = set(a), set(b)
        return 1.0 - len(set_a & set_b) / len(set_a | set_b)
    return 1.0


def config_distance(a: InterventionConfig, b: InterventionConfig) -> float:
    """Distance between two intervention configs (0 for the same config).

    ``|log(1 + intensity_a) - log(1 + intensity_b)|`` plus, for every column filtered in
    either config, a term in [0, 1]:

    * both list allowed values: 1 - Jaccard similarity of the two sets;
    * both give a numeric range: the mean over the two ends of
      ``|x - y| / max(|x|, |y|)`` (capped at 1; 0 when both ends are open, 1 when only
      one is);
    * only one filters the column, or one lists values and the other gives a range: 1.

    The intensity enters on the log scale, so 1 -> 2 is farther than 10 -> 11. Twin
    count, confidence level and duration do not enter: they change how precise an
    answer is, not which question it answers.

    Parameters
    ----------
    a, b : InterventionConfig
        The configs to compare.

    Returns
    -------
    float
        A non-negative distance.
    """
    distance = abs(math.log1p(a.intensity) - math.log1p(b.intensity))
    for column in sorted(set(a.target) | set(b.target)):
        distance += _filter_distance(a.target.get(column), b.target.get(column))
    return distance


# -- row <-> schema ----------------------------------------------------------------------

_SIMULATION_COLUMNS = sorted(
    (set(SimulationResult.model_fields) & set(sa.inspect(TwinSimulation).columns.keys()))
    - {"ate_draws", "twin_unit_ids"}
)
_SIMULATION_HEAVY = ("ate_draws", "twin_unit_ids")
_REQUEST_FIELDS = ("model_id", "brand", "twin_type", "intervention_type", "twin_count")


def _simulation_result(row: TwinSimulation, *, include_draws: bool) -> SimulationResult:
    data: dict[str, Any] = {
        k: v for k, v in (row.result or {}).items() if k in SimulationResult.model_fields
    }
    for name in _SIMULATION_COLUMNS:
        data[name] = getattr(row, name)
    for name in _SIMULATION_HEAVY:
        data[name] = getattr(row, name) if include_draws else None
    return SimulationResult.model_validate(data)


def _reload(session: Session, row: object) -> None:
    """Write pending changes and read the row back, so callers get what was stored."""
    session.flush()
    session.refresh(row)


def _json_fields(obj: BaseModel, names: set[str]) -> dict[str, Any]:
    """JSON-ready values of some fields; non-finite floats become null, as in JSON."""
    return dict(json.loads(obj.model_dump_json(include=names)))


def _model_info(row: DigitalTwinModel) -> TwinModelInfo:
    return TwinModelInfo.model_validate(row)


def _fidelity_result(row: TwinFidelityTracking) -> FidelityResult:
    return FidelityResult.model_validate(row)


def _as_uuid(value: uuid.UUID | str, name: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValueError(f"{name} must be a UUID, got {value!r}") from None


def _check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ValueError(f"random_seed must be between 0 and 2**63 - 1 to be stored, got {seed}")


def _check_window(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")


def _error_text(error: str | BaseException) -> str:
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    else:
        text = error.strip() or "unknown error"
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 15] + " ...[truncated]"
    return text


# -- the run handle ----------------------------------------------------------------------


@dataclass
class SimulationRun:
    """Handle on a running simulation, yielded by :meth:`TwinRepository.simulation_run`.

    Attributes
    ----------
    simulation : SimulationResult
        The row as it was when it started running.
    result : SimulationResult or None
        The completed row, once :meth:`complete` succeeded.
    """

    simulation: SimulationResult
    _repository: TwinRepository = field(repr=False)
    _started: float = field(default_factory=time.perf_counter, repr=False)
    result: SimulationResult | None = None

    @property
    def simulation_id(self) -> uuid.UUID:
        """Id of the simulation row."""
        return self.simulation.simulation_id

    def elapsed_ms(self) -> int:
        """Milliseconds since the run started."""
        return int(round((time.perf_counter() - self._started) * 1000))

    def complete(self, result: SimulationResult) -> SimulationResult:
        """Store the result and mark the simulation completed (one transaction).

        Parameters
        ----------
        result : SimulationResult
            The computed result. It takes this run's ``simulation_id`` and, when unset,
            its ``model_id`` and the elapsed ``execution_time_ms``.

        Returns
        -------
        SimulationResult
            The completed row.
        """
        update: dict[str, Any] = {"simulation_id": self.simulation_id}
        if result.model_id is None:
            update["model_id"] = self.simulation.model_id
        if result.execution_time_ms is None:
            update["execution_time_ms"] = self.elapsed_ms()
        self.result = self._repository.complete_simulation(result.model_copy(update=update))
        return self.result


# -- the repository ----------------------------------------------------------------------


class TwinRepository:
    """Persistence of twin models, simulations and fidelity checks.

    Parameters
    ----------
    engine : Engine, str or URL, optional
        An engine, or a URL to build one with :func:`bayestwin.store.db.make_engine`.
        Defaults to the settings' database (``BAYESTWIN_DATABASE_URL``, else a SQLite
        file in the data directory).
    ensure_schema : bool
        Run :func:`bayestwin.store.db.upgrade` first (idempotent). Turn it off where the
        migrations are run separately or the database user may not create objects.

    Notes
    -----
    Each public method runs in its own transaction and returns pydantic objects. The
    repository is safe to share between threads; an engine it built itself is disposed
    by :meth:`close`.
    """

    def __init__(
        self, engine: Engine | str | URL | None = None, *, ensure_schema: bool = True
    ) -> None:
        self._owns_engine = not isinstance(engine, Engine)
        self._engine = engine if isinstance(engine, Engine) else make_engine(engine)
        self._write_session = session_factory(self._engine, mode="write")
        self._read_session = session_factory(self._engine, mode="read")
        if ensure_schema:
            upgrade(self._engine)

    @property
    def engine(self) -> Engine:
        """The engine in use."""
        return self._engine

    def close(self) -> None:
        """Dispose of the engine if this repository created it."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> TwinRepository:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._write_session.begin() as session:
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._read_session.begin() as session:
            yield session

    # -- models ----------------------------------------------------------------------

    @staticmethod
    def _lock_pair(session: Session, brand: str, twin_type: TwinType) -> None:
        """Serialise changes of one (brand, twin type)'s active model.

        PostgreSQL: a transaction-level advisory lock on the pair (it also covers a
        pair with no rows yet). SQLite: writers already hold the database lock.
        """
        if session.get_bind().dialect.name == "postgresql":
            session.execute(
                sa.select(
                    sa.func.pg_advisory_xact_lock(
                        sa.func.hashtextextended(
                            sa.literal(f"bayestwin:{brand}:{twin_type.value}"), 0
                        )
                    )
                )
            )

    @staticmethod
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
        AlreadyExistsError
            If the id or the (name, version) pair is taken.
        InvalidStateError
            If asked to activate a model that is not fit for use.
        """
        active = info.is_active if activate is None else activate
        if active and not info.fit_for_use:
            reason = info.diagnostics_reason or "failed diagnostics"
            raise InvalidStateError(
                f"model {info.model_id} is not fit for use ({reason}) and cannot be "
                "registered as active"
            )
        taken = f"model {info.model_name!r} version {info.model_version!r} is already registered"
        try:
            with self._write() as session:
                self._lock_pair(session, info.brand, info.twin_type)
                if session.get(DigitalTwinModel, info.model_id) is not None:
                    raise AlreadyExistsError(f"model {info.model_id} is already registered")
                same_version = sa.select(DigitalTwinModel.model_id).where(
                    DigitalTwinModel.model_name == info.model_name,
                    DigitalTwinModel.model_version == info.model_version,
                )
                if session.scalar(same_version) is not None:
                    raise AlreadyExistsError(taken)
                if active:
                    self._deactivate_pair(session, info.brand, info.twin_type, keep=None)
                data = info.model_dump(mode="python")
                data.update(_json_fields(info, {"training_config", "performance_metrics"}))
                data["is_active"] = active
                row = DigitalTwinModel(**data)
                session.add(row)
                _reload(session, row)
                return _model_info(row)
        except IntegrityError as exc:
            # A concurrent writer took the id or the (name, version) between check and insert.
            if "model_name" in str(exc.orig) or "pk_digital_twin_models" in str(exc.orig):
                raise AlreadyExistsError(taken) from exc
            raise

    def get_model(self, model_id: uuid.UUID | str) -> TwinModelInfo:
        """Return one model.

        Raises
        ------
        NotFoundError
            If no model has this id.
        """
        key = _as_uuid(model_id, "model_id")
        with self._read() as session:
            row = session.get(DigitalTwinModel, key)
            if row is None:
                raise NotFoundError("model", key)
            return _model_info(row)

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
        _check_window(limit, offset)
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
                items=[_model_info(r) for r in rows], total=total or 0, limit=limit, offset=offset
            )

    def set_active_model(self, model_id: uuid.UUID | str) -> TwinModelInfo:
        """Make a model the active one of its (brand, twin type), atomically.

        The previous active model is deactivated in the same transaction; concurrent
        swaps of the same (brand, twin type) are serialised by row locks.

        Raises
        ------
        NotFoundError
            If no model has this id.
        InvalidStateError
            If the model is not fit for use.
        """
        key = _as_uuid(model_id, "model_id")
        with self._write() as session:
            pair = session.execute(
                sa.select(DigitalTwinModel.brand, DigitalTwinModel.twin_type).where(
                    DigitalTwinModel.model_id == key
                )
            ).one_or_none()
            if pair is None:
                raise NotFoundError("model", key)
            self._lock_pair(session, pair.brand, pair.twin_type)
            row = session.get(DigitalTwinModel, key, populate_existing=True)
            assert row is not None
            if not row.fit_for_use:
                raise InvalidStateError(
                    f"model {key} is not fit for use "
                    f"({row.diagnostics_reason or 'failed diagnostics'}) and cannot be active"
                )
            if not row.is_active:
                self._deactivate_pair(session, row.brand, row.twin_type, keep=key)
                session.flush()
                row.is_active = True
                row.updated_at = utcnow()
                _reload(session, row)
            return _model_info(row)

    def deactivate_model(self, model_id: uuid.UUID | str) -> TwinModelInfo:
        """Mark a model inactive (no-op when it is not active).

        Raises
        ------
        NotFoundError
            If no model has this id.
        """
        key = _as_uuid(model_id, "model_id")
        with self._write() as session:
            row = session.get(DigitalTwinModel, key, with_for_update=True)
            if row is None:
                raise NotFoundError("model", key)
            if row.is_active:
                row.is_active = False
                row.updated_at = utcnow()
                _reload(session, row)
            return _model_info(row)

    def get_active_model(self, brand: str, twin_type: TwinType | str) -> TwinModelInfo:
        """Return the active model of a (brand, twin type).

        Raises
        ------
        NoActiveModelError
            If none is active; the message lists the registered versions, if any.
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
                return _model_info(row)
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
        raise NoActiveModelError("active model for", f"brand {brand!r}, twin type {kind}", hint)

    def update_fidelity_score(
        self, model_id: uuid.UUID | str, score: float | None
    ) -> TwinModelInfo:
        """Set a model's fidelity score (in [0, 1], or None for unvalidated).

        Raises
        ------
        NotFoundError
            If no model has this id.
        ValueError
            If the score is outside [0, 1].
        """
        key = _as_uuid(model_id, "model_id")
        if score is not None and not 0.0 <= score <= 1.0:
            raise ValueError(f"fidelity_score must be within [0, 1], got {score}")
        with self._write() as session:
            row = session.get(DigitalTwinModel, key, with_for_update=True)
            if row is None:
                raise NotFoundError("model", key)
            row.fidelity_score = score
            row.updated_at = utcnow()
            _reload(session, row)
            return _model_info(row)

    # -- simulations -----------------------------------------------------------------

    def create_simulation(
        self, simulation: SimulationResult, *, request_hash: str | None = None
    ) -> SimulationResult:
        """Store a new simulation as pending.

        Parameters
        ----------
        simulation : SimulationResult
            The request's fields (brand, twin type, intervention, twin count, ...), in
            status pending. ``model_id`` must name a registered model.
        request_hash : str, optional
            Cache key of the request; defaults to :func:`request_hash` of ``simulation``.

        Returns
        -------
        SimulationResult
            The pending row.

        Raises
        ------
        NotFoundError
            If the model does not exist.
        AlreadyExistsError
            If the simulation id is taken.
        InvalidStateError
            If ``simulation`` is not pending.
        ValueError
            If ``model_id`` is missing or the seed cannot be stored.
        """
        if simulation.simulation_status is not SimulationStatus.PENDING:
            raise InvalidStateError(
                f"a new simulation must be pending, got {simulation.simulation_status}"
            )
        if simulation.model_id is None:
            raise ValueError("model_id is required to store a simulation")
        _check_seed(simulation.random_seed)
        key = request_hash or _request_hash(simulation)
        with self._write() as session:
            if session.get(DigitalTwinModel, simulation.model_id) is None:
                raise NotFoundError("model", simulation.model_id)
            if session.get(TwinSimulation, simulation.simulation_id) is not None:
                raise AlreadyExistsError(f"simulation {simulation.simulation_id} already exists")
            row = TwinSimulation(
                simulation_id=simulation.simulation_id,
                model_id=simulation.model_id,
                experiment_design_id=simulation.experiment_design_id,
                brand=simulation.brand,
                twin_type=simulation.twin_type,
                intervention_type=simulation.intervention_type,
                intervention_config=simulation.intervention_config.model_dump(mode="json"),
                twin_count=simulation.twin_count,
                confidence_level=simulation.confidence_level,
                random_seed=simulation.random_seed,
                request_hash=key,
                simulation_status=SimulationStatus.PENDING,
                created_at=simulation.created_at,
            )
            session.add(row)
            _reload(session, row)
            return _simulation_result(row, include_draws=False)

    @staticmethod
    def _locked_simulation(session: Session, key: uuid.UUID) -> TwinSimulation:
        row = session.get(TwinSimulation, key, with_for_update=True, populate_existing=True)
        if row is None:
            raise NotFoundError("simulation", key)
        return row

    def mark_running(self, simulation_id: uuid.UUID | str) -> SimulationResult:
        """Move a simulation from pending to running.

        Raises
        ------
        NotFoundError
            If the simulation does not exist.
        InvalidStateError
            If it is not pending.
        """
        key = _as_uuid(simulation_id, "simulation_id")
        with self._write() as session:
            row = self._locked_simulation(session, key)
            if row.simulation_status is not SimulationStatus.PENDING:
                raise InvalidStateError(
                    f"simulation {key} is {row.simulation_status}, not pending; cannot start it"
                )
            row.simulation_status = SimulationStatus.RUNNING
            row.started_at = utcnow()
            _reload(session, row)
            return _simulation_result(row, include_draws=False)

    def complete_simulation(self, result: SimulationResult) -> SimulationResult:
        """Store a simulation's result and mark it completed, in one transaction.

        Parameters
        ----------
        result : SimulationResult
            The computed result; ``simulation_id`` names a running simulation and the
            request's fields (model, brand, twin type, intervention type, twin count)
            must equal the stored ones. ``completed_at`` defaults to now.

        Returns
        -------
        SimulationResult
            The completed row, draws included.

        Raises
        ------
        NotFoundError
            If the simulation does not exist.
        InvalidStateError
            If it is not running, or the result belongs to another request.
        """
        payload = result.model_dump()
        payload["simulation_status"] = SimulationStatus.COMPLETED
        payload["completed_at"] = result.completed_at or utcnow()
        done = SimulationResult.model_validate(payload)
        if done.simulated_ci_lower is None or done.simulated_ci_upper is None:
            raise ValueError("a completed simulation needs simulated_ci_lower and _upper")
        _check_seed(done.random_seed)
        with self._write() as session:
            row = self._locked_simulation(session, done.simulation_id)
            if row.simulation_status is not SimulationStatus.RUNNING:
                raise InvalidStateError(
                    f"simulation {done.simulation_id} is {row.simulation_status}, not running; "
                    "cannot complete it"
                )
            for name in _REQUEST_FIELDS:
                stored, given = getattr(row, name), getattr(done, name)
                if stored != given:
                    raise InvalidStateError(
                        f"result does not belong to simulation {done.simulation_id}: "
                        f"{name} is {given!r}, stored {stored!r}"
                    )
            summary = json.loads(done.model_dump_json(exclude=set(_SIMULATION_HEAVY)))
            heavy = _json_fields(done, set(_SIMULATION_HEAVY))
            row.simulation_status = SimulationStatus.COMPLETED
            row.simulated_ate = done.simulated_ate
            row.simulated_ci_lower = done.simulated_ci_lower
            row.simulated_ci_upper = done.simulated_ci_upper
            row.recommendation = done.recommendation
            row.recommended_sample_size = done.recommended_sample_size
            row.execution_time_ms = done.execution_time_ms
            row.completed_at = done.completed_at
            row.intervention_config = done.intervention_config.model_dump(mode="json")
            row.confidence_level = done.confidence_level
            if done.random_seed is not None:
                row.random_seed = done.random_seed
            if done.experiment_design_id is not None:
                row.experiment_design_id = done.experiment_design_id
            row.error_message = None
            row.result = summary
            row.ate_draws = heavy.get("ate_draws")
            row.twin_unit_ids = heavy.get("twin_unit_ids")
            _reload(session, row)
            return _simulation_result(row, include_draws=True)

    def fail_simulation(
        self,
        simulation_id: uuid.UUID | str,
        error: str | BaseException,
        *,
        execution_time_ms: int | None = None,
    ) -> SimulationResult:
        """Mark a pending or running simulation failed, with its error.

        Parameters
        ----------
        simulation_id : UUID or str
            The simulation.
        error : str or exception
            What went wrong; an exception is stored as ``"Type: message"``.
        execution_time_ms : int, optional
            Time spent before the failure.

        Raises
        ------
        NotFoundError
            If the simulation does not exist.
        InvalidStateError
            If it already completed or failed.
        """
        key = _as_uuid(simulation_id, "simulation_id")
        if execution_time_ms is not None and execution_time_ms < 0:
            raise ValueError(f"execution_time_ms must be >= 0, got {execution_time_ms}")
        with self._write() as session:
            row = self._locked_simulation(session, key)
            if row.simulation_status in (SimulationStatus.COMPLETED, SimulationStatus.FAILED):
                raise InvalidStateError(
                    f"simulation {key} is already {row.simulation_status}; cannot fail it"
                )
            row.simulation_status = SimulationStatus.FAILED
            row.error_message = _error_text(error)
            row.execution_time_ms = execution_time_ms
            row.completed_at = utcnow()
            _reload(session, row)
            return _simulation_result(row, include_draws=False)

    @contextmanager
    def simulation_run(
        self, simulation: SimulationResult, *, request_hash: str | None = None
    ) -> Iterator[SimulationRun]:
        """Run a simulation inside its row's life cycle.

        Creates the pending row, marks it running and yields a :class:`SimulationRun`;
        call its ``complete(result)`` once the result is computed. If the body raises,
        the row is marked failed with the error and the elapsed time, and the exception
        propagates. If the body ends without completing, the row is marked failed and
        :class:`InvalidStateError` is raised.

        Parameters
        ----------
        simulation : SimulationResult
            The pending simulation (see :meth:`create_simulation`).
        request_hash : str, optional
            Cache key of the request.

        Yields
        ------
        SimulationRun
        """
        pending = self.create_simulation(simulation, request_hash=request_hash)
        run = SimulationRun(simulation=pending, _repository=self)
        run.simulation = self.mark_running(pending.simulation_id)
        try:
            yield run
        except BaseException as exc:
            try:
                self.fail_simulation(run.simulation_id, exc, execution_time_ms=run.elapsed_ms())
            except Exception as store_exc:  # keep the original error in front
                exc.add_note(
                    f"marking simulation {run.simulation_id} failed also failed: {store_exc!r}"
                )
            raise
        if run.result is None:
            self.fail_simulation(
                run.simulation_id,
                "the simulation ended without a result",
                execution_time_ms=run.elapsed_ms(),
            )
            raise InvalidStateError(
                f"simulation {run.simulation_id} ended without complete(); marked failed"
            )

    def get_simulation(
        self, simulation_id: uuid.UUID | str, *, include_draws: bool = True
    ) -> SimulationResult:
        """Return one simulation.

        Parameters
        ----------
        simulation_id : UUID or str
            The simulation.
        include_draws : bool
            Load ``ate_draws`` and ``twin_unit_ids`` (large) too.

        Raises
        ------
        NotFoundError
            If the simulation does not exist.
        """
        key = _as_uuid(simulation_id, "simulation_id")
        options = [undefer(TwinSimulation.ate_draws), undefer(TwinSimulation.twin_unit_ids)]
        with self._read() as session:
            row = session.get(TwinSimulation, key, options=options if include_draws else [])
            if row is None:
                raise NotFoundError("simulation", key)
            return _simulation_result(row, include_draws=include_draws)

    def list_simulations(
        self,
        *,
        brand: str | None = None,
        twin_type: TwinType | str | None = None,
        status: SimulationStatus | str | None = None,
        intervention_type: str | None = None,
        model_id: uuid.UUID | str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[SimulationResult]:
        """List simulations, newest first, without their draws.

        Parameters
        ----------
        brand, twin_type, status, intervention_type, model_id : optional
            Filters (all must hold).
        limit, offset : int
            Page window (``1 <= limit <= 1000``).

        Returns
        -------
        Page of SimulationResult
            ``total`` counts every match.
        """
        _check_window(limit, offset)
        conditions: list[sa.ColumnElement[bool]] = []
        if brand is not None:
            conditions.append(TwinSimulation.brand == brand)
        if twin_type is not None:
            conditions.append(TwinSimulation.twin_type == TwinType(twin_type))
        if status is not None:
            conditions.append(TwinSimulation.simulation_status == SimulationStatus(status))
        if intervention_type is not None:
            conditions.append(TwinSimulation.intervention_type == intervention_type)
        if model_id is not None:
            conditions.append(TwinSimulation.model_id == _as_uuid(model_id, "model_id"))
        with self._read() as session:
            total = session.scalar(
                sa.select(sa.func.count()).select_from(TwinSimulation).where(*conditions)
            )
            rows = session.scalars(
                sa.select(TwinSimulation)
                .where(*conditions)
                .order_by(TwinSimulation.created_at.desc(), TwinSimulation.simulation_id)
                .limit(limit)
                .offset(offset)
            ).all()
            return Page[SimulationResult](
                items=[_simulation_result(r, include_draws=False) for r in rows],
                total=total or 0,
                limit=limit,
                offset=offset,
            )

    def fail_stale_simulations(
        self, older_than: timedelta, *, reason: str = "abandoned"
    ) -> list[uuid.UUID]:
        """Mark pending or running simulations created before ``now - older_than`` failed.

        A process that dies mid-simulation leaves its row pending or running (never
        half-written completed); call this at start-up, e.g. with the settings'
        ``simulation_timeout_seconds``, to close such rows.

        Parameters
        ----------
        older_than : timedelta
            Age after which an unfinished simulation counts as abandoned.
        reason : str
            Start of the error message stored on each row.

        Returns
        -------
        list of UUID
            The simulations marked failed.
        """
        if older_than < timedelta(0):
            raise ValueError(f"older_than must be >= 0, got {older_than}")
        now = utcnow()
        cutoff = now - older_than
        with self._write() as session:
            rows = session.scalars(
                sa.select(TwinSimulation)
                .where(
                    TwinSimulation.simulation_status.in_(
                        [SimulationStatus.PENDING, SimulationStatus.RUNNING]
                    ),
                    TwinSimulation.created_at < cutoff,
                )
                .order_by(TwinSimulation.simulation_id)
                .with_for_update()
            ).all()
            for row in rows:
                row.error_message = f"{reason}: still {row.simulation_status} after {older_than}"
                row.simulation_status = SimulationStatus.FAILED
                row.completed_at = now
            session.flush()
            return [row.simulation_id for row in rows]

    # -- fidelity --------------------------------------------------------------------

    def record_validation(self, result: FidelityResult) -> FidelityResult:
        """Store a validation and, when it carries one, the model's new fidelity score.

        Both writes happen in one transaction. The score is taken from
        ``result.model_fidelity_score``; when it is None the model's score is left as is.

        Parameters
        ----------
        result : FidelityResult
            The comparison; ``simulation_id`` names a completed simulation.

        Returns
        -------
        FidelityResult
            The stored row.

        Raises
        ------
        NotFoundError
            If the simulation does not exist.
        InvalidStateError
            If the simulation has not completed.
        AlreadyExistsError
            If the tracking id is taken.
        """
        if result.simulation_id is None:
            raise ValueError("simulation_id is required to record a validation")
        with self._write() as session:
            sim = session.get(TwinSimulation, result.simulation_id)
            if sim is None:
                raise NotFoundError("simulation", result.simulation_id)
            if sim.simulation_status is not SimulationStatus.COMPLETED:
                raise InvalidStateError(
                    f"simulation {result.simulation_id} is {sim.simulation_status}; only a "
                    "completed simulation can be validated"
                )
            if session.get(TwinFidelityTracking, result.tracking_id) is not None:
                raise AlreadyExistsError(f"validation {result.tracking_id} already exists")
            data = result.model_dump(mode="python")
            data.update(_json_fields(result, {"in_predictive_interval", "predictive_intervals"}))
            row = TwinFidelityTracking(**data)
            session.add(row)
            if result.model_fidelity_score is not None:
                model = session.get(DigitalTwinModel, sim.model_id, with_for_update=True)
                assert model is not None
                model.fidelity_score = result.model_fidelity_score
                model.updated_at = utcnow()
            _reload(session, row)
            return _fidelity_result(row)

    def get_validation(self, tracking_id: uuid.UUID | str) -> FidelityResult:
        """Return one validation.

        Raises
        ------
        NotFoundError
            If no validation has this id.
        """
        key = _as_uuid(tracking_id, "tracking_id")
        with self._read() as session:
            row = session.get(TwinFidelityTracking, key)
            if row is None:
                raise NotFoundError("validation", key)
            return _fidelity_result(row)

    def list_validations(self, simulation_id: uuid.UUID | str) -> list[FidelityResult]:
        """Return a simulation's validations, oldest first.

        Raises
        ------
        NotFoundError
            If the simulation does not exist.
        """
        key = _as_uuid(simulation_id, "simulation_id")
        with self._read() as session:
            if session.get(TwinSimulation, key) is None:
                raise NotFoundError("simulation", key)
            rows = session.scalars(
                sa.select(TwinFidelityTracking)
                .where(TwinFidelityTracking.simulation_id == key)
                .order_by(TwinFidelityTracking.created_at, TwinFidelityTracking.tracking_id)
            ).all()
            return [_fidelity_result(r) for r in rows]

    def fidelity_history(
        self,
        model_id: uuid.UUID | str,
        *,
        since: datetime | None = None,
        window_days: int | None = None,
    ) -> list[FidelityResult]:
        """Return a model's validations, oldest first.

        A validation's time is ``validated_at``, else ``created_at``.

        Parameters
        ----------
        model_id : UUID or str
            The model.
        since : datetime, optional
            Only validations at or after this time.
        window_days : int, optional
            Only validations of the last ``window_days`` days (e.g. the settings'
            ``fidelity_validation_window_days``). Not together with ``since``.

        Raises
        ------
        NotFoundError
            If the model does not exist.
        """
        key = _as_uuid(model_id, "model_id")
        if since is not None and window_days is not None:
            raise ValueError("give since or window_days, not both")
        if window_days is not None:
            if window_days <= 0:
                raise ValueError(f"window_days must be > 0, got {window_days}")
            since = utcnow() - timedelta(days=window_days)
        when = sa.func.coalesce(TwinFidelityTracking.validated_at, TwinFidelityTracking.created_at)
        stmt = (
            sa.select(TwinFidelityTracking)
            .join(
                TwinSimulation, TwinSimulation.simulation_id == TwinFidelityTracking.simulation_id
            )
            .where(TwinSimulation.model_id == key)
            .order_by(when, TwinFidelityTracking.created_at, TwinFidelityTracking.tracking_id)
        )
        if since is not None:
            stmt = stmt.where(
                sa.or_(
                    TwinFidelityTracking.validated_at >= since,
                    sa.and_(
                        TwinFidelityTracking.validated_at.is_(None),
                        TwinFidelityTracking.created_at >= since,
                    ),
                )
            )
        with self._read() as session:
            if session.get(DigitalTwinModel, key) is None:
                raise NotFoundError("model", key)
            return [_fidelity_result(r) for r in session.scalars(stmt).all()]

    # -- memory ----------------------------------------------------------------------

    def find_similar_simulations(
        self,
        request: RequestLike,
        *,
        model_id: uuid.UUID | str | None = None,
        limit: int = 5,
        max_distance: float | None = None,
        candidates: int = 500,
    ) -> list[SimilarSimulation]:
        """Past completed simulations that asked a similar question (episodic memory).

        Candidates are the ``candidates`` most recent completed simulations with the
        request's brand, twin type and intervention type (and ``model_id`` when given);
        they are ranked by :func:`config_distance` to the request's config, newest first
        among equals.

        Parameters
        ----------
        request : SimulateInterventionRequest or SimulationResult
            What is being asked. A stored simulation is never returned as similar to
            itself.
        model_id : UUID or str, optional
            Only simulations of this model.
        limit : int
            How many to return at most.
        max_distance : float, optional
            Drop candidates farther than this.
        candidates : int
            How many recent simulations to rank.

        Returns
        -------
        list of SimilarSimulation
            Nearest first; simulations come without their draws.
        """
        if limit < 1 or candidates < 1:
            raise ValueError("limit and candidates must be >= 1")
        brand, twin_type, intervention_type, config = _request_parts(request)
        stmt = (
            sa.select(TwinSimulation)
            .where(
                TwinSimulation.brand == brand,
                TwinSimulation.twin_type == twin_type,
                TwinSimulation.intervention_type == intervention_type,
                TwinSimulation.simulation_status == SimulationStatus.COMPLETED,
            )
            .order_by(TwinSimulation.created_at.desc(), TwinSimulation.simulation_id)
            .limit(candidates)
        )
        if model_id is not None:
            stmt = stmt.where(TwinSimulation.model_id == _as_uuid(model_id, "model_id"))
        if isinstance(request, SimulationResult):
            stmt = stmt.where(TwinSimulation.simulation_id != request.simulation_id)
        with self._read() as session:
            found = [_simulation_result(r, include_draws=False) for r in session.scalars(stmt)]
        # sorted() is stable: among equal distances the newest stays first.
        ranked = sorted(
            ((config_distance(config, sim.intervention_config), sim) for sim in found),
            key=lambda item: item[0],
        )
        return [
            SimilarSimulation(simulation=sim, distance=distance)
            for distance, sim in ranked
            if max_distance is None or distance <= max_distance
        ][:limit]

    def cached_result(
        self,
        model_id: uuid.UUID | str,
        request_hash: str,
        random_seed: int | None,
    ) -> SimulationResult | None:
        """The stored result of the same request, model and seed (procedural memory).

        Parameters
        ----------
        model_id : UUID or str
            The model (a model row is one version).
        request_hash : str
            :func:`request_hash` of the request.
        random_seed : int or None
            The request's seed. Without a seed a request asks for fresh draws, so there
            is no cache hit.

        Returns
        -------
        SimulationResult or None
            The most recent completed match, draws included; None when there is none.
        """
        if random_seed is None:
            return None
        key = _as_uuid(model_id, "model_id")
        with self._read() as session:
            row = session.scalars(
                sa.select(TwinSimulation)
                .options(undefer(TwinSimulation.ate_draws), undefer(TwinSimulation.twin_unit_ids))
                .where(
                    TwinSimulation.model_id == key,
                    TwinSimulation.request_hash == request_hash,
                    TwinSimulation.random_seed == random_seed,
                    TwinSimulation.simulation_status == SimulationStatus.COMPLETED,
                )
                .order_by(TwinSimulation.completed_at.desc(), TwinSimulation.simulation_id)
                .limit(1)
            ).one_or_none()
            return None if row is None else _simulation_result(row, include_draws=True)
