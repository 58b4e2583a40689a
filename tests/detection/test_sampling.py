"""Pass-1 sampling (pipeline.detection.sampling): global sample rows, exact moments."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.detection import sampling


@settings(max_examples=50, deadline=None)
@given(
    offset=st.integers(0, 50),
    length=st.integers(1, 80),
    step=st.integers(1, 7),
    cut=st.integers(1, 79),
)
def test_sampling_uses_global_indices_whatever_the_split(offset, length, step, cut):
    # the sampled global rows of two halves of a range == those of the whole range
    cut = min(cut, length)
    whole = np.arange(offset, offset + length)[
        sampling.sample_slices(offset, 0, length, 1, step)[0]
    ]
    parts = []
    for start, n in ((offset, cut), (offset + cut, length - cut)):
        parts.extend(np.arange(start, start + n)[sampling.sample_slices(start, 0, n, 1, step)[0]])
    assert list(whole) == parts
    assert all(r % step == 0 for r in parts)


def test_moments_are_exact_and_additive_for_integer_data():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 10000, size=(3, 1000)).astype(np.float32)
    total = sampling.Moments.of(v[:, :300]) + sampling.Moments.of(v[:, 300:])
    assert total == sampling.Moments.of(v)
    mean, std = total.mean_std()
    np.testing.assert_allclose(mean, v.astype(np.float64).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(std, v.astype(np.float64).std(axis=1), rtol=1e-9)
