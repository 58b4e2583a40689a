"""Photos in zipped field returns: linked by name (first) or by EXIF GPS inside a patch,
stored once by content hash, recorded as ``photo`` events; bad, unmatched and far photos are
reported and never block the table."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile

import geopandas as gpd
from PIL import Image
from shapely.geometry import Point

from pipeline.ops.field_import import PhotoStore, apply_files
from pipeline.schema import E, EventKind, P
from tests.field_returns import CRS, NOW, patch_ids, township_state

ID1, ID2 = patch_ids(2)
TODAY = dt.date(2024, 6, 1)


def jpeg(lonlat=None, size=(32, 24)) -> bytes:
    """A real JPEG, with an EXIF GPS position when ``lonlat`` is given."""
    exif = Image.Exif()
    if lonlat is not None:
        lon, lat = lonlat
        exif[0x8825] = {1: "N", 2: _dms(lat), 3: "E", 4: _dms(lon)}
        exif[306] = "2024:05:20 10:11:12"
    out = io.BytesIO()
    Image.new("RGB", size, (200, 80, 40)).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def _dms(value: float) -> tuple[float, float, float]:
    d = int(value)
    m = int((value - d) * 60)
    return (float(d), float(m), (value - d - m / 60) * 3600)


def lonlat_of(state, pid, dx=0.0):
    """The WGS 84 position of a point inside patch ``pid``, moved ``dx`` metres east."""
    geom = state.patches.set_index(P.PATCH_ID).geometry[pid]
    point = Point(geom.centroid.x + dx, geom.centroid.y)
    p = gpd.GeoSeries([point], crs=CRS).to_crs("EPSG:4326").iloc[0]
    return (p.x, p.y)


def write_zip(path, table: str | None, photos: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        if table is not None:
            z.writestr("核查结果.csv", table.encode("utf-8-sig"))
        for name, data in photos.items():
            z.writestr(name, data)
    return path


def run(state, path, tmp_path):
    return apply_files(state, [path], encoding=None, today=TODAY, run_id="r", now=NOW,
                       photos=PhotoStore(tmp_path / "ws", radius_m=100.0))  # fmt: skip


def photo_values(state):
    ev = state.events[state.events[E.KIND] == EventKind.PHOTO]
    return [(pid, json.loads(v)) for pid, v in zip(ev[E.PATCH_ID], ev[E.VALUES], strict=True)]


def test_photos_link_by_name_then_by_gps_and_are_stored_once(tmp_path):
    state = township_state(2)
    inside_2 = jpeg(lonlat_of(state, ID2))
    photos = {
        f"{ID1}_north.jpg": jpeg(lonlat_of(state, ID2), size=(40, 30)),  # name wins over GPS
        "IMG_0001.jpg": inside_2,  # no id in the name: its GPS lies in ID2
        f"{ID2}_same.jpg": inside_2,  # the same bytes again: stored once, linked once
    }
    table = f"图斑编号,核实认定意见\n{ID1},违法\n"
    new, (result,) = run(state, write_zip(tmp_path / "r.zip", table, photos), tmp_path)
    assert result.applied and result.n_photos == 2
    links = {(pid, v["name"], v["matched_by"]) for pid, v in photo_values(new)}
    assert links == {(ID1, f"{ID1}_north.jpg", "name"), (ID2, "IMG_0001.jpg", "gps")}
    stored = list((tmp_path / "ws" / "photos").rglob("*.jpg"))
    assert len(stored) == 2
    values = dict((v["name"], v) for _, v in photo_values(new))
    assert values["IMG_0001.jpg"]["distance_m"] == 0.0
    assert values[f"{ID1}_north.jpg"]["distance_m"] > 0  # taken in the neighbouring patch
    assert values["IMG_0001.jpg"]["taken_at"] == "2024-05-20T10:11:12"


def test_bad_unmatched_and_far_photos_are_reported_and_the_table_still_applies(tmp_path):
    state = township_state(2)
    good = jpeg()
    photos = {
        "broken.jpg": good[: len(good) // 2],
        "notes.jpg": b"this is text",
        "IMG_0002.jpg": jpeg(),  # no GPS, no id
        "IMG_0003.jpg": jpeg(lonlat_of(state, ID1, dx=5000)),  # GPS in no patch
        f"{ID1}_far.jpg": jpeg(lonlat_of(state, ID1, dx=400)),  # linked, with a warning
    }
    table = f"图斑编号,核实认定意见\n{ID1},违法\n"
    new, (result,) = run(state, write_zip(tmp_path / "r.zip", table, photos), tmp_path)
    assert result.applied and result.n_photos == 1
    text = " | ".join(result.photo_problems)
    for name in ("broken.jpg", "notes.jpg", "IMG_0002.jpg", "IMG_0003.jpg"):
        assert f"{name}: " in text and "not stored" in text
    assert "more than 100 m" in text
    assert len(list((tmp_path / "ws" / "photos").rglob("*.jpg"))) == 1
    assert new.patches.set_index(P.PATCH_ID).at[ID1, P.VERDICT] == "illegal"


def test_a_rejected_table_keeps_its_photos_linked(tmp_path):
    """The table's all-or-nothing rule does not throw the evidence away."""
    state = township_state(2)
    table = "图斑编号,核实认定意见\n999,违法\n"  # an unknown id: the table is rejected
    new, (result,) = run(state, write_zip(tmp_path / "r.zip", table, {f"{ID1}_a.jpg": jpeg()}),
                         tmp_path)  # fmt: skip
    assert not result.applied and result.n_photos == 1
    assert [pid for pid, _ in photo_values(new)] == [ID1]
    assert new.patches[P.VERDICT].eq("pending").all()  # nothing of the table applied


def test_odd_members_are_reported_and_never_block_the_table(tmp_path):
    """A photo that claims 30000 × 30000 pixels, a PNG, a damaged member, and a name whose
    leading id is no patch's: each reported; the table applies."""
    state = township_state(2)
    bomb = io.BytesIO()
    Image.new("RGB", (8, 8)).save(bomb, "JPEG")
    data = bytearray(bomb.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame header: height and width follow
    data[sof + 5 : sof + 9] = (30000).to_bytes(2, "big") * 2
    path = write_zip(tmp_path / "r.zip", f"图斑编号,核实认定意见\n{ID1},违法\n", {
        "huge.jpg": bytes(data), "scan.png": b"\x89PNG....", "130609209999999_x.jpg": jpeg(),
    })  # fmt: skip
    _, (result,) = run(state, path, tmp_path)
    assert result.applied and result.n_photos == 0
    text = " | ".join(result.photo_problems)
    assert "huge.jpg: not stored, too large" in text
    assert "scan.png: not stored, not a JPEG file" in text
    assert "begins with 130609209999999, which is no patch id" in text


def test_pictures_inside_a_workbook_are_not_field_photos(tmp_path):
    """An .xlsx is a zip too: its embedded pictures are not read as photos."""
    state = township_state(1)
    book = write_zip(tmp_path / "return.xlsx", None, {"xl/media/image1.jpeg": jpeg()})
    _, (result,) = run(state, book, tmp_path)
    assert result.n_photos == 0 and result.photo_problems == ()
