"""CPR numbers: validity as the spec defines it, and the one way to show one (masked)."""

from __future__ import annotations

import datetime as dt

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


def mask_cpr_expr(column: str) -> pl.Expr:
    """The same mask as `mask_cpr`, as a polars expression."""
    return pl.col(column).str.slice(0, 6) + pl.lit("-****")
