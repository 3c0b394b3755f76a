"""What the settings and the agent configuration share: reading YAML, refusing keys."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from bayestwin.errors import InvalidInputError

__all__ = ["CONFIG_CODE", "check_known", "config_error", "hint", "read_yaml"]

CONFIG_CODE = "invalid_config"
"""The code of every configuration error."""


def config_error(message: str, *, field: str | None = None) -> InvalidInputError:
    """Return the error for a configuration problem (code :data:`CONFIG_CODE`)."""
    return InvalidInputError(message, field=field, code=CONFIG_CODE)


def hint(key: str, candidates: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the candidate closest to ``key``, or ``""``."""
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_known(keys: Iterable[str], where: str, candidates: list[str]) -> None:
    """Refuse the first key that is not a candidate, with a "did you mean" hint.

    Raises
    ------
    InvalidInputError
        Naming the key, where it was found and the allowed keys.
    """
    for key in keys:
        if key not in candidates:
            raise config_error(
                f"Unknown setting {key!r} in {where}.{hint(str(key), candidates)} "
                f"Allowed: {', '.join(sorted(candidates))}.",
                field=str(key),
            )


def read_yaml(path: Path) -> Mapping[str, Any]:
    """Return the mapping a YAML file holds (an empty file is an empty mapping).

    Raises
    ------
    InvalidInputError
        If the file is not YAML or holds something other than a mapping.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise config_error(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, Mapping):
        raise config_error(f"{path} must contain a mapping at the top level.")
    return raw
