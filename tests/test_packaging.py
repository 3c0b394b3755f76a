"""Packaging: the shipped files, the wheel, and a wheel installed outside the checkout."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from bayestwin.resources import RESOURCE_KINDS, migration_files, resource_path

# folder of the source tree -> pattern of the files the wheel ships from it
SHIPPED = {"config": "*.yaml", "migrations": "*.sql"}
YAML_NAMES = ["agent_config.yaml", "digital_twin_config.yaml", "domain_vocabulary.yaml"]


def _source_files(repo_root: Path, folder: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((repo_root / folder).glob(SHIPPED[folder]))}


def _run(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300
) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def _build(what: str, source: Path, dist: Path) -> Path:
    """Build a wheel or an sdist of ``source`` into ``dist`` with this interpreter's setuptools.

    ``--no-build-isolation`` keeps the build offline and fast: the build backend is
    the one already installed here, which ``[build-system]`` must accept.
    """
    dist.mkdir(exist_ok=True)
    if what == "wheel":
        _run(
            sys.executable,
            "-m",
            "pip",
            "wheel",
            source,
            "--no-deps",
            "--no-build-isolation",
            "-w",
            dist,
            cwd=dist,
        )
        (built,) = dist.glob("bayestwin-*.whl")
    else:
        code = f"import setuptools.build_meta as b; b.build_sdist({str(dist)!r})"
        _run(sys.executable, "-c", code, cwd=source)
        (built,) = dist.glob("bayestwin-*.tar.gz")
    return built


def _wheel_files(wheel: Path, folder: str) -> dict[str, bytes]:
    prefix = f"bayestwin/_resources/{folder}/"
    with zipfile.ZipFile(wheel) as zf:
        return {n.removeprefix(prefix): zf.read(n) for n in zf.namelist() if n.startswith(prefix)}


# -- the shipped files ------------------------------------------------------------------------


def test_config_dir_holds_the_expected_files(repo_root: Path) -> None:
    assert sorted(_source_files(repo_root, "config")) == YAML_NAMES


@pytest.mark.parametrize("folder", list(SHIPPED))
def test_source_folders_are_the_package_folders(repo_root: Path, folder: str) -> None:
    # one copy of each file: the top-level folder leads to the one inside the package
    inside = repo_root / "bayestwin" / "_resources" / folder
    assert (repo_root / folder).resolve() == inside.resolve()


def test_resources_are_found_through_the_package() -> None:
    for name in YAML_NAMES:
        assert resource_path("config", name).is_file()
    found = migration_files()
    assert found and found == sorted(found) and all(p.suffix == ".sql" for p in found)
    assert set(RESOURCE_KINDS) == set(SHIPPED)


def test_unknown_resource_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown resource kind 'sql'"):
        resource_path("sql", "x")  # type: ignore[arg-type]


# -- wheels -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built the way ``python -m build`` builds one: from the sdist.

    The sdist is made from a clean copy of the checkout (its packaging file, README and
    package), so that nothing a local build left behind (``build/``, ``*.egg-info``)
    can reach the wheel.
    """
    root = tmp_path_factory.mktemp("build")
    clean = root / "source"
    clean.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(repo_root / name, clean / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(repo_root / "bayestwin", clean / "bayestwin", ignore=ignore)
    sdist = _build("sdist", clean, root / "sdist")
    with tarfile.open(sdist) as tf:
        tf.extractall(root / "unpacked", filter="data")
    (unpacked,) = (root / "unpacked").iterdir()
    return _build("wheel", unpacked, root / "dist")


def test_wheel_ships_the_files(repo_root: Path, wheel: Path) -> None:
    for folder in SHIPPED:
        assert _wheel_files(wheel, folder) == _source_files(repo_root, folder), folder


def test_wheel_ships_only_the_package(repo_root: Path, wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        modules = {n for n in zf.namelist() if n.endswith(".py")}
    source = {p.relative_to(repo_root).as_posix() for p in (repo_root / "bayestwin").rglob("*.py")}
    assert modules == source


def _fresh_venv(root: Path) -> Path:
    """A new virtual environment that sees this environment's packages, not bayestwin.

    The venv is made without pip or system site-packages. A ``.pth`` file in its
    site-packages appends this environment's site-packages directories to ``sys.path``,
    so the dependencies (PyMC, MLflow...) need not be downloaded again. Paths listed in
    a ``.pth`` file are added as plain entries, so the ``.pth`` files *they* hold (an
    editable install's finder) are not run, and they come after the venv's own
    site-packages, where the wheel goes: the test checks that ``bayestwin`` is imported
    from the venv.
    """
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    python = venv / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=root)
    ours = [*site.getsitepackages(), sysconfig.get_path("purelib")]
    lines = [p for p in dict.fromkeys(ours) if Path(p).is_dir()]
    Path(purelib.strip(), "_outer_environment.pth").write_text("\n".join(lines) + "\n")
    return venv


@pytest.mark.slow
def test_wheel_installs_and_runs_the_demo_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    venv = _fresh_venv(tmp_path)
    python = venv / "bin" / "python"
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        # the outer environment's bayestwin is visible through the .pth file; without
        # this, pip would call the requirement satisfied and install nothing
        "--ignore-installed",
        wheel,
        cwd=tmp_path,
    )

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAYESTWIN_", "PYTHON"))}
    where = _run(python, "-c", "import bayestwin; print(bayestwin.__file__)", cwd=outside, env=env)
    assert Path(where.strip()).is_relative_to(venv)

    out = _run(venv / "bin" / "bayestwin", "demo", "--quick", cwd=outside, env=env, timeout=1500)
    for section in (
        "bayestwin demo (quick)",
        "HCP twins",
        "PATIENT twins",
        "TERRITORY twins",
        "n/arm classic / assurance / cov-adj",
        "model fidelity score",
    ):
        assert section in out, out
    assert (outside / ".bayestwin").is_dir()  # the data went to the working directory
