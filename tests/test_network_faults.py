"""Network faults against a real OpenSSH sshd (issue 7, item 5): the connection cut mid-read and
mid-write (a TCP proxy on loopback, tests/netfault.py), the server stopped mid-read and mid-write
and started again by PID on the same port, and the server refusing writes (a folder the account may
not write; a full file system where this machine allows mounting a small tmpfs).

Transient faults are retried within the run (the client's reconnects with backoff); a fault that
outlives them, and a refusal, fail the run with one line naming what to fix; a later run completes
the work: every file registered once, one kvittering per file, each file sent exactly once, and
no partial or orphan file in the exchange."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from contracts.envelope import encode_trigger, trigger_for
from contracts.sf6110 import decode_kvittering
from pipelines.emulator import route
from pipelines.storage import TEMP_PREFIX
from tests.netfault import DOWN, UP, CuttingProxy, cutting_proxy
from tests.sshd import SftpServer, running_sftp_server
from tests.test_intake import ALICE, UDEN_SAG, event_texts, opret, unmasked_cprs, write_pensionssager
from tests.world import World, request_file

pytestmark = pytest.mark.sshd

NAME = "SF6110_0101_20261201120000.xml"
# About 1 MB to read and a kvittering of about 0.9 MB to write: each spans many SFTP packets, so a
# cut after a few hundred kB falls in the middle of the transfer.
INSTRUCTIONS = 2500
DATA = request_file(
    "0101",
    [opret("NET-ALICE", ALICE, fra_periode="2027-01")]
    + [opret(f"NET-{i:05d}", UDEN_SAG, fra_periode="2027-01") for i in range(1, INSTRUCTIONS)],
)
MID_TRANSFER = 300_000  # bytes after the fault is armed: well past the handshake and the listings


@pytest.fixture(scope="module")
def fault_server() -> Iterator[SftpServer]:
    """This module's own sshd: the tests stop and start it, which the session's must not suffer."""
    with running_sftp_server() as server:
        yield server


@pytest.fixture
def server(fault_server: SftpServer) -> Iterator[SftpServer]:
    fault_server.start_listening()  # a test that failed half-way may have left it stopped
    fault_server.clear()
    yield fault_server
    fault_server.start_listening()
    fault_server.clear()


@pytest.fixture
def proxy(server: SftpServer) -> Iterator[CuttingProxy]:
    with cutting_proxy(server.port) as running:
        yield running


def world_via(tmp_path: Path, server: SftpServer, proxy: CuttingProxy, register: bool = True, **settings) -> World:
    """Intake and settlement talk to udk-pension's account through the proxy, host key verified."""
    resource = server.resource_for(
        "udk-pension",
        url=f"sftp://udk-pension@127.0.0.1:{proxy.port}/udk-pension",
        known_hosts=str(server.known_hosts_via(proxy.port)),
        **({"retries": 4, "backoff_seconds": 0.2} | settings),
    )
    world = World(tmp_path, dg.DagsterInstance.ephemeral(), exchange=resource)
    if register:
        write_pensionssager(world.register_dir)
    return world


def deliver(server: SftpServer, name: str = NAME, data: bytes = DATA) -> None:
    """kp sends over SFTP (directly, not through the proxy); the platform routes it to UDK."""
    with server.resource_for("kp").open() as kp:
        kp.write(f"OUT/{name}", data)
        kp.write(f"OUT/{name}.trigger", encode_trigger(trigger_for(name, data, "kp", ["udk-pension"])))
    (outcome,) = route(server.root)
    assert outcome.delivered, outcome


def leftovers(server: SftpServer) -> list[str]:
    """Temporary files anywhere in the exchange tree: an interrupted write nobody cleaned up."""
    return sorted(str(p.relative_to(server.root)) for p in server.root.rglob(f"{TEMP_PREFIX}*"))


