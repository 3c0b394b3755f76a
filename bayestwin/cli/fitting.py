"""The ``fit`` command: one (brand, twin type), or every pair of a history (``--all``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from bayestwin.cli.inputs import SEED, read_frame, service_from, split_list
from bayestwin.cli.text import (
    fit_comparison_text,
    fit_rehearsal_text,
    print_json,
)
from bayestwin.errors import InvalidInputError
from bayestwin.schemas import (
    FitRequest,
)
from bayestwin.vocabulary import TwinType

__all__ = ["cmd_fit"]


def _sampler(args: argparse.Namespace) -> dict[str, Any]:
    """The sampler settings of the command line (no progress bar)."""
    return {
        "draws": args.draws,
        "tune": args.tune,
        "chains": args.chains,
        "cores": args.cores,
        "random_seed": args.seed,
        "progressbar": False,
    }


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
    history = read_frame(args.history)
    twin_type = TwinType(args.twin_type)
    features: dict[str, list[str] | None] = {"numeric_features": None, "categorical_features": None}
    if args.numeric is not None or args.categorical is not None:
        features = {
            "numeric_features": split_list(args.numeric or ""),
            "categorical_features": split_list(args.categorical or ""),
        }
    err.write(
        f"fitting {args.brand}/{twin_type.value} on {len(history)} rows "
        f"({args.chains} chains x {args.draws} draws) ...\n"
    )
    with service_from(args) as service:
        info = service.fit_history(
            history,
            brand=args.brand,
            twin_type=twin_type,
            family=args.family,
            numeric_features=features["numeric_features"],
            categorical_features=features["categorical_features"],
            sampler=_sampler(args),
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
    comparison = fit_comparison_text(info)
    if comparison:
        out.write(comparison + "\n")
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
    SEED.validate_python(args.seed)
    path = Path(args.history)
    if not path.exists():
        raise InvalidInputError(f"file {path} does not exist")
    parquet = path.suffix.lower() in (".parquet", ".pq") or path.is_dir()
    history: pd.DataFrame | str = str(path) if parquet else read_frame(args.history)
    features: dict[str, list[str] | None] = {"numeric_features": None, "categorical_features": None}
    if args.numeric is not None or args.categorical is not None:
        features = {
            "numeric_features": split_list(args.numeric or ""),
            "categorical_features": split_list(args.categorical or ""),
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
    with service_from(args) as service:
        result = service.fit_all(
            history,
            family=args.family,
            numeric_features=features["numeric_features"],
            categorical_features=features["categorical_features"],
            sampler=_sampler(args),
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
