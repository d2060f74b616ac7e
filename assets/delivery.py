"""What the SF6111 and SF2601 assets share: make a period's files per municipality (a new version
only for changed content, pipelines.deliveries), send them, and watch their technical receipts."""


import datetime as dt
import os
from collections.abc import Callable, Iterable, Iterator

import dagster as dg

from pipelines.deliveries import Version, current_versions, make_versions, read_version, send_versions
from pipelines.exchange import ExchangeResource
from pipelines.partitions import period_check_results, period_materialization, periode_partitions, periods_of
from pipelines.resources import StateResource
from pipelines.state import StateStore, utc_now

# exchange.md: a receipt missing after a configurable time is visible to the operator.
RECEIPT_TIMEOUT = dt.timedelta(minutes=int(os.environ.get("PENSIONSTRAEK_RECEIPT_TIMEOUT_MINUTES", "60")))

# kommunekode, encode(n), filnavn(n), and the figures the file's header carries (what the checks
# compare with the period's frames; see made_files)
FileSpec = tuple[str, Callable[[int], bytes], Callable[[int], str], dict[str, int]]


# Files made together: their writes in one round of fsyncs (make_versions), and about this much
# of them in memory. A national period's SF2601 files (1 MB) are one group, its SF6111 files
# (70 MB) five, as they are sent (pipelines.deliveries.SEND_BYTES).
MAKE_BYTES = 16 * 2**20


def _chosen_path(integration: str, periode: str) -> str:
    return f"periods/{periode}/{integration.lower()}_filer.json"


def make_period_files(
    context: dg.AssetExecutionContext,
    store: StateStore,
    integration: str,
    periods: list[str],
    files_of: Callable[[str], Iterable[FileSpec]],
) -> dict[str, dict]:
    """Make each period's files; returns each period's figures (for its own materialization)."""
    metadata = {}
    for periode in periods:
        chosen, figures = [], {}
        # The encoders yield a group of municipalities at a time, so only about MAKE_BYTES of
        # files are in memory.
        for group in _groups(files_of(periode)):
            made = make_versions(store, integration=integration, periode=periode, files=[spec[:3] for spec in group])
            for version, (_, _, _, header) in zip(made, group):
                chosen.append(version)
                figures[version.name] = {**header, "sha256": version.sha256}
        store.write_json(
            _chosen_path(integration, periode), {"filer": [v.name for v in chosen], "tal": figures}
        )
        changed = sum(v.changed for v in chosen)
        metadata[periode] = {
            "filer": dg.MetadataValue.int(len(chosen)),
            "nye_versioner": dg.MetadataValue.int(changed),
            "uaendrede_filer": dg.MetadataValue.int(len(chosen) - changed),
        }
        new_versions = [v.name for v in chosen if v.changed]
        if new_versions:
            # One log line per period, not one per file: every line is an event in the instance's
            # event log, and in a profile at 10 % of national scale those writes were a third of the
            # settlement run's time (issue 11).
            context.log.info(f"{periode}: {len(new_versions)} ny(e) version(er): {', '.join(new_versions)}")
    return metadata


def _groups(specs: Iterable[FileSpec]) -> Iterator[list[FileSpec]]:
    """The specs in groups of about MAKE_BYTES of files (as their first version: encode(1),
    which the encoders have made already)."""
    group: list[FileSpec] = []
    size = 0
    for spec in specs:
        group.append(spec)
        size += len(spec[1](1))
        if size >= MAKE_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


def chosen_versions(store: StateStore, integration: str, periode: str) -> list[Version]:
    """The versions the last make-run of P chose (one per municipality with content)."""
    if not store.exists(_chosen_path(integration, periode)):
        raise dg.Failure(f"{integration} for {periode} er ikke lavet endnu; kør afregningen af {periode} først")
    names = set(store.read_json(_chosen_path(integration, periode))["filer"])
    return [v for v in current_versions(store, integration, periode) if v.name in names]


def made_files(store: StateStore, integration: str, periode: str) -> dict[str, dict]:
    """Per file the last make-run of P chose: its header's figures as the asset encoded them
    from the period's frame, and the SHA-256 of the bytes it wrote ({} for a make-run older than
    this record: the checks then read those files in full)."""
    if not store.exists(_chosen_path(integration, periode)):
        return {}
    return store.read_json(_chosen_path(integration, periode)).get("tal", {})


def period_versions(store: StateStore, integration: str, periode: str) -> list[tuple[Version, bytes]]:
    return [(v, read_version(store, v)) for v in chosen_versions(store, integration, periode)]


def send_period_files(
    context: dg.AssetExecutionContext,
    exchange: ExchangeResource,
    store: StateStore,
    integration: str,
    periods: list[str],
    sender: str,
    recipient_for: Callable[[str], str | None],
) -> dg.MaterializeResult:
    sent: dict[str, list[str]] = {}
    with exchange.open() as client:
        for periode in periods:
            sent[periode] = send_versions(
                client, store, chosen_versions(store, integration, periode), sender=sender, recipient_for=recipient_for
            )
            if sent[periode]:
                context.log.info(f"sendt {len(sent[periode])} fil(er): {', '.join(sent[periode])}")  # one event, as above
    return period_materialization(
        context,
        {
            periode: {
                "filer_sendt": dg.MetadataValue.int(len(names)),
                "sendt": dg.MetadataValue.md("\n".join(f"- {n}" for n in names) or "intet nyt at sende"),
            }
            for periode, names in sent.items()
        },
    )


def unacknowledged(store: StateStore, names: Iterable[str], now: dt.datetime) -> tuple[list[str], list[str]]:
    """(failed, overdue): sent files whose receipt reported an error, and files without a receipt
    after RECEIPT_TIMEOUT."""
    failed, overdue = [], []
    for name in names:
        record = store.sent_record(name)
        if record is None:
            continue
        if record["status"] == "failed":
            failed.append(f"{name}: {'; '.join(record.get('receipt_errors', []))}")
        elif record["status"] in ("sending", "sent"):
            sent_at = dt.datetime.fromisoformat(record.get("sent_at") or record["prepared_at"])
            if now - sent_at > RECEIPT_TIMEOUT:
                overdue.append(name)
    return failed, overdue


def delivery_receipts_check(asset_key: dg.AssetKey, integration: str, name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset_key,
        name=name,
        partitions_def=periode_partitions,
        description=(
            f"Every {integration} file of P sent has a SUCCESS technical receipt (a failed receipt, "
            f"or none after {RECEIPT_TIMEOUT}, fails the check)."
        ),
    )
    def check(context: dg.AssetCheckExecutionContext, state: StateResource):
        store = state.store()
        yield from period_check_results(context, {p: receipts_result(store, p) for p in periods_of(context)})

    def receipts_result(store: StateStore, periode: str) -> dg.AssetCheckResult:
        names = [v.name for v in chosen_versions(store, integration, periode)]
        failed, overdue = unacknowledged(store, names, utc_now())
        return dg.AssetCheckResult(
            passed=not failed and not overdue,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "filer": len(names),
                "fejlet": len(failed),
                "uden_kvittering": len(overdue),
                "detaljer": dg.MetadataValue.md("\n".join(f"- {x}" for x in failed + overdue) or "alle kvitteret"),
            },
        )

    return check
