"""SF6110 intake through Dagster on a temporary instance (sf6110.md "Intake", "The kvittering";
exchange.md "What the pipeline does with the envelope"): real files routed by the emulator, a real
state store, a hand-written register; the assertions are on what reaches `kp`, the state store
and the instance."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
from pathlib import Path

import dagster as dg
import polars as pl

from assets.sf6110 import MODTAGNE_FILER, TRAEKANMODNINGER, fil_partitions
from contracts.envelope import FileDescriptor, FileMetadata, encode_metadata
from contracts.ledger import LEDGER_SCHEMA
from contracts.register import PENSIONSSAGER_SCHEMA
from contracts.sf6110 import NS, decode_kvittering
from pipelines.definitions import build_definitions
from pipelines.exchange import LocalExchangeClient
from pipelines.outbox import send
from pipelines.resources import StateResource
from tests.registers import case_row
from tests.world import World, copenhagen, request_file

# --- the people of the register (pensionssager 2026-10) -----------------------------------------

ALICE = "0101401234"  # AKTIV, lives in 0101
BOB = "2412502345"  # AKTIV, lives in 0147, administered by 0101
CARL = "1505551234"  # AKTIV, lives in 0151
DORA = "0303403456"  # case OPHOERT
UDEN_SAG = "0606401890"  # valid CPR, no pension case
UFOEDT = "0101274001"  # born 2027-01-01: after any received date here, so U01
CPRS = (ALICE, BOB, CARL, DORA, UDEN_SAG, UFOEDT)
SNAPSHOT = "2026-10"


def case(cpr: str, bopael: str, administration: str | None = None, sagsstatus: str = "AKTIV") -> dict:
    return case_row(
        cpr,
        bopael,
        sagsstatus=sagsstatus,
        administrationskommune=administration,
        under_administration=administration is not None,
    )


CASES = [
    case(ALICE, "0101"),
    case(BOB, "0147", administration="0101"),
    case(CARL, "0151"),
    case(DORA, "0101", sagsstatus="OPHOERT"),
]


def write_pensionssager(register_dir: Path, periode: str = SNAPSHOT, cases: list[dict] = CASES) -> None:
    folder = register_dir / "pensionssager"
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(cases, schema=PENSIONSSAGER_SCHEMA).write_parquet(folder / f"{periode}.parquet")


def new_world(tmp_path: Path, *, keep: bool = False, register: bool = True) -> World:
    world = World(tmp_path, dg.DagsterInstance.ephemeral())
    if register:
        write_pensionssager(world.register_dir)
    if keep:
        world._defs = build_definitions(
            world.resources() | {"state": StateResource(url=str(world.state_dir), keep_deliveries=True)}
        )
    return world


# --- instructions and files ---------------------------------------------------------------------


def opret(anmodning_id: str, cpr: str, beloeb: str = "100.00", **more) -> dict:
    return {"anmodning_id": anmodning_id, "cpr": cpr, "handling": "OPRET", "fra_periode": "2026-11", "samlet_beloeb": beloeb} | more


def aendr(anmodning_id: str, cpr: str, beloeb: str, fra: str = "2026-12", **more) -> dict:
    return {"anmodning_id": anmodning_id, "cpr": cpr, "handling": "AENDR", "fra_periode": fra, "samlet_beloeb": beloeb} | more


def ophoer(anmodning_id: str, cpr: str, fra: str = "2027-01") -> dict:
    return {"anmodning_id": anmodning_id, "cpr": cpr, "handling": "OPHOER", "fra_periode": fra}


# --- what kp sees -------------------------------------------------------------------------------


def take_kvitteringer(world: World) -> dict[str, bytes]:
    """What kp does with its IN/: read every kvittering (and drop its metadata and receipts)."""
    taken = {}
    for path in sorted(world.inbox("kp").iterdir()):
        if path.name.startswith("SF6110K_") and path.name.endswith(".xml"):
            taken[path.name] = path.read_bytes()
        path.unlink()
    return taken


def decoded(kvitteringer: dict[str, bytes]) -> dict[str, tuple[dict, list[tuple]]]:
    """Kvitteringer by ModtagetFilnavn: (header, [(AnmodningId, Status, Kode)])."""
    result = {}
    for name, data in kvitteringer.items():
        header, anmodninger = decode_kvittering(data)
        assert name == f"SF6110K_{header['kommunekode']}_{header['file_transfer_uuid']}.xml"
        rows = [(r["anmodning_id"], r["status"], r["kode"]) for r in anmodninger.iter_rows(named=True)]
        assert header["modtaget_filnavn"] not in result, f"two kvitteringer for {header['modtaget_filnavn']}"
        result[header["modtaget_filnavn"]] = (header, rows)
    return result


def deliveries_in(world: World, account: str = "udk-pension") -> list[str]:
    return [n for n in world.in_names(account) if not n.endswith(".sftpreceipt")]


def intake_metadata(world: World) -> dict:
    event = world.instance.get_latest_materialization_event(TRAEKANMODNINGER)
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def partition_records(world: World, key: str) -> list:
    return world.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=MODTAGNE_FILER, asset_partitions=[key]), limit=10
    ).records


def event_texts(world: World) -> list[str]:
    """Every event of every run of the instance (messages, metadata, errors), serialized."""
    texts = [dg.serialize_value(e) for run in world.instance.get_runs() for e in world.instance.all_logs(run.run_id)]
    assert texts, "no events to look at"
    return texts


def unmasked_cprs(texts: list[str], cprs: tuple[str, ...] = CPRS) -> list[str]:
    """README conventions: a CPR never appears in full in a log line, an exception or metadata."""
    return sorted({cpr for cpr in cprs for text in texts if cpr in text})


def check_evaluations(outcome, name: str) -> list:
    return [
        e.event_specific_data
        for e in outcome.result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION and e.event_specific_data.check_name == name
    ]


# --- 1. end to end ------------------------------------------------------------------------------


def test_one_run_judges_registers_answers_and_archives_every_delivery(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    w = new_world(tmp_path)
    f_0101 = request_file(
        "0101",
        [
            opret("K1", ALICE, "1700.00", traekart="MAD", poster=[{"tekst": "Madordning", "beloeb": "1500.00"}, {"tekst": "Tøjvask", "beloeb": "200"}]),
            opret("K2", BOB, "500", traekart="PLEJ", til_periode="2027-03"),
            opret("K3", UDEN_SAG),
            opret("K4", CARL),
            opret("K5", DORA),
        ],
    )
    f_0147 = request_file("0147", [opret("F1", BOB, "250.5", traekart="HUSL"), ophoer("F9", BOB), opret("F2", BOB, "1e3")])
    # Received a day later but named to sort first, and delivered first: processed after K1's OPRET.
    aendr_k1 = request_file("0101", [aendr("K1", ALICE, "1800")])
    # The same received second: processed by name as bytes ('Z' < 'a'), not by the sub-second
    # modification time (the AENDR's is earlier) and not case-insensitively.
    opret_k6 = request_file("0151", [opret("K6", CARL, traekart="BRUG")])
    aendr_k6 = request_file("0151", [aendr("K6", CARL, "90")])
    f03 = request_file("0151", [opret("B1", CARL)]).replace(b"<AntalAnmodninger>1<", b"<AntalAnmodninger>2<")

    deliveries = {  # name -> (bytes, received), in the order the platform delivers them
        "A_SF6110_0101_aendr.xml": (aendr_k1, copenhagen(2026, 10, 2, 10, 0)),
        "SF6110_0101_20261001090000.xml": (f_0101, copenhagen(2026, 10, 1, 9, 0)),
        "SF6110_0147_20261001090500.xml": (f_0147, copenhagen(2026, 10, 1, 9, 5)),
        "a_aendr_0151.xml": (aendr_k6, copenhagen(2026, 10, 3, 8, 0) + dt.timedelta(microseconds=100_000)),
        "Z_opret_0151.xml": (opret_k6, copenhagen(2026, 10, 3, 8, 0) + dt.timedelta(microseconds=900_000)),
        "SF6110_0151_f03.xml": (f03, copenhagen(2026, 10, 4, 12, 0)),
    }
    for name, (data, received) in deliveries.items():
        w.deliver(name, data, received=received)
    take_kvitteringer(w)  # kp reads its technical receipts
    metadata_sent = {name: (w.inbox("udk-pension") / f"{name}.metadata").read_bytes() for name in deliveries}

    outcome = w.intake()
    assert outcome.success, outcome.problems

    # One run handled them all, and IN/ holds nothing of them any more.
    assert [r.job_name for r in w.instance.get_runs()] == ["sf6110_intake"]
    assert deliveries_in(w) == []

    processing_order = [d["filnavn"] for d in sorted(w.store().decisions(), key=lambda d: d["decided_at"])]
    assert processing_order == [
        "SF6110_0101_20261001090000.xml",
        "SF6110_0147_20261001090500.xml",
        "A_SF6110_0101_aendr.xml",
        "Z_opret_0151.xml",
        "a_aendr_0151.xml",
        "SF6110_0151_f03.xml",
    ]

    w.route()
    kvitteringer = decoded(take_kvitteringer(w))
    assert set(kvitteringer) == set(deliveries)
    assert kvitteringer["SF6110_0101_20261001090000.xml"][1] == [
        ("K1", "MODTAGET", None),
        ("K2", "MODTAGET", None),
        ("K3", "AFVIST", "U03"),
        ("K4", "AFVIST", "U04"),
        ("K5", "AFVIST", "U03"),
    ]
    assert kvitteringer["SF6110_0147_20261001090500.xml"][1] == [
        ("F1", "MODTAGET", None),
        ("F9", "AFVIST", "U08"),
        ("F2", "AFVIST", "U01"),
    ]
    assert kvitteringer["A_SF6110_0101_aendr.xml"][1] == [("K1", "MODTAGET", None)]
    assert kvitteringer["Z_opret_0151.xml"][1] == [("K6", "MODTAGET", None)]
    assert kvitteringer["a_aendr_0151.xml"][1] == [("K6", "MODTAGET", None)]
    header = kvitteringer["SF6110_0101_20261001090000.xml"][0]
    assert header | {"file_transfer_uuid": None} == {
        "kommunekode": "0101",
        "modtaget_filnavn": "SF6110_0101_20261001090000.xml",
        "file_transfer_uuid": None,
        "modtaget_tidspunkt": "2026-10-01T07:00:00Z",
        "status": "MODTAGET",
        "kode": None,
        "tekst": None,
        "antal_modtaget": 2,
        "antal_afvist": 3,
    }
    f03_header, f03_rows = kvitteringer["SF6110_0151_f03.xml"]
    assert (f03_header["status"], f03_header["kode"], f03_header["kommunekode"], f03_rows) == ("AFVIST", "F03", "0151", [])
    # Both files of the same second carry that second, in UTC.
    assert kvitteringer["a_aendr_0151.xml"][0]["modtaget_tidspunkt"] == "2026-10-03T06:00:00Z"
    uuid_of = {name: h["file_transfer_uuid"] for name, (h, _) in kvitteringer.items()}

    # The ledger: exactly the accepted instructions, with their file's received time (UTC second).
    def row(name, position, kommunekode, anmodning_id, cpr, handling, traekart, fra, til, oere):
        received = deliveries[name][1].astimezone(dt.UTC).replace(microsecond=0)
        values = (kommunekode, anmodning_id, cpr, handling, traekart, fra, til, oere, received, name, uuid_of[name], position)
        return dict(zip(LEDGER_SCHEMA.names(), values, strict=True))

    expected = pl.DataFrame(
        [
            row("SF6110_0101_20261001090000.xml", 0, "0101", "K1", ALICE, "OPRET", "MAD", "2026-11", None, 170_000),
            row("SF6110_0101_20261001090000.xml", 1, "0101", "K2", BOB, "OPRET", "PLEJ", "2026-11", "2027-03", 50_000),
            row("SF6110_0147_20261001090500.xml", 0, "0147", "F1", BOB, "OPRET", "HUSL", "2026-11", None, 25_050),
            row("A_SF6110_0101_aendr.xml", 0, "0101", "K1", ALICE, "AENDR", "MAD", "2026-12", None, 180_000),
            row("Z_opret_0151.xml", 0, "0151", "K6", CARL, "OPRET", "BRUG", "2026-11", None, 10_000),
            row("a_aendr_0151.xml", 0, "0151", "K6", CARL, "AENDR", "MAD", "2026-12", None, 9_000),
        ],
        schema=LEDGER_SCHEMA,
    )
    ledger = w.store().ledger().sort("modtaget", "filnavn", "position")
    assert ledger.equals(expected.sort("modtaget", "filnavn", "position")), ledger

    # Archived unchanged under the FileTransferUUID.
    archive = w.state_dir / "archive" / "received"
    for name, (data, _) in deliveries.items():
        assert (archive / uuid_of[name] / name).read_bytes() == data
        assert (archive / uuid_of[name] / f"{name}.metadata").read_bytes() == metadata_sent[name]

    # One partition per file, with its outcome, all from the one run.
    keys = w.instance.get_dynamic_partitions(fil_partitions.name)
    assert keys == sorted(keys)
    assert len(keys) == len(deliveries)
    by_name = {}
    for key in keys:
        (record,) = partition_records(w, key)
        assert record.run_id == outcome.run_id
        metadata = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        assert key.endswith("_" + metadata["filnavn"])
        by_name[metadata["filnavn"]] = metadata
    assert "20261001T070000Z_SF6110_0101_20261001090000.xml" in keys
    first = by_name["SF6110_0101_20261001090000.xml"]
    assert (first["status"], first["kommunekode"], first["afsender"]) == ("MODTAGET", "0101", "kp")
    assert (first["antal_modtaget"], first["antal_afvist"], first["antal_U03"], first["antal_U04"]) == (2, 3, 2, 1)
    assert first["file_transfer_uuid"] == uuid_of["SF6110_0101_20261001090000.xml"]
    assert (by_name["SF6110_0151_f03.xml"]["status"], by_name["SF6110_0151_f03.xml"]["kode"]) == ("AFVIST", "F03")
    assert by_name["SF6110_0147_20261001090500.xml"]["antal_U08"] == 1

    # The intake asset's own counts.
    counts = intake_metadata(w)
    assert {k: counts[k] for k in ("filer", "filer_modtaget", "filer_afvist", "filer_karantaene")} == {
        "filer": 6, "filer_modtaget": 5, "filer_afvist": 1, "filer_karantaene": 0,
    }  # fmt: skip
    assert (counts["anmodninger_modtaget"], counts["anmodninger_afvist"]) == (6, 5)
    assert (counts["antal_U01"], counts["antal_U03"], counts["antal_U04"], counts["antal_U08"], counts["antal_F03"]) == (1, 2, 1, 1, 1)
    assert counts["ledger_anmodninger"] == 6

    # The dashboard: rejection rates per municipality as a table of numbers, not markdown.
    [rates] = check_evaluations(outcome, "afvisningsrate_pr_kommune")
    table = rates.metadata["pr_kommune"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [c.name for c in table.schema.columns] == ["kommunekode", "navn", "modtaget", "afvist", "andel_afvist"]
    row_0101 = next(r.data for r in table.records if r.data["kommunekode"] == "0101")
    assert (row_0101["modtaget"], row_0101["afvist"], row_0101["andel_afvist"]) == (3, 3, 0.5)  # both files of 0101

    # 7. No CPR in full in any event of the run, nor in any log line of this process.
    events = event_texts(w)
    assert any("SF6110_0147_20261001090500.xml" in e for e in events)  # the partitions' metadata is in there
    assert unmasked_cprs(events + [r.getMessage() for r in caplog.records]) == []


# --- 2. exactly once ----------------------------------------------------------------------------


def test_intake_twice_answers_and_registers_once(tmp_path):
    w = new_world(tmp_path)
    w.deliver("SF6110_0101_1.xml", request_file("0101", [opret("K1", ALICE)]), received=copenhagen(2026, 10, 1, 9, 0))
    take_kvitteringer(w)
    assert w.intake().success
    again = w.intake()
    assert again.success
    w.route()
    assert len(take_kvitteringer(w)) == 1
    assert w.store().ledger().height == 1
    assert len(w.store().decisions()) == 1
    assert [r["name"] for r in w.store().sent_records()] == [f"SF6110K_0101_{w.store().decisions()[0]['file_transfer_uuid']}.xml"]
    # The second run had nothing to do; its metadata says so.
    assert (intake_metadata(w)["filer"], intake_metadata(w)["ledger_anmodninger"]) == (0, 1)
    assert len(w.instance.get_dynamic_partitions(fil_partitions.name)) == 1


def test_the_same_bytes_again_are_f05_but_a_copy_of_a_rejected_file_is_judged_afresh(tmp_path):
    w = new_world(tmp_path)
    accepted = request_file("0101", [opret("K1", ALICE)])
    rejected = request_file("0101", [opret("K2", ALICE)], dannet="not a dateTime")  # F02
    w.deliver("SF6110_0101_1.xml", accepted, received=copenhagen(2026, 10, 1, 9, 0))
    w.deliver("SF6110_0101_2.xml", rejected, received=copenhagen(2026, 10, 1, 9, 1))
    assert w.intake().success
    w.route()
    first = decoded(take_kvitteringer(w))
    assert first["SF6110_0101_1.xml"][0]["status"] == "MODTAGET"
    assert first["SF6110_0101_2.xml"][0]["kode"] == "F02"

    # The same bytes under other names (a new transfer each).
    w.deliver("SF6110_0101_1_igen.xml", accepted, received=copenhagen(2026, 10, 2, 9, 0))
    w.deliver("SF6110_0101_2_igen.xml", rejected, received=copenhagen(2026, 10, 2, 9, 1))
    assert w.intake().success
    w.route()
    second = decoded(take_kvitteringer(w))
    assert (second["SF6110_0101_1_igen.xml"][0]["status"], second["SF6110_0101_1_igen.xml"][0]["kode"]) == ("AFVIST", "F05")
    assert second["SF6110_0101_2_igen.xml"][0]["kode"] == "F02"
    assert w.store().ledger()["anmodning_id"].to_list() == ["K1"]


def test_kept_deliveries_stay_in_in_and_are_still_processed_once(tmp_path):
    w = new_world(tmp_path, keep=True)
    w.deliver("SF6110_0101_1.xml", request_file("0101", [opret("K1", ALICE)]), received=copenhagen(2026, 10, 1, 9, 0))
    w.deliver("SF6110_0147_1.xml", request_file("0147", [opret("F1", BOB)]), received=copenhagen(2026, 10, 1, 9, 1))
    take_kvitteringer(w)
    kept = ["SF6110_0101_1.xml", "SF6110_0101_1.xml.metadata", "SF6110_0147_1.xml", "SF6110_0147_1.xml.metadata"]
    for _ in range(3):
        assert w.intake().success
        assert deliveries_in(w) == kept
        w.route()
    assert sorted(decoded(take_kvitteringer(w))) == ["SF6110_0101_1.xml", "SF6110_0147_1.xml"]
    assert w.store().ledger()["anmodning_id"].sort().to_list() == ["F1", "K1"]
    assert len(w.store().decisions()) == 2
    assert len(w.store().sent_records()) == 2
    # A kept receipt is recorded, not archived again on every run.
    assert sorted(w.store().listdir("archive/receipts")) == sorted(
        f"{r['name']}.sftpreceipt.0" for r in w.store().sent_records()
    )


# --- 4. envelope problems: quarantine -----------------------------------------------------------


def _metadata(name: str, size: int, *, file_name: str | None = None, sender: str = "kp", recipients=("udk-pension",), uuid: str = "3f1c2a9e-0000-4000-8000-00000000000a") -> bytes:
    descriptor = FileDescriptor(file_name=file_name or name, size_in_bytes=size, sender=sender, recipients=tuple(recipients))
    return encode_metadata(FileMetadata(file_transfer_uuid=uuid, descriptor=descriptor))


def test_envelope_problems_are_quarantined_and_never_answered(tmp_path):
    w = new_world(tmp_path)
    data = request_file("0101", [opret("K1", ALICE)])
    path_uuid = _metadata("x", len(data)).replace(b"3f1c2a9e-0000-4000-8000-00000000000a", b"../../../escaped")
    bad = {
        "not_xml.xml": b"this is not XML",
        "other_name.xml": _metadata("other_name.xml", len(data), file_name="SF6110_0101_1.xml"),
        "wrong_size.xml": _metadata("wrong_size.xml", len(data) + 1),
        "unknown_sender.xml": _metadata("unknown_sender.xml", len(data), sender="mallory"),
        "not_for_udk.xml": _metadata("not_for_udk.xml", len(data), recipients=("kp", "ky")),
        "path_uuid.xml": path_uuid.replace(b"<FileName>x<", b"<FileName>path_uuid.xml<"),
    }
    inbox = w.inbox("udk-pension")
    for name, metadata in bad.items():
        (inbox / name).write_bytes(data)
        (inbox / f"{name}.metadata").write_bytes(metadata)
    # One good delivery among them is still answered.
    w.deliver("SF6110_0101_good.xml", request_file("0101", [opret("K9", ALICE)]), received=copenhagen(2026, 10, 1, 9, 0))
    take_kvitteringer(w)

    outcome = w.intake()
    assert outcome.success, outcome.problems
    assert deliveries_in(w) == []

    # Nothing sent back for any of them: only the good file's kvittering.
    assert [r["name"].startswith("SF6110K_0101_") for r in w.store().sent_records()] == [True]
    w.route()
    assert list(decoded(take_kvitteringer(w))) == ["SF6110_0101_good.xml"]
    assert w.store().ledger()["anmodning_id"].to_list() == ["K9"]

    # Each kept unchanged in the quarantine archive, nothing outside the state store.
    quarantine = w.state_dir / "archive" / "quarantine"
    archived = {p.name: p.read_bytes() for p in quarantine.glob("*/*") if p.name != "reason.json"}
    for name, metadata in bad.items():
        assert archived[name] == data
        assert archived[f"{name}.metadata"] == metadata
    assert len(list(quarantine.iterdir())) == len(bad)
    assert not (w.state_dir / "archive" / "received" / "..").resolve().joinpath("escaped").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exchange", "register", "state"]
    reasons = {json.loads(p.read_text())["filnavn"]: json.loads(p.read_text())["reason"] for p in quarantine.glob("*/reason.json")}
    assert set(reasons) == set(bad)
    assert "FileName" in reasons["other_name.xml"] and "SizeInBytes" in reasons["wrong_size.xml"]

    # The operator sees it: the check fails as a warning, and the partitions say KARANTAENE.
    (evaluation,) = check_evaluations(outcome, "ingen_filer_i_karantaene")
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert evaluation.metadata["antal_i_karantaene"].value == len(bad)
    assert intake_metadata(w)["filer_karantaene"] == len(bad)
    statuses = {}
    for key in w.instance.get_dynamic_partitions(fil_partitions.name):
        (record,) = partition_records(w, key)
        statuses[record.asset_materialization.metadata["filnavn"].value] = record.asset_materialization.metadata["status"].value
    assert statuses == {name: "KARANTAENE" for name in bad} | {"SF6110_0101_good.xml": "MODTAGET"}


def test_a_copy_of_a_quarantined_file_is_judged_afresh(tmp_path):
    w = new_world(tmp_path)
    data = request_file("0101", [opret("K1", ALICE)])
    (w.inbox("udk-pension") / "SF6110_0101_1.xml").write_bytes(data)
    (w.inbox("udk-pension") / "SF6110_0101_1.xml.metadata").write_bytes(_metadata("SF6110_0101_1.xml", 1))
    assert w.intake().success
    w.deliver("SF6110_0101_1.xml", data, received=copenhagen(2026, 10, 1, 9, 0))
    take_kvitteringer(w)
    assert w.intake().success
    w.route()
    assert decoded(take_kvitteringer(w))["SF6110_0101_1.xml"][1] == [("K1", "MODTAGET", None)]


# --- 5. bad inputs through the whole pipeline ---------------------------------------------------

BOMB = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10))
    + b']>\n<TraekAnmodningSamling xmlns="' + NS.encode() + b'"><Kommunekode>&lol9;</Kommunekode></TraekAnmodningSamling>\n'
)


def test_bad_inputs_each_get_their_code_and_nothing_crashes(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    w = new_world(tmp_path)
    valid = request_file("0101", [opret("K1", ALICE, "1700.00", poster=[{"tekst": "Tøjvask", "beloeb": "1700.00"}])])
    files = {
        "random.bin": (random.Random(6110).randbytes(4096), "F01"),
        "empty.xml": (b"", "F01"),
        "latin1.xml": (valid.decode("utf-8").encode("latin-1"), "F01"),
        "latin1_declared.xml": (valid.replace(b'encoding="UTF-8"', b'encoding="ISO-8859-1"').decode().encode("latin-1"), "F01"),
        "bom.xml": (b"\xef\xbb\xbf" + valid.replace(b"K1", b"K2"), None),
        "crlf.xml": (valid.replace(b"K1", b"K3").replace(b"\n", b"\r\n"), None),
        "bomb.xml": (BOMB, "F01"),
        "amounts.xml": (
            request_file(
                "0147",
                [opret(f"A{i}", BOB, amount) for i, amount in enumerate(["1e3", "-5", "1.005", "１２３", "12.30"])]
                + [opret("A5", UFOEDT)],
            ),
            None,
        ),
    }
    received = copenhagen(2026, 10, 1, 9, 0)
    for i, (name, (data, _)) in enumerate(files.items()):
        w.deliver(name, data, received=received + dt.timedelta(minutes=i))
    take_kvitteringer(w)

    started = time.monotonic()
    outcome = w.intake()
    assert outcome.success, outcome.problems
    assert time.monotonic() - started < 20  # the bomb was never expanded (a billion 'lol's)
    assert deliveries_in(w) == []
    w.route()
    kvitteringer = decoded(take_kvitteringer(w))
    assert set(kvitteringer) == set(files)
    for name, (_, kode) in files.items():
        header, _ = kvitteringer[name]
        assert header["kode"] == kode, (name, header)
    assert kvitteringer["bom.xml"][1] == [("K2", "MODTAGET", None)]
    assert kvitteringer["crlf.xml"][1] == [("K3", "MODTAGET", None)]
    assert kvitteringer["amounts.xml"][1] == [
        ("A0", "AFVIST", "U01"), ("A1", "AFVIST", "U01"), ("A2", "AFVIST", "U01"), ("A3", "AFVIST", "U01"),
        ("A4", "MODTAGET", None), ("A5", "AFVIST", "U01"),
    ]  # fmt: skip
    amounts = w.store().outcomes(kvitteringer["amounts.xml"][0]["file_transfer_uuid"])
    assert amounts["element"].to_list() == ["SamletBeloeb"] * 4 + [None, "CPR"]
    assert unmasked_cprs(event_texts(w) + [r.getMessage() for r in caplog.records]) == []
    # Every file archived unchanged.
    archive = w.state_dir / "archive" / "received"
    for name, (data, _) in files.items():
        (stored,) = archive.glob(f"*/{name}")
        assert stored.read_bytes() == data


def test_a_100_mb_file_is_judged_archived_and_answered(tmp_path):
    w = new_world(tmp_path)
    valid = request_file("0101", [opret("STOR-1", ALICE)])
    # ~100 MB of well-formed XML: comments between the header and the instruction (each comment
    # below libxml2's 10 MB node limit, so the hardened parser reads the file).
    padding = b"".join(b"<!--" + b"x" * (1 << 20) + b"-->\n" for _ in range(100))
    big = valid.replace(b"  <TraekAnmodning>", padding + b"  <TraekAnmodning>", 1)
    assert len(big) > 100 * 10**6
    w.deliver("SF6110_0101_stor.xml", big, received=copenhagen(2026, 10, 1, 9, 0))
    take_kvitteringer(w)
    outcome = w.intake()
    assert outcome.success, outcome.problems
    w.route()
    (header, rows), = decoded(take_kvitteringer(w)).values()
    assert (header["status"], rows) == ("MODTAGET", [("STOR-1", "MODTAGET", None)])
    (stored,) = (w.state_dir / "archive" / "received").glob("*/SF6110_0101_stor.xml")
    assert stored.stat().st_size == len(big) and stored.read_bytes() == big
    assert deliveries_in(w) == []


# --- 6. no pensionssager snapshot ---------------------------------------------------------------


def test_without_a_snapshot_intake_fails_clearly_keeps_deliveries_and_records_receipts(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    w = new_world(tmp_path, register=False)
    w.deliver("SF6110_0101_1.xml", request_file("0101", [opret("K1", ALICE)]), received=copenhagen(2026, 10, 1, 9, 0))
    # Something UDK sent earlier, answered by the platform with a technical receipt.
    with LocalExchangeClient(str(w.exchange_root / "udk-pension")) as client:
        send(client, w.store(), name="SF6111_0101_202610_001.xml", data=b"<x/>", sender="udk-pension", recipients=["kp"], kind="SF6111")
    w.route()
    assert "SF6111_0101_202610_001.xml.sftpreceipt" in w.in_names("udk-pension")

    outcome = w.intake()
    assert not outcome.success
    assert any("no pensionssager snapshot" in p and "PENSIONSTRAEK_REGISTER_URL" in p for p in outcome.problems), outcome.problems
    assert w.in_names("udk-pension") == ["SF6110_0101_1.xml", "SF6110_0101_1.xml.metadata"]
    record = json.loads((w.state_dir / "sent" / "SF6111_0101_202610_001.xml" / "record.json").read_text())
    assert record["status"] == "acknowledged"
    assert w.store().decisions() == [] and w.store().ledger().is_empty()
    assert unmasked_cprs(event_texts(w) + [r.getMessage() for r in caplog.records]) == []

    # Once the register has a snapshot, the waiting delivery is taken in.
    write_pensionssager(w.register_dir)
    assert w.intake().success
    w.route()
    assert decoded(take_kvitteringer(w))["SF6110_0101_1.xml"][1] == [("K1", "MODTAGET", None)]
