"""The rectification-rate report: rates.csv, rates.xlsx, report.html and the chart PNGs.

Fake district: townships 城关镇 (villages 东村, 西村) and 河西乡 (南庄村), EPSG:4548.
城关镇 has two illegal patches, one rectified -> rate 50 % (misses the 85 % target);
河西乡 has no illegal patch -> undefined rates and a zero-case reward candidate.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import re

import numpy as np
import openpyxl
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import ReportConfig
from pipeline.errors import InputDataError
from pipeline.outputs import charts, webfont
from pipeline.outputs.report import (
    RC,
    rates_csv_text,
    unrectified_patches,
    write_report,
)
from pipeline.schema import LEVELS, RATES_COLUMNS, P
from pipeline.units import MU_M2
from tests.district import (
    DATE,
    TOWN_A,
    TOWN_B,
    VIL_A1,
    make_grids,
    make_patches,
    make_rates,
    write_district_report,
)

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One full report with a one-row history (plus today = two dates -> a trend chart)."""
    return write_district_report(tmp_path_factory.mktemp("report"))


def test_rates_csv(report):
    raw = report.rates_csv.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    text = pd.read_csv(io.BytesIO(raw), encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert tuple(text.columns) == RATES_COLUMNS
    b = text.set_index(RC.CODE).loc[TOWN_B]
    assert b[RC.RECT_RATE_AREA] == "" and b[RC.RECT_RATE_COUNT] == "" and b[RC.RECT_RATE_MET] == ""
    a = text.set_index(RC.CODE).loc[TOWN_A]
    assert a[RC.RECT_RATE_AREA] == "0.9375" and a[RC.RECT_RATE_COUNT] == "0.5000"
    assert a[RC.RECT_RATE_MET] == "True" and a[RC.N_ILLEGAL] == "2"
    assert a[RC.ILLEGAL_M2] == "800.00"
    assert list(text[RC.CODE]) == list(make_rates()[RC.CODE]), "codes kept as text"
    # what commands._report_history reads back for the trend
    back = pd.read_csv(report.rates_csv, dtype={RC.CODE: str}, encoding="utf-8-sig")
    assert back[RC.RECT_RATE_AREA].isna().sum() == make_rates()[RC.RECT_RATE_AREA].isna().sum()


def test_rates_csv_rejects_wrong_columns():
    with pytest.raises(InputDataError, match="lacks columns"):
        rates_csv_text(make_rates().drop(columns=RC.ZERO_CASE))


def test_rates_xlsx(report):
    wb = openpyxl.load_workbook(report.rates_xlsx)
    assert wb.sheetnames == list(LEVELS)
    ws = wb["township"]
    zh = [c.value for c in ws[1]]
    en = [c.value for c in ws[2]]
    assert "整改率(按面积)" in zh and "rectification rate by count" in en
    assert "图斑面积(亩)" in zh, "areas are shown in mu"
    col = {name: i + 1 for i, name in enumerate(en)}
    rows = {ws.cell(row=r, column=1).value: r for r in range(3, ws.max_row + 1)}
    assert set(rows) == {TOWN_A, TOWN_B}
    count_rate = ws.cell(row=rows[TOWN_A], column=col["rectification rate by count"])
    assert count_rate.value == pytest.approx(0.5) and count_rate.number_format == "0.00%"
    assert count_rate.fill.fgColor.rgb == "FFFFC7CE", "50 % < 85 %: highlighted"
    area_rate = ws.cell(row=rows[TOWN_A], column=col["rectification rate by area"])
    assert area_rate.fill.fill_type is None, "93.75 % meets the target: no fill"
    undefined = ws.cell(row=rows[TOWN_B], column=col["rectification rate by area"])
    assert undefined.value == "—"
    area = ws.cell(row=rows[TOWN_A], column=col["illegal area (mu)"])
    assert area.value == pytest.approx(round(800 / MU_M2, 2)) and area.number_format == "0.00"
    # the district sheet: illegal ratio 66.7 % >= 15 % -> highlighted
    d = wb["district"]
    d_en = [c.value for c in d[2]]
    ratio = d.cell(row=3, column=d_en.index("illegal-occupation ratio") + 1)
    assert ratio.fill.fgColor.rgb == "FFFFC7CE"


def test_report_html_self_contained(report):
    html = report.html.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert 'src="data:image/png;base64,' in html and 'id="map-image"' in html
    assert 'id="trend-image"' in html
    for name in ("示例区（合成样例）", "城关镇", "河西乡", "东村", "南庄村"):
        assert name in html
    for section in ("unrectified", "relapses", "unassigned", "zero-case", "villages"):
        assert f'id="{section}"' in html
    unrectified = html[html.index('id="unrectified"') : html.index('id="relapses"')]
    assert "130609201700003" in unrectified and "130609201700002" not in unrectified
    relapses = html[html.index('id="relapses"') : html.index('id="unassigned"')]
    assert "130609201700002" in relapses
    unassigned = html[html.index('id="unassigned"') : html.index('id="zero-case"')]
    assert "130609201700005" in unassigned
    zero = html[html.index('id="zero-case"') : html.index('id="villages"')]
    assert "河西乡" in zero and "南庄村" in zero and "城关镇" not in zero
    assert "66.7%" in html and "93.8%" in html  # district illegal ratio and rect. rate
    assert "<script" not in html


@pytest.mark.skipif(
    importlib.util.find_spec("noto_cjk_sans_otc") is None, reason="noto-cjk-sans-otc missing"
)
def test_report_html_embeds_cjk_font_for_its_text(report):
    """report.html carries, first in its CSS, a base64 @font-face whose unicode-range holds
    every Chinese character of the page, so it renders without any CJK system font."""
    html = report.html.read_text(encoding="utf-8")
    style = html[html.index("<style>") : html.index("</style>")]
    assert style.index("@font-face") < style.index("body {")
    assert f'font-family: "{webfont.FONT_FAMILY}"' in style
    assert "url(data:font/woff" in style
    ranged = re.search(r"unicode-range: ([^;]+);", style).group(1)
    codepoints = set()
    for part in ranged.split(","):
        lo, _, hi = part.strip().removeprefix("U+").partition("-")
        codepoints.update(range(int(lo, 16), int(hi or lo, 16) + 1))
    chinese = {ord(c) for c in html if 0x4E00 <= ord(c) <= 0x9FFF}
    assert chinese and chinese <= codepoints


def test_pngs_written(report):
    for path in (report.map_png, report.ranking_png, report.trend_png):
        assert path is not None and path.read_bytes().startswith(PNG)


def test_no_trend_without_history(tmp_path):
    townships, villages = make_grids()
    paths = write_report(
        make_rates(),
        make_patches(),
        townships,
        villages,
        tmp_path,
        cfg=ReportConfig(),
        area_name="示例区",
        date=DATE,
    )
    assert paths.trend_png is None and not (tmp_path / "trend.png").exists()
    html = paths.html.read_text(encoding="utf-8")
    assert "trend-image" not in html and "at least two report dates" in html
    assert "Relapse information was not supplied" in html


def test_missing_cjk_font_falls_back_with_warning(tmp_path, monkeypatch, caplog):
    """Without a CJK font the charts use codes, a warning is logged, nothing crashes."""
    monkeypatch.setattr(charts, "find_cjk_font", lambda: None)
    townships, villages = make_grids()
    with caplog.at_level(logging.WARNING, logger="pipeline.outputs.report"):
        paths = write_report(
            make_rates(),
            make_patches(),
            townships,
            villages,
            tmp_path,
            cfg=ReportConfig(),
            area_name="示例区",
            date=DATE,
        )
    assert any("Chinese glyphs" in r.getMessage() for r in caplog.records)
    assert paths.map_png.read_bytes().startswith(PNG)
    assert "东村" in paths.html.read_text(encoding="utf-8"), "the HTML keeps Chinese names"


@pytest.mark.filterwarnings("ignore:Glyph")
def test_cjk_font_path_renders(tmp_path, monkeypatch):
    """With a (pretend) CJK font the Chinese-label branch runs; DejaVu lacks the glyphs, which
    only produces matplotlib warnings here."""
    monkeypatch.setattr(charts, "find_cjk_font", lambda: "DejaVu Sans")
    townships, villages = make_grids()
    paths = write_report(
        make_rates(),
        make_patches(),
        townships,
        villages,
        tmp_path,
        cfg=ReportConfig(),
        area_name="示例区",
        date=DATE,
    )
    assert paths.ranking_png.read_bytes().startswith(PNG)


def test_find_cjk_font_skips_placeholder_fonts():
    """matplotlib ships "Last Resort", which 'has' every glyph as a box: never pick it."""
    font = charts.find_cjk_font()
    assert font is None or (isinstance(font, str) and "last resort" not in font.lower())


def test_inputs_not_mutated(tmp_path):
    rates, patches = make_rates(), make_patches()
    rates0, patches0 = rates.copy(), patches.copy()
    townships, villages = make_grids()
    write_report(
        rates, patches, townships, villages, tmp_path, cfg=ReportConfig(), area_name="x", date=DATE
    )
    pd.testing.assert_frame_equal(rates, rates0)
    pd.testing.assert_frame_equal(patches, patches0)


def test_missing_district_row_is_an_error(tmp_path):
    townships, villages = make_grids()
    rates = make_rates()
    with pytest.raises(InputDataError, match="district rows"):
        write_report(
            rates[rates[RC.LEVEL] != "district"],
            make_patches(),
            townships,
            villages,
            tmp_path,
            cfg=ReportConfig(),
            area_name="x",
            date=DATE,
        )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["pending", "legal", "illegal", "false_change", "other"]),
            st.one_of(st.none(), st.floats(0, 400)),
        ),
        max_size=12,
    )
)
def test_unrectified_means_illegal_and_not_zero_remaining(rows):
    """Property: a patch is listed iff it is illegal and its remaining area is not exactly 0."""
    frame = pd.DataFrame(
        {
            P.PATCH_ID: [f"{i:015d}" for i in range(len(rows))],
            P.TOWNSHIP_CODE: TOWN_A,
            P.VILLAGE_CODE: VIL_A1,
            P.VERDICT: [r[0] for r in rows],
            P.REMAINING_M2: [np.nan if r[1] is None else r[1] for r in rows],
        }
    )
    listed = set(unrectified_patches(frame)[P.PATCH_ID])
    expected = {
        pid
        for pid, (verdict, remaining) in zip(frame[P.PATCH_ID], rows, strict=True)
        if verdict == "illegal" and remaining != 0
    }
    assert listed == expected


