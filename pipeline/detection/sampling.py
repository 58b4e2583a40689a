"""Pass 1 of detection: the regular pass-1 sample of a scene and its global moments.

Pure numpy. The engine samples every block (:func:`sample_block`) in its workers and combines
the chunks in global pixel order (:func:`combine_samples`), so the statistics fitted on the
sample — normalisation, IR-MAD, the self-trained classifier, the threshold — do not depend on
the block size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

MIN_SAMPLE_PIXELS = 16
"""Fewer valid pixels than this in the pass-1 sample cannot give a threshold."""
_INT_EXACT_LIMIT = 2**20
"""Sample values below this magnitude that are whole numbers are summed as integers
(exact, so global statistics are bit-identical whatever the block size)."""


# --------------------------------------------------------------------------- pass 1: sampling
def sample_slices(row_off: int, col_off: int, height: int, width: int, step: int):
    """Slices selecting the rows/cols of a block whose *global* index is a multiple of ``step``.

    Sampling on global indices makes the sample independent of how the grid is cut into
    blocks.
    """
    r0 = (-row_off) % step
    c0 = (-col_off) % step
    return slice(r0, height, step), slice(c0, width, step)


@dataclass
class Moments:
    """Count, sum and sum of squares per band; exact (Python ints) for integer data."""

    n: int = 0
    s: list = field(default_factory=list)
    q: list = field(default_factory=list)

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """Moments of ``values`` (nbands, n)."""
        n = int(values.shape[1])
        if n == 0:
            return cls(0, [0] * values.shape[0], [0] * values.shape[0])
        as_int = values.astype(np.int64)
        if np.abs(values).max() < _INT_EXACT_LIMIT and np.array_equal(as_int, values):
            return cls(
                n,
                [int(x) for x in as_int.sum(axis=1)],
                [int(x) for x in (as_int * as_int).sum(axis=1)],
            )
        f = values.astype(np.float64)
        return cls(n, f.sum(axis=1).tolist(), (f * f).sum(axis=1).tolist())

    def __add__(self, other: Moments) -> Moments:
        return Moments.total([self, other])

    @classmethod
    def total(cls, parts: Sequence[Moments]) -> Moments:
        """The moments of all ``parts`` together, whatever their order: integer sums exactly,
        float sums with :func:`math.fsum` (one rounding), so the workers' completion order
        never moves a statistic by a bit (the novelty mixture fit amplifies such bits)."""
        counted = [p for p in parts if p.n]
        if not counted:  # nothing counted: keep the band count of an empty part
            return parts[-1] if parts else cls()
        parts = counted

        def add(values: Sequence) -> int | float:
            if all(isinstance(v, int) for v in values):
                return sum(values)
            return math.fsum(values)

        return cls(
            sum(p.n for p in parts),
            [add(col) for col in zip(*(p.s for p in parts))],
            [add(col) for col in zip(*(p.q for p in parts))],
        )

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-band mean and (population) standard deviation, float64 (NaN when empty)."""
        n = self.n
        if n == 0:
            nan = np.full(len(self.s), np.nan)
            return nan, nan.copy()
        mean = np.array([s / n for s in self.s], dtype=np.float64)
        # n*q - s*s is exact for ints; floats lose a little, which is fine
        var = np.array([(n * q - s * s) / (n * n) for s, q in zip(self.s, self.q)])
        return mean, np.sqrt(np.maximum(var, 0.0))


def nan_means(values: np.ndarray) -> np.ndarray:
    """Per-row mean of ``values`` (k, n) over its non-NaN entries, float64 (NaN for a row
    with none)."""
    out = np.full(values.shape[0], np.nan)
    for i, row in enumerate(values):
        ok = ~np.isnan(row)
        if ok.any():
            out[i] = row[ok].astype(np.float64).mean()
    return out


