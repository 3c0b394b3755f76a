"""Typed, validated settings from ``config/digital_twin_config.yaml``.

Settings are built by :func:`load_settings`, never at import time. The precedence is,
from lowest to highest: the defaults below (which equal the spec's section 7), the YAML
file, ``BAYESTWIN_<KEY>`` environment variables, then keyword arguments. Every layer is
validated the same way: unknown keys are refused with a "did you mean" hint, and invalid
values are refused with a message that names the key.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "ConfigError",
    "Settings",
    "default_config_path",
    "load_settings",
]

ENV_PREFIX = "BAYESTWIN_"
CONFIG_ENV = "BAYESTWIN_CONFIG"


class ConfigError(ValueError):
    """A setting is unknown or invalid; the message names the key."""


def _repo_config_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "config"


def default_config_path() -> Path:
    """Return the path of the shipped ``digital_twin_config.yaml``.

    Returns
    -------
    Path
        ``$BAYESTWIN_CONFIG`` when set, else ``config/digital_twin_config.yaml`` of the
        source tree, else the copy packaged inside ``bayestwin/_config``.
    """
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    repo = _repo_config_dir() / "digital_twin_config.yaml"
    if repo.exists():
        return repo
    return Path(__file__).resolve().parent / "_config" / "digital_twin_config.yaml"


def config_file(name: str) -> Path:
    """Return the path of one of the shipped YAML files in ``config/``.

    Parameters
    ----------
    name : str
        File name, e.g. ``"domain_vocabulary.yaml"``.
    """
    repo = _repo_config_dir() / name
    if repo.exists():
        return repo
    return Path(__file__).resolve().parent / "_config" / name


class Settings(BaseModel):
    """All bayestwin settings, flat.

    Attributes mirror spec section 7 (``digital_twin:`` block) plus the ``statistics:``
    and ``storage:`` blocks that bayestwin adds.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # -- spec section 7 ------------------------------------------------------------
    min_effect_threshold: float = Field(
        0.05, ge=0.0, description="Relative lift below which an intervention is skipped."
    )
    confidence_threshold: float = Field(
        0.70, gt=0.0, lt=1.0, description="Posterior probability needed to deploy or skip."
    )
    default_twin_count: int = Field(10_000, gt=0, description="Twins per simulation.")
    max_twin_count: int = Field(50_000, gt=0, description="Upper bound on twins.")
    min_fidelity_score: float = Field(
        0.7, ge=0.0, le=1.0, description="Fidelity score under which simulations warn."
    )
    fidelity_validation_window_days: int = Field(
        90, gt=0, description="Window of validations that make up the fidelity score."
    )
    model_update_frequency: Literal["daily", "weekly", "monthly", "quarterly"] = "weekly"
    feature_importance_threshold: float = Field(0.01, ge=0.0)
    simulation_timeout_seconds: float = Field(300, gt=0)
    batch_size: int = Field(1000, gt=0, description="Twins per vectorised chunk.")

    # -- statistics ------------------------------------------------------------------
    power_alpha: float = Field(0.05, gt=0.0, lt=1.0)
    power_target: float = Field(0.80, gt=0.0, lt=1.0)
    min_validations_for_score: int = Field(3, gt=0)

    # -- storage ---------------------------------------------------------------------
    database_url: str | None = None
    mlflow_tracking_uri: str | None = None
    data_dir: Path | None = None

    @model_validator(mode="after")
    def _check_relations(self) -> Settings:
        if self.max_twin_count < self.default_twin_count:
            raise ValueError(
                f"max_twin_count ({self.max_twin_count}) must be >= "
                f"default_twin_count ({self.default_twin_count})"
            )
        return self

    # -- derived locations -------------------------------------------------------------
    def resolved_data_dir(self) -> Path:
        """Return the local data directory (``./.bayestwin`` unless configured)."""
        return Path(self.data_dir) if self.data_dir is not None else Path.cwd() / ".bayestwin"

    def resolved_database_url(self) -> str:
        """Return the SQLAlchemy URL: configured, else a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir() / 'bayestwin.db'}"

    def resolved_mlflow_uri(self) -> str:
        """Return the MLflow tracking URI: configured, else SQLite in the data dir."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.resolved_data_dir() / 'mlflow.db'}"


_SECTIONS = ("digital_twin", "statistics", "storage")


def _known_keys() -> list[str]:
    return list(Settings.model_fields)


def _hint(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _check_unknown(keys: list[str], where: str, candidates: list[str]) -> None:
    for key in keys:
        if key not in candidates:
            raise ConfigError(
                f"Unknown setting {key!r} in {where}.{_hint(key, candidates)} "
                f"Allowed: {', '.join(sorted(candidates))}."
            )


def _flatten_yaml(raw: Mapping[str, Any], path: Path) -> dict[str, Any]:
    _check_unknown(list(raw), f"{path} (top-level sections)", list(_SECTIONS))
    flat: dict[str, Any] = {}
    for section in _SECTIONS:
        body = raw.get(section) or {}
        if not isinstance(body, Mapping):
            raise ConfigError(f"Section {section!r} in {path} must be a mapping.")
        _check_unknown(list(body), f"{path} section {section!r}", _known_keys())
        flat.update(body)
    return flat


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    known = _known_keys()
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in known:
            raise ConfigError(
                f"Unknown setting {key!r} from environment variable {name}."
                f"{_hint(key, known)}"
            )
        out[key] = None if value == "" else value
    return out


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build validated settings from the YAML file, the environment and keywords.

    Parameters
    ----------
    path : path-like, optional
        YAML file to read. Defaults to :func:`default_config_path`.
    environ : mapping, optional
        Environment to read ``BAYESTWIN_*`` overrides from (default ``os.environ``).
    **overrides
        Settings given directly; they win over every other layer.

    Returns
    -------
    Settings
        The frozen, validated settings.

    Raises
    ------
    ConfigError
        If a key is unknown (with a "did you mean" hint) or a value is invalid (the
        message names the key and what is allowed).
    """
    env = os.environ if environ is None else environ
    cfg_path = Path(path) if path is not None else default_config_path()
    values: dict[str, Any] = {}
    if cfg_path.exists():
        raw = yaml.safe_load(cfg_path.read_text()) or {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{cfg_path} must contain a mapping of sections.")
        values.update(_flatten_yaml(raw, cfg_path))
    elif path is not None:
        raise ConfigError(f"Config file {cfg_path} does not exist.")
    values.update(_from_env(env))
    _check_unknown(list(overrides), "keyword arguments", _known_keys())
    values.update(overrides)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "settings"
            problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("Invalid bayestwin settings: " + "; ".join(problems)) from None
