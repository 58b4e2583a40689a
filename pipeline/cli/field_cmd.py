"""``landwatch field import``: apply field teams' returns to the registry."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.console import console
from pipeline.cli.options import config_option


@click.group()
def field():
    """Field returns (核查结果) from township and village teams."""


@field.command("import")
@config_option
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True)
)
@click.option(
    "--encoding",
    default=None,
    help="Text encoding of CSV/Shapefile returns (default: detect UTF-8 or GBK).",
)
def import_(config_path, files, encoding):
    """Import return FILES (CSV, XLSX, XLS, Shapefile, GPKG, or a zip of one); each is applied
    all-or-nothing. Rows with nothing filled leave their patch as it was ("not filled")."""
    from pipeline.config import load_config
    from pipeline.ops.field_import import import_returns

    cfg = load_config(config_path)
    results = import_returns(cfg, list(files), encoding=encoding)
    for result in results:
        console.print(f"{result.file}: {result.message}", highlight=False)
