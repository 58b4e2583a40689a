"""The pipeline's stages, built from a config: the I/O glue around the pure core.

Each stage reads its inputs from files, calls pure functions and writes its outputs
atomically. Data flows one way (DESIGN §4)::

    detect[pair] -> classify[pair] -> assign[pair] -> register -> export, report

``detect`` covers align + detect + vectorize (one streaming pass over the imagery).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio
import rasterio
import sklearn
from rasterio.errors import RasterioIOError, StatisticsError

from pipeline.atomic import atomic_path, fingerprint_file
from pipeline.config import Config, to_plain
from pipeline.detection.pair import detect_pair
from pipeline.errors import ConfigError, InputDataError
from pipeline.learning.io.model_store import INFO_FILE
from pipeline.ops import runlog, runner
from pipeline.ops.commands import export_registry, report_registry
from pipeline.ops.dossiers import MANIFEST as DOSSIER_MANIFEST
from pipeline.ops.executor import make_executor
from pipeline.ops.field_import import describe_inbox, import_inbox, inbox_files
from pipeline.ops.inputs import check_inputs, fast_fingerprint, load_grids_for
from pipeline.ops.learning import (
    learn_registry,
    model_fingerprint,
    record_features,
    verdict_snapshot,
)
from pipeline.ops.runner import Stage, StageOutcome
from pipeline.ops.workspace import Workspace, WorkspaceLock
from pipeline.overlay.assign import assign_patches
from pipeline.overlay.classify import classify_patches
from pipeline.overlay.io.layer_check import read_overlay
from pipeline.overlay.io.vectors import layer_fingerprint
from pipeline.registry.io.registry_file import load_registry, save_registry
from pipeline.registry.matching import register_detections
from pipeline.registry.store import RegistryState
from pipeline.schema import STAGE_NAMES, UNASSIGNED, E, EventKind, P, R

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What one invocation of ``landwatch run`` shares between its stages."""

    cfg: Config
    ws: Workspace
    run_id: str
    date: str
    now: str
    workers: int
    scheduler: str | None
    command: str = "run"
    timings: dict[str, float] = field(default_factory=dict)
    progress: Callable[[str, int, int], None] | None = None
    """Called as ``progress(stage_id, done, total)`` by long stages (the CLI's progress bars)."""


