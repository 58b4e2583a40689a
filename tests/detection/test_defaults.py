"""The default detect setting for the imagery at hand (pipeline.detection.defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import DetectConfig, parse_config
from pipeline.detection.defaults import band_set, profile, resolve_detect

RGB = ("blue", "green", "red")
RGBN = (*RGB, "nir")
S2 = ("coastal", *RGBN, "swir1", "swir2", "cirrus")


@pytest.mark.parametrize(
    ("bands", "expected"),
    [(RGB, "rgb"), (RGBN, "rgbn"), (S2, "multispectral"), (("red", "nir"), "rgbn")],
)
def test_band_set(bands, expected):
    assert band_set(bands) == expected


@pytest.mark.parametrize(
    ("bands", "res", "method"),
    [
        (RGB, 0.5, "cva"),  # aerial / commercial VHR
        (RGB, 2.0, "cva"),  # visible bands at 2 m
        (RGBN, 0.8, "novelty"),  # Gaofen-2
        (RGBN, 2.0, "novelty"),
        (S2, 10.0, "selftrain"),  # Sentinel-2
        (S2, 30.0, "selftrain"),  # Landsat
    ],
)
def test_auto_picks_a_method_for_every_band_set_and_resolution(bands, res, method):
    d = resolve_detect(DetectConfig(), bands, res)
    assert d.method == method
    assert d == resolve_detect(d, bands, res)  # resolving twice changes nothing


def test_auto_fills_the_profile():
    d = resolve_detect(DetectConfig(), RGBN, 2.0)
    for key, value in profile(RGBN, 2.0).items():
        assert getattr(d, key) == value


def test_keys_written_in_the_file_win_over_the_profile():
    # edge_ratio 0.5 is the dataclass default, but written in the file it stays
    d = DetectConfig(threshold_value=4.0, edge_ratio=0.5, given=frozenset({"edge_ratio"}))
    got = resolve_detect(d, S2, 10.0)
    assert got.method == "selftrain"
    assert got.threshold_value == 4.0  # set in code: differs from the default
    assert got.edge_ratio == 0.5  # the multispectral profile turns it off unless written
    assert resolve_detect(DetectConfig(), S2, 10.0).edge_ratio is None


def test_a_method_named_explicitly_uses_the_documented_defaults():
    d = DetectConfig(method="cva")
    assert resolve_detect(d, RGBN, 2.0) is d
    assert d.threshold == "otsu"


def test_the_config_file_records_which_detect_keys_were_written(tmp_path: Path):
    (tmp_path / "g.gpkg").touch()  # only its existence is checked here
    raw = {
        "area": {"name": "a", "county_code": "130609", "crs": "EPSG:4548", "resolution_m": 2.0},
        "imagery": {"epochs": {"2016": ["a/*.tif"], "2017": ["b/*.tif"]}, "bands": {"red": 1}},
        "layers": {
            "township": {"path": "g.gpkg", "code_field": "c", "name_field": "n"},
            "village": {"path": "g.gpkg", "code_field": "c", "name_field": "n"},
        },
        "detect": {"min_area_m2": 200, "hysteresis_low": 0.5},
    }
    cfg = parse_config(raw, base_dir=tmp_path)
    assert cfg.detect.method == "auto"
    assert cfg.detect.given == frozenset({"min_area_m2", "hysteresis_low"})
    assert resolve_detect(cfg.detect, RGBN, 2.0).hysteresis_low == 0.5
    for section in ({}, None):  # "detect:" with only comments under it is empty too
        empty = parse_config({**raw, "detect": section}, base_dir=tmp_path)
        assert empty.detect == DetectConfig()
    # which keys were written is part of the detect section's fingerprint
    assert cfg.section_hash("detect") != parse_config(
        {**raw, "detect": {"min_area_m2": 200, "hysteresis_low": 0.5, "edge_ratio": 0.5}},
        base_dir=tmp_path,
    ).section_hash("detect")
