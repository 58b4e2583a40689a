"""Field packages: one zip per township with only that township's patches.

Each ``{township_code}_{township_name}.zip`` holds, under a folder of the same name:

- ``{code}_patches.shp`` (+ ``.shx .dbf .prj .cpg``): field names from
  :data:`pipeline.schema.SHAPEFILE_FIELDS`, text in ``ExportConfig.encoding``, geometry in
  ``ExportConfig.crs`` (default EPSG:4490, CGCS2000 geographic);
- ``{code}_patches.gpkg``: the same patches with the full column names (layer ``patches``)
  and the township's villages (layer ``villages``), same CRS;
- ``{code}_patches.kml``: the same patches in EPSG:4326, styled by verdict / approval hint;
- ``data_dictionary.csv``, ``return_template.csv`` / ``.xlsx``, ``patches.html``, ``README.txt``;
- ``chips/{patch_id}.png`` (before/after image chips) and ``dossiers/{patch_id}.pdf`` / ``.html``
  (the dossier of each patch, :mod:`pipeline.outputs.dossier`) when given.

Packages are reproducible: the same inputs and ``date`` give the same zip bytes (zip entry
times, the DBF header date and the GeoPackage ``last_change`` are all set to ``date``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation

from pipeline import __version__
from pipeline.atomic import atomic_write_bytes
from pipeline.config import ExportConfig
from pipeline.errors import InputDataError, StageError
from pipeline.outputs import webfont
from pipeline.outputs.dossier import DossierFiles
from pipeline.outputs.formatting import (
    check_columns,
    fixed_zipinfo,
    floats,
    isna,
    label,
    output_date,
    render_page,
    text,
    workbook_bytes,
)
from pipeline.overlay.io.dbf import first_mismatch, language_driver_of
from pipeline.registry.io.qgis_styles import write_status_style
from pipeline.registry.urgency import in_work_order
from pipeline.schema import (
    CHINESE_LABELS,
    COLUMN_LABELS,
    CY,
    DD,
    FIELD_RETURN_COLUMNS,
    LEGAL_HINT_LABELS,
    LOW_CONFIDENCE,
    P_REAL_CHANGE,
    PACKAGE_VILLAGES_LAYER,
    PATCH_COLUMNS,
    PATCHES_LAYER,
    SHAPEFILE_FIELDS,
    UNASSIGNED,
    ChangeType,
    DemolishedBy,
    EnforcementStage,
    G,
    LegalHint,
    Level,
    P,
    RectMethod,
    Verdict,
)
from pipeline.units import MU_M2

log = logging.getLogger(__name__)

KML_CRS = "EPSG:4326"
UNASSIGNED_PACKAGE_NAME = "未分配"
"""Name part of the package of patches outside every township: ``unassigned_未分配.zip``."""
VILLAGES_DIR = "villages"
"""Sub-folder of the export folder holding the per-village packages (``export.per_village``)."""
MANIFEST = "manifest.json"
"""File in the export folder: package (relative path) -> key, level, code, built_on."""
MANIFEST_FORMAT = 1
CHIPS_DIR = "chips"
"""Folder inside a package holding ``{patch_id}.png`` before/after image chips."""
DOSSIERS_DIR = "dossiers"
"""Folder inside a package holding ``{patch_id}.pdf`` and ``{patch_id}.html`` dossiers."""

ROUND_2 = (
    P.AREA_M2,
    P.AREA_MU,
    P.FARMLAND_M2,
    P.BASIC_FARMLAND_M2,
    P.APPROVED_M2,
    P.REMAINING_M2,
)
"""Area columns written with 2 decimals (m² and 亩)."""
ROUND_4 = (P.APPROVED_SHARE, P.VILLAGE_SHARE, P.SCORE)

RETURN_TEMPLATE_COLUMNS = (
    P.PATCH_ID,
    P.VILLAGE_CODE,
    P.VILLAGE_NAME,
    P.AREA_MU,
    *(c for c in FIELD_RETURN_COLUMNS if c != P.PATCH_ID),
)
"""Columns of the return template: the canonical field-return columns, plus the pre-filled
context ``village_code``, ``village_name`` and ``area_mu`` (the importer ignores them)."""

DBF_MAX_BYTES = 254
"""Longest text a DBF field holds, in bytes of its encoding."""

KML_STYLES = {
    # (verdict, legal_hint or None) -> OGR style string; pen = outline, brush = fill (RGBA)
    (Verdict.PENDING, LegalHint.SUSPECTED): "PEN(c:#E53935,w:3px);BRUSH(fc:#E5393540)",
    (Verdict.PENDING, LegalHint.PROBABLY_LEGAL): "PEN(c:#FDD835,w:3px);BRUSH(fc:#FDD83540)",
    (Verdict.PENDING, None): "PEN(c:#E53935,w:3px);BRUSH(fc:#E5393540)",
    (Verdict.ILLEGAL, None): "PEN(c:#8E0000,w:3px);BRUSH(fc:#8E000060)",
    (Verdict.LEGAL, None): "PEN(c:#43A047,w:2px);BRUSH(fc:#43A04730)",
    (Verdict.FALSE_CHANGE, None): "PEN(c:#9E9E9E,w:2px);BRUSH(fc:#9E9E9E30)",
    (Verdict.OTHER, None): "PEN(c:#1E88E5,w:2px);BRUSH(fc:#1E88E530)",
}
"""KML style per verdict (pending ones split by approval hint), via GDAL's OGR_STYLE field."""

# GDAL's KML/LIBKML drivers take the placemark name, description and style from these fields
_KML_NAME, _KML_DESCRIPTION, _KML_STYLE = "Name", "description", "OGR_STYLE"


