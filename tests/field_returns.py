"""Builders for the field-return tests: a township's registry and the return template its
package ships, written as the real ``.xlsx`` / ``.csv`` and as an Excel 97-2003 ``.xls``.

One township (城关镇) of 16 pending patches of 400 m² in two villages, as in the report of
issue 13 ("a township of 16 patches showed n_pending 0").
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import box

from pipeline.outputs.packages import _return_workbook, return_template
from pipeline.registry.store import RegistryState, empty_state, normalise_patches
from pipeline.schema import PATCH_COLUMNS, G, P
from pipeline.units import MU_M2

CRS = "EPSG:4548"
X0, Y0 = 500_000.0, 4_000_000.0
TOWN = "130609101000"
VILLAGES = {"130609101001": "东村", "130609101002": "西村"}
N_PATCHES = 16
AREA_M2 = 400.0
TODAY = "2024-06-01"
NOW = "2024-06-01T10:00:00Z"


def patch_ids(n: int = N_PATCHES) -> list[str]:
    return [f"1306092017{i:05d}" for i in range(1, n + 1)]


def township_state(n: int = N_PATCHES) -> RegistryState:
    """A registry holding ``n`` pending patches of 400 m² (300 m² farmland) in 城关镇, the
    first half in 东村, the rest in 西村."""
    ids = patch_ids(n)
    codes = [list(VILLAGES)[0 if i < n // 2 else 1] for i in range(n)]
    data: dict[str, Any] = {
        P.PATCH_ID: ids,
        P.EPOCH_FROM: ["2016"] * n,
        P.EPOCH_TO: ["2017"] * n,
        P.AREA_M2: [AREA_M2] * n,
        P.AREA_MU: [AREA_M2 / MU_M2] * n,
        P.FARMLAND_M2: [300.0] * n,
        P.BASIC_FARMLAND_M2: [0.0] * n,
        P.APPROVED_M2: [0.0] * n,
        P.APPROVED_SHARE: [0.0] * n,
        P.APPROVAL_REFS: [None] * n,
        P.LEGAL_HINT: ["suspected"] * n,
        P.TOWNSHIP_CODE: [TOWN] * n,
        P.TOWNSHIP_NAME: ["城关镇"] * n,
        P.VILLAGE_CODE: codes,
        P.VILLAGE_NAME: [VILLAGES[c] for c in codes],
        P.VILLAGE_SHARE: [1.0] * n,
        P.VILLAGE_SHARES: [json.dumps({c: 1.0}) for c in codes],
        P.CHANGE_TYPE: ["veg_to_construction"] * n,
        P.SCORE: [3.5] * n,
        P.VERDICT: ["pending"] * n,
        P.VERDICT_SUBTYPE: [None] * n,
        P.RECT_METHOD: [None] * n,
        P.REMAINING_M2: [np.nan] * n,
        P.FIRST_SEEN: ["2017-06-01"] * n,
        P.LAST_SEEN: ["2017-06-01"] * n,
        P.CHECKED_ON: [None] * n,
        P.INSPECTOR: [None] * n,
        P.NOTE: [None] * n,
        P.UPDATED_AT: ["2024-04-30T12:00:00Z"] * n,
    }
    geoms = [box(X0 + 30 * i, Y0, X0 + 30 * i + 20, Y0 + 20) for i in range(n)]
    patches = gpd.GeoDataFrame(
        {c: data.get(c, [None] * n) for c in PATCH_COLUMNS}, geometry=geoms, crs=CRS
    )
    return dataclasses.replace(empty_state(CRS), patches=normalise_patches(patches))


def grid_units() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(villages, townships) as :func:`pipeline.registry.rates.compute_rates` takes them."""
    villages = pd.DataFrame(
        {G.CODE: list(VILLAGES), G.NAME: list(VILLAGES.values()), G.TOWNSHIP_CODE: TOWN}
    )
    townships = pd.DataFrame({G.CODE: [TOWN], G.NAME: ["城关镇"]})
    return villages, townships


def filled_template(state: RegistryState, filled: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The package's return template (:func:`pipeline.outputs.packages.return_template`) with the
    cells of ``filled`` (patch id -> {column: value}) written in; the other rows untouched."""
    template = return_template(state.patches)
    for pid, values in filled.items():
        (index,) = np.flatnonzero(template[P.PATCH_ID] == pid)
        for column, value in values.items():
            template.at[index, column] = value
    return template


def write_xlsx(template: pd.DataFrame, path: Path) -> Path:
    """The template as the package's ``return_template.xlsx`` (same workbook builder)."""
    _return_workbook(template).save(path)
    return path


def write_csv(template: pd.DataFrame, path: Path, *, encoding: str = "utf-8-sig") -> Path:
    """The template as the package's ``return_template.csv``."""
    template.to_csv(path, index=False, float_format="%.2f", encoding=encoding)
    return path


def write_xls(headers: Sequence[str], rows: Sequence[Sequence[Any]], path: Path) -> Path:
    """A real Excel 97-2003 workbook (xlwt): numbers stay numbers, None leaves a cell empty."""
    import xlwt

    book = xlwt.Workbook(encoding="utf-8")
    sheet = book.add_sheet("核查结果")
    for j, header in enumerate(headers):
        sheet.write(0, j, header)
    for i, row in enumerate(rows, start=1):
        for j, value in enumerate(row):
            if value is not None:
                sheet.write(i, j, value)
    book.save(str(path))
    return path


def template_rows(template: pd.DataFrame) -> list[list[Any]]:
    """The template's rows as plain values (NaN as None) for :func:`write_xls`."""
    return [[None if pd.isna(v) else v for v in row] for row in template.itertuples(index=False)]
