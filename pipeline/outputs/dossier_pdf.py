"""The dossier as an A4 PDF, drawn with fpdf2 (LGPL-3.0, pure Python, installed by pip).

fpdf2 embeds OpenType fonts with CFF outlines and reads font collections, so the bundled
Noto Sans CJK (``noto-cjk-sans-otc``, an OTC collection of CFF faces) draws the Chinese
text, and the text stays text: it can be searched and copied out of the PDF. Loading the
whole 19 MB collection costs about half a second per document, so a batch of dossiers shares
one subset of the face (:func:`pipeline.outputs.webfont.document_font`) holding the
characters of the whole batch; fpdf2 reduces it again to the glyphs each page uses.

Recipe::

    with DossierFont(dossier_font(t for d in dossiers for t in d.texts())) as font:
        for d in dossiers:
            pdf_bytes = dossier_pdf(d, font)
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from fpdf import FPDF, FPDF_VERSION
from fpdf.fonts import FontFace
from PIL import Image

from pipeline import __version__
from pipeline.errors import DossierError
from pipeline.outputs import webfont
from pipeline.outputs.dossier import LABELS, Dossier

log = logging.getLogger(__name__)

FAMILY = "dossier"
MARGIN_MM = 12.0
PAGE_W_MM = 210.0
BODY_W_MM = PAGE_W_MM - 2 * MARGIN_MM
LEFT_W_MM = 106.0
MAP_MM = 74.0
CHIP_MAX_H_MM = 42.0
PHOTO_COLUMNS = 6
HEADING_FILL = (221, 235, 247)


def renderer_id() -> str:
    """What else decides the PDF's bytes: the font embedding and the fpdf2 version (folded
    into every dossier's key, so an upgrade draws the dossiers again)."""
    return f"{webfont.embedding_id()}|fpdf2-{FPDF_VERSION}"


def dossier_font(texts: Iterable[str]) -> bytes:
    """The font file (OpenType/CFF bytes) for a batch: the bundled CJK face reduced to the
    characters of ``texts`` (e.g. every :meth:`Dossier.texts` of the batch).

    Raises
    ------
    DossierError
        The bundled font (or fontTools) is missing: a PDF without it would show no Chinese.
    """
    data = webfont.document_font("".join(sorted({c for t in texts for c in t})))
    if data is None:
        raise DossierError(
            "the PDF dossiers need the bundled CJK font, which could not be loaded "
            f"(packages tried: {', '.join(webfont.BUNDLED_FONT_MODULES)}); reinstall "
            "landwatch with `pip install -e .` (it brings `noto-cjk-sans-otc`)"
        )
    return data


class DossierFont:
    """Font bytes from :func:`dossier_font` as a file in a temporary folder (fpdf2 reads fonts
    from files); use it as a context manager."""

    def __init__(self, data: bytes):
        self._dir = tempfile.TemporaryDirectory(prefix="landwatch-font-")
        self.path = Path(self._dir.name) / "dossier.ttf"
        self.path.write_bytes(data)

    def __enter__(self) -> DossierFont:
        return self

    def __exit__(self, *exc) -> None:
        self._dir.cleanup()


def dossier_pdf(dossier: Dossier, font: DossierFont) -> bytes:
    """The dossier as PDF bytes (A4 portrait; more pages only when the history or the photos
    need them). The bytes depend only on the dossier, the font and the fpdf2 version."""
    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_margins(MARGIN_MM, MARGIN_MM, MARGIN_MM)
    pdf.set_auto_page_break(True, margin=MARGIN_MM)
    pdf.add_font(FAMILY, fname=str(font.path))
    when = dt.datetime.fromisoformat(dossier.as_of or "2000-01-01").replace(tzinfo=dt.UTC)
    pdf.set_creation_date(when)
    pdf.set_creator(f"landwatch {__version__}")
    pdf.set_title(f"{LABELS['title']} {dossier.patch_id}")
    pdf.add_page()
    _header(pdf, dossier)
    top = pdf.get_y() + 2
    bottom = _left_column(pdf, dossier, top)
    if dossier.images.location_png:
        pdf.image(io.BytesIO(dossier.images.location_png), x=MARGIN_MM + LEFT_W_MM + 4,
                  y=top, w=MAP_MM, h=MAP_MM)  # fmt: skip
        bottom = max(bottom, top + MAP_MM)
    pdf.set_y(bottom + 3)
    _chip(pdf, dossier)
    _history(pdf, dossier)
    _photos(pdf, dossier)
    return bytes(pdf.output())


def _header(pdf: FPDF, dossier: Dossier) -> None:
    pdf.set_font(FAMILY, size=16)
    pdf.cell(w=BODY_W_MM - 40, h=9, text=f"{LABELS['title']}  {dossier.patch_id}")
    pdf.set_fill_color(*(int(c) for c in dossier.status_colour.split(",")))
    pdf.set_font(FAMILY, size=10)
    pdf.cell(w=40, h=9, text=dossier.status, fill=True, align="C",
             new_x="LMARGIN", new_y="NEXT")  # fmt: skip
    pdf.set_fill_color(255, 255, 255)
    pdf.set_font(FAMILY, size=8)
    pdf.set_text_color(90, 90, 90)
    sep = LABELS["sep"]
    as_of = f"{sep}{LABELS['as_of']} {dossier.as_of}" if dossier.as_of else ""
    pdf.cell(text=f"{dossier.area_name}{sep}{LABELS['kind']}{as_of}",
             new_x="LMARGIN", new_y="NEXT")  # fmt: skip
    pdf.set_text_color(0, 0, 0)


