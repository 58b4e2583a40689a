"""Epoch labels as periods: the four forms, the periods a label fits in, and their order."""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline.epochs import epoch_in, epoch_later, epoch_period, epoch_start, epoch_year


@pytest.mark.parametrize(
    ("label", "start", "month", "quarter", "year"),
    [
        ("2017", dt.date(2017, 1, 1), None, None, "2017"),
        ("2017Q2", dt.date(2017, 4, 1), None, "2017Q2", "2017"),
        ("2017-q3", dt.date(2017, 7, 1), None, "2017Q3", "2017"),
        ("2017-05", dt.date(2017, 5, 1), "2017-05", "2017Q2", "2017"),
        ("2017-05-14", dt.date(2017, 5, 14), "2017-05", "2017Q2", "2017"),
    ],
)
def test_a_label_fits_in_the_periods_its_resolution_allows(label, start, month, quarter, year):
    assert epoch_start(label) == start
    assert (epoch_in(label, "M"), epoch_in(label, "Q"), epoch_in(label, "Y")) == (
        month,
        quarter,
        year,
    )
    assert epoch_year(label) == 2017


@pytest.mark.parametrize("label", ["spring", "2017-13", "2017-02-30", "2017Q5", "17"])
def test_other_labels_have_no_period(label):
    assert epoch_period(label) is None and epoch_start(label) is None


def test_order_by_start_then_end_and_text_without_periods():
    assert epoch_later("2017-05", "2017-04")
    assert epoch_later("2017", "2017-01")  # same start, the year ends later
    assert not epoch_later("2017Q2", "2017-05")  # April starts before May
    assert epoch_later("2017", "2016-12-31")
    assert epoch_later("b", "a")  # no period: as text
