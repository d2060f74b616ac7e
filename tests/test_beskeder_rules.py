"""The SF1411_D and SF2610 rules on five-row frames, the envelope codec against KOMBIT's schema,
the BeskedId rule, the broker URL rule, and the outbox without a broker."""

import datetime as dt
import uuid
from decimal import Decimal

import polars as pl
import pytest
from lxml import etree

from assets.sf1411d import sf1411d_beskeder
from assets.sf1411d_rules import aendringer, aftale_frames, forskelle, omfattet
from assets.sf2610_rules import advis, afgoerelse_aendringer, afstemning
from contracts.beskedkuvert import (
    KUVERT_XSD,
    BeskedError,
    beskedid,
    beskedid_expr,
    make_standard_retur,
    read_haendelsesbesked,
    read_standard_retur,
)
from contracts.register import PENSIONSSAGER_SCHEMA
from contracts.xmlsafe import load_schema
from pipelines.agreements import Agreement
from pipelines.amqp import connection_parameters
from pipelines.beskeder import MessageBook, commit, with_status
from pipelines.config import ConfigError
from pipelines.state import StateStore
from pipelines.subscriptions import Vaerdiliste
from tests.registers import case_row

A, B, C, D, E = "0101501234", "0202502345", "0303503456", "0404504567", "0505501678"
NOW = dt.datetime(2026, 11, 5, 8, 0, tzinfo=dt.timezone.utc)


def frame(rows):
    return pl.DataFrame(rows, schema=PENSIONSSAGER_SCHEMA)


def agreement(uuid_, kommuner, felter, modtager):
    return Agreement(uuid=uuid_, navn=modtager, user_system_uuid=uuid_, services=frozenset({"SF1411_D"}), felter=tuple(felter), kommuner=frozenset(kommuner), modtager=modtager)


def test_only_changed_cases_are_compared():
    before = frame([case_row(A), case_row(B), case_row(C)])
    after = frame([case_row(A), case_row(B, tillaegsprocent=Decimal("10.00")), case_row(D)])
    diff = forskelle(before, after)
    assert sorted(zip(diff["cpr"], diff["i_forrige"], diff["i_nu"])) == [(B, True, True), (C, True, False), (D, False, True)]


def test_covered_needs_visibility_and_the_list():
    sager = frame([case_row(A, "0101"), case_row(B, "0147"), case_row(C, "0101", administrationskommune="0147"), case_row(D, "0151"), case_row(E, "0147")])
    ag = {"x": agreement("x", ["0101", "0147"], ["Tillaegsprocent"], "kp-x")}
    frames = aftale_frames(ag, {"x": Vaerdiliste(pnr=frozenset({B, D}), kommuner=frozenset({"0101"}))})
    covered = sorted(omfattet(sager, frames)["cpr"].to_list())
    # A and C by the list's kommune, B by its CPR; D is on the list but not visible; E on neither.
    assert covered == [A, B, C]


def test_the_three_cases_and_allowed_fields_only():
    before = frame([case_row(A), case_row(B), case_row(C), case_row(E)])
    after = frame([case_row(A, tillaegsprocent=Decimal("50.00"), pensionstype="SEP"), case_row(B, formue_oere=100), case_row(D), case_row(E)])
    ag = {"x": agreement("x", ["0101"], ["Tillaegsprocent", "Sagsstatus"], "kp-x")}
    frames = aftale_frames(ag, {"x": Vaerdiliste(kommuner=frozenset({"0101"}))})
    got = aendringer(forskelle(before, after), frames).select("cpr", "felt", "foer", "efter").rows()
    assert got == [
        (A, "Tillaegsprocent", "100.00", "50.00"),  # Pensionstype changed too, but is not allowed
        (C, None, None, None),  # OmfattesIkkeLaengere
        (D, "Sagsstatus", None, "AKTIV"),
        (D, "Tillaegsprocent", None, "100.00"),
    ]  # B: only formue changed, not allowed: no notice


def test_sf2610_advis_and_afgoerelse():
    before = frame([case_row(A, pensionstype="TIP", samlevende=True, samlever_cpr=C), case_row(B, pensionstype="TIP"), case_row(D), case_row(E, pensionstype="TIP")])
    after = frame([case_row(A, pensionstype="TIP", samlevende=True, samlever_cpr=C, doedsdato=dt.date(2026, 11, 2)), case_row(B, pensionstype="FP"), case_row(D, pensionstype="FP")])
    diff = forskelle(before, after)
    assert advis(diff).rows() == [(A, dt.date(2026, 11, 2), C)]
    rows = afgoerelse_aendringer(diff).select("cpr", "felt", "foer", "efter").rows()
    assert (B, "pensionstype", "TIP", "FP") in rows
    assert all(cpr != A and cpr != D for cpr, *_ in rows)  # a death alone is Advis; D was not TIP
    e_rows = [r for r in rows if r[0] == E]
    assert e_rows[0] == (E, "pensionstype", "TIP", None) and all(r[3] is None for r in e_rows)
    overgange = pl.DataFrame({"cpr": [D], "fra_periode": ["2026-11"]})
    wrong = afstemning(overgange, after, diff, "2026-11").rows()
    assert wrong == [(B, "overgang_uden_besked")]


