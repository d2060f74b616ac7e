"""The platform emulator (exchange.md "The platform in this product"): one routing pass on a real tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from contracts.envelope import (
    SFTP_NS,
    FileDescriptor,
    Trigger,
    decode_metadata,
    decode_receipt,
    encode_trigger,
    trigger_for,
)
from pipelines.emulator import RouteOutcome, describe, route

DATA = b'<?xml version="1.0" encoding="UTF-8"?>\n<SF6110/>\n'
NAME = "SF6110_0101_202702_001.xml"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """`<tmp>/exchange/<account>/IN|OUT` for the default accounts; `<tmp>` holds nothing else."""
    root = tmp_path / "exchange"
    for account in ("udk-pension", "kp", "ky"):
        (root / account / "IN").mkdir(parents=True)
        (root / account / "OUT").mkdir()
    return root


def send(root: Path, sender: str, name: str, data: bytes | None, trigger: bytes | Trigger) -> None:
    out = root / sender / "OUT"
    if data is not None:
        (out / name).write_bytes(data)
    (out / (name + ".trigger")).write_bytes(trigger if isinstance(trigger, bytes) else encode_trigger(trigger))


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


def only(outcomes: list[RouteOutcome]) -> RouteOutcome:
    assert len(outcomes) == 1, outcomes
    return outcomes[0]


def assert_rejected(root: Path, sender: str, name: str, code: int, description: str, *, receipt_name: str | None = None):
    """exchange.md step 4: an error receipt, the trigger removed, the data file left, nothing delivered."""
    before = files(root)
    outcome = only(route(root))
    assert (outcome.sender, outcome.name, outcome.error_code) == (sender, name, code)
    receipt_path = root / sender / "IN" / (receipt_name or name + ".sftpreceipt")
    receipt = decode_receipt(receipt_path.read_bytes())
    assert not receipt.succeeded
    assert [(e.code, e.code_description) for e in receipt.errors] == [(code, description)]
    assert receipt.errors[0].description == outcome.error
    assert receipt.file_transfer_uuid == outcome.file_transfer_uuid
    after = files(root)
    trigger = f"{sender}/OUT/{name}.trigger"
    assert trigger in before and trigger not in after
    assert after == (before - {trigger}) | {receipt_path.relative_to(root).as_posix()}
    line = describe(outcome)
    assert f"{code} {description}" in line and "\n" not in line
    return outcome, receipt


# --- success ---------------------------------------------------------------------------------------


def test_success_delivers_data_and_metadata_and_answers_success(tree):
    trigger = trigger_for(NAME, DATA, "kp", ["udk-pension"])
    send(tree, "kp", NAME, DATA, trigger)

    outcome = only(route(tree))

    assert outcome.error_code is None and outcome.error is None and outcome.delivered
    assert (outcome.sender, outcome.name, outcome.recipients) == ("kp", NAME, ("udk-pension",))
    inbox = tree / "udk-pension" / "IN"
    assert (inbox / NAME).read_bytes() == DATA
    metadata = decode_metadata((inbox / f"{NAME}.metadata").read_bytes())
    assert metadata.descriptor == trigger.descriptor  # copied from the trigger
    assert (metadata.descriptor.file_name, metadata.descriptor.size_in_bytes) == (NAME, len(DATA))
    assert metadata.file_transfer_uuid == outcome.file_transfer_uuid
    receipt = decode_receipt((tree / "kp" / "IN" / f"{NAME}.sftpreceipt").read_bytes())
    assert receipt.succeeded
    assert receipt.file_transfer_uuid == outcome.file_transfer_uuid
    assert receipt.senders_file_id == trigger.descriptor.senders_file_id
    assert list((tree / "kp" / "OUT").iterdir()) == []
    assert files(tree) == {f"udk-pension/IN/{NAME}", f"udk-pension/IN/{NAME}.metadata", f"kp/IN/{NAME}.sftpreceipt"}
    assert "delivered" in describe(outcome) and "udk-pension" in describe(outcome)
    assert route(tree) == []  # the pass is done; a second one finds nothing


def test_metadata_is_not_older_than_its_data(tree):
    send(tree, "kp", NAME, DATA, trigger_for(NAME, DATA, "kp", ["udk-pension"]))
    route(tree)
    inbox = tree / "udk-pension" / "IN"
    assert (inbox / f"{NAME}.metadata").stat().st_mtime_ns >= (inbox / NAME).stat().st_mtime_ns


def test_several_recipients_share_one_transfer(tree):
    trigger = trigger_for(NAME, DATA, "udk-pension", ["kp", "ky", "kp"])
    send(tree, "udk-pension", NAME, DATA, trigger)

    outcome = only(route(tree))

    assert outcome.delivered and outcome.recipients == ("kp", "ky")
    uuids = set()
    for account in ("kp", "ky"):
        assert (tree / account / "IN" / NAME).read_bytes() == DATA
        metadata = decode_metadata((tree / account / "IN" / f"{NAME}.metadata").read_bytes())
        assert metadata.descriptor.recipients == ("kp", "ky", "kp")
        uuids.add(metadata.file_transfer_uuid)
    assert uuids == {outcome.file_transfer_uuid}
    assert decode_receipt((tree / "udk-pension" / "IN" / f"{NAME}.sftpreceipt").read_bytes()).succeeded


def test_spsftp_style_trigger_is_routed(tree):
    data = b"hello there"
    spsftp = f"""<ns2:Trigger
