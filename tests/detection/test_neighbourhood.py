"""Pixel neighbourhoods (pipeline.detection.neighbourhood): disk morphology, 3x3 sums and
smoothing, equal to scipy and independent of the block."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.detection import neighbourhood


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    radius=st.integers(0, 6),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    density=st.floats(0.05, 0.95),
)
def test_disk_morphology_equals_scipy(seed, radius, h, w, density):
    # the slice-based erosion/dilation is a speed-up, not a new definition: it must give
    # scipy.ndimage's result (border_value=0) bit for bit, also on arrays smaller than the disk
    from scipy import ndimage

    mask = np.random.default_rng(seed).random((h, w)) < density
    se = neighbourhood.disk(radius)
    np.testing.assert_array_equal(
        neighbourhood.erode_disk(mask, radius), ndimage.binary_erosion(mask, structure=se)
    )
    np.testing.assert_array_equal(
        neighbourhood.dilate_disk(mask, radius), ndimage.binary_dilation(mask, structure=se)
    )


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), h=st.integers(1, 30), w=st.integers(1, 30))
def test_box3_sum_equals_a_3x3_convolution(seed, h, w):
    from scipy import ndimage

    x = np.random.default_rng(seed).integers(0, 50, (h, w)).astype(np.float32)
    expected = ndimage.convolve(x, np.ones((3, 3), np.float32), mode="constant")
    np.testing.assert_array_equal(neighbourhood.box3_sum(x), expected)  # integers: exact


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), r0=st.integers(0, 30), c0=st.integers(0, 30))
def test_smoothing_on_block_plus_halo_equals_whole_image(seed, r0, c0):
    # Gaussian smoothing reads smoothing_halo(sigma) px around a pixel, nothing more
    rng = np.random.default_rng(seed)
    score = rng.random((60, 70)).astype(np.float32)
    valid = rng.random((60, 70)) > 0.1
    sigma = 1.5
    whole = neighbourhood.smooth_score(score, valid, sigma)
    halo = neighbourhood.smoothing_halo(sigma)
    h, w = 20, 25
    rs, cs = max(0, r0 - halo), max(0, c0 - halo)
    re_, ce = min(60, r0 + h + halo), min(70, c0 + w + halo)
    part = neighbourhood.smooth_score(score[rs:re_, cs:ce], valid[rs:re_, cs:ce], sigma)
    np.testing.assert_array_equal(
        part[r0 - rs : r0 - rs + h, c0 - cs : c0 - cs + w], whole[r0 : r0 + h, c0 : c0 + w]
    )
    assert not whole[~valid].any()
