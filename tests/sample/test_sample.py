"""The synthetic sample generator: deterministic, a clean grid, a truthful truth, real GeoTIFFs.

Small samples (500 px = 1 km) keep the file fast; the same invariants hold for the full
4000 px sample that ``landwatch sample`` writes by default.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.sample import SceneOptions, generate_sample, make_layout, render_epoch
from pipeline.sample.scene import (
    CONSTRUCTION_KINDS,
    EPOCHS,
    TILE_LAYOUTS,
    Kind,
    make_frame,
    tile_windows,
    truth_mask,
)
from pipeline.sample.write import (
    APPROVALS_FILE,
    COMPLETE_MARKER,
    FARMLAND_FILE,
    GRIDS_FILE,
    IMAGERY_DIR,
    TRUTH_FILE,
)
from pipeline.schema import (
    APPROVALS_LAYER,
    FARMLAND_LAYER,
    SEASONAL_LAYER,
    TRUTH_LAYER,
    UNASSIGNED,
    G,
    T,
)

SIZE = 500


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """One small sample, shared by the read-only tests below."""
    out = tmp_path_factory.mktemp("sample")
    info = generate_sample(out, size_px=SIZE, seed=2017)
    return out, info


def _read(path: Path, layer: str):
    return pyogrio.read_dataframe(path, layer=layer)


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_files(sample, tmp_path):
    """A second run with the same arguments reproduces every file byte for byte, and the
    vector layers read back equal (attributes and geometries)."""
    out, _ = sample
    again = tmp_path / "again"
    generate_sample(again, size_px=SIZE, seed=2017)
    assert _hashes(out) == _hashes(again)
    for file, layer in ((TRUTH_FILE, TRUTH_LAYER), (GRIDS_FILE, "village")):
        a, b = _read(out / file, layer), _read(again / file, layer)
        pd.testing.assert_frame_equal(a.drop(columns="geometry"), b.drop(columns="geometry"))
        assert shapely.equals_exact(a.geometry.values, b.geometry.values, tolerance=0).all()


DEFAULT_PIXELS_SHA256 = {
    "2016": "ba8ae34c08ccfd89a501912a02aaecf622bca7f1b81e9ca538993b2f76ac72b3",
    "2017": "db4ab109248b0dbeef54df2cae323f736f516b63b75b2ff76343d54f7b7556f6",
}
"""Pixels of the 500 px, seed 2017 sample, all tiles in name order, as recorded before the
scene options existed: the default options must keep the default sample."""


def test_default_sample_pixels_are_unchanged(sample):
    out, info = sample
    assert info.options == SceneOptions()
    for label in EPOCHS:
        h = hashlib.sha256()
        for f in sorted((out / IMAGERY_DIR / label).glob("*.tif")):
            with rasterio.open(f) as src:
                h.update(src.read().tobytes())
        assert h.hexdigest() == DEFAULT_PIXELS_SHA256[label]
    truth = _read(out / TRUTH_FILE, TRUTH_LAYER)
    assert set(truth[T.COVER]) <= {
        "blue_roof",
        "concrete_roof",
        "red_roof",
        "compound",
        "fill_soil",
    }
    np.testing.assert_array_equal(truth[T.OFF_FARMLAND], truth[T.KIND] == Kind.NONFARM)


def test_different_seed_differs(sample, tmp_path):
    out, _ = sample
    other = tmp_path / "other"
    generate_sample(other, size_px=SIZE, seed=7)
    a, b = _hashes(out), _hashes(other)
    tifs = [k for k in a if k.endswith(".tif")]
    assert all(a[k] != b[k] for k in tifs)
    ta, tb = _read(out / TRUTH_FILE, TRUTH_LAYER), _read(other / TRUTH_FILE, TRUTH_LAYER)
    assert len(ta) != len(tb) or not shapely.equals(ta.geometry.values, tb.geometry.values).all()


def test_complete_marker_and_info(sample):
    """The marker exists, and the counts returned match the files."""
    out, info = sample
    assert (out / COMPLETE_MARKER).is_file()
    truth = _read(out / TRUTH_FILE, TRUTH_LAYER)
    assert info.truth_by_kind == {
        str(k): int((truth[T.KIND] == k).sum()) for k in CONSTRUCTION_KINDS
    }
    assert info.n_villages == len(_read(info.grids, "village")) >= 6
    assert info.n_townships == len(_read(info.grids, "township")) >= 2
    assert "SYNTHETIC" in info.readme.read_text(encoding="utf-8")


def test_rejects_bad_size():
    with pytest.raises(ConfigError, match="size_px"):
        make_layout(50, 1)


# --------------------------------------------------------------------------- grid
def test_grid_codes_are_unique_12_digit_text(sample):
    out, _ = sample
    grids = out / GRIDS_FILE
    codes = []
    for layer in ("district", "township", "village"):
        info = pyogrio.read_info(grids, layer=layer)
        types = dict(zip(info["fields"], info["ogr_types"], strict=True))
        assert types[G.CODE] == "OFTString", f"{layer}.code must be TEXT"
        gdf = _read(grids, layer)
        assert gdf[G.CODE].map(lambda c: isinstance(c, str) and len(c) == 12 and c.isdigit()).all()
        assert gdf[G.NAME].is_unique and gdf[G.PERSON].notna().all()
        codes += list(gdf[G.CODE])
    assert len(codes) == len(set(codes))
    township, village = _read(grids, "township"), _read(grids, "village")
    assert set(village[G.TOWNSHIP_CODE]) <= set(township[G.CODE])
    assert (village[G.CODE].str[:9] == village[G.TOWNSHIP_CODE].str[:9]).all()
    # 001-099 街道, 100-199 镇, 200-399 乡
    kind = township[G.CODE].str[6:9].astype(int)
    suffix = np.select([kind < 100, kind < 200], ["街道", "镇"], "乡")
    assert all(n.endswith(s) for n, s in zip(township[G.NAME], suffix, strict=True))


def _assert_tiles_district_except_gap(district, villages, gap):
    vg = villages.geometry.values
    a, b = shapely.STRtree(vg).query(vg, predicate="intersects")
    pairs = a < b
    overlap = shapely.area(shapely.intersection(vg[a[pairs]], vg[b[pairs]])).sum()
    assert overlap < 1e-3, f"villages overlap by {overlap} m²"
    d = district.geometry.iloc[0]
    union = shapely.union_all(vg)
    assert shapely.area(shapely.difference(union, d)) < 1e-3  # nothing outside the district
    missing = shapely.difference(d, union)
    assert abs(missing.area - gap.area) < 1e-2, "the only hole is the deliberate gap"
    assert shapely.contains_properly(d, gap)


def test_villages_tile_the_district_except_the_gap(sample):
    out, _ = sample
    layout = make_layout(SIZE, 2017)
    district = _read(out / GRIDS_FILE, "district")
    villages = _read(out / GRIDS_FILE, "village")
    _assert_tiles_district_except_gap(district, villages, layout.grid.gap)
    townships = _read(out / GRIDS_FILE, "township")
    assert abs(townships.area.sum() - villages.area.sum()) < 1e-2


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), size=st.sampled_from([300, 450, 700]))
def test_grid_invariants_hold_for_any_seed(seed, size):
    """Property: for any seed and size the villages tile the district except the gap, every
    kind of truth object exists and one sits in the gap."""
    layout = make_layout(size, seed)
    g = layout.grid
    _assert_tiles_district_except_gap(g.district, g.village, g.gap)
    assert set(layout.truth[T.KIND]) == {str(k) for k in CONSTRUCTION_KINDS}
    in_gap = shapely.within(layout.truth.geometry.values, g.gap)
    assert in_gap.any()
    assert (layout.truth[T.VILLAGE_CODE][in_gap] == UNASSIGNED).all()


# --------------------------------------------------------------------------- truth
def test_truth_respects_farmland_and_approvals(sample):
    out, _ = sample
    truth = _read(out / TRUTH_FILE, TRUTH_LAYER)
    farm = shapely.union_all(_read(out / FARMLAND_FILE, FARMLAND_LAYER).geometry.values)
    approvals = _read(out / APPROVALS_FILE, APPROVALS_LAYER)
    appr = shapely.union_all(approvals.geometry.values)
    geoms = truth.geometry.values
    area = shapely.area(geoms)
    on_farm = shapely.area(shapely.intersection(geoms, farm)) / area
    approved = shapely.area(shapely.intersection(geoms, appr)) / area
    kind = truth[T.KIND].to_numpy()
    assert set(kind) == {str(k) for k in CONSTRUCTION_KINDS}
    assert (on_farm[kind == Kind.ILLEGAL] > 0.999).all()
    assert (approved[kind == Kind.ILLEGAL] == 0).all()
    assert (approved[kind == Kind.LEGAL] > 0.999).all()
    assert ((approved[kind == Kind.PARTIAL] > 0.1) & (approved[kind == Kind.PARTIAL] < 0.9)).all()
    assert (on_farm[kind == Kind.NONFARM] < 0.001).all()
    assert (on_farm[kind == Kind.EARTHWORKS] > 0.999).all()
    np.testing.assert_allclose(truth[T.AREA_M2], area, atol=0.01)
    assert (truth[T.EPOCH_FROM] == EPOCHS[0]).all() and (truth[T.EPOCH_TO] == EPOCHS[1]).all()
    assert approvals["doc_no"].is_unique
    assert pyogrio.read_info(out / APPROVALS_FILE)["ogr_types"][1] == "OFTDate"
    assert (~shapely.intersects(approvals.geometry.values, shapely.union_all(geoms))).any(), (
        "some approvals have no construction yet"
    )


def test_truth_has_the_hard_cases(sample):
    """Objects in the grid gap (unassigned), across village boundaries, across tile edges,
    and below the 200 m² minimum mapping unit."""
    out, _ = sample
    layout = make_layout(SIZE, 2017)
    truth = _read(out / TRUTH_FILE, TRUTH_LAYER)
    geoms = truth.geometry.values
    in_gap = shapely.intersects(geoms, layout.grid.gap)
    assert in_gap.any() and (truth[T.VILLAGE_CODE][in_gap] == UNASSIGNED).all()
    villages = _read(out / GRIDS_FILE, "village").geometry.values
    gi, _ = shapely.STRtree(villages).query(geoms, predicate="overlaps")
    assert np.bincount(gi, minlength=len(geoms)).max() >= 2, "no object straddles villages"
    assert (truth[T.AREA_M2] < 200).any()
    straddles = []
    for epoch in range(len(TILE_LAYOUTS)):
        files = sorted((out / IMAGERY_DIR / EPOCHS[epoch]).glob("*.tif"))
        edges = set()
        for f in files:
            with rasterio.open(f) as src:
                edges.update(shapely.get_parts(shapely.boundary(shapely.box(*src.bounds))).tolist())
        lines = shapely.union_all(list(edges))
        straddles.append(shapely.intersects(geoms, lines).any())
    assert any(straddles), "no object straddles a tile edge"


def test_seasonal_layer_is_change_but_not_construction(sample):
    out, _ = sample
    seasonal = _read(out / TRUTH_FILE, SEASONAL_LAYER)
    truth = _read(out / TRUTH_FILE, TRUTH_LAYER)
    assert len(seasonal) > 0
    assert (seasonal[T.STATE_FROM] != seasonal[T.STATE_TO]).all()
    overlap = shapely.area(
        shapely.intersection(seasonal.geometry.values, shapely.union_all(truth.geometry.values))
    )
    assert overlap.max() < 1e-3


# --------------------------------------------------------------------------- imagery
def test_imagery_files_are_tiled_4_band_uint16(sample):
    out, _ = sample
    layouts = []
    for label in EPOCHS:
        files = sorted((out / IMAGERY_DIR / label).glob("*.tif"))
        assert len(files) > 1
        bounds = set()
        for f in files:
            with rasterio.open(f) as src:
                assert src.count == 4 and src.dtypes == ("uint16",) * 4
                assert src.crs.to_epsg() == 4548
                assert src.res == (2.0, 2.0)
                assert src.nodata == 0
                assert src.block_shapes[0] == (256, 256)
                assert src.profile["tiled"] or max(src.shape) <= 256  # one block: same thing
                assert src.compression.value == "DEFLATE"
                assert "synthetic" in src.tags()["TIFFTAG_IMAGEDESCRIPTION"]
                assert src.descriptions == ("blue", "green", "red", "nir")
                bounds.add(tuple(round(v, 3) for v in src.bounds))
        layouts.append(bounds)
    assert layouts[0] != layouts[1], "the epochs must use different tile layouts"


def test_tile_overlaps_hold_identical_pixels(sample):
    out, _ = sample
    files = sorted((out / IMAGERY_DIR / EPOCHS[1]).glob("*.tif"))
    with rasterio.open(files[0]) as a, rasterio.open(files[1]) as b:
        _, bottom, right, top = a.bounds
        shared = (b.bounds.left, bottom, right, top)
        wa = a.window(*shared).round_offsets().round_lengths()
        wb = b.window(*shared).round_offsets().round_lengths()
        assert wa.width > 0
        np.testing.assert_array_equal(a.read(window=wa), b.read(window=wb))


@given(
    size=st.integers(64, 3000),
    n=st.integers(1, 4),
    overlap=st.integers(0, 8),
)
def test_tile_windows_cover_the_grid(size, n, overlap):
    """Property: tiles cover every pixel, stay in the grid and overlap only near splits."""
    cover = np.zeros((size, size), dtype=np.int8)
    for _, _, (r0, c0, h, w) in tile_windows(size, size, n, n, overlap):
        assert r0 >= 0 and c0 >= 0 and r0 + h <= size and c0 + w <= size
        cover[r0 : r0 + h, c0 : c0 + w] += 1
    assert cover.min() >= 1
    assert cover.max() <= 4


def test_scene_is_not_trivially_separable():
    """A naive per-band difference flags far more pixels than the truth covers: seasonal
    crop change and radiometric differences dominate (the detector has work to do)."""
    layout = make_layout(600, 2017)
    a = render_epoch(layout, 0).astype(np.int32)
    b = render_epoch(layout, 1).astype(np.int32)
    valid = (a[0] > 0) & (b[0] > 0)
    big = (np.abs(b - a) > 400).any(axis=0) & valid
    truth = truth_mask(layout) & valid
    assert truth.sum() > 0
    assert big.mean() > 10 * truth.mean()
    assert (big & truth).sum() / big.sum() < 0.1
    # but the new objects are visible: most truth pixels change
    assert (big & truth).sum() / truth.sum() > 0.5


def test_render_does_not_depend_on_block_rows():
    layout = make_layout(300, 5)
    np.testing.assert_array_equal(
        render_epoch(layout, 1, block_rows=512), render_epoch(layout, 1, block_rows=97)
    )


def test_large_scenes_have_villages_of_bounded_size():
    """Village spacing grows past 1.3 km in county-sized scenes (the village count is capped):
    settlement sizes stay within their 320 m bound instead of failing to draw a size
    (``landwatch sample --size-px 10000`` raised ``ValueError: high - low < 0``)."""
    from pipeline.sample.scene import _settlements

    frame = make_frame(10000)
    x0, y0 = frame.bounds[:2]
    seeds = np.array([[x0 + 5000.0, y0 + 5000.0], [x0 + 12000.0, y0 + 9000.0]])
    settle = _settlements(seeds, 2500.0, frame, shapely.Polygon(), np.random.default_rng(0))
    for poly in settle["geom"]:
        bx0, by0, bx1, by1 = poly.bounds
        assert max(bx1 - bx0, by1 - by0) <= 320.0 * 1.6 + 1  # core plus at most side extensions


def test_more_approvals_than_document_serials_get_distinct_numbers():
    """Large scenes hold more than 399 approvals: each still gets its own document number."""
    from pipeline.sample.scene import _approvals_layer

    geoms = shapely.points(np.arange(500.0), np.zeros(500))
    layer = _approvals_layer(geoms, "EPSG:4548", np.random.default_rng(0))
    assert len(layer) == 500 and layer[T.DOC_NO].is_unique
