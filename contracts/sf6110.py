"""SF6110 Træk i pension – trækanmodning (sf6110.md): the codec of the request file and its
kvittering (bytes <-> polars), and the value rules of an instruction (U01) as polars expressions.

Decoding judges only what makes a file unreadable as a whole, in table order:

- F01: not UTF-8 XML (empty, invalid UTF-8, another declared encoding, not well-formed, DOCTYPE);
- F02: not the shape of `sf6110.xsd`;
- F03: AntalAnmodninger is not `[0-9]+` or differs from the count of TraekAnmodning.

Everything else (F04, F05, U01–U08) is judged in `assets/sf6110_rules.py`. The U01 value rules
live here, beside the format they describe, as expressions: the judge and the pandera model
(`instruction_schema`) are built from the same ones.
"""

from __future__ import annotations

import codecs
import datetime as dt
import io
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from lxml import etree

from contracts.codes import afvisningskoder, afvisningstekst, traekarter
from contracts.cpr import valid_cpr_expr
from contracts.money import parse_kroner_expr
from contracts.xmlsafe import XmlRefused, escape_text, escape_text_expr, load_schema, parse_xml

NS = "urn:oio:udk:pension:sf6110:1"
KVITTERING_NS = "urn:oio:udk:pension:sf6110:kvittering:1"
HERE = Path(__file__).parent

MODTAGET = "MODTAGET"
AFVIST = "AFVIST"
UKENDT_KOMMUNEKODE = "0000"  # sf6110.md "The kvittering": when the file's code is not in kommuner.csv

# Element name in the file -> column of the instruction frame, in the order of sf6110.md's table
# (which is also the U01 order).
LEAF_COLUMNS = {
    "AnmodningId": "anmodning_id",
    "CPR": "cpr",
    "Handling": "handling",
    "Traekart": "traekart",
    "FraPeriode": "fra_periode",
    "TilPeriode": "til_periode",
    "SamletBeloeb": "samlet_beloeb",
    "Reference": "reference",
}
U01_ELEMENTS = (
    "AnmodningId",
    "CPR",
    "Handling",
    "Traekart",
    "FraPeriode",
    "TilPeriode",
    "SamletBeloeb",
    "Specifikation",
    "Reference",
)

POST = pl.Struct({"tekst": pl.String, "beloeb": pl.String})
INSTRUCTION_SCHEMA = pl.Schema(
    {
        "position": pl.Int32,  # 0-based place in the file
        # Values exactly as written; null = element absent, "" = present but empty.
        "anmodning_id": pl.String,
        "cpr": pl.String,
        "handling": pl.String,
        "traekart": pl.String,
        "fra_periode": pl.String,
        "til_periode": pl.String,
        "samlet_beloeb": pl.String,
        "specifikation_present": pl.Boolean,
        "poster": pl.List(POST),  # null when Specifikation is absent, [] when it holds no Post
        "reference": pl.String,
    }
)


@dataclass(frozen=True)
class FileRejected:
    """The file as a whole is rejected (F01–F03). `reason` is short and never holds file content
    (so never a CPR). `kommunekode` is the file's Kommunekode element when it could be read at all
    (the kvittering then names it if it is one of kommuner.csv)."""

    kode: str
    reason: str
    kommunekode: str | None = None


@dataclass(frozen=True)
class RequestFile:
    kommunekode: str
    dannet_tidspunkt: str
    antal_anmodninger: int
    instructions: pl.DataFrame  # INSTRUCTION_SCHEMA, in file order


# --- decoding -------------------------------------------------------------------------------

_BOM = b"\xef\xbb\xbf"
_UTF8_CHUNK = 1 << 20
# The pseudo-attribute `encoding` inside a leading XML declaration.
_DECLARATION = re.compile(rb"<\?xml(?P<body>[^?>]*)\?>")
_ENCODING = re.compile(rb"""\bencoding\s*=\s*(["'])(?P<name>[^"']*)\1""")
_WHOLE_NUMBER = re.compile(r"[0-9]+")  # F03: exactly this, ASCII digits only
_LINE = re.compile(r"line (\d+)")
_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"


def request_schema() -> etree.XMLSchema:
    return load_schema(HERE / "sf6110.xsd")


def kvittering_schema() -> etree.XMLSchema:
    return load_schema(HERE / "sf6110_kvittering.xsd")


def _encoding_problem(data: bytes) -> str | None:
    """F01 before parsing: the bytes must be UTF-8 text, and a declaration may name only UTF-8."""
    if not data.strip():
        return "the file is empty"
    # Checked in chunks: a 100 MB file must not become a 400 MB str just to be judged.
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    for start in range(0, len(data), _UTF8_CHUNK):
        try:
            decoder.decode(view[start : start + _UTF8_CHUNK], final=start + _UTF8_CHUNK >= len(data))
        except UnicodeDecodeError as exc:
            return f"not valid UTF-8 (byte {start + exc.start})"
    start = len(_BOM) if data.startswith(_BOM) else 0
    if data.startswith(b"<?xml", start):
        declaration = _DECLARATION.match(data, start)
        encoding = _ENCODING.search(declaration.group("body")) if declaration else None
        if encoding and encoding.group("name").lower() != b"utf-8":
            return "the XML declaration names an encoding other than UTF-8"
    return None


