"""CPR numbers: validity as the spec defines it, and the one way to show one (masked)."""

from __future__ import annotations

import datetime as dt
import re

import polars as pl
from stdnum.dk import cpr as stdnum_cpr


def is_valid_cpr(value: str | None, judged_on: dt.date) -> bool:
    """README conventions: ten ASCII digits, a real birth date in the century that digit 7 gives,
    not after `judged_on`. No modulus-11 check (python-stdnum's `get_birth_date` does exactly this)."""
    if value is None or len(value) != 10 or not value.isascii() or not value.isdigit():
        return False
    try:
        birth_date = stdnum_cpr.get_birth_date(value)
    except Exception:  # stdnum raises InvalidComponent / ValueError for impossible dates
        return False
    return birth_date <= judged_on


def mask_cpr(value: str | None) -> str:
    """`DDMMYY-****`: the only form in which a CPR may reach a log, an exception or metadata."""
    if value is None:
        return "<ingen>"
    return f"{value[:6]}-****" if len(value) >= 6 else "******-****"


_CPR_LIKE = re.compile(r"([0-9]{6})[0-9]{3,}")


def mask_text(text: str) -> str:
    """Mask every run of nine or more digits as a CPR (`DDMMYY-****`), wherever it stands in free
    text: also a CPR stored as an integer (it lost its leading zero) or used as an id."""
    return _CPR_LIKE.sub(r"\1-****", text)


# A CPR's text before its date is judged: ten ASCII digits (then it is also one integer, which
# joins and sorts as the text does: assets.settlement_rules.cpr_key, contracts.register).
TEN_ASCII_DIGITS = r"^[0-9]{10}$"


def mask_cpr_expr(column: str) -> pl.Expr:
    """The same mask as `mask_cpr`, as a polars expression."""
    return pl.col(column).str.slice(0, 6) + pl.lit("-****")


def valid_cpr_expr(column: str | pl.Expr, judged_on: dt.date | pl.Expr) -> pl.Expr:
    """`is_valid_cpr` as a polars expression (never null), for frames of a million CPRs.

    `judged_on` is a date or a date expression (e.g. each file's received date). Mirrors
    stdnum's `get_birth_date`: digit 7 and YY give the century, DDMMYY must be a real date."""
    cpr = pl.col(column) if isinstance(column, str) else column
    ten_ascii_digits = cpr.str.contains(TEN_ASCII_DIGITS)
    yy = cpr.str.slice(4, 2).cast(pl.Int32, strict=False)
    digit7 = cpr.str.slice(6, 1)
    century = (
        pl.when(digit7.is_in(["5", "6", "7", "8"]) & (yy >= 58))
        .then(1800)
        .when(digit7.is_in(["0", "1", "2", "3"]) | (digit7.is_in(["4", "9"]) & (yy >= 37)))
        .then(1900)
        .otherwise(2000)
    )
    birth_date = pl.concat_str(
        (century + yy).cast(pl.String).str.zfill(4), cpr.str.slice(2, 2), cpr.str.slice(0, 2)
    ).str.to_date("%Y%m%d", strict=False)
    judged = pl.lit(judged_on, dtype=pl.Date) if isinstance(judged_on, dt.date) else judged_on
    return (ten_ascii_digits & (birth_date <= judged)).fill_null(False)
