"""The whole SF6110 flow over a real sshd (issue 3, "Tests"): kp delivers over SFTP (data, then
trigger), the platform emulator routes the server's tree, intake reads UDK's account over SFTP and
answers through it, the platform routes again, and kp reads its kvittering over SFTP."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from contracts.envelope import encode_trigger, trigger_for
from contracts.sf6110 import decode_kvittering
from pipelines.emulator import route
from tests.sshd import SftpServer
from tests.test_intake import (
    ALICE,
    UDEN_SAG,
    event_texts,
    opret,
    unmasked_cprs,
    write_pensionssager,
)
from tests.world import World, request_file

pytestmark = pytest.mark.sshd


@pytest.fixture
def server(sftp_server: SftpServer) -> Iterator[SftpServer]:
    sftp_server.clear()  # the session's server is shared: leave it as clean as it was found
    yield sftp_server
    sftp_server.clear()


def test_deliver_route_intake_route_and_read_the_kvittering_over_sftp(tmp_path, server):
    # Received now, so the first open period is at most next month's: ask from 2027-01.
    data = request_file("0101", [opret("SFTP-1", ALICE, fra_periode="2027-01"), opret("SFTP-2", UDEN_SAG, fra_periode="2027-01")])
    name = "SF6110_0101_20261126120000.xml"
    with server.resource_for("kp").open() as kp:
        kp.write(f"OUT/{name}", data)
        kp.write(f"OUT/{name}.trigger", encode_trigger(trigger_for(name, data, "kp", ["udk-pension"])))
    (delivered,) = route(server.root)
    assert delivered.delivered, delivered

    w = World(tmp_path, dg.DagsterInstance.ephemeral(), exchange=server.resource_for("udk-pension"))
    write_pensionssager(w.register_dir)
    outcome = w.intake()
    assert outcome.success, outcome.problems
    udk_in = server.root / "udk-pension" / "IN"
    assert sorted(p.name for p in udk_in.iterdir()) == []
    (decision,) = w.store().decisions()
    uuid = decision["file_transfer_uuid"]
    assert (w.state_dir / "archive" / "received" / uuid / name).read_bytes() == data

    (answered,) = route(server.root)
    assert answered.delivered and answered.recipients == ("kp",)
    with server.resource_for("kp").open() as kp:
        names = [d.name for d in kp.list_deliveries()]
        assert names == [f"SF6110K_0101_{uuid}.xml"]
        header, anmodninger = decode_kvittering(kp.read(f"IN/{names[0]}"))
        assert kp.list_receipts() == [f"{name}.sftpreceipt"]  # the platform took kp's file in
    assert (header["status"], header["modtaget_filnavn"], header["file_transfer_uuid"]) == ("MODTAGET", name, uuid)
    assert anmodninger.select("anmodning_id", "status", "kode").rows() == [("SFTP-1", "MODTAGET", None), ("SFTP-2", "AFVIST", "U03")]
    assert w.store().ledger()["anmodning_id"].to_list() == ["SFTP-1"]

    # The technical receipt for the kvittering comes back over SFTP and is recorded.
    assert sorted(p.name for p in udk_in.iterdir()) == [f"SF6110K_0101_{uuid}.xml.sftpreceipt"]
    assert w.intake().success
    assert list(udk_in.iterdir()) == []
    assert w.store().sent_record(f"SF6110K_0101_{uuid}.xml")["status"] == "acknowledged"
    assert unmasked_cprs(event_texts(w)) == []
