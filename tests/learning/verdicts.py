"""A registry of verified and pending patches with stored features, made in code: real
changes have a low later vegetation index and a high brightness ratio, false changes the
opposite (with overlap); the detector's score is given separately, so a test can make it
useless (noise) or perfect (the truth)."""

from __future__ import annotations

import dataclasses

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from pipeline.learning.features import FEATURE_NAMES, feature_rows
from pipeline.registry.store import empty_state, normalise_patches
from pipeline.schema import PATCH_COLUMNS, P, Verdict
from tests.district import CRS, X0, Y0

VILLAGES = ("130609101001", "130609101002", "130609102001", "130609102002")


def verdict_registry(
    n_per_pair: int = 80,
    *,
    pairs=(("2015", "2016"), ("2016", "2017")),
    false_share: float = 0.4,
    score: str = "noise",
    n_pending: int = 10,
    seed: int = 0,
):
    """(state, truth): ``truth`` is 1 for a real change per patch id (pending ones too)."""
    rng = np.random.default_rng(seed)
    rows, features, truth = [], [], {}
    serial = 0
    for k, pair in enumerate(pairs):
        n = n_per_pair + (n_pending if k == len(pairs) - 1 else 0)
        real = rng.random(n) >= false_share
        feats = pd.DataFrame(np.nan, index=range(n), columns=list(FEATURE_NAMES))
        feats["vi_to"] = np.where(real, 0.05, 0.45) + rng.normal(0, 0.12, n)
        feats["brightness_ratio"] = np.where(real, 1.6, 1.1) + rng.normal(0, 0.25, n)
        feats["log_area_m2"] = np.log(rng.uniform(200, 3000, n))
        feats["change_type"] = 0.0
        ids = []
        for i in range(n):
            serial += 1
            pid = f"130609{pair[1]}{serial:05d}"
            ids.append(pid)
            pending = k == len(pairs) - 1 and i >= n_per_pair
            verdict = (
                Verdict.PENDING
                if pending
                else (Verdict.ILLEGAL if real[i] else Verdict.FALSE_CHANGE)
            )
            value = {"noise": rng.random(), "truth": float(real[i]) + 0.01 * rng.random()}[score]
            rows.append(_patch(pid, pair, verdict, value, VILLAGES[i % len(VILLAGES)], serial))
            truth[pid] = int(real[i])
        features.append(feature_rows(feats, pd.Series(ids), pair, "run-test"))
    state = empty_state(CRS)
    patches = normalise_patches(pd.DataFrame(rows).pipe(_frame))
    table = pd.concat(features, ignore_index=True)
    return dataclasses.replace(state, patches=patches, features=table), truth


def _patch(pid, pair, verdict, score, village, serial) -> dict:
    x = X0 + (serial % 40) * 60
    y = Y0 + (serial // 40) * 60
    return {
        P.PATCH_ID: pid, P.EPOCH_FROM: pair[0], P.EPOCH_TO: pair[1], P.AREA_M2: 400.0,
        P.VERDICT: verdict.value, P.SCORE: score, P.VILLAGE_CODE: village,
        P.TOWNSHIP_CODE: village[:9] + "000", P.FIRST_SEEN: pair[1],
        "geometry": shapely.box(x, y, x + 20, y + 20),
    }  # fmt: skip


def _frame(df: pd.DataFrame) -> gpd.GeoDataFrame:
    for col in PATCH_COLUMNS:
        if col not in df.columns:
            df[col] = None
    return gpd.GeoDataFrame(df, geometry="geometry", crs=CRS)


def with_new_pending(state, n: int, *, pair=("2016", "2017"), seed: int = 1):
    """``state`` with ``n`` more pending patches (and their features) of ``pair``, as a new
    detection adds them; nothing else changes."""
    rng = np.random.default_rng(seed)
    feats = pd.DataFrame(np.nan, index=range(n), columns=list(FEATURE_NAMES))
    feats["vi_to"] = rng.uniform(0, 0.5, n)
    feats["brightness_ratio"] = rng.uniform(1.0, 1.8, n)
    feats["change_type"] = 0.0
    start = 90000
    ids = [f"130609{pair[1]}{start + i:05d}" for i in range(n)]
    rows = [_patch(pid, pair, Verdict.PENDING, rng.random(), VILLAGES[0], start + i)
            for i, pid in enumerate(ids)]  # fmt: skip
    patches = normalise_patches(pd.concat([state.patches, _frame(pd.DataFrame(rows))]))
    table = pd.concat([state.features, feature_rows(feats, pd.Series(ids), pair, "run-2")])
    return dataclasses.replace(state, patches=patches, features=table.reset_index(drop=True))
