"""The look-up snapshot the SF1411 service answers from, in the state store (sf1411-sf2610.md
"The snapshot that is answered from"; the choice of format is in docs/decisions.md):

    sf1411/snapshots/<P>/<id>/cpr.bin       the CPRs, sorted, 10 ASCII bytes each (binary search)
    sf1411/snapshots/<P>/<id>/offsets.bin   n+1 little-endian int64: where each row's record starts
    sf1411/snapshots/<P>/<id>/data.bin      the records: OPSLAG_FELTER texts joined by US (0x1f)
    sf1411/snapshots/<P>/<id>/meta.json     written last: the snapshot is complete when it exists
    sf1411/current.json                     the pointer: the newest period whose pensionssager passed

All three files are memory-mapped by the service, so a snapshot costs pages touched, not its size,
and a second one can be opened beside the first while it switches. Every file is written
atomically; a snapshot folder is never changed once written (a corrected P gets a new id), and the
pointer is replaced atomically, so a reader sees the old snapshot or the new one."""

from __future__ import annotations

import bisect
import datetime as dt
import io
import mmap
import sys
import uuid
from array import array
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from assets.sf1411_rules import OPSLAG_FELTER
from pipelines.state import StateStore

CURRENT = "sf1411/current.json"
SNAPSHOTS = "sf1411/snapshots"
_US = "\x1f"  # between fields; never in a value (XML 1.0 cannot carry it, so no answer could)
_CPR_BYTES = 10


# What no text of a snapshot may hold: &, <, > (the answers are not escaped) and the control
# characters XML 1.0 cannot carry, the separator 0x1f among them.
_UNSAFE = r"[\x00-\x08\x0b\x0c\x0e-\x1f&<>]"


