"""Township / village assignment (pipeline.overlay.assign).

Grid (EPSG:4548, on the central meridian, metres from (X0, Y0)):

    y=100 +--------------+--------------+
          |  v1 (in t1)  |  v2 (in t2)  |        gap: x in [200, 220] is no village
      y=0 +--------------+--------------+
          x=0           100            200
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import AssignConfig
from pipeline.errors import ConfigError, GridError
from pipeline.overlay.assign import assign_patches
from pipeline.schema import PART, PART_OF, UNASSIGNED, UNASSIGNED_NAME, G, P

CRS = "EPSG:4548"
X0, Y0 = 500_000.0, 3_000_000.0


def box(x1, y1, x2, y2):
    return shapely.box(X0 + x1, Y0 + y1, X0 + x2, Y0 + y2)


def frame(geoms, index=None, **columns) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(columns, geometry=list(geoms), crs=CRS, index=index)


VILLAGES = frame(
    [box(0, 0, 100, 100), box(100, 0, 200, 100)],
    **{G.CODE: ["v1", "v2"], G.NAME: ["东村", "西村"], G.TOWNSHIP_CODE: ["t1", "t2"]},
)
TOWNSHIPS = frame(
    [box(0, 0, 100, 100), box(100, 0, 200, 100)], **{G.CODE: ["t1", "t2"], G.NAME: ["甲镇", "乙镇"]}
)


def patches(*geoms, index=None) -> gpd.GeoDataFrame:
    return frame(geoms, index=index, score=np.arange(len(geoms), dtype=float))


def test_patch_across_two_villages_goes_to_the_majority():
    # 20 m of its 30 m width in v1
    out = assign_patches(patches(box(80, 10, 110, 30)), VILLAGES, TOWNSHIPS)
    row = out.iloc[0]
    assert (row[P.VILLAGE_CODE], row[P.VILLAGE_NAME]) == ("v1", "东村")
    assert (row[P.TOWNSHIP_CODE], row[P.TOWNSHIP_NAME]) == ("t1", "甲镇")
    assert row[P.VILLAGE_SHARE] == pytest.approx(2 / 3)
    assert json.loads(row[P.VILLAGE_SHARES]) == {"v1": 0.6667, "v2": 0.3333}
    assert row[P.VILLAGE_SHARES].startswith('{"v1"')  # largest first


def test_patch_outside_every_village_is_kept_unassigned():
    out = assign_patches(patches(box(500, 500, 510, 510)), VILLAGES, TOWNSHIPS)
    row = out.iloc[0]
    assert row[P.VILLAGE_CODE] == row[P.TOWNSHIP_CODE] == UNASSIGNED
    assert row[P.VILLAGE_NAME] == row[P.TOWNSHIP_NAME] == UNASSIGNED_NAME
    assert row[P.VILLAGE_SHARE] == 0 and row[P.VILLAGE_SHARES] == "{}"


def test_patch_partly_in_a_gap_goes_to_its_village_with_share_below_one():
    out = assign_patches(patches(box(190, 0, 210, 10)), VILLAGES, TOWNSHIPS)
    assert out[P.VILLAGE_CODE].iloc[0] == "v2"
    assert out[P.VILLAGE_SHARE].iloc[0] == pytest.approx(0.5)


def test_majority_keeps_rows_index_and_columns_and_does_not_modify_input():
    p = patches(
        box(10, 10, 20, 20), box(80, 10, 110, 30), box(500, 500, 510, 510), index=["x", "y", "z"]
    )
    before = p.copy()
    out = assign_patches(p, VILLAGES, TOWNSHIPS)
    pd.testing.assert_frame_equal(p, before)
    assert list(out.index) == ["x", "y", "z"]
    assert list(out["score"]) == [0.0, 1.0, 2.0]
    assert list(out[P.VILLAGE_CODE]) == ["v1", "v1", UNASSIGNED]
    assert out.geometry.equals(p.geometry)


def test_touching_only_neighbour_is_not_a_share():
    out = assign_patches(patches(box(90, 10, 100, 20)), VILLAGES, TOWNSHIPS)  # touches v2
    assert json.loads(out[P.VILLAGE_SHARES].iloc[0]) == {"v1": 1.0}


def test_empty_patches_frame():
    out = assign_patches(patches(), VILLAGES, TOWNSHIPS)
    assert len(out) == 0 and P.VILLAGE_SHARES in out.columns
    out = assign_patches(patches(), VILLAGES, TOWNSHIPS, mode="split")
    assert len(out) == 0 and PART_OF in out.columns


def test_split_mode_cuts_along_the_boundary():
    p = patches(box(80, 10, 110, 30), box(10, 10, 20, 20), index=[7, 8]).assign(
        **{P.FARMLAND_M2: 1.0}
    )
    out = assign_patches(p, VILLAGES, TOWNSHIPS, mode="split")
    assert list(out[PART_OF]) == [7, 7, 8]
    assert list(out[PART]) == [1, 2, 1]
    assert list(out[P.VILLAGE_CODE]) == ["v1", "v2", "v1"]
    assert list(out[P.TOWNSHIP_NAME]) == ["甲镇", "乙镇", "甲镇"]
    np.testing.assert_allclose(out.area, [400, 200, 100])
    np.testing.assert_allclose(out[P.AREA_M2], [400, 200, 100], rtol=1e-3)
    np.testing.assert_allclose(out[P.VILLAGE_SHARE], [2 / 3, 1 / 3, 1])
    assert P.FARMLAND_M2 not in out.columns  # classify must run on the parts


def test_split_mode_merges_slivers_and_keeps_a_large_outside_part():
    # 0.5 m² in v2 -> merged into v1's part; 100 m² in the gap -> its own unassigned part
    p = patches(box(90, 0, 100.05, 10), box(195, 50, 215, 60))
    out = assign_patches(p, VILLAGES, TOWNSHIPS, mode="split", min_part_m2=1.0)
    assert list(out[PART_OF]) == [0, 1, 1]
    assert list(out[P.VILLAGE_CODE]) == ["v1", "v2", UNASSIGNED]
    np.testing.assert_allclose(out.area, [100.5, 50, 150])
    cfg = AssignConfig(mode="split", min_part_m2=200.0)  # cfg wins over the keywords
    out = assign_patches(p, VILLAGES, TOWNSHIPS, cfg=cfg)
    assert list(out[PART_OF]) == [0, 1]


def test_split_mode_with_overlapping_villages_does_not_double_count():
    overlapping = frame(
        [box(0, 0, 100, 100), box(50, 0, 200, 100)],
        **{G.CODE: ["v1", "v2"], G.NAME: ["a", "b"], G.TOWNSHIP_CODE: ["t1", "t2"]},
    )
    out = assign_patches(patches(box(40, 0, 80, 10)), overlapping, TOWNSHIPS, mode="split")
    assert out.area.sum() == pytest.approx(400)
    assert list(out[P.VILLAGE_CODE]) == ["v1"]  # v1 holds all of it; v2's part is inside


def test_bad_arguments():
    with pytest.raises(ConfigError, match="mode 'spilt'"):
        assign_patches(patches(), VILLAGES, TOWNSHIPS, mode="spilt")
    with pytest.raises(GridError, match="township_code"):
        assign_patches(patches(), VILLAGES.drop(columns=G.TOWNSHIP_CODE), TOWNSHIPS)


def test_villages_in_another_crs_are_reprojected():
    out = assign_patches(patches(box(80, 10, 110, 30)), VILLAGES.to_crs("EPSG:4490"), None)
    assert out[P.VILLAGE_CODE].iloc[0] == "v1"
    assert out[P.VILLAGE_SHARE].iloc[0] == pytest.approx(2 / 3, rel=1e-4)
    assert out[P.TOWNSHIP_NAME].iloc[0] == ""  # no township layer given


# --------------------------------------------------------------------------- properties
@st.composite
def grid_and_rects(draw):
    nx, ny = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    size = draw(st.sampled_from([7.0, 10.0, 33.3]))
    cells = [
        box(i * size, j * size, (i + 1) * size, (j + 1) * size)
        for i in range(nx)
        for j in range(ny)
    ]
    coord = st.floats(-10, 4 * size, allow_nan=False)
    extent = st.floats(0.5, 2.5 * size, allow_nan=False)
    rects = draw(st.lists(st.tuples(coord, coord, extent, extent), min_size=1, max_size=8))
    geoms = [box(x, y, x + w, y + h) for x, y, w, h in rects]
    return cells, geoms


@settings(max_examples=60, deadline=None)
@given(data=grid_and_rects(), min_part=st.sampled_from([0.0, 1.0, 20.0]))
def test_split_parts_sum_to_the_patch_area(data, min_part):
    """Property: in split mode each patch's parts add up to its area (gaps included) and
    majority mode keeps one row per patch with shares that sum to at most 1."""
    cells, geoms = data
    villages = frame(
        cells,
        **{
            G.CODE: [f"v{i}" for i in range(len(cells))],
            G.NAME: [f"村{i}" for i in range(len(cells))],
            G.TOWNSHIP_CODE: "t1",
        },
    )
    p = patches(*geoms)
    parts = assign_patches(p, villages, None, mode="split", min_part_m2=min_part)
    sums = parts.area.groupby(parts[PART_OF]).sum()
    np.testing.assert_allclose(sums.to_numpy(), p.area.loc[sums.index].to_numpy(), rtol=1e-6)
    assert sorted(set(parts[PART_OF])) == list(p.index)

    majority = assign_patches(p, villages, None)
    assert len(majority) == len(p)
    for shares in majority[P.VILLAGE_SHARES]:
        assert sum(json.loads(shares).values()) <= 1 + 1e-3
