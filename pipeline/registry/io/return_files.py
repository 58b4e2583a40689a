"""Reading field-return files (CSV, XLSX, XLS, Shapefile, GPKG, or a zip of one) and writing
rejection reports. The I/O around the pure :mod:`pipeline.registry.field_returns`.

Every value is read as text first (patch ids keep their leading zeros; numbers are parsed
by :func:`pipeline.registry.field_returns.apply_return`), headers are mapped to the canonical names
(:func:`resolve_headers`, :data:`~pipeline.schema.FIELD_RETURN_HEADERS`), an area given in
another unit is converted to m² (with the rounding margin of the unit it was written in, see
:data:`~pipeline.schema.FIELD_RETURN_TOLERANCES`), and the row number the user sees is kept in
the :data:`pipeline.registry.field_returns.ROW` column.

A Shapefile's text is decoded by the rules of the input layers
(:func:`pipeline.overlay.io.vectors.text_encoding`: the encoding given, the ``.cpg``, the DBF
language byte, strict UTF-8, then GB18030 if it reads as Chinese), handed to pyogrio
explicitly so that a ``SHAPE_ENCODING`` set in the environment plays no part.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import openpyxl
import pandas as pd
import pyogrio

from pipeline.atomic import atomic_path
from pipeline.errors import InputDataError
from pipeline.overlay.io.vectors import text_encoding
from pipeline.registry.field_returns import ROW
from pipeline.schema import (
    COLUMN_LABELS,
    FIELD_RETURN_ALIASES,
    FIELD_RETURN_COLUMNS,
    FIELD_RETURN_HEADERS,
    FIELD_RETURN_IGNORED_HEADERS,
    FIELD_RETURN_TOLERANCES,
    PATCH_COLUMNS,
    SHAPEFILE_FIELDS,
    P,
)
from pipeline.units import MU_M2

try:  # only .xls returns need it: without it the other formats still import
    import xlrd
except ImportError:  # a dependency, but a broken install is told how to fix it (_read_xls)
    xlrd = None

log = logging.getLogger(__name__)

CSV_ENCODINGS = ("utf-8-sig", "gb18030")
"""Encodings tried, in order, for CSV returns without an explicit encoding (UTF-8 with or
without BOM, then GB18030, which reads GBK and GB2312 and the characters GBK lacks)."""

SUFFIXES = (".csv", ".txt", ".xlsx", ".xlsm", ".xls", ".shp", ".gpkg", ".zip")
"""Field-return formats :func:`read_return` reads (a zip holds one file of the others)."""

AREA_COLUMNS = (P.REMAINING_M2,)
"""Field-return columns holding an area; a unit in their header converts them to m²."""

AREA_UNITS: dict[str, float] = {
    "平方米": 1.0,
    "m²": 1.0,
    "m2": 1.0,
    "㎡": 1.0,
    "亩": MU_M2,
    "mu": MU_M2,
    "公顷": 10000.0,
    "ha": 10000.0,
}
"""Unit written after an area header, in brackets or not -> square metres per unit (1 亩 =
10000/15 m² exactly). An area header without a unit is in m²."""

SUSPECT_UNIT_WORDS = (*AREA_UNITS, "平方", "公里", "千米", "km")
"""Words that make an unknown header holding an area header word (``剩余面积亩数``,
``剩余面积(亩)合计``) look like an area with a unit: such a header rejects the file rather
than be left unread."""


def read_return(
    path: str | os.PathLike[str], *, encoding: str | None = None, layer: str | None = None
) -> pd.DataFrame:
    """Read one field-return file into canonical text columns plus the row number.

    Parameters
    ----------
    path : path-like
        ``.csv``/``.txt``, ``.xlsx``/``.xlsm``, ``.xls`` (Excel 97-2003), ``.shp``,
        ``.gpkg``, or a ``.zip`` holding exactly one such file (e.g. a zipped Shapefile).
    encoding : str, optional
        Text encoding of a CSV or Shapefile; default: CSV tries UTF-8 (with or without BOM)
        then GB18030 (GBK); a Shapefile's is settled by
        :func:`pipeline.overlay.io.vectors.text_encoding` (``.cpg``, DBF language byte, strict
        UTF-8, GB18030). Excel files carry their own encoding.
    layer : str, optional
        GeoPackage layer (default: the first).

    Returns
    -------
    pandas.DataFrame
        Columns: the :data:`~pipeline.schema.FIELD_RETURN_COLUMNS` found in the file (text,
        NaN for empty cells; areas in m²) and :data:`~pipeline.registry.field_returns.ROW` (int);
        for an area written in another unit than m², its rounding margin in m²
        (:data:`~pipeline.schema.FIELD_RETURN_TOLERANCES`). Fully empty rows are dropped.
        ``attrs["source"]`` names the file read, ``attrs["unknown_columns"]`` lists the
        headers not recognised.

    Raises
    ------
    InputDataError
        Missing or unreadable file, unsupported format, undecodable text, no patch id or no
        verdict column, two columns meaning the same thing, an area unit not understood (or an
        unknown header that looks like an area with a unit), or a zip entry with an absolute
        path or ``..`` (path traversal).

    Notes
    -----
    Headers are matched by :func:`resolve_headers`. Unknown columns are not read; they are
    listed in ``attrs["unknown_columns"]`` (the import summary warns about them).

    ``ROW`` is the spreadsheet row the user sees for CSV, XLSX and XLS (the header is row 1,
    so the first data row is 2) and the 1-based feature number for Shapefile and GPKG.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"field return {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return _read_zip(path, encoding=encoding, layer=layer)
    if suffix in (".csv", ".txt"):
        raw, rows = _read_csv(path, encoding)
    elif suffix in (".xlsx", ".xlsm", ".xls"):
        raw, rows = _read_excel(path)
    elif suffix in (".shp", ".gpkg"):
        raw, rows = _read_ogr(path, encoding, layer)
    else:
        raise InputDataError(
            f"{path}: unsupported field-return format '{path.suffix}'; use one of "
            f"{', '.join(SUFFIXES)}"
        )
    out, unknown = _canonical_columns(raw, path)
    out[ROW] = rows
    keep = out[[c for c in FIELD_RETURN_COLUMNS if c in out.columns]].notna().any(axis=1)
    out = out[keep].reset_index(drop=True)
    out.attrs["source"] = path.name
    out.attrs["unknown_columns"] = unknown
    log.info("read %d row(s) from %s", len(out), path)
    return out


