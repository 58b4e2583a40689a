"""Reading vector layers (any OGR format) into GeoDataFrames.

The only module that opens vector files for the pipeline's inputs (grids, approvals,
farmland). Every failure becomes an :class:`~pipeline.errors.InputDataError` that names the
file, the layer and, for fields, what was found.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import geopandas as gpd
import pyogrio
import pyproj

from pipeline.errors import InputDataError

log = logging.getLogger(__name__)

__all__ = ["layer_label", "list_layers", "read_layer", "require_fields"]


def list_layers(path: str | Path) -> list[str]:
    """Names of the layers in a vector file.

    Raises
    ------
    InputDataError
        When the file does not exist or OGR cannot open it.
    """
    path = _check_exists(path)
    try:
        return [str(name) for name in pyogrio.list_layers(path)[:, 0]]
    except (pyogrio.errors.DataSourceError, OSError) as exc:
        raise InputDataError(
            f"{path}: cannot be opened as a vector file ({exc}); expected a GeoPackage, "
            "Shapefile, GeoJSON or another format GDAL/OGR reads"
        ) from exc


def read_layer(
    path: str | Path,
    *,
    layer: str | None = None,
    crs: str | pyproj.CRS | None = None,
    columns: Sequence[str] | None = None,
    assume_crs: str | pyproj.CRS | None = None,
) -> gpd.GeoDataFrame:
    """Read one layer of a vector file, optionally reprojected to ``crs``.

    Parameters
    ----------
    path
        Any file OGR reads (GeoPackage, Shapefile, GeoJSON, FlatGeobuf, KML, ...).
    layer
        Layer name; default the only (or first) layer. A missing name lists the layers found.
    crs
        Target CRS; the layer is reprojected when it differs. ``None`` keeps the file's CRS.
    columns
        Attribute fields to read (default all). Missing ones raise, listing the fields found.
    assume_crs
        CRS to give a layer that has none (e.g. a Shapefile without ``.prj``). Without it such
        a layer raises when ``crs`` is given, because reprojecting needs a source CRS.

    Returns
    -------
    GeoDataFrame
        Attribute columns as OGR typed them (numbers stay numbers: callers that need codes
        as text convert them) and the geometry in ``crs``.

    Raises
    ------
    InputDataError
        The file or layer is missing, unreadable, has no CRS, or lacks a requested field.

    Notes
    -----
    Shapefiles without a ``.cpg`` are decoded by GDAL's default (often Latin-1); Chinese
    names then come out garbled. Add a ``.cpg`` holding ``UTF-8`` or ``GBK`` next to the file.
    """
    path = _check_exists(path)
    label = layer_label(path, layer)
    if layer is not None:
        names = list_layers(path)
        if layer not in names:
            raise InputDataError(
                f"{label}: no layer named {layer!r}; the file holds: {', '.join(names) or 'none'}. "
                "Fix the 'layer' key in config.yaml"
            )
    if columns is not None:
        info = _read_info(path, layer, label)
        require_fields([str(f) for f in info["fields"]], columns, label=label)
    try:
        gdf = gpd.read_file(path, layer=layer, columns=list(columns) if columns else None)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise InputDataError(f"{label}: cannot be read ({exc})") from exc
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf:
        raise InputDataError(f"{label}: has no geometry column; expected a layer of polygons")
    if gdf.crs is None:
        if assume_crs is not None:
            gdf = gdf.set_crs(assume_crs)
        elif crs is not None:
            raise InputDataError(
                f"{label}: has no coordinate reference system, so it cannot be reprojected to "
                f"{crs}; add one (a .prj for Shapefiles, or `ogr2ogr -a_srs EPSG:XXXX`)"
            )
    if crs is not None and gdf.crs is not None and not gdf.crs.equals(pyproj.CRS(crs)):
        log.debug("%s: reprojecting from %s to %s", label, gdf.crs.to_string(), crs)
        gdf = gdf.to_crs(crs)
    log.info("%s: read %d features", label, len(gdf))
    return gdf


def require_fields(
    found: Iterable[str],
    required: Iterable[str],
    *,
    label: str,
    error: type[InputDataError] = InputDataError,
) -> None:
    """Raise ``error`` naming the missing fields and listing the ones ``found``."""
    found = list(found)
    missing = [f for f in required if f not in found]
    if missing:
        raise error(
            f"{label}: field(s) {', '.join(repr(m) for m in missing)} not found; the layer has "
            f"fields: {', '.join(found) or 'none'}. Fix the field names in config.yaml "
            "(layers.<name>.code_field / name_field / ...)"
        )


def layer_label(path: str | Path, layer: str | None) -> str:
    """``file`` or ``file (layer 'name')`` for messages."""
    return f"{path} (layer {layer!r})" if layer else str(path)


def _check_exists(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputDataError(
            f"{path}: vector file does not exist; check the path in config.yaml "
            "(relative paths are read from the config file's folder)"
        )
    return path


def _read_info(path: Path, layer: str | None, label: str) -> dict:
    try:
        return pyogrio.read_info(path, layer=layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise InputDataError(f"{label}: cannot be read ({exc})") from exc
