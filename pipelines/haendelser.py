"""The machinery behind the sf1411d and sf2610 assets, the `haendelser` command and the benchmark:
which snapshots are compared, and delivering what waits in the outbox (sf1411-sf2610.md).
`make_and_deliver` is the one shell both message assets run (make once, commit, publish, count).

P′ is the newest earlier period whose pensionssager snapshot passes its contract; without one, P
is the first snapshot the pipeline sees and makes no messages (but is marked made, so that it
never makes them later).

A snapshot's contract is judged once per file: the verdict is recorded in the state store under
the file's sha256 (`beskeder/kontrakt/<P>-<sha256>.json`), so the two assets of a run, and P′
(judged as P a month before), do not judge 1.5 M cases again; a corrected file has another
sha256 and is judged afresh."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import polars as pl

from contracts.register import check_pensionssager
from pipelines import beskeder
from pipelines.beskeder import MessageBook
from pipelines.calendar import last_day
from pipelines.outbox import deliver
from pipelines.register import RegisterResource
from pipelines.state import StateStore


class SnapshotRefused(Exception):
    """P's snapshot does not pass its contract: no messages are made from it."""


KONTRAKT = "beskeder/kontrakt"


def snapshot(register: RegisterResource, periode: str, state: StateStore) -> pl.DataFrame:
    """P's pensionssager, when it passes its contract (else SnapshotRefused)."""
    loaded = register.load("pensionssager", periode)
    record = f"{KONTRAKT}/{periode}-{loaded.sha256}.json"
    if state.exists(record):
        verdict = state.read_json(record)
    else:
        result = check_pensionssager(loaded.frame, last_day(periode))
        verdict = {"passed": result.passed, "summary": result.summary()}  # counts only, no CPR
        state.write_json(record, verdict)
    if not verdict["passed"]:
        raise SnapshotRefused(f"pensionssager {periode} holder ikke sin kontrakt: {verdict['summary']}")
    return loaded.frame


def previous(register: RegisterResource, periode: str, state: StateStore) -> tuple[str, pl.DataFrame] | None:
    """(P′, its snapshot): the newest earlier period whose snapshot passes its contract."""
    for candidate in reversed([p for p in register.periods("pensionssager") if p < periode]):
        try:
            return candidate, snapshot(register, candidate, state)
        except SnapshotRefused:
            continue
    return None


# make(forrige, nu, periode=P, forrige_periode=P′, dannet=…) -> P's messages as outbox rows
Maker = Callable[..., pl.DataFrame]


def make_and_deliver(
    state: StateStore,
    register: RegisterResource,
    url: str,
    periods: Sequence[str],
    kind: str,
    make: Maker,
    log: Callable[[str], None] = lambda _text: None,
) -> dict:
    """The one shell of the sf1411d and sf2610 assets: for each period whose messages of `kind`
    are not made yet, P against P′ through `make`, committed to the outbox (once per P; the
    first snapshot commits an empty set); then every message of `kind` without a final answer
    published. Returns the metadata: the last period's counts and this call's deliveries."""
    for periode in periods:
        if beskeder.made(state, periode, kind):
            continue
        nu = snapshot(register, periode, state)
        before = previous(register, periode, state)
        if before is None:
            log(f"{periode}: første snapshot; intet at sammenligne med, ingen {kind}-beskeder")
            frame = beskeder.OUTBOX_SCHEMA.to_frame()
        else:
            forrige_periode, forrige = before
            frame = make(forrige, nu, periode=periode, forrige_periode=forrige_periode, dannet=now())
        beskeder.commit(state, periode, kind, frame)
    delivered = deliver_waiting(state, url, [kind])
    metadata = delivery_metadata(state, periods[-1], kind) if periods else {}
    metadata |= delivered
    metadata["beskedfordeler"] = "forbundet" if url else "ingen (beskederne venter i udbakken)"
    return metadata


def delivery_metadata(state: StateStore, periode: str, kind: str) -> dict:
    """Counts of P's messages of `kind`: in all, per status, per type."""
    status = beskeder.with_status(state, periode, [kind])
    counts = dict(status.group_by("status").len().iter_rows())
    per_type = dict(status.group_by("beskedtype").len().iter_rows())
    return {
        "beskeder": status.height,
        **{f"status_{s}": int(counts.get(s, 0)) for s in (beskeder.LEVERET, beskeder.AFVIST_STATUS, beskeder.VENTER)},
        **{f"type_{t}": int(n) for t, n in sorted(per_type.items())},
    }


def deliver_waiting(state: StateStore, url: str, kinds: Sequence[str], **transport_options) -> dict:
    """Publish every message of `kinds` without a final answer; counts for the metadata."""
    if not url:
        return {"leveret_nu": 0, "afvist_nu": 0}
    from pipelines.amqp import AmqpTransport  # pika only with a broker (issue 11, the fixed cost)

    transport = AmqpTransport(url, **transport_options)
    answers = deliver(MessageBook(state, kinds), transport)
    return {
        "leveret_nu": sum(a.outcome == "leveret" for a in answers),
        "afvist_nu": sum(a.outcome == "afvist" for a in answers),
    }


def now() -> dt.datetime:
    from pipelines.calendar import TZ

    return dt.datetime.now(TZ)
