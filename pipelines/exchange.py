"""UDK's account on Serviceplatformen's SFTP service (exchange.md "Accounts and folders").

The account is a root with two folders, `IN/` and `OUT/`. It is a local folder by default and a real
SFTP server in production (operations.md: PENSIONSTRAEK_EXCHANGE_URL, PENSIONSTRAEK_SFTP_KEY,
PENSIONSTRAEK_SFTP_KNOWN_HOSTS). `ExchangeResource.open()` gives an `ExchangeClient` for either; the
client speaks in paths relative to the account root (`IN/<name>`, `OUT/<name>`) and refuses any other.

Errors are split the way an operator needs them (operations.md "Dagster"): `ExchangeAccessError` for
what a person must fix (configuration, host key, login), never retried; `ExchangeError` for a
transient SFTP failure that outlived `retries` reconnects with exponential backoff."""

from __future__ import annotations

import itertools
import os
import posixpath
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import dagster as dg
import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import Field

from pipelines.config import (
    DEFAULTS,
    EXCHANGE_URL,
    SFTP_KEY,
    SFTP_KNOWN_HOSTS,
    ConfigError,
    ExchangeLocation,
    check_readable_file,
    env,
    parse_exchange_url,
)
from contracts.envelope import METADATA_SUFFIX, RECEIPT_SUFFIX, is_valid_envelope_name
from pipelines.storage import (
    TEMP_PREFIX,
    atomic_write_all,
    crash_point,
    hint_of,
    hinted_name,
    make_private_folders,
    replace,
)

T = TypeVar("T")

FOLDERS = ("IN", "OUT")

CONNECT_TIMEOUT_SECONDS = 15


class ExchangeError(Exception):
    """A transient failure of the exchange that outlived the retries (the next run may succeed)."""

    def __init__(self, message: str, attempts: int = 1):
        super().__init__(message)
        self.attempts = attempts


class ExchangeAccessError(ExchangeError, ConfigError):
    """Configuration, host key or login is wrong: retrying cannot help; the message names the
    variable to fix."""


@dataclass(frozen=True)
class Delivery:
    """A complete delivery in IN/: the data file and its `.metadata` (exchange.md "Reading")."""

    name: str  # the data file's name in IN/
    size: int  # bytes of IN/<name>
    received: datetime  # sf6110.md "Received time": mtime of IN/<name>.metadata, UTC, whole seconds


@dataclass(frozen=True)
class Stray:
    """An entry in IN/ that cannot be (part of) a delivery or a receipt (exchange.md "Nothing in
    IN/ is ignored silently"). `regular`: a plain file (not a link, folder, FIFO…) that can be read."""

    name: str
    reason: str
    regular: bool
    size: int
    mtime: datetime


@dataclass(frozen=True)
class _Entry:
    size: int
    mtime: datetime
    kind: str  # "file" (regular, not a link), "link", "folder" or "other" (FIFO, socket, device)


_KIND_TEXT = {"link": "et symbolsk link (følges aldrig)", "folder": "en mappe", "other": "ikke en almindelig fil"}


def account_path(path: str) -> str:
    """`path` when it is `IN`, `OUT`, `IN/<name>` or `OUT/<name>` with a plain name; otherwise
    ValueError, so that a name from outside never reaches beyond the account's two folders."""
    parts = path.split("/") if isinstance(path, str) else []
    folder_only = len(parts) == 1
    plain_name = len(parts) == 2 and parts[1] not in ("", ".", "..") and not set(parts[1]) & {"\\", "\0"}
    if not parts or parts[0] not in FOLDERS or not (folder_only or plain_name):
        raise ValueError(
            f"{path!r} is not a path inside the exchange account: expected IN/<name> or OUT/<name>"
        )
    return path


def _is_temporary(name: str) -> bool:
    """A file still being written (pipelines.storage.atomic_write): never a delivery or receipt."""
    return name.startswith(TEMP_PREFIX)


def _utc(value: datetime | float) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(value, tz=UTC)


