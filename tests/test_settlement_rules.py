"""settlement.md: which requests are active in P, settling one citizen, the invariants."""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pytest

from assets.settlement_rules import (
    ACTIVE_SCHEMA,
    SETTLED_SCHEMA,
    active_requests,
    settle,
    settle_with_trail,
    settlement_summary,
    settlement_trail,
    violations_one_outcome,
    violations_settled_le_netto,
)
from contracts.ledger import LEDGER_SCHEMA

P = "2027-02"
T0 = dt.datetime(2027, 1, 5, 9, 0, tzinfo=dt.UTC)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


# --- small frames -------------------------------------------------------------------------------


def instruction(
    anmodning_id: str,
    *,
    kommunekode: str = "0101",
    cpr: str = "0101401234",
    handling: str = "OPRET",
    traekart: str | None = "MAD",
    fra: str = "2027-01",
    til: str | None = None,
    beloeb: int | None = 100_00,
    modtaget: dt.datetime = T0,
    filnavn: str = "SF6110_0101_20270105100000.xml",
    position: int = 0,
    file_transfer_uuid: str = "6f1c0d4e-0000-4000-8000-000000000000",
) -> dict:
    if handling == "OPHOER":
        traekart, til, beloeb = None, None, None
    return {
        "kommunekode": kommunekode,
        "anmodning_id": anmodning_id,
        "cpr": cpr,
        "handling": handling,
        "traekart": traekart,
        "fra_periode": fra,
        "til_periode": til,
        "beloeb_oere": beloeb,
        "modtaget": modtaget,
        "filnavn": filnavn,
        "file_transfer_uuid": file_transfer_uuid,
        "position": position,
    }


def ledger(*instructions: dict) -> pl.DataFrame:
    return pl.DataFrame(list(instructions), schema=LEDGER_SCHEMA)


def sag(
    cpr: str,
    *,
    doedsdato: dt.date | None = None,
    bopaelskommune: str = "0101",
    administrationskommune: str | None = None,
    under_administration: bool = False,
    udbetaling_til_kommune: bool = False,
    pensionstype: str = "FP",
) -> dict:
    return {
        "cpr": cpr,
        "pensionstype": pensionstype,
        "sagsstatus": "AKTIV",
        "bopaelskommune": bopaelskommune,
        "administrationskommune": administrationskommune,
        "under_administration": under_administration,
        "udbetaling_til_kommune": udbetaling_til_kommune,
        "doedsdato": doedsdato,
    }


SAGER_SCHEMA = {
    "cpr": pl.String,
    "pensionstype": pl.String,
    "sagsstatus": pl.String,
    "bopaelskommune": pl.String,
    "administrationskommune": pl.String,
    "under_administration": pl.Boolean,
    "udbetaling_til_kommune": pl.Boolean,
    "doedsdato": pl.Date,
}
BEREGNING_SCHEMA = {
    "cpr": pl.String,
    "periode": pl.String,
    "brutto_oere": pl.Int64,
    "skat_oere": pl.Int64,
    "netto_oere": pl.Int64,
    "udbetales": pl.Boolean,
}


def pensionssager(*sager: dict) -> pl.DataFrame:
    return pl.DataFrame(list(sager), schema=SAGER_SCHEMA)


def beregning(cpr: str, netto: int, *, udbetales: bool = True, skat: int = 0, periode: str = P) -> dict:
    return {
        "cpr": cpr,
        "periode": periode,
        "brutto_oere": netto + skat,
        "skat_oere": skat,
        "netto_oere": netto,
        "udbetales": udbetales,
    }


def pensionsberegning(*rows: dict) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=BEREGNING_SCHEMA)


def outcome(settled: pl.DataFrame, anmodning_id: str, kommunekode: str = "0101") -> tuple:
    row = settled.filter(
        (pl.col("anmodning_id") == anmodning_id) & (pl.col("kommunekode") == kommunekode)
    ).row(0, named=True)
    return row["status"], row["afregnet_oere"], row["kode"]