# --------------------------------------------------------------------------- fingerprints
def _check_has_data(path: Path) -> None:
    """Refuse an input raster whose first band holds no valid pixel (a broken or empty
    download), cheaply: GDAL's approximate statistics read a sample of blocks/overviews.

    Notes
    -----
    ``GDAL_PAM_ENABLED=NO`` keeps GDAL from writing ``.aux.xml`` statistics files beside the
    user's imagery. Unreadable files are left to the reader, which names the problem.
    """
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), warnings.catch_warnings():
        # statistics() (unlike stats()) reports "no valid pixels"; rasterio < 2 is pinned
        warnings.filterwarnings("ignore", message=r"statistics\(\) will be removed")
        try:
            with rasterio.open(path) as src:
                src.statistics(1, approx=True)
        except StatisticsError:
            raise InputDataError(
                f"{path}: holds no valid pixel (every pixel is nodata); expected imagery — "
                "replace the file or remove it from the epoch's globs"
            ) from None
        except RasterioIOError:
            return


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when inside it: moving a project folder reruns nothing."""
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


def _layer_fingerprints(cfg: Config, names: tuple[str, ...]) -> dict[str, str]:
    """Content hash per layer; a Shapefile's covers its .dbf and .cpg too (a corrected
    attribute table reruns the stages that read it)."""
    out = {}
    for name in names:
        layer = getattr(cfg.layers, name)
        if layer is not None:
            out[f"layer:{name}"] = layer_fingerprint(layer.path)
    return out


def registry_fingerprint(state: RegistryState) -> str:
    """Content hash of what export and report read: patches and events (but not the runs
    table nor export events, which every run appends)."""
    digest = hashlib.sha256()
    patches = state.patches.drop(columns=[P.UPDATED_AT]).sort_values(P.PATCH_ID)
    digest.update(
        pd.util.hash_pandas_object(patches.drop(columns="geometry"), index=False).values.tobytes()
    )
    digest.update(b"".join(patches.geometry.to_wkb()))
    events = state.events[state.events[E.KIND] != EventKind.EXPORTED]
    digest.update(pd.util.hash_pandas_object(events, index=False).values.tobytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- stage builders
def build_stages(ctx: RunContext) -> list[Stage]:
    cfg = ctx.cfg
    stages: list[Stage] = []
    for pair in cfg.imagery.pairs:
        stages += [_detect_stage(ctx, pair), _classify_stage(ctx, pair), _assign_stage(ctx, pair)]
    stages += [_register_stage(ctx), _inbox_stage(ctx)]
    if cfg.learn.enabled:
        stages.append(_learn_stage(ctx))
    stages += [_export_stage(ctx), _report_stage(ctx)]
    base = str(cfg.imagery.base_dir.resolve()) + "/"
    return [dataclasses.replace(s, params=_portable_params(s.params, base)) for s in stages]


def _portable_params(params: Callable[[], Any], base: str) -> Callable[[], Any]:
    """Parameters with paths under the config's folder made relative, so a moved project
    folder reruns nothing."""

    def portable(obj: Any) -> Any:
        if isinstance(obj, str) and obj.startswith(base):
            return obj[len(base) :]
        if isinstance(obj, dict):
            return {k: portable(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [portable(v) for v in obj]
        return obj

    return lambda: portable(params())


def _pair_tag(pair: tuple[str, str]) -> str:
    return f"{pair[0]}_{pair[1]}"


def _detect_stage(ctx: RunContext, pair: tuple[str, str]) -> Stage:
    cfg, out_dir = ctx.cfg, ctx.ws.pair_dir(pair)
    target = out_dir / "detections.gpkg"

    def inputs() -> dict[str, str]:
        fps = {}
        for label in pair:
            files = cfg.imagery.files(label)
            if not files:
                raise ConfigError(
                    f"{cfg.source}: epoch '{label}' matches no files "
                    f"(imagery.epochs.{label} = {list(cfg.imagery.epochs[label])}, "
                    f"read from {cfg.imagery.base_dir}); check the globs"
                )
            for f in [*files, *cfg.imagery.mask_files(label)]:
                fps[f"{label}:{_relative(f, cfg.imagery.base_dir)}"] = fast_fingerprint(f)
        return fps

    def run() -> dict[str, Any]:
        out_dir.mkdir(parents=True, exist_ok=True)
        for label in pair:
            for path in cfg.imagery.files(label):
                _check_has_data(path)
        stage_id = f"detect[{_pair_tag(pair)}]"

        def progress(done: int, total: int) -> None:
            if ctx.progress is not None:
                ctx.progress(stage_id, done, total)

        with make_executor(ctx.workers, ctx.scheduler) as executor:
            result = detect_pair(cfg, pair, out_dir, executor, progress=progress)
        _write_gdf(result.detections, target)
        return {"detections": len(result.detections), **_plain_stats(result.stats)}

    return Stage(
        id=f"detect[{_pair_tag(pair)}]",
        inputs=inputs,
        params=lambda: {
            "area": to_plain(cfg.area),
            "imagery": {k: v for k, v in to_plain(cfg.imagery).items() if k != "epochs"},
            "detect": to_plain(cfg.detect),
        },
        outputs=lambda: [target, out_dir / "score.tif", out_dir / "mask.tif"],
        run=run,
    )


def _classify_stage(ctx: RunContext, pair: tuple[str, str]) -> Stage:
    cfg, out_dir = ctx.cfg, ctx.ws.pair_dir(pair)
    source, target = out_dir / "detections.gpkg", out_dir / "classified.gpkg"
    layer_names = ("approvals", "farmland", "basic_farmland")

    def run() -> dict[str, Any]:
        detections = _read_gdf(source)
        keep = detections[P.CHANGE_TYPE].isin(cfg.classify.keep_types)
        dropped = detections.loc[~keep, P.CHANGE_TYPE].value_counts().to_dict()
        if dropped:
            log.info("not registered (change type not in classify.keep_types): %s", dropped)
        classified = _classify(cfg, detections[keep].reset_index(drop=True))
        _write_gdf(classified, target)
        return {
            "kept": int(keep.sum()),
            "not_registered_by_type": {str(k): int(v) for k, v in dropped.items()},
        }

    return Stage(
        id=f"classify[{_pair_tag(pair)}]",
        inputs=lambda: {
            "detections": fingerprint_file(source),
            **_layer_fingerprints(cfg, layer_names),
        },
        params=lambda: {
            "classify": to_plain(cfg.classify),
            "layers": {n: to_plain(getattr(cfg.layers, n)) for n in layer_names},
            "crs": cfg.area.crs,
        },
        outputs=lambda: [target],
        run=run,
    )


def _assign_stage(ctx: RunContext, pair: tuple[str, str]) -> Stage:
    cfg, out_dir = ctx.cfg, ctx.ws.pair_dir(pair)
    source, target = out_dir / "classified.gpkg", out_dir / "assigned.gpkg"
    layer_names: tuple[str, ...] = ("district", "township", "village")
    if cfg.assign.mode == "split":
        layer_names += ("approvals", "farmland", "basic_farmland")

    def run() -> dict[str, Any]:
        grids = load_grids_for(cfg)
        patches = _read_gdf(source)
        assigned = assign_patches(
            patches,
            grids.villages,
            grids.townships,
            mode=cfg.assign.mode,
            min_part_m2=cfg.assign.min_part_m2,
        )
        if cfg.assign.mode == "split":
            # overlap areas cannot be shared out by area: measure each part again
            assigned = _classify(cfg, assigned)
        _write_gdf(assigned, target)
        unassigned = int((assigned[P.VILLAGE_CODE] == UNASSIGNED).sum())
        return {
            "patches": len(assigned),
            "unassigned": unassigned,
            "grid_issues": len(grids.issues),
        }

    return Stage(
        id=f"assign[{_pair_tag(pair)}]",
        inputs=lambda: {
            "classified": fingerprint_file(source),
            **_layer_fingerprints(cfg, layer_names),
        },
        params=lambda: {
            "assign": to_plain(cfg.assign),
            "layers": {n: to_plain(getattr(cfg.layers, n)) for n in layer_names},
        },
        outputs=lambda: [target],
        run=run,
    )


def _register_stage(ctx: RunContext) -> Stage:
    cfg, ws = ctx.cfg, ctx.ws
    sources = [ws.pair_dir(pair) / "assigned.gpkg" for pair in cfg.imagery.pairs]

    def run() -> dict[str, Any]:
        state = load_registry(ws.registry, cfg.area.crs)
        totals: dict[str, int] = {}
        for pair, source in zip(cfg.imagery.pairs, sources, strict=True):
            detections = _read_gdf(source)
            state, summary = register_detections(
                state,
                detections,
                run_id=ctx.run_id,
                now=ctx.now,
                county_code=cfg.area.county_code,
                match_overlap=cfg.register.match_overlap,
            )
            state = record_features(
                cfg, ws, state, detections, pair, summary.patch_of, run_id=ctx.run_id
            )
            for key, value in _plain_stats(summary).items():
                if isinstance(value, int):
                    totals[key] = totals.get(key, 0) + value
        save_registry(ws.registry, state)
        return {**totals, "patches_total": len(state.patches)}

    return Stage(
        id="register",
        inputs=lambda: {f"assigned:{s.parent.name}": fingerprint_file(s) for s in sources},
        params=lambda: {"register": to_plain(cfg.register), "county_code": cfg.area.county_code},
        outputs=lambda: [ws.registry],
        run=run,
    )


def _inbox_stage(ctx: RunContext) -> Stage:
    """Field returns dropped in the inbox; up to date when the inbox is empty."""
    cfg, ws = ctx.cfg, ctx.ws
    return Stage(
        id="inbox",
        inputs=lambda: {f.name: fingerprint_file(f) for f in inbox_files(cfg.field_returns.inbox)},
        params=lambda: {"field_returns": to_plain(cfg.field_returns)},
        outputs=lambda: [],
        run=lambda: import_inbox(
            cfg, ws, run_id=ctx.run_id, now=ctx.now, today=dt.date.fromisoformat(ctx.date)
        ),
        consumes_inputs=True,
        describe=describe_inbox,
    )


def _registry_input(ws: Workspace, crs: str) -> Callable[[], dict[str, str]]:
    """The registry's content and the learned model (it orders the patches)."""

    def inputs() -> dict[str, str]:
        model = hashlib.sha256(model_fingerprint(ws).encode()).hexdigest()[:16]
        return {"registry": registry_fingerprint(load_registry(ws.registry, crs)), "model": model}

    return inputs


