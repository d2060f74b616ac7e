"""Three consecutive snapshots through `haendelser` on a real RabbitMQ with the emulated
Beskedfordeler: every subscriber gets exactly the notices of sf1411-sf2610.md, UDK SAL exactly its
events, the transition from UDK SAL is taken in once, and no CPR reaches a log line or metadata."""

import datetime as dt
import json
import logging
import threading
from decimal import Decimal

import dagster as dg
import pika
import polars as pl
import pytest

from contracts import sf1411d, sf2610
from contracts.beskedkuvert import (
    TIP_OVERGANG_FOLKEPENSION,
    beskedid,
    kuvert_schema,
    make_haendelsesbesked,
    read_haendelsesbesked,
)
from contracts.register import PENSIONSSAGER_SCHEMA
from pipelines import beskedfordeler
from pipelines.amqp import EXCHANGE
from pipelines.beskeder_cli import besked_rows, beskeder_for
from pipelines.runner import run_job
from pipelines.subscriptions import FJERN_KOMMUNE, TILFOEJ_KOMMUNE, TILFOEJ_PNR, opdater_vaerdiliste
from tests.registers import case_row
from tests.world import World

pytestmark = pytest.mark.rabbitmq

A, B, D, E, SAMLEVER, C = "0101501234", "0202502345", "0404504567", "0505501678", "0303503456", "0606502789"
X, Y = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
AGREEMENTS = {
    X: {
        "navn": "KP X",
        "user_system_uuid": "33333333-3333-4333-8333-333333333333",
        "services": ["SF1411_D"],
        "felter": ["Sagsstatus", "Bopaelskommune", "Tillaegsprocent"],
        "kommuner": ["0101"],
        "modtager": "kp-x",
    },
    Y: {
        "navn": "KP Y",
        "user_system_uuid": "44444444-4444-4444-8444-444444444444",
        "services": ["SF1411_D"],
        "felter": ["Tillaegsprocent"],
        "kommuner": "alle",
        "modtager": "kp-y",
    },
}


def snapshots() -> dict[str, list[dict]]:
    b = dict(pensionstype="TIP", samlevende=True, samlever_cpr=SAMLEVER)
    return {
        "2026-10": [case_row(A), case_row(B, **b), case_row(C, "0147"), case_row(E, pensionstype="TIP")],
        "2026-11": [
            case_row(A, tillaegsprocent=Decimal("50.00")),
            case_row(B, **b, doedsdato=dt.date(2026, 11, 3), sagsstatus="OPHOERT"),
            case_row(C, "0147"),
            case_row(D),
            case_row(E, pensionstype="TIP"),
        ],
        "2026-12": [
            case_row(A, "0147", tillaegsprocent=Decimal("50.00")),
            case_row(C, "0147"),
            case_row(D),
            case_row(E, pensionstype="FP"),
        ],
    }


def take_all(broker, queue: str) -> list[bytes]:
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    channel = connection.channel()
    bodies = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            break
        bodies.append(body)
        channel.basic_ack(method.delivery_tag)
    connection.close()
    return bodies


def publish_from_udk_sal(broker, cpr: str, fra: str) -> str:
    """What UDK SAL does: a TIP_OvergangFolkepension to udk-pension through the distributor."""
    data = make_haendelsesbesked(
        beskedtype=TIP_OVERGANG_FOLKEPENSION,
        modtager="udk-pension",
        cpr=cpr,
        periode=fra,
        forrige_periode="",
        payload=sf2610.overgang_payload(cpr, fra),
        dannet=dt.datetime.now(dt.timezone.utc),
        afsender="55555555-5555-4555-8555-555555555555",
    )
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    channel = connection.channel()
    channel.basic_publish(EXCHANGE, "", data, pika.BasicProperties(delivery_mode=2))
    # A valid envelope around an invalid payload: the distributor passes it on, the pipeline refuses it.
    bad = data.replace(f"<FraPeriode>{fra}</FraPeriode>".encode(), b"<FraPeriode>2026-13</FraPeriode>")
    channel.basic_publish(EXCHANGE, "", bad.replace(b"UUIDIdentifikator>", b"UUIDIdentifikator>", 1), pika.BasicProperties(delivery_mode=2))
    # Not an envelope at all: the distributor answers 40 and puts it nowhere.
    channel.basic_publish(EXCHANGE, "", b"<not-a-message/>", pika.BasicProperties(delivery_mode=2))
    connection.close()
    return read_haendelsesbesked(data).beskedid


