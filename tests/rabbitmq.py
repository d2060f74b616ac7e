"""A real RabbitMQ broker on 127.0.0.1 for the message tests, started and stopped by the suite.

Debian's `rabbitmq-server` runs as a child process with its own node name, AMQP port,
distribution port, epmd port, data, log, config and cookie (HOME) in a temporary folder, so that
it never meets the system service or another session's broker. The epmd it needs is started here
too (on its own port), so that both are stopped by PID. `running_broker()` fails under CI=true and
skips otherwise when the broker cannot run on this machine.

The wrapper `/usr/sbin/rabbitmq-server` switches to the `rabbitmq` user (and its HOME, with the
system's cookie) when run as root; the script it wraps, `/usr/lib/rabbitmq/bin/rabbitmq-server`,
is started directly, so that HOME, cookie and folders stay ours."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.processes import stop_process

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
SERVER = RABBIT_BIN / "rabbitmq-server"
CTL = RABBIT_BIN / "rabbitmqctl"
HOST = "127.0.0.1"


@dataclass
class Broker:
    base: Path
    node: str
    port: int
    env: dict
    process: subprocess.Popen | None
    epmd: subprocess.Popen

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/%2F"

    def ctl(self, *args: str, timeout: float = 60) -> str:
        result = subprocess.run(
            [str(CTL), "-n", self.node, *args],
            env=self.env,
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def start(self) -> None:
        log = open(self.base / "server.out", "ab")
        self.process = subprocess.Popen(
            [str(SERVER)], env=self.env, cwd=self.base, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 90
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited ({self.process.returncode}): {self.log_tail()}")
            try:
                self.ctl("await_startup", "--timeout", "5", timeout=30)
                break
            except (RuntimeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rabbitmq-server did not start: {self.log_tail()}") from None
                time.sleep(0.5)
        _wait_for_port(self.port, 30)

    def stop(self) -> None:
        """Stop the broker by its PID (SIGTERM to its process group, then SIGKILL)."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, group=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close_connections(self) -> None:
        """Close every client connection from the broker's side, as a network failure would."""
        for line in self.ctl("list_connections", "pid", "--silent").splitlines():
            pid = line.strip()
            if pid.startswith("<"):
                with contextlib.suppress(RuntimeError):
                    self.ctl("close_connection", pid, "test: connection dropped")

    def queue_depth(self, queue: str) -> int:
        for line in self.ctl("list_queues", "name", "messages", "--silent").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return int(parts[1])
        return 0

    def purge(self, prefix: str = "dueslag.") -> None:
        """Delete the queues whose names start with `prefix` (a clean broker for the next test)."""
        for line in self.ctl("list_queues", "name", "--silent").splitlines():
            if line.strip().startswith(prefix):
                with contextlib.suppress(RuntimeError):
                    self.ctl("delete_queue", line.strip())

    def log_tail(self, lines: int = 20) -> str:
        text = ""
        for path in [self.base / "server.out", *sorted((self.base / "log").glob("*.log"))]:
            if path.is_file():
                text += path.read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-lines:])

    def shutdown(self) -> None:
        self.stop()
        stop_process(self.epmd, timeout=10)


def require_broker() -> None:
    missing = [str(p) for p in (SERVER, CTL) if not p.exists()]
    if not shutil.which("epmd"):
        missing.append("epmd")
    if missing:
        message = f"RabbitMQ tests: missing {', '.join(missing)} (Debian rabbitmq-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@contextlib.contextmanager
def running_broker() -> Iterator[Broker]:
    require_broker()
    base = Path(tempfile.mkdtemp(prefix="pensionstraek-rabbit-"))
    epmd_port, dist_port, amqp_port = _free_port(), _free_port(), _free_port()
    node = f"pt{uuid.uuid4().hex[:8]}@localhost"
    for folder in ("mnesia", "log", "home"):
        (base / folder).mkdir()
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.1 = {HOST}:{amqp_port}\n"
        "loopback_users.guest = true\n"
        "log.console = false\n"
        "log.file.level = warning\n"
        # The tests fill a disk-backed broker with little; the machine is shared.
        "disk_free_limit.absolute = 50MB\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(base / "home"),
        "LANG": "C.UTF-8",
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": HOST,
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": HOST,
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        # No busy-waiting schedulers: on a shared 2-core machine an idle-spinning Erlang VM takes
        # the CPU the publisher and the emulator need (RabbitMQ's "runtime tuning" guide).
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+sbwt none +sbwtdcpu none +sbwtdio none",
        # A crashing rabbitmqctl or server writes erl_crash.dump into its working directory;
        # keep it with the broker's other files, never in the checkout.
        "ERL_CRASH_DUMP": str(base / "erl_crash.dump"),
    }
    epmd = subprocess.Popen(
        [shutil.which("epmd"), "-port", str(epmd_port), "-address", HOST],
        env=env,
        cwd=base,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    broker = Broker(base=base, node=node, port=amqp_port, env=env, process=None, epmd=epmd)
    try:
        _wait_for_port(epmd_port, 10)
        try:
            broker.start()
        except RuntimeError as exc:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"RabbitMQ tests: {exc}", pytrace=False)
            pytest.skip(f"RabbitMQ tests: {exc}")
        yield broker
    finally:
        broker.shutdown()
        shutil.rmtree(base, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {HOST}:{port}")
