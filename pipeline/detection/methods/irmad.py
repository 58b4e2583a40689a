"""IR-MAD: iteratively re-weighted multivariate alteration detection (Nielsen 2007, IEEE TIP
16(2); Canty, *Image Analysis, Classification and Change Detection in Remote Sensing*, ch. 9),
and the relative radiometric normalisation regressed over its no-change pixels (Canty, Nielsen
& Schmidt 2004, RSE 91; Canty & Nielsen 2008, RSE 112).

Pure numpy/scipy, fitted on the canonical pass-1 sample (:mod:`pipeline.detection.sampling`). The
no-change variances are estimated robustly (median): the textbook ``2 (1 - rho)`` contracts onto
a handful of pixels on real 10 m scenes (:func:`_robust_mad_variance`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from pipeline.detection.sampling import MIN_SAMPLE_PIXELS, Normalisation
from pipeline.errors import InputDataError

log = logging.getLogger(__name__)

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


def irmad_chi2(a: np.ndarray, b: np.ndarray, model: IrmadModel) -> np.ndarray:
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
    z = irmad_chi2(
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
