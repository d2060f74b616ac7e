"""The code lists of the spec, kept as data files beside this module (a new code is a data change)."""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

import polars as pl

HERE = Path(__file__).parent


def _read_csv(name: str) -> pl.DataFrame:
    # Every column is text: kommunekode `0101` must never become the integer 101.
    return pl.read_csv(HERE / name, separator=";", infer_schema=False)


@cache
def kommuner() -> pl.DataFrame:
    """kommunekode;navn for the 98 municipalities."""
    return _read_csv("kommuner.csv")


@cache
def kommunekoder() -> frozenset[str]:
    return frozenset(kommuner()["kommunekode"].to_list())


@cache
def traekarter() -> pl.DataFrame:
    """traekart;betydning;prioritet (sf6110.md). prioritet as an integer."""
    return _read_csv("traekart.csv").with_columns(pl.col("prioritet").cast(pl.Int32))


@cache
def afvisningskoder() -> dict[str, str]:
    """Every rejection code of the spec (F01–F06, U01–U08, A01–A03) -> its Danish text."""
    with open(HERE / "afvisningskoder.csv", encoding="utf-8", newline="") as f:
        return {row["kode"]: row["tekst"] for row in csv.DictReader(f, delimiter=";")}


def afvisningstekst(kode: str) -> str:
    return afvisningskoder()[kode]
