"""The exchange account as a local folder (the default): listing, atomic writes, path checks, and the
configuration errors of ExchangeResource (operations.md "Configuration")."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import dagster as dg
import pytest

from pipelines.config import EXCHANGE_URL, SFTP_KEY, SFTP_KNOWN_HOSTS
from pipelines.exchange import (
    Delivery,
    ExchangeAccessError,
    ExchangeClient,
    ExchangeResource,
    is_valid_envelope_name,
)
from pipelines.storage import TEMP_PREFIX

T0 = datetime(2027, 1, 5, 9, 16, 2, tzinfo=UTC).timestamp()


@pytest.fixture
def account(tmp_path: Path) -> Path:
    return tmp_path / "exchange" / "udk-pension"


@pytest.fixture
def client(account: Path):
    with ExchangeResource(url=str(account)).open() as client:
        yield client


def deliver(account: Path, name: str, data: bytes = b"<x/>", received: float | None = T0) -> None:
    """What the platform leaves in IN/: the data file, then its metadata with the received time."""
    (account / "IN" / name).write_bytes(data)
    if received is not None:
        metadata = account / "IN" / f"{name}.metadata"
        metadata.write_bytes(b"<FileMetadata/>")
        os.utime(metadata, (received, received))


def test_open_creates_the_two_folders(account: Path, client: ExchangeClient) -> None:
    assert sorted(p.name for p in account.iterdir()) == ["IN", "OUT"]


def test_only_complete_deliveries_are_listed_in_received_then_name_byte_order(account, client) -> None:
    deliver(account, "SF6110_0101_2.xml", b"12345", received=T0 + 1)
    deliver(account, "a.xml", received=T0 + 0.9)  # truncated to T0: ties with Z.xml, sorted by bytes
    deliver(account, "Z.xml", received=T0)
    deliver(account, "waiting.xml", received=None)  # data without metadata is not complete
    deliver(account, f"{TEMP_PREFIX}0123-part.xml")  # a temporary name is never a delivery
    deliver(account, "not valid.xml")  # not an envelope name
    (account / "IN" / "sent.xml.sftpreceipt").write_bytes(b"<TechnicalReceipt/>")

    deliveries = client.list_deliveries()

    received = datetime.fromtimestamp(T0, tz=UTC)
    assert deliveries == [
        Delivery(name="Z.xml", size=4, received=received),
        Delivery(name="a.xml", size=4, received=received),
        Delivery(name="SF6110_0101_2.xml", size=5, received=datetime.fromtimestamp(T0 + 1, tz=UTC)),
    ]
    assert deliveries[0].received.tzinfo is not None and deliveries[1].received.microsecond == 0


def test_receipts_are_listed_apart_from_deliveries(account, client) -> None:
    (account / "IN" / "SF6111_0101_202702_001.xml.sftpreceipt").write_bytes(b"<r/>")
    (account / "IN" / f"{TEMP_PREFIX}0123-x.xml.sftpreceipt").write_bytes(b"<r/>")
    deliver(account, "SF6110_0101_1.xml")

    assert client.list_receipts() == ["SF6111_0101_202702_001.xml.sftpreceipt"]
    assert [d.name for d in client.list_deliveries()] == ["SF6110_0101_1.xml"]


def test_write_is_atomic_and_replaces(account, client) -> None:
    client.write("OUT/SF6111_0101_202702_001.xml", b"first")
    client.write("OUT/SF6111_0101_202702_001.xml", b"second")

    assert client.read("OUT/SF6111_0101_202702_001.xml") == b"second"
    assert client.listdir("OUT") == ["SF6111_0101_202702_001.xml"]  # no temporary file left
    assert client.size("OUT/SF6111_0101_202702_001.xml") == 6


def test_rename_replaces_the_target_and_remove_is_idempotent(account, client) -> None:
    client.write("OUT/a.xml", b"new")
    client.write("OUT/b.xml", b"old")

    client.rename("OUT/a.xml", "OUT/b.xml")

    assert client.listdir("OUT") == ["b.xml"]
    assert client.read("OUT/b.xml") == b"new"
    client.remove("OUT/b.xml")
    client.remove("OUT/b.xml")
    assert not client.exists("OUT/b.xml")
    with pytest.raises(FileNotFoundError):
        client.read("OUT/b.xml")


def test_exists_size_and_mtime(account, client) -> None:
    deliver(account, "x.xml", b"abc", received=T0)

    assert client.exists("IN/x.xml") and client.exists("IN/x.xml.metadata")
    assert not client.exists("OUT/x.xml")
    assert client.size("IN/x.xml") == 3
    assert client.mtime("IN/x.xml.metadata") == datetime.fromtimestamp(T0, tz=UTC)


@pytest.mark.parametrize(
    "path", ["../x", "/etc/x", "IN/../../x", "IN/../OUT/x", "IN/sub/x", "etc/x", "IN/..", "IN/", "", "IN\\..\\x"]
)
def test_paths_outside_the_account_folders_are_refused(account, client, path: str) -> None:
    for operation in (
        lambda: client.write(path, b"x"),
        lambda: client.read(path),
        lambda: client.remove(path),
        lambda: client.exists(path),
        lambda: client.rename("OUT/a.xml", path),
    ):
        with pytest.raises(ValueError, match="not a path inside the exchange account"):
            operation()
    assert sorted(p.name for p in account.parent.iterdir()) == ["udk-pension"]
    assert [p for p in account.rglob("*") if p.is_file()] == []


def test_folders_are_not_files(client) -> None:
    with pytest.raises(ValueError):
        client.write("IN", b"x")
    with pytest.raises(ValueError):
        client.listdir("IN/x.xml")


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("SF6110_0101_20270105101500.xml", True),
        ("a" * 255, True),
        ("a" * 256, False),
        (".hidden.xml", False),
        ("x.xml.trigger", False),
        ("x.xml.metadata", False),
        ("x.xml.sftpreceipt", False),
        ("x y.xml", False),
        ("æ.xml", False),
        ("x.xml\n", False),
        ("", False),
    ],
)
def test_envelope_names(name: str, valid: bool) -> None:
    assert is_valid_envelope_name(name) is valid


# --- configuration errors: named, before any connection ------------------------------------------


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(path))
    return path


def test_unknown_scheme_names_the_url_variable() -> None:
    with pytest.raises(ExchangeAccessError, match=f"{EXCHANGE_URL}=.*ukendte URL-skema 'ftp'"):
        ExchangeResource(url="ftp://udk-pension@host/udk-pension").open()


def test_sftp_without_known_hosts_names_the_variable(key_file: Path) -> None:
    resource = ExchangeResource(url="sftp://udk-pension@127.0.0.1:22/udk-pension", sftp_key=str(key_file))
    with pytest.raises(ExchangeAccessError, match=f"{SFTP_KNOWN_HOSTS} er påkrævet for sftp://"):
        resource.open()


def test_missing_or_unusable_key_names_the_key_variable(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    host_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    known_hosts.write_text(f"[127.0.0.1]:22 {host_key}")
    url = "sftp://udk-pension@127.0.0.1:22/udk-pension"
    with pytest.raises(ExchangeAccessError, match=f"{SFTP_KEY}=.*filen findes ikke"):
        ExchangeResource(url=url, sftp_key=str(tmp_path / "absent"), known_hosts=str(known_hosts)).open()
    with pytest.raises(ExchangeAccessError, match=f"{SFTP_KEY}=.*not a usable private key"):
        ExchangeResource(url=url, sftp_key=str(known_hosts), known_hosts=str(known_hosts)).open()


def test_from_env_reads_the_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(EXCHANGE_URL, "sftp://udk-pension@sftp.example:2222/udk-pension")
    monkeypatch.setenv(SFTP_KEY, "/keys/id")
    monkeypatch.setenv(SFTP_KNOWN_HOSTS, "/keys/known_hosts")
    resource = ExchangeResource.from_env()
    assert (resource.url, resource.sftp_key, resource.known_hosts) == (
        "sftp://udk-pension@sftp.example:2222/udk-pension",
        "/keys/id",
        "/keys/known_hosts",
    )
    monkeypatch.delenv(EXCHANGE_URL)
    assert ExchangeResource.from_env().url == "./var/exchange/udk-pension"


def test_the_resource_serves_a_dagster_asset(account: Path) -> None:
    @dg.asset
    def sent(exchange: ExchangeResource) -> None:
        with exchange.open() as client:
            client.write("OUT/hello.xml", b"<hello/>")

    result = dg.materialize([sent], resources={"exchange": ExchangeResource(url=str(account))})

    assert result.success
    assert (account / "OUT" / "hello.xml").read_bytes() == b"<hello/>"
