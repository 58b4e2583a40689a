"""The dossier of one patch (图斑档案): what a case file needs on one A4 page.

A :class:`Dossier` is plain data gathered from the registry row, the patch's events (dated by
:func:`pipeline.registry.ledger.ledger`), the grid's responsible persons and the images (the
location map, the before/after chip, the field photos). :mod:`pipeline.outputs.dossier_html`
and :mod:`pipeline.outputs.dossier_pdf` draw the same dossier as HTML and as PDF.

Recipe::

    book = ledger(state)
    dossier = dossier_facts(row, book[book.patch_id == row.patch_id], area_name=...,
                            township_person=..., village_person=..., images=images)
    key = dossier_key(dossier)          # unchanged key: the written files can stay
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline import __version__
from pipeline.outputs.formatting import fmt_float, isna, label, text
from pipeline.outputs.location_map import LocationSpec, location_map_png
from pipeline.registry.ledger import DATE
from pipeline.registry.status import patch_status, status_style
from pipeline.schema import (
    EVENT_BEFORE_SUFFIX,
    EVENT_KIND_LABELS,
    EXPORTED_PACKAGE,
    FIELD_DATE,
    LEGAL_HINT_LABELS,
    PHOTO_DISTANCE_M,
    PHOTO_MATCHED_BY,
    PHOTO_NAME,
    UNASSIGNED,
    E,
    EventKind,
    P,
    PhotoMatch,
)
from pipeline.units import format_mu

log = logging.getLogger(__name__)

PHOTO_MAX_PX = 960
"""Longest side (px) of a photo as the dossier embeds it (the stored original stays whole)."""
PHOTO_QUALITY = 80
"""JPEG quality of the embedded photos."""
MAX_PHOTOS = 12
"""Photos shown per dossier (the newest ones); the rest are counted, not drawn."""


LABELS = {
    "title": "图斑档案",
    "kind": "卫片执法图斑档案 patch dossier",
    "as_of": "状态截至 as of",
    "item": "项目 item",
    "value": "内容 value",
    "area": "面积 area",
    "mu": "亩 mu",
    "refs": "批准文号 approval refs",
    "location": "位置图 location map",
    "chip": "前后时相影像 before / after（黄线为图斑边界 yellow: patch outline）",
    "no_chip": "无影像切片 no image chip",
    "history": "事件记录 history",
    "day": "日期 day",
    "event": "事件 event",
    "detail": "内容 detail",
    "source": "来源 source",
    "photos": "实地照片 field photos",
    "more_photos": "另有 {n} 张未显示 {n} more not shown",
    "unreadable": "（照片文件无法读取 photo file unreadable）",
    "m2": "m²",
    "sep": " · ",
}
"""The fixed words of a dossier page (HTML and PDF draw the same ones)."""


DOSSIER_FORMAT = 4
"""Version of the page's layout, in every dossier's key: raise it when the drawing changes,
so the dossiers already written are drawn again."""


@dataclasses.dataclass(frozen=True)
class PhotoRef:
    """A stored field photo a dossier shows (read and shrunk only when the page is drawn)."""

    path: Path
    sha256: str
    caption: str


@dataclasses.dataclass(frozen=True)
class Photo:
    """One field photo as the page shows it: JPEG bytes (None: the file could not be read)
    and a caption."""

    jpeg: bytes | None
    caption: str


@dataclasses.dataclass(frozen=True)
class Images:
    """The pictures of a dossier (PNG / JPEG bytes; None when there is none)."""

    location_png: bytes | None = None
    chip_png: bytes | None = None
    photos: tuple[Photo, ...] = ()
    """Drawn from :attr:`Dossier.photo_refs` by :func:`with_pictures`."""
    photos_left_out: int = 0


@dataclasses.dataclass(frozen=True)
class EventRow:
    """One line of the event history: day, kind (Chinese label), what it said, where from."""

    day: str
    kind: str
    detail: str
    source: str


@dataclasses.dataclass(frozen=True)
class Dossier:
    """Everything one dossier shows (see :func:`dossier_facts`)."""

    patch_id: str
    area_name: str
    status: str
    """Status label (待核查 / 违法 / 已整改 / 合法 / 伪变化 / 其他)."""
    status_colour: str
    """``r,g,b`` of the status, as the map and QGIS draw it."""
    facts: tuple[tuple[str, str], ...]
    """(label, value) rows: epochs, change type, verdict, stage, responsible units, ..."""
    areas: tuple[tuple[str, str, str], ...]
    """(label, m², 亩) rows."""
    approval_refs: str
    events: tuple[EventRow, ...]
    as_of: str
    """Day of the newest event (the dossier's state is as of that day)."""
    images: Images = Images()
    location: LocationSpec | None = None
    """What the location map draws (rendered into ``images.location_png`` by
    :func:`with_pictures`)."""
    photo_refs: tuple[PhotoRef, ...] = ()
    """The photos to show (read into ``images.photos`` by :func:`with_pictures`)."""

    def texts(self) -> list[str]:
        """Every piece of text the dossier shows (for the font subset)."""
        out = [self.patch_id, self.area_name, self.status, self.approval_refs, self.as_of]
        out += [*LABELS.values(), *PHOTO_MATCHES.values()]
        out += [t for row in self.facts for t in row] + [t for row in self.areas for t in row]
        out += [t for e in self.events for t in dataclasses.astuple(e)]
        out += [p.caption for p in self.photo_refs]
        out += [self.location.village_label] if self.location else []
        return out


@dataclasses.dataclass(frozen=True)
class DossierFiles:
    """A dossier written to disk: its key (:func:`dossier_key`) and its two files."""

    key: str
    pdf: Path
    html: Path


# --------------------------------------------------------------------------- facts
def dossier_facts(
    patch: Mapping[str, Any],
    events: pd.DataFrame,
    *,
    area_name: str,
    township_person: str = "",
    village_person: str = "",
    images: Images = Images(),
    location: LocationSpec | None = None,
    photo_refs: tuple[PhotoRef, ...] = (),
) -> Dossier:
    """The dossier of one patch.

    Parameters
    ----------
    patch : mapping
        The patch's registry row (:data:`~pipeline.schema.PATCH_COLUMNS`).
    events : DataFrame
        The patch's rows of :func:`pipeline.registry.ledger.ledger` (dated, values unpacked).
    area_name : str
        The district's name (page header).
    township_person, village_person : str
        Responsible persons of the grid (``person_field`` of the grid layers; may be empty).
    images : Images
        The chip and ``photos_left_out`` (the map and the photos are drawn later).
    location : LocationSpec, optional
        What the location map shows (see :func:`pipeline.outputs.location_map.location_spec`).
    photo_refs : tuple of PhotoRef
        The stored photos to show.
    """
    status = patch_status(pd.DataFrame([dict(patch)])).iat[0]
    shown, rgb = status_style(status)
    history = tuple(event_rows(events))
    return Dossier(
        patch_id=str(patch[P.PATCH_ID]),
        area_name=area_name,
        status=shown,
        status_colour=rgb,
        facts=_facts(patch, township_person, village_person),
        areas=_areas(patch),
        approval_refs=text(patch.get(P.APPROVAL_REFS)) or "无 none",
        events=history,
        as_of=max((e.day for e in history), default=""),
        images=images,
        location=location,
        photo_refs=tuple(photo_refs),
    )


def _facts(patch: Mapping[str, Any], town_person: str, village_person: str):
    def unit(code_col: str, name_col: str, person: str) -> str:
        code = text(patch.get(code_col))
        if code in ("", UNASSIGNED):
            return "未分配 unassigned"
        name = text(patch.get(name_col))
        return " ".join(x for x in (name, code, f"责任人 {person}" if person else "") if x)

    stage = label(patch.get(P.ENFORCEMENT_STAGE))
    if stage and text(patch.get(P.STAGE_DATE)):
        stage = f"{stage}（{text(patch.get(P.STAGE_DATE))}）"
    rows = [
        ("前后时相 epochs", f"{text(patch.get(P.EPOCH_FROM))} → {text(patch.get(P.EPOCH_TO))}"),
        ("变化类型 change", label(patch.get(P.CHANGE_TYPE))),
        ("检测得分 score", fmt_float(patch.get(P.SCORE), 2)),
        ("批文提示 approval hint", LEGAL_HINT_LABELS.get(patch.get(P.LEGAL_HINT), "")),
        ("核查结论 verdict", label(patch.get(P.VERDICT))),
        ("整改方式 method", label(patch.get(P.RECT_METHOD))),
        ("查处阶段 stage", stage),
        ("核查日期 checked", text(patch.get(P.CHECKED_ON))),
        ("核查人 inspector", text(patch.get(P.INSPECTOR))),
        ("备注 note", text(patch.get(P.NOTE))),
        ("乡镇 township", unit(P.TOWNSHIP_CODE, P.TOWNSHIP_NAME, town_person)),
        ("行政村 village", unit(P.VILLAGE_CODE, P.VILLAGE_NAME, village_person)),
        ("首次发现 first seen", text(patch.get(P.FIRST_SEEN))),
    ]
    return tuple((k, v) for k, v in rows if v)


def _areas(patch: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
    rows = (
        ("图斑面积 patch", P.AREA_M2),
        ("耕地 farmland", P.FARMLAND_M2),
        ("永久基本农田 basic farmland", P.BASIC_FARMLAND_M2),
        ("已批准 approved", P.APPROVED_M2),
        ("剩余未整改 remaining", P.REMAINING_M2),
    )
    out = []
    for name, col in rows:
        value = patch.get(col)
        if isna(value):
            out.append((name, "", ""))
        else:
            out.append((name, f"{float(value):,.1f}", format_mu(float(value))))
    return tuple(out)


# --------------------------------------------------------------------------- events
def event_rows(events: pd.DataFrame) -> list[EventRow]:
    """The history lines of one patch's ledger rows, oldest first (by day, then event id)."""
    if events.empty:
        return []
    frame = events.sort_values([DATE, E.EVENT_ID], kind="stable")
    rows = []
    for rec in frame.to_dict("records"):
        kind = rec[E.KIND]
        rows.append(
            EventRow(
                day=text(rec[DATE]),
                kind=EVENT_KIND_LABELS.get(kind, str(kind)),
                detail=_detail(kind, rec),
                source=_source(text(rec.get(E.SOURCE))),
            )
        )
    return rows


def _detail(kind: str, rec: Mapping[str, Any]) -> str:
    def changed(col: str) -> str:
        new, old = label(rec.get(col)), label(rec.get(col + EVENT_BEFORE_SUFFIX))
        return f"{old} → {new}" if old and old != new else new

    def area(col: str) -> str:
        value = rec.get(col)
        return "" if isna(value) else f"{float(value):,.0f} m²"

    parts: Sequence[str]
    if kind in (EventKind.DETECTED, EventKind.REDETECTED, EventKind.GROWN):
        parts = (label(rec.get(P.CHANGE_TYPE)), area(P.AREA_M2))
    elif kind == EventKind.EXPORTED:
        parts = (text(rec.get(EXPORTED_PACKAGE)),)
    elif kind == EventKind.FIELD_VERDICT:
        parts = (changed(P.VERDICT), text(rec.get(P.INSPECTOR)), text(rec.get(P.NOTE)))
    elif kind == EventKind.RECTIFICATION:
        remaining = area(P.REMAINING_M2)
        parts = (label(rec.get(P.RECT_METHOD)), f"剩余 {remaining}" if remaining else "")
    elif kind == EventKind.ENFORCEMENT:
        parts = (changed(P.ENFORCEMENT_STAGE) or "（清空 cleared）",)
    elif kind == EventKind.PHOTO:
        parts = (text(rec.get(PHOTO_NAME)), _photo_match(rec))
    else:
        parts = (_changed_keys(rec),)
    return "；".join(p for p in parts if p)


PHOTO_MATCHES = {PhotoMatch.NAME: "按文件名 by name", PhotoMatch.GPS: "按GPS位置 by GPS"}
"""How a photo was linked to its patch (the ``matched_by`` of a ``photo`` event)."""


def _photo_match(rec: Mapping[str, Any]) -> str:
    how = text(rec.get(PHOTO_MATCHED_BY))
    how = PHOTO_MATCHES.get(how, how)
    distance = rec.get(PHOTO_DISTANCE_M)
    if isna(distance):
        return how
    return f"{how}，{float(distance):.0f} m"


def _changed_keys(rec: Mapping[str, Any]) -> str:
    """For other kinds (reassessed, relapse): the columns the event changed."""
    skip = {E.EVENT_ID, E.PATCH_ID, E.KIND, E.SOURCE, DATE, FIELD_DATE}
    keys = [
        k
        for k, v in rec.items()
        if k not in skip and not k.endswith(EVENT_BEFORE_SUFFIX) and not isna(v)
    ]
    return ", ".join(sorted(keys))


def _source(source: str) -> str:
    """A field row as ``file #row``; a run as ``run <id>``."""
    if source.startswith("field:"):
        return source.removeprefix("field:").replace("#", " #")
    return f"run {source}" if source else ""


# --------------------------------------------------------------------------- images
def photo_for_dossier(jpeg: bytes, caption: str) -> Photo:
    """A photo turned upright (EXIF orientation) and reduced to :data:`PHOTO_MAX_PX`.

    Raises ``OSError`` / ``PIL.UnidentifiedImageError`` for bytes Pillow cannot read.
    """
    with Image.open(io.BytesIO(jpeg)) as img:
        upright = ImageOps.exif_transpose(img).convert("RGB")
    upright.thumbnail((PHOTO_MAX_PX, PHOTO_MAX_PX), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    upright.save(buffer, format="JPEG", quality=PHOTO_QUALITY, optimize=True)
    return Photo(jpeg=buffer.getvalue(), caption=caption)


def dossier_key(dossier: Dossier, *, renderer: str = "") -> str:
    """SHA-256 (hex) of what the dossier shows, :data:`DOSSIER_FORMAT`, the landwatch version
    and ``renderer`` (e.g. the font and PDF library versions).

    Two dossiers with the same key draw the same page: the files written for one can stand
    for the other (the embedded font subset may differ; it draws the same text). The location
    map counts by what it draws (:meth:`LocationSpec.key_bytes`) and the photos by their
    stored hash and caption, so the key is taken without drawing or reading anything.
    """
    digest = hashlib.sha256()
    plain = dataclasses.replace(dossier, images=Images(), location=None, photo_refs=())
    head = dataclasses.asdict(plain)
    head["format"] = [DOSSIER_FORMAT, __version__, renderer]
    head["photos"] = [[p.sha256, p.caption] for p in dossier.photo_refs]
    head["photos_left_out"] = dossier.images.photos_left_out
    digest.update(json.dumps(head, ensure_ascii=False, sort_keys=True).encode())
    digest.update(hashlib.sha256(dossier.images.chip_png or b"").digest())
    digest.update(dossier.location.key_bytes() if dossier.location else b"")
    return digest.hexdigest()


def with_pictures(dossier: Dossier) -> Dossier:
    """The dossier with its location map drawn and its photos read (a photo whose file cannot
    be read is shown by its caption and a note)."""
    images = dossier.images
    if dossier.location is not None and images.location_png is None:
        images = dataclasses.replace(images, location_png=location_map_png(dossier.location))
    if dossier.photo_refs and not images.photos:
        images = dataclasses.replace(images, photos=tuple(map(_read_photo, dossier.photo_refs)))
    return dataclasses.replace(dossier, images=images)


def _read_photo(ref: PhotoRef) -> Photo:
    try:
        return photo_for_dossier(ref.path.read_bytes(), ref.caption)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        log.warning("photo %s cannot be shown in its dossier: %s", ref.path, exc)
        return Photo(jpeg=None, caption=f"{ref.caption} {LABELS['unreadable']}")
