"""Agent tools: ``simulate_intervention`` and ``validate_twin_fidelity`` (spec section 6).

Plain functions, pydantic in and out, on top of :class:`~bayestwin.service.TwinService`.
They use the active model of the repository and persist what they compute. They never
raise into the agent: a wrong input, a missing model or a failed simulation comes back
as a :class:`ToolError`, ``{"error": {"type": ..., "message": ..., "field": ...}}``,
naming the field at fault where there is one. Error types:

========================  ====================================================
``invalid_input``         a parameter is wrong (``field`` and ``errors`` say which)
``no_active_model``       no model is active for the brand and twin type
``not_found``             the simulation (or model) does not exist
``experiment_not_found``  no result is registered for the real experiment
``invalid_state``         a conflict, e.g. validating an unfinished simulation
``model_not_usable``      the active model failed its diagnostics
``timeout``               the simulation ran past ``simulation_timeout_seconds``
``simulation_failed``     the simulation raised or a dependency failed
========================  ====================================================

How ``validate_twin_fidelity`` finds the real result from an experiment id: the
service's :class:`~bayestwin.service.experiments.ExperimentResultSource`. By default it reads the
results stored with :func:`register_experiment_result` (one JSON file per experiment in
``<data_dir>/experiments``); a platform can plug in a reader of its own experiment
tables. The tool also takes the result directly (``outcome``).

The tools use a process-wide default service (built from the settings on first use)
unless one is passed as ``service=`` or set with :func:`set_default_service`.

:func:`tool_schemas` gives each tool's JSON Schema (for validating calls, or for an LLM
function-calling API); :func:`as_langchain_tools` wraps both tools for LangChain /
LangGraph (optional extra ``bayestwin[agents]``). Descriptions come from
``config/agent_config.yaml``.

Import rule: the tools are a face. They import :mod:`bayestwin.service`,
:mod:`bayestwin.schemas`, :mod:`bayestwin.errors` and :mod:`bayestwin.settings`; never
the core, model, engine or store.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any, Literal, cast, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bayestwin.errors import BayesTwinError, ErrorKind, from_validation_error
from bayestwin.schemas import (
    ExperimentOutcome,
    FidelityResult,
    RegisterExperimentRequest,
    SimulateInterventionRequest,
    SimulationResult,
    SimulationSubmission,
    ValidateFidelityRequest,
)
from bayestwin.service import TwinService
from bayestwin.settings import load_agent_config

__all__ = [
    "TOOL_NAMES",
    "FieldError",
    "ToolError",
    "ToolErrorDetail",
    "ToolErrorType",
    "as_langchain_tools",
    "get_default_service",
    "register_experiment_result",
    "set_default_service",
    "simulate_intervention",
    "to_error",
    "tool_schemas",
    "validate_twin_fidelity",
]

TOOL_NAMES = ("simulate_intervention", "validate_twin_fidelity")

ToolErrorType = Literal[
    "invalid_input",
    "no_active_model",
    "not_found",
    "experiment_not_found",
    "invalid_state",
    "model_not_usable",
    "timeout",
    "simulation_failed",
]


class FieldError(BaseModel):
    """One wrong field of a tool call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(..., description="Dotted path of the field, e.g. 'twin_count'.")
    message: str
    type: str = Field("value_error", description="Kind of problem (pydantic's error type).")


class ToolErrorDetail(BaseModel):
    """What went wrong in a tool call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ToolErrorType
    message: str
    field: str | None = Field(None, description="The field at fault, when one is.")
    errors: list[FieldError] = Field(default_factory=list)


class ToolError(BaseModel):
    """A tool's structured error: ``{"error": {...}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error: ToolErrorDetail


# -- the default service -----------------------------------------------------------------

_default_service: TwinService | None = None
_default_lock = threading.Lock()


def set_default_service(service: TwinService | None) -> None:
    """Set the service the tools use when none is passed (None: build one on next use)."""
    global _default_service
    with _default_lock:
        _default_service = service


def get_default_service() -> TwinService:
    """Return the tools' default service, building it from the settings on first use."""
    global _default_service
    with _default_lock:
        if _default_service is None:
            _default_service = TwinService()
        return _default_service


# -- error mapping -----------------------------------------------------------------------

_TYPE_BY_KIND: dict[ErrorKind, ToolErrorType] = {
    ErrorKind.INVALID_INPUT: "invalid_input",
    ErrorKind.NOT_FOUND: "not_found",
    ErrorKind.CONFLICT: "invalid_state",
    ErrorKind.NOT_FIT: "model_not_usable",
    ErrorKind.UNAVAILABLE: "simulation_failed",
}
"""Tool error type of each error kind, for an error whose code is not a type itself."""

_TYPES: frozenset[str] = frozenset(get_args(ToolErrorType))


def _tool_type(error: BayesTwinError) -> ToolErrorType:
    if error.kind is not ErrorKind.INVALID_INPUT and error.code in _TYPES:
        return cast(ToolErrorType, error.code)
    return _TYPE_BY_KIND[error.kind]