def _qualified(name: str) -> str:
    return f"{{{NS}}}{name}"


_ROOT = _qualified("TraekAnmodningSamling")
_TRAEK_ANMODNING = _qualified("TraekAnmodning")
# The elements the streaming reader stops at: the root and its children (the schema's top level).
_TOP_LEVEL = [_ROOT] + [_qualified(name) for name in ("Kommunekode", "DannetTidspunkt", "AntalAnmodninger", "TraekAnmodning")]


# The parser of a request file. sf6110.md: a file within PENSIONSTRAEK_MAX_SF6110_BYTES is judged
# in full whatever its shape, so libxml2's 10 MB text limit is lifted (`huge_tree`: a 50 MB
# Reference is U01, not unreadable). Still hardened: no DTD loaded, no entity resolved, nothing
# fetched, any DOCTYPE refused; nesting stops at libxml2's depth limit (2048).
_PARSER_OPTIONS = dict(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=True)


class _Survey:
    """Parser target of the first pass: well-formedness is checked by libxml2 at C speed and no
    tree is built (a file of 15 million tiny elements would take 2 GB as a tree); only what the
    second pass must know is noted."""

    def __init__(self) -> None:
        self.has_doctype = False
        self.xsi = False  # some element may carry xsi:* attributes
        self.comments = False  # comments or processing instructions

    def doctype(self, *_: object) -> None:
        self.has_doctype = True

    def start_ns(self, prefix: str, uri: str) -> None:
        if uri == _XSI[1:-1]:
            self.xsi = True

    def comment(self, _: str) -> None:
        self.comments = True

    def pi(self, *_: str) -> None:
        self.comments = True

    def close(self) -> "_Survey":
        return self


class _WithoutXsi:
    """Parser target that writes the document again without xsi:* attributes, comments and
    processing instructions, one element at a time (memory bounded by the depth, not the size)."""

    def __init__(self, out: io.BytesIO) -> None:
        self._file = etree.xmlfile(out, encoding="utf-8")
        self._writer = self._file.__enter__()
        self._open: list = []

    def start(self, tag: str, attrib: dict) -> None:
        element = self._writer.element(tag, {k: v for k, v in attrib.items() if not k.startswith(_XSI)})
        element.__enter__()
        self._open.append(element)

    def end(self, tag: str) -> None:
        self._open.pop().__exit__(None, None, None)

    def data(self, text: str) -> None:
        self._writer.write(text)  # a carriage return is written as &#13; and so kept

    def close(self) -> None:
        self._file.__exit__(None, None, None)


def _survey(data: bytes) -> _Survey | FileRejected:
    """F01 (and F02 for nesting beyond the parser's depth limit), without building a tree."""
    try:
        survey = etree.fromstring(data, etree.XMLParser(target=_Survey(), **_PARSER_OPTIONS))
    except etree.XMLSyntaxError as exc:
        if "Excessive depth" in str(exc):
            # Well-formed as far as libxml2 goes; SF6110 nests five deep, so it is not the shape.
            return FileRejected("F02", "the elements nest deeper than sf6110.xsd allows")
        if "DOCTYPE" in str(exc) or "Entity" in str(exc) or "Entities" in str(exc):
            return FileRejected("F01", "a DOCTYPE is not allowed")
        line = _LINE.search(str(exc))
        return FileRejected("F01", "not well-formed XML" + (f" (line {line.group(1)})" if line else ""))
    if survey.has_doctype:
        return FileRejected("F01", "a DOCTYPE is not allowed")
    return survey


def decode_request_file(data: bytes) -> RequestFile | FileRejected:
    """The request file as an instruction frame, or the file-level rejection F01–F03.

    Streaming, so that memory stays bounded by the instructions, never by the shape of the bytes
    (sf6110.md: any file within the maximum is judged, whatever its shape): the schema validates
    while the instructions are read one at a time. Only a file the schema refuses (or one with a
    DOCTYPE) is surveyed, to tell F01 from F02 in table order, and read again without its xsi:*
    attributes (allowed by F02) when it has any. Comments and processing instructions are not
    content: `<CPR>01<!---->01</CPR>` reads `0101`."""
    problem = _encoding_problem(data)
    if problem is not None:
        return FileRejected("F01", problem)
    if b"<!DOCTYPE" in data:  # maybe only in a comment: the survey tells
        survey = _survey(data)
        if isinstance(survey, FileRejected):
            return survey
    # The common case first: a file the schema accepts, small enough to hold whole, is validated
    # in C and its values read by polars without an object per element (`_read_plain`), or, when
    # its text is not plain, parsed and validated as one tree (issue 11: both faster than the
    # streaming reader). Anything else - refused by parser or schema, or too many elements - is
    # read by the streaming reader below, which tells F01 from F02 and bounds the memory.
    read = None
    if data.count(b"<") <= WHOLE_TREE_MAX_TAGS:
        read = _read_plain(data)
        if read is None:
            read = _read_whole(data)
    if read is None:
        read = _read(data)
    if isinstance(read, FileRejected):
        survey = _survey(data)
        if isinstance(survey, FileRejected):
            return survey
        if not survey.xsi:
            return read
        read = _read(_without_xsi(data))
        if isinstance(read, FileRejected):
            return read
    kommunekode, dannet, antal_text, instructions = read
    antal = int(antal_text) if _WHOLE_NUMBER.fullmatch(antal_text) and len(antal_text.lstrip("0")) <= 18 else None
    if antal is None:
        return FileRejected("F03", "AntalAnmodninger is not a whole number", kommunekode)
    if antal != instructions.height:
        return FileRejected(
            "F03", f"AntalAnmodninger differs from the {instructions.height} TraekAnmodning in the file", kommunekode
        )
    return RequestFile(kommunekode, dannet, antal, instructions)


