"""SF6111 Træk i pension – specifikationsliste (settlement.md), per municipality and period.

Two assets, so that the blocking checks stand between making the files and sending them:
`sf6111/specifikationslister` makes one file per municipality with active requests in P (a new
version only when its content changed), and `sf6111/afsendelse` sends what is not sent yet."""


import dagster as dg
import polars as pl

from assets.delivery import (
    chosen_versions,
    delivery_receipts_check,
    made_files,
    make_period_files,
    send_period_files,
)
from assets.settlement import AFREGNING, read_period_frame
from assets.settlement_rules import settlement_summary
from contracts.sf6111 import Sf6111Error, decode_sf6111, encode_sf6111, encode_sf6111_files, sf6111_filnavn, traek_keys
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
from pipelines.deliveries import read_version
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

    return period_materialization(
        context, make_period_files(context, store, INTEGRATION, periods_of(context), lambda p: sf6111_files(store, p))
    )


def sf6111_files(store, periode: str):
    """P's SF6111 files as make_period_files takes them, from the settlement's rows."""
    settled = read_period_frame(store, periode, "afregning")
    payday = udbetalingsdato(periode)
    figures = _header_figures(settled)
    kommuner = sorted(figures)
    # The files with Loebenummer 1 (the usual case) a group of municipalities at a time in one
    # pass each: fast, and a national period's 70 MB of XML is not held all at once (the peak
    # memory of the run, issue 11). A later number (a correction) is encoded from that
    # municipality's rows alone.
    for start in range(0, len(kommuner), ENCODE_GROUP):
        group = kommuner[start : start + ENCODE_GROUP]
        rows = settled.filter(pl.col("kommunekode").is_in(group))
        for kommunekode, data in encode_sf6111_files(periode, payday, 1, rows).items():
            yield (
                kommunekode,
                lambda n, kk=kommunekode, data=data: data if n == 1 else encode_sf6111(
                    kk, periode, payday, n, settled.filter(pl.col("kommunekode") == kk)
                ),
                lambda n, kk=kommunekode: sf6111_filnavn(kk, periode, n),
                figures[kommunekode],
            )


ENCODE_GROUP = 16  # municipalities encoded together


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


HEADER_FIGURES = ("antal_traek", "antal_afregnet", "antal_afvist", "samlet_afregnet_oere")


