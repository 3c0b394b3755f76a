"""Typed, validated settings from ``config/digital_twin_config.yaml`` and ``agent_config.yaml``.

Settings are built by :func:`load_settings`, never at import time. The precedence is,
from lowest to highest: the defaults below (which equal the spec's section 7), the YAML
file, ``BAYESTWIN_<KEY>`` environment variables, then keyword arguments. Every layer is
validated the same way: unknown keys are refused with a "did you mean" hint, and invalid
values are refused with a message that names the key.

Environment variables that start with ``BAYESTWIN_`` are settings, with two reserved
exceptions: ``BAYESTWIN_CONFIG`` (the path of the YAML file to read) and names that
start with ``BAYESTWIN_TEST_`` (left to test harnesses, e.g.
``BAYESTWIN_TEST_POSTGRES_URL``).

The experiment designer agent's tools and workflow are read by :func:`load_agent_config`
from ``config/agent_config.yaml``.

The YAML files live in ``config/`` of the source tree; a built wheel carries copies of
them in ``bayestwin/_config`` (``setup.py`` copies them at build time).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bayestwin.vocabulary import VOCABULARY, Recommendation

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "AgentConfig",
    "AgentSpec",
    "ConfigError",
    "Settings",
    "ToolParameter",
    "ToolSpec",
    "TwinSimulationStep",
    "Workflow",
    "config_file",
    "default_config_path",
    "load_agent_config",
    "load_settings",
]

ENV_PREFIX = "BAYESTWIN_"
CONFIG_ENV = "BAYESTWIN_CONFIG"
_TEST_ENV_PREFIX = "BAYESTWIN_TEST_"
_PACKAGED_DIR = Path(__file__).resolve().parent / "_config"


class ConfigError(ValueError):
    """A setting is unknown or invalid; the message names the key."""


def _source_config_dir() -> Path | None:
    """``config/`` of the source tree this module sits in, or None when installed."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "config").is_dir():
        return root / "config"
    return None