def _without_xsi(data: bytes) -> bytes:
    cleaned = io.BytesIO()
    etree.fromstring(data, etree.XMLParser(target=_WithoutXsi(cleaned), **_PARSER_OPTIONS))
    return cleaned.getvalue()


# The whole-file readings (`_read_plain`, `_read_whole`) are used only for files of at most this
# many `<` (every element, comment and processing instruction starts with one): libxml2 needs a
# few hundred bytes per node, so the tree stays within some tens of MB whatever the shape, and so
# do polars' pieces of the text. A national file has ~55,000.
WHOLE_TREE_MAX_TAGS = 250_000

# What a plain file (`_read_plain`) may hold before its root's content: an optional BOM, an XML
# 1.0 declaration of UTF-8, blanks, and the root start tag declaring the namespace as its only
# attribute.
_PLAIN_START = re.compile(
    rb'(?:\xef\xbb\xbf)?(?:<\?xml version="1\.0"(?: encoding="(?:UTF|utf)-8")?\?>)?[ \t\n]*'
    + f'<TraekAnmodningSamling xmlns="{NS}">'.encode()
)
# What a plain file may not hold after its root start tag: a comment, CDATA section, DOCTYPE or
# processing instruction (`<!`, `<?`), an entity or character reference (`&`), a carriage return
# (XML turns it into a line feed) or another namespace declaration (so every element is named
# without a prefix, in NS).
_NOT_PLAIN = r"<[!?]|[&\r]|xmlns"


def _read_plain(data: bytes) -> tuple[str, str, str, pl.DataFrame] | None:
    """`_read` for a plain file the schema accepts, without a tree: libxml2 validates as it parses
    (the same parser options and validation as `_read_whole`, with a target that builds nothing),
    and the values are read from the text by polars (issue 11: a national file in ~35 ms CPU
    instead of ~52: no Python object per element). None when the file is not plain or is refused (the
    tree reader then judges it).

    Plain (`_PLAIN_START`, `_NOT_PLAIN`): no markup but elements and the root's one namespace
    declaration, no reference, no CR. The schema then admits no attribute (an xsi:* attribute
    needs its own namespace declaration; `xml:*` and unprefixed ones are refused), so every tag is
    `<Name>`, `</Name>` or `<Name/>`, perhaps with blanks before its `>`; and the value of a leaf,
    which holds no child, is exactly its text between its start tag and the next `<`, as the tree
    reads it (tests/test_sf6110_codec.py compares both readings)."""
    start = _PLAIN_START.match(data)
    if start is None:
        return None
    content = pl.Series("text", [data[start.end() :]], dtype=pl.Binary).cast(pl.String)  # F01 checked the UTF-8
    if content.str.contains(_NOT_PLAIN).item() or not _schema_accepts(data):
        return None
    # The root's content cut before each TraekAnmodning start tag: the header first, then one
    # piece per instruction holding its elements (names are unique within an instruction).
    pieces = content.str.split("<TraekAnmodning").explode().to_frame()

    def value(name: str) -> pl.Expr:  # of the first element `name` of a piece, null when absent
        return _plain_value(pl.col("text").str.extract(_plain_element(name), 0), name)

    header = pieces.head(1).select(value("Kommunekode"), value("DannetTidspunkt"), value("AntalAnmodninger")).row(0)
    instructions = pieces.slice(1).select(
        position=pl.int_range(pl.len(), dtype=pl.Int32),
        **{column: value(name) for name, column in LEAF_COLUMNS.items()},
        specifikation_present=pl.col("text").str.contains("<Specifikation", literal=True),
        # The schema fixes Post = (Tekst, Beloeb): the n-th Tekst and the n-th Beloeb are a Post.
        tekst=pl.col("text").str.extract_all(_plain_element("Tekst")),
        beloeb=pl.col("text").str.extract_all(_plain_element("Beloeb")),
    )
    posts = instructions.select("position", "tekst", "beloeb").explode("tekst", "beloeb")
    posts = posts.select(
        "position", tekst=_plain_value(pl.col("tekst"), "Tekst"), beloeb=_plain_value(pl.col("beloeb"), "Beloeb")
    )
    return header[0], header[1], header[2], _instruction_frame(instructions.drop("tekst", "beloeb"), posts)


def _plain_element(name: str) -> str:
    """Element `name` of a plain file up to the next `<`: `<name`, blanks, then `>` and its text or
    the `/` of `<name/>`."""
    return rf"<{name}[ \t\n]*(?:>[^<]*|/)"


