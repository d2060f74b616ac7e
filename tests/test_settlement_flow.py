"""A whole month through Dagster on a temporary instance (settlement.md, sf2601.md, operations.md):
instructions delivered through the emulated platform with back-dated received times, intake,
`maanedlig_afregning`, routing to `kp` and `ky`; then reruns, corrections, readiness, a backfill
that equals the on-time runs, and `pensionstraek settle`.

The hand-made month (period P = 2026-10, cut-off 2026-10-17 00:00, udbetalingsdato 2026-10-30):

| who | case in P | requests | outcome in P |
|---|---|---|---|
| A | administered by 0751, paid to its NemKonto | 0101 MAD 1000 (TilPeriode P), 0751 PLEJ 1500 | both AFREGNET; traek 2500 |
| B | netto 5000 | 0101 PLEJ 3000, TILB 2500, MAD 1500 | 3000 settled, 2500 A03, 1500 still fits |
| C | died 2026-09-20 (before P) | 0101 MAD 500 | A01 |
| D | STANDSET, udbetales false | 0101 MAD 400 | A02 |
| E | netto 9000 | 0751 PLEJ 2000, AENDR from P to 1800, AENDR from 2026-11 to MAD 2500 | 1800 PLEJ settled |
| G | | 0461 MAD 300, TilPeriode 2026-09 | ended: 0461 gets no file |
| H | | 0851 BRUG 250, OPHOER from P | ended: 0851 gets no file |
| I | under administration, no administrationskommune | — | left out of SF2601; WARN check |
| J | under administration by 0751, paid to own account | — | not in SF2601 |
| K | under administration by 0751, netto 0, udbetales | — | in SF2601 with zeros |
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from contracts.cpr import is_valid_cpr, mask_cpr
from contracts.envelope import decode_metadata
from contracts.register import PENSIONSBEREGNING_SCHEMA, PENSIONSSAGER_SCHEMA
from contracts.sf2601 import decode_sf2601
from contracts.sf6110 import decode_request_file
from contracts.sf6111 import decode_sf6111
from pipelines import cli
from pipelines.calendar import cutoff
from pipelines.definitions import build_definitions
from pipelines.generate import generate_register
from pipelines.generate_sf6110 import generate_request_files
from pipelines.resources import StateResource
from pipelines.runner import RANGE_END_TAG, RANGE_START_TAG, RunOutcome
from tests.registers import case_row
from tests.world import World, copenhagen, request_file

P = "2026-10"
PREV = "2026-09"
JOB = "maanedlig_afregning"

A, B, C, D, E = "1505421234", "0101401234", "0202402345", "0303403456", "0404401567"
G, H, I, J, K = "0505402678", "0606403789", "0707401890", "0808402901", "0909403012"
EVERYONE = (A, B, C, D, E, G, H, I, J, K)


# --- the register, written by hand --------------------------------------------------------------


def sag(cpr: str, bopael: str, **changes) -> dict:
    return case_row(cpr, bopael, **changes)


def beregning(cpr: str, periode: str, brutto: int, skat: int, udbetales: bool = True) -> dict:
    return {
        "cpr": cpr,
        "periode": periode,
        "brutto_oere": brutto,
        "skat_oere": skat,
        "netto_oere": brutto - skat,
        "udbetales": udbetales,
    }


def write_register(register_dir: Path, periode: str, sager: list[dict], beregninger: list[dict]) -> None:
    for table, rows, schema in (
        ("pensionssager", sager, PENSIONSSAGER_SCHEMA),
        ("pensionsberegning", beregninger, PENSIONSBEREGNING_SCHEMA),
    ):
        (register_dir / table).mkdir(parents=True, exist_ok=True)
        pl.DataFrame(rows, schema=schema).write_parquet(register_dir / table / f"{periode}.parquet")


def month_sager(periode: str) -> list[dict]:
    administreret = {"under_administration": True, "udbetaling_til_kommune": True}
    dead_before_p = periode > PREV  # C died 2026-09-20: known in the snapshot of 2026-09, OPHOERT after
    return [
        sag(A, "0101", administrationskommune="0751", **administreret),
        sag(B, "0101"),
        sag(C, "0101", doedsdato=dt.date(2026, 9, 20), sagsstatus="OPHOERT" if dead_before_p else "AKTIV"),
        sag(D, "0101", sagsstatus="STANDSET"),
        sag(E, "0751"),
        sag(G, "0461"),
        sag(H, "0851"),
        sag(I, "0101", **administreret),  # administrationskommune missing: a data error (sf2601.md)
        sag(J, "0751", administrationskommune="0751", under_administration=True, udbetaling_til_kommune=False),
        sag(K, "0751", administrationskommune="0751", pensionstype="SEP", **administreret),
    ]


def month_beregning(periode: str, b_netto: int = 500_000) -> list[dict]:
    rows = [
        beregning(A, periode, 1_450_000, 387_655),  # netto 10,623.45 kr
        beregning(B, periode, b_netto + 150_000, 150_000),
        beregning(D, periode, 0, 0, udbetales=False),
        beregning(E, periode, 1_200_000, 300_000),
        beregning(G, periode, 1_000_000, 250_000),
        beregning(H, periode, 1_000_000, 250_000),
        beregning(I, periode, 1_000_000, 200_000),
        beregning(J, periode, 1_000_000, 200_000),
        beregning(K, periode, 0, 0),  # netto 0, paid: listed with zeros
    ]
    if periode <= PREV:
        rows.append(beregning(C, periode, 1_000_000, 250_000))  # paid for the month of death
    return rows


# --- the instructions ---------------------------------------------------------------------------


def opret(anmodning_id, cpr, traekart, beloeb, fra=P, til=None) -> dict:
    return {
        "anmodning_id": anmodning_id,
        "cpr": cpr,
        "handling": "OPRET",
        "traekart": traekart,
        "samlet_beloeb": beloeb,
        "fra_periode": fra,
        "til_periode": til,
    }


def aendr(anmodning_id, cpr, traekart, beloeb, fra) -> dict:
    return {
        "anmodning_id": anmodning_id,
        "cpr": cpr,
        "handling": "AENDR",
        "traekart": traekart,
        "samlet_beloeb": beloeb,
        "fra_periode": fra,
    }


def ophoer(anmodning_id, cpr, fra) -> dict:
    return {"anmodning_id": anmodning_id, "cpr": cpr, "handling": "OPHOER", "fra_periode": fra}


# (file name, kommunekode, received, instructions), all before the cut-off of 2026-09.
MONTH_FILES = [
    ("SF6110_0101_20260901100000.xml", "0101", copenhagen(2026, 9, 1, 10, 0), [
        opret("KBH-A1", A, "MAD", "1000.00", fra=PREV, til=P),
        opret("KBH-B1", B, "PLEJ", "3000.00"),
        opret("KBH-B2", B, "TILB", "2500.00"),
        opret("KBH-B3", B, "MAD", "1500.00"),
        opret("KBH-C1", C, "MAD", "500.00", fra=PREV),
        opret("KBH-D1", D, "MAD", "400.00"),
    ]),
    ("SF6110_0751_20260901100000.xml", "0751", copenhagen(2026, 9, 1, 10, 0), [
        opret("AAR-A1", A, "PLEJ", "1500.00"),
        opret("AAR-E1", E, "PLEJ", "2000.00", fra=PREV),
    ]),
    ("SF6110_0461_20260901100000.xml", "0461", copenhagen(2026, 9, 1, 10, 0), [
        opret("OD-G1", G, "MAD", "300.00", fra=PREV, til=PREV),
    ]),
    ("SF6110_0851_20260901100000.xml", "0851", copenhagen(2026, 9, 1, 10, 0), [
        opret("AAL-H1", H, "BRUG", "250.00", fra=PREV),
    ]),
    ("SF6110_0751_20260905100000.xml", "0751", copenhagen(2026, 9, 5, 10, 0), [
        aendr("AAR-E1", E, "PLEJ", "1800.00", fra=P),
    ]),
    ("SF6110_0751_20260910100000.xml", "0751", copenhagen(2026, 9, 10, 10, 0), [
        aendr("AAR-E1", E, "MAD", "2500.00", fra="2026-11"),  # a later period: not yet in P
    ]),
    ("SF6110_0851_20260910100000.xml", "0851", copenhagen(2026, 9, 10, 10, 0), [
        ophoer("AAL-H1", H, fra=P),
    ]),
]


def traek(anmodning_id, cpr, traekart, anmodet, afregnet, status, kode=None, tekst=None) -> dict:
    return {
        "anmodning_id": anmodning_id,
        "cpr": cpr,
        "traekart": traekart,
        "anmodet_oere": anmodet,
        "afregnet_oere": afregnet,
        "status": status,
        "kode": kode,
        "tekst": tekst,
    }


A01 = ("A01", "Borgeren er død")
A02 = ("A02", "Ingen pensionsudbetaling i perioden")
A03 = ("A03", "Pensionen kan ikke dække trækket")

EXPECTED_0101 = [
    traek("KBH-A1", A, "MAD", 100_000, 100_000, "AFREGNET"),
    traek("KBH-B1", B, "PLEJ", 300_000, 300_000, "AFREGNET"),
    traek("KBH-B2", B, "TILB", 250_000, 0, "AFVIST", *A03),  # 2500 > the 2000 left: skipped
    traek("KBH-B3", B, "MAD", 150_000, 150_000, "AFREGNET"),  # the smaller, later one still fits
    traek("KBH-C1", C, "MAD", 50_000, 0, "AFVIST", *A01),
    traek("KBH-D1", D, "MAD", 40_000, 0, "AFVIST", *A02),
]
EXPECTED_0751 = [
    traek("AAR-A1", A, "PLEJ", 150_000, 150_000, "AFREGNET"),
    traek("AAR-E1", E, "PLEJ", 180_000, 180_000, "AFREGNET"),
]

TRAEK_COLUMNS = ["anmodning_id", "cpr", "traekart", "anmodet_oere", "afregnet_oere", "status", "kode", "tekst"]
UDBETALING_COLUMNS = ["cpr", "pensionstype", "brutto_oere", "skat_oere", "traek_oere", "udbetalt_oere"]


# --- building the world -------------------------------------------------------------------------


def new_world(root: Path, partners_file: str = "") -> World:
    return World(root, dg.DagsterInstance.ephemeral(), partners_file=partners_file)


def take_in_month(w: World) -> None:
    """The month's instructions, judged against the newest snapshot at the time (2026-09, when C
    was still a pension recipient), then the register of P arrives."""
    for cpr in EVERYONE:
        assert is_valid_cpr(cpr, dt.date(2026, 1, 1)), cpr
    write_register(w.register_dir, PREV, month_sager(PREV), month_beregning(PREV))
    for name, kommunekode, received, rows in MONTH_FILES:
        assert received < cutoff(PREV)
        w.deliver(name, request_file(kommunekode, rows), received=received)
    intake = w.intake()
    assert intake.success, intake.problems
    w.route()  # the kvitteringer go to kp
    decisions = w.store().decisions()
    assert [(d["filnavn"], d["status"], d["antal_afvist"]) for d in decisions] == [
        (name, "MODTAGET", 0) for name, *_ in sorted(MONTH_FILES, key=lambda f: (f[2], f[0]))
    ]
    write_register(w.register_dir, P, month_sager(P), month_beregning(P))


def settled_month(root: Path, partners_file: str = "") -> tuple[World, RunOutcome]:
    w = new_world(root, partners_file)
    take_in_month(w)
    outcome = w.settle(P)
    assert outcome.success, outcome.problems
    return w, outcome


def files_in(w: World, account: str, prefix: str) -> dict[str, bytes]:
    return {name: (w.inbox(account) / name).read_bytes() for name in w.in_names(account, f"{prefix}_*.xml")}


def out_names(w: World) -> list[str]:
    return sorted(p.name for p in (w.exchange_root / "udk-pension" / "OUT").iterdir())


def settlement_sent(w: World) -> list[str]:
    """What the state store recorded as sent, the intake's kvitteringer aside."""
    return [r["name"] for r in w.store().sent_records() if r["kind"] in ("SF6111", "SF2601")]


