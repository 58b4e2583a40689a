"""The workspace's chip cache (``{workspace}/chips/{patch_id}.png``): the export writes every
chip there once; the reports' maps link them and the dossiers embed them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import geopandas as gpd

from pipeline.atomic import atomic_write_bytes
from pipeline.config import Config
from pipeline.outputs.chips import read_chips
from pipeline.schema import P

log = logging.getLogger(__name__)


def cache_chips(folder: Path, chips: Mapping[str, bytes]) -> None:
    """Write ``chips`` into ``folder``; a file is only rewritten when its content changed."""
    for pid, png in chips.items():
        path = folder / f"{pid}.png"
        if not path.exists() or path.read_bytes() != png:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, png)


def cached_chips(cfg: Config, folder: Path, patches: gpd.GeoDataFrame) -> dict[str, bytes]:
    """The chips of ``patches``: from ``folder`` where cached, the others read from the
    imagery (and cached). Empty when ``export.chips`` is off."""
    if not cfg.export.chips:
        return {}
    out: dict[str, bytes] = {}
    for pid in map(str, patches[P.PATCH_ID]):
        path = folder / f"{pid}.png"
        if path.is_file():
            out[pid] = path.read_bytes()
    missing = patches[~patches[P.PATCH_ID].astype(str).isin(list(out))]
    if len(missing):
        fresh = read_chips(cfg, missing)
        cache_chips(folder, fresh)
        out.update(fresh)
    return out
