"""A small TCP proxy on 127.0.0.1 that stands for the network between the pipeline and the sshd
(tests/sshd.py), so that tests can break it where a real network breaks: all connections cut at
once, or once a given number of bytes has passed in one direction (mid-read: server to client;
mid-write: client to server), with an optional action of the test's own at that moment (stop the
sshd, say). Plain threads and sockets; started and stopped by the test that uses it."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

HOST = "127.0.0.1"
DOWN = "down"  # server to client: what the pipeline reads
UP = "up"  # client to server: what the pipeline writes


@dataclass
class _Trip:
    direction: str
    after_bytes: int
    action: Callable[[], None]
    passed: int = 0


@dataclass
class CuttingProxy:
    target_port: int
    port: int = 0
    cuts: int = 0  # how many times connections were cut
    connections: int = 0  # how many client connections were accepted
    passed: dict = field(default_factory=lambda: {DOWN: 0, UP: 0})  # bytes forwarded per direction
    _listener: socket.socket | None = field(default=None, repr=False)
    _open: set = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _trip: _Trip | None = field(default=None, repr=False)
    _threads: list = field(default_factory=list, repr=False)

    def start(self) -> "CuttingProxy":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(64)
        self._listener, self.port = listener, listener.getsockname()[1]
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self.cut()
        for thread in self._threads:
            thread.join(timeout=5)

    # --- faults -------------------------------------------------------------------------------

    def cut(self) -> int:
        """Drop every open connection now, both ends (a reset network); returns how many."""
        with self._lock:
            pairs, self._open = list(self._open), set()
            if pairs:
                self.cuts += 1
        for client, server in pairs:
            for end in (client, server):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
        return len(pairs)

    def trip_after(self, direction: str, after_bytes: int, action: Callable[[], None] | None = None) -> None:
        """Once `after_bytes` more bytes have passed in `direction` (DOWN or UP), run `action`
        (default: cut every connection), once. The bytes in flight are not forwarded."""
        with self._lock:
            self._trip = _Trip(direction, after_bytes, action or self.cut)

    @property
    def tripped(self) -> bool:
        return self._trip is None

    # --- machinery ----------------------------------------------------------------------------

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection((HOST, self.target_port), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()  # the server is down: the client sees its connection closed
                continue
            # Forwarded at once, as the ends themselves send (SSH sets TCP_NODELAY): with Nagle here,
            # each small SFTP request waits for a delayed ACK (~40 ms) at the proxy.
            for end in (client, server):
                end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._open.add((client, server))
                self.connections += 1
            self._spawn(self._pump, client, server, UP, (client, server))
            self._spawn(self._pump, server, client, DOWN, (client, server))

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str, pair) -> None:
        while True:
            try:
                chunk = source.recv(16384)
            except OSError:
                chunk = b""
            if not chunk:
                break
            action = None
            with self._lock:
                self.passed[direction] += len(chunk)
                trip = self._trip
                if trip is not None and trip.direction == direction:
                    trip.passed += len(chunk)
                    if trip.passed >= trip.after_bytes:
                        action, self._trip = trip.action, None
            if action is not None:
                action()
                break
            try:
                sink.sendall(chunk)
            except OSError:
                break
        with self._lock:
            still_open = pair in self._open
            self._open.discard(pair)
        if still_open:
            for end in pair:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()


@contextlib.contextmanager
def cutting_proxy(target_port: int) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(target_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
