"""Exactly-once sending and receipts (pipelines/outbox.py, exchange.md "Writing" and "Receipts"),
and the Loebenummer versions (pipelines/deliveries.py, operations.md "Idempotency and audit").

Everything real: UDK's account is a local ExchangeClient in an exchange tree that the platform
emulator routes, the state store is a folder. A crash is a fault injected at one write: the client
or the store raises there, as a process that died at that instant would leave things."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.envelope import decode_receipt, encode_trigger, trigger_for
from pipelines.deliveries import make_versions, send_versions, versions
from pipelines.emulator import route
from pipelines.exchange import ExchangeClient, ExchangeResource, LocalExchangeClient
from pipelines.outbox import record_receipts, send
from pipelines.state import StateStore

NAME = "SF6111_0101_202612_001.xml"
DATA = b"<SF6111>the file</SF6111>\n"


class Crash(Exception):
    """The process died here."""


class CrashingClient(LocalExchangeClient):
    """UDK's account, dying at the first write of a path ending in `at`."""

    def __init__(self, root: str, at: str):
        super().__init__(root)
        self.at = at

    def write_all(self, files: dict[str, bytes]) -> None:  # write() is write_all of one file
        for path in files:
            if path.endswith(self.at):
                raise Crash(f"died before writing {path}")
        super().write_all(files)


class CrashingStore(StateStore):
    """The state store, dying when a send is about to be recorded as done."""

    def write_all(self, files: dict[str, bytes], **kwargs) -> None:
        # Records are written with write_all (a group of files' answers at a time).
        if any(relative.endswith("record.json") and json.loads(data).get("status") == "sent" for relative, data in files.items()):
            raise Crash("died before recording the send as done")
        super().write_all(files, **kwargs)


class Tree:
    """An exchange tree with the accounts udk-pension and kp, and UDK's state store."""

    def __init__(self, root: Path):
        self.root = root / "exchange"
        for account in ("udk-pension", "kp"):
            for folder in ("IN", "OUT"):
                (self.root / account / folder).mkdir(parents=True)
        self.state_url = str(root / "state")
        self.state = StateStore(self.state_url)
        self.client = ExchangeResource(url=str(self.udk)).open()

    @property
    def udk(self) -> Path:
        return self.root / "udk-pension"

    def names(self, account: str, folder: str) -> list[str]:
        return sorted(p.name for p in (self.root / account / folder).iterdir())

    def send(self, client: ExchangeClient | None = None, state: StateStore | None = None, data: bytes = DATA, name: str = NAME, recipients=("kp",)):
        return send(
            client or self.client, state or self.state, name=name, data=data,
            sender="udk-pension", recipients=list(recipients), kind="SF6111",
        )

    def route(self):
        return route(self.root)

    def identity(self, path: Path) -> tuple[int, int]:
        """Inode and mtime: a rewrite (atomic: a new file renamed over) changes the inode."""
        stat = path.stat()
        return stat.st_ino, stat.st_mtime_ns


@pytest.fixture
def tree(tmp_path) -> Tree:
    t = Tree(tmp_path)
    yield t
    t.client.close()


# --- send: exactly once ------------------------------------------------------------------------------


def test_sending_twice_writes_one_trigger(tree):
    first = tree.send()
    assert first.newly_sent
    assert tree.names("udk-pension", "OUT") == [NAME, f"{NAME}.trigger"]
    trigger = tree.udk / "OUT" / f"{NAME}.trigger"
    # The outbox gives the trigger the SHA-256 it hashed the data with: the trigger is the one
    # made from the data alone (size, SendersFileId of the content).
    assert trigger.read_bytes() == encode_trigger(trigger_for(NAME, DATA, "udk-pension", ["kp"]))
    before = tree.identity(trigger)

    again = tree.send()
    assert not again.newly_sent
    assert tree.identity(trigger) == before

    (outcome,) = tree.route()
    assert outcome.delivered
    # After routing OUT/ is empty: a third send must still not deliver the file again.
    assert not tree.send().newly_sent
    assert tree.names("udk-pension", "OUT") == []
    assert tree.route() == []
    assert tree.names("kp", "IN") == [NAME, f"{NAME}.metadata"]
    assert (tree.root / "kp" / "IN" / NAME).read_bytes() == DATA
    record = tree.state.sent_record(NAME)
    assert record["status"] == "sent" and record["recipients"] == ["kp"] and record["kind"] == "SF6111"
    assert tree.state.read(f"sent/{NAME}/data") == DATA


