"""The one place for column names, layer names and status values.

Everything users and scripts rely on (DESIGN §3) is spelled here and nowhere else: the
registry layers and their columns, verdicts, rectification methods, change types, event
kinds, the rates table and the Shapefile field-name map (≤ 10 characters, checked by a test).
"""

from __future__ import annotations

from enum import StrEnum

# --------------------------------------------------------------------------- registry layers
REGISTRY_FILE = "registry.gpkg"
PATCHES_LAYER = "patches"
EVENTS_TABLE = "events"
RUNS_TABLE = "runs"
UNASSIGNED = "unassigned"
"""Township/village code and name given to a patch outside every grid polygon."""


class Verdict(StrEnum):
    """Field verification result (核实认定). Only a field return changes it."""

    PENDING = "pending"  # 待核查
    LEGAL = "legal"  # 合法
    ILLEGAL = "illegal"  # 违法
    FALSE_CHANGE = "false_change"  # 伪变化
    OTHER = "other"  # 其他 (facility farmland, rural road, ...; with a sub-type)


class RectMethod(StrEnum):
    """Rectification method (整改方式); only meaningful for illegal patches."""

    DEMOLISHED_RESTORED = "demolished_restored"  # 拆除复耕
    LEGALIZED = "legalized"  # 补办手续
    CONFISCATED = "confiscated"  # 没收
    COMBINED = "combined"
    NONE = "none"


class ChangeType(StrEnum):
    """What a detected change looks like, from the spectral signature of both epochs."""

    CONSTRUCTION = "veg_to_construction"  # vegetation/soil -> roofs, concrete
    EARTHWORKS = "veg_to_bare"  # vegetation -> bare soil / earthworks
    OTHER = "other_change"  # anything else (water, seasonal vegetation, ...)


class EventKind(StrEnum):
    """Kinds of rows in the append-only ``events`` table."""

    DETECTED = "detected"
    REDETECTED = "redetected"
    GROWN = "grown"
    RELAPSE = "relapse"
    EXPORTED = "exported"
    FIELD_VERDICT = "field_verdict"
    RECTIFICATION = "rectification"


CHINESE_LABELS = {
    Verdict.PENDING: "待核查",
    Verdict.LEGAL: "合法",
    Verdict.ILLEGAL: "违法",
    Verdict.FALSE_CHANGE: "伪变化",
    Verdict.OTHER: "其他",
    RectMethod.DEMOLISHED_RESTORED: "拆除复耕",
    RectMethod.LEGALIZED: "补办手续",
    RectMethod.CONFISCATED: "没收",
    RectMethod.COMBINED: "综合整改",
    RectMethod.NONE: "未整改",
    ChangeType.CONSTRUCTION: "新增建设",
    ChangeType.EARTHWORKS: "推填土/裸地",
    ChangeType.OTHER: "其他变化",
}


# --------------------------------------------------------------------------- patches layer
class P:
    """Column names of the ``patches`` layer (current state, one row per patch)."""

    PATCH_ID = "patch_id"
    EPOCH_FROM = "epoch_from"
    EPOCH_TO = "epoch_to"
    AREA_M2 = "area_m2"
    AREA_MU = "area_mu"
    FARMLAND_M2 = "farmland_m2"
    BASIC_FARMLAND_M2 = "basic_farmland_m2"
    APPROVED_M2 = "approved_m2"
    APPROVED_SHARE = "approved_share"
    APPROVAL_REFS = "approval_refs"
    LEGAL_HINT = "legal_hint"
    TOWNSHIP_CODE = "township_code"
    TOWNSHIP_NAME = "township_name"
    VILLAGE_CODE = "village_code"
    VILLAGE_NAME = "village_name"
    VILLAGE_SHARE = "village_share"
    VILLAGE_SHARES = "village_shares"
    CHANGE_TYPE = "change_type"
    SCORE = "score"
    VERDICT = "verdict"
    VERDICT_SUBTYPE = "verdict_subtype"
    RECT_METHOD = "rect_method"
    REMAINING_M2 = "remaining_m2"
    FIRST_SEEN = "first_seen"
    LAST_SEEN = "last_seen"
    CHECKED_ON = "checked_on"
    INSPECTOR = "inspector"
    NOTE = "note"
    UPDATED_AT = "updated_at"
    GEOMETRY = "geometry"


