"""Reading the photos of a zipped field return and storing them in the workspace.

Photos are read with Pillow (the JPEG check, the full decode that finds a truncated file, and
the EXIF GPS position and time). Stored photos are named by the SHA-256 of their bytes
(``photos/ab/abcdef….jpg``): the same photo sent twice is stored once, and a stored file is
never overwritten.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path, PurePath

from PIL import Image, UnidentifiedImageError

from pipeline.atomic import atomic_write_bytes
from pipeline.registry.photos import Photo

PHOTO_SUFFIXES = (".jpg", ".jpeg")
_GPS_IFD, _EXIF_IFD = 0x8825, 0x8769
_DATETIME_ORIGINAL, _DATETIME = 36867, 306


def read_zip_photos(path: Path) -> list[tuple[Photo, bytes]]:
    """Every ``.jpg`` / ``.jpeg`` of the zip at ``path`` with its bytes (a photo that cannot
    be read carries its ``error``); none when ``path`` is no zip."""
    if not zipfile.is_zipfile(path):
        return []
    out = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            parts = PurePath(info.filename).parts
            if info.is_dir() or any(p.startswith((".", "__MACOSX")) for p in parts):
                continue
            if PurePath(info.filename).suffix.lower() in PHOTO_SUFFIXES:
                data = archive.read(info)
                out.append((read_photo(PurePath(info.filename).name, data), data))
    return out


def read_photo(name: str, data: bytes) -> Photo:
    """One photo: its hash, EXIF GPS position and time, or why it cannot be read."""
    digest = hashlib.sha256(data).hexdigest()
    if not data.startswith(b"\xff\xd8"):
        return Photo(name, digest, error="not a JPEG file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decodes every pixel: a truncated file fails here
            exif = image.getexif()
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
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
    gps = exif.get_ifd(_GPS_IFD)
    try:
        lat, lon = _degrees(gps[2]), _degrees(gps[4])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if str(gps.get(1, "N")).upper().startswith("S"):
        lat = -lat
    if str(gps.get(3, "E")).upper().startswith("W"):
        lon = -lon
    return (lon, lat)


def _degrees(dms) -> float:
    d, m, s = (float(v) for v in dms)
    return d + m / 60 + s / 3600


def _time(exif) -> str | None:
    text = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    if not text or len(str(text)) < 19:
        return None
    t = str(text)
    return f"{t[:4]}-{t[5:7]}-{t[8:10]}T{t[11:19]}"
