"""The one way to write a file: under a temporary name in the same folder, then an atomic rename.

Used for the exchange (local or SFTP) and for the state store alike, so that a reader never sees a
half-written file and a crash leaves either the old state or the new one (operations.md).

Locally, a write counts only once it is on disk (operations.md "Idempotency and audit": a power
cut loses nothing committed): the file is fsynced before the rename and its folder after it. What
we write locally is ours alone, whatever the umask: files 0600, folders 0700 (the state store holds
personal data). On an SFTP server the server's own rules apply."""

from __future__ import annotations

import errno
import os
import posixpath
import re
import signal
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

import fsspec
from fsspec.implementations.local import LocalFileSystem

TEMP_PREFIX = ".tmp-"
FILE_MODE = 0o600
FOLDER_MODE = 0o700

# Test hook (docs/decisions.md "Crash tests"): with this variable set to k, the process kills
# itself with SIGKILL at the k-th step of writing (a temporary file written, a rename done, a file
# removed), so that tests can crash a real run at any point. Read only when set; never set it in
# production.
KILL_AFTER_WRITES = "PENSIONSTRAEK_TEST_KILL_AFTER_WRITES"
_steps = 0


def crash_point() -> None:
    """One step of writing done: the place where the crash tests' kill hook may strike."""
    global _steps
    kill_after = os.environ.get(KILL_AFTER_WRITES)
    if kill_after:
        _steps += 1
        if _steps == int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)


# Only a hint of the real name goes into a temporary name, so that it stays within the file
# system's 255-byte limit even for a 255-character target name (exchange.md allows those).
_HINT_LENGTH = 48
_TEMPORARY = re.compile(re.escape(TEMP_PREFIX) + r"[0-9a-f]{32}-(.*)", re.DOTALL)


