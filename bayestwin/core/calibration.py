"""Calibration across many validations: coverage, PIT and drift statistics, the report.

:func:`wilson_interval` is the score interval of a binomial proportion (the coverage of
the predictive intervals); :func:`retrospective_cusum` tests a change in the mean
standardised error over time. :class:`CalibrationReport` holds what
:func:`bayestwin.core.calibration_report.calibration_report` finds, and renders it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from bayestwin.errors import InvalidInputError

__all__ = [
    "CalibrationReport",
    "CoverageRow",
    "DriftRow",
    "retrospective_cusum",
    "wilson_interval",
]


def wilson_interval(hits: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Parameters
    ----------
    hits : int
        Successes, ``0 <= hits <= n``.
    n : int
        Trials, > 0.
    confidence : float
        Two-sided confidence of the interval.

    Returns
    -------
    (float, float)
        Lower and upper bounds, within [0, 1] (``scipy.stats.binomtest``'s
        ``proportion_ci`` with ``method="wilson"``).

    Raises
    ------
    InvalidInputError
        Unless ``0 <= hits <= n`` and ``n > 0``.
    """
    if n <= 0 or not 0 <= hits <= n:
        raise InvalidInputError(
            f"need 0 <= hits <= n and n > 0, got hits={hits}, n={n}",
            field="n" if n <= 0 else "hits",
        )
    ci = stats.binomtest(hits, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def retrospective_cusum(values: ArrayLike) -> tuple[float, float, int | None]:
    """Retrospective CUSUM test of a change in mean, in time order.

    The statistic is ``max_t |sum_{i<=t} (x_i - mean x)| / (sd(x) * sqrt(n))``
    (``sd`` with ``ddof=1``); with no change it tends to the supremum of a Brownian
    bridge, whose law (Kolmogorov's, ``scipy.stats.kstwobign``) gives the p-value.

    Parameters
    ----------
    values : array_like
        Standardised errors in time order.

    Returns
    -------
    statistic : float
    p_value : float
    change_index : int or None
        Index of the last value before the most likely change (``None`` when the
        series is too short or constant).
    """
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return 0.0, 1.0, None
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        return 0.0, 1.0, None
    path = np.cumsum(x - x.mean())
    idx = int(np.argmax(np.abs(path[:-1]))) if x.size > 1 else 0
    stat = float(np.abs(path[idx]) / (sd * math.sqrt(x.size)))
    return stat, float(stats.kstwobign.sf(stat)), idx


@dataclass(frozen=True)
class CoverageRow:
    """Empirical coverage of the central predictive interval at one nominal level.

    Attributes
    ----------
    level : float
        Nominal level.
    n, hits : int
        Validations checked and how many fell inside.
    coverage : float or None
        ``hits / n``.
    lower, upper : float or None
        Wilson interval of the coverage at ``confidence``.
    confidence : float
        Confidence of that interval.
    """

    level: float
    n: int
    hits: int
    coverage: float | None
    lower: float | None
    upper: float | None
    confidence: float


@dataclass(frozen=True)
class DriftRow:
    """Retrospective CUSUM of one group's standardised errors.

    Attributes
    ----------
    group : str
        The (brand, twin type) label.
    n : int
        Validations with a standardised error.
    statistic, p_value, critical_value : float or None
        CUSUM statistic, its p-value and the critical value at the report's
        Bonferroni-adjusted level (``None`` below 8 validations).
    change_index : int or None
        Index (in time order) of the last validation before the likely change.
    change_at : datetime or None
        Its time.
    mean_before, mean_after : float or None
        Mean standardised error up to and after the change.
    drift : bool
        Whether the statistic exceeds the critical value.
    """

    group: str
    n: int
    statistic: float | None
    p_value: float | None
    critical_value: float | None
    change_index: int | None
    change_at: datetime | None
    mean_before: float | None
    mean_after: float | None
    drift: bool


@dataclass(frozen=True)
class CalibrationReport:
    """Calibration of a model (or a set of models) across many validations.

    Attributes
    ----------
    n_results, n_validated : int
        Results given, and those with a real ATE.
    alpha : float
        Family-wise level of each flag's test.
    coverage : tuple of CoverageRow
        Empirical vs nominal coverage of the predictive intervals.
    pit_values : tuple of float
        PIT values in time order.
    pit_ks_statistic, pit_ks_p_value : float or None
        Kolmogorov-Smirnov test of the PITs against Uniform(0, 1) (5 values or more).
    pit_chi2_statistic, pit_chi2_p_value : float or None
        Chi-square test of the PIT counts in ``pit_bins`` equal bins (10 values or more).
    pit_bins : int
        Number of bins of that test, ``min(10, max(2, n // 5))``.
    mean_error, median_error : float or None
        Of the relative prediction errors.
    mean_standardized_error, sd_standardized_error : float or None
        Of the standardised errors (0 and 1 when calibrated).
    bias_p_value : float or None
        One-sample t-test of a zero mean standardised error.
    grade_counts : dict of str to int
        Results per fidelity grade (unvalidated included).
    drift_by_group : tuple of DriftRow
        Drift test per (brand, twin type).
    overconfident, underconfident, biased, drift, pit_nonuniform : bool
        The flags (rules in :mod:`bayestwin.core.calibration_report`).
    reasons : tuple of str
        One line per raised flag.
    """

    n_results: int
    n_validated: int
    alpha: float
    coverage: tuple[CoverageRow, ...]
    pit_values: tuple[float, ...]
    pit_ks_statistic: float | None
    pit_ks_p_value: float | None
    pit_chi2_statistic: float | None
    pit_chi2_p_value: float | None
    pit_bins: int
    mean_error: float | None
    median_error: float | None
    mean_standardized_error: float | None
    sd_standardized_error: float | None
    bias_p_value: float | None
    grade_counts: dict[str, int]
    drift_by_group: tuple[DriftRow, ...]
    overconfident: bool
    underconfident: bool
    biased: bool
    drift: bool
    pit_nonuniform: bool
    reasons: tuple[str, ...] = ()

    @property
    def flags(self) -> list[str]:
        """Names of the raised flags."""
        names = ("overconfident", "underconfident", "biased", "drift", "pit_nonuniform")
        return [name for name in names if getattr(self, name)]

    @property
    def calibrated(self) -> bool:
        """True when no flag is raised."""
        return not self.flags

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation (datetimes as ISO strings)."""
        return {
            "n_results": self.n_results,
            "n_validated": self.n_validated,
            "alpha": self.alpha,
            "coverage": [vars(row).copy() for row in self.coverage],
            "pit_values": list(self.pit_values),
            "pit_ks_statistic": self.pit_ks_statistic,
            "pit_ks_p_value": self.pit_ks_p_value,
            "pit_chi2_statistic": self.pit_chi2_statistic,
            "pit_chi2_p_value": self.pit_chi2_p_value,
            "pit_bins": self.pit_bins,
            "mean_error": self.mean_error,
            "median_error": self.median_error,
            "mean_standardized_error": self.mean_standardized_error,
            "sd_standardized_error": self.sd_standardized_error,
            "bias_p_value": self.bias_p_value,
            "grade_counts": dict(self.grade_counts),
            "drift_by_group": [
                {
                    **vars(row),
                    "change_at": row.change_at.isoformat() if row.change_at else None,
                }
                for row in self.drift_by_group
            ],
            "flags": self.flags,
            "overconfident": self.overconfident,
            "underconfident": self.underconfident,
            "biased": self.biased,
            "drift": self.drift,
            "pit_nonuniform": self.pit_nonuniform,
            "reasons": list(self.reasons),
        }

    def to_markdown(self) -> str:
        """The report as Markdown tables."""

        def num(v: float | None, fmt: str = ".3f") -> str:
            return "–" if v is None else format(v, fmt)

        lines = [
            "## Calibration report",
            "",
            f"{self.n_validated} validated of {self.n_results} results; "
            f"flags: {', '.join(self.flags) or 'none'} (alpha {self.alpha:g}).",
        ]
        lines += [f"- {r}" for r in self.reasons]
        lines += [
            "",
            "| nominal | n | inside | coverage | Wilson interval |",
            "|---|---|---|---|---|",
        ]
        for row in self.coverage:
            lines.append(
                f"| {row.level:.0%} | {row.n} | {row.hits} | {num(row.coverage)} | "
                f"[{num(row.lower)}, {num(row.upper)}] |"
            )
        lines += [
            "",
            "| statistic | value |",
            "|---|---|",
            f"| mean error | {num(self.mean_error)} |",
            f"| median error | {num(self.median_error)} |",
            f"| mean standardised error | {num(self.mean_standardized_error)} |",
            f"| sd standardised error | {num(self.sd_standardized_error)} |",
            f"| bias t-test p | {num(self.bias_p_value, '.3g')} |",
            f"| PIT KS statistic | {num(self.pit_ks_statistic)} |",
            f"| PIT KS p | {num(self.pit_ks_p_value, '.3g')} |",
            f"| PIT chi-square p ({self.pit_bins} bins) | {num(self.pit_chi2_p_value, '.3g')} |",
            "",
            "| grade | count |",
            "|---|---|",
        ]
        lines += [f"| {g} | {c} |" for g, c in self.grade_counts.items()]
        if self.drift_by_group:
            lines += [
                "",
                "| group | n | CUSUM | critical | p | change after | mean z before | mean z after "
                "| drift |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for d in self.drift_by_group:
                when = d.change_at.date().isoformat() if d.change_at else "–"
                lines.append(
                    f"| {d.group} | {d.n} | {num(d.statistic)} | {num(d.critical_value)} | "
                    f"{num(d.p_value, '.3g')} | {when} | {num(d.mean_before)} | "
                    f"{num(d.mean_after)} | {'yes' if d.drift else 'no'} |"
                )
        return "\n".join(lines) + "\n"
