"""Config validation: every bad input names the key, the value and what is allowed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config, parse_config, to_plain
from pipeline.errors import ConfigError
from tests.samples import ROOT


def _minimal(tmp_path: Path) -> dict:
    """A valid config mapping whose layer paths exist in tmp_path."""
    (tmp_path / "grids.gpkg").write_bytes(b"")
    return {
        "area": {"name": "测试区", "county_code": "130609", "crs": "EPSG:4548", "resolution_m": 2},
        "imagery": {
            "epochs": {2016: ["a/*.tif"], "2017": "b/*.tif"},
            "bands": {"blue": 1, "green": 2, "red": 3, "nir": 4},
        },
        "layers": {
            "township": {
                "path": "grids.gpkg",
                "layer": "township",
                "code_field": "code",
                "name_field": "name",
            },
            "village": {
                "path": "grids.gpkg",
                "layer": "village",
                "code_field": "code",
                "name_field": "name",
            },
        },
    }


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def test_minimal_config_gets_defaults_and_resolves_paths(tmp_path):
    cfg = load_config(_write(tmp_path, _minimal(tmp_path)))
    # unquoted YAML 2016 is an int: epoch labels are text
    assert list(cfg.imagery.epochs) == ["2016", "2017"]
    assert cfg.imagery.epochs["2017"] == ("b/*.tif",)  # a single glob becomes a list
    assert cfg.imagery.pairs == [("2016", "2017")]
    assert cfg.layers.village.path == (tmp_path / "grids.gpkg").resolve()
    assert cfg.workspace == (tmp_path / "out").resolve()
    assert cfg.detect.min_area_m2 == 200 and cfg.report.rect_rate_target == 0.85
    assert cfg.assign.code_pattern is None
    assert cfg.assign.township_pattern == r"^\d{9}(?:000)?$"  # GB/T 10114, or padded to 12
    assert cfg.assign.village_pattern == r"^\d{12}$"
    assert cfg.layers.village.encoding is None and cfg.layers.village.codes is None


def test_config_is_frozen(tmp_path):
    cfg = load_config(_write(tmp_path, _minimal(tmp_path)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.detect.min_area_m2 = 1  # type: ignore[misc]


def test_sample_config_loads():
    """The bundled config.yaml parses (its layer files may not be generated yet)."""
    raw = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    assert raw["area"]["county_code"] == "130609"
    if (ROOT / "sample" / "approvals.gpkg").exists():
        cfg = load_config(ROOT / "config.yaml")
        assert cfg.area.crs == "EPSG:4548"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["detect"].update(threshhold="otsu"),
            "unknown key 'detect.threshhold'; did you mean 'threshold'?",
        ),
        (lambda r: r.update(worksapce="out"), "did you mean 'workspace'?"),
        (
            lambda r: r["detect"].update(method="cvx"),
            "'detect.method' = 'cvx' is not allowed; did you mean 'cva'?",
        ),
        (
            lambda r: r["detect"].update(min_area_m2="big"),
            "'detect.min_area_m2' = 'big' is not valid; expected a number",
        ),
        (lambda r: r["area"].update(county_code=130609), "codes must be quoted text"),
        (lambda r: r["area"].update(county_code="13069"), "'area.county_code' = '13069'"),
        (lambda r: r["area"].update(crs="EPSG:4326"), "not a projected CRS in metres"),
        (lambda r: r["area"].update(crs="EPSG:999999"), "not a CRS pyproj knows"),
        (lambda r: r["area"].pop("crs"), "missing required key 'area.crs'"),
        (lambda r: r["imagery"]["epochs"].pop("2017"), "at least two are needed"),
        (lambda r: r["imagery"].update(band_files={"red": "*_B04.tif"}), "give exactly one of"),
        (lambda r: r["layers"]["village"].update(path="nope.gpkg"), "'layers.village.path'"),
        (lambda r: r["detect"].update(threshold="fixed"), "needs 'detect.threshold_value'"),
        (
            lambda r: r["report"].update(rect_rate_target=85),
            "'report.rect_rate_target' = 85.0 must be in [0, 1]",
        ),
        (lambda r: r["assign"].update(mode="largest"), "(allowed: majority, split)"),
        (lambda r: r["detect"].update(novelty_trim=0.7), "'detect.novelty_trim' = 0.7"),
        (
            lambda r: r["assign"].update(strict_grid="yes"),
            "'assign.strict_grid' = 'yes' is not valid",
        ),
        (
            lambda r: r["detect"].update(method="novelty", novelty_components=0),
            "novelty_components",
        ),
        (
            lambda r: r["run"].update(workers=True),
            "'run.workers' = True is not valid; expected an integer",
        ),
        (
            lambda r: r["detect"].update(threshold="fixed", threshold_value=0),
            "'detect.threshold_value' = 0.0 must be > 0 with threshold 'fixed'",
        ),
        (
            lambda r: r["detect"].update(threshold="fixed", threshold_value=-3),
            "marks the whole scene changed",
        ),
        (
            lambda r: r["detect"].update(method="selftrain", threshold="fixed", threshold_value=6),
            "must be below 1 with method 'selftrain'",
        ),
        (
            lambda r: r["detect"].update(opening_radius_m=1e6),
            "'detect.opening_radius_m' = 1000000.0 m is",
        ),
        (
            lambda r: (
                r["imagery"]["bands"].pop("nir"),
                r["imagery"]["bands"].pop("blue"),
                r["detect"].update(method="index"),
            ),
            "'detect.method' = 'index' without nir needs the band(s) blue",
        ),
        (
            lambda r: r["detect"].update(cloud_screen=True),
            "'detect.cloud_screen' = true needs the band(s) coastal, cirrus",
        ),
        (
            lambda r: r["detect"].update(cloud_screen="sometimes"),
            "'detect.cloud_screen' = 'sometimes' is not valid; expected true/false or one of "
            "'auto'",
        ),
        (
            lambda r: r["imagery"].update(offset={"2030": -1000}),
            "'imagery.offset.2030' names an epoch that is not in 'imagery.epochs' (2016, 2017)",
        ),
        (
            lambda r: r["detect"].update(moisture_screen=True),
            "'detect.moisture_screen' = true needs the band(s) swir1",
        ),
        (
            lambda r: r["detect"].update(moisture_ratio=0.5),
            "'detect.moisture_ratio' = 0.5 must be > 1",
        ),
        (
            lambda r: r["detect"].update(cloud_cirrus_ratio=1),
            "'detect.cloud_cirrus_ratio' = 1.0 must be > 1",
        ),
        (
            lambda r: r["detect"].update(context_contrast=0),
            "'detect.context_contrast' = 0.0 must be > 0",
        ),
        (
            lambda r: r["imagery"].update(bands={"coastal": 1, "cirrus": 10}),
            "every configured band (cirrus, coastal) is an atmospheric band",
        ),
        (
            lambda r: r["run"].update(scheduler="localhost"),
            "'run.scheduler' = 'localhost' is not a Dask scheduler address; expected "
            "protocol://host:port",
        ),
        (
            lambda r: r["assign"].update(township_code_pattern="^(\\d{9}$"),
            "'assign.township_code_pattern' = '^(\\\\d{9}$' is not a regular expression",
        ),
        (
            lambda r: r["layers"]["village"].update(encoding="GKB"),
            "'layers.village.encoding' = 'GKB' is not a text encoding Python knows; expected "
            "e.g. GBK",
        ),
        (
            lambda r: r["layers"].update(farmland={"path": "grids.gpkg", "code_field": "DLBM"}),
            "'layers.farmland.code_field' = 'DLBM' is set without 'codes', so it would select "
            "nothing; list the codes to keep; for the 耕地 parcels of a 三调 DLTB layer: "
            'codes: ["0101", "0102", "0103"]',
        ),
        (
            lambda r: r["layers"].update(farmland={"path": "grids.gpkg", "codes": ["0101"]}),
            "'layers.farmland.codes' needs 'code_field'",
        ),
        (
            lambda r: r["layers"].update(
                farmland={"path": "grids.gpkg", "code_field": "DLBM", "codes": [101]}
            ),
            "'layers.farmland.codes[0]' = 101 is a number; codes must be quoted text",
        ),
        (
            lambda r: r["layers"]["township"].update(codes=["0101"]),
            "'layers.township.codes' is not allowed",
        ),
    ],
)
def test_bad_values_name_key_value_and_allowed(tmp_path, mutate, expected):
    """Each bad value is refused at load time with the key, the value and what is allowed."""
    raw = _minimal(tmp_path)
    raw.update(detect={}, report={}, assign={}, run={})
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, raw))
    assert expected in str(err.value)
    assert str(tmp_path / "config.yaml") in str(err.value)  # the message names the file
    assert isinstance(err.value, ValueError)  # catchable as the builtin it specialises


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("area: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_hash_changes_with_parameters(tmp_path):
    raw = _minimal(tmp_path)
    a = parse_config(raw, base_dir=tmp_path)
    raw["detect"] = {"min_area_m2": 400}
    b = parse_config(raw, base_dir=tmp_path)
    assert a.section_hash("detect") != b.section_hash("detect")
    assert a.section_hash("area") == b.section_hash("area")
    assert to_plain(b)["detect"]["min_area_m2"] == 400.0


def test_paths_expand_environment_variables(tmp_path, monkeypatch):
    # ${NAME}, $NAME and ${NAME:-default} in paths and epoch globs: one config for machines
    # that keep the data in different places
    raw = _minimal(tmp_path)
    monkeypatch.setenv("LW_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("LW_UNSET", raising=False)
    raw["imagery"]["epochs"] = {"2016": ["${LW_DATA}/a/*.tif"], "2017": "$LW_DATA/b/*.tif"}
    raw["layers"]["village"]["path"] = "${LW_UNSET:-grids.gpkg}"
    raw["workspace"] = "${LW_DATA}/out"
    cfg = load_config(_write(tmp_path, raw))
    assert cfg.imagery.epochs == {
        "2016": (f"{tmp_path}/data/a/*.tif",),
        "2017": (f"{tmp_path}/data/b/*.tif",),
    }
    assert cfg.layers.village.path == tmp_path / "grids.gpkg"
    assert cfg.workspace == tmp_path / "data" / "out"


def test_unset_environment_variable_is_a_config_error(tmp_path, monkeypatch):
    raw = _minimal(tmp_path)
    monkeypatch.delenv("LW_UNSET", raising=False)
    raw["imagery"]["epochs"]["2016"] = ["${LW_UNSET}/a/*.tif"]
    with pytest.raises(ConfigError, match=r"imagery\.epochs\.2016.*\$LW_UNSET.*not set"):
        load_config(_write(tmp_path, raw))


def test_offset_per_epoch_or_for_all(tmp_path):
    """``imagery.offset``: one number for every epoch, or per epoch label (unquoted YAML
    years are labels too)."""
    raw = _minimal(tmp_path)
    cfg = load_config(_write(tmp_path, raw))
    assert cfg.imagery.offset_for("2016") == 0.0
    raw["imagery"]["offset"] = {2017: -1000}
    cfg = load_config(_write(tmp_path, raw))
    assert (cfg.imagery.offset_for("2016"), cfg.imagery.offset_for("2017")) == (0.0, -1000.0)
    raw["imagery"]["offset"] = -1000
    cfg = load_config(_write(tmp_path, raw))
    assert cfg.imagery.offset_for("2016") == cfg.imagery.offset_for("2017") == -1000.0


def test_code_pattern_when_set_applies_to_both_levels(tmp_path):
    """``assign.code_pattern`` (the French example's 5-digit INSEE codes) replaces both the
    township and the village pattern; without it each level has its own default."""
    raw = _minimal(tmp_path)
    raw["assign"] = {"code_pattern": r"^\d{5}$"}
    cfg = load_config(_write(tmp_path, raw))
    assert cfg.assign.township_pattern == cfg.assign.village_pattern == r"^\d{5}$"
    raw["assign"] = {"township_code_pattern": r"^\d{9}$"}
    cfg = load_config(_write(tmp_path, raw))
    assert (cfg.assign.township_pattern, cfg.assign.village_pattern) == (r"^\d{9}$", r"^\d{12}$")


def test_farmland_codes_and_layer_encoding_are_read(tmp_path):
    """The 三调 selection and a layer's encoding come through as text, shown by ``to_plain``."""
    raw = _minimal(tmp_path)
    raw["layers"]["farmland"] = {
        "path": "grids.gpkg",
        "code_field": "DLBM",
        "codes": ["0101", "0102", "0103"],
        "encoding": "GBK",
    }
    cfg = load_config(_write(tmp_path, raw))
    assert cfg.layers.farmland.codes == ("0101", "0102", "0103")
    assert cfg.layers.farmland.encoding == "GBK"
    assert to_plain(cfg)["layers"]["farmland"]["codes"] == ["0101", "0102", "0103"]
