"""SF6110 intake in Dagster: one asset that runs the intake pass (pipelines.intake), and one
partition per delivered file so that an operator or auditor finds every file with its outcome.

The rules live in assets/sf6110_rules.py; the process (archive, decide, answer, remove) in
pipelines/intake.py. This module only shows the outcome."""


import contextlib
import datetime as dt
from collections import Counter

import dagster as dg
import polars as pl

from assets.sf6110_rules import CASE_COLUMNS
from contracts.codes import kommuner
from pipelines.exchange import ExchangeResource
from pipelines.intake import (
    QUARANTINED,
    REPEATED,
    UNDECIDED,
    FileReport,
    instruction_contracts,
    quarantined,
    run_intake,
    undecided,
)
from pipelines.monitoring import KOERSEL_TAG
from pipelines.register import RegisterResource
from pipelines.resources import PartnersResource, StateResource

TRAEKANMODNINGER = dg.AssetKey(["sf6110", "traekanmodninger"])
MODTAGNE_FILER = dg.AssetKey(["sf6110", "modtagne_filer"])
INTAKE_JOB_NAME = "sf6110_intake"

# One partition per delivered file: `<modtaget YYYYMMDDThhmmssZ>_<file name>`, so the partitions
# list reads in the order the files were received.
fil_partitions = dg.DynamicPartitionsDefinition(name="sf6110_filer")

modtagne_filer = dg.AssetSpec(
    key=MODTAGNE_FILER,
    group_name="sf6110",
    partitions_def=fil_partitions,
    description=(
        "Every SF6110 file delivered to UDK's IN/, one partition per file: sender, kommunekode, "
        "outcome (MODTAGET / AFVIST with F-code / KARANTAENE) and counts per U-code. Recorded by "
        "the intake run; the file itself is archived in the state store under its FileTransferUUID."
    ),
)


def file_partition_key(report: FileReport) -> str:
    return f"{report.modtaget.astimezone(dt.timezone.utc):%Y%m%dT%H%M%SZ}_{report.filnavn}"


def _file_metadata(report: FileReport) -> dict:
    metadata = {
        "filnavn": report.filnavn,
        "afsender": report.afsender,
        "modtaget": report.modtaget.isoformat(),
        "status": report.status,
        "kode": report.kode or "",
        "kommunekode": report.kommunekode or "",
        "file_transfer_uuid": report.file_transfer_uuid or "",
        "kvittering": report.kvittering or "",
        "antal_modtaget": report.antal_modtaget,
        "antal_afvist": report.antal_afvist,
    }
    metadata.update({f"antal_{kode}": n for kode, n in report.koder.items()})
    return metadata


@dg.asset(
    key=TRAEKANMODNINGER,
    group_name="sf6110",
    deps=[MODTAGNE_FILER],
    description=(
        "The request ledger: every SF6110 instruction registered (MODTAGET), with its file's "
        "received time. Materializing runs one intake pass over IN/: technical receipts are "
        "recorded, every complete delivery is archived, judged (F01–F05, U01–U08), registered "
        "and answered with a kvittering, exactly once (sf6110.md)."
    ),
    kinds={"parquet", "sftp"},
)
def traekanmodninger(
    context: dg.AssetExecutionContext,
    exchange: ExchangeResource,
    register: RegisterResource,
    state: StateResource,
    partners: PartnersResource,
) -> dg.MaterializeResult:
    store = state.store()
    with exchange.open() as client:
        report = run_intake(
            client,
            store,
            partners.partners(),
            # Only the columns the rules read (pipelines/register.py `_decode`).
            lambda: register.newest_pensionssager(columns=CASE_COLUMNS),
            keep=state.keep_deliveries,
            run_id=context.run_id,
            max_bytes=state.max_sf6110_bytes,
            orphan_after_seconds=state.orphan_data_seconds,
            workers=state.intake_workers,
        )
    # Fold the new decisions into the compacted index, so that later runs read a few segments
    # instead of every file ever received (pipelines/state.py). Only an optimization: when
    # another run is compacting, this one leaves it.
    with contextlib.suppress(RuntimeError), store.lock("index"):
        store.compact()

    keys = [file_partition_key(f) for f in report.files]
    if keys:
        context.instance.add_dynamic_partitions(fil_partitions.name, keys)
    for key, file_report in zip(keys, report.files):
        context.log_event(
            dg.AssetMaterialization(asset_key=MODTAGNE_FILER, partition=key, metadata=_file_metadata(file_report))
        )

    counts = report.counts()
    failed_receipts = [r.name for r in report.receipts if not r.succeeded]
    return dg.MaterializeResult(
        metadata={
            "filer": len(report.files),
            "filer_modtaget": counts["filer_modtaget"],
            "filer_afvist": counts["filer_afvist"],
            "filer_karantaene": counts[f"filer_{QUARANTINED.lower()}"],
            "filer_gentaget": counts[f"filer_{REPEATED.lower()}"],
            # sf6110.md: could not be judged for a reason of our own; waiting, tried again next run
            "filer_uafgjort": counts[f"filer_{UNDECIDED.lower()}"],
            "uafgjorte_filer": ", ".join(f.filnavn for f in report.undecided),
            "ukendte_poster_i_in": len(report.strays),
            "ukendte_poster": dg.MetadataValue.md(
                "\n".join(f"- `{s.name!r}`: {s.reason}" for s in report.strays[:20]) or "ingen"
            ),
            "anmodninger_modtaget": counts["anmodninger_modtaget"],
            "anmodninger_afvist": counts["anmodninger_afvist"],
            **{f"antal_{kode}": n for kode, n in sorted(counts.items()) if kode[:1] in "FU" and kode[1:].isdigit()},
            "tekniske_kvitteringer": len(report.receipts),
            "tekniske_kvitteringer_fejl": len(failed_receipts),
            "ledger_anmodninger": store.ledger_rows(),
            "filer_denne_koersel": dg.MetadataValue.md(_files_table(report.files)),
        }
    )


