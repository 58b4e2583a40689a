"""The HTML report in a real headless browser (Chromium), with a screenshot kept for people.

The browser is the first of ``chromium``, ``chromium-browser`` and ``google-chrome`` that
:func:`shutil.which` finds on ``PATH`` (Debian's package puts ``/usr/bin/chromium`` there).
Without one the tests are skipped, saying how to install it (``apt-get install chromium``);
CI installs it in ``.ci/run`` before ``make test``, so there they run.

The report is the one of ``test_report.py`` (:func:`tests.district.write_district_report`: the fake district of
``tests/district.py``, with a trend). One chromium run loads it from ``file://`` with both
``--dump-dom`` (the page rendered: district name, every section heading of the template, no
``<script``) and ``--screenshot`` (a 1280 x 3000 PNG, not blank, with coloured charts). The
screenshot is copied into the test's ``tmp_path`` and, when ``LANDWATCH_SCREENSHOTS`` names a
folder, into that folder as ``report.png`` (for people and CI to look at).

Console messages are read from chromium's own log (``--enable-logging=stderr --v=0``), where
every ``console.*`` call and uncaught exception shows as an ``INFO:CONSOLE`` line. The report
has no script at all, so *any* console line is a defect. A calibration test proves the scan
sees an error on a page that makes one, so the "no console errors" check is not vacuous.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.outputs import report as report_module
from pipeline.outputs import webfont
from tests.district import write_district_report


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """ReportPaths of one full report of the fake district."""
    return write_district_report(tmp_path_factory.mktemp("report"))


BROWSERS = ("chromium", "chromium-browser", "google-chrome")
AREA_NAME = "示例区（合成样例）"  # the area_name the report fixture passes
TEMPLATE = Path(report_module.__file__).parent / "templates" / "report.html.j2"
WIDTH, HEIGHT = 1280, 3000
TIMEOUT_S = 60
CONSOLE_LINE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of the browser binary; the tests are skipped when there is none."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        f"no headless browser on PATH (looked for {', '.join(BROWSERS)}); install Debian's "
        "with `sudo apt-get install -y --no-install-recommends chromium`"
    )


def _run(chromium: str, url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    """One chromium run with a fresh profile folder in ``tmp``."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def console_lines(stderr: str) -> list[str]:
    """The console messages (``console.*`` calls, uncaught exceptions) in chromium's log."""
    return [m.group(1) for m in map(CONSOLE_LINE.search, stderr.splitlines()) if m]


def template_headings() -> dict[str, str]:
    """``id`` -> the fixed text at the start of each ``<h2>`` of the report template."""
    found = re.findall(r'<h2 id="([^"]+)">([^<{]+)', TEMPLATE.read_text(encoding="utf-8"))
    return {section: heading.strip() for section, heading in found}


@pytest.fixture(scope="module")
def rendered(chromium, report, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One chromium run on the report: its DOM (stdout) and a 1280 x 3000 screenshot."""
    tmp = tmp_path_factory.mktemp("browser")
    shot = tmp / "report.png"
    result = _run(
        chromium,
        report.html.as_uri(),
        tmp,
        "--dump-dom",
        f"--screenshot={shot}",
        f"--window-size={WIDTH},{HEIGHT}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip(), f"no DOM dumped: {result.stderr[-2000:]}"
    assert shot.is_file(), f"no screenshot written: {result.stderr[-2000:]}"
    return result, shot


def test_report_renders_headings_tables_and_no_script(rendered):
    result, _ = rendered
    dom = result.stdout
    assert f"<h1>{AREA_NAME} 卫片执法整改情况报告</h1>" in dom, "the page rendered its title"
    headings = template_headings()
    assert len(headings) >= 9, f"the template's sections were not found: {headings}"
    for section, heading in headings.items():
        assert f'<h2 id="{section}">{heading}' in dom, f"section {section!r} is in the DOM"
    assert "<script" not in dom.lower(), "the report stays free of scripts"
    img = re.search(r'<img id="map-image"[^>]*src="data:image/png;base64,([^"]+)"', dom)
    assert img, "the map <img> is in the DOM"
    Image.open(io.BytesIO(base64.b64decode(img.group(1)))).verify()  # a decodable PNG
    assert 'id="ranking-image"' in dom and 'id="trend-image"' in dom
    assert dom.count("<table") >= 2, "township ranking and patch tables"
    assert "<th>乡镇 township</th>" in dom
    if webfont.embedding_id() != "none":
        assert "@font-face" in dom, "the embedded CJK font subset is in the page's CSS"
    assert console_lines(result.stderr) == [], "the report logs nothing to the console"


def test_report_screenshot(rendered, tmp_path):
    """The screenshot: kept in tmp_path (and in $LANDWATCH_SCREENSHOTS when set), not blank."""
    _, shot = rendered
    kept = [tmp_path / "report.png"]
    if os.environ.get("LANDWATCH_SCREENSHOTS"):
        folder = Path(os.environ["LANDWATCH_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        kept.append(folder / "report.png")
    for path in kept:
        shutil.copyfile(shot, path)
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)
        rgb = image.convert("RGB")
        gray = np.asarray(rgb.convert("L"))
        r, g, b = (np.asarray(band) for band in rgb.split())
    assert gray.std() > 10, "the screenshot is not one flat colour"
    assert (gray < 128).mean() > 0.005, "there is dark content (text, tables)"
    saturation = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)  # >= 0
    assert (saturation > 80).mean() > 0.005, "there is colour (the charts' rates)"


@pytest.fixture(scope="module")
def probe(chromium, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One chromium run on a small page that draws "中" and "国" in 200 px cells with the
    embedded font subset, then logs an error and throws: its log and a 400 x 200 screenshot.
    (Both calibrations share a run: each chromium start costs about a second.)"""
    tmp = tmp_path_factory.mktemp("probe")
    page, shot = tmp / "probe.html", tmp / "probe.png"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><style>'
        f"{webfont.font_face_css('中国')}"
        f"body {{ margin: 0; font-size: 120px; font-family: {webfont.FONT_STACK}; }}"
        "div { display: inline-block; width: 200px; height: 200px; }"
        "</style></head><body><div>中</div><div>国</div>"
        "<script>console.error('boom'); notDefined();</script></body></html>",
        encoding="utf-8",
    )
    result = _run(
        chromium, page.as_uri(), tmp, "--dump-dom", f"--screenshot={shot}", "--window-size=400,200"
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    return result, shot


def test_console_scan_sees_errors(probe):
    """Calibration: a page that logs an error and throws is caught by the scan."""
    result, _ = probe
    lines = console_lines(result.stderr)
    assert any("boom" in line for line in lines), result.stderr[-2000:]
    assert any("Uncaught ReferenceError" in line for line in lines)


@pytest.mark.skipif(webfont.embedding_id() == "none", reason="noto-cjk-sans-otc is not installed")
def test_embedded_font_draws_distinct_chinese_glyphs(probe):
    """Without a CJK font chromium draws every Chinese character as the same empty box (so
    "中" and "国" side by side give identical halves on a machine without CJK fonts, like the
    CI one); with the page's embedded subset the two characters must look different."""
    _, shot = probe
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.int16)
    left, right = pixels[:, :200], pixels[:, 200:]
    assert (left < 128).any() and (right < 128).any(), "both glyphs are drawn"
    assert np.abs(left - right).max() > 128, "two different glyphs, not two boxes"
