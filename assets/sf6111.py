"""SF6111 Træk i pension – specifikationsliste (settlement.md), per municipality and period.

Two assets, so that the blocking checks stand between making the files and sending them:
`sf6111/specifikationslister` makes one file per municipality with active requests in P (a new
version only when its content changed), and `sf6111/afsendelse` sends what is not sent yet."""


import dagster as dg
import polars as pl

from assets.delivery import (
    delivery_receipts_check,
    make_period_files,
    period_versions,
    send_period_files,
)
from assets.settlement import AFREGNING, read_period_frame
from contracts.sf6111 import decode_sf6111, encode_sf6111, sf6111_filnavn
from pipelines.calendar import udbetalingsdato
from pipelines.exchange import ExchangeResource
from pipelines.partitions import (
    SINGLE_RUN,
    period_check_results,
    period_materialization,
    periode_partitions,
    periods_of,
)
from pipelines.resources import PartnersResource, StateResource
from pipelines.state import sha256_hex

INTEGRATION = "SF6111"
SPECIFIKATIONSLISTER = dg.AssetKey(["sf6111", "specifikationslister"])
AFSENDELSE = dg.AssetKey(["sf6111", "afsendelse"])


@dg.asset(
    key=SPECIFIKATIONSLISTER,
    group_name="sf6111",
    partitions_def=periode_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[AFREGNING],
    description=(
        "One SF6111 file per municipality with at least one active request in P: each Traek "
        "settled or rejected, and SamletAfregnetBeloeb, the sum UDK pays the municipality. A "
        "file whose content is unchanged keeps its Loebenummer; changed content gets the next."
    ),
    kinds={"xml"},
)
def specifikationslister(context: dg.AssetExecutionContext, state: StateResource) -> dg.MaterializeResult:
    store = state.store()

    def files_of(periode: str):
        settled = read_period_frame(store, periode, "afregning")
        payday = udbetalingsdato(periode)
        for (kommunekode,), traek in settled.group_by("kommunekode", maintain_order=True):
            yield (
                kommunekode,
                lambda n, kk=kommunekode, rows=traek: encode_sf6111(kk, periode, payday, n, rows),
                lambda n, kk=kommunekode: sf6111_filnavn(kk, periode, n),
            )

    return period_materialization(context, make_period_files(context, store, INTEGRATION, periods_of(context), files_of))


@dg.asset(
    key=AFSENDELSE,
    group_name="sf6111",
    partitions_def=periode_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[SPECIFIKATIONSLISTER],
    description="Sends P's SF6111 files that have not gone out yet to the account that sends SF6110 for the municipality (default kp).",
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
        context, exchange, state.store(), INTEGRATION, periods_of(context), known.udk_account, known.sf6111_recipient
    )


# --- checks on the files before they go out (blocking) ---------------------------------------------


# Both blocking checks read every file of P; at national scale decoding (with schema validation)
# is the larger part of their time, so one decoding per file content serves both.
_decoded_by_content: dict[str, tuple[dict, pl.DataFrame]] = {}


def _decoded(store, periode: str) -> list[tuple[str, dict, pl.DataFrame]]:
    result = []
    for version, data in period_versions(store, INTEGRATION, periode):
        digest = sha256_hex(data)
        if digest not in _decoded_by_content:
            if len(_decoded_by_content) > 1000:
                _decoded_by_content.clear()
            _decoded_by_content[digest] = decode_sf6111(data)
        result.append((version.kommunekode, *_decoded_by_content[digest]))
    return result


@dg.asset_check(asset=SPECIFIKATIONSLISTER, name="filtotaler_stemmer", blocking=True, partitions_def=periode_partitions)
def filtotaler_stemmer(context: dg.AssetCheckExecutionContext, state: StateResource):
    """Each file's header (AntalTraek, AntalAfregnet, AntalAfvist, SamletAfregnetBeloeb) equals
    what its records add up to, and the files of P together carry exactly the settled sum."""
    store = state.store()
    yield from period_check_results(context, {p: _file_totals(store, p) for p in periods_of(context)})


def _file_totals(store, periode: str) -> dg.AssetCheckResult:
    settled = read_period_frame(store, periode, "afregning")
    settled_sum = int(settled["afregnet_oere"].sum())
    wrong, files, files_sum = [], 0, 0
    for kommunekode, header, traek in _decoded(store, periode):
        files += 1
        files_sum += header["samlet_afregnet_oere"]
        expected = {
            "antal_traek": traek.height,
            "antal_afregnet": int((traek["status"] == "AFREGNET").sum()),
            "antal_afvist": int((traek["status"] == "AFVIST").sum()),
            "samlet_afregnet_oere": int(traek["afregnet_oere"].sum()),
        }
        wrong += [f"{kommunekode}: {k} {header[k]} ≠ {v}" for k, v in expected.items() if header[k] != v]
    if files_sum != settled_sum:
        wrong.append(f"filerne i alt {files_sum} øre ≠ afregnet {settled_sum} øre")
    return dg.AssetCheckResult(
        passed=not wrong,
        metadata={
            "filer": files,
            "sum_filer_oere": dg.MetadataValue.int(files_sum),
            "sum_afregnet_oere": dg.MetadataValue.int(settled_sum),
            "afvigelser": dg.MetadataValue.md("\n".join(f"- {w}" for w in wrong[:20]) or "ingen"),
        },
    )


@dg.asset_check(asset=SPECIFIKATIONSLISTER, name="ingen_fremmede_traek", blocking=True, partitions_def=periode_partitions)
def ingen_fremmede_traek(context: dg.AssetCheckExecutionContext, state: StateResource):
    """No municipality may see another's citizens: every Traek in municipality K's file is one of
    K's own settled requests (same AnmodningId and CPR)."""
    store = state.store()
    yield from period_check_results(context, {p: _foreign_traek(store, p) for p in periods_of(context)})


def _foreign_traek(store, periode: str) -> dg.AssetCheckResult:
    settled = read_period_frame(store, periode, "afregning").select("kommunekode", "anmodning_id", "cpr")
    foreign, where = 0, []
    for kommunekode, _header, traek in _decoded(store, periode):
        stray = traek.select("anmodning_id", "cpr").join(
            settled.filter(pl.col("kommunekode") == kommunekode), on=["anmodning_id", "cpr"], how="anti"
        )
        if stray.height:
            foreign += stray.height
            where.append(f"{kommunekode}: {stray.height}")
    return dg.AssetCheckResult(
        passed=foreign == 0,
        metadata={"fremmede_traek": foreign, "filer_med_fremmede": ", ".join(where) or "ingen"},
    )


sf6111_kvitteret = delivery_receipts_check(AFSENDELSE, INTEGRATION, name="sf6111_kvitteret")

sf6111_defs = dg.Definitions(
    assets=[specifikationslister, afsendelse],
    asset_checks=[filtotaler_stemmer, ingen_fremmede_traek, sf6111_kvitteret],
)
