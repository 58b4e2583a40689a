"""Change detection on arrays: global statistics, change scores, thresholds, clean-up.

Everything here is pure numpy: arrays in, new arrays out, nothing read or written. The engine
(:mod:`pipeline.engine`) calls these functions in two passes: pass 1 samples the whole scene
(:func:`sample_block`, :func:`combine_samples`) to fix the global normalisation and the
threshold; pass 2 applies them block by block (:func:`change_score`, :func:`change_mask`,
:func:`clean_mask`), so the result does not depend on the block size.

The ``novelty`` method and its one configuration (``config.yaml``, never tuned per scene):

- *Trimmed mixture* (``novelty_trim: 0.02``). The common transitions are a Gaussian mixture
  fitted by trimmed-likelihood EM: in every M-step the least likely 2 % of the pass-1 sample
  gets no weight. New construction covers 0.1–0.3 % of a scene (more on a small or
  construction-dense one), so it always falls in the trimmed tail and can never grow a broad,
  low-weight "catch-all" component that scores it as common — the failure of the plain EM on
  small scenes, where such a component held 1–2 % of the sample and every new roof. Seasonal
  crop transitions cover far more than 2 % and are fitted as before.
- *Cut in standard deviations* (``threshold: fixed``, 6): the distance to the nearest common
  transition in its own standard deviations; unchanged and seasonal pixels sit below ≈ 4,
  new roofs at 7–25 (red tile roofs, closest to ploughed soil, at 6–9; hysteresis at 0.7 of
  the cut keeps their weaker pixels).
- *Gates before the distance*: a pixel vegetated afterwards (NDVI ≥ :data:`NOVELTY_NDVI_ZERO`)
  or darker than the no-change relation predicts scores 0, so the distance is evaluated only
  on the remaining *candidate* pixels (typically a third of a block), as one float32 matrix
  product of quadratic features — ≈ 6× faster than whitening every pixel for every component.

The methods and their references:

- ``cva``: change vector analysis (Malila 1980) on per-epoch z-scored bands.
- ``index``: built-up gain — brightening of a surface not vegetated afterwards (NDVI, Rouse et
  al. 1974).
- ``novelty``: change-vector novelty against a trimmed Gaussian mixture of the scene's common
  transitions (trimmed likelihood: Neykov et al. 2007) and the no-change relation.
- ``irmad``: iteratively re-weighted multivariate alteration detection (Nielsen 2007, IEEE
  TIP 16(2); Canty, *Image Analysis, Classification and Change Detection in Remote Sensing*,
  ch. 9): canonical correlation of the two epochs on the pass-1 sample, re-weighted by the
  chi-square no-change probability; score = ``sum_i (MAD_i / sigma_i)**2``. The no-change
  variances are estimated robustly (median) — the textbook ``2 (1 - rho)`` contracts onto a
  handful of pixels on real 10 m scenes (see :func:`_robust_mad_variance`).
- ``normalise: irmad_regression``: relative radiometric normalisation by orthogonal regression
  over IR-MAD no-change pixels (Canty, Nielsen & Schmidt 2004, RSE 91; Canty & Nielsen 2008,
  RSE 112), available to every method.
- ``smooth_sigma_m``: spatial context, a Gaussian on the score before the cut
  (:func:`smooth_score`).
- ``selftrain``: self-training (unsupervised, per scene): a class-balanced logistic regression
  fitted in pass 1 on the scene's own confident IR-MAD change (top quantile of the sample) and
  no-change (bottom quantile) pixels, on per-pixel features of both epochs (log bands, their
  differences, NDVI/NDBI and their change, ``log(1 + Z)``); the score is ``P(change)``
  (:func:`fit_self_train`). The classifier learns which *kinds* of transition the strongest
  changes of this scene are, so it ranks weaker pixels of those kinds above equally strong
  changes of other kinds.

Measured on OSCD (8 labelled Sentinel-2 cities, one configuration, ``eval_oscd.py``): mean F1
cva + otsu 0.181, cva fixed 5 0.240, irmad fixed 80 + 10 m smoothing 0.275, selftrain
(quantiles 0.99/0.8) cut 0.5 + 20 m smoothing 0.296. Adaptive cuts on the IR-MAD score
(scene quantile, log-median + k·MAD) did not help: even the best cut chosen per city *with*
the labels gives IR-MAD only ≈ 0.29 at pixel level — the ranking, not the cut, is the limit.

Notes
-----
Mask direction: ``valid`` is True where a pixel is usable; a change mask is True where the
pixel changed. Invalid pixels (nodata or masked in either epoch) never become change.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, stats
from skimage.filters import threshold_multiotsu, threshold_otsu

from pipeline.errors import ConfigError, InputDataError
from pipeline.grid import row_strips

log = logging.getLogger(__name__)

INDEX_BANDS = ("red", "nir")
"""Bands the ``index`` method needs (NDVI); brightness uses every visible band present."""
VISIBLE_BANDS = ("blue", "green", "red")
NDVI_NONVEG_MAX = 0.3
"""``index``: NDVI at or above which the later surface counts as vegetated (weight 0); roofs,
concrete and fresh fill are near 0, ploughed soil ≈ 0.1, stubble ≈ 0.2, crops > 0.5."""
CHI2_DEFAULT_QUANTILE = 0.99
MIN_SAMPLE_PIXELS = 16
"""Fewer valid pixels than this in the pass-1 sample cannot give a threshold."""
_INT_EXACT_LIMIT = 2**20
"""Sample values below this magnitude that are whole numbers are summed as integers
(exact, so global statistics are bit-identical whatever the block size)."""


# --------------------------------------------------------------------------- pass 1: sampling
def sample_slices(row_off: int, col_off: int, height: int, width: int, step: int):
    """Slices selecting the rows/cols of a block whose *global* index is a multiple of ``step``.

    Sampling on global indices makes the sample independent of how the grid is cut into
    blocks.
    """
    r0 = (-row_off) % step
    c0 = (-col_off) % step
    return slice(r0, height, step), slice(c0, width, step)


@dataclass
class Moments:
    """Count, sum and sum of squares per band; exact (Python ints) for integer data."""

    n: int = 0
    s: list = field(default_factory=list)
    q: list = field(default_factory=list)

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """Moments of ``values`` (nbands, n)."""
        n = int(values.shape[1])
        if n == 0:
            return cls(0, [0] * values.shape[0], [0] * values.shape[0])
        as_int = values.astype(np.int64)
        if np.abs(values).max() < _INT_EXACT_LIMIT and np.array_equal(as_int, values):
            return cls(
                n,
                [int(x) for x in as_int.sum(axis=1)],
                [int(x) for x in (as_int * as_int).sum(axis=1)],
            )
        f = values.astype(np.float64)
        return cls(n, f.sum(axis=1).tolist(), (f * f).sum(axis=1).tolist())

    def __add__(self, other: Moments) -> Moments:
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        return Moments(
            self.n + other.n,
            [a + b for a, b in zip(self.s, other.s)],
            [a + b for a, b in zip(self.q, other.q)],
        )

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-band mean and (population) standard deviation, float64."""
        n = self.n
        mean = np.array([s / n for s in self.s], dtype=np.float64)
        # n*q - s*s is exact for ints; floats lose a little, which is fine
        var = np.array([(n * q - s * s) / (n * n) for s, q in zip(self.s, self.q)])
        return mean, np.sqrt(np.maximum(var, 0.0))


