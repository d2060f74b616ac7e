"""A real OpenSSH sshd on 127.0.0.1 that serves the emulator's tree `<root>/<account>/IN|OUT` over SFTP.

The server is SFTP-only and chrooted, the way Serviceplatformen's accounts are: each account logs in
with its own key, lands in `/<account>` and sees nothing but the exchange root. The tests start it
once per session (`tests/conftest.py`) and stop exactly the process they started.

Needs root (chroot, Unix accounts) and /usr/sbin/sshd; `running_sftp_server()` fails the session
when those are missing under CI=true and skips otherwise."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipelines.exchange import ExchangeResource
from tests.processes import stop_process

SSHD = Path("/usr/sbin/sshd")
ACCOUNTS = ("udk-pension", "kp", "ky")
HOST = "127.0.0.1"

# sshd refuses a ChrootDirectory with a component that is not root-owned or is group/world
# writable, so the tree cannot live under /tmp; the first of these that qualifies holds it.
_CHROOT_PARENTS = ("/run", "/var/lib", "/srv", "/opt")


@dataclass
class SftpServer:
    """A running sshd; `root` is the exchange root, one folder per account."""

    base: Path
    root: Path
    port: int
    known_hosts: Path
    process: subprocess.Popen
    log: Path
    host: str = HOST
    _wrong_known_hosts: Path | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def key_for(self, account: str) -> Path:
        """The private key the account logs in with."""
        key = self.base / "client" / account
        if not key.is_file():
            raise KeyError(f"the test sshd has no account {account!r}: it serves {ACCOUNTS}")
        return key

    def url_for(self, account: str) -> str:
        return f"sftp://{account}@{self.host}:{self.port}/{account}"

    def resource_for(self, account: str, **overrides) -> ExchangeResource:
        settings = dict(
            url=self.url_for(account),
            sftp_key=str(self.key_for(account)),
            known_hosts=str(self.known_hosts),
            retries=3,
            backoff_seconds=0.05,
        )
        return ExchangeResource(**(settings | overrides))

    def wrong_known_hosts(self) -> Path:
        """A known_hosts file that lists another host key for this server (a man in the middle)."""
        if self._wrong_known_hosts is None:
            stranger = _keygen(self.base / "stranger_host_key", "stranger host key")
            path = self.base / "known_hosts.wrong"
            path.write_text(_known_hosts_line(self.port, stranger), encoding="ascii")
            self._wrong_known_hosts = path
        return self._wrong_known_hosts

    def connection_pids(self) -> list[int]:
        """The per-connection sshd processes (all descendants of the listener)."""
        return _descendants(self.pid)

    def drop_connections(self) -> int:
        """Kill every open SSH connection, not the listener, as a network failure would; returns how
        many processes were stopped."""
        pids = self.connection_pids()
        # SIGTERM to the per-connection monitors (the listener's children): each passes it on to
        # its session process and reaps it, so nothing is left for init to collect.
        for pid in _children(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            _wait_until(lambda: not any(_alive(pid) for pid in pids), 2, "sshd connections to end")
        except TimeoutError:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _wait_until(lambda: not any(_alive(pid) for pid in pids), 5, "sshd connections to end")
        return len(pids)

    def known_hosts_via(self, port: int) -> Path:
        """A known_hosts file with this server's real host key for another port on 127.0.0.1
        (a proxy in front of it, tests/netfault.py): the key is still verified."""
        path = self.base / f"known_hosts.{port}"
        host_public = (self.base / "host_ed25519.pub").read_text(encoding="ascii")
        path.write_text(_known_hosts_line(port, host_public), encoding="ascii")
        return path

    def stop_listening(self) -> None:
        """Stop the server as an outage would: every connection and then the listener, by PID;
        its files stay, so `start_listening` brings it back on the same port with the same keys."""
        if self.process.poll() is None:
            self.drop_connections()
            stop_process(self.process, timeout=5)

    def start_listening(self) -> None:
        """Start the stopped server again on its port (same configuration, same host key)."""
        if self.process.poll() is None:
            return
        config = self.base / "sshd_config"
        with self.log.open("ab") as stderr:
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
            )
        if not _wait_for_port(self.port, self.process):
            raise RuntimeError(f"the test sshd did not start again on port {self.port}:\n{self.log_tail()}")

    def clear(self) -> None:
        """Empty every account's IN/ and OUT/ (the session's server is shared between tests)."""
        for folder in self.root.glob("*/*"):
            if folder.name in ("IN", "OUT"):
                for entry in folder.iterdir():
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the connections, then exactly the listener this object started, then remove its files."""
        if self.process.poll() is None:
            self.drop_connections()
            stop_process(self.process, timeout=5)
        shutil.rmtree(self.base, ignore_errors=True)


def require_sshd() -> None:
    """Fail under CI=true, skip otherwise, when this machine cannot run the test sshd."""
    missing = None
    if not SSHD.is_file():
        missing = f"{SSHD} is not installed (apt-get install openssh-server)"
    elif os.geteuid() != 0:
        missing = "the test sshd needs root (chroot and Unix accounts)"
    elif shutil.which("ssh-keygen") is None:
        missing = "ssh-keygen is not installed"
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"SFTP tests: {missing}", pytrace=False)
        pytest.skip(f"SFTP tests: {missing}")


