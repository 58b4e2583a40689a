"""``landwatch export``, ``landwatch report`` and ``landwatch dossier``: outputs read only
from the registry."""

from __future__ import annotations

import datetime as dt

import click

from pipeline.cli.options import check_date, config_option, date_option


def _context(config_path, date):
    from pipeline.config import load_config
    from pipeline.ops.runlog import new_run_id, utc_now
    from pipeline.ops.workspace import Workspace

    cfg = load_config(config_path)
    return (
        cfg,
        Workspace(cfg.workspace),
        date or dt.date.today().isoformat(),
        new_run_id(),
        utc_now(),
    )


@click.command()
@config_option
@date_option
def export(config_path, date):
    """Write the field packages (one zip per township) from the registry."""
    from pipeline.ops.commands import export_registry
    from pipeline.ops.workspace import WorkspaceLock

    cfg, ws, date, run_id, now = _context(config_path, date)
    with WorkspaceLock(ws):
        counts = export_registry(cfg, ws, date=date, run_id=run_id, now=now)
    click.echo(f"{counts['packages']} package(s) in {ws.exports_dir(date)}")


@click.command()
@config_option
@date_option
@click.option(
    "--as-of",
    default=None,
    callback=lambda ctx, param, value: check_date(value),
    help="Rates as they stood at the end of this date (YYYY-MM-DD), replayed from the events.",
)
def report(config_path, date, as_of):
    """Write the rectification-rate report (CSV, XLSX, HTML, PNG) from the registry."""
    from pipeline.ops.commands import report_registry
    from pipeline.ops.workspace import WorkspaceLock

    cfg, ws, date, _, _ = _context(config_path, date)
    with WorkspaceLock(ws):
        report_registry(cfg, ws, date=date, as_of=as_of)
    click.echo(f"report: {ws.reports_dir(date) / 'report.html'}")


@click.command()
@config_option
@click.argument("patch_ids", nargs=-1)
@click.option("--all", "all_patches", is_flag=True, help="The dossier of every patch.")
def dossier(config_path, patch_ids, all_patches):
    """Write the dossier of each PATCH_ID (an A4 PDF and the same page as HTML) into
    {workspace}/dossiers/: location map, before/after chips, areas, approvals, responsible
    persons, event history and field photos."""
    from pipeline.ops.dossiers import dossiers_of
    from pipeline.ops.workspace import WorkspaceLock

    if bool(patch_ids) == all_patches:
        raise click.UsageError("name one or more PATCH_IDs, or pass --all (not both)")
    cfg, ws, _, _, _ = _context(config_path, None)
    with WorkspaceLock(ws):
        files = dossiers_of(cfg, ws, None if all_patches else patch_ids)
    for pid, f in files.items():
        click.echo(f"{pid}: {f.pdf} {f.html.name}")
