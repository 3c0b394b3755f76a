"""Where real experiments' results are found by their id.

:meth:`~bayestwin.service.TwinService.validate` looks a real experiment's result up in an
:class:`ExperimentResultSource`: any object with a ``get_result(experiment_id)`` method,
such as a reader of the platform's experiment tables. Two sources come with bayestwin:

* :class:`JsonExperimentResultStore`, the default: one JSON file per experiment in a
  directory (``<data_dir>/experiments``);
* :class:`MappingExperimentResultSource`: results held in memory.

Both can also store results (``register_result``), which
:meth:`~bayestwin.service.TwinService.register_experiment_result` uses.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from bayestwin.errors import ConflictError, InvalidInputError
from bayestwin.schemas import ExperimentOutcome

__all__ = [
    "ExperimentResultSource",
    "JsonExperimentResultStore",
    "MappingExperimentResultSource",
]

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")
_FIELD = "actual_experiment_id"


def _slug(text: str, limit: int = 60) -> str:
    return _SLUG.sub("-", text).strip("-.")[:limit] or "x"


@runtime_checkable
class ExperimentResultSource(Protocol):
    """Where :meth:`TwinService.validate` finds a real experiment's result by its id."""

    def get_result(self, experiment_id: str) -> ExperimentOutcome | None:
        """Return the experiment's result, or None when it has none (yet)."""
        ...


def _already_exists(experiment_id: str, where: str = "") -> ConflictError:
    return ConflictError(
        f"experiment {experiment_id!r} already has a result{where}; "
        "pass overwrite=True to replace it",
        field=_FIELD,
        code="already_exists",
    )


class MappingExperimentResultSource:
    """Results held in memory, keyed by experiment id.

    Parameters
    ----------
    results : mapping of str to ExperimentOutcome, optional
        Initial results.
    """

    def __init__(self, results: Mapping[str, ExperimentOutcome] | None = None) -> None:
        self._results = dict(results or {})
        self._lock = threading.Lock()

    def get_result(self, experiment_id: str) -> ExperimentOutcome | None:
        """Return the experiment's result, or None."""
        with self._lock:
            return self._results.get(experiment_id)

    def register_result(
        self, experiment_id: str, outcome: ExperimentOutcome, *, overwrite: bool = False
    ) -> ExperimentOutcome:
        """Store a result (see :meth:`JsonExperimentResultStore.register_result`)."""
        stored = _with_experiment_id(experiment_id, outcome)
        with self._lock:
            if not overwrite and experiment_id in self._results:
                raise _already_exists(experiment_id)
            self._results[experiment_id] = stored
        return stored


class JsonExperimentResultStore:
    """Real experiments' results as one JSON file per experiment in a directory.

    A file holds an :class:`~bayestwin.schemas.ExperimentOutcome` as JSON; its name is a
    readable slug of the experiment id plus a hash of the id (so any id is safe as a
    file name, and distinct ids never share a file). Files are written to a temporary
    name and renamed into place, so a reader never sees half a file.

    Parameters
    ----------
    directory : path-like
        Folder of the files (created on the first write).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path_for(self, experiment_id: str) -> Path:
        """Return the file that holds (or will hold) an experiment's result."""
        digest = hashlib.sha256(experiment_id.encode("utf-8")).hexdigest()[:16]
        return self.directory / f"{_slug(experiment_id)}-{digest}.json"

    def get_result(self, experiment_id: str) -> ExperimentOutcome | None:
        """Return the experiment's result, or None when no file exists.

        Raises
        ------
        InvalidInputError
            If the file holds another experiment's result.
        """
        path = self.path_for(experiment_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        outcome = ExperimentOutcome.model_validate_json(text)
        if outcome.actual_experiment_id not in (None, experiment_id):
            raise InvalidInputError(
                f"{path} holds experiment {outcome.actual_experiment_id!r}",
                field=_FIELD,
                code="invalid_experiment_file",
            )
        return outcome

    def register_result(
        self, experiment_id: str, outcome: ExperimentOutcome, *, overwrite: bool = False
    ) -> ExperimentOutcome:
        """Store an experiment's result.

        Parameters
        ----------
        experiment_id : str
            The experiment's id (any non-empty string).
        outcome : ExperimentOutcome
            Its result; ``actual_experiment_id`` is set to ``experiment_id``.
        overwrite : bool
            Replace an existing result instead of refusing it.

        Returns
        -------
        ExperimentOutcome
            What was stored.

        Raises
        ------
        InvalidInputError
            If the id is empty, or the outcome names another experiment.
        ConflictError
            If the experiment has a result and ``overwrite`` is False.
        """
        stored = _with_experiment_id(experiment_id, outcome)
        path = self.path_for(experiment_id)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(stored.model_dump_json(indent=2), encoding="utf-8")
        try:
            if overwrite:
                os.replace(tmp, path)
            else:
                # link() fails when the target exists: no check-then-write race.
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise _already_exists(experiment_id, f" ({path})") from None
        finally:
            tmp.unlink(missing_ok=True)
        return stored


def _with_experiment_id(experiment_id: str, outcome: ExperimentOutcome) -> ExperimentOutcome:
    if not isinstance(experiment_id, str) or not experiment_id.strip():
        raise InvalidInputError(
            f"{_FIELD} must be a non-empty string, got {experiment_id!r}", field=_FIELD
        )
    if outcome.actual_experiment_id not in (None, experiment_id):
        raise InvalidInputError(
            f"the outcome's {_FIELD} is {outcome.actual_experiment_id!r}, not {experiment_id!r}",
            field=_FIELD,
        )
    return outcome.model_copy(update={"actual_experiment_id": experiment_id})
