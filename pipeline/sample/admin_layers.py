"""The administrative grid of the synthetic sample: district, townships and villages.

Pure functions: seed points and an outline in, GeoDataFrames out. Villages are Voronoi cells of
seed points clipped to the district, so they tile it exactly; townships are unions of their
villages, the district is the union of the townships. One deliberate hole (:func:`cut_gap`)
is then cut out of one village and its township to exercise the "unassigned" path.

All names and persons are fictitious, built from syllable lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from pipeline.errors import ConfigError
from pipeline.schema import UNASSIGNED, G

COUNTY_CODE = "130609"
"""GB/T 2260-style prefix of the fictitious sample county (to move to config/schema)."""
DISTRICT_NAME = "示例区（合成样例）"
GRID_PRECISION_M = 0.01
"""Grid vertices are snap-rounded to this precision so shared edges are bit-identical."""

_SURNAMES = list(
    "王李张刘陈杨赵黄周吴徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董潘袁蔡蒋余于杜叶程魏苏吕丁任卢姚沈钟姜崔谭陆范汪廖石金贾夏付方邹熊白孟秦邱侯江尹薛闫段雷龙黎史陶贺毛郝顾龚邵万覃武钱戴严欧莫孔向常汤康易乔"
)
_GIVEN = list(
    "建国志强秀英桂兰玉梅海军红霞凤伟明华丽芳敏静磊洋勇艳杰娟涛超鹏辉刚平文斌宇浩凯鑫雪琳"
)
_ROOTS_A = list("东西南北新柳清杨安兴永丰和平长广宁洪青白石桥盛福寿康泰德嘉富润瑞")
_ROOTS_B = list("河源隆安宁丰和乐泉庄营屯林台坊口湾村店集堡铺寨旺城阳溪")
_DIRS = list("东西南北前后大小上下")


# --------------------------------------------------------------------------- result
@dataclass(frozen=True)
class Grid:
    """The three grid layers (EPSG of the sample), each with ``code``, ``name``, ``person``.

    ``village`` also has ``township_code``. ``gap`` is the deliberate hole (or None).
    """

    district: gpd.GeoDataFrame
    township: gpd.GeoDataFrame
    village: gpd.GeoDataFrame
    gap: shapely.Polygon | None = None


# --------------------------------------------------------------------------- public
def district_outline(
    bounds: tuple[float, float, float, float], rng: np.random.Generator
) -> shapely.Polygon:
    """An irregular district polygon covering most of ``bounds``.

    Parameters
    ----------
    bounds : (xmin, ymin, xmax, ymax)
        The imagery extent in map units (metres).
    rng : numpy.random.Generator
        The only source of randomness.

    Notes
    -----
    The outline is a star-shaped blob (radius modulated by a few sines) about the size of
    the inscribed circle, intersected with ``bounds`` shrunk by 1 % so every point of the
    district is imaged. Vertices are snap-rounded to :data:`GRID_PRECISION_M`.
    """
    xmin, ymin, xmax, ymax = bounds
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    half = min(xmax - xmin, ymax - ymin) / 2
    theta = np.linspace(0, 2 * np.pi, 181)[:-1]
    radius = np.ones_like(theta) * 1.02
    for k, amp in ((3, 0.07), (5, 0.045), (8, 0.025)):
        radius += amp * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    ring = np.column_stack([cx + half * radius * np.cos(theta), cy + half * radius * np.sin(theta)])
    inset = 0.01 * half
    box = shapely.box(xmin + inset, ymin + inset, xmax - inset, ymax - inset)
    return shapely.intersection(shapely.Polygon(ring), box, grid_size=GRID_PRECISION_M)


def village_seeds(
    district: shapely.Polygon, n: int, rng: np.random.Generator, *, max_tries: int = 20000
) -> np.ndarray:
    """``n`` well-spread points inside ``district`` (dart throwing), as an ``(n, 2)`` array.

    Notes
    -----
    The minimum spacing starts at 0.75 × the mean spacing and shrinks when darts keep
    missing, so the call always returns ``n`` points for a reasonable ``n``.
    """
    xmin, ymin, xmax, ymax = district.bounds
    inner = shapely.buffer(district, -0.15 * np.sqrt(district.area / n))
    shapely.prepare(inner)
    min_dist = 0.75 * np.sqrt(district.area / n)
    points = np.empty((0, 2))
    tries = 0
    while len(points) < n:
        if tries > max_tries:
            raise ConfigError(
                f"could only place {len(points)} of {n} village seeds in the district; "
                "use a larger size_px"
            )
        cand = rng.uniform([xmin, ymin], [xmax, ymax], size=(64, 2))
        cand = cand[shapely.contains_xy(inner, cand[:, 0], cand[:, 1])]
        for c in cand:
            if len(points) == n:
                break
            if len(points) == 0 or np.min(np.hypot(*(points - c).T)) >= min_dist:
                points = np.vstack([points, c])
        tries += 64
        if tries % 2048 == 0:
            min_dist *= 0.93
    return np.round(points, 2)


def make_grid(
    district: shapely.Polygon, seeds: np.ndarray, n_townships: int, rng: np.random.Generator
) -> Grid:
    """Villages (Voronoi cells of ``seeds`` clipped to ``district``), townships and district.

    Parameters
    ----------
    district : shapely.Polygon
        The district outline in map units.
    seeds : ndarray, shape (n, 2)
        One seed per village (e.g. from :func:`village_seeds`).
    n_townships : int
        At least 2 and at most the number of seeds.
    rng : numpy.random.Generator

    Returns
    -------
    Grid
        Codes are 12-digit strings: ``130609`` + township (3) + village (3). Townships
        001-099 are 街道 (with 社区, village part 001...), 100-199 镇 and 200-399 乡 (with 村,
        village part 201...). The district code is ``130609000000``.

    Notes
    -----
    Every overlay uses ``grid_size`` snap rounding, so neighbouring villages share
    bit-identical edges: the union of the villages equals the district and pairwise overlaps
    are exactly zero.
    """
    n = len(seeds)
    if not 2 <= n_townships <= n:
        raise ConfigError(f"n_townships = {n_townships}; expected 2..{n} (the number of villages)")
    points = shapely.points(seeds)
    cells = shapely.get_parts(
        shapely.voronoi_polygons(
            shapely.multipoints(points), extend_to=shapely.buffer(district, 1000), ordered=True
        )
    )
    villages = shapely.intersection(cells, district, grid_size=GRID_PRECISION_M)
    town_of = _group_townships(seeds, n_townships, rng)
    district_geom = shapely.union_all(villages, grid_size=GRID_PRECISION_M)

    # Township order: nearest to the north-east corner first (the "city side": 街道).
    _xmin, _ymin, xmax, ymax = district.bounds
    centres = np.array([seeds[town_of == t].mean(axis=0) for t in range(n_townships)])
    order = np.argsort(np.hypot(centres[:, 0] - xmax, centres[:, 1] - ymax), kind="stable")
    rank = np.empty(n_townships, dtype=int)
    rank[order] = np.arange(n_townships)
    n_street = max(1, round(0.2 * n_townships))
    n_town = max(1, round(0.4 * n_townships))
    kinds = np.where(rank < n_street, "街道", np.where(rank < n_street + n_town, "镇", "乡"))
    first = {"街道": 1, "镇": 100, "乡": 200}
    town_codes = np.empty(n_townships, dtype=object)
    for kind in ("街道", "镇", "乡"):
        members = [t for t in order if kinds[t] == kind]
        for k, t in enumerate(members):
            town_codes[t] = f"{COUNTY_CODE}{first[kind] + k:03d}000"

    town_names = _unique_names(n_townships, rng, _township_name)
    townships = gpd.GeoDataFrame(
        {
            G.CODE: pd.array(town_codes[order].tolist(), dtype="str"),
            G.NAME: [town_names[i] + kinds[t] for i, t in enumerate(order)],
            G.PERSON: _persons(n_townships, rng),
        },
        geometry=[
            shapely.union_all(villages[town_of == t], grid_size=GRID_PRECISION_M) for t in order
        ],
        crs=None,
    )

    # Villages: grouped by township, numbered north to south, west to east.
    v_order = np.lexsort((seeds[:, 0], -seeds[:, 1], rank[town_of]))
    v_codes, v_names = [], []
    base_names = _unique_names(n, rng, _village_name)
    counters: dict[int, int] = {}
    for i in v_order:
        t = town_of[i]
        is_street = kinds[t] == "街道"
        counters[t] = counters.get(t, 0) + 1
        number = counters[t] + (0 if is_street else 200)
        v_codes.append(f"{town_codes[t][:9]}{number:03d}")
        root = base_names[len(v_names)]
        v_names.append((root[:2] + "社区") if is_street else root)
    v_names = _dedupe(v_names)
    village = gpd.GeoDataFrame(
        {
            G.CODE: pd.array(v_codes, dtype="str"),
            G.NAME: v_names,
            G.PERSON: _persons(n, rng),
            G.TOWNSHIP_CODE: pd.array([town_codes[town_of[i]] for i in v_order], dtype="str"),
        },
        geometry=villages[v_order],
    )
    district_gdf = gpd.GeoDataFrame(
        {
            G.CODE: pd.array([f"{COUNTY_CODE}000000"], dtype="str"),
            G.NAME: [DISTRICT_NAME],
            G.PERSON: _persons(1, rng),
        },
        geometry=[district_geom],
    )
    return Grid(district=district_gdf, township=townships, village=village)


def cut_gap(grid: Grid, gap: shapely.Polygon) -> Grid:
    """A new grid with ``gap`` cut out of the villages and townships (not the district).

    Notes
    -----
    ``gap`` must lie strictly inside one village; the district keeps its outline, so the
    hole is a place inside the district that belongs to no village and no township. The
    gap is snapped to :data:`GRID_PRECISION_M` like every other grid vertex.
    """
    gap = shapely.set_precision(gap, GRID_PRECISION_M)
    village = grid.village.copy()
    inside = shapely.contains_properly(village.geometry.values, gap)
    if inside.sum() != 1:
        raise ConfigError(
            f"the grid gap {gap.bounds} lies strictly inside {int(inside.sum())} villages; "
            "expected exactly one"
        )
    village.geometry = shapely.difference(village.geometry.values, gap, grid_size=GRID_PRECISION_M)
    township = grid.township.copy()
    township.geometry = shapely.difference(
        township.geometry.values, gap, grid_size=GRID_PRECISION_M
    )
    return Grid(district=grid.district, township=township, village=village, gap=gap)


def interior_boundaries(village: gpd.GeoDataFrame, district: shapely.Geometry) -> shapely.Geometry:
    """The lines shared by two villages (village boundaries minus the district outline)."""
    lines = shapely.union_all(shapely.boundary(village.geometry.values))
    return shapely.difference(lines, shapely.buffer(shapely.boundary(district), 1.0))


def assign_majority(
    geoms: np.ndarray, village: gpd.GeoDataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The village holding most of each geometry's area.

    Returns
    -------
    village_code, township_code, share : ndarray
        The village with the largest share of the geometry's planar area (the majority in a
        two-way split), and that ``share``. A geometry that meets no village (outside the
        district or inside the gap) gets :data:`pipeline.schema.UNASSIGNED` codes and share 0.

    Notes
    -----
    One :class:`shapely.STRtree` query gives the (geometry, village) pairs; the
    intersection areas are computed vectorised over the pairs.
    """
    geoms = np.asarray(geoms, dtype=object)
    vgeoms = village.geometry.values
    tree = shapely.STRtree(vgeoms)
    gi, vi = tree.query(geoms, predicate="intersects")
    inter = shapely.area(shapely.intersection(geoms[gi], np.asarray(vgeoms)[vi]))
    share = np.zeros(len(geoms))
    best = np.full(len(geoms), -1)
    order = np.lexsort((vi, -inter, gi))  # per geometry: largest area first, ties by village
    gi_s, vi_s, inter_s = gi[order], vi[order], inter[order]
    first = np.unique(gi_s, return_index=True)[1]
    best[gi_s[first]] = vi_s[first]
    share[gi_s[first]] = inter_s[first] / shapely.area(geoms[gi_s[first]])
    ok = best >= 0
    codes = np.asarray(village[G.CODE], dtype=object)
    towns = np.asarray(village[G.TOWNSHIP_CODE], dtype=object)
    v_code = np.where(ok, codes[np.maximum(best, 0)], UNASSIGNED)
    t_code = np.where(ok, towns[np.maximum(best, 0)], UNASSIGNED)
    return v_code, t_code, np.round(share, 4)


