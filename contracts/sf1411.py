"""SF1411 (sf1411-sf2610.md): the elements of the look-up answers and the register columns they
come from. The SOAP codec of the web service lives here too; no Dagster, no network."""

from __future__ import annotations

# SocialPension's optional elements in the answer's order (Periode, always answered, comes
# first and is not an agreement's choice), each with the pensionssager column it shows
# (register.md). SF1411_D notices use the same names and order for their Aendring elements.
SOCIAL_PENSION_KOLONNER: dict[str, str] = {
    "Sagsstatus": "sagsstatus",
    "Pensionstype": "pensionstype",
    "Bopaelskommune": "bopaelskommune",
    "Bevillingskommune": "bevillingskommune",
    "Administrationskommune": "administrationskommune",
    "UnderAdministration": "under_administration",
    "Samlevende": "samlevende",
    "SamleverPNR": "samlever_cpr",
    "FormueBeloeb": "formue_oere",
    "Tillaegsprocent": "tillaegsprocent",
    "Pensionsbroek": "pensionsbroek",
    "Tilkendelsesdato": "tilkendelsesdato",
    "Udlandsophold": "udlandsophold",
    "ForudBagud": "forud_bagud",
    "BistandsPlejetillaeg": "bistands_plejetillaeg",
}
SOCIAL_PENSION_FELTER: tuple[str, ...] = tuple(SOCIAL_PENSION_KOLONNER)

# --- The SOAP codec (sf1411-sf2610.md "The web service") ---------------------------------------
# Request bytes -> plain data (`Kald`), answers and faults -> bytes. Requests are read with the one
# hardened parser and judged against contracts/sf1411.xsd; answers are written as text (they are
# small, and the service writes a thousand a second).

import re  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

from lxml import etree  # noqa: E402

from contracts.cpr import mask_text  # noqa: E402
from contracts.xmlsafe import XmlRefused, escape_text, first_schema_error, load_schema, parse_xml  # noqa: E402

HERE = Path(__file__).resolve().parent
WSDL_PATH = HERE / "sf1411.wsdl"
SCHEMA_FILES = ("sf1411.xsd", "sf1411_pnr.xsd", "sf1411_invocationcontext.xsd")  # served beside the WSDL

NS = "urn:oio:udk:pension:sf1411:1"
PNR_NS = "http://serviceplatformen.dk/xml/schemas/cpr/PNR/1/"
IC_NS = "http://serviceplatformen.dk/xml/schemas/InvocationContext/1/"
SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"

# The operations and the service (agreement `services`) each belongs to.
OPERATIONS: dict[str, str] = {
    "HentTillaegsprocent": "SF1411_A",
    "HentHelbredsprocent": "SF1411_B",
    "OpdaterVaerdiliste": "SF1411_D",
}
CONTEXT_FELTER = (
    "ServiceAgreementUUID",
    "UserSystemUUID",
    "UserUUID",
    "ServiceUUID",
    "OnBehalfOfUser",
    "CallersServiceCallIdentifier",
    "AccountingInfo",
)
AENDRINGER = ("TilfoejPNR", "FjernPNR", "TilfoejKommune", "FjernKommune")

# Fejlkoder (sf1411-sf2610.md "Refusals")
AFTALE, PNR, SKEMA = "AFTALE", "PNR", "SKEMA"
FEJLTEKSTER = {
    AFTALE: "Kaldet er ikke omfattet af en serviceaftale for denne service",
    SKEMA: "Forespørgslen er ikke gyldig SOAP 1.1 efter tjenestens skema",
    PNR: "PNR skal være ti cifre",
}


@dataclass
class Kald:
    """One call as read. `skema_fejl` is the reason the request is not valid SOAP 1.1 against the
    schema (None when it is); the context is read leniently even then, because the agreement is
    judged before the schema (sf1411-sf2610.md: `AFTALE` whatever else is wrong)."""

    operation: str | None = None
    context: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(CONTEXT_FELTER))
    pnr: str | None = None
    aendringer: list[tuple[str, str]] = field(default_factory=list)
    skema_fejl: str | None = None
    laesbar: bool = True  # well-formed XML: without it not even the agreement can be read


def _text(element: etree._Element | None) -> str | None:
    return None if element is None else (element.text or "")


def _operation_of(body_child: etree._Element | None, soap_action: str | None) -> tuple[str | None, str | None]:
    """The operation, and a reason when the element and the SOAPAction disagree or name none."""
    action = (soap_action or "").strip().strip('"').strip()
    action = action.rsplit("/", 1)[-1].rsplit("#", 1)[-1] if action else ""
    element_op = None
    if body_child is not None and isinstance(body_child.tag, str):
        qname = etree.QName(body_child)
        if qname.namespace == NS and qname.localname.endswith("Request"):
            element_op = qname.localname.removesuffix("Request")
    operation = element_op if element_op in OPERATIONS else (action if action in OPERATIONS else None)
    if operation is None:
        return None, "no operation of the service in SOAPAction or the Body"
    if action != operation:
        return operation, f"SOAPAction {action!r} does not name the operation {operation}"
    if element_op != operation:
        return operation, f"the Body does not hold {operation}Request"
    return operation, None


_ENVELOPE = f"{{{SOAP11_NS}}}Envelope"
_BODY = f"{{{SOAP11_NS}}}Body"
_CONTEXT = f"{{{IC_NS}}}InvocationContext"
_PNR = f"{{{PNR_NS}}}PNR"
_CONTEXT_TAGS = {f"{{{IC_NS}}}{name}": name for name in CONTEXT_FELTER}
_AENDRING_TAGS = {f"{{{NS}}}{name}": name for name in AENDRINGER}


