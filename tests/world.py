"""A small, real world for the orchestration tests: an exchange tree with the accounts
`udk-pension`, `kp` and `ky` (local folders, routed by the real emulator), a register, a state
store, and the code location's Definitions bound to them on a temporary Dagster instance."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import polars as pl

from contracts.envelope import encode_trigger, trigger_for
from contracts.sf6110 import INSTRUCTION_SCHEMA, encode_request_file
from pipelines.definitions import build_definitions
from pipelines.emulator import RouteOutcome, route
from pipelines.exchange import ExchangeResource
from pipelines.register import RegisterResource
from pipelines.resources import PartnersResource, StateResource
from pipelines.runner import RunOutcome, run_job
from pipelines.state import StateStore

ACCOUNTS = ("udk-pension", "kp", "ky")


@dataclass
class World:
    root: Path
    instance: dg.DagsterInstance
    exchange: ExchangeResource | None = None  # None: the local folder of udk-pension
    partners_file: str = ""
    _defs: dg.Definitions | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for account in ACCOUNTS:
            for folder in ("IN", "OUT"):
                (self.exchange_root / account / folder).mkdir(parents=True, exist_ok=True)
        self.register_dir.mkdir(parents=True, exist_ok=True)

    # --- places -------------------------------------------------------------------------------

    @property
    def exchange_root(self) -> Path:
        return self.root / "exchange"

    @property
    def register_dir(self) -> Path:
        return self.root / "register"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def inbox(self, account: str) -> Path:
        return self.exchange_root / account / "IN"

    def in_names(self, account: str, pattern: str = "*") -> list[str]:
        return sorted(p.name for p in self.inbox(account).glob(pattern))

    def store(self) -> StateStore:
        return StateStore(str(self.state_dir))

    # --- Dagster ------------------------------------------------------------------------------

    def resources(self) -> dict:
        return {
            "exchange": self.exchange or ExchangeResource(url=str(self.exchange_root / "udk-pension")),
            "register": RegisterResource(url=str(self.register_dir)),
            "state": StateResource(url=str(self.state_dir)),
            "partners": PartnersResource(path=self.partners_file),
        }

    @property
    def defs(self) -> dg.Definitions:
        if self._defs is None:
            self._defs = build_definitions(self.resources())
        return self._defs

    def intake(self) -> RunOutcome:
        return run_job("sf6110_intake", on=self.instance, definitions=self.defs)

    def settle(self, first: str, last: str | None = None) -> RunOutcome:
        return run_job("maanedlig_afregning", first_periode=first, last_periode=last, on=self.instance, definitions=self.defs)

    # --- the platform -------------------------------------------------------------------------

    def send(self, name: str, data: bytes, sender: str = "kp", recipients: tuple[str, ...] = ("udk-pension",)) -> None:
        """What a partner does: data in OUT/, then the trigger."""
        out = self.exchange_root / sender / "OUT"
        (out / name).write_bytes(data)
        (out / f"{name}.trigger").write_bytes(encode_trigger(trigger_for(name, data, sender, list(recipients))))

    def route(self) -> list[RouteOutcome]:
        return route(self.exchange_root)

    def deliver(self, name: str, data: bytes, *, received: dt.datetime | None = None, sender: str = "kp") -> None:
        """Send and route one file to UDK; `received` back-dates its delivery (the received time
        is the modification time of the metadata, exchange.md)."""
        self.send(name, data, sender=sender)
        outcomes = [o for o in self.route() if o.name == name]
        assert outcomes and outcomes[0].error_code is None, outcomes
        if received is not None:
            stamp = received.timestamp()
            os.utime(self.inbox("udk-pension") / f"{name}.metadata", (stamp, stamp))


def request_file(kommunekode: str, rows: list[dict], dannet: str = "2026-05-01T10:00:00+02:00") -> bytes:
    """An SF6110 file from instruction dicts; missing keys are absent elements."""
    full = []
    for position, row in enumerate(rows):
        beloeb = row.get("samlet_beloeb")
        full.append(
            {
                "position": position,
                "anmodning_id": row.get("anmodning_id"),
                "cpr": row.get("cpr"),
                "handling": row.get("handling", "OPRET"),
                "traekart": row.get("traekart", "MAD" if row.get("handling", "OPRET") != "OPHOER" else None),
                "fra_periode": row.get("fra_periode"),
                "til_periode": row.get("til_periode"),
                "samlet_beloeb": beloeb,
                "specifikation_present": beloeb is not None,
                "poster": row.get("poster", [{"tekst": "Træk", "beloeb": beloeb}] if beloeb is not None else []),
                "reference": row.get("reference"),
            }
        )
    return encode_request_file(kommunekode, dannet, pl.DataFrame(full, schema=INSTRUCTION_SCHEMA))


def copenhagen(*args: int) -> dt.datetime:
    from pipelines.calendar import TZ

    return dt.datetime(*args, tzinfo=TZ)
