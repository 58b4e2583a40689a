"""Embedded CJK web font for the self-contained HTML pages (``report.html``, ``patches.html``).

A page that names system fonts only shows Chinese as empty boxes on a machine without a CJK
font (minimal Linux desktops, kiosk browsers). :func:`font_face_css` turns a page's text into
one CSS ``@font-face`` rule whose source is a base64 data URL of a *subset* of the bundled
Noto Sans CJK SC (wheel ``noto-cjk-sans-otc``, SIL Open Font License 1.1) holding only the
characters the page uses. :data:`FONT_STACK` is the ``font-family`` value that prefers it.

Recipe::

    css = font_face_css(html_text)          # "" when the font cannot be had
    # put css at the top of the page's <style>, and font-family: FONT_STACK on body

The subset is made with :mod:`fontTools.subset` (fontTools comes with matplotlib): WOFF with
zlib, or WOFF2 when :mod:`brotli` is importable. It is cached per character set and its bytes
are deterministic, so field packages stay byte-reproducible.
"""

from __future__ import annotations

import base64
import functools
import html
import importlib
import io
import logging
from pathlib import Path

log = logging.getLogger(__name__)

FONT_FAMILY = "Landwatch Noto Sans CJK"
"""CSS family name of the embedded subset (distinct from the installed font's own name)."""

FONT_STACK = (
    f'"{FONT_FAMILY}", "Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", '
    '"WenQuanYi Zen Hei", sans-serif'
)
"""``font-family`` for the pages: the embedded subset first, then system fonts."""

BUNDLED_FONT_MODULES = ("noto_cjk_sans_otc",)
"""Importable packages that ship a CJK font file as ``FONT_PATH`` (tried in this order)."""

PREFERRED_FACE = "Noto Sans CJK SC"
"""Face taken from a font collection (``.ttc``): simplified-Chinese glyph forms."""

SUBSET_NAME_IDS = (0, 1, 2, 3, 4, 5, 6, 13, 14)
"""``name`` table records kept: copyright, names, version, and the OFL licence + URL (13, 14),
which the licence asks to travel with the font."""

DROPPED_LAYOUT_TABLES = ("GSUB", "GPOS", "GDEF", "BASE", "VORG")
"""OpenType layout tables left out of the subset (see :func:`font_face_css`, Notes)."""

CJK_BLOCKS = (
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3000, 0x303F),  # CJK symbols and punctuation: 、。「」《》
    (0x3040, 0x30FF),  # kana (rare in our pages, cheap when present)
    (0x3100, 0x31BF),  # bopomofo
    (0x3200, 0x33FF),  # enclosed CJK letters, CJK compatibility (㎡)
    (0x3400, 0x4DBF),  # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0xFF00, 0xFFEF),  # half-width and full-width forms: （），：；
    (0x20000, 0x3FFFF),  # supplementary ideographic planes (rare place names)
)
"""Code point blocks (inclusive) drawn by the embedded font; everything else is left to the
system fonts, whose Latin glyphs and symbols (· — ≥ “ ”) suit mixed Latin text better."""

_CACHE_SIZE = 64


# --------------------------------------------------------------------------- public
def font_face_css(text: str) -> str:
    """The ``@font-face`` rule embedding the CJK font subset that draws ``text``.

    Parameters
    ----------
    text : str
        The page, or its text. HTML character references are decoded first; tags, CSS and
        base64 images only add ASCII, which is never embedded.

    Returns
    -------
    str
        One CSS rule (family :data:`FONT_FAMILY`, base64 WOFF/WOFF2 ``src``, a
        ``unicode-range`` listing exactly the embedded code points), preceded by a comment
        naming the font and its licence. ``""`` when ``text`` has no character the font
        draws, or when the font package or fontTools is missing (a warning is logged once
        per process); pages then fall back to the system fonts of :data:`FONT_STACK`.

    Notes
    -----
    Only characters of the :data:`CJK_BLOCKS` that the font maps are embedded (ideographs,
    CJK and full-width punctuation); ``unicode-range`` makes the browser use the subset for
    those alone, so Latin text and symbols such as ``·``, ``—``, ``≥`` keep the system
    sans-serif (a CJK font draws them full-width, which looks wrong between Latin words).
    The bytes depend only on the
    character set, the font file, the fontTools version and whether brotli is importable
    (WOFF2 vs WOFF): the same machine always produces the same page.

    The subset has no OpenType layout tables (:data:`DROPPED_LAYOUT_TABLES`): their
    closure would add the Japanese / Korean / traditional alternates (``locl``) and vertical
    forms (``vert``) of every character, doubling the size, and horizontal simplified-Chinese
    text needs neither (the SC face's default glyphs are the mainland forms). Cost: about
    0.3–0.5 s per new character set (then cached) and 0.2–0.3 KB of CSS (base64 WOFF) per
    character: the sample report (135 characters) gains 32 KB, 300 distinct characters
    54–94 KB (frequent simple ones vs. rare complex ones).
    """
    return _font_face_for(page_characters(text))


