"""The ranking of pending patches by a learned model: ``p_real_change`` and ``priority``.

Nothing is dropped: every pending patch gets a probability and a rank; a patch whose
probability is below the configured ``learn.low_confidence`` is marked, not hidden.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.learning.features import FEATURE_NAMES, features_for
from pipeline.learning.model import finite_scores
from pipeline.schema import LOW_CONFIDENCE, P_REAL_CHANGE, PRIORITY, P, Verdict


def rank_pending(
    model, features: pd.DataFrame, patches: pd.DataFrame, *, low_confidence: float
) -> pd.DataFrame:
    """:data:`P_REAL_CHANGE`, :data:`PRIORITY` (1 = visit first) and :data:`LOW_CONFIDENCE`
    of the pending patches (index ``patch_id``; other patches are not in it).

    Ties in the probability go to the higher detector score, then the patch id. A pending
    patch without stored features (registered before features were kept) gets no probability
    and is ranked after the others, by score.
    """
    pending = patches[patches[P.VERDICT].astype(str) == Verdict.PENDING.value]
    out = pd.DataFrame(index=pd.Index(pending[P.PATCH_ID].astype(str), name=P.PATCH_ID))
    if len(pending) == 0:
        return out.assign(**{P_REAL_CHANGE: [], PRIORITY: [], LOW_CONFIDENCE: []})
    X = features_for(features, pending)[list(FEATURE_NAMES)]
    known = X.notna().any(axis=1).to_numpy()  # a patch without stored features gets no p
    p = np.full(len(pending), np.nan)
    if known.any():
        p[known] = model.predict_proba(X.to_numpy(dtype=np.float64)[known])[:, 1]
    score = finite_scores(pending[P.SCORE])
    # learned ones first by p, then the others by score; ties by score, then id
    order = np.lexsort((out.index.to_numpy(), -score, -np.nan_to_num(p, nan=-1.0), ~known))
    rank = np.empty(len(p), dtype=int)
    rank[order] = np.arange(1, len(p) + 1)
    out[P_REAL_CHANGE] = np.round(p, 4)
    out[PRIORITY] = rank
    out[LOW_CONFIDENCE] = known & (np.nan_to_num(p, nan=1.0) < low_confidence)
    return out


def with_ranking(patches: pd.DataFrame, ranking: pd.DataFrame) -> pd.DataFrame:
    """``patches`` with the columns of ``ranking`` (by patch id; NaN for the patches not in
    it). Unchanged when ``ranking`` is empty: the work order then follows the score."""
    if ranking.empty:
        return patches
    ids = patches[P.PATCH_ID].astype(str)
    return patches.assign(**{c: ids.map(ranking[c]).to_numpy() for c in ranking.columns})
