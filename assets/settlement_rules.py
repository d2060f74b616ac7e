"""The monthly settlement of registered deductions (settlement.md), as plain polars functions.

No Dagster and no I/O here: the settlement assets read the ledger and the register, call these
functions, and write what they return. Money is integer øre throughout.
"""

from __future__ import annotations

import polars as pl

from contracts.codes import afvisningskoder, traekarter
from contracts.cpr import TEN_ASCII_DIGITS
from contracts.sf6111 import AFREGNET, AFVIST, TRAEK_SCHEMA
from pipelines.calendar import first_day


# The request's identity (settlement.md "Which requests are active in P").
REQUEST = ["kommunekode", "anmodning_id"]

ACTIVE_SCHEMA = pl.Schema(
    {
        "kommunekode": pl.String,
        "anmodning_id": pl.String,
        "cpr": pl.String,
        "traekart": pl.String,
        "beloeb_oere": pl.Int64,
        "til_periode": pl.String,
        "opret_modtaget": pl.Datetime("us", "UTC"),
        "periode": pl.String,
    }
)

# One row per active request with its outcome: the rows an SF6111 file is made of.
SETTLED_SCHEMA = TRAEK_SCHEMA

# settlement.md step 3: a citizen's requests are walked in this order.
WALK_ORDER = ["cpr", "prioritet", "opret_modtaget", "kommunekode", "anmodning_id"]

def versions_in_force(ledger: pl.DataFrame, periode: str) -> pl.DataFrame:
    """Per request, its version in force in `periode` (an OPRET, AENDR or OPHOER): of the
    registered instructions with FraPeriode <= P, the one received last (settlement.md). Columns:
    the ledger's; requests with no instruction from P or earlier have no row. Sorted by request."""
    return _in_force(_by_request(ledger), periode).drop("request")


def _by_request(ledger: pl.DataFrame) -> pl.DataFrame:
    """The ledger sorted by request and, within a request, in the order received, with `request`
    numbering the requests: one sort instead of hashing the two text columns of the request's
    identity for each grouping and join (issue 11)."""
    # Between files with the same modtaget the later file name (byte order). Same name and second
    # (a redelivery) and the place in the file (unreachable, U02) only make the choice total.
    received_order = ["modtaget", "filnavn", "file_transfer_uuid", "position"]
    return ledger.sort([*REQUEST, *received_order], nulls_last=False).with_columns(
        request=pl.struct(REQUEST).rle_id()
    )


def _in_force(by_request: pl.DataFrame, periode: str) -> pl.DataFrame:
    """versions_in_force of _by_request's frame: the last row of each request among its rows
    with FraPeriode <= P."""
    first_day(periode)  # judge the argument before using it in comparisons
    candidates = by_request.filter(pl.col("fra_periode") <= periode)
    return candidates.filter(pl.col("request").ne_missing(pl.col("request").shift(-1)))


def may_start_activity(periode: str) -> pl.Expr:
    """Whether a ledger row is an OPRET or AENDR from `periode` or earlier that lasts into it:
    only a request with such a row can have a version in force in `periode` that is active."""
    return (
        (pl.col("fra_periode") <= periode)
        & pl.col("handling").is_in(["OPRET", "AENDR"])
        & (pl.col("til_periode").is_null() | (pl.lit(periode) <= pl.col("til_periode")))
    )


