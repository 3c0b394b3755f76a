"""Typed, validated settings (``digital_twin_config.yaml``) and the agent configuration.

Settings are built by :func:`load_settings`, never at import time. The precedence is,
from lowest to highest: the defaults below (which equal the spec's section 7), the YAML
file, ``BAYESTWIN_<KEY>`` environment variables, then keyword arguments. Each is a
pydantic-settings source, and every source is checked the same way: unknown keys are
refused with a "did you mean" hint, and invalid values are refused with a message that
names the key (an :class:`~bayestwin.errors.InvalidInputError` with code
``"invalid_config"``). ``Settings(...)`` itself reads neither the file nor the
environment: it is the defaults and the keywords given.

Environment variables that start with ``BAYESTWIN_`` are settings, with two reserved
exceptions: ``BAYESTWIN_CONFIG`` (the path of the YAML file to read) and names that
start with ``BAYESTWIN_TEST_`` (left to test harnesses, e.g.
``BAYESTWIN_TEST_POSTGRES_URL``).

The experiment designer agent's configuration is read by :func:`load_agent_config`
(:mod:`bayestwin.settings.agents`). The shipped YAML files are found through
:mod:`bayestwin.resources`.

Import rule: the settings import only the shared kernel (errors, vocabulary,
resources), pydantic and pydantic-settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from bayestwin.errors import from_validation_error
from bayestwin.resources import resource_path
from bayestwin.settings._yaml import CONFIG_CODE, check_known, config_error, hint, read_yaml
from bayestwin.settings.agents import (
    AgentConfig,
    AgentSpec,
    ToolParameter,
    ToolSpec,
    TwinSimulationStep,
    Workflow,
    load_agent_config,
)

__all__ = [
    "CONFIG_ENV",
    "CONFIG_FILE",
    "ENV_PREFIX",
    "AgentConfig",
    "AgentSpec",
    "Settings",
    "ToolParameter",
    "ToolSpec",
    "TwinSimulationStep",
    "Workflow",
    "default_config_path",
    "load_agent_config",
    "load_settings",
]

ENV_PREFIX = "BAYESTWIN_"
CONFIG_ENV = "BAYESTWIN_CONFIG"
CONFIG_FILE = "digital_twin_config.yaml"
"""Name of the shipped settings file."""
_TEST_ENV_PREFIX = "BAYESTWIN_TEST_"


class Settings(BaseSettings):
    """All bayestwin settings, flat.

    Attributes mirror spec section 7 (``digital_twin:`` block) plus the ``statistics:``,
    ``storage:`` and ``api:`` blocks that bayestwin adds.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_parse_none_str="",
        extra="forbid",
        frozen=True,
        validate_default=True,
        allow_inf_nan=False,
    )

    # -- spec section 7 ------------------------------------------------------------
    min_effect_threshold: float = Field(
        0.05, ge=0.0, description="Relative lift below which an intervention is skipped."
    )
    confidence_threshold: float = Field(
        0.70,
        gt=0.5,
        lt=1.0,
        description=(
            "Posterior probability needed to deploy (or, mirrored, to skip); above 0.5 so "
            "that the deploy and skip regions cannot overlap."
        ),
    )
    default_twin_count: int = Field(
        10_000, gt=0, description="Twins per simulation when a request names no count."
    )
    max_twin_count: int = Field(50_000, gt=0, description="Upper bound on twins.")
    min_fidelity_score: float = Field(
        0.7, ge=0.0, le=1.0, description="Fidelity score under which simulations warn."
    )
    fidelity_validation_window_days: int = Field(
        90, gt=0, description="Window of validations that make up the fidelity score."
    )
    model_update_frequency: Literal["daily", "weekly", "monthly", "quarterly"] = Field(
        "weekly",
        description=(
            "How often the platform refits the models (spec section 7). Read by the "
            "platform's scheduler, not by bayestwin, which refits when asked."
        ),
    )
    feature_importance_threshold: float = Field(
        0.01,
        ge=0.0,
        description=(
            "Importance under which the platform drops a feature (spec section 7). Read "
            "by the platform's feature selection, not by bayestwin."
        ),
    )
    simulation_timeout_seconds: float = Field(300, gt=0)
    batch_size: int = Field(1000, gt=0, description="Twins per vectorised chunk.")
    horizon: int = Field(
        1,
        ge=1,
        le=520,
        description=(
            "Periods after the history that a panel model's simulated ATE is averaged "
            "over (1: the next period)."
        ),
    )

    # -- statistics ------------------------------------------------------------------
    power_alpha: float = Field(0.05, gt=0.0, lt=1.0)
    power_target: float = Field(0.80, gt=0.0, lt=1.0)
    min_validations_for_score: int = Field(3, gt=0)
    rehearsal: bool = Field(
        True,
        description=(
            "Run the placebo rehearsal after every fit the service registers "
            "(bayestwin.engine.rehearsal): its false-deploy rate is stored with the model "
            "and shown on every simulation."
        ),
    )
    rehearsal_placebos: int = Field(
        8, ge=1, le=64, description="Placebo intervention types of a rehearsal (K)."
    )
    rehearsal_warn_rate: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description=("Rehearsal false-deploy rate above which simulations of the model warn."),
    )
    model_comparison: bool = Field(
        False,
        description=(
            "After every fit the service registers, score it by PSIS-LOO over units "
            "against the same model without unit and period effects "
            "(bayestwin.model.comparison); this fits the pooled model too. The "
            "comparison is stored with the model and shown by `bayestwin fit`."
        ),
    )
    comparison_max_units: int = Field(
        2000,
        ge=2,
        description="Units a model comparison scores at most (a seeded subsample beyond).",
    )

    # -- storage ---------------------------------------------------------------------
    database_url: str | None = None
    mlflow_tracking_uri: str | None = None
    data_dir: Path | None = None

    # -- compute ---------------------------------------------------------------------
    dask_scheduler: str | None = Field(
        None,
        min_length=1,
        description=(
            "Address of the Dask scheduler (e.g. tcp://host:8786) that fit_all and the "
            "calibration worlds run their tasks on; None: an embedded LocalCluster of "
            "worker processes, one thread each, as many as the cores."
        ),
    )

    # -- api -------------------------------------------------------------------------
    api_key: SecretStr | None = Field(
        None,
        description=(
            "Key the REST API asks for in the X-API-Key header; None: open. An empty key "
            "(e.g. BAYESTWIN_API_KEY set to '') is kept as given and refused when the API "
            "starts."
        ),
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read only the keywords: the file and the environment are :func:`load_settings`'."""
        return (init_settings,)

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
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


SECTIONS: dict[str, tuple[str, ...]] = {
    "digital_twin": (
        "min_effect_threshold",
        "confidence_threshold",
        "default_twin_count",
        "max_twin_count",
        "min_fidelity_score",
        "fidelity_validation_window_days",
        "model_update_frequency",
        "feature_importance_threshold",
        "simulation_timeout_seconds",
        "batch_size",
    ),
    "statistics": (
        "power_alpha",
        "power_target",
        "min_validations_for_score",
        "horizon",
        "rehearsal",
        "rehearsal_placebos",
        "rehearsal_warn_rate",
        "model_comparison",
        "comparison_max_units",
    ),
    "storage": ("database_url", "mlflow_tracking_uri", "data_dir"),
    "compute": ("dask_scheduler",),
    "api": ("api_key",),
}
"""The sections of ``digital_twin_config.yaml`` and the settings each one holds."""


def _known_keys() -> list[str]:
    return list(Settings.model_fields)


def _flatten_yaml(raw: Mapping[str, Any], path: Path) -> dict[str, Any]:
    check_known(list(raw), f"{path} (top-level sections)", list(SECTIONS))
    flat: dict[str, Any] = {}
    for section, keys in SECTIONS.items():
        body = raw.get(section) or {}
        if not isinstance(body, Mapping):
            raise config_error(f"Section {section!r} in {path} must be a mapping.", field=section)
        for key in body:
            if key in keys:
                continue
            home = next((s for s, ks in SECTIONS.items() if key in ks), None)
            if home is not None:
                raise config_error(
                    f"Setting {key!r} in {path} belongs in section {home!r}, not {section!r}.",
                    field=str(key),
                )
            check_known([key], f"{path} section {section!r}", list(keys))
        flat.update(body)
    return flat


class _YamlSource(PydanticBaseSettingsSource):
    """The settings of a sectioned ``digital_twin_config.yaml`` (none when no file)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._values = {} if path is None else _flatten_yaml(read_yaml(path), path)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Return the file's value of one setting (None when the file does not set it)."""
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        """Return every setting the file sets."""
        return dict(self._values)


_API_KEY_ENV = f"{ENV_PREFIX}API_KEY"


class _EnvSource(EnvSettingsSource):
    """``BAYESTWIN_<KEY>`` variables of a given environment; unknown names are refused."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        known = _known_keys()
        self._environ: dict[str, str] = {}
        for name, value in environ.items():
            if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
                continue
            if name.startswith(_TEST_ENV_PREFIX):
                continue
            key = name[len(ENV_PREFIX) :].lower()
            if key not in known:
                raise config_error(
                    f"Unknown setting {key!r} from environment variable {name}.{hint(key, known)}",
                    field=key,
                )
            self._environ[name] = value
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        parsed = dict(
            parse_env_vars(
                self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
            )
        )
        # An empty string means None for every setting but the API key: an empty key is
        # kept, so that the API refuses it at start-up instead of serving without one.
        raw_key = self._environ.get(_API_KEY_ENV)
        if raw_key is not None and not raw_key.strip():
            parsed[_API_KEY_ENV.lower()] = raw_key
        return parsed


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Return the path of the ``digital_twin_config.yaml`` to read.

    Parameters
    ----------
    environ : mapping, optional
        Environment to look ``BAYESTWIN_CONFIG`` up in (default ``os.environ``).

    Returns
    -------
    Path
        ``$BAYESTWIN_CONFIG`` when set, else the shipped file.
    """
    env = os.environ if environ is None else environ
    chosen = env.get(CONFIG_ENV)
    if chosen:
        return Path(chosen)
    return resource_path("config", CONFIG_FILE)


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
        Settings given directly; they win over every other source.

    Returns
    -------
    Settings
        The frozen, validated settings.

    Raises
    ------
    InvalidInputError
        With code ``"invalid_config"``, if the file is missing or malformed, a key is
        unknown (with a "did you mean" hint) or a value is invalid (the message names
        the key and what is allowed).
    """
    env = os.environ if environ is None else environ
    explicit = path is not None or bool(env.get(CONFIG_ENV))
    cfg_path = Path(path) if path is not None else default_config_path(env)
    if not cfg_path.exists() and explicit:
        raise config_error(f"Config file {cfg_path} does not exist.")
    from_file = _YamlSource(Settings, cfg_path if cfg_path.exists() else None)
    from_env = _EnvSource(Settings, env)
    check_known(list(overrides), "keyword arguments", _known_keys())
    # pydantic-settings gives the earlier source precedence
    sources = (InitSettingsSource(Settings, init_kwargs=overrides), from_env, from_file)
    try:
        return Settings(_build_sources=(sources, overrides))
    except ValidationError as exc:
        raise from_validation_error(exc, what="bayestwin settings", code=CONFIG_CODE) from None
