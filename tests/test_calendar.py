"""The bank calendar and the SF6110 periods (sf6110.md "Periods and the cut-off")."""

from __future__ import annotations

import datetime as dt

import holidays
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.calendar import (
    TZ,
    cutoff,
    first_open_period,
    fristdato,
    is_bank_day,
    next_periode,
    parse_periode,
    periode_of,
    periods_between,
    previous_periode,
    udbetalingsdato,
)

UTC = dt.timezone.utc


# --- the spec's check values ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("periode", "expected"),
    [("2026-12", "2026-12-30"), ("2027-01", "2027-01-29"), ("2027-03", "2027-03-31"), ("2028-04", "2028-04-28")],
)
def test_udbetalingsdato_check_values(periode, expected):
    assert udbetalingsdato(periode) == dt.date.fromisoformat(expected)


@pytest.mark.parametrize(
    ("periode", "expected"),
    [("2026-05", "2026-05-12"), ("2027-03", "2027-03-12"), ("2027-12", "2027-12-15"), ("2028-04", "2028-04-11")],
)
def test_fristdato_check_values(periode, expected):
    assert fristdato(periode) == dt.date.fromisoformat(expected)


# --- bank days ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "day",
    [
        "2027-01-01",  # New Year's Day (Friday)
        "2027-03-25",  # Maundy Thursday (Easter Sunday 2027-03-28)
        "2027-03-26",  # Good Friday
        "2027-03-29",  # Easter Monday
        "2027-05-06",  # Ascension Day
        "2027-05-07",  # the Friday after Ascension Day: bank-only
        "2027-05-17",  # Whit Monday
        "2026-06-05",  # Constitution Day (Friday): bank-only
        "2026-12-24",  # Christmas Eve (Thursday): bank-only
        "2026-12-25",  # Christmas Day
        "2028-12-26",  # Boxing Day (Tuesday)
        "2026-12-31",  # New Year's Eve (Thursday): bank-only
        "2023-05-05",  # Great Prayer Day, still a holiday in 2023
        "2022-05-13",  # Great Prayer Day 2022
        "2027-01-02",  # a Saturday
        "2027-01-03",  # a Sunday
    ],
)
def test_not_a_bank_day(day):
    assert not is_bank_day(dt.date.fromisoformat(day))


@pytest.mark.parametrize(
    "day",
    [
        "2024-04-26",  # what would have been Great Prayer Day: abolished from 2024
        "2027-04-23",  # likewise in 2027
        "2026-05-01",  # 1 May is not a bank holiday
        "2027-03-24",  # the Wednesday before Easter
        "2027-03-30",  # the Tuesday after Easter Monday
        "2026-12-23",
        "2026-12-30",
        "2027-06-04",  # Friday before Constitution Day on a Saturday
        "2027-06-07",
    ],
)
def test_a_bank_day(day):
    assert is_bank_day(dt.date.fromisoformat(day))


def test_holidays_library_has_great_prayer_day_only_until_2023():
    # The calendar relies on this: if a release of `holidays` changes it, this test says so.
    names_2023 = holidays.Denmark(years=2023, categories=("public",)).values()
    names_2024 = holidays.Denmark(years=2024, categories=("public",)).values()
    assert sum("Prayer" in n or "bededag" in n.lower() for n in names_2023) == 1
    assert not any("Prayer" in n or "bededag" in n.lower() for n in names_2024)


def test_easter_in_march_and_in_april_move_the_dates():
    # 2027: Easter Sunday 28 March -> Maundy Thursday and Good Friday are the 25th and 26th, so
    # udbetalingsdato 2027-03 is still the 31st, and Easter Monday 29 March is skipped counting back.
    assert fristdato("2027-03") == dt.date(2027, 3, 12)
    # 2028: Easter Sunday 16 April; counting 10 bank days back from 28 April skips Easter Monday
    # (17 April) and lands on 11 April.
    assert fristdato("2028-04") == dt.date(2028, 4, 11)


def test_christmas_and_new_years_eve_move_udbetalingsdato():
    # 2027-12-31 is a Friday but New Year's Eve: the 30th.
    assert udbetalingsdato("2027-12") == dt.date(2027, 12, 30)
    # 2022-12: the 31st is a Saturday; the 30th is a Friday.
    assert udbetalingsdato("2022-12") == dt.date(2022, 12, 30)


def test_great_prayer_day_counts_only_until_2023():
    # 2022-05: udbetalingsdato Tuesday 31 May; back over Ascension (26th) and the Friday after
    # (27th): 13 May would be the 10th bank day but is Great Prayer Day, so the 12th.
    assert udbetalingsdato("2022-05") == dt.date(2022, 5, 31)
    assert fristdato("2022-05") == dt.date(2022, 5, 12)
    # 2024-04: udbetalingsdato Tuesday 30 April; Friday 26 April (once Great Prayer Day) now
    # counts, so the 10th bank day back is the 16th, not the 15th.
    assert udbetalingsdato("2024-04") == dt.date(2024, 4, 30)
    assert fristdato("2024-04") == dt.date(2024, 4, 16)


def test_udbetalingsdato_and_fristdato_are_bank_days_in_their_month():
    for periode in periods_between("2022-01", "2031-12"):
        paid, frist = udbetalingsdato(periode), fristdato(periode)
        assert is_bank_day(paid) and is_bank_day(frist)
        assert periode_of(paid) == periode == periode_of(frist)
        assert sum(is_bank_day(paid - dt.timedelta(days=n)) for n in range(1, (paid - frist).days + 1)) == 10