def materialization(outcome: RunOutcome, key: str, periode: str | None = None) -> dict:
    for event in outcome.result.get_asset_materialization_events():
        materialized = event.step_materialization_data.materialization
        if materialized.asset_key == dg.AssetKey(key.split("/")) and periode in (None, materialized.partition):
            return dict(materialized.metadata)
    raise AssertionError(f"{key} was not materialized for {periode} in run {outcome.run_id}")


def period_checks(outcome: RunOutcome, periode: str) -> dict[str, tuple]:
    """The check results the run recorded on `periode`: passed and metadata per check."""
    return {
        e.check_name: (e.passed, {k: v.value for k, v in e.metadata.items() if k not in ("detaljer",)})
        for e in outcome.result.get_asset_check_evaluations()
        if e.partition == periode
    }


def check_evaluations(outcome: RunOutcome) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in outcome.result.get_asset_check_evaluations()}


def event_text(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(run_id))


@dataclass
class Month:
    world: World
    outcome: RunOutcome


@pytest.fixture(scope="module")
def month(tmp_path_factory) -> Month:
    """One settled and routed month, shared by the tests that only look at it."""
    w, outcome = settled_month(tmp_path_factory.mktemp("month"))
    w.route()
    return Month(w, outcome)


# --- 1. a whole month ---------------------------------------------------------------------------


