"""What a detected patch changed into, from its mean spectra in both epochs.

Pure rules on per-patch mean band values (any consistent scale: every test is a band ratio, a
normalised difference, or a brightness relative to the scene's mean brightness of the same
epoch, so a hazy or differently calibrated epoch does not shift the rules). The rules never
ask what colour a roof is: they ask whether the later surface is vegetation, water, soil or a
shadow, and whatever is none of these is a built surface — blue, red or orange colour-steel
sheet (彩钢瓦), red tile, white, grey concrete or black asphalt alike.

The later surface is:

- *vegetated* when its vegetation index (:func:`pipeline.bands.vegetation_index`: NDVI, or
  the visible-band VDVI without NIR) is at least :data:`VEGETATED_MIN`;
- *water* when it is dark (≤ :data:`WATER_BRIGHTNESS_MAX` × the scene) and, with NIR,
  McFeeters' NDWI (green − NIR) / (green + NIR) is above :data:`NDWI_WATER_MIN`; without
  NIR, blue exceeds red by :data:`WATER_BLUE_RED_MIN`;
- *soil* when its visible spectrum rises from blue to red the way iron oxides make it
  (red > green > blue, red/blue ≥ :data:`SOIL_RED_BLUE_MIN`, red/green below
  :data:`TILE_RED_GREEN_MIN`, which only fired-clay tile exceeds) and, with NIR, NIR is at
  least :data:`SOIL_NIR_RED_MIN` × red (painted steel reflects less NIR than red);
- a *shadow* when it is darker than before by at least :data:`SHADOW_DARKENING` and keeps
  the earlier spectral shape (spectral angle under :data:`SHADOW_ANGLE_DEG`);
- the *same surface* when its spectral shape and brightness barely changed
  (:data:`SAME_SURFACE_DEG`, :data:`SAME_LOG_GAIN`): haze or light, not a new material.

Rules, in order (the last that matches wins):

1. ``other`` — everything to begin with: crop phenology, regrowth, water level, shadow, haze.
2. ``veg_to_bare`` — the later surface is soil, not vegetated (vegetation index below
   :data:`BARE_VEGETATION_MAX`) and brighter than before relative to the scene (gain ≥
   :data:`BARE_GAIN_MIN`): earthworks, cleared or filled land.
3. ``veg_to_construction`` — the later surface is none of vegetated, water, soil, shadow or
   the same surface: a roof or hard surface of any colour.

Limits without NIR: orange colour steel is coloured like soil (typed ``veg_to_bare`` when it
brightened the patch, ``other`` on soil that was as bright), and black asphalt on stubble or
soil darkens it the way a new shadow does (``other``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from pipeline.bands import VISIBLE_BANDS, has_nir, vegetation_index
from pipeline.schema import ChangeType

log = logging.getLogger(__name__)

VISIBLE = VISIBLE_BANDS

VEGETATED_MIN = 0.3
"""Vegetation index at or above which the later surface counts as vegetated. Crops and trees
have NDVI 0.3–0.8; soil 0.05–0.2; roofs, concrete and asphalt ≈ 0–0.1. A patch's mean
includes its outline pixels, half roof and half crop, and blue/cyan steel reflects more NIR
than concrete, so a small steel roof on a green field averages 0.2–0.25: still below."""
BARE_VEGETATION_MAX = 0.2
"""Earthworks: bare soil with no more than stubble (vegetation index below 0.2)."""
NDWI_WATER_MIN = 0.0
"""Open water and flooded paddies reflect more green than NIR (NDWI > 0); so do blue and
cyan steel roofs, which the darkness test (:data:`WATER_BRIGHTNESS_MAX`) sets apart."""
WATER_BRIGHTNESS_MAX = 0.8
"""Water is dark: at most 0.8 × the scene's mean visible brightness."""
WATER_BLUE_RED_MIN = 1.15
"""Without NIR: water is bluer than red by 15 % (black asphalt and shadowed concrete are
flat, blue/red ≈ 0.95–1.05)."""
SOIL_RED_BLUE_MIN = 1.2
"""Bare soil: red/blue ≥ 1.2 (iron oxides absorb blue; dry loess ≈ 1.5–2, but haze in the
later epoch adds to blue and brings fresh fill down to ≈ 1.25)."""
SOIL_GREEN_BLUE_MIN = 1.15
"""Soil: green/blue ≥ 1.15 (≈ 1.25–1.4, ≈ 1.2 under haze); red and orange painted steel
reflects about as much blue as green (0.8–1.1)."""
TILE_RED_GREEN_MIN = 1.45
"""Red clay tile: red/green ≈ 1.6–2; bare, ploughed or filled soil stays at 1.1–1.35."""
SOIL_NIR_RED_MIN = 1.05
"""Soil reflects more NIR than red (the soil line, NIR/red ≈ 1.1–1.6); red and orange
painted steel sheet reflects about as much NIR as red (≈ 0.85–1.0)."""
SHADOW_DARKENING = 0.6
"""A shadow makes a surface at most 0.6 × as bright as before (relative to the scene)."""
SHADOW_ANGLE_DEG = 10.0
"""…and keeps its spectral shape: the angle between the scene-relative spectra before and
after stays under 10° (shadowed soil ≈ 5–8°; asphalt laid on soil ≈ 14°)."""
SAME_SURFACE_DEG = 4.0
"""A patch whose scene-relative spectrum turned by less than 4° and whose relative brightness
changed by less than :data:`SAME_LOG_GAIN` is the same surface seen through other haze or
light (haze over stubble ≈ 1°, over crops ≈ 5° but they stay vegetated); a roof on soil
turns it by ≥ 5.5°."""
SAME_LOG_GAIN = float(np.log(1.3))
"""…and changed brightness by less than 30 %."""
VISIBLE_GREEN_BLUE_MIN = 1.1
"""Without NIR, vegetation also needs green ≥ 1.1 × blue: leaves are green over blue
(≈ 1.3–2), cyan colour steel is not (≈ 1.0) though its VDVI is as high as a crop's."""
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
        Per-patch mean values of each band, before and after. ``blue``, ``green`` and
        ``red`` are needed; ``nir`` is used when present.
    scene_from, scene_to : mapping band name → float
        Scene (global sample) mean of each band per epoch; brightness is relative to it.

    Returns
    -------
    ndarray of str (n,)
        :class:`~pipeline.schema.ChangeType` values.

    Notes
    -----
    Without all of blue, green and red the type cannot be judged: every patch is ``other``
    and a warning is logged.
    """
    missing = [b for b in VISIBLE if b not in means_to or b not in means_from]
    if missing:
        n = len(next(iter(means_to.values()))) if means_to else 0
        log.warning(
            "the change type needs the bands blue, green and red; %s not configured, every "
            "patch is '%s'",
            ", ".join(missing),
            ChangeType.OTHER.value,
        )
        return np.full(n, ChangeType.OTHER.value, dtype=object)
    names = [b for b in (*VISIBLE, "nir") if b in means_to and b in means_from]
    f = np.stack([np.asarray(means_from[b], dtype=np.float64) for b in names])
    t = np.stack([np.asarray(means_to[b], dtype=np.float64) for b in names])
    sf = np.array([_positive(scene_from[b]) for b in names])[:, None]
    st = np.array([_positive(scene_to[b]) for b in names])[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_from = f[:3].mean(axis=0) / sf[:3].mean()
        rel_to = t[:3].mean(axis=0) / st[:3].mean()
        veg_to = vegetation_index(t, names)
        angle = _spectral_angle_deg(f / sf, t / st)
        soil = _soil(t, has_nir(names))
        water = _water(t, rel_to, has_nir(names))
        shadow = (rel_to <= SHADOW_DARKENING * rel_from) & (angle < SHADOW_ANGLE_DEG)
        same = (angle < SAME_SURFACE_DEG) & (np.abs(np.log(rel_to / rel_from)) < SAME_LOG_GAIN)
    vegetated = veg_to >= VEGETATED_MIN
    if not has_nir(names):  # cyan steel is as green as it is blue; leaves are greener
        vegetated &= t[1] >= VISIBLE_GREEN_BLUE_MIN * t[0]
    out = np.full(t.shape[1], ChangeType.OTHER.value, dtype=object)
    bare = soil & (veg_to < BARE_VEGETATION_MAX) & (rel_to - rel_from >= BARE_GAIN_MIN)
    out[bare] = ChangeType.EARTHWORKS.value
    built = ~(vegetated | water | soil | shadow | same)
    out[built] = ChangeType.CONSTRUCTION.value
    return out


def _soil(t: np.ndarray, nir: bool) -> np.ndarray:
    """Soil-shaped later spectra (rows blue, green, red[, nir]); see the module docstring."""
    b, g, r = t[0], t[1], t[2]
    soil = (r > g) & (g >= SOIL_GREEN_BLUE_MIN * b) & (r >= SOIL_RED_BLUE_MIN * b)
    soil &= r < TILE_RED_GREEN_MIN * g
    if nir:
        soil &= t[3] >= SOIL_NIR_RED_MIN * r
    return soil


def _water(t: np.ndarray, rel_to: np.ndarray, nir: bool) -> np.ndarray:
    """Water-like later spectra: dark, and NDWI > 0 with NIR or bluish without (blue and
    cyan steel also reflect more green than NIR, but they are bright)."""
    dark = rel_to <= WATER_BRIGHTNESS_MAX
    if nir:
        return dark & ((t[1] - t[3]) > NDWI_WATER_MIN * (t[1] + t[3]))
    return dark & (t[0] >= WATER_BLUE_RED_MIN * t[2])


def _spectral_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (degrees) between the columns of ``a`` and ``b`` (bands × patches)."""
    cos = (a * b).sum(axis=0) / np.maximum(
        np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0), 1e-12
    )
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _positive(value: float) -> float:
    value = float(value)
    return value if value > 0 else 1.0