PATCH_COLUMNS: tuple[str, ...] = (
    P.PATCH_ID,
    P.EPOCH_FROM,
    P.EPOCH_TO,
    P.AREA_M2,
    P.AREA_MU,
    P.FARMLAND_M2,
    P.BASIC_FARMLAND_M2,
    P.APPROVED_M2,
    P.APPROVED_SHARE,
    P.APPROVAL_REFS,
    P.LEGAL_HINT,
    P.TOWNSHIP_CODE,
    P.TOWNSHIP_NAME,
    P.VILLAGE_CODE,
    P.VILLAGE_NAME,
    P.VILLAGE_SHARE,
    P.VILLAGE_SHARES,
    P.CHANGE_TYPE,
    P.SCORE,
    P.VERDICT,
    P.VERDICT_SUBTYPE,
    P.RECT_METHOD,
    P.REMAINING_M2,
    P.FIRST_SEEN,
    P.LAST_SEEN,
    P.CHECKED_ON,
    P.INSPECTOR,
    P.NOTE,
    P.UPDATED_AT,
)
"""Attribute columns of ``patches`` in file order (the geometry column comes last)."""


class LegalHint(StrEnum):
    """Hint from the approvals overlay; never a verdict."""

    PROBABLY_LEGAL = "probably_legal"  # covered by approvals (share >= threshold)
    SUSPECTED = "suspected"  # not (fully) covered: suspected illegal occupation


# --------------------------------------------------------------------------- events / runs
class E:
    """Column names of the append-only ``events`` table."""

    EVENT_ID = "event_id"
    TIME = "time"
    PATCH_ID = "patch_id"
    KIND = "kind"
    SOURCE = "source"  # run id, or "field:<file>#<row>"
    RUN_ID = "run_id"
    VALUES = "values_json"  # the values that changed, as JSON


EVENT_COLUMNS = (E.EVENT_ID, E.TIME, E.PATCH_ID, E.KIND, E.SOURCE, E.RUN_ID, E.VALUES)


class R:
    """Column names of the ``runs`` table."""

    RUN_ID = "run_id"
    STARTED_AT = "started_at"
    FINISHED_AT = "finished_at"
    COMMAND = "command"
    CONFIG_HASH = "config_hash"
    INPUTS_JSON = "inputs_json"  # input fingerprints
    COUNTS_JSON = "counts_json"
    TIMINGS_JSON = "timings_json"
    OUTCOME = "outcome"
    CODE_VERSION = "code_version"


RUN_COLUMNS = (
    R.RUN_ID,
    R.STARTED_AT,
    R.FINISHED_AT,
    R.COMMAND,
    R.CONFIG_HASH,
    R.INPUTS_JSON,
    R.COUNTS_JSON,
    R.TIMINGS_JSON,
    R.OUTCOME,
    R.CODE_VERSION,
)

# --------------------------------------------------------------------------- detections
REGISTRY_MANAGED_COLUMNS = (
    P.PATCH_ID,
    P.VERDICT,
    P.VERDICT_SUBTYPE,
    P.RECT_METHOD,
    P.REMAINING_M2,
    P.FIRST_SEEN,
    P.LAST_SEEN,
    P.CHECKED_ON,
    P.INSPECTOR,
    P.NOTE,
    P.UPDATED_AT,
)
"""Patch columns only the registry sets; a classified and assigned detection carries all the
others (:data:`DETECTION_INPUT_COLUMNS`)."""

DETECTION_INPUT_COLUMNS = tuple(c for c in PATCH_COLUMNS if c not in REGISTRY_MANAGED_COLUMNS)
"""Columns ``register_detections`` requires on its detections (plus ``geometry``)."""