def test_sf6111_goes_to_kp_and_sf2601_to_ky_one_file_per_municipality_with_content(month: Month) -> None:
    w = month.world
    assert sorted(files_in(w, "kp", "SF6111")) == ["SF6111_0101_202610_001.xml", "SF6111_0751_202610_001.xml"]
    assert sorted(files_in(w, "ky", "SF2601")) == ["SF2601_0751_202610_001.xml"]
    assert files_in(w, "ky", "SF6111") == {} and files_in(w, "kp", "SF2601") == {}
    # 0461 (TilPeriode ended) and 0851 (OPHOER from P) had requests, but none active in P: no file.
    assert not any("_0461_" in n or "_0851_" in n for n in w.in_names("kp", "SF6111*") + w.in_names("ky"))
    for account, name in (("kp", "SF6111_0101_202610_001.xml"), ("ky", "SF2601_0751_202610_001.xml")):
        metadata = decode_metadata((w.inbox(account) / f"{name}.metadata").read_bytes())
        assert metadata.descriptor.sender == "udk-pension" and account in metadata.descriptor.recipients
    assert out_names(w) == []  # the platform took everything UDK wrote


def test_sf6111_content_is_the_settlement_of_each_municipality(month: Month) -> None:
    files = files_in(month.world, "kp", "SF6111")
    for name, kommunekode, expected, samlet in (
        ("SF6111_0101_202610_001.xml", "0101", EXPECTED_0101, 550_000),
        ("SF6111_0751_202610_001.xml", "0751", EXPECTED_0751, 330_000),
    ):
        header, rows = decode_sf6111(files[name])
        afregnet = sum(r["status"] == "AFREGNET" for r in expected)
        assert header == {
            "kommunekode": kommunekode,
            "periode": P,
            "udbetalingsdato": dt.date(2026, 10, 30),
            "loebenummer": 1,
            "antal_traek": len(expected),
            "antal_afregnet": afregnet,
            "antal_afvist": len(expected) - afregnet,
            "samlet_afregnet_oere": samlet,
        }
        assert rows.select(TRAEK_COLUMNS).to_dicts() == expected
    # Amounts with exactly two decimals (settlement.md), the walk's skipped request with 0.00.
    text = files["SF6111_0101_202610_001.xml"].decode()
    assert "<SamletAfregnetBeloeb>5500.00</SamletAfregnetBeloeb>" in text
    assert "<AnmodetBeloeb>2500.00</AnmodetBeloeb>" in text
    assert "<AfregnetBeloeb>0.00</AfregnetBeloeb>" in text


def test_sf2601_lists_the_administered_citizens_with_both_municipalities_deductions(month: Month) -> None:
    header, rows = decode_sf2601(files_in(month.world, "ky", "SF2601")["SF2601_0751_202610_001.xml"])
    assert header == {
        "kommunekode": "0751",
        "periode": P,
        "udbetalingsdato": dt.date(2026, 10, 30),
        "loebenummer": 1,
        "antal_personer": 2,
        "samlet_udbetalt_oere": 812_345,
    }
    assert rows.select(UDBETALING_COLUMNS).to_dicts() == [
        # sorted by CPR; K: netto 0 and paid, so listed with zeros; J (own account) and I (no
        # administrationskommune) are not in any file.
        {"cpr": K, "pensionstype": "SEP", "brutto_oere": 0, "skat_oere": 0, "traek_oere": 0, "udbetalt_oere": 0},
        # A: 1000 (0101) + 1500 (0751) settled = 2500 traek; 10,623.45 − 2,500.00 = 8,123.45.
        {
            "cpr": A,
            "pensionstype": "FP",
            "brutto_oere": 1_450_000,
            "skat_oere": 387_655,
            "traek_oere": 250_000,
            "udbetalt_oere": 812_345,
        },
    ]


