"""Configuration from the environment (operations.md), with defaults that work from a fresh checkout.

Values are read without judging them; each `check_*` function judges one and raises `ConfigError`
with a message that names the variable, so that a wrong value stops a run at once."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


EXCHANGE_URL = "PENSIONSTRAEK_EXCHANGE_URL"
SFTP_KEY = "PENSIONSTRAEK_SFTP_KEY"
SFTP_KNOWN_HOSTS = "PENSIONSTRAEK_SFTP_KNOWN_HOSTS"
REGISTER_URL = "PENSIONSTRAEK_REGISTER_URL"
STATE_URL = "PENSIONSTRAEK_STATE_URL"
PARTNERS = "PENSIONSTRAEK_PARTNERS"
KEEP_DELIVERIES = "PENSIONSTRAEK_KEEP_DELIVERIES"  # exchange.md: processed pairs are removed from IN/ (configurable: keep)
MAX_SF6110_BYTES = "PENSIONSTRAEK_MAX_SF6110_BYTES"  # sf6110.md F06
ORPHAN_DATA_SECONDS = "PENSIONSTRAEK_ORPHAN_DATA_SECONDS"  # exchange.md: data without metadata "for longer than a configurable time"
INTAKE_WORKERS = "PENSIONSTRAEK_INTAKE_WORKERS"  # issue 11: processes that decode the SF6110 files of a run
DEFAULT_MAX_SF6110_BYTES = 64 * 1024 * 1024
DEFAULT_ORPHAN_DATA_SECONDS = 3600

SENSOR_INTERVAL = "PENSIONSTRAEK_SENSOR_INTERVAL"

# The SF1411 web service and the messages (operations.md "Configuration", sf1411-sf2610.md).
AGREEMENTS = "PENSIONSTRAEK_AGREEMENTS"
SERVICE_CERT = "PENSIONSTRAEK_SERVICE_CERT"
SERVICE_KEY = "PENSIONSTRAEK_SERVICE_KEY"
SERVICE_CLIENT_CA = "PENSIONSTRAEK_SERVICE_CLIENT_CA"
SF1411_POLL_SECONDS = "PENSIONSTRAEK_SF1411_POLL_SECONDS"
SF1411_ACCESS_LOG = "PENSIONSTRAEK_SF1411_ACCESS_LOG"
BESKEDFORDELER_URL = "PENSIONSTRAEK_BESKEDFORDELER_URL"
BESKEDFORDELER_CERT = "PENSIONSTRAEK_BESKEDFORDELER_CERT"
BESKEDFORDELER_KEY = "PENSIONSTRAEK_BESKEDFORDELER_KEY"
BESKEDFORDELER_CA = "PENSIONSTRAEK_BESKEDFORDELER_CA"
UDK_SYSTEM_UUID = "PENSIONSTRAEK_UDK_SYSTEM_UUID"
SF2610_MODTAGER = "PENSIONSTRAEK_SF2610_MODTAGER"
RECEIPT_TIMEOUT_MINUTES = "PENSIONSTRAEK_RECEIPT_TIMEOUT_MINUTES"

DEFAULTS = {
    EXCHANGE_URL: "./var/exchange/udk-pension",
    REGISTER_URL: "./var/register",
    STATE_URL: "./var/state",
    "DAGSTER_HOME": "./var/dagster",
}


# Every variable the command line and the code location read, with its default and meaning: the
# one source of `pensionstraek --help`'s list (operations.md "Configuration"). Add new ones here.
RUN_VARIABLES: dict[str, tuple[str, str]] = {
    EXCHANGE_URL: (DEFAULTS[EXCHANGE_URL], "UDK's konto på SFTP-tjenesten: en mappe eller sftp://bruger@vært:port/sti"),
    SFTP_KEY: ("ingen", "privat nøgle til sftp://"),
    SFTP_KNOWN_HOSTS: ("ingen", "known_hosts-fil, påkrævet til sftp:// (værtsnøglen kontrolleres altid)"),
    REGISTER_URL: (DEFAULTS[REGISTER_URL], "registeret: pensionssager/ og pensionsberegning/"),
    STATE_URL: (DEFAULTS[STATE_URL], "tilstandslageret: arkiv, ledger, afgørelser, alt sendt"),
    PARTNERS: ("indbygget", "TOML-fil med partnerkonti og de kommuner, de taler for"),
    KEEP_DELIVERIES: ("false", "true: behandlede leverancer bliver liggende i IN/"),
    INTAKE_WORKERS: ("2", "processer, der afkoder en intakes SF6110-filer (1: i kommandoens egen proces)"),
    SENSOR_INTERVAL: ("30", "sekunder mellem sensorens kig i IN/"),
    RECEIPT_TIMEOUT_MINUTES: ("60", "minutter før en sendt fil uden teknisk kvittering vises som manglende"),
    "DAGSTER_HOME": (DEFAULTS["DAGSTER_HOME"], "Dagster-instansen (dagster.yaml; SQLite som standard)"),
}

# The web service's and the messages' variables: listed by `pensionstraek --help` and by the
# commands that read them, not by intake and settle.
SERVICE_VARIABLES: dict[str, tuple[str, str]] = {
    AGREEMENTS: ("indbyggede demo-aftaler", "SF1411-aftalerne (YAML eller JSON)"),
    SERVICE_CERT: ("laves under ./var/service/", "webservicens certifikat (PEM)"),
    SERVICE_KEY: ("laves under ./var/service/", "webservicens private nøgle (PEM)"),
    SERVICE_CLIENT_CA: ("laves under ./var/service/", "CA'en, som klienternes certifikater skal kæde til"),
    SF1411_POLL_SECONDS: ("1", "sekunder mellem webservicens kig efter et nyt opslagssnapshot"),
    SF1411_ACCESS_LOG: ("false", "true: webservicens HTTP-adgangslog (CPR maskeret); kaldene står i auditten"),
}
MESSAGE_VARIABLES: dict[str, tuple[str, str]] = {
    BESKEDFORDELER_URL: ("ingen: beskederne venter i udbakken", "Beskedfordeleren, amqps://… (amqp:// kun til loopback)"),
    BESKEDFORDELER_CERT: ("ingen", "klientcertifikat til amqps://"),
    BESKEDFORDELER_KEY: ("ingen", "klientcertifikatets private nøgle"),
    BESKEDFORDELER_CA: ("systemets", "CA for brokerens certifikat"),
    AGREEMENTS: SERVICE_VARIABLES[AGREEMENTS],
    UDK_SYSTEM_UUID: ("se sf1411-sf2610.md", "UDK Pensions system-id i beskederne"),
    SF2610_MODTAGER: ("udk-sal", "modtageren af SF2610"),
}
VARIABLES: dict[str, tuple[str, str]] = {**RUN_VARIABLES, **SERVICE_VARIABLES, **MESSAGE_VARIABLES}
RUN_VARIABLE_NAMES = tuple(RUN_VARIABLES)


def kommunekoder() -> frozenset[str]:
    """contracts.codes.kommunekoder, imported when a partner file is judged: the code list is
    read with polars, which a command that judges none (`pensionstraek --help`, `exchange
    route`) need not import (issue 11, the fixed cost of a command)."""
    from contracts.codes import kommunekoder as codes

    return codes()


class ConfigError(Exception):
    """A configuration value is wrong; the message names the variable and the fix."""


def env(name: str) -> str:
    """The variable's value, or its default ('' for variables without one)."""
    value = os.environ.get(name, "")
    return value if value else DEFAULTS.get(name, "")