# --------------------------------------------------------------------------- entry point
def export_packages(
    patches: gpd.GeoDataFrame,
    townships: gpd.GeoDataFrame,
    villages: gpd.GeoDataFrame,
    out_dir: Path,
    *,
    cfg: ExportConfig,
    area_name: str,
    date: str,
    only_townships: set[str] | None = None,
    chips: Mapping[str, bytes] | None = None,
    dossiers: Mapping[str, DossierFiles] | None = None,
    previous: Path | None = None,
) -> list[Path]:
    """Write one field package per township that has patches (and one for unassigned ones).

    Parameters
    ----------
    patches : GeoDataFrame
        :data:`~pipeline.schema.PATCH_COLUMNS` + geometry, in a CRS with a known definition.
    townships, villages : GeoDataFrame
        Grids with :attr:`G.CODE`, :attr:`G.NAME` (optional :attr:`G.PERSON`); villages
        with :attr:`G.TOWNSHIP_CODE` get a ``villages`` layer in the GeoPackage.
    out_dir : Path
        Created if missing; packages are ``out_dir/{code}_{name}.zip``, per-village ones
        ``out_dir/villages/{village_code}_{village_name}.zip``, and ``out_dir/manifest.json``
        records the key of each (see :func:`package_manifest_key`).
    cfg : ExportConfig
        ``crs`` of the Shapefile / GeoPackage, ``encoding`` of the Shapefile text,
        ``per_village`` (also one zip per village), ``chips`` (include image chips).
    area_name, date : str
        Shown in the README and list; ``date`` (``YYYY-MM-DD``) also stamps the files.
    only_townships : set of str, optional
        Township codes to export (``"unassigned"`` for the unassigned package); None = all.
    chips : mapping of str to bytes, optional
        PNG bytes per patch id (see :func:`pipeline.outputs.chips.read_chips`), written as
        ``chips/{patch_id}.png`` in the packages and shown in ``patches.html``. Ignored when
        ``cfg.chips`` is false.
    dossiers : mapping of str to DossierFiles, optional
        The written dossier of each patch, copied into the packages as
        ``dossiers/{patch_id}.pdf`` and ``.html`` and linked from ``patches.html``.
    previous : Path, optional
        An earlier export folder (holding ``manifest.json``). A package whose key equals
        the key recorded there is hard-linked (or copied) from it instead of rebuilt.

    Returns
    -------
    list of Path
        The township packages (sorted by township code), then the village packages
        (sorted by village code); reused ones included.

    Notes
    -----
    Township names are kept in file names (zip entries carry the UTF-8 flag); characters
    not allowed in Windows file names become ``_``. Each zip is written to a temporary
    sibling and renamed into place. A township that lost all its patches gets no package;
    an older zip of it in ``out_dir`` is left alone.

    Re-export: the key covers everything a package shows (patches, grid entry, config,
    area name, chip bytes, landwatch version) but not ``date``, so a reused package keeps
    the date stamps of the export that built it (``built_on`` in the manifest). An earlier
    manifest in ``out_dir`` itself is honoured too (a rerun on the same day rewrites
    nothing that did not change).
    """
    _check_inputs(patches, townships, villages, date)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chips = chips if (cfg.chips and chips) else {}
    dossiers = dossiers or {}
    units = _package_units(
        patches, townships, villages, per_village=cfg.per_village, only_townships=only_townships
    )
    manifest = _read_manifest(out_dir)
    earlier = {**_read_manifest(Path(previous)), **manifest} if previous is not None else manifest
    for unit in units:
        manifest[unit.relpath] = _export_unit(
            unit,
            villages,
            out_dir,
            earlier.get(unit.relpath),
            previous=previous,
            cfg=cfg,
            area_name=area_name,
            date=date,
            chips=chips,
            dossiers=dossiers,
        )
    _write_manifest(out_dir, manifest, date=date)
    return [out_dir / unit.relpath for unit in units]


def township_package_names(
    patches: gpd.GeoDataFrame, townships: gpd.GeoDataFrame
) -> dict[str, str]:
    """Patch id -> file name of the township package :func:`export_packages` puts it in
    (``{code}_{name}.zip``; ``unassigned_未分配.zip`` outside every township)."""
    return {
        str(pid): unit.relpath
        for unit in _township_units(patches, townships, only_townships=None)
        for pid in unit.patches[P.PATCH_ID]
    }


def latest_export_dir(exports_root: Path, before: str) -> Path | None:
    """The newest ``exports_root/{date}`` folder with a manifest dated before ``before``.

    ``exports/{date}`` folders are named by ISO date, so text order is date order. Pass
    the result as ``previous`` to :func:`export_packages`.
    """
    output_date(before)
    root = Path(exports_root)
    if not root.is_dir():
        return None
    dated = sorted(
        p for p in root.iterdir() if p.is_dir() and p.name < before and (p / MANIFEST).is_file()
    )
    return dated[-1] if dated else None


def package_manifest_key(
    patches: gpd.GeoDataFrame,
    villages: gpd.GeoDataFrame,
    *,
    cfg: ExportConfig,
    area_name: str,
    unit: tuple[str, str, str, str],
    chips: Mapping[str, bytes],
    dossiers: Mapping[str, DossierFiles] | None = None,
) -> str:
    """SHA-256 (hex) of everything one package shows except its date.

    Folds :func:`package_key` of the patches with the unit (level, code, name, person),
    the villages drawn in it (codes, names, persons, WKB), ``cfg``, ``area_name``, the
    SHA-256 of each patch's chip, the key of each patch's dossier, the landwatch version and
    the embedded web font (:func:`pipeline.outputs.webfont.embedding_id`).
    """
    dossiers = dossiers or {}
    ids = sorted(map(str, patches[P.PATCH_ID]))
    digest = hashlib.sha256()
    cols = [c for c in (G.CODE, G.NAME, G.TOWNSHIP_CODE, G.PERSON) if c in villages.columns]
    vrows = villages.sort_values(G.CODE, kind="stable")
    head = {
        "patches": package_key(patches),
        "unit": list(unit),
        "area_name": area_name,
        "cfg": dataclasses.asdict(cfg),
        "version": __version__,
        # patches.html embeds a font subset: a package built without the font (or with
        # another font / fontTools) must not be reused as if it were the same
        "webfont": webfont.embedding_id(),
        "villages": [[_plain(v) for v in r] for r in vrows[cols].itertuples(index=False)],
        "chips": {pid: hashlib.sha256(chips[pid]).hexdigest() for pid in ids if pid in chips},
        "dossiers": {pid: dossiers[pid].key for pid in ids if pid in dossiers},
    }
    digest.update(json.dumps(head, ensure_ascii=False, sort_keys=True, default=str).encode())
    for wkb in shapely.to_wkb(np.asarray(vrows.geometry.values), output_dimension=2):
        digest.update(b"\x00" if wkb is None else wkb)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class _Unit:
    """One package to write: a township (or the unassigned patches) or a village."""

    level: str
    code: str
    name: str
    person: str
    patches: gpd.GeoDataFrame
    relpath: str
    """Path of the zip relative to the export folder (and its key in the manifest)."""