def assert_taken_in_once(w: World, server: SftpServer) -> None:
    """Nothing lost, nothing doubled: one decision, one registration, the raw bytes archived, one
    kvittering in OUT/ with its trigger, nothing left in IN/, no orphan anywhere."""
    store = w.store()
    (decision,) = store.decisions()
    uuid = decision["file_transfer_uuid"]
    assert (decision["filnavn"], decision["status"], decision["antal_modtaget"]) == (NAME, "MODTAGET", 1)
    assert store.read(f"archive/received/{uuid}/{NAME}") == DATA
    assert store.ledger()["anmodning_id"].to_list() == ["NET-ALICE"]
    kvittering = f"SF6110K_0101_{uuid}.xml"
    assert sorted(p.name for p in (server.root / "udk-pension" / "OUT").iterdir()) == [kvittering, f"{kvittering}.trigger"]
    assert store.sent_record(kvittering)["status"] == "sent"
    assert list((server.root / "udk-pension" / "IN").iterdir()) == []
    assert leftovers(server) == []

    (routed,) = route(server.root)
    assert routed.delivered and routed.recipients == ("kp",)
    kp_in = server.root / "kp" / "IN"
    assert sorted(p.name for p in kp_in.glob("SF6110K_*.xml")) == [kvittering]
    header, anmodninger = decode_kvittering((kp_in / kvittering).read_bytes())
    assert header["file_transfer_uuid"] == uuid and anmodninger.height == INSTRUCTIONS
    assert unmasked_cprs(event_texts(w)) == []


def one_line(outcome) -> str:
    (problem,) = outcome.problems
    assert "\n" not in problem
    return problem


# --- transient: retried within the run --------------------------------------------------------


@pytest.mark.parametrize("direction", [DOWN, UP], ids=["mid-read", "mid-write"])
def test_a_connection_cut_mid_transfer_is_retried_and_the_run_completes(tmp_path, server, proxy, direction):
    deliver(server)
    w = world_via(tmp_path, server, proxy)
    proxy.trip_after(direction, MID_TRANSFER)

    outcome = w.intake()

    assert outcome.success, outcome.problems
    assert proxy.tripped and proxy.cuts == 1  # the fault did happen, in the middle of the run
    assert proxy.connections >= 2  # and the client reconnected
    assert_taken_in_once(w, server)


@pytest.mark.parametrize("direction", [DOWN, UP], ids=["mid-read", "mid-write"])
def test_the_server_stopped_mid_transfer_and_started_again_is_retried(tmp_path, server, proxy, direction):
    deliver(server)
    w = world_via(tmp_path, server, proxy)
    listener = server.pid
    restart = threading.Timer(0.6, server.start_listening)  # back within the client's backoff (0.2 s doubling)

    def outage() -> None:
        server.stop_listening()
        restart.start()

    proxy.trip_after(direction, MID_TRANSFER, outage)
    try:
        outcome = w.intake()
    finally:
        restart.join()

    assert outcome.success, outcome.problems
    assert proxy.tripped and server.pid != listener  # it was stopped and a new listener serves
    assert_taken_in_once(w, server)


# --- outlives the retries: fails clearly, the next run completes ---------------------------------


@pytest.mark.parametrize("direction", [DOWN, UP], ids=["mid-read", "mid-write"])
def test_a_server_down_longer_than_the_retries_fails_the_run_and_the_next_run_completes(
    tmp_path, server, proxy, direction
):
    deliver(server)
    w = world_via(tmp_path, server, proxy, retries=2, backoff_seconds=0.05)
    proxy.trip_after(direction, MID_TRANSFER, server.stop_listening)

    failed = w.intake()

    assert not failed.success
    problem = one_line(failed)
    assert f"sftp://udk-pension@127.0.0.1:{proxy.port}/udk-pension" in problem and "failed 3 times" in problem
    assert unmasked_cprs([problem, *event_texts(w)]) == []
    # A write cut off by the outage may have left its temporary file: the next run removes it.

    server.start_listening()
    again = w.intake()
    assert again.success, again.problems
    assert_taken_in_once(w, server)


# --- permanent: refused, named, not retried ------------------------------------------------------


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    mode = folder.stat().st_mode & 0o777
    folder.chmod(0o555)  # the account owns it but may not write in it (sshd runs as the account)
    try:
        yield
    finally:
        folder.chmod(mode)


@pytest.mark.parametrize("folder", ["OUT", "IN"])
def test_a_folder_the_account_may_not_write_fails_at_once_naming_folder_and_account(tmp_path, server, proxy, folder):
    deliver(server)
    w = world_via(tmp_path, server, proxy, backoff_seconds=1.0)

    with read_only(server.root / "udk-pension" / folder):
        refused = w.intake()

    assert not refused.success
    problem = one_line(refused)
    assert "refused by the server: permission denied for the account 'udk-pension'" in problem, problem
    assert f" {folder}/" in problem and "read and write access" in problem
    assert proxy.connections == 1  # not retried: retrying cannot help
    assert unmasked_cprs([problem, *event_texts(w)]) == []

    fixed = w.intake()
    assert fixed.success, fixed.problems
    assert_taken_in_once(w, server)


