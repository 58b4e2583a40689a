"""Shared fixtures: one generated sample area and one pipeline run for the end-to-end tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
E2E_SIZE_PX = int(os.environ.get("LANDWATCH_E2E_SIZE_PX", "2000"))
E2E_SEED = int(os.environ.get("LANDWATCH_E2E_SEED", "2017"))
RUN_DATE = "2026-11-25"


def write_sample_config(sample_dir: Path, workspace: Path) -> Path:
    """The bundled config.yaml, pointed at a generated sample folder (its own grid)."""
    raw = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    raw["imagery"]["epochs"] = {
        label: [f"imagery/{label}/*.tif"] for label in raw["imagery"]["epochs"]
    }
    for layer in raw["layers"].values():
        layer["path"] = Path(layer["path"]).name
    raw["workspace"] = str(workspace)
    path = sample_dir / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    from pipeline.sample import generate_sample

    folder = tmp_path_factory.mktemp("sample")
    generate_sample(folder, size_px=E2E_SIZE_PX, seed=E2E_SEED)
    return folder


@pytest.fixture(scope="session")
def sample_run(sample_dir):
    """``landwatch run`` on the sample, through the CLI, once per session."""
    from click.testing import CliRunner

    from pipeline.cli.main import cli

    config = write_sample_config(sample_dir, sample_dir / "out")
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--date", RUN_DATE])
    assert result.exit_code == 0, result.output
    return config, result.output
