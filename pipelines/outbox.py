"""Sending a file through the envelope exactly once, and recording its technical receipt.

exchange.md "Writing": data file first, trigger last, each under a temporary name and renamed.
The state store keeps every file sent with its trigger and receipt (`sent/<name>/`). A send is
recorded as intended before anything reaches OUT/, and as done after the trigger is there; a run
that died in between finds out from OUT/ and IN/ what the platform already has, and finishes the
job without a second delivery."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from contracts.envelope import RECEIPT_SUFFIX, EnvelopeError, decode_receipt, encode_trigger, trigger_for
from pipelines.state import StateStore, sha256_hex, utc_now

if TYPE_CHECKING:  # only a type here: reading the state store needs no Dagster (pensionstraek explain)
    from pipelines.exchange import ExchangeClient


@dataclass(frozen=True)
class Sent:
    name: str
    newly_sent: bool  # False when this exact file had been sent before


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
    folder = f"sent/{name}"
    record = state.sent_record(name)
    if record is not None and record["sha256"] != sha256_hex(data):
        raise RuntimeError(f"{name} er sendt før med andet indhold; en ny fil skal have et nyt navn")
    if record is not None and record["status"] != "sending":
        return Sent(name=name, newly_sent=False)

    trigger = encode_trigger(trigger_for(name, data, sender, list(recipients)))
    if record is None:
        state.write(f"{folder}/data", data)
        state.write(f"{folder}/trigger.xml", trigger)
        record = {
            "name": name,
            "kind": kind,
            "sha256": sha256_hex(data),
            "size": len(data),
            "sender": sender,
            "recipients": list(recipients),
            "status": "sending",
            "prepared_at": utc_now().isoformat(),
        }
        state.write_json(f"{folder}/record.json", record)
        _put(client, name, data, trigger)
    elif not _platform_has(client, state, name):
        # A run died after recording the intent: OUT/ and IN/ say whether the platform has it.
        _put(client, name, data, trigger, data_written=client.exists(f"OUT/{name}"))

    state.write_json(f"{folder}/record.json", {**record, "status": "sent", "sent_at": utc_now().isoformat()})
    return Sent(name=name, newly_sent=True)


def _put(client: ExchangeClient, name: str, data: bytes, trigger: bytes, data_written: bool = False) -> None:
    if not data_written:
        client.write(f"OUT/{name}", data)
    client.write(f"OUT/{name}.trigger", trigger)


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
    prefix = receipt_name + "."
    indices = sorted(
        int(n[len(prefix):]) for n in state.listdir("archive/receipts") if n.startswith(prefix) and n[len(prefix):].isdigit()
    )
    return [f"archive/receipts/{prefix}{i}" for i in indices]


def _recorded(state: StateStore, record: dict | None, name: str, raw: bytes) -> bool:
    """Whether this exact receipt is already recorded against the file it answers (a receipt for a
    file UDK never sent is only archived)."""
    if record is None:
        return True
    receipt = f"sent/{name}/receipt{RECEIPT_SUFFIX}"
    return "receipt_recorded_at" in record and state.exists(receipt) and state.read(receipt) == raw
