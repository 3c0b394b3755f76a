"""The ``bayestwin`` command.

::

    bayestwin demo [--quick]          synthetic data -> fit -> simulate -> validate -> report
    bayestwin fit HISTORY --twin-type T --brand B
    bayestwin activate MODEL_ID
    bayestwin simulate --brand B --twin-type T --intervention K [--intensity 1] [--target col=a,b]
    bayestwin register-experiment EXPERIMENT_ID --outcome JSON|FILE
    bayestwin validate SIMULATION_ID --experiment-id X [--outcome JSON|FILE | --experiment-csv FILE]
    bayestwin models | simulations [SIMULATION_ID] | db upgrade | serve

Every command takes ``--data-dir``, ``--config``, ``--database-url`` and ``--json``
(machine-readable output on stdout). A user error (bad input, unknown id, no active
model, ...) prints one line and exits with status 2; no traceback. Everything goes
through :class:`~bayestwin.service.TwinService`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
from pydantic import BaseModel, ValidationError

from bayestwin.settings import ConfigError, Settings, load_settings
from bayestwin.model.fit import HistoryError, ModelVersionError, SamplerSettings, default_spec
from bayestwin.model.fitted import ModelNotUsableError
from bayestwin.schemas import (
    ExperimentOutcome,
    FidelityResult,
    SimulateInterventionRequest,
    SimulationResult,
    TwinModelInfo,
)
from bayestwin.service import InvalidRequestError, SimulationTimeoutError, TwinService
from bayestwin.store import AlreadyExistsError, InvalidStateError, NotFoundError, upgrade
from bayestwin.synthetic import DEFAULT_FAMILY
from bayestwin.vocabulary import SimulationStatus, TwinType

__all__ = ["DemoSize", "build_parser", "main", "run_demo"]

EXIT_USER_ERROR = 2

_RESERVED_COLUMNS = {
    "unit_id",
    "brand",
    "twin_type",
    "period",
    "segment",
    "intervention_type",
    "intensity",
    "outcome",
}


class UserError(Exception):
    """A mistake in the command line or its inputs."""


_USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    ConfigError,
    InvalidRequestError,
    NotFoundError,
    InvalidStateError,
    AlreadyExistsError,
    ModelNotUsableError,
    HistoryError,
    ModelVersionError,
    SimulationTimeoutError,
    FileNotFoundError,
    IsADirectoryError,
    ValueError,  # pydantic's ValidationError included
)

# -- output helpers ----------------------------------------------------------------------


def _dump(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(
            mode="json", exclude={"ate_draws", "twin_unit_ids"} & set(type(obj).model_fields)
        )
    if isinstance(obj, list):
        return [_dump(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _dump(v) for k, v in obj.items()}
    return obj


def _print_json(obj: Any, out: TextIO) -> None:
    out.write(json.dumps(_dump(obj), indent=2, default=str) + "\n")


def _num(value: float | None, fmt: str = ".4g", sign: bool = False) -> str:
    if value is None:
        return "-"
    return format(value, ("+" if sign else "") + fmt)


def _int(value: int | None) -> str:
    return "-" if value is None else str(value)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "input"
        parts.append(f"{where}: {str(err['msg']).removeprefix('Value error, ')}")
    return "invalid input: " + "; ".join(parts)


def _read_json_arg(value: str, what: str) -> Any:
    """A JSON document given inline or as ``@file`` / a file path."""
    text = value
    path = Path(value[1:] if value.startswith("@") else value)
    if value.startswith("@") or (not value.lstrip().startswith(("{", "[")) and path.exists()):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read {what} file {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno})") from None


def _read_frame(path_text: str) -> pd.DataFrame:
    path = Path(path_text)
    if not path.exists():
        raise UserError(f"file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix == ".csv":
        frame = pd.read_csv(path)
        if "intervention_type" in frame.columns:
            frame["intervention_type"] = frame["intervention_type"].fillna("").astype(str)
        if "unit_id" in frame.columns:
            frame["unit_id"] = frame["unit_id"].astype(str)
        return frame
    raise UserError(f"{path}: use a .parquet or .csv file")


# -- settings and service ----------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    return load_settings(getattr(args, "config", None), **overrides)


def _service(args: argparse.Namespace) -> TwinService:
    return TwinService(_settings(args))


# -- demo --------------------------------------------------------------------------------


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


def run_demo(
    service: TwinService,
    *,
    quick: bool = False,
    brand: str = "Kisqali",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
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
    from bayestwin.engine.fidelity import outcome_from_frame
    from bayestwin.core.population import eligible_mask
    from bayestwin.synthetic import generate_synthetic_twin_data

    say = progress or (lambda _line: None)
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
        say(f"{tag} generating {size.n_units} units x {size.n_periods} periods")
        syn = generate_synthetic_twin_data(
            twin_type,
            n_units=size.n_units,
            n_periods=size.n_periods,
            brands=(brand,),
            n_segments=size.n_segments,
            n_numeric=size.n_numeric,
            n_categorical=size.n_categorical,
            n_intervention_types=size.n_intervention_types,
            random_seed=seed + i,
        )
        spec = default_spec(
            twin_type,
            brand,
            family=syn.truth.family,
            numeric_features=syn.numeric_features,
            categorical_features=syn.categorical_features,
            sampler=SamplerSettings(
                draws=size.draws,
                tune=size.tune,
                chains=size.chains,
                cores=2,
                target_accept=size.target_accept,
                random_seed=seed + i,
                progressbar=False,
            ),
        )
        say(f"{tag} fitting ({size.chains} chains x {size.draws} draws)")
        t0 = time.perf_counter()
        info = service.fit(syn.data, spec, activate=True, override_diagnostics=True)
        fit_s = time.perf_counter() - t0
        diag = info.performance_metrics.get("diagnostics", {})
        say(
            f"{tag} fitted in {fit_s:.1f} s; diagnostics "
            + ("passed" if diag.get("passed") else f"failed ({info.diagnostics_reason})")
        )
        population = syn.population(brand)
        entries = []
        for j, kind in enumerate(syn.truth.intervention_types):
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
            truth = syn.truth.ate(units, kind, sim.intervention_config.intensity)
            frame = syn.truth.run_experiment(
                units,
                kind,
                sim.intervention_config.intensity,
                n_per_arm=size.experiment_n_per_arm,
                random_seed=seed * 1000 + 10 * i + j,
            )
            experiment_id = f"demo-{twin_type.value}-{kind}-{sim.simulation_id.hex[:8]}"
            outcome = outcome_from_frame(
                frame, syn.truth.family, actual_experiment_id=experiment_id
            )
            service.register_experiment_result(experiment_id, outcome, overwrite=True)
            fid = service.validate(sim.simulation_id, experiment_id)
            say(
                f"{tag} {kind}: simulated {sim.recommendation}, real ATE "
                f"{outcome.actual_ate:+.4g}, grade {fid.fidelity_grade}"
            )
            entries.append(
                {
                    "simulation": _dump(sim),
                    "true_ate": truth.ate,
                    "true_relative_lift": truth.relative,
                    "experiment": _dump(outcome),
                    "validation": _dump(fid),
                }
            )
        fidelity = service.model_fidelity(info.model_id)
        report["twin_types"].append(
            {
                "twin_type": twin_type.value,
                "outcome_family": syn.truth.family,
                "model": _dump(service.get_model(info.model_id)),
                "fit_seconds": fit_s,
                "simulations": entries,
                "fidelity": fidelity.summary.to_dict(),
            }
        )
    report["wall_seconds"] = time.perf_counter() - started
    report["data_dir"] = str(service.settings.resolved_data_dir())
    report["mlflow"] = service.registry_status
    return report


def _demo_text(report: dict[str, Any]) -> str:
    thr = report["min_effect_threshold"]
    lines = [
        f"bayestwin demo ({report['mode']}): brand {report['brand']}, "
        f"{report['twin_count']} twins per simulation, decision threshold: relative lift "
        f"> {thr:.0%}",
        "",
    ]
    for block in report["twin_types"]:
        model = block["model"]
        diag = model["performance_metrics"].get("diagnostics", {})
        gate = (
            "diagnostics passed"
            if diag.get("passed")
            else "diagnostics FAILED ("
            + "; ".join(diag.get("reasons", []))
            + "), overridden for the demo"
        )
        lines.append(
            f"{block['twin_type'].upper()} twins ({block['outcome_family']} outcome): model "
            f"{model['model_name']} v{model['model_version']}, fitted in "
            f"{block['fit_seconds']:.0f} s, {gate}"
        )
        rows = []
        for e in block["simulations"]:
            sim, exp, val = e["simulation"], e["experiment"], e["validation"]
            level = f"{sim['confidence_level']:.0%}"
            ss = sim.get("sample_size") or {}
            rows.append(
                [
                    sim["intervention_type"],
                    f"{_num(sim['simulated_ate'], '.4g', True)} "
                    f"[{_num(sim['simulated_ci_lower'], '.3g', True)}, "
                    f"{_num(sim['simulated_ci_upper'], '.3g', True)}] ({level})",
                    _num(e["true_ate"], ".4g", True),
                    _num(sim.get("relative_lift"), ".1%", True),
                    _num(sim.get("prob_effect_above_threshold"), ".2f"),
                    str(sim["recommendation"]),
                    f"{_int(ss.get('classic_n_per_arm'))} / {_int(ss.get('assurance_n_per_arm'))}"
                    f" / {_int(ss.get('covariate_adjusted_n_per_arm'))}"
                    + (" (capped)" if ss.get("capped") else ""),
                    f"{_num(exp['actual_ate'], '.4g', True)} ± {_num(exp['actual_se'], '.2g')}"
                    f" (n={exp['n_treatment']}/arm)",
                    str(val["fidelity_grade"]),
                ]
            )
        header = [
            "intervention",
            "simulated ATE [CI]",
            "true ATE",
            "lift",
            f"P(lift>{thr:.0%})",
            "decision",
            "n/arm classic / assurance / cov-adj",
            "real experiment ATE ± SE",
            "grade",
        ]
        lines.append(_indent(_table(rows, header)))
        fid = block["fidelity"]
        score = fid["score"]
        score_text = (
            f"model fidelity score {score:.2f} over {fid['n_validations']} validations"
            if score is not None
            else f"model unvalidated ({fid['n_validations']} of {fid['n_required']} validations)"
        )
        warn = f"; WARNING: {fid['reason']}" if fid["warning"] else "; no fidelity warning"
        lines.append(f"  {score_text}{warn}")
        lines.append("")
    lines.append(
        "deploy = run the real test (sized as shown, per arm; capped = limited by the "
        "eligible population); skip = predicted effect below the threshold; refine = "
        "redesign and simulate again. True ATE: from the ground truth the data were drawn "
        "from. Real experiments: randomised draws from that truth; grade = the twins' "
        "error against them."
    )
    lines.append(
        f"Done in {report['wall_seconds']:.0f} s. Data in {report['data_dir']} "
        f"(MLflow registry: {report['mlflow']})."
    )
    return "\n".join(lines)


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


# -- formatting of single objects --------------------------------------------------------


def _simulation_text(sim: SimulationResult) -> str:
    lines = [
        f"simulation {sim.simulation_id}  [{sim.simulation_status}]",
        f"  {sim.brand} / {sim.twin_type.value} / {sim.intervention_type} "
        f"(intensity {sim.intervention_config.intensity:g}), {sim.twin_count} twins, "
        f"model {sim.model_id}",
    ]
    if sim.simulation_status is SimulationStatus.FAILED:
        lines.append(f"  error: {sim.error_message}")
        return "\n".join(lines)
    if sim.simulated_ate is None:
        return "\n".join(lines)
    level = f"{sim.confidence_level:.0%}"
    lines.append(
        f"  ATE {sim.simulated_ate:+.4g}  ({level} CI {sim.simulated_ci_lower:+.4g} to "
        f"{sim.simulated_ci_upper:+.4g}); control mean {_num(sim.control_mean)}; "
        f"lift {_num(sim.relative_lift, '.1%', True)}"
    )
    if sim.prob_effect_above_threshold is not None and sim.min_effect_threshold is not None:
        lines.append(
            f"  P(lift > {sim.min_effect_threshold:.0%}) = {sim.prob_effect_above_threshold:.2f}"
        )
    lines.append(f"  recommendation: {sim.recommendation}  {sim.recommendation_rationale or ''}")
    ss = sim.sample_size
    if ss is not None:
        lines.append(
            f"  sample size per arm: classic {_int(ss.classic_n_per_arm)}, assurance "
            f"{_int(ss.assurance_n_per_arm)}, covariate-adjusted "
            f"{_int(ss.covariate_adjusted_n_per_arm)} (eligible {_int(ss.eligible_population)}"
            + (", capped)" if ss.capped else ")")
        )
    for tip in sim.refine_suggestions:
        lines.append(f"  - {tip}")
    if sim.fidelity_warning:
        lines.append(f"  FIDELITY WARNING: {sim.fidelity_warning_reason}")
    if sim.segment_effects:
        rows = [
            [
                s.segment,
                str(s.n_twins),
                f"{s.ate:+.4g}",
                f"{s.relative_lift:+.1%}",
                f"{s.prob_above_threshold:.2f}",
            ]
            for s in sim.segment_effects
        ]
        lines.append(_indent(_table(rows, ["segment", "twins", "ATE", "lift", "P(>thr)"])))
    return "\n".join(lines)


def _validation_text(val: FidelityResult) -> str:
    lines = [
        f"validation {val.tracking_id} of simulation {val.simulation_id} against "
        f"experiment {val.actual_experiment_id}",
        f"  grade {val.fidelity_grade}; simulated {val.simulated_ate:+.4g} vs real "
        f"{_num(val.actual_ate, '.4g', True)} (SE {_num(val.actual_se, '.3g')}); "
        f"error {_num(val.prediction_error, '.1%')}; PIT {_num(val.pit, '.3f')}",
    ]
    if val.in_predictive_interval:
        hits = ", ".join(
            f"{float(k):.0%}: {'yes' if v else 'no'}" for k, v in val.in_predictive_interval.items()
        )
        lines.append(f"  inside the predictive interval: {hits}")
    score = val.model_fidelity_score
    lines.append(
        "  model fidelity score "
        + (f"{score:.2f}" if score is not None else "not yet available (too few validations)")
        + ("  WARNING: below min_fidelity_score" if val.fidelity_warning else "")
    )
    return "\n".join(lines)


def _models_text(items: list[TwinModelInfo], total: int) -> str:
    if not items:
        return "no models"
    rows = [
        [
            str(m.model_id),
            m.model_name,
            m.model_version,
            m.brand,
            m.twin_type.value,
            "yes" if m.is_active else "",
            "yes" if m.fit_for_use else "NO",
            _num(m.fidelity_score, ".2f"),
            m.created_at.strftime("%Y-%m-%d %H:%M"),
        ]
        for m in items
    ]
    header = [
        "model_id",
        "name",
        "version",
        "brand",
        "type",
        "active",
        "usable",
        "fidelity",
        "created",
    ]
    return _table(rows, header) + f"\n{len(items)} of {total}"


def _simulations_text(items: list[SimulationResult], total: int) -> str:
    if not items:
        return "no simulations"
    rows = [
        [
            str(s.simulation_id),
            s.brand,
            s.twin_type.value,
            s.intervention_type,
            str(s.simulation_status),
            _num(s.simulated_ate, ".4g", True),
            str(s.recommendation or ""),
            _int(s.recommended_sample_size),
            s.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        ]
        for s in items
    ]
    header = [
        "simulation_id",
        "brand",
        "type",
        "intervention",
        "status",
        "ATE",
        "decision",
        "n",
        "created",
    ]
    return _table(rows, header) + f"\n{len(items)} of {total}"


# -- commands ----------------------------------------------------------------------------


def _quiet_libraries() -> None:
    """Keep PyMC's and MLflow's progress chatter out of the command's output."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("pymc", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:

    def progress(line: str) -> None:
        err.write(line + "\n")
        err.flush()

    with _service(args) as service:
        report = run_demo(
            service, quick=args.quick, brand=args.brand, seed=args.seed, progress=progress
        )
    if args.json:
        _print_json(report, out)
    else:
        out.write(_demo_text(report) + "\n")
    return 0


