"""The SFTP envelope of every file integration: trigger, metadata and technical receipt (exchange.md).

One codec for the three XML files that travel next to a data file on Serviceplatformen's "simpel
SFTP". Everything written here validates against KOMBIT's own schema (`contracts/kombit/
SFTPTypes.xsd`); everything read is parsed with the hardened parser and validated against it too.

Whether a `FileName` is a usable envelope name is not a schema fact: the readers keep whatever
name is written, and `is_valid_envelope_name` lets the emulator and the pipeline judge it."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from contracts.xmlsafe import XmlRefused, first_schema_error, load_schema, parse_xml

SFTP_NS = "http://serviceplatformen.dk/xml/wsdl/soap11/SFTP/1/types"
KOMBIT_SCHEMA = Path(__file__).parent / "kombit" / "SFTPTypes.xsd"

SUCCESS = "SUCCESS"
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_PREFIX = "sp"

# exchange.md "Writing": SendersFileId is a UUID v5 of the content; this namespace is the
# project's own and must never change, or a re-run would produce a different trigger.
SENDERS_FILE_ID_NAMESPACE = uuid.UUID("7d3c1a52-4f0e-5b8e-9a61-2c9f0d4e8b17")

TRIGGER_SUFFIX = ".trigger"
METADATA_SUFFIX = ".metadata"
RECEIPT_SUFFIX = ".sftpreceipt"
RESERVED_SUFFIXES = (TRIGGER_SUFFIX, METADATA_SUFFIX, RECEIPT_SUFFIX)
_ENVELOPE_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")


class EnvelopeError(ValueError):
    """The bytes are not a trigger / metadata / receipt this product accepts; the message says why."""


def is_valid_envelope_name(name: str) -> bool:
    """exchange.md "Accounts and folders": at most 255 characters of `[A-Za-z0-9._-]`, not starting
    with `.`, not ending with `.trigger`, `.metadata` or `.sftpreceipt`."""
    return (
        isinstance(name, str)
        and _ENVELOPE_NAME.fullmatch(name) is not None
        and not name.startswith(".")
        and not name.endswith(RESERVED_SUFFIXES)
    )


# --- the envelope as data -----------------------------------------------------------------------


@dataclass(frozen=True)
class FileDescriptor:
    file_name: str
    size_in_bytes: int
    sender: str
    recipients: tuple[str, ...]
    senders_file_id: str | None = None


@dataclass(frozen=True)
class Trigger:
    descriptor: FileDescriptor


@dataclass(frozen=True)
class FileMetadata:
    file_transfer_uuid: str
    descriptor: FileDescriptor


@dataclass(frozen=True)
class ReceiptError:
    code: int
    code_description: str
    description: str


@dataclass(frozen=True)
class TechnicalReceipt:
    """No errors means `Receipt/Message` = SUCCESS (the platform took the file in)."""

    file_transfer_uuid: str
    senders_file_id: str | None
    errors: tuple[ReceiptError, ...] = ()

    @property
    def succeeded(self) -> bool:
        return not self.errors


# --- building a trigger ---------------------------------------------------------------------------


def senders_file_id(data: bytes, sha256: str | None = None) -> str:
    """exchange.md "Writing": a UUID derived from the content only, so a re-run gives the same
    trigger. `sha256`: the data's SHA-256 (hex) when the caller has it already (the outbox
    hashes every file it sends; hashing a national period's 70 MB again cost 0.06 s)."""
    return str(uuid.uuid5(SENDERS_FILE_ID_NAMESPACE, sha256 or hashlib.sha256(data).hexdigest()))


