"""``fit_all`` on a Dask cluster: one task per (brand, twin type), on shared state.

:meth:`~bayestwin.service.TwinService.fit_all` with ``engine="dask"`` sends one task
per (brand, twin type) to the workers of a cluster (:mod:`bayestwin.cluster`). Each
task opens its own service on the state the calling service uses
(:class:`ServiceState`): the same database, the same model directory and the same
MLflow tracking URI. It fits the pair with :func:`bayestwin.model.fit.fit_all`, with as
many cores as its worker gives a task, and registers the model there: the MLflow run
and version, the row, the active flag. These three must therefore be reachable from
every worker (a database server, a tracking server, a shared artifact store) when the
cluster spans machines.

Every fit is keyed (:func:`fit_key`) by its spec (without the cores, which leave a
seeded fit's draws unchanged) and its rows; the key is kept in the model's provenance.
A pair whose active model has the key already is skipped unless ``refit`` is asked for,
so that running ``fit_all`` again after a partial failure fits only what is missing.
Each call also stamps its models with a run token: a task that runs again after its
worker died finds what an earlier attempt of the same call registered and does not
register it twice.

A task that raises an unexpected error is run again (``retries``); a task whose worker
dies is rescheduled by the scheduler. A fit that fails on its data or its diagnostics
(a :class:`~bayestwin.errors.BayesTwinError`) fails the same way every time: it is
recorded at once. Either way the failure is one :class:`FitOutcome` with its error, and
the other pairs' results stand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from bayestwin._version import __version__
from bayestwin.cluster import worker_cores
from bayestwin.errors import BayesTwinError, InvalidInputError, NotFoundError
from bayestwin.model.fit import fit_all as fit_each
from bayestwin.model.spec import TwinModelSpec
from bayestwin.schemas import TwinModelInfo
from bayestwin.service.comparisons import checks_for_service
from bayestwin.service.histories import read_history, spec_columns
from bayestwin.settings import Settings
from bayestwin.vocabulary import TwinType

if TYPE_CHECKING:
    from bayestwin.service.base import ServiceBase
    from bayestwin.service.twin import TwinService
    from bayestwin.store.repository import TwinRepository

__all__ = [
    "FIT_KEY",
    "FIT_RUN",
    "FitAllResult",
    "FitOptions",
    "FitOutcome",
    "FitTarget",
    "ServiceState",
    "active_with_key",
    "fit_key",
    "fit_task",
]

#: Provenance key of a model's fit key (:func:`fit_key`).
FIT_KEY = "fit_key"
#: Provenance key of the token of the ``fit_all`` call that registered a model.
FIT_RUN = "fit_run"

FitStatus = Literal["fitted", "skipped", "failed"]


@dataclass(frozen=True)
class FitOutcome:
    """What ``fit_all`` did for one (brand, twin type).

    Attributes
    ----------
    brand : str
        The brand.
    twin_type : TwinType
        The twin type.
    status : {"fitted", "skipped", "failed"}
        Fitted and registered now; skipped (its active model has this fit's key);
        or failed.
    model : TwinModelInfo or None
        The registered row (fitted), or the active one (skipped); None when failed.
    error : str or None
        ``"<ErrorType>: <message>"`` of a failure.
    worker : str or None
        The Dask worker that ran the task (None in process, or when it never ran).
    seconds : float
        Wall time of the task.
    """

    brand: str
    twin_type: TwinType
    status: FitStatus
    model: TwinModelInfo | None = None
    error: str | None = None
    worker: str | None = None
    seconds: float = 0.0


class FitAllResult(list[TwinModelInfo]):
    """The rows ``fit_all`` registered or kept, by brand and twin type, with every outcome.

    A list of :class:`~bayestwin.schemas.TwinModelInfo` (the fitted and the skipped
    pairs' models); :attr:`outcomes` holds one :class:`FitOutcome` per pair, failures
    included.

    Parameters
    ----------
    outcomes : iterable of FitOutcome
        One per (brand, twin type).
    """

    def __init__(self, outcomes: Iterable[FitOutcome]) -> None:
        ordered = sorted(outcomes, key=lambda o: (o.brand, o.twin_type))
        super().__init__(o.model for o in ordered if o.model is not None)
        self.outcomes: tuple[FitOutcome, ...] = tuple(ordered)

    @property
    def failures(self) -> tuple[FitOutcome, ...]:
        """The pairs that failed, with their errors."""
        return tuple(o for o in self.outcomes if o.status == "failed")

    @property
    def fitted(self) -> tuple[FitOutcome, ...]:
        """The pairs fitted and registered by this call."""
        return tuple(o for o in self.outcomes if o.status == "fitted")

    @property
    def skipped(self) -> tuple[FitOutcome, ...]:
        """The pairs whose active model was already this fit."""
        return tuple(o for o in self.outcomes if o.status == "skipped")


def _hash_spec(spec: TwinModelSpec) -> dict[str, Any]:
    payload = spec.model_dump(mode="json")
    for name in ("cores", "progressbar"):
        payload["sampler"].pop(name, None)
    return payload


def fit_key(history: pd.DataFrame, spec: TwinModelSpec) -> str:
    """The key of a fit: its spec (cores aside) and the rows and columns it reads.

    Parameters
    ----------
    history : DataFrame
        The rows of the spec's brand and twin type (in their order).
    spec : TwinModelSpec
        What is fitted.

    Returns
    -------
    str
        32 hex digits; equal keys mean the same fit (same seed, same draws).
    """
    digest = hashlib.sha256()
    payload = {"spec": _hash_spec(spec), "version": __version__}
    digest.update(json.dumps(payload, sort_keys=True).encode())
    columns = [c for c in spec_columns(spec) if c in history.columns]
    digest.update(json.dumps(columns).encode())
    digest.update(str(len(history)).encode())
    for name in columns:
        hashed = pd.util.hash_pandas_object(history[name], index=False).to_numpy()
        digest.update(hashed.tobytes())
    return digest.hexdigest()[:32]


def _provenance(info: TwinModelInfo) -> dict[str, Any]:
    prov = info.training_config.get("provenance")
    return prov if isinstance(prov, dict) else {}


def active_with_key(
    repository: TwinRepository, brand: str, twin_type: TwinType, key: str
) -> TwinModelInfo | None:
    """The active model of a pair when its fit key is ``key``, else None."""
    try:
        active = repository.get_active_model(brand, twin_type)
    except NotFoundError:
        return None
    return active if _provenance(active).get(FIT_KEY) == key else None


def _registered_by(
    repository: TwinRepository, brand: str, twin_type: TwinType, run: str
) -> TwinModelInfo | None:
    """The model an earlier attempt of the call ``run`` registered for a pair, if any."""
    page = repository.list_models(brand=brand, twin_type=twin_type, limit=1000)
    return next((m for m in page.items if _provenance(m).get(FIT_RUN) == run), None)


@dataclass(frozen=True)
class ServiceState:
    """Where a service keeps its state, for a worker to open a service on the same.

    Attributes
    ----------
    settings : Settings
        The calling service's settings (thresholds, limits).
    database_url : str
        Its database (a file or a server: an in-memory database cannot be shared).
    model_store_dir : str
        Its model directory (absolute; shared storage when workers are elsewhere).
    tracking_uri : str or None
        Its MLflow tracking URI; None when its registry is off.
    """

    settings: Settings
    database_url: str
    model_store_dir: str
    tracking_uri: str | None

    @classmethod
    def of(cls, service: ServiceBase) -> ServiceState:
        """The state of a service.

        Raises
        ------
        InvalidInputError
            Field ``database_url``, if its database lives in its process (SQLite in
            memory), where no worker can reach it.
        """
        url = service.repository.engine.url
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if database in ("", ":memory:") or database.startswith("file::memory:"):
                raise InvalidInputError(
                    "fit_all on a cluster needs a database the workers share: a SQLite "
                    "file or a database server, not SQLite in memory",
                    field="database_url",
                )
            url = url.set(database=str(Path(database).resolve()))
        registry = getattr(service, "_registry", None)
        return cls(
            settings=service.settings,
            database_url=url.render_as_string(hide_password=False),
            model_store_dir=str(Path(service.model_store_dir).resolve()),
            tracking_uri=None if registry is None else str(registry.tracking_uri),
        )

    def open(self) -> tuple[TwinService, TwinRepository]:
        """A service on this state (close both when done)."""
        from bayestwin.service.registry import MlflowRegistry
        from bayestwin.service.twin import TwinService
        from bayestwin.store.repository import TwinRepository

        repository = TwinRepository(self.database_url, ensure_schema=False)
        registry = None if self.tracking_uri is None else MlflowRegistry(self.tracking_uri)
        service = TwinService(
            self.settings,
            repository=repository,
            model_store_dir=self.model_store_dir,
            registry=registry,
            max_workers=1,
        )
        return service, repository


@dataclass(frozen=True)
class FitTarget:
    """One task's pair: its spec and, when the client computed it, its fit key."""

    brand: str
    twin_type: TwinType
    spec: TwinModelSpec
    key: str | None = None


@dataclass(frozen=True)
class FitOptions:
    """What every task of one ``fit_all`` call shares."""

    run: str
    activate: bool = True
    override_diagnostics: bool = False
    refit: bool = False


def _with_cores(spec: TwinModelSpec) -> TwinModelSpec:
    cores = min(spec.sampler.chains, worker_cores(spec.sampler.cores))
    return spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"cores": cores})})


