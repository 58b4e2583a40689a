"""Options shared by several commands, defined once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("config.yaml"),
    show_default=True,
    help="The YAML configuration.",
)

date_option = click.option(
    "--date",
    default=None,
    help="Date of the export/report folders (YYYY-MM-DD; default: today).",
    callback=lambda ctx, param, value: check_date(value),
)


def check_date(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; expected YYYY-MM-DD") from None
    return value
