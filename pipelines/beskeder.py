"""The messages in the state store: the outbox's book for Beskedfordeler, and what was received.

sf1411-sf2610.md "Delivery": every message is written to the outbox, with its BeskedId, before it
is published; a message counts as delivered only on StandardRetur 20, refused (40) is final too,
everything else is handed to the transport again, with the same BeskedId. The book is the
message instance of pipelines/outbox.py's one mechanism (intent, send, answer):

    beskeder/ud/<P>/<kind>.parquet           every message made for P (kind sf1411d, sf2610): the
                                             intent, written once; its existence means "P's
                                             messages of that kind are made" (made once per P)
    beskeder/svar/<stamp>-<id>.parquet       the final StandardRetur answers, group-committed
    archive/beskeder/<sha256>.xml            every received message exactly as received
    beskeder/ind/<BeskedId>.json             each TIP_OvergangFolkepension taken in (once per id)
    beskeder/afvist/<sha256>.json            each received message that was refused, with why

A national period holds tens of thousands of messages, so intents are one file per period and
kind, and answers are recorded in groups (a crash loses at most the last group's answers; those
messages are published again with the same BeskedId, which a recipient discards)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import polars as pl

from contracts.beskedkuvert import (
    TIP_OVERGANG_FOLKEPENSION,
    BeskedError,
    read_haendelsesbesked,
)
from contracts.sf2610 import read_payload as read_sf2610
from pipelines.outbox import Answer, Outgoing
from pipelines.state import StateStore, sha256_hex, utc_now

UD, SVAR, IND, AFVIST, ARKIV = "beskeder/ud", "beskeder/svar", "beskeder/ind", "beskeder/afvist", "archive/beskeder"
KINDS = ("sf1411d", "sf2610")
LEVERET, AFVIST_STATUS, VENTER, MODTAGET = "leveret", "afvist", "venter", "modtaget"
OWN_RECIPIENT = "udk-pension"  # the pipeline's own queue is dueslag.udk-pension

OUTBOX_SCHEMA = pl.Schema(
    {
        "beskedid": pl.String,
        "beskedtype": pl.String,
        "modtager": pl.String,
        "cpr": pl.String,
        "periode": pl.String,
        "forrige_periode": pl.String,
        "aftale": pl.String,  # the SF1411_D agreement; null for SF2610
        "xml": pl.Binary,
    }
)
SVAR_SCHEMA = pl.Schema(
    {"beskedid": pl.String, "statuskode": pl.Int32, "fejlbesked": pl.String, "besvaret": pl.String}
)


def made(state: StateStore, periode: str, kind: str) -> bool:
    return state.exists(f"{UD}/{periode}/{kind}.parquet")


def commit(state: StateStore, periode: str, kind: str, beskeder: pl.DataFrame) -> bool:
    """Record P's messages of `kind` as intended (once: a later call for P changes nothing, so a
    BeskedId always stands for one content). Returns whether this call recorded them."""
    if made(state, periode, kind):
        return False
    state.write_frame(f"{UD}/{periode}/{kind}.parquet", beskeder.select(OUTBOX_SCHEMA.names()).cast(OUTBOX_SCHEMA))
    return True


def outbox(state: StateStore, periode: str | None = None, kinds: Sequence[str] = KINDS) -> pl.DataFrame:
    """Every message made (for one period, or all), oldest period first."""
    periods = [periode] if periode else state.listdir(UD)
    frames = [
        state.read_frame(f"{UD}/{p}/{kind}.parquet") for p in periods for kind in kinds if made(state, p, kind)
    ]
    return pl.concat(frames).cast(OUTBOX_SCHEMA) if frames else OUTBOX_SCHEMA.to_frame()


def answers(state: StateStore) -> pl.DataFrame:
    """The final answer per BeskedId (the first recorded: a final answer is never replaced)."""
    frames = [state.read_frame(f"{SVAR}/{name}") for name in state.listdir(SVAR) if name.endswith(".parquet")]
    if not frames:
        return SVAR_SCHEMA.to_frame()
    return pl.concat(frames).cast(SVAR_SCHEMA).sort("besvaret").unique("beskedid", keep="first", maintain_order=True)


def with_status(state: StateStore, periode: str | None = None, kinds: Sequence[str] = KINDS) -> pl.DataFrame:
    """The outbox with each message's status: leveret (20), afvist (40) or venter."""
    svar = answers(state)
    return (
        outbox(state, periode, kinds)
        .join(svar, on="beskedid", how="left")
        .with_columns(
            pl.when(pl.col("statuskode") == 20)
            .then(pl.lit(LEVERET))
            .when(pl.col("statuskode").is_not_null())
            .then(pl.lit(AFVIST_STATUS))
            .otherwise(pl.lit(VENTER))
            .alias("status")
        )
    )


