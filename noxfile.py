"""Nox sessions. ``nox`` runs the tests; ``nox -s lint`` checks style, types and layers."""

from __future__ import annotations

import os
import time

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
    session.install(".[test,api,jax,agents,calibration,scale,realdata]")
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
    session.install(".[test,calibration,scale]")
    session.run(
        "python", "-m", "benchmarks.calibration", "--out", "reports/calibration", *session.posargs
    )


@nox.session(python=PYTHON)
def realdata(session: nox.Session) -> None:
    """Predict real experiments (Thornton 2008, NSW) split in halves (reports/realdata)."""
    session.install(".[realdata]")
    session.run(
        "python", "-m", "benchmarks.realdata", "--out", "reports/realdata", *session.posargs
    )


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site into docs/_build/html, warnings as errors, and test it
    in headless Chromium (tests/test_docs_site.py; pytest options after ``--``).

    The build executes the notebooks and renders reports/calibration and reports/benchmark
    (or their snapshots under docs/_data). The browser test needs a Chromium: playwright's
    own (``python -m playwright install chromium``) or Debian's ``chromium`` package.
    """
    session.install(".[docs,test,api,agents]")
    out = "docs/_build/html"
    start = time.perf_counter()
    session.run(
        "sphinx-build", "-W", "--keep-going", "-E", "-b", "html", "-d", "docs/_build/doctrees",
        "docs", out,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    session.log(f"docs built in {elapsed:.0f} s: {out}/E2I_Digital_Twin_Implementation.html")
    session.run(
        "pytest", "-p", "no:cacheprovider", "tests/test_docs_site.py", *session.posargs,
        env={"DOCS_BUILD_DIR": out},
    )  # fmt: skip


@nox.session(python=PYTHON)
def growth(session: nox.Session) -> None:
    """The default fit at 10k to 5M rows: time and memory against size (reports/benchmark)."""
    session.install(".[plots,scale]")
    session.run(
        "python", "-m", "benchmarks.bench_growth", "--out", "reports/benchmark/growth",
        *session.posargs,
    )  # fmt: skip
