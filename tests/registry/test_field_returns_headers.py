"""Field returns as townships write them: header and value synonyms, area units in headers,
``.xls`` workbooks (issue 13, items 3-5)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import openpyxl
import pytest

from pipeline.errors import FieldReturnError, InputDataError
from pipeline.registry.enforcement import parse_demolished_by, parse_stage
from pipeline.registry.field_returns import ROW, apply_return, parse_rect_method, parse_verdict
from pipeline.registry.io.return_files import HEADER_MAP, _norm, read_return, resolve_headers
from pipeline.schema import (
    CHINESE_LABELS,
    COLUMN_LABELS,
    FIELD_RETURN_COLUMNS,
    FIELD_RETURN_HEADERS,
    SHAPEFILE_FIELDS,
    STAGE_DEMOLISHED_BY,
    VALUE_SYNONYMS,
    DemolishedBy,
    EnforcementStage,
    P,
    RectMethod,
    Verdict,
)
from pipeline.units import MU_M2
from tests.field_returns import NOW, TODAY, patch_ids, township_state, write_xls
from tests.samples import ROOT

ID1, ID2, ID3 = patch_ids(3)
README = ROOT / "README.md"


def _csv(tmp_path, header: str, *lines: str, encoding: str = "gbk") -> Path:
    path = tmp_path / "return.csv"
    path.write_bytes("\n".join([header, *lines, ""]).encode(encoding))
    return path


def _apply(frame, state=None):
    return apply_return(
        state or township_state(3),
        frame,
        source_file="return.csv",
        fingerprint="f1",
        now=NOW,
        today=dt.date.fromisoformat(TODAY),
        unknown_columns=tuple(frame.attrs.get("unknown_columns", ())),
    )


# --------------------------------------------------------------------------- the tables
def test_no_header_is_listed_for_two_columns():
    """The header table is one map: after normalisation every header names one column."""
    seen: dict[str, str] = {}
    for column, headers in FIELD_RETURN_HEADERS.items():
        for header in headers:
            assert seen.setdefault(_norm(header), column) == column, header
    assert set(FIELD_RETURN_HEADERS) == set(FIELD_RETURN_COLUMNS)


@pytest.mark.parametrize(
    ("header", "column"),
    [(h, c) for c, headers in FIELD_RETURN_HEADERS.items() for h in headers],
)
def test_every_listed_header_is_recognised(header, column):
    """Each header of the documented table maps to its column."""
    assert resolve_headers([header]).columns == {column: 0}


@pytest.mark.parametrize("column", FIELD_RETURN_COLUMNS)
def test_package_labels_and_shapefile_fields_are_recognised(column):
    """What the packages themselves write (canonical name, Shapefile field, Chinese and
    English template labels, units included) is read back as the same column."""
    names = [column, SHAPEFILE_FIELDS[column], *COLUMN_LABELS[column]]
    for name in names:
        found = resolve_headers([name])
        assert found.columns == {column: 0}, name
        assert found.to_m2[column] == 1.0, name  # the labels say m² where they say a unit


def test_no_value_word_is_listed_for_two_values():
    """Each word means one value, and the first word of each is its Chinese label."""
    seen: dict[str, str] = {}
    for value, words in VALUE_SYNONYMS.items():
        assert words[0] == CHINESE_LABELS[value]
        for word in words:
            assert seen.setdefault(word.lower(), value.value) == value.value, word
    assert set(VALUE_SYNONYMS) == set(Verdict) | set(RectMethod) | set(EnforcementStage) | set(
        DemolishedBy
    )


@pytest.mark.parametrize(
    ("word", "value"), [(w, v) for v, words in VALUE_SYNONYMS.items() for w in words]
)
def test_every_listed_value_word_is_accepted(word, value):
    """Each word of the value table parses to its value (and only in its own column; the
    words of the two values shared by methods and stages, 补办手续 and 没收, in both)."""
    parsers = {
        Verdict: parse_verdict,
        RectMethod: parse_rect_method,
        EnforcementStage: parse_stage,
        DemolishedBy: parse_demolished_by,
    }
    parse = parsers[type(value)]
    assert parse(word) == value.value
    assert parse(f" {word} ") == value.value
    shared = {RectMethod: EnforcementStage, EnforcementStage: RectMethod}
    for kind, other in parsers.items():
        if kind in (type(value), shared.get(type(value))):
            continue
        if kind is DemolishedBy and value in STAGE_DEMOLISHED_BY:
            assert other(word) == STAGE_DEMOLISHED_BY[value].value  # 自行拆除 says who
        else:
            assert other(word) is None, (word, kind)


def test_english_values_in_any_case_and_spacing():
    """English values are accepted as written by people: any case, spaces or hyphens."""
    assert parse_verdict("False change") == "false_change"
    assert parse_verdict("ILLEGAL") == "illegal"
    assert parse_rect_method("Demolished-Restored") == "demolished_restored"
    assert parse_rect_method("已 拆除") == "demolished_restored"  # a stray space inside


def test_readme_documents_every_header_and_value_word():
    """README "Field returns" shows both tables, one row per column / value, verbatim."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Field returns") :]
    section = section[: section.index("\n## ", 1)]
    for column, headers in FIELD_RETURN_HEADERS.items():
        assert f"| `{column}` | {', '.join(headers)} |" in section, column
    for value, words in VALUE_SYNONYMS.items():
        assert f"| `{value.value}` | {', '.join(words)} |" in section, value


