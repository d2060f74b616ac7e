"""SF1411's look-up snapshot as a Dagster asset per period, group `sf1411` (sf1411-sf2610.md
"The snapshot that is answered from"): after P's pensionssager passed its contract (the blocking
check upstream), P's cases are written as the read-optimised look-up index the web service
answers from, and the pointer moves to P when P is the newest period with a snapshot."""


import time

import dagster as dg

from assets.register import PENSIONSSAGER
from assets.sf1411_rules import opslagsraekker
from pipelines.partitions import SINGLE_RUN, periode_partitions, periods_of
from pipelines.register import RegisterResource
from pipelines.resources import StateResource
from pipelines.sf1411_snapshot import make_current, write_snapshot

GROUP = "sf1411"
OPSLAGSSNAPSHOT = dg.AssetKey(["sf1411", "opslagssnapshot"])


@dg.asset(
    key=OPSLAGSSNAPSHOT,
    group_name=GROUP,
    partitions_def=periode_partitions,
    deps=[PENSIONSSAGER],
    backfill_policy=SINGLE_RUN,
    description=(
        "P's pensionssager as the SF1411 service's look-up index (CPR-sorted, memory-mapped); "
        "the service answers from the newest period's within seconds."
    ),
    kinds={"python"},
)
def opslagssnapshot(context: dg.AssetExecutionContext, register: RegisterResource, state: StateResource) -> dg.MaterializeResult:
    started = time.perf_counter()
    store = state.store()
    # A range (backfill) in period order, so that the pointer ends on the newest.
    built = []
    for periode in periods_of(context):
        meta = write_snapshot(store, periode, opslagsraekker(register.read("pensionssager", periode)))
        built.append((meta, make_current(store, meta)))
    metadata = {
        "rows": dg.MetadataValue.int(sum(meta["rows"] for meta, _ in built)),
        "build_seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        "aktuel": dg.MetadataValue.int(int(built[-1][1])),
    }
    if len(built) == 1:
        metadata["snapshot"] = dg.MetadataValue.text(built[0][0]["snapshot"])
    return dg.MaterializeResult(metadata=metadata)


sf1411_snapshot_job = dg.define_asset_job(
    "sf1411_snapshot",
    selection=dg.AssetSelection.assets(PENSIONSSAGER, OPSLAGSSNAPSHOT),
    partitions_def=periode_partitions,
    description="Take in P's register snapshot: judge pensionssager's contract, build SF1411's look-up snapshot.",
)

sf1411_defs = dg.Definitions(assets=[opslagssnapshot], jobs=[sf1411_snapshot_job])