def config_file(name: str) -> Path:
    """Return the path of one of the shipped YAML files.

    Parameters
    ----------
    name : str
        File name, e.g. ``"domain_vocabulary.yaml"``.

    Returns
    -------
    Path
        ``config/<name>`` of the source tree when bayestwin runs from one, else the
        copy packaged inside ``bayestwin/_config``.
    """
    source = _source_config_dir()
    if source is not None and (source / name).exists():
        return source / name
    return _PACKAGED_DIR / name


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Return the path of the ``digital_twin_config.yaml`` to read.

    Parameters
    ----------
    environ : mapping, optional
        Environment to look ``BAYESTWIN_CONFIG`` up in (default ``os.environ``).

    Returns
    -------
    Path
        ``$BAYESTWIN_CONFIG`` when set, else the shipped file (see :func:`config_file`).
    """
    env = os.environ if environ is None else environ
    chosen = env.get(CONFIG_ENV)
    if chosen:
        return Path(chosen)
    return config_file("digital_twin_config.yaml")


def _hint(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _check_unknown(keys: list[str], where: str, candidates: list[str]) -> None:
    for key in keys:
        if key not in candidates:
            raise ConfigError(
                f"Unknown setting {key!r} in {where}.{_hint(str(key), candidates)} "
                f"Allowed: {', '.join(sorted(candidates))}."
            )


def _format_errors(exc: ValidationError, what: str) -> ConfigError:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] not in ("value_error", "assertion_error"):
            msg = f"{msg} (got {err.get('input')!r})"
        problems.append(f"{key}: {msg}" if key else msg)
    return ConfigError(f"Invalid {what}: " + "; ".join(problems))


# -- digital_twin_config.yaml -------------------------------------------------------------


class Settings(BaseModel):
    """All bayestwin settings, flat.

    Attributes mirror spec section 7 (``digital_twin:`` block) plus the ``statistics:``,
    ``storage:`` and ``api:`` blocks that bayestwin adds.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )

    # -- spec section 7 ------------------------------------------------------------
    min_effect_threshold: float = Field(
        0.05, ge=0.0, description="Relative lift below which an intervention is skipped."
    )
    confidence_threshold: float = Field(
        0.70,
        gt=0.5,
        lt=1.0,
        description=(
            "Posterior probability needed to deploy (or, mirrored, to skip); above 0.5 so "
            "that the deploy and skip regions cannot overlap."
        ),
    )
    default_twin_count: int = Field(10_000, gt=0, description="Twins per simulation.")
    max_twin_count: int = Field(50_000, gt=0, description="Upper bound on twins.")
    min_fidelity_score: float = Field(
        0.7, ge=0.0, le=1.0, description="Fidelity score under which simulations warn."
    )
    fidelity_validation_window_days: int = Field(
        90, gt=0, description="Window of validations that make up the fidelity score."
    )
    model_update_frequency: Literal["daily", "weekly", "monthly", "quarterly"] = "weekly"
    feature_importance_threshold: float = Field(0.01, ge=0.0)
    simulation_timeout_seconds: float = Field(300, gt=0)
    batch_size: int = Field(1000, gt=0, description="Twins per vectorised chunk.")

    # -- statistics ------------------------------------------------------------------
    power_alpha: float = Field(0.05, gt=0.0, lt=1.0)
    power_target: float = Field(0.80, gt=0.0, lt=1.0)
    min_validations_for_score: int = Field(3, gt=0)

    # -- storage ---------------------------------------------------------------------
    database_url: str | None = None
    mlflow_tracking_uri: str | None = None
    data_dir: Path | None = None

    # -- api -------------------------------------------------------------------------
    api_key: SecretStr | None = Field(
        None, description="Key the REST API asks for in the X-API-Key header; None: open."
    )

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
        if self.max_twin_count < self.default_twin_count:
            raise ValueError(
                f"max_twin_count ({self.max_twin_count}) must be >= "
                f"default_twin_count ({self.default_twin_count})"
            )
        return self

    # -- derived locations -------------------------------------------------------------
    def resolved_data_dir(self) -> Path:
        """Return the local data directory (``./.bayestwin`` unless configured)."""
        return Path(self.data_dir) if self.data_dir is not None else Path.cwd() / ".bayestwin"

    def resolved_database_url(self) -> str:
        """Return the SQLAlchemy URL: configured, else a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir() / 'bayestwin.db'}"

    def resolved_mlflow_uri(self) -> str:
        """Return the MLflow tracking URI: configured, else SQLite in the data dir."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.resolved_data_dir() / 'mlflow.db'}"


_SECTIONS: dict[str, tuple[str, ...]] = {
    "digital_twin": (
        "min_effect_threshold",
        "confidence_threshold",
        "default_twin_count",
        "max_twin_count",
        "min_fidelity_score",
        "fidelity_validation_window_days",
        "model_update_frequency",
        "feature_importance_threshold",
        "simulation_timeout_seconds",
        "batch_size",
    ),
    "statistics": ("power_alpha", "power_target", "min_validations_for_score"),
    "storage": ("database_url", "mlflow_tracking_uri", "data_dir"),
    "api": ("api_key",),
}


def _known_keys() -> list[str]:
    return list(Settings.model_fields)


