"""The patch registry ``registry.gpkg``: the system of record (DESIGN §3).

One GeoPackage with four layers, all opened by QGIS:

- ``patches`` (spatial, MultiPolygon): one row per patch, its current state;
- ``events`` (attribute table): append-only history;
- ``runs`` (attribute table): one row per run;
- ``imports`` (attribute table): fingerprints of applied field-return files.

In memory the registry is a frozen :class:`RegistryState`. This module and the other pure
modules (``matching``, ``field_returns``, ``rates``) take a state and return a new one; only
:mod:`pipeline.registry.io.registry_file` (``load_registry``, ``save_registry``) touches the
file.

Column types
------------
``patches``
    text (pandas ``str``; codes and ids keep their leading zeros): ``patch_id``,
    ``epoch_from``, ``epoch_to``, ``approval_refs``, ``legal_hint``, ``township_code``,
    ``township_name``, ``village_code``, ``village_name``, ``village_shares`` (JSON text),
    ``change_type``, ``verdict``, ``verdict_subtype``, ``rect_method``, ``first_seen`` and
    ``last_seen`` (epoch labels such as ``"2017"``), ``checked_on`` (ISO date),
    ``inspector``, ``note``, ``updated_at`` (ISO-8601 UTC). Missing text is NaN (NULL on
    disk).

    float64: ``area_m2``, ``area_mu``, ``farmland_m2``, ``basic_farmland_m2``,
    ``approved_m2``, ``approved_share``, ``village_share``, ``score``, ``remaining_m2``
    (NaN until the patch is judged illegal).
``events``
    ``event_id`` int64 (strictly increasing); the other columns text.
``runs``
    all text (times ISO-8601 UTC; ``*_json`` columns are JSON text).
``imports``
    ``n_rows`` int64; ``fingerprint`` (sha256 hex), ``file``, ``applied_at``, ``run_id`` text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely

from pipeline.errors import RegistryError
from pipeline.schema import (
    EVENT_COLUMNS,
    EVENTS_TABLE,
    EXPORTED_KEY,
    EXPORTED_PACKAGE,
    FEATURE_TABLE_COLUMNS,
    FEATURES_TABLE,
    PATCH_COLUMNS,
    RUN_COLUMNS,
    RUNS_TABLE,
    E,
    EventKind,
    P,
    Verdict,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- local constants
# TODO(schema): move IMPORTS_TABLE / IMPORT_COLUMNS / I to schema.py
IMPORTS_TABLE = "imports"


class I:  # noqa: E742 - mirrors schema.P / E / R
    """Column names of the ``imports`` table (applied field-return files)."""

    FINGERPRINT = "fingerprint"
    FILE = "file"
    APPLIED_AT = "applied_at"
    N_ROWS = "n_rows"
    RUN_ID = "run_id"


IMPORT_COLUMNS = (I.FINGERPRINT, I.FILE, I.APPLIED_AT, I.N_ROWS, I.RUN_ID)

PATCH_FLOAT_COLUMNS = frozenset(
    {
        P.AREA_M2,
        P.AREA_MU,
        P.FARMLAND_M2,
        P.BASIC_FARMLAND_M2,
        P.APPROVED_M2,
        P.APPROVED_SHARE,
        P.VILLAGE_SHARE,
        P.SCORE,
        P.REMAINING_M2,
    }
)
"""``patches`` columns stored as float64; every other attribute column is text."""

_INT_COLUMNS = {EVENTS_TABLE: frozenset({E.EVENT_ID}), IMPORTS_TABLE: frozenset({I.N_ROWS})}
TABLE_COLUMNS = {
    EVENTS_TABLE: EVENT_COLUMNS,
    RUNS_TABLE: RUN_COLUMNS,
    IMPORTS_TABLE: IMPORT_COLUMNS,
    FEATURES_TABLE: FEATURE_TABLE_COLUMNS,
}
"""Columns of each attribute table of the registry, in their canonical order."""
_TEXT = "str"  # pandas' string dtype (NaN for missing)

EXPORT_KEY_CHARS = 16
"""Hex digits of the per-patch content key recorded in ``exported`` events."""


@dataclasses.dataclass(frozen=True)
class RegistryState:
    """The whole registry in memory. Never mutated: operations return a new state.

    Attributes
    ----------
    patches : geopandas.GeoDataFrame
        Exactly :data:`~pipeline.schema.PATCH_COLUMNS` plus ``geometry``, in the target CRS.
    events : pandas.DataFrame
        :data:`~pipeline.schema.EVENT_COLUMNS`, append-only, ordered by ``event_id``.
    runs : pandas.DataFrame
        :data:`~pipeline.schema.RUN_COLUMNS`.
    imports : pandas.DataFrame
        :data:`IMPORT_COLUMNS`: one row per applied field-return file.
    features : pandas.DataFrame
        :data:`~pipeline.schema.FEATURE_TABLE_COLUMNS`: one row per patch and epoch pair it
        was detected in (empty in registries written before features were kept).

    Notes
    -----
    Build states with :func:`empty_state`,
    :func:`pipeline.registry.io.registry_file.load_registry` or ``dataclasses.replace`` on an
    existing one, passing frames through :func:`normalise_patches` / :func:`normalise_table`
    so that column order and dtypes stay canonical.
    """

    patches: gpd.GeoDataFrame
    events: pd.DataFrame
    runs: pd.DataFrame
    imports: pd.DataFrame
    features: pd.DataFrame = dataclasses.field(
        default_factory=lambda: normalise_table(FEATURES_TABLE, pd.DataFrame())
    )

    def tables(self) -> tuple[tuple[str, pd.DataFrame], ...]:
        """The attribute tables, (name, frame), in the order they are saved."""
        return (
            (EVENTS_TABLE, self.events),
            (RUNS_TABLE, self.runs),
            (IMPORTS_TABLE, self.imports),
            (FEATURES_TABLE, self.features),
        )

    @property
    def crs(self) -> pyproj.CRS | None:
        return self.patches.crs


def empty_state(crs: Any) -> RegistryState:
    """A registry with no patches, events, runs or imports, in ``crs``."""
    patches = gpd.GeoDataFrame(
        {c: pd.Series([], dtype=_patch_dtype(c)) for c in PATCH_COLUMNS},
        geometry=gpd.GeoSeries([], crs=crs),
    )
    return RegistryState(
        patches=patches,
        events=normalise_table(EVENTS_TABLE, pd.DataFrame()),
        runs=normalise_table(RUNS_TABLE, pd.DataFrame()),
        imports=normalise_table(IMPORTS_TABLE, pd.DataFrame()),
    )


# --------------------------------------------------------------------------- normalisation
def normalise_patches(patches: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """A copy of ``patches`` with exactly the registry columns, in order, with their dtypes.

    Raises
    ------
    RegistryError
        A column of :data:`~pipeline.schema.PATCH_COLUMNS` is missing.

    Notes
    -----
    Extra columns are dropped. Numbers in text columns become text (``1.0`` never
    appears for an integral code: integral floats are written without the decimal part).
    """
    missing = [c for c in PATCH_COLUMNS if c not in patches.columns]
    if missing:
        raise RegistryError(f"patches lack column(s) {', '.join(missing)}")
    data = {c: _as_dtype(patches[c], _patch_dtype(c)) for c in PATCH_COLUMNS}
    out = gpd.GeoDataFrame(
        data, geometry=gpd.GeoSeries(patches.geometry.to_numpy(), crs=patches.crs)
    )
    return out.reset_index(drop=True)


def pending_null_verdicts(patches: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, list[str]]:
    """``patches`` with every empty verdict set to ``pending``, and the ids of those patches.

    Notes
    -----
    A verdict is never empty, but an older importer left the verdict of the blank rows of a
    partly filled template null; such a patch counted in no category of the rates. Nobody has
    judged it: it is pending.
    """
    empty = patches[P.VERDICT].isna()
    if not empty.any():
        return patches, []
    out = patches.copy()
    out.loc[empty, P.VERDICT] = Verdict.PENDING.value
    return out, [str(pid) for pid in patches.loc[empty, P.PATCH_ID]]


def normalise_table(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of table ``name`` (events/runs/imports) with its columns, in order, typed.

    Missing columns are added empty; extra columns are dropped.
    """
    columns = TABLE_COLUMNS[name]
    ints = _INT_COLUMNS.get(name, frozenset())
    data = {}
    for c in columns:
        series = frame[c] if c in frame.columns else pd.Series([np.nan] * len(frame))
        data[c] = _as_dtype(series, "int64" if c in ints else _TEXT)
    return pd.DataFrame(data, columns=list(columns)).reset_index(drop=True)


