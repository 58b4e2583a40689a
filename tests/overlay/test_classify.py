"""Farmland / approvals overlay (pipeline.overlay.classify).

Geometry is in EPSG:4548 on its central meridian (scale factor 1), so ellipsoidal areas match
the hand-computed planar ones to far better than the 0.2 % used below.

The main patch is a 20×20 m square (400 m²):

    y=20 +----------+----------+       farmland:       x in [0, 10]  (200 m²)
         | farmland |          |       basic farmland: x in [0, 10], y in [0, 10] (100 m²)
    y=10 +----------+          |       approval A "2017-002": x in [0, 15]
         | basic    |          |       approval B "2017-001": x in [5, 20]
     y=0 +----------+----------+       -> union covers the patch once: 400 m², not 600
         x=0        10         20
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import ClassifyConfig
from pipeline.errors import InputDataError
from pipeline.overlay.classify import classify_patches, union_by_group
from pipeline.schema import LegalHint, P

CRS = "EPSG:4548"
X0, Y0 = 500_000.0, 3_000_000.0


def box(x1, y1, x2, y2):
    return shapely.box(X0 + x1, Y0 + y1, X0 + x2, Y0 + y2)


def frame(geoms, **columns) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(columns, geometry=list(geoms), crs=CRS)


@pytest.fixture
def detections():
    # patch 0: the 20×20 square; patch 1: half approved; patch 2: nothing around it
    return frame(
        [box(0, 0, 20, 20), box(100, 0, 120, 20), box(500, 500, 510, 510)],
        score=[0.9, 0.8, 0.7],
    ).set_index(pd.Index(["a", "b", "c"]))


@pytest.fixture
def farmland():
    return frame([box(0, 0, 10, 10), box(0, 10, 10, 20)], basic=["是", "否"])


@pytest.fixture
def approvals():
    return frame(
        [box(0, 0, 15, 20), box(5, 0, 20, 20), box(100, 0, 110, 20), box(105, 0, 110, 20)],
        doc_no=["2017-002", "2017-001", "2018-007", "2018-007"],
    )


def test_hand_computed_overlaps(detections, farmland, approvals):
    out = classify_patches(detections, farmland=farmland, basic_farmland=None, approvals=approvals)
    a = out.loc["a"]
    assert a[P.AREA_M2] == pytest.approx(400, rel=2e-3)
    assert a[P.FARMLAND_M2] == pytest.approx(200, rel=2e-3)
    assert a[P.BASIC_FARMLAND_M2] == pytest.approx(100, rel=2e-3)
    assert a[P.APPROVED_M2] == pytest.approx(400, rel=2e-3)  # union, counted once
    assert a[P.APPROVED_SHARE] == pytest.approx(1.0)
    assert a[P.APPROVAL_REFS] == "2017-001;2017-002"  # sorted, unique
    assert a[P.LEGAL_HINT] == LegalHint.PROBABLY_LEGAL

    b = out.loc["b"]  # half covered by two overlapping approvals with one document number
    assert b[P.APPROVED_M2] == pytest.approx(200, rel=2e-3)
    assert b[P.APPROVED_SHARE] == pytest.approx(0.5, rel=1e-6)
    assert b[P.APPROVAL_REFS] == "2018-007"
    assert b[P.LEGAL_HINT] == LegalHint.SUSPECTED

    c = out.loc["c"]  # no overlay at all: zeros, not NaN
    assert (c[P.FARMLAND_M2], c[P.BASIC_FARMLAND_M2], c[P.APPROVED_M2]) == (0.0, 0.0, 0.0)
    assert c[P.APPROVAL_REFS] == "" and c[P.LEGAL_HINT] == LegalHint.SUSPECTED
    assert not out.drop(columns="geometry").isna().any().any()


def test_keeps_columns_index_and_does_not_modify_input(detections, farmland, approvals):
    before = detections.copy()
    out = classify_patches(detections, farmland=farmland, approvals=approvals)
    pd.testing.assert_frame_equal(detections, before)
    assert list(out.index) == ["a", "b", "c"]
    assert list(out["score"]) == [0.9, 0.8, 0.7]
    assert out is not detections and out.crs.equals(CRS)


def test_mu_is_exact(detections):
    out = classify_patches(detections, farmland=None, basic_farmland=None, approvals=None)
    np.testing.assert_allclose(out[P.AREA_MU], out[P.AREA_M2] / (10000 / 15), rtol=1e-15)


def test_ellipsoidal_area_close_to_planar_near_central_meridian():
    # 100 m square a few km from CM 117E: Gauss-Krüger scale factor ~1 + 1e-7
    square = frame([box(3000, 0, 3100, 100)])
    out = classify_patches(square, farmland=None, basic_farmland=None, approvals=None)
    assert out[P.AREA_M2].iloc[0] == pytest.approx(10_000, rel=2e-3)


def test_missing_optional_layers_give_zeros(detections):
    out = classify_patches(detections, farmland=None, basic_farmland=None, approvals=None)
    for column in (P.FARMLAND_M2, P.BASIC_FARMLAND_M2, P.APPROVED_M2, P.APPROVED_SHARE):
        assert (out[column] == 0).all()
    assert (out[P.APPROVAL_REFS] == "").all()
    assert (out[P.LEGAL_HINT] == LegalHint.SUSPECTED).all()


def test_separate_basic_farmland_layer_wins_over_the_field(detections, farmland):
    basic = frame([box(0, 0, 20, 5)])
    out = classify_patches(detections, farmland=farmland, basic_farmland=basic, approvals=None)
    assert out.loc["a", P.BASIC_FARMLAND_M2] == pytest.approx(100, rel=2e-3)


def test_legal_share_threshold_and_cfg(detections, approvals):
    out = classify_patches(detections, approvals=approvals, cfg=ClassifyConfig(legal_share=0.5))
    assert out.loc["b", P.LEGAL_HINT] == LegalHint.PROBABLY_LEGAL


def test_overlay_in_another_crs_is_reprojected(detections, approvals):
    out = classify_patches(detections, approvals=approvals.to_crs("EPSG:4490"))
    assert out.loc["a", P.APPROVED_M2] == pytest.approx(400, rel=2e-3)


def test_missing_fields_raise_with_the_fields_found(detections, farmland, approvals):
    with pytest.raises(InputDataError, match=r"no field 'wenhao'.*doc_no"):
        classify_patches(detections, approvals=approvals, ref_field="wenhao")
    with pytest.raises(InputDataError, match="basic_field"):
        classify_patches(detections, farmland=farmland.drop(columns="basic"))
    # basic_field=None: no basic farmland unless a separate layer is given
    out = classify_patches(detections, farmland=farmland.drop(columns="basic"), basic_field=None)
    assert (out[P.BASIC_FARMLAND_M2] == 0).all()


def test_detections_without_crs():
    bare = gpd.GeoDataFrame(geometry=[box(0, 0, 10, 10)])
    with pytest.raises(InputDataError, match="no CRS"):
        classify_patches(bare)
    assert classify_patches(bare, crs=CRS)[P.AREA_M2].iloc[0] == pytest.approx(100, rel=2e-3)


def test_empty_detections():
    out = classify_patches(frame([]), approvals=frame([box(0, 0, 1, 1)], doc_no=["x"]))
    assert len(out) == 0 and P.APPROVAL_REFS in out.columns


def test_union_by_group_handles_mixed_group_sizes():
    pieces = np.array(
        [
            box(0, 0, 2, 2),
            box(1, 1, 3, 3),
            box(0, 0, 1, 1),
            *(box(i, 0, i + 1, 1) for i in range(5)),
        ]
    )
    groups = np.array([0, 0, 2, 3, 3, 3, 3, 3])
    out = union_by_group(pieces, groups, 4)
    assert [g.area for g in out] == [7.0, 0.0, 1.0, 5.0]


rect = st.tuples(st.floats(-20, 40), st.floats(-20, 40), st.floats(1, 30), st.floats(1, 30)).map(
    lambda t: box(t[0], t[1], t[0] + t[2], t[1] + t[3])
)


@settings(max_examples=40, deadline=None)
@given(patch=rect, overlays=st.lists(rect, min_size=1, max_size=6))
def test_overlay_area_is_the_union_inside_the_patch(patch, overlays):
    """Property: approved_m2 = area(patch ∩ union(approvals)) ≤ area(patch), however the
    approvals overlap (planar reference; ellipsoid within 0.2 % on the central meridian)."""
    approvals = frame(overlays, doc_no=[f"d{i}" for i in range(len(overlays))])
    out = classify_patches(frame([patch]), approvals=approvals)
    expected = shapely.intersection(patch, shapely.union_all(overlays)).area
    assert out[P.APPROVED_M2].iloc[0] == pytest.approx(expected, rel=2e-3, abs=1e-6)
    assert out[P.APPROVED_SHARE].iloc[0] <= 1.0


# --------------------------------------------------------------------------- 三调 farmland
def test_dltb_farmland_keeps_only_the_configured_land_use_codes(tmp_path):
    """A DLTB-like layer (GBK Shapefile) with 0101 水田, 0103 旱地, 0201 果园, 0301 林地,
    0702 宅基地 and 1003 公路, six 50 × 200 m strips: with ``codes: [0101, 0102, 0103]`` a
    patch over all six counts only the two cropland strips as farmland (20 000 m², not
    60 000), whether DLBM is stored as text or as numbers (101 is 0101)."""
    from pipeline.config import LayerConfig
    from pipeline.overlay.io.layer_check import read_overlay
    from tests import shapefiles as shp

    patch = gpd.GeoDataFrame(geometry=[shp.box(0, 0, 300, 200)], crs=shp.CRS)
    for numeric in (False, True):
        path = shp.write_shapefile(
            tmp_path / f"DLTB_{numeric}.shp", shp.dltb_frame(numeric=numeric)
        )
        layer = LayerConfig(path, code_field="DLBM", codes=shp.CROPLAND)
        farmland = read_overlay(layer, "farmland", shp.CRS)
        assert sorted(farmland["DLMC"]) == ["旱地", "水田"]
        out = classify_patches(patch, farmland=farmland, basic_field=None)
        assert out[P.FARMLAND_M2].iloc[0] == pytest.approx(20_000, rel=2e-3)
        whole = read_overlay(LayerConfig(path), "farmland", shp.CRS)  # no codes: every parcel
        assert classify_patches(patch, farmland=whole, basic_field=None)[P.FARMLAND_M2].iloc[
            0
        ] == pytest.approx(60_000, rel=2e-3)


def test_dltb_without_any_configured_code_lists_the_codes_found(tmp_path):
    """Codes that match no parcel (a wrong field or 2-digit codes) stop with the codes the
    field holds, instead of an empty farmland layer that would make every patch non-farmland."""
    from pipeline.config import LayerConfig
    from pipeline.overlay.io.layer_check import read_overlay
    from tests import shapefiles as shp

    path = shp.write_shapefile(tmp_path / "DLTB.shp", shp.dltb_frame())
    layer = LayerConfig(path, code_field="DLBM", codes=("01",))
    with pytest.raises(InputDataError) as err:
        read_overlay(layer, "farmland", shp.CRS)
    message = str(err.value)
    assert "layers.farmland" in message and "no feature has DLBM in 01" in message
    assert "0101, 0103, 0201, 0301, 0702, 1003" in message


@pytest.mark.parametrize(
    ("value", "kept"),
    [("0101", True), (101, True), (101.0, True), ("101", True), (" 0103 ", True),
     ("0201", False), (201, False), ("0201K", False), ("010101", False), (None, False),
     (float("nan"), False), ("", False)],
)  # fmt: skip
def test_code_matching_pads_numbers_to_the_code_length(value, kept):
    """Codes compare as text; a number or a short digit string is left-padded with zeros to
    a configured code's length; nothing longer or with letters is trimmed to match."""
    from pipeline.overlay.classify import code_matches

    got = code_matches(pd.Series([value], dtype=object), ["0101", "0102", "0103"])
    assert got.tolist() == [kept]
