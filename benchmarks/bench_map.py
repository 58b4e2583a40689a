"""Benchmark: size and build time of the interactive map (``map.html``) for a district of N
patches.

Reads the registry and the grid of a workspace (default: the demo's ``config.yaml`` after
``make demo``) and repeats its patches, shifted by random offsets, until there are N of
them (default 10,000), then builds the page as the report does (Bokeh's JavaScript inline,
the CJK font subset embedded, geometries simplified, every patch linking its chip and its
dossier). Nothing is written.

Usage::

    python benchmarks/bench_map.py [--config config.yaml] [--patches 10000]

The last line is machine-readable: ``map_patches=<n> megabytes=<mb> seconds=<s>``.
"""

from __future__ import annotations

import argparse
import time

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.config import load_config
from pipeline.ops.inputs import load_grids_for
from pipeline.ops.workspace import Workspace
from pipeline.outputs.web_map import map_html
from pipeline.registry.io.registry_file import load_registry
from pipeline.schema import P


def district_of(patches: gpd.GeoDataFrame, n: int, seed: int = 0) -> gpd.GeoDataFrame:
    """``n`` patches: copies of ``patches`` shifted by up to 2 km, with new ids."""
    rng = np.random.default_rng(seed)
    copies = []
    for k in range(n // len(patches) + 1):
        copy = patches.copy()
        dx, dy = rng.uniform(-2000, 2000, 2)
        copy["geometry"] = copy.geometry.translate(dx, dy)
        copy[P.PATCH_ID] = [f"{pid}{k:04d}" for pid in copy[P.PATCH_ID]]
        copies.append(copy)
    return gpd.GeoDataFrame(pd.concat(copies).iloc[:n], crs=patches.crs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--patches", type=int, default=10_000)
    args = parser.parse_args()
    cfg = load_config(args.config)
    state = load_registry(Workspace(cfg.workspace).registry, cfg.area.crs)
    if state.patches.empty:
        raise SystemExit("the registry has no patch: run `make demo` first")
    grids = load_grids_for(cfg)
    for n in sorted({len(state.patches), args.patches}):
        patches = state.patches if n == len(state.patches) else district_of(state.patches, n)
        start = time.perf_counter()
        ids = set(patches[P.PATCH_ID].astype(str))  # every patch with a chip and a dossier
        page = map_html(patches, grids.townships, grids.villages, title="map", chips=ids,
                        chip_href="../../chips", dossiers=ids, dossier_href="../../dossiers")  # fmt: skip
        seconds = time.perf_counter() - start
        megabytes = len(page.encode("utf-8")) / 1e6
        print(f"map_patches={n} megabytes={megabytes:.2f} seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
