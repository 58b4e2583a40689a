"""The harder samples (:class:`pipeline.sample.SceneOptions`): every roof colour, buildings
off farmland at village edges, haze, flooded paddies and film, RGB-only files, the later
epoch in another CRS, and rendering in row blocks."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio import features
from rasterio.warp import Resampling, reproject

from pipeline.errors import ConfigError
from pipeline.sample import ROOF_COVERS, SceneOptions, generate_sample, make_layout, render_epoch
from pipeline.sample.blocks import BlockRenderer
from pipeline.sample.scene import EPOCHS, LATER_CRS, C, Kind
from pipeline.sample.write import IMAGERY_DIR, write_tiles_in_blocks
from pipeline.schema import SEASONAL_LAYER, TRUTH_LAYER, T


def _rows(layout, epoch: int, block: int) -> np.ndarray:
    renderer = BlockRenderer(layout, epoch)
    h = layout.epoch_frame(epoch).height
    return np.concatenate([renderer.rows(o, min(h, o + block)) for o in range(0, h, block)], 1)


@pytest.fixture(scope="module")
def hard_layout():
    return make_layout(700, 1, SceneOptions.hard())


@pytest.fixture(scope="module")
def hard_rgb(tmp_path_factory):
    out = tmp_path_factory.mktemp("hard-rgb")
    return out, generate_sample(out, size_px=300, seed=1, options=SceneOptions.hard(bands="rgb"))


# --------------------------------------------------------------------------- options
def test_options_are_checked():
    with pytest.raises(ConfigError, match="roofs"):
        SceneOptions(roofs="rainbow")
    with pytest.raises(ConfigError, match="later_crs"):
        SceneOptions(later_crs="EPSG:4326")  # not projected
    with pytest.raises(ConfigError, match="off_farmland"):
        SceneOptions(off_farmland=-1)
    with pytest.raises(ConfigError, match="options"):
        make_layout(300, 1, "hard")


# --------------------------------------------------------------------------- layout
def test_hard_scene_has_every_roof_colour(hard_layout):
    """New buildings show every roof cover; old roofs use the whole palette too."""
    truth = hard_layout.truth
    assert set(ROOF_COVERS) <= set(truth[T.COVER])
    classes = set(hard_layout.objects.cls[0].tolist())
    roof_classes = {C.ROOF_BLUE, C.ROOF_STEEL_RED, C.ROOF_RED}
    roof_classes |= {C.ROOF_WHITE, C.ROOF_CONCRETE, C.ROOF_ASPHALT}
    assert roof_classes <= classes


def test_red_steel_roofs_look_as_measured():
    """Red / orange colour-steel roofs render near the reflectances measured on delivered
    imagery (R 1800-2000, G 1250-1500, B 1350-1575, NIR 1700-1950; the epoch's gain,
    offset and haze move them a little)."""
    layout = make_layout(700, 1, SceneOptions(roofs="all", stream=True))
    image = _rows(layout, 1, 256).astype(float)
    truth = layout.truth[layout.truth[T.COVER] == "red_steel_roof"]
    inner = shapely.buffer(truth.geometry.values, -3.0)
    mask = features.rasterize(
        [(g, 1) for g in inner if not g.is_empty],
        out_shape=image.shape[1:],
        transform=layout.frame.transform,
    ).astype(bool)
    assert mask.sum() > 15
    b, g, r, n = (np.median(image[k][mask]) for k in range(4))
    assert 1500 < r < 2400 and 1000 < g < 1800 and 1100 < b < 1900 and 1400 < n < 2300
    assert r > g and r > b


def test_off_farmland_buildings_at_village_edges(hard_layout):
    """The flag marks new buildings with no farmland and no approval; the hard scene puts
    most of them right at a village's edge."""
    truth = hard_layout.truth
    flag = truth[T.OFF_FARMLAND].to_numpy()
    assert flag.dtype == bool and flag.sum() >= 5
    assert (truth[T.FARMLAND_M2][flag] == 0).all() and (truth[T.APPROVED_M2][flag] == 0).all()
    assert (truth[T.KIND][flag] == Kind.NONFARM).all()
    obj = hard_layout.objects
    village = shapely.union_all(obj.geoms[obj.cls[0] == C.VILLAGE_GROUND])
    gap = shapely.distance(truth.geometry.values[flag], village)
    assert (gap < 4.5).sum() >= 3
    default = make_layout(700, 1)
    assert flag.sum() > default.truth[T.OFF_FARMLAND].sum()