def _read_context(kald: Kald, context: etree._Element) -> None:
    for child in context:
        name = _CONTEXT_TAGS.get(child.tag) if isinstance(child.tag, str) else None
        if name is not None and kald.context[name] is None:
            kald.context[name] = child.text or ""


def read_request(data: bytes, soap_action: str | None, content_type: str | None = None) -> Kald:
    """The call in `data`: its operation, InvocationContext, PNR and list changes, and whether it
    is valid SOAP 1.1 against the WSDL's schema. Never raises for bad input."""
    kald = Kald()
    try:
        root = parse_xml(data)
    except XmlRefused as exc:
        kald.skema_fejl, kald.laesbar = str(exc), False
        return kald
    # The usual shape is walked directly (a thousand calls a second); anything else is searched.
    body = None
    if root.tag == _ENVELOPE:
        bodies = [c for c in root if c.tag == _BODY]
        body = bodies[0] if len(bodies) == 1 else None
    children = [c for c in body if isinstance(c.tag, str)] if body is not None else []
    request = children[0] if len(children) == 1 else None
    context = None
    if request is not None:
        context = next((c for c in request if c.tag == _CONTEXT), None)
    if context is None:
        context = root.find(f".//{_CONTEXT}")
    if context is not None:
        _read_context(kald, context)
    kald.operation, reason = _operation_of(request if request is not None else root.find(f".//{{{NS}}}*"), soap_action)
    media_type = (content_type or "").split(";")[0].strip().lower()
    if root.tag != _ENVELOPE or body is None:
        reason = "not a SOAP 1.1 Envelope with one Body"
    elif media_type != "text/xml":
        reason = f"Content-Type {media_type or 'missing'}: SOAP 1.1 is text/xml"
    elif request is None:
        reason = "the Body must hold exactly one request element"
    elif reason is None:
        reason = first_schema_error(request_schema(), request)
    if reason is None:
        for child in request:
            if child.tag == _PNR:
                kald.pnr = child.text or ""
            elif child.tag in _AENDRING_TAGS:
                kald.aendringer.append((_AENDRING_TAGS[child.tag], child.text or ""))
    kald.skema_fejl = None if reason is None else mask_text(reason)
    return kald


_SCHEMA: list[etree.XMLSchema] = []


def request_schema() -> etree.XMLSchema:
    if not _SCHEMA:
        _SCHEMA.append(load_schema(HERE / "sf1411.xsd"))
    return _SCHEMA[0]


def wsdl_bytes(address: str) -> bytes:
    """The WSDL with the address of the running endpoint."""
    text = WSDL_PATH.read_text(encoding="utf-8")
    return re.sub(r'location="[^"]*"', f'location="{escape_text(address)}"', text, count=1).encode()


# --- answers ------------------------------------------------------------------------------------

_ENVELOPE_START = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    f'<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body>'
)
_ENVELOPE_END = "</soap:Body></soap:Envelope>"


def _answer(operation: str, inner: str) -> bytes:
    return (
        f'{_ENVELOPE_START}<{operation}Response xmlns="{NS}">{inner}</{operation}Response>{_ENVELOPE_END}'
    ).encode()


def encode_ingen_sag(operation: str, periode: str) -> bytes:
    """The same bytes for an unknown CPR and an invisible one: only the period (sf1411-sf2610.md)."""
    return _answer(operation, f"<IngenSag><Periode>{periode}</Periode></IngenSag>")


def encode_social_pension(periode: str, felter: list[tuple[str, str]]) -> bytes:
    """SF1411_A's answer: Periode, then the (element, text) pairs given, already in the answer's
    order, already minimised (assets/sf1411_rules.py), texts already XML-escaped."""
    inner = "".join(f"<{name}>{value}</{name}>" for name, value in felter)
    return _answer("HentTillaegsprocent", f"<SocialPension><Periode>{periode}</Periode>{inner}</SocialPension>")


def encode_helbredssag(periode: str, sagsstatus: str, sagens_ejer: str, helbredsprocent: str | None) -> bytes:
    procent = f"<Helbredsprocent>{helbredsprocent}</Helbredsprocent>" if helbredsprocent else ""
    return _answer(
        "HentHelbredsprocent",
        f"<Helbredssag><Periode>{periode}</Periode><Sagsstatus>{sagsstatus}</Sagsstatus>"
        f"<SagensEjer>{sagens_ejer}</SagensEjer>{procent}</Helbredssag>",
    )


def encode_kvittering(antal_pnr: int, antal_kommuner: int) -> bytes:
    return _answer(
        "OpdaterVaerdiliste",
        f"<Kvittering><AntalPNR>{antal_pnr}</AntalPNR><AntalKommuner>{antal_kommuner}</AntalKommuner></Kvittering>",
    )


def encode_fault(fejlkode: str, detalje: str | None = None) -> bytes:
    """A SOAP 1.1 Fault, faultcode soap:Client, detail `Fejl/Fejlkode` (sent with HTTP 500)."""
    tekst = FEJLTEKSTER[fejlkode]
    fejltekst = f"<Fejltekst>{escape_text(mask_text(detalje))}</Fejltekst>" if detalje else ""
    return (
        f"{_ENVELOPE_START}<soap:Fault><faultcode>soap:Client</faultcode>"
        f"<faultstring>{escape_text(tekst)}</faultstring>"
        f'<detail><Fejl xmlns="{NS}"><Fejlkode>{fejlkode}</Fejlkode>{fejltekst}</Fejl></detail>'
        f"</soap:Fault>{_ENVELOPE_END}"
    ).encode()
