"""The SF6111 codec (settlement.md "The SF6111 file"): exact bytes, order, amounts, schema."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from assets.settlement_rules import active_requests, settle
from contracts.sf6111 import (
    SF6111_NS,
    TRAEK_SCHEMA,
    Sf6111Error,
    decode_sf6111,
    encode_sf6111,
    sf6111_filnavn,
    sf6111_schema,
    validate_sf6111,
)
from contracts.xmlsafe import XmlRefused, parse_xml
from tests.test_settlement_rules import (
    at,
    beregning,
    instruction,
    ledger,
    pensionsberegning,
    pensionssager,
    sag,
)

P = "2027-02"
UDBETALINGSDATO = dt.date(2027, 2, 26)

# settlement.md, the example, with the XML declaration every file starts with (README).
SPEC_EXAMPLE = """<?xml version="1.0" encoding="UTF-8"?>
<TraekSpecifikationsliste xmlns="urn:oio:udk:pension:sf6111:1">
  <Kommunekode>0101</Kommunekode>
  <Periode>2027-02</Periode>
  <Udbetalingsdato>2027-02-26</Udbetalingsdato>
  <Loebenummer>1</Loebenummer>
  <AntalTraek>2</AntalTraek>
  <AntalAfregnet>1</AntalAfregnet>
  <AntalAfvist>1</AntalAfvist>
  <SamletAfregnetBeloeb>1700.00</SamletAfregnetBeloeb>
  <Traek>
    <AnmodningId>KBH-2027-000123</AnmodningId>
    <CPR>0101401234</CPR>
    <Traekart>MAD</Traekart>
    <AnmodetBeloeb>1700.00</AnmodetBeloeb>
    <AfregnetBeloeb>1700.00</AfregnetBeloeb>
    <Status>AFREGNET</Status>
  </Traek>
  <Traek>
    <AnmodningId>KBH-2027-000200</AnmodningId>
    <CPR>0202402345</CPR>
    <Traekart>PLEJ</Traekart>
    <AnmodetBeloeb>9000.00</AnmodetBeloeb>
    <AfregnetBeloeb>0.00</AfregnetBeloeb>
    <Status>AFVIST</Status>
    <Aarsag><Kode>A03</Kode><Tekst>Pensionen kan ikke dække trækket</Tekst></Aarsag>
  </Traek>
