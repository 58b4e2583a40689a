"""Reading epochs onto the target grid: mosaics, one file per band, reprojection, nodata, masks."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer
from rasterio.windows import Window

from pipeline.bands import check_bands
from pipeline.detection.io import imagery
from pipeline.detection.io.imagery import epoch_footprint, epoch_source, read_block
from pipeline.detection.target_grid import Footprint, target_grid
from pipeline.errors import ConfigError, InputDataError
from tests.rasters import UTM, X0, Y0, grid_transform, make_config, scene, write_tif


def _grid(cfg, *labels):
    fps = [epoch_footprint(epoch_source(cfg.imagery, lb)) for lb in labels]
    return target_grid(cfg.area, fps)


def test_multiband_mosaic_of_tiles_equals_the_whole(tmp_path):
    # one 4-band 100x120 image cut into 4 tiled files; read back as one epoch
    whole = scene((100, 120), [(40, 50, 20)], seed=3)
    for i, (r, c) in enumerate([(0, 0), (0, 60), (50, 0), (50, 60)]):
        write_tif(
            tmp_path / f"e/t{i}.tif",
            whole[:, r : r + 50, c : c + 60],
            grid_transform(x0=X0 + 2 * c, y0=Y0 - 2 * r),
            blocksize=16,
        )
    cfg = make_config(tmp_path, {"a": ["e/*.tif"], "b": ["e/*.tif"]})
    grid = _grid(cfg, "a", "b")
    assert (grid.width, grid.height) == (120, 100)
    data, valid = read_block(epoch_source(cfg.imagery, "a"), grid, Window(0, 0, 120, 100))
    assert valid.all()
    np.testing.assert_array_equal(data, whole.astype(np.float32))
    # a block with a halo: outside the grid is invalid, inside matches
    data, valid = read_block(epoch_source(cfg.imagery, "a"), grid, Window(0, 40, 30, 30), halo=5)
    assert not valid[:, :5].any() and valid[:, 5:].all()
    np.testing.assert_array_equal(data[:, :, 5:], whole[:, 35:75, 0:35].astype(np.float32))


def test_first_file_in_sorted_order_wins_where_files_overlap(tmp_path):
    write_tif(tmp_path / "e/a.tif", np.full((4, 10, 10), 100, np.uint16), grid_transform())
    write_tif(tmp_path / "e/b.tif", np.full((4, 10, 10), 200, np.uint16), grid_transform())
    cfg = make_config(tmp_path, {"a": ["e/*.tif"], "b": ["e/*.tif"]})
    data, _ = read_block(epoch_source(cfg.imagery, "a"), _grid(cfg, "a"), Window(0, 0, 10, 10))
    assert (data == 100).all()


def test_one_file_per_band_with_a_20m_band_on_a_10m_grid(tmp_path):
    # B04 at 10 m (40x40), B08 at 20 m (20x20) over the same 400 m square
    red = np.arange(1600, dtype=np.uint16).reshape(40, 40) + 1
    nir = (np.arange(400, dtype=np.uint16).reshape(20, 20) + 1) * 10
    write_tif(tmp_path / "s2/T50_B04.tif", red, grid_transform(10.0), blocksize=16)
    write_tif(tmp_path / "s2/T50_B08.tif", nir, grid_transform(20.0), blocksize=16)
    cfg = make_config(
        tmp_path,
        {"a": ["s2/*.tif"], "b": ["s2/*.tif"]},
        band_files={"red": "*_B04.tif", "nir": "*_B08.tif"},
        resampling="nearest",
        resolution_m=10.0,
    )
    src = epoch_source(cfg.imagery, "a")
    grid = _grid(cfg, "a")
    assert (grid.width, grid.height) == (40, 40)
    data, valid = read_block(src, grid, Window(0, 0, 40, 40))
    assert valid.all()
    np.testing.assert_array_equal(data[0], red)
    # each 20 m pixel covers 2x2 target pixels
    np.testing.assert_array_equal(data[1], np.repeat(np.repeat(nir, 2, 0), 2, 1))


def test_band_pattern_matching_nothing_is_an_input_error(tmp_path):
    write_tif(tmp_path / "s2/T50_B04.tif", np.ones((8, 8), np.uint16), grid_transform())
    cfg = make_config(
        tmp_path,
        {"a": ["s2/*.tif"], "b": ["s2/*.tif"]},
        band_files={"red": "*_B04.tif", "nir": "*_B08.tif"},
    )
    with pytest.raises(InputDataError, match=r"band 'nir' pattern '\*_B08.tif'"):
        epoch_source(cfg.imagery, "a")


def test_a_tile_missing_one_band_file_is_an_input_error(tmp_path):
    """Two tiles side by side, one file per band; the east tile has no B08. Read as is, its
    pixels would all be invalid without a word: refused, naming the tile and the band. With
    the file back (at 20 m, another resolution) the epoch is accepted."""
    for name, x0 in (("T1", X0), ("T2", X0 + 80.0)):
        write_tif(
            tmp_path / f"s2/{name}_B04.tif", np.ones((40, 40), np.uint16), grid_transform(2.0, x0)
        )
    write_tif(tmp_path / "s2/T1_B08.tif", np.ones((4, 4), np.uint16), grid_transform(20.0))
    cfg = make_config(
        tmp_path,
        {"a": ["s2/*.tif"], "b": ["s2/*.tif"]},
        band_files={"red": "*_B04.tif", "nir": "*_B08.tif"},
    )
    with pytest.raises(InputDataError, match=r"no nir file covers the area of .*T2_B04\.tif"):
        epoch_source(cfg.imagery, "a")
    write_tif(
        tmp_path / "s2/T2_B08.tif", np.ones((4, 4), np.uint16), grid_transform(20.0, X0 + 80.0)
    )
    assert len(epoch_source(cfg.imagery, "a").files) == 4


def test_mask_glob_matching_nothing_or_masks_elsewhere_are_input_errors(tmp_path):
    """A configured mask that matches no file, or whose files all lie outside the scene,
    would be ignored silently: both are refused, naming the epoch and the key."""
    write_tif(tmp_path / "e/a.tif", scene((20, 20)), grid_transform())
    cfg = make_config(tmp_path, {"a": ["e/*.tif"], "b": ["e/*.tif"]}, masks={"a": ("m/*.tif",)})
    with pytest.raises(InputDataError, match=r"epoch 'a': the mask globs .* 'imagery.masks.a'"):
        epoch_source(cfg.imagery, "a")
    far = grid_transform(2.0, X0 + 50_000.0)
    write_tif(tmp_path / "m/a_mask.tif", np.ones((20, 20), np.uint8), far)
    src = epoch_source(cfg.imagery, "a")
    with pytest.raises(InputDataError, match=r"none of its 1 mask file\(s\) .* overlaps the scene"):
        imagery.check_masks_overlap(src, _grid(cfg, "a"))
    write_tif(tmp_path / "m/a_mask.tif", np.ones((20, 20), np.uint8), grid_transform())
    imagery.check_masks_overlap(epoch_source(cfg.imagery, "a"), _grid(cfg, "a"))  # accepted


def test_a_file_with_fewer_bands_than_configured_is_an_input_error(tmp_path):
    """'imagery.bands' reads band 4 (nir) but one tile holds 3 bands: refused at once,
    naming the file and the key, instead of failing deep in the reads."""
    write_tif(tmp_path / "e/a.tif", scene((20, 20)), grid_transform())
    write_tif(tmp_path / "e/b.tif", scene((20, 20))[:3], grid_transform(2.0, X0 + 40.0))
    cfg = make_config(tmp_path, {"a": ["e/*.tif"], "b": ["e/*.tif"]})
    with pytest.raises(
        InputDataError, match=r"b\.tif: has 3 band\(s\), but 'imagery.bands.nir' = 4"
    ):
        epoch_source(cfg.imagery, "a")


def test_missing_band_for_a_method_is_a_config_error():
    with pytest.raises(ConfigError, match="nir"):
        check_bands(("blue", "green", "red"), ("red", "nir"), "'detect.method' = 'index'")


def test_epoch_in_wgs84_lands_in_the_right_place_on_a_utm_grid(tmp_path):
    # a geographic raster (0.0001° ≈ 9-11 m) with a bright square at a known lon/lat
    lon0, lat0, d = 117.0, 36.1, 0.0001
    img = np.full((200, 200), 100, np.uint16)
    img[90:110, 80:100] = 5000  # rows 90-110 / cols 80-100
    write_tif(
        tmp_path / "geo/a.tif", img, Affine(d, 0, lon0, 0, -d, lat0), crs="EPSG:4326", nodata=0
    )
    cfg = make_config(
        tmp_path, {"a": ["geo/*.tif"], "b": ["geo/*.tif"]}, bands={"red": 1}, resolution_m=5.0
    )
    grid = _grid(cfg, "a")
    data, valid = read_block(
        epoch_source(cfg.imagery, "a"), grid, Window(0, 0, grid.width, grid.height)
    )
    bright = (data[0] > 2500) & valid
    rows, cols = np.nonzero(bright)
    t = grid.transform
    x, y = t.c + t.a * (cols.mean() + 0.5), t.f + t.e * (rows.mean() + 0.5)
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    ex, ey = to_utm.transform(lon0 + 90 * d, lat0 - 100 * d)  # centre of the square
    assert abs(x - ex) < 5.0 and abs(y - ey) < 5.0
    # area is preserved to within a pixel rim: 20x20 geographic pixels ≈ (~9 m x 11 m) each
    sq_w = to_utm.transform(lon0 + 100 * d, lat0)[0] - to_utm.transform(lon0 + 80 * d, lat0)[0]
    assert abs(bright.sum() * 25.0 - sq_w * 20 * d * 111_000) / (sq_w * 20 * d * 111_000) < 0.15
    # outside the source footprint (grid corners after reprojection) nothing is valid
    assert valid.mean() > 0.9


@pytest.mark.parametrize("resampling", ["bilinear", "cubic", "average"])
def test_warped_values_do_not_depend_on_the_window(tmp_path, resampling):
    """A geographic raster whose pixels are narrower than the 10 m grid's (0.0001° of
    longitude ≈ 9 m at 36° N: downsampled along x). GDAL sizes the resampling kernel from
    each warped window unless the scale is fixed; landwatch fixes it per file
    (``imagery.warp_scale``), so reading the grid whole, in 16 px or in 37 px windows gives
    the same values bit for bit — the basis of block-size independence on warped inputs."""
    rng = np.random.default_rng(3)
    lon0, lat0, d = 117.0, 36.1, 0.0001
    img = rng.integers(100, 5000, size=(300, 300)).astype(np.uint16)
    write_tif(
        tmp_path / "geo/a.tif", img, Affine(d, 0, lon0, 0, -d, lat0), crs="EPSG:4326", nodata=0
    )
    cfg = make_config(
        tmp_path,
        {"a": ["geo/*.tif"], "b": ["geo/*.tif"]},
        bands={"red": 1},
        resolution_m=10.0,
        resampling=resampling,
    )
    grid = _grid(cfg, "a")
    src = epoch_source(cfg.imagery, "a")
    whole, valid = read_block(src, grid, Window(0, 0, grid.width, grid.height))
    xscale, yscale = imagery.warp_scale(
        src.files[0].path, "EPSG:4326", tuple(Affine(d, 0, lon0, 0, -d, lat0)), grid
    )
    assert 0.85 < xscale < 0.95 and 1.05 < yscale < 1.15  # ≈ 9 m wide, 11 m tall pixels
    for size in (16, 37):
        tiled = np.zeros_like(whole)
        for r in range(0, grid.height, size):
            for c in range(0, grid.width, size):
                win = Window(c, r, min(size, grid.width - c), min(size, grid.height - r))
                data, _ = read_block(src, grid, win)
                tiled[:, r : r + int(win.height), c : c + int(win.width)] = data
        np.testing.assert_array_equal(tiled, whole)
    assert valid.mean() > 0.8


def test_nodata_and_mask_file_are_honoured(tmp_path):
    img = scene((40, 40), seed=1)
    img[:, 0:5, :] = 0  # nodata rows
    write_tif(tmp_path / "e/a.tif", img, grid_transform())
    mask = np.ones((40, 40), np.uint8)
    mask[20:30, 20:30] = 0  # cloud
    write_tif(tmp_path / "m/a_mask.tif", mask, grid_transform())
    cfg = make_config(
        tmp_path, {"a": ["e/*.tif"], "b": ["e/*.tif"]}, nodata=0, masks={"a": ("m/*.tif",)}
    )
    data, valid = read_block(epoch_source(cfg.imagery, "a"), _grid(cfg, "a"), Window(0, 0, 40, 40))
    assert not valid[0:5].any()
    assert not valid[20:30, 20:30].any()
    assert valid.sum() == 40 * 40 - 5 * 40 - 100
    assert (data[:, ~valid] == 0).all()
    # epoch b has no mask: only nodata counts
    _, valid_b = read_block(epoch_source(cfg.imagery, "b"), _grid(cfg, "b"), Window(0, 0, 40, 40))
    assert valid_b.sum() == 40 * 40 - 5 * 40


def test_corrupt_file_is_an_input_error_naming_it(tmp_path):
    write_tif(tmp_path / "e/a.tif", scene((20, 20)), grid_transform())
    (tmp_path / "e/b.tif").write_bytes(b"II*\x00 this is not a tiff")
    cfg = make_config(tmp_path, {"a": ["e/*.tif"], "b": ["e/*.tif"]})
    with pytest.raises(InputDataError, match=r"b\.tif"):
        epoch_footprint(epoch_source(cfg.imagery, "a"))


def test_footprint_unions_the_files(tmp_path):
    write_tif(tmp_path / "e/a.tif", scene((10, 10)), grid_transform())
    write_tif(tmp_path / "e/b.tif", scene((10, 10)), grid_transform(x0=X0 + 100))
    cfg = make_config(tmp_path, {"a": ["e/*.tif"], "b": ["e/*.tif"]})
    fp = epoch_footprint(epoch_source(cfg.imagery, "a"))
    assert isinstance(fp, Footprint)
    assert fp.bounds == (X0, Y0 - 20, X0 + 120, Y0)


def test_threads_read_concurrently_with_their_own_dataset_handles(tmp_path):
    """A threaded Dask worker runs several tasks in one process: each thread must get its
    own rasterio dataset (sharing one corrupts decoding), and concurrent reads stay exact."""
    whole = scene((256, 256), [(100, 100, 30)], seed=5)
    write_tif(tmp_path / "e/t.tif", whole, grid_transform(), blocksize=16)
    cfg = make_config(tmp_path, {"a": ["e/*.tif"], "b": ["e/*.tif"]})
    source = epoch_source(cfg.imagery, "a")
    grid = _grid(cfg, "a", "b")
    path = source.files[0].path
    windows = [Window(c, r, 64, 64) for r in range(0, 256, 64) for c in range(0, 256, 64)]

    def work(window):
        data, _ = read_block(source, grid, window)
        return id(imagery._open(path)), window, data

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, windows * 4))
    for _, window, data in results:
        np.testing.assert_array_equal(data, whole[(slice(None), *window.toslices())])
    main_ds = imagery._open(path)
    with ThreadPoolExecutor(max_workers=1) as pool:
        other_ds = pool.submit(imagery._open, path).result()
    assert other_ds is not main_ds


def test_offset_is_added_to_valid_values_of_its_epoch_only(tmp_path):
    """Sentinel-2 processing baseline 04.00 stores reflectance × 10000 + 1000. An epoch
    written that way and read with ``imagery.offset: {"b": -1000}`` gives back the values of
    the same image written without the offset, on every read path (fast aligned read, the
    general path with a mask file, the row stream); nodata stays invalid and 0."""
    rng = np.random.default_rng(4)
    img = rng.integers(1, 3000, size=(4, 40, 40)).astype(np.uint16)
    img[:, :5] = 0  # nodata rows
    write_tif(tmp_path / "a/x.tif", img, grid_transform(), nodata=0)
    shifted = np.where(img > 0, img + 1000, 0).astype(np.uint16)
    write_tif(tmp_path / "b/x.tif", shifted, grid_transform(), nodata=0)
    mask = np.ones((40, 40), np.uint8)
    write_tif(tmp_path / "m/x.tif", mask, grid_transform())
    for masks in (None, {"b": ("m/*.tif",)}):
        cfg = make_config(tmp_path, {"a": ["a/*.tif"], "b": ["b/*.tif"]}, masks=masks)
        cfg = dataclasses.replace(
            cfg, imagery=dataclasses.replace(cfg.imagery, offset={"b": -1000.0})
        )
        grid = _grid(cfg, "a")
        win = Window(0, 0, 40, 40)
        a, va = read_block(epoch_source(cfg.imagery, "a"), grid, win)
        b, vb = read_block(epoch_source(cfg.imagery, "b"), grid, win)
        np.testing.assert_array_equal(va, vb)
        np.testing.assert_array_equal(a, b)
        assert not va[:5].any() and (b[:, :5] == 0).all()
        stream = imagery.RowStream(epoch_source(cfg.imagery, "b"), grid, 0, 40, 40, align=16)
        rows, _ = stream.rows(0, 20)
        np.testing.assert_array_equal(rows, a[:, :20])
