"""SimulationEngine: posterior effect of an intervention on digital twins, and a decision.

Which number is which (the output contract of this module):

**Population ATE** (:func:`effect_draws`, ``SimulationResult.simulated_ate`` and its
interval). For every posterior draw ``d``, the mean over the twins of the *expected*
outcome under treatment minus the expected outcome under control::

    ATE_d = (1 / N) sum_twins [E(Y | treated, unit, theta_d) - E(Y | control, unit, theta_d)]
    lift_d = ATE_d / |control mean_d|

It carries posterior uncertainty only: no outcome noise, no sampling of units into arms.
``simulated_ate`` is the posterior **median** of ``ATE_d`` (robust to skewed posteriors,
and the effect at which the classic sample size is computed); the interval is the
equal-tailed credible interval at ``confidence_level``; ``relative_lift`` is the median
of ``lift_d``.

**Observed-experiment predictive** (:func:`observed_ate_predictive`). The ATE that a
real two-arm test with ``n_treatment`` and ``n_control`` units would *report*: each
population ATE draw plus normal sampling noise with standard error
``sqrt(sd_treated**2 / n_treatment + sd_control**2 / n_control)``, the per-arm sds being
the total outcome sds of the eligible population (unit variance plus between-unit
variance of expected outcomes). The fidelity tracker compares real results with this
wider distribution, never with the population interval.

**Threshold.** ``min_effect_threshold`` (spec 7: "Skip if ATE < 5%") applies to the
*relative* lift: ``P(lift > min_effect_threshold)`` drives the decision (see
:func:`decide`).

Computation. Twins are drawn with replacement, so the engine works on the ``M`` distinct
source units weighted by their multiplicity: the averages are the same as twin by twin,
at a fraction of the cost. Units are sorted by segment and processed in chunks of at
most ``batch_size`` units, fewer when a ``chunk x D`` buffer would outgrow a core's cache
(2 MiB), on worker threads (NumPy and BLAS release the GIL). Each chunk keeps its own
partial sums, added in chunk order at the end, so the numbers do not depend on the
number of threads. For a chunk, the linear predictors of all ``D`` draws are one matrix
product ``[X, I] @ [beta.T; intercept.T]``, where ``I`` holds an indicator column for each
segment in the chunk, so the product adds the segment terms too (the treated arm folds
the dose-response factor ``g_d(s)`` into its coefficients and segment terms); the inverse
link is applied in place (the logit link as ``1 + tanh(eta / 2)``: two passes instead
of four, the factor 1/2 applied after the sums); the weighted sums over units (per
segment, and of squares for the variances) are matrix-vector products. Memory is
bounded by a few ``chunk x D`` buffers per thread, and BLAS runs on one thread there by
default (see :func:`effect_draws`).

Precision. The buffers are float32 by default and each chunk's sums are accumulated in
float64. Against float64 arithmetic, ATE draws differ by about 1e-6 relative (absolute
about 1e-6 of the control mean for draws near 0), and by up to a few 1e-3 relative for
rare bernoulli outcomes (base rate near 0.1%) in the worst case of identical units;
tiny next to posterior uncertainty. Pass ``dtype=np.float64`` to
:class:`SimulationEngine` for full precision. Nothing builds a PyMC graph.

Randomness: the only random step is the draw of twins, seeded by ``random_seed``; the
same seed gives bit-identical numbers.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from bayestwin.settings import Settings, load_settings
from bayestwin.core.families import inverse_link
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.core.population import draw_twins
from bayestwin.core.posterior import TwinPosterior, dose_response_draws
from bayestwin.core.power import (
    n_per_arm,
    outcome_variance_from_moments,
    prognostic_rho2,
    sample_size_report,
)
from bayestwin.schemas import (
    DosePoint,
    EffectPrior,
    InterventionConfig,
    SampleSizeReport,
    SegmentEffect,
    SimulationResult,
    utcnow,
)
from bayestwin.vocabulary import Recommendation, SimulationStatus

__all__ = [
    "DEFAULT_DOSE_GRID",
    "PRIOR_QUANTILES",
    "Decision",
    "EffectDraws",
    "EncodedUnits",
    "SimulationEngine",
    "decide",
    "default_dose_grid",
    "effect_draws",
    "equal_tailed_interval",
    "observed_ate_predictive",
    "observed_ate_se",
]

#: Intensities of the default dose-response grid (the config's intensity is added).
DEFAULT_DOSE_GRID: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
#: Quantiles of the ATE kept in the :class:`~bayestwin.schemas.EffectPrior`.
PRIOR_QUANTILES: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)


# -- small pure functions ------------------------------------------------------------------
def equal_tailed_interval(draws: ArrayLike, prob: float = 0.95) -> tuple[float, float]:
    """Equal-tailed interval holding ``prob`` of the draws.

    Parameters
    ----------
    draws : array_like
        Posterior draws (flattened).
    prob : float
        Probability mass in (0, 1).

    Returns
    -------
    (float, float)
        The ``(1 - prob) / 2`` and ``(1 + prob) / 2`` quantiles (linear interpolation).
    """
    if not 0.0 < prob < 1.0:
        raise ValueError(f"prob must be in (0, 1), got {prob}")
    arr = np.asarray(draws, dtype=float).ravel()
    lo, hi = np.quantile(arr, [(1.0 - prob) / 2.0, (1.0 + prob) / 2.0])
    return float(lo), float(hi)


def default_dose_grid(intensity: float) -> tuple[float, ...]:
    """The default dose-response grid: :data:`DEFAULT_DOSE_GRID` plus ``intensity``."""
    grid = {float(v) for v in DEFAULT_DOSE_GRID}
    if intensity > 0:
        grid.add(float(intensity))
    return tuple(sorted(grid))


@dataclass(frozen=True)
class Decision:
    """A recommendation and the sentence that explains it."""

    recommendation: Recommendation
    rationale: str


def decide(
    prob_above: float,
    *,
    min_effect_threshold: float,
    confidence_threshold: float,
    needed_sample: int | None = None,
    eligible_population: int | None = None,
) -> Decision:
    """The decision rule of DESIGN.md.

    * deploy (run the real test) when ``P(lift > threshold) >= confidence_threshold``
      and the test fits in the eligible population;
    * skip when ``P(lift > threshold) <= 1 - confidence_threshold``;
    * refine otherwise, and when the needed sample exceeds the eligible population.

    Parameters
    ----------
    prob_above : float
        Posterior probability that the relative lift exceeds the threshold.
    min_effect_threshold : float
        The threshold on the relative lift (for the rationale).
    confidence_threshold : float
        In [0.5, 1): the probability needed to deploy (and, mirrored, to skip).
    needed_sample : int, optional
        Units the real test needs (both arms together).
    eligible_population : int, optional
        Units eligible for it.

    Returns
    -------
    Decision
    """
    if not 0.0 <= prob_above <= 1.0:
        raise ValueError(f"prob_above must be in [0, 1], got {prob_above}")
    if not 0.5 <= confidence_threshold < 1.0:
        raise ValueError(
            f"confidence_threshold must be in [0.5, 1) for the decision rule, got "
            f"{confidence_threshold}"
        )
    claim = f"P(lift > {min_effect_threshold:.1%}) = {prob_above:.2f}"
    if prob_above >= confidence_threshold:
        if (
            needed_sample is not None
            and eligible_population is not None
            and needed_sample > eligible_population
        ):
            return Decision(
                Recommendation.REFINE,
                f"{claim} >= {confidence_threshold:.2f}, but the real test needs "
                f"{needed_sample} units and only {eligible_population} are eligible.",
            )
        size = f" with {needed_sample} units" if needed_sample is not None else ""
        return Decision(
            Recommendation.DEPLOY,
            f"{claim} >= {confidence_threshold:.2f}: promising; run the real A/B test{size}.",
        )
    if prob_above <= 1.0 - confidence_threshold:
        return Decision(
            Recommendation.SKIP,
            f"{claim} <= {1.0 - confidence_threshold:.2f}: the lift is unlikely to reach "
            "the threshold; skip the test.",
        )
    return Decision(
        Recommendation.REFINE,
        f"{claim} is between {1.0 - confidence_threshold:.2f} and "
        f"{confidence_threshold:.2f}: too uncertain to deploy or skip; refine the design.",
    )


def observed_ate_se(
    n_treatment: int, n_control: int, sd_control: ArrayLike, sd_treated: ArrayLike | None = None
) -> NDArray:
    """Standard error of a two-arm test's difference of means.

    Parameters
    ----------
    n_treatment, n_control : int
        Arm sizes (> 0).
    sd_control : array_like
        Total outcome sd in the control arm.
    sd_treated : array_like, optional
        Same in the treated arm (default ``sd_control``).

    Returns
    -------
    ndarray
        ``sqrt(sd_treated**2 / n_treatment + sd_control**2 / n_control)``.
    """
    if n_treatment <= 0 or n_control <= 0:
        raise ValueError(f"arm sizes must be > 0, got {n_treatment} and {n_control}")
    sc = np.asarray(sd_control, dtype=float)
    st = sc if sd_treated is None else np.asarray(sd_treated, dtype=float)
    return np.sqrt(st * st / n_treatment + sc * sc / n_control)


def observed_ate_predictive(
    ate_draws: ArrayLike,
    n_treatment: int,
    n_control: int,
    sd_control: ArrayLike,
    sd_treated: ArrayLike | None = None,
    *,
    random_seed: int | np.random.Generator | None = None,
    draws_per_ate: int = 1,
) -> NDArray:
    """Predictive draws of the ATE a real experiment would observe.

    This is the *observed-experiment predictive*: population ATE draws (posterior
    uncertainty) plus the test's sampling noise, normal with the standard error of
    :func:`observed_ate_se`. Compare a real result with these draws, not with the
    population credible interval.

    Parameters
    ----------
    ate_draws : array_like, shape (D,)
        Population ATE draws (``SimulationResult.ate_draws``).
    n_treatment, n_control : int
        Arm sizes of the experiment.
    sd_control, sd_treated : array_like
        Total outcome sds per arm (``SimulationResult.outcome_sd_control`` and
        ``outcome_sd_treated``), scalars or one per draw.
    random_seed : int or Generator, optional
        Seed of the noise.
    draws_per_ate : int
        Noise draws per ATE draw.

    Returns
    -------
    ndarray, shape (D * draws_per_ate,)
    """
    ate = np.asarray(ate_draws, dtype=float).ravel()
    if ate.size == 0:
        raise ValueError("ate_draws is empty")
    if draws_per_ate < 1:
        raise ValueError(f"draws_per_ate must be >= 1, got {draws_per_ate}")
    se = np.broadcast_to(observed_ate_se(n_treatment, n_control, sd_control, sd_treated), ate.shape)
    rng = np.random.default_rng(random_seed)
    noise = rng.standard_normal((draws_per_ate, ate.size))
    return (ate[None, :] + se[None, :] * noise).ravel()


# -- the vectorised core --------------------------------------------------------------------
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


class _BlasLimit:
    """Process-wide BLAS thread limit shared by concurrent simulations.

    BLAS thread counts are process state. The first block to enter sets the limit and
    the last to leave restores the original, so overlapping simulations in several
    threads neither fight over the setting nor leave it changed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._limiter: Any = None

    @functools.cached_property
    def _controller(self) -> Any:
        from threadpoolctl import ThreadpoolController

        return ThreadpoolController()

    @contextlib.contextmanager
    def __call__(self, threads: int | None) -> Iterator[None]:
        if threads is None:
            yield
            return
        with self._lock:
            if self._depth == 0:
                self._limiter = self._controller.limit(limits=threads, user_api="blas")
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._limiter.restore_original_limits()
                    self._limiter = None


