"""The SF1411 web service (sf1411-sf2610.md "The web service"): SOAP 1.1 over HTTPS with mutual
TLS only, a bare ASGI app on uvicorn (httptools, uvloop).

    GET  /sf1411?wsdl        the WSDL (contracts/sf1411.wsdl) with this endpoint's address
    GET  /sf1411.xsd, ...    the schemas it imports
    POST /sf1411             HentTillaegsprocent, HentHelbredsprocent, OpdaterVaerdiliste

A call is read by the codec (contracts/sf1411.py), judged and minimised by the rules
(assets/sf1411_rules.py) against the one snapshot it took when it arrived (the pointer is polled
every POLL_SECONDS and a new snapshot swapped in as one reference), audited durably
(pipelines/sf1411_audit.py), and only then answered. Nothing here decides a rule itself."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from assets.sf1411_rules import aftale_for, minimer, pnr_gyldig, synlig
from contracts import sf1411 as codec
from contracts.cpr import mask_text
from pipelines.agreements import Agreement, load_agreements
from pipelines.calendar import TZ
from pipelines.certificates import ServiceCertificates, embedded_certificates
from pipelines.config import (
    SERVICE_CERT,
    SERVICE_CLIENT_CA,
    SERVICE_KEY,
    SF1411_ACCESS_LOG,
    SF1411_POLL_SECONDS,
    STATE_URL,
    ConfigError,
    env,
)
from pipelines.sf1411_audit import AFVIST, FEJL, INGEN_SAG, SVAR, AuditLog
from pipelines.sf1411_snapshot import CURRENT, Snapshot
from pipelines.state import StateStore
from pipelines.subscriptions import TILFOEJ_KOMMUNE, opdater_vaerdiliste

POLL_SECONDS = float(os.environ.get(SF1411_POLL_SECONDS, "1"))
# Off by default: every call is in the audit already, and at a thousand calls a second uvicorn's
# access log costs a fifth of the service's CPU (docs/decisions.md). On, its lines are masked.
ACCESS_LOG = SF1411_ACCESS_LOG
MAX_REQUEST_BYTES = 1 << 20  # a look-up is under 2 KB; a list update of thousands of PNRs fits
XML = "text/xml; charset=utf-8"

log = logging.getLogger("pensionstraek.sf1411")


# --- configuration ------------------------------------------------------------------------------


def service_certificates(var: Path = Path("./var")) -> tuple[ServiceCertificates, bool]:
    """The certificate files from the environment (all three), or the embedded default under
    ./var/service (none set). Returns them and whether they are the embedded default."""
    values = {name: os.environ.get(name, "") for name in (SERVICE_CERT, SERVICE_KEY, SERVICE_CLIENT_CA)}
    if not any(values.values()):
        return embedded_certificates(var / "service"), True
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ConfigError(f"{missing[0]} is not set: give all three of {SERVICE_CERT}, {SERVICE_KEY}, {SERVICE_CLIENT_CA}, or none (the embedded default)")
    for name, value in values.items():
        if not Path(value).is_file():
            raise ConfigError(f"{name}={value!r}: no such file")
    files = ServiceCertificates(
        ca=Path(values[SERVICE_CLIENT_CA]), server_cert=Path(values[SERVICE_CERT]),
        server_key=Path(values[SERVICE_KEY]), client_cert=Path(), client_key=Path(),
    )
    return files, False


def check_certificates(files: ServiceCertificates) -> None:
    """Load what uvicorn will load, so that a wrong file stops `serve` with its variable named."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(files.server_cert, files.server_key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{SERVICE_CERT}/{SERVICE_KEY}: the certificate and key cannot be used together ({exc.__class__.__name__}: {exc})") from None
    try:
        context.load_verify_locations(cafile=str(files.ca))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{SERVICE_CLIENT_CA}={str(files.ca)!r} is not a PEM CA certificate ({exc})") from None


def local_state() -> StateStore:
    state = StateStore(env(STATE_URL))
    import fsspec.implementations.local

    if not isinstance(state.fs, fsspec.implementations.local.LocalFileSystem):
        raise ConfigError(f"{STATE_URL}: the SF1411 service needs a local state folder (it memory-maps its snapshots and fsyncs its audit)")
    return state


