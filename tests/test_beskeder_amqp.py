"""Publishing through the outbox to a real RabbitMQ with the emulated Beskedfordeler: replies,
distribution, manual acknowledgement, a dropped connection, the broker stopped and restarted
mid-publish, and `haendelser` killed (SIGKILL) at many points and run again: the BeskedIds that
reach the recipients are exactly the expected set, repeated only after a kill."""

import contextlib
import datetime as dt
import json
import shutil
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
from tests.sweep import one_ahead
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


# The sweep (issue 10 "a kill at many points of haendelser followed by a rerun"): each kill in a
# fresh copy of the same world, then haendelser again; each kill has its own recipient (kp-<i>),
# so its own expected BeskedIds and its own dueslag. The points: the publishing loop after the
# first, a middle and the last message, after the first and a later group of answers recorded,
# and every other step of writing to the state store (a run has ~30) until the first step at which
# the run completes.
# The sweep runs the machinery of the job's two message assets (tests/kill_haendelser.py); the
# command itself, with its Dagster run, is killed in the middle of publishing.
PUBLISH_POINTS = (1, 28, 56)
RECORD_POINTS = (1, 4)
MAX_WRITES = 80


def _agreement(path: Path, modtager: str) -> None:
    path.write_text(
        json.dumps(
            {
                "11111111-1111-4111-8111-111111111111": {
                    "navn": "KP",
                    "user_system_uuid": "33333333-3333-4333-8333-333333333333",
                    "services": ["SF1411_D"],
                    "felter": ["Tillaegsprocent"],
                    "kommuner": ["0101"],
                    "modtager": modtager,
                }
            }
        )
    )


def _expected(modtager: str) -> set[str]:
    return {beskedid(SF1411_D, modtager, f"{d:02d}0150{n:04d}", "2026-11", "2026-10") for d in range(1, 29) for n in (1234, 2345)}