_blas_threads = _BlasLimit()

#: Most worker threads the vectorised core uses by default.
MAX_THREADS = 8
#: Bytes of one ``chunk x draws`` buffer in the vectorised core (about a core's L2).
_CHUNK_BUFFER_BYTES = 2**21
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _thread_count(threads: int | None, n_chunks: int) -> int:
    """Worker threads for ``n_chunks`` chunks (None: one per CPU, at most MAX_THREADS)."""
    if threads is None:
        threads = min(os.cpu_count() or 1, MAX_THREADS)
    return max(1, min(int(threads), n_chunks))


def _worker_pool(n_threads: int) -> ThreadPoolExecutor:
    """A process-wide pool with at least ``n_threads`` threads (grown, never shrunk)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < n_threads:
            old = _pool
            _pool = ThreadPoolExecutor(n_threads, thread_name_prefix="bayestwin-sim")
            _pool_size = n_threads
            if old is not None:
                old.shutdown(wait=False)
        return _pool


@dataclass(frozen=True)
class _PopulationCache:
    """What the engine keeps of a model's population between simulations."""

    encoded: EncodedUnits
    unit_ids: NDArray
    unit_id_strings: NDArray


@dataclass
class _ChunkSums:
    """Weighted sums of one chunk of units (segments: the model segments it touches)."""

    segments: list[int]
    control: NDArray
    treated: NDArray
    dose: NDArray
    m2_control: NDArray | None
    m2_treated: NDArray | None


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
        :data:`MAX_THREADS`; 1: in the calling thread). The NumPy and BLAS kernels
        release the GIL, so chunks run in parallel. Each chunk keeps its own partial
        sums, added in chunk order at the end: the result is bit-identical whatever
        the number of threads.

    Returns
    -------
    EffectDraws
    """
    k = posterior.type_index(intervention_type)
    levels = np.atleast_1d(np.asarray(intensities, dtype=float))
    if levels.size == 0 or not np.all(np.isfinite(levels)) or (levels < 0).any():
        raise ValueError(f"intensities must be finite and >= 0, got {levels.tolist()}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    n_units = len(units)
    if n_units == 0:
        raise ValueError("no units to simulate")
    w = np.ones(n_units) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (n_units,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must hold one non-negative weight per unit, not all 0")

    enc = posterior.encoder
    fam = posterior.family
    encoded = (
        units if isinstance(units, EncodedUnits) else EncodedUnits.from_frame(posterior, units)
    )
    if encoded.x.shape[1] != len(enc.columns):
        raise ValueError(
            f"encoded units have {encoded.x.shape[1]} columns; the encoder has {len(enc.columns)}"
        )
    x, seg = encoded.x, encoded.segment
    n_seg = len(enc.segments)
    n_num = len(enc.numeric)
    n_draws = posterior.n_draws

    # Units sorted by segment: each segment is one contiguous block, so the segment
    # terms are added block by block and the segment sums are block products.
    order = np.argsort(seg, kind="stable")
    bounds = np.searchsorted(seg[order], np.arange(n_seg + 1)).tolist()
    design = np.ascontiguousarray(x[order], dtype=dtype)
    w_d = w[order].astype(dtype)

    # eta = offset[segment] + X @ coef; the treated arm folds g_d(s) into both terms.
    # The loop reduces r = link_fn(eta) with mu = loc + scale * r. For the logit link,
    # expit(x) = (1 + tanh(x / 2)) / 2: halve the coefficients, take 1 + tanh (two
    # passes instead of four) and fold the 1/2 into the scale. Keeping the "1 +" in the
    # loop keeps small probabilities at full relative precision in the float32 sums.
    loc, scale = posterior.outcome_loc, posterior.outcome_scale
    half = fam == "bernoulli"
    if half:
        scale = 0.5 * scale
    eta_factor = 0.5 if half else 1.0
    het = np.zeros_like(posterior.beta)
    het[:, :n_num] = posterior.gamma[:, k, :]
    tau_k = posterior.tau[:, k, :]
    g = dose_response_draws(levels, posterior.dose_rate)  # (D, G)

    def terms(beta: NDArray, intercept: NDArray) -> tuple[NDArray, NDArray]:
        return (
            np.ascontiguousarray(eta_factor * beta.T, dtype=dtype),
            np.ascontiguousarray(eta_factor * intercept.T, dtype=dtype),
        )

    coef_c, off_c = terms(posterior.beta, posterior.intercept)
    treated_terms = [
        terms(posterior.beta + g[:, j, None] * het, posterior.intercept + g[:, j, None] * tau_k)
        for j in range(levels.size)
    ]

    need_m2 = fam != "bernoulli"
    n_levels = levels.size
    n_cols = design.shape[1]
    # at most batch_size units per chunk, and few enough that a chunk's buffer stays
    # in a core's cache: the passes over it then run at cache, not memory, speed
    cache_rows = max(16, _CHUNK_BUFFER_BYTES // (n_draws * np.dtype(dtype).itemsize))
    b = min(batch_size, cache_rows, n_units)
    starts = list(range(0, n_units, b))
    mean_vec = np.full(n_draws, 1.0 / n_draws, dtype=dtype)
    pred_sorted = np.empty(n_units)
    # One slot per chunk for its partial sums, reduced in chunk order afterwards: the
    # result does not depend on how many threads ran the chunks, or in which order.
    partials: list[_ChunkSums | None] = [None] * len(starts)

    def link_values(
        rows: NDArray, coef: NDArray, off: NDArray, segs: list[int], buf: NDArray
    ) -> NDArray:
        # rows end with one indicator column per segment of the chunk, so the product
        # adds each unit's segment term too: eta = [X, I] @ [coef; off[segs]]
        eta = np.matmul(rows, np.concatenate((coef, off[segs])), out=buf)
        if half:
            np.tanh(eta, out=eta)
            eta += 1.0
            return eta
        return inverse_link(fam, eta, out=eta)

    def segment_sums(r: NDArray, w_chunk: NDArray, blocks: list[tuple[int, int, int]]) -> NDArray:
        out = np.empty((len(blocks), n_draws))
        for i, (_, lo, hi) in enumerate(blocks):
            out[i] = w_chunk[lo:hi] @ r[lo:hi]
        return out

    def run_chunks(chunk_ids: Sequence[int]) -> None:
        buf_c = np.empty((b, n_draws), dtype=dtype)
        buf_t = np.empty((b, n_draws), dtype=dtype)
        buf_sq = np.empty((b, n_draws), dtype=dtype) if need_m2 else None
        with np.errstate(over="ignore", under="ignore"):
            for ci in chunk_ids:
                a = starts[ci]
                e = min(a + b, n_units)
                m = e - a
                blocks = [
                    (s, max(bounds[s], a) - a, min(bounds[s + 1], e) - a)
                    for s in range(n_seg)
                    if max(bounds[s], a) < min(bounds[s + 1], e)
                ]
                segs = [s for s, _, _ in blocks]
                rows = np.zeros((m, n_cols + len(segs)), dtype=dtype)
                rows[:, :n_cols] = design[a:e]
                for i, (_, lo, hi) in enumerate(blocks):
                    rows[lo:hi, n_cols + i] = 1.0
                w_chunk = w_d[a:e]
                r_c = link_values(rows, coef_c, off_c, segs, buf_c[:m])
                part = _ChunkSums(
                    segments=segs,
                    control=segment_sums(r_c, w_chunk, blocks),
                    treated=np.empty((0, n_draws)),
                    dose=np.zeros((n_levels, n_draws)),
                    m2_control=None,
                    m2_treated=None,
                )
                pred_sorted[a:e] = r_c @ mean_vec
                if buf_sq is not None:
                    part.m2_control = w_chunk @ np.square(r_c, out=buf_sq[:m])
                for j, (coef_t, off_t) in enumerate(treated_terms):
                    r_t = link_values(rows, coef_t, off_t, segs, buf_t[:m])
                    if j == 0:
                        part.treated = segment_sums(r_t, w_chunk, blocks)
                        if buf_sq is not None:
                            part.m2_treated = w_chunk @ np.square(r_t, out=buf_sq[:m])
                    else:
                        part.dose[j] = w_chunk @ r_t
                partials[ci] = part

    n_threads = _thread_count(threads, len(starts))
    with _blas_threads(blas_threads):
        if n_threads == 1:
            run_chunks(range(len(starts)))
        else:
            pool = _worker_pool(n_threads)
            futures = [
                pool.submit(run_chunks, range(t, len(starts), n_threads)) for t in range(n_threads)
            ]
            for fut in futures:
                fut.result()

    sums_c = np.zeros((n_seg, n_draws))
    sums_t = np.zeros((n_seg, n_draws))
    sums_dose = np.zeros((n_levels, n_draws))
    m2_c = np.zeros(n_draws)
    m2_t = np.zeros(n_draws)
    for part in partials:
        assert part is not None
        for i, s in enumerate(part.segments):
            sums_c[s] += part.control[i]
            sums_t[s] += part.treated[i]
        sums_dose += part.dose
        if part.m2_control is not None and part.m2_treated is not None:
            m2_c += part.m2_control
            m2_t += part.m2_treated

    total_w = float(w.sum())
    tot_c = sums_c.sum(axis=0)
    sums_dose[0] = sums_t.sum(axis=0)
    mean_c = tot_c / total_w
    mean_t = sums_dose[0] / total_w
    ate = scale * (sums_dose - tot_c[None, :]) / total_w
    if not np.all(np.isfinite(ate)):
        raise FloatingPointError(
            "expected outcomes overflowed; the posterior gives extreme linear predictors "
            "(try dtype=np.float64)"
        )
    seg_counts = np.bincount(seg, weights=w, minlength=n_seg).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        seg_ate = (scale * (sums_t - sums_c) / seg_counts[:, None]).T
        seg_ctrl = (loc + scale * sums_c / seg_counts[:, None]).T

    disp = posterior.natural_dispersion()

    def natural_m2(mean: NDArray, m2: NDArray) -> NDArray | None:
        if not need_m2:
            return None
        return loc * loc + 2.0 * loc * scale * mean + scale * scale * m2 / total_w

    nat_c = loc + scale * mean_c
    nat_t = loc + scale * mean_t
    var_c = outcome_variance_from_moments(fam, nat_c, natural_m2(mean_c, m2_c), disp)
    var_t = outcome_variance_from_moments(fam, nat_t, natural_m2(mean_t, m2_t), disp)
    pred = np.empty(n_units)
    pred[order] = pred_sorted
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


# -- the engine -------------------------------------------------------------------------------
def _summary(draws: NDArray, prob: float) -> tuple[float, float, float]:
    lo, hi = equal_tailed_interval(draws, prob)
    return float(np.median(draws)), lo, hi


def _check_config(
    intervention_type: str, config: InterventionConfig | Mapping[str, Any] | None
) -> InterventionConfig:
    if config is None:
        cfg = InterventionConfig()
    elif isinstance(config, InterventionConfig):
        cfg = config
    else:
        cfg = InterventionConfig.model_validate(config)
    if cfg.intervention_type is not None and cfg.intervention_type != intervention_type:
        raise ValueError(
            f"intervention_config.intervention_type ({cfg.intervention_type!r}) differs "
            f"from intervention_type ({intervention_type!r})"
        )
    if not math.isfinite(cfg.intensity) or cfg.intensity < 0:
        raise ValueError(f"intensity must be finite and >= 0, got {cfg.intensity}")
    return cfg.model_copy(update={"intervention_type": intervention_type})


class SimulationEngine:
    """Simulate an intervention on digital twins drawn from a fitted model's population.

    Parameters
    ----------
    settings : Settings, optional
        Thresholds and limits; default :func:`bayestwin.settings.load_settings`.
    dtype : numpy floating type
        Working precision of the vectorised core (float32 by default; see the module
        docstring).
    blas_threads : int, optional
        BLAS threads inside the vectorised core (default 1; None leaves the process
        setting alone). See :func:`effect_draws`.
    threads : int, optional
        Worker threads of the vectorised core (default: one per CPU, at most
        :data:`MAX_THREADS`; 1 runs it in the calling thread). Results do not depend
        on it.

    Notes
    -----
    The engine keeps the encoded features of each model's population (weakly, keyed
    by the model object), so repeated simulations on one model skip the encoding. A
    :class:`~bayestwin.model.FittedTwinModel` is immutable: do not edit its
    population in place.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        dtype: type[np.floating] = np.float32,
        blas_threads: int | None = 1,
        threads: int | None = None,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        if not 0.5 <= self.settings.confidence_threshold < 1.0:
            raise ValueError(
                "confidence_threshold must be in [0.5, 1) for the deploy/skip/refine rule, "
                f"got {self.settings.confidence_threshold}"
            )
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        if blas_threads is not None and blas_threads < 1:
            raise ValueError(f"blas_threads must be >= 1 or None, got {blas_threads}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self.dtype = dtype
        self.blas_threads = blas_threads
        self.threads = threads
        self._cache: weakref.WeakKeyDictionary[FittedTwinModel, _PopulationCache] = (
            weakref.WeakKeyDictionary()
        )

    def _population_cache(self, model: FittedTwinModel) -> _PopulationCache:
        cached = self._cache.get(model)
        if cached is None:
            ids = model.population["unit_id"].to_numpy()
            cached = _PopulationCache(
                encoded=EncodedUnits.from_frame(model.posterior, model.population),
                unit_ids=ids,
                unit_id_strings=np.array([str(u) for u in ids], dtype=object),
            )
            self._cache[model] = cached
        return cached

    # -- validation ----------------------------------------------------------------------
    def _check_inputs(
        self,
        model: FittedTwinModel,
        intervention_type: str,
        twin_count: int | None,
        confidence_level: float,
        dose_grid: Sequence[float] | None,
        random_seed: int | None,
    ) -> int:
        if not isinstance(model, FittedTwinModel):
            raise TypeError(
                f"model must be a fitted FittedTwinModel, got {type(model).__name__}; "
                "fit one with TwinGenerator.fit"
            )
        model.require_usable()
        model.posterior.type_index(intervention_type)
        count = self.settings.default_twin_count if twin_count is None else twin_count
        if isinstance(count, bool) or not isinstance(count, int | np.integer):
            raise ValueError(f"twin_count must be an integer, got {twin_count!r}")
        if not 0 < count <= self.settings.max_twin_count:
            raise ValueError(
                f"twin_count must be in [1, max_twin_count={self.settings.max_twin_count}], "
                f"got {count}"
            )
        if not (isinstance(confidence_level, float | int) and 0.0 < confidence_level < 1.0):
            raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level!r}")
        if random_seed is not None and (
            isinstance(random_seed, bool)
            or not isinstance(random_seed, int | np.integer)
            or random_seed < 0
        ):
            raise ValueError(f"random_seed must be a non-negative integer, got {random_seed!r}")
        if dose_grid is not None:
            grid = np.asarray(list(dose_grid), dtype=float)
            if not np.all(np.isfinite(grid)) or (grid < 0).any():
                raise ValueError(f"dose_grid intensities must be finite and >= 0, got {grid}")
        return int(count)

    # -- the public entry point -------------------------------------------------------------
    def simulate(
        self,
        model: FittedTwinModel,
        intervention_type: str,
        intervention_config: InterventionConfig | Mapping[str, Any] | None = None,
        twin_count: int | None = None,
        confidence_level: float = 0.95,
        random_seed: int | None = None,
        *,
        include_draws: bool = True,
        dose_grid: Sequence[float] | None = None,
        fidelity_warning: bool = False,
        fidelity_warning_reason: str | None = None,
        experiment_design_id: str | None = None,
    ) -> SimulationResult:
        """Simulate an intervention on ``twin_count`` twins and recommend what to do.

        Parameters
        ----------
        model : FittedTwinModel
            A fitted model whose diagnostics passed (or were overridden).
        intervention_type : str
            An intervention type the model knows.
        intervention_config : InterventionConfig or mapping, optional
            Intensity and target filters (default: intensity 1, everyone).
        twin_count : int, optional
            Twins to draw (default ``settings.default_twin_count``; at most
            ``settings.max_twin_count``).
        confidence_level : float
            Level of the credible intervals, in (0, 1).
        random_seed : int, optional
            Seed of the twin draw; None draws one (recorded in the result).
        include_draws : bool
            Keep the ATE draws and the twin -> unit ids in the result.
        dose_grid : sequence of float, optional
            Intensities of the dose-response curve; default
            :func:`default_dose_grid`; empty to skip the curve.
        fidelity_warning, fidelity_warning_reason
            Passed through to the result (the service layer sets them).
        experiment_design_id : str, optional
            Passed through to the result.

        Returns
        -------
        SimulationResult
            Status ``completed``.

        Raises
        ------
        ValueError
            Unknown intervention type, bad twin count, confidence level, intensity,
            dose grid or target filter.
        ModelNotUsableError
            The model failed its diagnostics.
        """
        start = time.perf_counter()
        cfg = _check_config(intervention_type, intervention_config)
        count = self._check_inputs(
            model, intervention_type, twin_count, confidence_level, dose_grid, random_seed
        )
        seed = (
            int(np.random.SeedSequence().generate_state(1)[0])
            if random_seed is None
            else int(random_seed)
        )
        st = self.settings
        posterior = model.posterior
        cache = self._population_cache(model)
        twins = draw_twins(
            model.population, count, cfg.target, random_seed=seed, unit_ids=cache.unit_ids
        )

        grid = default_dose_grid(cfg.intensity) if dose_grid is None else tuple(dose_grid)
        others = sorted({float(v) for v in grid} - {float(cfg.intensity)})
        draws = effect_draws(
            posterior,
            cache.encoded.take(twins.unique_rows),
            intervention_type,
            [cfg.intensity, *others],
            weights=twins.counts,
            batch_size=st.batch_size,
            dtype=self.dtype,
            blas_threads=self.blas_threads,
            threads=self.threads,
        )

        thr, ct = st.min_effect_threshold, st.confidence_threshold
        ate = draws.ate[0]
        lift = draws.lift
        ate_med, ate_lo, ate_hi = _summary(ate, confidence_level)
        lift_med, lift_lo, lift_hi = _summary(lift[0], confidence_level)
        p_above = float(np.mean(lift[0] > thr))

        segments = self._segment_effects(draws, posterior, confidence_level, thr)
        dose = self._dose_points(draws, grid, confidence_level, thr)
        min_intensity = next(
            (p.intensity for p in dose if p.prob_above_threshold >= ct and p.intensity > 0), None
        )

        report, needed, var_c, var_t = self._sample_size(
            draws, ate, ate_med, twins.eligible, posterior.family
        )
        decision = decide(
            p_above,
            min_effect_threshold=thr,
            confidence_threshold=ct,
            needed_sample=needed,
            eligible_population=twins.eligible,
        )
        suggestions: list[str] = []
        if decision.recommendation is Recommendation.REFINE:
            suggestions = self._suggestions(
                segments, min_intensity, cfg.intensity, needed, twins.eligible, p_above, thr
            )
        recommended = None
        if decision.recommendation is not Recommendation.SKIP and report.classic_n_per_arm:
            recommended = 2 * report.classic_n_per_arm

        prior = EffectPrior(
            scale="absolute",
            mean=float(np.mean(ate)),
            sd=float(np.std(ate, ddof=1)) if ate.size > 1 else 0.0,
            quantiles={
                str(q): float(v)
                for q, v in zip(PRIOR_QUANTILES, np.quantile(ate, PRIOR_QUANTILES), strict=True)
            },
            control_mean=float(np.median(draws.control_mean)),
            outcome_family=posterior.family,
        )
        try:
            model_uuid: uuid.UUID | None = uuid.UUID(str(model.model_id))
        except ValueError:
            model_uuid = None
        elapsed = int(round((time.perf_counter() - start) * 1000.0))
        return SimulationResult(
            model_id=model_uuid,
            experiment_design_id=experiment_design_id,
            brand=model.brand,
            twin_type=model.twin_type,
            intervention_type=intervention_type,
            intervention_config=cfg,
            twin_count=count,
            confidence_level=float(confidence_level),
            random_seed=seed,
            simulation_status=SimulationStatus.COMPLETED,
            simulated_ate=ate_med,
            simulated_ci_lower=ate_lo,
            simulated_ci_upper=ate_hi,
            recommendation=decision.recommendation,
            recommended_sample_size=recommended,
            execution_time_ms=elapsed,
            fidelity_warning=fidelity_warning,
            fidelity_warning_reason=fidelity_warning_reason,
            completed_at=utcnow(),
            outcome_family=posterior.family,
            control_mean=float(np.median(draws.control_mean)),
            treated_mean=float(np.median(draws.treated_mean)),
            relative_lift=lift_med,
            relative_lift_ci_lower=lift_lo,
            relative_lift_ci_upper=lift_hi,
            prob_effect_above_threshold=p_above,
            min_effect_threshold=thr,
            recommendation_rationale=decision.rationale,
            refine_suggestions=suggestions,
            segment_effects=segments,
            dose_response=dose,
            min_effective_intensity=min_intensity,
            sample_size=report,
            prior_estimate=prior,
            eligible_population=twins.eligible,
            ate_draws=ate.tolist() if include_draws else None,
            outcome_sd_control=math.sqrt(var_c),
            outcome_sd_treated=math.sqrt(var_t),
            twin_unit_ids=cache.unit_id_strings[twins.rows].tolist() if include_draws else None,
        )

    # -- pieces of the result ----------------------------------------------------------------
    @staticmethod
    def _segment_effects(
        draws: EffectDraws, posterior: TwinPosterior, prob: float, thr: float
    ) -> list[SegmentEffect]:
        present = np.flatnonzero(draws.segment_counts > 0)
        if present.size == 0:
            return []
        tail = (1.0 - prob) / 2.0
        ate_q = np.quantile(draws.segment_ate[:, present], [0.5, tail, 1.0 - tail], axis=0)
        lift = draws.segment_lift[:, present]
        lift_med = np.median(lift, axis=0)
        p_above = np.mean(lift > thr, axis=0)
        names = posterior.encoder.segments
        return [
            SegmentEffect(
                segment=str(names[s]),
                n_twins=int(round(draws.segment_counts[s])),
                ate=float(ate_q[0, i]),
                ci_lower=float(ate_q[1, i]),
                ci_upper=float(ate_q[2, i]),
                relative_lift=float(lift_med[i]),
                prob_above_threshold=float(p_above[i]),
            )
            for i, s in enumerate(present.tolist())
        ]

    @staticmethod
    def _dose_points(
        draws: EffectDraws, grid: Sequence[float], prob: float, thr: float
    ) -> list[DosePoint]:
        wanted = {float(v) for v in grid}
        lift = draws.lift
        points = []
        for j, level in enumerate(draws.intensities):
            if float(level) not in wanted:
                continue
            med, lo, hi = _summary(draws.ate[j], prob)
            points.append(
                DosePoint(
                    intensity=float(level),
                    ate=med,
                    ci_lower=lo,
                    ci_upper=hi,
                    relative_lift=float(np.median(lift[j])),
                    prob_above_threshold=float(np.mean(lift[j] > thr)),
                )
            )
        return sorted(points, key=lambda p: p.intensity)

    def _sample_size(
        self, draws: EffectDraws, ate: NDArray, ate_med: float, eligible: int, family: str
    ) -> tuple[SampleSizeReport, int | None, float, float]:
        st = self.settings
        if family == "bernoulli":
            # two-proportion formula at the posterior medians; p (1 - p) is the total
            # variance of a bernoulli outcome in the population
            p0 = float(np.median(draws.control_mean))
            p1 = min(1.0, max(0.0, p0 + ate_med))
            var_c, var_t = p0 * (1.0 - p0), p1 * (1.0 - p1)
        else:
            var_c = float(np.mean(draws.var_control))
            var_t = float(np.mean(draws.var_treated))
        rho2 = prognostic_rho2(draws.predicted_control, var_c, draws.weights)
        report = sample_size_report(
            ate,
            var_c,
            var_t,
            effect=ate_med,
            rho=math.sqrt(rho2),
            eligible_population=eligible,
            alpha=st.power_alpha,
            power=st.power_target,
        )
        classic = n_per_arm(ate_med, var_c, var_t, alpha=st.power_alpha, power=st.power_target)
        needed = None if classic is None else 2 * classic
        return report, needed, var_c, var_t

    def _suggestions(
        self,
        segments: list[SegmentEffect],
        min_intensity: float | None,
        intensity: float,
        needed: int | None,
        eligible: int,
        p_above: float,
        thr: float,
    ) -> list[str]:
        ct = self.settings.confidence_threshold
        out = []
        if needed is not None and needed > eligible:
            out.append(
                f"The eligible population is too small: the test needs {needed} units "
                f"(both arms) and only {eligible} are eligible; widen the target filters."
            )
        strong = [s for s in segments if s.prob_above_threshold >= ct]
        if strong:
            names = ", ".join(
                f"{s.segment} (P(lift > {thr:.1%}) = {s.prob_above_threshold:.2f})"
                for s in sorted(strong, key=lambda s: -s.prob_above_threshold)
            )
            out.append(f"Target the segments that respond: {names}.")
        if min_intensity is not None and min_intensity > intensity:
            out.append(
                f"Raise the intensity to {min_intensity:g}: there P(lift > {thr:.1%}) >= {ct:.2f}."
            )
        if not out and p_above < ct:
            out.append(
                "No segment or intensity clears the threshold with enough confidence; "
                "consider a different intervention or more history to narrow the posterior."
            )
        return out
