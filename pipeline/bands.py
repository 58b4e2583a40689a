"""Band roles (surface, atmospheric, visible; the bands each screen and method needs) and
per-pixel spectral helpers shared by the detection methods."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from pipeline.errors import ConfigError

VISIBLE_BANDS = ("blue", "green", "red")
NDVI_NONVEG_MAX = 0.3
"""``index``: NDVI at or above which the later surface counts as vegetated (weight 0); roofs,
concrete and fresh fill are near 0, ploughed soil ≈ 0.1, stubble ≈ 0.2, crops > 0.5."""
ATMOSPHERIC_BANDS = ("coastal", "vapour", "cirrus")
"""Band names that see the atmosphere more than the ground (Sentinel-2 B01, B09, B10). They
are read and averaged per patch (the cloud screen, :mod:`pipeline.detection.screens`) but no change
method uses them: a surface method fed the cirrus band would score haze as change."""
CLOUD_BANDS = ("coastal", "cirrus")
"""Band names the cloud screen reads (Sentinel-2 B01 and B10)."""
MOISTURE_BANDS = ("swir1",)
"""The moisture screen reads ``swir1`` (Sentinel-2 B11) and at least one of
:data:`MOISTURE_VISIBLE`."""
MOISTURE_VISIBLE = ("blue", "green", "red")
LOG_FLOOR = np.float32(1.0)
"""Reflectance floor (digital numbers) before the logarithm of a band."""


def nd(x: np.ndarray, i: int, j: int) -> np.ndarray:
    """Normalised difference ``(x_i - x_j) / max(x_i + x_j, 1)`` of bands ``i`` and ``j``
    (NDVI, NDBI, MNDWI on raw values; the floor keeps dark or zero pixels finite)."""
    return (x[i] - x[j]) / np.maximum(x[i] + x[j], LOG_FLOOR)


def surface_first(band_names: Iterable[str]) -> tuple[str, ...]:
    """``band_names`` with the :data:`ATMOSPHERIC_BANDS` moved to the end (order otherwise
    kept), so the surface bands of a read block are the leading slice ``data[:n_surface]``."""
    names = tuple(band_names)
    return tuple(b for b in names if b not in ATMOSPHERIC_BANDS) + tuple(
        b for b in names if b in ATMOSPHERIC_BANDS
    )


def surface_bands(band_names: Iterable[str]) -> tuple[str, ...]:
    """The names in ``band_names`` that are not :data:`ATMOSPHERIC_BANDS`, in order."""
    return tuple(b for b in band_names if b not in ATMOSPHERIC_BANDS)


def check_bands(band_names: Sequence[str], needed: Iterable[str], purpose: str) -> None:
    """Raise :class:`ConfigError` unless every band in ``needed`` is configured."""
    missing = [b for b in needed if b not in band_names]
    if missing:
        raise ConfigError(
            f"{purpose} needs the band(s) {', '.join(missing)}, which are not configured "
            f"(configured: {', '.join(band_names) or 'none'}); add them to 'imagery.bands' "
            "or 'imagery.band_files'"
        )


VISIBLE_VEGETATION_INDEX = "vdvi"
"""The vegetation index used when there is no ``nir`` band: the visible-band difference
vegetation index VDVI = (2G − R − B) / (2G + R + B) (also called the green leaf index, GLI).
Chosen over VARI = (G − R) / (G + R − B) because its denominator is a sum of positive bands,
so it stays bounded in [−1, 1] like NDVI and never blows up on grey roofs or shadow where
G + R ≈ B; and over excess green (2g − r − b on chromatic coordinates) because it is the same
contrast without the extra normalisation step. Healthy crops and trees ≈ 0.05–0.25, soil and
grey surfaces ≈ −0.05–0.02, blue and red roofs clearly negative."""
VDVI_SCALE = 3.0
"""VDVI spans about a third of NDVI's range on the same surfaces (crops: NDVI 0.5–0.8, VDVI
0.1–0.25); :func:`vegetation_index` multiplies it by this so thresholds written for NDVI
keep roughly their meaning (vegetated from ≈ 0.3, bare and built below ≈ 0.2)."""


def has_nir(band_names: Sequence[str]) -> bool:
    """True when the band set has ``red`` and ``nir`` (NDVI); otherwise vegetation comes from
    the visible bands (:func:`vegetation_index`)."""
    return "red" in band_names and "nir" in band_names


def vegetation_index(x: np.ndarray, band_names: Sequence[str]) -> np.ndarray:
    """Per-pixel vegetation index of ``x`` (bands first, any trailing shape).

    NDVI when ``red`` and ``nir`` are configured; otherwise :data:`VDVI_SCALE` × VDVI from
    ``blue``, ``green`` and ``red`` (see :data:`VISIBLE_VEGETATION_INDEX`), clipped to
    [−1, 1], so one set of thresholds serves both. Raises :class:`ConfigError` when neither
    NIR nor all three visible bands are configured.
    """
    names = list(band_names)
    if has_nir(names):
        return nd(x, names.index("nir"), names.index("red"))
    check_bands(names, VISIBLE_BANDS, "the vegetation index (NDVI or, without NIR, VDVI)")
    b, g, r = (x[names.index(n)] for n in VISIBLE_BANDS)
    vdvi = (2 * g - r - b) / np.maximum(2 * g + r + b, LOG_FLOOR)
    return np.clip(VDVI_SCALE * vdvi, -1.0, 1.0)
