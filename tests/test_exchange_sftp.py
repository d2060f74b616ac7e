"""The exchange account over real SFTP: an OpenSSH sshd on 127.0.0.1, chrooted, SFTP only
(tests/sshd.py). Host key and login errors are refused at once; a dropped connection is survived."""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime

import pytest

from pipelines.config import SFTP_KEY, SFTP_KNOWN_HOSTS
from pipelines.exchange import Delivery, ExchangeAccessError, ExchangeError
from tests.sshd import SftpServer, running_sftp_server

pytestmark = pytest.mark.sshd

T0 = datetime(2027, 1, 5, 9, 16, 2, tzinfo=UTC).timestamp()


@pytest.fixture
def server(sftp_server: SftpServer) -> SftpServer:
    sftp_server.clear()
    return sftp_server


def test_complete_deliveries_are_listed_and_read(server: SftpServer) -> None:
    inbox = server.root / "udk-pension" / "IN"
    for name, received in (("b.xml", T0), ("A.xml", T0), ("first.xml", T0 - 60)):
        (inbox / name).write_bytes(name.encode())
        (inbox / f"{name}.metadata").write_bytes(b"<FileMetadata/>")
        os.utime(inbox / f"{name}.metadata", (received, received))
    (inbox / "waiting.xml").write_bytes(b"no metadata yet")
    (inbox / "sent.xml.sftpreceipt").write_bytes(b"<TechnicalReceipt/>")

    with server.resource_for("udk-pension").open() as client:
        deliveries = client.list_deliveries()
        assert deliveries == [
            Delivery(name="first.xml", size=9, received=datetime.fromtimestamp(T0 - 60, tz=UTC)),
            Delivery(name="A.xml", size=5, received=datetime.fromtimestamp(T0, tz=UTC)),
            Delivery(name="b.xml", size=5, received=datetime.fromtimestamp(T0, tz=UTC)),
        ]
        assert client.list_receipts() == ["sent.xml.sftpreceipt"]
        assert client.read("IN/A.xml") == b"A.xml"
        assert client.mtime("IN/A.xml.metadata") == datetime.fromtimestamp(T0, tz=UTC)


def test_write_rename_remove_over_sftp_land_in_the_account_folder(server: SftpServer) -> None:
    outbox = server.root / "kp" / "OUT"
    with server.resource_for("kp").open() as client:
        client.write("OUT/SF6110_0101_1.xml", b"first")
        client.write("OUT/SF6110_0101_1.xml", b"second")  # replaces: posix-rename, not plain SFTP rename
        assert (outbox / "SF6110_0101_1.xml").read_bytes() == b"second"
        assert client.listdir("OUT") == ["SF6110_0101_1.xml"]  # no temporary file left

        client.write("OUT/other.xml", b"other")
        client.rename("OUT/SF6110_0101_1.xml", "OUT/other.xml")
        assert sorted(p.name for p in outbox.iterdir()) == ["other.xml"]
        assert client.read("OUT/other.xml") == b"second"
        assert client.size("OUT/other.xml") == 6

        client.remove("OUT/other.xml")
        client.remove("OUT/other.xml")
        assert not client.exists("OUT/other.xml")
        assert list(outbox.iterdir()) == []
        with pytest.raises(FileNotFoundError):
            client.read("OUT/other.xml")
        with pytest.raises(ValueError):
            client.write("../udk-pension/IN/x.xml", b"x")


def test_wrong_host_key_is_refused_at_once(server: SftpServer) -> None:
    resource = server.resource_for("udk-pension", known_hosts=str(server.wrong_known_hosts()), backoff_seconds=1.0)

    started = time.monotonic()
    with pytest.raises(ExchangeAccessError) as refused:
        resource.open()

    assert refused.value.attempts == 1
    assert time.monotonic() - started < 1.0  # no backoff was waited
    assert f"host key of 127.0.0.1:{server.port} is not in {SFTP_KNOWN_HOSTS}" in str(refused.value)


def test_wrong_client_key_is_refused_naming_the_key_variable(server: SftpServer) -> None:
    resource = server.resource_for("udk-pension", sftp_key=str(server.key_for("kp")), backoff_seconds=1.0)

    with pytest.raises(ExchangeAccessError, match=f"refused login as 'udk-pension' with the key in {SFTP_KEY}") as refused:
        resource.open()

    assert refused.value.attempts == 1


def test_a_dropped_connection_is_reconnected_and_the_operation_succeeds(server: SftpServer) -> None:
    with server.resource_for("udk-pension").open() as client:
        client.write("OUT/x.xml", b"before")
        assert server.drop_connections() > 0

        assert client.read("OUT/x.xml") == b"before"
        client.write("OUT/x.xml", b"after")

        assert client.connections == 2
        assert (server.root / "udk-pension" / "OUT" / "x.xml").read_bytes() == b"after"


def test_each_open_is_a_new_connection(server: SftpServer) -> None:
    resource = server.resource_for("udk-pension")
    with resource.open() as first, resource.open() as second:
        first.close()  # had they shared a cached connection, `second` would now have to reconnect
        assert second.listdir("IN") == []
        assert (first.connections, second.connections) == (1, 1)


def test_an_unreachable_server_fails_after_the_retries(server: SftpServer) -> None:
    with socket.socket() as probe:  # a port on which nothing listens
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    resource = server.resource_for(
        "udk-pension", url=f"sftp://udk-pension@127.0.0.1:{closed_port}/udk-pension", retries=2, backoff_seconds=0.01
    )

    with pytest.raises(ExchangeError) as failed:
        resource.open()

    assert not isinstance(failed.value, ExchangeAccessError)
    assert failed.value.attempts == 3


def test_a_url_path_without_the_account_folders_names_the_url_variable(server: SftpServer) -> None:
    resource = server.resource_for("udk-pension", url=server.url_for("udk-pension") + "/IN")
    with pytest.raises(ExchangeAccessError, match="PENSIONSTRAEK_EXCHANGE_URL=.*has no IN or OUT folder"):
        resource.open()


def test_the_server_stops_exactly_its_own_process() -> None:
    with running_sftp_server(accounts=("kp",)) as other:
        pid, port, base = other.pid, other.port, other.base
        client = other.resource_for("kp").open()
        assert other.connection_pids()
    client.close()

    assert not os.path.exists(f"/proc/{pid}")
    assert not base.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_entries_that_cannot_be_deliveries_are_typed_by_the_listing_and_links_not_followed(server: SftpServer) -> None:
    # exchange.md "Nothing in IN/ is ignored silently", over the real sshd: the SFTP listing's
    # own attributes say link or folder (OpenSSH lists by lstat); nothing is followed.
    inbox = server.root / "udk-pension" / "IN"
    (inbox / "target.xml").write_bytes(b"<x/>")
    (inbox / "target.xml.metadata").write_bytes(b"<m/>")
    (inbox / "link.xml").symlink_to("target.xml")
    (inbox / "mappe.xml").mkdir()
    (inbox / "alone.xml.metadata").write_bytes(b"<m/>")
    with server.resource_for("udk-pension").open() as client:
        strays = {s.name: (s.reason, s.regular) for s in client.list_strays(3600)}
        deliveries = [d.name for d in client.list_deliveries()]
    assert deliveries == ["target.xml"]
    assert strays == {
        "link.xml": ("et symbolsk link (følges aldrig)", False),
        "mappe.xml": ("en mappe", False),
        "alone.xml.metadata": ("metadata uden data", True),
    }
