"""The text encoding of a Shapefile's attribute table (its ``.dbf``): declared or detected.

Shapefiles from Chinese bureaus usually come in GBK, without a ``.cpg`` and with a DBF
language-driver byte of 0; GDAL then reads their text as Latin-1 (``ÇàÄþ½ÖµÀ`` for 青宁街道)
without a word. :func:`decide_encoding` settles the encoding of a layer once, by these rules,
first match wins:

1. the ``encoding`` key of the layer in config.yaml;
2. the ``.cpg`` file beside the ``.dbf`` (``UTF-8``, ``GBK``, ``936``, ``ANSI 936``, ...);
3. the DBF language-driver byte (byte 29), when it names a code page
   (:data:`LANGUAGE_DRIVERS`; 0 and 0x57 "current ANSI code page" say nothing);
4. strict UTF-8, when every text value and field name decodes;
5. GB18030 (a superset of GBK and GB2312), when every one decodes *and* the text reads as
   Chinese (:func:`common_chinese_share`): Latin-1/CP1252 text often decodes as GB18030 too
   (``Montréal`` as ``Montr閍l``), into rare characters no Chinese layer is made of.

Otherwise the layer is an :class:`~pipeline.errors.InputDataError` that asks for the
``encoding`` key. Whatever decided, every text (``C``) value and every field name is decoded
strictly with the encoding chosen, so a wrong ``.cpg`` or language byte is an error, not
garbled names. The parsing functions are pure (they take the file's bytes);
:func:`decide_encoding` is the only one that opens files.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputDataError

__all__ = [
    "LANGUAGE_DRIVERS",
    "DbfField",
    "DbfHeader",
    "EncodingDecision",
    "Undecodable",
    "canonical_encoding",
    "common_chinese_share",
    "decide_encoding",
    "encoding_of_cpg",
    "encoding_of_language_driver",
    "first_mismatch",
    "first_undecodable",
    "language_driver_of",
    "parse_header",
]

LANGUAGE_DRIVERS: dict[int, str] = {
    0x01: "CP437", 0x02: "CP850", 0x03: "CP1252", 0x04: "MAC-ROMAN", 0x08: "CP865",
    0x09: "CP437", 0x0A: "CP850", 0x0B: "CP437", 0x0D: "CP437", 0x0E: "CP850", 0x0F: "CP437",
    0x10: "CP850", 0x11: "CP437", 0x12: "CP850", 0x13: "CP932", 0x14: "CP850", 0x15: "CP437",
    0x16: "CP850", 0x17: "CP865", 0x18: "CP437", 0x19: "CP437", 0x1A: "CP850", 0x1B: "CP437",
    0x1C: "CP863", 0x1D: "CP850", 0x1F: "CP852", 0x22: "CP852", 0x23: "CP852", 0x24: "CP860",
    0x25: "CP850", 0x26: "CP866", 0x37: "CP850", 0x40: "CP852", 0x4D: "GBK", 0x4E: "CP949",
    0x4F: "BIG5", 0x50: "CP874", 0x58: "CP1252", 0x59: "CP1252", 0x64: "CP852", 0x65: "CP866",
    0x66: "CP865", 0x67: "CP861", 0x6A: "CP737", 0x6B: "CP857", 0x6C: "CP863", 0x78: "BIG5",
    0x79: "CP949", 0x7A: "GBK", 0x7B: "CP932", 0x7C: "CP874", 0x86: "CP737", 0x87: "CP852",
    0x88: "CP857", 0x96: "MAC-CYRILLIC", 0x97: "MAC-LATIN2", 0x98: "MAC-GREEK", 0xC8: "CP1250",
    0xC9: "CP1251", 0xCA: "CP1254", 0xCB: "CP1253", 0xCC: "CP1257",
}  # fmt: skip
"""Code page of each DBF language-driver id (ESRI's table, as GDAL reads it): 0x4D and 0x7A
are GBK (code page 936), 0x4F and 0x78 Big5. 0 and 0x57 ("the current ANSI code page") are
absent: they say nothing about the text."""

DETECTED = ("UTF-8", "GB18030")
"""Tried in this order, strictly, when neither the config, a ``.cpg`` nor the language byte says."""

MIN_CHINESE_SHARE = 0.9
"""Share of the non-ASCII characters of a layer's distinct values that must be common Chinese
(:func:`common_chinese_share`) for *detected* GB18030 to be accepted."""

_GDAL_NAMES = {"utf-8": "UTF-8", "gbk": "GBK", "gb18030": "GB18030", "gb2312": "GB2312",
               "big5": "BIG5", "latin-1": "ISO-8859-1", "iso8859-1": "ISO-8859-1",
               "mac-roman": "MAC-ROMAN", "mac-cyrillic": "MAC-CYRILLIC",
               "mac-latin2": "MAC-LATIN2", "mac-greek": "MAC-GREEK"}  # fmt: skip
"""Names that both Python's codecs and GDAL's iconv know, by Python codec name."""


@dataclass(frozen=True)
class DbfField:
    """One field of a DBF: raw name bytes, type letter, byte offset in a record, width."""

    name: bytes
    kind: str
    offset: int
    width: int


@dataclass(frozen=True)
class DbfHeader:
    """What the DBF header says (dBase III+ layout, as Shapefiles use)."""

    n_records: int
    header_bytes: int
    record_bytes: int
    language_driver: int
    fields: tuple[DbfField, ...]


@dataclass(frozen=True)
class EncodingDecision:
    """The encoding a layer's text is read with (a name GDAL and Python both know) and why."""

    encoding: str
    reason: str
    n_cut: int = 0
    """Values ending in a character cut in half (a field too narrow for its text); the cut
    character is dropped on reading."""


@dataclass(frozen=True)
class Undecodable:
    """The first text that does not decode: field name (as far as it decodes), 1-based
    record number (0 for a field name) and the raw bytes."""

    field: str
    record: int
    raw: bytes

    def describe(self) -> str:
        where = "field name" if self.record == 0 else f"record {self.record}"
        return f"{where}, field {self.field!r}: bytes {self.raw!r}"


# --------------------------------------------------------------------------- names (pure)
def canonical_encoding(name: str) -> str:
    """``name`` as an encoding name both Python and GDAL know (``cp936`` → ``GBK``).

    Raises
    ------
    LookupError
        Python knows no such encoding.
    """
    python_name = codecs.lookup(name.strip()).name
    if m := re.fullmatch(r"iso8859-(\d+)", python_name):
        return f"ISO-8859-{m.group(1)}"
    return _GDAL_NAMES.get(python_name, python_name.upper().replace("_", "-"))


def encoding_of_cpg(text: str) -> str | None:
    """The encoding a ``.cpg`` file names, as GDAL reads it; ``None`` when it names none.

    ``UTF-8``/``UTF8``, a code-page number (``936``, ``65001``), ``ANSI 936``/``OEM 936``,
    ``8859_1``-style ISO names or any encoding name Python knows (``GBK``, ``GB2312``). An
    empty or unknown text is ``None`` (the caller goes on to the next rule).
    """
    text = text.strip().strip("\x00").strip()
    if not text:
        return None
    upper = text.upper()
    if m := re.fullmatch(r"8859[_-]?(\d+)", upper):
        text = f"ISO-8859-{m.group(1)}"
    elif m := re.fullmatch(r"(?:ANSI|OEM|CP)?[ _-]?(\d+)", upper):
        number = int(m.group(1))
        text = "UTF-8" if number == 65001 else f"CP{number}"
    try:
        return canonical_encoding(text)
    except LookupError:
        return None


def encoding_of_language_driver(ldid: int) -> str | None:
    """The encoding a DBF language-driver byte names; ``None`` for 0, 0x57 and unknown ids."""
    name = LANGUAGE_DRIVERS.get(ldid)
    return canonical_encoding(name) if name else None


def language_driver_of(encoding: str) -> int:
    """The DBF language-driver byte that names ``encoding`` (the first id of
    :data:`LANGUAGE_DRIVERS` for its code page: 0x4D for GBK); 0, "says nothing", when no id
    names it (UTF-8: a ``.cpg`` alone says)."""
    wanted = canonical_encoding(encoding)
    for ldid, name in LANGUAGE_DRIVERS.items():
        if canonical_encoding(name) == wanted:
            return ldid
    return 0


# --------------------------------------------------------------------------- DBF (pure)
def parse_header(data: bytes | memoryview | np.ndarray) -> DbfHeader:
    """The header of a DBF file from its first bytes.

    Raises
    ------
    ValueError
        The bytes are not a DBF header (too short, no field terminator, widths that do not add
        up to the record length).

    Notes
    -----
    Text (``C``) fields wider than 255 bytes store the high byte of their width in the
    decimal-count byte, as shapelib reads them.
    """
    head = bytes(data[:32])
    if len(head) < 32:
        raise ValueError("shorter than a DBF header (32 bytes)")
    n_records = int.from_bytes(head[4:8], "little")
    header_bytes = int.from_bytes(head[8:10], "little")
    record_bytes = int.from_bytes(head[10:12], "little")
    descriptors = bytes(data[32:header_bytes])
    fields, offset = [], 1  # byte 0 of a record: deletion flag
    for start in range(0, len(descriptors), 32):
        item = descriptors[start : start + 32]
        if item[0] == 0x0D or len(item) < 32:
            break
        kind = chr(item[11])
        width = item[16] + (item[17] << 8 if kind == "C" else 0)
        fields.append(DbfField(item[:11].split(b"\x00", 1)[0], kind, offset, width))
        offset += width
    if not fields or offset != record_bytes:
        raise ValueError(
            f"the field widths add up to {offset} bytes per record, the header says {record_bytes}"
        )
    return DbfHeader(n_records, header_bytes, record_bytes, head[29], tuple(fields))


def first_undecodable(
    data: bytes | memoryview | np.ndarray,
    header: DbfHeader,
    encoding: str,
    *,
    allow_cut: bool | None = None,
) -> tuple[Undecodable | None, int]:
    """The first field name or live text value of ``data`` (a whole DBF) that is not valid
    ``encoding``, and the number of values that end in a cut character.

    With ``allow_cut``, a value whose only fault is an incomplete multi-byte character at its
    end (before the space padding) is a *cut* value, not an error. Default: allowed except in
    UTF-8, whose reader (pyogrio) refuses such a value; GDAL drops the cut character of the
    other multi-byte encodings. Deleted records (flag ``*``) are skipped.
    """
    if allow_cut is None:
        allow_cut = codecs.lookup(encoding).name != "utf-8"
    for field in header.fields:
        try:
            field.name.decode(encoding)
        except UnicodeDecodeError:
            return Undecodable(field.name.decode("latin-1"), 0, field.name), 0
    n_cut = 0
    for field, rows, values in _text_columns(data, header):
        distinct, first, counts = _distinct_non_ascii(values)
        # one decode per column: "\n" never occurs inside a multi-byte character
        joined = np.hstack([distinct, np.full((len(distinct), 1), 0x0A, np.uint8)]).tobytes()
        try:
            joined.decode(encoding)
            continue
        except UnicodeDecodeError:
            pass
        for k in np.argsort(first):  # in record order: the first bad record is reported
            raw = distinct[k].tobytes().rstrip(b" \x00")
            try:
                raw.decode(encoding)
            except UnicodeDecodeError:
                if allow_cut and _cut_at_end(raw, encoding):
                    n_cut += int(counts[k])
                    continue
                row = int(rows[first[k]]) + 1
                return Undecodable(field.name.decode(encoding), row, raw), n_cut
    return None, n_cut


def first_mismatch(
    data: bytes, encoding: str, expected: Mapping[str, Sequence[str | None]]
) -> str | None:
    """Where the text of a DBF written by us differs from what was meant, or ``None``.

    ``expected`` maps field names to the text of each record (``None`` = no value, not
    checked). A written value must decode to the expected text, or to a prefix of it (the
    writer may cut a value to its field's width).
    """
    header = parse_header(data)
    columns = {f.name.decode("ascii", "replace"): (rows, values) for f, rows, values in
               _text_columns(data, header, live_only=False)}  # fmt: skip
    for name, texts in expected.items():
        if name not in columns:
            return f"field {name!r} is missing"
        rows, values = columns[name]
        for row, value, text in zip(rows, values, texts):
            if text is None:
                continue
            raw = value.tobytes().rstrip(b" \x00")
            try:
                got = raw.decode(encoding)
            except UnicodeDecodeError:
                return f"record {int(row) + 1}, field {name!r}: bytes {raw!r} are not {encoding}"
            if not (got == text.rstrip(" ") or (got and text.startswith(got))):
                return f"record {int(row) + 1}, field {name!r}: {got!r} instead of {text!r}"
    return None


def common_chinese_share(
    data: bytes | memoryview | np.ndarray, header: DbfHeader, encoding: str
) -> tuple[float, Undecodable | None]:
    """The share of the non-ASCII characters of the distinct text values of ``data`` (a whole
    DBF) that are common Chinese when decoded in ``encoding``, and the first value (in record
    order) holding a character that is not (``None`` when all are; share 1.0 without any
    non-ASCII character).

    Notes
    -----
    *Common Chinese* is a character of GB2312 (its 6763 hanzi, CJK punctuation, full-width
    forms, ...) or of the CJK Symbols and Punctuation or Halfwidth and Fullwidth Forms blocks.
    Being a CJK unified ideograph is not enough: Latin-1/CP1252 text decoded as GB18030 gives
    ideographs too (``Montréal Saône`` → ``Montr閍l Sa鬾e``), but rare ones from GBK's
    extension areas, whose second byte is an ASCII letter. Bureau layers are written almost
    only in GB2312 characters. Each distinct value counts once.
    """
    n_chars = n_common = 0
    sample: Undecodable | None = None
    for field, rows, values in _text_columns(data, header):
        distinct, first, _ = _distinct_non_ascii(values)
        for k in np.argsort(first):
            raw = distinct[k].tobytes().rstrip(b" \x00")
            chars = [c for c in raw.decode(encoding, errors="ignore") if ord(c) >= 0x80]
            common = sum(map(_is_common_chinese, chars))
            n_chars += len(chars)
            n_common += common
            if common < len(chars) and sample is None:
                name = field.name.decode(encoding, errors="replace")
                sample = Undecodable(name, int(rows[first[k]]) + 1, raw)
    return (n_common / n_chars if n_chars else 1.0), sample


@functools.lru_cache(maxsize=65536)
def _is_common_chinese(char: str) -> bool:
    if 0x3000 <= ord(char) <= 0x303F or 0xFF00 <= ord(char) <= 0xFFEF:
        return True
    try:
        char.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------- deciding (I/O)
def decide_encoding(
    dbf: Path, declared: str | None = None, *, label: str, key: str
) -> EncodingDecision:
    """The encoding of the text of ``dbf`` by the module's rules, checked on every value.

    Parameters
    ----------
    dbf
        The ``.dbf`` of a Shapefile (its ``.cpg``, if any, is beside it).
    declared
        The layer's ``encoding`` key, or ``None``.
    label, key
        The layer (file and layer name) and its config key (``layers.village``) for messages.

    Raises
    ------
    InputDataError
        The text does not decode in the declared encoding (the message names the record, the
        field and the bytes), or, with nothing declared, neither in UTF-8 nor in GB18030, or
        only in GB18030 but not as Chinese (less than :data:`MIN_CHINESE_SHARE` of its
        non-ASCII characters common Chinese: Latin-1 text, say; the message shows a value).

    Notes
    -----
    The result is cached per file size and modification time: ``config check``, the check
    before ``run`` and the stages share one decision.
    """
    cpg = _sidecar(dbf, ".cpg")
    stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in (dbf, cpg) if p is not None)
    return _decide_cached(str(dbf), str(cpg) if cpg else None, declared, label, key, stamp)


