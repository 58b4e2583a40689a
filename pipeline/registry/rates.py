"""Rectification rate (整改率) and illegal-occupation ratio (违法占地比例) per unit.

Pure: patches and grid frames in, the ``rates`` table out (DESIGN §2 formulas, columns of
:data:`~pipeline.schema.RATES_COLUMNS`).

Definitions
-----------
Over the patches of one unit (district, township or village):

- ``rect_rate_area`` = Σ(area_m2 − remaining_m2) / Σ area_m2 over illegal patches;
- ``rect_rate_count`` = #illegal with remaining_m2 == 0 / #illegal;
- ``illegal_ratio`` = Σ farmland_m2 of illegal / Σ farmland_m2 of legal + illegal patches;
- ``illegal_ratio_upper`` counts pending patches as illegal:
  (illegal + pending farmland) / (legal + illegal + pending farmland).

A rate whose denominator is zero is undefined: NaN, never 0 or 1. ``illegal_ratio_met`` is
``illegal_ratio < illegal_ratio_target`` and ``rect_rate_met`` is
``rect_rate_area >= rect_rate_target`` (the area rate is the assessed one; both rates are
reported); both are nullable booleans, NA when the rate is undefined.

``zero_case`` (零新增 candidate) is True when the unit has no illegal **and** no pending
patch: a pending patch may still turn out illegal, so a unit only qualifies once every patch
in it has been checked.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline.registry.store import PATCH_FLOAT_COLUMNS, RegistryState
from pipeline.schema import (
    DERIVED_COLUMNS,
    EVENT_BEFORE_SUFFIX,
    RATES_COLUMNS,
    RC,
    UNASSIGNED,
    E,
    EventKind,
    G,
    P,
    Verdict,
)
from pipeline.units import MU_M2

log = logging.getLogger(__name__)

# TODO(schema): PART_OF and DISTRICT_NAME_DEFAULT belong in schema.py
PART_OF = "part_of"
"""Optional patch column (assign ``split`` mode): the id of the patch a part belongs to."""
DISTRICT_NAME_DEFAULT = "全区"

_REPLAYED = (P.VERDICT, P.VERDICT_SUBTYPE, P.RECT_METHOD, P.REMAINING_M2)


def compute_rates(
    patches: pd.DataFrame,
    villages: pd.DataFrame,
    townships: pd.DataFrame,
    district: pd.DataFrame | tuple[str, str] | None = None,
    *,
    rect_rate_target: float = 0.85,
    illegal_ratio_target: float = 0.15,
    year: str | None = None,
) -> pd.DataFrame:
    """The rates table: one row for the district, each township and each village.

    Parameters
    ----------
    patches : pandas.DataFrame
        Registry patches (geometry not needed): ``patch_id``, ``verdict``, ``area_m2``,
        ``remaining_m2``, ``farmland_m2``, ``township_code``/``_name``,
        ``village_code``/``_name``, ``epoch_to``; optionally :data:`PART_OF`.
    villages, townships : pandas.DataFrame
        Grid units with ``code`` and ``name`` (villages also ``township_code``), as loaded
        by :func:`pipeline.overlay.io.grid_layers.load_grids`. Every unit gets a row, even
        without patches.
    district : DataFrame with ``code``/``name``, or ``(code, name)``, optional
        Default: code = the 6-digit county prefix of the township codes + ``000000``,
        name ``全区``.
    rect_rate_target, illegal_ratio_target : float
        Targets for the ``*_met`` columns.
    year : str, optional
        Only patches whose ``epoch_to`` starts with this year.

    Returns
    -------
    pandas.DataFrame
        Exactly :data:`~pipeline.schema.RATES_COLUMNS`; rows ordered district, townships
        (by code), villages (by code); an ``unassigned`` row at township and village level
        when any patch is unassigned.

    Notes
    -----
    - Areas are the stored m² (ellipsoidal); ``illegal_mu`` = ``illegal_m2`` / (10000/15).
    - A patch's units come from its ``township_code``/``village_code``; empty codes and
      ``unassigned`` count as unassigned. A code not in the grid gets its own row (named
      from the patches) so totals still add up; this is logged.
    - The district row sums every patch, assigned or not.
    - Split patches (rows sharing a :data:`PART_OF` id) count once per unit in the
      ``n_*`` columns; a split illegal patch is rectified in a unit when all its parts there
      are (remaining 0). Areas simply add up.
    - An illegal patch with no ``remaining_m2`` counts as wholly unrectified.
    """
    _check_targets(rect_rate_target, illegal_ratio_target)
    table = _patch_table(patches, year)
    d_code, d_name = district_unit(district, townships)
    units = _units(table, villages, townships, d_code, d_name)
    frames = []
    for level, unit_col in (("district", None), ("township", "tcode"), ("village", "vcode")):
        keyed = table.assign(unit=d_code if unit_col is None else table[unit_col])
        frames.append(units[level].join(_aggregate(keyed), on="code"))
    out = pd.concat(frames, ignore_index=True)
    return _finish(out, rect_rate_target, illegal_ratio_target)


def rates_as_of(
    state: RegistryState,
    date: dt.date | dt.datetime | str,
    villages: pd.DataFrame,
    townships: pd.DataFrame,
    district: pd.DataFrame | tuple[str, str] | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """The rates table as it stood at the end of ``date``, replayed from the events.

    Patches first recorded after ``date`` are left out; verdict, sub-type, rectification
    method and remaining area are the last values the events up to ``date`` set (events of
    kinds detected, relapse, field_verdict, rectification). The derived attributes
    (:data:`~pipeline.schema.DERIVED_COLUMNS`: township and village, farmland and approved
    areas, ...) are those before the first later event that changed them (its ``*_before``
    value), so a layer corrected after ``date`` does not change the rates of ``date``.
    Keyword arguments go to :func:`compute_rates`.

    Notes
    -----
    Event times are ISO-8601 UTC text compared as text: a date covers its whole UTC day.
    Geometry and areas are today's (a ``grown`` patch counts with its current area);
    field-verdict events are dated by their import, not by ``checked_on``.
    """
    patches = replay_patches(state, date)
    return compute_rates(patches, villages, townships, district, **kwargs)


def replay_patches(state: RegistryState, date: dt.date | dt.datetime | str) -> pd.DataFrame:
    """The patches frame with the verdict/rectification fields and the derived attributes
    as of ``date`` (see :func:`rates_as_of`)."""
    if isinstance(date, dt.datetime):
        cutoff = date.isoformat()
    elif isinstance(date, dt.date):
        cutoff = date.isoformat() + "T99"  # sorts after any time of that day
    else:
        cutoff = str(date) if "T" in str(date) else f"{date}T99"
    up_to = state.events[E.TIME].astype("str") <= cutoff
    events = state.events[up_to]
    known = set(events[E.PATCH_ID].dropna())
    patches = state.patches[state.patches[P.PATCH_ID].isin(known)].copy()
    for col in _REPLAYED:
        patches[col] = np.nan
    patches[P.VERDICT] = Verdict.PENDING.value
    kinds = {
        EventKind.DETECTED,
        EventKind.RELAPSE,
        EventKind.FIELD_VERDICT,
        EventKind.RECTIFICATION,
    }
    relevant = events[events[E.KIND].isin([k.value for k in kinds])].sort_values(E.EVENT_ID)
    records = []
    for pid, text in zip(relevant[E.PATCH_ID], relevant[E.VALUES]):
        values = json.loads(text) if isinstance(text, str) and text else {}
        records += [(pid, col, values[col]) for col in _REPLAYED if col in values]
    if records:
        last = pd.DataFrame(records, columns=["pid", "col", "value"]).groupby(["pid", "col"]).last()
        wide = last["value"].unstack("col")
        idx = patches.set_index(P.PATCH_ID).index
        for col in wide.columns:
            mapped = idx.map(wide[col])
            patches[col] = np.where(pd.isna(mapped), patches[col], mapped)
    patches[P.REMAINING_M2] = pd.to_numeric(patches[P.REMAINING_M2], errors="coerce")
    patches = _undo_derived(patches, state.events[~up_to])
    return patches.reset_index(drop=True)


def _undo_derived(patches: pd.DataFrame, later: pd.DataFrame) -> pd.DataFrame:
    """``patches`` with each derived attribute set back to its ``*_before`` value in the
    first of the ``later`` events that changed it (events record old and new values)."""
    later = later.sort_values(E.EVENT_ID)
    records = []
    for pid, text in zip(later[E.PATCH_ID], later[E.VALUES], strict=True):
        if not isinstance(text, str) or EVENT_BEFORE_SUFFIX not in text:
            continue
        values = json.loads(text)
        records += [
            (pid, col, values[col + EVENT_BEFORE_SUFFIX])
            for col in DERIVED_COLUMNS
            if col + EVENT_BEFORE_SUFFIX in values
        ]
    if not records:
        return patches
    first = pd.DataFrame(records, columns=["pid", "col", "value"]).drop_duplicates(
        ["pid", "col"], keep="first"
    )
    patches = patches.copy()
    ids = patches[P.PATCH_ID]
    for col, group in first.groupby("col", sort=False):
        before = dict(zip(group["pid"], group["value"]))
        hit = ids.isin(before).to_numpy()
        values = [before[pid] for pid in ids[hit]]
        column = patches[col].astype(object)
        column.loc[hit] = pd.Series(values, index=patches.index[hit], dtype=object)
        if col in PATCH_FLOAT_COLUMNS:
            column = pd.to_numeric(column, errors="coerce").astype("float64")
        patches[col] = column
    return patches


# --------------------------------------------------------------------------- internals
def _check_targets(rect_rate_target: float, illegal_ratio_target: float) -> None:
    for name, value in (
        ("rect_rate_target", rect_rate_target),
        ("illegal_ratio_target", illegal_ratio_target),
    ):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} = {value} must be a share in [0, 1] (e.g. 0.85)")


def unit_codes(codes: pd.Series) -> pd.Series:
    """Township or village codes as text; missing or blank ones are :data:`UNASSIGNED`."""
    text = codes.astype("str").str.strip()
    return text.where(codes.notna() & (text != ""), UNASSIGNED)


def _patch_table(patches: pd.DataFrame, year: str | None) -> pd.DataFrame:
    """One row per patch (or part) with the per-patch terms of every formula."""
    p = patches
    if year is not None:
        p = p[p[P.EPOCH_TO].astype("str").str[:4] == str(year)]
    verdict = p[P.VERDICT].astype("str")
    area = pd.to_numeric(p[P.AREA_M2], errors="coerce").fillna(0.0).to_numpy(dtype="float64")
    farm = pd.to_numeric(p[P.FARMLAND_M2], errors="coerce").fillna(0.0).to_numpy(dtype="float64")
    rem = pd.to_numeric(p[P.REMAINING_M2], errors="coerce").to_numpy(dtype="float64")
    illegal = (verdict == Verdict.ILLEGAL).to_numpy()
    legal = (verdict == Verdict.LEGAL).to_numpy()
    pending = (verdict == Verdict.PENDING).to_numpy()
    rem = np.where(np.isnan(rem), area, rem)  # illegal without remaining: unrectified
    key = p[P.PATCH_ID].astype("str")
    if PART_OF in p.columns:
        key = p[PART_OF].astype("str").where(p[PART_OF].notna(), key)
    return pd.DataFrame(
        {
            "key": key.to_numpy(),
            "tcode": unit_codes(p[P.TOWNSHIP_CODE]).to_numpy(),
            "tname": p[P.TOWNSHIP_NAME].to_numpy(),
            "vcode": unit_codes(p[P.VILLAGE_CODE]).to_numpy(),
            "vname": p[P.VILLAGE_NAME].to_numpy(),
            "verdict": verdict.to_numpy(),
            RC.PATCHES_M2: area,
            RC.ILLEGAL_M2: np.where(illegal, area, 0.0),
            "remaining_m2": np.where(illegal, rem, 0.0),
            RC.ILLEGAL_FARMLAND_M2: np.where(illegal, farm, 0.0),
            RC.PENDING_FARMLAND_M2: np.where(pending, farm, 0.0),
            RC.CONSTRUCTION_FARMLAND_M2: np.where(legal | illegal, farm, 0.0),
        }
    )


_SUMS = (
    RC.PATCHES_M2,
    RC.ILLEGAL_M2,
    "remaining_m2",
    RC.ILLEGAL_FARMLAND_M2,
    RC.PENDING_FARMLAND_M2,
    RC.CONSTRUCTION_FARMLAND_M2,
)
_COUNTS = {
    RC.N_PENDING: Verdict.PENDING,
    RC.N_LEGAL: Verdict.LEGAL,
    RC.N_ILLEGAL: Verdict.ILLEGAL,
    RC.N_FALSE_CHANGE: Verdict.FALSE_CHANGE,
    RC.N_OTHER: Verdict.OTHER,
}


def _aggregate(keyed: pd.DataFrame) -> pd.DataFrame:
    """Sums and counts per ``unit``; parts of one patch in one unit count as one case."""
    cases = keyed.groupby(["unit", "key"], sort=False).agg(
        verdict=("verdict", "first"), **{c: (c, "sum") for c in _SUMS}
    )
    cases[RC.N_RECTIFIED] = (cases["verdict"] == Verdict.ILLEGAL) & (cases["remaining_m2"] <= 0)
    for col, verdict in _COUNTS.items():
        cases[col] = cases["verdict"] == verdict
    per_unit = cases.groupby(level="unit").agg(
        n_patches=("verdict", "size"),
        **{c: (c, "sum") for c in (*_COUNTS, RC.N_RECTIFIED, *_SUMS)},
    )
    return per_unit


def district_unit(district, townships: pd.DataFrame) -> tuple[str, str]:
    """(code, name) of the district row: a given pair, the district layer's first unit, or
    the townships' common 6-digit prefix padded to 12 digits with the default name."""
    if isinstance(district, tuple):
        return str(district[0]), str(district[1])
    if district is not None and len(district):
        return str(district[G.CODE].iloc[0]), str(district[G.NAME].iloc[0])
    prefixes = townships[G.CODE].astype("str").str[:6].unique() if len(townships) else []
    code = f"{prefixes[0]}000000" if len(prefixes) == 1 else ""
    return code, DISTRICT_NAME_DEFAULT


