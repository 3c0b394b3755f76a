"""Plots of fidelity and calibration (matplotlib, an optional dependency).

matplotlib is imported inside each function, so importing :mod:`bayestwin` (or this
module) never needs it; install the ``plots`` extra to draw. Every function draws on
the ``ax`` it is given, or on a new figure, and returns the Axes (its figure is
``ax.figure``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from bayestwin.core.calibration import CalibrationReport
from bayestwin.core.calibration_report import group_label
from bayestwin.core.grading import GRADE_BOUNDARIES, result_time
from bayestwin.errors import InvalidInputError
from bayestwin.schemas import FidelityResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["error_over_time", "pit_histogram", "reliability_diagram"]


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "bayestwin.plots needs matplotlib: pip install 'bayestwin[plots]'"
        ) from exc
    _, new_ax = plt.subplots(figsize=figsize)
    return new_ax


def reliability_diagram(
    report: CalibrationReport,
    *,
    band: float = 0.95,
    ax: Axes | None = None,
) -> Axes:
    """Empirical coverage of the predictive intervals against their nominal level.

    Points carry the report's Wilson intervals; the shaded band is where a calibrated
    model's coverage falls with probability ``band`` (binomial quantiles at each
    level's count of validations).

    Parameters
    ----------
    report : CalibrationReport
        From :func:`bayestwin.core.calibration_report.calibration_report`.
    band : float
        Probability of the calibrated band.
    ax : matplotlib Axes, optional
        Where to draw.

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax, (4.5, 4.5))
    rows = sorted((r for r in report.coverage if r.n > 0), key=lambda r: r.level)
    ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="calibrated")
    if rows:
        levels = np.array([r.level for r in rows])
        ns = np.array([r.n for r in rows])
        lo = stats.binom.ppf((1 - band) / 2, ns, levels) / ns
        hi = stats.binom.ppf((1 + band) / 2, ns, levels) / ns
        ax.fill_between(levels, lo, hi, color="C0", alpha=0.15, label=f"{band:.0%} binomial band")
        cov = np.array([r.coverage for r in rows], dtype=float)
        err = np.array(
            [
                [c - (r.lower or c) for c, r in zip(cov, rows, strict=True)],
                [(r.upper or c) - c for c, r in zip(cov, rows, strict=True)],
            ]
        )
        ax.errorbar(levels, cov, yerr=err, fmt="o", color="C1", capsize=3, label="empirical")
        n_text = f"n = {ns[0]}" if np.all(ns == ns[0]) else f"n = {ns.min()} to {ns.max()}"
        ax.text(0.97, 0.03, n_text, transform=ax.transAxes, ha="right", va="bottom", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("nominal level of the predictive interval")
    ax.set_ylabel("share of real ATEs inside")
    ax.set_title("Predictive interval coverage")
    ax.legend(loc="upper left", fontsize=8)
    return ax


def pit_histogram(
    report: CalibrationReport,
    *,
    bins: int | None = None,
    band: float = 0.95,
    ax: Axes | None = None,
) -> Axes:
    """Histogram of PIT values with the band a uniform sample would fill.

    A calibrated model gives a flat histogram; a U shape means over-confidence, a hump
    under-confidence, a slope bias.

    Parameters
    ----------
    report : CalibrationReport
        From :func:`bayestwin.core.calibration_report.calibration_report`.
    bins : int, optional
        Number of bins (default: the report's ``pit_bins``).
    band : float
        Probability of the per-bin binomial band under uniformity.
    ax : matplotlib Axes, optional
        Where to draw.

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax, (5.0, 3.5))
    pits = np.asarray(report.pit_values, dtype=float)
    n_bins = bins if bins is not None else report.pit_bins
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    n = pits.size
    if n:
        ax.hist(pits, bins=edges.tolist(), density=True, color="C0", alpha=0.7, edgecolor="white")
        p = 1.0 / n_bins
        lo = stats.binom.ppf((1 - band) / 2, n, p) / (n * p)
        hi = stats.binom.ppf((1 + band) / 2, n, p) / (n * p)
        ax.axhspan(lo, hi, color="0.5", alpha=0.25, label=f"{band:.0%} band if uniform", zorder=3)
    ax.axhline(1.0, color="0.3", lw=1, ls="--")
    ks = report.pit_ks_p_value
    title = f"PIT histogram (n={n}" + (f", KS p={ks:.2g})" if ks is not None else ")")
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_xlabel("PIT of the real ATE")
    ax.set_ylabel("density")
    if n:
        ax.legend(loc="upper right", fontsize=8)
    return ax


def error_over_time(
    results: Sequence[FidelityResult],
    groups: Sequence[Hashable] | None = None,
    *,
    standardized: bool = False,
    ax: Axes | None = None,
) -> Axes:
    """Prediction error of each validation over time, per group.

    Parameters
    ----------
    results : sequence of FidelityResult
        Validations (unvalidated ones are skipped).
    groups : sequence of hashable, optional
        The (brand, twin type) of each result, parallel to ``results``.
    standardized : bool
        Plot the standardised error (with +-2 guides) instead of the relative error
        (with the grade boundaries).
    ax : matplotlib Axes, optional
        Where to draw.

    Returns
    -------
    matplotlib Axes
    """
    if groups is not None and len(groups) != len(results):
        raise InvalidInputError(
            f"groups has {len(groups)} entries for {len(results)} results", field="groups"
        )
    ax = _axes(ax, (7.0, 3.5))
    labels = [group_label(g) for g in groups] if groups is not None else ["all"] * len(results)
    series: dict[str, list[tuple[Any, float]]] = {}
    for r, label in zip(results, labels, strict=True):
        value = r.standardized_error if standardized else r.prediction_error
        if r.actual_ate is None or value is None:
            continue
        series.setdefault(label, []).append((result_time(r), float(value)))
    for label, points in series.items():
        points.sort(key=lambda t: t[0])
        ax.plot([t for t, _ in points], [v for _, v in points], marker="o", ms=3, label=label)
    if standardized:
        for y in (-2.0, 0.0, 2.0):
            ax.axhline(y, color="0.5", lw=1, ls="--" if y else "-")
        ax.set_ylabel("standardised error (sim - real) / sd")
    else:
        lower = 0.0
        colours = ("tab:green", "tab:olive", "tab:orange")
        for upper, name, colour in zip(
            GRADE_BOUNDARIES, ("excellent", "good", "fair"), colours, strict=True
        ):
            ax.axhspan(lower, upper, color=colour, alpha=0.12, lw=0, label=name, zorder=0)
            lower = upper
        ax.set_ylim(bottom=0.0)
        ax.set_ylabel("relative prediction error")
    ax.set_xlabel("validated at")
    ax.set_title(("Standardised" if standardized else "Prediction") + " error over time")
    ax.legend(fontsize=8, ncols=2)
    ax.figure.autofmt_xdate()
    return ax
