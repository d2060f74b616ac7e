"""The one partitions definition: udbetalingsperiode, monthly, keys `YYYY-MM` (operations.md).

operations.md "Dagster": the periods that exist are those the register holds, from the first
period with a snapshot (`pensionssager/<P>.parquet`) to the newest; the wall clock plays no part.
They are dynamic partitions of the instance, kept by the register sensor (`register_perioder`)
and by the command line before each run (`sync_periods`), always every month from the first to
the newest, in order, so that a range in the UI is a range of months."""

import warnings

import dagster as dg

# Single-run backfills and partitioned asset checks are what the spec asks for; Dagster 1.13 calls
# them beta/preview. Known and wanted, so not repeated on every start.
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)
warnings.filterwarnings("ignore", message=".*partitions_def.*", category=dg.PreviewWarning)

PERIODE = "periode"
periode_partitions = dg.DynamicPartitionsDefinition(name=PERIODE)

# A backfill over a range of periods runs as one run, period by period (operations.md).
SINGLE_RUN = dg.BackfillPolicy.single_run()


def periods_of(context) -> list[str]:
    """The periods of an asset or check execution, in order: one, or a backfill's range."""
    # A single period's run names it in its tags; `partition_keys` asks the instance for the
    # dynamic partitions every time (a query per call, ~20 per settlement run: issue 11).
    single = context.run.tags.get("dagster/partition")
    if single is not None and not context.run.tags.get("dagster/asset_partition_range_start"):
        return [single]
    return sorted(context.partition_keys)


def months_between(first: str, last: str) -> list[str]:
    """Every month from `first` to `last`, both included (`YYYY-MM`)."""
    year, month = int(first[:4]), int(first[5:7])
    months = []
    while f"{year:04d}-{month:02d}" <= last:
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def register_periods(snapshots: list[str]) -> list[str]:
    """The periods of a register whose pensionssager snapshots are `snapshots`: every month from
    the first to the newest, a gap included (a month without a snapshot is a period the register
    has not delivered, which its settlement will say)."""
    return months_between(min(snapshots), max(snapshots)) if snapshots else []


def missing_periods(existing: list[str], wanted: list[str]) -> tuple[list[str], list[str]]:
    """(to delete, to add) so that the instance's periods are `wanted` in month order. Appending is
    the everyday case (a new month); a period older than the first (a snapshot delivered late)
    makes the keys be re-added in order, since Dagster orders dynamic keys by when they were added
    (materializations and check results are kept: they are stored by key)."""
    wanted_all = sorted(set(wanted) | set(existing))
    if existing == wanted_all[: len(existing)]:
        return [], wanted_all[len(existing):]
    return existing, wanted_all


def sync_periods(instance: dg.DagsterInstance, snapshots: list[str]) -> list[str]:
    """Make the instance's periods those of a register with `snapshots`; returns what was added."""
    existing = list(instance.get_dynamic_partitions(PERIODE))
    delete, add = missing_periods(existing, register_periods(snapshots))
    for key in delete:
        instance.delete_dynamic_partition(PERIODE, key)
    if add:
        instance.add_dynamic_partitions(PERIODE, add)
    return [p for p in add if p not in existing]


# --- each period's own figures, also in a range run (operations.md "Dagster") --------------------


def period_materialization(context, metadata_by_period: dict) -> dg.MaterializeResult:
    """Each period's metadata on that period's own materialization, in a single-period run and in
    a range run alike (the figures of one period, never the range's totals)."""
    for periode, metadata in metadata_by_period.items():
        context.add_asset_metadata(metadata, partition_key=periode)
    return dg.MaterializeResult()


def period_check_results(context, results_by_period: dict):
    """Each period's check result recorded on that period (yield from it in a check).

    Dagster 1.13's AssetCheckResult has no partition: it takes the step's one partition key, and
    none in a range run, so a range's results would belong to no period. The evaluation it is
    turned into does have one: each period's result becomes its own evaluation for that period
    (aimed at that period's materialization), then the check's output follows. A failing
    blocking evaluation still stops the step after all periods are recorded."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation

    [spec] = context.check_specs
    op_context = context.op_execution_context
    step = op_context._step_execution_context  # noqa: SLF001 - the step the evaluation is made for
    for periode, result in results_by_period.items():
        yield AssetCheckEvaluation(
            asset_key=spec.asset_key,
            check_name=spec.name,
            passed=result.passed,
            metadata=result.metadata,
            # the period's materialization the check judged (what the UI compares with the latest)
            target_materialization_data=result._get_partitioned_target_materialization_data(  # noqa: SLF001
                step, spec.asset_key, periode
            ),
            severity=result.severity,
            description=result.description,
            blocking=spec.blocking,
            partition=periode,
        )
    [output] = op_context.op_def.output_defs
    yield dg.Output(None, output_name=output.name)
