"""Beskedfordeler over AMQP 0-9-1 (pika): the outbox's message transport and the consumer of the
pipeline's own queue (sf1411-sf2610.md "Delivery through Beskedfordeler").

Publishing as KOMBIT's sample code does: exchange AFSEND_BESKED_EXCHANGE, empty routing key,
`mandatory`, persistent, `message_id` = BeskedId, `content_type` application/xml, a
`correlation_id` and `reply_to` amq.rabbitmq.reply-to (direct reply-to: the client consumes the
pseudo-queue with auto-ack before it publishes). The answer is a StandardRetur: 20 delivered, 40
refused (both final); any other code, no answer within the timeout, a returned message or a
dropped connection: published again, with backoff, with the same BeskedId. What is still
unanswered when the transport gives up stays waiting in the outbox for the next run.

PENSIONSTRAEK_BESKEDFORDELER_URL: `amqps://…` (TLS; a client certificate from
PENSIONSTRAEK_BESKEDFORDELER_CERT / _KEY, the broker's CA from _CA, else the system's), or
`amqp://` only to a loopback address (the emulator)."""

from __future__ import annotations

import collections
import heapq
import ipaddress
import logging
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import urlsplit

import pika
import pika.exceptions

from contracts.beskedkuvert import STATUS_MODTAGET, STATUS_UGYLDIG, BeskedError, read_standard_retur
from pipelines.config import (
    BESKEDFORDELER_CA,
    BESKEDFORDELER_CERT,
    BESKEDFORDELER_KEY,
    BESKEDFORDELER_URL,
    ConfigError,
    env,
)
from pipelines.outbox import Answer, Outgoing

EXCHANGE = "AFSEND_BESKED_EXCHANGE"
REPLY_TO = "amq.rabbitmq.reply-to"
OWN_QUEUE = "dueslag.udk-pension"

# What a lost connection looks like in pika: reconnect and publish what is unanswered again.
CONNECTION_ERRORS = (
    pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
)

log = logging.getLogger(__name__)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connection_parameters(url: str) -> pika.URLParameters:
    """Judge the URL (amqps://, or amqp:// to a loopback address) and make pika's parameters."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ConfigError(f"{BESKEDFORDELER_URL}={_safe(url)!r}: use amqps://host:5671/BF (or amqp:// to 127.0.0.1)")
    if parts.scheme == "amqp" and not _loopback(parts.hostname):
        raise ConfigError(
            f"{BESKEDFORDELER_URL}={_safe(url)!r}: amqp:// (without TLS) is only allowed to a loopback address; use amqps://"
        )
    try:
        parameters = pika.URLParameters(url)
    except Exception as exc:  # noqa: BLE001 - pika's own message names the part that is wrong
        raise ConfigError(f"{BESKEDFORDELER_URL}={_safe(url)!r} is not a usable AMQP URL: {exc}") from None
    if parts.scheme == "amqps":
        context = ssl.create_default_context(cafile=env(BESKEDFORDELER_CA) or None)
        cert, key = env(BESKEDFORDELER_CERT), env(BESKEDFORDELER_KEY)
        if bool(cert) != bool(key):
            raise ConfigError(f"{BESKEDFORDELER_CERT} and {BESKEDFORDELER_KEY} go together: set both or neither")
        if cert:
            try:
                context.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"{BESKEDFORDELER_CERT}/{BESKEDFORDELER_KEY} cannot be used: {exc}") from None
        parameters.ssl_options = pika.SSLOptions(context, parts.hostname)
    parameters.heartbeat = 30
    parameters.blocked_connection_timeout = 30
    parameters.connection_attempts = 1
    parameters.socket_timeout = 5
    return parameters


def _safe(url: str) -> str:
    """The URL without its password (it goes into messages and logs)."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":****@")
    return url


