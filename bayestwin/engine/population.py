"""The population a simulation draws its twins from: the history's, or one the caller names.

A caller pre-screening a test on a named target list passes it to
:meth:`~bayestwin.engine.simulation.SimulationEngine.simulate` as ``population``:

* a list of unit ids: those units of the fitted history (each must be known);
* a DataFrame with the model's feature columns and segment column (and ``unit_id``,
  optional): any units. A unit of a segment the history lacks draws its segment terms
  from their fitted population distribution
  (:meth:`~bayestwin.core.posterior.TwinPosterior.with_segments`); a unit the history
  lacks draws its unit effect from the population distribution
  (:class:`~bayestwin.core.unit_effects.UnitEffects`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.core.effects import EncodedUnits
from bayestwin.core.posterior import TwinPosterior
from bayestwin.errors import InvalidInputError
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.model.spec import IMPLICIT_SEGMENT

__all__ = ["MAX_POPULATION", "TargetPopulation", "resolve_population"]

#: Most units a given population may hold.
MAX_POPULATION = 1_000_000
_FIELD = "population"


@dataclass(frozen=True)
class TargetPopulation:
    """Units to draw twins from, encoded for the posterior that simulates them.

    Attributes
    ----------
    frame : DataFrame
        One row per unit, with ``unit_id`` (strings).
    posterior : TwinPosterior
        The model's posterior, with any unseen segments added.
    encoded : EncodedUnits
        The units' features and segment indices.
    unit_ids : ndarray of str
        ``frame["unit_id"]``.
    unit_index : ndarray of int, optional
        Each unit's position among the posterior's unit effects (-1: a unit the
        history lacks), when already known; looked up from ``unit_ids`` otherwise.
    """

    frame: pd.DataFrame
    posterior: TwinPosterior
    encoded: EncodedUnits
    unit_ids: NDArray
    unit_index: NDArray | None = None


def _from_ids(model: FittedTwinModel, ids: Sequence[object]) -> pd.DataFrame:
    wanted = [str(u) for u in ids]
    if not wanted:
        raise InvalidInputError("population lists no unit id", field=_FIELD)
    pop = model.population
    known = pd.Index(pop["unit_id"].astype(str))
    pos = known.get_indexer(pd.Index(wanted))
    missing = [u for u, p in zip(wanted, pos, strict=True) if p < 0]
    if missing:
        shown = ", ".join(repr(u) for u in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InvalidInputError(
            f"population names {len(missing)} unit id(s) the fitted history lacks: {shown}"
            f"{more}; pass a DataFrame with their features to simulate units outside it",
            field=_FIELD,
        )
    return pop.iloc[np.unique(pos)].reset_index(drop=True)


def _from_frame(model: FittedTwinModel, frame: pd.DataFrame) -> pd.DataFrame:
    enc = model.posterior.encoder
    df = frame.copy()
    if enc.segment_column not in df.columns and enc.segments == (IMPLICIT_SEGMENT,):
        df[enc.segment_column] = IMPLICIT_SEGMENT
    missing = [c for c in enc.raw_columns if c not in df.columns]
    if missing:
        raise InvalidInputError(
            f"population lacks the column(s) {missing}; the model needs {enc.raw_columns}",
            field=_FIELD,
        )
    if df.empty:
        raise InvalidInputError("population has no rows", field=_FIELD)
    for col in enc.raw_columns:
        if df[col].isna().any():
            raise InvalidInputError(
                f"population column {col!r} has missing values; clean them first", field=_FIELD
            )
    for col in enc.numeric:
        if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            raise InvalidInputError(
                f"population column {col!r} must be numeric, got dtype {df[col].dtype}",
                field=_FIELD,
            )
    if "unit_id" not in df.columns:
        df["unit_id"] = [f"new-{i}" for i in range(len(df))]
    df["unit_id"] = df["unit_id"].astype(str)
    if df["unit_id"].duplicated().any():
        dup = df.loc[df["unit_id"].duplicated(), "unit_id"].head(3).tolist()
        raise InvalidInputError(
            f"population has repeated unit ids such as {dup}; give one row per unit",
            field=_FIELD,
        )
    df[enc.segment_column] = df[enc.segment_column].astype(str)
    for col in enc.categorical:
        df[col] = df[col].astype(str)
    return df.reset_index(drop=True)


def resolve_population(
    model: FittedTwinModel,
    population: pd.DataFrame | Sequence[object],
    rng: np.random.Generator,
) -> TargetPopulation:
    """Check and encode a caller's population for ``model``.

    Parameters
    ----------
    model : FittedTwinModel
        The model that simulates.
    population : DataFrame or sequence of unit ids
        The units (see the module docstring).
    rng : numpy Generator
        Draws the terms of unseen segments.

    Returns
    -------
    TargetPopulation

    Raises
    ------
    InvalidInputError
        Field ``"population"``: unknown ids, missing or non-numeric columns, missing
        values, repeated ids, an unknown categorical level, or too many units.
    """
    if isinstance(population, pd.DataFrame):
        frame = _from_frame(model, population)
    elif isinstance(population, str | bytes) or not isinstance(population, Sequence | np.ndarray):
        raise InvalidInputError(
            "population must be a DataFrame of units or a list of unit ids, got "
            f"{type(population).__name__}",
            field=_FIELD,
        )
    else:
        frame = _from_ids(model, list(population))
    if len(frame) > MAX_POPULATION:
        raise InvalidInputError(
            f"population has {len(frame)} units; at most {MAX_POPULATION} are allowed",
            field=_FIELD,
        )
    enc = model.posterior.encoder
    seg_values = frame[enc.segment_column].tolist()
    try:
        post = model.posterior.with_segments(seg_values, rng)
        x, _, seg = post.encoder.encode(frame)
    except ValueError as exc:
        raise InvalidInputError(str(exc), field=_FIELD) from None
    return TargetPopulation(
        frame=frame,
        posterior=post,
        encoded=EncodedUnits(x=x, segment=seg),
        unit_ids=frame["unit_id"].to_numpy(dtype=object),
    )
