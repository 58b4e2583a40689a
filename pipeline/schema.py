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
"""Township/village code given to a patch outside every grid polygon."""
UNASSIGNED_NAME = "未分配 (unassigned)"
"""Township/village name given by assignment to a patch outside every grid polygon."""


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


class EnforcementStage(StrEnum):
    """Step of the enforcement of an illegal patch (查处阶段), set by field returns.

    The three steps of the practice: guidance to demolish voluntarily (``notified`` →
    ``self_demolished``), legal pressure (``case_filed`` → ``penalty_decided``), forced
    demolition (``court`` → ``forced_demolished``). :data:`STAGE_TRANSITIONS` says which step
    may follow which; :data:`FINAL_STAGES` end the cycle.
    """

    NOTIFIED = "notified"  # 责令停止/告知
    SELF_DEMOLISHED = "self_demolished"  # 自行拆除
    CASE_FILED = "case_filed"  # 立案
    PENALTY_DECIDED = "penalty_decided"  # 处罚决定
    COURT = "court"  # 申请法院强制执行
    FORCED_DEMOLISHED = "forced_demolished"  # 强制拆除
    LEGALIZED = "legalized"  # 补办手续
    CONFISCATED = "confiscated"  # 没收


class DemolishedBy(StrEnum):
    """Who demolished an illegal building (拆除方式); follows from the final stage."""

    SELF = "self"  # 自行拆除
    FORCED = "forced"  # 强制拆除


_S = EnforcementStage
STAGE_TRANSITIONS: dict[EnforcementStage | None, frozenset[EnforcementStage]] = {
    None: frozenset(_S),
    _S.NOTIFIED: frozenset({_S.SELF_DEMOLISHED, _S.CASE_FILED, _S.LEGALIZED}),
    _S.CASE_FILED: frozenset({_S.PENALTY_DECIDED, _S.SELF_DEMOLISHED, _S.LEGALIZED}),
    _S.PENALTY_DECIDED: frozenset({_S.SELF_DEMOLISHED, _S.COURT, _S.CONFISCATED, _S.LEGALIZED}),
    _S.COURT: frozenset({_S.FORCED_DEMOLISHED, _S.SELF_DEMOLISHED}),
    _S.SELF_DEMOLISHED: frozenset(),
    _S.FORCED_DEMOLISHED: frozenset(),
    _S.LEGALIZED: frozenset(),
    _S.CONFISCATED: frozenset(),
}
"""Stage -> the stages allowed to follow it (key None: a patch without a stage yet)."""

FINAL_STAGES = frozenset({_S.SELF_DEMOLISHED, _S.FORCED_DEMOLISHED, _S.LEGALIZED, _S.CONFISCATED})
"""Stages that end the enforcement of a patch: nothing may follow them."""

STAGE_ORDER: tuple[EnforcementStage, ...] = (
    _S.NOTIFIED,
    _S.CASE_FILED,
    _S.PENALTY_DECIDED,
    _S.COURT,
    _S.SELF_DEMOLISHED,
    _S.FORCED_DEMOLISHED,
    _S.LEGALIZED,
    _S.CONFISCATED,
)
"""Stages in the order the report's funnel shows them: the steps, then the outcomes."""

STAGE_DEMOLISHED_BY = {
    _S.SELF_DEMOLISHED: DemolishedBy.SELF,
    _S.FORCED_DEMOLISHED: DemolishedBy.FORCED,
}
"""Final stage -> who demolished; the other final stages demolish nothing."""

STAGE_RECT_METHODS: dict[EnforcementStage, frozenset[RectMethod]] = {
    _S.SELF_DEMOLISHED: frozenset({RectMethod.DEMOLISHED_RESTORED, RectMethod.COMBINED}),
    _S.FORCED_DEMOLISHED: frozenset({RectMethod.DEMOLISHED_RESTORED, RectMethod.COMBINED}),
    _S.LEGALIZED: frozenset({RectMethod.LEGALIZED}),
    _S.CONFISCATED: frozenset({RectMethod.CONFISCATED}),
}
"""Final stage -> the rectification methods that agree with it (the first listed of
:class:`RectMethod` is the one set when a return gives the stage without a method)."""


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
    REASSESSED = "reassessed"  # 属性更新: derived attributes follow corrected input layers
    ENFORCEMENT = "enforcement"  # 查处阶段: a step of the enforcement cycle, with its date
    PHOTO = "photo"  # 实地举证照片: a field photo linked to the patch


