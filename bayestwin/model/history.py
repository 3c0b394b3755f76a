"""The history a model is fitted on: checks, collapsing and the population it leaves.

:func:`check_history` refuses a history that cannot be fitted before any sampling, with
an :class:`~bayestwin.errors.InvalidInputError` (code ``"invalid_history"``) whose
``field`` is the column at fault. :func:`collapse_history` turns rows sharing a design
into sufficient statistics, and :func:`latest_population` keeps each unit's latest row:
who twins are drawn from. :func:`unit_index` numbers the units of the likelihood rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayestwin.errors import InvalidInputError
from bayestwin.model.spec import IMPLICIT_SEGMENT, TwinModelSpec

__all__ = ["check_history", "collapse_history", "latest_population", "unit_index"]


def _invalid(message: str, column: str | None = None) -> InvalidInputError:
    return InvalidInputError(message, code="invalid_history", field=column)


def check_history(history: pd.DataFrame, spec: TwinModelSpec) -> pd.DataFrame:
    """Validate the history and select the rows of ``spec``'s brand and twin type.

    Parameters
    ----------
    history : DataFrame
        One row per unit and period with the columns ``spec`` names.
    spec : TwinModelSpec
        What is to be fitted.

    Returns
    -------
    DataFrame
        The selected rows and needed columns, with untreated rows' intervention set to
        ``""``, the combined segment column added and categorical features as strings.

    Raises
    ------
    InvalidInputError
        Code ``"invalid_history"``; the message and ``field`` name the column at fault.
    """
    df = _select(history, spec)
    _check_values(df, spec)
    intensity = df[spec.intensity_column].to_numpy(dtype=float)
    itype = df[spec.intervention_column].fillna("").astype(str).to_numpy()
    df = df.copy()
    df[spec.intervention_column] = itype
    # rows with a named intervention but intensity 0 are untreated
    df.loc[intensity == 0, spec.intervention_column] = ""
    if not spec.segment_columns:
        df[spec.segment_column] = IMPLICIT_SEGMENT
    elif len(spec.segment_columns) > 1:
        df[spec.segment_column] = df[list(spec.segment_columns)].astype(str).agg("|".join, axis=1)
    else:
        df[spec.segment_column] = df[spec.segment_column].astype(str)
    for col in spec.categorical_features:
        df[col] = df[col].astype(str)
    return df


def _needed_columns(spec: TwinModelSpec) -> list[str]:
    needed = [
        spec.unit_column,
        spec.brand_column,
        spec.outcome,
        spec.intervention_column,
        spec.intensity_column,
        *spec.segment_columns,
        *spec.numeric_features,
        *spec.categorical_features,
    ]
    if spec.period_column:
        needed.append(spec.period_column)
    return list(dict.fromkeys(needed))


def _select(history: pd.DataFrame, spec: TwinModelSpec) -> pd.DataFrame:
    """The needed columns of the spec's (brand, twin type) rows; refuse too few rows."""
    if not isinstance(history, pd.DataFrame):
        raise _invalid("history must be a pandas DataFrame")
    needed = _needed_columns(spec)
    missing = [c for c in needed if c not in history.columns]
    if missing:
        raise _invalid(f"history lacks column(s) {missing}; the spec needs {needed}", missing[0])
    mask = history[spec.brand_column].astype(str) == spec.brand
    if spec.twin_type_column and spec.twin_type_column in history.columns:
        mask &= history[spec.twin_type_column].astype(str) == spec.twin_type.value
    df = history.loc[mask, needed]
    if len(df) < spec.min_rows:
        raise _invalid(
            f"brand {spec.brand!r}, twin type {spec.twin_type.value!r} has {len(df)} rows; "
            f"at least min_rows={spec.min_rows} are needed",
            spec.brand_column,
        )
    return df