def _left_column(pdf: FPDF, dossier: Dossier, top: float) -> float:
    """Facts, areas and approval references beside the map; the y where they end."""
    pdf.set_y(top)
    pdf.set_font(FAMILY, size=8)
    _table(pdf, [(LABELS["item"], LABELS["value"]), *dossier.facts], (36, LEFT_W_MM - 36))
    pdf.ln(2)
    _table(pdf, [(LABELS["area"], LABELS["m2"], LABELS["mu"]), *dossier.areas], (56, 28, LEFT_W_MM - 84),
           numeric=(1, 2))  # fmt: skip
    pdf.ln(1)
    pdf.multi_cell(w=LEFT_W_MM, h=4, text=f"{LABELS['refs']}: {dossier.approval_refs}",
                   new_x="LMARGIN", new_y="NEXT")  # fmt: skip
    return pdf.get_y()


def _table(
    pdf: FPDF,
    rows: Sequence[Sequence[str]],
    widths: Sequence[float],
    *,
    numeric: Sequence[int] = (),
    width: float | None = None,
    line_height: float = 3.7,
) -> None:
    """A bordered table at the left margin, the first row as headings."""
    align = ["RIGHT" if i in numeric else "LEFT" for i in range(len(widths))]
    with pdf.table(
        width=width or sum(widths),
        col_widths=tuple(widths),
        align="LEFT",
        text_align=tuple(align),
        line_height=line_height,
        headings_style=FontFace(emphasis=None, fill_color=HEADING_FILL),
        borders_layout="ALL",
        cell_fill_mode="NONE",
        padding=0.8,
    ) as table:
        for row in rows:
            cells = table.row()
            for value in row:
                cells.cell(value)


def _chip(pdf: FPDF, dossier: Dossier) -> None:
    png = dossier.images.chip_png
    if not png:
        pdf.set_font(FAMILY, size=8)
        pdf.cell(text=LABELS["no_chip"], new_x="LMARGIN", new_y="NEXT")
        return
    w, h = _size_mm(png, BODY_W_MM, CHIP_MAX_H_MM)
    _room_for(pdf, h + 6)
    pdf.set_font(FAMILY, size=9)
    pdf.cell(text=LABELS["chip"], new_x="LMARGIN", new_y="NEXT")
    pdf.image(io.BytesIO(png), x=MARGIN_MM + (BODY_W_MM - w) / 2, w=w, h=h)
    pdf.ln(2)


def _history(pdf: FPDF, dossier: Dossier) -> None:
    _room_for(pdf, 20)
    pdf.set_font(FAMILY, size=9)
    pdf.cell(text=LABELS["history"], new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FAMILY, size=7.5)
    rows = [(LABELS["day"], LABELS["event"], LABELS["detail"], LABELS["source"])]
    rows += [(e.day, e.kind, e.detail, e.source) for e in dossier.events]
    _table(pdf, rows, (20, 32, 84, BODY_W_MM - 136), line_height=3.4)
    pdf.ln(2)


def _photos(pdf: FPDF, dossier: Dossier) -> None:
    photos = dossier.images.photos
    if not photos:
        return
    _room_for(pdf, 30)
    pdf.set_font(FAMILY, size=9)
    more = dossier.images.photos_left_out
    extra = f"（{LABELS['more_photos'].format(n=more)}）" if more else ""
    pdf.cell(text=f"{LABELS['photos']}{extra}", new_x="LMARGIN", new_y="NEXT")
    cell_w = (BODY_W_MM - 4 * (PHOTO_COLUMNS - 1)) / PHOTO_COLUMNS
    pdf.set_font(FAMILY, size=7)
    for start in range(0, len(photos), PHOTO_COLUMNS):
        group = photos[start : start + PHOTO_COLUMNS]
        sizes = [_size_mm(p.jpeg, cell_w, cell_w * 0.7) if p.jpeg else (cell_w, 8.0)
                 for p in group]  # fmt: skip
        row_h = max(h for _, h in sizes) + 6.5
        _room_for(pdf, row_h)
        y = pdf.get_y()
        for k, (photo, (w, h)) in enumerate(zip(group, sizes, strict=True)):
            x = MARGIN_MM + k * (cell_w + 4)
            if photo.jpeg:
                pdf.image(io.BytesIO(photo.jpeg), x=x, y=y, w=w, h=h)
            pdf.set_xy(x, y + h + 0.5)
            pdf.multi_cell(w=cell_w, h=3.2, text=photo.caption)
        pdf.set_xy(MARGIN_MM, y + row_h)


def _room_for(pdf: FPDF, height_mm: float) -> None:
    """A new page when less than ``height_mm`` is left on this one."""
    if pdf.get_y() + height_mm > pdf.h - MARGIN_MM:
        pdf.add_page()


def _size_mm(image: bytes, max_w: float, max_h: float) -> tuple[float, float]:
    """Width and height (mm) of ``image`` fitted into ``max_w`` × ``max_h``."""
    with Image.open(io.BytesIO(image)) as img:
        w, h = img.size
    scale = min(max_w / w, max_h / h)
    return w * scale, h * scale
