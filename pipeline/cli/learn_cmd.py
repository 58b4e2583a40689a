"""``landwatch learn``: train the ranking of pending patches on the field verdicts."""

from __future__ import annotations

import click

from pipeline.cli.options import config_option


@click.command()
@config_option
@click.option("--force", is_flag=True, help="Train even when no verdict changed.")
def learn(config_path, force):
    """Learn from the field verdicts which patches are real changes; pending patches are then
    ranked by it in the packages and the report (only when it beats the detector's score on
    held-back verdicts). The nightly run does this by itself when verdicts change."""
    from pipeline.config import load_config
    from pipeline.ops.learning import learn_command
    from pipeline.ops.runlog import new_run_id, utc_now
    from pipeline.ops.workspace import Workspace, WorkspaceLock

    cfg = load_config(config_path)
    ws = Workspace(cfg.workspace)
    with WorkspaceLock(ws):
        result = learn_command(cfg, ws, run_id=new_run_id(), now=utc_now(), force=force)
    click.echo(result.get("skipped") or result["reason"])