def test_missing_administrationskommune_warns_without_stopping_the_other_files(month: Month) -> None:
    check = check_evaluations(month.outcome)["administrationskommune_mangler"]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["sager_uden_administrationskommune"].value == 1
    assert mask_cpr(I) in check.metadata["eksempler"].value and I not in check.metadata["eksempler"].value
    assert month.outcome.success  # a WARN: the run succeeded and the SF2601 of 0751 went out
    assert materialization(month.outcome, "sf2601/afsendelse")["filer_sendt"].value == 1


# --- 6. the checks and the metadata --------------------------------------------------------------


BLOCKING = {
    "pensionssager_kontrakt",
    "pensionsberegning_kontrakt",
    "hver_anmodning_et_udfald",
    "afregnet_hoejst_netto",
    "filtotaler_stemmer",
    "ingen_fremmede_traek",
    "samlet_lig_overfoersel",
}


def test_the_blocking_checks_exist_and_pass_on_good_data(month: Month) -> None:
    graph = month.world.defs.resolve_asset_graph()
    blocking = {key.name for key in graph.asset_check_keys if graph.get_check_spec(key).blocking}
    assert BLOCKING <= blocking
    evaluations = check_evaluations(month.outcome)
    assert BLOCKING <= set(evaluations)
    failed = {name for name, e in evaluations.items() if not e.passed}
    assert failed == {"administrationskommune_mangler"}
    assert evaluations["filtotaler_stemmer"].metadata["sum_filer_oere"].value == 880_000
    assert evaluations["filtotaler_stemmer"].metadata["sum_afregnet_oere"].value == 880_000
    assert evaluations["filtotaler_stemmer"].metadata["filer"].value == 2
    assert evaluations["ingen_fremmede_traek"].metadata["fremmede_traek"].value == 0
    assert evaluations["hver_anmodning_et_udfald"].metadata["antal_fejl"].value == 0
    # Sent files wait for their receipts: not overdue yet, so the receipt checks pass.
    assert evaluations["sf6111_kvitteret"].passed and evaluations["sf2601_kvitteret"].passed


def test_each_materialization_carries_numbers_the_ui_can_plot(month: Month) -> None:
    afregning = materialization(month.outcome, "settlement/afregning")
    expected = {
        "anmodninger": 8,
        "afregnet": 5,
        "afvist": 3,
        "A01": 1,
        "A02": 1,
        "A03": 1,
        "afregnet_oere": 880_000,
        "kommuner": 2,
    }
    assert {k: afregning[k].value for k in expected} == expected
    for name in expected:
        assert isinstance(afregning[name], dg.IntMetadataValue), name
    # Kroner to plot (the UI's API has no number for an int over 2^31); øre stay exact as int.
    assert isinstance(afregning["afregnet_kr"], dg.FloatMetadataValue) and afregning["afregnet_kr"].value == 8800.0
    assert materialization(month.outcome, "settlement/aktive_anmodninger")["aktive_anmodninger"].value == 8
    assert materialization(month.outcome, "sf6111/specifikationslister")["filer"].value == 2
    assert materialization(month.outcome, "sf6111/afsendelse")["filer_sendt"].value == 2
    udbetalinger = materialization(month.outcome, "sf2601/udbetalinger")
    assert {k: udbetalinger[k].value for k in ("filer", "personer", "traek_oere", "udbetalt_oere")} == {
        "filer": 1, "personer": 2, "traek_oere": 250_000, "udbetalt_oere": 812_345,
    }
    sager = materialization(month.outcome, "register/pensionssager")
    assert sager["rows"].value == 10 and sager["sagsstatus_STANDSET"].value == 1


def test_no_cpr_appears_unmasked_in_any_event_of_the_month(month: Month) -> None:
    runs = month.world.instance.get_runs()
    assert {r.job_name for r in runs} == {"sf6110_intake", JOB}
    settlement = event_text(month.world.instance, month.outcome.run_id)
    assert "administrationskommune_mangler" in settlement  # the scan sees the checks' metadata
    assert mask_cpr(I) in settlement
    for run in runs:
        text = event_text(month.world.instance, run.run_id)
        assert [cpr for cpr in EVERYONE if cpr in text] == [], run.job_name


# --- 3. rerun -------------------------------------------------------------------------------------


def test_a_rerun_with_unchanged_inputs_writes_the_same_bytes_and_sends_nothing(tmp_path: Path) -> None:
    w, first = settled_month(tmp_path)
    store = w.store()
    made = {p.name: p.read_bytes() for p in (w.state_dir / "outgoing").rglob("*.xml")}
    sent = out_names(w)
    assert sorted(n for n in sent if not n.endswith(".trigger")) == [
        "SF2601_0751_202610_001.xml", "SF6111_0101_202610_001.xml", "SF6111_0751_202610_001.xml",
    ]
    w.route()
    versions_before = {
        p.relative_to(w.state_dir).as_posix(): p.read_bytes() for p in (w.state_dir / "deliveries").rglob("*.json")
    }

    again = w.settle(P)

    assert again.success, again.problems
    assert again.run_id != first.run_id
    assert out_names(w) == []  # no trigger, no file
    assert {p.name: p.read_bytes() for p in (w.state_dir / "outgoing").rglob("*.xml")} == made
    assert {
        p.relative_to(w.state_dir).as_posix(): p.read_bytes() for p in (w.state_dir / "deliveries").rglob("*.json")
    } == versions_before
    for key in ("sf6111/afsendelse", "sf2601/afsendelse"):
        assert materialization(again, key)["filer_sendt"].value == 0
    assert materialization(again, "sf6111/specifikationslister")["nye_versioner"].value == 0
    assert [r["name"] for r in store.sent_records() if not r["name"].startswith("SF6110K")] == sorted(
        n for n in sent if not n.endswith(".trigger")
    )


