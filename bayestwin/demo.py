"""The ``bayestwin demo`` workflow: synthetic data with a known truth, through the service.

For each twin type, :func:`run_demo` draws a synthetic history, fits and registers a
model, simulates every intervention type, runs a "real" randomised experiment of each
from the ground truth, and validates the simulation against it: every step is a call
of :class:`~bayestwin.service.TwinService`. :func:`demo_text` turns the report into the
text the command prints; the small text helpers (:func:`fmt_number`, :func:`text_table`,
...) are the ones the command's other outputs use too.

Import rule: the demo sits above the service and below the faces. It calls
:mod:`bayestwin.service` and reads the ground truth it compares with from
:mod:`bayestwin.synthetic` (and :func:`~bayestwin.core.population.eligible_mask`, to
pick the units a simulation targeted); it never touches the model, engine or store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pandas as pd
from pydantic import BaseModel

from bayestwin.core.population import eligible_mask
from bayestwin.schemas import SimulateInterventionRequest
from bayestwin.service import TwinService
from bayestwin.synthetic import SyntheticTwinData, generate_synthetic_twin_data
from bayestwin.vocabulary import TwinType

__all__ = [
    "DEMO_SIZES",
    "DemoSize",
    "demo_text",
    "fmt_count",
    "fmt_number",
    "indent",
    "run_demo",
    "text_table",
]

Progress = Callable[[str], None]


class DemoSize(BaseModel):
    """Sizes of the demo's synthetic histories and fits."""

    n_units: int
    n_periods: int
    n_segments: int
    n_numeric: int
    n_categorical: int
    n_intervention_types: int
    draws: int
    tune: int
    chains: int
    target_accept: float
    twin_count: int
    experiment_n_per_arm: int


DEMO_SIZES: dict[str, DemoSize] = {
    "full": DemoSize(
        n_units=2000,
        n_periods=6,
        n_segments=4,
        n_numeric=3,
        n_categorical=1,
        n_intervention_types=4,
        draws=1000,
        tune=1000,
        chains=4,
        target_accept=0.95,
        twin_count=10_000,
        experiment_n_per_arm=20_000,
    ),
    "quick": DemoSize(
        n_units=200,
        n_periods=3,
        n_segments=3,
        n_numeric=2,
        n_categorical=1,
        n_intervention_types=3,
        draws=150,
        tune=150,
        chains=2,
        target_accept=0.9,
        twin_count=2000,
        experiment_n_per_arm=5000,
    ),
}
"""The two demo sizes: ``"full"`` (minutes) and ``"quick"`` (seconds)."""


# -- the workflow ------------------------------------------------------------------------