def to_error(exc: BaseException) -> ToolError:
    """Map an exception of the service layer to a :class:`ToolError`.

    A :class:`~bayestwin.errors.BayesTwinError` gives its ``code`` as the type when the
    code is one of :data:`ToolErrorType`, else the type of its kind; a pydantic
    validation error is ``invalid_input``; anything else is ``simulation_failed``.

    Parameters
    ----------
    exc : BaseException
        What the service raised.

    Returns
    -------
    ToolError
        With the field at fault and every field error, when there are any.
    """
    error = from_validation_error(exc) if isinstance(exc, ValidationError) else exc
    if not isinstance(error, BayesTwinError):
        message = str(exc) or type(exc).__name__
        return ToolError(error=ToolErrorDetail(type="simulation_failed", message=message))
    return ToolError(
        error=ToolErrorDetail(
            type=_tool_type(error),
            message=error.message or type(error).__name__,
            field=error.field,
            errors=[
                FieldError(field=p.field, message=p.message, type=p.type or error.code)
                for p in error.problems
            ],
        )
    )


# -- the tools ---------------------------------------------------------------------------


def simulate_intervention(
    intervention_type: str,
    intervention_config: Mapping[str, Any] | Any,
    target_population: str,
    brand: str,
    twin_count: int | None = None,
    confidence_level: float = 0.95,
    *,
    random_seed: int | None = None,
    experiment_design_id: str | None = None,
    service: TwinService | None = None,
) -> SimulationResult | ToolError:
    """Pre-screen an intervention using digital twins before a real A/B test.

    Parameters
    ----------
    intervention_type : str
        E.g. ``"email_campaign"``, ``"call_frequency"``.
    intervention_config : dict
        ``intensity`` (>= 0), ``duration_weeks`` and ``target`` filters by column.
    target_population : str
        ``"hcp"``, ``"patient"`` or ``"territory"``.
    brand : str
        Brand whose active model is used.
    twin_count : int, optional
        Number of twins (at most ``max_twin_count``); default the setting
        ``default_twin_count``.
    confidence_level : float
        Level of the credible interval, in (0, 1).
    random_seed : int, optional
        Seed of the twin draw; a repeated seeded request is answered from the cache.
    experiment_design_id : str, optional
        Experiment design the simulation belongs to.
    service : TwinService, optional
        Default: :func:`get_default_service`.

    Returns
    -------
    SimulationResult or ToolError
        The completed, stored result (``simulated_ate``, ``confidence_interval``,
        ``recommendation``, ``recommended_sample_size``, ``fidelity_warning``, ...;
        without the ATE draws and twin ids, which stay in the database), or the error.
    """
    try:
        submission = SimulationSubmission.model_validate(
            {
                "intervention_type": intervention_type,
                "intervention_config": intervention_config,
                "target_population": target_population,
                "brand": brand,
                "twin_count": twin_count,
                "confidence_level": confidence_level,
                "random_seed": random_seed,
                "experiment_design_id": experiment_design_id,
            }
        )
        svc = service if service is not None else get_default_service()
        result = svc.simulate(
            submission.request(), experiment_design_id=submission.experiment_design_id
        )
    except Exception as exc:
        return to_error(exc)
    return result.lean()


def validate_twin_fidelity(
    simulation_id: str,
    actual_experiment_id: str,
    outcome: Mapping[str, Any] | ExperimentOutcome | None = None,
    *,
    replace: bool = False,
    service: TwinService | None = None,
) -> FidelityResult | ToolError:
    """Compare a twin simulation's prediction with the actual experiment's outcome.

    Updates the fidelity tracking and the model's fidelity score.

    Parameters
    ----------
    simulation_id : str
        Id of the simulation.
    actual_experiment_id : str
        Id of the real experiment; its result is read from the service's experiment
        source unless ``outcome`` is given.
    outcome : dict or ExperimentOutcome, optional
        The real result (``actual_ate``, ``actual_se`` or a CI, arm sizes).
    replace : bool
        Replace the simulation's earlier validation; without it a second validation
        is an ``invalid_state`` error (a simulation is validated once).
    service : TwinService, optional
        Default: :func:`get_default_service`.

    Returns
    -------
    FidelityResult or ToolError
        The stored validation (grade, error, PIT, predictive-interval hits, the model's
        fidelity score), or the error.
    """
    try:
        request = ValidateFidelityRequest.model_validate(
            {
                "simulation_id": simulation_id,
                "actual_experiment_id": actual_experiment_id,
                "outcome": outcome,
                "replace": replace,
            }
        )
        svc = service if service is not None else get_default_service()
        return svc.validate(
            request.simulation_id,
            request.actual_experiment_id,
            outcome=request.outcome,
            replace=request.replace,
        )
    except Exception as exc:
        return to_error(exc)