def test_a_crash_after_the_data_reached_out_writes_the_trigger_only(tree):
    with pytest.raises(Crash):
        tree.send(client=CrashingClient(str(tree.udk), at=".trigger"))
    assert tree.state.sent_record(NAME)["status"] == "sending"
    assert tree.names("udk-pension", "OUT") == [NAME]
    data_before = tree.identity(tree.udk / "OUT" / NAME)

    assert tree.send().newly_sent
    assert tree.names("udk-pension", "OUT") == [NAME, f"{NAME}.trigger"]
    assert tree.identity(tree.udk / "OUT" / NAME) == data_before  # the data was not written again
    assert tree.state.sent_record(NAME)["status"] == "sent"
    (outcome,) = tree.route()
    assert outcome.delivered and (tree.root / "kp" / "IN" / NAME).read_bytes() == DATA


def test_a_crash_after_the_trigger_reached_out_rewrites_nothing(tree):
    with pytest.raises(Crash):
        tree.send(state=CrashingStore(tree.state_url))
    assert tree.state.sent_record(NAME)["status"] == "sending"
    out = tree.udk / "OUT"
    before = {name: tree.identity(out / name) for name in (NAME, f"{NAME}.trigger")}

    tree.send()
    assert {name: tree.identity(out / name) for name in before} == before
    assert tree.state.sent_record(NAME)["status"] == "sent"
    assert len(tree.route()) == 1


def test_a_crash_whose_file_the_platform_already_took_is_not_sent_again(tree):
    with pytest.raises(Crash):
        tree.send(state=CrashingStore(tree.state_url))
    (outcome,) = tree.route()  # the platform took it meanwhile: OUT/ is empty, a receipt waits in IN/
    assert outcome.delivered
    assert tree.names("udk-pension", "OUT") == []
    assert tree.names("udk-pension", "IN") == [f"{NAME}.sftpreceipt"]

    tree.send()
    assert tree.names("udk-pension", "OUT") == []
    assert tree.state.sent_record(NAME)["status"] == "sent"
    assert tree.route() == []
    assert tree.names("kp", "IN") == [NAME, f"{NAME}.metadata"]


def test_a_crash_before_anything_reached_the_platform_sends_in_full(tree):
    with pytest.raises(Crash):
        tree.send(client=CrashingClient(str(tree.udk), at=NAME))
    assert tree.state.sent_record(NAME)["status"] == "sending"
    assert tree.names("udk-pension", "OUT") == [] and tree.names("udk-pension", "IN") == []

    assert tree.send().newly_sent
    assert tree.names("udk-pension", "OUT") == [NAME, f"{NAME}.trigger"]
    (outcome,) = tree.route()
    assert outcome.delivered and (tree.root / "kp" / "IN" / NAME).read_bytes() == DATA


def test_the_same_name_with_other_content_is_refused(tree):
    tree.send()
    with pytest.raises(RuntimeError, match="andet indhold"):
        tree.send(data=DATA + b"<!-- changed -->")
    assert (tree.udk / "OUT" / NAME).read_bytes() == DATA
    assert tree.state.read(f"sent/{NAME}/data") == DATA


def test_the_same_name_with_other_content_is_refused_after_a_crash_too(tree):
    with pytest.raises(Crash):
        tree.send(client=CrashingClient(str(tree.udk), at=NAME))
    with pytest.raises(RuntimeError, match="andet indhold"):
        tree.send(data=DATA + b"<!-- changed -->")
    assert tree.names("udk-pension", "OUT") == []


# --- record_receipts ---------------------------------------------------------------------------------


def test_a_success_receipt_acknowledges_the_send_and_is_archived(tree):
    tree.send()
    tree.route()
    raw = (tree.udk / "IN" / f"{NAME}.sftpreceipt").read_bytes()

    (recorded,) = record_receipts(tree.client, tree.state)
    assert (recorded.name, recorded.succeeded, recorded.known, recorded.errors) == (NAME, True, True, ())
    record = tree.state.sent_record(NAME)
    assert record["status"] == "acknowledged" and record["receipt_errors"] == []
    assert tree.state.read(f"sent/{NAME}/receipt.sftpreceipt") == raw
    assert tree.state.read(f"archive/receipts/{NAME}.sftpreceipt.0") == raw
    assert tree.names("udk-pension", "IN") == []
    assert record_receipts(tree.client, tree.state) == []  # nothing recorded twice


def test_an_error_receipt_fails_the_send_with_its_text(tree):
    tree.send(recipients=("nobody",))
    (outcome,) = tree.route()
    assert outcome.error_code == 104

    (recorded,) = record_receipts(tree.client, tree.state)
    assert not recorded.succeeded and recorded.known
    record = tree.state.sent_record(NAME)
    assert record["status"] == "failed"
    (error,) = record["receipt_errors"]
    assert error.startswith("104 UNKNOWN_RECIPIENT") and "nobody" in error
    assert tree.names("udk-pension", "IN") == []


