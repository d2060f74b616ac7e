"""The SF6111 codec: Træk i pension – specifikationsliste (UDK → KP), settlement.md.

A polars frame of one municipality's settled requests in, XML bytes out; and back, for tests,
audits and the demo printout. The bytes are a pure function of the arguments (fixed declaration,
fixed indentation, rows in byte order), so an unchanged period re-encodes to identical bytes
(operations.md "Idempotency and audit"). Every file written validates against `sf6111.xsd`.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl
from lxml import etree

from contracts.codes import kommunekoder
from contracts.cpr import mask_cpr
from contracts.money import (
    format_kroner,
    format_kroner_expr,
    parse_kroner,
    parse_kroner_expr,
)
from contracts.xmlsafe import (
    UNWRITABLE_XML_CHARS,
    escape_text,
    escape_text_expr,
    first_schema_error,
    load_schema,
    parse_xml,
)
from pipelines.calendar import parse_periode

SF6111_NS = "urn:oio:udk:pension:sf6111:1"
SF6111_XSD = Path(__file__).with_name("sf6111.xsd")
ROOT = "TraekSpecifikationsliste"

AFREGNET = "AFREGNET"
AFVIST = "AFVIST"

# The frame on both sides of the codec: the rows of the settlement (assets/settlement_rules.py).
TRAEK_SCHEMA = pl.Schema(
    {
        "periode": pl.String,
        "kommunekode": pl.String,
        "anmodning_id": pl.String,
        "cpr": pl.String,
        "traekart": pl.String,
        "anmodet_oere": pl.Int64,
        "afregnet_oere": pl.Int64,
        "status": pl.String,
        "kode": pl.String,
        "tekst": pl.String,
    }
)

# settlement.md: the children of a `Traek`, in order, before the optional `Aarsag`.
_TRAEK_ELEMENTS = [
    ("AnmodningId", "anmodning_id"),
    ("CPR", "cpr"),
    ("Traekart", "traekart"),
    ("AnmodetBeloeb", "anmodet_oere"),
    ("AfregnetBeloeb", "afregnet_oere"),
    ("Status", "status"),
]
_AMOUNTS = {"anmodet_oere", "afregnet_oere"}

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


class Sf6111Error(ValueError):
    """The frame cannot be written as an SF6111 file, or the bytes are not one; the message says why."""


# --- The delivery's name and header (shared by the UDK → municipality file types) --------------


def check_delivery(kommunekode: str, periode: str, loebenummer: int) -> None:
    """The header values every UDK → municipality delivery is named by; raise ValueError naming
    the fix when one is wrong."""
    if kommunekode not in kommunekoder():
        raise ValueError(
            f"kommunekode {kommunekode!r} is not one of contracts/kommuner.csv (four digits, e.g. '0101')"
        )
    parse_periode(periode)  # ValueError naming the fix
    if isinstance(loebenummer, bool) or not isinstance(loebenummer, int) or not 1 <= loebenummer <= 999:
        raise ValueError(
            f"loebenummer {loebenummer!r} must be a whole number 1–999 (the file name has three digits)"
        )


def delivery_filnavn(prefix: str, kommunekode: str, periode: str, loebenummer: int) -> str:
    """`<prefix>_<kommunekode>_<YYYYMM>_<nnn>.xml`, nnn the delivery's Loebenummer with three digits."""
    check_delivery(kommunekode, periode, loebenummer)
    return f"{prefix}_{kommunekode}_{periode.replace('-', '')}_{loebenummer:03d}.xml"


def sf6111_filnavn(kommunekode: str, periode: str, loebenummer: int) -> str:
    """settlement.md: `SF6111_<kommunekode>_<YYYYMM>_<nnn>.xml`."""
    return delivery_filnavn("SF6111", kommunekode, periode, loebenummer)


# --- Encoding -----------------------------------------------------------------------------------


def encode_sf6111(
    kommunekode: str,
    periode: str,
    udbetalingsdato: dt.date,
    loebenummer: int,
    traek: pl.DataFrame,
) -> bytes:
    """The SF6111 file for one municipality and period; `traek` is that municipality's rows of
    the settlement (columns TRAEK_SCHEMA, any order of rows)."""
    check_delivery(kommunekode, periode, loebenummer)
    _check_payday(udbetalingsdato)
    traek = _checked_traek(kommunekode, periode, traek)
    antal_afregnet = traek.filter(pl.col("status") == AFREGNET).height
    records = traek.sort("anmodning_id").select(_traek_record(traek).str.join("")).item()
    return _file(
        kommunekode, periode, udbetalingsdato, loebenummer,
        traek.height, antal_afregnet, int(traek["afregnet_oere"].sum()), records,
    )