def _check_inputs(
    patches: gpd.GeoDataFrame, townships: gpd.GeoDataFrame, villages: gpd.GeoDataFrame, date: str
) -> None:
    """The columns of patches and grids, a CRS on the patches, and a valid ``date``."""
    check_columns(patches, PATCH_COLUMNS, "patches")
    check_columns(townships, (G.CODE, G.NAME), "townships")
    check_columns(villages, (G.CODE, G.NAME), "villages")
    if patches.crs is None:
        raise InputDataError(
            "patches have no CRS; expected the registry's projected CRS (e.g. EPSG:4548) so "
            "they can be reprojected for the field packages"
        )
    output_date(date)


def _package_units(
    patches: gpd.GeoDataFrame,
    townships: gpd.GeoDataFrame,
    villages: gpd.GeoDataFrame,
    *,
    per_village: bool,
    only_townships: set[str] | None,
) -> list[_Unit]:
    """The packages to write: the townships by code, then (``per_village``) their villages."""
    units = _township_units(patches, townships, only_townships=only_townships)
    village_info = villages.drop_duplicates(G.CODE).set_index(G.CODE)
    if per_village:
        for unit in list(units):
            for vcode, part in split_by_village(unit.patches).items():
                vname, vperson = _village_name(vcode, part, village_info)
                units.append(
                    _Unit(
                        level=Level.VILLAGE,
                        code=vcode,
                        name=vname,
                        person=vperson,
                        patches=part,
                        relpath=f"{VILLAGES_DIR}/{package_stem(vcode, vname)}.zip",
                    )
                )
    return units


def _township_units(
    patches: gpd.GeoDataFrame, townships: gpd.GeoDataFrame, *, only_townships: set[str] | None
) -> list[_Unit]:
    """One package per township that has patches (and one for the unassigned ones)."""
    groups = split_by_township(patches)
    if only_townships is not None:
        groups = {k: v for k, v in groups.items() if k in only_townships}
    town_info = townships.set_index(G.CODE)
    units = []
    for code, group in groups.items():
        name, person = _township_name(code, group, town_info)
        relpath = f"{package_stem(code, name)}.zip"
        units.append(_Unit(Level.TOWNSHIP, code, name, person, group, relpath))
    return units


def _export_unit(
    unit: _Unit,
    villages: gpd.GeoDataFrame,
    out_dir: Path,
    entry: dict[str, Any] | None,
    *,
    previous: Path | None,
    cfg: ExportConfig,
    area_name: str,
    date: str,
    chips: Mapping[str, bytes],
    dossiers: Mapping[str, DossierFiles],
) -> dict[str, Any]:
    """Reuse or build the package of one unit; its manifest entry.

    ``entry`` is what an earlier manifest recorded for the package (None: nothing).
    """
    key = package_manifest_key(
        unit.patches,
        _unit_villages(villages, unit),
        cfg=cfg,
        area_name=area_name,
        unit=(unit.level, unit.code, unit.name, unit.person),
        chips=chips,
        dossiers=dossiers,
    )
    path = out_dir / unit.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    built_on = _reuse_package(entry, key, out_dir, previous, unit.relpath)
    if built_on is None:
        _build_package(unit, villages, path, cfg=cfg, area_name=area_name, date=date,
                       chips=chips, dossiers=dossiers)  # fmt: skip
        built_on = date
    return {
        "level": unit.level,
        "code": unit.code,
        "key": key,
        "built_on": built_on,
        "n_patches": len(unit.patches),
    }


def _reuse_package(
    entry: dict[str, Any] | None, key: str, out_dir: Path, previous: Path | None, relpath: str
) -> str | None:
    """Put the zip of an unchanged package in place; its ``built_on`` date, or None to build it."""
    source = _reusable(entry, key, out_dir, previous, relpath)
    if source is None:
        return None
    path = out_dir / relpath
    if source != path:
        _link_or_copy(source, path)
    built_on = entry["built_on"]
    log.info("field package %s unchanged since %s: reused", relpath, built_on)
    return built_on


def _build_package(
    unit: _Unit,
    villages: gpd.GeoDataFrame,
    path: Path,
    *,
    cfg: ExportConfig,
    area_name: str,
    date: str,
    chips: Mapping[str, bytes],
    dossiers: Mapping[str, DossierFiles],
) -> None:
    """Write the zip of one package to ``path``, its files under a folder named like it."""
    members = _package_members(
        unit.patches,
        villages,
        cfg=cfg,
        area_name=area_name,
        date=date,
        code=unit.code,
        name=unit.name,
        person=unit.person,
        level=unit.level,
        chips=chips,
        dossiers=dossiers,
    )
    folder = Path(unit.relpath).stem
    atomic_write_bytes(path, zip_bytes({f"{folder}/{k}": v for k, v in members.items()}, date=date))
    log.info("field package %s: %d patches", unit.relpath, len(unit.patches))


def _unit_villages(villages: gpd.GeoDataFrame, unit: _Unit) -> gpd.GeoDataFrame:
    """The village polygons a package's GeoPackage holds (see :func:`_gpkg_bytes`)."""
    return _villages_of(villages, unit.level, unit.code, unit.patches)


def _villages_of(
    villages: gpd.GeoDataFrame, level: str, code: str, patches: pd.DataFrame
) -> gpd.GeoDataFrame:
    """The village itself, the villages of the township, or (without township codes on the
    villages) those holding the patches."""
    if level == Level.VILLAGE:
        return villages[villages[G.CODE] == code]
    if G.TOWNSHIP_CODE in villages.columns:
        return villages[villages[G.TOWNSHIP_CODE] == code]
    return villages[villages[G.CODE].isin(patches[P.VILLAGE_CODE])]


def _reusable(
    entry: dict[str, Any] | None, key: str, out_dir: Path, previous: Path | None, relpath: str
) -> Path | None:
    """The existing zip that can stand for this package, or None to rebuild it."""
    if not entry or entry.get("key") != key or "built_on" not in entry:
        return None
    for folder in (out_dir, previous):
        if folder is not None and (Path(folder) / relpath).is_file():
            return Path(folder) / relpath
    return None