class ExchangeClient:
    """An open account: IN/ and OUT/ under `root` on a file system (local, or SFTP via sshfs).

    Every operation goes through `_run`, which on an SFTP connection failure reconnects and tries
    again with exponential backoff, at most `retries` times."""

    def __init__(self, root: str, *, retries: int = 0, backoff_seconds: float = 0.0, where: str = ""):
        self.root = root.rstrip("/") or "/"
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.where = where or root
        self.connections = 0  # how many times a connection was opened (reconnects included)
        self._fs: fsspec.AbstractFileSystem | None = None
        self._closed = False
        # One operation at a time on the connection: intake sends from a thread of its own while
        # it reads the next deliveries (pipelines/intake.py `_Answerer`), and a reconnect must not
        # replace the connection under another operation.
        self._one_at_a_time = threading.RLock()

    # --- the listing the pipeline works from ----------------------------------------------------

    def list_deliveries(self) -> list[Delivery]:
        """Complete deliveries in IN/, in the order intake handles them: (received, name as bytes)."""
        entries = {
            name: entry for name, entry in self._entries("IN").items() if not _is_temporary(name) and entry.kind == "file"
        }
        deliveries = [
            Delivery(name=name, size=entry.size, received=metadata.mtime.replace(microsecond=0))
            for name, entry in entries.items()
            if is_valid_envelope_name(name) and (metadata := entries.get(name + METADATA_SUFFIX))
        ]
        return sorted(deliveries, key=lambda d: (d.received, d.name.encode("utf-8")))

    def list_receipts(self) -> list[str]:
        """Names of the technical receipts in IN/ (exchange.md "Technical receipt")."""
        return sorted(
            name
            for name, entry in self._entries("IN").items()
            if not _is_temporary(name)
            and entry.kind == "file"
            and name.endswith(RECEIPT_SUFFIX)
            and is_valid_envelope_name(name[: -len(RECEIPT_SUFFIX)])
        )

    def list_strays(self, orphan_after_seconds: float, now: datetime | None = None) -> list[Stray]:
        """Every entry of IN/ that is neither a delivery, nor a receipt, nor one still arriving
        (data whose metadata may follow, a temporary name), by name. Links are never followed: the
        listing's own entry type is used (lstat locally, the SFTP directory listing's attributes)."""
        now = now or datetime.now(UTC)
        entries = self._entries("IN")
        regular = {name for name, entry in entries.items() if entry.kind == "file"}
        strays = []
        for name, entry in sorted(entries.items()):
            old = (now - entry.mtime).total_seconds() > orphan_after_seconds
            base = name.removesuffix(METADATA_SUFFIX).removesuffix(RECEIPT_SUFFIX)
            if _is_temporary(name):
                reason = "en midlertidig fil ingen gør færdig" if old else None
            elif entry.kind != "file":
                reason = _KIND_TEXT[entry.kind]
            elif not is_valid_envelope_name(base):
                reason = "navnet følger ikke reglerne for filnavne (exchange.md)"
            elif name.endswith(RECEIPT_SUFFIX):
                reason = None
            elif name.endswith(METADATA_SUFFIX):
                reason = None if base in regular else "metadata uden data"
            elif name + METADATA_SUFFIX in regular:
                reason = None
            else:
                reason = f"data uden metadata i over {orphan_after_seconds:.0f} s" if old else None
            if reason is not None:
                strays.append(Stray(name, reason, entry.kind == "file", entry.size, entry.mtime))
        return strays

    def listdir(self, folder: str) -> list[str]:
        """Plain names of everything in IN or OUT, temporary names included."""
        real = self._real(self._folder(folder))
        listing = self._run(f"list {folder}", lambda fs: fs.ls(real, detail=False))
        return sorted(posixpath.basename(path.rstrip("/")) for path in listing)

    # --- files ----------------------------------------------------------------------------------

    def read(self, path: str) -> bytes:
        real = self._real(account_path(path))
        return self._run(f"read {path}", lambda fs: fs.cat_file(real))

    def write(self, path: str, data: bytes) -> None:
        """Atomically: a reader sees the old file or the new one, never part of it (operations.md)."""
        self.write_all({path: data})

    def write_all(self, files: dict[str, bytes]) -> None:
        """`write` of several files with one round of fsyncs (pipelines.storage.atomic_write_all):
        only for files that may appear in any order among themselves (the data files of a group
        sent together; their triggers after them, by a second call)."""
        if not files:
            return
        real = [(self._real(self._file(path)), data) for path, data in files.items()]

        def write(fs: fsspec.AbstractFileSystem) -> None:
            # A write cut off with its connection (or its server) could not remove its temporary
            # file: the retry, or the next run, removes it first, so no orphan stays in OUT/.
            _remove_temporaries_of(fs, [path for path, _ in real])
            atomic_write_all(fs, real)

        self._run(f"write {', '.join(files)}", write)

    def rename(self, src: str, dst: str) -> None:
        """Rename, replacing `dst` when it exists (POSIX semantics on both file systems)."""
        source, target = self._real(self._file(src)), self._real(self._file(dst))

        def rename_again(fs: fsspec.AbstractFileSystem) -> None:
            # The connection may have dropped after the server renamed but before it answered.
            if not _exists(fs, source) and _exists(fs, target):
                return
            replace(fs, source, target)

        self._run(f"rename {src} to {dst}", lambda fs: replace(fs, source, target), again=rename_again)

    def remove(self, path: str) -> None:
        """Remove a file; nothing to do when it is already gone."""
        real = self._real(self._file(path))

        def remove(fs: fsspec.AbstractFileSystem) -> None:
            try:
                fs.rm_file(real)
            except FileNotFoundError:
                pass

        self._run(f"remove {path}", remove)
        crash_point()

    def remove_orphaned_temporaries(self, folder: str, older_than_seconds: float) -> list[str]:
        """Remove the temporary files of writes that died (atomic_write's TEMP_PREFIX names) not
        touched for `older_than_seconds`; the paths removed."""
        now = datetime.now(UTC)
        removed = []
        for name, entry in self._entries(folder).items():
            if _is_temporary(name) and entry.kind == "file" and (now - entry.mtime).total_seconds() > older_than_seconds:
                self.remove(f"{folder}/{name}")
                removed.append(f"{folder}/{name}")
        return removed

    def exists(self, path: str) -> bool:
        real = self._real(account_path(path))
        return self._run(f"look for {path}", lambda fs: _exists(fs, real))

    def size(self, path: str) -> int:
        real = self._real(account_path(path))
        return int(self._run(f"stat {path}", lambda fs: fs.info(real))["size"])

    def mtime(self, path: str) -> datetime:
        real = self._real(account_path(path))
        return _utc(self._run(f"stat {path}", lambda fs: fs.info(real))["mtime"])

    # --- connection -----------------------------------------------------------------------------

    def connect(self) -> "ExchangeClient":
        """Open the connection now (otherwise the first operation does)."""
        self._run("connect", lambda fs: None)
        return self

    def close(self) -> None:
        self._closed = True
        self._drop()

    def __enter__(self) -> "ExchangeClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where!r})"

    # --- what a kind of file system supplies ----------------------------------------------------

    def _connect(self) -> fsspec.AbstractFileSystem:
        raise NotImplementedError

    def _disconnect(self, fs: fsspec.AbstractFileSystem) -> None:
        pass

    def _is_transient(self, exc: BaseException) -> bool:
        return False

    def _refusal(self, exc: BaseException, what: str) -> ExchangeError | None:
        """The server refused `what` for a reason a person must remove: the error to raise in its
        place, naming what to fix; None to raise `exc` as it is (a local folder: its OSError)."""
        return None

    # --- machinery ------------------------------------------------------------------------------

    def _run(
        self,
        what: str,
        operation: Callable[[fsspec.AbstractFileSystem], T],
        again: Callable[[fsspec.AbstractFileSystem], T] | None = None,
    ) -> T:
        """Run `operation` on the connection; on a transient failure drop the connection, wait,
        reconnect and run `again` (default: the operation once more)."""
        with self._one_at_a_time:
            return self._run_alone(what, operation, again)

    def _run_alone(
        self,
        what: str,
        operation: Callable[[fsspec.AbstractFileSystem], T],
        again: Callable[[fsspec.AbstractFileSystem], T] | None,
    ) -> T:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        for attempt in itertools.count(1):
            try:
                if self._fs is None:
                    self._fs = self._connect()
                    self.connections += 1
                return (operation if attempt == 1 else again or operation)(self._fs)
            except ExchangeError as exc:
                exc.attempts = attempt
                raise
            except Exception as exc:
                if not self._is_transient(exc):
                    refused = self._refusal(exc, what)
                    if refused is not None:
                        refused.attempts = attempt
                        raise refused from exc
                    raise
                self._drop()
                if attempt > self.retries:
                    raise ExchangeError(
                        f"{self.where}: {what} failed {attempt} times, the last time with "
                        f"{type(exc).__name__}: {exc}",
                        attempts=attempt,
                    ) from exc
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        fs, self._fs = self._fs, None
        if fs is not None:
            self._disconnect(fs)

    def _entries(self, folder: str) -> dict[str, _Entry]:
        """Everything in a folder, by plain name, from one directory listing, each with the type
        of the entry itself: a link is a link, whatever it points to (or whether it points at all)."""
        real = self._real(self._folder(folder))
        listing = self._run(f"list {folder}", lambda fs: fs.ls(real, detail=True))
        return {posixpath.basename(info["name"].rstrip("/")): _entry(info) for info in listing}

    def _real(self, path: str) -> str:
        return posixpath.join(self.root, path)

    @staticmethod
    def _folder(path: str) -> str:
        if account_path(path) not in FOLDERS:
            raise ValueError(f"{path!r} is not a folder of the exchange account: expected IN or OUT")
        return path

    @staticmethod
    def _file(path: str) -> str:
        if account_path(path) in FOLDERS:
            raise ValueError(f"{path!r} is a folder of the exchange account, not a file in it")
        return path


