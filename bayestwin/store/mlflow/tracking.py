"""Where MLflow keeps the twins: the tracking store, the artifact location, the clients.

Without a ``tracking_uri``, the store is ``Settings.resolved_mlflow_uri()``: a SQLite
file ``mlflow.db`` in the data directory, unless ``BAYESTWIN_MLFLOW_TRACKING_URI`` (or
the YAML ``storage.mlflow_tracking_uri``) names another store, such as a tracking server
by its ``http(s)://`` URI. MLflow's own ``MLFLOW_TRACKING_URI`` is not consulted. For a
database-backed store, new experiments get an explicit artifact location: the
``mlartifacts`` directory next to a SQLite file, or in the data directory for other
databases; never ``./mlruns`` in the working directory. A tracking server keeps its own
artifact location. The registry is always the tracking store's.

MLflow's fluent API (runs, ``log_model``, ``pyfunc.load_model``, the resolution of
``models:/`` URIs) reads a process-wide tracking URI. :func:`fluent` sets it to a store
for the duration of a block and restores it afterwards, so that bayestwin does not
disturb a caller's own MLflow set-up; calls from several threads to *different* stores
at the same time are not supported.

MLflow sends anonymous usage telemetry unless ``MLFLOW_DISABLE_TELEMETRY=true`` is set
before MLflow is imported; bayestwin leaves that choice to the environment.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from sqlalchemy.engine import make_url

from bayestwin.errors import InvalidInputError
from bayestwin.settings import load_settings

__all__ = [
    "DEFAULT_EXPERIMENT",
    "client",
    "default_artifact_location",
    "ensure_experiment",
    "error_code",
    "fluent",
    "local_path",
    "model_uri_of",
    "prepare_store",
    "resolve_tracking_uri",
]

DEFAULT_EXPERIMENT = "bayestwin"
"""Experiment of the fits' runs."""

_DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """Return the tracking URI to use, creating a local SQLite file's directory.

    Parameters
    ----------
    tracking_uri : str, optional
        An MLflow tracking URI. Defaults to ``load_settings().resolved_mlflow_uri()``.

    Returns
    -------
    str
        The URI.
    """
    uri = tracking_uri or load_settings().resolved_mlflow_uri()
    path = _sqlite_path(uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return uri


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other URIs and in-memory)."""
    if not uri.startswith("sqlite:"):
        return None
    database = make_url(uri).database
    if not database or database == ":memory:":
        return None
    return Path(database).resolve()


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifact location for new experiments of a store.

    Parameters
    ----------
    tracking_uri : str
        The tracking URI.

    Returns
    -------
    str or None
        ``<dir of the SQLite file>/mlartifacts`` for a SQLite store,
        ``<data dir>/mlartifacts`` for another database, and None (the store's own
        default) for a tracking server or a file store.
    """
    scheme = urllib.parse.urlparse(tracking_uri).scheme.split("+")[0].lower()
    if scheme not in _DATABASE_SCHEMES:
        return None
    path = _sqlite_path(tracking_uri)
    root = path.parent if path is not None else load_settings().resolved_data_dir().resolve()
    return str(root / "mlartifacts")


def client(uri: str) -> MlflowClient:
    """An MLflow client whose tracking store and registry are both ``uri``."""
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def fluent(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI at ``uri`` for the duration of the block.

    Runs, ``log_model``, ``pyfunc.load_model`` and the resolution of ``models:/`` URIs
    read it, and so does MLflow 3.17's registry store when it creates a version from a
    ``models:/m-...`` source.
    """
    with _use_tracking_uri(uri):
        yield


def error_code(exc: MlflowException) -> str:
    """MLflow's error code of an exception (``"RESOURCE_DOES_NOT_EXIST"``...)."""
    return str(getattr(exc, "error_code", ""))


def ensure_experiment(mlflow_client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Return the id of an active experiment, creating it when missing.

    Parameters
    ----------
    mlflow_client : MlflowClient
        Client of the store.
    name : str
        Experiment name.
    artifact_location : str or None
        Artifact location if the experiment is created.

    Raises
    ------
    InvalidInputError
        ``experiment_deleted`` if the experiment exists but is deleted.
    """
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(mlflow_client.create_experiment(name, artifact_location=artifact_location))
        except MlflowException:
            # another process may have created it in the meantime
            experiment = mlflow_client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise InvalidInputError(
            f"MLflow experiment {name!r} is deleted; restore it with "
            f"MlflowClient().restore_experiment({experiment.experiment_id!r}) or pass "
            "another experiment_name",
            code="experiment_deleted",
            field="experiment_name",
        )
    return str(experiment.experiment_id)


def prepare_store(
    tracking_uri: str | None = None, experiment_name: str = DEFAULT_EXPERIMENT
) -> str:
    """Create the tracking store's tables and the fits' experiment, in this process.

    Several processes opening a new SQLite-backed store at once race on its schema
    migration; a driver calls this once before its workers log runs.

    Parameters
    ----------
    tracking_uri : str, optional
        The store; see :func:`~bayestwin.store.mlflow.tracking.resolve_tracking_uri`.
    experiment_name : str
        Experiment of the fits, created when missing.

    Returns
    -------
    str
        The experiment's id.
    """
    uri = resolve_tracking_uri(tracking_uri)
    mlflow_client = client(uri)
    return ensure_experiment(mlflow_client, experiment_name, default_artifact_location(uri))


def local_path(location: str) -> Path | None:
    """The local path of an artifact location (a plain path or ``file:`` URI); else None."""
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and location[1:3] in (":\\", ":/")):
        return Path(location)
    return None


def model_uri_of(
    name_or_uri: str, alias: str | None, version: str | int | None, *, default_alias: str
) -> str:
    """The URI of a registered model's version (or ``name_or_uri`` when it is a URI).

    Raises
    ------
    InvalidInputError
        If both alias and version are given, or either with a URI.
    """
    if alias is not None and version is not None:
        raise InvalidInputError("give alias or version, not both", field="version")
    if ":" in name_or_uri or "/" in name_or_uri:
        if alias is not None or version is not None:
            raise InvalidInputError(
                f"{name_or_uri!r} is a URI; alias and version go with a registered model name",
                field="name_or_uri",
            )
        return name_or_uri
    if version is not None:
        return f"models:/{name_or_uri}/{version}"
    return f"models:/{name_or_uri}@{alias or default_alias}"
