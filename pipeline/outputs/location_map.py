"""The location map of a dossier: the patch inside its village, with the patches around it.

Drawn with Pillow in the registry's projected CRS (metres, north up): the village boundary,
its neighbours, the other patches in view, the patch in its status colour (ringed when it
would be too small to see), a scale bar, a north arrow and the village's name (in the
bundled CJK font).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import math

import geopandas as gpd
import shapely
from PIL import Image, ImageDraw, ImageFont

from pipeline.outputs import webfont

log = logging.getLogger(__name__)

MAP_PX = 600
"""Side of the map (pixels)."""
SUPERSAMPLE = 2
"""The map is drawn this many times larger, then reduced (smooth lines)."""
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
    """PNG bytes of the location map of ``spec`` (:data:`MAP_PX` square).

    Drawn with Pillow at :data:`SUPERSAMPLE` × the size and reduced (smooth edges); about
    10 ms a map, where a matplotlib figure takes ten times as long.
    """
    x0, _, x1, y1 = _view(spec.patch, spec.village)
    size = MAP_PX * SUPERSAMPLE
    scale = size / (x1 - x0)

    def rings(geom) -> list[tuple[list, list]]:
        out = []
        for part in shapely.get_parts(geom):
            if part.geom_type != "Polygon" or part.is_empty:
                continue
            holes = [_pixels(r, x0, y1, scale) for r in part.interiors]
            out.append((_pixels(part.exterior, x0, y1, scale), holes))
        return out

    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    s = SUPERSAMPLE
    if spec.village is not None:
        _polygons(draw, rings(spec.village), fill="#f5f5f0", outline="#37474f", width=3 * s)
    for geom in spec.neighbours:
        _polygons(draw, rings(geom), fill=None, outline="#bdbdbd", width=s)
    for geom in spec.others:
        _polygons(draw, rings(geom), fill="#9e9e9e", outline="#757575", width=s)
    colour = tuple(int(c) for c in spec.colour.split(","))
    _polygons(draw, rings(spec.patch), fill=colour, outline="#212121", width=2 * s)
    _ring_if_small(draw, spec.patch, x0, y1, scale, size)
    _scale_bar(draw, x1 - x0, size)
    _north(draw, size)
    if spec.village_label:
        _label(draw, spec.village_label, size)
    small = img.resize((MAP_PX, MAP_PX), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _pixels(ring, x0: float, y1: float, scale: float) -> list[tuple[float, float]]:
    xy = shapely.get_coordinates(ring)
    return list(zip(((xy[:, 0] - x0) * scale).tolist(), ((y1 - xy[:, 1]) * scale).tolist(),
                    strict=True))  # fmt: skip


def _polygons(draw: ImageDraw.ImageDraw, rings, *, fill, outline: str, width: int) -> None:
    """Each (exterior, holes): filled (holes left open, so what lies in them shows), then
    outlined."""
    for exterior, holes in rings:
        if len(exterior) < 3:
            continue
        if fill is not None and holes:
            mask = Image.new("L", draw.im.size, 0)
            shape = ImageDraw.Draw(mask)
            shape.polygon(exterior, fill=255)
            for hole in holes:
                if len(hole) >= 3:
                    shape.polygon(hole, fill=0)
            draw.bitmap((0, 0), mask, fill=fill)
        elif fill is not None:
            draw.polygon(exterior, fill=fill)
        for line in (exterior, *holes):
            draw.line(line, fill=outline, width=width, joint="curve")


def _view(patch: shapely.Geometry, village: shapely.Geometry | None) -> tuple[float, ...]:
    """A square view around the village and the patch, with a margin."""
    parts = [patch] if village is None else [patch, village]
    x0, y0, x1, y1 = shapely.bounds(shapely.union_all(parts)).tolist()
    side = max(x1 - x0, y1 - y0, MIN_VIEW_M) * (1 + 2 * MARGIN)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def _ring_if_small(draw, patch, x0: float, y1: float, scale: float, size: int) -> None:
    """A red ring around a patch too small to see at this scale."""
    bx0, by0, bx1, by1 = patch.bounds
    if max(bx1 - bx0, by1 - by0) * scale < RING_BELOW * size:
        c = patch.centroid
        cx, cy, r = (c.x - x0) * scale, (y1 - c.y) * scale, 0.04 * size
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline="#d50000", width=3 * SUPERSAMPLE)


def _scale_bar(draw, view_m: float, size: int) -> None:
    """A bar of a round length (1, 2 or 5 × 10ⁿ m) about a fifth of the view wide."""
    target = view_m / 5
    power = 10 ** math.floor(math.log10(target))
    length = max(m * power for m in (1, 2, 5) if m * power <= target)
    left, base = 0.04 * size, 0.95 * size
    draw.line((left, base, left + length / view_m * size, base), fill="#212121",
              width=4 * SUPERSAMPLE)  # fmt: skip
    shown = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    draw.text((left, base - 0.05 * size), shown, fill="#212121", font=_font(0.035 * size))


def _north(draw, size: int) -> None:
    """An arrow and "N" in the top right corner."""
    x, y, h = 0.93 * size, 0.04 * size, 0.06 * size
    draw.polygon([(x, y), (x - h / 3, y + h), (x + h / 3, y + h)], fill="#212121")
    draw.text((x - 0.012 * size, y + h + 2), "N", fill="#212121", font=_font(0.035 * size))


def _label(draw, text: str, size: int) -> None:
    """The village's name in the top left corner, on white."""
    font = _font(0.04 * size)
    box = draw.textbbox((0.03 * size, 0.03 * size), text, font=font)
    draw.rectangle((box[0] - 6, box[1] - 6, box[2] + 6, box[3] + 6), fill="white")
    draw.text((0.03 * size, 0.03 * size), text, fill="#212121", font=font)


@functools.lru_cache(maxsize=8)
def _font(size: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The bundled CJK face at ``size`` px (Pillow's own font without it)."""
    source = webfont.bundled_font()
    if source is not None:
        path, index = source
        try:
            return ImageFont.truetype(str(path), round(size), index=max(index, 0))
        except OSError as exc:
            log.warning("cannot load the font %s for the location maps: %s", path, exc)
    return ImageFont.load_default(round(size))