def test_empty_district_still_reports(tmp_path):
    """No patches, no grid units below the district: every file is written, rates undefined."""
    townships, villages = make_grids()
    rates = make_rates().iloc[[0]].copy()
    for col in (RC.N_PATCHES, RC.N_PENDING, RC.N_LEGAL, RC.N_ILLEGAL, RC.N_RECTIFIED):
        rates[col] = 0
    for col in (RC.PATCHES_M2, RC.ILLEGAL_M2, RC.RECTIFIED_M2):
        rates[col] = 0.0
    for col in (RC.ILLEGAL_RATIO, RC.ILLEGAL_RATIO_UPPER, RC.RECT_RATE_AREA, RC.RECT_RATE_COUNT):
        rates[col] = np.nan
    paths = write_report(
        rates,
        make_patches().iloc[0:0],
        townships.iloc[0:0],
        villages.iloc[0:0],
        tmp_path,
        cfg=ReportConfig(),
        area_name="空区",
        date=DATE,
    )
    assert paths.map_png.read_bytes().startswith(PNG)
    assert "—" in paths.html.read_text(encoding="utf-8")


def test_bundled_font_package_is_registered(monkeypatch):
    """A package exposing FONT_PATH (like noto-cjk-sans-otc) is added to matplotlib's fonts.

    A stand-in module points at matplotlib's own DejaVu Sans file, so this runs anywhere.
    """
    import pathlib
    import sys
    import types

    import matplotlib

    fake = types.ModuleType("fake_cjk_font")
    fake.FONT_PATH = pathlib.Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"
    monkeypatch.setitem(sys.modules, "fake_cjk_font", fake)
    monkeypatch.setattr(
        webfont, "BUNDLED_FONT_MODULES", ("not_installed_font_pkg", "fake_cjk_font")
    )
    charts.register_bundled_fonts.cache_clear()
    try:
        assert charts.register_bundled_fonts() == (str(fake.FONT_PATH),)
    finally:
        charts.register_bundled_fonts.cache_clear()


def test_noto_cjk_wheel_gives_chinese_charts():
    """With the noto-cjk-sans-otc dependency installed, charts find Noto Sans CJK SC."""
    pytest.importorskip("noto_cjk_sans_otc", reason="noto-cjk-sans-otc is not installed")
    charts.find_cjk_font.cache_clear()
    assert charts.find_cjk_font() == "Noto Sans CJK SC"
