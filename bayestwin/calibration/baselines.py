"""Baselines the twin model is compared with, on the same history and twins.

Each sees the history aggregated per unit (outcome totals over periods) and, for the
effect of type ``k`` at intensity ``s``, only the untreated units and the units treated
at exactly intensity ``s``: none has a dose-response model, so units treated at other
intensities say nothing to them about this one.

* :func:`no_pooling_glm`: a GLM of the outcome family (canonical link; negative
  binomial fitted by Poisson quasi-likelihood) with segment intercepts, the features,
  and one treatment coefficient per (type, segment), unpooled; ATE on the twins by the
  delta method with the sandwich (HC1) covariance. A (type, segment) cell without
  treated units, or whose coefficient runs off (``|coef| > 8`` on a logit or log link:
  separation), has no estimate, and neither has an ATE over twins that fall in it.
* :func:`complete_pooling_glm`: the same GLM with one treatment coefficient per type.
* :func:`naive_difference`: difference in mean outcome per period between the treated
  and the untreated units, Welch standard error over units.
* :func:`linear_dml`: EconML's ``LinearDML`` (linear nuisance models, 2 folds) on the
  unit mean outcome, with the treatment categorical, the segment dummies and numeric
  features as effect modifiers and the categorical features as controls; ATE over the
  twins with its standard error. Only when ``econml`` is installed.

Every function returns ``{type: {group: BaselineEstimate}}``, a group being a subset
of the twins (all of them, or one segment's). Intervals are normal, ``ate +- z * se``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.calibration.glm import GlmFit, fit_glm

__all__ = [
    "SEPARATION_LIMIT",
    "BaselineEstimate",
    "UnitData",
    "complete_pooling_glm",
    "linear_dml",
    "naive_difference",
    "no_pooling_glm",
    "unit_data",
]

#: Link-scale size above which an unpooled coefficient counts as separated.
SEPARATION_LIMIT = 8.0


@dataclass(frozen=True)
class UnitData:
    """The history aggregated per unit, as the baselines see it."""

    frame: pd.DataFrame  # one row per unit: segment, features, type, intensity, y, periods
    numeric: list[str]
    categorical: dict[str, list[str]]
    segments: list[str]
    loc: NDArray
    scale: NDArray

    def features(self, units: pd.DataFrame) -> NDArray:
        """Standardised numerics then categorical dummies (first level dropped)."""
        cols = [(units[self.numeric].to_numpy(dtype=float) - self.loc) / self.scale]
        for col, levels in self.categorical.items():
            vals = units[col].astype(str).to_numpy()
            cols.extend((vals == lvl).astype(float)[:, None] for lvl in levels[1:])
        return np.hstack(cols) if cols else np.empty((len(units), 0))

    def segment_dummies(self, units: pd.DataFrame) -> NDArray:
        """One indicator column per known segment."""
        seg = units["segment"].astype(str).to_numpy()
        return (seg[:, None] == np.asarray(self.segments)[None, :]).astype(float)


def unit_data(
    history: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]
) -> UnitData:
    """Aggregate a synthetic history per unit (features and assignment are constant)."""
    grouped = history.groupby("unit_id", sort=True)
    frame = grouped[["segment", *numeric, *categorical, "intervention_type", "intensity"]].first()
    frame["y"] = grouped["outcome"].sum().astype(float)
    frame["periods"] = grouped.size().astype(float)
    frame = frame.reset_index()
    raw = frame[list(numeric)].to_numpy(dtype=float)
    scale = raw.std(axis=0)
    return UnitData(
        frame=frame,
        numeric=list(numeric),
        categorical={c: sorted(frame[c].astype(str).unique()) for c in categorical},
        segments=sorted(frame["segment"].astype(str).unique()),
        loc=raw.mean(axis=0),
        scale=np.where(scale > 0, scale, 1.0),
    )


@dataclass(frozen=True)
class BaselineEstimate:
    """A baseline's ATE on a set of twins (NaN when it has no estimate)."""

    ate: float
    se: float
    control_mean: float

    @property
    def estimable(self) -> bool:
        """Whether the estimate and its standard error are finite."""
        return bool(np.isfinite(self.ate) and np.isfinite(self.se))


_MISSING = BaselineEstimate(float("nan"), float("nan"), float("nan"))


def _analysis_rows(data: UnitData, intensity: float) -> pd.DataFrame:
    f = data.frame
    itype = f["intervention_type"].astype(str)
    keep = (itype == "") | np.isclose(f["intensity"].to_numpy(dtype=float), intensity)
    return f[keep.to_numpy()].reset_index(drop=True)


