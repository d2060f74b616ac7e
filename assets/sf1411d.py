"""SF1411_D Besked om tillægsprocent (sf1411-sf2610.md "SF1411_D"), per period.

`sf1411d/notifikationer` makes P's notices once (from the first snapshot of P that passes its
contract), commits them to the outbox and publishes what waits; rules: assets/sf1411d_rules.py,
codecs: contracts/sf1411d.py and contracts/beskedkuvert.py."""


import datetime as dt

import dagster as dg
import polars as pl

from assets.register import PENSIONSSAGER
from assets.sf1411d_rules import aendringer, aftale_frames, forskelle
from contracts.beskedkuvert import SF1411_D, beskeder_af_payloads
from contracts.sf1411d import payloads
from pipelines import beskeder
from pipelines.agreements import load_agreements
from pipelines.haendelser import make_and_deliver
from pipelines.partitions import SINGLE_RUN, periode_partitions, periods_of
from pipelines.register import RegisterResource
from pipelines.resources import BeskedfordelerResource, StateResource
from pipelines.subscriptions import vaerdilister

KIND = "sf1411d"
NOTIFIKATIONER = dg.AssetKey(["sf1411d", "notifikationer"])


def sf1411d_beskeder(
    diff: pl.DataFrame,
    aftaler: dict[str, pl.DataFrame],
    *,
    periode: str,
    forrige_periode: str,
    dannet: dt.datetime,
    afsender: str,
) -> pl.DataFrame:
    """P's notices from the comparison of P with P′ (`forskelle`) as outbox rows
    (pipelines.beskeder.OUTBOX_SCHEMA)."""
    notices = payloads(aendringer(diff, aftaler), periode=periode, forrige_periode=forrige_periode)
    return beskeder_af_payloads(
        notices.with_columns(pl.lit(SF1411_D).alias("beskedtype")),
        periode=periode,
        forrige_periode=forrige_periode,
        dannet=dannet,
        afsender=afsender,
    )


def maker(store, agreements: dict, afsender: str):
    """The notices' maker for pipelines.haendelser.make_and_deliver (the lists as they are now)."""

    def make(forrige: pl.DataFrame, nu: pl.DataFrame, **when) -> pl.DataFrame:
        aftaler = aftale_frames(agreements, vaerdilister(store))
        return sf1411d_beskeder(forskelle(forrige, nu), aftaler, afsender=afsender, **when)

    return make


@dg.asset(
    key=NOTIFIKATIONER,
    group_name="sf1411d",
    partitions_def=periode_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[PENSIONSSAGER],
    description=(
        "SF1411_D notices for P: per SF1411_D agreement and citizen covered in P or P′, the changed "
        "allowed fields (or OmfattesIkkeLaengere); made once per P, committed to the outbox, then "
        "published to Beskedfordeler (what has no StandardRetur 20 yet)."
    ),
    kinds={"amqp"},
)
def notifikationer(
    context: dg.AssetExecutionContext,
    register: RegisterResource,
    state: StateResource,
    beskedfordeler: BeskedfordelerResource,
) -> dg.MaterializeResult:
    store = state.store()
    agreements = load_agreements()
    periods = periods_of(context)
    make = maker(store, agreements, beskedfordeler.afsender())
    metadata = make_and_deliver(store, register, beskedfordeler.broker_url(), periods, KIND, make, context.log.info)
    navne = {uuid: a.navn for uuid, a in agreements.items()}
    per_aftale = beskeder.outbox(store, periods[-1], [KIND]).group_by("aftale").len()
    metadata |= {f"aftale {navne.get(a, a)}": int(n) for a, n in per_aftale.iter_rows()}
    return dg.MaterializeResult(metadata=metadata)


def delivered_check(asset_key: dg.AssetKey, kind: str, name: str):
    @dg.asset_check(asset=asset_key, name=name, partitions_def=periode_partitions)
    def _leveret(context: dg.AssetCheckExecutionContext, state: StateResource) -> dg.AssetCheckResult:
        """Every message of P delivered (StandardRetur 20); waiting ones are listed by type."""
        status = pl.concat([beskeder.with_status(state.store(), p, [kind]) for p in periods_of(context)])
        waiting = status.filter(pl.col("status") == beskeder.VENTER)
        return dg.AssetCheckResult(
            passed=waiting.is_empty(),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"beskeder": status.height, "venter": waiting.height},
        )

    return _leveret


def refused_check(asset_key: dg.AssetKey, kind: str, name: str):
    @dg.asset_check(asset=asset_key, name=name, partitions_def=periode_partitions)
    def _afvist(context: dg.AssetCheckExecutionContext, state: StateResource) -> dg.AssetCheckResult:
        """No message of P refused (StandardRetur 40): a refused message is not retried."""
        status = pl.concat([beskeder.with_status(state.store(), p, [kind]) for p in periods_of(context)])
        refused = status.filter(pl.col("status") == beskeder.AFVIST_STATUS)
        listing = "\n".join(
            f"- {r['beskedid']} {r['beskedtype']} til {r['modtager']}: {r['fejlbesked'] or ''}"
            for r in refused.head(20).iter_rows(named=True)
        )
        return dg.AssetCheckResult(
            passed=refused.is_empty(),
            metadata={"afvist": refused.height, "afviste": dg.MetadataValue.md(listing or "ingen")},
        )

    return _afvist


sf1411d_leveret = delivered_check(NOTIFIKATIONER, KIND, "sf1411d_leveret")
sf1411d_ingen_afvist = refused_check(NOTIFIKATIONER, KIND, "sf1411d_ingen_afvist")

sf1411d_defs = dg.Definitions(assets=[notifikationer], asset_checks=[sf1411d_leveret, sf1411d_ingen_afvist])