@functools.lru_cache(maxsize=32)
def _decide_cached(
    dbf: str, cpg: str | None, declared: str | None, label: str, key: str, stamp: tuple
) -> EncodingDecision:
    del stamp  # cache key only
    data = np.memmap(dbf, dtype=np.uint8, mode="r") if Path(dbf).stat().st_size else b""
    try:
        header = parse_header(data)
    except ValueError as exc:
        raise InputDataError(
            f"{label}: {Path(dbf).name} is not a readable DBF table ({exc}); expected the "
            "attribute table of a Shapefile. Re-export the layer from its source"
        ) from exc
    candidates = _declared(Path(cpg) if cpg else None, header.language_driver, declared, key)
    for encoding, reason in candidates:
        bad, n_cut = first_undecodable(data, header, encoding)
        if bad is None:
            if len(candidates) > 1 and encoding == "GB18030":
                _check_chinese(data, header, label, key)
            return EncodingDecision(encoding, reason, n_cut)
        if len(candidates) == 1:
            raise InputDataError(
                f"{label}: the text is not valid {encoding} as {reason} says ({bad.describe()}); "
                f"set '{key}.encoding' to the layer's real encoding (e.g. GBK or UTF-8), or fix "
                "that record"
            )
        if (
            encoding == "UTF-8"
            and first_undecodable(data, header, encoding, allow_cut=True)[0] is None
        ):
            # UTF-8 but for cut values: guessing GB18030 would garble every name
            raise InputDataError(
                f"{label}: the text is UTF-8, but some values end in a character cut in half "
                f"({bad.describe()}), which the reader refuses; shorten or fix those values in "
                "the source layer and export it again"
            )
    raise InputDataError(
        f"{label}: the text decodes neither as UTF-8 nor as GB18030 ({bad.describe()}) and "
        f"nothing declares its encoding (no .cpg naming one, DBF language byte "
        f"0x{header.language_driver:02X}); set '{key}.encoding' to the layer's encoding "
        "(e.g. BIG5, CP1252), or fix that record"
    )


