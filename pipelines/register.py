"""Reading UDK Pension's register (register.md): `<url>/<table>/<P>.parquet`, one file per period.

The register is owned upstream, so a file that is missing, unreadable or of the wrong column types
stops the run with a `RegisterError` that names the file and PENSIONSTRAEK_REGISTER_URL; nothing
is guessed or repaired. Whether the values keep their contract is judged separately
(`contracts.register`)."""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import dagster as dg
import fsspec
from fsspec.implementations.local import LocalFileSystem
import polars as pl

from contracts.cpr import mask_text
from contracts.register import SCHEMAS
from pipelines.calendar import parse_periode
from pipelines.config import REGISTER_URL, check_local_or_url, env

TABLES = tuple(SCHEMAS)  # pensionssager, pensionsberegning
_FILE = re.compile(r"([0-9]{4}-(?:0[1-9]|1[0-2]))\.parquet")

# A settlement run reads P's two files in about ten places (assets, checks, SF2601); at national
# scale decoding 1.5 million rows each time was a large part of the run (issue 11). A local file
# read before is taken from here while it is provably the same file: same inode, size, mtime and
# ctime (in ns), and the same last 64 KiB (Parquet's footer, which describes every row group), so
# a file rewritten in place within the clock's resolution is still read again. Remote files are
# always read. A few files only, so a long-running process does not hold every period.
_CACHE_FILES = 4
_TAIL_BYTES = 64 * 1024
_loaded: OrderedDict[tuple, RegisterFile] = OrderedDict()
_loaded_lock = threading.Lock()


class RegisterError(Exception):
    """The register cannot be used as it is; the message names the file and the variable."""


@dataclass(frozen=True)
class RegisterFile:
    table: str
    periode: str
    path: str  # as the file system names it
    sha256: str  # of the file's bytes, for the audit trail
    frame: pl.DataFrame  # with exactly the contract's columns (or those asked for) and dtypes


class RegisterResource(dg.ConfigurableResource):
    """PENSIONSTRAEK_REGISTER_URL: a folder or an fsspec URL holding `pensionssager/` and
    `pensionsberegning/`."""

    url: str = "./var/register"

    @classmethod
    def from_env(cls) -> RegisterResource:
        return cls(url=check_local_or_url(REGISTER_URL, env(REGISTER_URL)))

    def _fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        return fsspec.core.url_to_fs(self.url)

    def path(self, table: str, periode: str) -> str:
        _check_table(table)
        parse_periode(periode)
        return posixpath.join(self._fs()[1], table, f"{periode}.parquet")

    def load(self, table: str, periode: str, columns: tuple[str, ...] | None = None) -> RegisterFile:
        """The file of `table` for P, read and held to the contract's column types. `columns`:
        only these of the contract's columns are decoded; the file is refused exactly as when
        all are (the others' types are judged from its footer, see `_decode`)."""
        fs, _ = self._fs()
        path = self.path(table, periode)
        where = f"{REGISTER_URL}={self.url!r}"
        try:
            exists = fs.exists(path)
        except Exception as exc:
            raise RegisterError(f"the register at {where} cannot be reached: {_reason(exc)}") from exc
        if not exists:
            raise RegisterError(
                f"registeret har ingen {table} for {periode} ({path} findes ikke): "
                f"tjek {REGISTER_URL} eller bed UDK Pension om filen"
            )
        identity = _local_identity(fs, path)
        key = None if identity is None else (*identity, columns)
        if key is not None:
            with _loaded_lock:
                if key in _loaded:
                    _loaded.move_to_end(key)
                    return _loaded[key]
        try:
            with fs.open(path, "rb") as f:
                data = f.read()
        except Exception as exc:
            raise RegisterError(f"{path} cannot be read ({where}): {_reason(exc)}") from exc
        loaded = RegisterFile(
            table=table,
            periode=periode,
            path=path,
            sha256=hashlib.sha256(data).hexdigest(),
            frame=_decode(data, SCHEMAS[table], columns, path, where),
        )
        # The identity taken before the read: a file replaced meanwhile is read again next time.
        if key is not None and identity == _local_identity(fs, path):
            with _loaded_lock:
                _loaded[key] = loaded
                while len(_loaded) > _CACHE_FILES:
                    _loaded.popitem(last=False)
        return loaded

    def read(self, table: str, periode: str, columns: tuple[str, ...] | None = None) -> pl.DataFrame:
        return self.load(table, periode, columns).frame

    def periods(self, table: str) -> list[str]:
        """The periods for which `table` has a file, oldest first."""
        _check_table(table)
        fs, root = self._fs()
        folder = posixpath.join(root, table)
        try:
            names = [posixpath.basename(p) for p in fs.ls(folder, detail=False)] if fs.isdir(folder) else []
        except Exception as exc:
            raise RegisterError(f"{folder} cannot be listed ({REGISTER_URL}={self.url!r}): {_reason(exc)}") from exc
        return sorted(m.group(1) for m in map(_FILE.fullmatch, names) if m)

    def newest_pensionssager(self, columns: tuple[str, ...] | None = None) -> tuple[str, pl.DataFrame]:
        """sf6110.md: intake judges U03–U05 on the newest snapshot in the register (`columns`: see
        `load`)."""
        periods = self.periods("pensionssager")
        if not periods:
            raise RegisterError(
                f"no pensionssager snapshot in {self.url}: set {REGISTER_URL} to the register "
                "(…/pensionssager/YYYY-MM.parquet) or generate one with `pensionstraek generate`"
            )
        return periods[-1], self.read("pensionssager", periods[-1], columns)


