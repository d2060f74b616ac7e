"""Fixtures shared by the test files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sshd import SftpServer, running_sftp_server


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[SftpServer]:
    """A real OpenSSH sshd on 127.0.0.1 serving `root/<account>/IN|OUT` for udk-pension, kp and ky
    (tests/sshd.py); fails under CI=true and skips otherwise when it cannot run here."""
    with running_sftp_server() as server:
        yield server
