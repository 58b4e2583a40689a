"""The ``novelty`` method: change-vector novelty against a trimmed Gaussian mixture of the
scene's common transitions (trimmed likelihood: Neykov et al. 2007) and the no-change relation.
The score is described in :func:`pipeline.detection.scores.change_score`.

Its one configuration (``config.yaml``, never tuned per scene):

- *Trimmed mixture* (``novelty_trim: 0.02``). The common transitions are a Gaussian mixture
  fitted with a trimmed likelihood (scikit-learn's EM in short warm-started rounds; between
  rounds the least likely 2 % of the pass-1 sample is left out). New construction covers
  0.1–0.3 % of a scene (more on a small or construction-dense one), so it always falls in the trimmed tail and can never grow a broad,
  low-weight "catch-all" component that scores it as common — the failure of the plain EM on
  small scenes, where such a component held 1–2 % of the sample and every new roof. Seasonal
  crop transitions cover far more than 2 % and are fitted as before.
- *Cut in standard deviations* (``threshold: fixed``; the ``rgbn`` profile of
  :mod:`pipeline.detection.defaults` cuts at 4.5 with hysteresis at 0.85): the distance to
  the nearest common transition in its own standard deviations; unchanged and seasonal
  pixels sit below ≈ 4, new roofs in clear imagery at 7–25 (red tile roofs, closest to
  ploughed soil, at 6–9); concrete, asphalt and red colour-steel roofs seen through haze
  score 2.5–6.
- *Gates before the distance*: a pixel vegetated afterwards (vegetation index ≥
  :data:`NOVELTY_NDVI_ZERO`: NDVI, or without nir 3 × VDVI of the visible bands,
  :func:`pipeline.bands.vegetation_index`) or darker than the no-change relation predicts
  (and still as vegetated as before: :data:`NOVELTY_VEGETATION_LOSS`) scores 0, so the distance is evaluated only on the remaining *candidate* pixels (typically
  a third of a block), as one float32 matrix product of quadratic features — ≈ 6× faster
  than whitening every pixel for every component.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from pipeline.bands import (
    NDVI_NONVEG_MAX,
    VISIBLE_BANDS,
    check_bands,
    has_nir,
    vegetation_index,
)
from pipeline.detection.sampling import MIN_SAMPLE_PIXELS, Normalisation
from pipeline.errors import InputDataError

log = logging.getLogger(__name__)

NOVELTY_FIT_MAX = 20_000
"""Pixels of the pass-1 sample used to fit the novelty model (regularly thinned beyond): ≥ 1,600
per component of 12. The fit (scikit-learn's EM) costs in proportion: 60,000 took 15 s of the
10240² benchmark's pass 1, 20,000 take a third of it, with the same patches on the hard
synthetic scenes (seeds 1, 2, 4, 8) and the default samples."""
NOVELTY_EM_ITERATIONS = 40
"""EM iterations of the novelty mixture, over all its trimming rounds."""
NOVELTY_TRIM_ROUNDS = 8
"""Trimming rounds of the novelty mixture (:func:`_fit_gmm`)."""
NOVELTY_RIDGE = 1e-3
"""Added to every covariance diagonal (z units²): keeps near-constant clusters invertible."""
NOVELTY_SEED = 0
NOVELTY_NOCHANGE_QUANTILE = 0.99
"""A sample pixel is an inlier of the no-change relation below this chi² quantile."""
NOVELTY_NDVI_ZERO = 0.5
"""``novelty``: the non-vegetation weight falls linearly from 1 at NDVI_NONVEG_MAX to 0 here
(vegetation index: NDVI, or 3 × VDVI without nir; mixed roof/crop pixels on an outline keep
part of their score)."""


NOVELTY_VEGETATION_LOSS = 0.3
"""``novelty``: a pixel whose vegetation index fell by this much is a candidate even when it
got no brighter: black asphalt roofs and yards on crops or grass darken the visible bands
and lose their vegetation. (Fields flooded or harvested lose theirs too: they are common
transitions of the scene and score low, and the change type tells water from a roof.)"""


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
        round of EM after the first (trimmed likelihood, :func:`_fit_gmm`; 0 = plain EM).
        Must exceed the share of the scene that is new construction, so rare change cannot
        get a component; the mixture weights are then shares of the untrimmed sample.

    Returns
    -------
    NoveltyModel

    Notes
    -----
    Two kinds of "common transition" are modelled:

    1. A Gaussian mixture on the joint before/after z-vectors (scikit-learn's EM, full
       covariances, k-means++ start with a fixed seed — deterministic for a given sample;
       only the fitted parameters are kept, as quadratic forms): unchanged land covers,
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


def _quadratic_features(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(F, n) features of column vectors ``x`` (D, n): ``x_i x_j`` (i ≤ j, the upper
    triangle row by row), ``x_i``, 1; written into ``out`` when given (F = D(D+1)/2 + D + 1)."""
    d, n = x.shape
    if out is None:
        out = np.empty((d * (d + 1) // 2 + d + 1, n), dtype=x.dtype)
    k = 0
    for i in range(d):  # rows x_i * x_j, j = i..d-1
        np.multiply(x[i:], x[i], out=out[k : k + d - i])
        k += d - i
    out[k : k + d] = x
    out[-1] = 1.0
    return out


def _z(values: np.ndarray, mean, std) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return (v - np.asarray(mean)[:, None]) / np.asarray(std)[:, None]


def _fit_gmm(x: np.ndarray, k: int, trim: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian mixture (full covariances, float64, fixed seed) with trimmed likelihood.

    :class:`sklearn.mixture.GaussianMixture`, fitted in :data:`NOVELTY_TRIM_ROUNDS` rounds of
    :data:`NOVELTY_EM_ITERATIONS` / rounds EM iterations, each round warm-started from the
    last: after every round the least likely ``trim`` share of ``x`` under the current
    mixture is left out of the next (the concentration steps of the trimmed-likelihood
    estimator, Neykov et al. 2007). Returns the weights (shares of the pixels kept), means
    and covariances (:data:`NOVELTY_RIDGE` on the diagonal).
    """
    rounds = NOVELTY_TRIM_ROUNDS if trim > 0 else 1
    gm = GaussianMixture(
        k,
        covariance_type="full",
        reg_covar=NOVELTY_RIDGE,
        max_iter=max(1, NOVELTY_EM_ITERATIONS // rounds),
        tol=0.0,
        init_params="k-means++",
        random_state=NOVELTY_SEED,
        warm_start=True,
    )
    kept = x
    with warnings.catch_warnings():
        # a fixed budget of iterations, not convergence, ends every round
        warnings.simplefilter("ignore", ConvergenceWarning)
        for r in range(rounds):
            gm.fit(kept)
            if trim > 0 and r < rounds - 1:
                loglik = gm.score_samples(x)
                kept = x[loglik >= np.quantile(loglik, trim)]
    return gm.weights_, gm.means_, gm.covariances_


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


NOVELTY_CHUNK_PX = 8192
"""Candidate pixels per matrix product of :func:`novelty_score` (the last product of a block
padded with zeros): every pixel goes through an identically shaped product, so its score is
bit-identical whatever the block."""
NOVELTY_STRIP_PX = 1 << 16
"""Pixels per row strip of the :func:`novelty_score` gates: the strip's few float32 temporaries
stay in the CPU cache instead of streaming the whole block through memory once per
operation."""


def novelty_score(a, b, norm: Normalisation, model: NoveltyModel, band_names) -> np.ndarray:
    """The ``novelty`` score of a block (:func:`pipeline.detection.scores.change_score`), in
    row strips.

    Per strip, the two cheap gates on every pixel (:class:`_NoveltyGates`: vegetated
    afterwards, or darker than the no-change relation predicts with its vegetation kept → 0);
    the candidates that pass both are queued, and every :data:`NOVELTY_CHUNK_PX` of them get
    their distance to the nearest common transition in one float32 matrix product
    (:class:`_NoveltyDistances`).
    Nothing of the block's size is allocated but the score itself; the values are those of
    the whole-block expressions, in the same float32 operations.
    """
    names = list(band_names)
    if not has_nir(names):
        check_bands(names, VISIBLE_BANDS, "'detect.method' = 'novelty' without a nir band")
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    nb, h, w = a.shape
    score = np.zeros(h * w, dtype=np.float32)
    gates = _NoveltyGates(norm, model, names, max(1, min(h, NOVELTY_STRIP_PX // max(w, 1))), w)
    dist = _NoveltyDistances(norm, model, nb)
    for r0 in range(0, h, gates.rows):
        sa, sb = a[:, r0 : r0 + gates.rows], b[:, r0 : r0 + gates.rows]
        idx, nonveg = gates.candidates(sa, sb)
        if idx.size:
            dist.add(sa, sb, idx, nonveg, r0 * w, score)
    dist.flush(score)
    return score.reshape(h, w)


class _NoveltyGates:
    """The ``novelty`` gates of :func:`novelty_score` on row strips of up to ``rows`` × ``w`` px,
    with reused strip buffers: a pixel is a candidate when its later surface is not vegetated
    (vegetation index below :data:`NOVELTY_NDVI_ZERO`, where the non-vegetation weight is
    > 0) and its visible bands got brighter than the no-change relation predicts
    (``sum (z_b - (g z_a + o)) > 0``) or it lost vegetation
    (:data:`NOVELTY_VEGETATION_LOSS`)."""

    def __init__(self, norm: Normalisation, model: NoveltyModel, names: list[str], rows, w):
        self.names, self.rows = names, rows
        f32 = np.float32
        self.vis = [
            (
                names.index(v),
                *(f32(x[names.index(v)]) for x in (norm.mean_a, norm.std_a)),
                *(f32(x[names.index(v)]) for x in (norm.mean_b, norm.std_b)),
                f32(model.nochange_gain[names.index(v)]),
                f32(model.nochange_offset[names.index(v)]),
            )
            for v in VISIBLE_BANDS
            if v in names
        ]
        self.lo, self.hi = f32(NDVI_NONVEG_MAX), f32(NOVELTY_NDVI_ZERO)
        self.loss = f32(NOVELTY_VEGETATION_LOSS)
        self.bright, self.za, self.zb = (np.empty((rows, w), f32) for _ in range(3))
        self.cand, self.brighter = np.empty((rows, w), bool), np.empty((rows, w), bool)

    def candidates(self, sa: np.ndarray, sb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices (in the strip) of the candidates of strip ``sa``/``sb`` (bands, rows,
        w) and their non-vegetation weight ``clip((hi - V) / (hi - lo), 0, 1)``."""
        n = sa.shape[1]
        bright, za, zb = self.bright[:n], self.za[:n], self.zb[:n]
        cand, brighter = self.cand[:n], self.brighter[:n]
        for k, (i, ma, sda, mb, sdb, g, o) in enumerate(self.vis):
            # zb - (g * za + o), as in the whole-block expression
            np.subtract(sa[i], ma, out=za)
            np.divide(za, sda, out=za)
            np.multiply(za, g, out=za)
            np.add(za, o, out=za)
            np.subtract(sb[i], mb, out=zb)
            np.divide(zb, sdb, out=zb)
            if k == 0:
                np.subtract(zb, za, out=bright)
            else:
                np.subtract(zb, za, out=zb)
                bright += zb
        veg = vegetation_index(sb, self.names)
        # weight > 0 exactly where V < hi (the subtraction keeps the sign)
        np.less(veg, self.hi, out=cand)
        np.greater(bright, 0, out=brighter)
        # a dark roof or yard on vegetation is no brighter, but it lost the vegetation
        brighter |= vegetation_index(sa, self.names) - veg >= self.loss
        cand &= brighter
        idx = np.flatnonzero(cand)
        nonveg = np.take(veg, idx)
        nonveg = np.clip((self.hi - nonveg) / (self.hi - self.lo), 0, 1)
        return idx, nonveg


class _NoveltyDistances:
    """The distance part of :func:`novelty_score`: candidates are queued (their joint z-vector,
    score position and weight) and scored :data:`NOVELTY_CHUNK_PX` at a time as
    ``sqrt(max(min_k quad_k . features, 0)) * weight`` (the features of
    :class:`NoveltyModel`: ``x_i x_j`` (i ≤ j), ``x_i``,
    1); the last, partial chunk is padded with zeros."""

    def __init__(self, norm: Normalisation, model: NoveltyModel, nb: int):
        f32, c = np.float32, NOVELTY_CHUNK_PX
        self.quad = np.asarray(model.quad, dtype=f32)
        self.scale = [
            (f32(m), f32(s))
            for m, s in zip(
                (*norm.mean_a[:nb], *norm.mean_b[:nb]), (*norm.std_a[:nb], *norm.std_b[:nb])
            )
        ]
        d = 2 * nb
        self.x = np.zeros((d, c), f32)
        self.feats = np.empty((self.quad.shape[1], c), f32)
        self.d2 = np.empty((self.quad.shape[0], c), f32)
        self.best = np.empty(c, f32)
        self.where = np.empty(c, np.int64)
        self.weight = np.empty(c, f32)
        self.fill = 0

    def add(self, sa, sb, idx: np.ndarray, weight: np.ndarray, base: int, score: np.ndarray):
        """Queue the candidates ``idx`` (flat in the strip ``sa``/``sb``, whose first pixel
        is ``score[base]``) with their ``weight``; score every full chunk into ``score``."""
        flat = [band.reshape(-1) for band in (*sa, *sb)]
        s, c = 0, NOVELTY_CHUNK_PX
        while s < idx.size:
            take = min(c - self.fill, idx.size - s)
            sel, at = idx[s : s + take], slice(self.fill, self.fill + take)
            for row, band, (m, sd) in zip(self.x, flat, self.scale):
                z = row[at]
                np.take(band, sel, out=z)
                np.subtract(z, m, out=z)
                np.divide(z, sd, out=z)
            np.add(sel, base, out=self.where[at])
            self.weight[at] = weight[s : s + take]
            self.fill += take
            s += take
            if self.fill == c:
                self.flush(score)

    def flush(self, score: np.ndarray) -> None:
        """Score the queued candidates into ``score`` (flat)."""
        m = self.fill
        if m == 0:
            return
        if m < NOVELTY_CHUNK_PX:
            self.x[:, m:] = 0.0
        np.matmul(self.quad, _quadratic_features(self.x, out=self.feats), out=self.d2)
        best = np.minimum.reduce(self.d2, axis=0, out=self.best)[:m]
        # expanding the quadratic form can leave a tiny negative for a pixel on a mean
        np.maximum(best, np.float32(0), out=best)
        np.sqrt(best, out=best)
        best *= self.weight[:m]
        score[self.where[:m]] = best
        self.fill = 0
