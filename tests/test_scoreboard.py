"""The development scoreboard's scoring (pure, tiny arrays) and its dataset loaders.

Loaders must skip cleanly when the shared data folder is absent; the tests that read it
skip with a reason when it is absent (``$LANDWATCH_DATA``, default ``../shared/data``).
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from benchmarks import scoreboard, scoreboard_data
from benchmarks.scoreboard_score import (
    SUMMARY_KEYS,
    labelled_scores,
    overlap,
    pair_f1,
    pooled_synthetic,
    shifted_pair,
    summary_line,
    synthetic_figures,
)
from pipeline.detection.accuracy import pixel_scores


# --------------------------------------------------------------------------- pixels
def test_labelled_scores_count_only_sampled_pixels():
    """Unlabelled pixels, and pixels marked both changed and unchanged, are not scored."""
    predicted = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], bool)
    change = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], bool)
    nochange = np.array([[0, 1, 0, 0], [0, 1, 0, 1]], bool)  # (1, 3) is marked both
    s = labelled_scores(predicted, change, nochange)
    # scored: (0,0) tp, (0,1) fp, (0,2) fn, (1,1) tn; (1,0) and (1,2) are unlabelled
    assert (s.tp, s.fp, s.fn, s.tn) == (1, 1, 1, 1)
    assert s.f1 == pytest.approx(0.5)
    valid = np.ones_like(predicted)
    valid[0, 0] = False
    s = labelled_scores(predicted, change, nochange, valid)
    assert (s.tp, s.fp, s.fn, s.tn) == (0, 1, 1, 1)


def test_pair_f1_convention_for_a_label_without_change():
    quiet = np.zeros((3, 3), bool)
    assert pair_f1(pixel_scores(quiet, quiet)) == 1.0
    flagged = quiet.copy()
    flagged[1, 1] = True
    assert pair_f1(pixel_scores(flagged, quiet)) == 0.0
    assert pair_f1(pixel_scores(flagged, flagged)) == 1.0


def test_shifted_pair_displaces_the_later_image_along_both_axes():
    """A roof at (5, 5) in both epochs sits k px further down and right in the later image
    than in the earlier image and the label after the shift; every array is cropped alike."""
    before = np.zeros((2, 10, 12), np.uint8)
    after = before.copy()
    label = np.zeros((10, 12), bool)
    before[:, 5, 5] = after[:, 5, 5] = 200
    label[5, 5] = True
    for k in (1, 2, 3):
        b, a, lab = shifted_pair(before, after, label, k)
        assert b.shape == a.shape == (2, 10 - k, 12 - k) and lab.shape == (10 - k, 12 - k)
        assert np.argwhere(lab).tolist() == [[5 - k, 5 - k]]
        assert np.argwhere(b[0]).tolist() == [[5 - k, 5 - k]]
        assert np.argwhere(a[0]).tolist() == [[5, 5]]
        rows, cols = overlap(label.shape, k)
        assert np.array_equal(label[rows, cols], lab)
    same = shifted_pair(before, after, label, 0)
    assert all(x is y for x, y in zip(same, (before, after, label), strict=True))
    with pytest.raises(ValueError, match="shift"):
        overlap((10, 12), 10)


# --------------------------------------------------------------------------- objects
def _truth() -> gpd.GeoDataFrame:
    rows = [  # kind, area, farmland, geometry
        ("illegal", 400.0, 400.0, shapely.box(0, 0, 20, 20)),
        ("nonfarm", 400.0, 0.0, shapely.box(100, 0, 120, 20)),
        ("legal", 400.0, 400.0, shapely.box(200, 0, 220, 20)),
        ("illegal", 100.0, 100.0, shapely.box(300, 0, 310, 10)),  # under 200 m²
        ("earthworks", 900.0, 900.0, shapely.box(400, 0, 430, 30)),
    ]
    kind, area, farm, geom = zip(*rows, strict=True)
    return gpd.GeoDataFrame(
        {"kind": kind, "area_m2": area, "farmland_m2": farm}, geometry=list(geom), crs=3857
    )


def test_synthetic_figures_recall_off_farmland_false_and_seasonal():
    patches = gpd.GeoDataFrame(
        geometry=[
            shapely.box(-2, -2, 18, 18),  # covers 81 % of the illegal building: found
            shapely.box(405, 5, 410, 10),  # on the earthworks: not false
            shapely.box(500, 0, 520, 20),  # on a seasonal parcel: false, seasonal
            shapely.box(700, 0, 720, 20),  # nowhere: false
            shapely.box(110, 0, 111, 1),  # touches the nonfarm building, covers too little
        ],
        crs=3857,
    )
    seasonal = gpd.GeoDataFrame(geometry=[shapely.box(490, -10, 600, 50)], crs=3857)
    f = synthetic_figures(patches, _truth(), seasonal, area_km2=2.0)
    assert f == {
        "targets": 2,
        "found": 1,
        "offfarm_targets": 1,
        "offfarm_found": 0,
        "patches": 5,
        "false": 2,
        "seasonal_false": 1,
        "area_km2": 2.0,
    }
    truth = _truth().assign(off_farmland=[False, False, False, True, False])
    assert synthetic_figures(patches, truth, seasonal, area_km2=2.0)["offfarm_targets"] == 0
    pooled = pooled_synthetic([f, {**f, "found": 2, "false": 0, "seasonal_false": 0}])
    assert pooled == {
        "recall": 0.75,
        "offfarm_recall": 0.0,
        "fp_km2": 0.5,
        "seasonal_fp_km2": 0.25,
    }


def test_summary_line_lists_every_figure_in_order():
    line = summary_line({"oscd_f1": 0.41234, "norcia_fp_km2": 0.456})
    keys = [part.split("=")[0] for part in line.split()]
    assert keys == list(SUMMARY_KEYS)
    assert "oscd_f1=0.412" in line and "norcia_fp_km2=0.46" in line
    assert "landsat_f1=nan" in line


# --------------------------------------------------------------------------- loaders
def test_rgb_pair_is_written_blue_first_off_the_pixel_grid(tmp_path):
    rgb = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    transform = scoreboard_data.pair_transform(2, 0.5)
    scoreboard_data.write_bgr(tmp_path / "x.tif", rgb, transform)
    with rasterio.open(tmp_path / "x.tif") as src:
        assert src.descriptions == ("blue", "green", "red")
        assert np.array_equal(src.read(), rgb[::-1])
        assert src.nodata is None and src.crs.to_string() == scoreboard_data.RGB_CRS
        for origin in (src.transform.c, src.transform.f):
            assert not math.isclose(origin / 0.5, round(origin / 0.5), abs_tol=1e-6)


def _settings(root, tmp_path) -> scoreboard.Settings:
    return scoreboard.Settings(
        detect={}, rgb_detect={"min_area_m2": 50}, root=root, cache=tmp_path,
        work=tmp_path / "work", workers=1, quick=True, county=False,
    )  # fmt: skip


@pytest.mark.parametrize("section", ["oscd", "landsat", "levir", "dsifn"])
def test_sections_skip_cleanly_without_data(tmp_path, capsys, section):
    board = scoreboard.Board()
    scoreboard.SECTIONS[section](_settings(tmp_path / "absent", tmp_path), board, executor=None)
    assert board.rows == [] and board.errors == [] and board.figures == {}
    assert "skipped" in capsys.readouterr().out
    assert scoreboard_data.find_landsat(tmp_path) == []
    assert scoreboard_data.find_pairs(tmp_path, "levir_tiles") == []


@pytest.fixture(scope="module")
def data_root():
    root = scoreboard_data.data_root()
    if not (root / "landsat").is_dir() or not (root / "rgb_pairs").is_dir():
        pytest.skip(f"shared data folder {root} absent (set LANDWATCH_DATA to run these)")
    return root


def test_loaders_find_the_shared_data(data_root):
    (pair,) = scoreboard_data.find_landsat(data_root)
    assert scoreboard_data.georeferenced(pair.before, data_root) == pair.before  # ENVI map info
    change = scoreboard_data._read_label(pair.change)
    unchanged = scoreboard_data._read_label(pair.unchanged)
    assert change.any() and unchanged.any() and not (change & unchanged).any()
    tiles = scoreboard_data.find_pairs(data_root, "levir_tiles")
    assert len(tiles) == 5 and all(t.resolution_m == 0.5 for t in tiles)
    assert len(scoreboard_data.find_pairs(data_root, "dsifn_samples", limit=3)) == 3
