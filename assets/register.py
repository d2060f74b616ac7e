"""The register as Dagster assets (register.md, operations.md "Dagster").

UDK Pension owns the files; these assets mirror them per period: materializing reads the file for
the partition and records what was there (rows, SHA-256, counts). The blocking contract checks stop
the period when a file breaks its contract, with counts per rule and masked examples in the UI."""


import dagster as dg
import polars as pl

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
    counts = dict(frame[column].value_counts().iter_rows())
    return {f"{column}_{code}": dg.MetadataValue.int(counts.get(code, 0)) for code in codes}


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
def pensionssager_kontrakt(context: dg.AssetCheckExecutionContext, register: RegisterResource):
    # CPRs are judged on the last day of P, so the judgement does not depend on when it runs.
    yield from period_check_results(
        context, {p: contract_check_result(_check_pensionssager(register, p)) for p in periods_of(context)}
    )


# A snapshot's judgement depends only on its bytes (and P, which is in its path): one judged in
# this process before, by its SHA-256, is not judged again (a backfill, the monthly cycles of the
# benchmark, a correction's second settlement in the same process). Only passes are kept: a
# failure is judged again, so its examples are always today's.
_passed: set[tuple[str, ...]] = set()


def _check_pensionssager(register: RegisterResource, periode: str) -> ContractResult:
    snapshot = register.load("pensionssager", periode)
    key = ("pensionssager", periode, snapshot.sha256)
    if key in _passed:
        return ContractResult(passed=True, failure_count=0)
    result = check_pensionssager(snapshot.frame, last_day(periode))
    if result.passed:
        _passed.add(key)
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
def pensionsberegning_kontrakt(context: dg.AssetCheckExecutionContext, register: RegisterResource):
    yield from period_check_results(
        context, {p: contract_check_result(_check_pensionsberegning(register, p)) for p in periods_of(context)}
    )


def _check_pensionsberegning(register: RegisterResource, periode: str) -> ContractResult:
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
    key = ("pensionsberegning", periode, calculation.sha256, cases.sha256)
    if key in _passed:
        return ContractResult(passed=True, failure_count=0)
    result = check_pensionsberegning(pensionsberegning_frame, periode, pensionssager_frame)
    if result.passed:
        _passed.add(key)
    return result


register_defs = dg.Definitions(
    assets=[pensionssager, pensionsberegning],
    asset_checks=[pensionssager_kontrakt, pensionsberegning_kontrakt],
)