def register_experiment_result(
    experiment_id: str,
    outcome: ExperimentOutcome | Mapping[str, Any],
    *,
    overwrite: bool = False,
    service: TwinService | None = None,
) -> ExperimentOutcome:
    """Store a real experiment's result for :func:`validate_twin_fidelity` to find by id.

    Parameters
    ----------
    experiment_id : str
        The experiment's id.
    outcome : ExperimentOutcome or mapping
        Its result.
    overwrite : bool
        Replace an existing result.
    service : TwinService, optional
        Default: :func:`get_default_service`.

    Returns
    -------
    ExperimentOutcome
        What was stored.

    Raises
    ------
    InvalidInputError
        If the id or the outcome is invalid (the field is named).
    """
    try:
        request = RegisterExperimentRequest.model_validate(
            {
                "actual_experiment_id": experiment_id,
                "outcome": outcome if isinstance(outcome, ExperimentOutcome) else dict(outcome),
            }
        )
    except ValidationError as exc:
        raise from_validation_error(exc, what="experiment result") from None
    svc = service if service is not None else get_default_service()
    return svc.register_experiment_result(
        request.actual_experiment_id, request.outcome, overwrite=overwrite
    )


# -- schemas -----------------------------------------------------------------------------

_REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "simulate_intervention": SimulateInterventionRequest,
    "validate_twin_fidelity": ValidateFidelityRequest,
}


def tool_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of each tool's input, with its description from the agent config.

    Returns
    -------
    dict
        ``{name: {"name", "description", "parameters"}}``; ``parameters`` is a JSON
        Schema (draft 2020-12) object built from the tool's request model, with the
        agent config's parameter descriptions and required parameters.
    """
    config = load_agent_config()
    out: dict[str, dict[str, Any]] = {}
    for name, model in _REQUEST_MODELS.items():
        spec = config.tool(name)
        schema = copy.deepcopy(model.model_json_schema())
        schema.pop("title", None)
        props: dict[str, Any] = schema.setdefault("properties", {})
        required = list(schema.get("required", []))
        for pname, param in spec.parameters.items():
            if pname in props:
                props[pname]["description"] = param.description
                if param.examples:
                    props[pname].setdefault("examples", list(param.examples))
            if param.required and pname not in required:
                required.append(pname)
        schema["required"] = required
        schema["description"] = spec.description
        out[name] = {"name": name, "description": spec.description, "parameters": schema}
    return out


def as_langchain_tools(service: TwinService | None = None) -> list[Any]:
    """Both tools as LangChain ``StructuredTool`` objects (extra ``bayestwin[agents]``).

    The wrapped functions return JSON-ready dicts: the result, or ``{"error": ...}``.

    Parameters
    ----------
    service : TwinService, optional
        Service the tools use (default: :func:`get_default_service` at call time).

    Returns
    -------
    list of langchain_core.tools.StructuredTool

    Raises
    ------
    ImportError
        If ``langchain-core`` is not installed.
    """
    try:
        from langchain_core.tools import StructuredTool
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(
            "as_langchain_tools needs langchain-core: pip install 'bayestwin[agents]'"
        ) from exc
    schemas = tool_schemas()

    def _simulate(**kwargs: Any) -> dict[str, Any]:
        return _call_tool("simulate_intervention", kwargs, service)

    def _validate(**kwargs: Any) -> dict[str, Any]:
        return _call_tool("validate_twin_fidelity", kwargs, service)

    return [
        StructuredTool.from_function(
            func=fn,
            name=name,
            description=schemas[name]["description"],
            args_schema=schemas[name]["parameters"],
        )
        for name, fn in (
            ("simulate_intervention", _simulate),
            ("validate_twin_fidelity", _validate),
        )
    ]


def _call_tool(
    name: str, arguments: Mapping[str, Any], service: TwinService | None
) -> dict[str, Any]:
    """Call a tool with keyword arguments from an agent; unknown ones are an error."""
    model = _REQUEST_MODELS[name]
    unknown = sorted(set(arguments) - set(model.model_fields))
    if unknown:
        error = ToolError(
            error=ToolErrorDetail(
                type="invalid_input",
                message=f"unknown parameter(s) {unknown}; allowed: {list(model.model_fields)}",
                field=unknown[0],
                errors=[FieldError(field=u, message="unknown parameter") for u in unknown],
            )
        )
        return error.model_dump(mode="json")
    if name == "simulate_intervention":
        kwargs = dict(arguments)
        result: BaseModel = simulate_intervention(
            kwargs.pop("intervention_type", None),
            kwargs.pop("intervention_config", {}),
            kwargs.pop("target_population", None),
            kwargs.pop("brand", None),
            service=service,
            **kwargs,
        )
    else:
        result = validate_twin_fidelity(
            arguments.get("simulation_id"),  # type: ignore[arg-type]
            arguments.get("actual_experiment_id"),  # type: ignore[arg-type]
            arguments.get("outcome"),
            replace=arguments.get("replace", False),
            service=service,
        )
    return result.model_dump(mode="json")