def _entry(info: dict) -> _Entry:
    # fsspec's local listing marks a link with `islink` (and types it "other" by lstat); sshfs
    # types it "link" from the SFTP listing's attributes (which OpenSSH takes by lstat).
    if info.get("islink") or info.get("type") == "link":
        kind = "link"
    else:
        kind = {"file": "file", "directory": "folder"}.get(info.get("type"), "other")
    mtime = info.get("mtime") or 0
    return _Entry(size=int(info.get("size") or 0), mtime=_utc(mtime), kind=kind)


def _folder_of(what: str) -> str:
    """`IN` or `OUT` from an operation's description ("write OUT/x.xml"), else the account root."""
    for word in what.split():
        folder = word.split("/")[0]
        if folder in FOLDERS:
            return folder
    return "IN/ and OUT"


def _remove_temporaries_of(fs: fsspec.AbstractFileSystem, paths: list[str]) -> None:
    """Remove the temporary files interrupted `atomic_write`s of `paths` left next to them (their
    names are pipelines.storage.temp_name_for's: the prefix, 32 hex digits, a hint of the name);
    each folder is listed once."""
    by_folder: dict[str, list[str]] = {}
    for path in paths:
        folder, name = posixpath.split(path)
        by_folder.setdefault(folder, []).append(name)
    for folder, names in by_folder.items():
        _remove_temporaries_in(fs, folder, names)


