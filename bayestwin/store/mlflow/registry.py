"""MLflow tracking and model registry for fitted twin models.

Every fit becomes one MLflow run and one registered model version (spec 5.2):

* :func:`log_fit` logs the run's params (the spec and sampler settings, flattened),
  metrics (the diagnostics, the fit time, and LOO when the trace holds a
  ``log_likelihood`` group), small artifacts (``twin/spec.json``,
  ``twin/metadata.json``) and a pyfunc model whose artifacts are the whole saved model
  directory of :func:`bayestwin.model.fit.save_model` (posterior arrays, the posterior
  netCDF, the spec and the population). The model is registered as a new version of
  ``bayestwin-<brand>-<twin_type>`` (see :func:`registered_model_name`).
* :func:`set_active` points the alias ``active`` at a version;
  ``models:/<name>@active`` then loads it.
* :func:`load_fitted` brings back the full :class:`~bayestwin.model.FittedTwinModel`;
  :func:`load_pyfunc` the MLflow pyfunc, whose ``predict`` is
  :func:`predict_expected_outcomes`.
* :func:`log_fidelity` adds fidelity metrics to the model's run.
* :func:`model_info_from` builds the ``digital_twin_models`` row that links to the run
  and the version.

Where things are stored
-----------------------
Without a ``tracking_uri``, the store is ``Settings.resolved_mlflow_uri()``: a SQLite
file ``mlflow.db`` in the data directory, unless ``BAYESTWIN_MLFLOW_TRACKING_URI`` (or
the YAML ``storage.mlflow_tracking_uri``) names another store, such as a tracking server
by its ``http(s)://`` URI. MLflow's own ``MLFLOW_TRACKING_URI`` is not consulted. For a
database-backed store, new experiments get an explicit artifact location: the
``mlartifacts`` directory next to a SQLite file, or in the data directory for other
databases; never ``./mlruns`` in the working directory. A tracking server keeps its own
artifact location. The registry is always the tracking store's.

MLflow's fluent API (runs, ``log_model``, ``pyfunc.load_model``) reads a process-wide
tracking URI. The functions here set it to their store for the duration of the call and
restore it afterwards, so they do not disturb a caller's own MLflow set-up; calls from
several threads to *different* stores at the same time are not supported.

MLflow sends anonymous usage telemetry unless ``MLFLOW_DISABLE_TELEMETRY=true`` is set
before MLflow is imported; bayestwin leaves that choice to the environment.

What the pyfunc predicts
------------------------
``model_input`` has one row per unit: the encoder's raw columns (the segment column,
numeric features as floats, categorical features as strings), ``intervention_type``
(empty or missing: control) and ``intensity`` (a float; ignored for control rows, and
intensity 0 means untreated, as in fitting). The output has one row per input row:
``expected_outcome`` (posterior mean of the expected outcome on the natural scale),
``sd`` (its posterior sd) and the 5% and 95% posterior quantiles ``q05`` and ``q95``,
plus ``unit_id`` when the input has it. These are expected outcomes (``mu``), not
predictive draws: they carry posterior uncertainty only.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc import PyFuncModel, PythonModel
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from mlflow.types import ColSpec, Schema, TensorSpec
from numpy.typing import NDArray
from sqlalchemy.engine import make_url

from bayestwin.settings import load_settings
from bayestwin.model.fit import load_model, package_versions, save_model
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.core.posterior import TwinPosterior
from bayestwin.schemas import FidelityResult, TwinModelInfo
from bayestwin.store.repository import InvalidStateError
from bayestwin.vocabulary import FidelityGrade, TwinType

__all__ = [
    "ACTIVE_ALIAS",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_QUANTILES",
    "INTENSITY_COLUMN",
    "INTERVENTION_COLUMN",
    "RegisteredTwin",
    "TwinPyfuncModel",
    "active_version",
    "default_artifact_location",
    "fit_metrics",
    "fit_params",
    "load_fitted",
    "load_pyfunc",
    "log_fidelity",
    "log_fit",
    "model_info_from",
    "predict_expected_outcomes",
    "registered_model_name",
    "resolve_tracking_uri",
    "set_active",
    "twin_signature",
]

DEFAULT_EXPERIMENT = "bayestwin"
ACTIVE_ALIAS = "active"
INTERVENTION_COLUMN = "intervention_type"
INTENSITY_COLUMN = "intensity"
DEFAULT_QUANTILES = (0.05, 0.95)
MODEL_ARTIFACT = "model_dir"
LOGGED_MODEL_NAME = "twin"

TAG_BRAND = "bayestwin.brand"
TAG_TWIN_TYPE = "bayestwin.twin_type"
TAG_MODEL_ID = "bayestwin.model_id"
TAG_FIT_FOR_USE = "bayestwin.fit_for_use"
TAG_DIAGNOSTICS = "bayestwin.diagnostics"

# MLflow refuses param values longer than this.
_MAX_PARAM_LENGTH = 6000
# Draws x units held at once by the prediction (float64: 32 MB).
_MAX_CELLS = 1 << 22
# Namespace of the row ids derived from MLflow run ids (see model_info_from).
_RUN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "bayestwin/mlflow-run")
_DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")
_GRADE_SCORE = {
    FidelityGrade.EXCELLENT: 3.0,
    FidelityGrade.GOOD: 2.0,
    FidelityGrade.FAIR: 1.0,
    FidelityGrade.POOR: 0.0,
}
_PYFUNC_CODE = """\
from mlflow.models import set_model

