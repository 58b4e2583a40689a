"""Reading and writing ``registry.gpkg``: the file side of :mod:`pipeline.registry.store`.

:func:`load_registry` turns the GeoPackage into a :class:`~pipeline.registry.store.RegistryState`
and :func:`save_registry` writes one back atomically; everything else about the registry is
pure and lives in :mod:`pipeline.registry.store` (column types are documented there).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyogrio
import pyproj
import shapely

from pipeline.atomic import atomic_path
from pipeline.errors import RegistryError
from pipeline.registry.io.qgis_styles import user_styles, write_status_style
from pipeline.registry.store import (
    IMPORTS_TABLE,
    TABLE_COLUMNS,
    RegistryState,
    check_state,
    empty_state,
    normalise_patches,
    normalise_state,
    normalise_table,
    pending_null_verdicts,
)
from pipeline.schema import (
    ADDED_PATCH_COLUMNS,
    EVENTS_TABLE,
    FEATURES_TABLE,
    PATCH_COLUMNS,
    PATCHES_LAYER,
    RUNS_TABLE,
)

log = logging.getLogger(__name__)


def load_registry(path: str | os.PathLike[str], crs: Any) -> RegistryState:
    """Read ``registry.gpkg``; an empty state when the file does not exist.

    Parameters
    ----------
    path : path-like
        The registry GeoPackage.
    crs : anything pyproj accepts
        The target CRS. Patches stored in another CRS are reprojected (with a warning).

    Raises
    ------
    RegistryError
        The file exists but is not a GeoPackage, or lacks a layer or a column.

    Notes
    -----
    Dtypes are restored as documented in :mod:`pipeline.registry.store`: text columns come
    back as text even when every value looks like a number (codes keep leading zeros).
    Single-part MultiPolygons (the file stores every patch as a MultiPolygon) come back as
    Polygons. A patch without a verdict (left by an older importer) comes back ``pending``,
    with a WARNING naming how many and the first ids
    (:func:`~pipeline.registry.store.pending_null_verdicts`).
    """
    path = Path(path)
    if not path.exists():
        log.info("registry %s does not exist yet; starting empty", path)
        return empty_state(crs)
    try:
        layers = {str(name) for name, _ in pyogrio.list_layers(path)}
    except Exception as exc:  # pyogrio raises its own DataSourceError hierarchy
        raise RegistryError(
            f"{path} cannot be opened as a GeoPackage ({exc}); restore it from a backup or "
            "move it away to start a new registry"
        ) from exc
    wanted = (PATCHES_LAYER, EVENTS_TABLE, RUNS_TABLE, IMPORTS_TABLE)
    missing = [name for name in wanted if name not in layers]
    if missing:
        raise RegistryError(
            f"{path} lacks layer(s) {', '.join(missing)} (found: {', '.join(sorted(layers))}); "
            f"a registry has layers {', '.join(wanted)}. Is this really a landwatch registry?"
        )
    patches = pyogrio.read_dataframe(path, layer=PATCHES_LAYER)
    _check_columns(
        path,
        PATCHES_LAYER,
        patches.columns,
        [c for c in PATCH_COLUMNS if c not in ADDED_PATCH_COLUMNS],
    )
    for column in ADDED_PATCH_COLUMNS:
        if column not in patches.columns:
            log.info(
                "registry %s has no column %s yet (older landwatch); read as empty", path, column
            )
            patches[column] = None
    if patches.crs is None:
        patches = patches.set_crs(crs)
    elif not pyproj.CRS(patches.crs).equals(pyproj.CRS(crs)):
        log.warning("registry patches are in %s; reprojecting to %s", patches.crs, crs)
        patches = patches.to_crs(crs)
    patches = patches.set_geometry(_demote_single_multi(patches.geometry.to_numpy()), crs=crs)
    tables = {}
    for name in (EVENTS_TABLE, RUNS_TABLE, IMPORTS_TABLE, FEATURES_TABLE):
        if name not in layers:  # the only optional table (added later): older registries
            log.info("registry %s has no %s table yet (older landwatch)", path, name)
            tables[name] = normalise_table(name, pd.DataFrame())
            continue
        frame = pyogrio.read_dataframe(path, layer=name, read_geometry=False)
        _check_columns(path, name, frame.columns, TABLE_COLUMNS[name])
        tables[name] = normalise_table(name, frame)
    patches, emptied = pending_null_verdicts(normalise_patches(patches))
    if emptied:
        shown = ", ".join(emptied[:5]) + (
            f" (and {len(emptied) - 5} more)" if len(emptied) > 5 else ""
        )
        log.warning(
            "registry %s: %d patch(es) had no verdict (left by an older field-return import); "
            "they are pending: %s",
            path,
            len(emptied),
            shown,
        )
    return RegistryState(
        patches=patches,
        events=tables[EVENTS_TABLE],
        runs=tables[RUNS_TABLE],
        imports=tables[IMPORTS_TABLE],
        features=tables[FEATURES_TABLE],
    )


def save_registry(path: str | os.PathLike[str], state: RegistryState) -> None:
    """Write every layer of ``state`` to ``path`` atomically.

    The whole GeoPackage is written to a temporary sibling which replaces ``path`` only
    when all four layers were written, so a crash never leaves a half-written registry.

    Raises
    ------
    RegistryError
        ``state`` is malformed (missing columns, duplicate patch ids, non-increasing event ids), or
        its events are not an extension of the events already on disk (the events table is
        append-only: the first N rows must be the N rows in the file).

    Notes
    -----
    Frames are brought to their canonical column order and dtypes first
    (:func:`~pipeline.registry.store.normalise_state`; extra patch columns are dropped with a
    warning), so callers may append rows built by hand. Patches are stored as MultiPolygons
    (one geometry type per layer, as QGIS expects). Events, runs and imports are GeoPackage
    attribute tables (no geometry column); ``layer_styles`` holds the default QGIS style of
    the patches (:mod:`pipeline.registry.io.qgis_styles`).
    """
    path = Path(path)
    state = normalise_state(state)
    check_state(state)
    if path.exists():
        _check_append_only(path, state.events)
    patches = state.patches
    kept_styles = user_styles(path)  # styles saved from QGIS survive the rewrite
    with atomic_path(path) as tmp:
        pyogrio.write_dataframe(
            patches,
            tmp,
            layer=PATCHES_LAYER,
            driver="GPKG",
            geometry_type="MultiPolygon",
            promote_to_multi=True,
        )
        for name, frame in state.tables():
            pyogrio.write_dataframe(frame, tmp, layer=name, driver="GPKG")
        write_status_style(tmp, layer=PATCHES_LAYER, keep=kept_styles)  # QGIS opens it styled
    log.info(
        "registry %s written: %d patches, %d events, %d runs, %d imports",
        path,
        len(state.patches),
        len(state.events),
        len(state.runs),
        len(state.imports),
    )


# --------------------------------------------------------------------------- internals
def _demote_single_multi(geoms: np.ndarray) -> np.ndarray:
    """Single-part MultiPolygons back to Polygons (they were promoted on write)."""
    geoms = np.asarray(geoms, dtype=object)
    single = (shapely.get_type_id(geoms) == shapely.GeometryType.MULTIPOLYGON) & (
        shapely.get_num_geometries(geoms) == 1
    )
    out = geoms.copy()
    out[single] = shapely.get_geometry(geoms[single], 0)
    return out


def _check_columns(path: Path, layer: str, found, expected) -> None:
    missing = [c for c in expected if c not in set(found)]
    if missing:
        raise RegistryError(
            f"{path}: layer '{layer}' lacks column(s) {', '.join(missing)}; expected "
            f"{', '.join(expected)}. The registry was edited by hand or written by another tool."
        )


def _check_append_only(path: Path, events: pd.DataFrame) -> None:
    try:
        on_disk = pyogrio.read_dataframe(path, layer=EVENTS_TABLE, read_geometry=False)
    except Exception as exc:  # a broken file is about to be replaced; say so
        log.warning("cannot read events of %s before overwriting it: %s", path, exc)
        return
    on_disk = normalise_table(EVENTS_TABLE, on_disk)
    n = len(on_disk)
    if len(events) < n or not on_disk.equals(events.iloc[:n].reset_index(drop=True)):
        raise RegistryError(
            f"refusing to save {path}: the events table is append-only, but the new state's "
            f"first {n} event(s) differ from the {n} on disk (new state has {len(events)}). "
            "Reload the registry and apply the change again."
        )