def run_demo(
    service: TwinService,
    *,
    quick: bool = False,
    brand: str = "Kisqali",
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the end-to-end demo on synthetic data with a known ground truth.

    For each twin type: draw a synthetic history, fit and register a model (activated;
    a fit that misses the diagnostics gate is registered with an override and the
    report says so), simulate every intervention type, run a "real" randomised
    experiment of each from the ground truth (large, so that its own noise stays small
    beside the twins' error), register its result, and validate the simulation against
    it by id. The sample sizes in the report are what the twins recommend for a real
    test; the "real" experiments are drawn from the ground truth independently.

    Parameters
    ----------
    service : TwinService
        Where models, simulations and validations go.
    quick : bool
        Tiny histories and short chains (seconds instead of minutes).
    brand : str
        Brand name of the synthetic histories.
    seed : int
        Seed of the data, the fits, the twins and the experiments.
    progress : callable, optional
        Receives one line per step.

    Returns
    -------
    dict
        JSON-ready report: per twin type, the model, the simulations, the true effects,
        the real experiments and the validations, and the model's fidelity summary.
    """
    say: Progress = progress or (lambda _line: None)
    size = DEMO_SIZES["quick" if quick else "full"]
    report: dict[str, Any] = {
        "brand": brand,
        "mode": "quick" if quick else "full",
        "twin_count": size.twin_count,
        "min_effect_threshold": service.settings.min_effect_threshold,
        "twin_types": [],
    }
    started = time.perf_counter()
    for i, twin_type in enumerate(TwinType):
        tag = f"[{i + 1}/{len(TwinType)} {twin_type.value}]"
        block = _demo_twin_type(
            service,
            twin_type,
            size,
            brand=brand,
            seed=seed,
            index=i,
            say=_tagged(say, tag),
        )
        report["twin_types"].append(block)
    report["wall_seconds"] = time.perf_counter() - started
    report["data_dir"] = str(service.settings.resolved_data_dir())
    report["mlflow"] = service.registry_status
    return report


def _tagged(say: Progress, tag: str) -> Progress:
    """``say`` with ``tag`` in front of every line."""
    return lambda line: say(f"{tag} {line}")


def _demo_twin_type(
    service: TwinService,
    twin_type: TwinType,
    size: DemoSize,
    *,
    brand: str,
    seed: int,
    index: int,
    say: Progress,
) -> dict[str, Any]:
    """One twin type of the demo: history, fit, then a validated simulation per type."""
    say(f"generating {size.n_units} units x {size.n_periods} periods")
    syn = generate_synthetic_twin_data(
        twin_type,
        n_units=size.n_units,
        n_periods=size.n_periods,
        brands=(brand,),
        n_segments=size.n_segments,
        n_numeric=size.n_numeric,
        n_categorical=size.n_categorical,
        n_intervention_types=size.n_intervention_types,
        random_seed=seed + index,
        # a panel as real histories are: persistent unit differences, and campaigns
        # that start mid-history
        unit_icc=0.3,
        adoption="staggered",
        min_pre_periods=2,
    )
    say(f"fitting ({size.chains} chains x {size.draws} draws)")
    t0 = time.perf_counter()
    info = service.fit_history(
        syn.data,
        brand=brand,
        twin_type=twin_type,
        family=syn.truth.family,
        numeric_features=syn.numeric_features,
        categorical_features=syn.categorical_features,
        sampler={
            "draws": size.draws,
            "tune": size.tune,
            "chains": size.chains,
            "cores": 2,
            "target_accept": size.target_accept,
            "random_seed": seed + index,
            "progressbar": False,
        },
        activate=True,
        override_diagnostics=True,
    )
    fit_s = time.perf_counter() - t0
    diag = info.performance_metrics.get("diagnostics", {})
    say(
        f"fitted in {fit_s:.1f} s; diagnostics "
        + ("passed" if diag.get("passed") else f"failed ({info.diagnostics_reason})")
    )
    population = syn.population(brand)
    entries = [
        _simulate_and_validate(
            service,
            syn,
            population,
            kind,
            size,
            brand=brand,
            seed=seed,
            key=10 * index + j,
            say=say,
        )
        for j, kind in enumerate(syn.truth.intervention_types)
    ]
    fidelity = service.model_fidelity(info.model_id)
    return {
        "twin_type": twin_type.value,
        "outcome_family": syn.truth.family,
        "model": service.get_model(info.model_id).model_dump(mode="json"),
        "fit_seconds": fit_s,
        "simulations": entries,
        "fidelity": fidelity.summary.to_dict(),
    }


def _simulate_and_validate(
    service: TwinService,
    syn: SyntheticTwinData,
    population: pd.DataFrame,
    kind: str,
    size: DemoSize,
    *,
    brand: str,
    seed: int,
    key: int,
    say: Progress,
) -> dict[str, Any]:
    """Simulate one intervention, run its "real" experiment from the truth, validate."""
    twin_type = syn.truth.twin_type
    request = SimulateInterventionRequest(
        intervention_type=kind,
        intervention_config={"intensity": 1.0},
        target_population=twin_type,
        brand=brand,
        twin_count=size.twin_count,
        random_seed=seed,
    )
    sim = service.simulate(request)
    units = population[eligible_mask(population, sim.intervention_config.target)]
    intensity = sim.intervention_config.intensity
    truth = syn.truth.ate(units, kind, intensity)
    frame = syn.truth.run_experiment(
        units,
        kind,
        intensity,
        n_per_arm=size.experiment_n_per_arm,
        random_seed=seed * 1000 + key,
    )
    experiment_id = f"demo-{twin_type.value}-{kind}-{sim.simulation_id.hex[:8]}"
    outcome = service.outcome_from_frame(
        frame, family=syn.truth.family, actual_experiment_id=experiment_id
    )
    service.register_experiment_result(experiment_id, outcome, overwrite=True)
    fid = service.validate(sim.simulation_id, experiment_id)
    say(
        f"{kind}: simulated {sim.recommendation}, real ATE "
        f"{outcome.actual_ate:+.4g}, grade {fid.fidelity_grade}"
    )
    return {
        "simulation": sim.lean().model_dump(mode="json"),
        "true_ate": truth.ate,
        "true_relative_lift": truth.relative,
        "experiment": outcome.model_dump(mode="json"),
        "validation": fid.model_dump(mode="json"),
    }


# -- text --------------------------------------------------------------------------------


def fmt_number(value: float | None, fmt: str = ".4g", sign: bool = False) -> str:
    """Format a number with ``fmt`` (``"+"`` in front when ``sign``); None is ``"-"``."""
    if value is None:
        return "-"
    return format(value, ("+" if sign else "") + fmt)


def fmt_count(value: int | None) -> str:
    """Format a count; None is ``"-"``."""
    return "-" if value is None else str(value)


def text_table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned plain-text table, columns two spaces apart."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def indent(text: str, prefix: str = "  ") -> str:
    """Put ``prefix`` in front of every line of ``text``."""
    return "\n".join(prefix + line for line in text.splitlines())


_DEMO_HEADER = [
    "intervention",
    "simulated ATE [CI]",
    "true ATE",
    "lift",
    "P(lift>{thr})",
    "decision",
    "n/arm classic / assurance / cov-adj",
    "real experiment ATE ± SE",
    "grade",
]

_DEMO_LEGEND = (
    "deploy = run the real test (sized as shown, per arm: what it needs; short = the "
    "eligible population cannot supply both arms, and the decision is refine); skip = "
    "predicted effect below the threshold; refine = redesign and simulate again. True "
    "ATE: from the ground truth the data were drawn from. Real experiments: randomised "
    "draws from that truth; grade = the twins' error against them."
)


def demo_text(report: dict[str, Any]) -> str:
    """The demo report (:func:`run_demo`) as text: one table per twin type.

    Parameters
    ----------
    report : dict
        What :func:`run_demo` returned.

    Returns
    -------
    str
        The text, without a final newline.
    """
    thr = report["min_effect_threshold"]
    lines = [
        f"bayestwin demo ({report['mode']}): brand {report['brand']}, "
        f"{report['twin_count']} twins per simulation, decision threshold: relative lift "
        f"> {thr:.0%}",
        "",
    ]
    header = [h.format(thr=f"{thr:.0%}") for h in _DEMO_HEADER]
    for block in report["twin_types"]:
        lines.append(_model_line(block))
        rows = [_demo_row(entry) for entry in block["simulations"]]
        lines.append(indent(text_table(rows, header)))
        lines.append(f"  {_fidelity_line(block['fidelity'])}")
        lines.append("")
    lines.append(_DEMO_LEGEND)
    lines.append(
        f"Done in {report['wall_seconds']:.0f} s. Data in {report['data_dir']} "
        f"(MLflow registry: {report['mlflow']})."
    )
    return "\n".join(lines)


def _model_line(block: dict[str, Any]) -> str:
    model = block["model"]
    diag = model["performance_metrics"].get("diagnostics", {})
    gate = (
        "diagnostics passed"
        if diag.get("passed")
        else "diagnostics FAILED ("
        + "; ".join(diag.get("reasons", []))
        + "), overridden for the demo"
    )
    return (
        f"{block['twin_type'].upper()} twins ({block['outcome_family']} outcome): model "
        f"{model['model_name']} v{model['model_version']}, fitted in "
        f"{block['fit_seconds']:.0f} s, {gate}"
    )


def _demo_row(entry: dict[str, Any]) -> list[str]:
    sim, exp, val = entry["simulation"], entry["experiment"], entry["validation"]
    level = f"{sim['confidence_level']:.0%}"
    ss = sim.get("sample_size") or {}
    return [
        sim["intervention_type"],
        f"{fmt_number(sim['simulated_ate'], '.4g', True)} "
        f"[{fmt_number(sim['simulated_ci_lower'], '.3g', True)}, "
        f"{fmt_number(sim['simulated_ci_upper'], '.3g', True)}] ({level})",
        fmt_number(entry["true_ate"], ".4g", True),
        fmt_number(sim.get("relative_lift"), ".1%", True),
        fmt_number(sim.get("prob_effect_above_threshold"), ".2f"),
        str(sim["recommendation"]),
        f"{fmt_count(ss.get('classic_n_per_arm'))} / {fmt_count(ss.get('assurance_n_per_arm'))}"
        f" / {fmt_count(ss.get('covariate_adjusted_n_per_arm'))}"
        + (
            f" (short: {fmt_count(ss.get('eligible_population'))} eligible)"
            if ss.get("population_sufficient") is False
            else ""
        ),
        f"{fmt_number(exp['actual_ate'], '.4g', True)} ± {fmt_number(exp['actual_se'], '.2g')}"
        f" (n={exp['n_treatment']}/arm)",
        str(val["fidelity_grade"]),
    ]


def _fidelity_line(fid: dict[str, Any]) -> str:
    score = fid["score"]
    score_text = (
        f"model fidelity score {score:.2f} over {fid['n_validations']} validations"
        if score is not None
        else f"model unvalidated ({fid['n_validations']} of {fid['n_required']} validations)"
    )
    warn = f"; WARNING: {fid['reason']}" if fid["warning"] else "; no fidelity warning"
    return score_text + warn
