"""The SF1411 web service against the real running service over real mutual TLS
(sf1411-sf2610.md "The web service"): zeep reading the served WSDL for every operation, raw
requests for the refusals, the handshake refusals, minimisation, the identical IngenSag, a
snapshot switch under load, the audit, and masked logs."""

from __future__ import annotations

import re
import socket
import ssl
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from lxml import etree

from pipelines.agreements import (
    KP_AGREEMENT, KP_SYSTEM, KY_AGREEMENT, KY_SYSTEM, STRUCTURA_AGREEMENT, STRUCTURA_SYSTEM,
)
from pipelines.sf1411_audit import audit_records, opslag_for
from pipelines.sf1411_snapshot import current
from pipelines.subscriptions import vaerdiliste
from tests.tls import (
    CPR_AARHUS, CPR_KBH_ADM_AARHUS, CPR_NULLS, CPR_UNKNOWN, HELBRED_AARHUS_AGREEMENT, HELBRED_AARHUS_SYSTEM,
    HOST, P1, P2, SWITCH_CPRS, TILLAEG, envelope, invocation_context, opslag, post, take_in,
)

pytestmark = pytest.mark.service
NS = {"s": "urn:oio:udk:pension:sf1411:1", "soap": "http://schemas.xmlsoap.org/soap/envelope/"}


def periode_now(service) -> str:
    return current(service.state)["periode"]


def answer_of(response: requests.Response) -> etree._Element:
    root = etree.fromstring(response.content)
    return root.find("soap:Body", NS)[0]


def fields(element: etree._Element) -> list[tuple[str, str]]:
    return [(etree.QName(c).localname, c.text) for c in element]


def fejlkode(response: requests.Response) -> str:
    assert response.status_code == 500, response.content
    fault = etree.fromstring(response.content).find("soap:Body/soap:Fault", NS)
    assert fault.findtext("faultcode") == "soap:Client"
    return fault.findtext("detail/s:Fejl/s:Fejlkode", namespaces=NS)


# --- zeep, reading the served WSDL ---------------------------------------------------------------


@pytest.fixture(scope="module")
def zeep_client(sf1411_service):
    import zeep
    from zeep.transports import Transport

    return zeep.Client(f"{sf1411_service.url}?wsdl", transport=Transport(session=sf1411_service.session()))


def context(agreement: str, system: str, call_id: str | None = None) -> dict:
    return {
        "ServiceAgreementUUID": agreement, "UserSystemUUID": system,
        "UserUUID": str(uuid.uuid4()), "ServiceUUID": str(uuid.uuid4()),
        "CallersServiceCallIdentifier": call_id or str(uuid.uuid4()),
    }


def test_zeep_hent_tillaegsprocent(sf1411_service, zeep_client):
    answer = zeep_client.service.HentTillaegsprocent(PNR=CPR_AARHUS, InvocationContext=context(KP_AGREEMENT, KP_SYSTEM))
    pension = answer.SocialPension
    assert pension.Periode == periode_now(sf1411_service)
    assert (pension.Sagsstatus, pension.Pensionstype, pension.Bopaelskommune) == ("AKTIV", "FP", "0751")
    assert pension.SamleverPNR == "0505605678" and pension.Samlevende is True
    assert str(pension.FormueBeloeb) == "12345.67" and str(pension.Tillaegsprocent) == "87.25"
    assert pension.Administrationskommune is None  # null in the register: not answered

    none = zeep_client.service.HentTillaegsprocent(PNR=CPR_UNKNOWN, InvocationContext=context(KP_AGREEMENT, KP_SYSTEM))
    assert none.SocialPension is None and none.IngenSag.Periode == periode_now(sf1411_service)


def test_zeep_hent_helbredsprocent(sf1411_service, zeep_client):
    sag = zeep_client.service.HentHelbredsprocent(
        PNR=CPR_AARHUS, InvocationContext=context(HELBRED_AARHUS_AGREEMENT, HELBRED_AARHUS_SYSTEM)
    ).Helbredssag
    assert (sag.Sagsstatus, sag.SagensEjer, str(sag.Helbredsprocent)) == ("AKTIV", "0751", "12.50")
    # Administered by Aarhus but living in Copenhagen: SF1411_B sees only its own citizens.
    hidden = zeep_client.service.HentHelbredsprocent(
        PNR=CPR_KBH_ADM_AARHUS, InvocationContext=context(HELBRED_AARHUS_AGREEMENT, HELBRED_AARHUS_SYSTEM)
    )
    assert hidden.Helbredssag is None and hidden.IngenSag.Periode
    # Helbredsprocent null: absent.
    nulls = zeep_client.service.HentHelbredsprocent(PNR=CPR_NULLS, InvocationContext=context(KP_AGREEMENT, KP_SYSTEM))
    assert nulls.Helbredssag.Helbredsprocent is None and nulls.Helbredssag.SagensEjer == "0751"


