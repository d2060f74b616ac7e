"""The request ledger: every registered SF6110 instruction (status MODTAGET) with its file's
received time. Written by intake, read by the settlement (settlement.md)."""

from __future__ import annotations

import polars as pl

LEDGER_SCHEMA = pl.Schema(
    {
        "kommunekode": pl.String,
        "anmodning_id": pl.String,
        "cpr": pl.String,
        "handling": pl.String,  # OPRET | AENDR | OPHOER
        "traekart": pl.String,  # null for OPHOER
        "fra_periode": pl.String,  # YYYY-MM
        "til_periode": pl.String,  # YYYY-MM or null
        "beloeb_oere": pl.Int64,  # SamletBeloeb in øre; null for OPHOER
        "modtaget": pl.Datetime("us", "UTC"),  # the file's received time, to the second
        "filnavn": pl.String,  # the delivered file's name
        "file_transfer_uuid": pl.String,
        "position": pl.Int32,  # 0-based place of the instruction in its file
    }
)


def empty_ledger() -> pl.DataFrame:
    return pl.DataFrame(schema=LEDGER_SCHEMA)
