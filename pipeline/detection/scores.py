"""Change detection on arrays: the change score of every method, thresholds and clean-up.

Everything here is pure numpy: arrays in, new arrays out, nothing read or written. The engine
(:mod:`pipeline.detection.pair`) works in two passes: pass 1 samples the whole scene
(:mod:`pipeline.detection.sampling`) and fits the global normalisation (:func:`normalisation`), the
method's model and the threshold (:func:`threshold`); pass 2 applies them block by block
(:func:`change_score`, :func:`change_mask`, :func:`refine_edges`, :func:`clean_mask`), so the
result does not depend on the block size.

The methods (``detect.method``) and their references — the models live in their own modules:

- ``cva``: change vector analysis (Malila 1980) on per-epoch z-scored bands.
- ``index``: built-up gain — brightening of a surface not vegetated afterwards (NDVI, Rouse et
  al. 1974).
- ``novelty``: change-vector novelty against a trimmed Gaussian mixture of the scene's common
  transitions (trimmed likelihood: Neykov et al. 2007) and the no-change relation
  (:mod:`pipeline.detection.methods.novelty`).
- ``irmad``: iteratively re-weighted multivariate alteration detection (Nielsen 2007, IEEE
  TIP 16(2); Canty, *Image Analysis, Classification and Change Detection in Remote Sensing*,
  ch. 9); score = ``sum_i (MAD_i / sigma_i)**2`` (:mod:`pipeline.detection.methods.irmad`).
- ``normalise: irmad_regression``: relative radiometric normalisation by orthogonal regression
  over IR-MAD no-change pixels (Canty, Nielsen & Schmidt 2004, RSE 91; Canty & Nielsen 2008,
  RSE 112), available to every method (:func:`pipeline.detection.methods.irmad.irmad_regression`).
- ``selftrain``: self-training (unsupervised, per scene): a class-balanced logistic regression
  fitted in pass 1 on the scene's own confident IR-MAD change and no-change pixels
  (:mod:`pipeline.detection.methods.selftrain`).
- ``smooth_sigma_m``: spatial context, a Gaussian on the score before the cut
  (:func:`pipeline.detection.neighbourhood.smooth_score`).

Measured on OSCD (8 labelled Sentinel-2 cities, one configuration, ``benchmarks/eval_oscd.py``):
mean F1 cva + otsu 0.181, irmad fixed 80 + 10 m smoothing 0.275, selftrain with the example
configuration 0.346, 0.362 with the patch-level cloud screen and 0.368 with the moisture
screen too (:mod:`pipeline.detection.screens`; the
figures and the settings tried are in ``examples/oscd_france/README.md``). Even the best cut
chosen per city *with* the labels gives the selftrain score only ≈ 0.34 at pixel level: the
ranking, not the cut, is the limit.

Notes
-----
Mask direction: ``valid`` is True where a pixel is usable; a change mask is True where the
pixel changed. Invalid pixels (nodata or masked in either epoch) never become change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy import stats
from skimage.filters import threshold_multiotsu, threshold_otsu

from pipeline.bands import (
    NDVI_NONVEG_MAX,
    VISIBLE_BANDS,
    check_bands,
    has_nir,
    vegetation_index,
)
from pipeline.detection.methods.irmad import IrmadModel, fit_irmad, irmad_chi2, irmad_regression
from pipeline.detection.methods.novelty import NoveltyModel, novelty_score
from pipeline.detection.methods.selftrain import (
    SelfTrainModel,
    probability,
    shift_tolerant_difference,
)
from pipeline.detection.neighbourhood import box3_sum, dilate_disk, erode_disk
from pipeline.detection.sampling import MIN_SAMPLE_PIXELS, Moments, Normalisation
from pipeline.detection.target_grid import nonzero_rc, row_strips
from pipeline.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

CHI2_DEFAULT_QUANTILE = 0.99


def normalisation(
    moments_a: Moments,
    moments_b: Moments,
    how: str,
    nbands: int,
    sample_a: np.ndarray | None = None,
    sample_b: np.ndarray | None = None,
    irmad: IrmadModel | None = None,
) -> Normalisation:
    """The normalisation to apply: ``zscore`` from the global moments, ``none``, or
    ``irmad_regression`` (epoch 2 regressed onto epoch 1 over the IR-MAD no-change pixels of
    the pass-1 sample ``sample_a``/``sample_b``, see :func:`irmad_regression`; ``irmad`` is
    the model fitted on that sample, fitted here when not given).

    Raises
    ------
    InputDataError
        When the sample holds too few valid pixels.
    ConfigError
        For a normalisation that is not implemented.
    """
    if how == "none":
        ones, zeros = (1.0,) * nbands, (0.0,) * nbands
        return Normalisation(zeros, ones, zeros, ones)
    if how not in ("zscore", "irmad_regression"):
        raise ConfigError(
            f"'detect.normalise' = {how!r} is not one of zscore, irmad_regression, none"
        )
    if min(moments_a.n, moments_b.n) < MIN_SAMPLE_PIXELS:
        raise InputDataError(
            f"only {min(moments_a.n, moments_b.n)} pixels are valid in both epochs in the "
            f"sample; expected at least {MIN_SAMPLE_PIXELS}. The epochs barely overlap or are "
            "mostly nodata/cloud, the scene ('area.bounds') lies outside the imagery, or it is "
            "too small for the sample — check the imagery, masks, 'imagery.nodata', "
            "'area.bounds' and 'area.resolution_m', or lower 'detect.sample_step'"
        )
    mean_a, std_a = moments_a.mean_std()
    mean_b, std_b = moments_b.mean_std()
    # a constant band carries no information; std 1 keeps it from dividing by zero
    std_a = np.where(std_a > 0, std_a, 1.0)
    std_b = np.where(std_b > 0, std_b, 1.0)
    base = Normalisation(
        tuple(mean_a.tolist()), tuple(std_a.tolist()), tuple(mean_b.tolist()), tuple(std_b.tolist())
    )
    if how == "zscore":
        return base
    if sample_a is None or sample_b is None:
        raise ConfigError("'detect.normalise' = 'irmad_regression' needs the pass-1 sample")
    if irmad is None:
        irmad = fit_irmad(sample_a, sample_b)
    return irmad_regression(sample_a, sample_b, irmad, base)


# --------------------------------------------------------------------------- scores
def change_score(
    data_a: np.ndarray,
    data_b: np.ndarray,
    valid: np.ndarray,
    norm: Normalisation,
    method: str,
    band_names: Sequence[str],
    model: NoveltyModel | IrmadModel | SelfTrainModel | None = None,
    context: np.ndarray | None = None,
) -> np.ndarray:
    """Per-pixel change score (float32, 0 where invalid).

    ``context``: the :func:`self_train_context` features of these pixels, when they cannot
    be computed here (the pass-1 sample is single pixels); otherwise computed from the block.

    Methods
    -------
    ``cva``
        Change-vector magnitude ``sqrt(sum_b (z_b(after) - z_b(before))**2)`` over all
        configured bands, ``z`` = per-band z-score with each epoch's global statistics (or
        the raw values with ``normalise: none``).
    ``index``
        Brightening of a surface that is not vegetated afterwards — the signature of new
        roofs, concrete and fill soil (built-up gain), not of crops turning to soil:
        ``max(zB_after - zB_before, 0) * clip((NDVI_NONVEG_MAX - V_after) / NDVI_NONVEG_MAX, 0, 1)``
        with ``zB`` the mean of the visible bands' z-scores (each epoch's global statistics,
        so gain/offset differences between dates cancel) and ``V`` the vegetation index
        (:func:`~pipeline.bands.vegetation_index`: NDVI, or 3 × VDVI without nir). Needs red
        and nir, or blue, green and red.
    ``novelty``
        Change-vector novelty (needs ``model`` from :func:`fit_novelty_model`): the
        Mahalanobis distance of the joint vector ``[z_before, z_after]`` to the nearest
        *common* transition of the scene (mixture components and the no-change relation),
        times the ``index`` method's non-vegetation weight of the later surface (softened to
        fall from 1 at NDVI :data:`NDVI_NONVEG_MAX` to 0 at :data:`NOVELTY_NDVI_ZERO`), and
        0 where the visible bands got darker than the no-change relation predicts (shadows,
        water, crops greening) unless the vegetation index fell by
        :data:`~pipeline.detection.methods.novelty.NOVELTY_VEGETATION_LOSS` (a black roof or
        yard on crops). In units of standard deviations of the nearest common
        transition; new roofs of any colour, concrete and fill on crop land are rare
        transitions, seasonal crop changes are common ones.
        The distance is computed only for pixels that pass both gates (the others score 0
        whatever their distance), in float32 from the expanded quadratic forms (agrees with a
        float64 whitened distance to ~1e-4 relative).
    ``irmad``
        The IR-MAD chi-square statistic ``Z = sum_i (MAD_i / sigma_i)**2`` (needs ``model``
        from :func:`fit_irmad`); about ``chi2(bands)`` on unchanged pixels, so the natural
        cut is a chi-square quantile (:func:`threshold` ``chi2`` with ``squared=True``).
        Invariant to per-band gain/offset of either epoch; ``norm`` is not used.
    ``selftrain``
        Self-training (needs ``model`` from :func:`fit_self_train`): the probability of change
        from a logistic regression fitted on the scene's own confident IR-MAD change and
        no-change pixels of the pass-1 sample, on the bands, indices and IR-MAD statistic of
        both epochs and the shift-tolerant difference (:func:`self_train_features`). In
        [0, 1]. The engine then smooths it and, with ``model.vegetation_ref``, weights it by
        the vegetation change (:func:`vegetation_weight`).

    Notes
    -----
    Computed in float32, band by band, elementwise — so a pixel's score is bit-identical
    whatever block it is computed in.
    """
    if method == "cva":
        score = _cva(data_a, data_b, norm)
    elif method == "index":
        score = _index(data_a, data_b, norm, band_names)
    elif method == "novelty":
        if not isinstance(model, NoveltyModel):
            raise ConfigError("'detect.method' = 'novelty' needs the pass-1 novelty model")
        score = novelty_score(data_a, data_b, norm, model, band_names)
    elif method == "irmad":
        if not isinstance(model, IrmadModel):
            raise ConfigError("'detect.method' = 'irmad' needs the pass-1 IR-MAD model")
        score = irmad_chi2(data_a, data_b, model)
    elif method == "selftrain":
        if not isinstance(model, SelfTrainModel):
            raise ConfigError("'detect.method' = 'selftrain' needs the pass-1 self-trained model")
        shift = None
        if model.shift_feature:
            shift = (
                context[0]
                if context is not None
                else shift_tolerant_difference(data_a, data_b, valid)
            )
        score = probability(data_a, data_b, model, shift)
    else:
        raise ConfigError(
            f"'detect.method' = {method!r} is not implemented; use 'cva', 'irmad', 'index', "
            "'novelty' or 'selftrain'"
        )
    if not valid.all():  # the usual block is valid throughout: no inverted copy
        score[~valid] = 0.0
    return score


def _cva(a: np.ndarray, b: np.ndarray, norm: Normalisation) -> np.ndarray:
    """``sqrt(sum_i (z_b,i - z_a,i)**2)`` as ``b * kb - a * ka + c`` per band (the z-scores'
    scales and offsets folded into two factors and a constant), in place.

    In row strips (:func:`~pipeline.detection.target_grid.row_strips`): the six passes per band then stay in
    the CPU cache instead of streaming the whole block through memory six times (≈ 1.7×
    faster on a 5000-px-wide block); every pixel gets the same operations in the same order."""
    out = np.empty(a.shape[1:], dtype=np.float32)
    strips = row_strips(a.shape[1], a.shape[2])
    d = np.empty((max((r1 - r0 for r0, r1 in strips), default=0), a.shape[2]), np.float32)
    t = np.empty_like(d)
    factors = []
    for i in range(a.shape[0]):
        ka, kb = 1.0 / norm.std_a[i], 1.0 / norm.std_b[i]
        c = np.float32(norm.mean_a[i] * ka - norm.mean_b[i] * kb)
        factors.append((np.float32(ka), np.float32(kb), c))
    for r0, r1 in strips:
        acc, dd, tt = out[r0:r1], d[: r1 - r0], t[: r1 - r0]
        acc[...] = 0
        for i, (ka, kb, c) in enumerate(factors):
            np.multiply(b[i, r0:r1], kb, out=dd)
            np.multiply(a[i, r0:r1], ka, out=tt)
            dd -= tt
            dd += c
            dd *= dd
            acc += dd
        np.sqrt(acc, out=acc)
    return out


def _index(a, b, norm: Normalisation, band_names: Sequence[str]) -> np.ndarray:
    """Built-up gain: the visible brightening times the later surface's non-vegetation
    weight, vegetation from :func:`~pipeline.bands.vegetation_index` (NDVI, or without
    ``nir`` the scaled VDVI of the visible bands)."""
    names = list(band_names)
    if not has_nir(names):
        check_bands(names, VISIBLE_BANDS, "'detect.method' = 'index' without a nir band")
    vis = [names.index(v) for v in VISIBLE_BANDS if v in names]
    gain = np.zeros(a.shape[1:], dtype=np.float32)
    for i in vis:
        za = (a[i] - np.float32(norm.mean_a[i])) / np.float32(norm.std_a[i])
        zb = (b[i] - np.float32(norm.mean_b[i])) / np.float32(norm.std_b[i])
        gain += zb - za
    gain /= np.float32(len(vis))
    veg_b = vegetation_index(b, names)
    lim = np.float32(NDVI_NONVEG_MAX)
    nonveg = np.clip((lim - veg_b) / lim, 0, 1)
    return (np.maximum(gain, 0) * nonveg).astype(np.float32)


# --------------------------------------------------------------------------- thresholds
def threshold(
    scores: np.ndarray,
    how: str,
    value: float | None = None,
    nbands: int = 1,
    *,
    squared: bool = False,
) -> float:
    """The score cut from the pass-1 sample of scores.

    ``otsu``: :func:`skimage.filters.threshold_otsu` on the sample. ``multiotsu``: the upper
    cut of a three-class Otsu (:func:`skimage.filters.threshold_multiotsu`): no change /
    common change (seasonal crops) / strong change — for scenes where seasonal change is the
    larger mode and plain Otsu splits it off instead of the rare construction.
    ``fixed``: ``value``.
    ``chi2``: assumes unchanged pixels give ``score**2 / sigma**2 ~ chi2(nbands)``; sigma² is
    estimated robustly from the median of ``score**2`` and the cut is the ``value`` quantile
    (default 0.99). With ``squared=True`` the scores already are chi-square statistics with
    unit no-change variance (``irmad``): the cut is the ``value`` quantile of ``chi2(nbands)``
    itself, whatever the sample.
    """
    if how == "chi2" and squared:
        return float(stats.chi2.ppf(CHI2_DEFAULT_QUANTILE if value is None else value, nbands))
    if how == "fixed":
        if value is None:
            raise ConfigError("'detect.threshold' = 'fixed' needs 'detect.threshold_value'")
        return float(value)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size < MIN_SAMPLE_PIXELS:
        raise InputDataError(
            f"only {scores.size} sampled pixels are valid in both epochs; expected at least "
            f"{MIN_SAMPLE_PIXELS} to compute a '{how}' threshold (check overlap, nodata, masks, "
            "or lower 'detect.sample_step')"
        )
    if how == "otsu":
        if np.ptp(scores) == 0:
            return float(scores[0])
        return float(threshold_otsu(scores))
    if how == "multiotsu":
        if np.unique(scores[: 10 * MIN_SAMPLE_PIXELS]).size < 3 and np.unique(scores).size < 3:
            return float(scores.max())
        return float(threshold_multiotsu(scores, classes=3)[-1])
    if how == "chi2":
        q = CHI2_DEFAULT_QUANTILE if value is None else value
        sigma2 = np.median(scores**2) / stats.chi2.median(nbands)
        return float(np.sqrt(sigma2 * stats.chi2.ppf(q, nbands)))
    raise ConfigError(f"'detect.threshold' = {how!r} is not one of otsu, multiotsu, chi2, fixed")


def change_mask(
    score: np.ndarray, valid: np.ndarray, cut: float, hysteresis_low: float | None = None
) -> np.ndarray:
    """``score > cut & valid``; with ``hysteresis_low``, ``score > hysteresis_low * cut``.

    Notes
    -----
    Hysteresis is completed at the patch level: patches drawn at the low cut are kept only
    when one of their pixels is above ``cut`` (:class:`~pipeline.detection.vectorize.PatchFilter`
    ``min_peak``), after the clean-up and after merging across blocks — so, unlike a
    per-block hysteresis, the result is exact whatever the block size, and it needs no halo.
    """
    level = cut if hysteresis_low is None else hysteresis_low * cut
    return (score > np.float32(level)) & valid


# --------------------------------------------------------------------------- clean-up
def radius_px(radius_m: float, resolution_m: float) -> int:
    """A radius in metres as whole pixels (rounded; 0 = no operation)."""
    return round(radius_m / resolution_m)


def cleaning_halo(open_px: int, close_px: int) -> int:
    """Halo (px) so that opening then closing on block+halo equals the whole-image result.

    Opening (erosion + dilation) looks ``2 * open_px`` pixels away, closing ``2 * close_px``.
    """
    return 2 * (open_px + close_px)


EDGE_HALO_PX = 2
"""Extra halo for :func:`refine_edges` (it looks one pixel around the mask)."""


def refine_edges(
    mask: np.ndarray, score: np.ndarray, valid: np.ndarray, ratio: float
) -> np.ndarray:
    """Add the mixed pixels along a patch's outline: a pixel next to the mask joins it when its
    score is at least ``ratio`` times the mean score of its masked 3×3 neighbours.

    Notes
    -----
    A pixel on the edge of a roof is partly roof and partly field, so its score is roughly the
    covered share times the roof's score; ``ratio = 0.5`` keeps the pixels at least half
    covered, which removes the systematic area loss of a plain threshold (a 15 × 15 m roof at
    2 m loses about a quarter of its area otherwise). One pass, purely local (3×3), so the
    result does not depend on the block size given :data:`EDGE_HALO_PX` of halo.
    """
    n = box3_sum(mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8))
    # the only pixels that can join: next to the mask, not in it, valid (bool a > b = a & ~b)
    cand = n > 0
    np.logical_and(cand, valid, out=cand)
    np.greater(cand, mask, out=cand)
    rows, cols = nonzero_rc(cand)
    out = mask & valid
    if len(rows) == 0:
        return out
    # masked 3×3 score sums at the candidates only (they are a thin rim around the mask),
    # gathered from the neighbours directly: no whole-block temporary
    h, w = mask.shape
    total = np.zeros(len(rows), dtype=np.float32)
    zero = np.float32(0)
    for dy in (-1, 0, 1):
        r = rows + dy
        r_in = (r >= 0) & (r < h)
        np.clip(r, 0, h - 1, out=r)
        for dx in (-1, 0, 1):
            c = cols + dx
            inside = r_in & (c >= 0) & (c < w)
            np.clip(c, 0, w - 1, out=c)
            total += np.where(inside & mask[r, c], score[r, c], zero)
    ref = total / n[rows, cols].astype(np.float32)
    join = score[rows, cols] >= np.float32(ratio) * ref
    out[rows[join], cols[join]] = True
    return out


def clean_mask(
    mask: np.ndarray,
    valid: np.ndarray,
    open_px: int,
    close_px: int,
    *,
    score: np.ndarray | None = None,
    edge_ratio: float | None = None,
) -> np.ndarray:
    """Opening (removes specks), then with ``edge_ratio`` the edge refinement of what is left
    (:func:`refine_edges` on ``score``), then closing (fills pinholes), then ``& valid``.

    Notes
    -----
    The refinement comes after the opening so that it grows the outlines of real patches
    only: run on the raw mask, it also grows every noise speck of the low (hysteresis) cut,
    and the rims of a patch and of the specks around it join them into one larger patch whose
    mean score can fall below ``min_mean_score`` — a clear building lost with its specks.

    Outside the array counts as "no change"; only pixels at least
    :func:`cleaning_halo` (+ :data:`EDGE_HALO_PX` with the refinement) from the array edge are
    exact, which is why the engine works on block + halo and crops the halo afterwards.
    """
    out = mask
    if open_px > 0:
        out = dilate_disk(erode_disk(out, open_px), open_px)
    if edge_ratio is not None:
        if score is None:
            raise ValueError("clean_mask: edge refinement needs the score")
        out = refine_edges(out, score, valid, edge_ratio)
    if close_px > 0:
        out = erode_disk(dilate_disk(out, close_px), close_px)
    return out & valid
