"""The context screen: a patch whose change is the change of the ground around it (a stronger
fragment of a ploughed parcel) is dropped; a new roof on the same parcel is kept."""

from __future__ import annotations

import numpy as np
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import DetectConfig
from pipeline.detection import context
from pipeline.detection.context import MIN_RING_PX, ring_contrast
from pipeline.detection.pair import MASK_CHANGE, MASK_NO_CHANGE, detect_pair
from pipeline.ops.executor import make_executor
from tests.rasters import ROOF, SOIL, VEGETATION, grid_transform, make_config, write_tif

EPOCHS = {"2016": ["2016/*.tif"], "2017": ["2017/*.tif"]}


def _square(shape, r0, r1, c0, c1):
    out = np.zeros(shape, bool)
    out[r0:r1, c0:c1] = True
    return out


SHAPE = (40, 40)
INSIDE = _square(SHAPE, 15, 25, 15, 25)
VALID = np.ones(SHAPE, bool)


def _ground(bands=4, value=1.0):
    return np.full((bands, *SHAPE), value, dtype=np.float64)


def test_a_patch_that_changed_like_its_ring_has_no_contrast_and_a_new_object_has():
    before, after = _ground(), _ground(value=3.0)  # the whole parcel changed by 2 sd
    assert ring_contrast(before, after, INSIDE, INSIDE, VALID) == 0.0
    after[:, INSIDE] += np.array([3.0, 1.0, -1.0, 3.0])[:, None]  # a roof: its own change
    assert np.isclose(ring_contrast(before, after, INSIDE, INSIDE, VALID), np.sqrt(5.0))


def test_an_unchanged_object_under_haze_has_no_contrast():
    """after = t * before + airlight (per band) for t in [0.5, 2]: no contrast; a roof that
    turned from bright to dark against the same ground has."""
    before = _ground()
    before[:, INSIDE] += np.array([2.0, 1.5, 1.0, 0.5])[:, None]  # an old bright roof
    for t in (0.5, 0.7, 1.0, 1.6, 2.0):
        hazy = t * before + np.array([0.8, 0.6, 0.4, 0.2])[:, None, None]
        assert np.isclose(ring_contrast(before, hazy, INSIDE, INSIDE, VALID), 0.0, atol=1e-12)
    darker = before.copy()
    darker[:, INSIDE] = before[:, ~INSIDE].mean(axis=1)[:, None] - 1.0
    assert ring_contrast(before, darker, INSIDE, INSIDE, VALID) > 1.0


def test_the_ring_leaves_out_other_patches_and_invalid_pixels():
    before, after = _ground(), _ground()
    others = _square(SHAPE, 12, 28, 12, 28)  # a larger detection around it
    after[:, others & ~INSIDE] = 50.0  # would dominate the ring if it were in it
    assert ring_contrast(before, after, INSIDE, others | INSIDE, VALID) == 0.0
    # nothing left to compare with: no contrast, the patch is kept
    assert np.isnan(ring_contrast(before, after, INSIDE, INSIDE, np.zeros_like(VALID)))


@settings(max_examples=40, deadline=None)
@given(
    base=st.floats(-5, 5),
    scale=st.floats(0.1, 10),
    r0=st.integers(2, 20),
    c0=st.integers(2, 20),
    size=st.integers(1, 12),
)
def test_contrast_ignores_what_changed_everywhere_and_scales_with_the_data(
    base, scale, r0, c0, size
):
    """The same value added to every pixel of an epoch leaves the contrast as it was;
    multiplying both epochs by a factor multiplies it."""
    rng = np.random.default_rng(r0 * 100 + c0)
    before = rng.normal(0, 0.2, (3, *SHAPE))
    after = rng.normal(0, 0.2, (3, *SHAPE))
    inside = _square(SHAPE, r0, r0 + size, c0, c0 + size)
    after[:, inside] += np.array([1.0, -0.5, 0.8])[:, None]
    ref = ring_contrast(before, after, inside, inside, VALID)
    assert np.isclose(ring_contrast(before, after + base, inside, inside, VALID), ref)
    assert np.isclose(ring_contrast(before - base, after, inside, inside, VALID), ref)
    assert np.isclose(
        ring_contrast(before * scale, after * scale, inside, inside, VALID), ref * scale
    )


