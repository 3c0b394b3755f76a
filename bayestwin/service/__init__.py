"""The one workflow the faces share: fit -> register -> activate -> simulate -> validate.

:class:`TwinService` ties the pure core (:mod:`bayestwin.model.fit`,
:mod:`bayestwin.engine.simulation`, :mod:`bayestwin.engine.fidelity`) to persistence
(:class:`~bayestwin.store.TwinRepository`, the model directories, and the MLflow
registry when it is available). The agent tools, the CLI and the REST API call it and
nothing else; it computes nothing itself.

Where things live:

* model directories (:func:`bayestwin.model.fit.save_model`) under
  ``<data_dir>/models`` (or ``model_store_dir``); the model row's ``artifact_uri`` is
  the directory;
* model rows, simulations and validations in the database of the settings;
* real experiments' results, registered with :meth:`TwinService.register_experiment_result`,
  as one JSON file per experiment under ``<data_dir>/experiments``
  (:class:`JsonExperimentResultStore`); any object with a ``get_result(experiment_id)``
  method (:class:`ExperimentResultSource`) can take its place, e.g. a reader of the
  platform's experiment tables.

A simulation moves through its row's life cycle: the request is validated (field,
model, intervention type, target filters) before any row is written; a completed
result of the same request, model and seed is returned from the procedural cache; else
a pending row is written, a worker marks it running, runs
:meth:`~bayestwin.engine.simulation.SimulationEngine.simulate` and completes it, or fails it
with the error. A timer fails a simulation still pending or running after
``simulation_timeout_seconds``. Without an active model for the (brand, twin type) the
service raises :class:`NoActiveModelError`: it never makes numbers up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

import pandas as pd
from pydantic import ValidationError

from bayestwin.settings import Settings, load_settings
from bayestwin.engine.fidelity import FidelitySummary, FidelityTracker
from bayestwin.model.fit import TwinGenerator, TwinModelSpec, load_model, save_model
from bayestwin.model.fitted import FittedTwinModel, ModelNotUsableError
from bayestwin.core.population import eligible_mask
from bayestwin.schemas import (
    ExperimentOutcome,
    FidelityResult,
    SimulateInterventionRequest,
    SimulationResult,
    TwinModelInfo,
)
from bayestwin.engine.simulation import SimulationEngine
from bayestwin.store import (
    AlreadyExistsError,
    InvalidStateError,
    NoActiveModelError,
    NotFoundError,
    Page,
    SimilarSimulation,
    TwinRepository,
    request_hash,
)
from bayestwin.vocabulary import SimulationStatus, TwinType

__all__ = [
    "ExperimentResultNotFoundError",
    "ExperimentResultSource",
    "InvalidRequestError",
    "JsonExperimentResultStore",
    "MappingExperimentResultSource",
    "ModelFidelity",
    "ModelNotUsableError",
    "NoActiveModelError",
    "SimulationTimeoutError",
    "TwinService",
]

logger = logging.getLogger(__name__)

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def _slug(text: str, limit: int = 60) -> str:
    return _SLUG.sub("-", text).strip("-.")[:limit] or "x"


# -- errors ------------------------------------------------------------------------------


class InvalidRequestError(ValueError):
    """A request is wrong; :attr:`field` names the field at fault.

    Attributes
    ----------
    field : str
        Dotted path of the field, e.g. ``"intervention_config.target"``.
    message : str
        What is wrong and what is allowed.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class SimulationTimeoutError(TimeoutError):
    """A simulation ran past ``simulation_timeout_seconds`` and was marked failed."""

    def __init__(self, simulation_id: uuid.UUID, seconds: float) -> None:
        self.simulation_id = simulation_id
        self.seconds = seconds
        super().__init__(
            f"simulation {simulation_id} did not finish within {seconds:g} s "
            "(simulation_timeout_seconds) and was marked failed"
        )


class ExperimentResultNotFoundError(NotFoundError):
    """No result is registered for a real experiment."""


# -- real experiments' results -----------------------------------------------------------


@runtime_checkable
class ExperimentResultSource(Protocol):
    """Where :meth:`TwinService.validate` finds a real experiment's result by its id."""

    def get_result(self, experiment_id: str) -> ExperimentOutcome | None:
        """Return the experiment's result, or None when it has none (yet)."""
        ...


