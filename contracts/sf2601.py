"""The SF2601 codec: Pensionsudbetaling under administration (UDK → KY), sf2601.md.

A polars frame of one administering municipality's citizens in, XML bytes out; and back, for
tests, audits and the demo printout. The bytes are a pure function of the arguments (fixed
declaration, fixed indentation, rows by CPR), so an unchanged period re-encodes to identical
bytes (operations.md "Idempotency and audit"). Every file written validates against `sf2601.xsd`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
from lxml import etree

from contracts.cpr import mask_cpr
from contracts.money import format_kroner, format_kroner_expr, parse_kroner, parse_kroner_expr
from contracts.sf6111 import check_delivery, delivery_filnavn, scan_files
from contracts.xmlsafe import (
    UNWRITABLE_XML_CHARS,
    escape_text,
    escape_text_expr,
    first_schema_error,
    load_schema,
    parse_xml,
)

SF2601_NS = "urn:oio:udk:pension:sf2601:1"
SF2601_XSD = Path(__file__).with_name("sf2601.xsd")
ROOT = "PensionsudbetalingUnderAdministration"

# The frame on both sides of the codec: the rows of assets/sf2601_rules.py `sf2601_rows`.
UDBETALING_SCHEMA = pl.Schema(
    {
        "kommunekode": pl.String,
        "cpr": pl.String,
        "pensionstype": pl.String,
        "brutto_oere": pl.Int64,
        "skat_oere": pl.Int64,
        "netto_oere": pl.Int64,
        "traek_oere": pl.Int64,
        "udbetalt_oere": pl.Int64,
    }
)

# sf2601.md: the children of an `Udbetaling`, in order (netto is brutto − skat, not in the file).
_UDBETALING_ELEMENTS = [
    ("CPR", "cpr"),
    ("Pensionstype", "pensionstype"),
    ("BruttoBeloeb", "brutto_oere"),
    ("SkatBeloeb", "skat_oere"),
    ("TraekBeloeb", "traek_oere"),
    ("UdbetaltBeloeb", "udbetalt_oere"),
]
_AMOUNTS = {"brutto_oere", "skat_oere", "traek_oere", "udbetalt_oere"}

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


class Sf2601Error(ValueError):
    """The frame cannot be written as an SF2601 file, or the bytes are not one; the message says why."""


def sf2601_filnavn(kommunekode: str, periode: str, loebenummer: int) -> str:
    """sf2601.md: `SF2601_<kommunekode>_<YYYYMM>_<nnn>.xml`."""
    return delivery_filnavn("SF2601", kommunekode, periode, loebenummer)


# --- Encoding -----------------------------------------------------------------------------------


def encode_sf2601(
    kommunekode: str,
    periode: str,
    udbetalingsdato: dt.date,
    loebenummer: int,
    udbetalinger: pl.DataFrame,
) -> bytes:
    """The SF2601 file for one administering municipality and period; `udbetalinger` is that
    municipality's rows of `sf2601_rows` (columns UDBETALING_SCHEMA, any order of rows)."""
    check_delivery(kommunekode, periode, loebenummer)
    _check_payday(udbetalingsdato)
    udbetalinger = _checked_udbetalinger(kommunekode, udbetalinger)
    records = udbetalinger.sort("cpr").select(_udbetaling_record().str.join("")).item()
    return _file(
        kommunekode, periode, udbetalingsdato, loebenummer,
        udbetalinger.height, int(udbetalinger["udbetalt_oere"].sum()), records,
    )


