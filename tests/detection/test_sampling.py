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


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n_parts=st.integers(1, 12))
def test_moments_total_does_not_depend_on_the_order_of_the_parts(seed, n_parts):
    """Workers hand their chunks back in any order; float sums (warped, non-integer values)
    must come out bit-identical whatever it is."""
    rng = np.random.default_rng(seed)
    parts = [
        sampling.Moments.of(rng.normal(1000, 300, (3, int(rng.integers(0, 50)))))
        for _ in range(n_parts)
    ]
    forward = sampling.Moments.total(parts)
    shuffled = sampling.Moments.total([parts[i] for i in rng.permutation(n_parts)])
    assert forward == shuffled
    assert forward.n == sum(p.n for p in parts)
