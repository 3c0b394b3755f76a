"""Posterior draws of an intervention's population effect on weighted units.

For every posterior draw ``d``, :func:`effect_draws` computes the mean over the units
of the *expected* outcome under treatment minus the expected outcome under control::

    ATE_d = (1 / N) sum_units [E(Y | treated, unit, theta_d) - E(Y | control, unit, theta_d)]

with each unit weighted by its multiplicity (twins are drawn with replacement, so the
engine works on the ``M`` distinct source units: the averages are the same as twin by
twin, at a fraction of the cost), along with the per-segment effects, the total outcome
variances and each unit's predicted control outcome.

Computation. Units are sorted by segment and processed in chunks of at most
``batch_size`` units, fewer when a ``chunk x D`` buffer would outgrow a core's cache
(2 MiB), on worker threads (NumPy and BLAS release the GIL). Each chunk keeps its own
partial sums, added in chunk order at the end, so the numbers do not depend on the
number of threads (:mod:`bayestwin.core.effects_chunks`). For a chunk, the linear
predictors of all ``D`` draws are one matrix product ``[X, I] @ [beta.T; intercept.T]``,
where ``I`` holds an indicator column for each segment in the chunk, so the product
adds the segment terms too (the treated arm folds the dose-response factor ``g_d(s)``
into its coefficients and segment terms); the inverse link is applied in place (the
logit link as ``1 + tanh(eta / 2)``: two passes instead of four, the factor 1/2 applied
after the sums); the weighted sums over units (per segment, and of squares for the
variances) are matrix-vector products. Memory is bounded by a few ``chunk x D`` buffers
per thread, and BLAS runs on one thread there by default.

Precision. The buffers are float32 by default and each chunk's sums are accumulated in
float64. Against float64 arithmetic, ATE draws differ by about 1e-6 relative (absolute
about 1e-6 of the control mean for draws near 0), and by up to a few 1e-3 relative for
rare bernoulli outcomes (base rate near 0.1%) in the worst case of identical units;
tiny next to posterior uncertainty. Pass ``dtype=np.float64`` for full precision.
Nothing builds a PyMC graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from bayestwin.core.effects_chunks import (
    CHUNK_BUFFER_BYTES,
    ChunkPlan,
    LinkTerms,
    Totals,
    reduce_chunks,
    run_chunks,
)
from bayestwin.core.posterior import TwinPosterior, dose_response_draws
from bayestwin.core.power import outcome_variance_from_moments
from bayestwin.core.unit_effects import UnitOffsets

__all__ = ["EffectDraws", "EncodedUnits", "average_effect_draws", "effect_draws"]


@dataclass(frozen=True)
class EffectDraws:
    """Posterior draws of the population effect on a weighted set of units.

    Attributes
    ----------
    intensities : ndarray, shape (G,)
        Intensities computed; the first is the main one.
    ate : ndarray, shape (G, D)
        Population ATE per intensity and draw (natural scale).
    control_mean, treated_mean : ndarray, shape (D,)
        Mean expected outcome under control and under the main intensity.
    segment_counts : ndarray, shape (S,)
        Weight (twins) per model segment.
    segment_ate, segment_control_mean : ndarray, shape (D, S)
        Same per segment (NaN for segments with no twin).
    var_control, var_treated : ndarray, shape (D,)
        Total outcome variance (unit variance plus between-unit variance).
    predicted_control : ndarray, shape (M,)
        Posterior mean of each unit's expected control outcome.
    weights : ndarray, shape (M,)
        Multiplicity of each unit.
    """

    intensities: NDArray
    ate: NDArray
    control_mean: NDArray
    treated_mean: NDArray
    segment_counts: NDArray
    segment_ate: NDArray
    segment_control_mean: NDArray
    var_control: NDArray
    var_treated: NDArray
    predicted_control: NDArray
    weights: NDArray

    @property
    def lift(self) -> NDArray:
        """Relative lift ``ate / |control_mean|``, shape (G, D)."""
        return self.ate / np.abs(self.control_mean)[None, :]

    @property
    def segment_lift(self) -> NDArray:
        """Relative lift per segment, shape (D, S)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.segment_ate / np.abs(self.segment_control_mean)