def _plain_value(element: pl.Expr, name: str) -> pl.Expr:
    """The value in a match of `_plain_element(name)` (null stays null): after `<name`, its
    blanks and the `>`, or "" after the `/` (literal steps: cheaper than a regex)."""
    return element.str.strip_prefix(f"<{name}").str.strip_chars_start(" \t\n").str.slice(1).alias(name)


class _NoTree:
    """Parser target that builds nothing: libxml2 still checks the syntax and the schema validates
    as it parses; without a tree a national file is parsed and validated in 14 ms instead of 22."""

    def close(self) -> None:
        return None


def _schema_accepts(data: bytes) -> bool:
    """Whether the parser and the schema accept the file without a message, as `_read_whole`
    parses it (a target parser logs a schema error instead of raising it)."""
    parser = etree.XMLParser(
        target=_NoTree(), schema=request_schema(), remove_comments=True, remove_pis=True, remove_blank_text=True,
        **_PARSER_OPTIONS,
    )  # fmt: skip
    try:
        etree.fromstring(data, parser)
    except etree.XMLSyntaxError:
        return False
    return len(parser.error_log) == 0


def _read_whole(data: bytes) -> tuple[str, str, str, pl.DataFrame] | None:
    """`_read` for a file the schema accepts, parsed as a whole tree with the schema validating
    as it parses (the same libxml2 validation as the streaming reader's); None when the parser or
    the schema refuses it (the streaming reader then says why). The same options as the
    streaming reader: comments and processing instructions removed, no DTD, no entity, nothing
    fetched; and blank layout left out where no value can hold it (`_blanks_are_layout`)."""
    parser = etree.XMLParser(
        schema=request_schema(), remove_comments=True, remove_pis=True, remove_blank_text=_blanks_are_layout(data),
        **_PARSER_OPTIONS,
    )  # fmt: skip
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError:
        return None
    if root.tag != _ROOT:
        return None  # cannot pass the schema; the streaming reader says so
    children = iter(root)
    header = [next(children).text or "" for _ in range(3)]  # the schema fixes the first three
    instructions = _InstructionColumns()
    instructions.add_all(children)
    return header[0], header[1], header[2], instructions.frame()


def _blanks_are_layout(data: bytes) -> bool:
    """Whether the tree may leave out blank text (libxml2's NOBLANKS: a national file parsed and
    validated in 20 ms instead of 28, issue 11) without changing a value. libxml2 keeps a run of
    blanks that `&` or a non-blank follows, and one before the end tag of an element that holds no
    child or ends in text; it drops a run only before another `<` (or a CR). In a file without
    `<!` (comment, CDATA, DOCTYPE), `<?` after the declaration and CR, that `<` is a start tag or
    the end tag after a child element: the run is layout between elements, which no value holds,
    or sits in a leaf before an element, which the schema refuses either way (the streaming
    reader then judges the file). tests/test_sf6110_codec.py shows both sides."""
    start = len(_BOM) if data.startswith(_BOM) else 0
    return b"<!" not in data and b"\r" not in data and data.find(b"<?", start + 1) == -1


def _read(data: bytes) -> tuple[str, str, str, pl.DataFrame] | FileRejected:
    """Header and instructions, validated against sf6110.xsd while they are read; F02 at the
    first error (which may also be that the bytes are not well-formed: the survey tells)."""
    header: list[str] = []
    instructions = _InstructionColumns()
    source = _StopAtSchemaError(data)
    events = etree.iterparse(
        source, events=("end",), tag=_TOP_LEVEL, schema=request_schema(),
        remove_comments=True, remove_pis=True, **_PARSER_OPTIONS,
    )  # fmt: skip
    source.parsing = events
    root, closed = None, False
    try:
        for _, element in events:
            if element.tag == _ROOT and element.getparent() is None:
                closed = True  # iterparse says nothing of a file cut off before this
                continue
            root = element.getparent()
            if events.error_log.filter_from_errors():
                break  # read only what the schema accepts
            if element.tag == _TRAEK_ANMODNING:
                instructions.add(element)
            elif len(header) < 3:
                header.append(element.text or "")
            # Read: let it go (and whatever came before it), so the tree holds one instruction.
            element.clear(keep_tail=False)
            while element.getprevious() is not None:
                del root[0]
    except (etree.XMLSyntaxError, _SchemaError):
        closed = False
    errors = events.error_log.filter_from_errors()
    if errors or not closed or len(header) < 3:
        line = errors[0].line if errors else None
        where = f" (line {line})" if line else ""
        return FileRejected("F02", f"the file does not follow sf6110.xsd{where}", _kommunekode_if_readable(root, header))
    return header[0], header[1], header[2], instructions.frame()


class _SchemaError(Exception):
    pass


