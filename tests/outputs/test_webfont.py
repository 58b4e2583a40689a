"""The embedded CJK font subset of the HTML pages (pipeline.outputs.webfont).

A page's ``@font-face`` must draw every Chinese character the page shows, be a font that
fontTools (and so a browser) can open, be byte-identical from run to run (field packages are
reproducible), stay small, and disappear gracefully (with a warning) when the font package is
missing. Tests needing the bundled font skip when ``noto-cjk-sans-otc`` is not installed.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import logging
import re

import pytest
from fontTools.ttLib import TTFont
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.outputs import webfont
from pipeline.outputs.formatting import render_page

HAS_FONT = importlib.util.find_spec("noto_cjk_sans_otc") is not None
needs_font = pytest.mark.skipif(not HAS_FONT, reason="noto-cjk-sans-otc is not installed")

SAMPLE = (
    "示例区（合成样例） 卫片执法整改情况报告：城关镇 东村、西村；河西乡 南庄村。"
    "整改率(按面积) ≥ 85% · 违法占地比例 < 15% — 1 亩 = 10000/15 平方米"
)
SRC = re.compile(r"url\(data:font/(woff2?);base64,([A-Za-z0-9+/=]+)\)")
RANGE = re.compile(r"unicode-range: ([^;]+);")


def embedded(css: str) -> tuple[TTFont, set[int]]:
    """The font in a ``@font-face`` rule, opened by fontTools, and its unicode-range."""
    flavor, data = SRC.search(css).groups()
    font = TTFont(io.BytesIO(base64.b64decode(data)))
    assert font.flavor == flavor
    return font, parse_range(RANGE.search(css).group(1))


def parse_range(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().removeprefix("U+").partition("-")
        out.update(range(int(lo, 16), int(hi or lo, 16) + 1))
    return out


def cjk(text: str) -> set[int]:
    """Code points of the CJK ideographs and punctuation in ``text`` (an independent list)."""
    return {
        ord(c)
        for c in text
        if 0x3001 <= ord(c) <= 0x303F or 0x4E00 <= ord(c) <= 0x9FFF or 0xFF01 <= ord(c) <= 0xFFEF
    }


@pytest.fixture
def fresh_caches():
    webfont.clear_caches()
    yield
    webfont.clear_caches()


@needs_font
def test_subset_covers_every_cjk_character():
    """Every CJK character of the sample is in the subset's cmap and in its unicode-range."""
    css = webfont.font_face_css(SAMPLE)
    font, ranged = embedded(css)
    cmap = font.getBestCmap()
    assert cjk(SAMPLE) <= set(cmap), "a glyph for every Chinese character"
    assert cjk(SAMPLE) <= ranged
    assert ord("（") in ranged and ord("；") in ranged, "full-width punctuation comes along"
    assert not {ord(c) for c in "≥·—%aA1"} & ranged, "Latin text and symbols: system fonts"
    assert ranged <= set(cmap), "the range promises only glyphs the subset has"


@needs_font
def test_subset_is_a_valid_small_font():
    """fontTools reads every table back; only the needed glyphs are kept (plus .notdef and
    the few variant glyphs that the cmap's variation sequences name)."""
    css = webfont.font_face_css(SAMPLE)
    font, ranged = embedded(css)
    for tag in font.keys():  # noqa: SIM118 (TTFont is not iterable)
        font[tag]  # decompiles: raises on a corrupt table
    assert "CFF " in font and "cmap" in font
    assert len(font.getGlyphOrder()) <= len(ranged) + 5, "not the font's 65 535 glyphs"
    assert "GSUB" not in font, "layout alternates are dropped (see font_face_css Notes)"
    assert font["name"].getDebugName(13), "the OFL licence travels with the font"
    assert f'font-family: "{webfont.FONT_FAMILY}"' in css and "http" not in css


@needs_font
def test_subset_bytes_are_deterministic(fresh_caches):
    """A fresh process (caches cleared) makes the same bytes: no clock, no randomness."""
    first = webfont.subset_font(SAMPLE)
    webfont.clear_caches()
    second = webfont.subset_font(SAMPLE)
    assert first is not second, "really recomputed, not the cached object"
    assert first == second


