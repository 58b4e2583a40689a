"""Pure detection: sampling, global statistics, scores, thresholds, clean-up, change type."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.detection import neighbourhood, sampling
from pipeline.detection import scores as detect
from pipeline.detection import target_grid as grid
from pipeline.detection.change_type import classify_change
from pipeline.detection.methods import novelty, selftrain
from pipeline.detection.methods.irmad import fit_irmad
from pipeline.errors import ConfigError, InputDataError
from pipeline.schema import ChangeType
from tests.rasters import ROOF, SOIL, VEGETATION, scene

BANDS = ("blue", "green", "red", "nir")


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


def test_cva_score_is_the_change_vector_magnitude_and_zero_where_invalid():
    a = np.zeros((2, 1, 3), np.float32)
    b = np.array([[[3, 0, 3]], [[4, 1, 4]]], np.float32)
    valid = np.array([[True, True, False]])
    norm = detect.normalisation(sampling.Moments(), sampling.Moments(), "none", 2)
    score = detect.change_score(a, b, valid, norm, "cva", ("red", "nir"))
    np.testing.assert_allclose(score, [[5.0, 1.0, 0.0]])


def test_index_method_needs_red_and_nir():
    norm = detect.normalisation(sampling.Moments(), sampling.Moments(), "none", 2)
    a = np.ones((2, 2, 2), np.float32)
    with pytest.raises(ConfigError, match="nir"):
        detect.change_score(a, a, np.ones((2, 2), bool), norm, "index", ("blue", "red"))


def test_unknown_method_is_a_config_error():
    norm = detect.normalisation(sampling.Moments(), sampling.Moments(), "none", 1)
    a = np.ones((1, 2, 2), np.float32)
    with pytest.raises(ConfigError, match="magic"):
        detect.change_score(a, a, np.ones((2, 2), bool), norm, "magic", ("red",))


def test_thresholds():
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.normal(1, 0.3, 5000), rng.normal(8, 0.5, 500)])
    assert 2 < detect.threshold(scores, "otsu") < 7
    assert detect.threshold(scores, "fixed", 3.5) == 3.5
    # chi2 on pure no-change noise of 4 bands: ~1 % of pixels above the 0.99 cut
    noise = np.sqrt((rng.normal(0, 0.7, (4, 20000)) ** 2).sum(axis=0))
    cut = detect.threshold(noise, "chi2", 0.99, nbands=4)
    assert 0.005 < (noise > cut).mean() < 0.02


def _pipeline(a, b, valid, step=1):
    """Whole-image detection with the pure functions (zscore CVA, Otsu, 1 px clean-up)."""
    w = valid.shape[1]
    chunk = sampling.sample_block(a, b, valid, 0, 0, step, 1, w)
    ma, mb, va, vb = sampling.combine_samples([chunk])
    norm = detect.normalisation(ma, mb, "zscore", 4)
    s = detect.change_score(
        va[:, :, None], vb[:, :, None], np.ones((va.shape[1], 1), bool), norm, "cva", BANDS
    )
    cut = detect.threshold(s.ravel(), "otsu")
    score = detect.change_score(a, b, valid, norm, "cva", BANDS)
    return detect.clean_mask(detect.change_mask(score, valid, cut), valid, 1, 1)


def test_synthetic_pair_recovers_changed_squares_and_never_flags_invalid_pixels():
    squares = [(10, 10, 12), (40, 50, 20)]
    a = scene((80, 90), seed=1).astype(np.float32)
    b = scene((80, 90), squares, seed=2).astype(np.float32)
    valid = np.ones((80, 90), bool)
    valid[45:50, 55:65] = False  # cloud inside a changed square
    mask = _pipeline(a, b, valid, step=2)
    truth = np.zeros_like(valid)
    for r, c, s in squares:
        truth[r : r + s, c : c + s] = True
    assert not mask[~valid].any()
    assert not (mask & ~truth).any()  # no false alarm in the noisy vegetation
    # opening with a radius-1 disk chips the corners of each square (and of the cloud hole)
    missed = truth & valid & ~mask
    assert missed.sum() <= 4 * len(squares) + 8


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    open_px=st.integers(0, 2),
    close_px=st.integers(0, 2),
    bh=st.integers(5, 40),
    bw=st.integers(5, 40),
)
def test_clean_up_on_block_plus_halo_equals_whole_image(seed, open_px, close_px, bh, bw):
    # the halo from cleaning_halo makes blockwise clean-up identical to the whole image
    rng = np.random.default_rng(seed)
    h, w = 50, 60
    mask = rng.random((h, w)) < 0.45
    valid = rng.random((h, w)) > 0.05
    halo = detect.cleaning_halo(open_px, close_px)
    pad = lambda x: np.pad(x, halo + 1)  # noqa: E731 - outside the image = no change
    whole = detect.clean_mask(pad(mask), pad(valid), open_px, close_px)[
        halo + 1 : halo + 1 + h, halo + 1 : halo + 1 + w
    ]
    out = np.zeros_like(mask)
    pm, pv = pad(mask), pad(valid)
    for r in range(0, h, bh):
        for c in range(0, w, bw):
            rr, cc = r + 1, c + 1  # +1: position in the padded array minus the halo
            sub = (
                slice(rr, rr + min(bh, h - r) + 2 * halo),
                slice(cc, cc + min(bw, w - c) + 2 * halo),
            )
            res = detect.clean_mask(pm[sub], pv[sub], open_px, close_px)
            out[r : r + bh, c : c + bw] = res[
                halo : halo + min(bh, h - r), halo : halo + min(bw, w - c)
            ]
    np.testing.assert_array_equal(out, whole)


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


# --------------------------------------------------------------------------- change type
def _classify(before, after, scene_before=VEGETATION, scene_after=VEGETATION):
    f = {b: np.array([v], float) for b, v in zip(BANDS, before)}
    t = {b: np.array([v], float) for b, v in zip(BANDS, after)}
    return classify_change(f, t, dict(zip(BANDS, scene_before)), dict(zip(BANDS, scene_after)))[0]


def test_roof_is_construction():
    assert _classify(VEGETATION, ROOF) == ChangeType.CONSTRUCTION


def test_blue_steel_roof_is_construction():
    assert _classify(VEGETATION, (2600, 2200, 1500, 1700)) == ChangeType.CONSTRUCTION


def test_fill_soil_is_bare():
    assert _classify(VEGETATION, SOIL) == ChangeType.EARTHWORKS


def test_vegetation_growth_is_other():
    assert _classify(SOIL, VEGETATION) == ChangeType.OTHER


def test_change_type_is_scale_free():
    # the same spectra as float reflectance (÷ 10000) give the same answers
    s = 1e-4
    scaled = lambda x: tuple(v * s for v in x)  # noqa: E731
    assert _classify(scaled(VEGETATION), scaled(ROOF), scaled(VEGETATION), scaled(VEGETATION)) == (
        ChangeType.CONSTRUCTION
    )


def test_change_type_without_all_bands_is_other():
    f = {"red": np.array([500.0]), "nir": np.array([3000.0])}
    t = {"red": np.array([2400.0]), "nir": np.array([2600.0])}
    assert classify_change(f, t, {"red": 1.0}, {"red": 1.0})[0] == ChangeType.OTHER


def test_refine_edges_recovers_half_covered_pixels():
    """A blurred 8×8 px roof thresholded at its core loses its mixed outline; refining with
    ratio 0.5 gives back the pixels at least half covered, so the area is about right."""
    from scipy import ndimage

    from pipeline.detection.scores import refine_edges

    truth = np.zeros((40, 40), dtype=bool)
    truth[10:18, 10:18] = True
    score = ndimage.uniform_filter(truth.astype(np.float32) * 4.0, size=3)  # mixed edges
    valid = np.ones_like(truth)
    core = score > 3.0
    refined = refine_edges(core, score, valid, 0.5)
    # core 6×6 = 36 px; refined = 64 minus the 4 corners (their blurred cover is 4/9 < 0.5)
    assert core.sum() == 36 and refined.sum() == truth.sum() - 4
    assert not (refined & ~ndimage.binary_dilation(truth)).any()  # never beyond one pixel
    assert not refine_edges(core, score, ~valid, 0.5).any()  # invalid pixels never change


def test_edge_refinement_does_not_join_a_building_to_the_specks_around_it():
    """A clear 8×8 px roof (score 10, blurred over 3×3 like a real sensor) on a field of weak
    score (3), with one-pixel specks at the low cut (5) a few pixels from its outline. The
    opening removes the specks first, so the refinement grows the roof's outline only: the
    patch is the roof plus at most its rim, with a high mean. Refining the raw mask grows every
    speck too, and the rims join the roof and the specks into one larger patch whose mean is
    below a ``min_mean_score`` of 0.9 × the cut — which would drop the roof with its specks."""
    from scipy import ndimage

    roof = np.zeros((40, 40), dtype=np.float32)
    roof[16:24, 16:24] = 1.0
    score = 3.0 + 7.0 * ndimage.uniform_filter(roof, size=3)
    ring = range(12, 28, 3)  # a ring of specks every 3 px, 3–4 px outside the roof
    specks = {(12, c) for c in ring} | {(27, c) for c in ring}
    specks |= {(r, 12) for r in ring} | {(r, 27) for r in ring}
    for r, c in specks:
        score[r, c] = 5.0
    valid = np.ones(score.shape, dtype=bool)
    cut, min_mean = 6.0, 0.9 * 6.0
    mask = detect.change_mask(score, valid, cut, 0.7)  # low cut 4.2: the roof and the specks
    assert all(mask[r, c] for r, c in specks)

    out = detect.clean_mask(mask, valid, 1, 1, score=score, edge_ratio=0.5)
    labels, n = ndimage.label(out, np.ones((3, 3)))
    patch = labels == labels[20, 20]
    assert n == 1 and not any(out[r, c] for r, c in specks)
    assert patch.sum() <= 12 * 12  # the roof's low-cut footprint grown by one pixel at most
    assert score[patch].mean() >= min_mean

    # the order this replaces: refine the raw mask, then clean — roof, rims and specks merge
    joined = detect.clean_mask(detect.refine_edges(mask, score, valid, 0.5), valid, 1, 1)
    labels, _ = ndimage.label(joined, np.ones((3, 3)))
    merged = labels == labels[20, 20]
    assert all(merged[r, c] for r, c in specks)
    assert score[merged].mean() < min_mean


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), strip=st.integers(1, 400))
def test_cva_in_strips_is_bit_identical_whatever_the_strip_size(seed, strip):
    """The strip-wise CVA gives every pixel the same operations in the same order: the same
    float32 bits for any strip size, and the change-vector magnitude up to rounding."""
    rng = np.random.default_rng(seed)
    nb, h, w = 3, int(rng.integers(1, 40)), int(rng.integers(1, 60))
    a = rng.uniform(0, 3000, (nb, h, w)).astype(np.float32)
    b = rng.uniform(0, 3000, (nb, h, w)).astype(np.float32)
    norm = sampling.Normalisation(
        tuple(rng.uniform(500, 1500, nb)),
        tuple(rng.uniform(100, 400, nb)),
        tuple(rng.uniform(500, 1500, nb)),
        tuple(rng.uniform(100, 400, nb)),
    )
    whole = detect._cva(a, b, norm)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(grid, "STRIP_PX", strip)
        strips = detect._cva(a, b, norm)
    np.testing.assert_array_equal(strips, whole)
    za = (a - np.array(norm.mean_a)[:, None, None]) / np.array(norm.std_a)[:, None, None]
    zb = (b - np.array(norm.mean_b)[:, None, None]) / np.array(norm.std_b)[:, None, None]
    np.testing.assert_allclose(whole, np.sqrt(((zb - za) ** 2).sum(axis=0)), rtol=1e-4, atol=1e-3)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), ratio=st.floats(0.1, 1.0))
def test_refine_edges_equals_the_3x3_definition(seed, ratio):
    """A pixel next to the mask (not in it, valid) joins when its score is at least ratio ×
    the mean score of its masked 3×3 neighbours — checked pixel by pixel, edges included."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(1, 30)), int(rng.integers(1, 30))
    score = rng.gamma(2.0, 1.0, (h, w)).astype(np.float32)
    mask = score > rng.uniform(1.5, 4.0)
    valid = rng.random((h, w)) > 0.1
    out = detect.refine_edges(mask, score, valid, ratio)
    expected = mask & valid
    for r in range(h):
        for c in range(w):
            if mask[r, c] or not valid[r, c]:
                continue
            win = (slice(max(r - 1, 0), r + 2), slice(max(c - 1, 0), c + 2))
            n = int(mask[win].sum())
            if n and score[r, c] >= np.float32(ratio) * (score[win][mask[win]].sum() / n):
                expected[r, c] = True
    # the reference sums in another order: allow ties within float rounding to go either way
    differ = out != expected
    if differ.any():
        for r, c in zip(*np.nonzero(differ)):
            win = (slice(max(r - 1, 0), r + 2), slice(max(c - 1, 0), c + 2))
            ref = ratio * score[win][mask[win]].mean()
            assert abs(score[r, c] - ref) <= 1e-5 * max(1.0, abs(ref))