def write_rejections(
    path: str | os.PathLike[str], rejections: Iterable[tuple[str, int | None, str]]
) -> Path:
    """Write ``(file, row, reason)`` tuples as CSV (UTF-8 with BOM, so Excel shows Chinese).

    The file is written atomically; an empty ``row`` means the whole file.
    """
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "row", "reason"])
    for file, row, reason in rejections:
        writer.writerow([file, "" if row is None else int(row), reason])
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8-sig")
    return path


# --------------------------------------------------------------------------- readers
def _read_csv(path: Path, encoding: str | None) -> tuple[pd.DataFrame, np.ndarray]:
    data = path.read_bytes()
    tried = [encoding] if encoding else list(CSV_ENCODINGS)
    text = None
    for enc in tried:
        try:
            text = data.decode(enc)
            break
        except (UnicodeDecodeError, LookupError):
            continue
    if text is None:
        raise InputDataError(
            f"{path}: cannot decode the text as {' or '.join(tried)}; save it as UTF-8 or pass "
            "--encoding (e.g. --encoding big5)"
        )
    try:
        # header=None: the header row is taken as it is, so two columns with one header stay
        # two (pandas would rename the second "备注.1")
        frame = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            header=None,
            keep_default_na=False,
            skip_blank_lines=False,
            skipinitialspace=True,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputDataError(f"{path}: not a readable CSV file: {exc}") from exc
    body = frame.iloc[1:].reset_index(drop=True)
    body.columns = list(frame.iloc[0]) if len(frame) else []
    return body, np.arange(len(body)) + 2  # row 1 is the header


