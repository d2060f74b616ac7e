"""What the message payloads share (sf1411-sf2610.md): an element that is absent when its value
is null, the `Aendring` of a changed field (`Felt`, `Foer`, `Efter`, each of the last two absent
when null) and booleans as `true`/`false`. Used by the SF1411_D payload (contracts/sf1411d.py)
and the SF2610 payloads (contracts/sf2610.py), so both write their text the same way. No Dagster."""

from __future__ import annotations

import polars as pl

from contracts.xmlsafe import escape_text_expr


def element_expr(name: str, value: pl.Expr) -> pl.Expr:
    """`<name>value</name>` with the text escaped; empty when `value` is null."""
    return pl.when(value.is_null()).then(pl.lit("")).otherwise(
        pl.concat_str([pl.lit(f"<{name}>"), escape_text_expr(value), pl.lit(f"</{name}>")])
    )


def aendring_expr(felt: pl.Expr = pl.col("felt"), foer: pl.Expr = pl.col("foer"), efter: pl.Expr = pl.col("efter")) -> pl.Expr:
    """One `Aendring` element per row (the field name is one of the code's own, never escaped)."""
    return pl.concat_str(
        [
            pl.lit("<Aendring><Felt>"),
            felt,
            pl.lit("</Felt>"),
            element_expr("Foer", foer),
            element_expr("Efter", efter),
            pl.lit("</Aendring>"),
        ]
    )


def boolean_tekst_expr(col: pl.Expr) -> pl.Expr:
    """`true`/`false`, null stays null."""
    return pl.when(col.is_null()).then(None).when(col).then(pl.lit("true")).otherwise(pl.lit("false"))
