"""The small resources that are not the exchange or the register: the state store and the partners.

Each field is fed from the environment (operations.md "Configuration"); values are judged when a
run starts, so that a wrong one stops the run at once with a message naming the variable."""

from __future__ import annotations

import os

import dagster as dg

from pipelines.config import (
    DEFAULT_MAX_SF6110_BYTES,
    DEFAULT_ORPHAN_DATA_SECONDS,
    INTAKE_WORKERS,
    KEEP_DELIVERIES,
    MAX_SF6110_BYTES,
    ORPHAN_DATA_SECONDS,
    PARTNERS,
    STATE_URL,
    ConfigError,
    Partners,
    env,
    load_partners,
    positive_whole_number,
)
from pipelines.state import StateStore


class StateResource(dg.ConfigurableResource):
    """PENSIONSTRAEK_STATE_URL: archive, ledger, decisions, every file sent."""

    url: str = "./var/state"
    keep_deliveries: bool = False  # exchange.md: remove processed pairs from IN/ (configurable: keep)
    max_sf6110_bytes: int = DEFAULT_MAX_SF6110_BYTES  # PENSIONSTRAEK_MAX_SF6110_BYTES: larger is F06
    orphan_data_seconds: int = DEFAULT_ORPHAN_DATA_SECONDS  # PENSIONSTRAEK_ORPHAN_DATA_SECONDS
    intake_workers: int = 2  # PENSIONSTRAEK_INTAKE_WORKERS: both cores of the machine (issue 11)

    def store(self) -> StateStore:
        return StateStore(self.url)

    @classmethod
    def from_env(cls) -> "StateResource":
        keep = env(KEEP_DELIVERIES).lower()
        if keep not in ("", "0", "1", "true", "false"):
            raise ConfigError(f"{KEEP_DELIVERIES}={keep!r}: use true or false")
        return cls(
            url=env(STATE_URL),
            keep_deliveries=keep in ("1", "true"),
            max_sf6110_bytes=positive_whole_number(MAX_SF6110_BYTES, DEFAULT_MAX_SF6110_BYTES),
            orphan_data_seconds=positive_whole_number(ORPHAN_DATA_SECONDS, DEFAULT_ORPHAN_DATA_SECONDS),
            intake_workers=positive_whole_number(INTAKE_WORKERS, 2),
        )


class PartnersResource(dg.ConfigurableResource):
    """PENSIONSTRAEK_PARTNERS: a TOML file naming the partner accounts ('' = built-in defaults)."""

    path: str = ""

    def partners(self) -> Partners:
        return load_partners(self.path)

    @classmethod
    def from_env(cls) -> "PartnersResource":
        return cls(path=env(PARTNERS))


class BeskedfordelerResource(dg.ConfigurableResource):
    """PENSIONSTRAEK_BESKEDFORDELER_URL (unset: the messages wait in the outbox),
    PENSIONSTRAEK_UDK_SYSTEM_UUID and PENSIONSTRAEK_SF2610_MODTAGER (sf1411-sf2610.md). Empty
    fields are read from the environment when used."""

    url: str = ""
    udk_system_uuid: str = ""
    sf2610_modtager: str = ""

    def broker_url(self) -> str:
        from pipelines.amqp import BESKEDFORDELER_URL, connection_parameters

        url = self.url or os.environ.get(BESKEDFORDELER_URL, "")
        if url:
            connection_parameters(url)  # judged: amqps://, or amqp:// to loopback only
        return url

    def afsender(self) -> str:
        import uuid

        from contracts.beskedkuvert import DEFAULT_UDK_SYSTEM_UUID

        value = self.udk_system_uuid or os.environ.get("PENSIONSTRAEK_UDK_SYSTEM_UUID", "") or DEFAULT_UDK_SYSTEM_UUID
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ConfigError(f"PENSIONSTRAEK_UDK_SYSTEM_UUID={value!r} is not a UUID") from None

    def modtager_sf2610(self) -> str:
        return self.sf2610_modtager or os.environ.get("PENSIONSTRAEK_SF2610_MODTAGER", "") or "udk-sal"
