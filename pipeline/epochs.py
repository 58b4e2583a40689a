"""Epoch labels as periods of time: ``2017``, ``2017Q2``, ``2017-05`` or ``2017-05-14``.

An epoch label names when the later image of a pair was taken, at the resolution the district
works at: a year, a quarter, a month or a day. Labels are the configuration's keys
(``imagery.epochs``) and the registry's ``epoch_from`` / ``epoch_to`` / ``first_seen`` /
``last_seen``; patch ids take their year from the first four characters.

The report counts cases per month, quarter and year of the epoch. A label knows the periods
it fits in: ``2017-05`` is in 2017-05, 2017Q2 and 2017; ``2017Q2`` in 2017Q2 and 2017 but no
single month; ``2017`` only in the year. Each table counts a case at the finest resolution
its label allows, and never invents a month for a year label.

Any other label (``before``, ``spring``) is still a valid epoch: it has no period, sorts as
text and is left out of the per-period tables (the report says how many).
"""

from __future__ import annotations

import datetime as dt
import re

import pandas as pd

_FORMS = (
    (re.compile(r"^(\d{4})$"), "Y"),
    (re.compile(r"^(\d{4})-?[Qq]([1-4])$"), "Q"),
    (re.compile(r"^(\d{4})-(\d{2})$"), "M"),
    (re.compile(r"^(\d{4})-(\d{2})-(\d{2})$"), "D"),
)


def epoch_period(label: object) -> pd.Period | None:
    """The period an epoch label names (frequency ``Y``, ``Q``, ``M`` or ``D``); None when
    the label is none of the four forms or names no real month or day."""
    text = str(label).strip()
    for pattern, freq in _FORMS:
        m = pattern.match(text)
        if not m:
            continue
        parts = [int(g) for g in m.groups()]
        try:
            if freq == "Y":
                return pd.Period(year=parts[0], freq="Y")
            if freq == "Q":
                return pd.Period(year=parts[0], quarter=parts[1], freq="Q")
            if freq == "M":
                return pd.Period(dt.date(parts[0], parts[1], 1), freq="M")
            return pd.Period(dt.date(*parts), freq="D")
        except ValueError:
            return None
    return None


def epoch_start(label: object) -> dt.date | None:
    """The first day of the epoch's period (a stage date may not be earlier); None when the
    label has no period."""
    period = epoch_period(label)
    return None if period is None else period.start_time.date()


def epoch_in(label: object, freq: str) -> str | None:
    """The ``freq`` period (``"M"``, ``"Q"`` or ``"Y"``) holding the whole epoch, as text
    (``2017-05``, ``2017Q2``, ``2017``); None when the label is coarser or has no period."""
    period = epoch_period(label)
    if period is None:
        return None
    rank = {"D": 0, "M": 1, "Q": 2, "Y": 3}
    own = period.freqstr[0]
    if rank[own] > rank[freq]:
        return None
    return str(period.asfreq(freq))


def epoch_year(label: object) -> int | None:
    """The year of an epoch label (its first four digits), None without one."""
    m = re.match(r"^(\d{4})", str(label).strip())
    return int(m.group(1)) if m else None


def epoch_later(a: object, b: object) -> bool:
    """True when epoch ``a`` comes after epoch ``b``.

    Two labels with periods compare by their start, then by their end (``2017-01`` before
    ``2017``, which ends later); otherwise as text (the order of ``2016`` < ``2017``).
    """
    pa, pb = epoch_period(a), epoch_period(b)
    if pa is None or pb is None:
        return str(a) > str(b)
    return (pa.start_time, pa.end_time) > (pb.start_time, pb.end_time)
