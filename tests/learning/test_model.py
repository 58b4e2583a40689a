"""The guardrails of learning: no model below the minimum of verdicts, validation by time when
the latest pair can be held back (else by villages), and use only when it beats the score."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.learning.model import (
    fit,
    precision_at_recall,
    snapshot_hash,
    training_set,
    validate,
)
from pipeline.learning.ranking import rank_pending, with_ranking
from pipeline.registry.urgency import work_order
from pipeline.schema import CY, LOW_CONFIDENCE, P_REAL_CHANGE, PRIORITY, P, Verdict
from tests.learning.verdicts import verdict_registry


def test_too_few_verdicts_give_no_model_and_say_why():
    state, _ = verdict_registry(n_per_pair=12)
    check = validate(training_set(state.patches, state.features), min_per_class=20)
    assert check.scheme is None and not check.beats_score
    assert "too few verdicts" in check.reason and "at least 20 of each" in check.reason


def test_the_latest_pair_is_held_back_when_it_has_enough_of_each_class():
    state, _ = verdict_registry(n_per_pair=120)
    check = validate(training_set(state.patches, state.features), min_per_class=20)
    assert check.scheme == "time" and "2017" in check.reason
    assert check.n_held == 120


def test_without_enough_in_the_latest_pair_villages_are_the_folds():
    state, _ = verdict_registry(n_per_pair=60, false_share=0.3)
    check = validate(training_set(state.patches, state.features), min_per_class=20)
    assert check.scheme == "villages"
    assert check.n_held == 120  # every verified patch predicted out of fold


def test_a_model_is_used_only_when_it_beats_the_score():
    noisy, _ = verdict_registry(n_per_pair=120, score="noise")
    check = validate(training_set(noisy.patches, noisy.features))
    assert check.beats_score and check.ap_model > check.ap_score
    perfect, _ = verdict_registry(n_per_pair=120, score="truth")
    check = validate(training_set(perfect.patches, perfect.features))
    assert not check.beats_score  # the score already ranks every real change first


def test_other_and_pending_verdicts_are_not_learned_from():
    state, _ = verdict_registry(n_per_pair=40)
    patches = state.patches.copy()
    patches.loc[patches.index[:5], P.VERDICT] = Verdict.OTHER.value
    ts = training_set(patches, state.features)
    n_pending = int((patches[P.VERDICT] == Verdict.PENDING.value).sum())
    assert len(ts.y) == len(patches) - 5 - n_pending


def test_the_snapshot_changes_with_a_verdict_and_only_then():
    state, _ = verdict_registry(n_per_pair=30)
    first = snapshot_hash(training_set(state.patches, state.features))
    assert first == snapshot_hash(training_set(state.patches, state.features))
    patches = state.patches.copy()
    verified = patches.index[patches[P.VERDICT] == Verdict.ILLEGAL.value][0]
    patches.loc[verified, P.VERDICT] = Verdict.FALSE_CHANGE.value
    assert snapshot_hash(training_set(patches, state.features)) != first


def test_every_pending_patch_is_ranked_and_none_is_dropped():
    state, truth = verdict_registry(n_per_pair=120, n_pending=30)
    model = fit(training_set(state.patches, state.features))
    ranking = rank_pending(model, state.features, state.patches, low_confidence=0.2)
    pending = state.patches[state.patches[P.VERDICT] == Verdict.PENDING.value]
    assert sorted(ranking.index) == sorted(pending[P.PATCH_ID])
    assert sorted(ranking[PRIORITY]) == list(range(1, len(pending) + 1))
    assert (ranking[LOW_CONFIDENCE] == (ranking[P_REAL_CHANGE] < 0.2)).all()
    # the learned order puts real changes first more often than not
    top = ranking.sort_values(PRIORITY).index[:10]
    assert np.mean([truth[i] for i in top]) > np.mean([truth[i] for i in ranking.index])
    ranked = with_ranking(state.patches, ranking)
    assert len(ranked) == len(state.patches)
    assert ranked[P_REAL_CHANGE].notna().sum() == len(pending)


def test_precision_at_recall_on_a_known_ranking():
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    ranking = np.arange(8)[::-1].astype(float)  # the given order, best first
    assert precision_at_recall(y, ranking, 0.5) == 2 / 3  # top 3 hold 2 of 4
    assert precision_at_recall(y, ranking, 1.0) == 4 / 7


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=4, max_size=40), st.floats(0.05, 1.0))
def test_precision_at_recall_is_a_share_and_perfect_for_the_truth(labels, recall):
    y = np.array(labels, dtype=int)
    if y.sum() == 0:
        return
    p = precision_at_recall(y, y.astype(float), recall)
    assert p == 1.0
    noisy = precision_at_recall(y, np.random.default_rng(0).random(len(y)), recall)
    assert 0 < noisy <= 1


def test_features_missing_for_a_patch_leave_it_out_of_training():
    state, _ = verdict_registry(n_per_pair=30)
    dropped = state.features.iloc[3:]
    ts = training_set(state.patches, dropped)
    assert len(ts.y) == len(training_set(state.patches, state.features).y) - 3
    assert isinstance(ts.X, pd.DataFrame)


def test_pending_patches_without_features_come_last_by_score_and_verified_ones_by_score():
    state, _ = verdict_registry(n_per_pair=120, n_pending=6)
    model = fit(training_set(state.patches, state.features))
    pending_ids = state.patches.loc[state.patches[P.VERDICT] == Verdict.PENDING.value, P.PATCH_ID]
    bare = pending_ids.iloc[:2].tolist()  # registered before features were kept
    features = state.features[~state.features["patch_id"].isin(bare)]
    ranking = rank_pending(model, features, state.patches, low_confidence=0.2)
    assert ranking.loc[bare, P_REAL_CHANGE].isna().all()
    assert set(ranking.loc[bare, PRIORITY]) == {5, 6}
    assert not ranking.loc[bare, LOW_CONFIDENCE].any()
    ordered = work_order(with_ranking(state.patches, ranking), _nobody_urgent(state.patches))
    head = ordered[P.VERDICT].head(6)
    assert (head == Verdict.PENDING.value).all()  # pending patches first, by their rank
    rest = ordered.iloc[6:]
    assert rest[P.SCORE].is_monotonic_decreasing  # then the others by score


def test_a_verified_patch_without_a_score_does_not_break_validation():
    state, _ = verdict_registry(n_per_pair=120)
    patches = state.patches.copy()
    patches.loc[patches.index[:3], P.SCORE] = np.nan
    check = validate(training_set(patches, state.features))
    assert check.scheme == "time" and np.isfinite(check.ap_score)


def _nobody_urgent(patches: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({CY.URGENT: False, CY.REPORT_DUE: None}, index=patches.index)