def _check_chinese(
    data: bytes | memoryview | np.ndarray, header: DbfHeader, label: str, key: str
) -> None:
    """Raise unless the text, detected as GB18030, reads as Chinese."""
    share, sample = common_chinese_share(data, header, "GB18030")
    if share >= MIN_CHINESE_SHARE or sample is None:
        return
    as_gb = sample.raw.decode("GB18030", errors="replace")
    as_latin = sample.raw.decode("CP1252", errors="replace")
    raise InputDataError(
        f"{label}: the text is not UTF-8, and read as GB18030 it is not Chinese: only "
        f"{share:.0%} of its non-ASCII characters are common Chinese ones (record "
        f"{sample.record}, field {sample.field!r}: {as_gb!r} as GB18030, {as_latin!r} as "
        f"CP1252; bytes {sample.raw!r}); nothing declares the encoding (no .cpg naming one, "
        f"DBF language byte 0x{header.language_driver:02X}): set '{key}.encoding' to the "
        "layer's encoding (e.g. CP1252 or ISO-8859-1 for Western European text, BIG5, GBK)"
    )


def _declared(cpg: Path | None, ldid: int, declared: str | None, key: str) -> list[tuple[str, str]]:
    """The encodings to try, each with the reason it is tried (one when something declares)."""
    if declared:
        return [(canonical_encoding(declared), f"'{key}.encoding'")]
    if cpg is not None:
        text = cpg.read_bytes().decode("ascii", errors="replace")
        encoding = encoding_of_cpg(text)
        if encoding:
            return [(encoding, f"the .cpg file ({text.strip()!r})")]
    encoding = encoding_of_language_driver(ldid)
    if encoding:
        return [(encoding, f"the DBF language byte (0x{ldid:02X})")]
    nothing = (
        f"no .cpg{' that names an encoding' if cpg is not None else ''}, "
        f"DBF language byte 0x{ldid:02X} says nothing"
    )
    return [
        ("UTF-8", f"detected: {nothing}; the text is valid UTF-8"),
        ("GB18030", f"detected: {nothing}; the text is not UTF-8 but valid GB18030"),
    ]


