"""The novelty method (pipeline.detection.methods.novelty): rare transitions score high,
common or unchanged ones low."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.bands import NDVI_NONVEG_MAX, vegetation_index
from pipeline.config import DetectConfig
from pipeline.detection import sampling, scores
from pipeline.detection.methods import novelty
from pipeline.errors import ConfigError
from tests.rasters import FACTORY, GROUND, RED_TILE, ROOF, SOIL, VEGETATION
from tests.scenes import BANDS


def _novelty_scene(seed: int = 0):
    """120 x 120 px: the top 30 % is crop land that is ploughed between the dates (a common
    transition); the rest stays vegetated (left) or bare village ground (right); an existing
    blue factory roof (8 x 8 px, in both epochs) is a rare but *unchanged* surface; a red tile
    roof, a concrete roof and a black asphalt roof (6 x 6 px each, the last darker than the
    crops it replaced in every visible band) are new. Epoch 2 has a gain, an offset and more
    noise."""
    rng = np.random.default_rng(seed)
    h = w = 120
    before = np.empty((4, h, w))
    before[:] = np.array(VEGETATION, float)[:, None, None]
    before[:, 36:, 60:] = np.array(GROUND, float)[:, None, None]
    before[:, 100:108, 100:108] = np.array(FACTORY, float)[:, None, None]
    after = before.copy()
    after[:, :36] = np.array(SOIL, float)[:, None, None]
    after[:, 80:86, 20:26] = np.array(RED_TILE, float)[:, None, None]
    after[:, 80:86, 40:46] = np.array(ROOF, float)[:, None, None]
    after[:, 90:96, 20:26] = np.array(ASPHALT, float)[:, None, None]
    after = after * np.array([1.05, 0.95, 1.1, 0.9])[:, None, None] + 80.0
    before += rng.normal(0, 30, before.shape)
    after += rng.normal(0, 45, after.shape)
    return before.astype(np.float32), after.astype(np.float32), np.ones((h, w), bool)


ASPHALT = (330, 360, 380, 420)
"""A black asphalt roof (blue, green, red, nir): darker than crops in every visible band."""


def _fit(before, after, valid, **kw):
    """The novelty model of the whole scene; trimmed as configured by default."""
    chunk = sampling.sample_block(before, after, valid, 0, 0, 1, 1, before.shape[2])
    ma, mb, va, vb = sampling.combine_samples([chunk])
    norm = scores.normalisation(ma, mb, "zscore", before.shape[0])
    kw = {"n_components": 4, "min_weight": 0.05, "trim": DetectConfig().novelty_trim} | kw
    return norm, novelty.fit_novelty_model(va, vb, norm, **kw)


def test_novelty_scores_rare_transitions_high_and_common_or_unchanged_ones_low():
    before, after, valid = _novelty_scene()
    norm, model = _fit(before, after, valid)
    score = scores.change_score(before, after, valid, norm, "novelty", BANDS, model)
    assert score.dtype == np.float32
    ploughed, unchanged = score[5:30, 5:115], score[50:75, :]
    factory = score[101:107, 101:107]
    red, concrete = score[81:85, 21:25], score[81:85, 41:45]
    # new roofs of every colour stand far out of the common transitions, the black one too
    # (no brighter than the crops, but it lost their vegetation)...
    assert red.min() > 6 and concrete.min() > 6
    assert score[91:95, 21:25].min() > 6
    # ...a large seasonal change, unchanged land and a rare unchanged roof do not (the 99th
    # percentile of a chi distribution with 8 degrees of freedom is 4.5)
    assert np.percentile(ploughed, 99) < 5
    assert np.percentile(unchanged, 99) < 5
    assert factory.max() < 5


def test_novelty_on_rgb_only_imagery_scores_new_roofs_high():
    # without nir the vegetation gate uses 3 × VDVI of the visible bands
    before, after, valid = _novelty_scene()
    norm, model = _fit(before[:3], after[:3], valid)
    score = scores.change_score(before[:3], after[:3], valid, norm, "novelty", BANDS[:3], model)
    red, concrete = score[81:85, 21:25], score[81:85, 41:45]
    assert red.min() > 6 and concrete.min() > 6
    assert np.percentile(score[5:30, 5:115], 99) < 5  # ploughed
    assert np.percentile(score[50:75, :], 99) < 5  # unchanged
    assert score[101:107, 101:107].max() < 5  # the existing factory roof


def test_novelty_without_model_or_vegetation_bands_is_a_config_error():
    before, after, valid = _novelty_scene()
    norm, model = _fit(before, after, valid)
    with pytest.raises(ConfigError, match="novelty model"):
        scores.change_score(before, after, valid, norm, "novelty", BANDS)
    # neither nir (NDVI) nor blue, green and red (VDVI)
    with pytest.raises(ConfigError, match="without a nir band needs the band"):
        scores.change_score(before[1:3], after[1:3], valid, norm, "novelty", BANDS[1:3], model)


def test_novelty_model_is_deterministic():
    before, after, valid = _novelty_scene()
    _, m1 = _fit(before, after, valid)
    _, m2 = _fit(before, after, valid)
    np.testing.assert_array_equal(m1.quad, m2.quad)
    assert m1.weights == m2.weights


@settings(max_examples=25, deadline=None)
@given(r0=st.integers(0, 100), c0=st.integers(0, 100), h=st.integers(1, 20), w=st.integers(1, 20))
def test_novelty_score_of_a_pixel_does_not_depend_on_the_block(r0, c0, h, w):
    """Block-size independence: a crop scores bit-identically to the same pixels of the whole."""
    before, after, valid = _SCENE
    whole = scores.change_score(before, after, valid, _NORM, "novelty", BANDS, _MODEL)
    sl = (slice(r0, r0 + h), slice(c0, c0 + w))
    part = scores.change_score(
        before[:, sl[0], sl[1]], after[:, sl[0], sl[1]], valid[sl], _NORM, "novelty", BANDS, _MODEL
    )
    np.testing.assert_array_equal(part, whole[sl])


_SCENE = _novelty_scene(seed=3)


_NORM, _MODEL = _fit(*_SCENE)


def _catch_all_scene(seed: int = 0):
    """A small scene where plain EM goes wrong: 60 x 60 px of one crop that is ploughed in
    its top half (common), plus 1.5 % of pixels scattered singly (no spatial structure) that
    turn into blue steel roofs of random brightness — rare change, spread widely in spectrum,
    the kind a broad low-weight mixture component absorbs."""
    rng = np.random.default_rng(seed)
    h = w = 60
    before = np.empty((4, h, w))
    before[:] = np.array(VEGETATION, float)[:, None, None]
    after = before.copy()
    after[:, :30] = np.array(SOIL, float)[:, None, None]
    rare = rng.choice(h * w, size=54, replace=False)
    rr, cc = np.unravel_index(rare, (h, w))
    bright = rng.uniform(0.6, 1.4, rare.size)
    after[:, rr, cc] = np.array(FACTORY, float)[:, None] * bright
    before += rng.normal(0, 30, before.shape)
    after += rng.normal(0, 30, after.shape)
    return before.astype(np.float32), after.astype(np.float32), np.ones((h, w), bool), (rr, cc)


def test_trimmed_mixture_does_not_absorb_rare_change():
    # with 6 components and a 1 % weight floor, plain EM may spend a component on the rare
    # roofs; trimming the least likely 3 % of the sample from every M-step cannot (the roofs
    # are 1.5 %), so every roof pixel stays far from the common transitions
    before, after, valid, (rr, cc) = _catch_all_scene()
    norm, model = _fit(before, after, valid, n_components=6, min_weight=0.01, trim=0.03)
    score = scores.change_score(before, after, valid, norm, "novelty", BANDS, model)
    assert np.percentile(score[rr, cc], 5) > 6
    common = np.ones(valid.shape, bool)
    common[rr, cc] = False
    assert np.percentile(score[common], 99) < 5


def test_novelty_distance_matches_a_float64_whitened_mahalanobis():
    # the fast path (gates first, float32 expanded quadratic forms) equals the textbook
    # distance min_k ||L_k^-1 (x - mu_k)|| to the components and the no-change relation
    before, after, valid = _SCENE
    score = scores.change_score(before, after, valid, _NORM, "novelty", BANDS, _MODEL)
    cand = np.flatnonzero(score.ravel() > 0)[::7]
    za = novelty._z(before.reshape(4, -1)[:, cand], _NORM.mean_a, _NORM.std_a)
    zb = novelty._z(after.reshape(4, -1)[:, cand], _NORM.mean_b, _NORM.std_b)
    x = np.concatenate([za, zb])
    feats = novelty._quadratic_features(x)
    d2_64 = (_MODEL.quad.astype(np.float64) @ feats).min(axis=0)
    veg = vegetation_index(after.reshape(4, -1)[:, cand], BANDS)
    lo, hi = NDVI_NONVEG_MAX, novelty.NOVELTY_NDVI_ZERO
    nonveg = np.clip((hi - veg) / (hi - lo), 0, 1)
    expected = np.sqrt(np.maximum(d2_64, 0)) * nonveg
    np.testing.assert_allclose(score.ravel()[cand], expected, rtol=1e-3, atol=1e-2)


def test_quadratic_form_is_the_squared_mahalanobis_distance():
    rng = np.random.default_rng(5)
    m = rng.normal(size=(4, 4))
    cov = m @ m.T + np.eye(4)
    mu = rng.normal(size=4)
    prec = np.linalg.inv(cov)
    x = rng.normal(size=(4, 50))
    q = novelty._quadratic_form(prec, mu @ prec, None, mu)
    expected = np.einsum("in,ij,jn->n", x - mu[:, None], prec, x - mu[:, None])
    np.testing.assert_allclose(q @ novelty._quadratic_features(x), expected, rtol=1e-9)
