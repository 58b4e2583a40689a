"""The dossier of a patch: its facts and history, its key, and the page drawn as PDF and HTML.

The PDF test reads the PDF back with PDFium (pypdfium2): the Chinese text must come out as
text (the font is embedded with its Unicode map), on one A4 page, with the pictures placed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import os
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pypdfium2 as pdfium
import pytest
import shapely
from PIL import Image

from pipeline.outputs.dossier import (
    Dossier,
    Images,
    PhotoRef,
    dossier_facts,
    dossier_key,
    event_rows,
    photo_for_dossier,
    with_pictures,
)
from pipeline.outputs.dossier_html import batch_font_css, dossier_html
from pipeline.outputs.dossier_pdf import DossierFont, dossier_font, dossier_pdf
from pipeline.outputs.location_map import location_map_png, location_spec
from pipeline.registry.ledger import DATE
from pipeline.schema import E, EventKind, P
from tests.district import make_grids, make_patches

A4_PT = (595, 842)


def _png(colour, size=(120, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(size=(1600, 1200)) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _events(pid: str) -> pd.DataFrame:
    """Ledger rows of one patch (dated, values unpacked), deliberately out of order."""
    rows = [
        (3, EventKind.FIELD_VERDICT, "field:城关镇_第1轮.csv#2", "2017-06-20",
         {P.VERDICT: "illegal", "verdict_before": "pending", P.INSPECTOR: "核查员甲"}),
        (1, EventKind.DETECTED, "run-1", "2017-06-01",
         {P.CHANGE_TYPE: "veg_to_construction", P.AREA_M2: 400.0}),
        (2, EventKind.EXPORTED, "run-1", "2017-06-01", {"package": "130609001000_城关镇.zip"}),
        (4, EventKind.ENFORCEMENT, "field:城关镇_第2轮.csv#2", "2017-07-18",
         {P.ENFORCEMENT_STAGE: "self_demolished", "enforcement_stage_before": "notified"}),
        (5, EventKind.PHOTO, "field:城关镇_第2轮.zip", "2017-07-18",
         {"name": f"{pid}_1.jpg", "matched_by": "name", "distance_m": 3.0}),
    ]  # fmt: skip
    records = [
        {E.EVENT_ID: i, E.PATCH_ID: pid, E.KIND: k.value, E.SOURCE: s,
         DATE: dt.date.fromisoformat(d), **v}
        for i, k, s, d, v in rows
    ]  # fmt: skip
    return pd.DataFrame(records)


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "ab12.jpg"
    path.write_bytes(_jpeg())
    return path


@pytest.fixture(scope="module")
def dossier(photo_file) -> Dossier:
    patches = make_patches()
    _, villages = make_grids(persons=True)
    row = patches.iloc[1].to_dict()  # 130609201700002, illegal and rectified, in 西村
    row[P.ENFORCEMENT_STAGE], row[P.STAGE_DATE] = "self_demolished", "2017-07-18"
    row[P.APPROVAL_REFS] = "冀国土资函〔2016〕12号"
    village = villages.geometry.iloc[1]
    location = location_spec(row["geometry"], village, neighbours=villages.geometry,
                             others=patches.geometry, village_label="西村")  # fmt: skip
    images = Images(chip_png=_png((200, 120, 40), (400, 200)))
    return dossier_facts(row, _events(row[P.PATCH_ID]), area_name="示例区",
                         township_person="张三", village_person="赵六", images=images,
                         location=location,
                         photo_refs=(PhotoRef(photo_file, "ab12", "现场照片 2017-07-18"),))  # fmt: skip


def test_facts_name_the_units_their_persons_and_both_area_units(dossier):
    facts = dict(dossier.facts)
    assert facts["乡镇 township"] == "城关镇 130609101000 责任人 张三"
    assert facts["行政村 village"].startswith("西村") and "责任人 赵六" in facts["行政村 village"]
    assert facts["查处阶段 stage"] == "自行拆除（2017-07-18）"
    areas = {name: (m2, mu) for name, m2, mu in dossier.areas}
    assert areas["图斑面积 patch"] == ("400.0", "0.60")  # 400 m² = 0.6 亩
    assert areas["耕地 farmland"] == ("300.0", "0.45")
    assert dossier.approval_refs == "冀国土资函〔2016〕12号"
    assert dossier.status == "已整改 rectified"


def test_history_is_in_date_order_with_readable_details(dossier):
    kinds = [e.kind for e in dossier.events]
    assert kinds == ["检测发现 detected", "下发 exported", "核查结论 verdict",
                     "查处阶段 stage", "实地照片 photo"]  # fmt: skip
    verdict = dossier.events[2]
    assert verdict.detail == "待核查 → 违法；核查员甲"
    assert dossier.events[4].detail == "130609201700002_1.jpg；按文件名 by name，3 m"
    assert verdict.source == "城关镇_第1轮.csv #2"
    assert dossier.events[3].detail == "责令停止/告知 → 自行拆除"
    assert dossier.as_of == "2017-07-18"
    assert event_rows(_events("x").iloc[:0]) == []


def test_key_follows_content_not_the_drawn_map(dossier):
    key = dossier_key(dossier)
    assert key == dossier_key(with_pictures(dossier))  # drawing the map changes nothing
    changed = dataclasses.replace(dossier, status="违法 illegal")
    assert dossier_key(changed) != key
    other_chip = dataclasses.replace(dossier, images=dataclasses.replace(
        dossier.images, chip_png=_png((0, 0, 0), (400, 200))))  # fmt: skip
    assert dossier_key(other_chip) != key


def test_key_follows_the_photos_by_hash_and_reads_none(dossier, tmp_path):
    moved = dataclasses.replace(dossier.photo_refs[0], path=tmp_path / "elsewhere.jpg")
    assert dossier_key(dataclasses.replace(dossier, photo_refs=(moved,))) == dossier_key(dossier)
    other = dataclasses.replace(dossier.photo_refs[0], sha256="cd34")
    assert dossier_key(dataclasses.replace(dossier, photo_refs=(other,))) != dossier_key(dossier)


def test_an_unreadable_photo_is_named_not_dropped(dossier, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    ref = dataclasses.replace(dossier.photo_refs[0], path=broken)
    drawn = with_pictures(dataclasses.replace(dossier, photo_refs=(ref,)))
    assert drawn.images.photos[0].jpeg is None
    assert "无法读取" in drawn.images.photos[0].caption
    with DossierFont(dossier_font(drawn.texts())) as font:
        assert dossier_pdf(drawn, font).startswith(b"%PDF")


def test_photos_are_shrunk_for_the_page():
    photo = photo_for_dossier(_jpeg((3000, 2000)), "x")
    with Image.open(io.BytesIO(photo.jpeg)) as img:
        assert max(img.size) == 960 and img.format == "JPEG"


def test_pdf_is_one_a4_page_whose_chinese_text_can_be_extracted(dossier):
    drawn = with_pictures(dossier)
    with DossierFont(dossier_font(drawn.texts())) as font:
        data = dossier_pdf(drawn, font)
    pdf = pdfium.PdfDocument(data)
    _keep_pictures(pdf)
    assert len(pdf) == 1
    page = pdf[0]
    assert tuple(round(v) for v in page.get_size()) == A4_PT
    text = re.sub(r"\s+", "", page.get_textpage().get_text_range())
    for expected in ("图斑档案130609201700002", "城关镇", "西村", "责任人张三", "责任人赵六",
                     "自行拆除", "冀国土资函〔2016〕12号", "核查员甲", "事件记录"):  # fmt: skip
        assert expected in text, expected
    images = [o for o in page.get_objects() if o.type == pdfium.raw.FPDF_PAGEOBJ_IMAGE]
    assert len(images) == 3  # location map, chip, photo


def _keep_pictures(pdf) -> None:
    """The pages as PNG in $LANDWATCH_SCREENSHOTS when set (to look at the layout)."""
    folder = os.environ.get("LANDWATCH_SCREENSHOTS")
    if folder:
        for i, page in enumerate(pdf):
            page.render(scale=1.5).to_pil().save(Path(folder) / f"dossier_page{i + 1}.png")


def test_pdf_bytes_are_reproducible(dossier):
    drawn = with_pictures(dossier)
    font = dossier_font(drawn.texts())
    with DossierFont(font) as a, DossierFont(font) as b:
        assert dossier_pdf(drawn, a) == dossier_pdf(drawn, b)


def test_html_is_self_contained_with_the_same_content(dossier):
    drawn = with_pictures(dossier)
    html = dossier_html(drawn, font_css=batch_font_css([drawn]))
    assert "@font-face" in html
    assert html.count("data:image/png;base64,") == 2 and "data:image/jpeg;base64," in html
    assert not re.search(r"(src|href)=\"https?:", html)
    for expected in ("130609201700002", "责任人 张三", "自行拆除", "核查员甲", "现场照片"):
        assert expected in html


def test_what_lies_in_a_hole_of_the_patch_shows_on_the_map():
    ring = shapely.box(0, 0, 300, 300).difference(shapely.box(100, 100, 200, 200))
    inside = shapely.box(130, 130, 170, 170)
    spec = location_spec(ring, None, others=gpd.GeoSeries([inside]))
    img = Image.open(io.BytesIO(location_map_png(spec))).convert("RGB")
    assert img.getpixel((300, 300)) == (158, 158, 158)  # the other patch, grey
    assert img.getpixel((60, 300)) == (229, 57, 53)  # the ring itself, in its colour
