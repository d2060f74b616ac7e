"""Grammar-aware mutations of the files a partner or the platform sends (issue 7, item 6), shared by
the in-suite fuzz tests (tests/test_fuzz.py, a small budget) and the long run by hand
(benchmarks/fuzz.py, docs/operations.md "Fuzzing").

A mutation starts from a valid file (an SF6110 request from real instruction rows, or a trigger,
metadata or technical receipt from the envelope codec) and changes one thing a hostile or broken
sender would: an element dropped, doubled, renamed, moved to another namespace, nested deeper,
repeated; a value replaced; an attribute added; a comment, a processing instruction or CDATA put
inside a value; a DOCTYPE with entities; a BOM, another encoding, a broken declaration; the bytes
truncated, flipped or spliced. One to three mutations per file."""

from __future__ import annotations

import copy
import uuid

import polars as pl
from hypothesis import strategies as st
from lxml import etree

from contracts.envelope import (
    FileDescriptor,
    FileMetadata,
    ReceiptError,
    TechnicalReceipt,
    encode_metadata,
    encode_receipt,
    encode_trigger,
    trigger_for,
)
from contracts.sf6110 import INSTRUCTION_SCHEMA, NS, encode_request_file

# People whose CPR must never leak from a reader's rejection (they are in the files mutated).
CPRS = ("0101401234", "2412502345", "1505551234", "0606401890")

# --- valid files to start from --------------------------------------------------------------------

_AMOUNTS = st.sampled_from(["100.00", "0.01", "12500.50", "99999999.99", "1", "0000000000001.00"])
_PERIODS = st.sampled_from(["2027-01", "2027-02", "2026-12", "2028-06"])


@st.composite
def instruction_rows(draw) -> list[dict]:
    rows = []
    for position in range(draw(st.integers(0, 4))):
        handling = draw(st.sampled_from(["OPRET", "AENDR", "OPHOER"]))
        beloeb = None if handling == "OPHOER" else draw(_AMOUNTS)
        poster = [] if beloeb is None else [{"tekst": "Træk", "beloeb": beloeb}]
        rows.append(
            {
                "position": position,
                "anmodning_id": f"FUZZ-{draw(st.integers(0, 999)):03d}",
                "cpr": draw(st.sampled_from(CPRS)),
                "handling": handling,
                "traekart": None if handling == "OPHOER" else draw(st.sampled_from(["MAD", "BRUG", "PLEJ", "HUSL"])),
                "fra_periode": draw(_PERIODS),
                "til_periode": draw(st.none() | _PERIODS),
                "samlet_beloeb": beloeb,
                "specifikation_present": beloeb is not None,
                "poster": poster,
                "reference": draw(st.none() | st.just("sag 17")),
            }
        )
    return rows


@st.composite
def valid_request_files(draw) -> bytes:
    kommunekode = draw(st.sampled_from(["0101", "0147", "0751", "0851"]))
    rows = draw(instruction_rows())
    return encode_request_file(kommunekode, "2027-01-05T10:15:00+01:00", pl.DataFrame(rows, schema=INSTRUCTION_SCHEMA))


_ACCOUNTS = st.sampled_from(["kp", "ky", "udk-pension"])
_NAMES = st.sampled_from(["SF6110_0101_20270105101500.xml", "SF6111_0751_202701_001.xml", "a.xml"])


@st.composite
def _descriptor(draw, data: bytes = b"<x/>") -> FileDescriptor:
    trigger = trigger_for(draw(_NAMES), data, draw(_ACCOUNTS), draw(st.lists(_ACCOUNTS, min_size=1, max_size=3)))
    return trigger.descriptor


@st.composite
def valid_triggers(draw) -> bytes:
    from contracts.envelope import Trigger

    return encode_trigger(Trigger(draw(_descriptor())))


@st.composite
def valid_metadata(draw) -> bytes:
    return encode_metadata(FileMetadata(str(draw(st.uuids())), draw(_descriptor())))