def test_seasonal_layer_holds_flooded_paddies_and_film(hard_layout):
    states = set(hard_layout.seasonal[T.STATE_FROM]) | set(hard_layout.seasonal[T.STATE_TO])
    assert {"flooded", "film", "greenhouse", "green", "ploughed"} <= states
    overlap = shapely.intersection(
        hard_layout.seasonal.geometry.values, shapely.union_all(hard_layout.truth.geometry.values)
    )
    assert shapely.area(overlap).max() < 1e-3


def test_haze_in_one_epoch(hard_layout):
    """One epoch carries strong additive haze, stronger in blue than in nir."""
    haze = [r.haze for r in hard_layout.radiometry]
    hazy = [h for h in haze if h[0] > 500]
    assert len(hazy) == 1
    assert hazy[0][0] > hazy[0][1] > hazy[0][2] > hazy[0][3]


# --------------------------------------------------------------------------- files
def test_rgb_hard_sample_files(hard_rgb):
    """3-band files; the later epoch in UTM on its own grid, off the resolution multiples,
    tiled differently; the info says how to configure the bands."""
    _, info = hard_rgb
    assert info.bands == {"blue": 1, "green": 2, "red": 3}
    assert info.band_names == ("blue", "green", "red")
    assert info.epoch_crs == {"2016": "EPSG:4548", "2017": LATER_CRS}
    for label in EPOCHS:
        for f in info.imagery[label]:
            with rasterio.open(f) as src:
                assert src.count == 3 and src.descriptions == ("blue", "green", "red")
                assert src.crs == rasterio.crs.CRS.from_user_input(info.epoch_crs[label])
                assert src.res == (2.0, 2.0)
    with rasterio.open(info.imagery["2017"][0]) as src:
        assert src.block_shapes[0] != (256, 256)
        frac = np.array([src.transform.c, src.transform.f]) / 2.0 % 1.0
        assert ((frac > 0.1) & (frac < 0.9)).all(), "origin off the 2 m multiples"
    truth = pyogrio.read_dataframe(info.truth, layer=TRUTH_LAYER)
    assert truth[T.OFF_FARMLAND].sum() == info.n_off_farmland >= 3
    assert len(pyogrio.read_dataframe(info.truth, layer=SEASONAL_LAYER)) > 0
    assert "Options" in info.readme.read_text(encoding="utf-8")


def test_rgb_default_scene_writes_three_bands(tmp_path):
    info = generate_sample(tmp_path, size_px=300, seed=4, options=SceneOptions(bands="rgb"))
    with rasterio.open(info.imagery["2017"][0]) as src:
        assert src.count == 3 and src.crs.to_epsg() == 4548
    layout = make_layout(300, 4)
    full = render_epoch(layout, 1)
    with rasterio.open(info.imagery["2017"][0]) as src:
        np.testing.assert_array_equal(src.read(), full[:3, : src.height, : src.width])


def test_later_epoch_lands_on_the_same_ground():
    """Reprojected back to the scene grid, the later epoch in UTM lines up with the later
    epoch rendered on the scene grid (no shift beyond a fraction of a pixel)."""
    scene = make_layout(500, 3, SceneOptions(stream=True))
    utm = make_layout(500, 3, SceneOptions(later_crs=LATER_CRS))
    f = utm.later_frame
    assert f.crs == LATER_CRS and f.crs != scene.frame.crs
    a = _rows(scene, 1, 128)[2].astype(np.float32)
    moved = _rows(utm, 1, 128).astype(np.float32)
    back = np.zeros((4, *a.shape), dtype=np.float32)
    reproject(
        moved,
        back,
        src_transform=f.transform,
        src_crs=f.crs,
        dst_transform=scene.frame.transform,
        dst_crs=scene.frame.crs,
        resampling=Resampling.bilinear,
        src_nodata=0,
        dst_nodata=0,
    )
    inner = (slice(8, -8), slice(8, -8))
    b = back[2][inner]
    assert (b > 0).all()
    a = a[inner]
    best = {}
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = np.roll(b, (dy, dx), axis=(0, 1))[2:-2, 2:-2]
            best[dy, dx] = np.corrcoef(a[2:-2, 2:-2].ravel(), shifted.ravel())[0, 1]
    assert max(best, key=best.get) == (0, 0) and best[0, 0] > 0.9


