"""Typed, frozen configuration.

``config.yaml`` is parsed once, at the boundary, into the frozen dataclasses below. Unknown
keys are errors that suggest the closest valid key; bad values name the key, the value and
what is allowed; relative paths are resolved against the folder of the config file. Each
stage receives only its own section.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import hashlib
import itertools
import json
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.bands import (
    ATMOSPHERIC_BANDS,
    CLOUD_BANDS,
    MOISTURE_BANDS,
    MOISTURE_VISIBLE,
    VISIBLE_BANDS,
    check_bands,
    has_nir,
    surface_bands,
)
from pipeline.errors import ConfigError

VILLAGE_CODE_PATTERN = r"^\d{12}$"
"""Default village code format: the 12-digit code of the Chinese statistical division codes."""
TOWNSHIP_CODE_PATTERN = r"^\d{9}(?:000)?$"
"""Default township code format: the 9-digit GB/T 10114 code, or the same padded to 12 digits
with ``000`` (as in the statistical division codes)."""
CHINA_CODE_PATTERN = VILLAGE_CODE_PATTERN
"""The 12-digit Chinese division code (the default village code format)."""


class Code(str):
    """Marker type for administrative codes: YAML must give them quoted, as text, because an
    unquoted number loses leading zeros (and YAML 1.1 reads 012 as octal)."""


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class AreaConfig:
    """The area and its target grid (projected CRS in metres).

    With ``align: imagery`` (the default) the grid follows the pixels of the first epoch's
    first file (for ``imagery.band_files``: the first file of the first band) when that file
    is in ``crs`` at ``resolution_m``: same pixel size, origin a whole number of pixels from
    the file's, so its pixels are read as they are, never resampled. Otherwise (a file in
    another CRS, at another resolution, rotated), and always with ``align: snap``, pixel edges
    fall on whole multiples of ``resolution_m`` from the CRS origin, and the log says why.
    """

    name: str
    county_code: Code
    crs: str
    resolution_m: float | None = None
    """Pixel size of the target grid in metres; default (null): the first file's (which must
    then be in ``crs``)."""
    bounds: tuple[float, float, float, float] | None = None
    """Optional (xmin, ymin, xmax, ymax) in ``crs``; default: where both epochs overlap."""
    align: Literal["imagery", "snap"] = "imagery"
    """``imagery``: follow the first file's pixels when it can; ``snap``: multiples of
    ``resolution_m``."""


@dataclass(frozen=True)
class ImageryConfig:
    """Imagery per epoch. ``epochs`` maps a label (e.g. "2017") to file globs."""

    epochs: dict[str, tuple[str, ...]]
    bands: dict[str, int] | None = None
    band_files: dict[str, str] | None = None
    nodata: float | None = None
    masks: dict[str, tuple[str, ...]] | None = None
    """Optional valid-data masks per epoch label (non-zero = usable, 0 = cloud/invalid)."""
    resampling: Literal["nearest", "bilinear", "cubic", "average"] = "bilinear"
    offset: float | dict[str, float] = 0.0
    """Added to every value read, after the nodata test: one number for every epoch, or per
    epoch label. Sentinel-2 products of processing baseline 04.00 and later (from January
    2022) store reflectance × 10000 + 1000: ``-1000`` for those epochs brings them back to
    the scale of older ones (the change methods and screens compare values across epochs)."""
    base_dir: Path = Path(".")

    def offset_for(self, label: str) -> float:
        """The offset of epoch ``label``."""
        if isinstance(self.offset, dict):
            return float(self.offset.get(label, 0.0))
        return float(self.offset)

    def files(self, label: str) -> list[Path]:
        """The files of one epoch, sorted, globs resolved against the config folder."""
        return _glob_all(self.base_dir, self.epochs[label])

    def mask_files(self, label: str) -> list[Path]:
        if not self.masks or label not in self.masks:
            return []
        return _glob_all(self.base_dir, self.masks[label])

    @property
    def labels(self) -> list[str]:
        return list(self.epochs)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Consecutive epoch pairs, in the order the epochs are listed."""
        labels = self.labels
        return list(itertools.pairwise(labels))

    @property
    def band_names(self) -> list[str]:
        return list((self.bands or self.band_files or {}).keys())


@dataclass(frozen=True)
class LayerConfig:
    """One vector layer: a file (any OGR format), optional layer name and field names."""

    path: Path
    layer: str | None = None
    code_field: str | None = None
    name_field: str | None = None
    township_field: str | None = None
    """Village layers: field with the township code; absent = assign by majority overlap."""
    person_field: str | None = None
    ref_field: str | None = None
    basic_field: str | None = None
    encoding: str | None = None
    """Text encoding of the layer's attribute table (e.g. ``GBK``); overrides detection (for a
    Shapefile: its ``.cpg``, its DBF language byte, then strict UTF-8, then GB18030)."""
    codes: tuple[Code, ...] | None = None
    """Overlay layers: with ``code_field``, keep only the features whose code is one of these
    (``farmland: {path: DLTB.shp, code_field: DLBM, codes: ["0101", "0102", "0103"]}``: the
    耕地 parcels of a 三调 land-use layer). Compared as text; a number or a digit string
    shorter than a code matches it once left-padded with zeros (``101`` matches ``"0101"``)."""


@dataclass(frozen=True)
class LayersConfig:
    township: LayerConfig
    village: LayerConfig
    district: LayerConfig | None = None
    approvals: LayerConfig | None = None
    farmland: LayerConfig | None = None
    basic_farmland: LayerConfig | None = None