def trigger_for(
    name: str, data: bytes, sender: str, recipients: Sequence[str], *, sha256: str | None = None
) -> Trigger:
    """The trigger for sending `data` as `OUT/<name>`: exact size, content-derived SendersFileId
    (`sha256` as senders_file_id takes it)."""
    if not is_valid_envelope_name(name):
        raise EnvelopeError(
            f"{name!r} cannot be sent: a file name is 1-255 characters of A-Z a-z 0-9 . _ -, "
            "does not start with '.' and does not end with .trigger, .metadata or .sftpreceipt"
        )
    if not recipients:
        raise EnvelopeError(f"{name}: a trigger needs at least one recipient account")
    return Trigger(
        FileDescriptor(
            file_name=name,
            size_in_bytes=len(data),
            sender=sender,
            recipients=tuple(recipients),
            senders_file_id=senders_file_id(data, sha256),
        )
    )


# --- schema -----------------------------------------------------------------------------------------



def _validate(root: etree._Element) -> None:
    problem = first_schema_error(load_schema(KOMBIT_SCHEMA), root)
    if problem is not None:
        raise EnvelopeError(f"not valid against the KOMBIT SFTP schema ({problem})")


def validate_kombit(xml: bytes) -> None:
    """Raise `EnvelopeError` unless `xml` is a document valid against KOMBIT's SFTPTypes.xsd."""
    _validate(_parse(xml))


# --- writing ----------------------------------------------------------------------------------------


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    # Child elements are unqualified: SFTPTypes.xsd does not set elementFormDefault.
    element = etree.SubElement(parent, tag)
    if text is not None:
        element.text = text
    return element


def _root(local_name: str) -> etree._Element:
    return etree.Element(f"{{{SFTP_NS}}}{local_name}", nsmap={_PREFIX: SFTP_NS})


def _add_descriptor(root: etree._Element, d: FileDescriptor) -> None:
    descriptor = _sub(root, "FileDescriptor")
    _sub(descriptor, "FileName", d.file_name)
    _sub(descriptor, "SizeInBytes", str(d.size_in_bytes))
    _sub(descriptor, "Sender", d.sender)
    if d.senders_file_id is not None:
        _sub(descriptor, "SendersFileId", d.senders_file_id)
    for recipient in d.recipients:
        _sub(descriptor, "Recipients", recipient)
    _sub(root, "FileContentDescriptor")  # empty: simple transfer


def _serialize(build, what: str) -> bytes:
    try:
        root = build()
    except (ValueError, TypeError) as exc:  # e.g. a control character, which XML cannot carry
        raise EnvelopeError(f"cannot write the {what}: {exc}") from None
    _validate(root)
    return _DECLARATION + etree.tostring(root, xml_declaration=False, encoding="UTF-8", pretty_print=True)


def encode_trigger(t: Trigger) -> bytes:
    def build() -> etree._Element:
        root = _root("Trigger")
        _add_descriptor(root, t.descriptor)
        return root

    return _serialize(build, "trigger")


def encode_metadata(m: FileMetadata) -> bytes:
    def build() -> etree._Element:
        root = _root("FileMetadata")
        _sub(root, "FileTransferUUID", m.file_transfer_uuid)
        _add_descriptor(root, m.descriptor)
        return root

    return _serialize(build, "metadata")


def encode_receipt(r: TechnicalReceipt) -> bytes:
    def build() -> etree._Element:
        root = _root("TechnicalReceipt")
        _sub(root, "FileTransferUUID", r.file_transfer_uuid)
        if r.senders_file_id is not None:
            _sub(root, "SendersFileId", r.senders_file_id)
        if r.succeeded:
            _sub(_sub(root, "Receipt"), "Message", SUCCESS)
        for error in r.errors:
            message = _sub(root, "ErrorMessage")
            _sub(message, "ErrorCode", str(int(error.code)))
            _sub(message, "ErrorCodeDescription", error.code_description)
            _sub(message, "ErrorDescription", error.description)
        return root

    return _serialize(build, "technical receipt")


# --- reading ----------------------------------------------------------------------------------------


def _parse(data: bytes) -> etree._Element:
    try:
        return parse_xml(data)
    except XmlRefused as exc:
        raise EnvelopeError(str(exc)) from None


