"""Neighbourhood operations on rasters: Gaussian smoothing of scores, 3 × 3 sums, shifts and
disk morphology.

Every function reads a fixed, documented number of pixels around each output pixel in the
same order wherever it lies, so a block read with that halo gives the whole-image result bit
for bit (the property the engine's block-size independence rests on).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

SMOOTH_TRUNCATE = 4.0
"""The Gaussian of :func:`smooth_score` is cut at this many sigmas (its halo)."""


def smoothing_halo(sigma_px: float) -> int:
    """Halo (px) so that :func:`smooth_score` on block+halo equals the whole-image result."""
    return math.ceil(SMOOTH_TRUNCATE * sigma_px) if sigma_px > 0 else 0


def smooth_score(score: np.ndarray, valid: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian-smoothed score over the valid pixels (normalised convolution), 0 where invalid.

    Parameters
    ----------
    score : ndarray float32 (h, w)
        A per-pixel change score.
    valid : ndarray bool (h, w)
        Pixels valid in both epochs.
    sigma_px : float
        Standard deviation of the Gaussian in pixels (0 = no smoothing).

    Notes
    -----
    Spatial context: a 10 m pixel's change vector is noisy (misregistration, mixed pixels),
    while a new building or site covers several pixels; averaging over the neighbourhood
    suppresses isolated speckle far more than the extended change. Invalid pixels neither
    contribute nor receive a score (``sum(g * s * valid) / sum(g * valid)``), so a cloud edge
    does not dilute its neighbours. Each output pixel only reads ``smoothing_halo(sigma)``
    pixels around it, in the same order wherever it lies, so block + halo gives the
    whole-image result bit for bit.
    """
    if sigma_px <= 0:
        return score
    v = valid.astype(np.float32)
    num = ndimage.gaussian_filter(
        np.where(valid, score, 0).astype(np.float32),
        sigma_px,
        mode="constant",
        truncate=SMOOTH_TRUNCATE,
    )
    den = ndimage.gaussian_filter(v, sigma_px, mode="constant", truncate=SMOOTH_TRUNCATE)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(valid & (den > 0), num / den, 0.0)
    return out.astype(np.float32)


def disk(radius: int) -> np.ndarray:
    """A boolean disk structuring element of ``radius`` pixels."""
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def box3_sum(x: np.ndarray) -> np.ndarray:
    """Sum over each pixel's 3×3 neighbourhood (outside the array counts as 0), same dtype.

    Notes
    -----
    Separable (rows, then columns) with slice additions: two passes of two adds instead of
    a nine-tap convolution. Purely local, in the same order for every pixel, so a block
    with a 1 px halo gives the whole-image result bit for bit.
    """
    rows = x.copy()
    rows[1:] += x[:-1]
    rows[:-1] += x[1:]
    out = rows.copy()
    out[:, 1:] += rows[:, :-1]
    out[:, :-1] += rows[:, 1:]
    return out


def shift_slices(h: int, w: int, dy: int, dx: int) -> tuple[tuple[slice, slice], ...]:
    """``(dst, src)``: ``array[dst]`` are the pixels ``p`` of an ``h × w`` array whose
    neighbour ``p + (dy, dx)`` is inside it, ``array[src]`` those neighbours."""
    dst = (slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx)))
    src = (slice(max(0, dy), h - max(0, -dy)), slice(max(0, dx), w - max(0, -dx)))
    return dst, src


def _shift_combine(out: np.ndarray, x: np.ndarray, dy: int, dx: int, op: str) -> None:
    """``out[p] = out[p] op x[p + (dy, dx)]`` in place, ``x`` being False outside the array."""
    h, w = x.shape
    if abs(dy) >= h or abs(dx) >= w:
        if op == "and":
            out[:] = False
        return
    dst, src = shift_slices(h, w, dy, dx)
    if op == "or":
        out[dst] |= x[src]
        return
    out[dst] &= x[src]
    if dy > 0:
        out[h - dy :] = False
    elif dy < 0:
        out[:-dy] = False
    if dx > 0:
        out[:, w - dx :] = False
    elif dx < 0:
        out[:, :-dx] = False


def _disk_morphology(mask: np.ndarray, radius: int, op: str) -> np.ndarray:
    """Erosion (``op="and"``) or dilation (``"or"``) by :func:`disk` ``(radius)``.

    The disk is the union of its rows: row ``dy`` is a horizontal run of half-width
    ``isqrt(r² - dy²)``. The horizontal runs are built incrementally (one shift per extra
    pixel), then each is shifted by its ``dy`` and combined: ``4 r`` array passes instead of
    one per disk pixel.
    """
    x = np.ascontiguousarray(mask, dtype=bool)
    if radius <= 0:
        return x.copy()
    runs = [x]
    for k in range(1, radius + 1):
        run = runs[-1].copy()
        _shift_combine(run, x, 0, k, op)
        _shift_combine(run, x, 0, -k, op)
        runs.append(run)
    out = runs[radius].copy()
    for dy in range(1, radius + 1):
        run = runs[math.isqrt(radius * radius - dy * dy)]
        _shift_combine(out, run, dy, 0, op)
        _shift_combine(out, run, -dy, 0, op)
    return out


def erode_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by :func:`disk` ``(radius)``, outside the array counting as False.

    Same result as ``scipy.ndimage.binary_erosion(mask, structure=disk(radius))`` (its default
    ``border_value=0``), several times faster for the small radii of the clean-up: boolean
    slice operations only.
    """
    return _disk_morphology(mask, radius, "and")


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by :func:`disk` ``(radius)``; same result as
    ``scipy.ndimage.binary_dilation(mask, structure=disk(radius))``."""
    return _disk_morphology(mask, radius, "or")