def _link_or_copy(source: Path, path: Path) -> None:
    """Hard-link ``source`` to ``path`` (atomic rename into place); copy across devices.

    Notes
    -----
    Hard links are safe because every writer here replaces files (new inode) instead of
    writing into them.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, path)


def _read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s (%s); packages will be rebuilt", path, exc)
        return {}
    if data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("packages"), dict):
        log.warning(
            "ignoring %s: format %r, expected %r", path, data.get("format"), MANIFEST_FORMAT
        )
        return {}
    return data["packages"]


def _write_manifest(folder: Path, packages: dict[str, dict[str, Any]], *, date: str) -> None:
    data = {
        "format": MANIFEST_FORMAT,
        "landwatch": __version__,
        "date": date,
        "packages": dict(sorted(packages.items())),
    }
    payload = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    atomic_write_bytes(Path(folder) / MANIFEST, payload.encode("utf-8"))


# --------------------------------------------------------------------------- pure helpers
def split_by_township(patches: gpd.GeoDataFrame) -> dict[str, gpd.GeoDataFrame]:
    """The patches per township code (``"unassigned"`` included), sorted by code then id.

    Notes
    -----
    A missing township code counts as unassigned: every patch lands in exactly one group.
    """
    codes = patches[P.TOWNSHIP_CODE].astype(object).where(patches[P.TOWNSHIP_CODE].notna())
    codes = codes.fillna(UNASSIGNED).astype(str)
    ordered = patches.assign(_town=codes.values).sort_values(
        ["_town", P.VILLAGE_CODE, P.PATCH_ID], kind="stable", na_position="last"
    )
    return {
        code: group.drop(columns="_town")
        for code, group in ordered.groupby("_town", sort=True, dropna=False)
    }


def split_by_village(patches: gpd.GeoDataFrame) -> dict[str, gpd.GeoDataFrame]:
    """The patches per village code, sorted by code then id; unassigned patches left out.

    Notes
    -----
    Patches outside every village (code missing or ``"unassigned"``) get no village
    package: they are in the unassigned township package.
    """
    codes = _as_text(patches[P.VILLAGE_CODE])
    keep = codes.notna() & (codes != UNASSIGNED)
    part = patches[keep.to_numpy()].assign(_vill=codes[keep].to_numpy())
    part = part.sort_values(["_vill", P.PATCH_ID], kind="stable")
    return {code: g.drop(columns="_vill") for code, g in part.groupby("_vill", sort=True)}


def package_stem(code: str, name: str) -> str:
    """``{code}_{name}`` safe as a file name on Windows, Linux and in zips.

    ``\\ / : * ? " < > |``, control characters and whitespace become ``_``.
    """
    stem = f"{code}_{name}" if name and name != code else str(code)
    stem = re.sub(r'[\\/:*?"<>|\x00-\x1f\s]+', "_", stem).strip(" ._")
    return stem or str(code)


def package_key(patches_of_township: gpd.GeoDataFrame) -> str:
    """SHA-256 (hex) of everything of these patches a package shows.

    Equal keys mean an equal package for the same config, grids, date and code version
    (fold those into your own key), so the caller can skip re-exporting an unchanged
    township.

    Notes
    -----
    Row order does not matter (rows are sorted by patch id); ``updated_at`` is left out as
    no package shows it. Geometries enter as 2-D WKB, together with the CRS (WKT).
    """
    check_columns(patches_of_township, PATCH_COLUMNS, "patches")
    cols = [c for c in PATCH_COLUMNS if c != P.UPDATED_AT]
    frame = patches_of_township.sort_values(P.PATCH_ID, kind="stable")
    rows = [[_plain(v) for v in row] for row in frame[cols].itertuples(index=False, name=None)]
    digest = hashlib.sha256()
    crs = frame.crs.to_wkt() if frame.crs is not None else ""
    digest.update(json.dumps([cols, crs, rows], ensure_ascii=False, default=str).encode())
    for wkb in shapely.to_wkb(np.asarray(frame.geometry.values), output_dimension=2):
        digest.update(b"\x00" if wkb is None else wkb)
    return digest.hexdigest()


def package_frame(patches: gpd.GeoDataFrame, crs: str) -> gpd.GeoDataFrame:
    """The patches as packages show them: PATCH_COLUMNS, rounded numbers, text, in ``crs``.

    Notes
    -----
    Areas (m² and 亩) are rounded to 2 decimals, shares and scores to 4; every other column
    becomes text (dates as ISO text) with None for missing values, so codes keep their
    leading zeros in every format. Areas are those of the registry (ellipsoidal, computed
    in the target CRS), not re-measured in ``crs``.
    """
    data = {}
    for col in PATCH_COLUMNS:
        if col in ROUND_2:
            data[col] = floats(patches[col]).round(2)
        elif col in ROUND_4:
            data[col] = floats(patches[col]).round(4)
        else:
            data[col] = _as_text(patches[col])
    frame = gpd.GeoDataFrame(data, geometry=patches.geometry.values, crs=patches.crs)
    frame.index = patches.index
    return frame.to_crs(crs)


def shapefile_frame(patches: gpd.GeoDataFrame, crs: str, encoding: str) -> gpd.GeoDataFrame:
    """:func:`package_frame` renamed to the Shapefile field names of SHAPEFILE_FIELDS.

    Notes
    -----
    Text longer than a DBF field holds (254 bytes in ``encoding``) is cut at a character
    boundary and a warning is logged. Columns without a Shapefile name (``village_shares``,
    ``updated_at``) are only in the GeoPackage.
    """
    frame = package_frame(patches, crs)
    out = frame[[*SHAPEFILE_FIELDS, frame.geometry.name]].rename(columns=SHAPEFILE_FIELDS)
    for col in SHAPEFILE_FIELDS.values():
        if out[col].dtype == object:
            cut = [_truncate(v, encoding, DBF_MAX_BYTES) for v in out[col]]
            n_cut = sum(a is not b for a, b in zip(cut, out[col], strict=True))
            if n_cut:
                log.warning(
                    "%d value(s) of field %s exceed %d bytes in %s and were shortened in the "
                    "Shapefile (the GeoPackage keeps them whole)",
                    n_cut,
                    col,
                    DBF_MAX_BYTES,
                    encoding,
                )
            out[col] = pd.Series(cut, index=out.index, dtype=object)
    return out


def kml_frame(patches: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The patches for KML: WGS 84, a name, a Chinese description and a style per verdict.

    Notes
    -----
    GDAL's KML/LIBKML drivers map the fields ``Name`` and ``description`` to the placemark
    name and description, and the field ``OGR_STYLE`` (an OGR style string) to its style.
    """
    frame = package_frame(patches, KML_CRS)
    verdict = frame[P.VERDICT].fillna(Verdict.PENDING)
    hint = frame[P.LEGAL_HINT]
    styles = [
        KML_STYLES.get((v, h if v == Verdict.PENDING else None))
        or KML_STYLES.get((v, None))
        or KML_STYLES[(Verdict.PENDING, None)]
        for v, h in zip(verdict, hint, strict=True)
    ]
    description = [
        " · ".join(
            t
            for t in (
                text(village),
                f"{area:.2f} 亩" if not isna(area) else "",
                label(change),
                LEGAL_HINT_LABELS.get(h, text(h)),
                f"认定: {label(v)}",
            )
            if t
        )
        for village, area, change, h, v in zip(
            frame[P.VILLAGE_NAME],
            frame[P.AREA_MU],
            frame[P.CHANGE_TYPE],
            hint,
            verdict,
            strict=True,
        )
    ]
    attrs = frame[list(SHAPEFILE_FIELDS)]
    head = pd.DataFrame(
        {_KML_NAME: frame[P.PATCH_ID], _KML_DESCRIPTION: description, _KML_STYLE: styles},
        index=frame.index,
    )
    return gpd.GeoDataFrame(
        pd.concat([head, attrs], axis=1), geometry=frame.geometry.values, crs=frame.crs
    )


