"""Running the code location's jobs from the command line, on the same Dagster instance as the UI
(DAGSTER_HOME, default ./var/dagster), so that every run the command makes shows up there."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import dagster as dg
import fsspec

from pipelines.config import DEFAULTS
from pipelines.monitoring import fail_dead_runs, run_process_tags
from pipelines.partitions import register_periods, sync_periods
from pipelines.storage import atomic_write

ROOT = Path(__file__).resolve().parent.parent
LOCATION_NAME = "pensionstraek"  # workspace.yaml's code location: what the UI lists runs under
DEFINITIONS_MODULE = "pipelines.definitions"  # workspace.yaml's python_module

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
        from pipelines.sqlite_instance import for_command

        opened = for_command(dg.DagsterInstance.get())  # a command's engines kept (issue 11)
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
    result: dg.ExecutionResult

    def metadata(self, key: str, partition: str | None = None) -> dict:
        """The metadata values of the run's materialization of asset `key` ("group/name") for
        `partition`; without one, of its only materialization, or for a range run the numbers
        of its periods added up (the command's one summary line)."""
        found = []
        for event in self.result.get_asset_materialization_events():
            materialization = event.step_materialization_data.materialization
            if materialization.asset_key == dg.AssetKey(key.split("/")) and partition in (None, materialization.partition):
                found.append({k: v.value for k, v in materialization.metadata.items()})
        if len(found) <= 1:
            return found[0] if found else {}
        totals = dict(found[-1])
        for name, value in totals.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                totals[name] = sum(f.get(name, 0) for f in found)
        return totals


def run_job(
    job_name: str,
    *,
    first_periode: str | None = None,
    last_periode: str | None = None,
    on: dg.DagsterInstance | None = None,
    definitions: dg.Definitions | None = None,
) -> RunOutcome:
    """Run a job of the code location in this process. With periods, a single period runs as a
    partition; a range runs as one run over the range (the assets' single-run backfill policy).
    The periods are first made those the register holds (a fresh instance knows none)."""
    if definitions is None:
        check_configuration()  # a wrong value stops here, before any run (operations.md "Configuration")
        from pipelines.definitions import defs as definitions

    job = definitions.resolve_job_def(job_name)
    target = on or instance()
    tags: dict[str, str] = {}
    if first_periode is not None:
        last = last_periode or first_periode
        if last < first_periode:
            raise ValueError(f"intervallet {first_periode}..{last} går baglæns: den første periode først")
        register = definitions.resources["register"]
        snapshots = register.periods("pensionssager")
        sync_periods(target, snapshots)
        periods = register_periods(snapshots)
        for periode in (first_periode, last):
            # A month between the first snapshot and the newest is a period (one the register has
            # not delivered: its run fails saying so); one outside them is refused before any run.
            if periode not in periods:
                raise ValueError(
                    f"{periode} er ikke en periode i registeret {register.url} "
                    f"(pensionssager/{periode}.parquet findes ikke; registeret har "
                    + (f"{snapshots[0]} … {snapshots[-1]})" if snapshots else "ingen perioder)")
                )
        if last == first_periode:
            tags["dagster/partition"] = first_periode
        else:
            tags.update({RANGE_START_TAG: first_periode, RANGE_END_TAG: last})
    result = execute(job, target, tags)
    return RunOutcome(success=result.success, run_id=result.run_id, problems=run_problems(result), result=result)


def execute(job: dg.JobDefinition, on: dg.DagsterInstance, tags: dict[str, str]) -> dg.ExecutionResult:
    """Create the run as the code location's run of `job` and execute it in this process.

    operations.md "Dagster": runs started from the command line are the same jobs as in the UI and
    show under them. The UI lists a job's runs (and the overview timeline) by the run's code
    location origin, so the run carries the origin workspace.yaml gives the webserver
    (`remote_job_origin`, location `pensionstraek`) and the job's Python origin, like a run the UI
    launches; it executes here, in this process (the code location's in-process executor: no
    second process, so the fixed cost of a command stays low)."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import execute_run
    from dagster._core.utils import make_new_run_id

    run_config = {
        # The command prints its own summary and a one-line reason on failure; Dagster's event log,
        # tracebacks included, is in the UI (the console logger would print them at ERROR).
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
    }
    remote_origin, code_origin = job_origins(job.name)
    # A run whose process died (kill -9) stays STARTED: mark it failed before starting another
    # (pipelines/monitoring.py), so that the run history is true and the sensor goes on.
    fail_dead_runs(on)
    run_id = make_new_run_id()
    run = on.create_run_for_job(
        job_def=job,
        run_id=run_id,
        run_config=run_config,
        # This process does the run's work, from the run's first moment.
        tags={**job.run_tags, **tags, **run_process_tags(run_id)},
        remote_job_origin=remote_origin,
        job_code_origin=code_origin,
    )
    # Dagster maps SIGTERM to SIGINT's handler while it runs, and leaves it so: a command started
    # as a background job of a script (SIGINT ignored) would ignore SIGTERM from then on, and so
    # would every process it starts. SIGTERM is given back as it was (docs/decisions.md).
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        return execute_run(InMemoryJob(job), run, on)
    finally:
        # None: a handler not set from Python, which Python cannot set back.
        if sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sigterm)


@cache
def _location_origin():
    from dagster._core.workspace.load import location_origin_from_module_name

    # The origin the webserver makes of workspace.yaml's entry (`python_module`, no working
    # directory or executable given), made directly: parsing the YAML costs a tenth of a second.
    return location_origin_from_module_name(DEFINITIONS_MODULE, None, None, LOCATION_NAME)


def job_origins(job_name: str):
    """(remote_job_origin, job_code_origin) of `job_name` in the code location `pensionstraek`."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin

    location = _location_origin()
    target = location.loadable_target_origin
    remote = RemoteJobOrigin(RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME), job_name)
    code = JobPythonOrigin(
        job_name,
        RepositoryPythonOrigin(
            executable_path=target.executable_path or sys.executable,
            code_pointer=ModuleCodePointer(target.module_name, "defs", target.working_directory or str(ROOT)),
        ),
    )
    return remote, code


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


