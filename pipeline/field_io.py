"""Reading field-return files (CSV, XLSX, Shapefile, GPKG, or a zip of one) and writing
rejection reports. The I/O around the pure :mod:`pipeline.field`.

Every value is read as text first (patch ids keep their leading zeros; numbers are parsed
by :func:`pipeline.field.apply_return`), headers are mapped to the canonical names and the
row number the user sees is kept in the :data:`pipeline.field.ROW` column.
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
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd

from pipeline.atomic import atomic_path
from pipeline.errors import InputDataError
from pipeline.field import ROW
from pipeline.schema import (
    COLUMN_LABELS,
    FIELD_RETURN_ALIASES,
    FIELD_RETURN_COLUMNS,
    SHAPEFILE_FIELDS,
    P,
)

log = logging.getLogger(__name__)

CSV_ENCODINGS = ("utf-8-sig", "gbk")
"""Encodings tried, in order, for CSV returns without an explicit encoding."""

SUFFIXES = (".csv", ".txt", ".xlsx", ".xlsm", ".shp", ".gpkg", ".zip")


def read_return(
    path: str | os.PathLike[str], *, encoding: str | None = None, layer: str | None = None
) -> pd.DataFrame:
    """Read one field-return file into canonical text columns plus the row number.

    Parameters
    ----------
    path : path-like
        ``.csv``/``.txt``, ``.xlsx``, ``.shp``, ``.gpkg``, or a ``.zip`` holding exactly one
        such file (e.g. a zipped Shapefile).
    encoding : str, optional
        Text encoding of a CSV or Shapefile; default: CSV tries UTF-8 (with or without BOM)
        then GBK; a Shapefile honours its ``.cpg`` file, else tries UTF-8 then GBK.
    layer : str, optional
        GeoPackage layer (default: the first).

    Returns
    -------
    pandas.DataFrame
        Columns: the :data:`~pipeline.schema.FIELD_RETURN_COLUMNS` found in the file (text,
        NaN for empty cells) and :data:`~pipeline.field.ROW` (int). Fully empty rows are
        dropped. ``attrs["source"]`` names the file read.

    Raises
    ------
    InputDataError
        Missing or unreadable file, unsupported format, undecodable text, no patch id
        column, two columns meaning the same thing, or a zip entry with an absolute path or
        ``..`` (path traversal).

    Notes
    -----
    Headers are matched after trimming, ignoring case and treating spaces/hyphens as ``_``:
    the Chinese headers of :data:`~pipeline.schema.FIELD_RETURN_ALIASES`, the canonical
    names, the Shapefile field names of exported packages and the column labels of
    templates. Unknown columns are ignored (logged).

    ``ROW`` is the spreadsheet row the user sees for CSV and XLSX (the header is row 1, so
    the first data row is 2) and the 1-based feature number for Shapefile and GPKG.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"field return {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return _read_zip(path, encoding=encoding, layer=layer)
    if suffix in (".csv", ".txt"):
        raw, rows = _read_csv(path, encoding)
    elif suffix in (".xlsx", ".xlsm"):
        raw, rows = _read_xlsx(path)
    elif suffix in (".shp", ".gpkg"):
        raw, rows = _read_ogr(path, encoding, layer)
    else:
        raise InputDataError(
            f"{path}: unsupported field-return format '{path.suffix}'; use one of "
            f"{', '.join(SUFFIXES)}"
        )
    out = _canonical_columns(raw, path)
    out[ROW] = rows
    keep = out.drop(columns=[ROW]).notna().any(axis=1)
    out = out[keep].reset_index(drop=True)
    out.attrs["source"] = path.name
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
            "--encoding (e.g. --encoding gb18030)"
        )
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            skipinitialspace=True,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputDataError(f"{path}: not a readable CSV file: {exc}") from exc
    return frame, np.arange(len(frame)) + 2  # row 1 is the header


def _read_xlsx(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises several unrelated types for bad files
        raise InputDataError(f"{path}: not a readable XLSX workbook: {exc}") from exc
    try:
        sheet = book.worksheets[0]
        rows = list(sheet.iter_rows(min_row=1, values_only=True))
    finally:
        book.close()
    if not rows:
        raise InputDataError(f"{path}: the first sheet is empty; expected a header row")
    header = [_cell_text(v) for v in rows[0]]
    width = len(header)
    body = [[_cell_text(v) for v in (*r, *([None] * width))[:width]] for r in rows[1:]]
    frame = pd.DataFrame(body, columns=[h if isinstance(h, str) else "" for h in header])
    return frame, np.arange(len(frame)) + 2


def _read_ogr(
    path: Path, encoding: str | None, layer: str | None
) -> tuple[pd.DataFrame, np.ndarray]:
    import pyogrio

    is_shp = path.suffix.lower() == ".shp"
    if encoding:
        attempts: list[str | None] = [encoding]
    elif is_shp and not path.with_suffix(".cpg").exists():
        attempts = ["utf-8", "gbk"]  # no .cpg: GDAL would guess ISO-8859-1
    else:
        attempts = [None]
    errors = []
    for enc in attempts:
        try:
            frame = pyogrio.read_dataframe(
                path,
                layer=layer,
                read_geometry=False,
                encoding=enc if is_shp else None,
            )
            break
        except Exception as exc:  # pyogrio/GDAL errors and UnicodeDecodeError
            errors.append(f"{enc or 'default'}: {exc}")
    else:
        raise InputDataError(
            f"{path}: cannot read ({'; '.join(errors)}); pass --encoding if the text is not "
            "UTF-8 or GBK"
        )
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
                f"{path}: expected exactly one field-return file inside (.csv, .xlsx, .shp, "
                f".gpkg), found {len(data)}: {', '.join(data) or 'none'}"
            )
        archive.extractall(tmp, members=members)
        out = read_return(Path(tmp) / data[0], encoding=encoding, layer=layer)
    out.attrs["source"] = f"{path.name}!{data[0]}"
    return out


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
def _norm(header: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(header).replace("\ufeff", "").strip().lower())


def _header_map() -> dict[str, str]:
    mapping: dict[str, str] = {}
    for column in FIELD_RETURN_COLUMNS:
        mapping[_norm(column)] = column
        if column in SHAPEFILE_FIELDS:
            mapping[_norm(SHAPEFILE_FIELDS[column])] = column
        for label in COLUMN_LABELS.get(column, ()):
            mapping[_norm(label)] = column
    for alias, column in FIELD_RETURN_ALIASES.items():
        mapping[_norm(alias)] = column
    return mapping


HEADER_MAP = _header_map()
"""Accepted header (normalised) -> canonical field-return column."""


def _canonical_columns(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    found: dict[str, str] = {}
    ignored = []
    for header in raw.columns:
        column = HEADER_MAP.get(_norm(header))
        if column is None:
            ignored.append(str(header))
            continue
        if column in found:
            raise InputDataError(
                f"{path}: columns {found[column]!r} and {header!r} both mean {column}; "
                "keep one of them"
            )
        found[column] = header
    if P.PATCH_ID not in found:
        raise InputDataError(
            f"{path}: no patch id column; found {', '.join(map(str, raw.columns)) or 'none'}; "
            "expected 图斑编号 or patch_id (and 核实认定意见/verdict, ...)"
        )
    if ignored:
        log.info("%s: ignoring column(s) %s", path.name, ", ".join(ignored))
    out = pd.DataFrame(index=range(len(raw)))
    for column in FIELD_RETURN_COLUMNS:
        if column in found:
            values = raw[found[column]].reset_index(drop=True)
            text = values.astype("str").str.strip()
            out[column] = text.where(values.notna() & (text != ""))
    return out


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
