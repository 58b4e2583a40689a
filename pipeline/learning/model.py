"""Learn "is this a real change?" from the verified patches, and check that it helps.

The target is a confirmed real change (verdict ``legal`` or ``illegal``) against
``false_change``; ``other`` and ``pending`` patches are left out. The classifier is
scikit-learn's :class:`~sklearn.ensemble.HistGradientBoostingClassifier`: it takes missing
features as they are (an RGB-only district has no NIR means; a patch without approvals
nearby has the capped distance) and needs no scaling.

Guardrails (:func:`validate`):

1. at least :data:`MIN_PER_CLASS` verified patches of each class, else no model;
2. validation by time when the latest epoch pair alone has that many of each class (train on
   the earlier pairs, test on the latest), else by groups of villages (out-of-fold
   predictions, no village in both), else no model;
3. the model is used only when it ranks the held-back patches better than the detector's
   own score (average precision, real change as the positive class).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, precision_recall_curve
from sklearn.model_selection import GroupKFold

from pipeline.config import LearnConfig
from pipeline.learning.features import CATEGORICAL, FEATURE_NAMES, features_for
from pipeline.schema import P, Verdict

MIN_PER_CLASS = LearnConfig.min_per_class
"""Verified patches needed of each class (real change, false change) to train, and again in
the held-back part to validate. Below 20 the gradient-boosting trees (at least 20 samples a
leaf by default) cannot split out the rarer class, and a held-back set of fewer than 20 false
changes gives a precision that moves by 5 points with a single patch."""
REAL_VERDICTS = (Verdict.LEGAL.value, Verdict.ILLEGAL.value)
FALSE_VERDICT = Verdict.FALSE_CHANGE.value
RECALLS = (0.90, 0.95)
"""Recall levels at which precision is reported."""
SEED = 0
MAX_FOLDS = 5


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """The verified patches with features: ``X`` (:data:`FEATURE_NAMES`), ``y`` (1 real
    change, 0 false change), the detector's ``score``, the epoch pair (``epoch_to``) and the
    village of each (row order shared, index ``patch_id``)."""

    X: pd.DataFrame
    y: np.ndarray
    score: np.ndarray
    epoch_to: np.ndarray
    village: np.ndarray

    @property
    def counts(self) -> tuple[int, int]:
        """(real changes, false changes)."""
        return int(self.y.sum()), int(len(self.y) - self.y.sum())


@dataclasses.dataclass(frozen=True)
class Validation:
    """How the model was checked and what it gave against the score order."""

    scheme: str | None
    """``time`` (latest pair held back), ``villages`` (grouped folds) or None (no model)."""
    reason: str
    n_real: int
    n_false: int
    n_held: int = 0
    ap_model: float = float("nan")
    ap_score: float = float("nan")
    precision_model: dict = dataclasses.field(default_factory=dict)
    precision_score: dict = dataclasses.field(default_factory=dict)

    @property
    def beats_score(self) -> bool:
        return self.scheme is not None and self.ap_model > self.ap_score

    def as_dict(self) -> dict:
        """Plain values (NaN as None: the dict is written as strict JSON)."""
        out = {**dataclasses.asdict(self), "beats_score": self.beats_score}
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}


def training_set(patches: pd.DataFrame, features: pd.DataFrame) -> TrainingSet:
    """The verified patches of ``patches`` (registry rows) with their stored ``features``
    (the ``patch_features`` table); patches without any stored feature are left out."""
    verdict = patches[P.VERDICT].astype(str)
    keep = verdict.isin([*REAL_VERDICTS, FALSE_VERDICT]).to_numpy()
    rows = patches[keep]
    X = features_for(features, rows)
    has = X.notna().any(axis=1).to_numpy()
    rows, X = rows[has], X[has]
    return TrainingSet(
        X=X,
        y=rows[P.VERDICT].astype(str).isin(REAL_VERDICTS).to_numpy().astype(int),
        score=finite_scores(rows[P.SCORE]),
        epoch_to=rows[P.EPOCH_TO].astype(str).to_numpy(),
        village=rows[P.VILLAGE_CODE].astype(str).to_numpy(),
    )


def finite_scores(score: pd.Series) -> np.ndarray:
    """Detector scores as finite numbers; a missing one ranks below every known one."""
    values = pd.to_numeric(score, errors="coerce").to_numpy(dtype=np.float64)
    known = values[np.isfinite(values)]
    floor = (known.min() - 1.0) if known.size else 0.0
    return np.where(np.isfinite(values), values, floor)


def snapshot_hash(ts: TrainingSet) -> str:
    """SHA-256 (hex) of everything training and validation depend on: the verified patches,
    their class, features, score, epoch pair and village. Equal hashes, equal model."""
    digest = hashlib.sha256()
    head = [list(ts.X.index), ts.y.tolist(), ts.epoch_to.tolist(), ts.village.tolist()]
    digest.update(json.dumps(head).encode())
    digest.update(np.ascontiguousarray(ts.X.to_numpy(dtype=np.float64)).tobytes())
    digest.update(np.ascontiguousarray(ts.score, dtype=np.float64).tobytes())
    return digest.hexdigest()


def make_classifier() -> HistGradientBoostingClassifier:
    """The classifier, small and regularised: verified patches are few (tens to thousands)."""
    return HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.05,
        max_leaf_nodes=15,
        l2_regularization=1.0,
        categorical_features=[FEATURE_NAMES.index(c) for c in CATEGORICAL],
        random_state=SEED,
    )


@dataclasses.dataclass
class FeatureModel:
    """The classifier with the features it never saw filled in: a column that is missing for
    every training patch (no NIR band, no approvals layer) is set to 0 for training and
    prediction alike (the binning of the gradient-boosting trees needs at least one value)."""

    classifier: HistGradientBoostingClassifier
    empty: tuple[int, ...]

    @classmethod
    def trained(cls, X: np.ndarray, y: np.ndarray) -> FeatureModel:
        empty = tuple(int(i) for i in np.flatnonzero(np.isnan(X).all(axis=0)))
        return cls(make_classifier().fit(_filled(X, empty), y), empty)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.classifier.predict_proba(_filled(np.asarray(X, dtype=np.float64), self.empty))


def _filled(X: np.ndarray, empty: tuple[int, ...]) -> np.ndarray:
    if not empty:
        return X
    out = np.array(X, dtype=np.float64, copy=True)
    out[:, list(empty)] = 0.0
    return out


def fit(ts: TrainingSet) -> FeatureModel:
    """The classifier trained on the whole set."""
    return FeatureModel.trained(ts.X.to_numpy(dtype=np.float64), ts.y)


def validate(ts: TrainingSet, *, min_per_class: int = MIN_PER_CLASS) -> Validation:
    """Check the model the guardrails' way (module docstring); never raises for small sets."""
    n_real, n_false = ts.counts
    base = {"n_real": n_real, "n_false": n_false}
    if min(n_real, n_false) < min_per_class:
        return Validation(None, f"too few verdicts: {n_real} real and {n_false} false changes; "
                          f"at least {min_per_class} of each are needed", **base)  # fmt: skip
    latest = max(ts.epoch_to)
    held = ts.epoch_to == latest
    if _enough(ts.y[held], min_per_class) and _enough(ts.y[~held], min_per_class):
        model = FeatureModel.trained(ts.X.to_numpy(dtype=np.float64)[~held], ts.y[~held])
        p = model.predict_proba(ts.X.to_numpy(dtype=np.float64)[held])[:, 1]
        return _compared("time", f"trained on pairs before {latest}, tested on {latest}",
                         ts.y[held], p, ts.score[held], base)  # fmt: skip
    groups = np.unique(ts.village)
    if len(groups) < 2:
        return Validation(None, "all verified patches lie in one village: no grouped "
                          "validation possible", **base)  # fmt: skip
    p = _out_of_fold(ts, min(MAX_FOLDS, len(groups)))
    return _compared("villages", f"{min(MAX_FOLDS, len(groups))}-fold by village",
                     ts.y, p, ts.score, base)  # fmt: skip