def _learn_stage(ctx: RunContext) -> Stage:
    """Train on the field verdicts; skipped while no verdict (or feature) changed."""
    cfg, ws = ctx.cfg, ctx.ws
    return Stage(
        id="learn",
        inputs=lambda: {"verdicts": verdict_snapshot(cfg, ws)},
        params=lambda: {"learn": to_plain(cfg.learn), "scikit-learn": sklearn.__version__},
        outputs=lambda: [ws.learn_dir / INFO_FILE],
        run=lambda: learn_registry(cfg, ws, run_id=ctx.run_id, now=ctx.now),
    )


def _export_stage(ctx: RunContext) -> Stage:
    cfg, ws = ctx.cfg, ctx.ws
    out_dir = ws.exports_dir(ctx.date)
    return Stage(
        id="export",
        inputs=_registry_input(ws, cfg.area.crs),
        params=lambda: {
            "export": to_plain(cfg.export),
            "urgency": {k: v for k, v in to_plain(cfg.report).items() if k in URGENCY_KEYS},
            "learn": to_plain(cfg.learn),
            "date": ctx.date,
            "area": cfg.area.name,
        },
        outputs=lambda: [
            out_dir,
            *([ws.dossiers_dir / DOSSIER_MANIFEST] if cfg.export.dossiers else []),
        ],
        run=lambda: export_registry(cfg, ws, date=ctx.date, run_id=ctx.run_id, now=ctx.now),
    )