EVENT_KIND_LABELS = {
    EventKind.DETECTED: "检测发现 detected",
    EventKind.REDETECTED: "再次检测 redetected",
    EventKind.GROWN: "范围扩大 grown",
    EventKind.RELAPSE: "复发 relapse",
    EventKind.EXPORTED: "下发 exported",
    EventKind.FIELD_VERDICT: "核查结论 verdict",
    EventKind.RECTIFICATION: "整改 rectification",
    EventKind.REASSESSED: "属性更新 reassessed",
    EventKind.ENFORCEMENT: "查处阶段 stage",
    EventKind.PHOTO: "实地照片 photo",
}
"""How each event kind is named in the dossiers' history."""

EVENT_BEFORE_SUFFIX = "_before"
"""Event values record a change of column ``c`` as ``c`` (new) and ``c + "_before"`` (old)."""

FIELD_DATE = "field_date"
"""Key of the values of an event written by a field row: the day the row reports (its
``checked_on``; for a ``rectification`` closed by a final stage, that stage's ``stage_date``);
null when the row gives no date. The report dates the event by it, else by the event time."""

PHOTO_FILE = "file"
"""Key of a ``photo`` event's values: the stored photo, relative to the workspace."""
PHOTO_SHA256 = "sha256"
"""Key of a ``photo`` event's values: the SHA-256 of the photo's bytes."""
PHOTO_NAME = "name"
"""Key of a ``photo`` event's values: the file name the photo came with."""
PHOTO_MATCHED_BY = "matched_by"
"""Key of a ``photo`` event's values: how it was linked (a :class:`PhotoMatch`)."""
PHOTO_DISTANCE_M = "distance_m"
"""Key of a ``photo`` event's values: metres from the photo's GPS position to the patch."""
PHOTO_TAKEN_AT = "taken_at"
"""Key of a ``photo`` event's values: the EXIF time it was taken (ISO, local camera time)."""


class PhotoMatch(StrEnum):
    """How a field photo was linked to its patch."""

    NAME = "name"  # its file name starts with the patch id
    GPS = "gps"  # its EXIF GPS position lies inside the patch


EXPORTED_PACKAGE = "package"
"""Key of an ``exported`` event's values: the township package that holds the patch."""
EXPORTED_KEY = "key"
"""Key of an ``exported`` event's values: the content key of the patch as exported
(:func:`pipeline.registry.store.patch_content_keys`)."""


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
    EnforcementStage.NOTIFIED: "责令停止/告知",
    EnforcementStage.SELF_DEMOLISHED: "自行拆除",
    EnforcementStage.CASE_FILED: "立案",
    EnforcementStage.PENALTY_DECIDED: "处罚决定",
    EnforcementStage.COURT: "申请法院强制执行",
    EnforcementStage.FORCED_DEMOLISHED: "强制拆除",
    DemolishedBy.SELF: "自行",
    DemolishedBy.FORCED: "强制",
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
    ENFORCEMENT_STAGE = "enforcement_stage"
    STAGE_DATE = "stage_date"
    DEMOLISHED_BY = "demolished_by"
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
    P.ENFORCEMENT_STAGE,
    P.STAGE_DATE,
    P.DEMOLISHED_BY,
    P.FIRST_SEEN,
    P.LAST_SEEN,
    P.CHECKED_ON,
    P.INSPECTOR,
    P.NOTE,
    P.UPDATED_AT,
)
"""Attribute columns of ``patches`` in file order (the geometry column comes last)."""

ADDED_PATCH_COLUMNS = (P.ENFORCEMENT_STAGE, P.STAGE_DATE, P.DEMOLISHED_BY)
"""Patch columns a registry written by an earlier landwatch lacks: read as empty."""

PART_OF = "part_of"
"""Optional column of assigned detections (assign ``split`` mode): the index label of the
patch a part was cut from; parts sharing it count once per unit in the rates."""
PART = "part"
"""Optional column of assigned detections (assign ``split`` mode): the part number within
its patch, 1 = the majority part."""


class LegalHint(StrEnum):
    """Hint from the approvals overlay; never a verdict."""

    PROBABLY_LEGAL = "probably_legal"  # covered by approvals (share >= threshold)
    SUSPECTED = "suspected"  # not (fully) covered: suspected illegal occupation


