"""Change scores, thresholds and mask clean-up (pipeline.detection.scores)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.detection import sampling, scores, target_grid
from pipeline.errors import ConfigError
from tests.rasters import scene
from tests.scenes import BANDS


def test_cva_score_is_the_change_vector_magnitude_and_zero_where_invalid():
    a = np.zeros((2, 1, 3), np.float32)
    b = np.array([[[3, 0, 3]], [[4, 1, 4]]], np.float32)
    valid = np.array([[True, True, False]])
    norm = scores.normalisation(sampling.Moments(), sampling.Moments(), "none", 2)
    score = scores.change_score(a, b, valid, norm, "cva", ("red", "nir"))
    np.testing.assert_allclose(score, [[5.0, 1.0, 0.0]])


def test_index_method_needs_nir_or_the_three_visible_bands():
    norm = scores.normalisation(sampling.Moments(), sampling.Moments(), "none", 2)
    a = np.ones((2, 2, 2), np.float32)
    with pytest.raises(ConfigError, match="without a nir band needs the band"):
        scores.change_score(a, a, np.ones((2, 2), bool), norm, "index", ("blue", "red"))


def test_index_method_on_rgb_scores_new_roofs_and_not_vegetation():
    # three pixels of vegetation (blue, green, red): one becomes a grey roof, one a red tile
    # roof, one stays vegetated but brighter (a crop grown greener): without nir the
    # vegetation weight comes from VDVI, so only the roofs score
    veg = [400, 700, 500]
    a = np.array([veg, veg, veg], np.float32).T[:, None, :]  # (3 bands, 1, 3 px)
    b = np.array([[2200, 2300, 2400], [900, 1000, 1900], [500, 1100, 600]], np.float32).T
    b = b[:, None, :]
    norm = scores.normalisation(sampling.Moments(), sampling.Moments(), "none", 3)
    s = scores.change_score(a, b, np.ones((1, 3), bool), norm, "index", BANDS[:3])
    assert s[0, 0] > 1000 and s[0, 1] > 300 and s[0, 2] == 0.0


def test_unknown_method_is_a_config_error():
    norm = scores.normalisation(sampling.Moments(), sampling.Moments(), "none", 1)
    a = np.ones((1, 2, 2), np.float32)
    with pytest.raises(ConfigError, match="magic"):
        scores.change_score(a, a, np.ones((2, 2), bool), norm, "magic", ("red",))


def test_thresholds():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(1, 0.3, 5000), rng.normal(8, 0.5, 500)])
    assert 2 < scores.threshold(values, "otsu") < 7
    assert scores.threshold(values, "fixed", 3.5) == 3.5
    # chi2 on pure no-change noise of 4 bands: ~1 % of pixels above the 0.99 cut
    noise = np.sqrt((rng.normal(0, 0.7, (4, 20000)) ** 2).sum(axis=0))
    cut = scores.threshold(noise, "chi2", 0.99, nbands=4)
    assert 0.005 < (noise > cut).mean() < 0.02


def _pipeline(a, b, valid, step=1):
    """Whole-image detection with the pure functions (zscore CVA, Otsu, 1 px clean-up)."""
    w = valid.shape[1]
    chunk = sampling.sample_block(a, b, valid, 0, 0, step, 1, w)
    ma, mb, va, vb = sampling.combine_samples([chunk])
    norm = scores.normalisation(ma, mb, "zscore", 4)
    s = scores.change_score(
        va[:, :, None], vb[:, :, None], np.ones((va.shape[1], 1), bool), norm, "cva", BANDS
    )
    cut = scores.threshold(s.ravel(), "otsu")
    score = scores.change_score(a, b, valid, norm, "cva", BANDS)
    return scores.clean_mask(scores.change_mask(score, valid, cut), valid, 1, 1)


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
    halo = scores.cleaning_halo(open_px, close_px)
    pad = lambda x: np.pad(x, halo + 1)  # noqa: E731 - outside the image = no change
    whole = scores.clean_mask(pad(mask), pad(valid), open_px, close_px)[
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
            res = scores.clean_mask(pm[sub], pv[sub], open_px, close_px)
            out[r : r + bh, c : c + bw] = res[
                halo : halo + min(bh, h - r), halo : halo + min(bw, w - c)
            ]
    np.testing.assert_array_equal(out, whole)


def test_refine_edges_recovers_half_covered_pixels():
    """A blurred 8×8 px roof thresholded at its core loses its mixed outline; refining with
    ratio 0.5 gives back the pixels at least half covered, so the area is about right."""
    from scipy import ndimage

    truth = np.zeros((40, 40), dtype=bool)
    truth[10:18, 10:18] = True
    score = ndimage.uniform_filter(truth.astype(np.float32) * 4.0, size=3)  # mixed edges
    valid = np.ones_like(truth)
    core = score > 3.0
    refined = scores.refine_edges(core, score, valid, 0.5)
    # core 6×6 = 36 px; refined = 64 minus the 4 corners (their blurred cover is 4/9 < 0.5)
    assert core.sum() == 36 and refined.sum() == truth.sum() - 4
    assert not (refined & ~ndimage.binary_dilation(truth)).any()  # never beyond one pixel
    assert not scores.refine_edges(core, score, ~valid, 0.5).any()  # invalid pixels never change


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
    mask = scores.change_mask(score, valid, cut, 0.7)  # low cut 4.2: the roof and the specks
    assert all(mask[r, c] for r, c in specks)

    out = scores.clean_mask(mask, valid, 1, 1, score=score, edge_ratio=0.5)
    labels, n = ndimage.label(out, np.ones((3, 3)))
    patch = labels == labels[20, 20]
    assert n == 1 and not any(out[r, c] for r, c in specks)
    assert patch.sum() <= 12 * 12  # the roof's low-cut footprint grown by one pixel at most
    assert score[patch].mean() >= min_mean

    # the order this replaces: refine the raw mask, then clean — roof, rims and specks merge
    joined = scores.clean_mask(scores.refine_edges(mask, score, valid, 0.5), valid, 1, 1)
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
    whole = scores._cva(a, b, norm)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(target_grid, "STRIP_PX", strip)
        strips = scores._cva(a, b, norm)
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
    out = scores.refine_edges(mask, score, valid, ratio)
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
