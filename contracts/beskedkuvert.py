"""The Beskedfordeler envelope: KOMBIT's `Haendelsesbesked` (sf1411-sf2610.md "The message
envelope"), the one place that makes and reads it, and the distributor's `StandardRetur` answer.

Messages are made many at a time (a period at national scale holds tens of thousands), so the
maker is a polars function over a frame of messages that writes each envelope as text around its
payload (`make_haendelsesbeskeder`); `make_haendelsesbesked` is the same for one. Every envelope
made is valid against `beskedfordeler/Beskedkuvert.xsd` (tests judge it with lxml); every envelope
read is judged against it before anything else is believed. No Dagster, no network."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from lxml import etree

from contracts.xmlsafe import XmlRefused, escape_text, escape_text_expr, first_schema_error, load_schema, parse_xml

KUVERT_NS = "urn:oio:besked:kuvert:1.0"
SAGDOK_NS = "urn:oio:sagdok:3.0.0"
KUVERT_XSD = Path(__file__).parent / "beskedfordeler" / "Beskedkuvert.xsd"

# The fixed identifiers of sf1411-sf2610.md "The message envelope".
BESKEDID_NAMESPACE = uuid.UUID("2a1c6f8e-6a55-5b7e-9c0d-3f1b2d4e5a60")
BESKED_VERSION = "1.0"
PERSON_OBJEKTTYPE = "ce7fcf97-a8a2-447a-8690-d38aa0f6e23c"
FORTROLIGE_PERSONOPLYSNINGER = "44f4108b-26d4-46de-a90f-35e35b55b8d8"
DEFAULT_UDK_SYSTEM_UUID = "5f0c2d1e-8b7a-4c3d-9e2f-1a0b9c8d7e6f"
BESKEDTYPE_URN = "urn:oio:udk:beskedtype:"
MODTAGER_URN = "urn:oio:udk:modtager:"
CPR_URN = "urn:oio:cpr-nr:"

SF1411_D = "SF1411_D"
TIP_PENSION_ADVIS = "TIP_PensionAdvis"
TIP_PENSION_AFGOERELSE = "TIP_PensionAfgoerelse"
TIP_OVERGANG_FOLKEPENSION = "TIP_OvergangFolkepension"
BESKEDTYPER = (SF1411_D, TIP_PENSION_ADVIS, TIP_PENSION_AFGOERELSE, TIP_OVERGANG_FOLKEPENSION)

# StandardRetur StatusKode (sf1411-sf2610.md "Delivery"): 20 accepted, 40 the message is invalid.
STATUS_MODTAGET = 20
STATUS_UGYLDIG = 40

# The frame of messages the maker reads: one row per message, `payload` the Beskeddata child as
# XML text (contracts/sf1411d.py, contracts/sf2610.py make it).
BESKED_SCHEMA = pl.Schema(
    {
        "beskedid": pl.String,
        "beskedtype": pl.String,
        "modtager": pl.String,
        "cpr": pl.String,
        "periode": pl.String,
        "payload": pl.String,
    }
)

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


class BeskedError(ValueError):
    """Bytes that are not a Haendelsesbesked this product accepts; the text says why."""


def beskedid(beskedtype: str, modtager: str, cpr: str, periode: str, forrige_periode: str) -> str:
    """UUID v5 of `<type>|<recipient>|<CPR>|<P>|<P′>`: a re-run makes the same id, so that a
    recipient can discard a repeat (sf1411-sf2610.md)."""
    return str(uuid.uuid5(BESKEDID_NAMESPACE, f"{beskedtype}|{modtager}|{cpr}|{periode}|{forrige_periode}"))


_NAMESPACE_BYTES = BESKEDID_NAMESPACE.bytes


def _uuid5_text(name: str) -> str:
    """uuid.uuid5(BESKEDID_NAMESPACE, name) as text (RFC 4122 §4.3: SHA-1 of namespace and name,
    version 5, variant 10), without making UUID objects: a national period has tens of thousands
    of messages (tests compare it with uuid.uuid5)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def beskedid_expr(beskedtype: pl.Expr, modtager: pl.Expr, cpr: pl.Expr, periode: pl.Expr, forrige: pl.Expr) -> pl.Expr:
    """`beskedid` over a frame (SHA-1 has no polars form: one hash per message, in one batch)."""
    name = pl.concat_str([beskedtype, modtager, cpr, periode, forrige], separator="|")
    return name.map_batches(
        lambda names: pl.Series([_uuid5_text(key) for key in names.to_list()], dtype=pl.String),
        return_dtype=pl.String,
    )


def tidsstempel(moment: dt.datetime) -> str:
    """xs:dateTime with offset, to the second."""
    if moment.tzinfo is None:
        raise ValueError("a Dannelsestidspunkt needs a time zone")
    return moment.replace(microsecond=0).isoformat()