@dataclass(frozen=True)
class EncodedUnits:
    """Units as model inputs: the encoded features and the segment index.

    Attributes
    ----------
    x : ndarray, shape (N, P)
        Standardised numerics then categorical dummies (``FeatureEncoder.encode``).
    segment : ndarray of intp, shape (N,)
        Index of each unit's segment.
    """

    x: NDArray
    segment: NDArray[np.intp]

    def __len__(self) -> int:
        return int(self.segment.shape[0])

    @classmethod
    def from_frame(cls, posterior: TwinPosterior, units: pd.DataFrame) -> EncodedUnits:
        """Encode a DataFrame of units with the posterior's encoder."""
        x, _, seg = posterior.encoder.encode(units)
        return cls(x=x, segment=seg)

    def take(self, rows: NDArray[np.intp]) -> EncodedUnits:
        """The units at positions ``rows``."""
        return EncodedUnits(x=self.x[rows], segment=self.segment[rows])


@dataclass(frozen=True)
class _Scale:
    """``mu = loc + scale * r`` maps the kernel's link values ``r`` to the outcome."""

    loc: float
    scale: float


def _check_levels(intensities: Sequence[float] | float) -> NDArray:
    levels = np.atleast_1d(np.asarray(intensities, dtype=float))
    if levels.size == 0 or not np.all(np.isfinite(levels)) or (levels < 0).any():
        raise ValueError(f"intensities must be finite and >= 0, got {levels.tolist()}")
    return levels


