"""The ``selftrain`` method: a per-scene logistic regression fitted on the scene's own
confident IR-MAD change and no-change pixels (unsupervised: no label is read), with a
shift-tolerant difference among its features and a scene-relative vegetation-change weight.
See :func:`fit_self_train`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from pipeline.bands import LOG_FLOOR, VISIBLE_BANDS, has_nir, nd, vegetation_index
from pipeline.detection.methods.irmad import IrmadModel, irmad_chi2
from pipeline.detection.neighbourhood import shift_slices, smooth_score, smoothing_halo
from pipeline.detection.sampling import MIN_SAMPLE_PIXELS
from pipeline.errors import InputDataError

log = logging.getLogger(__name__)

SELFTRAIN_L2 = 1e-2
"""``selftrain``: ridge penalty of the logistic regression (standardised features)."""
SELFTRAIN_NEWTON_STEPS = 25
"""``selftrain``: at most this many Newton iterations of the logistic regression."""
SELFTRAIN_TOL = 1e-8
"""``selftrain``: convergence tolerance of the logistic regression (scikit-learn's ``tol``:
the solution then matches a full Newton solve to about 1e-9)."""
SELFTRAIN_FIT_MAX = 200_000
"""Pixels of the pass-1 sample used to fit the self-trained classifier (thinned beyond)."""
NUISANCE_NDVI = 0.5
"""``selftrain``: a sample pixel with a vegetation index (:func:`~pipeline.bands.
vegetation_index`: NDVI, or 3 × VDVI without nir) above this in both epochs is vegetation in
both (crops, forest, lawns changing with the season) — never a *change* example."""
NUISANCE_MNDWI = 0.0
"""``selftrain``: a sample pixel with MNDWI ``(green - swir1) / (green + swir1)`` above this in
both epochs is water in both (tide, turbidity, sun glint) — never a *change* example."""


SHIFT_SCALE = 100.0
""":func:`shift_tolerant_difference` is ``log1p(SHIFT_SCALE * d2)``: spreads the squared log
differences of a few per cent (noise) apart from those of real change (≥ 0.1)."""
VEG_WEIGHT_OFFSET = 0.1
""":func:`vegetation_weight`: added to the vegetation change and to its scene reference, so a
pixel without any NDVI change keeps a weight of about ``sqrt(0.1 / (0.1 + ref))``."""
VEG_WEIGHT_POWER = 0.5
""":func:`vegetation_weight`: exponent of the ratio (a square root: a soft preference)."""
VEG_REF_MIN_PIXELS = 10
"""Fewer sample pixels with ``P > 0.5`` than this: the reference is the 0.99 quantile."""
CONTEXT_FEATURES = ("shift_difference", "vegetation_change")
"""The rows of the pass-1 ``context`` array of the ``selftrain`` method."""


def shift_tolerant_difference(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Change that one-pixel misregistration cannot explain, per pixel (float32).

    ``log1p(SHIFT_SCALE * min_d sum_k (ln b_k(x) - ln a_k(x + d))**2)`` over the shifts
    ``d`` of the 3 × 3 neighbourhood (the centre included); neighbours that are invalid or
    outside the array are skipped, a pixel with no valid neighbour gets 0.

    Notes
    -----
    A sharp edge (a road, a roof outline) that moved by a pixel between the dates has a large
    plain difference but a small shift-tolerant one; a new building has both. Looks 1 px
    around each pixel: exact on a block with a 1 px halo.
    """
    la = np.log(np.maximum(a, LOG_FLOOR)).astype(np.float32)
    lb = np.log(np.maximum(b, LOG_FLOOR)).astype(np.float32)
    h, w = valid.shape
    best = np.full((h, w), np.inf, dtype=np.float32)
    d2 = np.empty((h, w), dtype=np.float32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out, src = shift_slices(h, w, dy, dx)
            d2[:] = np.inf
            acc = np.zeros((out[0].stop - out[0].start, out[1].stop - out[1].start), np.float32)
            for k in range(a.shape[0]):
                diff = lb[k][out] - la[k][src]
                acc += diff * diff
            d2[out] = np.where(valid[src], acc, np.float32(np.inf))
            np.minimum(best, d2, out=best)
    best[~np.isfinite(best)] = 0.0
    return np.log1p(np.float32(SHIFT_SCALE) * best).astype(np.float32)


def has_vegetation_index(band_names: Sequence[str]) -> bool:
    """True when :func:`~pipeline.bands.vegetation_index` can be computed: ``red`` and
    ``nir`` (NDVI), or ``blue``, ``green`` and ``red`` (VDVI)."""
    return has_nir(band_names) or all(v in band_names for v in VISIBLE_BANDS)


def vegetation_change(
    a: np.ndarray, b: np.ndarray, valid: np.ndarray, band_names: Sequence[str], sigma_px: float
) -> np.ndarray:
    """``|V_b - V_a|`` of the vegetation index ``V`` (:func:`~pipeline.bands.
    vegetation_index`: NDVI, or 3 × VDVI without nir) smoothed like the score
    (:func:`smooth_score`), float32; zeros when neither index can be computed."""
    names = list(band_names)
    if not has_vegetation_index(names):
        return np.zeros(valid.shape, dtype=np.float32)
    change = np.abs(vegetation_index(b, names) - vegetation_index(a, names)).astype(np.float32)
    change[~valid] = 0.0
    return smooth_score(change, valid, sigma_px)


def context_halo(sigma_px: float) -> int:
    """Halo (px) for :func:`self_train_context` to be exact on a block."""
    return smoothing_halo(sigma_px) + 1


def self_train_context(
    a: np.ndarray, b: np.ndarray, valid: np.ndarray, band_names: Sequence[str], sigma_px: float
) -> np.ndarray:
    """The ``selftrain`` neighbourhood features of a block (:data:`CONTEXT_FEATURES`),
    (2, h, w) float32; exact at least :func:`context_halo` pixels from the block edge."""
    return np.stack(
        [
            shift_tolerant_difference(a, b, valid),
            vegetation_change(a, b, valid, band_names, sigma_px),
        ]
    )


def vegetation_weight(score: np.ndarray, veg_change: np.ndarray, ref: float) -> np.ndarray:
    """``score * ((C + W) / (C + ref)) ** p`` (``C`` = :data:`VEG_WEIGHT_OFFSET`, ``p`` =
    :data:`VEG_WEIGHT_POWER`, ``W`` = :func:`vegetation_change`), float32.

    Notes
    -----
    ``ref`` is the scene's typical vegetation change among its detected change
    (:func:`fit_self_train`), so a pixel changing as much as the scene's typical change
    keeps its score, one that changed less (a roof repainted, a shadow, a car park filling
    up) is damped, and vegetation cleared for construction is favoured — the change land
    inspection looks for.
    """
    c = np.float32(VEG_WEIGHT_OFFSET)
    ratio = (c + veg_change) / (c + np.float32(ref))
    return (score * ratio ** np.float32(VEG_WEIGHT_POWER)).astype(np.float32)


def nuisance_pixels(a: np.ndarray, b: np.ndarray, band_names: Sequence[str]) -> np.ndarray:
    """Pixels whose strong change is not the change we look for: vegetation in both epochs
    (vegetation index > :data:`NUISANCE_NDVI`) or water in both (MNDWI >
    :data:`NUISANCE_MNDWI`).

    Parameters
    ----------
    a, b : ndarray (nbands, ...)
        Raw values of both epochs, bands in ``band_names`` order.
    band_names : sequence of str
        The vegetation test needs ``red`` and ``nir`` (NDVI) or ``blue``, ``green`` and
        ``red`` (VDVI), the water test ``green`` and ``swir1``; a test whose bands are not
        configured is skipped.

    Returns
    -------
    ndarray bool, shape ``a.shape[1:]``

    Notes
    -----
    Ratios of raw values, so independent of the data's scale. Used by
    :func:`fit_self_train` to choose its examples only — a nuisance pixel can still be
    detected when it looks like the scene's real changes.
    """
    names = list(band_names)
    out = np.zeros(a.shape[1:], dtype=bool)

    def both_above(i: int, j: int, cut: float) -> np.ndarray:
        return (nd(a, i, j) > cut) & (nd(b, i, j) > cut)

    if has_vegetation_index(names):
        veg_a, veg_b = vegetation_index(a, names), vegetation_index(b, names)
        out |= (veg_a > NUISANCE_NDVI) & (veg_b > NUISANCE_NDVI)
    if "green" in names and "swir1" in names:
        out |= both_above(names.index("green"), names.index("swir1"), NUISANCE_MNDWI)
    return out


@dataclass(frozen=True)
class SelfTrainModel:
    """The per-scene classifier of the ``selftrain`` method, fitted by :func:`fit_self_train`.

    ``P(change) = 1 / (1 + exp(-(intercept + sum_k coef[k] * f_k)))`` with ``f_k`` the raw
    features of :func:`self_train_features` (the standardisation is folded into ``coef`` and
    ``intercept``).
    """

    irmad: IrmadModel
    coef: tuple[float, ...]
    intercept: float
    change_cut: float
    nochange_cut: float
    shift_feature: bool = False
    """The last coefficient is for :func:`shift_tolerant_difference`."""
    vegetation_ref: float | None = None
    """Set: the smoothed probability is weighted by :func:`vegetation_weight` with this
    reference."""
    band_names: tuple[str, ...] = ()
    """The bands of the features, in order (the indices of :func:`self_train_features`)."""


def self_train_features(
    a: np.ndarray,
    b: np.ndarray,
    z: np.ndarray,
    shift: np.ndarray | None = None,
    band_names: Sequence[str] = (),
) -> list[np.ndarray]:
    """Per-pixel features (float32 arrays of ``z``'s shape) of the ``selftrain`` classifier.

    Both epochs' log bands, their differences; the vegetation index
    (:func:`~pipeline.bands.vegetation_index`: NDVI, or 3 × VDVI without nir) and NDBI
    ``(swir1 - nir) / (swir1 + nir)`` of both epochs and their change, each when its bands
    are in ``band_names``; ``log(1 + Z)`` of the IR-MAD statistic ``z`` and, when given,
    the shift-tolerant difference ``shift`` (:func:`shift_tolerant_difference`).

    Notes
    -----
    Elementwise given ``shift`` (computed with its 1 px neighbourhood on the block, or in
    pass 1 on the sampled cell with a halo), so a pixel's features do not depend on the block
    it is computed in, and the pass-1 sample gives the same features.
    """
    nb = a.shape[0]
    la = [np.log(np.maximum(a[i], LOG_FLOOR)) for i in range(nb)]
    lb = [np.log(np.maximum(b[i], LOG_FLOOR)) for i in range(nb)]
    feats = [*la, *lb, *(y - x for x, y in zip(la, lb))]

    names = list(band_names)
    if has_vegetation_index(names):
        va, vb = vegetation_index(a, names), vegetation_index(b, names)
        feats += [va, vb, vb - va]
    if "swir1" in names and "nir" in names:
        i, j = names.index("swir1"), names.index("nir")
        na, nbb = nd(a, i, j), nd(b, i, j)
        feats += [na, nbb, nbb - na]
    feats.append(np.log1p(z))
    if shift is not None:
        feats.append(shift)
    return [f.astype(np.float32, copy=False) for f in feats]


def self_train_examples(
    z: np.ndarray, nuisance: np.ndarray, change_quantile: float, nochange_quantile: float
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The self-training examples: ``(change, no_change, change_cut, nochange_cut)``.

    *Change*: IR-MAD statistic ``z`` at or above the ``change_quantile`` of the non-nuisance
    pixels (of all pixels when fewer than :data:`MIN_SAMPLE_PIXELS` are left), nuisance
    pixels excluded. *No change*: ``z`` at or below its ``nochange_quantile``, plus every
    nuisance pixel. Boolean arrays of ``z``'s shape; the two never overlap.
    """
    candidates = z[~nuisance] if np.count_nonzero(~nuisance) >= MIN_SAMPLE_PIXELS else z
    hi = float(np.quantile(candidates, change_quantile))
    lo = float(np.quantile(z, nochange_quantile))
    pos = (z >= hi) & ~nuisance
    neg = ((z <= lo) | nuisance) & ~pos
    return pos, neg, hi, lo


def fit_self_train(
    values_a: np.ndarray,
    values_b: np.ndarray,
    irmad: IrmadModel,
    *,
    change_quantile: float,
    nochange_quantile: float,
    band_names: Sequence[str] = (),
    context: np.ndarray | None = None,
    shift_feature: bool = False,
    vegetation_weight: bool = False,
) -> SelfTrainModel:
    """Self-training: a logistic regression fitted on the scene's own confident IR-MAD pixels.

    Parameters
    ----------
    values_a, values_b : ndarray (nbands, n)
        The canonical pass-1 sample (raw values, valid pixels only).
    irmad : IrmadModel
        From :func:`fit_irmad` on the same sample.
    change_quantile, nochange_quantile : float
        Sample pixels with the IR-MAD statistic at or above the first quantile (of the
        pixels that are not :func:`nuisance_pixels`) are the *change* examples; those at or
        below the second quantile, and every nuisance pixel, the *no-change* examples.
    band_names : sequence of str
        The sample's bands, for :func:`nuisance_pixels` and the index features of
        :func:`self_train_features` (none → no nuisance pixels and no index features).
    context : ndarray (2, n), optional
        The sample's :func:`self_train_context` features (:data:`CONTEXT_FEATURES`); needed
        by the two options below.
    shift_feature : bool
        Add :func:`shift_tolerant_difference` to the features.
    vegetation_weight : bool
        Fit the reference of :func:`vegetation_weight`: the median vegetation change of the
        sample pixels the classifier calls change (``P > 0.5``; the 0.99 quantile over all
        when fewer than :data:`VEG_REF_MIN_PIXELS` are).

    Returns
    -------
    SelfTrainModel

    Raises
    ------
    InputDataError
        When either class gets fewer than :data:`MIN_SAMPLE_PIXELS` examples.

    Notes
    -----
    Unsupervised: the examples come from the scene itself, no label is read. The classes are
    balanced (each weighs half), so ``P = 0.5`` is the natural cut. The classifier sees the
    bands and indices of both epochs, not only the change magnitude, so it learns which
    *kinds* of transition the strongest IR-MAD changes of this scene are, and scores weaker
    pixels of the same kind higher than equally strong changes of other kinds. The strongest
    IR-MAD changes of a scene are often not new construction but vegetation changing with
    the season or water changing colour; such pixels are taught as *no change*
    (:func:`nuisance_pixels`), so the classifier does not learn them as the scene's change.
    Fitted by scikit-learn's Newton–Cholesky logistic regression with a small ridge
    (:data:`SELFTRAIN_L2`), float64, deterministic; the model keeps only the coefficients.
    """
    if (shift_feature or vegetation_weight) and context is None:
        raise ValueError("fit_self_train: the shift feature and vegetation weight need context")
    a = np.asarray(values_a, np.float32)
    b = np.asarray(values_b, np.float32)
    step = max(1, math.ceil(a.shape[1] / SELFTRAIN_FIT_MAX))
    a, b = a[:, ::step], b[:, ::step]
    ctx = None if context is None else np.asarray(context, np.float32)[:, ::step]
    shift = ctx[0] if shift_feature else None
    z = irmad_chi2(a[:, :, None], b[:, :, None], irmad)[:, 0]
    nuisance = nuisance_pixels(a, b, band_names)
    pos, neg, hi, lo = self_train_examples(z, nuisance, change_quantile, nochange_quantile)
    if min(pos.sum(), neg.sum()) < MIN_SAMPLE_PIXELS:
        raise InputDataError(
            f"self-training found {int(pos.sum())} change and {int(neg.sum())} no-change "
            f"examples in the pass-1 sample; expected at least {MIN_SAMPLE_PIXELS} each "
            "(lower 'detect.sample_step' or widen the 'detect.selftrain_*_quantile' gap)"
        )
    names = tuple(band_names)
    feats = np.stack(self_train_features(a, b, z, shift, names)).astype(np.float64)  # (F, n)
    mu = feats.mean(axis=1)
    sd = feats.std(axis=1)
    sd = np.where(sd > 0, sd, 1.0)
    keep = pos | neg
    x = ((feats[:, keep] - mu[:, None]) / sd[:, None]).T
    y = pos[keep].astype(np.float64)
    w = _logistic_regression(x, y)
    coef = w[:-1] / sd
    intercept = float(w[-1] - coef @ mu)
    ref = None
    if vegetation_weight:
        p = 1.0 / (1.0 + np.exp(-np.clip(feats.T @ coef + intercept, -50, 50)))
        veg = ctx[1].astype(np.float64)
        changed = p > 0.5
        if changed.sum() >= VEG_REF_MIN_PIXELS:
            ref = float(np.median(veg[changed]))
        else:
            ref = float(np.quantile(veg, 0.99))
    log.info(
        "self-training: %d change / %d no-change examples (IR-MAD cuts %.1f / %.1f, "
        "%d nuisance pixels)",
        int(pos.sum()),
        int(neg.sum()),
        hi,
        lo,
        int(nuisance.sum()),
    )
    return SelfTrainModel(
        irmad, tuple(float(v) for v in coef), intercept, hi, lo, shift_feature, ref, names
    )


def _logistic_regression(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Class-balanced ridge logistic regression; weights then intercept (float64).

    :class:`sklearn.linear_model.LogisticRegression` minimises
    ``C sum_i s_i loss_i + |w|² / 2`` (intercept not penalised); with ``C = 1 / (L2 n)`` that
    is ``L2`` (:data:`SELFTRAIN_L2`) times ``sum_i s_i loss_i / n + L2 |w|² / 2``, the ridge
    on standardised features, and ``class_weight="balanced"`` gives each class half the
    weight. Newton–Cholesky: exact, deterministic, a fraction of a second on 200 000 examples.
    """
    n = x.shape[0]
    model = LogisticRegression(
        C=1.0 / (SELFTRAIN_L2 * n),
        class_weight="balanced",
        solver="newton-cholesky",
        tol=SELFTRAIN_TOL,
        max_iter=SELFTRAIN_NEWTON_STEPS,
    )
    model.fit(x, y)
    return np.concatenate([model.coef_[0], model.intercept_]).astype(np.float64)


def probability(
    a: np.ndarray, b: np.ndarray, model: SelfTrainModel, shift: np.ndarray | None = None
) -> np.ndarray:
    """``P(change)`` per pixel, float32, feature by feature (elementwise given ``shift``)."""
    z = irmad_chi2(a, b, model.irmad)
    logit = np.full(z.shape, np.float32(model.intercept), dtype=np.float32)
    for c, f in zip(model.coef, self_train_features(a, b, z, shift, model.band_names)):
        logit += np.float32(c) * f
    return (1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))).astype(np.float32)