def normalise_state(state: RegistryState) -> RegistryState:
    """``state`` with every frame in its canonical columns and dtypes (as saved).

    Raises
    ------
    RegistryError
        A table lacks a column, or a patch column is missing.

    Notes
    -----
    Extra patch columns are dropped with a warning; extra table columns are dropped.
    """
    geometry_name = state.patches.geometry.name
    extra = [c for c in state.patches.columns if c not in PATCH_COLUMNS and c != geometry_name]
    if extra:
        log.warning("patches columns %s are not registry columns; not saved", extra)
    for name, frame in state.tables():
        _check_state_columns(name, frame.columns, TABLE_COLUMNS[name])
    return RegistryState(
        patches=normalise_patches(state.patches),
        events=normalise_table(EVENTS_TABLE, state.events),
        runs=normalise_table(RUNS_TABLE, state.runs),
        imports=normalise_table(IMPORTS_TABLE, state.imports),
        features=normalise_table(FEATURES_TABLE, state.features),
    )


def check_state(state: RegistryState) -> None:
    """Raise :class:`RegistryError` when ``state`` breaks a registry invariant."""
    cols = [c for c in state.patches.columns if c != state.patches.geometry.name]
    if tuple(cols) != PATCH_COLUMNS:
        raise RegistryError(
            f"patches columns are {cols}; expected exactly {list(PATCH_COLUMNS)} "
            "(pass the frame through registry.normalise_patches)"
        )
    ids = state.patches[P.PATCH_ID]
    if ids.isna().any():
        raise RegistryError("patches have an empty patch_id")
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        raise RegistryError(f"duplicate patch_id(s) in the registry: {', '.join(dup[:10])}")
    event_ids = state.events[E.EVENT_ID].to_numpy()
    if len(event_ids) > 1 and not np.all(np.diff(event_ids) > 0):
        raise RegistryError("event_id must be strictly increasing in the events table")
    for name, frame in state.tables():
        if tuple(frame.columns) != TABLE_COLUMNS[name]:
            raise RegistryError(
                f"{name} columns are {list(frame.columns)}; expected {list(TABLE_COLUMNS[name])}"
            )