def _check_weights(weights: ArrayLike | None, n_units: int) -> NDArray:
    if n_units == 0:
        raise ValueError("no units to simulate")
    w = np.ones(n_units) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (n_units,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must hold one non-negative weight per unit, not all 0")
    return w


def _encoded(posterior: TwinPosterior, units: pd.DataFrame | EncodedUnits) -> EncodedUnits:
    encoded = (
        units if isinstance(units, EncodedUnits) else EncodedUnits.from_frame(posterior, units)
    )
    n_cols = len(posterior.encoder.columns)
    if encoded.x.shape[1] != n_cols:
        raise ValueError(
            f"encoded units have {encoded.x.shape[1]} columns; the encoder has {n_cols}"
        )
    return encoded


def _chunk_plan(
    encoded: EncodedUnits,
    w: NDArray,
    n_segments: int,
    n_draws: int,
    batch_size: int,
    dtype: type[np.floating],
    unit_offset: NDArray | UnitOffsets | None = None,
) -> tuple[ChunkPlan, NDArray[np.intp]]:
    """Units sorted by segment (each segment one contiguous block) and their chunks.

    ``unit_offset`` (M, D), already on the kernel's scale, is sorted with the units.
    """
    seg = encoded.segment
    order = np.argsort(seg, kind="stable")
    n_units = len(encoded)
    # at most batch_size units per chunk, and few enough that a chunk's buffer stays
    # in a core's cache: the passes over it then run at cache, not memory, speed
    cache_rows = max(16, CHUNK_BUFFER_BYTES // (n_draws * np.dtype(dtype).itemsize))
    plan = ChunkPlan(
        design=np.ascontiguousarray(encoded.x[order], dtype=dtype),
        weights=w[order].astype(dtype),
        bounds=np.searchsorted(seg[order], np.arange(n_segments + 1)).tolist(),
        chunk_rows=min(batch_size, cache_rows, n_units),
        n_draws=n_draws,
        unit_offset=None if unit_offset is None else _sorted_offset(unit_offset, order, dtype),
    )
    return plan, order


def _sorted_offset(
    unit_offset: NDArray | UnitOffsets, order: NDArray[np.intp], dtype: type[np.floating]
) -> NDArray | UnitOffsets:
    """The units' offsets in the plan's order, in the working dtype (one copy)."""
    if isinstance(unit_offset, UnitOffsets):
        return unit_offset.take(order, dtype)
    return np.ascontiguousarray(unit_offset[order].astype(dtype, copy=False))


def _link_terms(
    posterior: TwinPosterior, k: int, levels: NDArray, dtype: type[np.floating]
) -> tuple[LinkTerms, _Scale]:
    """The coefficients of each arm on the kernel's scale, and the map back.

    ``eta = offset[segment] + X @ coef``; the treated arm folds ``g_d(s)`` into both
    terms. The kernel reduces ``r = link_fn(eta)`` with ``mu = loc + scale * r``. For
    the logit link, ``expit(x) = (1 + tanh(x / 2)) / 2``: halve the coefficients, take
    ``1 + tanh`` (two passes instead of four) and fold the 1/2 into the scale. Keeping
    the "1 +" in the kernel keeps small probabilities at full relative precision in the
    float32 sums.
    """
    half = posterior.family == "bernoulli"
    scale = 0.5 * posterior.outcome_scale if half else posterior.outcome_scale
    eta_factor = 0.5 if half else 1.0
    het = np.zeros_like(posterior.beta)
    het[:, : len(posterior.encoder.numeric)] = posterior.gamma[:, k, :]
    tau_k = posterior.tau[:, k, :]
    g = dose_response_draws(levels, posterior.dose_rate, posterior.dose_jump)  # (D, G)

    def terms(beta: NDArray, intercept: NDArray) -> tuple[NDArray, NDArray]:
        return (
            np.ascontiguousarray(eta_factor * beta.T, dtype=dtype),
            np.ascontiguousarray(eta_factor * intercept.T, dtype=dtype),
        )

    link = LinkTerms(
        family=posterior.family,
        half_tanh=half,
        control=terms(posterior.beta, posterior.intercept),
        treated=[
            terms(posterior.beta + g[:, j, None] * het, posterior.intercept + g[:, j, None] * tau_k)
            for j in range(levels.size)
        ],
    )
    return link, _Scale(loc=posterior.outcome_loc, scale=scale)


def _assemble(
    posterior: TwinPosterior,
    tot: Totals,
    levels: NDArray,
    encoded: EncodedUnits,
    w: NDArray,
    order: NDArray[np.intp],
    sc: _Scale,
) -> EffectDraws:
    """Population and segment effects, variances and predictions from the totals."""
    loc, scale = sc.loc, sc.scale
    total_w = float(w.sum())
    tot_c = tot.control.sum(axis=0)
    sums_dose = tot.dose
    sums_dose[0] = tot.treated.sum(axis=0)
    mean_c = tot_c / total_w
    mean_t = sums_dose[0] / total_w
    ate = scale * (sums_dose - tot_c[None, :]) / total_w
    if not np.all(np.isfinite(ate)):
        raise FloatingPointError(
            "expected outcomes overflowed; the posterior gives extreme linear predictors "
            "(try dtype=np.float64)"
        )
    n_seg = len(posterior.encoder.segments)
    seg_counts = np.bincount(encoded.segment, weights=w, minlength=n_seg).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        seg_ate = (scale * (tot.treated - tot.control) / seg_counts[:, None]).T
        seg_ctrl = (loc + scale * tot.control / seg_counts[:, None]).T

    fam = posterior.family
    disp = posterior.natural_dispersion()

    def natural_m2(mean: NDArray, m2: NDArray) -> NDArray | None:
        if fam == "bernoulli":
            return None
        return loc * loc + 2.0 * loc * scale * mean + scale * scale * m2 / total_w

    nat_c = loc + scale * mean_c
    nat_t = loc + scale * mean_t
    var_c = outcome_variance_from_moments(fam, nat_c, natural_m2(mean_c, tot.m2_control), disp)
    var_t = outcome_variance_from_moments(fam, nat_t, natural_m2(mean_t, tot.m2_treated), disp)
    pred = np.empty(len(encoded))
    pred[order] = tot.predicted
    return EffectDraws(
        intensities=levels,
        ate=ate,
        control_mean=nat_c,
        treated_mean=nat_t,
        segment_counts=seg_counts,
        segment_ate=seg_ate,
        segment_control_mean=seg_ctrl,
        var_control=np.asarray(var_c),
        var_treated=np.asarray(var_t),
        predicted_control=loc + scale * pred,
        weights=w,
    )


def effect_draws(
    posterior: TwinPosterior,
    units: pd.DataFrame | EncodedUnits,
    intervention_type: str,
    intensities: Sequence[float] | float = 1.0,
    *,
    weights: ArrayLike | None = None,
    batch_size: int = 1000,
    dtype: type[np.floating] = np.float32,
    blas_threads: int | None = 1,
    threads: int | None = None,
    unit_offset: NDArray | UnitOffsets | None = None,
) -> EffectDraws:
    """Population effect draws of an intervention on weighted units.

    Parameters
    ----------
    posterior : TwinPosterior
        The posterior draws.
    units : DataFrame or EncodedUnits
        Distinct units (the encoder's raw columns), or the same already encoded.
    intervention_type : str
        Intervention known to the posterior.
    intensities : float or sequence of float
        Intensities (>= 0); the first is the main one (segments and variances).
    weights : array_like, optional
        Multiplicity of each unit (default 1); the result is the weighted average.
    batch_size : int
        Units per vectorised chunk.
    dtype : numpy floating type
        dtype of the ``batch_size x D`` buffers (float32 or float64).
    blas_threads : int, optional
        BLAS threads inside the loop (None: the process setting). The products are
        thin and memory-bound, so one thread loses little on an idle machine and
        avoids the collapse of busy-waiting BLAS threads on a shared one.
    threads : int, optional
        Worker threads that run the chunks (None: one per CPU, at most
        :data:`~bayestwin.core.effects_chunks.MAX_THREADS`; 1: in the calling thread).
        The NumPy and BLAS kernels release the GIL, so chunks run in parallel. Each
        chunk keeps its own partial sums, added in chunk order at the end: the result
        is bit-identical whatever the number of threads.
    unit_offset : ndarray or UnitOffsets, shape (M, D), optional
        A link-scale term per unit and draw added to both arms: the units' own
        deviations of a panel model (:class:`~bayestwin.core.unit_effects.UnitEffects`;
        as :class:`~bayestwin.core.unit_effects.UnitOffsets` they are written per chunk
        of units, in cache, and never held as a whole).

    Returns
    -------
    EffectDraws
    """
    k = posterior.type_index(intervention_type)
    levels = _check_levels(intensities)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    w = _check_weights(weights, len(units))
    encoded = _encoded(posterior, units)
    if unit_offset is not None:
        if not isinstance(unit_offset, UnitOffsets):
            unit_offset = np.asarray(unit_offset)
        if unit_offset.shape != (len(encoded), posterior.n_draws):
            raise ValueError(
                f"unit_offset has shape {unit_offset.shape}, expected "
                f"{(len(encoded), posterior.n_draws)}"
            )
    plan, order = _chunk_plan(
        encoded,
        w,
        len(posterior.encoder.segments),
        posterior.n_draws,
        batch_size,
        dtype,
        unit_offset,
    )
    if plan.unit_offset is not None and posterior.family == "bernoulli":
        # the kernel's half-tanh scale, on the plan's own copy
        if isinstance(plan.unit_offset, UnitOffsets):
            plan = dataclasses.replace(plan, unit_offset=plan.unit_offset.scaled(0.5))
        else:
            np.multiply(plan.unit_offset, 0.5, out=plan.unit_offset)
    link, sc = _link_terms(posterior, k, levels, dtype)
    parts = run_chunks(plan, link, threads=threads, blas_threads=blas_threads)
    totals = reduce_chunks(plan, parts, levels.size)
    return _assemble(posterior, totals, levels, encoded, w, order, sc)


def average_effect_draws(
    parts: Sequence[EffectDraws], weights: Sequence[float] | None = None
) -> EffectDraws:
    """The effect draws of the same units pooled over periods, or over intensities.

    Means are averaged with the weights; the outcome variances are those of the pooled
    outcomes: the weighted average of each part's second moment less the squared
    pooled mean. Pooled over periods, the parts are one per period (equal weights);
    over a mixed-intensity arm, one per intensity of the arm (weights: their shares).

    Parameters
    ----------
    parts : sequence of EffectDraws
        On the same units and intensity grid.
    weights : sequence of float, optional
        Non-negative, one per part (default equal); they are normalised.

    Returns
    -------
    EffectDraws
        ``parts[0]`` itself when there is one part.
    """
    if not parts:
        raise ValueError("no effect draws to average")
    if len(parts) == 1:
        return parts[0]
    w = np.ones(len(parts)) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (len(parts),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must hold one non-negative weight per part, not all 0")
    w = w / w.sum()

    def mean(name: str) -> NDArray:
        return np.tensordot(w, np.stack([getattr(p, name) for p in parts]), axes=1)

    def pooled_var(var: str, mu: str) -> NDArray:
        m2 = np.stack([getattr(p, var) + getattr(p, mu) ** 2 for p in parts])
        return np.maximum(np.tensordot(w, m2, axes=1) - mean(mu) ** 2, 0.0)

    first = parts[0]
    return EffectDraws(
        intensities=first.intensities,
        ate=mean("ate"),
        control_mean=mean("control_mean"),
        treated_mean=mean("treated_mean"),
        segment_counts=first.segment_counts,
        segment_ate=mean("segment_ate"),
        segment_control_mean=mean("segment_control_mean"),
        var_control=pooled_var("var_control", "control_mean"),
        var_treated=pooled_var("var_treated", "treated_mean"),
        predicted_control=mean("predicted_control"),
        weights=first.weights,
    )