def settle_ledger(the_ledger, sager, beregninger, periode: str = P) -> pl.DataFrame:
    return settle(active_requests(the_ledger, periode), sager, beregninger, periode)


# --- Which requests are active in P -------------------------------------------------------------


def test_active_output_has_the_columns_and_one_row_per_request():
    active = active_requests(ledger(instruction("B"), instruction("A", kommunekode="0147")), P)
    assert active.schema == ACTIVE_SCHEMA
    assert active.select("kommunekode", "anmodning_id").rows() == [("0101", "B"), ("0147", "A")]
    assert active["periode"].to_list() == [P, P]
    assert active["opret_modtaget"].to_list() == [T0, T0]


def test_a_request_is_active_from_its_fra_periode():
    the_ledger = ledger(instruction("A", fra="2027-03"))
    assert active_requests(the_ledger, "2027-02").is_empty()
    assert active_requests(the_ledger, "2027-03").height == 1


def test_aendr_from_a_later_period_changes_the_amount_only_from_its_fra_periode():
    the_ledger = ledger(
        instruction("A", fra="2027-02", beloeb=100_00, traekart="MAD"),
        instruction("A", handling="AENDR", fra="2027-04", beloeb=250_00, traekart="BRUG", modtaget=at(60)),
    )
    before = active_requests(the_ledger, "2027-03").row(0, named=True)
    assert (before["beloeb_oere"], before["traekart"]) == (100_00, "MAD")
    for periode in ["2027-04", "2027-07"]:
        after = active_requests(the_ledger, periode).row(0, named=True)
        assert (after["beloeb_oere"], after["traekart"]) == (250_00, "BRUG")
        assert after["opret_modtaget"] == T0  # the walk still uses the OPRET's modtaget


def test_aendr_with_fra_periode_before_the_opret_starts_the_request_earlier():
    the_ledger = ledger(
        instruction("A", fra="2027-05", beloeb=100_00),
        instruction("A", handling="AENDR", fra="2027-03", beloeb=300_00, modtaget=at(60)),
    )
    assert active_requests(the_ledger, "2027-02").is_empty()
    for periode in ["2027-03", "2027-05", "2027-06"]:
        # From 2027-05 both apply; the AENDR was received last, so it is the version in force.
        row = active_requests(the_ledger, periode).row(0, named=True)
        assert row["beloeb_oere"] == 300_00
        assert row["opret_modtaget"] == T0  # not the AENDR's own modtaget (at(60))


def test_ophoer_stops_the_request_from_its_fra_periode_and_not_before():
    the_ledger = ledger(
        instruction("A", fra="2027-01"),
        instruction("A", handling="OPHOER", fra="2027-04", modtaget=at(60)),
    )
    assert active_requests(the_ledger, "2027-03").height == 1
    assert active_requests(the_ledger, "2027-04").is_empty()
    assert active_requests(the_ledger, "2027-09").is_empty()


def test_til_periode_is_the_last_active_period_inclusive():
    the_ledger = ledger(instruction("A", fra="2027-01", til="2027-03"))
    assert active_requests(the_ledger, "2027-03").height == 1
    assert active_requests(the_ledger, "2027-04").is_empty()


def test_aendr_without_til_periode_removes_the_opret_til_periode():
    the_ledger = ledger(
        instruction("A", fra="2027-01", til="2027-03"),
        instruction("A", handling="AENDR", fra="2027-02", til=None, modtaget=at(60)),
    )
    assert active_requests(the_ledger, "2027-06").height == 1


@pytest.mark.parametrize("reverse_rows", [False, True])
def test_same_modtaget_is_broken_by_the_later_file_name_in_byte_order(reverse_rows):
    # Byte order: 'a' (0x61) is after 'Z' (0x5A), whatever a Danish locale would say. The
    # FileTransferUUIDs sort the other way round: they must not decide.
    instructions = [
        instruction("A", handling="AENDR", beloeb=111_00, modtaget=at(60), filnavn="SF6110_0101_a.xml", file_transfer_uuid="1"),
        instruction("A", handling="AENDR", beloeb=222_00, modtaget=at(60), filnavn="SF6110_0101_Z.xml", file_transfer_uuid="2"),
        instruction("A", beloeb=50_00),
    ]
    if reverse_rows:
        instructions.reverse()
    row = active_requests(ledger(*instructions), P).row(0, named=True)
    assert row["beloeb_oere"] == 111_00


