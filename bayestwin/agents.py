"""The Experiment Designer's twin pre-screen step, as a LangGraph node (spec 5.1).

Updated workflow (``config/agent_config.yaml``)::

    Query -> Context -> [Twin simulation] -> Design -> Power -> Validity -> Template
                              |
                              +-- recommendation in stop_on (skip): return the skip
                              |   recommendation and its rationale; design nothing
                              +-- otherwise: pass prior_estimate (EffectPrior) and the
                                  recommended sample size on to the Power step

The node is a plain function of the graph state: it needs LangGraph only to be placed
in a graph (:func:`add_twin_prescreen`), not to run. It calls the
``simulate_intervention`` tool (:mod:`bayestwin.tools`), so the simulation is persisted
and a missing model or a wrong input comes back as a structured error: then the
pre-screen is ``unavailable`` and the workflow goes on to Design without a twin prior
(never with invented numbers).

The decision is the simulation's (:func:`bayestwin.core.decision.decide`): skip
when the posterior probability that the relative lift exceeds ``min_effect_threshold``
is at most ``1 - confidence_threshold``.

Import rule: the agents are a face. They import :mod:`bayestwin.tools`,
:mod:`bayestwin.service`, :mod:`bayestwin.schemas`, :mod:`bayestwin.settings` and
:mod:`bayestwin.vocabulary`; never the core, model, engine or store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypedDict

from bayestwin.schemas import EffectPrior, SampleSizeReport, SimulationResult
from bayestwin.service import TwinService
from bayestwin.settings import AgentConfig, load_agent_config
from bayestwin.tools import ToolError, simulate_intervention
from bayestwin.vocabulary import Recommendation

__all__ = [
    "TWIN_AWARE_PROMPT",
    "TWIN_NODE",
    "ExperimentDesignState",
    "TwinPrescreenOutcome",
    "add_twin_prescreen",
    "format_twin_summary",
    "make_twin_prescreen_node",
    "route_after_twin_simulation",
    "twin_prescreen_node",
]

TWIN_NODE = "twin_simulation"
"""Name of the pre-screen step in the agent config's workflow."""

TwinPrescreenOutcome = Literal["skip", "pass", "unavailable"]

TWIN_AWARE_PROMPT = """\
Before you design an A/B test, pre-screen the intervention on digital twins with the
`simulate_intervention` tool (intervention_type, intervention_config, target_population:
hcp | patient | territory, brand). The twins are Bayesian models fitted on the brand's
history; they predict, they do not replace the real test.

Read the result as follows:
- simulated_ate is the predicted average treatment effect in outcome units, with its
  credible interval (simulated_ci_lower, simulated_ci_upper); relative_lift is the
  same effect relative to the control mean.
- recommendation "deploy": the effect is likely above the minimum worth detecting. Run
  the real test, sized with recommended_sample_size (both arms) and the prior_estimate
  for the power analysis; sample_size also gives the assurance and the smaller
  covariate-adjusted size when the twins' prediction is used as a covariate.
- recommendation "skip": the effect is likely below the minimum; say so, quote the
  rationale, and do not design the test unless the user insists.
- recommendation "refine": the twins are unsure or the population is too small; follow
  refine_suggestions (target responsive segments, change the intensity) and simulate
  again.
- fidelity_warning true: the twin model's recent predictions missed real results;
  state the warning and lean on the real test, not the twins.
- An error (no_active_model, invalid_input, ...) means there is no twin estimate: never
  invent one; design the test with the usual assumptions and say that twins were not
  available.
After the real experiment ends, call `validate_twin_fidelity` with the simulation_id and
the experiment id so that the twins' track record stays honest.
"""


class ExperimentDesignState(TypedDict, total=False):
    """Graph state of the Experiment Designer, as far as the twin step reads and writes it.

    Inputs: ``intervention`` holds the arguments of ``simulate_intervention``
    (``intervention_type``, ``intervention_config``, ``target_population``, ``brand``
    and optionally ``twin_count``, ``confidence_level``, ``random_seed``);
    ``experiment_design_id`` is optional. The other keys are written by the step.
    """

    query: str
    context: dict[str, Any]
    intervention: dict[str, Any]
    experiment_design_id: str | None
    twin_outcome: TwinPrescreenOutcome
    twin_simulation: SimulationResult | None
    twin_error: dict[str, Any] | None
    twin_summary: str
    recommendation: Recommendation | None
    skip_rationale: str | None
    prior_estimate: EffectPrior | None
    recommended_sample_size: int | None
    sample_size: SampleSizeReport | None
    fidelity_warning: str | None


def format_twin_summary(result: SimulationResult) -> str:
    """One paragraph an agent can quote: effect, interval, decision, size, warning."""
    level = f"{result.confidence_level:.0%}"
    parts = [
        f"Twin pre-screen of {result.intervention_type} on {result.twin_count} "
        f"{result.twin_type.value} twins ({result.brand}): ATE {result.simulated_ate:.4g} "
        f"({level} CI {result.simulated_ci_lower:.4g} to {result.simulated_ci_upper:.4g})",
    ]
    if result.relative_lift is not None:
        parts.append(f"relative lift {result.relative_lift:.1%}")
    rec = result.recommendation.value if result.recommendation is not None else "none"
    parts.append(f"recommendation {rec}")
    if result.recommended_sample_size:
        parts.append(f"recommended sample size {result.recommended_sample_size} (both arms)")
    text = "; ".join(parts) + "."
    if result.recommendation_rationale:
        text += f" {result.recommendation_rationale}"
    if result.fidelity_warning:
        text += f" Fidelity warning: {result.fidelity_warning_reason or 'degraded model'}."
    return text