from bayestwin.store.mlflow.registry import TwinPyfuncModel

set_model(TwinPyfuncModel())
"""
_REQUIREMENTS = ("bayestwin", "mlflow", "numpy", "pandas", "pyarrow", "xarray", "h5netcdf", "h5py")


# -- where ------------------------------------------------------------------------------


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


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def _fluent(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI at ``uri`` for the duration of the block.

    Runs, ``log_model`` and ``pyfunc.load_model`` read it, and so does MLflow 3.17's
    registry store when it creates a version from a ``models:/m-...`` source.
    """
    with _use_tracking_uri(uri):
        yield


def _error_code(exc: MlflowException) -> str:
    return str(getattr(exc, "error_code", ""))


def _ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name, artifact_location=artifact_location))
        except MlflowException:
            # another process may have created it in the meantime
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise ValueError(
            f"MLflow experiment {name!r} is deleted; restore it with "
            f"MlflowClient().restore_experiment({experiment.experiment_id!r}) or pass "
            "another experiment_name"
        )
    return str(experiment.experiment_id)


# -- names ------------------------------------------------------------------------------


def registered_model_name(brand: str, twin_type: TwinType | str) -> str:
    """Registered model name of a (brand, twin type): ``bayestwin-<brand>-<twin_type>``.

    The brand is lower-cased and every run of characters other than letters, digits,
    ``.`` and ``_`` becomes ``-``, so the name is safe in ``models:/<name>@<alias>``
    URIs. A brand with nothing left (e.g. only non-Latin letters) is replaced by a hash
    of it. Two brands that map to the same name are told apart by the registered
    model's tags: :func:`log_fit` refuses to add a version for another brand.

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


def _ensure_registered_model(client: MlflowClient, name: str, model: FittedTwinModel) -> None:
    owner = {TAG_BRAND: model.brand, TAG_TWIN_TYPE: model.twin_type.value}
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name,
                tags=owner,
                description=(
                    f"bayestwin twin models of brand {model.brand!r}, twin type "
                    f"{model.twin_type.value!r}."
                ),
            )
            return
        except MlflowException:
            registered = client.get_registered_model(name)  # created concurrently
    tags = registered.tags or {}
    for key, value in owner.items():
        if key in tags and tags[key] != value:
            raise ValueError(
                f"registered model {name!r} holds {key.split('.')[-1]} {tags[key]!r}, not "
                f"{value!r}; pass registered_name= to register this model under another name"
            )
    for key, value in owner.items():
        if key not in tags:
            client.set_registered_model_tag(name, key, value)


# -- what a fit logs --------------------------------------------------------------------


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _MAX_PARAM_LENGTH else text[: _MAX_PARAM_LENGTH - 3] + "..."


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


def fit_params(model: FittedTwinModel) -> dict[str, str]:
    """The run params of a fit: the spec flattened with dots, and the data sizes.

    Parameters
    ----------
    model : FittedTwinModel
        The fitted model.

    Returns
    -------
    dict of str to str
        e.g. ``{"family": "bernoulli", "sampler.draws": "1000", "priors.beta_sd":
        "0.5", "numeric_features": '["x1", "x2"]', ...}``; strings as they are, other
        values as JSON.
    """
    flat: dict[str, Any] = {}
    _flatten("", model.spec, flat)
    prov = model.provenance
    flat["n_units"] = len(model.population)
    flat["n_draws"] = model.posterior.n_draws
    flat["intervention_types"] = list(model.posterior.intervention_types)
    for key in ("n_rows", "n_likelihood_rows"):
        if key in prov:
            flat[key] = prov[key]
    return {key: _param_value(value) for key, value in flat.items()}


def _loo_metrics(trace: Any) -> dict[str, float]:
    if trace is None or "log_likelihood" not in trace.children:
        return {}
    import warnings

    import arviz as az

    try:
        loo = az.loo(trace)
    except Exception as exc:  # noqa: BLE001 - LOO is optional; the fit is logged anyway
        warnings.warn(f"LOO was not computed: {exc}", RuntimeWarning, stacklevel=3)
        return {}
    return {
        "loo_elpd": float(loo.elpd),
        "loo_se": float(loo.se),
        "loo_p": float(loo.p),
        "loo_max_pareto_k": float(np.nanmax(np.asarray(loo.pareto_k))),
    }


def fit_metrics(model: FittedTwinModel) -> dict[str, float]:
    """The run metrics of a fit.

    Parameters
    ----------
    model : FittedTwinModel
        The fitted model.

    Returns
    -------
    dict of str to float
        ``max_r_hat``, ``min_ess_bulk``, ``min_ess_tail``, ``divergences``,
        ``min_bfmi``, ``diagnostics_passed`` (1 or 0) and ``fit_seconds``; with
        ``loo_elpd``, ``loo_se``, ``loo_p`` and ``loo_max_pareto_k`` when the trace
        has a ``log_likelihood`` group. Values that are not finite are left out.
    """
    diag = model.diagnostics
    metrics: dict[str, float] = {
        "max_r_hat": diag.max_r_hat,
        "min_ess_bulk": diag.min_ess_bulk,
        "min_ess_tail": diag.min_ess_tail,
        "divergences": float(diag.divergences),
        "min_bfmi": diag.min_bfmi,
        "diagnostics_passed": float(diag.passed),
    }
    if "fit_seconds" in model.provenance:
        metrics["fit_seconds"] = float(model.provenance["fit_seconds"])
    metrics.update(_loo_metrics(model.trace))
    return {key: float(v) for key, v in metrics.items() if math.isfinite(float(v))}


def twin_signature(model: FittedTwinModel) -> ModelSignature:
    """The pyfunc signature of a model: its raw columns in, expected outcomes out.

    Parameters
    ----------
    model : FittedTwinModel
        The fitted model.

    Returns
    -------
    ModelSignature
        Inputs: the segment column and categorical features as strings, numeric
        features and ``intensity`` as doubles, ``intervention_type`` as a string and an
        optional ``unit_id``. Outputs: ``expected_outcome``, ``sd``, ``q05`` and ``q95``
        as doubles and an optional ``unit_id``.
    """
    enc = model.posterior.encoder
    inputs: list[ColSpec | TensorSpec] = [
        ColSpec("string", "unit_id", required=False),
        ColSpec("string", enc.segment_column),
        *(ColSpec("double", col) for col in enc.numeric),
        *(ColSpec("string", col) for col in enc.categorical),
        ColSpec("string", INTERVENTION_COLUMN),
        ColSpec("double", INTENSITY_COLUMN),
    ]
    outputs: list[ColSpec | TensorSpec] = [
        ColSpec("string", "unit_id", required=False),
        *(ColSpec("double", col) for col in _output_columns(DEFAULT_QUANTILES)),
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def _input_example(model: FittedTwinModel) -> pd.DataFrame:
    enc = model.posterior.encoder
    cols = [c for c in ("unit_id", *enc.raw_columns) if c in model.population.columns]
    example = model.population.loc[:, cols].head(3).copy()
    for col in enc.numeric:
        example[col] = example[col].astype(float)
    example[INTERVENTION_COLUMN] = model.posterior.intervention_types[0]
    example[INTENSITY_COLUMN] = 1.0
    return example


def _requirements() -> list[str]:
    return [f"{name}=={version}" for name, version in package_versions(_REQUIREMENTS).items()]


# -- the registered result --------------------------------------------------------------


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
        The fitted model. Keep its trace (``fit(keep_trace=True)``, the default) to
        store the posterior netCDF with it.
    tracking_uri : str, optional
        The store; see :func:`resolve_tracking_uri`.
    experiment_name : str
        Experiment of the run, created when missing.
    registered_name : str, optional
        Registered model name; defaults to :func:`registered_model_name`.
    artifact_location : str, optional
        Artifact location of a *new* experiment; defaults to
        :func:`default_artifact_location`. An existing experiment keeps its own.
    run_name : str, optional
        Name of the run (default ``"<name>-<model hash>"``).
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
    ValueError
        If the registered model name belongs to another brand or twin type, or the
        experiment is deleted.
    InvalidStateError
        If ``activate`` is asked for a model that is not fit for use (the run and the
        version are recorded all the same).

    Notes
    -----
    When the calling thread has an active MLflow run, the fit's run is nested under it.
    """
    uri = resolve_tracking_uri(tracking_uri)
    client = _client(uri)
    location = artifact_location or default_artifact_location(uri)
    experiment_id = _ensure_experiment(client, experiment_name, location)
    name = registered_name or registered_model_name(model.brand, model.twin_type)
    _ensure_registered_model(client, name, model)

    diag = model.diagnostics
    owner_tags = {
        TAG_BRAND: model.brand,
        TAG_TWIN_TYPE: model.twin_type.value,
        TAG_MODEL_ID: model.model_id,
        TAG_FIT_FOR_USE: str(model.fit_for_use).lower(),
        TAG_DIAGNOSTICS: "passed" if diag.passed else "failed",
    }
    run_tags = {
        **owner_tags,
        "bayestwin.override_diagnostics": str(model.override_diagnostics).lower(),
        "bayestwin.has_trace": str(model.trace is not None).lower(),
        **dict(tags or {}),
    }
    if diag.reasons:
        run_tags["bayestwin.diagnostics_reasons"] = _param_value("; ".join(diag.reasons))
    if "data_hash" in model.provenance:
        run_tags["bayestwin.data_hash"] = str(model.provenance["data_hash"])
    params = fit_params(model)
    metrics = fit_metrics(model)
    signature = twin_signature(model)
    example = _input_example(model)

    description = f"diagnostics {'passed' if diag.passed else 'failed'}"
    if diag.reasons:
        description += ": " + "; ".join(diag.reasons)

    with tempfile.TemporaryDirectory(prefix="bayestwin-mlflow-") as tmp, _fluent(uri):
        model_dir = save_model(model, Path(tmp) / "twin")
        code = Path(tmp) / "twin_pyfunc.py"
        code.write_text(_PYFUNC_CODE)
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name or f"{name}-{model.model_id[:8]}",
            tags=run_tags,
            nested=True,
        ) as run:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            mlflow.log_artifact(str(model_dir / "spec.json"), "twin")
            mlflow.log_artifact(str(model_dir / "metadata.json"), "twin")
            info = mlflow.pyfunc.log_model(
                name=LOGGED_MODEL_NAME,
                python_model=str(code),
                artifacts={MODEL_ARTIFACT: str(model_dir)},
                signature=signature,
                input_example=example,
                pip_requirements=_requirements(),
                tags=owner_tags,
            )
        run_id = run.info.run_id
        # MLflow's registry store looks the logged model up through the process-wide
        # tracking URI, so the version is created inside this block.
        version = client.create_model_version(
            name=name,
            source=info.model_uri,
            run_id=run_id,
            tags=owner_tags,
            description=description,
            model_id=info.model_id,
        )
    registered = RegisteredTwin(
        name=name,
        version=str(version.version),
        run_id=run_id,
        experiment_id=experiment_id,
        logged_model_id=info.model_id,
        artifact_uri=str(client.get_logged_model(info.model_id).artifact_location),
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
        The store; see :func:`resolve_tracking_uri`.
    force : bool
        Activate even a version that is not fit for use.

    Raises
    ------
    InvalidStateError
        If the version failed its diagnostics without an override, unless ``force``.
    """
    client = _client(resolve_tracking_uri(tracking_uri))
    found = client.get_model_version(name, str(version))
    if not force and (found.tags or {}).get(TAG_FIT_FOR_USE) == "false":
        raise InvalidStateError(
            f"{name} version {version} failed its diagnostics and is not fit for use; "
            "refit it, or pass force=True to activate it anyway"
        )
    client.set_registered_model_alias(name, alias, str(version))


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
        The store; see :func:`resolve_tracking_uri`.
    """
    client = _client(resolve_tracking_uri(tracking_uri))
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if _error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


# -- loading ----------------------------------------------------------------------------


def _is_uri(name_or_uri: str) -> bool:
    return ":" in name_or_uri or "/" in name_or_uri


def _model_location(
    client: MlflowClient, name_or_uri: str, alias: str | None, version: str | int | None
) -> str:
    """Artifact location of the logged model a name, URI, alias or version points at."""
    if alias is not None and version is not None:
        raise ValueError("give alias or version, not both")
    if _is_uri(name_or_uri):
        if alias is not None or version is not None:
            raise ValueError(
                f"{name_or_uri!r} is a URI; alias and version go with a registered model name"
            )
        if not name_or_uri.startswith("models:/"):
            return name_or_uri
        rest = name_or_uri.removeprefix("models:/")
        if "@" in rest:
            name, alias = rest.rsplit("@", 1)
        elif "/" in rest:
            name, version = rest.rsplit("/", 1)
        else:
            return str(client.get_logged_model(rest).artifact_location)
    else:
        name = name_or_uri
        if version is None and alias is None:
            alias = ACTIVE_ALIAS
    found = (
        client.get_model_version_by_alias(name, alias)
        if alias is not None
        else client.get_model_version(name, str(version))
    )
    model_id = found.model_id
    if not model_id and str(found.source).startswith("models:/m-"):
        model_id = str(found.source).removeprefix("models:/")
    if model_id:
        return str(client.get_logged_model(model_id).artifact_location)
    return str(found.source)


def _local_path(location: str) -> Path | None:
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and location[1:3] in (":\\", ":/")):
        return Path(location)
    return None


