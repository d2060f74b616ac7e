"""SF2601 (sf2601.md): who is in the file, what they were paid, and the codec."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from assets.settlement_rules import active_requests, settle
from assets.sf2601_rules import SF2601_ROWS_SCHEMA, missing_administrationskommune, sf2601_rows
from contracts.sf2601 import (
    SF2601_NS,
    UDBETALING_SCHEMA,
    Sf2601Error,
    decode_sf2601,
    encode_sf2601,
    sf2601_filnavn,
    sf2601_schema,
    validate_sf2601,
)
from contracts.xmlsafe import parse_xml
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

SPEC_EXAMPLE = """<?xml version="1.0" encoding="UTF-8"?>
<PensionsudbetalingUnderAdministration xmlns="urn:oio:udk:pension:sf2601:1">
  <Kommunekode>0751</Kommunekode>
  <Periode>2027-02</Periode>
  <Udbetalingsdato>2027-02-26</Udbetalingsdato>
  <Loebenummer>1</Loebenummer>
  <AntalPersoner>1</AntalPersoner>
  <SamletUdbetaltBeloeb>9123.45</SamletUdbetaltBeloeb>
  <Udbetaling>
    <CPR>1505421234</CPR>
    <Pensionstype>FP</Pensionstype>
    <BruttoBeloeb>14500.00</BruttoBeloeb>
    <SkatBeloeb>3876.55</SkatBeloeb>
    <TraekBeloeb>1500.00</TraekBeloeb>
    <UdbetaltBeloeb>9123.45</UdbetaltBeloeb>
  </Udbetaling>
