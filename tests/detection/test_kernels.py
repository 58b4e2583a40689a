"""The fast kernels of the detect stage give what their reference definitions give: the
novelty score streamed in row strips and chunks, the novelty mixture fit (scikit-learn's
estimator), run-based labelling, one BLAS thread per worker task."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_info

from pipeline.bands import NDVI_NONVEG_MAX, vegetation_index
from pipeline.config import DetectConfig
from pipeline.detection import regions, sampling, scores
from pipeline.detection.methods import novelty
from pipeline.detection.vectorize import label_pixels
from tests.rasters import GROUND, RED_TILE, ROOF, SOIL, VEGETATION
from tests.scenes import BANDS


def _scene(h: int = 150, w: int = 130, seed: int = 1):
    """Crop land ploughed in its top third, village ground, scattered new roofs; noise and a
    gain between the dates — enough candidates (≈ 40 %) for several distance chunks."""
    rng = np.random.default_rng(seed)
    before = np.empty((4, h, w))
    before[:] = np.array(VEGETATION, float)[:, None, None]
    before[:, h // 3 :, w // 2 :] = np.array(GROUND, float)[:, None, None]
    after = before.copy()
    after[:, : h // 3] = np.array(SOIL, float)[:, None, None]
    for k, (r, c) in enumerate(rng.integers(0, [h - 8, w - 8], size=(12, 2))):
        after[:, r : r + 6, c : c + 6] = np.array(RED_TILE if k % 2 else ROOF, float)[:, None, None]
    after = after * np.array([1.05, 0.95, 1.1, 0.9])[:, None, None] + 80.0
    before += rng.normal(0, 30, before.shape)
    after += rng.normal(0, 45, after.shape)
    return before.astype(np.float32), after.astype(np.float32)


def _model(before, after):
    valid = np.ones(before.shape[1:], bool)
    chunk = sampling.sample_block(before, after, valid, 0, 0, 1, 1, before.shape[2])
    ma, mb, va, vb = sampling.combine_samples([chunk])
    norm = scores.normalisation(ma, mb, "zscore", before.shape[0])
    model = novelty.fit_novelty_model(
        va, vb, norm, n_components=4, min_weight=0.05, trim=DetectConfig().novelty_trim
    )
    return norm, model


_BEFORE, _AFTER = _scene()
_NORM, _MODEL = _model(_BEFORE, _AFTER)


def _reference(before, after, norm, model):
    """The novelty score from its whole-array definition, the distance in float64 from the
    quadratic forms (one product per pixel, no chunks, no strips)."""
    nb = before.shape[0]
    f32 = np.float32
    veg = vegetation_index(after, BANDS)
    lo, hi = f32(NDVI_NONVEG_MAX), f32(novelty.NOVELTY_NDVI_ZERO)
    nonveg = np.clip((hi - veg) / (hi - lo), 0, 1)
    brighter = np.zeros(before.shape[1:], f32)
    for i in range(3):  # blue, green, red
        za = (before[i] - f32(norm.mean_a[i])) / f32(norm.std_a[i])
        zb = (after[i] - f32(norm.mean_b[i])) / f32(norm.std_b[i])
        g, o = f32(model.nochange_gain[i]), f32(model.nochange_offset[i])
        brighter += zb - (g * za + o)
    lost = vegetation_index(before, BANDS) - veg >= f32(novelty.NOVELTY_VEGETATION_LOSS)
    cand = (nonveg > 0) & ((brighter > 0) | lost)
    z = [(before[i] - f32(norm.mean_a[i])) / f32(norm.std_a[i]) for i in range(nb)]
    z += [(after[i] - f32(norm.mean_b[i])) / f32(norm.std_b[i]) for i in range(nb)]
    x = np.stack(z).reshape(2 * nb, -1).astype(np.float64)
    d2 = (model.quad.astype(np.float64) @ novelty._quadratic_features(x)).min(axis=0)
    score = np.sqrt(np.maximum(d2, 0)).reshape(cand.shape) * nonveg
    return np.where(cand, score, 0.0), cand


def test_novelty_score_equals_its_whole_array_definition():
    score = scores.change_score(
        _BEFORE, _AFTER, np.ones(_BEFORE.shape[1:], bool), _NORM, "novelty", BANDS, _MODEL
    )
    ref, cand = _reference(_BEFORE, _AFTER, _NORM, _MODEL)
    assert cand.sum() > novelty.NOVELTY_CHUNK_PX  # several chunks, one of them partial
    np.testing.assert_array_equal(score > 0, cand & (ref > 0))
    np.testing.assert_allclose(score, ref, rtol=1e-3, atol=2e-3)


@pytest.mark.parametrize("strip_px", [1, 97, 4096])
def test_novelty_score_does_not_depend_on_the_strips(monkeypatch, strip_px):
    """Strips of one row or of a few rows (chunks then span many strips) give the same
    bits as the default strips."""
    args = (_BEFORE, _AFTER, _NORM, _MODEL, BANDS)
    whole = novelty.novelty_score(*args)
    monkeypatch.setattr(novelty, "NOVELTY_STRIP_PX", strip_px)
    np.testing.assert_array_equal(novelty.novelty_score(*args), whole)


def test_novelty_score_of_a_strided_single_column_sample():
    """The pass-1 sample is scored as a (bands, n, 1) view: the same values as the block."""
    sample_a = np.asfortranarray(_BEFORE.reshape(4, -1)[:, ::3])  # strided, not C-ordered
    sample_b = np.asfortranarray(_AFTER.reshape(4, -1)[:, ::3])
    col = novelty.novelty_score(sample_a[:, :, None], sample_b[:, :, None], _NORM, _MODEL, BANDS)
    block = novelty.novelty_score(_BEFORE, _AFTER, _NORM, _MODEL, BANDS)
    np.testing.assert_array_equal(col.ravel(), block.ravel()[::3])


def _sklearn_trimmed_mixture(x, k, trim):
    """The reference fit: scikit-learn's GaussianMixture in warm-started rounds, the least
    likely ``trim`` share of ``x`` left out of each next round."""
    rounds = novelty.NOVELTY_TRIM_ROUNDS if trim > 0 else 1
    gm = GaussianMixture(
        k,
        covariance_type="full",
        reg_covar=novelty.NOVELTY_RIDGE,
        max_iter=max(1, novelty.NOVELTY_EM_ITERATIONS // rounds),
        tol=0.0,
        init_params="k-means++",
        random_state=novelty.NOVELTY_SEED,
        warm_start=True,
    )
    kept = x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for r in range(rounds):
            gm.fit(kept)
            if trim > 0 and r < rounds - 1:
                loglik = gm.score_samples(x)
                kept = x[loglik >= np.quantile(loglik, trim)]
    return gm.weights_, gm.means_, gm.covariances_


@pytest.mark.parametrize(("k", "trim"), [(4, 0.0), (6, 0.03)])
def test_novelty_mixture_fit_equals_scikit_learns_estimator(k, trim):
    za = novelty._z(_BEFORE.reshape(4, -1), _NORM.mean_a, _NORM.std_a)
    zb = novelty._z(_AFTER.reshape(4, -1), _NORM.mean_b, _NORM.std_b)
    x = np.concatenate([za, zb]).T[::2]
    fitted = novelty._fit_gmm(x, k, trim)
    for got, expected in zip(fitted, _sklearn_trimmed_mixture(x, k, trim)):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    density=st.floats(0.0, 1.0),
    grow=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_label_pixels_numbers_components_as_scipy_label(h, w, density, grow, seed):
    mask = np.random.default_rng(seed).random((h, w)) < density
    if grow:
        mask = ndimage.binary_dilation(mask, iterations=grow)
    expected, n_expected = ndimage.label(mask)  # 4-connectivity
    labels, n = label_pixels(np.flatnonzero(mask), w)
    assert n == n_expected
    np.testing.assert_array_equal(labels, expected.ravel()[mask.ravel()])


def test_label_pixels_of_nothing():
    labels, n = label_pixels(np.zeros(0, dtype=np.int64), 7)
    assert n == 0 and labels.size == 0


def test_worker_tasks_run_with_one_blas_thread():
    @regions.one_blas_thread
    def job():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    assert set(job()) <= {1}
    assert regions.detect_region_job.__name__ == "detect_region_job"  # picklable by name
