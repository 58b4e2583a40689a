"""The target grid follows the imagery's own pixels, and pixels on the grid are read as they are.

Real GeoTIFFs at origins that are not multiples of the resolution (a 0.3 m aerial image, a
Landsat-like 30 m grid on a 15 m offset), read through the pipeline's reader onto the grid of
:func:`~pipeline.detection.io.imagery.scene_grid`.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import yaml
from affine import Affine
from rasterio.windows import Window

from pipeline.config import AreaConfig, DetectConfig, parse_config
from pipeline.detection.io import imagery
from pipeline.detection.io.imagery import epoch_source, read_block, scene_grid
from pipeline.detection.target_grid import Footprint, GridReference, target_grid
from pipeline.errors import ConfigError
from tests.rasters import UTM, make_config, write_tif

GK = "EPSG:4548"  # CGCS2000 3-degree Gauss-Krüger CM 117E: another projected CRS
GK_X0, GK_Y0 = 500000.0, 3500000.0  # a point of this GK zone ...
UTM_X0, UTM_Y0 = 500000.0, 3498600.0  # ... and about the same point in UTM 50N


def _image(shape: tuple[int, int], bands: int = 3, seed: int = 0) -> np.ndarray:
    """Random uint16 values: any resampling or shift changes them."""
    return np.random.default_rng(seed).integers(1, 10000, size=(bands, *shape), dtype=np.uint16)


def _read_all(cfg, label, grid):
    return read_block(epoch_source(cfg.imagery, label), grid, Window(0, 0, grid.width, grid.height))


def _pair_grid(cfg):
    sources = [epoch_source(cfg.imagery, label) for label in cfg.imagery.labels[:2]]
    return scene_grid(cfg.area, cfg.imagery, sources)


# --------------------------------------------------------------------------- following the file
def _no_warping(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a file on the grid went through the warper")

    monkeypatch.setattr(imagery, "_read_warped", fail)


def test_a_03m_image_at_an_arbitrary_origin_reads_back_bit_identical(tmp_path, monkeypatch):
    img = _image((257, 300))
    transform = Affine(0.3, 0.0, 500000.17, 0.0, -0.3, 3500000.41)
    write_tif(tmp_path / "a/img.tif", img, transform, crs=GK, nodata=0)
    write_tif(tmp_path / "b/img.tif", img[::-1], transform, crs=GK, nodata=0)
    bands = {"blue": 1, "green": 2, "red": 3}
    # bilinear would blur a shifted read: the on-grid file must bypass it
    cfg = make_config(
        tmp_path, {"a": ["a/*.tif"], "b": ["b/*.tif"]}, bands=bands, crs=GK, resolution_m=0.3
    )
    grid = _pair_grid(cfg)
    assert grid.shape == (257, 300)
    assert grid.transform == transform
    _no_warping(monkeypatch)
    for label, expected in (("a", img), ("b", img[::-1])):
        data, valid = _read_all(cfg, label, grid)
        assert valid.all()
        np.testing.assert_array_equal(data, expected.astype(np.float32))


def test_the_general_read_path_is_direct_too(tmp_path, monkeypatch):
    """Two tiles side by side (the one-file fast path does not apply) and a cubic
    resampling setting: pixels on the grid still come back exactly."""
    img = _image((40, 60), bands=4, seed=1)
    x0, y0 = 500000.17, 3500000.41
    write_tif(tmp_path / "e/t0.tif", img[:, :, :30], Affine(0.3, 0, x0, 0, -0.3, y0), crs=GK)
    write_tif(tmp_path / "e/t1.tif", img[:, :, 30:], Affine(0.3, 0, x0 + 9, 0, -0.3, y0), crs=GK)
    cfg = make_config(
        tmp_path,
        {"a": ["e/*.tif"], "b": ["e/*.tif"]},
        crs=GK,
        resolution_m=0.3,
        resampling="cubic",
        nodata=None,
    )
    grid = _pair_grid(cfg)
    assert grid.shape == (40, 60)
    _no_warping(monkeypatch)
    data, valid = read_block(epoch_source(cfg.imagery, "a"), grid, Window(5, 3, 50, 30), halo=4)
    assert valid[4:-4, 4:-4].all()
    np.testing.assert_array_equal(data[:, 4:-4, 4:-4], img[:, 3:33, 5:55].astype(np.float32))


def test_a_landsat_grid_on_a_15m_offset_keeps_its_size(tmp_path):
    img = _image((400, 400), bands=2, seed=2)
    transform = Affine(30.0, 0.0, 300015.0, 0.0, -30.0, 3600015.0)
    for label in "ab":
        write_tif(tmp_path / f"{label}/LT5.tif", img, transform, crs=UTM, blocksize=128)
    cfg = make_config(
        tmp_path,
        {"a": ["a/*.tif"], "b": ["b/*.tif"]},
        bands={"red": 1, "nir": 2},
        resolution_m=30.0,
    )
    grid = _pair_grid(cfg)
    assert (grid.width, grid.height) == (400, 400)
    assert (grid.transform.c, grid.transform.f) == (300015.0, 3600015.0)
    data, valid = _read_all(cfg, "a", grid)
    assert valid.all()
    np.testing.assert_array_equal(data, img.astype(np.float32))


def test_bounds_are_snapped_outward_onto_the_image_pixels(tmp_path):
    img = _image((50, 50), bands=4)
    write_tif(tmp_path / "e/img.tif", img, Affine(2.0, 0, 500001.0, 0, -2.0, 3500001.0), crs=GK)
    epochs = {"a": ["e/*.tif"], "b": ["e/*.tif"]}
    bounds = (500010.0, 3499950.0, 500030.5, 3499990.0)
    cfg = make_config(tmp_path, epochs, crs=GK, bounds=bounds, nodata=None)
    grid = _pair_grid(cfg)
    assert grid.bounds == (500009.0, 3499949.0, 500031.0, 3499991.0)
    data, valid = _read_all(cfg, "a", grid)
    assert valid.all()
    # grid column 0 is file column 4, grid row 0 is file row 5
    np.testing.assert_array_equal(data, img[:, 5:26, 4:15].astype(np.float32))


def test_resolution_omitted_takes_the_first_files(tmp_path):
    img = _image((30, 40), bands=4)
    transform = Affine(0.5, 0.0, 500000.3, 0.0, -0.5, 3500000.1)
    write_tif(tmp_path / "a/img.tif", img, transform, crs=GK)
    # the later epoch at 1 m: resampled onto the 0.5 m grid of the first
    coarse = Affine(1.0, 0.0, 500000.0, 0.0, -1.0, 3500001.0)
    write_tif(tmp_path / "b/img.tif", _image((20, 25), bands=4), coarse, crs=GK)
    cfg = make_config(tmp_path, {"a": ["a/*.tif"], "b": ["b/*.tif"]}, crs=GK, nodata=None)
    cfg = dataclasses.replace(cfg, area=dataclasses.replace(cfg.area, resolution_m=None))
    grid = _pair_grid(cfg)
    assert grid.resolution == 0.5 and grid.transform.c == 500000.3
    assert grid.shape == (30, 40)
    data, _ = _read_all(cfg, "a", grid)
    np.testing.assert_array_equal(data, img.astype(np.float32))
    _, valid_b = _read_all(cfg, "b", grid)
    assert valid_b[2:-2, 2:-2].all()


def test_one_file_per_band_follows_the_first_bands_file(tmp_path):
    """With band_files the first surface band's file sets the grid: an 8 m coastal band
    whose file sorts first does not."""
    blue = _image((40, 40), bands=1)[0]
    transform = Affine(10.0, 0.0, 400005.0, 0.0, -10.0, 3600005.0)
    for label in "ab":
        write_tif(tmp_path / f"{label}/T_B02.tif", blue, transform, crs=UTM)
        write_tif(tmp_path / f"{label}/T_B03.tif", blue, transform, crs=UTM)
        coastal = Affine(8.0, 0.0, 400005.0, 0.0, -8.0, 3600005.0)
        write_tif(tmp_path / f"{label}/T_B01.tif", _image((50, 50), 1)[0], coastal, crs=UTM)
    files = {"blue": "*_B02.tif", "green": "*_B03.tif", "coastal": "*_B01.tif"}
    cfg = make_config(tmp_path, {"a": ["a/*.tif"], "b": ["b/*.tif"]}, band_files=files)
    cfg = dataclasses.replace(cfg, area=dataclasses.replace(cfg.area, resolution_m=None))
    grid = _pair_grid(cfg)
    assert grid.resolution == 10.0 and grid.shape == (40, 40)
    data, _ = _read_all(cfg, "a", grid)
    np.testing.assert_array_equal(data[0], blue.astype(np.float32))


# --------------------------------------------------------------------------- snapping
def _two_crs_config(tmp_path, first: str):
    """Epoch 'gk' on a 2 m GK grid at an odd origin, epoch 'utm' at 2 m in UTM nearby."""
    img = _image((60, 60), bands=4, seed=5)
    write_tif(
        tmp_path / "gk/img.tif", img, Affine(2.0, 0, GK_X0 + 0.7, 0, -2.0, GK_Y0 + 0.3), crs=GK
    )
    utm = Affine(2.0, 0, UTM_X0 - 20, 0, -2.0, UTM_Y0 + 20)
    write_tif(tmp_path / "utm/img.tif", _image((80, 80), bands=4, seed=6), utm, crs=UTM)
    epochs = {"gk": ["gk/*.tif"], "utm": ["utm/*.tif"]}
    if first == "utm":
        epochs = {"utm": epochs["utm"], "gk": epochs["gk"]}
    return img, make_config(tmp_path, epochs, crs=GK, nodata=None)


def test_a_later_epoch_in_another_crs_is_warped_onto_the_first_epochs_pixels(tmp_path, caplog):
    img, cfg = _two_crs_config(tmp_path, first="gk")
    with caplog.at_level(logging.INFO, logger="pipeline.detection.target_grid"):
        grid = _pair_grid(cfg)
    assert "follows the pixels of" in caplog.text
    assert (grid.transform.c - (GK_X0 + 0.7)) % 2.0 == pytest.approx(0.0, abs=1e-6)
    data, _ = _read_all(cfg, "gk", grid)
    col, row = (
        round((grid.transform.c - GK_X0 - 0.7) / 2),
        round((GK_Y0 + 0.3 - grid.transform.f) / 2),
    )
    h, w = grid.shape
    np.testing.assert_array_equal(data, img[:, row : row + h, col : col + w].astype(np.float32))
    _, valid_utm = _read_all(cfg, "utm", grid)
    assert valid_utm.mean() > 0.95


def test_a_first_epoch_in_another_crs_snaps_the_grid_and_says_so(tmp_path, caplog):
    _, cfg = _two_crs_config(tmp_path, first="utm")
    with caplog.at_level(logging.INFO, logger="pipeline.detection.target_grid"):
        grid = _pair_grid(cfg)
    assert "is in EPSG:32650, not area.crs" in caplog.text
    assert "snapped to multiples of 2 m" in caplog.text
    assert grid.transform.c % 2.0 == 0.0 and grid.transform.f % 2.0 == 0.0
    _, valid = _read_all(cfg, "gk", grid)
    assert valid[1:-1, 1:-1].all()


def test_align_snap_snaps_to_multiples_of_the_resolution(tmp_path, caplog):
    img = _image((257, 300))
    write_tif(tmp_path / "e/img.tif", img, Affine(0.3, 0, 500000.17, 0, -0.3, 3500000.41), crs=GK)
    bands = {"blue": 1, "green": 2, "red": 3}
    cfg = make_config(
        tmp_path, {"a": ["e/*.tif"], "b": ["e/*.tif"]}, bands=bands, crs=GK, resolution_m=0.3
    )
    cfg = dataclasses.replace(cfg, area=dataclasses.replace(cfg.area, align="snap"))
    with caplog.at_level(logging.INFO, logger="pipeline.detection.target_grid"):
        grid = _pair_grid(cfg)
    assert "'area.align' is 'snap'" in caplog.text
    assert grid.transform.c == pytest.approx(round(500000.17 / 0.3 - 0.5) * 0.3)
    assert grid.shape == (258, 301)  # the old behaviour: one more row and column


def test_another_resolution_snaps_and_says_why(caplog):
    ref = GridReference("x.tif", GK, Affine(0.5, 0, 500000.3, 0, -0.5, 3500000.1), 100, 100)
    area = AreaConfig(name="t", county_code="130609", crs=GK, resolution_m=1.0)
    fp = Footprint(GK, (500000.3, 3499950.1, 500050.3, 3500000.1))
    with caplog.at_level(logging.INFO, logger="pipeline.detection.target_grid"):
        grid = target_grid(area, [fp], ref)
    assert "has 0.5 m pixels, not area.resolution_m = 1 m" in caplog.text
    assert grid.bounds == (500000.0, 3499950.0, 500051.0, 3500001.0)


def test_floating_point_noise_in_the_pixel_size_still_follows_the_file():
    size = (500307.37 - 500000.17) / 1024  # 0.3 up to rounding, as a file may store it
    ref = GridReference("x.tif", GK, Affine(size, 0, 500000.17, 0, -size, 3500000.41), 1024, 1024)
    area = AreaConfig(name="t", county_code="130609", crs=GK, resolution_m=0.3)
    fp = Footprint(GK, (500000.17, 3500000.41 - 1024 * size, 500000.17 + 1024 * size, 3500000.41))
    grid = target_grid(area, [fp], ref)
    assert grid.shape == (1024, 1024) and grid.transform.c == 500000.17


def test_rotated_first_file_snaps(caplog):
    t = Affine(2.0, 0.1, 500000.7, 0.1, -2.0, 3500000.3)
    ref = GridReference("rot.tif", GK, t, 50, 50)
    area = AreaConfig(name="t", county_code="130609", crs=GK, resolution_m=2.0)
    with caplog.at_level(logging.INFO, logger="pipeline.detection.target_grid"):
        grid = target_grid(area, [Footprint(GK, (500000.7, 3499900.3, 500100.7, 3500000.3))], ref)
    assert "rotated" in caplog.text and grid.transform.c == 500000.0


def test_no_resolution_and_a_first_file_in_another_crs_is_a_config_error():
    ref = GridReference("utm.tif", UTM, Affine(2.0, 0, 0.7, 0, -2.0, 0.3), 10, 10)
    area = AreaConfig(name="t", county_code="130609", crs=GK)
    fp = Footprint(GK, (500000.0, 3499900.0, 500100.0, 3500000.0))
    with pytest.raises(ConfigError, match=r"set 'area\.resolution_m'"):
        target_grid(area, [fp], ref)


# --------------------------------------------------------------------------- config
def _raw(tmp_path, **area):
    (tmp_path / "g.gpkg").write_bytes(b"")
    grid_layer = {"path": "g.gpkg", "code_field": "code", "name_field": "name"}
    base = {"name": "t", "county_code": "130609", "crs": GK}
    return {
        "area": {**base, **area},
        "imagery": {"epochs": {"a": ["a/*.tif"], "b": ["b/*.tif"]}, "bands": {"red": 1, "nir": 2}},
        "layers": {"township": grid_layer, "village": grid_layer},
    }


def test_config_resolution_is_optional_and_align_defaults_to_imagery(tmp_path):
    cfg = parse_config(_raw(tmp_path), base_dir=tmp_path)
    assert cfg.area.resolution_m is None and cfg.area.align == "imagery"
    # a huge opening radius is not checked without a resolution ...
    raw = _raw(tmp_path)
    raw["detect"] = {"opening_radius_m": 100.0}
    parse_config(raw, base_dir=tmp_path)
    # ... and is with one
    raw["area"]["resolution_m"] = 0.5
    with pytest.raises(ConfigError, match="opening_radius_m"):
        parse_config(raw, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("area", "message"),
    [
        ({"align": "pixels"}, "area.align"),
        ({"align": "snap"}, "'area.align' = 'snap' needs 'area.resolution_m'"),
        ({"resolution_m": -1}, "must be > 0"),
    ],
)
def test_config_rejects_bad_alignment(tmp_path, area, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(yaml.safe_load(yaml.safe_dump(_raw(tmp_path, **area))), base_dir=tmp_path)


def test_cleanup_radii_are_checked_on_the_imagery_resolution(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.detection.pair import detect_pair

    img = _image((30, 30), bands=4)
    for label in "ab":
        write_tif(tmp_path / f"{label}/img.tif", img, Affine(0.3, 0, 500000.17, 0, -0.3, 0.0))
    detect = DetectConfig(opening_radius_m=30.0)  # 100 px at 0.3 m
    cfg = make_config(tmp_path, {"a": ["a/*.tif"], "b": ["b/*.tif"]}, detect=detect)
    cfg = dataclasses.replace(cfg, area=dataclasses.replace(cfg.area, resolution_m=None))
    with ThreadPoolExecutor(1) as ex, pytest.raises(ConfigError, match=r"0\.3 m imagery grid"):
        detect_pair(cfg, ("a", "b"), tmp_path / "out", ex)
