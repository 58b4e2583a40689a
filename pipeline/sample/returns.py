"""Simulated field returns for the sample: what township teams would report about the
registered patches, judged against the sample's ground truth, in two rounds.

Pure: the registry's patches and the sample's truth in, one return table per township and
round out (Chinese headers and values, as townships write them).

- **Verdict** (round 1): a patch overlapping a new object of the truth by at least
  :data:`MATCH_SHARE` of its area is ``legal`` when the object is of kind ``legal`` (fully
  approved), a false change when it is a decoy (``temporary`` film tunnels or a ``spoil``
  heap: the team finds no construction) and ``illegal`` for every other kind (illegal,
  partly approved, off farmland, earthworks); any other patch is a false change.
- **Enforcement** of an illegal patch follows one of the practice's paths, chosen from its id
  (the same every time): round 1 gives the first step, round 2 the outcome and the remaining
  area (0 when rectified). Most cases end in self-demolition after guidance, some are
  legalized, a few go through a case, a penalty or the court, some are still open.
- **Photos** (实地举证照片): a SYNTHETIC JPEG per judged row for about half of the patches,
  named ``<patch_id>_1.jpg`` (linked by its name), and for about a quarter named as a phone
  names it (``IMG_20170620_093012.jpg``, linked by its EXIF GPS position only); the rest get
  none (see :func:`photo_kind`). Each photo shows what the team found (a building, bare soil
  after demolition, a field for a false change), is dated ``checked_on`` in its EXIF and
  positioned at the patch's representative point.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from PIL import ExifTags, Image, ImageDraw, ImageFont

from pipeline.sample.scene import DECOY_KINDS, Kind
from pipeline.schema import (
    CHINESE_LABELS,
    COLUMN_LABELS,
    VALUE_ALIASES,
    EnforcementStage,
    P,
    PhotoMatch,
    T,
    Verdict,
)

MATCH_SHARE = 0.2
"""Share of a patch's area a truth object must cover to be what the patch found."""


S = EnforcementStage
PATHS: tuple[tuple[int, S, S | None], ...] = (
    (60, S.NOTIFIED, S.SELF_DEMOLISHED),
    (10, S.NOTIFIED, S.LEGALIZED),
    (8, S.CASE_FILED, S.SELF_DEMOLISHED),
    (7, S.COURT, S.FORCED_DEMOLISHED),
    (5, S.PENALTY_DECIDED, S.CONFISCATED),
    (10, S.NOTIFIED, S.CASE_FILED),
)
"""(weight in %, round-1 step, round-2 step) of the enforcement paths; the last one is a
case still open after round 2."""

_DONE = frozenset({S.SELF_DEMOLISHED, S.FORCED_DEMOLISHED, S.LEGALIZED, S.CONFISCATED})