def page_characters(text: str) -> str:
    """The distinct characters of ``text`` that the embedded font would draw, sorted.

    Notes
    -----
    Returns every non-whitespace character of the :data:`CJK_BLOCKS` after decoding HTML
    character references; whether the font has a glyph for it is checked later (the ones it
    lacks are left to the system fonts). The sorted string is the cache key of the subset.
    """
    chars = {c for c in html.unescape(text) if _is_cjk(ord(c)) and not c.isspace()}
    return "".join(sorted(chars))


def _is_cjk(codepoint: int) -> bool:
    return any(lo <= codepoint <= hi for lo, hi in CJK_BLOCKS)


def subset_font(chars: str) -> tuple[bytes, str, tuple[int, ...]] | None:
    """The bundled CJK font reduced to ``chars``: ``(font bytes, flavor, code points)``.

    ``flavor`` is ``"woff2"`` or ``"woff"``; ``code points`` are the characters of ``chars``
    that the font maps, sorted (the others are dropped). None when the font package or
    fontTools is unavailable, or when the font maps none of ``chars``.

    Notes
    -----
    Cached per character set (pass :func:`page_characters` output to share the cache).
    ``head.modified`` is kept as in the source font (``recalcTimestamp=False``), so the
    bytes do not depend on the clock.
    """
    return _subset_font(page_characters(chars))


def embedding_id() -> str:
    """A short string that changes when the embedded font would change.

    Names the font file (name and size), the face, the WOFF flavor and the fontTools
    version, or ``"none"`` when no font is embedded. Fold it into cache keys of pages
    that embed the font (e.g. the field packages' manifest key).
    """
    source = _bundled_font()
    if source is None:
        return "none"
    path, index = source
    import fontTools

    size = path.stat().st_size
    return f"{path.name}:{size}:{index}:{_flavor()}:fonttools-{fontTools.version}"


def clear_caches() -> None:
    """Forget the found font, its code points and every cached subset.

    For tests, and after installing or removing the font package in a running process.
    """
    for cached in (
        _font_face_for,
        _subset_font,
        document_font,
        _font_codepoints,
        _bundled_font,
        _flavor,
    ):
        cached.cache_clear()


# --------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=_CACHE_SIZE)
def _font_face_for(chars: str) -> str:
    result = _subset_font(chars)
    if result is None:
        return ""
    data, flavor, codepoints = result
    encoded = base64.b64encode(data).decode("ascii")
    return (
        f"/* {PREFERRED_FACE}, subset of {len(codepoints)} characters embedded by landwatch."
        " SIL Open Font License 1.1 (licence text in the font's name table). */\n"
        "@font-face {\n"
        f'  font-family: "{FONT_FAMILY}";\n'
        f'  src: url(data:font/{flavor};base64,{encoded}) format("{flavor}");\n'
        "  font-style: normal;\n"
        "  font-weight: 400;\n"
        "  font-display: swap;\n"
        f"  unicode-range: {unicode_range(codepoints)};\n"
        "}\n"
    )