def _check_values(df: pd.DataFrame, spec: TwinModelSpec) -> None:
    """Refuse missing or bad values, bad intensities and outcomes, repeated periods."""
    for col in df.columns:
        if col == spec.intervention_column:
            continue
        n_nan = int(df[col].isna().sum())
        if n_nan:
            raise _invalid(
                f"column {col!r} has {n_nan} missing value(s) (NaN); clean them first", col
            )
    for col in (*spec.numeric_features, spec.outcome, spec.intensity_column):
        if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            raise _invalid(
                f"column {col!r} has dtype {df[col].dtype}, which is not numeric; declare it "
                "in categorical_features if it is categorical",
                col,
            )
        if not np.isfinite(df[col].to_numpy(dtype=float)).all():
            raise _invalid(f"column {col!r} has infinite values", col)
    _check_treatment(df, spec)
    _check_outcome(df, spec)
    _check_periods(df, spec)


def _check_intervention_type(df: pd.DataFrame, spec: TwinModelSpec) -> None:
    """Refuse an intervention column whose values are not strings (e.g. numeric 0/1)."""
    col = spec.intervention_column
    present = df[col].dropna()
    kind = pd.api.types.infer_dtype(np.asarray(present, dtype=object), skipna=True)
    if kind in ("string", "empty"):
        return
    example = next(v for v in present if not isinstance(v, str))
    shown = repr(example.item() if isinstance(example, np.generic) else example)[:40]
    raise _invalid(
        f"column {col!r} has dtype {df[col].dtype} with non-string values such as "
        f"{shown}; it must hold strings naming each row's intervention, with an "
        "empty string or None for untreated rows",
        col,
    )


def _check_treatment(df: pd.DataFrame, spec: TwinModelSpec) -> None:
    _check_intervention_type(df, spec)
    intensity = df[spec.intensity_column].to_numpy(dtype=float)
    if (intensity < 0).any():
        raise _invalid(
            f"column {spec.intensity_column!r} has negative values (min {intensity.min()}); "
            "intensity must be >= 0",
            spec.intensity_column,
        )
    itype = df[spec.intervention_column].fillna("").astype(str).to_numpy()
    bad = (itype == "") & (intensity > 0)
    if bad.any():
        raise _invalid(
            f"{int(bad.sum())} row(s) have {spec.intensity_column} > 0 but no "
            f"{spec.intervention_column}; name the intervention or set intensity 0",
            spec.intervention_column,
        )


def _check_outcome(df: pd.DataFrame, spec: TwinModelSpec) -> None:
    y = df[spec.outcome].to_numpy(dtype=float)
    if spec.family == "bernoulli" and not np.isin(y, (0.0, 1.0)).all():
        raise _invalid(f"outcome {spec.outcome!r} must be 0/1 for family 'bernoulli'", spec.outcome)
    if spec.family in ("poisson", "neg_binomial") and (
        (y < 0).any() or not np.allclose(y, np.round(y))
    ):
        raise _invalid(
            f"outcome {spec.outcome!r} must hold non-negative integers for family {spec.family!r}",
            spec.outcome,
        )


def _check_periods(df: pd.DataFrame, spec: TwinModelSpec) -> None:
    """Refuse a unit that has two rows for one period (the first few offenders named)."""
    if not spec.period_column:
        return
    keys = [spec.unit_column, spec.period_column]
    dup = df.loc[df.duplicated(keys, keep="first"), keys].drop_duplicates()
    if dup.empty:
        return
    first = dup.head(5)
    pairs = zip(first[spec.unit_column].tolist(), first[spec.period_column].tolist(), strict=True)
    shown = "; ".join(f"unit {u!r} period {p!r}" for u, p in pairs)
    more = f" (and {len(dup) - 5} more)" if len(dup) > 5 else ""
    raise _invalid(
        f"{len(dup)} (unit, period) pair(s) appear more than once: {shown}{more}; "
        f"each unit needs at most one row per {spec.period_column!r}",
        spec.period_column,
    )


