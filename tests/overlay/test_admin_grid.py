"""Grid loading and validation (pipeline.overlay.admin_grid, pipeline.overlay.io.grid_layers,
pipeline.overlay.io.vectors).

The fixtures are a hand-made grid of squares in EPSG:4548 (CGCS2000 / 3-degree Gauss-Krüger
CM 117E) right on the central meridian, where the scale factor is 1, so ellipsoidal areas
equal the planar ones to well under 0.1 %:

    y=100 +---------+---------+-------------------+
          |  V11    |  V12    |        V21        |
          | 50×100  | 50×100  |      100×100      |
      y=0 +---------+---------+-------------------+
          x=0       50        100                 200
          |<--- township T1 ->|<--- township T2 ->|

Each defect test changes one thing and checks that exactly the expected issues come out.
"""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from pipeline.config import LayerConfig, LayersConfig
from pipeline.errors import GridError, InputDataError
from pipeline.overlay.admin_grid import (
    IssueKind,
    codes_as_text,
    issues_frame,
    match_townships,
    township_by_majority,
    validate_grid,
)
from pipeline.overlay.io.grid_layers import load_grids
from pipeline.overlay.io.vectors import list_layers, read_layer
from pipeline.schema import UNASSIGNED, G

CRS = "EPSG:4548"
X0, Y0 = 500_000.0, 3_000_000.0  # on the central meridian


def box(x1, y1, x2, y2):
    return shapely.box(X0 + x1, Y0 + y1, X0 + x2, Y0 + y2)


T1, T2 = "130609100000", "130609101000"
V11, V12, V21 = "130609100001", "130609100002", "130609101001"


def townships(**changes) -> gpd.GeoDataFrame:
    rows = {T1: ("城关镇", box(0, 0, 100, 100)), T2: ("东岗镇", box(100, 0, 200, 100))}
    rows.update(changes)
    return gpd.GeoDataFrame(
        {G.CODE: list(rows), G.NAME: [r[0] for r in rows.values()], G.PERSON: ""},
        geometry=[r[1] for r in rows.values()],
        crs=CRS,
    )


def villages(**changes) -> gpd.GeoDataFrame:
    """Village rows keyed by code: (name, township code, geometry); changes replace rows."""
    rows = {
        V11: ("东村", T1, box(0, 0, 50, 100)),
        V12: ("西村", T1, box(50, 0, 100, 100)),
        V21: ("南村", T2, box(100, 0, 200, 100)),
    }
    rows.update(changes)
    return gpd.GeoDataFrame(
        {
            G.CODE: [c.split("#")[0] for c in rows],  # "code#2" = a second row with that code
            G.NAME: [r[0] for r in rows.values()],
            G.PERSON: "",
            G.TOWNSHIP_CODE: [r[1] for r in rows.values()],
        },
        geometry=[r[2] for r in rows.values()],
        crs=CRS,
    )


def kinds(issues) -> dict[str, int]:
    out: dict[str, int] = {}
    for issue in issues:
        out[issue.kind] = out.get(issue.kind, 0) + 1
    return out


# --------------------------------------------------------------------------- validate_grid
def test_clean_grid_has_no_issues():
    t, v, issues = validate_grid(townships(), villages())
    assert issues == ()
    assert len(t) == 2 and len(v) == 3


def test_inputs_are_not_modified():
    t, v = townships(), villages()
    t0, v0 = t.copy(), v.copy()
    validate_grid(t, v.drop(columns=G.TOWNSHIP_CODE))
    pd.testing.assert_frame_equal(t, t0)
    pd.testing.assert_frame_equal(v, v0)


def test_bow_tie_is_repaired_and_its_missing_triangles_are_gaps():
    # V21 drawn as a bow-tie over its square: make_valid keeps the left and right
    # triangles; the top and bottom triangles (2500 m² each) are then covered by no village.
    bow_tie = shapely.Polygon(
        [(X0 + 100, Y0), (X0 + 200, Y0 + 100), (X0 + 200, Y0), (X0 + 100, Y0 + 100)]
    )
    _t, v, issues = validate_grid(townships(), villages(**{V21: ("南村", T2, bow_tie)}))
    assert kinds(issues) == {IssueKind.INVALID_GEOMETRY: 1, IssueKind.GAP: 2}
    invalid = next(i for i in issues if i.kind == IssueKind.INVALID_GEOMETRY)
    assert invalid.code == V21 and "Self-intersection" in invalid.detail
    repaired = v.set_index(G.CODE).geometry[V21]
    assert repaired.is_valid and repaired.area == pytest.approx(5000)
    gaps = [i for i in issues if i.kind == IssueKind.GAP]
    assert [round(g.area_m2) for g in gaps] == [2500, 2500]
    assert all(g.code == T2 and g.layer == "township" for g in gaps)  # the township it lies in


