"""The registry opens in QGIS styled: a default ``layer_styles`` row for the patches, with a
category for every status and the patch id as label."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET

import pyogrio

from pipeline.registry.io.qgis_styles import STATUS_COLOURS, STYLES_TABLE, status_qml
from pipeline.registry.io.registry_file import load_registry, save_registry
from pipeline.schema import PATCHES_LAYER, P, Verdict
from tests.field_returns import CRS, township_state


def _styles(path):
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT f_table_name, f_geometry_column, useAsDefault, styleQML FROM layer_styles"
        ).fetchall()


def test_the_saved_registry_carries_one_default_style_for_its_patches(tmp_path):
    path = tmp_path / "registry.gpkg"
    save_registry(path, township_state(3))
    save_registry(path, load_registry(path, CRS))  # saved again: still one style
    rows = _styles(path)
    assert [(r[0], r[1], r[2]) for r in rows] == [(PATCHES_LAYER, "geom", 1)]
    layers = dict(pyogrio.list_layers(path))
    assert STYLES_TABLE in layers and layers[PATCHES_LAYER] == "MultiPolygon"
    assert len(load_registry(path, CRS).patches) == 3  # the registry reads as before


def test_the_style_colours_every_status_and_labels_the_id():
    root = ET.fromstring(status_qml().split("\n", 1)[1])
    renderer = root.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol"
    assert P.VERDICT in renderer.get("attr") and P.REMAINING_M2 in renderer.get("attr")
    values = {c.get("value") for c in renderer.iter("category")}
    assert values == set(STATUS_COLOURS) >= {v.value for v in Verdict} | {"rectified"}
    assert len(list(renderer.iter("symbol"))) == len(values)
    assert root.find("labeling/settings/text-style").get("fieldName") == P.PATCH_ID


def test_a_style_saved_from_qgis_survives_the_next_save(tmp_path):
    """A user's own default style stays (and stays the default) when the registry is saved."""
    path = tmp_path / "registry.gpkg"
    save_registry(path, township_state(2))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE layer_styles SET useAsDefault = 0")
        db.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, styleName, styleQML, useAsDefault) VALUES "
            "('', '', 'patches', 'geom', 'mine', '<qgis/>', 1)"
        )
    save_registry(path, load_registry(path, CRS))
    rows = {(r[0], r[2]) for r in _styles(path)}
    assert len(_styles(path)) == 2 and ("patches", 1) in rows and ("patches", 0) in rows
    with sqlite3.connect(path) as db:
        assert db.execute(
            "SELECT useAsDefault FROM layer_styles WHERE styleName='mine'"
        ).fetchone() == (1,)
