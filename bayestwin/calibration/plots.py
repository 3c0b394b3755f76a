"""The calibration plots: coverage reliability, error curves and SBC ranks (PNG).

matplotlib is imported only when :func:`write_plots` runs (with the ``Agg`` backend).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from bayestwin.calibration.markdown import GROUPS, LABELS
from bayestwin.calibration.run import CalibrationRun
from bayestwin.calibration.stats import SBC_BINS, SBC_DRAWS
from bayestwin.calibration.summary import methods_in, with_assignment
from bayestwin.calibration.worlds import ASSIGNMENTS
from bayestwin.core.intervals import INTERVAL_LEVELS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["write_plots"]


def _coverage_axis(ax: Axes, group: str, block: Mapping[str, Any]) -> None:
    """Coverage against nominal level of every method in one assignment group."""
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1)
    for i, (m, ms) in enumerate(block.get(group, {}).items()):
        rows = [ms["coverage"].get(f"{lv:g}") for lv in INTERVAL_LEVELS]
        pts = [(lv, r) for lv, r in zip(INTERVAL_LEVELS, rows, strict=True) if r and r["n"]]
        if not pts:
            continue
        x = np.array([p[0] for p in pts]) + (i - 2) * 0.008
        y = np.array([p[1]["coverage"] for p in pts])
        err = np.array(
            [[c - p[1]["lower"], p[1]["upper"] - c] for p, c in zip(pts, y, strict=True)]
        ).T
        ax.errorbar(x, y, yerr=err, fmt="o-", ms=4, capsize=2, label=LABELS.get(m, m))
    ax.set_title(GROUPS[group])
    ax.set_xlabel("nominal level")
    ax.set_xlim(0.4, 1.0)
    ax.set_ylim(0.0, 1.02)


def _coverage_figure(summary: Mapping[str, Any]) -> Figure:
    import matplotlib.pyplot as plt

    block = summary.get("by_assignment", {})
    fig, axes = plt.subplots(1, len(ASSIGNMENTS), figsize=(14, 4.5), sharey=True)
    for ax, group in zip(axes, ASSIGNMENTS, strict=True):
        _coverage_axis(ax, group, block)
    axes[0].set_ylabel("share of true ATEs inside")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Coverage of the population-ATE intervals (95% Wilson bars)")
    return fig


def _error_figure(run: CalibrationRun) -> Figure:
    import matplotlib.pyplot as plt

    eff = with_assignment(run.effects)
    fig, axes = plt.subplots(1, len(ASSIGNMENTS), figsize=(14, 4), sharey=True)
    if not eff.empty:
        primary = eff[eff["primary"]]
        for ax, group in zip(axes, ASSIGNMENTS, strict=True):
            frame = primary[primary["assignment"] == group]
            for m in methods_in(frame):
                vals = np.sort(frame[f"{m}_rel_error"].to_numpy(dtype=float))
                vals = np.clip(vals[np.isfinite(vals)], 1e-3, 1e2)
                if vals.size:
                    share = np.arange(1, vals.size + 1) / len(frame)
                    ax.step(vals, share, where="post", lw=1.5, label=LABELS.get(m, m))
            for bound in (0.1, 0.2):
                ax.axvline(bound, color="0.5", ls=":", lw=1)
            ax.set_xscale("log")
            ax.set_xlim(1e-3, 1e2)
            ax.set_title(GROUPS[group])
            ax.set_xlabel("relative error (log scale)")
    axes[0].set_ylabel("share of targets with error <= x")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Relative error of the ATE, primary targets (no estimate counts as never)")
    return fig


def _sbc_figure(summary: Mapping[str, Any]) -> Figure:
    import matplotlib.pyplot as plt

    sbc = summary.get("sbc", {})
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ranks = np.asarray(sbc.get("ranks", []), dtype=int)
    if ranks.size:
        edges = np.arange(0, SBC_DRAWS + 2, (SBC_DRAWS + 1) // SBC_BINS)
        ax.hist(ranks, bins=edges.tolist(), color="C0", alpha=0.75, edgecolor="white")
        expect = ranks.size / SBC_BINS
        lo, hi = stats.binom.ppf([0.005, 0.995], ranks.size, 1.0 / SBC_BINS)
        ax.axhspan(lo, hi, color="0.5", alpha=0.25, label="99% band if uniform")
        ax.axhline(expect, color="0.3", ls="--", lw=1)
        ax.legend(fontsize=8)
    ax.set_xlabel(f"rank of the true ATE among {SBC_DRAWS} posterior draws")
    ax.set_ylabel("count")
    ax.set_title(f"SBC ranks (n={ranks.size})")
    return fig


def write_plots(run: CalibrationRun, summary: Mapping[str, Any], out: Path) -> list[Path]:
    """Coverage reliability diagram, error curves and SBC rank histogram (PNG).

    Parameters
    ----------
    run : CalibrationRun
        The records.
    summary : mapping
        :func:`~bayestwin.calibration.summary.summarize`'s dict.
    out : Path
        Directory to write into.

    Returns
    -------
    list of Path
        The files written: ``coverage.png``, ``errors.png`` and ``sbc_ranks.png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    files = []
    figures: tuple[tuple[str, Callable[[], Figure]], ...] = (
        ("coverage", lambda: _coverage_figure(summary)),
        ("errors", lambda: _error_figure(run)),
        ("sbc_ranks", lambda: _sbc_figure(summary)),
    )
    for name, draw in figures:
        fig = draw()
        fig.tight_layout()
        files.append(out / f"{name}.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    return files
