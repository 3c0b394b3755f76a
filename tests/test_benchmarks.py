"""The simulation benchmark script runs end to end on a tiny size and writes its report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_simulation_benchmark_writes_its_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _load("bench_simulation")
    monkeypatch.setattr(bench, "IDLE_GAP_S", 0.0)
    report = bench.run(tmp_path, sizes=[(400, 60)], population=900, repeats=1, with_pymc=False)
    saved = json.loads((tmp_path / "bench_simulation.json").read_text())
    assert saved == json.loads(json.dumps(report))
    (size,) = saved["sizes"]
    assert size["twins"] == 400 and size["draws"] == 60
    assert 0 < size["distinct_units"] <= 400
    for case in ("engine", "engine_one_thread", "engine_full", "numpy_floor"):
        assert np.isfinite(size["seconds"][case]) and size["seconds"][case] > 0
    assert size["ratios"]["engine_over_floor"] > 0
    assert set(size["targets_met"]) == {"within_2x_of_floor"}
    text = (tmp_path / "bench_simulation.md").read_text()
    assert "| 400 x 60 |" in text and "engine_one_thread" in text


def test_calibration_families_filter_refuses_unknown_families(tmp_path: Path) -> None:
    main = _load("calibration").main
    with pytest.raises(SystemExit, match="--families: \\['binomial'\\]; allowed: bernoulli"):
        main(["--worlds", "4", "--families", "binomial", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="no world of \\['gaussian'\\]"):
        main(["--worlds", "2", "--families", "gaussian", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # refused before any world ran