def _flatten_yaml(raw: Mapping[str, Any], path: Path) -> dict[str, Any]:
    _check_unknown(list(raw), f"{path} (top-level sections)", list(_SECTIONS))
    flat: dict[str, Any] = {}
    for section, keys in _SECTIONS.items():
        body = raw.get(section) or {}
        if not isinstance(body, Mapping):
            raise ConfigError(f"Section {section!r} in {path} must be a mapping.")
        for key in body:
            if key in keys:
                continue
            home = next((s for s, ks in _SECTIONS.items() if key in ks), None)
            if home is not None:
                raise ConfigError(
                    f"Setting {key!r} in {path} belongs in section {home!r}, not {section!r}."
                )
            _check_unknown([key], f"{path} section {section!r}", list(keys))
        flat.update(body)
    return flat


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    known = _known_keys()
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        if name.startswith(_TEST_ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in known:
            raise ConfigError(
                f"Unknown setting {key!r} from environment variable {name}.{_hint(key, known)}"
            )
        out[key] = None if value == "" else value
    return out


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path} must contain a mapping at the top level.")
    return raw


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build validated settings from the YAML file, the environment and keywords.

    Parameters
    ----------
    path : path-like, optional
        YAML file to read. Defaults to :func:`default_config_path`.
    environ : mapping, optional
        Environment to read ``BAYESTWIN_*`` overrides from (default ``os.environ``).
    **overrides
        Settings given directly; they win over every other layer.

    Returns
    -------
    Settings
        The frozen, validated settings.

    Raises
    ------
    ConfigError
        If a key is unknown (with a "did you mean" hint) or a value is invalid (the
        message names the key and what is allowed).
    """
    env = os.environ if environ is None else environ
    explicit = path is not None or bool(env.get(CONFIG_ENV))
    cfg_path = Path(path) if path is not None else default_config_path(env)
    values: dict[str, Any] = {}
    if cfg_path.exists():
        values.update(_flatten_yaml(_read_yaml(cfg_path), cfg_path))
    elif explicit:
        raise ConfigError(f"Config file {cfg_path} does not exist.")
    values.update(_from_env(env))
    _check_unknown(list(overrides), "keyword arguments", _known_keys())
    values.update(overrides)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise _format_errors(exc, "bayestwin settings") from None


# -- agent_config.yaml --------------------------------------------------------------------


class _Strict(BaseModel):
    """Frozen, closed model whose unknown keys get a "did you mean" hint."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            allowed = list(cls.model_fields)
            for key in data:
                if key not in allowed:
                    raise ValueError(
                        f"unknown key {key!r}.{_hint(str(key), allowed)} "
                        f"Allowed: {', '.join(allowed)}."
                    )
        return data


ParameterType = Literal["string", "integer", "number", "boolean", "object", "array"]
"""JSON Schema type names a tool parameter may declare."""


class ToolParameter(_Strict):
    """One parameter of an agent tool."""

    type: ParameterType
    description: str = Field(..., min_length=1)
    required: bool = False
    default: Any = None
    vocabulary: str | None = Field(
        None,
        description=(
            "Key of a list in domain_vocabulary.yaml (e.g. 'twin_types') whose values are "
            "the only ones allowed."
        ),
    )
    examples: list[Any] = Field(default_factory=list)

    @field_validator("vocabulary")
    @classmethod
    def _known_vocabulary(cls, value: str | None) -> str | None:
        if value is not None and value not in VOCABULARY:
            raise ValueError(
                f"unknown vocabulary {value!r}.{_hint(value, list(VOCABULARY))} "
                f"Allowed: {', '.join(VOCABULARY)}."
            )
        return value

    @model_validator(mode="after")
    def _required_xor_default(self) -> Self:
        if self.required and self.default is not None:
            raise ValueError("a required parameter cannot have a default")
        return self

    def allowed_values(self) -> list[str] | None:
        """Return the values allowed by :attr:`vocabulary`, or None when unrestricted."""
        if self.vocabulary is None:
            return None
        return [member.value for member in VOCABULARY[self.vocabulary]]


class ToolSpec(_Strict):
    """An agent tool: what it does, its parameters and the schemas it speaks."""

    description: str = Field(..., min_length=1)
    parameters: dict[str, ToolParameter]
    input_schema: str = Field(..., description="Name of the request schema in bayestwin.schemas.")
    output_schema: str = Field(..., description="Name of the result schema in bayestwin.schemas.")

    def defaults(self) -> dict[str, Any]:
        """Return the default of every optional parameter that has one."""
        return {n: p.default for n, p in self.parameters.items() if p.default is not None}

    def required(self) -> list[str]:
        """Return the names of the required parameters, in order."""
        return [n for n, p in self.parameters.items() if p.required]


