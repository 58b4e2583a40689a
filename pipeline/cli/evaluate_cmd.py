"""``landwatch evaluate``: accuracy of a run against labels."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.console import console
from pipeline.cli.options import config_option


@click.command()
@config_option
@click.argument("labels", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--layer", help="Layer of a polygon label file.")
@click.option(
    "--kind", "kinds", multiple=True, help="Only label polygons whose 'kind' is this (repeatable)."
)
@click.option(
    "--label-change", type=int, help="Label raster value meaning change (default: any non-zero)."
)
@click.option(
    "--min-area-m2", type=float, default=0.0, help="Object scores: ignore smaller label polygons."
)
@click.option("--pair", nargs=2, help="Epoch pair FROM TO (default: the last pair).")
def evaluate(config_path, labels, layer, kinds, label_change, min_area_m2, pair):
    """Pixel precision/recall/F1/IoU/kappa and object hit rate of a run against LABELS."""
    from rich.table import Table

    from pipeline.config import load_config
    from pipeline.ops.commands import evaluate_run

    cfg = load_config(config_path)
    result = evaluate_run(
        cfg, labels, pair=tuple(pair) if pair else None, layer=layer, kinds=tuple(kinds),
        label_change=label_change, min_area_m2=min_area_m2,
    )  # fmt: skip
    table = Table(
        "measure", "value", title=f"{result.pair[0]} → {result.pair[1]} against {labels.name}"
    )
    for key, value in result.pixels.as_dict().items():
        table.add_row(f"pixel {key}", f"{value:.4f}" if isinstance(value, float) else str(value))
    if result.objects:
        for key, value in result.objects.as_dict().items():
            table.add_row(
                f"object {key}", f"{value:.4f}" if isinstance(value, float) else str(value)
            )
    console.print(table)
    click.echo(f"written: {result.path}")
