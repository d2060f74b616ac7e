"""The SF1411_D payload (sf1411-sf2610.md "SF1411_D"): `TillaegsprocentAendring` in
`urn:oio:udk:pension:sf1411d:1`, the Beskeddata of a notice. Values are written as the SocialPension
answer writes them (kroner and percentages with two decimals, booleans `true`/`false`, dates
`YYYY-MM-DD`). Made many at a time from the long frame of changes the rules give
(assets/sf1411d_rules.py); read one at a time, judged against `sf1411d.xsd`. No Dagster."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from lxml import etree

from contracts.money import format_kroner_expr
from contracts.sf1411 import SOCIAL_PENSION_KOLONNER
from contracts.beskeddata import aendring_expr, boolean_tekst_expr
from contracts.xmlsafe import first_schema_error, load_schema

SF1411D_NS = "urn:oio:udk:pension:sf1411d:1"
SF1411D_XSD = Path(__file__).with_name("sf1411d.xsd")
ROOT = "TillaegsprocentAendring"

# The long frame of changes the rules give: one row per Aendring, in notice order (`felt_nr`, the
# position in SocialPension), or one row with `felt` null for OmfattesIkkeLaengere.
AENDRING_SCHEMA = pl.Schema(
    {
        "aftale": pl.String,
        "modtager": pl.String,
        "cpr": pl.String,
        "felt_nr": pl.Int16,
        "felt": pl.String,
        "foer": pl.String,
        "efter": pl.String,
    }
)

_BOOLEANS = {"under_administration", "samlevende", "udlandsophold", "bistands_plejetillaeg"}


def tekst_expr(kolonne: str, col: pl.Expr | None = None) -> pl.Expr:
    """The SocialPension text of pensionssager column `kolonne` (null stays null); `col` the
    expression holding it when not the column of that name."""
    col = pl.col(kolonne) if col is None else col
    if kolonne == "formue_oere":
        return format_kroner_expr(col)
    if kolonne in _BOOLEANS:
        return boolean_tekst_expr(col)
    if kolonne in ("tilkendelsesdato",):
        return col.dt.strftime("%Y-%m-%d")
    return col.cast(pl.String)


def payloads(aendringer: pl.DataFrame, *, periode: str, forrige_periode: str) -> pl.DataFrame:
    """One `TillaegsprocentAendring` per (aftale, modtager, cpr) of `aendringer`
    (AENDRING_SCHEMA): columns aftale, modtager, cpr, payload, in first-seen order."""
    parts = aendringer.sort(["aftale", "cpr", "felt_nr"], nulls_last=True).with_columns(
        pl.when(pl.col("felt").is_null())
        .then(pl.lit("<OmfattesIkkeLaengere/>"))
        .otherwise(aendring_expr())
        .alias("xml")
    )
    grouped = parts.group_by(["aftale", "modtager", "cpr"], maintain_order=True).agg(pl.col("xml").str.join(""))
    head = f'<{ROOT} xmlns="{SF1411D_NS}"><PNR>'
    return grouped.select(
        "aftale",
        "modtager",
        "cpr",
        pl.concat_str(
            [
                pl.lit(head),
                pl.col("cpr"),
                pl.lit(f"</PNR><Periode>{periode}</Periode><ForrigePeriode>{forrige_periode}</ForrigePeriode>"),
                pl.col("xml"),
                pl.lit(f"</{ROOT}>"),
            ]
        ).alias("payload"),
    )


def read_payload(element: etree._Element) -> dict:
    """The notice's content: pnr, periode, forrige_periode, aendringer [(felt, foer, efter)],
    omfattes_ikke_laengere. ValueError when it is not valid against sf1411d.xsd."""
    error = first_schema_error(load_schema(SF1411D_XSD), element)
    if error is not None:
        raise ValueError(f"ikke gyldig mod sf1411d.xsd: {error}")
    ns = {"d": SF1411D_NS}
    return {
        "pnr": element.findtext("d:PNR", namespaces=ns),
        "periode": element.findtext("d:Periode", namespaces=ns),
        "forrige_periode": element.findtext("d:ForrigePeriode", namespaces=ns),
        "aendringer": [
            (a.findtext("d:Felt", namespaces=ns), a.findtext("d:Foer", namespaces=ns), a.findtext("d:Efter", namespaces=ns))
            for a in element.findall("d:Aendring", namespaces=ns)
        ],
        "omfattes_ikke_laengere": element.find("d:OmfattesIkkeLaengere", namespaces=ns) is not None,
    }


FELTER = tuple(SOCIAL_PENSION_KOLONNER)