def active_requests(ledger: pl.DataFrame, periode: str) -> pl.DataFrame:
    """The requests active in `periode`, each with the amount and Traekart of its version in force.

    settlement.md "Which requests are active in P". Columns: ACTIVE_SCHEMA, one row per request,
    sorted by (kommunekode, anmodning_id)."""
    # Only a request with an OPRET or AENDR from P or earlier that lasts into P can have one in
    # force in P, so the rules see only those requests (all their instructions): the same result
    # as from the whole ledger, but the years of requests that ended do not weigh on every
    # period's settlement (issue 11: a run's cost must not grow with the history). They are
    # told by a hash of the identity, cheaper than comparing its two texts: a collision only
    # lets another request's rows through, and those are then not active.
    identity = pl.struct(REQUEST).hash()
    candidates = ledger.filter(may_start_activity(periode)).select(identity)
    by_request = _by_request(ledger.filter(identity.is_in(candidates.to_series().implode())))
    # Walk order uses the modtaget of the request's OPRET, which exists whatever the FraPeriode of
    # the version in force (an AENDR may start the request earlier than its OPRET, sf6110.md).
    # U07/U08 make the OPRET the first instruction of a request; the fallback only keeps the
    # column total should a ledger ever lack it.
    opret = by_request.group_by("request").agg(
        opret_modtaget=pl.col("modtaget")
        .filter(pl.col("handling") == "OPRET")
        .min()
        .fill_null(pl.col("modtaget").min())
    )
    active = _in_force(by_request, periode).filter(
        pl.col("handling").is_in(["OPRET", "AENDR"])
        & (pl.col("til_periode").is_null() | (pl.lit(periode) <= pl.col("til_periode")))
    )
    return (
        active.join(opret, on="request", how="left", maintain_order="left")
        .with_columns(periode=pl.lit(periode))
        .select([pl.col(name).cast(dtype) for name, dtype in ACTIVE_SCHEMA.items()])
    )


def settle(
    active: pl.DataFrame,
    pensionssager: pl.DataFrame,
    pensionsberegning: pl.DataFrame,
    periode: str,
) -> pl.DataFrame:
    """One outcome per active request: settlement.md "Settling one citizen".

    Columns: SETTLED_SCHEMA, sorted by (kommunekode, anmodning_id)."""
    return settle_with_trail(active, pensionssager, pensionsberegning, periode)[0]


def cpr_key(*frames: pl.DataFrame) -> pl.Expr:
    """A key that stands for the `cpr` of each of the frames one to one, to join, group and sort
    them by: the CPR as an integer when every CPR of every frame is ten ASCII digits (the number
    then tells exactly one CPR, and orders as the text does), the text itself otherwise. A
    national register has 1.5 M CPRs, and hashing an integer costs a fraction of hashing the
    text (issue 11). A null CPR stays null (a join never matches it)."""
    ten_digits = all(
        frame.select(pl.col("cpr").str.contains(TEN_ASCII_DIGITS).fill_null(True).all()).item() for frame in frames
    )
    return (pl.col("cpr").cast(pl.Int64) if ten_digits else pl.col("cpr")).alias("cpr_key")


