"""`pensionstraek status` (operations.md "The command line"): what waits, what is quarantined, what
went out without a SUCCESS receipt, the newest periods, the next scheduled settlement.

The world: test_settlement_flow's month settled (P = 2026-10) and routed with a delivery from an
account UDK does not know (quarantined by intake, which also records the receipts of P's three
files); then B's corrected calculation and P again: SF6111_0101 Loebenummer 2 is routed and its
technical receipt waits in UDK's IN/, next to a new SF6110 delivery and a stray metadata file."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from pipelines import cli
from pipelines.calendar import TZ, cutoff
from pipelines.schedules import next_due
from tests.test_settlement_flow import B, P, PREV, month_beregning, month_sager, opret, settled_month, write_register
from tests.world import copenhagen, request_file

CORRECTION = "SF6111_0101_202610_002.xml"
WAITING = "SF6110_0101_20261020090000.xml"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w, _ = settled_month(tmp_path_factory.mktemp("status"))
    stranger = w.exchange_root / "fremmed"
    for folder in ("IN", "OUT"):
        (stranger / folder).mkdir(parents=True)
    w.send("SF6110_0101_20261001080000.xml", request_file("0101", []), sender="fremmed")
    w.route()  # delivered by the platform (the sender is no partner of UDK's: quarantine), P's files too
    assert w.intake().success
    write_register(w.register_dir, P, month_sager(P), month_beregning(P, b_netto=400_000))
    assert w.settle(P).success
    w.route()  # Loebenummer 2 to kp, its receipt to UDK's IN/
    w.deliver(WAITING, request_file("0101", [opret("KBH-B4", B, "MAD", "100.00", fra="2026-11")]),
              received=copenhagen(2026, 10, 20, 9, 0))
    (w.inbox("udk-pension") / "rest.xml.metadata").write_bytes(b"<FileMetadata/>")
    return w


@pytest.fixture()
def env(world, monkeypatch):
    monkeypatch.setenv("PENSIONSTRAEK_EXCHANGE_URL", str(world.exchange_root / "udk-pension"))
    monkeypatch.setenv("PENSIONSTRAEK_REGISTER_URL", str(world.register_dir))
    monkeypatch.setenv("PENSIONSTRAEK_STATE_URL", str(world.state_dir))
    return world


def status_json(capsys) -> dict:
    assert cli.main(["status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_shows_what_waits_what_is_quarantined_and_what_lacks_a_receipt(env, capsys):
    status = status_json(capsys)
    box = status["indbakke"]
    assert [(d["filnavn"], d["behandlet"]) for d in box["leverancer"]] == [(WAITING, False)]
    assert box["leverancer"][0]["modtaget"] == "2026-10-20T09:00:00+02:00"
    assert box["kvitteringer"] == [f"{CORRECTION}.sftpreceipt"]
    assert box["andet"] == ["rest.xml.metadata"]
    (quarantined,) = status["karantaene"]
    assert quarantined["filnavn"] == "SF6110_0101_20261001080000.xml" and "fremmed" in quarantined["reason"]
    # Sent, its receipt not yet recorded (it waits in IN/ for the next intake).
    assert [(m["filnavn"], m["type"], m["status"]) for m in status["uden_kvittering"]] == [(CORRECTION, "SF6111", "sent")]
    assert status["problemer"] == []


def test_status_shows_the_newest_periods_and_the_next_settlement(env, capsys):
    status = status_json(capsys)
    assert [(p["periode"], p["i_registeret"], p["afregnet"], p["filer"], p["sendt"], p["kvitteret"]) for p in status["perioder"]] == [
        (P, True, True, 3, 3, 2),
        (PREV, True, False, 0, 0, 0),
    ]
    assert status["perioder"][0]["frist"] == cutoff(P).isoformat()
    periode, day = next_due(dt.datetime.now(TZ).date())
    assert status["naeste_afregning"] == {"periode": periode, "dato": day.isoformat()}


def test_the_text_is_one_screen_and_follows_the_receipts(env, capsys):
    assert cli.main(["status"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert len(lines) < 40
    assert "IN/: 1 leverance(r) venter, 1 teknisk(e) kvittering(er), 1 andet" in text
    assert f"  venter: {WAITING} (modtaget 2026-10-20T09:00:00+02:00)" in lines
    assert "Karantæne: 1 fil(er)" in text and "Sendt uden SUCCESS-kvittering: 1" in text
    assert f"  {CORRECTION} (SF6111, sent, sendt " in text
    assert f"  {P}: afregnet, 3 af 3 fil(er) sendt, 2 kvitteret" in text
    assert f"  {PREV}: ikke afregnet (i registeret" in text
    assert lines[-1].startswith("Næste planlagte afregning: ")
    assert "Traceback" not in text and B not in text  # no CPR on the operator's screen

    assert env.intake().success  # records the receipts, answers the waiting file
    status = status_json(capsys)
    assert status["perioder"][0]["kvitteret"] == 3
    assert CORRECTION not in {m["filnavn"] for m in status["uden_kvittering"]}
    assert status["indbakke"]["leverancer"] == [] and status["indbakke"]["kvitteringer"] == []


def test_an_unreachable_exchange_is_shown_and_the_rest_still_read(env, monkeypatch, capsys):
    monkeypatch.setenv("PENSIONSTRAEK_EXCHANGE_URL", str(env.root / "no-such-account"))
    status = status_json(capsys)
    assert status["indbakke"] is None
    (problem,) = status["problemer"]
    assert "PENSIONSTRAEK_EXCHANGE_URL" in problem and "no-such-account" in problem
    assert not (env.root / "no-such-account").exists()  # status only looks
    assert status["perioder"][0]["periode"] == P
