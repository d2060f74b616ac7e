"""Properties of SF6110 intake (hypothesis): whatever bytes arrive, the judge decides without
crashing, and the kvittering it leads to validates and carries no CPR; values survive an
encode/decode round trip exactly; the plain reading decodes as the tree; U01 judged with its
amounts in columns is U01 as written; the vectorized CPR rule agrees with `is_valid_cpr`."""

from __future__ import annotations

import copy
import datetime as dt

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from assets.sf6110_rules import judge_file
from contracts.codes import afvisningskoder
from contracts.cpr import is_valid_cpr, valid_cpr_expr
from contracts.sf6110 import (
    INSTRUCTION_SCHEMA,
    NS,
    RequestFile,
    _read_plain,
    decode_request_file,
    encode_kvittering,
    encode_request_file,
    kvittering_schema,
    u01_offence_frame,
    u01_offences,
)
from contracts.xmlsafe import parse_xml
from pipelines.config import default_partners
from tests.test_sf6110_codec import decoded_by_the_tree, request, same_decoding
from tests.test_sf6110_rules import PENSIONSSAGER, ledger

RECEIVED = dt.datetime(2027, 1, 5, 9, 16, 2, tzinfo=dt.timezone.utc)
CPRS = ("0101401234", "2412502345")
EXAMPLE = request()
HISTORY = ledger({"anmodning_id": "KBH-2026-000077", "cpr": "2412502345"})
F_CODES = {kode for kode in afvisningskoder() if kode.startswith("F")}
U_CODES = {kode for kode in afvisningskoder() if kode.startswith("U")}

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def judge_and_answer(data: bytes) -> None:
    """Judge `data`, write its kvittering and check every property of the pair."""
    decision = judge_file(
        data,
        sender="kp",
        filnavn="SF6110_0101_20270105101500.xml",
        file_transfer_uuid="1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed",
        received=RECEIVED,
        partners=default_partners(),
        accepted_before=frozenset(),
        pensionssager=PENSIONSSAGER,
        ledger=HISTORY,
        first_open_period=lambda t: "2027-01",
    )
    if decision.status == "AFVIST":
        assert decision.kode in F_CODES
        assert decision.outcomes.height == 0 and decision.registered.height == 0
    else:
        assert decision.status == "MODTAGET" and decision.kode is None
        assert set(decision.outcomes["kode"].drop_nulls().to_list()) <= U_CODES
        assert decision.outcomes["position"].to_list() == list(range(decision.outcomes.height))
        accepted = decision.outcomes.filter(pl.col("status") == "MODTAGET")["position"].to_list()
        assert decision.registered["position"].to_list() == accepted
    assert len(decision.kommunekode) == 4 and decision.kommunekode.isdigit()

    kvittering = encode_kvittering(
        kommunekode=decision.kommunekode,
        modtaget_filnavn="SF6110_0101_20270105101500.xml",
        file_transfer_uuid="1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed",
        modtaget=RECEIVED,
        status=decision.status,
        kode=decision.kode,
        outcomes=decision.outcomes,
    )
    schema = kvittering_schema()
    assert schema.validate(parse_xml(kvittering)), schema.error_log
    # No CPR, unless the municipality itself wrote it into an AnmodningId (echoed as received).
    echoed = "".join(decision.outcomes["anmodning_id"].fill_null("").to_list())
    for cpr in CPRS:
        assert cpr.encode() not in kvittering or cpr in echoed


@FAST
@given(st.binary(max_size=2000))
def test_random_bytes(data):
    judge_and_answer(data)


NAMES = ["AnmodningId", "CPR", "Handling", "Traekart", "FraPeriode", "TilPeriode", "SamletBeloeb", "Reference",
         "Specifikation", "Post", "Tekst", "Beloeb", "TraekAnmodning", "AntalAnmodninger", "Ukendt"]
VALUES = ["", " ", "0", "2", "02", "1e3", "12,50", "007.00", "100000.01", "OPRET", "AENDR", "OPHOER", "HUSL", "XXXX",
          "2026-12", "2027-13", "2028-01", "0101401234", "2412502345", "3102501234", "0606401890", "0147", "101",
          "KBH-2026-000077", "KBH-2027-000123", "x" * 61]
XML_PIECES = [
    "<", ">", "/", "&", "&amp;", "&#0;", "&#x41;", "<![CDATA[x]]>", "<!--", "-->", '"', "'", "\r\n", "\x00",
    " ", "æ", "\ufeff", "<CPR>", "</CPR>", "<Traekart/>", "<Ukendt/>", "<!DOCTYPE x>", 'a="1"',
    'xmlns="urn:x"', "<TraekAnmodning>", "</TraekAnmodning>", "0", "-", ".", "e", "OPHOER", "AENDR",
]


@st.composite
def mutated_example(draw) -> bytes:
    data = bytearray(EXAMPLE)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "duplicate"]))
        at = draw(st.integers(0, len(data)))
        if kind == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif kind == "insert":
            piece = draw(st.sampled_from(XML_PIECES) | st.text(max_size=5))
            data[at:at] = piece.encode("utf-8", "surrogatepass")
        elif kind == "replace":
            if at < len(data):
                data[at] = draw(st.integers(0, 255))
        else:
            end = at + draw(st.integers(1, 200))
            data[at:at] = data[at:end]
    return bytes(data)


