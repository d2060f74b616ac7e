"""The sensors (operations.md "Dagster"): UDK's IN/, and the register's periods (at the end).

The sensor on UDK's IN/:

Every 30 s by default it lists IN/; when complete deliveries or technical receipts wait, it
launches one intake run for all of them (not one run per file), unless an intake run is already
queued or running, and asks again for the same files after a failed run (not sooner than
RETRY_AFTER_FAILURE_SECONDS). A transient SFTP error skips the tick; an authentication or
host-key error fails it, so that someone is alerted (exchange.md, STYLE.md).

Every tick first marks runs whose process died as failed (pipelines/monitoring.py), so that a
`kill -9` of an intake never stalls the sensor ("Intake kører allerede" for ever): issue 7 asks
that the waiting work is taken up again within 5 minutes of the death. The death is seen at the
latest one tick later (at once when the code server outlives the run worker), the back-off runs
from then, and the launch comes at the first tick after it: interval + back-off + interval =
30 + 180 + 30 = 240 s with the defaults."""


import hashlib
import os
import time

import dagster as dg
import polars as pl

from assets.sf6110 import intake_job
from pipelines.exchange import ExchangeAccessError, ExchangeError, ExchangeResource
from pipelines.register import RegisterResource
from pipelines.resources import BeskedfordelerResource, StateResource
from pipelines.monitoring import fail_dead_runs
from pipelines.partitions import PERIODE, missing_periods, periode_partitions, register_periods
from pipelines.register import RegisterError, RegisterResource

SENSOR_INTERVAL_SECONDS = int(os.environ.get("PENSIONSTRAEK_SENSOR_INTERVAL", "30"))

# Not sooner, so that a lasting cause makes no storm of failing runs; not later, so that a killed
# run's work is taken up within 5 minutes of the death (see above).
RETRY_AFTER_FAILURE_SECONDS = int(os.environ.get("PENSIONSTRAEK_RETRY_AFTER_FAILURE", "180"))

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
    # Every job's dead runs, not only intake's: a killed settlement is found within a tick too
    # (and taken up again by run retries, dagster.yaml), although the schedule ticks once a day.
    for dead in fail_dead_runs(context.instance):
        context.log.warning(f"Run {dead.run_id[:8]} ({dead.job_name}) havde ingen proces mere; markeret som fejlet")
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


# --- SF1411_D and SF2610 (sf1411-sf2610.md "In Dagster") ---------------------------------------

HAENDELSER_RETRY_SECONDS = int(os.environ.get("PENSIONSTRAEK_HAENDELSER_RETRY_SECONDS", "300"))


@dg.sensor(
    name="haendelser_sensor",
    job_name="haendelser",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Starts `haendelser` for P when the register holds a snapshot of P that passes its contract "
        "and whose messages are not made yet, and again every "
        "PENSIONSTRAEK_HAENDELSER_RETRY_SECONDS while messages wait undelivered and a broker is set."
    ),
)
def haendelser_sensor(
    context: dg.SensorEvaluationContext,
    register: RegisterResource,
    state: StateResource,
    beskedfordeler: BeskedfordelerResource,
):
    from pipelines import beskeder
    from pipelines.haendelser import SnapshotRefused, snapshot

    known = set(context.instance.get_dynamic_partitions(PERIODE))  # kept by register_perioder
    periods = [p for p in register.periods("pensionssager") if p in known]
    if not periods:
        return dg.SkipReason("Ingen pensionssager-snapshot i registret")
    busy = context.instance.get_runs(filters=dg.RunsFilter(job_name="haendelser", statuses=_BUSY), limit=1)
    if busy:
        return dg.SkipReason(f"haendelser kører allerede (run {busy[0].run_id[:8]})")
    store = state.store()
    newest = periods[-1]
    if not all(beskeder.made(store, newest, kind) for kind in beskeder.KINDS):
        # sf1411-sf2610.md: messages are made from the first snapshot of P that passes its
        # contract. The verdict is recorded per file (pipelines/haendelser.py), so the run's
        # assets do not judge it again, and a refused file is not judged again every tick.
        try:
            snapshot(register, newest, store)
        except SnapshotRefused as exc:
            return dg.SkipReason(f"{exc}; ingen beskeder fra det")
        return dg.RunRequest(run_key=f"haendelser-{newest}", partition_key=newest)
    if beskedfordeler.broker_url():
        waiting = beskeder.with_status(store).filter(pl.col("status") == beskeder.VENTER).height
        if waiting:
            bucket = int(time.time() // HAENDELSER_RETRY_SECONDS)
            return dg.RunRequest(run_key=f"haendelser-{newest}-igen-{bucket}", partition_key=newest)
    return dg.SkipReason("Ingen nye snapshots, intet venter på levering")
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


# --- SF1411: a new register snapshot (sf1411-sf2610.md "The snapshot that is answered from") ---

from assets.sf1411 import sf1411_snapshot_job  # noqa: E402
from pipelines.register import RegisterResource  # noqa: E402


@dg.sensor(
    name="sf1411_register",
    job=sf1411_snapshot_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Takes in P's pensionssager (contract, then SF1411's look-up snapshot) when P's file appears or changes.",
)
def sf1411_register(context: dg.SensorEvaluationContext, register: RegisterResource):
    import fsspec

    fs, _ = fsspec.core.url_to_fs(register.url)
    requests = []
    for periode in register.periods("pensionssager"):
        info = fs.info(register.path("pensionssager", periode))
        # The run key names the file's version: a corrected file of P is taken in again.
        version = f"{info.get('size')}-{info.get('mtime') or info.get('LastModified') or ''}"
        requests.append(dg.RunRequest(run_key=f"{periode}:{version}", partition_key=periode))
    return requests or dg.SkipReason("Ingen pensionssager i registret endnu")
