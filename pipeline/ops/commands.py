"""The bodies of the output commands, shared by the stages and the CLI.

- :func:`export_registry` — the ``export`` stage and ``landwatch export``: field packages;
- :func:`report_registry` — the ``report`` stage and ``landwatch report``: rates and report;
- :func:`evaluate_run` — ``landwatch evaluate``: score a run's outputs against labels (the I/O
  around :mod:`pipeline.detection.accuracy`).

Labels are either polygons (any OGR layer; optionally filtered by a ``kind`` field) or a
label raster (non-zero = change; OSCD's 1/2 coding is accepted with ``--label-change 2``).
Pixel scores compare the pair's ``mask.tif`` with the labels rasterised on (or warped onto)
the mask's grid; object scores compare the registry patches of that pair with label polygons.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyogrio
import rasterio
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.warp import reproject

from pipeline.atomic import atomic_path, atomic_write_bytes
from pipeline.config import Config
from pipeline.detection.accuracy import ObjectScores, PixelScores, object_scores, pixel_scores
from pipeline.detection.pair import MASK_CHANGE, MASK_FILE, MASK_NODATA
from pipeline.errors import DossierError, InputDataError
from pipeline.learning.io.model_store import read_info
from pipeline.learning.ranking import with_ranking
from pipeline.ops.chip_cache import cache_chips
from pipeline.ops.dossiers import write_dossiers
from pipeline.ops.inputs import load_grids_for
from pipeline.ops.learning import learned_ranking
from pipeline.ops.workspace import Workspace
from pipeline.outputs.chips import read_chips
from pipeline.outputs.packages import (
    export_packages,
    latest_export_dir,
    township_package_names,
    zip_bytes,
)
from pipeline.outputs.report import write_report
from pipeline.overlay.io.vectors import read_layer
from pipeline.registry.cycle import Units, cycle_tables
from pipeline.registry.io.registry_file import load_registry, save_registry
from pipeline.registry.ledger import patch_dates
from pipeline.registry.rates import compute_rates, district_unit, rates_as_of
from pipeline.registry.store import record_exports
from pipeline.registry.urgency import urgency
from pipeline.sample.returns import round_rows, township_files, township_photos, verdicts
from pipeline.schema import PD, RC, TRUTH_LAYER, E, EventKind, P

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- export / report
def export_registry(
    cfg: Config, ws: Workspace, *, date: str, run_id: str, now: str
) -> dict[str, Any]:
    """Write the field packages of every township from the registry, with a dossier per
    patch; record an ``exported`` event for each patch whose content or package is new (an
    unchanged registry adds none).

    The events are made first (the package of each patch is known from the grid), so the
    dossiers in the packages already list this export; the registry is saved only once the
    packages are written.
    """
    state = load_registry(ws.registry, cfg.area.crs)
    grids = load_grids_for(cfg)
    out = ws.exports_dir(date)
    chips = read_chips(cfg, state.patches) if cfg.export.chips else {}
    cache_chips(ws.chips_dir, chips)
    flags = urgency(
        state.patches,
        patch_dates(state)[PD.FIRST_EXPORTED],
        cfg.report,
        today=dt.date.fromisoformat(date),
    )
    names = township_package_names(state.patches, grids.townships)
    state, n_events = record_exports(state, names, run_id=run_id, now=now)
    dossiers = _dossiers(cfg, ws, state, grids, chips) if cfg.export.dossiers else {}
    ranked = with_ranking(state.patches.join(flags), learned_ranking(cfg, ws, state))
    paths = export_packages(
        ranked, grids.townships, grids.villages, out,
        cfg=cfg.export, area_name=cfg.area.name, date=date,
        chips=chips, dossiers=dossiers, previous=latest_export_dir(out.parent, date),
    )  # fmt: skip
    if n_events:
        save_registry(ws.registry, state)
    return {"packages": len(paths), "exported_events": n_events, "dossiers": len(dossiers)}


def _dossiers(cfg: Config, ws: Workspace, state, grids, chips) -> dict:
    """The dossiers of every patch; without them (logged) when they cannot be drawn: the
    field packages matter more than their dossiers."""
    try:
        return write_dossiers(cfg, ws, state, grids, chips=chips)
    except DossierError as exc:
        log.error("field packages are written without dossiers: %s", exc)
        return {}


def report_registry(
    cfg: Config, ws: Workspace, *, date: str, as_of: str | None = None
) -> dict[str, Any]:
    """Compute the rates from the registry and write ``reports/{date}/``.

    With ``as_of`` the verdicts and remaining areas are replayed from the events up to that
    date (patches recorded later are left out); the lists in the HTML report stay current.
    """
    state = load_registry(ws.registry, cfg.area.crs)
    grids = load_grids_for(cfg)
    targets = {
        "rect_rate_target": cfg.report.rect_rate_target,
        "illegal_ratio_target": cfg.report.illegal_ratio_target,
    }
    # without a district layer the district row is the configured area (its name and code)
    district = grids.district
    if district is None:
        district = (cfg.area.county_code, cfg.area.name)
    if as_of:
        rates = rates_as_of(state, as_of, grids.villages, grids.townships, district, **targets)
    else:
        rates = compute_rates(state.patches, grids.villages, grids.townships, district, **targets)
    relapsed = set(state.events.loc[state.events[E.KIND] == EventKind.RELAPSE, E.PATCH_ID])
    units = Units(district_unit(district, grids.townships), grids.townships, grids.villages)
    today = dt.date.fromisoformat(as_of or date)
    cycle = cycle_tables(state, units, cfg.report, as_of=today, replay=bool(as_of))
    flags = urgency(state.patches, patch_dates(state)[PD.FIRST_EXPORTED], cfg.report, today=today)
    ranking = learned_ranking(cfg, ws, state)
    ranked = with_ranking(state.patches.join(flags), ranking)
    write_report(
        rates, ranked, grids.townships, grids.villages, ws.reports_dir(date),
        cfg=cfg.report, area_name=cfg.area.name, date=date,
        history=_report_history(ws, date), relapsed_ids=relapsed, cycle=cycle,
        chip_dir=ws.chips_dir if cfg.export.chips else None,
        dossier_dir=ws.dossiers_dir if cfg.export.dossiers else None,
        learning=_learning_info(ws, in_use=not ranking.empty) if cfg.learn.enabled else None,
    )  # fmt: skip
    district = rates[rates[RC.LEVEL] == "district"].iloc[0]
    return {
        RC.N_PATCHES: int(district[RC.N_PATCHES]),
        RC.N_ILLEGAL: int(district[RC.N_ILLEGAL]),
        RC.N_PENDING: int(district[RC.N_PENDING]),
    }


def _learning_info(ws: Workspace, *, in_use: bool) -> dict[str, Any]:
    """What the report says about learning: the stored model's info (``used`` only when its
    ranking is really in use), or why there is none."""
    info = read_info(ws.learn_dir)
    if info is None:
        return {"used": False, "reason": "no model trained yet (the learn stage has not run)"}
    if info.used and not in_use:
        return {"used": False, "reason": "the stored model cannot be used here (see the log); "
                "ordered by the detector's score"}  # fmt: skip
    return info.as_dict()


def _report_history(ws: Workspace, date: str) -> pd.DataFrame | None:
    """District rows of earlier reports (reports/*/rates.csv), for the trend chart."""
    rows = []
    for path in sorted((ws.root / "reports").glob("*/rates.csv")):
        if path.parent.name >= date:
            continue
        df = pd.read_csv(path, dtype={"code": str}, encoding="utf-8-sig")
        district = df[df[RC.LEVEL] == "district"]
        if len(district):
            rows.append(district.iloc[0].to_dict() | {"date": path.parent.name})
    return pd.DataFrame(rows) if rows else None


# --------------------------------------------------------------------------- sample returns
def simulate_returns(
    cfg: Config, truth: Path, *, round_no: int, day: str, photos: bool = True
) -> tuple[list[Path], int, int]:
    """``landwatch sample returns``: the registered patches judged against the sample's truth
    (:mod:`pipeline.sample.returns`), written into the inbox, one file per township.

    Parameters
    ----------
    photos : bool
        True: each township's return is a ``.zip`` of its CSV and its SYNTHETIC field photos
        (:func:`~pipeline.sample.returns.township_photos`), entries dated ``day`` so the
        same round gives the same bytes. False: the bare CSVs.

    Returns
    -------
    tuple
        The files written, the number of rows and the number of photos.
    """
    state = load_registry(Workspace(cfg.workspace).registry, cfg.area.crs)
    if state.patches.empty:
        raise InputDataError(
            f"the registry {Workspace(cfg.workspace).registry} has no patch yet; run "
            "`landwatch run` before simulating field returns"
        )
    found = verdicts(state.patches, read_layer(truth, layer=TRUTH_LAYER))
    rows = round_rows(state.patches, found, round_no=round_no, day=dt.date.fromisoformat(day))
    pictures = township_photos(rows, state.patches, round_no) if photos else {}
    inbox = cfg.field_returns.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in township_files(rows, round_no).items():
        csv = table.to_csv(index=False).encode("utf-8-sig")
        if photos:
            path = inbox / Path(name).with_suffix(".zip").name
            atomic_write_bytes(path, zip_bytes({name: csv} | pictures.get(name, {}), date=day))
        else:
            path = inbox / name
            atomic_write_bytes(path, csv)
        written.append(path)
    return written, len(rows), sum(len(p) for p in pictures.values())


# --------------------------------------------------------------------------- evaluate
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
