"""The machinery behind the sf1411d and sf2610 assets, the `haendelser` command and the benchmark:
which snapshots are compared, and delivering what waits in the outbox (sf1411-sf2610.md).

P′ is the newest earlier period whose pensionssager snapshot passes its contract; without one, P
is the first snapshot the pipeline sees and makes no messages (but is marked made, so that it
never makes them later)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

from contracts.register import check_pensionssager
from pipelines.amqp import AmqpTransport
from pipelines.beskeder import MessageBook
from pipelines.calendar import last_day
from pipelines.outbox import deliver
from pipelines.register import RegisterResource
from pipelines.state import StateStore


class SnapshotRefused(Exception):
    """P's snapshot does not pass its contract: no messages are made from it."""


def snapshot(register: RegisterResource, periode: str) -> pl.DataFrame:
    frame = register.read("pensionssager", periode)
    result = check_pensionssager(frame, last_day(periode))
    if not result.passed:
        raise SnapshotRefused(f"pensionssager {periode} holder ikke sin kontrakt: {result.summary()}")
    return frame


def previous(register: RegisterResource, periode: str) -> tuple[str, pl.DataFrame] | None:
    """(P′, its snapshot): the newest earlier period whose snapshot passes its contract."""
    for candidate in reversed([p for p in register.periods("pensionssager") if p < periode]):
        try:
            return candidate, snapshot(register, candidate)
        except SnapshotRefused:
            continue
    return None


def deliver_waiting(state: StateStore, url: str, kinds: Sequence[str], **transport_options) -> dict:
    """Publish every message of `kinds` without a final answer; counts for the metadata."""
    if not url:
        return {"leveret_nu": 0, "afvist_nu": 0}
    transport = AmqpTransport(url, **transport_options)
    answers = deliver(MessageBook(state, kinds), transport)
    return {
        "leveret_nu": sum(a.outcome == "leveret" for a in answers),
        "afvist_nu": sum(a.outcome == "afvist" for a in answers),
    }


def now() -> dt.datetime:
    from pipelines.calendar import TZ

    return dt.datetime.now(TZ)