</PensionsudbetalingUnderAdministration>
""".encode()


def administreret(cpr: str, kommunekode: str = "0751", **kwargs) -> dict:
    return sag(
        cpr,
        administrationskommune=kommunekode,
        under_administration=True,
        udbetaling_til_kommune=True,
        **kwargs,
    )


def rows_for(the_ledger: pl.DataFrame, sager: pl.DataFrame, beregninger: pl.DataFrame) -> pl.DataFrame:
    settled = settle(active_requests(the_ledger, P), sager, beregninger, P)
    return sf2601_rows(settled, sager, beregninger)


def test_spec_example_from_settlement_to_bytes():
    # 14500.00 − 3876.55 − 1500.00 = 9123.45
    sager = pensionssager(administreret("1505421234", bopaelskommune="0751"))
    beregninger = pensionsberegning(beregning("1505421234", 1450000 - 387655, skat=387655))
    rows = rows_for(ledger(instruction("A", kommunekode="0751", cpr="1505421234", beloeb=1500_00)), sager, beregninger)
    assert rows.schema == SF2601_ROWS_SCHEMA
    assert rows.rows() == [("0751", "1505421234", "FP", 1450000, 387655, 1062345, 150000, 912345)]
    assert encode_sf2601("0751", P, UDBETALINGSDATO, 1, rows) == SPEC_EXAMPLE


def test_spec_example_decodes_to_the_rows():
    header, udbetalinger = decode_sf2601(SPEC_EXAMPLE)
    assert header == {
        "kommunekode": "0751",
        "periode": P,
        "udbetalingsdato": UDBETALINGSDATO,
        "loebenummer": 1,
        "antal_personer": 1,
        "samlet_udbetalt_oere": 912345,
    }
    assert udbetalinger.schema == UDBETALING_SCHEMA
    assert udbetalinger.rows() == [("0751", "1505421234", "FP", 1450000, 387655, 1062345, 150000, 912345)]


def test_traek_sums_the_settled_deductions_of_every_municipality():
    the_ledger = ledger(
        instruction("K1", kommunekode="0101", cpr="1505421234", traekart="MAD", beloeb=3000_00, modtaget=at(0)),
        instruction("K2", kommunekode="0147", cpr="1505421234", traekart="PLEJ", beloeb=8000_00, modtaget=at(1)),
        instruction("K3", kommunekode="0751", cpr="1505421234", traekart="BRUG", beloeb=5000_00, modtaget=at(2)),
    )
    sager = pensionssager(administreret("1505421234"))
    beregninger = pensionsberegning(beregning("1505421234", 12000_00, skat=3000_00))
    row = rows_for(the_ledger, sager, beregninger).row(0, named=True)
    # PLEJ 8000.00 then MAD 3000.00 fit; BRUG 5000.00 is A03 and is not part of traek.
    assert (row["kommunekode"], row["traek_oere"], row["udbetalt_oere"]) == ("0751", 11000_00, 1000_00)


def test_who_is_in_the_file():
    sager = pensionssager(
        administreret("0101401234"),  # in
        administreret("0202402345", kommunekode="0101", bopaelskommune="0751"),  # in, to 0101
        sag("0303403456", administrationskommune="0751", under_administration=True, udbetaling_til_kommune=False),
        sag("0404404567", administrationskommune="0751", under_administration=False, udbetaling_til_kommune=True),
        administreret("0505405678"),  # udbetales false
        administreret("0606406789"),  # no calculation row
        administreret("0707407890"),  # netto 0: listed with zeros
        sag("0808408901"),
    )
    beregninger = pensionsberegning(
        beregning("0101401234", 100_00),
        beregning("0202402345", 200_00),
        beregning("0303403456", 300_00),
        beregning("0404404567", 400_00),
        beregning("0505405678", 500_00, udbetales=False),
        beregning("0707407890", 0),
        beregning("0808408901", 800_00),
    )
    rows = rows_for(ledger(), sager, beregninger)
    assert rows.select("kommunekode", "cpr").rows() == [
        ("0101", "0202402345"),
        ("0751", "0101401234"),
        ("0751", "0707407890"),
    ]
    zeros = rows.filter(pl.col("cpr") == "0707407890").row(0, named=True)
    assert [zeros[c] for c in ["brutto_oere", "skat_oere", "netto_oere", "traek_oere", "udbetalt_oere"]] == [0] * 5
    data = encode_sf2601("0751", P, UDBETALINGSDATO, 1, rows.filter(pl.col("kommunekode") == "0751"))
    assert b"<CPR>0707407890</CPR>\n    <Pensionstype>FP</Pensionstype>\n    <BruttoBeloeb>0.00</BruttoBeloeb>" in data
    assert b"<UdbetaltBeloeb>0.00</UdbetaltBeloeb>" in data
    validate_sf2601(data)


def test_missing_administrationskommune_is_left_out_and_reported():
    sager = pensionssager(
        administreret("0101401234"),
        administreret("0202402345", kommunekode=None, bopaelskommune="0147"),
        sag("0303403456", under_administration=True, udbetaling_til_kommune=False),  # no data error
    )
    beregninger = pensionsberegning(beregning("0101401234", 100_00), beregning("0202402345", 200_00), beregning("0303403456", 1))
    assert rows_for(ledger(), sager, beregninger)["cpr"].to_list() == ["0101401234"]
    missing = missing_administrationskommune(sager, beregninger)
    assert missing.rows() == [("0202402345", "FP", "0147", 200_00)]
    assert missing_administrationskommune(pensionssager(administreret("0101401234")), beregninger).is_empty()


def test_file_name():
    assert sf2601_filnavn("0751", P, 1) == "SF2601_0751_202702_001.xml"
    with pytest.raises(ValueError, match="YYYY-MM"):
        sf2601_filnavn("0751", "2027-00", 1)


def udbetalinger(*cprs: str) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "kommunekode": "0751",
                "cpr": cpr,
                "pensionstype": ["FP", "FTP", "SEP", "TIP"][i % 4],
                "brutto_oere": 10000_00 + i,
                "skat_oere": 2000_00,
                "netto_oere": 8000_00 + i,
                "traek_oere": 1000_05,
                "udbetalt_oere": 6999_95 + i,
            }
            for i, cpr in enumerate(cprs)
        ],
        schema=UDBETALING_SCHEMA,
    )


def test_sorted_by_cpr_summed_deterministic_and_round_trips():
    rows = udbetalinger("3112409999", "0101401234", "1505421234")
    data = encode_sf2601("0751", P, UDBETALINGSDATO, 7, rows)
    assert encode_sf2601("0751", P, UDBETALINGSDATO, 7, rows.reverse()) == data
    header, decoded = decode_sf2601(data)
    assert decoded["cpr"].to_list() == ["0101401234", "1505421234", "3112409999"]
    assert decoded.equals(rows.sort("cpr"))
    assert header["antal_personer"] == 3
    assert header["samlet_udbetalt_oere"] == rows["udbetalt_oere"].sum()
    assert header["loebenummer"] == 7
    root = parse_xml(data)
    assert root.findtext("u:SamletUdbetaltBeloeb", namespaces={"u": SF2601_NS}) == "20999.88"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<SkatBeloeb>3876.55<", b"<SkatBeloeb>3876.5<"),
        (b"<Pensionstype>FP<", b"<Pensionstype>XX<"),
        (b"<Loebenummer>1<", b"<Loebenummer>0<"),
        (b"    <TraekBeloeb>1500.00</TraekBeloeb>\n", b""),
    ],
)
def test_the_schema_refuses_what_the_spec_forbids(old, new):
    assert old in SPEC_EXAMPLE
    assert sf2601_schema().validate(parse_xml(SPEC_EXAMPLE))
    with pytest.raises(Sf2601Error, match="not a valid SF2601 file"):
        decode_sf2601(SPEC_EXAMPLE.replace(old, new))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"udbetalt_oere": 1}, "do not add up"),
        ({"netto_oere": 1}, "do not add up"),
        ({"kommunekode": "0101"}, "another municipality"),
        ({"pensionstype": None}, "empty value"),
        ({"traek_oere": 9000_00, "udbetalt_oere": -1000_00}, "negative amount"),
    ],
)
def test_rows_that_cannot_be_an_sf2601_file_are_refused_with_a_masked_cpr(change, message):
    rows = udbetalinger("0101401234").with_columns(**{k: pl.lit(v) for k, v in change.items()})
    with pytest.raises(Sf2601Error, match=message) as refused:
        encode_sf2601("0751", P, UDBETALINGSDATO, 1, rows)
    assert "0101401234" not in str(refused.value)


def test_no_file_without_citizens_and_no_cpr_twice():
    with pytest.raises(Sf2601Error, match="at least one citizen"):
        encode_sf2601("0751", P, UDBETALINGSDATO, 1, udbetalinger())
    with pytest.raises(Sf2601Error, match="CPR twice"):
        encode_sf2601("0751", P, UDBETALINGSDATO, 1, udbetalinger("0101401234", "0101401234"))
