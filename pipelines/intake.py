"""SF6110 intake: every complete delivery in UDK's IN/ judged, registered and answered, exactly once.

sf6110.md "Intake" and exchange.md "What the pipeline does with the envelope". Per delivery, in
order of (received, name):

1. read the metadata and check the envelope; what does not hold, and a FileTransferUUID already
   used for another file (exchange.md "Exactly once"), is archived in quarantine and removed
   from IN/, and nothing is answered;
2. archive data and metadata unchanged (`archive/received/<FileTransferUUID>/`);
3. judge the file (assets.sf6110_rules) unless a decision for its FileTransferUUID exists, and
   commit the decision with its registrations (the decision is the commit point);
4. send the kvittering to the sender (pipelines.outbox: exactly once);
5. remove the pair from IN/ (data, then metadata).

Every step can be repeated: a run that dies anywhere is finished by the next run, with one
decision, one registration per instruction and one kvittering. A file that cannot be judged for
a reason of our own (a bug, a resource limit) stays archived and waiting in IN/, is named in the
run's report, and is tried again by the next run; the other files are judged and answered
(sf6110.md "never holds up other deliveries"). Entries of IN/ that cannot be deliveries are
reported, and set aside in quarantine when they are plain files (exchange.md "Nothing in IN/ is
ignored silently")."""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import logging
import os
import re
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, islice

import polars as pl

from assets import sf6110_rules
from assets.sf6110_rules import HISTORY_COLUMNS, CaseIndex, FileToJudge, Prepared, judge_file, judge_files, prepare_file
from contracts.cpr import mask_cpr, mask_text
from contracts.envelope import (
    METADATA_SUFFIX,
    EnvelopeError,
    decode_metadata,
    is_valid_envelope_name,
)
from contracts.sf6110 import (
    U01_ELEMENTS,
    RequestFile,
    decode_request_file,
    encode_kvittering,
    instruction_schema,
    kvittering_filnavn,
)
from pipelines.calendar import TZ
from pipelines.config import Partners
from pipelines.exchange import Delivery, ExchangeClient, Stray
from pipelines.outbox import ReceiptRecorded, record_receipts, send
from pipelines.state import TEMP_GRACE_SECONDS, StateStore, sha256_hex, utc_now

log = logging.getLogger(__name__)

# FileTransferUUID becomes a folder name in the archive: accept only what a UUID can look like.
_SAFE_UUID = re.compile(r"[A-Za-z0-9-]{1,64}")

QUARANTINED = "KARANTAENE"
REPEATED = "GENTAGET"  # exchange.md: an exact repeat (same UUID, name and bytes), removed unanswered
UNDECIDED = "UAFGJORT"  # could not be judged for a reason of our own; waits for the next run


@dataclass(frozen=True)
class FileReport:
    """What happened to one delivery; safe to show anywhere (no CPR)."""

    filnavn: str
    afsender: str
    modtaget: dt.datetime
    status: str  # MODTAGET | AFVIST | KARANTAENE | GENTAGET | UAFGJORT
    kode: str | None = None  # F-code for AFVIST, the reason for KARANTAENE and UAFGJORT
    kommunekode: str | None = None
    file_transfer_uuid: str | None = None
    antal_modtaget: int = 0
    antal_afvist: int = 0
    koder: dict[str, int] = field(default_factory=dict)  # U-codes of rejected instructions
    kvittering: str | None = None
    decided_before: bool = False  # the decision came from an earlier (interrupted) run


@dataclass(frozen=True)
class IntakeReport:
    files: list[FileReport]
    receipts: list[ReceiptRecorded]
    strays: list[Stray] = field(default_factory=list)  # IN/ entries that cannot be deliveries

    @property
    def undecided(self) -> list[FileReport]:
        return [f for f in self.files if f.status == UNDECIDED]

    def counts(self) -> Counter:
        counts: Counter = Counter()
        for f in self.files:
            counts[f"filer_{f.status.lower()}"] += 1
            counts["anmodninger_modtaget"] += f.antal_modtaget
            counts["anmodninger_afvist"] += f.antal_afvist
            if f.kode and f.status == "AFVIST":
                counts[f.kode] += 1
            counts.update(f.koder)
        return counts


# Below this many bytes waiting, the files are prepared in this process: starting the workers
# (a Python each, importing polars) costs more than it saves.
PARALLEL_MIN_BYTES = 4 * 1024 * 1024
WORKER_NICENESS = 5


