"""The SF6110 codec (sf6110.md): the file-level rejections F01–F03, decoding values exactly as
written, encoding request files, and the kvittering (exact format, schema, never a CPR)."""

from __future__ import annotations

import datetime as dt
import time

import polars as pl
import pytest

from contracts import sf6110
from contracts.sf6110 import (
    INSTRUCTION_SCHEMA,
    NS,
    POST,
    FileRejected,
    RequestFile,
    decode_kvittering,
    decode_request_file,
    encode_kvittering,
    encode_request_file,
    kvittering_filnavn,
    kvittering_schema,
)
from contracts.xmlsafe import parse_xml

DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'

OPRET = """  <TraekAnmodning>
    <AnmodningId>KBH-2027-000123</AnmodningId>
    <CPR>0101401234</CPR>
    <Handling>OPRET</Handling>
    <Traekart>MAD</Traekart>
    <FraPeriode>2027-02</FraPeriode>
    <TilPeriode>2027-12</TilPeriode>
    <SamletBeloeb>1700.00</SamletBeloeb>
    <Specifikation>
      <Post><Tekst>Madordning, hovedmåltid</Tekst><Beloeb>1500.00</Beloeb></Post>
      <Post><Tekst>Tøjvask</Tekst><Beloeb>200</Beloeb></Post>
    </Specifikation>
    <Reference>Sag 27-4411</Reference>
  </TraekAnmodning>
"""
OPHOER = """  <TraekAnmodning>
    <AnmodningId>KBH-2026-000077</AnmodningId>
    <CPR>2412502345</CPR>
    <Handling>OPHOER</Handling>
    <FraPeriode>2027-03</FraPeriode>
  </TraekAnmodning>
"""
CPRS = ("0101401234", "2412502345")
XSI = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'


def request(
    body: str = OPRET + OPHOER,
    *,
    antal: str | None = None,
    kommunekode: str = "0101",
    dannet: str = "2027-01-05T10:15:00+01:00",
    root: str = f'TraekAnmodningSamling xmlns="{NS}"',
    declaration: str = DECLARATION,
) -> bytes:
    """The spec's example file, with the parts a test wants changed."""
    antal = str(body.count("<TraekAnmodning>")) if antal is None else antal
    return (
        f"{declaration}<{root}>\n"
        f"  <Kommunekode>{kommunekode}</Kommunekode>\n"
        f"  <DannetTidspunkt>{dannet}</DannetTidspunkt>\n"
        f"  <AntalAnmodninger>{antal}</AntalAnmodninger>\n"
        f"{body}</{root.split()[0]}>\n"
    ).encode("utf-8")


def kode(data: bytes) -> str | None:
    decoded = decode_request_file(data)
    return decoded.kode if isinstance(decoded, FileRejected) else None


def instructions(data: bytes) -> pl.DataFrame:
    decoded = decode_request_file(data)
    assert isinstance(decoded, RequestFile), decoded
    return decoded.instructions


# --- the spec's example ---------------------------------------------------------------------


def test_the_spec_example_decodes_to_its_values():
    decoded = decode_request_file(request())
    assert isinstance(decoded, RequestFile)
    assert (decoded.kommunekode, decoded.dannet_tidspunkt, decoded.antal_anmodninger) == (
        "0101",
        "2027-01-05T10:15:00+01:00",
        2,
    )
    frame = decoded.instructions
    assert frame.schema == INSTRUCTION_SCHEMA
    assert frame.to_dicts() == [
        {
            "position": 0,
            "anmodning_id": "KBH-2027-000123",
            "cpr": "0101401234",
            "handling": "OPRET",
            "traekart": "MAD",
            "fra_periode": "2027-02",
            "til_periode": "2027-12",
            "samlet_beloeb": "1700.00",
            "specifikation_present": True,
            "poster": [
                {"tekst": "Madordning, hovedmåltid", "beloeb": "1500.00"},
                {"tekst": "Tøjvask", "beloeb": "200"},
            ],
            "reference": "Sag 27-4411",
        },
        {
            "position": 1,
            "anmodning_id": "KBH-2026-000077",
            "cpr": "2412502345",
            "handling": "OPHOER",
            "traekart": None,
            "fra_periode": "2027-03",
            "til_periode": None,
            "samlet_beloeb": None,
            "specifikation_present": False,
            "poster": None,
            "reference": None,
        },
    ]


