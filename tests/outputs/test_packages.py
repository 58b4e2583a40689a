"""Field packages: every export is reopened with pyogrio / fiona / openpyxl and checked.

The fake district has two townships (城关镇 with villages 东村 and 西村, 河西乡 with 南庄村)
in EPSG:4548 and five patches, one of them outside every grid polygon.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import time
import zipfile
from pathlib import Path

import fiona
import geopandas as gpd
import numpy as np
import openpyxl
import pandas as pd
import pyogrio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import ExportConfig
from pipeline.errors import InputDataError
from pipeline.outputs import webfont
from pipeline.outputs.packages import (
    RETURN_TEMPLATE_COLUMNS,
    data_dictionary,
    export_packages,
    latest_export_dir,
    package_key,
    package_manifest_key,
    package_stem,
    return_template,
    shapefile_frame,
    split_by_township,
)
from pipeline.schema import (
    CY,
    FIELD_RETURN_COLUMNS,
    PATCH_COLUMNS,
    SHAPEFILE_FIELDS,
    UNASSIGNED,
    G,
    P,
)
from pipeline.units import MU_M2
from tests import district
from tests.district import DATE, TOWN_A, TOWN_B, VIL_A1, VIL_A2, VIL_B1


def make_grids() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The fake district's grids, with the responsible persons the packages name."""
    return district.make_grids(persons=True)


def make_patches() -> gpd.GeoDataFrame:
    """The fake district's patches, with an area that needs rounding in the exports."""
    return district.make_patches(area_m2=400.123)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """One UTF-8 export of the fake district (shared by the read-only tests below)."""
    out = tmp_path_factory.mktemp("exports")
    townships, villages = make_grids()
    paths = export_packages(
        make_patches(), townships, villages, out, cfg=ExportConfig(), area_name="示例区", date=DATE
    )
    return {"paths": paths, "out": out}


def _unzip(path: Path, dest: Path) -> Path:
    """Extract a package; return its top folder."""
    with zipfile.ZipFile(path) as zf:
        zf.extractall(dest)
        top = {n.split("/", 1)[0] for n in zf.namelist()}
    assert len(top) == 1, "a package holds one top folder"
    return dest / top.pop()


def test_one_package_per_township_plus_unassigned(exported):
    names = [p.name for p in exported["paths"]]
    assert names == [
        f"{TOWN_A}_城关镇.zip",
        f"{TOWN_B}_河西乡.zip",
        f"{UNASSIGNED}_未分配.zip",
    ]
    assert all(p.exists() for p in exported["paths"])
    assert not list(exported["out"].glob(".*tmp")), "no temporary file is left behind"