def test_beskedid_over_a_frame_is_uuid5_of_the_spec_name():
    names = [("SF1411_D", "kp-æ", f"{i:010d}", "2026-11", "2026-10") for i in range(200)] + [("TIP_PensionAdvis", "", "", "", "")]
    frame = pl.DataFrame(names, schema=["t", "m", "c", "p", "f"], orient="row")
    got = frame.select(beskedid_expr(*[pl.col(c) for c in frame.columns])).to_series().to_list()
    namespace = uuid.UUID("2a1c6f8e-6a55-5b7e-9c0d-3f1b2d4e5a60")
    assert got == [str(uuid.uuid5(namespace, "|".join(n))) for n in names]


def test_messages_are_valid_envelopes_with_the_spec_id():
    before = frame([case_row(A)])
    after = frame([case_row(A, tillaegsprocent=Decimal("1.50"))])
    frames = aftale_frames({"x": agreement("x", ["0101"], ["Tillaegsprocent"], "kp-x")}, {"x": Vaerdiliste(pnr=frozenset({A}))})
    rows = sf1411d_beskeder(forskelle(before, after), frames, periode="2026-11", forrige_periode="2026-10", dannet=NOW, afsender=str(uuid.UUID(int=7)))
    assert rows.height == 1
    xml = rows["xml"][0]
    assert load_schema(KUVERT_XSD).validate(etree.fromstring(xml))
    expected = str(uuid.uuid5(uuid.UUID("2a1c6f8e-6a55-5b7e-9c0d-3f1b2d4e5a60"), f"SF1411_D|kp-x|{A}|2026-11|2026-10"))
    assert rows["beskedid"][0] == expected == beskedid("SF1411_D", "kp-x", A, "2026-11", "2026-10")
    besked = read_haendelsesbesked(xml)
    assert (besked.beskedid, besked.modtager, besked.cpr, besked.beskedtype) == (expected, "kp-x", A, "SF1411_D")
    with pytest.raises(BeskedError):
        read_haendelsesbesked(xml.replace(b"<BeskedVersion>", b"<Fejl/><BeskedVersion>"))
    assert read_standard_retur(make_standard_retur(40, "ugyldig")) == (40, "ugyldig")


def test_plain_amqp_only_to_loopback():
    connection_parameters("amqp://guest:guest@127.0.0.1:5672/%2F")
    with pytest.raises(ConfigError, match="loopback"):
        connection_parameters("amqp://guest:guest@beskedfordeler.example:5672/BF")
    assert connection_parameters("amqps://bf.example:5671/BF").ssl_options is not None


def test_without_a_broker_messages_wait_in_the_outbox(tmp_path):
    store = StateStore(str(tmp_path))
    rows = pl.DataFrame(
        [{"beskedid": "b1", "beskedtype": "SF1411_D", "modtager": "kp", "cpr": A, "periode": "2026-11", "forrige_periode": "2026-10", "aftale": "x", "xml": b"<x/>"}]
    )
    assert commit(store, "2026-11", "sf1411d", rows)
    assert not commit(store, "2026-11", "sf1411d", rows.clear())  # made once per P
    assert with_status(store)["status"].to_list() == ["venter"]
    assert [o.key for o in MessageBook(store).undelivered()] == ["b1"]


def test_beskeder_command_json(tmp_path, monkeypatch, capsys):
    import json

    from pipelines.cli import main

    store = StateStore(str(tmp_path))
    rows = pl.DataFrame(
        [{"beskedid": "b1", "beskedtype": "SF1411_D", "modtager": "kp", "cpr": A, "periode": "2026-11", "forrige_periode": "2026-10", "aftale": "x", "xml": b"<x/>"}]
    )
    commit(store, "2026-11", "sf1411d", rows)
    monkeypatch.setenv("PENSIONSTRAEK_STATE_URL", str(tmp_path))
    assert main(["beskeder", "2026-11", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"beskedid": "b1", "beskedtype": "SF1411_D", "retning": "ud", "modtager": "kp", "periode": "2026-11", "status": "venter", "cpr": "010150-****"}
    ]
    assert main(["beskeder"]) == 0
    out = capsys.readouterr().out
    assert "1 besked(er): 1 venter" in out and A not in out