def test_later_modtaget_wins_over_the_file_name():
    the_ledger = ledger(
        instruction("A", beloeb=50_00),
        instruction("A", handling="AENDR", beloeb=111_00, modtaget=at(61), filnavn="SF6110_0101_A.xml"),
        instruction("A", handling="AENDR", beloeb=222_00, modtaget=at(60), filnavn="SF6110_0101_z.xml"),
    )
    assert active_requests(the_ledger, P)["beloeb_oere"].to_list() == [111_00]


def test_requests_are_identified_by_kommunekode_and_anmodning_id():
    the_ledger = ledger(
        instruction("A", kommunekode="0101"),
        instruction("A", kommunekode="0147"),
        instruction("A", kommunekode="0147", handling="OPHOER", fra="2027-02", modtaget=at(5)),
    )
    assert active_requests(the_ledger, P)["kommunekode"].to_list() == ["0101"]


def test_empty_ledger_gives_no_active_requests():
    assert active_requests(ledger(), P).schema == ACTIVE_SCHEMA


@pytest.mark.parametrize("periode", ["2027-13", "202702", "2027-2", ""])
def test_a_malformed_periode_is_refused_with_the_fix(periode):
    with pytest.raises(ValueError, match="YYYY-MM"):
        active_requests(ledger(), periode)


# --- Settling one citizen -----------------------------------------------------------------------


def test_settled_output_columns_texts_and_order():
    the_ledger = ledger(
        instruction("B", cpr="0101401234", beloeb=100_00),
        instruction("A", cpr="0101401234", beloeb=900_00, kommunekode="0147"),
        instruction("A", cpr="0202402345", beloeb=100_00),
    )
    settled = settle_ledger(
        the_ledger,
        pensionssager(sag("0101401234"), sag("0202402345")),
        pensionsberegning(beregning("0101401234", 500_00), beregning("0202402345", 0)),
    )
    assert settled.schema == SETTLED_SCHEMA
    assert settled.select("kommunekode", "anmodning_id").rows() == [("0101", "A"), ("0101", "B"), ("0147", "A")]
    assert settled.select("status", "kode", "tekst", "afregnet_oere").rows() == [
        ("AFVIST", "A02", "Ingen pensionsudbetaling i perioden", 0),
        ("AFREGNET", None, None, 100_00),
        ("AFVIST", "A03", "Pensionen kan ikke dække trækket", 0),
    ]
    assert settled["periode"].unique().to_list() == [P]
    assert settled["anmodet_oere"].to_list() == [100_00, 100_00, 900_00]


def test_priority_applies_across_municipalities():
    # MAD (priority 4) from 0101 was created first, PLEJ (priority 2) from 0147 later:
    # priority decides, not time or municipality.
    the_ledger = ledger(
        instruction("MAD-1", kommunekode="0101", traekart="MAD", beloeb=3000_00, modtaget=at(0)),
        instruction("PLEJ-1", kommunekode="0147", traekart="PLEJ", beloeb=8000_00, modtaget=at(60)),
    )
    settled = settle_ledger(the_ledger, pensionssager(sag("0101401234")), pensionsberegning(beregning("0101401234", 10000_00)))
    assert outcome(settled, "PLEJ-1", "0147") == ("AFREGNET", 8000_00, None)
    assert outcome(settled, "MAD-1", "0101") == ("AFVIST", 0, "A03")


