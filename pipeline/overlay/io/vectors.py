"""Reading vector layers (any OGR format) into GeoDataFrames.

The only module that opens vector files for the pipeline's inputs (grids, approvals,
farmland). Every failure becomes an :class:`~pipeline.errors.InputDataError` that names the
file, the layer and, for fields, what was found.

Text encoding: a Shapefile's text is decoded in the encoding :func:`pipeline.overlay.io.dbf.decide_encoding`
settles (the layer's ``encoding`` key, its ``.cpg``, its DBF language byte, strict UTF-8, then
GB18030), handed to pyogrio explicitly so that GDAL's own guess and a ``SHAPE_ENCODING`` set in
the environment play no part; the choice and its reason are logged per layer. Other formats
(GeoPackage, GeoJSON, ...) are read as their driver defines, or in the ``encoding`` given.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pyproj

from pipeline.atomic import fingerprint_file
from pipeline.errors import InputDataError
from pipeline.overlay.io.dbf import EncodingDecision, decide_encoding

log = logging.getLogger(__name__)

__all__ = [
    "LayerInfo",
    "inspect_layer",
    "layer_files",
    "layer_fingerprint",
    "layer_label",
    "list_layers",
    "read_columns",
    "read_layer",
    "require_fields",
    "text_encoding",
]

DBF_SUFFIXES = (".shp", ".dbf")
"""Files whose text lives in a DBF table (encoding decided by :mod:`pipeline.overlay.io.dbf`)."""
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
"""The files of a Shapefile that change what is read."""


@dataclass(frozen=True)
class LayerInfo:
    """What :func:`inspect_layer` found: fields, CRS (``None`` when the layer has none),
    feature count and the text encoding decision (``None``: as the format defines)."""

    fields: tuple[str, ...]
    crs: str | None
    n_features: int
    encoding: EncodingDecision | None


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
    encoding: str | None = None,
    key: str | None = None,
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
    encoding
        Text encoding of the attributes (the layer's ``encoding`` key); ``None`` decides it
        (see :func:`text_encoding`).
    key
        The layer's config key (``layers.village``), named in messages and the log.

    Returns
    -------
    GeoDataFrame
        Attribute columns as OGR typed them (numbers stay numbers: callers that need codes
        as text convert them) and the geometry in ``crs``.

    Raises
    ------
    InputDataError
        The file or layer is missing, unreadable, has no CRS, lacks a requested field, or its
        text does not decode (the message asks for ``<key>.encoding``).

    Notes
    -----
    The encoding used and why is logged at INFO for every layer read.
    """
    path = _check_exists(path)
    label = _keyed(layer_label(path, layer), key)
    _check_layer_name(path, layer, label)
    decision = text_encoding(path, encoding, label=label, key=key)
    read_encoding = decision.encoding if decision else encoding
    if columns is not None:
        info = _read_info(path, layer, label, read_encoding)
        require_fields([str(f) for f in info["fields"]], columns, label=label)
    try:
        gdf = gpd.read_file(
            path,
            layer=layer,
            columns=list(columns) if columns else None,
            encoding=read_encoding,
            engine="pyogrio",
        )
    except UnicodeDecodeError as exc:
        raise InputDataError(
            f"{label}: text is not valid {read_encoding} ({exc}); set "
            f"'{key or 'layers.<name>'}.encoding' to the layer's encoding"
        ) from exc
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise InputDataError(f"{label}: cannot be read ({exc})") from exc
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf:
        raise InputDataError(f"{label}: has no geometry column; expected a layer of polygons")
    if gdf.crs is None:
        if assume_crs is not None:
            gdf = gdf.set_crs(assume_crs)
        elif crs is not None:
            raise InputDataError(_no_crs_message(label, crs))
    if crs is not None and gdf.crs is not None and not gdf.crs.equals(pyproj.CRS(crs)):
        log.debug("%s: reprojecting from %s to %s", label, gdf.crs.to_string(), crs)
        gdf = gdf.to_crs(crs)
    log.info("%s: read %d features", label, len(gdf))
    return gdf


def inspect_layer(
    path: str | Path,
    *,
    layer: str | None = None,
    encoding: str | None = None,
    key: str | None = None,
) -> LayerInfo:
    """Open a layer without reading its features: fields, CRS, feature count, text encoding.

    A Shapefile's whole attribute table is decoded (see :func:`text_encoding`), so a layer
    that passes reads without a decoding error.

    Raises
    ------
    InputDataError
        The file or layer is missing or unreadable, or its text does not decode.
    """
    path = _check_exists(path)
    label = _keyed(layer_label(path, layer), key)
    _check_layer_name(path, layer, label)
    decision = text_encoding(path, encoding, label=label, key=key)
    info = _read_info(path, layer, label, decision.encoding if decision else encoding)
    crs = info.get("crs")
    return LayerInfo(
        fields=tuple(str(f) for f in info["fields"]),
        crs=str(crs) if crs else None,
        n_features=int(info.get("features", -1)),
        encoding=decision,
    )