def _remove_temporaries_in(fs: fsspec.AbstractFileSystem, folder: str, names: list[str]) -> None:
    # The hints looked up in a set: a regular expression of the names made for each write cost
    # more than the write's listing (a send's hundreds of names, compiled anew every time).
    hints = {hint_of(name) for name in names}
    # Locally the folder's names straight from the OS: fsspec's listing makes an entry per file,
    # and a period's send lists OUT/ once per file (hundreds of files: a second per period).
    entries = (
        [posixpath.join(folder, n) for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)]
        if isinstance(fs, LocalFileSystem)
        else fs.ls(folder, detail=False)
    )
    for entry in entries:
        hint = hinted_name(posixpath.basename(entry.rstrip("/")))
        if hint is not None and hint in hints:
            try:
                fs.rm_file(entry)
            except FileNotFoundError:
                pass


def _exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    # Not fs.exists: some implementations answer False for any error, a dropped connection included.
    try:
        fs.info(path)
    except FileNotFoundError:
        return False
    return True


class LocalExchangeClient(ExchangeClient):
    """The account as a local folder (the default, the demo, the emulator's tree)."""

    def __init__(self, root: str):
        absolute = os.path.abspath(root)
        super().__init__(absolute, where=absolute)

    def _connect(self) -> fsspec.AbstractFileSystem:
        for folder in FOLDERS:
            make_private_folders(os.path.join(self.root, folder))
        return LocalFileSystem()


