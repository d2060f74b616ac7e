"""The local emulator of Serviceplatformen's simple SFTP transfer (exchange.md "The platform in this
product: a local emulator").

The tree is `<root>/<account>/IN|OUT`, the same tree an OpenSSH server can serve. `route` makes one
routing pass: every `<sender>/OUT/<name>.trigger` is either delivered (data + metadata in each
recipient's IN, a SUCCESS receipt in the sender's IN) or answered with an error receipt (codes
100-105). Bad input never raises: each trigger becomes a `RouteOutcome`.

Decisions where exchange.md is silent:
- Order: accounts sorted by name, then each account's triggers sorted by file name (code point
  order), so a pass is reproducible.
- One FileTransferUUID per trigger: the same uuid4 in every recipient's metadata and in the
  sender's receipt (KOMBIT's BusinessReceipt pairs FileTransferUUID with a Recipient, so one
  transfer can have several recipients). A recipient named twice is delivered to once.
- An account is a real folder (not a symbolic link) with real IN/ and OUT/ folders; a trigger or
  data file that is not a regular file (a link, a fifo) is never read, so nothing outside the tree
  is read or written.
- A trigger whose own name is not a valid envelope name gets error 100 and its receipt under a
  sanitised name (characters outside [A-Za-z0-9._-] and a leading '.' become '_').
- 105 NAME_CONFLICT also when only `IN/<name>.metadata` is left, since a reader could otherwise
  pair the new data with the old metadata.
- A name whose receipt name (`<name>.sftpreceipt`) would pass the file system's 255-byte limit is
  error 100: it cannot be answered under its own name.
- An I/O failure (permission, full disk) is not the sender's fault: nothing is answered, whatever
  was delivered in this attempt is taken back, the trigger stays and is retried next pass.
"""

from __future__ import annotations

import os
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

from fsspec.implementations.local import LocalFileSystem

from contracts.envelope import (
    METADATA_SUFFIX,
    RECEIPT_SUFFIX,
    TRIGGER_SUFFIX,
    EnvelopeError,
    FileMetadata,
    ReceiptError,
    TechnicalReceipt,
    Trigger,
    decode_trigger,
    encode_metadata,
    encode_trigger,
    encode_receipt,
    is_valid_envelope_name,
    trigger_for,
)
from pipelines.storage import TEMP_PREFIX, atomic_write

# exchange.md, table of the emulator's error codes.
TRIGGER_INVALID = 100
FILE_MISSING = 101
SIZE_MISMATCH = 102
SENDER_MISMATCH = 103
UNKNOWN_RECIPIENT = 104
NAME_CONFLICT = 105
ERROR_CODES = {
    TRIGGER_INVALID: "TRIGGER_INVALID",
    FILE_MISSING: "FILE_MISSING",
    SIZE_MISMATCH: "SIZE_MISMATCH",
    SENDER_MISMATCH: "SENDER_MISMATCH",
    UNKNOWN_RECIPIENT: "UNKNOWN_RECIPIENT",
    NAME_CONFLICT: "NAME_CONFLICT",
}

NAME_MAX = 255  # bytes in one file name on the usual file systems
MAX_TRIGGER_BYTES = 1024 * 1024  # a trigger is a few hundred bytes; never read a huge one
_UNWRITABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _account_owner(path) -> tuple[int, int] | None:
    """The owner of the account folder `path` lies in (`<root>/<account>/IN|OUT/<name>`), when
    the emulator runs as root and that is another user: a file in an account is the account's,
    readable by its user only (files stay 0600, pipelines/storage.py)."""
    if os.geteuid() != 0:
        return None
    account = Path(path).parent.parent.stat()
    return None if account.st_uid == 0 else (account.st_uid, account.st_gid)


@dataclass(frozen=True)
class RouteOutcome:
    """What happened to one trigger. `error_code` and `error` None: delivered. `error_code` None
    with an `error`: an I/O failure (the error says whether anything was delivered)."""

    sender: str
    name: str
    error_code: int | None
    error: str | None
    recipients: tuple[str, ...]
    file_transfer_uuid: str | None

    @property
    def delivered(self) -> bool:
        return self.error_code is None and self.error is None


class _Rejected(Exception):
    def __init__(self, code: int, reason: str, trigger: Trigger | None = None):
        reason = _UNWRITABLE.sub("?", reason)  # the reason goes into the receipt's XML
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.trigger = trigger


