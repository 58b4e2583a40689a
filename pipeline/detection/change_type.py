"""What a detected patch changed into, from its mean spectra in both epochs.

Pure rules on per-patch mean band values (any consistent scale: NDVI and band ratios are
scale-free, and brightness is taken relative to the scene's mean brightness of the same
epoch, so a hazy or differently calibrated epoch does not shift the rules).

Rules, in order (the first that matches wins):

1. ``veg_to_construction`` — after the change the patch is *not vegetated*
   (NDVI < :data:`BUILT_NDVI_MAX`), *bright* (visible brightness ≥
   :data:`BUILT_BRIGHTNESS_MIN` × the scene mean) and its visible spectrum is *flat*
   (spread ≤ :data:`FLAT_SPREAD_MAX` of the mean: concrete, grey/white roofs, steel) or
   *blue-dominant* (blue ≥ red: the blue/cyan steel roofs of sheds and factories) or
   *tile-red* (red/green ≥ :data:`TILE_RED_GREEN_MIN`: fired-clay tiles, whose haematite
   makes red far exceed green — more than any soil does).
2. ``veg_to_bare`` — after the change it is not vegetated (NDVI < :data:`NDVI_NONVEG_MAX`),
   *soil-coloured*
   (red > green > blue with red/blue ≥ :data:`SOIL_RED_BLUE_MIN`: iron oxides absorb blue)
   and *brighter* than before relative to the scene (gain ≥ :data:`BARE_GAIN_MIN`):
   earthworks, cleared or filled land.
3. ``other`` — everything else: seasonal vegetation change, crops, water, shadows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from pipeline.schema import ChangeType

log = logging.getLogger(__name__)

REQUIRED_BANDS = ("blue", "green", "red", "nir")
VISIBLE = ("blue", "green", "red")

NDVI_NONVEG_MAX = 0.2
"""Healthy vegetation has NDVI 0.3–0.8; soil 0.05–0.2; roofs, concrete, asphalt ≈ 0–0.1."""
BUILT_NDVI_MAX = 0.3
"""NDVI limit of the construction rule. A patch's mean includes its outline pixels, half
roof and half crop, and blue/cyan steel reflects more NIR than concrete, so a small steel
roof on a green field averages NDVI 0.2–0.25; vegetation itself starts at 0.3."""
BUILT_BRIGHTNESS_MIN = 1.1
"""Roofs and concrete reflect more in the visible than a scene of fields and villages: at
least 1.1 × the scene's mean visible brightness (same epoch)."""
FLAT_SPREAD_MAX = 0.25
"""(max − min) / mean of blue, green, red: grey materials are spectrally flat (≤ 0.25);
soil rises steeply from blue to red (≥ 0.4)."""
SOIL_RED_BLUE_MIN = 1.2
"""Bare soil: red/blue ≥ 1.2 (iron oxides absorb blue; dry loess ≈ 1.5–2, but haze in the
later epoch adds to blue and brings fresh fill down to ≈ 1.25)."""
TILE_RED_GREEN_MIN = 1.45
"""Red clay tile roofs: red/green ≈ 1.6–2 (haze in the later epoch lowers it a little); bare,
ploughed or filled soil stays at 1.1–1.35. Red/green rather than red/blue because haze
brightens blue most."""
BARE_GAIN_MIN = 0.05
"""Earthworks brighten a patch: relative brightness (÷ scene mean) up by ≥ 0.05."""


def classify_change(
    means_from: Mapping[str, np.ndarray],
    means_to: Mapping[str, np.ndarray],
    scene_from: Mapping[str, float],
    scene_to: Mapping[str, float],
) -> np.ndarray:
    """Change type per patch.

    Parameters
    ----------
    means_from, means_to : mapping band name → array (n,)
        Per-patch mean values of each band, before and after.
    scene_from, scene_to : mapping band name → float
        Scene (global sample) mean of each band per epoch; brightness is relative to it.

    Returns
    -------
    ndarray of str (n,)
        :class:`~pipeline.schema.ChangeType` values.

    Notes
    -----
    Without all of blue, green, red and nir the type cannot be judged: every patch is
    ``other`` and a warning is logged.
    """
    n = len(next(iter(means_to.values()))) if means_to else 0
    out = np.full(n, ChangeType.OTHER.value, dtype=object)
    missing = [b for b in REQUIRED_BANDS if b not in means_to or b not in means_from]
    if missing:
        log.warning(
            "change type needs bands %s; %s not configured, every patch is '%s'",
            ", ".join(REQUIRED_BANDS),
            ", ".join(missing),
            ChangeType.OTHER.value,
        )
        return out
    f = {b: np.asarray(means_from[b], dtype=np.float64) for b in REQUIRED_BANDS}
    t = {b: np.asarray(means_to[b], dtype=np.float64) for b in REQUIRED_BANDS}
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi_to = np.nan_to_num((t["nir"] - t["red"]) / (t["nir"] + t["red"]))
        vis_to = np.stack([t[b] for b in VISIBLE])
        bright_to = vis_to.mean(axis=0)
        bright_from = np.stack([f[b] for b in VISIBLE]).mean(axis=0)
        rel_to = bright_to / _scene_brightness(scene_to)
        rel_from = bright_from / _scene_brightness(scene_from)
        spread = np.nan_to_num((vis_to.max(axis=0) - vis_to.min(axis=0)) / bright_to, nan=1.0)
        red_blue = np.nan_to_num(t["red"] / t["blue"])
        red_green = np.nan_to_num(t["red"] / t["green"])
    nonveg = ndvi_to < NDVI_NONVEG_MAX
    built = (
        (ndvi_to < BUILT_NDVI_MAX)
        & (rel_to >= BUILT_BRIGHTNESS_MIN)
        & (
            (spread <= FLAT_SPREAD_MAX)
            | (t["blue"] >= t["red"])
            | (red_green >= TILE_RED_GREEN_MIN)
        )
    )
    bare = (
        nonveg
        & (t["red"] > t["green"])
        & (t["green"] > t["blue"])
        & (red_blue >= SOIL_RED_BLUE_MIN)
        & (rel_to - rel_from >= BARE_GAIN_MIN)
    )
    out[bare] = ChangeType.EARTHWORKS.value
    out[built] = ChangeType.CONSTRUCTION.value  # construction wins where both match
    return out


def _scene_brightness(scene: Mapping[str, float]) -> float:
    value = float(np.mean([scene[b] for b in VISIBLE]))
    return value if value > 0 else 1.0
