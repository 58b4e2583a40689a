"""The interactive map beside the report: no network needed, patches drawn, and a click on a
patch opens its popup — in the system's headless Chromium driven by Playwright (no browser
download: ``executable_path`` points at Chromium; skipped without it, ``.ci/run`` installs it)."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from PIL import Image

from pipeline.outputs.web_map import MAP_FIGURE, map_html
from tests.district import make_grids, make_patches

BROWSER = next(
    (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
    None,
)

CLICK_TARGET_JS = """(name) => {
  let fig = null;
  for (const m of Bokeh.documents[0]._all_models.values()) {
    try { if (m.name == name) { fig = m; } } catch (e) {}
  }
  const view = Bokeh.index.find_one(fig);
  const d = fig.renderers.find(r => r.glyph && r.glyph.type == 'Patches').data_source.data;
  const mean = a => a.reduce((p, q) => p + q) / a.length;
  const rect = view.canvas_view.events_el.getBoundingClientRect();
  return [rect.left + view.frame.x_scale.compute(mean(d.xs[0])),
          rect.top + view.frame.y_scale.compute(mean(d.ys[0])), d.patch_id[0]];
}"""


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    townships, villages = make_grids()
    html = map_html(make_patches(), townships, villages, title="示例区 图斑地图")
    path = tmp_path_factory.mktemp("map") / "map.html"
    path.write_text(html, encoding="utf-8")
    return path


def test_the_page_is_self_contained(page_file):
    html = page_file.read_text(encoding="utf-8")
    assert not re.search(r"<(script|link)[^>]+(src|href)=\"https?:", html)
    assert "@font-face" in html and "130609201700001" in html
    assert len(html) < 25_000_000


@pytest.mark.skipif(BROWSER is None, reason="no Chromium (apt-get install chromium)")
def test_offline_screenshot_shows_patches_and_a_click_opens_the_popup(page_file, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
        context = browser.new_context(offline=True, viewport={"width": 1200, "height": 800})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri())
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
        page.wait_for_timeout(500)
        shot = tmp_path / "map.png"
        page.screenshot(path=str(shot))
        x, y, pid = page.evaluate(CLICK_TARGET_JS, MAP_FIGURE)
        page.mouse.click(x, y)
        page.wait_for_selector(".popup-id", timeout=5000)
        assert page.inner_text(".popup-id") == pid
        browser.close()
    assert errors == []
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    # the fake district's patches are drawn in status colours (pending amber, illegal red, ...)
    coloured = (pixels.max(axis=2).astype(int) - pixels.min(axis=2)) > 80
    assert coloured.sum() > 20
