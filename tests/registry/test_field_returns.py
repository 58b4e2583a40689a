"""Field returns: reading every format, each rejection reason, all-or-nothing, idempotency."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import zipfile

import geopandas as gpd
import openpyxl
import pandas as pd
import pyogrio
import pytest
from shapely.geometry import Point, box

from pipeline.atomic import fingerprint_file
from pipeline.errors import FieldReturnError, InputDataError
from pipeline.registry.field_returns import ROW, apply_return, parse_date
from pipeline.registry.io.return_files import read_return, write_rejections
from pipeline.registry.matching import register_detections
from pipeline.registry.store import empty_state
from pipeline.schema import E, EventKind, P, RectMethod, Verdict
from tests.detections import CRS, make_detections
from tests.shapefiles import write_shapefile

TODAY = dt.date(2024, 6, 1)
NOW = "2024-06-01T10:00:00Z"
ID1, ID2, ID3 = "130609201700001", "130609201700002", "130609201700003"


@pytest.fixture
def state():
    """Three pending patches of 400 m² each (north to south: ID1, ID2, ID3)."""
    det = make_detections([box(0, 200, 20, 220), box(0, 100, 20, 120), box(0, 0, 20, 20)])
    s, _ = register_detections(
        empty_state(CRS), det, run_id="r1", now="2024-05-01T00:00:00Z", county_code="130609"
    )
    return s


def rows(*records):
    """Return rows as read_return gives them: text values and the spreadsheet row."""
    frame = pd.DataFrame(records, dtype="str")
    frame[ROW] = range(2, len(frame) + 2)
    return frame


def apply(state, frame, fingerprint="f1", name="return.csv"):
    return apply_return(
        state, frame, source_file=name, fingerprint=fingerprint, now=NOW, today=TODAY
    )


def patch(state, pid):
    return state.patches.set_index(P.PATCH_ID).loc[pid]


def test_illegal_without_remaining_means_nothing_rectified(state):
    new, summary = apply(state, rows({P.PATCH_ID: ID1, P.VERDICT: "违法"}))
    p = patch(new, ID1)
    assert p[P.VERDICT] == Verdict.ILLEGAL and p[P.REMAINING_M2] == pytest.approx(400.0)
    assert summary.n_applied == 1 and summary.n_verdict_changes == 1
    kinds = new.events[E.KIND].iloc[-2:].tolist()
    assert kinds == [EventKind.FIELD_VERDICT, EventKind.RECTIFICATION]
    assert (new.events[E.SOURCE].iloc[-2:] == "field:return.csv#2").all()
    assert new.imports["fingerprint"].tolist() == ["f1"]
    assert patch(state, ID1)[P.VERDICT] == Verdict.PENDING  # input state untouched


def test_partial_rectification_and_method_alone(state):
    first, _ = apply(
        state,
        rows(
            {P.PATCH_ID: ID1, P.VERDICT: "illegal", P.RECT_METHOD: "拆除复耕",
             P.REMAINING_M2: "100.5", P.CHECKED_ON: "2024/5/20", P.INSPECTOR: "张三"},
            {P.PATCH_ID: ID2, P.VERDICT: "illegal", P.RECT_METHOD: "confiscated"},
        ),
    )  # fmt: skip
    assert patch(first, ID1)[P.REMAINING_M2] == pytest.approx(100.5)
    assert patch(first, ID1)[P.RECT_METHOD] == RectMethod.DEMOLISHED_RESTORED
    assert patch(first, ID1)[P.CHECKED_ON] == "2024-05-20"
    assert patch(first, ID1)[P.INSPECTOR] == "张三"
    # a method without remaining_m2 does not mark the patch rectified
    assert patch(first, ID2)[P.REMAINING_M2] == pytest.approx(400.0)
    # a follow-up return with an empty verdict only updates rectification
    second, _ = apply(first, rows({P.PATCH_ID: ID1, P.REMAINING_M2: "0"}), fingerprint="f2")
    assert patch(second, ID1)[P.VERDICT] == Verdict.ILLEGAL
    assert patch(second, ID1)[P.REMAINING_M2] == 0.0
    values = json.loads(second.events[E.VALUES].iloc[-1])
    assert values["remaining_m2_before"] == 100.5 and values["remaining_m2"] == 0.0


def test_each_rejection_reason_and_nothing_applied(state):
    bad = rows(
        {P.PATCH_ID: "130609201799999", P.VERDICT: "illegal"},  # 2 unknown patch
        {P.PATCH_ID: ID1, P.VERDICT: "maybe"},  # 3 bad verdict
        {P.PATCH_ID: ID2, P.VERDICT: "illegal", P.RECT_METHOD: "bulldozed"},  # 4 bad method
        {P.PATCH_ID: ID3, P.VERDICT: "illegal", P.REMAINING_M2: "lots"},  # 5 not a number
        {P.PATCH_ID: ID3, P.VERDICT: "illegal", P.REMAINING_M2: "-1"},  # 6 negative (+conflict)
    )
    with pytest.raises(FieldReturnError) as info:
        apply(state, bad)
    reasons = {row: why for _, row, why in info.value.rejections}
    assert "unknown patch_id" in reasons[2]
    assert "verdict 'maybe'" in reasons[3] and "违法" in reasons[3]
    assert "rect_method 'bulldozed'" in reasons[4]
    assert "not a number" in " ".join(w for _, r, w in info.value.rejections if r == 5)
    assert "negative" in " ".join(w for _, r, w in info.value.rejections if r == 6)
    assert all(f == "return.csv" for f, _, _ in info.value.rejections)

    more = rows(
        {P.PATCH_ID: ID1, P.VERDICT: "illegal", P.REMAINING_M2: "401"},  # > area
        {P.PATCH_ID: ID2, P.VERDICT: "legal", P.RECT_METHOD: "none"},  # not illegal
        {P.PATCH_ID: ID3, P.VERDICT: "illegal", P.CHECKED_ON: "2024-06-02"},  # future
    )
    with pytest.raises(FieldReturnError) as info:
        apply(state, more)
    reasons = {row: why for _, row, why in info.value.rejections}
    assert "exceeds the patch area 400.00" in reasons[2]
    assert "only applies to illegal" in reasons[3]
    assert "in the future" in reasons[4]
    with pytest.raises(FieldReturnError, match="not a date"):
        apply(state, rows({P.PATCH_ID: ID1, P.VERDICT: "legal", P.CHECKED_ON: "yesterday"}))


def test_duplicates_identical_count_once_conflicting_are_rejected(state):
    same = {P.PATCH_ID: ID1, P.VERDICT: "违法"}
    _, summary = apply(state, rows(same, {P.PATCH_ID: ID1, P.VERDICT: "illegal"}))
    assert summary.n_rows == 2 and summary.n_applied == 1
    with pytest.raises(FieldReturnError) as info:
        apply(state, rows(same, {P.PATCH_ID: ID1, P.VERDICT: "legal"}))
    assert sorted(r for _, r, _ in info.value.rejections) == [2, 3]


def test_other_without_subtype_is_warned_not_rejected(state):
    new, summary = apply(state, rows({P.PATCH_ID: ID1, P.VERDICT: "其他"}))
    assert patch(new, ID1)[P.VERDICT] == Verdict.OTHER
    assert len(summary.warnings) == 1 and "sub" in summary.warnings[0]


def test_leaving_illegal_clears_rectification(state):
    illegal, _ = apply(state, rows({P.PATCH_ID: ID1, P.VERDICT: "illegal"}))
    legal, _ = apply(illegal, rows({P.PATCH_ID: ID1, P.VERDICT: "合法"}), fingerprint="f2")
    assert pd.isna(patch(legal, ID1)[P.REMAINING_M2])


def test_same_file_twice_changes_nothing(tmp_path, state):
    path = tmp_path / "return.csv"
    path.write_text(f"patch_id,verdict\n{ID1},illegal\n", encoding="utf-8")
    fp = fingerprint_file(path)
    once, _ = apply(state, read_return(path), fingerprint=fp)
    twice, summary = apply(once, read_return(path), fingerprint=fp)
    assert summary.already_imported
    assert twice is once


def test_gbk_csv_with_chinese_headers_and_values(tmp_path, state):
    path = tmp_path / "乡镇返回.csv"
    text = (
        "图斑编号,核实认定意见,整改方式,剩余未整改面积,核查日期,核查人,备注\n"
        f"{ID1},违法,拆除复耕,0,2024-05-30,李四,已拆除\n"
        "\n"
        f"{ID2},合法,,,2024-05-30,李四,有批文\n"
    )
    path.write_bytes(text.encode("gbk"))
    frame = read_return(path)
    assert frame[P.PATCH_ID].tolist() == [ID1, ID2]
    assert frame[ROW].tolist() == [2, 4]  # the rows a spreadsheet shows (row 3 is blank)
    assert frame[P.NOTE].tolist() == ["已拆除", "有批文"]
    new, _ = apply(state, frame, name=path.name)
    assert patch(new, ID1)[P.REMAINING_M2] == 0.0
    assert patch(new, ID2)[P.VERDICT] == Verdict.LEGAL
    assert new.events[E.SOURCE].iloc[-1] == f"field:{path.name}#4"


def test_gb18030_csv_with_a_character_gbk_lacks(tmp_path):
    """CSV returns try UTF-8 then GB18030 (not GBK): a name with 𠮷 (four bytes in GB18030,
    absent from GBK) reads as written."""
    path = tmp_path / "r.csv"
    path.write_bytes(f"图斑编号,核实认定,核查人\n{ID1},违法,吉𠮷\n".encode("gb18030"))
    assert read_return(path)[P.INSPECTOR].tolist() == ["吉𠮷"]


def test_utf8_bom_csv_and_encoding_override(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(f"Patch ID,Verdict\n{ID1},违法\n".encode("utf-8-sig"))
    assert read_return(path)[P.VERDICT].tolist() == ["违法"]
    with pytest.raises(InputDataError, match="--encoding"):
        read_return(path, encoding="ascii")


def test_xlsx_with_numbers_and_dates(tmp_path, state):
    path = tmp_path / "return.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["图斑编号", "认定结果", "剩余未整改面积_m2", "核查日期"])
    sheet.append([int(ID1), "违法", 250, dt.datetime(2024, 5, 3)])
    sheet.append([ID2, "伪变化", None, None])
    book.save(path)
    frame = read_return(path)
    assert frame[P.PATCH_ID].tolist() == [ID1, ID2]
    assert frame[P.REMAINING_M2].iloc[0] == "250"
    assert frame[P.CHECKED_ON].iloc[0] == "2024-05-03"
    new, _ = apply(state, frame)
    assert patch(new, ID1)[P.REMAINING_M2] == 250.0
    assert patch(new, ID2)[P.VERDICT] == Verdict.FALSE_CHANGE


def test_zipped_shapefile_with_cpg_and_gpkg(tmp_path):
    gdf = gpd.GeoDataFrame(
        {"patch_id": [ID1], "verdict": ["违法"], "remain_m2": [12.5]},
        geometry=[Point(0, 0)],
        crs=CRS,
    )
    shp = tmp_path / "shp" / "return.shp"
    shp.parent.mkdir()
    pyogrio.write_dataframe(gdf, shp, encoding="GBK")
    assert shp.with_suffix(".cpg").exists()
    archive = tmp_path / "return.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in shp.parent.iterdir():
            z.write(f, f"return/{f.name}")
    frame = read_return(archive)
    assert frame[P.VERDICT].tolist() == ["违法"] and frame[P.REMAINING_M2].tolist() == ["12.5"]
    assert frame[ROW].tolist() == [1]
    gpkg = tmp_path / "return.gpkg"
    pyogrio.write_dataframe(gdf, gpkg)
    assert read_return(gpkg)[P.PATCH_ID].tolist() == [ID1]


@pytest.mark.parametrize("setting", [None, "ISO-8859-1", "UTF-8"])
@pytest.mark.parametrize(("cpg", "ldid"), [(None, 0), ("GBK", 0), ("936", 0), (None, 0x4D)])
def test_gbk_shapefile_return_reads_whatever_shape_encoding_says(
    tmp_path, monkeypatch, setting, cpg, ldid
):
    """A Shapefile return in GBK, with or without a .cpg or language byte saying so, is
    decoded by the layers' rules and the encoding handed to GDAL explicitly: SHAPE_ENCODING
    in the environment (which overrides a .cpg in GDAL) cannot garble it."""
    gdf = gpd.GeoDataFrame(
        {"patch_id": [ID1], "verdict": ["违法"], "note": ["已拆除复耕"]},
        geometry=[Point(0, 0)],
        crs=CRS,
    )
    path = write_shapefile(tmp_path / "城关镇.shp", gdf, encoding="GBK", cpg=cpg, ldid=ldid)
    if setting:
        monkeypatch.setenv("SHAPE_ENCODING", setting)
    frame = read_return(path)
    assert frame[P.VERDICT].tolist() == ["违法"] and frame[P.NOTE].tolist() == ["已拆除复耕"]


def test_shapefile_return_in_an_undetectable_encoding_asks_for_it(tmp_path):
    """A CP1252 Shapefile return without .cpg is not read as mojibake: the error names the
    file and says how to give the encoding; given, it reads."""
    gdf = gpd.GeoDataFrame(
        {"patch_id": [ID1], "verdict": ["illegal"], "note": ["Montréal Saône"]},
        geometry=[Point(0, 0)],
        crs=CRS,
    )
    path = write_shapefile(tmp_path / "r.shp", gdf, encoding="CP1252")
    with pytest.raises(InputDataError) as err:
        read_return(path)
    message = str(err.value)
    assert "r.shp" in message and "'field_returns.encoding'" in message
    assert "--encoding" in message
    assert read_return(path, encoding="CP1252")[P.NOTE].tolist() == ["Montréal Saône"]


@pytest.mark.parametrize("name", ["../evil.shp", "/etc/evil.shp", "a/../../evil.shp"])
def test_zip_path_traversal_is_rejected(tmp_path, name):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(name, b"x")
    with pytest.raises(InputDataError, match="refusing entry"):
        read_return(archive)
    assert not (tmp_path.parent / "evil.shp").exists()


def test_unreadable_inputs_are_clear_errors(tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        read_return(tmp_path / "none.csv")
    odd = tmp_path / "r.docx"
    odd.write_text("x")
    with pytest.raises(InputDataError, match="unsupported"):
        read_return(odd)
    no_id = tmp_path / "r.csv"
    no_id.write_text("foo,verdict\n1,legal\n")
    with pytest.raises(InputDataError, match="no patch id column"):
        read_return(no_id)


def test_write_rejections(tmp_path):
    out = write_rejections(tmp_path / "rej.csv", [("r.csv", 3, "未知图斑"), ("r.csv", None, "x")])
    assert out.read_text(encoding="utf-8-sig").splitlines() == [
        "file,row,reason",
        "r.csv,3,未知图斑",
        "r.csv,,x",
    ]


def test_parse_date_forms():
    assert parse_date("2024年5月3日") == dt.date(2024, 5, 3)
    assert parse_date("20240503") == dt.date(2024, 5, 3)
    assert parse_date("2024-02-30") is None


def test_state_is_a_frozen_dataclass(state):
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.patches = None
