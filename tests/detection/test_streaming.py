"""Pass 2 streaming: regions read top to bottom once, parts written by workers, and a
``mask.tif`` that is exactly the returned detections.

Scene: 200 x 260 px at 2 m of noisy vegetation with roof squares of several sizes; the 4 x 4
and 6 x 6 px ones are below the 200 m² minimum area (50 px), so they are found by the
threshold but dropped by the object-level filter.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.features import rasterize
from rasterio.windows import Window

from pipeline.config import DetectConfig
from pipeline.detection import regions as engine
from pipeline.detection.io.imagery import RowStream, epoch_footprint, epoch_source, read_block
from pipeline.detection.pair import MASK_CHANGE, MASK_NODATA, detect_pair
from pipeline.detection.target_grid import target_grid
from pipeline.ops.executor import make_executor
from tests.rasters import grid_transform, make_config, scene, write_tif

SQUARES = [(10, 10, 20), (40, 120, 4), (100, 30, 6), (120, 200, 30), (170, 90, 12), (60, 60, 3)]
EPOCHS = {"a": ["a.tif"], "b": ["b.tif"]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("streaming")
    write_tif(base / "a.tif", scene((200, 260), seed=3), grid_transform(), nodata=0, blocksize=32)
    after = scene((200, 260), SQUARES, seed=4)
    after[:, :, 250:] = 0  # an invalid strip on the right
    write_tif(base / "b.tif", after, grid_transform(), nodata=0, blocksize=32)
    return base


def _run(base, out, **detect_kw):
    cfg = make_config(base, EPOCHS, detect=DetectConfig(**{"method": "cva", **detect_kw}))
    with make_executor(1) as ex:
        return detect_pair(cfg, ("a", "b"), out, ex)


def _mask(res):
    with rasterio.open(res.mask_path) as src:
        return src.read(1), src.transform


def test_mask_is_exactly_the_detections(data_dir):
    """Every mask pixel == 1 lies in a returned detection and every detection pixel is 1;
    the small squares found by the threshold but dropped by min_area_m2 are 0, not 1."""
    res = _run(data_dir, data_dir / "out", block_px=64)
    mask, transform = _mask(res)
    burned = rasterize(
        res.detections.geometry.values, out_shape=mask.shape, transform=transform, fill=0
    ).astype(bool)
    np.testing.assert_array_equal(mask == MASK_CHANGE, burned)
    assert res.stats["n_patches_below_min_area"] >= 2  # the 4 and 6 px squares
    assert (mask[:, 250:] == MASK_NODATA).all()
    assert (mask == MASK_CHANGE).sum() == res.stats["n_pixels_changed"]
    # without the minimum area the dropped squares are detections and in the mask again
    res0 = _run(data_dir, data_dir / "out0", block_px=64, min_area_m2=0)
    mask0, _ = _mask(res0)
    assert (mask0 == MASK_CHANGE).sum() > (mask == MASK_CHANGE).sum()
    assert mask0[42, 122] == MASK_CHANGE and mask[42, 122] == 0


def test_many_small_regions_give_the_same_result(data_dir, monkeypatch):
    """Regions of 64 px (so the scene is 4 x 5 regions with seams in both directions, each
    written as its own part file) give the same rasters and patches as one region."""
    ref = _run(data_dir, data_dir / "one", block_px=64)
    monkeypatch.setattr(engine, "REGION_PX", 64)
    monkeypatch.setattr(engine, "REGION_ROWS_PX", 64)
    monkeypatch.setattr(engine, "CHUNK_ROWS_PX", 16)
    res = _run(data_dir, data_dir / "many", block_px=64)
    np.testing.assert_array_equal(_mask(res)[0], _mask(ref)[0])
    with rasterio.open(res.score_path) as a, rasterio.open(ref.score_path) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    assert shapely.equals_exact(
        res.detections.geometry.values, ref.detections.geometry.values, 0
    ).all()
    # the parts folder is gone
    assert sorted(p.name for p in res.mask_path.parent.iterdir()) == ["mask.tif", "score.tif"]


@pytest.mark.parametrize("region", [(5120, 10240), (128, 256), (64, 64)])
def test_regions_cover_the_grid_once(monkeypatch, region):
    """pass2_regions: whole blocks, no overlap, every block counted once, at most the
    configured width and height."""
    from pipeline.detection.target_grid import TargetGrid, blocks

    monkeypatch.setattr(engine, "REGION_PX", region[0])
    monkeypatch.setattr(engine, "REGION_ROWS_PX", region[1])
    grid = TargetGrid("EPSG:32650", grid_transform(), 300, 250)
    windows = blocks(grid, 64)
    regions = engine.pass2_regions(windows, 64)
    cover = np.zeros((250, 300), dtype=int)
    for w, _ in regions:
        cover[w.toslices()] += 1
    assert (cover == 1).all()
    assert sum(n for _, n in regions) == len(windows)
    assert all(w.width <= max(64, region[0]) and w.height <= max(64, region[1]) for w, _ in regions)


@settings(max_examples=15, deadline=None)
@given(
    start=st.integers(-8, 20),
    steps=st.lists(st.integers(1, 50), min_size=1, max_size=6),
    halo=st.integers(0, 8),
    align=st.sampled_from([16, 32, 512]),
)
def test_row_stream_equals_read_block(stream_data, start, steps, halo, align):
    """Rows from a RowStream (overlapping, top-down requests) equal a direct read_block."""
    source, grid = stream_data
    stream = RowStream(source, grid, -3, grid.width + 6, row_end=400, align=align)
    y = start
    for step in steps:
        data, valid = stream.rows(y - halo, y + step + halo)
        ref_data, ref_valid = read_block(
            source, grid, Window(-3, y - halo, grid.width + 6, step + 2 * halo)
        )
        np.testing.assert_array_equal(data, ref_data)
        np.testing.assert_array_equal(valid, ref_valid)
        y += step


@pytest.fixture(scope="module")
def stream_data(data_dir):
    cfg = make_config(data_dir, EPOCHS)
    source = epoch_source(cfg.imagery, "b")
    return source, target_grid(cfg.area, [epoch_footprint(source)])


def test_row_stream_refuses_to_go_back(stream_data):
    source, grid = stream_data
    stream = RowStream(source, grid, 0, 10, row_end=100)
    stream.rows(10, 20)
    with pytest.raises(ValueError, match="top down"):
        stream.rows(5, 15)


def test_row_stream_long_run_reuses_its_buffer(stream_data):
    """Many small top-down chunks: the stream's buffer is reused (kept rows moved to its top
    when new slabs no longer fit below them), and every chunk still equals read_block."""
    source, grid = stream_data
    halo, step = 5, 7
    stream = RowStream(source, grid, -3, grid.width + 6, row_end=grid.height + halo, align=16)
    buffers = set()
    starts = range(0, grid.height, step)
    for y in starts:
        data, valid = stream.rows(y - halo, y + step + halo)
        buffers.add(id(stream._data))
        ref_data, ref_valid = read_block(
            source, grid, Window(-3, y - halo, grid.width + 6, step + 2 * halo)
        )
        np.testing.assert_array_equal(data, ref_data)
        np.testing.assert_array_equal(valid, ref_valid)
    # grown during the first chunks until the steady request size, then reused
    assert len(buffers) <= 3 < len(starts)


@settings(max_examples=60, deadline=None)
@given(
    r0_slabs=st.integers(0, 5),
    height=st.integers(1, 3000),
    halo=st.integers(0, 300),
    factor=st.sampled_from([1, 2, 16, 32]),
    chunk_rows=st.sampled_from([256, 512]),
)
def test_region_chunks_tile_the_region_and_end_where_the_slabs_end(
    r0_slabs, height, halo, factor, chunk_rows
):
    """Chunks cover the region's rows once, start on multiples of the overview factor and
    (when they can) end `lead` rows before a slab boundary, so a RowStream keeps only
    lead + halo rows from one chunk to the next."""
    align = 512
    r0 = r0_slabs * 256
    chunks = engine.region_chunks(r0, height, chunk_rows, halo, align, factor)
    starts = [y for y, _ in chunks]
    assert starts[0] == r0
    assert all(n > 0 for _, n in chunks)
    assert [y + n for y, n in chunks[:-1]] == starts[1:]
    assert chunks[-1][0] + chunks[-1][1] == r0 + height
    assert all(y % factor == 0 for y in starts)
    lead = -(-halo // factor) * factor
    if chunk_rows == align and 2 * lead < align:
        assert all((y + n + lead) % align == 0 for y, n in chunks[:-1])
        assert all(n <= align + lead for _, n in chunks)
    else:
        assert all(n <= chunk_rows for _, n in chunks)


def test_row_stream_keeps_few_rows_on_slab_aligned_chunks(stream_data):
    """Streaming the chunks of region_chunks: every chunk equals read_block and the buffer
    never holds much more than one slab plus the halos."""
    source, grid = stream_data
    halo, align = 5, 16
    stream = RowStream(source, grid, 0, grid.width, row_end=grid.height + halo, align=align)
    for y, n in engine.region_chunks(0, grid.height, align, halo, align, 1):
        data, valid = stream.rows(y - halo, y + n + halo)
        ref_data, ref_valid = read_block(
            source, grid, Window(0, y - halo, grid.width, n + 2 * halo)
        )
        np.testing.assert_array_equal(data, ref_data)
        np.testing.assert_array_equal(valid, ref_valid)
        assert stream._data.shape[1] <= align + 3 * halo