# --------------------------------------------------------------------------- headers in files
def test_headers_townships_write_are_applied(tmp_path):
    """The headers of issue 13 (图斑号, 认定结果, 整改情况, 剩余面积) are read, not dropped: a
    patch returned as rectified with 0 remaining has 0 remaining."""
    path = _csv(
        tmp_path,
        "图斑号,认定结果,整改情况,剩余面积,核实日期,核实人,说明",
        f"{ID1},违法用地,已拆除复耕,0,2024-05-20,张三,已复耕",
        f"{ID2},非法占地,已补办,,2024-05-20,张三,",
    )
    frame = read_return(path)
    new, summary = _apply(frame)
    p = new.patches.set_index(P.PATCH_ID)
    assert p.loc[ID1, P.VERDICT] == "illegal" and p.loc[ID1, P.REMAINING_M2] == 0.0
    assert p.loc[ID1, P.RECT_METHOD] == "demolished_restored"
    assert p.loc[ID1, P.INSPECTOR] == "张三" and p.loc[ID1, P.NOTE] == "已复耕"
    assert p.loc[ID2, P.RECT_METHOD] == "legalized"
    assert summary.unknown_columns == () and summary.warnings == ()


@pytest.mark.parametrize(
    ("header", "value", "m2"),
    [
        ("剩余面积(亩)", "1.5", 1000.0),
        ("剩余面积（亩）", "1.5", 1000.0),
        ("剩余未整改面积（单位：亩）", "0.3", 200.0),
        ("剩余面积(平方米)", "250", 250.0),
        ("剩余面积(m²)", "250", 250.0),
        ("剩余面积(m2)", "1,250.5", 1250.5),
        ("剩余面积", "250", 250.0),
        ("remaining area (mu)", "0.15", 100.0),
    ],
)
def test_area_unit_in_the_header_is_converted_to_m2(tmp_path, header, value, m2):
    """An area header's unit converts the values to m² (1 亩 = 10000/15 m²); without a
    unit the area is m²."""
    path = _csv(tmp_path, f"图斑编号,核实认定,{header}", f'{ID1},违法,"{value}"', encoding="utf-8")
    frame = read_return(path)
    read = float(frame[P.REMAINING_M2].iloc[0].replace(",", ""))
    assert read == pytest.approx(m2, rel=1e-12)
    new, _ = _apply(frame, township_state(3) if m2 <= 400 else _big_state())
    assert new.patches.set_index(P.PATCH_ID).loc[ID1, P.REMAINING_M2] == pytest.approx(m2)


def _big_state():
    """The three patches, 1500 m² each, so a remaining area of 1250 m² fits."""
    return _state_of(1500.0)


def _state_of(area_m2: float):
    """The three patches, ``area_m2`` each."""
    state = township_state(3)
    patches = state.patches.copy()
    patches[P.AREA_M2] = area_m2
    patches[P.AREA_MU] = area_m2 / MU_M2
    return dataclasses.replace(state, patches=patches)


