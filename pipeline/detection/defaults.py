"""The detector's default setting for the imagery at hand (``detect.method: auto``).

One setting cannot serve every sensor: a per-scene classifier needs SWIR and many bands to
tell wetting and drying from building, the novelty of a change vector needs a scene of
fields whose common transitions it can learn, and VHR RGB has three bands and a great deal of
misregistration. So the default, ``method: auto``, picks a *profile* by the configured band
set and the grid's resolution:

========================  =============================================================
band set                  profile
========================  =============================================================
``multispectral``         SWIR present (Sentinel-2, Landsat): :data:`MULTISPECTRAL`
``rgbn``                  blue, green, red and NIR (Gaofen-1/2/6 and similar): :data:`RGBN`
``rgb``                   visible bands only: :data:`RGB`, at ≤ 1 m :data:`RGB_VHR`
========================  =============================================================

Every key a user writes in ``detect`` wins over the profile; a method named explicitly
(``method: cva`` …) uses the documented defaults of :class:`pipeline.config.DetectConfig`
and no profile at all.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.bands import has_nir
from pipeline.config import DetectConfig

log = logging.getLogger(__name__)

AUTO = "auto"
"""``detect.method`` value that picks the profile of the imagery (the default)."""

MULTISPECTRAL: Mapping[str, Any] = {
    "method": "selftrain",
    "threshold": "fixed",
    "threshold_value": 0.6,
    "sample_step": 3,
    "smooth_sigma_m": 20.0,
    "hysteresis_low": 0.7,
    "min_mean_score": 1.0,
    "edge_ratio": None,
}
"""Sentinel-2 and Landsat: a per-scene classifier trained on its own confident IR-MAD pixels
(:mod:`pipeline.detection.methods.selftrain`), its probability cut at 0.6 after a 20 m
smoothing; SWIR feeds the moisture screen."""

RGBN: Mapping[str, Any] = {
    "method": "novelty",
    "threshold": "fixed",
    "threshold_value": 4.5,
    "hysteresis_low": 0.85,
    "min_mean_score": 0.9,
    "context_contrast": 0.4,
}
"""Four-band VHR/HR imagery of farming districts: the distance of each change vector to the
scene's common transitions (:mod:`pipeline.detection.methods.novelty`), in standard
deviations of the nearest one, cut at 4.5 (red colour-steel and concrete roofs under haze
score 4–6) with a narrow hysteresis (pixels down to 3.8 join a patch; lower, roofs grow into
the seasonal change around them), and the context screen
(:mod:`pipeline.detection.context`) drops the patches that changed like the ground around
them — fragments of seasonal parcels, film, old roofs under haze. On the hard synthetic
scenes (seeds 1, 2, 4, 8) recall of new construction goes from 0.36 (cut 6, no screen) to
0.61 and false patches from 2.7 to 0.43 per km²; the default samples keep 0.970 and no
false patch (cut 3.5 with hysteresis 0.7 reaches 0.71 on the hard scenes but loses
buildings and adds false patches on the default samples)."""

RGB: Mapping[str, Any] = {
    "method": "cva",
    "threshold": "otsu",
    "smooth_sigma_m": 2.0,
}
"""Visible bands only at 1 m or coarser: the change vector's length on z-scored bands after
a 2 m Gaussian, Otsu's cut. With three bands the novelty of a change vector does not stand
out of the scene's transitions (hard synthetic RGB scenes: recall 0.21 against 0.45 for
this; DSIFN crops taken as 2 m: F1 0.01 against 0.34)."""

VHR_MAX_M = 1.0
"""Pixels of this size or finer are *very high resolution*: aerial and commercial imagery of
0.3–1 m, where a roof spans hundreds of pixels, leans, casts shadows and is misregistered by
pixels between dates."""

RGB_VHR: Mapping[str, Any] = {
    "method": "cva",
    "threshold": "otsu",
    "smooth_sigma_m": 1.0,
}
"""Visible bands at ≤ :data:`VHR_MAX_M`: the change vector's length on z-scored bands, a 1 m
Gaussian before the cut (misregistration of 1–3 px costs under 0.03 F1 on whole LEVIR-CD
tiles) and Otsu's cut. The novelty mixture scores almost nothing on these
scenes: buildings, roads and shadows make up too much of them to be rare."""

PROFILES: Mapping[str, Mapping[str, Any]] = {
    "multispectral": MULTISPECTRAL,
    "rgbn": RGBN,
    "rgb": RGB,
    "rgb_vhr": RGB_VHR,
}


def band_set(band_names: Sequence[str]) -> str:
    """``multispectral`` (a SWIR band), ``rgbn`` (red and NIR) or ``rgb`` (visible only)."""
    names = set(band_names)
    if names & {"swir1", "swir2"}:
        return "multispectral"
    return "rgbn" if has_nir(band_names) else "rgb"


def profile(band_names: Sequence[str], resolution_m: float) -> dict[str, Any]:
    """The detect keys of the default setting for ``band_names`` at ``resolution_m``.

    The clean-up radii and ``min_area_m2`` are in metres, so they follow the resolution
    without a profile; the profile changes with it only for visible-band imagery at
    ≤ :data:`VHR_MAX_M` (:data:`RGB_VHR`)."""
    kind = band_set(band_names)
    if kind == "rgb" and resolution_m <= VHR_MAX_M:
        kind = "rgb_vhr"
    return dict(PROFILES[kind])


def resolve_detect(d: DetectConfig, band_names: Sequence[str], resolution_m: float) -> DetectConfig:
    """``d`` with ``method: auto`` replaced by the profile of the imagery.

    A key takes the profile's value unless the user set it: it is in ``d.given`` (the keys
    written in the config file) or differs from the :class:`DetectConfig` default (a
    configuration built in code). Any other method is returned unchanged.
    """
    if d.method != AUTO:
        return d
    defaults = {f.name: f.default for f in dataclasses.fields(DetectConfig)}
    given = set(getattr(d, "given", ()) or ())
    chosen = {
        key: value
        for key, value in profile(band_names, resolution_m).items()
        if key == "method" or (key not in given and getattr(d, key) == defaults[key])
    }
    resolved = dataclasses.replace(d, **chosen)
    log.info(
        "detect: method auto -> %s for %s imagery at %g m (%s)",
        resolved.method,
        band_set(band_names),
        resolution_m,
        ", ".join(f"{k}={v}" for k, v in sorted(chosen.items()) if k != "method"),
    )
    return resolved