# --- 4. corrections -------------------------------------------------------------------------------


def test_a_corrected_register_resends_only_the_changed_municipality_with_the_next_loebenummer(tmp_path: Path) -> None:
    w, _ = settled_month(tmp_path)
    w.route()
    first_0751 = files_in(w, "kp", "SF6111")["SF6111_0751_202610_001.xml"]
    # UDK Pension corrects B's calculation: netto 4000 instead of 5000.
    write_register(w.register_dir, P, month_sager(P), month_beregning(P, b_netto=400_000))

    corrected = w.settle(P)

    assert corrected.success, corrected.problems
    assert out_names(w) == ["SF6111_0101_202610_002.xml", "SF6111_0101_202610_002.xml.trigger"]
    assert materialization(corrected, "sf6111/afsendelse")["filer_sendt"].value == 1
    assert materialization(corrected, "sf2601/afsendelse")["filer_sendt"].value == 0
    w.route()
    kp = files_in(w, "kp", "SF6111")
    assert sorted(kp) == [
        "SF6111_0101_202610_001.xml", "SF6111_0101_202610_002.xml", "SF6111_0751_202610_001.xml",
    ]
    assert kp["SF6111_0751_202610_001.xml"] == first_0751
    header, rows = decode_sf6111(kp["SF6111_0101_202610_002.xml"])
    assert header["loebenummer"] == 2
    assert (header["antal_afregnet"], header["antal_afvist"], header["samlet_afregnet_oere"]) == (2, 4, 400_000)
    # netto 4000: PLEJ 3000 settled, rest 1000: neither TILB 2500 nor MAD 1500 fits.
    assert rows.filter(pl.col("cpr") == B).select("anmodning_id", "afregnet_oere", "kode").rows() == [
        ("KBH-B1", 300_000, None), ("KBH-B2", 0, "A03"), ("KBH-B3", 0, "A03"),
    ]
    assert sorted(files_in(w, "ky", "SF2601")) == ["SF2601_0751_202610_001.xml"]  # B is not administered

    # The state store keeps every version sent, with its trigger, and after an intake pass their receipts.
    store = w.store()
    versions = store.read_json(f"deliveries/SF6111/{P}/0101.json")["versions"]
    assert [(v["loebenummer"], v["name"]) for v in versions] == [
        (1, "SF6111_0101_202610_001.xml"), (2, "SF6111_0101_202610_002.xml"),
    ]
    assert versions[0]["content_sha256"] != versions[1]["content_sha256"]
    assert len(store.read_json(f"deliveries/SF6111/{P}/0751.json")["versions"]) == 1
    intake = w.intake()
    assert intake.success, intake.problems
    for name in ("SF6111_0101_202610_001.xml", "SF6111_0101_202610_002.xml"):
        assert store.read(f"sent/{name}/data") == kp[name]
        assert store.exists(f"sent/{name}/trigger.xml")
        assert store.exists(f"sent/{name}/receipt.sftpreceipt")
        record = store.sent_record(name)
        assert (record["status"], record["kind"], record["recipients"]) == ("acknowledged", "SF6111", ["kp"])
    assert all(r["status"] == "acknowledged" for r in store.sent_records())


def test_a_late_instruction_received_before_the_cutoff_blocks_the_period_then_corrects_it(tmp_path: Path) -> None:
    w, _ = settled_month(tmp_path)
    w.route()
    late = "SF6110_0751_20261012090000.xml"
    late_file = request_file("0751", [opret("AAR-E2", E, "MAD", "600.00")])
    w.deliver(late, late_file, received=copenhagen(2026, 10, 12, 9, 0))
    # An instruction for the next period, received after P's cut-off, waits too but does not block P.
    w.deliver(
        "SF6110_0101_20261020090000.xml",
        request_file("0101", [opret("KBH-B4", B, "MAD", "100.00", fra="2026-11")]),
        received=copenhagen(2026, 10, 20, 9, 0),
    )

    refused = w.settle(P)

    assert not refused.success
    waiting = [p for p in refused.problems if "1 SF6110-filer modtaget før fristen for 2026-10" in p]
    assert waiting and "venter stadig i IN/" in waiting[0], refused.problems
    assert out_names(w) == []

    assert w.intake().success
    w.route()
    corrected = w.settle(P)
    assert corrected.success, corrected.problems
    assert [n for n in out_names(w) if not n.endswith(".trigger")] == ["SF6111_0751_202610_002.xml"]
    w.route()
    header, rows = decode_sf6111((w.inbox("kp") / "SF6111_0751_202610_002.xml").read_bytes())
    assert header["loebenummer"] == 2 and header["samlet_afregnet_oere"] == 390_000
    assert rows["anmodning_id"].to_list() == ["AAR-A1", "AAR-E1", "AAR-E2"]
    # KBH-B4 starts in 2026-11: 0101's file for P is unchanged and not sent again.
    assert w.in_names("kp", "SF6111_0101_*.xml") == ["SF6111_0101_202610_001.xml"]