def test_zeep_opdater_vaerdiliste_and_fault(sf1411_service, zeep_client):
    import zeep.exceptions

    agreement = STRUCTURA_AGREEMENT
    before = vaerdiliste(sf1411_service.state, agreement)
    kvittering = zeep_client.service.OpdaterVaerdiliste(
        InvocationContext=context(agreement, STRUCTURA_SYSTEM),
        _value_1=[{"TilfoejPNR": CPR_AARHUS}, {"TilfoejPNR": CPR_UNKNOWN}, {"TilfoejKommune": "0751"}, {"FjernPNR": CPR_UNKNOWN}],
    )
    after = vaerdiliste(sf1411_service.state, agreement)
    assert (kvittering.AntalPNR, kvittering.AntalKommuner) == (len(after.pnr), len(after.kommuner))
    assert CPR_AARHUS in after.pnr and CPR_UNKNOWN not in after.pnr and "0751" in after.kommuner
    assert after.pnr >= before.pnr

    with pytest.raises(zeep.exceptions.Fault) as refused:
        zeep_client.service.OpdaterVaerdiliste(
            InvocationContext=context(agreement, STRUCTURA_SYSTEM), _value_1=[{"TilfoejKommune": "0101"}]
        )
    assert refused.value.code == "soap:Client"
    assert refused.value.detail.findtext(".//{urn:oio:udk:pension:sf1411:1}Fejlkode") == "AFTALE"
    assert vaerdiliste(sf1411_service.state, agreement) == after  # a refused update changes nothing


# --- transport ---------------------------------------------------------------------------------------