def test_overlap_reports_both_codes_and_area():
    _t, _v, issues = validate_grid(
        townships(), villages(**{V12: ("西村", T1, box(40, 0, 100, 100))})
    )
    assert kinds(issues) == {IssueKind.OVERLAP: 1}
    (issue,) = issues
    assert {issue.code, issue.other_code} == {V11, V12}
    assert issue.area_m2 == pytest.approx(1000, rel=1e-3)
    assert issue.geometry.area == pytest.approx(1000)


def test_gap_inside_the_district():
    _t, _v, issues = validate_grid(
        townships(), villages(**{V12: ("西村", T1, box(50, 0, 90, 100))})
    )
    assert kinds(issues) == {IssueKind.GAP: 1}
    assert issues[0].area_m2 == pytest.approx(1000, rel=1e-3)
    assert issues[0].code == T1


def test_gap_against_a_given_district_layer():
    district = gpd.GeoDataFrame({G.CODE: ["130609"]}, geometry=[box(0, 0, 200, 120)], crs=CRS)
    _t, _v, issues = validate_grid(townships(), villages(), district)
    assert kinds(issues) == {IssueKind.GAP: 1}
    assert issues[0].area_m2 == pytest.approx(200 * 20, rel=1e-3)
    assert issues[0].code == "" and issues[0].layer == "district"  # outside every township


def test_duplicate_code():
    v = villages(**{V12: ("西村", T1, box(50, 0, 100, 100))})
    v.loc[v[G.CODE] == V12, G.CODE] = V11
    _t, v, issues = validate_grid(townships(), v)
    assert kinds(issues) == {IssueKind.DUPLICATE_CODE: 1}
    assert issues[0].code == V11 and "2" in issues[0].detail


def test_bad_code_and_configurable_pattern():
    v = villages()
    v.loc[v[G.CODE] == V21, G.CODE] = "13060910100"  # 11 digits
    _, _, issues = validate_grid(townships(), v)
    assert kinds(issues) == {IssueKind.BAD_CODE: 1}
    assert issues[0].code == "13060910100"
    # with a 5-digit (INSEE) pattern every 12-digit code is bad
    _, _, issues = validate_grid(townships(), villages(), code_pattern=r"^\d{5}$")
    assert kinds(issues) == {IssueKind.BAD_CODE: 5}


def test_village_outside_its_township():
    # T1 shrinks to x < 95, T2 grows: 10 % of V12 (500 m²) now lies in T2
    t = townships(**{T1: ("城关镇", box(0, 0, 95, 100)), T2: ("东岗镇", box(95, 0, 200, 100))})
    _, _, issues = validate_grid(t, villages())
    assert kinds(issues) == {IssueKind.OUTSIDE_TOWNSHIP: 1}
    assert issues[0].code == V12
    assert issues[0].area_m2 == pytest.approx(500, rel=1e-3)
    assert "10.0%" in issues[0].detail


def test_unknown_township_code():
    _, _, issues = validate_grid(
        townships(), villages(**{V21: ("南村", "130609999000", box(100, 0, 200, 100))})
    )
    assert kinds(issues) == {IssueKind.UNKNOWN_TOWNSHIP: 1}


def test_empty_geometry_is_dropped_and_reported():
    v = pd.concat([villages(), villages().iloc[[0]].assign(**{G.CODE: "130609100009"})])
    v = v.set_geometry([*villages().geometry, None], crs=CRS)
    _, fixed, issues = validate_grid(townships(), v)
    assert kinds(issues) == {IssueKind.EMPTY_GEOMETRY: 1}
    assert issues[0].code == "130609100009"
    assert len(fixed) == 3


def test_empty_layer_is_fatal():
    with pytest.raises(GridError, match="village layer has no features"):
        validate_grid(townships(), villages().iloc[:0])
    all_empty = villages().set_geometry([None, None, None], crs=CRS)
    with pytest.raises(GridError, match="no polygon with an area"):
        validate_grid(townships(), all_empty)


def test_township_by_majority():
    # V12 widened to x=130: 50/80 of it in T1 -> T1 (share 0.625); V21 entirely in T2
    v = villages(**{V12: ("西村", T1, box(50, 0, 130, 100))}).drop(columns=G.TOWNSHIP_CODE)
    codes, shares = township_by_majority(v, townships())
    assert list(codes) == [T1, T1, T2]
    assert shares[1] == pytest.approx(0.625)
    # a village touching no township stays unassigned
    far = villages(**{V21: ("南村", T2, box(1000, 0, 1100, 100))}).drop(columns=G.TOWNSHIP_CODE)
    codes, shares = township_by_majority(far, townships())
    assert codes.iloc[2] == UNASSIGNED and shares[2] == 0


