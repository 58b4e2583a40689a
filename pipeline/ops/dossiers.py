"""Write the patch dossiers into the workspace: ``{workspace}/dossiers/{patch_id}.pdf`` and
``.html`` (the I/O around :mod:`pipeline.outputs.dossier`).

The export stage refreshes the dossier of every patch (the field packages carry them and the
report's map links them); ``landwatch dossier PATCH_ID…`` writes chosen ones. A dossier is
only drawn again when its key changed (``dossiers/manifest.json`` records the key of each
file): a night with ten new field returns redraws ten dossiers, not the district's
thousands. Drawing is spread over the run's workers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import as_completed
from pathlib import Path

import geopandas as gpd
import pandas as pd

from pipeline.atomic import atomic_write_bytes
from pipeline.config import Config
from pipeline.errors import DossierError
from pipeline.ops.chip_cache import cached_chips
from pipeline.ops.executor import make_executor
from pipeline.ops.inputs import load_grids_for
from pipeline.ops.workspace import Workspace
from pipeline.outputs.dossier import (
    MAX_PHOTOS,
    Dossier,
    DossierFiles,
    Images,
    PhotoRef,
    dossier_facts,
    dossier_key,
    with_pictures,
)
from pipeline.outputs.dossier_html import batch_font_css, dossier_html
from pipeline.outputs.dossier_pdf import DossierFont, dossier_font, dossier_pdf, renderer_id
from pipeline.outputs.location_map import location_spec
from pipeline.overlay.admin_grid import Grids
from pipeline.registry.io.registry_file import load_registry
from pipeline.registry.ledger import DATE, ledger
from pipeline.registry.status import patch_status, status_style
from pipeline.registry.store import RegistryState
from pipeline.schema import (
    PHOTO_FILE,
    PHOTO_NAME,
    PHOTO_SHA256,
    PHOTO_TAKEN_AT,
    E,
    EventKind,
    G,
    P,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
"""File in the dossier folder: patch id -> key of the dossier written."""
CHUNK = 24
"""Dossiers drawn per worker task (and sharing one font subset)."""
POOL_FROM_CHUNKS = 4
"""Fewer chunks are drawn in this process: starting the worker pool (a few seconds of
imports) costs more than it saves on a handful of dossiers (about 0.2 s each)."""


def write_dossiers(
    cfg: Config,
    ws: Workspace,
    state: RegistryState,
    grids: Grids,
    *,
    chips: Mapping[str, bytes],
    ids: Iterable[str] | None = None,
) -> dict[str, DossierFiles]:
    """Bring the dossiers of ``ids`` (None: every patch) up to date; their files by id.

    Raises
    ------
    DossierError
        An id is not in the registry (nothing is written), or the font is missing.
    """
    patches = _selected(state.patches, ids)
    dossiers = build_dossiers(state, patches, grids, area_name=cfg.area.name, chips=chips,
                              workspace=ws.root)  # fmt: skip
    folder = ws.dossiers_dir
    manifest = _read_manifest(folder)
    renderer = renderer_id()
    keys = {d.patch_id: dossier_key(d, renderer=renderer) for d in dossiers}
    todo = [d for d in dossiers if not _current(folder, d.patch_id, keys[d.patch_id], manifest)]
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
        _draw(todo, folder, workers=cfg.run.workers, scheduler=cfg.run.scheduler)
        manifest.update({d.patch_id: keys[d.patch_id] for d in todo})
        atomic_write_bytes(
            folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode()
        )
    log.info("dossiers: %d drawn, %d unchanged", len(todo), len(dossiers) - len(todo))
    return {pid: DossierFiles(key, *_paths(folder, pid)) for pid, key in keys.items()}


def build_dossiers(
    state: RegistryState,
    patches: gpd.GeoDataFrame,
    grids: Grids,
    *,
    area_name: str,
    chips: Mapping[str, bytes],
    workspace: Path,
) -> list[Dossier]:
    """The dossiers of ``patches`` (facts, chip, photos, location spec; maps not drawn yet)."""
    book = ledger(state)
    history = {pid: part for pid, part in book.groupby(E.PATCH_ID, sort=False)}
    empty = book.iloc[:0]
    town_persons = _persons(grids.townships)
    village_persons = _persons(grids.villages)
    villages = grids.villages.drop_duplicates(G.CODE).set_index(G.CODE)
    others = state.patches.geometry.reset_index(drop=True)
    status = patch_status(patches)
    out = []
    for (_, row), st in zip(patches.iterrows(), status, strict=True):
        pid = str(row[P.PATCH_ID])
        events = history.get(pid, empty)
        vcode = str(row[P.VILLAGE_CODE])
        village = villages.geometry.get(vcode)
        location = location_spec(
            row.geometry, village, neighbours=grids.villages.geometry, others=others,
            colour=status_style(st)[1],
            village_label=str(row[P.VILLAGE_NAME]) if village is not None else "",
        )  # fmt: skip
        refs, left_out = _photo_refs(events, workspace)
        images = Images(chip_png=chips.get(pid), photos_left_out=left_out)
        out.append(dossier_facts(
            row.to_dict(), events, area_name=area_name, images=images, location=location,
            photo_refs=refs,
            township_person=town_persons.get(str(row[P.TOWNSHIP_CODE]), ""),
            village_person=village_persons.get(vcode, ""),
        ))  # fmt: skip
    return out


def draw_dossiers(dossiers: Sequence[Dossier]) -> list[tuple[str, bytes, str]]:
    """(patch id, PDF bytes, HTML text) of each dossier: maps drawn, photos read, one font
    subset for the group (a worker task; a group is at most :data:`CHUNK` dossiers, so the
    subset each page embeds stays small)."""
    drawn = [with_pictures(d) for d in dossiers]
    css = batch_font_css(drawn)
    out = []
    with DossierFont(dossier_font(t for d in drawn for t in d.texts())) as pdf_font:
        for dossier in drawn:
            pdf = dossier_pdf(dossier, pdf_font)
            out.append((dossier.patch_id, pdf, dossier_html(dossier, font_css=css)))
    return out


def _draw(todo: list[Dossier], folder: Path, *, workers: int, scheduler: str | None) -> None:
    """Draw ``todo`` in groups and write each file atomically as its group comes back."""
    chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
    pooled = len(chunks) >= POOL_FROM_CHUNKS
    n_workers = max(1, min(workers, len(chunks))) if pooled else 1
    with make_executor(n_workers, scheduler if pooled else None) as executor:
        futures = {executor.submit(draw_dossiers, chunk) for chunk in chunks}
        for future in as_completed(futures):
            for pid, pdf, html in future.result():
                pdf_path, html_path = _paths(folder, pid)
                atomic_write_bytes(pdf_path, pdf)
                atomic_write_bytes(html_path, html.encode("utf-8"))
            futures.discard(future)  # its pages are written: let them go


def _selected(patches: gpd.GeoDataFrame, ids: Iterable[str] | None) -> gpd.GeoDataFrame:
    if ids is None:
        return patches
    wanted = list(dict.fromkeys(map(str, ids)))
    known = set(patches[P.PATCH_ID].astype(str))
    unknown = [i for i in wanted if i not in known]
    if unknown:
        raise DossierError(
            f"no patch {', '.join(unknown)} in the registry ({len(known)} patches); expected "
            "ids such as those in the `patch_id` column of registry.gpkg or the field packages"
        )
    return patches[patches[P.PATCH_ID].astype(str).isin(wanted)]


def _photo_refs(events: pd.DataFrame, workspace: Path) -> tuple[tuple[PhotoRef, ...], int]:
    """The newest :data:`MAX_PHOTOS` photos of a patch (stored file, hash, caption) and how
    many older ones are left out."""
    rows = events[events[E.KIND] == EventKind.PHOTO]
    refs = []
    for rec in rows.iloc[::-1].to_dict("records")[:MAX_PHOTOS]:
        taken = rec.get(PHOTO_TAKEN_AT)
        when = str(taken)[:16].replace("T", " ") if isinstance(taken, str) else rec[DATE]
        parts = (rec.get(PHOTO_NAME), when)
        caption = " ".join(str(x) for x in parts if x is not None and not pd.isna(x))
        path = workspace / str(rec.get(PHOTO_FILE))
        refs.append(PhotoRef(path, str(rec.get(PHOTO_SHA256)), caption))
    return tuple(reversed(refs)), max(0, len(rows) - MAX_PHOTOS)


def _persons(units: gpd.GeoDataFrame | None) -> dict[str, str]:
    if units is None or G.PERSON not in units.columns:
        return {}
    persons = units.drop_duplicates(G.CODE).set_index(G.CODE)[G.PERSON]
    return {str(k): str(v) for k, v in persons.items() if isinstance(v, str) and v}


def _paths(folder: Path, pid: str) -> tuple[Path, Path]:
    return folder / f"{pid}.pdf", folder / f"{pid}.html"


def _current(folder: Path, pid: str, key: str, manifest: Mapping[str, str]) -> bool:
    return manifest.get(pid) == key and all(p.is_file() for p in _paths(folder, pid))


def _read_manifest(folder: Path) -> dict[str, str]:
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("dossier manifest %s unreadable (%s): every dossier is drawn again", path, exc)
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def dossiers_of(cfg: Config, ws: Workspace, ids: Iterable[str] | None) -> dict[str, DossierFiles]:
    """``landwatch dossier``: the dossiers of ``ids`` (None: every patch) from the registry,
    chips from the workspace's cache (missing ones read from the imagery)."""
    state = load_registry(ws.registry, cfg.area.crs)
    ids = None if ids is None else list(ids)
    patches = _selected(state.patches, ids)
    chips = cached_chips(cfg, ws.chips_dir, patches)
    return write_dossiers(cfg, ws, state, load_grids_for(cfg), chips=chips, ids=ids)