class _StopAtSchemaError:
    """The bytes for `iterparse`, a chunk at a time, until the schema has found an error: libxml2
    goes on parsing after a validity error, and a file of 15 million misplaced tiny elements would
    then become a tree of 2 GB. Stopping here bounds that by one chunk."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.parsing = None

    def read(self, size: int = -1) -> bytes:
        if self.parsing is not None and self.parsing.error_log.filter_from_errors():
            raise _SchemaError
        return self._data.read(size)


def _kommunekode_if_readable(root: etree._Element | None, header: list[str]) -> str | None:
    """The Kommunekode of a file that breaks the schema, when its first element is one."""
    if root is None or root.tag != _qualified("TraekAnmodningSamling"):
        return None
    if header:  # read before the schema error
        return header[0]
    first = root[0] if len(root) else None
    if first is None or first.tag != _qualified("Kommunekode") or len(first):
        return None
    return first.text or ""


class _InstructionColumns:
    """The instruction frame's columns, filled one (already validated) TraekAnmodning at a time."""

    def __init__(self) -> None:
        self.count = 0
        self.columns: dict[str, list[str | None]] = {name: [] for name in LEAF_COLUMNS}
        self.specifikation_present: list[bool] = []
        self.post_position: list[int] = []
        self.post_tekst: list[str] = []
        self.post_beloeb: list[str] = []
        self._by_tag = {_qualified(name): values for name, values in self.columns.items()}
        self._specifikation = _qualified("Specifikation")

    def add(self, traek_anmodning: etree._Element) -> None:
        position = self.count
        self.count += 1
        for values in self.columns.values():
            values.append(None)
        self.specifikation_present.append(False)
        for element in traek_anmodning:
            tag = element.tag
            if tag == self._specifikation:
                self.specifikation_present[position] = True
                for post in element:  # the schema fixes Post = (Tekst, Beloeb)
                    self.post_position.append(position)
                    self.post_tekst.append(post[0].text or "")
                    self.post_beloeb.append(post[1].text or "")
            else:
                self._by_tag[tag][position] = element.text or ""

    def add_all(self, traek_anmodninger) -> None:
        """`add` for every TraekAnmodning of a validated tree, in one loop (the hot path of a
        national intake: 300,000 instructions)."""
        by_tag = self._by_tag
        specifikation = self._specifikation
        columns = list(self.columns.values())
        present = self.specifikation_present
        post_position, post_tekst, post_beloeb = self.post_position, self.post_tekst, self.post_beloeb
        position = self.count
        for traek_anmodning in traek_anmodninger:
            for values in columns:
                values.append(None)
            present.append(False)
            for element in traek_anmodning:
                tag = element.tag
                if tag == specifikation:
                    present[position] = True
                    for post in element:  # the schema fixes Post = (Tekst, Beloeb)
                        tekst, beloeb = post
                        post_position.append(position)
                        post_tekst.append(tekst.text or "")
                        post_beloeb.append(beloeb.text or "")
                else:
                    by_tag[tag][position] = element.text or ""
            position += 1
        self.count = position

    def frame(self) -> pl.DataFrame:
        leaves = pl.DataFrame(
            {
                "position": pl.Series(range(self.count), dtype=pl.Int32),
                **{LEAF_COLUMNS[name]: pl.Series(values, dtype=pl.String) for name, values in self.columns.items()},
                "specifikation_present": pl.Series(self.specifikation_present, dtype=pl.Boolean),
            }
        )
        posts = pl.DataFrame(
            {
                "position": pl.Series(self.post_position, dtype=pl.Int32),
                "tekst": pl.Series(self.post_tekst, dtype=pl.String),
                "beloeb": pl.Series(self.post_beloeb, dtype=pl.String),
            }
        )
        return _instruction_frame(leaves, posts)


def _instruction_frame(leaves: pl.DataFrame, posts: pl.DataFrame) -> pl.DataFrame:
    """The instruction frame of a file's leaves (position, the LEAF_COLUMNS, specifikation_present;
    one row per instruction) and Posts (position, tekst, beloeb; in file order)."""
    poster = posts.group_by("position", maintain_order=True).agg(poster=pl.struct("tekst", "beloeb"))
    return (
        leaves.join(poster, on="position", how="left", maintain_order="left")
        .with_columns(
            # An empty <Specifikation/> holds no Post: an empty list, not null (null = absent).
            poster=pl.when(pl.col("specifikation_present"))
            .then(pl.col("poster").fill_null(pl.lit([], dtype=pl.List(POST))))
            .otherwise(None)
        )
        .select(INSTRUCTION_SCHEMA.names())
        .cast(INSTRUCTION_SCHEMA)
    )


# --- encoding a request file (demo, tests, generator) ---------------------------------------


def _text(value: pl.Expr) -> pl.Expr:
    # A carriage return would be read back as a line feed (XML end-of-line handling): write it as
    # a character reference so that a value comes back exactly as it was.
    return escape_text_expr(value).str.replace_all("\r", "&#13;", literal=True)


def _element(name: str, value: pl.Expr, indent: str) -> pl.Expr:
    """`<name>value</name>` on its own line, or "" when the value is null (element absent)."""
    return pl.concat_str(pl.lit(f"{indent}<{name}>"), _text(value), pl.lit(f"</{name}>\n")).fill_null("")


