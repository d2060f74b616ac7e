"""The register as Dagster assets (register.md, operations.md "Dagster").

UDK Pension owns the files; these assets mirror them per period: materializing reads the file for
the partition and records what was there (rows, SHA-256, counts). The blocking contract checks stop
the period when a file breaks its contract, with counts per rule and masked examples in the UI."""

import hashlib
from functools import cache
from pathlib import Path

import dagster as dg
import polars as pl

import contracts
from contracts.register import (
    PENSIONSTYPER,
    SAGSSTATUSER,
    ContractResult,
    check_pensionsberegning,
    check_pensionssager,
)
from pipelines.calendar import last_day
from pipelines.partitions import (
    SINGLE_RUN,
    period_check_results,
    period_materialization,
    periode_partitions,
    periods_of,
)
from pipelines.register import RegisterError, RegisterFile, RegisterResource
from pipelines.resources import StateResource
from pipelines.state import StateStore, utc_now

GROUP = "register"
PENSIONSSAGER = dg.AssetKey(["register", "pensionssager"])  # for deps=[...] of downstream assets
PENSIONSBEREGNING = dg.AssetKey(["register", "pensionsberegning"])



def _file_metadata(register_file: RegisterFile) -> dict[str, dg.MetadataValue]:
    return {
        "rows": dg.MetadataValue.int(register_file.frame.height),
        "sha256": dg.MetadataValue.text(register_file.sha256),
        "path": dg.MetadataValue.path(register_file.path),
    }


def _counts(frame: pl.DataFrame, column: str, codes: tuple[str, ...]) -> dict[str, dg.MetadataValue]:
    # Every code gets a number, zero included, so that the UI plots each one over the periods.
    # A comparison per code, not value_counts: no hash table of 1.5 M texts for a handful of codes.
    counts = frame.select((pl.col(column) == code).sum().alias(code) for code in codes).row(0, named=True)
    return {f"{column}_{code}": dg.MetadataValue.int(counts[code]) for code in codes}


def pensionssager_metadata(register_file: RegisterFile) -> dict[str, dg.MetadataValue]:
    frame = register_file.frame
    return {
        **_file_metadata(register_file),
        **_counts(frame, "pensionstype", PENSIONSTYPER),
        **_counts(frame, "sagsstatus", SAGSSTATUSER),
        "under_administration": dg.MetadataValue.int(int(frame["under_administration"].sum())),
        "udbetaling_til_kommune": dg.MetadataValue.int(int(frame["udbetaling_til_kommune"].sum())),
        "doedsdato_kendt": dg.MetadataValue.int(frame["doedsdato"].is_not_null().sum()),
    }


def pensionsberegning_metadata(register_file: RegisterFile) -> dict[str, dg.MetadataValue]:
    frame = register_file.frame
    sums = frame.select(pl.col("brutto_oere", "skat_oere", "netto_oere").sum()).row(0, named=True)
    return {
        **_file_metadata(register_file),
        "udbetales": dg.MetadataValue.int(int(frame["udbetales"].sum())),
        **{f"{name}_sum": dg.MetadataValue.int(int(total or 0)) for name, total in sums.items()},
        # The UI's API has no number for an int over 2^31 (a national month): kroner to plot.
        **{f"{name.removesuffix('_oere')}_sum_kr": dg.MetadataValue.float((total or 0) / 100) for name, total in sums.items()},
    }


@dg.asset(
    key=PENSIONSSAGER,
    group_name=GROUP,
    partitions_def=periode_partitions,
    backfill_policy=SINGLE_RUN,
    description="UDK Pension's case snapshot for the period (register.md `pensionssager`), one row per CPR.",
    kinds={"parquet", "polars"},
)
def pensionssager(context: dg.AssetExecutionContext, register: RegisterResource) -> dg.MaterializeResult:
    return _materialize(context, register, "pensionssager", pensionssager_metadata)


@dg.asset(
    key=PENSIONSBEREGNING,
    group_name=GROUP,
    partitions_def=periode_partitions,
    backfill_policy=SINGLE_RUN,
    description="UDK Pension's pension calculation for the period (register.md `pensionsberegning`).",
    kinds={"parquet", "polars"},
)
def pensionsberegning(context: dg.AssetExecutionContext, register: RegisterResource) -> dg.MaterializeResult:
    return _materialize(context, register, "pensionsberegning", pensionsberegning_metadata)


def _materialize(context, register: RegisterResource, table: str, metadata_of) -> dg.MaterializeResult:
    """Each period's figures on its own materialization, which the UI plots over the partitions."""
    return period_materialization(
        context, {periode: metadata_of(register.load(table, periode)) for periode in periods_of(context)}
    )


