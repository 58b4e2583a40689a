"""The learned model in the workspace: ``learn/model-{snapshot}.joblib`` (the fitted
classifier, saved with joblib as scikit-learn's docs show) and ``learn/model.json`` (what it
was trained on and how it did: verdict snapshot hash, feature list, library versions,
validation, whether it is used, the model file's name and SHA-256). Each is written
atomically and the JSON last; the model file is named by its snapshot and checked against
the JSON's hash on load, so a crash between the two writes never pairs an old description
with a new model.

A model saved by another scikit-learn version is not loaded (pickles are not portable across
versions): the run says so and keeps the score order until the next training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn

from pipeline.atomic import atomic_write_bytes
from pipeline.learning.features import FEATURE_NAMES

log = logging.getLogger(__name__)

INFO_FILE = "model.json"
MODEL_FORMAT = 1
"""Version of what is pickled (:class:`pipeline.learning.model.FeatureModel`); a stored model
of another format is not loaded."""


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
    model_file: str = ""
    model_sha256: str = ""
    versions: dict[str, Any] = dataclasses.field(default_factory=dict)
    """``model_format``, ``numpy``, ``joblib`` (a pickle is only read by the same ones)."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def runtime_versions() -> dict[str, Any]:
    return {"model_format": MODEL_FORMAT, "numpy": np.__version__, "joblib": joblib.__version__}


def save_model(folder: Path, model, info: ModelInfo) -> ModelInfo:
    """Write the model (None: none) and then its info; older model files are removed. The
    info as written (with the model file's name, hash and the library versions)."""
    folder.mkdir(parents=True, exist_ok=True)
    name, digest = "", ""
    if model is not None:
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        data = buffer.getvalue()
        name, digest = f"model-{info.snapshot[:16]}.joblib", hashlib.sha256(data).hexdigest()
        atomic_write_bytes(folder / name, data)
    info = dataclasses.replace(info, model_file=name, model_sha256=digest,
                               versions=runtime_versions())  # fmt: skip
    text = json.dumps(info.as_dict(), ensure_ascii=False, indent=1, sort_keys=True)
    atomic_write_bytes(folder / INFO_FILE, text.encode("utf-8"))
    for old in folder.glob("model*.joblib"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return info


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
    same = info.versions == runtime_versions() and info.features == list(FEATURE_NAMES)
    if info.sklearn_version != sklearn.__version__ or not same:
        log.warning(
            "the learned model in %s was made with scikit-learn %s, %s on %d features; this "
            "is scikit-learn %s, %s with %d features: keeping the score order until it is "
            "trained again (`landwatch learn --force`)",
            folder, info.sklearn_version, info.versions, len(info.features),
            sklearn.__version__, runtime_versions(), len(FEATURE_NAMES),
        )  # fmt: skip
        return None
    path = folder / info.model_file
    try:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != info.model_sha256:
            raise ValueError("its SHA-256 is not the one model.json records")
        return joblib.load(io.BytesIO(data))
    except Exception as exc:
        log.warning("learned model %s cannot be used (%s); the score order is kept", path, exc)
        return None
