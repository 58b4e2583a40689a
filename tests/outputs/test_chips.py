"""Before/after image chips: window maths, stretch, drawing, and reading real GeoTIFFs.

The GeoTIFF scenes come from ``tests.rasters``: vegetation everywhere, a roof square
appearing in the second epoch. Pixel (row, col) of the grid has its upper-left corner at
(X0 + 2 col, Y0 - 2 row) (2 m pixels, UTM 50N).
"""

from __future__ import annotations

import io

import geopandas as gpd
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from shapely.geometry import box

from pipeline.detection.io.imagery import epoch_footprint, epoch_source
from pipeline.detection.target_grid import TargetGrid, target_grid
from pipeline.outputs.chips import (
    CHIP_DISPLAY_PX,
    CHIP_MIN_PX,
    GAP_PX,
    LABEL_PX,
    NODATA_RGB,
    OUTLINE_RGB,
    chip_window,
    read_chips,
    render_chip,
    stretch_limits,
    stretch_true_colour,
)
from pipeline.schema import P
from tests.rasters import UTM, X0, Y0, grid_transform, make_config, scene, write_tif

PNG = b"\x89PNG\r\n\x1a\n"
NAMES = ("blue", "green", "red", "nir")


def _grid(cfg):
    return target_grid(cfg.area, [epoch_footprint(epoch_source(cfg.imagery, e)) for e in "ab"])


@pytest.fixture
def two_epochs(tmp_path):
    """A 200 x 200 px pair: a 10 px roof square at row 100, col 80 appears in epoch b."""
    write_tif(tmp_path / "a/img.tif", scene((200, 200), seed=1), grid_transform())
    write_tif(tmp_path / "b/img.tif", scene((200, 200), [(100, 80, 10)], seed=2), grid_transform())
    return make_config(tmp_path, {"a": ["a/*.tif"], "b": ["b/*.tif"]})


def _patches(geoms, ids=None) -> gpd.GeoDataFrame:
    ids = ids or [f"1306092017{i:05d}" for i in range(1, len(geoms) + 1)]
    return gpd.GeoDataFrame(
        {P.PATCH_ID: ids, P.EPOCH_FROM: "a", P.EPOCH_TO: "b"}, geometry=geoms, crs=UTM
    )


# --------------------------------------------------------------------------- window
@settings(max_examples=50, deadline=None)
@given(
    x=st.floats(0, 300),
    y=st.floats(0, 300),
    w=st.floats(0.5, 500),
    h=st.floats(0.5, 500),
    margin=st.floats(0, 100),
)
def test_chip_window_is_square_and_holds_patch_plus_margin(x, y, w, h, margin):
    """Property: the window is square, at least CHIP_MIN_PX, and covers bounds + margin."""
    grid = TargetGrid(crs=UTM, transform=grid_transform(), width=200, height=200)
    bounds = (X0 + x, Y0 - 400 + y, X0 + x + w, Y0 - 400 + y + h)
    win = chip_window(grid, bounds, margin_m=margin)
    assert win.width == win.height >= CHIP_MIN_PX
    t = grid.window_transform(win)
    left, top = t.c, t.f
    right, bottom = left + win.width * grid.resolution, top - win.height * grid.resolution
    eps = grid.resolution  # floor() of the centre may shift the square by < 1 px
    assert left <= bounds[0] - margin + eps and right >= bounds[2] + margin - eps
    assert top >= bounds[3] + margin - eps and bottom <= bounds[1] - margin + eps


# --------------------------------------------------------------------------- stretch
def test_stretch_shares_limits_and_greys_invalid_pixels():
    data = np.stack([np.full((4, 4), v, np.float32) for v in (1, 2, 3, 4)])
    data[2, 0, 0] = 100.0  # a bright red outlier
    valid = np.ones((4, 4), bool)
    valid[3, 3] = False
    limits = stretch_limits([(data, valid), (data * 2, valid)], NAMES, percentiles=(0, 100))
    np.testing.assert_allclose(limits[0], [3.0, 200.0])  # red = band 3: pooled over epochs
    rgb = stretch_true_colour(data, valid, NAMES, limits)
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 4, 3)
    assert tuple(rgb[3, 3]) == NODATA_RGB
    assert rgb[0, 0, 0] > rgb[1, 1, 0], "the outlier is brighter"


