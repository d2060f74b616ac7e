"""SF1411 web-service benchmark at national scale (sf1411-sf2610.md "Speed", operations.md
"Scale and speed"); prints its figures, each beside its target.

    .venv/bin/python benchmarks/sf1411.py [--persons 1500000] [--seconds 15] [--rate 1000]
                                          [--clients 2] [--connections 8] [--profile DIR]

Makes the national register (two periods), takes P1 in through the Dagster job (contract and
look-up snapshot), starts `pensionstraek serve` as a subprocess on the embedded default (mutual
TLS, throw-away CA under the temporary ./var/service), and drives HentTillaegsprocent over
keep-alive connections from load-generator processes on the same 2 cores (10 % unknown CPRs):

1. capacity: closed loop, every connection sends its next call as soon as its answer is in;
2. sustained: open loop at --rate calls/s in all, each call's latency counted from the moment it
   was due (a call that waits for a free connection waits on the clock: no coordinated omission);
3. switch: P2 taken in through the Dagster job while a paced load goes on; the time from P2's
   pensionssager contract passing (and from the snapshot's materialization) to the first answer
   naming P2.

The load generator is kept cheap, because it eats the cores the service needs: each process
multiplexes its connections in one thread with a selector over raw TLS sockets and sends
pre-built request bytes; its CPU is reported beside the service's.

Targets: >= 1,000 look-ups/s sustained, p99 < 20 ms, service memory < 1 GiB, a new snapshot
answered < 10 s after its contract passed."""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import resource
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

P1, P2 = "2026-11", "2026-12"
ACTION = "HentTillaegsprocent"


def _request(cpr: str) -> bytes:
    """The whole HTTP request, headers and SOAP body, made once before the clock starts."""
    from pipelines.agreements import KP_AGREEMENT, KP_SYSTEM

    body = (
        '<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
        f'<soap:Body><{ACTION}Request xmlns="urn:oio:udk:pension:sf1411:1">'
        f'<PNR xmlns="http://serviceplatformen.dk/xml/schemas/cpr/PNR/1/">{cpr}</PNR>'
        '<InvocationContext xmlns="http://serviceplatformen.dk/xml/schemas/InvocationContext/1/">'
        f"<ServiceAgreementUUID>{KP_AGREEMENT}</ServiceAgreementUUID><UserSystemUUID>{KP_SYSTEM}</UserSystemUUID>"
        "<UserUUID>7e1d6c5b-4a39-4f28-8e17-6d5c4b3a2918</UserUUID><ServiceUUID>1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9</ServiceUUID>"
        f"</InvocationContext></{ACTION}Request></soap:Body></soap:Envelope>"
    ).encode()
    head = (
        "POST /sf1411 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml; charset=utf-8\r\n"
        f'SOAPAction: "{ACTION}"\r\nContent-Length: {len(body)}\r\n\r\n'
    ).encode()
    return head + body