def test_values_are_read_exactly_as_written():
    body = OPHOER.replace("<CPR>2412502345</CPR>", "<CPR/>").replace(
        "<FraPeriode>2027-03</FraPeriode>",
        "<FraPeriode> 2027-03 </FraPeriode>\n    <Specifikation/>\n    <Reference>a &amp; b <![CDATA[<c>]]>&#x9;</Reference>",
    )
    row = instructions(request(body, kommunekode=" 0101 ")).row(0, named=True)
    assert row["cpr"] == ""  # present but empty: "", not null
    assert row["fra_periode"] == " 2027-03 "  # no trimming
    assert row["reference"] == "a & b <c>\t"
    assert row["specifikation_present"] is True and row["poster"] == []  # empty, not absent
    assert row["traekart"] is None  # absent
    assert decode_request_file(request(body, kommunekode=" 0101 ")).kommunekode == " 0101 "


def test_comments_and_processing_instructions_are_not_content():
    body = OPRET.replace("<CPR>0101401234</CPR>", "<CPR>010140<!-- midt i -->1234<?pi x?></CPR><!-- efter -->")
    assert instructions(request(body))["cpr"].to_list() == ["0101401234"]


# Leaves of blanks and values with blanks at their ends, each beside entities, non-ASCII text and
# runs longer than libxml2's buffer of 300 characters: kept when the tree leaves out the layout.
BLANK_VALUES = ("", " ", "\n\t ", " " * 700, " a ", "æ" * 400 + " " * 400, " " * 400 + "æ", "&amp; ", " &#32; ", "x&lt;  ")


@pytest.mark.parametrize("value", BLANK_VALUES)
@pytest.mark.parametrize("layout", ["", "\n      "])
def test_leaving_out_the_layout_keeps_every_blank_of_a_value(value, layout, monkeypatch):
    leaves = "".join(
        f"{layout}<{tag}>{value}</{tag}>" for tag in ("AnmodningId", "CPR", "Handling", "FraPeriode", "Reference")
    )
    post = f"{layout}<Post>{layout}<Tekst>{value}</Tekst>{layout}<Beloeb>{value}</Beloeb>{layout}</Post>"
    body = f"  <TraekAnmodning>{leaves.replace('<Reference>', f'<Specifikation>{post}{layout}</Specifikation><Reference>')}{layout}</TraekAnmodning>\n"
    data = request(body, kommunekode=value)
    assert sf6110._blanks_are_layout(data)
    left_out = decode_request_file(data)
    monkeypatch.setattr(sf6110, "_blanks_are_layout", lambda _: False)
    kept = decode_request_file(data)
    assert isinstance(kept, RequestFile) and kept.instructions.height == 1
    assert left_out.kommunekode == kept.kommunekode and left_out.instructions.equals(kept.instructions)


@pytest.mark.parametrize(
    ("part", "cpr"),
    [("<!-- c -->", "  0101401234"), ("<![CDATA[ ]]>", "   0101401234"), ("<?pi x?>", "  0101401234"), ("\r", " \n 0101401234")],
)
def test_layout_is_kept_in_a_file_with_comments_cdata_pis_or_carriage_returns(part, cpr):
    # libxml2 would drop the blank before them inside a value: such a file keeps all its blanks.
    data = request(OPRET.replace("<CPR>0101401234</CPR>", f"<CPR> {part} 0101401234</CPR>"))
    assert not sf6110._blanks_are_layout(data)
    assert instructions(data)["cpr"].to_list() == [cpr]


def decoded_by_the_tree(data: bytes) -> RequestFile | FileRejected:
    """`decode_request_file` without the plain reading (`_read_plain`)."""
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(sf6110, "_read_plain", lambda _: None)
        return decode_request_file(data)


def same_decoding(a: RequestFile | FileRejected, b: RequestFile | FileRejected) -> bool:
    if isinstance(a, FileRejected) or isinstance(b, FileRejected):
        return a == b
    return (a.kommunekode, a.dannet_tidspunkt, a.antal_anmodninger) == (
        b.kommunekode, b.dannet_tidspunkt, b.antal_anmodninger,
    ) and a.instructions.equals(b.instructions)  # fmt: skip


# Plain files the parser or the schema refuses, though the parser does not raise for some.
REFUSED_PLAIN = [
    request(OPRET.replace("<CPR>0101401234</CPR>", "<CPR>0101401234</CPR><CPR>1</CPR>")),  # F02
    request(OPHOER.replace("<CPR>2412502345</CPR>", "")),  # F02
    request(OPRET.replace("<Specifikation>", "<Specifikation/><Ukendt>").replace("</Specifikation>", "</Ukendt>")),  # F02
    request(OPRET.replace("<Handling>", "x<Handling>")),  # F02: text between elements
    request(dannet="2027-13-05T10:15:00+01:00"),  # F02: not an xs:dateTime
    request(OPRET.replace("<CPR>", '<CPR xml:lang="da">')),  # F02: an attribute
    request(OPRET.replace("<CPR>", '<CPR a="1">')),  # F02
    request(OPRET.replace("</CPR>", "</Cpr>")),  # F01: not well-formed
    request(OPRET.replace("Sag 27-4411", "a ]]> b")),  # F01
    request(OPRET.replace("Sag 27-4411", "a \x0b b")),  # F01: not an XML character
]