def temp_name_for(path: str) -> str:
    folder, name = posixpath.split(path)
    return posixpath.join(folder, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{hint_of(name)}")[:4096]


def hint_of(name: str) -> str:
    """The part of a file's name that temp_name_for puts into the names of its temporaries."""
    return name[:_HINT_LENGTH]


def hinted_name(temporary_name: str) -> str | None:
    """The hint of the real name in a temp_name_for name (a bare file name), or None if it is not one."""
    temporary = _TEMPORARY.fullmatch(temporary_name)
    return temporary.group(1) if temporary else None


def atomic_write(
    fs: fsspec.AbstractFileSystem, path: str, data: bytes, *, owner: tuple[int, int] | None = None
) -> None:
    """Write `data` to `path` through a temporary name and a rename that replaces any old file.

    Local files are 0600. `owner` (uid, gid) gives a local file to another user before it
    appears: the platform emulator hands a file to the account it lands in, as an SFTP server
    does, so that the account's own user can read it and nobody else can."""
    atomic_write_all(fs, [(path, data)], owner=owner)


def atomic_write_all(
    fs: fsspec.AbstractFileSystem,
    files: list[tuple[str, bytes]],
    *,
    owner: tuple[int, int] | None = None,
    made_in: Iterable[str] = (),
    same_as: Mapping[str, str] | None = None,
) -> None:
    """`atomic_write` of several files at once, for files whose order among themselves does not
    matter after a power cut (docs/decisions.md "Grouped fsyncs"): every file is written under its
    temporary name first, then all are fsynced (together: `_fsync_together`), renamed in the
    order given and their folders fsynced once each. On a journalling file system the first fsync commits the others' writes
    too, so a group costs about one fsync instead of two per file. A process killed half-way
    leaves the files before the rename it reached (each whole) and temporary files (removed later
    as any dead write's); when this returns, every file is on disk. `made_in`: the folders that
    hold a folder made for these files (`make_private_folders(..., unsynced=)`), fsynced with
    the files' own. `same_as`: path -> a file already on disk (durable) that holds exactly that
    path's `data`; locally the path becomes a second name of that file in its turn among the
    renames (a hard link, which appears whole at once: no bytes written, no temporary name),
    elsewhere `data` is written. Only for files never changed in place (every write here is a
    new file renamed into place), so that both names keep the same bytes."""
    local = isinstance(fs, LocalFileSystem)
    links = (same_as or {}) if local else {}
    if links and owner is not None:
        raise ValueError("a hard link shares its file's owner: same_as cannot hand a file to another owner")
    # No temporary name for a link: a temporary name's age is its file's, and a linked file may
    # be old, so a cleanup of dead writes could take a live one for a dead write's.
    temps = [None if path in links else temp_name_for(path) for path, _ in files]
    descriptors: list[int] = []  # of the local temporary files, open until fsynced
    renamed = 0
    try:
        for temp, (_, data) in zip(temps, files):
            if temp is None:
                continue
            if local:
                descriptors.append(_write_local(temp, data))
                if owner is not None:
                    os.chown(temp, *owner)
            else:
                with fs.open(temp, "wb") as f:
                    f.write(data)
            crash_point()
        _fsync_together(descriptors, os.fsync)
        _close(descriptors)
        for temp, (path, _) in zip(temps, files):
            if renamed:
                crash_point()
            if temp is None:
                _link(links[path], path)
            else:
                replace(fs, temp, path)
            renamed += 1
    except BaseException:
        _close(descriptors)
        for temp in temps[renamed:]:
            if temp is None:
                continue
            try:
                fs.rm_file(temp)
            except Exception:  # best effort (or never made): the temporary name is ignored by every reader
                pass
        raise
    if local:
        folders = list(dict.fromkeys([os.path.dirname(path) for path, _ in files] + list(made_in)))
        _fsync_together(folders, _fsync_folder)
    crash_point()


# A group's fsyncs are waited for side by side: one after another, each waits for a journal
# commit of its own; issued together, the file system commits them in a few (ext4's journal
# batches the fsyncs waiting at once). A national settlement waits ~0.25 s less; the CPU is the
# same. A pool per call, so that no thread outlives the write (nor a fork inherits a pool).
FSYNC_THREADS = 8


def _fsync_together(items: list, fsync: Callable[[object], None]) -> None:
    if len(items) < 2:
        for item in items:
            fsync(item)
        return
    with ThreadPoolExecutor(min(FSYNC_THREADS, len(items))) as pool:
        list(pool.map(fsync, items))  # raises the first failure, once all have finished


def _link(source: str, path: str) -> None:
    """`path` as a second name of the local file `source`, replacing any other file of that name."""
    try:
        os.link(source, path)
    except FileExistsError:
        if os.path.samefile(source, path):
            return  # linked already (by a run that died before it could go on)
        temp = temp_name_for(path)  # another file: replaced atomically, as any write
        os.link(source, temp)
        os.replace(temp, path)


def _close(descriptors: list[int]) -> None:
    while descriptors:
        os.close(descriptors.pop())


def _write_local(path: str, data: bytes) -> int:
    """A new file with `data`, not yet fsynced: its open descriptor (the caller fsyncs, closes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # os.open's mode passes through the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_folders(folder: str, unsynced: list[str] | None = None) -> None:
    """`folder` and any missing parents, each 0700 whatever the umask, each made durable, or,
    with `unsynced`, with the folders to fsync to make them durable added to it (the caller
    fsyncs them with what it writes into them: `atomic_write_all`'s `made_in`)."""
    folder = os.path.abspath(folder)
    if os.path.isdir(folder):
        return
    make_private_folders(os.path.dirname(folder), unsynced)
    try:
        os.mkdir(folder, FOLDER_MODE)
    except FileExistsError:
        return  # made by a concurrent writer meanwhile
    os.chmod(folder, FOLDER_MODE)
    if unsynced is None:
        _fsync_folder(os.path.dirname(folder))
    else:
        unsynced.append(os.path.dirname(folder))


def makedirs(fs: fsspec.AbstractFileSystem, folder: str, unsynced: list[str] | None = None) -> None:
    """fs.makedirs(exist_ok=True), private and durable on a local file system (`unsynced`: see
    `make_private_folders`)."""
    if isinstance(fs, LocalFileSystem):
        make_private_folders(folder, unsynced)
    else:
        fs.makedirs(folder, exist_ok=True)


def replace(fs: fsspec.AbstractFileSystem, source: str, target: str) -> None:
    """Rename `source` to `target`, replacing `target` when it exists, atomically."""
    if isinstance(fs, LocalFileSystem):
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