@st.composite
def valid_receipts(draw) -> bytes:
    errors = draw(
        st.lists(
            st.builds(ReceiptError, st.integers(100, 105), st.sampled_from(["FILE_MISSING", "SIZE_MISMATCH"]), st.just("x")),
            max_size=2,
        )
    )
    return encode_receipt(TechnicalReceipt(str(draw(st.uuids())), draw(st.none() | st.just(str(uuid.uuid4()))), tuple(errors)))


# --- the mutations -----------------------------------------------------------------------------

TAGS = [
    "TraekAnmodningSamling", "Kommunekode", "DannetTidspunkt", "AntalAnmodninger", "TraekAnmodning",
    "AnmodningId", "CPR", "Handling", "Traekart", "FraPeriode", "TilPeriode", "SamletBeloeb",
    "Specifikation", "Post", "Tekst", "Beloeb", "Reference",
    "Trigger", "FileMetadata", "TechnicalReceipt", "FileDescriptor", "FileName", "SizeInBytes", "Sender",
    "Recipients", "SendersFileId", "FileTransferUUID", "FileContentDescriptor", "Receipt", "Message",
    "ErrorMessage", "ErrorCode", "Ukendt",
]
NAMESPACES = [None, NS, "http://serviceplatformen.dk/xml/wsdl/soap11/SFTP/1/types", "urn:x", ""]
# Values a careless or hostile sender writes: other digit scripts, signs, exponents, huge numbers,
# white space, markup as text, a CPR where an id belongs, very long text.
VALUES = st.one_of(
    st.sampled_from(
        [
            "", " ", "0", "-1", "+5", "1e3", "12,50", "0000000000001.00", "9" * 40, "18446744073709551616",
            "١٠٠.٠٠", "１００.００", "०१०१४०१२३४", "0101401234", "2027-13", "2027-1", "SUCCESS", "success",
            "OPRET ", "opret", "<&>", "]]>", "æøå" * 30, "x" * 5000, "\u202e0101", "\ufeff",
            "2027-01-05T10:15:00", "2027-01-05T10:15:00+25:00",
        ]
    ),
    st.text(max_size=40),
)
ATTRIBUTES = [
    ("{http://www.w3.org/2001/XMLSchema-instance}nil", "true"),
    ("{http://www.w3.org/2001/XMLSchema-instance}type", "xs:int"),
    ("{urn:x}a", "1"),
    ("id", "x"),
    ("{http://www.w3.org/XML/1998/namespace}lang", "da"),
]
DOCTYPES = [
    b'<!DOCTYPE r [<!ENTITY e "0101401234">]>',
    b'<!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]>',
    b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY e "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>',
    b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/x.dtd">',
    b"<!DOCTYPE r>",
]


def _elements(root: etree._Element) -> list[etree._Element]:
    return [e for e in root.iter() if isinstance(e.tag, str)]


def _pick(draw, root: etree._Element, *, not_root: bool = False) -> etree._Element:
    elements = _elements(root)
    if not_root and len(elements) > 1:
        elements = elements[1:]
    return elements[draw(st.integers(0, len(elements) - 1))]


def _qualified(draw, element: etree._Element, local: str | None = None) -> str:
    name = local or etree.QName(element).localname
    namespace = draw(st.sampled_from(NAMESPACES))
    return f"{{{namespace}}}{name}" if namespace else name