def _local_identity(fs: fsspec.AbstractFileSystem, path: str) -> tuple | None:
    """What tells a local file's content apart without reading it all (see _loaded); None for a
    remote file system or a file that cannot be examined."""
    if not isinstance(fs, LocalFileSystem):
        return None
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            f.seek(max(0, st.st_size - _TAIL_BYTES))
            tail = f.read()
    except OSError:
        return None
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, hashlib.sha256(tail).digest())


def _decode(data: bytes, schema: pl.Schema, columns: tuple[str, ...] | None, path: str, where: str) -> pl.DataFrame:
    """The Parquet file `data` held to `schema` (`conform`), all of it or only `columns`. Without
    the others, the file is refused as with them: their names and types are judged from the
    footer, and a column whose type differs from the contract's (whose values may not fit, say a
    Decimal(9,2) in Decimal(5,2)) is decoded too. Issue 11: intake judges on 5 of the 19 columns
    of 1.5 million cases: decoding them all took 0.23 s of CPU in every intake, these 0.09 s."""
    unknown = sorted(set(columns or ()) - set(schema))
    if unknown:
        raise ValueError(f"the register contract has no column(s) {', '.join(unknown)} (register.md)")
    try:
        if columns is None:
            return conform(pl.read_parquet(io.BytesIO(data)), schema, f"{path} ({where})")
        stored = pl.read_parquet_schema(io.BytesIO(data))
        _check_types(stored, schema, f"{path} ({where})")
        decoded = [name for name in schema if name in columns or stored[name] != schema[name]]
        frame = pl.read_parquet(io.BytesIO(data), columns=decoded)
    except RegisterError:
        raise
    except Exception as exc:
        raise RegisterError(
            f"{path} is not a readable Parquet file ({where}): {_reason(exc)}; "
            "ask UDK Pension to deliver it again"
        ) from exc
    return conform(frame, pl.Schema({name: schema[name] for name in decoded}), f"{path} ({where})").select(
        name for name in schema if name in columns
    )


def conform(frame: pl.DataFrame, schema: pl.Schema, where: str) -> pl.DataFrame:
    """The contract's columns in its order and dtypes. Only widenings that cannot change a value
    are made (Int32 -> Int64, Categorical -> String, an all-null column); anything else, such as a
    kommunekode stored as an integer (0101 would become 101), is a RegisterError."""
    _check_types(frame.schema, schema, where)
    try:
        return frame.select([pl.col(name).cast(dtype, strict=True) for name, dtype in schema.items()])
    except pl.exceptions.PolarsError as exc:  # e.g. a Decimal(9,2) value that does not fit (5,2)
        raise RegisterError(f"{where}: values do not fit the column types: {_reason(exc)}") from exc


def _check_types(actual: pl.Schema, schema: pl.Schema, where: str) -> None:
    missing = [name for name in schema if name not in actual]
    if missing:
        raise RegisterError(f"{where}: missing column(s) {', '.join(missing)} (register.md)")
    wrong = [
        f"{name} is {actual[name]}, expected {dtype}" for name, dtype in schema.items() if not _lossless(actual[name], dtype)
    ]
    if wrong:
        raise RegisterError(f"{where}: wrong column type(s): {'; '.join(wrong)} (register.md)")


def _lossless(actual: pl.DataType, expected: pl.DataType) -> bool:
    if actual == expected or actual == pl.Null:
        return True
    if expected == pl.Int64:
        return actual in (pl.Int8, pl.Int16, pl.Int32, pl.UInt8, pl.UInt16, pl.UInt32)
    if expected == pl.String:
        return isinstance(actual, (pl.Categorical, pl.Enum))
    if isinstance(expected, pl.Decimal):
        return isinstance(actual, pl.Decimal) and actual.scale <= expected.scale
    return False


def _check_table(table: str) -> None:
    if table not in SCHEMAS:
        raise ValueError(f"unknown register table {table!r}: one of {', '.join(TABLES)}")


def _reason(exc: BaseException) -> str:
    """The first line of an error, short and with anything CPR-like masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return mask_text(text[:300])
