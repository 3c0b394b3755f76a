"""The calibration report of many validations: coverage, bias, drift and PIT flags.

The rules of :func:`calibration_report`, all tests at ``alpha = 0.01``:

* ``overconfident`` when, at some nominal level, the Wilson interval of the empirical
  coverage (at confidence ``1 - alpha / L`` for ``L`` levels) lies wholly below the
  nominal level (``underconfident``: wholly above);
* ``biased`` when a one-sample t-test rejects a zero mean standardised error
  (``p < alpha``) and that mean is at least 0.1 in absolute value;
* ``drift`` when, in some (brand, twin type) group, the retrospective CUSUM of
  standardised errors ``max_t |sum_{i<=t} (z_i - mean z)| / (sd z * sqrt(n))`` exceeds
  the Kolmogorov (Brownian-bridge) critical value at ``alpha / G`` for ``G`` groups
  (needs 8 validations in the group). Drift is a *change* in the mean error over time;
  a constant offset is bias;
* ``pit_nonuniform`` when a Kolmogorov-Smirnov test of the PIT values against
  Uniform(0, 1) gives ``p < alpha``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from bayestwin.core.calibration import (
    CalibrationReport,
    CoverageRow,
    DriftRow,
    retrospective_cusum,
    wilson_interval,
)
from bayestwin.core.grading import result_time
from bayestwin.core.intervals import INTERVAL_LEVELS
from bayestwin.core.predictive import level_key
from bayestwin.errors import InvalidInputError
from bayestwin.schemas import FidelityResult
from bayestwin.vocabulary import FidelityGrade

__all__ = ["BIAS_MIN_ABS", "DRIFT_MIN_N", "REPORT_ALPHA", "calibration_report", "group_label"]

REPORT_ALPHA = 0.01
"""Family-wise level of each flag's test."""
BIAS_MIN_ABS = 0.1
"""Smallest absolute mean standardised error that counts as bias."""
DRIFT_MIN_N = 8
"""Validations a group needs for its drift test."""


@dataclass(frozen=True)
class _PitTests:
    values: NDArray[np.float64]
    bins: int
    ks_statistic: float | None
    ks_p_value: float | None
    chi2_statistic: float | None
    chi2_p_value: float | None


@dataclass(frozen=True)
class _ErrorStats:
    errors: NDArray[np.float64]
    mean_z: float | None
    sd_z: float | None
    bias_p: float | None
    biased: bool


def group_label(group: Hashable) -> str:
    """Label of a result's group: a tuple is shown as ``"brand/twin_type"``.

    Parameters
    ----------
    group : hashable
        The group, usually ``(brand, twin_type)``.

    Returns
    -------
    str
    """
    if isinstance(group, tuple):
        return "/".join(str(g) for g in group)
    return str(group)


def _hit(result: FidelityResult, level: float) -> bool | None:
    hit = result.in_predictive_interval.get(level_key(level))
    if hit is not None:
        return bool(hit)
    if result.pit is not None:
        return abs(result.pit - 0.5) <= level / 2.0
    return None


def _coverage_rows(
    done: Sequence[FidelityResult], levels: Sequence[float], alpha: float
) -> list[CoverageRow]:
    cov_conf = 1.0 - alpha / max(1, len(levels))
    coverage: list[CoverageRow] = []
    for level in levels:
        hits = [h for h in (_hit(r, level) for r in done) if h is not None]
        n, k = len(hits), int(sum(hits))
        lo, hi = wilson_interval(k, n, cov_conf) if n else (None, None)
        coverage.append(CoverageRow(float(level), n, k, k / n if n else None, lo, hi, cov_conf))
    return coverage


