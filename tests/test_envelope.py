"""The envelope codec (exchange.md): trigger, metadata and technical receipt against KOMBIT's schema."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from contracts.envelope import (
    SFTP_NS,
    EnvelopeError,
    FileDescriptor,
    FileMetadata,
    ReceiptError,
    TechnicalReceipt,
    Trigger,
    decode_metadata,
    decode_receipt,
    decode_trigger,
    encode_metadata,
    encode_receipt,
    encode_trigger,
    is_valid_envelope_name,
    senders_file_id,
    trigger_for,
    validate_kombit,
)

KOMBIT_XSD = Path(__file__).resolve().parents[1] / "contracts" / "kombit" / "SFTPTypes.xsd"

DESCRIPTOR = FileDescriptor(
    file_name="SF6111_0101_202702_001.xml",
    size_in_bytes=48211,
    sender="udk-pension",
    recipients=("kp",),
    senders_file_id="6f1c0d8e-2b7a-5c3e-9f10-1a2b3c4d5e6f",
)


@pytest.fixture(scope="module")
def kombit() -> etree.XMLSchema:
    """KOMBIT's schema, loaded here independently of the codec under test."""
    return etree.XMLSchema(etree.parse(str(KOMBIT_XSD)))


def assert_kombit_valid(schema: etree.XMLSchema, xml: bytes) -> etree._Element:
    root = etree.fromstring(xml)
    assert schema.validate(root), schema.error_log
    return root


def trigger_xml(descriptor_body: str, root: str = 'ns2:Trigger xmlns:ns2="{ns}"', content: str = "") -> bytes:
    open_tag = root.format(ns=SFTP_NS)
    close_tag = open_tag.split()[0]
    return (
        f"<{open_tag}><FileDescriptor>{descriptor_body}</FileDescriptor>"
        f"<FileContentDescriptor>{content}</FileContentDescriptor></{close_tag}>"
    ).encode()


VALID_BODY = "<FileName>a.xml</FileName><SizeInBytes>12</SizeInBytes><Sender>kp</Sender><Recipients>udk-pension</Recipients>"


# --- writing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "descriptor",
    [
        DESCRIPTOR,
        FileDescriptor("b", 0, "kp", ("udk-pension", "ky")),  # no SendersFileId, two recipients
        FileDescriptor(" spaced ", 2**64 - 1, "kp", ("x",), ""),  # values kept exactly, unsignedLong max
    ],
)
def test_trigger_round_trip_and_kombit_valid(kombit, descriptor):
    xml = encode_trigger(Trigger(descriptor))
    assert decode_trigger(xml) == Trigger(descriptor)
    assert_kombit_valid(kombit, xml)


def test_written_xml_has_declaration_prefixed_root_and_unqualified_children():
    xml = encode_trigger(Trigger(DESCRIPTOR))
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(xml)
    assert root.tag == f"{{{SFTP_NS}}}Trigger" and root.prefix  # a prefix, not the default namespace
    assert all(etree.QName(e).namespace is None for e in root.iterdescendants())
    content = root.find("FileContentDescriptor")
    assert content is not None and len(content) == 0 and not (content.text or "").strip()
    assert [e.tag for e in root.find("FileDescriptor")] == [
        "FileName", "SizeInBytes", "Sender", "SendersFileId", "Recipients",
    ]


def test_metadata_round_trip_and_kombit_valid(kombit):
    metadata = FileMetadata(str(uuid.uuid4()), DESCRIPTOR)
    xml = encode_metadata(metadata)
    assert decode_metadata(xml) == metadata
    root = assert_kombit_valid(kombit, xml)
    assert etree.QName(root).localname == "FileMetadata"
    assert [e.tag for e in root] == ["FileTransferUUID", "FileDescriptor", "FileContentDescriptor"]


