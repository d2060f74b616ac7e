"""The Danish bank calendar and the periods of SF6110 (sf6110.md "Periods and the cut-off").

- `udbetalingsdato(P)`: the last Danish bank day of month P (pensionsloven § 33).
- `fristdato(P)`: the 10th bank day before `udbetalingsdato(P)`.
- `cutoff(P)`: `fristdato(P)` + 1 day at 00:00 Europe/Copenhagen; a file received before it
  counts for P.
- `first_open_period(t)`: the earliest P whose cut-off is after t.

A period (udbetalingsperiode) is a calendar month written `YYYY-MM`.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import cache
from pathlib import Path

from zoneinfo import ZoneInfo

from dateutil.easter import easter  # a dependency of `holidays`

TZ = ZoneInfo("Europe/Copenhagen")

FRIST_BANK_DAYS = 10  # sf6110.md: the 10th bank day before udbetalingsdato
GREAT_PRAYER_DAY_LAST_YEAR = 2023  # store bededag was abolished as a holiday from 2024

_PERIODE = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")  # ASCII digits only


# --- periods --------------------------------------------------------------------------------


def parse_periode(periode: str) -> tuple[int, int]:
    """`YYYY-MM` -> (year, month); anything else is a ValueError."""
    match = _PERIODE.fullmatch(periode) if isinstance(periode, str) else None
    if match is None:
        raise ValueError(f"invalid periode {periode!r}: expected YYYY-MM, e.g. 2027-02")
    return int(match.group(1)), int(match.group(2))


def periode_of(day: dt.date) -> str:
    """The period a date (or a datetime's date) lies in."""
    return f"{day.year:04d}-{day.month:02d}"


def first_day(periode: str) -> dt.date:
    year, month = parse_periode(periode)
    return dt.date(year, month, 1)


def last_day(periode: str) -> dt.date:
    return first_day(next_periode(periode)) - dt.timedelta(days=1)


def next_periode(periode: str) -> str:
    year, month = parse_periode(periode)
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}"


def previous_periode(periode: str) -> str:
    year, month = parse_periode(periode)
    return f"{year - (month == 1):04d}-{(month - 2) % 12 + 1:02d}"


def periods_between(first: str, last: str) -> list[str]:
    """Every period from `first` to `last`, both included (empty when `last` is before `first`)."""
    parse_periode(last)
    periods: list[str] = []
    periode = first
    while periode <= last:  # `YYYY-MM` sorts as text in calendar order
        periods.append(periode)
        periode = next_periode(periode)
    return periods


# --- bank days ------------------------------------------------------------------------------


@cache
def bank_holidays(year: int) -> frozenset[dt.date]:
    """The weekdays and weekend days on which Danish banks are closed in `year`.

    sf6110.md: the public holidays come from the `holidays` library (its `public` category holds
    New Year's Day, Maundy Thursday, Good Friday, Easter Monday, Ascension Day, Whit Monday,
    Christmas Day, Boxing Day, and Great Prayer Day up to 2023); the bank-only days are added here.
    Its `optional` category is not used: it also holds 1 May, which is a bank day."""
    public = _denmark()(years=year, categories=("public",))
    closed = set(public)
    ascension_day = easter(year) + dt.timedelta(days=39)
    closed |= {
        ascension_day + dt.timedelta(days=1),  # the Friday after Ascension Day
        dt.date(year, 6, 5),  # Constitution Day
        dt.date(year, 12, 24),  # Christmas Eve
        dt.date(year, 12, 31),  # New Year's Eve
    }
    return frozenset(closed)


@cache
def _denmark() -> type:
    """The `holidays` library's Denmark, loaded from its own module when a date is first computed.
    `holidays.Denmark` (and any import of `holidays.countries.denmark`) runs the package
    `holidays.countries`, which imports all its 250 countries: 0.08 s of CPU and 250 files read
    in every command that computes a date (issue 11). Denmark's module needs none of them, so it
    is run alone; the class and its dates are the library's (tests/test_calendar.py compares them
    with `holidays.Denmark`). Where the library keeps it elsewhere, `holidays.Denmark` it is."""
    import importlib.util

    import holidays  # the package itself: its base class and helpers, no country

    module = Path(holidays.__file__).parent / "countries" / "denmark.py"
    spec = importlib.util.spec_from_file_location(f"{__name__}._holidays_denmark", module)
    if not module.is_file() or spec is None or spec.loader is None:
        return holidays.Denmark
    denmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(denmark)
    return denmark.Denmark


def is_bank_day(day: dt.date) -> bool:
    return day.weekday() < 5 and day not in bank_holidays(day.year)


def previous_bank_day(day: dt.date) -> dt.date:
    """The last bank day strictly before `day`."""
    day -= dt.timedelta(days=1)
    while not is_bank_day(day):
        day -= dt.timedelta(days=1)
    return day


# --- the SF6110 dates -----------------------------------------------------------------------


@cache
def udbetalingsdato(periode: str) -> dt.date:
    """The last Danish bank day of month P: social pension is paid in arrears (pensionsloven § 33)."""
    return previous_bank_day(last_day(periode) + dt.timedelta(days=1))


@cache
def fristdato(periode: str) -> dt.date:
    """The 10th bank day before `udbetalingsdato(P)`."""
    day = udbetalingsdato(periode)
    for _ in range(FRIST_BANK_DAYS):
        day = previous_bank_day(day)
    return day


def cutoff(periode: str) -> dt.datetime:
    """`fristdato(P)` + 1 day, 00:00 Europe/Copenhagen: a file received before this counts for P."""
    return dt.datetime.combine(fristdato(periode) + dt.timedelta(days=1), dt.time(0), tzinfo=TZ)


def first_open_period(t: dt.datetime) -> str:
    """The earliest P whose cut-off is after the instant `t` (sf6110.md, U06)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"first_open_period needs an aware instant, got the naive {t.isoformat()}")
    # The cut-off of P lies inside month P, so every period before the local month of t is closed.
    periode = previous_periode(periode_of(t.astimezone(TZ)))
    while cutoff(periode) <= t:
        periode = next_periode(periode)
    return periode