def next_event_id(events: pd.DataFrame) -> int:
    """The id for the next event appended to ``events`` (1 for an empty table)."""
    return int(events[E.EVENT_ID].max()) + 1 if len(events) else 1


def to_json(values: dict[str, Any]) -> str:
    """Event values as JSON text: Chinese kept readable, NaN as null, keys sorted."""
    return json.dumps({k: _plain(v) for k, v in values.items()}, ensure_ascii=False, sort_keys=True)


def append_events(
    events: pd.DataFrame, new: list[dict[str, Any]], *, run_id: str | None, now: str
) -> pd.DataFrame:
    """``events`` with rows ``new`` appended (each a dict with ``patch_id``, ``kind`` and
    ``values_json``), numbered on from the last id, timed ``now``, from run ``run_id``.

    Notes
    -----
    The one place event ids are allocated (:func:`next_event_id`). A row's ``source`` is the
    one it names (a field-return file), else ``run_id``.
    """
    if not new:
        return events
    frame = pd.DataFrame(new)
    frame[E.EVENT_ID] = np.arange(len(frame)) + next_event_id(events)
    frame[E.TIME] = now
    if E.SOURCE in frame:
        frame[E.SOURCE] = frame[E.SOURCE].where(frame[E.SOURCE].notna(), run_id)
    else:
        frame[E.SOURCE] = run_id
    frame[E.RUN_ID] = run_id
    frame = normalise_table(EVENTS_TABLE, frame)
    return pd.concat([events, frame], ignore_index=True)


def patch_values(column: str, values: Any) -> np.ndarray:
    """``values`` as the registry stores them in ``patches`` column ``column``: float64 for
    the float columns (NaN for missing or not a number), else text (an object array; NaN for
    missing, an integral float as ``"12"``)."""
    series = pd.Series(np.asarray(values, dtype=object))
    if column in PATCH_FLOAT_COLUMNS:
        return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64")
    return np.array([_to_text(v) for v in series], dtype=object)


def same_patch_values(column: str, old: Any, new: Any) -> np.ndarray:
    """Whether the values of ``patches`` column ``column`` are the same for the registry,
    element by element (boolean array).

    Floats compare within 1e-9 (relative) and 1e-6 (absolute: a µm² or a millionth of a
    share), so a rerun's round-off records no change; missing text and ``""`` are the same.
    """
    a, b = patch_values(column, old), patch_values(column, new)
    if column in PATCH_FLOAT_COLUMNS:
        return np.isclose(a, b, rtol=1e-9, atol=1e-6, equal_nan=True)
    empty_a = np.array([not isinstance(v, str) or v == "" for v in a], dtype=bool)
    empty_b = np.array([not isinstance(v, str) or v == "" for v in b], dtype=bool)
    return (empty_a & empty_b) | (~empty_a & ~empty_b & (a == b))