def _header_figures(settled: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Per municipality the figures its file's header carries, from the settlement's rows."""
    summary = settlement_summary(settled).select("kommunekode", *HEADER_FIGURES)
    return {row.pop("kommunekode"): row for row in summary.iter_rows(named=True)}


@dg.asset_check(asset=SPECIFIKATIONSLISTER, name="filtotaler_stemmer", blocking=True, partitions_def=periode_partitions)
def filtotaler_stemmer(context: dg.AssetCheckExecutionContext, state: StateResource):
    """Each file's header (AntalTraek, AntalAfregnet, AntalAfvist, SamletAfregnetBeloeb) equals
    what its records add up to, and the files of P together carry exactly the settled sum.

    Each file is the one the asset made (its SHA-256 as recorded when it was encoded), the
    figures encoded into its header are those of its municipality's rows of the settlement, and
    a sample of the files is read in full (schema and parser) to see that the encoder's header
    agrees with its records and its records with the settlement (docs/decisions.md "Checks on a
    period's files")."""
    store = state.store()
    yield from period_check_results(context, {p: _file_totals(store, p) for p in periods_of(context)})


def sample(names: list[str], periode: str) -> list[str]:
    """The files read in full: the largest municipality's cannot be known from the names, so the
    first and one that moves with the period (every municipality's file in turn over the months)."""
    if not names:
        return []
    turn = int(sha256_hex(periode.encode())[:8], 16) % len(names)
    return sorted({names[0], names[turn]})


def _file_totals(store, periode: str) -> dg.AssetCheckResult:
    settled = read_period_frame(store, periode, "afregning")
    settled_sum = int(settled["afregnet_oere"].sum())
    expected = _header_figures(settled)
    made = made_files(store, INTEGRATION, periode)
    versions = chosen_versions(store, INTEGRATION, periode)
    read_in_full = set(sample([v.name for v in versions], periode))
    wrong, files_sum = [], 0
    for version in versions:  # one file in memory at a time
        data = read_version(store, version)
        kommunekode, recorded = version.kommunekode, made.get(version.name)
        if recorded is not None and sha256_hex(data) != recorded["sha256"]:
            wrong.append(f"{kommunekode}: {version.name} er ikke den fil afregningen lavede (SHA-256)")
        if recorded is None or version.name in read_in_full:
            try:
                header, traek = decode_sf6111(data)
            except Sf6111Error as exc:
                wrong.append(f"{kommunekode}: {exc}")
                continue
            counted = {
                "antal_traek": traek.height,
                "antal_afregnet": int((traek["status"] == "AFREGNET").sum()),
                "antal_afvist": int((traek["status"] == "AFVIST").sum()),
                "samlet_afregnet_oere": int(traek["afregnet_oere"].sum()),
            }
            wrong += [f"{kommunekode}: {k} {header[k]} ≠ {v}" for k, v in counted.items() if header[k] != v]
            own = settled.filter(pl.col("kommunekode") == kommunekode).sort("anmodning_id")
            if not traek.equals(own.select(traek.columns)):
                wrong.append(f"{kommunekode}: filens træk er ikke afregningens")
            recorded = header
        files_sum += recorded["samlet_afregnet_oere"]
        should = expected.get(kommunekode, {})
        wrong += [
            f"{kommunekode}: {k} {recorded[k]} ≠ {should.get(k)}" for k in HEADER_FIGURES if recorded[k] != should.get(k)
        ]
    if files_sum != settled_sum:
        wrong.append(f"filerne i alt {files_sum} øre ≠ afregnet {settled_sum} øre")
    return dg.AssetCheckResult(
        passed=not wrong,
        metadata={
            "filer": len(versions),
            "laest_helt": dg.MetadataValue.text(", ".join(sorted(read_in_full)) or "ingen"),
            "sum_filer_oere": dg.MetadataValue.int(files_sum),
            "sum_afregnet_oere": dg.MetadataValue.int(settled_sum),
            "afvigelser": dg.MetadataValue.md("\n".join(f"- {w}" for w in wrong[:20]) or "ingen"),
        },
    )


@dg.asset_check(asset=SPECIFIKATIONSLISTER, name="ingen_fremmede_traek", blocking=True, partitions_def=periode_partitions)
def ingen_fremmede_traek(context: dg.AssetCheckExecutionContext, state: StateResource):
    """No municipality may see another's citizens: every Traek in municipality K's file is one of
    K's own settled requests (same AnmodningId and CPR). Every Traek of every file is read."""
    store = state.store()
    yield from period_check_results(context, {p: _foreign_traek(store, p) for p in periods_of(context)})


def _foreign_traek(store, periode: str) -> dg.AssetCheckResult:
    settled = read_period_frame(store, periode, "afregning").select("kommunekode", "anmodning_id", "cpr")
    versions = chosen_versions(store, INTEGRATION, periode)
    strays, unreadable = [], []
    for start in range(0, len(versions), ENCODE_GROUP):  # a group of files in memory at a time
        group = versions[start : start + ENCODE_GROUP]
        found, cannot = traek_keys({v.kommunekode: read_version(store, v) for v in group})
        theirs = settled.filter(pl.col("kommunekode").is_in([v.kommunekode for v in group]))
        if found.equals(theirs):
            # The usual case, without hashing every key: the files hold exactly the settlement's
            # rows, in its order (the encoder's: by municipality, then AnmodningId).
            continue
        strays.append(found.join(theirs, on=["kommunekode", "anmodning_id", "cpr"], how="anti"))
        unreadable += cannot
    stray = pl.concat(strays) if strays else pl.DataFrame(schema={"kommunekode": pl.String})
    per_file = stray.group_by("kommunekode").len().sort("kommunekode")
    where = [f"{r['kommunekode']}: {r['len']}" for r in per_file.iter_rows(named=True)]
    where += [f"{kk}: kan ikke læses som SF6111" for kk in unreadable]
    return dg.AssetCheckResult(
        passed=stray.height == 0 and not unreadable,
        metadata={"fremmede_traek": stray.height, "filer_med_fremmede": ", ".join(where) or "ingen"},
    )


sf6111_kvitteret = delivery_receipts_check(AFSENDELSE, INTEGRATION, name="sf6111_kvitteret")

sf6111_defs = dg.Definitions(
    assets=[specifikationslister, afsendelse],
    asset_checks=[filtotaler_stemmer, ingen_fremmede_traek, sf6111_kvitteret],
)
