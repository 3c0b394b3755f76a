"""Cells and names the calibration report's sections share."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["GROUPS", "LABELS", "cov_cell", "dec", "fmt"]


def fmt(value: Any, pct: bool = True, digits: int = 1) -> str:
    """A number as a report cell: a percentage (``pct``) or plain, "–" when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{100 * value:.{digits}f}%" if pct else f"{value:.{digits}f}"


def cov_cell(c: Mapping[str, Any]) -> str:
    """A coverage summary as "share [Wilson lower, upper] (n=...)"."""
    if not c or c.get("coverage") is None:
        return "–"
    return f"{fmt(c['coverage'])} [{fmt(c['lower'])}, {fmt(c['upper'])}] (n={c['n']})"


#: Display name of each method.
LABELS = {
    "twin": "twin model (partial pooling)",
    "no_pooling": "no-pooling GLM",
    "complete_pooling": "complete-pooling GLM",
    "naive": "naive difference in means",
    "linear_dml": "EconML LinearDML",
    "twfe": "two-way fixed effects (panel)",
}
#: Display name of each assignment group.
GROUPS = {
    "random": "random assignment",
    "confounded_observed": "confounded, observed",
    "confounded_hidden": "confounded, hidden",
}


def dec(d: Mapping[str, Any]) -> str:
    """A decision share as a report cell."""
    if not d or d.get("share") is None:
        return "–"
    return f"{fmt(d['share'])} ({d['count']}/{d['n']})"