# --- the snapshot in use --------------------------------------------------------------------------


class CurrentSnapshot:
    """The snapshot the pointer names. A call reads `.snapshot` once and uses that object only;
    a new one replaces it in one assignment, so no answer mixes two (sf1411-sf2610.md)."""

    def __init__(self, state: StateStore):
        self.state = state
        self.snapshot: Snapshot | None = None
        self._seen: bytes | None = None

    def refresh(self) -> bool:
        try:
            pointer = self.state.read(CURRENT)
        except FileNotFoundError:
            return False
        if pointer == self._seen:
            return False
        import json

        snapshot = Snapshot.open(self.state, json.loads(pointer))
        self.snapshot, self._seen = snapshot, pointer
        log.info("SF1411 svarer nu fra snapshot %s (%s, %d sager)", snapshot.periode, snapshot.snapshot, snapshot.rows)
        return True

    async def poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as exc:  # noqa: BLE001 - keep answering from the old snapshot
                log.error("SF1411-snapshot kunne ikke åbnes, det gamle bruges stadig: %s", mask_text(str(exc)))


# --- answering one call ---------------------------------------------------------------------------


@dataclass
class Answer:
    body: bytes
    status: int
    udfald: str
    fejlkode: str | None = None


def _fault(fejlkode: str, detalje: str | None = None) -> Answer:
    return Answer(codec.encode_fault(fejlkode, detalje), 500, AFVIST, fejlkode)


def _server_fault(text: str) -> Answer:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<soap:Envelope xmlns:soap="{codec.SOAP11_NS}"><soap:Body>'
        f"<soap:Fault><faultcode>soap:Server</faultcode><faultstring>{text}</faultstring></soap:Fault>"
        "</soap:Body></soap:Envelope>"
    ).encode()
    return Answer(body, 503, FEJL)


