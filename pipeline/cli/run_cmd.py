"""``landwatch run``: the nightly job."""

from __future__ import annotations

import click

from pipeline.cli.console import console
from pipeline.cli.options import check_date, config_option, date_option
from pipeline.config import load_config
from pipeline.schema import STAGE_NAMES

_STYLE = {"ran": "green", "skipped": "dim", "would run": "yellow", "failed": "red"}


@click.command()
@config_option
@date_option
@click.option("--force", is_flag=True, help="Rerun every selected stage even if up to date.")
@click.option("--dry-run", is_flag=True, help="Show what would run and why; change nothing.")
@click.option(
    "--from", "from_stage", type=click.Choice(STAGE_NAMES), help="First stage to consider."
)
@click.option(
    "--until", "until_stage", type=click.Choice(STAGE_NAMES), help="Last stage to consider."
)
@click.option("--workers", type=click.IntRange(min=1), help="Processes for the raster stages.")
@click.option(
    "--scheduler", help="Dask scheduler address (tcp://host:port) instead of local processes."
)
@click.option(
    "--as-of",
    "as_of",
    default=None,
    callback=lambda ctx, param, value: check_date(value),
    help="Record the run as of this past day (YYYY-MM-DD): its events carry it and field "
    "dates up to it are accepted (back-filling; the demo). Replaces --date.",
)
def run(config_path, date, force, dry_run, from_stage, until_stage, workers, scheduler, as_of):
    """Run the pipeline: only the stages whose inputs, parameters or code changed."""
    # imported here: the stages pull in every library of the pipeline (~2 s), which
    # ``landwatch --help`` and the other commands do not need
    from pipeline.ops.stages import run_pipeline

    cfg = load_config(config_path)

    def show(outcome):
        style = _STYLE.get(outcome.status, "")
        timing = f" in {outcome.seconds:.1f} s" if outcome.status == "ran" else ""
        said = f"; {outcome.summary}" if outcome.summary else ""
        console.print(
            f"[{style}]{outcome.status:>9}[/] {outcome.id}{timing} — {outcome.reason}{said}",
            highlight=False,
        )

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=dry_run,
    ) as bars:  # fmt: skip
        tasks: dict[str, int] = {}

        def progress(stage_id: str, done: int, total: int) -> None:
            if stage_id not in tasks:
                tasks[stage_id] = bars.add_task(f"{stage_id} blocks", total=total)
            bars.update(tasks[stage_id], completed=done)

        ctx, outcomes = run_pipeline(
            cfg, date=date, force=force, dry_run=dry_run, from_stage=from_stage,
            until_stage=until_stage, workers=workers, scheduler=scheduler, on_stage=show,
            progress=progress, as_of=as_of,
        )  # fmt: skip
    if dry_run:
        return
    if not any(o.status == "ran" for o in outcomes):
        console.print("nothing to do: every stage is up to date")
    ws = ctx.ws
    click.echo(f"registry: {ws.registry}")
    click.echo(f"field packages: {ws.exports_dir(ctx.date)}")
    click.echo(f"report: {ws.reports_dir(ctx.date) / 'report.html'}")