def same_patch_value(column: str, old: Any, new: Any) -> bool:
    """:func:`same_patch_values` for one pair of values."""
    return bool(same_patch_values(column, [old], [new])[0])


def patch_content_keys(patches: gpd.GeoDataFrame) -> pd.Series:
    """A short content hash of each patch as a field package shows it, indexed by patch id.

    The hash covers every column of :data:`~pipeline.schema.PATCH_COLUMNS` but
    ``updated_at`` (no package shows it), as text, and the 2-D WKB of the geometry: any change
    a field team could see changes it, a rewrite of the same values does not.
    """
    cols = [c for c in PATCH_COLUMNS if c != P.UPDATED_AT]
    wkbs = shapely.to_wkb(np.asarray(patches.geometry.values, dtype=object), output_dimension=2)
    keys = []
    for row, wkb in zip(patches[cols].itertuples(index=False, name=None), wkbs, strict=True):
        digest = hashlib.sha256(
            json.dumps([_plain(v) for v in row], ensure_ascii=False, default=str).encode()
        )
        digest.update(b"\x00" if wkb is None else wkb)
        keys.append(digest.hexdigest()[:EXPORT_KEY_CHARS])
    return pd.Series(keys, index=patches[P.PATCH_ID].to_numpy(), dtype=object)


def record_exports(
    state: RegistryState, packages: dict[str, str], *, run_id: str, now: str
) -> tuple[RegistryState, int]:
    """Append an ``exported`` event for each patch whose package content is new.

    Parameters
    ----------
    state : RegistryState
        The registry the packages were written from.
    packages : dict of str to str
        Patch id -> name of the township package that holds it in this export.
    run_id, now : str
        Source and time of the new events.

    Returns
    -------
    (RegistryState, int)
        The state with the new events, and how many were added.

    Notes
    -----
    An event (values :data:`~pipeline.schema.EXPORTED_PACKAGE` and
    :data:`~pipeline.schema.EXPORTED_KEY`, the patch's :func:`patch_content_keys`) is
    added for a patch never exported before, or whose package name or content key differ
    from those of its last ``exported`` event. Only the patch's own content counts: a
    change to one patch adds one event, not one per patch of its township, and two exports
    of an unchanged registry add none. An earlier ``exported`` event without a key (written
    before keys were recorded) counts as a different content, once.
    """
    patches = state.patches[state.patches[P.PATCH_ID].isin(list(packages))]
    if len(patches) == 0:
        return state, 0
    keys = patch_content_keys(patches)
    last = _last_exports(state.events)
    rows = []
    for pid, key in keys.items():
        current = {EXPORTED_PACKAGE: packages[pid], EXPORTED_KEY: key}
        if last.get(pid) != current:
            rows.append(
                {E.PATCH_ID: pid, E.KIND: EventKind.EXPORTED.value, E.VALUES: to_json(current)}
            )
    events = append_events(state.events, rows, run_id=run_id, now=now)
    return dataclasses.replace(state, events=events), len(rows)


def _last_exports(events: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Patch id -> ``{EXPORTED_PACKAGE, EXPORTED_KEY}`` of its last ``exported`` event."""
    exported = events[events[E.KIND] == EventKind.EXPORTED.value]
    last = exported.sort_values(E.EVENT_ID).drop_duplicates(E.PATCH_ID, keep="last")
    out = {}
    for pid, text in zip(last[E.PATCH_ID], last[E.VALUES], strict=True):
        try:
            values = json.loads(text) if isinstance(text, str) else {}
        except ValueError:
            values = {}
        out[pid] = {k: values.get(k) for k in (EXPORTED_PACKAGE, EXPORTED_KEY)}
    return out


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --------------------------------------------------------------------------- internals
def _patch_dtype(column: str) -> str:
    return "float64" if column in PATCH_FLOAT_COLUMNS else _TEXT


def _as_dtype(series: pd.Series, dtype: str) -> pd.Series:
    values = series.reset_index(drop=True)
    if dtype == _TEXT:
        return pd.Series([_to_text(v) for v in values], dtype=_TEXT)
    if dtype == "int64":
        return pd.to_numeric(values, errors="raise").astype("int64")
    return pd.to_numeric(values, errors="coerce").astype("float64")


def _to_text(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _check_state_columns(layer: str, found, expected) -> None:
    missing = [c for c in expected if c not in set(found)]
    if missing:
        raise RegistryError(
            f"the state's {layer} table lacks column(s) {', '.join(missing)}; expected "
            f"{', '.join(expected)} (build rows with every column of the table)"
        )