# --- cut-off and the first open period ------------------------------------------------------


def test_cutoff_is_midnight_copenhagen_after_fristdato():
    assert cutoff("2027-03") == dt.datetime(2027, 3, 13, 0, 0, tzinfo=TZ)
    assert cutoff("2027-03").utcoffset() == dt.timedelta(hours=1)  # CET
    assert cutoff("2027-06").utcoffset() == dt.timedelta(hours=2)  # CEST
    assert cutoff("2027-03").astimezone(UTC) == dt.datetime(2027, 3, 12, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize("periode", ["2027-03", "2027-06", "2027-10", "2027-12", "2028-04"])
@pytest.mark.parametrize("just_before", [dt.timedelta(microseconds=1), dt.timedelta(seconds=1)])
def test_cutoff_boundary(periode, just_before):
    at = cutoff(periode)
    assert first_open_period(at - just_before) == periode
    assert first_open_period(at) == next_periode(periode)
    assert first_open_period(at.astimezone(UTC) - just_before) == periode
    assert first_open_period(at.astimezone(UTC)) == next_periode(periode)


def test_offset_matters_in_summer_and_in_winter():
    # 22:30 UTC on fristdato is 23:30 in winter (still open) but 00:30 next day in summer (closed).
    winter = dt.datetime.combine(fristdato("2027-03"), dt.time(22, 30), tzinfo=UTC)
    summer = dt.datetime.combine(fristdato("2027-06"), dt.time(22, 30), tzinfo=UTC)
    assert first_open_period(winter) == "2027-03"
    assert first_open_period(summer) == "2027-07"


def test_first_open_period_across_dst_changes():
    # 2027-03-28: clocks go 02:00 CET -> 03:00 CEST; March's cut-off was the 13th.
    assert first_open_period(dt.datetime(2027, 3, 28, 0, 59, 59, tzinfo=UTC)) == "2027-04"
    assert first_open_period(dt.datetime(2027, 3, 28, 1, 0, 0, tzinfo=UTC)) == "2027-04"
    # 2027-10-31: clocks go 03:00 CEST -> 02:00 CET; the ambiguous local hour, both folds.
    assert first_open_period(dt.datetime(2027, 10, 31, 2, 30, fold=0, tzinfo=TZ)) == "2027-11"
    assert first_open_period(dt.datetime(2027, 10, 31, 2, 30, fold=1, tzinfo=TZ)) == "2027-11"
    # New Year in Copenhagen is still 31 December in UTC.
    assert first_open_period(dt.datetime(2026, 12, 31, 23, 30, tzinfo=UTC)) == "2027-01"
    # Mid-December after December's cut-off (the 15th) the first open period is January.
    assert first_open_period(dt.datetime(2027, 12, 16, 0, 0, tzinfo=TZ)) == "2028-01"
    assert first_open_period(dt.datetime(2027, 12, 15, 23, 59, 59, tzinfo=TZ)) == "2027-12"


@given(st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2032, 12, 31), timezones=st.just(UTC)))
def test_first_open_period_is_the_earliest_with_cutoff_after_t(t):
    periode = first_open_period(t)
    assert cutoff(periode) > t
    assert cutoff(previous_periode(periode)) <= t
    assert first_open_period(t.astimezone(TZ)) == periode


def test_naive_instant_is_refused():
    with pytest.raises(ValueError, match="aware"):
        first_open_period(dt.datetime(2027, 3, 1, 12, 0))


# --- periode text ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["2027-13", "2027-00", "2027-1", "27-01", " 2027-01", "2027-01\n", "2027/01", "２０２７-01", ""])
def test_invalid_periode_is_a_value_error(text):
    for function in (parse_periode, udbetalingsdato, fristdato, cutoff, next_periode):
        with pytest.raises(ValueError, match="periode"):
            function(text)


def test_period_arithmetic():
    assert next_periode("2027-12") == "2028-01"
    assert previous_periode("2027-01") == "2026-12"
    assert previous_periode("2027-10") == "2027-09"
    assert periods_between("2026-11", "2027-02") == ["2026-11", "2026-12", "2027-01", "2027-02"]
    assert periods_between("2027-02", "2027-01") == []
    assert periode_of(dt.date(2027, 2, 28)) == "2027-02"


def test_denmark_is_the_librarys_own_loaded_without_the_other_countries(tmp_path, monkeypatch):
    import subprocess
    import sys

    from pipelines.calendar import _denmark

    for year in range(1990, 2101):
        ours = _denmark()(years=year, categories=("public",))
        assert dict(ours) == dict(holidays.Denmark(years=year, categories=("public",))), year
    # A date computed in a fresh process leaves the library's other countries unread.
    script = (
        "import sys, datetime as dt; from pipelines.calendar import udbetalingsdato; "
        "assert udbetalingsdato('2026-12') == dt.date(2026, 12, 30); "
        "print('holidays.countries' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    # Where the library keeps Denmark elsewhere: its own `holidays.Denmark`.
    monkeypatch.setattr(holidays, "__file__", str(tmp_path / "__init__.py"))
    assert _denmark.__wrapped__() is holidays.Denmark