def encode_sf6111_files(
    periode: str, udbetalingsdato: dt.date, loebenummer: int, settled: pl.DataFrame
) -> dict[str, bytes]:
    """encode_sf6111 for every municipality of `settled` (the rows of settle() for P) at once:
    {kommunekode: the file's bytes}, in kommunekode order, byte for byte what encode_sf6111 gives
    each municipality's rows. One polars pass over the period instead of one per municipality
    (polars spreads it over the cores); the same refusals."""
    _check_payday(udbetalingsdato)
    traek = _checked_traek(None, periode, settled)
    for kommunekode in traek["kommunekode"].unique().sort():
        check_delivery(kommunekode, periode, loebenummer)
    per_kommune = (
        traek.sort("kommunekode", "anmodning_id")
        .group_by("kommunekode", maintain_order=True)
        .agg(
            antal=pl.len(),
            afregnet=(pl.col("status") == AFREGNET).sum(),
            samlet=pl.col("afregnet_oere").sum(),
            records=_traek_record(traek).str.join(""),
        )
    )
    return {
        row["kommunekode"]: _file(
            row["kommunekode"], periode, udbetalingsdato, loebenummer,
            row["antal"], row["afregnet"], row["samlet"], row["records"],
        )
        for row in per_kommune.iter_rows(named=True)
    }


def _check_payday(udbetalingsdato: dt.date) -> None:
    if not isinstance(udbetalingsdato, dt.date) or isinstance(udbetalingsdato, dt.datetime):
        raise Sf6111Error(f"udbetalingsdato must be a date, not {udbetalingsdato!r}")


def _file(
    kommunekode: str, periode: str, udbetalingsdato: dt.date, loebenummer: int,
    antal: int, antal_afregnet: int, samlet_oere: int, records: str,
) -> bytes:
    header = [
        ("Kommunekode", kommunekode),
        ("Periode", periode),
        ("Udbetalingsdato", udbetalingsdato.isoformat()),
        ("Loebenummer", str(loebenummer)),
        ("AntalTraek", str(antal)),
        ("AntalAfregnet", str(antal_afregnet)),
        ("AntalAfvist", str(antal - antal_afregnet)),
        # settlement.md: the amount UDK pays the municipality for P.
        ("SamletAfregnetBeloeb", format_kroner(samlet_oere)),
    ]
    return "".join(
        [
            _DECLARATION,
            f'<{ROOT} xmlns="{SF6111_NS}">\n',
            *(f"  <{name}>{escape_text(value)}</{name}>\n" for name, value in header),
            records,
            f"</{ROOT}>\n",
        ]
    ).encode("utf-8")


def _traek_record(traek: pl.DataFrame) -> pl.Expr:
    """One `Traek` element per row of `traek`; the caller sorts by AnmodningId in byte order
    (polars compares strings by their UTF-8 bytes, never by locale)."""
    # A column with no &, < or > in any row is its own escape: escaping six columns of 300,000
    # rows was the larger part of encoding a national period (issue 11).
    text = [column for _, column in _TRAEK_ELEMENTS if column not in _AMOUNTS] + ["kode", "tekst"]
    special = traek.select(pl.col(text).str.contains("[&<>]").any()).row(0, named=True)

    def escaped(column: str) -> pl.Expr:
        return escape_text_expr(pl.col(column)) if special[column] else pl.col(column)

    parts: list[pl.Expr] = [pl.lit("  <Traek>\n")]
    for element, column in _TRAEK_ELEMENTS:
        value = format_kroner_expr(column) if column in _AMOUNTS else escaped(column)
        parts += [pl.lit(f"    <{element}>"), value, pl.lit(f"</{element}>\n")]
    aarsag = (
        pl.when(pl.col("status") == AFVIST)
        .then(
            pl.concat_str(
                pl.lit("    <Aarsag><Kode>"),
                escaped("kode"),
                pl.lit("</Kode><Tekst>"),
                escaped("tekst"),
                pl.lit("</Tekst></Aarsag>\n"),
            )
        )
        .otherwise(pl.lit(""))
    )
    parts += [aarsag, pl.lit("  </Traek>\n")]
    return pl.concat_str(parts)


