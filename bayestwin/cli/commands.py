"""The command's subcommands: read the arguments, call the service, print the answer.

Each ``cmd_*`` function takes the parsed arguments and the output and message streams,
and returns the exit status. A mistake in the arguments raises
:class:`~bayestwin.errors.InvalidInputError`; :func:`bayestwin.cli.main` turns it (and
every other :class:`~bayestwin.errors.BayesTwinError`) into one line and an exit status.

The arguments of a request go through the same request schema as the agent tools and
the REST API (:mod:`bayestwin.schemas.requests`), so that every face accepts and
refuses the same values.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
from pydantic import TypeAdapter, ValidationError

from bayestwin.cli.text import (
    fit_rehearsal_text,
    models_text,
    print_json,
    simulation_text,
    simulations_text,
    validation_text,
)
from bayestwin.demo import demo_text, run_demo
from bayestwin.errors import InvalidInputError, UnavailableError
from bayestwin.schemas import (
    ExperimentOutcome,
    FitRequest,
    RandomSeed,
    RegisterExperimentRequest,
    SimulationSubmission,
    ValidateFidelityRequest,
)
from bayestwin.service import TwinService
from bayestwin.settings import Settings, load_settings
from bayestwin.vocabulary import TwinType

__all__ = [
    "cmd_activate",
    "cmd_db_upgrade",
    "cmd_demo",
    "cmd_fit",
    "cmd_models",
    "cmd_register_experiment",
    "cmd_serve",
    "cmd_simulate",
    "cmd_simulations",
    "cmd_validate",
]


# -- inputs ------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    return load_settings(getattr(args, "config", None), **overrides)


def _service(args: argparse.Namespace) -> TwinService:
    return TwinService(_settings(args))


def _read_json_arg(value: str, what: str) -> Any:
    """A JSON document given inline or as ``@file`` / a file path."""
    text = value
    path = Path(value[1:] if value.startswith("@") else value)
    if value.startswith("@") or (not value.lstrip().startswith(("{", "[")) and path.exists()):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(
                f"cannot read {what} file {path}: {exc.strerror}", field=what
            ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{what} is not valid JSON: {exc.msg} (line {exc.lineno})", field=what
        ) from None


def _read_frame(path_text: str) -> pd.DataFrame:
    path = Path(path_text)
    if not path.exists():
        raise InvalidInputError(f"file {path} does not exist")
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
    raise InvalidInputError(f"{path}: use a .parquet or .csv file")


def _split_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _parse_targets(args: argparse.Namespace) -> dict[str, Any]:
    target: dict[str, Any] = {}
    for item in args.target or []:
        column, sep, values = item.partition("=")
        if not sep or not column or not values:
            raise InvalidInputError(f"--target {item!r}: use COLUMN=value1,value2")
        target[column.strip()] = _split_list(values)
    for item in args.target_range or []:
        column, sep, bounds = item.partition("=")
        low, colon, high = bounds.partition(":")
        if not sep or not colon or not column:
            raise InvalidInputError(
                f"--target-range {item!r}: use COLUMN=min:max (either may be empty)"
            )
        try:
            rng = {
                "min": float(low) if low.strip() else None,
                "max": float(high) if high.strip() else None,
            }
        except ValueError:
            raise InvalidInputError(
                f"--target-range {item!r}: min and max must be numbers"
            ) from None
        target[column.strip()] = rng
    return target


def _intervention_config(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if args.config_json:
        loaded = _read_json_arg(args.config_json, "--config-json")
        if not isinstance(loaded, dict):
            raise InvalidInputError("--config-json must be a JSON object")
        config.update(loaded)
    if args.intensity is not None:
        config["intensity"] = args.intensity
    if args.duration_weeks is not None:
        config["duration_weeks"] = args.duration_weeks
    target = _parse_targets(args)
    if target:
        config["target"] = {**config.get("target", {}), **target}
    return config


def _outcome_arg(args: argparse.Namespace) -> ExperimentOutcome | pd.DataFrame | None:
    if args.outcome and args.experiment_csv:
        raise InvalidInputError("give --outcome or --experiment-csv, not both")
    if args.outcome:
        return ExperimentOutcome.model_validate(_read_json_arg(args.outcome, "--outcome"))
    if args.experiment_csv:
        return _read_frame(args.experiment_csv)
    return None


_SEED = TypeAdapter(RandomSeed)


def _check_seed(seed: int) -> None:
    """Refuse a ``--seed`` that the requests would refuse (``0 <= seed <= 2**63 - 1``)."""
    try:
        _SEED.validate_python(seed)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise InvalidInputError(
            f"invalid --seed: random_seed: {reason}", field="random_seed"
        ) from None


# -- the subcommands ---------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``bayestwin demo``: the end-to-end demo on synthetic data, with its report."""
    _check_seed(args.seed)

    def progress(line: str) -> None:
        err.write(line + "\n")
        err.flush()

    with _service(args) as service:
        report = run_demo(
            service, quick=args.quick, brand=args.brand, seed=args.seed, progress=progress
        )
    if args.json:
        print_json(report, out)
    else:
        out.write(demo_text(report) + "\n")
    return 0


