"""Kroner text to øre (contracts/money.py): the polars expression the codecs and rules use says
exactly what `parse_kroner` says, on any text, within the digits it reads."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.money import MAX_KRONER_DIGITS, parse_kroner, parse_kroner_expr


def expected(text: str | None) -> int | None:
    oere = parse_kroner(text) if text is not None else None
    if oere is None or len(text.partition(".")[0].lstrip("0")) > MAX_KRONER_DIGITS:
        return None
    return oere


amounts = st.one_of(
    st.text(alphabet="0123456789.-+ e\n\u0661", max_size=24),
    st.builds(
        lambda zeros, kroner, decimals: "0" * zeros + str(kroner) + decimals,
        st.integers(0, 25),
        st.integers(0, 10**19),
        st.sampled_from(["", ".", ".5", ".05", ".50", ".505"]),
    ),
    st.none(),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(amounts, max_size=40))
def test_the_expression_reads_what_parse_kroner_reads(texts):
    frame = pl.DataFrame({"beloeb": texts}, schema={"beloeb": pl.String})
    read = frame.select(parse_kroner_expr("beloeb"))
    assert read.columns == ["beloeb"]
    assert read["beloeb"].to_list() == [expected(t) for t in texts]
    # Inside a list (a file's Post amounts) the same.
    posts = pl.DataFrame({"poster": [[{"beloeb": t} for t in texts]]}, schema={"poster": pl.List(pl.Struct({"beloeb": pl.String}))})
    in_list = posts.select(pl.col("poster").list.eval(parse_kroner_expr(pl.element().struct.field("beloeb"))))
    assert in_list["poster"].to_list() == [[expected(t) for t in texts]]


def test_edges():
    texts = ["0", "000", "0.00", "01.05", "1.", ".5", "1.505", "0" * 30 + "1.00", "9" * 15 + ".99", "1" + "0" * 15, "", None]
    read = pl.DataFrame({"b": texts}, schema={"b": pl.String}).select(parse_kroner_expr("b"))["b"].to_list()
    assert read == [0, 0, 0, 105, None, None, None, 100, 99999999999999999, None, None, None]