def _sweep(rabbitmq, tmp_path, points, *, command: bool) -> Counter:
    """Kill haendelser 2026-11 at each point (in its own copy of the world), run it again, and
    judge what reached the recipient; returns the kills per kind of point."""
    from tests import kill_haendelser

    template = _world(tmp_path / "template", rabbitmq.url)
    opdater_vaerdiliste(template.store(), "11111111-1111-4111-8111-111111111111", [(TILFOEJ_KOMMUNE, "0101")])
    # The distributor as the command runs it, in its own process (stopped by PID with SIGTERM).
    emulator = subprocess.Popen(
        [str(Path(sys.executable).with_name("pensionstraek")), "beskedfordeler", "--url", rabbitmq.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def start(numbered: tuple[int, tuple[str, int]]):
        i, (point, n) = numbered
        root = tmp_path / f"k{i}"
        shutil.copytree(template.root, root, symlinks=True)
        world = World(root=root, instance=None)
        modtager = f"kp-{i}"
        _agreement(root / "aftaler.json", modtager)
        (root / "dagster").mkdir()
        env = {
            "PENSIONSTRAEK_AGREEMENTS": str(root / "aftaler.json"),
            "PENSIONSTRAEK_BESKEDFORDELER_URL": rabbitmq.url,
            "PENSIONSTRAEK_REGISTER_URL": str(world.register_dir),
            "PENSIONSTRAEK_STATE_URL": str(world.state_dir),
            "PENSIONSTRAEK_EXCHANGE_URL": str(world.exchange_root / "udk-pension"),
            "DAGSTER_HOME": str(root / "dagster"),
        }
        return (root, world, modtager, env), kill_haendelser.start("2026-11", env, point, n, command=command)

    def wait(started):
        prepared, child = started
        return prepared, kill_haendelser.exit_status(child)

    kills: Counter = Counter()
    try:
        # The next point's killed run goes on while this one is run again and judged (tests/sweep.py).
        with contextlib.closing(one_ahead(list(enumerate(points)), start, wait)) as killed:
            for (_, (point, n)), ((root, world, modtager, env), status) in killed:
                if status == 0 and point == "write":
                    break  # past the run's last step of writing
                assert status == -signal.SIGKILL, (point, n, status)
                kills[point] += 1
                assert kill_haendelser.haendelser("2026-11", env, command=command) == 0, (point, n)
                expected = _expected(modtager)
                store = world.store()
                assert set(beskeder.outbox(store, "2026-11", ["sf1411d"])["beskedid"]) == expected, (point, n)
                assert set(beskeder.with_status(store, "2026-11")["status"]) == {"leveret"}, (point, n)
                got = received_ids(rabbitmq, f"dueslag.{modtager}")
                assert set(got) == expected, (point, n)  # never a missing one, never another id
                # A repeat only of what the killed run had published without its answer recorded:
                # once at most (one kill), and at most as many as it had published.
                assert max(got.values()) <= 2, (point, n)
                if point == "publish":
                    assert sum(got.values()) - len(expected) <= n, (point, n)
                shutil.rmtree(root)
    finally:
        emulator.send_signal(signal.SIGTERM)
        out, err = emulator.communicate(timeout=60)
        rabbitmq.purge("dueslag.")
    assert emulator.returncode == 0, err
    assert "fordelt (20)" in out
    return kills


def test_haendelser_killed_at_many_points_then_run_again(rabbitmq, tmp_path):
    points = [("publish", k) for k in PUBLISH_POINTS] + [("record", k) for k in RECORD_POINTS]
    points += [("write", k) for k in range(1, MAX_WRITES, 2)]
    kills = _sweep(rabbitmq, tmp_path, points, command=False)
    # Every publishing and recording point reached, and many steps of writing.
    assert kills["publish"] == len(PUBLISH_POINTS) and kills["record"] == len(RECORD_POINTS), kills
    assert kills["write"] >= 8, kills


def test_the_haendelser_command_killed_then_run_again(rabbitmq, tmp_path):
    kills = _sweep(rabbitmq, tmp_path, [("publish", 28)], command=True)
    assert kills == Counter({"publish": 1})


# --- The sensor (sf1411-sf2610.md "In Dagster": a new snapshot that passes its contract starts them) ---


def test_the_haendelser_sensor_starts_retries_and_rests(fordeler, tmp_path, monkeypatch):
    from pipelines.partitions import PERIODE
    from pipelines.resources import BeskedfordelerResource
    from pipelines.sensors import haendelser_sensor

    agreements = tmp_path / "aftaler.json"
    _agreement(agreements, "kp-sensor")
    monkeypatch.setenv("PENSIONSTRAEK_AGREEMENTS", str(agreements))
    monkeypatch.delenv("PENSIONSTRAEK_BESKEDFORDELER_URL", raising=False)
    world = _world(tmp_path / "w", fordeler.url)
    opdater_vaerdiliste(world.store(), "11111111-1111-4111-8111-111111111111", [(TILFOEJ_KOMMUNE, "0101")])

    def tick(url: str = ""):
        resources = {**world.resources(), "beskedfordeler": BeskedfordelerResource(url=url)}
        return haendelser_sensor(dg.build_sensor_context(instance=world.instance, resources=resources))

    assert "Ingen pensionssager" in tick().skip_message  # no period known to the instance yet
    world.instance.add_dynamic_partitions(PERIODE, ["2026-10", "2026-11"])
    first = tick()
    assert isinstance(first, dg.RunRequest) and first.partition_key == "2026-11"
    assert world.store().listdir("beskeder/kontrakt")  # the verdict, for the run's assets to reuse

    # A newer snapshot that fails its contract starts nothing and says why.
    broken = pl.read_parquet(world.register_dir / "pensionssager" / "2026-11.parquet").with_columns(
        pl.lit("9999").alias("bopaelskommune")
    )
    broken.write_parquet(world.register_dir / "pensionssager" / "2026-12.parquet")
    world.instance.add_dynamic_partitions(PERIODE, ["2026-12"])
    refused = tick()
    assert isinstance(refused, dg.SkipReason) and "holder ikke sin kontrakt" in refused.skip_message
    (world.register_dir / "pensionssager" / "2026-12.parquet").unlink()
    world.instance.delete_dynamic_partition(PERIODE, "2026-12")

    # Busy: a haendelser run in progress is not started twice.
    job = world.defs.resolve_job_def("haendelser")
    running = world.instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.STARTED)
    assert running.run_id[:8] in tick().skip_message
    world.instance.report_run_failed(running)

    # The requested run, without a broker: the messages wait in the outbox; nothing to retry yet.
    outcome = run_job("haendelser", first_periode=first.partition_key, on=world.instance, definitions=world.defs)
    assert outcome.success, outcome.problems
    assert set(beskeder.with_status(world.store(), "2026-11")["status"]) == {"venter"}
    assert "intet venter" in tick().skip_message
    # With a broker they are retried: a run for the newest period, once per retry interval.
    again = tick(fordeler.url)
    assert isinstance(again, dg.RunRequest) and again.partition_key == "2026-11" and "-igen-" in again.run_key
    assert tick(fordeler.url).run_key == again.run_key
    monkeypatch.setenv("PENSIONSTRAEK_BESKEDFORDELER_URL", fordeler.url)
    outcome = run_job("haendelser", first_periode=again.partition_key, on=world.instance, definitions=world.defs)
    assert outcome.success, outcome.problems
    assert set(beskeder.with_status(world.store(), "2026-11")["status"]) == {"leveret"}
    assert set(received_ids(fordeler, "dueslag.kp-sensor")) == _expected("kp-sensor")
    # Everything delivered, nothing new: the sensor rests.
    assert isinstance(tick(fordeler.url), dg.SkipReason)