@pytest.mark.parametrize(
    "header",
    [
        "剩余面积/亩",
        "剩余面积亩",
        "剩余面积 亩",
        "剩余面积_亩",
        "剩余面积（亩）",
        "剩余面积／亩",
        "剩余面积(单位：亩)",
        "整改后剩余面积",
        "整改后剩余面积（亩）",
        "剩余未整改面积亩",
        "Remaining area mu",
    ],
)
def test_area_unit_after_the_header_without_brackets(tmp_path, header):
    """The unit may follow the header without brackets; 整改后剩余面积 is a remaining area
    too. Without a unit it is m²."""
    path = _csv(tmp_path, f"图斑编号,核实认定,{header}", f"{ID1},违法,0.3", encoding="utf-8")
    frame = read_return(path)
    expected = 0.3 if header == "整改后剩余面积" else 0.3 * MU_M2
    assert float(frame[P.REMAINING_M2].iloc[0]) == pytest.approx(expected, rel=1e-12)
    new, _ = _apply(frame)
    assert new.patches.set_index(P.PATCH_ID).loc[ID1, P.REMAINING_M2] == pytest.approx(expected)


@pytest.mark.parametrize(
    "header", ["剩余面积亩数", "剩余面积(亩)合计", "整改后剩余面积（亩）数", "remaining area in mu"]
)
def test_unknown_header_with_an_area_word_and_a_unit_rejects_the_file(tmp_path, header):
    """A header that holds an area header word and a unit word, in a form not understood,
    rejects the file with a message naming it and the forms that are read: its values are
    not left unread."""
    path = _csv(tmp_path, f"图斑编号,核实认定,{header}", f"{ID1},违法,0.3", encoding="utf-8")
    with pytest.raises(InputDataError) as info:
        read_return(path)
    message = str(info.value)
    assert repr(header) in message and "remaining_m2" in message
    assert "剩余面积（亩）" in message and "剩余面积/亩" in message


def test_unknown_header_with_an_area_word_but_no_unit_is_only_warned(tmp_path):
    """``剩余面积说明`` (a note about the area) is an unknown column: warned, not an error;
    an English word holding a unit's letters (``share``: ha) is no unit."""
    path = _csv(
        tmp_path,
        "图斑编号,核实认定,剩余面积说明,remaining share",
        f"{ID1},合法,,",
        encoding="utf-8",
    )
    assert read_return(path).attrs["unknown_columns"] == ("剩余面积说明", "remaining share")


# --------------------------------------------------------------------------- area rounding
AREA = 411.86
"""A patch area whose value in 亩 (0.61779 亩) is not a round number."""


@pytest.mark.parametrize(
    ("header", "value"),
    [("剩余面积(亩)", "0.62"), ("剩余面积/亩", "0.618"), ("剩余面积（亩）", "0.6178"),
     ("剩余面积(公顷)", "0.0412"), ("剩余面积", "411.865")],
)  # fmt: skip
def test_area_rounded_from_the_patch_area_is_the_whole_patch(tmp_path, header, value):
    """A value over the patch area but within half a unit of its last written decimal of it
    (0.62 亩: 0.005 亩 ≈ 3.33 m²; 0.618 亩: 0.33 m²; 0.0412 公顷: 0.5 m²) is the whole patch,
    stored as the patch area; in m² the margin is 0.01 m²."""
    path = _csv(tmp_path, f"图斑编号,核实认定,{header}", f"{ID1},违法,{value}", encoding="utf-8")
    new, summary = _apply(read_return(path), _state_of(AREA))
    assert new.patches.set_index(P.PATCH_ID).loc[ID1, P.REMAINING_M2] == AREA
    assert summary.n_applied == 1


