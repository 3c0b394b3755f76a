"""Nox sessions. ``nox`` runs the tests; ``nox -s lint`` checks style, types and layers."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True

PYTHON = "3.12"
PASS_THROUGH_ENV = ("BAYESTWIN_TEST_POSTGRES_URL",)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite on the installed package (pytest options after ``--``).

    The calibration extra brings econml, so the LinearDML baseline test runs too.
    """
    session.install(".[test,api,jax,agents,calibration]")
    env = {name: os.environ[name] for name in PASS_THROUGH_ENV if os.environ.get(name)}
    session.run("pytest", "-n", "2", *session.posargs, env=env)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check formatting, lint rules, types and the import layers (ruff, mypy, lint-imports)."""
    session.install(".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "bayestwin")
    session.run("lint-imports")


@nox.session(python=PYTHON)
def benchmark(session: nox.Session) -> None:
    """Benchmark fitting and simulation against plain PyMC; reports under reports/benchmark."""
    session.install(".[jax]")
    session.run("python", "-m", "benchmarks.run", "--out", "reports/benchmark", *session.posargs)


@nox.session(python=PYTHON)
def calibration(session: nox.Session) -> None:
    """Calibrate the twin model and baselines on synthetic worlds (reports/calibration)."""
    session.install(".[test,calibration]")
    session.run(
        "python", "-m", "benchmarks.calibration", "--out", "reports/calibration", *session.posargs
    )
