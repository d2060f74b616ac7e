"""SF2610 Tidlig pension hændelser (sf1411-sf2610.md "SF2610"), per period.

`sf2610/overgange` takes in the TIP_OvergangFolkepension messages waiting in dueslag.udk-pension
(archived, judged, recorded once per BeskedId, acknowledged only then); `sf2610/haendelser` makes
P's TIP_PensionAdvis and TIP_PensionAfgoerelse once, commits them to the outbox and publishes what
waits. Rules: assets/sf2610_rules.py; codecs: contracts/sf2610.py, contracts/beskedkuvert.py."""


import datetime as dt
from collections import Counter
from functools import partial

import dagster as dg
import polars as pl

from assets.register import PENSIONSSAGER
from assets.sf1411d import delivered_check, refused_check
from assets.sf1411d_rules import forskelle
from assets.sf2610_rules import advis, afgoerelse_aendringer, afstemning
from contracts.beskedkuvert import TIP_PENSION_ADVIS, TIP_PENSION_AFGOERELSE, beskeder_af_payloads
from contracts.cpr import mask_cpr_expr, mask_text
from contracts.sf2610 import advis_payloads, afgoerelse_payloads
from pipelines import beskeder
from pipelines.haendelser import make_and_deliver, previous
from pipelines.partitions import SINGLE_RUN, periode_partitions, periods_of
from pipelines.register import RegisterResource
from pipelines.resources import BeskedfordelerResource, StateResource

KIND = "sf2610"
OVERGANGE = dg.AssetKey(["sf2610", "overgange"])
HAENDELSER = dg.AssetKey(["sf2610", "haendelser"])


def sf2610_beskeder(
    diff: pl.DataFrame, *, modtager: str, periode: str, forrige_periode: str, dannet: dt.datetime, afsender: str
) -> pl.DataFrame:
    """P's SF2610 messages to UDK SAL from the comparison of P with P′ (`forskelle`) as outbox
    rows (pipelines.beskeder.OUTBOX_SCHEMA)."""
    events = pl.concat(
        [
            advis_payloads(advis(diff)).with_columns(pl.lit(TIP_PENSION_ADVIS).alias("beskedtype")),
            afgoerelse_payloads(afgoerelse_aendringer(diff), periode=periode).with_columns(
                pl.lit(TIP_PENSION_AFGOERELSE).alias("beskedtype")
            ),
        ]
    ).with_columns(pl.lit(modtager).alias("modtager"), pl.lit(None, dtype=pl.String).alias("aftale"))
    return beskeder_af_payloads(events, periode=periode, forrige_periode=forrige_periode, dannet=dannet, afsender=afsender)


def maker(modtager: str, afsender: str):
    """The SF2610 maker for pipelines.haendelser.make_and_deliver."""

    def make(forrige: pl.DataFrame, nu: pl.DataFrame, **when) -> pl.DataFrame:
        return sf2610_beskeder(forskelle(forrige, nu), modtager=modtager, afsender=afsender, **when)

    return make


@dg.asset(
    key=OVERGANGE,
    group_name="sf2610",
    partitions_def=periode_partitions,
    backfill_policy=SINGLE_RUN,
    description=(
        "TIP_OvergangFolkepension from UDK SAL, taken in from dueslag.udk-pension: each message "
        "archived as received, judged (envelope and payload), recorded once per BeskedId and "
        "acknowledged only after that is durable; an invalid one is recorded as rejected."
    ),
    kinds={"amqp"},
)
def overgange(
    context: dg.AssetExecutionContext, state: StateResource, beskedfordeler: BeskedfordelerResource
) -> dg.MaterializeResult:
    store = state.store()
    url = beskedfordeler.broker_url()
    from pipelines.amqp import OWN_QUEUE, drain  # pika only with a broker (issue 11, the fixed cost)

    outcomes = Counter(drain(url, OWN_QUEUE, partial(beskeder.take_in, store))) if url else Counter()
    return dg.MaterializeResult(
        metadata={
            "modtaget_nu": outcomes["modtaget"],
            "gentaget_nu": outcomes["gentaget"],
            "afvist_nu": outcomes["afvist"],
            "overgange_i_alt": len(beskeder.received(store)),
            "afviste_i_alt": len(beskeder.rejected(store)),
        }
    )


@dg.asset(
    key=HAENDELSER,
    group_name="sf2610",
    partitions_def=periode_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[PENSIONSSAGER, OVERGANGE],
    description=(
        "TIP_PensionAdvis and TIP_PensionAfgoerelse for P to UDK SAL (every citizen with TIP in P′): "
        "made once per P, committed to the outbox, then published to Beskedfordeler."
    ),
    kinds={"amqp"},
)
def haendelser(
    context: dg.AssetExecutionContext,
    register: RegisterResource,
    state: StateResource,
    beskedfordeler: BeskedfordelerResource,
) -> dg.MaterializeResult:
    store = state.store()
    make = maker(beskedfordeler.modtager_sf2610(), beskedfordeler.afsender())
    metadata = make_and_deliver(store, register, beskedfordeler.broker_url(), periods_of(context), KIND, make, context.log.info)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=OVERGANGE, name="sf2610_ingen_ugyldige", partitions_def=periode_partitions)
def ingen_ugyldige(context: dg.AssetCheckExecutionContext, state: StateResource) -> dg.AssetCheckResult:
    """Every message received in dueslag.udk-pension was valid: a rejected one is shown here."""
    rejected = beskeder.rejected(state.store())
    listing = "\n".join(f"- {r['modtaget']} {r['sha256'][:12]}: {mask_text(r['grund'])}" for r in rejected[:20])
    return dg.AssetCheckResult(
        passed=not rejected, metadata={"afviste": len(rejected), "liste": dg.MetadataValue.md(listing or "ingen")}
    )


@dg.asset_check(asset=HAENDELSER, name="sf2610_afstemning", partitions_def=periode_partitions)
def afstemning_check(
    context: dg.AssetCheckExecutionContext, register: RegisterResource, state: StateResource
) -> dg.AssetCheckResult:
    """The reconciliation on snapshot P: each recorded transition with FraPeriode ≤ P shows FP in
    P, and each TIP → FP change between P′ and P had its message (CPR masked)."""
    store = state.store()
    frames = []
    for periode in periods_of(context):
        nu = register.read("pensionssager", periode)
        before = previous(register, periode, store)
        diff = forskelle(before[1], nu) if before else forskelle(nu.clear(), nu.clear())
        frames.append(afstemning(beskeder.overgange(store), nu, diff, periode).with_columns(periode=pl.lit(periode)))
    wrong = pl.concat(frames)
    listing = wrong.select("periode", mask_cpr_expr("cpr").alias("cpr"), "fejl").head(20)
    return dg.AssetCheckResult(
        passed=wrong.is_empty(),
        metadata={
            "afvigelser": wrong.height,
            "liste": dg.MetadataValue.md(
                "\n".join(f"- {r['periode']} {r['cpr']}: {r['fejl']}" for r in listing.iter_rows(named=True)) or "ingen"
            ),
        },
    )


sf2610_leveret = delivered_check(HAENDELSER, KIND, "sf2610_leveret")
sf2610_ingen_afvist = refused_check(HAENDELSER, KIND, "sf2610_ingen_afvist")

sf2610_defs = dg.Definitions(
    assets=[overgange, haendelser],
    asset_checks=[ingen_ugyldige, afstemning_check, sf2610_leveret, sf2610_ingen_afvist],
)
