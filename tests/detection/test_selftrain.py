"""The self-trained method (pipeline.detection.methods.selftrain): examples from IR-MAD,
nuisance pixels, context features."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.detection import sampling, scores
from pipeline.detection.methods import selftrain
from pipeline.detection.methods.irmad import fit_irmad
from pipeline.errors import ConfigError, InputDataError
from tests.scenes import BANDS, irmad_fit, irmad_scene


def _selftrain_fit(before, after, **kw):
    *_, va, vb, irmad = irmad_fit(before, after)
    kw = {"change_quantile": 0.98, "nochange_quantile": 0.8, **kw}
    return selftrain.fit_self_train(va, vb, irmad, **kw)


def test_selftrain_scores_changed_squares_high_and_unchanged_pixels_low():
    # the squares (≈ 2.7 % of the scene) are the confident IR-MAD change; the classifier
    # trained on them gives every changed pixel P > 0.5 and almost no unchanged pixel
    before, after, changed = irmad_scene()
    model = _selftrain_fit(before, after)
    valid = np.ones(changed.shape, bool)
    p = scores.change_score(before, after, valid, None, "selftrain", BANDS, model)
    assert p.dtype == np.float32
    assert p.min() >= 0.0 and p.max() <= 1.0
    assert (p[changed] > 0.5).mean() > 0.95
    assert (p[~changed] > 0.5).mean() < 0.02


def test_selftrain_model_is_deterministic_and_invalid_pixels_score_zero():
    before, after, changed = irmad_scene(seed=4)
    m1, m2 = _selftrain_fit(before, after), _selftrain_fit(before, after)
    assert (m1.coef, m1.intercept, m1.change_cut) == (m2.coef, m2.intercept, m2.change_cut)
    valid = np.ones(changed.shape, bool)
    valid[:5] = False
    p = scores.change_score(before, after, valid, None, "selftrain", BANDS, m1)
    assert (p[:5] == 0).all()


@functools.cache
def _selftrain_whole():
    """Scene, model and whole-image score shared by the Hypothesis examples (fitted once)."""
    before, after, _ = irmad_scene(seed=1)
    model = _selftrain_fit(before, after)
    valid = np.ones(before.shape[1:], bool)
    return (
        before,
        after,
        model,
        scores.change_score(before, after, valid, None, "selftrain", BANDS, model),
    )


@settings(max_examples=20, deadline=None)
@given(r0=st.integers(0, 60), c0=st.integers(0, 60), h=st.integers(1, 30), w=st.integers(1, 40))
def test_selftrain_score_of_a_pixel_does_not_depend_on_the_block(r0, c0, h, w):
    # features are elementwise and summed feature by feature: any block gives the
    # whole-image values bit for bit
    before, after, model, whole = _selftrain_whole()
    valid = np.ones(before.shape[1:], bool)
    win = (slice(r0, r0 + h), slice(c0, c0 + w))
    part = scores.change_score(
        before[:, win[0], win[1]],
        after[:, win[0], win[1]],
        valid[win],
        None,
        "selftrain",
        BANDS,
        model,
    )
    np.testing.assert_array_equal(part, whole[win])


def test_selftrain_without_model_or_examples_is_an_error():
    a = np.ones((1, 2, 2), np.float32)
    with pytest.raises(ConfigError, match="self-trained model"):
        scores.change_score(a, a, np.ones((2, 2), bool), None, "selftrain", ("red",))
    before, after, _ = irmad_scene(h=20, w=20)
    *_, va, vb, irmad = irmad_fit(before, after)
    with pytest.raises(InputDataError, match="examples"):
        selftrain.fit_self_train(
            va[:, :120], vb[:, :120], irmad, change_quantile=0.99, nochange_quantile=0.5
        )


def test_nuisance_pixels_are_vegetation_or_water_in_both_epochs():
    names = ("blue", "green", "red", "nir", "swir1", "swir2")
    #                  blue green red  nir  swir1 swir2
    veg = np.array([300, 600, 300, 3000, 1500, 800], np.float32)
    soil = np.array([900, 1100, 1300, 1800, 2500, 2200], np.float32)
    water = np.array([700, 800, 500, 300, 100, 80], np.float32)
    a = np.stack([veg, veg, soil, water, water], axis=1)[:, :, None]  # (bands, 5 px, 1)
    b = np.stack([veg * 1.3, soil, veg, water * 0.5, soil], axis=1)[:, :, None]
    got = selftrain.nuisance_pixels(a, b, names)[:, 0]
    # veg→veg and water→water are nuisance; veg→soil, soil→veg, water→soil are not
    assert got.tolist() == [True, False, False, True, False]
    # without swir1 the water test is skipped; without band names nothing is nuisance
    assert selftrain.nuisance_pixels(a[:4], b[:4], names[:4])[:, 0].tolist() == [
        True,
        False,
        False,
        False,
        False,
    ]
    assert not selftrain.nuisance_pixels(a, b, ()).any()
    # RGB only: the vegetation test uses 3 × VDVI of the visible bands
    assert selftrain.nuisance_pixels(a[:3], b[:3], names[:3])[:, 0].tolist() == [
        True,
        False,
        False,
        False,
        False,
    ]


def test_selftrain_features_take_the_vegetation_index_by_band_name():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(200, 3000, (2, 4, 5, 6)).astype(np.float32)
    z = rng.uniform(0, 10, (5, 6)).astype(np.float32)
    rgbn = selftrain.self_train_features(a, b, z, None, BANDS)
    rgb = selftrain.self_train_features(a[:3], b[:3], z, None, BANDS[:3])
    # log bands of both epochs and their difference, the vegetation index (before, after,
    # change), log1p(z)
    assert len(rgbn) == 3 * 4 + 3 + 1 and len(rgb) == 3 * 3 + 3 + 1
    np.testing.assert_allclose(rgbn[12], (a[3] - a[2]) / (a[3] + a[2]), rtol=1e-5)  # NDVI
    g, r, bl = a[1], a[2], a[0]
    vdvi = np.clip(3 * (2 * g - r - bl) / (2 * g + r + bl), -1, 1)
    np.testing.assert_allclose(rgb[9], vdvi, rtol=1e-5, atol=1e-6)


def test_selftrain_examples_never_take_nuisance_pixels_as_change():
    # the strongest IR-MAD changes here are nuisance (say, crops growing): they become
    # no-change examples and the change cut is taken over the other pixels only
    rng = np.random.default_rng(0)
    z = rng.chisquare(6, 5000)
    nuisance = np.zeros(5000, bool)
    nuisance[z > np.quantile(z, 0.97)] = True  # the top 3 % are nuisance
    pos, neg, hi, lo = selftrain.self_train_examples(z, nuisance, 0.99, 0.8)
    assert not (pos & nuisance).any() and nuisance[~pos].sum() == nuisance.sum()
    assert (neg[nuisance]).all() and not (pos & neg).any()
    assert np.isclose(pos.sum(), 0.01 * (~nuisance).sum(), atol=2)
    assert hi == np.quantile(z[~nuisance], 0.99) and lo == np.quantile(z, 0.8)
    # nothing nuisance: the plain quantile rule
    pos2, neg2, *_ = selftrain.self_train_examples(z, np.zeros(5000, bool), 0.99, 0.8)
    assert pos2.sum() == (z >= np.quantile(z, 0.99)).sum() and neg2.sum() == 4000


def test_shift_tolerant_difference_ignores_a_one_pixel_shift_but_not_new_objects():
    # epoch B is epoch A moved by one pixel (misregistration) plus a new bright square: the
    # plain difference is large along every edge, the shift-tolerant one only on the square
    rng = np.random.default_rng(0)
    a = rng.uniform(200, 3000, (4, 40, 40)).astype(np.float32)
    b = np.roll(a, 1, axis=2)
    b[:, 10:20, 10:20] = 9000.0
    valid = np.ones((40, 40), bool)
    d = selftrain.shift_tolerant_difference(a, b, valid)
    square = np.zeros((40, 40), bool)
    square[10:20, 10:20] = True
    assert d.dtype == np.float32
    # b(x) = a(x - 1 column) exactly everywhere but the square (and column 0, wrapped round)
    assert d[:, 1:][~square[:, 1:]].max() == 0.0
    assert d[11:19, 11:19].min() > 3.0  # log1p(100 * d2) with d2 ≥ 0.5
    # invalid neighbours are skipped: no valid pixel around -> 0
    assert selftrain.shift_tolerant_difference(a, b, np.zeros((40, 40), bool)).max() == 0.0


def test_shift_tolerant_difference_on_block_plus_halo_equals_whole_image():
    rng = np.random.default_rng(1)
    a = rng.uniform(200, 3000, (3, 30, 36)).astype(np.float32)
    b = rng.uniform(200, 3000, (3, 30, 36)).astype(np.float32)
    valid = rng.random((30, 36)) > 0.1
    whole = selftrain.shift_tolerant_difference(a, b, valid)
    part = selftrain.shift_tolerant_difference(
        a[:, 9:21, 4:30], b[:, 9:21, 4:30], valid[9:21, 4:30]
    )
    np.testing.assert_array_equal(part[1:-1, 1:-1], whole[10:20, 5:29])


def test_vegetation_change_and_weight():
    names = ("blue", "green", "red", "nir")
    a = np.zeros((4, 10, 10), np.float32)
    a[2], a[3] = 500, 3000  # NDVI 0.714
    b = a.copy()
    b[2, :, 5:], b[3, :, 5:] = 2000, 2200  # cleared: NDVI 0.048 on the right half
    valid = np.ones((10, 10), bool)
    w = selftrain.vegetation_change(a, b, valid, names, 0.0)
    np.testing.assert_allclose(w[:, :5], 0.0)
    np.testing.assert_allclose(w[:, 5:], 2500 / 3500 - 200 / 4200, rtol=1e-5)
    # neither nir nor all three visible bands: no vegetation index
    assert not selftrain.vegetation_change(a[1:3], b[1:3], valid, names[1:3], 1.0).any()
    rgb_a, rgb_b = a[:3].copy(), b[:3].copy()
    rgb_a[:2], rgb_b[:2] = 300, 300  # blue, green: crops are green, the cleared half is not
    rgb_a[1], rgb_b[1, :, :5] = 900, 900
    w_rgb = selftrain.vegetation_change(rgb_a, rgb_b, valid, names[:3], 0.0)
    np.testing.assert_allclose(w_rgb[:, :5], 0.0)
    assert (w_rgb[:, 5:] > 1.5).all()  # 3 × VDVI fell from 1 to −1 (clipped)
    score = np.full((10, 10), 0.8, np.float32)
    ref = float(w[0, 9])
    out = selftrain.vegetation_weight(score, w, ref)
    np.testing.assert_allclose(out[:, 5:], 0.8, rtol=1e-6)  # as much change as the reference
    c = selftrain.VEG_WEIGHT_OFFSET
    np.testing.assert_allclose(out[:, :5], 0.8 * np.sqrt(c / (c + ref)), rtol=1e-5)


def test_selftrain_with_context_is_fitted_and_scores_like_without_on_plain_change():
    # the context features of the pass-1 sample (here: every pixel) feed the same model the
    # blocks use; the changed squares stay above the cut
    before, after, changed = irmad_scene()
    names = ("blue", "green", "red", "nir", "swir1", "swir2")
    valid = np.ones(changed.shape, bool)
    ctx = selftrain.self_train_context(before, after, valid, names, 0.0)
    chunk = sampling.sample_block(before, after, valid, 0, 0, 1, 1, before.shape[2], ctx)
    *_, va, vb = sampling.combine_samples([chunk])
    context = sampling.combine_context([chunk])
    assert context.shape == (2, va.shape[1])
    irmad = fit_irmad(va, vb)
    model = selftrain.fit_self_train(
        va,
        vb,
        irmad,
        change_quantile=0.98,
        nochange_quantile=0.8,
        band_names=names,
        context=context,
        shift_feature=True,
        vegetation_weight=True,
    )
    assert model.shift_feature and model.vegetation_ref is not None
    assert len(model.coef) == len(selftrain.self_train_features(va, vb, va[0], va[0], names))
    p = scores.change_score(before, after, valid, None, "selftrain", names, model)
    assert (p[changed] > 0.5).mean() > 0.9 and (p[~changed] > 0.5).mean() < 0.05
    with pytest.raises(ValueError, match="context"):
        selftrain.fit_self_train(
            va, vb, irmad, change_quantile=0.98, nochange_quantile=0.8, shift_feature=True
        )