def make_haendelsesbeskeder(
    beskeder: pl.DataFrame, *, afsender: str = DEFAULT_UDK_SYSTEM_UUID, dannet: dt.datetime
) -> pl.Series:
    """The envelope of every row of `beskeder` (BESKED_SCHEMA) as UTF-8 bytes, in row order."""
    unknown = set(beskeder["beskedtype"].unique().to_list()) - set(BESKEDTYPER)
    if unknown:
        raise ValueError(f"unknown beskedtype(r) {sorted(unknown)}: one of {BESKEDTYPER}")
    afsender = str(uuid.UUID(afsender))
    head = (
        f'{_DECLARATION}<Haendelsesbesked xmlns="{KUVERT_NS}" xmlns:sd="{SAGDOK_NS}">'
        "<BeskedId><sd:UUIDIdentifikator>"
    )
    text = pl.concat_str(
        [
            pl.lit(head),
            pl.col("beskedid"),
            pl.lit(
                f"</sd:UUIDIdentifikator></BeskedId><BeskedVersion>{BESKED_VERSION}</BeskedVersion>"
                f"<Beskedkuvert><Filtreringsdata><Beskedtype><sd:URNIdentifikator>{BESKEDTYPE_URN}"
            ),
            pl.col("beskedtype"),
            pl.lit(
                "</sd:URNIdentifikator></Beskedtype><BeskedAnsvarligAktoer><sd:UUIDIdentifikator>"
                f"{afsender}</sd:UUIDIdentifikator></BeskedAnsvarligAktoer>"
                f"<TilladtModtager><sd:URNIdentifikator>{MODTAGER_URN}"
            ),
            escape_text_expr(pl.col("modtager")),
            pl.lit(
                "</sd:URNIdentifikator></TilladtModtager><RelateretObjekt><ObjektId>"
                f"<sd:URNIdentifikator>{CPR_URN}"
            ),
            pl.col("cpr"),
            pl.lit(
                f"</sd:URNIdentifikator></ObjektId><ObjektType><sd:UUIDIdentifikator>{PERSON_OBJEKTTYPE}"
                "</sd:UUIDIdentifikator></ObjektType></RelateretObjekt></Filtreringsdata>"
                "<Leveranceinformation><Dannelsestidspunkt><sd:TidsstempelDatoTid>"
                f"{tidsstempel(dannet)}</sd:TidsstempelDatoTid></Dannelsestidspunkt>"
                f"<Sikkerhedsklassificering><sd:UUIDIdentifikator>{FORTROLIGE_PERSONOPLYSNINGER}"
                "</sd:UUIDIdentifikator></Sikkerhedsklassificering></Leveranceinformation>"
                "<GyldighedFra><sd:TidsstempelDatoTid>"
            ),
            pl.col("periode"),
            # GyldighedFra: the first day of P (sf1411-sf2610.md).
            pl.lit("-01T00:00:00</sd:TidsstempelDatoTid></GyldighedFra></Beskedkuvert><Beskeddata>"),
            pl.col("payload"),
            pl.lit("</Beskeddata></Haendelsesbesked>\n"),
        ]
    )
    return beskeder.select(text.cast(pl.Binary).alias("xml")).to_series()


def beskeder_af_payloads(
    payloads: pl.DataFrame, *, periode: str, forrige_periode: str, dannet: dt.datetime, afsender: str = DEFAULT_UDK_SYSTEM_UUID
) -> pl.DataFrame:
    """P's messages from a frame of payloads (beskedtype, modtager, cpr, payload and whatever else
    the caller keeps): `periode`, `forrige_periode`, the `beskedid` of the spec's rule and the
    envelope as `xml` added, `payload` dropped. The one maker of SF1411_D and SF2610 messages."""
    frame = payloads.with_columns(pl.lit(periode).alias("periode"), pl.lit(forrige_periode).alias("forrige_periode"))
    frame = frame.with_columns(
        beskedid_expr(pl.col("beskedtype"), pl.col("modtager"), pl.col("cpr"), pl.col("periode"), pl.col("forrige_periode")).alias("beskedid")
    )
    return frame.with_columns(make_haendelsesbeskeder(frame, afsender=afsender, dannet=dannet)).drop("payload")


def make_haendelsesbesked(
    *,
    beskedtype: str,
    modtager: str,
    cpr: str,
    periode: str,
    forrige_periode: str,
    payload: str,
    dannet: dt.datetime,
    afsender: str = DEFAULT_UDK_SYSTEM_UUID,
) -> bytes:
    """One message (BeskedId by the spec's rule)."""
    row = {
        "beskedid": beskedid(beskedtype, modtager, cpr, periode, forrige_periode),
        "beskedtype": beskedtype,
        "modtager": modtager,
        "cpr": cpr,
        "periode": periode,
        "payload": payload,
    }
    frame = pl.DataFrame([row], schema=BESKED_SCHEMA)
    return make_haendelsesbeskeder(frame, afsender=afsender, dannet=dannet)[0]