def route(root: Path) -> list[RouteOutcome]:
    """One routing pass over `<root>/<account>/IN|OUT` (exchange.md "The platform in this product")."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; the emulator routes <root>/<account>/IN|OUT")
    accounts = _accounts(root)
    fs = LocalFileSystem()
    outcomes = []
    for sender in sorted(accounts):
        for trigger_file in _trigger_files(root / sender / "OUT"):
            outcomes.append(_route_trigger(fs, root, accounts, sender, trigger_file))
    return outcomes


def send_from(account: Path, name: str, data: bytes, recipients: list[str]) -> None:
    """What a partner system does to send a file (exchange.md "Sending"): `OUT/<name>` first, the
    trigger last, each written under a temporary name and renamed, so the platform never routes a
    half file. The sender is the account, the folder's name."""
    account = Path(account).absolute()
    out = account / "OUT"
    if not _is_real_dir(out):
        raise FileNotFoundError(f"{out} findes ikke: giv en konto-mappe med IN/ og OUT/ (fx ./var/exchange/kp)")
    fs = LocalFileSystem()
    atomic_write(fs, str(out / name), data, owner=_account_owner(out / name))
    trigger = encode_trigger(trigger_for(name, data, account.name, recipients))
    atomic_write(fs, str(out / f"{name}{TRIGGER_SUFFIX}"), trigger, owner=_account_owner(out / f"{name}{TRIGGER_SUFFIX}"))


def describe(outcome: RouteOutcome) -> str:
    """One line for `pensionstraek exchange route`."""
    where = f"{outcome.sender}/OUT/{_shown(outcome.name)}"
    if outcome.delivered:
        line = f"{where} -> {', '.join(outcome.recipients)}: delivered (FileTransferUUID {outcome.file_transfer_uuid})"
    elif outcome.error_code is None:
        line = f"{where}: {outcome.error}"
    else:
        line = f"{where}: {outcome.error_code} {ERROR_CODES[outcome.error_code]}: {outcome.error}"
    return " ".join(line.split())  # one line, whatever the error text holds


# --- the tree -------------------------------------------------------------------------------------


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _accounts(root: Path) -> frozenset[str]:
    with os.scandir(root) as entries:
        return frozenset(
            e.name
            for e in entries
            if not e.name.startswith(TEMP_PREFIX)
            and _is_real_dir(Path(e.path))
            and _is_real_dir(Path(e.path) / "IN")
            and _is_real_dir(Path(e.path) / "OUT")
        )


def _trigger_files(out: Path) -> list[str]:
    with os.scandir(out) as entries:
        return sorted(
            e.name
            for e in entries
            if e.name.endswith(TRIGGER_SUFFIX)
            and not e.name.startswith(TEMP_PREFIX)
            and not e.is_dir(follow_symlinks=False)
        )


def _shown(name: str) -> str:
    return name if is_valid_envelope_name(name) else repr(name)


def _receipt_name(name: str) -> str:
    """`<name>.sftpreceipt`, or a sanitised name that is always a plain file name inside IN/."""
    if is_valid_envelope_name(name) and len(name) + len(RECEIPT_SUFFIX) <= NAME_MAX:
        return name + RECEIPT_SUFFIX
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    safe = re.sub(r"^\.", "_", safe)[: NAME_MAX - len(RECEIPT_SUFFIX)] or "_"
    return safe + RECEIPT_SUFFIX