class MappingExperimentResultSource:
    """Results held in memory, keyed by experiment id.

    Parameters
    ----------
    results : mapping of str to ExperimentOutcome, optional
        Initial results.
    """

    def __init__(self, results: Mapping[str, ExperimentOutcome] | None = None) -> None:
        self._results = dict(results or {})
        self._lock = threading.Lock()

    def get_result(self, experiment_id: str) -> ExperimentOutcome | None:
        """Return the experiment's result, or None."""
        with self._lock:
            return self._results.get(experiment_id)

    def register_result(
        self, experiment_id: str, outcome: ExperimentOutcome, *, overwrite: bool = False
    ) -> ExperimentOutcome:
        """Store a result (see :meth:`JsonExperimentResultStore.register_result`)."""
        stored = _with_experiment_id(experiment_id, outcome)
        with self._lock:
            if not overwrite and experiment_id in self._results:
                raise AlreadyExistsError(f"experiment {experiment_id!r} already has a result")
            self._results[experiment_id] = stored
        return stored


class JsonExperimentResultStore:
    """Real experiments' results as one JSON file per experiment in a directory.

    A file holds an :class:`~bayestwin.schemas.ExperimentOutcome` as JSON; its name is a
    readable slug of the experiment id plus a hash of the id (so any id is safe as a
    file name, and distinct ids never share a file). Files are written to a temporary
    name and renamed into place, so a reader never sees half a file.

    Parameters
    ----------
    directory : path-like
        Folder of the files (created on the first write).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path_for(self, experiment_id: str) -> Path:
        """Return the file that holds (or will hold) an experiment's result."""
        digest = hashlib.sha256(experiment_id.encode("utf-8")).hexdigest()[:16]
        return self.directory / f"{_slug(experiment_id)}-{digest}.json"

    def get_result(self, experiment_id: str) -> ExperimentOutcome | None:
        """Return the experiment's result, or None when no file exists."""
        path = self.path_for(experiment_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        outcome = ExperimentOutcome.model_validate_json(text)
        if outcome.actual_experiment_id not in (None, experiment_id):
            raise ValueError(f"{path} holds experiment {outcome.actual_experiment_id!r}")
        return outcome

    def register_result(
        self, experiment_id: str, outcome: ExperimentOutcome, *, overwrite: bool = False
    ) -> ExperimentOutcome:
        """Store an experiment's result.

        Parameters
        ----------
        experiment_id : str
            The experiment's id (any non-empty string).
        outcome : ExperimentOutcome
            Its result; ``actual_experiment_id`` is set to ``experiment_id``.
        overwrite : bool
            Replace an existing result instead of refusing it.

        Returns
        -------
        ExperimentOutcome
            What was stored.

        Raises
        ------
        AlreadyExistsError
            If the experiment has a result and ``overwrite`` is False.
        """
        stored = _with_experiment_id(experiment_id, outcome)
        path = self.path_for(experiment_id)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(stored.model_dump_json(indent=2), encoding="utf-8")
        try:
            if overwrite:
                os.replace(tmp, path)
            else:
                # link() fails when the target exists: no check-then-write race.
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise AlreadyExistsError(
                        f"experiment {experiment_id!r} already has a result ({path}); "
                        "pass overwrite=True to replace it"
                    ) from None
        finally:
            tmp.unlink(missing_ok=True)
        return stored


def _with_experiment_id(experiment_id: str, outcome: ExperimentOutcome) -> ExperimentOutcome:
    if not isinstance(experiment_id, str) or not experiment_id.strip():
        raise InvalidRequestError("actual_experiment_id", "must be a non-empty string")
    if outcome.actual_experiment_id not in (None, experiment_id):
        raise InvalidRequestError(
            "actual_experiment_id",
            f"the outcome names experiment {outcome.actual_experiment_id!r}, not {experiment_id!r}",
        )
    return outcome.model_copy(update={"actual_experiment_id": experiment_id})


# -- the MLflow registry, when present ---------------------------------------------------


class _Registry:
    """Thin adapter over :mod:`bayestwin.store.mlflow.registry` (MLflow); imports it on first use."""

    MODULE = "bayestwin.store.mlflow.registry"

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._module: Any = None

    @classmethod
    def discover(cls, settings: Settings) -> tuple[_Registry | None, str]:
        try:
            found = importlib.util.find_spec(cls.MODULE) is not None
        except ImportError:
            found = False
        if not found:
            return None, "unavailable (bayestwin.store.mlflow.registry is not installed)"
        uri = settings.resolved_mlflow_uri()
        return cls(uri), f"enabled ({uri})"

    @property
    def module(self) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self.MODULE)
        return self._module

    def model_name(self, brand: str, twin_type: TwinType) -> str:
        return str(self.module.registered_model_name(brand, twin_type))

    def log_fit(self, fitted: FittedTwinModel, name: str) -> dict[str, str]:
        logged = self.module.log_fit(fitted, tracking_uri=self.tracking_uri, registered_name=name)
        return {
            "model_name": str(logged.name),
            "model_version": str(logged.version),
            "mlflow_run_id": str(logged.run_id),
        }

    def set_active(self, info: TwinModelInfo) -> None:
        self.module.set_active(
            info.model_name, info.model_version, tracking_uri=self.tracking_uri, force=True
        )

    def log_fidelity(self, info: TwinModelInfo, result: FidelityResult, step: int) -> None:
        if info.mlflow_run_id:
            self.module.log_fidelity(
                info.mlflow_run_id, result, step=step, tracking_uri=self.tracking_uri
            )

    def load_fitted(self, info: TwinModelInfo) -> FittedTwinModel:
        fitted: FittedTwinModel = self.module.load_fitted(
            info.model_name, version=info.model_version, tracking_uri=self.tracking_uri
        )
        return fitted