def encode_sf2601_files(
    periode: str, udbetalingsdato: dt.date, loebenummer: int, udbetalinger: pl.DataFrame
) -> dict[str, bytes]:
    """encode_sf2601 for every administering municipality of `udbetalinger` (the rows of
    sf2601_rows for P) at once: {kommunekode: the file's bytes}, in kommunekode order, byte for
    byte what encode_sf2601 gives each municipality's rows; one polars pass, the same refusals."""
    _check_payday(udbetalingsdato)
    udbetalinger = _checked_udbetalinger(None, udbetalinger)
    for kommunekode in udbetalinger["kommunekode"].unique().sort():
        check_delivery(kommunekode, periode, loebenummer)
    per_kommune = (
        udbetalinger.sort("kommunekode", "cpr")
        .group_by("kommunekode", maintain_order=True)
        .agg(antal=pl.len(), samlet=pl.col("udbetalt_oere").sum(), records=_udbetaling_record().str.join(""))
    )
    return {
        row["kommunekode"]: _file(
            row["kommunekode"], periode, udbetalingsdato, loebenummer, row["antal"], row["samlet"], row["records"]
        )
        for row in per_kommune.iter_rows(named=True)
    }


def _check_payday(udbetalingsdato: dt.date) -> None:
    if not isinstance(udbetalingsdato, dt.date) or isinstance(udbetalingsdato, dt.datetime):
        raise Sf2601Error(f"udbetalingsdato must be a date, not {udbetalingsdato!r}")


def _file(
    kommunekode: str, periode: str, udbetalingsdato: dt.date, loebenummer: int,
    antal: int, samlet_oere: int, records: str,
) -> bytes:
    header = [
        ("Kommunekode", kommunekode),
        ("Periode", periode),
        ("Udbetalingsdato", udbetalingsdato.isoformat()),
        ("Loebenummer", str(loebenummer)),
        ("AntalPersoner", str(antal)),
        # sf2601.md: equals the single transfer to the municipality's NemKonto for P.
        ("SamletUdbetaltBeloeb", format_kroner(samlet_oere)),
    ]
    return "".join(
        [
            _DECLARATION,
            f'<{ROOT} xmlns="{SF2601_NS}">\n',
            *(f"  <{name}>{escape_text(value)}</{name}>\n" for name, value in header),
            records,
            f"</{ROOT}>\n",
        ]
    ).encode("utf-8")


def _udbetaling_record() -> pl.Expr:
    """One `Udbetaling` element per row; the caller sorts by CPR."""
    parts: list[pl.Expr] = [pl.lit("  <Udbetaling>\n")]
    for element, column in _UDBETALING_ELEMENTS:
        value = format_kroner_expr(column) if column in _AMOUNTS else escape_text_expr(pl.col(column))
        parts += [pl.lit(f"    <{element}>"), value, pl.lit(f"</{element}>\n")]
    parts.append(pl.lit("  </Udbetaling>\n"))
    return pl.concat_str(parts)


def _checked_udbetalinger(kommunekode: str | None, udbetalinger: pl.DataFrame) -> pl.DataFrame:
    """The frame as the file needs it, or Sf2601Error naming what is wrong (CPRs masked). With
    kommunekode None: the rows of every municipality of P (encode_sf2601_files)."""
    missing = [name for name in UDBETALING_SCHEMA if name not in udbetalinger.columns]
    if missing:
        raise Sf2601Error(
            f"udbetalinger lacks the columns {missing}: pass the rows of sf2601_rows() for one municipality"
        )
    udbetalinger = udbetalinger.select([pl.col(n).cast(t) for n, t in UDBETALING_SCHEMA.items()])
    if udbetalinger.is_empty() and kommunekode is not None:
        raise Sf2601Error(
            f"no citizens for kommunekode {kommunekode}: sf2601.md sends SF2601 only to a "
            "municipality with at least one citizen in the period"
        )

    def refuse(problem: pl.Expr, what: str) -> None:
        bad = udbetalinger.filter(problem.fill_null(True))
        if bad.height:
            raise Sf2601Error(f"{bad.height} Udbetaling row(s) {what}, e.g. CPR {mask_cpr(bad['cpr'][0])}")

    if kommunekode is not None:
        refuse(
            pl.col("kommunekode") != kommunekode,
            f"belong to another municipality than {kommunekode}: encode one at a time",
        )
    refuse(pl.any_horizontal(pl.all().is_null()), "have an empty value")
    refuse(pl.struct("kommunekode", "cpr").is_duplicated(), "have a CPR twice: one Udbetaling per citizen")
    refuse(
        pl.any_horizontal([pl.col(c) < 0 for c in [*_AMOUNTS, "netto_oere"]]),
        "have a negative amount (traek may never exceed netto, settlement.md)",
    )
    # sf2601.md: netto = brutto − skat (register.md) and udbetalt = netto − traek.
    refuse(
        (pl.col("netto_oere") != pl.col("brutto_oere") - pl.col("skat_oere"))
        | (pl.col("udbetalt_oere") != pl.col("netto_oere") - pl.col("traek_oere")),
        "do not add up (netto = brutto − skat, udbetalt = netto − traek)",
    )
    refuse(
        pl.any_horizontal(pl.col("cpr", "pensionstype").str.contains(UNWRITABLE_XML_CHARS)),
        "contain a control character that XML cannot carry",
    )
    return udbetalinger


