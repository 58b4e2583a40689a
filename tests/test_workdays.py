"""Working days in mainland China: official holidays, make-up working days, local extras.

Expected dates were checked against the data of the installed ``chinesecalendar`` (1.11.0):
2024-10-01..07 are National Day days off, Sunday 2024-09-29 and Saturday 2024-10-12 are
make-up working days (调休).
"""

from __future__ import annotations

import datetime as dt
import logging

import chinese_calendar
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import workdays
from pipeline.errors import ConfigError
from pipeline.workdays import WorkCalendar, add_working_days, is_working_day

D = dt.date
LAST_COVERED = max(chinese_calendar.holidays).year
UNCOVERED = D(LAST_COVERED + 1, 1, 1)


@pytest.fixture
def fresh_warnings():
    """Forget which years were already warned about, before and after the test."""
    workdays._warned_years.clear()
    yield
    workdays._warned_years.clear()


def test_plain_week():
    """Monday + 3 working days is Thursday of the same week."""
    assert add_working_days(D(2024, 3, 4), 3) == D(2024, 3, 7)


def test_across_a_weekend():
    """Thursday + 3 working days skips Saturday and Sunday and lands on Tuesday."""
    assert add_working_days(D(2024, 3, 7), 3) == D(2024, 3, 12)


def test_zero_returns_start_and_negative_is_rejected():
    """n == 0 returns start itself, even on a day off; a negative n raises ValueError."""
    assert add_working_days(D(2024, 10, 1), 0) == D(2024, 10, 1)
    with pytest.raises(ValueError, match="-1"):
        add_working_days(D(2024, 10, 1), -1)


def test_across_national_day():
    """2024-09-30 + 3 working days skips the 10-01..10-07 holiday: 10-08, 10-09, 10-10."""
    assert not any(is_working_day(D(2024, 10, d)) for d in range(1, 8))
    assert add_working_days(D(2024, 9, 30), 3) == D(2024, 10, 10)


def test_make_up_working_day_counts():
    """Sunday 2024-09-29 was a make-up working day: Friday 2024-09-27 + 1 is that Sunday."""
    assert add_working_days(D(2024, 9, 27), 1) == D(2024, 9, 29)


def test_local_extra_holiday_is_skipped():
    """A local extra day off on Tuesday pushes Monday + 3 from Thursday to Friday."""
    calendar = WorkCalendar.from_config(extra_holidays=["2024-03-05"])
    assert not is_working_day(D(2024, 3, 5), calendar)
    assert add_working_days(D(2024, 3, 4), 3, calendar) == D(2024, 3, 8)


def test_local_extra_workday_counts():
    """A local make-up working Saturday makes Friday + 1 that Saturday."""
    calendar = WorkCalendar.from_config(extra_workdays=[D(2024, 3, 9)])
    assert add_working_days(D(2024, 3, 8), 1, calendar) == D(2024, 3, 9)


def test_local_extras_win_over_the_official_calendar():
    """A local day off beats an official working day, a local working day an official holiday."""
    calendar = WorkCalendar.from_config(["2024-09-29"], ["2024-10-02"])
    assert not is_working_day(D(2024, 9, 29), calendar)
    assert is_working_day(D(2024, 10, 2), calendar)


def test_bad_iso_string_is_a_config_error():
    """A string that is not an ISO date names the list, the value and the expected form."""
    with pytest.raises(ConfigError, match=r"extra_holidays holds '2024/10/01'.*YYYY-MM-DD"):
        WorkCalendar.from_config(extra_holidays=["2024/10/01"])


def test_date_in_both_lists_is_a_config_error():
    """A date listed as both an extra day off and an extra working day is rejected."""
    with pytest.raises(ConfigError, match="2024-10-08 listed both"):
        WorkCalendar.from_config(["2024-10-08"], [D(2024, 10, 8)])


def test_uncovered_year_falls_back_to_weekdays_and_warns_once(caplog, fresh_warnings):
    """A year past the package's data counts Monday-Friday and logs one warning for it."""
    start = UNCOVERED + dt.timedelta(days=(7 - UNCOVERED.weekday()) % 7)  # first Monday
    with caplog.at_level(logging.WARNING, logger="pipeline.workdays"):
        assert add_working_days(start, 3) == start + dt.timedelta(days=3)
        assert add_working_days(start, 5) == start + dt.timedelta(days=7)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(start.year) in warnings[0] and "upgrade" in warnings[0]


@settings(max_examples=200, deadline=None)
@given(
    start=st.dates(D(2004, 1, 1), D(LAST_COVERED + 2, 12, 31)),
    n=st.integers(0, 30),
    holidays=st.sets(st.dates(D(2004, 1, 1), D(LAST_COVERED + 2, 12, 31)), max_size=20),
)
def test_result_is_the_nth_working_day_after_start(start, n, holidays):
    """The result is a working day after start with exactly n working days in (start, result]."""
    calendar = WorkCalendar(extra_holidays=frozenset(holidays))
    result = add_working_days(start, n, calendar)
    between = [start + dt.timedelta(days=i) for i in range(1, (result - start).days + 1)]
    assert sum(is_working_day(d, calendar) for d in between) == n
    if n:
        assert result > start
        assert is_working_day(result, calendar)
    else:
        assert result == start