LEGAL_HINT_LABELS = {LegalHint.PROBABLY_LEGAL: "有批文(疑似合法)", LegalHint.SUSPECTED: "疑似违法"}
"""Chinese label of each approval hint, as packages and the report show it."""


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


FEATURES_TABLE = "patch_features"
"""Registry table: the features of each patch as detected in each epoch pair (kept for good,
so a patch verified years later can still be learned from)."""


class PF:
    """Column names of the ``patch_features`` table."""

    PATCH_ID = "patch_id"
    EPOCH_FROM = "epoch_from"
    EPOCH_TO = "epoch_to"
    RUN_ID = "run_id"
    VALUES = "features_json"  # feature name -> number (null when unknown), as JSON


FEATURE_TABLE_COLUMNS = (PF.PATCH_ID, PF.EPOCH_FROM, PF.EPOCH_TO, PF.RUN_ID, PF.VALUES)


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
TIMINGS_TOTAL = "total"
"""Key of the whole run's seconds in ``runs.timings_json`` (the other keys are stage ids)."""

# --------------------------------------------------------------------------- detections
REGISTRY_MANAGED_COLUMNS = (
    P.PATCH_ID,
    P.VERDICT,
    P.VERDICT_SUBTYPE,
    P.RECT_METHOD,
    P.REMAINING_M2,
    P.ENFORCEMENT_STAGE,
    P.STAGE_DATE,
    P.DEMOLISHED_BY,
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

DERIVED_COLUMNS = (
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
)
"""Patch columns derived from the input layers (classify: farmland, basic farmland, approvals;
assign: the grid). A register run copies them from the detection of the patch's own period
(``epoch_from``, ``epoch_to``), so a corrected layer reaches the registry; each change is an
event with the old and the new value. Geometry measures (``area_m2``, ``area_mu``, which
classify computes from the detection's own outline) and detection attributes (``score``,
``change_type``) are not derived: they follow the detection rules of ``register``."""


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

RATES_LABELS: dict[str, tuple[str, str]] = {
    RC.LEVEL: ("level", "层级"),
    RC.CODE: ("code", "代码"),
    RC.NAME: ("name", "名称"),
    RC.PARENT_CODE: ("parent code", "上级代码"),
    RC.N_PATCHES: ("patches", "图斑数"),
    RC.N_PENDING: ("pending", "待核查数"),
    RC.N_LEGAL: ("legal", "合法数"),
    RC.N_ILLEGAL: ("illegal", "违法数"),
    RC.N_FALSE_CHANGE: ("false changes", "伪变化数"),
    RC.N_OTHER: ("other", "其他数"),
    RC.PATCHES_M2: ("patch area (m²)", "图斑面积(平方米)"),
    RC.ILLEGAL_M2: ("illegal area (m²)", "违法面积(平方米)"),
    RC.ILLEGAL_MU: ("illegal area (mu)", "违法面积(亩)"),
    RC.ILLEGAL_FARMLAND_M2: ("illegal farmland area (m²)", "违法占耕地面积(平方米)"),
    RC.PENDING_FARMLAND_M2: ("pending farmland area (m²)", "待核查占耕地面积(平方米)"),
    RC.CONSTRUCTION_FARMLAND_M2: (
        "new-construction farmland area, legal + illegal (m²)",
        "新增建设占耕地面积(平方米)",
    ),
    RC.ILLEGAL_RATIO: ("illegal-occupation ratio", "违法占地比例"),
    RC.ILLEGAL_RATIO_UPPER: ("illegal ratio, upper bound (pending as illegal)", "违法占地比例上限"),
    RC.ILLEGAL_RATIO_MET: ("illegal ratio target met", "违法占地比例达标"),
    RC.RECTIFIED_M2: ("rectified area (m²)", "已整改面积(平方米)"),
    RC.RECT_RATE_AREA: ("rectification rate by area", "整改率(按面积)"),
    RC.N_RECTIFIED: ("rectified patches", "已整改数"),
    RC.RECT_RATE_COUNT: ("rectification rate by count", "整改率(按宗数)"),
    RC.RECT_RATE_MET: ("rectification target met", "整改率达标"),
    RC.ZERO_CASE: ("zero cases (reward candidate)", "零违法(奖励候选)"),
}
"""Rates column -> (English label, Chinese label) for ``rates.xlsx``."""


class PD:
    """Columns of the per-patch dates of :func:`pipeline.registry.ledger.patch_dates` and the
    day column of its ledger."""

    DATE = "date"
    DETECTED_ON = "detected_on"
    FIRST_EXPORTED = "first_exported"
    ILLEGAL_ON = "illegal_on"
    RECTIFIED_ON = "rectified_on"


class CY:
    """Column names of the enforcement-cycle tables of the report (funnel, cycle figures,
    burn-up, cases per period, stock and new, assessment sheet); one row per unit unless
    said otherwise. Unit columns are the rates table's ``level``, ``code``, ``name``."""

    STAGE = "stage"
    N_REACHED = "n_reached"
    N_ILLEGAL = "n_illegal"
    N_SELF = "n_self_demolished"
    N_FORCED = "n_forced_demolished"
    SELF_SHARE = "self_share"
    DAYS_MEDIAN = "days_to_rectified_median"
    DAYS_P90 = "days_to_rectified_p90"
    RECTIFIED_MU = "rectified_mu"
    DEMOLISHED_MU = "demolished_mu"
    LAND_VALUE = "land_value_yuan"
    DATE = "date"
    RECT_RATE = "rect_rate_area"
    PLANNED = "planned_rate"
    ON_TRACK = "on_track"
    PERIOD = "period"
    N_NEW = "n_new_illegal"
    NEW_MU = "new_illegal_mu"
    LAST_CASE = "last_case_period"
    NO_CASE_SINCE = "no_new_case_since"
    PART = "part"
    N_RECTIFIED = "n_rectified"
    REMAINING_MU = "remaining_mu"
    RECT_RATE_COUNT = "rect_rate_count"
    N_PENDING = "n_pending"
    ZERO_CASE = "zero_case"
    REWARD = "reward_yuan"
    DEDUCTION = "deduction_yuan"
    URGENT = "urgent"
    REPORT_DUE = "report_due"
    FIRST_EXPORTED = PD.FIRST_EXPORTED


PRIORITY = "priority"
"""Optional patch column: a learned visiting rank (1 = first); the work order uses it when
present, else the score."""
P_REAL_CHANGE = "p_real_change"
"""Optional patch column: the learned probability that a pending patch is a real change."""
LOW_CONFIDENCE = "low_confidence"
"""Optional patch column: ``p_real_change`` below ``learn.low_confidence`` (marked, never
hidden)."""

LOCAL_TIMEZONE = "Asia/Shanghai"
"""China Standard Time: event times (UTC) are read in it when they become days."""

STOCK = "stock"
"""Value of ``CY.PART`` for cases of earlier years back to ``report.base_year`` (存量)."""
NEW = "new"
"""Value of ``CY.PART`` for cases of the report year (增量)."""

CYCLE_LABELS: dict[str, tuple[str, str]] = {
    CY.STAGE: ("stage", "阶段"),
    CY.N_REACHED: ("patches", "图斑数"),
    CY.N_ILLEGAL: ("illegal patches", "违法图斑数"),
    CY.N_SELF: ("self-demolished", "自行拆除数"),
    CY.N_FORCED: ("forcibly demolished", "强制拆除数"),
    CY.SELF_SHARE: ("share demolished voluntarily", "自拆占比"),
    CY.DAYS_MEDIAN: ("days detection → rectified, median", "发现至整改天数(中位)"),
    CY.DAYS_P90: ("days detection → rectified, 90th percentile", "发现至整改天数(90%)"),
    CY.RECTIFIED_MU: ("area rectified (mu)", "已整改面积(亩)"),
    CY.DEMOLISHED_MU: ("area demolished and restored (mu)", "拆除复耕面积(亩)"),
    CY.LAND_VALUE: ("land value recovered: demolished area × price (yuan)", "挽回土地价值(元)"),
    CY.ON_TRACK: ("on track for the deadline", "按期进度"),
    CY.PERIOD: ("period of the epoch", "时相期"),
    CY.N_NEW: ("new illegal cases", "新增违法宗数"),
    CY.NEW_MU: ("new illegal area (mu)", "新增违法面积(亩)"),
    CY.LAST_CASE: ("last new case", "最近新增"),
    CY.NO_CASE_SINCE: ("no new case since", "此后无新增"),
    CY.PART: ("stock / new", "存量/增量"),
    CY.N_RECTIFIED: ("rectified", "已整改宗数"),
    CY.REMAINING_MU: ("remaining (mu)", "剩余未整改面积(亩)"),
    CY.RECT_RATE: ("rectification rate by area", "整改率(按面积)"),
    CY.RECT_RATE_COUNT: ("rectification rate by count", "整改率(按宗数)"),
    CY.N_PENDING: ("pending of the year", "当年待核查数"),
    CY.ZERO_CASE: ("zero cases", "零新增"),
    CY.REWARD: ("reward (yuan)", "奖励(元)"),
    CY.DEDUCTION: ("allowance deduction (yuan)", "扣减补贴(元)"),
    CY.URGENT: ("urgent", "紧急"),
    CY.REPORT_DUE: ("report due", "报告期限"),
}
"""Cycle column -> (English label, Chinese label) for the assessment sheet and the report."""

HISTORY_DATE = "date"
"""Column of the report's ``history`` frame holding the report date (ISO text); its other
columns are rates columns of the district row."""


class Level:
    """Levels of the administrative units: the rows of the rates table, the field packages
    and the grid layers of the sample."""

    DISTRICT = "district"
    TOWNSHIP = "township"
    VILLAGE = "village"


LEVELS = (Level.DISTRICT, Level.TOWNSHIP, Level.VILLAGE)
LEVEL_LABELS = {Level.DISTRICT: "区县", Level.TOWNSHIP: "乡镇", Level.VILLAGE: "行政村"}
"""Chinese name of each level."""

# --------------------------------------------------------------------------- field returns
FIELD_RETURN_COLUMNS = (
    P.PATCH_ID,
    P.VERDICT,
    P.VERDICT_SUBTYPE,
    P.RECT_METHOD,
    P.REMAINING_M2,
    P.ENFORCEMENT_STAGE,
    P.STAGE_DATE,
    P.DEMOLISHED_BY,
    P.CHECKED_ON,
    P.INSPECTOR,
    P.NOTE,
)
"""Canonical columns of a field return: the patch id and the columns the team fills."""

FIELD_RETURN_FILLED_COLUMNS = tuple(c for c in FIELD_RETURN_COLUMNS if c != P.PATCH_ID)
"""The columns a field team fills. A row with none of them filled is *blank* (not filled yet):
it changes nothing. Pre-filled template columns (patch id, village, area) do not count."""

FIELD_RETURN_ROW = "row"
"""Column of the read return rows holding the row number the user sees in the file."""

FIELD_RETURN_TOLERANCES = {P.REMAINING_M2: "remaining_tolerance_m2"}
"""Area column -> column of the read return rows holding, per row, how far (m²) the area
written may exceed the patch area and still be read as the whole patch: half a unit of its
last written decimal when the header gave the area in another unit than m² (``0.62`` 亩: 0.005
亩 ≈ 3.33 m²), so a value rounded from the template's area is not rejected. Absent or NaN:
only the m² rounding margin of :mod:`pipeline.registry.field_returns`."""

FIELD_RETURN_HEADERS: dict[str, tuple[str, ...]] = {
    P.PATCH_ID: (
        "patch_id", "patch id", "图斑编号", "图斑号", "图斑编码", "图斑代码", "监测图斑编号", "TBBH",
    ),
    P.VERDICT: (
        "verdict", "核实认定意见", "核实认定", "认定意见", "认定结果", "核查结果", "核实结果",
        "核查认定",
    ),
    P.VERDICT_SUBTYPE: (
        "verdict_subtype", "verdict sub-type", "verd_sub", "subtype", "其他类型", "其他情形",
        "细分类型",
    ),
    P.RECT_METHOD: (
        "rect_method", "rectification method", "rect_meth", "整改方式", "整改情况", "整改措施",
        "整改类型", "处置方式",
    ),
    P.REMAINING_M2: (
        "remaining_m2", "remaining unrectified area", "remain_m2", "remaining area", "remaining",
        "剩余未整改面积", "剩余面积", "未整改面积", "整改后剩余面积", "剩余未整改面积_m2",
    ),
    P.ENFORCEMENT_STAGE: (
        "enforcement_stage", "enforcement stage", "enf_stage", "stage", "查处阶段", "执法阶段",
        "处置阶段", "查处进度", "处置进度",
    ),
    P.STAGE_DATE: (
        "stage_date", "stage date", "阶段日期", "查处日期", "处置日期", "执法日期",
    ),
    P.DEMOLISHED_BY: (
        "demolished_by", "demolished by", "demol_by", "拆除方式", "拆除主体",
    ),
    P.CHECKED_ON: (
        "checked_on", "checked on", "核查日期", "核实日期", "核查时间", "核实时间", "检查日期",
        "调查日期",
    ),
    P.INSPECTOR: (
        "inspector", "核查人", "核实人", "核查人员", "核实人员", "检查人", "调查人",
    ),
    P.NOTE: ("note", "notes", "remark", "remarks", "备注", "说明", "备注说明"),
}  # fmt: skip
"""Accepted headers of each field-return column: the canonical name, the Shapefile field and
template labels of exported packages, and the Chinese and English words townships use.

Headers match after trimming, ignoring case and treating spaces and hyphens as ``_``. A
remark in brackets after the header is ignored (``核查日期（年月日）``), except on the area
column, where it must be an area unit: ``(亩)``, ``(平方米)``, ``(m²)``, ``(m2)``, ``(㎡)`` or
``(公顷)``, in ASCII or full-width brackets, or written after the header (``剩余面积/亩``,
``剩余面积亩``, ``剩余面积 亩``, ``剩余面积_亩``); the values are converted to m². Without a unit
the area is in m². README "Field returns" shows this table."""

FIELD_RETURN_IGNORED_HEADERS = ("序号", "行号")
"""Headers read as row numbering and ignored without a warning. The other registry columns
an exported package carries (village, area, codes, ...) are ignored without a warning too."""

FIELD_RETURN_ALIASES = {
    header: column for column, headers in FIELD_RETURN_HEADERS.items() for header in headers
}
"""Accepted header -> canonical field-return column (:data:`FIELD_RETURN_HEADERS` flattened)."""

VALUE_SYNONYMS: dict[Verdict | RectMethod | EnforcementStage | DemolishedBy, tuple[str, ...]] = {
    Verdict.PENDING: ("待核查", "未核查", "待核实", "未核实"),
    Verdict.LEGAL: ("合法", "合法用地", "合法建设"),
    Verdict.ILLEGAL: (
        "违法", "违法用地", "违法占地", "违法建设", "非法占地", "非法用地", "违法违规用地",
    ),
    Verdict.FALSE_CHANGE: ("伪变化", "非真实变化", "无变化", "未变化", "实地未变化", "伪图斑"),
    Verdict.OTHER: ("其他", "其它", "其他情形", "其他情况"),
    RectMethod.DEMOLISHED_RESTORED: (
        "拆除复耕", "已拆除复耕", "拆除", "已拆除", "复耕", "已复耕", "拆除恢复", "已拆除恢复",
        "恢复原状", "已恢复原状", "demolished",
    ),
    RectMethod.LEGALIZED: (
        "补办手续", "已补办手续", "补办", "已补办", "完善手续", "已完善手续", "补办用地手续",
        "已补办用地手续", "legalised",
    ),
    RectMethod.CONFISCATED: ("没收", "已没收", "依法没收"),
    RectMethod.COMBINED: ("综合整改", "综合", "多种方式"),
    RectMethod.NONE: ("未整改", "尚未整改", "暂未整改"),
    EnforcementStage.NOTIFIED: (
        "责令停止/告知", "责令停止", "告知", "已告知", "责令停止违法行为", "责令改正", "已下达通知",
    ),
    EnforcementStage.SELF_DEMOLISHED: ("自行拆除", "已自行拆除", "自拆", "引导自拆"),
    EnforcementStage.CASE_FILED: ("立案", "已立案", "立案查处"),
    EnforcementStage.PENALTY_DECIDED: ("处罚决定", "已处罚", "行政处罚", "下达处罚决定"),
    EnforcementStage.COURT: (
        "申请法院强制执行", "法院强制执行", "申请强制执行", "司法程序", "移送法院",
    ),
    EnforcementStage.FORCED_DEMOLISHED: ("强制拆除", "已强制拆除", "依法强制拆除", "强拆"),
    DemolishedBy.SELF: ("自行", "当事人自行"),
    DemolishedBy.FORCED: ("强制", "依法强制"),
}  # fmt: skip
"""Words accepted for each verdict and rectification method, besides the English value itself
(any case; spaces and hyphens count as ``_``, so ``False change`` is ``false_change``). The
first word of each is its :data:`CHINESE_LABELS` label. README "Field returns" shows this
table."""

VALUE_ALIASES = {
    word.lower(): value.value
    for value, words in VALUE_SYNONYMS.items()
    if not isinstance(value, DemolishedBy)
    for word in words
}
"""Accepted word (lower case) -> verdict / method / stage value (:data:`VALUE_SYNONYMS`
flattened, without the words of :class:`DemolishedBy`, some of which name a stage)."""

DEMOLISHED_BY_ALIASES = {
    word.lower(): value.value for value in DemolishedBy for word in VALUE_SYNONYMS[value]
}
"""Accepted word (lower case) -> :class:`DemolishedBy` value; a stage word that implies who
demolished (``自行拆除``) is accepted too (:data:`STAGE_DEMOLISHED_BY`)."""

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
    P.ENFORCEMENT_STAGE: "enf_stage",
    P.STAGE_DATE: "stage_date",
    P.DEMOLISHED_BY: "demol_by",
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
    P.ENFORCEMENT_STAGE: ("enforcement stage", "查处阶段"),
    P.STAGE_DATE: ("stage date", "阶段日期"),
    P.DEMOLISHED_BY: ("demolished by", "拆除方式"),
    P.FIRST_SEEN: ("first seen", "首次发现"),
    P.LAST_SEEN: ("last seen", "最近发现"),
    P.CHECKED_ON: ("checked on", "核查日期"),
    P.INSPECTOR: ("inspector", "核查人"),
    P.NOTE: ("note", "备注"),
    P.UPDATED_AT: ("updated at", "更新时间"),
}
"""Column -> (English label, Chinese label) for reports, data dictionaries and templates."""


