"""The command line is thin: it parses, calls the library and maps errors to exit codes."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from pipeline.cli.main import cli


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