def test_stretch_needs_rgb_bands():
    data = np.zeros((2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="missing"):
        stretch_limits([(data, np.ones((3, 3), bool))], ("nir", "swir"))


# --------------------------------------------------------------------------- drawing
def test_render_chip_draws_outline_on_both_panels_and_is_reproducible():
    panel = np.full((50, 50, 3), 30, np.uint8)
    # patch: map square x 40..60, y -60..-40 in a window whose top-left is (0, 0), 2 m pixels
    outline = box(40, -60, 60, -40)
    args = (panel, panel, outline, (0.0, 0.0, 2.0))
    png = render_chip(*args, labels=("2016", "2017"))
    assert png.startswith(PNG)
    assert png == render_chip(*args, labels=("2016", "2017")), "same input, same bytes"
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert img.shape == (CHIP_DISPLAY_PX + LABEL_PX, 2 * CHIP_DISPLAY_PX + GAP_PX, 3)
    scale = CHIP_DISPLAY_PX / 50
    row = LABEL_PX + round(30 * scale)  # the outline's middle row (y = -50 -> 25 px)
    for left in (0, CHIP_DISPLAY_PX + GAP_PX):
        col = left + round(20 * scale)  # its left edge (x = 40 -> 20 px)
        near = img[row, col - 2 : col + 3]
        assert (near == OUTLINE_RGB).all(axis=1).any(), f"no outline near col {col}"
    assert tuple(img[LABEL_PX + 5, 5]) == (30, 30, 30), "background untouched"


def test_render_chip_handles_holes_and_multipolygons():
    panel = np.zeros((20, 20, 3), np.uint8)
    outer = box(0, -40, 40, 0).difference(box(10, -30, 30, -10))
    multi = outer.union(box(50, -10, 60, 0))
    assert render_chip(panel, panel, multi, (0.0, 0.0, 2.0), labels=("a", "b")).startswith(PNG)


# --------------------------------------------------------------------------- reading
def test_read_chips_from_real_geotiffs(two_epochs):
    # the roof square: cols 80..90, rows 100..110 -> x X0+160..180, y Y0-220..-200
    roof = box(X0 + 160, Y0 - 220, X0 + 180, Y0 - 200)
    edge = box(X0, Y0 - 10, X0 + 10, Y0)  # in the grid's top-left corner
    patches = _patches([roof, edge])
    before = patches.copy()
    chips = read_chips(two_epochs, patches, margin_m=20)
    assert set(chips) == set(patches[P.PATCH_ID])
    img = np.asarray(Image.open(io.BytesIO(chips[patches[P.PATCH_ID][0]])).convert("RGB"))
    h = img.shape[0] - LABEL_PX
    centre = LABEL_PX + h // 2
    left_c, right_c = h // 2, CHIP_DISPLAY_PX + GAP_PX + h // 2
    # the roof (bright in all visible bands) is in the after panel only
    assert img[centre, right_c].mean() > img[centre, left_c].mean() + 60
    # the corner chip reaches off the grid: grey there
    corner = np.asarray(Image.open(io.BytesIO(chips[patches[P.PATCH_ID][1]])).convert("RGB"))
    assert tuple(corner[LABEL_PX + 2, 2]) == NODATA_RGB
    assert read_chips(two_epochs, patches, margin_m=20) == chips, "reproducible bytes"
    assert patches.equals(before), "input not mutated"


def test_read_chips_reprojects_patches_and_skips_unknown_epochs(two_epochs, caplog):
    roof = box(X0 + 160, Y0 - 220, X0 + 180, Y0 - 200)
    patches = _patches([roof, roof], ids=["130609201700001", "130609201700002"])
    patches.loc[1, P.EPOCH_TO] = "z"  # not configured
    geographic = patches.to_crs("EPSG:4326")
    chips = read_chips(two_epochs, geographic)
    assert list(chips) == ["130609201700001"]
    assert "not in 'imagery.epochs'" in caplog.text
    assert read_chips(two_epochs, patches.iloc[:0]) == {}


def test_big_patch_is_read_whole_and_reduced(two_epochs, monkeypatch):
    """A window larger than CHIP_MAX_PX is block-averaged; the PNG keeps its fixed size."""
    import pipeline.outputs.chips as chips_mod

    monkeypatch.setattr(chips_mod, "CHIP_MAX_PX", 50)
    big = box(X0, Y0 - 400, X0 + 400, Y0)  # the whole 200 px scene plus margins
    png = read_chips(two_epochs, _patches([big]))["130609201700001"]
    img = Image.open(io.BytesIO(png))
    assert img.size == (2 * CHIP_DISPLAY_PX + GAP_PX, CHIP_DISPLAY_PX + LABEL_PX)