def _tls_context(certs: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(certs / "client.pem", certs / "client.key")
    return context


def _connect(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def _complete(buffer: bytes) -> int:
    """The length of the whole response at the start of `buffer`, or 0 while it is not all in."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return 0
    head = buffer[:end].lower()
    at = head.find(b"content-length:")
    length = int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) if at >= 0 else 0
    return end + 4 + length if len(buffer) >= end + 4 + length else 0


def call(port: int, certs: Path, cpr: str) -> bytes:
    """One call on a fresh connection (start-up probe, tests of the generator)."""
    with _connect(port, _tls_context(certs)) as sock:
        sock.sendall(_request(cpr))
        buffer = b""
        while not (n := _complete(buffer)):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the answer")
            buffer += chunk
        if not buffer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(buffer[:300])
        return buffer[:n]


def load_generator(port: int, certs: str, cprs: list[str], seconds: float, start_at: float, connections: int,
                   rate: float, watch: str | None, profile: str | None, out) -> None:
    """One process, one thread, `connections` keep-alive connections multiplexed by a selector.
    rate 0: closed loop; else calls fall due every 1/rate s and go out on the next free
    connection. Puts (latencies in µs, errors, unsent, CPU seconds, first time `watch` was
    answered)."""
    context = _tls_context(Path(certs))
    requests = [_request(c) for c in cprs]
    socks = [_connect(port, context) for _ in range(connections)]
    for sock in socks:  # handshake and first call before the clock starts
        sock.sendall(requests[0])
        buffer = b""
        while not _complete(buffer):
            buffer += sock.recv(65536)
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    while time.time() < start_at:
        time.sleep(0.001)
    if profile:
        profiler.enable()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    latencies = array("q")
    errors, first_watch = 0, None
    watched = f"<Periode>{watch}</Periode>".encode() if watch else None
    free = collections.deque(socks)
    busy: dict[ssl.SSLSocket, list] = {}
    due: collections.deque[float] = collections.deque()
    interval = 1 / rate if rate else 0.0
    next_due, end = start_at, start_at + seconds
    i, n = 0, len(requests)
    clock = time.time
    while True:
        now = clock()
        if now < end:
            if interval:
                while next_due <= now:
                    due.append(next_due)
                    next_due += interval
            else:
                due.extend([now] * (len(free) - len(due)))
        elif not busy:
            break
        while free and due:
            sock = free.popleft()
            sock.sendall(requests[i % n])
            i += 1
            busy[sock] = [due.popleft(), b""]
        if now >= end:
            due.clear()
        timeout = max(0.0, min(next_due, end) - now) if interval and free else 1.0
        for key, _ in selector.select(timeout):
            sock = key.fileobj
            state = busy.get(sock)
            chunk = sock.recv(65536)
            while sock.pending():
                chunk += sock.recv(65536)
            if state is None or not chunk:
                raise RuntimeError("the service closed a keep-alive connection or sent unasked")
            buffer = state[1] + chunk
            length = _complete(buffer)
            if not length:
                state[1] = buffer
                continue
            done = clock()
            latencies.append(int((done - state[0]) * 1_000_000))
            if not buffer.startswith(b"HTTP/1.1 200"):
                errors += 1
            elif watched is not None and first_watch is None and watched in buffer:
                first_watch = done
            del busy[sock]
            free.append(sock)
    used = resource.getrusage(resource.RUSAGE_SELF)
    if profile:
        profiler.disable()
        profiler.dump_stats(profile)
    cpu_seconds = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    out.put((latencies.tobytes(), errors, len(due), cpu_seconds, first_watch))
    for sock in socks:
        sock.close()


def _process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").iterdir():
            with open(task / "children") as f:
                todo.extend(int(c) for c in f.read().split())
    return pids


def cpu_seconds(pid: int) -> tuple[float, float]:
    """user and sys seconds of the service and its worker processes."""
    user = system = 0
    for p in _process_tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / os.sysconf("SC_CLK_TCK"), system / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> tuple[float, float]:
    """RSS now and peak (VmHWM), added up over the service's processes."""
    now = peak = 0
    for p in _process_tree(pid):
        status = Path(f"/proc/{p}/status").read_text()
        value = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM"))}
        now, peak = now + value["VmRSS"], peak + value["VmHWM"]
    return now / 1024, peak / 1024


def drive(port: int, certs: Path, cprs: list[str], *, seconds: float, clients: int, connections: int, rate: float,
          service_pid: int, watch: str | None = None, profile: str | None = None, during=None) -> dict:
    """Run `clients` load-generator processes for `seconds` (while `during()` runs, if given) and
    gather their figures with the service's CPU over the same time."""
    queue = multiprocessing.Queue()
    start_at = time.time() + 3 + connections * clients * 0.05
    workers = [
        multiprocessing.Process(target=load_generator, args=(
            port, str(certs), cprs[k::clients], seconds, start_at, connections, rate / clients, watch,
            f"{profile}/generator-{k}.prof" if profile and k == 0 else None, queue,
        ))
        for k in range(clients)
    ]
    for w in workers:
        w.start()
    time.sleep(max(0.0, start_at - time.time()))
    cpu_before = cpu_seconds(service_pid)
    extra = during() if during else None
    if not during:
        time.sleep(seconds / 2)
    rss_during, _ = rss_mib(service_pid)
    results = [queue.get() for _ in workers]
    cpu_after = cpu_seconds(service_pid)
    cpu_used = sum(cpu_after) - sum(cpu_before)
    sys_used = cpu_after[1] - cpu_before[1]
    for w in workers:
        w.join()
    latencies = array("q")
    for raw, *_ in results:
        latencies.frombytes(raw)
    ordered = sorted(latencies)
    count = len(ordered)
    firsts = [r[4] for r in results if r[4] is not None]
    return {
        "calls": count,
        "rate": count / seconds,
        "p50": ordered[count // 2] / 1000 if count else float("nan"),
        "p99": ordered[int(count * 0.99)] / 1000 if count else float("nan"),
        "max": ordered[-1] / 1000 if count else float("nan"),
        "errors": sum(r[1] for r in results),
        "unsent": sum(r[2] for r in results),
        "generator_cpu": sum(r[3] for r in results),
        "service_cpu": cpu_used,
        "service_sys": sys_used,
        "rss": rss_during,
        "first_watch": min(firsts) if firsts else None,
        "during": extra,
    }


def _event_time(run_id: str, event_type: str, asset: str) -> float:
    """When the run's last event of `event_type` (a DagsterEventType name) for `asset` was logged
    (for the checks: when the last of the contract's checks had passed)."""
    import dagster as dg

    from pipelines.runner import instance

    entries = instance().all_logs(run_id, of_type=dg.DagsterEventType[event_type])
    key = dg.AssetKey(asset.split("/"))
    def asset_of(entry):
        data = entry.dagster_event.event_specific_data
        return getattr(data, "asset_key", None) or entry.dagster_event.asset_key

    return max(e.timestamp for e in entries if asset_of(e) == key)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=1_500_000)
    parser.add_argument("--seconds", type=float, default=15, help="per phase")
    parser.add_argument("--rate", type=float, default=1000, help="offered look-ups/s in the sustained phase")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections per process")
    parser.add_argument("--phases", default="capacity,sustained,switch", help="which of capacity, sustained, switch to run")
    parser.add_argument("--profile", type=Path, help="folder: the service runs under pyinstrument, one generator under cProfile")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pensionstraek-bench-sf1411-") as tmp:
        var = Path(tmp)
        env = {
            "PENSIONSTRAEK_REGISTER_URL": str(var / "register"),
            "PENSIONSTRAEK_STATE_URL": str(var / "state"),
            "DAGSTER_HOME": str(var / "dagster"),
        }
        os.environ.update(env)
        for name in ("PENSIONSTRAEK_SERVICE_CERT", "PENSIONSTRAEK_SERVICE_KEY", "PENSIONSTRAEK_SERVICE_CLIENT_CA", "PENSIONSTRAEK_AGREEMENTS"):
            os.environ.pop(name, None)
        import polars as pl

        from pipelines.generate import generate_register
        from pipelines.runner import run_job

        began = time.perf_counter()
        generate_register(var / "register", [P1, P2], args.persons)
        print(f"register: {args.persons} cases x 2 periods in {time.perf_counter() - began:.1f} s", flush=True)

        began = time.perf_counter()
        outcome = run_job("sf1411_snapshot", first_periode=P1)
        assert outcome.success, outcome.problems
        build = outcome.metadata("sf1411/opslagssnapshot")
        print(f"snapshot {P1}: Dagster run (contract + look-up snapshot) {time.perf_counter() - began:.1f} s, asset build {build['build_seconds']:.1f} s", flush=True)

        port = _free_port()
        log = open(var / "serve.log", "wb")
        command = [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port)]
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            command[1:1] = ["-m", "pyinstrument", "--show-all", "-o", str(args.profile.resolve() / "service.txt")]
        service = subprocess.Popen(command, cwd=var, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT)
        certs = var / "var" / "service"
        try:
            deadline = time.time() + 60
            while True:
                try:
                    call(port, certs, "0101010101")
                    break
                except (OSError, ssl.SSLError):
                    if time.time() > deadline or service.poll() is not None:
                        raise RuntimeError((var / "serve.log").read_text()[-2000:])
                    time.sleep(0.3)
            register = pl.read_parquet(var / "register" / "pensionssager" / f"{P1}.parquet", columns=["cpr"])["cpr"]
            known = register.sample(min(90_000, register.len()), seed=1).to_list()
            cprs = [c if i % 10 else f"99{i:08d}"[:10] for i, c in enumerate(known)]  # every tenth: no case
            load = {"clients": args.clients, "connections": args.connections, "service_pid": service.pid}
            profile = str(args.profile.resolve()) if args.profile else None

            phases = args.phases.split(",")
            capacity = drive(port, certs, cprs, seconds=args.seconds, rate=0, profile=profile, **load) if "capacity" in phases else None
            sustained = drive(port, certs, cprs, seconds=args.seconds, rate=args.rate, **load) if "sustained" in phases else None

            # The switch: P2 taken in while a paced load goes on.
            def take_in_p2() -> dict:
                began = time.time()
                outcome = run_job("sf1411_snapshot", first_periode=P2)
                assert outcome.success, outcome.problems
                return {
                    "began": began, "done": time.time(),
                    "contract_passed": _event_time(outcome.run_id, "ASSET_CHECK_EVALUATION", "register/pensionssager"),
                    "materialized": _event_time(outcome.run_id, "ASSET_MATERIALIZATION", "sf1411/opslagssnapshot"),
                    "build": outcome.metadata("sf1411/opslagssnapshot")["build_seconds"],
                }

            switch_seconds = max(args.seconds, 8 + args.persons / 100_000)
            switch = drive(port, certs, cprs, seconds=switch_seconds, clients=1, connections=2, rate=100,
                           service_pid=service.pid, watch=P2, during=take_in_p2) if "switch" in phases else None
            _, rss_peak = rss_mib(service.pid)
            audit_lines = sum(len(p.read_bytes().splitlines()) for p in (var / "state" / "sf1411" / "audit").rglob("*.jsonl"))
        finally:
            # pyinstrument writes its profile on KeyboardInterrupt; uvicorn re-raises SIGTERM itself.
            os.kill(service.pid, signal.SIGINT if args.profile else signal.SIGTERM)
            try:
                service.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(service.pid, signal.SIGKILL)
                service.wait()

        connections = args.clients * args.connections
        for name, phase in (("capacity (closed loop)", capacity), (f"sustained (offered {args.rate:.0f}/s)", sustained)):
            if phase is None:
                continue
            print(
                f"{name}: {phase['calls']} look-ups in {args.seconds:.0f} s over {connections} keep-alive mutual-TLS connections "
                f"({args.clients} processes): {phase['rate']:.0f}/s [target >= 1,000/s]; "
                f"p50 {phase['p50']:.2f} ms, p99 {phase['p99']:.2f} ms [target < 20 ms], max {phase['max']:.1f} ms; "
                f"errors {phase['errors']}, not sent in time {phase['unsent']}",
                flush=True,
            )
            print(
                f"  CPU: service {phase['service_cpu'] * 1000 / max(phase['calls'], 1):.3f} ms per look-up "
                f"({phase['service_cpu'] / args.seconds * 100:.0f} % of a core, {phase['service_sys'] / max(phase['service_cpu'], 1e-9) * 100:.0f} % of it sys), "
                f"load generator {phase['generator_cpu'] * 1000 / max(phase['calls'], 1):.3f} ms per look-up "
                f"({phase['generator_cpu'] / args.seconds * 100:.0f} % of a core)"
            )
        print(f"service memory: RSS {(capacity or sustained or switch)['rss']:.0f} MiB under load, peak (VmHWM, through the switch) {rss_peak:.0f} MiB [target < 1 GiB]")
        taken = switch["during"] if switch else None
        first = switch["first_watch"] if switch else None
        print(
            f"snapshot switch: {P2} Dagster run {taken['done'] - taken['began']:.1f} s, asset build {taken['build']:.1f} s; "
            + (
                f"contract passed -> first {P2} answer {first - taken['contract_passed']:.1f} s [target < 10 s], "
                f"materialized -> first {P2} answer {first - taken['materialized']:.1f} s"
                if first else f"no answer named {P2} within the phase [target < 10 s]"
            )
            + f"; errors during the switch {switch['errors']}"
        ) if switch else None
        print(f"audit: {audit_lines} records")
        print(f"load average (shared machine): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        if args.profile:
            print(f"profiles: {args.profile}/service.txt (pyinstrument), {args.profile}/generator-0.prof (cProfile)")
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
