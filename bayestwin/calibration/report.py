"""The calibration report on disk: markdown, JSON, the per-target CSVs and the plots.

:func:`write_report` writes everything under one directory (the summary is
:func:`~bayestwin.calibration.summary.summarize`, the markdown
:func:`~bayestwin.calibration.markdown.to_markdown`, the plots
:func:`~bayestwin.calibration.plots.write_plots`); :func:`read_run` reads the records
back to render them again.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayestwin.calibration.markdown import to_markdown
from bayestwin.calibration.plots import write_plots
from bayestwin.calibration.run import CalibrationRun
from bayestwin.calibration.summary import summarize
from bayestwin.calibration.worlds import RunSettings

__all__ = ["read_run", "write_report"]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_report(run: CalibrationRun, out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``calibration.md``, ``calibration.json``, the per-target CSVs and the plots.

    Parameters
    ----------
    run : CalibrationRun
        The records.
    out : path-like
        Directory (created if needed).

    Returns
    -------
    dict
        Name to path of every file written.
    """
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    summary = summarize(run)
    files = {
        "markdown": target / "calibration.md",
        "json": target / "calibration.json",
        "worlds": target / "worlds.csv",
        "effects": target / "effects.csv",
        "segments": target / "segments.csv",
    }
    files["markdown"].write_text(to_markdown(summary) + "\n")
    files["json"].write_text(_dump_json(summary))
    run.worlds.to_csv(files["worlds"], index=False)
    run.effects.to_csv(files["effects"], index=False)
    run.segments.to_csv(files["segments"], index=False)
    for path in write_plots(run, summary, target):
        files[path.stem] = path
    return files


def read_run(directory: str | os.PathLike[str]) -> CalibrationRun:
    """Read back the records that :func:`write_report` wrote, to render them again.

    Parameters
    ----------
    directory : path-like
        A report directory (``worlds.csv``, ``effects.csv``, ``segments.csv`` and
        ``calibration.json`` for the settings and timing).

    Returns
    -------
    CalibrationRun
    """
    src = Path(directory)

    def csv(name: str) -> pd.DataFrame:
        path = src / f"{name}.csv"
        if not path.exists() or path.stat().st_size <= 1:
            return pd.DataFrame()
        return pd.read_csv(path, keep_default_na=False, na_values=[""])

    meta = json.loads((src / "calibration.json").read_text())["meta"]
    worlds = csv("worlds")
    if "error" in worlds:
        worlds["error"] = worlds["error"].astype(object).where(worlds["error"].notna(), None)
    extra = {k: meta[k] for k in ("command",) if k in meta}
    return CalibrationRun(
        worlds=worlds,
        effects=csv("effects"),
        segments=csv("segments"),
        settings=RunSettings(**meta["settings"]),
        wall_seconds=float(meta["wall_seconds"]),
        workers=int(meta["workers"]),
        meta=extra,
    )


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _dump_json(summary: Mapping[str, Any]) -> str:
    return json.dumps(_clean(summary), indent=2, default=_json_default, allow_nan=False)