def return_template(patches: pd.DataFrame) -> pd.DataFrame:
    """The field-return template: one row per patch, by village and, within a village, in work
    order (:func:`pipeline.registry.urgency.in_work_order`: urgent first by due date).

    ``patch_id``, ``village_code``, ``village_name`` and ``area_mu`` (2 decimals) are
    filled; the columns field teams fill (verdict, verdict_subtype, rect_method,
    remaining_m2, checked_on, inspector, note) are empty. Headers are the canonical
    column names (:data:`RETURN_TEMPLATE_COLUMNS`).
    """
    frame = in_work_order(patches).sort_values(P.VILLAGE_CODE, kind="stable", na_position="last")
    out = pd.DataFrame(index=range(len(frame)), columns=list(RETURN_TEMPLATE_COLUMNS), dtype=object)
    out[P.PATCH_ID] = _as_text(frame[P.PATCH_ID]).to_numpy()
    out[P.VILLAGE_CODE] = _as_text(frame[P.VILLAGE_CODE]).to_numpy()
    out[P.VILLAGE_NAME] = _as_text(frame[P.VILLAGE_NAME]).to_numpy()
    out[P.AREA_MU] = (floats(frame[P.AREA_M2]) / MU_M2).round(2).to_numpy()
    return out


def data_dictionary() -> pd.DataFrame:
    """One row per patch column: Shapefile field, full name, Chinese and English labels,
    allowed values, and the files that carry it."""
    allowed = {
        P.VERDICT: Verdict,
        P.RECT_METHOD: RectMethod,
        P.CHANGE_TYPE: ChangeType,
        P.LEGAL_HINT: LegalHint,
        P.ENFORCEMENT_STAGE: EnforcementStage,
        P.DEMOLISHED_BY: DemolishedBy,
    }
    rows = []
    for col in PATCH_COLUMNS:
        en, zh = COLUMN_LABELS.get(col, (col, ""))
        values = allowed.get(col)
        rows.append(
            {
                DD.SHP_FIELD: SHAPEFILE_FIELDS.get(col, ""),
                DD.COLUMN: col,
                DD.LABEL_ZH: zh,
                DD.MEANING_EN: en,
                DD.ALLOWED_VALUES: "; ".join(f"{v.value}={label(v)}" for v in values)
                if values
                else "",
                DD.IN_FILES: "shp gpkg kml" if col in SHAPEFILE_FIELDS else "gpkg",
            }
        )
    return pd.DataFrame(rows)


def zip_bytes(members: dict[str, bytes], *, date: str) -> bytes:
    """A zip of ``members`` (entry name -> bytes), entries sorted, all dated ``date`` 00:00.

    Notes
    -----
    Non-ASCII entry names get the UTF-8 flag (bit 11), set by :mod:`zipfile` itself.
    """
    when = dt.datetime.combine(output_date(date), dt.time())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(members):
            zf.writestr(fixed_zipinfo(name, when), members[name])
    return buf.getvalue()


# --------------------------------------------------------------------------- package files
def _package_members(
    group: gpd.GeoDataFrame,
    villages: gpd.GeoDataFrame,
    *,
    cfg: ExportConfig,
    area_name: str,
    date: str,
    code: str,
    name: str,
    person: str,
    level: str = Level.TOWNSHIP,
    chips: Mapping[str, bytes] | None = None,
    dossiers: Mapping[str, DossierFiles] | None = None,
) -> dict[str, bytes]:
    """Every file of one package (township or village), name -> bytes."""
    layer = f"{code}_patches"
    chips, dossiers = chips or {}, dossiers or {}
    ids = [str(i) for i in group[P.PATCH_ID]]
    chip_names = {pid: f"{CHIPS_DIR}/{pid}.png" for pid in ids if pid in chips}
    dossier_names = {pid: f"{DOSSIERS_DIR}/{pid}" for pid in ids if pid in dossiers}
    members: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="landwatch-export-") as tmp:
        tmp_dir = Path(tmp)
        members.update(_shapefile_files(group, tmp_dir, layer, cfg=cfg, date=date))
        members[f"{layer}.gpkg"] = _gpkg_bytes(
            group, villages, tmp_dir, layer, code, cfg=cfg, date=date, level=level
        )
        members[f"{layer}.kml"] = _kml_bytes(group, tmp_dir, layer)
    members["data_dictionary.csv"] = data_dictionary().to_csv(index=False).encode("utf-8-sig")
    template = return_template(group)
    members["return_template.csv"] = template.to_csv(index=False, float_format="%.2f").encode(
        "utf-8-sig"
    )
    members["return_template.xlsx"] = workbook_bytes(_return_workbook(template), date=date)
    members["patches.html"] = _patch_list_html(
        group,
        villages,
        area_name=area_name,
        date=date,
        code=code,
        name=name,
        person=person,
        level=level,
        chip_names=chip_names,
        dossier_names=dossier_names,
    ).encode("utf-8")
    members["README.txt"] = _readme(
        area_name=area_name,
        date=date,
        code=code,
        name=name,
        n=len(group),
        layer=layer,
        cfg=cfg,
        level=level,
        n_chips=len(chip_names),
        n_dossiers=len(dossier_names),
    ).encode("utf-8-sig")
    for pid, entry in chip_names.items():
        members[entry] = chips[pid]
    for pid, stem in dossier_names.items():
        members[f"{stem}.pdf"] = dossiers[pid].pdf.read_bytes()
        members[f"{stem}.html"] = dossiers[pid].html.read_bytes()
    return members


