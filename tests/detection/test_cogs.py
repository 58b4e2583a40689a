"""Overview pyramids built by the pass-2 workers (pure functions of rasterio_out)."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.detection.io.cogs import change_pyramid, mean_pyramid, overview_factors


def _blocks(x: np.ndarray, f: int, fill) -> np.ndarray:
    """(ceil(h/f), ceil(w/f), f*f) view of ``x`` padded with ``fill``."""
    h, w = x.shape
    hh, ww = -(-h // f), -(-w // f)
    pad = np.full((hh * f, ww * f), fill, dtype=x.dtype)
    pad[:h, :w] = x
    return pad.reshape(hh, f, ww, f).transpose(0, 2, 1, 3).reshape(hh, ww, f * f)


def test_overview_factors_follow_gdal_cog():
    # halve (rounding up) until both sides fit in one 512 px tile
    assert overview_factors(10240, 10240) == [2, 4, 8, 16, 32]
    assert overview_factors(4000, 300) == [2, 4, 8]
    assert overview_factors(512, 512) == []


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    nan_share=st.floats(0, 1),
)
def test_mean_pyramid_is_the_block_mean_of_valid_pixels(seed, h, w, nan_share):
    rng = np.random.default_rng(seed)
    x = rng.random((h, w)).astype(np.float32) * 10
    x[rng.random((h, w)) < nan_share] = np.nan
    for f, level in zip((2, 4, 8), mean_pyramid(x, (2, 4, 8))):
        with warnings.catch_warnings():  # all-NaN blocks: NaN expected
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmean(_blocks(x, f, np.nan).astype(np.float64), axis=2)
        assert level.dtype == np.float32 and level.shape == expected.shape
        np.testing.assert_allclose(level, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), h=st.integers(1, 40), w=st.integers(1, 40))
def test_change_pyramid_keeps_every_change_visible(seed, h, w):
    # 1 = change, 0 = no change, 255 = nodata: a block is 1 if any pixel is, else 0 if any
    # pixel is valid, else 255 — a single changed pixel survives every zoom level
    rng = np.random.default_rng(seed)
    mask = rng.choice(np.array([0, 1, 255], np.uint8), size=(h, w), p=[0.6, 0.05, 0.35])
    for f, level in zip((2, 4, 8), change_pyramid(mask, (2, 4, 8), 1, 0, 255)):
        blocks = _blocks(mask, f, 255)
        expected = np.where((blocks != 255).any(axis=2), 0, 255).astype(np.uint8)
        expected[(blocks == 1).any(axis=2)] = 1
        np.testing.assert_array_equal(level, expected)
