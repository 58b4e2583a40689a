"""Accuracy of a run against labelled data: pixel and object scores (pure).

Pixel scores compare a change mask with a label mask where both are valid; object scores
compare patches with labelled change polygons: a labelled object is *hit* when a patch
covers at least ``min_cover`` of it, and a patch is *false* when it touches no labelled
object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import geopandas as gpd
import numpy as np
import shapely


@dataclass(frozen=True)
class PixelScores:
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    f1: float
    iou: float
    kappa: float

    def as_dict(self) -> dict:
        return asdict(self)


def pixel_scores(
    predicted: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None
) -> PixelScores:
    """Precision, recall, F1, IoU and Cohen's kappa of a boolean change mask.

    Notes
    -----
    Undefined ratios (no predicted or no true change) are NaN, not 0.
    """
    predicted = np.asarray(predicted, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if predicted.shape != truth.shape:
        raise ValueError(f"mask shapes differ: predicted {predicted.shape}, truth {truth.shape}")
    if valid is not None:
        predicted, truth = predicted[valid], truth[valid]
    tp = int(np.count_nonzero(predicted & truth))
    fp = int(np.count_nonzero(predicted & ~truth))
    fn = int(np.count_nonzero(~predicted & truth))
    tn = int(predicted.size - tp - fp - fn)
    n = tp + fp + fn + tn
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    iou = _ratio(tp, tp + fp + fn)
    observed = (tp + tn) / n if n else np.nan
    expected = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n) if n else np.nan
    kappa = _ratio(observed - expected, 1 - expected) if n else np.nan
    return PixelScores(tp, fp, fn, tn, precision, recall, f1, iou, kappa)


@dataclass(frozen=True)
class ObjectScores:
    n_truth: int
    n_hit: int
    hit_rate: float
    n_patches: int
    n_false: int
    area_km2: float
    false_per_km2: float

    def as_dict(self) -> dict:
        return asdict(self)


def match_objects(
    patches: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, *, min_cover: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """For each truth object, the index (position) of the patch covering most of it or -1 when
    no patch covers ``min_cover`` of it; and for each patch whether it touches any truth object."""
    t_geoms = np.asarray(truth.geometry.values)
    p_geoms = np.asarray(patches.geometry.values)
    best = np.full(len(t_geoms), -1, dtype=np.intp)
    touched = np.zeros(len(p_geoms), dtype=bool)
    if len(t_geoms) == 0 or len(p_geoms) == 0:
        return best, touched
    ti, pi = shapely.STRtree(p_geoms).query(t_geoms, predicate="intersects")
    touched[np.unique(pi)] = True
    cover = shapely.area(shapely.intersection(t_geoms[ti], p_geoms[pi])) / shapely.area(t_geoms[ti])
    order = np.lexsort((-cover, ti))  # per truth object, largest cover first
    ti, pi, cover = ti[order], pi[order], cover[order]
    first = np.r_[True, ti[1:] != ti[:-1]]
    keep = first & (cover >= min_cover)
    best[ti[keep]] = pi[keep]
    return best, touched


def object_scores(
    patches: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, *, area_km2: float, min_cover: float = 0.5
) -> ObjectScores:
    """Object-level hit rate and false patches per km² (see :func:`match_objects`)."""
    best, touched = match_objects(patches, truth, min_cover=min_cover)
    n_hit = int(np.count_nonzero(best >= 0))
    n_false = int(np.count_nonzero(~touched))
    return ObjectScores(
        n_truth=len(truth),
        n_hit=n_hit,
        hit_rate=_ratio(n_hit, len(truth)),
        n_patches=len(patches),
        n_false=n_false,
        area_km2=area_km2,
        false_per_km2=n_false / area_km2 if area_km2 else np.nan,
    )


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")