def _check_root(root: etree._Element, expected: str) -> etree._Element:
    """Check the root by namespace URI and local name (never by prefix), normalise the children."""
    qname = etree.QName(root)
    if qname.namespace != SFTP_NS:
        where = f"namespace {qname.namespace!r}" if qname.namespace else "no namespace"
        raise EnvelopeError(f"root element {qname.localname!r} is in {where}, expected {SFTP_NS!r}")
    if qname.localname != expected:
        raise EnvelopeError(f"root element is {qname.localname!r}, expected {expected!r}")
    # A client that puts a default namespace on the root also qualifies the children by accident;
    # the meaning is unambiguous, so read them as the unqualified elements the schema declares.
    for element in root.iterdescendants():
        if isinstance(element.tag, str) and etree.QName(element).namespace == SFTP_NS:
            element.tag = etree.QName(element).localname
    return root


def _text(element: etree._Element) -> str:
    # Values are kept exactly as written (no stripping); comments inside a value are not text.
    return "".join(element.itertext())


def _child(parent: etree._Element, tag: str) -> etree._Element:
    found = parent.find(tag)
    if found is None:  # cannot happen after schema validation; say so rather than crash
        raise EnvelopeError(f"{tag} is missing in {etree.QName(parent).localname}")
    return found


def _read_descriptor(root: etree._Element) -> FileDescriptor:
    d = _child(root, "FileDescriptor")
    senders_file_id = d.find("SendersFileId")
    return FileDescriptor(
        file_name=_text(_child(d, "FileName")),
        size_in_bytes=int(_text(_child(d, "SizeInBytes"))),  # xs:unsignedLong, checked by the schema
        sender=_text(_child(d, "Sender")),
        recipients=tuple(_text(r) for r in d.findall("Recipients")),
        senders_file_id=None if senders_file_id is None else _text(senders_file_id),
    )


def decode_trigger(data: bytes) -> Trigger:
    root = _check_root(_parse(data), "Trigger")
    _validate(root)
    return Trigger(_read_descriptor(root))


def _is_trigger_form_metadata(root: etree._Element) -> bool:
    first = next((c for c in root if isinstance(c.tag, str)), None)
    return (
        etree.QName(root).localname == "Trigger"
        and first is not None
        and etree.QName(first).localname == "FileTransferUUID"
    )


def decode_metadata(data: bytes) -> FileMetadata:
    """Root `FileMetadata`, or the older platform output: root `Trigger` with `FileTransferUUID`
    first (exchange.md "Metadata"). The older form is read as the FileMetadata it stands for; it
    may lack the (empty) FileContentDescriptor, as in client code written against production."""
    root = _parse(data)
    trigger_form = _is_trigger_form_metadata(root)
    root = _check_root(root, "Trigger" if trigger_form else "FileMetadata")
    if trigger_form:
        root.tag = f"{{{SFTP_NS}}}FileMetadata"
        if root.find("FileContentDescriptor") is None:
            etree.SubElement(root, "FileContentDescriptor")
    _validate(root)
    return FileMetadata(
        file_transfer_uuid=_text(_child(root, "FileTransferUUID")),
        descriptor=_read_descriptor(root),
    )


def decode_receipt(data: bytes) -> TechnicalReceipt:
    root = _check_root(_parse(data), "TechnicalReceipt")
    _validate(root)
    senders_file_id = root.find("SendersFileId")
    receipt = root.find("Receipt")
    if receipt is not None:
        message = _text(_child(receipt, "Message"))
        if message != SUCCESS:
            # exchange.md: a receipt is either SUCCESS or error messages; anything else is unknown.
            raise EnvelopeError(f"Receipt/Message is {message!r}, expected {SUCCESS!r}")
    errors = tuple(
        ReceiptError(
            code=int(_text(_child(e, "ErrorCode"))),
            code_description=_text(_child(e, "ErrorCodeDescription")),
            description=_text(_child(e, "ErrorDescription")),
        )
        for e in root.findall("ErrorMessage")
    )
    return TechnicalReceipt(
        file_transfer_uuid=_text(_child(root, "FileTransferUUID")),
        senders_file_id=None if senders_file_id is None else _text(senders_file_id),
        errors=errors,
    )
