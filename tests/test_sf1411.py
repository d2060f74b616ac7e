"""SF1411 without the network: the rules on five-row frames, the codec, the look-up snapshot
(written, memory-mapped, searched), the asset through Dagster after the register contract, the
register sensor, and `serve`'s refusals of a wrong configuration."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from lxml import etree

from assets.sf1411_rules import aftale_for, minimer, minimerede, opslagsraekker, pnr_gyldig, synlig, synlige
from contracts import sf1411 as codec
from contracts.register import PENSIONSSAGER_SCHEMA
from pipelines.agreements import (
    KP_AGREEMENT, KP_SYSTEM, KY_AGREEMENT, KY_SYSTEM, STRUCTURA_AGREEMENT, STRUCTURA_SYSTEM, load_agreements,
)
from pipelines.definitions import build_definitions
from pipelines.register import RegisterResource
from pipelines.resources import PartnersResource, StateResource
from pipelines.runner import run_job
from pipelines.sf1411_snapshot import Snapshot, current, make_current, write_snapshot
from pipelines.state import StateStore
from tests.registers import case_row
from tests.tls import envelope, invocation_context, opslag

ROOT = Path(__file__).resolve().parent.parent
AGREEMENTS = load_agreements("")
STRUCTURA = AGREEMENTS[STRUCTURA_AGREEMENT]
KY = AGREEMENTS[KY_AGREEMENT]


def five_cases() -> pl.DataFrame:
    return pl.DataFrame(
        [
            case_row("0101401234", "0751", formue_oere=100_050, helbredsprocent=Decimal("7.50")),
            case_row("0202402345", "0101", bevillingskommune="0751"),
            case_row("0303403456", "0101", bevillingskommune=None, administrationskommune="0751", under_administration=True),
            case_row("0404404567", "0101"),
            case_row("0505401678", "0147", pensionsbroek=None, samlevende=True, samlever_cpr="0404404567"),
        ],
        schema=PENSIONSSAGER_SCHEMA,
    )


# --- rules --------------------------------------------------------------------------------------


def test_visibility_per_operation_on_five_rows():
    opslag_rows = opslagsraekker(five_cases())
    assert synlige(opslag_rows, STRUCTURA, "SF1411_A")["cpr"].to_list() == ["0101401234", "0202402345", "0303403456"]
    assert synlige(opslag_rows, STRUCTURA, "SF1411_D")["cpr"].to_list() == ["0101401234", "0202402345", "0303403456"]
    assert synlige(opslag_rows, STRUCTURA, "SF1411_B")["cpr"].to_list() == ["0101401234"]  # only bopaelskommune
    # The row function says the same as the frame function.
    for service in ("SF1411_A", "SF1411_B", "SF1411_D"):
        visible = {r["cpr"] for r in opslag_rows.iter_rows(named=True) if synlig(r, STRUCTURA, service)}
        assert visible == set(synlige(opslag_rows, STRUCTURA, service)["cpr"])


def test_minimisation_keeps_allowed_non_null_fields_in_answer_order():
    rows = {r["cpr"]: r for r in opslagsraekker(five_cases()).iter_rows(named=True)}
    assert minimer(rows["0101401234"], STRUCTURA) == [("Sagsstatus", "AKTIV"), ("Pensionstype", "FP"), ("Tillaegsprocent", "100.00")]
    assert [f for f, _ in minimer(rows["0303403456"], KY)] == [
        "Sagsstatus", "Pensionstype", "Bopaelskommune", "Administrationskommune", "UnderAdministration",
    ]
    kp = AGREEMENTS[KP_AGREEMENT]
    full = dict(minimer(rows["0101401234"], kp))
    assert full["FormueBeloeb"] == "1000.50" and "Administrationskommune" not in full and "SamleverPNR" not in full
    assert dict(minimer(rows["0505401678"], kp))["SamleverPNR"] == "0404404567"
    assert "Pensionsbroek" not in dict(minimer(rows["0505401678"], kp))
    assert minimerede(opslagsraekker(five_cases()), STRUCTURA).columns == ["cpr", "Sagsstatus", "Pensionstype", "Tillaegsprocent"]


def test_who_may_call():
    ok = {"ServiceAgreementUUID": STRUCTURA_AGREEMENT.upper(), "UserSystemUUID": STRUCTURA_SYSTEM}
    assert aftale_for(AGREEMENTS, ok, "HentTillaegsprocent") is STRUCTURA
    assert aftale_for(AGREEMENTS, ok, "HentHelbredsprocent") is None  # Structura has no SF1411_B
    assert aftale_for(AGREEMENTS, {**ok, "UserSystemUUID": KY_SYSTEM}, "HentTillaegsprocent") is None
    assert aftale_for(AGREEMENTS, {"ServiceAgreementUUID": None, "UserSystemUUID": None}, "HentTillaegsprocent") is None
    assert [pnr_gyldig(v) for v in ("0101401234", "010140123", "01014012345", "０１０１４０１２３４", None, "01014O1234")] == [
        True, False, False, False, False, False,
    ]


# --- codec ---------------------------------------------------------------------------------------


def test_codec_reads_a_request_and_its_answers_are_valid_against_the_schema():
    kald = codec.read_request(opslag("HentTillaegsprocent", "0101401234", KP_AGREEMENT, KP_SYSTEM, call_id="x-1"), '"HentTillaegsprocent"', "text/xml")
    assert (kald.operation, kald.pnr, kald.skema_fejl) == ("HentTillaegsprocent", "0101401234", None)
    assert kald.context["CallersServiceCallIdentifier"] == "x-1" and kald.context["ServiceAgreementUUID"] == KP_AGREEMENT
    update = envelope("OpdaterVaerdiliste", invocation_context(KP_AGREEMENT, KP_SYSTEM) + "<FjernPNR>1</FjernPNR><TilfoejKommune>0101</TilfoejKommune>")
    assert codec.read_request(update, "OpdaterVaerdiliste", "text/xml").aendringer == [("FjernPNR", "1"), ("TilfoejKommune", "0101")]
    schema = codec.request_schema()
    answers = [
        codec.encode_ingen_sag("HentHelbredsprocent", "2026-10"),
        codec.encode_social_pension("2026-10", [("Sagsstatus", "AKTIV"), ("FormueBeloeb", "12.00")]),
        codec.encode_helbredssag("2026-10", "AKTIV", "0751", None),
        codec.encode_helbredssag("2026-10", "AKTIV", "0751", "12.50"),
        codec.encode_kvittering(3, 1),
    ]
    for answer in answers:
        body = etree.fromstring(answer).find("{http://schemas.xmlsoap.org/soap/envelope/}Body")[0]
        assert codec.first_schema_error(schema, body) is None, answer
    fault = etree.fromstring(codec.encode_fault("SKEMA", "Element PNR: 0101401234"))
    detail = fault.find(".//{urn:oio:udk:pension:sf1411:1}Fejl")
    assert codec.first_schema_error(schema, detail) is None
    assert "0101401234" not in etree.tostring(fault).decode()  # the detail masks a CPR


def test_schema_error_text_is_masked_and_context_is_read_even_when_invalid():
    bad = envelope("HentTillaegsprocent", invocation_context(KP_AGREEMENT, KP_SYSTEM) + "<Uventet>0101401234</Uventet>")
    kald = codec.read_request(bad, "HentTillaegsprocent", "text/xml")
    assert kald.skema_fejl and "0101401234" not in kald.skema_fejl
    assert kald.context["ServiceAgreementUUID"] == KP_AGREEMENT


# --- the snapshot ------------------------------------------------------------------------------------


def test_snapshot_lookup_finds_every_case_and_nothing_else(tmp_path):
    state = StateStore(str(tmp_path / "state"))
    rows = opslagsraekker(five_cases())
    meta = write_snapshot(state, "2026-10", rows)
    snapshot = Snapshot.open(state, meta)
    for row in rows.iter_rows(named=True):
        assert snapshot.lookup(row["cpr"]) == {k: v for k, v in row.items() if k != "cpr"}
    for missing in ("0000000000", "0101401233", "0101401235", "9999999999", "0505401679"):
        assert snapshot.lookup(missing) is None
    empty = Snapshot.open(state, write_snapshot(state, "2026-09", rows.head(0)))
    assert empty.lookup("0101401234") is None


def test_the_pointer_names_the_newest_period(tmp_path):
    state = StateStore(str(tmp_path / "state"))
    rows = opslagsraekker(five_cases())
    assert current(state) is None
    newer = write_snapshot(state, "2026-11", rows)
    assert make_current(state, newer)
    assert not make_current(state, write_snapshot(state, "2026-10", rows))  # an older period
    corrected = write_snapshot(state, "2026-11", rows)
    assert make_current(state, corrected) and current(state)["snapshot"] == corrected["snapshot"] != newer["snapshot"]


@pytest.mark.parametrize("value", ["40<40", "40&40", "40\x1f40", "40\x0140"])
def test_a_value_that_no_answer_can_carry_is_refused(tmp_path, value):
    rows = opslagsraekker(five_cases()).with_columns(Pensionsbroek=pl.lit(value))
    with pytest.raises(ValueError, match="register contract"):
        write_snapshot(StateStore(str(tmp_path / "state")), "2026-10", rows)


def test_the_snapshot_is_sorted_whatever_the_order_of_the_rows(tmp_path):
    state = StateStore(str(tmp_path / "state"))
    rows = opslagsraekker(five_cases())
    shuffled = rows.sample(fraction=1.0, shuffle=True, seed=3).reverse()
    snapshot = Snapshot.open(state, write_snapshot(state, "2026-10", shuffled))
    keys = Path(state.path(snapshot.snapshot), "cpr.bin").read_bytes()
    assert keys == "".join(sorted(rows["cpr"].to_list())).encode()
    for row in shuffled.iter_rows(named=True):
        assert snapshot.lookup(row["cpr"]) == {k: v for k, v in row.items() if k != "cpr"}


@pytest.mark.parametrize("broken, reason", [("twice", "unique cpr"), ("short", "ten digits"), ("letters", "ten digits")])
def test_snapshot_keys_are_judged(tmp_path, broken, reason):
    rows = opslagsraekker(five_cases())
    if broken == "twice":
        rows = pl.concat([rows, rows.head(1)])
    else:
        rows = rows.with_columns(cpr=pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("12345" if broken == "short" else "01014O1234")).otherwise("cpr"))
    with pytest.raises(ValueError, match=reason):
        write_snapshot(StateStore(str(tmp_path / "state")), "2026-10", rows)


# --- through Dagster ------------------------------------------------------------------------------


def _definitions(tmp_path: Path) -> dg.Definitions:
    return build_definitions(
        {
            "exchange": dg.ResourceDefinition.none_resource(),
            "register": RegisterResource(url=str(tmp_path / "register")),
            "state": StateResource(url=str(tmp_path / "state")),
            "partners": PartnersResource(),
        }
    )


def _write_register(tmp_path: Path, periode: str, frame: pl.DataFrame) -> None:
    folder = tmp_path / "register" / "pensionssager"
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(folder / f"{periode}.parquet")


def test_the_asset_builds_after_the_contract_and_stops_when_it_breaks(tmp_path):
    definitions = _definitions(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    _write_register(tmp_path, "2026-10", five_cases())
    outcome = run_job("sf1411_snapshot", first_periode="2026-10", on=instance, definitions=definitions)
    assert outcome.success, outcome.problems
    metadata = outcome.metadata("sf1411/opslagssnapshot")
    assert metadata["rows"] == 5 and metadata["aktuel"] == 1 and metadata["build_seconds"] >= 0
    state = StateStore(str(tmp_path / "state"))
    assert current(state)["periode"] == "2026-10"
    checks = [e.event_specific_data for e in outcome.result.all_events if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION]
    assert [(c.check_name, c.passed) for c in checks] == [("pensionssager_kontrakt", True)]

    # A broken register for 2026-11 (a duplicate CPR): the contract stops it, the pointer stays.
    broken = pl.concat([five_cases(), five_cases().head(1)])
    _write_register(tmp_path, "2026-11", broken)
    outcome = run_job("sf1411_snapshot", first_periode="2026-11", on=instance, definitions=definitions)
    assert not outcome.success
    assert current(state)["periode"] == "2026-10"
    assert not state.listdir("sf1411/snapshots/2026-11")


def test_the_register_sensor_asks_for_each_period_and_again_for_a_corrected_file(tmp_path):
    from pipelines.sensors import sf1411_register

    register = RegisterResource(url=str(tmp_path / "register"))
    context = dg.build_sensor_context(resources={"register": register})
    assert isinstance(sf1411_register(context), dg.SkipReason)
    _write_register(tmp_path, "2026-10", five_cases())
    first = sf1411_register(dg.build_sensor_context(resources={"register": register}))
    assert [r.partition_key for r in first] == ["2026-10"]
    _write_register(tmp_path, "2026-10", five_cases().head(4))
    again = sf1411_register(dg.build_sensor_context(resources={"register": register}))
    assert again[0].run_key != first[0].run_key


# --- serve refuses a wrong configuration in one line --------------------------------------------------


@pytest.mark.parametrize(
    "variables, named",
    [
        ({"PENSIONSTRAEK_AGREEMENTS": "/nonexistent/agreements.yaml"}, "PENSIONSTRAEK_AGREEMENTS"),
        ({"PENSIONSTRAEK_SERVICE_CERT": "/nonexistent/cert.pem"}, "PENSIONSTRAEK_SERVICE_KEY"),
        (
            {"PENSIONSTRAEK_SERVICE_CERT": "x", "PENSIONSTRAEK_SERVICE_KEY": "x", "PENSIONSTRAEK_SERVICE_CLIENT_CA": "x"},
            "PENSIONSTRAEK_SERVICE_CERT",
        ),
    ],
)
def test_serve_refuses_a_wrong_configuration_naming_the_variable(tmp_path, variables, named):
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "PENSIONSTRAEK_STATE_URL": str(tmp_path / "state"),
        **{k: (str(tmp_path / v) if v == "x" else v) for k, v in variables.items()},
    }
    for value in variables.values():
        if value == "x":
            (tmp_path / "x").write_text("not a certificate")
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "serve", "--port", "1"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "var").exists()  # nothing made for a refused configuration


def test_embedded_default_makes_certificates_under_var(tmp_path):
    from pipelines.sf1411_service import check_certificates, service_certificates

    files, embedded = service_certificates(tmp_path / "var")
    assert embedded and files.ca.parent == tmp_path / "var" / "service"
    check_certificates(files)
    assert oct(files.server_key.stat().st_mode & 0o777) == "0o600"
    assert not (files.ca.parent / "ca.key").exists()  # the throw-away CA signs nothing more
    again, _ = service_certificates(tmp_path / "var")
    assert again.ca.read_bytes() == files.ca.read_bytes()  # made once


def test_the_audit_commits_concurrent_calls_in_groups_and_only_appends(tmp_path):
    import asyncio
    import os

    from pipelines.sf1411_audit import AuditLog, audit_records

    state = StateStore(str(tmp_path / "state"))
    audit = AuditLog(state)

    async def calls(first: int) -> None:
        await asyncio.gather(*(audit.record({"tid": f"t{first + i:04d}", "cpr": "0101401234", "udfald": "SVAR"}) for i in range(50)))

    asyncio.run(calls(0))
    assert 1 <= audit.batches < 50  # 50 concurrent calls, fewer fsyncs
    (segment,) = Path(state.path("sf1411/audit")).rglob("*.jsonl")
    size, inode = segment.stat().st_size, segment.stat().st_ino
    asyncio.run(calls(50))
    audit.close()
    assert segment.stat().st_ino == inode and segment.stat().st_size > size  # appended, not replaced
    assert oct(segment.stat().st_mode & 0o777) == "0o600"
    assert [r["tid"] for r in audit_records(state)] == [f"t{i:04d}" for i in range(100)]
    # A torn last line (a power cut mid-write; its call was never answered) is skipped.
    with open(segment, "ab") as f:
        f.write(b'{"tid": "t9')
    assert len(audit_records(state)) == 100
    assert os.path.isdir(segment.parent)