def write_snapshot(state: StateStore, periode: str, opslag: pl.DataFrame) -> dict:
    """Write `opslag` (assets/sf1411_rules.py `opslagsraekker`, in any order) as P's snapshot,
    CPR-sorted; returns its meta. Does not move the pointer (`make_current`).

    All in polars, no Python loop over rows: the asset runs between P's contract passing and the
    first answer from P (sf1411-sf2610.md: answered within 10 s). Only what the answers depend on
    is judged again, each in one vectorised pass: the CPR keys and the text values."""
    if list(opslag.columns) != ["cpr", *OPSLAG_FELTER]:
        raise ValueError(f"look-up rows must have the columns cpr, {', '.join(OPSLAG_FELTER)}")
    cpr = pl.col("cpr")
    # Ten digits each, so their order as numbers is their order as text; sorting the key and the
    # joined record on an integer key is a fraction of sorting seventeen text columns (1.5 M).
    records = (
        opslag.lazy()
        .select(cpr, pl.concat_str([pl.col(f).fill_null("") for f in OPSLAG_FELTER], separator=_US).alias("record"))
        .sort(cpr.str.to_integer(strict=False), nulls_last=False, maintain_order=True)
        .collect()
    )
    checks = records.select(
        digits=((cpr.str.len_bytes() == _CPR_BYTES) & cpr.str.contains(r"^[0-9]+$")).all(),
        # Strictly increasing after the sort: no CPR twice.
        unique=(cpr > cpr.shift(1)).fill_null(True).all(),
    ).row(0, named=True) if records.height else {"digits": True, "unique": True}
    if not checks["digits"]:
        raise ValueError("every cpr of a look-up snapshot is ten digits (the register contract)")
    if not checks["unique"]:
        raise ValueError("look-up rows must have a unique cpr")
    unsafe = opslag.select(pl.any_horizontal(pl.col(f).str.contains(_UNSAFE).fill_null(False).any() for f in OPSLAG_FELTER))
    if opslag.height and unsafe.item():
        raise ValueError("a register text value holds &, <, > or a control character: the register contract is broken")
    offsets = array("q", [0])
    offsets.extend(records["record"].str.len_bytes().cast(pl.Int64).cum_sum().to_list())
    data = io.BytesIO()
    # The records back to back, raw (no quoting, no line ends): the bytes of data.bin.
    records.select("record").write_csv(data, include_header=False, quote_style="never", line_terminator="")
    if len(data.getbuffer()) != offsets[-1]:
        raise RuntimeError("the records written are not as long as counted")
    if sys.byteorder != "little":
        offsets.byteswap()
    snapshot_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    folder = f"{SNAPSHOTS}/{periode}/{snapshot_id}"
    state.write(f"{folder}/cpr.bin", records["cpr"].str.join("").item().encode("ascii") if records.height else b"")
    state.write(f"{folder}/offsets.bin", offsets.tobytes())
    state.write(f"{folder}/data.bin", data.getvalue())
    meta = {
        "periode": periode,
        "snapshot": folder,
        "rows": records.height,
        "felter": list(OPSLAG_FELTER),
        "bygget": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    state.write_json(f"{folder}/meta.json", meta)  # last: the commit point of the snapshot
    return meta


def current(state: StateStore) -> dict | None:
    """The pointer (None before the first snapshot)."""
    return state.read_json(CURRENT) if state.exists(CURRENT) else None


def make_current(state: StateStore, meta: dict) -> bool:
    """Point the service at `meta`'s snapshot when its period is the newest that has one (a
    corrected P replaces P; an older period leaves the pointer). Returns whether it moved."""
    pointer = current(state)
    if pointer is not None and pointer["periode"] > meta["periode"]:
        return False
    state.write_json(CURRENT, meta)
    return True


class _Keys:
    """The sorted CPR file as a sequence of 10-byte keys, for bisect."""

    def __init__(self, data: mmap.mmap | bytes):
        self.data = data

    def __len__(self) -> int:
        return len(self.data) // _CPR_BYTES

    def __getitem__(self, i: int) -> bytes:
        return self.data[i * _CPR_BYTES : (i + 1) * _CPR_BYTES]


def _map(path: Path) -> mmap.mmap | bytes:
    with open(path, "rb") as f:
        if path.stat().st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


@dataclass
class Snapshot:
    """One open look-up snapshot (read-only, memory-mapped; shared by concurrent requests)."""

    periode: str
    snapshot: str
    rows: int
    _keys: _Keys
    _offsets: memoryview
    _data: mmap.mmap | bytes

    @classmethod
    def open(cls, state: StateStore, meta: dict) -> "Snapshot":
        if meta.get("felter") != list(OPSLAG_FELTER):
            raise ValueError(f"{meta.get('snapshot')} was written for other fields; rebuild it (pensionstraek snapshot)")
        folder = Path(state.path(meta["snapshot"]))
        offsets_raw = (folder / "offsets.bin").read_bytes()  # 12 MB at national scale
        offsets = array("q")
        offsets.frombytes(offsets_raw)
        if sys.byteorder != "little":
            offsets.byteswap()
        keys = _Keys(_map(folder / "cpr.bin"))
        if len(keys) != meta["rows"] or len(offsets) != meta["rows"] + 1:
            raise ValueError(f"{meta['snapshot']} is incomplete: {len(keys)} keys for {meta['rows']} rows")
        return cls(
            periode=meta["periode"], snapshot=meta["snapshot"], rows=meta["rows"],
            _keys=keys, _offsets=memoryview(offsets), _data=_map(folder / "data.bin"),
        )

    def lookup(self, cpr: str) -> dict[str, str | None] | None:
        """The look-up row of `cpr` (element -> text, None where null), or None without a case."""
        key = cpr.encode("ascii", "replace")
        i = bisect.bisect_left(self._keys, key)
        if i >= len(self._keys) or self._keys[i] != key:
            return None
        values = self._data[self._offsets[i] : self._offsets[i + 1]].decode("utf-8").split(_US)
        return {felt: value or None for felt, value in zip(OPSLAG_FELTER, values)}
