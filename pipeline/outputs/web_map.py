"""The interactive map beside the report (``map.html``): township and village boundaries, the
patches coloured by status, a filter by township and by status, and a click on a patch that
shows its id, areas, verdict and stage with its before/after chip.

Made with Bokeh (BSD-3), whose JavaScript ships inside the Python wheel: the page embeds it
inline (``bokeh.resources.INLINE``) and needs no network. Geometries are simplified for
display (:data:`SIMPLIFY_M`) and drawn in the registry's projected CRS (metres), without a
base map. Chips are separate files next to the page (``chips/{patch_id}.png``), linked by
relative path.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
from bokeh.core.properties import value
from bokeh.embed import file_html
from bokeh.layouts import column, row
from bokeh.models import (
    BooleanFilter,
    CDSView,
    ColumnDataSource,
    CustomJS,
    Div,
    HoverTool,
    InlineStyleSheet,
    MultiChoice,
    TapTool,
)
from bokeh.plotting import figure
from bokeh.resources import INLINE

from pipeline.outputs import webfont
from pipeline.outputs.formatting import isna, label, text
from pipeline.registry.status import STATUS_COLOURS, patch_status, status_style
from pipeline.schema import UNASSIGNED, G, P
from pipeline.units import format_mu

SIMPLIFY_M = 1.0
"""Tolerance (m) of the display simplification of patches (boundaries: 5 × this)."""

STATUS_LABELS = tuple(label for label, _ in STATUS_COLOURS.values())

MAP_FIGURE = "patch_map"
"""Name of the map's figure in the Bokeh document (for scripts and tests)."""

STATUS = "status"
"""Column of the map's data: the patch's status (a verdict, or ``rectified``)."""


def map_html(
    patches: gpd.GeoDataFrame,
    townships: gpd.GeoDataFrame,
    villages: gpd.GeoDataFrame,
    *,
    title: str,
    chips: set[str] = frozenset(),
    chip_href: str = "chips",
    dossiers: set[str] = frozenset(),
    dossier_href: str = "dossiers",
) -> str:
    """The whole page as text (Bokeh's JavaScript inline). ``chips``: ids of the patches
    whose chip ``{chip_href}/{patch_id}.png`` exists (a path relative to the page);
    ``dossiers``: ids whose dossier ``{dossier_href}/{patch_id}.html`` (and ``.pdf``) exists."""
    links = {"chip": (chips, chip_href, ".png"), "dossier": (dossiers, dossier_href, "")}
    source = ColumnDataSource(_patch_data(patches, links))
    view = CDSView(filter=BooleanFilter([True] * len(source.data[P.PATCH_ID])))
    fig = figure(title=title, name=MAP_FIGURE, match_aspect=True, sizing_mode="stretch_both",
                 tools="pan,wheel_zoom,box_zoom,reset,tap", active_scroll="wheel_zoom",
                 min_height=600, min_width=600)  # fmt: skip
    _boundaries(fig, villages, "#9e9e9e", 0.6)
    _boundaries(fig, townships, "#37474f", 1.6)
    glyph = fig.patches("xs", "ys", source=source, view=view, fill_color="colour",
                        fill_alpha=0.75, line_color="outline", line_width=1.0)  # fmt: skip
    fig.add_tools(HoverTool(renderers=[glyph], tooltips=[("图斑 patch", f"@{P.PATCH_ID}"),
                                                         ("状态 status", "@status_label")]))  # fmt: skip
    fig.select_one(TapTool).renderers = [glyph]
    fig.axis.visible = False
    fig.title.text_font = webfont.FONT_FAMILY
    info = Div(text="<p>点击图斑查看详情。Click a patch for its details.</p>", width=340,
               styles={"font-size": "13px"}, css_classes=["patch-info"],
               stylesheets=[_font_sheet()])  # fmt: skip
    towns, statuses = _filters(source, view)
    source.selected.js_on_change("indices", CustomJS(args={"source": source, "info": info},
                                                     code=_POPUP_JS))  # fmt: skip
    page = row(column(towns, statuses, info, width=360), fig, sizing_mode="stretch_both")
    html = file_html(page, resources=INLINE, title=title)
    return _with_font(html, title, source, townships, villages)


def _with_font(html: str, title: str, source, townships, villages) -> str:
    """The page with the CJK font subset of its text embedded (no system font needed)."""
    names = [title, _POPUP_JS, *STATUS_LABELS]
    for units in (townships, villages):
        if units is not None and G.NAME in units.columns:
            names += units[G.NAME].astype(str).tolist()
    for key in (P.TOWNSHIP_NAME, P.VILLAGE_NAME):
        names += source.data[key]
    css = webfont.font_face_css("".join(names) + "乡镇状态点击图斑查看详情")
    style = f"<style>{css} body, .bk-root {{ font-family: {webfont.FONT_STACK}; }}</style>"
    return html.replace("<head>", f"<head>\n{style}", 1)  # the first: the real tag