@dataclass(frozen=True)
class DetectConfig:
    """Change detection and clean-up parameters."""

    method: Literal["auto", "cva", "irmad", "index", "novelty", "selftrain"] = "auto"
    """``auto`` (the default): the setting made for the configured bands and the resolution
    (:mod:`pipeline.detection.defaults`); keys written in ``detect`` still win. A method named
    explicitly uses the defaults below and no profile."""
    threshold: Literal["otsu", "multiotsu", "chi2", "fixed"] = "otsu"
    threshold_value: float | None = None
    """For ``fixed``: the score cut; for ``chi2``: the quantile (default 0.99)."""
    hysteresis_low: float | None = None
    """Optional low cut as a fraction of the threshold: patches are drawn at the low cut and
    kept when one of their pixels is above the threshold (hysteresis, completed per patch
    after clean-up and merging, so exact whatever the block size)."""
    edge_ratio: float | None = 0.5
    """Mixed pixels along a patch's outline join it when their score is at least this share
    of the neighbouring patch pixels' mean score (null = off); see detect.refine_edges."""
    normalise: Literal["zscore", "irmad_regression", "none"] = "zscore"
    """``irmad_regression``: epoch 2 regressed band by band onto epoch 1 over the IR-MAD
    no-change pixels of the pass-1 sample, before any score (see irmad.irmad_regression)."""
    smooth_sigma_m: float | None = None
    """Optional spatial context: the score is smoothed with a Gaussian of this standard
    deviation (metres) before thresholding (null = off); see neighbourhood.smooth_score."""
    opening_radius_m: float = 2.0
    closing_radius_m: float = 2.0
    min_area_m2: float = 200.0
    min_mean_score: float | None = None
    """Optional: drop merged patches whose mean score is below this share of the threshold
    (counted in the run record as ``n_patches_below_min_mean_score``)."""
    block_px: int = 1024
    sample_step: int = 4
    """Global statistics are computed on every ``sample_step``-th row and column."""
    novelty_components: int = 12
    """``novelty``: Gaussian mixture components fitted to the scene's change vectors."""
    novelty_min_weight: float = 0.01
    """``novelty``: mixture components covering less than this share of the scene are not
    common transitions (rare change such as new construction must not get one)."""
    novelty_trim: float = 0.02
    """``novelty``: share of the pass-1 sample, the least likely under the mixture, left out of
    every round of EM after the first (trimmed likelihood), so rare change cannot grow a broad
    catch-all component of its own. Must exceed the share of the scene that is new construction (≈ 0.1–0.3 %)."""
    selftrain_change_quantile: float = 0.99
    """``selftrain``: pass-1 sample pixels whose IR-MAD statistic is at or above this quantile
    are the confident *change* examples of the per-scene classifier (selftrain.fit_self_train)."""
    selftrain_nochange_quantile: float = 0.8
    """``selftrain``: sample pixels at or below this quantile of the IR-MAD statistic are the
    confident *no-change* examples."""
    selftrain_shift_feature: bool = True
    """``selftrain``: add the shift-tolerant log difference (selftrain.shift_tolerant_difference,
    1 px) to the classifier's features — misregistration by a pixel is not change."""
    selftrain_vegetation_weight: bool = True
    """``selftrain``: weight the smoothed probability by the scene-relative vegetation change
    (selftrain.vegetation_weight): change that removes or brings vegetation ranks higher."""
    cloud_screen: bool | Literal["auto"] = "auto"
    """Drop merged patches that are a cloud or haze in one epoch (screens.cloud_patches), judged
    from the ``coastal`` and ``cirrus`` bands (Sentinel-2 B01, B10). ``auto``: on when both
    bands are configured; true: they must be; false: off."""
    cloud_cirrus_ratio: float = 1.5
    """Cloud screen: factor by which a patch's cirrus band must have grown (or shrunk), relative
    to the scene's, together with the coastal band."""
    cloud_coastal_ratio: float = 1.25
    """Cloud screen: the same factor for the coastal-aerosol band."""
    moisture_screen: bool | Literal["auto"] = "auto"
    """Drop merged patches whose SWIR changed far more than their visible brightness (wetting
    or drying, screens.moisture_patches), judged from ``swir1`` and the visible bands.
    ``auto``: on when ``swir1`` and one of blue/green/red are configured; true: they must be;
    false: off."""
    moisture_ratio: float = 2.5
    """Moisture screen: a patch is screened when ``|ln SWIR change| - |ln visible change|``
    (both relative to the scene) is at least ``ln(moisture_ratio)``."""
    context_contrast: float | None = None
    """Context screen: drop merged patches whose local contrast against a ring of ground
    around them changed only by a factor of 0.5–2 (haze, a gain between sensors), up to this
    many scene standard deviations (RMS over the bands; :mod:`pipeline.detection.context`):
    fragments of a parcel's seasonal change, film, old roofs under haze. null: off (the
    ``rgbn`` profile of ``method: auto`` sets 0.4)."""
    given: frozenset[str] = frozenset()
    """The keys written in the config file's ``detect`` section (not a key itself): with
    ``method: auto`` these keep their value, every other key follows the profile."""

    def cloud_screen_on(self, band_names: Sequence[str]) -> bool:
        """Whether the cloud screen runs with these configured bands (never without the
        ``coastal`` and ``cirrus`` bands; loading a config with ``cloud_screen: true`` and
        without them is an error)."""
        return self.cloud_screen is not False and all(b in band_names for b in CLOUD_BANDS)

    def moisture_screen_on(self, band_names: Sequence[str]) -> bool:
        """Whether the moisture screen runs with these configured bands (never without
        ``swir1`` and a visible band)."""
        return (
            self.moisture_screen is not False
            and all(b in band_names for b in MOISTURE_BANDS)
            and any(b in band_names for b in MOISTURE_VISIBLE)
        )


