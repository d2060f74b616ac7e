"""`haendelser P` run in a child process that kills itself (SIGKILL) at a chosen point, for the
crash sweep of tests/test_beskeder_amqp.py. Nothing is mocked: the real run, really killed.

Two depths: the command's Dagster run (`command=True`: the job, its assets and checks, a few
seconds a run), or the machinery its two message assets run (`command=False`:
pipelines.haendelser.make_and_deliver with the assets' own makers, for sf1411d then sf2610, as the
job's assets do; a fraction of a second), so that a sweep over many points stays lean.

Points: `write` the k-th step of writing to the state store (pipelines/storage.py's hook:
the contract verdicts, the outbox's intents, each group of answers); `publish` right after the
k-th message handed to the broker (pipelines/amqp.py `publish`); `record` right after the k-th
group of answers recorded. The children are forked from a fork server that has imported the
pipeline but run nothing, so each starts in milliseconds."""

import multiprocessing
import os
import signal
from collections import Counter

from tests.sweep import FORKS  # the fork server, shared with tests/test_intake_crash.py

POINTS = ("write", "publish", "record")


def _dying(original, n: int):
    calls = Counter()

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= n:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    return wrapper


def _run(point: str | None, n: int, periode: str, env: dict, command: bool) -> None:
    os.environ.update(env)
    from pipelines import amqp, beskeder, storage

    beskeder.MessageBook.group_size = 5  # more commit points in a small period
    if point == "write":
        os.environ[storage.KILL_AFTER_WRITES] = str(n)
    elif point == "publish":
        amqp.publish = _dying(amqp.publish, n)
    elif point == "record":
        beskeder.MessageBook.record = _dying(beskeder.MessageBook.record, n)
    elif point is not None:
        raise SystemExit(f"unknown point {point!r}")
    if command:
        from pipelines.definitions import build_definitions
        from pipelines.runner import run_job

        outcome = run_job("haendelser", first_periode=periode, definitions=build_definitions())
        if not outcome.success:
            raise SystemExit(f"haendelser {periode} failed: {outcome.problems}")
        return
    from assets import sf1411d, sf2610
    from pipelines.agreements import load_agreements
    from pipelines.haendelser import make_and_deliver
    from pipelines.register import RegisterResource
    from pipelines.resources import BeskedfordelerResource, StateResource

    store, register, fordeler = StateResource.from_env().store(), RegisterResource.from_env(), BeskedfordelerResource()
    makers = {
        sf1411d.KIND: sf1411d.maker(store, load_agreements(), fordeler.afsender()),
        sf2610.KIND: sf2610.maker(fordeler.modtager_sf2610(), fordeler.afsender()),
    }
    for kind, make in makers.items():
        make_and_deliver(store, register, fordeler.broker_url(), [periode], kind, make)


def start(periode: str, env: dict, point: str | None = None, n: int = 0, *, command: bool = False) -> multiprocessing.Process:
    """Start `haendelser periode` in a child with `env` (killed at the n-th `point`, when given)."""
    child = FORKS.Process(target=_run, args=(point, n, periode, env, command))
    child.start()
    return child


def exit_status(child: multiprocessing.Process) -> int:
    """A started child's exit status: -SIGKILL when killed, 0 when it completed."""
    child.join(timeout=300)
    return child.exitcode


def haendelser(periode: str, env: dict, point: str | None = None, n: int = 0, *, command: bool = False) -> int:
    """Run `haendelser periode` in a child (see `start`); its exit status (see `exit_status`)."""
    return exit_status(start(periode, env, point, n, command=command))
