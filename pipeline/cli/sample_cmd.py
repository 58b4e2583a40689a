"""``landwatch sample``: build the synthetic sample area."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
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
@click.option("--overwrite", is_flag=True, help="Replace an existing sample in OUT.")
def sample(out, size_px, seed, grids, hard, bands, overwrite):
    """Generate the deterministic SYNTHETIC sample area (imagery, approvals, farmland, truth)."""
    from pipeline.sample import SceneOptions, generate_sample

    if (out / ".complete").exists() and not overwrite:
        raise click.UsageError(f"{out} already holds a sample; pass --overwrite to replace it")
    options = SceneOptions.hard(bands=bands) if hard else SceneOptions(bands=bands)
    info = generate_sample(out, size_px=size_px, seed=seed, grids_path=grids, options=options)
    click.echo(f"synthetic sample written to {out}")
    click.echo(str(info))
