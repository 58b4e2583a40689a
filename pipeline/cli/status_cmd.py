"""``landwatch status``: what is done, what is stale and why, and the last runs."""

from __future__ import annotations

import datetime as dt
import json

import click
from rich.table import Table

from pipeline.cli.console import console
from pipeline.cli.options import config_option
from pipeline.schema import TIMINGS_TOTAL, R


@click.command()
@config_option
@click.option(
    "--runs", "n_runs", default=5, show_default=True, help="How many recent runs to list."
)
def status(config_path, n_runs):
    """List the stages (done / stale with the reason / failed) and the last runs."""
    from pipeline.config import load_config
    from pipeline.ops.runlog import new_run_id, utc_now
    from pipeline.ops.runner import stage_status
    from pipeline.ops.stages import RunContext, build_stages
    from pipeline.ops.workspace import Workspace
    from pipeline.registry.io.registry_file import load_registry

    cfg = load_config(config_path)
    ws = Workspace(cfg.workspace)
    today = dt.date.today().isoformat()
    ctx = RunContext(cfg, ws, new_run_id(), today, utc_now(), cfg.run.workers, cfg.run.scheduler)
    table = Table("stage", "status", "reason", title=f"workspace {ws.root}")
    for outcome in stage_status(ws, build_stages(ctx)):
        table.add_row(outcome.id, outcome.status, outcome.reason)
    console.print(table)
    if ws.registry.exists():
        runs = load_registry(ws.registry, cfg.area.crs).runs.tail(n_runs)
        table = Table("run", "started", "outcome", "seconds", title="last runs")
        for _, row in runs.iterrows():
            total = json.loads(row[R.TIMINGS_JSON] or "{}").get(TIMINGS_TOTAL, "")
            table.add_row(row[R.RUN_ID], row[R.STARTED_AT], row[R.OUTCOME], str(total))
        console.print(table)