def _checked_traek(kommunekode: str | None, periode: str, traek: pl.DataFrame) -> pl.DataFrame:
    """The frame as the file needs it, or Sf6111Error naming what is wrong (CPRs masked). With
    kommunekode None: the rows of every municipality of P (encode_sf6111_files)."""
    missing = [name for name in TRAEK_SCHEMA if name not in traek.columns]
    if missing:
        raise Sf6111Error(f"traek lacks the columns {missing}: pass the rows of settle() for one municipality")
    traek = traek.select([pl.col(name).cast(dtype) for name, dtype in TRAEK_SCHEMA.items()])
    if traek.is_empty() and kommunekode is not None:
        raise Sf6111Error(
            f"no rows for kommunekode {kommunekode} in {periode}: settlement.md sends SF6111 only to "
            "a municipality with at least one active request"
        )

    def refuse(problem: pl.Expr, what: str) -> None:
        bad = traek.filter(problem.fill_null(True))
        if bad.height:
            example = bad.row(0, named=True)
            raise Sf6111Error(
                f"{bad.height} Traek row(s) {what}, e.g. AnmodningId {example['anmodning_id']!r} "
                f"for CPR {mask_cpr(example['cpr'])}"
            )

    if kommunekode is None:
        refuse(pl.col("periode") != periode, f"belong to another period than {periode}")
    else:
        refuse(
            (pl.col("kommunekode") != kommunekode) | (pl.col("periode") != periode),
            f"belong to another municipality or period than {kommunekode} {periode}: "
            "encode one municipality at a time",
        )
    required = ["anmodning_id", "cpr", "traekart", "anmodet_oere", "afregnet_oere", "status"]
    refuse(pl.any_horizontal(pl.col(required).is_null()), f"have an empty value in one of {required}")
    refuse(
        pl.struct("kommunekode", "anmodning_id").is_duplicated(),
        "have an AnmodningId twice: each request has one outcome",
    )
    refuse(~pl.col("status").is_in([AFREGNET, AFVIST]), "have a status other than AFREGNET or AFVIST")
    refuse(
        (pl.col("status") == AFVIST) & (pl.col("kode").is_null() | pl.col("tekst").is_null()),
        "are AFVIST without kode and tekst (the file's Aarsag)",
    )
    refuse(
        (pl.col("anmodet_oere") < 0) | (pl.col("afregnet_oere") < 0),
        "have a negative amount",
    )
    text = ["anmodning_id", "cpr", "traekart", "status", "kode", "tekst"]
    refuse(
        pl.any_horizontal(pl.col(text).str.contains(UNWRITABLE_XML_CHARS).fill_null(False)),
        "contain a control character that XML cannot carry",
    )
    return traek


# --- Decoding -----------------------------------------------------------------------------------


def traek_keys(files: dict[str, bytes]) -> tuple[pl.DataFrame, list[str]]:
    """Every Traek's (AnmodningId, CPR) in SF6111 files as encode_sf6111 writes them, quickly,
    for the check that no municipality gets another's citizens: ({kommunekode: data} in; a frame
    kommunekode, anmodning_id, cpr out, with the file's key as kommunekode), and the keys of files
    where not every `<Traek>` could be read so (never in the encoder's files: the check fails).
    No XML parser and no schema: one regular expression over each file; decode_sf6111 is the
    full reading. Values are unescaped as escape_text escapes them."""
    opening, middle, closing = "<Traek>\n    <AnmodningId>", "</AnmodningId>\n    <CPR>", "</CPR>\n"
    texts = pl.DataFrame(
        {"kommunekode": list(files), "xml": [data.decode("utf-8", errors="replace") for data in files.values()]},
        schema={"kommunekode": pl.String, "xml": pl.String},
    ).with_columns(
        pair=pl.col("xml").str.extract_all(re.escape(opening) + "[^<]*" + re.escape(middle) + "[^<]*" + re.escape(closing)),
        traek=pl.col("xml").str.count_matches("<Traek>", literal=True),
    )
    readable = pl.col("pair").list.len() == pl.col("traek")
    unreadable = texts.filter(~readable)["kommunekode"].to_list()
    keys = (
        texts.filter(readable)
        .select("kommunekode", "pair")
        .explode("pair")
        .filter(pl.col("pair").is_not_null())
        .select(
            "kommunekode",
            pl.col("pair").str.strip_prefix(opening).str.strip_suffix(closing).str.split_exact(middle, 1)
            .struct.rename_fields(["anmodning_id", "cpr"]).alias("keys"),
        )
        .unnest("keys")
    )
    if not texts["xml"].str.contains("&", literal=True).any():  # nothing escaped: nothing to undo
        return keys, unreadable
    return keys.with_columns(_unescape(pl.col("anmodning_id")), _unescape(pl.col("cpr"))), unreadable


