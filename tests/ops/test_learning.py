"""The learn stage on a real registry file: no model with too few verdicts (and the run says
why), a model that does not beat the score is not used, a rerun with the same verdicts trains
nothing while new pending patches are still ranked; features survive a save."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd

from pipeline.learning.io.model_store import INFO_FILE
from pipeline.ops.learning import learn_command, learned_ranking, verdict_snapshot
from pipeline.ops.workspace import Workspace
from pipeline.registry.io.registry_file import load_registry, save_registry
from pipeline.schema import P_REAL_CHANGE, PRIORITY, P, Verdict
from tests.district import CRS
from tests.learning.verdicts import verdict_registry, with_new_pending
from tests.rasters import make_config


def _workspace(tmp_path, state):
    cfg = make_config(tmp_path, {"2016": ["a/*.tif"], "2017": ["b/*.tif"]}, crs=CRS)
    cfg = dataclasses.replace(cfg, workspace=tmp_path / "out")
    ws = Workspace(cfg.workspace)
    ws.ensure()
    save_registry(ws.registry, state)
    return cfg, ws


def _learn(cfg, ws, force=False):
    return learn_command(cfg, ws, run_id="run-1", now="2017-09-01T12:00:00Z", force=force)


def test_features_survive_a_save(tmp_path):
    state, _ = verdict_registry(n_per_pair=20)
    _, ws = _workspace(tmp_path, state)
    loaded = load_registry(ws.registry, CRS)
    pd.testing.assert_frame_equal(loaded.features, state.features, check_dtype=False)


def test_too_few_verdicts_train_nothing_and_say_why(tmp_path):
    state, _ = verdict_registry(n_per_pair=10)
    cfg, ws = _workspace(tmp_path, state)
    result = _learn(cfg, ws)
    assert result["used"] is False and result["validation"] == "none"
    assert "too few verdicts" in result["reason"]
    info = json.loads((ws.learn_dir / INFO_FILE).read_text(encoding="utf-8"))
    assert info["has_model"] is False and not list(ws.learn_dir.glob("*.joblib"))
    assert learned_ranking(cfg, ws, load_registry(ws.registry, CRS)).empty


def test_a_model_that_does_not_beat_the_score_is_not_used(tmp_path):
    state, _ = verdict_registry(n_per_pair=120, score="truth")
    cfg, ws = _workspace(tmp_path, state)
    result = _learn(cfg, ws)
    assert result["validation"] == "time" and result["used"] is False
    assert "does not beat the score" in result["reason"]
    assert learned_ranking(cfg, ws, load_registry(ws.registry, CRS)).empty  # score order kept


def test_a_useful_model_ranks_pending_patches_and_a_rerun_trains_nothing(tmp_path):
    state, _ = verdict_registry(n_per_pair=120, n_pending=20, score="noise")
    cfg, ws = _workspace(tmp_path, state)
    first = _learn(cfg, ws)
    assert first["used"] is True and first["ap_model"] > first["ap_score"]
    snapshot = verdict_snapshot(cfg, ws)

    # a new pending patch arrives (a new detection), no verdict changed
    grown = with_new_pending(load_registry(ws.registry, CRS), 5)
    save_registry(ws.registry, grown)
    assert verdict_snapshot(cfg, ws) == snapshot  # the learn stage's input: unchanged
    again = _learn(cfg, ws)
    assert "skipped" in again and "no verdict changed" in again["skipped"]
    ranking = learned_ranking(cfg, ws, load_registry(ws.registry, CRS))
    pending = grown.patches[grown.patches[P.VERDICT] == Verdict.PENDING.value]
    assert sorted(ranking.index) == sorted(pending[P.PATCH_ID])  # the new ones are ranked too
    assert ranking[P_REAL_CHANGE].between(0, 1).all()
    assert sorted(ranking[PRIORITY]) == list(range(1, len(pending) + 1))

    # a verdict changes what is learned (a real change found false): learning runs again
    patches = grown.patches.copy()
    real = patches.index[patches[P.VERDICT] == Verdict.ILLEGAL.value][0]
    patches.loc[real, P.VERDICT] = Verdict.FALSE_CHANGE.value
    save_registry(ws.registry, dataclasses.replace(grown, patches=patches))
    assert verdict_snapshot(cfg, ws) != snapshot
    assert "skipped" not in _learn(cfg, ws)


def test_a_nightly_run_keeps_features_and_says_why_it_has_no_model(sample_run):
    """The session's real run: every registered patch has its features, and the learn stage
    recorded in the run why no model is used yet (no verdict at all)."""
    state = load_registry(sample_run.folder / "out" / "registry.gpkg", CRS)
    assert set(state.features["patch_id"]) == set(state.patches[P.PATCH_ID])
    values = pd.DataFrame([json.loads(v) for v in state.features["features_json"]])
    assert values["dist_builtup_m"].notna().all() and values["score_max"].notna().all()
    counts = json.loads(state.runs["counts_json"].iloc[-1])
    assert "too few verdicts" in counts["learn"]["reason"]
    assert counts["learn"]["used"] is False


def test_a_damaged_model_file_keeps_the_score_order(tmp_path):
    state, _ = verdict_registry(n_per_pair=120, score="noise")
    cfg, ws = _workspace(tmp_path, state)
    assert _learn(cfg, ws)["used"] is True
    (model_file,) = ws.learn_dir.glob("model-*.joblib")
    model_file.write_bytes(b"not a model")
    assert learned_ranking(cfg, ws, load_registry(ws.registry, CRS)).empty
