"""The ``novelty`` method: change-vector novelty against a trimmed Gaussian mixture of the
scene's common transitions (trimmed likelihood: Neykov et al. 2007) and the no-change relation.
The score is described in :func:`pipeline.detection.scores.change_score`.

Its one configuration (``config.yaml``, never tuned per scene):

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
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from pipeline.bands import INDEX_BANDS, NDVI_NONVEG_MAX, VISIBLE_BANDS, check_bands
from pipeline.detection.sampling import MIN_SAMPLE_PIXELS, Normalisation
from pipeline.errors import InputDataError

log = logging.getLogger(__name__)

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


def novelty_score(a, b, norm: Normalisation, model: NoveltyModel, band_names) -> np.ndarray:
    names = list(band_names)
    check_bands(names, INDEX_BANDS, "'detect.method' = 'novelty'")
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