def run_intake(
    client: ExchangeClient,
    state: StateStore,
    partners: Partners,
    newest_pensionssager: Callable[[], tuple[str, pl.DataFrame]],
    *,
    keep: bool = False,
    run_id: str = "",
    max_bytes: int | None = None,
    orphan_after_seconds: float = 3600,
    workers: int = 1,
    parallel_min_bytes: int = PARALLEL_MIN_BYTES,
) -> IntakeReport:
    """One intake pass. `newest_pensionssager` is called only when there is something to judge:
    without a snapshot, intake fails and leaves the deliveries waiting (sf6110.md), but the
    technical receipts are recorded first. `run_id` (the Dagster run) is kept in each decision;
    `max_bytes` is PENSIONSTRAEK_MAX_SF6110_BYTES, `orphan_after_seconds`
    PENSIONSTRAEK_ORPHAN_DATA_SECONDS, `workers` PENSIONSTRAEK_INTAKE_WORKERS: the processes that
    decode the files (when at least `parallel_min_bytes` wait). Whatever the number, every file
    is archived before it is decoded and judged in the same order, so the outcome is the same."""
    with state.lock("intake"):
        _remove_orphaned_temporaries(state, client)
        receipts = record_receipts(client, state, keep=keep)
        if not keep:
            _finish_interrupted_removals(client, state)
        strays = [_set_aside(client, state, stray, keep, max_bytes) for stray in client.list_strays(orphan_after_seconds)]
        deliveries = client.list_deliveries()
        if not deliveries:
            return IntakeReport(files=[], receipts=receipts, strays=strays)
        parallel = workers > 1 and len(deliveries) > 1 and sum(d.size for d in deliveries) >= parallel_min_bytes
        # The workers start (an interpreter each) while the snapshot and the history are read.
        with _Preparer(workers if parallel else 1, max_bytes) as preparer, _Answerer() as answerer:
            snapshot_periode, pensionssager = newest_pensionssager()
            judge = _Judge(state, partners, pensionssager, snapshot_periode, run_id, max_bytes)
            reports = []
            # Files received (read, archived, handed to a worker) while earlier ones are judged and
            # answered, in the order of IN/: a window, so that memory holds a few files, not all.
            window: deque[_Received | FileReport] = deque()
            for delivery in deliveries:
                window.append(_receive(client, state, partners, preparer, delivery, keep))
                if _ready(window, preparer.lookahead):
                    reports += _answer_together(client, state, partners, judge, answerer, _oldest(window), keep)
            while window:
                reports += _answer_together(client, state, partners, judge, answerer, _oldest(window), keep)
            answerer.finish()
        return IntakeReport(files=[r for r in reports if r is not None], receipts=receipts, strays=strays)


class _Preparer:
    """`prepare_file` (decoding, U01's value rules) for the files of a run: in `workers` processes
    of their own (started fresh: they inherit no lock and no open file), or in this one when
    `workers` is 1. Results are taken in the order of submission, and a worker that fails is never
    the file's outcome: the file is then prepared here (and judged UAFGJORT only if that fails)."""

    def __init__(self, workers: int, max_bytes: int | None):
        self.max_bytes = max_bytes
        self.pool = None
        self.lookahead = 0
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # The workers only read ahead: the command's own process, which judges, writes and
            # answers in order, is the run's critical path, so the workers yield the CPU to it.
            self.pool = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=os.nice, initargs=(WORKER_NICENESS,)
            )
            self.lookahead = 2 * workers  # keeps every worker busy while one file is answered
            # Each worker started and importing the rules now (a pool starts them on demand), while
            # this process reads the snapshot and the history.
            for _ in range(workers):
                self.pool.submit(importlib.import_module, sf6110_rules.__name__)

    def __enter__(self) -> "_Preparer":
        return self

    def __exit__(self, *_: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, data: bytes, received: dt.datetime) -> Callable[[], Prepared]:
        if self.pool is None:
            return lambda: prepare_file(data, received=received, max_bytes=self.max_bytes)
        # By its module's name: what the worker imports (and runs) is the rules' own function.
        future = self.pool.submit(sf6110_rules.prepare_file, data, received=received, max_bytes=self.max_bytes)

        def result() -> Prepared:
            try:
                return future.result()
            except Exception as exc:  # noqa: BLE001 - a worker's failure (killed, out of memory)
                log.warning("SF6110: forberedelse i en arbejdsproces fejlede (%s); forberedes her", type(exc).__name__)
                return prepare_file(data, received=received, max_bytes=self.max_bytes)

        return result


# Files judged in one pass (assets.sf6110_rules.judge_files), at most: bounds the memory of the
# files waiting in the window as much as the number of files does (a file may be 64 MiB).
JUDGED_TOGETHER = 12
JUDGED_TOGETHER_BYTES = 32 * 1024 * 1024