def contract_check_result(result: ContractResult) -> dg.AssetCheckResult:
    """The contract judgement as the UI shows it: counts per rule and masked examples."""
    return dg.AssetCheckResult(
        passed=result.passed,
        description=result.summary(),
        metadata={
            "failure_count": dg.MetadataValue.int(result.failure_count),
            "failures_by_check": dg.MetadataValue.json(result.failures_by_check),
            **{f"failures: {rule}": dg.MetadataValue.int(n) for rule, n in result.failures_by_check.items()},
            "examples": dg.MetadataValue.text("\n".join(result.examples)),
        },
    )


@dg.asset_check(
    asset=pensionssager,
    name="pensionssager_kontrakt",
    blocking=True,
    partitions_def=periode_partitions,
    description="register.md: valid unique CPRs, code lists, kommunekoder, tillaegsprocent 0–100.",
)
def pensionssager_kontrakt(
    context: dg.AssetCheckExecutionContext, register: RegisterResource, state: StateResource
):  # fmt: skip
    # CPRs are judged on the last day of P, so the judgement does not depend on when it runs.
    store = state.store()
    yield from period_check_results(
        context, {p: contract_check_result(_check_pensionssager(register, store, p)) for p in periods_of(context)}
    )


# A snapshot's judgement depends only on its bytes, P (in its path) and the contract: one that
# passed is not judged again while the same bytes are judged by the same contract (issue 11: the
# two contracts were a tenth of a national settlement, judged again in every command, and in a
# correction's second settlement, a backfill, the SF1411 snapshot). The pass is recorded in the
# state store (`register/kontrakt/`: which bytes, which contract, when), where an auditor finds
# when a snapshot was judged. Only passes are kept: a failure is judged again, so its counts and
# examples are always today's. The contract is its code, the code lists it reads and the polars
# that evaluates it (`contract_version`): a new release judges every snapshot afresh.
PASSED = "register/kontrakt"


@cache
def contract_version() -> str:
    digest = hashlib.sha256(pl.__version__.encode())
    folder = Path(contracts.__file__).parent
    for name in ("register.py", "cpr.py", "codes.py", *sorted(p.name for p in folder.glob("*.csv"))):
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return digest.hexdigest()


def _pass_record(table: str, periode: str, *snapshots: RegisterFile) -> str:
    """The record of a pass of `snapshots` (the table's file, then any file it is judged against)."""
    key = hashlib.sha256("|".join([contract_version(), *(s.sha256 for s in snapshots)]).encode()).hexdigest()
    return f"{PASSED}/{table}/{periode}-{key}.json"


def _remember_pass(store: StateStore, record: str, *snapshots: RegisterFile) -> None:
    store.write_json(record, {
        "passed": True, "judged_at": utc_now().isoformat(), "contract_version": contract_version(),
        "snapshots": [{"path": s.path, "sha256": s.sha256} for s in snapshots],
    })  # fmt: skip


def _check_pensionssager(register: RegisterResource, store: StateStore, periode: str) -> ContractResult:
    snapshot = register.load("pensionssager", periode)
    record = _pass_record("pensionssager", periode, snapshot)
    if store.exists(record):
        return ContractResult(passed=True, failure_count=0)
    result = check_pensionssager(snapshot.frame, last_day(periode))
    if result.passed:
        _remember_pass(store, record, snapshot)
    return result


@dg.asset_check(
    asset=pensionsberegning,
    name="pensionsberegning_kontrakt",
    blocking=True,
    partitions_def=periode_partitions,
    description=(
        "register.md: periode is P, 0 ≤ skat ≤ brutto, netto = brutto − skat, every CPR in pensionssager for P."
    ),
)
def pensionsberegning_kontrakt(
    context: dg.AssetCheckExecutionContext, register: RegisterResource, state: StateResource
):  # fmt: skip
    store = state.store()
    yield from period_check_results(
        context, {p: contract_check_result(_check_pensionsberegning(register, store, p)) for p in periods_of(context)}
    )


def _check_pensionsberegning(register: RegisterResource, store: StateStore, periode: str) -> ContractResult:
    calculation = register.load("pensionsberegning", periode)
    pensionsberegning_frame = calculation.frame
    try:
        cases = register.load("pensionssager", periode)
        pensionssager_frame = cases.frame
    except RegisterError as exc:  # no cases for P: no CPR of the calculation is in pensionssager for P
        return ContractResult(
            passed=False,
            failure_count=pensionsberegning_frame.height,
            failures_by_check={"cpr: cpr_in_pensionssager": pensionsberegning_frame.height},
            examples=[str(exc)],
        )
    record = _pass_record("pensionsberegning", periode, calculation, cases)
    if store.exists(record):
        return ContractResult(passed=True, failure_count=0)
    result = check_pensionsberegning(pensionsberegning_frame, periode, pensionssager_frame)
    if result.passed:
        _remember_pass(store, record, calculation, cases)
    return result


register_defs = dg.Definitions(
    assets=[pensionssager, pensionsberegning],
    asset_checks=[pensionssager_kontrakt, pensionsberegning_kontrakt],
)