class Sf1411:
    def __init__(self, agreements: dict[str, Agreement], state: StateStore):
        self.agreements = agreements
        self.state = state
        self.current = CurrentSnapshot(state)
        self.audit = AuditLog(state)

    async def judge(self, kald: codec.Kald, snapshot: Snapshot | None) -> tuple[Answer, Agreement | None]:
        # sf1411-sf2610.md "Refusals": the agreement first, then the schema, then the PNR values.
        # Bytes that are not XML name no agreement to judge: SKEMA (docs/decisions.md).
        if not kald.laesbar:
            return _fault(codec.SKEMA, kald.skema_fejl), None
        agreement = aftale_for(self.agreements, kald.context, kald.operation)
        if agreement is None:
            return _fault(codec.AFTALE), None
        if kald.skema_fejl is not None or kald.operation is None:
            return _fault(codec.SKEMA, kald.skema_fejl), agreement
        if kald.operation == "OpdaterVaerdiliste":
            return await self.opdater(kald, agreement), agreement
        if not pnr_gyldig(kald.pnr):
            return _fault(codec.PNR), agreement
        if snapshot is None:
            return _server_fault("Ingen godkendt snapshot endnu"), agreement
        service = codec.OPERATIONS[kald.operation]
        raekke = snapshot.lookup(kald.pnr)
        if raekke is None or not synlig(raekke, agreement, service):
            # The same bytes for no case and an invisible case.
            return Answer(codec.encode_ingen_sag(kald.operation, snapshot.periode), 200, INGEN_SAG), agreement
        if service == "SF1411_A":
            body = codec.encode_social_pension(snapshot.periode, minimer(raekke, agreement))
        else:
            body = codec.encode_helbredssag(
                snapshot.periode, raekke["Sagsstatus"], raekke["Bopaelskommune"], raekke["Helbredsprocent"]
            )
        return Answer(body, 200, SVAR), agreement

    async def opdater(self, kald: codec.Kald, agreement: Agreement) -> Answer:
        if any(change == TILFOEJ_KOMMUNE and value not in agreement.kommuner for change, value in kald.aendringer):
            return _fault(codec.AFTALE, "TilfoejKommune uden for aftalens kommuner")
        if not all(pnr_gyldig(value) for change, value in kald.aendringer if change.endswith("PNR")):
            return _fault(codec.PNR)
        liste = await asyncio.to_thread(opdater_vaerdiliste, self.state, agreement.uuid, kald.aendringer)
        return Answer(codec.encode_kvittering(len(liste.pnr), len(liste.kommuner)), 200, SVAR)

    async def handle(self, body: bytes | None, soap_action: str | None, content_type: str | None) -> Answer:
        """One POST /sf1411: read, judge against the one snapshot of this call, audit durably,
        and only then hand back the answer."""
        started = time.perf_counter()
        tid = dt.datetime.now(TZ).isoformat(timespec="microseconds")
        snapshot = self.current.snapshot  # the one snapshot of this call
        if body is None:
            kald = codec.Kald(skema_fejl=f"the request is over {MAX_REQUEST_BYTES} bytes", laesbar=False)
        else:
            kald = codec.read_request(body, soap_action, content_type)
        try:
            answer, agreement = await self.judge(kald, snapshot)
        except Exception as exc:  # noqa: BLE001 - one line, masked; the call is still audited
            log.error("SF1411-kald fejlede: %s", mask_text(f"{type(exc).__name__}: {exc}"))
            answer, agreement = _server_fault("Intern fejl"), None
        context = kald.context
        entry = {
            "tid": tid,
            "aftale": context.get("ServiceAgreementUUID"),
            "aftale_navn": agreement.navn if agreement else None,
            "user_system": context.get("UserSystemUUID"),
            "user_uuid": context.get("UserUUID"),
            "service_uuid": context.get("ServiceUUID"),
            "on_behalf_of_user": context.get("OnBehalfOfUser"),
            "callers_service_call_identifier": context.get("CallersServiceCallIdentifier"),
            "operation": kald.operation,
            "cpr": kald.pnr,
            "aendringer": [list(change) for change in kald.aendringer] if kald.operation == "OpdaterVaerdiliste" else None,
            "udfald": answer.udfald,
            "fejlkode": answer.fejlkode,
            "periode": snapshot.periode if snapshot is not None else None,
            "latency_us": int((time.perf_counter() - started) * 1_000_000),
        }
        try:
            await self.audit.record(entry)
        except Exception as exc:  # noqa: BLE001 - no answer leaves without its audit record
            log.error("SF1411-audit kunne ikke skrives; kaldet afvises: %s", mask_text(str(exc)))
            answer = _server_fault("Audit utilgængelig")
        return answer

    def get(self, path: str, query: str, host: str) -> tuple[int, bytes]:
        name = path.lstrip("/")
        if name == "sf1411" and "wsdl" in {part.split("=", 1)[0].lower() for part in query.split("&")}:
            return 200, codec.wsdl_bytes(f"https://{host or 'localhost'}/sf1411")
        if name in codec.SCHEMA_FILES:
            return 200, (codec.HERE / name).read_bytes()
        return 404, b""


# --- the ASGI app ----------------------------------------------------------------------------------
# A bare ASGI callable, no framework: the service has one POST endpoint and a few static GETs, and
# at a thousand calls a second a framework's routing, middleware and request/response objects
# cost more than the SOAP work itself (benchmarks/sf1411.py, docs/decisions.md).

_XML_HEADERS = [(b"content-type", XML.encode())]


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _respond(send, status: int, body: bytes, content_type: bytes | None = XML.encode(), head: bool = False) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


