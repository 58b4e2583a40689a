"""Mask → polygons per block, merged across block edges into the whole-image answer."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from pipeline.detection.vectorize import (
    PatchFilter,
    block_pieces,
    merge_pieces,
    sums_columns,
    to_map,
)


def _blockwise(mask, score, a, b, bh, bw, patch_filter=None, with_peak=False):
    """Pieces of every block of a (bh x bw) tiling, merged."""
    h, w = mask.shape
    pieces = []
    for r in range(0, h, bh):
        for c in range(0, w, bw):
            sl = (slice(r, r + bh), slice(c, c + bw))
            pieces.append(
                block_pieces(
                    mask[sl],
                    score[sl],
                    a[(slice(None), *sl)],
                    b[(slice(None), *sl)],
                    r,
                    c,
                    (h, w),
                    patch_filter,
                ).pieces
            )
    geoms, sums, peak = merge_pieces(pieces)
    return (geoms, sums, peak) if with_peak else (geoms, sums)


def _canonical(geoms, sums):
    order = np.lexsort(
        (sums[:, 0], shapely.get_y(shapely.centroid(geoms)), shapely.get_x(shapely.centroid(geoms)))
    )
    return geoms[order], sums[order]


def test_patch_over_four_blocks_is_one_polygon_with_its_pixel_area():
    h = w = 128
    mask = np.zeros((h, w), bool)
    mask[50:80, 40:75] = True  # crosses the block edges at row 64 and col 64
    score = np.where(mask, 2.0, 0.0).astype(np.float32)
    a = np.ones((2, h, w), np.float32)
    b = np.full((2, h, w), 3.0, np.float32)
    geoms, sums = _blockwise(mask, score, a, b, 64, 64)
    assert len(geoms) == 1
    assert geoms[0].geom_type == "Polygon" and geoms[0].is_valid
    assert geoms[0].area == 30 * 35 == sums[0, 0]
    assert shapely.equals_exact(geoms[0], shapely.normalize(shapely.box(40, 50, 75, 80)), 0)
    cols = sums_columns(("x", "y"))
    assert sums[0, cols.index("score_sum")] == 2.0 * 30 * 35
    assert sums[0, cols.index("sum_to_y")] == 3.0 * 30 * 35


def test_diagonal_neighbours_across_a_block_corner_stay_separate():
    # 4-connectivity: pixels touching only at a corner are two patches, as in the whole image
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    mask[4:6, 4:6] = True
    z = np.zeros((1, 8, 8), np.float32)
    geoms, sums = _blockwise(mask, np.zeros((8, 8), np.float32), z, z, 4, 4)
    assert len(geoms) == 2 and list(sums[:, 0]) == [4.0, 4.0]


def test_holes_survive_merging():
    mask = np.zeros((20, 20), bool)
    mask[2:18, 2:18] = True
    mask[8:12, 8:12] = False  # a hole on the block corner at (10, 10)
    z = np.zeros((1, 20, 20), np.float32)
    geoms, sums = _blockwise(mask, np.zeros((20, 20), np.float32), z, z, 10, 10)
    assert len(geoms) == 1 and len(geoms[0].interiors) == 1
    assert geoms[0].area == sums[0, 0] == 16 * 16 - 16


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    bh=st.integers(3, 30),
    bw=st.integers(3, 30),
    density=st.floats(0.2, 0.7),
)
def test_blockwise_merge_equals_whole_image_polygons(seed, bh, bw, density):
    rng = np.random.default_rng(seed)
    h, w = 30, 34
    mask = rng.random((h, w)) < density
    score = rng.integers(0, 100, (h, w)).astype(np.float32)
    a = rng.integers(0, 1000, (2, h, w)).astype(np.float32)
    b = rng.integers(0, 1000, (2, h, w)).astype(np.float32)
    g1, s1 = _canonical(*_blockwise(mask, score, a, b, h, w))
    g2, s2 = _canonical(*_blockwise(mask, score, a, b, bh, bw))
    assert len(g1) == len(g2)
    assert shapely.is_valid(g2).all()
    assert shapely.equals_exact(g1, g2, 0).all()
    np.testing.assert_array_equal(s1, s2)  # integer-valued sums: exact
    assert shapely.area(g2).sum() == mask.sum()


def test_to_map_applies_the_grid_transform():
    g = np.array([shapely.box(0, 0, 2, 1)])
    out = to_map(g, Affine(2.0, 0, 500000.0, 0, -2.0, 4000000.0))[0]
    assert out.bounds == (500000.0, 3999998.0, 500004.0, 4000000.0)
    assert out.area == 8.0


def test_empty_mask_gives_no_pieces():
    z = np.zeros((1, 5, 5), np.float32)
    empty = block_pieces(np.zeros((5, 5), bool), z[0], z, z, 0, 0, (5, 5)).pieces
    geoms, sums, peak = merge_pieces([empty])
    assert len(peak) == 0
    assert len(geoms) == 0 and sums.shape == (0, 4)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    bh=st.integers(3, 30),
    bw=st.integers(3, 30),
    min_px=st.integers(1, 12),
    min_mean=st.one_of(st.none(), st.floats(0, 80)),
    min_peak=st.one_of(st.none(), st.floats(0, 100)),
)
def test_early_patch_filter_equals_filtering_after_the_merge(
    seed, bh, bw, min_px, min_mean, min_peak
):
    # whole patches dropped inside their block == the same patches dropped after merging,
    # whatever the block size; pieces on a shared edge are never dropped early. With
    # min_peak this is the patch-level hysteresis: exact for every block size.
    rng = np.random.default_rng(seed)
    h, w = 30, 34
    mask = rng.random((h, w)) < 0.35
    score = rng.integers(0, 100, (h, w)).astype(np.float32)
    a = rng.integers(0, 1000, (2, h, w)).astype(np.float32)
    b = rng.integers(0, 1000, (2, h, w)).astype(np.float32)
    pf = PatchFilter(1.0, float(min_px), min_mean, min_peak)
    g_all, s_all, p_all = _blockwise(mask, score, a, b, h, w, pf, with_peak=True)
    keep = pf.keep(s_all[:, 0], s_all[:, 1], p_all)
    g1, s1 = _canonical(g_all[keep], s_all[keep])
    g_early, s_early, p_early = _blockwise(mask, score, a, b, bh, bw, pf, with_peak=True)
    keep = pf.keep(s_early[:, 0], s_early[:, 1], p_early)
    g2, s2 = _canonical(g_early[keep], s_early[keep])
    assert len(g1) == len(g2)
    assert shapely.equals_exact(g1, g2, 0).all()
    np.testing.assert_array_equal(s1, s2)
    if min_peak is not None:  # a merged patch's peak is the max of its pixels
        labels, n = ndimage.label(mask)
        idx = np.arange(1, n + 1)
        count = ndimage.sum_labels(np.ones_like(score), labels, idx)
        total = ndimage.sum_labels(score.astype(np.float64), labels, idx)
        peak = ndimage.maximum(score, labels, idx)
        expected = np.sort(peak[pf.keep(count, total, peak)])
        np.testing.assert_array_equal(np.sort(p_early[keep]), expected)


def test_block_pieces_returns_the_mask_without_dropped_patches():
    mask = np.zeros((10, 10), bool)
    mask[1:3, 1:3] = True  # 4 px: dropped (whole patch, below 5 px)
    mask[5:9, 5:9] = True  # 16 px: kept
    mask[0, 8:10] = True  # 2 px on the top edge of a block with a neighbour above: kept
    z = np.zeros((1, 10, 10), np.float32)
    out = block_pieces(mask, z[0], z, z, 10, 0, (30, 10), PatchFilter(1.0, 5.0))
    assert out.n_small == 1 and out.n_low_score == 0
    assert sorted(out.pieces.sums[:, 0]) == [2.0, 16.0]
    expected = mask.copy()
    expected[1:3, 1:3] = False
    np.testing.assert_array_equal(out.mask, expected)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n_blobs=st.integers(1, 40),
    min_px=st.integers(1, 30),
    row_off=st.sampled_from([0, 64]),
)
def test_packed_polygonising_equals_polygonising_the_whole_block(seed, n_blobs, min_px, row_off):
    # sparse patches (the real case) are polygonised on a packed canvas of their groups'
    # boxes, then moved back: the polygons, sums and mask must be exactly those of one
    # call on the whole block, with and without dropped patches
    import pipeline.detection.vectorize as vectorize

    rng = np.random.default_rng(seed)
    h, w = 96, 160
    mask = np.zeros((h, w), bool)
    for _ in range(n_blobs):  # blobs with holes, notches and diagonal contacts
        r, c = rng.integers(0, h - 4), rng.integers(0, w - 4)
        hh, ww = rng.integers(1, 30, 2)
        mask[r : r + hh, c : c + ww] |= rng.random((min(hh, h - r), min(ww, w - c))) < 0.8
    score = rng.integers(0, 100, (h, w)).astype(np.float32)
    a = rng.integers(0, 1000, (2, h, w)).astype(np.float32)
    b = rng.integers(0, 1000, (2, h, w)).astype(np.float32)
    pf = PatchFilter(1.0, float(min_px))
    args = (mask, score, a, b, row_off, 32, (256, 256), pf)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vectorize, "PACK_MAX_SHARE", 1.0)  # always pack
        packed = block_pieces(*args)
        mp.setattr(vectorize, "PACK_MAX_GROUPS", 0)  # never pack
        whole = block_pieces(*args)
    assert len(packed.pieces.geoms) == len(whole.pieces.geoms)
    assert shapely.equals_exact(packed.pieces.geoms, whole.pieces.geoms, 0).all()
    np.testing.assert_array_equal(packed.pieces.sums, whole.pieces.sums)
    np.testing.assert_array_equal(packed.pieces.on_edge, whole.pieces.on_edge)
    np.testing.assert_array_equal(packed.mask, whole.mask)
    assert shapely.area(packed.pieces.geoms).sum() == packed.mask.sum()


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 90), st.integers(1, 90)), min_size=1, max_size=40),
    max_width=st.integers(90, 400),
)
def test_packed_boxes_do_not_overlap_and_fit_the_canvas(sizes, max_width):
    from pipeline.detection.vectorize import pack_boxes

    place, (ch, cw) = pack_boxes(sizes, max_width)
    assert cw <= max_width
    cover = np.zeros((ch, cw), dtype=int)
    for (y, x), (hh, ww) in zip(place, sizes, strict=True):
        assert y + hh <= ch and x + ww <= cw
        cover[y : y + hh, x : x + ww] += 1
    assert cover.max() == 1
    assert cover.sum() == sum(hh * ww for hh, ww in sizes)