def cmd_fit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``bayestwin fit``: fit a model on a history file and register it (``--all``: every pair)."""
    if getattr(args, "fit_all", False):
        return _fit_all(args, out, err)
    for flag, value in (("--twin-type", args.twin_type), ("--brand", args.brand)):
        if value is None:
            raise InvalidInputError(
                f"{flag} is required (or --all, to fit every brand and twin type)",
                field=flag.removeprefix("--").replace("-", "_"),
            )
    for flag in ("scheduler", "workers"):
        if getattr(args, flag, None) is not None:
            raise InvalidInputError(f"--{flag} goes with --all", field=flag)
    with_experiments = bool(getattr(args, "with_experiments", False))
    FitRequest.model_validate(
        {
            "brand": args.brand,
            "twin_type": args.twin_type,
            "model_name": args.name,
            "random_seed": args.seed,
        }
    )
    history = _read_frame(args.history)
    twin_type = TwinType(args.twin_type)
    features: dict[str, list[str] | None] = {"numeric_features": None, "categorical_features": None}
    if args.numeric is not None or args.categorical is not None:
        features = {
            "numeric_features": _split_list(args.numeric or ""),
            "categorical_features": _split_list(args.categorical or ""),
        }
    err.write(
        f"fitting {args.brand}/{twin_type.value} on {len(history)} rows "
        f"({args.chains} chains x {args.draws} draws) ...\n"
    )
    with _service(args) as service:
        info = service.fit_history(
            history,
            brand=args.brand,
            twin_type=twin_type,
            family=args.family,
            numeric_features=features["numeric_features"],
            categorical_features=features["categorical_features"],
            sampler={
                "draws": args.draws,
                "tune": args.tune,
                "chains": args.chains,
                "cores": args.cores,
                "random_seed": args.seed,
                "progressbar": False,
            },
            with_experiments=with_experiments,
            activate=not args.no_activate,
            override_diagnostics=args.override_diagnostics,
            model_name=args.name,
        )
    if args.json:
        print_json(info, out)
        return 0
    state = "active" if info.is_active else "registered (not active)"
    out.write(f"model {info.model_id} {info.model_name} v{info.model_version}: {state}\n")
    if info.diagnostics_reason:
        out.write(f"  diagnostics: {info.diagnostics_reason}\n")
    else:
        out.write("  diagnostics passed\n")
    used = (info.training_config.get("provenance") or {}).get("experiments") or {}
    count = int(used.get("count", 0))
    if with_experiments or count:
        ids = ", ".join(used.get("ids", [])[:5]) + (" ..." if count > 5 else "")
        out.write(f"  experiments used: {count}" + (f" ({ids})" if count else "") + "\n")
    rehearsal = fit_rehearsal_text(info, service.settings.rehearsal_warn_rate)
    if rehearsal:
        out.write(rehearsal + "\n")
    return 0


def _fit_all(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``bayestwin fit --all``: every (brand, twin type) of the history, on a Dask cluster.

    A parquet history goes to the workers as its path (each reads its own pair, by
    columns); a CSV one is read here. The dashboard link and one line per finished
    pair go to ``err``; the outcomes to ``out``.
    """
    for flag, value in (("--brand", args.brand), ("--twin-type", args.twin_type)):
        if value is not None:
            raise InvalidInputError(
                f"--all fits every brand and twin type of the history; leave out {flag}",
                field="all",
            )
    if args.name is not None:
        raise InvalidInputError("--name names one model; it does not go with --all", field="name")
    if getattr(args, "with_experiments", False):
        raise InvalidInputError(
            "--with-experiments fits one (brand, twin type); it does not go with --all",
            field="with_experiments",
        )
    _SEED.validate_python(args.seed)
    path = Path(args.history)
    if not path.exists():
        raise InvalidInputError(f"file {path} does not exist")
    parquet = path.suffix.lower() in (".parquet", ".pq") or path.is_dir()
    history: pd.DataFrame | str = str(path) if parquet else _read_frame(args.history)
    features: dict[str, list[str] | None] = {"numeric_features": None, "categorical_features": None}
    if args.numeric is not None or args.categorical is not None:
        features = {
            "numeric_features": _split_list(args.numeric or ""),
            "categorical_features": _split_list(args.categorical or ""),
        }
    start = time.perf_counter()

    def dashboard(link: str | None) -> None:
        where = link or "none (the dashboard needs bokeh)"
        err.write(f"Dask dashboard: {where}\n")
        err.flush()

    def progress(done: int, total: int, outcome: Any) -> None:
        err.write(_fit_progress_line(done, total, outcome, time.perf_counter() - start) + "\n")
        err.flush()

    err.write(
        f"fitting every brand and twin type of {path} ({args.chains} chains x "
        f"{args.draws} draws each) ...\n"
    )
    with _service(args) as service:
        result = service.fit_all(
            history,
            family=args.family,
            numeric_features=features["numeric_features"],
            categorical_features=features["categorical_features"],
            sampler={
                "draws": args.draws,
                "tune": args.tune,
                "chains": args.chains,
                "cores": args.cores,
                "random_seed": args.seed,
                "progressbar": False,
            },
            activate=not args.no_activate,
            override_diagnostics=args.override_diagnostics,
            engine="dask",
            scheduler=args.scheduler,
            workers=args.workers,
            refit=args.refit,
            progress=progress,
            dashboard=dashboard,
        )
    rows = [_outcome_row(o) for o in result.outcomes]
    if args.json:
        print_json(rows, out)
    else:
        for row in rows:
            model = f"{row['model_name']} v{row['model_version']}" if row["model_id"] else "-"
            line = f"{row['brand']}/{row['twin_type']}: {row['status']}  {model}"
            out.write(line + (f"  {row['error']}" if row["error"] else "") + "\n")
        counts = {s: sum(r["status"] == s for r in rows) for s in ("fitted", "skipped", "failed")}
        out.write(", ".join(f"{n} {s}" for s, n in counts.items()) + "\n")
    return 1 if result.failures else 0


