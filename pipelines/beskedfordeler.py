"""The emulated Beskedfordeler distribution (sf1411-sf2610.md "The distributor in this product"),
beside the SFTP emulator (pipelines/emulator.py), on a real RabbitMQ broker.

It consumes what is published to AFSEND_BESKED_EXCHANGE (declaring the exchange and its queue
when missing), judges each message against Beskedkuvert.xsd, puts a valid one in the durable queue
`dueslag.<recipient>` of its TilladtModtager and answers StandardRetur 20 to its `reply_to` with
its `correlation_id`; an invalid one gets 40 and goes nowhere. A delivery is acknowledged only
after its copy in the dueslag and its answer are handed to the broker; a batch of copies is
committed in one AMQP transaction before any of their answers is sent, so a 20 never stands for a
message the broker could still lose.

`pensionstraek beskedfordeler [--url URL]` runs it until SIGTERM/SIGINT; `run(..., once=True)`
distributes what waits and returns (the tests and the demo)."""

from __future__ import annotations

import logging
import signal
import threading
import time

import pika
import pika.exceptions

from contracts.beskedkuvert import STATUS_MODTAGET, STATUS_UGYLDIG, BeskedError, make_standard_retur, read_haendelsesbesked
from pipelines.amqp import CONNECTION_ERRORS, EXCHANGE, connect, flush, publish

AFSEND_QUEUE = "beskedfordeler.afsend"  # the emulator's own queue behind the exchange
BATCH = 500

log = logging.getLogger(__name__)


def declare(channel) -> None:
    """The exchange (fanout: the routing key is empty) and the emulator's durable queue on it."""
    channel.exchange_declare(EXCHANGE, exchange_type="fanout", durable=True)
    channel.queue_declare(AFSEND_QUEUE, durable=True)
    channel.queue_bind(AFSEND_QUEUE, EXCHANGE, routing_key="")


_ACCEPTED = make_standard_retur(STATUS_MODTAGET)


def _standard_retur(status: int, text: str | None) -> bytes:
    return _ACCEPTED if status == STATUS_MODTAGET and text is None else make_standard_retur(status, text)


def dueslag(modtager: str) -> str:
    return f"dueslag.{modtager}"


class _Distributor:
    def __init__(self, connection):
        self.connection = connection
        self.consume = connection.channel()
        self.copies = connection.channel()
        self.copies.tx_select()
        declare(self.consume)
        self.consume.basic_qos(prefetch_count=BATCH)
        self.declared: set[str] = set()
        self.counts = {"modtaget": 0, "afvist": 0}

    def handle_batch(self, batch: list) -> None:
        """Copies of the valid messages into their dueslag (one transaction), then the answers,
        then one acknowledgement for the batch."""
        answers = []
        for method, properties, body in batch:
            try:
                besked = read_haendelsesbesked(body)
            except BeskedError as exc:
                answers.append((properties, STATUS_UGYLDIG, str(exc)))
                self.counts["afvist"] += 1
                continue
            queue = dueslag(besked.modtager)
            if queue not in self.declared:
                self.copies.queue_declare(queue, durable=True)
                self.declared.add(queue)
            publish(
                self.copies,
                "",
                queue,
                body,
                pika.BasicProperties(
                    message_id=properties.message_id or besked.beskedid,
                    content_type="application/xml",
                    delivery_mode=pika.DeliveryMode.Persistent,
                ),
            )
            answers.append((properties, STATUS_MODTAGET, None))
            self.counts["modtaget"] += 1
        # The copies' frames go out ahead of the commit on the same connection (pipelines.amqp
        # `publish` queues them); the answers only after the commit is confirmed.
        self.copies.tx_commit()
        for properties, status, text in answers:
            if properties.reply_to:
                publish(
                    self.consume,
                    "",
                    properties.reply_to,
                    _standard_retur(status, text),
                    pika.BasicProperties(correlation_id=properties.correlation_id, content_type="application/xml"),
                )
        self.consume.basic_ack(batch[-1][0].delivery_tag, multiple=True)
        flush(self.connection)

    def drain(self) -> int:
        """Distribute everything waiting now; returns how many."""
        total = 0
        batch: list = []
        # consume (prefetched, no round trip per message) until the queue has been quiet a moment
        for method, properties, body in self.consume.consume(AFSEND_QUEUE, auto_ack=False, inactivity_timeout=0.5):
            if method is None:
                break
            batch.append((method, properties, body))
            if len(batch) >= BATCH:
                self.handle_batch(batch)
                total, batch = total + len(batch), []
        if batch:
            self.handle_batch(batch)
            total += len(batch)
        self.consume.cancel()
        return total

    def serve(self, stop: threading.Event) -> None:
        batch: list = []

        def on_message(_channel, method, properties, body) -> None:
            batch.append((method, properties, body))

        self.consume.basic_consume(AFSEND_QUEUE, on_message, auto_ack=False)
        while not stop.is_set():
            self.connection.process_data_events(time_limit=0.05)
            # Gather a batch (up to BATCH, the prefetch) for a moment, so that one transaction
            # commits many copies; a lone message waits at most ~0.1 s.
            started = time.monotonic()
            while batch and len(batch) < BATCH and time.monotonic() - started < 0.1:
                self.connection.process_data_events(time_limit=0.01)
            if batch:
                taken, batch[:] = list(batch), []
                self.handle_batch(taken)


def run(url: str, *, once: bool = False, stop: threading.Event | None = None, retry_seconds: float = 1.0) -> dict:
    """Distribute until `stop` is set (or, with `once`, until nothing waits). Survives a broker
    restart: it reconnects and goes on. Returns the counts."""
    stop = stop or threading.Event()
    counts = {"modtaget": 0, "afvist": 0}
    while not stop.is_set():
        distributor = None
        try:
            connection = connect(url)
            try:
                distributor = _Distributor(connection)
                if once:
                    distributor.drain()
                    stop.set()
                else:
                    distributor.serve(stop)
            finally:
                if distributor is not None:
                    _add(counts, distributor.counts)
                try:
                    if connection.is_open:
                        connection.close()
                except Exception:  # noqa: BLE001
                    pass
        except CONNECTION_ERRORS as exc:
            if once:
                raise
            log.warning("Beskedfordeler-emulatoren mistede forbindelsen (%s); forbinder igen", type(exc).__name__)
            stop.wait(retry_seconds)
    return counts


def _add(counts: dict, more: dict) -> None:
    for key, value in more.items():
        counts[key] = counts.get(key, 0) + value


def serve_until_signalled(url: str) -> dict:
    """The command's loop: SIGTERM or SIGINT stops it after the batch in hand."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    started = time.monotonic()
    counts = run(url, stop=stop)
    counts["sekunder"] = round(time.monotonic() - started)
    return counts
