"""SF2601 Pensionsudbetaling under administration (sf2601.md), per administering municipality.

`sf2601/udbetalinger` makes one file per administering municipality with at least one citizen
in P; `sf2601/afsendelse` sends what is not sent yet. Rules: assets/sf2601_rules.py."""


import dagster as dg
import polars as pl

from assets.delivery import delivery_receipts_check, make_period_files, period_versions, send_period_files
from assets.settlement import AFREGNING, read_period_frame
from assets.sf2601_rules import missing_administrationskommune, sf2601_rows
from contracts.cpr import mask_cpr_expr
from contracts.sf2601 import encode_sf2601, encode_sf2601_files, scan_sf2601, sf2601_filnavn
from pipelines.calendar import udbetalingsdato
from pipelines.exchange import ExchangeResource
from pipelines.metadata import money_metadata
from pipelines.partitions import (
    SINGLE_RUN,
    period_check_results,
    period_materialization,
    periode_partitions,
    periods_of,
)
from pipelines.register import RegisterResource
from pipelines.resources import PartnersResource, StateResource

INTEGRATION = "SF2601"
UDBETALINGER = dg.AssetKey(["sf2601", "udbetalinger"])
AFSENDELSE = dg.AssetKey(["sf2601", "afsendelse"])


@dg.asset(
    key=UDBETALINGER,
    group_name="sf2601",
    partitions_def=periode_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[AFREGNING],
    description=(
        "One SF2601 file per administering municipality: per citizen under administration with "
        "payment to the municipality's NemKonto, brutto, skat, the deductions settled in P and "
        "what was paid; SamletUdbetaltBeloeb is the single transfer to the municipality."
    ),
    kinds={"xml"},
)
def udbetalinger(
    context: dg.AssetExecutionContext, register: RegisterResource, state: StateResource
) -> dg.MaterializeResult:
    store = state.store()
    # operations.md: numbers on every materialization, so the UI plots them over the periods.
    totals: dict[str, dict] = {}

    def files_of(periode: str):
        rows = sf2601_rows(
            read_period_frame(store, periode, "afregning"),
            register.read("pensionssager", periode),
            register.read("pensionsberegning", periode),
        )
        store.write_frame(f"periods/{periode}/sf2601.parquet", rows)
        totals[periode] = {"personer": dg.MetadataValue.int(rows.height)}
        for name in ("brutto", "traek", "udbetalt"):
            totals[periode].update(money_metadata(name, int(rows[f"{name}_oere"].sum())))
        return sf2601_files(rows, periode)

    made = make_period_files(context, store, INTEGRATION, periods_of(context), files_of)
    return period_materialization(context, {periode: {**made[periode], **totals[periode]} for periode in made})


@dg.asset(
    key=AFSENDELSE,
    group_name="sf2601",
    partitions_def=periode_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[UDBETALINGER],
    description="Sends P's SF2601 files that have not gone out yet to the account that receives SF2601 for the municipality (default ky).",
    kinds={"sftp"},
)
def afsendelse(
    context: dg.AssetExecutionContext,
    exchange: ExchangeResource,
    state: StateResource,
    partners: PartnersResource,
) -> dg.MaterializeResult:
    known = partners.partners()
    return send_period_files(
        context, exchange, state.store(), INTEGRATION, periods_of(context), known.udk_account, known.sf2601_recipient
    )


def sf2601_files(rows: pl.DataFrame, periode: str):
    """P's SF2601 files as make_period_files takes them, from the rows of sf2601_rows."""
    payday = udbetalingsdato(periode)
    first = encode_sf2601_files(periode, payday, 1, rows)  # every municipality at once
    figures = {
        r.pop("kommunekode"): r
        for r in rows.group_by("kommunekode")
        .agg(antal_personer=pl.len(), samlet_udbetalt_oere=pl.col("udbetalt_oere").sum())
        .iter_rows(named=True)
    }
    for kommunekode, data in first.items():
        yield (
            kommunekode,
            lambda n, kk=kommunekode, data=data: data if n == 1 else encode_sf2601(
                kk, periode, payday, n, rows.filter(pl.col("kommunekode") == kk)
            ),
            lambda n, kk=kommunekode: sf2601_filnavn(kk, periode, n),
            figures[kommunekode],
        )


# --- checks ----------------------------------------------------------------------------------------


