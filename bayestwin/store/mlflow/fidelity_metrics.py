"""Fidelity checks as MLflow metrics: which keys, which values, which steps and times.

:func:`fidelity_batches` turns what :func:`bayestwin.store.mlflow.registry.log_fidelity`
takes (a score, a :class:`~bayestwin.schemas.FidelityResult`, a sequence of them, or a
mapping such as a summary's ``to_dict()``) into batches of metrics, each with its
timestamp and step:

* a float: the model fidelity score, logged as ``<prefix>.score``;
* a :class:`~bayestwin.schemas.FidelityResult`: its ``simulated_ate``, ``actual_ate``,
  ``actual_se``, ``prediction_error``, ``standardized_error``, ``pit``, ``score`` (the
  model score, when set), ``warning`` (1 or 0), ``grade`` (:data:`GRADE_METRIC`:
  excellent 3, good 2, fair 1, poor 0; absent when unvalidated) and
  ``in_interval_<level>`` (1 or 0), stamped with its ``validated_at``;
* a sequence of them: each at its own step;
* a mapping, such as ``FidelitySummary.to_dict()`` or ``CalibrationReport.to_dict()``:
  every number and bool, nested keys joined with dots (list entries by their ``level``
  or ``group``, else their index).

Missing and non-finite values are skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from bayestwin.schemas import FidelityResult
from bayestwin.vocabulary import FidelityGrade

__all__ = ["GRADE_METRIC", "FidelityInput", "MetricBatch", "fidelity_batches"]

FidelityInput = float | FidelityResult | Sequence[FidelityResult] | Mapping[str, Any]
"""What :func:`fidelity_batches` takes."""

MetricBatch = tuple[dict[str, float], int, int]
"""Metrics by key, their timestamp (ms since the epoch) and their step."""

GRADE_METRIC: dict[FidelityGrade, float] = {
    FidelityGrade.EXCELLENT: 3.0,
    FidelityGrade.GOOD: 2.0,
    FidelityGrade.FAIR: 1.0,
    FidelityGrade.POOR: 0.0,
}
"""The grade as a metric (an ordinal code; an unvalidated grade is not logged)."""


def _metric_key(text: str) -> str:
    return re.sub(r"[^\w\-. /:]", "_", text)


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _flatten_numbers(prefix: str, value: Any, out: dict[str, float]) -> None:
    number = _numeric(value)
    if number is not None:
        out[_metric_key(prefix)] = number
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _flatten_numbers(f"{prefix}.{key}", item, out)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for i, item in enumerate(value):
            if isinstance(item, Mapping):
                label = item.get("level", item.get("group", i))
                _flatten_numbers(f"{prefix}.{label}", item, out)


def _result_metrics(result: FidelityResult, prefix: str) -> dict[str, float]:
    values: dict[str, Any] = {
        "simulated_ate": result.simulated_ate,
        "actual_ate": result.actual_ate,
        "actual_se": result.actual_se,
        "prediction_error": result.prediction_error,
        "standardized_error": result.standardized_error,
        "pit": result.pit,
        "score": result.model_fidelity_score,
        "warning": result.fidelity_warning,
        "grade": GRADE_METRIC.get(result.fidelity_grade),
    }
    for level, inside in result.in_predictive_interval.items():
        values[f"in_interval_{level}"] = inside
    out: dict[str, float] = {}
    for key, value in values.items():
        _flatten_numbers(f"{prefix}.{key}", value, out)
    return out


def _millis(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _result_batch(result: FidelityResult, prefix: str, now: int, step: int) -> MetricBatch:
    return _result_metrics(result, prefix), _millis(result.validated_at) or now, step


def fidelity_batches(fidelity: FidelityInput, *, prefix: str, step: int) -> list[MetricBatch]:
    """The metric batches of a fidelity input.

    Parameters
    ----------
    fidelity : float, FidelityResult, sequence of FidelityResult, or mapping
        See :func:`bayestwin.store.mlflow.registry.log_fidelity`.
    prefix : str
        Prefix of the metric keys.
    step : int
        Step of the first batch; a sequence's results take the following steps.

    Returns
    -------
    list of MetricBatch
        A result is stamped with its ``validated_at``, everything else with now.

    Raises
    ------
    TypeError
        If ``fidelity`` is none of those (a string, for instance).
    """
    now = int(datetime.now().timestamp() * 1000)
    if isinstance(fidelity, str):
        raise TypeError("fidelity must be a score, a FidelityResult, a sequence or a mapping")
    if isinstance(fidelity, FidelityResult):
        return [_result_batch(fidelity, prefix, now, step)]
    if isinstance(fidelity, Mapping):
        values: dict[str, float] = {}
        for key, item in fidelity.items():
            _flatten_numbers(f"{prefix}.{key}", item, values)
        return [(values, now, step)]
    if isinstance(fidelity, Sequence):
        batches = []
        for i, result in enumerate(fidelity):
            if not isinstance(result, FidelityResult):
                raise TypeError(f"item {i} is a {type(result).__name__}, not a FidelityResult")
            batches.append(_result_batch(result, prefix, now, step + i))
        return batches
    score = _numeric(fidelity)
    if score is None and not isinstance(fidelity, int | float):
        raise TypeError(
            "fidelity must be a score, a FidelityResult, a sequence of them or a mapping; "
            f"got {type(fidelity).__name__}"
        )
    return [({} if score is None else {f"{prefix}.score": score}, now, step)]
