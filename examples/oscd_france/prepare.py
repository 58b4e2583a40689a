"""Build the landwatch grid GeoPackage for a set of French départements.

Reads the IGN Admin Express 2018 GeoJSON files under ``$LANDWATCH_DATA/admin/france/<dept>/``
(EPSG:4326, properties ``code`` = INSEE code and ``nom`` = name) and writes one GeoPackage with

- layer ``township``: the cantons (canton → township level);
- layer ``village``: the communes (commune → village level), *without* a township field:
  landwatch gives every commune the canton holding most of its area (French cantons do not
  nest communes exactly; a large commune such as Bordeaux is split among several cantons).

Codes are written as text (``"33063"``, never ``33063``). A département without cantons
(Paris since 2015) falls back to its arrondissement(s) as township level (Paris: one
arrondissement, code ``"75001"``); the fallback is logged.

Usage::

    python examples/oscd_france/prepare.py                 # both example grids into work/
    python examples/oscd_france/prepare.py --depts 33 --out work/bordeaux/grids.gpkg

Nothing from the data folder is copied into the repository: the output goes to
``examples/oscd_france/work/`` (git-ignored) unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

log = logging.getLogger("oscd_france.prepare")

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parents[1]
DATA_ENV = "LANDWATCH_DATA"
"""Environment variable overriding the data folder (default ``../shared/data`` from the
project root)."""
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data"
WORK_DIR = HERE / "work"

SOURCE_CODE, SOURCE_NAME = "code", "nom"
"""Field names in the Admin Express GeoJSON files."""
OUT_CODE, OUT_NAME = "code", "name"
"""Field names written to the GeoPackage (``layers.*.code_field`` / ``name_field``)."""
TOWNSHIP_LAYER, VILLAGE_LAYER = "township", "village"
GRID_CRS = "EPSG:4326"

EXAMPLES: dict[str, tuple[str, ...]] = {
    "bordeaux": ("33",),
    "paris": ("75", "92", "94"),
}
"""Départements per example city: the OSCD Paris footprint spans Paris (75), Montrouge and
Malakoff (92), Gentilly, Arcueil, Le Kremlin-Bicêtre … (94)."""


# --------------------------------------------------------------------------- pure
def build_grid(
    communes: gpd.GeoDataFrame, townships: gpd.GeoDataFrame
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The township and village layers from communes and cantons (or their fallback).

    Parameters
    ----------
    communes, townships
        Admin Express features with ``code`` and ``nom`` (any CRS, the same for both).

    Returns
    -------
    townships, villages
        New GeoDataFrames with text ``code`` and ``name`` and the geometry, sorted by code.
        Villages have no township field (landwatch assigns it by majority overlap).

    Notes
    -----
    Codes are cast to text and stripped; they are never parsed as numbers (leading zeros of
    départements 01–09 must survive).
    """
    return _units(townships), _units(communes)


def townships_from_communes(
    communes: gpd.GeoDataFrame, units: gpd.GeoDataFrame
) -> gpd.GeoDataFrame:
    """Township-level units with the codes and names of ``units`` and the outline of the
    communes inside them.

    Each commune goes to the unit containing its representative point; the unit's polygon is
    the union of its communes. Returns ``code``, ``nom`` and the geometry (CRS of
    ``communes``); units without a commune are dropped.

    Notes
    -----
    The Admin Express files are simplified one file at a time, so a unit's own polygon
    (Paris's arrondissement) does not share its boundary with the neighbouring
    départements' cantons: used as is it overlaps them by up to 0.26 km² (``overlap``
    defects that stop a strict run). The union of the communes has the communes' boundary,
    which the neighbours' communes match.
    """
    points = gpd.GeoDataFrame(
        {"_row": range(len(communes))},
        geometry=communes.geometry.representative_point().values,
        crs=communes.crs,
    )
    hits = gpd.sjoin(points, units[[SOURCE_CODE, SOURCE_NAME, "geometry"]], predicate="within")
    hits = hits.drop_duplicates("_row")
    members = gpd.GeoDataFrame(
        {SOURCE_CODE: hits[SOURCE_CODE].to_numpy(), SOURCE_NAME: hits[SOURCE_NAME].to_numpy()},
        geometry=communes.geometry.values[hits["_row"].to_numpy()],
        crs=communes.crs,
    )
    return members.dissolve(by=[SOURCE_CODE, SOURCE_NAME], as_index=False)


