"""Publishing through the outbox to a real RabbitMQ with the emulated Beskedfordeler: replies,
distribution, manual acknowledgement, a dropped connection, the broker stopped and restarted
mid-publish, and `haendelser` killed (SIGKILL) at many points and run again: the BeskedIds that
reach the recipients are exactly the expected set, repeated only after a kill."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pika
import polars as pl
import pytest

from contracts.beskedkuvert import SF1411_D, beskedid, make_haendelsesbesked, read_haendelsesbesked
from contracts.register import PENSIONSSAGER_SCHEMA
from pipelines import beskedfordeler, beskeder
from pipelines.amqp import AmqpTransport, drain
from pipelines.outbox import Outgoing, deliver
from pipelines.runner import run_job
from pipelines.state import StateStore
from pipelines.subscriptions import TILFOEJ_KOMMUNE, opdater_vaerdiliste
from tests.registers import case_row
from tests.world import World

pytestmark = pytest.mark.rabbitmq

NOW = dt.datetime(2026, 11, 5, 8, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def fordeler(rabbitmq):
    """The emulated distributor in a thread, for one test; dueslag queues emptied after it."""
    stop = threading.Event()
    thread = threading.Thread(target=beskedfordeler.run, args=(rabbitmq.url,), kwargs={"stop": stop, "retry_seconds": 0.5}, daemon=True)
    thread.start()
    yield rabbitmq
    stop.set()
    thread.join(timeout=30)
    rabbitmq.purge("dueslag.")


def messages(n: int, modtager: str = "kp-test", periode: str = "2026-11") -> list[Outgoing]:
    items = []
    for i in range(n):
        cpr = f"0101{50 + i // 10000:02d}{i % 10000:04d}"
        payload = (
            f'<TillaegsprocentAendring xmlns="urn:oio:udk:pension:sf1411d:1"><PNR>{cpr}</PNR><Periode>{periode}</Periode>'
            "<ForrigePeriode>2026-10</ForrigePeriode><OmfattesIkkeLaengere/></TillaegsprocentAendring>"
        )
        data = make_haendelsesbesked(beskedtype=SF1411_D, modtager=modtager, cpr=cpr, periode=periode, forrige_periode="2026-10", payload=payload, dannet=NOW)
        key = beskedid(SF1411_D, modtager, cpr, periode, "2026-10")
        items.append(Outgoing(key=key, data=data, meta={"periode": periode, "kind": "sf1411d", "beskedtype": SF1411_D, "modtager": modtager, "cpr": cpr, "forrige_periode": "2026-10"}))
    return items


def received_ids(broker, queue: str) -> Counter:
    return Counter(read_haendelsesbesked(body).beskedid for body in _take(broker, queue))


def _take(broker, queue):
    return drain(broker.url, queue, lambda body: body)


def test_publish_reply_distribution_and_refusal(fordeler, tmp_path):
    store = StateStore(str(tmp_path))
    items = messages(40)
    bad = Outgoing(key="6d1b2c3a-0000-5000-8000-000000000001", data=b"<Haendelsesbesked/>", meta={"periode": "2026-11", "kind": "sf1411d", "beskedtype": SF1411_D, "modtager": "kp-test", "cpr": "0101500000"})
    answers = deliver(beskeder.MessageBook(store), AmqpTransport(fordeler.url), [*items, bad])
    assert Counter(a.outcome for a in answers) == {"leveret": 40, "afvist": 1}
    status = beskeder.with_status(store)
    assert status.filter(pl.col("beskedid") == bad.key)["status"].to_list() == ["afvist"]
    # A refused message is not published again; nothing else waits either.
    assert deliver(beskeder.MessageBook(store), AmqpTransport(fordeler.url)) == []
    assert received_ids(fordeler, "dueslag.kp-test") == Counter({i.key: 1 for i in items})


def test_a_message_without_an_answer_waits_for_the_next_run(rabbitmq, tmp_path):
    """No distributor consuming: no StandardRetur within the timeout; the transport gives up and
    the messages stay `venter` (published again next run, same BeskedId)."""
    store = StateStore(str(tmp_path))
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    beskedfordeler.declare(connection.channel())
    connection.close()
    transport = AmqpTransport(rabbitmq.url, reply_timeout=0.3, max_attempts=2, backoff_seconds=0.05, give_up_after=5)
    assert deliver(beskeder.MessageBook(store), transport, messages(3)) == []
    assert set(beskeder.with_status(store)["status"]) == {"venter"}
    assert transport.attempts_failed >= 3
    beskedfordeler.run(rabbitmq.url, once=True)  # the two attempts of each reach dueslag …
    got = received_ids(rabbitmq, "dueslag.kp-test")
    assert set(got) == {i.key for i in messages(3)} and set(got.values()) == {2}  # … as repeats, same id
    rabbitmq.purge("dueslag.")


def test_a_dropped_connection_and_a_restarted_broker_lose_nothing(fordeler, tmp_path):
    store = StateStore(str(tmp_path))
    items = messages(1500)
    book = beskeder.MessageBook(store)
    book.intend(items)
    result: dict = {}

    def publish():
        transport = AmqpTransport(fordeler.url, reply_timeout=5, backoff_seconds=0.2, give_up_after=150, window=200)
        result["answers"] = deliver(book, transport)

    publisher = threading.Thread(target=publish)
    publisher.start()
    time.sleep(1.0)
    fordeler.close_connections()
    time.sleep(1.0)
    fordeler.restart()
    publisher.join(timeout=200)
    # Whatever the first run left without an answer goes in a second one.
    deliver(book, AmqpTransport(fordeler.url, give_up_after=60))
    assert set(beskeder.with_status(store)["status"]) == {"leveret"}
    got = received_ids(fordeler, "dueslag.kp-test")
    assert set(got) == {i.key for i in items}  # never a missing one, never another id


def _world(tmp_path, broker_url: str) -> World:
    world = World(root=tmp_path, instance=dg.DagsterInstance.ephemeral())
    folder = world.register_dir / "pensionssager"
    folder.mkdir(parents=True)
    cprs = [f"{d:02d}0150{n:04d}" for d in range(1, 29) for n in (1234, 2345)]
    before = [case_row(c) for c in cprs]
    after = [case_row(c, tillaegsprocent=Decimal("25.00")) for c in cprs]
    pl.DataFrame(before, schema=PENSIONSSAGER_SCHEMA).write_parquet(folder / "2026-10.parquet")
    pl.DataFrame(after, schema=PENSIONSSAGER_SCHEMA).write_parquet(folder / "2026-11.parquet")
    return world


KILL_POINTS = [("commit", 1), ("publish", 1), ("record", 2)]


def _killed_run(world: World, point: str, n: int, env: dict) -> int:
    """`pensionstraek haendelser 2026-11` in its own process, killed at the n-th `point`
    (tests/kill_haendelser.py); returns its exit status."""
    process = subprocess.run(
        [sys.executable, "-m", "tests.kill_haendelser", point, str(n), "2026-11"],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return process.returncode


def test_haendelser_killed_anywhere_then_run_again(rabbitmq, tmp_path, monkeypatch):
    agreements = tmp_path / "aftaler.json"
    agreements.write_text(
        json.dumps(
            {
                "11111111-1111-4111-8111-111111111111": {
                    "navn": "KP",
                    "user_system_uuid": "33333333-3333-4333-8333-333333333333",
                    "services": ["SF1411_D"],
                    "felter": ["Tillaegsprocent"],
                    "kommuner": ["0101"],
                    "modtager": "kp-test",
                }
            }
        )
    )
    monkeypatch.setenv("PENSIONSTRAEK_AGREEMENTS", str(agreements))
    monkeypatch.setenv("PENSIONSTRAEK_BESKEDFORDELER_URL", rabbitmq.url)
    world = _world(tmp_path / "w", rabbitmq.url)
    opdater_vaerdiliste(world.store(), "11111111-1111-4111-8111-111111111111", [(TILFOEJ_KOMMUNE, "0101")])
    env = {
        **os.environ,
        "PENSIONSTRAEK_REGISTER_URL": str(world.register_dir),
        "PENSIONSTRAEK_STATE_URL": str(world.state_dir),
        "PENSIONSTRAEK_EXCHANGE_URL": str(world.exchange_root / "udk-pension"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    # The distributor as the command runs it, in its own process (stopped by PID with SIGTERM).
    emulator = subprocess.Popen(
        [str(Path(sys.executable).with_name("pensionstraek")), "beskedfordeler", "--url", rabbitmq.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = run_job("haendelser", first_periode="2026-10", on=world.instance, definitions=world.defs)
        assert first.success, first.problems  # the first snapshot: nothing to compare with
        statuses = [_killed_run(world, point, n, env) for point, n in KILL_POINTS]
        assert statuses == [-signal.SIGKILL] * 3, statuses
        outcome = run_job("haendelser", first_periode="2026-11", on=world.instance, definitions=world.defs)
        assert outcome.success, outcome.problems
    finally:
        emulator.send_signal(signal.SIGTERM)
        out, err = emulator.communicate(timeout=60)
    assert emulator.returncode == 0, err
    assert "fordelt (20)" in out
    expected = {beskedid(SF1411_D, "kp-test", f"{d:02d}0150{n:04d}", "2026-11", "2026-10") for d in range(1, 29) for n in (1234, 2345)}
    assert set(beskeder.outbox(world.store(), "2026-11", ["sf1411d"])["beskedid"]) == expected
    assert set(beskeder.with_status(world.store(), "2026-11")["status"]) == {"leveret"}
    got = received_ids(rabbitmq, "dueslag.kp-test")
    assert set(got) == expected  # never a missing one, never another id
    # Repeats only of what a killed run had published without recording its answer: at most what
    # the killed runs published (none at the commit, 1, then at most all 56).
    assert 0 < sum(got.values()) - len(expected) <= 1 + len(expected)
    rabbitmq.purge("dueslag.")