@st.composite
def restructured_example(draw) -> bytes:
    """Well-formed variations of the example: values replaced, elements dropped, repeated,
    swapped, renamed or added, so that F02, F03 and every U-rule get their turn."""
    root = etree.fromstring(EXAMPLE)
    for _ in range(draw(st.integers(1, 4))):
        elements = list(root.iter(etree.Element))
        element = draw(st.sampled_from(elements))
        parent = element.getparent()
        kind = draw(st.sampled_from(["value", "value", "value", "drop", "repeat", "swap", "rename", "add"]))
        if kind == "value" and len(element) == 0:
            element.text = draw(st.sampled_from(VALUES) | xml_text)
        elif kind == "drop" and parent is not None:
            parent.remove(element)
        elif kind == "repeat" and parent is not None:
            parent.insert(parent.index(element), copy.deepcopy(element))
        elif kind == "swap" and parent is not None and element.getnext() is not None:
            element.addprevious(element.getnext())
        elif kind == "rename":
            element.tag = f"{{{NS}}}{draw(st.sampled_from(NAMES))}"
        elif kind == "add":
            etree.SubElement(element, f"{{{NS}}}{draw(st.sampled_from(NAMES))}").text = draw(xml_text)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@FAST
@given(mutated_example() | restructured_example())
def test_mutated_valid_xml(data):
    judge_and_answer(data)


@FAST
@given(mutated_example() | restructured_example())
def test_the_plain_reading_decodes_mutated_files_as_the_tree(data):
    assert same_decoding(decode_request_file(data), decoded_by_the_tree(data))


def test_the_unmutated_example_is_accepted():
    decision_codes = decode_request_file(EXAMPLE)
    assert isinstance(decision_codes, RequestFile)
    judge_and_answer(EXAMPLE)


# Characters XML 1.0 can carry (escaped or not); values are compared exactly after a round trip.
xml_text = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters=[chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)] + ["\ufffe", "\uffff"],
    ),
    max_size=12,
)


@st.composite
def instruction_frames(draw, text=xml_text) -> pl.DataFrame:
    rows = []
    for position in range(draw(st.integers(0, 4))):
        present = draw(st.booleans())
        rows.append(
            {
                "position": position,
                "anmodning_id": draw(text),
                "cpr": draw(text),
                "handling": draw(text),
                "traekart": draw(st.none() | text),
                "fra_periode": draw(text),
                "til_periode": draw(st.none() | text),
                "samlet_beloeb": draw(st.none() | text),
                "specifikation_present": present,
                "poster": draw(st.lists(st.fixed_dictionaries({"tekst": text, "beloeb": text}), max_size=3))
                if present
                else None,
                "reference": draw(st.none() | text),
            }
        )
    return pl.DataFrame(rows, schema=INSTRUCTION_SCHEMA)


@FAST
@given(instruction_frames(), xml_text)
def test_values_survive_a_round_trip_exactly(frame, kommunekode):
    data = encode_request_file(kommunekode, "2027-01-05T10:15:00+01:00", frame)
    decoded = decode_request_file(data)
    assert isinstance(decoded, RequestFile), decoded
    assert decoded.kommunekode == kommunekode
    assert decoded.instructions.equals(frame)
    assert same_decoding(decoded, decoded_by_the_tree(data))


@st.composite
def plain_files(draw) -> bytes:
    """Request files the plain reading takes (contracts/sf6110.py `_read_plain`): values of any
    XML text without `<`, `&` and CR (but with `>`), written with blanks inside some tags and some
    empty elements as `<Name/>`."""
    plain_text = xml_text.map(lambda value: value.replace("<", "").replace("&", "").replace("\r", ""))
    frame = draw(instruction_frames(plain_text))
    data = encode_request_file(draw(plain_text), "2027-01-05T10:15:00+01:00", frame).decode().replace("&gt;", ">")
    for name in set(NAMES) - {"Ukendt"}:
        data = data.replace(f"<{name}></{name}>", draw(st.sampled_from([f"<{name}></{name}>", f"<{name}/>", f"<{name} \n/>"])))
        data = data.replace(f"<{name}>", draw(st.sampled_from([f"<{name}>", f"<{name} >", f"<{name}\t\n>"])))
        data = data.replace(f"</{name}>", draw(st.sampled_from([f"</{name}>", f"</{name}\n>"])))
    return data.encode()


@FAST
@given(plain_files())
def test_plain_files_decode_as_the_tree(data):
    assert _read_plain(data) is not None
    decoded = decode_request_file(data)
    assert isinstance(decoded, RequestFile) and same_decoding(decoded, decoded_by_the_tree(data))


@FAST
@given(instruction_frames(st.sampled_from(VALUES + ["1.5", "0.50", "1500.00", "200", "1700.00"]) | xml_text))
def test_u01_with_its_amounts_in_columns_is_u01_as_written(frame):
    judged_on = dt.date(2027, 1, 5)
    assert u01_offence_frame(frame, judged_on).equals(frame.select(**u01_offences(judged_on)))


cpr_like = st.one_of(
    st.text(alphabet="0123456789", min_size=10, max_size=10),
    st.builds(
        lambda day, month, yy, digit7, rest: f"{day:02d}{month:02d}{yy:02d}{digit7}{rest:03d}",
        st.integers(0, 32), st.integers(0, 13), st.integers(0, 99), st.integers(0, 9), st.integers(0, 999),
    ),
    st.text(max_size=11),
)


@FAST
@given(st.lists(cpr_like, max_size=30), st.dates(dt.date(1990, 1, 1), dt.date(2060, 12, 31)))
def test_vectorized_cpr_rule_agrees_with_is_valid_cpr(cprs, judged_on):
    frame = pl.DataFrame({"cpr": cprs}, schema={"cpr": pl.String})
    vectorized = frame.select(valid_cpr_expr("cpr", judged_on))["cpr"].to_list()
    assert vectorized == [is_valid_cpr(cpr, judged_on) for cpr in cprs]