def test_walk_skips_a_request_that_does_not_fit_and_a_smaller_later_one_still_fits():
    the_ledger = ledger(
        instruction("H", traekart="HUSL", beloeb=6000_00),
        instruction("P", traekart="PLEJ", beloeb=3000_00),
        instruction("M", traekart="MAD", beloeb=2500_00),
        instruction("B", traekart="BRUG", beloeb=2000_00),
    )
    settled = settle_ledger(the_ledger, pensionssager(sag("0101401234")), pensionsberegning(beregning("0101401234", 5000_00)))
    assert outcome(settled, "H") == ("AFVIST", 0, "A03")
    assert outcome(settled, "P") == ("AFREGNET", 3000_00, None)
    assert outcome(settled, "M") == ("AFVIST", 0, "A03")  # rest 2000.00: never split
    assert outcome(settled, "B") == ("AFREGNET", 2000_00, None)  # rest exactly 0 afterwards


def test_an_amount_equal_to_the_rest_is_settled():
    the_ledger = ledger(instruction("A", beloeb=5000_00))
    settled = settle_ledger(the_ledger, pensionssager(sag("0101401234")), pensionsberegning(beregning("0101401234", 5000_00)))
    assert outcome(settled, "A") == ("AFREGNET", 5000_00, None)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # same priority: the earlier OPRET modtaget first, whatever municipality or id
        (dict(anmodning_id="Z", kommunekode="0851", modtaget=at(0)), dict(anmodning_id="A", kommunekode="0101", modtaget=at(1))),
        # same modtaget: the lower kommunekode first
        (dict(anmodning_id="Z", kommunekode="0101", modtaget=at(0)), dict(anmodning_id="A", kommunekode="0147", modtaget=at(0))),
        # same modtaget and municipality: AnmodningId in byte order ('B' before 'a')
        (dict(anmodning_id="B-1", kommunekode="0101", modtaget=at(0)), dict(anmodning_id="a-1", kommunekode="0101", modtaget=at(0))),
    ],
)
@pytest.mark.parametrize("reverse_rows", [False, True])
def test_equal_priority_order_opret_modtaget_then_kommunekode_then_anmodning_id(first, second, reverse_rows):
    rows = [
        instruction(first["anmodning_id"], kommunekode=first["kommunekode"], modtaget=first["modtaget"], beloeb=1000_00),
        instruction(second["anmodning_id"], kommunekode=second["kommunekode"], modtaget=second["modtaget"], beloeb=1000_00),
    ]
    if reverse_rows:
        rows.reverse()
    settled = settle_ledger(ledger(*rows), pensionssager(sag("0101401234")), pensionsberegning(beregning("0101401234", 1000_00)))
    assert outcome(settled, first["anmodning_id"], first["kommunekode"])[0] == "AFREGNET"
    assert outcome(settled, second["anmodning_id"], second["kommunekode"]) == ("AFVIST", 0, "A03")


def test_walk_order_uses_the_opret_modtaget_not_the_aendr_modtaget():
    the_ledger = ledger(
        instruction("OLD", beloeb=900_00, modtaget=at(0)),
        instruction("NEW", beloeb=900_00, modtaget=at(10)),
        instruction("OLD", handling="AENDR", beloeb=1000_00, modtaget=at(20)),  # received last, still first
    )
    settled = settle_ledger(the_ledger, pensionssager(sag("0101401234")), pensionsberegning(beregning("0101401234", 1000_00)))
    assert outcome(settled, "OLD") == ("AFREGNET", 1000_00, None)
    assert outcome(settled, "NEW") == ("AFVIST", 0, "A03")


def test_death_before_the_period_rejects_every_request_a01():
    the_ledger = ledger(instruction("A"), instruction("B", kommunekode="0147", traekart="HUSL"))
    sager = pensionssager(sag("0101401234", doedsdato=dt.date(2027, 1, 31)))
    settled = settle_ledger(the_ledger, sager, pensionsberegning(beregning("0101401234", 5000_00)))
    assert settled.select("status", "kode", "afregnet_oere").unique().rows() == [("AFVIST", "A01", 0)]
    assert settled["tekst"].unique().to_list() == ["Borgeren er død"]


def test_death_during_the_period_does_not_stop_the_settlement():
    the_ledger = ledger(instruction("A", beloeb=100_00))
    for doedsdato in [dt.date(2027, 2, 1), dt.date(2027, 2, 28)]:
        sager = pensionssager(sag("0101401234", doedsdato=doedsdato))
        settled = settle_ledger(the_ledger, sager, pensionsberegning(beregning("0101401234", 5000_00)))
        assert outcome(settled, "A") == ("AFREGNET", 100_00, None)


