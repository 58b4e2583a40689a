"""``landwatch``: the command group and its error handling."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import click
from rich.console import Console
from rich.logging import RichHandler

from pipeline import __version__
from pipeline.errors import LandwatchError


class PipeSafeStderr:
    """``sys.stderr`` (looked up at each write, as test runners swap it) that stops writing
    once the reader is gone: a nightly job piped into ``head`` or a closed log viewer must
    not fail half-way through a run because a progress line could not be printed.

    On the first :class:`BrokenPipeError` file descriptor 2 is pointed at ``/dev/null``, so
    later writes from anywhere (and the interpreter's final flush) are discarded quietly.
    """

    broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return sys.stderr.write(text)
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                sys.stderr.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stderr.fileno())
            os.close(devnull)

    def isatty(self) -> bool:
        return not self.broken and sys.stderr.isatty()

    def fileno(self) -> int:
        return sys.stderr.fileno()

    @property
    def encoding(self) -> str:
        return getattr(sys.stderr, "encoding", None) or "utf-8"


console = Console(file=PipeSafeStderr())


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
    cli.add_command(status_cmd.status)
    cli.add_command(evaluate_cmd.evaluate)


_register()