def _glm_ate(
    fit: GlmFit,
    base: NDArray,
    treat_cols: NDArray[np.intp],
) -> BaselineEstimate:
    """ATE over twins whose design is ``base`` plus a 1 in their treatment column."""
    treated = base.copy()
    treated[np.arange(len(base)), treat_cols] = 1.0
    mu_c, d_c = fit.mean(base)
    mu_t, d_t = fit.mean(treated)
    ate = float(np.mean(mu_t - mu_c))
    grad = (treated * d_t[:, None] - base * d_c[:, None]).mean(axis=0)
    used = np.flatnonzero(grad != 0.0)
    cov = fit.cov[np.ix_(used, used)]
    if not np.all(np.isfinite(cov)):
        return _MISSING
    var = float(grad[used] @ cov @ grad[used])
    return BaselineEstimate(ate, math.sqrt(max(var, 0.0)), float(np.mean(mu_c)))


def _separated(fit: GlmFit, cols: Iterable[int]) -> set[int]:
    if fit.family == "gaussian":
        return set()
    return {
        c
        for c in cols
        if not np.isfinite(fit.coef[c])
        or abs(fit.coef[c]) > SEPARATION_LIMIT
        or not np.isfinite(fit.cov[c, c])
    }


def _glm_baseline(
    data: UnitData,
    family: str,
    types: Sequence[str],
    intensity: float,
    twins: pd.DataFrame,
    groups: Mapping[str, NDArray[np.bool_]],
    per_segment: bool,
) -> dict[str, dict[str, BaselineEstimate]]:
    rows = _analysis_rows(data, intensity)
    n_seg = len(data.segments)
    seg_rows = data.segment_dummies(rows)
    feat_rows = data.features(rows)
    itype = rows["intervention_type"].astype(str).to_numpy()
    # every treated type gets its columns, so no treated unit passes for a control
    all_types = sorted(set(itype) - {""})
    n_t = len(all_types) * (n_seg if per_segment else 1)
    treat = np.zeros((len(rows), n_t))
    seg_idx = seg_rows.argmax(axis=1)
    for j, kind in enumerate(all_types):
        mask = itype == kind
        col = j * n_seg + seg_idx[mask] if per_segment else np.full(mask.sum(), j)
        treat[np.flatnonzero(mask), col] = 1.0
    x = np.hstack([seg_rows, feat_rows, treat])
    fit = fit_glm(x, rows["y"].to_numpy(), rows["periods"].to_numpy(), family)
    offset = n_seg + feat_rows.shape[1]
    bad = _separated(fit, range(offset, offset + n_t))
    twin_seg = data.segment_dummies(twins)
    twin_seg_idx = twin_seg.argmax(axis=1)
    base = np.hstack([twin_seg, data.features(twins), np.zeros((len(twins), n_t))])
    out: dict[str, dict[str, BaselineEstimate]] = {}
    for kind in types:
        if kind not in all_types:
            out[kind] = dict.fromkeys(groups, _MISSING)
            continue
        j = all_types.index(kind)
        cols = offset + (j * n_seg + twin_seg_idx if per_segment else np.full(len(twins), j))
        res = {}
        for name, mask in groups.items():
            c = cols[mask]
            if not mask.any() or set(c.tolist()) & bad or np.isnan(fit.coef[c]).any():
                res[name] = _MISSING
            else:
                res[name] = _glm_ate(fit, base[mask], c)
        out[kind] = res
    return out


def no_pooling_glm(
    data: UnitData,
    family: str,
    types: Sequence[str],
    intensity: float,
    twins: pd.DataFrame,
    groups: Mapping[str, NDArray[np.bool_]],
) -> dict[str, dict[str, BaselineEstimate]]:
    """No-pooling GLM: one unpooled treatment coefficient per (type, segment).

    Parameters
    ----------
    data : UnitData
        The history per unit (:func:`unit_data`).
    family : str
        Outcome family.
    types : sequence of str
        Intervention types to estimate.
    intensity : float
        The intensity whose effect is estimated (only units treated at it are used).
    twins : DataFrame
        The twins (rows of the population, repeats included).
    groups : mapping of str to bool array
        Subsets of the twins to average over (e.g. ``"all"`` and each segment).

    Returns
    -------
    dict
        ``{type: {group: BaselineEstimate}}``.
    """
    return _glm_baseline(data, family, types, intensity, twins, groups, per_segment=True)


def complete_pooling_glm(
    data: UnitData,
    family: str,
    types: Sequence[str],
    intensity: float,
    twins: pd.DataFrame,
    groups: Mapping[str, NDArray[np.bool_]],
) -> dict[str, dict[str, BaselineEstimate]]:
    """Complete-pooling GLM: one treatment coefficient per type (see :func:`no_pooling_glm`)."""
    return _glm_baseline(data, family, types, intensity, twins, groups, per_segment=False)


