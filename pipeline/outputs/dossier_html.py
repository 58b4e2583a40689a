"""The dossier as one self-contained HTML page (``dossier.html.j2``): the same content as the
PDF, images embedded as ``data:`` URLs (the page can be moved, mailed or opened from a zip
on its own), the CJK font subset embedded like the other pages.

A batch of dossiers shares one font subset (:func:`batch_font_css`): subsetting costs about
half a second per character set, which would dominate a nightly run that writes hundreds.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from markupsafe import Markup

from pipeline import __version__
from pipeline.outputs import webfont
from pipeline.outputs.dossier import LABELS, Dossier
from pipeline.outputs.formatting import render_template

TEMPLATE = "dossier.html.j2"


def dossier_html(dossier: Dossier, *, font_css: str = "") -> str:
    """The page; ``font_css`` is the ``@font-face`` rule to embed (see :func:`batch_font_css`)."""
    images = dossier.images
    return render_template(
        TEMPLATE,
        d=dossier,
        L=LABELS,
        version=__version__,
        font_face_css=Markup(font_css),
        font_family=Markup(webfont.FONT_STACK),
        location=_data_url(images.location_png, "image/png"),
        chip=_data_url(images.chip_png, "image/png"),
        photos=[(_data_url(p.jpeg, "image/jpeg"), p.caption) for p in images.photos],
    )


def batch_font_css(dossiers: Sequence[Dossier]) -> str:
    """One ``@font-face`` rule drawing every dossier of the batch (pages rendered once
    without images to learn their characters)."""
    drafts = [
        render_template(TEMPLATE, d=d, L=LABELS, version="", font_face_css="", font_family="",
                        location="", chip="", photos=[("", p.caption) for p in d.images.photos])
        for d in dossiers
    ]  # fmt: skip
    return webfont.font_face_css("".join(drafts))


def _data_url(data: bytes | None, mime: str) -> str:
    if not data:
        return ""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