def _outcome_row(outcome: Any) -> dict[str, Any]:
    """One pair's outcome as a flat record (for ``--json`` and the summary lines)."""
    info = outcome.model
    return {
        "brand": outcome.brand,
        "twin_type": outcome.twin_type.value,
        "status": outcome.status,
        "model_id": None if info is None else str(info.model_id),
        "model_name": None if info is None else info.model_name,
        "model_version": None if info is None else info.model_version,
        "is_active": None if info is None else info.is_active,
        "error": outcome.error,
        "worker": outcome.worker,
        "seconds": round(float(outcome.seconds), 3),
    }


def _fit_progress_line(done: int, total: int, outcome: Any, elapsed: float) -> str:
    """``[ 2/6] Kisqali/hcp fitted in 41.2 s on tcp://...  (elapsed 1.3 min)``."""
    where = f" on {outcome.worker}" if outcome.worker else ""
    status = outcome.status if outcome.error is None else f"failed: {outcome.error}"
    width = len(str(total))
    return (
        f"[{done:>{width}}/{total}] {outcome.brand}/{outcome.twin_type.value} {status} "
        f"in {outcome.seconds:.1f} s{where}  (elapsed {elapsed / 60:.1f} min)"
    )


def cmd_activate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``bayestwin activate``: make a registered model the active one."""
    with _service(args) as service:
        info = service.activate(args.model_id)
    if args.json:
        print_json(info, out)
    else:
        out.write(f"model {info.model_id} is now active for {info.brand}/{info.twin_type.value}\n")
    return 0


def _population_ids(path: str | None) -> list[str] | None:
    """The unit ids of a ``--population`` file (CSV with ``unit_id``, or one id per line)."""
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"--population file {file} does not exist", field="--population")
    text = file.read_text()
    first = text.splitlines()[0].strip() if text.strip() else ""
    if "," in first or first == "unit_id":
        frame = pd.read_csv(file, dtype={"unit_id": str})
        if "unit_id" not in frame.columns:
            raise InvalidInputError(
                f"--population CSV {file} has no unit_id column; it has {list(frame.columns)}",
                field="--population",
            )
        ids = frame["unit_id"].dropna().astype(str).tolist()
    else:
        ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise InvalidInputError(f"--population file {file} lists no unit id", field="--population")
    return ids


def cmd_simulate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``bayestwin simulate``: simulate an intervention on the active model's twins."""
    submission = SimulationSubmission.model_validate(
        {
            "intervention_type": args.intervention,
            "intervention_config": _intervention_config(args),
            "target_population": args.twin_type,
            "brand": args.brand,
            "twin_count": args.twins,
            "confidence_level": args.confidence,
            "random_seed": args.seed,
            "experiment_design_id": args.experiment_design_id,
            "population_ids": _population_ids(args.population),
            "horizon": args.horizon,
        }
    )
    with _service(args) as service:
        result = service.simulate(
            submission.request(), experiment_design_id=submission.experiment_design_id
        )
    if args.json:
        print_json(result, out)
    else:
        out.write(simulation_text(result) + "\n")
    return 0