def _pit_tests(done: Sequence[FidelityResult]) -> _PitTests:
    pits = np.array([r.pit for r in done if r.pit is not None], dtype=float)
    n_bins = min(10, max(2, pits.size // 5))
    ks_stat = ks_p = chi_stat = chi_p = None
    if pits.size >= 5:
        ks = stats.kstest(pits, "uniform")
        ks_stat, ks_p = float(ks.statistic), float(ks.pvalue)
    if pits.size >= 10:
        counts, _ = np.histogram(pits, bins=np.linspace(0.0, 1.0, n_bins + 1))
        chi = stats.chisquare(counts)
        chi_stat, chi_p = float(chi.statistic), float(chi.pvalue)
    return _PitTests(pits, n_bins, ks_stat, ks_p, chi_stat, chi_p)


def _error_stats(done: Sequence[FidelityResult], alpha: float) -> _ErrorStats:
    errors = np.array([r.prediction_error for r in done if r.prediction_error is not None])
    zs = np.array([r.standardized_error for r in done if r.standardized_error is not None])
    mean_z = float(zs.mean()) if zs.size else None
    sd_z = float(zs.std(ddof=1)) if zs.size > 1 else None
    bias_p = None
    if zs.size > 1 and sd_z:
        bias_p = float(stats.ttest_1samp(zs, 0.0).pvalue)
    biased = bool(
        bias_p is not None and mean_z is not None and bias_p < alpha and abs(mean_z) >= BIAS_MIN_ABS
    )
    return _ErrorStats(errors, mean_z, sd_z, bias_p, biased)


def _drift_rows(
    results: Sequence[FidelityResult], validated: Sequence[int], labels: Sequence[str], alpha: float
) -> list[DriftRow]:
    by_group: dict[str, list[int]] = {}
    for i in validated:
        if results[i].standardized_error is not None:
            by_group.setdefault(labels[i], []).append(i)
    n_tested = sum(1 for idx in by_group.values() if len(idx) >= DRIFT_MIN_N)
    crit = float(stats.kstwobign.isf(alpha / max(1, n_tested)))
    drift_rows: list[DriftRow] = []
    for label, idx in by_group.items():
        z_g = np.array([results[i].standardized_error for i in idx], dtype=float)
        if z_g.size < DRIFT_MIN_N:
            drift_rows.append(
                DriftRow(label, int(z_g.size), None, None, None, None, None, None, None, False)
            )
            continue
        stat, p, change = retrospective_cusum(z_g)
        at = result_time(results[idx[change]]) if change is not None else None
        before = float(z_g[: change + 1].mean()) if change is not None else None
        after = float(z_g[change + 1 :].mean()) if change is not None else None
        drift_rows.append(
            DriftRow(label, int(z_g.size), stat, p, crit, change, at, before, after, stat > crit)
        )
    return drift_rows


def _reasons(
    coverage: Sequence[CoverageRow],
    err: _ErrorStats,
    drift_rows: Sequence[DriftRow],
    pit: _PitTests,
    pit_nonuniform: bool,
) -> list[str]:
    reasons: list[str] = []
    for row in coverage:
        if row.upper is not None and row.upper < row.level:
            reasons.append(
                f"overconfident: {row.level:.0%} predictive intervals covered "
                f"{row.coverage:.1%} of {row.n} real results (Wilson upper {row.upper:.1%})"
            )
        if row.lower is not None and row.lower > row.level:
            reasons.append(
                f"underconfident: {row.level:.0%} predictive intervals covered "
                f"{row.coverage:.1%} of {row.n} real results (Wilson lower {row.lower:.1%})"
            )
    if err.biased:
        reasons.append(
            f"biased: mean standardised error {err.mean_z:+.2f} (t-test p = {err.bias_p:.2g})"
        )
    reasons += [
        f"drift in {d.group}: CUSUM {d.statistic:.2f} > {d.critical_value:.2f}, mean "
        f"standardised error {d.mean_before:+.2f} before and {d.mean_after:+.2f} after "
        f"validation {d.change_index}"
        for d in drift_rows
        if d.drift
    ]
    if pit_nonuniform:
        reasons.append(f"PIT values not uniform (KS p = {pit.ks_p_value:.2g})")
    return reasons


def calibration_report(
    results: Sequence[FidelityResult],
    groups: Sequence[Hashable] | None = None,
    *,
    levels: Sequence[float] = INTERVAL_LEVELS,
    alpha: float = REPORT_ALPHA,
) -> CalibrationReport:
    """Calibration of the predictions behind many validations.

    Parameters
    ----------
    results : sequence of FidelityResult
        Validations (unvalidated ones are only counted).
    groups : sequence of hashable, optional
        The (brand, twin type) of each result, parallel to ``results`` (a tuple is
        shown as ``"brand/twin_type"``); the drift test runs per group. Default: one
        group.
    levels : sequence of float
        Nominal levels whose coverage is reported. A level among the result's
        ``in_predictive_interval`` keys uses that hit; any other level is read from
        the PIT (inside the central ``p`` interval iff ``|PIT - 0.5| <= p / 2``).
    alpha : float
        Family-wise level of each flag (module docstring).

    Returns
    -------
    CalibrationReport
        Coverage, PIT tests, errors, grade counts, drift and flags.
    """
    if not 0.0 < alpha < 1.0:
        raise InvalidInputError(f"alpha must be in (0, 1), got {alpha}", field="alpha")
    if groups is not None and len(groups) != len(results):
        raise InvalidInputError(
            f"groups has {len(groups)} entries for {len(results)} results", field="groups"
        )
    labels = [group_label(g) for g in groups] if groups is not None else ["all"] * len(results)
    order = sorted(range(len(results)), key=lambda i: result_time(results[i]))
    validated = [i for i in order if results[i].actual_ate is not None]
    done = [results[i] for i in validated]

    grade_counts = {g.value: 0 for g in FidelityGrade}
    for r in results:
        grade_counts[r.fidelity_grade.value] += 1
    coverage = _coverage_rows(done, levels, alpha)
    pit = _pit_tests(done)
    pit_nonuniform = pit.ks_p_value is not None and pit.ks_p_value < alpha
    err = _error_stats(done, alpha)
    drift_rows = _drift_rows(results, validated, labels, alpha)

    return CalibrationReport(
        n_results=len(results),
        n_validated=len(done),
        alpha=alpha,
        coverage=tuple(coverage),
        pit_values=tuple(float(p) for p in pit.values),
        pit_ks_statistic=pit.ks_statistic,
        pit_ks_p_value=pit.ks_p_value,
        pit_chi2_statistic=pit.chi2_statistic,
        pit_chi2_p_value=pit.chi2_p_value,
        pit_bins=pit.bins,
        mean_error=float(err.errors.mean()) if err.errors.size else None,
        median_error=float(np.median(err.errors)) if err.errors.size else None,
        mean_standardized_error=err.mean_z,
        sd_standardized_error=err.sd_z,
        bias_p_value=err.bias_p,
        grade_counts=grade_counts,
        drift_by_group=tuple(drift_rows),
        overconfident=any(r.upper is not None and r.upper < r.level for r in coverage),
        underconfident=any(r.lower is not None and r.lower > r.level for r in coverage),
        biased=err.biased,
        drift=any(d.drift for d in drift_rows),
        pit_nonuniform=pit_nonuniform,
        reasons=tuple(_reasons(coverage, err, drift_rows, pit, pit_nonuniform)),
    )