def _units(
    table: pd.DataFrame, villages: pd.DataFrame, townships: pd.DataFrame, d_code: str, d_name: str
) -> dict[str, pd.DataFrame]:
    """Unit rows (level, code, name, parent_code) per level, in report order."""
    district = pd.DataFrame(
        {RC.LEVEL: ["district"], "code": [d_code], "name": [d_name], RC.PARENT_CODE: [np.nan]}
    )
    town = pd.DataFrame(
        {
            "code": townships[G.CODE].astype("str").to_numpy(),
            "name": townships[G.NAME].to_numpy(),
            RC.PARENT_CODE: d_code,
        }
    )
    town = _with_extra(town, table, "tcode", "tname", lambda codes: d_code, "township")
    vill_parent = (
        villages[G.TOWNSHIP_CODE].to_numpy() if G.TOWNSHIP_CODE in villages.columns else np.nan
    )
    vill = pd.DataFrame(
        {
            "code": villages[G.CODE].astype("str").to_numpy(),
            "name": villages[G.NAME].to_numpy(),
            RC.PARENT_CODE: vill_parent,
        }
    )
    first_town = table.groupby("vcode")["tcode"].first()
    vill = _with_extra(
        vill, table, "vcode", "vname", lambda codes: codes.map(first_town), "village"
    )
    return {
        "district": district,
        "township": town.assign(level="township")[[RC.LEVEL, "code", "name", RC.PARENT_CODE]],
        "village": vill.assign(level="village")[[RC.LEVEL, "code", "name", RC.PARENT_CODE]],
    }