def built_up(x: np.ndarray, band_names: list[str] | tuple[str, ...]) -> np.ndarray:
    """Pixels of one epoch that look built (a roof or hard surface), by the same rules that
    type a patch ``veg_to_construction``: not vegetated, not water, not soil.

    Parameters
    ----------
    x : ndarray (bands, ...)
        One epoch's values in ``band_names`` order (``blue``, ``green``, ``red`` needed;
        ``nir`` used when present); any trailing shape.

    Returns
    -------
    ndarray of bool, the trailing shape of ``x``.

    Notes
    -----
    Water is "dark" relative to the mean visible brightness of ``x`` itself (pass a window
    large enough to hold more than the patch). Without the visible bands nothing is built.
    """
    names = list(band_names)
    if any(b not in names for b in VISIBLE):
        return np.zeros(x.shape[1:], dtype=bool)
    order = [names.index(b) for b in (*VISIBLE, "nir") if b in names]
    t = np.asarray(x, dtype=np.float64)[order]
    used = [names[i] for i in order]
    with np.errstate(divide="ignore", invalid="ignore"):
        vis = t[:3].mean(axis=0)
        rel = vis / _positive(np.nanmean(vis)) if vis.size else vis
        vegetated = vegetation_index(t, used) >= VEGETATED_MIN
        if not has_nir(used):
            vegetated &= t[1] >= VISIBLE_GREEN_BLUE_MIN * t[0]
        built = ~(vegetated | _water(t, rel, has_nir(used)) | _soil(t, has_nir(used)))
    return built & (vis > 0)
