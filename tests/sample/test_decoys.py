"""Decoys (``SceneOptions.decoys``): film tunnels and spoil heaps on farmland in the later
epoch, labelled ``temporary`` and ``spoil`` in the truth, judged false changes in the field;
without them every file stays as it was."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner

from pipeline.errors import ConfigError
from pipeline.sample import DECOY_KINDS, SceneOptions, generate_sample, make_layout, render_epoch
from pipeline.sample.blocks import BlockRenderer
from pipeline.sample.returns import verdicts
from pipeline.sample.scene import CONSTRUCTION_KINDS, EPOCHS, C, Kind, _mask
from pipeline.sample.write import IMAGERY_DIR, README_FILE
from pipeline.schema import TRUTH_LAYER, UNASSIGNED, T, Verdict

SIZE, SEED, N = 500, 3, 8
DECOYS = {str(k) for k in DECOY_KINDS}


@pytest.fixture(scope="module")
def layouts():
    """The same scene without and with decoys."""
    return make_layout(SIZE, SEED), make_layout(SIZE, SEED, SceneOptions(decoys=N))


def _rows(layout, epoch: int) -> np.ndarray:
    """An epoch from the row-block renderer (the streamed files' pixels)."""
    renderer = BlockRenderer(layout, epoch)
    h = layout.epoch_frame(epoch).height
    return np.concatenate([renderer.rows(o, min(h, o + 128)) for o in range(0, h, 128)], 1)


# --------------------------------------------------------------------------- no decoys
HARD_300_SEED_1 = {
    "2016": "3503bbc9a510ce9afa37b8b9cb7a06e5face3a1af5878e9ce69c92a8820faa7f",
    "2017": "fd2dabb115d3802dfce768352daf5b4ebe6e12e9ab09a588468029683b612f52",
    "readme": "dd7e795d52305bbc49ce4dc5df68f717487006dcc5e257a4f0e38ad4f1017777",
}
"""Pixels of both epochs and the README of ``SceneOptions.hard()`` at 300 px, seed 1, as
recorded before the decoys existed."""


def test_no_decoys_keeps_the_hard_sample(tmp_path):
    """``decoys=0`` (the default, also of :meth:`SceneOptions.hard`) writes the hard sample
    as before: the same pixels, README, marker and GeoTIFF tags (no ``decoys`` key)."""
    assert SceneOptions.hard().decoys == 0 and SceneOptions().decoys == 0
    info = generate_sample(tmp_path, size_px=300, seed=1, options=SceneOptions.hard())
    for label in EPOCHS:
        h = hashlib.sha256()
        for f in sorted((tmp_path / IMAGERY_DIR / label).glob("*.tif")):
            with rasterio.open(f) as src:
                h.update(src.read().tobytes())
                assert "decoys" not in json.loads(src.tags()["LANDWATCH_OPTIONS"])
        assert h.hexdigest() == HARD_300_SEED_1[label]
    readme = (tmp_path / README_FILE).read_bytes()
    assert hashlib.sha256(readme).hexdigest() == HARD_300_SEED_1["readme"]
    marker = json.loads(info.complete.read_text())
    assert "decoys" not in marker["options"]
    assert set(marker["truth_by_kind"]) == {str(k) for k in CONSTRUCTION_KINDS}


def test_options_check_decoys():
    with pytest.raises(ConfigError, match="decoys"):
        SceneOptions(decoys=-1)
    with pytest.raises(ConfigError, match="decoys"):
        SceneOptions(decoys=2.5)
    with pytest.raises(ConfigError, match="no room for 5000 decoys"):
        make_layout(300, 1, SceneOptions(decoys=5000))


# --------------------------------------------------------------------------- layout
def test_decoys_are_labelled_on_farmland_clear_of_everything(layouts):
    """N truth rows, half of each kind, inside crop parcels of the district, clear of the
    other truth objects, approvals, roads and villages; the rest of the truth unchanged."""
    base, lay = layouts
    truth = lay.truth
    decoy = truth[T.KIND].isin(DECOYS).to_numpy()
    assert decoy.sum() == N
    assert (truth[T.KIND][decoy] == Kind.TEMPORARY).sum() == (N + 1) // 2
    assert (truth[T.KIND][decoy] == Kind.SPOIL).sum() == N // 2
    assert not decoy[: len(base.truth)].any(), "decoys come after the construction objects"
    other = truth[~decoy].drop(columns="geometry").reset_index(drop=True)
    assert other.equals(base.truth.drop(columns="geometry"))
    assert shapely.equals(truth.geometry.values[~decoy], base.truth.geometry.values).all()

    geoms = truth.geometry.values[decoy]
    rows = truth[decoy]
    np.testing.assert_allclose(rows[T.FARMLAND_M2], rows[T.AREA_M2], rtol=1e-6)
    assert (rows[T.APPROVED_M2] == 0).all() and not rows[T.OFF_FARMLAND].any()
    assert (rows[T.VILLAGE_CODE] != UNASSIGNED).all()
    assert shapely.within(geoms, lay.grid.district.geometry.iloc[0]).all()
    crop = lay.farmland.geometry.values
    one_parcel = shapely.STRtree(crop).query(geoms, predicate="within")[0]
    assert set(one_parcel.tolist()) == set(range(N)), "each decoy inside one crop parcel"
    others = shapely.union_all(base.truth.geometry.values)
    assert shapely.distance(geoms, others).min() >= 12.0
    assert shapely.distance(geoms, shapely.union_all(lay.approvals.geometry.values)).min() >= 12.0
    obj = lay.objects
    built = np.isin(obj.cls[0], [C.VILLAGE_GROUND, C.ASPHALT, C.CONCRETE])
    assert not shapely.intersects(geoms, shapely.union_all(obj.geoms[built])).any()


def test_decoy_shapes(layouts):
    """Tunnels: 1-4 strips 6-10 m x 30-80 m, 3-5 m apart, white or blue film; spoil heaps:
    irregular blobs 15-40 m across (within the wobble of their outline) of bare soil."""
    _, lay = layouts
    truth = lay.truth
    n_strips = []
    for geom, cover in truth[truth[T.KIND] == Kind.TEMPORARY][["geometry", T.COVER]].values:
        assert cover in {"white_film", "blue_film"}
        strips = shapely.get_parts(geom)
        n_strips.append(len(strips))
        for strip in strips:
            x0, y0, x1, y1 = strip.bounds
            short, long = sorted((x1 - x0, y1 - y0))
            assert 5.9 <= short <= 10.1 and 29.9 <= long <= 80.1
        if len(strips) > 1:
            gaps = shapely.distance(strips[:-1], strips[1:])
            assert ((gaps >= 2.8) & (gaps <= 5.2)).all()
    assert max(n_strips) <= 4
    spoil = truth[truth[T.KIND] == Kind.SPOIL]
    assert (spoil[T.COVER] == "bare_soil").all()
    for geom in spoil.geometry.values:
        assert geom.geom_type == "Polygon" and geom.is_valid
        across = 2 * np.sqrt(geom.area / np.pi)
        assert 10.0 <= across <= 45.0
        assert geom.area / shapely.convex_hull(geom).area < 0.99, "a noisy outline"
    classes = set(lay.objects.cls[1][lay.objects.cls[0] == -1].tolist())
    assert {C.SPOIL} <= classes and classes & {C.FILM_WHITE, C.FILM_BLUE}


@pytest.mark.parametrize("renderer", ["whole", "blocks"])
def test_decoys_change_only_the_later_epoch_where_they_are(layouts, renderer):
    """Both renderers: the earlier epoch is as without decoys; the later one differs only
    near the decoys, and inside each decoy it differs from the earlier epoch."""
    base, lay = layouts

    def render(layout, epoch):
        if renderer == "whole":
            return render_epoch(layout, epoch).astype(np.int32)
        return _rows(layout, epoch).astype(np.int32)

    np.testing.assert_array_equal(render(lay, 0), render(base, 0))
    before, after, without = render(lay, 0), render(lay, 1), render(base, 1)
    decoys = lay.truth[lay.truth[T.KIND].isin(DECOYS)].geometry.values
    near = _mask(shapely.buffer(decoys, 8.0), lay.frame)
    np.testing.assert_array_equal(after[:, ~near], without[:, ~near])
    valid = (before > 0).all(0) & (after > 0).all(0)
    for geom in decoys:
        inner = _mask(np.array([shapely.buffer(geom, -2.0)]), lay.frame) & valid
        if inner.sum() < 4:
            continue
        assert (after[:, inner] != without[:, inner]).all(0).mean() > 0.9
        change = np.abs(np.median(after[:, inner] - before[:, inner], axis=1))
        assert change.max() > 400, change


def test_renderers_agree_on_the_decoys(layouts):
    """The whole-scene and the row-block renderer paint the decoys alike (they differ only
    in texture and noise draws)."""
    _, lay = layouts
    whole, blocks = render_epoch(lay, 1).astype(float), _rows(lay, 1).astype(float)
    decoys = lay.truth[lay.truth[T.KIND].isin(DECOYS)].geometry.values
    inner = _mask(shapely.buffer(decoys, -2.0), lay.frame)
    assert inner.sum() > 100
    a, b = whole[:, inner].mean(axis=1), blocks[:, inner].mean(axis=1)
    np.testing.assert_allclose(a, b, rtol=0.03)


# --------------------------------------------------------------------------- verdicts
def test_field_teams_find_no_construction_at_decoys(layouts):
    """A patch over a decoy is a false change; over construction, legal or illegal."""
    _, lay = layouts
    truth = lay.truth
    patches = gpd.GeoDataFrame(geometry=shapely.buffer(truth.geometry.values, 1.0), crs=truth.crs)
    found = verdicts(patches, truth)
    kind = truth[T.KIND].to_numpy()
    decoy = np.isin(kind, list(DECOYS))
    assert (found[decoy] == Verdict.FALSE_CHANGE.value).all()
    assert (found[kind == Kind.LEGAL] == Verdict.LEGAL.value).all()
    assert (found[~decoy & (kind != Kind.LEGAL)] == Verdict.ILLEGAL.value).all()


# --------------------------------------------------------------------------- files
def test_streamed_files_with_decoys(tmp_path):
    """The hard (streamed, later epoch in UTM) sample with decoys: the truth file holds them,
    the counts, README, marker and tags say so."""
    options = dataclasses.replace(SceneOptions.hard(), decoys=6)
    info = generate_sample(tmp_path, size_px=300, seed=1, options=options)
    truth = pyogrio.read_dataframe(info.truth, layer=TRUTH_LAYER)
    assert truth[T.KIND].isin(DECOYS).sum() == 6
    assert info.truth_by_kind["temporary"] == 3 and info.truth_by_kind["spoil"] == 3
    assert json.loads(info.complete.read_text())["options"]["decoys"] == 6
    assert "6 decoys" in info.readme.read_text(encoding="utf-8")
    with rasterio.open(info.imagery["2017"][0]) as src:
        assert json.loads(src.tags()["LANDWATCH_OPTIONS"])["decoys"] == 6


def test_cli_decoys(tmp_path):
    from pipeline.cli.main import cli

    out = tmp_path / "s"
    args = ["sample", "--out", str(out), "--size-px", "300", "--seed", "2", "--decoys", "4"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "temporary 2, spoil 2" in result.output
    truth = pyogrio.read_dataframe(out / "truth.gpkg", layer=TRUTH_LAYER)
    assert sorted(truth[T.KIND][truth[T.KIND].isin(DECOYS)]) == ["spoil"] * 2 + ["temporary"] * 2