def settle_with_trail(
    active: pl.DataFrame,
    pensionssager: pl.DataFrame,
    pensionsberegning: pl.DataFrame,
    periode: str,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(settle(...), settlement_trail(...)) at once: the trail from the frame the walk was made
    from, without joining the register a second time (a national register has 1.5 M rows)."""
    first_day_of_p = first_day(periode)
    prioritet = traekarter().select("traekart", "prioritet")
    unknown = active.join(prioritet, on="traekart", how="anti")["traekart"].unique().sort()
    if len(unknown):
        raise ValueError(
            f"Traekart {unknown.to_list()} not in contracts/traekart.csv: add the code with its "
            "prioritet (sf6110.md) before settling"
        )

    beregning = pensionsberegning
    if "periode" in beregning.columns:  # the calculation for P only (register.md)
        beregning = beregning.filter(pl.col("periode") == periode)
    key = cpr_key(active, pensionssager, beregning)
    # Only the register rows of the citizens with requests take part: a national register has
    # 1.5 M rows, and the joins below check their keys' uniqueness (a CPR twice among these
    # would double requests; one twice among the others changes nothing here).
    citizens = active.select(key)
    sag = pensionssager.select(key, "doedsdato").join(citizens, on="cpr_key", how="semi").with_columns(har_sag=pl.lit(True))
    beregning = beregning.select(key, "netto_oere", "udbetales").join(citizens, on="cpr_key", how="semi").with_columns(
        har_beregning=pl.lit(True)
    )

    requests = (
        active.select(
            *REQUEST,
            "cpr",
            key,
            "traekart",
            "opret_modtaget",
            anmodet_oere=pl.col("beloeb_oere").cast(pl.Int64),
        )
        .join(prioritet, on="traekart", how="left")
        # validate: a CPR twice in a register table would double requests silently
        .join(sag, on="cpr_key", how="left", validate="m:1")
        .join(beregning, on="cpr_key", how="left", validate="m:1")
        .with_columns(
            kode=pl.when(pl.col("doedsdato") < first_day_of_p)  # a death during P does not stop P
            .then(pl.lit("A01"))
            .when(
                ~pl.col("har_sag").fill_null(False)
                | ~pl.col("har_beregning").fill_null(False)
                | ~pl.col("udbetales").fill_null(False)
                | (pl.col("netto_oere") <= 0)
            )
            .then(pl.lit("A02"))
        )
    )
    # Every request in walk order (the key orders as the CPR does), those rejected up front too:
    # the trail's order. A01 and A02 reject a citizen's every request, so a walked citizen's
    # place in this order is its place in the walk.
    # Nulls last only when there are any: polars sorts several columns far faster with nulls
    # first (0.03 s against 0.2 s nationally), and without nulls the order is the same.
    walk_order = ["cpr_key", *WALK_ORDER[1:]]
    with_nulls = any(requests[name].null_count() for name in walk_order)
    walk = (
        requests.with_row_index("order")
        .sort(walk_order, nulls_last=with_nulls)
        .with_columns(trin=_trin("cpr_key"))
    )
    outcomes = walk.with_columns(afregnet_oere=_priority_walk(walk)).with_columns(
        kode=pl.when(pl.col("kode").is_null() & (pl.col("afregnet_oere") != pl.col("anmodet_oere")))
        .then(pl.lit("A03"))
        .otherwise(pl.col("kode")),
        periode=pl.lit(periode),
    ).with_columns(
        status=pl.when(pl.col("kode").is_null()).then(pl.lit(AFREGNET)).otherwise(pl.lit(AFVIST)),
        tekst=pl.col("kode").replace_strict(afvisningskoder(), default=None, return_dtype=pl.String),
    )
    # Back in the order of `active` first (integers to sort): active_requests gives it sorted by
    # request, and then the sort by request finds its work done.
    settled = (
        outcomes.sort("order")
        .select([pl.col(name).cast(dtype) for name, dtype in SETTLED_SCHEMA.items()])
        .sort(REQUEST)
    )
    trail = outcomes.select([pl.col(name).cast(dtype) for name, dtype in TRAIL_SCHEMA.items()])
    return settled, trail


def _trin(citizen: str = "cpr") -> pl.Expr:
    """The 0-based place of each row among its citizen's rows, for rows sorted by `citizen`: the
    same as `int_range(len).over(citizen)` without hashing every CPR (300,000 of them nationally)."""
    index = pl.int_range(pl.len(), dtype=pl.UInt32)
    first_of_citizen = pl.when((index == 0) | pl.col(citizen).ne_missing(pl.col(citizen).shift(1))).then(index)
    return index - first_of_citizen.forward_fill()


def _priority_walk(walk: pl.DataFrame) -> pl.Series:
    """settlement.md step 3 for citizens whose pension pays out (no `kode` yet), in `walk`'s
    order (by citizen `cpr_key`, then WALK_ORDER, with `trin`): walk the requests in priority
    order with rest = netto; a request that fits is settled in full, one that does not is A03
    and the walk goes on. Never split. Returns afregnet_oere for each row of `walk` (0 for those
    rejected up front).

    The walk is sequential within a citizen but independent between citizens, so it runs over the
    place in the walk (`trin`, a handful at most) with one vectorized `rest` for all citizens."""
    walking = (
        walk.with_row_index("place")
        .with_columns(borger=pl.col("cpr_key").rle_id())  # 0-based index of the citizen
        .filter(pl.col("kode").is_null())
        .with_columns(borger=pl.col("borger").rle_id())  # of the citizens walked
        .select("place", "trin", "borger", "anmodet_oere", "netto_oere")
    )
    rest = walking.filter(pl.col("trin") == 0)["netto_oere"].cast(pl.Int64).clone()  # by borger
    # One slice per trin: every citizen appears at most once in it.
    walking = walking.sort("trin", "borger")
    steps = walking.group_by("trin", maintain_order=True).len()["len"].to_list()

    afregnet_parts: list[pl.Series] = []
    start = 0
    for length in steps:
        step = walking.slice(start, length)
        borger = step["borger"]
        anmodet = step["anmodet_oere"]
        rest_before = rest.gather(borger)
        fits = anmodet <= rest_before
        afregnet = anmodet * fits.cast(pl.Int64)  # the full amount or nothing: never split
        rest.scatter(borger, rest_before - afregnet)
        afregnet_parts.append(afregnet)
        start += length

    afregnet = pl.zeros(walk.height, pl.Int64, eager=True).alias("afregnet_oere")
    if afregnet_parts:
        afregnet.scatter(walking["place"], pl.concat(afregnet_parts))
    return afregnet


# The settlement as an auditor reads it (operations.md "explain"): each outcome with the citizen's
# netto and its place in the citizen's walk.
TRAIL_SCHEMA = pl.Schema({**SETTLED_SCHEMA, "netto_oere": pl.Int64, "trin": pl.UInt32})


def settlement_trail(
    active: pl.DataFrame, settled: pl.DataFrame, pensionsberegning: pl.DataFrame, periode: str
) -> pl.DataFrame:
    """The rows of `settle()` with `netto_oere` (null when P has no calculation for the CPR) and
    `trin`, the 0-based place of the request in its citizen's walk (settlement.md step 3's order,
    also for requests rejected up front), so that the walk can be told months later even when
    the code list's priorities have changed. Columns TRAIL_SCHEMA, in walk order."""
    prioritet = traekarter().select("traekart", "prioritet")
    beregning = pensionsberegning
    if "periode" in beregning.columns:
        beregning = beregning.filter(pl.col("periode") == periode)
    return _trail(
        settled.join(active.select(*REQUEST, "opret_modtaget"), on=REQUEST, how="left")
        .join(prioritet, on="traekart", how="left")
        .join(beregning.select("cpr", "netto_oere"), on="cpr", how="left", validate="m:1")
    )


