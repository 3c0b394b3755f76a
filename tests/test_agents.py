"""The twin pre-screen node in a real LangGraph StateGraph, with no LLM.

Query -> Context -> Twin simulation -> Design -> Power, the non-twin steps being plain
functions. One intervention has a clearly negative effect (skip: the graph ends after
the twin step with the rationale); one a clearly positive effect (pass: Power receives
the EffectPrior and the recommended sample size).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from helpers import BRAND, make_settings, truth_model

from bayestwin import tools
from bayestwin.agents import (
    TWIN_AWARE_PROMPT,
    TWIN_NODE,
    ExperimentDesignState,
    add_twin_prescreen,
    make_twin_prescreen_node,
    route_after_twin_simulation,
    twin_prescreen_node,
)
from bayestwin.schemas import EffectPrior, SimulationResult
from bayestwin.service import TwinService
from bayestwin.settings import load_agent_config
from bayestwin.vocabulary import Recommendation

langgraph_graph = pytest.importorskip("langgraph.graph")
END, START, StateGraph = langgraph_graph.END, langgraph_graph.START, langgraph_graph.StateGraph

STRONG, NEGATIVE = "email_campaign", "call_frequency"


class DesignState(ExperimentDesignState, total=False):
    steps: Annotated[list[str], operator.add]
    design: dict[str, Any]
    power: dict[str, Any]


def query_step(state: DesignState) -> dict[str, Any]:
    kind = STRONG if "email" in state["query"] else NEGATIVE
    return {
        "steps": ["query"],
        "intervention": {
            "intervention_type": kind,
            "intervention_config": {"intensity": 1.0},
            "target_population": "hcp",
            "brand": state.get("context", {}).get("brand", BRAND),
            "twin_count": 5000,
            "random_seed": 1,
        },
    }


def context_step(state: DesignState) -> dict[str, Any]:
    return {"steps": ["context"], "context": {"brand": BRAND, "history": "2 prior tests"}}


def design_step(state: DesignState) -> dict[str, Any]:
    return {"steps": ["design"], "design": {"arms": ["control", "treatment"]}}


def power_step(state: DesignState) -> dict[str, Any]:
    prior = state.get("prior_estimate")
    if prior is None:
        return {"steps": ["power"], "power": {"source": "default assumptions", "n": 1000}}
    return {
        "steps": ["power"],
        "power": {
            "source": "twin prior",
            "prior_mean": prior.mean,
            "n": state.get("recommended_sample_size"),
        },
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinService]:
    settings = make_settings(tmp_path_factory.mktemp("agents"))
    with TwinService(settings, registry=None) as svc:
        _, model = truth_model(
            "hcp",
            n_units=3000,
            effect_means={STRONG: 0.8, NEGATIVE: -0.4},
            effect_sd=0.02,
        )
        svc.register(model)
        yield svc


@pytest.fixture(scope="module")
def app(service: TwinService) -> Any:
    graph = StateGraph(DesignState)
    graph.add_node("query", query_step)
    graph.add_node("context", context_step)
    graph.add_node("design", design_step)
    graph.add_node("power", power_step)
    graph.add_edge(START, "query")
    graph.add_edge("query", "context")
    add_twin_prescreen(graph, after="context", design="design", service=service)
    graph.add_edge("design", "power")
    graph.add_edge("power", END)
    return graph.compile()


def test_skip_path_ends_with_the_rationale(app: Any, service: TwinService) -> None:
    final = app.invoke({"query": "should we raise the call frequency?", "steps": []})
    assert final["steps"] == ["query", "context"]  # the twin node adds no step; nothing after
    assert final["twin_outcome"] == "skip"
    assert final["recommendation"] is Recommendation.SKIP
    assert final["skip_rationale"] and "skip" in final["skip_rationale"].lower()
    assert final["prior_estimate"] is None and "design" not in final and "power" not in final
    sim = final["twin_simulation"]
    assert isinstance(sim, SimulationResult) and sim.intervention_type == NEGATIVE
    assert service.get_simulation(sim.simulation_id).recommendation is Recommendation.SKIP


def test_pass_path_hands_the_prior_to_power(app: Any) -> None:
    final = app.invoke({"query": "an email campaign for cardiologists", "steps": []})
    assert final["steps"] == ["query", "context", "design", "power"]
    assert final["twin_outcome"] == "pass"
    assert final["recommendation"] is Recommendation.DEPLOY
    prior = final["prior_estimate"]
    assert isinstance(prior, EffectPrior) and prior.mean > 0
    assert final["power"]["source"] == "twin prior"
    assert final["power"]["prior_mean"] == prior.mean
    assert final["power"]["n"] == final["recommended_sample_size"] > 0
    assert final["sample_size"].classic_n_per_arm is not None
    assert "ATE" in final["twin_summary"] and "deploy" in final["twin_summary"]


def test_no_model_goes_on_without_a_prior(app: Any) -> None:
    final = app.invoke(
        {"query": "an email campaign", "steps": [], "context": {"brand": "NoModelBrand"}}
    )
    assert final["twin_outcome"] == "unavailable"
    assert final["twin_error"]["type"] == "no_active_model"
    assert final["prior_estimate"] is None
    assert final["power"] == {"source": "default assumptions", "n": 1000}


def test_node_as_a_plain_function(service: TwinService) -> None:
    node = make_twin_prescreen_node(service)
    assert node.__name__ == TWIN_NODE
    out = node({"intervention": {"target_population": "hcp", "brand": BRAND}})
    assert out["twin_outcome"] == "unavailable"
    assert out["twin_error"]["field"] == "intervention.intervention_type"
    bad = node(
        {
            "intervention": {
                "intervention_type": STRONG,
                "target_population": "hcp",
                "brand": BRAND,
                "twin_count": -5,
            }
        }
    )
    assert bad["twin_error"]["field"] == "twin_count"
    assert route_after_twin_simulation(bad) == "design"
    assert route_after_twin_simulation({"twin_outcome": "skip"}) == "skip"

    tools.set_default_service(service)
    try:
        out = twin_prescreen_node(
            {
                "intervention": {
                    "intervention_type": STRONG,
                    "target_population": "hcp",
                    "brand": BRAND,
                    "twin_count": 2000,
                    "random_seed": 2,
                }
            }
        )
        assert out["twin_outcome"] == "pass"
    finally:
        tools.set_default_service(None)


def test_prompt_and_workflow_agree() -> None:
    workflow = load_agent_config().agents.experiment_designer.workflow
    assert TWIN_NODE in workflow.steps
    assert workflow.twin_simulation.pass_field == "prior_estimate"
    for word in (
        "simulate_intervention",
        "validate_twin_fidelity",
        "deploy",
        "skip",
        "refine",
        "fidelity_warning",
        "prior_estimate",
        "never",
    ):
        assert word in TWIN_AWARE_PROMPT
