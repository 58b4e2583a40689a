"""Fixtures shared across the test folders: generated sample areas and one pipeline run."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.samples import E2E_SEED, E2E_SIZE_PX, RUN_DATE, SampleRun, write_sample_config

SampleArea = Callable[..., Path]


@pytest.fixture(scope="session")
def sample_area(tmp_path_factory) -> SampleArea:
    """Factory of generated sample areas: ``sample_area(size_px, seed, *, copy_to=None)``.

    Each ``(size_px, seed)`` is generated once per session (:func:`pipeline.sample.generate_sample`)
    into a session folder, which is returned as is: it is shared by every test that asks for
    the same area, so such a test only reads it. A test that writes into the area (a config,
    a workspace, a damaged file) passes ``copy_to``, a folder in its own tmp path, and gets a
    private copy there (file times kept). Defaults: the session's end-to-end sample
    (``LANDWATCH_E2E_SIZE_PX`` / ``LANDWATCH_E2E_SEED``, 2000 px and seed 2017).
    """
    from pipeline.sample import generate_sample

    made: dict[tuple[int, int], Path] = {}

    def area(
        size_px: int = E2E_SIZE_PX, seed: int = E2E_SEED, *, copy_to: Path | None = None
    ) -> Path:
        if (size_px, seed) not in made:
            folder = tmp_path_factory.mktemp(f"sample-{size_px}px-seed{seed}")
            generate_sample(folder, size_px=size_px, seed=seed)
            made[size_px, seed] = folder
        if copy_to is None:
            return made[size_px, seed]
        shutil.copytree(made[size_px, seed], copy_to, dirs_exist_ok=True)
        return copy_to

    return area


@pytest.fixture(scope="session")
def sample_run(sample_area, tmp_path_factory) -> SampleRun:
    """``landwatch run`` on a copy of the end-to-end sample, through the CLI, once per session."""
    from click.testing import CliRunner

    from pipeline.cli.main import cli

    folder = sample_area(copy_to=tmp_path_factory.mktemp("sample-run"))
    config = write_sample_config(folder, folder / "out", dossiers=True)
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--date", RUN_DATE])
    assert result.exit_code == 0, result.output
    return SampleRun(folder, config, result.output)
