"""National-scale benchmark (operations.md "Scale and speed"); prints its figures.

    .venv/bin/python benchmarks/national.py [--persons 1500000] [--instructions 300000]

Targets on a 2-core machine: intake of 98 SF6110 files with 300,000 instructions, kvitteringer
included, under 30 s; settlement of one period with SF6111 and SF2601 for all municipalities,
envelopes included, under 20 s; peak memory under 2 GiB. Everything runs in a temporary folder
on the local exchange, through the same code as production (intake pass; the Dagster settlement
job on a temporary instance)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=1_500_000)
    parser.add_argument("--instructions", type=int, default=300_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pensionstraek-bench-") as tmp:
        var = Path(tmp)
        os.environ.update(
            {
                "PENSIONSTRAEK_EXCHANGE_URL": str(var / "exchange" / "udk-pension"),
                "PENSIONSTRAEK_REGISTER_URL": str(var / "register"),
                "PENSIONSTRAEK_STATE_URL": str(var / "state"),
                "DAGSTER_HOME": str(var / "dagster"),
            }
        )
        import dagster as dg
        import polars as pl

        from contracts.envelope import encode_trigger, trigger_for
        from pipelines.calendar import TZ, first_open_period
        from pipelines.emulator import route
        from pipelines.generate import generate_register
        from pipelines.generate_sf6110 import generate_request_files
        from pipelines.runner import run_job

        periode = first_open_period(dt.datetime.now(TZ))
        for account in ("udk-pension", "kp", "ky"):
            for folder in ("IN", "OUT"):
                (var / "exchange" / account / folder).mkdir(parents=True)

        started = time.perf_counter()
        generate_register(var / "register", [periode], persons=args.persons, seed=1)
        print(f"register {args.persons:,} rows per table for {periode}: {time.perf_counter() - started:6.1f} s")

        started = time.perf_counter()
        sager = pl.read_parquet(var / "register" / "pensionssager" / f"{periode}.parquet")
        files = generate_request_files(sager, instructions=args.instructions, fra_periode=periode, seed=2, invalid_share=0.02)
        out = var / "exchange" / "kp" / "OUT"
        for name, data in files.items():
            (out / name).write_bytes(data)
            (out / f"{name}.trigger").write_bytes(encode_trigger(trigger_for(name, data, "kp", ["udk-pension"])))
        size_mb = sum(len(d) for d in files.values()) / 1e6
        del sager, files
        print(f"generate {args.instructions:,} instructions in 98 files ({size_mb:.0f} MB): {time.perf_counter() - started:6.1f} s")

        started = time.perf_counter()
        route(var / "exchange")
        print(f"route (emulator): {time.perf_counter() - started:6.1f} s")

        instance = dg.DagsterInstance.ephemeral()
        started = time.perf_counter()
        intake = run_job("sf6110_intake", on=instance)  # the production path: asset and its checks
        intake_seconds = time.perf_counter() - started
        if not intake.success:
            print("intake failed: " + "; ".join(intake.problems))
            return 1
        figures = intake.metadata("sf6110/traekanmodninger")
        print(
            f"INTAKE {figures['filer']} files, {figures['anmodninger_modtaget']:,} registered, "
            f"{figures['anmodninger_afvist']:,} rejected, kvitteringer sent, asset checks included: "
            f"{intake_seconds:6.1f} s  (target < 30 s)"
        )
        route(var / "exchange")

        started = time.perf_counter()
        outcome = run_job("maanedlig_afregning", first_periode=periode, on=instance)
        settle_seconds = time.perf_counter() - started
        if not outcome.success:
            print("settlement failed: " + "; ".join(outcome.problems))
            return 1
        sent = len(list((var / "exchange" / "udk-pension" / "OUT").glob("*.trigger")))
        print(f"SETTLEMENT {periode} with SF6111 + SF2601 ({sent} files sent): {settle_seconds:6.1f} s  (target < 20 s)")
        print(f"PEAK MEMORY (max RSS of this process): {peak_mib():,.0f} MiB  (target < 2048 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