# "dagster._core.definitions.events.Failure: ", "pipelines.register.RegisterError: ": the class
# path Dagster puts before a user error's message. The operator reads the message; the class and
# the stack trace stay in the run's event log for the engineer (operations.md "The command line").
_PYTHON_CLASS = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*\.)+[A-Z][A-Za-z0-9_]*: ")


_BLOCKING_CHECK = re.compile(r"[0-9]+ blocking asset checks? failed")


def clean_message(text: str) -> str:
    """One line of an error for the operator: the first line, without Python class paths."""
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    while True:
        stripped = _PYTHON_CLASS.sub("", line)
        stripped = re.sub(r"^(?:Failure|DagsterError|[A-Z][A-Za-z]*(?:Error|Exception)): ", "", stripped)
        if stripped == line:
            return " ".join(line.split())
        line = stripped


def _step_name(step_key: str) -> str:
    """`register__pensionssager` -> `register/pensionssager`: the asset's key as the UI shows it."""
    return step_key.replace("__", "/")


def run_problems(result: dg.ExecutionResult) -> list[str]:
    """The failures of a run, each one line and each said once: step failures (their message
    without Python class paths) and failed blocking checks."""
    problems: list[str] = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            user = error.cause if error is not None and error.cause is not None else error
            message = clean_message(user.message if user is not None else "") or "fejlede"
            if _BLOCKING_CHECK.match(message):
                continue  # Dagster's own line for a failed blocking check: the check's line says it
            problems.append(f"{_step_name(event.step_key)}: {message}")
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
                problems.append(f"kontrollen {evaluation.check_name} fejlede")
    return list(dict.fromkeys(problems))


def summarize_problems(problems: list[str], limit: int = 300) -> str:
    """The problems of a run as one short line: those that differ only in the step name are said
    once with every step named, and the line stops near `limit` characters with how many more."""
    by_message: dict[str, list[str]] = {}
    for problem in problems:
        step, sep, message = problem.partition(": ")
        if not sep:
            step, message = "", problem
        # Messages that differ only in the step's own name (one per register table) are one.
        table = step.rsplit("/", 1)[-1]
        shape = message.replace(table, "{}") if table else message
        by_message.setdefault(shape, []).append(step)
    parts = []
    for shape, steps in by_message.items():
        tables = [s.rsplit("/", 1)[-1] for s in steps if s]
        if len(tables) > 1:
            group = steps[0].rsplit("/", 1)[0]
            braces = "{" + ",".join(tables) + "}"
            parts.append(f"{group}/{braces}: {shape.replace('{}', braces)}")
        elif tables:
            parts.append(f"{steps[0]}: {shape.replace('{}', tables[0])}")
        else:
            parts.append(shape)
    line = ""
    for count, part in enumerate(parts):
        candidate = f"{line}; {part}" if line else part
        if line and len(candidate) > limit:
            return f"{line}; og {len(parts) - count} problem(er) mere (se kørslen)"
        line = candidate
    if len(line) > limit + 200:
        line = line[: limit + 200].rstrip() + " …"
    return line