def test_an_unreadable_receipt_fails_the_send(tree):
    tree.send()
    junk = b"this is not a receipt"
    (tree.udk / "IN" / f"{NAME}.sftpreceipt").write_bytes(junk)

    (recorded,) = record_receipts(tree.client, tree.state)
    assert not recorded.succeeded and recorded.known
    record = tree.state.sent_record(NAME)
    assert record["status"] == "failed"
    assert record["receipt_errors"][0].startswith("receipt not readable")
    assert tree.state.read(f"archive/receipts/{NAME}.sftpreceipt.0") == junk  # kept as received
    assert tree.names("udk-pension", "IN") == []


def test_a_receipt_for_a_file_udk_never_sent_is_recorded_as_unknown(tree):
    other = "SF2601_0101_202612_001.xml"
    (tree.udk / "OUT" / other).write_bytes(DATA)  # not through the outbox
    (tree.udk / "OUT" / f"{other}.trigger").write_bytes(encode_trigger(trigger_for(other, DATA, "udk-pension", ["kp"])))
    tree.route()
    raw = (tree.udk / "IN" / f"{other}.sftpreceipt").read_bytes()
    assert decode_receipt(raw).succeeded

    (recorded,) = record_receipts(tree.client, tree.state)
    assert (recorded.name, recorded.known) == (other, False)
    assert tree.state.sent_record(other) is None
    assert tree.state.read(f"archive/receipts/{other}.sftpreceipt.0") == raw
    assert tree.names("udk-pension", "IN") == []


def test_a_second_receipt_of_the_same_name_is_archived_beside_the_first(tree):
    tree.send()
    tree.route()
    first = (tree.udk / "IN" / f"{NAME}.sftpreceipt").read_bytes()
    record_receipts(tree.client, tree.state)
    (tree.udk / "IN" / f"{NAME}.sftpreceipt").write_bytes(b"second")
    record_receipts(tree.client, tree.state)
    assert tree.state.read(f"archive/receipts/{NAME}.sftpreceipt.0") == first
    assert tree.state.read(f"archive/receipts/{NAME}.sftpreceipt.1") == b"second"


def test_keep_leaves_the_receipt_in_in_and_records_it_once(tree):
    tree.send()
    tree.route()
    assert len(record_receipts(tree.client, tree.state, keep=True)) == 1
    assert tree.state.sent_record(NAME)["status"] == "acknowledged"
    assert tree.names("udk-pension", "IN") == [f"{NAME}.sftpreceipt"]
    # The next pass sees the same receipt still there: nothing recorded or archived again.
    assert record_receipts(tree.client, tree.state, keep=True) == []
    assert tree.state.listdir("archive/receipts") == [f"{NAME}.sftpreceipt.0"]


# --- deliveries: Loebenummer versions ----------------------------------------------------------------


def file_of(content: str):
    """An encoder whose bytes hold the content and the Loebenummer, as the real codecs' do."""
    return lambda loebenummer: f"<Fil><Loebenummer>{loebenummer}</Loebenummer>{content}</Fil>".encode()


def filnavn(loebenummer: int) -> str:
    return f"SF6111_0101_202612_{loebenummer:03d}.xml"


def version(state: StateStore, content: str):
    (made,) = make_versions(state, integration="sf6111", periode="2026-12", files=[("0101", file_of(content), filnavn)])
    return made


def send_it(tree: Tree, v) -> list[str]:
    return send_versions(tree.client, tree.state, [v], sender="udk-pension", recipient_for=lambda kk: "kp")


def test_unchanged_content_keeps_its_loebenummer(tree):
    first = version(tree.state, "A")
    assert (first.loebenummer, first.name, first.changed) == (1, filnavn(1), True)
    assert tree.state.read(f"outgoing/sf6111/2026-12/{filnavn(1)}") == file_of("A")(1)
    send_it(tree, first)

    again = version(tree.state, "A")
    assert (again.loebenummer, again.name, again.changed) == (1, filnavn(1), False)
    assert send_it(tree, again) == []  # nothing new goes out
    assert len(versions(tree.state, "sf6111", "2026-12", "0101")) == 1


