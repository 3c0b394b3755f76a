"""What a fit records on its MLflow run, and the logging of that run.

* :func:`fit_params`: the spec and sampler settings, flattened with dots, and the data
  sizes;
* :func:`fit_metrics`: the diagnostics, the fit time, LOO when the trace holds a
  ``log_likelihood`` group, and the rehearsal's rates when the fit ran one
  (:func:`rehearsal_record`), and the model comparison's difference when the fit has
  one (:func:`comparison_metrics`);
* :func:`owner_tags` and :func:`run_tags`: who the run belongs to and how it went, and
  :func:`ensure_registered_model`: the registered model, tagged with its owner;
* :func:`twin_signature` and :func:`input_example`: the pyfunc's columns;
* :func:`log_run`: the run itself, with the small artifacts and the pyfunc model.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema, TensorSpec

from bayestwin.engine.outcomes import INTENSITY_COLUMN, INTERVENTION_COLUMN, output_columns
from bayestwin.errors import InvalidInputError
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.model.io import package_versions, save_model
from bayestwin.store.mlflow.pyfunc import MODEL_ARTIFACT, PYFUNC_CODE

__all__ = [
    "LOGGED_MODEL_NAME",
    "TAG_BRAND",
    "TAG_DIAGNOSTICS",
    "TAG_FIT_FOR_USE",
    "TAG_SPEC_HASH",
    "TAG_TWIN_TYPE",
    "comparison_metrics",
    "ensure_registered_model",
    "fit_metrics",
    "diagnostics_reason",
    "fit_params",
    "input_example",
    "json_safe",
    "log_run",
    "owner_tags",
    "param_value",
    "rehearsal_record",
    "requirements",
    "row_metrics",
    "run_tags",
    "training_config",
    "twin_signature",
    "version_fields",
]

TAG_BRAND = "bayestwin.brand"
TAG_TWIN_TYPE = "bayestwin.twin_type"
TAG_SPEC_HASH = "bayestwin.spec_hash"
TAG_FIT_FOR_USE = "bayestwin.fit_for_use"
TAG_DIAGNOSTICS = "bayestwin.diagnostics"

LOGGED_MODEL_NAME = "twin"
"""Name of the pyfunc model logged on a fit's run."""

# MLflow refuses param values longer than this.
_MAX_PARAM_LENGTH = 6000
_REQUIREMENTS = ("bayestwin", "mlflow", "numpy", "pandas", "pyarrow", "xarray", "h5netcdf", "h5py")


def param_value(value: Any) -> str:
    """A param or tag value: strings as they are, other values as JSON, cut to MLflow's limit."""
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
    return {key: param_value(value) for key, value in flat.items()}


def _loo_metrics(trace: Any) -> dict[str, float]:
    if trace is None or "log_likelihood" not in trace.children:
        return {}
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
        has a ``log_likelihood`` group; ``rehearsal_false_deploy_rate``,
        ``rehearsal_zero_coverage``, ``rehearsal_zero_coverage_80``,
        ``rehearsal_skip_rate`` and ``rehearsal_placebos`` when the model ran a
        rehearsal that simulated its placebos; the :func:`comparison_metrics` when the
        model has a comparison that ran. Values that are not finite (or not measured)
        are left out.
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
    record = rehearsal_record(model)
    if record is not None and record["placebos"]:
        for key in ("false_deploy_rate", "zero_coverage", "zero_coverage_80", "skip_rate"):
            metrics[f"rehearsal_{key}"] = record[key]
        metrics["rehearsal_placebos"] = float(record["placebos"])
    metrics.update(comparison_metrics(model))
    return {key: float(v) for key, v in metrics.items() if math.isfinite(float(v))}


def comparison_metrics(model: FittedTwinModel) -> dict[str, float]:
    """The run metrics of the model's comparison with the pooled model (empty without one).

    Parameters
    ----------
    model : FittedTwinModel
        The fitted model.

    Returns
    -------
    dict of str to float
        ``comparison_elpd_panel`` and ``comparison_elpd_pooled`` (PSIS-LOO over the
        scored units), ``comparison_elpd_difference`` (panel minus pooled: positive
        when the panel terms predict left-out units better), its standard error
        ``comparison_difference_se``, the panel model's stacking weight
        ``comparison_panel_weight`` and ``comparison_units_scored``.
    """
    comparison = model.comparison
    if comparison is None or not comparison.models:
        return {}
    by_name = {m.name: m for m in comparison.models}
    panel, pooled = by_name["panel"], by_name["pooled"]
    worse = panel if panel.rank else pooled
    return {
        "comparison_elpd_panel": panel.elpd,
        "comparison_elpd_pooled": pooled.elpd,
        "comparison_elpd_difference": panel.elpd - pooled.elpd,
        "comparison_difference_se": worse.dse,
        "comparison_panel_weight": panel.weight,
        "comparison_units_scored": float(comparison.units_scored),
    }


