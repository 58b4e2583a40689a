"""Patch-level cloud and haze screen from the atmospheric bands.

A cloud or a haze bank in one of the two images is the largest false "change" a detector
finds: every surface band brightens together, SWIR included, and the patch looks like a new
bright roof. Two Sentinel-2 bands see the atmosphere rather than the ground:

- ``cirrus`` (B10, 1375 nm): water vapour absorbs it before it reaches the ground, so it
  stays dark and nearly constant over land and rises with any high or thick cloud;
- ``coastal`` (B01, 443 nm, 60 m): the aerosol band, raised by haze and cloud; at 60 m a
  building-sized ground change moves it little.

A merged patch is screened as cloud when, relative to the scene, *both* bands grew by at
least their ratio between the two epochs (a cloud in the later image) or both shrank by it
(a cloud in the earlier one). Ratios are taken relative to the scene's own ratio of means,
so a clearer or hazier date as a whole, or a different calibration, does not move the rule.

Measured on the OSCD cities (``benchmarks/eval_oscd.py``): the two cloud patches of Paris
(a low cloud in 2017-11-07, 28 ha) have cirrus ×2.2–2.9 and coastal ×1.5–1.6 relative to
their scene; among the ≈ 330 other patches found over the nine cities, the labelled changes
that come closest have cirrus ÷1.39 with coastal ÷1.31 (Bercy), or cirrus ×1.45 with coastal
×1.16 (Hong Kong). Without a
thermal band a fixed rule cannot tell every thin haze from every bright new surface; the
ratios are the config keys ``detect.cloud_cirrus_ratio`` and ``detect.cloud_coastal_ratio``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

CLOUD_BANDS = ("coastal", "cirrus")
"""Band names the screen reads (Sentinel-2 B01 and B10)."""


def cloud_patches(
    means_from: Mapping[str, np.ndarray],
    means_to: Mapping[str, np.ndarray],
    scene_from: Mapping[str, float],
    scene_to: Mapping[str, float],
    cirrus_ratio: float,
    coastal_ratio: float,
) -> np.ndarray:
    """Which patches are a cloud or haze in one of the epochs.

    Parameters
    ----------
    means_from, means_to : mapping band name → array (n,)
        Per-patch mean of each band before and after (raw values); ``coastal`` and
        ``cirrus`` are read.
    scene_from, scene_to : mapping band name → float
        Scene (pass-1 sample) means of the same bands.
    cirrus_ratio, coastal_ratio : float
        Factors (> 1) by which both bands must have grown, or both shrunk, relative to the
        scene's own ratio.

    Returns
    -------
    ndarray of bool (n,)
        True for a cloud patch.
    """
    n = len(next(iter(means_from.values()))) if means_from else 0
    log_change = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for band in CLOUD_BANDS:
            patch = np.log(np.asarray(means_to[band], float) / np.asarray(means_from[band], float))
            scene = np.log(np.float64(scene_to[band]) / np.float64(scene_from[band]))
            log_change[band] = np.nan_to_num(patch - scene, nan=0.0, posinf=0.0, neginf=0.0)
    up = (log_change["cirrus"] >= np.log(cirrus_ratio)) & (
        log_change["coastal"] >= np.log(coastal_ratio)
    )
    down = (log_change["cirrus"] <= -np.log(cirrus_ratio)) & (
        log_change["coastal"] <= -np.log(coastal_ratio)
    )
    return (up | down).reshape(n)