@dg.asset_check(asset=UDBETALINGER, name="samlet_lig_overfoersel", blocking=True, partitions_def=periode_partitions)
def samlet_lig_overfoersel(context: dg.AssetCheckExecutionContext, state: StateResource):
    """sf2601.md: SamletUdbetaltBeloeb equals the sum of UdbetaltBeloeb, equals the single
    transfer to the municipality's NemKonto (netto − settled deductions of its citizens), and
    AntalPersoner equals the records; and no citizen of another municipality is in a file."""
    store = state.store()
    yield from period_check_results(context, {p: _transfers_result(store, p) for p in periods_of(context)})


def _transfers_result(store, periode: str) -> dg.AssetCheckResult:
    transfers = (
        store.read_frame(f"periods/{periode}/sf2601.parquet")
        .group_by("kommunekode")
        .agg(overfoersel=pl.col("udbetalt_oere").sum(), personer=pl.col("cpr"))
    )
    by_kommune = {r["kommunekode"]: r for r in transfers.iter_rows(named=True)}
    versions = period_versions(store, INTEGRATION, periode)
    # Every record of every file, read by its tags (contracts.sf2601.scan_sf2601): the files are
    # small (the citizens under administration), so nothing is sampled here.
    headers, records = scan_sf2601({v.kommunekode: data for v, data in versions})
    per_file = {
        r["fil"]: r
        for r in records.group_by("fil").agg(
            antal=pl.len(), summen=pl.col("udbetalt_oere").sum(), ulaeselige=pl.col("udbetalt_oere").is_null().sum(), cprs=pl.col("cpr")
        ).iter_rows(named=True)
    }
    wrong = []
    for header in headers.iter_rows(named=True):
        kommunekode = header["fil"]
        if not header["linjer_passer"] or header["kommunekode"] != kommunekode:
            wrong.append(f"{kommunekode}: filen kan ikke læses som SF2601")
            continue
        found = per_file.get(kommunekode, {"antal": 0, "summen": 0, "ulaeselige": 0, "cprs": []})
        expected = by_kommune.get(kommunekode)
        if header["samlet_udbetalt_oere"] != found["summen"] or found["ulaeselige"]:
            wrong.append(f"{kommunekode}: SamletUdbetaltBeloeb ≠ summen af UdbetaltBeloeb")
        if header["antal_personer"] != found["antal"]:
            wrong.append(f"{kommunekode}: AntalPersoner ≠ antal Udbetaling")
        if expected is None or expected["overfoersel"] != header["samlet_udbetalt_oere"]:
            wrong.append(f"{kommunekode}: SamletUdbetaltBeloeb ≠ overførslen")
        foreign = set(found["cprs"]) - set(expected["personer"] if expected else [])
        if foreign:
            wrong.append(f"{kommunekode}: {len(foreign)} borgere fra en anden kommune")
    return dg.AssetCheckResult(
        passed=not wrong,
        metadata={"filer": len(versions), "afvigelser": dg.MetadataValue.md("\n".join(f"- {w}" for w in wrong[:20]) or "ingen")},
    )


@dg.asset_check(asset=UDBETALINGER, name="administrationskommune_mangler", partitions_def=periode_partitions)
def administrationskommune_mangler(context: dg.AssetCheckExecutionContext, register: RegisterResource):
    """sf2601.md: a case under administration with payment to the municipality but without an
    administrationskommune is left out of every file. Warns without blocking the other files."""
    yield from period_check_results(context, {p: _missing_result(register, p) for p in periods_of(context)})


def _missing_result(register: RegisterResource, periode: str) -> dg.AssetCheckResult:
    missing = missing_administrationskommune(
        register.read("pensionssager", periode), register.read("pensionsberegning", periode)
    )
    examples = missing.select(mask_cpr_expr("cpr").alias("cpr")).head(10)
    return dg.AssetCheckResult(
        passed=missing.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "sager_uden_administrationskommune": missing.height,
            "eksempler": dg.MetadataValue.md("\n".join(f"- {r['cpr']}" for r in examples.iter_rows(named=True)) or "ingen"),
        },
    )


sf2601_kvitteret = delivery_receipts_check(AFSENDELSE, INTEGRATION, name="sf2601_kvitteret")

sf2601_defs = dg.Definitions(
    assets=[udbetalinger, afsendelse],
    asset_checks=[samlet_lig_overfoersel, administrationskommune_mangler, sf2601_kvitteret],
)
