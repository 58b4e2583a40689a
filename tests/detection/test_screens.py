"""The patch-level screens (pipeline.detection.screens: cloud, wetting/drying) and the atmospheric
bands in the engine.

Scene for the cloud engine tests: the 300 x 300 px vegetation scene of the engine tests with two
more bands, ``coastal`` (first in the files) and ``cirrus`` (last). In 2017 a roof appears at
R (a ground change: the atmospheric bands do not move) and a cloud at C (every surface band
twice as bright, coastal ×1.8, cirrus ×3). C lies across the 96 px block edges.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio

from pipeline.config import DetectConfig
from pipeline.detection.io.imagery import epoch_source
from pipeline.detection.pair import MASK_CHANGE, MASK_NO_CHANGE, detect_pair
from pipeline.detection.screens import cloud_patches, moisture_patches
from pipeline.ops.executor import make_executor
from tests.rasters import grid_transform, make_config, scene, write_tif

ROOF_AT = (30, 30, 24)
CLOUD_AT = (80, 80, 40)
COASTAL, CIRRUS = 1500.0, 15.0
SIX = {"coastal": 1, "blue": 2, "green": 3, "red": 4, "nir": 5, "cirrus": 6}
FOUR = {"blue": 2, "green": 3, "red": 4, "nir": 5}
EPOCHS = {"2016": ["2016/*.tif"], "2017": ["2017/*.tif"]}


# --------------------------------------------------------------------------- the rule
def _screen(coastal_change, cirrus_change, scene_change=(1.0, 1.0)):
    """Screen patches whose coastal/cirrus means changed by the given factors, in a scene
    whose own means changed by ``scene_change``."""
    coastal_change = np.asarray(coastal_change, float)
    cirrus_change = np.asarray(cirrus_change, float)
    before = {
        "coastal": np.full(coastal_change.shape, 1000.0),
        "cirrus": np.full(coastal_change.shape, 10.0),
    }
    after = {"coastal": 1000.0 * coastal_change, "cirrus": 10.0 * cirrus_change}
    scene_from = {"coastal": 1000.0, "cirrus": 10.0}
    scene_to = {"coastal": 1000.0 * scene_change[0], "cirrus": 10.0 * scene_change[1]}
    return cloud_patches(before, after, scene_from, scene_to, 1.5, 1.25)


def test_both_atmospheric_bands_must_move_together_past_their_ratio():
    got = _screen(
        [1.6, 1 / 1.6, 1.6, 1.1, 1.6, 1.3, 1.2],
        [3.0, 1 / 3.0, 1.2, 3.0, 1 / 3.0, 1.5, 2.0],
    )
    # cloud after; cloud before; cirrus too small; coastal too small; opposite directions;
    # both exactly at their ratio (kept as cloud); coastal just under its ratio
    assert got.tolist() == [True, True, False, False, False, True, False]


def test_the_ratios_are_relative_to_the_scene():
    # a hazier later image as a whole (coastal ×1.3, cirrus ×2 everywhere): a patch that
    # changed like the scene is not a cloud; one that changed that much more is
    got = _screen([1.3, 1.3 * 1.6], [2.0, 2.0 * 3.0], scene_change=(1.3, 2.0))
    assert got.tolist() == [False, True]


def test_a_zero_scene_mean_is_no_evidence():
    # a cirrus band of zeros in the earlier image (a zero-filled stack without nodata)
    out = cloud_patches(
        {"coastal": np.array([1000.0]), "cirrus": np.array([0.0])},
        {"coastal": np.array([1800.0]), "cirrus": np.array([45.0])},
        {"coastal": 1000.0, "cirrus": 0.0},
        {"coastal": 1000.0, "cirrus": 3.0},
        1.5,
        1.25,
    )
    assert out.tolist() == [False]


def test_empty_and_zero_patches_are_not_clouds():
    assert _screen([], []).shape == (0,)
    # a band averaging 0 before (log of infinity) is not evidence of a cloud
    out = cloud_patches(
        {"coastal": np.array([0.0]), "cirrus": np.array([0.0])},
        {"coastal": np.array([5.0]), "cirrus": np.array([5.0])},
        {"coastal": 1.0, "cirrus": 1.0},
        {"coastal": 1.0, "cirrus": 1.0},
        1.5,
        1.25,
    )
    assert out.tolist() == [False]


# --------------------------------------------------------------------------- the engine
def _six_bands(surface: np.ndarray, coastal: np.ndarray, cirrus: np.ndarray) -> np.ndarray:
    return np.concatenate([coastal[None], surface, cirrus[None]]).astype(np.uint16)


@pytest.fixture(scope="module")
def cloudy_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("cloud")
    rng = np.random.default_rng(5)
    shape = (300, 300)

    def atmosphere():
        return (
            np.round(COASTAL + rng.normal(0, 20, shape)),
            np.round(CIRRUS + rng.normal(0, 0.5, shape)),
        )

    before = _six_bands(scene(shape, seed=1), *atmosphere())
    surface = scene(shape, [ROOF_AT], seed=2).astype(np.float64)
    coastal, cirrus = atmosphere()
    r, c, s = CLOUD_AT
    surface[:, r : r + s, c : c + s] *= 2.0
    coastal[r : r + s, c : c + s] *= 1.8
    cirrus[r : r + s, c : c + s] *= 3.0
    after = _six_bands(np.clip(surface, 1, 10000), coastal, cirrus)
    write_tif(base / "2016/a.tif", before, grid_transform(), nodata=0)
    write_tif(base / "2017/a.tif", after, grid_transform(), nodata=0)
    return base


def _detect(base, out, bands, **detect_kw):
    detect = DetectConfig(method="cva", threshold="fixed", threshold_value=4.0, **detect_kw)
    cfg = make_config(base, EPOCHS, bands=bands, detect=detect)
    with make_executor(1) as ex:
        return detect_pair(cfg, ("2016", "2017"), out, ex)


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1)


def _inside(mask, at):
    r, c, s = at
    return mask[r + 2 : r + s - 2, c + 2 : c + s - 2]


def test_the_cloud_patch_is_screened_and_the_roof_kept(cloudy_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.detection.pair"):
        res = _detect(cloudy_dir, tmp_path / "auto", SIX, block_px=96)
    assert res.stats["cloud_screen"] is True
    assert res.stats["n_patches_cloud"] == 1
    assert res.stats["cloud_m2"] == pytest.approx(CLOUD_AT[2] ** 2 * 4, rel=0.1)
    assert len(res.detections) == 1  # the roof
    mask = _read(res.mask_path)
    assert (_inside(mask, ROOF_AT) == MASK_CHANGE).all()
    assert (_inside(mask, CLOUD_AT) == MASK_NO_CHANGE).all()  # erased, not nodata
    assert any("screened as cloud" in r.getMessage() for r in caplog.records)
    # the per-patch means of the atmospheric bands are in the detections
    assert {"mean_from_coastal", "mean_to_cirrus"} <= set(res.detections.columns)


def test_without_the_screen_the_cloud_is_a_patch(cloudy_dir, tmp_path):
    res = _detect(cloudy_dir, tmp_path / "off", SIX, block_px=96, cloud_screen=False)
    assert res.stats["n_patches_cloud"] == 0
    assert len(res.detections) == 2
    assert (_inside(_read(res.mask_path), CLOUD_AT) == MASK_CHANGE).all()


def test_the_methods_never_see_the_atmospheric_bands(cloudy_dir, tmp_path):
    """The score with the coastal and cirrus bands configured (first and last in the files)
    is bit-identical to the score with the four surface bands only, for a method that uses
    every band (CVA) and one that fits a model on them (IR-MAD)."""
    for method, extra in (("cva", {}), ("irmad", {"threshold": "chi2"})):
        kw = {"block_px": 96, "cloud_screen": False, **extra}
        with_atm = _run_method(cloudy_dir, tmp_path / f"{method}6", SIX, method, kw)
        surface = _run_method(cloudy_dir, tmp_path / f"{method}4", FOUR, method, kw)
        np.testing.assert_array_equal(_read(with_atm.score_path), _read(surface.score_path))
        assert with_atm.stats["threshold"] == surface.stats["threshold"]
        assert list(with_atm.stats["mean_from"]) == ["blue", "green", "red", "nir"]


def _run_method(base, out, bands, method, kw):
    detect = DetectConfig(method=method, **{"threshold": "otsu", **kw})
    cfg = make_config(base, EPOCHS, bands=bands, detect=detect)
    with make_executor(1) as ex:
        return detect_pair(cfg, ("2016", "2017"), out, ex)


def test_the_screen_does_not_depend_on_the_block_size(cloudy_dir, tmp_path):
    a = _detect(cloudy_dir, tmp_path / "b64", SIX, block_px=64)
    b = _detect(cloudy_dir, tmp_path / "b256", SIX, block_px=256)
    np.testing.assert_array_equal(_read(a.mask_path), _read(b.mask_path))
    assert a.stats["n_patches_cloud"] == b.stats["n_patches_cloud"] == 1


def test_atmospheric_bands_are_read_last(cloudy_dir):
    cfg = make_config(cloudy_dir, EPOCHS, bands=SIX)
    src = epoch_source(cfg.imagery, "2016")
    assert src.band_names == ("blue", "green", "red", "nir", "coastal", "cirrus")
    assert src.surface_names == ("blue", "green", "red", "nir")
    assert src.files[0].indexes == (2, 3, 4, 5, 1, 6)


def test_cloud_screen_auto_follows_the_configured_bands():
    d = DetectConfig()
    assert d.cloud_screen == "auto"
    assert not d.cloud_screen_on(("blue", "green", "red", "nir"))
    assert d.cloud_screen_on(("blue", "coastal", "cirrus"))
    assert not DetectConfig(cloud_screen=False).cloud_screen_on(("coastal", "cirrus"))


def test_a_gap_in_an_atmospheric_band_loses_no_surface_pixel(cloudy_dir, tmp_path):
    """The later cirrus band has no data (0) over columns 0-99, across the roof and the
    cloud's left part: the surface bands are whole, so the change methods see every pixel —
    the score is the four-band one — and the roof is found. The cloud's mean cirrus is
    unknown (NaN), so it is not screened: no evidence is not evidence of a cloud."""
    base = tmp_path / "gap"
    for epoch in ("2016", "2017"):
        with rasterio.open(cloudy_dir / epoch / "a.tif") as src:
            data, profile = src.read(), src.profile
        if epoch == "2017":
            data[5, :, :100] = 0  # cirrus, the last band
        (base / epoch).mkdir(parents=True)
        with rasterio.open(base / epoch / "a.tif", "w", **profile) as dst:
            dst.write(data)
    gap = _detect(base, tmp_path / "six", SIX, block_px=96)
    surface = _detect(base, tmp_path / "four", FOUR, block_px=96, cloud_screen=False)
    np.testing.assert_array_equal(_read(gap.score_path), _read(surface.score_path))
    assert (_read(gap.mask_path) != 255).all()
    assert gap.stats["n_patches_cloud"] == 0
    assert len(gap.detections) == 2
    cloud = gap.detections.sort_values("n_pixels").iloc[-1]
    assert np.isnan(cloud["mean_to_cirrus"]) and not np.isnan(cloud["mean_to_coastal"])


def test_no_valid_pixel_is_an_input_error_with_atmospheric_bands(cloudy_dir, tmp_path):
    from pipeline.errors import InputDataError

    base = tmp_path / "empty"
    for epoch in ("2016", "2017"):
        with rasterio.open(cloudy_dir / epoch / "a.tif") as src:
            data, profile = src.read(), src.profile
        if epoch == "2017":
            data[1:5] = 0  # every surface band is nodata
        (base / epoch).mkdir(parents=True)
        with rasterio.open(base / epoch / "a.tif", "w", **profile) as dst:
            dst.write(data)
    with pytest.raises(InputDataError, match="only 0 pixels are valid"):
        _detect(base, tmp_path / "out", SIX)


def test_both_read_paths_mark_atmospheric_gaps_alike(tmp_path):
    """The fast path (one on-grid multi-band file) and the general path (one file per band)
    give the same values, validity and NaN gaps: a gap in the surface bands makes the pixel
    invalid (all zeros), a gap in an atmospheric band only makes that band NaN."""
    from rasterio.windows import Window

    from pipeline.detection.io.imagery import epoch_footprint, read_block
    from pipeline.detection.target_grid import target_grid

    rng = np.random.default_rng(0)
    data = rng.integers(1, 3000, size=(6, 40, 40)).astype(np.uint16)
    data[0, :5] = 0  # coastal gap
    data[5, :, :5] = 0  # cirrus gap
    data[2, 30:] = 0  # a surface gap (green)
    write_tif(tmp_path / "stack/a.tif", data, grid_transform(), nodata=0, blocksize=16)
    names = ["coastal", "blue", "green", "red", "nir", "cirrus"]
    for i, name in enumerate(names):
        write_tif(tmp_path / f"split/a_{name}.tif", data[i], grid_transform(), nodata=0)
    epochs = {"x": ["stack/*.tif"], "y": ["stack/*.tif"]}
    fast = make_config(tmp_path, epochs, bands=SIX)
    epochs = {"x": ["split/*.tif"], "y": ["split/*.tif"]}
    general = make_config(tmp_path, epochs, band_files={n: f"*_{n}.tif" for n in names})
    out = []
    for cfg in (fast, general):
        src = epoch_source(cfg.imagery, "x")
        grid = target_grid(cfg.area, [epoch_footprint(src)])
        out.append(read_block(src, grid, Window(0, 0, 40, 40)))
    (d1, v1), (d2, v2) = out
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(d1, d2)  # NaN where NaN
    assert not v1[30:].any() and v1[:30].all()
    assert (d1[:, 30:] == 0).all()
    coastal, cirrus = d1[4], d1[5]  # read last
    assert np.isnan(coastal[:5]).all() and not np.isnan(coastal[5:30]).any()
    assert np.isnan(cirrus[:30, :5]).all() and not np.isnan(cirrus[:30, 5:]).any()


# --------------------------------------------------------------------------- moisture
def _moisture(swir_change, visible_change, scene_change=(1.0, 1.0), ratio=2.5):
    swir_change = np.asarray(swir_change, float)
    visible_change = np.asarray(visible_change, float)
    ones = np.ones(swir_change.shape)
    before = {"swir1": 2000.0 * ones, "red": 800.0 * ones, "green": 700.0 * ones}
    after = {
        "swir1": 2000.0 * swir_change,
        "red": 800.0 * visible_change,
        "green": 700.0 * visible_change,
    }
    scene_from = {"swir1": 2000.0, "red": 800.0, "green": 700.0}
    scene_to = {
        "swir1": 2000.0 * scene_change[0],
        "red": 800.0 * scene_change[1],
        "green": 700.0 * scene_change[1],
    }
    return moisture_patches(before, after, scene_from, scene_to, ratio)


def test_swir_changing_far_more_than_the_visible_is_wetting_or_drying():
    got = _moisture(
        [1 / 3.0, 3.0, 3.0, 2.0, 1 / 3.0, 1.0],
        [1.0, 1.1, 3.0, 1 / 1.5, 1 / 1.1, 3.0],
    )
    # wetted (SWIR ÷3, visible flat); dried (×3 vs ×1.1: 3 / 1.1 ≥ 2.5); a new bright roof
    # (both ×3); SWIR ×2 with visible ÷1.5 (magnitudes compared: 2 / 1.5 < 2.5); SWIR ÷3
    # with visible ÷1.1; the visible alone changed
    assert got.tolist() == [True, True, False, False, True, False]


def test_moisture_is_relative_to_the_scene_and_needs_a_visible_band():
    # a whole scene drier in the later image (SWIR ×2.5 everywhere): a patch that dried like
    # the scene is not screened, one that dried 3 times more is
    assert _moisture([2.5, 7.5], [1.0, 1.0], scene_change=(2.5, 1.0)).tolist() == [False, True]
    out = moisture_patches(
        {"swir1": np.array([2000.0])},
        {"swir1": np.array([200.0])},
        {"swir1": 1.0},
        {"swir1": 1.0},
        2.5,
    )
    assert out.tolist() == [False]  # no visible band: no evidence


GRASS = {"blue": 400.0, "green": 900.0, "red": 500.0, "nir": 4500.0, "swir1": 2500.0}


def _patch(after: dict, before: dict = GRASS) -> np.ndarray:
    """The moisture screen on one patch going from ``before`` to ``after`` (reflectance ×
    10000), in a scene that did not change as a whole."""
    means_from = {b: np.array([v]) for b, v in before.items()}
    means_to = {b: np.array([after[b]]) for b in before}
    scene = {b: 1000.0 for b in before}
    return moisture_patches(means_from, means_to, scene, scene, 2.5)


@pytest.mark.parametrize(
    "after",
    [
        {"blue": 500.0, "green": 500.0, "red": 500.0, "nir": 600.0, "swir1": 800.0},  # asphalt
        {"blue": 300.0, "green": 300.0, "red": 300.0, "nir": 400.0, "swir1": 500.0},  # black roof
        {"blue": 900.0, "green": 900.0, "red": 900.0, "nir": 1000.0, "swir1": 1000.0},  # grey
    ],
    ids=["asphalt", "black-roof", "grey-roof"],
)
def test_construction_on_grass_is_never_screened_as_moisture(after):
    """Dark surfaces laid on grass darken SWIR (÷2.5–5) far more than the visible, where
    green falls while blue and red barely move: the vegetation guard keeps them (typical
    reflectances: grass 0.04/0.09/0.05, NIR 0.45, SWIR 0.25; asphalt ≈ 0.05, SWIR 0.08)."""
    assert _patch(after).tolist() == [False]


def test_wet_bare_soil_is_screened_and_missing_evidence_is_not():
    dry = {"blue": 1200.0, "green": 1500.0, "red": 1900.0, "nir": 2300.0, "swir1": 3500.0}
    wet = {"blue": 1000.0, "green": 1250.0, "red": 1600.0, "nir": 1900.0, "swir1": 1000.0}
    assert _patch(wet, before=dry).tolist() == [True]
    # a visible band without a usable change (negative mean) is left out, not taken as
    # "no change"; with no usable visible band at all there is no screen
    odd = dict(dry, blue=-5.0)
    assert _patch(dict(wet), before=odd).tolist() == [True]  # green and red still say flat
    loud = dict(wet, green=3000.0, red=3800.0)  # ... and say "changed" when they changed
    assert _patch(loud, before=odd).tolist() == [False]
    bad = dict(dry, blue=-5.0, green=-5.0, red=-5.0)
    assert _patch(dict(wet), before=bad).tolist() == [False]
    # no swir1: no evidence
    out = moisture_patches(
        {"red": np.array([1.0])}, {"red": np.array([1.0])}, {"red": 1.0}, {"red": 1.0}, 2.5
    )
    assert out.tolist() == [False]


FIVE = {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5}
WET_AT = (80, 150, 40)


def test_the_wet_patch_is_screened_and_the_roof_kept(tmp_path):
    """Five bands with SWIR. In 2017 a roof appears (every band changes, the visible most) and
    a field is wet (SWIR ÷3, the visible ÷1.1): the screen drops the wet patch only."""
    rng = np.random.default_rng(8)
    shape = (300, 300)

    def swir(img):
        return np.round(2000 + rng.normal(0, 30, shape))[None] * np.ones((1, *shape))

    before = np.concatenate([scene(shape, seed=1), swir(None)])
    after = np.concatenate([scene(shape, [ROOF_AT], seed=2), swir(None)]).astype(np.float64)
    r, c, size = ROOF_AT
    after[4, r : r + size, c : c + size] = 3000
    r, c, size = WET_AT
    after[:4, r : r + size, c : c + size] /= 1.1
    after[4, r : r + size, c : c + size] /= 3.0
    write_tif(tmp_path / "2016/a.tif", before.astype(np.uint16), grid_transform(), nodata=0)
    write_tif(
        tmp_path / "2017/a.tif",
        np.clip(after, 1, 10000).astype(np.uint16),
        grid_transform(),
        nodata=0,
    )
    out = {}
    for screen in ("auto", False):
        detect = DetectConfig(
            method="cva", threshold="fixed", threshold_value=4.0, moisture_screen=screen
        )
        cfg = make_config(tmp_path, EPOCHS, bands=FIVE, detect=detect)
        with make_executor(1) as ex:
            out[screen] = detect_pair(cfg, ("2016", "2017"), tmp_path / f"out_{screen}", ex)
    on, off = out["auto"], out[False]
    assert len(off.detections) == 2 and off.stats["n_patches_moisture"] == 0
    assert on.stats["moisture_screen"] is True and on.stats["n_patches_moisture"] == 1
    assert len(on.detections) == 1
    mask = _read(on.mask_path)
    assert (_inside(mask, ROOF_AT) == MASK_CHANGE).all()
    assert (_inside(mask, WET_AT) == MASK_NO_CHANGE).all()
    assert (_inside(_read(off.mask_path), WET_AT) == MASK_CHANGE).all()
    assert DetectConfig().moisture_screen_on(("red", "swir1"))
    assert not DetectConfig().moisture_screen_on(("swir1", "nir"))
    assert not DetectConfig(moisture_screen=False).moisture_screen_on(("red", "swir1"))


def test_an_epoch_stored_with_an_offset_gives_the_same_result_once_declared(cloudy_dir, tmp_path):
    """The later epoch re-written as Sentinel-2 processing baseline 04.00 stores it
    (value + 1000): undeclared, the cirrus band (~15 → ~1015) hides the cloud from the screen;
    with ``imagery.offset: {"2017": -1000}`` scores, mask and patches are those of the
    original files."""
    import dataclasses

    base = tmp_path / "pb04"
    for epoch in ("2016", "2017"):
        with rasterio.open(cloudy_dir / epoch / "a.tif") as src:
            data, profile = src.read(), src.profile
        if epoch == "2017":
            data = np.where(data > 0, data + 1000, 0).astype(np.uint16)
        (base / epoch).mkdir(parents=True)
        with rasterio.open(base / epoch / "a.tif", "w", **profile) as dst:
            dst.write(data)
    reference = _detect(cloudy_dir, tmp_path / "ref", SIX, block_px=96)
    undeclared = _detect(base, tmp_path / "raw", SIX, block_px=96)
    assert undeclared.stats["n_patches_cloud"] == 0
    detect = DetectConfig(method="cva", threshold="fixed", threshold_value=4.0, block_px=96)
    cfg = make_config(base, EPOCHS, bands=SIX, detect=detect)
    cfg = dataclasses.replace(
        cfg, imagery=dataclasses.replace(cfg.imagery, offset={"2017": -1000.0})
    )
    with make_executor(1) as ex:
        declared = detect_pair(cfg, ("2016", "2017"), tmp_path / "declared", ex)
    np.testing.assert_array_equal(_read(declared.score_path), _read(reference.score_path))
    np.testing.assert_array_equal(_read(declared.mask_path), _read(reference.mask_path))
    assert declared.stats["n_patches_cloud"] == 1
    assert len(declared.detections) == len(reference.detections) == 1