def _split_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _cmd_fit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    history = _read_frame(args.history)
    twin_type = TwinType(args.twin_type)
    if args.numeric is None and args.categorical is None:
        features = [c for c in history.columns if c not in _RESERVED_COLUMNS]
        numeric = [c for c in features if pd.api.types.is_numeric_dtype(history[c])]
        categorical = [c for c in features if c not in numeric]
    else:
        numeric = _split_list(args.numeric or "")
        categorical = _split_list(args.categorical or "")
    spec = default_spec(
        twin_type,
        args.brand,
        family=args.family or DEFAULT_FAMILY[twin_type],
        numeric_features=numeric,
        categorical_features=categorical,
        sampler=SamplerSettings(
            draws=args.draws,
            tune=args.tune,
            chains=args.chains,
            cores=args.cores,
            random_seed=args.seed,
            progressbar=False,
        ),
    )
    err.write(
        f"fitting {args.brand}/{twin_type.value} on {len(history)} rows "
        f"({args.chains} chains x {args.draws} draws) ...\n"
    )
    with _service(args) as service:
        info = service.fit(
            history,
            spec,
            activate=not args.no_activate,
            override_diagnostics=args.override_diagnostics,
            model_name=args.name,
        )
    if args.json:
        _print_json(info, out)
        return 0
    state = "active" if info.is_active else "registered (not active)"
    out.write(f"model {info.model_id} {info.model_name} v{info.model_version}: {state}\n")
    if info.diagnostics_reason:
        out.write(f"  diagnostics: {info.diagnostics_reason}\n")
    else:
        out.write("  diagnostics passed\n")
    return 0


