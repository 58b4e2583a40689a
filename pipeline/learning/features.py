"""The features of a detected patch, kept in the registry so a verdict given years later can
still be learned from (table ``patch_features``, one row per patch and epoch pair).

Everything comes from data the pipeline already has at registration: the detection's band
means and score (``assigned.gpkg``), its overlay shares, its shape, the other detections
around it, the approvals layer, and two raster reads (:mod:`pipeline.learning.io.rasters`):
the score's spread and peak inside the patch, and the distance to land that already looked
built in the earlier epoch (the detector's own rules, :func:`~pipeline.detection.change_type.built_up`).

Recipe::

    feats = patch_features(detections, raster_stats, approvals=approvals)
    ids = pd.Series(summary.patch_of, index=detections.index)   # from register_detections
    state = dataclasses.replace(
        state, features=add_features(state.features, feature_rows(feats, ids, pair, run_id)))
    X = features_for(state.features, state.patches)     # one row per patch, FEATURE_NAMES
"""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from pipeline.bands import VISIBLE_BANDS, vegetation_index
from pipeline.detection.pair import mean_column
from pipeline.schema import PF, ChangeType, P

STANDARD_BANDS = ("blue", "green", "red", "nir")
"""Bands whose means are kept (others are not comparable across sensors)."""
NEIGHBOUR_RADIUS_M = 250.0
"""Radius of the neighbourhood counted by ``density_per_km2`` and ``neighbour_area_share``."""
APPROVAL_CAP_M = 2000.0
"""Distances to the nearest approval are capped here (none within: the cap)."""
RASTER_FEATURES = ("score_max", "score_std", "dist_builtup_m")
"""Columns the raster reads give (:func:`pipeline.learning.io.rasters.raster_features`)."""
CHANGE_TYPE_CODES = {ChangeType.CONSTRUCTION: 0, ChangeType.EARTHWORKS: 1, ChangeType.OTHER: 2}
"""``change_type`` as a number (a categorical feature of the classifier)."""

FEATURE_NAMES = (
    *(f"mean_from_{b}" for b in STANDARD_BANDS),
    *(f"mean_to_{b}" for b in STANDARD_BANDS),
    *(f"log_ratio_{b}" for b in STANDARD_BANDS),
    "brightness_ratio",
    "vi_from",
    "vi_to",
    "spectral_angle_deg",
    "score_mean",
    *RASTER_FEATURES[:2],
    "log_area_m2",
    "compactness",
    "elongation",
    "farmland_share",
    "basic_share",
    "approved_share",
    "change_type",
    RASTER_FEATURES[2],
    "dist_approval_m",
    "density_per_km2",
    "neighbour_area_share",
)
"""The features of a patch, in the classifier's column order; missing ones are NaN."""
CATEGORICAL = ("change_type",)
FEATURES_VERSION = 1
"""Version of how features are computed, stored in each row: a stored row is replaced only
by a row of a newer version (see :func:`add_features`)."""
FEATURES_VERSION_KEY = "features_version"


def patch_features(
    detections: gpd.GeoDataFrame,
    raster: pd.DataFrame | None = None,
    *,
    approvals: gpd.GeoSeries | None = None,
) -> pd.DataFrame:
    """The :data:`FEATURE_NAMES` of each detection (same index).

    Parameters
    ----------
    detections : GeoDataFrame
        One pair's assigned detections (projected CRS, metres): ``score``, ``change_type``,
        ``area_m2``, ``farmland_m2``, ``basic_farmland_m2``, ``approved_share`` and the band
        means ``mean_from_<band>`` / ``mean_to_<band>`` (absent ones are NaN).
    raster : DataFrame, optional
        :data:`RASTER_FEATURES` per detection (same index); NaN without.
    approvals : GeoSeries, optional
        Approved land, same CRS.
    """
    out = pd.DataFrame(index=detections.index)
    out = out.join(_spectral(detections))
    out["score_mean"] = _num(detections, P.SCORE)
    for col in RASTER_FEATURES:
        out[col] = raster[col] if raster is not None and col in raster else np.nan
    out = out.join(_shape(detections.geometry))
    area = _num(detections, P.AREA_M2)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["farmland_share"] = (_num(detections, P.FARMLAND_M2) / area).clip(0, 1)
        out["basic_share"] = (_num(detections, P.BASIC_FARMLAND_M2) / area).clip(0, 1)
    out["approved_share"] = _num(detections, P.APPROVED_SHARE)
    types = detections.get(P.CHANGE_TYPE, pd.Series(index=detections.index, dtype=object))
    out["change_type"] = types.map(CHANGE_TYPE_CODES).astype(float)
    out["dist_approval_m"] = _distance_to(detections.geometry, approvals, APPROVAL_CAP_M)
    out = out.join(_neighbourhood(detections.geometry))
    return out[list(FEATURE_NAMES)]


