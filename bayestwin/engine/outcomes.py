"""Posterior summaries of each unit's expected outcome under its own intervention.

This is what a registered model serves (the MLflow pyfunc's ``predict``): one row per
unit in, with the encoder's raw columns (the segment column, numeric features as floats,
categorical features as strings), ``intervention_type`` (empty or missing: control)
and ``intensity`` (a float; ignored for control rows, and intensity 0 means untreated,
as in fitting). One row per unit out: ``expected_outcome`` (posterior mean of the
expected outcome on the natural scale), ``sd`` (its posterior sd) and posterior
quantiles (``q05`` and ``q95`` by default), plus ``unit_id`` when the input has it.
These are expected outcomes (``mu``), not predictive draws: they carry posterior
uncertainty only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.core.posterior import TwinPosterior

__all__ = [
    "DEFAULT_QUANTILES",
    "INTENSITY_COLUMN",
    "INTERVENTION_COLUMN",
    "MAX_CELLS",
    "output_columns",
    "predict_expected_outcomes",
]

INTERVENTION_COLUMN = "intervention_type"
"""Input column naming each unit's intervention (empty or missing: control)."""
INTENSITY_COLUMN = "intensity"
"""Input column with each unit's intervention intensity."""
DEFAULT_QUANTILES = (0.05, 0.95)
"""Posterior quantiles reported by default."""
MAX_CELLS = 1 << 22
"""Draws x units held at once by the prediction (float64: 32 MB)."""


def _quantile_name(q: float) -> str:
    pct = q * 100
    if float(pct).is_integer():
        return f"q{int(pct):02d}"
    return "q" + f"{pct:g}".replace(".", "_")


def output_columns(quantiles: Sequence[float] = DEFAULT_QUANTILES) -> list[str]:
    """Names of the summary columns: ``expected_outcome``, ``sd``, then one per quantile.

    Parameters
    ----------
    quantiles : sequence of float
        The quantiles; 0.05 is named ``q05``, 0.025 ``q2_5``.

    Returns
    -------
    list of str
        e.g. ``["expected_outcome", "sd", "q05", "q95"]``.
    """
    return ["expected_outcome", "sd", *(_quantile_name(q) for q in quantiles)]


def _check_input(
    posterior: TwinPosterior, units: pd.DataFrame, quantiles: Sequence[float]
) -> NDArray:
    """The quantiles as an array, once the columns and the quantiles are checked."""
    missing = [c for c in (INTERVENTION_COLUMN, INTENSITY_COLUMN) if c not in units.columns]
    if missing:
        raise ValueError(f"units lack the column(s) {missing}")
    posterior.encoder.check_columns(units)
    qs = np.asarray(quantiles, dtype=float)
    if qs.ndim != 1 or not ((qs > 0) & (qs < 1)).all():
        raise ValueError(f"quantiles must lie in (0, 1), got {list(quantiles)}")
    return qs


def _treatments(posterior: TwinPosterior, units: pd.DataFrame) -> tuple[NDArray, NDArray]:
    """Each row's intervention ("" for control) and dose, checked against the model."""
    kinds = np.array(
        ["" if pd.isna(v) else str(v) for v in units[INTERVENTION_COLUMN]], dtype=object
    )
    intensity = pd.to_numeric(units[INTENSITY_COLUMN]).to_numpy(dtype=float)
    treated = (kinds != "") & (intensity != 0)
    bad = treated & ~(np.isfinite(intensity) & (intensity >= 0))
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} treated row(s) have a negative or missing {INTENSITY_COLUMN}; "
            "intensity must be a number >= 0"
        )
    unknown = sorted(set(kinds[treated]) - set(posterior.intervention_types))
    if unknown:
        raise ValueError(
            f"unknown intervention_type(s) {unknown}; this model knows "
            f"{list(posterior.intervention_types)}"
        )
    kinds[~treated] = ""
    return kinds, np.where(treated, intensity, 0.0)


def predict_expected_outcomes(
    posterior: TwinPosterior,
    units: pd.DataFrame,
    *,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    max_cells: int = MAX_CELLS,
) -> pd.DataFrame:
    """Posterior summary of each unit's expected outcome under its own intervention.

    Parameters
    ----------
    posterior : TwinPosterior
        The model's posterior.
    units : DataFrame
        One row per unit: the encoder's raw columns, ``intervention_type`` (empty or
        missing for control) and ``intensity`` (>= 0; ignored for control rows; 0 means
        untreated).
    quantiles : sequence of float
        Posterior quantiles to report, each in (0, 1).
    max_cells : int
        Draws x units computed at once (bounds the memory).

    Returns
    -------
    DataFrame
        Indexed like ``units``: ``expected_outcome`` (posterior mean), ``sd``
        (posterior sd, ``ddof=1``) and one column per quantile (``q05``, ``q95``, ...),
        on the outcome's natural scale, preceded by ``unit_id`` when ``units`` has it.

    Raises
    ------
    ValueError
        If a column is missing, an intervention type is unknown, or a treated row's
        intensity is negative or missing.
    """
    qs = _check_input(posterior, units, quantiles)
    kinds, dose = _treatments(posterior, units)
    n, d = len(units), posterior.n_draws
    mean = np.empty(n)
    sd = np.empty(n)
    quant = np.empty((len(qs), n))
    step = max(1, max_cells // max(d, 1))
    groups = pd.DataFrame({"kind": kinds, "dose": dose}).groupby(["kind", "dose"], sort=True)
    for key, positions in groups.indices.items():
        kind, level = cast(tuple[str, float], key)
        for start in range(0, len(positions), step):
            idx = positions[start : start + step]
            draws: NDArray = posterior.expected_outcome(
                units.iloc[idx], str(kind) or None, float(level)
            )
            mean[idx] = draws.mean(axis=0)
            sd[idx] = draws.std(axis=0, ddof=1 if d > 1 else 0)
            quant[:, idx] = np.quantile(draws, qs, axis=0)
    columns = dict(zip(output_columns(quantiles), [mean, sd, *quant], strict=True))
    out = pd.DataFrame(columns, index=units.index)
    if "unit_id" in units.columns:
        out.insert(0, "unit_id", units["unit_id"].astype(str).to_numpy())
    return out
