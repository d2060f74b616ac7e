"""The one way to write a file: under a temporary name in the same folder, then an atomic rename.

Used for the exchange (local or SFTP) and for the state store alike, so that a reader never sees a
half-written file and a crash leaves either the old state or the new one (operations.md)."""

from __future__ import annotations

import errno
import posixpath
import sys
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem

TEMP_PREFIX = ".tmp-"


def temp_name_for(path: str) -> str:
    folder, name = posixpath.split(path)
    # Only a hint of the real name, so that the temporary name stays within the file system's
    # 255-byte limit even for a 255-character target name (exchange.md allows those).
    return posixpath.join(folder, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{name[:48]}")[:4096]


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary name and a rename that replaces any old file."""
    temp = temp_name_for(path)
    try:
        with fs.open(temp, "wb") as f:
            f.write(data)
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
    sshfs = sys.modules.get("sshfs")
    if sshfs is not None and isinstance(fs, sshfs.SSHFileSystem):
        _sftp_posix_rename(fs, source, target)
        return
    posix_rename = getattr(fs, "posix_rename", None)
    if posix_rename is not None:
        posix_rename(source, target)
        return
    fs.mv(source, target)


def _sftp_posix_rename(fs: fsspec.AbstractFileSystem, source: str, target: str) -> None:
    """SFTP's own rename refuses an existing target; OpenSSH's posix-rename extension replaces it
    atomically. Called directly, not through sshfs's `mv`, which falls back to a non-atomic `cp`
    over a shell (that an SFTP-only account does not have) when the extension is missing."""
    import asyncssh
    from fsspec.asyn import sync

    async def rename() -> None:
        async with fs.client.start_sftp_client() as sftp:
            await sftp.posix_rename(source, target)

    try:
        sync(fs.loop, rename)
    except asyncssh.SFTPNoSuchFile as exc:
        raise FileNotFoundError(errno.ENOENT, f"{source}: {exc.reason}") from exc
    except asyncssh.SFTPPermissionDenied as exc:
        raise PermissionError(errno.EACCES, f"{source} -> {target}: {exc.reason}") from exc