# --------------------------------------------------------------------------- rates table
class RC:
    """Column names of the rates table (``rates.csv``, one row per unit)."""

    LEVEL = "level"
    CODE = "code"
    NAME = "name"
    PARENT_CODE = "parent_code"
    N_PATCHES = "n_patches"
    N_PENDING = "n_pending"
    N_LEGAL = "n_legal"
    N_ILLEGAL = "n_illegal"
    N_FALSE_CHANGE = "n_false_change"
    N_OTHER = "n_other"
    PATCHES_M2 = "patches_m2"
    ILLEGAL_M2 = "illegal_m2"
    ILLEGAL_MU = "illegal_mu"
    ILLEGAL_FARMLAND_M2 = "illegal_farmland_m2"
    PENDING_FARMLAND_M2 = "pending_farmland_m2"
    CONSTRUCTION_FARMLAND_M2 = "construction_farmland_m2"
    ILLEGAL_RATIO = "illegal_ratio"
    ILLEGAL_RATIO_UPPER = "illegal_ratio_upper"
    ILLEGAL_RATIO_MET = "illegal_ratio_met"
    RECTIFIED_M2 = "rectified_m2"
    RECT_RATE_AREA = "rect_rate_area"
    N_RECTIFIED = "n_rectified"
    RECT_RATE_COUNT = "rect_rate_count"
    RECT_RATE_MET = "rect_rate_met"
    ZERO_CASE = "zero_case"


RATES_COLUMNS: tuple[str, ...] = (
    RC.LEVEL,
    RC.CODE,
    RC.NAME,
    RC.PARENT_CODE,
    RC.N_PATCHES,
    RC.N_PENDING,
    RC.N_LEGAL,
    RC.N_ILLEGAL,
    RC.N_FALSE_CHANGE,
    RC.N_OTHER,
    RC.PATCHES_M2,
    RC.ILLEGAL_M2,
    RC.ILLEGAL_MU,
    RC.ILLEGAL_FARMLAND_M2,
    RC.PENDING_FARMLAND_M2,
    RC.CONSTRUCTION_FARMLAND_M2,
    RC.ILLEGAL_RATIO,
    RC.ILLEGAL_RATIO_UPPER,
    RC.ILLEGAL_RATIO_MET,
    RC.RECTIFIED_M2,
    RC.RECT_RATE_AREA,
    RC.N_RECTIFIED,
    RC.RECT_RATE_COUNT,
    RC.RECT_RATE_MET,
    RC.ZERO_CASE,
)
"""Columns of ``rates.csv`` (DESIGN §3 names plus a few extras)."""

LEVELS = ("district", "township", "village")

# --------------------------------------------------------------------------- field returns
FIELD_RETURN_COLUMNS = (
    P.PATCH_ID,
    P.VERDICT,
    P.VERDICT_SUBTYPE,
    P.RECT_METHOD,
    P.REMAINING_M2,
    P.CHECKED_ON,
    P.INSPECTOR,
    P.NOTE,
)

FIELD_RETURN_ALIASES = {
    "图斑编号": P.PATCH_ID,
    "图斑号": P.PATCH_ID,
    "核实认定意见": P.VERDICT,
    "核实认定": P.VERDICT,
    "认定结果": P.VERDICT,
    "其他类型": P.VERDICT_SUBTYPE,
    "整改方式": P.RECT_METHOD,
    "剩余未整改面积": P.REMAINING_M2,
    "剩余未整改面积_m2": P.REMAINING_M2,
    "核查日期": P.CHECKED_ON,
    "核查人": P.INSPECTOR,
    "备注": P.NOTE,
}
"""Chinese column headers accepted in field returns, mapped to the canonical names."""

VALUE_ALIASES = {
    label: value.value
    for value, label in CHINESE_LABELS.items()
    if isinstance(value, Verdict | RectMethod)
}
"""Chinese verdict / method labels accepted in field returns."""