_STEP_LABELS = {"twin_simulation": "Twin simulation"}


class TwinSimulationStep(_Strict):
    """How the twin-simulation step gates the rest of the workflow."""

    tool: str = Field(..., description="Tool the step calls.")
    stop_on: list[Recommendation] = Field(
        default_factory=lambda: [Recommendation.SKIP],
        description="Recommendations that end the workflow with that recommendation.",
    )
    pass_to: str = Field("power", description="Later step that receives the estimate.")
    pass_field: str = Field(
        "prior_estimate", description="Field of the simulation result handed on."
    )


class Workflow(_Strict):
    """The experiment designer's ordered steps and the twin-simulation gate."""

    steps: list[str] = Field(..., min_length=1)
    twin_simulation: TwinSimulationStep

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, value: list[str]) -> list[str]:
        seen = [s for i, s in enumerate(value) if s in value[:i]]
        if seen:
            raise ValueError(f"steps repeat: {', '.join(seen)}")
        return value

    @model_validator(mode="after")
    def _gate_in_order(self) -> Self:
        if "twin_simulation" not in self.steps:
            raise ValueError("steps must include 'twin_simulation'")
        target = self.twin_simulation.pass_to
        if target not in self.steps:
            raise ValueError(
                f"twin_simulation.pass_to {target!r} is not a step.{_hint(target, self.steps)}"
            )
        if self.steps.index(target) <= self.steps.index("twin_simulation"):
            raise ValueError(f"step {target!r} must come after 'twin_simulation'")
        return self

    def as_text(self) -> str:
        """Render the steps as ``Query → Context → Twin simulation → ...``."""
        return " → ".join(_STEP_LABELS.get(s, s.replace("_", " ").capitalize()) for s in self.steps)


class AgentSpec(_Strict):
    """One agent's description, workflow and tools."""

    description: str = Field(..., min_length=1)
    workflow: Workflow
    tools: dict[str, ToolSpec] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _gate_tool_exists(self) -> Self:
        tool = self.workflow.twin_simulation.tool
        if tool not in self.tools:
            raise ValueError(
                f"workflow.twin_simulation.tool {tool!r} is not one of this agent's tools."
                f"{_hint(tool, list(self.tools))}"
            )
        return self


class AgentsSection(_Strict):
    """The agents bayestwin contributes tools to."""

    experiment_designer: AgentSpec


class AgentConfig(_Strict):
    """Contents of ``config/agent_config.yaml``."""

    version: str = Field(..., min_length=1)
    agents: AgentsSection

    def tool(self, name: str) -> ToolSpec:
        """Return the experiment designer's tool ``name``.

        Parameters
        ----------
        name : str
            Tool name, e.g. ``"simulate_intervention"``.

        Raises
        ------
        KeyError
            If there is no such tool (the message lists the known ones).
        """
        tools = self.agents.experiment_designer.tools
        if name not in tools:
            raise KeyError(f"unknown tool {name!r}.{_hint(name, list(tools))} Known: {list(tools)}")
        return tools[name]


def load_agent_config(path: str | os.PathLike[str] | None = None) -> AgentConfig:
    """Read and validate the agent configuration.

    Parameters
    ----------
    path : path-like, optional
        YAML file to read. Defaults to the shipped ``agent_config.yaml``.

    Returns
    -------
    AgentConfig
        The frozen, validated configuration.

    Raises
    ------
    ConfigError
        If the file is missing or not YAML, or a key is unknown (with a "did you mean"
        hint) or a value invalid; the message gives the key's path.
    """
    cfg_path = Path(path) if path is not None else config_file("agent_config.yaml")
    if not cfg_path.exists():
        raise ConfigError(f"Agent config file {cfg_path} does not exist.")
    raw = _read_yaml(cfg_path)
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        raise _format_errors(exc, f"agent config {cfg_path}") from None
