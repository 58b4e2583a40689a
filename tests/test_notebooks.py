"""The notebooks run top to bottom on the session's sample run, and are stored without outputs.

Each notebook takes its paths from ``LANDWATCH_CONFIG`` / ``LANDWATCH_OUT`` (defaults
``../config.yaml`` and the config's workspace), so here they are pointed at the sample that
``conftest.sample_run`` copied and ran once per session. They execute in memory with
nbclient (kernel ``python3``, i.e. this interpreter's ipykernel); nothing is written back.
"""

from __future__ import annotations

import pytest

from tests.samples import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = ROOT / "notebooks"
NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def test_notebooks_exist():
    assert NAMES == [
        "01_quick_look.ipynb",
        "02_tuning_detection.ipynb",
        "03_rectification_dashboard.ipynb",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    """Outputs (images, numbers of one machine's run) do not belong in git."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(book)
    for i, cell in enumerate(book.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: cell {i} has outputs; clear them before committing"
            assert cell.execution_count is None, f"{name}: cell {i} has an execution count"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_the_sample(name, sample_run, monkeypatch):
    config, sample_dir = sample_run.config, sample_run.folder
    monkeypatch.setenv("LANDWATCH_CONFIG", str(config))
    monkeypatch.setenv("LANDWATCH_OUT", str(sample_dir / "out"))
    monkeypatch.setenv("LANDWATCH_TRUTH", str(sample_dir / "truth.gpkg"))
    monkeypatch.setenv("LANDWATCH_TUNED_CONFIG", str(sample_dir / "config.tuned.yaml"))
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        book, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [o for c in book.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    if name.startswith("02"):
        tuned = (sample_dir / "config.tuned.yaml").read_text(encoding="utf-8")
        assert "threshold_value" in tuned
        assert config.read_text(encoding="utf-8") != tuned, "config.yaml itself is untouched"
