"""Fixtures shared by the test files."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import PostgresServer, running_postgres
from tests.sshd import SftpServer, running_sftp_server


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[SftpServer]:
    """A real OpenSSH sshd on 127.0.0.1 serving `root/<account>/IN|OUT` for udk-pension, kp and ky
    (tests/sshd.py); fails under CI=true and skips otherwise when it cannot run here."""
    with running_sftp_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL on 127.0.0.1 (tests/postgres.py); each test makes its own database
    with `new_database`. Fails under CI=true and skips otherwise when it cannot run here."""
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session", autouse=True)
def the_checkout_var_is_left_alone() -> Iterator[None]:
    """No test may write into the checkout's ./var (the demo's and an operator's world): every
    test works in its own temporary folders."""
    var = Path(__file__).resolve().parent.parent / "var"
    before = sorted(str(p) for p in var.rglob("*")) if var.exists() else None
    yield
    after = sorted(str(p) for p in var.rglob("*")) if var.exists() else None
    assert after == before, f"the tests changed {var}: {sorted(set(after or []) - set(before or []))[:5]}"


@pytest.fixture(scope="session")
def rabbitmq():
    """A real RabbitMQ broker on 127.0.0.1 with its own node, ports and folders (tests/rabbitmq.py);
    fails under CI=true and skips otherwise when it cannot run here."""
    from tests.rabbitmq import running_broker

    with running_broker() as broker:
        yield broker


@pytest.fixture(scope="session")
def sf1411_service():
    """The real SF1411 web service over mutual TLS on 127.0.0.1 (tests/tls.py), one per session."""
    from tests.tls import running_sf1411_service

    with running_sf1411_service() as service:
        yield service


@pytest.fixture(scope="session")
def dagster_ui(tmp_path_factory):
    """`dagster dev` on a small settled world (tests/browser.py), one per session."""
    from tests.browser import running_ui

    with running_ui(tmp_path_factory.mktemp("ui")) as ui:
        yield ui


@pytest.fixture(scope="session")
def browser():
    """One Debian Chromium driven by Playwright for the session (tests/browser.py)."""
    from tests.browser import chromium

    with chromium() as launched:
        yield launched


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """SIGTERM back to its default before each test. A Dagster run executed in this process maps
    SIGTERM to SIGINT's handler (dagster._utils.interrupts), and a suite started as a background
    job has SIGINT ignored: SIGTERM then stays ignored, and every process a later test starts
    inherits that (a sleep it stopped with SIGTERM lived on until killed: CI, 2026-12-02)."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