def test_changed_content_gets_the_next_loebenummer(tree):
    first = version(tree.state, "A")
    assert send_it(tree, first) == [filnavn(1)]

    second = version(tree.state, "B")
    assert (second.loebenummer, second.name, second.changed) == (2, filnavn(2), True)
    assert tree.state.read(f"outgoing/sf6111/2026-12/{filnavn(2)}") == file_of("B")(2)
    assert tree.state.read(f"outgoing/sf6111/2026-12/{filnavn(1)}") == file_of("A")(1)  # never deleted
    assert send_it(tree, second) == [filnavn(2)]
    assert [v["loebenummer"] for v in versions(tree.state, "sf6111", "2026-12", "0101")] == [1, 2]


def test_a_version_sent_is_kept_once_under_both_its_names(tree):
    # sent/<name>/data is the made file itself (a hard link), not a second copy of its bytes.
    first = version(tree.state, "A")
    send_it(tree, first)
    made = Path(tree.state.path(f"outgoing/sf6111/2026-12/{filnavn(1)}"))
    kept = Path(tree.state.path(f"sent/{filnavn(1)}/data"))
    assert kept.read_bytes() == file_of("A")(1)
    assert kept.stat().st_ino == made.stat().st_ino and kept.stat().st_nlink == 2
    assert kept.stat().st_mode & 0o777 == 0o600
    # A file sent without a kept copy (send, the messages' way) is written as before.
    tree.send(name="SF6111_0147_202612_001.xml")
    assert Path(tree.state.path("sent/SF6111_0147_202612_001.xml/data")).stat().st_nlink == 1


def test_a_version_made_but_never_sent_is_replaced_under_the_same_number(tree):
    version(tree.state, "A")  # made; a blocking check stopped the delivery
    replaced = version(tree.state, "B")
    assert (replaced.loebenummer, replaced.name, replaced.changed) == (1, filnavn(1), True)
    assert tree.state.read(f"outgoing/sf6111/2026-12/{filnavn(1)}") == file_of("B")(1)
    (only,) = versions(tree.state, "sf6111", "2026-12", "0101")
    assert only["loebenummer"] == 1
    assert send_it(tree, replaced) == [filnavn(1)]
    tree.route()
    assert (tree.root / "kp" / "IN" / filnavn(1)).read_bytes() == file_of("B")(1)


def test_a_version_whose_send_crashed_midway_is_not_reused_for_other_content(tree):
    # The send started (the outbox recorded it): the platform may have the name, so it is used up.
    first = version(tree.state, "A")
    with pytest.raises(Crash):
        send_versions(
            CrashingClient(str(tree.udk), at=".trigger"), tree.state, [first],
            sender="udk-pension", recipient_for=lambda kk: "kp",
        )
    second = version(tree.state, "B")
    assert (second.loebenummer, second.name, second.changed) == (2, filnavn(2), True)
    assert send_it(tree, second) == [filnavn(2)]  # not "sendt før med andet indhold"


def test_back_to_the_content_last_sent_sends_nothing(tree):
    send_it(tree, version(tree.state, "A"))
    version(tree.state, "B")  # made, never sent
    back = version(tree.state, "A")
    assert (back.loebenummer, back.name, back.changed) == (1, filnavn(1), False)
    assert send_it(tree, back) == []
    assert [v["loebenummer"] for v in versions(tree.state, "sf6111", "2026-12", "0101")] == [1]


def test_answers_that_come_together_are_recorded_together(monkeypatch):
    """deliver's group commit counts from a group's first answer: a transport that is slow to
    start (a file transport writes every file and trigger first) and then answers for all of
    its items has them recorded in one round; answers that trickle in are still recorded a
    group at a time."""
    import time

    from pipelines import outbox

    monkeypatch.setattr(outbox, "GROUP_COMMIT_SECONDS", 0.3)

    class Book:
        group_size = 1000

        def __init__(self):
            self.rounds = []
            self.items = []

        def intend(self, items):
            self.items = list(items)

        def undelivered(self):
            return self.items

        def record(self, answers):
            self.rounds.append([a.key for a in answers])

    class Transport:
        def __init__(self, pause_between: float):
            self.pause_between = pause_between

        def send(self, items):
            time.sleep(0.4)  # writing everything first: longer than GROUP_COMMIT_SECONDS
            for item in items:
                yield outbox.Answer(key=item.key, final=True, outcome="sent")
                time.sleep(self.pause_between)

    items = [outbox.Outgoing(key=f"f{i}", data=b"x") for i in range(3)]
    burst = Book()
    outbox.deliver(burst, Transport(0.0), items)
    assert burst.rounds == [["f0", "f1", "f2"]]
    trickle = Book()
    outbox.deliver(trickle, Transport(0.35), items)
    assert trickle.rounds == [["f0", "f1"], ["f2"]]
