"""Target grid: extent from overlapping epochs (any CRS), snapping, blocks."""

from __future__ import annotations

import pytest
from rasterio.windows import Window

from pipeline.config import AreaConfig
from pipeline.detection.target_grid import Footprint, blocks, target_grid
from pipeline.errors import InputDataError

UTM = "EPSG:32650"


def area(**kw) -> AreaConfig:
    return AreaConfig(
        name="t", county_code="130609", crs=UTM, resolution_m=kw.pop("res", 2.0), **kw
    )


def test_intersection_of_epochs_in_different_crs_snapped_outward():
    # epoch A in UTM, epoch B in WGS84 covering a larger area around it
    a = Footprint(UTM, (500001.3, 3999000.0, 501000.0, 4000000.7))
    b = Footprint("EPSG:4326", (116.9, 36.0, 117.1, 36.2))
    grid = target_grid(area(), [a, b])
    xmin, ymin, xmax, ymax = grid.bounds
    # A lies inside B, so the extent is A snapped outward to 2 m pixels
    assert (xmin, ymin, xmax, ymax) == (500000.0, 3999000.0, 501000.0, 4000002.0)
    assert grid.width == 500 and grid.height == 501
    assert grid.resolution == 2.0


def test_partial_overlap_is_the_intersection():
    a = Footprint(UTM, (500000.0, 3999000.0, 501000.0, 4000000.0))
    b = Footprint(UTM, (500500.0, 3998000.0, 502000.0, 3999500.0))
    assert target_grid(area(), [a, b]).bounds == (500500.0, 3999000.0, 501000.0, 3999500.0)


def test_bounds_in_config_win():
    a = Footprint(UTM, (0.0, 0.0, 10.0, 10.0))
    grid = target_grid(area(bounds=(500000.0, 3999990.0, 500021.0, 4000000.0)), [a])
    assert grid.bounds == (500000.0, 3999990.0, 500022.0, 4000000.0)
    assert grid.window_transform(Window(3, 2, 1, 1)).c == 500006.0


def test_non_overlapping_epochs_raise():
    a = Footprint(UTM, (500000.0, 3999000.0, 501000.0, 4000000.0))
    b = Footprint(UTM, (600000.0, 3999000.0, 601000.0, 4000000.0))
    with pytest.raises(InputDataError, match="do not overlap"):
        target_grid(area(), [a, b])


@pytest.mark.parametrize("block_px", [64, 100, 1000])
def test_blocks_cover_the_grid_exactly_once(block_px):
    a = Footprint(UTM, (500000.0, 3999000.0, 500500.0, 3999742.0))
    grid = target_grid(area(), [a])
    wins = blocks(grid, block_px)
    assert sum(w.width * w.height for w in wins) == grid.width * grid.height
    assert all(
        w.col_off + w.width <= grid.width and w.row_off + w.height <= grid.height for w in wins
    )
