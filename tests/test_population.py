"""Targeting and seeded sampling of twins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayestwin.core.population import draw_twins, eligible_mask
from bayestwin.schemas import InterventionConfig, NumericRange


@pytest.fixture
def population() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    return pd.DataFrame(
        {
            "unit_id": [f"u{i:04d}" for i in range(n)],
            "segment": rng.choice(["cardiology", "oncology", "primary_care"], n),
            "region": rng.choice(["north", "south"], n),
            "patient_volume": np.round(rng.uniform(50, 200, n)),
            "tier": rng.integers(1, 4, n),
        }
    )


def test_no_target_is_everyone(population: pd.DataFrame) -> None:
    assert eligible_mask(population).all()
    assert eligible_mask(population, {}).all()


def test_categorical_in_list(population: pd.DataFrame) -> None:
    mask = eligible_mask(population, {"segment": ["oncology", "cardiology"]})
    np.testing.assert_array_equal(
        mask, population["segment"].isin(["oncology", "cardiology"]).to_numpy()
    )
    tiers = eligible_mask(population, {"tier": [1, 3]})
    np.testing.assert_array_equal(tiers, population["tier"].isin([1, 3]).to_numpy())


def test_numeric_range_is_inclusive(population: pd.DataFrame) -> None:
    vol = population["patient_volume"]
    lo, hi = sorted(vol.iloc[:2])  # bounds equal to observed values
    mask = eligible_mask(population, {"patient_volume": NumericRange(min=lo, max=hi)})
    assert mask[0] and mask[1]
    np.testing.assert_array_equal(mask, ((vol >= lo) & (vol <= hi)).to_numpy())
    open_top = eligible_mask(population, {"patient_volume": {"min": 150}})
    np.testing.assert_array_equal(open_top, (vol >= 150).to_numpy())


def test_filters_combine(population: pd.DataFrame) -> None:
    cfg = InterventionConfig(
        target={"segment": ["oncology"], "patient_volume": {"max": 120}, "region": ["north"]}
    )
    mask = eligible_mask(population, cfg.target)
    expected = (
        (population["segment"] == "oncology")
        & (population["patient_volume"] <= 120)
        & (population["region"] == "north")
    )
    np.testing.assert_array_equal(mask, expected.to_numpy())


def test_unknown_column_names_it(population: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"unknown column 'specialty'.*'segment'"):
        eligible_mask(population, {"specialty": ["oncology"]})


def test_filter_matching_nothing_names_allowed_values(population: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"'segment'.*matches no unit.*'cardiology'.*'oncology'"):
        eligible_mask(population, {"segment": ["dermatology"]})
    with pytest.raises(ValueError, match=r"'patient_volume'.*matches no unit.*numbers in \["):
        eligible_mask(population, {"patient_volume": NumericRange(min=1000)})


def test_combination_matching_nothing() -> None:
    frame = pd.DataFrame({"unit_id": ["u1", "u2"], "a": ["x", "y"], "b": [1, 2]})
    with pytest.raises(ValueError, match=r"columns 'a', 'b' match no unit together"):
        eligible_mask(frame, {"a": ["x"], "b": [2]})


def test_range_on_text_column(population: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"'region'.*not numeric.*'north'"):
        eligible_mask(population, {"region": {"min": 1}})


@pytest.mark.parametrize(("n_units", "twin_count"), [(300, 1000), (300_000, 50)])
def test_distinct_rows_and_counts_by_counting_or_sorting(n_units: int, twin_count: int) -> None:
    # a small eligible set is tallied, a large one sorted; both give np.unique's answer
    frame = pd.DataFrame({"unit_id": [f"u{i}" for i in range(n_units)], "x": np.arange(n_units)})
    sample = draw_twins(frame, twin_count, {"x": {"min": 10}}, random_seed=3)
    rows, counts = np.unique(sample.rows, return_counts=True)
    np.testing.assert_array_equal(sample.unique_rows, rows)
    np.testing.assert_array_equal(sample.counts, counts)
    assert sample.counts.sum() == twin_count and (sample.rows >= 10).all()


def test_draw_twins_is_seeded_and_targeted(population: pd.DataFrame) -> None:
    target = {"segment": ["oncology"]}
    a = draw_twins(population, 500, target, random_seed=7)
    b = draw_twins(population, 500, target, random_seed=7)
    c = draw_twins(population, 500, target, random_seed=8)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert not np.array_equal(a.rows, c.rows)
    assert a.twin_count == 500
    twins = a.frame(population)
    assert (twins["segment"] == "oncology").all()
    assert list(twins["unit_id"]) == list(a.unit_ids)
    assert a.eligible == int((population["segment"] == "oncology").sum())
    # multiplicities
    assert a.counts.sum() == 500
    np.testing.assert_array_equal(np.repeat(a.unique_rows, a.counts), np.sort(a.rows))
    uniq = a.unique_frame(population)
    assert len(uniq) == len(a.unique_rows)
    assert uniq["unit_id"].is_unique


def test_draw_twins_bad_input(population: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="twin_count"):
        draw_twins(population, 0)
    with pytest.raises(ValueError, match="id column"):
        draw_twins(population.drop(columns="unit_id"), 10)
    with pytest.raises(ValueError, match="no units"):
        draw_twins(population.iloc[:0], 10)
