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
from skimage.filters import apply_hysteresis_threshold, threshold_multiotsu, threshold_otsu

from pipeline.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

INDEX_BANDS = ("red", "nir")
"""Bands the ``index`` method needs (NDVI); brightness uses every visible band present."""
VISIBLE_BANDS = ("blue", "green", "red")
NDVI_NONVEG_MAX = 0.3
"""``index``: NDVI at or above which the later surface counts as vegetated (weight 0); roofs,
concrete and fresh fill are near 0, ploughed soil ≈ 0.1, stubble ≈ 0.2, crops > 0.5."""
CHI2_DEFAULT_QUANTILE = 0.99
HYSTERESIS_HALO_PX = 32
"""Extra halo for hysteresis: a weak pixel joins a strong one only if a path of weak pixels
reaches it within the block plus this halo (hysteresis is not exactly block-independent for
weak chains longer than this)."""
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


def sample_block(
    data_a: np.ndarray,
    data_b: np.ndarray,
    valid: np.ndarray,
    row_off: int,
    col_off: int,
    step: int,
    thin: int,
    grid_width: int,
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
        moments_a, moments_b, keys, data_a[:, rs, cs][:, v].copy(), data_b[:, rs, cs][:, v].copy()
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


def normalisation(moments_a: Moments, moments_b: Moments, how: str, nbands: int) -> Normalisation:
    """The normalisation to apply (``zscore`` from the global moments, or ``none``).

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
    if how != "zscore":
        raise ConfigError(
            f"'detect.normalise' = {how!r} is not implemented yet; use 'zscore' or 'none'"
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
    return Normalisation(
        tuple(mean_a.tolist()), tuple(std_a.tolist()), tuple(mean_b.tolist()), tuple(std_b.tolist())
    )


# --------------------------------------------------------------------------- scores
def change_score(
    data_a: np.ndarray,
    data_b: np.ndarray,
    valid: np.ndarray,
    norm: Normalisation,
    method: str,
    band_names: Sequence[str],
    model: NoveltyModel | None = None,
) -> np.ndarray:
    """Per-pixel change score (float32, 0 where invalid).

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
        if model is None:
            raise ConfigError("'detect.method' = 'novelty' needs the pass-1 novelty model")
        score = _novelty(data_a, data_b, norm, model, band_names)
    else:
        raise ConfigError(
            f"'detect.method' = {method!r} is not implemented yet; use 'cva', 'index' or 'novelty'"
        )
    score[~valid] = 0.0
    return score


def _cva(a: np.ndarray, b: np.ndarray, norm: Normalisation) -> np.ndarray:
    acc = np.zeros(a.shape[1:], dtype=np.float32)
    for i in range(a.shape[0]):
        za = (a[i] - np.float32(norm.mean_a[i])) / np.float32(norm.std_a[i])
        zb = (b[i] - np.float32(norm.mean_b[i])) / np.float32(norm.std_b[i])
        d = zb - za
        acc += d * d
    return np.sqrt(acc)


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


# --------------------------------------------------------------------------- thresholds
def threshold(scores: np.ndarray, how: str, value: float | None = None, nbands: int = 1) -> float:
    """The score cut from the pass-1 sample of scores.

    ``otsu``: :func:`skimage.filters.threshold_otsu` on the sample. ``multiotsu``: the upper
    cut of a three-class Otsu (:func:`skimage.filters.threshold_multiotsu`): no change /
    common change (seasonal crops) / strong change — for scenes where seasonal change is the
    larger mode and plain Otsu splits it off instead of the rare construction.
    ``fixed``: ``value``.
    ``chi2``: assumes unchanged pixels give ``score**2 / sigma**2 ~ chi2(nbands)``; sigma² is
    estimated robustly from the median of ``score**2`` and the cut is the ``value`` quantile
    (default 0.99).
    """
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
    """``score > cut`` (or hysteresis between ``hysteresis_low * cut`` and ``cut``) & valid."""
    if hysteresis_low is None:
        mask = score > np.float32(cut)
    else:
        mask = apply_hysteresis_threshold(score, hysteresis_low * cut, cut)
    return mask & valid


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
    m = mask.astype(np.float32)
    kernel = np.ones((3, 3), dtype=np.float32)
    n = ndimage.convolve(m, kernel, mode="constant")
    total = ndimage.convolve(np.where(mask, score, 0).astype(np.float32), kernel, mode="constant")
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = np.where(n > 0, total / n, np.inf)
    return (mask | ((n > 0) & (score >= np.float32(ratio) * ref))) & valid


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
        out = ndimage.binary_opening(out, structure=disk(open_px))
    if close_px > 0:
        out = ndimage.binary_closing(out, structure=disk(close_px))
    return out & valid