def unicode_range(codepoints: tuple[int, ...] | list[int]) -> str:
    """CSS ``unicode-range`` for sorted code points, consecutive runs merged.

    >>> unicode_range([0x4E2D, 0x4E2E, 0x4E2F, 0x6751])
    'U+4E2D-4E2F, U+6751'
    """
    parts: list[str] = []
    start = prev = None
    for cp in codepoints:
        if prev is not None and cp == prev + 1:
            prev = cp
            continue
        if start is not None:
            parts.append(_range_part(start, prev))
        start = prev = cp
    if start is not None:
        parts.append(_range_part(start, prev))
    return ", ".join(parts)


def _range_part(start: int, end: int | None) -> str:
    return f"U+{start:X}" if end in (None, start) else f"U+{start:X}-{end:X}"


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _subset_font(chars: str) -> tuple[bytes, str, tuple[int, ...]] | None:
    source = _bundled_font()
    if source is None or not chars:
        return None
    flavor = _flavor()
    result = _subset_bytes(source, chars, flavor)
    return None if result is None else (result[0], flavor, result[1])


@functools.lru_cache(maxsize=_CACHE_SIZE)
def document_font(chars: str) -> bytes | None:
    """The bundled CJK face reduced to ``chars`` and printable ASCII, as a TrueType font file
    for documents that embed fonts themselves (the PDF dossiers); None without the font
    package or fontTools.

    Unlike :func:`subset_font`, every character the font maps is kept (Latin, digits, ``²``,
    ``→`` ...): a PDF has no system font to fall back on. The CFF outlines are converted to
    TrueType quadratic ones (:func:`_to_truetype`): a PDF writer subsets the font again for
    every document, and subsetting TrueType outlines costs half as much as CFF ones, whose
    charstrings are run again to find their bounds. Cached per character set.
    """
    source = _bundled_font()
    if source is None:
        return None
    ascii_chars = "".join(chr(c) for c in range(0x20, 0x7F))
    wanted = "".join(sorted(set(chars) | set(ascii_chars)))
    result = _subset_bytes(source, wanted, None)
    return None if result is None else _to_truetype(result[0])


def _to_truetype(otf: bytes) -> bytes:
    """An OpenType/CFF font as TrueType: each glyph redrawn through fontTools' cubic-to-
    quadratic pen into a ``glyf`` table (1 font unit tolerance), ``maxp`` and ``post`` made
    for TrueType outlines."""
    from fontTools.pens.cu2quPen import Cu2QuPen
    from fontTools.pens.ttGlyphPen import TTGlyphPen
    from fontTools.ttLib import TTFont, newTable

    font = TTFont(io.BytesIO(otf))
    order = font.getGlyphOrder()
    glyphs = font.getGlyphSet()
    glyf = newTable("glyf")
    glyf.glyphOrder, glyf.glyphs = order, {}
    for name in order:
        pen = TTGlyphPen(glyphs)
        glyphs[name].draw(Cu2QuPen(pen, 1.0, reverse_direction=True))
        glyf[name] = pen.glyph()
    font["loca"], font["glyf"] = newTable("loca"), glyf
    del font["CFF "]
    maxp = font["maxp"] = newTable("maxp")
    maxp.tableVersion = 0x00010000
    for field in ("maxTwilightPoints", "maxStorage", "maxFunctionDefs", "maxInstructionDefs",
                  "maxStackElements", "maxSizeOfInstructions", "maxComponentElements"):  # fmt: skip
        setattr(maxp, field, 0)
    maxp.maxZones = 1
    post = font["post"]
    post.formatType, post.extraNames, post.mapping, post.glyphOrder = 2.0, [], {}, order
    font["head"].glyphDataFormat = 0
    font.sfntVersion = "\0\1\0\0"
    buffer = io.BytesIO()
    font.save(buffer)
    return buffer.getvalue()


