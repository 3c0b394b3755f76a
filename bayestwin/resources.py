"""Files shipped with the package (configuration and migrations), read one way.

The files live inside the package, in ``bayestwin/_resources/<kind>/``, and reach a
wheel as package data; the source tree's top-level ``config/`` and ``migrations/``
are links to those folders. Whether bayestwin runs from a checkout, an editable
install or a wheel, :func:`resource_path` and :func:`migration_files` find them through
:mod:`importlib.resources`, the same way.

Import rule: this module imports nothing of the package.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

__all__ = ["RESOURCE_KINDS", "ResourceKind", "migration_files", "resource_path"]

ResourceKind = Literal["config", "migrations"]
"""A folder of shipped files: the YAML configuration or the SQL migrations."""

RESOURCE_KINDS: tuple[ResourceKind, ...] = ("config", "migrations")
"""Every :data:`ResourceKind`."""


def _folder(kind: ResourceKind) -> Path:
    if kind not in RESOURCE_KINDS:
        raise ValueError(f"unknown resource kind {kind!r}; known: {', '.join(RESOURCE_KINDS)}")
    folder = files("bayestwin") / "_resources" / kind
    if not isinstance(folder, Path):  # a zipped install: the files are not on disk
        raise RuntimeError(f"bayestwin's {kind} files are not on the file system ({folder})")
    return folder


def resource_path(kind: ResourceKind, name: str) -> Path:
    """Return the path of one shipped file.

    Parameters
    ----------
    kind : {"config", "migrations"}
        The folder the file belongs to.
    name : str
        File name, e.g. ``"domain_vocabulary.yaml"``.

    Returns
    -------
    Path
        Where the file is (it may not exist when ``name`` is not one of the shipped
        files; the caller decides what a missing file means).

    Raises
    ------
    ValueError
        If ``kind`` is not a known folder.
    """
    return _folder(kind) / name


def migration_files() -> list[Path]:
    """Return the shipped SQL migrations, sorted by name (the order they apply in).

    Returns
    -------
    list of Path
        Every ``*.sql`` file of the migrations folder.
    """
    return sorted(_folder("migrations").glob("*.sql"))