def _model_dir_in(root: Path) -> Path:
    """The bayestwin model directory inside a downloaded pyfunc model (or ``root``)."""
    if (root / "metadata.json").exists():
        return root
    if not (root / "MLmodel").exists():
        raise FileNotFoundError(f"{root} holds neither an MLflow model nor a bayestwin model")
    flavor = Model.load(str(root)).flavors.get("python_function", {})
    entry = (flavor.get("artifacts") or {}).get(MODEL_ARTIFACT)
    if not entry:
        raise FileNotFoundError(
            f"the MLflow model at {root} has no {MODEL_ARTIFACT!r} artifact; it was not "
            "logged by bayestwin"
        )
    return root / entry["path"]


def load_fitted(
    name_or_uri: str,
    alias: str | None = None,
    version: str | int | None = None,
    *,
    tracking_uri: str | None = None,
    load_trace: bool = False,
) -> FittedTwinModel:
    """Load a registered fit back as a :class:`~bayestwin.model.FittedTwinModel`.

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
        The store; see :func:`resolve_tracking_uri`.
    load_trace : bool
        Also load the full posterior ``DataTree`` (``trace.nc``).

    Returns
    -------
    FittedTwinModel
        The model as it was logged.

    Raises
    ------
    ValueError
        If both alias and version are given, or either with a URI.
    mlflow.exceptions.MlflowException
        If the name, version or alias does not exist.
    """
    uri = resolve_tracking_uri(tracking_uri)
    location = _model_location(_client(uri), name_or_uri, alias, version)
    local = _local_path(location)
    if local is not None and local.exists():
        return load_model(_model_dir_in(local), load_trace=load_trace)
    with tempfile.TemporaryDirectory(prefix="bayestwin-load-") as tmp:
        root = mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=tmp, tracking_uri=uri
        )
        return load_model(_model_dir_in(Path(root)), load_trace=load_trace)