def _num(frame: pd.DataFrame, col: str) -> pd.Series:
    if col not in frame.columns:
        return pd.Series(np.nan, index=frame.index)
    return pd.to_numeric(frame[col], errors="coerce").astype(float)


def _spectral(det: pd.DataFrame) -> pd.DataFrame:
    """Band means, log ratios after/before, brightness ratio, vegetation index, angle."""
    out = pd.DataFrame(index=det.index)
    for when in ("from", "to"):
        for b in STANDARD_BANDS:
            out[f"mean_{when}_{b}"] = _num(det, mean_column(when, b))
    f = out[[f"mean_from_{b}" for b in STANDARD_BANDS]].to_numpy().T
    t = out[[f"mean_to_{b}" for b in STANDARD_BANDS]].to_numpy().T
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, b in enumerate(STANDARD_BANDS):
            out[f"log_ratio_{b}"] = np.log(np.maximum(t[i], 1e-6) / np.maximum(f[i], 1e-6))
        vis = len(VISIBLE_BANDS)
        out["brightness_ratio"] = t[:vis].mean(axis=0) / np.maximum(f[:vis].mean(axis=0), 1e-6)
        out["vi_from"], out["vi_to"] = _vi(f), _vi(t)
        cos = np.nansum(f * t, axis=0) / np.maximum(
            np.sqrt(np.nansum(f * f, axis=0) * np.nansum(t * t, axis=0)), 1e-12
        )
        out["spectral_angle_deg"] = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return out


def _vi(x: np.ndarray) -> np.ndarray:
    """The detector's vegetation index (rows blue, green, red, nir): NDVI where NIR is known,
    else the visible-band index."""
    ndvi = vegetation_index(x, STANDARD_BANDS)
    visible = vegetation_index(x[:3], STANDARD_BANDS[:3])
    return np.where(np.isfinite(x[3]), ndvi, visible)