def _read_regular(path: Path, limit: int | None = None) -> bytes | None:
    """The file's bytes, or None when it is missing or not a regular file (never follows a link)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    if limit is not None and info.st_size > limit:
        raise _Rejected(TRIGGER_INVALID, f"the trigger is {info.st_size} bytes, more than a trigger can be")
    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW)) as f:
        return f.read()


# --- one trigger ----------------------------------------------------------------------------------


def _check(root: Path, accounts: frozenset[str], sender: str, name: str) -> tuple[Trigger, bytes]:
    """The checks of exchange.md step 2, in the order of its table; raise `_Rejected`."""
    out = root / sender / "OUT"
    raw = _read_regular(out / (name + TRIGGER_SUFFIX), MAX_TRIGGER_BYTES)
    if raw is None:
        raise _Rejected(TRIGGER_INVALID, "the trigger is not a regular file (a link or special file is never read)")
    try:
        trigger, decode_error = decode_trigger(raw), None
    except EnvelopeError as exc:
        trigger, decode_error = None, str(exc)
    if not is_valid_envelope_name(name):
        raise _Rejected(
            TRIGGER_INVALID,
            f"the name {name!r} before '.trigger' is not a valid file name: use 1-255 characters "
            "of A-Z a-z 0-9 . _ -, not starting with '.', not ending with .trigger/.metadata/.sftpreceipt",
            trigger,
        )
    if trigger is None:
        raise _Rejected(TRIGGER_INVALID, f"the trigger cannot be read: {decode_error}")
    d = trigger.descriptor
    if d.file_name != name:
        raise _Rejected(TRIGGER_INVALID, f"FileName {d.file_name!r} is not the trigger's name {name!r}", trigger)
    if len(name) + len(RECEIPT_SUFFIX) > NAME_MAX:
        raise _Rejected(
            TRIGGER_INVALID,
            f"the name is {len(name)} characters: at most {NAME_MAX - len(RECEIPT_SUFFIX)} fit with "
            f"'{RECEIPT_SUFFIX}' on this file system",
            trigger,
        )
    data = _read_regular(out / name)
    if data is None:
        raise _Rejected(FILE_MISSING, f"OUT/{name} does not exist or is not a regular file", trigger)
    if len(data) != d.size_in_bytes:
        raise _Rejected(
            SIZE_MISMATCH, f"SizeInBytes is {d.size_in_bytes}, OUT/{name} has {len(data)} bytes", trigger
        )
    if d.sender != sender:
        raise _Rejected(
            SENDER_MISMATCH, f"Sender is {d.sender!r}, the trigger was found in the account {sender!r}", trigger
        )
    # Recipients are looked up among the account folder names, so '..' or 'a/b' never match.
    unknown = [r for r in d.recipients if r not in accounts]
    if unknown:
        raise _Rejected(
            UNKNOWN_RECIPIENT, f"no such recipient account: {', '.join(repr(r) for r in unknown)}", trigger
        )
    conflicts = [
        r
        for r in dict.fromkeys(d.recipients)
        if os.path.lexists(root / r / "IN" / name) or os.path.lexists(root / r / "IN" / (name + METADATA_SUFFIX))
    ]
    if conflicts:
        raise _Rejected(
            NAME_CONFLICT, f"IN/{name} is not yet read by: {', '.join(conflicts)}; send it again later", trigger
        )
    return trigger, data


def _route_trigger(
    fs: LocalFileSystem, root: Path, accounts: frozenset[str], sender: str, trigger_file: str
) -> RouteOutcome:
    name = trigger_file[: -len(TRIGGER_SUFFIX)]
    out, sender_in = root / sender / "OUT", root / sender / "IN"
    file_transfer_uuid = str(uuid.uuid4())
    delivered: list[Path] = []
    try:
        try:
            trigger, data = _check(root, accounts, sender, name)
            d = trigger.descriptor
            recipients = tuple(dict.fromkeys(d.recipients))
            metadata = encode_metadata(FileMetadata(file_transfer_uuid, d))
            receipt = encode_receipt(TechnicalReceipt(file_transfer_uuid, d.senders_file_id))
        except EnvelopeError as exc:  # cannot happen for a schema-valid trigger; still an answer
            raise _Rejected(TRIGGER_INVALID, f"the trigger cannot be copied into metadata: {exc}") from None
    except _Rejected as rejected:
        # exchange.md step 4: answer with the error, remove the trigger, leave the data file.
        t = rejected.trigger.descriptor if rejected.trigger else None
        error = ReceiptError(rejected.code, ERROR_CODES[rejected.code], rejected.reason)
        try:
            answer = encode_receipt(TechnicalReceipt(file_transfer_uuid, t.senders_file_id if t else None, (error,)))
        except EnvelopeError:  # e.g. a SendersFileId that no receipt can carry
            answer = encode_receipt(TechnicalReceipt(file_transfer_uuid, None, (error,)))
        try:
            atomic_write(fs, str(sender_in / _receipt_name(name)), answer, owner=_account_owner(sender_in / _receipt_name(name)))
            (out / trigger_file).unlink(missing_ok=True)
        except OSError as exc:
            return _io_failure(sender, name, exc)
        return RouteOutcome(
            sender, name, rejected.code, rejected.reason, t.recipients if t else (), file_transfer_uuid
        )
    except OSError as exc:
        return _io_failure(sender, name, exc)

    # exchange.md step 3: data before metadata, each atomically; then the receipt; then clean OUT.
    try:
        for recipient in recipients:
            recipient_in = root / recipient / "IN"
            for path, content in ((recipient_in / name, data), (recipient_in / (name + METADATA_SUFFIX), metadata)):
                atomic_write(fs, str(path), content, owner=_account_owner(path))
                delivered.append(path)
        atomic_write(fs, str(sender_in / (name + RECEIPT_SUFFIX)), receipt, owner=_account_owner(sender_in / (name + RECEIPT_SUFFIX)))
    except OSError as exc:
        for path in reversed(delivered):  # take back a half delivery so that a retry is not a conflict
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
        return _io_failure(sender, name, exc)
    try:
        (out / trigger_file).unlink(missing_ok=True)  # trigger first: a data file alone is never read
        (out / name).unlink(missing_ok=True)
    except OSError as exc:
        return RouteOutcome(
            sender, name, None, f"delivered, but OUT could not be cleaned: {exc}", recipients, file_transfer_uuid
        )
    return RouteOutcome(sender, name, None, None, recipients, file_transfer_uuid)


def _io_failure(sender: str, name: str, exc: OSError) -> RouteOutcome:
    where = f" ({exc.filename})" if exc.filename else ""
    error = f"not routed, the trigger is retried on the next pass: {exc.strerror or exc}{where}"
    return RouteOutcome(sender, name, None, error, (), None)
