"""The monthly settlement in Dagster (settlement.md): the active requests of P and their settlement.

Both assets are partitioned by udbetalingsperiode and run a range of periods as one run (a
backfill), period by period; the rules are in assets/settlement_rules.py. Frames are kept in the
state store under `periods/<P>/` so that any past period can be explained."""

import io
import threading
from collections import OrderedDict

import dagster as dg
import polars as pl

from assets.register import PENSIONSBEREGNING, PENSIONSSAGER
from assets.settlement_rules import (
    active_requests,
    may_start_activity,
    settle_with_trail,
    settlement_summary,
    violations_one_outcome,
    violations_settled_le_netto,
)
from assets.sf6110 import TRAEKANMODNINGER
from contracts.money import format_kroner
from pipelines.calendar import cutoff
from pipelines.exchange import ExchangeResource
from pipelines.intake import unprocessed
from pipelines.metadata import money_metadata
from pipelines.partitions import (
    SINGLE_RUN,
    period_check_results,
    period_materialization,
    periode_partitions,
    periods_of,
)
from pipelines.register import RegisterError, RegisterResource
from pipelines.resources import StateResource
from pipelines.state import StateStore, sha256_hex, utc_now

AKTIVE_ANMODNINGER = dg.AssetKey(["settlement", "aktive_anmodninger"])
AFREGNING = dg.AssetKey(["settlement", "afregning"])


def frame_path(periode: str, table: str) -> str:
    return f"periods/{periode}/{table}.parquet"


def archive_settlement(store: StateStore, periode: str, trail: pl.DataFrame) -> None:
    """Keep every distinct settlement of P with netto and walk order, never overwritten
    (operations.md: any past period can be explained after any number of later runs), so that
    `pensionstraek explain` can say what each SF6111 version was made from. A re-run with the same
    outcome adds nothing."""
    folder = f"archive/afregning/{periode}"
    earlier = store.listdir(folder)
    if earlier and store.read_frame(f"{folder}/{earlier[-1]}").equals(trail):
        return
    stamp = utc_now().strftime("%Y%m%dT%H%M%S%fZ")
    store.write_frame(f"{folder}/{stamp}.parquet", trail)


# A settlement run reads P's settlement in six steps (its checks, SF6111, SF2601) and its active
# requests in two; decoding the Parquet each time was a tenth of a second nationally (issue 11).
# A frame decoded before is taken from here while the file holds the same bytes (its SHA-256), so
# a frame written again is decoded again. A few frames only, as the register's cache.
_CACHE_FRAMES = 4
_decoded: OrderedDict[tuple[str, str], pl.DataFrame] = OrderedDict()
_decoded_lock = threading.Lock()


def read_period_frame(store: StateStore, periode: str, table: str) -> pl.DataFrame:
    path = frame_path(periode, table)
    if not store.exists(path):
        raise dg.Failure(f"{table} for {periode} er ikke lavet endnu; kør afregningen af {periode} først")
    data = store.read(path)
    key = (store.path(path), sha256_hex(data))
    with _decoded_lock:
        if key in _decoded:
            _decoded.move_to_end(key)
            return _decoded[key]
    frame = pl.read_parquet(io.BytesIO(data))
    with _decoded_lock:
        _decoded[key] = frame
        while len(_decoded) > _CACHE_FRAMES:
            _decoded.popitem(last=False)
    return frame


def readiness_problems(client, store: StateStore, register: RegisterResource, periode: str) -> list[str]:
    """settlement.md "Readiness": nothing received before P's cut-off may still be waiting, and
    the register must have both tables for P. The wall clock plays no part."""
    problems = []
    deadline = cutoff(periode)
    # Only what was received before the cut-off is asked about: IN/ is usually empty after
    # intake, and then the decisions of every file ever received need not be read (issue 11).
    before = [d for d in client.list_deliveries() if d.received < deadline]
    waiting = unprocessed(before, store) if before else []
    if waiting:
        problems.append(
            f"{len(waiting)} SF6110-filer modtaget før fristen for {periode} ({deadline.isoformat()}) "
            "venter stadig i IN/ og er ikke behandlet: kør intake først (`pensionstraek intake`)"
        )
    for table in ("pensionssager", "pensionsberegning"):
        if periode not in register.periods(table):
            problems.append(f"registeret har ingen {table} for {periode} ({register.url})")
    return problems


@dg.asset(
    key=AKTIVE_ANMODNINGER,
    group_name="settlement",
    partitions_def=periode_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[TRAEKANMODNINGER, PENSIONSSAGER, PENSIONSBEREGNING],
    description=(
        "The requests active in P: per (kommunekode, AnmodningId) the version in force (the "
        "instruction received last with FraPeriode ≤ P), when it is an OPRET/AENDR and P is not "
        "after its TilPeriode. Refuses to run while files received before P's cut-off wait in IN/."
    ),
    kinds={"polars", "parquet"},
)
def aktive_anmodninger(
    context: dg.AssetExecutionContext,
    exchange: ExchangeResource,
    register: RegisterResource,
    state: StateResource,
) -> dg.MaterializeResult:
    store = state.store()
    with exchange.open() as client:
        problems = [p for periode in periods_of(context) for p in readiness_problems(client, store, register, periode)]
    if problems:
        raise dg.Failure(description="Afregningen kan ikke køre: " + "; ".join(problems))

    # Only the requests that can be active in one of the periods (the rules judge the rest alike).
    ledger = store.ledger_of_requests(pl.any_horizontal([may_start_activity(p) for p in periods_of(context)]))
    metadata = {}
    for periode in periods_of(context):
        active = active_requests(ledger, periode)
        store.write_frame(frame_path(periode, "aktive_anmodninger"), active)
        metadata[periode] = {"aktive_anmodninger": dg.MetadataValue.int(active.height)}
        context.log.info(f"{periode}: {active.height} aktive anmodninger")
    return period_materialization(context, metadata)