@contextlib.contextmanager
def running_sftp_server(accounts: tuple[str, ...] = ACCOUNTS) -> Iterator[SftpServer]:
    require_sshd()
    server = start_sftp_server(accounts)
    try:
        yield server
    finally:
        server.stop()


def start_sftp_server(accounts: tuple[str, ...] = ACCOUNTS) -> SftpServer:
    for account in accounts:
        _ensure_account(account)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory

    base = Path(tempfile.mkdtemp(prefix="pensionstraek-sshd-", dir=_chroot_parent()))
    base.chmod(0o755)  # sshd reads the authorized keys as the logging-in user
    try:
        root = _exchange_tree(base / "exchange", accounts)
        host_key = base / "host_ed25519"
        _keygen(host_key, "test sshd host key")
        keys = base / "keys"
        keys.mkdir(mode=0o755)
        (base / "client").mkdir(mode=0o700)
        for account in accounts:
            public = _keygen(base / "client" / account, f"{account}@pensionstraek-test")
            (keys / f"{account}.pub").write_text(public + "\n", encoding="ascii")
            (keys / f"{account}.pub").chmod(0o644)
        return _start_listening(base, root, host_key, accounts)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


# --- the pieces ---------------------------------------------------------------------------------


def _chroot_parent() -> str:
    for candidate in _CHROOT_PARENTS:
        path = Path(candidate)
        if path.is_dir() and os.access(path, os.W_OK) and _root_owned_not_writable(path):
            return candidate
    raise RuntimeError(f"no root-owned, non-world-writable folder for the chroot among {_CHROOT_PARENTS}")


def _root_owned_not_writable(path: Path) -> bool:
    for component in (path, *path.parents):
        info = component.stat()
        if info.st_uid != 0 or info.st_mode & 0o022:
            return False
    return True


def _ensure_account(account: str) -> None:
    """The Unix account the sshd authenticates; created once, kept afterwards (it has no password,
    no shell and no home)."""
    try:
        pwd.getpwnam(account)
        return
    except KeyError:
        pass
    _run("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", account)
    # With UsePAM no, sshd refuses a locked account ('!' in shadow); '*' is no password, not locked.
    _run("usermod", "-p", "*", account)


def _exchange_tree(root: Path, accounts: tuple[str, ...]) -> Path:
    """`<root>/<account>/IN|OUT`, the emulator's tree; the root is the chroot (root-owned, 755)."""
    root.mkdir(mode=0o755)
    for account in accounts:
        user = pwd.getpwnam(account)
        # An account sees only its own folder; root (the emulator) sees all.
        account_folder = root / account
        for folder, mode in ((account_folder, 0o700), (account_folder / "IN", 0o755), (account_folder / "OUT", 0o755)):
            folder.mkdir()
            folder.chmod(mode)
            os.chown(folder, user.pw_uid, user.pw_gid)
    return root


def _keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair at `path` (private) and `path.pub`; returns the public line."""
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    return path.with_suffix(".pub").read_text(encoding="ascii").strip()


def _known_hosts_line(port: int, public_line: str) -> str:
    kind, blob = public_line.split()[:2]
    return f"[{HOST}]:{port} {kind} {blob}\n"


def _sshd_config(base: Path, root: Path, host_key: Path, port: int, accounts: tuple[str, ...]) -> str:
    return "\n".join(
        [
            f"ListenAddress {HOST}",
            f"Port {port}",
            f"HostKey {host_key}",
            f"PidFile {base / 'sshd.pid'}",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin no",
            "StrictModes no",
            f"AuthorizedKeysFile {base / 'keys'}/%u.pub",
            f"AllowUsers {' '.join(accounts)}",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PermitTTY no",
            "MaxStartups 100",
            "Subsystem sftp internal-sftp",
            f"ChrootDirectory {root}",
            "ForceCommand internal-sftp -d /%u",
            "",
        ]
    )


def _start_listening(base: Path, root: Path, host_key: Path, accounts: tuple[str, ...]) -> SftpServer:
    config = base / "sshd_config"
    log = base / "sshd.log"
    for _ in range(5):  # another process may take the free port between choosing and binding it
        port = _free_port()
        config.write_text(_sshd_config(base, root, host_key, port, accounts), encoding="ascii")
        _run(str(SSHD), "-t", "-f", str(config))
        with log.open("ab") as stderr:
            process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        if _wait_for_port(port, process):
            known_hosts = base / "known_hosts"
            host_public = host_key.with_suffix(".pub").read_text(encoding="ascii")
            known_hosts.write_text(_known_hosts_line(port, host_public), encoding="ascii")
            return SftpServer(
                base=base, root=root, port=port, known_hosts=known_hosts, process=process, log=log
            )
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    raise RuntimeError(f"the test sshd did not start; its log:\n{log.read_text(errors='replace')}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return True
        time.sleep(0.02)
    return False


def _children(pid: int) -> list[int]:
    return _process_tree().get(pid, [])


def _descendants(pid: int) -> list[int]:
    children = _process_tree()
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _process_tree() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])  # the command name may contain spaces
        children.setdefault(parent, []).append(int(entry.name))
    return children


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        time.sleep(0.01)


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
