"""Change type from both epochs' band means (pipeline.detection.change_type)."""

from __future__ import annotations

import numpy as np

from pipeline.detection.change_type import classify_change
from pipeline.schema import ChangeType
from tests.rasters import FACTORY, RED_TILE, ROOF, SOIL, VEGETATION
from tests.scenes import BANDS


def _classify(before, after, scene_before=VEGETATION, scene_after=VEGETATION):
    f = {b: np.array([v], float) for b, v in zip(BANDS, before)}
    t = {b: np.array([v], float) for b, v in zip(BANDS, after)}
    return classify_change(f, t, dict(zip(BANDS, scene_before)), dict(zip(BANDS, scene_after)))[0]


def test_roof_is_construction():
    assert _classify(VEGETATION, ROOF) == ChangeType.CONSTRUCTION


def test_blue_steel_roof_is_construction():
    assert _classify(VEGETATION, (2600, 2200, 1500, 1700)) == ChangeType.CONSTRUCTION


def test_fill_soil_is_bare():
    assert _classify(VEGETATION, SOIL) == ChangeType.EARTHWORKS


def test_vegetation_growth_is_other():
    assert _classify(SOIL, VEGETATION) == ChangeType.OTHER


def test_change_type_is_scale_free():
    # the same spectra as float reflectance (÷ 10000) give the same answers
    s = 1e-4
    scaled = lambda x: tuple(v * s for v in x)  # noqa: E731
    assert _classify(scaled(VEGETATION), scaled(ROOF), scaled(VEGETATION), scaled(VEGETATION)) == (
        ChangeType.CONSTRUCTION
    )


def test_change_type_without_all_bands_is_other():
    f = {"red": np.array([500.0]), "nir": np.array([3000.0])}
    t = {"red": np.array([2400.0]), "nir": np.array([2600.0])}
    assert classify_change(f, t, {"red": 1.0}, {"red": 1.0})[0] == ChangeType.OTHER


def test_red_tile_roof_is_construction_and_soil_is_not():
    assert _classify(VEGETATION, RED_TILE) == ChangeType.CONSTRUCTION
    assert _classify(VEGETATION, SOIL) == ChangeType.EARTHWORKS


def test_small_blue_steel_roof_with_crop_outline_is_construction():
    # outline pixels half crop raise a small steel roof's mean NDVI above 0.2 (not vegetation)
    mixed = tuple(0.75 * r + 0.25 * v for r, v in zip(FACTORY, VEGETATION))
    assert 0.2 < (mixed[3] - mixed[2]) / (mixed[3] + mixed[2]) < 0.3
    assert _classify(VEGETATION, mixed) == ChangeType.CONSTRUCTION