def _trail(outcomes: pl.DataFrame) -> pl.DataFrame:
    """The outcomes with opret_modtaget, prioritet and netto_oere, in walk order with `trin`."""
    return (
        outcomes.sort(WALK_ORDER, nulls_last=True)
        .with_columns(trin=_trin())
        .select([pl.col(name).cast(dtype) for name, dtype in TRAIL_SCHEMA.items()])
    )


def settlement_summary(settled: pl.DataFrame) -> pl.DataFrame:
    """Per kommunekode: antal_traek, antal_afregnet, antal_afvist, samlet_afregnet_oere and one
    antal_<kode> per A-code (contracts/afvisningskoder.csv), for Dagster metadata. No CPR."""
    a_koder = sorted(kode for kode in afvisningskoder() if kode.startswith("A"))
    return (
        settled.group_by("kommunekode")
        .agg(
            pl.len().cast(pl.Int64).alias("antal_traek"),
            (pl.col("status") == AFREGNET).sum().cast(pl.Int64).alias("antal_afregnet"),
            (pl.col("status") == AFVIST).sum().cast(pl.Int64).alias("antal_afvist"),
            pl.col("afregnet_oere").sum().cast(pl.Int64).alias("samlet_afregnet_oere"),
            *[(pl.col("kode") == kode).sum().cast(pl.Int64).alias(f"antal_{kode}") for kode in a_koder],
        )
        .sort("kommunekode")
    )


# --- The invariants of settlement.md, each returning the offending rows (empty = holds) ---------


