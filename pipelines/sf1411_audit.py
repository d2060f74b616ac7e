"""The SF1411 audit (sf1411-sf2610.md "Audit"): every call, also a refused one, recorded in the
state store before its answer leaves, append-only:

    sf1411/audit/<YYYY-MM-DD>/<HHMMSS>-<pid>-<id>.jsonl   one JSON object per call

Each process appends to its own segment, opened with O_EXCL and never rewritten (a new day, a new
segment). Concurrent calls share one write and one fsync (group commit): a call waits until the
batch that holds its record is on disk. The CPR is written in full here, and only here (the
auditor's question "who looked me up?" is answered from it: `opslag_for`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import queue
import threading
import uuid
from pathlib import Path

from pipelines.calendar import TZ
from pipelines.state import StateStore

FOLDER = "sf1411/audit"
SVAR, INGEN_SAG, AFVIST, FEJL = "SVAR", "INGEN_SAG", "AFVIST", "FEJL"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditLog:
    """Group commit: `record` queues a line and, when none is queued yet in this round of the event
    loop, schedules a hand-over at the end of the round; the hand-over gives every line queued by
    then to one writer thread, which appends all it has been given with one write and one fsync and
    then releases their callers in the loop.

    Every call that arrived in the same round shares an fsync, and calls that arrive while one runs
    share the next; the loop goes on reading and judging calls meanwhile. An idle service's lone
    call is written at once: there is no batching window to wait out."""

    def __init__(self, state: StateStore):
        self.root = Path(state.path(FOLDER))
        self._pending: list[tuple[bytes, asyncio.Future]] = []
        self._scheduled = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._fd: int | None = None
        self._day: str | None = None
        self.batches = 0  # how many fsyncs (records per fsync: the tests, the benchmark)

    async def record(self, entry: dict) -> None:
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((line, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._hand_over, loop)
        await future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="sf1411-audit", daemon=True)
            self._writer.start()
        self._queue.put((loop, batch))

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            given = [item]
            while not self._queue.empty():  # what queued up during the last fsync goes in this one
                more = self._queue.get()
                if more is None:
                    self._queue.put(None)
                    break
                given.append(more)
            try:
                self._append(b"".join(line for _, batch in given for line, _ in batch))
                error = None
            except Exception as exc:  # noqa: BLE001 - the callers answer with a server fault, not a lie
                error = exc
            for loop, batch in given:
                try:
                    loop.call_soon_threadsafe(self._release, batch, error)
                except RuntimeError:  # that loop is closed: nobody there is waiting any more
                    continue

    @staticmethod
    def _release(batch: list[tuple[bytes, asyncio.Future]], error: Exception | None) -> None:
        for _, future in batch:
            if future.done():  # a caller gone (connection closed) needs no release
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def _segment(self) -> int:
        day = dt.datetime.now(TZ).date().isoformat()
        if self._fd is None or day != self._day:
            if self._fd is not None:
                os.close(self._fd)
            folder = self.root / day
            new_folder = not folder.exists()
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if new_folder:
                _fsync_dir(folder.parent)
            name = f"{dt.datetime.now(TZ):%H%M%S}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._fd = os.open(folder / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            _fsync_dir(folder)  # the new segment's name is durable before a record counts
            self._day = day
        return self._fd

    def _append(self, data: bytes) -> None:
        fd = self._segment()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        self.batches += 1

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=30)
            self._writer = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def audit_records(state: StateStore) -> list[dict]:
    """Every audit record, oldest first. A torn last line (power cut mid-write, never answered)
    is skipped."""
    records = []
    for day in state.listdir(FOLDER):
        for segment in state.listdir(f"{FOLDER}/{day}"):
            for line in state.read(f"{FOLDER}/{day}/{segment}").splitlines():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    return sorted(records, key=lambda r: r["tid"])


def opslag_for(state: StateStore, cpr: str) -> list[dict]:
    """`explain --cpr`'s `opslag` (operations.md): every SF1411 call about the citizen, a look-up
    of them or a change of a list that names them: tid, aftale, operation, udfald."""
    return [
        {
            "tid": r["tid"],
            "aftale": r.get("aftale_navn") or r.get("aftale"),
            "operation": r.get("operation"),
            "udfald": r["udfald"] if not r.get("fejlkode") else f"{r['udfald']} {r['fejlkode']}",
        }
        for r in audit_records(state)
        if r.get("cpr") == cpr or any(value == cpr for _, value in r.get("aendringer") or [])
    ]