def rehearsal_record(model: FittedTwinModel) -> dict[str, Any] | None:
    """What the run and the row keep of the model's rehearsal (None without one).

    Parameters
    ----------
    model : FittedTwinModel
        The fitted model.

    Returns
    -------
    dict or None
        ``placebos`` (simulated), ``false_deploy_rate`` with its 95% Wilson interval
        ``false_deploy_ci``, ``skip_rate``, ``zero_coverage`` (95%),
        ``zero_coverage_80``, ``nominal_false_deploy_rate``, ``reason``, ``seed``,
        ``seconds`` and ``fit_passed`` (the placebo refit's diagnostics); rates are
        None when no placebo ran.
    """
    rehearsal = model.rehearsal
    if rehearsal is None:
        return None
    interval = rehearsal.false_deploy_interval
    return {
        "placebos": rehearsal.n,
        "false_deploy_rate": rehearsal.false_deploy_rate,
        "false_deploy_ci": None if interval is None else list(interval),
        "skip_rate": rehearsal.skip_rate,
        "zero_coverage": rehearsal.zero_coverage,
        "zero_coverage_80": rehearsal.zero_coverage_80,
        "nominal_false_deploy_rate": rehearsal.nominal_false_deploy_rate,
        "reason": rehearsal.reason,
        "seed": rehearsal.seed,
        "seconds": rehearsal.seconds,
        "fit_passed": rehearsal.fit_passed,
    }


def owner_tags(model: FittedTwinModel) -> dict[str, str]:
    """Tags of the run, the logged model and the version: whose fit it is, and its verdict."""
    return {
        TAG_BRAND: model.brand,
        TAG_TWIN_TYPE: model.twin_type.value,
        TAG_SPEC_HASH: model.spec_hash,
        TAG_FIT_FOR_USE: str(model.fit_for_use).lower(),
        TAG_DIAGNOSTICS: "passed" if model.diagnostics.passed else "failed",
    }


