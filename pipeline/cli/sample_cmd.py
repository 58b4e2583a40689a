"""``landwatch sample``: build the synthetic sample area."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from pipeline.cli.options import check_date, config_option
from pipeline.config import load_config


@click.group(invoke_without_command=True)
@click.pass_context
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("sample"),
    show_default=True,
)
@click.option(
    "--size-px",
    type=click.IntRange(min=300, max=20000),
    default=4000,
    show_default=True,
    help="Scene size in pixels (2 m).",
)
@click.option("--seed", type=int, default=2017, show_default=True)
@click.option(
    "--grids",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the grid (default: OUT/grids.gpkg; the bundled grids.gpkg is made with --grids grids.gpkg).",
)
@click.option(
    "--hard",
    is_flag=True,
    help="A harder scene: roofs of every colour, new buildings off farmland at village edges, "
    "haze, flooded paddies, film, the later epoch in UTM (EPSG:32650), written in row blocks.",
)
@click.option(
    "--bands",
    type=click.Choice(["rgbn", "rgb"]),
    default="rgbn",
    show_default=True,
    help="Bands of the image files: blue, green, red and nir, or blue, green, red only.",
)
@click.option(
    "--decoys",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Decoys on farmland in the later epoch: film tunnels (truth kind 'temporary') and "
    "spoil heaps ('spoil'), false alarms a field team finds no construction at.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing sample in OUT.")
def sample(ctx, out, size_px, seed, grids, hard, bands, decoys, overwrite):
    """Generate the deterministic SYNTHETIC sample area (imagery, approvals, farmland, truth).

    ``landwatch sample returns`` simulates the field returns of the registered patches.
    """
    if ctx.invoked_subcommand is not None:
        return
    from pipeline.sample import SceneOptions, generate_sample

    if (out / ".complete").exists() and not overwrite:
        raise click.UsageError(f"{out} already holds a sample; pass --overwrite to replace it")
    options = SceneOptions.hard(bands=bands) if hard else SceneOptions(bands=bands)
    if decoys:
        options = dataclasses.replace(options, decoys=decoys)
    info = generate_sample(out, size_px=size_px, seed=seed, grids_path=grids, options=options)
    click.echo(f"synthetic sample written to {out}")
    click.echo(str(info))


@sample.command("returns")
@config_option
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("sample/truth.gpkg"),
    show_default=True,
    help="The sample's ground truth (its layer 'changes').",
)
@click.option("--round", "round_no", type=click.IntRange(1, 2), required=True,
              help="1: verdicts and first steps; 2: the outcomes of the illegal patches.")  # fmt: skip
@click.option("--date", "day", required=True, callback=lambda c, p, v: check_date(v),
              help="Date the teams checked (YYYY-MM-DD).")  # fmt: skip
@click.option("--photos/--no-photos", default=True, show_default=True,
              help="Zip each township's CSV with SYNTHETIC field photos (linked by name or "
                   "by GPS), or write the bare CSVs.")  # fmt: skip
def returns(config_path, truth, round_no, day, photos):
    """Write SIMULATED field returns into the inbox, one per township (a zip of its CSV and
    field photos, or with --no-photos the CSV alone): the registered patches judged against
    the sample's ground truth, with enforcement steps and dates."""
    from pipeline.ops.commands import simulate_returns

    cfg = load_config(config_path)
    files, n_rows, n_photos = simulate_returns(
        cfg, truth, round_no=round_no, day=day, photos=photos
    )
    click.echo(f"{len(files)} simulated return(s) of round {round_no} ({n_rows} rows, "
               f"{n_photos} photos) in {cfg.field_returns.inbox}")  # fmt: skip
