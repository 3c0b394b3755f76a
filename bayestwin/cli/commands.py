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
from pathlib import Path
from typing import TextIO

import pandas as pd

from bayestwin.cli.inputs import (
    check_seed,
    intervention_config_from,
    outcome_arg,
    service_from,
    settings_from,
)
from bayestwin.cli.text import (
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
    RegisterExperimentRequest,
    SimulationSubmission,
    ValidateFidelityRequest,
)
from bayestwin.service import TwinService

__all__ = [
    "cmd_activate",
    "cmd_db_upgrade",
    "cmd_demo",
    "cmd_models",
    "cmd_register_experiment",
    "cmd_serve",
    "cmd_simulate",
    "cmd_simulations",
    "cmd_validate",
]


# -- the subcommands ---------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``bayestwin demo``: the end-to-end demo on synthetic data, with its report."""
    check_seed(args.seed)

    def progress(line: str) -> None:
        err.write(line + "\n")
        err.flush()

    with service_from(args) as service:
        report = run_demo(
            service, quick=args.quick, brand=args.brand, seed=args.seed, progress=progress
        )
    if args.json:
        print_json(report, out)
    else:
        out.write(demo_text(report) + "\n")
    return 0


def cmd_activate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``bayestwin activate``: make a registered model the active one."""
    with service_from(args) as service:
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
            "intervention_config": intervention_config_from(args),
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
    with service_from(args) as service:
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
    outcome = outcome_arg(args)
    if outcome is None:
        raise InvalidInputError("give the result with --outcome JSON|FILE or --experiment-csv FILE")
    with service_from(args) as service:
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
    outcome = outcome_arg(args)
    request = ValidateFidelityRequest.model_validate(
        {
            "simulation_id": args.simulation_id,
            "actual_experiment_id": args.experiment_id,
            "outcome": outcome if isinstance(outcome, ExperimentOutcome) else None,
            "replace": args.replace,
        }
    )
    with service_from(args) as service:
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
    with service_from(args) as service:
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
    with service_from(args) as service:
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
    settings = settings_from(args)
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
    app = create_app(settings=settings_from(args))
    err.write(f"serving the bayestwin API on http://{args.host}:{args.port}/docs\n")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