@needs_font
def test_cached_per_character_set():
    """Texts with the same characters share one cached rule; the order of text is irrelevant."""
    assert webfont.font_face_css(SAMPLE) is webfont.font_face_css(SAMPLE[::-1] + "abc")
    assert webfont.page_characters("&#x4E2D;中 a·") == "中", "references decoded, deduplicated"


@needs_font
def test_300_distinct_characters_stay_well_under_500_kb():
    """Size budget: 300 spread-out ideographs (plus the sample) add far less than 500 KB."""
    text = SAMPLE + "".join(chr(cp) for cp in range(0x4E00, 0x9FA5, 69)[:300])
    css = webfont.font_face_css(text)
    assert len(cjk(text)) >= 300
    assert len(css.encode("ascii")) < 250_000


def test_no_embeddable_characters_no_rule():
    """ASCII-only pages need no font: the rule is empty, not an empty @font-face."""
    assert webfont.font_face_css("<p>Satellite report 2024 &lt; 15% · ≥ — Σ m²</p>") == ""


def test_missing_font_package_warns_and_pages_still_render(fresh_caches, monkeypatch, caplog):
    """Without the font package: no @font-face, one warning, the page renders with Chinese."""
    monkeypatch.setattr(webfont, "BUNDLED_FONT_MODULES", ("landwatch_no_such_font_package",))
    with caplog.at_level(logging.WARNING, logger="pipeline.outputs.webfont"):
        assert webfont.font_face_css(SAMPLE) == ""
        assert webfont.font_face_css(SAMPLE + "新") == ""
        assert webfont.embedding_id() == "none"
    warnings = [r for r in caplog.records if "pip install noto-cjk-sans-otc" in r.getMessage()]
    assert len(warnings) == 1, "warned once per process, not once per page"
    page = render_page(
        "patch_list.html.j2",
        area_name="示例区",
        date="2024-05-01",
        code="130609101000",
        name="城关镇",
        person="",
        n_patches=0,
        area_m2=0.0,
        villages=[],
        version="test",
        level="township",
        has_chips=False,
        has_learning=False,
    )
    assert "@font-face" not in page and "城关镇" in page
    assert f'font-family: "{webfont.FONT_FAMILY}", "Noto Sans CJK SC"' in page


@needs_font
def test_rendered_page_embeds_its_own_characters():
    """render_page: the rule sits in <style> and covers the CJK text of the rendered page."""
    page = render_page(
        "patch_list.html.j2",
        area_name="示例区",
        date="2024-05-01",
        code="130609101000",
        name="鹳雀楼镇",  # rare characters, absent from the template itself
        person="",
        n_patches=0,
        area_m2=0.0,
        villages=[],
        version="test",
        level="township",
        has_chips=False,
        has_learning=False,
    )
    style = page[page.index("<style>") : page.index("</style>")]
    assert style.index("@font-face") < style.index("body {")
    _, ranged = embedded(style)
    assert cjk(page) <= ranged and {ord("鹳"), ord("雀")} <= ranged


@given(st.lists(st.integers(0x80, 0x2FFFF), unique=True, max_size=60))
def test_unicode_range_round_trips(codepoints):
    """unicode_range merges runs without losing or inventing a code point."""
    text = webfont.unicode_range(sorted(codepoints))
    assert (parse_range(text) if text else set()) == set(codepoints)


@needs_font
@settings(max_examples=5, deadline=None)
@given(st.text(alphabet="中国村镇乡街道违法整改率亩（）：，、abc 123·—", max_size=40))
def test_any_text_is_covered(text):
    """Property: whatever the text, every CJK character in it is drawn by the subset."""
    css = webfont.font_face_css(text)
    if not cjk(text):
        assert css == "", "nothing to embed for Latin text and symbols"
        return
    font, ranged = embedded(css)
    assert cjk(text) <= ranged <= set(font.getBestCmap())
