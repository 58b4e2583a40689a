"""``landwatch config check|show``."""

from __future__ import annotations

import click
import yaml

from pipeline.cli.options import config_option
from pipeline.config import load_config, to_plain


@click.group()
def config():
    """Validate or show the configuration."""


@config.command()
@config_option
def check(config_path):
    """Validate the config file, the imagery it names (file headers only) and every layer
    (fields, codes, CRS, text encoding); exit non-zero with the reason when one is wrong."""
    from collections import Counter

    from pipeline.detection.io.imagery import epoch_source
    from pipeline.ops.inputs import check_inputs

    cfg = load_config(config_path)  # keys, values and the bands the method needs
    # every epoch: globs match, bands and band files complete, masks found
    sources = [epoch_source(cfg.imagery, label) for label in cfg.imagery.labels]
    n_files = {s.label: len({b.path for b in s.files}) for s in sources}
    reports, grid_issues = check_inputs(cfg)  # the same checks `run` makes before detect
    click.echo(
        f"{config_path}: OK — area {cfg.area.name}, epochs {n_files} files, pairs {cfg.imagery.pairs}"
    )
    for report in reports:
        click.echo(f"  {report.describe()}")
    if grid_issues:
        counts = Counter(str(i.kind) for i in grid_issues)
        shown = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        strict = "" if cfg.assign.strict_grid else " (assign.strict_grid is false: not fatal)"
        click.echo(f"  grid: {len(grid_issues)} issue(s){strict}: {shown}")


@config.command()
@config_option
def show(config_path):
    """Print the config with every default filled in and paths resolved."""
    cfg = load_config(config_path)
    click.echo(yaml.safe_dump(to_plain(cfg), allow_unicode=True, sort_keys=False))