# --------------------------------------------------------------------------- field packages
PACKAGE_VILLAGES_LAYER = "villages"
"""Layer of a package's GeoPackage holding its village boundaries (columns of :class:`G`);
its patches are in the layer :data:`PATCHES_LAYER`, as in the registry."""


class DD:
    """Columns of a package's ``data_dictionary.csv`` (one row per patch column)."""

    SHP_FIELD = "shp_field"
    COLUMN = "column"
    LABEL_ZH = "label_zh"
    MEANING_EN = "meaning_en"
    ALLOWED_VALUES = "allowed_values"
    IN_FILES = "in_files"


# --------------------------------------------------------------------------- grid layers
class G:
    """Normalised column names of grid GeoDataFrames after loading."""

    CODE = "code"
    NAME = "name"
    TOWNSHIP_CODE = "township_code"
    PERSON = "person"


# --------------------------------------------------------------------------- synthetic sample
class T:
    """Column names of the synthetic sample's own layers (truth, seasonal, approvals,
    farmland); the names it shares with the registry are the registry's."""

    TRUTH_ID = "truth_id"
    KIND = "kind"
    COVER = "cover"
    OFF_FARMLAND = "off_farmland"
    """True for a new building off farmland (kind ``nonfarm``): no farmland, no approval."""
    AREA_M2 = P.AREA_M2
    FARMLAND_M2 = P.FARMLAND_M2
    APPROVED_M2 = P.APPROVED_M2
    VILLAGE_CODE = P.VILLAGE_CODE
    VILLAGE_SHARE = P.VILLAGE_SHARE
    TOWNSHIP_CODE = P.TOWNSHIP_CODE
    EPOCH_FROM = P.EPOCH_FROM
    EPOCH_TO = P.EPOCH_TO
    PARCEL_ID = "parcel_id"
    STATE_FROM = "state_from"
    STATE_TO = "state_to"
    DOC_NO = "doc_no"
    APPROVED_ON = "approved_on"
    APPROVAL_KIND = "kind"
    BASIC = "basic"
    DLBM = "dlbm"


TRUTH_LAYER = "changes"
"""Layer of the sample's ``truth.gpkg`` holding every new object of epoch 2."""
SEASONAL_LAYER = "seasonal"
"""Layer of the sample's ``truth.gpkg`` holding the crop parcels whose state changed."""
APPROVALS_LAYER = "approvals"
"""Layer of the sample's ``approvals.gpkg``."""
FARMLAND_LAYER = "farmland"
"""Layer of the sample's ``farmland.gpkg``."""

# --------------------------------------------------------------------------- stages
STAGE_NAMES = (
    "detect", "classify", "assign", "register", "inbox", "learn", "export", "report"
)  # fmt: skip
"""The pipeline's stages in the order they run (``landwatch run --from/--until``)."""
