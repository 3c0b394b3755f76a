"""MLflow model registry for fitted twin models.

Every fit becomes one MLflow run and one registered model version (spec 5.2):

* :func:`log_fit` logs the run (:mod:`bayestwin.store.mlflow.fit_record`) with a pyfunc
  model (:mod:`bayestwin.store.mlflow.pyfunc`) holding the whole saved model directory,
  and registers it as a new version of :func:`registered_model_name`.
* :func:`set_active` points the alias ``active`` at a version;
  ``models:/<name>@active`` then loads it, with :func:`load_fitted` as the full
  :class:`~bayestwin.model.fitted.FittedTwinModel` or with ``mlflow.pyfunc.load_model``
  as the pyfunc.
* :func:`log_fidelity` adds fidelity metrics to the model's run.
* :func:`model_info_from` builds the ``digital_twin_models`` row that links to the run
  and the version.

Where the store is, and how the process-wide MLflow state is handled, is the business
of :mod:`bayestwin.store.mlflow.tracking`.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import mlflow.artifacts
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
from mlflow.tracking import MlflowClient

from bayestwin.errors import ConflictError, InvalidInputError
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.model.io import load_model
from bayestwin.schemas import TwinModelInfo
from bayestwin.store.mlflow import fit_record
from bayestwin.store.mlflow.fidelity_metrics import FidelityInput, fidelity_batches
from bayestwin.store.mlflow.pyfunc import model_dir_in
from bayestwin.store.mlflow.tracking import (
    DEFAULT_EXPERIMENT,
    client,
    default_artifact_location,
    ensure_experiment,
    error_code,
    fluent,
    local_path,
    model_uri_of,
    prepare_store,
    resolve_tracking_uri,
)
from bayestwin.vocabulary import TwinType

__all__ = [
    "ACTIVE_ALIAS",
    "DEFAULT_EXPERIMENT",
    "RegisteredTwin",
    "active_version",
    "load_fitted",
    "log_fidelity",
    "log_fit",
    "model_info_from",
    "prepare_store",
    "registered_model_name",
    "set_active",
]

ACTIVE_ALIAS = "active"
"""Alias of the version in use."""

# Namespace of the row ids derived from MLflow run ids (see model_info_from).
_RUN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "bayestwin/mlflow-run")


# -- names ------------------------------------------------------------------------------


def registered_model_name(brand: str, twin_type: TwinType | str) -> str:
    """Registered model name of a (brand, twin type): ``bayestwin-<brand>-<twin_type>``.

    The one naming rule of the twin models. The brand is lower-cased and every run of
    characters other than letters, digits, ``.`` and ``_`` becomes ``-``, so the name
    is safe in ``models:/<name>@<alias>`` URIs. A brand with nothing left (e.g. only
    non-Latin letters) is replaced by a hash of it. Two brands that map to the same
    name are told apart by the registered model's tags: :func:`log_fit` refuses to add
    a version for another brand.

    Parameters
    ----------
    brand : str
        The brand.
    twin_type : TwinType or str
        The twin type.

    Returns
    -------
    str
        e.g. ``"bayestwin-remibrutinib-hcp"``.
    """
    kind = TwinType(twin_type).value
    slug = re.sub(r"[^a-z0-9._]+", "-", brand.lower()).strip("-._")
    if not slug:
        slug = "brand-" + uuid.uuid5(_RUN_NAMESPACE, brand).hex[:8]
    return f"bayestwin-{slug}-{kind}"


# -- logging a fit ----------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredTwin:
    """Where a fit landed in MLflow.

    Attributes
    ----------
    name : str
        Registered model name.
    version : str
        Registered model version (``"1"``, ``"2"``, ...).
    run_id : str
        The fit's MLflow run.
    experiment_id : str
        The run's experiment.
    logged_model_id : str
        MLflow's logged-model id (``m-...``).
    artifact_uri : str
        Location of the logged model's files.
    tracking_uri : str
        The store.
    metrics : dict of str to float
        The metrics logged on the run.
    """

    name: str
    version: str
    run_id: str
    experiment_id: str
    logged_model_id: str
    artifact_uri: str
    tracking_uri: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def model_uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"models:/{self.name}/{self.version}"


def _experiment_and_name(
    mlflow_client: MlflowClient,
    model: FittedTwinModel,
    experiment_name: str,
    registered_name: str | None,
    artifact_location: str | None,
) -> tuple[str, str]:
    """The run's experiment and the registered model's name, both made ready."""
    location = artifact_location or default_artifact_location(mlflow_client.tracking_uri)
    experiment_id = ensure_experiment(mlflow_client, experiment_name, location)
    name = registered_name or registered_model_name(model.brand, model.twin_type)
    fit_record.ensure_registered_model(mlflow_client, name, model)
    return experiment_id, name


def log_fit(
    model: FittedTwinModel,
    *,
    tracking_uri: str | None = None,
    experiment_name: str = DEFAULT_EXPERIMENT,
    registered_name: str | None = None,
    artifact_location: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    activate: bool = False,
) -> RegisteredTwin:
    """Log a fit as an MLflow run and register it as a new model version.

    Parameters
    ----------
    model : FittedTwinModel
        The fitted model. Keep its trace to store the posterior netCDF with it.
    tracking_uri : str, optional
        The store; see :func:`~bayestwin.store.mlflow.tracking.resolve_tracking_uri`.
    experiment_name : str
        Experiment of the run, created when missing.
    registered_name : str, optional
        Registered model name; defaults to :func:`registered_model_name`.
    artifact_location : str, optional
        Artifact location of a *new* experiment; defaults to
        :func:`~bayestwin.store.mlflow.tracking.default_artifact_location`. An existing
        experiment keeps its own.
    run_name : str, optional
        Name of the run (default ``"<name>-<spec hash>"``).
    tags : mapping, optional
        Extra run tags.
    activate : bool
        Also point the ``active`` alias at the new version (see :func:`set_active`).

    Returns
    -------
    RegisteredTwin
        The run id, the version and where the files are.

    Raises
    ------
    InvalidInputError
        If the registered model name belongs to another brand or twin type, or the
        experiment is deleted.
    ConflictError
        ``invalid_state`` if ``activate`` is asked for a model that is not fit for use
        (the run and the version are recorded all the same).

    Notes
    -----
    When the calling thread has an active MLflow run, the fit's run is nested under it.
    """
    uri = resolve_tracking_uri(tracking_uri)
    mlflow_client = client(uri)
    experiment_id, name = _experiment_and_name(
        mlflow_client, model, experiment_name, registered_name, artifact_location
    )
    metrics = fit_record.fit_metrics(model)
    with fluent(uri):
        run_id, info = fit_record.log_run(
            model, experiment_id, run_name or f"{name}-{model.spec_hash[:8]}", tags, metrics
        )
        # MLflow's registry store looks the logged model up through the process-wide
        # tracking URI, so the version is created inside this block.
        version = mlflow_client.create_model_version(
            name, info.model_uri, run_id, **fit_record.version_fields(model, info.model_id)
        )
    registered = RegisteredTwin(
        name=name,
        version=str(version.version),
        run_id=run_id,
        experiment_id=experiment_id,
        logged_model_id=info.model_id,
        artifact_uri=str(mlflow_client.get_logged_model(info.model_id).artifact_location),
        tracking_uri=uri,
        metrics=metrics,
    )
    if activate:
        set_active(name, registered.version, tracking_uri=uri)
    return registered


# -- aliases ----------------------------------------------------------------------------


def set_active(
    name: str,
    version: str | int,
    *,
    alias: str = ACTIVE_ALIAS,
    tracking_uri: str | None = None,
    force: bool = False,
) -> None:
    """Point an alias (``active`` by default) at a registered version.

    Parameters
    ----------
    name : str
        Registered model name.
    version : str or int
        The version.
    alias : str
        The alias; it moves from whichever version held it.
    tracking_uri : str, optional
        The store; see :func:`~bayestwin.store.mlflow.tracking.resolve_tracking_uri`.
    force : bool
        Activate even a version that is not fit for use.

    Raises
    ------
    ConflictError
        ``invalid_state`` if the version failed its diagnostics without an override,
        unless ``force``.
    """
    mlflow_client = client(resolve_tracking_uri(tracking_uri))
    found = mlflow_client.get_model_version(name, str(version))
    if not force and (found.tags or {}).get(fit_record.TAG_FIT_FOR_USE) == "false":
        raise ConflictError(
            f"{name} version {version} failed its diagnostics and is not fit for use; "
            "refit it, or pass force=True to activate it anyway",
            code="invalid_state",
        )
    mlflow_client.set_registered_model_alias(name, alias, str(version))


def active_version(
    name: str, *, alias: str = ACTIVE_ALIAS, tracking_uri: str | None = None
) -> str | None:
    """Return the version an alias points at, or None when it is not set.

    Parameters
    ----------
    name : str
        Registered model name.
    alias : str
        The alias.
    tracking_uri : str, optional
        The store; see :func:`~bayestwin.store.mlflow.tracking.resolve_tracking_uri`.
    """
    mlflow_client = client(resolve_tracking_uri(tracking_uri))
    try:
        return str(mlflow_client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


# -- loading ----------------------------------------------------------------------------


def load_fitted(
    name_or_uri: str,
    alias: str | None = None,
    version: str | int | None = None,
    *,
    tracking_uri: str | None = None,
    load_trace: bool = False,
) -> FittedTwinModel:
    """Load a registered fit back as a :class:`~bayestwin.model.fitted.FittedTwinModel`.

    Parameters
    ----------
    name_or_uri : str
        A registered model name, or a URI: ``models:/<name>/<version>``,
        ``models:/<name>@<alias>``, ``models:/m-<id>`` or the model's artifact location
        (e.g. ``TwinModelInfo.artifact_uri``).
    alias : str, optional
        With a name: the alias to load. With neither alias nor version, ``active``.
    version : str or int, optional
        With a name: the version to load.
    tracking_uri : str, optional
        The store; see :func:`~bayestwin.store.mlflow.tracking.resolve_tracking_uri`.
    load_trace : bool
        Also load the full posterior ``DataTree`` (``trace.nc``).

    Returns
    -------
    FittedTwinModel
        The model as it was logged.

    Raises
    ------
    InvalidInputError
        If both alias and version are given, or either with a URI.
    mlflow.exceptions.MlflowException
        If the name, version or alias does not exist.
    """
    uri = resolve_tracking_uri(tracking_uri)
    model_uri = model_uri_of(name_or_uri, alias, version, default_alias=ACTIVE_ALIAS)
    with fluent(uri):
        location = (
            ModelsArtifactRepository.get_underlying_uri(model_uri)
            if ModelsArtifactRepository.is_models_uri(model_uri)
            else model_uri
        )
    local = local_path(location)
    if local is not None and local.exists():
        return load_model(model_dir_in(local), load_trace=load_trace)
    with tempfile.TemporaryDirectory(prefix="bayestwin-load-") as tmp:
        root = mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=tmp, tracking_uri=uri
        )
        return load_model(model_dir_in(Path(root)), load_trace=load_trace)


# -- fidelity ---------------------------------------------------------------------------


def log_fidelity(
    run_id: str,
    fidelity: FidelityInput,
    *,
    step: int | None = None,
    tracking_uri: str | None = None,
    prefix: str = "fidelity",
) -> dict[str, float]:
    """Log fidelity metrics on a model's run.

    Parameters
    ----------
    run_id : str
        The fit's run (``RegisteredTwin.run_id`` or ``TwinModelInfo.mlflow_run_id``).
    fidelity : float, FidelityResult, sequence of FidelityResult, or mapping
        A model fidelity score, a validation, several validations (each at its own
        step: ``step``, ``step + 1``, ...), or a mapping such as
        ``FidelitySummary.to_dict()``; see :mod:`bayestwin.store.mlflow.fidelity_metrics`
        for the metrics each gives. Missing and non-finite values are skipped.
    step : int, optional
        MLflow step (default 0), e.g. the number of validations so far.
    tracking_uri : str, optional
        The store; see :func:`~bayestwin.store.mlflow.tracking.resolve_tracking_uri`.
    prefix : str
        Prefix of the metric keys.

    Returns
    -------
    dict of str to float
        The last value logged under each key.
    """
    mlflow_client = client(resolve_tracking_uri(tracking_uri))
    batches = fidelity_batches(fidelity, prefix=prefix, step=0 if step is None else int(step))
    logged: dict[str, float] = {}
    for values, moment, at in batches:
        metrics = [Metric(key, value, moment, at) for key, value in values.items()]
        for start in range(0, len(metrics), 1000):
            mlflow_client.log_batch(run_id, metrics=metrics[start : start + 1000])
        logged.update(values)
    return logged


# -- the database row -------------------------------------------------------------------


def model_info_from(
    model: FittedTwinModel,
    registered: RegisteredTwin | None = None,
    *,
    model_name: str | None = None,
    model_version: str | None = None,
    artifact_uri: str | None = None,
    model_id: uuid.UUID | None = None,
    is_active: bool = False,
) -> TwinModelInfo:
    """The ``digital_twin_models`` row of a fit: the one way such a row is built.

    Parameters
    ----------
    model : FittedTwinModel
        The fitted model.
    registered : RegisteredTwin, optional
        What :func:`log_fit` returned for it; None when the fit was not logged to MLflow.
    model_name, model_version, artifact_uri : str, optional
        The row's name, version and artifact location; default to the registered
        name, version and logged model's files. Required without ``registered``.
    model_id : uuid.UUID, optional
        The row id. Defaults to a UUID derived from the run id, so that the same run
        cannot be stored twice. Required without ``registered``.
    is_active : bool
        The row's ``is_active``.

    Returns
    -------
    TwinModelInfo
        ``mlflow_run_id`` is the run (None without ``registered``); ``training_config``
        holds the spec, its hash, the provenance, the intervention types and the
        outcome family; ``performance_metrics`` the run metrics, the diagnostics
        (``diagnostics``, ``diagnostics_passed``, ``diagnostics_reasons``), the fit time
        and the data sizes; ``diagnostics_reason`` says why the diagnostics failed
        (prefixed ``"overridden: "`` when the model is used all the same).

    Raises
    ------
    InvalidInputError
        If ``registered`` is None and the name, version, artifact location or id is.
    """
    run_metrics = None if registered is None else registered.metrics
    if registered is not None:
        model_name = model_name or registered.name
        model_version = model_version or registered.version
        artifact_uri = artifact_uri or registered.artifact_uri
        model_id = model_id or uuid.uuid5(_RUN_NAMESPACE, registered.run_id)
    if model_id is None or model_name is None or model_version is None or artifact_uri is None:
        raise InvalidInputError(
            "without a registered version, give model_name, model_version, artifact_uri "
            "and model_id",
            field="registered",
        )
    spec = model.spec
    features = [
        *spec.get("segment_columns", ()),
        *spec.get("numeric_features", ()),
        *spec.get("categorical_features", ()),
    ]
    return TwinModelInfo(
        model_id=model_id,
        model_name=model_name,
        twin_type=model.twin_type,
        model_version=model_version,
        mlflow_run_id=None if registered is None else registered.run_id,
        training_config=fit_record.training_config(model),
        feature_columns=[str(c) for c in features],
        target_columns=[str(spec.get("outcome", "outcome"))],
        performance_metrics=fit_record.row_metrics(model, run_metrics),
        is_active=is_active,
        brand=model.brand,
        fit_for_use=model.fit_for_use,
        diagnostics_reason=fit_record.diagnostics_reason(model),
        artifact_uri=artifact_uri,
    )