# Files the plain reading takes (True) or leaves to the tree (False): values with blanks, markup
# characters and non-ASCII text, tags with blanks and empty elements; and each thing that makes a
# file not plain. Either way the decoding is the tree's.
PLAIN_CASES = [
    (request(), True),
    (request(""), True),
    (request(declaration=""), True),
    (request(declaration='\ufeff<?xml version="1.0" encoding="utf-8"?>'), True),
    (request(OPRET.replace("<CPR>0101401234</CPR>", "<CPR >0101401234</CPR\n>").replace("<Reference>", "<Reference\t\n>")), True),
    (request(OPRET.replace("<Reference>Sag 27-4411</Reference>", "<Reference/>").replace("<Traekart>MAD</Traekart>", "<Traekart />")), True),
    (request(OPRET.replace("<Tekst>Tøjvask</Tekst>", "<Tekst/>").replace("<Beloeb>200</Beloeb>", "<Beloeb\n/>")), True),
    (request(OPHOER.replace("</FraPeriode>", "</FraPeriode><Specifikation/>")), True),
    (request(OPRET.replace("Sag 27-4411", " a > b / c /> ]] ' \" \t").replace("Tøjvask", "  ")), True),
    (request(OPHOER.replace("</FraPeriode>", "</FraPeriode><Specifikation>\n </Specifikation>")), True),
    (request(kommunekode="").replace(b"<Kommunekode></Kommunekode>", b"<Kommunekode/>"), True),
    (request(antal="3"), True),  # F03
    (request(OPRET.replace("Sag 27-4411", "a &amp; b &#13;")), False),
    (request(OPRET.replace("Sag 27-4411", "a\r\nb")), False),
    (request(OPRET.replace("<CPR>0101401234", "<CPR>0101<!-- x -->401234")), False),
    (request(OPRET.replace("<CPR>0101401234", "<CPR><![CDATA[0101]]>401234")), False),
    (request(OPRET.replace("<CPR>0101401234", "<CPR>0101<?pi x?>401234")), False),
    (request(OPRET.replace("<CPR>", f'<CPR xmlns="{NS}">')), False),
    (request(OPRET.replace("<CPR>", f'<p:CPR xmlns:p="{NS}">').replace("</CPR>", "</p:CPR>")), False),
    (request(OPRET.replace("<CPR>", f'<CPR {XSI} xsi:type="xs:string">')), False),
    (request(OPRET.replace("Sag 27-4411", "xmlns")), False),
    (request(root=f'TraekAnmodningSamling xmlns="{NS}" {XSI}'), False),
    (request(root=f"TraekAnmodningSamling xmlns='{NS}'"), False),
    (request(declaration='<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'), False),
    (request(declaration='<?xml version="1.1" encoding="UTF-8"?>\n'), False),
    (request(declaration="<!DOCTYPE x>\n"), False),
] + [(data, True) for data in REFUSED_PLAIN]


def is_plain(data: bytes) -> bool:
    start = sf6110._PLAIN_START.match(data)
    return start is not None and not pl.Series([data[start.end() :].decode()]).str.contains(sf6110._NOT_PLAIN).item()


@pytest.mark.parametrize(("data", "plain"), PLAIN_CASES)
def test_the_plain_reading_decodes_as_the_tree(data, plain):
    assert is_plain(data) == plain
    assert (sf6110._read_plain(data) is not None) == (plain and data not in REFUSED_PLAIN)
    assert same_decoding(decode_request_file(data), decoded_by_the_tree(data))


@pytest.mark.parametrize("data", REFUSED_PLAIN)
def test_the_schema_refuses_without_a_tree(data):
    # A target parser logs a schema error instead of raising it: the log is what is read.
    assert not sf6110._schema_accepts(data)
    assert sf6110._schema_accepts(request())


def test_empty_file_decodes_to_an_empty_frame():
    frame = instructions(request(""))
    assert frame.height == 0 and frame.schema == INSTRUCTION_SCHEMA


