"""Reading the photos of a zipped field return and storing them in the workspace.

Photos are read with Pillow (the JPEG check, a decode that finds a truncated file, and the
EXIF GPS position and time). Stored photos are named by the SHA-256 of their bytes
(``photos/ab/abcdef….jpg``): the same photo sent twice is stored once, and a stored file is
never overwritten. A member that cannot be read (damaged in the zip, too large, not a JPEG)
becomes a :class:`~pipeline.registry.photos.Photo` with its ``error``: it is reported, never
raised, so photos never block the table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePath

from PIL import Image, UnidentifiedImageError

from pipeline.atomic import atomic_write_bytes
from pipeline.registry.photos import Photo

PHOTO_SUFFIXES = (".jpg", ".jpeg")
IMAGE_SUFFIXES = (*PHOTO_SUFFIXES, ".jpe", ".jfif", ".png", ".heic", ".heif", ".gif", ".bmp",
                  ".tif", ".tiff", ".webp")  # fmt: skip
"""Members taken for photos: JPEGs are read, the others reported as not JPEG."""
MAX_PHOTO_BYTES = 50_000_000
"""A member larger than this (uncompressed) is reported as too large, not read."""
MAX_PHOTO_PIXELS = 200_000_000
"""A photo claiming more pixels than this is reported as too large, not decoded."""
_GPS_IFD, _EXIF_IFD = 0x8825, 0x8769
_DATETIME_ORIGINAL, _DATETIME = 36867, 306


def iter_zip_photos(path: Path) -> Iterator[tuple[Photo, bytes | None]]:
    """Each image member of the zip at ``path``, read one at a time: the photo and its bytes
    (None when it could not be read). Only ``.zip`` files hold photos (an ``.xlsx`` is a zip
    too, whose embedded pictures are not field photos)."""
    if path.suffix.lower() != ".zip" or not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            parts = PurePath(info.filename).parts
            suffix = PurePath(info.filename).suffix.lower()
            if info.is_dir() or any(p.startswith((".", "__MACOSX")) for p in parts):
                continue
            if suffix in IMAGE_SUFFIXES:
                yield _member(archive, info)


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[Photo, bytes | None]:
    name = PurePath(info.filename).name
    if PurePath(name).suffix.lower() not in PHOTO_SUFFIXES:
        return Photo(name, "", error="not a JPEG file"), None
    if info.file_size > MAX_PHOTO_BYTES:
        return Photo(name, "", error=f"too large ({info.file_size / 1e6:.0f} MB)"), None
    try:
        data = archive.read(info)
    except (zipfile.BadZipFile, RuntimeError, OSError, EOFError) as exc:  # CRC, encrypted
        return Photo(name, "", error=f"cannot be read from the zip ({exc})"), None
    photo = read_photo(name, data)
    return photo, (None if photo.error else data)


def read_photo(name: str, data: bytes) -> Photo:
    """One photo: its hash, EXIF GPS position and time, or why it cannot be read."""
    digest = hashlib.sha256(data).hexdigest()
    if not data.startswith(b"\xff\xd8"):
        return Photo(name, digest, error="not a JPEG file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_PHOTO_PIXELS:
                    return Photo(name, digest, error=f"too large ({image.width}×{image.height})")
                image.draft("RGB", (image.width // 8 or 1, image.height // 8 or 1))
                image.load()  # a reduced decode still reads to the end: truncation fails here
                exif = image.getexif()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return Photo(name, digest, error=f"too large ({exc})")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        return Photo(name, digest, error=f"cannot be read ({exc})")
    return Photo(name, digest, lonlat=_gps(exif), taken_at=_time(exif))


def store_photo(folder: Path, photo: Photo, data: bytes) -> Path:
    """The stored file of ``photo`` (written once; an existing one is left as it is)."""
    path = folder / photo.sha256[:2] / f"{photo.sha256}.jpg"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    return path


def _gps(exif) -> tuple[float, float] | None:
    """WGS 84 (lon, lat) of the EXIF GPS tags; None when missing, not finite, out of range
    or (0, 0), the value of a receiver without a fix."""
    gps = exif.get_ifd(_GPS_IFD)
    try:
        lat, lon = _degrees(gps[2]), _degrees(gps[4])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if str(gps.get(1, "N")).upper().startswith("S"):
        lat = -lat
    if str(gps.get(3, "E")).upper().startswith("W"):
        lon = -lon
    if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
        return None
    return None if (lat, lon) == (0.0, 0.0) else (lon, lat)


def _degrees(dms) -> float:
    d, m, s = (float(v) for v in dms)
    return d + m / 60 + s / 3600


def _time(exif) -> str | None:
    text = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    try:
        return dt.datetime.strptime(str(text).strip(), "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None
