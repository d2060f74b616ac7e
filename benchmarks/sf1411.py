"""SF1411 web-service benchmark at national scale (sf1411-sf2610.md "Speed", operations.md
"Scale and speed"); prints its figures.

    .venv/bin/python benchmarks/sf1411.py [--persons 1500000] [--seconds 20] [--clients 4]

Makes the national register (two periods), takes P1 in through the Dagster job (contract and
look-up snapshot), starts `pensionstraek serve` as a subprocess on the embedded default (mutual
TLS, throw-away CA under the temporary ./var/service), and drives HentTillaegsprocent over
keep-alive connections from load-generator processes on the same machine (one persistent
http.client connection each, 10 % unknown CPRs). Then takes P2 in while the load goes on and
measures how long until the answers name P2. Targets: >= 1,000 look-ups/s sustained, p99 < 20 ms,
service memory < 1 GiB, snapshot switch < 10 s."""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

P1, P2 = "2026-11", "2026-12"


def _body(cpr: str) -> bytes:
    from pipelines.agreements import KP_AGREEMENT, KP_SYSTEM

    return (
        '<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
        '<soap:Body><HentTillaegsprocentRequest xmlns="urn:oio:udk:pension:sf1411:1">'
        f'<PNR xmlns="http://serviceplatformen.dk/xml/schemas/cpr/PNR/1/">{cpr}</PNR>'
        '<InvocationContext xmlns="http://serviceplatformen.dk/xml/schemas/InvocationContext/1/">'
        f"<ServiceAgreementUUID>{KP_AGREEMENT}</ServiceAgreementUUID><UserSystemUUID>{KP_SYSTEM}</UserSystemUUID>"
        "<UserUUID>7e1d6c5b-4a39-4f28-8e17-6d5c4b3a2918</UserUUID><ServiceUUID>1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9</ServiceUUID>"
        "</InvocationContext></HentTillaegsprocentRequest></soap:Body></soap:Envelope>"
    ).encode()


def _connection(port: int, certs: Path) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(certs / "client.pem", certs / "client.key")
    return http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)


def _call(connection: http.client.HTTPSConnection, cpr: str) -> bytes:
    connection.request("POST", "/sf1411", body=_body(cpr), headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"HentTillaegsprocent"'})
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
    return data


def load_generator(port: int, certs: str, cprs: list[str], seconds: float, start_at: float, connections: int, out) -> None:
    """One process with `connections` threads, each on its own persistent connection: calls
    wait on the service's audit fsync, so throughput comes from calls in flight, as on
    Serviceplatformen, which calls with many connections at once."""
    import threading

    latencies: list[int] = []
    lock = threading.Lock()

    def connection_loop(offset: int) -> None:
        connection = _connection(port, Path(certs))
        _call(connection, cprs[0])  # handshake before the clock starts
        while time.time() < start_at:
            time.sleep(0.001)
        own: list[int] = []
        i = offset
        end = start_at + seconds
        while time.time() < end:
            begun = time.perf_counter_ns()
            _call(connection, cprs[i % len(cprs)])
            own.append(time.perf_counter_ns() - begun)
            i += connections
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=connection_loop, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(latencies)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    value = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM"))}
    return value["VmRSS"] / 1024, value["VmHWM"] / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=1_500_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=4, help="load-generator processes")
    parser.add_argument("--connections", type=int, default=6, help="keep-alive connections per process")
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
        service = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port)],
            cwd=var, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT,
        )
        certs = var / "var" / "service"
        try:
            deadline = time.time() + 60
            while True:
                try:
                    _call(_connection(port, certs), "0101010101")
                    break
                except (OSError, ssl.SSLError):
                    if time.time() > deadline or service.poll() is not None:
                        raise RuntimeError((var / "serve.log").read_text()[-2000:])
                    time.sleep(0.3)
            register = pl.read_parquet(var / "register" / "pensionssager" / f"{P1}.parquet", columns=["cpr"])["cpr"]
            known = register.sample(90_000, seed=1).to_list()
            cprs = [c if i % 10 else f"99{i:08d}"[:10] for i, c in enumerate(known)]  # every tenth: no case

            queue = multiprocessing.Queue()
            start_at = time.time() + 5
            workers = [
                multiprocessing.Process(target=load_generator, args=(port, str(certs), cprs[n::args.clients], args.seconds, start_at, args.connections, queue))
                for n in range(args.clients)
            ]
            for w in workers:
                w.start()
            time.sleep(max(0.0, start_at - time.time()))
            cpu_before = cpu_seconds(service.pid)
            time.sleep(args.seconds / 2)
            rss_during, _ = rss_mib(service.pid)
            latencies = sorted(sum((queue.get() for _ in workers), []))
            cpu_used = cpu_seconds(service.pid) - cpu_before
            for w in workers:
                w.join()
            n = len(latencies)
            rate = n / args.seconds
            p50 = latencies[n // 2] / 1e6
            p99 = latencies[int(n * 0.99)] / 1e6

            # The switch: P2 taken in while a client keeps asking.
            switch_began = time.perf_counter()
            outcome = run_job("sf1411_snapshot", first_periode=P2)
            assert outcome.success, outcome.problems
            run_done = time.perf_counter()
            pointer_written = os.stat(var / "state" / "sf1411" / "current.json").st_mtime
            connection = _connection(port, certs)
            while f"<Periode>{P2}</Periode>".encode() not in _call(connection, known[0]):
                time.sleep(0.05)
            answered = time.time()
            _, rss_peak = rss_mib(service.pid)
            audit_lines = sum(
                len(p.read_bytes().splitlines()) for p in (var / "state" / "sf1411" / "audit").rglob("*.jsonl")
            )
        finally:
            os.kill(service.pid, signal.SIGTERM)
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(service.pid, signal.SIGKILL)
                service.wait()

        print(
            f"look-ups: {n} in {args.seconds:.0f} s over {args.clients * args.connections} keep-alive mutual-TLS "
            f"connections ({args.clients} processes): {rate:.0f}/s",
            flush=True,
        )
        print(f"latency: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        print(f"service CPU: {cpu_used * 1000 / n:.2f} ms per look-up (TLS, HTTP, SOAP, audit), i.e. ~{n / cpu_used:.0f}/s per core it gets")
        print(f"service memory: RSS {rss_during:.0f} MiB under load, peak (VmHWM, through the switch) {rss_peak:.0f} MiB")
        print(
            f"snapshot switch: {P2} Dagster run {run_done - switch_began:.1f} s (contract + build), "
            f"pointer to first {P2} answer {answered - pointer_written:.1f} s"
        )
        print(f"audit: {audit_lines} records")
        print(f"load average (shared machine): {os.getloadavg()[0]:.1f}")
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
