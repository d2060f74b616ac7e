"""National-scale benchmark of the messages (sf1411-sf2610.md, issue 10); prints its figures.

    .venv/bin/python benchmarks/beskeder.py [--persons 1500000] [--changed-bp 300]

One period at national scale: two snapshots of 1.5 million cases, a few per cent changed
(`--changed-bp` basis points), an SF1411_D subscriber for every municipality (its own kommune on
its list, every field allowed) and UDK SAL for SF2610. Measured: the comparison and the making of
every SF1411_D and SF2610 message (rules, payloads, envelopes), the commit to the outbox, and the
publishing through a local RabbitMQ broker with the emulated Beskedfordeler (its own process)
until every message has its StandardRetur 20. Target: made and published in under 30 s on 2
cores. The broker is started like the tests start theirs (tests/rabbitmq.py), in a temporary
folder, and stopped by PID."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=1_500_000)
    parser.add_argument("--changed-bp", type=int, default=300)
    args = parser.parse_args()

    import polars as pl

    from assets.sf1411d import sf1411d_beskeder
    from assets.sf1411d_rules import aftale_frames, forskelle
    from assets.sf2610 import sf2610_beskeder
    from contracts.codes import kommunekoder
    from pipelines import beskeder
    from pipelines.agreements import Agreement
    from pipelines.amqp import AmqpTransport
    from pipelines.generate import changed_snapshot, generate_register
    from pipelines.outbox import deliver
    from pipelines.state import StateStore
    from pipelines.subscriptions import Vaerdiliste
    from tests.rabbitmq import running_broker

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="pensionstraek-bench-beskeder-") as tmp:
        var = Path(tmp)
        t = time.perf_counter()
        generate_register(var / "register", ["2026-10"], persons=args.persons, seed=5)
        forrige = pl.read_parquet(var / "register" / "pensionssager" / "2026-10.parquet")
        nu = changed_snapshot(forrige, args.changed_bp, seed=9)
        print(f"register: {forrige.height:,} sager, lavet på {time.perf_counter() - t:.1f} s")

        agreements, lister = {}, {}
        for i, kk in enumerate(sorted(kommunekoder())):
            uuid = f"00000000-0000-4000-8000-{i:012d}"
            agreements[uuid] = Agreement(
                uuid=uuid, navn=f"Kommune {kk}", user_system_uuid=uuid, services=frozenset({"SF1411_D"}),
                felter=tuple(__import__("contracts.sf1411", fromlist=["x"]).SOCIAL_PENSION_FELTER),
                kommuner=frozenset({kk}), modtager=f"kommune-{kk}",
            )
            lister[uuid] = Vaerdiliste(kommuner=frozenset({kk}))
        dannet = dt.datetime.now(dt.timezone.utc)

        with running_broker() as broker:
            emulator = subprocess.Popen(
                [str(Path(sys.executable).with_name("pensionstraek")), "beskedfordeler", "--url", broker.url],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            try:
                time.sleep(5)  # the emulator declares the exchange
                started, cpu_started = time.perf_counter(), time.process_time()
                diff = forskelle(forrige, nu)  # once for both: each asset of a run compares on its own
                compared, cpu_compared = time.perf_counter(), time.process_time()
                sf1411d = sf1411d_beskeder(diff, aftale_frames(agreements, lister), periode="2026-11",
                                           forrige_periode="2026-10", dannet=dannet, afsender="5f0c2d1e-8b7a-4c3d-9e2f-1a0b9c8d7e6f")
                sf2610 = sf2610_beskeder(diff, modtager="udk-sal", periode="2026-11", forrige_periode="2026-10",
                                         dannet=dannet, afsender="5f0c2d1e-8b7a-4c3d-9e2f-1a0b9c8d7e6f")
                made, cpu_made = time.perf_counter(), time.process_time()
                store = StateStore(str(var / "state"))
                beskeder.commit(store, "2026-11", "sf1411d", sf1411d)
                beskeder.commit(store, "2026-11", "sf2610", sf2610)
                committed = time.perf_counter()
                answers = deliver(beskeder.MessageBook(store), AmqpTransport(broker.url, give_up_after=600))
                published, cpu_published = time.perf_counter(), time.process_time()
                emulator_cpu = _cpu_seconds(emulator.pid)
            finally:
                emulator.terminate()
                emulator.communicate(timeout=60)
        status = beskeder.with_status(store)["status"].value_counts()
        total = sf1411d.height + sf2610.height
        print(f"ændrede sager: {diff.height:,}; beskeder: {sf1411d.height:,} SF1411_D, {sf2610.height:,} SF2610")
        print(f"load average at the start: {load}")
        print(f"sammenligning af {args.persons:,} sager: {compared - started:.1f} s (CPU {cpu_compared - cpu_started:.1f} s)")
        print(f"beskeder lavet (regler, payloads, kuverter): {made - compared:.1f} s (CPU {cpu_made - cpu_compared:.1f} s)")
        print(f"udbakke skrevet: {committed - made:.1f} s")
        print(f"publiceret gennem RabbitMQ og emulatoren til StandardRetur 20: {published - committed:.1f} s "
              f"({total / max(published - committed, 1e-9):,.0f} beskeder/s; CPU: udgiver {cpu_published - cpu_made:.1f} s, "
              f"emulator {emulator_cpu:.1f} s)")
        print(f"i alt lavet og publiceret: {published - started:.1f} s (mål < 30 s på 2 kerner; CPU i denne proces "
              f"{cpu_published - cpu_started:.1f} s); status: {dict(status.iter_rows())}")
        print(f"svar: {len(answers):,}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


def _cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
