"""The SF1411 agreements (serviceaftaler): who may look up whom, and which fields they may see.

sf1411-sf2610.md "Agreements and data minimisation": PENSIONSTRAEK_AGREEMENTS names a YAML or
JSON file, one mapping whose keys are ServiceAgreementUUIDs; without it the built-in demo
agreements below apply. The file is judged when it is loaded: a wrong one stops the service (or
the run) with one line naming the variable. The web service and the SF1411_D notices both read
the agreements from here."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from contracts.codes import kommunekoder
from contracts.sf1411 import SOCIAL_PENSION_FELTER
from pipelines.config import AGREEMENTS, ConfigError, env

SERVICES = ("SF1411_A", "SF1411_B", "SF1411_D")
ALLE = "alle"


@dataclass(frozen=True)
class Agreement:
    uuid: str  # ServiceAgreementUUID, lower case
    navn: str
    user_system_uuid: str  # lower case
    services: frozenset[str]
    felter: tuple[str, ...]  # SocialPension elements it may see, in the answer's order (Periode is always answered)
    kommuner: frozenset[str]  # the kommunekoder whose citizens it may see (`alle`: all 98)
    modtager: str | None = None  # SF1411_D only: the Beskedfordeler recipient of its notices

    def allows(self, service: str) -> bool:
        return service in self.services


def _uuid(value: object, where: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ConfigError(f"{AGREEMENTS}: {where} is not a UUID: {value!r}") from None


def _agreement(key: object, entry: object) -> Agreement:
    agreement_uuid = _uuid(key, "an agreement key")
    where = f"agreement {agreement_uuid}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{AGREEMENTS}: {where} must be a mapping (navn, user_system_uuid, services, felter, kommuner)")
    unknown_keys = sorted(set(entry) - {"navn", "user_system_uuid", "services", "felter", "kommuner", "modtager"})
    if unknown_keys:
        raise ConfigError(f"{AGREEMENTS}: {where} has unknown keys {unknown_keys}")
    navn = entry.get("navn")
    if not isinstance(navn, str) or not navn.strip():
        raise ConfigError(f"{AGREEMENTS}: {where} needs a navn")
    services = entry.get("services")
    if not isinstance(services, list) or not services or not set(services) <= set(SERVICES):
        raise ConfigError(f"{AGREEMENTS}: {where}: services must be a non-empty subset of {list(SERVICES)}")
    felter = entry.get("felter", [])
    if felter == ALLE:
        felter = list(SOCIAL_PENSION_FELTER)
    if not isinstance(felter, list) or not set(felter) <= set(SOCIAL_PENSION_FELTER):
        unknown = sorted(set(felter) - set(SOCIAL_PENSION_FELTER)) if isinstance(felter, list) else felter
        raise ConfigError(f"{AGREEMENTS}: {where}: felter names unknown SocialPension elements {unknown}")
    kommuner = entry.get("kommuner")
    if kommuner == ALLE:
        kommuner = sorted(kommunekoder())
    if not isinstance(kommuner, list) or not all(isinstance(k, str) for k in kommuner):
        raise ConfigError(f"{AGREEMENTS}: {where}: kommuner must be \"alle\" or a list of kommunekoder (text, e.g. \"0101\")")
    unknown_kommuner = sorted(set(kommuner) - kommunekoder())
    if unknown_kommuner:
        raise ConfigError(f"{AGREEMENTS}: {where} names unknown kommunekoder {unknown_kommuner}")
    modtager = entry.get("modtager")
    if "SF1411_D" in services and (not isinstance(modtager, str) or not modtager):
        raise ConfigError(f"{AGREEMENTS}: {where} has SF1411_D and needs a modtager (the Beskedfordeler recipient)")
    return Agreement(
        uuid=agreement_uuid,
        navn=navn,
        user_system_uuid=_uuid(entry.get("user_system_uuid"), f"{where}: user_system_uuid"),
        services=frozenset(services),
        # The answer's order, whatever order the file lists them in.
        felter=tuple(f for f in SOCIAL_PENSION_FELTER if f in set(felter)),
        kommuner=frozenset(kommuner),
        modtager=modtager if isinstance(modtager, str) and modtager else None,
    )


def parse_agreements(data: object) -> dict[str, Agreement]:
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{AGREEMENTS}: the file must hold one non-empty mapping of ServiceAgreementUUID to agreement")
    agreements = [_agreement(key, entry) for key, entry in data.items()]
    by_uuid = {a.uuid: a for a in agreements}
    if len(by_uuid) != len(agreements):
        raise ConfigError(f"{AGREEMENTS}: an agreement UUID is given twice")
    return by_uuid


def load_agreements(path: str | None = None) -> dict[str, Agreement]:
    """The agreements file (YAML or JSON; JSON is YAML), or the built-in demo agreements."""
    path = env(AGREEMENTS) if path is None else path
    if not path:
        return parse_agreements(DEMO_AGREEMENTS)
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{AGREEMENTS}={path!r} cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{AGREEMENTS}={path!r} is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{AGREEMENTS}={path!r} is neither valid YAML nor JSON: {' '.join(str(exc).split())}") from exc
    return parse_agreements(data)


def dump_agreements(agreements: dict[str, Agreement]) -> str:
    """The agreements as a JSON file `load_agreements` reads back (the demo writes one)."""
    return json.dumps(
        {
            a.uuid: {
                "navn": a.navn,
                "user_system_uuid": a.user_system_uuid,
                "services": sorted(a.services),
                "felter": list(a.felter),
                "kommuner": sorted(a.kommuner),
                **({"modtager": a.modtager} if a.modtager else {}),
            }
            for a in agreements.values()
        },
        ensure_ascii=False,
        indent=2,
    )


# The embedded default (operations.md: "built-in demo agreements"): KP and KY for every
# municipality, and a KMD Structura-like case system of one municipality with a narrow field list.
KP_AGREEMENT = "6f1c3a52-0b7e-4d2a-9c61-2f8e5b4d7a10"
KY_AGREEMENT = "0d7b9e14-3c5a-4f86-b2e1-9a4c6d8f1e23"
STRUCTURA_AGREEMENT = "b83e2c71-5d4f-4a19-8e6b-7c2d1f0a9b34"
KP_SYSTEM = "3a9f1e6c-7b2d-4c58-a0e4-5d6b8c2f1a97"
KY_SYSTEM = "8c4d2b1a-9e7f-4a36-b5c0-1f2e3d4c5b68"
STRUCTURA_SYSTEM = "e5a7c3b9-1d2f-4e8a-9b6c-4a3f2e1d0c85"

DEMO_AGREEMENTS: dict = {
    KP_AGREEMENT: {
        "navn": "KP (Kommunernes Pensionssystem)",
        "user_system_uuid": KP_SYSTEM,
        "services": ["SF1411_A", "SF1411_B", "SF1411_D"],
        "felter": ALLE,
        "kommuner": ALLE,
        "modtager": "kp",
    },
    KY_AGREEMENT: {
        "navn": "KY (Kommunernes Ydelsessystem)",
        "user_system_uuid": KY_SYSTEM,
        "services": ["SF1411_A"],
        "felter": ["Sagsstatus", "Pensionstype", "Bopaelskommune", "Administrationskommune", "UnderAdministration"],
        "kommuner": ALLE,
    },
    STRUCTURA_AGREEMENT: {
        "navn": "KMD Structura, Aarhus",
        "user_system_uuid": STRUCTURA_SYSTEM,
        "services": ["SF1411_A", "SF1411_D"],
        "felter": ["Sagsstatus", "Pensionstype", "Tillaegsprocent"],
        "kommuner": ["0751"],
        "modtager": "kmd-structura-aarhus",
    },
}