def _with_extra(units, table, code_col, name_col, parent_of, level) -> pd.DataFrame:
    """Add rows for codes carried by patches but absent from the grid (e.g. unassigned)."""
    units = units.drop_duplicates("code")
    extra = table.loc[~table[code_col].isin(units["code"]), [code_col, name_col]]
    extra = extra.groupby(code_col, sort=True)[name_col].first()
    if len(extra):
        unknown = [c for c in extra.index if c != UNASSIGNED]
        if unknown:
            log.warning("rates: %s code(s) not in the grid: %s", level, ", ".join(unknown[:10]))
        names = extra.where(extra.notna() & (extra.index != UNASSIGNED), extra.index.to_series())
        rows = pd.DataFrame({"code": extra.index, "name": names.to_numpy(), RC.PARENT_CODE: np.nan})
        parent = parent_of(rows["code"])
        rows[RC.PARENT_CODE] = parent.to_numpy() if isinstance(parent, pd.Series) else parent
        units = pd.concat([units, rows], ignore_index=True)
    last = units["code"] == UNASSIGNED
    units = units.assign(_last=last).sort_values(["_last", "code"], kind="stable")
    return units.drop(columns="_last").reset_index(drop=True)


def _finish(out: pd.DataFrame, rect_target: float, ratio_target: float) -> pd.DataFrame:
    counts = [RC.N_PATCHES, *_COUNTS, RC.N_RECTIFIED]
    out[counts] = out[counts].fillna(0).astype("int64")
    out[list(_SUMS)] = out[list(_SUMS)].fillna(0.0).astype("float64")
    out[RC.RECTIFIED_M2] = out[RC.ILLEGAL_M2] - out["remaining_m2"]
    out[RC.ILLEGAL_MU] = out[RC.ILLEGAL_M2] / MU_M2
    out[RC.ILLEGAL_RATIO] = _ratio(out[RC.ILLEGAL_FARMLAND_M2], out[RC.CONSTRUCTION_FARMLAND_M2])
    out[RC.ILLEGAL_RATIO_UPPER] = _ratio(
        out[RC.ILLEGAL_FARMLAND_M2] + out[RC.PENDING_FARMLAND_M2],
        out[RC.CONSTRUCTION_FARMLAND_M2] + out[RC.PENDING_FARMLAND_M2],
    )
    out[RC.RECT_RATE_AREA] = _ratio(out[RC.RECTIFIED_M2], out[RC.ILLEGAL_M2])
    out[RC.RECT_RATE_COUNT] = _ratio(out[RC.N_RECTIFIED], out[RC.N_ILLEGAL])
    out[RC.ILLEGAL_RATIO_MET] = _met(out[RC.ILLEGAL_RATIO], lambda r: r < ratio_target)
    out[RC.RECT_RATE_MET] = _met(out[RC.RECT_RATE_AREA], lambda r: r >= rect_target)
    out[RC.ZERO_CASE] = (out[RC.N_ILLEGAL] == 0) & (out[RC.N_PENDING] == 0)
    for col in ("code", "name", RC.PARENT_CODE):
        out[col] = out[col].astype("str").where(out[col].notna())
    return out[list(RATES_COLUMNS)].reset_index(drop=True)


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    num = num.astype("float64")
    den = den.astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.Series(np.where(den > 0, num / den, np.nan), index=num.index, dtype="float64")


def _met(rate: pd.Series, test) -> pd.Series:
    out = pd.Series(pd.NA, index=rate.index, dtype="boolean")
    defined = rate.notna()
    out[defined] = test(rate[defined])
    return out