def _shape(geoms: gpd.GeoSeries) -> pd.DataFrame:
    """log area, compactness (4πA/P², 1 for a disc) and elongation (long / short side of the
    minimum rotated rectangle)."""
    g = np.asarray(geoms.values)
    area = shapely.area(g)
    perimeter = shapely.length(g)
    rect = shapely.minimum_rotated_rectangle(g)
    sides = []
    for r in rect:
        xy = shapely.get_coordinates(r)
        d = np.hypot(*np.diff(xy[:3], axis=0).T) if len(xy) >= 3 else np.array([0.0, 0.0])
        sides.append(d)
    sides = np.asarray(sides, dtype=float).reshape(-1, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame(
            {
                "log_area_m2": np.log(np.maximum(area, 1.0)),
                "compactness": 4 * math.pi * area / np.maximum(perimeter, 1e-9) ** 2,
                "elongation": sides.max(axis=1) / np.maximum(sides.min(axis=1), 1e-9),
            },
            index=geoms.index,
        )


def _distance_to(geoms: gpd.GeoSeries, others: gpd.GeoSeries | None, cap: float) -> np.ndarray:
    """Distance (m) from each geometry to the nearest of ``others``, capped at ``cap``."""
    out = np.full(len(geoms), cap)
    if others is None or len(others) == 0 or len(geoms) == 0:
        return out
    tree = shapely.STRtree(np.asarray(others.values))
    (left, _), dist = tree.query_nearest(
        np.asarray(geoms.values), max_distance=cap, return_distance=True, all_matches=False
    )
    out[left] = np.minimum(dist, cap)
    return out


def _neighbourhood(geoms: gpd.GeoSeries) -> pd.DataFrame:
    """Other detections of the pair within :data:`NEIGHBOUR_RADIUS_M`: count per km² and
    their area as a share of the disc."""
    g = np.asarray(geoms.values)
    centres = shapely.centroid(g)
    tree = shapely.STRtree(g)
    left, right = tree.query(shapely.buffer(centres, NEIGHBOUR_RADIUS_M), predicate="intersects")
    others = left != right
    disc = math.pi * NEIGHBOUR_RADIUS_M**2
    count = np.bincount(left[others], minlength=len(g))
    area = np.bincount(left[others], weights=shapely.area(g[right[others]]), minlength=len(g))
    return pd.DataFrame(
        {
            "density_per_km2": count / (disc / 1e6),
            "neighbour_area_share": np.minimum(area / disc, 1),
        },
        index=geoms.index,
    )


# --------------------------------------------------------------------------- the table
def feature_rows(
    features: pd.DataFrame, patch_ids: pd.Series, pair: tuple[str, str], run_id: str
) -> pd.DataFrame:
    """Rows of the ``patch_features`` table (one per patch; of several detections that became
    one patch, the largest by area is kept whole). Non-finite values are stored as null."""
    frame = features.assign(_pid=patch_ids).dropna(subset=["_pid"])
    frame = frame.sort_values("log_area_m2", kind="stable", na_position="first")
    frame = frame.drop_duplicates("_pid", keep="last").set_index("_pid")
    values = [
        json.dumps({FEATURES_VERSION_KEY: FEATURES_VERSION}
                   | {k: (round(float(v), 6) if np.isfinite(v) else None) for k, v in row.items()})
        for row in frame[list(FEATURE_NAMES)].astype(float).to_dict("records")
    ]  # fmt: skip
    columns = {
        PF.PATCH_ID: frame.index.astype(str),
        PF.EPOCH_FROM: pair[0],
        PF.EPOCH_TO: pair[1],
        PF.RUN_ID: run_id,
        PF.VALUES: values,
    }
    return pd.DataFrame(columns)


def add_features(table: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``table`` with those of ``rows`` whose patch and pair it lacks, or holds only from an
    older :data:`FEATURES_VERSION`.

    A stored row is kept for good otherwise: a rerun of the registration (a code upgrade, a
    corrected layer) must not recompute the features of a patch already judged, or a later
    approval filed after a ``legal`` verdict would leak the verdict into its features.
    """
    key = [PF.PATCH_ID, PF.EPOCH_FROM, PF.EPOCH_TO]
    if len(table) == 0:
        return rows.reset_index(drop=True)
    current = current_rows(table)
    new = rows.merge(current[key], on=key, how="left", indicator=True)["_merge"] == "left_only"
    rows = rows[new.to_numpy()]
    replaced = table.merge(rows[key], on=key, how="left", indicator=True)["_merge"] == "both"
    return pd.concat([table[~replaced.to_numpy()], rows], ignore_index=True)


def current_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``table`` written by the current :data:`FEATURES_VERSION` (rows of an older
    one are computed again)."""
    return table[_versions(table) >= FEATURES_VERSION] if len(table) else table


def _versions(table: pd.DataFrame) -> np.ndarray:
    return np.array([json.loads(v).get(FEATURES_VERSION_KEY, 0) for v in table[PF.VALUES]])


def features_for(table: pd.DataFrame, patches: pd.DataFrame) -> pd.DataFrame:
    """One row of :data:`FEATURE_NAMES` per patch (index ``patch_id``): the row of its
    current epoch pair, else its latest one; NaN where a patch has no features."""
    ids = patches[P.PATCH_ID].astype(str)
    out = pd.DataFrame(np.nan, index=pd.Index(ids, name=P.PATCH_ID), columns=list(FEATURE_NAMES))
    if len(table) == 0:
        return out
    current = dict(zip(ids, zip(patches[P.EPOCH_FROM].astype(str),
                                patches[P.EPOCH_TO].astype(str), strict=True), strict=True))  # fmt: skip
    rows = table.assign(
        _current=[current.get(p) == (a, b) for p, a, b in
                  zip(table[PF.PATCH_ID], table[PF.EPOCH_FROM], table[PF.EPOCH_TO], strict=True)]
    ).sort_values(["_current", PF.EPOCH_TO], kind="stable")  # fmt: skip
    best = rows.groupby(PF.PATCH_ID).last()
    best = best[best.index.isin(out.index)]
    values = pd.DataFrame([json.loads(v) for v in best[PF.VALUES]], index=best.index)
    cols = [c for c in FEATURE_NAMES if c in values.columns]
    out.loc[values.index, cols] = values[cols].astype(float).to_numpy()
    return out
