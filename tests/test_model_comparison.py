"""PSIS-LOO over units of a panel fit against the model without its panel terms.

The pointwise terms themselves are checked against scipy in ``test_panel_logp.py``;
these tests fit real models: on a history with strong unit effects the panel model
must win by more than two standard errors of the difference, the comparison must
travel with the model (its directory, the registry row, ``bayestwin fit``), and a fit
that cannot be compared must say why instead of inventing scores.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from helpers import make_settings

from bayestwin.cli import main
from bayestwin.cli.text import fit_comparison_text
from bayestwin.core.comparison import ModelComparison
from bayestwin.model.comparison import compare_panel_terms, scored_units, with_comparison
from bayestwin.model.fit import TwinGenerator
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.model.history import check_history
from bayestwin.model.io import load_model, save_model
from bayestwin.model.spec import SamplerSettings, TwinModelSpec, default_spec
from bayestwin.schemas import TwinModelInfo
from bayestwin.synthetic import generate_synthetic_twin_data

pytestmark = pytest.mark.slow

SAMPLER = SamplerSettings(draws=200, tune=200, chains=2, cores=1, progressbar=False, random_seed=3)


def _world(n_periods: int, seed: int = 5) -> tuple[object, TwinModelSpec]:
    data = generate_synthetic_twin_data(
        "patient",
        n_units=160,
        n_periods=n_periods,
        brands=("B",),
        n_segments=2,
        n_numeric=2,
        n_categorical=0,
        n_intervention_types=2,
        family="gaussian",
        unit_icc=0.5,
        adoption="staggered" if n_periods > 1 else "fixed",
        random_seed=seed,
    )
    spec = default_spec(
        "patient",
        "B",
        family="gaussian",
        numeric_features=data.numeric_features,
        categorical_features=data.categorical_features,
        sampler=SAMPLER,
    )
    return data.data, spec


@pytest.fixture(scope="module")
def panel_fit() -> tuple[object, TwinModelSpec, FittedTwinModel]:
    history, spec = _world(6)
    return history, spec, TwinGenerator(spec).fit(history, override_diagnostics=True)


def test_the_panel_model_wins_on_a_history_with_unit_effects(
    panel_fit: tuple[object, TwinModelSpec, FittedTwinModel],
) -> None:
    history, spec, fitted = panel_fit
    df = check_history(history, spec)  # type: ignore[arg-type]
    comparison = compare_panel_terms(spec, df, fitted.trace, max_units=120, seed=1)
    assert comparison.reason is None
    assert comparison.units == 160 and comparison.units_scored == 120
    assert [m.name for m in comparison.models] == ["panel", "pooled"]
    panel, pooled = comparison.models
    assert comparison.preferred == "panel" and panel.rank == 0 and pooled.rank == 1
    assert "unit effects" in panel.terms and pooled.terms == "no unit or period effects"
    # an ICC of 0.5 over six periods: the pooled model mispredicts every unit's level
    assert pooled.elpd_diff < -2 * pooled.dse < 0
    assert pooled.elpd_diff == pytest.approx(pooled.elpd - panel.elpd)
    assert panel.weight > 0.9 and panel.weight + pooled.weight == pytest.approx(1.0)
    assert ModelComparison.from_dict(comparison.to_dict()) == comparison


def test_a_subsample_is_seeded_and_sorted() -> None:
    first, again = scored_units(1000, 50, 7), scored_units(1000, 50, 7)
    assert (first == again).all() and len(set(first.tolist())) == 50
    assert (first[1:] > first[:-1]).all()
    assert (scored_units(30, 50, 7) == range(30)).all()


def test_the_comparison_travels_with_the_model(
    panel_fit: tuple[object, TwinModelSpec, FittedTwinModel], tmp_path: Path
) -> None:
    history, _, fitted = panel_fit
    compared = with_comparison(fitted, history, max_units=40)  # type: ignore[arg-type]
    assert compared.comparison is not None and compared.comparison.reason is None
    assert compared.comparison.seed == 3  # the fit's own seed
    loaded = load_model(save_model(compared, tmp_path / "m"))
    assert loaded.comparison == compared.comparison


def test_a_fit_that_cannot_be_compared_says_why(
    panel_fit: tuple[object, TwinModelSpec, FittedTwinModel],
) -> None:
    history, _, fitted = panel_fit
    no_trace = with_comparison(dataclasses.replace(fitted, trace=None), history)  # type: ignore[arg-type]
    assert no_trace.comparison is not None and not no_trace.comparison.models
    assert no_trace.comparison.reason == "the fit kept no trace"
    used = {**fitted.provenance, "experiments": {"count": 2, "ids": ["a", "b"], "hash": "x"}}
    with_evidence = with_comparison(dataclasses.replace(fitted, provenance=used), history)  # type: ignore[arg-type]
    assert with_evidence.comparison is not None
    assert "2 experiment term(s)" in str(with_evidence.comparison.reason)


def test_a_cross_section_has_nothing_to_compare() -> None:
    history, spec = _world(1)
    df = check_history(history, spec)  # type: ignore[arg-type]
    comparison = compare_panel_terms(spec, df, trace=None)  # decided before any draw is read
    assert not comparison.models and "no unit or period effects" in str(comparison.reason)
    assert comparison.units == 160
    with pytest.raises(ValueError, match="max_units"):
        compare_panel_terms(spec, df, trace=None, max_units=1)


def test_fit_compare_stores_and_prints_the_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history, _ = _world(5, seed=8)
    path = tmp_path / "history.parquet"
    history.to_parquet(path)  # type: ignore[attr-defined]
    config = tmp_path / "config.yaml"
    config.write_text("statistics:\n  rehearsal: false\n")  # the comparison alone
    args = [
        "fit", str(path), "--twin-type", "patient", "--brand", "B", "--family", "gaussian",
        "--draws", "150", "--tune", "150", "--chains", "2", "--override-diagnostics",
        "--compare", "--json", "--data-dir", str(tmp_path), "--config", str(config),
    ]  # fmt: skip
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    info = TwinModelInfo.model_validate(json.loads(out))
    record = info.performance_metrics["model_comparison"]
    assert record["preferred"] == "panel" and record["units_scored"] == 160
    # the MLflow run's metrics, copied into the row: panel minus pooled, positive here
    assert info.performance_metrics["comparison_elpd_difference"] > 0
    assert info.performance_metrics["comparison_units_scored"] == 160
    text = fit_comparison_text(info)
    assert text is not None and "model comparison (PSIS-LOO" in text
    assert "panel (unit effects" in text and "pooled (no unit or period effects)" in text
    assert make_settings(tmp_path).model_comparison is False  # asked for, not the default
