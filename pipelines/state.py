"""The pipeline's own durable storage (PENSIONSTRAEK_STATE_URL, operations.md "Idempotency and audit").

Everything the auditors may ask about lives here, written atomically and never deleted:

    archive/received/<FileTransferUUID>/<name>(.metadata)   every delivery exactly as received
    archive/quarantine/<stamp>_<sha>/<name>(.metadata)       deliveries whose envelope did not hold
    archive/receipts/<name>.sftpreceipt.<n>                  technical receipts as received
    intake/<FileTransferUUID>.json                            the decision on a file (commit marker)
    intake/<FileTransferUUID>.outcomes.parquet                one row per instruction, its outcome
    ledger/<FileTransferUUID>.parquet                         the registered instructions (LEDGER_SCHEMA)
    sent/<name>/{data,trigger.xml,record.json,receipt.sftpreceipt}   every file sent, with its envelope
    deliveries/<integration>/<periode>/<kommunekode>.json     the versions sent (Loebenummer bookkeeping)
    outgoing/<integration>/<periode>/<name>                   every version of a period's file, as made
    periods/<periode>/<table>.parquet                         the settlement's frames per period (the last run)
    archive/afregning/<periode>/<stamp>.parquet               every distinct settlement of P, with netto and
                                                              walk order (what `pensionstraek explain` reads)
    index/manifest.json, index/<n>.{decisions.json,ledger.parquet}   compacted copies (below)
    index/swept.json                                          the last sweep for orphaned temporaries

A decision file is the commit point of intake: the ledger and outcome files of a FileTransferUUID
count only once its decision exists, so a run that dies half-way is simply done again.

A committed decision and its ledger file never change, so years of them are read from a few
compacted segments (`index/`) instead of one file per delivery ever received (issue 11: a run's
cost must not grow with the history). The originals stay where they are for the auditors; the
index is derived data, rebuilt from them if it is removed. A segment counts only once the
manifest names it (written last), so a run that dies while compacting leaves the store as it
was."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import posixpath
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import polars as pl

from contracts.ledger import LEDGER_SCHEMA
from pipelines.config import STATE_URL, ConfigError, check_local_or_url
from pipelines.storage import FILE_MODE, TEMP_PREFIX, atomic_write_all, makedirs


# A temporary file untouched this long belongs to a write that died (a live write touches it all
# the time and renames it at once): see docs/decisions.md "Orphaned temporary files".
TEMP_GRACE_SECONDS = 300

# Compaction: at most this many committed decisions are read one file each before a run folds
# them into a new segment, and at most this many segments are kept (the smallest are merged), so
# a run reads at most about 2 × these many files whatever the history.
LOOSE_LIMIT = 64
SEGMENT_LIMIT = 8

# When the last sweep for orphaned temporaries started, and the temporaries it left (too young):
# `remove_orphaned_temporaries` lists only the folders changed since.
SWEEP_RECORD = "index/swept.json"


class StateStore:
    def __init__(self, url: str):
        check_local_or_url(STATE_URL, url)
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/") or "/"
        # A local store is listed, walked and locked through the OS itself (see each use).
        self.local = isinstance(self.fs, fsspec.implementations.local.LocalFileSystem)
        try:
            makedirs(self.fs, self.root)
        except OSError as exc:
            raise ConfigError(f"{STATE_URL}={url!r} cannot be created or written: {exc.strerror}") from exc

    # --- plain file access ------------------------------------------------------------------

    def path(self, *parts: str) -> str:
        for part in parts:
            if part in ("", ".", "..") or part.startswith("/") or ".." in part.split("/"):
                raise ValueError(f"unsafe state path component {part!r}")
        return posixpath.join(self.root, *parts)

    def write(self, relative: str, data: bytes) -> None:
        self.write_all({relative: data})

    def write_all(self, files: dict[str, bytes], *, once: bool = False, same_as: dict[str, str] | None = None) -> None:
        """Write several files with one round of fsyncs (pipelines.storage.atomic_write_all): only
        for files that may become durable in any order among themselves (docs/decisions.md
        "Grouped fsyncs"); a file that must be on disk before another is written by a call
        before it. `once`: archive semantics, an existing file is never overwritten. `same_as`:
        a file of `files` -> a file of the store already written with exactly its bytes; a local
        store gives it that file's bytes by a hard link instead of a second copy (no file of the
        store is ever changed in place, so the two names keep the same bytes)."""
        targets = [(self.path(relative), data) for relative, data in files.items() if not (once and self.exists(relative))]
        if not targets:
            return
        made_in: list[str] = []
        for folder in dict.fromkeys(posixpath.dirname(target) for target, _ in targets):
            makedirs(self.fs, folder, unsynced=made_in)
        links = {self.path(relative): self.path(source) for relative, source in (same_as or {}).items()}
        atomic_write_all(self.fs, targets, made_in=made_in, same_as=links)

    def write_once(self, relative: str, data: bytes) -> None:
        """Archive semantics: an existing file is never overwritten."""
        self.write_all({relative: data}, once=True)

    def read(self, relative: str) -> bytes:
        with self.fs.open(self.path(relative), "rb") as f:
            return f.read()

    def exists(self, relative: str) -> bool:
        return self.fs.exists(self.path(relative))

    def listdir(self, relative: str) -> list[str]:
        folder = self.path(relative)
        if self.local and os.path.isdir(folder):
            # The OS's names as they are: fsspec normalises a path per entry (intake/ holds two
            # files a delivery ever received, and an empty intake lists it five times: issue 11).
            names = os.listdir(folder)
        elif not self.fs.exists(folder):
            return []
        else:
            names = [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(folder, detail=False)]
        return sorted(n for n in names if not n.startswith(TEMP_PREFIX))

    def write_json(self, relative: str, value: object) -> None:
        self.write(relative, json_bytes(value))

    def read_json(self, relative: str) -> dict:
        return json.loads(self.read(relative))

    def write_frame(self, relative: str, frame: pl.DataFrame) -> None:
        self.write(relative, _parquet(frame))

    def read_frame(self, relative: str) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self.read(relative)))

    def remove_orphaned_temporaries(self, older_than_seconds: float = TEMP_GRACE_SECONDS) -> list[str]:
        """Remove what killed writes left (TEMP_PREFIX names) untouched for `older_than_seconds`.
        Temporary files are not state (`listdir` hides them, nothing ever reads them). A local
        store is searched only where a temporary can have been made since the last sweep (see
        `_local_temporaries`): the store holds a folder per file ever sent, and walking them all
        grew every intake with the history (issue 11)."""
        started = time.time()
        limit = started - older_than_seconds
        previous = self._last_sweep() if self.local else None
        removed, left = [], set()  # a temporary left before and still young is found twice
        for path, mtime in self._local_temporaries(previous) if self.local else self._remote_temporaries():
            if mtime < limit:
                self.fs.rm_file(path)
                removed.append(posixpath.relpath(path, self.root))
            else:
                left.add(posixpath.relpath(path, self.root))
        if self.local:
            self.write_json(SWEEP_RECORD, {"started": started, "left": sorted(left)})
        return sorted(removed)

    def _last_sweep(self) -> dict | None:
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
            record = self.read_json(SWEEP_RECORD)
            return {"started": float(record["started"]), "left": [str(path) for path in record["left"]]}
        return None

    def _remote_temporaries(self) -> Iterator[tuple[str, float]]:
        """(path, mtime) of every temporary file in a store that is not local."""
        for path, info in self.fs.find(self.root, detail=True).items():
            if posixpath.basename(path).startswith(TEMP_PREFIX) and info.get("type") == "file":
                yield path, _mtime(info)

    def _local_temporaries(self, previous: dict | None) -> Iterator[tuple[str, float]]:
        """(path, mtime) of the temporary files of a local store that the sweep `previous`
        (`SWEEP_RECORD`) did not see removed: the ones it left (too young then), and those in a
        folder changed since it started. A temporary file is made in its target's folder, which
        changes that folder's mtime; so a folder without subfolders (its link count is 2) that has
        not changed since is not listed. Where the file system does not count subfolders in the
        link count, every folder is listed, as without a previous sweep."""
        # A margin for a clock that steps back a little; listing a folder too many is harmless.
        since = previous["started"] - TEMP_GRACE_SECONDS if previous else None
        if previous:
            for relative in previous["left"]:
                with contextlib.suppress(FileNotFoundError, ValueError):
                    yield from self._temporary(self.path(relative))
        folders = [self.root]
        while folders:
            folder = folders.pop()
            with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                        yield from self._temporary(entry.path)
                    elif entry.is_dir(follow_symlinks=False):
                        with contextlib.suppress(FileNotFoundError):
                            status = entry.stat(follow_symlinks=False)
                            if since is None or status.st_nlink != 2 or status.st_mtime >= since:
                                folders.append(entry.path)

    @staticmethod
    def _temporary(path: str) -> Iterator[tuple[str, float]]:
        try:
            status = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return  # renamed into place meanwhile: a live write
        if stat.S_ISREG(status.st_mode):
            yield path, status.st_mtime

    # --- intake -----------------------------------------------------------------------------

    def decision_path(self, file_transfer_uuid: str) -> str:
        return f"intake/{file_transfer_uuid}.json"

    def has_decision(self, file_transfer_uuid: str) -> bool:
        return self.exists(self.decision_path(file_transfer_uuid))

    def decisions(self) -> list[dict]:
        """Every committed intake decision, oldest received first."""
        index = self._index()
        records = [record for segment in index["segments"] for record in self._segment_decisions(segment)]
        records += [self.read_json(f"intake/{uuid}.json") for uuid in self._loose(index)]
        return sorted(records, key=lambda r: (r["modtaget"], r["filnavn"].encode()))

    def commit_decision(
        self, decision: dict, outcomes: pl.DataFrame, registered: pl.DataFrame
    ) -> None:
        """Ledger and outcomes first, the decision last: the decision is the commit point."""
        uuid = decision["file_transfer_uuid"]
        frames = {f"ledger/{uuid}.parquet": _parquet(registered.select(LEDGER_SCHEMA.names()))} if registered.height else {}
        frames[f"intake/{uuid}.outcomes.parquet"] = _parquet(outcomes)
        self.write_all(frames)  # in any order: neither counts before the decision
        self.write_json(self.decision_path(uuid), decision)

    def ledger(self, columns: tuple[str, ...] | None = None) -> pl.DataFrame:
        """Every registered instruction of every committed file (settlement.md's input), in no
        particular order (the rules sort); only `columns` of it, if given (the rest is not read)."""
        return self._read_ledger(self._ledger_files(), columns)

    def _read_ledger(self, relatives: list[str], columns: tuple[str, ...] | None = None) -> pl.DataFrame:
        """The ledger files `relatives` as one frame, in their order. A local store's in one read:
        polars reads the files side by side, for half the CPU of a read each (issue 11: compacting
        reads a run's 98 files)."""
        schema = LEDGER_SCHEMA if columns is None else pl.Schema({c: LEDGER_SCHEMA[c] for c in columns})
        if not relatives:
            return pl.DataFrame(schema=schema)
        if self.local:
            paths = [self.path(relative) for relative in relatives]
            frame = pl.read_parquet(paths, columns=list(schema), glob=False, hive_partitioning=False)  # the names as they are
        else:
            frame = pl.concat([self.read_frame(relative).select(schema.names()) for relative in relatives], how="vertical")
        return frame.cast(schema)

    def ledger_of_requests(self, selects: pl.Expr) -> pl.DataFrame:
        """`ledger()`'s rows of every request (kommunekode, anmodning_id) with at least one row
        that `selects` holds for, all of each such request's rows. A settlement needs only the
        requests that can be active: after three years (10 % scale) they are 3 % of the ledger,
        and reading all of it had grown the settlement's CPU from 0.06 to 0.5 s (issue 11)."""
        relatives = self._ledger_files()
        if not relatives:
            return pl.DataFrame(schema=LEDGER_SCHEMA)
        if self.local:
            paths = [self.path(relative) for relative in relatives]
            ledger = pl.scan_parquet(paths, glob=False, hive_partitioning=False)  # the names as they are
        else:
            ledger = self._read_ledger(relatives).lazy()
        requests = ledger.filter(selects).select("kommunekode", "anmodning_id").unique()
        return ledger.join(requests, on=["kommunekode", "anmodning_id"], how="semi").collect().cast(LEDGER_SCHEMA)

    def ledger_rows(self) -> int:
        """`ledger().height`, from the files' parquet footers: the history is not decoded (an
        empty intake reported its ledger's size by loading all of it: issue 11, the fixed cost)."""
        rows = 0
        for relative in self._ledger_files():
            source = self.path(relative) if self.local else io.BytesIO(self.read(relative))
            rows += pl.scan_parquet(source).select(pl.len()).collect().item()
        return rows

    def _ledger_files(self) -> list[str]:
        index = self._index()
        have = set(self.listdir("ledger"))
        return [f"index/{segment['name']}.ledger.parquet" for segment in index["segments"]] + [
            f"ledger/{uuid}.parquet" for uuid in self._loose(index) if f"{uuid}.parquet" in have
        ]

    # --- the compacted index of decisions and ledger (see the module docstring) ----------------

    def _index(self) -> dict:
        path = "index/manifest.json"
        return self.read_json(path) if self.exists(path) else {"segments": []}

    def _committed(self) -> list[str]:
        return [name.removesuffix(".json") for name in self.listdir("intake") if name.endswith(".json")]

    def _loose(self, index: dict) -> list[str]:
        """The committed decisions no segment of `index` holds."""
        indexed = {uuid for segment in index["segments"] for uuid in segment["uuids"]}
        return [uuid for uuid in self._committed() if uuid not in indexed]

    def _segment_decisions(self, segment: dict) -> list[dict]:
        return json.loads(self.read(f"index/{segment['name']}.decisions.json"))

    def compact(self, loose_limit: int = LOOSE_LIMIT, segment_limit: int = SEGMENT_LIMIT) -> bool:
        """Fold the committed decisions that are still read one file each into a new segment once
        there are `loose_limit` or more, and merge the segments into one once there are more than
        `segment_limit`. Returns whether anything changed; the caller holds the `index` lock. The segment files are written before the manifest that names them."""
        index = self._index()
        loose = self._loose(index)
        if len(loose) < loose_limit and len(index["segments"]) <= segment_limit:
            return False
        segments = list(index["segments"])
        if len(loose) >= loose_limit:
            have = set(self.listdir("ledger"))
            ledger = self._read_ledger([f"ledger/{uuid}.parquet" for uuid in loose if f"{uuid}.parquet" in have])
            decisions = [self.read_json(f"intake/{uuid}.json") for uuid in loose]
            segments.append(self._write_segment(index, loose, decisions, ledger))
        superseded = []
        if len(segments) > segment_limit:
            # The smallest segments are merged, as many as bring the count within the limit, so a
            # merge rewrites a small share of the history, not all of it every few months (issue
            # 11): a decision is merged again only once its segment is among the smallest.
            merging = sorted(segments, key=lambda segment: (len(segment["uuids"]), segment["name"]))
            merging = merging[: len(segments) - segment_limit + 1]
            merged = self._write_segment(
                {"segments": segments},
                [uuid for segment in merging for uuid in segment["uuids"]],
                [record for segment in merging for record in self._segment_decisions(segment)],
                self._read_ledger([f"index/{segment['name']}.ledger.parquet" for segment in merging]),
            )
            superseded = [segment["name"] for segment in merging]
            segments = [segment for segment in segments if segment["name"] not in superseded] + [merged]
        self.write_json("index/manifest.json", {"segments": segments, "superseded": superseded})
        # A reader may still hold the manifest before this one, so segments are removed only one
        # merge later (derived copies: the originals stay in intake/ and ledger/).
        for name in index.get("superseded", []):
            for suffix in (".decisions.json", ".ledger.parquet"):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(self.path(f"index/{name}{suffix}"))
        return True

    def _write_segment(self, index: dict, uuids: list[str], decisions: list[dict], ledger: pl.DataFrame) -> dict:
        number = 1 + max((int(segment["name"]) for segment in index["segments"]), default=0)
        name = f"{number:06d}"
        self.write_frame(f"index/{name}.ledger.parquet", ledger.select(LEDGER_SCHEMA.names()))
        self.write(f"index/{name}.decisions.json", json.dumps(decisions, ensure_ascii=False, sort_keys=True).encode())
        return {"name": name, "uuids": sorted(uuids)}

    def outcomes(self, file_transfer_uuid: str) -> pl.DataFrame:
        return self.read_frame(f"intake/{file_transfer_uuid}.outcomes.parquet")

    # --- sent files ---------------------------------------------------------------------------

    def sent_record(self, name: str) -> dict | None:
        relative = f"sent/{name}/record.json"
        return self.read_json(relative) if self.exists(relative) else None

    def sent_records(self) -> list[dict]:
        return [r for r in (self.sent_record(n) for n in self.listdir("sent")) if r is not None]

    # --- locking ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """One run at a time for `name` (intake, settlement): two concurrent intakes could both
        judge a file. Local state: an flock, released by the OS if the process dies. Re-entrant
        in the thread that holds it, so that a command may hold it around the run it makes
        (a second intake is then refused before any run exists)."""
        if not self.local:
            yield  # remote state: the deployment runs one run of a kind at a time (docs)
            return
        folder = Path(self.path("locks"))
        path = str((folder / f"{name}.lock").resolve())
        if _held.get(path) == threading.get_ident():
            yield
            return
        makedirs(self.fs, str(folder))
        fd = os.open(path, os.O_CREAT | os.O_RDWR, FILE_MODE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockHeld(name, path) from None
            _held[path] = threading.get_ident()
            try:
                yield
            finally:
                del _held[path]
        finally:
            os.close(fd)


def _mtime(info: dict) -> float:
    mtime = info.get("mtime") or 0
    return mtime.timestamp() if isinstance(mtime, dt.datetime) else float(mtime)


class LockHeld(RuntimeError):
    """Another run of the same kind holds the state store's lock (a normal situation, not a fault:
    the other run does the work)."""

    def __init__(self, name: str, path: str):
        self.name, self.path = name, path
        super().__init__(f"en anden {name} kører ({path} er låst); prøv igen når den er færdig")


_held: dict[str, int] = {}  # lock file → the thread of this process that holds it


def _parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    # zstd's fastest level: 10-15 % less CPU than polars' default level, the files no larger for
    # the state store's frames (issue 11: an intake writes two per file and a segment).
    frame.write_parquet(buffer, compression_level=1)
    return buffer.getvalue()


def json_bytes(value: object) -> bytes:
    """A JSON file of the state store as write_json writes it (for write_all of several)."""
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
