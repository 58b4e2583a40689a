"""The registry file: lossless round trip, atomic writes, append-only events, clear errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pyogrio
import pytest
from shapely.geometry import MultiPolygon, box

from pipeline.atomic import atomic_path, fingerprint_file
from pipeline.errors import RegistryError
from pipeline.registry.io.registry_file import load_registry, save_registry
from pipeline.registry.matching import register_detections
from pipeline.registry.store import (
    IMPORT_COLUMNS,
    IMPORTS_TABLE,
    append_events,
    empty_state,
    record_exports,
)
from pipeline.schema import EVENT_COLUMNS, PATCH_COLUMNS, RUN_COLUMNS, E, EventKind, P, R
from tests.detections import CRS, make_detections


@pytest.fixture
def state():
    """A registry with two patches (one MultiPolygon), Chinese names and leading-zero codes."""
    det = make_detections(
        [box(0, 0, 40, 40), MultiPolygon([box(100, 0, 120, 20), box(130, 0, 150, 20)])],
        village_codes=["013060900101", "013060900102"],
        village_names=["东村", "西村"],
    )
    s, _ = register_detections(
        empty_state(CRS), det, run_id="run-1", now="2024-05-01T00:00:00Z", county_code="130609"
    )
    runs = pd.DataFrame([{c: None for c in RUN_COLUMNS} | {R.RUN_ID: "run-1", R.COMMAND: "运行"}])
    imports = pd.DataFrame(
        [
            {
                "fingerprint": "ab" * 32,
                "file": "返回.csv",
                "applied_at": "x",
                "n_rows": 3,
                "run_id": None,
            }
        ]
    )
    return dataclasses.replace(s, runs=runs, imports=imports)


def test_missing_file_gives_empty_state(tmp_path):
    s = load_registry(tmp_path / "registry.gpkg", CRS)
    assert len(s.patches) == 0 and len(s.events) == 0
    assert tuple(c for c in s.patches.columns if c != "geometry") == PATCH_COLUMNS


def test_round_trip_is_lossless(tmp_path, state):
    path = tmp_path / "registry.gpkg"
    save_registry(path, state)
    back = load_registry(path, CRS)
    # text stays text with leading zeros, NULLs stay NULL, Chinese survives
    assert back.patches[P.VILLAGE_CODE].tolist() == ["013060900101", "013060900102"]
    assert back.patches[P.VILLAGE_NAME].tolist() == ["东村", "西村"]
    assert back.patches[P.REMAINING_M2].isna().all()
    assert back.patches[P.NOTE].isna().all()
    assert back.patches[P.PATCH_ID].map(type).eq(str).all()
    assert back.patches.geometry.geom_equals_exact(state.patches.geometry, 0).all()
    assert back.patches.geometry.iloc[0].geom_type == "Polygon"  # demoted after promotion
    pd.testing.assert_frame_equal(
        pd.DataFrame(back.patches.drop(columns="geometry")),
        pd.DataFrame(state.patches.drop(columns="geometry")),
    )
    pd.testing.assert_frame_equal(back.events, state.events)
    assert back.runs[R.COMMAND].tolist() == ["运行"]
    assert back.runs[R.OUTCOME].isna().all()
    assert back.imports["file"].tolist() == ["返回.csv"]
    assert back.imports["n_rows"].dtype == "int64"


def test_gpkg_layers_are_what_qgis_expects(tmp_path, state):
    path = tmp_path / "registry.gpkg"
    save_registry(path, state)
    layers = dict(pyogrio.list_layers(path))
    assert layers["patches"] == "MultiPolygon"
    assert layers["events"] is None and layers["runs"] is None and layers[IMPORTS_TABLE] is None
    assert list(pyogrio.read_info(path, layer="events")["fields"]) == list(EVENT_COLUMNS)
    assert list(pyogrio.read_info(path, layer=IMPORTS_TABLE)["fields"]) == list(IMPORT_COLUMNS)


def test_failed_write_leaves_old_file_intact(tmp_path, state, monkeypatch):
    """Simulate a crash after the patches layer was written: the old registry survives."""
    path = tmp_path / "registry.gpkg"
    save_registry(path, state)
    before = fingerprint_file(path)
    real = pyogrio.write_dataframe

    def crash_on_events(df, target, layer=None, **kw):
        if layer == "events":
            raise OSError("disk full")
        return real(df, target, layer=layer, **kw)

    monkeypatch.setattr(pyogrio, "write_dataframe", crash_on_events)
    bigger = dataclasses.replace(state, runs=pd.concat([state.runs, state.runs]))
    with pytest.raises(OSError, match="disk full"):
        save_registry(path, bigger)
    assert fingerprint_file(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry.gpkg"]  # no temp left


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt"
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_events_are_append_only(tmp_path, state):
    path = tmp_path / "registry.gpkg"
    save_registry(path, state)
    edited = state.events.copy()
    edited.loc[0, E.KIND] = "forged"
    with pytest.raises(RegistryError, match="append-only"):
        save_registry(path, dataclasses.replace(state, events=edited))
    with pytest.raises(RegistryError, match="append-only"):
        save_registry(path, dataclasses.replace(state, events=state.events.iloc[:1]))
    # appending is fine
    extra = state.events.iloc[[-1]].assign(**{E.EVENT_ID: state.events[E.EVENT_ID].max() + 1})
    save_registry(path, dataclasses.replace(state, events=pd.concat([state.events, extra])))
    assert len(load_registry(path, CRS).events) == len(state.events) + 1


def test_missing_layer_or_column_is_a_clear_error(tmp_path, state):
    path = tmp_path / "registry.gpkg"
    save_registry(path, state)
    events = pyogrio.read_dataframe(path, layer="events").drop(columns=[E.VALUES])
    broken = tmp_path / "broken.gpkg"
    pyogrio.write_dataframe(state.patches, broken, layer="patches")
    with pytest.raises(RegistryError, match="lacks layer"):
        load_registry(broken, CRS)
    for name in ("runs", IMPORTS_TABLE):
        pyogrio.write_dataframe(pyogrio.read_dataframe(path, layer=name), broken, layer=name)
    pyogrio.write_dataframe(events, broken, layer="events")
    with pytest.raises(RegistryError, match="values_json"):
        load_registry(broken, CRS)
    (tmp_path / "junk.gpkg").write_text("not a database")
    with pytest.raises(RegistryError, match="cannot be opened"):
        load_registry(tmp_path / "junk.gpkg", CRS)


def test_duplicate_patch_ids_are_refused(tmp_path, state):
    patches = state.patches.copy()
    patches[P.PATCH_ID] = patches[P.PATCH_ID].iloc[0]
    with pytest.raises(RegistryError, match="duplicate patch_id"):
        save_registry(tmp_path / "r.gpkg", dataclasses.replace(state, patches=patches))


def test_fingerprint_is_content_sha256(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"abc")
    b.write_bytes(b"abc")
    assert fingerprint_file(a) == fingerprint_file(b)
    assert fingerprint_file(a).startswith("ba7816bf")  # sha256("abc")
    assert np.char.str_len(fingerprint_file(a)) == 64


def _exported(state) -> pd.DataFrame:
    return state.events[state.events[E.KIND] == EventKind.EXPORTED]


def test_exports_record_changes_not_repeats(tmp_path, state):
    """The first export records one ``exported`` event per patch; exporting the unchanged
    registry again (even after a save and load) records none; a verdict changed on one patch
    records one event, for that patch only."""
    ids = state.patches[P.PATCH_ID].tolist()
    packages = {pid: "130609100000_一镇.zip" for pid in ids}
    first, n = record_exports(state, packages, run_id="e1", now="2024-05-02T00:00:00Z")
    assert n == 2 and _exported(first)[E.PATCH_ID].tolist() == ids
    values = json.loads(_exported(first)[E.VALUES].iloc[0])
    assert values["package"] == "130609100000_一镇.zip" and len(values["key"]) == 16
    path = tmp_path / "registry.gpkg"
    save_registry(path, first)
    reloaded = load_registry(path, CRS)
    second, n = record_exports(reloaded, packages, run_id="e2", now="2024-05-03T00:00:00Z")
    assert n == 0 and second.events.equals(reloaded.events)
    judged = second.patches.copy()
    judged.loc[1, P.VERDICT] = "legal"
    judged.loc[0, P.UPDATED_AT] = "2024-05-04T00:00:00Z"  # no package shows it
    third, n = record_exports(
        dataclasses.replace(second, patches=judged), packages, run_id="e3", now="2024-05-04"
    )
    assert n == 1 and _exported(third)[E.PATCH_ID].iloc[-1] == ids[1]


def test_a_patch_moved_to_another_package_is_recorded_once(state):
    """A patch whose township package changes (it moved) gets one new ``exported`` event
    naming the new package; an old event without a key counts as different once."""
    ids = state.patches[P.PATCH_ID].tolist()
    legacy = {
        E.PATCH_ID: ids[0],
        E.KIND: EventKind.EXPORTED.value,
        E.VALUES: '{"package": "a.zip"}',
    }
    events = append_events(state.events, [legacy], run_id="old", now="2024-05-01T00:00:00Z")
    state = dataclasses.replace(state, events=events)
    packages = {ids[0]: "a.zip", ids[1]: "a.zip"}
    state, n = record_exports(state, packages, run_id="e1", now="2024-05-02T00:00:00Z")
    assert n == 2  # the legacy event had no key
    moved = {ids[0]: "a.zip", ids[1]: "b.zip"}
    state, n = record_exports(state, moved, run_id="e2", now="2024-05-03T00:00:00Z")
    assert n == 1
    assert json.loads(_exported(state)[E.VALUES].iloc[-1])["package"] == "b.zip"
    assert record_exports(state, moved, run_id="e3", now="2024-05-04T00:00:00Z")[1] == 0