def test_codes_as_text_restores_lost_zeros():
    values = pd.Series([1001.0, 75056.0, float("nan"), 12.0])  # INSEE, read as floats
    codes, issues = codes_as_text(values, r"^\d{5}$", layer="village")
    assert list(codes) == ["01001", "75056", "", "00012"]
    assert [i.code for i in issues] == ["01001", "00012"]
    assert all(i.kind == IssueKind.CODE_LOST_ZEROS for i in issues)
    # text is never padded; large integers keep all digits
    codes, issues = codes_as_text(pd.Series(["1001", 130609100001]), r"^\d{5}$")
    assert list(codes) == ["1001", "130609100001"] and issues == []


def test_issues_frame():
    _, _, issues = validate_grid(townships(), villages(**{V12: ("西村", T1, box(50, 0, 90, 100))}))
    frame = issues_frame(issues, crs=CRS)
    assert list(frame["kind"]) == ["gap"] and frame.geometry.iloc[0].area == pytest.approx(1000)


# --------------------------------------------------------------------------- load_grids (files)
def write_grids(path, t: gpd.GeoDataFrame, v: gpd.GeoDataFrame) -> None:
    t.to_file(path, layer="township", driver="GPKG")
    v.to_file(path, layer="village", driver="GPKG")


def layers(path, **village) -> LayersConfig:
    vcfg = {"code_field": G.CODE, "name_field": G.NAME, "township_field": G.TOWNSHIP_CODE}
    vcfg.update(village)
    return LayersConfig(
        township=LayerConfig(path, layer="township", code_field=G.CODE, name_field=G.NAME),
        village=LayerConfig(path, layer="village", **vcfg),
    )


def test_gpkg_round_trip_with_chinese_names_and_reprojection(tmp_path):
    path = tmp_path / "grids.gpkg"
    # stored in geographic CGCS2000; loaded onto the projected target grid
    write_grids(path, townships().to_crs("EPSG:4490"), villages().to_crs("EPSG:4490"))
    assert list_layers(path) == ["township", "village"]
    grids = load_grids(layers(path), crs=CRS)
    assert grids.issues == ()
    assert grids.district is None
    assert grids.villages.crs.equals(CRS)
    assert list(grids.villages[G.NAME]) == ["东村", "西村", "南村"]
    assert list(grids.townships[G.NAME]) == ["城关镇", "东岗镇"]
    assert list(grids.villages[G.CODE]) == [V11, V12, V21]
    assert list(grids.villages[G.TOWNSHIP_CODE]) == [T1, T1, T2]
    assert grids.villages.geometry.iloc[2].area == pytest.approx(10_000, rel=1e-6)


def test_village_layer_without_township_field_gets_majority_township(tmp_path):
    path = tmp_path / "grids.gpkg"
    write_grids(path, townships(), villages().drop(columns=G.TOWNSHIP_CODE))
    grids = load_grids(layers(path, township_field=None), crs=CRS)
    assert list(grids.villages[G.TOWNSHIP_CODE]) == [T1, T1, T2]
    assert grids.issues == ()


def test_numeric_codes_that_lost_zeros_are_reported(tmp_path):
    # French communes: INSEE codes stored as integers lose the leading 0 of departments 01-09
    path = tmp_path / "communes.gpkg"
    t = townships().assign(**{G.CODE: [11000, 12000]})
    v = villages().assign(**{G.CODE: [1001, 11002, 12001], G.TOWNSHIP_CODE: [11000, 11000, 12000]})
    write_grids(path, t, v)
    grids = load_grids(layers(path), crs=CRS, code_pattern=r"^\d{5}$")
    assert list(grids.villages[G.CODE]) == ["01001", "11002", "12001"]
    assert list(grids.townships[G.CODE]) == ["11000", "12000"]
    assert kinds(grids.issues) == {IssueKind.CODE_LOST_ZEROS: 1}
    assert grids.issues[0].code == "01001" and grids.issues[0].layer == "village"


def test_missing_field_lists_the_fields_found(tmp_path):
    path = tmp_path / "grids.gpkg"
    write_grids(path, townships(), villages())
    with pytest.raises(GridError, match="'XZQDM' not found") as info:
        load_grids(layers(path, code_field="XZQDM"), crs=CRS)
    message = str(info.value)
    assert "village layer" in message and "grids.gpkg" in message
    assert "code, name, person, township_code" in message
    assert isinstance(info.value, OSError)  # GridError is an InputDataError