def _cmd_activate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _service(args) as service:
        info = service.activate(args.model_id)
    if args.json:
        _print_json(info, out)
    else:
        out.write(f"model {info.model_id} is now active for {info.brand}/{info.twin_type.value}\n")
    return 0


def _parse_targets(args: argparse.Namespace) -> dict[str, Any]:
    target: dict[str, Any] = {}
    for item in args.target or []:
        column, sep, values = item.partition("=")
        if not sep or not column or not values:
            raise UserError(f"--target {item!r}: use COLUMN=value1,value2")
        target[column.strip()] = _split_list(values)
    for item in args.target_range or []:
        column, sep, bounds = item.partition("=")
        low, colon, high = bounds.partition(":")
        if not sep or not colon or not column:
            raise UserError(f"--target-range {item!r}: use COLUMN=min:max (either may be empty)")
        try:
            rng = {
                "min": float(low) if low.strip() else None,
                "max": float(high) if high.strip() else None,
            }
        except ValueError:
            raise UserError(f"--target-range {item!r}: min and max must be numbers") from None
        target[column.strip()] = rng
    return target


def _cmd_simulate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    config: dict[str, Any] = {}
    if args.config_json:
        loaded = _read_json_arg(args.config_json, "--config-json")
        if not isinstance(loaded, dict):
            raise UserError("--config-json must be a JSON object")
        config.update(loaded)
    if args.intensity is not None:
        config["intensity"] = args.intensity
    if args.duration_weeks is not None:
        config["duration_weeks"] = args.duration_weeks
    target = _parse_targets(args)
    if target:
        config["target"] = {**config.get("target", {}), **target}
    with _service(args) as service:
        request = SimulateInterventionRequest.model_validate(
            {
                "intervention_type": args.intervention,
                "intervention_config": config,
                "target_population": args.twin_type,
                "brand": args.brand,
                "twin_count": (
                    args.twins if args.twins is not None else service.settings.default_twin_count
                ),
                "confidence_level": args.confidence,
                "random_seed": args.seed,
            }
        )
        result = service.simulate(request, experiment_design_id=args.experiment_design_id)
    if args.json:
        _print_json(result, out)
    else:
        out.write(_simulation_text(result) + "\n")
    return 0


