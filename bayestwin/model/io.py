"""Saving and loading fitted models, and the provenance a fit records.

A saved model is a directory: ``posterior.npz`` (the arrays), ``trace.nc`` (the full
``DataTree``, when kept), ``population.parquet``, ``spec.json`` and ``metadata.json``
(format version, bayestwin version, spec hash, encoder, diagnostics, provenance, the
history's largest intensity, the rehearsal, the model comparison). ``max_intensity``,
``rehearsal`` and ``comparison`` are optional on reading: metadata written without
them loads with ``None`` (no intensity range check, no rehearsal, no comparison), so
adding them did not change the format version.
:func:`load_model` refuses a directory written in another format, by another bayestwin
version, or whose spec does not hash to its recorded spec hash.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayestwin._version import __version__
from bayestwin.core.comparison import ModelComparison
from bayestwin.core.posterior import FeatureEncoder, SegmentHyper, TwinPosterior
from bayestwin.core.rehearsal import Rehearsal
from bayestwin.core.unit_effects import UnitEffects
from bayestwin.errors import UnavailableError
from bayestwin.model.fitted import Diagnostics, FittedTwinModel
from bayestwin.model.spec import SamplerSettings, TwinModelSpec
from bayestwin.vocabulary import TwinType

__all__ = [
    "MODEL_FORMAT_VERSION",
    "PROVENANCE_PACKAGES",
    "load_model",
    "package_versions",
    "provenance",
    "save_model",
]

#: Version of the saved-model layout; :func:`load_model` reads only this one.
MODEL_FORMAT_VERSION = "4"

#: The distributions whose versions a fit records.
PROVENANCE_PACKAGES = (
    "bayestwin", "pymc", "pytensor", "arviz", "nutpie", "numpy", "pandas", "xarray",
)  # fmt: skip

_ARRAYS = (
    "intercept", "beta", "tau", "gamma", "dose_rate", "dispersion", "dose_jump", "time_scale",
    "time_drift", "season_ahead",
)  # fmt: skip
#: The arrays of :class:`~bayestwin.core.unit_effects.UnitEffects`, saved as ``unit_<name>``.
_UNIT_ARRAYS = ("unit_ids", "mean", "sd", "offset", "scale")
#: The arrays of :class:`~bayestwin.core.posterior.SegmentHyper`, saved as ``segment_<name>``.
_SEGMENT_ARRAYS = ("intercept_mean", "intercept_sd", "tau_type", "tau_sd")


def package_versions(names: Iterable[str] = PROVENANCE_PACKAGES) -> dict[str, str]:
    """Installed versions of the named distributions (missing ones are left out).

    Parameters
    ----------
    names : iterable of str
        Distribution names.

    Returns
    -------
    dict of str to str
        ``{name: version}``.
    """
    out = {}
    for pkg in names:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _hash_frame(df: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(df, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def provenance(
    df: pd.DataFrame,
    sampler: SamplerSettings,
    *,
    fit_seconds: float,
    n_rows: int,
    n_likelihood_rows: int,
) -> dict[str, Any]:
    """What a fit records about how it was made.

    Parameters
    ----------
    df : DataFrame
        The validated history rows the model was fitted on (hashed).
    sampler : SamplerSettings
        The NUTS settings used.
    fit_seconds : float
        Wall time of the sampling.
    n_rows, n_likelihood_rows : int
        History rows, and likelihood rows after collapsing.

    Returns
    -------
    dict
        Versions (bayestwin, model format, packages), the data hash, seed, sampler,
        timing, row counts and the fit time (UTC, ISO 8601).
    """
    return {
        "bayestwin_version": __version__,
        "format_version": MODEL_FORMAT_VERSION,
        "packages": package_versions(),
        "data_hash": _hash_frame(df),
        "random_seed": sampler.random_seed,
        "sampler": sampler.backend,
        "fit_seconds": fit_seconds,
        "n_rows": n_rows,
        "n_likelihood_rows": n_likelihood_rows,
        "fitted_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }


def save_model(model: FittedTwinModel, path: str | os.PathLike[str]) -> Path:
    """Save a fitted model to a directory.

    The directory is written next to its final place and renamed into it, so a crash
    never leaves a half-written model.

    Parameters
    ----------
    model : FittedTwinModel
        The model.
    path : path-like
        Target directory; it must not exist yet.

    Returns
    -------
    Path
        The directory.

    Raises
    ------
    FileExistsError
        If ``path`` exists.
    """
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{target} exists; choose a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    post = model.posterior
    arrays = {k: getattr(post, k) for k in _ARRAYS if getattr(post, k) is not None}
    if post.unit_effects is not None:
        arrays.update({f"unit_{k}": getattr(post.unit_effects, k) for k in _UNIT_ARRAYS})
    if post.segment_hyper is not None:
        arrays.update({f"segment_{k}": getattr(post.segment_hyper, k) for k in _SEGMENT_ARRAYS})
    np.savez(tmp / "posterior.npz", **arrays)
    if model.trace is not None:
        model.trace.to_netcdf(tmp / "trace.nc", engine="h5netcdf")
    model.population.to_parquet(tmp / "population.parquet", index=False)
    (tmp / "spec.json").write_text(json.dumps(model.spec, indent=2, sort_keys=True))
    meta = {
        "format_version": MODEL_FORMAT_VERSION,
        "bayestwin_version": __version__,
        "spec_hash": model.spec_hash,
        "brand": model.brand,
        "twin_type": model.twin_type.value,
        "family": post.family,
        "intervention_types": list(post.intervention_types),
        "outcome_loc": post.outcome_loc,
        "outcome_scale": post.outcome_scale,
        "unit_effect_kind": None if post.unit_effects is None else post.unit_effects.kind,
        "encoder": post.encoder.to_dict(),
        "diagnostics": model.diagnostics.to_dict(),
        "provenance": model.provenance,
        "override_diagnostics": model.override_diagnostics,
        "max_intensity": model.max_intensity,
        "rehearsal": None if model.rehearsal is None else model.rehearsal.to_dict(),
        "comparison": None if model.comparison is None else model.comparison.to_dict(),
    }
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    tmp.rename(target)
    return target


def _version_error(message: str) -> UnavailableError:
    return UnavailableError(message, code="model_version")


def _check_versions(src: Path, meta: dict[str, Any]) -> None:
    if meta.get("format_version") != MODEL_FORMAT_VERSION:
        raise _version_error(
            f"model at {src} has format {meta.get('format_version')!r}; this bayestwin reads "
            f"format {MODEL_FORMAT_VERSION!r}"
        )
    if meta.get("bayestwin_version") != __version__:
        raise _version_error(
            f"model at {src} was saved by bayestwin {meta.get('bayestwin_version')}; this is "
            f"bayestwin {__version__}. Refit it, or load it with the matching version."
        )


def _posterior(src: Path, meta: dict[str, Any]) -> TwinPosterior:
    with np.load(src / "posterior.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return TwinPosterior(
        family=meta["family"],
        encoder=FeatureEncoder.from_dict(meta["encoder"]),
        intervention_types=tuple(meta["intervention_types"]),
        intercept=arrays["intercept"],
        beta=arrays["beta"],
        tau=arrays["tau"],
        gamma=arrays["gamma"],
        dose_rate=arrays["dose_rate"],
        dispersion=arrays.get("dispersion"),
        outcome_loc=float(meta["outcome_loc"]),
        outcome_scale=float(meta["outcome_scale"]),
        dose_jump=arrays.get("dose_jump"),
        time_scale=arrays.get("time_scale"),
        time_drift=arrays.get("time_drift"),
        season_ahead=arrays.get("season_ahead"),
        unit_effects=_unit_effects(arrays, meta),
        segment_hyper=SegmentHyper(**{k: arrays[f"segment_{k}"] for k in _SEGMENT_ARRAYS})
        if "segment_tau_sd" in arrays
        else None,
    )


def _unit_effects(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> UnitEffects | None:
    kind = meta.get("unit_effect_kind")
    if kind is None:
        return None
    return UnitEffects(kind=kind, **{k: arrays[f"unit_{k}"] for k in _UNIT_ARRAYS})


def _max_intensity(meta: dict[str, Any]) -> float | None:
    """The recorded largest history intensity; None in metadata written without it."""
    value = meta.get("max_intensity")
    return None if value is None else float(value)


def _rehearsal(meta: dict[str, Any]) -> Rehearsal | None:
    """The recorded rehearsal; None in metadata written without one."""
    value = meta.get("rehearsal")
    return None if value is None else Rehearsal.from_dict(value)


def _comparison(meta: dict[str, Any]) -> ModelComparison | None:
    """The recorded model comparison; None in metadata written without one."""
    value = meta.get("comparison")
    return None if value is None else ModelComparison.from_dict(value)


def load_model(path: str | os.PathLike[str], *, load_trace: bool = False) -> FittedTwinModel:
    """Load a model written by :func:`save_model`.

    Parameters
    ----------
    path : path-like
        The model directory.
    load_trace : bool
        Also open the full ``DataTree`` (``trace.nc``).

    Returns
    -------
    FittedTwinModel
        The model, with ``trace`` when asked for and saved.

    Raises
    ------
    FileNotFoundError
        If ``path`` holds no ``metadata.json``.
    UnavailableError
        Code ``"model_version"``: the model was saved by another bayestwin version or
        format, or its spec does not hash to its recorded spec hash.
    """
    src = Path(path)
    meta_path = src / "metadata.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{src} holds no bayestwin model (no metadata.json)")
    meta = json.loads(meta_path.read_text())
    _check_versions(src, meta)
    spec_dict = json.loads((src / "spec.json").read_text())
    spec = TwinModelSpec.model_validate(spec_dict)
    if spec.spec_hash() != meta["spec_hash"]:
        raise _version_error(
            f"model at {src} has spec hash {meta['spec_hash']}, but its spec hashes to "
            f"{spec.spec_hash()}"
        )
    trace = None
    if load_trace and (src / "trace.nc").exists():
        import xarray as xr

        trace = xr.open_datatree(src / "trace.nc", engine="h5netcdf").load()
    return FittedTwinModel(
        brand=meta["brand"],
        twin_type=TwinType(meta["twin_type"]),
        posterior=_posterior(src, meta),
        population=pd.read_parquet(src / "population.parquet"),
        diagnostics=Diagnostics(**meta["diagnostics"]),
        spec_hash=meta["spec_hash"],
        spec=spec_dict,
        provenance=meta["provenance"],
        trace=trace,
        override_diagnostics=bool(meta.get("override_diagnostics", False)),
        max_intensity=_max_intensity(meta),
        rehearsal=_rehearsal(meta),
        comparison=_comparison(meta),
    )
