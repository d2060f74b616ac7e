"""A run killed half-way and run again gives exactly one decision, one registration per instruction
and one kvittering per file (sf6110.md "Received time": the decision is recorded once; exchange.md
"Exactly once"; issue 3).

Intake runs in a subprocess on the real local exchange and state store; the subprocess wraps a real
function so that it kills itself with SIGKILL at a chosen call (nothing is mocked: the wrapped
function does its work, or is about to). The platform routes between the runs as it would, also
right after the crash. Then intake runs again, in-process through Dagster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.envelope import FileDescriptor, FileMetadata, encode_metadata
from pipelines.exchange import LocalExchangeClient
from pipelines.outbox import send
from tests.test_intake import (
    ALICE,
    BOB,
    CARL,
    UDEN_SAG,
    decoded,
    deliveries_in,
    new_world,
    opret,
    take_kvitteringer,
)
from tests.world import World, copenhagen, request_file

REPO = Path(__file__).resolve().parents[1]

# The subprocess: run_intake with the real local exchange, state store and register, with one real
# function wrapped to SIGKILL the process at the `nth` call that matches the chosen point.
CRASHING_INTAKE = r"""
import json, os, signal, sys
from pipelines import intake, outbox
from pipelines.config import default_partners
from pipelines.exchange import ExchangeClient, LocalExchangeClient
from pipelines.register import RegisterResource
from pipelines.state import StateStore

exchange, state_dir, register_dir, point, nth = sys.argv[1:]
calls = 0

def kill_at(hit):
    global calls
    if hit:
        calls += 1
        if calls == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)

def wrap(owner, name, before=None, after=None):
    real = getattr(owner, name)
    def wrapper(self, *args, **kwargs):
        if before:
            kill_at(before(*args))
        result = real(self, *args, **kwargs)
        if after:
            kill_at(after(*args))
        return result
    setattr(owner, name, wrapper)

is_decision = lambda relative, value=None: relative.startswith("intake/") and relative.endswith(".json")
points = {
    # the receipt is recorded against the sent file, not yet removed from IN/
    "receipt_recorded": (StateStore, "write_json", None, lambda r, v: r.startswith("sent/") and v.get("status") == "acknowledged"),
    # data and metadata archived, nothing decided
    "archived": (StateStore, "write_all", None, lambda files: any(r.startswith("archive/received/") and r.endswith(".metadata") for r in files)),
    # ledger and outcomes written, the decision (the commit point) not
    "ledger_written": (StateStore, "write_json", is_decision, None),
    # decided, nothing sent
    "decided": (StateStore, "commit_decision", None, lambda *a: True),
    # OUT/<kvittering> written, no trigger
    # (the outbox writes a group of files with write_all: data files, then their triggers)
    "out_data": (ExchangeClient, "write_all", None, lambda files: any(p.startswith("OUT/") and not p.endswith(".trigger") for p in files)),
    # the trigger is in OUT/, the send not recorded as done
    "trigger": (ExchangeClient, "write_all", None, lambda files: any(p.endswith(".trigger") for p in files)),
    # the send recorded as done, the delivery still in IN/
    "sent": (StateStore, "write_all", None, lambda files, **kw: any(
        r.startswith("sent/") and r.endswith("/record.json") and json.loads(d).get("status") == "sent" for r, d in files.items()
    )),
    # the pair half removed from IN/
    "half_removed": (ExchangeClient, "remove", None, lambda p: p.endswith(".metadata") or p.startswith("IN/SF6110_")),
}
owner, name, before, after = points[point]
wrap(owner, name, before, after)

with LocalExchangeClient(exchange) as client:
    intake.run_intake(client, StateStore(state_dir), default_partners(), RegisterResource(url=register_dir).newest_pensionssager)
