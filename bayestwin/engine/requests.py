"""The checks of a simulation request against the model it runs on.

The schemas check a request's shape (types, ranges that need no model). What needs
the model is checked here, once, by :func:`check_request`: the engine calls it before
any work, and the service calls it before it stores a row. Every failure is an
:class:`~bayestwin.errors.InvalidInputError` naming the request field at fault.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd

from bayestwin.core.population import eligible_mask
from bayestwin.errors import InvalidInputError
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.schemas import InterventionConfig

__all__ = ["INTENSITY_RANGE_FACTOR", "CheckedRequest", "allowed_intensity", "check_request"]

#: How far above the history's largest intensity a request may go. The dose response
#: is fitted on the history's intensities and extrapolated beyond them; up to this
#: multiple of the largest one the extrapolation is still a (saturating) statement
#: about the model, far above it the answer is the saturation level whatever the
#: number, so :func:`check_request` refuses it (``intervention_config.intensity``,
#: ``dose_grid``) instead of simulating it.
INTENSITY_RANGE_FACTOR = 10.0


@dataclass(frozen=True)
class CheckedRequest:
    """A request that passed :func:`check_request`.

    Attributes
    ----------
    config : InterventionConfig
        The intervention config, its ``intervention_type`` filled in.
    twin_count : int
        The twin count (the default when the request gave none).
    """

    config: InterventionConfig
    twin_count: int


def _is_int(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer)


def allowed_intensity(model: FittedTwinModel) -> float:
    """The largest intensity a simulation on ``model`` may ask for.

    Parameters
    ----------
    model : FittedTwinModel
        The model.

    Returns
    -------
    float
        :data:`INTENSITY_RANGE_FACTOR` times the history's largest intensity, or
        infinity when the model records none (``max_intensity`` None).
    """
    top = model.max_intensity
    if top is None or not math.isfinite(top) or top <= 0:
        return math.inf
    return INTENSITY_RANGE_FACTOR * float(top)


def _range_error(model: FittedTwinModel, what: str, value: float, field: str) -> InvalidInputError:
    top = allowed_intensity(model)
    return InvalidInputError(
        f"{what} {value:.6g} is outside the allowed range [0, {top:.6g}]: at most "
        f"{INTENSITY_RANGE_FACTOR:g} x the largest intensity in the model's history "
        f"({model.max_intensity:.6g})",
        field=field,
    )


def _config(
    model: FittedTwinModel,
    intervention_type: str,
    config: InterventionConfig | Mapping[str, Any] | None,
) -> InterventionConfig:
    if config is None:
        cfg = InterventionConfig()
    elif isinstance(config, InterventionConfig):
        cfg = config
    else:
        cfg = InterventionConfig.model_validate(config)
    if cfg.intervention_type is not None and cfg.intervention_type != intervention_type:
        raise InvalidInputError(
            f"intervention_config.intervention_type ({cfg.intervention_type!r}) differs "
            f"from intervention_type ({intervention_type!r})",
            field="intervention_config.intervention_type",
        )
    if not math.isfinite(cfg.intensity) or cfg.intensity < 0:
        raise InvalidInputError(
            f"intensity must be finite and >= 0, got {cfg.intensity}",
            field="intervention_config.intensity",
        )
    if cfg.intensity > allowed_intensity(model):
        raise _range_error(model, "intensity", cfg.intensity, "intervention_config.intensity")
    for level, _ in cfg.intensity_levels:
        if not math.isfinite(level) or level > allowed_intensity(model):
            raise _range_error(model, "intensity", level, "intervention_config.intensity_mix")
    return cfg.model_copy(update={"intervention_type": intervention_type})


def _twin_count(twin_count: object, *, max_twin_count: int, default_twin_count: int) -> int:
    count = default_twin_count if twin_count is None else twin_count
    if not _is_int(count):
        raise InvalidInputError(
            f"twin_count must be an integer, got {twin_count!r}", field="twin_count"
        )
    n = int(cast(int, count))
    if not 0 < n <= max_twin_count:
        raise InvalidInputError(
            f"twin_count must be in [1, max_twin_count={max_twin_count}], got {n}",
            field="twin_count",
        )
    return n


def _check_options(
    model: FittedTwinModel,
    confidence_level: float,
    random_seed: int | None,
    dose_grid: Sequence[float] | None,
) -> None:
    if not (isinstance(confidence_level, float | int) and 0.0 < confidence_level < 1.0):
        raise InvalidInputError(
            f"confidence_level must be in (0, 1), got {confidence_level!r}",
            field="confidence_level",
        )
    if random_seed is not None and (not _is_int(random_seed) or random_seed < 0):
        raise InvalidInputError(
            f"random_seed must be a non-negative integer, got {random_seed!r}",
            field="random_seed",
        )
    if dose_grid is not None:
        grid = np.asarray(list(dose_grid), dtype=float)
        if not np.all(np.isfinite(grid)) or (grid < 0).any():
            raise InvalidInputError(
                f"dose_grid intensities must be finite and >= 0, got {grid}", field="dose_grid"
            )
        if grid.size and grid.max() > allowed_intensity(model):
            raise _range_error(model, "dose_grid intensity", float(grid.max()), "dose_grid")


def check_request(
    model: FittedTwinModel,
    intervention_type: str,
    intervention_config: InterventionConfig | Mapping[str, Any] | None = None,
    twin_count: int | None = None,
    confidence_level: float = 0.95,
    random_seed: int | None = None,
    dose_grid: Sequence[float] | None = None,
    *,
    max_twin_count: int,
    default_twin_count: int,
    population: pd.DataFrame | None = None,
) -> CheckedRequest:
    """Check a simulation request against its model, before any work.

    Parameters
    ----------
    model : FittedTwinModel
        The model the request runs on.
    intervention_type : str
        Must be known to the model.
    intervention_config : InterventionConfig or mapping, optional
        Intensity (finite, >= 0, at most :func:`allowed_intensity`) and target filters
        (each must name a column of the model's population and, together, match some
        unit); its ``intervention_type``, when set, must equal ``intervention_type``.
    twin_count : int, optional
        In ``[1, max_twin_count]``; None means ``default_twin_count``.
    confidence_level : float
        In (0, 1).
    random_seed : int, optional
        Non-negative.
    dose_grid : sequence of float, optional
        Finite intensities >= 0, at most :func:`allowed_intensity`.
    max_twin_count, default_twin_count : int
        The twin-count limit and default (from the settings).
    population : DataFrame, optional
        The units twins are drawn from, when not the model's own (the target filters
        are checked against it).

    Returns
    -------
    CheckedRequest

    Raises
    ------
    TypeError
        ``model`` is not a :class:`~bayestwin.model.fitted.FittedTwinModel`.
    InvalidInputError
        A field is wrong; ``field`` names it (``"intervention_type"``,
        ``"intervention_config.target"``, ``"twin_count"``...).
    pydantic.ValidationError
        ``intervention_config`` is a mapping of the wrong shape.
    """
    if not isinstance(model, FittedTwinModel):
        raise TypeError(
            f"model must be a fitted FittedTwinModel, got {type(model).__name__}; "
            "fit one with TwinGenerator.fit"
        )
    model.require_usable()
    try:
        model.posterior.type_index(intervention_type)
    except ValueError as exc:
        raise InvalidInputError(str(exc), field="intervention_type") from None
    cfg = _config(model, intervention_type, intervention_config)
    count = _twin_count(
        twin_count, max_twin_count=max_twin_count, default_twin_count=default_twin_count
    )
    _check_options(model, confidence_level, random_seed, dose_grid)
    if cfg.target:
        try:
            eligible_mask(model.population if population is None else population, cfg.target)
        except ValueError as exc:
            raise InvalidInputError(str(exc), field="intervention_config.target") from None
    return CheckedRequest(config=cfg, twin_count=count)
