"""Field photos (实地举证照片): which patch each photo of a return belongs to.

Pure: the photos read from a return (:class:`Photo`, see
:mod:`pipeline.registry.io.photo_files`) and the registry's patches in; links and the
problems to report out. Storing the files and the events is the importer's job.

Rules
-----
- A photo named ``<patch_id>_*.jpg`` (or ``<patch_id>.jpg``) belongs to that patch, if the id
  is in the registry. A name match wins over a GPS match.
- Otherwise a photo whose EXIF GPS position lies inside a patch belongs to that patch.
- The distance from the photo's position to its patch is recorded (0 inside it; None without
  GPS); a photo taken more than ``radius_m`` away is linked with a warning.
- A photo that could not be read (truncated, not a JPEG), that has neither a name match nor
  a GPS position, or whose position lies in no patch is reported and not linked.
"""

from __future__ import annotations

import dataclasses
import json
import re

import geopandas as gpd
import pandas as pd
import shapely

from pipeline.registry.store import to_json
from pipeline.schema import (
    FIELD_DATE,
    PHOTO_DISTANCE_M,
    PHOTO_FILE,
    PHOTO_MATCHED_BY,
    PHOTO_NAME,
    PHOTO_SHA256,
    PHOTO_TAKEN_AT,
    E,
    EventKind,
    P,
    PhotoMatch,
)

WGS84 = "EPSG:4326"
_LEADING_DIGITS = re.compile(r"^\d+")


@dataclasses.dataclass(frozen=True)
class Photo:
    """One photo of a return, as read."""

    name: str
    """Its file name inside the return."""
    sha256: str
    """Hex digest of its bytes (its name in the workspace)."""
    lonlat: tuple[float, float] | None = None
    """EXIF GPS position in WGS 84 degrees; None without one."""
    taken_at: str | None = None
    """EXIF time (``YYYY-MM-DDTHH:MM:SS``); None without one."""
    error: str | None = None
    """Why it could not be read; None for a good JPEG."""


@dataclasses.dataclass(frozen=True)
class PhotoLink:
    """A photo linked to a patch."""

    photo: Photo
    patch_id: str
    matched_by: str
    """``name`` or ``gps``."""
    distance_m: float | None


def link_photos(
    photos: list[Photo], patches: gpd.GeoDataFrame, *, radius_m: float
) -> tuple[list[PhotoLink], list[str]]:
    """The links of the readable photos and the problems to report (one line each: bad,
    unmatched and far photos)."""
    links, problems = [], []
    ids = set(patches[P.PATCH_ID].astype(str))
    for photo in photos:
        if photo.error:
            problems.append(f"{photo.name}: not stored, {photo.error}")
            continue
        link = _by_name(photo, ids, patches) or _by_gps(photo, patches)
        typo = None if link and link.matched_by == PhotoMatch.NAME else _unknown_id(photo, ids)
        if typo:
            problems.append(f"{photo.name}: its name begins with {typo}, which is no patch id"
                            + (f"; linked to {link.patch_id} by its GPS position" if link else ""))  # fmt: skip
        if link is None:
            why = (
                "no patch id in its name and no GPS position"
                if photo.lonlat is None
                else ("its GPS position lies in no patch")
            )
            problems.append(f"{photo.name}: belongs to no patch ({why}); not stored")
            continue
        if link.distance_m is not None and link.distance_m > radius_m:
            problems.append(
                f"{photo.name}: taken {link.distance_m:.0f} m from patch {link.patch_id} "
                f"(more than {radius_m:g} m); linked by its name, check it"
            )
        links.append(link)
    return links, problems


def _by_name(photo: Photo, ids: set[str], patches: gpd.GeoDataFrame) -> PhotoLink | None:
    """The patch whose id begins the photo's name (the longest such id)."""
    digits = _LEADING_DIGITS.match(photo.name)
    if not digits:
        return None
    lead = digits.group(0)
    known = [lead[:n] for n in range(len(lead), 0, -1) if lead[:n] in ids]
    if not known:
        return None
    geom = patches.loc[patches[P.PATCH_ID].astype(str) == known[0]].geometry
    return PhotoLink(photo, known[0], PhotoMatch.NAME.value, _distance_m(photo, geom))


def _unknown_id(photo: Photo, ids: set[str]) -> str | None:
    """The id-like number (12 digits or more) a photo's name begins with, when no patch has
    it: probably a typo, reported rather than matched by GPS in silence."""
    digits = _LEADING_DIGITS.match(photo.name)
    if (
        digits
        and len(digits.group(0)) >= 12
        and not any(digits.group(0).startswith(i) for i in ids)
    ):
        return digits.group(0)
    return None


def _by_gps(photo: Photo, patches: gpd.GeoDataFrame) -> PhotoLink | None:
    if photo.lonlat is None or patches.crs is None:
        return None
    point = gpd.GeoSeries([shapely.Point(photo.lonlat)], crs=WGS84).to_crs(patches.crs).iloc[0]
    inside = patches[patches.geometry.contains(point)]
    if inside.empty:
        return None
    return PhotoLink(photo, str(inside[P.PATCH_ID].iloc[0]), PhotoMatch.GPS.value, 0.0)


def _distance_m(photo: Photo, geom: gpd.GeoSeries) -> float | None:
    """Metres from the photo's position to the patch (in the patches' projected CRS)."""
    if photo.lonlat is None or geom.crs is None or not geom.crs.is_projected:
        return None
    point = gpd.GeoSeries([shapely.Point(photo.lonlat)], crs=WGS84).to_crs(geom.crs).iloc[0]
    return float(geom.iloc[0].distance(point))


def photo_events(
    events: pd.DataFrame, links: list[PhotoLink], *, source: str, stored: dict[str, str]
) -> list[dict]:
    """A ``photo`` event per link not already in ``events`` (same patch, same photo hash):
    the stored file (``stored``: hash -> path relative to the workspace), the name it came
    with, how it was matched, the distance and the EXIF time."""
    seen = set()
    for pid, text in zip(
        events.loc[events[E.KIND] == EventKind.PHOTO, E.PATCH_ID],
        events.loc[events[E.KIND] == EventKind.PHOTO, E.VALUES],
        strict=True,
    ):
        seen.add((pid, json.loads(text).get(PHOTO_SHA256)))
    out = []
    for link in links:
        if (link.patch_id, link.photo.sha256) in seen:
            continue
        seen.add((link.patch_id, link.photo.sha256))
        values = {
            PHOTO_FILE: stored[link.photo.sha256],
            PHOTO_SHA256: link.photo.sha256,
            PHOTO_NAME: link.photo.name,
            PHOTO_MATCHED_BY: link.matched_by,
            PHOTO_DISTANCE_M: None if link.distance_m is None else round(link.distance_m, 1),
            PHOTO_TAKEN_AT: link.photo.taken_at,
            # the day in the history is the day it was taken (else the import's)
            FIELD_DATE: link.photo.taken_at[:10] if link.photo.taken_at else None,
        }
        out.append({E.PATCH_ID: link.patch_id, E.KIND: EventKind.PHOTO.value, E.SOURCE: source,
                    E.VALUES: to_json(values)})  # fmt: skip
    return out
