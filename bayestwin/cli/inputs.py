"""What the commands read from their arguments: settings, the service, files, targets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import TypeAdapter, ValidationError

from bayestwin.errors import InvalidInputError
from bayestwin.schemas import (
    ExperimentOutcome,
    RandomSeed,
)
from bayestwin.service import TwinService
from bayestwin.settings import Settings, load_settings

__all__ = [
    "SEED",
    "check_seed",
    "intervention_config_from",
    "outcome_arg",
    "parse_targets",
    "read_frame",
    "read_json_arg",
    "service_from",
    "settings_from",
    "split_list",
]


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings, with the command line's ``--data-dir``, ``--database-url``, ``--compare``."""
    overrides: dict[str, Any] = {}
    if getattr(args, "compare", None) is not None:
        overrides["model_comparison"] = bool(args.compare)
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    return load_settings(getattr(args, "config", None), **overrides)


def service_from(args: argparse.Namespace) -> TwinService:
    """A service on the command line's settings."""
    return TwinService(settings_from(args))


def read_json_arg(value: str, what: str) -> Any:
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


def read_frame(path_text: str) -> pd.DataFrame:
    """A history or population file (CSV or parquet), or a clear error naming it."""
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


def split_list(text: str) -> list[str]:
    """The items of a comma-separated list, stripped, empty ones dropped."""
    return [p.strip() for p in text.split(",") if p.strip()]


def parse_targets(args: argparse.Namespace) -> dict[str, Any]:
    """The target filters of ``--target COLUMN=v1,v2`` and ``--target-range COLUMN=min:max``."""
    target: dict[str, Any] = {}
    for item in args.target or []:
        column, sep, values = item.partition("=")
        if not sep or not column or not values:
            raise InvalidInputError(f"--target {item!r}: use COLUMN=value1,value2")
        target[column.strip()] = split_list(values)
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


def intervention_config_from(args: argparse.Namespace) -> dict[str, Any]:
    """The intervention config of ``--config-json`` and the single-value options."""
    config: dict[str, Any] = {}
    if args.config_json:
        loaded = read_json_arg(args.config_json, "--config-json")
        if not isinstance(loaded, dict):
            raise InvalidInputError("--config-json must be a JSON object")
        config.update(loaded)
    if args.intensity is not None:
        config["intensity"] = args.intensity
    if args.duration_weeks is not None:
        config["duration_weeks"] = args.duration_weeks
    target = parse_targets(args)
    if target:
        config["target"] = {**config.get("target", {}), **target}
    return config


def outcome_arg(args: argparse.Namespace) -> ExperimentOutcome | pd.DataFrame | None:
    """The real result of ``--outcome`` (JSON) or ``--experiment-csv`` (rows), or None."""
    if args.outcome and args.experiment_csv:
        raise InvalidInputError("give --outcome or --experiment-csv, not both")
    if args.outcome:
        return ExperimentOutcome.model_validate(read_json_arg(args.outcome, "--outcome"))
    if args.experiment_csv:
        return read_frame(args.experiment_csv)
    return None


SEED = TypeAdapter(RandomSeed)


def check_seed(seed: int) -> None:
    """Refuse a ``--seed`` that the requests would refuse (``0 <= seed <= 2**63 - 1``)."""
    try:
        SEED.validate_python(seed)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise InvalidInputError(
            f"invalid --seed: random_seed: {reason}", field="random_seed"
        ) from None