def fit_task(
    state: ServiceState,
    history: pd.DataFrame | str | os.PathLike[str],
    target: FitTarget,
    options: FitOptions,
) -> FitOutcome:
    """Fit and register one (brand, twin type) on a worker (a Dask task).

    Parameters
    ----------
    state : ServiceState
        Where to register (the calling service's database, model directory, MLflow).
    history : DataFrame or path-like
        The pair's rows, or a parquet history to read them from (by columns and rows,
        :func:`~bayestwin.service.histories.read_history`).
    target : FitTarget
        The pair and its spec; the sampler's cores become the worker's.
    options : FitOptions
        The call's token, activation, diagnostics override and ``refit``.

    Returns
    -------
    FitOutcome
        ``"fitted"``, ``"skipped"``, or ``"failed"`` for a fit refused on its data or
        diagnostics (other errors raise, for the task to be retried).
    """
    t0 = time.perf_counter()
    spec, brand, kind = target.spec, target.brand, target.twin_type

    def outcome(status: FitStatus, model: TwinModelInfo | None, error: str | None = None) -> Any:
        return FitOutcome(brand, kind, status, model, error, seconds=time.perf_counter() - t0)

    try:
        if isinstance(history, pd.DataFrame):
            part = history
        else:
            part = read_history(history, spec, brand=brand, twin_type=kind)
        key = target.key or fit_key(part, spec)
    except BayesTwinError as exc:
        return outcome("failed", None, f"{type(exc).__name__}: {exc}")
    service, repository = state.open()
    try:
        if not options.refit and (found := active_with_key(repository, brand, kind, key)):
            return outcome("skipped", found)
        earlier = _registered_by(repository, brand, kind, options.run)
        if earlier is not None:  # an attempt whose worker died after registering
            return outcome("fitted", earlier)
        try:
            fitted = fit_each(
                part, [_with_cores(spec)], override_diagnostics=options.override_diagnostics
            )[(brand, kind)]
            fitted = dataclasses.replace(
                fitted, provenance={**fitted.provenance, FIT_KEY: key, FIT_RUN: options.run}
            )
            fitted = checks_for_service(service, fitted, part)
            del part
            info = service.register(
                fitted,
                activate=options.activate,
                override_diagnostics=options.override_diagnostics,
            )
        except BayesTwinError as exc:
            return outcome("failed", None, f"{type(exc).__name__}: {exc}")
        return outcome("fitted", info)
    finally:
        service.close()
        repository.close()


def on_done(
    progress: Callable[[int, int, FitOutcome], None] | None, total: int
) -> Callable[[FitOutcome], None]:
    """A callback that counts outcomes and passes each to ``progress(done, total, outcome)``."""
    done = 0

    def call(outcome: FitOutcome) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, outcome)

    return call
