"""Simulated field returns for the sample: what township teams would report about the
registered patches, judged against the sample's ground truth, in two rounds.

Pure: the registry's patches and the sample's truth in, one return table per township and
round out (Chinese headers and values, as townships write them).

- **Verdict** (round 1): a patch overlapping a new object of the truth by at least
  :data:`MATCH_SHARE` of its area is ``legal`` when the object is of kind ``legal`` (fully
  approved) and ``illegal`` for every other kind (illegal, partly approved, off farmland,
  earthworks); any other patch is a false change.
- **Enforcement** of an illegal patch follows one of the practice's paths, chosen from its id
  (the same every time): round 1 gives the first step, round 2 the outcome and the remaining
  area (0 when rectified). Most cases end in self-demolition after guidance, some are
  legalized, a few go through a case, a penalty or the court, some are still open.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import geopandas as gpd
import pandas as pd
import shapely

from pipeline.sample.scene import Kind
from pipeline.schema import CHINESE_LABELS, COLUMN_LABELS, EnforcementStage, P, T, Verdict

MATCH_SHARE = 0.2
"""Share of a patch's area a truth object must cover to be what the patch found."""


S = EnforcementStage
PATHS: tuple[tuple[int, S, S | None], ...] = (
    (60, S.NOTIFIED, S.SELF_DEMOLISHED),
    (10, S.NOTIFIED, S.LEGALIZED),
    (8, S.CASE_FILED, S.SELF_DEMOLISHED),
    (7, S.COURT, S.FORCED_DEMOLISHED),
    (5, S.PENALTY_DECIDED, S.CONFISCATED),
    (10, S.NOTIFIED, S.CASE_FILED),
)
"""(weight in %, round-1 step, round-2 step) of the enforcement paths; the last one is a
case still open after round 2."""

_DONE = frozenset({S.SELF_DEMOLISHED, S.FORCED_DEMOLISHED, S.LEGALIZED, S.CONFISCATED})


def verdicts(patches: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> pd.Series:
    """The verdict a field team finds for each patch (index as ``patches``)."""
    truth = truth.to_crs(patches.crs)[[T.KIND, "geometry"]]
    pairs = gpd.sjoin(patches[["geometry"]], truth, predicate="intersects", how="inner")
    out = pd.Series(Verdict.FALSE_CHANGE.value, index=patches.index)
    if pairs.empty:
        return out
    inter = shapely.intersection(
        pairs.geometry.to_numpy(), truth.geometry.loc[pairs["index_right"]].to_numpy()
    )
    pairs["_share"] = shapely.area(inter) / patches.geometry.area.loc[pairs.index].to_numpy()
    best = pairs[pairs["_share"] >= MATCH_SHARE].sort_values("_share").groupby(level=0).last()
    kind = best[T.KIND]
    out.loc[kind.index] = kind.map(
        lambda k: Verdict.LEGAL.value if k == Kind.LEGAL else Verdict.ILLEGAL.value
    )
    return out


def enforcement_path(patch_id: str) -> tuple[S, S | None]:
    """The (round 1, round 2) steps of an illegal patch, chosen from a hash of its id."""
    roll = int(hashlib.sha256(patch_id.encode()).hexdigest()[:8], 16) % 100
    for weight, first, second in PATHS:
        if roll < weight:
            return first, second
        roll -= weight
    return PATHS[-1][1], PATHS[-1][2]  # pragma: no cover - weights sum to 100


ROUND2_SPREAD_DAYS = 45
"""Round 2 reports steps taken on the days up to this many days before its date (teams
report what happened since round 1, not all on one day)."""


def _spread(patch_id: str) -> int:
    """Days before the round-2 date that the patch's step happened (from a hash of its id)."""
    return int(hashlib.sha256(patch_id.encode()).hexdigest()[8:12], 16) % (ROUND2_SPREAD_DAYS + 1)


def round_rows(
    patches: gpd.GeoDataFrame, found: pd.Series, *, round_no: int, day: dt.date
) -> pd.DataFrame:
    """The return rows of one round (canonical columns, Chinese values): round 1 judges
    every patch on ``day`` and gives the first step of each illegal one; round 2 reports the
    outcome of the illegal ones, each dated up to :data:`ROUND2_SPREAD_DAYS` before ``day``
    (keep round 2 at least that long after round 1)."""
    rows = []
    for idx, pid in patches[P.PATCH_ID].items():
        verdict = found[idx]
        row = {P.PATCH_ID: pid, P.TOWNSHIP_CODE: patches.at[idx, P.TOWNSHIP_CODE]}
        if verdict != Verdict.ILLEGAL:
            if round_no == 1:
                rows.append(row | {P.VERDICT: CHINESE_LABELS[Verdict(verdict)],
                                   P.CHECKED_ON: day.isoformat()})  # fmt: skip
            continue
        step = enforcement_path(str(pid))[round_no - 1]
        remaining = 0.0 if step in _DONE else float(patches.at[idx, P.AREA_M2])
        done_on = day - dt.timedelta(days=_spread(str(pid)) if round_no == 2 else 0)
        rows.append(row | {
            P.VERDICT: CHINESE_LABELS[Verdict.ILLEGAL],
            P.ENFORCEMENT_STAGE: CHINESE_LABELS.get(step.value, step.value),
            P.STAGE_DATE: done_on.isoformat(),
            P.REMAINING_M2: f"{remaining:.2f}",
            P.CHECKED_ON: done_on.isoformat(),
            P.INSPECTOR: "样例核查员",
        })  # fmt: skip
    return pd.DataFrame(rows)


def township_files(rows: pd.DataFrame, round_no: int) -> dict[str, pd.DataFrame]:
    """File name -> the rows of one township, headed with the Chinese column labels as a
    township would write them (``图斑编号``, ``核实认定意见``, ...)."""
    out = {}
    if rows.empty:
        return out
    for code, group in rows.groupby(P.TOWNSHIP_CODE, sort=True):
        table = group.drop(columns=P.TOWNSHIP_CODE)
        table = table.rename(columns={c: _header(c) for c in table.columns})
        out[f"{code}_第{round_no}轮核查.csv"] = table
    return out


def _header(column: str) -> str:
    zh = COLUMN_LABELS[column][1]
    return zh.replace("(平方米)", "") if column == P.REMAINING_M2 else zh