URGENCY_KEYS = frozenset(
    {
        "urgent_basic_farmland_mu",
        "urgent_farmland_mu",
        "report_working_days",
        "extra_holidays",
        "extra_workdays",
    }
)
"""``report`` keys the packages depend on (urgent patches first, with their due dates)."""


def _report_stage(ctx: RunContext) -> Stage:
    cfg, ws = ctx.cfg, ctx.ws
    out_dir = ws.reports_dir(ctx.date)
    return Stage(
        id="report",
        inputs=_registry_input(ws, cfg.area.crs),
        params=lambda: {
            "report": to_plain(cfg.report),
            "learn": to_plain(cfg.learn),
            "date": ctx.date,
            "area": cfg.area.name,
        },
        outputs=lambda: [out_dir / "rates.csv", out_dir / "report.html", out_dir / "map.html"],
        run=lambda: report_registry(cfg, ws, date=ctx.date),
    )


def _classify(cfg: Config, patches: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Farmland, basic-farmland and approval overlaps of ``patches`` (reads the layers)."""
    lc = cfg.layers
    return classify_patches(
        patches,
        farmland=_read_layer(cfg, "farmland"),
        basic_farmland=_read_layer(cfg, "basic_farmland"),
        approvals=_read_layer(cfg, "approvals"),
        legal_share=cfg.classify.legal_share,
        basic_field=lc.farmland.basic_field if lc.farmland else None,
        ref_field=lc.approvals.ref_field if lc.approvals else "doc_no",
    )


# --------------------------------------------------------------------------- run
def run_pipeline(
    cfg: Config,
    *,
    date: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    from_stage: str | None = None,
    until_stage: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    on_stage: Callable[[StageOutcome], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    as_of: str | None = None,
) -> tuple[RunContext, list[StageOutcome]]:
    """Run the whole pipeline (the stale part of it) on ``cfg`` under the workspace lock.

    ``as_of`` (ISO date) records the run as of that day: its events carry the day (noon UTC),
    field dates up to it are accepted and its folders are dated by it (back-filling an
    earlier run; the demo's timeline). It replaces ``date``.
    """
    if as_of and dt.date.fromisoformat(as_of) > dt.date.today():
        raise ConfigError(
            f"--as-of {as_of} is in the future; a run is recorded as of today or earlier"
        )
    if as_of and date and date != as_of:
        raise ConfigError(f"--as-of {as_of} and --date {date} disagree; give one of them")
    ws = Workspace(cfg.workspace)
    ctx = RunContext(
        cfg=cfg,
        ws=ws,
        run_id=runlog.new_run_id(),
        date=as_of or date or dt.date.today().isoformat(),
        now=f"{as_of}T12:00:00+00:00" if as_of else runlog.utc_now(),
        workers=workers or cfg.run.workers,
        scheduler=scheduler or cfg.run.scheduler,
        progress=progress,
    )
    stages = select_stages(build_stages(ctx), from_stage, until_stage)
    if dry_run:
        return ctx, runner.run_stages(ws, stages, force=force, dry_run=True, on_stage=on_stage)
    with WorkspaceLock(ws), runlog.run_log(ws.log_file(ctx.run_id), ctx.run_id):
        started = runlog.utc_now()
        t0 = time.perf_counter()
        outcome, outcomes = "failed", []
        log.info("run %s started (config %s)", ctx.run_id, cfg.source)

        def logged(o: StageOutcome) -> None:
            extra = {
                "stage": o.id,
                "status": o.status,
                "reason": o.reason,
                "seconds": round(o.seconds, 3),
                "counts": o.counts,
            }
            said = f"; {o.summary}" if o.summary else ""
            log.info("stage %s %s: %s%s", o.id, o.status, o.reason, said, extra=extra)
            if on_stage:
                on_stage(o)

        try:
            if stages:
                check_inputs(cfg)  # a bad layer fails now, not after detect
            outcomes = runner.run_stages(ws, stages, force=force, on_stage=logged)
            outcome = "ok"
        except KeyboardInterrupt:
            outcome = "interrupted"
            raise
        except BaseException as exc:
            outcome = f"failed: {exc or type(exc).__name__}"
            raise
        finally:
            _record_run(ctx, started, time.perf_counter() - t0, outcomes, outcome)
    return ctx, outcomes


def select_stages(
    stages: list[Stage], from_stage: str | None, until_stage: str | None
) -> list[Stage]:
    """Stages between ``from_stage`` and ``until_stage`` (names from STAGE_NAMES), inclusive."""
    for name in (from_stage, until_stage):
        if name is not None and name not in STAGE_NAMES:
            raise ConfigError(f"unknown stage '{name}'; stages are: {', '.join(STAGE_NAMES)}")
    lo = STAGE_NAMES.index(from_stage) if from_stage else 0
    hi = STAGE_NAMES.index(until_stage) if until_stage else len(STAGE_NAMES) - 1
    return [s for s in stages if lo <= STAGE_NAMES.index(s.id.split("[")[0]) <= hi]


def _record_run(
    ctx: RunContext, started: str, seconds: float, outcomes: list[StageOutcome], outcome: str
) -> None:
    """Append this run to the registry's ``runs`` table (best effort on failure paths)."""
    row = {
        R.RUN_ID: ctx.run_id,
        R.STARTED_AT: started,
        R.FINISHED_AT: runlog.utc_now(),
        R.COMMAND: ctx.command,
        R.CONFIG_HASH: ctx.cfg.hash,
        R.INPUTS_JSON: json.dumps(_input_summary(ctx), ensure_ascii=False),
        R.COUNTS_JSON: json.dumps(
            {o.id: o.counts for o in outcomes if o.counts}, ensure_ascii=False, default=str
        ),
        R.TIMINGS_JSON: json.dumps(
            {o.id: round(o.seconds, 3) for o in outcomes} | {"total": round(seconds, 3)}
        ),
        R.OUTCOME: outcome[:500],
        R.CODE_VERSION: runner.code_version(),
    }
    try:
        state = load_registry(ctx.ws.registry, ctx.cfg.area.crs)
        runs = pd.concat([state.runs, pd.DataFrame([row])], ignore_index=True)
        save_registry(ctx.ws.registry, dataclasses.replace(state, runs=runs))
    except Exception:  # the run's own error is what matters; never mask it
        log.exception("could not record run %s in the registry", ctx.run_id)


def _input_summary(ctx: RunContext) -> dict[str, Any]:
    state = runner.load_state(ctx.ws)
    return {sid: rec.get("inputs", {}) for sid, rec in state.items() if rec.get("status") == "done"}


# --------------------------------------------------------------------------- small I/O helpers
def _read_layer(cfg: Config, name: str) -> gpd.GeoDataFrame | None:
    """Overlay layer ``name`` in the target CRS (its ``codes`` selected; empty raises)."""
    return read_overlay(getattr(cfg.layers, name), name, cfg.area.crs)


def _read_gdf(path: Path) -> gpd.GeoDataFrame:
    return pyogrio.read_dataframe(path)


STAGE_GPKG_DATE = "2000-01-01T00:00:00.000Z"
"""The ``last_change`` GDAL stamps on the stage GeoPackages (detections, classified,
assigned) instead of the write time, so their bytes depend on their rows only: a stage that
reruns and finds the same patches leaves the next stage's input fingerprint unchanged, and it
is skipped. The registry keeps real times."""


def _write_gdf(gdf: gpd.GeoDataFrame, path: Path) -> None:
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": STAGE_GPKG_DATE})
    try:
        with atomic_path(path) as tmp:
            pyogrio.write_dataframe(gdf, tmp, layer=path.stem, driver="GPKG")
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})


def _plain_stats(obj: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    return {k: v for k, v in dict(obj).items() if isinstance(v, int | float | str | bool)}


__all__ = ["STAGE_NAMES", "RunContext", "build_stages", "run_pipeline"]