# --------------------------------------------------------------------------- helpers
def _group_townships(seeds: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Township index of every seed: nearest of k farthest-point-sampled centres."""
    centres = [int(rng.integers(len(seeds)))]
    dist = np.hypot(*(seeds - seeds[centres[0]]).T)
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        centres.append(nxt)
        dist = np.minimum(dist, np.hypot(*(seeds - seeds[nxt]).T))
    d = np.hypot(
        seeds[:, None, 0] - seeds[centres][None, :, 0],
        seeds[:, None, 1] - seeds[centres][None, :, 1],
    )
    return np.argmin(d, axis=1)


def _township_name(rng: np.random.Generator) -> str:
    return str(rng.choice(_ROOTS_A)) + str(rng.choice(_ROOTS_B))


def _village_name(rng: np.random.Generator) -> str:
    s, d = str(rng.choice(_SURNAMES)), str(rng.choice(_DIRS))
    a, b = str(rng.choice(_ROOTS_A)), str(rng.choice(_ROOTS_B))
    templates = (
        f"{s}家庄村",
        f"{d}{s}庄村",
        f"{d}辛店村",
        f"{s}各庄村",
        f"{a}{b}营村",
        f"{d}{a}屯村",
        f"{a}{b}村",
        f"{s}家坊村",
    )
    return templates[int(rng.integers(len(templates)))]


def _unique_names(n: int, rng: np.random.Generator, make) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        name = make(rng)
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _dedupe(names: list[str]) -> list[str]:
    """Make names unique by suffixing 一, 二, ... to repeats (社区 roots may collide)."""
    out, count = [], {}
    for name in names:
        count[name] = count.get(name, 0) + 1
        out.append(
            name
            if count[name] == 1
            else f"{name[:-2]}{'一二三四五六七八九'[count[name] - 2]}{name[-2:]}"
        )
    return out


def _persons(n: int, rng: np.random.Generator) -> list[str]:
    sur = rng.choice(_SURNAMES, size=n)
    g1 = rng.choice(_GIVEN, size=n)
    g2 = rng.choice(_GIVEN, size=n)
    two = rng.random(n) < 0.7
    return [f"{s}{a}{b}" if t else f"{s}{a}" for s, a, b, t in zip(sur, g1, g2, two)]


__all__ = [
    "COUNTY_CODE",
    "DISTRICT_NAME",
    "Grid",
    "assign_majority",
    "cut_gap",
    "district_outline",
    "interior_boundaries",
    "make_grid",
    "village_seeds",
]
