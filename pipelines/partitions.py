"""The one partitions definition: udbetalingsperiode, monthly, keys `YYYY-MM` (operations.md)."""

import dagster as dg

# end_offset=2: settlement of P runs after P's cut-off, inside month P (and `settle P` may be run
# at any time, settlement.md), so the current and the next month must be selectable.
periode_partitions = dg.MonthlyPartitionsDefinition(start_date="2026-01", fmt="%Y-%m", end_offset=2)