def collapse_history(
    df: pd.DataFrame, spec: TwinModelSpec, extra_keys: tuple[str, ...] = ()
) -> tuple[pd.DataFrame, pd.Series, pd.Series, pd.Series]:
    """Collapse rows that share a design into sufficient statistics.

    Parameters
    ----------
    df : DataFrame
        Validated history rows of one (brand, twin type).
    spec : TwinModelSpec
        The spec naming the columns.
    extra_keys : tuple of str
        More columns a design is distinguished by (a panel model: the unit, and the
        period when it has time effects), placed first.

    Returns
    -------
    design : DataFrame
        One row per distinct design (segment, features, intervention, intensity).
    total : Series
        Sum of the outcome over the design's rows.
    count : Series
        Number of rows.
    sumsq : Series
        Within-design sum of squared deviations of the outcome (gaussian only; 0 else).

    Notes
    -----
    For ``neg_binomial`` the total is not a sufficient statistic (the dispersion is
    learned from the spread within a design), so rows are collapsed by design *and*
    outcome value: ``total`` is then the outcome value and ``count`` its multiplicity,
    which the model uses as a likelihood weight. That is exact too.
    """
    keys = list(
        dict.fromkeys(
            [
                *extra_keys,
                spec.segment_column,
                *spec.numeric_features,
                *spec.categorical_features,
                spec.intervention_column,
                spec.intensity_column,
            ]
        )
    )
    if spec.family == "neg_binomial":
        weights = df.groupby([*keys, spec.outcome], sort=True, observed=True).size()
        stats = weights.rename("count").reset_index()
        zeros = pd.Series(np.zeros(len(stats)))
        return stats[keys], stats[spec.outcome].astype(float), stats["count"].astype(float), zeros
    grouped = df.groupby(keys, sort=True, observed=True)[spec.outcome]
    stats = grouped.agg(["sum", "count", "var"]).reset_index()
    count = stats["count"].astype(float)
    sumsq = (stats["var"].fillna(0.0) * (count - 1)).clip(lower=0.0)
    return stats[keys], stats["sum"].astype(float), count, sumsq


def latest_population(df: pd.DataFrame, spec: TwinModelSpec) -> pd.DataFrame:
    """Each unit's latest row: who twins are drawn from.

    Parameters
    ----------
    df : DataFrame
        Validated history rows (from :func:`check_history`).
    spec : TwinModelSpec
        The spec naming the columns.

    Returns
    -------
    DataFrame
        One row per unit, sorted by ``unit_id`` (renamed so, as a string), with the
        segment column and the features.
    """
    cols = [
        spec.unit_column,
        spec.segment_column,
        *spec.numeric_features,
        *spec.categorical_features,
    ]
    ordered = df.sort_values(spec.period_column, kind="stable") if spec.period_column else df
    latest = ordered.groupby(spec.unit_column, sort=True).tail(1)
    pop = latest[list(dict.fromkeys(cols))].sort_values(spec.unit_column).reset_index(drop=True)
    if spec.unit_column != "unit_id":
        pop = pop.rename(columns={spec.unit_column: "unit_id"})
    pop["unit_id"] = pop["unit_id"].astype(str)
    return pop


def unit_index(
    df: pd.DataFrame, design: pd.DataFrame, spec: TwinModelSpec
) -> tuple[np.ndarray, np.ndarray]:
    """The history's sorted unit ids (as strings) and each design row's index into them.

    Parameters
    ----------
    df : DataFrame
        The validated history rows.
    design : DataFrame
        The likelihood rows (the collapsed history), with the unit column.
    spec : TwinModelSpec
        Names the unit column.
    """
    unit_ids = np.array(sorted(df[spec.unit_column].astype(str).unique()), dtype=str)
    return unit_ids, np.searchsorted(unit_ids, design[spec.unit_column].astype(str).to_numpy())
