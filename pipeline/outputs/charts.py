"""Report figures: the rectification-rate map, the township ranking and the trend.

Figures are built with the object-oriented matplotlib API on the Agg canvas
(:class:`matplotlib.figure.Figure` + :class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`),
never through ``pyplot``: no global figure state, no GUI backend, safe in worker processes.

Chinese text needs a CJK font. :func:`find_cjk_font` first registers the font shipped by the
``noto-cjk-sans-otc`` wheel (Noto Sans CJK, SIL OFL 1.1; a dependency of landwatch, so a
fresh ``pip install`` brings it), then looks among the fonts matplotlib knows; when there is
none the charts label units by code and use English titles (the caller logs a warning)
instead of drawing empty boxes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from collections.abc import Iterator, Sequence

import geopandas as gpd
import matplotlib
import numpy as np
import pandas as pd
from matplotlib import cm, colors, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from pipeline.schema import G

log = logging.getLogger(__name__)

CJK_FONT_CANDIDATES = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
    "Heiti SC",
    "STHeiti",
    "Noto Serif CJK SC",
    "AR PL UMing CN",
    "Arial Unicode MS",
)
"""Font families tried first, in this order, before scanning every font for Chinese glyphs."""


_PROBE_CHARS = "中村镇"
MISSING_COLOR = "#e6e6e6"
TARGET_COLOR = "#333333"
MET_COLOR = "#4caf50"
MISSED_COLOR = "#e53935"


# --------------------------------------------------------------------------- fonts
@functools.cache
def find_cjk_font() -> str | None:
    """The family name of a font that can draw Chinese, or None when none is installed.

    Notes
    -----
    Known CJK families (:data:`CJK_FONT_CANDIDATES`) are tried first; then every font file
    matplotlib knows is probed for distinct glyphs of "中村镇" (placeholder fonts such as
    matplotlib's "Last Resort" are skipped). The answer is cached for the
    process; call ``find_cjk_font.cache_clear()`` after installing fonts.
    """
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    register_bundled_fonts()
    fonts = font_manager.fontManager.ttflist
    names = {f.name for f in fonts}
    for candidate in CJK_FONT_CANDIDATES:
        if candidate in names:
            return candidate
    for font in sorted(fonts, key=lambda f: (f.name, f.fname)):
        if "last resort" in font.name.lower():  # maps every character to a placeholder box
            continue
        try:
            charmap = FT2Font(font.fname).get_charmap()
        except (OSError, RuntimeError, ValueError):  # unreadable font file: skip it
            continue
        glyphs = {charmap.get(ord(c)) for c in _PROBE_CHARS}
        # real CJK fonts have a distinct glyph per character; fallback fonts share one box
        if None not in glyphs and len(glyphs) == len(_PROBE_CHARS):
            return font.name
    return None


@functools.cache
def register_bundled_fonts() -> tuple[str, ...]:
    """Add the CJK fonts shipped by Python packages to matplotlib's font list.

    Returns the font files registered (empty when no such package is installed).

    Notes
    -----
    ``fontManager.addfont`` only affects this process (matplotlib's on-disk font cache is
    not touched), so it runs once per process, cached. matplotlib >= 3.10 registers every
    face of a ``.ttc`` collection (Noto Sans CJK SC / TC / JP / KR / HK).
    """
    from matplotlib import font_manager

    from pipeline.outputs.webfont import bundled_font_files

    done = []
    for path in bundled_font_files():
        try:
            font_manager.fontManager.addfont(str(path))
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("could not register the font %s: %s", path, exc)
            continue
        done.append(str(path))
    return tuple(done)


@contextlib.contextmanager
def font_context(font: str | None) -> Iterator[None]:
    """Use ``font`` (a family name, or None for the default) for figures built *and saved*
    inside the block.

    Notes
    -----
    matplotlib resolves the family list when text is drawn, so both building and saving a
    figure must happen inside the block.
    """
    if font is None:
        yield
        return
    with matplotlib.rc_context(
        {"font.family": "sans-serif", "font.sans-serif": [font, "DejaVu Sans"]}
    ):
        yield


def figure_png(fig: Figure, *, dpi: int = 120) -> bytes:
    """The figure as PNG bytes (no software/version metadata, so the bytes are stable)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


# --------------------------------------------------------------------------- charts
def rect_rate_map(
    villages: gpd.GeoDataFrame,
    townships: gpd.GeoDataFrame,
    rates: pd.Series,
    labels: pd.Series,
    *,
    target: float,
    title: str,
    missing_label: str,
) -> Figure:
    """Choropleth of the rectification rate per village with township outlines.

    Parameters
    ----------
    villages, townships : GeoDataFrame
        Grid polygons (same CRS; a projected CRS keeps shapes true). ``villages`` has
        :attr:`G.CODE`.
    rates : Series
        Rate (0–1) per village code; NaN where undefined (no illegal patch).
    labels : Series
        Label drawn on each village, per village code.
    target : float
        Target rate, marked on the colour bar.
    title, missing_label : str
        Figure title and legend text for villages without a rate.

    Notes
    -----
    Villages without a rate are grey, not red: "no illegal patch" is not "0 % rectified".
    """
    frame = villages[[G.CODE, villages.geometry.name]].copy()
    frame["_rate"] = frame[G.CODE].map(rates).astype("float64")
    frame["_label"] = frame[G.CODE].map(labels).fillna(frame[G.CODE])

    fig = Figure(figsize=(8.0, 7.0), layout="constrained")
    ax = fig.add_subplot()
    defined = frame[frame["_rate"].notna()]
    undefined = frame[frame["_rate"].isna()]
    if len(undefined):
        undefined.plot(ax=ax, color=MISSING_COLOR, edgecolor="#999999", linewidth=0.5)
    cmap = matplotlib.colormaps["RdYlGn"]
    norm = colors.Normalize(vmin=0.0, vmax=1.0)
    if len(defined):
        defined.plot(
            ax=ax, column="_rate", cmap=cmap, norm=norm, edgecolor="#999999", linewidth=0.5
        )
    if len(townships):
        townships.boundary.plot(ax=ax, color="#222222", linewidth=1.6)
    points = frame.geometry.representative_point()
    for x, y, text in zip(points.x, points.y, frame["_label"], strict=True):
        ax.annotate(text, (x, y), ha="center", va="center", fontsize=7, color="#222222")
    cbar = fig.colorbar(
        cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.7, format="{x:.0%}"
    )
    cbar.ax.axhline(target, color=TARGET_COLOR, linewidth=2)
    ax.legend(
        handles=[Patch(facecolor=MISSING_COLOR, edgecolor="#999999", label=missing_label)],
        loc="lower left",
        fontsize=8,
    )
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return fig


def township_ranking(
    names: Sequence[str],
    rates: Sequence[float],
    *,
    target: float,
    title: str,
    target_label: str,
    missing_label: str,
) -> Figure:
    """Horizontal bars of the rectification rate per township, best first.

    ``names`` and ``rates`` are in ranking order (best first, undefined last); undefined
    rates (NaN, no illegal patch) get no bar but ``missing_label`` beside the name.
    Bars under ``target`` are red, the others green; the target is a dashed line.
    """
    values = np.asarray(rates, dtype="float64")
    n = len(values)
    fig = Figure(figsize=(8.0, max(2.5, 0.4 * n + 1.2)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]  # best on top
    shown = np.nan_to_num(values, nan=0.0)
    bar_colors = np.where(values >= target, MET_COLOR, MISSED_COLOR)
    ax.barh(y, shown, color=bar_colors)
    for yi, value in zip(y, values, strict=True):
        text = missing_label if np.isnan(value) else f"{value:.1%}"
        ax.text(0.01 if np.isnan(value) else value + 0.01, yi, text, va="center", fontsize=8)
    ax.axvline(target, color=TARGET_COLOR, linestyle="--", linewidth=1.2, label=target_label)
    ax.set_yticks(y, list(names))
    ax.set_xlim(0, 1.15)
    ax.xaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    return fig


def trend(
    dates: Sequence[str],
    series: dict[str, Sequence[float]],
    targets: dict[str, float],
    *,
    title: str,
) -> Figure:
    """Line chart of district rates over report dates.

    ``series`` maps a legend label to one value (0–1, NaN allowed) per date; ``targets``
    maps a label to a target drawn as a dashed horizontal line. Dates are categories in
    the order given (ISO dates sort correctly as text).
    """
    fig = Figure(figsize=(8.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(dates))
    for label, values in series.items():
        ax.plot(x, np.asarray(values, dtype="float64"), marker="o", label=label)
    for label, value in targets.items():
        ax.axhline(value, linestyle="--", linewidth=1.0, color="#777777")
        ax.annotate(label, (x[-1] if len(x) else 0, value), fontsize=7, va="bottom", ha="right")
    ax.set_xticks(x, list(dates))
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    return fig


def funnel(labels: Sequence[str], counts: Sequence[int], *, total: int, title: str) -> Figure:
    """Horizontal bars: illegal patches that reached each enforcement stage, in the order
    given (the steps first, then the outcomes), each with its count and share of ``total``."""
    values = np.asarray(counts, dtype="float64")
    fig = Figure(figsize=(8.0, 0.42 * len(values) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(values))[::-1]
    ax.barh(y, values, color="#2b5797")
    for yi, v in zip(y, values, strict=True):
        share = f" ({v / total:.0%})" if total else ""
        ax.text(v, yi, f" {int(v)}{share}", va="center", fontsize=8)
    ax.set_yticks(y, list(labels))
    ax.set_xlim(0, max(1.0, float(values.max(initial=0)) * 1.25))
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_title(title)
    return fig


def burnup(
    days: Sequence,
    rates: dict[str, Sequence[float]],
    *,
    start,
    deadline,
    target: float,
    today,
    title: str,
    plan_label: str,
    emphasis: str | None = None,
) -> Figure:
    """The rectification rate by date (one line per label) against the plan: a straight
    dashed line from 0 on ``start`` to ``target`` on ``deadline``; ``today`` is marked. The
    line labelled ``emphasis`` (the district) is drawn thick and black over the others, which
    get distinct colours (up to 20)."""
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    x = pd.to_datetime(pd.Index(days))
    palette = matplotlib.colormaps["tab20"].colors
    others = [label for label in rates if label != emphasis]
    for i, label in enumerate(others):
        ax.plot(x, np.asarray(rates[label], dtype="float64"), label=label, linewidth=1.0,
                color=palette[i % len(palette)], alpha=0.85)  # fmt: skip
    if emphasis in rates:
        ax.plot(x, np.asarray(rates[emphasis], dtype="float64"), label=emphasis, linewidth=2.8,
                color="black", zorder=5)  # fmt: skip
    ax.plot(pd.to_datetime([start, deadline]), [0.0, target], "--", color=TARGET_COLOR,
            linewidth=1.0, label=plan_label)  # fmt: skip
    ax.axvline(pd.Timestamp(today), color="#999999", linewidth=0.8)
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    ax.legend(fontsize=6, loc="upper left", ncol=2 if len(rates) > 8 else 1)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    ax.set_title(title)
    return fig


def cases_per_period(periods: Sequence[str], counts: Sequence[int], *, title: str) -> Figure:
    """Bars of new illegal cases per period (month, quarter or year), oldest first."""
    fig = Figure(figsize=(8.0, 3.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(periods))
    ax.bar(x, np.asarray(counts, dtype="float64"), color=MISSED_COLOR)
    ax.set_xticks(x, list(periods), rotation=45 if len(periods) > 8 else 0, fontsize=8)
    ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_title(title)
    return fig
