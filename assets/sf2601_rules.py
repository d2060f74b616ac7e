"""Who is in SF2601 for period P and what they were paid (sf2601.md), as plain polars functions.

No Dagster and no I/O here. Money is integer øre throughout.
"""

from __future__ import annotations

import polars as pl

from assets.settlement_rules import AFREGNET
from contracts.sf2601 import UDBETALING_SCHEMA

# One row per citizen in an SF2601 file: the codec's rows.
SF2601_ROWS_SCHEMA = UDBETALING_SCHEMA


def _paid_to_municipality(pensionssager: pl.DataFrame, pensionsberegning: pl.DataFrame) -> pl.DataFrame:
    # sf2601.md "Who is in the file": under administration, paid to the municipality's NemKonto,
    # and paid out in P (a netto of 0 with udbetales true is still listed).
    sager = pensionssager.filter(
        pl.col("under_administration").fill_null(False) & pl.col("udbetaling_til_kommune").fill_null(False)
    ).select("cpr", "pensionstype", "bopaelskommune", "administrationskommune")
    # The calculation of these citizens only (a few thousand of 1.5 M nationally), before the
    # join that checks both sides' keys are unique.
    beregning = (
        pensionsberegning.filter(pl.col("udbetales").fill_null(False))
        .join(sager.select("cpr"), on="cpr", how="semi")
        .select("cpr", "brutto_oere", "skat_oere", "netto_oere")
    )
    return sager.join(beregning, on="cpr", how="inner", validate="1:1")


def sf2601_rows(
    settled: pl.DataFrame, pensionssager: pl.DataFrame, pensionsberegning: pl.DataFrame
) -> pl.DataFrame:
    """One row per citizen in an SF2601 file for P; columns SF2601_ROWS_SCHEMA, sorted by
    (kommunekode, cpr).

    traek_oere is the sum of AFREGNET deductions for the CPR over all municipalities, and
    udbetalt_oere = netto_oere − traek_oere. Cases without administrationskommune are left out
    (`missing_administrationskommune` reports them)."""
    paid = _paid_to_municipality(pensionssager, pensionsberegning).filter(pl.col("administrationskommune").is_not_null())
    # The settled deductions of these citizens only (a few thousand of 300,000 nationally) are
    # added up.
    traek = (
        settled.filter(pl.col("status") == AFREGNET)
        .join(paid.select("cpr"), on="cpr", how="semi")
        .group_by("cpr")
        .agg(traek_oere=pl.col("afregnet_oere").sum().cast(pl.Int64))
    )
    return (
        paid.join(traek, on="cpr", how="left")
        .with_columns(
            kommunekode=pl.col("administrationskommune"),
            traek_oere=pl.col("traek_oere").fill_null(0),
        )
        .with_columns(udbetalt_oere=pl.col("netto_oere") - pl.col("traek_oere"))
        .select([pl.col(name).cast(dtype) for name, dtype in SF2601_ROWS_SCHEMA.items()])
        .sort("kommunekode", "cpr")
    )


def missing_administrationskommune(pensionssager: pl.DataFrame, pensionsberegning: pl.DataFrame) -> pl.DataFrame:
    """sf2601.md: a case under administration with payment to the municipality but without an
    administrationskommune is a data error, left out of every file. These are those cases.

    Columns: cpr, pensionstype, bopaelskommune, netto_oere, sorted by cpr. The cpr is in full:
    mask it (mask_cpr_expr) before it goes into metadata or a log."""
    return (
        _paid_to_municipality(pensionssager, pensionsberegning)
        .filter(pl.col("administrationskommune").is_null())
        .select("cpr", "pensionstype", "bopaelskommune", "netto_oere")
        .sort("cpr")
    )