def verdicts(patches: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> pd.Series:
    """The verdict a field team finds for each patch (index as ``patches``)."""
    truth = truth.to_crs(patches.crs)[[T.KIND, "geometry"]]
    pairs = gpd.sjoin(patches[["geometry"]], truth, predicate="intersects", how="inner")
    out = pd.Series(Verdict.FALSE_CHANGE.value, index=patches.index)
    if pairs.empty:
        return out
    inter = shapely.intersection(
        pairs.geometry.to_numpy(), truth.geometry.loc[pairs["index_right"]].to_numpy()
    )
    pairs["_share"] = shapely.area(inter) / patches.geometry.area.loc[pairs.index].to_numpy()
    best = pairs[pairs["_share"] >= MATCH_SHARE].sort_values("_share").groupby(level=0).last()
    kind = best[T.KIND]
    out.loc[kind.index] = kind.map(_verdict_of)
    return out


def _verdict_of(kind: str) -> str:
    """What a field team finds at a new object of ``kind`` (a truth kind)."""
    if kind == Kind.LEGAL:
        return Verdict.LEGAL.value
    if kind in DECOY_KINDS:
        return Verdict.FALSE_CHANGE.value
    return Verdict.ILLEGAL.value


def enforcement_path(patch_id: str) -> tuple[S, S | None]:
    """The (round 1, round 2) steps of an illegal patch, chosen from a hash of its id."""
    roll = int(hashlib.sha256(patch_id.encode()).hexdigest()[:8], 16) % 100
    for weight, first, second in PATHS:
        if roll < weight:
            return first, second
        roll -= weight
    return PATHS[-1][1], PATHS[-1][2]  # pragma: no cover - weights sum to 100


ROUND2_SPREAD_DAYS = 45
"""Round 2 reports steps taken on the days up to this many days before its date (teams
report what happened since round 1, not all on one day)."""


def _spread(patch_id: str) -> int:
    """Days before the round-2 date that the patch's step happened (from a hash of its id)."""
    return int(hashlib.sha256(patch_id.encode()).hexdigest()[8:12], 16) % (ROUND2_SPREAD_DAYS + 1)


def round_rows(
    patches: gpd.GeoDataFrame, found: pd.Series, *, round_no: int, day: dt.date
) -> pd.DataFrame:
    """The return rows of one round (canonical columns, Chinese values): round 1 judges
    every patch on ``day`` and gives the first step of each illegal one; round 2 reports the
    outcome of the illegal ones, each dated up to :data:`ROUND2_SPREAD_DAYS` before ``day``
    (keep round 2 at least that long after round 1)."""
    rows = []
    for idx, pid in patches[P.PATCH_ID].items():
        verdict = found[idx]
        row = {P.PATCH_ID: pid, P.TOWNSHIP_CODE: patches.at[idx, P.TOWNSHIP_CODE]}
        if verdict != Verdict.ILLEGAL:
            if round_no == 1:
                rows.append(row | {P.VERDICT: CHINESE_LABELS[Verdict(verdict)],
                                   P.CHECKED_ON: day.isoformat()})  # fmt: skip
            continue
        step = enforcement_path(str(pid))[round_no - 1]
        remaining = 0.0 if step in _DONE else float(patches.at[idx, P.AREA_M2])
        done_on = day - dt.timedelta(days=_spread(str(pid)) if round_no == 2 else 0)
        rows.append(row | {
            P.VERDICT: CHINESE_LABELS[Verdict.ILLEGAL],
            P.ENFORCEMENT_STAGE: CHINESE_LABELS.get(step.value, step.value),
            P.STAGE_DATE: done_on.isoformat(),
            P.REMAINING_M2: f"{remaining:.2f}",
            P.CHECKED_ON: done_on.isoformat(),
            P.INSPECTOR: "样例核查员",
        })  # fmt: skip
    return pd.DataFrame(rows)


def township_files(rows: pd.DataFrame, round_no: int) -> dict[str, pd.DataFrame]:
    """File name -> the rows of one township, headed with the Chinese column labels as a
    township would write them (``图斑编号``, ``核实认定意见``, ...)."""
    out = {}
    if rows.empty:
        return out
    for code, group in rows.groupby(P.TOWNSHIP_CODE, sort=True):
        table = group.drop(columns=P.TOWNSHIP_CODE)
        table = table.rename(columns={c: _header(c) for c in table.columns})
        out[table_name(code, round_no)] = table
    return out


def table_name(township_code: str, round_no: int) -> str:
    """The file name of a township's return table in a round (``{code}_第1轮核查.csv``)."""
    return f"{township_code}_第{round_no}轮核查.csv"


def _header(column: str) -> str:
    zh = COLUMN_LABELS[column][1]
    return zh.replace("(平方米)", "") if column == P.REMAINING_M2 else zh


# --------------------------------------------------------------------------- photos
PHOTO_SIZE = (960, 720)
"""Width and height of a simulated field photo, in pixels."""
PHOTO_QUALITY = 80
"""JPEG quality of the simulated photos (each stays well below 150 KB)."""
PHOTO_CAMERA = "landwatch sample (SYNTHETIC)"
"""EXIF camera model of the simulated photos, which are drawings, not real photos."""
WGS84 = "EPSG:4326"

NAMED, GPS_ONLY = PhotoMatch.NAME.value, PhotoMatch.GPS.value
"""How a simulated photo can be linked to its patch: by its name, or by its GPS only."""

_DEMOLISHED = frozenset({S.SELF_DEMOLISHED, S.FORCED_DEMOLISHED})
_SKY = ((96, 146, 212), (206, 222, 236))
"""Sky colour at the top and at the horizon."""
_GROUND = {"soil": ((170, 152, 118), (112, 92, 66)), "crop": ((120, 150, 80), (62, 104, 44))}
"""Ground colour at the horizon and at the bottom, for bare soil and for a cropped field."""


def _roll(patch_id: str, salt: str) -> int:
    """A number from a hash of the patch id (salted: independent of the other rolls)."""
    return int(hashlib.sha256(f"{salt}:{patch_id}".encode()).hexdigest()[:8], 16)


def photo_kind(patch_id: str) -> str | None:
    """How the photo of a patch is named, chosen from a hash of its id (the same every time).

    Returns
    -------
    str or None
        :data:`NAMED` for about half the patches (``<patch_id>_1.jpg``), :data:`GPS_ONLY` for
        about a quarter (a phone camera's name, ``IMG_<date>_<time>.jpg``), None for the rest
        (no photo).
    """
    roll = _roll(patch_id, "photo") % 4
    return NAMED if roll < 2 else GPS_ONLY if roll == 2 else None


def taken_at(patch_id: str, day: dt.date) -> dt.datetime:
    """When the photo of a patch was taken: on ``day``, between 09:00 and 17:00 (the time
    from a hash of its id)."""
    seconds = _roll(patch_id, "time") % (8 * 3600)
    return dt.datetime.combine(day, dt.time(9)) + dt.timedelta(seconds=seconds)


def photo_points(patches: gpd.GeoDataFrame) -> dict[str, tuple[float, float]]:
    """Patch id -> WGS 84 (lon, lat) of its representative point (a point inside it), where
    its photo is taken. Patches without a geometry are left out."""
    points = patches.geometry.representative_point().to_crs(WGS84)
    return {
        str(pid): (point.x, point.y)
        for pid, point in zip(patches[P.PATCH_ID], points, strict=True)
        if point is not None and not point.is_empty
    }


def township_photos(
    rows: pd.DataFrame, patches: gpd.GeoDataFrame, round_no: int
) -> dict[str, dict[str, bytes]]:
    """The photos of a round's return rows (:func:`round_rows`), by township.

    Parameters
    ----------
    rows : pandas.DataFrame
        The rows of the round (canonical columns, Chinese values).
    patches : geopandas.GeoDataFrame
        The registry's patches (in a CRS): where the photos are taken.
    round_no : int
        The round, for the table names.

    Returns
    -------
    dict
        Table file name (the keys of :func:`township_files`) -> photo entry name -> JPEG bytes
        (:func:`field_photo`). Only judged rows (not pending) of patches that
        :func:`photo_kind` gives a photo have one; phone-camera names taken at the same
        second get ``_1``, ``_2``, ... as a phone names them.
    """
    points = photo_points(patches)
    out: dict[str, dict[str, bytes]] = {}
    for row in rows.to_dict("records"):
        pid, code = str(row[P.PATCH_ID]), row[P.TOWNSHIP_CODE]
        kind = photo_kind(pid)
        verdict = _canonical(row.get(P.VERDICT))
        if kind is None or verdict in (None, Verdict.PENDING) or pd.isna(code):
            continue
        when = taken_at(pid, dt.date.fromisoformat(str(row[P.CHECKED_ON])))
        data = field_photo(pid, verdict=verdict, stage=_canonical(row.get(P.ENFORCEMENT_STAGE)),
                           when=when, lonlat=points.get(pid))  # fmt: skip
        photos = out.setdefault(table_name(code, round_no), {})
        photos[_photo_name(pid, kind, when, photos)] = data
    return out


def _canonical(value) -> str | None:
    """The canonical value (``illegal``, ``notified``) of a Chinese one; None when empty."""
    if value is None or pd.isna(value) or not str(value).strip():
        return None
    return VALUE_ALIASES.get(str(value).strip().lower(), str(value).strip())


def _photo_name(patch_id: str, kind: str, when: dt.datetime, taken: dict) -> str:
    if kind == NAMED:
        return f"{patch_id}_1.jpg"
    stem = f"IMG_{when:%Y%m%d_%H%M%S}"
    name, n = f"{stem}.jpg", 0
    while name in taken:
        n += 1
        name = f"{stem}_{n}.jpg"
    return name


def field_photo(
    patch_id: str,
    *,
    verdict: str,
    stage: str | None,
    when: dt.datetime,
    lonlat: tuple[float, float] | None,
) -> bytes:
    """A SYNTHETIC field photo of a patch: JPEG bytes, the same for the same inputs.

    Parameters
    ----------
    patch_id : str
        The patch; seeds the drawing and goes into the caption.
    verdict, stage : str
        Canonical values (``illegal``, ``notified``): what the photo shows. A building for a
        legal patch and for an illegal one still standing (with a red notice board while its
        case is open), bare soil and rubble once demolished, a cropped field for a false
        change.
    when : datetime.datetime
        EXIF ``DateTimeOriginal`` (and ``DateTime``), and the caption's time.
    lonlat : tuple of float or None
        EXIF GPS position (WGS 84 degrees); None writes none.

    Returns
    -------
    bytes
        A 960×720 JPEG (quality :data:`PHOTO_QUALITY`), about 25-65 KB.
    """
    rng = np.random.default_rng(_roll(patch_id, "scene"))
    scene = _scene(verdict, stage)
    image, horizon = _backdrop(rng, "crop" if scene == "field" else "soil")
    draw = ImageDraw.Draw(image)
    _tree_line(draw, rng, horizon)
    if scene == "field":
        _crop_rows(draw, rng, horizon)
    elif scene == "rubble":
        _rubble(draw, rng, horizon)
    else:
        _building(draw, rng, horizon, notice=scene == "open", sealed=stage == S.CONFISCATED)
    text = f"{verdict}" + (f" / {stage}" if stage else "")
    _caption(draw, [f"{patch_id}  {when:%Y-%m-%d %H:%M:%S}", f"{text}  SYNTHETIC"])
    out = io.BytesIO()
    image.save(out, "JPEG", quality=PHOTO_QUALITY, optimize=True, exif=_exif(when, lonlat))
    return out.getvalue()


def _scene(verdict: str, stage: str | None) -> str:
    """``field`` (no building), ``rubble`` (demolished), ``open`` (an illegal building whose
    case is open) or ``building`` (legal, legalized, confiscated)."""
    if verdict == Verdict.ILLEGAL:
        if stage in _DEMOLISHED:
            return "rubble"
        return "building" if stage in (S.LEGALIZED, S.CONFISCATED) else "open"
    return "building" if verdict == Verdict.LEGAL else "field"


def _backdrop(rng: np.random.Generator, ground: str) -> tuple[Image.Image, int]:
    """Sky and ground gradients meeting at a horizon a little above the middle; the image and
    the horizon's row."""
    width, height = PHOTO_SIZE
    horizon = int(height * rng.uniform(0.36, 0.46))
    sky = np.linspace(0, 1, horizon)[:, None]
    near = np.linspace(0, 1, height - horizon)[:, None]
    (top, low), (far, close) = np.array(_SKY), np.array(_GROUND[ground])
    column = np.vstack([top + sky * (low - top), far + near * (close - far)])
    shade = 1 + 0.04 * np.sin(np.linspace(0, rng.uniform(2, 6), width))  # uneven light
    pixels = column[:, None, :] * shade[None, :, None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB"), horizon


def _tree_line(draw: ImageDraw.ImageDraw, rng: np.random.Generator, horizon: int) -> None:
    """Trees along the horizon."""
    x = -20.0
    while x < PHOTO_SIZE[0]:
        r = rng.uniform(14, 34)
        green = tuple(int(v) for v in rng.integers((40, 70, 30), (70, 105, 55)))
        draw.ellipse((x, horizon - 1.6 * r, x + 2 * r, horizon + 4), fill=green)
        x += rng.uniform(0.8, 1.6) * r


def _building(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    horizon: int,
    *,
    notice: bool,
    sealed: bool,
) -> None:
    """A one-storey building with a blue steel roof, windows and a door; a red notice board
    beside it while its case is open, the door sealed with paper strips when confiscated."""
    width, height = PHOTO_SIZE
    w, h = rng.uniform(320, 460), rng.uniform(150, 210)
    x0 = rng.uniform(80, width - w - 200)
    base = horizon + rng.uniform(0.3, 0.45) * (height - horizon)
    wall = tuple(int(v) for v in rng.choice([(205, 200, 190), (176, 98, 74), (190, 190, 196)]))
    draw.rectangle((x0, base - h, x0 + w, base), fill=wall, outline=(90, 90, 90))
    draw.polygon([(x0 - 18, base - h), (x0 + w + 18, base - h), (x0 + w, base - h - 60),
                  (x0, base - h - 60)], fill=(52, 104, 178), outline=(30, 60, 110))  # fmt: skip
    door = (x0 + 0.42 * w, base - 0.62 * h, x0 + 0.58 * w, base)
    draw.rectangle(door, fill=(70, 62, 58))
    if sealed:  # the crossed paper strips of a seal (封条)
        draw.line((door[0], door[1], door[2], door[3]), fill=(245, 245, 240), width=8)
        draw.line((door[0], door[3], door[2], door[1]), fill=(245, 245, 240), width=8)
    for left in (0.12, 0.7):
        draw.rectangle((x0 + left * w, base - 0.72 * h, x0 + (left + 0.18) * w, base - 0.4 * h),
                       fill=(60, 80, 96), outline=(230, 230, 230), width=3)  # fmt: skip
    if notice:
        sx = x0 + w + rng.uniform(50, 120)
        draw.rectangle((sx + 36, base - 120, sx + 44, base + 10), fill=(80, 80, 80))
        draw.rectangle((sx, base - 190, sx + 80, base - 120), fill=(200, 30, 30))
        draw.text((sx + 40, base - 155), "NOTICE", fill="white", anchor="mm",
                  font=ImageFont.load_default(size=16))  # fmt: skip


def _rubble(draw: ImageDraw.ImageDraw, rng: np.random.Generator, horizon: int) -> None:
    """Bare soil after a demolition: mounds of debris, pieces of the blue roof, bricks."""
    width, height = PHOTO_SIZE
    for _ in range(int(rng.integers(3, 6))):
        cx = rng.uniform(100, width - 100)
        cy = horizon + rng.uniform(0.3, 0.7) * (height - horizon)
        r = rng.uniform(70, 150)
        angles = np.linspace(0, np.pi, 11)
        lift = rng.uniform(0.55, 0.85, angles.size)
        outline = [(cx + r * np.cos(a), cy - 0.8 * r * np.sin(a) * k)
                   for a, k in zip(angles, lift, strict=True)]  # fmt: skip
        grey = int(rng.integers(120, 165))
        draw.polygon(outline, fill=(grey, grey - 8, grey - 20), outline=(90, 84, 76))
    for _ in range(int(rng.integers(2, 5))):
        x, y = rng.uniform(60, width - 160), rng.uniform(horizon + 60, height - 120)
        dx, dy = rng.uniform(60, 110), rng.uniform(-25, 25)
        draw.polygon([(x, y), (x + dx, y + dy), (x + dx + 10, y + dy + 22), (x + 10, y + 22)],
                     fill=(58, 108, 180), outline=(30, 60, 110))  # fmt: skip
    for _ in range(60):
        x, y = rng.uniform(0, width), rng.uniform(horizon + 40, height - 60)
        draw.rectangle((x, y, x + rng.uniform(8, 18), y + rng.uniform(4, 8)), fill=(150, 70, 50))


def _crop_rows(draw: ImageDraw.ImageDraw, rng: np.random.Generator, horizon: int) -> None:
    """Rows of a crop running to a vanishing point on the horizon."""
    width, height = PHOTO_SIZE
    vx = rng.uniform(0.3, 0.7) * width
    for x in np.arange(-3 * width, 4 * width, rng.uniform(38, 60)):
        draw.line((vx, horizon, x, height), fill=(48, 92, 36), width=int(rng.integers(7, 11)))


def _caption(draw: ImageDraw.ImageDraw, lines: list[str]) -> None:
    """White ASCII lines on a dark band at the bottom, as a field-survey app stamps them."""
    width, height = PHOTO_SIZE
    font = ImageFont.load_default(size=20)
    draw.rectangle((0, height - 28 * len(lines) - 12, width, height), fill=(20, 20, 20))
    for n, line in enumerate(lines):
        draw.text((14, height - 28 * (len(lines) - n) - 4), line, fill="white", font=font)


def _exif(when: dt.datetime, lonlat: tuple[float, float] | None) -> Image.Exif:
    """The photo's EXIF: camera model, time, and the GPS position in WGS 84 (GPS IFD)."""
    exif = Image.Exif()
    stamp = when.strftime("%Y:%m:%d %H:%M:%S")
    exif[ExifTags.Base.Model] = PHOTO_CAMERA
    exif[ExifTags.Base.DateTime] = stamp
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = stamp
    if lonlat is not None:
        lon, lat = lonlat
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        gps[ExifTags.GPS.GPSLatitudeRef] = "N" if lat >= 0 else "S"
        gps[ExifTags.GPS.GPSLatitude] = _dms(abs(lat))
        gps[ExifTags.GPS.GPSLongitudeRef] = "E" if lon >= 0 else "W"
        gps[ExifTags.GPS.GPSLongitude] = _dms(abs(lon))
        gps[ExifTags.GPS.GPSMapDatum] = "WGS-84"
    return exif


def _dms(degrees: float) -> tuple[float, float, float]:
    """Degrees, minutes and seconds (to 0.1 ms of arc, about 3 mm) of a positive angle."""
    d = int(degrees)
    m = int((degrees - d) * 60)
    return (float(d), float(m), round((degrees - d - m / 60) * 3600, 4))