@dataclass
class SampleChunk:
    """Pass-1 result of one block: moments of both epochs and a thinned sample."""

    moments_a: Moments
    moments_b: Moments
    keys: np.ndarray  # global flat pixel index (row * grid_width + col), int64
    values_a: np.ndarray  # (nbands, n) float32
    values_b: np.ndarray
    context: np.ndarray | None = None  # (k, n) float32: neighbourhood features, see below


def sample_block(
    data_a: np.ndarray,
    data_b: np.ndarray,
    valid: np.ndarray,
    row_off: int,
    col_off: int,
    step: int,
    thin: int,
    grid_width: int,
    context: np.ndarray | None = None,
) -> SampleChunk:
    """Sample one block (no halo) for the global statistics.

    Parameters
    ----------
    data_a, data_b : ndarray (nbands, h, w)
        Both epochs on the block.
    valid : ndarray bool (h, w)
        Pixels valid in both epochs.
    row_off, col_off : int
        Global position of the block.
    step : int
        Moments use every ``step``-th global row and column.
    thin : int
        The score sample (for the threshold) uses every ``step * thin``-th row and column,
        which bounds the driver's memory on large scenes.
    grid_width : int
        Used to make global pixel keys, so the driver can sort the sample canonically.
    context : ndarray (k, h, w), optional
        Per-pixel neighbourhood features computed on the block with a halo
        (:func:`self_train_context`), sampled at the same pixels as the values.
    """
    h, w = valid.shape
    rs, cs = sample_slices(row_off, col_off, h, w, step)
    v = valid[rs, cs]
    moments_a = Moments.of(data_a[:, rs, cs][:, v])
    moments_b = Moments.of(data_b[:, rs, cs][:, v])
    big = step * thin
    rs, cs = sample_slices(row_off, col_off, h, w, big)
    v = valid[rs, cs]
    rows = np.arange(h)[rs] + row_off
    cols = np.arange(w)[cs] + col_off
    keys = (rows[:, None].astype(np.int64) * grid_width + cols[None, :])[v]
    return SampleChunk(
        moments_a,
        moments_b,
        keys,
        data_a[:, rs, cs][:, v].copy(),
        data_b[:, rs, cs][:, v].copy(),
        None if context is None else context[:, rs, cs][:, v].astype(np.float32),
    )


@dataclass(frozen=True)
class Normalisation:
    """Per-band mean and std of each epoch (float64 tuples); identity for ``none``."""

    mean_a: tuple[float, ...]
    std_a: tuple[float, ...]
    mean_b: tuple[float, ...]
    std_b: tuple[float, ...]


def combine_samples(
    chunks: Sequence[SampleChunk],
) -> tuple[Moments, Moments, np.ndarray, np.ndarray]:
    """Sum the moments and concatenate the samples in global pixel order.

    Returns ``(moments_a, moments_b, values_a, values_b)``.
    """
    ma, mb = Moments(), Moments()
    for c in chunks:
        ma = ma + c.moments_a
        mb = mb + c.moments_b
    if not chunks:
        return ma, mb, np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    keys = np.concatenate([c.keys for c in chunks])
    order = np.argsort(keys, kind="stable")
    va = np.concatenate([c.values_a for c in chunks], axis=1)[:, order]
    vb = np.concatenate([c.values_b for c in chunks], axis=1)[:, order]
    return ma, mb, va, vb


def combine_context(chunks: Sequence[SampleChunk]) -> np.ndarray | None:
    """The chunks' context features in the canonical (key-sorted) order of
    :func:`combine_samples`; None when the chunks carry none."""
    if not chunks or chunks[0].context is None:
        return None
    keys = np.concatenate([c.keys for c in chunks])
    order = np.argsort(keys, kind="stable")
    return np.concatenate([c.context for c in chunks], axis=1)[:, order]


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
            "mostly nodata/cloud — check the imagery, masks and 'imagery.nodata'"
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
        ``max(zB_after - zB_before, 0) * clip((NDVI_NONVEG_MAX - NDVI_after) / NDVI_NONVEG_MAX, 0, 1)``
        with ``zB`` the mean of the visible bands' z-scores (each epoch's global statistics,
        so gain/offset differences between dates cancel). Needs red, nir and at least one
        other visible band.
    ``novelty``
        Change-vector novelty (needs ``model`` from :func:`fit_novelty_model`): the
        Mahalanobis distance of the joint vector ``[z_before, z_after]`` to the nearest
        *common* transition of the scene (mixture components and the no-change relation),
        times the ``index`` method's non-vegetation weight of the later surface (softened to
        fall from 1 at NDVI :data:`NDVI_NONVEG_MAX` to 0 at :data:`NOVELTY_NDVI_ZERO`), and
        0 where the visible bands got darker than the no-change relation predicts (shadows,
        water, crops greening). In units of standard deviations of the nearest common
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
        score = _novelty(data_a, data_b, norm, model, band_names)
    elif method == "irmad":
        if not isinstance(model, IrmadModel):
            raise ConfigError("'detect.method' = 'irmad' needs the pass-1 IR-MAD model")
        score = _irmad_chi2(data_a, data_b, model)
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
        score = _self_train(data_a, data_b, model, shift)
    else:
        raise ConfigError(
            f"'detect.method' = {method!r} is not implemented; use 'cva', 'irmad', 'index', "
            "'novelty' or 'selftrain'"
        )
    score[~valid] = 0.0
    return score


