"""The sensors (operations.md "Dagster"): UDK's IN/, and the register's periods (at the end).

The sensor on UDK's IN/:

Every 30 s by default it lists IN/; when complete deliveries or technical receipts wait, it
launches one intake run for all of them (not one run per file), unless an intake run is already
queued or running, and asks again for the same files after a failed run (not sooner than
RETRY_AFTER_FAILURE_SECONDS). A transient SFTP error skips the tick; an authentication or
host-key error fails it, so that someone is alerted (exchange.md, STYLE.md)."""


import hashlib
import os
import time

import dagster as dg

from assets.sf6110 import intake_job
from pipelines.exchange import ExchangeAccessError, ExchangeError, ExchangeResource
from pipelines.partitions import PERIODE, missing_periods, periode_partitions, register_periods
from pipelines.register import RegisterError, RegisterResource

SENSOR_INTERVAL_SECONDS = int(os.environ.get("PENSIONSTRAEK_SENSOR_INTERVAL", "30"))

RETRY_AFTER_FAILURE_SECONDS = 300

_FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
_BUSY = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(
    name="sf6110_indgang",
    job=intake_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches SF6110 intake when deliveries or technical receipts wait in UDK's IN/.",
)
def sf6110_indgang(context: dg.SensorEvaluationContext, exchange: ExchangeResource):
    try:
        with exchange.open() as client:
            deliveries = client.list_deliveries()
            receipts = client.list_receipts()
    except ExchangeAccessError:
        raise  # authentication / host key / configuration: the tick fails loudly
    except ExchangeError as exc:
        return dg.SkipReason(f"SFTP midlertidigt utilgængelig: {exc}")

    if not deliveries and not receipts:
        return dg.SkipReason("Intet venter i IN/")
    busy = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=intake_job.name, statuses=_BUSY), limit=1
    )
    if busy:
        return dg.SkipReason(f"Intake kører allerede (run {busy[0].run_id[:8]}); det venter til næste tick")

    # The run key names what waits, so a listing is launched once. A failed run (no pensionssager
    # snapshot, say) leaves the files waiting (sf6110.md), and the same listing would never be
    # launched again: after a failure, ask again once RETRY_AFTER_FAILURE_SECONDS have passed.
    after_failure = ""
    last = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=intake_job.name, statuses=_FINISHED), limit=1
    )
    if last and last[0].status != dg.DagsterRunStatus.SUCCESS:
        record = context.instance.get_run_record_by_id(last[0].run_id)
        ended = record.end_time if record is not None and record.end_time else time.time()
        wait = ended + RETRY_AFTER_FAILURE_SECONDS - time.time()
        if wait > 0:
            return dg.SkipReason(
                f"Sidste intake (run {last[0].run_id[:8]}) fejlede; de ventende filer prøves igen om {wait:.0f} s"
            )
        after_failure = last[0].run_id

    waiting = sorted(f"{d.name}@{d.received.isoformat()}" for d in deliveries) + sorted(receipts)
    run_key = hashlib.sha256("\n".join([after_failure, *waiting]).encode()).hexdigest()[:24]
    return dg.RunRequest(
        run_key=run_key,
        tags={"pensionstraek/filer": str(len(deliveries)), "pensionstraek/kvitteringer": str(len(receipts))},
    )


@dg.sensor(
    name="register_perioder",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Keeps the periods (partitions `periode`) those the register holds: every month from the "
        "first pensionssager snapshot to the newest, a new period when UDK Pension delivers it."
    ),
)
def register_perioder(context: dg.SensorEvaluationContext, register: RegisterResource):
    # operations.md "Dagster": the periods are those of the register; the wall clock plays no part.
    try:
        snapshots = register.periods("pensionssager")
    except RegisterError as exc:
        raise dg.Failure(description=str(exc)) from None  # an unreadable register is an error, loudly
    existing = list(context.instance.get_dynamic_partitions(PERIODE))
    delete, add = missing_periods(existing, register_periods(snapshots))
    if not add:
        return dg.SkipReason(
            f"Registeret har {snapshots[0]} … {snapshots[-1]}; ingen ny periode" if snapshots else "Registeret har ingen perioder endnu"
        )
    requests = [periode_partitions.build_add_request(add)]
    if delete:
        requests.insert(0, periode_partitions.build_delete_request(delete))
    return dg.SensorResult(dynamic_partitions_requests=requests)
