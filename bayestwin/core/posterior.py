"""Posterior draws of a twin model as plain NumPy arrays, and the feature encoding.

:class:`TwinPosterior` is the hand-off between fitting and everything downstream: the
generator turns a PyMC trace into one, the simulation engine and power calculations
read its arrays, and tests build one directly (for example centred on a synthetic
ground truth, :func:`bayestwin.synthetic.truth_posterior`) without sampling anything.

The linear predictor for unit ``i`` under intervention ``k`` at intensity ``s``, for
posterior draw ``d`` (DESIGN.md, "The statistics")::

    eta[d, i] = intercept[d, seg_i] + X_i . beta[d]
                + 1{treated} * g_d(s) * (tau[d, k, seg_i] + Z_i . gamma[d, k])
    g_d(s)    = delta_d + (1 - delta_d) * (1 - exp(-dose_rate[d] * s)) / (1 - exp(-dose_rate[d]))
                (s > 0; g_d(0) = 0)

``delta`` (``dose_jump``) is the share of the full effect that the first contact brings
(0 when the model has no jump). A panel model adds each twin's unit deviation and the
period shift at the simulation's horizon to ``eta``
(:mod:`bayestwin.core.unit_effects`).

``X`` holds the standardised numeric features followed by the one-hot categorical
levels (the first level of each categorical is the reference); ``Z`` holds the
standardised numeric features alone. The mean outcome is
``outcome_loc + outcome_scale * inverse_link(eta)`` (``outcome_loc = 0`` and
``outcome_scale = 1`` except for a gaussian outcome fitted on a standardised scale).

Pure NumPy and pandas: this module imports nothing from PyMC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.core.families import Family, check_family, inverse_link
from bayestwin.core.unit_effects import UnitEffects, time_effect_draws

__all__ = ["FeatureEncoder", "SegmentHyper", "TwinPosterior", "dose_response_draws"]


def dose_response_draws(
    intensity: float | NDArray, rate: NDArray, jump: NDArray | None = None
) -> NDArray:
    """``g(s)`` for every draw of the dose rate (and of the first-contact jump).

    Parameters
    ----------
    intensity : float or ndarray
        Intensity ``s >= 0`` (scalar or shape ``(N,)``).
    rate : ndarray
        Dose-rate draws, shape ``(D,)``, all > 0.
    jump : ndarray, optional
        Draws of ``delta`` in [0, 1], shape ``(D,)``: the share of the effect at
        intensity 1 that any positive intensity brings. None: no jump.

    Returns
    -------
    ndarray
        Shape ``(D,)`` for a scalar intensity, ``(D, N)`` for an array.
    """
    r = np.asarray(rate, dtype=float)
    s = np.asarray(intensity, dtype=float)
    if s.ndim == 0:
        g = np.expm1(-r * s) / np.expm1(-r)
        if jump is not None and s > 0:
            g = jump + (1.0 - jump) * g
        return g
    g = np.expm1(-r[:, None] * s[None, :]) / np.expm1(-r)[:, None]
    if jump is not None:
        j = np.asarray(jump, dtype=float)[:, None]
        g = np.where(s[None, :] > 0, j + (1.0 - j) * g, 0.0)
    return g


@dataclass(frozen=True)
class FeatureEncoder:
    """How a unit's raw columns become model inputs.

    Attributes
    ----------
    numeric : tuple of str
        Numeric feature columns, standardised by ``loc`` and ``scale``.
    loc, scale : ndarray
        Standardisation constants, one per numeric column.
    categorical : dict of str to tuple of str
        Categorical columns and their levels; the first level is the reference.
    segment_column : str
        The grouping column.
    segments : tuple of str
        Known segments, in model order.
    """

    numeric: tuple[str, ...]
    loc: NDArray
    scale: NDArray
    categorical: dict[str, tuple[str, ...]] = field(default_factory=dict)
    segment_column: str = "segment"
    segments: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        """Names of the columns of ``X`` (numeric, then ``col[level]`` dummies)."""
        names = list(self.numeric)
        for col, levels in self.categorical.items():
            names.extend(f"{col}[{lvl}]" for lvl in levels[1:])
        return names

    @property
    def raw_columns(self) -> list[str]:
        """The raw columns a unit must have."""
        return [self.segment_column, *self.numeric, *self.categorical]

    def check_columns(self, units: pd.DataFrame) -> None:
        """Raise ``ValueError`` naming any raw column ``units`` lacks."""
        missing = [c for c in self.raw_columns if c not in units.columns]
        if missing:
            raise ValueError(f"units lack the column(s) {missing}; needed: {self.raw_columns}")

    def segment_index(self, units: pd.DataFrame) -> NDArray[np.intp]:
        """Index of each unit's segment in :attr:`segments`."""
        codes = pd.Categorical(units[self.segment_column], categories=self.segments).codes
        if (codes < 0).any():
            bad = sorted(set(units[self.segment_column][codes < 0].astype(str)))[:5]
            raise ValueError(
                f"{self.segment_column} has values unknown to the model: {bad}; "
                f"known: {list(self.segments)}"
            )
        return codes.astype(np.intp)

    def encode(
        self, units: pd.DataFrame, dtype: type[np.floating] = np.float64
    ) -> tuple[NDArray, NDArray, NDArray[np.intp]]:
        """Encode units as ``(X, Z, segment_index)``.

        Parameters
        ----------
        units : DataFrame
            Rows with :attr:`raw_columns`.
        dtype : numpy floating type
            dtype of ``X`` and ``Z``.

        Returns
        -------
        X : ndarray, shape (N, P)
            Standardised numerics then categorical dummies.
        Z : ndarray, shape (N, P_numeric)
            Standardised numerics (a view into ``X``).
        segment_index : ndarray of intp, shape (N,)
        """
        self.check_columns(units)
        n = len(units)
        x = np.empty((n, len(self.columns)), dtype=dtype)
        p = len(self.numeric)
        if p:
            raw = units[list(self.numeric)].to_numpy(dtype=float)
            x[:, :p] = (raw - self.loc) / self.scale
        j = p
        for col, levels in self.categorical.items():
            codes = pd.Categorical(units[col], categories=levels).codes
            if (codes < 0).any():
                bad = sorted(set(units[col][codes < 0].astype(str)))[:5]
                raise ValueError(f"column {col!r} has unknown levels {bad}; known: {list(levels)}")
            for lvl_i in range(1, len(levels)):
                x[:, j] = codes == lvl_i
                j += 1
        return x, x[:, :p], self.segment_index(units)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready representation."""
        return {
            "numeric": list(self.numeric),
            "loc": [float(v) for v in self.loc],
            "scale": [float(v) for v in self.scale],
            "categorical": {k: list(v) for k, v in self.categorical.items()},
            "segment_column": self.segment_column,
            "segments": list(self.segments),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> FeatureEncoder:
        """Inverse of :meth:`to_dict`."""
        cat = data.get("categorical") or {}
        assert isinstance(cat, Mapping)
        return cls(
            numeric=tuple(data["numeric"]),  # type: ignore[arg-type]
            loc=np.asarray(data["loc"], dtype=float),
            scale=np.asarray(data["scale"], dtype=float),
            categorical={str(k): tuple(v) for k, v in cat.items()},
            segment_column=str(data.get("segment_column", "segment")),
            segments=tuple(data["segments"]),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class SegmentHyper:
    """Population distribution of the segment terms: what an unseen segment draws.

    Attributes
    ----------
    intercept_mean, intercept_sd : ndarray, shape (D,)
        ``mu_a`` and ``sigma_a`` (0 for a model fitted on one segment).
    tau_type : ndarray, shape (D, K)
        The type means of the effects.
    tau_sd : ndarray, shape (D,)
        ``sigma_seg`` (0 for a model fitted on one segment).
    """

    intercept_mean: NDArray
    intercept_sd: NDArray
    tau_type: NDArray
    tau_sd: NDArray


@dataclass(frozen=True)
class TwinPosterior:
    """Posterior draws of one twin model, flattened over chains.

    Attributes
    ----------
    family : str
        Outcome family (see :mod:`bayestwin.core.families`).
    encoder : FeatureEncoder
        The feature encoding.
    intervention_types : tuple of str
        Known intervention types, in model order.
    intercept : ndarray, shape (D, S)
    beta : ndarray, shape (D, P)
    tau : ndarray, shape (D, K, S)
        Effect of type ``k`` in segment ``s`` at intensity 1, link scale.
    gamma : ndarray, shape (D, K, P_numeric)
        Covariate-by-treatment interactions.
    dose_rate : ndarray, shape (D,)
    dispersion : ndarray of shape (D,), optional
        ``alpha`` (neg_binomial) or ``sigma`` on the model's scale (gaussian).
    outcome_loc, outcome_scale : float
        Mean outcome is ``outcome_loc + outcome_scale * inverse_link(eta)``.
    dose_jump : ndarray of shape (D,), optional
        The first-contact jump ``delta`` of the dose response (None: no jump).
    unit_effects : UnitEffects, optional
        The units' deviations of a panel model (None: a cross-sectional model).
    time_scale : ndarray of shape (D,), optional
        Innovation sd of the period effects' random walk (None: no time effects).
    time_drift : ndarray of shape (D,), optional
        The random walk's drift, its mean step (None: no drift).
    season_ahead : ndarray of shape (D, S), optional
        The seasonal part of the period shift ``h = 1..S`` periods after the history
        (column ``h - 1``; it repeats with period ``S``), on top of the walk's steps
        (None: no seasonal wave).
    segment_hyper : SegmentHyper, optional
        The segment terms' population distribution (None: unseen segments are refused).
    """

    family: Family
    encoder: FeatureEncoder
    intervention_types: tuple[str, ...]
    intercept: NDArray
    beta: NDArray
    tau: NDArray
    gamma: NDArray
    dose_rate: NDArray
    dispersion: NDArray | None = None
    outcome_loc: float = 0.0
    outcome_scale: float = 1.0
    dose_jump: NDArray | None = None
    unit_effects: UnitEffects | None = None
    time_scale: NDArray | None = None
    time_drift: NDArray | None = None
    season_ahead: NDArray | None = None
    segment_hyper: SegmentHyper | None = None

    def __post_init__(self) -> None:
        check_family(self.family)
        d = self.intercept.shape[0]
        s = len(self.encoder.segments)
        k = len(self.intervention_types)
        p = len(self.encoder.columns)
        pn = len(self.encoder.numeric)
        expected = {
            "intercept": (d, s),
            "beta": (d, p),
            "tau": (d, k, s),
            "gamma": (d, k, pn),
            "dose_rate": (d,),
        }
        for name, shape in expected.items():
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(f"{name} has shape {got}, expected {shape}")
        if self.dispersion is not None and self.dispersion.shape != (d,):
            raise ValueError(f"dispersion has shape {self.dispersion.shape}, expected {(d,)}")
        for name in ("dose_jump", "time_scale", "time_drift"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != (d,):
                raise ValueError(f"{name} has shape {arr.shape}, expected {(d,)}")
        if self.season_ahead is not None and (
            self.season_ahead.ndim != 2 or self.season_ahead.shape[0] != d
        ):
            raise ValueError(f"season_ahead has shape {self.season_ahead.shape}, expected ({d}, S)")
        if self.unit_effects is not None and self.unit_effects.n_draws != d:
            raise ValueError(f"unit_effects has {self.unit_effects.n_draws} draws, expected {d}")
        if self.family in ("neg_binomial", "gaussian") and self.dispersion is None:
            raise ValueError(f"family {self.family!r} needs dispersion draws")

    @property
    def n_draws(self) -> int:
        """Number of posterior draws ``D``."""
        return int(self.intercept.shape[0])

    def period_shifts(self, horizon: int, rng: np.random.Generator) -> list[NDArray | None]:
        """Draws of the period shift in each of the ``horizon`` periods after the history.

        Parameters
        ----------
        horizon : int
            Periods ahead (>= 1).
        rng : numpy Generator
            The random stream of the walk's fresh steps.

        Returns
        -------
        list
            One ``(D,)`` array per period ahead: the random walk's steps with its
            drift and the seasonal wave's change
            (:func:`~bayestwin.core.unit_effects.time_effect_draws`); ``[None]`` for a
            model without period effects.
        """
        if self.time_scale is None:
            return [None]
        return list(
            time_effect_draws(self.time_scale, horizon, rng, self.season_ahead, self.time_drift)
        )

    def with_segments(self, segments: list[str], rng: np.random.Generator) -> TwinPosterior:
        """Return the posterior with ``segments`` added, their terms drawn from the population.

        Each new segment's intercept draws ``Normal(mu_a, sigma_a)`` and its effects
        ``Normal(tau_type, sigma_seg)``, draw by draw: a unit of a segment the history
        lacks is then simulated with the uncertainty such a segment has.

        Parameters
        ----------
        segments : list of str
            Segments the encoder lacks.
        rng : numpy Generator
            The random stream.

        Raises
        ------
        ValueError
            When the posterior carries no :class:`SegmentHyper`.
        """
        new = [s for s in dict.fromkeys(segments) if s not in self.encoder.segments]
        if not new:
            return self
        hyper = self.segment_hyper
        if hyper is None:
            raise ValueError(
                f"{self.encoder.segment_column} has values unknown to the model: {new[:5]}; "
                f"known: {list(self.encoder.segments)}"
            )
        d, n, k = self.n_draws, len(new), len(self.intervention_types)
        a_new = hyper.intercept_mean[:, None] + hyper.intercept_sd[:, None] * rng.standard_normal(
            (d, n)
        )
        tau_new = hyper.tau_type[:, :, None] + hyper.tau_sd[:, None, None] * rng.standard_normal(
            (d, k, n)
        )
        enc = replace(self.encoder, segments=(*self.encoder.segments, *new))
        return replace(
            self,
            encoder=enc,
            intercept=np.concatenate([self.intercept, a_new], axis=1),
            tau=np.concatenate([self.tau, tau_new], axis=2),
        )

    def type_index(self, intervention_type: str) -> int:
        """Index of an intervention type; a clear ``ValueError`` if unknown."""
        try:
            return self.intervention_types.index(intervention_type)
        except ValueError:
            raise ValueError(
                f"unknown intervention_type {intervention_type!r}; this model knows "
                f"{', '.join(self.intervention_types)}"
            ) from None

    def linear_predictor(
        self,
        units: pd.DataFrame,
        intervention_type: str | None = None,
        intensity: float = 1.0,
    ) -> NDArray:
        """Linear predictor, shape ``(D, N)``; ``intervention_type=None`` is control.

        This is the plain reference computation; :mod:`bayestwin.core.effects` has the
        chunked, memory-bounded version used for large twin counts.
        """
        if intensity < 0:
            raise ValueError(f"intensity must be >= 0, got {intensity}")
        x, z, seg = self.encoder.encode(units)
        eta = self.intercept[:, seg] + self.beta @ x.T
        if intervention_type:
            k = self.type_index(intervention_type)
            g = dose_response_draws(intensity, self.dose_rate, self.dose_jump)
            eta = eta + g[:, None] * (self.tau[:, k, seg] + self.gamma[:, k, :] @ z.T)
        return eta

    def expected_outcome(
        self,
        units: pd.DataFrame,
        intervention_type: str | None = None,
        intensity: float = 1.0,
    ) -> NDArray:
        """Expected outcome per unit and draw, shape ``(D, N)``, natural scale."""
        mu = inverse_link(self.family, self.linear_predictor(units, intervention_type, intensity))
        return self.outcome_loc + self.outcome_scale * mu

    def natural_dispersion(self) -> NDArray | None:
        """Dispersion draws on the outcome's natural scale (gaussian sigma rescaled)."""
        if self.dispersion is None:
            return None
        if self.family == "gaussian":
            return self.dispersion * self.outcome_scale
        return self.dispersion