@dataclass(frozen=True)
class ClassifyConfig:
    legal_share: float = 0.95
    """Approved share at or above which a patch is hinted ``probably_legal``."""
    keep_types: tuple[str, ...] = ("veg_to_construction", "veg_to_bare")
    """Change types registered as patches; others are counted in the run record only."""


@dataclass(frozen=True)
class AssignConfig:
    mode: Literal["majority", "split"] = "majority"
    code_pattern: str | None = None
    """When set: the regular expression every township *and* village code must match (it
    replaces both patterns below; e.g. ``'^\\d{5}$'`` for French INSEE codes)."""
    township_code_pattern: str = TOWNSHIP_CODE_PATTERN
    """Regular expression every township code must match: 9 digits, or 12 ending in 000."""
    village_code_pattern: str = VILLAGE_CODE_PATTERN
    """Regular expression every village code must match: 12 digits."""
    strict_grid: bool = True
    """Stop with an error on grid defects that make assignment ambiguous (invalid polygons,
    overlaps, duplicate or malformed codes, unknown townships); false = repair, report, go on.
    Gaps are never fatal: patches in them are ``unassigned``."""
    min_part_m2: float = 1.0
    """``split`` mode: parts smaller than this (slivers along boundaries) stay with the
    majority part."""

    @property
    def township_pattern(self) -> str:
        """The pattern township codes must match (``code_pattern`` when set)."""
        return self.code_pattern or self.township_code_pattern

    @property
    def village_pattern(self) -> str:
        """The pattern village codes must match (``code_pattern`` when set)."""
        return self.code_pattern or self.village_code_pattern


@dataclass(frozen=True)
class RegisterConfig:
    match_overlap: float = 0.3
    """A detection updates an existing patch when the overlap is at least this share of the
    smaller of the two."""


@dataclass(frozen=True)
class ExportConfig:
    crs: str = "EPSG:4490"
    encoding: Literal["UTF-8", "GBK"] = "UTF-8"
    per_village: bool = False
    chips: bool = True
    dossiers: bool = True
    """Write a dossier per patch (``{workspace}/dossiers/``, and in the packages)."""


@dataclass(frozen=True)
class FieldReturnsConfig:
    inbox: Path | None = None
    """Folder the nightly run imports field returns from (default ``{workspace}/inbox``);
    applied files move to ``inbox/done/``, rejected ones to ``inbox/rejected/`` with their
    rejection report beside them."""
    encoding: str | None = None
    """Text encoding of CSV/Shapefile returns (default: detect UTF-8 or GBK)."""
    photo_radius_m: float = 100.0
    """A photo of a zipped return taken farther than this from its patch is linked with a
    warning in the import summary."""


@dataclass(frozen=True)
class RewardConfig:
    """Reward (元) of a zero-case unit for the year, per level; None shows no amount."""

    township: float | None = None
    village: float | None = None


@dataclass(frozen=True)
class ReportConfig:
    rect_rate_target: float = 0.85
    illegal_ratio_target: float = 0.15
    deadline: dt.date | None = None
    """Date the rectification target must be reached by: the report draws the rate's
    burn-up towards it and marks each township on track or behind."""
    land_price_per_mu: float | None = None
    """Value (元 per 亩) of rectified land; the land value recovered is shown only when set."""
    year: int | None = None
    """Year of the assessment sheet and of new (增量) cases; default: the year of the
    registry's latest epoch."""
    base_year: int | None = None
    """First year of the stock (存量): cases of earlier epochs back to this year are cleared
    with the new ones; default: every earlier year."""
    reward: RewardConfig = RewardConfig()
    penalty_per_case: float | None = None
    """Allowance deduction (元) per case of a village with cases; None shows no amount."""
    urgent_basic_farmland_mu: float = 5.0
    """A patch with at least this much basic farmland (亩) is urgent."""
    urgent_farmland_mu: float = 10.0
    """A patch with at least this much farmland (亩) is urgent."""
    report_working_days: int = 3
    """An urgent patch is due this many working days after its first export."""
    extra_holidays: tuple[dt.date, ...] = ()
    """Local days off on top of the official calendar (chinesecalendar)."""
    extra_workdays: tuple[dt.date, ...] = ()
    """Local make-up working days (调休) on top of the official calendar."""


@dataclass(frozen=True)
class LearnConfig:
    enabled: bool = True
    """Train on the field verdicts in the nightly run (the ``learn`` stage)."""
    min_per_class: int = 20
    """Verified patches needed of each class (real change, false change) to train and to
    validate (see :data:`pipeline.learning.model.MIN_PER_CLASS`)."""
    low_confidence: float = 0.2
    """Pending patches whose learned probability of a real change is below this are marked."""


@dataclass(frozen=True)
class RunConfig:
    workers: int = 2
    """Processes for the raster stages (1 = in-process)."""
    scheduler: str | None = None
    """Dask scheduler address (``tcp://host:port``); overrides ``workers``."""