def content(body: bytes) -> tuple:
    assert kuvert_schema().validate(pytest.importorskip("lxml.etree").fromstring(body))
    besked = read_haendelsesbesked(body)
    if besked.beskedtype == "SF1411_D":
        payload = sf1411d.read_payload(besked.payload)
        return (besked.beskedid, besked.modtager, payload["pnr"], payload["periode"], tuple(payload["aendringer"]), payload["omfattes_ikke_laengere"])
    payload = sf2610.read_payload(besked.payload)
    return (besked.beskedid, besked.modtager, besked.beskedtype, payload)


def test_three_snapshots_through_haendelser(rabbitmq, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    agreements = tmp_path / "aftaler.json"
    agreements.write_text(json.dumps(AGREEMENTS))
    monkeypatch.setenv("PENSIONSTRAEK_AGREEMENTS", str(agreements))
    monkeypatch.setenv("PENSIONSTRAEK_BESKEDFORDELER_URL", rabbitmq.url)
    world = World(root=tmp_path, instance=dg.DagsterInstance.ephemeral())
    for periode, rows in snapshots().items():
        (world.register_dir / "pensionssager").mkdir(exist_ok=True)
        pl.DataFrame(rows, schema=PENSIONSSAGER_SCHEMA).write_parquet(world.register_dir / "pensionssager" / f"{periode}.parquet")
    opdater_vaerdiliste(world.store(), X, [(TILFOEJ_KOMMUNE, "0101")])
    opdater_vaerdiliste(world.store(), Y, [(TILFOEJ_PNR, A)])

    stop = threading.Event()
    emulator = threading.Thread(target=beskedfordeler.run, args=(rabbitmq.url,), kwargs={"stop": stop}, daemon=True)
    emulator.start()
    try:
        metadata = {}
        for periode in ("2026-10", "2026-11"):
            outcome = run_job("haendelser", first_periode=periode, on=world.instance, definitions=world.defs)
            assert outcome.success, outcome.problems
            metadata[periode] = outcome.metadata("sf1411d/notifikationer")
        overgang_id = publish_from_udk_sal(rabbitmq, E, "2026-12")
        outcome = run_job("haendelser", first_periode="2026-12", on=world.instance, definitions=world.defs)
        assert outcome.success, outcome.problems
        # Running P again makes nothing new and publishes nothing again.
        assert run_job("haendelser", first_periode="2026-11", on=world.instance, definitions=world.defs).success
    finally:
        stop.set()
        emulator.join(timeout=30)

    assert metadata["2026-10"]["beskeder"] == 0  # the first snapshot makes none
    assert metadata["2026-11"]["status_leveret"] == 4 and metadata["2026-11"]["aftale KP X"] == 3

    got_x = sorted(content(b) for b in take_all(rabbitmq, "dueslag.kp-x"))
    got_y = sorted(content(b) for b in take_all(rabbitmq, "dueslag.kp-y"))
    got_sal = sorted((c[2], c[3]["pnr"], c[3].get("periode"), json.dumps(c[3], sort_keys=True)) for c in map(content, take_all(rabbitmq, "dueslag.udk-sal")))

    def notice(modtager, cpr, periode, forrige, aendringer, ophoer=False):
        return (beskedid("SF1411_D", modtager, cpr, periode, forrige), modtager, cpr, periode, tuple(aendringer), ophoer)

    assert got_x == sorted(
        [
            notice("kp-x", A, "2026-11", "2026-10", [("Tillaegsprocent", "100.00", "50.00")]),
            notice("kp-x", B, "2026-11", "2026-10", [("Sagsstatus", "AKTIV", "OPHOERT")]),
            notice("kp-x", D, "2026-11", "2026-10", [("Sagsstatus", None, "AKTIV"), ("Bopaelskommune", None, "0101"), ("Tillaegsprocent", None, "100.00")]),
            notice("kp-x", A, "2026-12", "2026-11", [], ophoer=True),
            notice("kp-x", B, "2026-12", "2026-11", [], ophoer=True),
        ]
    )
    assert got_y == [notice("kp-y", A, "2026-11", "2026-10", [("Tillaegsprocent", "100.00", "50.00")])]

    b_p2 = [c for c in case_row(B, pensionstype="TIP", samlevende=True, samlever_cpr=SAMLEVER, doedsdato=dt.date(2026, 11, 3), sagsstatus="OPHOERT").items()]
    all_columns = [
        (k, sf2610_text(v), None) for k, v in b_p2 if k not in ("cpr", "doedsdato") and v is not None
    ]
    expected_sal = [
        ("TIP_PensionAdvis", {"type": "TIP_PensionAdvis", "pnr": B, "doedsdato": "2026-11-03", "samlever_pnr": SAMLEVER}),
        ("TIP_PensionAfgoerelse", {"type": "TIP_PensionAfgoerelse", "pnr": B, "periode": "2026-11", "aendringer": [["sagsstatus", "AKTIV", "OPHOERT"]]}),
        ("TIP_PensionAfgoerelse", {"type": "TIP_PensionAfgoerelse", "pnr": B, "periode": "2026-12", "aendringer": [list(a) for a in all_columns]}),
        ("TIP_PensionAfgoerelse", {"type": "TIP_PensionAfgoerelse", "pnr": E, "periode": "2026-12", "aendringer": [["pensionstype", "TIP", "FP"]]}),
    ]
    assert got_sal == sorted((t, p["pnr"], p.get("periode"), json.dumps(json.loads(json.dumps(p)), sort_keys=True)) for t, p in expected_sal)

    # The transition was taken in once, the invalid message rejected; both shown.
    rows = besked_rows(world.store())
    assert [r for r in rows if r["retning"] == "ind" and r["status"] == "modtaget"] == [
        {"beskedid": overgang_id, "beskedtype": TIP_OVERGANG_FOLKEPENSION, "retning": "ind", "modtager": "udk-pension", "periode": "2026-12", "status": "modtaget", "cpr": E[:6] + "-****"}
    ]
    assert sum(r["status"] == "afvist" and r["retning"] == "ind" for r in rows) == 1
    assert {r["status"] for r in rows if r["retning"] == "ud"} == {"leveret"}
    assert len([r for r in rows if r["retning"] == "ud"]) == 6 + 4
    assert {m["beskedtype"] for m in beskeder_for(world.store(), B)} == {"SF1411_D", "TIP_PensionAdvis", "TIP_PensionAfgoerelse"}

    checks = {
        e.event_specific_data.check_name: e.event_specific_data.passed
        for e in outcome.result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }
    assert checks["sf2610_ingen_ugyldige"] is False  # the invalid message
    assert checks["sf2610_afstemning"] and checks["sf1411d_leveret"] and checks["sf2610_leveret"]
    assert checks["sf1411d_ingen_afvist"] and checks["sf2610_ingen_afvist"]

    # No CPR in any log line or in Dagster metadata.
    for cpr in (A, B, D, E, SAMLEVER):
        assert cpr not in caplog.text
        for event in outcome.result.all_events:
            assert cpr not in str(event.event_specific_data)


def sf2610_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
