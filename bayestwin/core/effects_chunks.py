"""The chunked kernel of :func:`bayestwin.core.effects.effect_draws`.

A :class:`ChunkPlan` holds the units (sorted by segment, so each segment is one
contiguous block) cut into chunks; :class:`LinkTerms` holds the coefficients of the
control arm and of the treated arm at each intensity. :func:`run_chunks` computes the
weighted sums of every chunk (:class:`ChunkSums`) on worker threads, and
:func:`reduce_chunks` adds them in chunk order, so the totals do not depend on the
number of threads. Memory stays bounded by a few ``chunk x D`` buffers per thread.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bayestwin.core.families import inverse_link
from bayestwin.core.unit_effects import UnitOffsets

__all__ = [
    "CHUNK_BUFFER_BYTES",
    "MAX_THREADS",
    "ChunkPlan",
    "ChunkSums",
    "LinkTerms",
    "Totals",
    "reduce_chunks",
    "run_chunks",
]

#: Most worker threads the vectorised core uses by default.
MAX_THREADS = 8
#: Bytes of one ``chunk x draws`` buffer in the vectorised core (about a core's L2).
CHUNK_BUFFER_BYTES = 2**21

#: A block of one segment inside a chunk: (segment, first row, end row), chunk-relative.
Block = tuple[int, int, int]


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
class ChunkPlan:
    """Units sorted by segment and cut into chunks.

    Attributes
    ----------
    design : ndarray, shape (N, P)
        Encoded features of the sorted units, working dtype.
    weights : ndarray, shape (N,)
        Multiplicity of each sorted unit, working dtype.
    bounds : list of int
        Segment ``s`` holds the sorted rows ``bounds[s]:bounds[s + 1]``.
    chunk_rows : int
        Units per chunk (the last may hold fewer).
    n_draws : int
        Posterior draws ``D``.
    unit_offset : ndarray or UnitOffsets, shape (N, D), optional
        A link-scale term of each sorted unit and draw, on the kernel's scale.
    """

    design: NDArray
    weights: NDArray
    bounds: list[int]
    chunk_rows: int
    n_draws: int
    unit_offset: NDArray | UnitOffsets | None = None

    def offset_rows(self, start: int, end: int, buf: NDArray | None) -> NDArray | None:
        """The unit offsets of the rows ``start:end`` (written into ``buf`` when lazy)."""
        if self.unit_offset is None:
            return None
        if isinstance(self.unit_offset, np.ndarray):
            return self.unit_offset[start:end]
        assert buf is not None
        return self.unit_offset.fill(start, end, buf)

    @property
    def n_units(self) -> int:
        """Units ``N``."""
        return int(self.design.shape[0])

    @property
    def n_segments(self) -> int:
        """Model segments ``S``."""
        return len(self.bounds) - 1

    @property
    def starts(self) -> list[int]:
        """First sorted row of each chunk."""
        return list(range(0, self.n_units, self.chunk_rows))

    def blocks(self, start: int, end: int) -> list[Block]:
        """The segment blocks of the rows ``start:end``, relative to ``start``."""
        b = self.bounds
        return [
            (s, max(b[s], start) - start, min(b[s + 1], end) - start)
            for s in range(self.n_segments)
            if max(b[s], start) < min(b[s + 1], end)
        ]

    def rows(self, start: int, end: int, blocks: list[Block]) -> NDArray:
        """``[X, I]`` of the rows ``start:end``: features, then one indicator per block."""
        n_cols = self.design.shape[1]
        rows = np.zeros((end - start, n_cols + len(blocks)), dtype=self.design.dtype)
        rows[:, :n_cols] = self.design[start:end]
        for i, (_, lo, hi) in enumerate(blocks):
            rows[lo:hi, n_cols + i] = 1.0
        return rows


@dataclass(frozen=True)
class LinkTerms:
    """Coefficients ``(coef, offsets)`` of each arm, on the kernel's link scale.

    Attributes
    ----------
    family : str
        Outcome family.
    half_tanh : bool
        The logit link computed as ``1 + tanh(eta / 2)`` (the coefficients are halved).
    control : (ndarray, ndarray)
        ``beta.T`` (P, D) and ``intercept.T`` (S, D) of the control arm.
    treated : list of (ndarray, ndarray)
        Same for the treated arm at each intensity (the first is the main one).
    """

    family: str
    half_tanh: bool
    control: tuple[NDArray, NDArray]
    treated: list[tuple[NDArray, NDArray]]

    @property
    def need_m2(self) -> bool:
        """Whether the variances need the second moments (every family but bernoulli)."""
        return self.family != "bernoulli"

    def values(
        self,
        rows: NDArray,
        terms: tuple[NDArray, NDArray],
        segs: list[int],
        buf: NDArray,
        unit_offset: NDArray | None = None,
    ) -> NDArray:
        """Inverse link of ``eta = [X, I] @ [coef; off[segs]] (+ unit_offset)``, into ``buf``."""
        coef, off = terms
        eta = np.matmul(rows, np.concatenate((coef, off[segs])), out=buf)
        if unit_offset is not None:
            eta += unit_offset
        if self.half_tanh:
            np.tanh(eta, out=eta)
            eta += 1.0
            return eta
        return inverse_link(self.family, eta, out=eta)


@dataclass
class ChunkSums:
    """Weighted sums of one chunk of units (segments: the model segments it touches)."""

    segments: list[int]
    control: NDArray
    treated: NDArray
    dose: NDArray
    predicted: NDArray
    m2_control: NDArray | None = None
    m2_treated: NDArray | None = None


@dataclass(frozen=True)
class Totals:
    """The chunk sums added over all chunks (sorted unit order)."""

    control: NDArray
    treated: NDArray
    dose: NDArray
    m2_control: NDArray
    m2_treated: NDArray
    predicted: NDArray


def _segment_sums(r: NDArray, w_chunk: NDArray, blocks: list[Block], n_draws: int) -> NDArray:
    out = np.empty((len(blocks), n_draws))
    for i, (_, lo, hi) in enumerate(blocks):
        out[i] = w_chunk[lo:hi] @ r[lo:hi]
    return out


def _chunk_sums(
    plan: ChunkPlan,
    terms: LinkTerms,
    start: int,
    bufs: tuple[NDArray, NDArray, NDArray | None, NDArray | None],
) -> ChunkSums:
    end = min(start + plan.chunk_rows, plan.n_units)
    m = end - start
    d = plan.n_draws
    buf_c, buf_t, buf_sq, buf_u = bufs
    blocks = plan.blocks(start, end)
    segs = [s for s, _, _ in blocks]
    rows = plan.rows(start, end, blocks)
    w_chunk = plan.weights[start:end]
    u = plan.offset_rows(start, end, buf_u)
    r_c = terms.values(rows, terms.control, segs, buf_c[:m], u)
    part = ChunkSums(
        segments=segs,
        control=_segment_sums(r_c, w_chunk, blocks, d),
        treated=np.empty((0, d)),
        dose=np.zeros((len(terms.treated), d)),
        predicted=r_c @ np.full(d, 1.0 / d, dtype=plan.design.dtype),
    )
    if buf_sq is not None:
        part.m2_control = w_chunk @ np.square(r_c, out=buf_sq[:m])
    for j, arm in enumerate(terms.treated):
        r_t = terms.values(rows, arm, segs, buf_t[:m], u)
        if j == 0:
            part.treated = _segment_sums(r_t, w_chunk, blocks, d)
            if buf_sq is not None:
                part.m2_treated = w_chunk @ np.square(r_t, out=buf_sq[:m])
        else:
            part.dose[j] = w_chunk @ r_t
    return part


def _run_some(plan: ChunkPlan, terms: LinkTerms, chunk_ids: Sequence[int]) -> list[ChunkSums]:
    shape, dtype = (plan.chunk_rows, plan.n_draws), plan.design.dtype
    lazy = plan.unit_offset is not None and not isinstance(plan.unit_offset, np.ndarray)
    bufs = (
        np.empty(shape, dtype=dtype),
        np.empty(shape, dtype=dtype),
        np.empty(shape, dtype=dtype) if terms.need_m2 else None,
        np.empty(shape, dtype=dtype) if lazy else None,
    )
    starts = plan.starts
    with np.errstate(over="ignore", under="ignore"):
        return [_chunk_sums(plan, terms, starts[ci], bufs) for ci in chunk_ids]


def run_chunks(
    plan: ChunkPlan, terms: LinkTerms, *, threads: int | None, blas_threads: int | None
) -> list[ChunkSums]:
    """The sums of every chunk, in chunk order.

    Parameters
    ----------
    plan : ChunkPlan
        The units and their chunks.
    terms : LinkTerms
        The coefficients of each arm.
    threads : int, optional
        Worker threads (None: one per CPU, at most :data:`MAX_THREADS`; 1: the calling
        thread). Thread ``t`` runs the chunks ``t, t + n, t + 2n...``.
    blas_threads : int, optional
        BLAS threads while the chunks run (None: the process setting).

    Returns
    -------
    list of ChunkSums
    """
    n_chunks = len(plan.starts)
    n_threads = _thread_count(threads, n_chunks)
    with _blas_threads(blas_threads):
        if n_threads == 1:
            return _run_some(plan, terms, range(n_chunks))
        pool = _worker_pool(n_threads)
        ids = [range(t, n_chunks, n_threads) for t in range(n_threads)]
        futures = [pool.submit(_run_some, plan, terms, chunk_ids) for chunk_ids in ids]
        slots: list[ChunkSums | None] = [None] * n_chunks
        for chunk_ids, fut in zip(ids, futures, strict=True):
            for ci, part in zip(chunk_ids, fut.result(), strict=True):
                slots[ci] = part
    parts = [p for p in slots if p is not None]
    assert len(parts) == n_chunks
    return parts


def reduce_chunks(plan: ChunkPlan, parts: Sequence[ChunkSums], n_levels: int) -> Totals:
    """Add the chunk sums in chunk order.

    Parameters
    ----------
    plan : ChunkPlan
        The plan the chunks came from.
    parts : sequence of ChunkSums
        The sums of each chunk, in chunk order.
    n_levels : int
        Intensities computed.

    Returns
    -------
    Totals
        ``treated`` per segment for the main intensity; ``dose`` per intensity (row 0
        left 0: the caller fills it from ``treated``).
    """
    n_seg, d = plan.n_segments, plan.n_draws
    sums_c = np.zeros((n_seg, d))
    sums_t = np.zeros((n_seg, d))
    sums_dose = np.zeros((n_levels, d))
    m2_c = np.zeros(d)
    m2_t = np.zeros(d)
    pred = np.empty(plan.n_units)
    for start, part in zip(plan.starts, parts, strict=True):
        for i, s in enumerate(part.segments):
            sums_c[s] += part.control[i]
            sums_t[s] += part.treated[i]
        sums_dose += part.dose
        if part.m2_control is not None and part.m2_treated is not None:
            m2_c += part.m2_control
            m2_t += part.m2_treated
        pred[start : start + part.predicted.shape[0]] = part.predicted
    return Totals(sums_c, sums_t, sums_dose, m2_c, m2_t, pred)