@dg.asset(
    key=AFREGNING,
    group_name="settlement",
    partitions_def=periode_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[AKTIVE_ANMODNINGER, PENSIONSSAGER, PENSIONSBEREGNING],
    description=(
        "The settlement of P: one outcome per active request, AFREGNET with the full amount or "
        "AFVIST with A01 (dead before P), A02 (no payment in P) or A03 (the pension cannot cover "
        "it; the walk in priority order goes on, a deduction is never split)."
    ),
    kinds={"polars", "parquet"},
)
def afregning(
    context: dg.AssetExecutionContext, register: RegisterResource, state: StateResource
) -> dg.MaterializeResult:
    store = state.store()
    figures: dict[str, dict[str, int]] = {}
    for periode in periods_of(context):
        active = read_period_frame(store, periode, "aktive_anmodninger")
        try:
            sager = register.read("pensionssager", periode)
            beregning = register.read("pensionsberegning", periode)
        except RegisterError as exc:
            raise dg.Failure(description=str(exc)) from None
        settled, trail = settle_with_trail(active, sager, beregning, periode)
        store.write_frame(frame_path(periode, "afregning"), settled)
        archive_settlement(store, periode, trail)
        figures[periode] = settlement_figures(settled)
        f = figures[periode]
        context.log.info(
            f"{periode}: {f['anmodninger']} anmodninger, {f['afregnet']} afregnet "
            f"({format_kroner(f['afregnet_oere'])} kr), {f['afvist']} afvist"
        )
    return period_materialization(context, {periode: figures_metadata(f) for periode, f in figures.items()})


def settlement_figures(settled: pl.DataFrame) -> dict[str, int]:
    summary = settlement_summary(settled)
    a_codes = [c for c in summary.columns if c.startswith("antal_A")]
    return {
        "anmodninger": settled.height,
        "afregnet": int(summary["antal_afregnet"].sum()),
        "afvist": int(summary["antal_afvist"].sum()),
        "afregnet_oere": int(summary["samlet_afregnet_oere"].sum()),
        "kommuner": summary.height,
        **{code.removeprefix("antal_"): int(summary[code].sum()) for code in a_codes},
    }


def figures_metadata(figures: dict[str, int]) -> dict:
    """A period's settlement figures as the UI plots them; the sum as øre and kroner."""
    metadata = {name: dg.MetadataValue.int(value) for name, value in figures.items() if name != "afregnet_oere"}
    return {**metadata, **money_metadata("afregnet", figures["afregnet_oere"])}


# --- checks: the invariants of settlement.md, blocking (no file goes out if they break) -----------


def _violations_result(violations: pl.DataFrame) -> dg.AssetCheckResult:
    examples = [f"{row}" for row in violations.drop("cpr", strict=False).head(10).iter_rows(named=True)]
    return dg.AssetCheckResult(
        passed=violations.height == 0,
        metadata={
            "antal_fejl": dg.MetadataValue.int(violations.height),
            "eksempler": dg.MetadataValue.md("\n".join(f"- {e}" for e in examples) or "ingen"),
        },
    )


@dg.asset_check(asset=AFREGNING, name="hver_anmodning_et_udfald", blocking=True, partitions_def=periode_partitions)
def hver_anmodning_et_udfald(context: dg.AssetCheckExecutionContext, state: StateResource):
    """settlement.md: each active request has exactly one outcome."""
    store = state.store()
    yield from period_check_results(
        context,
        {
            p: _violations_result(
                violations_one_outcome(
                    read_period_frame(store, p, "aktive_anmodninger"), read_period_frame(store, p, "afregning")
                )
            )
            for p in periods_of(context)
        },
    )


@dg.asset_check(asset=AFREGNING, name="afregnet_hoejst_netto", blocking=True, partitions_def=periode_partitions)
def afregnet_hoejst_netto(context: dg.AssetCheckExecutionContext, state: StateResource, register: RegisterResource):
    """settlement.md: settled amounts per CPR never exceed netto."""
    store = state.store()
    yield from period_check_results(
        context,
        {
            p: _violations_result(
                violations_settled_le_netto(read_period_frame(store, p, "afregning"), register.read("pensionsberegning", p))
            )
            for p in periods_of(context)
        },
    )


settlement_defs = dg.Definitions(
    assets=[aktive_anmodninger, afregning],
    asset_checks=[hver_anmodning_et_udfald, afregnet_hoejst_netto],
)
