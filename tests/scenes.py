"""Synthetic two-epoch arrays for the change-score methods (a test helper module).

:func:`irmad_scene` and :func:`irmad_fit` are shared by the IR-MAD and self-training tests.
"""

from __future__ import annotations

import numpy as np

from pipeline.detection import sampling
from pipeline.detection.methods.irmad import IrmadModel, fit_irmad

BANDS = ("blue", "green", "red", "nir")
"""Band names passed to the score functions."""


def irmad_scene(
    seed: int = 0, h: int = 90, w: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Six correlated bands; epoch 2 = a per-band gain/offset of epoch 1 plus noise, and three
    squares whose spectrum changed (a different linear mix of the bands).

    Returns ``(before, after, changed)``: two float32 (6, h, w) arrays and the (h, w) truth.
    """
    rng = np.random.default_rng(seed)
    latent = rng.gamma(4.0, 300.0, (3, h, w))
    mix = rng.uniform(0.2, 1.0, (6, 3))
    before = np.einsum("bk,khw->bhw", mix, latent) + rng.normal(0, 20, (6, h, w))
    gain = np.array([1.2, 0.8, 1.1, 0.9, 1.3, 0.7])[:, None, None]
    offset = np.array([50, -30, 100, 0, 20, 80])[:, None, None]
    after = gain * np.einsum("bk,khw->bhw", mix, latent) + offset + rng.normal(0, 20, (6, h, w))
    squares = [(10, 10, 8), (50, 60, 10), (70, 15, 6)]
    changed = np.zeros((h, w), bool)
    for r, c, s in squares:
        after[:, r : r + s, c : c + s] = rng.uniform(500, 3000, (6, 1, 1))
        changed[r : r + s, c : c + s] = True
    return before.astype(np.float32), after.astype(np.float32), changed


def irmad_fit(before: np.ndarray, after: np.ndarray) -> tuple:
    """Pass 1 on the whole scene (every pixel sampled) and the IR-MAD model fitted to it.

    Returns ``(moments_a, moments_b, values_a, values_b, model)``.
    """
    valid = np.ones(before.shape[1:], bool)
    chunk = sampling.sample_block(before, after, valid, 0, 0, 1, 1, before.shape[2])
    ma, mb, va, vb = sampling.combine_samples([chunk])
    model: IrmadModel = fit_irmad(va, vb)
    return ma, mb, va, vb, model
