"""Domain assertions for tests and notebooks (like ``geopandas.testing``).

They check the data contract of DESIGN §3 on real output files, so a test (or an analyst in
a notebook) can say ``assert_registry_contract(path)`` instead of re-listing columns.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyogrio

from pipeline.schema import (
    EVENT_COLUMNS,
    EVENTS_TABLE,
    PATCH_COLUMNS,
    PATCHES_LAYER,
    RATES_COLUMNS,
    RC,
    RUN_COLUMNS,
    RUNS_TABLE,
    UNASSIGNED,
    P,
    Verdict,
)

PATCH_ID_RE = re.compile(r"^\d{6}\d{4}\d{5}$")


def assert_registry_contract(path: Path, *, county_code: str | None = None) -> None:
    """``registry.gpkg`` has the patches layer and events/runs tables with the contract columns,
    text codes, well-formed unique ids, valid geometries and known verdicts."""
    layers = {name for name, _ in pyogrio.list_layers(path)}
    missing = {PATCHES_LAYER, EVENTS_TABLE, RUNS_TABLE} - layers
    assert not missing, f"{path}: missing layers {missing}; found {sorted(layers)}"
    patches = pyogrio.read_dataframe(path, layer=PATCHES_LAYER)
    _assert_columns(patches.columns, PATCH_COLUMNS, f"{path}:{PATCHES_LAYER}")
    ids = patches[P.PATCH_ID]
    assert ids.is_unique, f"duplicate patch ids: {ids[ids.duplicated()].tolist()[:5]}"
    bad = [i for i in ids if not isinstance(i, str) or not PATCH_ID_RE.match(i)]
    assert not bad, f"patch ids not of the form county6+year4+serial5: {bad[:5]}"
    if county_code:
        assert all(i.startswith(county_code) for i in ids), "patch ids with another county prefix"
    for col in (P.TOWNSHIP_CODE, P.VILLAGE_CODE):
        codes = patches[col].dropna()
        assert all(isinstance(c, str) for c in codes), f"{col} must be text, found non-text values"
    assert patches[P.VERDICT].isin([v.value for v in Verdict]).all(), "unknown verdicts"
    assert patches.geometry.is_valid.all(), "invalid patch geometries"
    assert (patches[P.AREA_M2] > 0).all(), "patches with zero area"
    events = pyogrio.read_dataframe(path, layer=EVENTS_TABLE, read_geometry=False)
    _assert_columns(events.columns, EVENT_COLUMNS, f"{path}:{EVENTS_TABLE}")
    runs = pyogrio.read_dataframe(path, layer=RUNS_TABLE, read_geometry=False)
    _assert_columns(runs.columns, RUN_COLUMNS, f"{path}:{RUNS_TABLE}")


def assert_rates_contract(rates: pd.DataFrame) -> None:
    """A rates table has the contract columns, rates within [0, 1] or undefined (NaN), and the
    district total equals the sum over townships."""
    _assert_columns(rates.columns, RATES_COLUMNS, "rates")
    for col in (RC.ILLEGAL_RATIO, RC.ILLEGAL_RATIO_UPPER, RC.RECT_RATE_AREA, RC.RECT_RATE_COUNT):
        values = pd.to_numeric(rates[col], errors="coerce").dropna()
        assert values.between(0, 1).all(), (
            f"{col} outside [0, 1]: {values[~values.between(0, 1)].tolist()}"
        )
    district = rates[rates[RC.LEVEL] == "district"]
    townships = rates[rates[RC.LEVEL] == "township"]
    assert len(district) == 1, "exactly one district row expected"
    for col in (RC.N_PATCHES, RC.N_ILLEGAL, RC.N_PENDING):
        assert int(district[col].iloc[0]) == int(townships[col].sum()), (
            f"district {col} != Σ townships"
        )
    assert (rates["code"].astype(str) != "").all()
    assert UNASSIGNED not in set(district["code"])


def _assert_columns(found, expected, where: str) -> None:
    missing = [c for c in expected if c not in set(found)]
    assert not missing, f"{where}: missing columns {missing}; found {list(found)}"


AMBIGUOUS_SHARE = 0.6
"""A truth object whose largest village share is below this is split nearly evenly: the
detected patch (a few pixels smaller or larger) may fairly land in either village."""


def right_village(patches, truth, best, villages, *, code_field: str = "code"):
    """Per truth object: was it detected (``best`` ≥ 0, from :func:`pipeline.detection.accuracy.match_objects`)
    and assigned to its village?

    ``truth`` needs ``village_code`` and ``village_share`` (the synthetic sample's truth has
    both). An object split nearly evenly (largest share < :data:`AMBIGUOUS_SHARE`) counts as
    right in any village holding at least 40 % of it.
    """
    import numpy as np
    import shapely

    best = np.asarray(best)
    out = np.zeros(len(truth), dtype=bool)
    codes = patches[P.VILLAGE_CODE].to_numpy()
    v_geoms = np.asarray(villages.geometry.values)
    v_codes = villages[code_field].to_numpy()
    for i, (geom, code, share) in enumerate(
        zip(truth.geometry, truth["village_code"], truth["village_share"], strict=True)
    ):
        if best[i] < 0:
            continue
        got = codes[best[i]]
        if got == code:
            out[i] = True
        elif share < AMBIGUOUS_SHARE:
            shares = shapely.area(shapely.intersection(v_geoms, geom)) / geom.area
            out[i] = got in set(v_codes[shares >= 0.4])
    return out