# --------------------------------------------------------------------------- novelty
RED_TILE = (900, 1000, 1900, 2200)
FACTORY = (2800, 2300, 1500, 1700)  # blue steel roof
GROUND = (1200, 1300, 1400, 1800)  # bare village ground


def _novelty_scene(seed: int = 0):
    """120 x 120 px: the top 30 % is crop land that is ploughed between the dates (a common
    transition); the rest stays vegetated (left) or bare village ground (right); an existing
    blue factory roof (8 x 8 px, in both epochs) is a rare but *unchanged* surface; a red tile
    roof and a concrete roof (6 x 6 px each) are new. Epoch 2 has a gain, an offset and more
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
    after = after * np.array([1.05, 0.95, 1.1, 0.9])[:, None, None] + 80.0
    before += rng.normal(0, 30, before.shape)
    after += rng.normal(0, 45, after.shape)
    return before.astype(np.float32), after.astype(np.float32), np.ones((h, w), bool)


def _fit(before, after, valid, **kw):
    chunk = sampling.sample_block(before, after, valid, 0, 0, 1, 1, before.shape[2])
    ma, mb, va, vb = sampling.combine_samples([chunk])
    norm = detect.normalisation(ma, mb, "zscore", 4)
    kw = {"n_components": 4, "min_weight": 0.05} | kw
    return norm, novelty.fit_novelty_model(va, vb, norm, **kw)


def test_novelty_scores_rare_transitions_high_and_common_or_unchanged_ones_low():
    before, after, valid = _novelty_scene()
    norm, model = _fit(before, after, valid)
    score = detect.change_score(before, after, valid, norm, "novelty", BANDS, model)
    assert score.dtype == np.float32
    ploughed, unchanged = score[5:30, 5:115], score[50:75, :]
    factory = score[101:107, 101:107]
    red, concrete = score[81:85, 21:25], score[81:85, 41:45]
    # new roofs of both colours stand far out of the common transitions...
    assert red.min() > 6 and concrete.min() > 6
    # ...a large seasonal change, unchanged land and a rare unchanged roof do not (the 99th
    # percentile of a chi distribution with 8 degrees of freedom is 4.5)
    assert np.percentile(ploughed, 99) < 5
    assert np.percentile(unchanged, 99) < 5
    assert factory.max() < 5


def test_novelty_without_model_or_nir_is_a_config_error():
    before, after, valid = _novelty_scene()
    norm, model = _fit(before, after, valid)
    with pytest.raises(ConfigError, match="novelty model"):
        detect.change_score(before, after, valid, norm, "novelty", BANDS)
    with pytest.raises(ConfigError, match="nir"):
        detect.change_score(before[:3], after[:3], valid, norm, "novelty", BANDS[:3], model)


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
    whole = detect.change_score(before, after, valid, _NORM, "novelty", BANDS, _MODEL)
    sl = (slice(r0, r0 + h), slice(c0, c0 + w))
    part = detect.change_score(
        before[:, sl[0], sl[1]], after[:, sl[0], sl[1]], valid[sl], _NORM, "novelty", BANDS, _MODEL
    )
    np.testing.assert_array_equal(part, whole[sl])


_SCENE = _novelty_scene(seed=3)
_NORM, _MODEL = _fit(*_SCENE)


def test_red_tile_roof_is_construction_and_soil_is_not():
    assert _classify(VEGETATION, RED_TILE) == ChangeType.CONSTRUCTION
    assert _classify(VEGETATION, SOIL) == ChangeType.EARTHWORKS


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
    score = detect.change_score(before, after, valid, norm, "novelty", BANDS, model)
    assert np.percentile(score[rr, cc], 5) > 6
    common = np.ones(valid.shape, bool)
    common[rr, cc] = False
    assert np.percentile(score[common], 99) < 5


def test_novelty_distance_matches_a_float64_whitened_mahalanobis():
    # the fast path (gates first, float32 expanded quadratic forms) equals the textbook
    # distance min_k ||L_k^-1 (x - mu_k)|| to the components and the no-change relation
    before, after, valid = _SCENE
    score = detect.change_score(before, after, valid, _NORM, "novelty", BANDS, _MODEL)
    cand = np.flatnonzero(score.ravel() > 0)[::7]
    za = novelty._z(before.reshape(4, -1)[:, cand], _NORM.mean_a, _NORM.std_a)
    zb = novelty._z(after.reshape(4, -1)[:, cand], _NORM.mean_b, _NORM.std_b)
    x = np.concatenate([za, zb])
    feats = novelty._quadratic_features(x)
    d2_64 = (_MODEL.quad.astype(np.float64) @ feats).min(axis=0)
    fast = novelty._min_mahalanobis2(before, after, _NORM, _MODEL, cand)
    np.testing.assert_allclose(fast, d2_64, rtol=1e-3, atol=1e-2)


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


def test_small_blue_steel_roof_with_crop_outline_is_construction():
    # outline pixels half crop raise a small steel roof's mean NDVI above 0.2 (not vegetation)
    mixed = tuple(0.75 * r + 0.25 * v for r, v in zip(FACTORY, VEGETATION))
    assert 0.2 < (mixed[3] - mixed[2]) / (mixed[3] + mixed[2]) < 0.3
    assert _classify(VEGETATION, mixed) == ChangeType.CONSTRUCTION


# --------------------------------------------------------------------------- IR-MAD
def _irmad_scene(seed=0, h=90, w=100):
    """Six correlated bands; epoch 2 = a per-band gain/offset of epoch 1 plus noise, and three
    squares whose spectrum changed (a different linear mix of the bands)."""
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


def _irmad_fit(before, after):
    valid = np.ones(before.shape[1:], bool)
    chunk = sampling.sample_block(before, after, valid, 0, 0, 1, 1, before.shape[2])
    ma, mb, va, vb = sampling.combine_samples([chunk])
    return ma, mb, va, vb, fit_irmad(va, vb)


def test_irmad_flags_changed_squares_and_is_chi2_elsewhere():
    before, after, changed = _irmad_scene()
    *_, model = _irmad_fit(before, after)
    valid = np.ones(changed.shape, bool)
    z = detect.change_score(before, after, valid, None, "irmad", BANDS, model)
    assert z.dtype == np.float32
    cut = detect.threshold(z[valid].ravel(), "chi2", 0.999, nbands=6, squared=True)
    # every changed pixel is far out of chi2(6); the unchanged ones follow it (mean ≈ 6,
    # about 0.1 % above the 0.999 quantile)
    assert z[changed].min() > cut
    assert 5.0 < z[~changed].mean() < 7.0
    assert (z[~changed] > cut).mean() < 0.005
    # the linear radiometric change is absorbed: the three signal dimensions (of the latent
    # covers) correlate ≈ 1 across dates, the three pure-noise dimensions do not
    assert sorted(model.rho)[-3] > 0.99 and sorted(model.rho)[2] < 0.5


def test_irmad_is_invariant_to_a_gain_and_offset_of_either_epoch():
    before, after, _ = _irmad_scene(seed=3)
    valid = np.ones(before.shape[1:], bool)
    *_, m1 = _irmad_fit(before, after)
    scaled = (after * np.float32(2.5) + np.float32(300)).astype(np.float32)
    *_, m2 = _irmad_fit(before, scaled)
    z1 = detect.change_score(before, after, valid, None, "irmad", BANDS, m1)
    z2 = detect.change_score(before, scaled, valid, None, "irmad", BANDS, m2)
    # equal up to the float32 application and the convergence tolerance of the fit
    np.testing.assert_allclose(z1, z2, rtol=1e-2, atol=0.05)


@settings(max_examples=20, deadline=None)
@given(r0=st.integers(0, 60), c0=st.integers(0, 60), h=st.integers(1, 30), w=st.integers(1, 40))
def test_irmad_score_of_a_pixel_does_not_depend_on_the_block(r0, c0, h, w):
    # the MAD transform is applied pixel by pixel: any block gives the whole-image values
    before, after, _ = _irmad_scene(seed=1)
    *_, model = _irmad_fit(before, after)
    valid = np.ones(before.shape[1:], bool)
    whole = detect.change_score(before, after, valid, None, "irmad", BANDS, model)
    win = (slice(r0, r0 + h), slice(c0, c0 + w))
    part = detect.change_score(
        before[:, win[0], win[1]], after[:, win[0], win[1]], valid[win], None, "irmad", BANDS, model
    )
    np.testing.assert_array_equal(part, whole[win])


def test_irmad_regression_normalisation_recovers_the_gain_and_offset():
    before, after, _ = _irmad_scene(seed=2)
    ma, mb, va, vb, model = _irmad_fit(before, after)
    norm = detect.normalisation(ma, mb, "irmad_regression", 6, va, vb, model)
    # z_b = ((y - o) / g - mean_a) / std_a, so std_b / std_a = g and the offset follows
    gain = np.array(norm.std_b) / np.array(norm.std_a)
    offset = np.array(norm.mean_b) - gain * np.array(norm.mean_a)
    np.testing.assert_allclose(gain, [1.2, 0.8, 1.1, 0.9, 1.3, 0.7], rtol=0.03)
    np.testing.assert_allclose(offset, [50, -30, 100, 0, 20, 80], atol=40)
    with pytest.raises(ConfigError, match="sample"):
        detect.normalisation(ma, mb, "irmad_regression", 6)


def test_irmad_without_model_is_a_config_error():
    a = np.ones((1, 2, 2), np.float32)
    norm = detect.normalisation(sampling.Moments(), sampling.Moments(), "none", 1)
    with pytest.raises(ConfigError, match="IR-MAD model"):
        detect.change_score(a, a, np.ones((2, 2), bool), norm, "irmad", ("red",))


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


# --------------------------------------------------------------------------- self-training
def _selftrain_fit(before, after, **kw):
    *_, va, vb, irmad = _irmad_fit(before, after)
    kw = {"change_quantile": 0.98, "nochange_quantile": 0.8, **kw}
    return selftrain.fit_self_train(va, vb, irmad, **kw)


def test_selftrain_scores_changed_squares_high_and_unchanged_pixels_low():
    # the squares (≈ 2.7 % of the scene) are the confident IR-MAD change; the classifier
    # trained on them gives every changed pixel P > 0.5 and almost no unchanged pixel
    before, after, changed = _irmad_scene()
    model = _selftrain_fit(before, after)
    valid = np.ones(changed.shape, bool)
    p = detect.change_score(before, after, valid, None, "selftrain", BANDS, model)
    assert p.dtype == np.float32
    assert p.min() >= 0.0 and p.max() <= 1.0
    assert (p[changed] > 0.5).mean() > 0.95
    assert (p[~changed] > 0.5).mean() < 0.02


def test_selftrain_model_is_deterministic_and_invalid_pixels_score_zero():
    before, after, changed = _irmad_scene(seed=4)
    m1, m2 = _selftrain_fit(before, after), _selftrain_fit(before, after)
    assert (m1.coef, m1.intercept, m1.change_cut) == (m2.coef, m2.intercept, m2.change_cut)
    valid = np.ones(changed.shape, bool)
    valid[:5] = False
    p = detect.change_score(before, after, valid, None, "selftrain", BANDS, m1)
    assert (p[:5] == 0).all()


@functools.cache
def _selftrain_whole():
    """Scene, model and whole-image score shared by the Hypothesis examples (fitted once)."""
    before, after, _ = _irmad_scene(seed=1)
    model = _selftrain_fit(before, after)
    valid = np.ones(before.shape[1:], bool)
    return (
        before,
        after,
        model,
        detect.change_score(before, after, valid, None, "selftrain", BANDS, model),
    )


@settings(max_examples=20, deadline=None)
@given(r0=st.integers(0, 60), c0=st.integers(0, 60), h=st.integers(1, 30), w=st.integers(1, 40))
def test_selftrain_score_of_a_pixel_does_not_depend_on_the_block(r0, c0, h, w):
    # features are elementwise and summed feature by feature: any block gives the
    # whole-image values bit for bit
    before, after, model, whole = _selftrain_whole()
    valid = np.ones(before.shape[1:], bool)
    win = (slice(r0, r0 + h), slice(c0, c0 + w))
    part = detect.change_score(
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
        detect.change_score(a, a, np.ones((2, 2), bool), None, "selftrain", ("red",))
    before, after, _ = _irmad_scene(h=20, w=20)
    *_, va, vb, irmad = _irmad_fit(before, after)
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


# --------------------------------------------------------------------------- selftrain context
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
    assert not selftrain.vegetation_change(a[:2], b[:2], valid, names[:2], 1.0).any()  # no nir
    score = np.full((10, 10), 0.8, np.float32)
    ref = float(w[0, 9])
    out = selftrain.vegetation_weight(score, w, ref)
    np.testing.assert_allclose(out[:, 5:], 0.8, rtol=1e-6)  # as much change as the reference
    c = selftrain.VEG_WEIGHT_OFFSET
    np.testing.assert_allclose(out[:, :5], 0.8 * np.sqrt(c / (c + ref)), rtol=1e-5)


def test_selftrain_with_context_is_fitted_and_scores_like_without_on_plain_change():
    # the context features of the pass-1 sample (here: every pixel) feed the same model the
    # blocks use; the changed squares stay above the cut
    before, after, changed = _irmad_scene()
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
    assert len(model.coef) == len(selftrain.self_train_features(va, vb, va[0], va[0]))
    p = detect.change_score(before, after, valid, None, "selftrain", names, model)
    assert (p[changed] > 0.5).mean() > 0.9 and (p[~changed] > 0.5).mean() < 0.05
    with pytest.raises(ValueError, match="context"):
        selftrain.fit_self_train(
            va, vb, irmad, change_quantile=0.98, nochange_quantile=0.8, shift_feature=True
        )
