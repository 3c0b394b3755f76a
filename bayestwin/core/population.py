"""Who the twins are: targeting and seeded sampling of units.

A twin is a unit of the model's population (one row per unit, its latest period),
drawn with replacement after the intervention's ``target`` filters. Every twin keeps
the position of its source row and its ``unit_id``. Because twins repeat units, the
simulation works on the distinct source rows weighted by their multiplicity
(:attr:`TwinSample.unique_rows`, :attr:`TwinSample.counts`), which gives the same
averages as working twin by twin.

Filters (``InterventionConfig.target``):

* a list: the column's value must be one of the listed values (categorical, or exact
  numeric values);
* a :class:`~bayestwin.schemas.NumericRange`: ``min <= value <= max`` (both inclusive,
  either may be open), for numeric columns only.

A filter on a column the population lacks, a range on a non-numeric column, or a
filter (or a combination of filters) that matches no unit is a ``ValueError`` naming
the column and the values it allows.

Pure NumPy and pandas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.schemas import NumericRange

__all__ = ["TwinSample", "draw_twins", "eligible_mask"]

_MAX_LISTED = 20

TargetValue = list[str | int | float] | NumericRange


def _allowed_values(column: pd.Series) -> str:
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.dropna()
        if values.empty:
            return "no values (the column is empty)"
        return f"numbers in [{values.min():g}, {values.max():g}]"
    levels = sorted({str(v) for v in column.dropna().unique()})
    shown = ", ".join(repr(v) for v in levels[:_MAX_LISTED])
    more = f" and {len(levels) - _MAX_LISTED} more" if len(levels) > _MAX_LISTED else ""
    return f"one of {shown}{more}"


def _as_filter(value: object) -> TargetValue:
    if isinstance(value, NumericRange):
        return value
    if isinstance(value, Mapping):
        return NumericRange.model_validate(value)
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("a target filter list must not be empty")
        return list(value)
    raise ValueError(
        f"a target filter must be a list of values or a {{'min': ..., 'max': ...}} range, "
        f"got {value!r}"
    )


def _column_mask(population: pd.DataFrame, column: str, flt: TargetValue) -> NDArray[np.bool_]:
    series = population[column]
    if isinstance(flt, NumericRange):
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            raise ValueError(
                f"target filter on column {column!r} is a numeric range, but the column is "
                f"not numeric; give a list of allowed values: {_allowed_values(series)}"
            )
        values = series.to_numpy(dtype=float, na_value=np.nan)
        mask = ~np.isnan(values)
        if flt.min is not None:
            mask &= values >= flt.min
        if flt.max is not None:
            mask &= values <= flt.max
        return mask
    if pd.api.types.is_numeric_dtype(series):
        return series.isin(flt).to_numpy(dtype=bool)
    # compare as strings so that 1 matches "1" in a text column
    wanted = {str(v) for v in flt}
    return series.astype(str).isin(wanted).to_numpy(dtype=bool) & series.notna().to_numpy()


def eligible_mask(
    population: pd.DataFrame, target: Mapping[str, object] | None = None
) -> NDArray[np.bool_]:
    """Boolean mask of the units that pass every target filter.

    Parameters
    ----------
    population : DataFrame
        One row per unit.
    target : mapping, optional
        Column -> list of allowed values, or :class:`NumericRange` (or a
        ``{"min": ..., "max": ...}`` mapping). None or empty: everyone.

    Returns
    -------
    ndarray of bool, shape (len(population),)

    Raises
    ------
    ValueError
        If a column is unknown, a range targets a non-numeric column, or the filters
        match no unit; the message names the column and its allowed values.
    """
    if len(population) == 0:
        raise ValueError("the population has no units")
    mask = np.ones(len(population), dtype=bool)
    for column, raw in (target or {}).items():
        if column not in population.columns:
            raise ValueError(
                f"target filter on unknown column {column!r}; the population has the "
                f"columns {', '.join(map(repr, population.columns))}"
            )
        col_mask = _column_mask(population, column, _as_filter(raw))
        if not col_mask.any():
            raise ValueError(
                f"target filter on column {column!r} ({raw!r}) matches no unit; "
                f"{column!r} takes {_allowed_values(population[column])}"
            )
        mask &= col_mask
    if not mask.any():
        names = ", ".join(repr(c) for c in (target or {}))
        raise ValueError(
            f"the target filters on columns {names} match no unit together "
            f"(each matches some units alone); loosen one of them"
        )
    return mask


@dataclass(frozen=True)
class TwinSample:
    """Twins drawn from a population.

    Attributes
    ----------
    rows : ndarray of intp, shape (twin_count,)
        Position (``iloc``) of each twin's source row in the population, in draw order.
    unit_ids : ndarray, shape (twin_count,)
        Source ``unit_id`` of each twin.
    unique_rows : ndarray of intp, shape (M,)
        Distinct source rows, sorted.
    counts : ndarray of int64, shape (M,)
        How many twins each distinct row stands for (sums to ``twin_count``).
    eligible : int
        Number of units that pass the target filters.
    """

    rows: NDArray[np.intp]
    unit_ids: NDArray
    unique_rows: NDArray[np.intp]
    counts: NDArray[np.int64]
    eligible: int

    @property
    def twin_count(self) -> int:
        """Number of twins."""
        return int(self.rows.shape[0])

    def frame(self, population: pd.DataFrame) -> pd.DataFrame:
        """The twins as rows of ``population`` (repeats included), in draw order."""
        return population.iloc[self.rows].reset_index(drop=True)

    def unique_frame(self, population: pd.DataFrame) -> pd.DataFrame:
        """The distinct source rows of ``population``, aligned with :attr:`counts`."""
        return population.iloc[self.unique_rows].reset_index(drop=True)


def draw_twins(
    population: pd.DataFrame,
    twin_count: int,
    target: Mapping[str, object] | None = None,
    *,
    random_seed: int | np.random.Generator | None = None,
    id_column: str = "unit_id",
    unit_ids: NDArray | None = None,
) -> TwinSample:
    """Draw ``twin_count`` twins, with replacement, from the targeted population.

    Parameters
    ----------
    population : DataFrame
        One row per unit, with ``id_column``.
    twin_count : int
        Number of twins (> 0).
    target : mapping, optional
        Target filters (see :func:`eligible_mask`).
    random_seed : int or Generator, optional
        Seed of the draw; the same seed gives the same twins.
    id_column : str
        Column of unit ids.
    unit_ids : ndarray, optional
        ``population[id_column]`` as an array, when the caller already holds it
        (saves converting the column on every draw).

    Returns
    -------
    TwinSample
    """
    if twin_count <= 0:
        raise ValueError(f"twin_count must be > 0, got {twin_count}")
    if id_column not in population.columns:
        raise ValueError(f"the population lacks the id column {id_column!r}")
    if unit_ids is not None and len(unit_ids) != len(population):
        raise ValueError(
            f"unit_ids has {len(unit_ids)} entries; the population has {len(population)} units"
        )
    eligible = np.flatnonzero(eligible_mask(population, target))
    rng = np.random.default_rng(random_seed)
    picks = rng.integers(0, eligible.size, size=twin_count)
    rows = eligible[picks]
    if eligible.size <= 8 * twin_count + 100_000:
        # counting beats sorting when the eligible set is not much larger than the draw
        tally = np.bincount(picks, minlength=eligible.size)
        hit = np.flatnonzero(tally)
        unique_rows, counts = eligible[hit], tally[hit]
    else:
        unique_rows, counts = np.unique(rows, return_counts=True)
    return TwinSample(
        rows=rows.astype(np.intp),
        unit_ids=(population[id_column].to_numpy() if unit_ids is None else unit_ids)[rows],
        unique_rows=unique_rows.astype(np.intp),
        counts=counts.astype(np.int64),
        eligible=int(eligible.size),
    )