@pytest.mark.parametrize(
    ("header", "value"),
    [("剩余面积(亩)", "0.63"), ("剩余面积(亩)", "0.619"), ("剩余面积(亩)", "0.6185"),
     ("剩余面积", "411.9"), ("剩余面积(亩)", "1")],
)  # fmt: skip
def test_area_really_larger_than_the_patch_is_rejected_with_distinct_numbers(
    tmp_path, header, value
):
    """A value beyond the rounding of its last decimal is rejected, and the message shows
    the two areas, in m² and in 亩, with enough decimals to differ (0.6185 亩 is not shown
    as 0.62 亩 beside a 0.62 亩 patch)."""
    state = _state_of(AREA if value != "1" else 200.0)  # 1 亩 allows 0.5-1.5 亩
    path = _csv(tmp_path, f"图斑编号,核实认定,{header}", f"{ID1},违法,{value}", encoding="utf-8")
    with pytest.raises(FieldReturnError) as info:
        _apply(read_return(path), state)
    ((_, row, reason),) = info.value.rejections
    m2, mu, area_m2, area_mu = re.fullmatch(
        r"remaining_m2 ([\d.]+) m² \(([\d.]+) 亩\) exceeds the patch area ([\d.]+) m² "
        r"\(([\d.]+) 亩\) by more than the rounding of the value written",
        reason,
    ).groups()
    assert row == 2 and m2 != area_m2 and mu != area_mu, reason
    assert float(m2) > float(area_m2) and float(mu) > float(area_mu)


def test_area_in_mu_too_big_is_reported_in_both_units(tmp_path):
    """A remaining area over the patch area is rejected with the numbers in m² and 亩."""
    path = _csv(tmp_path, "图斑编号,核实认定,剩余面积(亩)", f"{ID1},违法,0.9")
    with pytest.raises(FieldReturnError) as info:
        _apply(read_return(path))
    (_, row, reason), *_ = info.value.rejections
    assert row == 2 and "600.00 m² (0.90 亩) exceeds the patch area 400.00 m² (0.60 亩)" in reason


def test_unknown_area_unit_rejects_the_file(tmp_path):
    """A unit the importer does not know is not guessed: the file is rejected, the message
    names the header and the units it accepts."""
    path = _csv(tmp_path, "图斑编号,核实认定,剩余面积(平方公里)", f"{ID1},违法,1")
    with pytest.raises(InputDataError, match=r"剩余面积\(平方公里\)") as info:
        read_return(path)
    assert "(亩)" in str(info.value) and "(平方米)" in str(info.value)


@pytest.mark.parametrize(
    "header",
    [
        "图斑编号,核实认定,剩余面积,剩余未整改面积(亩)",
        "图斑号,patch_id,核实认定",
        "图斑编号,核实认定,备注,备注",
        "图斑编号,核查结果,认定结果",
    ],
)
def test_two_headers_for_one_column_reject_the_file(tmp_path, header):
    """Two columns that mean the same thing: which one holds the answer is not guessed."""
    n = header.count(",") + 1
    path = _csv(tmp_path, header, ",".join([ID1, "违法", *["0"] * (n - 2)]))
    with pytest.raises(InputDataError, match="both mean"):
        read_return(path)


def test_unknown_columns_are_warned_in_the_summary(tmp_path):
    """Columns the importer does not know are listed in the summary's warnings; 序号 and
    the template's pre-filled columns are not."""
    path = _csv(
        tmp_path,
        "序号,图斑编号,行政村名称,面积(亩),核实认定,联系电话,整改进度,",
        f"1,{ID1},东村,0.6,合法,13800000000,,",
        f"2,{ID2},东村,0.6,,,完成,额外",
    )
    frame = read_return(path)
    assert frame.attrs["unknown_columns"] == ("联系电话", "整改进度", "column 8 (no header)")
    _, summary = _apply(frame)
    assert summary.unknown_columns == frame.attrs["unknown_columns"]
    (warning,) = summary.warnings
    assert "'联系电话'" in warning and "'整改进度'" in warning and "not read" in warning
    assert summary.n_not_filled == 1  # ID2: only unknown columns filled


def test_remark_in_brackets_after_a_header_is_ignored(tmp_path):
    """``核查日期（年月日）`` and ``核实认定意见（合法/违法）`` are the date and verdict columns."""
    path = _csv(
        tmp_path, "图斑编号,核实认定意见（合法/违法）,核查日期（年月日）", f"{ID1},合法,2024/5/3"
    )
    frame = read_return(path)
    assert frame[P.VERDICT].tolist() == ["合法"] and frame[P.CHECKED_ON].tolist() == ["2024/5/3"]