def test_with_kept_deliveries_processed_files_in_in_do_not_block_the_period(tmp_path: Path) -> None:
    w = new_world(tmp_path)
    w._defs = build_definitions(w.resources() | {"state": StateResource(url=str(w.state_dir), keep_deliveries=True)})
    take_in_month(w)
    assert len(w.in_names("udk-pension", "SF6110_*.metadata")) == len(MONTH_FILES)  # kept, and decided

    settled = w.settle(P)
    assert settled.success, settled.problems

    late = "SF6110_0751_20261012090000.xml"
    w.deliver(late, request_file("0751", [opret("AAR-E2", E, "MAD", "600.00")]), received=copenhagen(2026, 10, 12, 9, 0))
    refused = w.settle(P)
    assert not refused.success
    assert any("1 SF6110-filer modtaget før fristen" in p for p in refused.problems), refused.problems


# --- 5. readiness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["pensionssager", "pensionsberegning"])
def test_a_register_without_the_period_stops_settlement_naming_the_table(tmp_path: Path, table: str) -> None:
    w = new_world(tmp_path)
    take_in_month(w)
    (w.register_dir / table / f"{P}.parquet").unlink()

    if table == "pensionssager":
        # Without its snapshot P is no period of the register: refused before any run is made.
        with pytest.raises(ValueError, match=f"{P} er ikke en periode i registeret .*pensionssager/{P}.parquet"):
            w.settle(P)
        assert w.instance.get_runs(filters=dg.RunsFilter(job_name=JOB)) == []
    else:
        outcome = w.settle(P)
        assert not outcome.success
        assert any(table in p and P in p for p in outcome.problems), outcome.problems
    assert out_names(w) == [] and settlement_sent(w) == []


def test_a_register_that_breaks_its_contract_stops_the_period_and_nothing_is_sent(tmp_path: Path) -> None:
    w = new_world(tmp_path)
    take_in_month(w)
    broken = month_beregning(P)
    broken[1] = broken[1] | {"netto_oere": broken[1]["netto_oere"] + 1}  # B: netto ≠ brutto − skat
    write_register(w.register_dir, P, month_sager(P), broken)

    outcome = w.settle(P)

    assert not outcome.success
    assert outcome.problems == ["kontrollen pensionsberegning_kontrakt fejlede"]
    check = check_evaluations(outcome)["pensionsberegning_kontrakt"]
    assert check.metadata["failure_count"].value == 1
    assert out_names(w) == []
    assert settlement_sent(w) == [] and not (w.state_dir / "deliveries").exists()
    text = event_text(w.instance, outcome.run_id)
    assert [cpr for cpr in EVERYONE if cpr in text] == []


# --- 2. backfill ----------------------------------------------------------------------------------

BACKFILL = ("2026-08", "2026-09", "2026-10")
BACKFILL_KOMMUNER = ["0101", "0751", "0461"]


def backfill_register(register_dir: Path) -> None:
    """A generated register in which every tenth case is administered by its own municipality,
    so that SF2601 has volume too."""
    generate_register(register_dir, list(BACKFILL), persons=400, seed=5)
    for periode in BACKFILL:
        path = register_dir / "pensionssager" / f"{periode}.parquet"
        administered = pl.col("cpr").str.slice(9, 1) == "7"
        pl.read_parquet(path).with_columns(
            under_administration=pl.col("under_administration") | administered,
            udbetaling_til_kommune=pl.col("udbetaling_til_kommune") | administered,
            administrationskommune=pl.when(administered).then("bopaelskommune").otherwise("administrationskommune"),
        ).write_parquet(path)


def backfill_rounds(register_dir: Path) -> list[tuple[dt.datetime, dict[str, bytes]]]:
    """Per period, the files received before its cut-off: new requests each month, and in the
    later months changes and stops of earlier ones."""
    sager = pl.read_parquet(register_dir / "pensionssager" / f"{BACKFILL[0]}.parquet")
    rounds = []
    for i, periode in enumerate(BACKFILL):
        received = copenhagen(int(periode[:4]), int(periode[5:]), 3 + i, 10, 0)
        files = generate_request_files(
            sager, instructions=40, fra_periode=periode, seed=i + 1, kommuner=BACKFILL_KOMMUNER, dannet=received
        )
        rounds.append((received, files))
    first = {name: decode_request_file(data).instructions for name, data in rounds[0][1].items()}
    name_0101 = next(n for n in first if n.startswith("SF6110_0101_"))
    own = first[name_0101].sort("anmodning_id")
    picked = [own.row(i, named=True) for i in range(4)]
    changes = [
        aendr(picked[0]["anmodning_id"], picked[0]["cpr"], "HUSL", "4990.00", fra=BACKFILL[1]),
        ophoer(picked[1]["anmodning_id"], picked[1]["cpr"], fra=BACKFILL[1]),
        aendr(picked[2]["anmodning_id"], picked[2]["cpr"], "BRUG", "75.50", fra=BACKFILL[2]),
        ophoer(picked[3]["anmodning_id"], picked[3]["cpr"], fra=BACKFILL[2]),
    ]
    received = copenhagen(2026, 9, 8, 12, 0)
    rounds[1][1][f"SF6110_0101_{received:%Y%m%d%H%M%S}.xml"] = request_file("0101", changes)
    return rounds


def deliver_round(w: World, received: dt.datetime, files: dict[str, bytes]) -> None:
    for name, data in sorted(files.items()):
        w.deliver(name, data, received=received)


def sent_files(w: World) -> dict[str, bytes]:
    return {**files_in(w, "kp", "SF6111"), **files_in(w, "ky", "SF2601")}