def test_death_before_the_period_is_a01_even_when_nothing_is_paid():
    sager = pensionssager(sag("0101401234", doedsdato=dt.date(2026, 12, 1)))
    settled = settle_ledger(ledger(instruction("A")), sager, pensionsberegning(beregning("0101401234", 0, udbetales=False)))
    assert outcome(settled, "A") == ("AFVIST", 0, "A01")


@pytest.mark.parametrize(
    ("sager", "beregninger"),
    [
        pytest.param([sag("0101401234")], [beregning("0101401234", 5000_00, udbetales=False)], id="suspended"),
        pytest.param([], [beregning("0101401234", 5000_00)], id="no-case"),
        pytest.param([sag("0101401234")], [], id="no-beregning-row"),
        pytest.param([sag("0101401234")], [beregning("0101401234", 5000_00, periode="2027-01")], id="beregning-of-another-period"),
        pytest.param([sag("0101401234")], [beregning("0101401234", 0)], id="netto-0"),
    ],
)
def test_no_pension_paid_rejects_every_request_a02(sager, beregninger):
    the_ledger = ledger(instruction("A", beloeb=1), instruction("B", kommunekode="0147"))
    settled = settle_ledger(the_ledger, pensionssager(*sager), pensionsberegning(*beregninger))
    assert settled.select("status", "kode", "afregnet_oere").unique().rows() == [("AFVIST", "A02", 0)]
    assert settled["tekst"].unique().to_list() == ["Ingen pensionsudbetaling i perioden"]


def test_citizens_are_settled_independently():
    the_ledger = ledger(
        instruction("A", cpr="0101401234", beloeb=600_00),
        instruction("B", cpr="0202402345", beloeb=600_00),
    )
    settled = settle_ledger(
        the_ledger,
        pensionssager(sag("0101401234"), sag("0202402345")),
        pensionsberegning(beregning("0101401234", 600_00), beregning("0202402345", 599_99)),
    )
    assert outcome(settled, "A") == ("AFREGNET", 600_00, None)
    assert outcome(settled, "B") == ("AFVIST", 0, "A03")


def test_unknown_traekart_is_refused_naming_the_code_list():
    with pytest.raises(ValueError, match="traekart.csv"):
        settle_ledger(ledger(instruction("A", traekart="XYZ")), pensionssager(sag("0101401234")), pensionsberegning(beregning("0101401234", 1)))


def test_a_cpr_twice_in_the_register_is_refused():
    with pytest.raises(pl.exceptions.ComputeError):
        settle_ledger(
            ledger(instruction("A")),
            pensionssager(sag("0101401234"), sag("0101401234")),
            pensionsberegning(beregning("0101401234", 1)),
        )


def test_no_active_requests_settles_nothing():
    settled = settle(active_requests(ledger(), P), pensionssager(), pensionsberegning(), P)
    assert settled.is_empty() and settled.schema == SETTLED_SCHEMA


def _reference_walk(requests: list[dict], netto: dict[str, int]) -> dict[tuple, int]:
    """settlement.md step 3 written as plainly as possible, one citizen at a time."""
    prioritet = {"HUSL": 1, "PLEJ": 2, "TILB": 3, "MAD": 4, "BRUG": 5}
    afregnet = {}
    for cpr in {r["cpr"] for r in requests}:
        rest = netto[cpr]
        mine = sorted(
            (r for r in requests if r["cpr"] == cpr),
            key=lambda r: (prioritet[r["traekart"]], r["modtaget"], r["kommunekode"], r["anmodning_id"].encode()),
        )
        for r in mine:
            fits = r["beloeb_oere"] <= rest
            afregnet[(r["kommunekode"], r["anmodning_id"])] = r["beloeb_oere"] if fits else 0
            rest -= r["beloeb_oere"] if fits else 0
    return afregnet