@dataclass(frozen=True)
class Config:
    area: AreaConfig
    imagery: ImageryConfig
    layers: LayersConfig
    detect: DetectConfig = field(default_factory=DetectConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    assign: AssignConfig = field(default_factory=AssignConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    field_returns: FieldReturnsConfig = field(default_factory=FieldReturnsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    learn: LearnConfig = field(default_factory=LearnConfig)
    run: RunConfig = field(default_factory=RunConfig)
    workspace: Path = Path("out")
    source: Path | None = None
    """The file this config was loaded from (None when built in code)."""

    def section_hash(self, *names: str) -> str:
        """A short stable hash of the named sections (for staleness checks)."""
        payload = {name: to_plain(getattr(self, name)) for name in names}
        if "detect" in names:  # with method auto, which keys were written changes the result
            payload["detect_given"] = sorted(self.detect.given)
        text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def hash(self) -> str:
        return self.section_hash(*(f.name for f in dataclasses.fields(self) if f.name != "source"))


# --------------------------------------------------------------------------- loading
def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file.

    Relative paths in it resolve against the folder holding the file.

    Raises
    ------
    ConfigError
        On a missing file, invalid YAML, a missing or unknown key, or a bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass --config PATH to a YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(raw, base_dir=path.resolve().parent, source=path.resolve())


def parse_config(raw: Any, *, base_dir: Path, source: Path | None = None) -> Config:
    """Validate a parsed YAML mapping into a :class:`Config` (see :func:`load_config`)."""
    where = str(source) if source else "config"
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping at the top level, found {type(raw).__name__}"
        )
    cfg = _build(Config, expand_env_paths(raw, where), "", base_dir, where)
    cfg = dataclasses.replace(
        cfg,
        imagery=dataclasses.replace(cfg.imagery, base_dir=base_dir),
        workspace=_resolve(base_dir, cfg.workspace),
        field_returns=dataclasses.replace(
            cfg.field_returns,
            inbox=_resolve(base_dir, cfg.field_returns.inbox)
            if cfg.field_returns.inbox is not None
            else _resolve(base_dir, cfg.workspace) / "inbox",
        ),
        source=source,
        detect=dataclasses.replace(cfg.detect, given=_given_keys(raw.get("detect"))),
    )
    _check(cfg, where)
    return cfg


def _given_keys(section: Any) -> frozenset[str]:
    """The keys of a raw config section (empty when it is missing or not a mapping)."""
    return frozenset(map(str, section)) if isinstance(section, Mapping) else frozenset()


def to_plain(obj: Any) -> Any:
    """A config object as plain YAML/JSON-able data (for ``config show`` and hashing)."""
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.name not in _INTERNAL
        }
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dt.date):
        return obj.isoformat()
    return obj


# --------------------------------------------------------------------------- environment
_ENV_REF = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")
"""``${NAME}``, ``${NAME:-default}`` or ``$NAME`` in a path."""
_ENV_KEYS = {"path", "workspace", "inbox"}
"""Keys whose string values are paths (anywhere in the config)."""
_ENV_LISTS = {"epochs", "masks"}
"""``imagery`` keys mapping labels to lists of path globs."""


