"""The SF1411 audit's group commit (pipelines/sf1411_audit.py, sf1411-sf2610.md "Audit"): every
record is on disk before its caller is released, concurrent calls share fsyncs, a lone call is not
held back, and a failed write releases every caller of its batch with the error."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from pipelines.sf1411_audit import AuditLog, audit_records
from pipelines.state import StateStore


def _lines(state: StateStore) -> list[dict]:
    return [json.loads(line) for p in Path(state.path("sf1411/audit")).rglob("*.jsonl") for line in p.read_bytes().splitlines()]


def test_concurrent_records_are_all_durable_before_release_and_share_fsyncs(tmp_path, monkeypatch):
    state = StateStore(str(tmp_path / "state"))
    audit = AuditLog(state)
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        real_fsync(fd)
        synced.append(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    on_disk_at_release: dict[int, bool] = {}

    async def call(n: int) -> None:
        await asyncio.sleep(0)  # arrive together, as calls read in one round of the loop
        await audit.record({"tid": f"{n:04d}", "n": n, "cpr": "0101401234"})
        # Released: the record is in the file already, and the file was fsynced after it.
        on_disk_at_release[n] = any(r["n"] == n for r in _lines(state)) and bool(synced)

    async def main() -> None:
        await asyncio.gather(*(call(n) for n in range(200)))

    asyncio.run(main())
    audit.close()
    assert sorted(r["n"] for r in audit_records(state)) == list(range(200))  # complete, none twice
    assert all(on_disk_at_release.values()) and len(on_disk_at_release) == 200
    assert 1 <= audit.batches < 20  # grouped: far fewer fsyncs than records


def test_a_lone_call_is_written_at_once(tmp_path):
    audit = AuditLog(StateStore(str(tmp_path / "state")))

    async def main() -> float:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await audit.record({"tid": "1", "n": 1})
        return loop.time() - began

    took = asyncio.run(main())
    audit.close()
    assert audit.batches == 1 and took < 1.0  # no batching window to wait out


def test_a_failed_write_fails_every_caller_of_its_batch_and_the_next_batch_succeeds(tmp_path, monkeypatch):
    state = StateStore(str(tmp_path / "state"))
    audit = AuditLog(state)
    real_append = audit._append
    failures = iter([OSError("disk full")])

    def flaky_append(data: bytes) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        real_append(data)

    monkeypatch.setattr(audit, "_append", flaky_append)

    async def main() -> tuple[list, list]:
        first = await asyncio.gather(*(audit.record({"tid": str(n), "n": n}) for n in range(5)), return_exceptions=True)
        second = await asyncio.gather(*(audit.record({"tid": str(n), "n": n}) for n in range(5, 8)), return_exceptions=True)
        return first, second

    first, second = asyncio.run(main())
    audit.close()
    assert all(isinstance(r, OSError) for r in first)
    assert second == [None, None, None]
    assert sorted(r["n"] for r in audit_records(state)) == [5, 6, 7]
