"""SF1411's rules (sf1411-sf2610.md "Agreements and data minimisation"), as plain functions: who
may call, whom an agreement sees, and what it is shown. The web service calls these per request
on one case; the frame versions state the same rules for a frame (five-row tests, the notices).

A case as the service sees it is the look-up row the snapshot holds (`opslagsraekker`): the
SocialPension element texts (already written as the answer writes them) and Helbredsprocent."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from contracts.money import format_kroner_expr
from contracts.sf1411 import OPERATIONS, SOCIAL_PENSION_FELTER, SOCIAL_PENSION_KOLONNER
from pipelines.agreements import Agreement

# The look-up row: the SocialPension elements in the answer's order, then Helbredsprocent (SF1411_B).
OPSLAG_FELTER: tuple[str, ...] = (*SOCIAL_PENSION_FELTER, "Helbredsprocent")
KOMMUNE_FELTER = ("Bopaelskommune", "Bevillingskommune", "Administrationskommune")
_VISIBLE_THROUGH = {
    # sf1411-sf2610.md "Visible": A and D through any of the three, B only the home municipality's.
    "SF1411_A": KOMMUNE_FELTER,
    "SF1411_D": KOMMUNE_FELTER,
    "SF1411_B": ("Bopaelskommune",),
}


def aftale_for(agreements: Mapping[str, Agreement], context: Mapping[str, str | None], operation: str | None) -> Agreement | None:
    """The agreement the call is made under, or None (Fejlkode AFTALE): a known
    ServiceAgreementUUID, its own UserSystemUUID, and a service the agreement names."""
    agreement = agreements.get((context.get("ServiceAgreementUUID") or "").strip().lower())
    if agreement is None:
        return None
    if (context.get("UserSystemUUID") or "").strip().lower() != agreement.user_system_uuid:
        return None
    if operation is not None and not agreement.allows(OPERATIONS[operation]):
        return None
    return agreement


def pnr_gyldig(value: str | None) -> bool:
    """sf1411-sf2610.md: a PNR is ten ASCII digits (else Fejlkode PNR). Whether it is a real CPR
    does not matter: one without a case is answered IngenSag like any other."""
    return value is not None and len(value) == 10 and value.isascii() and value.isdigit()


def synlig(raekke: Mapping[str, str | None], agreement: Agreement, service: str) -> bool:
    """Is the case visible under the agreement for the service?"""
    return any(raekke.get(felt) in agreement.kommuner for felt in _VISIBLE_THROUGH[service])


def minimer(raekke: Mapping[str, str | None], agreement: Agreement) -> list[tuple[str, str]]:
    """The SocialPension elements the agreement may see and whose value is not null, in the
    answer's order (agreement.felter is kept in that order)."""
    return [(felt, raekke[felt]) for felt in agreement.felter if raekke.get(felt) is not None]


# --- the same rules over frames ---------------------------------------------------------------


def synlige(opslag: pl.DataFrame, agreement: Agreement, service: str) -> pl.DataFrame:
    """The look-up rows visible under the agreement for the service."""
    kommuner = sorted(agreement.kommuner)
    return opslag.filter(pl.any_horizontal(pl.col(f).is_in(kommuner).fill_null(False) for f in _VISIBLE_THROUGH[service]))


def minimerede(opslag: pl.DataFrame, agreement: Agreement) -> pl.DataFrame:
    """cpr and only the agreement's felter (nulls stay null: they are left out of the answer)."""
    return opslag.select("cpr", *agreement.felter)


def _text(column: str, dtype: pl.DataType) -> pl.Expr:
    """A register value as the answer writes it (sf1411-sf2610.md): booleans true/false, decimals
    with two decimals, dates YYYY-MM-DD, formue as kroner with two decimals (øre inside)."""
    value = pl.col(column)
    if dtype == pl.Boolean:
        text = pl.when(value).then(pl.lit("true")).when(~value).then(pl.lit("false"))
    elif isinstance(dtype, pl.Decimal):
        text = value.cast(pl.String)
    elif dtype == pl.Date:
        text = value.dt.strftime("%Y-%m-%d")
    elif column == "formue_oere":
        text = format_kroner_expr(value)
    else:
        # Text columns are code lists or patterns under the register contract (register.md,
        # docs/decisions.md), which has passed before a snapshot is built: nothing to escape, and
        # write_snapshot refuses a value that would need it.
        text = value
    return text


def opslagsraekker(pensionssager: pl.DataFrame) -> pl.DataFrame:
    """P's pensionssager as look-up rows: cpr, then one text per OPSLAG_FELTER (null where the
    register has none), in the register's order (write_snapshot sorts what it writes)."""
    schema = pensionssager.schema
    kolonner = {**SOCIAL_PENSION_KOLONNER, "Helbredsprocent": "helbredsprocent"}
    return pensionssager.select(
        "cpr", *[_text(kolonne, schema[kolonne]).alias(felt) for felt, kolonne in kolonner.items()]
    )