def naive_difference(
    data: UnitData,
    types: Sequence[str],
    intensity: float,
    segments: Mapping[str, str | None],
) -> dict[str, dict[str, BaselineEstimate]]:
    """Difference in mean outcome per period, treated minus untreated units.

    Parameters
    ----------
    data : UnitData
        The history per unit.
    types : sequence of str
        Intervention types.
    intensity : float
        Only units treated at this intensity count as treated.
    segments : mapping of str to str or None
        Group name to the segment it restricts to (None: every unit).

    Returns
    -------
    dict
        ``{type: {group: BaselineEstimate}}``; the standard error is Welch's over
        units, ``sqrt(var_t / n_t + var_c / n_c)`` (``ddof=1``); no estimate with fewer
        than two units in an arm.
    """
    rows = _analysis_rows(data, intensity)
    per_period = (rows["y"] / rows["periods"]).to_numpy()
    itype = rows["intervention_type"].astype(str).to_numpy()
    seg = rows["segment"].astype(str).to_numpy()
    out: dict[str, dict[str, BaselineEstimate]] = {}
    for kind in types:
        res = {}
        for name, segment in segments.items():
            in_group = np.ones(len(rows), bool) if segment is None else seg == segment
            yt = per_period[in_group & (itype == kind)]
            yc = per_period[in_group & (itype == "")]
            if yt.size < 2 or yc.size < 2:
                res[name] = _MISSING
                continue
            se = math.sqrt(yt.var(ddof=1) / yt.size + yc.var(ddof=1) / yc.size)
            res[name] = BaselineEstimate(float(yt.mean() - yc.mean()), se, float(yc.mean()))
        out[kind] = res
    return out


def linear_dml(
    data: UnitData,
    types: Sequence[str],
    intensity: float,
    twins: pd.DataFrame,
    groups: Mapping[str, NDArray[np.bool_]],
    *,
    random_seed: int = 0,
) -> dict[str, dict[str, BaselineEstimate]] | None:
    """EconML ``LinearDML`` ATE over twins; None when econml is not installed.

    Parameters
    ----------
    data : UnitData
        The history per unit.
    types : sequence of str
        Intervention types (the treatment is categorical, untreated the baseline).
    intensity : float
        Only units treated at this intensity count as treated.
    twins : DataFrame
        The twins.
    groups : mapping of str to bool array
        Subsets of the twins to average over.
    random_seed : int
        Seed of the cross-fitting folds.

    Returns
    -------
    dict or None
        ``{type: {group: BaselineEstimate}}``; types with fewer than 2 treated units,
        or a failed fit, have no estimate.
    """
    try:
        import econml.dml  # noqa: F401
    except ImportError:
        return None
    rows = _analysis_rows(data, intensity)
    itype = rows["intervention_type"].astype(str).to_numpy()
    present = [k for k in types if (itype == k).sum() >= 2]
    keep = np.isin(itype, ["", *present])
    rows = rows[keep].reset_index(drop=True)
    itype = itype[keep]
    out: dict[str, dict[str, BaselineEstimate]] = {
        k: dict.fromkeys(groups, _MISSING) for k in types
    }
    if not present:
        return out
    controls = data.features(rows)[:, len(data.numeric) :]
    y = (rows["y"] / rows["periods"]).to_numpy()
    control_mean = float(y[itype == ""].mean())
    est = _dml_estimator(present, random_seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(
                y, itype, X=_dml_modifiers(data, rows), W=controls if controls.shape[1] else None
            )
            x_twins = _dml_modifiers(data, twins)
            for k in present:
                for name, mask in groups.items():
                    if not mask.any():
                        continue
                    inf = est.ate_inference(X=x_twins[mask], T0="", T1=k)
                    out[k][name] = BaselineEstimate(
                        float(np.ravel(inf.mean_point)[0]),
                        float(np.ravel(inf.stderr_mean)[0]),
                        control_mean,
                    )
    except (ValueError, np.linalg.LinAlgError):
        return {k: dict.fromkeys(groups, _MISSING) for k in types}
    return out


def _dml_modifiers(data: UnitData, units: pd.DataFrame) -> NDArray:
    """Effect modifiers of LinearDML: segment dummies (first dropped) and numerics."""
    seg = data.segment_dummies(units)[:, 1:]
    num = (units[data.numeric].to_numpy(dtype=float) - data.loc) / data.scale
    return np.hstack([seg, num])


def _dml_estimator(present: Sequence[str], random_seed: int) -> Any:
    """LinearDML with linear nuisance models, 2 folds, untreated as the baseline."""
    from econml.dml import LinearDML
    from sklearn.linear_model import LinearRegression, LogisticRegression

    return LinearDML(
        model_y=LinearRegression(),
        model_t=LogisticRegression(max_iter=2000),
        discrete_treatment=True,
        categories=["", *present],
        cv=2,
        random_state=random_seed,
    )
