"""The schedule `maanedlig_afregning` (operations.md, sf6110.md "Periods and the cut-off"): it ticks
every morning and launches settlement of P on `fristdato(P) + 1`, the first day on which nothing
can count for P any more, across Easter, Christmas and month ends; every other tick is skipped
with the date it waits for."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections import defaultdict
from pathlib import Path

import dagster as dg
import pytest

from pipelines.calendar import TZ, fristdato, periode_of
from pipelines.jobs import settlement_job
from pipelines.partitions import PERIODE, months_between, sync_periods
from pipelines.schedules import description, maanedlig_afregning
from tests.world import World

_instances: dict[str, dg.DagsterInstance] = {}


@pytest.fixture(scope="module", autouse=True)
def register_instance():
    """An instance whose register holds every period the ticks below reach (operations.md: the
    periods are the register's; the schedule launches only those)."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PERIODE, months_between("2025-12", "2028-02"))
        _instances["register"] = instance
        yield instance


def tick(when: dt.datetime, instance: dg.DagsterInstance | None = None) -> dg.RunRequest | dg.SkipReason:
    context = dg.build_schedule_context(instance=instance or _instances["register"], scheduled_execution_time=when)
    return maanedlig_afregning(context)


def morning(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(6, 0), tzinfo=TZ)  # the cron: 06:00 Europe/Copenhagen


def every_day(first: dt.date, last: dt.date):
    day = first
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


def test_the_schedule_ticks_every_morning_in_danish_time_for_the_settlement_job() -> None:
    assert maanedlig_afregning.cron_schedule == "0 6 * * *"
    assert maanedlig_afregning.execution_timezone == "Europe/Copenhagen"
    assert maanedlig_afregning.job_name == settlement_job.name == "maanedlig_afregning"


def test_every_month_of_2026_and_2027_launches_exactly_once_the_day_after_its_fristdato() -> None:
    launches: dict[str, list[dt.date]] = defaultdict(list)
    for day in every_day(dt.date(2026, 1, 1), dt.date(2027, 12, 31)):
        result = tick(morning(day))
        if isinstance(result, dg.RunRequest):
            launches[result.partition_key].append(day)
            assert result.run_key == f"afregning-{result.partition_key}"
        else:
            assert isinstance(result, dg.SkipReason), (day, result)

    periods = [f"{year}-{month:02d}" for year in (2026, 2027) for month in range(1, 13)]
    assert sorted(launches) == periods
    for periode in periods:
        assert launches[periode] == [fristdato(periode) + dt.timedelta(days=1)], periode
        assert periode_of(launches[periode][0]) == periode  # P is settled inside month P


@pytest.mark.parametrize(
    ("periode", "launch"),
    [
        # fristdato 2026-05-12 (sf6110.md): Ascension Day, the Friday after and Whit Monday are closed.
        ("2026-05", dt.date(2026, 5, 13)),
        # fristdato 2027-03-12 (sf6110.md): Maundy Thursday, Good Friday and Easter Monday are closed.
        ("2027-03", dt.date(2027, 3, 13)),
        # fristdato 2027-12-15 (sf6110.md): paid 30 December (New Year's Eve is closed), Christmas Eve closed.
        ("2027-12", dt.date(2027, 12, 16)),
        # udbetalingsdato 2026-12-30 (sf6110.md).
        ("2026-12", dt.date(2026, 12, 15)),
    ],
)
def test_launch_days_across_easter_christmas_and_month_ends(periode: str, launch: dt.date) -> None:
    before = tick(morning(launch - dt.timedelta(days=1)))
    assert isinstance(before, dg.SkipReason)
    assert before.skip_message == f"Ingen frist i dag; {periode} afregnes {launch.isoformat()}"

    launched = tick(morning(launch))
    assert isinstance(launched, dg.RunRequest)
    assert (launched.partition_key, launched.run_key) == (periode, f"afregning-{periode}")

    after = tick(morning(launch + dt.timedelta(days=1)))
    assert isinstance(after, dg.SkipReason)
    assert f"{periode} afregnes" not in after.skip_message  # it waits for the next period now


@pytest.mark.parametrize(
    ("day", "message"),
    [
        # After P's launch the next date is in the next month, across month and year ends.
        # udbetalingsdato 2027-01-29 (sf6110.md); ten bank days back is Friday 15 January.
        (dt.date(2026, 12, 31), "Ingen frist i dag; 2027-01 afregnes 2027-01-16"),
        (dt.date(2027, 1, 1), "Ingen frist i dag; 2027-01 afregnes 2027-01-16"),
        (dt.date(2027, 2, 28), "Ingen frist i dag; 2027-03 afregnes 2027-03-13"),
        (dt.date(2027, 3, 31), "Ingen frist i dag; 2027-04 afregnes 2027-04-17"),  # paid Friday 30 April
        # 31 January 2028 is a Monday and the payday: fristdato Monday 17 January.
        (dt.date(2027, 12, 17), "Ingen frist i dag; 2028-01 afregnes 2028-01-18"),
    ],
)
def test_skipped_ticks_name_the_next_launch_date(day: dt.date, message: str) -> None:
    result = tick(morning(day))
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == message


def test_the_day_is_the_danish_day_whatever_the_offset_of_the_tick() -> None:
    # 2027-03-12 23:30 UTC is already 2027-03-13 00:30 in Copenhagen: the launch day.
    launched = tick(dt.datetime(2027, 3, 12, 23, 30, tzinfo=dt.UTC))
    assert isinstance(launched, dg.RunRequest) and launched.partition_key == "2027-03"
    # 2027-03-13 23:30 UTC is 2027-03-14 in Copenhagen: skipped.
    assert isinstance(tick(dt.datetime(2027, 3, 13, 23, 30, tzinfo=dt.UTC)), dg.SkipReason)


def test_a_real_tick_in_the_code_location_targets_an_existing_partition_of_the_job() -> None:
    """Evaluated as the daemon does (with the repository), the request names a partition that the
    job can run, and a second evaluation of the same day gives the same run key (no second run)."""
    with tempfile.TemporaryDirectory() as root:
        world = World(Path(root), dg.DagsterInstance.local_temp(tempdir=root))
        sync_periods(world.instance, ["2026-10", "2026-11"])  # what the register sensor does
        repository = world.defs.get_repository_def()
        launch = morning(dt.date(2026, 11, 17))  # fristdato 2026-11 is 2026-11-16
        context = dg.build_schedule_context(
            instance=world.instance, scheduled_execution_time=launch, repository_def=repository
        )
        data = maanedlig_afregning.evaluate_tick(context)
        [request] = data.run_requests
        assert request.partition_key == "2026-11"
        assert request.tags["dagster/partition"] == "2026-11"
        assert "2026-11" in settlement_job.partitions_def.get_partition_keys(dynamic_partitions_store=world.instance)
        again = maanedlig_afregning.evaluate_tick(context)
        assert [r.run_key for r in again.run_requests] == [request.run_key]
        world.instance.dispose()


def test_a_cutoff_day_whose_period_the_register_lacks_is_skipped_naming_the_period() -> None:
    with dg.instance_for_test() as instance:
        sync_periods(instance, ["2026-09", "2026-10"])
        result = tick(morning(dt.date(2026, 11, 17)), instance)  # 2026-11's launch day, no snapshot yet
        assert isinstance(result, dg.SkipReason)
        assert result.skip_message == (
            "Fristen for 2026-11 er i dag, men registeret har endnu ingen pensionssager for 2026-11"
        )
        assert isinstance(tick(morning(dt.date(2026, 10, 17)), instance), dg.RunRequest)  # a period


def test_the_schedule_page_names_the_next_settlement_date() -> None:
    assert description(dt.date(2026, 12, 1)).startswith("Næste afregning: 2026-12 den 2026-12-15 kl. 06:00.")
    assert description(dt.date(2026, 12, 16)).startswith("Næste afregning: 2027-01 den 2027-01-16")
    assert maanedlig_afregning.description.startswith("Næste afregning: ")
