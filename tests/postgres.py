"""A real PostgreSQL server on 127.0.0.1 for the instance tests (issue 8 item 8: the Dagster
instance on PostgreSQL, as in production).

Debian's `postgresql` binaries (`/usr/lib/postgresql/<version>/bin`): `initdb` makes a cluster in
a temporary folder, `postgres` serves it on a free loopback port, with password login
(scram-sha-256) as in production. PostgreSQL refuses to run as root, so as root the cluster
belongs to, and the server runs as, the account `pensionstraek-test` (made once if missing, no
shell, no home). The tests start it once per session (`tests/conftest.py`) and stop exactly the
process they started. `running_postgres()` fails under CI=true and skips otherwise when the
binaries are missing."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.processes import stop_process

HOST = "127.0.0.1"
ACCOUNT = "pensionstraek-test"  # runs the server when the tests run as root
DATABASE = "dagster"


@dataclass
class PostgresServer:
    base: Path
    port: int
    username: str
    password: str
    process: subprocess.Popen
    host: str = HOST
    database: str = DATABASE

    @property
    def pid(self) -> int:
        return self.process.pid

    def env(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables deploy/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.username,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.database,
        }

    def connect(self, database: str | None = None):
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, user=self.username, password=self.password,
            dbname=database or self.database, connect_timeout=5,
        )

    def new_database(self, name: str) -> dict[str, str]:
        """An empty database of its own for one test; returns the DAGSTER_PG_* pointing at it."""
        connection = self.connect("postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return {**self.env(), "DAGSTER_PG_DB": name}

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.base / "postgres.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of exactly the server this object started, then its files."""
        stop_process(self.process, how=signal.SIGINT)
        shutil.rmtree(self.base, ignore_errors=True)


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def require_postgres() -> Path:
    """The binaries' folder; fails under CI=true, skips otherwise, when they are missing."""
    folder = postgres_bin()
    missing = None
    if folder is None or not (folder / "postgres").is_file():
        missing = "PostgreSQL is not installed (apt-get install postgresql: /usr/lib/postgresql/*/bin)"
    else:
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            missing = "psycopg2 is not installed (pip install -c requirements.lock -e '.[test]')"
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL tests: {missing}", pytrace=False)
        pytest.skip(f"PostgreSQL tests: {missing}")
    return folder


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = start_postgres(require_postgres())
    try:
        yield server
    finally:
        server.stop()


def start_postgres(folder: Path) -> PostgresServer:
    owner = _server_account()
    base = Path(tempfile.mkdtemp(prefix="pensionstraek-postgres-"))
    try:
        data, sockets = base / "data", base / "sockets"
        sockets.mkdir()
        password = secrets.token_hex(16)
        (base / "pwfile").write_text(password + "\n")
        if owner is not None:
            for path in (base, sockets, base / "pwfile"):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        _as(owner, [
            str(folder / "initdb"), "-D", str(data), "-U", "pensionstraek", "--pwfile", str(base / "pwfile"),
            "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync",
        ])
        return _start_listening(folder, base, data, sockets, owner, password)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


def _start_listening(folder: Path, base: Path, data: Path, sockets: Path, owner, password: str) -> PostgresServer:
    log = base / "postgres.log"
    for _ in range(5):  # another process may take the free port between choosing and binding it
        port = _free_port()
        with log.open("ab") as output:
            process = subprocess.Popen(
                [
                    str(folder / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
                    "-c", f"listen_addresses={HOST}", "-c", "fsync=off", "-c", "full_page_writes=off",
                    "-c", "synchronous_commit=off", "-c", "max_connections=60",
                ],
                stdin=subprocess.DEVNULL, stdout=output, stderr=output, cwd=base,
                **_user_kwargs(owner),
            )
        server = PostgresServer(base=base, port=port, username="pensionstraek", password=password, process=process)
        if _wait_ready(server):
            server.new_database(DATABASE)
            return server
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    raise RuntimeError(f"the test PostgreSQL did not start; its log:\n{log.read_text(errors='replace')}")


def _wait_ready(server: PostgresServer, timeout: float = 30.0) -> bool:
    import psycopg2

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            server.connect("postgres").close()
            return True
        except psycopg2.OperationalError:
            time.sleep(0.1)
    return False


def _server_account():
    """None when the tests do not run as root (the server then runs as the tests' own user)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(ACCOUNT)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ACCOUNT],
            check=True, capture_output=True,
        )
        return pwd.getpwnam(ACCOUNT)


def _user_kwargs(owner) -> dict:
    return {} if owner is None else {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


def _as(owner, command: list[str]) -> None:
    cwd = command[command.index("-D") + 1].rsplit("/", 1)[0]
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=cwd, **_user_kwargs(owner))
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]
