"""The learned model in the workspace: ``learn/model.joblib`` (the fitted classifier, saved
with joblib as scikit-learn's docs show) and ``learn/model.json`` (what it was trained on and
how it did: verdict snapshot hash, feature list, scikit-learn version, validation, whether it
is used). Each is written atomically; the JSON is written last, so a reader that finds it
finds the model it describes.

A model saved by another scikit-learn version is not loaded (pickles are not portable across
versions): the run says so and keeps the score order until the next training.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from pathlib import Path
from typing import Any

import joblib
import sklearn

from pipeline.atomic import atomic_write_bytes
from pipeline.learning.features import FEATURE_NAMES

log = logging.getLogger(__name__)

MODEL_FILE = "model.joblib"
INFO_FILE = "model.json"


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """``model.json``."""

    snapshot: str
    """SHA-256 of the verdicts and features trained on."""
    used: bool
    """True when the model beat the score order on the held-back patches."""
    reason: str
    validation: dict[str, Any]
    features: list[str]
    sklearn_version: str
    trained_at: str
    run_id: str
    has_model: bool = True

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def save_model(folder: Path, model, info: ModelInfo) -> None:
    """Write the model (None: remove any older one) and then its info."""
    folder.mkdir(parents=True, exist_ok=True)
    if model is not None:
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        atomic_write_bytes(folder / MODEL_FILE, buffer.getvalue())
    else:
        (folder / MODEL_FILE).unlink(missing_ok=True)
    text = json.dumps(info.as_dict(), ensure_ascii=False, indent=1, sort_keys=True)
    atomic_write_bytes(folder / INFO_FILE, text.encode("utf-8"))


def read_info(folder: Path) -> ModelInfo | None:
    """``model.json`` of ``folder``, or None (absent or unreadable: warned)."""
    path = folder / INFO_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ModelInfo(**data)
    except (OSError, ValueError, TypeError) as exc:
        log.warning("learned model info %s unreadable (%s); the score order is kept", path, exc)
        return None


def load_used_model(folder: Path):
    """The model to rank with, or None: no model, not used (it did not beat the score), or
    saved by another scikit-learn version or for other features (each said in the log)."""
    info = read_info(folder)
    if info is None or not info.used or not info.has_model:
        return None
    if info.sklearn_version != sklearn.__version__ or info.features != list(FEATURE_NAMES):
        log.warning(
            "the learned model in %s was trained with scikit-learn %s on %d features; this is "
            "%s with %d features: keeping the score order until it is trained again "
            "(`landwatch learn --force`)",
            folder, info.sklearn_version, len(info.features), sklearn.__version__,
            len(FEATURE_NAMES),
        )  # fmt: skip
        return None
    try:
        return joblib.load(folder / MODEL_FILE)
    except (OSError, ValueError, EOFError) as exc:
        log.warning("learned model %s cannot be read (%s); the score order is kept", folder, exc)
        return None
