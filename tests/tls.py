"""The real SF1411 web service for the tests: certificates (one CA for the service and its
client, another CA for a client that must be refused), a small register world written as look-up
snapshots, and `pensionstraek serve` started as a subprocess on a free loopback port, stopped by
its PID. One per pytest session (tests/conftest.py)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import polars as pl
import requests

from assets.sf1411_rules import opslagsraekker
from contracts.register import PENSIONSSAGER_SCHEMA
from pipelines.agreements import DEMO_AGREEMENTS, dump_agreements, parse_agreements
from pipelines.certificates import make_ca, make_cert
from pipelines.sf1411_snapshot import make_current, write_snapshot
from pipelines.state import StateStore
from tests.processes import stop_process
from tests.registers import case_row

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent

# The world: P1 is served at start, P2 is what the switch test brings in.
P1, P2 = "2026-10", "2026-11"
AARHUS = "0751"
KBH = "0101"
HELBRED_AARHUS_AGREEMENT = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"
HELBRED_AARHUS_SYSTEM = "d2e3f4a5-b6c7-4d8e-9f0a-1b2c3d4e5f60"
# Every case of the world: a full Aarhus case; one living in Copenhagen but administered by
# Aarhus; one with the nullable fields null; and SWITCH cases whose Tillaegsprocent tells the
# period (10.00 in P1, 20.00 in P2), so an answer that mixed two snapshots would show.
CPR_AARHUS = "0101401234"
CPR_KBH_ADM_AARHUS = "0202452345"
CPR_NULLS = "0303503456"
CPR_UNKNOWN = "0404554567"
SWITCH_CPRS = [f"15{(i % 12) + 1:02d}60{i:04d}" for i in range(200)]
TILLAEG = {P1: "10.00", P2: "20.00"}


def test_agreements() -> dict:
    """The demo agreements, and one SF1411_B agreement of Aarhus (only its own citizens)."""
    return {
        **DEMO_AGREEMENTS,
        HELBRED_AARHUS_AGREEMENT: {
            "navn": "Aarhus helbredstillaeg",
            "user_system_uuid": HELBRED_AARHUS_SYSTEM,
            "services": ["SF1411_B"],
            "kommuner": [AARHUS],
        },
    }


def pensionssager(periode: str) -> pl.DataFrame:
    rows = [
        case_row(
            CPR_AARHUS, AARHUS, samlevende=True, samlever_cpr="0505605678", formue_oere=1234567,
            helbredsprocent=Decimal("12.50"), tillaegsprocent=Decimal("87.25"),
        ),
        case_row(CPR_KBH_ADM_AARHUS, KBH, administrationskommune=AARHUS, under_administration=True, helbredsprocent=Decimal("40.00")),
        case_row(CPR_NULLS, AARHUS, bevillingskommune=None, pensionsbroek=None, pensionstype="SEP"),
        *[case_row(cpr, KBH if i % 2 else AARHUS, tillaegsprocent=Decimal(TILLAEG[periode])) for i, cpr in enumerate(SWITCH_CPRS)],
    ]
    return pl.DataFrame(rows, schema=PENSIONSSAGER_SCHEMA)


def take_in(state: StateStore, periode: str) -> dict:
    """What the sf1411 asset does for P (without Dagster): build the snapshot, move the pointer."""
    meta = write_snapshot(state, periode, opslagsraekker(pensionssager(periode)))
    make_current(state, meta)
    return meta


@dataclass
class Sf1411Service:
    base: Path
    port: int
    ca: Path
    client: tuple[str, str]  # cert, key chaining to the service's client CA
    stranger: tuple[str, str]  # cert, key from another CA
    state: StateStore
    process: subprocess.Popen
    stdout: Path
    stderr: Path

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}/sf1411"

    def session(self) -> requests.Session:
        session = requests.Session()
        # Not the environment's CA bundle or proxies (requests lets REQUESTS_CA_BUNDLE override
        # a session's own `verify`): this CA, this client certificate, straight to 127.0.0.1.
        session.trust_env = False
        session.cert = self.client
        session.verify = str(self.ca)
        return session

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _write_pair(pair, folder: Path, name: str) -> tuple[str, str]:
    pair.write(folder / f"{name}.pem", folder / f"{name}.key")
    return str(folder / f"{name}.pem"), str(folder / f"{name}.key")


@contextlib.contextmanager
def running_sf1411_service() -> Iterator[Sf1411Service]:
    with tempfile.TemporaryDirectory(prefix="pensionstraek-sf1411-") as tmp:
        base = Path(tmp)
        certs = base / "certs"
        certs.mkdir()
        ca = make_ca("test Serviceplatformen CA")
        ca.write(certs / "ca.pem", certs / "ca.key")
        server = _write_pair(make_cert(ca, "localhost", server=True), certs, "server")
        client = _write_pair(make_cert(ca, "test-klient", server=False), certs, "client")
        stranger = _write_pair(make_cert(make_ca("another CA"), "fremmed", server=False), certs, "stranger")
        agreements_file = base / "agreements.json"
        agreements_file.write_text(dump_agreements(parse_agreements(test_agreements())))
        state = StateStore(str(base / "state"))
        take_in(state, P1)
        port = _free_port()
        env = {
            **os.environ,
            "PENSIONSTRAEK_STATE_URL": str(base / "state"),
            "PENSIONSTRAEK_AGREEMENTS": str(agreements_file),
            "PENSIONSTRAEK_SERVICE_CERT": server[0],
            "PENSIONSTRAEK_SERVICE_KEY": server[1],
            "PENSIONSTRAEK_SERVICE_CLIENT_CA": str(certs / "ca.pem"),
            "PENSIONSTRAEK_SF1411_ACCESS_LOG": "1",  # on, so that its masking is judged
            "PYTHONPATH": str(ROOT),
        }
        stdout, stderr = base / "stdout.log", base / "stderr.log"
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "serve", "--host", HOST, "--port", str(port)],
                cwd=base, env=env, stdout=out, stderr=err,
            )
        service = Sf1411Service(base, port, certs / "ca.pem", client, stranger, state, process, stdout, stderr)
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"pensionstraek serve stopped: {service.output()[-2000:]}")
                try:
                    if service.session().get(f"{service.url}?wsdl", timeout=5).status_code == 200:
                        break
                except requests.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pensionstraek serve did not answer within 60 s: {service.output()[-2000:]}")
                time.sleep(0.2)
            yield service
        finally:
            stop_process(process, timeout=15)


# --- building requests ----------------------------------------------------------------------------

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"


def invocation_context(agreement: str, system: str, call_id: str = "", on_behalf: str = "") -> str:
    extra = (f"<OnBehalfOfUser>{on_behalf}</OnBehalfOfUser>" if on_behalf else "") + (
        f"<CallersServiceCallIdentifier>{call_id}</CallersServiceCallIdentifier>" if call_id else ""
    )
    return (
        '<InvocationContext xmlns="http://serviceplatformen.dk/xml/schemas/InvocationContext/1/">'
        f"<ServiceAgreementUUID>{agreement}</ServiceAgreementUUID><UserSystemUUID>{system}</UserSystemUUID>"
        "<UserUUID>7e1d6c5b-4a39-4f28-8e17-6d5c4b3a2918</UserUUID>"
        "<ServiceUUID>1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9</ServiceUUID>"
        f"{extra}</InvocationContext>"
    )


def envelope(operation: str, inner: str, soap_ns: str = SOAP11) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{soap_ns}"><soap:Body>'
        f'<{operation}Request xmlns="urn:oio:udk:pension:sf1411:1">{inner}</{operation}Request>'
        "</soap:Body></soap:Envelope>"
    ).encode()


def opslag(operation: str, pnr: str | None, agreement: str, system: str, call_id: str = "") -> bytes:
    pnr_element = f'<PNR xmlns="http://serviceplatformen.dk/xml/schemas/cpr/PNR/1/">{pnr}</PNR>' if pnr is not None else ""
    return envelope(operation, pnr_element + invocation_context(agreement, system, call_id))


def post(session: requests.Session, url: str, operation: str, body: bytes, content_type: str = "text/xml; charset=utf-8", action: str | None = None) -> requests.Response:
    return session.post(
        url, data=body, headers={"Content-Type": content_type, "SOAPAction": f'"{action or operation}"'}, timeout=30
    )


def call_time() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()
