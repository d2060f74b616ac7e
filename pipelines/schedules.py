"""The monthly settlement schedule, bank-calendar aware (operations.md, sf6110.md "Periods and the cut-off").

Cron cannot express "the day after the 10th bank day before the last bank day of the month", so
the schedule ticks every morning and launches period P on the day its cut-off falls on
(`fristdato(P) + 1 day`, the first day on which no instruction can count for P any more). On
every other day the tick is skipped with the date it waits for."""


import datetime as dt

import dagster as dg

from pipelines.jobs import settlement_job
from pipelines.calendar import TZ, cutoff, next_periode, periode_of
from pipelines.monitoring import fail_dead_runs
from pipelines.partitions import PERIODE


def period_due_on(day: dt.date) -> str | None:
    """The period whose cut-off falls on `day`, if any (the cut-off of P always lies in month P)."""
    periode = periode_of(day)
    return periode if cutoff(periode).date() == day else None


def next_due(day: dt.date) -> tuple[str, dt.date]:
    """The next period to be launched on or after `day`, and its launch day."""
    periode = periode_of(day)
    if cutoff(periode).date() < day:
        periode = next_periode(periode)
    return periode, cutoff(periode).date()


def description(today: dt.date) -> str:
    """What the schedule page shows: the rule, and the next launch (issue 8: the next settlement
    date must be visible, not only in a skip reason). Read when the code location loads."""
    periode, day = next_due(today)
    return (
        f"Næste afregning: {periode} den {day.isoformat()} kl. 06:00. Settlement, SF6111 and SF2601 "
        "for P, launched on the morning of P's cut-off day (fristdato + 1, bank calendar); P must "
        "be a period of the register."
    )


@dg.schedule(
    name="maanedlig_afregning",
    job=settlement_job,
    cron_schedule="0 6 * * *",
    execution_timezone="Europe/Copenhagen",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def maanedlig_afregning(context: dg.ScheduleEvaluationContext):
    today = context.scheduled_execution_time.astimezone(TZ).date()
    periode = period_due_on(today)
    if periode is None:
        waiting_for, day = next_due(today)
        return dg.SkipReason(f"Ingen frist i dag; {waiting_for} afregnes {day.isoformat()}")
    if not context.instance.has_dynamic_partition(PERIODE, periode):
        # operations.md: the periods are those the register holds (kept by `register_perioder`).
        return dg.SkipReason(f"Fristen for {periode} er i dag, men registeret har endnu ingen pensionssager for {periode}")
    # A settlement whose process died is marked failed before P is launched (issue 7), so that
    # the history is true and run retries (dagster.yaml) can take it up again. (The sensor does
    # this every tick as well; here only on the days that launch, the others decide nothing.)
    fail_dead_runs(context.instance, [settlement_job.name])
    return dg.RunRequest(run_key=f"afregning-{periode}", partition_key=periode)


class _NextSettlementSchedule(dg.ScheduleDefinition):
    """The schedule whose description is made when it is read: the webserver and the daemon read
    it when they load the code location, as before; a command that runs a job never does, and so
    does not load the bank calendar at import (a tenth of a second of its fixed cost, issue 11)."""

    @property
    def description(self) -> str:
        return description(dt.datetime.now(TZ).date())


maanedlig_afregning.__class__ = _NextSettlementSchedule  # the decorator's schedule, description made on reading
