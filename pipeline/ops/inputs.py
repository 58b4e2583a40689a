"""The run's input layers, checked before any stage runs and the grid read once.

Shared by the stages (:mod:`pipeline.ops.stages`) and the command bodies
(:mod:`pipeline.ops.commands`): assign, export and report all need the validated grid, and
``landwatch run`` and ``landwatch config check`` both check every layer first.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from pipeline.config import Config
from pipeline.errors import GridError
from pipeline.overlay.admin_grid import GridIssue, Grids
from pipeline.overlay.io.grid_layers import load_grids
from pipeline.overlay.io.layer_check import LayerReport, check_layers
from pipeline.overlay.io.vectors import layer_files

log = logging.getLogger(__name__)

FATAL_GRID_ISSUES = frozenset(
    {"invalid_geometry", "overlap", "duplicate_code", "bad_code", "unknown_township"}
)
"""Grid defects that stop a run when ``assign.strict_grid`` is true: each makes the
assignment of a patch ambiguous or wrong."""


def fast_fingerprint(path: Path) -> str:
    """Size and modification time: cheap for multi-GB imagery (content hashing would cost a read)."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def load_grids_for(cfg: Config) -> Grids:
    """The grid layers of ``cfg``, validated; defects in :data:`FATAL_GRID_ISSUES` raise
    :class:`GridError` under ``assign.strict_grid``.

    Notes
    -----
    assign, export and report all need the grid: it is read and validated once per set of
    unchanged layer files (the cache key holds their size and modification time, every
    part of a Shapefile included).
    """
    files = tuple(
        (str(part), *fast_fingerprint(part).split(":"))
        for layer in (cfg.layers.district, cfg.layers.township, cfg.layers.village)
        if layer is not None
        for part in layer_files(layer.path)
    )
    patterns = (cfg.assign.township_pattern, cfg.assign.village_pattern)
    grids = _load_grids_cached(cfg.layers, cfg.area.crs, patterns, files)
    fatal = [i for i in grids.issues if str(i.kind) in FATAL_GRID_ISSUES]
    if fatal and cfg.assign.strict_grid:
        shown = "; ".join(
            f"{i.kind} in layer {i.layer} ({i.code or '-'}{', ' + i.other_code if i.other_code else ''}): {i.detail}"
            for i in fatal[:5]
        )
        more = f" and {len(fatal) - 5} more" if len(fatal) > 5 else ""
        files = sorted({str(getattr(cfg.layers, n).path) for n in ("township", "village")})
        raise GridError(
            f"the grid ({', '.join(files)}) has {len(fatal)} defect(s) that make assignment "
            f"ambiguous: {shown}{more}. Fix the layer, or set 'assign.strict_grid: false' to "
            "repair invalid polygons and go on with the defects reported"
        )
    return grids


@functools.lru_cache(maxsize=4)
def _load_grids_cached(layers, crs: str, patterns: tuple[str, str], files: tuple) -> Grids:
    del files  # part of the cache key only
    township, village = patterns
    return load_grids(layers, crs=crs, township_pattern=township, village_pattern=village)


def check_inputs(cfg: Config) -> tuple[list[LayerReport], tuple[GridIssue, ...]]:
    """Open every configured layer and check it, before any stage runs.

    ``landwatch config check`` and ``landwatch run`` both call this, so a bad layer fails in
    seconds rather than after detection: fields, CRS, features and text encoding of every
    layer (:func:`pipeline.overlay.io.layer_check.check_layers`), then the grid with its codes
    against ``assign.township_code_pattern`` / ``village_code_pattern`` (:func:`load_grids_for`).

    Returns
    -------
    reports, grid_issues
        One :class:`pipeline.overlay.io.layer_check.LayerReport` per layer, and the grid
        defects found (the fatal ones raise under ``assign.strict_grid``).

    Raises
    ------
    InputDataError
        A layer cannot be used (:class:`GridError` for the grid layers).
    """
    reports = check_layers(cfg.layers)
    for report in reports:
        log.info("input %s", report.describe())
    grids = load_grids_for(cfg)
    return reports, grids.issues
