"""Working days in mainland China, for deadlines such as "report within 3 working days".

Pure functions, no I/O and no network: the official calendar is the data shipped inside the
installed ``chinesecalendar`` package (import name :mod:`chinese_calendar`).

Rules, in order of precedence, for whether a day is a working day:

1. local extras from the configuration win: a day in ``extra_holidays`` is a day off, a day
   in ``extra_workdays`` (a local make-up working day, 调休) is a working day;
2. otherwise, for a year the installed ``chinesecalendar`` covers, its answer: official
   holidays are days off, official make-up working days (调休, often a Saturday or Sunday)
   are working days, and other days follow the week (Monday–Friday work);
3. for a year it does not cover, Monday–Friday are working days; one warning per year is
   logged, since that year's official holidays are unknown (upgrade ``chinesecalendar``
   or list the days in the configuration).

:func:`add_working_days` counts forward from the day after ``start``: a report due 3
working days after Monday 2024-09-30 is due Thursday 2024-10-10 (National Day week off).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import chinese_calendar

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

DateLike = dt.date | str
"""A date, or its ISO 8601 text (``"2024-10-01"``)."""

_warned_years: set[int] = set()
_warned_lock = threading.Lock()


@dataclass(frozen=True)
class WorkCalendar:
    """Local exceptions to the official calendar of mainland China.

    Attributes
    ----------
    extra_holidays : frozenset of datetime.date
        Extra days off (a local holiday), even on a weekday or official working day.
    extra_workdays : frozenset of datetime.date
        Extra working days (a local make-up working day, 调休), even on a weekend or holiday.
    """

    extra_holidays: frozenset[dt.date] = frozenset()
    extra_workdays: frozenset[dt.date] = frozenset()

    @classmethod
    def from_config(
        cls, extra_holidays: Iterable[DateLike] = (), extra_workdays: Iterable[DateLike] = ()
    ) -> WorkCalendar:
        """Build a calendar from configuration values.

        Parameters
        ----------
        extra_holidays, extra_workdays : iterable of datetime.date or str
            Dates, or ISO 8601 date strings such as ``"2024-10-01"``.

        Returns
        -------
        WorkCalendar

        Raises
        ------
        ConfigError
            A value is not a date nor an ISO date string, or a date is in both lists.
        """
        holidays = frozenset(_to_date(v, "extra_holidays") for v in extra_holidays)
        workdays = frozenset(_to_date(v, "extra_workdays") for v in extra_workdays)
        both = sorted(holidays & workdays)
        if both:
            raise ConfigError(
                f"{', '.join(d.isoformat() for d in both)} listed both in extra_holidays and "
                "in extra_workdays; expected each date in at most one of the two lists. "
                "Remove it from the list where it does not belong."
            )
        return cls(holidays, workdays)


OFFICIAL = WorkCalendar()
"""The official calendar alone, without local extras."""


def _to_date(value: object, key: str) -> dt.date:
    """One configured date: a ``datetime.date`` (a datetime loses its time) or ISO text."""
    if isinstance(value, dt.date):
        return _as_date(value)
    try:
        return dt.date.fromisoformat(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(
            f"{key} holds {value!r}, expected an ISO date such as '2024-10-01'. "
            "Write the date as YYYY-MM-DD."
        ) from None


def _as_date(day: dt.date) -> dt.date:
    """``day`` as a plain date (a datetime loses its time, so that set look-ups match)."""
    return day.date() if isinstance(day, dt.datetime) else day


def is_working_day(day: dt.date, calendar: WorkCalendar = OFFICIAL) -> bool:
    """Whether ``day`` is a working day in mainland China (rules in the module docstring).

    Parameters
    ----------
    day : datetime.date
        The day (a datetime counts as its date).
    calendar : WorkCalendar, optional
        Local extra holidays and working days; none by default.

    Returns
    -------
    bool
    """
    day = _as_date(day)
    if day in calendar.extra_holidays:
        return False
    if day in calendar.extra_workdays:
        return True
    try:
        return chinese_calendar.is_workday(day)
    except NotImplementedError:
        _warn_year_unknown(day.year)
        return day.weekday() < 5


def _warn_year_unknown(year: int) -> None:
    """Log, once per year and process, that ``year``'s official holidays are unknown."""
    with _warned_lock:
        if year in _warned_years:
            return
        _warned_years.add(year)
    log.warning(
        "official holidays and make-up working days (调休) of %d are unknown to the installed "
        "chinesecalendar %s: counting Monday to Friday as working days in %d. To fix, upgrade "
        "it (pip install -U chinesecalendar) or list that year's days off and make-up working "
        "days in the configuration (extra_holidays, extra_workdays).",
        year,
        chinese_calendar.__version__,
        year,
    )


def add_working_days(start: dt.date, n: int, calendar: WorkCalendar = OFFICIAL) -> dt.date:
    """The ``n``-th working day after ``start`` (``start`` itself is not counted).

    Parameters
    ----------
    start : datetime.date
        The day counting starts from, e.g. the day a patch was notified.
    n : int
        Number of working days, ``n >= 0``; 0 returns ``start`` unchanged.
    calendar : WorkCalendar, optional
        Local extra holidays and working days; none by default.

    Returns
    -------
    datetime.date

    Raises
    ------
    ValueError
        ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n is {n}, expected a number of working days >= 0")
    day = _as_date(start)
    while n:
        day += dt.timedelta(days=1)
        if is_working_day(day, calendar):
            n -= 1
    return day