def test_a_backfill_over_three_periods_is_one_run_and_equals_the_on_time_runs(tmp_path: Path) -> None:
    on_time = new_world(tmp_path / "on_time")
    backfill_register(on_time.register_dir)
    rounds = backfill_rounds(on_time.register_dir)
    on_time_outcomes = {}
    for periode, (received, files) in zip(BACKFILL, rounds):
        deliver_round(on_time, received, files)
        assert on_time.intake().success
        outcome = on_time.settle(periode)
        assert outcome.success, outcome.problems
        on_time_outcomes[periode] = outcome
        on_time.route()

    late = new_world(tmp_path / "backfill")
    backfill_register(late.register_dir)
    for received, files in rounds:
        deliver_round(late, received, files)
    assert late.intake().success
    outcome = late.settle(BACKFILL[0], BACKFILL[-1])
    assert outcome.success, outcome.problems
    late.route()

    runs = late.instance.get_runs(filters=dg.RunsFilter(job_name=JOB))
    assert [r.run_id for r in runs] == [outcome.run_id]
    assert (runs[0].tags[RANGE_START_TAG], runs[0].tags[RANGE_END_TAG]) == (BACKFILL[0], BACKFILL[-1])
    assert late.instance.get_materialized_partitions(dg.AssetKey(["sf6111", "afsendelse"])) == set(BACKFILL)

    expected = sent_files(on_time)
    assert {n.split("_")[2] for n in expected} == {p.replace("-", "") for p in BACKFILL}
    assert any(n.startswith("SF2601_") for n in expected)
    assert sent_files(late) == expected  # the same names, byte for byte
    # Each period's own figures on its own materialization, equal to its on-time run's.
    for periode, on_time_outcome in on_time_outcomes.items():
        for key in ("settlement/afregning", "sf6111/specifikationslister", "sf2601/udbetalinger", "register/pensionssager"):
            on_time_figures = materialization(on_time_outcome, key)
            backfill_figures = materialization(outcome, key, periode)
            assert backfill_figures.keys() == on_time_figures.keys(), (periode, key)
            for name, value in on_time_figures.items():
                if name not in ("nye_versioner", "uaendrede_filer", "path"):
                    assert backfill_figures[name] == value, (periode, key, name)
        # and its own check results, the same as the on-time run's
        assert BLOCKING <= set(period_checks(outcome, periode)), periode
        assert period_checks(outcome, periode) == period_checks(on_time_outcome, periode), periode
    assert len({materialization(outcome, "settlement/afregning", p)["anmodninger"].value for p in BACKFILL}) > 1


# --- `pensionstraek settle` -----------------------------------------------------------------------


def test_pensionstraek_settle_runs_one_period_or_one_run_over_a_range(tmp_path: Path, monkeypatch, capsys) -> None:
    w = new_world(tmp_path / "world")
    take_in_month(w)
    write_register(w.register_dir, "2026-11", month_sager("2026-11"), month_beregning("2026-11"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setattr("pipelines.definitions.defs", w.defs)  # the command's code location, on this world

    assert cli.main(["settle", P]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"afregning {P} (run ")
    assert "8 aktive anmodninger, 5 afregnet (8800.00 kr), 3 afvist; SF6111 sendt: 2, SF2601 sendt: 1" in line

    assert cli.main(["settle", P, "--to", "2026-11"]) == 0
    lines = capsys.readouterr().out.rstrip().splitlines()
    # One line per period with its own figures, then the run's total. P again sends nothing;
    # 2026-11 has E's AENDR to MAD 2500 and KBH-A1 has ended (TilPeriode P).
    assert [line.split(":")[0] for line in lines[:2]] == [f"  {P}", "  2026-11"]
    assert lines[0] == f"  {P}: 8 aktive anmodninger, 5 afregnet (8800.00 kr), 3 afvist; SF6111 sendt: 0, SF2601 sendt: 0"
    assert lines[1].startswith("  2026-11: 7 aktive anmodninger") and lines[1].endswith("SF6111 sendt: 2, SF2601 sendt: 1")
    line = lines[-1]
    assert len(lines) == 3 and line.startswith(f"afregning {P}..2026-11 (run ")
    assert " i alt: 15 aktive anmodninger" in line
    assert "SF6111 sendt: 2, SF2601 sendt: 1" in line
    assert sorted(n for n in out_names(w) if not n.endswith(".trigger")) == [
        "SF2601_0751_202610_001.xml", "SF2601_0751_202611_001.xml",
        "SF6111_0101_202610_001.xml", "SF6111_0101_202611_001.xml",
        "SF6111_0751_202610_001.xml", "SF6111_0751_202611_001.xml",
    ]

    instance = dg.DagsterInstance.get()  # the command's instance: every run it made shows there
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=JOB))
    assert len(runs) == 2
    assert runs[0].tags[RANGE_START_TAG] == P and runs[0].tags[RANGE_END_TAG] == "2026-11"
    assert runs[1].tags["dagster/partition"] == P

    # The periods are the register's (2026-09 … 2026-11 here), whatever today's date.
    assert instance.get_dynamic_partitions("periode") == [PREV, P, "2026-11"]
    assert cli.main(["settle", "2025-01"]) == 1
    err = capsys.readouterr().err
    assert "2025-01 er ikke en periode i registeret" in err and str(w.register_dir) in err
    assert cli.main(["settle", "2026-11", "--to", P]) == 1
    assert "går baglæns" in capsys.readouterr().err
    # The command's runs are the code location's runs of the job (the UI lists them under it).
    for run in runs:
        assert run.remote_job_origin.location_name == "pensionstraek"
        assert run.remote_job_origin.job_name == JOB
        assert run.job_code_origin.job_name == JOB
    # What the UI filters a job's runs (and the timeline) on: the repository label of the location.
    located = instance.get_runs(
        filters=dg.RunsFilter(job_name=JOB, tags={".dagster/repository": "__repository__@pensionstraek"})
    )
    assert [r.run_id for r in located] == [r.run_id for r in runs]
    instance.dispose()



