"""Run monitoring: a run whose process died is marked failed, so that the sensor and the schedule
go on (operations.md "Dagster"; issue 7 "Killed runs never stall anything").

Dagster's own run monitoring (the daemon, `run_monitoring` in dagster.yaml) fails a run stuck in
STARTING after its start timeout, but the default run launcher cannot check the health of a
STARTED run's worker (`supports_check_run_worker_health` is False in 1.13), and a command-line run
(`execute_in_process`) has no launcher at all: after a `kill -9` such a run stays STARTED forever,
and the sensor, which launches no intake while one runs, would wait for ever.

So every run says which process does its work: tags `pensionstraek/pid`, `pensionstraek/host`,
`pensionstraek/proces` (the boot and the process's start time, so that a pid the kernel has
given to another process since, or a reboot, is not mistaken for the run) and
`pensionstraek/proces_for` (the run the process was recorded for: a re-execution copies its
parent's tags, and must not be judged by its dead parent's process). The command line sets them
when it makes the run (`run_process_tags(run_id)`); a run launched by the daemon sets them from
its run worker, through the executor of the code location (`monitored_in_process_executor`). Before
the sensor, the schedule and the commands decide anything, `fail_dead_runs()` marks every
unfinished run of this host whose process is gone as FAILURE, with the reason, so that the run
history says what happened and the work is taken up again."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg
from dagster._core.events import JobFailureData, RunFailureReason

PID_TAG = "pensionstraek/pid"
HOST_TAG = "pensionstraek/host"
PROCESS_TAG = "pensionstraek/proces"  # "<boot id>:<start time in clock ticks since boot>"
PROCESS_FOR_TAG = "pensionstraek/proces_for"  # the run id the other three were recorded for
# The kind of run ("intake", "afregning"), on the jobs: the instance's run concurrency limits
# (deploy/dagster.yaml) allow one of each at a time.
KOERSEL_TAG = "pensionstraek/koersel"

# Unfinished runs that a dead process can leave behind (CANCELING is the daemon's: it has its
# own cancel timeout).
_UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def run_process_tags(run_id: str, pid: int | None = None) -> dict[str, str]:
    """The tags naming the process that does run `run_id`'s work (default: this process). Every
    way of starting a run must set them, or a run killed with its process is never detected:
    `job.execute_in_process(run_id=run_id, tags={..., **run_process_tags(run_id)})`."""
    pid = os.getpid() if pid is None else pid
    return {
        PID_TAG: str(pid),
        HOST_TAG: socket.gethostname(),
        PROCESS_TAG: _process_identity(pid) or "",
        PROCESS_FOR_TAG: run_id,
    }


def record_run_process(instance: dg.DagsterInstance, run_id: str) -> None:
    """Tag an existing run with this process (a run worker that the daemon launched)."""
    instance.add_run_tags(run_id, run_process_tags(run_id))


def process_gone(run: dg.DagsterRun) -> str | None:
    """Why the run's process is certainly gone, or None when it lives or cannot be judged here
    (another host, or a run without its own tags: those are left to the daemon's run monitoring)."""
    tags = run.tags
    pid, host, identity = tags.get(PID_TAG), tags.get(HOST_TAG), tags.get(PROCESS_TAG)
    if not pid or not pid.isdigit() or host != socket.gethostname() or tags.get(PROCESS_FOR_TAG) != run.run_id:
        return None
    where = f"pid {pid} på {host}"
    boot = _boot_id()
    if identity and boot and identity.split(":", 1)[0] != boot:
        return f"kørslens proces ({where}) fandtes før maskinen blev genstartet"
    now = _process_identity(int(pid))
    if now is None:
        return f"kørslens proces ({where}) findes ikke mere"
    if identity and now != identity:
        return f"kørslens proces ({where}) findes ikke mere (pid'en er nu en anden proces)"
    return None


def fail_dead_runs(instance: dg.DagsterInstance, job_names: Sequence[str] | None = None) -> list[dg.DagsterRun]:
    """Mark every unfinished run (of `job_names`, default all) whose process is gone as FAILURE,
    with the reason; returns those runs. Cheap: one query of the unfinished runs."""
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_UNFINISHED)):
        if job_names is not None and run.job_name not in job_names:
            continue
        reason = process_gone(run)
        if reason is None:
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.is_finished:
            continue  # it ended (or another tick marked it) meanwhile
        instance.report_run_failed(
            current,
            f"{reason}: kørslen blev afbrudt (kill -9, nedbrud eller genstart) og er markeret som fejlet",
            # UNEXPECTED_TERMINATION, not STEP_FAILURE: run retries (dagster.yaml) may take it up.
            JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION),
        )
        failed.append(current)
    return failed


# --- the run worker tags its run ------------------------------------------------------------------


class _ProcessRecordingExecutor(dg.Executor):
    """Dagster's in-process executor, tagging the run with the run worker's process first."""

    def __init__(self, inner: dg.Executor):
        self._inner = inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        # A run the command line made names this process already; a launched run (or a
        # re-execution, with its parent's tags) is tagged here.
        if not run_process_tags(plan_context.run_id).items() <= plan_context.dagster_run.tags.items():
            record_run_process(plan_context.instance, plan_context.run_id)
        yield from self._inner.execute(plan_context, execution_plan)


@dg.executor(
    name="in_process",
    config_schema=dg.in_process_executor.config_schema,
)
def monitored_in_process_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Every step in the run worker's own process (the pid in the tags is the process that does
    the work: killing it leaves no step process behind still holding the state lock), tagged
    with that process (run_process_tags)."""
    return _ProcessRecordingExecutor(dg.in_process_executor.executor_creation_fn(init_context))


# --- processes ------------------------------------------------------------------------------------


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_identity(pid: int) -> str | None:
    """'<boot id>:<start time>' of a live process, None when there is none (a zombie is dead:
    it only waits for its parent to collect its exit status)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if not Path("/proc/self/stat").exists():  # no /proc: judge by signal 0 only
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
            return "?"
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may contain spaces
    if fields[0] in ("Z", "X"):
        return None
    return f"{_boot_id() or '?'}:{fields[19]}"  # field 22 of stat: starttime