"""

FILES = {
    "SF6110_0101_1.xml": (
        request_file("0101", [opret("K1", ALICE), opret("K2", UDEN_SAG), opret("K3", BOB, "75")]),
        copenhagen(2026, 10, 1, 9, 0),
    ),
    "SF6110_0147_1.xml": (request_file("0147", [opret("F1", BOB, "20")]), copenhagen(2026, 10, 1, 9, 1)),
    "SF6110_0151_1.xml": (request_file("0151", [opret("B1", CARL), opret("B1", CARL)]), copenhagen(2026, 10, 1, 9, 2)),
}
EXPECTED_OUTCOMES = {
    "SF6110_0101_1.xml": [("K1", "MODTAGET", None), ("K2", "AFVIST", "U03"), ("K3", "MODTAGET", None)],
    "SF6110_0147_1.xml": [("F1", "MODTAGET", None)],
    "SF6110_0151_1.xml": [("B1", "MODTAGET", None), ("B1", "AFVIST", "U02")],
}
EARLIER = "SF6111_0101_202609_001.xml"  # sent before; its technical receipt waits in IN/


def crashing_intake(w: World, point: str, nth: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable, "-c", CRASHING_INTAKE,
            str(w.exchange_root / "udk-pension"), str(w.state_dir), str(w.register_dir), point, str(nth),
        ],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,  # it is meant to die
    )  # fmt: skip


@pytest.mark.parametrize(
    "point, nth, routed_between",
    [
        ("receipt_recorded", 1, False),
        ("archived", 2, False),
        ("ledger_written", 2, False),
        ("decided", 2, False),
        ("out_data", 2, False),
        ("out_data", 2, True),
        ("trigger", 2, False),
        ("trigger", 2, True),
        ("sent", 2, False),
        ("sent", 2, True),
        ("half_removed", 3, False),  # the second file's metadata is gone, its data not yet
        ("half_removed", 3, True),
    ],
)
def test_a_killed_run_is_finished_by_the_next_with_one_kvittering_and_one_registration(tmp_path, point, nth, routed_between):
    crash_and_run_again(new_world(tmp_path), point, nth, routed_between)


def test_a_run_killed_while_removing_a_quarantined_pair_is_finished_by_the_next(tmp_path):
    w = new_world(tmp_path)
    inbox = w.inbox("udk-pension")
    (inbox / "SF6110_bad.xml").write_bytes(b"<x/>")
    metadata = encode_metadata(FileMetadata("9d0f6c1e-1111-4000-8000-000000000001", FileDescriptor("SF6110_bad.xml", 99, "kp", ("udk-pension",))))
    (inbox / "SF6110_bad.xml.metadata").write_bytes(metadata)
    earliest = copenhagen(2026, 9, 30, 12, 0).timestamp()
    os.utime(inbox / "SF6110_bad.xml.metadata", (earliest, earliest))

    crash_and_run_again(w, "half_removed", 1, routed_between=False)  # its data removed, not its metadata
    (folder,) = (w.state_dir / "archive" / "quarantine").iterdir()
    assert (folder / "SF6110_bad.xml.metadata").read_bytes() == metadata


def crash_and_run_again(w: World, point: str, nth: int, routed_between: bool) -> None:
    for name, (data, received) in FILES.items():
        w.deliver(name, data, received=received)
    with LocalExchangeClient(str(w.exchange_root / "udk-pension")) as client:
        send(client, w.store(), name=EARLIER, data=b"<SF6111/>", sender="udk-pension", recipients=["kp"], kind="SF6111")
    w.route()
    reached_kp = list(take_kvitteringer(w).items())  # kp reads its IN/ after every routing pass

    crashed = crashing_intake(w, point, nth)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    if routed_between:
        w.route()
        reached_kp += take_kvitteringer(w).items()

    rerun = w.intake()
    assert rerun.success, rerun.problems
    assert deliveries_in(w) == []
    w.route()
    reached_kp += take_kvitteringer(w).items()
    assert w.intake().success  # records the receipts of what the rerun sent
    assert w.in_names("udk-pension") == [], "nothing is left in IN/"

    # Exactly one kvittering per file reached kp, with the outcomes of the one decision.
    assert len(reached_kp) == len(FILES), [name for name, _ in reached_kp]
    kvitteringer = decoded(dict(reached_kp))
    assert {name: rows for name, (_, rows) in kvitteringer.items()} == EXPECTED_OUTCOMES

    store = w.store()
    decisions = store.decisions()
    assert sorted(d["filnavn"] for d in decisions) == sorted(FILES)
    assert sorted(d["file_transfer_uuid"] for d in decisions) == sorted(h["file_transfer_uuid"] for h, _ in kvitteringer.values())
    ledger = store.ledger()
    assert sorted(zip(ledger["filnavn"], ledger["anmodning_id"])) == [
        ("SF6110_0101_1.xml", "K1"), ("SF6110_0101_1.xml", "K3"), ("SF6110_0147_1.xml", "F1"), ("SF6110_0151_1.xml", "B1"),
    ]  # fmt: skip

    # Every file sent (the earlier one and the three kvitteringer) was sent once and acknowledged.
    records = store.sent_records()
    assert sorted(r["name"] for r in records) == sorted([EARLIER] + [f"SF6110K_{h['kommunekode']}_{h['file_transfer_uuid']}.xml" for h, _ in kvitteringer.values()])
    assert {r["name"]: r["status"] for r in records} == {r["name"]: "acknowledged" for r in records}
    receipts = store.listdir("archive/receipts")
    assert len(receipts) == len(records), receipts  # each receipt archived once
    assert json.loads((w.state_dir / "sent" / EARLIER / "record.json").read_text())["status"] == "acknowledged"


# --- Kill at every step (issue 7 "Crash at any point") ----------------------------------------------
#
# The hook of pipelines/storage.py (PENSIONSTRAEK_TEST_KILL_AFTER_WRITES=k) kills the process with
# SIGKILL at its k-th step of writing: a temporary file written, a rename done, a file removed, in
# the state store and in the exchange alike. Each k runs in a fresh copy of the same world, in a
# child process, until a k at which the run completes. The child is forked from a fork server that
# has imported the pipeline but run nothing (so no thread pool is copied into it): a real process,
# really killed, that starts in milliseconds instead of an interpreter's start-up. After each kill:
# the platform routes, time passes (the grace after which a dead write's temporary file is
# removed), intake or settlement runs again, and nothing may be lost, doubled or left half-written.
# The next k's child runs while this k is finished and checked (tests/sweep.py).

import contextlib  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
import multiprocessing  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

from pipelines import storage  # noqa: E402
from tests.kill_intake import intake_once, run_killed  # noqa: E402
from tests.sweep import FORKS, one_ahead  # noqa: E402

MAX_STEPS = 400


def killed_at_steps(work: str, template: Path, world: Callable[[Path], World], steps: range) -> Iterator[tuple[int, World, bool]]:
    """For each step: a fresh copy of `template` (made by `world(root)`), `work` (intake or settle)
    run on it in a child process with the kill hook at that step; (step, world, True if the hook
    killed it, False if it completed). The next step's child is started before one is handed out."""

    def start(step: int) -> tuple[int, World, multiprocessing.Process]:
        w = world(template.parent / f"k{step}")
        shutil.rmtree(w.root)
        shutil.copytree(template, w.root, symlinks=True)
        child = FORKS.Process(target=run_killed, args=(work, str(w.root), step))
        child.start()
        return step, w, child

    def wait(started: tuple[int, World, multiprocessing.Process]) -> tuple[World, bool]:
        step, w, child = started
        child.join(timeout=300)
        if child.exitcode == -signal.SIGKILL:
            return w, True
        assert child.exitcode == 0, f"the {work} run failed at step {step} without being killed ({child.exitcode})"
        return w, False

    with contextlib.closing(one_ahead(steps, start, wait)) as points:
        for step, (w, killed) in points:
            yield step, w, killed