# -- small value types -------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFidelity:
    """A model's fidelity: the summary over its window and the validations behind it.

    Attributes
    ----------
    model : TwinModelInfo
        The model row.
    summary : FidelitySummary
        Score, validation count, warning and grade counts over the window.
    history : list of FidelityResult
        The model's validations, oldest first.
    """

    model: TwinModelInfo
    summary: FidelitySummary
    history: list[FidelityResult]


@dataclass(frozen=True)
class _Prepared:
    request: SimulateInterventionRequest
    info: TwinModelInfo
    model: FittedTwinModel
    key: str
    warning: bool
    reason: str | None
    experiment_design_id: str | None


def _as_request(
    request: SimulateInterventionRequest | Mapping[str, Any],
) -> SimulateInterventionRequest:
    if isinstance(request, SimulateInterventionRequest):
        return request
    return SimulateInterventionRequest.model_validate(dict(request))


def _path_from_uri(uri: str) -> Path:
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri)


# -- the service -------------------------------------------------------------------------


class TwinService:
    """Fit, register, activate, simulate and validate twin models.

    Parameters
    ----------
    settings : Settings, optional
        Thresholds, limits and storage locations (default
        :func:`~bayestwin.settings.load_settings`).
    repository : TwinRepository, optional
        Database access; by default one on the settings' database (closed by
        :meth:`close`).
    model_store_dir : path-like, optional
        Where model directories are written (default ``<data_dir>/models``).
    experiment_source : ExperimentResultSource, optional
        Where real experiments' results are looked up by id (default a
        :class:`JsonExperimentResultStore` in ``<data_dir>/experiments``).
    registry : {"auto", None} or object
        ``"auto"`` uses :mod:`bayestwin.store.mlflow.registry` (MLflow) when it is importable;
        None turns the registry off.
    max_workers : int
        Simulations that run at the same time (each uses one BLAS thread).

    Notes
    -----
    Safe to share between threads. Loaded models are kept in memory by model id.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        repository: TwinRepository | None = None,
        model_store_dir: str | os.PathLike[str] | None = None,
        *,
        experiment_source: ExperimentResultSource | None = None,
        registry: Any = "auto",
        max_workers: int = 2,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        self._owns_repository = repository is None
        self.repository = (
            repository
            if repository is not None
            else TwinRepository(self.settings.resolved_database_url())
        )
        data_dir = self.settings.resolved_data_dir()
        self.model_store_dir = (
            Path(model_store_dir) if model_store_dir is not None else data_dir / "models"
        )
        self.experiment_source: ExperimentResultSource = (
            experiment_source
            if experiment_source is not None
            else JsonExperimentResultStore(data_dir / "experiments")
        )
        if registry == "auto":
            self._registry, self.registry_status = _Registry.discover(self.settings)
        elif registry is None:
            self._registry, self.registry_status = None, "disabled"
        else:
            self._registry, self.registry_status = registry, "enabled"
        self.engine = SimulationEngine(self.settings)
        self.tracker = FidelityTracker(self.settings)
        self._models: dict[uuid.UUID, FittedTwinModel] = {}
        self._models_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="bayestwin-sim"
        )
        self._timers: dict[uuid.UUID, threading.Timer] = {}
        self._timers_lock = threading.Lock()
        self._closed = False

    # -- life cycle --------------------------------------------------------------------
    def close(self) -> None:
        """Stop the workers and timers and close the repository if this service made it."""
        if self._closed:
            return
        self._closed = True
        with self._timers_lock:
            timers = list(self._timers.values())
            self._timers.clear()
        for timer in timers:
            timer.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._owns_repository:
            self.repository.close()

    def __enter__(self) -> TwinService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def registry_enabled(self) -> bool:
        """Whether fits and validations are logged to the MLflow registry."""
        return self._registry is not None

    def fail_stale_simulations(self) -> list[uuid.UUID]:
        """Mark simulations left pending or running past the timeout (a crash) failed."""
        seconds = float(self.settings.simulation_timeout_seconds)
        return self.repository.fail_stale_simulations(
            timedelta(seconds=seconds), reason="abandoned (timed out or the process stopped)"
        )

    # -- models ------------------------------------------------------------------------
    def fit(
        self,
        history: pd.DataFrame,
        spec: TwinModelSpec,
        *,
        activate: bool = True,
        override_diagnostics: bool = False,
        model_name: str | None = None,
    ) -> TwinModelInfo:
        """Fit a model on ``history`` and register it (see :meth:`register`).

        Parameters
        ----------
        history : DataFrame
            One row per unit and period (see :class:`~bayestwin.model.fit.TwinModelSpec`).
        spec : TwinModelSpec
            What to fit, with its sampler settings.
        activate : bool
            Make it the active model of its (brand, twin type).
        override_diagnostics : bool
            Let a model that failed the diagnostics gate serve anyway.
        model_name : str, optional
            Registered name (default ``bayestwin-<brand>-<twin type>``).

        Returns
        -------
        TwinModelInfo
            The registered model row.
        """
        fitted = TwinGenerator(spec).fit(history, override_diagnostics=override_diagnostics)
        return self.register(
            fitted,
            activate=activate,
            override_diagnostics=override_diagnostics,
            model_name=model_name,
        )

    def default_model_name(self, brand: str, twin_type: TwinType | str) -> str:
        """Registered name of a (brand, twin type)'s models: ``bayestwin-<brand>-<type>``.

        With the MLflow registry, its own rule
        (:func:`bayestwin.store.mlflow.registry.registered_model_name`) gives the name.
        """
        kind = TwinType(twin_type)
        if isinstance(self._registry, _Registry):
            return self._registry.model_name(brand, kind)
        slug = re.sub(r"[^a-z0-9._]+", "-", brand.lower()).strip("-._")
        if not slug:
            slug = "brand-" + hashlib.sha256(brand.encode("utf-8")).hexdigest()[:8]
        return f"bayestwin-{slug}-{kind.value}"

    def register(
        self,
        fitted: FittedTwinModel,
        *,
        activate: bool = True,
        override_diagnostics: bool = False,
        model_name: str | None = None,
    ) -> TwinModelInfo:
        """Save a fitted model, register its row (and MLflow version) and maybe activate it.

        The model directory goes under :attr:`model_store_dir`; with the MLflow
        registry, the fit is also logged as a run and a registered model version, whose
        name, version and run id the row takes (else versions count up per name).

        Parameters
        ----------
        fitted : FittedTwinModel
            From :meth:`~bayestwin.model.fit.TwinGenerator.fit`.
        activate : bool
            Make it the active model of its (brand, twin type).
        override_diagnostics : bool
            Mark a model that failed its diagnostics fit for use anyway.
        model_name : str, optional
            Registered name (default :meth:`default_model_name`).

        Returns
        -------
        TwinModelInfo
            The stored row; ``artifact_uri`` is the model directory.

        Raises
        ------
        ModelNotUsableError
            If ``activate`` is asked for a model that failed its diagnostics, without
            an override.
        """
        if override_diagnostics and not fitted.override_diagnostics:
            fitted = dataclasses.replace(fitted, override_diagnostics=True)
        if activate:
            fitted.require_usable()
        name = model_name or self.default_model_name(fitted.brand, fitted.twin_type)
        model_id = uuid.uuid4()
        directory = (
            self.model_store_dir / f"{_slug(fitted.brand)}-{fitted.twin_type.value}-{model_id.hex}"
        )
        save_model(fitted, directory)
        try:
            info = self._model_info(fitted, model_id, name, directory)
            if self._registry is not None:
                logged = self._registry.log_fit(fitted, name)
                info = info.model_copy(update=logged)
            stored = self._insert_row(info, fitted, activate=activate)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        with self._models_lock:
            self._models[stored.model_id] = fitted
        if activate and stored.mlflow_run_id:
            self._registry_call("set_active", stored)
        return stored

    def _insert_row(
        self, info: TwinModelInfo, fitted: FittedTwinModel, *, activate: bool
    ) -> TwinModelInfo:
        for _attempt in range(5):
            try:
                return self.repository.register_model(info, activate=activate)
            except AlreadyExistsError:
                if self._registry is not None:
                    raise  # the registry's version is taken: the two stores disagree
                version = self._next_version(fitted, info.model_name)
                info = info.model_copy(update={"model_version": version})
        raise AlreadyExistsError(  # pragma: no cover - five concurrent registrations
            f"could not find a free version for {info.model_name!r}"
        )

    def _next_version(self, fitted: FittedTwinModel, name: str) -> str:
        page = self.repository.list_models(
            brand=fitted.brand, twin_type=fitted.twin_type, limit=1000
        )
        numbers = [
            int(m.model_version)
            for m in page.items
            if m.model_name == name and m.model_version.isdigit()
        ]
        return str(max(numbers, default=0) + 1)

    def _model_info(
        self, fitted: FittedTwinModel, model_id: uuid.UUID, name: str, directory: Path
    ) -> TwinModelInfo:
        spec = fitted.spec
        features = [
            *spec.get("numeric_features", ()),
            *spec.get("categorical_features", ()),
            *spec.get("segment_columns", ()),
        ]
        diag = fitted.diagnostics
        reason = None
        if not diag.passed:
            reason = "; ".join(diag.reasons) or "diagnostics failed"
            if fitted.override_diagnostics:
                reason = f"overridden: {reason}"
        metrics = {
            "diagnostics": diag.to_dict(),
            "fit_seconds": fitted.provenance.get("fit_seconds"),
            "n_rows": fitted.provenance.get("n_rows"),
            "n_likelihood_rows": fitted.provenance.get("n_likelihood_rows"),
            "n_units": len(fitted.population),
            "n_draws": fitted.posterior.n_draws,
        }
        return TwinModelInfo(
            model_id=model_id,
            model_name=name,
            twin_type=fitted.twin_type,
            model_version=self._next_version(fitted, name),
            training_config={
                "spec": spec,
                "spec_id": fitted.model_id,
                "provenance": fitted.provenance,
                "intervention_types": list(fitted.posterior.intervention_types),
                "outcome_family": fitted.outcome_family,
            },
            feature_columns=[str(f) for f in features],
            target_columns=[str(spec.get("outcome", "outcome"))],
            performance_metrics=json.loads(json.dumps(metrics, default=str)),
            brand=fitted.brand,
            fit_for_use=fitted.fit_for_use,
            diagnostics_reason=reason,
            artifact_uri=str(directory.resolve()),
        )

    def _registry_call(self, name: str, *args: Any) -> None:
        """Call the registry; a registry failure is logged, never fatal after the fact."""
        if self._registry is None:
            return
        try:
            getattr(self._registry, name)(*args)
        except Exception:
            logger.warning("MLflow registry call %s failed", name, exc_info=True)

    def activate(self, model_id: uuid.UUID | str) -> TwinModelInfo:
        """Make a registered model the active one of its (brand, twin type).

        Raises
        ------
        NotFoundError
            If no model has this id.
        ModelNotUsableError
            If the model failed its diagnostics and was not registered with an override.
        """
        info = self.repository.get_model(model_id)
        if not info.fit_for_use:
            raise ModelNotUsableError(
                f"model {info.model_id} ({info.brand}/{info.twin_type.value}) failed its "
                f"diagnostics ({info.diagnostics_reason or 'diagnostics failed'}) and cannot "
                "be activated; refit it, or register it with override_diagnostics=True"
            )
        stored = self.repository.set_active_model(info.model_id)
        if stored.mlflow_run_id:
            self._registry_call("set_active", stored)
        return stored

    def get_model(self, model_id: uuid.UUID | str) -> TwinModelInfo:
        """Return one model row (:class:`NotFoundError` when unknown)."""
        return self.repository.get_model(model_id)

    def active_model(self, brand: str, twin_type: TwinType | str) -> TwinModelInfo:
        """Return the active model row of a (brand, twin type) (:class:`NoActiveModelError`)."""
        return self.repository.get_active_model(brand, twin_type)

    def list_models(self, **filters: Any) -> Page[TwinModelInfo]:
        """List model rows (see :meth:`TwinRepository.list_models`)."""
        return self.repository.list_models(**filters)

    def load_model(self, model: TwinModelInfo | uuid.UUID | str) -> FittedTwinModel:
        """Return the fitted model of a row, from memory or its directory.

        The model directory named by the row's ``artifact_uri`` is read; when it is
        gone and the MLflow registry is on, the registered version is loaded instead.

        Raises
        ------
        NotFoundError
            If the row does not exist, or its model files are gone.
        """
        info = model if isinstance(model, TwinModelInfo) else self.repository.get_model(model)
        with self._models_lock:
            cached = self._models.get(info.model_id)
        if cached is not None:
            return cached
        directory = _path_from_uri(info.artifact_uri) if info.artifact_uri else None
        if directory is not None and (directory / "metadata.json").exists():
            fitted = load_model(directory)
        elif self._registry is not None and info.mlflow_run_id:
            fitted = self._registry.load_fitted(info)
        else:
            raise NotFoundError(
                "model files for",
                info.model_id,
                f"{directory or 'the artifact_uri'} is missing; refit and register the model",
            )
        if info.fit_for_use and not fitted.fit_for_use:
            # The row is the source of truth for "may serve" (an override at registration).
            fitted = dataclasses.replace(fitted, override_diagnostics=True)
        with self._models_lock:
            fitted = self._models.setdefault(info.model_id, fitted)
        return fitted

    def load_active_model(
        self, brand: str, twin_type: TwinType | str
    ) -> tuple[TwinModelInfo, FittedTwinModel]:
        """Return the active model row of a (brand, twin type) and its fitted model."""
        info = self.repository.get_active_model(brand, twin_type)
        return info, self.load_model(info)

    # -- simulations -------------------------------------------------------------------
    def _prepare(
        self,
        request: SimulateInterventionRequest | Mapping[str, Any],
        experiment_design_id: str | None,
    ) -> _Prepared:
        req = _as_request(request)
        limit = self.settings.max_twin_count
        if req.twin_count > limit:
            raise InvalidRequestError(
                "twin_count", f"must be at most max_twin_count={limit}, got {req.twin_count}"
            )
        info, model = self.load_active_model(req.brand, req.target_population)
        known = model.posterior.intervention_types
        if req.intervention_type not in known:
            raise InvalidRequestError(
                "intervention_type",
                f"{req.intervention_type!r} is unknown to the active model of "
                f"{req.brand}/{req.target_population.value}; known: {', '.join(known)}",
            )
        target = req.intervention_config.target
        if target:
            try:
                eligible_mask(model.population, target)
            except ValueError as exc:
                raise InvalidRequestError("intervention_config.target", str(exc)) from None
        model.require_usable()
        key = request_hash(req, extra=self._decision_settings())
        history = self.repository.fidelity_history(
            info.model_id, window_days=self.settings.fidelity_validation_window_days
        )
        warning, reason = self.tracker.warning(history)
        return _Prepared(req, info, model, key, warning, reason, experiment_design_id)

    def _decision_settings(self) -> dict[str, Any]:
        st = self.settings
        return {
            "min_effect_threshold": st.min_effect_threshold,
            "confidence_threshold": st.confidence_threshold,
            "power_alpha": st.power_alpha,
            "power_target": st.power_target,
        }

    def _cached(self, prep: _Prepared) -> SimulationResult | None:
        hit = self.repository.cached_result(prep.info.model_id, prep.key, prep.request.random_seed)
        if hit is None:
            return None
        return hit.model_copy(
            update={"fidelity_warning": prep.warning, "fidelity_warning_reason": prep.reason}
        )

    def _pending_row(self, prep: _Prepared, simulation_id: uuid.UUID | None) -> SimulationResult:
        req = prep.request
        pending = SimulationResult(
            simulation_id=simulation_id or uuid.uuid4(),
            model_id=prep.info.model_id,
            experiment_design_id=prep.experiment_design_id,
            brand=req.brand,
            twin_type=req.target_population,
            intervention_type=req.intervention_type,
            intervention_config=req.intervention_config.model_copy(
                update={"intervention_type": req.intervention_type}
            ),
            twin_count=req.twin_count,
            confidence_level=req.confidence_level,
            random_seed=req.random_seed,
            simulation_status=SimulationStatus.PENDING,
        )
        return self.repository.create_simulation(pending, request_hash=prep.key)

    def _expire(self, simulation_id: uuid.UUID) -> None:
        with self._timers_lock:
            self._timers.pop(simulation_id, None)
        seconds = float(self.settings.simulation_timeout_seconds)
        with suppress(InvalidStateError, NotFoundError):
            self.repository.fail_simulation(
                simulation_id,
                f"timed out after {seconds:g} s (simulation_timeout_seconds)",
                execution_time_ms=int(seconds * 1000),
            )

    def _execute(self, prep: _Prepared, simulation_id: uuid.UUID) -> SimulationResult:
        try:
            self.repository.mark_running(simulation_id)
        except InvalidStateError:
            # The timer failed it while it waited for a worker.
            raise SimulationTimeoutError(
                simulation_id, float(self.settings.simulation_timeout_seconds)
            ) from None
        started = time.perf_counter()
        req = prep.request
        try:
            result = self.engine.simulate(
                prep.model,
                req.intervention_type,
                req.intervention_config,
                twin_count=req.twin_count,
                confidence_level=req.confidence_level,
                random_seed=req.random_seed,
                fidelity_warning=prep.warning,
                fidelity_warning_reason=prep.reason,
                experiment_design_id=prep.experiment_design_id,
            )
        except BaseException as exc:
            elapsed = int(round((time.perf_counter() - started) * 1000))
            with suppress(InvalidStateError):
                self.repository.fail_simulation(simulation_id, exc, execution_time_ms=elapsed)
            raise
        done = result.model_copy(
            update={"simulation_id": simulation_id, "model_id": prep.info.model_id}
        )
        try:
            return self.repository.complete_simulation(done)
        except InvalidStateError:
            raise SimulationTimeoutError(
                simulation_id, float(self.settings.simulation_timeout_seconds)
            ) from None

    def _cancel_timer(self, simulation_id: uuid.UUID) -> None:
        with self._timers_lock:
            timer = self._timers.pop(simulation_id, None)
        if timer is not None:
            timer.cancel()

    def _launch(self, prep: _Prepared, pending: SimulationResult) -> Future[SimulationResult]:
        sid = pending.simulation_id
        timer = threading.Timer(
            float(self.settings.simulation_timeout_seconds), self._expire, args=(sid,)
        )
        timer.daemon = True
        with self._timers_lock:
            self._timers[sid] = timer
        timer.start()
        try:
            future = self._executor.submit(self._execute, prep, sid)
        except RuntimeError as exc:  # the executor is shut down
            self._cancel_timer(sid)
            with suppress(InvalidStateError):
                self.repository.fail_simulation(sid, exc)
            raise
        future.add_done_callback(lambda _f: self._cancel_timer(sid))
        return future

    def submit(
        self,
        request: SimulateInterventionRequest | Mapping[str, Any],
        *,
        experiment_design_id: str | None = None,
        simulation_id: uuid.UUID | None = None,
        on_done: Callable[[Future[SimulationResult]], None] | None = None,
    ) -> SimulationResult:
        """Start a simulation in the background and return its row at once.

        Parameters
        ----------
        request : SimulateInterventionRequest or mapping
            What to simulate.
        experiment_design_id : str, optional
            The experiment design this simulation belongs to.
        simulation_id : UUID, optional
            Id of the new row (default: a new UUID).
        on_done : callable, optional
            Called with the worker's future when it finishes.

        Returns
        -------
        SimulationResult
            The pending row, or the completed cached result of the same request, model
            and seed. Poll :meth:`get_simulation` for the outcome.

        Raises
        ------
        pydantic.ValidationError, InvalidRequestError
            A request field is wrong (before anything is stored).
        NoActiveModelError
            No model is active for the brand and twin type.
        """
        prep = self._prepare(request, experiment_design_id)
        cached = self._cached(prep)
        if cached is not None:
            return cached
        pending = self._pending_row(prep, simulation_id)
        future = self._launch(prep, pending)
        future.add_done_callback(_log_failure)
        if on_done is not None:
            future.add_done_callback(on_done)
        return pending.model_copy(
            update={"fidelity_warning": prep.warning, "fidelity_warning_reason": prep.reason}
        )

    def simulate(
        self,
        request: SimulateInterventionRequest | Mapping[str, Any],
        *,
        experiment_design_id: str | None = None,
    ) -> SimulationResult:
        """Run a simulation and wait for it (at most ``simulation_timeout_seconds``).

        Parameters
        ----------
        request : SimulateInterventionRequest or mapping
            What to simulate (spec 6.1).
        experiment_design_id : str, optional
            The experiment design this simulation belongs to.

        Returns
        -------
        SimulationResult
            The completed, stored result (draws included), with ``fidelity_warning`` set
            from the model's fidelity history.

        Raises
        ------
        pydantic.ValidationError, InvalidRequestError
            A request field is wrong (nothing is stored).
        NoActiveModelError
            No model is active for the brand and twin type.
        SimulationTimeoutError
            It ran past the timeout; the row is failed.
        Exception
            Whatever the engine raised; the row is failed with it.
        """
        prep = self._prepare(request, experiment_design_id)
        cached = self._cached(prep)
        if cached is not None:
            return cached
        pending = self._pending_row(prep, None)
        future = self._launch(prep, pending)
        seconds = float(self.settings.simulation_timeout_seconds)
        try:
            return future.result(timeout=seconds)
        except FutureTimeout:
            self._expire(pending.simulation_id)
            future.add_done_callback(_log_failure)
            raise SimulationTimeoutError(pending.simulation_id, seconds) from None

    def get_simulation(
        self, simulation_id: uuid.UUID | str, *, include_draws: bool = False
    ) -> SimulationResult:
        """Return one simulation (:class:`NotFoundError` when unknown)."""
        return self.repository.get_simulation(simulation_id, include_draws=include_draws)

    def list_simulations(self, **filters: Any) -> Page[SimulationResult]:
        """List simulations (see :meth:`TwinRepository.list_simulations`)."""
        return self.repository.list_simulations(**filters)

    def similar_simulations(
        self, request: SimulateInterventionRequest | Mapping[str, Any], *, limit: int = 5
    ) -> list[SimilarSimulation]:
        """Past completed simulations of a similar request on the active model (episodic).

        Returns an empty list when no model is active.
        """
        req = _as_request(request)
        try:
            info = self.repository.get_active_model(req.brand, req.target_population)
        except NoActiveModelError:
            return []
        return self.repository.find_similar_simulations(req, model_id=info.model_id, limit=limit)

    # -- real experiments and validation ---------------------------------------------------
    def register_experiment_result(
        self,
        experiment_id: str,
        outcome: ExperimentOutcome | Mapping[str, Any],
        *,
        overwrite: bool = False,
    ) -> ExperimentOutcome:
        """Store a real experiment's result so that it can be validated against by id.

        Raises
        ------
        TypeError
            If the experiment source cannot store results.
        AlreadyExistsError
            If the experiment has a result and ``overwrite`` is False.
        """
        register = getattr(self.experiment_source, "register_result", None)
        if register is None:
            raise TypeError(
                f"{type(self.experiment_source).__name__} is read-only; it cannot store results"
            )
        parsed = (
            outcome
            if isinstance(outcome, ExperimentOutcome)
            else ExperimentOutcome.model_validate(dict(outcome))
        )
        stored: ExperimentOutcome = register(experiment_id, parsed, overwrite=overwrite)
        return stored

    def experiment_result(self, experiment_id: str) -> ExperimentOutcome:
        """Return a real experiment's result from the source.

        Raises
        ------
        ExperimentResultNotFoundError
            If the source has none.
        """
        found = self.experiment_source.get_result(experiment_id)
        if found is None:
            raise ExperimentResultNotFoundError(
                "result of experiment",
                repr(experiment_id),
                "register it with register_experiment_result, or pass the outcome",
            )
        return found

    def validate(
        self,
        simulation_id: uuid.UUID | str,
        actual_experiment_id: str | None = None,
        outcome: ExperimentOutcome | pd.DataFrame | Mapping[str, Any] | None = None,
        *,
        family: str | None = None,
        validated_at: datetime | None = None,
    ) -> FidelityResult:
        """Compare a completed simulation with its real experiment and record it.

        Parameters
        ----------
        simulation_id : UUID or str
            The simulation.
        actual_experiment_id : str, optional
            The real experiment; its result is looked up in the experiment source when
            ``outcome`` is not given.
        outcome : ExperimentOutcome, DataFrame or mapping, optional
            The real result: a summary, or one row per unit (``arm``, ``outcome``).
        family : str, optional
            Outcome family of a DataFrame (default: the simulation's).
        validated_at : datetime, optional
            Time of the validation (default now).

        Returns
        -------
        FidelityResult
            The stored validation, with the model's fidelity score over its window.

        Raises
        ------
        NotFoundError
            If the simulation does not exist.
        InvalidStateError
            If the simulation has not completed.
        ExperimentResultNotFoundError
            If neither ``outcome`` is given nor a result registered for the experiment.
        """
        simulation = self.repository.get_simulation(simulation_id, include_draws=True)
        if simulation.simulation_status is not SimulationStatus.COMPLETED:
            raise InvalidStateError(
                f"simulation {simulation.simulation_id} is {simulation.simulation_status}; "
                "only a completed simulation can be validated"
            )
        real: ExperimentOutcome | pd.DataFrame
        if outcome is None:
            if not actual_experiment_id:
                raise InvalidRequestError(
                    "actual_experiment_id", "give the experiment id or the outcome"
                )
            real = self.experiment_result(actual_experiment_id)
        elif isinstance(outcome, ExperimentOutcome | pd.DataFrame):
            real = outcome
        else:
            real = ExperimentOutcome.model_validate(dict(outcome))
        assert simulation.model_id is not None
        history = self.repository.fidelity_history(
            simulation.model_id, window_days=self.settings.fidelity_validation_window_days
        )
        result = self.tracker.validate(
            simulation,
            real,
            family=family,
            actual_experiment_id=actual_experiment_id,
            validated_at=validated_at,
            history=history,
        )
        stored = self.repository.record_validation(result)
        if self._registry is not None:
            model = self.repository.get_model(simulation.model_id)
            if model.mlflow_run_id:
                self._registry_call("log_fidelity", model, stored, len(history))
        return stored

    def model_fidelity(
        self, model_id: uuid.UUID | str, *, all_history: bool = False
    ) -> ModelFidelity:
        """Return a model's fidelity summary and its validations.

        Parameters
        ----------
        model_id : UUID or str
            The model.
        all_history : bool
            Return every validation, not only those in the window (the summary always
            covers the window).
        """
        info = self.repository.get_model(model_id)
        window = self.settings.fidelity_validation_window_days
        history = self.repository.fidelity_history(
            info.model_id, window_days=None if all_history else window
        )
        in_window = (
            history
            if not all_history
            else self.repository.fidelity_history(info.model_id, window_days=window)
        )
        return ModelFidelity(model=info, summary=self.tracker.summarize(in_window), history=history)


def _log_failure(future: Future[SimulationResult]) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None and not isinstance(exc, SimulationTimeoutError | ValidationError):
        logger.info("simulation failed: %s: %s", type(exc).__name__, exc)