def encode_request_file(
    kommunekode: str,
    dannet_tidspunkt: str,
    instructions: pl.DataFrame,
    antal: int | str | None = None,
) -> bytes:
    """An SF6110 file holding exactly what it is given: a null value leaves its element out, a
    string is written as it is (escaped), whatever it is. Missing columns count as null;
    `specifikation_present` defaults to "poster is not null". `antal` defaults to the row count."""
    frame = instructions.with_columns(
        pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in INSTRUCTION_SCHEMA.items()
        if name not in instructions.columns
    )
    if "specifikation_present" not in instructions.columns:
        frame = frame.with_columns(specifikation_present=pl.col("poster").is_not_null())
    post = pl.element()
    posts = pl.col("poster").list.eval(
        pl.concat_str(
            pl.lit("      <Post>\n"),
            _element("Tekst", post.struct.field("tekst"), "        "),
            _element("Beloeb", post.struct.field("beloeb"), "        "),
            pl.lit("      </Post>\n"),
        )
    ).list.join("")
    specifikation = (
        pl.when(pl.col("specifikation_present").fill_null(False))
        .then(pl.concat_str(pl.lit("    <Specifikation>\n"), posts.fill_null(""), pl.lit("    </Specifikation>\n")))
        .otherwise(pl.lit(""))
    )
    children = [
        specifikation if name == "Specifikation" else _element(name, pl.col(LEAF_COLUMNS[name]), "    ")
        for name in U01_ELEMENTS  # the order of the schema
    ]
    blocks = frame.select(
        pl.concat_str(pl.lit("  <TraekAnmodning>\n"), *children, pl.lit("  </TraekAnmodning>\n")).alias("block")
    )["block"]
    header = pl.DataFrame(
        {"kommunekode": [kommunekode], "dannet": [dannet_tidspunkt], "antal": [str(instructions.height if antal is None else antal)]},
        schema={"kommunekode": pl.String, "dannet": pl.String, "antal": pl.String},
    ).select(
        pl.concat_str(
            pl.lit(f'<?xml version="1.0" encoding="UTF-8"?>\n<TraekAnmodningSamling xmlns="{NS}">\n'),
            _element("Kommunekode", pl.col("kommunekode"), "  "),
            _element("DannetTidspunkt", pl.col("dannet"), "  "),
            _element("AntalAnmodninger", pl.col("antal"), "  "),
        )
    ).item()
    return (header + blocks.str.join("").item() + "</TraekAnmodningSamling>\n").encode("utf-8")


# --- the kvittering -------------------------------------------------------------------------


def kvittering_filnavn(kommunekode: str, file_transfer_uuid: str) -> str:
    """sf6110.md: `SF6110K_<kommunekode>_<FileTransferUUID>.xml`."""
    return f"SF6110K_{kommunekode}_{file_transfer_uuid}.xml"


def afvisning_text_expr() -> pl.Expr:
    """The rejection text of an instruction outcome (columns kode, element): the code list's text,
    and for U01 the offending element: `Anmodningen overholder ikke formatet: <element>`."""
    base = pl.col("kode").replace_strict(afvisningskoder(), default=None, return_dtype=pl.String)
    return pl.when(pl.col("kode") == "U01").then(pl.concat_str(base, pl.lit(": "), pl.col("element"))).otherwise(base)


def _utc_second(instant: dt.datetime) -> str:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"the received time must be an aware instant, got the naive {instant.isoformat()}")
    return instant.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_kvittering(
    *,
    kommunekode: str,
    modtaget_filnavn: str,
    file_transfer_uuid: str,
    modtaget: dt.datetime,
    status: str,
    kode: str | None,
    outcomes: pl.DataFrame,
) -> bytes:
    """sf6110.md "The kvittering". `outcomes` holds one row per instruction in file order with
    anmodning_id, status, kode and element (the judge's outcomes); it is ignored for an AFVIST file.
    No CPR is ever written: only ids, statuses, codes and texts."""
    if status not in (MODTAGET, AFVIST):
        raise ValueError(f"kvittering status must be MODTAGET or AFVIST, got {status!r}")
    if (status == AFVIST) != (kode is not None):
        raise ValueError("an AFVIST kvittering needs its F-code, a MODTAGET one has none")
    head = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<TraekAnmodningKvittering xmlns="{KVITTERING_NS}">\n'
        f"  <Kommunekode>{_escape(kommunekode)}</Kommunekode>\n"
        f"  <ModtagetFilnavn>{_escape(modtaget_filnavn)}</ModtagetFilnavn>\n"
        f"  <FileTransferUUID>{_escape(file_transfer_uuid)}</FileTransferUUID>\n"
        f"  <ModtagetTidspunkt>{_utc_second(modtaget)}</ModtagetTidspunkt>\n"
        f"  <Status>{status}</Status>\n"
    )
    if status == AFVIST:
        # A rejected file: its Afvisning right after Status, zero counts, no Anmodning.
        body = (
            f"  <Afvisning><Kode>{kode}</Kode><Tekst>{_escape(afvisningstekst(kode))}</Tekst></Afvisning>\n"
            "  <AntalModtaget>0</AntalModtaget>\n  <AntalAfvist>0</AntalAfvist>\n"
        )
        return (head + body + "</TraekAnmodningKvittering>\n").encode("utf-8")

    ordered = outcomes.sort("position") if "position" in outcomes.columns else outcomes
    antal_afvist = ordered.filter(pl.col("status") == AFVIST).height
    anmodninger = ordered.select(
        pl.concat_str(
            pl.lit("  <Anmodning>\n    <AnmodningId>"),
            _text(pl.col("anmodning_id").fill_null("")),
            pl.lit("</AnmodningId>\n    <Status>"),
            pl.col("status"),
            pl.lit("</Status>\n"),
            pl.when(pl.col("status") == AFVIST)
            .then(
                pl.concat_str(
                    pl.lit("    <Afvisning><Kode>"),
                    pl.col("kode"),
                    pl.lit("</Kode><Tekst>"),
                    _text(afvisning_text_expr()),
                    pl.lit("</Tekst></Afvisning>\n"),
                )
            )
            .otherwise(pl.lit("")),
            pl.lit("  </Anmodning>\n"),
        ).alias("anmodning")
    )["anmodning"]
    counts = (
        f"  <AntalModtaget>{ordered.height - antal_afvist}</AntalModtaget>\n"
        f"  <AntalAfvist>{antal_afvist}</AntalAfvist>\n"
    )
    return (head + counts + anmodninger.str.join("").item() + "</TraekAnmodningKvittering>\n").encode("utf-8")


