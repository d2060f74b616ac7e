"""The SF2610 payloads (sf1411-sf2610.md "SF2610"), namespace `urn:oio:udk:pension:sf2610:1`, root
element = the message type: TIP_PensionAdvis and TIP_PensionAfgoerelse (UDK Pension → UDK SAL),
TIP_OvergangFolkepension (UDK SAL → UDK Pension). Values are written as in the register (text as
is, booleans `true`/`false`, dates `YYYY-MM-DD`, decimals with two decimals, `formue_oere` as its
integer). Made many at a time from the rules' frames (assets/sf2610_rules.py); read one at a
time, judged against `sf2610.xsd`. No Dagster."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from lxml import etree

from contracts.beskedkuvert import TIP_OVERGANG_FOLKEPENSION, TIP_PENSION_ADVIS, TIP_PENSION_AFGOERELSE
from contracts.register import PENSIONSSAGER_SCHEMA
from contracts.beskeddata import aendring_expr, boolean_tekst_expr, element_expr
from contracts.xmlsafe import first_schema_error, load_schema

SF2610_NS = "urn:oio:udk:pension:sf2610:1"
SF2610_XSD = Path(__file__).with_name("sf2610.xsd")

# register.md's column order, without `cpr` and `doedsdato` (a death is TIP_PensionAdvis).
AFGOERELSE_KOLONNER: tuple[str, ...] = tuple(c for c in PENSIONSSAGER_SCHEMA.names() if c not in ("cpr", "doedsdato"))

# One row per Aendring of a TIP_PensionAfgoerelse, in message order (`felt_nr`: register order).
AENDRING_SCHEMA = pl.Schema(
    {"cpr": pl.String, "felt_nr": pl.Int16, "felt": pl.String, "foer": pl.String, "efter": pl.String}
)


def register_tekst_expr(kolonne: str, col: pl.Expr | None = None) -> pl.Expr:
    """The register's own text of column `kolonne` (null stays null); `col` the expression
    holding it when not the column of that name."""
    col = pl.col(kolonne) if col is None else col
    dtype = PENSIONSSAGER_SCHEMA[kolonne]
    if dtype == pl.Boolean:
        return boolean_tekst_expr(col)
    if dtype == pl.Date:
        return col.dt.strftime("%Y-%m-%d")
    return col.cast(pl.String)


def advis_payloads(advis: pl.DataFrame) -> pl.DataFrame:
    """TIP_PensionAdvis per row of `advis` (cpr, doedsdato: date, samlever_cpr: the partner's
    CPR when samlevende, else null): columns cpr, payload."""
    return advis.select(
        "cpr",
        pl.concat_str(
            [
                pl.lit(f'<{TIP_PENSION_ADVIS} xmlns="{SF2610_NS}"><PNR>'),
                pl.col("cpr"),
                pl.lit("</PNR><Doedsdato>"),
                pl.col("doedsdato").dt.strftime("%Y-%m-%d"),
                pl.lit("</Doedsdato>"),
                element_expr("SamleverPNR", pl.col("samlever_cpr")),
                pl.lit(f"</{TIP_PENSION_ADVIS}>"),
            ]
        ).alias("payload"),
    )


def afgoerelse_payloads(aendringer: pl.DataFrame, *, periode: str) -> pl.DataFrame:
    """TIP_PensionAfgoerelse per cpr of `aendringer` (AENDRING_SCHEMA): columns cpr, payload."""
    parts = aendringer.sort(["cpr", "felt_nr"]).with_columns(aendring_expr().alias("xml"))
    grouped = parts.group_by("cpr", maintain_order=True).agg(pl.col("xml").str.join(""))
    return grouped.select(
        "cpr",
        pl.concat_str(
            [
                pl.lit(f'<{TIP_PENSION_AFGOERELSE} xmlns="{SF2610_NS}"><PNR>'),
                pl.col("cpr"),
                pl.lit(f"</PNR><Periode>{periode}</Periode>"),
                pl.col("xml"),
                pl.lit(f"</{TIP_PENSION_AFGOERELSE}>"),
            ]
        ).alias("payload"),
    )


def overgang_payload(pnr: str, fra_periode: str) -> str:
    """TIP_OvergangFolkepension (what UDK SAL sends; the demo and the tests play UDK SAL)."""
    return (
        f'<{TIP_OVERGANG_FOLKEPENSION} xmlns="{SF2610_NS}"><PNR>{pnr}</PNR>'
        f"<FraPeriode>{fra_periode}</FraPeriode></{TIP_OVERGANG_FOLKEPENSION}>"
    )


def read_payload(element: etree._Element) -> dict:
    """The content of an SF2610 payload: `type` (the root's name) and its values; ValueError when
    it is not valid against sf2610.xsd."""
    if element is None:
        raise ValueError("Beskeddata er tom")
    error = first_schema_error(load_schema(SF2610_XSD), element)
    if error is not None:
        raise ValueError(f"ikke gyldig mod sf2610.xsd: {error}")
    ns = {"t": SF2610_NS}
    kind = etree.QName(element).localname
    result: dict = {"type": kind, "pnr": element.findtext("t:PNR", namespaces=ns)}
    if kind == TIP_OVERGANG_FOLKEPENSION:
        result["fra_periode"] = element.findtext("t:FraPeriode", namespaces=ns)
    elif kind == TIP_PENSION_ADVIS:
        result["doedsdato"] = element.findtext("t:Doedsdato", namespaces=ns)
        result["samlever_pnr"] = element.findtext("t:SamleverPNR", namespaces=ns)
    else:
        result["periode"] = element.findtext("t:Periode", namespaces=ns)
        result["aendringer"] = [
            (a.findtext("t:Felt", namespaces=ns), a.findtext("t:Foer", namespaces=ns), a.findtext("t:Efter", namespaces=ns))
            for a in element.findall("t:Aendring", namespaces=ns)
        ]
    return result