def _read_excel(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """An ``.xlsx`` or ``.xls`` workbook, told apart by its first bytes, not its name (a
    workbook saved as one and renamed to the other is common)."""
    with path.open("rb") as f:
        magic = f.read(8)
    if magic.startswith(b"\xd0\xcf\x11\xe0"):  # OLE2 compound file: Excel 97-2003
        return _read_xls(path)
    if magic.startswith(b"PK\x03\x04"):  # a zip: Office Open XML
        return _read_xlsx(path)
    raise InputDataError(
        f"{path}: not an Excel workbook (neither .xlsx nor Excel 97-2003 .xls; it starts with "
        f"{magic[:4]!r}); open it in Excel or WPS and save it as .xlsx, .xls or CSV"
    )


def _read_xls(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    # xlrd directly, not pandas.read_excel(engine="xlrd"): pandas deprecates that engine
    if xlrd is None:
        raise InputDataError(
            f"{path}: reading .xls needs the xlrd package (pip install 'xlrd>=2.0'), or save "
            "the file as .xlsx"
        )
    try:
        book = xlrd.open_workbook(str(path), on_demand=True)
    except Exception as exc:  # xlrd raises XLRDError, CompDocError, struct errors, ...
        raise InputDataError(f"{path}: not a readable XLS workbook: {exc}") from exc
    try:
        sheet = book.sheet_by_index(0)
        rows = [[_xls_cell(c, book.datemode) for c in sheet.row(r)] for r in range(sheet.nrows)]
    finally:
        book.release_resources()
    if not rows:
        raise InputDataError(f"{path}: the first sheet is empty; expected a header row")
    header = [_header_text(v) for v in rows[0]]
    width = len(header)
    body = [[_cell_text(v) for v in (*r, *([None] * width))[:width]] for r in rows[1:]]
    return pd.DataFrame(body, columns=header), np.arange(len(body)) + 2  # row 1: header


def _xls_cell(cell: Any, datemode: int) -> Any:
    """An xlrd cell as a Python value: dates as datetime, errors as their text (#N/A)."""
    if cell.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK):
        return None
    if cell.ctype == xlrd.XL_CELL_DATE:
        try:
            return xlrd.xldate.xldate_as_datetime(cell.value, datemode)
        except xlrd.xldate.XLDateError:
            return cell.value
    if cell.ctype == xlrd.XL_CELL_BOOLEAN:
        return bool(cell.value)
    if cell.ctype == xlrd.XL_CELL_ERROR:
        return xlrd.error_text_from_code.get(cell.value, "#ERROR")
    return cell.value


def _read_xlsx(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        # from bytes: openpyxl refuses a workbook whose name does not end in .xlsx
        book = openpyxl.load_workbook(io.BytesIO(path.read_bytes()), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises several unrelated types for bad files
        raise InputDataError(f"{path}: not a readable XLSX workbook: {exc}") from exc
    try:
        sheet = book.worksheets[0]
        rows = list(sheet.iter_rows(min_row=1, values_only=True))
    finally:
        book.close()
    if not rows:
        raise InputDataError(f"{path}: the first sheet is empty; expected a header row")
    header = [_header_text(v) for v in rows[0]]
    width = len(header)
    body = [[_cell_text(v) for v in (*r, *([None] * width))[:width]] for r in rows[1:]]
    frame = pd.DataFrame(body, columns=header)
    return frame, np.arange(len(frame)) + 2


def _read_ogr(
    path: Path, encoding: str | None, layer: str | None
) -> tuple[pd.DataFrame, np.ndarray]:
    """A Shapefile's text in the encoding the input layers' rules settle, always passed to
    pyogrio (so neither GDAL's guess nor ``SHAPE_ENCODING`` decides); a GeoPackage is UTF-8."""
    read_encoding = None
    if path.suffix.lower() == ".shp":
        try:
            decision = text_encoding(
                path, encoding, label=f"field return {path.name}", key="field_returns"
            )
        except InputDataError as exc:
            raise InputDataError(
                f"{exc} (or pass --encoding to `landwatch field import` for this file)"
            ) from exc
        read_encoding = decision.encoding if decision else None
    try:
        frame = pyogrio.read_dataframe(
            path, layer=layer, read_geometry=False, encoding=read_encoding
        )
    except UnicodeDecodeError as exc:
        raise InputDataError(
            f"{path}: the text is not valid {read_encoding} ({exc}); pass --encoding"
        ) from exc
    except Exception as exc:  # pyogrio/GDAL errors
        raise InputDataError(f"{path}: cannot read ({exc})") from exc
    frame = pd.DataFrame({c: [_cell_text(v) for v in frame[c]] for c in frame.columns})
    return frame, np.arange(len(frame)) + 1


def _read_zip(path: Path, *, encoding: str | None, layer: str | None) -> pd.DataFrame:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise InputDataError(f"{path}: not a readable zip file: {exc}") from exc
    with archive, tempfile.TemporaryDirectory(prefix="landwatch-return-") as tmp:
        for info in archive.infolist():
            _check_member(path, info)
        members = [
            i.filename
            for i in archive.infolist()
            if not i.is_dir()
            and not any(part.startswith((".", "__MACOSX")) for part in PurePath(i.filename).parts)
        ]
        data = [m for m in members if PurePath(m).suffix.lower() in SUFFIXES[:-1]]
        data = [m for m in data if not m.lower().endswith(".txt")] or data
        if len(data) != 1:
            raise InputDataError(
                f"{path}: expected exactly one field-return file inside "
                f"({', '.join(SUFFIXES[:-1])}), found {len(data)}: {', '.join(data) or 'none'}"
            )
        stem = PurePath(data[0]).with_suffix("")
        # only the table and its sidecars: a damaged photo beside it must not block the table
        archive.extractall(tmp, members=[m for m in members if PurePath(m).with_suffix("") == stem])
        out = read_return(Path(tmp) / data[0], encoding=encoding, layer=layer)
    out.attrs["source"] = f"{path.name}!{data[0]}"
    return out


def check_zip_members(path: Path) -> None:
    """Raise :class:`InputDataError` when an entry of the zip at ``path`` is no relative path
    inside it (absolute, ``..``, a link)."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            _check_member(path, info)


def _check_member(path: Path, info: zipfile.ZipInfo) -> None:
    name = info.filename
    parts = re.split(r"[/\\]", name)
    is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or is_link:
        raise InputDataError(
            f"{path}: refusing entry {name!r}: zip entries must be relative paths inside the "
            "archive (no absolute paths, no '..', no links); re-create the zip from the folder "
            "holding the files"
        )


# --------------------------------------------------------------------------- headers/values
@dataclass(frozen=True)
class ReturnHeaders:
    """How the header row of one return maps to the canonical columns."""

    columns: dict[str, int]
    """Canonical column -> position of its header in the row."""
    to_m2: dict[str, float]
    """Area column -> square metres per unit of its values (1.0 when given in m²)."""
    context: tuple[str, ...]
    """Headers of registry columns a package pre-fills (village, area, ...): not read."""
    unknown: tuple[str, ...]
    """Headers that mean nothing to the importer: not read, warned about."""


def resolve_headers(headers: Sequence[Any], *, source: str = "field return") -> ReturnHeaders:
    """Match a header row against :data:`~pipeline.schema.FIELD_RETURN_HEADERS`.

    Parameters
    ----------
    headers : sequence
        The header row as read; empty headers (None, ``""``) are skipped.
    source : str
        The file, named in error messages.

    Returns
    -------
    ReturnHeaders

    Raises
    ------
    InputDataError
        Two headers mean the same column, an area header has a unit that is not one of
        :data:`AREA_UNITS`, or an unknown header holds an area header word and a unit word
        (:data:`SUSPECT_UNIT_WORDS`): an area in a form not understood is not left unread.

    Notes
    -----
    Headers match after trimming, ignoring case, full-width brackets and a leading or
    trailing ``*``, and treating spaces and hyphens as ``_``. A remark in brackets after a
    known header is ignored (``核查日期（年月日）``) except on an area column, where it must be
    a unit of :data:`AREA_UNITS` (``剩余面积（亩）``, ``剩余面积(单位:亩)``). An area header
    may also be followed by its unit without brackets: ``剩余面积/亩``, ``剩余面积亩``,
    ``剩余面积 亩``, ``剩余面积_亩``. Without a unit the area is in m².
    """
    columns: dict[str, int] = {}
    to_m2: dict[str, float] = {}
    context: list[str] = []
    unknown: list[str] = []
    for pos, header in enumerate(headers):
        text = _header_text(header)
        if not text:
            continue
        column, factor = _match_header(text, source)
        if column is None:
            if _is_context(text):
                context.append(text)
                continue
            _check_not_an_area(text, source)
            unknown.append(text)
            continue
        if column in columns:
            first = _header_text(headers[columns[column]])
            raise InputDataError(
                f"{source}: headers {first!r} and {text!r} both mean {column}; keep one of "
                "them (delete or rename the other column)"
            )
        columns[column] = pos
        to_m2[column] = factor
    return ReturnHeaders(columns, to_m2, tuple(context), tuple(unknown))


def _norm(header: str) -> str:
    text = str(header).replace("\ufeff", "").translate(_FULL_WIDTH).strip().strip("*").strip()
    return re.sub(r"[\s\-]+", "_", text.lower())


_FULL_WIDTH = str.maketrans("（）【】［］：＊／", "()[][]:*/")
_BRACKETED = re.compile(r"(?P<base>.+?)_*[(\[](?P<remark>[^()\[\]]*)[)\]]")
_UNIT_AFTER = re.compile(
    r"(?P<base>.+?)[_/:]*(?:单位[:_]*)?(?P<unit>"
    + "|".join(re.escape(u) for u in sorted(AREA_UNITS, key=len, reverse=True))
    + ")"
)
"""An area header followed by its unit without brackets (normalised: ``剩余面积/亩``,
``剩余面积亩``, ``剩余面积_亩``)."""


HEADER_MAP = {_norm(header): column for header, column in FIELD_RETURN_ALIASES.items()}
"""Accepted header (normalised) -> canonical field-return column (a test checks that no
header is listed for two columns)."""


def _context_headers() -> frozenset[str]:
    """Names, Shapefile fields and labels of the registry columns that are not field-return
    columns (with and without a unit in brackets), plus row-number headers."""
    names: set[str] = {_norm(h) for h in FIELD_RETURN_IGNORED_HEADERS}
    for column in PATCH_COLUMNS:
        if column in FIELD_RETURN_COLUMNS:
            continue
        for name in (column, SHAPEFILE_FIELDS.get(column, column), *COLUMN_LABELS.get(column, ())):
            key = _norm(name)
            names.add(key)
            match = _BRACKETED.fullmatch(key)
            if match:
                names.add(match["base"])
    return frozenset(names)


CONTEXT_HEADERS = _context_headers()
"""Headers of pre-filled registry columns (normalised): not read, not warned about."""


def _match_header(header: str, source: str) -> tuple[str | None, float]:
    """(canonical column or None, m² per unit of its values)."""
    key = _norm(header)
    if key in HEADER_MAP:
        return HEADER_MAP[key], 1.0
    match = _BRACKETED.fullmatch(key)
    if match is None or match["base"] not in HEADER_MAP:
        after = _UNIT_AFTER.fullmatch(key)
        if after is not None and HEADER_MAP.get(after["base"]) in AREA_COLUMNS:
            return HEADER_MAP[after["base"]], AREA_UNITS[after["unit"]]
        return None, 1.0
    column = HEADER_MAP[match["base"]]
    if column not in AREA_COLUMNS:
        return column, 1.0  # a remark such as 核查日期（年月日）
    unit = re.sub(r"^单位[:_]*", "", match["remark"].strip("_"))
    if unit not in AREA_UNITS:
        raise InputDataError(
            f"{source}: header {header!r}: area unit {match['remark']!r} not understood; write "
            f"one of {', '.join(f'({u})' for u in AREA_UNITS)} after the header, or no unit "
            "for m²"
        )
    return column, AREA_UNITS[unit]


AREA_HEADER_WORDS = tuple(
    sorted((h for h, c in HEADER_MAP.items() if c in AREA_COLUMNS), key=len, reverse=True)
)
"""Accepted headers (normalised) of the area columns, longest first."""

_SUSPECT_UNIT = re.compile(
    "|".join(
        re.escape(u) if not u.isascii() else rf"(?<![a-z0-9]){re.escape(u)}(?![a-z0-9])"
        for u in sorted(SUSPECT_UNIT_WORDS, key=len, reverse=True)
    )
)
"""A unit word in a normalised header (ASCII ones as whole words: ``ha`` is not in ``share``)."""


def _check_not_an_area(header: str, source: str) -> None:
    """Raise when an unknown header holds an area header word and a unit word."""
    key = _norm(header)
    word = next((w for w in AREA_HEADER_WORDS if w in key), None)
    unit = _SUSPECT_UNIT.search(key.replace(word, " ", 1)) if word else None
    if word is None or unit is None:
        return
    column = HEADER_MAP[word]
    raise InputDataError(
        f"{source}: header {header!r} looks like the {column} column ({word!r}) with a unit "
        f"({unit.group(0)!r}), but not in a form the importer reads, so its values would be "
        f"lost; write the header as e.g. 剩余面积（亩）, 剩余面积/亩 or 剩余面积亩 (units: "
        f"{', '.join(AREA_UNITS)}; no unit means m²), or rename the column if it holds "
        "something else"
    )


def _is_context(header: str) -> bool:
    key = _norm(header)
    match = _BRACKETED.fullmatch(key)
    return key in CONTEXT_HEADERS or (match is not None and match["base"] in CONTEXT_HEADERS)


def _canonical_columns(raw: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The canonical columns found in ``raw`` (areas converted to m²) and the unknown headers."""
    headers = [
        _header_text(h) or (f"column {i + 1} (no header)" if _has_values(raw.iloc[:, i]) else "")
        for i, h in enumerate(raw.columns)
    ]
    found = resolve_headers(headers, source=str(path))
    for column in (P.PATCH_ID, P.VERDICT):
        if column not in found.columns:
            raise InputDataError(
                f"{path}: no {'patch id' if column == P.PATCH_ID else column} column; found "
                f"{', '.join(h for h in headers if h) or 'none'}; expected one of "
                f"{', '.join(FIELD_RETURN_HEADERS[column])}"
            )
    if found.context:
        log.info("%s: not reading pre-filled column(s) %s", path.name, ", ".join(found.context))
    if found.unknown:
        log.warning("%s: unknown column(s) not read: %s", path.name, ", ".join(found.unknown))
    out = pd.DataFrame(index=range(len(raw)))
    for column in FIELD_RETURN_COLUMNS:
        if column not in found.columns:
            continue
        values = raw.iloc[:, found.columns[column]].reset_index(drop=True)
        text = values.astype("str").str.strip()
        out[column] = text.where(values.notna() & (text != ""))
        if found.to_m2[column] != 1.0:
            if column in FIELD_RETURN_TOLERANCES:
                out[FIELD_RETURN_TOLERANCES[column]] = _rounding_m2(
                    out[column], found.to_m2[column]
                )
            out[column] = _area_in_m2(out[column], found.to_m2[column])
    return out, found.unknown


def _area_in_m2(values: pd.Series, factor: float) -> pd.Series:
    """Numbers times ``factor`` as text; anything else kept as it is (rejected later)."""
    number = pd.to_numeric(values.str.replace(",", "", regex=False), errors="coerce")
    scaled = [repr(float(n) * factor) if pd.notna(n) else v for n, v in zip(number, values)]
    return pd.Series(scaled, index=values.index, dtype=object)


def _rounding_m2(values: pd.Series, factor: float) -> pd.Series:
    """Half a unit of the last decimal written (``0.62``: 0.005), in m² (times ``factor``);
    NaN where the value is not a number."""
    margins = []
    for value in values:
        try:
            number = Decimal(str(value).replace(",", ""))
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite() or not isinstance(value, str):
            margins.append(np.nan)
        else:
            margins.append(0.5 * 10.0 ** number.as_tuple().exponent * factor)
    return pd.Series(margins, index=values.index, dtype="float64")


def _has_values(values: pd.Series) -> bool:
    return bool((values.notna() & (values.astype("str").str.strip() != "")).any())


def _header_text(value: Any) -> str:
    """A header cell as text; "" for an empty one."""
    text = _cell_text(value)
    return "" if not isinstance(text, str) else text.strip()


def _cell_text(value: Any) -> Any:
    """One cell as text: None/NaN -> NaN, integral floats without '.0', dates as ISO."""
    if value is None or value is pd.NA or value is pd.NaT:
        return np.nan
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time(0) else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return np.nan
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)
