"""Builder of the "county data as it comes" fixture (issue 13, item 8).

A small synthetic scene (a sample area of the ``sample_area`` fixture) converted into the
files a county bureau hands over:

- township / village / district grids as GBK Shapefiles **without** a ``.cpg`` and with the
  DBF language byte 0, Chinese names, 9-digit township codes (GB/T 10114) and 12-digit
  village codes;
- a 三调 ``DLTB.shp`` covering the whole scene with mixed land-use codes (耕地 0101/0102/0103,
  果园 0201, 乔木林地 0301, 农村宅基地 0702, 公路用地 1003) and a separate ``YJJBNT.shp``
  (permanent basic farmland), both GBK without ``.cpg``;
- approvals (``PZYD.shp``) with Chinese document numbers such as 冀政转征〔2016〕第0331号;
- imagery warped into EPSG:4490 (CGCS2000 degrees) while ``area.crs`` stays projected;
- after a first run, field returns as townships fill them (:func:`write_returns`): one
  ``.xls``, one ``.xlsx`` and one GBK CSV with Chinese headers and synonyms, and rows left
  blank apart from the pre-filled patch id, village and area.

:func:`check_county_files` proves the files are what they claim (language byte 0, no
``.cpg``, GBK bytes, EPSG:4490 imagery) so a failing pipeline test is never the fixture's fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
import yaml
from rasterio.warp import Resampling, calculate_default_transform, reproject

from pipeline.units import MU_M2
from tests.samples import ROOT

CRS = "EPSG:4548"
"""CRS of the vector layers and of ``area.crs`` (CGCS2000 / 3-degree GK CM 117E, metres)."""
IMAGERY_CRS = "EPSG:4490"
"""CRS the imagery is delivered in (CGCS2000 geographic, degrees)."""
ENCODING = "GBK"
LDID_OFFSET = 29
"""Byte of the DBF header holding the code page ("language driver id"); 0 = not stated."""

TOWNSHIP_FILE, VILLAGE_FILE, DISTRICT_FILE = "XZ.shp", "CJ.shp", "XQ.shp"
DLTB_FILE, YJJBNT_FILE, APPROVALS_FILE = "DLTB.shp", "YJJBNT.shp", "PZYD.shp"
SHAPEFILES = (TOWNSHIP_FILE, VILLAGE_FILE, DISTRICT_FILE, DLTB_FILE, YJJBNT_FILE, APPROVALS_FILE)
FARMLAND_CODES = ("0101", "0102", "0103")
LAND_USE_NAMES = {
    "0101": "水田",
    "0102": "水浇地",
    "0103": "旱地",
    "0201": "果园",
    "0301": "乔木林地",
    "0702": "农村宅基地",
    "1003": "公路用地",
}
"""三调 DLBM -> DLMC of the codes the DLTB holds."""
CHECKED_ON = "2026-11-20"
INSPECTOR = "王建国"


@dataclass(frozen=True)
class County:
    """The fixture folder and the layers as written (columns as in the Shapefiles)."""

    folder: Path
    config: Path
    townships: gpd.GeoDataFrame
    villages: gpd.GeoDataFrame
    dltb: gpd.GeoDataFrame
    yjjbnt: gpd.GeoDataFrame
    approvals: gpd.GeoDataFrame


# --------------------------------------------------------------------------- the input files
def build_county(folder: Path, sample: Path) -> County:
    """Write the county fixture into ``folder`` and check it (see the module docstring).

    ``sample`` is a generated sample area (``sample_area(600, 2017)`` in the tests); it is only
    read: the county's files are converted copies of its grid, layers and imagery.
    """
    grids = sample / "grids.gpkg"
    townships = _townships(pyogrio.read_dataframe(grids, layer="township"))
    villages = _villages(pyogrio.read_dataframe(grids, layer="village"))
    district = pyogrio.read_dataframe(grids, layer="district").rename(
        columns={"code": "XZQDM", "name": "XZQMC"}
    )[["XZQDM", "XZQMC", "geometry"]]
    farmland = pyogrio.read_dataframe(sample / "farmland.gpkg")
    dltb = _dltb(farmland, _extent(sample))
    yjjbnt = _yjjbnt(farmland)
    approvals = _approvals(pyogrio.read_dataframe(sample / "approvals.gpkg"))
    layers = {
        TOWNSHIP_FILE: townships,
        VILLAGE_FILE: villages,
        DISTRICT_FILE: district,
        DLTB_FILE: dltb,
        YJJBNT_FILE: yjjbnt,
        APPROVALS_FILE: approvals,
    }
    for name, frame in layers.items():
        write_gbk_shapefile(frame, folder / name)
    for tif in sorted((sample / "imagery").glob("*/*.tif")):
        warp_to(tif, folder / "imagery" / tif.parent.name / tif.name, IMAGERY_CRS)
    county = County(folder, _write_config(folder), townships, villages, dltb, yjjbnt, approvals)
    check_county_files(county)
    return county


def _townships(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """XZDM: the 9-digit GB/T 10114 code (the sample's 12-digit one without its ``000``)."""
    assert frame["code"].str.endswith("000").all(), frame["code"]
    return gpd.GeoDataFrame(
        {"XZDM": frame["code"].str[:9], "XZMC": frame["name"], "FZR": frame["person"]},
        geometry=frame.geometry.values,
        crs=frame.crs,
    )


def _villages(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """CJDM: 12-digit village codes; XZDM: their township's 9-digit code."""
    return gpd.GeoDataFrame(
        {
            "CJDM": frame["code"],
            "CJMC": frame["name"],
            "XZDM": frame["township_code"].str[:9],
            "FZR": frame["person"],
        },
        geometry=frame.geometry.values,
        crs=frame.crs,
    )


def _extent(sample: Path) -> shapely.Polygon:
    """The imaged area (union of the first epoch's tile footprints) in :data:`CRS`."""
    boxes = []
    for tif in sorted((sample / "imagery" / "2016").glob("*.tif")):
        with rasterio.open(tif) as src:
            boxes.append(shapely.box(*src.bounds))
    return shapely.union_all(boxes)


def _dltb(farmland: gpd.GeoDataFrame, extent: shapely.Polygon) -> gpd.GeoDataFrame:
    """A wall-to-wall 三调 layer: the sample's crop parcels, every fifth relabelled 0102 and
    every fifth (another) 0201 or 0301, and the rest of the scene cut into pieces coded 0702,
    1003, 0301 and 0201 in turn."""
    codes = farmland["dlbm"].to_numpy(dtype=object).copy()
    i = np.arange(len(codes))
    codes[i % 5 == 2] = "0102"
    codes[i % 10 == 4] = "0201"
    codes[i % 10 == 9] = "0301"
    rest = shapely.difference(extent, shapely.union_all(farmland.geometry.values))
    xmin, ymin, xmax, ymax = extent.bounds
    xm, ym = (xmin + xmax) / 2, (ymin + ymax) / 2
    quarters = [
        shapely.box(xmin, ymin, xm, ym),
        shapely.box(xm, ymin, xmax, ym),
        shapely.box(xmin, ym, xm, ymax),
        shapely.box(xm, ym, xmax, ymax),
    ]
    pieces = [shapely.intersection(rest, q) for q in quarters]
    rest_codes = ["0702", "1003", "0301", "0201"]
    geoms = [*farmland.geometry.values, *pieces]
    all_codes = [*codes, *rest_codes]
    return gpd.GeoDataFrame(
        {
            "BSM": [f"DLTB{k + 1:06d}" for k in range(len(geoms))],
            "DLBM": all_codes,
            "DLMC": [LAND_USE_NAMES[c] for c in all_codes],
        },
        geometry=shapely.make_valid(np.asarray(geoms, dtype=object)),
        crs=farmland.crs,
    )


def _yjjbnt(farmland: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Permanent basic farmland: the sample's parcels flagged basic, in a layer of their own."""
    basic = farmland[farmland["basic"] == 1].reset_index(drop=True)
    return gpd.GeoDataFrame(
        {
            "JBNTTBBH": [f"JB{k + 1:05d}" for k in range(len(basic))],
            "DLBM": basic["dlbm"].to_numpy(),
            "BZ": ["永久基本农田"] * len(basic),
        },
        geometry=basic.geometry.values,
        crs=farmland.crs,
    )


def _approvals(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """PZWH: the document number (批准文号); PZRQ: the approval date as text; YDLX: the kind."""
    return gpd.GeoDataFrame(
        {
            "PZWH": frame["doc_no"],
            "PZRQ": [str(d)[:10] for d in frame["approved_on"]],
            "YDLX": frame["kind"],
        },
        geometry=frame.geometry.values,
        crs=frame.crs,
    )


def write_gbk_shapefile(frame: gpd.GeoDataFrame, path: Path) -> Path:
    """Write ``frame`` as a GBK Shapefile the way bureau software leaves it: no ``.cpg`` and
    the DBF language byte 0, so nothing in the files says which encoding the text is in."""
    pyogrio.write_dataframe(frame, path, encoding=ENCODING)
    path.with_suffix(".cpg").unlink(missing_ok=True)
    dbf = path.with_suffix(".dbf")
    with dbf.open("r+b") as f:
        f.seek(LDID_OFFSET)
        f.write(b"\x00")
    return path


def warp_to(source: Path, target: Path, crs: str) -> Path:
    """Reproject one GeoTIFF into ``crs`` (nearest neighbour: reflectances are not blended with
    nodata along the rotated edges), keeping its bands, data type and nodata."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(source) as src:
        transform, width, height = calculate_default_transform(
            src.crs, crs, src.width, src.height, *src.bounds
        )
        profile = src.profile.copy()
        profile.update(crs=crs, transform=transform, width=width, height=height)
        with rasterio.open(target, "w", **profile) as dst:
            for band in range(1, src.count + 1):
                reproject(
                    rasterio.band(src, band),
                    rasterio.band(dst, band),
                    dst_transform=transform,
                    dst_crs=crs,
                    src_nodata=src.nodata,
                    dst_nodata=src.nodata,
                    resampling=Resampling.nearest,
                )
    return target


def _write_config(folder: Path) -> Path:
    """config.yaml for the fixture: the bundled detect/report sections, the county's layers
    with their own field names and no ``encoding`` key (detection must find GBK)."""
    bundled = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    raw = {
        "area": {
            "name": "青宁县（合成）",
            "county_code": "130609",
            "crs": CRS,
            "resolution_m": 2.0,
        },
        "imagery": {
            "epochs": {label: [f"imagery/{label}/*.tif"] for label in bundled["imagery"]["epochs"]},
            "bands": bundled["imagery"]["bands"],
            "nodata": 0,
        },
        "layers": {
            "township": {
                "path": TOWNSHIP_FILE,
                "code_field": "XZDM",
                "name_field": "XZMC",
                "person_field": "FZR",
            },
            "village": {
                "path": VILLAGE_FILE,
                "code_field": "CJDM",
                "name_field": "CJMC",
                "township_field": "XZDM",
                "person_field": "FZR",
            },
            "district": {"path": DISTRICT_FILE, "code_field": "XZQDM", "name_field": "XZQMC"},
            "approvals": {"path": APPROVALS_FILE, "ref_field": "PZWH"},
            "farmland": {"path": DLTB_FILE, "code_field": "DLBM", "codes": list(FARMLAND_CODES)},
            "basic_farmland": {"path": YJJBNT_FILE},
        },
        "detect": bundled["detect"],
        "assign": bundled["assign"],
        "report": bundled["report"],
        "export": {"dossiers": False},  # drawn in the dossier tests; seconds per run here
        "workspace": "out",
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- self-check
def check_county_files(county: County) -> None:
    """Assert the fixture's files are what they claim: every Shapefile without ``.cpg``, with
    language byte 0 and its Chinese text as GBK bytes (not UTF-8) in the DBF; the imagery in
    EPSG:4490 degrees."""
    texts = {
        TOWNSHIP_FILE: county.townships["XZMC"],
        VILLAGE_FILE: county.villages["CJMC"],
        DLTB_FILE: county.dltb["DLMC"],
        YJJBNT_FILE: county.yjjbnt["BZ"],
        APPROVALS_FILE: county.approvals["PZWH"],
    }
    for name in SHAPEFILES:
        path = county.folder / name
        assert path.exists() and not path.with_suffix(".cpg").exists(), path
        dbf = path.with_suffix(".dbf").read_bytes()
        assert dbf[LDID_OFFSET] == 0, (name, dbf[LDID_OFFSET])
        for text in texts.get(name, ()):
            assert text.encode(ENCODING) in dbf, (name, text)
            assert text.encode("utf-8") not in dbf, (name, text)
    tifs = sorted((county.folder / "imagery").glob("*/*.tif"))
    assert len(tifs) >= 2, tifs
    for tif in tifs:
        with rasterio.open(tif) as src:
            assert src.crs.to_epsg() == 4490 and src.crs.is_geographic, (tif, src.crs)


# --------------------------------------------------------------------------- field returns
FILLED_KINDS = ("restored", "legal", "blank", "half_left", "village", "false_change")
"""Row kinds of a township's return, in turn: what the team wrote in each row. ``blank``
rows keep only the pre-filled columns; ``village`` rows are blank too but a village team's
CSV (imported first) fills them, so a blank township row must not undo it."""

PREFILLED = 4
"""The first four columns of a township return are pre-filled from the template."""


@dataclass(frozen=True)
class TownshipReturn:
    """How one township fills its template: file name, headers (synonyms of the template's),
    the unit of its remaining-area column, and the word it writes for "rectified"."""

    file: str
    headers: tuple[str, ...]
    in_mu: bool
    done: str
    done_method: str


XLS_RETURN = TownshipReturn(
    "town.xls",
    ("图斑号", "行政村代码", "行政村名称", "面积(亩)", "认定结果", "整改情况", "剩余面积(亩)",
     "核查日期", "核查人", "备注"),
    in_mu=True, done="已拆除复耕", done_method="demolished_restored",
)  # fmt: skip
XLSX_RETURN = TownshipReturn(
    "town.xlsx",
    ("图斑编号", "行政村代码", "行政村名称", "面积(亩)", "核实认定", "整改措施", "剩余未整改面积",
     "核查日期", "核查人", "备注"),
    in_mu=False, done="已补办", done_method="legalized",
)  # fmt: skip
"""The second township writes areas in m² under a header without a unit (the default)."""
CSV_HEADERS = ("图斑号", "行政村名称", "核查结果", "整改方式", "未整改面积(平方米)", "核查日期",
               "核查人")  # fmt: skip
CSV_FILE = "village.csv"


@dataclass(frozen=True)
class Returns:
    """The return files and what importing them must give, indexed by patch id: ``verdict``,
    ``rect_method`` (None: none), ``remaining_m2`` (NaN: none), ``source`` (the file whose
    row sets them, ``""`` for a patch left blank), ``township_code`` and ``kind``."""

    xls: Path
    xlsx: Path
    csv: Path
    expected: pd.DataFrame


def write_returns(patches: pd.DataFrame, folder: Path) -> Returns:
    """Returns for the first registry run.

    ``patches`` holds ``patch_id``, ``township_code``, ``village_code``, ``village_name`` and
    ``area_m2``. The first township answers in ``.xls`` (:data:`XLS_RETURN`), the second in
    ``.xlsx`` (:data:`XLSX_RETURN`); each row's kind comes from :data:`FILLED_KINDS`. The GBK
    CSV is a village team's return for the ``village`` rows of both, plus one blank row.
    """
    folder.mkdir(parents=True, exist_ok=True)
    towns = sorted(c for c in patches["township_code"].unique() if c != "unassigned")
    assert len(towns) >= 2, towns
    frames = []
    for code in towns[:2]:
        rows = patches[patches["township_code"] == code]
        rows = rows.sort_values(["village_code", "patch_id"]).reset_index(drop=True)
        rows["kind"] = [FILLED_KINDS[i % len(FILLED_KINDS)] for i in range(len(rows))]
        assert "village" in set(rows["kind"]), f"fixture: township {code} has too few patches"
        frames.append(rows)
    styles = (XLS_RETURN, XLSX_RETURN)
    expected = pd.concat([_expected(r, s) for r, s in zip(frames, styles)])
    expected = expected.set_index("patch_id")
    village = pd.concat(frames)
    village = village[village["kind"] == "village"]
    for i, pid in enumerate(village["patch_id"]):  # what the village team wrote (_village_rows)
        expected.loc[pid, ["verdict", "source"]] = ["illegal" if i == 0 else "legal", CSV_FILE]
        expected.loc[pid, "rect_method"] = "demolished_restored" if i == 0 else None
        expected.loc[pid, "remaining_m2"] = 0.0 if i == 0 else np.nan
    returns = Returns(
        folder / XLS_RETURN.file, folder / XLSX_RETURN.file, folder / CSV_FILE, expected
    )
    _write_xls(_township_rows(frames[0], XLS_RETURN), returns.xls)
    _township_rows(frames[1], XLSX_RETURN).to_excel(returns.xlsx, index=False)
    blank = frames[0][frames[0]["kind"] == "blank"].head(1)
    _village_rows(village, blank).to_csv(returns.csv, index=False, encoding=ENCODING)
    check_return_files(returns)
    return returns


def check_return_files(returns: Returns) -> None:
    """Assert the returns are what they claim: an Excel 97-2003 (OLE2) ``.xls``, an OOXML
    (zip) ``.xlsx`` and a CSV whose Chinese text is GBK, not UTF-8."""
    assert returns.xls.read_bytes()[:8] == bytes.fromhex("D0CF11E0A1B11AE1"), returns.xls
    assert returns.xlsx.read_bytes()[:2] == b"PK", returns.xlsx
    data = returns.csv.read_bytes()
    assert CSV_HEADERS[0].encode(ENCODING) in data
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")


def _township_rows(rows: pd.DataFrame, style: TownshipReturn) -> pd.DataFrame:
    """A township's filled-in template: pre-filled id, village, area (亩), then what the team
    wrote for each row kind (empty cells where nothing was written)."""
    filled = [_filled(kind, area, style) for kind, area in zip(rows["kind"], rows["area_m2"])]
    out = pd.DataFrame(filled, columns=list(style.headers[PREFILLED:]))
    prefilled = (rows["patch_id"], rows["village_code"], rows["village_name"])
    for j, values in enumerate(prefilled):
        out.insert(j, style.headers[j], values.to_numpy())
    out.insert(3, style.headers[3], np.round(rows["area_m2"].to_numpy() / MU_M2, 2))
    return out.where(out != "", None)


def _filled(kind: str, area_m2: float, style: TownshipReturn) -> list:
    """The six columns a team fills: verdict, method, remaining, date, inspector, note."""
    half = _half(area_m2, style)
    return {
        "restored": ["违法", style.done, 0, CHECKED_ON, INSPECTOR, "已整改"],
        "legal": ["合法", "", "", CHECKED_ON, INSPECTOR, ""],
        "half_left": ["违法", "", half, CHECKED_ON, INSPECTOR, "部分拆除"],
        "false_change": ["伪变化", "", "", CHECKED_ON, INSPECTOR, "大棚季节变化"],
    }.get(kind, [""] * 6)


def _half(area_m2: float, style: TownshipReturn) -> float:
    """Half the patch, as the team writes it: 亩 or m², two decimals."""
    return round(area_m2 / 2 / MU_M2, 2) if style.in_mu else round(area_m2 / 2, 2)


def _expected(rows: pd.DataFrame, style: TownshipReturn) -> pd.DataFrame:
    """What each row of a township return must give (``village`` rows: pending, for now)."""
    verdicts = {"restored": "illegal", "legal": "legal", "half_left": "illegal"}
    verdicts["false_change"] = "false_change"
    unit = MU_M2 if style.in_mu else 1.0
    half = np.asarray([_half(a, style) * unit for a in rows["area_m2"]])
    kind = rows["kind"]
    return pd.DataFrame(
        {
            "patch_id": rows["patch_id"].to_numpy(),
            "township_code": rows["township_code"].to_numpy(),
            "kind": kind.to_numpy(),
            "verdict": kind.map(verdicts).fillna("pending").to_numpy(),
            "rect_method": np.where(kind == "restored", style.done_method, None),
            "remaining_m2": np.select(
                [kind == "restored", kind == "half_left"], [0.0, half], np.nan
            ),
            "source": np.where(kind.isin(list(verdicts)), style.file, ""),
        }
    )


def _village_rows(village: pd.DataFrame, blank: pd.DataFrame) -> pd.DataFrame:
    """The village team's CSV: first ``village`` row illegal and demolished (已拆除, 0 m²
    left), the others legal, then one row left blank."""
    rows = []
    for i, (pid, name) in enumerate(zip(village["patch_id"], village["village_name"])):
        if i == 0:
            rows.append([pid, name, "违法", "已拆除", 0, CHECKED_ON, "李志强"])
        else:
            rows.append([pid, name, "合法", "", "", CHECKED_ON, "李志强"])
    for pid, name in zip(blank["patch_id"], blank["village_name"]):
        rows.append([pid, name, "", "", "", "", ""])
    return pd.DataFrame(rows, columns=list(CSV_HEADERS))


def _write_xls(frame: pd.DataFrame, path: Path) -> Path:
    """Excel 97-2003 through xlwt (pandas no longer writes ``.xls``); numbers stay numbers."""
    import xlwt

    book = xlwt.Workbook(encoding="utf-8")
    sheet = book.add_sheet("核查结果")
    for j, header in enumerate(frame.columns):
        sheet.write(0, j, header)
    for i, row in enumerate(frame.itertuples(index=False), start=1):
        for j, value in enumerate(row):
            if not pd.isna(value):
                sheet.write(i, j, value.item() if isinstance(value, np.generic) else value)
    book.save(str(path))
    return path
