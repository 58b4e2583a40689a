"""``landwatch``: the command group and its error handling."""

from __future__ import annotations

import logging
import sys

import click
from rich.logging import RichHandler

from pipeline import __version__
from pipeline.cli.console import console
from pipeline.errors import LandwatchError


class LandwatchGroup(click.Group):
    """Turns landwatch errors into one clear line and the error's exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]: the next run resumes where this one stopped")
            sys.exit(130)  # 128 + SIGINT, as shells report it
        except LandwatchError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            cause = exc.__cause__
            if cause is not None and isinstance(cause, LandwatchError) and cause.exit_code != 1:
                sys.exit(cause.exit_code)
            sys.exit(exc.exit_code)


def _console_handler(level: int) -> logging.Handler:
    """Log records on the console, except those the CLI reports itself (``reported``)."""
    handler = RichHandler(level=level, console=console, show_path=False, show_time=False)
    handler.addFilter(lambda record: not getattr(record, "reported", False))
    return handler


@click.group(cls=LandwatchGroup)
@click.version_option(__version__, prog_name="landwatch")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """landwatch — satellite-image land-use enforcement (卫片执法).

    Finds new construction between two dates of imagery, flags what sits on farmland
    without approval, hands each patch to its township and village, takes back the field
    verdicts and reports rectification rates.
    """
    level = max(logging.DEBUG, logging.WARNING - 10 * verbose)
    # the console shows WARNING (-v INFO, -vv DEBUG); the root logger passes INFO on so the
    # per-run JSON-lines log gets it whatever the console shows
    logging.basicConfig(
        level=min(level, logging.INFO),
        format="%(message)s",
        handlers=[_console_handler(level)],
        force=True,
    )
    logging.getLogger("rasterio").setLevel(logging.WARNING)
    for noisy in ("distributed", "matplotlib", "pyogrio", "fiona", "PIL", "fontTools"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _register() -> None:
    from pipeline.cli import (
        config_cmd,
        evaluate_cmd,
        field_cmd,
        learn_cmd,
        output_cmd,
        run_cmd,
        sample_cmd,
        status_cmd,
    )

    cli.add_command(run_cmd.run)
    cli.add_command(sample_cmd.sample)
    cli.add_command(config_cmd.config)
    cli.add_command(field_cmd.field)
    cli.add_command(output_cmd.export)
    cli.add_command(output_cmd.report)
    cli.add_command(output_cmd.dossier)
    cli.add_command(learn_cmd.learn)
    cli.add_command(status_cmd.status)
    cli.add_command(evaluate_cmd.evaluate)


_register()
