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
import os, signal, sys
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
    "archived": (StateStore, "write_once", None, lambda r, d: r.startswith("archive/received/") and r.endswith(".metadata")),
    # ledger and outcomes written, the decision (the commit point) not
    "ledger_written": (StateStore, "write_json", is_decision, None),
    # decided, nothing sent
    "decided": (StateStore, "commit_decision", None, lambda *a: True),
    # OUT/<kvittering> written, no trigger
    "out_data": (ExchangeClient, "write", None, lambda p, d: p.startswith("OUT/") and not p.endswith(".trigger")),
    # the trigger is in OUT/, the send not recorded as done
    "trigger": (ExchangeClient, "write", None, lambda p, d: p.endswith(".trigger")),
    # the send recorded as done, the delivery still in IN/
    "sent": (StateStore, "write_json", None, lambda r, v: r.startswith("sent/") and v.get("status") == "sent"),
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
