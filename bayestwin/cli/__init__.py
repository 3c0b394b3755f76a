"""The ``bayestwin`` command.

::

    bayestwin demo [--quick]          synthetic data -> fit -> simulate -> validate -> report
    bayestwin fit HISTORY --twin-type T --brand B
    bayestwin fit HISTORY --all [--scheduler tcp://host:8786]   every pair, on a Dask cluster
    bayestwin activate MODEL_ID
    bayestwin simulate --brand B --twin-type T --intervention K [--intensity 1] [--target col=a,b]
    bayestwin register-experiment EXPERIMENT_ID --outcome JSON|FILE
    bayestwin validate SIMULATION_ID --experiment-id X [--outcome JSON|FILE | --experiment-csv FILE]
    bayestwin models | simulations [SIMULATION_ID] | db upgrade | serve

Every command takes ``--data-dir``, ``--config``, ``--database-url`` and ``--json``
(machine-readable output on stdout). An error of bayestwin's own (bad input, unknown
id, no active model, ...) prints one line and exits with the status of its kind
(:data:`EXIT_CODES`); no traceback.

* :mod:`~bayestwin.cli.parser`: the argument parser;
* :mod:`~bayestwin.cli.commands`: one function per subcommand;
* :mod:`~bayestwin.cli.text`: what the commands print.

Import rule: the command is a face. It imports :mod:`bayestwin.service`,
:mod:`bayestwin.schemas`, :mod:`bayestwin.errors`, :mod:`bayestwin.settings`,
:mod:`bayestwin.vocabulary`, :mod:`bayestwin.demo` and (for ``serve``)
:mod:`bayestwin.api`; never the core, model, engine or store.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from pydantic import ValidationError

from bayestwin.cli.parser import build_parser
from bayestwin.cli.text import print_json
from bayestwin.errors import BayesTwinError, ErrorKind, InvalidInputError, from_validation_error

__all__ = ["EXIT_CODES", "EXIT_INTERRUPTED", "main"]

EXIT_CODES: dict[ErrorKind, int] = {
    ErrorKind.INVALID_INPUT: 2,
    ErrorKind.NOT_FOUND: 2,
    ErrorKind.CONFLICT: 2,
    ErrorKind.NOT_FIT: 2,
    ErrorKind.UNAVAILABLE: 2,
}
"""Exit status of an error, by its kind (argparse's usage errors exit with 2 too)."""

EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C."""


def _quiet_libraries() -> None:
    """Keep PyMC's and MLflow's progress chatter out of the command's output."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("pymc", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _as_error(exc: Exception) -> BayesTwinError | None:
    """The :class:`BayesTwinError` for an exception that is the user's to fix, or None."""
    if isinstance(exc, BayesTwinError):
        return exc
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    if isinstance(exc, FileNotFoundError | IsADirectoryError):
        return InvalidInputError(str(exc))
    if isinstance(exc, ValueError):
        return InvalidInputError(str(exc))
    return None


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the ``bayestwin`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).
    stdout, stderr : text streams, optional
        Where output and messages go (default the process's).

    Returns
    -------
    int
        Exit status: 0 on success; 1 when ``fit --all`` recorded a failed pair; on an
        error of bayestwin's own, the status of its kind (:data:`EXIT_CODES`: 2 for
        every kind); 2 on a usage error; :data:`EXIT_INTERRUPTED` when interrupted.
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error (status 2)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_CODES[ErrorKind.INVALID_INPUT]
    args.json = getattr(args, "json", False)
    _quiet_libraries()
    try:
        return int(args.handler(args, out, err))
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        error = _as_error(exc)
        if error is None:
            raise
        if args.json:
            print_json({"error": {"type": type(error).__name__, **error.to_dict()}}, out)
        err.write(f"bayestwin: error: {error.message}\n")
        return EXIT_CODES[error.kind]


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
