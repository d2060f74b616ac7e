"""A synthetic pension register (register.md) for demos, tests and the benchmark.

`generate_register(folder, periods, persons, seed)` writes, for each period P,
`<folder>/pensionssager/<P>.parquet` and `<folder>/pensionsberegning/<P>.parquet`, valid against
the contracts in `contracts/register.py`. Everything is polars expressions over a row number
hashed with the seed, so 1.5 million persons take seconds and the same seed gives the same bytes.

The population is the same in every period; what changes with P:
- a person whose `doedsdato` is before P's first day is `OPHOERT` in P and has no calculation;
  one who dies in P has the `doedsdato` in P's snapshot and is paid for P (the month of death);
  a death after P is not known yet, so the snapshot of P shows none;
- `pensionsberegning.periode` is P.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Sequence
from pathlib import Path

import fsspec
import polars as pl

from contracts.codes import kommunekoder
from contracts.register import PENSIONSBEREGNING_SCHEMA, PENSIONSSAGER_SCHEMA, PROCENT
from pipelines.calendar import first_day, last_day, parse_periode
from pipelines.storage import atomic_write

# The mix, in basis points of all persons (register.md "Scale": 1.35 million recipients, a few
# thousand under administration).
OPHOERT_BP = 50
STANDSET_BP = 100  # sagsstatus STANDSET: udbetales false
DEAD_BP = 40  # a doedsdato between 60 days before the first period and the end of the last
UNDER_ADMINISTRATION_BP = 25  # ~3,400 of 1.35 million
UDBETALING_TIL_KOMMUNE_BP = 9000  # of those under administration
SAMLEVENDE_BP = 4500
FORUD_BP = 1000
HELBREDSPROCENT_BP = 2000
FORMUE_BP = 7000
FULL_TILLAEG_BP = 7000
BISTANDS_PLEJETILLAEG_BP = 100
UDLANDSOPHOLD_BP = 50
BRUTTO_OERE = (800_000, 2_500_000)  # 8,000–25,000 kr a month
SKAT_BP = (2000, 4000)  # 20–40 %

BORN_FROM, BORN_TO = dt.date(1930, 1, 1), dt.date(1965, 12, 31)
SERIALS = 4000  # serial numbers 0000–3999: digit 7 in 0–3 means the 1900s for every YY


# --- pseudo-random columns ------------------------------------------------------------------


def _draw(seed: int, salt: int, modulus: int) -> pl.Expr:
    """A uniform integer in [0, modulus) per row: the row number hashed with seed and salt."""
    return (pl.int_range(pl.len(), dtype=pl.UInt64).hash(seed * 64 + salt) % modulus).cast(pl.Int64)


def _chance(seed: int, salt: int, basis_points: int) -> pl.Expr:
    return _draw(seed, salt, 10_000) < basis_points


def _stride(space: int, seed: int) -> tuple[int, int]:
    """(a, b) with gcd(a, space) = 1, so that i -> (a*i + b) mod space is one-to-one."""
    a = (0x9E3779B1 * (seed + 1)) % space or 1
    while math.gcd(a, space) != 1:
        a += 1
    return a, (seed * 7_919) % space


def sample_cprs(n: int, seed: int = 0, born_from: dt.date = BORN_FROM, born_to: dt.date = BORN_TO) -> pl.Series:
    """`n` distinct valid CPR numbers, birth dates spread over [born_from, born_to] (1900s only),
    deterministic for a seed. Distinct seeds may share numbers."""
    if not (dt.date(1900, 1, 1) <= born_from <= born_to <= dt.date(1999, 12, 31)):
        raise ValueError("sample_cprs draws birth dates in the 1900s only")
    days = (born_to - born_from).days + 1
    space = days * SERIALS
    if n > space:
        raise ValueError(f"cannot draw {n} distinct CPR numbers from {space} possible")
    a, b = _stride(space, seed)
    position = (pl.int_range(n, dtype=pl.Int64) * a + b) % space
    birth_date = pl.lit(born_from) + pl.duration(days=position // SERIALS)
    cpr = pl.concat_str(birth_date.dt.strftime("%d%m%y"), (position % SERIALS).cast(pl.String).str.zfill(4))
    return pl.select(cpr.alias("cpr")).to_series()


# --- the population -------------------------------------------------------------------------


def _population(persons: int, seed: int, first: str, last: str) -> pl.DataFrame:
    """Everyone, with their date of death if they die in the generated span."""
    koder = sorted(kommunekoder())
    died_from = first_day(first) - dt.timedelta(days=60)
    death_span = (last_day(last) - died_from).days + 1
    granted_from = dt.date(1995, 1, 1)
    granted_span = (first_day(first) - granted_from).days

    def code(salt: int) -> pl.Expr:
        return _draw(seed, salt, len(koder)).replace_strict(range(len(koder)), koder, return_dtype=pl.String)

    cpr = sample_cprs(persons, seed)
    people = pl.DataFrame({"cpr": cpr}).with_columns(
        birth_year=pl.col("cpr").str.slice(4, 2).cast(pl.Int32) + 1900,
        bopaelskommune=code(1),
        other_kommune=code(2),
    )
    young = pl.col("birth_year") > 1960  # below folkepension age in 2027
    pensionstype = (
        pl.when(~young)
        .then(pl.lit("FP"))
        .when(_chance(seed, 3, 7000))
        .then(pl.lit("FTP"))
        .when(_chance(seed, 4, 5000))
        .then(pl.lit("SEP"))
        .otherwise(pl.lit("TIP"))
    )
    status = _draw(seed, 5, 10_000)
    sagsstatus = (
        pl.when(status < OPHOERT_BP)
        .then(pl.lit("OPHOERT"))
        .when(status < OPHOERT_BP + STANDSET_BP)
        .then(pl.lit("STANDSET"))
        .otherwise(pl.lit("AKTIV"))
    )
    under_administration = _chance(seed, 6, UNDER_ADMINISTRATION_BP)
    samlevende = _chance(seed, 7, SAMLEVENDE_BP)
    tillaeg_hundredths = pl.when(_chance(seed, 8, FULL_TILLAEG_BP)).then(10_000).otherwise(_draw(seed, 9, 10_001))
    pensionsbroek = (
        pl.when(pensionstype.is_in(["FP", "FTP"]))
        .then(
            pl.when(_chance(seed, 10, 9000))
            .then(pl.lit("40/40"))
            .otherwise(pl.format("{}/40", _draw(seed, 11, 30) + 10))
        )
        .otherwise(pl.lit(None, pl.String))
    )
    return people.with_columns(
        pensionstype=pensionstype,
        sagsstatus=sagsstatus,
        bevillingskommune=pl.col("bopaelskommune"),
        # Mostly the municipality of residence; a tenth are administered by another one.
        administrationskommune=pl.when(under_administration)
        .then(pl.when(_chance(seed, 12, 1000)).then(pl.col("other_kommune")).otherwise(pl.col("bopaelskommune")))
        .otherwise(pl.lit(None, pl.String)),
        under_administration=under_administration,
        udbetaling_til_kommune=under_administration & _chance(seed, 13, UDBETALING_TIL_KOMMUNE_BP),
        doed=pl.when(_chance(seed, 14, DEAD_BP))
        .then(pl.lit(died_from) + pl.duration(days=_draw(seed, 15, death_span)))
        .otherwise(pl.lit(None, pl.Date)),
        forud_bagud=pl.when(_chance(seed, 16, FORUD_BP)).then(pl.lit("FORUD")).otherwise(pl.lit("BAGUD")),
        tillaegsprocent=(tillaeg_hundredths.cast(pl.Decimal(12, 2)) / 100).cast(PROCENT),
        helbredsprocent=pl.when(_chance(seed, 17, HELBREDSPROCENT_BP))
        .then(_draw(seed, 18, 86).cast(PROCENT))
        .otherwise(pl.lit(None, PROCENT)),
        samlevende=samlevende,
        # The partner is the person before in the register (the last one for the first).
        samlever_cpr=pl.when(samlevende)
        .then(pl.col("cpr").shift(1).fill_null(pl.col("cpr").last()))
        .otherwise(pl.lit(None, pl.String)),
        formue_oere=pl.when(_chance(seed, 19, FORMUE_BP))
        .then(_draw(seed, 20, 200_000_001))  # up to 2 million kr
        .otherwise(pl.lit(None, pl.Int64)),
        pensionsbroek=pensionsbroek,
        tilkendelsesdato=pl.lit(granted_from) + pl.duration(days=_draw(seed, 21, granted_span)),
        bistands_plejetillaeg=_chance(seed, 22, BISTANDS_PLEJETILLAEG_BP),
        udlandsophold=_chance(seed, 23, UDLANDSOPHOLD_BP),
        brutto_oere=_draw(seed, 24, BRUTTO_OERE[1] - BRUTTO_OERE[0] + 1) + BRUTTO_OERE[0],
        skat_bp=_draw(seed, 25, SKAT_BP[1] - SKAT_BP[0] + 1) + SKAT_BP[0],
    )


def pensionssager_for(population: pl.DataFrame, periode: str) -> pl.DataFrame:
    """The snapshot of P: deaths up to the end of P are known; dead before P means OPHOERT."""
    known_death = pl.col("doed") <= last_day(periode)
    return population.with_columns(
        doedsdato=pl.when(known_death).then(pl.col("doed")),
        sagsstatus=pl.when(pl.col("doed") < first_day(periode)).then(pl.lit("OPHOERT")).otherwise(pl.col("sagsstatus")),
    ).select(PENSIONSSAGER_SCHEMA.names())


def pensionsberegning_for(population: pl.DataFrame, pensionssager: pl.DataFrame, periode: str) -> pl.DataFrame:
    """The calculation of P for every case that is not OPHOERT; STANDSET is calculated as nothing."""
    paid = pl.col("sagsstatus") == "AKTIV"
    brutto = pl.when(paid).then(pl.col("brutto_oere")).otherwise(0)
    skat = brutto * pl.col("skat_bp") // 10_000
    return (
        pensionssager.select("cpr", "sagsstatus")
        .with_columns(population.select("brutto_oere", "skat_bp"))
        .filter(pl.col("sagsstatus") != "OPHOERT")
        .select(
            "cpr",
            periode=pl.lit(periode),
            brutto_oere=brutto,
            skat_oere=skat,
            netto_oere=brutto - skat,
            udbetales=paid,
        )
        .cast(dict(PENSIONSBEREGNING_SCHEMA))
    )


def generate_register(folder: Path | str, periods: Sequence[str], persons: int, seed: int = 0) -> None:
    """Write a synthetic register for `periods` with `persons` cases (see the module docstring)."""
    periods = sorted(set(periods))
    if not periods:
        raise ValueError("generate_register needs at least one period")
    for periode in periods:
        parse_periode(periode)
    population = _population(persons, seed, periods[0], periods[-1])
    fs, root = fsspec.core.url_to_fs(str(folder))
    for table in ("pensionssager", "pensionsberegning"):
        fs.makedirs(f"{root}/{table}", exist_ok=True)
    for periode in periods:
        pensionssager = pensionssager_for(population, periode)
        pensionsberegning = pensionsberegning_for(population, pensionssager, periode)
        _write(fs, f"{root}/pensionssager/{periode}.parquet", pensionssager)
        _write(fs, f"{root}/pensionsberegning/{periode}.parquet", pensionsberegning)


def _write(fs: fsspec.AbstractFileSystem, path: str, frame: pl.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    atomic_write(fs, path, buffer.getvalue())


def changed_snapshot(sager: pl.DataFrame, share_bp: int, seed: int = 0) -> pl.DataFrame:
    """A later snapshot of `sager` in which about `share_bp` basis points of the cases changed
    (for the messages' demo and benchmark): a new tillaegsprocent for most of them, a move to
    another municipality for some, and TIP → FP for a few TIP cases."""
    h = pl.int_range(pl.len(), dtype=pl.UInt64).hash(seed + 101)
    changed = (h % 10_000) < share_bp
    kind = (h // 10_000) % 10
    codes = sorted(kommunekoder())
    moved_to = pl.lit(pl.Series(codes)).gather(((h // 100_000) % len(codes)).cast(pl.Int64))
    return sager.with_columns(
        tillaegsprocent=pl.when(changed & (kind < 7))
        .then((((h // 1_000_000) % 10_001).cast(pl.Int64).cast(pl.Decimal(12, 2)) / 100).cast(PROCENT))
        .otherwise(pl.col("tillaegsprocent"))
        .cast(PROCENT),
        bopaelskommune=pl.when(changed & (kind >= 7) & (kind < 9)).then(moved_to).otherwise(pl.col("bopaelskommune")),
        pensionstype=pl.when(changed & (kind == 9) & (pl.col("pensionstype") == "TIP"))
        .then(pl.lit("FP"))
        .otherwise(pl.col("pensionstype")),
    ).select(PENSIONSSAGER_SCHEMA.names())