@pytest.mark.parametrize(
    "receipt",
    [
        TechnicalReceipt("3b0a5e4c-0000-4000-8000-000000000001", "abc"),
        TechnicalReceipt("3b0a5e4c-0000-4000-8000-000000000002", None),
        TechnicalReceipt(
            "3b0a5e4c-0000-4000-8000-000000000003",
            "abc",
            (ReceiptError(102, "SIZE_MISMATCH", "SizeInBytes is 3"), ReceiptError(-7, "X", "")),
        ),
    ],
)
def test_receipt_round_trip_and_kombit_valid(kombit, receipt):
    xml = encode_receipt(receipt)
    decoded = decode_receipt(xml)
    assert decoded == receipt
    assert decoded.succeeded == (not receipt.errors)
    root = assert_kombit_valid(kombit, xml)
    if receipt.succeeded:
        assert root.findtext("Receipt/Message") == "SUCCESS"
    else:
        assert root.find("Receipt") is None and len(root.findall("ErrorMessage")) == len(receipt.errors)


@pytest.mark.parametrize(
    "descriptor, reason",
    [
        (FileDescriptor("x" * 300, 1, "kp", ("a",)), "maxLength"),
        (FileDescriptor("a", -1, "kp", ("a",)), "unsignedLong"),
        (FileDescriptor("a", 1, "kp", ()), "Recipients"),
        (FileDescriptor("a\x00b", 1, "kp", ("a",)), "cannot write"),
    ],
)
def test_encoder_refuses_what_kombit_refuses(descriptor, reason):
    with pytest.raises(EnvelopeError, match=reason):
        encode_trigger(Trigger(descriptor))


xml_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn", "Co")), max_size=40
)


@settings(max_examples=60, deadline=None)
@given(
    name=xml_text.filter(lambda s: len(s) <= 255),
    size=st.integers(min_value=0, max_value=2**64 - 1),
    sender=xml_text,
    recipients=st.lists(xml_text, min_size=1, max_size=3).map(tuple),
    file_id=st.none() | xml_text,
    transfer=xml_text,
)
def test_metadata_round_trips_any_text(name, size, sender, recipients, file_id, transfer):
    metadata = FileMetadata(transfer, FileDescriptor(name, size, sender, recipients, file_id))
    assert decode_metadata(encode_metadata(metadata)) == metadata


# --- reading what other clients write ---------------------------------------------------------------

SPSFTP_TRIGGER = f"""<ns2:Trigger
xmlns:ns2="{SFTP_NS}">
<FileDescriptor>
<FileName>hellofile</FileName>
<SizeInBytes>11</SizeInBytes>
<Sender>kong-christian</Sender>
<SendersFileId>0b8f7a2d5e1c9b3a4f6e8d7c2b1a0f9e8d7c6b5a</SendersFileId>
<Recipients>x</Recipients>
</FileDescriptor>
<FileContentDescriptor>
</FileContentDescriptor>
</ns2:Trigger>""".encode()


def test_reads_spsftp_style_trigger():
    descriptor = decode_trigger(SPSFTP_TRIGGER).descriptor
    assert descriptor == FileDescriptor(
        "hellofile", 11, "kong-christian", ("x",), "0b8f7a2d5e1c9b3a4f6e8d7c2b1a0f9e8d7c6b5a"
    )


@pytest.mark.parametrize(
    "root",
    [
        'x:Trigger xmlns:x="{ns}"',  # another prefix
        'Trigger xmlns="{ns}"',  # default namespace: children are qualified too, read them anyway
    ],
)
def test_reads_any_prefix_and_default_namespace(root):
    trigger = decode_trigger(trigger_xml(VALID_BODY, root=root))
    assert trigger.descriptor == FileDescriptor("a.xml", 12, "kp", ("udk-pension",))


def test_reads_default_namespace_root_with_unqualified_children():
    body = VALID_BODY.replace("<FileName>", '<FileName xmlns="">')
    xml = (
        f'<?xml version="1.0"?>\n<Trigger xmlns="{SFTP_NS}">\n  <FileDescriptor xmlns="">{body}</FileDescriptor>\n'
        '  <FileContentDescriptor xmlns=""/>\n</Trigger>\n'
    ).encode()
    assert decode_trigger(xml).descriptor.file_name == "a.xml"


def test_values_are_kept_exactly_as_written():
    body = VALID_BODY.replace("<FileName>a.xml<", "<FileName> a.xml\n<").replace(
        "<Sender>kp<", "<Sender>k<!-- note -->p<"
    )
    descriptor = decode_trigger(trigger_xml(body)).descriptor
    assert descriptor.file_name == " a.xml\n"
    assert descriptor.sender == "kp"


