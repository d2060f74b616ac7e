"""The settlement job: register → settlement → SF6111 and SF2601, for one period or a range."""

import dagster as dg

from pipelines.monitoring import KOERSEL_TAG
from pipelines.partitions import periode_partitions

settlement_job = dg.define_asset_job(
    "maanedlig_afregning",
    selection=dg.AssetSelection.groups("register", "settlement", "sf6111", "sf2601"),
    partitions_def=periode_partitions,
    description=(
        "Settlement of udbetalingsperiode P with SF6111 and SF2601 per municipality. A backfill over "
        "a range of periods runs as one run, period by period."
    ),
    # The production instance runs one settlement at a time on this tag (deploy/dagster.yaml).
    tags={KOERSEL_TAG: "afregning"},
)

haendelser_job = dg.define_asset_job(
    "haendelser",
    selection=dg.AssetSelection.groups("sf1411d", "sf2610"),
    partitions_def=periode_partitions,
    description=(
        "Take in TIP_OvergangFolkepension, make P's SF1411_D notices and SF2610 messages (once per P) "
        "and deliver every message not yet delivered (sf1411-sf2610.md)."
    ),
)
