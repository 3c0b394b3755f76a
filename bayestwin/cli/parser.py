"""The argument parser of the ``bayestwin`` command, one function per subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from bayestwin.cli import commands, fitting
from bayestwin.vocabulary import SimulationStatus, TwinType

__all__ = ["build_parser"]

_FAMILIES = ["bernoulli", "poisson", "neg_binomial", "gaussian"]
_TWIN_TYPES = [t.value for t in TwinType]

Adder = Callable[[str, Callable[..., int], str], argparse.ArgumentParser]


def _common() -> argparse.ArgumentParser:
    """The options every subcommand takes."""
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
    return common


def _add_demo(add: Adder) -> None:
    p = add(
        "demo", commands.cmd_demo, "fit, simulate and validate on synthetic data; print a report"
    )
    p.add_argument("--quick", action="store_true", help="tiny data and short chains")
    p.add_argument("--brand", default="Kisqali")
    p.add_argument("--seed", type=int, default=0)


def _add_fit_and_activate(add: Adder) -> None:
    p = add("fit", fitting.cmd_fit, "fit a twin model on a history file and register it")
    p.add_argument("history", help=".parquet or .csv, one row per unit and period")
    p.add_argument("--twin-type", choices=_TWIN_TYPES, help="the twin type (not with --all)")
    p.add_argument("--brand", help="the brand (not with --all)")
    p.add_argument(
        "--all",
        action="store_true",
        dest="fit_all",
        help="fit every (brand, twin type) of the history, one task each on a Dask cluster; "
        "pairs whose active model is already this fit are skipped; exit status 1 when a "
        "pair failed",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="with --all: the Dask scheduler, e.g. tcp://host:8786 (default: the setting "
        "dask_scheduler; unset: an embedded LocalCluster)",
    )
    p.add_argument("--workers", type=int, help="with --all: processes of the embedded LocalCluster")
    p.add_argument(
        "--refit", action="store_true", help="with --all: fit even the pairs already fitted"
    )
    p.add_argument("--family", choices=_FAMILIES)
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
    p.add_argument(
        "--with-experiments",
        action="store_true",
        help="fit the validated real experiments of the brand and twin type as evidence "
        "(not with --all)",
    )
    p.add_argument(
        "--compare",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="score the fit by PSIS-LOO over units against the same model without unit and "
        "period effects, which is fitted too (default: the setting model_comparison)",
    )
    p = add("activate", commands.cmd_activate, "make a registered model the active one")
    p.add_argument("model_id")


def _add_simulate(add: Adder) -> None:
    p = add(
        "simulate", commands.cmd_simulate, "simulate an intervention on the active model's twins"
    )
    p.add_argument("--brand", required=True)
    p.add_argument("--twin-type", required=True, choices=_TWIN_TYPES)
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
    p.add_argument(
        "--population",
        metavar="FILE",
        help="target list: a CSV with a unit_id column, or a text file of one id per line",
    )
    p.add_argument("--horizon", type=int, help="periods after the history (time effects)")


def _add_experiments(add: Adder) -> None:
    p = add(
        "register-experiment",
        commands.cmd_register_experiment,
        "store a real experiment's result for validation by id",
    )
    p.add_argument("experiment_id")
    p.add_argument("--outcome", help="ExperimentOutcome as JSON (or @file)")
    p.add_argument("--experiment-csv", help="one row per unit: arm, outcome")
    p.add_argument("--family", help="outcome family of --experiment-csv")
    p.add_argument("--overwrite", action="store_true")

    p = add(
        "validate", commands.cmd_validate, "compare a simulation with the real experiment's result"
    )
    p.add_argument("simulation_id")
    p.add_argument("--experiment-id", required=True)
    p.add_argument("--outcome", help="ExperimentOutcome as JSON (or @file)")
    p.add_argument("--experiment-csv", help="one row per unit: arm, outcome")
    p.add_argument("--family", help="outcome family of --experiment-csv")
    p.add_argument("--replace", action="store_true", help="replace an earlier validation")


def _add_listings(add: Adder) -> None:
    p = add("models", commands.cmd_models, "list twin models")
    p.add_argument("--brand")
    p.add_argument("--twin-type", choices=_TWIN_TYPES)
    p.add_argument("--active", action="store_true", help="active models only")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)

    p = add("simulations", commands.cmd_simulations, "list simulations, or show one")
    p.add_argument("simulation_id", nargs="?")
    p.add_argument("--brand")
    p.add_argument("--twin-type", choices=_TWIN_TYPES)
    p.add_argument("--status", choices=[s.value for s in SimulationStatus])
    p.add_argument("--intervention")
    p.add_argument("--model-id")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--offset", type=int, default=0)


def _add_serve(add: Adder) -> None:
    p = add("serve", commands.cmd_serve, "serve the REST API (extra bayestwin[api])")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``bayestwin`` command.

    Returns
    -------
    argparse.ArgumentParser
        Each subcommand's namespace carries its ``handler`` (a ``cmd_*`` function of
        :mod:`bayestwin.cli.commands`).
    """
    common = _common()
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

    _add_demo(add)
    _add_fit_and_activate(add)
    _add_simulate(add)
    _add_experiments(add)
    _add_listings(add)
    db = sub.add_parser("db", parents=[common], help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    up = db_sub.add_parser("upgrade", parents=[common], help="create or upgrade the twin tables")
    up.set_defaults(handler=commands.cmd_db_upgrade)
    _add_serve(add)
    return parser