def _enough(y: np.ndarray, n: int) -> bool:
    return int(y.sum()) >= n and int(len(y) - y.sum()) >= n


def _out_of_fold(ts: TrainingSet, folds: int) -> np.ndarray:
    X = ts.X.to_numpy(dtype=np.float64)
    p = np.full(len(ts.y), np.nan)
    for train, test in GroupKFold(n_splits=folds).split(X, ts.y, ts.village):
        if len(np.unique(ts.y[train])) < 2:
            p[test] = ts.y[train].mean()
            continue
        p[test] = FeatureModel.trained(X[train], ts.y[train]).predict_proba(X[test])[:, 1]
    return p


def _compared(scheme: str, reason: str, y, p_model, score, base: dict) -> Validation:
    return Validation(
        scheme,
        reason,
        n_held=len(y),
        ap_model=float(average_precision_score(y, p_model)),
        ap_score=float(average_precision_score(y, score)),
        precision_model={f"{r:.2f}": precision_at_recall(y, p_model, r) for r in RECALLS},
        precision_score={f"{r:.2f}": precision_at_recall(y, score, r) for r in RECALLS},
        **base,
    )


def precision_at_recall(y: np.ndarray, ranking: np.ndarray, recall: float) -> float:
    """Precision of the shallowest cut of ``ranking`` (highest first; ties taken together)
    that reaches ``recall`` of the positives."""
    return cut_at_recall(y, ranking, recall)[0]


def cut_at_recall(y: np.ndarray, ranking: np.ndarray, recall: float) -> tuple[float, int]:
    """(precision, number of negatives) above the shallowest cut of ``ranking`` that reaches
    ``recall`` of the positives: the false changes a field team visits to find that share of
    the real ones. NaN and 0 without any positive."""
    y = np.asarray(y, dtype=int)
    if y.sum() == 0:
        return float("nan"), 0
    precision, recalls, _ = precision_recall_curve(y, ranking)
    reached = np.flatnonzero(recalls[:-1] >= recall - 1e-12)  # the last point is (1, 0)
    i = reached.max()
    p = float(precision[i])
    found = recalls[i] * y.sum()
    return p, round(found / p - found) if p > 0 else int(len(y) - y.sum())