class SftpExchangeClient(ExchangeClient):
    """The account on an SFTP server, through sshfs (asyncssh), host key always verified."""

    def __init__(
        self,
        location: ExchangeLocation,
        key_file: str,
        known_hosts_file: str,
        *,
        retries: int,
        backoff_seconds: float,
    ):
        super().__init__(
            location.path,
            retries=retries,
            backoff_seconds=backoff_seconds,
            where=f"sftp://{location.username}@{location.host}:{location.port}{location.path}",
        )
        self.location = location
        self.key_file = key_file
        self.known_hosts_file = known_hosts_file
        # Read before any connection, so a bad file is named at once (operations.md "Configuration").
        self._key = _read_key(key_file)
        self._known_hosts = _read_known_hosts(known_hosts_file)

    def _connect(self) -> fsspec.AbstractFileSystem:
        import sshfs

        try:
            fs = sshfs.SSHFileSystem(
                self.location.host,
                port=self.location.port,
                username=self.location.username,
                client_keys=[self._key],
                # Always given: sshfs turns host-key verification off when known_hosts is absent.
                known_hosts=self._known_hosts,
                skip_instance_cache=True,  # a dropped connection must not stay cached
                agent_path=None,
                config=None,
                preferred_auth="publickey",
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
            )
        except Exception as exc:
            access = self._access_error(exc)
            if access is not None:
                raise access from exc
            raise
        try:
            self._check_folders(fs)
        except BaseException:
            self._disconnect(fs)
            raise
        return fs

    def _check_folders(self, fs: fsspec.AbstractFileSystem) -> None:
        import asyncssh

        try:
            present = {posixpath.basename(p.rstrip("/")) for p in fs.ls(self.root, detail=False)}
        except (FileNotFoundError, asyncssh.SFTPError) as exc:
            if self._is_transient(exc):
                raise
            raise ExchangeAccessError(
                f"{EXCHANGE_URL}={self.where!r}: the account folder {self.root!r} cannot be listed on "
                f"the server ({exc}); the URL's path must be the account's folder, e.g. /udk-pension"
            ) from exc
        missing = [folder for folder in FOLDERS if folder not in present]
        if missing:
            raise ExchangeAccessError(
                f"{EXCHANGE_URL}={self.where!r}: {self.root!r} has no {' or '.join(missing)} folder; "
                "the URL's path must be the account's folder, which holds IN/ and OUT/"
            )

    def _disconnect(self, fs: fsspec.AbstractFileSystem) -> None:
        from fsspec.asyn import sync

        async def close(connection) -> None:
            connection.close()
            await connection.wait_closed()

        try:
            sync(fs.loop, close, fs.client, timeout=5)
        except Exception:  # the connection is being dropped anyway
            pass

    def _access_error(self, exc: BaseException) -> ExchangeAccessError | None:
        import asyncssh

        server = f"{self.location.host}:{self.location.port}"
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return ExchangeAccessError(
                f"host key of {server} is not in {SFTP_KNOWN_HOSTS} ({self.known_hosts_file}): check the "
                "server's key fingerprint with its operator and add it; never connect without verifying it"
            )
        if isinstance(exc, (asyncssh.PermissionDenied, PermissionError)):  # sshfs makes it PermissionError
            return ExchangeAccessError(
                f"{server} refused login as {self.location.username!r} with the key in {SFTP_KEY} "
                f"({self.key_file}): is its public key authorised for that account?"
            )
        refused = (asyncssh.IllegalUserName, asyncssh.KeyExchangeFailed, asyncssh.ProtocolNotSupported)
        if isinstance(exc, refused):
            return ExchangeAccessError(
                f"{EXCHANGE_URL}={self.where!r}: {server} refused the connection: {exc}"
            )
        return None

    def _refusal(self, exc: BaseException, what: str) -> ExchangeError | None:
        import asyncssh

        account = self.location.username
        # After login, PermissionError is the server's "permission denied" on a path (sshfs and
        # pipelines.storage turn SFTPPermissionDenied into it for some operations, not for all).
        if isinstance(exc, (asyncssh.SFTPPermissionDenied, PermissionError)):
            return ExchangeAccessError(
                f"{self.where}: {what} refused by the server: permission denied for the account "
                f"{account!r}; the SFTP service must give it read and write access to {_folder_of(what)}/"
            )
        if isinstance(exc, (asyncssh.SFTPFailure, asyncssh.SFTPNoSpaceOnFilesystem, asyncssh.SFTPQuotaExceeded)):
            # OpenSSH answers a full disk or quota with the bare SFTP "Failure" (protocol 3 has no
            # code for it): say what it usually means, and that the next run tries again.
            return ExchangeError(
                f"{self.where}: {what} failed on the server ({type(exc).__name__}: {exc.reason or 'no reason'}); "
                f"usually the account's disk is full or over quota: free space for {account!r}, the next run tries again"
            )
        return None

    def _is_transient(self, exc: BaseException) -> bool:
        import asyncssh
        from fsspec.asyn import FSTimeoutError

        if self._access_error(exc) is not None:
            return False  # PermissionError included: at login a wrong key, after it a refused path
        if isinstance(exc, asyncssh.SFTPError):
            return isinstance(exc, (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection))
        if isinstance(exc, (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)):
            return False
        # OSError: refused, reset, broken pipe, timeout, unreachable network, name resolution.
        # ChannelOpenError: "SSH connection closed" when a channel is asked of a dead connection.
        return isinstance(
            exc, (OSError, FSTimeoutError, EOFError, asyncssh.DisconnectError, asyncssh.ChannelOpenError)
        )


