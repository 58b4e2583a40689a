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
from typing import Any

import geopandas as gpd
import pandas as pd
import sklearn

from pipeline.config import Config
from pipeline.detection.pair import SCORE_FILE
from pipeline.learning.features import (
    FEATURE_NAMES,
    add_features,
    current_rows,
    feature_rows,
    patch_features,
)
from pipeline.learning.io.model_store import (
    ModelInfo,
    load_used_model,
    read_info,
    save_model,
)
from pipeline.learning.io.rasters import raster_features
from pipeline.learning.model import fit, snapshot_hash, training_set, validate
from pipeline.learning.ranking import rank_pending
from pipeline.ops.workspace import Workspace
from pipeline.overlay.io.layer_check import read_overlay
from pipeline.registry.io.registry_file import load_registry
from pipeline.registry.store import RegistryState
from pipeline.schema import PF

log = logging.getLogger(__name__)


def record_features(
    cfg: Config,
    ws: Workspace,
    state: RegistryState,
    detections: gpd.GeoDataFrame,
    pair: tuple[str, str],
    patch_of: tuple[str | None, ...],
    *,
    run_id: str,
) -> RegistryState:
    """``state`` with the features of the pair's new detections stored under the patches
    they became (``patch_of``: :attr:`RegisterSummary.patch_of`); a patch and pair already
    stored keeps its row (:func:`pipeline.learning.features.add_features`), so only those
    are read from the rasters."""
    ids = pd.Series(patch_of, index=detections.index, dtype=object)
    table = current_rows(state.features)
    stored = table[table[PF.EPOCH_FROM].eq(pair[0]) & table[PF.EPOCH_TO].eq(pair[1])][PF.PATCH_ID]
    todo = ids.notna() & ~ids.isin(set(stored))
    if not todo.any():
        return state
    part = detections[todo.to_numpy()]
    raster = raster_features(cfg, pair, part, ws.pair_dir(pair) / SCORE_FILE)
    feats = patch_features(part, raster, approvals=_approvals(cfg))
    rows = feature_rows(feats, ids[todo], pair, run_id)
    return dataclasses.replace(state, features=add_features(state.features, rows))


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
    info = save_model(ws.learn_dir, model, info)
    log.info("learn: %s", reason)
    plain = check.as_dict()
    return {
        "n_real": check.n_real,
        "n_false": check.n_false,
        "validation": check.scheme or "none",
        "n_held": check.n_held,
        "ap_model": plain["ap_model"],
        "ap_score": plain["ap_score"],
        "precision_model": check.precision_model,
        "precision_score": check.precision_score,
        "used": info.used,
        "snapshot": snapshot,
        "model_file": info.model_file,
        "features": len(info.features),
        "scikit_learn": info.sklearn_version,
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
    """Changes when the stored model or its use changes (not when the same verdicts are
    trained on again): the export and the report depend on it."""
    info = read_info(ws.learn_dir)
    if info is None:
        return "none"
    return f"{info.used}:{info.model_sha256}:{info.sklearn_version}:{info.versions}"
