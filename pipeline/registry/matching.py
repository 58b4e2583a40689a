"""Register detections in the patch registry: match, keep ids stable, append events.

Pure: a :class:`~pipeline.registry.store.RegistryState` and a detections GeoDataFrame in, a new
state and a :class:`RegisterSummary` out. Nothing is read or written here.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely

from pipeline.epochs import epoch_later
from pipeline.errors import RegistryError, StageError
from pipeline.registry.store import (
    RegistryState,
    append_events,
    normalise_patches,
    patch_values,
    same_patch_values,
    to_json,
)
from pipeline.schema import (
    DERIVED_COLUMNS,
    DETECTION_INPUT_COLUMNS,
    EVENT_BEFORE_SUFFIX,
    E,
    EventKind,
    P,
    Verdict,
)

log = logging.getLogger(__name__)

GROWTH_FACTOR = 1.10
"""A matched detection larger than ``GROWTH_FACTOR`` x the patch area is ``grown``."""

SERIAL_DIGITS = 5


@dataclasses.dataclass(frozen=True)
class RegisterSummary:
    """What one registration did (counts go to the run record)."""

    n_new: int = 0
    n_redetected: int = 0
    n_grown: int = 0
    n_relapse: int = 0
    n_reassessed: int = 0
    """Patches whose derived attributes (:data:`~pipeline.schema.DERIVED_COLUMNS`) changed
    because the detection of their own period carries other values (a corrected layer)."""
    n_unchanged: int = 0
    """Matched detections of a period already registered (re-runs): nothing changed."""
    n_absorbed: int = 0
    """Detections that matched a patch already updated by a better-overlapping detection."""
    new_ids: tuple[str, ...] = ()
    patch_of: tuple[str | None, ...] = ()
    """The patch each input detection (by position) became or updated, or was absorbed into;
    None for a detection without geometry."""

    def as_dict(self) -> dict[str, int]:
        """Counts only, for ``runs.counts_json``."""
        return {
            "new": self.n_new,
            "redetected": self.n_redetected,
            "grown": self.n_grown,
            "relapse": self.n_relapse,
            "reassessed": self.n_reassessed,
            "unchanged": self.n_unchanged,
            "absorbed": self.n_absorbed,
        }


def register_detections(
    state: RegistryState,
    detections: gpd.GeoDataFrame,
    *,
    run_id: str,
    now: str,
    county_code: str,
    match_overlap: float = 0.3,
) -> tuple[RegistryState, RegisterSummary]:
    """Match detections to existing patches, create new patches, append events.

    Parameters
    ----------
    state : RegistryState
        The current registry (not modified).
    detections : geopandas.GeoDataFrame
        Classified and assigned detections in the registry CRS, with every column of
        :data:`DETECTION_INPUT_COLUMNS` and a geometry.
    run_id : str
        Recorded as ``source`` and ``run_id`` of every event.
    now : str
        ISO-8601 UTC time of the run (``updated_at`` and event ``time``); its first four
        characters are the id year when ``epoch_to`` does not start with a year.
    county_code : str
        6-digit county code, the prefix of new patch ids.
    match_overlap : float
        A detection matches a patch when ``intersection / min(area_det, area_patch)`` is at
        least this; among several matches the largest ratio wins.

    Returns
    -------
    (RegistryState, RegisterSummary)
        The new state (patches updated/added, events appended) and the counts.

    Notes
    -----
    - **Ids.** New patch ids are ``{county6}{year4}{serial5}``; the serial is one more than
      the highest ever issued for that county and year (patch ids in the events table count
      too, so a deleted patch's id is never reused). New detections are numbered in a
      deterministic order: centroid y descending (north first), then x ascending.
    - **Matching** uses planar areas in the registry CRS (a projected CRS in metres; only
      ratios are compared). Each detection picks its best patch; when several detections
      pick the same patch, the best one updates it and the others are *absorbed* (a
      fragmented patch does not spawn new ids).
    - **Updates.** A detection of a later period than the patch's ``last_seen`` updates
      ``epoch_from``, ``epoch_to``, ``last_seen``, ``score`` and ``change_type``
      (event ``redetected``). If its area exceeds the patch's by more than 10 % the patch
      takes the detection's geometry, ``area_m2`` and ``area_mu`` (event ``grown``, with old
      and new area; ``score`` and ``change_type`` too when the detection is of the patch's
      own period). A rectified illegal patch (``remaining_m2 == 0``) detected again is a
      ``relapse``: ``remaining_m2`` becomes the detected area (capped at the patch area) and
      the enforcement starts over (``enforcement_stage``, ``stage_date``, ``demolished_by`` are
      emptied; the event keeps the values before).
      The verdict is never changed by detection; the remaining area of an unrectified
      illegal patch is not changed by growth (the grown part awaits a field check).
    - **Derived attributes follow the inputs.** When the matched detection is of the
      patch's own period (its ``epoch_from`` and ``epoch_to``, after the updates above), the
      patch takes the detection's :data:`~pipeline.schema.DERIVED_COLUMNS` (township and
      village, shares, farmland, basic-farmland and approved areas, approval refs, hint), so
      a corrected layer that reran classify and assign reaches the registry. A detection of
      an older period never overwrites them. Each changed column is recorded in the
      patch's event of this run as ``c`` (new) and ``c_before`` (old): in its
      ``redetected``/``grown``/``relapse`` event, or else in a ``reassessed`` event — one
      event per patch and run. Verdicts, field values, ids and history are kept.
    - **Re-runs are idempotent.** A detection whose ``epoch_to`` is not later than the
      patch's ``last_seen`` (the same or an older period) changes nothing, unless it shows
      the patch grown (then only the geometry/measures update, event ``grown``) or carries
      other derived attributes (event ``reassessed``). Registering the same detections twice
      therefore adds no event the second time.
    - Epoch labels are compared as text, so they must sort chronologically (``"2016"``,
      ``"2017"``, or ``"2017-06"``...).
    """
    _check_inputs(state, detections, county_code, match_overlap)
    det, positions = _clean_detections(detections)
    patches = state.patches
    det_geoms = det.geometry.to_numpy()
    pat_geoms = patches.geometry.to_numpy()

    best = _match(det_geoms, pat_geoms, match_overlap)
    matched = best.drop_duplicates("pat", keep="first")  # best detection per patch
    n_absorbed = len(best) - len(matched)
    new_rows = np.setdiff1d(np.arange(len(det)), best["det"].to_numpy())

    new_patches, events, counts = _update_matched(patches, det, matched, now)
    created, new_ids = _new_patches(det.iloc[new_rows], state, county_code, now)
    patch_of: list[str | None] = [None] * len(detections)
    pat_ids = patches[P.PATCH_ID].astype(str).to_numpy()
    for d, p in zip(best["det"].to_numpy(), best["pat"].to_numpy(), strict=True):
        patch_of[positions[d]] = pat_ids[p]
    for d, pid in zip(new_rows, new_ids, strict=True):
        patch_of[positions[d]] = pid
    events += [_detected_event(row) for _, row in created.iterrows()]
    all_patches = normalise_patches(
        pd.concat([new_patches, created], ignore_index=True) if len(created) else new_patches
    )
    new_state = dataclasses.replace(
        state,
        patches=all_patches,
        events=append_events(state.events, events, run_id=run_id, now=now),
    )
    summary = RegisterSummary(
        n_new=len(created),
        n_redetected=counts["redetected"],
        n_grown=counts["grown"],
        n_relapse=counts["relapse"],
        n_reassessed=counts["reassessed"],
        n_unchanged=counts["unchanged"],
        n_absorbed=n_absorbed,
        new_ids=tuple(sorted(new_ids)),
        patch_of=tuple(patch_of),
    )
    log.info("register %s: %s", run_id, summary.as_dict())
    return new_state, summary


def patch_id_serials(ids: pd.Series, county_code: str) -> pd.DataFrame:
    """Split well-formed patch ids of one county into ``year`` (text) and ``serial`` (int).

    Ids of other counties or of another shape are left out.
    """
    text = pd.Series(ids, dtype="str").dropna()
    parts = text.str.extract(rf"^{re.escape(county_code)}(\d{{4}})(\d{{{SERIAL_DIGITS}}})$")
    parts = parts.dropna()
    return pd.DataFrame({"year": parts[0].astype("str"), "serial": parts[1].astype("int64")})


# --------------------------------------------------------------------------- internals
def _check_inputs(state, detections, county_code, match_overlap) -> None:
    if not isinstance(detections, gpd.GeoDataFrame):
        raise StageError(
            f"register: detections must be a GeoDataFrame, found {type(detections).__name__}"
        )
    missing = [c for c in DETECTION_INPUT_COLUMNS if c not in detections.columns]
    if missing:
        raise StageError(
            f"register: detections lack column(s) {', '.join(missing)}; they must carry every "
            "patch column set by classify and assign (run those stages first)"
        )
    if not re.fullmatch(r"\d{6}", str(county_code)):
        raise StageError(f"register: county_code {county_code!r} must be 6 digits, e.g. '130609'")
    if not 0 < match_overlap <= 1:
        raise StageError(f"register: match_overlap = {match_overlap} must be in (0, 1]")
    if (
        len(detections)
        and state.patches.crs is not None
        and (detections.crs is None or not pyproj.CRS(detections.crs).equals(state.patches.crs))
    ):
        raise StageError(
            f"register: detections are in {detections.crs}, the registry in "
            f"{state.patches.crs}; reproject the detections to the target CRS first"
        )


def _clean_detections(detections: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """The detections with a geometry (renumbered), and the input position of each."""
    det = detections.reset_index(drop=True)
    geoms = det.geometry.to_numpy()
    bad = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if bad.any():
        log.warning("register: ignoring %d detection(s) with an empty geometry", int(bad.sum()))
        det = det.loc[~bad].reset_index(drop=True)
    return det, np.flatnonzero(~bad)


def _match(det_geoms: np.ndarray, pat_geoms: np.ndarray, match_overlap: float) -> pd.DataFrame:
    """Best existing patch per detection: columns ``det``, ``pat``, ``ratio``, ``inter``.

    Sorted so that for each patch the first row is its best detection.
    """
    empty = pd.DataFrame({"det": [], "pat": [], "ratio": [], "inter": []}, dtype="float64")
    if len(det_geoms) == 0 or len(pat_geoms) == 0:
        return empty.astype({"det": "int64", "pat": "int64"})
    tree = shapely.STRtree(pat_geoms)
    d_idx, p_idx = tree.query(det_geoms, predicate="intersects")
    inter = shapely.area(shapely.intersection(det_geoms[d_idx], pat_geoms[p_idx]))
    smaller = np.minimum(shapely.area(det_geoms[d_idx]), shapely.area(pat_geoms[p_idx]))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(smaller > 0, inter / smaller, 0.0)
    pairs = pd.DataFrame({"det": d_idx, "pat": p_idx, "ratio": ratio, "inter": inter})
    pairs = pairs[pairs["ratio"] >= match_overlap]
    # ties broken by intersection area, then by the lower index: deterministic
    best = pairs.sort_values(
        ["det", "ratio", "inter", "pat"], ascending=[True, False, False, True]
    ).drop_duplicates("det", keep="first")
    return best.sort_values(
        ["pat", "ratio", "inter", "det"], ascending=[True, False, False, True]
    ).reset_index(drop=True)


def _update_patch(
    patches: gpd.GeoDataFrame, geoms: np.ndarray, p: int, d: pd.Series, now: str
) -> tuple[EventKind | None, dict[str, Any]]:
    """Apply detection ``d`` to row ``p`` of ``patches`` and ``geoms`` (private copies)."""
    old_area = float(patches.at[p, P.AREA_M2])
    new_area = float(d[P.AREA_M2])
    grown = new_area > GROWTH_FACTOR * old_area
    later = epoch_later(d[P.EPOCH_TO], patches.at[p, P.LAST_SEEN])
    if not later and not grown:
        return None, {}
    values: dict[str, Any] = {}
    if later:
        values.update({P.LAST_SEEN + EVENT_BEFORE_SUFFIX: patches.at[p, P.LAST_SEEN]})
        for col in (P.EPOCH_FROM, P.EPOCH_TO, P.SCORE, P.CHANGE_TYPE):
            patches.at[p, col] = d[col]
            values[col] = d[col]
        patches.at[p, P.LAST_SEEN] = d[P.EPOCH_TO]
        values[P.LAST_SEEN] = d[P.EPOCH_TO]
    kind = EventKind.REDETECTED
    if grown:
        kind = EventKind.GROWN
        for col in (P.AREA_M2, P.AREA_MU):
            patches.at[p, col] = d[col]
        if _own_period(patches, p, d):  # never an older period's score over a newer one
            for col in (P.SCORE, P.CHANGE_TYPE):
                patches.at[p, col] = d[col]
        geoms[p] = d.geometry
        values.update({P.AREA_M2 + EVENT_BEFORE_SUFFIX: old_area, P.AREA_M2: new_area})
    remaining = patches.at[p, P.REMAINING_M2]
    if later and patches.at[p, P.VERDICT] == Verdict.ILLEGAL and remaining == 0:
        kind = EventKind.RELAPSE
        reopened = min(new_area, float(patches.at[p, P.AREA_M2]))
        patches.at[p, P.REMAINING_M2] = reopened
        values.update({P.REMAINING_M2 + EVENT_BEFORE_SUFFIX: 0.0, P.REMAINING_M2: reopened})
        for col in (P.ENFORCEMENT_STAGE, P.STAGE_DATE, P.DEMOLISHED_BY):  # enforcement restarts
            values.update({col + EVENT_BEFORE_SUFFIX: patches.at[p, col], col: None})
            patches.at[p, col] = np.nan
    patches.at[p, P.UPDATED_AT] = now
    return kind, values


def _update_matched(
    patches: gpd.GeoDataFrame, det: gpd.GeoDataFrame, matched: pd.DataFrame, now: str
) -> tuple[gpd.GeoDataFrame, list[dict[str, Any]], dict[str, int]]:
    """Apply each patch's best detection: the updated patches, one event per changed patch
    and the counts per kind (``unchanged`` for the rest)."""
    new_patches = patches.copy()
    geoms = patches.geometry.to_numpy().copy()  # updated in place for grown patches
    d_idx, p_idx = matched["det"].to_numpy(), matched["pat"].to_numpy()
    updates = {
        int(p): _update_patch(new_patches, geoms, int(p), det.iloc[int(d)], now)
        for d, p in zip(d_idx, p_idx)
    }
    derived = _reassess(new_patches, det, d_idx, p_idx, now)  # after updates: own periods
    events: list[dict[str, Any]] = []
    counts = {"redetected": 0, "grown": 0, "relapse": 0, "reassessed": 0, "unchanged": 0}
    for p in p_idx:
        kind, values = updates[int(p)]
        changed = derived.get(int(p), {})
        if kind is None and not changed:
            counts["unchanged"] += 1
            continue
        if changed:
            counts["reassessed"] += 1
        if kind is None:
            kind = EventKind.REASSESSED
        else:
            counts[kind.value] += 1
        pid = new_patches.at[int(p), P.PATCH_ID]
        events.append(_event(pid, kind, {**values, **changed}))
    new_patches = new_patches.set_geometry(gpd.GeoSeries(geoms, crs=patches.crs))
    return new_patches, events, counts


def _detected_event(row: pd.Series) -> dict[str, Any]:
    return _event(
        row[P.PATCH_ID],
        EventKind.DETECTED,
        {
            P.EPOCH_FROM: row[P.EPOCH_FROM],
            P.EPOCH_TO: row[P.EPOCH_TO],
            P.AREA_M2: row[P.AREA_M2],
            P.SCORE: row[P.SCORE],
            P.CHANGE_TYPE: row[P.CHANGE_TYPE],
            P.TOWNSHIP_CODE: row[P.TOWNSHIP_CODE],
            P.VILLAGE_CODE: row[P.VILLAGE_CODE],
            P.VERDICT: Verdict.PENDING.value,
        },
    )


def _own_period(patches: gpd.GeoDataFrame, p: int, d: pd.Series) -> bool:
    """Whether detection ``d`` is of the period that row ``p`` was last seen in."""
    return (str(d[P.EPOCH_FROM]), str(d[P.EPOCH_TO])) == (
        str(patches.at[p, P.EPOCH_FROM]),
        str(patches.at[p, P.EPOCH_TO]),
    )


def _reassess(
    patches: gpd.GeoDataFrame, det: gpd.GeoDataFrame, d_idx: np.ndarray, p_idx: np.ndarray, now: str
) -> dict[int, dict[str, Any]]:
    """Copy the derived attributes of each matched detection ``det[d]`` of its patch's own
    period to the patch ``patches[p]`` (a private copy, changed in place).

    Returns row ``p`` -> event values of the columns that changed (``c`` and ``c_before``).
    """
    epochs = [P.EPOCH_FROM, P.EPOCH_TO]
    own = (
        patches[epochs].astype("str").to_numpy()[p_idx]
        == det[epochs].astype("str").to_numpy()[d_idx]
    ).all(axis=1)
    d_idx, p_idx = d_idx[own], p_idx[own]
    changes: dict[int, dict[str, Any]] = {}
    for col in DERIVED_COLUMNS:
        old = patches[col].to_numpy()[p_idx]
        new = patch_values(col, det[col].to_numpy()[d_idx])
        differ = ~same_patch_values(col, old, new)
        if not differ.any():
            continue
        rows = p_idx[differ]
        patches.loc[patches.index[rows], col] = new[differ]
        for p, before, after in zip(rows, old[differ], new[differ], strict=True):
            changes.setdefault(int(p), {}).update(
                {col: after, f"{col}{EVENT_BEFORE_SUFFIX}": before}
            )
    if changes:
        patches.loc[patches.index[list(changes)], P.UPDATED_AT] = now
    return changes


def _new_patches(
    det: gpd.GeoDataFrame, state: RegistryState, county_code: str, now: str
) -> tuple[gpd.GeoDataFrame, list[str]]:
    if len(det) == 0:
        return det.iloc[0:0], []
    cent = shapely.centroid(det.geometry.to_numpy())
    order = np.lexsort(
        (det[P.AREA_M2].to_numpy(dtype="float64"), shapely.get_x(cent), -shapely.get_y(cent))
    )
    det = det.iloc[order].reset_index(drop=True)
    epoch_year = det[P.EPOCH_TO].astype("str").str[:4]
    year = epoch_year.where(epoch_year.str.fullmatch(r"\d{4}"), now[:4])
    used = patch_id_serials(
        pd.concat([state.patches[P.PATCH_ID], state.events[E.PATCH_ID]], ignore_index=True),
        county_code,
    )
    highest = used.groupby("year")["serial"].max()
    serial = year.map(highest).fillna(0).astype("int64") + year.groupby(year).cumcount() + 1
    if (serial >= 10**SERIAL_DIGITS).any():
        raise RegistryError(
            f"patch id serials for county {county_code} exceed {10**SERIAL_DIGITS - 1} in one "
            "year; the id format {county6}{year4}{serial5} cannot hold more patches"
        )
    ids = county_code + year + serial.astype("str").str.zfill(SERIAL_DIGITS)
    created = gpd.GeoDataFrame(
        {c: det[c] for c in DETECTION_INPUT_COLUMNS},
        geometry=det.geometry.to_numpy(),
        crs=state.patches.crs or det.crs,
    )
    created[P.PATCH_ID] = ids.to_numpy()
    created[P.VERDICT] = Verdict.PENDING.value
    created[P.FIRST_SEEN] = det[P.EPOCH_TO].to_numpy()
    created[P.LAST_SEEN] = det[P.EPOCH_TO].to_numpy()
    created[P.UPDATED_AT] = now
    for col in (P.VERDICT_SUBTYPE, P.RECT_METHOD, P.CHECKED_ON, P.INSPECTOR, P.NOTE):
        created[col] = np.nan
    for col in (P.ENFORCEMENT_STAGE, P.STAGE_DATE, P.DEMOLISHED_BY):
        created[col] = np.nan
    created[P.REMAINING_M2] = np.nan
    in_input_order = np.empty(len(order), dtype=object)
    in_input_order[order] = ids.to_numpy()  # the ids of the detections as they were given
    return normalise_patches(created), in_input_order.tolist()


def _event(patch_id: str, kind: EventKind, values: dict[str, Any]) -> dict[str, Any]:
    return {E.PATCH_ID: patch_id, E.KIND: kind.value, E.VALUES: to_json(values)}
