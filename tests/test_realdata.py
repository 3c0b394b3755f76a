"""The real-experiment benchmark: its predictive interval, its sample size and a short run."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from scipy import special, stats

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    """``benchmarks/realdata.py`` (the checkout's root need not be on the path)."""
    spec = importlib.util.spec_from_file_location(
        "benchmarks_realdata", ROOT / "benchmarks" / "realdata.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


realdata = _load()
HAS_CAUSALDATA = importlib.util.find_spec("causaldata") is not None
HAS_STATSMODELS = importlib.util.find_spec("statsmodels") is not None
needs_realdata = pytest.mark.skipif(
    not (HAS_CAUSALDATA and HAS_STATSMODELS),
    reason="causaldata and statsmodels are not installed (the 'realdata' extra)",
)


def _normal_draws(mean: float, sd: float, n: int) -> np.ndarray:
    """Draws at the normal's quantiles (i + 1/2) / n: an almost exact normal posterior."""
    return mean + sd * special.ndtri((np.arange(n) + 0.5) / n)


@pytest.mark.parametrize(("mean", "sd", "se"), [(0.4, 0.03, 0.029), (2600.0, 900.0, 880.0)])
@pytest.mark.parametrize("level", [0.5, 0.95])
def test_predictive_interval_of_a_normal_posterior_is_the_normal_convolution(
    mean: float, sd: float, se: float, level: float
) -> None:
    draws = _normal_draws(mean, sd, 20_001)
    lo, hi = realdata.predictive_interval(draws, se, level)
    half = stats.norm.ppf(0.5 + level / 2) * math.hypot(sd, se)
    assert lo == pytest.approx(mean - half, rel=1e-3, abs=1e-3 * half)
    assert hi == pytest.approx(mean + half, rel=1e-3, abs=1e-3 * half)


def test_predictive_interval_without_noise_is_the_posterior_interval() -> None:
    draws = _normal_draws(1.0, 0.2, 4001)
    assert realdata.predictive_interval(draws, 0.0, 0.95) == pytest.approx(
        tuple(np.quantile(draws, [0.025, 0.975]))
    )


def test_arm_estimate_is_the_difference_in_means_with_unpooled_se() -> None:
    ate, se = realdata.arm_estimate(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 1.0, 1.0]))
    assert ate == pytest.approx(2.0 - 0.5)
    assert se == pytest.approx(math.sqrt(1.0 / 3 + (1.0 / 3) / 4))


@pytest.mark.skipif(not HAS_STATSMODELS, reason="statsmodels is not installed")
def test_statsmodels_n_matches_the_z_test_formula() -> None:
    effect, sd_c, sd_t = 1800.0, 5500.0, 7800.0
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    closed = z * z * (sd_c**2 + sd_t**2) / effect**2
    n = realdata.statsmodels_n_per_arm("gaussian", effect, sd_control=sd_c, sd_treated=sd_t)
    assert n == pytest.approx(closed, rel=1e-3)
    h = 2 * math.asin(math.sqrt(0.8)) - 2 * math.asin(math.sqrt(0.35))
    nb = realdata.statsmodels_n_per_arm("bernoulli", 0.45, control_mean=0.35)
    assert nb == pytest.approx(z * z * 2 / h**2, rel=1e-3)
    assert realdata.statsmodels_n_per_arm("gaussian", 0.0, sd_control=1.0, sd_treated=1.0) is None


def _numbers(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return []
    return [float(value)]


def _assert_fraction(cov: dict[str, Any], n: int) -> None:
    assert cov["n"] == n
    assert 0 <= cov["hits"] <= n
    assert 0.0 <= cov["lower"] <= cov["coverage"] <= cov["upper"] <= 1.0


@pytest.mark.slow
@needs_realdata
@pytest.mark.parametrize("name", ["thornton", "nsw"])
def test_one_split_runs_end_to_end(name: str, tmp_path: Path) -> None:
    settings = realdata.RunSettings(splits=1, draws=150, tune=150, chains=2, twins=500)
    report = realdata.run_realdata(tmp_path, settings, datasets=[name])
    saved = json.loads((tmp_path / "realdata.json").read_text())
    assert saved["meta"]["complete"] is True
    section = saved["datasets"][name]
    assert section["n_units"] > 400
    (record,) = section["records"]
    assert record["n_fit"] + record["n_heldout"] == section["n_units"]
    assert record["population"]
    arm = record["arm"]
    assert arm["real_se"] > 0
    lo, hi = arm["predictive_interval"]
    plo, phi = arm["posterior_interval"]
    # the predictive adds the held-out test's noise: it is wider than the posterior
    assert lo < plo <= phi < hi
    assert arm["in_predictive"] == (lo <= arm["real"] <= hi)
    assert arm["in_predictive"] == arm["tracker_in_predictive_95"]
    assert arm["fidelity_grade"] in {"excellent", "good", "fair", "poor"}
    assert record["decision"]["recommendation"] in {"deploy", "refine", "skip"}
    size = record["sample_size"]
    assert size["statsmodels_n_per_arm"] > 0 and size["ratio_to_statsmodels"] > 0
    assert size["capped"] is False

    summary = section["summary"]
    for key in ("posterior_coverage", "predictive_coverage", "gate"):
        _assert_fraction(summary[key], 1)
    assert sum(summary["grades"].values()) == 1
    assert sum(summary["decisions"].values()) == 1
    assert summary["median_relative_error"] >= 0
    assert all(math.isfinite(v) for v in _numbers(summary))
    assert all(math.isfinite(v) for v in _numbers(arm))
    if name == "thornton":
        labels = [b["band"] for b in summary["bands"]]
        assert labels == ["$0", *(b.label for b in realdata.THORNTON_BANDS)]
        for band in summary["bands"][1:]:
            _assert_fraction(band["predictive_coverage"], 1)
        weights = [b["weight"] for b in record["bands"][1:]]
        assert sum(weights) == pytest.approx(1.0)
    else:
        assert "bands" not in summary
    text = (tmp_path / "realdata.md").read_text()
    assert realdata.DATASETS[name].title in text and "predictive 95% coverage" in text
    assert report["datasets"][name]["summary"]["n_splits"] == 1