</TraekSpecifikationsliste>
""".encode()


def spec_example_settlement() -> pl.DataFrame:
    the_ledger = ledger(
        instruction("KBH-2027-000200", cpr="0202402345", traekart="PLEJ", beloeb=9000_00, fra="2027-01"),
        instruction("KBH-2027-000123", cpr="0101401234", traekart="MAD", beloeb=1700_00, fra="2027-02", til="2027-12"),
    )
    return settle(
        active_requests(the_ledger, P),
        pensionssager(sag("0101401234"), sag("0202402345")),
        pensionsberegning(beregning("0101401234", 12000_00), beregning("0202402345", 8999_99)),
        P,
    )


def traek_rows(*rows: dict) -> pl.DataFrame:
    """Settled rows of 0101 in P; each dict gives at least anmodning_id."""
    full = []
    for row in rows:
        afvist = row.get("status") == "AFVIST"
        full.append(
            {
                "periode": P,
                "kommunekode": "0101",
                "cpr": "0101401234",
                "traekart": "MAD",
                "anmodet_oere": 100_00,
                "afregnet_oere": 0 if afvist else row.get("anmodet_oere", 100_00),
                "status": "AFREGNET",
                "kode": "A03" if afvist else None,
                "tekst": "Pensionen kan ikke dække trækket" if afvist else None,
                **row,
            }
        )
    return pl.DataFrame(full, schema=TRAEK_SCHEMA)


def encode(traek: pl.DataFrame, loebenummer: int = 1) -> bytes:
    return encode_sf6111("0101", P, UDBETALINGSDATO, loebenummer, traek)


def test_settlement_of_the_spec_example_encodes_to_exactly_the_spec_example():
    assert encode(spec_example_settlement()) == SPEC_EXAMPLE


def test_spec_example_decodes_to_the_settled_rows():
    header, traek = decode_sf6111(SPEC_EXAMPLE)
    assert header == {
        "kommunekode": "0101",
        "periode": P,
        "udbetalingsdato": UDBETALINGSDATO,
        "loebenummer": 1,
        "antal_traek": 2,
        "antal_afregnet": 1,
        "antal_afvist": 1,
        "samlet_afregnet_oere": 1700_00,
    }
    assert traek.equals(spec_example_settlement())


def test_file_name():
    assert sf6111_filnavn("0101", P, 1) == "SF6111_0101_202702_001.xml"
    assert sf6111_filnavn("0851", "2027-12", 42) == "SF6111_0851_202712_042.xml"


@pytest.mark.parametrize(
    ("kommunekode", "periode", "loebenummer", "fix"),
    [
        ("101", P, 1, "kommuner.csv"),
        ("9999", P, 1, "kommuner.csv"),
        ("0101", "2027-2", 1, "YYYY-MM"),
        ("0101", P, 0, "1–999"),
        ("0101", P, 1000, "1–999"),
        ("0101", P, True, "1–999"),
    ],
)
def test_a_wrong_header_value_is_refused_naming_the_fix(kommunekode, periode, loebenummer, fix):
    with pytest.raises(ValueError, match=fix):
        sf6111_filnavn(kommunekode, periode, loebenummer)
    with pytest.raises(ValueError, match=fix):
        encode_sf6111(kommunekode, periode, UDBETALINGSDATO, loebenummer, traek_rows({"anmodning_id": "A"}))


def test_traek_sorted_by_anmodning_id_in_byte_order():
    traek = traek_rows({"anmodning_id": "a-1"}, {"anmodning_id": "_x"}, {"anmodning_id": "B-1"}, {"anmodning_id": "0"})
    _, decoded = decode_sf6111(encode(traek))
    # bytes: '0' 0x30 < 'B' 0x42 < '_' 0x5F < 'a' 0x61 (a locale sort would put '_x' first or 'a-1' before 'B-1')
    assert decoded["anmodning_id"].to_list() == ["0", "B-1", "_x", "a-1"]


@pytest.mark.parametrize(
    ("oere", "text"),
    [(5, "0.05"), (50, "0.50"), (100, "1.00"), (100000_00, "100000.00"), (1234567, "12345.67")],
)
def test_amounts_have_exactly_two_decimals(oere, text):
    data = encode(traek_rows({"anmodning_id": "A", "anmodet_oere": oere}))
    root = parse_xml(data)
    ns = {"t": SF6111_NS}
    assert root.findtext("t:Traek/t:AnmodetBeloeb", namespaces=ns) == text
    assert root.findtext("t:Traek/t:AfregnetBeloeb", namespaces=ns) == text
    assert root.findtext("t:SamletAfregnetBeloeb", namespaces=ns) == text


def test_header_counts_and_total_add_up():
    traek = traek_rows(
        {"anmodning_id": "A", "anmodet_oere": 123_45},
        {"anmodning_id": "B", "anmodet_oere": 1_00},
        {"anmodning_id": "C", "status": "AFVIST", "anmodet_oere": 9999_99},
    )
    header, _ = decode_sf6111(encode(traek))
    assert (header["antal_traek"], header["antal_afregnet"], header["antal_afvist"]) == (3, 2, 1)
    assert header["samlet_afregnet_oere"] == 124_45


def test_same_input_gives_the_same_bytes_whatever_the_row_order():
    traek = traek_rows({"anmodning_id": "A"}, {"anmodning_id": "B", "status": "AFVIST"}, {"anmodning_id": "C"})
    first = encode(traek)
    assert encode(traek) == first
    assert encode(traek.reverse()) == first
    assert first.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<TraekSpecifikationsliste ')


def test_aarsag_only_for_afvist_and_round_trip():
    traek = traek_rows(
        {"anmodning_id": "A"},
        {"anmodning_id": "B", "status": "AFVIST", "kode": "A01", "tekst": "Borgeren er død"},
        {"anmodning_id": "C", "status": "AFVIST", "kode": "A02", "tekst": "Ingen pensionsudbetaling i perioden"},
    )
    data = encode(traek)
    assert data.count(b"<Aarsag>") == 2
    _, decoded = decode_sf6111(data)
    assert decoded.equals(traek.sort("anmodning_id"))


def test_text_is_escaped_so_the_file_stays_well_formed():
    # U01 keeps such ids out of the ledger; the codec escapes anyway.
    traek = traek_rows({"anmodning_id": "A&<B>", "status": "AFVIST", "tekst": "x < y & z"})
    root = parse_xml(encode(traek))
    ns = {"t": SF6111_NS}
    assert root.findtext("t:Traek/t:AnmodningId", namespaces=ns) == "A&<B>"
    assert root.findtext("t:Traek/t:Aarsag/t:Tekst", namespaces=ns) == "x < y & z"


def test_every_file_written_validates_against_the_schema():
    for traek in [
        spec_example_settlement(),
        traek_rows({"anmodning_id": "x" * 36, "traekart": "HUSL", "anmodet_oere": 100000_00}),
        traek_rows(*({"anmodning_id": f"id-{i}", "status": "AFVIST" if i % 3 else "AFREGNET"} for i in range(50))),
    ]:
        validate_sf6111(encode(traek, loebenummer=999))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<AnmodetBeloeb>1700.00<", b"<AnmodetBeloeb>1700.0<"),  # two decimals exactly
        (b"<AnmodetBeloeb>1700.00<", b"<AnmodetBeloeb>-1700.00<"),  # never negative
        (b"<Status>AFREGNET<", b"<Status>MODTAGET<"),
        (b"  <AntalTraek>2</AntalTraek>\n  <AntalAfregnet>1</AntalAfregnet>\n", b"  <AntalAfregnet>1</AntalAfregnet>\n  <AntalTraek>2</AntalTraek>\n"),
        (b"<Aarsag><Kode>A03</Kode><Tekst>Pensionen kan ikke d\xc3\xa6kke tr\xc3\xa6kket</Tekst></Aarsag>", b"<Aarsag><Tekst>x</Tekst></Aarsag>"),
        (b"KBH-2027-000200", b"KBH-2027-000123"),  # an AnmodningId twice
        (b"urn:oio:udk:pension:sf6111:1", b"urn:oio:udk:pension:sf6111:2"),
    ],
)
def test_the_schema_refuses_what_the_spec_forbids(old, new):
    assert old in SPEC_EXAMPLE
    assert sf6111_schema().validate(parse_xml(SPEC_EXAMPLE))
    with pytest.raises(Sf6111Error, match="not a valid SF6111 file"):
        decode_sf6111(SPEC_EXAMPLE.replace(old, new))


def test_the_schema_refuses_a_file_without_traek():
    start, end = SPEC_EXAMPLE.index(b"  <Traek>"), SPEC_EXAMPLE.index(b"</TraekSpecifikationsliste>")
    assert not sf6111_schema().validate(parse_xml(SPEC_EXAMPLE[:start] + SPEC_EXAMPLE[end:]))


def test_decode_uses_the_hardened_parser():
    hostile = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><TraekSpecifikationsliste/>'
    with pytest.raises(XmlRefused):
        decode_sf6111(hostile)


def test_no_file_for_a_municipality_without_active_requests():
    with pytest.raises(Sf6111Error, match="at least one active request"):
        encode(traek_rows())


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"kommunekode": "0147"}, "another municipality"),
        ({"periode": "2027-03"}, "another municipality or period"),
        ({"status": "AFVIST", "kode": None}, "without kode and tekst"),
        ({"status": "MODTAGET"}, "status other than"),
        ({"cpr": None}, "empty value"),
        ({"anmodet_oere": -1}, "negative amount"),
        ({"tekst": "bell\x07", "status": "AFVIST"}, "control character"),
    ],
)
def test_rows_that_cannot_be_an_sf6111_file_are_refused_with_a_masked_cpr(row, message):
    with pytest.raises(Sf6111Error, match=message) as refused:
        encode(traek_rows({"anmodning_id": "A", **row}))
    assert "0101401234" not in str(refused.value)


def test_the_same_anmodning_id_twice_is_refused():
    with pytest.raises(Sf6111Error, match="AnmodningId twice"):
        encode(traek_rows({"anmodning_id": "A"}, {"anmodning_id": "A"}))


def test_missing_columns_are_named():
    with pytest.raises(Sf6111Error, match="tekst"):
        encode(traek_rows({"anmodning_id": "A"}).drop("tekst"))


def test_files_of_all_municipalities_sum_to_the_settled_total():
    # settlement.md: the sum over all SF6111 files equals the sum of settled amounts.
    the_ledger = ledger(
        *(
            instruction(f"R{i}", kommunekode=k, cpr=c, traekart=t, beloeb=b, modtaget=at(i))
            for i, (k, c, t, b) in enumerate(
                [
                    ("0101", "0101401234", "MAD", 1700_00),
                    ("0147", "0101401234", "PLEJ", 9000_00),
                    ("0147", "0202402345", "HUSL", 2500_00),
                    ("0751", "0202402345", "BRUG", 600_00),
                    ("0751", "0303403456", "TILB", 100_00),
                ]
            )
        )
    )
    settled = settle(
        active_requests(the_ledger, P),
        pensionssager(sag("0101401234"), sag("0202402345"), sag("0303403456")),
        pensionsberegning(beregning("0101401234", 10000_00), beregning("0202402345", 2600_00)),
        P,
    )
    files = [
        encode_sf6111(kommunekode, P, UDBETALINGSDATO, 1, rows)
        for (kommunekode,), rows in settled.partition_by("kommunekode", as_dict=True).items()
    ]
    assert len(files) == 3
    total = sum(decode_sf6111(data)[0]["samlet_afregnet_oere"] for data in files)
    # 0101401234: PLEJ 9000.00 before MAD 1700.00 (A03); 0202402345: HUSL 2500.00, BRUG A03;
    # 0303403456 has no calculation row (A02), but 0751 still gets its file.
    assert total == settled["afregnet_oere"].sum() == 9000_00 + 2500_00