def cmd_register_experiment(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``bayestwin register-experiment``: store a real experiment's result by id."""
    outcome = _outcome_arg(args)
    if outcome is None:
        raise InvalidInputError("give the result with --outcome JSON|FILE or --experiment-csv FILE")
    with _service(args) as service:
        if isinstance(outcome, pd.DataFrame):
            if not args.family:
                raise InvalidInputError(
                    "--experiment-csv needs --family (bernoulli, poisson, ...)", field="--family"
                )
            outcome = service.outcome_from_frame(
                outcome, family=args.family, actual_experiment_id=args.experiment_id
            )
        request = RegisterExperimentRequest(
            actual_experiment_id=args.experiment_id, outcome=outcome
        )
        stored = service.register_experiment_result(
            request.actual_experiment_id, request.outcome, overwrite=args.overwrite
        )
    if args.json:
        print_json(stored, out)
    else:
        out.write(
            f"experiment {args.experiment_id}: ATE {stored.actual_ate:+.4g}, "
            f"n {stored.n_treatment}/{stored.n_control} registered\n"
        )
    return 0


def cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``bayestwin validate``: compare a simulation with its real experiment's result."""
    outcome = _outcome_arg(args)
    request = ValidateFidelityRequest.model_validate(
        {
            "simulation_id": args.simulation_id,
            "actual_experiment_id": args.experiment_id,
            "outcome": outcome if isinstance(outcome, ExperimentOutcome) else None,
            "replace": args.replace,
        }
    )
    with _service(args) as service:
        result = service.validate(
            request.simulation_id,
            request.actual_experiment_id,
            outcome=outcome if isinstance(outcome, pd.DataFrame) else request.outcome,
            family=args.family,
            replace=request.replace,
        )
    if args.json:
        print_json(result, out)
    else:
        out.write(validation_text(result) + "\n")
    return 0


def cmd_models(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``bayestwin models``: list twin models."""
    with _service(args) as service:
        page = service.list_models(
            brand=args.brand,
            twin_type=args.twin_type,
            active_only=args.active,
            limit=args.limit,
            offset=args.offset,
        )
    if args.json:
        print_json(page, out)
    else:
        out.write(models_text(page.items, page.total) + "\n")
    return 0


def cmd_simulations(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``bayestwin simulations [ID]``: list simulations, or show one."""
    with _service(args) as service:
        if args.simulation_id:
            sim = service.get_simulation(args.simulation_id)
            if args.json:
                print_json(sim, out)
            else:
                out.write(simulation_text(sim) + "\n")
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
        print_json(page, out)
    else:
        out.write(simulations_text(page.items, page.total) + "\n")
    return 0


def cmd_db_upgrade(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``bayestwin db upgrade``: create or upgrade the twin tables."""
    settings = _settings(args)
    with TwinService(settings, registry=None) as service:
        applied = service.upgrade_database()
    database = _safe_url(settings.resolved_database_url())
    if args.json:
        print_json({"database": database, "applied": applied}, out)
    else:
        done = f"applied {', '.join(applied)}" if applied else "nothing to apply"
        out.write(f"database {database} is up to date ({done})\n")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``bayestwin serve``: serve the REST API with uvicorn."""
    try:
        import uvicorn

        from bayestwin.api import create_app
    except ImportError as exc:
        raise UnavailableError(
            f"serve needs the API extra ({exc.name or exc}): pip install 'bayestwin[api]'",
            code="missing_extra",
        ) from None
    app = create_app(settings=_settings(args))
    err.write(f"serving the bayestwin API on http://{args.host}:{args.port}/docs\n")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