def test_reader_does_not_judge_the_file_name():
    # exchange.md: name validity is for the emulator and the pipeline, not a schema fact.
    body = VALID_BODY.replace("a.xml", "../../etc/passwd")
    assert decode_trigger(trigger_xml(body)).descriptor.file_name == "../../etc/passwd"
    assert not is_valid_envelope_name("../../etc/passwd")


def test_reads_older_trigger_form_metadata_as_written_by_the_platform():
    # As in client code written against production: root Trigger, FileTransferUUID first, no
    # FileContentDescriptor, pretty-printed.
    xml = f"""<ns2:Trigger
xmlns:ns2="{SFTP_NS}">
<FileTransferUUID>
47570fc2-be65-4ab1-8da7-3bcc086bfef9
</FileTransferUUID>
<FileDescriptor>
<FileName>hellofile</FileName>
<SizeInBytes>11</SizeInBytes>
<Sender>kong-christian</Sender>
<Recipients>x</Recipients>
</FileDescriptor>
</ns2:Trigger>
""".encode()
    metadata = decode_metadata(xml)
    assert metadata.file_transfer_uuid == "\n47570fc2-be65-4ab1-8da7-3bcc086bfef9\n"  # as written
    assert metadata.descriptor == FileDescriptor("hellofile", 11, "kong-christian", ("x",))


def test_reads_older_trigger_form_metadata_with_content_descriptor():
    xml = (
        f'<t:Trigger xmlns:t="{SFTP_NS}"><FileTransferUUID>u-1</FileTransferUUID>'
        f"<FileDescriptor>{VALID_BODY}</FileDescriptor><FileContentDescriptor/></t:Trigger>"
    ).encode()
    assert decode_metadata(xml) == FileMetadata("u-1", FileDescriptor("a.xml", 12, "kp", ("udk-pension",)))


def test_metadata_and_trigger_are_not_confused():
    with pytest.raises(EnvelopeError, match="expected 'FileMetadata'"):
        decode_metadata(trigger_xml(VALID_BODY))  # a trigger has no FileTransferUUID
    with pytest.raises(EnvelopeError, match="expected 'Trigger'"):
        decode_trigger(encode_metadata(FileMetadata("u", DESCRIPTOR)))
    older = (
        f'<t:Trigger xmlns:t="{SFTP_NS}"><FileTransferUUID>u</FileTransferUUID>'
        f"<FileDescriptor>{VALID_BODY}</FileDescriptor><FileContentDescriptor/></t:Trigger>"
    ).encode()
    with pytest.raises(EnvelopeError, match="KOMBIT"):
        decode_trigger(older)