def violations_one_outcome(active: pl.DataFrame, settled: pl.DataFrame) -> pl.DataFrame:
    """settlement.md: each active request has exactly one outcome, and that outcome is whole
    (AFREGNET settles the full amount without a code; AFVIST settles 0 with a code).

    Columns: kommunekode, anmodning_id, antal_aktive, antal_udfald, problem. No CPR."""
    if _one_whole_outcome_each(active, settled):
        return pl.DataFrame(
            schema={**{k: pl.String for k in REQUEST}, "antal_aktive": pl.Int64, "antal_udfald": pl.Int64, "problem": pl.String}
        )
    aktive = active.group_by(REQUEST).agg(antal_aktive=pl.len().cast(pl.Int64))
    udfald = settled.group_by(REQUEST).agg(
        antal_udfald=pl.len().cast(pl.Int64),
        ugyldige=(
            ~(
                (
                    (pl.col("status") == AFREGNET)
                    & pl.col("kode").is_null()
                    & (pl.col("afregnet_oere") == pl.col("anmodet_oere"))
                )
                | (
                    (pl.col("status") == AFVIST)
                    & pl.col("kode").is_not_null()
                    & (pl.col("afregnet_oere") == 0)
                )
            ).fill_null(True)
        ).sum(),
    )
    return (
        aktive.join(udfald, on=REQUEST, how="full", coalesce=True)
        .with_columns(pl.col("antal_aktive", "antal_udfald").fill_null(0))
        .with_columns(
            problem=pl.when(pl.col("antal_aktive") == 0)
            .then(pl.lit("udfald uden aktiv anmodning"))
            .when(pl.col("antal_udfald") == 0)
            .then(pl.lit("intet udfald"))
            .when(pl.col("antal_udfald") > 1)
            .then(pl.lit("flere udfald"))
            .when(pl.col("antal_aktive") > 1)
            .then(pl.lit("anmodningen er aktiv flere gange"))
            .when(pl.col("ugyldige") > 0)
            .then(pl.lit("udfaldet er ikke helt (status, kode og beloeb passer ikke sammen)"))
        )
        .filter(pl.col("problem").is_not_null())
        .select(*REQUEST, "antal_aktive", "antal_udfald", "problem")
        .sort(REQUEST)
    )


def _one_whole_outcome_each(active: pl.DataFrame, settled: pl.DataFrame) -> bool:
    """The usual case, recognised without grouping 300,000 requests twice: both frames list the
    same requests in the same strictly increasing order (so each once), and every outcome is
    whole. Anything else goes through the full comparison, which names the problems."""
    keys = active.select(REQUEST)
    if keys.height != settled.height or not keys.equals(settled.select(REQUEST)):
        return False
    kk, aid = pl.col("kommunekode"), pl.col("anmodning_id")
    increasing = (kk > kk.shift(1)) | ((kk == kk.shift(1)) & (aid > aid.shift(1)))
    whole = (
        (pl.col("status") == AFREGNET) & pl.col("kode").is_null() & (pl.col("afregnet_oere") == pl.col("anmodet_oere"))
    ) | ((pl.col("status") == AFVIST) & pl.col("kode").is_not_null() & (pl.col("afregnet_oere") == 0))
    return bool(
        settled.select(
            (increasing.slice(1).fill_null(False).all() & whole.fill_null(False).all()).alias("ok")
        ).item()
    )


def violations_settled_le_netto(settled: pl.DataFrame, pensionsberegning: pl.DataFrame) -> pl.DataFrame:
    """settlement.md: the settled amounts per CPR never exceed its netto (no calculation row
    counts as netto 0).

    Columns: cpr, afregnet_oere, netto_oere. The cpr is in full: mask it (mask_cpr_expr) before
    it goes anywhere near metadata or a log."""
    key = cpr_key(settled, pensionsberegning)
    per_cpr = settled.group_by(key).agg(
        pl.col("cpr").first(), afregnet_oere=pl.col("afregnet_oere").sum().cast(pl.Int64)
    )
    netto = pensionsberegning.select(key, "netto_oere").join(per_cpr.select("cpr_key"), on="cpr_key", how="semi")
    return (
        per_cpr.join(netto, on="cpr_key", how="left")
        .filter(pl.col("afregnet_oere") > pl.col("netto_oere").fill_null(0))
        .sort("cpr_key")
        .select("cpr", "afregnet_oere", "netto_oere")
    )
