"""Paths and configs around generated sample areas (a test helper module).

The sample areas themselves come from the ``sample_area`` fixture of ``tests/conftest.py``;
this module holds what tests build on them: the project root, the run date of the session's
sample run and the bundled ``config.yaml`` pointed at a sample folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
"""The project folder (``config.yaml``, ``notebooks/``, ``README.md``)."""
E2E_SIZE_PX = int(os.environ.get("LANDWATCH_E2E_SIZE_PX", "2000"))
"""Size of the session's end-to-end sample (``LANDWATCH_E2E_SIZE_PX`` overrides it)."""
E2E_SEED = int(os.environ.get("LANDWATCH_E2E_SEED", "2017"))
"""Seed of the session's end-to-end sample (``LANDWATCH_E2E_SEED`` overrides it)."""
RUN_DATE = "2026-11-25"
"""``--date`` of the session's sample run."""


class SampleRun(NamedTuple):
    """The session's ``landwatch run`` on the end-to-end sample."""

    folder: Path
    """The sample folder the run read (a private copy); its workspace is ``folder / "out"``."""
    config: Path
    """The config the run used (``folder / "config.yaml"``)."""
    output: str
    """What the CLI printed."""


def write_sample_config(sample_dir: Path, workspace: Path, *, dossiers: bool = False) -> Path:
    """The bundled config.yaml, pointed at a generated sample folder (its own grid).

    Dossiers are off unless asked for: drawing one per patch in every export would add
    seconds to each of the many runs the tests make (the session's ``sample_run`` and the
    dossier tests turn them on)."""
    raw = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    raw.setdefault("export", {})["dossiers"] = dossiers
    raw["imagery"]["epochs"] = {
        label: [f"imagery/{label}/*.tif"] for label in raw["imagery"]["epochs"]
    }
    for layer in raw["layers"].values():
        layer["path"] = Path(layer["path"]).name
    raw["workspace"] = str(workspace)
    path = sample_dir / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path
