"""A whole month over a real sshd (tests/sshd.py): `kp` delivers its SF6110 files over SFTP, the
emulator routes the server's tree, intake and settlement run in Dagster with udk-pension's SFTP
ExchangeResource (host key verified), and `kp` and `ky` fetch their SF6111 and SF2601 over SFTP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from contracts.envelope import encode_trigger, trigger_for
from contracts.sf2601 import decode_sf2601
from contracts.sf6111 import decode_sf6111
from pipelines.emulator import route
from pipelines.exchange import ExchangeClient
from tests.sshd import SftpServer
from tests.test_settlement_flow import (
    EXPECTED_0101,
    EXPECTED_0751,
    MONTH_FILES,
    PREV,
    TRAEK_COLUMNS,
    A,
    P,
    month_beregning,
    month_sager,
    write_register,
)
from tests.world import World, request_file

pytestmark = pytest.mark.sshd


@pytest.fixture
def server(sftp_server: SftpServer) -> Iterator[SftpServer]:
    sftp_server.clear()
    yield sftp_server
    sftp_server.clear()  # the session's server is shared: leave nothing for the next test


def send_over_sftp(client: ExchangeClient, name: str, data: bytes, sender: str) -> None:
    """What a partner does (exchange.md "Sending"): the data file, then its trigger."""
    client.write(f"OUT/{name}", data)
    client.write(f"OUT/{name}.trigger", encode_trigger(trigger_for(name, data, sender, ["udk-pension"])))


def routed_without_error(root: Path) -> list[str]:
    outcomes = route(root)
    assert all(o.error_code is None for o in outcomes), outcomes
    return [o.name for o in outcomes]


def fetch(server: SftpServer, account: str, prefix: str) -> dict[str, bytes]:
    """The partner reads its complete deliveries over SFTP, as its own account."""
    with server.resource_for(account).open() as client:
        return {d.name: client.read(f"IN/{d.name}") for d in client.list_deliveries() if d.name.startswith(prefix)}


def test_a_whole_month_over_sftp(server: SftpServer, tmp_path: Path) -> None:
    w = World(tmp_path, dg.DagsterInstance.ephemeral(), exchange=server.resource_for("udk-pension"))
    write_register(w.register_dir, PREV, month_sager(PREV), month_beregning(PREV))

    # kp delivers over SFTP; the platform routes; the received time is back-dated before the cut-off.
    with server.resource_for("kp").open() as kp:
        for name, kommunekode, received, rows in MONTH_FILES:
            send_over_sftp(kp, name, request_file(kommunekode, rows), sender="kp")
            assert routed_without_error(server.root) == [name]
            stamp = received.timestamp()
            os.utime(server.root / "udk-pension" / "IN" / f"{name}.metadata", (stamp, stamp))

    intake = w.intake()
    assert intake.success, intake.problems
    assert [(d["filnavn"], d["status"]) for d in w.store().decisions()] == [
        (name, "MODTAGET") for name, *_ in sorted(MONTH_FILES, key=lambda f: (f[2], f[0]))
    ]
    assert not list((server.root / "udk-pension" / "IN").glob("SF6110_*"))  # taken in, removed from IN/
    routed_without_error(server.root)  # the kvitteringer go to kp
    assert len(fetch(server, "kp", "SF6110K_")) == len(MONTH_FILES)

    write_register(w.register_dir, P, month_sager(P), month_beregning(P))
    settled = w.settle(P)
    assert settled.success, settled.problems
    assert sorted(routed_without_error(server.root)) == [
        "SF2601_0751_202610_001.xml", "SF6111_0101_202610_001.xml", "SF6111_0751_202610_001.xml",
    ]

    sf6111 = fetch(server, "kp", "SF6111_")
    assert sorted(sf6111) == ["SF6111_0101_202610_001.xml", "SF6111_0751_202610_001.xml"]
    for name, expected in (
        ("SF6111_0101_202610_001.xml", EXPECTED_0101),
        ("SF6111_0751_202610_001.xml", EXPECTED_0751),
    ):
        header, rows = decode_sf6111(sf6111[name])
        assert (header["periode"], header["loebenummer"]) == (P, 1)
        assert rows.select(TRAEK_COLUMNS).to_dicts() == expected
        assert sf6111[name] == w.store().read(f"sent/{name}/data")  # what was sent is what arrived
    assert fetch(server, "ky", "SF6111_") == {}

    sf2601 = fetch(server, "ky", "SF2601_")
    assert list(sf2601) == ["SF2601_0751_202610_001.xml"]
    header, rows = decode_sf2601(sf2601["SF2601_0751_202610_001.xml"])
    assert header["samlet_udbetalt_oere"] == 812_345
    assert rows.filter(rows["cpr"] == A)["traek_oere"].to_list() == [250_000]

    # The platform's technical receipts reach udk-pension's IN/ and an intake pass records them.
    assert w.intake().success
    records = {r["name"]: r for r in w.store().sent_records() if r["kind"] in ("SF6111", "SF2601")}
    assert sorted(records) == sorted([*sf6111, *sf2601])
    assert {r["status"] for r in records.values()} == {"acknowledged"}
    assert list((server.root / "udk-pension" / "IN").iterdir()) == []

    # A rerun over SFTP sends nothing new.
    again = w.settle(P)
    assert again.success, again.problems
    assert list((server.root / "udk-pension" / "OUT").iterdir()) == []
    w.instance.dispose()
