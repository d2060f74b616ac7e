"""The one way to write a file: under a temporary name in the same folder, then an atomic rename.

Used for the exchange (local or SFTP) and for the state store alike, so that a reader never sees a
half-written file and a crash leaves either the old state or the new one (operations.md)."""

from __future__ import annotations

import posixpath
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem

TEMP_PREFIX = ".tmp-"


def temp_name_for(path: str) -> str:
    folder, name = posixpath.split(path)
    return posixpath.join(folder, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{name}")[:4096]


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary name and a rename that replaces any old file."""
    temp = temp_name_for(path)
    with fs.open(temp, "wb") as f:
        f.write(data)
    try:
        replace(fs, temp, path)
    except BaseException:
        try:
            fs.rm_file(temp)
        except Exception:  # best effort: the temporary name is ignored by every reader
            pass
        raise


def replace(fs: fsspec.AbstractFileSystem, source: str, target: str) -> None:
    """Rename `source` to `target`, replacing `target` when it exists, atomically."""
    if isinstance(fs, LocalFileSystem):
        import os

        os.replace(source, target)
        return
    posix_rename = getattr(fs, "posix_rename", None)
    if posix_rename is not None:
        posix_rename(source, target)
        return
    fs.mv(source, target)
