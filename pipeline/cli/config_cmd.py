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
    """Validate the config file and the imagery it names (file headers only); exit non-zero
    with the reason when either is wrong."""
    from pipeline.imagery import epoch_source

    cfg = load_config(config_path)  # keys, values and the bands the method needs
    # every epoch: globs match, bands and band files complete, masks found
    sources = [epoch_source(cfg.imagery, label) for label in cfg.imagery.labels]
    n_files = {s.label: len({b.path for b in s.files}) for s in sources}
    click.echo(
        f"{config_path}: OK — area {cfg.area.name}, epochs {n_files} files, pairs {cfg.imagery.pairs}"
    )


@config.command()
@config_option
def show(config_path):
    """Print the config with every default filled in and paths resolved."""
    cfg = load_config(config_path)
    click.echo(yaml.safe_dump(to_plain(cfg), allow_unicode=True, sort_keys=False))
