"""The SF6110 intake rules (sf6110.md "Intake"): F04, F05 and U01–U08, each with a case that
triggers it and one that narrowly does not, through real files (encode -> judge)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from assets.sf6110_rules import OUTCOME_SCHEMA, FileDecision, judge_file, judge_instructions, sha256_hex
from contracts.ledger import LEDGER_SCHEMA, empty_ledger
from contracts.sf6110 import (
    INSTRUCTION_SCHEMA,
    decode_kvittering,
    decode_request_file,
    encode_kvittering,
    encode_request_file,
    instruction_schema,
    u01_element_expr,
)
from pipelines.calendar import cutoff
from pipelines.config import Partner, Partners, default_partners

ALICE = "0101401234"  # AKTIV, lives in 0101
BOB = "2412502345"  # AKTIV, lives in 0147, administered by 0101
OPHOERT = "0202403456"  # case OPHOERT
STANDSET = "0303402567"  # case STANDSET: still a pension recipient
DOED_31_JAN = "0404402678"  # AKTIV, died 2027-01-31
DOED_1_FEB = "0505402789"  # AKTIV, died 2027-02-01
UDEN_SAG = "0606401890"  # a valid CPR without a pension case

PENSIONSSAGER = pl.DataFrame(
    {
        "cpr": [ALICE, BOB, OPHOERT, STANDSET, DOED_31_JAN, DOED_1_FEB],
        "sagsstatus": ["AKTIV", "AKTIV", "OPHOERT", "STANDSET", "AKTIV", "AKTIV"],
        "bopaelskommune": ["0101", "0147", "0101", "0101", "0101", "0101"],
        "administrationskommune": [None, "0101", None, None, None, None],
        "doedsdato": [None, None, None, None, dt.date(2027, 1, 31), dt.date(2027, 2, 1)],
    },
    schema_overrides={"administrationskommune": pl.String, "doedsdato": pl.Date},
)
RECEIVED = dt.datetime(2027, 1, 5, 9, 16, 2, 750_000, tzinfo=dt.timezone.utc)


def post(tekst: str, beloeb: str) -> dict:
    return {"tekst": tekst, "beloeb": beloeb}


def opret(**changes) -> dict:
    base = {
        "anmodning_id": "KBH-1",
        "cpr": ALICE,
        "handling": "OPRET",
        "traekart": "MAD",
        "fra_periode": "2027-02",
        "til_periode": None,
        "samlet_beloeb": "1700.00",
        "specifikation_present": True,
        "poster": [post("Madordning, hovedmåltid", "1500.00"), post("Tøjvask", "200")],
        "reference": None,
    }
    return base | changes


def aendr(**changes) -> dict:
    return opret(handling="AENDR") | changes


def ophoer(**changes) -> dict:
    base = opret(handling="OPHOER", traekart=None, fra_periode="2027-03", samlet_beloeb=None)
    return base | {"specifikation_present": False, "poster": None} | changes


def amount(value: str, **changes) -> dict:
    """An OPRET whose SamletBeloeb and single Post are `value`."""
    return opret(samlet_beloeb=value, poster=[post("Madordning", value)], **changes)


def request_file(*instructions: dict, kommunekode: str = "0101", dannet: str = "2027-01-05T10:15:00+01:00") -> bytes:
    frame = pl.DataFrame(
        [dict(instruction, position=i) for i, instruction in enumerate(instructions)],
        schema=INSTRUCTION_SCHEMA,
    )
    return encode_request_file(kommunekode, dannet, frame)


def ledger(*rows: dict) -> pl.DataFrame:
    """Registered instructions of earlier files (only the columns a test cares about given)."""
    defaults = {
        "kommunekode": "0101",
        "cpr": ALICE,
        "handling": "OPRET",
        "traekart": "MAD",
        "fra_periode": "2026-12",
        "til_periode": None,
        "beloeb_oere": 10_000,
        "modtaget": dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
        "filnavn": "SF6110_0101_20261101000000.xml",
        "file_transfer_uuid": "earlier",
        "position": 0,
    }
    return pl.DataFrame([defaults | row for row in rows], schema=LEDGER_SCHEMA)


def judge(
    *instructions: dict,
    data: bytes | None = None,
    kommunekode: str = "0101",
    sender: str = "kp",
    partners: Partners | None = None,
    accepted_before: frozenset = frozenset(),
    earlier: pl.DataFrame | None = None,
    received: dt.datetime = RECEIVED,
    first_open_period=None,
) -> FileDecision:
    extra = {} if first_open_period is None else {"first_open_period": first_open_period}
    return judge_file(
        request_file(*instructions, kommunekode=kommunekode) if data is None else data,
        sender=sender,
        filnavn="SF6110_0101_20270105101500.xml",
        file_transfer_uuid="1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed",
        received=received,
        partners=partners or default_partners(),
        accepted_before=accepted_before,
        pensionssager=PENSIONSSAGER,
        ledger=empty_ledger() if earlier is None else earlier,
        **extra,
    )


def outcomes(*instructions: dict, **options) -> list[tuple[str | None, str | None]]:
    """(kode, element) per instruction, in file order."""
    decision = judge(*instructions, **options)
    assert decision.status == "MODTAGET", decision.kode
    return list(decision.outcomes.select("kode", "element").iter_rows())


def outcome(instruction: dict, **options) -> tuple[str | None, str | None]:
    (result,) = outcomes(instruction, **options)
    return result


# --- a file that holds ----------------------------------------------------------------------


def test_a_valid_file_registers_every_instruction_in_file_order():
    decision = judge(opret(), opret(anmodning_id="KBH-2", cpr=BOB, til_periode="2027-12", reference="Sag 27-1"))
    assert (decision.status, decision.kode, decision.kommunekode) == ("MODTAGET", None, "0101")
    assert decision.outcomes.schema == OUTCOME_SCHEMA
    assert decision.outcomes.to_dicts() == [
        {"position": 0, "anmodning_id": "KBH-1", "status": "MODTAGET", "kode": None, "element": None},
        {"position": 1, "anmodning_id": "KBH-2", "status": "MODTAGET", "kode": None, "element": None},
    ]
    assert decision.registered.schema == LEDGER_SCHEMA
    assert decision.registered.row(1, named=True) == {
        "kommunekode": "0101",
        "anmodning_id": "KBH-2",
        "cpr": BOB,
        "handling": "OPRET",
        "traekart": "MAD",
        "fra_periode": "2027-02",
        "til_periode": "2027-12",
        "beloeb_oere": 170_000,
        "modtaget": dt.datetime(2027, 1, 5, 9, 16, 2, tzinfo=dt.timezone.utc),  # to the second, UTC
        "filnavn": "SF6110_0101_20270105101500.xml",
        "file_transfer_uuid": "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed",
        "position": 1,
    }


def test_only_accepted_instructions_are_registered():
    earlier = ledger({"anmodning_id": "KBH-9"})
    decision = judge(opret(cpr="x"), ophoer(anmodning_id="KBH-9"), opret(anmodning_id="KBH-3"), earlier=earlier)
    assert decision.outcomes["kode"].to_list() == ["U01", None, None]
    registered = decision.registered
    assert registered["position"].to_list() == [1, 2]
    assert registered.row(0, named=True)["beloeb_oere"] is None  # OPHOER has no amount
    assert registered.row(0, named=True)["traekart"] is None


def test_the_spec_example_gets_the_spec_kvittering():
    data = request_file(
        opret(anmodning_id="KBH-2027-000123", til_periode="2027-12", reference="Sag 27-4411"),
        ophoer(anmodning_id="KBH-2026-000077", cpr=BOB),
    )
    decision = judge(data=data)
    kvittering = encode_kvittering(
        kommunekode=decision.kommunekode,
        modtaget_filnavn="SF6110_0101_20270105101500.xml",
        file_transfer_uuid="1b9d",
        modtaget=RECEIVED,
        status=decision.status,
        kode=decision.kode,
        outcomes=decision.outcomes,
    )
    header, anmodninger = decode_kvittering(kvittering)
    assert (header["status"], header["antal_modtaget"], header["antal_afvist"]) == ("MODTAGET", 1, 1)
    assert anmodninger.rows() == [
        ("KBH-2027-000123", "MODTAGET", None, None),
        ("KBH-2026-000077", "AFVIST", "U08", "Anmodningen findes ikke eller er ophørt"),
    ]


def test_a_naive_received_time_is_refused():
    with pytest.raises(ValueError, match="aware"):
        judge(opret(), received=dt.datetime(2027, 1, 5, 10, 0))


# --- file level ------------------------------------------------------------------------------


def test_file_level_rejection_registers_nothing():
    decision = judge(data=b"")
    assert (decision.status, decision.kode, decision.kommunekode) == ("AFVIST", "F01", "0000")
    assert decision.outcomes.height == 0 and decision.outcomes.schema == OUTCOME_SCHEMA
    assert decision.registered.height == 0 and decision.registered.schema == LEDGER_SCHEMA


def test_f02_and_f03_name_the_kommunekode_when_known():
    broken = request_file(opret()).replace(b"<CPR>", b"<CPR x='1'>")
    assert (judge(data=broken).kode, judge(data=broken).kommunekode) == ("F02", "0101")
    miscounted = request_file(opret()).replace(b"<AntalAnmodninger>1<", b"<AntalAnmodninger>2<")
    assert (judge(data=miscounted).kode, judge(data=miscounted).kommunekode) == ("F03", "0101")
    unknown = request_file(opret(), kommunekode="9999").replace(b"<AntalAnmodninger>1<", b"<AntalAnmodninger>2<")
    assert (judge(data=unknown).kode, judge(data=unknown).kommunekode) == ("F03", "0000")


@pytest.mark.parametrize("kommunekode", ["101", " 0101", "0101 ", "0000", "9999", "", "０１０１"])
def test_f04_unknown_kommunekode(kommunekode):
    decision = judge(opret(), kommunekode=kommunekode)
    assert (decision.status, decision.kode, decision.kommunekode) == ("AFVIST", "F04", "0000")
    assert decision.registered.height == 0


def test_f04_sender_may_not_speak_for_the_kommune():
    partners = Partners(partners=(Partner("kp", sf6110_for=frozenset({"0147"})), Partner("ky")))
    decision = judge(opret(), partners=partners)
    assert (decision.kode, decision.kommunekode) == ("F04", "0101")  # a known code is named
    assert judge(opret(), sender="ky").kode == "F04"  # ky only receives
    assert judge(opret(), sender="ukendt").kode == "F04"
    # Narrowly not: the same account for a municipality it does speak for.
    assert judge(opret(cpr=BOB), kommunekode="0147", partners=partners).status == "MODTAGET"


def test_f05_same_bytes_from_the_same_sender_accepted_before():
    data = request_file(opret())
    decision = judge(data=data, accepted_before=frozenset({("kp", sha256_hex(data))}))
    assert (decision.status, decision.kode, decision.kommunekode) == ("AFVIST", "F05", "0101")
    assert decision.registered.height == 0


def test_narrowly_not_f05():
    data = request_file(opret())
    # Another sender's copy, or one byte different (here: DannetTidspunkt), is judged afresh.
    partners = Partners(partners=(Partner("kp", sf6110_for=frozenset({"0101"})), Partner("kp2", sf6110_for=frozenset({"0101"}))))
    assert judge(data=data, sender="kp2", partners=partners, accepted_before=frozenset({("kp", sha256_hex(data))})).kode is None
    other = request_file(opret(), dannet="2027-01-05T10:15:01+01:00")
    assert judge(data=other, accepted_before=frozenset({("kp", sha256_hex(data))})).kode is None
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_f04_comes_before_f05():
    data = request_file(opret(), kommunekode="101")
    assert judge(data=data, accepted_before=frozenset({("kp", sha256_hex(data))})).kode == "F04"


# --- U01 -------------------------------------------------------------------------------------

U01_CASES = {
    # AnmodningId: 1–36 of [A-Za-z0-9_-]
    "id-empty": (opret(anmodning_id=""), "AnmodningId"),
    "id-37": (opret(anmodning_id="A" * 37), "AnmodningId"),
    "id-36": (opret(anmodning_id="A" * 36), None),
    "id-space": (opret(anmodning_id="KBH 1"), "AnmodningId"),
    "id-trailing-newline": (opret(anmodning_id="KBH-1\n"), "AnmodningId"),
    "id-letter-ae": (opret(anmodning_id="KBH-æ"), "AnmodningId"),
    "id-all-kinds": (opret(anmodning_id="Ab_9-z"), None),
    # CPR: README conventions, judged on the received date
    "cpr-empty": (opret(cpr=""), "CPR"),
    "cpr-9-digits": (opret(cpr="010140123"), "CPR"),
    "cpr-11-digits": (opret(cpr="01014012345"), "CPR"),
    "cpr-dash": (opret(cpr="010140-1234"), "CPR"),
    "cpr-31-february": (opret(cpr="3102501234"), "CPR"),
    "cpr-29-feb-1901": (opret(cpr="2902010234"), "CPR"),
    "cpr-full-width": (opret(cpr="０１０１４０１２３４"), "CPR"),
    "cpr-space": (opret(cpr=" 0101401234"), "CPR"),
    # Handling
    "handling-lower": (opret(handling="opret"), "Handling"),
    "handling-unknown": (opret(handling="SLET"), "Handling"),
    "handling-empty": (opret(handling=""), "Handling"),
    # Traekart: a code of the list on OPRET/AENDR, absent on OPHOER
    "traekart-absent": (opret(traekart=None), "Traekart"),
    "traekart-unknown": (opret(traekart="XXXX"), "Traekart"),
    "traekart-lower": (opret(traekart="mad"), "Traekart"),
    "traekart-husl": (opret(traekart="HUSL"), None),
    # FraPeriode
    "fra-month-13": (opret(fra_periode="2027-13"), "FraPeriode"),
    "fra-month-00": (opret(fra_periode="2027-00"), "FraPeriode"),
    "fra-short": (opret(fra_periode="2027-2"), "FraPeriode"),
    "fra-space": (opret(fra_periode="2027-02 "), "FraPeriode"),
    "fra-date": (opret(fra_periode="2027-02-01"), "FraPeriode"),
    "fra-december": (opret(fra_periode="2027-12"), None),
    # TilPeriode
    "til-before-fra": (opret(til_periode="2027-01"), "TilPeriode"),
    "til-equal-fra": (opret(til_periode="2027-02"), None),
    "til-bad": (opret(til_periode="2027-1x"), "TilPeriode"),
    "til-empty": (opret(til_periode=""), "TilPeriode"),
    # SamletBeloeb: [0-9]+(.[0-9]{1,2})?, > 0, ≤ 100000.00
    "amount-absent": (opret(samlet_beloeb=None), "SamletBeloeb"),
    "amount-zero": (amount("0"), "SamletBeloeb"),
    "amount-zero-oere": (amount("0.00"), "SamletBeloeb"),
    "amount-one-oere": (amount("0.01"), None),
    "amount-max": (amount("100000.00"), None),
    "amount-above-max": (amount("100000.01"), "SamletBeloeb"),
    "amount-exponent": (amount("1e3"), "SamletBeloeb"),
    "amount-negative": (amount("-5"), "SamletBeloeb"),
    "amount-three-decimals": (amount("1.005"), "SamletBeloeb"),
    "amount-trailing-zero-decimal": (amount("12.340"), "SamletBeloeb"),
    "amount-full-width": (amount("１２３"), "SamletBeloeb"),
    "amount-plus": (amount("+5"), "SamletBeloeb"),
    "amount-leading-point": (amount(".5"), "SamletBeloeb"),
    "amount-trailing-point": (amount("5."), "SamletBeloeb"),
    "amount-comma": (amount("12,50"), "SamletBeloeb"),
    "amount-grouping": (amount("1 700"), "SamletBeloeb"),
    "amount-space": (amount(" 5"), "SamletBeloeb"),
    "amount-leading-zeros": (amount("007.00"), None),
    "amount-one-decimal": (amount("1234.5"), None),
    "amount-whole": (amount("200"), None),
    "amount-huge": (amount("9" * 40), "SamletBeloeb"),
    # Specifikation: 1..20 Post, Tekst 1–60 code points, Beloeb valid and > 0, sum exact in øre
    "spec-absent": (opret(specifikation_present=False, poster=None), "Specifikation"),
    "spec-no-post": (opret(poster=[]), "Specifikation"),
    "spec-20-posts": (opret(samlet_beloeb="20", poster=[post("x", "1")] * 20), None),
    "spec-21-posts": (opret(samlet_beloeb="21", poster=[post("x", "1")] * 21), "Specifikation"),
    "spec-tekst-empty": (opret(poster=[post("", "1700")]), "Specifikation"),
    "spec-tekst-61": (opret(poster=[post("x" * 61, "1700")]), "Specifikation"),
    "spec-tekst-60-code-points": (opret(poster=[post("ø" * 59 + "😀", "1700")]), None),
    "spec-beloeb-zero": (opret(poster=[post("a", "1700.00"), post("b", "0")]), "Specifikation"),
    "spec-beloeb-bad": (opret(poster=[post("a", "1699.995"), post("b", "0.005")]), "Specifikation"),
    "spec-beloeb-comma": (opret(poster=[post("a", "1500,00"), post("b", "200")]), "Specifikation"),
    "spec-sum-one-oere-short": (opret(poster=[post("a", "1499.99"), post("b", "200")]), "Specifikation"),
    "spec-sum-other-notation": (opret(poster=[post("a", "1500"), post("b", "200.0")]), None),
    # Reference: 1–60 code points when present
    "reference-empty": (opret(reference=""), "Reference"),
    "reference-61": (opret(reference="r" * 61), "Reference"),
    "reference-60-code-points": (opret(reference="å" * 60), None),
    "reference-white-space": (opret(reference=" "), None),
    # OPHOER carries none of Traekart, TilPeriode, SamletBeloeb, Specifikation
    "ophoer-traekart": (ophoer(traekart="MAD"), "Traekart"),
    "ophoer-empty-traekart": (ophoer(traekart=""), "Traekart"),
    "ophoer-til": (ophoer(til_periode="2027-12"), "TilPeriode"),
    "ophoer-amount": (ophoer(samlet_beloeb="100"), "SamletBeloeb"),
    "ophoer-specifikation": (ophoer(specifikation_present=True, poster=[]), "Specifikation"),
    "ophoer-reference": (ophoer(reference="Sag 1"), None),
    # AENDR has the same needs as OPRET
    "aendr-without-amount": (aendr(samlet_beloeb=None), "SamletBeloeb"),
    "aendr-without-traekart": (aendr(traekart=None), "Traekart"),
}


@pytest.mark.parametrize(("instruction", "element"), U01_CASES.values(), ids=U01_CASES.keys())
def test_u01(instruction, element):
    # Histories that make the narrowly-valid AENDR/OPHOER cases pass U08.
    earlier = ledger({"anmodning_id": "KBH-1"})
    if instruction["handling"] == "OPRET":
        earlier = None
    kode, offending = outcome(instruction, earlier=earlier)
    if element is None:
        assert (kode, offending) == (None, None)
    else:
        assert (kode, offending) == ("U01", element)


@pytest.mark.parametrize(
    ("instruction", "element"),
    [
        (opret(anmodning_id="", cpr="", handling="SLET", reference=""), "AnmodningId"),
        (opret(cpr="1", traekart="XXXX"), "CPR"),
        (opret(handling="SLET", traekart="XXXX"), "Handling"),
        (opret(traekart="XXXX", fra_periode="2027-13"), "Traekart"),
        (opret(fra_periode="2027-13", til_periode="x"), "FraPeriode"),
        (opret(til_periode="2026-01", samlet_beloeb="0"), "TilPeriode"),
        (opret(samlet_beloeb="0", poster=[]), "SamletBeloeb"),
        (opret(poster=[], reference=""), "Specifikation"),
        (ophoer(traekart="MAD", samlet_beloeb="1"), "Traekart"),
    ],
)
def test_u01_names_the_first_offending_element_in_spec_order(instruction, element):
    assert outcome(instruction) == ("U01", element)


def test_unknown_handling_does_not_judge_the_elements_that_depend_on_it():
    # With Handling wrong, its dependents are not judged: only Handling is named, and the
    # pandera model reports no Traekart/SamletBeloeb failure for it either.
    frame = decode_request_file(request_file(opret(handling="SLET", traekart=None, samlet_beloeb=None))).instructions
    assert frame.select(u01_element_expr(RECEIVED.date())).item() == "Handling"


def test_cpr_is_judged_on_the_received_date_in_copenhagen():
    born = "0501274000"  # digit 7 = 4 and YY 27: born 2027-01-05
    late_evening_utc = dt.datetime(2027, 1, 4, 23, 30, tzinfo=dt.timezone.utc)  # 00:30 on the 5th in Denmark
    # Valid on its birthday (then U03: no pension case), invalid the evening before in Danish time.
    assert outcome(opret(cpr=born), received=late_evening_utc) == ("U03", None)
    assert outcome(opret(cpr=born), received=late_evening_utc - dt.timedelta(hours=1)) == ("U01", "CPR")


# --- U02 -------------------------------------------------------------------------------------


def test_u02_repeated_id_whatever_the_first_outcome():
    assert outcomes(opret(), opret(cpr=BOB), opret(traekart="PLEJ")) == [(None, None), ("U02", None), ("U02", None)]
    assert outcomes(opret(cpr="1"), opret()) == [("U01", "CPR"), ("U02", None)]


def test_narrowly_not_u02():
    # Ids are compared exactly: another case is another id.
    assert outcomes(opret(), opret(anmodning_id="kbh-1")) == [(None, None), (None, None)]


def test_u01_comes_before_u02():
    assert outcomes(opret(), opret(traekart="XXXX")) == [(None, None), ("U01", "Traekart")]


def test_an_id_registered_earlier_in_the_same_file_is_u02_not_u07_or_u08():
    # sf6110.md: "registered" includes earlier in the same file; U02 comes first either way.
    assert outcomes(opret(), aendr(), ophoer()) == [(None, None), ("U02", None), ("U02", None)]


# --- U03–U05: the pension case (OPRET and AENDR only) ---------------------------------------

HISTORY = ledger(
    {"anmodning_id": "KBH-1", "cpr": ALICE},
    {"anmodning_id": "BOB-1", "cpr": BOB},
    {"anmodning_id": "OPH-1", "cpr": OPHOERT},
    {"anmodning_id": "STA-1", "cpr": STANDSET},
    {"anmodning_id": "DOD-1", "cpr": DOED_31_JAN},
    {"anmodning_id": "DOD-2", "cpr": DOED_1_FEB},
    {"anmodning_id": "UDS-1", "cpr": UDEN_SAG},
)


@pytest.mark.parametrize("handling", [opret, aendr])
def test_u03_no_pension_case_or_ophoert(handling):
    assert outcome(handling(anmodning_id="UDS-1", cpr=UDEN_SAG), earlier=HISTORY if handling is aendr else None) == ("U03", None)
    assert outcome(handling(anmodning_id="OPH-1", cpr=OPHOERT), earlier=HISTORY if handling is aendr else None) == ("U03", None)
    # Narrowly not: STANDSET is still a pension recipient.
    assert outcome(handling(anmodning_id="STA-1", cpr=STANDSET), earlier=HISTORY if handling is aendr else None) == (None, None)


def test_u04_neither_bopaels_nor_administrationskommune():
    assert outcome(opret(), kommunekode="0147") == ("U04", None)  # Alice lives in 0101
    assert outcome(aendr(anmodning_id="BOB-1", cpr=BOB), kommunekode="0151", earlier=HISTORY) == ("U04", None)
    # Narrowly not: Bob's bopælskommune, and his administrationskommune.
    assert outcome(opret(cpr=BOB), kommunekode="0147") == (None, None)
    assert outcome(opret(cpr=BOB), kommunekode="0101") == (None, None)


def test_u05_died_before_the_first_day_of_fraperiode():
    assert outcome(opret(cpr=DOED_31_JAN)) == ("U05", None)
    assert outcome(aendr(anmodning_id="DOD-1", cpr=DOED_31_JAN), earlier=HISTORY) == ("U05", None)
    # Narrowly not: died on the first day of FraPeriode; and a FraPeriode before the death.
    assert outcome(opret(cpr=DOED_1_FEB)) == (None, None)
    assert outcome(opret(cpr=DOED_31_JAN, fra_periode="2027-01")) == (None, None)


def test_u03_to_u05_come_in_order():
    # OPHOERT case in another kommune: U03 first; a case in another kommune of a dead person: U04.
    assert outcome(opret(cpr=OPHOERT), kommunekode="0147") == ("U03", None)
    assert outcome(opret(cpr=DOED_31_JAN), kommunekode="0147") == ("U04", None)


@pytest.mark.parametrize(
    ("anmodning_id", "cpr"),
    [("UDS-1", UDEN_SAG), ("OPH-1", OPHOERT), ("DOD-1", DOED_31_JAN), ("BOB-1", BOB)],
)
def test_ophoer_is_not_subject_to_u03_to_u05(anmodning_id, cpr):
    # A municipality can always stop its own request: no case, case stopped, dead, moved away.
    assert outcome(ophoer(anmodning_id=anmodning_id, cpr=cpr), kommunekode="0101", earlier=HISTORY) == (None, None)


# --- U06: the cut-off -----------------------------------------------------------------------


def test_u06_with_an_injected_first_open_period():
    seen = []

    def first_open(t: dt.datetime) -> str:
        seen.append(t)
        return "2027-02"

    assert outcome(opret(fra_periode="2027-01"), first_open_period=first_open) == ("U06", None)
    assert outcome(opret(fra_periode="2027-02"), first_open_period=first_open) == (None, None)
    assert outcome(ophoer(fra_periode="2027-01"), earlier=HISTORY, first_open_period=first_open) == ("U06", None)
    # It is asked about the received time, to the second.
    assert seen[0] == dt.datetime(2027, 1, 5, 9, 16, 2, tzinfo=dt.timezone.utc)


def test_u06_at_the_real_cut_off():
    # sf6110.md: fristdato 2027-03 is 2027-03-12, so the cut-off is 2027-03-13 00:00 in Denmark.
    boundary = cutoff("2027-03")
    assert boundary == dt.datetime(2027, 3, 13, tzinfo=boundary.tzinfo)
    just_before = boundary - dt.timedelta(seconds=1)
    assert outcome(opret(fra_periode="2027-03"), received=just_before) == (None, None)
    assert outcome(opret(fra_periode="2027-03"), received=boundary) == ("U06", None)
    assert outcome(opret(fra_periode="2027-04"), received=boundary) == (None, None)


def test_u05_comes_before_u06():
    assert outcome(opret(cpr=DOED_31_JAN), first_open_period=lambda t: "2027-06") == ("U05", None)


# --- U07 and U08: the ledger of earlier files -----------------------------------------------


def test_u07_opret_for_an_id_already_registered():
    assert outcome(opret(), earlier=ledger({"anmodning_id": "KBH-1"})) == ("U07", None)
    # Also when the request has stopped: an id is never reused.
    stopped = ledger({"anmodning_id": "KBH-1"}, {"anmodning_id": "KBH-1", "handling": "OPHOER", "traekart": None})
    assert outcome(opret(), earlier=stopped) == ("U07", None)


def test_narrowly_not_u07():
    # The same id registered by another municipality is not this municipality's id.
    assert outcome(opret(), earlier=ledger({"anmodning_id": "KBH-1", "kommunekode": "0147"})) == (None, None)
    assert outcome(opret(), earlier=ledger({"anmodning_id": "KBH-2"})) == (None, None)


@pytest.mark.parametrize("change", [aendr, ophoer])
def test_u08(change):
    # Never registered; registered only by another municipality; for another CPR; stopped.
    assert outcome(change()) == ("U08", None)
    assert outcome(change(), earlier=ledger({"anmodning_id": "KBH-1", "kommunekode": "0147"})) == ("U08", None)
    assert outcome(change(), earlier=ledger({"anmodning_id": "KBH-1", "cpr": BOB})) == ("U08", None)
    stopped_later = ledger(
        {"anmodning_id": "KBH-1"},
        {"anmodning_id": "KBH-1", "handling": "OPHOER", "traekart": None, "fra_periode": "2029-01"},
    )
    assert outcome(change(), earlier=stopped_later) == ("U08", None)  # whatever its FraPeriode


@pytest.mark.parametrize("change", [aendr, ophoer])
def test_narrowly_not_u08(change):
    changed_before = ledger(
        {"anmodning_id": "KBH-1"},
        {"anmodning_id": "KBH-1", "handling": "AENDR", "fra_periode": "2027-01"},
    )
    assert outcome(change(), earlier=changed_before) == (None, None)
    # AENDR may start earlier than the OPRET did.
    assert outcome(change(fra_periode="2027-02"), earlier=ledger({"anmodning_id": "KBH-1", "fra_periode": "2027-06"})) == (None, None)


def test_u07_and_u08_use_the_ledger_of_this_kommune_only():
    earlier = ledger({"anmodning_id": "KBH-1", "kommunekode": "0147", "cpr": BOB})
    assert outcome(opret(cpr=BOB), kommunekode="0101", earlier=earlier) == (None, None)
    assert outcome(aendr(cpr=BOB), kommunekode="0147", earlier=earlier) == (None, None)
    assert outcome(aendr(cpr=BOB), kommunekode="0101", earlier=earlier) == ("U08", None)


def test_a_history_over_several_files():
    # File 1 registers; file 2 changes and stops; file 3 finds the request stopped.
    first = judge(opret())
    history = first.registered
    second = judge(aendr(fra_periode="2027-03", samlet_beloeb="200", poster=[post("a", "200")]), earlier=history)
    assert second.outcomes["kode"].to_list() == [None]
    history = pl.concat([history, second.registered])
    third = judge(ophoer(fra_periode="2027-04"), earlier=history)
    assert third.outcomes["kode"].to_list() == [None]
    history = pl.concat([history, third.registered])
    fourth = judge(aendr(), ophoer(anmodning_id="KBH-1x"), opret(anmodning_id="KBH-2"), earlier=history)
    assert fourth.outcomes["kode"].to_list() == ["U08", "U08", None]
    assert judge(opret(), earlier=history).outcomes["kode"].to_list() == ["U07"]


# --- the pure frame function and the pandera model ------------------------------------------


def test_judge_instructions_on_a_frame():
    frame = pl.DataFrame([opret() | {"position": 0}], schema=INSTRUCTION_SCHEMA)
    result = judge_instructions(
        frame, kommunekode="0101", received=RECEIVED, pensionssager=PENSIONSSAGER, ledger=empty_ledger(),
        first_open_period=lambda t: "2027-01",
    )
    assert result.rows() == [(0, "KBH-1", "MODTAGET", None, None)]


def test_files_judged_together_get_what_each_gets_alone():
    from assets.sf6110_rules import FileToJudge, judge_files

    def frame(*instructions: dict) -> pl.DataFrame:
        return pl.DataFrame([dict(i, position=n) for n, i in enumerate(instructions)], schema=INSTRUCTION_SCHEMA)

    history = ledger(
        {"anmodning_id": "KBH-1"},  # 0101's KBH-1 for ALICE
        {"anmodning_id": "FRB-1", "kommunekode": "0147", "cpr": BOB},
        {"anmodning_id": "FRB-2", "kommunekode": "0147", "cpr": BOB, "handling": "OPHOER"},
    )
    files = [
        FileToJudge(  # U07 (KBH-1 registered), U02, 2027-01 still open on its date, U03, U08 (not 0101's FRB-1)
            frame(opret(), opret(anmodning_id="KBH-2"), opret(anmodning_id="KBH-2"), opret(anmodning_id="KBH-3", fra_periode="2027-01"),
                  opret(anmodning_id="KBH-4", cpr=UDEN_SAG), aendr(anmodning_id="FRB-1", cpr=BOB)),
            "0101", RECEIVED,
        ),
        FileToJudge(  # the same ids in another municipality: its own history (KBH-1 is new there)
            frame(opret(cpr=BOB), aendr(anmodning_id="FRB-1", cpr=BOB), ophoer(anmodning_id="FRB-2", cpr=BOB),
                  opret(anmodning_id="FRB-3", cpr=ALICE), opret(anmodning_id="FRB-4", cpr=BOB, fra_periode="2027-01")),
            "0147", RECEIVED + dt.timedelta(days=10),
        ),
        FileToJudge(frame(opret(cpr="12345")), "0151", RECEIVED),  # U01
    ]
    opens = lambda t: "2027-02" if t.day > 10 else "2027-01"  # noqa: E731 - the second file is judged later
    together = judge_files(files, pensionssager=PENSIONSSAGER, ledger=history, first_open_period=opens)
    alone = [
        judge_instructions(f.instructions, kommunekode=f.kommunekode, received=f.received, pensionssager=PENSIONSSAGER,
                           ledger=history, first_open_period=opens)
        for f in files
    ]  # fmt: skip
    for joint, single in zip(together, alone, strict=True):
        assert joint.equals(single)
    assert together[0]["kode"].to_list() == ["U07", None, "U02", None, "U03", "U08"]
    assert together[1]["kode"].to_list() == [None, None, "U08", "U04", "U06"]  # 2027-01 closed by then
    assert together[2]["kode"].to_list() == ["U01"]
    with pytest.raises(ValueError, match="different municipalities"):
        judge_files(files + files[:1], pensionssager=PENSIONSSAGER, ledger=history)


def test_the_case_index_finds_what_a_scan_of_the_snapshot_finds():
    from assets.sf6110_rules import CaseIndex, _cases_of

    index = CaseIndex(PENSIONSSAGER)
    known = PENSIONSSAGER["cpr"].to_list()
    for cprs in (known[:1], known[::-1] + ["0000000000", ""], [], known[1:] * 2):
        frame = pl.DataFrame({"cpr": cprs}, schema={"cpr": pl.String})
        assert index.cases_of(frame).sort("cpr").equals(_cases_of(PENSIONSSAGER, frame).sort("cpr"))
    twice = CaseIndex(pl.concat([PENSIONSSAGER, PENSIONSSAGER.head(1)]))
    for _ in range(2):  # the second look-up would use an index: a snapshot with a CPR twice has none
        with pytest.raises(ValueError, match="more than one row"):
            twice.cases_of(pl.DataFrame({"cpr": known[:1]}))


@pytest.mark.parametrize(
    "spelling",
    [
        lambda cpr: "+" + cpr[1:],  # the same number as a CPR with a leading 0: the index finds both
        lambda cpr: cpr[1:],  # nine digits: a number, though no CPR
        lambda cpr: cpr[:9] + "X",  # no number: no index, a scan
    ],
)
def test_the_case_index_finds_only_the_cprs_asked_however_the_snapshot_spells_them(spelling):
    from assets.sf6110_rules import CaseIndex, _cases_of

    odd = PENSIONSSAGER.with_columns(cpr=pl.when(pl.col("cpr") == BOB).then(pl.lit(spelling(BOB))).otherwise("cpr"))
    # Another case whose CPR is the same number: then there is no index either.
    same_number = PENSIONSSAGER.head(1).with_columns(cpr=pl.lit("0" + BOB[1:]))
    for snapshot in (odd, pl.concat([odd, same_number])):
        index = CaseIndex(snapshot)
        others = [c for c in (BOB, "0" + BOB[1:], BOB[1:], "+" + BOB[1:]) if c not in snapshot["cpr"]]
        asked = snapshot["cpr"].to_list() + others
        for cprs in (asked, others, asked[::-1], asked[1:2]):  # from the second look-up, the index's
            frame = pl.DataFrame({"cpr": cprs}, schema={"cpr": pl.String})
            assert index.cases_of(frame).sort("cpr").equals(_cases_of(snapshot, frame).sort("cpr"))


def test_duplicate_cases_in_pensionssager_are_an_error_not_a_guess():
    twice = pl.concat([PENSIONSSAGER, PENSIONSSAGER.head(1)])
    frame = pl.DataFrame([opret() | {"position": 0}], schema=INSTRUCTION_SCHEMA)
    with pytest.raises(ValueError, match="more than one row"):
        judge_instructions(frame, kommunekode="0101", received=RECEIVED, pensionssager=twice, ledger=empty_ledger())


def test_the_pandera_model_finds_exactly_the_u01_instructions():
    import pandera.errors

    cases = [
        case | {"anmodning_id": f"I{i}"} if case["anmodning_id"] == "KBH-1" else case
        for i, (case, _) in enumerate(U01_CASES.values())
    ]
    frame = decode_request_file(request_file(*cases)).instructions
    judged_on = RECEIVED.date()
    expected = frame.with_columns(u01_element_expr(judged_on)).filter(pl.col("element").is_not_null())
    with pytest.raises(pandera.errors.SchemaErrors) as failure:
        instruction_schema(judged_on).validate(frame, lazy=True)
    cases_found = failure.value.failure_cases
    # Every first offence is reported (and a row may break more than one rule).
    assert {f"U01_{e}" for e in expected["element"].unique().to_list()} <= set(cases_found["check"].to_list())
    assert set(cases_found["index"].to_list()) == set(expected["position"].to_list())
    valid = frame.filter(pl.col("position").is_in(expected["position"].implode()).not_())
    assert valid.height > 0
    instruction_schema(judged_on).validate(valid)  # no error


# --- the generator (pipelines/generate_sf6110.py) -------------------------------------------


def _register(persons: int = 400) -> pl.DataFrame:
    from pipelines.generate import sample_cprs

    koder = ["0101", "0147", "0151"]
    return pl.DataFrame({"cpr": sample_cprs(persons, seed=3)}).with_row_index("i").select(
        "cpr",
        sagsstatus=pl.when(pl.col("i") % 10 == 0).then(pl.lit("OPHOERT")).otherwise(pl.lit("AKTIV")),
        bopaelskommune=pl.lit(pl.Series(koder)).get(pl.col("i") % 3),
        administrationskommune=pl.lit(None, pl.String),
        doedsdato=pl.when(pl.col("i") % 10 == 1).then(pl.lit(dt.date(2026, 12, 1))).otherwise(pl.lit(None, pl.Date)),
    )


def test_generated_files_are_valid_realistic_requests():
    from pipelines.generate_sf6110 import generate_request_files

    register = _register()
    dannet = dt.datetime(2027, 1, 5, 10, 15, tzinfo=dt.timezone.utc)
    files = generate_request_files(register, instructions=600, fra_periode="2027-02", seed=5, dannet=dannet)
    assert sorted(files) == [f"SF6110_{k}_20270105111500.xml" for k in ("0101", "0147", "0151")]
    assert files == generate_request_files(register, instructions=600, fra_periode="2027-02", seed=5, dannet=dannet)

    eligible = register.filter((pl.col("sagsstatus") == "AKTIV") & pl.col("doedsdato").is_null())
    total = 0
    for name, data in files.items():
        decoded = decode_request_file(data)
        kommunekode = name.split("_")[1]
        assert decoded.kommunekode == kommunekode
        frame = decoded.instructions
        total += frame.height
        assert frame["anmodning_id"].is_unique().all()
        assert frame["handling"].unique().to_list() == ["OPRET"]
        own = eligible.filter(pl.col("bopaelskommune") == kommunekode)["cpr"]
        assert frame["cpr"].is_in(own.implode()).all()
        assert set(frame["traekart"].to_list()) <= {"HUSL", "PLEJ", "TILB", "MAD", "BRUG"}
        assert frame["poster"].list.len().is_between(1, 3).all()
        oere = frame["samlet_beloeb"].str.replace(r"\.", "").cast(pl.Int64)
        assert oere.is_between(5_000, 500_000).all()
        decision = judge_file(
            data, sender="kp", filnavn=name, file_transfer_uuid=name, received=RECEIVED,
            partners=default_partners(), accepted_before=frozenset(),
            pensionssager=register, ledger=empty_ledger(), first_open_period=lambda t: "2027-02",
        )
        assert decision.status == "MODTAGET"
        assert decision.outcomes["kode"].null_count() == frame.height  # every one registered
    assert total == 600
    mix = pl.concat(decode_request_file(d).instructions for d in files.values())
    assert mix["traekart"].n_unique() == 5  # Traekart mixed
    assert 0 < mix["til_periode"].null_count() < mix.height and 0 < mix["reference"].null_count() < mix.height


def test_generated_mistakes_are_u01_only():
    from pipelines.generate_sf6110 import generate_request_files

    register = _register()
    files = generate_request_files(register, instructions=1_000, fra_periode="2027-02", seed=1, invalid_share=0.2,
                                   kommuner=["0101"], dannet=RECEIVED)
    (data,) = files.values()
    decision = judge_file(
        data, sender="kp", filnavn="f.xml", file_transfer_uuid="u", received=RECEIVED,
        partners=default_partners(), accepted_before=frozenset(),
        pensionssager=register, ledger=empty_ledger(), first_open_period=lambda t: "2027-02",
    )
    rejected = decision.outcomes.filter(pl.col("status") == "AFVIST")
    assert rejected["kode"].unique().to_list() == ["U01"]
    assert set(rejected["element"].to_list()) == {"CPR", "Traekart", "SamletBeloeb", "Specifikation"}
    assert 0.12 < rejected.height / decision.outcomes.height < 0.28