def load_pyfunc(
    name_or_uri: str,
    alias: str | None = None,
    version: str | int | None = None,
    *,
    tracking_uri: str | None = None,
) -> PyFuncModel:
    """Load a registered fit as an MLflow pyfunc model.

    Parameters
    ----------
    name_or_uri, alias, version, tracking_uri
        As in :func:`load_fitted`.

    Returns
    -------
    mlflow.pyfunc.PyFuncModel
        Its ``predict(units)`` returns the twins' expected outcomes (see the module
        docstring); ``unwrap_python_model().fitted`` is the fitted model.
    """
    uri = resolve_tracking_uri(tracking_uri)
    location = _model_location(_client(uri), name_or_uri, alias, version)
    with _fluent(uri):
        return mlflow.pyfunc.load_model(location)


# -- prediction -------------------------------------------------------------------------


def _quantile_name(q: float) -> str:
    pct = q * 100
    if float(pct).is_integer():
        return f"q{int(pct):02d}"
    return "q" + f"{pct:g}".replace(".", "_")


def _output_columns(quantiles: Sequence[float]) -> list[str]:
    return ["expected_outcome", "sd", *(_quantile_name(q) for q in quantiles)]


def predict_expected_outcomes(
    posterior: TwinPosterior,
    units: pd.DataFrame,
    *,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    max_cells: int = _MAX_CELLS,
) -> pd.DataFrame:
    """Posterior summary of each unit's expected outcome under its own intervention.

    Parameters
    ----------
    posterior : TwinPosterior
        The model's posterior.
    units : DataFrame
        One row per unit: the encoder's raw columns, ``intervention_type`` (empty or
        missing for control) and ``intensity`` (>= 0; ignored for control rows; 0 means
        untreated).
    quantiles : sequence of float
        Posterior quantiles to report, each in (0, 1).
    max_cells : int
        Draws x units computed at once (bounds the memory).

    Returns
    -------
    DataFrame
        Indexed like ``units``: ``expected_outcome`` (posterior mean), ``sd``
        (posterior sd, ``ddof=1``) and one column per quantile (``q05``, ``q95``, ...),
        on the outcome's natural scale, preceded by ``unit_id`` when ``units`` has it.

    Raises
    ------
    ValueError
        If a column is missing, an intervention type is unknown, or a treated row's
        intensity is negative or missing.
    """
    missing = [c for c in (INTERVENTION_COLUMN, INTENSITY_COLUMN) if c not in units.columns]
    if missing:
        raise ValueError(f"units lack the column(s) {missing}")
    posterior.encoder.check_columns(units)
    qs = np.asarray(quantiles, dtype=float)
    if qs.ndim != 1 or not ((qs > 0) & (qs < 1)).all():
        raise ValueError(f"quantiles must lie in (0, 1), got {list(quantiles)}")
    kinds = np.array(
        ["" if pd.isna(v) else str(v) for v in units[INTERVENTION_COLUMN]], dtype=object
    )
    intensity = pd.to_numeric(units[INTENSITY_COLUMN]).to_numpy(dtype=float)
    treated = (kinds != "") & (intensity != 0)
    bad = treated & ~(np.isfinite(intensity) & (intensity >= 0))
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} treated row(s) have a negative or missing {INTENSITY_COLUMN}; "
            "intensity must be a number >= 0"
        )
    unknown = sorted(set(kinds[treated]) - set(posterior.intervention_types))
    if unknown:
        raise ValueError(
            f"unknown intervention_type(s) {unknown}; this model knows "
            f"{list(posterior.intervention_types)}"
        )
    kinds[~treated] = ""
    dose = np.where(treated, intensity, 0.0)
    n, d = len(units), posterior.n_draws
    mean = np.empty(n)
    sd = np.empty(n)
    quant = np.empty((len(qs), n))
    step = max(1, max_cells // max(d, 1))
    groups = pd.DataFrame({"kind": kinds, "dose": dose}).groupby(["kind", "dose"], sort=True)
    for key, positions in groups.indices.items():
        kind, level = cast(tuple[str, float], key)
        for start in range(0, len(positions), step):
            idx = positions[start : start + step]
            draws: NDArray = posterior.expected_outcome(
                units.iloc[idx], str(kind) or None, float(level)
            )
            mean[idx] = draws.mean(axis=0)
            sd[idx] = draws.std(axis=0, ddof=1 if d > 1 else 0)
            quant[:, idx] = np.quantile(draws, qs, axis=0)
    columns = dict(zip(_output_columns(quantiles), [mean, sd, *quant], strict=True))
    out = pd.DataFrame(columns, index=units.index)
    if "unit_id" in units.columns:
        out.insert(0, "unit_id", units["unit_id"].astype(str).to_numpy())
    return out


class TwinPyfuncModel(PythonModel):
    """The pyfunc face of a fitted twin model (see the module docstring).

    It holds nothing until MLflow calls :meth:`load_context`, which loads the model
    directory logged as the ``model_dir`` artifact.
    """

    def __init__(self) -> None:
        self._fitted: FittedTwinModel | None = None

    def load_context(self, context: Any) -> None:
        """Load the fitted model from the ``model_dir`` artifact."""
        self._fitted = load_model(context.artifacts[MODEL_ARTIFACT])

    @property
    def fitted(self) -> FittedTwinModel:
        """The fitted model; raises ``RuntimeError`` before :meth:`load_context`."""
        if self._fitted is None:
            raise RuntimeError("the model is not loaded; load it with mlflow.pyfunc.load_model")
        return self._fitted

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Expected outcome of each row's unit under its intervention.

        Parameters
        ----------
        context : PythonModelContext
            Unused.
        model_input : DataFrame
            See :func:`predict_expected_outcomes`.
        params : dict, optional
            Unused.

        Returns
        -------
        DataFrame
            ``expected_outcome``, ``sd``, ``q05``, ``q95`` (and ``unit_id``).

        Raises
        ------
        ModelNotUsableError
            If the model failed its diagnostics without an override.
        """
        fitted = self.fitted
        fitted.require_usable()
        return predict_expected_outcomes(fitted.posterior, model_input)


# -- fidelity ---------------------------------------------------------------------------

FidelityInput = float | FidelityResult | Sequence[FidelityResult] | Mapping[str, Any]
"""What :func:`log_fidelity` takes."""


def _metric_key(text: str) -> str:
    return re.sub(r"[^\w\-. /:]", "_", text)


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _flatten_numbers(prefix: str, value: Any, out: dict[str, float]) -> None:
    number = _numeric(value)
    if number is not None:
        out[_metric_key(prefix)] = number
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _flatten_numbers(f"{prefix}.{key}", item, out)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for i, item in enumerate(value):
            if isinstance(item, Mapping):
                label = item.get("level", item.get("group", i))
                _flatten_numbers(f"{prefix}.{label}", item, out)


def _result_metrics(result: FidelityResult, prefix: str) -> dict[str, float]:
    values: dict[str, Any] = {
        "simulated_ate": result.simulated_ate,
        "actual_ate": result.actual_ate,
        "actual_se": result.actual_se,
        "prediction_error": result.prediction_error,
        "standardized_error": result.standardized_error,
        "pit": result.pit,
        "score": result.model_fidelity_score,
        "warning": result.fidelity_warning,
        "grade": _GRADE_SCORE.get(result.fidelity_grade),
    }
    for level, inside in result.in_predictive_interval.items():
        values[f"in_interval_{level}"] = inside
    out: dict[str, float] = {}
    for key, value in values.items():
        _flatten_numbers(f"{prefix}.{key}", value, out)
    return out


def _millis(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


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
        * a float: the model fidelity score, logged as ``<prefix>.score``;
        * a :class:`~bayestwin.schemas.FidelityResult`: its ``simulated_ate``,
          ``actual_ate``, ``actual_se``, ``prediction_error``, ``standardized_error``,
          ``pit``, ``score`` (the model score, when set), ``warning`` (1 or 0),
          ``grade`` (excellent 3, good 2, fair 1, poor 0; absent when unvalidated) and
          ``in_interval_<level>`` (1 or 0), stamped with its ``validated_at``;
        * a sequence of them: each at its own step (``step``, ``step + 1``, ...);
        * a mapping, such as ``FidelitySummary.to_dict()`` or
          ``CalibrationReport.to_dict()``: every number and bool, nested keys joined
          with dots (list entries by their ``level`` or ``group``, else their index).

        Missing and non-finite values are skipped.
    step : int, optional
        MLflow step (default 0), e.g. the number of validations so far.
    tracking_uri : str, optional
        The store; see :func:`resolve_tracking_uri`.
    prefix : str
        Prefix of the metric keys.

    Returns
    -------
    dict of str to float
        The last value logged under each key.
    """
    client = _client(resolve_tracking_uri(tracking_uri))
    now = int(datetime.now().timestamp() * 1000)
    first = 0 if step is None else int(step)
    batches: list[tuple[dict[str, float], int, int]] = []
    if isinstance(fidelity, str):
        raise TypeError("fidelity must be a score, a FidelityResult, a sequence or a mapping")
    if isinstance(fidelity, FidelityResult):
        moment = _millis(fidelity.validated_at) or now
        batches.append((_result_metrics(fidelity, prefix), moment, first))
    elif isinstance(fidelity, Mapping):
        values: dict[str, float] = {}
        for key, item in fidelity.items():
            _flatten_numbers(f"{prefix}.{key}", item, values)
        batches.append((values, now, first))
    elif isinstance(fidelity, Sequence):
        for i, result in enumerate(fidelity):
            if not isinstance(result, FidelityResult):
                raise TypeError(f"item {i} is a {type(result).__name__}, not a FidelityResult")
            moment = _millis(result.validated_at) or now
            batches.append((_result_metrics(result, prefix), moment, first + i))
    else:
        score = _numeric(fidelity)
        if score is None and not isinstance(fidelity, int | float):
            raise TypeError(
                "fidelity must be a score, a FidelityResult, a sequence of them or a mapping; "
                f"got {type(fidelity).__name__}"
            )
        batches.append(({} if score is None else {f"{prefix}.score": score}, now, first))
    logged: dict[str, float] = {}
    for values, moment, at in batches:
        metrics = [Metric(key, value, moment, at) for key, value in values.items()]
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        logged.update(values)
    return logged


# -- the database row -------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def model_info_from(
    model: FittedTwinModel,
    registered: RegisteredTwin,
    *,
    is_active: bool = False,
    model_id: uuid.UUID | None = None,
) -> TwinModelInfo:
    """The ``digital_twin_models`` row of a logged fit.

    Parameters
    ----------
    model : FittedTwinModel
        The fitted model.
    registered : RegisteredTwin
        What :func:`log_fit` returned for it.
    is_active : bool
        The row's ``is_active``.
    model_id : uuid.UUID, optional
        The row id. Defaults to a UUID derived from the run id, so that the same run
        cannot be stored twice.

    Returns
    -------
    TwinModelInfo
        ``model_name`` and ``model_version`` are the registered name and version,
        ``mlflow_run_id`` the run and ``artifact_uri`` where the logged model's files
        are; ``training_config`` holds the spec, the provenance and the spec hash;
        ``performance_metrics`` the run metrics and the diagnostics' verdict.
    """
    spec = model.spec
    features = [
        *spec.get("segment_columns", ()),
        *spec.get("numeric_features", ()),
        *spec.get("categorical_features", ()),
    ]
    metrics: dict[str, Any] = dict(registered.metrics)
    metrics["diagnostics_passed"] = model.diagnostics.passed
    metrics["diagnostics_reasons"] = list(model.diagnostics.reasons)
    return TwinModelInfo(
        model_id=model_id or uuid.uuid5(_RUN_NAMESPACE, registered.run_id),
        model_name=registered.name,
        twin_type=model.twin_type,
        model_version=registered.version,
        mlflow_run_id=registered.run_id,
        training_config=_json_safe(
            {"spec": spec, "provenance": model.provenance, "spec_hash": model.model_id}
        ),
        feature_columns=[str(c) for c in features],
        target_columns=[str(spec.get("outcome", "outcome"))],
        performance_metrics=_json_safe(metrics),
        is_active=is_active,
        brand=model.brand,
        fit_for_use=model.fit_for_use,
        diagnostics_reason="; ".join(model.diagnostics.reasons) or None,
        artifact_uri=registered.artifact_uri,
    )
