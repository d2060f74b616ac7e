"""`pensionstraek generate`: synthetic register and SF6110 files of a chosen size, for demos and
benchmarks (national scale: 1.5 million rows per table, 300,000 instructions over 98 files).

`generate sf6110 --deliver ACCOUNT` sends the files as that partner account would (data in its
OUT/, trigger last, pipelines.emulator.send_from), so that `pensionstraek exchange route` delivers
them to udk-pension's IN/ and `pensionstraek intake` takes them in: a world fed by hand."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser, formatter_class=argparse.HelpFormatter) -> list[argparse.ArgumentParser]:
    """The subcommands `register` and `sf6110` (returned, for the caller's finishing touches)."""
    what = parser.add_subparsers(dest="what", required=True, metavar="HVAD", title="hvad")
    register = what.add_parser(
        "register",
        help="pensionssager og pensionsberegning pr. periode (Parquet)",
        description="Et syntetisk register: pensionssager/<P>.parquet og pensionsberegning/<P>.parquet "
        "for hver periode (register.md), de samme personer i alle perioder.",
        formatter_class=formatter_class,
    )
    register.add_argument("--out", default="./var/register", help="registermappen (standard ./var/register)")
    register.add_argument("--periods", nargs="+", required=True, metavar="YYYY-MM", help="perioderne")
    register.add_argument("--persons", type=int, default=10_000, help="rækker pr. tabel og periode (standard 10000)")
    register.add_argument("--seed", type=int, default=0, help="samme seed, samme filer")
    sf6110 = what.add_parser(
        "sf6110",
        help="SF6110-filer, én pr. kommune, for borgere i et register",
        description="SF6110-filer med OPRET-anmodninger for levende borgere med en AKTIV sag, én fil "
        "pr. kommune (bopælskommunen). Med --out skrives de i en mappe; med --deliver sendes de fra "
        "en partnerkonto i den emulerede Serviceplatform (data i OUT/, trigger til sidst), så "
        "`pensionstraek exchange route` leverer dem til udk-pension's IN/, og `pensionstraek intake` "
        "tager dem ind. Eksempel: pensionstraek generate sf6110 --periode 2027-02 "
        "--deliver ./var/exchange/kp && pensionstraek exchange route && pensionstraek intake",
        formatter_class=formatter_class,
    )
    sf6110.add_argument("--register", default="./var/register", help="registermappen, borgerne tages fra")
    sf6110.add_argument("--periode", required=True, metavar="YYYY-MM", help="registerperioden, borgerne tages fra, og FraPeriode")
    sf6110.add_argument("--instructions", type=int, default=1_000, help="anmodninger i alle filer tilsammen (standard 1000)")
    sf6110.add_argument("--invalid-share", type=float, default=0.0, help="andel af anmodningerne, der bryder en U-regel (0–1)")
    target = sf6110.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="mappen, filerne skrives i")
    target.add_argument(
        "--deliver",
        metavar="KONTO",
        help="en partners kontomappe i den emulerede udveksling (fx ./var/exchange/kp): filerne sendes "
        "derfra med trigger",
    )
    sf6110.add_argument("--recipient", default="udk-pension", help="modtagerkontoen for --deliver (standard udk-pension)")
    sf6110.add_argument("--seed", type=int, default=0, help="samme seed, samme filer")
    return [register, sf6110]


def generate(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.what == "register":
        from pipelines.generate import generate_register

        generate_register(Path(args.out), args.periods, persons=args.persons, seed=args.seed)
        print(f"register: {args.persons} personer × {len(args.periods)} perioder i {args.out} "
              f"({time.perf_counter() - started:.1f} s)")
        return 0
    from pipelines.generate_sf6110 import generate_request_files

    register_file = Path(args.register) / "pensionssager" / f"{args.periode}.parquet"
    if not register_file.is_file():
        raise SystemExit(f"registeret har ingen pensionssager for {args.periode} ({register_file} findes ikke)")
    import polars as pl  # here: building the command line (every command does) needs no polars

    sager = pl.read_parquet(register_file)
    files = generate_request_files(
        sager, instructions=args.instructions, fra_periode=args.periode, seed=args.seed, invalid_share=args.invalid_share
    )
    if args.deliver:
        from pipelines.emulator import send_from

        account = Path(args.deliver)
        try:
            for name, data in files.items():
                send_from(account, name, data, [args.recipient])
        except FileNotFoundError as exc:
            raise SystemExit(str(exc)) from None
        print(
            f"sf6110: {len(files)} filer, {args.instructions} anmodninger sendt fra {account.name} til "
            f"{args.recipient} ({account / 'OUT'}); `pensionstraek exchange route --root {account.parent}` "
            f"leverer dem ({time.perf_counter() - started:.1f} s)"
        )
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    print(f"sf6110: {len(files)} filer, {args.instructions} anmodninger i {out} ({time.perf_counter() - started:.1f} s)")
    return 0
