"""Running the code location's jobs from the command line, on the same Dagster instance as the UI
(DAGSTER_HOME, default ./var/dagster), so that every run the command makes shows up there."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import fsspec

from pipelines.config import DEFAULTS
from pipelines.monitoring import fail_dead_runs, run_process_tags
from pipelines.partitions import periode_partitions
from pipelines.storage import atomic_write

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


# The dagster.yaml the command writes into a DAGSTER_HOME that has none (the embedded default:
# SQLite under DAGSTER_HOME). Telemetry off: a pipeline of personal data sends nothing anywhere
# but to its partners, and Dagster's first-use banner on stderr would break "a one-line reason on
# failure" (operations.md "The command line"). Run monitoring on, so that the daemon fails a run
# that never started (the sensor and `fail_dead_runs` handle runs whose process died); run
# retries only for a run that died (never for a failed step: that is the data's answer), so that
# a killed settlement is taken up again like a killed intake (issue 7). Production's instance is
# deploy/dagster.yaml.
DEFAULT_DAGSTER_YAML = """\
telemetry:
  enabled: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
"""
# What earlier versions wrote: replaced by the above, being ours.
_EARLIER_DAGSTER_YAML = ("telemetry:\n  enabled: false\n",)

INSTANCE_LOCK = ".pensionstraek-instance.lock"
INSTANCE_LOCK_TIMEOUT_SECONDS = 120


def instance() -> dg.DagsterInstance:
    """The persistent instance; DAGSTER_HOME defaults to ./var/dagster (made when missing)."""
    home = os.environ.get("DAGSTER_HOME") or DEFAULTS["DAGSTER_HOME"]
    home_path = Path(home).resolve()
    home_path.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home_path)
    # Creating the SQLite storage runs its schema migrations: commands started at the same moment
    # on a fresh DAGSTER_HOME would stamp it twice ("alembic_version has more than one head") and
    # break it for good (issue 7). One at a time makes and opens it; an existing one opens alike.
    with _instance_lock(home_path):
        settings = home_path / "dagster.yaml"
        if not settings.exists() or settings.read_text() in _EARLIER_DAGSTER_YAML:
            atomic_write(fsspec.filesystem("file"), str(settings), DEFAULT_DAGSTER_YAML.encode())
        opened = dg.DagsterInstance.get()
        # The storages are made on first use: use them while the lock is held.
        opened.get_runs(limit=1)
        opened.event_log_storage.get_maximum_record_id()
        opened.schedule_storage  # noqa: B018 - made (and migrated) on first access
        return opened


@contextlib.contextmanager
def _instance_lock(home: Path) -> Iterator[None]:
    fd = os.open(home / INSTANCE_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        deadline = time.monotonic() + INSTANCE_LOCK_TIMEOUT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"DAGSTER_HOME={home}: {INSTANCE_LOCK} held for {INSTANCE_LOCK_TIMEOUT_SECONDS} s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock (the OS does it too if the process dies)


@dataclass(frozen=True)
class RunOutcome:
    success: bool
    run_id: str
    problems: list[str]
    result: dg.ExecuteInProcessResult

    def metadata(self, key: str) -> dict:
        """The metadata values of the run's materialization of asset `key` ("group/name")."""
        for event in self.result.get_asset_materialization_events():
            materialization = event.step_materialization_data.materialization
            if materialization.asset_key == dg.AssetKey(key.split("/")):
                return {k: v.value for k, v in materialization.metadata.items()}
        return {}


def run_job(
    job_name: str,
    *,
    first_periode: str | None = None,
    last_periode: str | None = None,
    on: dg.DagsterInstance | None = None,
    definitions: dg.Definitions | None = None,
) -> RunOutcome:
    """Run a job of the code location in this process. With periods, a single period runs as a
    partition; a range runs as one run over the range (the assets' single-run backfill policy)."""
    if definitions is None:
        check_configuration()  # a wrong value stops here, before any run (operations.md "Configuration")
        from pipelines.definitions import defs as definitions

    job = definitions.resolve_job_def(job_name)
    kwargs: dict = {}
    if first_periode is not None:
        last = last_periode or first_periode
        keys = periode_partitions.get_partition_keys()
        for periode in (first_periode, last):
            if periode not in keys:
                raise ValueError(f"{periode} is not a period this pipeline can settle ({keys[0]} … {keys[-1]})")
        if last < first_periode:
            raise ValueError(f"the range {first_periode}..{last} runs backwards")
        if last == first_periode:
            kwargs["partition_key"] = first_periode
        else:
            kwargs["tags"] = {RANGE_START_TAG: first_periode, RANGE_END_TAG: last}
    the_instance = on or instance()
    # A run whose process died (kill -9) stays STARTED: mark it failed before starting another
    # (pipelines/monitoring.py), so that the run history is true and the sensor goes on.
    fail_dead_runs(the_instance)
    run_id = str(uuid.uuid4())  # known before the run exists, for its tags
    kwargs["tags"] = {**kwargs.get("tags", {}), **run_process_tags(run_id)}
    result = job.execute_in_process(
        instance=the_instance,
        run_id=run_id,
        raise_on_error=False,
        # The command prints its own summary and a one-line reason on failure; Dagster's event log,
        # tracebacks included, is in the UI (the console logger would print them at ERROR).
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        **kwargs,
    )
    return RunOutcome(success=result.success, run_id=result.run_id, problems=run_problems(result), result=result)


@contextlib.contextmanager
def one_at_a_time(kind: str) -> Iterator[None]:
    """Hold the state store's lock of `kind` ("intake") around a command's run, so that a second
    command is refused (pipelines.state.LockHeld) before it makes a run or opens the instance."""
    check_configuration()
    from pipelines.resources import StateResource

    with StateResource.from_env().store().lock(kind):
        yield


def check_configuration() -> None:
    """Judge every PENSIONSTRAEK_* value the code location's resources are fed from, without
    connecting anywhere; raises ConfigError naming the variable (operations.md "Configuration":
    a wrong value stops the run at once)."""
    from pipelines.config import EXCHANGE_URL, STATE_URL, check_local_or_url, parse_exchange_url
    from pipelines.definitions import resources_from_env
    from pipelines.exchange import SftpExchangeClient

    resources = resources_from_env()  # judges PENSIONSTRAEK_KEEP_DELIVERIES and the register URL
    exchange = resources["exchange"]
    location = parse_exchange_url(exchange.url, EXCHANGE_URL)
    if location.scheme == "sftp":
        # Reads key and known_hosts (and refuses missing or unusable ones) but does not connect.
        SftpExchangeClient(location, exchange.sftp_key, exchange.known_hosts, retries=0, backoff_seconds=0)
    resources["partners"].partners()  # judges PENSIONSTRAEK_PARTNERS
    check_local_or_url(STATE_URL, resources["state"].url)  # judged without making anything


def run_problems(result: dg.ExecuteInProcessResult) -> list[str]:
    """The failures of a run, each one line: step failures and failed blocking checks."""
    problems = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            user = error.cause if error is not None and error.cause is not None else error
            message = (user.message if user is not None else "failed").strip().splitlines()
            problems.append(f"{event.step_key}: {message[0] if message else 'failed'}")
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
                problems.append(f"check {evaluation.check_name} failed")
    return problems
