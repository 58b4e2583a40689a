"""The vector layers named under ``layers:`` in config.yaml: check them, read the overlays.

:func:`check_layers` opens every configured layer without reading its geometries and checks
what the stages will need from it: the fields named in config exist, a CRS is present, there
are features, the text decodes (a Shapefile's whole attribute table, see
:mod:`pipeline.overlay.io.dbf`) and, for an overlay with ``codes``, that some features carry one of them.
``landwatch config check`` and ``landwatch run`` (before any stage) both call it through
:func:`pipeline.ops.inputs.check_inputs`, so a bad layer fails in seconds rather than after
detection. :func:`read_overlay` reads approvals, farmland or basic farmland for classify.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pyproj

from pipeline.config import GRID_LAYERS, OVERLAY_LAYERS, LayerConfig, LayersConfig
from pipeline.errors import GridError, InputDataError
from pipeline.overlay.classify import code_matches, code_text
from pipeline.overlay.io.vectors import (
    inspect_layer,
    layer_label,
    read_columns,
    read_layer,
    require_fields,
)

log = logging.getLogger(__name__)

__all__ = ["LayerReport", "check_layers", "read_overlay"]

N_CODES_SHOWN = 12
"""Distinct codes listed when none of a layer's codes is the one configured."""


@dataclass(frozen=True)
class LayerReport:
    """What :func:`check_layers` found in one layer (for ``config check`` and the run log)."""

    key: str
    path: Path
    n_features: int
    crs: str
    encoding: str
    """The text encoding and why (``GB18030 (detected: ...)``), or how the format defines it."""
    note: str = ""
    """E.g. how many features the ``codes`` keep."""

    def describe(self) -> str:
        """One line: key, file, features, CRS, encoding (and the note)."""
        note = f"; {self.note}" if self.note else ""
        return (
            f"{self.key}: {self.path.name}, {self.n_features} features, {self.crs}, "
            f"text {self.encoding}{note}"
        )


def check_layers(layers: LayersConfig) -> list[LayerReport]:
    """Open every configured layer and check it; one report per layer.

    Raises
    ------
    GridError
        A township, village or district layer lacks a configured field, has no CRS or no
        features.
    InputDataError
        Any other layer does, a file cannot be opened, its text does not decode, or no feature
        of an overlay carries one of its ``codes``.

    Notes
    -----
    Codes of the grid layers are checked against their patterns by
    :func:`pipeline.overlay.io.grid_layers.load_grids` (it needs the whole layer); this function
    reads no geometry, only the code column of an overlay with ``codes``.
    """
    reports = []
    for name in (*GRID_LAYERS, *OVERLAY_LAYERS):
        layer = getattr(layers, name)
        if layer is not None:
            reports.append(_check_layer(layer, name, _needed_fields(layers, name)))
    return reports


def read_overlay(
    layer: LayerConfig | None, name: str, crs: str | pyproj.CRS
) -> gpd.GeoDataFrame | None:
    """An overlay layer (``approvals``, ``farmland``, ``basic_farmland``) in ``crs``, only the
    features whose ``code_field`` holds one of ``codes`` when they are configured.

    Raises
    ------
    InputDataError
        The layer cannot be read, has no features, or none with one of its ``codes``: an empty
        overlay would silently make every patch "suspected" or "not on farmland".
    """
    if layer is None:
        return None
    key = f"layers.{name}"
    gdf = read_layer(layer.path, layer=layer.layer, crs=crs, encoding=layer.encoding, key=key)
    if len(gdf) == 0:
        raise InputDataError(
            f"layer '{layer.layer or layer.path.stem}' of {layer.path} ('{key}') has no "
            f"features; fix the file, or remove '{key}' from the config if there are none"
        )
    if layer.codes:
        require_fields(gdf.columns, [layer.code_field], label=f"{key} ({layer.path})")
        keep = code_matches(gdf[layer.code_field], layer.codes)
        if not keep.any():
            raise _no_code_error(layer, name, gdf[layer.code_field])
        log.info(
            "%s: %d of %d features have %s in %s",
            key,
            int(keep.sum()),
            len(gdf),
            layer.code_field,
            ", ".join(layer.codes),
        )
        gdf = gdf[keep]
    return gdf


# --------------------------------------------------------------------------- helpers
def _needed_fields(layers: LayersConfig, name: str) -> list[str]:
    """The fields of layer ``name`` the stages read."""
    layer = getattr(layers, name)
    keys = ["code_field", "name_field", "person_field", "township_field", "ref_field"]
    if name == "farmland" and layers.basic_farmland is None:
        keys.append("basic_field")  # without its own layer, basic farmland is flagged here
    return [getattr(layer, k) for k in keys if getattr(layer, k)]


def _check_layer(layer: LayerConfig, name: str, fields: list[str]) -> LayerReport:
    key = f"layers.{name}"
    error = GridError if name in GRID_LAYERS else InputDataError
    info = inspect_layer(layer.path, layer=layer.layer, encoding=layer.encoding, key=key)
    label = f"{key} ({layer_label(layer.path, layer.layer)})"
    require_fields(info.fields, fields, label=label, error=error)
    if info.crs is None:
        raise error(
            f"{label}: has no coordinate reference system; add one (a .prj for Shapefiles, or "
            "`ogr2ogr -a_srs EPSG:XXXX`) — areas and overlaps need to know where it lies"
        )
    if info.n_features == 0:
        raise error(
            f"{label}: has no features; fix the file (or the 'layer' key), or remove '{key}' "
            "from the config if it is optional"
        )
    note = ""
    if layer.codes:
        values = read_columns(
            layer.path, [layer.code_field], layer=layer.layer, encoding=layer.encoding, key=key
        )[layer.code_field]
        keep = code_matches(values, layer.codes)
        if not keep.any():
            raise _no_code_error(layer, name, values)
        codes = ", ".join(layer.codes)
        note = f"{int(keep.sum())} of {len(values)} with {layer.code_field} in {codes}"
    if info.encoding is not None:
        encoding = f"{info.encoding.encoding} ({info.encoding.reason})"
    else:
        encoding = (
            f"{layer.encoding} (from '{key}.encoding')"
            if layer.encoding
            else "as the format defines"
        )
    return LayerReport(key, layer.path, info.n_features, _crs_name(info.crs), encoding, note)


def _no_code_error(layer: LayerConfig, name: str, values) -> InputDataError:
    found = sorted({code_text(v) for v in values} - {""})
    shown = ", ".join(found[:N_CODES_SHOWN]) + (" ..." if len(found) > N_CODES_SHOWN else "")
    return InputDataError(
        f"layers.{name} ({layer.path}): no feature has {layer.code_field} in "
        f"{', '.join(layer.codes)}; the field holds: {shown or 'nothing'}. Fix "
        f"'layers.{name}.code_field' or 'layers.{name}.codes'"
    )


def _crs_name(crs: str) -> str:
    try:
        found = pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError:
        return crs
    epsg = found.to_epsg()
    return f"EPSG:{epsg}" if epsg else found.name
