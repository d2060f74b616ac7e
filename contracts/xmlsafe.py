"""The one hardened XML parser for everything that comes from outside.

No DTD is loaded, no entity is resolved or expanded, nothing is fetched from the network, and a
document with any DOCTYPE is refused outright (sf6110.md F01: a hardened parser refuses DTDs)."""

from __future__ import annotations

import polars as pl
import threading
from functools import cache
from pathlib import Path

from lxml import etree


class XmlRefused(ValueError):
    """The bytes are not a well-formed XML document this product is willing to read."""


_local = threading.local()


def _parser() -> etree.XMLParser:
    """One parser per thread (making one costs more than parsing a small message; a parser must
    not be shared between threads)."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = _new_parser()
    return parser


def _new_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_blank_text=False,
    )


@cache
def load_schema(path: Path) -> etree.XMLSchema:
    """One of the project's XML schemas, loaded once (no network, no entities)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.XMLSchema(etree.parse(str(path), parser))


# An XMLSchema's error log belongs to the schema object: validations in threads (the Dagster
# daemon's sensors, say) must not interleave.
_validation_lock = threading.Lock()


def first_schema_error(schema: etree.XMLSchema, root: etree._Element) -> str | None:
    """None when `root` is valid against `schema`, else `line N: message` of its first error."""
    with _validation_lock:
        if schema.validate(root):
            return None
        error = schema.error_log[0]
    return f"line {error.line}: {error.message}"


def parse_xml(data: bytes) -> etree._Element:
    """Parse untrusted bytes; raise `XmlRefused` with a short reason instead of anything else."""
    if not data.strip():
        raise XmlRefused("empty document")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise XmlRefused(f"not well-formed XML: {exc.msg}") from None
    except ValueError as exc:  # e.g. unicode strings with an encoding declaration
        raise XmlRefused(f"not well-formed XML: {exc}") from None
    doctype = root.getroottree().docinfo.doctype
    if doctype:
        raise XmlRefused("a DOCTYPE is not allowed")
    return root


# --- Writing XML as text (the SF6111 and SF2601 codecs build their records with polars) ---------

# XML 1.0 has no way to write these characters at all, escaped or not.
UNWRITABLE_XML_CHARS = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x{FFFE}\x{FFFF}]"


def escape_text(value: str) -> str:
    """Text content for an XML element built as a string: `&`, `<`, `>` escaped."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_text_expr(value: pl.Expr) -> pl.Expr:
    """`escape_text` as a polars expression (`&` first, so nothing is escaped twice)."""
    return (
        value.str.replace_all("&", "&amp;", literal=True)
        .str.replace_all("<", "&lt;", literal=True)
        .str.replace_all(">", "&gt;", literal=True)
    )