def _shapefile_files(
    group: gpd.GeoDataFrame, tmp_dir: Path, layer: str, *, cfg: ExportConfig, date: str
) -> dict[str, bytes]:
    """The Shapefile's files, text in ``cfg.encoding`` and a ``.cpg`` that says so.

    Notes
    -----
    GDAL recodes DBF text into the ``SHAPE_ENCODING`` config option when one is in force (an
    environment variable set for reading GBK inputs, say), whatever ``.cpg`` it writes: the
    option is set to ``cfg.encoding`` for the write, and the bytes are checked afterwards
    (:func:`pipeline.overlay.io.dbf.first_mismatch`).
    """
    path = tmp_dir / f"{layer}.shp"
    frame = shapefile_frame(group, cfg.crs, cfg.encoding)
    with _gdal_config(SHAPE_ENCODING=cfg.encoding):
        pyogrio.write_dataframe(frame, path, encoding=cfg.encoding, promote_to_multi=True)
    files = {}
    for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
        part = path.with_suffix(ext)
        if not part.exists():
            raise InputDataError(f"GDAL did not write {part.name}; cannot build the package")
        files[part.name] = part.read_bytes()
    texts = {c: list(frame[c]) for c in frame.columns if c != frame.geometry.name}
    texts = {c: [v if isinstance(v, str) else None for v in vs] for c, vs in texts.items()
             if any(isinstance(v, str) for v in vs)}  # fmt: skip
    wrong = first_mismatch(files[f"{layer}.dbf"], cfg.encoding, texts)
    if wrong:
        raise StageError(
            f"export: {layer}.dbf does not hold its text in {cfg.encoding} ({wrong}); GDAL "
            "recoded it (check the SHAPE_ENCODING environment variable / GDAL option)"
        )
    files[f"{layer}.cpg"] = cfg.encoding.encode("ascii")
    dbf = _stamp_dbf(files[f"{layer}.dbf"], output_date(date))
    files[f"{layer}.dbf"] = _set_language_driver(dbf, cfg.encoding)
    return files


def _gpkg_bytes(
    group: gpd.GeoDataFrame,
    villages: gpd.GeoDataFrame,
    tmp_dir: Path,
    layer: str,
    code: str,
    *,
    cfg: ExportConfig,
    date: str,
    level: str = Level.TOWNSHIP,
) -> bytes:
    path = tmp_dir / f"{layer}.gpkg"
    mine = _villages_of(villages, level, code, group)
    cols = [c for c in (G.CODE, G.NAME, G.TOWNSHIP_CODE, G.PERSON) if c in mine.columns]
    mine = mine[[*cols, mine.geometry.name]].sort_values(G.CODE, kind="stable")
    # GDAL stamps gpkg_contents.last_change with the current time unless told otherwise
    with _gdal_config(OGR_CURRENT_DATE=f"{output_date(date).isoformat()}T00:00:00.000Z"):
        pyogrio.write_dataframe(
            package_frame(group, cfg.crs), path, layer=PATCHES_LAYER, promote_to_multi=True
        )
        write_status_style(path, layer=PATCHES_LAYER)
        if len(mine) and mine.crs is not None:
            pyogrio.write_dataframe(
                mine.to_crs(cfg.crs), path, layer=PACKAGE_VILLAGES_LAYER, promote_to_multi=True
            )
    return path.read_bytes()


def _kml_bytes(group: gpd.GeoDataFrame, tmp_dir: Path, layer: str) -> bytes:
    path = tmp_dir / f"{layer}.kml"
    drivers = pyogrio.list_drivers(write=True)
    driver = "LIBKML" if "LIBKML" in drivers else "KML"
    pyogrio.write_dataframe(kml_frame(group), path, layer=layer, driver=driver)
    return path.read_bytes()


_TEMPLATE_CHOICES = (
    (P.VERDICT, Verdict),
    (P.RECT_METHOD, RectMethod),
    (P.ENFORCEMENT_STAGE, EnforcementStage),
    (P.DEMOLISHED_BY, DemolishedBy),
)
"""Template columns with a list of allowed values (English and Chinese)."""


