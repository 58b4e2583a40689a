"""Pure scoring of the development scoreboard (no file access; see ``scoreboard.py``).

- pixel F1 on a label that marks only *sampled* pixels (:func:`labelled_scores`);
- pixel F1 of one image pair, with the convention for a label without change
  (:func:`pair_f1`);
- the misregistration test: the later image displaced by ``k`` pixels along both axes and
  every array cropped to the overlap (:func:`shifted_pair`, :func:`overlap`);
- the object figures of a synthetic scene (:func:`synthetic_figures`): recall of unapproved
  new construction, its off-farmland subset, false and seasonal false patches;
- the summary line (:func:`summary_line`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import geopandas as gpd
import numpy as np
import shapely

from pipeline.detection.accuracy import PixelScores, match_objects, pixel_scores

MIN_CONSTRUCTION_M2 = 200.0
"""Truth buildings smaller than this are not counted in the recall (the survey's rule)."""
NOT_CONSTRUCTION_KINDS = frozenset({"legal", "earthworks", "temporary", "spoil"})
"""Truth kinds that are not unapproved new construction: fully approved buildings, fill soil
and the decoys (temporary sheds, spoil heaps). Every other kind (``illegal``, ``partial``,
``nonfarm`` …) is."""
SUMMARY_KEYS = (
    "synthetic_recall",
    "synthetic_fp_km2",
    "offfarm_recall",
    "seasonal_fp_km2",
    "oscd_f1",
    "norcia_fp_km2",
    "landsat_f1",
    "levir_f1",
    "dsifn_f1",
    "levir_shift_loss",
)
"""The figures of the machine-readable last line, in order."""


# --------------------------------------------------------------------------- pixels
def labelled_scores(
    predicted: np.ndarray,
    change: np.ndarray,
    nochange: np.ndarray,
    valid: np.ndarray | None = None,
) -> PixelScores:
    """Pixel scores on a partial label: only pixels marked ``change`` or ``nochange`` count.

    Parameters
    ----------
    predicted : bool array
        The detector's change mask.
    change, nochange : bool arrays
        The sampled changed and unchanged pixels; a pixel marked both is ambiguous and not
        scored, a pixel marked neither is unlabelled and not scored.
    valid : bool array, optional
        Pixels the detector saw (its mask is not nodata there).

    Returns
    -------
    PixelScores
    """
    change = np.asarray(change, dtype=bool)
    nochange = np.asarray(nochange, dtype=bool)
    scored = change ^ nochange
    if valid is not None:
        scored &= np.asarray(valid, dtype=bool)
    return pixel_scores(predicted, change, scored)


def pair_f1(scores: PixelScores) -> float:
    """F1 of one pair; with neither true nor predicted change (F1 undefined) it is 1.0.

    Notes
    -----
    A pair whose label has no change scores 1.0 when nothing is flagged and 0.0 otherwise,
    so false alarms on a quiet pair count against the mean.
    """
    if scores.tp + scores.fp + scores.fn == 0:
        return 1.0
    return float(scores.f1)


def overlap(shape: tuple[int, int], shift_px: int) -> tuple[slice, slice]:
    """The window of a ``shape`` array that survives a shift of ``shift_px`` along both axes."""
    if shift_px < 0 or shift_px >= min(shape):
        raise ValueError(f"shift {shift_px} px: expected 0 <= shift < {min(shape)} (the size)")
    return slice(shift_px, shape[0]), slice(shift_px, shape[1])


def shifted_pair(
    before: np.ndarray, after: np.ndarray, label: np.ndarray, shift_px: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Misregister a pair: the later image's content moves ``shift_px`` down and right.

    Parameters
    ----------
    before, after : arrays (bands, rows, cols) or (rows, cols)
    label : array (rows, cols), on the grid of ``before``
    shift_px : int
        0 returns the arrays unchanged.

    Returns
    -------
    before, after, label
        Cropped to the overlap: pixel ``(r, c)`` of the returned ``after`` is pixel
        ``(r, c)`` of the input ``after`` while the returned ``before`` and ``label`` are
        taken at ``(r + shift_px, c + shift_px)``, i.e. the later image is displaced by
        ``shift_px`` px along both axes relative to the earlier one and the label.
    """
    if shift_px == 0:
        return before, after, label
    rows, cols = overlap(label.shape, shift_px)
    k = shift_px
    return before[..., rows, cols], after[..., :-k, :-k], label[rows, cols]


# --------------------------------------------------------------------------- objects
def unapproved_construction(truth: gpd.GeoDataFrame, *, min_area_m2: float = MIN_CONSTRUCTION_M2):
    """Boolean per truth object: unapproved new construction of at least ``min_area_m2``."""
    kind = truth["kind"].astype(str)
    return (~kind.isin(NOT_CONSTRUCTION_KINDS) & (truth["area_m2"] >= min_area_m2)).to_numpy()


def off_farmland(truth: gpd.GeoDataFrame) -> np.ndarray:
    """Boolean per truth object: off farmland (``off_farmland`` flag, else farmland area 0)."""
    if "off_farmland" in truth.columns:
        return truth["off_farmland"].fillna(False).astype(bool).to_numpy()
    return (truth["farmland_m2"] <= 0).to_numpy()


def synthetic_figures(
    patches: gpd.GeoDataFrame,
    truth: gpd.GeoDataFrame,
    seasonal: gpd.GeoDataFrame,
    area_km2: float,
) -> dict:
    """Object figures of one synthetic scene.

    Parameters
    ----------
    patches : GeoDataFrame
        The registry's patches (any change type).
    truth : GeoDataFrame
        Every new object of the later epoch (layer ``changes``), with ``kind``,
        ``area_m2`` and ``farmland_m2`` (or an ``off_farmland`` flag).
    seasonal : GeoDataFrame
        The farmland parcels whose cover changed with the season (layer ``seasonal``).
    area_km2 : float
        The scored area (the district).

    Returns
    -------
    dict
        ``targets`` / ``found``: unapproved new construction of at least 200 m² and how many
        are found, i.e. covered for at least half by one patch
        (:func:`pipeline.detection.accuracy.match_objects`); ``offfarm_targets`` /
        ``offfarm_found``: the same off farmland; ``patches``; ``false``: patches touching no
        truth object of any kind; ``seasonal_false``: false patches overlapping a seasonal
        parcel; ``area_km2``.
    """
    best, touched = match_objects(patches, truth)
    target = unapproved_construction(truth)
    offfarm = target & off_farmland(truth)
    found = best >= 0
    false = ~touched
    seasonal_hit = np.zeros(len(patches), dtype=bool)
    if len(patches) and len(seasonal):
        p_geoms = np.asarray(patches.geometry.values)
        s_geoms = np.asarray(seasonal.geometry.values)
        pi, _ = shapely.STRtree(s_geoms).query(p_geoms, predicate="intersects")
        seasonal_hit[np.unique(pi)] = True
    return {
        "targets": int(target.sum()),
        "found": int((target & found).sum()),
        "offfarm_targets": int(offfarm.sum()),
        "offfarm_found": int((offfarm & found).sum()),
        "patches": len(patches),
        "false": int(false.sum()),
        "seasonal_false": int((false & seasonal_hit).sum()),
        "area_km2": float(area_km2),
    }


def pooled_synthetic(items: Iterable[Mapping]) -> dict:
    """Recall and rates over several scenes (of :func:`synthetic_figures`): counts summed,
    then divided.

    Returns
    -------
    dict
        ``recall``, ``offfarm_recall``, ``fp_km2`` and ``seasonal_fp_km2``; NaN when
        undefined (no scene, no target).
    """
    items = list(items)

    def total(key: str) -> float:
        return float(sum(i[key] for i in items))

    return {
        "recall": _ratio(total("found"), total("targets")),
        "offfarm_recall": _ratio(total("offfarm_found"), total("offfarm_targets")),
        "fp_km2": _ratio(total("false"), total("area_km2")),
        "seasonal_fp_km2": _ratio(total("seasonal_false"), total("area_km2")),
    }


# --------------------------------------------------------------------------- summary
def mean_defined(values: Iterable[float]) -> float:
    """Mean of the values that are not NaN (NaN when none is)."""
    kept = [float(v) for v in values if not math.isnan(float(v))]
    return float(np.mean(kept)) if kept else float("nan")


def summary_line(figures: Mapping[str, float]) -> str:
    """``key=value`` for every :data:`SUMMARY_KEYS` (rates with 2 decimals, the rest 3;
    ``nan`` for a dataset that was not run)."""
    parts = []
    for key in SUMMARY_KEYS:
        value = float(figures.get(key, float("nan")))
        digits = 2 if key.endswith("_km2") else 3
        parts.append(f"{key}={value:.{digits}f}")
    return " ".join(parts)


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")