def _files_table(files: list[FileReport]) -> str:
    if not files:
        return "Ingen filer ventede."
    lines = ["| fil | afsender | status | kode | modtaget | afvist |", "|---|---|---|---|---|---|"]
    for f in files:
        lines.append(
            f"| {f.filnavn} | {f.afsender} | {f.status} | {f.kode or ''} | {f.antal_modtaget} | {f.antal_afvist} |"
        )
    return "\n".join(lines)


@dg.asset_check(asset=TRAEKANMODNINGER, name="ingen_filer_i_karantaene")
def ingen_filer_i_karantaene(state: StateResource) -> dg.AssetCheckResult:
    """exchange.md: a quarantined delivery is kept in the archive and the operator must see it.
    Fails (WARN) while `archive/quarantine/` holds deliveries; an operator who has dealt with one
    moves its folder to `archive/quarantine-handled/` (docs/operations.md)."""
    entries = quarantined(state.store())
    return dg.AssetCheckResult(
        passed=not entries,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "antal_i_karantaene": len(entries),
            "filer": dg.MetadataValue.md(
                "\n".join(f"- {e['modtaget']} {e['filnavn']}: {e['reason']}" for e in entries[:20]) or "ingen"
            ),
        },
    )


@dg.asset_check(asset=TRAEKANMODNINGER, name="alle_filer_afgjort")
def alle_filer_afgjort(state: StateResource) -> dg.AssetCheckResult:
    """sf6110.md "never holds up other deliveries": a file that could not be judged for a reason
    of our own (a bug, a resource limit) waits archived in IN/ and is tried again by every run;
    this fails (ERROR, blocking nothing) while any archived delivery has no decision."""
    waiting = undecided(state.store())
    return dg.AssetCheckResult(
        passed=not waiting,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "antal_uafgjort": len(waiting),
            "filer": dg.MetadataValue.md(
                "\n".join(f"- {w['filnavn']} ({w['file_transfer_uuid']})" for w in waiting[:20]) or "ingen"
            ),
        },
    )


@dg.asset_check(asset=TRAEKANMODNINGER, name="ingen_ukendte_poster_i_in")
def ingen_ukendte_poster_i_in(exchange: ExchangeResource, state: StateResource) -> dg.AssetCheckResult:
    """exchange.md "Nothing in IN/ is ignored silently": an entry that cannot be a delivery and
    that intake cannot set aside (a link, a folder, a FIFO; a plain one goes to quarantine and
    shows in `ingen_filer_i_karantaene`) stays in IN/ and fails this (WARN) until it is removed."""
    with exchange.open() as client:
        strays = client.list_strays(state.orphan_data_seconds)
    return dg.AssetCheckResult(
        passed=not strays,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "antal": len(strays),
            "poster": dg.MetadataValue.md("\n".join(f"- `{s.name!r}`: {s.reason}" for s in strays[:20]) or "ingen"),
        },
    )


