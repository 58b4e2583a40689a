"""The two-pass blockwise driver end to end on small real GeoTIFFs.

Scene: 300 x 300 px at 2 m (UTM 50N) of noisy vegetation; in 2017 three roof squares appear:
A (20, 20, 30 px), B (59, 59, 10 px: four pieces of ~5x5 px with 64 px blocks, each below
the 200 m² minimum, the whole above it) and C (90, 150, 60 px: over four blocks with 96 px
blocks). A 4 x 4 px square D is below the minimum area. The 2017 epoch is cut into two
files with different tiling, and has a nodata strip.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import pytest
import rasterio
import shapely

from pipeline.config import DetectConfig
from pipeline.detection.pair import AREA_PX_M2, MASK_CHANGE, MASK_NODATA, N_PIXELS, detect_pair
from pipeline.errors import ConfigError
from pipeline.ops.executor import make_executor
from pipeline.schema import ChangeType, P
from tests.rasters import X0, Y0, grid_transform, make_config, scene, write_tif

SQUARES = [(20, 20, 30), (59, 59, 10), (90, 150, 60), (250, 250, 4)]
EPOCHS = {"2016": ["2016/*.tif"], "2017": ["2017/*.tif"]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("engine")
    write_tif(base / "2016/a.tif", scene((300, 300), seed=1), grid_transform(), nodata=0)
    after = scene((300, 300), SQUARES, seed=2)
    after[:, 280:, :] = 0  # nodata strip at the bottom
    write_tif(base / "2017/north.tif", after[:, :150], grid_transform(), nodata=0, blocksize=32)
    south = grid_transform(x0=X0, y0=Y0 - 2 * 150)
    write_tif(base / "2017/south.tif", after[:, 150:], south, nodata=0, blocksize=64)
    return base


def _run(base, out, workers=1, scheduler=None, **detect_kw):
    cfg = make_config(
        base, EPOCHS, detect=DetectConfig(**{"method": "cva", **detect_kw}), workers=workers
    )
    with make_executor(workers, scheduler) as ex:
        return detect_pair(cfg, ("2016", "2017"), out, ex)


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.profile, src.tags(ns="IMAGE_STRUCTURE")


@pytest.fixture(scope="module")
def runs(data_dir):
    # edge refinement on: block-size independence must hold with it (its exactness on crisp
    # squares is checked separately below with it off)
    return {bp: _run(data_dir, data_dir / f"out{bp}", block_px=bp) for bp in (64, 96, 256)}


@pytest.fixture(scope="module")
def crisp(data_dir):
    return _run(data_dir, data_dir / "crisp", block_px=96, edge_ratio=None)


def test_detections_frame(runs, crisp):
    det = crisp.detections
    assert det.crs.to_epsg() == 32650
    assert len(det) == 3  # D is below min_area_m2
    assert set(det[P.CHANGE_TYPE]) == {ChangeType.CONSTRUCTION.value}
    assert (det[P.EPOCH_FROM] == "2016").all() and (det[P.EPOCH_TO] == "2017").all()
    for col in ("mean_from_red", "mean_to_nir", N_PIXELS, AREA_PX_M2, P.SCORE):
        assert col in det
    np.testing.assert_allclose(det["mean_to_red"], 2400.0)  # exact roof spectrum
    assert shapely.is_valid(det.geometry.values).all()
    np.testing.assert_array_equal(det.geometry.area.values, det[AREA_PX_M2].values)
    y = det.geometry.centroid.y.values
    assert (np.diff(y) >= 0).all()  # sorted by centroid y
    assert len(runs[96].detections) == 3
    stats = runs[96].stats
    assert stats["n_blocks"] == 16 and stats["threshold"] > 0
    assert set(stats["timings"]) >= {"pass1_s", "pass2_s", "merge_s"}
    # per-step worker wall and CPU seconds of pass 2, summed over regions
    worker = stats["timings"]["pass2_worker"]
    for step in ("read", "detect", "write"):
        assert worker[f"{step}_wall_s"] >= 0 and worker[f"{step}_cpu_s"] >= 0


def _worker_env() -> tuple[int, str | None, str | None]:
    return os.getpid(), os.environ.get("OMP_NUM_THREADS"), os.environ.get("GDAL_NUM_THREADS")


def test_process_pool_workers_are_single_threaded_and_started():
    """make_executor(2) yields a pool whose 2 workers already run (started and warmed up
    before the first stage) with single-threaded BLAS and GDAL: 2 processes on 2 cores
    must not each spread over all cores."""
    with make_executor(2) as ex:
        assert len(ex._processes) == 2  # started before any stage work
        envs = [f.result() for f in [ex.submit(_worker_env) for _ in range(4)]]
    assert {(omp, gdal) for _, omp, gdal in envs} == {("1", "1")}
    assert all(pid != os.getpid() for pid, _, _ in envs)


def test_block_size_does_not_change_anything(runs):
    ref_mask, _, _ = _read(runs[64].mask_path)
    ref_score, _, _ = _read(runs[64].score_path)
    ref = runs[64].detections
    for bp in (96, 256):
        mask, _, _ = _read(runs[bp].mask_path)
        score, _, _ = _read(runs[bp].score_path)
        np.testing.assert_array_equal(mask, ref_mask)
        np.testing.assert_array_equal(score, ref_score)
        det = runs[bp].detections
        assert len(det) == len(ref)
        np.testing.assert_array_equal(det[N_PIXELS].values, ref[N_PIXELS].values)
        assert shapely.equals_exact(det.geometry.values, ref.geometry.values, 0).all()
        np.testing.assert_allclose(det[P.SCORE].values, ref[P.SCORE].values, rtol=1e-12)
        assert runs[bp].stats["threshold"] == runs[64].stats["threshold"]


def test_patch_over_four_blocks_is_one_polygon_with_its_pixel_area(data_dir):
    # no clean-up: square C (60 x 60 px, over four 96 px blocks) is one polygon whose outline
    # is the square; without the opening/closing a few noisy pixels inside are pinholes
    res = _run(
        data_dir,
        data_dir / "raw",
        block_px=96,
        opening_radius_m=0,
        closing_radius_m=0,
        edge_ratio=None,
    )
    det = res.detections
    c = det[det.geometry.intersects(shapely.Point(X0 + 2 * 180, Y0 - 2 * 120))]
    assert len(c) == 1
    assert c.geometry.iloc[0].geom_type == "Polygon"
    poly = c.geometry.iloc[0]
    assert poly.area == c[AREA_PX_M2].iloc[0] == c[N_PIXELS].iloc[0] * 4.0
    square = shapely.box(X0 + 300, Y0 - 300, X0 + 420, Y0 - 180)
    assert shapely.Polygon(poly.exterior).equals(square)
    assert 60 * 60 - 10 <= c[N_PIXELS].iloc[0] <= 60 * 60


def test_min_area_applies_after_merging(runs):
    # B is four pieces of ≤ 25 px (100 m²) with 64 px blocks; merged it is ~96 px (384 m²)
    det = runs[64].detections
    b = det[det.geometry.intersects(shapely.Point(X0 + 2 * 64, Y0 - 2 * 64))]
    assert len(b) == 1 and b[AREA_PX_M2].iloc[0] >= 200


def test_invalid_pixels_never_change_and_outputs_are_cogs(runs):
    mask, profile, tags = _read(runs[96].mask_path)
    assert (mask[280:] == MASK_NODATA).all()
    assert (mask[:280] != MASK_NODATA).all()
    assert profile["tiled"] and profile["nodata"] == MASK_NODATA
    assert tags.get("LAYOUT") == "COG"
    score, sprofile, stags = _read(runs[96].score_path)
    assert np.isnan(score[280:]).all() and stags.get("LAYOUT") == "COG"
    assert sprofile["dtype"] == "float32"
    assert (mask == MASK_CHANGE).sum() == runs[96].stats["n_pixels_changed"]
    # no stray temporaries next to the outputs
    assert sorted(p.name for p in runs[96].mask_path.parent.iterdir()) == ["mask.tif", "score.tif"]


def test_index_method_without_a_vegetation_index_is_a_config_error(data_dir, tmp_path):
    # neither nir (NDVI) nor all three visible bands (VDVI)
    cfg = make_config(data_dir, EPOCHS, bands={"green": 2, "red": 3})
    cfg = dataclasses.replace(cfg, detect=DetectConfig(method="index"))
    with make_executor(1) as ex, pytest.raises(ConfigError, match="without a nir band"):
        detect_pair(cfg, ("2016", "2017"), tmp_path, ex)


def test_index_method_finds_the_same_squares(data_dir, runs):
    res = _run(data_dir, data_dir / "index", block_px=128, method="index")
    assert len(res.detections) == len(runs[64].detections)


def test_process_pool_gives_the_same_result(data_dir, runs):
    res = _run(data_dir, data_dir / "pool", workers=2, block_px=96)
    np.testing.assert_array_equal(_read(res.mask_path)[0], _read(runs[96].mask_path)[0])
    assert shapely.equals_exact(
        res.detections.geometry.values, runs[96].detections.geometry.values, 0
    ).all()


def test_dask_cluster_gives_the_same_result(data_dir, runs):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        res = _run(data_dir, data_dir / "dask", scheduler=cluster.scheduler_address, block_px=256)
    np.testing.assert_array_equal(_read(res.mask_path)[0], _read(runs[64].mask_path)[0])
    assert shapely.equals_exact(
        res.detections.geometry.values, runs[64].detections.geometry.values, 0
    ).all()


@pytest.fixture(scope="module")
def novelty_runs(data_dir):
    # the roof squares are ~5 % of this small scene: components under 10 % are not "common"
    kw = dict(method="novelty", threshold="fixed", threshold_value=6.0, hysteresis_low=0.7)
    kw |= dict(novelty_components=4, novelty_min_weight=0.1)
    return {bp: _run(data_dir, data_dir / f"nov{bp}", block_px=bp, **kw) for bp in (64, 96, 256)}


def test_novelty_method_is_block_size_independent_and_finds_the_squares(novelty_runs, runs):
    """The pass-1 novelty model is fitted on the canonical sample, so pass 2 gives identical
    rasters and patches for every block size."""
    ref_score = _read(novelty_runs[64].score_path)[0]
    ref_mask = _read(novelty_runs[64].mask_path)[0]
    for bp in (96, 256):
        np.testing.assert_array_equal(_read(novelty_runs[bp].score_path)[0], ref_score)
        np.testing.assert_array_equal(_read(novelty_runs[bp].mask_path)[0], ref_mask)
        assert (
            novelty_runs[bp].stats["novelty_weights"] == novelty_runs[64].stats["novelty_weights"]
        )
    assert len(novelty_runs[64].detections) == len(runs[64].detections)


def test_score_overviews_from_the_workers_are_block_means(tmp_path):
    # score.tif's overviews are built by the pass-2 workers when chunks align with the largest
    # factor (block 64: factors 2 and 4 for 1100 px), by GDAL otherwise (block 90); both must
    # be the mean of the valid full-resolution pixels of each block
    from pipeline.detection.io.cogs import change_pyramid
    from pipeline.detection.regions import score_overviews
    from pipeline.detection.target_grid import TargetGrid

    shape = (600, 1100)
    write_tif(tmp_path / "2016/a.tif", scene(shape, seed=1), grid_transform(), nodata=0)
    # a 4 px square across the chunk edge at row 64 is merged from two chunks, then dropped
    # (below the minimum area) and erased from mask.tif and from its overviews
    after = scene(shape, [(100, 700, 40), (62, 300, 4)], seed=2)
    after[:, 500:, 900:] = 0  # a nodata corner: blocks with no or some valid pixels
    write_tif(tmp_path / "2017/a.tif", after, grid_transform(), nodata=0)
    grid = TargetGrid("EPSG:32650", grid_transform(), shape[1], shape[0])
    assert score_overviews(grid, 64) == (2, 4) and score_overviews(grid, 90) == ()
    levels = {}
    for block in (64, 90):
        res = _run(tmp_path, tmp_path / f"out{block}", block_px=block)
        with rasterio.open(res.score_path) as src:
            assert src.overviews(1) == [2, 4]
            full = src.read(1)
            levels[block] = [src.read(1, out_shape=(-(-600 // f), -(-1100 // f))) for f in (2, 4)]
        if block == 64:  # the mask's overviews: a block is change when any pixel is
            assert res.stats["n_pixels_erased"] >= 8  # the merged square (opened: 12 px)
            with rasterio.open(res.mask_path) as src:
                mask = src.read(1)
                assert not mask[60:68, 298:306].any()  # erased
                for expected in change_pyramid(mask, (2, 4), 1, 0, 255):
                    got = src.read(1, out_shape=expected.shape)
                    np.testing.assert_array_equal(got, expected)
    for f, got, gdal in zip((2, 4), levels[64], levels[90]):
        h, w = got.shape
        pad = np.full((h * f, w * f), np.nan, np.float32)
        pad[:600, :1100] = full
        blocks = pad.reshape(h, f, w, f).transpose(0, 2, 1, 3).reshape(h, w, f * f)
        with warnings.catch_warnings():  # all-NaN blocks: NaN expected, no warning wanted
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmean(blocks.astype(np.float64), axis=2)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gdal, expected, rtol=1e-5, atol=1e-6)
        assert np.isnan(got[-1, -1]) and not np.isnan(got[0, 0])


def test_hysteresis_is_exact_whatever_the_block_size(tmp_path):
    # a strong roof square with a 180 px long strip of half-changed pixels attached (score
    # between the low cut and the cut), and a separate weak strip with no strong pixel:
    # hysteresis keeps the attached strip whole — far beyond any halo — drops the separate
    # one, and gives the same rasters and patches for every block size
    from tests.rasters import ROOF, VEGETATION

    before = scene((300, 300), seed=1)
    after = scene((300, 300), [(40, 40, 20)], seed=2)
    half = ((np.array(VEGETATION) + np.array(ROOF)) / 2).astype(np.uint16)[:, None, None]
    after[:, 45:53, 60:240] = half  # attached to the square's right edge (col 60)
    after[:, 150:158, 30:270] = half  # weak only: no pixel above the cut
    write_tif(tmp_path / "2016/a.tif", before, grid_transform(), nodata=0)
    write_tif(tmp_path / "2017/a.tif", after, grid_transform(), nodata=0)
    kw = dict(threshold="fixed", threshold_value=12.0, hysteresis_low=0.5, edge_ratio=None)
    runs = {bp: _run(tmp_path, tmp_path / f"h{bp}", block_px=bp, **kw) for bp in (64, 96, 512)}
    det = runs[512].detections
    assert len(det) == 1  # square + attached strip; the separate weak strip is dropped
    assert det[N_PIXELS].iloc[0] >= 20 * 20 + 8 * 170
    ref_mask = _read(runs[512].mask_path)[0]
    assert not ref_mask[150:158, 30:270].any()
    for bp in (64, 96):
        np.testing.assert_array_equal(_read(runs[bp].mask_path)[0], ref_mask)
        assert shapely.equals_exact(
            runs[bp].detections.geometry.values, det.geometry.values, 0
        ).all()


def test_selftrain_with_context_is_block_size_independent(data_dir):
    # selftrain with its neighbourhood features (shift-tolerant difference, vegetation
    # weight), smoothing and hysteresis: pass 1 samples the features on cells read with a
    # halo, pass 2 on blocks with a halo — identical rasters and patches for every block size
    kw = dict(
        method="selftrain",
        threshold="fixed",
        threshold_value=0.6,
        smooth_sigma_m=4.0,
        hysteresis_low=0.7,
        min_mean_score=1.0,
        # all but the squares is vegetation in both epochs (nuisance, taught as no change):
        # the change examples are the top 20 % of the few other sample pixels
        selftrain_change_quantile=0.8,
        selftrain_nochange_quantile=0.5,
    )
    st = {bp: _run(data_dir, data_dir / f"st{bp}", block_px=bp, **kw) for bp in (64, 96, 256)}
    model_stats = st[64].stats
    assert model_stats["method"] == "selftrain" and len(st[64].detections) >= 2
    ref_score, ref_mask = _read(st[256].score_path)[0], _read(st[256].mask_path)[0]
    for bp in (64, 96):
        np.testing.assert_array_equal(_read(st[bp].score_path)[0], ref_score)
        np.testing.assert_array_equal(_read(st[bp].mask_path)[0], ref_mask)
        assert shapely.equals_exact(
            st[bp].detections.geometry.values, st[256].detections.geometry.values, 0
        ).all()


def test_erase_dropped_clears_only_the_dropped_patches_and_their_overview_blocks(tmp_path):
    """A 90 × 70 mask part at global (row 200, col 100) with overview files at factors 2/4/8
    (sides not multiples of 8, so the windows clip at the part edge). Dropping two of its
    patches — one on the part's bottom-right corner — clears exactly their pixels, and every
    overview level equals the change pyramid of the erased mask, as if rebuilt whole."""
    from affine import Affine
    from rasterio.features import shapes
    from rasterio.windows import Window

    from pipeline.detection.io.cogs import change_pyramid
    from pipeline.detection.pair import MASK_NO_CHANGE, erase_dropped

    r0, c0, h, w, factors = 200, 100, 90, 70, [2, 4, 8]
    mask = np.full((h, w), MASK_NO_CHANGE, np.uint8)
    mask[:3, :] = MASK_NODATA
    mask[10:20, 5:17] = MASK_CHANGE  # kept
    mask[30:41, 30:37] = MASK_CHANGE  # dropped
    mask[84:90, 61:70] = MASK_CHANGE  # dropped, on the corner
    mask[50:52, 50:60] = MASK_CHANGE  # kept, next to nothing dropped
    profile = {"driver": "GTiff", "dtype": "uint8", "count": 1, "height": h, "width": w}
    profile |= {"crs": "EPSG:32650", "transform": Affine(10.0, 0.0, X0, 0.0, -10.0, Y0)}

    def write(path, array):
        with rasterio.open(
            path, "w", **{**profile, "height": array.shape[0], "width": array.shape[1]}
        ) as dst:
            dst.write(array, 1)

    part = tmp_path / "mask_part.tif"
    write(part, mask)
    levels = []
    for f, level in zip(
        factors, change_pyramid(mask, factors, MASK_CHANGE, MASK_NO_CHANGE, MASK_NODATA)
    ):
        path = tmp_path / f"mask_part_{f}.tif"
        write(path, level)
        levels.append((f, Window(c0 // f, r0 // f, level.shape[1], level.shape[0]), str(path)))

    # the patches as the engine has them: polygons in global pixel coordinates
    lab = np.zeros_like(mask, dtype=np.int32)
    lab[30:41, 30:37], lab[84:90, 61:70] = 1, 2
    to_global = Affine.translation(c0, r0)
    polys = {
        int(v): shapely.geometry.shape(g) for g, v in shapes(lab, mask=lab > 0, transform=to_global)
    }
    dropped = np.array([polys[1], polys[2]], dtype=object)

    n = erase_dropped([(Window(c0, r0, w, h), str(part))], dropped, {str(part): levels})

    expected = mask.copy()
    expected[lab > 0] = MASK_NO_CHANGE
    assert n == int((lab > 0).sum())
    with rasterio.open(part) as src:
        np.testing.assert_array_equal(src.read(1), expected)
    want = change_pyramid(expected, factors, MASK_CHANGE, MASK_NO_CHANGE, MASK_NODATA)
    for (f, _, path), level in zip(levels, want):
        with rasterio.open(path) as src:
            np.testing.assert_array_equal(src.read(1), level, err_msg=f"factor {f}")


def test_erase_dropped_skips_a_part_the_patch_only_touches(tmp_path):
    """Two 8 × 8 parts side by side; a dropped patch on the right edge of the first touches
    the second only along their shared edge (STRtree "intersects" returns it for both):
    its pixels are cleared in the first, the second is left as it was."""
    from affine import Affine
    from rasterio.windows import Window

    from pipeline.detection.pair import MASK_NO_CHANGE, erase_dropped

    profile = {"driver": "GTiff", "dtype": "uint8", "count": 1, "height": 8, "width": 8}
    profile |= {"crs": "EPSG:32650", "transform": Affine(10.0, 0.0, X0, 0.0, -10.0, Y0)}
    paths, arrays = [], []
    for k in range(2):
        array = np.full((8, 8), MASK_NO_CHANGE, np.uint8)
        array[2:5, 5 * (1 - k) : 5 * (1 - k) + 3] = MASK_CHANGE  # right edge / left edge
        paths.append(tmp_path / f"part{k}.tif")
        arrays.append(array)
        with rasterio.open(paths[-1], "w", **profile) as dst:
            dst.write(array, 1)
    dropped = np.array([shapely.box(5, 2, 8, 5)], dtype=object)  # global px: x = col, y = row

    n = erase_dropped([(Window(0, 0, 8, 8), paths[0]), (Window(8, 0, 8, 8), paths[1])], dropped)

    assert n == 9
    with rasterio.open(paths[0]) as src:
        assert (src.read(1) == MASK_CHANGE).sum() == 0
    with rasterio.open(paths[1]) as src:
        np.testing.assert_array_equal(src.read(1), arrays[1])


def test_a_cut_that_marks_most_of_the_scene_is_warned_about(data_dir, tmp_path, caplog):
    """A fixed cut far below the scene's scores still runs (the setting is legal), but the
    run warns that most of the scene is above it, naming the keys to check."""
    import logging

    with caplog.at_level(logging.WARNING, logger="pipeline.detection.pair"):
        _run(data_dir, tmp_path / "out", method="cva", threshold="fixed", threshold_value=1e-6)
    messages = [r.getMessage() for r in caplog.records]
    assert any("above the cut" in m and "'detect.threshold_value'" in m for m in messages)


def test_warped_inputs_give_the_same_result_whatever_the_block_size(tmp_path):
    """Both epochs in EPSG:4326 (0.0001° pixels, narrower than the 10 m UTM grid along x:
    downsampled) with a bright square in the later one: scores, masks and patches are
    identical for 64 and 256 px blocks — the warped reads do not depend on the window."""
    rng = np.random.default_rng(11)
    lon0, lat0, d = 117.0, 36.1, 0.0001
    transform = rasterio.Affine(d, 0, lon0, 0, -d, lat0)
    before = rng.normal(1500, 300, size=(4, 300, 300))
    after = before + rng.normal(0, 150, size=before.shape)
    after[:, 100:160, 120:200] += 2500
    for name, img in (("2016", before), ("2017", after)):
        write_tif(
            tmp_path / name / "a.tif",
            np.clip(img, 1, 10000).astype(np.uint16),
            transform,
            crs="EPSG:4326",
            nodata=0,
        )
    out = {}
    for bp in (64, 256):
        cfg = make_config(
            tmp_path,
            EPOCHS,
            resolution_m=10.0,
            detect=DetectConfig(method="cva", threshold="otsu", block_px=bp, min_area_m2=500),
        )
        with make_executor(1) as ex:
            out[bp] = detect_pair(cfg, ("2016", "2017"), tmp_path / f"out{bp}", ex)
    a, b = out[64], out[256]
    np.testing.assert_array_equal(_read(a.score_path)[0], _read(b.score_path)[0])
    np.testing.assert_array_equal(_read(a.mask_path)[0], _read(b.mask_path)[0])
    assert a.stats["threshold"] == b.stats["threshold"]
    assert len(a.detections) == len(b.detections) >= 1
    assert shapely.equals_exact(a.detections.geometry.values, b.detections.geometry.values, 0).all()
