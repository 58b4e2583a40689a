"""Builders of Shapefiles as county bureaus hand them over, and of a small config around them.

``write_shapefile`` writes text in a chosen encoding and then makes the file look the way it
arrives: no ``.cpg`` (or one saying what the caller wants), and a chosen DBF language byte.
``write_county`` writes a tiny county: GBK grid layers without ``.cpg`` and with 9-digit
township codes, a 三调 DLTB with mixed land-use codes, and two epochs of 4-band imagery, plus a
config.yaml naming them.

The area (EPSG:4548, on the central meridian, so planar areas are ellipsoidal ones to well
under 0.1 %)::

    y=200 +---------+---------+---------+---------+
          | 东村     | 西村     | 南庄村   | 北庄村   |
      y=0 +---------+---------+---------+---------+
          x=0      100       200       300       400
          |<---- 青宁街道 ---->|<----- 河西乡 ----->|
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyogrio
import shapely
import yaml

from tests.rasters import grid_transform, scene, write_tif

CRS = "EPSG:4548"
X0, Y0 = 500_000.0, 4_000_000.0
TOWN_A, TOWN_B = "130609001", "130609100"
"""Township codes in the 9-digit GB/T 10114 form."""
VILLAGES = {
    "130609001001": ("东村", TOWN_A, 0),
    "130609001002": ("西村", TOWN_A, 100),
    "130609100001": ("南庄村", TOWN_B, 200),
    "130609100002": ("北庄村", TOWN_B, 300),
}
"""Village code -> (name, township code, x of its west edge)."""
DLTB = [("0101", "水田"), ("0103", "旱地"), ("0201", "果园"), ("0301", "乔木林地"),
        ("0702", "农村宅基地"), ("1003", "公路用地")]  # fmt: skip
"""三调 land-use parcels of the DLTB layer, west to east (50 × 200 m each): two are 耕地."""
CROPLAND = ("0101", "0102", "0103")
NEW_ROOF = (40, 41, 12)
"""(row, col, size) in pixels of 2 m of the roof built by 2017: x 82-106 m, y 80-104 m — three
quarters in 东村 and on 旱地 (0103), a quarter in 西村 on 果园 (0201). It covers 0.7 % of the
scene: the default detector (novelty) takes a transition covering a few per cent of a scene
as one of its common ones, which new construction never is in a real district."""


def box(x1: float, y1: float, x2: float, y2: float) -> shapely.Polygon:
    return shapely.box(X0 + x1, Y0 + y1, X0 + x2, Y0 + y2)


def write_shapefile(
    path: Path,
    frame: gpd.GeoDataFrame,
    *,
    encoding: str = "GBK",
    cpg: str | None = None,
    ldid: int = 0,
) -> Path:
    """Write ``frame`` with its text in ``encoding``, then leave a ``.cpg`` only when ``cpg``
    gives its content, and set the DBF language byte to ``ldid`` (0: says nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = pyogrio.get_gdal_config_option("SHAPE_ENCODING")
    pyogrio.set_gdal_config_options({"SHAPE_ENCODING": encoding})
    try:
        pyogrio.write_dataframe(frame, path, encoding=encoding)
    finally:
        pyogrio.set_gdal_config_options({"SHAPE_ENCODING": previous})
    path.with_suffix(".cpg").unlink(missing_ok=True)
    if cpg is not None:
        path.with_suffix(".cpg").write_text(cpg, encoding="ascii")
    dbf = path.with_suffix(".dbf")
    data = bytearray(dbf.read_bytes())
    data[29] = ldid
    dbf.write_bytes(bytes(data))
    return path


def townships_frame() -> gpd.GeoDataFrame:
    """The two townships, 9-digit codes in XZDM, names in XZMC."""
    return gpd.GeoDataFrame(
        {"XZDM": [TOWN_A, TOWN_B], "XZMC": ["青宁街道", "河西乡"]},
        geometry=[box(0, 0, 200, 200), box(200, 0, 400, 200)],
        crs=CRS,
    )


def villages_frame() -> gpd.GeoDataFrame:
    """The four villages; their township field holds the 12-digit form (``...000``)."""
    return gpd.GeoDataFrame(
        {
            "CJDM": list(VILLAGES),
            "CJMC": [v[0] for v in VILLAGES.values()],
            "XZDM": [v[1] + "000" for v in VILLAGES.values()],
        },
        geometry=[box(v[2], 0, v[2] + 100, 200) for v in VILLAGES.values()],
        crs=CRS,
    )


def dltb_frame(*, numeric: bool = False) -> gpd.GeoDataFrame:
    """The DLTB parcels; ``numeric`` stores DLBM as numbers (0101 becomes 101)."""
    codes = [int(c) if numeric else c for c, _ in DLTB]
    return gpd.GeoDataFrame(
        {"DLBM": codes, "DLMC": [name for _, name in DLTB]},
        geometry=[box(50 * i, 0, 50 * (i + 1), 200) for i in range(len(DLTB))],
        crs=CRS,
    )


def write_county(folder: Path, *, townships: gpd.GeoDataFrame | None = None) -> Path:
    """The tiny county in ``folder`` (GBK Shapefiles without .cpg, imagery) and its
    config.yaml; ``townships`` replaces the township layer. Returns the config path."""
    write_shapefile(
        folder / "XZQ_XZ.shp", townships if townships is not None else townships_frame()
    )
    write_shapefile(folder / "XZQ_CJ.shp", villages_frame())
    write_shapefile(folder / "DLTB.shp", dltb_frame())
    for label, seed, squares in (("2016", 1, ()), ("2017", 2, (NEW_ROOF,))):
        write_tif(
            folder / "imagery" / label / "scene.tif",
            scene((100, 200), squares, seed=seed),
            grid_transform(2.0, X0, Y0 + 200),
            crs=CRS,
        )
    raw = {
        "area": {"name": "小县", "county_code": "130609", "crs": CRS, "resolution_m": 2.0},
        "imagery": {
            "epochs": {"2016": ["imagery/2016/*.tif"], "2017": ["imagery/2017/*.tif"]},
            "bands": {"blue": 1, "green": 2, "red": 3, "nir": 4},
            "nodata": 0,
        },
        "layers": {
            "township": {"path": "XZQ_XZ.shp", "code_field": "XZDM", "name_field": "XZMC"},
            "village": {
                "path": "XZQ_CJ.shp",
                "code_field": "CJDM",
                "name_field": "CJMC",
                "township_field": "XZDM",
            },
            "farmland": {"path": "DLTB.shp", "code_field": "DLBM", "codes": list(CROPLAND)},
        },
        "export": {"chips": False, "dossiers": False},
        "workspace": "out",
    }
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return config


def dbf_text_fields(dbf: bytes, encoding: str) -> dict[str, list[str]]:
    """The text fields of a DBF decoded with ``encoding`` — an independent little reader, so a
    test of the writer does not trust the writer's own reading."""
    n = int.from_bytes(dbf[4:8], "little")
    header = int.from_bytes(dbf[8:10], "little")
    size = int.from_bytes(dbf[10:12], "little")
    out, offset, pos = {}, 1, 32
    while dbf[pos] != 0x0D:
        name = dbf[pos : pos + 11].split(b"\x00", 1)[0].decode("ascii")
        kind, width = chr(dbf[pos + 11]), dbf[pos + 16]
        if kind == "C":
            records = (dbf[header + i * size :][offset : offset + width] for i in range(n))
            out[name] = [r.rstrip(b" ").decode(encoding) for r in records]
        offset, pos = offset + width, pos + 32
    return out