def _tls_attempt(service, cert: tuple[str, str] | None, tls12: bool) -> bytes:
    """Connect, handshake, ask for the WSDL; what came back (an ssl error is raised)."""
    context = ssl.create_default_context(cafile=str(service.ca))
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        context.load_cert_chain(*cert)
    with socket.create_connection((HOST, service.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /sf1411?wsdl HTTP/1.1\r\nHost: localhost\r\n\r\n")
            return tls.recv(100)


@pytest.mark.parametrize("who", ["no certificate", "another CA"])
def test_refused_in_the_handshake(sf1411_service, who):
    cert = None if who == "no certificate" else sf1411_service.stranger
    # TLS 1.2: the server's refusal ends the handshake itself.
    with pytest.raises(ssl.SSLError):
        _tls_attempt(sf1411_service, cert, tls12=True)
    # TLS 1.3: the client finishes first, then gets the server's alert instead of any HTTP byte.
    try:
        reply = _tls_attempt(sf1411_service, cert, tls12=False)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        reply = b""
    assert reply == b""
    # And through requests, as a consumer would see it.
    session = requests.Session()
    session.trust_env = False
    session.verify = str(sf1411_service.ca)
    if cert:
        session.cert = cert
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(f"{sf1411_service.url}?wsdl", timeout=10)
    # The right certificate passes the same way.
    assert _tls_attempt(sf1411_service, sf1411_service.client, tls12=True).startswith(b"HTTP/1.1 200")


def test_plain_http_is_never_served(sf1411_service):
    with socket.create_connection((HOST, sf1411_service.port), timeout=10) as raw:
        raw.sendall(b"GET /sf1411?wsdl HTTP/1.1\r\nHost: localhost\r\n\r\n")
        try:
            reply = raw.recv(100)
        except ConnectionResetError:
            reply = b""
    assert not reply.startswith(b"HTTP/1.1 200")
    assert b"wsdl:definitions" not in reply


def test_wsdl_and_schemas_are_served(sf1411_service):
    session = sf1411_service.session()
    wsdl = session.get(f"{sf1411_service.url}?wsdl", timeout=10)
    assert wsdl.status_code == 200 and f'location="https://{HOST}:{sf1411_service.port}/sf1411"'.encode() in wsdl.content
    root = etree.fromstring(wsdl.content)
    operations = root.findall("{http://schemas.xmlsoap.org/wsdl/}binding/{http://schemas.xmlsoap.org/wsdl/}operation")
    assert [o.get("name") for o in operations] == ["HentTillaegsprocent", "HentHelbredsprocent", "OpdaterVaerdiliste"]
    schema = session.get(f"https://{HOST}:{sf1411_service.port}/sf1411.xsd", timeout=10)
    assert schema.status_code == 200 and b'targetNamespace="urn:oio:udk:pension:sf1411:1"' in schema.content


# --- refusals, in the order of the spec --------------------------------------------------------------

A = "HentTillaegsprocent"
UNKNOWN_AGREEMENT = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    "body, action, content_type, expected",
    [
        (opslag(A, CPR_AARHUS, UNKNOWN_AGREEMENT, KP_SYSTEM), A, "text/xml", "AFTALE"),
        (opslag(A, CPR_AARHUS, KP_AGREEMENT, KY_SYSTEM), A, "text/xml", "AFTALE"),  # another system's agreement
        (opslag("HentHelbredsprocent", CPR_AARHUS, KY_AGREEMENT, KY_SYSTEM), "HentHelbredsprocent", "text/xml", "AFTALE"),
        (envelope(A, invocation_context(KP_AGREEMENT, KY_SYSTEM)), A, "text/xml", "AFTALE"),  # outside, and no PNR
        (opslag(A, "12", UNKNOWN_AGREEMENT, KP_SYSTEM), A, "text/xml", "AFTALE"),  # outside, and a bad PNR
        (envelope(A, invocation_context(KP_AGREEMENT, KP_SYSTEM)), A, "text/xml", "SKEMA"),  # no PNR
        (opslag(A, CPR_AARHUS, KP_AGREEMENT, KP_SYSTEM), "HentHelbredsprocent", "text/xml", "SKEMA"),  # SOAPAction
        (opslag(A, CPR_AARHUS, KP_AGREEMENT, KP_SYSTEM), A, "application/soap+xml", "SKEMA"),  # SOAP 1.2 media type
        (opslag(A, CPR_AARHUS, KP_AGREEMENT, KP_SYSTEM).replace(b"schemas.xmlsoap.org/soap/envelope/", b"www.w3.org/2003/05/soap-envelope"), A, "text/xml", "SKEMA"),
        (b"<not xml", A, "text/xml", "SKEMA"),
        (b'<!DOCTYPE x [<!ENTITY e "e">]>' + opslag(A, CPR_AARHUS, KP_AGREEMENT, KP_SYSTEM).split(b"?>", 1)[1], A, "text/xml", "SKEMA"),
        (opslag(A, "12345", KP_AGREEMENT, KP_SYSTEM), A, "text/xml", "PNR"),
        (opslag(A, "０１０１４０１２３４", KP_AGREEMENT, KP_SYSTEM), A, "text/xml", "PNR"),  # not ASCII digits
        (opslag(A, "01014012345", KP_AGREEMENT, KP_SYSTEM), A, "text/xml", "PNR"),
        (envelope("OpdaterVaerdiliste", invocation_context(STRUCTURA_AGREEMENT, STRUCTURA_SYSTEM) + "<TilfoejPNR>123</TilfoejPNR>"), "OpdaterVaerdiliste", "text/xml", "PNR"),
        (envelope("OpdaterVaerdiliste", invocation_context(STRUCTURA_AGREEMENT, STRUCTURA_SYSTEM) + "<FjernPNR>12345678901</FjernPNR>"), "OpdaterVaerdiliste", "text/xml", "PNR"),
        (envelope("OpdaterVaerdiliste", invocation_context(STRUCTURA_AGREEMENT, STRUCTURA_SYSTEM) + "<TilfoejPNR>123</TilfoejPNR><TilfoejKommune>0101</TilfoejKommune>"), "OpdaterVaerdiliste", "text/xml", "AFTALE"),
        (envelope("OpdaterVaerdiliste", invocation_context(KY_AGREEMENT, KY_SYSTEM)), "OpdaterVaerdiliste", "text/xml", "AFTALE"),  # KY has no SF1411_D
        (envelope("OpdaterVaerdiliste", "<TilfoejPNR>0101401234</TilfoejPNR>" + invocation_context(KP_AGREEMENT, KP_SYSTEM)), "OpdaterVaerdiliste", "text/xml", "SKEMA"),  # order
    ],
)
def test_every_refusal(sf1411_service, body, action, content_type, expected):
    response = post(sf1411_service.session(), sf1411_service.url, action, body, content_type=content_type)
    assert fejlkode(response) == expected


def test_ingen_sag_is_byte_identical_for_unknown_and_invisible(sf1411_service):
    session = sf1411_service.session()
    unknown = post(session, sf1411_service.url, A, opslag(A, CPR_UNKNOWN, STRUCTURA_AGREEMENT, STRUCTURA_SYSTEM))
    invisible = post(session, sf1411_service.url, A, opslag(A, SWITCH_CPRS[1], STRUCTURA_AGREEMENT, STRUCTURA_SYSTEM))  # lives in 0101
    assert unknown.status_code == invisible.status_code == 200
    assert unknown.content == invisible.content
    without_date = lambda r: {k.lower(): v for k, v in r.headers.items() if k.lower() != "date"}  # noqa: E731
    assert without_date(unknown) == without_date(invisible)
    assert fields(answer_of(unknown)[0]) == [("Periode", periode_now(sf1411_service))]
    for system_b in ("HentHelbredsprocent",):
        a = post(session, sf1411_service.url, system_b, opslag(system_b, CPR_UNKNOWN, HELBRED_AARHUS_AGREEMENT, HELBRED_AARHUS_SYSTEM))
        b = post(session, sf1411_service.url, system_b, opslag(system_b, CPR_KBH_ADM_AARHUS, HELBRED_AARHUS_AGREEMENT, HELBRED_AARHUS_SYSTEM))
        assert a.content == b.content and b"IngenSag" in a.content


def test_field_minimisation_per_agreement(sf1411_service):
    session = sf1411_service.session()

    def social_pension(cpr, agreement, system):
        response = post(session, sf1411_service.url, A, opslag(A, cpr, agreement, system))
        assert response.status_code == 200
        return fields(answer_of(response)[0])

    periode = ("Periode", periode_now(sf1411_service))
    assert social_pension(CPR_AARHUS, STRUCTURA_AGREEMENT, STRUCTURA_SYSTEM) == [
        periode, ("Sagsstatus", "AKTIV"), ("Pensionstype", "FP"), ("Tillaegsprocent", "87.25"),
    ]
    # Visible to Aarhus's Structura through the administering municipality.
    assert [name for name, _ in social_pension(CPR_KBH_ADM_AARHUS, STRUCTURA_AGREEMENT, STRUCTURA_SYSTEM)] == [
        "Periode", "Sagsstatus", "Pensionstype", "Tillaegsprocent",
    ]
    assert social_pension(CPR_KBH_ADM_AARHUS, KY_AGREEMENT, KY_SYSTEM) == [
        periode, ("Sagsstatus", "AKTIV"), ("Pensionstype", "FP"), ("Bopaelskommune", "0101"),
        ("Administrationskommune", "0751"), ("UnderAdministration", "true"),
    ]
    # KP sees every field, in the spec's order, and none whose value is null.
    assert social_pension(CPR_AARHUS, KP_AGREEMENT, KP_SYSTEM) == [
        periode, ("Sagsstatus", "AKTIV"), ("Pensionstype", "FP"), ("Bopaelskommune", "0751"),
        ("Bevillingskommune", "0751"), ("UnderAdministration", "false"), ("Samlevende", "true"),
        ("SamleverPNR", "0505605678"), ("FormueBeloeb", "12345.67"), ("Tillaegsprocent", "87.25"),
        ("Pensionsbroek", "40/40"), ("Tilkendelsesdato", "2010-01-01"), ("Udlandsophold", "false"),
        ("ForudBagud", "BAGUD"), ("BistandsPlejetillaeg", "false"),
    ]
    names = [name for name, _ in social_pension(CPR_NULLS, KP_AGREEMENT, KP_SYSTEM)]
    assert "Bevillingskommune" not in names and "Pensionsbroek" not in names and "FormueBeloeb" not in names
    assert "Pensionstype" in names


# --- the audit -----------------------------------------------------------------------------------------


def test_every_call_is_audited_durably_before_its_answer(sf1411_service):
    session = sf1411_service.session()
    calls = {
        "svar": (opslag(A, CPR_AARHUS, KY_AGREEMENT, KY_SYSTEM, call_id="kald-svar"), "SVAR", None, CPR_AARHUS),
        "ingen": (opslag(A, CPR_UNKNOWN, KY_AGREEMENT, KY_SYSTEM, call_id="kald-ingen"), "INGEN_SAG", None, CPR_UNKNOWN),
        "afvist": (opslag(A, CPR_AARHUS, UNKNOWN_AGREEMENT, KY_SYSTEM, call_id="kald-afvist"), "AFVIST", "AFTALE", CPR_AARHUS),
        "pnr": (opslag(A, "123", KY_AGREEMENT, KY_SYSTEM, call_id="kald-pnr"), "AFVIST", "PNR", "123"),
    }
    for name, (body, udfald, kode, cpr) in calls.items():
        post(session, sf1411_service.url, A, body)
        # Read straight after the answer arrived: the record is already on disk.
        records = [r for r in audit_records(sf1411_service.state) if r["callers_service_call_identifier"] == f"kald-{name}"]
        assert len(records) == 1, name
        record = records[0]
        assert (record["udfald"], record["fejlkode"], record["cpr"], record["operation"]) == (udfald, kode, cpr, A)
        assert record["aftale"] in (KY_AGREEMENT, UNKNOWN_AGREEMENT) and record["user_system"] == KY_SYSTEM
        assert record["user_uuid"] == "7e1d6c5b-4a39-4f28-8e17-6d5c4b3a2918"
        assert record["periode"] in (P1, P2) and record["latency_us"] >= 0 and record["tid"]
    # Only the pipeline's user may read the audit; each segment is appended to, never replaced.
    segments = list(Path(sf1411_service.state.path("sf1411/audit")).rglob("*.jsonl"))
    assert segments and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in segments)
    looked_up = opslag_for(sf1411_service.state, CPR_AARHUS)
    assert {"tid", "aftale", "operation", "udfald"} == set(looked_up[0])
    assert {"SVAR", "AFVIST AFTALE"} <= {o["udfald"] for o in looked_up}
    assert "KY (Kommunernes Ydelsessystem)" in {o["aftale"] for o in looked_up}


