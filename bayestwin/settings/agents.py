"""The experiment designer agent's configuration (``config/agent_config.yaml``).

:func:`load_agent_config` reads and validates the agent's description, its workflow
(the ordered steps and how the twin-simulation step gates the rest) and its tools (their
parameters and the request and result schemas they speak).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bayestwin.errors import from_validation_error
from bayestwin.resources import resource_path
from bayestwin.settings._yaml import CONFIG_CODE, config_error, hint, read_yaml
from bayestwin.vocabulary import VOCABULARY, Recommendation

__all__ = [
    "AGENT_CONFIG_FILE",
    "AgentConfig",
    "AgentSpec",
    "AgentsSection",
    "ParameterType",
    "ToolParameter",
    "ToolSpec",
    "TwinSimulationStep",
    "Workflow",
    "load_agent_config",
]

AGENT_CONFIG_FILE = "agent_config.yaml"
"""Name of the shipped agent configuration file."""


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
                        f"unknown key {key!r}.{hint(str(key), allowed)} "
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
                f"unknown vocabulary {value!r}.{hint(value, list(VOCABULARY))} "
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
                f"twin_simulation.pass_to {target!r} is not a step.{hint(target, self.steps)}"
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
                f"{hint(tool, list(self.tools))}"
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
            raise KeyError(f"unknown tool {name!r}.{hint(name, list(tools))} Known: {list(tools)}")
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
    InvalidInputError
        With code ``"invalid_config"``, if the file is missing or not YAML, or a key is
        unknown (with a "did you mean" hint) or a value invalid; the message gives the
        key's path.
    """
    cfg_path = Path(path) if path is not None else resource_path("config", AGENT_CONFIG_FILE)
    if not cfg_path.exists():
        raise config_error(f"Agent config file {cfg_path} does not exist.")
    raw = read_yaml(cfg_path)
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(
            exc, what=f"agent config {cfg_path}", code=CONFIG_CODE
        ) from None
