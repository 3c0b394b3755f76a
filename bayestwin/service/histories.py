"""Histories from parquet, read by columns: only what a spec needs, one (brand, type) at a time.

A history of millions of rows need not be read whole. :func:`read_history` reads the
columns a :class:`~bayestwin.model.spec.TwinModelSpec` uses (:func:`spec_columns`), and
only the rows of one brand and twin type when asked (parquet row-group filters), with
pyarrow. :func:`history_combinations` and :func:`parquet_features` answer what
:meth:`~bayestwin.service.TwinService.fit_all` must know before it fits (the (brand,
twin type) pairs present, and each twin type's feature columns) by streaming a few
columns in batches, never the whole table.

The fit then collapses the rows to sufficient statistics (one likelihood row per
distinct design, :func:`bayestwin.model.pymc_model.build_design`) before the sampler
sees them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bayestwin.errors import InvalidInputError, UnavailableError
from bayestwin.model.spec import TwinModelSpec
from bayestwin.vocabulary import TwinType

__all__ = [
    "PARQUET_SUFFIXES",
    "history_combinations",
    "is_parquet",
    "parquet_features",
    "read_history",
    "reserved_columns",
    "spec_columns",
]

#: File names read as parquet.
PARQUET_SUFFIXES = (".parquet", ".pq")

_BATCH_ROWS = 1 << 20


def is_parquet(source: object) -> bool:
    """Whether ``source`` is a path (or URL) of a parquet file or folder."""
    if not isinstance(source, str | os.PathLike):
        return False
    text = os.fspath(source)
    return text.lower().endswith(PARQUET_SUFFIXES) or Path(text).is_dir()


def reserved_columns(spec: TwinModelSpec) -> list[str]:
    """The columns a spec uses for something other than a feature, in a fixed order."""
    names = [
        spec.unit_column,
        spec.period_column,
        spec.brand_column,
        spec.twin_type_column,
        *spec.segment_columns,
        spec.intervention_column,
        spec.intensity_column,
        spec.outcome,
    ]
    return list(dict.fromkeys(n for n in names if n))


def spec_columns(spec: TwinModelSpec) -> list[str]:
    """Every column a fit of ``spec`` reads: the reserved ones, then the features."""
    return list(
        dict.fromkeys([*reserved_columns(spec), *spec.numeric_features, *spec.categorical_features])
    )


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq
    except ImportError:
        raise UnavailableError(
            "reading parquet histories needs pyarrow; install the 'scale' extra: "
            "pip install 'bayestwin[scale]'",
            code="missing_dependency",
        ) from None
    return ds, pq


def _dataset(path: str | os.PathLike[str]) -> Any:
    ds, _ = _pyarrow()
    try:
        return ds.dataset(os.fspath(path), format="parquet")
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise InvalidInputError(
            f"cannot read the parquet history {os.fspath(path)!r}: {type(exc).__name__}",
            field="history",
        ) from None


def _missing(dataset: Any, columns: Sequence[str]) -> None:
    names = set(dataset.schema.names)
    absent = [c for c in columns if c not in names]
    if absent:
        raise InvalidInputError(
            f"the parquet history lacks the columns {absent}; it has {sorted(names)}",
            field="history",
        )


def read_history(
    path: str | os.PathLike[str],
    spec: TwinModelSpec | None = None,
    *,
    columns: Sequence[str] | None = None,
    brand: str | None = None,
    twin_type: TwinType | str | None = None,
) -> pd.DataFrame:
    """Read a parquet history, only the columns (and rows) asked for.

    Parameters
    ----------
    path : path-like
        A parquet file, or a folder of parquet files (one dataset).
    spec : TwinModelSpec, optional
        Read :func:`spec_columns` of this spec (and name the brand and twin type
        columns of the filters).
    columns : sequence of str, optional
        Read these columns instead (default: the spec's, else every column).
    brand, twin_type : optional
        Keep only the rows of this brand, of this twin type (needs ``spec``).

    Returns
    -------
    DataFrame
        The rows and columns read, with pandas' default dtypes.

    Raises
    ------
    InvalidInputError
        If the file cannot be read, or lacks a column asked for.
    """
    dataset = _dataset(path)
    wanted = list(columns) if columns is not None else None
    if wanted is None and spec is not None:
        wanted = spec_columns(spec)
    if wanted is not None:
        _missing(dataset, wanted)
    filters = []
    if (brand is not None or twin_type is not None) and spec is None:
        raise InvalidInputError("filtering by brand or twin type needs the spec", field="spec")
    if spec is not None and brand is not None:
        filters.append((spec.brand_column, "==", brand))
    if spec is not None and twin_type is not None and spec.twin_type_column:
        filters.append((spec.twin_type_column, "==", TwinType(twin_type).value))
    _, pq = _pyarrow()
    table = pq.read_table(os.fspath(path), columns=wanted, filters=filters or None)
    frame: pd.DataFrame = table.to_pandas()
    del table
    return frame


def history_combinations(
    path: str | os.PathLike[str], brand_column: str, twin_type_column: str
) -> list[tuple[str, TwinType]]:
    """The (brand, twin type) pairs of a parquet history, sorted (two columns streamed).

    Raises
    ------
    InvalidInputError
        If a column is missing or a twin type is unknown.
    """
    dataset = _dataset(path)
    _missing(dataset, [brand_column, twin_type_column])
    seen: set[tuple[str, str]] = set()
    for batch in dataset.to_batches(
        columns=[brand_column, twin_type_column], batch_size=_BATCH_ROWS
    ):
        frame = batch.to_pandas().astype(str).drop_duplicates()
        seen.update(frame.itertuples(index=False, name=None))
    try:
        return sorted((b, TwinType(t)) for b, t in seen)
    except ValueError as exc:
        raise InvalidInputError(str(exc), field=twin_type_column) from None


def parquet_features(
    path: str | os.PathLike[str], spec: TwinModelSpec, twin_type: TwinType | str
) -> tuple[list[str], list[str]]:
    """The feature columns of one twin type in a parquet history.

    As :func:`bayestwin.service.fitting.infer_features` on the twin type's rows: every
    column the spec does not reserve that holds a value for the twin type, numeric
    when its type is, else categorical. The columns are streamed in batches.

    Parameters
    ----------
    path : path-like
        The parquet history.
    spec : TwinModelSpec
        Names the reserved columns (and the twin type column).
    twin_type : TwinType or str
        The twin type.

    Returns
    -------
    tuple of list of str
        ``(numeric_features, categorical_features)``, in the file's column order.
    """
    dataset = _dataset(path)
    reserved = set(reserved_columns(spec))
    candidates = [c for c in dataset.schema.names if c not in reserved]
    if not candidates:
        return [], []
    kind = TwinType(twin_type).value
    expression = None
    if spec.twin_type_column:
        import pyarrow.dataset as ds

        _missing(dataset, [spec.twin_type_column])
        expression = ds.field(spec.twin_type_column) == kind
    filled: set[str] = set()
    for batch in dataset.to_batches(columns=candidates, filter=expression, batch_size=_BATCH_ROWS):
        for name in candidates:
            if name not in filled and batch.column(name).null_count < batch.num_rows:
                filled.add(name)
        if len(filled) == len(candidates):
            break
    empty = dataset.schema.empty_table().to_pandas()
    features = [c for c in candidates if c in filled]
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(empty[c])]
    return numeric, [c for c in features if c not in numeric]