def test_vectorized_walk_matches_a_plain_reference_walk_on_random_data():
    rng = random.Random(20270226)
    cprs = [f"{day:02d}0140{n:04d}" for day in range(1, 29) for n in range(5)]
    requests = [
        instruction(
            f"{rng.choice('AaBb_-')}{i}",
            kommunekode=rng.choice(["0101", "0147", "0751"]),
            cpr=rng.choice(cprs),
            traekart=rng.choice(["HUSL", "PLEJ", "TILB", "MAD", "BRUG"]),
            beloeb=rng.randint(1, 3000_00),
            modtaget=at(rng.randint(0, 5)),
        )
        for i in range(600)
    ]
    netto = {cpr: rng.randint(1, 8000_00) for cpr in cprs}
    settled = settle_ledger(
        ledger(*requests),
        pensionssager(*(sag(cpr) for cpr in cprs)),
        pensionsberegning(*(beregning(cpr, n) for cpr, n in netto.items())),
    )
    expected = _reference_walk(requests, netto)
    got = {(k, a): v for k, a, v in settled.select("kommunekode", "anmodning_id", "afregnet_oere").rows()}
    assert got == expected
    assert settled.filter(pl.col("status") == "AFREGNET").height > 100
    assert settled.filter(pl.col("kode") == "A03").height > 100
    assert violations_settled_le_netto(settled, pensionsberegning(*(beregning(c, n) for c, n in netto.items()))).is_empty()


def test_the_fast_paths_of_the_walk_give_what_the_plain_paths_give():
    """settle_with_trail joins and sorts by the CPR as a number when every CPR is ten digits,
    sorts with nulls first when no sort column has a null, and puts the rows back in the order
    of `active` before sorting by request: each against its other side (text CPRs, nulls in the
    walk order, an unsorted `active`) and the trail against settlement_trail's own joins."""
    rng = random.Random(11)
    cprs = [f"{day:02d}0140{n:04d}" for day in range(1, 29) for n in range(3)]
    requests = [
        instruction(
            f"R{i}",
            kommunekode=rng.choice(["0101", "0147"]),
            cpr=rng.choice(cprs),
            traekart=rng.choice(["HUSL", "MAD", "BRUG"]),
            beloeb=rng.randint(1, 3000_00),
            modtaget=at(rng.randint(0, 3)),
        )
        for i in range(300)
    ]
    sager = pensionssager(*(sag(cpr, doedsdato=dt.date(2026, 1, 1) if cpr.startswith("01") else None) for cpr in cprs))
    beregninger = pensionsberegning(*(beregning(cpr, rng.randint(0, 6000_00)) for cpr in cprs if cpr != cprs[3]))
    active = active_requests(ledger(*requests), P)
    settled, trail = settle_with_trail(active, sager, beregninger, P)
    assert set(settled["kode"].drop_nulls()) == {"A01", "A02", "A03"}
    assert trail.equals(settlement_trail(active, settled, beregninger, P))

    def as_text(frame: pl.DataFrame) -> pl.DataFrame:  # no longer ten digits: joined as text
        return frame.with_columns(cpr=pl.lit("x") + pl.col("cpr"))

    text_settled, text_trail = settle_with_trail(as_text(active), as_text(sager), as_text(beregninger), P)
    assert text_settled.equals(as_text(settled)) and text_trail.equals(as_text(trail))

    # Nulls in the walk order (sorted last) and `active` in another order than by request.
    holes = active.with_columns(
        opret_modtaget=pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("opret_modtaget")),
        cpr=pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("cpr")),
    ).reverse()
    holes_settled, holes_trail = settle_with_trail(holes, sager, beregninger, P)
    assert holes_settled.equals(holes_settled.sort("kommunekode", "anmodning_id"))
    assert holes_trail.equals(settlement_trail(holes, holes_settled, beregninger, P))
    assert holes_trail["cpr"][-1] is None  # the request without a CPR last in the walk


# --- Summary and invariants ---------------------------------------------------------------------


