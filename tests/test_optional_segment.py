"""A history without a grouping column fits as one segment, with no segment hierarchy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayestwin.engine.simulation import SimulationEngine
from bayestwin.model.fit import TwinGenerator
from bayestwin.model.io import load_model, save_model
from bayestwin.model.spec import IMPLICIT_SEGMENT, SamplerSettings, TwinModelSpec, default_spec
from bayestwin.synthetic import generate_synthetic_twin_data

#: The effect on the logit scale at intensity 1, and the baseline logit.
TRUE_TAU = 0.8
BASE_LOGIT = -0.5
#: The posterior mean of the effect is within this of the truth (about four posterior
#: sds at 4,000 rows, half of them treated: the sd is about 0.06).
TAU_TOLERANCE = 0.25

_SEGMENT_SCALES = {"sigma_a", "z_a", "sigma_seg", "z_tau"}


def _history(n_units: int = 2000, *, segment: str | None = None, seed: int = 7) -> pd.DataFrame:
    """Two periods per unit, half the units treated at intensity 1; no segment column."""
    rng = np.random.default_rng(seed)
    unit = np.repeat(np.arange(n_units), 2)
    period = np.tile([0, 1], n_units)
    x = np.repeat(rng.normal(size=n_units), 2)
    treated = np.repeat(rng.random(n_units) < 0.5, 2)
    eta = BASE_LOGIT + 0.4 * x + TRUE_TAU * treated
    y = (rng.random(eta.size) < 1 / (1 + np.exp(-eta))).astype(int)
    df = pd.DataFrame(
        {
            "unit_id": [f"u{i}" for i in unit],
            "period": period,
            "brand": "B",
            "twin_type": "hcp",
            "outcome": y,
            "x1": x,
            "intervention_type": np.where(treated, "email_campaign", ""),
            "intensity": treated.astype(float),
        }
    )
    if segment is not None:
        df["segment"] = segment
    return df


def _spec(**kwargs: object) -> TwinModelSpec:
    return default_spec("hcp", "B", family="bernoulli", numeric_features=("x1",), **kwargs)  # type: ignore[arg-type]


def _rv_names(model: object) -> set[str]:
    return {v.name for v in model.free_RVs} | {v.name for v in model.deterministics}  # type: ignore[attr-defined]


def test_default_spec_without_segment_column() -> None:
    spec = _spec(segment_column=None)
    assert spec.segment_columns == ()
    assert spec.segment_column == "segment"
    assert _spec().segment_columns == ("segment",)


def test_history_without_segment_column_has_no_segment_hierarchy() -> None:
    model = TwinGenerator(_spec(segment_column=None)).build_model(_history(300))
    names = _rv_names(model)
    assert not names & _SEGMENT_SCALES
    assert {"mu_a", "a", "mu_tau", "tau_type", "tau", "beta"} <= names
    assert model.coords["segment"] == (IMPLICIT_SEGMENT,)


def test_single_segment_value_has_no_segment_hierarchy() -> None:
    model = TwinGenerator(_spec()).build_model(_history(300, segment="north"))
    assert not _rv_names(model) & _SEGMENT_SCALES
    assert model.coords["segment"] == ("north",)


def test_multi_segment_model_keeps_its_hierarchy() -> None:
    s = generate_synthetic_twin_data(
        "hcp", n_units=200, n_periods=2, brands=("B",), n_segments=3, n_numeric=2,
        n_categorical=1, n_intervention_types=2, family="bernoulli", random_seed=5,
    )  # fmt: skip
    spec = default_spec(
        "hcp", "B", family="bernoulli", numeric_features=s.numeric_features,
        categorical_features=s.categorical_features, unit_effects="off", time_effects="off",
        dose_jump="off",
    )  # fmt: skip
    model = TwinGenerator(spec).build_model(s.data)
    assert [v.name for v in model.free_RVs] == [
        "mu_a", "sigma_a", "a", "beta", "mu_tau", "sigma_seg", "z_type",
        "z_tau", "z_gamma", "log_rate",
    ]  # fmt: skip


@pytest.mark.slow
def test_fit_without_segment_column_converges_and_simulates(tmp_path: Path) -> None:
    sampler = SamplerSettings(
        draws=200, tune=300, chains=2, cores=1, progressbar=False, random_seed=11
    )
    spec = _spec(segment_column=None, sampler=sampler)
    model = TwinGenerator(spec).fit(_history(), override_diagnostics=True)
    assert model.diagnostics.divergences == 0
    tau = model.posterior.tau[..., 0, 0]
    assert abs(float(tau.mean()) - TRUE_TAU) < TAU_TOLERANCE
    assert set(model.population["segment"]) == {IMPLICIT_SEGMENT}

    engine = SimulationEngine(dtype=np.float64)
    res = engine.simulate(model, "email_campaign", twin_count=500, random_seed=1)
    assert res.simulated_ci_lower < res.simulated_ate < res.simulated_ci_upper
    assert res.simulated_ate > 0
    targeted = engine.simulate(
        model,
        "email_campaign",
        {"intensity": 1.0, "target": {"segment": [IMPLICIT_SEGMENT]}},
        twin_count=300,
        random_seed=2,
    )
    assert targeted.simulated_ate > 0

    loaded = load_model(save_model(model, tmp_path / "m"))
    again = engine.simulate(loaded, "email_campaign", twin_count=500, random_seed=1)
    assert again.simulated_ate == pytest.approx(res.simulated_ate)
