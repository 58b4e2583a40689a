"""Simulated field returns with photos: each judged row of about three patches in four gets a
SYNTHETIC JPEG (named by its patch id, or as a phone names it and linked by its GPS), dated
``checked_on`` and taken inside its patch; ``landwatch sample returns`` zips them with the
township's CSV, and the real importer links every one of them."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from types import SimpleNamespace

import geopandas as gpd
import pandas as pd
import pytest
from PIL import Image
from shapely.geometry import Point

from pipeline.ops.commands import simulate_returns
from pipeline.ops.field_import import import_returns
from pipeline.registry.io.photo_files import read_photo
from pipeline.registry.io.registry_file import load_registry, save_registry
from pipeline.sample.returns import (
    GPS_ONLY,
    NAMED,
    field_photo,
    photo_kind,
    round_rows,
    taken_at,
    township_photos,
)
from pipeline.schema import TRUTH_LAYER, E, EventKind, P, T, Verdict
from tests.field_returns import CRS, TOWN, patch_ids, township_state

DAY = dt.date(2017, 6, 20)
KINDS = ("illegal", "legal", None, "nonfarm")
"""Truth object over patch i: ``KINDS[i % 4]`` (None: nothing there, a false change)."""


def found_verdicts(state) -> pd.Series:
    verdict = {"illegal": Verdict.ILLEGAL, "legal": Verdict.LEGAL, None: Verdict.FALSE_CHANGE,
               "nonfarm": Verdict.ILLEGAL}  # fmt: skip
    return pd.Series([verdict[KINDS[i % 4]].value for i in range(len(state.patches))],
                     index=state.patches.index)  # fmt: skip


def photos_of(rows, state, round_no=1) -> dict[str, bytes]:
    """Entry name -> JPEG of the only township's return."""
    by_table = township_photos(rows, state.patches, round_no)
    assert list(by_table) == [f"{TOWN}_第{round_no}轮核查.csv"]
    return by_table[f"{TOWN}_第{round_no}轮核查.csv"]


def patch_at(state, lonlat) -> str | None:
    """The patch the WGS 84 point lies in (None outside every patch)."""
    point = gpd.GeoSeries([Point(lonlat)], crs="EPSG:4326").to_crs(CRS).iloc[0]
    inside = state.patches[state.patches.geometry.contains(point)]
    return None if inside.empty else str(inside[P.PATCH_ID].iloc[0])


