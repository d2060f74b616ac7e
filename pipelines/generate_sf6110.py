"""Synthetic SF6110 request files (sf6110.md) for the demo and the benchmark: realistic OPRET
instructions for living citizens with an AKTIV pension case, one file per municipality.

Vectorized: every random choice is a seeded hash of the row number, so the same arguments give
the same bytes, and 300,000 instructions over 98 files take a few seconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

from contracts.money import format_kroner_expr
from contracts.sf6110 import INSTRUCTION_SCHEMA, POST, encode_request_file
from pipelines.calendar import TZ, parse_periode


# Traekart and its share of the requests in per cent (cumulative bounds below), with the texts a
# municipality would write in its Specifikation.
TRAEKART_MIX = (("HUSL", 5), ("PLEJ", 25), ("TILB", 10), ("MAD", 40), ("BRUG", 20))
POST_TEKSTER = {
    "HUSL": ["Husleje under afsoning", "Varme og el, lejebolig"],
    "PLEJ": ["Husleje, plejebolig", "El og varme", "Servicepakke", "Vask af tøj"],
    "TILB": ["Tilbagebetaling af personligt tillæg", "Tilbagebetaling, helbredstillæg"],
    "MAD": ["Madordning, hovedmåltid", "Madordning, biret", "Tøjvask"],
    "BRUG": ["Hjemmehjælp, egenbetaling", "Hjælpemidler", "Træning", "Kørsel"],
}
MIN_OERE, MAX_OERE = 5_000, 500_000  # 50–5000 kr a month

# The U01 mistakes an `invalid_share` of the instructions carry (each breaks exactly one rule).
MISTAKES = ("cpr", "traekart", "sum", "beloeb")


def generate_request_files(
    pensionssager: pl.DataFrame,
    *,
    instructions: int,
    fra_periode: str,
    seed: int = 0,
    kommuner: Sequence[str] | None = None,
    dannet: dt.datetime | None = None,
    invalid_share: float = 0.0,
    til_periode: str | None = None,
) -> dict[str, bytes]:
    """File name -> SF6110 bytes, one file per municipality that got at least one instruction.

    Citizens are drawn from the AKTIV, living cases (of `kommuner` when given), the file's
    Kommunekode being their bopaelskommune. `dannet` (default: now) is the DannetTidspunkt and
    names the files `SF6110_<kommunekode>_<YYYYMMDDhhmmss>.xml` in Danish time. `til_periode`
    (default: a random end for some) ends every request in that period: the benchmark's monthly
    cycles keep a steady number of active requests while the history grows."""
    if instructions < 0:
        raise ValueError(f"instructions must be 0 or more, got {instructions}")
    parse_periode(fra_periode)
    if til_periode is not None and parse_periode(til_periode) < parse_periode(fra_periode):
        raise ValueError(f"til_periode {til_periode} is before fra_periode {fra_periode}")
    if not 0.0 <= invalid_share <= 1.0:
        raise ValueError(f"invalid_share must lie between 0 and 1, got {invalid_share}")
    dannet = (dannet or dt.datetime.now(TZ)).replace(microsecond=0)
    if dannet.tzinfo is None:
        raise ValueError("dannet must be an aware datetime (DannetTidspunkt carries its offset)")

    eligible = pensionssager.lazy().filter(
        (pl.col("sagsstatus") == "AKTIV") & pl.col("doedsdato").is_null()
    )
    if kommuner is not None:
        eligible = eligible.filter(pl.col("bopaelskommune").is_in(list(kommuner)))
    eligible = eligible.select("cpr", kommunekode="bopaelskommune").collect()
    if instructions == 0:
        return {}
    if eligible.is_empty():
        raise ValueError("no living citizen with an AKTIV pension case in the chosen municipalities")

    requests = (
        eligible.sample(n=instructions, with_replacement=instructions > eligible.height, seed=seed, shuffle=True)
        .sort("kommunekode", maintain_order=True)
        .with_columns(nummer=pl.int_range(1, pl.len() + 1).over("kommunekode"))
        .with_row_index("row")
    )
    requests = _with_instruction_columns(requests, fra_periode, seed, invalid_share)
    if til_periode is not None:
        requests = requests.with_columns(til_periode=pl.lit(til_periode))
    stamp = dannet.astimezone(TZ)
    files = {}
    for (kommunekode,), frame in requests.partition_by("kommunekode", as_dict=True, maintain_order=True).items():
        name = f"SF6110_{kommunekode}_{stamp:%Y%m%d%H%M%S}.xml"
        instructions_of_kommune = frame.with_columns(position=pl.int_range(pl.len(), dtype=pl.Int32))
        files[name] = encode_request_file(
            kommunekode, dannet.isoformat(), instructions_of_kommune.select(INSTRUCTION_SCHEMA.names())
        )
    return files


def _draw(seed: int, salt: int, below: int) -> pl.Expr:
    """A reproducible pseudo-random integer in [0, below) per row."""
    return (pl.col("row").hash(seed=seed * 1_000_003 + salt) % below).cast(pl.Int64)


def _traekart(seed: int) -> pl.Expr:
    """A code drawn with the shares of TRAEKART_MIX."""
    percent = _draw(seed, 1, 100)
    upper_bounds, bound = [], 0
    for code, share in TRAEKART_MIX:
        bound += share
        upper_bounds.append((code, bound))
    traekart = pl.lit(upper_bounds[-1][0])
    for code, upper in reversed(upper_bounds[:-1]):
        traekart = pl.when(percent < upper).then(pl.lit(code)).otherwise(traekart)
    return traekart


def _add_months(periode: str, months: pl.Expr) -> pl.Expr:
    year, month = parse_periode(periode)
    index = year * 12 + month - 1 + months
    return pl.format("{}-{}", (index // 12).cast(pl.String).str.zfill(4), (index % 12 + 1).cast(pl.String).str.zfill(2))


def _with_instruction_columns(requests: pl.DataFrame, fra_periode: str, seed: int, invalid_share: float) -> pl.DataFrame:
    total = MIN_OERE + _draw(seed, 2, MAX_OERE - MIN_OERE + 1)
    antal_poster = 1 + _draw(seed, 3, 3)
    first = total * (20 + _draw(seed, 4, 60)) // 100
    second = (total - first) * (20 + _draw(seed, 5, 60)) // 100
    # 1–3 Post that add up to the total exactly, each > 0 (total >= 50 kr).
    amounts = [
        pl.when(antal_poster == 1).then(total).otherwise(first),
        pl.when(antal_poster == 2).then(total - first).otherwise(second),
        total - first - second,
    ]
    texts = pl.col("traekart").replace_strict(POST_TEKSTER, return_dtype=pl.List(pl.String))
    poster = pl.concat_list(
        pl.struct(tekst=texts.list.get(_draw(seed, 10 + i, 1_000) % texts.list.len()), beloeb=format_kroner_expr(amount))
        for i, amount in enumerate(amounts)
    ).list.head(antal_poster)
    reference = pl.format(
        "Sag {}-{}", pl.lit(fra_periode[2:4]), _draw(seed, 21, 10_000).cast(pl.String).str.zfill(4)
    )
    wrong = _draw(seed, 7, 1_000_000) < int(round(invalid_share * 1_000_000))
    mistake = pl.when(wrong).then(pl.lit(pl.Series(MISTAKES)).get(_draw(seed, 8, len(MISTAKES))))
    samlet = format_kroner_expr(total)

    correct = requests.with_columns(
        anmodning_id=pl.format(
            "G{}-{}-{}-{}", pl.lit(seed), pl.lit(fra_periode.replace("-", "")), "kommunekode",
            pl.col("nummer").cast(pl.String).str.zfill(6),
        ),
        handling=pl.lit("OPRET"),
        traekart=_traekart(seed),
        fra_periode=pl.lit(fra_periode),
        til_periode=pl.when(_draw(seed, 9, 10) < 3).then(_add_months(fra_periode, _draw(seed, 6, 12) + 1)),
        samlet_beloeb=samlet,
        specifikation_present=pl.lit(True),
        reference=pl.when(_draw(seed, 20, 2) == 0).then(reference),
        mistake=mistake,
    ).with_columns(poster=poster.cast(pl.List(POST)))
    # The mistakes each break one U01 rule (sf6110.md): an impossible birth date (31 February),
    # an unknown Traekart, a Specifikation that does not add up, an amount with a decimal comma.
    return correct.with_columns(
        cpr=pl.when(pl.col("mistake") == "cpr").then(pl.lit("3102501234")).otherwise("cpr"),
        traekart=pl.when(pl.col("mistake") == "traekart").then(pl.lit("XXXX")).otherwise("traekart"),
        samlet_beloeb=pl.when(pl.col("mistake") == "sum")
        .then(format_kroner_expr(total + 1))
        .when(pl.col("mistake") == "beloeb")
        .then(pl.col("samlet_beloeb").str.replace(".", ",", literal=True))
        .otherwise("samlet_beloeb"),
    )