# --- Decoding -----------------------------------------------------------------------------------


def sf2601_schema() -> etree.XMLSchema:
    return load_schema(SF2601_XSD)


def validate_sf2601(data: bytes) -> etree._Element:
    """Parse with the hardened parser and validate against sf2601.xsd; the root, or Sf2601Error."""
    root = parse_xml(data)
    problem = first_schema_error(sf2601_schema(), root)
    if problem is not None:
        raise Sf2601Error(f"not a valid SF2601 file: {problem}")
    return root


def scan_sf2601(files: dict[str, bytes]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """contracts.sf6111.scan_sf6111 for SF2601 files: (one row per file: fil, kommunekode,
    antal_personer, samlet_udbetalt_oere as its header says, linjer_passer; one row per
    Udbetaling: fil, cpr, udbetalt_oere). No parser, no schema; decode_sf2601 is the full reading."""
    return scan_files(
        files,
        header={"kommunekode": "Kommunekode", "antal_personer": "AntalPersoner", "samlet_udbetalt_oere": "SamletUdbetaltBeloeb"},
        record="Udbetaling",
        columns={"cpr": "CPR", "udbetalt_oere": "UdbetaltBeloeb"},
        amounts={"samlet_udbetalt_oere", "udbetalt_oere"},
        counts={"antal_personer"},
    )


def decode_sf2601(data: bytes) -> tuple[dict, pl.DataFrame]:
    """The header (as written) and the Udbetaling rows (columns UDBETALING_SCHEMA, amounts in
    øre, netto = brutto − skat) of an SF2601 file; decode(encode(rows)) gives the rows back,
    sorted by cpr."""
    root = validate_sf2601(data)
    ns = {"u": SF2601_NS}

    def text(element: etree._Element, path: str) -> str | None:
        return element.findtext(path, namespaces=ns)

    header = {
        "kommunekode": text(root, "u:Kommunekode"),
        "periode": text(root, "u:Periode"),
        "udbetalingsdato": dt.date.fromisoformat(text(root, "u:Udbetalingsdato")),
        "loebenummer": int(text(root, "u:Loebenummer")),
        "antal_personer": int(text(root, "u:AntalPersoner")),
        "samlet_udbetalt_oere": parse_kroner(text(root, "u:SamletUdbetaltBeloeb")),
    }
    # The schema guarantees one of each element per Udbetaling, in order, and none of these
    # names occurs in the header: one pass per column with lxml's C iterator.
    columns = {
        column: [e.text for e in root.iter(f"{{{SF2601_NS}}}{element}")] for element, column in _UDBETALING_ELEMENTS
    }
    udbetalinger = (
        pl.DataFrame(columns, schema={name: pl.String for name in columns})
        .with_columns(*(parse_kroner_expr(column) for column in sorted(_AMOUNTS)))
        .with_columns(
            kommunekode=pl.lit(header["kommunekode"]),
            netto_oere=pl.col("brutto_oere") - pl.col("skat_oere"),
        )
        .select([pl.col(n).cast(t) for n, t in UDBETALING_SCHEMA.items()])
    )
    return header, udbetalinger