def test_blocks_do_not_change_the_pixels(tmp_path, monkeypatch):
    """An epoch written in blocks of 32 rows equals the same epoch in blocks of 200 rows,
    byte for byte, and no block is larger than asked."""
    layout = make_layout(400, 6, SceneOptions.hard())
    sizes = []
    real_rows = BlockRenderer.rows

    def spy(self, o0, o1):
        sizes.append(o1 - o0)
        return real_rows(self, o0, o1)

    monkeypatch.setattr(BlockRenderer, "rows", spy)
    for epoch in (0, 1):
        small = write_tiles_in_blocks(layout, epoch, tmp_path / "small", block_rows=32)
        assert max(sizes) == 32 and len(sizes) >= layout.epoch_frame(epoch).height // 32
        sizes.clear()
        big = write_tiles_in_blocks(layout, epoch, tmp_path / "big", block_rows=200)
        for a, b in zip(small, big, strict=True):
            # whole block rows only: no block written twice, the same bytes
            assert a.read_bytes() == b.read_bytes()
        sizes.clear()


def test_cli_hard_rgb(tmp_path):
    from pipeline.cli.main import cli

    out = tmp_path / "s"
    args = ["sample", "--out", str(out), "--size-px", "300", "--seed", "2", "--hard"]
    result = CliRunner().invoke(cli, [*args, "--bands", "rgb"])
    assert result.exit_code == 0, result.output
    assert "3 bands" in result.output
    with rasterio.open(sorted((out / IMAGERY_DIR / "2017").glob("*.tif"))[0]) as src:
        assert src.count == 3 and src.crs != rasterio.crs.CRS.from_epsg(4548)


# --------------------------------------------------------------------------- layout speed-ups
def test_select_in_chunks_matches_the_greedy_rule():
    """Placing objects tests candidates a chunk at a time; the result is the plain greedy
    rule: in order, take each candidate clear of the blocked areas and of those taken."""
    from pipeline.sample.scene import _CLEARANCE_M, _select

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 3000, (3000, 2))
    cands = shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + 20, xy[:, 1] + 15)
    blocked = [shapely.Point(1500, 1500).buffer(400, quad_segs=32), shapely.box(0, 0, 50, 50)]
    got = _select(cands, 400, list(blocked))
    grown = shapely.buffer(cands, _CLEARANCE_M, join_style="mitre")
    taken: list[int] = []
    for i in range(len(cands)):
        if len(taken) == 400:
            break
        if any(shapely.intersects(grown[i], b) for b in blocked):
            continue
        if any(shapely.intersects(grown[k], cands[i]) for k in taken):
            continue
        taken.append(i)
    assert len(got) == 400 and got.tolist() == taken


def test_local_cut_gives_the_same_parcels():
    """Large scenes cut the field cells against the obstacles clipped tile by tile: the
    parcels are those of the whole-geometry difference."""
    from pipeline.sample.scene import _cut_locally

    rng = np.random.default_rng(1)
    roads = [shapely.box(x - 6, -10, x + 6, 5010) for x in range(300, 5000, 550)]
    roads += [shapely.box(-10, y - 6, 5010, y + 6) for y in range(200, 5000, 610)]
    villages = shapely.buffer(shapely.points(rng.uniform(0, 5000, (40, 2))), 90, quad_segs=4)
    obstacles = shapely.union_all([*roads, *villages])
    x0, y0 = np.meshgrid(np.arange(0, 5000, 70.0), np.arange(0, 5000, 130.0))
    cells = shapely.box(x0.ravel() + 1, y0.ravel() + 1, x0.ravel() + 69, y0.ravel() + 129)
    local = _cut_locally(cells, obstacles, tile_m=700.0)
    whole = shapely.difference(cells, obstacles)
    np.testing.assert_allclose(shapely.area(local), shapely.area(whole), atol=1e-6)
    assert shapely.equals_exact(shapely.normalize(local), shapely.normalize(whole), 1e-6).all()