def text_encoding(
    path: str | Path,
    declared: str | None = None,
    *,
    label: str | None = None,
    key: str | None = None,
    quiet: bool = False,
) -> EncodingDecision | None:
    """The encoding a layer's text is read with, logged with its reason (unless ``quiet``).

    Parameters
    ----------
    path
        The vector file.
    declared
        The layer's ``encoding`` key, or ``None``.
    label, key
        For messages: the layer and its config key (``layers.farmland``).

    Returns
    -------
    EncodingDecision or None
        For a Shapefile (or a bare ``.dbf``): the encoding settled by
        :func:`pipeline.overlay.io.dbf.decide_encoding`. For other formats ``None``: they are read as
        their driver defines (UTF-8 for GeoPackage and GeoJSON), or in ``declared`` if given.

    Raises
    ------
    InputDataError
        A Shapefile's text does not decode (the message asks for ``<key>.encoding``).
    """
    path = Path(path)
    label = label or str(path)
    key = key or "layers.<name>"
    say = log.debug if quiet else log.info
    if path.suffix.lower() not in DBF_SUFFIXES:
        if declared:
            say("%s: text encoding %s (from '%s.encoding')", label, declared, key)
        else:
            say("%s: text encoding as the %s format defines it", label, path.suffix or "file")
        return None
    dbf = _part(path, ".dbf")
    if dbf is None:
        raise InputDataError(
            f"{label}: the Shapefile has no .dbf beside it (its attribute table); copy all of "
            f"{path.stem}.shp/.shx/.dbf/.prj/.cpg together"
        )
    decision = decide_encoding(dbf, declared, label=label, key=key)
    say("%s: text encoding %s (%s)", label, decision.encoding, decision.reason)
    if decision.n_cut and not quiet:
        log.warning(
            "%s: %d text value(s) end in a character cut in half (a DBF field too narrow for "
            "its text); the cut character is left out",
            label,
            decision.n_cut,
        )
    return decision


def read_columns(
    path: str | Path,
    columns: Sequence[str],
    *,
    layer: str | None = None,
    encoding: str | None = None,
    key: str | None = None,
) -> pd.DataFrame:
    """Attribute columns of a layer without its geometries (cheap on a large layer); text
    decoded as in :func:`read_layer`.

    Raises
    ------
    InputDataError
        The file or layer is missing or unreadable, a column is missing, or the text does not
        decode.
    """
    path = _check_exists(path)
    label = _keyed(layer_label(path, layer), key)
    _check_layer_name(path, layer, label)
    decision = text_encoding(path, encoding, label=label, key=key, quiet=True)
    read_encoding = decision.encoding if decision else encoding
    info = _read_info(path, layer, label, read_encoding)
    require_fields([str(f) for f in info["fields"]], columns, label=label)
    try:
        return pyogrio.read_dataframe(
            path, layer=layer, columns=list(columns), read_geometry=False, encoding=read_encoding
        )
    except UnicodeDecodeError as exc:
        raise InputDataError(f"{label}: text is not valid {read_encoding} ({exc})") from exc
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise InputDataError(f"{label}: cannot be read ({exc})") from exc


def layer_files(path: str | Path) -> list[Path]:
    """The files a layer is read from: a Shapefile's ``.shp .shx .dbf .prj .cpg`` that exist,
    otherwise ``path`` alone."""
    path = Path(path)
    if path.suffix.lower() != ".shp":
        return [path]
    return [p for p in (_part(path, s) for s in SHAPEFILE_PARTS) if p is not None]


def layer_fingerprint(path: str | Path) -> str:
    """SHA-256 of the bytes of :func:`layer_files` (a corrected ``.dbf`` or ``.cpg`` changes it)."""
    files = layer_files(path)
    if len(files) == 1:
        return fingerprint_file(files[0])
    digest = hashlib.sha256()
    for part in files:
        digest.update(f"{part.suffix.lower()}:{fingerprint_file(part)}\n".encode())
    return digest.hexdigest()


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


def _read_info(path: Path, layer: str | None, label: str, encoding: str | None = None) -> dict:
    try:
        return pyogrio.read_info(path, layer=layer, encoding=encoding)
    except UnicodeDecodeError as exc:
        raise InputDataError(f"{label}: field names are not valid {encoding} ({exc})") from exc
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise InputDataError(f"{label}: cannot be read ({exc})") from exc


def _check_layer_name(path: Path, layer: str | None, label: str) -> None:
    if layer is None:
        return
    names = list_layers(path)
    if layer not in names:
        raise InputDataError(
            f"{label}: no layer named {layer!r}; the file holds: {', '.join(names) or 'none'}. "
            "Fix the 'layer' key in config.yaml"
        )


def _keyed(label: str, key: str | None) -> str:
    return f"{key} ({label})" if key else label


def _no_crs_message(label: str, crs) -> str:
    return (
        f"{label}: has no coordinate reference system, so it cannot be reprojected to "
        f"{crs}; add one (a .prj for Shapefiles, or `ogr2ogr -a_srs EPSG:XXXX`)"
    )


def _part(path: Path, suffix: str) -> Path | None:
    """The file beside ``path`` with ``suffix`` (either case), or ``None``."""
    for candidate in (path.with_suffix(suffix), path.with_suffix(suffix.upper())):
        if candidate.is_file():
            return candidate
    return None