def test_file_without_a_verdict_column_is_rejected(tmp_path):
    """A file with no recognised verdict column says which headers it found and which it
    expected."""
    path = _csv(tmp_path, "图斑编号,结论,整改方式", f"{ID1},违法,拆除")
    with pytest.raises(InputDataError) as info:
        read_return(path)
    message = str(info.value)
    assert "no verdict column" in message and "结论" in message and "核实认定意见" in message


def test_rejected_value_lists_the_accepted_words(tmp_path):
    """A value that is not accepted is rejected, and the reason lists every accepted word."""
    path = _csv(tmp_path, "图斑编号,核实认定,整改方式", f"{ID1},违法,推平")
    with pytest.raises(FieldReturnError) as info:
        _apply(read_return(path))
    (_, row, reason), *_ = info.value.rejections
    assert row == 2 and "'推平'" in reason
    for word in (*VALUE_SYNONYMS[RectMethod.DEMOLISHED_RESTORED], "已补办", "已没收"):
        assert word in reason


# --------------------------------------------------------------------------- .xls
def test_xls_workbook_is_read(tmp_path):
    """An Excel 97-2003 file (written by xlwt): numeric ids keep all digits, integral numbers
    lose their ``.0``, dates become ISO, areas in 亩 are converted."""
    import xlwt

    date_style = xlwt.easyxf(num_format_str="YYYY-MM-DD")
    path = tmp_path / "乡镇.xls"
    write_xls(
        ["图斑号", "认定结果", "整改情况", "剩余面积(亩)", "核查日期", "核查人"],
        [[int(ID1), "违法", "已拆除", 0.3, None, "李四"], [ID2, "伪变化", None, None, None, None]],
        path,
    )
    book = xlwt.Workbook()  # the same rows plus a real date cell, to check date conversion
    sheet = book.add_sheet("s")
    for j, h in enumerate(["图斑编号", "核实认定", "核查日期"]):
        sheet.write(0, j, h)
    sheet.write(1, 0, ID3)
    sheet.write(1, 1, "合法")
    sheet.write(1, 2, dt.datetime(2024, 5, 3), date_style)
    dated = tmp_path / "dated.xls"
    book.save(str(dated))

    frame = read_return(path)
    assert frame[P.PATCH_ID].tolist() == [ID1, ID2] and frame[ROW].tolist() == [2, 3]
    assert float(frame[P.REMAINING_M2].iloc[0]) == pytest.approx(0.3 * MU_M2)
    new, summary = _apply(frame)
    p = new.patches.set_index(P.PATCH_ID)
    assert p.loc[ID1, P.REMAINING_M2] == pytest.approx(200.0)
    assert p.loc[ID2, P.VERDICT] == "false_change" and summary.n_applied == 2
    assert read_return(dated)[P.CHECKED_ON].tolist() == ["2024-05-03"]


def test_workbook_named_for_the_other_excel_format_is_read(tmp_path):
    """An ``.xlsx`` workbook renamed ``.xls`` (and the reverse) is read by its content."""
    book = openpyxl.Workbook()
    book.active.append(["图斑编号", "核实认定"])
    book.active.append([ID1, "合法"])
    book.save(tmp_path / "a.xls")
    write_xls(["图斑编号", "核实认定"], [[ID2, "违法"]], tmp_path / "b.xlsx")
    assert read_return(tmp_path / "a.xls")[P.PATCH_ID].tolist() == [ID1]
    assert read_return(tmp_path / "b.xlsx")[P.PATCH_ID].tolist() == [ID2]


def test_file_named_xls_that_is_no_workbook_is_a_clear_error(tmp_path):
    """Web systems export HTML tables named ``.xls``: the error says what the file is not
    and how to fix it."""
    path = tmp_path / "export.xls"
    path.write_text("<html><table><tr><td>图斑编号</td></tr></table></html>", encoding="utf-8")
    with pytest.raises(InputDataError, match=re.escape("save it as .xlsx, .xls or CSV")):
        read_return(path)


def test_header_map_has_only_field_return_columns():
    """The header map sends every header to a field-return column, never to a registry
    column a return must not set (area, codes, ...)."""
    assert set(HEADER_MAP.values()) == set(FIELD_RETURN_COLUMNS)