def expand_env(text: str, key: str, where: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with environment variables and a leading ``~`` expanded.

    ``${NAME}`` and ``$NAME`` take the variable's value, ``${NAME:-default}`` the default
    when it is unset or empty — so one config can point at data that lives elsewhere on each
    machine (``"${LANDWATCH_DATA:-../data}/oscd/*.tif"``).

    Raises
    ------
    ConfigError
        A variable without default is not set (the message names it and the key).
    """
    env = os.environ if env is None else env

    def value(m: re.Match) -> str:
        name, default = m.group(1) or m.group(3), m.group(2)
        if env.get(name):
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{where}: '{key}' = {text!r} uses ${name}, which is not set; set the environment "
            f"variable or give a default as ${{{name}:-...}}"
        )

    return os.path.expanduser(_ENV_REF.sub(value, text))


def expand_env_paths(raw: Any, where: str, prefix: str = "") -> Any:
    """A copy of the raw config with :func:`expand_env` applied to every path value: the
    ``path``, ``workspace`` and ``inbox`` keys and the globs of ``imagery.epochs`` /
    ``imagery.masks``. Other values are left as written."""
    if not isinstance(raw, Mapping):
        return raw
    out = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if k in _ENV_KEYS and isinstance(v, str):
            out[k] = expand_env(v, key, where)
        elif prefix == "imagery." and k in _ENV_LISTS and isinstance(v, Mapping):
            out[k] = {label: _expand_globs(g, f"{key}.{label}", where) for label, g in v.items()}
        else:
            out[k] = expand_env_paths(v, where, f"{key}.")
    return out


def _expand_globs(globs: Any, key: str, where: str) -> Any:
    """One glob or a list of globs, expanded; other values unchanged (validated later)."""
    if isinstance(globs, str):
        return expand_env(globs, key, where)
    if isinstance(globs, list):
        return [expand_env(g, key, where) if isinstance(g, str) else g for g in globs]
    return globs


# --------------------------------------------------------------------------- internals
_PATH_FIELDS = {"path"}
_INTERNAL = {"source", "base_dir", "given"}


def _resolve(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else (base / p).resolve()


def _glob_all(base: Path, patterns) -> list[Path]:
    files: set[Path] = set()
    for pattern in patterns:
        if Path(pattern).is_absolute():
            root = Path(Path(pattern).anchor)
            files.update(root.glob(str(Path(pattern).relative_to(root))))
        else:
            files.update(base.glob(pattern))
    return sorted(p for p in files if p.is_file())


def _build(cls, raw: Any, prefix: str, base_dir: Path, where: str):
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{where}: '{prefix.rstrip('.') or 'top level'}' must be a mapping of keys, "
            f"found {raw!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in _INTERNAL}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"{where}: unknown key '{prefix}{key}'{hint} "
                f"(allowed under '{prefix.rstrip('.') or 'top level'}': {', '.join(fields)})"
            )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name not in raw:
            has_default = (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            )
            if not has_default:
                raise ConfigError(f"{where}: missing required key '{key}'")
            continue
        value = _coerce(hints[name], raw[name], key, base_dir, where)
        if name in _PATH_FIELDS and isinstance(value, Path):
            value = _resolve(base_dir, value)
        kwargs[name] = value
    return cls(**kwargs)


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"a mapping of {_type_name(k)} to {_type_name(v)}"
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} numbers"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {
        Code: "quoted text",
        str: "text",
        int: "an integer",
        float: "a number",
        bool: "true/false",
        Path: "a path",
        dt.date: "a date (YYYY-MM-DD)",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(tp, value, key: str, base_dir: Path, where: str):
    origin = typing.get_origin(tp)

    def bad() -> ConfigError:
        return ConfigError(f"{where}: '{key}' = {value!r} is not valid; expected {_type_name(tp)}")

    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, base_dir, where)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise bad()
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"{where}: '{key}' = {value!r} is not allowed{hint} "
                f"(allowed: {', '.join(map(str, allowed))})"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:  # a section with only comments under it: every key default
            value = {}
        return _build(tp, value, f"{key}.", base_dir, where)
    if origin is dict:
        ktype, vtype = typing.get_args(tp)
        if not isinstance(value, Mapping) or not value:
            raise bad()
        return {
            _coerce(ktype, k, f"{key}", base_dir, where): _coerce(
                vtype, v, f"{key}.{k}", base_dir, where
            )
            for k, v in value.items()
        }
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str) and args[-1] is Ellipsis:
            value = [value]
        if not isinstance(value, list | tuple):
            raise bad()
        if args[-1] is Ellipsis:
            return tuple(
                _coerce(args[0], v, f"{key}[{i}]", base_dir, where) for i, v in enumerate(value)
            )
        if len(value) != len(args):
            raise bad()
        return tuple(
            _coerce(a, v, f"{key}[{i}]", base_dir, where)
            for i, (a, v) in enumerate(zip(args, value))
        )
    if tp is Code:
        if not isinstance(value, str):
            raise ConfigError(
                f"{where}: '{key}' = {value!r} is a number; codes must be quoted text "
                f'so leading zeros survive, e.g. "{value}"'
            )
        return str(value)
    if tp is str:
        # YAML turns unquoted 2016 into an int: epoch labels and codes are text
        if isinstance(value, dt.date):
            raise ConfigError(
                f"{where}: '{key}' = {value} was read as a date; quote it (\"{value}\") to "
                "use it as text, e.g. an epoch label"
            )
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise bad()
        return str(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        return float(value)
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise bad()
        return Path(value)
    if tp is dt.date:
        return _coerce_date(value, bad)
    raise bad()  # pragma: no cover - a type this loader does not know


def _coerce_date(value: Any, bad) -> dt.date:
    """A YAML date (``2024-09-15`` unquoted) or ISO text as a date."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            raise bad() from None
    raise bad()


MAX_RADIUS_PX = 64
"""Largest opening/closing radius in pixels (the clean-up's halo is four times it)."""
SCHEDULER_ADDRESS = re.compile(r"^((tcp|tls|ucx|ws|wss)://[^\s/:]+:\d+|inproc://\S+)$")
"""A Dask scheduler address: ``protocol://host:port`` (or an in-process ``inproc://`` one)."""


def check_scheduler_address(address: str, what: str = "the scheduler address") -> None:
    """Raise :class:`ConfigError` unless ``address`` looks like ``tcp://host:port``."""
    if not SCHEDULER_ADDRESS.match(address):
        raise ConfigError(
            f"{what} = {address!r} is not a Dask scheduler address; expected "
            "protocol://host:port, e.g. tcp://10.0.0.5:8786 (what `dask scheduler` prints)"
        )


GRID_LAYERS = ("township", "village", "district")
"""Layers whose ``code_field`` holds the unit codes."""
OVERLAY_LAYERS = ("approvals", "farmland", "basic_farmland")
"""Layers overlaid on the patches by classify; ``code_field`` + ``codes`` select features."""
FARMLAND_CODES = ("0101", "0102", "0103")
"""耕地 in the 三调 land-use classification (DLBM): 水田, 水浇地, 旱地."""


def _check_layer_keys(layers: LayersConfig, where: str) -> None:
    """``encoding`` names a codec; ``codes`` only on overlay layers and with ``code_field``."""
    import codecs

    for name in (*GRID_LAYERS, *OVERLAY_LAYERS):
        layer = getattr(layers, name)
        if layer is None:
            continue
        if layer.encoding is not None:
            try:
                codecs.lookup(layer.encoding)
            except LookupError:
                raise ConfigError(
                    f"{where}: 'layers.{name}.encoding' = {layer.encoding!r} is not a text "
                    "encoding Python knows; expected e.g. GBK, GB18030, UTF-8, BIG5 or CP1252"
                ) from None
        if name in GRID_LAYERS:
            if layer.codes is not None:
                raise ConfigError(
                    f"{where}: 'layers.{name}.codes' is not allowed: 'codes' selects features "
                    f"of an overlay layer ({', '.join(OVERLAY_LAYERS)}); every {name} counts"
                )
            continue
        if layer.codes is not None and not layer.codes:
            raise ConfigError(f"{where}: 'layers.{name}.codes' is empty; list at least one code")
        if layer.codes is not None and not layer.code_field:
            raise ConfigError(
                f"{where}: 'layers.{name}.codes' needs 'code_field', the field holding the codes "
                "(e.g. DLBM in a 三调 DLTB layer)"
            )
        if layer.code_field and layer.codes is None:
            example = ", ".join(f'"{c}"' for c in FARMLAND_CODES)
            hint = (
                f"; for the 耕地 parcels of a 三调 DLTB layer: codes: [{example}]"
                if name == "farmland"
                else ""
            )
            raise ConfigError(
                f"{where}: 'layers.{name}.code_field' = {layer.code_field!r} is set without "
                f"'codes', so it would select nothing; list the codes to keep{hint}, or remove "
                "'code_field' to use every feature of the layer"
            )


def _check(cfg: Config, where: str) -> None:
    """Checks that span several keys or need more than a type, one section at a time.

    The first failing check raises; the sections are checked in this order.
    """
    _check_area(cfg.area, where)
    _check_imagery(cfg.imagery, where)
    _check_layers(cfg.layers, where)
    _check_run(cfg.run, where)
    _check_detect(cfg.detect, cfg.imagery.band_names, cfg.area.resolution_m, where)
    _check_classify(cfg.classify, where)
    _check_assign(cfg.assign, where)
    _check_register(cfg.register, where)
    _check_learn(cfg.learn, where)
    _check_report(cfg.report, where)
    _check_field_returns(cfg.field_returns, where)
    _check_export(cfg.export, where)


def _check_area(a: AreaConfig, where: str) -> None:
    """County code of 6 digits, a projected CRS in metres, a positive resolution (if set),
    sane bounds, a known ``align`` (``snap`` needs a resolution)."""
    import pyproj

    if not re.fullmatch(r"\d{6}", a.county_code):
        raise ConfigError(
            f"{where}: 'area.county_code' = {a.county_code!r} is not valid; expected 6 digits "
            '(the GB/T 2260 county code, quoted so leading zeros survive, e.g. "130609")'
        )
    try:
        crs = pyproj.CRS.from_user_input(a.crs)
    except pyproj.exceptions.CRSError as exc:
        raise ConfigError(
            f"{where}: 'area.crs' = {a.crs!r} is not a CRS pyproj knows: {exc}"
        ) from exc
    if not crs.is_projected or crs.axis_info[0].unit_name not in ("metre", "meter"):
        raise ConfigError(
            f"{where}: 'area.crs' = {a.crs!r} is not a projected CRS in metres; the target grid "
            "needs one (e.g. a CGCS2000 Gauss-Krüger zone such as EPSG:4548, or a UTM zone)"
        )
    if a.resolution_m is not None and a.resolution_m <= 0:
        raise ConfigError(f"{where}: 'area.resolution_m' = {a.resolution_m} must be > 0")
    if a.align not in ("imagery", "snap"):
        raise ConfigError(
            f"{where}: 'area.align' = {a.align!r} is not valid; expected 'imagery' (follow the "
            "first image's pixels) or 'snap' (pixel edges on multiples of 'area.resolution_m')"
        )
    if a.align == "snap" and a.resolution_m is None:
        raise ConfigError(
            f"{where}: 'area.align' = 'snap' needs 'area.resolution_m' (the multiples to snap "
            "the grid to); set it, or use align: imagery to take the first image's pixels"
        )
    if a.bounds is not None and not (a.bounds[0] < a.bounds[2] and a.bounds[1] < a.bounds[3]):
        raise ConfigError(
            f"{where}: 'area.bounds' = {list(a.bounds)} must be [xmin, ymin, xmax, ymax]"
        )


def _check_imagery(im: ImageryConfig, where: str) -> None:
    """Two epochs or more, exactly one band layout, and only known epochs in per-epoch keys."""
    if len(im.epochs) < 2:
        raise ConfigError(
            f"{where}: 'imagery.epochs' has {len(im.epochs)} epoch(s); at least two are needed "
            "to find change"
        )
    if (im.bands is None) == (im.band_files is None):
        raise ConfigError(
            f"{where}: give exactly one of 'imagery.bands' (multi-band files: band number per "
            "name) or 'imagery.band_files' (one file per band: a pattern per name)"
        )
    for name, number in (im.bands or {}).items():
        if number < 1:
            raise ConfigError(
                f"{where}: 'imagery.bands.{name}' = {number}; band numbers start at 1"
            )
    if isinstance(im.offset, dict):
        for label in im.offset:
            if label not in im.epochs:
                raise ConfigError(
                    f"{where}: 'imagery.offset.{label}' names an epoch that is not in "
                    f"'imagery.epochs' ({', '.join(im.epochs)})"
                )
    if im.masks:
        for label in im.masks:
            if label not in im.epochs:
                raise ConfigError(
                    f"{where}: 'imagery.masks.{label}' names an epoch that is not in "
                    f"'imagery.epochs' ({', '.join(im.epochs)})"
                )


def _check_layers(layers: LayersConfig, where: str) -> None:
    """Every layer file exists, the grid layers name their fields, approvals its ref field."""
    for name in (*GRID_LAYERS, *OVERLAY_LAYERS):
        layer = getattr(layers, name)
        if layer is not None and not layer.path.exists():
            raise ConfigError(
                f"{where}: 'layers.{name}.path' = {layer.path} does not exist; fix the path "
                "(relative paths are read from the config file's folder)"
            )
    for name in ("township", "village"):
        layer = getattr(layers, name)
        if not layer.code_field or not layer.name_field:
            raise ConfigError(f"{where}: 'layers.{name}' needs both 'code_field' and 'name_field'")
    if layers.approvals is not None and not layers.approvals.ref_field:
        raise ConfigError(
            f"{where}: 'layers.approvals' needs 'ref_field' (the document number field)"
        )
    _check_layer_keys(layers, where)


def _check_run(run: RunConfig, where: str) -> None:
    """A scheduler address that looks like one, and at least one worker."""
    if run.scheduler is not None:
        check_scheduler_address(run.scheduler, f"{where}: 'run.scheduler'")
    if run.workers < 1:
        raise ConfigError(f"{where}: 'run.workers' = {run.workers} must be >= 1")


def _check_detect(
    d: DetectConfig, band_names: Sequence[str], resolution_m: float | None, where: str
) -> None:
    """The detect section against the configured bands and the target grid's resolution."""
    _check_detect_bands(d, band_names, where)
    _check_detect_threshold(d, where)
    _check_detect_cleanup(d, resolution_m, where)
    _check_detect_methods(d, where)


def _check_detect_bands(d: DetectConfig, band_names: Sequence[str], where: str) -> None:
    """Surface bands exist; screens and index methods find the bands they need."""
    if not surface_bands(band_names):
        raise ConfigError(
            f"{where}: every configured band ({', '.join(band_names)}) is an "
            f"atmospheric band ({', '.join(ATMOSPHERIC_BANDS)}), which the change methods do not "
            "use; configure the surface bands (blue, green, red, nir, ...) too"
        )
    if d.cloud_screen is True:
        check_bands(band_names, CLOUD_BANDS, f"{where}: 'detect.cloud_screen' = true")
    if d.moisture_screen is True:
        check_bands(band_names, MOISTURE_BANDS, f"{where}: 'detect.moisture_screen' = true")
        if not any(b in band_names for b in MOISTURE_VISIBLE):
            check_bands(band_names, ("red",), f"{where}: 'detect.moisture_screen' = true")
    for key in ("cloud_cirrus_ratio", "cloud_coastal_ratio", "moisture_ratio"):
        if not getattr(d, key) > 1:
            raise ConfigError(
                f"{where}: 'detect.{key}' = {getattr(d, key)} must be > 1 (a factor of change "
                "relative to the scene, e.g. 1.5)"
            )
    if d.context_contrast is not None and not d.context_contrast > 0:
        raise ConfigError(
            f"{where}: 'detect.context_contrast' = {d.context_contrast} must be > 0 (scene "
            "standard deviations, e.g. 0.5) or null (off)"
        )
    if d.method in ("index", "novelty") and not has_nir(band_names):
        # vegetation from the visible bands (pipeline.bands.vegetation_index)
        check_bands(
            band_names, VISIBLE_BANDS, f"{where}: 'detect.method' = {d.method!r} without nir"
        )


def _check_detect_threshold(d: DetectConfig, where: str) -> None:
    """The threshold value fits its kind and method; hysteresis, edge and score cuts in range."""
    if d.threshold == "fixed" and d.threshold_value is None:
        raise ConfigError(f"{where}: 'detect.threshold' = 'fixed' needs 'detect.threshold_value'")
    if d.threshold == "chi2" and d.threshold_value is not None and not 0 < d.threshold_value < 1:
        raise ConfigError(
            f"{where}: 'detect.threshold_value' = {d.threshold_value} must be a quantile in (0, 1) "
            "with threshold 'chi2'"
        )
    if d.threshold == "fixed" and d.threshold_value is not None and d.threshold_value <= 0:
        raise ConfigError(
            f"{where}: 'detect.threshold_value' = {d.threshold_value} must be > 0 with threshold "
            "'fixed': every score is >= 0, so a cut at or below 0 marks the whole scene changed"
        )
    if (
        d.method == "selftrain"
        and d.threshold == "fixed"
        and d.threshold_value is not None
        and d.threshold_value >= 1
    ):
        raise ConfigError(
            f"{where}: 'detect.threshold_value' = {d.threshold_value} must be below 1 with "
            "method 'selftrain' (its score is a probability of change; e.g. 0.6)"
        )
    if d.hysteresis_low is not None and not 0 < d.hysteresis_low < 1:
        raise ConfigError(
            f"{where}: 'detect.hysteresis_low' = {d.hysteresis_low} must be in (0, 1)"
        )
    if d.edge_ratio is not None and not 0 < d.edge_ratio < 1:
        raise ConfigError(
            f"{where}: 'detect.edge_ratio' = {d.edge_ratio} must be in (0, 1) or null"
        )
    if d.min_mean_score is not None and not 0 < d.min_mean_score <= 2:
        raise ConfigError(
            f"{where}: 'detect.min_mean_score' = {d.min_mean_score} must be in (0, 2]"
        )


def _check_detect_cleanup(d: DetectConfig, resolution_m: float | None, where: str) -> None:
    """Block size, smoothing, clean-up radii (at most ``MAX_RADIUS_PX`` pixels) and sampling."""
    if d.block_px < 64:
        raise ConfigError(f"{where}: 'detect.block_px' = {d.block_px} must be at least 64")
    if d.smooth_sigma_m is not None and not 0 <= d.smooth_sigma_m <= 100:
        raise ConfigError(
            f"{where}: 'detect.smooth_sigma_m' = {d.smooth_sigma_m} must be in [0, 100] metres "
            "or null (about one pixel, e.g. 10 at Sentinel-2 resolution)"
        )
    for key in ("opening_radius_m", "closing_radius_m", "min_area_m2"):
        if getattr(d, key) < 0:
            raise ConfigError(f"{where}: 'detect.{key}' = {getattr(d, key)} must be >= 0")
    if resolution_m is not None:  # else the imagery's, checked once the grid is known
        check_cleanup_radii(d, resolution_m, where)
    if d.sample_step < 1:
        raise ConfigError(f"{where}: 'detect.sample_step' = {d.sample_step} must be >= 1")


def check_cleanup_radii(d: DetectConfig, res: float, where: str) -> None:
    """The opening and closing radii are at most ``MAX_RADIUS_PX`` pixels of ``res`` metres."""
    for key in ("opening_radius_m", "closing_radius_m"):
        if getattr(d, key) > MAX_RADIUS_PX * res:
            raise ConfigError(
                f"{where}: 'detect.{key}' = {getattr(d, key)} m is {getattr(d, key) / res:.0f} "
                f"pixels at {res} m; expected at most {MAX_RADIUS_PX} pixels "
                f"({MAX_RADIUS_PX * res:g} m): the clean-up removes specks and fills pinholes"
            )


def _check_detect_methods(d: DetectConfig, where: str) -> None:
    """The novelty mixture's and the self-training quantiles' parameters."""
    if not 1 <= d.novelty_components <= 64:
        raise ConfigError(
            f"{where}: 'detect.novelty_components' = {d.novelty_components} must be in 1..64"
        )
    if not 0 <= d.novelty_min_weight < 1:
        raise ConfigError(
            f"{where}: 'detect.novelty_min_weight' = {d.novelty_min_weight} must be in [0, 1)"
        )
    if not 0 <= d.novelty_trim < 0.5:
        raise ConfigError(
            f"{where}: 'detect.novelty_trim' = {d.novelty_trim} must be in [0, 0.5) "
            "(share of the sample left out of the mixture fit; 0 = no trimming)"
        )
    if not 0 < d.selftrain_nochange_quantile < d.selftrain_change_quantile < 1:
        raise ConfigError(
            f"{where}: 'detect.selftrain_nochange_quantile' = {d.selftrain_nochange_quantile} "
            f"and 'detect.selftrain_change_quantile' = {d.selftrain_change_quantile} must "
            "satisfy 0 < no-change < change < 1 (e.g. 0.8 and 0.99)"
        )


def _check_classify(classify: ClassifyConfig, where: str) -> None:
    """The legal share is a share."""
    if not 0 < classify.legal_share <= 1:
        raise ConfigError(
            f"{where}: 'classify.legal_share' = {classify.legal_share} must be in (0, 1]"
        )


def _check_assign(assign: AssignConfig, where: str) -> None:
    """Every code pattern compiles as a regular expression."""
    for key in ("code_pattern", "township_code_pattern", "village_code_pattern"):
        pattern = getattr(assign, key)
        try:
            if pattern is not None:
                re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f"{where}: 'assign.{key}' = {pattern!r} is not a regular expression: {exc}"
            ) from exc


