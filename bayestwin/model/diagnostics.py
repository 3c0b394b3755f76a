"""Convergence diagnostics of a fit and the gate that decides whether it may serve.

r_hat, bulk and tail ESS and the energy BFMI come from ``arviz_stats``; the gate
compares their worst values with :class:`~bayestwin.model.spec.DiagnosticThresholds`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bayestwin.model.fitted import Diagnostics
from bayestwin.model.spec import DiagnosticThresholds

__all__ = ["compute_diagnostics"]

#: The model's parameters the gate checks (those a fit has; deterministic ones included).
#: The unit-effect scale ``sigma_unit`` is checked; the standardised effects of single
#: units (``z_unit``) are not: each is a nuisance, summarised over draws per unit.
_PARAMETERS = (
    "mu_a", "sigma_a", "z_a", "a", "beta", "mu_tau", "sigma_type", "sigma_seg", "z_type",
    "tau_type", "z_tau", "tau", "z_gamma", "log_rate", "dose_jump", "dispersion",
    "sigma_unit", "lambda_unit", "sigma_time", "z_time", "time_effect",
)  # fmt: skip


def _extreme(ds: Any, fn: Callable[[np.ndarray], Any]) -> float:
    """``fn`` over every defined value of every variable of ``ds`` (NaN when none)."""
    vals = np.concatenate([np.ravel(ds[v].values) for v in ds.data_vars] or [np.empty(0)])
    vals = vals[~np.isnan(vals)]
    # no defined value (e.g. r_hat of a single chain) fails the gate as NaN
    return float(fn(vals)) if vals.size else float("nan")


def compute_diagnostics(trace: Any, thresholds: DiagnosticThresholds) -> Diagnostics:
    """Convergence diagnostics of a PyMC/ArviZ ``DataTree`` and the gate's verdict.

    Parameters
    ----------
    trace : xarray.DataTree
        Result of sampling (groups ``posterior`` and ``sample_stats``, the latter with
        ``energy`` and, when the sampler records it, ``diverging``).
    thresholds : DiagnosticThresholds
        The gate.

    Returns
    -------
    Diagnostics
        Worst r_hat, ESS bulk and tail, divergences, lowest BFMI and the verdict.
    """
    import arviz_stats as azs

    post = trace["posterior"].to_dataset()
    sub = post[[v for v in _PARAMETERS if v in post.data_vars]]
    max_rhat = _extreme(azs.rhat(sub), np.max)
    min_bulk = _extreme(azs.ess(sub, method="bulk"), np.min)
    min_tail = _extreme(azs.ess(sub, method="tail"), np.min)
    stats = trace["sample_stats"].to_dataset()
    div = int(stats["diverging"].sum()) if "diverging" in stats else 0
    min_bfmi = float(np.min(azs.bfmi(stats[["energy"]])["energy"].values))
    t = thresholds
    reasons = []
    if not max_rhat <= t.max_r_hat:
        reasons.append(f"max r_hat {max_rhat:.4f} > {t.max_r_hat}")
    if not min_bulk >= t.min_ess_bulk:
        reasons.append(f"min ESS bulk {min_bulk:.0f} < {t.min_ess_bulk:.0f}")
    if not min_tail >= t.min_ess_tail:
        reasons.append(f"min ESS tail {min_tail:.0f} < {t.min_ess_tail:.0f}")
    if div > t.max_divergences:
        reasons.append(f"{div} divergent transition(s) > {t.max_divergences}")
    if not min_bfmi >= t.min_bfmi:
        reasons.append(f"min BFMI {min_bfmi:.3f} < {t.min_bfmi}")
    return Diagnostics(
        max_r_hat=max_rhat,
        min_ess_bulk=min_bulk,
        min_ess_tail=min_tail,
        divergences=div,
        min_bfmi=min_bfmi,
        passed=not reasons,
        reasons=reasons,
    )