@dataclass(frozen=True)
class ExchangeLocation:
    """Where UDK's account is: a local folder, or an SFTP server."""

    scheme: str  # "file" or "sftp"
    path: str
    host: str = ""
    port: int = 22
    username: str = ""


def positive_whole_number(variable: str, default: int) -> int:
    """The variable as a whole number above 0, or `default` when it is not set."""
    value = os.environ.get(variable, "")
    if not value:
        return default
    if not (value.isascii() and value.isdigit()) or int(value) == 0:
        raise ConfigError(f"{variable}={value!r}: give a whole number above 0 (default {default})")
    return int(value)


def parse_exchange_url(url: str, variable: str = EXCHANGE_URL) -> ExchangeLocation:
    if not url:
        raise ConfigError(f"{variable} er tom: angiv en mappe eller sftp://bruger@vært:port/sti")
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        path = parts.path if parts.scheme == "file" else url
        return ExchangeLocation(scheme="file", path=path)
    if parts.scheme != "sftp":
        raise ConfigError(
            f"{variable}={url!r} har det ukendte URL-skema {parts.scheme!r}: "
            "angiv en mappe eller sftp://bruger@vært:port/sti"
        )
    if not parts.hostname or not parts.username:
        raise ConfigError(f"{variable}={url!r} skal nævne bruger og vært: sftp://bruger@vært:port/sti")
    try:
        port = parts.port or 22
    except ValueError as exc:
        raise ConfigError(f"{variable}={url!r} har en ugyldig port") from exc
    return ExchangeLocation(
        scheme="sftp", path=parts.path or "/", host=parts.hostname, port=port, username=parts.username
    )


