"""The location map of a dossier: the patch inside its village, with the patches around it.

Drawn with matplotlib's object-oriented API on the Agg canvas (see
:mod:`pipeline.outputs.charts`) in the registry's projected CRS (metres): the village
boundary, its neighbours, the other patches in view, the patch in its status colour (ringed
when it would be too small to see), a scale bar and a north mark.
"""

from __future__ import annotations

import dataclasses
import math

import geopandas as gpd
import numpy as np
import shapely
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from pipeline.outputs.charts import figure_png, find_cjk_font, font_context

MAP_INCHES = 4.0
MAP_DPI = 150
"""The map is ``MAP_INCHES`` square at ``MAP_DPI`` (600 px)."""
MARGIN = 0.08
"""Share of the view added around the village and the patch."""
MIN_VIEW_M = 300.0
"""Smallest side of the view (a patch outside every village is shown with this much around)."""
RING_BELOW = 0.03
"""A patch whose extent is below this share of the view gets a ring around it."""


@dataclasses.dataclass(frozen=True)
class LocationSpec:
    """What the location map draws (geometries in the registry's projected CRS, metres).

    Build it with :func:`location_spec`; it is cheap, so a dossier's key can cover the map
    without drawing it (see :meth:`key_bytes`).
    """

    patch: shapely.Geometry
    village: shapely.Geometry | None
    neighbours: tuple[shapely.Geometry, ...] = ()
    """Other village boundaries in view (drawn thin)."""
    others: tuple[shapely.Geometry, ...] = ()
    """Other patches in view (drawn grey)."""
    colour: str = "229,57,53"
    """``r,g,b`` fill of the patch (its status colour)."""
    village_label: str = ""
    """Text in the corner (the village's name)."""

    def key_bytes(self) -> bytes:
        """Bytes that change whenever the drawing would (WKB of every geometry, colour, label)."""
        geoms = [self.patch, self.village, *self.neighbours, *self.others]
        wkb = [b"-" if g is None else shapely.to_wkb(g, output_dimension=2) for g in geoms]
        head = f"{len(self.neighbours)}|{len(self.others)}|{self.colour}|{self.village_label}"
        return head.encode() + b"".join(wkb)


def location_spec(
    patch: shapely.Geometry,
    village: shapely.Geometry | None,
    *,
    neighbours: gpd.GeoSeries | None = None,
    others: gpd.GeoSeries | None = None,
    colour: str = "229,57,53",
    village_label: str = "",
) -> LocationSpec:
    """The :class:`LocationSpec` of a patch: the village boundaries (``neighbours``, the
    patch's own included or not) and patches (``others``, the patch itself left out by
    identity of geometry) that fall in its view."""
    box = shapely.box(*_view(patch, village))

    def in_view(series: gpd.GeoSeries | None) -> tuple[shapely.Geometry, ...]:
        if series is None or not len(series):
            return ()
        hits = series.sindex.query(box, predicate="intersects")
        shown = series.iloc[sorted(hits)]
        return tuple(g for g in shown if g is not None and not g.equals(patch))

    near = tuple(g for g in in_view(neighbours) if village is None or not g.equals(village))
    return LocationSpec(patch, village, near, in_view(others), colour, village_label)


def location_map_png(spec: LocationSpec) -> bytes:
    """PNG bytes of the location map of ``spec``."""
    x0, y0, x1, y1 = _view(spec.patch, spec.village)
    fig = Figure(figsize=(MAP_INCHES, MAP_INCHES))
    with font_context(find_cjk_font()):
        ax = fig.add_axes((0, 0, 1, 1))
        if spec.village is not None:
            gpd.GeoSeries([spec.village]).plot(
                ax=ax, facecolor="#f5f5f0", edgecolor="#37474f", linewidth=1.6, zorder=0
            )
        if spec.neighbours:
            gpd.GeoSeries(list(spec.neighbours)).plot(
                ax=ax, facecolor="none", edgecolor="#bdbdbd", linewidth=0.6
            )
        if spec.others:
            gpd.GeoSeries(list(spec.others)).plot(
                ax=ax, facecolor="#9e9e9e", edgecolor="#757575", linewidth=0.3
            )
        rgb = tuple(int(c) / 255 for c in spec.colour.split(","))
        gpd.GeoSeries([spec.patch]).plot(ax=ax, facecolor=rgb, edgecolor="#212121", linewidth=0.8)
        _ring_if_small(ax, spec.patch, x1 - x0)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("equal")
        ax.set_axis_off()
        _scale_bar(ax, x0, y0, x1 - x0)
        ax.text(0.96, 0.96, "N ↑", transform=ax.transAxes, ha="right", va="top", fontsize=10)
        if spec.village_label:
            ax.text(0.03, 0.96, spec.village_label, transform=ax.transAxes, va="top",
                    fontsize=9, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})  # fmt: skip
        return figure_png(fig, dpi=MAP_DPI)


def _view(patch: shapely.Geometry, village: shapely.Geometry | None) -> tuple[float, ...]:
    """A square view around the village and the patch, with a margin."""
    parts = [patch] if village is None else [patch, village]
    x0, y0, x1, y1 = shapely.bounds(shapely.union_all(parts)).tolist()
    side = max(x1 - x0, y1 - y0, MIN_VIEW_M) * (1 + 2 * MARGIN)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def _ring_if_small(ax, patch: shapely.Geometry, view: float) -> None:
    x0, y0, x1, y1 = patch.bounds
    if max(x1 - x0, y1 - y0) < RING_BELOW * view:
        centre = patch.centroid
        ax.add_patch(Circle((centre.x, centre.y), radius=0.04 * view, fill=False,
                            edgecolor="#d50000", linewidth=1.6))  # fmt: skip


def _scale_bar(ax, x0: float, y0: float, view: float) -> None:
    """A bar of a round length (1, 2 or 5 × 10ⁿ m) about a fifth of the view wide."""
    target = view / 5
    power = 10 ** math.floor(math.log10(target))
    length = max(m * power for m in (1, 2, 5) if m * power <= target)
    left, base = x0 + 0.04 * view, y0 + 0.05 * view
    ax.plot(np.array([left, left + length]), np.array([base, base]), color="#212121", lw=3)
    shown = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    ax.text(left + length / 2, base + 0.015 * view, shown, ha="center", va="bottom", fontsize=8)