def test_empty_and_oversized_patches_get_no_contrast_and_are_not_read():
    """No read happens (no sources given): an empty patch and one wider than a worker's
    window are kept as they are (NaN)."""
    import shapely
    from affine import Affine

    from pipeline.detection.target_grid import TargetGrid

    grid = TargetGrid("EPSG:32650", Affine(2, 0, 0, 0, -2, 0), 10_000, 10_000)
    huge = shapely.box(0, 0, context.MAX_WINDOW_PX + 10, 20)
    geoms = np.array([shapely.Polygon(), huge], dtype=object)
    out = context.patch_contrasts(geoms, geoms, None, grid, (1.0, 1.0, 1.0, 1.0))
    assert np.isnan(out).all() and out.shape == (2,)


def test_large_patches_are_read_alone_and_small_ones_by_tile():
    bounds = np.array([[10, 10, 20, 20], [30, 40, 50, 60], [600, 10, 620, 30], [0, 0, 900, 50]])
    size = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]).astype(float)
    groups = context._tile_groups(bounds.astype(float), np.arange(4), size)
    assert sorted(sorted(g.tolist()) for g in groups) == [[0, 1], [2], [3]]


def test_min_ring_is_documented_small():
    assert 1 <= MIN_RING_PX <= 50


ROOF_AT = (60, 60, 12)  # (row, col, size): a new roof on the field


def _field_with_roof(folder):
    """A 160 × 160 field, all of it a little barer in 2017 (30 % towards soil, noisy), and a
    new roof on it."""
    rng = np.random.default_rng(3)
    shape = (200, 200)
    veg, soil = np.array(VEGETATION, float), np.array(SOIL, float)
    before = veg[:, None, None] + rng.normal(0, 30, (4, *shape))
    after = veg[:, None, None] + rng.normal(0, 30, (4, *shape))
    after[:, 20:180, 20:180] = (0.7 * veg + 0.3 * soil)[:, None, None] + rng.normal(
        0, 60, (4, 160, 160)
    )
    r, c, s = ROOF_AT
    after[:, r : r + s, c : c + s] = np.array(ROOF, float)[:, None, None]
    write_tif(folder / "2016/a.tif", np.clip(before, 1, 1e4).astype(np.uint16), grid_transform())
    write_tif(folder / "2017/a.tif", np.clip(after, 1, 1e4).astype(np.uint16), grid_transform())


def _detect(folder, out, contrast):
    detect = DetectConfig(
        method="cva", threshold="fixed", threshold_value=3.0, min_area_m2=40,
        context_contrast=contrast,
    )  # fmt: skip
    with make_executor(1) as ex:
        return detect_pair(make_config(folder, EPOCHS, detect=detect), ("2016", "2017"), out, ex)


def test_detect_drops_fragments_of_a_changed_field_and_keeps_the_roof(tmp_path):
    """A fixed CVA cut inside the field's noise finds dozens of fragments of the field
    besides the roof; the context screen drops most of them (their change is the field's)
    and keeps the roof whole."""
    _field_with_roof(tmp_path)
    off = _detect(tmp_path, tmp_path / "off", None)
    on = _detect(tmp_path, tmp_path / "on", 0.5)
    assert off.stats["n_patches_context"] == 0 and len(off.detections) > 20
    assert on.stats["n_patches_context"] >= 0.75 * len(off.detections)
    assert len(on.detections) == len(off.detections) - on.stats["n_patches_context"]
    with rasterio.open(on.mask_path) as src:
        mask = src.read(1)
    r, c, s = ROOF_AT
    assert (mask[r : r + s, c : c + s] == MASK_CHANGE).all()
    # every screened fragment is "no change" in the mask: only the kept patches remain
    assert (mask == MASK_CHANGE).sum() == on.detections["n_pixels"].sum()
    assert (mask == MASK_NO_CHANGE).sum() > 0


def test_the_screen_does_not_depend_on_how_patches_are_grouped_for_reading(tmp_path, monkeypatch):
    """Patches read in 16 px tiles (a read per few patches) or in one window give the same
    detections."""
    _field_with_roof(tmp_path)
    found = {}
    for tile in (16, 4096):
        monkeypatch.setattr(context, "TILE_PX", tile)
        found[tile] = _detect(tmp_path, tmp_path / f"out{tile}", 0.5).detections
    assert found[16]["n_pixels"].tolist() == found[4096]["n_pixels"].tolist()
    assert found[16].geometry.geom_equals(found[4096].geometry).all()
    assert len(found[16]) > 0
