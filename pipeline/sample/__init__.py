"""The deterministic synthetic sample area (``landwatch sample``).

:func:`generate_sample` writes two epochs of 4-band imagery, approvals, farmland, the
administrative grid and the truth (new construction, seasonal change) for a fictitious
district; :mod:`~pipeline.sample.scene` (layout and rendering) and
:mod:`~pipeline.sample.admin_layers` (district, townships, villages) hold the pure logic and
:mod:`~pipeline.sample.write` the file output.
"""

from pipeline.sample.scene import Kind, Layout, make_layout, render_epoch
from pipeline.sample.write import SampleInfo, generate_sample

__all__ = ["Kind", "Layout", "SampleInfo", "generate_sample", "make_layout", "render_epoch"]
