"""Reading the administrative grid layers: the file side of :mod:`pipeline.overlay.admin_grid`.

:func:`load_grids` reads the township, village and optional district layers named in
``config.yaml``, reprojected to the target CRS, and hands them to the pure
:func:`~pipeline.overlay.admin_grid.normalise_units` and
:func:`~pipeline.overlay.admin_grid.validate_grid`.
"""

from __future__ import annotations

import geopandas as gpd
import pyproj

from pipeline.config import TOWNSHIP_CODE_PATTERN, VILLAGE_CODE_PATTERN, LayerConfig, LayersConfig
from pipeline.errors import GridError
from pipeline.overlay.admin_grid import (
    DEFAULT_TOLERANCE_M2,
    DISTRICT,
    TOWNSHIP,
    VILLAGE,
    GridIssue,
    Grids,
    normalise_units,
    validate_grid,
)
from pipeline.overlay.io.vectors import layer_label, read_layer, require_fields
from pipeline.schema import G

__all__ = ["load_grids"]


def load_grids(
    layers: LayersConfig,
    *,
    crs: str | pyproj.CRS,
    code_pattern: str | None = None,
    township_pattern: str = TOWNSHIP_CODE_PATTERN,
    village_pattern: str = VILLAGE_CODE_PATTERN,
    tolerance_m2: float = DEFAULT_TOLERANCE_M2,
) -> Grids:
    """Read, normalise and validate the grid layers named in ``layers``.

    Parameters
    ----------
    layers
        The ``layers`` config section; ``township`` and ``village`` need ``code_field`` and
        ``name_field``; ``village.township_field`` is optional (absent: each village gets the
        township holding most of its area); ``district`` is optional.
    crs
        Target CRS (projected, metres); every layer is reprojected to it.
    code_pattern
        When given, the regular expression every township and village code must match (it
        replaces the two patterns below; ``assign.code_pattern``).
    township_pattern, village_pattern
        Regular expressions township / village codes must match (default: 9 digits or 12
        ending in ``000``; 12 digits).
    tolerance_m2
        Overlaps, gaps and outside parts smaller than this are not reported.

    Returns
    -------
    Grids
        Repaired layers and every defect found (also logged). A village's ``township_code``
        is the township layer's code it matched
        (:func:`~pipeline.overlay.admin_grid.match_townships`).

    Raises
    ------
    GridError
        A layer is empty or a configured field is missing (the message lists the fields found).
    InputDataError
        A file or layer cannot be read.

    Notes
    -----
    Codes are read as text. A code field stored as numbers loses leading zeros (French INSEE
    ``01001`` becomes ``1001``); such codes are zero-padded back when the padded text matches
    the layer's pattern and each is reported as ``code_lost_zeros``. Text is decoded as
    :func:`pipeline.overlay.io.vectors.read_layer` decides (the layer's ``encoding`` key,
    ``.cpg``, DBF language byte, UTF-8, GB18030).
    """
    if code_pattern is not None:
        township_pattern = village_pattern = code_pattern
    issues: list[GridIssue] = []
    townships = _read_unit_layer(layers.township, TOWNSHIP, crs, township_pattern, issues)
    villages = _read_unit_layer(
        layers.village, VILLAGE, crs, village_pattern, issues, township_pattern=township_pattern
    )
    district = None
    if layers.district is not None:
        district = _read_unit_layer(layers.district, DISTRICT, crs, village_pattern, issues)
    townships, villages, found = validate_grid(
        townships,
        villages,
        district,
        township_pattern=township_pattern,
        village_pattern=village_pattern,
        tolerance_m2=tolerance_m2,
    )
    return Grids(district, townships, villages, (*issues, *found))


def _read_unit_layer(
    cfg: LayerConfig,
    name: str,
    crs,
    code_pattern: str,
    issues: list[GridIssue],
    *,
    township_pattern: str = TOWNSHIP_CODE_PATTERN,
) -> gpd.GeoDataFrame:
    """One grid layer read and normalised (:func:`~pipeline.overlay.admin_grid.normalise_units`);
    its padded-code issues are appended to ``issues``."""
    label = layer_label(cfg.path, cfg.layer)
    required = {"code_field": cfg.code_field, "name_field": cfg.name_field}
    if name != DISTRICT:
        for key, value in required.items():
            if not value:
                raise GridError(f"layers.{name}: '{key}' is not set; the {name} layer needs it")
    wanted = {
        G.CODE: cfg.code_field,
        G.NAME: cfg.name_field,
        G.PERSON: cfg.person_field,
    }
    if name == VILLAGE and cfg.township_field:
        # without it, validate_grid assigns each village's township by majority overlap
        wanted[G.TOWNSHIP_CODE] = cfg.township_field
    fields = [f for f in wanted.values() if f]
    raw = read_layer(
        cfg.path, layer=cfg.layer, crs=crs, encoding=cfg.encoding, key=f"layers.{name}"
    )
    found = [str(c) for c in raw.columns if c != raw.geometry.name]
    require_fields(found, fields, label=f"{name} layer {label}", error=GridError)
    if len(raw) == 0:
        raise GridError(
            f"{name} layer {label} has no features; expected one polygon per {name}. "
            "Check the file and the 'layer' key in config.yaml"
        )
    units, lost = normalise_units(
        raw, wanted, layer=name, code_pattern=code_pattern, township_pattern=township_pattern
    )
    issues.extend(lost)
    return units
