"""The public API exports the spec's class names."""

from __future__ import annotations

import subprocess
import sys

import bayestwin


def test_spec_classes_are_exported() -> None:
    from bayestwin.engine.fidelity import FidelityTracker
    from bayestwin.model.fit import TwinGenerator
    from bayestwin.engine.simulation import SimulationEngine
    from bayestwin.store.repository import TwinRepository

    assert bayestwin.TwinGenerator is TwinGenerator
    assert bayestwin.SimulationEngine is SimulationEngine
    assert bayestwin.FidelityTracker is FidelityTracker
    assert bayestwin.TwinRepository is TwinRepository
    assert set(bayestwin.__all__) <= set(dir(bayestwin))


def test_import_is_light() -> None:
    code = "import sys, bayestwin; print('sqlalchemy' in sys.modules, 'pymc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_unknown_attribute() -> None:
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = bayestwin.Nope  # type: ignore[attr-defined]
