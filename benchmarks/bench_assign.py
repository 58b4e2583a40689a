"""Benchmark: assign_patches and validate_grid on the real Taiwan village grid.

Reads ``admin/taiwan/twVillage1982.geojson`` (and ``twTown1982.geojson`` as the township
layer) from the shared data folder, reprojects to EPSG:3826 (TWD97 / TM2 zone 121, metres),
validates the grid (it has real defects: empty slivers, invalid polygons, duplicate codes),
then assigns random small patches lying inside the villages, in majority and split mode.

Usage::

    python benchmarks/bench_assign.py [--villages PATH] [--towns PATH] [--patches 100000]

The data folder defaults to ``../shared/data`` beside the project (``$LANDWATCH_DATA``
overrides it). Without the data the script says so and exits 0. Nothing is written.
The last line is machine-readable: ``assign_patches=<patches> villages=<n> seconds=<s>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from pipeline.overlay.admin_grid import codes_as_text, validate_grid
from pipeline.overlay.assign import assign_patches
from pipeline.schema import G, P

ROOT = Path(__file__).resolve().parents[1]
CRS = "EPSG:3826"
# twVillage1982: VILLAGEID (7 or 10 digits), VILLAGENAM; twTown1982: TOWNID, TOWNNAME.
# The village layer has no township code field, so townships come from majority overlap.
VILLAGE_FIELDS = {"code": "VILLAGEID", "name": "VILLAGENAM"}
TOWN_FIELDS = {"code": "TOWNID", "name": "TOWNNAME"}
CODE_PATTERN = r"^\d{4}(\d{3})?(\d{3})?$"


def main(argv: list[str] | None = None) -> int:
    data = Path(os.environ.get("LANDWATCH_DATA", ROOT.parent / "shared" / "data"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--villages", type=Path, default=data / "admin/taiwan/twVillage1982.geojson"
    )
    parser.add_argument("--towns", type=Path, default=data / "admin/taiwan/twTown1982.geojson")
    parser.add_argument("--patches", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-split", action="store_true", help="skip the split-mode run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if not args.villages.exists() or not args.towns.exists():
        print(f"skipped: {args.villages} or {args.towns} not found (set LANDWATCH_DATA)")
        return 0

    t = time.perf_counter()
    villages = _units(gpd.read_file(args.villages), VILLAGE_FIELDS)
    towns = _units(gpd.read_file(args.towns), TOWN_FIELDS)
    print(
        f"read + reproject: {time.perf_counter() - t:.2f} s "
        f"({len(villages)} village, {len(towns)} township records)"
    )

    t = time.perf_counter()
    towns_ok, villages_ok, issues = validate_grid(towns, villages, code_pattern=CODE_PATTERN)
    t_validate = time.perf_counter() - t
    kinds: dict[str, int] = {}
    for issue in issues:
        kinds[issue.kind] = kinds.get(issue.kind, 0) + 1
    print(
        f"validate_grid: {t_validate:.2f} s, {len(issues)} issues: "
        + ", ".join(f"{k}={n}" for k, n in sorted(kinds.items()))
    )

    patches = _random_patches(villages_ok, args.patches, np.random.default_rng(args.seed))
    t = time.perf_counter()
    out = assign_patches(patches, villages_ok, towns_ok)
    t_assign = time.perf_counter() - t
    multi = int((out[P.VILLAGE_SHARE] < 1).sum())
    unassigned = int((out[P.VILLAGE_CODE] == "unassigned").sum())
    print(
        f"assign_patches (majority): {t_assign:.2f} s for {len(patches)} patches × "
        f"{len(villages_ok)} villages = {len(patches) / t_assign:,.0f} patches/s; "
        f"{multi} across a boundary or gap, {unassigned} unassigned"
    )

    if not args.no_split:
        t = time.perf_counter()
        parts = assign_patches(patches, villages_ok, towns_ok, mode="split")
        print(f"assign_patches (split): {time.perf_counter() - t:.2f} s -> {len(parts)} parts")

    t = time.perf_counter()
    _baseline(patches, villages_ok)
    print(f"baseline geopandas.overlay + groupby max: {time.perf_counter() - t:.2f} s")

    print(f"assign_patches={len(patches)} villages={len(villages_ok)} seconds={t_assign:.3f}")
    return 0


def _units(raw: gpd.GeoDataFrame, fields: dict[str, str]) -> gpd.GeoDataFrame:
    codes, _ = codes_as_text(raw[fields["code"]], CODE_PATTERN)
    return gpd.GeoDataFrame(
        {G.CODE: codes, G.NAME: raw[fields["name"]].fillna("").astype(str), G.PERSON: ""},
        geometry=raw.geometry.values,
        crs=raw.crs,
    ).to_crs(CRS)


def _random_patches(villages: gpd.GeoDataFrame, n: int, rng) -> gpd.GeoDataFrame:
    """``n`` squares of 10–60 m, rotated, centred on random points inside villages."""
    geoms = np.asarray(villages.geometry.values, dtype=object)
    xmin, ymin, xmax, ymax = villages.total_bounds
    tree = shapely.STRtree(geoms)
    centres = np.empty((0, 2))
    while len(centres) < n:
        xy = rng.uniform((xmin, ymin), (xmax, ymax), size=(4 * n, 2))
        hit = np.unique(tree.query(shapely.points(xy), predicate="intersects")[0])
        centres = np.vstack([centres, xy[hit]])
    centres = centres[:n]
    half = rng.uniform(5, 30, n)
    angle = rng.uniform(0, np.pi / 2, n)
    corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)])
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    x = centres[:, :1] + half[:, None] * (corners[:, 0] * cos - corners[:, 1] * sin)
    y = centres[:, 1:] + half[:, None] * (corners[:, 0] * sin + corners[:, 1] * cos)
    polys = shapely.polygons(np.stack([x, y], axis=-1))
    return gpd.GeoDataFrame({P.SCORE: rng.uniform(0, 1, n)}, geometry=polys, crs=CRS)


def _baseline(patches: gpd.GeoDataFrame, villages: gpd.GeoDataFrame) -> None:
    """The naive way: geopandas.overlay, then the largest piece per patch."""
    p = patches.assign(_pid=np.arange(len(patches)))[["_pid", "geometry"]]
    pieces = gpd.overlay(p, villages[[G.CODE, "geometry"]], how="intersection")
    pieces["_a"] = pieces.area
    pieces.sort_values("_a", ascending=False).drop_duplicates("_pid")


if __name__ == "__main__":
    sys.exit(main())