def _escape(value: str) -> str:
    return escape_text(value).replace("\r", "&#13;")  # as `_text`


KVITTERING_ANMODNING_SCHEMA = pl.Schema(
    {"anmodning_id": pl.String, "status": pl.String, "kode": pl.String, "tekst": pl.String}
)


def decode_kvittering(data: bytes) -> tuple[dict, pl.DataFrame]:
    """A kvittering (validated against `sf6110_kvittering.xsd`) as its header and one row per
    Anmodning. For tests and the demo's printout; raises ValueError when it is not a kvittering."""
    try:
        root = parse_xml(data)
    except XmlRefused as exc:
        raise ValueError(f"not a kvittering: {exc}") from None
    schema = kvittering_schema()
    if not schema.validate(root):
        raise ValueError(f"not a valid kvittering: {schema.error_log.last_error}")

    def local(element: etree._Element) -> str:
        return etree.QName(element).localname

    header: dict = {"kode": None, "tekst": None}
    rows = []
    for element in root.iterchildren(etree.Element):
        name = local(element)
        if name == "Afvisning":
            header["kode"], header["tekst"] = element[0].text, element[1].text
        elif name == "Anmodning":
            fields = {local(child): child for child in element.iterchildren(etree.Element)}
            afvisning = fields.get("Afvisning")
            rows.append(
                {
                    "anmodning_id": fields["AnmodningId"].text or "",
                    "status": fields["Status"].text,
                    "kode": afvisning[0].text if afvisning is not None else None,
                    "tekst": afvisning[1].text if afvisning is not None else None,
                }
            )
        else:
            header[_snake(name)] = element.text or ""
    header["antal_modtaget"] = int(header["antal_modtaget"])
    header["antal_afvist"] = int(header["antal_afvist"])
    return header, pl.DataFrame(rows, schema=KVITTERING_ANMODNING_SCHEMA)


def _snake(name: str) -> str:
    return {
        "Kommunekode": "kommunekode",
        "ModtagetFilnavn": "modtaget_filnavn",
        "FileTransferUUID": "file_transfer_uuid",
        "ModtagetTidspunkt": "modtaget_tidspunkt",
        "Status": "status",
        "AntalModtaget": "antal_modtaget",
        "AntalAfvist": "antal_afvist",
    }[name]


# --- the value rules of an instruction (U01) ------------------------------------------------

HANDLINGER = ("OPRET", "AENDR", "OPHOER")
ANMODNING_ID_PATTERN = r"^[A-Za-z0-9_-]{1,36}$"
PERIODE_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
MAX_SAMLET_BELOEB_OERE = 10_000_000  # 100000.00 kr
MAX_POSTER = 20
MAX_TEKST = 60  # Tekst and Reference: 1–60 code points


def u01_amounts() -> dict[str, pl.Expr]:
    """The amounts U01 judges, in øre (null where the text is not an amount): SamletBeloeb, and
    the Beloeb of each Post as a list."""
    beloeb = pl.element().struct.field("beloeb")
    return {
        "samlet_oere": parse_kroner_expr("samlet_beloeb"),
        "post_oere": pl.col("poster").list.eval(parse_kroner_expr(beloeb)),
    }