def run_tags(model: FittedTwinModel, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tags of the run: :func:`owner_tags`, how the fit went, and ``extra``."""
    tags = {
        **owner_tags(model),
        "bayestwin.override_diagnostics": str(model.override_diagnostics).lower(),
        "bayestwin.has_trace": str(model.trace is not None).lower(),
        **dict(extra or {}),
    }
    if model.diagnostics.reasons:
        tags["bayestwin.diagnostics_reasons"] = param_value("; ".join(model.diagnostics.reasons))
    if "data_hash" in model.provenance:
        tags["bayestwin.data_hash"] = str(model.provenance["data_hash"])
    return tags


def ensure_registered_model(mlflow_client: MlflowClient, name: str, model: FittedTwinModel) -> None:
    """Create the registered model ``name`` for the model's brand and twin type.

    Raises
    ------
    InvalidInputError
        ``registered_name_taken`` if the name holds another brand or twin type.
    """
    owner = {TAG_BRAND: model.brand, TAG_TWIN_TYPE: model.twin_type.value}
    try:
        registered = mlflow_client.get_registered_model(name)
    except MlflowException:
        try:
            mlflow_client.create_registered_model(
                name,
                tags=owner,
                description=(
                    f"bayestwin twin models of brand {model.brand!r}, twin type "
                    f"{model.twin_type.value!r}."
                ),
            )
            return
        except MlflowException:
            registered = mlflow_client.get_registered_model(name)  # created concurrently
    tags = registered.tags or {}
    for key, value in owner.items():
        if key in tags and tags[key] != value:
            raise InvalidInputError(
                f"registered model {name!r} holds {key.split('.')[-1]} {tags[key]!r}, not "
                f"{value!r}; pass registered_name= to register this model under another name",
                code="registered_name_taken",
                field="registered_name",
            )
    for key, value in owner.items():
        if key not in tags:
            mlflow_client.set_registered_model_tag(name, key, value)


def diagnostics_reason(model: FittedTwinModel) -> str | None:
    """Why the diagnostics failed (``"overridden: ..."`` when used anyway); None if passed."""
    diag = model.diagnostics
    if diag.passed:
        return None
    reason = "; ".join(diag.reasons) or "diagnostics failed"
    return f"overridden: {reason}" if model.override_diagnostics else reason


def row_metrics(model: FittedTwinModel, run_metrics: Mapping[str, float] | None) -> Any:
    """The row's ``performance_metrics``: the run's metrics, the diagnostics, the sizes.

    With a rehearsal, ``"rehearsal"`` holds :func:`rehearsal_record`; the repository
    copies its rates into the row's ``rehearsal_*`` columns. With a model comparison,
    ``"model_comparison"`` holds it (:meth:`ModelComparison.to_dict`).
    """
    prov = model.provenance
    metrics: dict[str, Any] = dict(run_metrics or {})
    metrics.update(
        diagnostics=model.diagnostics.to_dict(),
        diagnostics_passed=model.diagnostics.passed,
        diagnostics_reasons=list(model.diagnostics.reasons),
        fit_seconds=prov.get("fit_seconds"),
        n_rows=prov.get("n_rows"),
        n_likelihood_rows=prov.get("n_likelihood_rows"),
        n_units=len(model.population),
        n_draws=model.posterior.n_draws,
    )
    record = rehearsal_record(model)
    if record is not None:
        metrics["rehearsal"] = record
    if model.comparison is not None:
        metrics["model_comparison"] = model.comparison.to_dict()
    return json_safe(metrics)


def training_config(model: FittedTwinModel) -> Any:
    """The row's ``training_config``: the spec, its hash, the provenance, the interventions."""
    return json_safe(
        {
            "spec": model.spec,
            "spec_hash": model.spec_hash,
            "provenance": model.provenance,
            "intervention_types": list(model.posterior.intervention_types),
            "outcome_family": model.outcome_family,
        }
    )


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
        *(ColSpec("double", col) for col in output_columns()),
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def input_example(model: FittedTwinModel) -> pd.DataFrame:
    """Three units of the population, under the model's first intervention at intensity 1."""
    enc = model.posterior.encoder
    cols = [c for c in ("unit_id", *enc.raw_columns) if c in model.population.columns]
    example = model.population.loc[:, cols].head(3).copy()
    for col in enc.numeric:
        example[col] = example[col].astype(float)
    example[INTERVENTION_COLUMN] = model.posterior.intervention_types[0]
    example[INTENSITY_COLUMN] = 1.0
    return example


def requirements() -> list[str]:
    """The pip requirements of a logged twin: the installed versions it needs."""
    return [f"{name}=={version}" for name, version in package_versions(_REQUIREMENTS).items()]


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None and mapping keys as strings (JSON-ready)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def log_run(
    model: FittedTwinModel,
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str] | None,
    metrics: dict[str, float],
) -> tuple[str, ModelInfo]:
    """Log the fit's run and its pyfunc model; the process-wide URI must be the store's."""
    with tempfile.TemporaryDirectory(prefix="bayestwin-mlflow-") as tmp:
        model_dir = save_model(model, Path(tmp) / "twin")
        code = Path(tmp) / "twin_pyfunc.py"
        code.write_text(PYFUNC_CODE)
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            tags=run_tags(model, tags),
            nested=True,
        ) as run:
            mlflow.log_params(fit_params(model))
            mlflow.log_metrics(metrics)
            mlflow.log_artifact(str(model_dir / "spec.json"), "twin")
            mlflow.log_artifact(str(model_dir / "metadata.json"), "twin")
            info = mlflow.pyfunc.log_model(
                name=LOGGED_MODEL_NAME,
                python_model=str(code),
                artifacts={MODEL_ARTIFACT: str(model_dir)},
                signature=twin_signature(model),
                input_example=input_example(model),
                pip_requirements=requirements(),
                tags=owner_tags(model),
            )
    return run.info.run_id, info


def version_fields(model: FittedTwinModel, logged_model_id: str) -> dict[str, Any]:
    """Tags, description and logged model of a registered version."""
    diag = model.diagnostics
    description = f"diagnostics {'passed' if diag.passed else 'failed'}"
    if diag.reasons:
        description += ": " + "; ".join(diag.reasons)
    return {"tags": owner_tags(model), "description": description, "model_id": logged_model_id}