class App:
    """POST /sf1411, GET (and HEAD) /sf1411?wsdl and the schemas; the lifespan opens the snapshot,
    polls the pointer and closes the audit."""

    def __init__(self, service: Sf1411):
        self.sf1411 = service

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            method, path = scope["method"], scope["path"]
            if method == "POST" and path == "/sf1411":
                body = await self._body(receive)
                answer = await self.sf1411.handle(body, _header(scope, b"soapaction"), _header(scope, b"content-type"))
                await _respond(send, answer.status, answer.body)
            elif method in ("GET", "HEAD") and (path == "/sf1411" or path.lstrip("/") in codec.SCHEMA_FILES):
                status, body = self.sf1411.get(path, scope["query_string"].decode("latin-1"), _header(scope, b"host") or "")
                await _respond(send, status, body, XML.encode() if status == 200 else None, head=method == "HEAD")
            elif path == "/sf1411" or path.lstrip("/") in codec.SCHEMA_FILES:
                await _respond(send, 405, b"Method Not Allowed", b"text/plain; charset=utf-8")
            else:
                await _respond(send, 404, b"", None)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    @staticmethod
    async def _body(receive) -> bytes | None:
        """The request body, or None when it is over MAX_REQUEST_BYTES (the rest is read and
        dropped, not held: the call is refused SKEMA on its length)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= MAX_REQUEST_BYTES:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks) if size <= MAX_REQUEST_BYTES else None

    async def _lifespan(self, receive, send) -> None:
        service = self.sf1411
        poller = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # The audit's writer thread hands each fsynced batch back to the loop: let it have
                # the GIL within a millisecond, not the default 5 ms, while the loop is busy.
                sys.setswitchinterval(0.001)
                await asyncio.to_thread(service.current.refresh)
                poller = asyncio.create_task(service.current.poll())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if poller is not None:
                    poller.cancel()
                service.audit.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def build_app(agreements: dict[str, Agreement], state: StateStore) -> App:
    return App(Sf1411(agreements, state))


# --- logs: never a CPR ------------------------------------------------------------------------------


class MaskCpr(logging.Filter):
    """Masks every CPR-like run of digits in a log record, message and arguments (a request line
    with a CPR in its query string, an error message). uvicorn logs no bodies."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_text(str(record.msg))
        if isinstance(record.args, tuple):
            record.args = tuple(mask_text(a) if isinstance(a, str) else a for a in record.args)
        return True


def _log_config() -> dict:
    from uvicorn.config import LOGGING_CONFIG

    config = {**LOGGING_CONFIG, "filters": {"mask_cpr": {"()": MaskCpr}}}
    config["handlers"] = {name: {**handler, "filters": ["mask_cpr"]} for name, handler in LOGGING_CONFIG["handlers"].items()}
    config["loggers"] = {**LOGGING_CONFIG["loggers"], "pensionstraek": {"handlers": ["default"], "level": "INFO", "propagate": False}}
    return config


def serve(host: str = "127.0.0.1", port: int = 8443, var: Path = Path("./var")) -> int:
    """`pensionstraek serve`: judge the configuration (one line naming the variable when wrong),
    then serve until stopped. One process: a second worker on the 2 cores measured slower
    (docs/decisions.md)."""
    import uvicorn

    agreements = load_agreements()
    state = local_state()
    files, embedded = service_certificates(var)
    check_certificates(files)
    config = uvicorn.Config(
        build_app(agreements, state),
        host=host,
        port=port,
        ssl_certfile=str(files.server_cert),
        ssl_keyfile=str(files.server_key),
        ssl_ca_certs=str(files.ca),
        ssl_cert_reqs=ssl.CERT_REQUIRED,  # mutual TLS only: no client certificate, no handshake
        http="httptools",  # the C parser and loop: the Python ones cost a core at 1,000 calls/s
        loop="uvloop",
        log_config=_log_config(),
        access_log=os.environ.get(ACCESS_LOG, "").strip().lower() in ("1", "true", "ja", "yes"),
        proxy_headers=False,  # TLS ends here, no proxy in front whose headers to believe
        server_header=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=5,  # a consumer's idle keep-alive connection does not hold up a stop
    )
    print(f"SF1411 lytter på https://{host}:{port}/sf1411 (WSDL: https://{host}:{port}/sf1411?wsdl)", flush=True)
    if embedded:
        print(
            "Indlejret standard: CA og certifikater i "
            f"{files.ca.parent}. Eksempel:\n  curl --cacert {files.ca} --cert {files.client_cert} --key {files.client_key} "
            f"'https://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}/sf1411?wsdl'",
            flush=True,
        )
    uvicorn.Server(config).run()
    return 0