def _subset_bytes(
    source: tuple[Path, int], chars: str, flavor: str | None
) -> tuple[bytes, tuple[int, ...]] | None:
    """Subset of face ``source`` holding the mapped ones of ``chars``: (bytes, code points)."""
    from fontTools import subset
    from fontTools.ttLib import TTFont, TTLibError

    path, index = source
    try:
        mapped = _font_codepoints(path, index)
        codepoints = tuple(sorted({ord(c) for c in chars if ord(c) in mapped}))
        if not codepoints:
            return None
        # recalcBBoxes=False keeps the whole font's bounding box (harmless, and saves
        # interpreting every charstring again on save)
        font = TTFont(
            str(path), fontNumber=index, lazy=True, recalcTimestamp=False, recalcBBoxes=False
        )
        options = subset.Options()
        options.flavor = flavor
        options.hinting = False  # CFF hints: larger file, no visible gain at screen sizes
        options.desubroutinize = True  # smaller once compressed, and simpler CFF
        options.name_IDs = list(SUBSET_NAME_IDS)
        options.recalc_timestamp = False
        options.recalc_bounds = False
        # the layout tables' closure pulls in the JP/KR/TC/HK alternates (locl) and the
        # vertical forms (vert): about half the bytes, unused in horizontal zh-CN pages
        options.drop_tables = [*options.drop_tables, *DROPPED_LAYOUT_TABLES]
        subsetter = subset.Subsetter(options)
        subsetter.populate(unicodes=codepoints)
        subsetter.subset(font)
        font.flavor = flavor
        buffer = io.BytesIO()
        font.save(buffer, reorderTables=True)
    except (OSError, TTLibError, KeyError, ValueError) as exc:
        log.warning(
            "could not subset the CJK font %s (face %d): %s; pages fall back to system fonts",
            path,
            index,
            exc,
        )
        return None
    log.debug("CJK font subset: %d characters, %d bytes %s", len(codepoints), buffer.tell(), flavor)
    return buffer.getvalue(), codepoints


@functools.cache
def _font_codepoints(path: Path, index: int) -> frozenset[int]:
    """The code points the font face maps (its best ``cmap``), read once per process."""
    from fontTools.ttLib import TTFont

    with TTFont(str(path), fontNumber=index, lazy=True) as font:
        return frozenset(font.getBestCmap())


@functools.cache
def _flavor() -> str:
    try:
        importlib.import_module("brotli")
    except ImportError:
        return "woff"
    return "woff2"


@functools.cache
def _bundled_font() -> tuple[Path, int] | None:
    """``(font file, face index)`` of the bundled CJK font, or None (warned once)."""
    try:
        importlib.import_module("fontTools.subset")
    except ImportError:
        log.warning(
            "fontTools is not installed, so the HTML pages embed no Chinese font and show "
            "Chinese only where a CJK system font exists; install it with "
            "`pip install fonttools`"
        )
        return None
    for path in bundled_font_files():
        return path, _face_index(path)
    log.warning(
        "no bundled CJK font (tried packages %s), so the HTML pages embed no Chinese font "
        "and show Chinese only where a CJK system font exists; install it with "
        "`pip install noto-cjk-sans-otc`",
        ", ".join(BUNDLED_FONT_MODULES),
    )
    return None


def bundled_font() -> tuple[Path, int] | None:
    """``(font file, face index)`` of the bundled CJK font (the simplified-Chinese face of
    a collection; -1 for a single font), or None when it is not installed."""
    return _bundled_font()


def bundled_font_files() -> list[Path]:
    """Font files shipped by the packages of :data:`BUNDLED_FONT_MODULES` that are installed
    (shared by the HTML pages and the charts)."""
    files = []
    for name in BUNDLED_FONT_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        path = Path(str(module.FONT_PATH))
        if path.is_file():
            files.append(path)
        else:
            log.warning("package %s names a font file that does not exist: %s", name, path)
    return files


def _face_index(path: Path) -> int:
    """Index of :data:`PREFERRED_FACE` in a ``.ttc`` collection (0 if absent; -1 for one font).

    Notes
    -----
    Noto Sans CJK collections hold JP, KR, SC, TC, HK (and Mono) faces that share glyphs but
    map some characters to regional forms; SC gives the mainland shapes.
    """
    from fontTools.ttLib import TTCollection, TTLibError

    with open(path, "rb") as fh:
        if fh.read(4) != b"ttcf":
            return -1
    try:
        collection = TTCollection(str(path), lazy=True)
    except (OSError, TTLibError) as exc:
        log.warning("could not read the font collection %s: %s; using its first face", path, exc)
        return 0
    with collection:
        for i, face in enumerate(collection.fonts):
            if face["name"].getDebugName(1) == PREFERRED_FACE:
                return i
    return 0