# --- sends that did not go through ------------------------------------------------------------------

PARTNERS_TOML = """
[[partner]]
account = "kp"
sf6110_for = {kp}

[[partner]]
account = "ky"
sf2601_for = "*"
"""


def test_a_correction_that_never_went_out_is_not_sent_when_the_register_is_corrected_back(tmp_path: Path) -> None:
    partners = tmp_path / "partners.toml"
    partners.write_text(PARTNERS_TOML.format(kp='"*"'))
    w, _ = settled_month(tmp_path / "world", str(partners))
    w.route()
    write_register(w.register_dir, P, month_sager(P), month_beregning(P, b_netto=400_000))
    partners.write_text(PARTNERS_TOML.format(kp='["0751"]'))  # a partners file without 0101

    stopped = w.settle(P)

    assert not stopped.success
    assert any("kommune 0101" in p and "PENSIONSTRAEK_PARTNERS" in p for p in stopped.problems), stopped.problems
    assert out_names(w) == []
    # The partners file is mended, and UDK Pension takes its correction back: 0101 has that content.
    partners.write_text(PARTNERS_TOML.format(kp='"*"'))
    write_register(w.register_dir, P, month_sager(P), month_beregning(P))

    again = w.settle(P)

    assert again.success, again.problems
    assert out_names(w) == []
    assert materialization(again, "sf6111/afsendelse")["filer_sendt"].value == 0
    versions = w.store().read_json(f"deliveries/SF6111/{P}/0101.json")["versions"]
    assert [v["name"] for v in versions] == ["SF6111_0101_202610_001.xml"]
    assert check_evaluations(again)["filtotaler_stemmer"].metadata["filer"].value == 2


def test_a_send_that_failed_half_way_does_not_block_the_next_correction(tmp_path: Path) -> None:
    """operations.md: after a failure the next run completes the work without duplicating it. A
    file whose send started may have reached the platform: new content gets the next number."""
    w, _ = settled_month(tmp_path)
    w.route()
    write_register(w.register_dir, P, month_sager(P), month_beregning(P, b_netto=400_000))
    blocked = w.exchange_root / "udk-pension" / "OUT" / "SF6111_0101_202610_002.xml"
    blocked.mkdir()  # a folder where the file should go: the platform refuses the write

    failed = w.settle(P)

    assert not failed.success
    assert any(p.startswith("sf6111/afsendelse: ") for p in failed.problems), failed.problems
    blocked.rmdir()
    # Corrected again before the next run: netto 2000, so PLEJ 3000 and TILB 2500 fail, MAD 1500 fits.
    write_register(w.register_dir, P, month_sager(P), month_beregning(P, b_netto=200_000))

    retried = w.settle(P)

    assert retried.success, retried.problems
    assert [n for n in out_names(w) if not n.endswith(".trigger")] == ["SF6111_0101_202610_003.xml"]
    w.route()
    header, rows = decode_sf6111((w.inbox("kp") / "SF6111_0101_202610_003.xml").read_bytes())
    assert header["loebenummer"] == 3
    assert rows.filter(pl.col("cpr") == B).select("anmodning_id", "kode").rows() == [
        ("KBH-B1", "A03"), ("KBH-B2", "A03"), ("KBH-B3", None),
    ]
    assert w.settle(P).success and out_names(w) == []  # and it goes out once


def test_a_sent_file_whose_receipt_reports_an_error_fails_the_receipt_check(tmp_path: Path) -> None:
    partners = tmp_path / "partners.toml"
    partners.write_text(PARTNERS_TOML.replace('"ky"', '"ky-gammel"').format(kp='"*"'))  # no such account
    w, _ = settled_month(tmp_path / "world", str(partners))
    routed = {o.name: o for o in w.route()}
    assert routed["SF2601_0751_202610_001.xml"].error_code == 104  # UNKNOWN_RECIPIENT
    assert w.intake().success  # records the technical receipts

    record = w.store().sent_record("SF2601_0751_202610_001.xml")
    assert record["status"] == "failed" and "104" in record["receipt_errors"][0]
    assert w.store().sent_record("SF6111_0101_202610_001.xml")["status"] == "acknowledged"
    again = w.settle(P)
    assert again.success, again.problems  # a warning for the operator, not a stop
    checks = check_evaluations(again)
    assert not checks["sf2601_kvitteret"].passed
    assert checks["sf2601_kvitteret"].severity == dg.AssetCheckSeverity.WARN
    assert checks["sf2601_kvitteret"].metadata["fejlet"].value == 1
    assert "UNKNOWN_RECIPIENT" in checks["sf2601_kvitteret"].metadata["detaljer"].value
    assert checks["sf6111_kvitteret"].passed and checks["sf6111_kvitteret"].metadata["filer"].value == 2


def test_a_period_frame_read_again_is_decoded_again_only_when_its_bytes_changed(tmp_path: Path) -> None:
    from assets.settlement import frame_path, read_period_frame
    from pipelines.state import StateStore

    store = StateStore(str(tmp_path / "state"))
    first = pl.DataFrame({"kommunekode": ["0101", "0147"], "afregnet_oere": [1, 2]})
    store.write_frame(frame_path(P, "afregning"), first)
    read = read_period_frame(store, P, "afregning")
    assert read.equals(first) and read_period_frame(store, P, "afregning") is read
    # Written again with other rows (a re-run after a correction): the new rows, never the old.
    second = first.with_columns(afregnet_oere=pl.Series([1, 3]))
    store.write_frame(frame_path(P, "afregning"), second)
    assert read_period_frame(store, P, "afregning").equals(second)
    with pytest.raises(dg.Failure, match="ikke lavet endnu"):
        read_period_frame(store, P, "aktive_anmodninger")