def exif_times(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as image:
        return image.getexif().get_ifd(0x8769)[36867]


def test_photos_are_small_jpegs_dated_and_taken_inside_their_patch():
    state = township_state(16)
    rows = round_rows(state.patches, found_verdicts(state), round_no=1, day=DAY)
    photos = photos_of(rows, state)
    pictured = set()
    for name, data in photos.items():
        with Image.open(io.BytesIO(data)) as image:
            assert (image.format, image.size) == ("JPEG", (960, 720))
        assert len(data) < 150_000
        photo = read_photo(name, data)  # as the importer reads it
        assert photo.error is None
        pid = patch_at(state, photo.lonlat)
        assert pid is not None, f"{name} was taken outside every patch"
        if photo_kind(pid) == NAMED:
            assert name == f"{pid}_1.jpg"
        else:
            assert photo_kind(pid) == GPS_ONLY
            assert name == f"IMG_{taken_at(pid, DAY):%Y%m%d_%H%M%S}.jpg"
        assert exif_times(data).startswith("2017:06:20 ")
        assert photo.taken_at == taken_at(pid, DAY).isoformat()
        pictured.add(pid)
    assert pictured == {p for p in patch_ids(16) if photo_kind(p)}
    assert {photo_kind(p) for p in pictured} == {NAMED, GPS_ONLY}


def test_round_2_photos_are_dated_on_the_day_of_their_step():
    state = township_state(16)
    rows = round_rows(state.patches, found_verdicts(state), round_no=2, day=dt.date(2017, 8, 25))
    checked = dict(zip(rows[P.PATCH_ID], rows[P.CHECKED_ON], strict=True))
    photos = photos_of(rows, state, round_no=2)
    assert photos
    for name, data in photos.items():
        pid = patch_at(state, read_photo(name, data).lonlat)
        assert exif_times(data)[:10] == checked[pid].replace("-", ":")


def test_photos_are_the_same_bytes_every_time_and_show_the_verdict():
    state = township_state(16)
    rows = round_rows(state.patches, found_verdicts(state), round_no=1, day=DAY)
    assert photos_of(rows, state) == photos_of(rows, state)
    when = taken_at("130609201700001", DAY)
    scenes = {
        field_photo("130609201700001", verdict=v, stage=s, when=when, lonlat=None)
        for v, s in (("illegal", "notified"), ("illegal", "self_demolished"),
                     ("false_change", None), ("legal", None))
    }  # fmt: skip
    assert len(scenes) == 4


def test_pending_rows_get_no_photo():
    state = township_state(4)
    rows = round_rows(state.patches, found_verdicts(state), round_no=1, day=DAY)
    rows[P.VERDICT] = "待核查"
    assert township_photos(rows, state.patches, 1) == {}


def test_about_half_the_patches_get_a_named_photo_and_a_quarter_a_phone_one():
    kinds = pd.Series([photo_kind(f"1306092017{i:05d}") for i in range(1, 2001)])
    share = kinds.value_counts(dropna=False, normalize=True)
    assert 0.45 < share[NAMED] < 0.55 and 0.2 < share[GPS_ONLY] < 0.3
    assert 0.2 < share[None] < 0.3


# --------------------------------------------------------------------------- the command
@pytest.fixture
def registered(tmp_path):
    """A workspace whose registry holds 16 patches of 城关镇, and the truth over them."""
    ws = tmp_path / "ws"
    cfg = SimpleNamespace(
        workspace=ws,
        area=SimpleNamespace(crs=CRS),
        field_returns=SimpleNamespace(inbox=ws / "inbox", encoding=None, photo_radius_m=100.0),
    )
    state = township_state(16)
    save_registry(ws / "registry.gpkg", state)
    objects = [(KINDS[i % 4], g) for i, g in enumerate(state.patches.geometry) if KINDS[i % 4]]
    truth = gpd.GeoDataFrame({T.KIND: [k for k, _ in objects]},
                             geometry=[g.buffer(1) for _, g in objects], crs=CRS)  # fmt: skip
    truth.to_file(tmp_path / "truth.gpkg", layer=TRUTH_LAYER)
    return cfg, tmp_path / "truth.gpkg"


def test_each_return_is_a_reproducible_zip_of_its_csv_and_photos(registered):
    cfg, truth = registered
    (path,), n_rows, n_photos = simulate_returns(cfg, truth, round_no=1, day="2017-06-20")
    assert path.name == f"{TOWN}_第1轮核查.zip" and n_rows == 16
    first = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        csv = archive.read(f"{TOWN}_第1轮核查.csv")
        assert {i.date_time for i in archive.infolist()} == {(2017, 6, 20, 0, 0, 0)}
    assert names[0] == f"{TOWN}_第1轮核查.csv" and len(names) == 1 + n_photos
    assert n_photos == sum(bool(photo_kind(p)) for p in patch_ids(16))
    assert all(n.endswith(".jpg") for n in names[1:])
    simulate_returns(cfg, truth, round_no=1, day="2017-06-20")
    assert path.read_bytes() == first  # the same round gives the same bytes

    (plain,), _, none = simulate_returns(cfg, truth, round_no=1, day="2017-06-20", photos=False)
    assert plain.name == f"{TOWN}_第1轮核查.csv" and none == 0
    assert plain.read_bytes() == csv  # the CSV alone, as inside the zip


def test_a_simulated_zip_imports_with_its_photos_linked_by_name_and_by_gps(registered):
    cfg, truth = registered
    (path,), _, n_photos = simulate_returns(cfg, truth, round_no=1, day="2017-06-20")
    (result,) = import_returns(cfg, [path], today=dt.date(2017, 6, 21))
    assert result.applied and result.n_photos == n_photos and result.photo_problems == ()
    state = load_registry(cfg.workspace / "registry.gpkg", CRS)
    events = state.events[state.events[E.KIND] == EventKind.PHOTO]
    links = {(pid, json.loads(v)["matched_by"]) for pid, v in zip(events[E.PATCH_ID],
                                                                  events[E.VALUES], strict=True)}  # fmt: skip
    assert links == {(p, photo_kind(p)) for p in patch_ids(16) if photo_kind(p)}
    assert {m for _, m in links} == {"name", "gps"}
    assert len(list((cfg.workspace / "photos").rglob("*.jpg"))) == n_photos
    assert state.patches[P.VERDICT].ne(Verdict.PENDING).all()