def _sidecar(path: Path, suffix: str) -> Path | None:
    for candidate in (path.with_suffix(suffix), path.with_suffix(suffix.upper())):
        if candidate.is_file():
            return candidate
    return None


def _text_columns(
    data: bytes | memoryview | np.ndarray, header: DbfHeader, *, live_only: bool = True
) -> Iterator[tuple[DbfField, np.ndarray, np.ndarray]]:
    """Per text field: the record numbers (0-based) and their values as rows of bytes."""
    size = len(data) - header.header_bytes
    n = max(0, min(header.n_records, size // header.record_bytes)) if header.record_bytes else 0
    body = np.frombuffer(data, np.uint8, count=n * header.record_bytes, offset=header.header_bytes)
    records = body.reshape(n, header.record_bytes)
    rows = np.arange(n)
    if live_only and (deleted := records[:, 0] == ord("*")).any():
        rows = rows[~deleted]
        records = records[rows]  # a copy: only when some records are deleted
    for field in header.fields:
        if field.kind == "C" and field.width:
            yield field, rows, records[:, field.offset : field.offset + field.width]


def _distinct_non_ascii(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct values (rows of bytes) holding a byte >= 0x80, the position of the first
    occurrence of each and how often each occurs. ASCII decodes in every encoding tried here,
    and a 三调 layer repeats a few names over many parcels: this keeps a county-sized table
    quick to check."""
    values = np.ascontiguousarray(values)
    positions = np.flatnonzero((values >= 0x80).any(axis=1))
    width = values.shape[1]
    if len(positions) == 0:
        return np.zeros((0, width), np.uint8), positions, positions
    keys = values[positions].view(f"V{width}").ravel()
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    return values[positions[first]], positions[first], counts


def _cut_at_end(raw: bytes, encoding: str) -> bool:
    """Whether ``raw`` is valid ``encoding`` but for an incomplete character at its end."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    try:
        decoder.decode(raw, final=False)
    except UnicodeDecodeError:
        return False
    return bool(decoder.getstate()[0])