@contextlib.contextmanager
def full_file_system(folder: Path, account: str, size: str = "128k") -> Iterator[None]:
    """A small tmpfs over `folder`, owned by the account, when this machine lets us mount one."""
    user = pwd.getpwnam(account)
    options = f"size={size},mode=0755,uid={user.pw_uid},gid={user.pw_gid}"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the permission tests cover refused writes")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_full_file_system_fails_the_write_clearly_and_the_next_run_completes(tmp_path, server, proxy):
    deliver(server)
    w = world_via(tmp_path, server, proxy)
    out = server.root / "udk-pension" / "OUT"

    with full_file_system(out, "udk-pension"):
        full = w.intake()
        assert os.listdir(out) == []  # the partial kvittering was removed

    assert not full.success
    problem = one_line(full)
    assert "write OUT/SF6110K_0101_" in problem and "disk is full" in problem and "'udk-pension'" in problem, problem

    again = w.intake()
    assert again.success, again.problems
    assert_taken_in_once(w, server)


# --- settlement: SF6111 and SF2601 sent exactly once through an outage ----------------------------


def month_taken_in(tmp_path: Path, server: SftpServer, proxy: CuttingProxy) -> World:
    """The month of tests/test_settlement_flow.py delivered and taken in over SFTP (no faults)."""
    from tests.test_settlement_flow import MONTH_FILES, PREV, P, month_beregning, month_sager, write_register

    w = world_via(tmp_path, server, proxy, register=False, retries=1, backoff_seconds=0.05)
    write_register(w.register_dir, PREV, month_sager(PREV), month_beregning(PREV))
    with server.resource_for("kp").open() as kp:
        for name, kommunekode, _, rows in MONTH_FILES:
            data = request_file(kommunekode, rows)
            kp.write(f"OUT/{name}", data)
            kp.write(f"OUT/{name}.trigger", encode_trigger(trigger_for(name, data, "kp", ["udk-pension"])))
    assert all(o.delivered for o in route(server.root))
    for name, _, received, _ in MONTH_FILES:
        stamp = received.timestamp()
        os.utime(server.root / "udk-pension" / "IN" / f"{name}.metadata", (stamp, stamp))
    intake = w.intake()
    assert intake.success, intake.problems
    route(server.root)  # the kvitteringer go to kp
    for account in ("kp", "udk-pension"):
        for path in (server.root / account / "IN").iterdir():
            path.unlink()  # kp has read them; UDK's technical receipts are not this test's business
    write_register(w.register_dir, P, month_sager(P), month_beregning(P))
    return w


# What a settlement of that month uploads through the proxy, SSH included: 18,443 bytes measured
# on 2026-12-01. The outage falls about half way in; `proxy.tripped`
# fails the test should the figure ever shrink below them.
SETTLEMENT_UPLOAD_BYTES = 18_000
SETTLEMENT_FILES = ["SF2601_0751_202610_001.xml", "SF6111_0101_202610_001.xml", "SF6111_0751_202610_001.xml"]


@pytest.mark.parametrize("fraction", [0.5])
def test_an_outage_during_settlement_sends_each_file_exactly_once_on_the_next_run(tmp_path, server, proxy, fraction):
    from tests.test_settlement_flow import P

    w = month_taken_in(tmp_path, server, proxy)
    before = proxy.passed[UP]
    proxy.trip_after(UP, int(SETTLEMENT_UPLOAD_BYTES * fraction), server.stop_listening)

    failed = w.settle(P)

    assert proxy.tripped, "the outage did not happen during the settlement"
    assert not failed.success
    assert failed.problems and all("\n" not in p for p in failed.problems), failed.problems
    assert any("failed 2 times" in p for p in failed.problems), failed.problems
    server.start_listening()
    again = w.settle(P)
    assert again.success, again.problems
    out = server.root / "udk-pension" / "OUT"
    assert sorted(p.name for p in out.iterdir()) == sorted([*SETTLEMENT_FILES, *(f"{n}.trigger" for n in SETTLEMENT_FILES)])
    assert leftovers(server) == []
    assert sorted(o.name for o in route(server.root) if o.delivered) == SETTLEMENT_FILES
    records = [r for r in w.store().sent_records() if r["kind"] in ("SF6111", "SF2601")]
    assert sorted(r["name"] for r in records) == SETTLEMENT_FILES  # one record each, each sent once
    assert proxy.passed[UP] > before
    rerun = w.settle(P)
    assert rerun.success and list(out.iterdir()) == []  # and nothing is sent a second time

