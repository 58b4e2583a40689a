"""IR-MAD (pipeline.detection.methods.irmad): chi-square scores, invariance to gain and offset,
and the regression normalisation it gives."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.detection import sampling, scores
from pipeline.errors import ConfigError
from tests.scenes import BANDS, irmad_fit, irmad_scene


def test_irmad_flags_changed_squares_and_is_chi2_elsewhere():
    before, after, changed = irmad_scene()
    *_, model = irmad_fit(before, after)
    valid = np.ones(changed.shape, bool)
    z = scores.change_score(before, after, valid, None, "irmad", BANDS, model)
    assert z.dtype == np.float32
    cut = scores.threshold(z[valid].ravel(), "chi2", 0.999, nbands=6, squared=True)
    # every changed pixel is far out of chi2(6); the unchanged ones follow it (mean ≈ 6,
    # about 0.1 % above the 0.999 quantile)
    assert z[changed].min() > cut
    assert 5.0 < z[~changed].mean() < 7.0
    assert (z[~changed] > cut).mean() < 0.005
    # the linear radiometric change is absorbed: the three signal dimensions (of the latent
    # covers) correlate ≈ 1 across dates, the three pure-noise dimensions do not
    assert sorted(model.rho)[-3] > 0.99 and sorted(model.rho)[2] < 0.5


def test_irmad_is_invariant_to_a_gain_and_offset_of_either_epoch():
    before, after, _ = irmad_scene(seed=3)
    valid = np.ones(before.shape[1:], bool)
    *_, m1 = irmad_fit(before, after)
    scaled = (after * np.float32(2.5) + np.float32(300)).astype(np.float32)
    *_, m2 = irmad_fit(before, scaled)
    z1 = scores.change_score(before, after, valid, None, "irmad", BANDS, m1)
    z2 = scores.change_score(before, scaled, valid, None, "irmad", BANDS, m2)
    # equal up to the float32 application and the convergence tolerance of the fit
    np.testing.assert_allclose(z1, z2, rtol=1e-2, atol=0.05)


@settings(max_examples=20, deadline=None)
@given(r0=st.integers(0, 60), c0=st.integers(0, 60), h=st.integers(1, 30), w=st.integers(1, 40))
def test_irmad_score_of_a_pixel_does_not_depend_on_the_block(r0, c0, h, w):
    # the MAD transform is applied pixel by pixel: any block gives the whole-image values
    before, after, _ = irmad_scene(seed=1)
    *_, model = irmad_fit(before, after)
    valid = np.ones(before.shape[1:], bool)
    whole = scores.change_score(before, after, valid, None, "irmad", BANDS, model)
    win = (slice(r0, r0 + h), slice(c0, c0 + w))
    part = scores.change_score(
        before[:, win[0], win[1]], after[:, win[0], win[1]], valid[win], None, "irmad", BANDS, model
    )
    np.testing.assert_array_equal(part, whole[win])


def test_irmad_regression_normalisation_recovers_the_gain_and_offset():
    before, after, _ = irmad_scene(seed=2)
    ma, mb, va, vb, model = irmad_fit(before, after)
    norm = scores.normalisation(ma, mb, "irmad_regression", 6, va, vb, model)
    # z_b = ((y - o) / g - mean_a) / std_a, so std_b / std_a = g and the offset follows
    gain = np.array(norm.std_b) / np.array(norm.std_a)
    offset = np.array(norm.mean_b) - gain * np.array(norm.mean_a)
    np.testing.assert_allclose(gain, [1.2, 0.8, 1.1, 0.9, 1.3, 0.7], rtol=0.03)
    np.testing.assert_allclose(offset, [50, -30, 100, 0, 20, 80], atol=40)
    with pytest.raises(ConfigError, match="sample"):
        scores.normalisation(ma, mb, "irmad_regression", 6)


def test_irmad_without_model_is_a_config_error():
    a = np.ones((1, 2, 2), np.float32)
    norm = scores.normalisation(sampling.Moments(), sampling.Moments(), "none", 1)
    with pytest.raises(ConfigError, match="IR-MAD model"):
        scores.change_score(a, a, np.ones((2, 2), bool), norm, "irmad", ("red",))
