"""Expected-outcome predictions of a posterior, the maths behind the registered pyfunc.

A ground-truth posterior stands in for a fit: nothing is sampled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayestwin.core.posterior import TwinPosterior
from bayestwin.engine.outcomes import output_columns, predict_expected_outcomes
from bayestwin.synthetic.generate import generate_synthetic_twin_data
from bayestwin.synthetic.posterior import truth_posterior

BRAND = "A"
OUTPUT = ["expected_outcome", "sd", "q05", "q95"]


@pytest.fixture(scope="module")
def posterior_and_units() -> tuple[TwinPosterior, pd.DataFrame]:
    data = generate_synthetic_twin_data(
        "hcp",
        n_units=150,
        n_periods=2,
        brands=(BRAND,),
        n_segments=2,
        n_numeric=2,
        n_categorical=0,
        random_seed=3,
    )
    post = truth_posterior(data.truth, BRAND, n_draws=200, effect_sd=0.2)
    return post, data.population(BRAND)


def test_output_columns_name_the_quantiles() -> None:
    assert output_columns() == OUTPUT
    assert output_columns((0.025, 0.5)) == ["expected_outcome", "sd", "q2_5", "q50"]


def test_predictions_follow_each_rows_intervention(
    posterior_and_units: tuple[TwinPosterior, pd.DataFrame],
) -> None:
    post, pop = posterior_and_units
    kind = post.intervention_types[0]
    rows = pop.head(6).copy()
    rows["intervention_type"] = ["", None, kind, kind, kind, post.intervention_types[1]]
    rows["intensity"] = [np.nan, 1.0, 0.0, 1.0, 0.5, 2.0]
    rows.index = pd.Index([10, 11, 12, 13, 14, 15])
    out = predict_expected_outcomes(post, rows)

    assert list(out.columns) == ["unit_id", *OUTPUT]
    assert list(out.index) == [10, 11, 12, 13, 14, 15]
    assert list(out["unit_id"]) == list(rows["unit_id"])
    plan = [(None, 1.0), (None, 1.0), (None, 1.0), (kind, 1.0), (kind, 0.5)]
    plan.append((post.intervention_types[1], 2.0))
    for i, (itype, level) in enumerate(plan):
        draws = post.expected_outcome(rows.iloc[[i]], itype, level)[:, 0]
        np.testing.assert_allclose(out["expected_outcome"].iloc[i], draws.mean(), rtol=1e-12)
        np.testing.assert_allclose(out["sd"].iloc[i], draws.std(ddof=1), rtol=1e-9, atol=1e-15)
        lo, hi = np.quantile(draws, [0.05, 0.95])
        np.testing.assert_allclose([out["q05"].iloc[i], out["q95"].iloc[i]], [lo, hi], rtol=1e-12)
    treated = out.iloc[3:]
    assert (treated["q05"] <= treated["expected_outcome"]).all()
    assert (treated["expected_outcome"] <= treated["q95"]).all()
    assert (treated["sd"] > 0).all()


def test_predictions_do_not_depend_on_chunking(
    posterior_and_units: tuple[TwinPosterior, pd.DataFrame],
) -> None:
    post, pop = posterior_and_units
    kinds = ["", *post.intervention_types]
    units = pop.assign(
        intervention_type=[kinds[i % len(kinds)] for i in range(len(pop))],
        intensity=[0.25 + (i % 3) for i in range(len(pop))],
    )
    whole = predict_expected_outcomes(post, units, quantiles=(0.025, 0.5, 0.975))
    chunked = predict_expected_outcomes(post, units, quantiles=(0.025, 0.5, 0.975), max_cells=7)
    assert list(whole.columns) == ["unit_id", "expected_outcome", "sd", "q2_5", "q50", "q97_5"]
    pd.testing.assert_frame_equal(whole, chunked, check_exact=False, rtol=1e-12)


def test_predictions_refuse_bad_input(
    posterior_and_units: tuple[TwinPosterior, pd.DataFrame],
) -> None:
    post, pop = posterior_and_units
    rows = pop.head(3).assign(intervention_type=post.intervention_types[0], intensity=1.0)
    with pytest.raises(ValueError, match="unknown intervention_type"):
        predict_expected_outcomes(post, rows.assign(intervention_type="carrier_pigeon"))
    with pytest.raises(ValueError, match="negative or missing intensity"):
        predict_expected_outcomes(post, rows.assign(intensity=[1.0, -0.5, np.nan]))
    with pytest.raises(ValueError, match="lack the column"):
        predict_expected_outcomes(post, rows.drop(columns="intensity"))
    with pytest.raises(ValueError, match="lack the column"):
        predict_expected_outcomes(post, rows.drop(columns=post.encoder.numeric[0]))
    with pytest.raises(ValueError, match="quantiles"):
        predict_expected_outcomes(post, rows, quantiles=(0.0, 0.5))
