"""Every change method on RGB-only imagery (blue, green, red; no nir), end to end through
:func:`pipeline.detection.pair.detect_pair` on real GeoTIFFs.

Scene: 160 x 160 px at 2 m of noisy crop land with bare village ground in the lower right;
between the dates the top quarter is ploughed (a large, common seasonal change) and a grey
roof of 14 x 14 px (784 m²) is built on the crop land. Epoch 2 has a per-band gain, an
offset and more noise. Without nir, vegetation comes from the visible bands (VDVI,
:func:`pipeline.bands.vegetation_index`).
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from pipeline.config import DetectConfig
from pipeline.detection.pair import detect_pair
from pipeline.ops.executor import make_executor
from tests.rasters import (
    GROUND,
    ROOF,
    SOIL,
    VEGETATION,
    X0,
    Y0,
    grid_transform,
    make_config,
    write_tif,
)

RGB = {"blue": 1, "green": 2, "red": 3}
EPOCHS = {"2016": ["2016/*.tif"], "2017": ["2017/*.tif"]}
ROOF_RCS = (70, 30, 14)
"""The new roof: top row, left column, size (px)."""
PLOUGHED_ROWS = 40

SETTINGS = {
    "cva": {"threshold": "otsu"},
    "irmad": {"threshold": "chi2"},
    "index": {"threshold": "otsu"},
    "novelty": {
        "threshold": "fixed",
        "threshold_value": 6.0,
        "hysteresis_low": 0.7,
        "novelty_components": 4,
        "novelty_min_weight": 0.05,
    },
    "selftrain": {
        "threshold": "fixed",
        "threshold_value": 0.6,
        "hysteresis_low": 0.7,
        "min_mean_score": 1.0,
        "smooth_sigma_m": 4.0,
        "sample_step": 2,  # a small scene: enough self-training examples
        "selftrain_change_quantile": 0.98,
    },
}
"""A setting per method (the ``config.yaml`` / examples' ones, scaled to a small scene)."""


def _rgb(spectrum) -> np.ndarray:
    return np.array(spectrum[:3], dtype=np.float64)[:, None, None]


def rgb_pair(seed: int = 0, n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """The two uint16 (3, n, n) epochs of the module's scene."""
    rng = np.random.default_rng(seed)
    before = np.empty((3, n, n))
    before[:] = _rgb(VEGETATION)
    before[:, 100:, 90:] = _rgb(GROUND)
    after = before.copy()
    after[:, :PLOUGHED_ROWS] = _rgb(SOIL)
    r, c, s = ROOF_RCS
    after[:, r : r + s, c : c + s] = _rgb(ROOF)
    after = after * np.array([1.05, 0.95, 1.1])[:, None, None] + 60.0
    before += rng.normal(0, 30, before.shape)
    after += rng.normal(0, 40, after.shape)
    return tuple(np.clip(np.round(x), 1, 10000).astype(np.uint16) for x in (before, after))


@pytest.fixture(scope="module")
def rgb_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("rgb")
    before, after = rgb_pair()
    write_tif(base / "2016/a.tif", before, grid_transform(), nodata=0)
    write_tif(base / "2017/b.tif", after, grid_transform(), nodata=0)
    return base


def _box(row: int, col: int, height: int, width: int) -> shapely.Polygon:
    return shapely.box(X0 + 2 * col, Y0 - 2 * (row + height), X0 + 2 * (col + width), Y0 - 2 * row)


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_every_method_finds_a_new_roof_on_rgb_only_imagery(rgb_dir, tmp_path, method):
    cfg = make_config(
        rgb_dir, EPOCHS, bands=RGB, detect=DetectConfig(method=method, **SETTINGS[method])
    )
    with make_executor(1) as ex:
        res = detect_pair(cfg, ("2016", "2017"), tmp_path / "out", ex)
    det = res.detections
    r, c, s = ROOF_RCS
    roof = _box(r, c, s, s)
    iou = [g.intersection(roof).area / g.union(roof).area for g in det.geometry]
    assert max(iou, default=0.0) > 0.75, (method, iou)
    assert "mean_to_red" in det and not any("nir" in col for col in det.columns)
    if method in ("novelty", "irmad", "selftrain"):
        # the ploughed strip is common change (novelty) or not the scene's confident change
        ploughed = _box(0, 0, PLOUGHED_ROWS, 160)
        assert not det.geometry.intersects(ploughed).any(), method