# --- F01 -------------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<TraekAnmodningSamling xmlns="urn:oio:udk:pension:sf6110:1"><Kommunekode>&lol9;</Kommunekode></TraekAnmodningSamling>
"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY passwd SYSTEM "file:///etc/passwd">]>
<TraekAnmodningSamling xmlns="urn:oio:udk:pension:sf6110:1"><Kommunekode>&passwd;</Kommunekode></TraekAnmodningSamling>
"""


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="0-byte"),
        pytest.param(b" \r\n\t  \n", id="white-space-only"),
        pytest.param(b"\xef\xbb\xbf", id="bom-only"),
        pytest.param(bytes(range(256)) * 3, id="random-bytes"),
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", id="png"),
        pytest.param(request().decode().replace("Tøjvask", "T\udcf8jvask").encode("utf-8", "surrogateescape"), id="latin-1-byte"),
        pytest.param(request().decode().encode("latin-1"), id="latin-1-file"),
        pytest.param(request(declaration='<?xml version="1.0" encoding="ISO-8859-1"?>\n'), id="iso-8859-1-declared"),
        pytest.param(request(declaration="<?xml version='1.0' encoding='windows-1252'?>\n"), id="cp1252-declared"),
        pytest.param(request().decode().encode("utf-16"), id="utf-16"),
        pytest.param(request()[:-40], id="truncated"),
        pytest.param(request(OPRET.replace("</CPR>", "</Cpr>")), id="mismatched-tag"),
        pytest.param(request(OPRET.replace("Sag 27-4411", "Sag & 27")), id="bare-ampersand"),
        pytest.param(request(declaration="\n" + DECLARATION), id="declaration-not-first"),
        pytest.param(request(declaration=DECLARATION + "<!DOCTYPE TraekAnmodningSamling>\n"), id="harmless-doctype"),
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(EXTERNAL_ENTITY, id="external-entity"),
        pytest.param(request(OPRET.replace("Tøjvask", "Tøj\x01vask")), id="control-character"),
    ],
)
def test_f01(data):
    started = time.perf_counter()
    decoded = decode_request_file(data)
    assert isinstance(decoded, FileRejected) and decoded.kode == "F01", decoded
    assert time.perf_counter() - started < 1.0  # a bomb is refused, never expanded
    assert "root:" not in decoded.reason and "lol" not in decoded.reason


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xef\xbb\xbf" + request(), id="utf-8-bom"),
        pytest.param(request(declaration=""), id="no-declaration"),
        pytest.param(request(declaration='<?xml version="1.0"?>\n'), id="declaration-without-encoding"),
        pytest.param(request(declaration="<?xml version='1.0' encoding='utf-8'?>\n"), id="lower-case-utf-8"),
        pytest.param(request().replace(b"\n", b"\r\n"), id="crlf"),
        pytest.param(request(declaration=DECLARATION + "<!-- made by KP -->\n"), id="comment-in-prolog"),
    ],
)
def test_narrowly_not_f01(data):
    decoded = decode_request_file(data)
    assert isinstance(decoded, RequestFile), decoded
    assert decoded.instructions["cpr"].to_list() == list(CPRS)


def test_crlf_does_not_change_values():
    crlf = instructions(request().replace(b"\n", b"\r\n"))
    assert crlf.equals(instructions(request()))


def test_f01_reason_never_holds_file_content():
    data = request(OPRET.replace("<Reference>Sag 27-4411</Reference>", "<Ref0101401234>x"))
    decoded = decode_request_file(data)
    assert decoded.kode == "F01"
    assert "0101401234" not in decoded.reason


def test_external_entity_is_never_read():
    decoded = decode_request_file(EXTERNAL_ENTITY)
    assert decoded.kode == "F01" and "DOCTYPE" in decoded.reason


def test_utf_8_is_checked_across_chunk_boundaries():
    from contracts.sf6110 import _UTF8_CHUNK

    head = DECLARATION.encode() + b"<!--"
    padding = b"x" * (_UTF8_CHUNK - 1 - len(head))  # "ø" starts on the chunk's last byte
    straddling = request(declaration=(head + padding + "ø-->\n".encode()).decode())
    assert straddling.index("ø".encode()) == _UTF8_CHUNK - 1
    assert kode(straddling) is None
    assert kode(straddling.replace("ø".encode(), b"\xf8-")) == "F01"
    assert decode_request_file(straddling.replace("ø".encode(), b"\xf8-")).reason == f"not valid UTF-8 (byte {_UTF8_CHUNK - 1})"


def test_a_huge_text_value_is_judged_as_a_value_not_refused_as_unreadable():
    # sf6110.md: a file within the maximum is judged whatever its shape (one huge text): a 20 MB
    # Reference is read (and is U01 for its length), not F01 from libxml2's 10 MB limit.
    decoded = decode_request_file(request(OPRET.replace("Sag 27-4411", "x" * 20_000_000)))
    assert isinstance(decoded, RequestFile)
    assert decoded.instructions["reference"].str.len_chars().to_list() == [20_000_000]


def test_many_tiny_or_deeply_nested_elements_are_f02_without_building_a_tree():
    # Issue 7: tens of MB of tiny elements made the whole-tree XPath fail (XPathEvalError at 2 GB).
    # The reading stops at the first schema error; misplaced known elements likewise.
    head = request("").split(b"</TraekAnmodningSamling>")[0]
    for junk in (b"<a/>", b"<TraekAnmodning/>", b"<Kommunekode>0101</Kommunekode>"):
        assert kode(head + junk * 1_000_000 + b"</TraekAnmodningSamling>") == "F02"
    deep = head + b"<a>" * 5000 + b"</a>" * 5000 + b"</TraekAnmodningSamling>"
    assert kode(deep) == "F02"  # well-formed, but nests deeper than the schema (and libxml2) allow
    # ...but a malformed file stays F01 (table order), even when its shape is wrong early on.
    assert kode(head + b"<a/>" * 1000 + b"</TraekAnmodningSamling") == "F01"


# --- F02 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(request(root='TraekAnmodningSamling xmlns="urn:oio:udk:pension:sf6110:2"'), id="wrong-namespace"),
        pytest.param(request(root="TraekAnmodningSamling"), id="no-namespace"),
        pytest.param(request(root=f'TraekAnmodninger xmlns="{NS}"'), id="wrong-root"),
        pytest.param(request(OPRET.replace("<Reference>", "<Ukendt>x</Ukendt><Reference>")), id="unknown-element"),
        pytest.param(request(root=f'TraekAnmodningSamling xmlns="{NS}" version="2"'), id="unknown-attribute-root"),
        pytest.param(request(OPRET.replace("<CPR>", '<CPR type="x">')), id="unknown-attribute-leaf"),
        pytest.param(request(OPRET.replace("<CPR>", '<CPR xml:lang="da">')), id="xml-attribute"),
        pytest.param(
            request(OPRET.replace("<AnmodningId>KBH-2027-000123</AnmodningId>\n    <CPR>0101401234</CPR>",
                                  "<CPR>0101401234</CPR>\n    <AnmodningId>KBH-2027-000123</AnmodningId>")),
            id="out-of-order",
        ),
        pytest.param(request(OPRET.replace("<Reference>Sag 27-4411</Reference>\n", "") .replace(
            "<Traekart>MAD</Traekart>", "<Reference>Sag</Reference><Traekart>MAD</Traekart>")), id="reference-too-early"),
        pytest.param(request(OPRET.replace("<Handling>", "tekst<Handling>")), id="text-between-elements"),
        pytest.param(request(OPHOER.replace("<CPR>2412502345</CPR>", "")), id="missing-cpr"),
        pytest.param(request(OPHOER.replace("<AnmodningId>KBH-2026-000077</AnmodningId>", "")), id="missing-id"),
        pytest.param(request(OPHOER.replace("<Handling>OPHOER</Handling>", "")), id="missing-handling"),
        pytest.param(request(OPHOER.replace("<FraPeriode>2027-03</FraPeriode>", "")), id="missing-fraperiode"),
        pytest.param(request(OPRET.replace("<Tekst>Tøjvask</Tekst>", "")), id="missing-tekst"),
        pytest.param(request(OPRET.replace("<Beloeb>200</Beloeb>", "")), id="missing-beloeb"),
        pytest.param(request(OPRET.replace("<CPR>0101401234</CPR>", "<CPR>0101401234</CPR><CPR>0101401234</CPR>")), id="repeated-cpr"),
        pytest.param(request(OPRET.replace("<Traekart>MAD</Traekart>", "<Traekart>MAD</Traekart><Traekart>MAD</Traekart>")), id="repeated-optional"),
        pytest.param(request(OPRET.replace("<Specifikation>", "<Specifikation><Specifikation/>")), id="nested-specifikation"),
        pytest.param(request(OPRET.replace("<CPR>0101401234</CPR>", "<CPR><Tal>0101401234</Tal></CPR>")), id="element-inside-leaf"),
        pytest.param(request(dannet="2027-01-05T10:15:00"), id="dannet-without-offset"),
        pytest.param(request(dannet="2027-01-05"), id="dannet-a-date"),
        pytest.param(request(dannet="2027-02-30T10:15:00+01:00"), id="dannet-impossible"),
        pytest.param(request(dannet=""), id="dannet-empty"),
        pytest.param(request().replace(b"  <AntalAnmodninger>2</AntalAnmodninger>\n", b""), id="missing-antal"),
        pytest.param(request(body=OPRET.replace("TraekAnmodning>", "Traekanmodning>")), id="wrong-case-element"),
    ],
)
def test_f02(data):
    assert kode(data) == "F02"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(request(OPRET.replace("<CPR>0101401234</CPR>", "<CPR/>")), id="empty-cpr"),
        pytest.param(request(OPRET.replace("<AnmodningId>KBH-2027-000123</AnmodningId>", "<AnmodningId></AnmodningId>")), id="empty-id"),
        pytest.param(request(OPHOER.replace("<FraPeriode>", "<Traekart>MAD</Traekart><FraPeriode>")), id="traekart-on-ophoer"),
        pytest.param(request(OPRET.replace("<SamletBeloeb>1700.00</SamletBeloeb>", "")), id="opret-without-amount"),
        pytest.param(request(OPRET.replace("<Traekart>MAD</Traekart>", "")), id="opret-without-traekart"),
        pytest.param(request(OPHOER.replace("</FraPeriode>", "</FraPeriode><Specifikation/>")), id="empty-specifikation"),
        pytest.param(request(OPRET.replace("<Handling>OPRET</Handling>", "<Handling>SLET</Handling>")), id="unknown-handling"),
        pytest.param(request(OPRET.replace("1700.00", "1e3")), id="bad-amount"),
        pytest.param(request(kommunekode="101"), id="unknown-kommunekode"),
        pytest.param(request(root=f'TraekAnmodningSamling xmlns="{NS}" '
                                  'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                                  f'xsi:schemaLocation="{NS} sf6110.xsd"'), id="xsi-schemaLocation"),
        pytest.param(request(OPRET.replace("<CPR>", f'<CPR {XSI} xsi:nil="true">')), id="xsi-nil"),
        pytest.param(request(OPRET.replace("<Reference>", f'<Reference {XSI} xsi:type="xs:int" xmlns:xs="http://www.w3.org/2001/XMLSchema">')), id="xsi-type"),
        pytest.param(request(dannet="2027-01-05T09:15:00Z"), id="dannet-utc"),
        pytest.param(request(dannet="2027-01-05T10:15:00.123+01:00"), id="dannet-fractions"),
        pytest.param(request(""), id="no-instructions"),
    ],
)
def test_narrowly_not_f02(data):
    assert kode(data) is None


def test_xsi_attributes_carry_no_content():
    data = request(OPRET.replace("<CPR>0101401234</CPR>", f'<CPR {XSI} xsi:nil="true"/>'))
    assert instructions(data)["cpr"].to_list() == [""]  # judged as an empty CPR (U01), not F02


def test_namespace_prefixes_do_not_matter():
    data = request().decode().replace(f'<TraekAnmodningSamling xmlns="{NS}">', f'<s:TraekAnmodningSamling xmlns:s="{NS}">')
    data = data.replace("</TraekAnmodningSamling>", "</s:TraekAnmodningSamling>")
    for name in ("Kommunekode", "DannetTidspunkt", "AntalAnmodninger"):
        data = data.replace(f"<{name}>", f"<s:{name}>").replace(f"</{name}>", f"</s:{name}>")
    data = data.replace("<TraekAnmodning>", f'<TraekAnmodning xmlns="{NS}">')
    assert instructions(data.encode()).equals(instructions(request()))
    # ... but the namespace does: an element of the root's children without it is unknown.
    assert kode(data.replace(f'<TraekAnmodning xmlns="{NS}">', "<TraekAnmodning>", 1).encode()) == "F02"


def test_f02_names_the_kommunekode_when_it_can_be_read_but_never_a_value():
    decoded = decode_request_file(request(OPRET.replace("<Reference>", "<CPRx>0101401234</CPRx><Reference>")))
    assert decoded.kode == "F02"
    assert decoded.kommunekode == "0101"
    assert "0101401234" not in decoded.reason


# --- F03 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("antal", ["2 ", " 2", "+2", "3", "1", "", "2.0", "٢", "２", "-0", "9" * 5000])
def test_f03(antal):
    decoded = decode_request_file(request(antal=antal))
    assert decoded.kode == "F03"
    assert decoded.kommunekode == "0101"


@pytest.mark.parametrize("antal", ["2", "02", "0000000000000000000000002"])
def test_narrowly_not_f03(antal):
    assert kode(request(antal=antal)) is None


def test_zero_instructions_needs_antal_zero():
    assert kode(request("", antal="0")) is None
    assert kode(request("", antal="1")) == "F03"


def test_f02_comes_before_f03():
    assert kode(request(OPRET.replace("<CPR>0101401234</CPR>", ""), antal="7")) == "F02"


# --- encoding request files ------------------------------------------------------------------


def test_encode_writes_exactly_what_it_is_given():
    frame = instructions(request())
    assert decode_request_file(encode_request_file("0101", "2027-01-05T10:15:00+01:00", frame)).instructions.equals(frame)


def test_encode_round_trips_awkward_values():
    frame = pl.DataFrame(
        {
            "position": [0, 1],
            "anmodning_id": ["", "a&b<c>]]>"],
            "cpr": [" 0101401234 ", "\r\n"],
            "handling": ["OPRET", " x "],
            "traekart": [None, "æøå 😀"],
            "fra_periode": ["2027-02", "\t"],
            "til_periode": [None, ""],
            "samlet_beloeb": ["1.005", None],
            "specifikation_present": [True, False],
            "poster": [[{"tekst": "", "beloeb": " 1 "}], None],
            "reference": [None, '"quoted" \'x\''],
        },
        schema=INSTRUCTION_SCHEMA,
    )
    decoded = decode_request_file(encode_request_file(" 0101", "2027-01-05T10:15:00Z", frame))
    assert isinstance(decoded, RequestFile)
    assert decoded.kommunekode == " 0101"
    assert decoded.instructions.equals(frame)


def test_encode_leaves_null_elements_out_and_uses_the_given_antal():
    frame = pl.DataFrame(
        [{"anmodning_id": "A", "cpr": "0101401234", "handling": "OPHOER", "fra_periode": "2027-03"}]
    )
    data = encode_request_file("0101", "2027-01-05T10:15:00+01:00", frame, antal="+1")
    assert b"<Traekart>" not in data and b"<Specifikation>" not in data and b"<Reference>" not in data
    assert b"<AntalAnmodninger>+1</AntalAnmodninger>" in data
    assert kode(data) == "F03"
    assert kode(encode_request_file("0101", "2027-01-05T10:15:00+01:00", frame)) is None


def test_encode_writes_an_empty_specifikation_when_present_without_posts():
    frame = pl.DataFrame(
        [{"anmodning_id": "A", "cpr": "1", "handling": "OPHOER", "fra_periode": "2027-03",
          "specifikation_present": True, "poster": []}],
        schema_overrides={"poster": pl.List(POST)},
    )
    row = instructions(encode_request_file("0101", "2027-01-05T10:15:00+01:00", frame)).row(0, named=True)
    assert row["specifikation_present"] is True and row["poster"] == []


# --- the kvittering --------------------------------------------------------------------------

RECEIVED = dt.datetime(2027, 1, 5, 10, 16, 2, 999_999, tzinfo=dt.timezone(dt.timedelta(hours=1)))
OUTCOMES = pl.DataFrame(
    {
        "position": [0, 1],
        "anmodning_id": ["KBH-2027-000123", "KBH-2026-000077"],
        "status": ["MODTAGET", "AFVIST"],
        "kode": [None, "U08"],
        "element": [None, None],
    },
    schema={"position": pl.Int32, "anmodning_id": pl.String, "status": pl.String, "kode": pl.String, "element": pl.String},
)

SPEC_KVITTERING = """<?xml version="1.0" encoding="UTF-8"?>
<TraekAnmodningKvittering xmlns="urn:oio:udk:pension:sf6110:kvittering:1">
  <Kommunekode>0101</Kommunekode>
  <ModtagetFilnavn>SF6110_0101_20270105101500.xml</ModtagetFilnavn>
  <FileTransferUUID>1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed</FileTransferUUID>
  <ModtagetTidspunkt>2027-01-05T09:16:02Z</ModtagetTidspunkt>
  <Status>MODTAGET</Status>
  <AntalModtaget>1</AntalModtaget>
  <AntalAfvist>1</AntalAfvist>
  <Anmodning>
    <AnmodningId>KBH-2027-000123</AnmodningId>
    <Status>MODTAGET</Status>
  </Anmodning>
  <Anmodning>
    <AnmodningId>KBH-2026-000077</AnmodningId>
    <Status>AFVIST</Status>
    <Afvisning><Kode>U08</Kode><Tekst>Anmodningen findes ikke eller er ophørt</Tekst></Afvisning>
  </Anmodning>
