"""Killed runs never stall anything (issue 7 item 2, issue 8 item 3; operations.md "Dagster"):
a run whose process died is marked failed, by the sensor, the schedule and the commands, and the
waiting work is taken up again; concurrent starts on a fresh DAGSTER_HOME never break it.

Real processes throughout: the runs' processes are started and killed (SIGKILL) by the tests,
the commands run as subprocesses, and one test runs the real Dagster daemon with its code server.
To catch a run in the middle of its work without a hook in the product, the register's newest
pensionssager snapshot is a named pipe: intake blocks reading it until the test writes it."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from pipelines import monitoring, runner, sensors
from pipelines.calendar import TZ, cutoff
from pipelines.monitoring import PID_TAG, fail_dead_runs, run_process_tags
from pipelines.partitions import PERIODE
from pipelines.schedules import maanedlig_afregning
from tests.test_cli import pensionstraek
from tests.test_intake import ALICE, SNAPSHOT, opret, write_pensionssager
from tests.world import World, request_file
from tests.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent


# --- the pieces -----------------------------------------------------------------------------------


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as temporary:
        yield temporary


def a_process() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)


def killed(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(timeout=10)


def run_of(w: World, job_name: str, process: subprocess.Popen, **kwargs) -> dg.DagsterRun:
    """A STARTED run of `job_name` whose work is done by `process` (as the runner tags its runs)."""
    job = w.defs.resolve_job_def(job_name)
    run = w.instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.STARTED, **kwargs)
    w.instance.add_run_tags(run.run_id, run_process_tags(run.run_id, pid=process.pid))
    return w.instance.get_run_by_id(run.run_id)


def status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    (event,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return event.message


def world(tmp_path: Path, instance: dg.DagsterInstance) -> World:
    w = World(tmp_path, instance)
    write_pensionssager(w.register_dir)
    return w


def deliver(w: World, name: str = "SF6110_0101_a.xml") -> None:
    w.deliver(name, request_file("0101", [opret(name[:30].replace(".", "-"), ALICE)]))


def evaluate(w: World):
    context = dg.build_sensor_context(instance=w.instance, resources={"exchange": w.resources()["exchange"]})
    return sensors.sf6110_indgang(context)


# --- the sensor, the schedule, the commands mark dead runs failed ---------------------------------


def test_the_sensor_fails_an_intake_whose_process_died_and_launches_again_after_the_pause(tmp_path, instance, monkeypatch):
    w = world(tmp_path, instance)
    deliver(w)
    worker = a_process()
    run = run_of(w, "sf6110_intake", worker)
    try:
        alive = evaluate(w)  # its process lives: the run is running, nothing else is launched
        assert isinstance(alive, dg.SkipReason) and "Intake kører allerede" in alive.skip_message
        assert status(instance, run.run_id) == dg.DagsterRunStatus.STARTED
    finally:
        killed(worker)

    paused = evaluate(w)
    assert status(instance, run.run_id) == dg.DagsterRunStatus.FAILURE
    assert f"pid {worker.pid}" in failure_message(instance, run.run_id)
    assert "findes ikke mere" in failure_message(instance, run.run_id)
    # The back-off after a failed run runs from the moment it was marked.
    assert isinstance(paused, dg.SkipReason) and run.run_id[:8] in paused.skip_message
    monkeypatch.setattr(sensors, "RETRY_AFTER_FAILURE_SECONDS", 0)
    assert isinstance(evaluate(w), dg.RunRequest)


def test_a_run_of_a_command_started_in_the_background_leaves_sigterm_as_it_was(tmp_path, instance):
    """A script's background job has SIGINT ignored; Dagster maps SIGTERM to SIGINT's handler
    during a run. Afterwards SIGTERM must again stop the command and the processes it starts."""
    w = world(tmp_path, instance)
    deliver(w)
    was = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert w.intake().success
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        child = subprocess.Popen(["sleep", "30"])
        child.terminate()
        assert child.wait(timeout=5) == -signal.SIGTERM
    finally:
        signal.signal(signal.SIGINT, was[0])
        signal.signal(signal.SIGTERM, was[1])


def test_a_pid_given_to_another_process_is_not_the_run(tmp_path, instance):
    w = world(tmp_path, instance)
    worker = a_process()
    try:
        run = run_of(w, "sf6110_intake", worker)
        started = run.tags[monitoring.PROCESS_TAG]
        boot, _, ticks = started.rpartition(":")
        # The same pid, started at another moment: the kernel gave the dead run's pid away.
        instance.add_run_tags(run.run_id, {monitoring.PROCESS_TAG: f"{boot}:{int(ticks) + 1}"})
        assert [r.run_id for r in fail_dead_runs(instance)] == [run.run_id]
        assert "en anden proces" in failure_message(instance, run.run_id)
    finally:
        killed(worker)


def test_runs_without_their_own_process_tags_are_left_to_the_daemon(tmp_path, instance):
    w = world(tmp_path, instance)
    job = w.defs.resolve_job_def("sf6110_intake")
    untagged = instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.STARTED)
    elsewhere = instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.STARTED)
    parent = instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.STARTED)
    worker = a_process()
    killed(worker)
    instance.add_run_tags(elsewhere.run_id, {**run_process_tags(elsewhere.run_id, pid=worker.pid), monitoring.HOST_TAG: "en-anden-vaert"})
    # A re-execution copies its parent's tags: its parent's dead process is not its own.
    instance.add_run_tags(parent.run_id, run_process_tags("the-parent-run", pid=worker.pid))
    assert fail_dead_runs(instance) == []
    assert {status(instance, r.run_id) for r in (untagged, elsewhere, parent)} == {dg.DagsterRunStatus.STARTED}


def test_the_schedule_fails_a_settlement_whose_process_died_before_deciding(tmp_path, instance):
    w = world(tmp_path, instance)
    worker = a_process()
    run = run_of(w, "maanedlig_afregning", worker)
    killed(worker)
    instance.add_dynamic_partitions(PERIODE, ["2026-11"])  # the register holds it
    due = cutoff("2026-11").date()
    when = dt.datetime.combine(due, dt.time(6, 0), tzinfo=TZ)
    request = maanedlig_afregning(dg.build_schedule_context(instance=instance, scheduled_execution_time=when))
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2026-11"
    assert status(instance, run.run_id) == dg.DagsterRunStatus.FAILURE
    # A death, not a failed step: run retries (dagster.yaml) may take it up again.
    assert instance.get_run_by_id(run.run_id).tags.get("dagster/failure_reason") == "UNEXPECTED_TERMINATION"


def test_the_defaults_take_a_killed_intake_up_again_within_five_minutes_of_the_death():
    # The death is seen at the latest one tick later, the pause runs from then, and the launch
    # comes at the first tick after the pause (pipelines/sensors.py).
    code = "from pipelines import sensors; print(sensors.SENSOR_INTERVAL_SECONDS, sensors.RETRY_AFTER_FAILURE_SECONDS)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENSIONSTRAEK_")}
    interval, pause = map(int, subprocess.check_output([sys.executable, "-c", code], env=env, cwd=ROOT, text=True).split())
    assert interval + pause + interval <= 5 * 60
    assert pause >= 60  # still a pause: a lasting cause makes no storm of failing runs


# --- the command line: kill -9 an intake, the next one goes on --------------------------------------


def command_env(w: World, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENSIONSTRAEK_")}
    env.update(
        DAGSTER_HOME=str(home),
        PENSIONSTRAEK_EXCHANGE_URL=str(w.exchange_root / "udk-pension"),
        PENSIONSTRAEK_REGISTER_URL=str(w.register_dir),
        PENSIONSTRAEK_STATE_URL=str(w.state_dir),
    )
    return env


def snapshot_that_blocks(w: World) -> tuple[Path, bytes]:
    """The newest pensionssager becomes a named pipe (a reader waits until it is written);
    returns its path and the bytes it should hold."""
    path = w.register_dir / "pensionssager" / f"{SNAPSHOT}.parquet"
    data = path.read_bytes()
    path.unlink()
    os.mkfifo(path)
    return path, data


def unblock(path: Path, data: bytes) -> None:
    real = path.with_name(".real.parquet")
    real.write_bytes(data)
    # A reader still waiting on the pipe (a sensor's tick in the code server: left waiting, it
    # holds the daemon's shutdown for 30 s) gets the bytes too; without a reader this is ENXIO.
    try:
        waiting = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        waiting = None
    os.replace(real, path)  # later readers read the file; the pipe is gone
    if waiting is not None:
        os.set_blocking(waiting, True)
        with open(waiting, "wb") as pipe:
            pipe.write(data)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"waited {timeout} s for {what}")


def intake_runs(home: Path) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return list(instance.get_runs(filters=dg.RunsFilter(job_name="sf6110_intake")))


def made_instance(home: Path, monkeypatch) -> None:
    """DAGSTER_HOME made as the commands make it (so that the test may read it meanwhile)."""
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    runner.instance().dispose()


def test_kill_9_of_an_intake_command_then_the_next_one_marks_it_failed_and_completes(tmp_path, monkeypatch):
    w = World(tmp_path, instance=None)
    write_pensionssager(w.register_dir)
    deliver(w)
    pipe, data = snapshot_that_blocks(w)
    home = tmp_path / "dagster"
    made_instance(home, monkeypatch)
    env = command_env(w, home)
    command = subprocess.Popen(
        [*pensionstraek(), "intake"], cwd=tmp_path, env=env, start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        (run,) = wait_for(
            lambda: [r for r in intake_runs(home) if r.status == dg.DagsterRunStatus.STARTED], 60, "the intake run to start"
        )
        assert run.tags[PID_TAG] == str(command.pid)  # the command says which process does the work
    finally:
        command.kill()  # SIGKILL: no clean-up of any kind
        command.wait(timeout=10)
        # What the killed command leaves in its group (Dagster's compute-log `tail -F` lives on).
        stop_process(command, group=True, timeout=10)
    assert [r.status for r in intake_runs(home)] == [dg.DagsterRunStatus.STARTED]  # as Dagster leaves it

    unblock(pipe, data)
    again = subprocess.run([*pensionstraek(), "intake"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "1 modtaget" in again.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert status(instance, run.run_id) == dg.DagsterRunStatus.FAILURE
        assert f"pid {command.pid}" in failure_message(instance, run.run_id)
    assert [r.status for r in intake_runs(home)] == [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]  # newest first
    assert w.in_names("udk-pension", "SF6110_*") == []


# --- concurrent starts on a fresh DAGSTER_HOME ------------------------------------------------------


def at_the_same_moment(commands: list[list[str]], env: dict[str, str] | list[dict[str, str]], cwd: Path, setup: str) -> list[subprocess.CompletedProcess]:
    """Start `commands` (arguments of pipelines.cli.main) in their own processes, each released
    at the same instant after its imports (`setup`), and wait for them."""
    # Each process says when it has imported what it needs; once all have, the moment is set a
    # little ahead (in the file `go`) and each sleeps until it.
    gate = Path(tempfile.mkdtemp(prefix="same-moment-", dir=cwd))
    script = (
        f"import os, sys, time\n{setup}\n"
        "gate = sys.argv[1]\n"
        "open(os.path.join(gate, f'ready-{os.getpid()}'), 'w').close()\n"
        "while not os.path.exists(os.path.join(gate, 'go')):\n"
        "    time.sleep(0.005)\n"
        "time.sleep(max(0.0, float(open(os.path.join(gate, 'go')).read()) - time.time()))\n"
        "from pipelines.cli import main\nsys.exit(main(sys.argv[2:]))\n"
    )
    envs = env if isinstance(env, list) else [env] * len(commands)
    started = [
        subprocess.Popen([sys.executable, "-c", script, str(gate), *args], cwd=cwd, env=one_env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        for args, one_env in zip(commands, envs)
    ]
    deadline = time.monotonic() + 120
    while len(list(gate.glob("ready-*"))) < len(started):
        assert time.monotonic() < deadline and all(p.poll() is None for p in started), "a process did not get ready"
        time.sleep(0.05)
    (gate / "go.tmp").write_text(str(time.time() + 0.5))
    os.replace(gate / "go.tmp", gate / "go")
    results = []
    for process in started:
        out, err = process.communicate(timeout=180)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def test_three_intakes_at_the_same_moment_on_a_fresh_instance_one_works_the_others_say_so(tmp_path):
    w = World(tmp_path, instance=None)
    write_pensionssager(w.register_dir)
    deliver(w)
    home = tmp_path / "dagster"  # does not exist yet
    env = command_env(w, home)
    results = at_the_same_moment([["intake"]] * 3, env, tmp_path, "import pipelines.runner, pipelines.definitions")

    done = [r for r in results if r.returncode == 0]
    busy = [r for r in results if r.returncode != 0]
    assert len(done) == 1, [(r.returncode, r.stderr) for r in results]
    assert "1 modtaget" in done[0].stdout
    for loser in busy:
        assert loser.returncode == 3, loser.stderr  # cli.EXIT_BUSY: nothing done, another does it
        (line,) = loser.stderr.splitlines()
        assert line.startswith("pensionstraek: en anden intake kører (") and line.endswith("prøv igen når den er færdig")
        assert "Error" not in line and "Traceback" not in loser.stderr
    # The instance is whole: one run (the losers made none), and the next command works on it.
    assert [r.status for r in intake_runs(home)] == [dg.DagsterRunStatus.SUCCESS]
    after = subprocess.run([*pensionstraek(), "intake"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert after.returncode == 0, after.stderr


def test_commands_opening_a_fresh_instance_at_the_same_moment_never_break_it(tmp_path):
    # Three commands that do not wait for each other (each its own state store, so no state
    # lock) open, and would migrate, the same new SQLite storage at once. Before the instance
    # lock this broke it about one time out of two ("alembic_version has more than one head").
    w = World(tmp_path, instance=None)
    for attempt in range(1):  # 2 cores: one attempt (the race hit about every other one)
        home = tmp_path / f"dagster-{attempt}"
        envs = [{**command_env(w, home), "PENSIONSTRAEK_STATE_URL": str(tmp_path / f"state-{attempt}-{n}")} for n in range(3)]
        results = at_the_same_moment([["intake"]] * 3, envs, tmp_path, "import pipelines.runner, pipelines.definitions")
        for result in results:
            assert result.returncode == 0, result.stderr
            assert "0 fil(er)" in result.stdout
        with dg.DagsterInstance.from_config(str(home)) as opened:
            runs = opened.get_runs()
            assert len(runs) == 3 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)


# --- the daemon: kill -9 a sensor-launched run, the next one comes without a hand --------------------


@pytest.fixture
def daemon_world(tmp_path) -> Iterator[tuple[World, Path, dict[str, str]]]:
    w = World(tmp_path, instance=None)
    write_pensionssager(w.register_dir)
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(runner.DEFAULT_DAGSTER_YAML)  # the instance the commands make
    env = command_env(w, home)
    # Short, so that the test is quick; then the sensor's relaunch and the run retry (both in
    # the instance the commands make) race, and either may take the work up.
    env.update(PENSIONSTRAEK_SENSOR_INTERVAL="1", PENSIONSTRAEK_RETRY_AFTER_FAILURE="2")
    yield w, home, env


def test_a_sensor_launched_intake_killed_with_9_is_failed_and_its_work_done_without_a_hand(daemon_world):
    w, home, env = daemon_world
    deliver(w)
    pipe, data = snapshot_that_blocks(w)
    log = (home.parent / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, env=env, start_new_session=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )
    try:
        def blocked_run():
            return [
                r for r in intake_runs(home)
                if r.status == dg.DagsterRunStatus.STARTED and r.tags.get(monitoring.PROCESS_FOR_TAG) == r.run_id
            ]

        (first,) = wait_for(blocked_run, 240, "the sensor to launch an intake and its worker to start")
        worker = int(first.tags[PID_TAG])
        assert worker not in (daemon.pid, os.getpid())
        os.kill(worker, signal.SIGKILL)  # the run worker, in the middle of its work
        death = time.time()
        unblock(pipe, data)

        def done():
            runs = intake_runs(home)
            return [r for r in runs if r.run_id != first.run_id and r.status == dg.DagsterRunStatus.SUCCESS]

        (second,) = wait_for(done, 240, "a new intake run to succeed")[-1:]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert status(instance, first.run_id) == dg.DagsterRunStatus.FAILURE
            relaunched = instance.get_run_record_by_id(second.run_id).create_timestamp.timestamp()
        how = "a run retry" if second.tags.get("dagster/parent_run_id") == first.run_id else "the sensor"
        print(f"killed run {first.run_id[:8]} failed; {how} launched {second.run_id[:8]} {relaunched - death:.1f} s after the death")
        assert w.in_names("udk-pension", "SF6110_*") == []  # the waiting file was taken in
        assert w.store().decisions()[0]["status"] == "MODTAGET"
    finally:
        stop_process(daemon, group=True, timeout=60)  # the group this test started: daemon, code server, workers
        log.close()