def _size(item: "_Received | FileReport") -> int:
    return len(item.data) if isinstance(item, _Received) else 0


def _ready(window: deque, lookahead: int) -> bool:
    """Whether the files of the window beyond the `lookahead` being prepared make a pass."""
    beyond = len(window) - lookahead
    return beyond >= JUDGED_TOGETHER or beyond > 0 and sum(map(_size, islice(window, beyond))) >= JUDGED_TOGETHER_BYTES


def _oldest(window: deque) -> list:
    """The oldest files of the window to be judged together: JUDGED_TOGETHER of them, or fewer
    when they hold JUDGED_TOGETHER_BYTES (at least one)."""
    taken, size = [window.popleft()], 0
    while window and len(taken) < JUDGED_TOGETHER:
        size += _size(taken[-1])
        if size >= JUDGED_TOGETHER_BYTES:
            break
        taken.append(window.popleft())
    return taken


# Decided files whose kvittering waits to be sent: bounds the memory held by their outcomes.
ANSWERS_AHEAD = 4


class _Answerer:
    """Steps 4–5 of decided files (the kvittering encoded and sent, the pair removed from IN/), in
    one thread of their own, in file order, while this thread judges and commits the next files:
    the sending waits mostly for fsyncs and the exchange, the judging for the CPU. Every decision
    is committed before its file is handed over, so whatever happens to the thread the state is
    one that a kill at that point leaves: a file decided and not yet answered is answered by the
    next run. The first failure is raised here (at the next file, or at `finish`), as it was
    raised by the sending itself before; the files after it are not answered by this run."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(1, thread_name_prefix="pensionstraek-kvittering")
        self.pending: deque = deque()
        self.failed = False

    def __enter__(self) -> "_Answerer":
        return self

    def __exit__(self, *_: object) -> None:
        # Also when the run fails elsewhere: the files decided are answered, as they were when
        # each was answered before the next was read (after a failure here, none is).
        self.pool.shutdown(wait=True)

    def submit(self, answer: Callable[[], None]) -> None:
        self.pending.append(self.pool.submit(self._unless_failed, answer))
        while len(self.pending) > ANSWERS_AHEAD:
            self.pending.popleft().result()

    def finish(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def _unless_failed(self, answer: Callable[[], None]) -> None:
        if self.failed:
            return
        try:
            answer()
        except BaseException:
            self.failed = True
            raise


def _remove_orphaned_temporaries(state: StateStore, client: ExchangeClient) -> None:
    """What a killed write left behind (pipelines.storage TEMP_PREFIX), in the state store and in
    our OUT/ (IN/ is the platform's): never read by anyone, so only clutter, but clutter an auditor
    would ask about. Only ones untouched for TEMP_GRACE_SECONDS: a settlement may be writing now
    (it does not take the intake lock), and a live write touches its file all the time."""
    removed = state.remove_orphaned_temporaries() + client.remove_orphaned_temporaries("OUT", TEMP_GRACE_SECONDS)
    if removed:
        log.info("%d efterladte midlertidige filer fjernet: %s", len(removed), ", ".join(removed[:5]))


class _Judge:
    """The history a decision depends on, kept up to date across the files of one run."""

    def __init__(
        self, state: StateStore, partners: Partners, pensionssager: pl.DataFrame, snapshot: str, run_id: str,
        max_bytes: int | None,
    ):  # fmt: skip
        self.state = state
        self.max_bytes = max_bytes
        self.run_id = run_id
        self.partners = partners
        self.pensionssager = pensionssager
        self.cases = CaseIndex(pensionssager)
        self.snapshot = snapshot
        self.ledger = state.ledger(HISTORY_COLUMNS)  # all the judging reads (issue 11: 1.1 M rows by month 36)
        self.outcomes: dict[str, pl.DataFrame] = {}
        self.accepted_before = {
            (d["afsender"], d["sha256"]) for d in state.decisions() if d["status"] == "MODTAGET"
        }

    def judge_together(self, files: list["_Received"]) -> dict[str, pl.DataFrame]:
        """The instruction outcomes of `files` (prepared, of different municipalities) from one
        pass of assets.sf6110_rules.judge_files against the history now, by FileTransferUUID;
        none when that pass fails: each file is then judged alone by `decide`, so that only the
        file at fault fails."""
        if len(files) < 2:
            return {}
        try:
            together = [
                FileToJudge(p.decoded.instructions, p.decoded.kommunekode, f.delivery.received, p.u01_element)
                for f in files
                for p in [f.prepared()]
            ]
            outcomes = judge_files(together, pensionssager=self.pensionssager, ledger=self.ledger, cases=self.cases)
        except Exception as exc:  # noqa: BLE001 - judged one by one instead
            log.info("SF6110: %d filer bedømmes hver for sig (%s)", len(files), type(exc).__name__)
            return {}
        return {f.uuid: o for f, o in zip(files, outcomes)}

    def decide(
        self, data: bytes, sender: str, name: str, uuid: str, received: dt.datetime, prepared: Prepared | None = None,
        judged: pl.DataFrame | None = None,
    ) -> dict:  # fmt: skip
        decision = judge_file(
            data,
            sender=sender,
            filnavn=name,
            file_transfer_uuid=uuid,
            received=received,
            partners=self.partners,
            accepted_before=frozenset(self.accepted_before),
            pensionssager=self.pensionssager,
            ledger=self.ledger,
            max_bytes=self.max_bytes,
            prepared=prepared,
            cases=self.cases,
            judged=judged,
        )
        rejected = decision.outcomes.filter(pl.col("status") == "AFVIST")
        record = {
            "file_transfer_uuid": uuid,
            "filnavn": name,
            "afsender": sender,
            "modtaget": received.isoformat(),
            "sha256": prepared.sha256 if prepared is not None else sha256_hex(data),
            "size": len(data),
            "status": decision.status,
            "kode": decision.kode,
            "kommunekode": decision.kommunekode,
            "antal_modtaget": decision.outcomes.height - rejected.height if decision.status == "MODTAGET" else 0,
            "antal_afvist": rejected.height if decision.status == "MODTAGET" else 0,
            "koder": dict(sorted(Counter(rejected["kode"].to_list()).items())),
            "pensionssager_snapshot": self.snapshot,
            "decided_at": utc_now().isoformat(),
            "run_id": self.run_id,
        }
        if decision.status == "MODTAGET" and prepared is not None and prepared.offences is not None:
            # The instruction contract's figures (check anmodninger_overholder_formatet), from the
            # same evaluation of U01's rules: the check need not decode the file again.
            record["kontrakt"] = file_contract(name, prepared.decoded.instructions, prepared.offences)
        self.state.commit_decision(record, decision.outcomes, decision.registered)
        if decision.registered.height:
            self.ledger = pl.concat([self.ledger, decision.registered.select(self.ledger.columns)])
        if decision.status == "MODTAGET":
            self.accepted_before.add((sender, record["sha256"]))
        self.outcomes[uuid] = decision.outcomes  # as committed: the kvittering needs not read them back
        return record


@dataclass
class _Received:
    """A delivery through steps 1–2 (envelope checked, archived), waiting to be judged."""

    delivery: Delivery
    data: bytes
    uuid: str
    sender: str
    prepared: Callable[[], Prepared] | None  # None: decided before (no need to decode)

    def __post_init__(self) -> None:
        if self.prepared is not None:  # asked for when grouping and when judging: prepared once
            self.prepared = functools.cache(self.prepared)

    def kommunekode(self) -> str | None:
        """The municipality of a file to be judged that decodes (grouping, `_answer_together`)."""
        if self.prepared is None:
            return None
        try:
            decoded = self.prepared().decoded
        except Exception:  # noqa: BLE001 - judged alone, where the failure is the file's (UAFGJORT)
            return None
        return decoded.kommunekode if isinstance(decoded, RequestFile) else None


def _receive(
    client: ExchangeClient,
    state: StateStore,
    partners: Partners,
    preparer: _Preparer,
    delivery: Delivery,
    keep: bool,
) -> _Received | FileReport:
    """Steps 1–2: the envelope (quarantine: the report), then the archive, then the file is
    handed to be prepared."""
    name = delivery.name
    metadata_raw = client.read(f"IN/{name}.metadata")
    data = client.read(f"IN/{name}")

    try:
        metadata = decode_metadata(metadata_raw)
        problem = _envelope_problem(metadata, name, len(data), partners)
    except EnvelopeError as exc:
        metadata, problem = None, f"metadata kan ikke læses: {exc}"
    # Older, pretty-printed platform metadata may wrap the UUID in white space (exchange.md).
    uuid = metadata.file_transfer_uuid.strip() if problem is None else ""
    if problem is None:
        problem = _uuid_used_for_another_file(state, uuid, name, data)
    if problem is not None:
        return _quarantine(client, state, delivery, data, metadata_raw, problem, keep)

    sender = metadata.descriptor.sender
    # exchange.md: archived unchanged before anything else happens. The two in any order: until
    # the decision, a delivery missing either is archived again from IN/.
    state.write_all({f"archive/received/{uuid}/{name}": data, f"archive/received/{uuid}/{name}.metadata": metadata_raw}, once=True)
    prepared = None if state.has_decision(uuid) else preparer.submit(data, delivery.received)
    return _Received(delivery, data, uuid, sender, prepared)


def _answer_together(
    client: ExchangeClient,
    state: StateStore,
    partners: Partners,
    judge: _Judge,
    answerer: _Answerer,
    items: list[_Received | FileReport],
    keep: bool,
) -> list[FileReport | None]:
    """`_answer` of each item in order, the instructions of consecutive files of different
    municipalities judged in one pass (`_Judge.judge_together`) before the first of them is
    decided: a file of a municipality already in the pass starts the next one, after the files
    before it are committed, because their registrations are its history (U07/U08)."""
    reports: list[FileReport | None] = []
    waiting: list[_Received | FileReport] = []  # in order, answered once their pass is made
    group: dict[str, _Received] = {}  # the pass being gathered, by municipality

    def answer_waiting() -> None:
        judged = judge.judge_together(list(group.values()))
        for item in waiting:
            uuid = item.uuid if isinstance(item, _Received) else None
            reports.append(_answer(client, state, partners, judge, answerer, item, keep, judged.pop(uuid, None)))
        waiting.clear()
        group.clear()

    for item in items:
        kommunekode = item.kommunekode() if isinstance(item, _Received) else None
        if kommunekode in group:
            answer_waiting()
        if kommunekode is not None:
            group[kommunekode] = item
        waiting.append(item)
    answer_waiting()
    return reports


def _answer(
    client: ExchangeClient,
    state: StateStore,
    partners: Partners,
    judge: _Judge,
    answerer: _Answerer,
    received: _Received | FileReport,
    keep: bool,
    judged: pl.DataFrame | None = None,
) -> FileReport | None:
    """Steps 3–5 of a received delivery: judged (unless decided before; `judged`: its instructions'
    outcomes from `_Judge.judge_together`), then answered and removed by `answerer`."""
    if isinstance(received, FileReport):
        return received  # quarantined
    delivery, data, uuid, sender, name = received.delivery, received.data, received.uuid, received.sender, received.delivery.name
    decided_before = state.has_decision(uuid)
    if decided_before:
        record = state.read_json(state.decision_path(uuid))
    else:
        try:
            prepared = received.prepared() if received.prepared is not None else None
            record = judge.decide(data, sender, name, uuid, delivery.received, prepared, judged)
        except Exception as exc:  # noqa: BLE001 - sf6110.md: never holds up other deliveries
            return _undecided(delivery, sender, uuid, exc)
    kvittering_name = kvittering_filnavn(record["kommunekode"], uuid)
    answered = (state.sent_record(kvittering_name) or {}).get("status", "sending") != "sending"
    if answered:
        # exchange.md "Exactly once": the same delivery again. The platform's repeat (another
        # received time) is counted as one; our own leftover (kept, or a run that died before
        # removing it) is simply finished.
        if not keep:
            _remove_pair(client, name)
        if delivery.received.isoformat() == record["modtaget"]:
            return None
        log.info("SF6110 %s fra %s (%s): gentaget levering, fjernet uden svar", name, sender, uuid)
        return FileReport(
            filnavn=name, afsender=sender, modtaget=delivery.received, status=REPEATED,
            kommunekode=record["kommunekode"], file_transfer_uuid=uuid,
        )  # fmt: skip
    outcomes = judge.outcomes.pop(uuid) if uuid in judge.outcomes else state.outcomes(uuid)

    def answer() -> None:
        kvittering = encode_kvittering(
            kommunekode=record["kommunekode"],
            modtaget_filnavn=name,
            file_transfer_uuid=uuid,
            modtaget=dt.datetime.fromisoformat(record["modtaget"]),
            status=record["status"],
            kode=record["kode"],
            outcomes=outcomes,
        )
        send(
            client,
            state,
            name=kvittering_name,
            data=kvittering,
            sender=partners.udk_account,
            recipients=[sender],
            kind="SF6110K",
        )
        if not keep:
            _remove_pair(client, name)
        log.info(
            "SF6110 %s fra %s (%s): %s %s, %d modtaget, %d afvist",
            name, sender, uuid, record["status"], record["kode"] or "", record["antal_modtaget"], record["antal_afvist"],
        )

    answerer.submit(answer)
    return FileReport(
        filnavn=name,
        afsender=sender,
        modtaget=dt.datetime.fromisoformat(record["modtaget"]),
        status=record["status"],
        kode=record["kode"],
        kommunekode=record["kommunekode"],
        file_transfer_uuid=uuid,
        antal_modtaget=record["antal_modtaget"],
        antal_afvist=record["antal_afvist"],
        koder=record["koder"],
        kvittering=kvittering_name,
        decided_before=decided_before,
    )


def _uuid_used_for_another_file(state: StateStore, uuid: str, name: str, data: bytes) -> str | None:
    """exchange.md "Exactly once": a FileTransferUUID already taken in for other bytes or another
    name is a platform fault. The first delivery stands; this one goes to quarantine."""
    if not _SAFE_UUID.fullmatch(uuid):
        return None  # _envelope_problem has refused it
    archived = [n for n in state.listdir(f"archive/received/{uuid}") if not n.endswith(METADATA_SUFFIX)]
    if not archived or archived == [name] and state.read(f"archive/received/{uuid}/{name}") == data:
        return None
    what = "et andet navn" if archived != [name] else "andet indhold"
    return f"FileTransferUUID {uuid} er allerede modtaget med {what} ({archived[0][:80]})"


def _undecided(delivery: Delivery, sender: str, uuid: str, exc: Exception) -> FileReport:
    """sf6110.md: a file that cannot be judged for a reason of our own waits (archived, in IN/)
    and is tried again by the next run; the operator sees it in the run's report and a check."""
    reason = mask_text(f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
    log.error("SF6110 %s fra %s (%s) kunne ikke afgøres og prøves igen ved næste kørsel: %s", delivery.name, sender, uuid, reason)
    return FileReport(
        filnavn=delivery.name, afsender=sender, modtaget=delivery.received, status=UNDECIDED,
        kode=reason, file_transfer_uuid=uuid,
    )  # fmt: skip


def _set_aside(client: ExchangeClient, state: StateStore, stray: Stray, keep: bool, max_bytes: int | None) -> Stray:
    """exchange.md "Nothing in IN/ is ignored silently": a plain file that cannot be a delivery is
    archived in quarantine and removed from IN/; anything else (a link, never followed; a folder; a
    FIFO) is left where it is and reported on every run until someone removes it."""
    if not stray.regular or (max_bytes is not None and stray.size > max_bytes):
        log.warning("IN/%r kan ikke være en levering: %s (bliver liggende)", stray.name, stray.reason)
        return stray
    try:
        data = client.read(f"IN/{stray.name}")
    except ValueError:  # a name the exchange client will not address (a backslash, say)
        log.warning("IN/%r kan ikke være en levering: %s (kan ikke læses)", stray.name, stray.reason)
        return stray
    stamp = stray.mtime.strftime("%Y%m%dT%H%M%SZ")
    folder = f"archive/quarantine/{stamp}_{sha256_hex(stray.name.encode() + data)[:16]}"
    state.write_once(f"{folder}/indhold", data)  # not under its name: it may be no file name at all
    state.write_json(
        f"{folder}/reason.json",
        {"filnavn": stray.name, "modtaget": stray.mtime.isoformat(), "reason": stray.reason, "art": "ukendt post i IN/"},
    )
    if not keep:
        client.remove(f"IN/{stray.name}")
    log.warning("IN/%r kan ikke være en levering: %s (arkiv %s)", stray.name, stray.reason, folder)
    return stray


def _envelope_problem(metadata, name: str, size: int, partners: Partners) -> str | None:
    """exchange.md "Reading": what makes a delivery go to quarantine (None: it holds)."""
    descriptor = metadata.descriptor
    if not _SAFE_UUID.fullmatch(metadata.file_transfer_uuid.strip()):
        return "FileTransferUUID er ikke et UUID"
    if descriptor.file_name != name:
        return "FileName i metadata er ikke filens navn"
    if descriptor.size_in_bytes != size:
        return f"SizeInBytes {descriptor.size_in_bytes} er ikke filens størrelse {size}"
    if descriptor.sender not in partners.accounts:
        return f"afsender {descriptor.sender[:40]!r} er ikke en kendt partner"
    if partners.udk_account not in descriptor.recipients:
        return f"{partners.udk_account} er ikke blandt modtagerne"
    return None


def _quarantine(
    client: ExchangeClient,
    state: StateStore,
    delivery: Delivery,
    data: bytes,
    metadata_raw: bytes,
    reason: str,
    keep: bool,
) -> FileReport:
    stamp = delivery.received.strftime("%Y%m%dT%H%M%SZ")
    folder = f"archive/quarantine/{stamp}_{sha256_hex(metadata_raw + data)[:16]}"
    state.write_once(f"{folder}/{delivery.name}", data)
    state.write_once(f"{folder}/{delivery.name}.metadata", metadata_raw)
    state.write_json(
        f"{folder}/reason.json",
        {"filnavn": delivery.name, "modtaget": delivery.received.isoformat(), "reason": reason},
    )
    if not keep:
        _remove_pair(client, delivery.name)
    log.warning("SF6110 %s i karantæne: %s (arkiv %s)", delivery.name, reason, folder)
    return FileReport(
        filnavn=delivery.name,
        afsender="",
        modtaget=delivery.received,
        status=QUARANTINED,
        kode=reason,
    )


def _remove_pair(client: ExchangeClient, name: str) -> None:
    """Data first, metadata last. A run that dies in between leaves the metadata alone in IN/,
    which the platform never does (exchange.md "Routing": data first, then metadata), so the next
    run can tell it from a delivery and finish the removal (`_finish_interrupted_removals`). The
    other order would leave a data file alone, which looks like a delivery being written."""
    client.remove(f"IN/{name}")
    client.remove(f"IN/{name}{METADATA_SUFFIX}")


def _finish_interrupted_removals(client: ExchangeClient, state: StateStore) -> None:
    """Remove each `IN/<name>.metadata` without its data whose bytes are archived with a delivery
    already taken in (decided, or quarantined): the leftover of a run that died in `_remove_pair`."""
    present = set(client.listdir("IN"))
    for metadata_name in sorted(n for n in present if n.endswith(METADATA_SUFFIX)):
        name = metadata_name.removesuffix(METADATA_SUFFIX)
        if name in present or not is_valid_envelope_name(name):
            continue
        raw = client.read(f"IN/{metadata_name}")
        if _taken_in(state, name, raw):
            client.remove(f"IN/{metadata_name}")
            log.info("SF6110 %s: metadata fjernet fra IN/ (data var allerede taget ind og fjernet)", name)


def _taken_in(state: StateStore, name: str, metadata_raw: bytes) -> bool:
    try:
        uuid = decode_metadata(metadata_raw).file_transfer_uuid.strip()
    except EnvelopeError:
        uuid = ""
    if _SAFE_UUID.fullmatch(uuid) and state.has_decision(uuid):
        archived = f"archive/received/{uuid}/{name}{METADATA_SUFFIX}"
        if state.exists(archived) and state.read(archived) == metadata_raw:
            return True
    for folder in state.listdir("archive/quarantine"):
        archived = f"archive/quarantine/{folder}/{name}{METADATA_SUFFIX}"
        if state.exists(archived) and state.read(archived) == metadata_raw:
            return True
    return False


def quarantined(state: StateStore) -> list[dict]:
    """Every quarantined delivery, for the operator's asset check."""
    return [
        state.read_json(f"archive/quarantine/{folder}/reason.json")
        for folder in state.listdir("archive/quarantine")
        if state.exists(f"archive/quarantine/{folder}/reason.json")
    ]


def undecided(state: StateStore) -> list[dict]:
    """Every delivery archived but not decided: one that could not be judged (and waits in IN/
    for the next run), for the operator's asset check. {file_transfer_uuid, filnavn}."""
    decided = {name.removesuffix(".json") for name in state.listdir("intake") if name.endswith(".json")}
    return [
        {"file_transfer_uuid": uuid, "filnavn": name}
        for uuid in state.listdir("archive/received")
        if uuid not in decided
        for name in state.listdir(f"archive/received/{uuid}")
        if not name.endswith(METADATA_SUFFIX)
    ]


def unprocessed(deliveries: list[Delivery], state: StateStore) -> list[Delivery]:
    """The deliveries that intake has neither decided nor quarantined. Usually that is all of
    IN/, but with kept deliveries (PENSIONSTRAEK_KEEP_DELIVERIES) processed ones stay there."""
    done = {(d["filnavn"], d["modtaget"]) for d in state.decisions()}
    done |= {(q["filnavn"], q["modtaget"]) for q in quarantined(state)}
    return [d for d in deliveries if (d.name, d.received.isoformat()) not in done]


@dataclass(frozen=True)
class InstructionContract:
    instructions: int
    failures_by_element: dict[str, int]
    examples: list[str]  # masked


def instruction_contract(state: StateStore, decision: dict) -> InstructionContract:
    """The pandera contract of an accepted file's instructions (U01's value rules), run on the
    archived file: how many instructions break each element's rule, with masked examples."""
    return instruction_contracts(state, [decision])


def _example(filnavn: str, position: int, anmodning_id: str | None, check: str, cpr: str | None) -> str:
    # Only the municipality's own id may hide a CPR; the file name's digits are a timestamp.
    return f"{filnavn} nr. {position + 1} ({mask_text(str(anmodning_id)[:36])}): {check}, CPR {mask_cpr(cpr)}"


def file_contract(filnavn: str, instructions: pl.DataFrame, offences: pl.DataFrame) -> dict:
    """The instruction contract of one accepted file from its `u01_offence_frame` (the judge's
    evaluation of U01's rules): how many instructions break each element's rule, and the first
    three (instruction, rule) failures, masked. The same figures as the pandera model gives
    (`instruction_contracts` on the archived file), without decoding or evaluating again."""
    failures = offences.select(pl.col(e).sum() for e in U01_ELEMENTS).row(0, named=True)
    offending = offences.with_row_index("index").filter(pl.any_horizontal(U01_ELEMENTS)).head(3)
    examples: list[str] = []
    for row in offending.iter_rows(named=True):
        instruction = instructions.row(row["index"], named=True)
        examples += [
            _example(filnavn, instruction["position"], instruction["anmodning_id"], f"U01_{e}", instruction["cpr"])
            for e in U01_ELEMENTS
            if row[e]
        ]
    return {
        "anmodninger": instructions.height,
        "fejl": {element: n for element, n in failures.items() if n},
        "eksempler": examples[:3],
    }


def instruction_contracts(state: StateStore, decisions: list[dict]) -> InstructionContract:
    """`instruction_contract` over many files at once, with up to three examples per file in the
    order of `decisions`. A decision made by intake carries its file's figures (`file_contract`);
    only the files of older decisions are decoded and validated by the pandera model here, one
    validation per day of receipt (U01's rules depend on the judging date) instead of one per
    file: pandera's cost is mostly per call (issue 11)."""
    stored = {number: d["kontrakt"] for number, d in enumerate(decisions) if "kontrakt" in d}
    files: list[tuple[dict, pl.DataFrame, dt.date]] = []
    numbers: list[int] = []  # of each file in `decisions`
    for number, decision in enumerate(decisions):
        if number in stored:
            continue
        data = state.read(f"archive/received/{decision['file_transfer_uuid']}/{decision['filnavn']}")
        request_file = decode_request_file(data)
        if isinstance(request_file, RequestFile):
            received_on = dt.datetime.fromisoformat(decision["modtaget"]).astimezone(TZ).date()
            files.append((decision, request_file.instructions, received_on))
            numbers.append(number)

    by_element: Counter = Counter()
    examples: dict[int, list[str]] = {}
    for number, contract in stored.items():
        by_element.update({f"U01_{element}": n for element, n in contract["fejl"].items()})
        examples[number] = list(contract["eksempler"])
    for received_on in sorted({day for _, _, day in files}):
        import pandera.polars as pa  # only here: a tenth of a second to import

        group = [(number, f) for number, f in enumerate(files) if f[2] == received_on]
        frame = pl.concat([instructions for _, (_, instructions, _) in group], how="vertical", rechunk=False)
        starts = pl.Series("start", [0] + list(accumulate(f[1].height for _, f in group))[:-1], dtype=pl.UInt32)
        try:
            instruction_schema(received_on).validate(frame, lazy=True)
        except pa.errors.SchemaErrors as exc:
            cases = exc.failure_cases.filter(pl.col("check").str.starts_with("U01_"))
            by_element.update(dict(cases.group_by("check").agg(pl.col("index").n_unique()).iter_rows()))
            rows = frame.with_row_index("index").join(
                cases.select(pl.col("index").cast(pl.UInt32), "check"), on="index", maintain_order="left"
            )
            rows = rows.with_columns(fil=starts.search_sorted(rows["index"], side="right").cast(pl.Int64) - 1)
            for (fil,), in_file in rows.group_by("fil", maintain_order=True):
                number, (decision, _, _) = group[fil]
                examples[numbers[number]] = [
                    _example(decision["filnavn"], r["position"], r["anmodning_id"], r["check"], r["cpr"])
                    for r in in_file.head(3).iter_rows(named=True)
                ]
    return InstructionContract(
        sum(instructions.height for _, instructions, _ in files) + sum(c["anmodninger"] for c in stored.values()),
        {check.removeprefix("U01_"): n for check, n in sorted(by_element.items())},
        [example for number in sorted(examples) for example in examples[number]],
    )
