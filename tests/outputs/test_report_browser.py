"""The HTML report in a real headless browser (Debian's chromium).

Chromium is installed by this module's own set-up when missing (``apt-get install -y
chromium``, only as root with apt available; otherwise the tests are skipped with the reason).
A failed install is remembered in pytest's cache so it is tried once, not on every run.

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

from pipeline.outputs import webfont
from tests.samples import ROOT, RUN_DATE

ARTIFACTS = ROOT / "test-artifacts"
CACHE_KEY = "landwatch/chromium-install"
CONSOLE_LINE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)


@pytest.fixture(scope="module")
def chromium(request) -> str:
    """Path of the chromium binary; installed with apt-get (once) when missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    cache = request.config.cache
    if cache.get(CACHE_KEY, None) == "failed":
        pytest.skip("chromium install failed earlier (delete .pytest_cache to retry)")
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    ok = subprocess.run(install, env=env, capture_output=True, timeout=900).returncode == 0
    if not ok:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        ok = subprocess.run(install, env=env, capture_output=True, timeout=900).returncode == 0
    found = shutil.which("chromium")
    if not ok or not found:
        cache.set(CACHE_KEY, "failed")
        pytest.skip("apt-get install chromium failed")
    cache.set(CACHE_KEY, "installed")
    return found


def _run(chromium: str, url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
    )


def console_lines(stderr: str) -> list[str]:
    """The console messages (``console.*`` calls, uncaught exceptions) in chromium's log."""
    return [m.group(1) for m in map(CONSOLE_LINE.search, stderr.splitlines()) if m]


@pytest.fixture(scope="module")
def report_html(sample_run) -> Path:
    path = sample_run.folder / "out" / "reports" / RUN_DATE / "report.html"
    assert path.is_file(), f"the sample run wrote no report at {path}"
    return path


def test_console_scan_sees_errors(chromium, tmp_path):
    """Calibration: a page that logs an error and throws is caught by the scan."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<html><body><script>console.error('boom'); notDefined();</script></body></html>"
    )
    result = _run(chromium, page.as_uri(), tmp_path, "--dump-dom")
    lines = console_lines(result.stderr)
    assert any("boom" in line for line in lines), result.stderr[-2000:]
    assert any("Uncaught ReferenceError" in line for line in lines)


def test_report_loads_with_map_tables_and_no_console_errors(chromium, report_html, tmp_path):
    result = _run(chromium, report_html.as_uri(), tmp_path, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "卫片执法整改情况报告" in dom, "the page loaded (title heading in the DOM)"
    img = re.search(r'<img id="map-image"[^>]*src="data:image/png;base64,([^"]+)"', dom)
    assert img, "the map <img> is in the DOM"
    Image.open(io.BytesIO(base64.b64decode(img.group(1)))).verify()  # a decodable PNG
    assert 'id="ranking-image"' in dom
    assert dom.count("<table") >= 2, "township ranking and patch tables"
    assert "<th>乡镇 township</th>" in dom
    if webfont.embedding_id() != "none":
        assert "@font-face" in dom, "the embedded CJK font subset is in the page's CSS"
    assert console_lines(result.stderr) == [], "the report logs nothing to the console"


def test_report_screenshot(chromium, report_html, tmp_path):
    """A 1280 x 2000 screenshot, kept in test-artifacts/report.png for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    result = _run(
        chromium,
        report_html.as_uri(),
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        "--hide-scrollbars",
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 10, "the screenshot is not blank"
    assert (pixels < 200).mean() > 0.02, "there is dark content (text, map, tables)"
    assert console_lines(result.stderr) == []


@pytest.mark.skipif(webfont.embedding_id() == "none", reason="noto-cjk-sans-otc is not installed")
def test_embedded_font_draws_distinct_chinese_glyphs(chromium, tmp_path):
    """Without a CJK font chromium draws every Chinese character as the same empty box (so
    "中" and "国" give identical screenshots on a machine without CJK fonts, like the CI
    one); with the page's embedded subset the two characters must look different."""
    shots = []
    for char in "中国":
        page = tmp_path / f"{ord(char):x}.html"
        page.write_text(
            '<!DOCTYPE html><html><head><meta charset="utf-8"><style>'
            f"{webfont.font_face_css(char)}"
            f"body {{ margin: 0; font-size: 120px; font-family: {webfont.FONT_STACK}; }}"
            f"</style></head><body>{char}</body></html>",
            encoding="utf-8",
        )
        shot = tmp_path / f"{ord(char):x}.png"
        result = _run(
            chromium,
            page.as_uri(),
            tmp_path,
            f"--screenshot={shot}",
            "--window-size=200,200",
            "--hide-scrollbars",
        )
        assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
        shots.append(np.asarray(Image.open(shot).convert("L"), dtype=np.int16))
    assert (shots[0] < 128).any(), "a glyph is drawn"
    assert np.abs(shots[0] - shots[1]).max() > 128, "two different glyphs, not two boxes"