def test_empty_layer_file_is_fatal(tmp_path):
    path = tmp_path / "grids.gpkg"
    write_grids(path, townships(), villages().iloc[:0])
    with pytest.raises(GridError, match="no features"):
        load_grids(layers(path), crs=CRS)


def test_read_layer_errors_name_file_and_layer(tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        read_layer(tmp_path / "nope.gpkg")
    path = tmp_path / "grids.gpkg"
    write_grids(path, townships(), villages())
    with pytest.raises(InputDataError, match=r"no layer named 'villages'.*township, village"):
        read_layer(path, layer="villages")
    with pytest.raises(InputDataError, match="'doc_no' not found"):
        read_layer(path, layer="village", columns=["doc_no"])
    bad = tmp_path / "bad.gpkg"
    bad.write_text("not a geopackage")
    with pytest.raises(InputDataError, match=r"bad\.gpkg"):
        read_layer(bad)


# --------------------------------------------------------------------------- code forms
def test_nine_digit_township_codes_pass_and_villages_match_on_nine_digits():
    """Township codes in the 9-digit GB/T 10114 form pass the default pattern; a village
    whose township field holds the 12-digit form (…000) finds its township, and carries the
    township layer's code exactly as that layer has it."""
    t = townships().assign(**{G.CODE: [T1[:9], T2[:9]]})
    t2, v, issues = validate_grid(t, villages())
    assert issues == ()
    assert list(v[G.TOWNSHIP_CODE]) == [T1[:9], T1[:9], T2[:9]]
    assert list(t2[G.CODE]) == [T1[:9], T2[:9]]  # stored as they came
    assert list(v[G.CODE]) == [V11, V12, V21]


def test_match_townships():
    """Exact codes match; all-digit codes match on their first 9 digits; text codes, short
    codes and a 9-digit key shared by two township codes match only exactly."""
    towns = pd.Series(["130609100", "130609101000", "ABC", "13060920", "130609300001",
                       "130609300002"])  # fmt: skip
    wanted = pd.Series(["130609100000", "130609101", "ABC", "13060920", "130609300",
                        "130609999", "130609300002"], index=list("abcdefg"))  # fmt: skip
    got = match_townships(wanted, towns)
    assert list(got.index) == list("abcdefg")
    assert list(got) == ["130609100", "130609101000", "ABC", "13060920", "130609300",
                         "130609999", "130609300002"]  # fmt: skip


def test_malformed_codes_name_the_code_and_the_pattern():
    """A township code of 10 digits fails the township pattern and a 9-digit village code the
    village pattern; each issue names the code and the pattern it misses."""
    t = townships().assign(**{G.CODE: ["1306091000", T2]})
    v = villages()
    v.loc[v[G.CODE] == V21, G.CODE] = "130609101"
    _, _, issues = validate_grid(t, v)
    bad = {(i.layer, i.code): i.detail for i in issues if i.kind == IssueKind.BAD_CODE}
    assert set(bad) == {("township", "1306091000"), ("village", "130609101")}
    assert r"^\d{9}(?:000)?$" in bad[("township", "1306091000")]
    assert r"^\d{12}$" in bad[("village", "130609101")]


def test_gbk_shapefile_grid_without_cpg(tmp_path):
    """A grid as bureaus send it — GBK Shapefiles, no .cpg, language byte 0, 9-digit
    township codes, villages naming their township in the 12-digit form — loads with the
    Chinese names intact and every village in its township."""
    from tests.shapefiles import TOWN_A, TOWN_B, townships_frame, villages_frame, write_shapefile

    write_shapefile(tmp_path / "XZ.shp", townships_frame())
    write_shapefile(tmp_path / "CJ.shp", villages_frame())
    cfg = LayersConfig(
        township=LayerConfig(tmp_path / "XZ.shp", code_field="XZDM", name_field="XZMC"),
        village=LayerConfig(
            tmp_path / "CJ.shp", code_field="CJDM", name_field="CJMC", township_field="XZDM"
        ),
    )
    grids = load_grids(cfg, crs=CRS)
    assert grids.issues == ()
    assert list(grids.townships[G.NAME]) == ["青宁街道", "河西乡"]
    assert list(grids.villages[G.NAME]) == ["东村", "西村", "南庄村", "北庄村"]
    assert list(grids.villages[G.TOWNSHIP_CODE]) == [TOWN_A, TOWN_A, TOWN_B, TOWN_B]
