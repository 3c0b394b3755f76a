"""How a request is matched to past simulations: its cache key and its distance.

* :func:`request_hash` is the key of the procedural memory: two requests with the same
  hash ask the same question of a model, so a stored result with the same model and
  seed answers both.
* :func:`config_distance` orders the episodic memory: how far apart two intervention
  configs are.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic_core import to_jsonable_python

from bayestwin.errors import InvalidInputError
from bayestwin.schemas import (
    InterventionConfig,
    NumericRange,
    SimulateInterventionRequest,
    SimulationResult,
)
from bayestwin.vocabulary import TwinType

__all__ = [
    "REQUEST_HASH_VERSION",
    "RequestLike",
    "config_distance",
    "request_hash",
    "request_parts",
]

REQUEST_HASH_VERSION = 1
"""Version of the hashed document; a change invalidates every stored cache key."""

RequestLike = SimulateInterventionRequest | SimulationResult
"""A request, or a result that carries the request's fields."""


def _canonical_filter(flt: Any) -> Any:
    if isinstance(flt, NumericRange):
        return {"min": flt.min, "max": flt.max}
    values = {json.dumps(v, sort_keys=True): v for v in flt}
    return [values[k] for k in sorted(values)]


def request_parts(request: RequestLike) -> tuple[str, TwinType, str, InterventionConfig]:
    """The brand, twin type, intervention type and config a request asks about.

    Raises
    ------
    TypeError
        If ``request`` is neither a request nor a result.
    """
    if isinstance(request, SimulateInterventionRequest):
        twin_type = request.target_population
    elif isinstance(request, SimulationResult):
        twin_type = request.twin_type
    else:
        raise TypeError(
            "request must be a SimulateInterventionRequest or a SimulationResult, "
            f"not {type(request).__name__}"
        )
    return request.brand, twin_type, request.intervention_type, request.intervention_config


def request_hash(request: RequestLike, *, extra: Mapping[str, Any] | None = None) -> str:
    """Return a stable hash of what a simulation request asks for.

    Two requests hash equal when they ask the same question of a model: the same brand,
    twin type, intervention type, intensity, duration, target filters (order of listed
    values and of columns does not matter), twin count and confidence level. The random
    seed is *not* part of the hash; the result cache keys on it separately.

    Parameters
    ----------
    request : SimulateInterventionRequest or SimulationResult
        The request, or a result that carries the request's fields. A request's
        ``twin_count`` must be filled in (the default it stands for is the settings').
    extra : mapping, optional
        Anything else that changes the answer and should separate cache entries, e.g.
        the decision thresholds in force (``{"min_effect_threshold": 0.05}``). Must be
        JSON-serialisable.

    Returns
    -------
    str
        64 hexadecimal characters (SHA-256 of a canonical JSON document).

    Raises
    ------
    InvalidInputError
        If the request's ``twin_count`` is None.
    """
    brand, twin_type, intervention_type, config = request_parts(request)
    if request.twin_count is None:
        raise InvalidInputError(
            "fill in twin_count (the settings' default_twin_count) before hashing a request",
            field="twin_count",
        )
    canonical_config = {
        "intervention_type": intervention_type,
        "intensity": float(config.intensity),
        "duration_weeks": config.duration_weeks,
        "target": {col: _canonical_filter(flt) for col, flt in sorted(config.target.items())},
    }
    document = {
        "version": REQUEST_HASH_VERSION,
        "brand": brand,
        "twin_type": twin_type.value,
        "intervention_type": intervention_type,
        "intervention_config": canonical_config,
        "twin_count": request.twin_count,
        "confidence_level": float(request.confidence_level),
        "extra": to_jsonable_python(dict(extra or {})),
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _relative_gap(x: float | None, y: float | None) -> float:
    if x is None and y is None:
        return 0.0
    if x is None or y is None:
        return 1.0
    scale = max(abs(x), abs(y))
    return 0.0 if scale == 0.0 else min(1.0, abs(x - y) / scale)


def _filter_distance(a: Any, b: Any) -> float:
    if a is None or b is None:
        return 0.0 if a is b else 1.0
    if isinstance(a, NumericRange) and isinstance(b, NumericRange):
        return 0.5 * (_relative_gap(a.min, b.min) + _relative_gap(a.max, b.max))
    if isinstance(a, list) and isinstance(b, list):
        set_a, set_b = set(a), set(b)
        return 1.0 - len(set_a & set_b) / len(set_a | set_b)
    return 1.0


def config_distance(a: InterventionConfig, b: InterventionConfig) -> float:
    """Distance between two intervention configs (0 for the same config).

    ``|log(1 + intensity_a) - log(1 + intensity_b)|`` plus, for every column filtered in
    either config, a term in [0, 1]:

    * both list allowed values: 1 - Jaccard similarity of the two sets;
    * both give a numeric range: the mean over the two ends of
      ``|x - y| / max(|x|, |y|)`` (capped at 1; 0 when both ends are open, 1 when only
      one is);
    * only one filters the column, or one lists values and the other gives a range: 1.

    The intensity enters on the log scale, so 1 -> 2 is farther than 10 -> 11. Twin
    count, confidence level and duration do not enter: they change how precise an
    answer is, not which question it answers.

    Parameters
    ----------
    a, b : InterventionConfig
        The configs to compare.

    Returns
    -------
    float
        A non-negative distance.
    """
    distance = abs(math.log1p(a.intensity) - math.log1p(b.intensity))
    for column in sorted(set(a.target) | set(b.target)):
        distance += _filter_distance(a.target.get(column), b.target.get(column))
    return distance