def test_zip_entries_sorted_utf8_named_and_complete(exported):
    with zipfile.ZipFile(exported["paths"][0]) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert all(i.flag_bits & 0x800 for i in infos), "Chinese folder name needs the UTF-8 flag"
    assert all(i.date_time == (2024, 5, 1, 0, 0, 0) for i in infos)
    files = {n.split("/", 1)[1] for n in names}
    stem = f"{TOWN_A}_patches"
    assert {f"{stem}{ext}" for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg")} <= files
    assert {f"{stem}.gpkg", f"{stem}.kml", "data_dictionary.csv", "return_template.csv"} <= files
    assert {"return_template.xlsx", "patches.html", "README.txt"} <= files


def test_shapefile_round_trip(exported, tmp_path):
    """Rows, Chinese names, configured CRS, .cpg, ≤10-char fields, only own patches, 2 decimals."""
    folder = _unzip(exported["paths"][0], tmp_path)
    shp = folder / f"{TOWN_A}_patches.shp"
    df = pyogrio.read_dataframe(shp)
    assert sorted(df["patch_id"]) == ["130609201700001", "130609201700002", "130609201700003"]
    assert set(df["town_code"]) == {TOWN_A}
    assert set(df["vill_name"]) == {"东村", "西村"}
    assert df.crs.to_epsg() == 4490
    assert (folder / f"{TOWN_A}_patches.cpg").read_text() == "UTF-8"
    fields = pyogrio.read_info(shp)["fields"].tolist()
    assert fields == list(SHAPEFILE_FIELDS.values())
    assert all(len(f) <= 10 for f in fields)
    assert np.allclose(df["area_m2"], 400.12)
    assert np.allclose(df["area_mu"], round(400.123 / MU_M2, 2))
    # codes stay text with their leading digits, NaN remaining stays null
    assert df["vill_code"].map(type).eq(str).all()
    assert df.loc[df["patch_id"] == "130609201700001", "remain_m2"].isna().all()


def test_no_package_holds_another_townships_patch(exported, tmp_path):
    expected = {p.name.split("_", 1)[0] for p in exported["paths"]}
    patches = make_patches()
    for i, path in enumerate(exported["paths"]):
        folder = _unzip(path, tmp_path / str(i))
        code = path.name.split("_", 1)[0]
        df = pyogrio.read_dataframe(next(folder.glob("*.shp")))
        own = set(patches.loc[patches[P.TOWNSHIP_CODE] == code, P.PATCH_ID])
        assert set(df["patch_id"]) == own, code
    assert expected == {TOWN_A, TOWN_B, UNASSIGNED}


def test_gpkg_and_kml(exported, tmp_path):
    folder = _unzip(exported["paths"][0], tmp_path)
    gpkg = folder / f"{TOWN_A}_patches.gpkg"
    layers = {name for name, _ in pyogrio.list_layers(gpkg)}
    assert layers == {"patches", "villages", "layer_styles"}  # QGIS opens the patches styled
    style = pyogrio.read_dataframe(gpkg, layer="layer_styles")
    assert style[["f_table_name", "useAsDefault"]].values.tolist() == [["patches", 1]]
    patches = pyogrio.read_dataframe(gpkg, layer="patches")
    assert list(patches.columns[:-1]) == list(PATCH_COLUMNS)
    assert len(patches) == 3 and patches.crs.to_epsg() == 4490
    villages = pyogrio.read_dataframe(gpkg, layer="villages")
    assert sorted(villages[G.NAME]) == ["东村", "西村"]

    kml = folder / f"{TOWN_A}_patches.kml"
    k = pyogrio.read_dataframe(kml)
    assert len(k) == 3 and k.crs.to_epsg() == 4326
    text = kml.read_text(encoding="utf-8")
    assert "<Style>" in text and "东村" in text
    # KML coordinates are lon/lat near 117°E
    xmin, _, xmax, _ = k.total_bounds
    assert 116.9 < xmin < xmax < 117.1


def test_gbk_option(tmp_path):
    """encoding GBK: .cpg says so, the DBF holds GBK bytes, GDAL/fiona read the names back."""
    townships, villages = make_grids()
    cfg = dataclasses.replace(ExportConfig(), encoding="GBK")
    paths = export_packages(
        make_patches(),
        townships,
        villages,
        tmp_path / "out",
        cfg=cfg,
        area_name="示例区",
        date=DATE,
    )
    folder = _unzip(paths[0], tmp_path / "x")
    assert (folder / f"{TOWN_A}_patches.cpg").read_text() == "GBK"
    dbf = (folder / f"{TOWN_A}_patches.dbf").read_bytes()
    assert "东村".encode("gbk") in dbf and "东村".encode() not in dbf
    with fiona.open(folder / f"{TOWN_A}_patches.shp") as src:
        assert {f.properties["vill_name"] for f in src} == {"东村", "西村"}
    assert pyogrio.read_dataframe(folder / f"{TOWN_A}_patches.shp").crs.to_epsg() == 4490


def test_shapefile_field_map():
    """The only Shapefile map: ≤ 10 chars, unique, ASCII, every key a registry column."""
    names = list(SHAPEFILE_FIELDS.values())
    assert all(len(n) <= 10 and n.isascii() for n in names)
    assert len(set(n.lower() for n in names)) == len(names)
    assert set(SHAPEFILE_FIELDS) <= set(PATCH_COLUMNS)


def test_return_template_files(exported, tmp_path):
    folder = _unzip(exported["paths"][0], tmp_path)
    raw = (folder / "return_template.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "BOM so Excel shows Chinese"
    csv = pd.read_csv(io.BytesIO(raw), encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert list(csv.columns) == list(RETURN_TEMPLATE_COLUMNS)
    assert set(FIELD_RETURN_COLUMNS) <= set(csv.columns)
    assert list(csv[P.PATCH_ID]) == [
        "130609201700001",
        "130609201700003",
        "130609201700002",
    ]  # by village
    assert set(csv[P.AREA_MU]) == {f"{400.123 / MU_M2:.2f}"}
    assert (csv[P.VERDICT] == "").all() and (csv[P.REMAINING_M2] == "").all()

    wb = openpyxl.load_workbook(folder / "return_template.xlsx")
    assert wb.sheetnames == ["return", "README"]
    ws = wb["return"]
    assert [c.value for c in ws[1]] == list(RETURN_TEMPLATE_COLUMNS)
    ids = [ws.cell(row=i, column=1).value for i in range(2, ws.max_row + 1)]
    assert ids == list(csv[P.PATCH_ID])
    assert all(isinstance(i, str) for i in ids), "ids are text cells, not numbers"
    readme = " ".join(str(c.value) for row in wb["README"].iter_rows() for c in row if c.value)
    assert "违法" in readme and "demolished_restored" in readme


def test_return_template_pure():
    template = return_template(make_patches().iloc[::-1])
    assert list(template.columns) == list(RETURN_TEMPLATE_COLUMNS)
    assert template[P.VILLAGE_CODE].is_monotonic_increasing


def test_data_dictionary_and_html(exported, tmp_path):
    folder = _unzip(exported["paths"][0], tmp_path)
    dd = pd.read_csv(folder / "data_dictionary.csv", encoding="utf-8-sig", dtype=str)
    assert list(dd["column"]) == list(PATCH_COLUMNS)
    mapped = dd.dropna(subset=["shp_field"])
    assert dict(zip(mapped["column"], mapped["shp_field"], strict=True)) == SHAPEFILE_FIELDS
    assert dd.equals(data_dictionary().replace("", np.nan).astype(dd.dtypes.to_dict()))

    html = (folder / "patches.html").read_text(encoding="utf-8")
    assert "城关镇" in html and html.index("东村") < html.index("西村")
    assert "130609201700004" not in html, "only this township's patches"
    assert "http://" not in html and "https://" not in html
    if webfont.embedding_id() != "none":  # the bundled font is installed: it is embedded
        assert "@font-face" in html and f'"{webfont.FONT_FAMILY}"' in html
    readme = (folder / "README.txt").read_text(encoding="utf-8-sig")
    assert "return_template.xlsx" in readme and "城关镇" in readme


def test_zip_bytes_identical_across_exports(tmp_path):
    """Same inputs and date -> byte-identical packages, even a second later (clock-free)."""
    townships, villages = make_grids()
    kwargs = dict(cfg=ExportConfig(), area_name="示例区", date=DATE)
    first = export_packages(make_patches(), townships, villages, tmp_path / "a", **kwargs)
    time.sleep(1.1)  # crosses a second boundary so any wall-clock stamp would show
    second = export_packages(make_patches(), townships, villages, tmp_path / "b", **kwargs)
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_only_townships_and_inputs_untouched(tmp_path):
    townships, villages = make_grids()
    patches = make_patches()
    before = patches.copy()
    paths = export_packages(
        patches,
        townships,
        villages,
        tmp_path,
        cfg=ExportConfig(),
        area_name="示例区",
        date=DATE,
        only_townships={TOWN_B},
    )
    assert [p.name for p in paths] == [f"{TOWN_B}_河西乡.zip"]
    pd.testing.assert_frame_equal(patches, before)


def test_bad_inputs_name_the_problem(tmp_path):
    townships, villages = make_grids()
    with pytest.raises(InputDataError, match="lacks columns"):
        export_packages(
            make_patches().drop(columns=P.VERDICT),
            townships,
            villages,
            tmp_path,
            cfg=ExportConfig(),
            area_name="x",
            date=DATE,
        )
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        export_packages(
            make_patches(),
            townships,
            villages,
            tmp_path,
            cfg=ExportConfig(),
            area_name="x",
            date="May 1",
        )


def test_split_by_township_covers_every_patch():
    groups = split_by_township(make_patches())
    assert list(groups) == sorted(groups)
    assert sum(len(g) for g in groups.values()) == len(make_patches())


def test_long_text_is_cut_to_dbf_limit():
    patches = make_patches()
    patches[P.APPROVAL_REFS] = "冀政转字〔2017〕" * 40
    frame = shapefile_frame(patches, "EPSG:4490", "UTF-8")
    assert frame["appr_refs"].map(lambda s: len(s.encode("utf-8"))).max() <= 254


@settings(max_examples=25, deadline=None)
@given(st.permutations(range(3)))
def test_package_key_ignores_row_order(order):
    """The key depends on content, not on the order rows come in."""
    own = split_by_township(make_patches())[TOWN_A]
    assert package_key(own.iloc[list(order)]) == package_key(own)


def test_package_key_sees_changes_but_not_updated_at():
    own = split_by_township(make_patches())[TOWN_A]
    key = package_key(own)
    touched = own.assign(**{P.UPDATED_AT: "2030-01-01T00:00:00Z"})
    assert package_key(touched) == key
    changed = own.copy()
    changed.loc[changed.index[0], P.VERDICT] = "illegal"
    assert package_key(changed) != key
    moved = own.set_geometry(own.geometry.translate(1.0, 0.0))
    assert package_key(moved) != key


@given(st.text(min_size=1, max_size=20))
def test_package_stem_is_a_safe_file_name(name):
    stem = package_stem(TOWN_A, name)
    assert stem.startswith(TOWN_A)
    assert not any(ch in stem for ch in '\\/:*?"<>|\n\r\t')


def test_no_patches_no_packages(tmp_path):
    townships, villages = make_grids()
    paths = export_packages(
        make_patches().iloc[0:0],
        townships,
        villages,
        tmp_path,
        cfg=ExportConfig(),
        area_name="x",
        date=DATE,
    )
    assert paths == []


# --------------------------------------------------------------------------- chips, villages, reuse
FAKE_PNG = b"\x89PNG\r\n\x1a\nfake-chip-"


def _chips(patches: gpd.GeoDataFrame) -> dict[str, bytes]:
    """Stand-in PNG bytes per patch id (export only copies them; chips.py draws real ones)."""
    return {pid: FAKE_PNG + pid.encode() for pid in patches[P.PATCH_ID]}


def test_chips_are_packaged_and_linked_from_the_list(tmp_path):
    townships, villages = make_grids()
    patches = make_patches()
    paths = export_packages(
        patches, townships, villages, tmp_path / "out", cfg=ExportConfig(),
        area_name="示例区", date=DATE, chips=_chips(patches),
    )  # fmt: skip
    folder = _unzip(paths[0], tmp_path / "x")  # 城关镇: patches 1-3
    pngs = sorted(p.name for p in (folder / "chips").iterdir())
    assert pngs == [f"130609201700{i:03d}.png" for i in (1, 2, 3)]
    assert (folder / "chips" / pngs[0]).read_bytes() == FAKE_PNG + b"130609201700001"
    html = (folder / "patches.html").read_text(encoding="utf-8")
    assert 'src="chips/130609201700001.png"' in html, "linked by a relative path"
    assert "130609201700004.png" not in html


def test_chips_switched_off_by_config(tmp_path):
    townships, villages = make_grids()
    patches = make_patches()
    paths = export_packages(
        patches, townships, villages, tmp_path / "out", cfg=ExportConfig(chips=False),
        area_name="示例区", date=DATE, chips=_chips(patches),
    )  # fmt: skip
    with zipfile.ZipFile(paths[0]) as zf:
        assert not [n for n in zf.namelist() if "/chips/" in n]
        html = zf.read(next(n for n in zf.namelist() if n.endswith("patches.html"))).decode()
    assert "chips/" not in html


def test_per_village_packages(tmp_path):
    """One zip per village under villages/, with only that village's patches; no zip for
    patches outside every village."""
    townships, villages = make_grids()
    patches = make_patches()
    out = tmp_path / "out"
    paths = export_packages(
        patches, townships, villages, out, cfg=ExportConfig(per_village=True),
        area_name="示例区", date=DATE, chips=_chips(patches),
    )  # fmt: skip
    village_zips = sorted(
        p.relative_to(out).as_posix() for p in paths if p.parent.name == "villages"
    )
    assert village_zips == [
        f"villages/{VIL_A1}_东村.zip",
        f"villages/{VIL_A2}_西村.zip",
        f"villages/{VIL_B1}_南庄村.zip",
    ]
    folder = _unzip(out / f"villages/{VIL_A1}_东村.zip", tmp_path / "v")
    shp = gpd.read_file(folder / f"{VIL_A1}_patches.shp")
    assert sorted(shp["patch_id"]) == ["130609201700001", "130609201700003"]
    assert sorted(p.name for p in (folder / "chips").iterdir()) == [
        "130609201700001.png",
        "130609201700003.png",
    ]
    layers = dict(pyogrio.list_layers(folder / f"{VIL_A1}_patches.gpkg"))
    vill = gpd.read_file(folder / f"{VIL_A1}_patches.gpkg", layer="villages")
    assert "villages" in layers and list(vill["code"]) == [VIL_A1]
    assert "东村" in (folder / "README.txt").read_text(encoding="utf-8-sig")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["packages"][f"villages/{VIL_A1}_东村.zip"]["level"] == "village"


def test_unchanged_packages_are_reused_from_the_previous_export(tmp_path):
    """Night 1 exports everything; night 2 (a later date, one township changed) links or
    copies the unchanged packages from night 1 and rebuilds only the changed one."""
    townships, villages = make_grids()
    patches = make_patches()
    cfg = ExportConfig(per_village=True)
    kwargs = dict(cfg=cfg, area_name="示例区")
    night1 = tmp_path / "exports" / "2024-05-01"
    first = export_packages(patches, townships, villages, night1, date="2024-05-01", **kwargs)

    changed = patches.copy()
    changed.loc[changed[P.PATCH_ID] == "130609201700004", P.VERDICT] = "illegal"  # 河西乡
    night2 = tmp_path / "exports" / "2024-05-02"
    previous = latest_export_dir(tmp_path / "exports", "2024-05-02")
    assert previous == night1
    second = export_packages(
        changed, townships, villages, night2, date="2024-05-02", previous=previous, **kwargs
    )
    assert [p.relative_to(night2) for p in second] == [p.relative_to(night1) for p in first]
    manifest = json.loads((night2 / "manifest.json").read_text(encoding="utf-8"))["packages"]
    rebuilt = {k for k, v in manifest.items() if v["built_on"] == "2024-05-02"}
    assert rebuilt == {f"{TOWN_B}_河西乡.zip", f"villages/{VIL_B1}_南庄村.zip"}
    for rel, entry in manifest.items():
        old, new = night1 / rel, night2 / rel
        if rel in rebuilt:
            assert old.read_bytes() != new.read_bytes(), rel
        else:
            assert entry["built_on"] == "2024-05-01"
            assert old.read_bytes() == new.read_bytes(), rel

    # a rerun of night 2 rewrites nothing: same inode and bytes for every package
    inodes = {p: p.stat().st_ino for p in second}
    again = export_packages(
        changed, townships, villages, night2, date="2024-05-02", previous=previous, **kwargs
    )
    assert {p: p.stat().st_ino for p in again} == inodes


def test_manifest_key_sees_chips_and_config():
    _, villages = make_grids()
    group = split_by_township(make_patches())[TOWN_A]
    args = dict(area_name="示例区", unit=("township", TOWN_A, "城关镇", "张三"))
    base = package_manifest_key(group, villages, cfg=ExportConfig(), chips={}, **args)
    assert base == package_manifest_key(group, villages, cfg=ExportConfig(), chips={}, **args)
    with_chips = package_manifest_key(
        group, villages, cfg=ExportConfig(), chips=_chips(group), **args
    )
    gbk = package_manifest_key(group, villages, cfg=ExportConfig(encoding="GBK"), chips={}, **args)
    assert len({base, with_chips, gbk}) == 3


def test_manifest_key_sees_the_embedded_font(monkeypatch):
    """A package built with another (or no) embedded font in patches.html is not reused."""
    _, villages = make_grids()
    group = split_by_township(make_patches())[TOWN_A]
    args = dict(
        cfg=ExportConfig(), chips={}, area_name="示例区", unit=("township", TOWN_A, "城关镇", "")
    )
    base = package_manifest_key(group, villages, **args)
    monkeypatch.setattr(webfont, "embedding_id", lambda: "other-font")
    assert package_manifest_key(group, villages, **args) != base


def test_corrupt_previous_manifest_means_rebuild(tmp_path, caplog):
    townships, villages = make_grids()
    prev = tmp_path / "prev"
    prev.mkdir()
    (prev / "manifest.json").write_text("{not json", encoding="utf-8")
    paths = export_packages(
        make_patches(), townships, villages, tmp_path / "out", cfg=ExportConfig(),
        area_name="示例区", date=DATE, previous=prev,
    )  # fmt: skip
    assert len(paths) == 3 and "unreadable" in caplog.text


@pytest.mark.parametrize("how", ["environment", "gdal option"])
@pytest.mark.parametrize("shape_encoding", ["GBK", "UTF-8"])
@pytest.mark.parametrize("encoding", ["UTF-8", "GBK"])
def test_cpg_matches_the_bytes_whatever_shape_encoding(
    tmp_path, monkeypatch, how, shape_encoding, encoding
):
    """GDAL recodes DBF text into SHAPE_ENCODING when it is set (environment or GDAL option),
    whatever .cpg it writes. Under either setting, each export.encoding gives a .cpg naming
    the encoding of the bytes written: the .dbf decodes with it to the Chinese names (read
    with a small independent DBF reader), and the DBF language byte agrees (0x4D = GBK)."""
    from tests.shapefiles import dbf_text_fields

    townships, villages = make_grids()
    previous = pyogrio.get_gdal_config_option("SHAPE_ENCODING")
    if how == "environment":
        monkeypatch.setenv("SHAPE_ENCODING", shape_encoding)
    else:
        pyogrio.set_gdal_config_options({"SHAPE_ENCODING": shape_encoding})
    try:
        paths = export_packages(
            make_patches(), townships, villages, tmp_path / "out",
            cfg=ExportConfig(encoding=encoding), area_name="示例区", date=DATE,
        )  # fmt: skip
        if how == "gdal option":  # the caller's setting is left as it was
            assert pyogrio.get_gdal_config_option("SHAPE_ENCODING") == shape_encoding
    finally:
        pyogrio.set_gdal_config_options({"SHAPE_ENCODING": previous})
    folder = _unzip(paths[0], tmp_path / "x")
    cpg = (folder / f"{TOWN_A}_patches.cpg").read_text()
    assert cpg == encoding
    dbf = (folder / f"{TOWN_A}_patches.dbf").read_bytes()
    fields = dbf_text_fields(dbf, cpg)
    assert set(fields["vill_name"]) == {"东村", "西村"}
    assert set(fields["town_name"]) == {"城关镇"}
    assert dbf[29] == (0x4D if encoding == "GBK" else 0)


def test_urgent_patches_come_first_within_their_village():
    """Within a village the template (and the patch list) are in work order: an urgent patch
    first, whatever its id or score."""
    patches = make_patches()
    patches[CY.URGENT] = False
    patches[CY.REPORT_DUE] = None
    village = patches[P.VILLAGE_CODE].iloc[0]
    mine = patches.index[patches[P.VILLAGE_CODE] == village]
    assert len(mine) >= 2
    patches.loc[mine[-1], [CY.URGENT, CY.REPORT_DUE]] = [True, dt.date(2024, 5, 8)]
    template = return_template(patches)
    first = template[template[P.VILLAGE_CODE] == village][P.PATCH_ID].iloc[0]
    assert first == patches.at[mine[-1], P.PATCH_ID]