def make_twin_prescreen_node(
    service: TwinService | None = None,
    *,
    agent_config: AgentConfig | None = None,
) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """Build the pre-screen node for a graph.

    Parameters
    ----------
    service : TwinService, optional
        Service the tool uses (default: the tools' default service).
    agent_config : AgentConfig, optional
        Workflow gate (``stop_on``, ``pass_field``); default
        :func:`~bayestwin.settings.load_agent_config`.

    Returns
    -------
    callable
        ``node(state) -> dict`` of state updates (see :class:`ExperimentDesignState`).
    """
    config = agent_config if agent_config is not None else load_agent_config()
    gate = config.agents.experiment_designer.workflow.twin_simulation
    stop_on = set(gate.stop_on)

    def node(state: Mapping[str, Any]) -> dict[str, Any]:
        args = dict(state.get("intervention") or {})
        missing = [k for k in ("intervention_type", "target_population", "brand") if k not in args]
        if missing:
            return _unavailable(
                {
                    "type": "invalid_input",
                    "message": f"state['intervention'] lacks {', '.join(missing)}",
                    "field": f"intervention.{missing[0]}",
                    "errors": [],
                }
            )
        result = simulate_intervention(
            args.pop("intervention_type"),
            args.pop("intervention_config", {}),
            args.pop("target_population"),
            args.pop("brand"),
            experiment_design_id=state.get("experiment_design_id"),
            service=service,
            **args,
        )
        if isinstance(result, ToolError):
            return _unavailable(result.error.model_dump(mode="json"))
        skip = result.recommendation in stop_on
        return _decided(result, skip=skip, pass_field=gate.pass_field)

    node.__name__ = TWIN_NODE
    return node


def _decided(result: SimulationResult, *, skip: bool, pass_field: str) -> dict[str, Any]:
    """State updates of a pre-screen that reached a decision (skip, or pass the prior on)."""
    return {
        "twin_outcome": "skip" if skip else "pass",
        "twin_simulation": result,
        "twin_error": None,
        "twin_summary": format_twin_summary(result),
        "recommendation": result.recommendation,
        "skip_rationale": result.recommendation_rationale if skip else None,
        "prior_estimate": None if skip else getattr(result, pass_field),
        "recommended_sample_size": None if skip else result.recommended_sample_size,
        "sample_size": None if skip else result.sample_size,
        "fidelity_warning": result.fidelity_warning_reason if result.fidelity_warning else None,
    }


def _unavailable(error: dict[str, Any]) -> dict[str, Any]:
    return {
        "twin_outcome": "unavailable",
        "twin_simulation": None,
        "twin_error": error,
        "twin_summary": f"No twin estimate: {error.get('message')}",
        "recommendation": None,
        "skip_rationale": None,
        "prior_estimate": None,
        "recommended_sample_size": None,
        "sample_size": None,
        "fidelity_warning": None,
    }


def twin_prescreen_node(state: Mapping[str, Any]) -> dict[str, Any]:
    """The pre-screen node on the default service (see :func:`make_twin_prescreen_node`).

    Parameters
    ----------
    state : mapping
        Graph state with ``intervention`` (the tool's arguments).

    Returns
    -------
    dict
        State updates: ``twin_outcome`` (``"skip"``, ``"pass"`` or ``"unavailable"``),
        ``twin_simulation``, ``recommendation``, ``skip_rationale``,
        ``prior_estimate``, ``recommended_sample_size``, ``sample_size``,
        ``fidelity_warning``, ``twin_error`` and ``twin_summary``.
    """
    return make_twin_prescreen_node()(state)


def route_after_twin_simulation(state: Mapping[str, Any]) -> Literal["skip", "design"]:
    """Conditional edge after the pre-screen: ``"skip"`` ends the workflow, else design."""
    return "skip" if state.get("twin_outcome") == "skip" else "design"


def add_twin_prescreen(
    graph: Any,
    *,
    after: str,
    design: str,
    skip_to: str | None = None,
    service: TwinService | None = None,
) -> Any:
    """Insert the pre-screen node into a LangGraph ``StateGraph`` between two steps.

    Parameters
    ----------
    graph : langgraph.graph.StateGraph
        The graph; its state should include the keys of :class:`ExperimentDesignState`.
    after : str
        The step that runs before the pre-screen (e.g. ``"context"``).
    design : str
        The step that follows when the intervention is not skipped.
    skip_to : str, optional
        Where a skip goes (default: the graph's end).
    service : TwinService, optional
        Service the tool uses.

    Returns
    -------
    StateGraph
        The same graph, for chaining.
    """
    try:
        from langgraph.graph import END
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(
            "add_twin_prescreen needs langgraph: pip install 'bayestwin[agents]'"
        ) from exc
    graph.add_node(TWIN_NODE, make_twin_prescreen_node(service))
    graph.add_edge(after, TWIN_NODE)
    graph.add_conditional_edges(
        TWIN_NODE,
        route_after_twin_simulation,
        {"skip": skip_to if skip_to is not None else END, "design": design},
    )
    return graph
