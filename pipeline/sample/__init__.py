"""The deterministic synthetic sample area (``landwatch sample``).

:func:`generate_sample` writes two epochs of 4-band imagery, approvals, farmland, the
administrative grid and the truth (new construction, seasonal change) for a fictitious
district; :class:`SceneOptions` makes it harder (every roof colour, RGB-only files, the later
epoch in another CRS, haze, flooded paddies, film, buildings off farmland at village edges,
county-sized scenes written in row blocks) and can add decoys (film tunnels and spoil heaps on
farmland: false alarms, kinds ``temporary`` and ``spoil``); :mod:`~pipeline.sample.scene` (layout and rendering) and
:mod:`~pipeline.sample.admin_layers` (district, townships, villages) hold the pure logic and
:mod:`~pipeline.sample.write` the file output.
"""

from pipeline.sample.scene import (
    CONSTRUCTION_KINDS,
    DECOY_KINDS,
    ROOF_COVERS,
    Kind,
    Layout,
    SceneOptions,
    make_layout,
    render_epoch,
)
from pipeline.sample.write import SampleInfo, generate_sample

__all__ = [
    "CONSTRUCTION_KINDS",
    "DECOY_KINDS",
    "ROOF_COVERS",
    "Kind",
    "Layout",
    "SampleInfo",
    "SceneOptions",
    "generate_sample",
    "make_layout",
    "render_epoch",
]
