"""`pensionstraek status`: the one screen an operator reads first (operations.md "The command line").

What waits in UDK's IN/ (complete deliveries, technical receipts, entries that are neither), what
is in quarantine, which files went out without a SUCCESS receipt, the newest periods (from the
register's pensionssager files and the state store) with whether each is settled and sent, and
the next scheduled settlement (pipelines/schedules.py, bank-calendar aware).

It only lists and reads: the exchange's IN/ (never a file's content), the register's folder, the
state store. `collect()` returns a dict (the `--json` shape); `render_text()` writes it for a person.
No CPR is ever shown: nothing here reads a file's content beyond the state store's records."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from assets.delivery import chosen_versions
from contracts.envelope import METADATA_SUFFIX
from pipelines.calendar import TZ, cutoff
from pipelines.exchange import ExchangeClient
from pipelines.explain import iso
from pipelines.intake import quarantined, unprocessed
from pipelines.schedules import next_due
from pipelines.state import StateStore
from pipelines.storage import TEMP_PREFIX

NEWEST_PERIODS = 4
INTEGRATIONS = ("SF6111", "SF2601")


def _age(since: str | None, now: dt.datetime) -> str:
    if since is None:
        return "?"
    minutes = int((now - dt.datetime.fromisoformat(since)).total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} t"
    return f"{minutes // (24 * 60)} døgn"


def inbox(client: ExchangeClient, state: StateStore) -> dict:
    """IN/ as intake sees it: complete deliveries (waiting, or kept after processing), receipts,
    and everything else (metadata without data, data without metadata, odd names)."""
    deliveries = client.list_deliveries()
    waiting = {d.name for d in unprocessed(deliveries, state)}
    receipts = client.list_receipts()
    known = {d.name for d in deliveries} | {d.name + METADATA_SUFFIX for d in deliveries} | set(receipts)
    return {
        "leverancer": [
            {"filnavn": d.name, "modtaget": iso(d.received), "behandlet": d.name not in waiting} for d in deliveries
        ],
        "kvitteringer": receipts,
        "andet": [n for n in client.listdir("IN") if n not in known and not n.startswith(TEMP_PREFIX)],
    }


def unanswered(state: StateStore, now: dt.datetime) -> list[dict]:
    """Every file sent whose technical receipt is not a SUCCESS (none yet, or an error)."""
    rows = []
    for record in state.sent_records():
        if record.get("status") == "acknowledged":
            continue
        since = record.get("sent_at") or record.get("prepared_at")
        rows.append(
            {
                "filnavn": record["name"],
                "type": record.get("kind"),
                "status": record.get("status"),
                "sendt": iso(since),
                "alder": _age(since, now),
                "fejl": record.get("receipt_errors", []),
            }
        )
    return rows


def period_state(state: StateStore, periode: str, in_register: bool) -> dict:
    """Whether P is settled (its frames exist) and whether its files went out and were received."""
    files, sent, acknowledged = 0, 0, 0
    for integration in INTEGRATIONS:
        try:
            chosen = chosen_versions(state, integration, periode)
        except dg.Failure:  # not made yet
            continue
        for version in chosen:
            files += 1
            record = state.sent_record(version.name)
            sent += record is not None and record["status"] != "sending"
            acknowledged += record is not None and record["status"] == "acknowledged"
    return {
        "periode": periode,
        "i_registeret": in_register,
        "afregnet": state.exists(f"periods/{periode}/afregning.parquet"),
        "filer": files,
        "sendt": sent,
        "kvitteret": acknowledged,
        "frist": iso(cutoff(periode)),
    }


def collect(
    state: StateStore,
    client: ExchangeClient | None,
    register_periods: list[str],
    now: dt.datetime,
    problems: list[str] | None = None,
) -> dict:
    """The status as one dict. `client` None: the exchange could not be opened (see `problems`)."""
    settled = [p for p in state.listdir("periods")]
    newest = sorted(set(register_periods) | set(settled))[-NEWEST_PERIODS:]
    periode, day = next_due(now.astimezone(TZ).date())
    return {
        "tid": iso(now),
        "problemer": list(problems or []),
        "indbakke": inbox(client, state) if client is not None else None,
        "karantaene": quarantined(state),
        "uden_kvittering": unanswered(state, now),
        "perioder": [period_state(state, p, p in register_periods) for p in reversed(newest)],
        "naeste_afregning": {"periode": periode, "dato": day.isoformat()},
    }


def render_text(status: dict) -> str:
    lines = [f"pensionstraek status {status['tid']}"]
    for problem in status["problemer"]:
        lines.append(f"  ! {problem}")

    box = status["indbakke"]
    if box is not None:
        waiting = [d for d in box["leverancer"] if not d["behandlet"]]
        lines.append(
            f"IN/: {len(waiting)} leverance(r) venter, {len(box['kvitteringer'])} teknisk(e) kvittering(er), "
            f"{len(box['andet'])} andet"
        )
        lines += [f"  venter: {d['filnavn']} (modtaget {d['modtaget']})" for d in waiting[:10]]
        if len(waiting) > 10:
            lines.append(f"  … og {len(waiting) - 10} flere")
        lines += [f"  andet (hverken leverance eller kvittering): {n}" for n in box["andet"][:10]]

    lines.append(f"Karantæne: {len(status['karantaene'])} fil(er)")
    lines += [f"  {q['filnavn']} (modtaget {iso(q['modtaget'])}): {q['reason']}" for q in status["karantaene"][-10:]]

    missing = status["uden_kvittering"]
    lines.append(f"Sendt uden SUCCESS-kvittering: {len(missing)}")
    for m in missing[:20]:
        why = f": {'; '.join(m['fejl'])}" if m["fejl"] else ""
        lines.append(f"  {m['filnavn']} ({m['type']}, {m['status']}, sendt {m['sendt']}, {m['alder']} siden){why}")

    lines.append("Perioder (nyeste først):")
    for p in status["perioder"]:
        register = "i registeret" if p["i_registeret"] else "ikke i registeret"
        if not p["afregnet"]:
            state = "ikke afregnet"
        elif p["filer"] == 0:
            state = "afregnet, ingen filer"
        elif p["kvitteret"] == p["filer"]:
            state = f"afregnet, {p['filer']} fil(er) sendt og kvitteret"
        else:
            state = f"afregnet, {p['sendt']} af {p['filer']} fil(er) sendt, {p['kvitteret']} kvitteret"
        lines.append(f"  {p['periode']}: {state} ({register}; frist {p['frist']})")

    nxt = status["naeste_afregning"]
    lines.append(f"Næste planlagte afregning: {nxt['periode']} den {nxt['dato']} (skemaet maanedlig_afregning)")
    return "\n".join(lines)