# --------------------------------------------------------------------------- shapefile fields
SHAPEFILE_FIELDS = {
    P.PATCH_ID: "patch_id",
    P.EPOCH_FROM: "ep_from",
    P.EPOCH_TO: "ep_to",
    P.AREA_M2: "area_m2",
    P.AREA_MU: "area_mu",
    P.FARMLAND_M2: "farm_m2",
    P.BASIC_FARMLAND_M2: "bfarm_m2",
    P.APPROVED_M2: "appr_m2",
    P.APPROVED_SHARE: "appr_shr",
    P.APPROVAL_REFS: "appr_refs",
    P.LEGAL_HINT: "legal_hint",
    P.TOWNSHIP_CODE: "town_code",
    P.TOWNSHIP_NAME: "town_name",
    P.VILLAGE_CODE: "vill_code",
    P.VILLAGE_NAME: "vill_name",
    P.VILLAGE_SHARE: "vill_shr",
    P.CHANGE_TYPE: "chg_type",
    P.SCORE: "score",
    P.VERDICT: "verdict",
    P.VERDICT_SUBTYPE: "verd_sub",
    P.RECT_METHOD: "rect_meth",
    P.REMAINING_M2: "remain_m2",
    P.FIRST_SEEN: "first_seen",
    P.LAST_SEEN: "last_seen",
    P.CHECKED_ON: "checked_on",
    P.INSPECTOR: "inspector",
    P.NOTE: "note",
}
"""Registry column -> Shapefile field name (≤ 10 characters, unique). The only such map."""

COLUMN_LABELS = {
    P.PATCH_ID: ("patch id", "图斑编号"),
    P.EPOCH_FROM: ("epoch from", "前时相"),
    P.EPOCH_TO: ("epoch to", "后时相"),
    P.AREA_M2: ("area (m²)", "面积(平方米)"),
    P.AREA_MU: ("area (mu)", "面积(亩)"),
    P.FARMLAND_M2: ("farmland area (m²)", "占耕地面积(平方米)"),
    P.BASIC_FARMLAND_M2: ("basic farmland area (m²)", "占永久基本农田面积(平方米)"),
    P.APPROVED_M2: ("approved area (m²)", "已批面积(平方米)"),
    P.APPROVED_SHARE: ("approved share", "已批比例"),
    P.APPROVAL_REFS: ("approval document numbers", "批准文号"),
    P.LEGAL_HINT: ("approval hint", "用地审批提示"),
    P.TOWNSHIP_CODE: ("township code", "乡镇代码"),
    P.TOWNSHIP_NAME: ("township name", "乡镇名称"),
    P.VILLAGE_CODE: ("village code", "行政村代码"),
    P.VILLAGE_NAME: ("village name", "行政村名称"),
    P.VILLAGE_SHARE: ("share in village", "所在村面积占比"),
    P.VILLAGE_SHARES: ("shares per village", "跨村面积占比"),
    P.CHANGE_TYPE: ("change type", "变化类型"),
    P.SCORE: ("change score", "变化强度"),
    P.VERDICT: ("verdict", "核实认定意见"),
    P.VERDICT_SUBTYPE: ("verdict sub-type", "其他类型"),
    P.RECT_METHOD: ("rectification method", "整改方式"),
    P.REMAINING_M2: ("remaining unrectified area (m²)", "剩余未整改面积(平方米)"),
    P.FIRST_SEEN: ("first seen", "首次发现"),
    P.LAST_SEEN: ("last seen", "最近发现"),
    P.CHECKED_ON: ("checked on", "核查日期"),
    P.INSPECTOR: ("inspector", "核查人"),
    P.NOTE: ("note", "备注"),
    P.UPDATED_AT: ("updated at", "更新时间"),
}
"""Column -> (English label, Chinese label) for reports, data dictionaries and templates."""


# --------------------------------------------------------------------------- grid layers
class G:
    """Normalised column names of grid GeoDataFrames after loading."""

    CODE = "code"
    NAME = "name"
    TOWNSHIP_CODE = "township_code"
    PERSON = "person"
