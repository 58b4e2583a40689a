"""The command line is thin: it parses, calls the library and maps errors to exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from pipeline.cli.main import cli
from tests.samples import ROOT


def test_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "status", "field", "export", "report", "config", "sample"):
        assert command in result.output


def test_bad_config_exits_2_with_the_reason(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("area: {name: x}\nfoo: 1\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["config", "check", "--config", str(bad)])
    assert result.exit_code == 2
    assert "unknown key 'foo'" in result.output


def test_missing_config_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_python_dash_m_is_the_same_command():
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "--version"], capture_output=True, text=True, check=True
    )
    assert "landwatch" in proc.stdout


def test_config_check_reads_the_imagery_it_names(sample_area, tmp_path):
    """`config check` opens the epochs' file headers: the sample's config passes, and an
    epoch glob that matches nothing fails with exit 3 naming the epoch, instead of "OK"."""
    import yaml

    sample_dir = sample_area(copy_to=tmp_path / "sample")
    raw = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    raw["imagery"]["epochs"] = {
        label: [f"imagery/{label}/*.tif"] for label in raw["imagery"]["epochs"]
    }
    for layer in raw["layers"].values():
        layer["path"] = Path(layer["path"]).name
    raw["workspace"] = str(tmp_path / "out")

    def check(name: str):
        # beside the sample (its paths are relative to the config), not over its config.yaml
        path = sample_dir / name
        path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        return CliRunner().invoke(cli, ["config", "check", "--config", str(path)])

    result = check("config_check_ok.yaml")
    assert result.exit_code == 0 and "OK" in result.output, result.output
    raw["imagery"]["epochs"]["2017"] = ["imagery/2018/*.tif"]
    result = check("config_check_no_2017.yaml")
    assert result.exit_code == 3, result.output
    assert "epoch '2017'" in result.output and "match no file" in result.output


def test_console_survives_a_closed_pipe(tmp_path):
    """A run whose stderr reader has gone (`landwatch run 2>&1 | head -1`) keeps going: the
    console stops writing instead of raising BrokenPipeError in the middle of the run."""
    done = tmp_path / "done"
    script = (
        "import sys\n"
        "from pipeline.cli.console import console\n"
        "for i in range(20000):\n"
        "    console.print(f'stage {i} ran in 0.1 s')\n"
        f"open({str(done)!r}, 'w').write('ok')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    proc.stderr.readline()
    proc.stderr.close()  # the reader goes away after one line
    assert proc.wait(timeout=60) == 0
    assert done.read_text() == "ok"