@dataclass
class SampleChunk:
    """Pass-1 result of one block: moments of both epochs and a thinned sample."""

    moments_a: Moments
    moments_b: Moments
    keys: np.ndarray  # global flat pixel index (row * grid_width + col), int64
    values_a: np.ndarray  # (nbands, n) float32
    values_b: np.ndarray
    context: np.ndarray | None = None  # (k, n) float32: neighbourhood features, see below


def sample_block(
    data_a: np.ndarray,
    data_b: np.ndarray,
    valid: np.ndarray,
    row_off: int,
    col_off: int,
    step: int,
    thin: int,
    grid_width: int,
    context: np.ndarray | None = None,
    n_moments: int | None = None,
) -> SampleChunk:
    """Sample one block (no halo) for the global statistics.

    Parameters
    ----------
    data_a, data_b : ndarray (nbands, h, w)
        Both epochs on the block.
    valid : ndarray bool (h, w)
        Pixels valid in both epochs.
    row_off, col_off : int
        Global position of the block.
    step : int
        Moments use every ``step``-th global row and column.
    thin : int
        The score sample (for the threshold) uses every ``step * thin``-th row and column,
        which bounds the driver's memory on large scenes.
    grid_width : int
        Used to make global pixel keys, so the driver can sort the sample canonically.
    context : ndarray (k, h, w), optional
        Per-pixel neighbourhood features computed on the block with a halo
        (:func:`self_train_context`), sampled at the same pixels as the values.
    n_moments : int, optional
        Moments of the first ``n_moments`` bands only (the surface bands: the atmospheric
        ones may hold NaN gaps and are only sampled); default all.
    """
    h, w = valid.shape
    rs, cs = sample_slices(row_off, col_off, h, w, step)
    v = valid[rs, cs]
    k = slice(None) if n_moments is None else slice(n_moments)
    moments_a = Moments.of(data_a[k, rs, cs][:, v])
    moments_b = Moments.of(data_b[k, rs, cs][:, v])
    big = step * thin
    rs, cs = sample_slices(row_off, col_off, h, w, big)
    v = valid[rs, cs]
    rows = np.arange(h)[rs] + row_off
    cols = np.arange(w)[cs] + col_off
    keys = (rows[:, None].astype(np.int64) * grid_width + cols[None, :])[v]
    return SampleChunk(
        moments_a,
        moments_b,
        keys,
        data_a[:, rs, cs][:, v].copy(),
        data_b[:, rs, cs][:, v].copy(),
        None if context is None else context[:, rs, cs][:, v].astype(np.float32),
    )


@dataclass(frozen=True)
class Normalisation:
    """Per-band mean and std of each epoch (float64 tuples); identity for ``none``."""

    mean_a: tuple[float, ...]
    std_a: tuple[float, ...]
    mean_b: tuple[float, ...]
    std_b: tuple[float, ...]


def combine_samples(
    chunks: Sequence[SampleChunk],
) -> tuple[Moments, Moments, np.ndarray, np.ndarray]:
    """Sum the moments and concatenate the samples in global pixel order.

    Returns ``(moments_a, moments_b, values_a, values_b)``.
    """
    ma = Moments.total([c.moments_a for c in chunks])
    mb = Moments.total([c.moments_b for c in chunks])
    if not chunks:
        return ma, mb, np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    keys = np.concatenate([c.keys for c in chunks])
    order = np.argsort(keys, kind="stable")
    va = np.concatenate([c.values_a for c in chunks], axis=1)[:, order]
    vb = np.concatenate([c.values_b for c in chunks], axis=1)[:, order]
    return ma, mb, va, vb


def combine_context(chunks: Sequence[SampleChunk]) -> np.ndarray | None:
    """The chunks' context features in the canonical (key-sorted) order of
    :func:`combine_samples`; None when the chunks carry none."""
    if not chunks or chunks[0].context is None:
        return None
    keys = np.concatenate([c.keys for c in chunks])
    order = np.argsort(keys, kind="stable")
    return np.concatenate([c.context for c in chunks], axis=1)[:, order]