def _return_workbook(template: pd.DataFrame) -> Workbook:
    """The return template as a workbook: sheet ``return`` (canonical headers) + ``README``."""
    wb = Workbook()
    ws = wb.active
    ws.title = "return"
    bold = Font(bold=True)
    fill = PatternFill(fill_type="solid", start_color="FFDDEBF7", end_color="FFDDEBF7")
    text_cols = {P.PATCH_ID, P.VILLAGE_CODE, P.VILLAGE_NAME, P.VERDICT, P.VERDICT_SUBTYPE}
    text_cols |= {P.RECT_METHOD, P.CHECKED_ON, P.INSPECTOR, P.NOTE}
    text_cols |= {P.ENFORCEMENT_STAGE, P.STAGE_DATE, P.DEMOLISHED_BY}
    n = len(template)
    for j, col in enumerate(RETURN_TEMPLATE_COLUMNS, start=1):
        cell = ws.cell(row=1, column=j, value=col)
        cell.font, cell.fill = bold, fill
        letter = get_column_letter(j)
        ws.column_dimensions[letter].width = 18 if col != P.NOTE else 30
        fmt = "@" if col in text_cols else "0.00"
        for i, value in enumerate(template[col], start=2):
            c = ws.cell(row=i, column=j, value=None if isna(value) else value)
            c.number_format = fmt
    ws.freeze_panes = "B2"
    for col, enum in _TEMPLATE_CHOICES:
        choices = [v.value for v in enum] + [CHINESE_LABELS[v] for v in enum]
        dv = DataValidation(
            type="list",
            formula1='"' + ",".join(choices) + '"',
            allow_blank=True,
            errorStyle="warning",
            error=f"{col}: " + ", ".join(choices),
        )
        letter = get_column_letter(RETURN_TEMPLATE_COLUMNS.index(col) + 1)
        dv.add(f"{letter}2:{letter}{max(2, n + 1)}")
        ws.add_data_validation(dv)

    readme = wb.create_sheet("README")
    lines: list[tuple[str, ...]] = [
        ("column", "中文", "English", "填写说明 / how to fill"),
    ]
    hints = {
        P.PATCH_ID: ("已填，勿改", "pre-filled, do not change"),
        P.VILLAGE_CODE: ("已填，仅供参考", "pre-filled, for reference"),
        P.VILLAGE_NAME: ("已填，仅供参考", "pre-filled, for reference"),
        P.AREA_MU: ("已填(亩)，仅供参考", "pre-filled (mu), for reference"),
        P.VERDICT: ("必填，见下表", "required, see the values below"),
        P.VERDICT_SUBTYPE: ("认定为“其他”时填写类型", "type when the verdict is 'other'"),
        P.RECT_METHOD: ("违法时填写，见下表", "for illegal patches, see the values below"),
        P.REMAINING_M2: (
            "违法时填写剩余未整改面积(平方米)，已整改完填 0",
            "illegal patches: remaining unrectified area in m², 0 when done",
        ),
        P.ENFORCEMENT_STAGE: (
            "违法时填写已到达的查处阶段，见下表；自上次交回后经过多步的，按步骤分次交回",
            "illegal patches: the step reached, see the values below; several steps since the "
            "last return: one return per step, in order",
        ),
        P.STAGE_DATE: ("该阶段日期 YYYY-MM-DD", "date of that step, YYYY-MM-DD"),
        P.DEMOLISHED_BY: (
            "拆除时填写：自行或强制(可不填，由阶段推出)",
            "for demolitions: self or forced (optional, follows from the stage)",
        ),
        P.CHECKED_ON: ("核查日期 YYYY-MM-DD", "date checked, YYYY-MM-DD"),
        P.INSPECTOR: ("核查人姓名", "name of the inspector"),
        P.NOTE: ("备注", "free text"),
    }
    for col in RETURN_TEMPLATE_COLUMNS:
        en, zh = COLUMN_LABELS[col]
        lines.append((col, zh, en, " / ".join(hints[col])))
    lines.append(())
    lines.append(("value", "中文", "meaning", ""))
    for what, enum in _TEMPLATE_CHOICES:
        for v in enum:
            lines.append((v.value, CHINESE_LABELS[v], what, ""))
    lines.append(())
    lines.append(
        (
            "中文或英文取值均可；每个图斑一行；填好后将本文件交回。",
            "Chinese or English values are accepted; one row per patch; send this file back.",
        )
    )
    for line in lines:
        readme.append(list(line))
    for j, width in enumerate((26, 26, 40, 60), start=1):
        readme.column_dimensions[get_column_letter(j)].width = width
    for cell in readme[1]:
        cell.font = bold
    readme["A1"].alignment = Alignment(vertical="top")
    return wb


def _patch_list_html(
    group: gpd.GeoDataFrame,
    villages: gpd.GeoDataFrame,
    *,
    area_name: str,
    date: str,
    code: str,
    name: str,
    person: str,
    level: str = Level.TOWNSHIP,
    chip_names: Mapping[str, str] | None = None,
    dossier_names: Mapping[str, str] | None = None,
) -> str:
    chip_names, dossier_names = chip_names or {}, dossier_names or {}
    frame = in_work_order(group)
    points = frame.geometry.representative_point().to_crs(KML_CRS)
    persons = (
        villages.drop_duplicates(G.CODE).set_index(G.CODE)[G.PERSON]
        if G.PERSON in villages.columns
        else pd.Series(dtype=object)
    )
    village_groups = []
    keys = _as_text(frame[P.VILLAGE_CODE]).fillna(UNASSIGNED)
    for vcode, part in frame.groupby(keys.to_numpy(), sort=True):
        pts = points.loc[part.index]
        rows = [
            {
                "patch_id": r[P.PATCH_ID],
                "area_m2": r[P.AREA_M2],
                "farmland_m2": r[P.FARMLAND_M2],
                "basic_farmland_m2": r[P.BASIC_FARMLAND_M2],
                "change_type": label(r[P.CHANGE_TYPE]),
                "legal_hint": LEGAL_HINT_LABELS.get(r[P.LEGAL_HINT], text(r[P.LEGAL_HINT])),
                "approval_refs": text(r[P.APPROVAL_REFS]),
                "verdict": label(r[P.VERDICT]),
                "rect_method": label(r[P.RECT_METHOD]),
                "stage": label(r[P.ENFORCEMENT_STAGE]),
                "remaining_m2": r[P.REMAINING_M2],
                "first_seen": text(r[P.FIRST_SEEN]),
                "lon": x,
                "lat": y,
                "chip": chip_names.get(str(r[P.PATCH_ID])),
                "dossier": dossier_names.get(str(r[P.PATCH_ID])),
                "urgent": bool(r.get(CY.URGENT, False)),
                "p_real_change": r.get(P_REAL_CHANGE),
                "low_confidence": r.get(LOW_CONFIDENCE) is True,
                "report_due": text(r.get(CY.REPORT_DUE)),
            }
            for r, x, y in zip(part.to_dict("records"), pts.x, pts.y, strict=True)
        ]
        village_groups.append(
            {
                "code": vcode,
                "name": text(part[P.VILLAGE_NAME].iloc[0]) or vcode,
                "person": text(persons.get(vcode)),
                "area_m2": float(floats(part[P.AREA_M2]).sum()),
                "rows": rows,
            }
        )
    return render_page(
        "patch_list.html.j2",
        area_name=area_name,
        date=date,
        code=code,
        name=name,
        person=person,
        n_patches=len(frame),
        area_m2=float(floats(frame[P.AREA_M2]).sum()),
        villages=village_groups,
        version=__version__,
        level=level,
        has_chips=bool(chip_names),
        has_learning=P_REAL_CHANGE in frame.columns,
    )


