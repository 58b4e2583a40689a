"""``landwatch evaluate`` (pipeline.ops.commands.evaluate_run) on files whose scores are known.

A 10 x 10 px change mask at 2 m is written where a run leaves it; the labels (a GeoPackage of
polygons, or a label GeoTIFF) are drawn on pixel edges, so every count below is worked out
by hand from the pixel rectangles:

- the mask flags rows 2-5 x cols 2-5 (16 px); its last row (row 9) is nodata;
- the labelled change is rows 4-9 x cols 4-7 (24 px, 20 of them on valid mask pixels);
- they share rows 4-5 x cols 4-5: TP 4, FP 16 - 4 = 12, FN 20 - 4 = 16;
- precision 4/16, recall 4/20, F1 2·4 / (2·4 + 12 + 16) = 2/9.
"""

from __future__ import annotations

import dataclasses
import json

import geopandas as gpd
import numpy as np
import pytest
import shapely

from pipeline.detection.pair import MASK_CHANGE, MASK_FILE, MASK_NODATA
from pipeline.errors import InputDataError
from pipeline.ops.commands import evaluate_run
from pipeline.ops.workspace import Workspace
from pipeline.schema import PATCHES_LAYER, P
from tests.rasters import UTM, X0, Y0, grid_transform, make_config, write_tif

RES = 2.0
PAIR = ("2016", "2017")
PRECISION, RECALL, F1 = 4 / 16, 4 / 20, 2 / 9


def _pixels(rows: tuple[int, int], cols: tuple[int, int]) -> shapely.Polygon:
    """The map rectangle of pixel rows ``rows[0]:rows[1]`` and columns ``cols[0]:cols[1]``."""
    (r0, r1), (c0, c1) = rows, cols
    return shapely.box(X0 + RES * c0, Y0 - RES * r1, X0 + RES * c1, Y0 - RES * r0)


@pytest.fixture
def cfg(tmp_path):
    """A config whose workspace holds the mask of pair 2016 -> 2017 (no imagery needed)."""
    cfg = make_config(tmp_path, {label: [f"{label}/*.tif"] for label in PAIR})
    cfg = dataclasses.replace(cfg, workspace=tmp_path / "out")
    mask = np.zeros((10, 10), np.uint8)
    mask[2:6, 2:6] = MASK_CHANGE
    mask[9] = MASK_NODATA
    write_tif(
        Workspace(cfg.workspace).pair_dir(PAIR) / MASK_FILE,
        mask,
        grid_transform(RES),
        nodata=MASK_NODATA,
    )
    return cfg


def _check_pixels(pixels, *, tn: int) -> None:
    assert (pixels.tp, pixels.fp, pixels.fn, pixels.tn) == (4, 12, 16, tn)
    assert pixels.precision == pytest.approx(PRECISION)
    assert pixels.recall == pytest.approx(RECALL)
    assert pixels.f1 == pytest.approx(F1)


def test_label_polygons_score_pixels_and_registry_patches(cfg, tmp_path):
    """Polygon labels: the pixel scores above (a label of another kind is left out), the
    result file holds the same figures, and the registry's patches of the pair are matched
    to the labelled object: one covers 16 of its 24 px (a hit), the mask's square touches it,
    one lies far away (false); a patch of another pair is not counted."""
    labels = gpd.GeoDataFrame(
        {"kind": ["illegal", "seasonal"]},
        geometry=[_pixels((4, 10), (4, 8)), _pixels((0, 2), (7, 10))],
        crs=UTM,
    )
    labels.to_file(tmp_path / "labels.gpkg", layer="changes")
    patches = gpd.GeoDataFrame(
        {P.EPOCH_TO: ["2017", "2017", "2017", "2016"]},
        geometry=[
            _pixels((2, 6), (2, 6)),  # the mask's square: covers 4 of 24 px
            _pixels((6, 10), (4, 8)),  # 16 of 24 px: a hit
            _pixels((0, 1), (0, 1)),  # touches no label: false
            _pixels((0, 1), (9, 10)),  # another pair
        ],
        crs=UTM,
    )
    patches.to_file(Workspace(cfg.workspace).registry, layer=PATCHES_LAYER)

    result = evaluate_run(cfg, tmp_path / "labels.gpkg", layer="changes", kinds=("illegal",))

    assert result.pair == PAIR
    _check_pixels(result.pixels, tn=90 - 4 - 12 - 16)  # 90 valid pixels (row 9 is nodata)
    objects = result.objects
    assert (objects.n_truth, objects.n_hit, objects.n_patches, objects.n_false) == (1, 1, 3, 1)
    assert objects.area_km2 == pytest.approx(90 * RES * RES / 1e6)
    assert objects.false_per_km2 == pytest.approx(1 / (90 * RES * RES / 1e6))
    saved = json.loads(result.path.read_text(encoding="utf-8"))
    assert result.path == cfg.workspace / "evaluation" / "2016_2017.json"
    assert saved["pair"] == list(PAIR)
    assert saved["pixels"]["f1"] == pytest.approx(F1)
    assert saved["objects"]["n_hit"] == 1


def test_label_raster_leaves_unknown_pixels_out(cfg, tmp_path):
    """A label GeoTIFF on the mask's grid: 1 change, 0 no change, its nodata (column 0)
    unknown. Unknown pixels count in no cell, so TN falls from 58 to 49 (rows 0-8 x cols 1-9
    are valid: 81 px) while TP, FP, FN and the ratios stay as worked out above; there are no
    object scores for raster labels."""
    labels = np.zeros((10, 10), np.uint8)
    labels[4:10, 4:8] = 1
    labels[:, 0] = 200
    write_tif(tmp_path / "labels.tif", labels, grid_transform(RES), nodata=200)

    result = evaluate_run(cfg, tmp_path / "labels.tif")

    _check_pixels(result.pixels, tn=81 - 4 - 12 - 16)
    assert result.objects is None


def test_without_a_mask_the_error_says_to_run_first(cfg, tmp_path):
    """No mask for the pair: an input error naming the missing file, nothing written."""
    (Workspace(cfg.workspace).pair_dir(PAIR) / MASK_FILE).unlink()
    with pytest.raises(InputDataError, match="landwatch run"):
        evaluate_run(cfg, tmp_path / "labels.gpkg")
    assert not (cfg.workspace / "evaluation").exists()