# --- refusing ------------------------------------------------------------------------------------------

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<sp:Trigger xmlns:sp="http://serviceplatformen.dk/xml/wsdl/soap11/SFTP/1/types"><FileDescriptor>
<FileName>&lol2;</FileName><SizeInBytes>1</SizeInBytes><Sender>kp</Sender><Recipients>a</Recipients>
</FileDescriptor><FileContentDescriptor/></sp:Trigger>"""


@pytest.mark.parametrize(
    "xml, reason",
    [
        (b"", "empty"),
        (b"FileName=a.xml", "not well-formed"),
        (b"<sp:Trigger xmlns:sp='x'><FileDescriptor>", "not well-formed"),
        (BOMB, "DOCTYPE"),
        (trigger_xml(VALID_BODY, root='sp:FileMetadata xmlns:sp="{ns}"'), "expected 'Trigger'"),
        (trigger_xml(VALID_BODY, root='sp:Trigger xmlns:sp="urn:other"'), "namespace 'urn:other'"),
        (trigger_xml(VALID_BODY, root="Trigger"), "no namespace"),
        (trigger_xml(VALID_BODY.replace(">12<", ">-1<")), "unsignedLong"),
        (trigger_xml(VALID_BODY.replace(">12<", ">1.5<")), "unsignedLong"),
        (trigger_xml(VALID_BODY.replace(">12<", "><")), "unsignedLong"),
        (trigger_xml(VALID_BODY.replace("a.xml", "a" * 300)), "maxLength"),
        (trigger_xml(VALID_BODY.replace("<Recipients>udk-pension</Recipients>", "")), "Recipients"),
        (trigger_xml(VALID_BODY.replace("<Sender>kp</Sender>", "")), "Sender"),
        (trigger_xml(VALID_BODY, content="<Extra/>"), "KOMBIT"),
        (trigger_xml(VALID_BODY + "<Unknown>1</Unknown>"), "KOMBIT"),
    ],
)
def test_decode_trigger_refuses(xml, reason):
    with pytest.raises(EnvelopeError, match=reason):
        decode_trigger(xml)


def test_receipt_reader_refuses_unknown_message_and_mixed_answers():
    success = encode_receipt(TechnicalReceipt("u", None))
    with pytest.raises(EnvelopeError, match="expected 'SUCCESS'"):
        decode_receipt(success.replace(b">SUCCESS<", b">OK<"))
    error = b"<ErrorMessage><ErrorCode>1</ErrorCode><ErrorCodeDescription>X</ErrorCodeDescription><ErrorDescription>y</ErrorDescription></ErrorMessage>"
    with pytest.raises(EnvelopeError, match="KOMBIT"):
        decode_receipt(success.replace(b"</Receipt>", b"</Receipt>" + error))
    with pytest.raises(EnvelopeError, match="int"):
        decode_receipt(error.join([b"<sp:TechnicalReceipt xmlns:sp='" + SFTP_NS.encode() + b"'><FileTransferUUID>u</FileTransferUUID>", b"</sp:TechnicalReceipt>"]).replace(b">1<", b">one<"))


def test_validate_kombit():
    validate_kombit(encode_receipt(TechnicalReceipt("u", None)))
    validate_kombit(SPSFTP_TRIGGER)
    with pytest.raises(EnvelopeError, match="KOMBIT"):
        validate_kombit(trigger_xml(VALID_BODY.replace(">12<", ">-1<")))
    with pytest.raises(EnvelopeError, match="DOCTYPE"):
        validate_kombit(BOMB)


# --- building a trigger ----------------------------------------------------------------------------------


def test_senders_file_id_is_a_uuid5_of_the_content():
    first = senders_file_id(b"<SF6111/>")
    assert first == senders_file_id(b"<SF6111/>")
    assert first != senders_file_id(b"<SF6111 />")
    assert uuid.UUID(first).version == 5


def test_trigger_for():
    data = "æøå\n".encode()
    trigger = trigger_for("SF2601_0101_202702_001.xml", data, "udk-pension", ["ky"])
    assert trigger.descriptor == FileDescriptor(
        "SF2601_0101_202702_001.xml", len(data), "udk-pension", ("ky",), senders_file_id(data)
    )
    assert trigger.descriptor.size_in_bytes == 7  # bytes (3 x 2 + 1), not characters (4)
    assert encode_trigger(trigger) == encode_trigger(trigger_for("SF2601_0101_202702_001.xml", data, "udk-pension", ["ky"]))
    # The data's SHA-256 given by a caller that has it: the same trigger, without hashing again.
    sha = hashlib.sha256(data).hexdigest()
    assert trigger_for("SF2601_0101_202702_001.xml", data, "udk-pension", ["ky"], sha256=sha) == trigger
    with pytest.raises(EnvelopeError, match="cannot be sent"):
        trigger_for("../x.xml", data, "udk-pension", ["ky"])
    with pytest.raises(EnvelopeError, match="recipient"):
        trigger_for("x.xml", data, "udk-pension", [])


@pytest.mark.parametrize(
    "name, valid",
    [
        ("SF6110_0101_202702_001.xml", True),
        ("a", True),
        ("-_.x", True),
        ("a" * 255, True),
        ("a" * 256, False),
        ("", False),
        (".hidden", False),
        ("..", False),
        ("../x", False),
        ("a/b", False),
        ("a b", False),
        ("æble.xml", False),
        ("a.xml\n", False),
        ("x.trigger", False),
        ("x.metadata", False),
        ("x.sftpreceipt", False),
        ("x.trigger.xml", True),
        (None, False),
    ],
)
def test_is_valid_envelope_name(name, valid):
    assert is_valid_envelope_name(name) is valid
