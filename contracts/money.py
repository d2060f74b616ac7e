"""Money is integer øre inside, decimal kroner text in files. Never a float."""

from __future__ import annotations

import re

import polars as pl

# README / sf6110.md: `[0-9]+(\.[0-9]{1,2})?` and nothing else (ASCII digits only).
AMOUNT_PATTERN = r"^[0-9]+(\.[0-9]{1,2})?$"
_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]{1,2})?", re.ASCII)


def parse_kroner(text: str | None) -> int | None:
    """Kroner text to øre; None when the text is not a valid amount."""
    if text is None or not _AMOUNT.fullmatch(text):
        return None
    kroner, _, oere = text.partition(".")
    return int(kroner) * 100 + int(oere.ljust(2, "0"))


def format_kroner(oere: int) -> str:
    """Øre to kroner with exactly two decimals and `.` as the point: 170000 -> '1700.00'."""
    sign = "-" if oere < 0 else ""
    kroner, rest = divmod(abs(int(oere)), 100)
    return f"{sign}{kroner}.{rest:02d}"


# Significant digits of kroner read into øre: 10^15 kr is far beyond any amount the spec allows
# (SamletBeloeb ≤ 100000.00), and 20 Post of that size still sum inside int64 øre, so no sum can
# wrap around into a valid-looking amount. More digits (leading zeros aside) make it invalid.
MAX_KRONER_DIGITS = 15


def parse_kroner_expr(column: str | pl.Expr) -> pl.Expr:
    """`parse_kroner` as a polars expression: null where the text is not a valid amount.

    `column` is a column name or an expression (e.g. a struct field inside `list.eval`). Any
    number of leading zeros is allowed (xs:decimal: `0000000000001.00` is 1.00); an amount of
    MAX_KRONER_DIGITS or more significant kroner digits is null, never an overflowed int64."""
    text = pl.col(column) if isinstance(column, str) else column
    # One regular expression (the pattern); the parts of an amount it accepts are cut at the point
    # (a third less CPU than extracting them by two more expressions: 300,000 amounts an intake).
    point = text.str.find(".", literal=True).fill_null(text.str.len_bytes())
    kroner = text.str.slice(0, point).str.strip_chars_start("0").str.zfill(1)  # without its leading zeros
    valid = text.str.contains(AMOUNT_PATTERN) & (kroner.str.len_bytes() <= MAX_KRONER_DIGITS)
    decimals = text.str.slice(point + 1).str.pad_end(2, "0")
    oere = kroner.cast(pl.Int64, strict=False) * 100 + decimals.cast(pl.Int64, strict=False)
    return pl.when(valid).then(oere).otherwise(None)


def format_kroner_expr(column: str | pl.Expr) -> pl.Expr:
    """`format_kroner` as a polars expression (non-negative amounts); a column name or an expression."""
    oere = pl.col(column) if isinstance(column, str) else column
    return (oere // 100).cast(pl.String) + "." + (oere % 100).cast(pl.String).str.zfill(2)