def _tree_mutation(draw, root: etree._Element) -> None:
    kind = draw(
        st.sampled_from(["drop", "duplicate", "value", "rename", "namespace", "attribute", "nest", "repeat", "comment", "move"])
    )
    element = _pick(draw, root, not_root=kind in ("drop", "duplicate", "repeat", "move"))
    parent = element.getparent()
    if kind == "drop" and parent is not None:
        parent.remove(element)
    elif kind == "duplicate" and parent is not None:
        element.addnext(copy.deepcopy(element))
    elif kind == "value":
        try:
            element.text = draw(VALUES)
        except ValueError:  # a control character lxml will not write: the byte mutations cover it
            element.text = "\ufffd"
        if draw(st.booleans()):
            for child in list(element):
                element.remove(child)
    elif kind == "rename":
        element.tag = _qualified(draw, element, draw(st.sampled_from(TAGS)))
    elif kind == "namespace":
        element.tag = _qualified(draw, element)
    elif kind == "attribute":
        name, value = draw(st.sampled_from(ATTRIBUTES))
        element.set(name, value)
    elif kind == "nest":
        depth = draw(st.sampled_from([1, 2, 50, 300]))  # libxml2 refuses more than 256 levels
        outer = inner = etree.Element(element.tag)
        for _ in range(depth - 1):
            inner = etree.SubElement(inner, element.tag)
        if parent is None:
            element.append(outer)  # the root itself cannot be wrapped: nest inside it
        else:
            element.addprevious(outer)
            inner.append(element)
    elif kind == "repeat" and parent is not None:
        for _ in range(draw(st.integers(2, 40))):
            element.addnext(copy.deepcopy(element))
    elif kind == "comment":
        where = draw(st.sampled_from(["comment", "pi", "cdata"]))
        text = element.text or "0"
        if where == "comment":
            element.text = text[:1]
            element.append(etree.Comment(" x "))
            element[-1].tail = text[1:]
        elif where == "pi":
            element.append(etree.ProcessingInstruction("pi", "x"))
        else:
            element.text = etree.CDATA(text)
    elif kind == "move" and parent is not None:
        target = _pick(draw, root)
        if element not in target.iterancestors() and target is not element:
            target.append(element)


def _byte_mutation(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["doctype", "entity", "bom", "encoding", "truncate", "flip", "splice", "declaration"]))
    body = data.split(b"?>", 1)[1] if data.startswith(b"<?xml") else data
    declaration = data[: len(data) - len(body)]
    if kind == "doctype":
        return declaration + draw(st.sampled_from(DOCTYPES)) + body
    if kind == "entity":
        at = body.find(b"</")
        return declaration + draw(st.sampled_from(DOCTYPES)) + body[:at] + b"&e;" + body[at:]
    if kind == "bom":
        return draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf\xef\xbb\xbf"])) + data
    if kind == "encoding":
        codec = draw(st.sampled_from(["utf-16", "utf-16-be", "latin-1", "cp1252", "utf-32"]))
        text = data.decode("utf-8")
        named = text.replace('encoding="UTF-8"', f'encoding="{codec}"') if draw(st.booleans()) else text
        return named.encode(codec, errors="replace")
    if kind == "truncate":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if kind == "flip":
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if kind == "splice":
        at = draw(st.integers(0, len(data)))
        piece = draw(st.sampled_from([b"\x00", b"\x1f", b"\xc3", b"\xed\xa0\x80", b"&#0;", b"&#xD800;", b"<", b"]]>", b"\r"]))
        return data[:at] + piece + data[at:]
    # declaration: removed, doubled, after white space, or with a version libxml2 does not know
    return draw(
        st.sampled_from(
            [body, declaration + data, b"\n" + data, data.replace(b'version="1.0"', b'version="9.9"'), b"<?xml?>" + body]
        )
    )


@st.composite
def mutated(draw, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid file with one to three mutations, tree first (while it still parses), bytes last."""
    data = draw(valid)
    root = etree.fromstring(data)  # our own valid file: the trusted parser is fine here
    for _ in range(draw(st.integers(0, 2))):
        _tree_mutation(draw, root)
    data = b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="UTF-8")
    if draw(st.booleans()):
        data = _byte_mutation(draw, data)
    return data


def unmasked(texts, cprs=CPRS) -> list[str]:
    return [t for t in texts if any(cpr in t for cpr in cprs)]