def connect(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(connection_parameters(url))


def publish(channel, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties, *, mandatory: bool = False) -> None:
    """basic_publish without waiting: the frames are queued on the connection, and the caller
    sends a whole window of them at once with `flush`. pika's BlockingChannel.basic_publish
    flushes the socket and polls after every message (one round through the I/O loop per
    message: ~200 messages a second); its underlying asynchronous channel queues them, which is
    what a pipelined publisher needs. Returned messages still reach the BlockingChannel's
    on-return callbacks, dispatched by `flush`."""
    channel._impl.basic_publish(  # noqa: SLF001 - see above: the blocking wrapper flushes per message
        exchange=exchange, routing_key=routing_key, body=body, properties=properties, mandatory=mandatory
    )


def flush(connection: pika.BlockingConnection, wait: float = 0) -> None:
    """Send everything queued by `publish`, then dispatch what arrived (answers, returns),
    waiting up to `wait` seconds for something to arrive."""
    connection.process_data_events(time_limit=wait)


class AmqpTransport:
    """The outbox's transport for messages (pipelines/outbox.py `Transport`)."""

    def __init__(
        self,
        url: str,
        *,
        reply_timeout: float = 10.0,
        window: int = 1000,
        max_attempts: int = 6,
        backoff_seconds: float = 0.5,
        give_up_after: float = 120.0,
    ):
        connection_parameters(url)  # judged now: a wrong URL stops the run before anything is made
        self.url = url
        self.reply_timeout, self.window, self.max_attempts = reply_timeout, window, max_attempts
        self.backoff_seconds, self.give_up_after = backoff_seconds, give_up_after
        self.attempts_failed = 0  # connection failures, returned messages and timeouts seen (metadata)

    def send(self, items: Sequence[Outgoing]) -> Iterator[Answer]:
        queue: collections.deque[tuple[Outgoing, int]] = collections.deque((item, 0) for item in items)
        later: list[tuple[float, int, Outgoing, int]] = []  # (when, tie, item, attempt) waiting for backoff
        inflight: dict[str, tuple[Outgoing, int, float]] = {}  # correlation_id -> (item, attempt, sent at)
        answered: set[str] = set()
        ready: collections.deque[Answer] = collections.deque()
        deadline = time.monotonic() + self.give_up_after
        connection = channel = None
        tie = 0

        def again(item: Outgoing, attempt: int) -> None:
            nonlocal tie
            self.attempts_failed += 1
            if item.key in answered:
                return
            if attempt + 1 >= self.max_attempts:
                log.warning("besked %s ubesvaret efter %d forsøg; den venter i udbakken", item.key, attempt + 1)
                return
            tie += 1
            heapq.heappush(later, (time.monotonic() + self.backoff_seconds * 2**attempt, tie, item, attempt + 1))

        def on_reply(_channel, _method, properties, body) -> None:
            entry = inflight.pop(properties.correlation_id or "", None)
            key = (properties.correlation_id or "").rsplit("/", 1)[0]
            if key in answered or entry is None and not key:
                return
            try:
                statuskode, fejlbesked = read_standard_retur(body)
            except BeskedError as exc:
                statuskode, fejlbesked = -1, str(exc)
            if statuskode in (STATUS_MODTAGET, STATUS_UGYLDIG):
                answered.add(key)
                outcome = "leveret" if statuskode == STATUS_MODTAGET else "afvist"
                ready.append(Answer(key=key, final=True, outcome=outcome, detail={"statuskode": statuskode, "fejlbesked": fejlbesked}))
            elif entry is not None:
                log.warning("besked %s: StandardRetur %s (%s); sendes igen", key, statuskode, fejlbesked)
                again(entry[0], entry[1])

        def on_return(_channel, _method, properties, _body) -> None:
            entry = inflight.pop(properties.correlation_id or "", None)
            if entry is not None:
                log.warning("besked %s returneret af mægleren (ikke rutet); sendes igen", entry[0].key)
                again(entry[0], entry[1])

        try:
            while queue or inflight or later:
                if time.monotonic() > deadline:
                    log.warning("giver op efter %.0f s; %d besked(er) venter i udbakken", self.give_up_after, len(queue) + len(inflight) + len(later))
                    break
                now = time.monotonic()
                while later and later[0][0] <= now:
                    _, _, item, attempt = heapq.heappop(later)
                    if item.key not in answered:
                        queue.append((item, attempt))
                if connection is None:
                    try:
                        connection = connect(self.url)
                        channel = connection.channel()
                        channel.add_on_return_callback(on_return)
                        # Direct reply-to: consume the pseudo-queue (auto-ack) before publishing.
                        channel.basic_consume(REPLY_TO, on_reply, auto_ack=True)
                    except CONNECTION_ERRORS as exc:
                        log.warning("Beskedfordeler ikke tilgængelig (%s); prøver igen", type(exc).__name__)
                        self.attempts_failed += 1
                        _close(connection)
                        connection = channel = None
                        time.sleep(min(self.backoff_seconds * 4, max(0.0, deadline - time.monotonic())))
                        continue
                try:
                    # Pipelined: a window of messages in flight, topped up when half of it is
                    # answered (so that each flush carries many messages, not one).
                    if len(inflight) <= self.window // 2:
                        sent_at = time.monotonic()
                        while queue and len(inflight) < self.window:
                            item, attempt = queue.popleft()
                            if item.key in answered:
                                continue
                            correlation_id = f"{item.key}/{attempt}"
                            publish(
                                channel,
                                EXCHANGE,
                                "",
                                item.data,
                                pika.BasicProperties(
                                    message_id=item.key,
                                    correlation_id=correlation_id,
                                    reply_to=REPLY_TO,
                                    content_type="application/xml",
                                    delivery_mode=pika.DeliveryMode.Persistent,
                                ),
                                mandatory=True,
                            )
                            inflight[correlation_id] = (item, attempt, sent_at)
                    flush(connection, 0.02 if inflight else 0)
                except CONNECTION_ERRORS as exc:
                    log.warning("forbindelsen til Beskedfordeler tabt (%s); ubesvarede sendes igen", type(exc).__name__)
                    for entry in list(inflight.values()):
                        again(entry[0], entry[1])
                    inflight.clear()
                    _close(connection)
                    connection = channel = None
                    continue
                # In flight in the order sent: only the oldest can have timed out.
                now = time.monotonic()
                while inflight:
                    correlation_id, (item, attempt, sent) = next(iter(inflight.items()))
                    if now - sent <= self.reply_timeout:
                        break
                    del inflight[correlation_id]
                    again(item, attempt)
                while ready:
                    yield ready.popleft()
            while ready:
                yield ready.popleft()
        finally:
            _close(connection)


def _close(connection) -> None:
    if connection is not None:
        try:
            if connection.is_open:
                connection.close()
        except Exception:  # noqa: BLE001 - a connection that is gone is closed enough
            pass


def drain(url: str, queue: str, handle: Callable[[bytes], object], *, limit: int | None = None) -> list[object]:
    """Take every message waiting in `queue` with manual acknowledgement: `handle(body)` makes it
    durable, and only then is it acknowledged (a crash before that leaves it in the queue).
    Returns what `handle` returned, per message."""
    results = []
    connection = connect(url)
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        while limit is None or len(results) < limit:
            method, _properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            results.append(handle(body))
            channel.basic_ack(method.delivery_tag)
    finally:
        _close(connection)
    return results