def _readme(
    *,
    area_name: str,
    date: str,
    code: str,
    name: str,
    n: int,
    layer: str,
    cfg: ExportConfig,
    level: str = Level.TOWNSHIP,
    n_chips: int = 0,
    n_dossiers: int = 0,
) -> str:
    unit = "行政村 village" if level == Level.VILLAGE else "乡镇 township"
    chips_lines = (
        [
            f"  {CHIPS_DIR}/<patch_id>.png   前后两期影像截图（左：前时相，右：后时相，黄线为图斑边界），"
            f"{n_chips} 张",
            "      before (left) / after (right) image chips, patch outlined in yellow",
        ]
        if n_chips
        else []
    )
    dossier_lines = (
        [
            f"  {DOSSIERS_DIR}/<patch_id>.pdf / .html   每个图斑一份档案（A4，位置图、前后影像、面积、"
            f"批文、责任人、事件记录、实地照片），{n_dossiers} 份",
            "      one dossier per patch (A4 page: location, before/after, areas, approvals, "
            "responsible persons, history, photos)",
        ]
        if n_dossiers
        else []
    )
    lines = [
        f"{area_name} 卫片执法图斑核查包 / field package",
        f"{unit}: {name} ({code})    日期 date: {date}    图斑 patches: {n}",
        "",
        "内容 Contents",
        f"  {layer}.shp/.shx/.dbf/.prj/.cpg  图斑 Shapefile；字段名见 data_dictionary.csv；"
        f"文字编码 {cfg.encoding}（见 .cpg）；坐标系 {cfg.crs}",
        f"      patches as a Shapefile; field names in data_dictionary.csv; text encoding "
        f"{cfg.encoding} (see .cpg); CRS {cfg.crs}",
        f"  {layer}.gpkg   同一批图斑（完整字段名，图层 patches）及本乡镇行政村界线（图层 villages）",
        "      the same patches with full column names (layer patches) and village boundaries",
        f"  {layer}.kml    同一批图斑，WGS 84 经纬度，可在奥维/Google Earth 中打开，颜色表示认定状态",
        "      the same patches in WGS 84 for phone map apps / Google Earth, coloured by status",
        "  patches.html    按行政村排列的图斑清单（含中心点经纬度），可打印",
        "      printable list of the patches by village, with a point inside each patch",
        *chips_lines,
        *dossier_lines,
        "  data_dictionary.csv   字段说明 field dictionary",
        "  return_template.xlsx / return_template.csv   核查结果回填表 return template",
        "",
        "如何回填 How to return results",
        "  1. 逐个图斑实地核查。Visit every patch.",
        "  2. 在 return_template.xlsx（或 .csv）中每个图斑一行填写：verdict 核实认定意见"
        "（pending/legal/illegal/false_change/other 或 待核查/合法/违法/伪变化/其他）；",
        "     认定为“其他”时填 verdict_subtype；违法图斑填 rect_method 整改方式"
        "（demolished_restored/legalized/confiscated/combined/none 或 拆除复耕/补办手续/没收/"
        "综合整改/未整改）",
        "     和 remaining_m2 剩余未整改面积（平方米，整改完毕填 0）；并填 checked_on 核查日期"
        "（YYYY-MM-DD）、inspector 核查人、note 备注。",
        "     Fill one row per patch: verdict; verdict_subtype for 'other'; for illegal patches "
        "rect_method and remaining_m2 (m², 0 when fully rectified); checked_on, inspector, note.",
        "  3. 不要修改 patch_id 和表头；village_code、village_name、area_mu 仅供参考。",
        "     Do not change patch_id or the headers; village_code, village_name and area_mu are "
        "for reference only.",
        "  4. 将填好的文件交回区自然资源局。Send the filled file back to the district bureau.",
        "     UTF-8 和 GBK 编码的 CSV 均可。CSV in UTF-8 or GBK is accepted.",
        "",
        "说明 Notes",
        "  卫片图斑仅为线索，认定以实地核查为准。Satellite patches are leads, not verdicts.",
        "  面积单位：平方米(m2)与亩，1 亩 = 10000/15 平方米。Areas in m2 and mu (1 mu = 666.67 m2).",
        f"  本包由 landwatch {__version__} 生成，文件日期均记为 {date}。"
        f"Made by landwatch {__version__}; file dates are set to {date}.",
    ]
    return "\r\n".join(lines) + "\r\n"


# --------------------------------------------------------------------------- small helpers
def _township_name(code: str, group: pd.DataFrame, town_info: pd.DataFrame) -> tuple[str, str]:
    """(name, responsible person) of a township, from the grid, else from the patches."""
    if code == UNASSIGNED:
        return UNASSIGNED_PACKAGE_NAME, ""
    if code in town_info.index:
        row = town_info.loc[code]
        if isinstance(row, pd.DataFrame):  # duplicate codes: grids.py reports them
            row = row.iloc[0]
        person = text(row[G.PERSON]) if G.PERSON in town_info.columns else ""
        return text(row[G.NAME]) or code, person
    names = group[P.TOWNSHIP_NAME].dropna()
    log.warning(
        "township %s has patches but is not in the township grid; using the name stored "
        "with its patches",
        code,
    )
    return (text(names.iloc[0]) if len(names) else code), ""


def _village_name(code: str, group: pd.DataFrame, village_info: pd.DataFrame) -> tuple[str, str]:
    """(name, responsible person) of a village, from the grid, else from the patches."""
    if code in village_info.index:
        row = village_info.loc[code]
        person = text(row[G.PERSON]) if G.PERSON in village_info.columns else ""
        return text(row[G.NAME]) or code, person
    names = group[P.VILLAGE_NAME].dropna()
    return (text(names.iloc[0]) if len(names) else code), ""


@contextlib.contextmanager
def _gdal_config(**options: str) -> Iterator[None]:
    """Set GDAL config options for the block and restore the previous values after it."""
    old = {k: pyogrio.get_gdal_config_option(k) for k in options}
    pyogrio.set_gdal_config_options(options)
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options(old)


def _set_language_driver(data: bytes, encoding: str) -> bytes:
    """Byte 29 of a DBF header: the id of ``encoding`` in
    :data:`pipeline.overlay.io.dbf.LANGUAGE_DRIVERS` (0x4D, code page 936, for GBK), for
    readers without ``.cpg`` support; 0 (no information: the ``.cpg`` says) for UTF-8."""
    ldid = language_driver_of(encoding)
    return data[:29] + bytes((ldid,)) + data[30:]


def _stamp_dbf(data: bytes, date: dt.date) -> bytes:
    """Set the 'last update' date of a DBF header (bytes 1-3: YY since 1900, MM, DD)."""
    header = bytes((date.year - 1900, date.month, date.day))
    return data[:1] + header + data[4:]


def _as_text(series: pd.Series) -> pd.Series:
    """Text values (dates as ISO text), None where missing; object dtype."""
    values = [
        None if isna(v) else (v.isoformat() if hasattr(v, "isoformat") else str(v)) for v in series
    ]
    return pd.Series(values, index=series.index, dtype=object)


def _truncate(value: Any, encoding: str, max_bytes: int) -> Any:
    if not isinstance(value, str):
        return value
    raw = value.encode(encoding, errors="replace")
    if len(raw) <= max_bytes:
        return value
    return raw[:max_bytes].decode(encoding, errors="ignore")


def _plain(value: Any) -> Any:
    if isna(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
