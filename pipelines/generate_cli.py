"""`pensionstraek generate`: synthetic register and SF6110 files of a chosen size, for demos and
benchmarks (national scale: 1.5 million rows per table, 300,000 instructions over 98 files)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import polars as pl


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_subparsers(dest="what", required=True)
    register = what.add_parser("register", help="pensionssager and pensionsberegning per period (Parquet)")
    register.add_argument("--out", default="./var/register", help="register folder (default ./var/register)")
    register.add_argument("--periods", nargs="+", required=True, help="periods YYYY-MM")
    register.add_argument("--persons", type=int, default=10_000, help="rows per table and period")
    register.add_argument("--seed", type=int, default=0)
    sf6110 = what.add_parser("sf6110", help="SF6110 files, one per municipality, for citizens of a register")
    sf6110.add_argument("--register", default="./var/register", help="register folder to take citizens from")
    sf6110.add_argument("--periode", required=True, help="the register period to take citizens from, and FraPeriode")
    sf6110.add_argument("--instructions", type=int, default=1_000, help="instructions in all files together")
    sf6110.add_argument("--invalid-share", type=float, default=0.0, help="share of instructions that break a U-rule")
    sf6110.add_argument("--out", required=True, help="folder to write the files to")
    sf6110.add_argument("--seed", type=int, default=0)


def generate(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.what == "register":
        from pipelines.generate import generate_register

        generate_register(Path(args.out), args.periods, persons=args.persons, seed=args.seed)
        print(f"register: {args.persons} personer × {len(args.periods)} perioder i {args.out} "
              f"({time.perf_counter() - started:.1f} s)")
        return 0
    from pipelines.generate_sf6110 import generate_request_files

    sager = pl.read_parquet(Path(args.register) / "pensionssager" / f"{args.periode}.parquet")
    files = generate_request_files(
        sager, instructions=args.instructions, fra_periode=args.periode, seed=args.seed, invalid_share=args.invalid_share
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    print(f"sf6110: {len(files)} filer, {args.instructions} anmodninger i {out} ({time.perf_counter() - started:.1f} s)")
    return 0
