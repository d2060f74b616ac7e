"""The one partitions definition: udbetalingsperiode, monthly, keys `YYYY-MM` (operations.md)."""

import dagster as dg

# end_offset=2: settlement of P runs after P's cut-off, inside month P (and `settle P` may be run
# at any time, settlement.md), so the current and the next month must be selectable.
periode_partitions = dg.MonthlyPartitionsDefinition(start_date="2026-01", fmt="%Y-%m", end_offset=2)

# A backfill over a range of periods runs as one run, period by period (operations.md).
SINGLE_RUN = dg.BackfillPolicy.single_run()


def periods_of(context) -> list[str]:
    """The periods of an asset or check execution, in order: one, or a backfill's range."""
    return sorted(context.partition_keys)