def _mixed_settlement() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    the_ledger = ledger(
        instruction("A", cpr="0101401234", beloeb=100_00),
        instruction("B", cpr="0101401234", beloeb=9000_00),
        instruction("C", cpr="0202402345", kommunekode="0147"),
        instruction("D", cpr="0303403456", kommunekode="0147", beloeb=250_00),
    )
    beregninger = pensionsberegning(beregning("0101401234", 5000_00), beregning("0303403456", 1000_00))
    active = active_requests(the_ledger, P)
    settled = settle(
        active,
        pensionssager(sag("0101401234"), sag("0202402345", doedsdato=dt.date(2026, 5, 1)), sag("0303403456")),
        beregninger,
        P,
    )
    return active, settled, beregninger


def test_settlement_summary_counts_per_municipality():
    _, settled, _ = _mixed_settlement()
    summary = settlement_summary(settled)
    assert summary.columns == [
        "kommunekode", "antal_traek", "antal_afregnet", "antal_afvist", "samlet_afregnet_oere",
        "antal_A01", "antal_A02", "antal_A03",
    ]  # fmt: skip
    assert summary.rows() == [
        ("0101", 2, 1, 1, 100_00, 0, 0, 1),
        ("0147", 2, 1, 1, 250_00, 1, 0, 0),
    ]


def test_invariants_hold_on_a_real_settlement():
    active, settled, beregninger = _mixed_settlement()
    assert violations_one_outcome(active, settled).is_empty()
    assert violations_settled_le_netto(settled, beregninger).is_empty()


def test_one_outcome_reports_missing_duplicated_unknown_and_broken_outcomes():
    active, settled, _ = _mixed_settlement()
    unknown = settled.filter(pl.col("anmodning_id") == "A").with_columns(anmodning_id=pl.lit("X"))
    crafted = pl.concat(
        [
            settled.filter(pl.col("anmodning_id") != "B"),  # B: no outcome
            settled.filter(pl.col("anmodning_id") == "C"),  # C: twice
            unknown,  # X: an outcome without an active request
        ]
    ).with_columns(
        # D: AFREGNET with less than the amount, i.e. split
        afregnet_oere=pl.when(pl.col("anmodning_id") == "D").then(1).otherwise(pl.col("afregnet_oere"))
    )
    violations = violations_one_outcome(active, crafted)
    assert violations.select("anmodning_id", "problem").rows() == [
        ("B", "intet udfald"),
        ("X", "udfald uden aktiv anmodning"),
        ("C", "flere udfald"),
        ("D", "udfaldet er ikke helt (status, kode og beloeb passer ikke sammen)"),
    ]
    assert "cpr" not in violations.columns


def test_settled_le_netto_reports_the_citizen_whose_deductions_exceed_netto():
    _, settled, beregninger = _mixed_settlement()
    crafted = settled.with_columns(
        afregnet_oere=pl.when(pl.col("anmodning_id") == "B").then(9000_00).otherwise(pl.col("afregnet_oere"))
    )
    violations = violations_settled_le_netto(crafted, beregninger)
    assert violations.rows() == [("0101401234", 9100_00, 5000_00)]
    # A settled amount for a citizen without a calculation row exceeds netto 0.
    no_row = settled.with_columns(afregnet_oere=pl.when(pl.col("anmodning_id") == "C").then(1).otherwise(pl.col("afregnet_oere")))
    assert violations_settled_le_netto(no_row, beregninger)["cpr"].to_list() == ["0202402345"]
    # The same with CPRs that are not ten digits (grouped and joined as text, not as numbers).
    both = settled.with_columns(
        afregnet_oere=pl.when(pl.col("anmodning_id").is_in(["B", "C"])).then(9000_00).otherwise(pl.col("afregnet_oere"))
    )
    as_text = pl.lit("x") + pl.col("cpr")
    text_violations = violations_settled_le_netto(both.with_columns(cpr=as_text), beregninger.with_columns(cpr=as_text))
    assert text_violations.rows() == [
        (f"x{cpr}", afregnet, netto) for cpr, afregnet, netto in violations_settled_le_netto(both, beregninger).rows()
    ]
    assert text_violations["cpr"].to_list() == ["x0101401234", "x0202402345"]