def later(root: Path) -> None:
    """Time passes: every temporary file is older than the grace of a dead write."""
    hour_ago = time.time() - 3600
    for path in root.rglob(f"{storage.TEMP_PREFIX}*"):
        os.utime(path, (hour_ago, hour_ago))


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"{storage.TEMP_PREFIX}*"))


def test_intake_killed_at_every_step_loses_and_doubles_nothing(tmp_path):
    template = new_world(tmp_path / "template")
    for name, (data, received) in FILES.items():
        template.deliver(name, data, received=received)
    with LocalExchangeClient(str(template.exchange_root / "udk-pension")) as client:
        send(client, template.store(), name=EARLIER, data=b"<SF6111/>", sender="udk-pension", recipients=["kp"], kind="SF6111")
    template.route()
    take_kvitteringer(template)

    kills = 0
    # Every other step (a full sweep, every step, killed at 79 points: see the README).
    for step, w, killed in killed_at_steps("intake", template.root, new_world, range(1, MAX_STEPS, 2)):
        if not killed:
            break
        kills += 1
        reached_kp = []
        if step % 2:  # the platform routes before the next run, or not
            w.route()
            reached_kp += take_kvitteringer(w).items()
        later(w.root)
        intake_once(w)
        w.route()
        reached_kp += take_kvitteringer(w).items()
        intake_once(w)  # records the receipts of what the rerun sent
        assert leftovers(w.root) == [], step
        assert w.in_names("udk-pension") == [], step
        kvitteringer = decoded(dict(reached_kp))
        assert len(reached_kp) == len(FILES), (step, [n for n, _ in reached_kp])
        assert {name: rows for name, (_, rows) in kvitteringer.items()} == EXPECTED_OUTCOMES, step
        store = w.store()
        assert sorted(d["filnavn"] for d in store.decisions()) == sorted(FILES), step
        assert store.ledger().height == 4, step
        records = store.sent_records()
        assert {r["status"] for r in records} == {"acknowledged"} and len(records) == len(FILES) + 1, step
        assert len(store.listdir("archive/receipts")) == len(records), (step, store.listdir("archive/receipts"))
        shutil.rmtree(w.root)
    else:
        pytest.fail(f"intake never completed within {MAX_STEPS} steps")
    assert kills >= 35, kills
    print(f"\nintake: killed at {kills} distinct steps, each finished by the next run")  # for README figures