def _read_key(path: str):
    import asyncssh

    try:
        check_readable_file(SFTP_KEY, path, "den private nøgle til UDK's SFTP-konto")
        return asyncssh.read_private_key(path)
    except ConfigError as exc:
        raise ExchangeAccessError(str(exc)) from exc
    except (OSError, asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        raise ExchangeAccessError(
            f"{SFTP_KEY}={path!r} is not a usable private key ({exc}): give an OpenSSH private key "
            "file without a passphrase"
        ) from exc


def _read_known_hosts(path: str):
    import asyncssh

    try:
        check_readable_file(SFTP_KNOWN_HOSTS, path, "known_hosts-filen med SFTP-serverens værtsnøgle")
        return asyncssh.read_known_hosts(path)
    except ConfigError as exc:
        raise ExchangeAccessError(str(exc)) from exc
    except (OSError, ValueError) as exc:
        raise ExchangeAccessError(
            f"{SFTP_KNOWN_HOSTS}={path!r} is not a known_hosts file ({exc}): give lines like "
            "'[host]:port ssh-ed25519 AAAA...'"
        ) from exc


class ExchangeResource(dg.ConfigurableResource):
    """UDK's account on the SFTP service: a folder, or sftp://user@host:port/path (operations.md)."""

    url: str = Field(
        default=DEFAULTS[EXCHANGE_URL],
        description=f"{EXCHANGE_URL}: a folder, or sftp://user@host:port/path (absolute path of the account)",
    )
    sftp_key: str = Field(default="", description=f"{SFTP_KEY}: private key file for sftp://")
    known_hosts: str = Field(
        default="", description=f"{SFTP_KNOWN_HOSTS}: known_hosts file, required for sftp://"
    )
    retries: int = Field(default=4, description="reconnects after a transient SFTP failure")
    backoff_seconds: float = Field(
        default=0.5, description="first wait before a reconnect; doubles each time"
    )

    def open(self) -> ExchangeClient:
        """A new, connected client (a new SSH connection for sftp://); close it when done."""
        try:
            location = parse_exchange_url(self.url)
        except ConfigError as exc:
            raise ExchangeAccessError(str(exc)) from exc
        if location.scheme == "file":
            client: ExchangeClient = LocalExchangeClient(location.path)
        else:
            client = SftpExchangeClient(
                location,
                self.sftp_key,
                self.known_hosts,
                retries=self.retries,
                backoff_seconds=self.backoff_seconds,
            )
        return client.connect()

    @classmethod
    def from_env(cls) -> "ExchangeResource":
        return cls(url=env(EXCHANGE_URL), sftp_key=env(SFTP_KEY), known_hosts=env(SFTP_KNOWN_HOSTS))
