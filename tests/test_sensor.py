"""The sensor `sf6110_indgang` on UDK's IN/ (operations.md "Dagster", issue 3 item 5), evaluated
with `build_sensor_context` on a temporary instance against a real exchange tree (and a real sshd
for the access errors)."""

from __future__ import annotations

import socket

import asyncssh
import dagster as dg
import pytest
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)

from pipelines import sensors
from pipelines.exchange import ExchangeAccessError, ExchangeResource
from pipelines.sensors import sf6110_indgang
from tests.test_intake import ALICE, new_world, opret, write_pensionssager
from tests.world import World, copenhagen, request_file


def evaluate(w: World, exchange: ExchangeResource | None = None):
    context = dg.build_sensor_context(
        instance=w.instance, resources={"exchange": exchange or w.resources()["exchange"]}
    )
    return sf6110_indgang(context)


def deliver(w: World, name: str, minute: int = 0) -> None:
    w.deliver(name, request_file("0101", [opret(name[:30].replace(".", "-"), ALICE)]), received=copenhagen(2026, 10, 1, 9, minute))


def test_one_run_request_for_many_waiting_files_with_a_stable_run_key(tmp_path):
    w = new_world(tmp_path)
    for minute, name in enumerate(["SF6110_0101_a.xml", "SF6110_0101_b.xml", "SF6110_0101_c.xml"]):
        deliver(w, name, minute)
    first = evaluate(w)
    assert isinstance(first, dg.RunRequest)  # one request, not one per file
    assert first.tags["pensionstraek/filer"] == "3"
    again = evaluate(w)
    assert isinstance(again, dg.RunRequest) and again.run_key == first.run_key

    deliver(w, "SF6110_0101_d.xml", 5)
    more = evaluate(w)
    assert isinstance(more, dg.RunRequest) and more.run_key != first.run_key
    assert more.tags["pensionstraek/filer"] == "4"

    # The run it asks for takes them all in; then nothing waits until the platform answers.
    assert w.intake().success
    assert isinstance(evaluate(w), dg.SkipReason)
    w.route()  # the kvitteringer go out; their technical receipts come back to IN/
    receipts = evaluate(w)
    assert isinstance(receipts, dg.RunRequest)
    assert (receipts.tags["pensionstraek/filer"], receipts.tags["pensionstraek/kvitteringer"]) == ("0", "4")
    assert receipts.run_key not in (first.run_key, more.run_key)


def test_nothing_waiting_or_only_an_incomplete_delivery_is_skipped(tmp_path):
    w = new_world(tmp_path)
    skipped = evaluate(w)
    assert isinstance(skipped, dg.SkipReason)
    assert "Intet venter" in skipped.skip_message
    # Data without its metadata (the platform is still delivering), and a file being written.
    (w.inbox("udk-pension") / "SF6110_0101_x.xml").write_bytes(b"<x/>")
    (w.inbox("udk-pension") / ".tmp-0123-SF6110_0101_y.xml.metadata").write_bytes(b"<x/>")
    assert isinstance(evaluate(w), dg.SkipReason)


@pytest.mark.parametrize("status", [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTED])
def test_skipped_while_an_intake_run_is_queued_or_running(tmp_path, status, monkeypatch):
    monkeypatch.setattr(sensors, "RETRY_AFTER_FAILURE_SECONDS", 0)
    w = new_world(tmp_path)
    deliver(w, "SF6110_0101_a.xml")
    job = w.defs.resolve_job_def("sf6110_intake")
    # A queued run must say where it comes from (as the daemon's runs do).
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("pensionstraek"), "__repository__"), job.name)
    run = w.instance.create_run_for_job(job_def=job, status=status, remote_job_origin=origin)
    skipped = evaluate(w)
    assert isinstance(skipped, dg.SkipReason)
    assert run.run_id[:8] in skipped.skip_message
    # Once that run has ended (here: failed or cancelled), the waiting file gets its run.
    if status == dg.DagsterRunStatus.STARTED:
        w.instance.report_run_failed(run)
    else:
        w.instance.report_run_canceled(run)
    assert isinstance(evaluate(w), dg.RunRequest)


def test_files_left_waiting_by_a_failed_run_are_asked_for_again_after_a_pause(tmp_path, monkeypatch):
    w = new_world(tmp_path, register=False)
    deliver(w, "SF6110_0101_a.xml")
    before = evaluate(w)
    assert isinstance(before, dg.RunRequest)
    failed = w.intake()  # no pensionssager snapshot: fails, the file stays in IN/
    assert not failed.success

    paused = evaluate(w)
    assert isinstance(paused, dg.SkipReason)
    assert failed.run_id[:8] in paused.skip_message and "fejlede" in paused.skip_message

    monkeypatch.setattr(sensors, "RETRY_AFTER_FAILURE_SECONDS", 0)  # the pause has passed
    retry = evaluate(w)
    assert isinstance(retry, dg.RunRequest)
    assert retry.run_key != before.run_key  # a new key: the daemon launches it
    assert evaluate(w).run_key == retry.run_key  # and only once

    write_pensionssager(w.register_dir)
    assert w.intake().success
    assert isinstance(evaluate(w), dg.SkipReason)  # nothing waits (the kvittering is not yet routed)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def test_a_transient_sftp_error_skips_the_tick(tmp_path):
    w = new_world(tmp_path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(tmp_path / "id"))
    port = _closed_port()
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{port} {key.export_public_key().decode()}")
    closed = ExchangeResource(
        url=f"sftp://udk-pension@127.0.0.1:{port}/udk-pension",
        sftp_key=str(tmp_path / "id"),
        known_hosts=str(tmp_path / "known_hosts"),
        retries=0,
    )
    skipped = evaluate(w, closed)
    assert isinstance(skipped, dg.SkipReason)
    assert "midlertidigt" in skipped.skip_message


@pytest.mark.sshd
def test_a_host_key_or_login_error_fails_the_tick(tmp_path, sftp_server):
    w = new_world(tmp_path)
    reachable = evaluate(w, sftp_server.resource_for("udk-pension"))
    assert isinstance(reachable, (dg.SkipReason, dg.RunRequest))  # the real server answers

    stranger = sftp_server.resource_for("udk-pension", known_hosts=str(sftp_server.wrong_known_hosts()), retries=0)
    with pytest.raises(ExchangeAccessError, match="host key"):
        evaluate(w, stranger)
    wrong_key = sftp_server.resource_for("udk-pension", sftp_key=str(sftp_server.key_for("kp")), retries=0)
    with pytest.raises(ExchangeAccessError, match="refused login"):
        evaluate(w, wrong_key)