def check_readable_file(variable: str, value: str, what: str) -> str:
    if not value:
        raise ConfigError(f"{variable} er påkrævet for sftp://-udveksling: sæt den til {what}")
    if not Path(value).is_file():
        raise ConfigError(f"{variable}={value!r}: filen findes ikke ({what})")
    try:
        Path(value).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}={value!r} kan ikke læses: {exc.strerror}") from exc
    return value


def check_local_or_url(variable: str, value: str) -> str:
    """The register and state locations: a folder path or an fsspec URL of a known protocol."""
    import fsspec

    if not value:
        raise ConfigError(f"{variable} er tom: angiv en mappe")
    scheme = urlsplit(value).scheme
    if scheme and len(scheme) > 1 and scheme not in fsspec.available_protocols():
        raise ConfigError(f"{variable}={value!r} har det ukendte URL-skema {scheme!r}")
    return value


# --- partners -------------------------------------------------------------------------------

ALL = "*"


@dataclass(frozen=True)
class Partner:
    account: str
    sf6110_for: frozenset[str] = frozenset()  # may send SF6110 for (and so receives kvittering, SF6111)
    sf2601_for: frozenset[str] = frozenset()  # receives SF2601 for


@dataclass(frozen=True)
class Partners:
    """Which accounts UDK talks to, and for which municipalities (exchange.md, operations.md)."""

    udk_account: str = "udk-pension"
    partners: tuple[Partner, ...] = field(default_factory=tuple)

    @property
    def accounts(self) -> frozenset[str]:
        return frozenset(p.account for p in self.partners)

    def may_send_sf6110(self, account: str, kommunekode: str) -> bool:
        return any(p.account == account and kommunekode in p.sf6110_for for p in self.partners)

    def sf6111_recipient(self, kommunekode: str) -> str | None:
        return next((p.account for p in self.partners if kommunekode in p.sf6110_for), None)

    def sf2601_recipient(self, kommunekode: str) -> str | None:
        return next((p.account for p in self.partners if kommunekode in p.sf2601_for), None)


def default_partners() -> Partners:
    """exchange.md defaults: `kp` speaks for all 98 municipalities, `ky` only receives (SF2601)."""
    every = kommunekoder()
    return Partners(
        udk_account="udk-pension",
        partners=(
            Partner(account="kp", sf6110_for=every),
            Partner(account="ky", sf2601_for=every),
        ),
    )


def _municipalities(variable: str, account: str, key: str, value: object) -> frozenset[str]:
    if value == ALL:
        return kommunekoder()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{variable}: {key} for partner {account!r} skal være \"*\" eller en liste af kommunekoder")
    unknown = sorted(set(value) - kommunekoder())
    if unknown:
        raise ConfigError(f"{variable}: partner {account!r} nævner ukendte kommunekoder {unknown}")
    return frozenset(value)


def load_partners(path: str | None = None) -> Partners:
    """The partners file (TOML, see docs/operations.md), or the built-in defaults."""
    path = env(PARTNERS) if path is None else path
    if not path:
        return default_partners()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{PARTNERS}={path!r} kan ikke læses: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{PARTNERS}={path!r} er ikke gyldig TOML: {exc}") from exc
    partners = []
    for entry in data.get("partner", []):
        account = entry.get("account")
        if not isinstance(account, str) or not account:
            raise ConfigError(f"{PARTNERS}: hver [[partner]] skal have et account-navn")
        partners.append(
            Partner(
                account=account,
                sf6110_for=_municipalities(PARTNERS, account, "sf6110_for", entry.get("sf6110_for", [])),
                sf2601_for=_municipalities(PARTNERS, account, "sf2601_for", entry.get("sf2601_for", [])),
            )
        )
    return Partners(udk_account=data.get("udk_account", "udk-pension"), partners=tuple(partners))
