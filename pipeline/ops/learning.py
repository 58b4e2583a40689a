"""Learning from field verdicts, the I/O around :mod:`pipeline.learning`:

- :func:`record_features` — the register stage keeps each new or redetected patch's features
  (``patch_features`` table);
- :func:`learn_registry` — the ``learn`` stage and ``landwatch learn``: train, validate, store;
- :func:`verdict_snapshot` — the ``learn`` stage's input fingerprint (so it is skipped when no
  verdict changed);
- :func:`learned_ranking` — ``p_real_change`` and ``priority`` of the pending patches for the
  export and the report (empty when no model is used: the score order stays).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import sklearn

from pipeline.config import Config
from pipeline.learning.features import (
    FEATURE_NAMES,
    detection_patch_ids,
    feature_rows,
    patch_features,
    upsert_features,
)
from pipeline.learning.io.model_store import ModelInfo, load_used_model, read_info, save_model
from pipeline.learning.io.rasters import raster_features
from pipeline.learning.model import fit, snapshot_hash, training_set, validate
from pipeline.learning.ranking import rank_pending
from pipeline.ops.workspace import Workspace
from pipeline.overlay.io.layer_check import read_overlay
from pipeline.registry.io.registry_file import load_registry
from pipeline.registry.store import RegistryState

log = logging.getLogger(__name__)


def record_features(
    cfg: Config,
    ws: Workspace,
    state: RegistryState,
    detections: gpd.GeoDataFrame,
    pair: tuple[str, str],
    *,
    run_id: str,
) -> RegistryState:
    """``state`` with the features of the pair's detections stored under the patches they
    became (rows of the same patch and pair replaced)."""
    if len(detections) == 0:
        return state
    raster = raster_features(cfg, pair, detections, ws.pair_dir(pair) / "score.tif")
    approvals = _approvals(cfg)
    feats = patch_features(detections, raster, approvals=approvals)
    rows = feature_rows(feats, detection_patch_ids(detections, state.patches), pair, run_id)
    return dataclasses.replace(state, features=upsert_features(state.features, rows))


def _approvals(cfg: Config) -> gpd.GeoSeries | None:
    layer = read_overlay(cfg.layers.approvals, "approvals", cfg.area.crs)
    return None if layer is None else layer.geometry


def verdict_snapshot(cfg: Config, ws: Workspace) -> str:
    """The hash of the verdicts and features the ``learn`` stage would train on."""
    state = load_registry(ws.registry, cfg.area.crs)
    return snapshot_hash(training_set(state.patches, state.features))


def learn_registry(cfg: Config, ws: Workspace, *, run_id: str, now: str) -> dict[str, Any]:
    """Train on the verified patches, validate against the score order, store the model and
    what it did in ``{workspace}/learn/``; the figures for the run record."""
    state = load_registry(ws.registry, cfg.area.crs)
    ts = training_set(state.patches, state.features)
    check = validate(ts, min_per_class=cfg.learn.min_per_class)
    model = fit(ts) if check.scheme is not None else None
    if model is None:
        reason = f"no model: {check.reason}"
    elif check.beats_score:
        reason = (f"model used: it ranks the held-back patches better than the score "
                  f"(average precision {check.ap_model:.3f} vs {check.ap_score:.3f}; {check.reason})")  # fmt: skip
    else:
        reason = (f"model not used: it does not beat the score order on the held-back patches "
                  f"(average precision {check.ap_model:.3f} vs {check.ap_score:.3f}; {check.reason})")  # fmt: skip
    snapshot = snapshot_hash(ts)
    info = ModelInfo(snapshot=snapshot, used=model is not None and check.beats_score,
                     reason=reason, validation=check.as_dict(), features=list(FEATURE_NAMES),
                     sklearn_version=sklearn.__version__, trained_at=now, run_id=run_id,
                     has_model=model is not None)  # fmt: skip
    save_model(ws.learn_dir, model, info)
    log.info("learn: %s", reason)
    return {
        "n_real": check.n_real,
        "n_false": check.n_false,
        "validation": check.scheme or "none",
        "ap_model": check.as_dict()["ap_model"],
        "ap_score": check.as_dict()["ap_score"],
        "used": info.used,
        "snapshot": snapshot[:16],
        "reason": reason,
    }


def learn_command(cfg: Config, ws: Workspace, *, run_id: str, now: str, force: bool) -> dict:
    """``landwatch learn``: train unless the stored model was trained on the same verdicts
    (``force`` trains anyway); the run record's figures, or ``{"skipped": reason}``."""
    info = read_info(ws.learn_dir)
    if not force and info is not None and info.snapshot == verdict_snapshot(cfg, ws):
        return {"skipped": f"no verdict changed since {info.trained_at}; {info.reason}"}
    return learn_registry(cfg, ws, run_id=run_id, now=now)


def learned_ranking(cfg: Config, ws: Workspace, state: RegistryState) -> pd.DataFrame:
    """``p_real_change``, ``priority``, ``low_confidence`` per pending patch (index
    ``patch_id``); empty when no learned model is in use."""
    model = load_used_model(ws.learn_dir) if cfg.learn.enabled else None
    if model is None:
        return pd.DataFrame()
    return rank_pending(model, state.features, state.patches,
                        low_confidence=cfg.learn.low_confidence)  # fmt: skip


def model_fingerprint(ws: Workspace) -> str:
    """Changes when the stored model (or its use) changes: the export and the report depend
    on it."""
    path: Path = ws.learn_dir / "model.json"
    return path.read_text(encoding="utf-8") if path.is_file() else "none"