@dg.asset_check(asset=TRAEKANMODNINGER, name="afvisningsrate_pr_kommune")
def afvisningsrate_pr_kommune(state: StateResource) -> dg.AssetCheckResult:
    """Rejected share of instructions per municipality over all decided files (a dashboard
    figure). Warns when a municipality has more than half of its instructions rejected."""
    decisions = [d for d in state.store().decisions() if d["status"] == "MODTAGET"]
    if not decisions:
        return dg.AssetCheckResult(passed=True, metadata={"kommuner": 0})
    per_file = pl.DataFrame(
        {
            "kommunekode": [d["kommunekode"] for d in decisions],
            "modtaget": [d["antal_modtaget"] for d in decisions],
            "afvist": [d["antal_afvist"] for d in decisions],
        },
        schema={"kommunekode": pl.String, "modtaget": pl.Int64, "afvist": pl.Int64},
    )
    rates = (
        per_file.group_by("kommunekode")
        .agg(pl.col("modtaget").sum(), pl.col("afvist").sum())
        .with_columns(rate=pl.col("afvist") / (pl.col("modtaget") + pl.col("afvist")).clip(lower_bound=1))
        .join(kommuner(), on="kommunekode", how="left")
        .sort("rate", descending=True)
    )
    high = rates.filter(pl.col("rate") > 0.5)
    # A table, not markdown: the UI shows it as columns of numbers (issue 8, "a dashboard").
    table = dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "kommunekode": r["kommunekode"],
                    "navn": r["navn"] or "",
                    "modtaget": r["modtaget"],
                    "afvist": r["afvist"],
                    "andel_afvist": round(r["rate"], 4),
                }
            )
            for r in rates.iter_rows(named=True)
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("kommunekode", "string"),
                dg.TableColumn("navn", "string"),
                dg.TableColumn("modtaget", "int"),
                dg.TableColumn("afvist", "int"),
                dg.TableColumn("andel_afvist", "float", description="afviste / (modtagne + afviste)"),
            ]
        ),
    )
    return dg.AssetCheckResult(
        passed=high.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "kommuner": rates.height,
            "kommuner_over_halvdelen_afvist": high.height,
            "samlet_andel_afvist": float(rates["afvist"].sum() / max(1, rates["afvist"].sum() + rates["modtaget"].sum())),
            "pr_kommune": table,
        },
    )


@dg.asset_check(asset=TRAEKANMODNINGER, name="anmodninger_overholder_formatet")
def anmodninger_overholder_formatet(
    context: dg.AssetCheckExecutionContext, state: StateResource
) -> dg.AssetCheckResult:
    """The pandera contract of the instructions (the value rules of U01, contracts/sf6110.py
    `instruction_schema`) over the files accepted by the intake run: failures per element, a few
    masked examples. Municipalities' mistakes are everyday business, so this warns, never blocks."""
    store = state.store()
    decisions = [d for d in store.decisions() if d["status"] == "MODTAGET"]
    # Within an intake run: that run's own files (none when nothing waited). Run alone from the
    # UI: the files of the latest intake that decided any.
    if context.run.job_name == INTAKE_JOB_NAME:
        run_id = context.run.run_id
    else:
        run_id = max(decisions, key=lambda d: d["decided_at"], default={}).get("run_id")
    judged = [d for d in decisions if d.get("run_id") == run_id]
    result = instruction_contracts(store, judged)  # one validation for the run's files
    by_element, examples, instructions = Counter(result.failures_by_element), result.examples, result.instructions
    failing = sum(by_element.values())
    return dg.AssetCheckResult(
        passed=failing == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "filer": len(judged),
            "anmodninger": instructions,
            "fejl": failing,
            **{f"fejl_{element}": n for element, n in sorted(by_element.items())},
            "eksempler": dg.MetadataValue.md("\n".join(f"- {e}" for e in examples[:5]) or "ingen"),
        },
    )


intake_job = dg.define_asset_job(
    INTAKE_JOB_NAME,
    selection=dg.AssetSelection.assets(TRAEKANMODNINGER),
    description="One intake pass over IN/ (what the sensor and `pensionstraek intake` launch).",
    # The production instance runs one intake at a time on this tag (deploy/dagster.yaml).
    tags={KOERSEL_TAG: "intake"},
)

sf6110_defs = dg.Definitions(
    assets=[modtagne_filer, traekanmodninger],
    asset_checks=[
        ingen_filer_i_karantaene,
        alle_filer_afgjort,
        ingen_ukendte_poster_i_in,
        afvisningsrate_pr_kommune,
        anmodninger_overholder_formatet,
    ],
    jobs=[intake_job],
)
