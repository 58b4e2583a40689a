"""``landwatch evaluate``: score a run's outputs against labels (the I/O around
:mod:`pipeline.detection.accuracy`).

Labels are either polygons (any OGR layer; optionally filtered by a ``kind`` field) or a
label raster (non-zero = change; OSCD's 1/2 coding is accepted with ``--label-change 2``).
Pixel scores compare the pair's ``mask.tif`` with the labels rasterised on (or warped onto)
the mask's grid; object scores compare the registry patches of that pair with label polygons.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.warp import reproject

from pipeline.atomic import atomic_path
from pipeline.config import Config
from pipeline.detection.accuracy import ObjectScores, PixelScores, object_scores, pixel_scores
from pipeline.detection.pair import MASK_CHANGE, MASK_FILE, MASK_NODATA
from pipeline.errors import InputDataError
from pipeline.ops.workspace import Workspace
from pipeline.overlay.io.vectors import read_layer
from pipeline.schema import P

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    pair: tuple[str, str]
    pixels: PixelScores
    objects: ObjectScores | None
    path: Path

    def as_dict(self) -> dict:
        return {
            "pair": list(self.pair),
            "pixels": self.pixels.as_dict(),
            "objects": self.objects.as_dict() if self.objects else None,
        }


def evaluate_run(
    cfg: Config,
    labels: Path,
    *,
    pair: tuple[str, str] | None = None,
    layer: str | None = None,
    kinds: tuple[str, ...] = (),
    kind_field: str = "kind",
    label_change: int | None = None,
    min_area_m2: float = 0.0,
) -> Evaluation:
    """Score the change mask (and, for polygon labels, the registry patches) of one pair."""
    ws = Workspace(cfg.workspace)
    pair = pair or cfg.imagery.pairs[-1]
    mask_path = ws.pair_dir(pair) / MASK_FILE
    if not mask_path.exists():
        raise InputDataError(f"no change mask at {mask_path}: run `landwatch run` first")
    with rasterio.open(mask_path) as src:
        mask = src.read(1)
        profile = src.profile
    valid = mask != MASK_NODATA
    predicted = mask == MASK_CHANGE
    objects = None
    if labels.suffix.lower() in (".tif", ".tiff"):
        truth = _label_raster(labels, profile, label_change)
        valid &= truth != 255
        truth = truth == 1
    else:
        polys = read_layer(labels, layer=layer, crs=cfg.area.crs)
        if kinds:
            polys = polys[polys[kind_field].isin(kinds)]
        truth = rasterize(
            ((g, 1) for g in polys.geometry),
            out_shape=mask.shape,
            transform=profile["transform"],
            dtype="uint8",
        ).astype(bool)
        if ws.registry.exists():
            patches = pyogrio.read_dataframe(ws.registry, layer="patches")
            patches = patches[(patches[P.EPOCH_TO] == pair[1])]
            scored = polys[polys.geometry.area >= min_area_m2] if min_area_m2 else polys
            area_km2 = (
                float(valid.sum()) * abs(profile["transform"].a * profile["transform"].e) / 1e6
            )
            objects = object_scores(patches, scored, area_km2=area_km2)
    pixels = pixel_scores(predicted, truth, valid)
    out = ws.root / "evaluation" / f"{pair[0]}_{pair[1]}.json"
    result = Evaluation(pair, pixels, objects, out)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result.as_dict(), indent=1), encoding="utf-8")
    return result


def _label_raster(path: Path, profile: dict, label_change: int | None) -> np.ndarray:
    """Labels warped onto the mask grid: 1 change, 0 no change, 255 unknown."""
    with rasterio.open(path) as src:
        raw = src.read(1)
        if src.crs is None:
            raise InputDataError(f"{path}: label raster has no CRS; georeference it first")
        change = raw == label_change if label_change is not None else raw > 0
        labelled = raw != (src.nodata if src.nodata is not None else -1)
        codes = np.where(labelled, change.astype(np.uint8), 255).astype(np.uint8)
        out = np.full((profile["height"], profile["width"]), 255, dtype=np.uint8)
        reproject(
            codes, out, src_transform=src.transform, src_crs=src.crs, src_nodata=255,
            dst_transform=profile["transform"], dst_crs=profile["crs"], dst_nodata=255,
            resampling=Resampling.nearest,
        )  # fmt: skip
    return out