def u01_offences(judged_on: dt.date | pl.Expr, amounts: dict[str, pl.Expr] | None = None) -> dict[str, pl.Expr]:
    """Element -> a never-null boolean expression, true where that element breaks sf6110.md's
    rules for the instruction's Handling. `judged_on` is the file's received date in
    Europe/Copenhagen (a CPR born after it is invalid). An element that is required for this
    Handling but absent, or present but not allowed, offends at its own place. When Handling
    itself is wrong, the Handling-dependent elements are not judged (Handling offends first).
    `amounts`: `u01_amounts`, or columns that hold them (`u01_offence_frame`)."""
    amounts = amounts or u01_amounts()
    handling = pl.col("handling")
    med_beloeb = handling.is_in(["OPRET", "AENDR"]).fill_null(False)  # Traekart, beløb: 1
    ophoer = (handling == "OPHOER").fill_null(False)  # Traekart, TilPeriode, beløb: 0

    def present(column: str) -> pl.Expr:
        return pl.col(column).is_not_null()

    def matches(column: str, pattern: str) -> pl.Expr:
        return pl.col(column).str.contains(pattern).fill_null(False)

    def text_length_ok(value: pl.Expr) -> pl.Expr:
        return value.str.len_chars().is_between(1, MAX_TEKST).fill_null(False)

    traekart_known = pl.col("traekart").is_in(traekarter()["traekart"].implode()).fill_null(False)
    samlet_oere = amounts["samlet_oere"]
    samlet_ok = samlet_oere.is_between(1, MAX_SAMLET_BELOEB_OERE).fill_null(False)

    poster = pl.col("poster")
    post = pl.element().struct.field
    post_oere = amounts["post_oere"]
    specifikation_ok = (
        pl.col("specifikation_present").fill_null(False)
        & poster.list.len().is_between(1, MAX_POSTER).fill_null(False)
        & poster.list.eval(text_length_ok(post("tekst"))).list.all().fill_null(False)
        & post_oere.list.eval((pl.element() > 0).fill_null(False)).list.all().fill_null(False)
        # exactly in øre; all Beloeb are valid here, so the sum has no null in it
        & (post_oere.list.sum() == samlet_oere).fill_null(False)
    )
    specifikation_present = pl.col("specifikation_present").fill_null(False) | present("poster")

    return {
        "AnmodningId": ~matches("anmodning_id", ANMODNING_ID_PATTERN),
        "CPR": ~valid_cpr_expr("cpr", judged_on),
        "Handling": ~handling.is_in(HANDLINGER).fill_null(False),
        "Traekart": (med_beloeb & ~traekart_known) | (ophoer & present("traekart")),
        "FraPeriode": ~matches("fra_periode", PERIODE_PATTERN),
        "TilPeriode": (
            med_beloeb
            & present("til_periode")
            & ~(matches("til_periode", PERIODE_PATTERN) & (pl.col("til_periode") >= pl.col("fra_periode")).fill_null(False))
        )
        | (ophoer & present("til_periode")),
        "SamletBeloeb": (med_beloeb & ~samlet_ok) | (ophoer & present("samlet_beloeb")),
        "Specifikation": (med_beloeb & ~specifikation_ok) | (ophoer & specifikation_present),
        "Reference": present("reference") & ~text_length_ok(pl.col("reference")),
    }


def u01_offence_frame(instructions: pl.DataFrame, judged_on: dt.date) -> pl.DataFrame:
    """One boolean column per U01 element (`u01_offences`, in U01 order), one row per
    instruction: the value rules evaluated once, for the judge (`u01_first_offence`) and the
    contract's figures alike (issue 11: they were evaluated twice, and a third time by pandera).
    The amounts are parsed once, into columns, for the rules that read them (an eager polars
    select evaluates a repeated expression again: ~6 of a national file's 13 ms)."""
    amounts = {f"u01_{name}": amount for name, amount in u01_amounts().items()}
    return instructions.with_columns(**amounts).select(
        **u01_offences(judged_on, {name.removeprefix("u01_"): pl.col(name) for name in amounts})
    )


def u01_first_offence(offences: pl.DataFrame) -> pl.Series:
    """The first offending element per row of `u01_offence_frame`, null when the values hold:
    the same as `u01_element_expr`."""
    return offences.select(
        pl.coalesce([pl.when(pl.col(element)).then(pl.lit(element)).otherwise(None) for element in U01_ELEMENTS])
        .cast(pl.String)
        .alias("element")
    ).to_series()


def u01_element_expr(judged_on: dt.date | pl.Expr) -> pl.Expr:
    """The first offending element in sf6110.md's U01 order, null when the values hold."""
    offences = u01_offences(judged_on)
    return pl.coalesce(
        [pl.when(offences[element]).then(pl.lit(element)).otherwise(None) for element in U01_ELEMENTS]
    ).alias("element")


def instruction_schema(judged_on: dt.date):
    """A pandera (polars) model of decoded instructions: the column types of INSTRUCTION_SCHEMA
    and one dataframe-level check per U01 element, built from `u01_offences` (the judge's own
    expressions). For the asset check over a file's instructions; validate a collected frame
    with `lazy=True`. Its failure cases are whole rows: mask the `cpr` column before showing them."""
    import pandera.polars as pa

    def column(name: str, dtype: pl.DataType, nullable: bool = True) -> pa.Column:
        return pa.Column(dtype, nullable=nullable, required=True, name=name)

    checks = [
        pa.Check(
            lambda data, offends=offends: data.lazyframe.select(~offends),
            name=f"U01_{element}",
            error=f"U01_{element}",  # pandera reports a check by its error text
        )
        for element, offends in u01_offences(judged_on).items()
    ]
    return pa.DataFrameSchema(
        {
            "position": column("position", pl.Int32, nullable=False),
            **{name: column(name, pl.String) for name in LEAF_COLUMNS.values()},
            "specifikation_present": column("specifikation_present", pl.Boolean, nullable=False),
            "poster": pa.Column(None, nullable=True, required=True, name="poster"),
        },
        checks=checks,
        name="sf6110_instructions",
        strict=True,
    )
