"""The public API exports the spec's class names, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import bayestwin
from bayestwin._version import __version__


def test_spec_classes_are_exported() -> None:
    from bayestwin.engine.fidelity import FidelityTracker
    from bayestwin.engine.simulation import SimulationEngine
    from bayestwin.model.fit import TwinGenerator
    from bayestwin.store.repository import TwinRepository

    assert bayestwin.TwinGenerator is TwinGenerator
    assert bayestwin.SimulationEngine is SimulationEngine
    assert bayestwin.FidelityTracker is FidelityTracker
    assert bayestwin.TwinRepository is TwinRepository


@pytest.mark.parametrize("name", bayestwin.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(bayestwin, name) is not None
    assert name in dir(bayestwin)


def test_version_is_written_once() -> None:
    assert bayestwin.__version__ == __version__


def test_import_is_light() -> None:
    code = "import sys, bayestwin; print('sqlalchemy' in sys.modules, 'pymc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = bayestwin.Nope  # type: ignore[attr-defined]
