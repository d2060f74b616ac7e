"""`pensionstraek explain` (operations.md "The audit trail: explain"): the auditor's question
answered from the state store alone, after later runs and corrections.

The world is test_settlement_flow's hand-made month (P = 2026-10) with two more instructions from
0101 before the cut-off (an AENDR of KBH-B3 to 1200.00, an OPHOER of the unknown KBH-X9: U08), the
settlement of P (Loebenummer 1 to 0101 and 0751), then UDK Pension's corrected calculation for B
(netto 5000 -> 4000) and the settlement again: 0101 gets Loebenummer 2, 0751 nothing new.

B's walk (PLEJ 3000, TILB 2500, MAD 1200): with netto 5000, 3000 settled, 2500 A03, 1200 fits;
with netto 4000, 3000 settled, 2500 A03, 1200 A03."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pipelines import cli
from pipelines.explain import CPR_SECTIONS, explain
from pipelines.state import StateStore
from tests.test_settlement_flow import (
    A,
    B,
    P,
    aendr,
    month_beregning,
    month_sager,
    new_world,
    ophoer,
    take_in_month,
    write_register,
)
from tests.world import copenhagen, request_file

CORRECTION_FILE = "SF6110_0101_20260912100000.xml"


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> StateStore:
    root = tmp_path_factory.mktemp("explain")
    w = new_world(root / "world")
    take_in_month(w)
    w.deliver(
        CORRECTION_FILE,
        request_file("0101", [aendr("KBH-B3", B, "MAD", "1200.00", fra=P), ophoer("KBH-X9", B, fra=P)]),
        received=copenhagen(2026, 9, 12, 10, 0),
    )
    for _ in range(2):
        assert w.intake().success
        w.route()
    assert w.settle(P).success
    w.route()
    assert w.intake().success  # the technical receipts of Loebenummer 1
    write_register(w.register_dir, P, month_sager(P), month_beregning(P, b_netto=400_000))
    assert w.settle(P).success
    w.route()
    assert w.intake().success  # the receipt of Loebenummer 2
    assert w.settle(P).success  # a later run with nothing new changes no answer
    # The state store alone: no register, no exchange, no Dagster instance.
    only_state = root / "only-state"
    shutil.copytree(w.state_dir, only_state)
    shutil.rmtree(root / "world")
    return StateStore(str(only_state))


def request(answer: dict, anmodning_id: str) -> dict:
    (found,) = [a for a in answer["anmodninger"] if a["anmodning_id"] == anmodning_id]
    return found


def test_every_request_of_the_municipality_that_concerns_p_is_explained(state):
    answer = explain(state, "0101", P)
    assert (answer["kommunekode"], answer["periode"]) == ("0101", P)
    # X9 was never registered (U08) but its OPHOER was judged for P.
    assert [a["anmodning_id"] for a in answer["anmodninger"]] == [
        "KBH-A1", "KBH-B1", "KBH-B2", "KBH-B3", "KBH-C1", "KBH-D1", "KBH-X9",
    ]
    assert "opslag" not in answer and "beskeder" not in answer


def test_a_corrected_request_tells_its_history_the_version_in_force_and_both_deliveries(state):
    b3 = request(explain(state, "0101", P, anmodning_id="KBH-B3"), "KBH-B3")
    assert b3["cpr"] == B
    assert [(h["filnavn"], h["modtaget"], h["handling"], h["beloeb"], h["status"], h["kode"]) for h in b3["historik"]] == [
        ("SF6110_0101_20260901100000.xml", "2026-09-01T10:00:00+02:00", "OPRET", "1500.00", "MODTAGET", None),
        (CORRECTION_FILE, "2026-09-12T10:00:00+02:00", "AENDR", "1200.00", "MODTAGET", None),
    ]
    assert all(re.fullmatch(r"[0-9a-f-]{36}", h["file_transfer_uuid"]) for h in b3["historik"])
    assert b3["i_kraft"] == {"handling": "AENDR", "traekart": "MAD", "beloeb": "1200.00"}
    # What the delivery in force said: netto 4000, the 1200 no longer fits after PLEJ 3000.
    assert b3["afregning"] == {
        "status": "AFVIST",
        "kode": "A03",
        "afregnet_beloeb": "0.00",
        "netto": "4000.00",
        "rækkefølge": [
            {"anmodning_id": "KBH-B1", "kommunekode": "0101", "beloeb": "3000.00", "status": "AFREGNET"},
            {"anmodning_id": "KBH-B2", "kommunekode": "0101", "beloeb": "2500.00", "status": "AFVIST"},
            {"anmodning_id": "KBH-B3", "kommunekode": "0101", "beloeb": "1200.00", "status": "AFVIST"},
        ],
    }
    delivery = b3["sf6111"]
    assert (delivery["filnavn"], delivery["loebenummer"], delivery["kvittering"]) == (
        "SF6111_0101_202610_002.xml", 2, "SUCCESS",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", delivery["sendt"])
    # Loebenummer 1 said otherwise: with netto 5000 the 1200 was settled.
    assert [(v["loebenummer"], v["status"], v["kode"], v["afregnet_beloeb"], v["kvittering"]) for v in b3["sf6111_versioner"]] == [
        (1, "AFREGNET", None, "1200.00", "SUCCESS"),
        (2, "AFVIST", "A03", "0.00", "SUCCESS"),
    ]


def test_the_walk_names_the_other_municipalitys_request_of_the_same_citizen(state):
    a1 = request(explain(state, "0101", P), "KBH-A1")
    # A: 0751's PLEJ (priority 2) is walked before 0101's MAD (priority 4); netto 10623.45.
    assert a1["afregning"]["netto"] == "10623.45"
    assert a1["afregning"]["rækkefølge"] == [
        {"anmodning_id": "AAR-A1", "kommunekode": "0751", "beloeb": "1500.00", "status": "AFREGNET"},
        {"anmodning_id": "KBH-A1", "kommunekode": "0101", "beloeb": "1000.00", "status": "AFREGNET"},
    ]
    assert a1["cpr"] == A and a1["afregning"]["afregnet_beloeb"] == "1000.00"


def test_a_rejected_instruction_and_a_stopped_request_are_explained_without_a_settlement(state):
    x9 = request(explain(state, "0101", P), "KBH-X9")
    assert [(h["handling"], h["beloeb"], h["status"], h["kode"]) for h in x9["historik"]] == [("OPHOER", None, "AFVIST", "U08")]
    assert (x9["i_kraft"], x9["afregning"], x9["sf6111"], x9["sf6111_versioner"][0]["status"]) == (None, None, None, None)
    h1 = request(explain(state, "0851", P), "AAL-H1")
    assert [h["handling"] for h in h1["historik"]] == ["OPRET", "OPHOER"]
    assert h1["i_kraft"] == {"handling": "OPHOER", "traekart": None, "beloeb": None}
    assert (h1["afregning"], h1["sf6111"], h1["sf6111_versioner"]) == (None, None, [])
    assert explain(state, "0461", P)["anmodninger"] == []  # ended in 2026-09: nothing of P


def test_an_unchanged_municipality_keeps_its_first_delivery(state):
    e1 = request(explain(state, "0751", P), "AAR-E1")
    assert [(h["handling"], h["beloeb"]) for h in e1["historik"]] == [("OPRET", "2000.00"), ("AENDR", "1800.00"), ("AENDR", "2500.00")]
    assert e1["i_kraft"] == {"handling": "AENDR", "traekart": "PLEJ", "beloeb": "1800.00"}  # the 2026-11 AENDR is not yet in force
    assert (e1["afregning"]["status"], e1["afregning"]["afregnet_beloeb"], e1["afregning"]["netto"]) == ("AFREGNET", "1800.00", "9000.00")
    assert (e1["sf6111"]["filnavn"], e1["sf6111"]["loebenummer"]) == ("SF6111_0751_202610_001.xml", 1)


def test_cpr_narrows_to_the_citizen_and_adds_the_look_up_and_message_lists(state):
    answer = explain(state, "0101", P, cpr=B)
    assert [a["anmodning_id"] for a in answer["anmodninger"]] == ["KBH-B1", "KBH-B2", "KBH-B3", "KBH-X9"]
    assert [key for key, _ in CPR_SECTIONS] == ["opslag", "beskeder"]
    assert answer["opslag"] == [] and answer["beskeder"] == []


SPEC_REQUEST_KEYS = {"anmodning_id", "cpr", "historik", "i_kraft", "afregning", "sf6111"}
SPEC_HISTORIK_KEYS = {"filnavn", "file_transfer_uuid", "modtaget", "handling", "beloeb", "status", "kode"}
AMOUNT = re.compile(r"[0-9]+\.[0-9]{2}")


def test_the_json_has_the_spec_keys_amounts_as_kroner_text_and_times_with_offset(state, monkeypatch, capsys):
    monkeypatch.setenv("PENSIONSTRAEK_STATE_URL", state.root)
    assert cli.main(["explain", "0101", P, "--json", "--cpr", B]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer == json.loads(json.dumps(explain(state, "0101", P, cpr=B)))
    assert set(answer) == {"kommunekode", "periode", "anmodninger", "opslag", "beskeder"}
    for a in answer["anmodninger"]:
        assert SPEC_REQUEST_KEYS <= set(a)  # plus sf6111_versioner (docs/decisions.md)
        for h in a["historik"]:
            assert set(h) == SPEC_HISTORIK_KEYS
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", h["modtaget"])
            assert h["beloeb"] is None or AMOUNT.fullmatch(h["beloeb"])
        if a["i_kraft"] is not None:
            assert set(a["i_kraft"]) == {"handling", "traekart", "beloeb"}
        if a["afregning"] is not None:
            assert set(a["afregning"]) == {"status", "kode", "afregnet_beloeb", "netto", "rækkefølge"}
            assert AMOUNT.fullmatch(a["afregning"]["afregnet_beloeb"]) and AMOUNT.fullmatch(a["afregning"]["netto"])
            for w in a["afregning"]["rækkefølge"]:
                assert set(w) == {"anmodning_id", "kommunekode", "beloeb", "status"} and AMOUNT.fullmatch(w["beloeb"])
        if a["sf6111"] is not None:
            assert set(a["sf6111"]) == {"filnavn", "loebenummer", "sendt", "kvittering"}
            assert isinstance(a["sf6111"]["loebenummer"], int)


def test_the_text_reads_for_a_person(state, monkeypatch, capsys):
    monkeypatch.setenv("PENSIONSTRAEK_STATE_URL", state.root)
    assert cli.main(["explain", "0101", P, "--anmodning", "KBH-B3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"Kommune 0101, periode {P}: 1 anmodning(er)")
    assert f"Anmodning KBH-B3  CPR {B}" in text
    assert "2026-09-12T10:00:00+02:00  AENDR 1200.00 kr  MODTAGET  " + CORRECTION_FILE in text
    assert f"I kraft i {P}: AENDR MAD 1200.00 kr" in text
    assert "Afregning: AFVIST A03, afregnet 0.00 kr, netto 4000.00 kr" in text
    assert "3. 0101 KBH-B3 1200.00 kr AFVIST  <- denne" in text
    assert "SF6111: SF6111_0101_202610_002.xml (Loebenummer 2)" in text and "kvittering SUCCESS" in text
    assert "version 1: SF6111_0101_202610_001.xml" in text and ": AFREGNET 1200.00 kr" in text


@pytest.mark.parametrize(
    "args, named",
    [(["101", P], "'101'"), (["0101", "2026-13"], "'2026-13'")],
)
def test_a_wrong_question_fails_in_one_danish_line(state, monkeypatch, capsys, args, named):
    monkeypatch.setenv("PENSIONSTRAEK_STATE_URL", state.root)
    assert cli.main(["explain", *args]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and named in err[0] and err[0].startswith("pensionstraek: ")


def test_a_missing_state_store_is_named_and_not_made(tmp_path: Path, monkeypatch, capsys):
    missing = tmp_path / "no-state"
    monkeypatch.setenv("PENSIONSTRAEK_STATE_URL", str(missing))
    assert cli.main(["explain", "0101", P]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "PENSIONSTRAEK_STATE_URL" in line and "findes ikke" in line
    assert not missing.exists()


def test_explain_needs_no_dagster(state):
    """The auditor's tool reads files: it runs where only the state store is (no instance, and
    none of Dagster's start-up cost)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; from pipelines import cli; "
        f"rc = cli.main(['explain', '0101', '{P}', '--json']); "
        "print(rc, 'dagster' in sys.modules, file=sys.stderr)"
    )
    env = {**os.environ, "PENSIONSTRAEK_STATE_URL": state.root}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stderr.split()[-2:] == ["0", "False"], done.stderr
    assert json.loads(done.stdout)["anmodninger"]