xmlns:ns2="{SFTP_NS}">
<FileDescriptor>
<FileName>hellofile</FileName>
<SizeInBytes>{len(data)}</SizeInBytes>
<Sender>kp</Sender>
<SendersFileId>0b8f7a2d5e1c9b3a4f6e8d7c2b1a0f9e8d7c6b5a</SendersFileId>
<Recipients>udk-pension</Recipients>
</FileDescriptor>
<FileContentDescriptor>
</FileContentDescriptor>
</ns2:Trigger>""".encode()
    send(tree, "kp", "hellofile", data, spsftp)

    assert only(route(tree)).delivered
    assert (tree / "udk-pension" / "IN" / "hellofile").read_bytes() == data
    receipt = decode_receipt((tree / "kp" / "IN" / "hellofile.sftpreceipt").read_bytes())
    assert receipt.succeeded and receipt.senders_file_id == "0b8f7a2d5e1c9b3a4f6e8d7c2b1a0f9e8d7c6b5a"


def test_order_is_by_sender_then_name_and_temp_files_are_ignored(tree):
    for sender, name in [("udk-pension", "b.xml"), ("kp", "z.xml"), ("kp", "a.xml"), ("udk-pension", "a.xml")]:
        send(tree, sender, name, DATA, trigger_for(name, DATA, sender, ["ky"] if sender == "kp" else ["kp"]))
    temp = tree / "kp" / "OUT" / ".tmp-0123-c.xml.trigger"
    temp.write_bytes(b"half a trig")

    outcomes = route(tree)

    assert [(o.sender, o.name) for o in outcomes] == [
        ("kp", "a.xml"), ("kp", "z.xml"), ("udk-pension", "a.xml"), ("udk-pension", "b.xml"),
    ]
    assert all(o.delivered for o in outcomes)
    assert temp.read_bytes() == b"half a trig"


# --- the error codes 100-105 ----------------------------------------------------------------------------


def test_100_not_xml(tree):
    send(tree, "kp", NAME, DATA, b"FileName=" + NAME.encode())
    outcome, receipt = assert_rejected(tree, "kp", NAME, 100, "TRIGGER_INVALID")
    assert "not well-formed" in outcome.error
    assert receipt.senders_file_id is None


def test_100_not_schema_valid(tree):
    trigger = encode_trigger(trigger_for(NAME, DATA, "kp", ["udk-pension"]))
    send(tree, "kp", NAME, DATA, trigger.replace(f"<SizeInBytes>{len(DATA)}<".encode(), b"<SizeInBytes>-5<"))
    outcome, _ = assert_rejected(tree, "kp", NAME, 100, "TRIGGER_INVALID")
    assert "unsignedLong" in outcome.error


def test_100_file_name_is_not_the_trigger_name(tree):
    send(tree, "kp", NAME, DATA, trigger_for("other.xml", DATA, "kp", ["udk-pension"]))
    outcome, receipt = assert_rejected(tree, "kp", NAME, 100, "TRIGGER_INVALID")
    assert "'other.xml'" in outcome.error
    assert receipt.senders_file_id is not None  # the trigger had one: the receipt carries it


@pytest.mark.parametrize(
    "name, receipt_name",
    [
        ("bad name.xml", "bad_name.xml.sftpreceipt"),
        (".hidden", "_hidden.sftpreceipt"),
        ("..", "_..sftpreceipt"),
        ("data.metadata", "data.metadata.sftpreceipt"),
        ("a" * 244, "a" * 243 + ".sftpreceipt"),  # valid, but <name>.sftpreceipt would pass 255 bytes
    ],
)
def test_100_trigger_with_an_unusable_name_is_answered_under_a_safe_name(tree, name, receipt_name):
    trigger = Trigger(FileDescriptor(name, len(DATA), "kp", ("udk-pension",), "id-1"))
    send(tree, "kp", name, None if name == ".." else DATA, trigger)  # OUT/.. is a folder, not a file
    outcome, receipt = assert_rejected(tree, "kp", name, 100, "TRIGGER_INVALID", receipt_name=receipt_name)
    assert receipt.senders_file_id == "id-1"
    assert not any((tree / "udk-pension" / "IN").iterdir())


def test_101_file_missing(tree):
    send(tree, "kp", NAME, None, trigger_for(NAME, DATA, "kp", ["udk-pension"]))
    outcome, _ = assert_rejected(tree, "kp", NAME, 101, "FILE_MISSING")
    assert f"OUT/{NAME}" in outcome.error


def test_101_a_link_is_not_a_data_file(tree):
    secret = tree.parent / "secret.txt"
    secret.write_bytes(DATA)
    (tree / "kp" / "OUT" / NAME).symlink_to(secret)
    send(tree, "kp", NAME, None, trigger_for(NAME, DATA, "kp", ["udk-pension"]))
    outcome = only(route(tree))
    assert outcome.error_code == 101
    assert not (tree / "udk-pension" / "IN" / NAME).exists() and secret.read_bytes() == DATA


def test_100_a_link_is_not_a_trigger(tree):
    outside = tree.parent / "outside.trigger"
    outside.write_bytes(encode_trigger(trigger_for(NAME, DATA, "kp", ["udk-pension"])))
    (tree / "kp" / "OUT" / NAME).write_bytes(DATA)
    (tree / "kp" / "OUT" / f"{NAME}.trigger").symlink_to(outside)
    outcome = only(route(tree))
    assert outcome.error_code == 100 and "regular file" in outcome.error
    assert not os.path.lexists(tree / "kp" / "OUT" / f"{NAME}.trigger") and outside.exists()


def test_102_size_mismatch(tree):
    send(tree, "kp", NAME, DATA + b"\n", trigger_for(NAME, DATA, "kp", ["udk-pension"]))
    outcome, _ = assert_rejected(tree, "kp", NAME, 102, "SIZE_MISMATCH")
    assert f"SizeInBytes is {len(DATA)}" in outcome.error and f"{len(DATA) + 1} bytes" in outcome.error


def test_103_sender_mismatch(tree):
    send(tree, "kp", NAME, DATA, trigger_for(NAME, DATA, "ky", ["udk-pension"]))
    outcome, _ = assert_rejected(tree, "kp", NAME, 103, "SENDER_MISMATCH")
    assert "'ky'" in outcome.error


def test_104_unknown_recipient(tree):
    (tree / "half").mkdir()
    (tree / "half" / "OUT").mkdir()  # no IN/: not an account
    send(tree, "kp", NAME, DATA, trigger_for(NAME, DATA, "kp", ["udk-pension", "nobody", "half"]))
    outcome, _ = assert_rejected(tree, "kp", NAME, 104, "UNKNOWN_RECIPIENT")
    assert "'nobody'" in outcome.error and "'half'" in outcome.error
    assert outcome.recipients == ("udk-pension", "nobody", "half")


def test_105_name_conflict_leaves_the_unread_file_alone(tree):
    (tree / "ky" / "IN" / NAME).write_bytes(b"unread")
    send(tree, "udk-pension", NAME, DATA, trigger_for(NAME, DATA, "udk-pension", ["kp", "ky"]))
    outcome, _ = assert_rejected(tree, "udk-pension", NAME, 105, "NAME_CONFLICT")
    assert "ky" in outcome.error and "kp" not in outcome.error.split(":")[-1]
    assert (tree / "ky" / "IN" / NAME).read_bytes() == b"unread"


def test_105_also_for_metadata_left_without_its_data(tree):
    (tree / "kp" / "IN" / f"{NAME}.metadata").write_bytes(b"old")
    send(tree, "udk-pension", NAME, DATA, trigger_for(NAME, DATA, "udk-pension", ["kp"]))
    assert_rejected(tree, "udk-pension", NAME, 105, "NAME_CONFLICT")


# --- nothing outside the tree -------------------------------------------------------------------------


@pytest.mark.parametrize("recipient", ["..", ".", "../outside", "kp/../ky", "/tmp", "kp/IN", ""])
def test_path_like_recipient_is_never_an_account(tree, recipient):
    (tree.parent / "outside" / "IN").mkdir(parents=True)
    (tree.parent / "outside" / "OUT").mkdir()
    trigger = Trigger(FileDescriptor(NAME, len(DATA), "kp", (recipient,)))
    send(tree, "kp", NAME, DATA, trigger)
    assert_rejected(tree, "kp", NAME, 104, "UNKNOWN_RECIPIENT")
    assert sorted(p.name for p in tree.parent.iterdir()) == ["exchange", "outside"]
    assert not any((tree.parent / "outside" / "IN").iterdir())


@pytest.mark.parametrize("file_name", ["../../escape.xml", "/tmp/escape.xml", "../udk-pension/IN/x"])
def test_path_like_file_name_writes_nothing_outside_the_tree(tree, file_name):
    send(tree, "kp", "escape.xml", DATA, Trigger(FileDescriptor(file_name, len(DATA), "kp", ("udk-pension",))))
    assert_rejected(tree, "kp", "escape.xml", 100, "TRIGGER_INVALID")
    assert [p.name for p in tree.parent.iterdir()] == ["exchange"]
    assert not any((tree / "udk-pension" / "IN").iterdir())


def test_bad_triggers_do_not_stop_the_pass(tree):
    send(tree, "kp", "a.xml", DATA, b"\x00\xff garbage")
    send(tree, "kp", "b.xml", DATA, b'<!DOCTYPE x [<!ENTITY e "e">]><x>&e;</x>')
    send(tree, "kp", "c.xml", DATA, trigger_for("c.xml", DATA, "kp", ["udk-pension"]))
    outcomes = route(tree)
    assert [(o.name, o.error_code) for o in outcomes] == [("a.xml", 100), ("b.xml", 100), ("c.xml", None)]
    assert "DOCTYPE" in outcomes[1].error
    assert outcomes[2].delivered


def test_a_fifo_is_never_read(tree):
    os.mkfifo(tree / "kp" / "OUT" / NAME)  # reading it would block the pass forever
    send(tree, "kp", NAME, None, trigger_for(NAME, DATA, "kp", ["udk-pension"]))
    assert only(route(tree)).error_code == 101


def test_io_failure_takes_back_a_half_delivery_and_keeps_the_trigger(tree):
    # The sender's receipt cannot be written (a non-empty folder is in its place) after both
    # recipients got their files: they are taken back, and the trigger waits for the next pass.
    blocker = tree / "udk-pension" / "IN" / f"{NAME}.sftpreceipt"
    blocker.mkdir()
    (blocker / "x").write_bytes(b"")
    send(tree, "udk-pension", NAME, DATA, trigger_for(NAME, DATA, "udk-pension", ["kp", "ky"]))

    outcome = only(route(tree))

    assert outcome.error_code is None and not outcome.delivered and outcome.file_transfer_uuid is None
    assert "retried on the next pass" in describe(outcome)
    assert not any((tree / "kp" / "IN").iterdir()) and not any((tree / "ky" / "IN").iterdir())
    assert {p.name for p in (tree / "udk-pension" / "OUT").iterdir()} == {NAME, f"{NAME}.trigger"}

    (blocker / "x").unlink()
    blocker.rmdir()
    assert only(route(tree)).delivered