def test_settlement_killed_at_steps_sends_each_file_exactly_once(tmp_path):
    from tests import test_settlement_flow as flow

    template = flow.new_world(tmp_path / "template")
    flow.take_in_month(template)
    take_kvitteringer(template)
    complete = flow.new_world(tmp_path / "complete")
    shutil.rmtree(complete.root)
    shutil.copytree(template.root, complete.root, symlinks=True)
    assert complete.settle(flow.P).success
    expected = sorted(flow.settlement_sent(complete))
    assert expected

    kills = 0
    # Sparser than intake: each point is a whole settlement.
    for step, w, killed in killed_at_steps("settle", template.root, flow.new_world, range(1, MAX_STEPS, 5)):
        if not killed:
            break
        kills += 1
        w.route()
        later(w.root)
        outcome = w.settle(flow.P)
        assert outcome.success, (step, outcome.problems)
        w.route()
        intake_once(w)  # the receipts; and any temporary file left in OUT/
        assert leftovers(w.root) == [], step
        # Each period file sent exactly once: one record, one delivery to its recipient.
        assert sorted(flow.settlement_sent(w)) == expected, step
        delivered = sorted(p.name for account in ("kp", "ky") for p in w.inbox(account).glob("SF26*_*.xml")) + sorted(
            p.name for p in w.inbox("kp").glob("SF6111_*.xml")
        )
        assert sorted(delivered) == expected, step
        shutil.rmtree(w.root)
    else:
        pytest.fail(f"settlement never completed within {MAX_STEPS} steps")
    assert kills >= 10, kills
    print(f"\nsettlement: killed at {kills} distinct steps, each finished by the next run")
