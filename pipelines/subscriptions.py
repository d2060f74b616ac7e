"""The SF1411_D subscription lists (værdilister), kept in the state store.

sf1411-sf2610.md "SF1411_D": each SF1411_D agreement has one list of CPR numbers and whole
municipalities, changed only through the web service's OpdaterVaerdiliste and read by the
notices. A list is one JSON file, replaced atomically (pipelines/storage.py), so a crash leaves
the old list or the new one:

    sf1411/vaerdilister/<ServiceAgreementUUID>.json   {"pnr": [...], "kommuner": [...]}

Every call is audited by the service (the audit log is its own); this module only keeps lists."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from pipelines.state import StateStore

TILFOEJ_PNR = "TilfoejPNR"
FJERN_PNR = "FjernPNR"
TILFOEJ_KOMMUNE = "TilfoejKommune"
FJERN_KOMMUNE = "FjernKommune"
CHANGES = (TILFOEJ_PNR, FJERN_PNR, TILFOEJ_KOMMUNE, FJERN_KOMMUNE)

_FOLDER = "sf1411/vaerdilister"
_lock = threading.Lock()  # one update at a time in this process (read, change, replace)


@dataclass(frozen=True)
class Vaerdiliste:
    pnr: frozenset[str] = frozenset()
    kommuner: frozenset[str] = frozenset()


def _path(agreement_uuid: str) -> str:
    return f"{_FOLDER}/{agreement_uuid}.json"


def vaerdiliste(state: StateStore, agreement_uuid: str) -> Vaerdiliste:
    """The agreement's list (empty when it never had one)."""
    path = _path(agreement_uuid)
    if not state.exists(path):
        return Vaerdiliste()
    data = state.read_json(path)
    return Vaerdiliste(pnr=frozenset(data["pnr"]), kommuner=frozenset(data["kommuner"]))


def vaerdilister(state: StateStore) -> dict[str, Vaerdiliste]:
    """Every agreement's list, by ServiceAgreementUUID."""
    return {
        name.removesuffix(".json"): vaerdiliste(state, name.removesuffix(".json"))
        for name in state.listdir(_FOLDER)
        if name.endswith(".json")
    }


def apply_changes(liste: Vaerdiliste, changes: Iterable[tuple[str, str]]) -> Vaerdiliste:
    """The list after `changes` ((TilfoejPNR|FjernPNR|TilfoejKommune|FjernKommune, value)),
    applied in order. Adding what is on the list, or removing what is not, changes nothing."""
    pnr, kommuner = set(liste.pnr), set(liste.kommuner)
    for change, value in changes:
        if change == TILFOEJ_PNR:
            pnr.add(value)
        elif change == FJERN_PNR:
            pnr.discard(value)
        elif change == TILFOEJ_KOMMUNE:
            kommuner.add(value)
        elif change == FJERN_KOMMUNE:
            kommuner.discard(value)
        else:
            raise ValueError(f"unknown change {change!r}: one of {CHANGES}")
    return Vaerdiliste(pnr=frozenset(pnr), kommuner=frozenset(kommuner))


def opdater_vaerdiliste(
    state: StateStore, agreement_uuid: str, changes: Iterable[tuple[str, str]]
) -> Vaerdiliste:
    """Apply `changes` to the agreement's list and keep the result durably; returns it. The
    caller has judged the values (PNR form, kommuner within the agreement)."""
    with _lock:
        before = vaerdiliste(state, agreement_uuid)
        after = apply_changes(before, changes)
        if after != before:
            state.write_json(_path(agreement_uuid), {"pnr": sorted(after.pnr), "kommuner": sorted(after.kommuner)})
        return after