class MessageBook:
    """The outbox's book for messages (pipelines/outbox.py `Book`)."""

    group_size = 2000

    def __init__(self, state: StateStore, kinds: Sequence[str] = KINDS):
        self.state, self.kinds = state, tuple(kinds)

    def intend(self, items: Sequence[Outgoing]) -> None:
        """Items carry their outbox row in `meta` (periode, kind and OUTBOX_SCHEMA's columns)."""
        by_file: dict[tuple[str, str], list[dict]] = {}
        for item in items:
            by_file.setdefault((item.meta["periode"], item.meta["kind"]), []).append(
                {**{k: item.meta.get(k) for k in OUTBOX_SCHEMA.names()}, "beskedid": item.key, "xml": item.data}
            )
        for (periode, kind), rows in by_file.items():
            commit(self.state, periode, kind, pl.DataFrame(rows, schema=OUTBOX_SCHEMA))

    def undelivered(self) -> list[Outgoing]:
        waiting = with_status(self.state, kinds=self.kinds).filter(pl.col("status") == VENTER)
        return [
            Outgoing(key=row["beskedid"], data=row["xml"], resumed=True, meta={"modtager": row["modtager"]})
            for row in waiting.select("beskedid", "xml", "modtager").iter_rows(named=True)
        ]

    def record(self, answers: Sequence[Answer]) -> None:
        final = [a for a in answers if a.final]
        if not final:
            return
        now = utc_now().isoformat()
        frame = pl.DataFrame(
            [
                {
                    "beskedid": a.key,
                    "statuskode": a.detail.get("statuskode"),
                    "fejlbesked": a.detail.get("fejlbesked"),
                    "besvaret": now,
                }
                for a in final
            ],
            schema=SVAR_SCHEMA,
        )
        stamp = utc_now().strftime("%Y%m%dT%H%M%S%f")
        self.state.write_frame(f"{SVAR}/{stamp}-{uuid.uuid4().hex[:8]}.parquet", frame)


# --- receiving: TIP_OvergangFolkepension in dueslag.udk-pension ----------------------------------


def take_in(state: StateStore, raw: bytes) -> str:
    """Archive a received message as it is, judge it (envelope and payload) and record it once
    per BeskedId. Returns `modtaget`, `gentaget` (the id was taken in before) or `afvist`. The
    caller acknowledges the message only after this returned: everything here is durable."""
    sha = sha256_hex(raw)
    received = utc_now().isoformat()
    state.write_once(f"{ARKIV}/{sha}.xml", raw)
    try:
        besked = read_haendelsesbesked(raw)
        if besked.beskedtype != TIP_OVERGANG_FOLKEPENSION:
            raise BeskedError(f"beskedtype {besked.beskedtype} modtages ikke i dueslag.{OWN_RECIPIENT}")
        if besked.modtager != OWN_RECIPIENT:
            raise BeskedError(f"TilladtModtager er ikke {OWN_RECIPIENT}")
        try:
            payload = read_sf2610(besked.payload)
        except ValueError as exc:
            raise BeskedError(str(exc)) from None
        if payload["type"] != TIP_OVERGANG_FOLKEPENSION:
            raise BeskedError(f"Beskeddata er {payload['type']}, ikke {TIP_OVERGANG_FOLKEPENSION}")
        if besked.cpr is not None and besked.cpr != payload["pnr"]:
            raise BeskedError("RelateretObjekt og PNR er ikke samme person")
    except BeskedError as exc:
        if not state.exists(f"{AFVIST}/{sha}.json"):
            state.write_json(f"{AFVIST}/{sha}.json", {"sha256": sha, "modtaget": received, "grund": str(exc)})
        return AFVIST_STATUS
    record = f"{IND}/{besked.beskedid}.json"
    if state.exists(record):
        return "gentaget"
    state.write_json(
        record,
        {
            "beskedid": besked.beskedid,
            "beskedtype": besked.beskedtype,
            "cpr": payload["pnr"],
            "fra_periode": payload["fra_periode"],
            "modtaget": received,
            "sha256": sha,
        },
    )
    return MODTAGET


def received(state: StateStore) -> list[dict]:
    return [state.read_json(f"{IND}/{n}") for n in state.listdir(IND) if n.endswith(".json")]


def rejected(state: StateStore) -> list[dict]:
    return [state.read_json(f"{AFVIST}/{n}") for n in state.listdir(AFVIST) if n.endswith(".json")]


def overgange(state: StateStore) -> pl.DataFrame:
    """Every TIP_OvergangFolkepension taken in: cpr, fra_periode, beskedid."""
    rows = [{"cpr": r["cpr"], "fra_periode": r["fra_periode"], "beskedid": r["beskedid"]} for r in received(state)]
    return pl.DataFrame(rows, schema={"cpr": pl.String, "fra_periode": pl.String, "beskedid": pl.String})
