"""Formatting shared by the field packages and the report: values as text and labels, dates,
reproducible XLSX and zip entries, and the HTML templates.

Pure: nothing here reads or writes a file except the templates shipped in
``pipeline/outputs/templates`` (read through :mod:`importlib.resources`).
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.resources
import io
import math
import re
import zipfile
from collections.abc import Iterable
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup
from openpyxl import Workbook

from pipeline import __version__
from pipeline.errors import ConfigError, InputDataError
from pipeline.outputs import webfont
from pipeline.schema import CHINESE_LABELS
from pipeline.units import MU_M2, parse_date

UNDEFINED = "—"
"""Shown for an undefined value (an undefined rate: no illegal patch, empty denominator)."""


# --------------------------------------------------------------------------- values
def isna(value: Any) -> bool:
    """True for None, ``pd.NA``, NaN and NaT; False for anything pandas cannot judge."""
    if value is None or value is pd.NA:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def text(value: Any) -> str:
    """The value as text; ``""`` when missing."""
    return "" if isna(value) else str(value)


def label(value: Any) -> str:
    """Chinese label of a status value, else the value itself; ``""`` when missing."""
    if isna(value):
        return ""
    return CHINESE_LABELS.get(value, str(value))


def floats(series: pd.Series) -> pd.Series:
    """Numbers as float64 with NaN for missing (also from nullable dtypes and text)."""
    numbers = pd.to_numeric(series, errors="coerce")
    return pd.Series(numbers.to_numpy(dtype="float64", na_value=np.nan), index=series.index)


def fmt_float(value: Any, digits: int) -> str:
    """``value`` with ``digits`` decimals; ``""`` when missing or infinite."""
    if isna(value):
        return ""
    v = float(value)
    return "" if math.isinf(v) else f"{v:.{digits}f}"


def check_columns(frame: pd.DataFrame, required: Iterable[str], what: str) -> None:
    """Raise :class:`InputDataError` naming the columns of ``required`` that ``frame`` lacks."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"{what} lacks columns {missing} (has {list(frame.columns)}); build it with the "
            "pipeline's loaders so it follows pipeline.schema"
        )


def output_date(date: str) -> dt.date:
    """The date of an export or report (``YYYY-MM-DD``), which also stamps its files.

    Raises
    ------
    ConfigError
        When ``date`` is missing or not a date (:func:`pipeline.units.parse_date` reads it).
    """
    try:
        day = parse_date(date)
    except ValueError:
        day = None
    if day is None:
        raise ConfigError(
            f"date {date!r} is not an ISO date; expected YYYY-MM-DD, e.g. '2024-05-01'"
        )
    return day


# --------------------------------------------------------------------------- reproducible files
def workbook_bytes(wb: Workbook, *, date: str) -> bytes:
    """The workbook as XLSX bytes that depend only on its content and ``date``.

    Notes
    -----
    openpyxl stamps the save time into ``docProps/core.xml`` and into every zip entry;
    both are replaced by ``date`` (midnight) so equal workbooks give equal bytes.
    """
    when = dt.datetime.combine(output_date(date), dt.time())
    wb.properties.creator = f"landwatch {__version__}"
    wb.properties.created = when
    buf = io.BytesIO()
    wb.save(buf)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = re.sub(
                    rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)",
                    rb"\g<1>" + stamp.encode() + rb"\g<2>",
                    data,
                )
            dst.writestr(fixed_zipinfo(info.filename, when), data)
    return out.getvalue()


def fixed_zipinfo(name: str, when: dt.datetime) -> zipfile.ZipInfo:
    """A zip entry header with a fixed time, Unix attributes and deflate (reproducible)."""
    info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, whatever the platform writing it
    info.external_attr = 0o644 << 16
    return info


# --------------------------------------------------------------------------- templates
def render_page(template: str, /, **context: Any) -> str:
    """Render a self-contained HTML page that embeds the CJK font subset for its own text.

    The template receives ``font_face_css`` (put it first in ``<style>``) and
    ``font_family`` (the ``font-family`` value of ``body``), both as safe markup.

    Notes
    -----
    The page is rendered twice: once without the font to learn which characters it shows,
    then with the ``@font-face`` of exactly those (:func:`pipeline.outputs.webfont.font_face_css`;
    the rule adds only ASCII, so the character set does not change). Without the font
    package the first rendering is the result and a warning is logged once.
    """
    fonts = {"font_family": Markup(webfont.FONT_STACK)}
    draft = render_template(template, font_face_css=Markup(""), **fonts, **context)
    css = webfont.font_face_css(draft)
    if not css:
        return draft
    return render_template(template, font_face_css=Markup(css), **fonts, **context)


def render_template(template: str, /, **context: Any) -> str:
    """Render a template shipped in ``pipeline/outputs/templates`` (read via importlib.resources).

    Filters available in templates: ``mu`` (m² -> 亩, 2 decimals), ``pct`` (0.853 ->
    ``85.3%``), ``num`` (2 decimals), ``deg`` (6 decimals); undefined values show "—".
    """
    return _jinja_env().get_template(template).render(**context)


@functools.cache
def _jinja_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load_template),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["mu"] = lambda v: UNDEFINED if isna(v) else f"{float(v) / MU_M2:.2f}"
    env.filters["pct"] = lambda v: UNDEFINED if isna(v) else f"{float(v):.1%}"
    env.filters["num"] = lambda v: UNDEFINED if isna(v) else f"{float(v):.2f}"
    env.filters["deg"] = lambda v: UNDEFINED if isna(v) else f"{float(v):.6f}"
    env.filters["int1"] = lambda v: UNDEFINED if isna(v) else f"{float(v):.0f}"
    env.filters["yuan"] = lambda v: UNDEFINED if isna(v) else f"{float(v):,.0f}"
    return env


def _load_template(name: str) -> str | None:
    resource = importlib.resources.files("pipeline.outputs").joinpath("templates", name)
    if not resource.is_file():
        return None
    return resource.read_text(encoding="utf-8")