def _units(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    out = gpd.GeoDataFrame(
        {
            OUT_CODE: gdf[SOURCE_CODE].astype(str).str.strip().astype(object),
            OUT_NAME: gdf[SOURCE_NAME].astype(str).str.strip().astype(object),
        },
        geometry=gdf.geometry.values,
        crs=gdf.crs,
    )
    return out.sort_values(OUT_CODE, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- I/O
def data_dir() -> Path:
    """The shared data folder: ``$LANDWATCH_DATA`` or ``../shared/data`` beside the project."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA)


def dept_folder(france: Path, dept: str) -> Path:
    """The folder of département ``dept`` (``33`` → ``33-gironde``)."""
    found = sorted(france.glob(f"{dept}-*"))
    if not found:
        have = ", ".join(sorted(p.name for p in france.iterdir() if p.is_dir())) or "none"
        raise FileNotFoundError(
            f"no folder for département {dept!r} under {france} (found: {have}); "
            f"set {DATA_ENV} to the data folder or pick one of these départements"
        )
    return found[0]


def read_dept(france: Path, dept: str) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Communes and township-level units (cantons, else arrondissements) of one département."""
    folder = dept_folder(france, dept)
    communes = _read(folder, "communes")
    townships = _read(folder, "cantons")
    if len(townships) == 0:
        log.warning(
            "département %s has no cantons (Paris has none since 2015): its arrondissements "
            "are the township level, drawn as the union of their communes",
            dept,
        )
        townships = townships_from_communes(communes, _read(folder, "arrondissements"))
    return communes, townships


def _read(folder: Path, kind: str) -> gpd.GeoDataFrame:
    path = next(iter(sorted(folder.glob(f"{kind}-*.geojson"))), None)
    if path is None:
        raise FileNotFoundError(f"no {kind}-*.geojson in {folder}")
    gdf = pyogrio.read_dataframe(path)
    if len(gdf) and not {SOURCE_CODE, SOURCE_NAME} <= set(gdf.columns):
        raise ValueError(
            f"{path}: expected fields {SOURCE_CODE!r} and {SOURCE_NAME!r}, found "
            f"{[c for c in gdf.columns if c != 'geometry']}"
        )
    if len(gdf) == 0:  # an empty GeoJSON has no fields at all
        gdf = gpd.GeoDataFrame({SOURCE_CODE: [], SOURCE_NAME: []}, geometry=[], crs=GRID_CRS)
    return gdf.to_crs(GRID_CRS)


def prepare_grid(depts: Sequence[str], out: Path, *, data: Path | None = None) -> Path:
    """Write the ``township`` and ``village`` layers for ``depts`` to the GeoPackage ``out``.

    Returns the path written. The file is replaced (written to a temporary name first).
    """
    france = (data or data_dir()) / "admin" / "france"
    if not france.is_dir():
        raise FileNotFoundError(
            f"{france} does not exist: expected the shared data folder with admin/france/; "
            f"set {DATA_ENV} or pass --data"
        )
    parts = [read_dept(france, d) for d in depts]
    communes = pd.concat([c for c, _ in parts], ignore_index=True)
    cantons = pd.concat([t for _, t in parts], ignore_index=True)
    townships, villages = build_grid(communes, cantons)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.gpkg")
    tmp.unlink(missing_ok=True)
    townships.to_file(tmp, layer=TOWNSHIP_LAYER, driver="GPKG", engine="pyogrio")
    villages.to_file(tmp, layer=VILLAGE_LAYER, driver="GPKG", engine="pyogrio")
    tmp.replace(out)
    log.info(
        "%s: %d townships, %d villages (départements %s)",
        out,
        len(townships),
        len(villages),
        ", ".join(depts),
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depts", nargs="+", help="département codes, e.g. 33 (default: both)")
    parser.add_argument("--out", type=Path, help="output GeoPackage (with --depts)")
    parser.add_argument("--data", type=Path, help=f"data folder (default ${DATA_ENV})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.depts:
            out = args.out or WORK_DIR / f"grid_{'_'.join(args.depts)}.gpkg"
            prepare_grid(args.depts, out, data=args.data)
        else:
            for city, depts in EXAMPLES.items():
                prepare_grid(depts, WORK_DIR / city / "grids.gpkg", data=args.data)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