def scan_files(
    files: dict[str, bytes],
    *,
    header: dict[str, str],
    record: str,
    columns: dict[str, str],
    amounts: set[str],
    counts: set[str],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """scan_sf6111's reading for any of the UDK → municipality files (SF2601 too): header
    elements (first occurrence), and per record element the listed children, unescaped."""
    texts = pl.DataFrame(
        {"fil": list(files), "xml": [data.decode("utf-8", errors="replace") for data in files.values()]},
        schema={"fil": pl.String, "xml": pl.String},
    )

    def value(element: str) -> pl.Expr:
        return pl.col("xml").str.extract(f"<{element}>([^<]*)</{element}>", 1)

    def number(name: str, expr: pl.Expr) -> pl.Expr:
        if name in amounts:
            return parse_kroner_expr(expr)
        if name in counts:
            return pl.when(expr.str.contains(r"^[0-9]{1,9}$")).then(expr.cast(pl.Int64, strict=False))
        return _unescape(expr)

    found = {column: pl.col("xml").str.extract_all(f"<{element}>[^<]*</{element}>") for column, element in columns.items()}
    scanned = texts.with_columns(
        *(number(name, value(element)).alias(name) for name, element in header.items()),
        antal_poster=pl.col("xml").str.count_matches(f"<{record}>", literal=True),
        **found,
    ).drop("xml")
    lengths = [pl.col(column).list.len() for column in columns]
    scanned = scanned.with_columns(
        linjer_passer=pl.all_horizontal([length == pl.col("antal_poster") for length in lengths])
    )
    headers = scanned.select("fil", *header, "linjer_passer")
    records = (
        scanned.filter("linjer_passer")
        .select("fil", *columns)
        .explode(list(columns))
        .filter(pl.col(next(iter(columns))).is_not_null())  # a file without records: no row
        .with_columns(
            number(name, pl.col(name).str.strip_prefix(f"<{element}>").str.strip_suffix(f"</{element}>")).alias(name)
            for name, element in columns.items()
        )
    )
    return headers, records


def _unescape(text: pl.Expr) -> pl.Expr:
    """escape_text_expr undone (`&amp;` last, so nothing is unescaped twice)."""
    return (
        text.str.replace_all("&lt;", "<", literal=True)
        .str.replace_all("&gt;", ">", literal=True)
        .str.replace_all("&amp;", "&", literal=True)
    )


def sf6111_schema() -> etree.XMLSchema:
    return load_schema(SF6111_XSD)


def validate_sf6111(data: bytes) -> etree._Element:
    """Parse with the hardened parser and validate against sf6111.xsd; the root, or Sf6111Error."""
    root = parse_xml(data)
    problem = first_schema_error(sf6111_schema(), root)
    if problem is not None:
        raise Sf6111Error(f"not a valid SF6111 file: {problem}")
    return root


def decode_sf6111(data: bytes) -> tuple[dict, pl.DataFrame]:
    """The header (as written) and the Traek rows (columns TRAEK_SCHEMA, amounts in øre) of an
    SF6111 file; decode(encode(rows)) gives the rows back, sorted by anmodning_id."""
    root = validate_sf6111(data)
    ns = {"t": SF6111_NS}

    def text(element: etree._Element, path: str) -> str | None:
        return element.findtext(path, namespaces=ns)

    header = {
        "kommunekode": text(root, "t:Kommunekode"),
        "periode": text(root, "t:Periode"),
        "udbetalingsdato": dt.date.fromisoformat(text(root, "t:Udbetalingsdato")),
        "loebenummer": int(text(root, "t:Loebenummer")),
        "antal_traek": int(text(root, "t:AntalTraek")),
        "antal_afregnet": int(text(root, "t:AntalAfregnet")),
        "antal_afvist": int(text(root, "t:AntalAfvist")),
        "samlet_afregnet_oere": parse_kroner(text(root, "t:SamletAfregnetBeloeb")),
    }
    # The schema guarantees one of each element per Traek, in order, and none of these names
    # occurs in the header, so each column is one pass over the document (lxml's C iterator);
    # Aarsag exists exactly for the AFVIST records.
    columns = {
        column: [e.text for e in root.iter(f"{{{SF6111_NS}}}{element}")] for element, column in _TRAEK_ELEMENTS
    }
    rejected = [status == "AFVIST" for status in columns["status"]]
    for column, element in (("kode", "Kode"), ("tekst", "Tekst")):
        values = [e.text for e in root.iter(f"{{{SF6111_NS}}}{element}")]
        if len(values) != sum(rejected):
            raise Sf6111Error("not a valid SF6111 file: an Aarsag belongs to exactly the AFVIST records")
        found = iter(values)
        columns[column] = [next(found) if is_rejected else None for is_rejected in rejected]
    traek = (
        pl.DataFrame(columns, schema={name: pl.String for name in columns})
        .with_columns(
            parse_kroner_expr("anmodet_oere"),
            parse_kroner_expr("afregnet_oere"),
            periode=pl.lit(header["periode"]),
            kommunekode=pl.lit(header["kommunekode"]),
        )
        .select([pl.col(name).cast(dtype) for name, dtype in TRAEK_SCHEMA.items()])
    )
    return header, traek