def _cva(a: np.ndarray, b: np.ndarray, norm: Normalisation) -> np.ndarray:
    """``sqrt(sum_i (z_b,i - z_a,i)**2)`` as ``b * kb - a * ka + c`` per band (the z-scores'
    scales and offsets folded into two factors and a constant), in place.

    In row strips (:func:`~pipeline.grid.row_strips`): the six passes per band then stay in
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
    names = list(band_names)
    missing = [n for n in INDEX_BANDS if n not in names]
    if missing:
        raise ConfigError(
            f"'detect.method' = 'index' needs the band(s) {', '.join(missing)} "
            f"(configured: {', '.join(names)}); add them to 'imagery.bands'/'band_files'"
        )
    r, n = names.index("red"), names.index("nir")
    vis = [names.index(v) for v in VISIBLE_BANDS if v in names]
    gain = np.zeros(a.shape[1:], dtype=np.float32)
    for i in vis:
        za = (a[i] - np.float32(norm.mean_a[i])) / np.float32(norm.std_a[i])
        zb = (b[i] - np.float32(norm.mean_b[i])) / np.float32(norm.std_b[i])
        gain += zb - za
    gain /= np.float32(len(vis))
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi_b = np.nan_to_num((b[n] - b[r]) / (b[n] + b[r]))
    lim = np.float32(NDVI_NONVEG_MAX)
    nonveg = np.clip((lim - ndvi_b) / lim, 0, 1)
    return (np.maximum(gain, 0) * nonveg).astype(np.float32)


def _novelty(a, b, norm: Normalisation, model: NoveltyModel, band_names) -> np.ndarray:
    names = list(band_names)
    missing = [n for n in INDEX_BANDS if n not in names]
    if missing:
        raise ConfigError(
            f"'detect.method' = 'novelty' needs the band(s) {', '.join(missing)} "
            f"(configured: {', '.join(names)}); add them to 'imagery.bands'/'band_files'"
        )
    h, w = a.shape[1:]
    # the two cheap gates first, on every pixel: vegetated afterwards, or darker than the
    # no-change relation predicts, scores 0 whatever its novelty
    r, nir = names.index("red"), names.index("nir")
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi_b = np.nan_to_num((b[nir] - b[r]) / (b[nir] + b[r]))
    lo, hi = np.float32(NDVI_NONVEG_MAX), np.float32(NOVELTY_NDVI_ZERO)
    nonveg = np.clip((hi - ndvi_b) / (hi - lo), 0, 1).astype(np.float32)
    brighter = np.zeros((h, w), dtype=np.float32)
    for i in (names.index(v) for v in VISIBLE_BANDS if v in names):
        za = (a[i] - np.float32(norm.mean_a[i])) / np.float32(norm.std_a[i])
        zb = (b[i] - np.float32(norm.mean_b[i])) / np.float32(norm.std_b[i])
        g, o = np.float32(model.nochange_gain[i]), np.float32(model.nochange_offset[i])
        brighter += zb - (g * za + o)
    cand = np.flatnonzero((nonveg > 0) & (brighter > 0))
    score = np.zeros(h * w, dtype=np.float32)
    if cand.size:
        score[cand] = np.sqrt(_min_mahalanobis2(a, b, norm, model, cand)) * nonveg.ravel()[cand]
    return score.reshape(h, w)


def _min_mahalanobis2(a, b, norm: Normalisation, model: NoveltyModel, cand) -> np.ndarray:
    """Squared Mahalanobis distance of the candidate pixels (flat indices) to the nearest
    common transition, float32 (≥ 0).

    Candidates are gathered into chunks of :data:`_NOVELTY_CHUNK` pixels (the last one
    padded), so every pixel goes through an identically shaped matrix product whatever the
    block; each distance is one row of ``quad @ features``.
    """
    nb = a.shape[0]
    n = cand.size
    c = _NOVELTY_CHUNK
    a2, b2 = a.reshape(nb, -1), b.reshape(nb, -1)
    out = np.empty(n, dtype=np.float32)
    x = np.empty((2 * nb, c), dtype=np.float32)
    for s in range(0, n, c):
        idx = cand[s : s + c]
        m = idx.size
        for i in range(nb):
            x[i, :m] = (a2[i, idx] - np.float32(norm.mean_a[i])) / np.float32(norm.std_a[i])
            x[nb + i, :m] = (b2[i, idx] - np.float32(norm.mean_b[i])) / np.float32(norm.std_b[i])
        x[:, m:] = 0.0
        d2 = model.quad @ _quadratic_features(x)
        out[s : s + m] = np.minimum.reduce(d2, axis=0)[:m]
    # expanding the quadratic form can leave a tiny negative for a pixel on a mean
    return np.maximum(out, 0.0)


# --------------------------------------------------------------------------- novelty model
NOVELTY_FIT_MAX = 60_000
"""Pixels of the pass-1 sample used to fit the novelty model (regularly thinned beyond)."""
NOVELTY_EM_ITERATIONS = 40
NOVELTY_RIDGE = 1e-3
"""Added to every covariance diagonal (z units²): keeps near-constant clusters invertible."""
NOVELTY_SEED = 0
NOVELTY_NOCHANGE_QUANTILE = 0.99
"""A sample pixel is an inlier of the no-change relation below this chi² quantile."""
NOVELTY_NDVI_ZERO = 0.5
"""``novelty``: the non-vegetation weight falls linearly from 1 at NDVI_NONVEG_MAX to 0 here
(mixed roof/crop pixels on an outline keep part of their score)."""
_NOVELTY_CHUNK = 8192
"""Pixels per matrix product in :func:`_novelty`; chunks are padded to this size so every
pixel goes through an identically shaped product (bit-identical whatever the block)."""


@dataclass(frozen=True)
class NoveltyModel:
    """The common change vectors of a scene, fitted in pass 1 by :func:`fit_novelty_model`.

    Each of the M common transitions (the mixture components kept, then the no-change
    relation) is a quadratic form ``d2(x) = x' P x - 2 (P mu)' x + mu' P mu`` of the joint
    z-vector ``x = [z_before, z_after]`` (D = 2 × bands): the squared Mahalanobis distance to
    that transition. ``quad`` (M, F) holds the coefficients on the features of
    :func:`_quadratic_features` (the D(D+1)/2 products ``x_i x_j``, i ≤ j, then the D
    values, then 1), so all M distances are one matrix product. ``weights`` are the mixture
    weights of the components kept (the no-change relation last, weight = inlier share).
    """

    quad: np.ndarray
    weights: tuple[float, ...]
    n_dims: int
    nochange_gain: tuple[float, ...]
    nochange_offset: tuple[float, ...]
    """Per band: ``z_b`` of an unchanged pixel ≈ ``gain * z_a + offset`` (the brightening
    test of the score is relative to this, not to the raw z difference)."""


def fit_novelty_model(
    values_a: np.ndarray,
    values_b: np.ndarray,
    norm: Normalisation,
    *,
    n_components: int,
    min_weight: float,
    trim: float = 0.0,
) -> NoveltyModel:
    """Model the scene's *common* transitions from the pass-1 sample.

    Parameters
    ----------
    values_a, values_b : ndarray (nbands, n)
        The canonical pass-1 sample of both epochs (raw values, valid pixels only).
    norm : Normalisation
        The global z-score of each epoch.
    n_components : int
        Components of the Gaussian mixture fitted to the joint vectors ``[z_a, z_b]``.
    min_weight : float
        Components with a smaller mixture weight are dropped: a transition that covers less
        than this share of the scene is *not* common (new construction is rare, crop
        rotation and unchanged land are not).
    trim : float
        Share of the sample, the least likely under the current mixture, left out of every
        M-step (trimmed likelihood; 0 = plain EM). Must exceed the share of the scene that is
        new construction, so rare change cannot get a component; the mixture weights are
        then shares of the untrimmed sample.

    Returns
    -------
    NoveltyModel

    Notes
    -----
    Two kinds of "common transition" are modelled:

    1. A Gaussian mixture on the joint before/after z-vectors (EM, full covariances, k-means++
       start with a fixed seed — deterministic for a given sample): unchanged land covers,
       and the seasonal crop transitions (green → ploughed, stubble → green, …) that cover
       large areas.
    2. The no-change relation ``z_b ≈ g * z_a + o`` per band with a full residual covariance,
       fitted by iteratively reweighted regression on the pixels the relation explains
       (started from the half of the sample with the smallest change vectors) — relative
       radiometric normalisation in the spirit of IR-MAD's no-change selection (Canty &
       Nielsen 2008). It covers every *unchanged* surface however rare (a factory's steel
       roofs), which the mixture cannot.

    The score (:func:`change_score` method ``novelty``) is the Mahalanobis distance to the
    nearest common transition, so large changes that are common (crops) score low, and rare
    transitions (a field turning into a roof, whatever its colour) score high — change-vector
    novelty rather than change magnitude.
    """
    za = _z(values_a, norm.mean_a, norm.std_a).T  # (n, nb) float64
    zb = _z(values_b, norm.mean_b, norm.std_b).T
    n, nb = za.shape
    if n < MIN_SAMPLE_PIXELS * n_components:
        raise InputDataError(
            f"only {n} sampled pixels are valid in both epochs; the novelty model needs at "
            f"least {MIN_SAMPLE_PIXELS * n_components} (check overlap, nodata, masks, or "
            "lower 'detect.sample_step' / 'detect.novelty_components')"
        )
    step = max(1, math.ceil(n / NOVELTY_FIT_MAX))
    x = np.concatenate([za, zb], axis=1)[::step]
    w, mu, cov = _fit_gmm(x, n_components, trim)
    keep = np.flatnonzero(w >= min_weight)
    gain, off, cov_nc, share = _fit_no_change(
        za[::step], zb[::step], values_a[:, ::step], values_b[:, ::step]
    )
    d = 2 * nb
    forms = [
        _quadratic_form(np.linalg.inv(cov[k]), mu[k] @ np.linalg.inv(cov[k]), None, mu[k])
        for k in keep
    ]
    # no-change: r = A x - off with A = [-diag(g), I], residual precision C^-1: a quadratic
    # form of x with precision A' C^-1 A (rank nb) and linear term A' C^-1 off
    a_map = np.concatenate([-np.diag(gain), np.eye(nb)], axis=1)
    prec_nc = np.linalg.inv(cov_nc)
    forms.append(
        _quadratic_form(a_map.T @ prec_nc @ a_map, off @ prec_nc @ a_map, off @ prec_nc @ off)
    )
    log.info(
        "novelty model: %d of %d mixture components common (weights %s), no-change share %.2f",
        len(keep),
        n_components,
        ", ".join(f"{v:.3f}" for v in np.sort(w)[::-1]),
        share,
    )
    return NoveltyModel(
        quad=np.stack(forms).astype(np.float32),
        weights=(*(float(v) for v in w[keep]), float(share)),
        n_dims=d,
        nochange_gain=tuple(float(v) for v in gain),
        nochange_offset=tuple(float(v) for v in off),
    )


def _quadratic_form(prec: np.ndarray, lin: np.ndarray, const, mu=None) -> np.ndarray:
    """Coefficients (F,) of ``x' P x - 2 lin' x + const`` on :func:`_quadratic_features`
    (``const`` = ``mu' P mu`` when ``mu`` is given)."""
    d = prec.shape[0]
    iu, ju = np.triu_indices(d)
    pair = np.where(iu == ju, 1.0, 2.0) * prec[iu, ju]
    c = float(mu @ prec @ mu) if mu is not None else float(const)
    return np.concatenate([pair, -2.0 * lin, [c]])


def _quadratic_features(x: np.ndarray) -> np.ndarray:
    """(F, n) features of column vectors ``x`` (D, n): ``x_i x_j`` (i ≤ j), ``x_i``, 1."""
    d, n = x.shape
    iu, ju = np.triu_indices(d)
    out = np.empty((iu.size + d + 1, n), dtype=x.dtype)
    for f, (i, j) in enumerate(zip(iu, ju)):
        np.multiply(x[i], x[j], out=out[f])
    out[iu.size : iu.size + d] = x
    out[-1] = 1.0
    return out


def _z(values: np.ndarray, mean, std) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return (v - np.asarray(mean)[:, None]) / np.asarray(std)[:, None]


def _fit_gmm(x: np.ndarray, k: int, trim: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian mixture by EM (float64, full covariances, k-means++ start, fixed seed)."""
    n, d = x.shape
    rng = np.random.default_rng(NOVELTY_SEED)
    centres = [int(rng.integers(n))]
    d2 = ((x - x[centres[0]]) ** 2).sum(axis=1)
    for _ in range(k - 1):
        total = d2.sum()
        j = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        centres.append(j)
        d2 = np.minimum(d2, ((x - x[j]) ** 2).sum(axis=1))
    mu = x[centres].copy()
    ridge = NOVELTY_RIDGE * np.eye(d)
    cov = np.repeat((0.1 * np.cov(x.T) + ridge)[None], k, axis=0)
    w = np.full(k, 1.0 / k)
    for _ in range(NOVELTY_EM_ITERATIONS):
        logp = np.empty((n, k))
        for j in range(k):
            chol = np.linalg.cholesky(cov[j])
            y = np.linalg.solve(chol, (x - mu[j]).T)
            logp[:, j] = np.log(w[j]) - 0.5 * (y * y).sum(axis=0) - np.log(np.diag(chol)).sum()
        top = logp.max(axis=1, keepdims=True)
        logp -= top
        r = np.exp(logp)
        total = r.sum(axis=1, keepdims=True)
        r /= total
        if trim > 0:
            # trimmed likelihood: the least likely share of the sample never shapes the model,
            # so rare change cannot grow a broad "catch-all" component of its own
            loglik = top[:, 0] + np.log(total[:, 0])
            r[loglik < np.quantile(loglik, trim)] = 0.0
        nk = r.sum(axis=0) + 1e-12
        w = nk / nk.sum()
        mu = (r.T @ x) / nk[:, None]
        for j in range(k):
            xc = x - mu[j]
            cov[j] = (r[:, j, None] * xc).T @ xc / nk[j] + ridge
    return w, mu, cov


def _fit_no_change(za: np.ndarray, zb: np.ndarray, raw_a, raw_b, iterations: int = 10):
    """Per-band ``z_b = g z_a + o`` and residual covariance on the no-change pixels.

    Orthogonal (total least squares) regression, as in IR-MAD relative radiometric
    normalisation (Canty & Nielsen 2008): ordinary least squares would flatten the slope
    towards 0 when the no-change pixels are mostly one noisy cover (regression dilution).
    Started from the half of the sample whose per-band log ratio ``log(b / a)`` is closest
    to its scene median (unchanged pixels share one gain, whatever their brightness).
    """
    nb = za.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.log(np.maximum(raw_b, 1.0) / np.maximum(raw_a, 1.0))
    dev = np.abs(lr - np.median(lr, axis=1, keepdims=True)).sum(axis=0)
    inl = dev <= np.median(dev)
    cut = stats.chi2.ppf(NOVELTY_NOCHANGE_QUANTILE, nb)
    ridge = NOVELTY_RIDGE * np.eye(nb)
    for _ in range(iterations):
        a, b = za[inl], zb[inl]
        ma, mb = a.mean(axis=0), b.mean(axis=0)
        saa, sbb = ((a - ma) ** 2).mean(axis=0), ((b - mb) ** 2).mean(axis=0)
        sab = ((a - ma) * (b - mb)).mean(axis=0)
        disc = np.sqrt((sbb - saa) ** 2 + 4 * sab * sab)
        safe = np.where(np.abs(sab) > 1e-12, sab, 1.0)
        gain = np.where(np.abs(sab) > 1e-12, (sbb - saa + disc) / (2 * safe), 1.0)
        off = mb - gain * ma
        res = zb - gain * za - off
        cov = np.cov(res[inl].T).reshape(nb, nb) + ridge
        y = np.linalg.solve(np.linalg.cholesky(cov), res.T)
        new = (y * y).sum(axis=0) <= cut
        if new.sum() < MIN_SAMPLE_PIXELS or np.array_equal(new, inl):
            break
        inl = new
    return gain, off, cov, float(inl.mean())


# --------------------------------------------------------------------------- spatial context
SMOOTH_TRUNCATE = 4.0
"""The Gaussian of :func:`smooth_score` is cut at this many sigmas (its halo)."""


def smoothing_halo(sigma_px: float) -> int:
    """Halo (px) so that :func:`smooth_score` on block+halo equals the whole-image result."""
    return math.ceil(SMOOTH_TRUNCATE * sigma_px) if sigma_px > 0 else 0


def smooth_score(score: np.ndarray, valid: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian-smoothed score over the valid pixels (normalised convolution), 0 where invalid.

    Parameters
    ----------
    score : ndarray float32 (h, w)
        A per-pixel change score.
    valid : ndarray bool (h, w)
        Pixels valid in both epochs.
    sigma_px : float
        Standard deviation of the Gaussian in pixels (0 = no smoothing).

    Notes
    -----
    Spatial context: a 10 m pixel's change vector is noisy (misregistration, mixed pixels),
    while a new building or site covers several pixels; averaging over the neighbourhood
    suppresses isolated speckle far more than the extended change. Invalid pixels neither
    contribute nor receive a score (``sum(g * s * valid) / sum(g * valid)``), so a cloud edge
    does not dilute its neighbours. Each output pixel only reads ``smoothing_halo(sigma)``
    pixels around it, in the same order wherever it lies, so block + halo gives the
    whole-image result bit for bit.
    """
    if sigma_px <= 0:
        return score
    v = valid.astype(np.float32)
    num = ndimage.gaussian_filter(
        np.where(valid, score, 0).astype(np.float32),
        sigma_px,
        mode="constant",
        truncate=SMOOTH_TRUNCATE,
    )
    den = ndimage.gaussian_filter(v, sigma_px, mode="constant", truncate=SMOOTH_TRUNCATE)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(valid & (den > 0), num / den, 0.0)
    return out.astype(np.float32)


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
    when one of their pixels is above ``cut`` (:class:`~pipeline.vectorize.PatchFilter`
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


def disk(radius: int) -> np.ndarray:
    """A boolean disk structuring element of ``radius`` pixels."""
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


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
    rows, cols = np.nonzero(cand)
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


def box3_sum(x: np.ndarray) -> np.ndarray:
    """Sum over each pixel's 3×3 neighbourhood (outside the array counts as 0), same dtype.

    Notes
    -----
    Separable (rows, then columns) with slice additions: two passes of two adds instead of
    a nine-tap convolution. Purely local, in the same order for every pixel, so a block
    with a 1 px halo gives the whole-image result bit for bit.
    """
    rows = x.copy()
    rows[1:] += x[:-1]
    rows[:-1] += x[1:]
    out = rows.copy()
    out[:, 1:] += rows[:, :-1]
    out[:, :-1] += rows[:, 1:]
    return out


def clean_mask(mask: np.ndarray, valid: np.ndarray, open_px: int, close_px: int) -> np.ndarray:
    """Opening (removes specks) then closing (fills pinholes), then ``& valid``.

    Notes
    -----
    Outside the array counts as "no change"; only pixels at least
    :func:`cleaning_halo` from the array edge are exact, which is why the engine works on
    block + halo and crops the halo afterwards.
    """
    out = mask
    if open_px > 0:
        out = dilate_disk(erode_disk(out, open_px), open_px)
    if close_px > 0:
        out = erode_disk(dilate_disk(out, close_px), close_px)
    return out & valid


def _shift_slices(h: int, w: int, dy: int, dx: int) -> tuple[tuple[slice, slice], ...]:
    """``(dst, src)``: ``array[dst]`` are the pixels ``p`` of an ``h × w`` array whose
    neighbour ``p + (dy, dx)`` is inside it, ``array[src]`` those neighbours."""
    dst = (slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx)))
    src = (slice(max(0, dy), h - max(0, -dy)), slice(max(0, dx), w - max(0, -dx)))
    return dst, src


def _shift_combine(out: np.ndarray, x: np.ndarray, dy: int, dx: int, op: str) -> None:
    """``out[p] = out[p] op x[p + (dy, dx)]`` in place, ``x`` being False outside the array."""
    h, w = x.shape
    if abs(dy) >= h or abs(dx) >= w:
        if op == "and":
            out[:] = False
        return
    dst, src = _shift_slices(h, w, dy, dx)
    if op == "or":
        out[dst] |= x[src]
        return
    out[dst] &= x[src]
    if dy > 0:
        out[h - dy :] = False
    elif dy < 0:
        out[:-dy] = False
    if dx > 0:
        out[:, w - dx :] = False
    elif dx < 0:
        out[:, :-dx] = False


def _disk_morphology(mask: np.ndarray, radius: int, op: str) -> np.ndarray:
    """Erosion (``op="and"``) or dilation (``"or"``) by :func:`disk` ``(radius)``.

    The disk is the union of its rows: row ``dy`` is a horizontal run of half-width
    ``isqrt(r² - dy²)``. The horizontal runs are built incrementally (one shift per extra
    pixel), then each is shifted by its ``dy`` and combined: ``4 r`` array passes instead of
    one per disk pixel.
    """
    x = np.ascontiguousarray(mask, dtype=bool)
    if radius <= 0:
        return x.copy()
    runs = [x]
    for k in range(1, radius + 1):
        run = runs[-1].copy()
        _shift_combine(run, x, 0, k, op)
        _shift_combine(run, x, 0, -k, op)
        runs.append(run)
    out = runs[radius].copy()
    for dy in range(1, radius + 1):
        run = runs[math.isqrt(radius * radius - dy * dy)]
        _shift_combine(out, run, dy, 0, op)
        _shift_combine(out, run, -dy, 0, op)
    return out


def erode_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by :func:`disk` ``(radius)``, outside the array counting as False.

    Same result as ``scipy.ndimage.binary_erosion(mask, structure=disk(radius))`` (its default
    ``border_value=0``), several times faster for the small radii of the clean-up: boolean
    slice operations only.
    """
    return _disk_morphology(mask, radius, "and")


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by :func:`disk` ``(radius)``; same result as
    ``scipy.ndimage.binary_dilation(mask, structure=disk(radius))``."""
    return _disk_morphology(mask, radius, "or")


# --------------------------------------------------------------------------- IR-MAD
IRMAD_ITERATIONS = 30
"""Maximum re-weighting iterations of :func:`fit_irmad` (it stops earlier once the canonical
correlations change by less than :data:`IRMAD_TOLERANCE`)."""
IRMAD_TOLERANCE = 1e-5
IRMAD_FIT_MAX = 200_000
"""Pixels of the pass-1 sample used to fit IR-MAD (regularly thinned beyond)."""
IRMAD_NOCHANGE_PROB = 0.95
"""``irmad_regression``: a sample pixel is no-change when its IR-MAD no-change probability
``1 - F_chi2(Z; bands)`` exceeds this (Canty & Nielsen 2008)."""
_IRMAD_MIN_VAR = 1e-6
"""Floor of a MAD variate's variance ``2 (1 - rho)`` (a band identical in both epochs)."""


@dataclass(frozen=True)
class IrmadModel:
    """The IR-MAD transform fitted in pass 1 by :func:`fit_irmad`.

    MAD variate ``i`` of a pixel with raw band vectors ``x`` (before) and ``y`` (after) is
    ``(x - mean_a) @ coef_a[:, i] - (y - mean_b) @ coef_b[:, i]``; its no-change variance is
    ``sigma2[i] = 2 (1 - rho[i])``. ``rho`` are the canonical correlations, ascending (the
    first MAD variate has the largest variance). ``sigma2`` is the robust no-change variance
    of each variate (see :func:`_robust_mad_variance`).
    """

    mean_a: tuple[float, ...]
    mean_b: tuple[float, ...]
    coef_a: np.ndarray  # (nbands, nbands) float64
    coef_b: np.ndarray
    rho: tuple[float, ...]
    sigma2: tuple[float, ...]
    iterations: int


def fit_irmad(
    values_a: np.ndarray,
    values_b: np.ndarray,
    *,
    iterations: int = IRMAD_ITERATIONS,
) -> IrmadModel:
    """Iteratively re-weighted MAD (Nielsen 2007) on the pass-1 sample.

    Parameters
    ----------
    values_a, values_b : ndarray (nbands, n)
        The canonical pass-1 sample of both epochs (raw values, valid pixels only).
    iterations : int
        Maximum number of re-weightings.

    Returns
    -------
    IrmadModel

    Raises
    ------
    InputDataError
        Too few sampled pixels, or bands that are constant/collinear on the sample.

    Notes
    -----
    Each iteration computes the weighted covariances of both epochs, solves the generalized
    symmetric eigenproblem ``S_ab S_bb^-1 S_ba a = rho² S_aa a`` (:func:`scipy.linalg.eigh`),
    forms ``b = S_bb^-1 S_ba a / rho`` with unit variances, and re-weights every pixel by its
    no-change probability ``1 - F_chi2(Z; bands)``, ``Z = sum_i MAD_i² / (2 (1 - rho_i))``.
    Changed pixels thus lose their weight and the canonical correlation converges to the
    relation of the unchanged ones. The MAD transform is linear in the raw values, hence
    invariant to any per-band gain/offset of either epoch (no normalisation needed) and
    block-size independent when applied pixel by pixel.
    """
    from scipy import linalg

    xa = np.asarray(values_a, dtype=np.float64).T
    xb = np.asarray(values_b, dtype=np.float64).T
    n, nb = xa.shape
    if n < MIN_SAMPLE_PIXELS * nb:
        raise InputDataError(
            f"only {n} sampled pixels are valid in both epochs; IR-MAD needs at least "
            f"{MIN_SAMPLE_PIXELS * nb} (check overlap, nodata, masks, or lower "
            "'detect.sample_step')"
        )
    step = max(1, math.ceil(n / IRMAD_FIT_MAX))
    xa, xb = xa[::step], xb[::step]
    weights = np.ones(xa.shape[0])
    rho_old = np.zeros(nb)
    done = 0
    while done < iterations:
        done += 1
        mean_a, mean_b, coef_a, coef_b, rho = _cca(xa, xb, weights, linalg)
        mad = (xa - mean_a) @ coef_a - (xb - mean_b) @ coef_b
        sigma2 = _robust_mad_variance(mad)
        z = (mad * mad / sigma2).sum(axis=1)
        weights = stats.chi2.sf(z, nb)
        if np.max(np.abs(rho - rho_old)) < IRMAD_TOLERANCE:
            break
        rho_old = rho
    log.info(
        "IR-MAD: %d iterations, canonical correlations %s",
        done,
        ", ".join(f"{v:.4f}" for v in rho),
    )
    return IrmadModel(
        mean_a=tuple(float(v) for v in mean_a),
        mean_b=tuple(float(v) for v in mean_b),
        coef_a=coef_a,
        coef_b=coef_b,
        rho=tuple(float(v) for v in rho),
        sigma2=tuple(float(v) for v in sigma2),
        iterations=done,
    )


def _robust_mad_variance(mad: np.ndarray) -> np.ndarray:
    """No-change variance of each MAD variate from the median of its square over the whole
    sample (``median(MAD²) / median(chi2(1))``), floored at :data:`_IRMAD_MIN_VAR`.

    The textbook ``2 (1 - rho)`` is the variance of the *weighted* pixels only; on real 10 m
    scenes (heavy-tailed residuals: misregistration, mixed pixels) it is smaller than the
    bulk of the unchanged pixels', which then get weight ≈ 0, so the next fit is on fewer
    pixels with a still higher correlation, and IR-MAD contracts onto a handful of pixels
    (rho → 1 on OSCD norcia and bordeaux). Change covers far less than half of a scene, so
    the median is an unchanged pixel's and the weights stay calibrated.
    """
    var = np.median(mad * mad, axis=0) / stats.chi2.median(1)
    return np.maximum(var, _IRMAD_MIN_VAR)


def _cca(xa: np.ndarray, xb: np.ndarray, w: np.ndarray, linalg):
    """Weighted canonical correlation analysis: means, coefficients (unit variance, positive
    correlation, ascending rho) and canonical correlations."""
    nb = xa.shape[1]
    sw = w.sum()
    if sw <= 0:
        raise InputDataError(
            "IR-MAD gave every sampled pixel a no-change probability of 0; the epochs share "
            "no linear relation (check that both epochs cover the same place and bands)"
        )
    mean_a = w @ xa / sw
    mean_b = w @ xb / sw
    ca, cb = xa - mean_a, xb - mean_b
    joint = np.concatenate([ca, cb], axis=1)
    cov = (joint * w[:, None]).T @ joint / sw
    s_aa, s_ab, s_bb = cov[:nb, :nb], cov[:nb, nb:], cov[nb:, nb:]
    try:
        s_bb_inv_s_ba = linalg.solve(s_bb, s_ab.T, assume_a="pos")
        lam, coef_a = linalg.eigh(s_ab @ s_bb_inv_s_ba, s_aa)
    except (linalg.LinAlgError, ValueError) as exc:
        raise InputDataError(
            f"IR-MAD: the band covariance of the sample is singular ({exc}); a band is "
            "constant or a copy of another — drop it from 'imagery.bands'/'band_files'"
        ) from exc
    rho = np.sqrt(np.clip(lam, 0.0, 1.0))
    # eigh normalises coef_a' S_aa coef_a = I; b = S_bb^-1 S_ba a, scaled to unit variance
    coef_b = s_bb_inv_s_ba @ coef_a
    var_b = np.einsum("ij,ik,kj->j", coef_b, s_bb, coef_b)
    coef_b = coef_b / np.sqrt(np.where(var_b > 0, var_b, 1.0))
    # the sign of each pair is arbitrary: make the canonical variates positively correlated
    sign = np.sign(np.einsum("ij,ik,kj->j", coef_a, s_ab, coef_b))
    coef_b = coef_b * np.where(sign == 0, 1.0, sign)
    return mean_a, mean_b, coef_a, coef_b, rho


def _irmad_chi2(a: np.ndarray, b: np.ndarray, model: IrmadModel) -> np.ndarray:
    """``Z = sum_i MAD_i² / sigma2_i`` per pixel, float32, band by band (elementwise)."""
    nb = a.shape[0]
    ca = [a[j] - np.float32(model.mean_a[j]) for j in range(nb)]
    cb = [b[j] - np.float32(model.mean_b[j]) for j in range(nb)]
    z = np.zeros(a.shape[1:], dtype=np.float32)
    for i in range(nb):
        mad = np.zeros(a.shape[1:], dtype=np.float32)
        for j in range(nb):
            mad += np.float32(model.coef_a[j, i]) * ca[j]
            mad -= np.float32(model.coef_b[j, i]) * cb[j]
        z += mad * mad / np.float32(model.sigma2[i])
    return z


def irmad_nochange(values_a: np.ndarray, values_b: np.ndarray, model: IrmadModel) -> np.ndarray:
    """Boolean (n,): sample pixels whose no-change probability exceeds
    :data:`IRMAD_NOCHANGE_PROB`."""
    z = _irmad_chi2(
        np.asarray(values_a, np.float32)[:, :, None],
        np.asarray(values_b, np.float32)[:, :, None],
        model,
    ).ravel()
    return stats.chi2.sf(z.astype(np.float64), values_a.shape[0]) > IRMAD_NOCHANGE_PROB


def irmad_regression(
    values_a: np.ndarray, values_b: np.ndarray, model: IrmadModel, base: Normalisation
) -> Normalisation:
    """Relative radiometric normalisation of epoch 2 onto epoch 1 over IR-MAD no-change pixels.

    Per band, the orthogonal (total least squares) regression ``y = g x + o`` of the later
    epoch on the earlier one over the sample pixels with no-change probability above
    :data:`IRMAD_NOCHANGE_PROB` (Canty, Nielsen & Schmidt 2004; Canty & Nielsen 2008).

    Parameters
    ----------
    values_a, values_b : ndarray (nbands, n)
        The pass-1 sample (raw values).
    model : IrmadModel
        From :func:`fit_irmad` on the same sample.
    base : Normalisation
        The ``zscore`` normalisation; epoch 1 keeps its statistics.

    Returns
    -------
    Normalisation
        Epoch 2 is z-scored with ``mean_b = o + g * mean_a`` and ``std_b = g * std_a``, i.e.
        ``z_b = ((y - o) / g - mean_a) / std_a``: both epochs in epoch 1's scale, so every
        score method sees the regressed bands.

    Notes
    -----
    Orthogonal regression rather than least squares: the no-change pixels are noisy in both
    epochs, and ordinary least squares would bias the gain towards 0. A band whose fitted gain
    is not positive (no usable relation) keeps its ``zscore`` statistics.
    """
    inl = irmad_nochange(values_a, values_b, model)
    nb = values_a.shape[0]
    if inl.sum() < MIN_SAMPLE_PIXELS:
        raise InputDataError(
            f"only {int(inl.sum())} sampled pixels are IR-MAD no-change (probability > "
            f"{IRMAD_NOCHANGE_PROB}); expected at least {MIN_SAMPLE_PIXELS}. The epochs "
            "barely overlap or changed throughout; use 'detect.normalise: zscore'"
        )
    x = np.asarray(values_a, np.float64)[:, inl]
    y = np.asarray(values_b, np.float64)[:, inl]
    mean_b, std_b = list(base.mean_b), list(base.std_b)
    gains = []
    for i in range(nb):
        mx, my = x[i].mean(), y[i].mean()
        sxx, syy = x[i].var(), y[i].var()
        sxy = ((x[i] - mx) * (y[i] - my)).mean()
        if sxy <= 0:
            gains.append(float("nan"))
            continue
        g = (syy - sxx + math.sqrt((syy - sxx) ** 2 + 4 * sxy * sxy)) / (2 * sxy)
        o = my - g * mx
        mean_b[i] = o + g * base.mean_a[i]
        std_b[i] = g * base.std_a[i]
        gains.append(g)
    log.info(
        "IR-MAD regression on %d no-change pixels (%.0f %%): gains %s",
        int(inl.sum()),
        100 * inl.mean(),
        ", ".join(f"{g:.3f}" for g in gains),
    )
    return Normalisation(base.mean_a, base.std_a, tuple(mean_b), tuple(std_b))


# --------------------------------------------------------------------------- self-training
SELFTRAIN_L2 = 1e-2
"""``selftrain``: ridge penalty of the logistic regression (standardised features)."""
SELFTRAIN_NEWTON_STEPS = 25
"""``selftrain``: Newton (IRLS) iterations of the logistic regression."""
SELFTRAIN_FIT_MAX = 200_000
"""Pixels of the pass-1 sample used to fit the self-trained classifier (thinned beyond)."""
_LOG_FLOOR = np.float32(1.0)
"""Reflectance floor (digital numbers) before the logarithm of a band."""
NUISANCE_NDVI = 0.5
"""``selftrain``: a sample pixel with NDVI above this in both epochs is vegetation in both
(crops, forest, lawns changing with the season) — never a *change* example."""
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


def _nd(x: np.ndarray, i: int, j: int) -> np.ndarray:
    """Normalised difference ``(x_i - x_j) / max(x_i + x_j, 1)`` of bands ``i`` and ``j``
    (NDVI, NDBI, MNDWI on raw values; the floor keeps dark or zero pixels finite)."""
    return (x[i] - x[j]) / np.maximum(x[i] + x[j], _LOG_FLOOR)


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
    la = np.log(np.maximum(a, _LOG_FLOOR)).astype(np.float32)
    lb = np.log(np.maximum(b, _LOG_FLOOR)).astype(np.float32)
    h, w = valid.shape
    best = np.full((h, w), np.inf, dtype=np.float32)
    d2 = np.empty((h, w), dtype=np.float32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out, src = _shift_slices(h, w, dy, dx)
            d2[:] = np.inf
            acc = np.zeros((out[0].stop - out[0].start, out[1].stop - out[1].start), np.float32)
            for k in range(a.shape[0]):
                diff = lb[k][out] - la[k][src]
                acc += diff * diff
            d2[out] = np.where(valid[src], acc, np.float32(np.inf))
            np.minimum(best, d2, out=best)
    best[~np.isfinite(best)] = 0.0
    return np.log1p(np.float32(SHIFT_SCALE) * best).astype(np.float32)


def vegetation_change(
    a: np.ndarray, b: np.ndarray, valid: np.ndarray, band_names: Sequence[str], sigma_px: float
) -> np.ndarray:
    """``|NDVI_b - NDVI_a|`` smoothed like the score (:func:`smooth_score`), float32; zeros
    when ``red`` or ``nir`` is not configured."""
    names = list(band_names)
    if "red" not in names or "nir" not in names:
        return np.zeros(valid.shape, dtype=np.float32)
    r, n = names.index("red"), names.index("nir")

    change = np.abs(_nd(b, n, r) - _nd(a, n, r)).astype(np.float32)
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
    (NDVI > :data:`NUISANCE_NDVI`) or water in both (MNDWI > :data:`NUISANCE_MNDWI`).

    Parameters
    ----------
    a, b : ndarray (nbands, ...)
        Raw values of both epochs, bands in ``band_names`` order.
    band_names : sequence of str
        The vegetation test needs ``red`` and ``nir``, the water test ``green`` and
        ``swir1``; a test whose bands are not configured is skipped.

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
        return (_nd(a, i, j) > cut) & (_nd(b, i, j) > cut)

    if "red" in names and "nir" in names:
        out |= both_above(names.index("nir"), names.index("red"), NUISANCE_NDVI)
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


def self_train_features(
    a: np.ndarray, b: np.ndarray, z: np.ndarray, shift: np.ndarray | None = None
) -> list[np.ndarray]:
    """Per-pixel features (float32 arrays of ``z``'s shape) of the ``selftrain`` classifier.

    Both epochs' log bands, their differences, NDVI and NDBI of both epochs and their change
    (bands in the order blue, green, red, nir, swir1, … — NDVI from bands 2/3, NDBI from 4/3
    when present), ``log(1 + Z)`` of the IR-MAD statistic ``z`` and, when given, the
    shift-tolerant difference ``shift`` (:func:`shift_tolerant_difference`).

    Notes
    -----
    Elementwise given ``shift`` (computed with its 1 px neighbourhood on the block, or in
    pass 1 on the sampled cell with a halo), so a pixel's features do not depend on the block
    it is computed in, and the pass-1 sample gives the same features.
    """
    nb = a.shape[0]
    la = [np.log(np.maximum(a[i], _LOG_FLOOR)) for i in range(nb)]
    lb = [np.log(np.maximum(b[i], _LOG_FLOOR)) for i in range(nb)]
    feats = [*la, *lb, *(y - x for x, y in zip(la, lb))]

    for i, j in ((3, 2), (4, 3)):
        if max(i, j) < nb:
            na, nbb = _nd(a, i, j), _nd(b, i, j)
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
        The sample's bands (for :func:`nuisance_pixels`; none → no nuisance pixels).
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
    Newton steps with a small ridge (:data:`SELFTRAIN_L2`), float64, deterministic.
    """
    if (shift_feature or vegetation_weight) and context is None:
        raise ValueError("fit_self_train: the shift feature and vegetation weight need context")
    a = np.asarray(values_a, np.float32)
    b = np.asarray(values_b, np.float32)
    step = max(1, math.ceil(a.shape[1] / SELFTRAIN_FIT_MAX))
    a, b = a[:, ::step], b[:, ::step]
    ctx = None if context is None else np.asarray(context, np.float32)[:, ::step]
    shift = ctx[0] if shift_feature else None
    z = _irmad_chi2(a[:, :, None], b[:, :, None], irmad)[:, 0]
    nuisance = nuisance_pixels(a, b, band_names)
    pos, neg, hi, lo = self_train_examples(z, nuisance, change_quantile, nochange_quantile)
    if min(pos.sum(), neg.sum()) < MIN_SAMPLE_PIXELS:
        raise InputDataError(
            f"self-training found {int(pos.sum())} change and {int(neg.sum())} no-change "
            f"examples in the pass-1 sample; expected at least {MIN_SAMPLE_PIXELS} each "
            "(lower 'detect.sample_step' or widen the 'detect.selftrain_*_quantile' gap)"
        )
    feats = np.stack(self_train_features(a, b, z, shift)).astype(np.float64)  # (F, n)
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
        irmad, tuple(float(v) for v in coef), intercept, hi, lo, shift_feature, ref
    )


def _logistic_regression(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Class-balanced ridge logistic regression by Newton steps; weights then intercept."""
    n, p = x.shape
    x1 = np.hstack([x, np.ones((n, 1))])
    share = y.mean()
    sw = np.where(y == 1, 0.5 / share, 0.5 / (1 - share))
    ridge = SELFTRAIN_L2 * np.eye(p + 1)
    ridge[-1, -1] = 0.0
    w = np.zeros(p + 1)
    for _ in range(SELFTRAIN_NEWTON_STEPS):
        pr = 1.0 / (1.0 + np.exp(-np.clip(x1 @ w, -50, 50)))
        grad = x1.T @ (sw * (pr - y)) / n + ridge @ w
        hess = (x1 * (sw * pr * (1 - pr))[:, None]).T @ x1 / n + ridge + 1e-9 * np.eye(p + 1)
        delta = np.linalg.solve(hess, grad)
        w -= delta
        if np.max(np.abs(delta)) < 1e-8:
            break
    return w


def _self_train(
    a: np.ndarray, b: np.ndarray, model: SelfTrainModel, shift: np.ndarray | None = None
) -> np.ndarray:
    """``P(change)`` per pixel, float32, feature by feature (elementwise given ``shift``)."""
    z = _irmad_chi2(a, b, model.irmad)
    logit = np.full(z.shape, np.float32(model.intercept), dtype=np.float32)
    for c, f in zip(model.coef, self_train_features(a, b, z, shift)):
        logit += np.float32(c) * f
    return (1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))).astype(np.float32)