def test_concurrent_calls_are_all_recorded(sf1411_service):
    def worker(n):
        session = sf1411_service.session()
        for i in range(10):
            post(session, sf1411_service.url, A, opslag(A, CPR_AARHUS, KP_AGREEMENT, KP_SYSTEM, call_id=f"samtidig-{n}-{i}"))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [r["callers_service_call_identifier"] for r in audit_records(sf1411_service.state)]
    assert sorted(i for i in ids if i and i.startswith("samtidig-")) == sorted(f"samtidig-{n}-{i}" for n in range(6) for i in range(10))


# --- a new snapshot under load ---------------------------------------------------------------------


def test_snapshot_switch_under_concurrent_load_never_mixes(sf1411_service):
    assert periode_now(sf1411_service) == P1
    seen: list[tuple[float, str, str]] = []
    stop = threading.Event()
    errors: list[str] = []

    def worker(n):
        session = sf1411_service.session()
        i = n
        while not stop.is_set():
            cpr = SWITCH_CPRS[i % len(SWITCH_CPRS)]
            i += 7
            response = post(session, sf1411_service.url, A, opslag(A, cpr, KP_AGREEMENT, KP_SYSTEM))
            if response.status_code != 200:
                errors.append(response.text[:200])
                continue
            answer = dict(fields(answer_of(response)[0]))
            seen.append((time.monotonic(), answer["Periode"], answer["Tillaegsprocent"]))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    switched_at = time.monotonic()
    take_in(sf1411_service.state, P2)
    deadline = switched_at + 10
    while time.monotonic() < deadline and not any(p == P2 for _, p, _ in seen[-20:]):
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    # Every answer is wholly one snapshot: its period and the value that tells the period agree.
    assert {(p, t) for _, p, t in seen} == {(P1, TILLAEG[P1]), (P2, TILLAEG[P2])}
    first_new = min(at for at, p, _ in seen if p == P2)
    assert first_new - switched_at < 10
    # Once switched, never back.
    last_old = max(at for at, p, _ in seen if p == P1)
    assert last_old <= first_new + 0.5  # calls already in flight at the swap may still finish on P1


# --- logs ------------------------------------------------------------------------------------------------


def test_no_cpr_unmasked_in_the_service_output(sf1411_service):
    session = sf1411_service.session()
    session.get(f"{sf1411_service.url}?{CPR_AARHUS}", timeout=10)  # a CPR in the request line
    post(session, sf1411_service.url, A, b"<x>" + CPR_AARHUS.encode() + b"</y>")  # in a parser error
    post(session, sf1411_service.url, A, opslag(A, CPR_AARHUS, KP_AGREEMENT, KP_SYSTEM))
    time.sleep(0.5)
    output = sf1411_service.output()
    assert "POST /sf1411" in output  # the access log is on: it is what is judged here
    assert CPR_AARHUS[:6] + "-****" in output
    assert not re.search(r"[0-9]{10}", output), re.findall(r".{0,40}[0-9]{10}.{0,20}", output)[:3]