</TraekAnmodningKvittering>
"""


def kvittering(**changes) -> bytes:
    arguments = {
        "kommunekode": "0101",
        "modtaget_filnavn": "SF6110_0101_20270105101500.xml",
        "file_transfer_uuid": "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed",
        "modtaget": RECEIVED,
        "status": "MODTAGET",
        "kode": None,
        "outcomes": OUTCOMES,
    }
    return encode_kvittering(**(arguments | changes))


def assert_valid_kvittering(data: bytes) -> None:
    schema = kvittering_schema()
    assert schema.validate(parse_xml(data)), schema.error_log


def test_kvittering_is_the_spec_example_byte_for_byte():
    data = kvittering()
    assert data.decode("utf-8") == SPEC_KVITTERING
    assert_valid_kvittering(data)


def test_kvittering_of_a_rejected_file():
    data = kvittering(kommunekode="0000", status="AFVIST", kode="F04", outcomes=pl.DataFrame())
    assert_valid_kvittering(data)
    header, anmodninger = decode_kvittering(data)
    assert header == {
        "kommunekode": "0000",
        "modtaget_filnavn": "SF6110_0101_20270105101500.xml",
        "file_transfer_uuid": "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed",
        "modtaget_tidspunkt": "2027-01-05T09:16:02Z",
        "status": "AFVIST",
        "kode": "F04",
        "tekst": "Afsender må ikke sende for kommunen",
        "antal_modtaget": 0,
        "antal_afvist": 0,
    }
    assert anmodninger.height == 0
    # The Afvisning stands right after Status (sf6110.md).
    text = data.decode()
    assert text.index("</Status>") < text.index("<Afvisning>") < text.index("<AntalModtaget>")


def test_kvittering_of_a_rejected_file_ignores_outcomes():
    assert kvittering(status="AFVIST", kode="F05") == kvittering(status="AFVIST", kode="F05", outcomes=pl.DataFrame())


def test_kvittering_u01_names_the_element_and_echoes_ids_exactly():
    outcomes = pl.DataFrame(
        {
            "position": [2, 0, 1],
            "anmodning_id": [None, "", " a&b "],
            "status": ["AFVIST", "AFVIST", "MODTAGET"],
            "kode": ["U02", "U01", None],
            "element": [None, "AnmodningId", None],
        }
    )
    data = kvittering(outcomes=outcomes)
    assert_valid_kvittering(data)
    header, anmodninger = decode_kvittering(data)
    assert (header["antal_modtaget"], header["antal_afvist"]) == (1, 2)
    assert anmodninger.to_dicts() == [  # file order, whatever order the frame had
        {"anmodning_id": "", "status": "AFVIST", "kode": "U01", "tekst": "Anmodningen overholder ikke formatet: AnmodningId"},
        {"anmodning_id": " a&b ", "status": "MODTAGET", "kode": None, "tekst": None},
        {"anmodning_id": "", "status": "AFVIST", "kode": "U02", "tekst": "AnmodningId optræder flere gange i filen"},
    ]
    assert b"<AnmodningId></AnmodningId>" in data


def test_kvittering_with_no_instructions():
    data = kvittering(outcomes=OUTCOMES.clear())
    assert_valid_kvittering(data)
    assert decode_kvittering(data)[0]["antal_modtaget"] == 0


def test_kvittering_never_contains_a_cpr():
    decoded = decode_request_file(request())
    outcomes = decoded.instructions.select(
        "position", "anmodning_id", status=pl.lit("AFVIST"), kode=pl.lit("U01"), element=pl.lit("CPR")
    )
    data = kvittering(outcomes=outcomes)
    assert_valid_kvittering(data)
    for cpr in CPRS:
        assert cpr.encode() not in data
        assert f"{cpr[:6]}-{cpr[6:]}".encode() not in data


def test_kvittering_needs_an_aware_time_and_a_consistent_status():
    with pytest.raises(ValueError, match="aware"):
        kvittering(modtaget=dt.datetime(2027, 1, 5, 10, 16, 2))
    with pytest.raises(ValueError):
        kvittering(status="AFVIST")  # without its F-code
    with pytest.raises(ValueError):
        kvittering(status="OK")


def test_kvittering_schema_is_not_vacuous():
    assert not kvittering_schema().validate(parse_xml(kvittering(kommunekode="101")))
    broken = kvittering().replace(b"<AntalModtaget>1</AntalModtaget>", b"")
    assert not kvittering_schema().validate(parse_xml(broken))


def test_kvittering_filnavn():
    assert kvittering_filnavn("0101", "1b9d6bcd-bbfd") == "SF6110K_0101_1b9d6bcd-bbfd.xml"
    assert kvittering_filnavn("0000", "u") == "SF6110K_0000_u.xml"