@dataclass(frozen=True)
class Haendelsesbesked:
    beskedid: str
    beskedtype: str  # the plain type, e.g. TIP_OvergangFolkepension
    afsender: str | None  # BeskedAnsvarligAktoer's UUID
    modtager: str  # the plain recipient id, e.g. udk-pension
    cpr: str | None  # from RelateretObjekt (urn:oio:cpr-nr:…)
    dannet: str | None
    payload: etree._Element | None  # the first element in Beskeddata


_K, _SD = f"{{{KUVERT_NS}}}", f"{{{SAGDOK_NS}}}"


def kuvert_schema() -> etree.XMLSchema:
    return load_schema(KUVERT_XSD)


def read_haendelsesbesked(data: bytes) -> Haendelsesbesked:
    """Judge `data` against Beskedkuvert.xsd and read what this product needs from it; raises
    `BeskedError` with the reason (never the CPR) when it is not a usable message."""
    try:
        root = parse_xml(data)
    except XmlRefused as exc:
        raise BeskedError(str(exc)) from None
    error = first_schema_error(kuvert_schema(), root)
    if error is not None:
        raise BeskedError(f"ikke gyldig mod Beskedkuvert.xsd: {error}")
    if root.tag != f"{{{KUVERT_NS}}}Haendelsesbesked":
        raise BeskedError(f"roden er {etree.QName(root).localname}, ikke Haendelsesbesked")

    # One step at a time from the elements found once: a message is read for every one published
    # (the emulator judges each), and an ElementPath search costs several times a child step.
    def one(element, *steps: str) -> str | None:
        for step in steps:
            if element is None:
                return None
            element = next(element.iterchildren(step), None)
        return (element.text or "").strip() if element is not None else None

    kuvert = next(root.iterchildren(_K + "Beskedkuvert"), None)
    filtrering = next(kuvert.iterchildren(_K + "Filtreringsdata"), None) if kuvert is not None else None
    besked_id = one(root, _K + "BeskedId", _SD + "UUIDIdentifikator")
    try:
        besked_id = str(uuid.UUID(besked_id or ""))
    except ValueError:
        raise BeskedError("BeskedId er ikke en UUID") from None
    beskedtype = one(filtrering, _K + "Beskedtype", _SD + "URNIdentifikator") or ""
    if not beskedtype.startswith(BESKEDTYPE_URN):
        raise BeskedError(f"Beskedtype er ikke {BESKEDTYPE_URN}<type>")
    modtager = one(filtrering, _K + "TilladtModtager", _SD + "URNIdentifikator") or ""
    if not modtager.startswith(MODTAGER_URN) or modtager == MODTAGER_URN:
        raise BeskedError(f"TilladtModtager er ikke {MODTAGER_URN}<modtager>")
    objekt = one(filtrering, _K + "RelateretObjekt", _K + "ObjektId", _SD + "URNIdentifikator")
    cpr = objekt.removeprefix(CPR_URN) if objekt and objekt.startswith(CPR_URN) else None
    beskeddata = root.find(_K + "Beskeddata")
    payload = [child for child in beskeddata if isinstance(child.tag, str)] if beskeddata is not None else []
    return Haendelsesbesked(
        beskedid=besked_id,
        beskedtype=beskedtype.removeprefix(BESKEDTYPE_URN),
        afsender=one(filtrering, _K + "BeskedAnsvarligAktoer", _SD + "UUIDIdentifikator"),
        modtager=modtager.removeprefix(MODTAGER_URN),
        cpr=cpr,
        dannet=one(kuvert, _K + "Leveranceinformation", _K + "Dannelsestidspunkt", _SD + "TidsstempelDatoTid"),
        payload=payload[0] if payload else None,
    )


# --- StandardRetur: the distributor's answer to each published message ---------------------------


def make_standard_retur(statuskode: int, fejlbesked: str | None = None) -> bytes:
    text = f"<sd:FejlbeskedTekst>{escape_text(fejlbesked)}</sd:FejlbeskedTekst>" if fejlbesked else ""
    return (
        f'{_DECLARATION}<sd:StandardRetur xmlns:sd="{SAGDOK_NS}">'
        f"<sd:StatusKode>{int(statuskode)}</sd:StatusKode>{text}</sd:StandardRetur>\n"
    ).encode()


@functools.lru_cache(maxsize=256)
def read_standard_retur(data: bytes) -> tuple[int, str | None]:
    """(StatusKode, FejlbeskedTekst) of an answer; BeskedError when it is not a StandardRetur.
    Remembered per bytes: nearly every answer is the same `20`, read once per run, not per message."""
    try:
        root = parse_xml(data)
    except XmlRefused as exc:
        raise BeskedError(f"StandardRetur: {exc}") from None
    if root.tag != f"{{{SAGDOK_NS}}}StandardRetur":
        raise BeskedError(f"StandardRetur forventet, fik {etree.QName(root).localname}")
    kode = root.findtext(f"{{{SAGDOK_NS}}}StatusKode")
    try:
        statuskode = int((kode or "").strip())
    except ValueError:
        raise BeskedError("StandardRetur uden heltallig StatusKode") from None
    return statuskode, root.findtext(f"{{{SAGDOK_NS}}}FejlbeskedTekst")
