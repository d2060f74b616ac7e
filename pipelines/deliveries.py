"""Versions of a period's file per municipality: the Loebenummer bookkeeping of operations.md.

"Re-running a period with unchanged inputs produces byte-identical files and sends nothing new.
When the inputs did change, the files whose content differs (ignoring Loebenummer) are sent again
with the next Loebenummer." The content is compared as the file encoded with Loebenummer 1.

`deliveries/<integration>/<periode>/<kommunekode>.json` lists the versions; a version's file is
kept at `outgoing/<integration>/<periode>/<name>` from the moment it is made, and is sent through
pipelines.outbox. A version that was made but whose send never started (a blocking check stopped
the delivery) is replaced by the next content under the same Loebenummer, so numbers have no gaps.
A version whose send started (the outbox recorded it, even if it failed or crashed half-way) may
have reached the municipality: its number and name are used up, and new content gets the next
number (a gap only when that send in fact never reached the platform)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelines.outbox import FileToSend, send_files
from pipelines.state import StateStore, json_bytes, sha256_hex, utc_now

if TYPE_CHECKING:  # only a type here: reading the state store needs no Dagster (pensionstraek explain)
    from pipelines.exchange import ExchangeClient


@dataclass(frozen=True)
class Version:
    integration: str
    periode: str
    kommunekode: str
    loebenummer: int
    name: str
    changed: bool  # True when this run made a new version (new content)
    sha256: str | None = None  # of the version's file, when make_versions knows it


def _versions_path(integration: str, periode: str, kommunekode: str) -> str:
    return f"deliveries/{integration}/{periode}/{kommunekode}.json"


def versions(state: StateStore, integration: str, periode: str, kommunekode: str) -> list[dict]:
    path = _versions_path(integration, periode, kommunekode)
    return state.read_json(path)["versions"] if state.exists(path) else []


def send_started(state: StateStore, name: str) -> bool:
    """Whether the outbox ever started sending `name`: it records the intent ("sending") before
    anything reaches OUT/, so from then on the platform may have the file under that name, and
    the name can never carry other bytes (pipelines.outbox refuses that)."""
    return state.sent_record(name) is not None


# kommunekode, encode(n), filnavn(n): one municipality's file of a period, as make_versions takes it
FileOf = tuple[str, Callable[[int], bytes], Callable[[int], str]]


def make_versions(state: StateStore, *, integration: str, periode: str, files: Sequence[FileOf]) -> list[Version]:
    """The file of (integration, periode, kommunekode) for the current content, for each of several
    municipalities: the last version when its content is unchanged, otherwise a new one with the
    next Loebenummer. One round of fsyncs for the files and one for the version lists after them
    (a list never names a file not yet on disk; each municipality's list is its own file, so
    their order among themselves does not matter)."""
    made, outgoing, lists = [], {}, {}
    for kommunekode, encode, filnavn in files:
        version, data, history = _next_version(state, integration, periode, kommunekode, encode, filnavn)
        made.append(version)
        if data is not None:
            outgoing[version_path(version)] = data
        if history is not None:
            lists[_versions_path(integration, periode, kommunekode)] = json_bytes({"versions": history})
    state.write_all(outgoing)
    state.write_all(lists)
    return made


def _next_version(
    state: StateStore,
    integration: str,
    periode: str,
    kommunekode: str,
    encode: Callable[[int], bytes],
    filnavn: Callable[[int], str],
) -> tuple[Version, bytes | None, list[dict] | None]:
    """The version of the current content, the file to write (None: none new) and the version
    list to write (None: unchanged)."""
    first = encode(1)
    content = sha256_hex(first)  # the content, compared as if it were the first delivery

    def unchanged(last: dict) -> Version:
        # The file's own hash: Loebenummer 1 is the content's; a later number's is recorded (or,
        # for a version made before it was, that of the same content encoded under its number).
        sha = content if last["loebenummer"] == 1 else last.get("sha256") or sha256_hex(encode(last["loebenummer"]))
        return Version(integration, periode, kommunekode, last["loebenummer"], last["name"], changed=False, sha256=sha)

    history = versions(state, integration, periode, kommunekode)
    if history and history[-1]["content_sha256"] == content:
        return unchanged(history[-1]), None, None
    if history and not send_started(state, history[-1]["name"]):
        history = history[:-1]  # never went out: its number is free again
        if history and history[-1]["content_sha256"] == content:
            # Back to the content last sent: the municipality has it already (operations.md:
            # only content that differs is sent again).
            return unchanged(history[-1]), None, history
    loebenummer = (history[-1]["loebenummer"] + 1) if history else 1
    name = filnavn(loebenummer)
    # Loebenummer 1, the usual case, is the file already encoded: no second encoding.
    data = first if loebenummer == 1 else encode(loebenummer)
    entry = {"loebenummer": loebenummer, "name": name, "content_sha256": content, "made_at": utc_now().isoformat()}
    if loebenummer > 1:
        entry["sha256"] = sha256_hex(data)
    history.append(entry)
    version = Version(integration, periode, kommunekode, loebenummer, name, changed=True, sha256=entry.get("sha256", content))
    return version, data, history


def current_versions(state: StateStore, integration: str, periode: str) -> list[Version]:
    """The newest version per municipality of a period."""
    result = []
    for file_name in state.listdir(f"deliveries/{integration}/{periode}"):
        kommunekode = file_name.removesuffix(".json")
        last = versions(state, integration, periode, kommunekode)[-1]
        result.append(Version(integration, periode, kommunekode, last["loebenummer"], last["name"], changed=False))
    return result


def version_path(version: Version) -> str:
    """Where the version's file is kept in the state store, from the moment it is made."""
    return f"outgoing/{version.integration}/{version.periode}/{version.name}"


def read_version(state: StateStore, version: Version) -> bytes:
    return state.read(version_path(version))


def send_versions(
    client: ExchangeClient,
    state: StateStore,
    chosen: Sequence[Version],
    *,
    sender: str,
    recipient_for: Callable[[str], str | None],
) -> list[str]:
    """Send each version that has not gone out yet; returns the names sent now. Files of up to
    SEND_BYTES together are booked together (pipelines.outbox.FileBook): in memory at once, their
    intents recorded before the first of them goes out, a few rounds of fsyncs for all of them."""
    sent_now: list[str] = []
    files: list[FileToSend] = []

    def send_group() -> None:
        kind = chosen[0].integration
        sent_now.extend(s.name for s in send_files(client, state, files, sender=sender, kind=kind) if s.newly_sent)
        files.clear()

    for version in chosen:
        recipient = recipient_for(version.kommunekode)
        if recipient is None:
            raise RuntimeError(
                f"ingen partnerkonto modtager {version.integration} for kommune {version.kommunekode}: "
                "tjek PENSIONSTRAEK_PARTNERS"
            )
        files.append(FileToSend(version.name, read_version(state, version), (recipient,), kept_at=version_path(version)))
        if sum(len(f.data) for f in files) >= SEND_BYTES:
            send_group()
    if files:
        send_group()
    return sent_now


# A national period's SF6111 files are 70 MB (five groups), its SF2601 files 1 MB (one group).
SEND_BYTES = 16 * 2**20
