"""QGIS styles stored inside a GeoPackage: the ``layer_styles`` table QGIS reads when it opens
a layer, so ``registry.gpkg`` and the field packages open with the patches coloured by status
and labelled by id.

The table has the columns QGIS itself writes (``f_table_name``, ``f_geometry_column``,
``styleName``, ``styleQML``, ``useAsDefault``, ...) and is registered as a GeoPackage
attribute table (written through GDAL), so other GeoPackage readers list it as a table.

The style is a categorized renderer on an expression giving the status of each patch:
``rectified`` (illegal with nothing remaining), else the verdict (pending, illegal, legal,
false change, other); labels show ``patch_id``.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

import pandas as pd
import pyogrio

from pipeline.registry.status import RECTIFIED, STATUS_COLOURS
from pipeline.schema import P, Verdict

STYLES_TABLE = "layer_styles"
"""The table QGIS looks for styles in."""
STYLE_NAME = "landwatch status"

STATUS_EXPRESSION = (
    f'CASE WHEN "{P.VERDICT}" = \'{Verdict.ILLEGAL.value}\' AND "{P.REMAINING_M2}" = 0 '
    f"THEN '{RECTIFIED}' ELSE \"{P.VERDICT}\" END"
)
"""QGIS expression giving each patch's status."""


STYLE_COLUMNS = (
    "f_table_catalog",
    "f_table_schema",
    "f_table_name",
    "f_geometry_column",
    "styleName",
    "styleQML",
    "styleSLD",
    "useAsDefault",
    "description",
    "owner",
    "ui",
    "update_time",
)


def status_qml() -> str:
    """The QML document: categories per status, a white-haloed ``patch_id`` label."""
    categories, symbols = [], []
    for i, (value, (label, rgb)) in enumerate(STATUS_COLOURS.items()):
        categories.append(
            f'<category render="true" value={quoteattr(value)} label={quoteattr(label)} '
            f'symbol="{i}"/>'
        )
        symbols.append(_fill_symbol(i, rgb))
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology|Labeling">\n'
        f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(STATUS_EXPRESSION)} '
        'symbollevels="0" enableorderby="0" forceraster="0">\n'
        f"<categories>{''.join(categories)}</categories>\n"
        f"<symbols>{''.join(symbols)}</symbols>\n"
        "</renderer-v2>\n"
        '<labeling type="simple"><settings calloutType="simple">'
        f'<text-style fieldName="{P.PATCH_ID}" isExpression="0" fontSize="8" '
        'textColor="0,0,0,255" fontFamily="Noto Sans CJK SC"/>'
        '<text-buffer bufferDraw="1" bufferSize="1" bufferColor="255,255,255,255"/>'
        '<placement placement="0"/><rendering scaleVisibility="1" scaleMin="1" '
        'scaleMax="25000"/></settings></labeling>\n'
        "<layerGeometryType>2</layerGeometryType>\n"
        "</qgis>\n"
    )


def _fill_symbol(name: int, rgb: str) -> str:
    options = {
        "color": f"{rgb},150",
        "outline_color": f"{rgb},255",
        "outline_style": "solid",
        "outline_width": "0.5",
        "outline_width_unit": "MM",
        "style": "solid",
    }
    opts = "".join(f'<Option name="{k}" type="QString" value="{v}"/>' for k, v in options.items())
    return (
        f'<symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">'
        f'<layer class="SimpleFill" pass="0" locked="0" enabled="1">'
        f'<Option type="Map">{opts}</Option></layer></symbol>'
    )


def user_styles(path: Path) -> pd.DataFrame | None:
    """The rows of ``layer_styles`` in the GeoPackage at ``path`` that are not landwatch's
    (styles users saved from QGIS), to carry into a rewritten file; None when there are none."""
    if not path.exists() or STYLES_TABLE not in {n for n, _ in pyogrio.list_layers(path)}:
        return None
    rows = pyogrio.read_dataframe(path, layer=STYLES_TABLE, read_geometry=False)
    rows = rows[rows["styleName"] != STYLE_NAME]
    return rows.reindex(columns=list(STYLE_COLUMNS)) if len(rows) else None


def write_status_style(
    path: Path, *, layer: str, geometry_column: str = "geom", keep: pd.DataFrame | None = None
) -> None:
    """Add the status style of ``layer`` to the GeoPackage at ``path`` (``layer_styles``,
    written through GDAL), with the rows of ``keep`` (users' own styles) after it. Ours is
    the default unless a kept style of the same layer is."""
    row = {
        "f_table_catalog": "",
        "f_table_schema": "",
        "f_table_name": layer,
        "f_geometry_column": geometry_column,
        "styleName": STYLE_NAME,
        "styleQML": status_qml(),
        "styleSLD": "",
        "useAsDefault": 1,
        "description": "landwatch: patches coloured by status, labelled by patch id",
        "owner": "",
        "ui": "",
        "update_time": "",
    }
    frame = pd.DataFrame([row], columns=list(STYLE_COLUMNS))
    if keep is not None:
        theirs = keep[(keep["f_table_name"] == layer) & (keep["useAsDefault"].astype(bool))]
        frame.loc[:, "useAsDefault"] = 0 if len(theirs) else 1
        frame = pd.concat([frame, keep], ignore_index=True)
    pyogrio.write_dataframe(
        frame, path, layer=STYLES_TABLE, driver="GPKG", layer_options={"FID": "id"}
    )