def _check_register(register: RegisterConfig, where: str) -> None:
    """The match overlap is a share."""
    if not 0 < register.match_overlap <= 1:
        raise ConfigError(
            f"{where}: 'register.match_overlap' = {register.match_overlap} must be in (0, 1]"
        )


def _check_learn(learn: LearnConfig, where: str) -> None:
    """At least 5 verdicts of each class; the low-confidence mark is a probability."""
    if learn.min_per_class < 5:
        raise ConfigError(
            f"{where}: 'learn.min_per_class' = {learn.min_per_class} must be >= 5 (a model "
            "validated on fewer verdicts of a class says nothing); the default is 20"
        )
    if not 0 <= learn.low_confidence <= 1:
        raise ConfigError(
            f"{where}: 'learn.low_confidence' = {learn.low_confidence} must be a probability "
            "in [0, 1]"
        )


def _check_field_returns(field_returns: FieldReturnsConfig, where: str) -> None:
    radius = field_returns.photo_radius_m
    if not radius >= 0:  # also NaN
        raise ConfigError(
            f"{where}: 'field_returns.photo_radius_m' = {radius} must be a distance in metres >= 0"
        )


def _check_report(report: ReportConfig, where: str) -> None:
    """Targets are shares."""
    for key in ("rect_rate_target", "illegal_ratio_target"):
        if not 0 <= getattr(report, key) <= 1:
            raise ConfigError(f"{where}: 'report.{key}' = {getattr(report, key)} must be in [0, 1]")
    amounts = {
        "land_price_per_mu": report.land_price_per_mu,
        "penalty_per_case": report.penalty_per_case,
        "urgent_basic_farmland_mu": report.urgent_basic_farmland_mu,
        "urgent_farmland_mu": report.urgent_farmland_mu,
        "reward.township": report.reward.township,
        "reward.village": report.reward.village,
    }
    for key, value in amounts.items():
        if value is not None and value < 0:
            raise ConfigError(f"{where}: 'report.{key}' = {value} must not be negative")
    if report.base_year and report.year and report.base_year > report.year:
        raise ConfigError(
            f"{where}: 'report.base_year' = {report.base_year} is after 'report.year' = "
            f"{report.year}; the stock runs from base_year up to the year before year"
        )
    if report.report_working_days < 0:
        raise ConfigError(f"{where}: 'report.report_working_days' must not be negative")
    both = set(report.extra_holidays) & set(report.extra_workdays)
    if both:
        raise ConfigError(
            f"{where}: {', '.join(sorted(map(str, both)))} in both 'report.extra_holidays' and "
            "'report.extra_workdays'; a day is either off or a working day"
        )


def _check_export(export: ExportConfig, where: str) -> None:
    """The export CRS is one pyproj knows."""
    import pyproj

    try:
        pyproj.CRS.from_user_input(export.crs)
    except pyproj.exceptions.CRSError as exc:
        raise ConfigError(f"{where}: 'export.crs' = {export.crs!r} is not a CRS: {exc}") from exc
