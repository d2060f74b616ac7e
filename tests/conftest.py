"""Fixtures shared by the test files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sshd import SftpServer, running_sftp_server


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[SftpServer]:
    """A real OpenSSH sshd on 127.0.0.1 serving `root/<account>/IN|OUT` for udk-pension, kp and ky
    (tests/sshd.py); fails under CI=true and skips otherwise when it cannot run here."""
    with running_sftp_server() as server:
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