def _outcome_arg(args: argparse.Namespace) -> ExperimentOutcome | pd.DataFrame | None:
    if args.outcome and args.experiment_csv:
        raise UserError("give --outcome or --experiment-csv, not both")
    if args.outcome:
        return ExperimentOutcome.model_validate(_read_json_arg(args.outcome, "--outcome"))
    if args.experiment_csv:
        return _read_frame(args.experiment_csv)
    return None


def _cmd_register_experiment(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    outcome = _outcome_arg(args)
    if outcome is None:
        raise UserError("give the result with --outcome JSON|FILE or --experiment-csv FILE")
    if isinstance(outcome, pd.DataFrame):
        from bayestwin.engine.fidelity import outcome_from_frame

        if not args.family:
            raise UserError("--experiment-csv needs --family (bernoulli, poisson, ...)")
        outcome = outcome_from_frame(outcome, args.family, actual_experiment_id=args.experiment_id)
    with _service(args) as service:
        stored = service.register_experiment_result(
            args.experiment_id, outcome, overwrite=args.overwrite
        )
    if args.json:
        _print_json(stored, out)
    else:
        out.write(
            f"experiment {args.experiment_id}: ATE {stored.actual_ate:+.4g}, "
            f"n {stored.n_treatment}/{stored.n_control} registered\n"
        )
    return 0


def _cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    outcome = _outcome_arg(args)
    with _service(args) as service:
        result = service.validate(
            args.simulation_id, args.experiment_id, outcome=outcome, family=args.family
        )
    if args.json:
        _print_json(result, out)
    else:
        out.write(_validation_text(result) + "\n")
    return 0


def _cmd_models(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _service(args) as service:
        page = service.list_models(
            brand=args.brand,
            twin_type=args.twin_type,
            active_only=args.active,
            limit=args.limit,
            offset=args.offset,
        )
    if args.json:
        _print_json(page.model_dump(mode="json"), out)
    else:
        out.write(_models_text(page.items, page.total) + "\n")
    return 0


def _cmd_simulations(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _service(args) as service:
        if args.simulation_id:
            sim = service.get_simulation(args.simulation_id)
            if args.json:
                _print_json(sim, out)
            else:
                out.write(_simulation_text(sim) + "\n")
            return 0
        page = service.list_simulations(
            brand=args.brand,
            twin_type=args.twin_type,
            status=args.status,
            intervention_type=args.intervention,
            model_id=args.model_id,
            limit=args.limit,
            offset=args.offset,
        )
    if args.json:
        _print_json(page.model_dump(mode="json"), out)
    else:
        out.write(_simulations_text(page.items, page.total) + "\n")
    return 0


def _cmd_db_upgrade(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    settings = _settings(args)
    applied = upgrade(settings.resolved_database_url())
    if args.json:
        _print_json(
            {"database": _safe_url(settings.resolved_database_url()), "applied": applied}, out
        )
    else:
        out.write(
            f"database {_safe_url(settings.resolved_database_url())} is up to date "
            f"({', '.join(applied)})\n"
        )
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _cmd_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        import uvicorn

        from bayestwin.api import create_app
    except ImportError as exc:
        raise UserError(
            f"serve needs the API extra ({exc.name or exc}): pip install 'bayestwin[api]'"
        ) from None
    settings = _settings(args)
    app = create_app(settings=settings)
    err.write(f"serving the bayestwin API on http://{args.host}:{args.port}/docs\n")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


# -- the parser --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``bayestwin`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", default=argparse.SUPPRESS, help="data directory (default ./.bayestwin)"
    )
    common.add_argument("--config", default=argparse.SUPPRESS, help="digital_twin_config.yaml")
    common.add_argument(
        "--database-url", default=argparse.SUPPRESS, help="SQLAlchemy URL (default SQLite)"
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON output"
    )

    parser = argparse.ArgumentParser(
        prog="bayestwin",
        description="Pre-screen A/B tests with Bayesian digital twins.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = add("demo", _cmd_demo, "fit, simulate and validate on synthetic data; print a report")
    p.add_argument("--quick", action="store_true", help="tiny data and short chains")
    p.add_argument("--brand", default="Kisqali")
    p.add_argument("--seed", type=int, default=0)

    p = add("fit", _cmd_fit, "fit a twin model on a history file and register it")
    p.add_argument("history", help=".parquet or .csv, one row per unit and period")
    p.add_argument("--twin-type", required=True, choices=[t.value for t in TwinType])
    p.add_argument("--brand", required=True)
    p.add_argument("--family", choices=["bernoulli", "poisson", "neg_binomial", "gaussian"])
    p.add_argument("--numeric", help="numeric feature columns, comma-separated")
    p.add_argument("--categorical", help="categorical feature columns, comma-separated")
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="registered model name")
    p.add_argument("--no-activate", action="store_true", help="register without activating")
    p.add_argument(
        "--override-diagnostics",
        action="store_true",
        help="let a model that failed the diagnostics gate serve",
    )

    p = add("activate", _cmd_activate, "make a registered model the active one")
    p.add_argument("model_id")

    p = add("simulate", _cmd_simulate, "simulate an intervention on the active model's twins")
    p.add_argument("--brand", required=True)
    p.add_argument("--twin-type", required=True, choices=[t.value for t in TwinType])
    p.add_argument("--intervention", required=True, help="intervention type")
    p.add_argument("--intensity", type=float)
    p.add_argument("--duration-weeks", type=int)
    p.add_argument(
        "--target", action="append", metavar="COL=V1,V2", help="allowed values of a column"
    )
    p.add_argument(
        "--target-range", action="append", metavar="COL=MIN:MAX", help="numeric range filter"
    )
    p.add_argument("--config-json", help="intervention_config as JSON (or @file)")
    p.add_argument("--twins", type=int, help="twin count (default: default_twin_count)")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int)
    p.add_argument("--experiment-design-id")

    p = add(
        "register-experiment",
        _cmd_register_experiment,
        "store a real experiment's result for validation by id",
    )
    p.add_argument("experiment_id")
    p.add_argument("--outcome", help="ExperimentOutcome as JSON (or @file)")
    p.add_argument("--experiment-csv", help="one row per unit: arm, outcome")
    p.add_argument("--family", help="outcome family of --experiment-csv")
    p.add_argument("--overwrite", action="store_true")

    p = add("validate", _cmd_validate, "compare a simulation with the real experiment's result")
    p.add_argument("simulation_id")
    p.add_argument("--experiment-id", required=True)
    p.add_argument("--outcome", help="ExperimentOutcome as JSON (or @file)")
    p.add_argument("--experiment-csv", help="one row per unit: arm, outcome")
    p.add_argument("--family", help="outcome family of --experiment-csv")

    p = add("models", _cmd_models, "list twin models")
    p.add_argument("--brand")
    p.add_argument("--twin-type", choices=[t.value for t in TwinType])
    p.add_argument("--active", action="store_true", help="active models only")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)

    p = add("simulations", _cmd_simulations, "list simulations, or show one")
    p.add_argument("simulation_id", nargs="?")
    p.add_argument("--brand")
    p.add_argument("--twin-type", choices=[t.value for t in TwinType])
    p.add_argument("--status", choices=[s.value for s in SimulationStatus])
    p.add_argument("--intervention")
    p.add_argument("--model-id")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--offset", type=int, default=0)

    db = sub.add_parser("db", parents=[common], help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    up = db_sub.add_parser("upgrade", parents=[common], help="create or upgrade the twin tables")
    up.set_defaults(handler=_cmd_db_upgrade)

    p = add("serve", _cmd_serve, "serve the REST API (extra bayestwin[api])")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    return parser


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the ``bayestwin`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).
    stdout, stderr : text streams, optional
        Where output and messages go (default the process's).

    Returns
    -------
    int
        Exit status: 0 on success, 2 on a user error (bad input, unknown id, no active
        model, ...), 130 when interrupted.
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error (status 2)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USER_ERROR
    args.json = getattr(args, "json", False)
    _quiet_libraries()
    try:
        return int(args.handler(args, out, err))
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130
    except _USER_ERRORS as exc:
        message = _format_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        if args.json:
            _print_json({"error": {"type": type(exc).__name__, "message": message}}, out)
        err.write(f"bayestwin: error: {message}\n")
        return EXIT_USER_ERROR


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