def _patch_data(patches: gpd.GeoDataFrame, links: dict[str, tuple]) -> dict[str, list]:
    """One row per polygon part (Bokeh's ``patches`` draws simple rings; holes are left out
    of the display), with the attributes the filters and the popup need. ``links``: column
    -> (ids that have the file, folder relative to the page, suffix); others get ``""``."""
    status = patch_status(patches)
    geoms = patches.geometry.simplify(SIMPLIFY_M, preserve_topology=True)
    data: dict[str, list] = {k: [] for k in _COLUMNS}
    for i, (geom, rec) in enumerate(zip(geoms, patches.to_dict("records"), strict=True)):
        if geom is None or geom.is_empty:
            continue  # a patch without an outline cannot be drawn (the report lists it)
        for part in getattr(geom, "geoms", [geom]):
            if part.is_empty:
                continue
            x, y = part.exterior.xy
            shown, rgb = status_style(status.iat[i])
            pid = str(rec[P.PATCH_ID])
            values = {
                "xs": np.round(np.asarray(x), 1).tolist(),
                "ys": np.round(np.asarray(y), 1).tolist(),
                P.PATCH_ID: pid,
                STATUS: status.iat[i],
                "status_label": shown,
                "colour": f"rgb({rgb})",
                "outline": f"rgb({rgb})",
                P.TOWNSHIP_CODE: text(rec[P.TOWNSHIP_CODE]) or UNASSIGNED,
                P.TOWNSHIP_NAME: text(rec[P.TOWNSHIP_NAME]),
                P.VILLAGE_NAME: text(rec[P.VILLAGE_NAME]),
                "area_mu": _mu(rec[P.AREA_M2]),
                "farmland_mu": _mu(rec[P.FARMLAND_M2]),
                "basic_mu": _mu(rec[P.BASIC_FARMLAND_M2]),
                "approved_mu": _mu(rec[P.APPROVED_M2]),
                "stage": label(rec.get(P.ENFORCEMENT_STAGE)),
            }
            for col, (ids, href, suffix) in links.items():
                values[col] = f"{href}/{pid}{suffix}" if pid in ids else ""
            for key, item in values.items():
                data[key].append(item)
    return data


_COLUMNS = ("xs", "ys", P.PATCH_ID, STATUS, "status_label", "colour", "outline",
            P.TOWNSHIP_CODE, P.TOWNSHIP_NAME, P.VILLAGE_NAME, "area_mu", "farmland_mu",
            "basic_mu", "approved_mu", "stage", "chip", "dossier")  # fmt: skip


def _boundaries(fig, units: gpd.GeoDataFrame, colour: str, width: float) -> None:
    if units is None or units.empty:
        return
    xs, ys = [], []
    for geom in units.geometry.simplify(5 * SIMPLIFY_M).boundary:
        for line in getattr(geom, "geoms", [geom]):
            x, y = line.xy
            xs.append(np.round(np.asarray(x), 1).tolist())
            ys.append(np.round(np.asarray(y), 1).tolist())
    fig.multi_line(xs, ys, line_color=colour, line_width=width)
    if G.NAME in units.columns and width > 1:
        points = units.geometry.representative_point()
        fig.text(points.x.tolist(), points.y.tolist(), text=units[G.NAME].astype(str).tolist(),
                 text_align="center", text_font_size="11px", text_color=colour,
                 text_font=value(webfont.FONT_FAMILY))  # fmt: skip


def _filters(source: ColumnDataSource, view: CDSView) -> tuple[MultiChoice, MultiChoice]:
    """Township and status filters: a patch is shown when it matches both (empty = all)."""
    towns = sorted(
        set(zip(source.data[P.TOWNSHIP_CODE], source.data[P.TOWNSHIP_NAME], strict=True))
    )
    town_choice = MultiChoice(title="乡镇 township", options=[(c, n or c) for c, n in towns],
                              width=340, stylesheets=[_font_sheet()])  # fmt: skip
    statuses = [(k, label) for k, (label, _) in STATUS_COLOURS.items()]
    status_choice = MultiChoice(title="状态 status", options=statuses, width=340,
                                stylesheets=[_font_sheet()])  # fmt: skip
    code = _FILTER_JS.replace("TOWN", P.TOWNSHIP_CODE).replace("STATUS", STATUS)
    callback = CustomJS(args={"source": source, "view": view, "towns": town_choice,
                              "statuses": status_choice}, code=code)  # fmt: skip
    town_choice.js_on_change("value", callback)
    status_choice.js_on_change("value", callback)
    return town_choice, status_choice


def _font_sheet() -> InlineStyleSheet:
    """Bokeh widgets live in shadow DOM: the embedded CJK font is named inside it too (a new
    sheet per widget: a Bokeh model belongs to one document)."""
    return InlineStyleSheet(css=f":host, :host * {{ font-family: {webfont.FONT_STACK}; }}")


_FILTER_JS = """
const t = new Set(towns.value), s = new Set(statuses.value);
const d = source.data;
view.filter.booleans = d["TOWN"].map((c, i) =>
  (t.size == 0 || t.has(c)) && (s.size == 0 || s.has(d["STATUS"][i])));
source.change.emit();
"""

_POPUP_JS = """
const i = source.selected.indices[0];
if (i === undefined) { return; }
const d = source.data;
const chip = d.chip[i] ? `<p><a href="${d.chip[i]}"><img src="${d.chip[i]}" width="320"
  alt="前后影像 before / after"></a></p>` : "";
const dossier = d.dossier[i] ? `<p class="dossier-link">图斑档案 dossier:
  <a href="${d.dossier[i]}.html" target="_blank">HTML</a> · <a href="${d.dossier[i]}.pdf"
  target="_blank">PDF</a></p>` : "";
info.text = `<h3 class="popup-id">${d.patch_id[i]}</h3>
<p>${d.township_name[i]} · ${d.village_name[i]}</p>
<table>
<tr><td>状态 status</td><td>${d.status_label[i]}</td></tr>
<tr><td>查处阶段 stage</td><td>${d.stage[i] || "—"}</td></tr>
<tr><td>面积 area (亩)</td><td>${d.area_mu[i]}</td></tr>
<tr><td>耕地 farmland (亩)</td><td>${d.farmland_mu[i]}</td></tr>
<tr><td>基本农田 basic farmland (亩)</td><td>${d.basic_mu[i]}</td></tr>
<tr><td>已批 approved (亩)</td><td>${d.approved_mu[i]}</td></tr>
</table>${chip}${dossier}`;
"""


def _mu(value) -> str:
    return "" if isna(value) else format_mu(float(value))
