"""The outbox: what UDK sends goes out exactly once, whatever the transport.

One mechanism, two transports (STYLE.md "The new integrations in the same house"): an outgoing
item is first recorded as intended in the state store (its `Book`), then handed to the transport,
and the transport's answer is recorded last. A run that dies anywhere leaves the intent recorded
and the answer missing, so the next run hands the same item (same name, same BeskedId) to the
transport again; nothing is ever sent that was not recorded first.

- Files over SFTP (`send`, below; exchange.md "Writing"): data file first, trigger last, each
  under a temporary name and renamed. The book keeps every file sent with its trigger and
  receipt (`sent/<name>/`). A run that died between intent and answer finds out from OUT/ and
  IN/ what the platform already has, and finishes the job without a second delivery.
- Messages over AMQP (pipelines/beskeder.py is the book, pipelines/amqp.py the transport;
  sf1411-sf2610.md "Delivery"): a message counts as delivered only on StandardRetur 20."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from contracts.envelope import RECEIPT_SUFFIX, EnvelopeError, decode_receipt, encode_trigger, trigger_for
from pipelines.state import StateStore, json_bytes, sha256_hex, utc_now

if TYPE_CHECKING:  # only a type here: reading the state store needs no Dagster (pensionstraek explain)
    from pipelines.exchange import ExchangeClient

# --- the transport-neutral core ---------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    key: str  # the file name, or the BeskedId
    data: bytes
    resumed: bool = False  # the intent was recorded by an earlier run: a send may have started
    meta: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Answer:
    key: str
    final: bool  # True: recorded as the item's outcome, never handed to the transport again
    outcome: str  # e.g. "sent", "leveret", "afvist"
    detail: dict = field(default_factory=dict, compare=False)


class Book(Protocol):
    """Where the outbox keeps intents and answers in the state store."""

    group_size: int  # answers recorded together (group commit); 1 = each at once

    def intend(self, items: Sequence[Outgoing]) -> None: ...

    def undelivered(self) -> list[Outgoing]: ...

    def record(self, answers: Sequence[Answer]) -> None: ...


class Transport(Protocol):
    def send(self, items: Sequence[Outgoing]) -> Iterable[Answer]: ...


GROUP_COMMIT_SECONDS = 0.5


def deliver(book: Book, transport: Transport, items: Sequence[Outgoing] = ()) -> list[Answer]:
    """Record `items` as intended, then hand everything the book still owes to the transport,
    recording its answers as they come (in groups of `book.group_size`, or every
    GROUP_COMMIT_SECONDS). Returns the answers recorded by this call."""
    book.intend(items)
    pending = book.undelivered()
    recorded: list[Answer] = []
    if not pending:
        return recorded
    group: list[Answer] = []
    try:
        for answer in transport.send(pending):
            # The time counts from a group's first answer: answers that come together (a file
            # transport's, after all the files and triggers are written) are recorded together.
            if not group:
                started = time.monotonic()
            group.append(answer)
            if len(group) >= book.group_size or time.monotonic() - started >= GROUP_COMMIT_SECONDS:
                book.record(group)
                recorded += group
                group = []
    finally:
        # Answers already given are recorded even when the transport fails half-way: what was
        # delivered is not handed over again (a repeat is allowed only after a crash).
        if group:
            book.record(group)
            recorded += group
    return recorded


# --- files over SFTP ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    name: str
    newly_sent: bool  # False when this exact file had been sent before


class FileBook:
    """The book of files sent through the envelope: `sent/<name>/{data,trigger.xml,record.json}`
    per file (`data` a second name of the state store's own copy when there is one: `kept_at`).
    Several files are booked together: their data and triggers with one round of fsyncs, their
    records (the intents) with the next, and the answers a group at a time."""

    # The transport answers for all of a send's files at once (their triggers are written
    # together), so their answers are recorded together: one round of fsyncs instead of one per
    # 16 files (98 files per period and integration nationally). A crash before it leaves the
    # files "sending", which the next run finishes from what OUT/ and IN/ say (SftpTransport).
    group_size = 1000

    def __init__(self, state: StateStore, *, sender: str, kind: str):
        self.state, self.sender, self.kind = state, sender, kind
        self._items: dict[str, Outgoing] = {}  # what this book was asked to send, by name
        self._records: dict[str, dict] = {}  # their records as last read or written
        self._fresh: dict[str, bytes] = {}  # intents this book recorded itself (nothing can have gone out): their triggers

    def intend(self, items: Sequence[Outgoing]) -> None:
        files, records, kept = {}, {}, {}
        for item in items:
            record = self.state.sent_record(item.key)
            sha = item.meta["sha256"]  # of item.data, as send_files computed it
            if record is not None and record["sha256"] != sha:
                raise RuntimeError(f"{item.key} er sendt før med andet indhold; en ny fil skal have et nyt navn")
            self._items[item.key] = item
            if record is None:
                recipients = list(item.meta["recipients"])
                trigger = encode_trigger(trigger_for(item.key, item.data, self.sender, recipients, sha256=sha))
                files[f"sent/{item.key}/data"] = item.data
                if item.meta.get("kept_at"):
                    kept[f"sent/{item.key}/data"] = item.meta["kept_at"]
                files[f"sent/{item.key}/trigger.xml"] = trigger
                record = {
                    "name": item.key,
                    "kind": self.kind,
                    "sha256": sha,
                    "size": len(item.data),
                    "sender": self.sender,
                    "recipients": recipients,
                    "status": "sending",
                    "prepared_at": utc_now().isoformat(),
                }
                records[f"sent/{item.key}/record.json"] = json_bytes(record)
                self._fresh[item.key] = trigger
            self._records[item.key] = record
        # The records last, once the files they name are on disk (`undelivered` reads them).
        self.state.write_all(files, same_as=kept)
        self.state.write_all(records)

    def undelivered(self) -> list[Outgoing]:
        return [
            Outgoing(
                key=name,
                # The same bytes as sent/<name>/data (intend compared their SHA-256).
                data=item.data,
                resumed=name not in self._fresh,
                meta={"trigger": self._fresh.get(name) or self.state.read(f"sent/{name}/trigger.xml")},
            )
            for name, item in self._items.items()
            if self._records[name]["status"] == "sending"
        ]

    def record(self, answers: Sequence[Answer]) -> None:
        records = {}
        for answer in answers:
            # Read again: only this run sends the file, but a receipt may have been recorded since.
            record = {**self.state.sent_record(answer.key), "status": "sent", "sent_at": utc_now().isoformat()}
            self._records[answer.key] = record
            records[f"sent/{answer.key}/record.json"] = json_bytes(record)
        self.state.write_all(records)


class SftpTransport:
    """Puts files in OUT/ with their triggers, the data files of the items together and then their
    triggers; a resumed send first asks OUT/ and IN/ whether the platform already has it."""

    def __init__(self, client: ExchangeClient, state: StateStore):
        self.client, self.state = client, state

    def send(self, items: Sequence[Outgoing]) -> Iterable[Answer]:
        data, triggers = {}, {}
        for item in items:
            if item.resumed and _platform_has(self.client, self.state, item.key):
                continue
            # A run died after recording the intent: OUT/ says whether the data got there.
            if not (item.resumed and self.client.exists(f"OUT/{item.key}")):
                data[f"OUT/{item.key}"] = item.data
            triggers[f"OUT/{item.key}.trigger"] = item.meta["trigger"]
        # Each trigger after its file (exchange.md "Writing"): the platform takes a file when its
        # trigger appears.
        self.client.write_all(data)
        self.client.write_all(triggers)
        for item in items:
            yield Answer(key=item.key, final=True, outcome="sent")


@dataclass(frozen=True)
class FileToSend:
    name: str
    data: bytes
    recipients: tuple[str, ...]
    # The state store's file that holds exactly `data` already (the version as made, kept in
    # `outgoing/`): sent/<name>/data becomes a second name of it instead of a second copy.
    kept_at: str | None = None


def send(
    client: ExchangeClient,
    state: StateStore,
    *,
    name: str,
    data: bytes,
    sender: str,
    recipients: Sequence[str],
    kind: str,
) -> Sent:
    """Put `data` in OUT/<name> with its trigger, once. `kind` (e.g. SF6111) goes in the record."""
    (sent,) = send_files(client, state, [FileToSend(name, data, tuple(recipients))], sender=sender, kind=kind)
    return sent


def send_files(client: ExchangeClient, state: StateStore, files: Sequence[FileToSend], *, sender: str, kind: str) -> list[Sent]:
    """`send` of several files, booked together (FileBook); in the order given."""
    results, items = [], []
    for file in files:
        record, sha = state.sent_record(file.name), sha256_hex(file.data)
        if record is not None and record["sha256"] == sha and record["status"] != "sending":
            results.append(Sent(name=file.name, newly_sent=False))
            continue
        meta = {"recipients": file.recipients, "sha256": sha, "kept_at": file.kept_at}
        items.append(Outgoing(key=file.name, data=file.data, meta=meta))
        results.append(Sent(name=file.name, newly_sent=True))
    if items:
        deliver(FileBook(state, sender=sender, kind=kind), SftpTransport(client, state), items)
    return results


def _platform_has(client: ExchangeClient, state: StateStore, name: str) -> bool:
    """Whether the trigger of `name` already reached the platform: it is still waiting in OUT/,
    or the platform answered with a receipt (in IN/ now, or recorded already)."""
    return (
        client.exists(f"OUT/{name}.trigger")
        or client.exists(f"IN/{name}{RECEIPT_SUFFIX}")
        or state.exists(f"sent/{name}/receipt{RECEIPT_SUFFIX}")
    )


@dataclass(frozen=True)
class ReceiptRecorded:
    name: str  # the file the receipt is for
    succeeded: bool
    known: bool  # False when UDK never sent a file of that name
    errors: tuple[str, ...] = ()


def record_receipts(client: ExchangeClient, state: StateStore, *, keep: bool = False) -> list[ReceiptRecorded]:
    """exchange.md "Receipts": record each `.sftpreceipt` in IN/ against what was sent, archive
    it unchanged, then remove it from IN/."""
    recorded = []
    for receipt_name in client.list_receipts():
        raw = client.read(f"IN/{receipt_name}")
        name = receipt_name.removesuffix(RECEIPT_SUFFIX)
        record = state.sent_record(name)
        copies = _archived_copies(state, receipt_name)
        if copies and state.read(copies[-1]) == raw and _recorded(state, record, name, raw):
            # Seen and recorded before: kept in IN/ (PENSIONSTRAEK_KEEP_DELIVERIES) or left there by
            # a run that died before removing it. Recording it again would archive a copy per run.
            if not keep:
                client.remove(f"IN/{receipt_name}")
            continue
        if not copies or state.read(copies[-1]) != raw:  # archived already by a run that died
            state.write_once(f"archive/receipts/{receipt_name}.{len(copies)}", raw)
        try:
            receipt = decode_receipt(raw)
            succeeded = receipt.succeeded
            errors = tuple(f"{e.code} {e.code_description}: {e.description}" for e in receipt.errors)
        except EnvelopeError as exc:
            succeeded, errors = False, (f"receipt not readable: {exc}",)
        if record is not None:
            state.write(f"sent/{name}/receipt{RECEIPT_SUFFIX}", raw)
            state.write_json(
                f"sent/{name}/record.json",
                {
                    **record,
                    # A receipt means the trigger reached the platform, whatever the record said.
                    "status": "acknowledged" if succeeded else "failed",
                    "receipt_errors": list(errors),
                    "receipt_recorded_at": utc_now().isoformat(),
                },
            )
        if not keep:
            client.remove(f"IN/{receipt_name}")
        recorded.append(ReceiptRecorded(name=name, succeeded=succeeded, known=record is not None, errors=errors))
    return recorded


def _archived_copies(state: StateStore, receipt_name: str) -> list[str]:
    """The archived copies of `IN/<receipt_name>`, oldest first (`archive/receipts/<name>.<n>`)."""
    # The copies are numbered 0, 1, 2, ... without gaps (record_receipts writes copy len(copies)),
    # so they are found by asking for each in turn: listing archive/receipts, which holds every
    # receipt ever received, for each receipt would grow with the years (issue 11).
    copies = []
    while state.exists(f"archive/receipts/{receipt_name}.{len(copies)}"):
        copies.append(f"archive/receipts/{receipt_name}.{len(copies)}")
    return copies


def _recorded(state: StateStore, record: dict | None, name: str, raw: bytes) -> bool:
    """Whether this exact receipt is already recorded against the file it answers (a receipt for a
    file UDK never sent is only archived)."""
    if record is None:
        return True
    receipt = f"sent/{name}/receipt{RECEIPT_SUFFIX}"
    return "receipt_recorded_at" in record and state.exists(receipt) and state.read(receipt) == raw
