"""`pensionstraek`: the command line of operations.md. Operators script against these names,
arguments and exit codes: 0 on success, non-zero with a one-line reason on failure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.config import ConfigError

EXIT_FAILED = 1
EXIT_USAGE = 2


def _fail(message: str) -> int:
    # One line, whatever the message holds (operations.md: "a one-line reason on failure").
    print(f"pensionstraek: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_FAILED


def cmd_route(args: argparse.Namespace) -> int:
    from pipelines.emulator import describe, route

    root = Path(args.root)
    if not root.is_dir():
        return _fail(f"{root} is not a folder of accounts (<root>/<account>/IN|OUT)")
    outcomes = route(root)
    for outcome in outcomes:
        print(describe(outcome))
    print(f"{len(outcomes)} trigger(s) routed, {sum(o.error_code is not None for o in outcomes)} with an error")
    return 0


def cmd_intake(args: argparse.Namespace) -> int:
    from pipelines.runner import run_job

    outcome = run_job("sf6110_intake")
    if not outcome.success:
        return _fail(f"intake failed (run {outcome.run_id[:8]} in the Dagster UI): " + "; ".join(outcome.problems))
    metadata = outcome.metadata("sf6110/traekanmodninger")
    print(
        f"intake (run {outcome.run_id[:8]}): {metadata.get('filer', 0)} fil(er): "
        f"{metadata.get('filer_modtaget', 0)} modtaget, {metadata.get('filer_afvist', 0)} afvist, "
        f"{metadata.get('filer_karantaene', 0)} i karantæne; "
        f"{metadata.get('anmodninger_modtaget', 0)} anmodninger registreret, "
        f"{metadata.get('anmodninger_afvist', 0)} afvist; "
        f"{metadata.get('tekniske_kvitteringer', 0)} teknisk(e) kvittering(er) registreret"
    )
    return 0


def cmd_settle(args: argparse.Namespace) -> int:
    from pipelines.runner import run_job

    try:
        outcome = run_job("maanedlig_afregning", first_periode=args.periode, last_periode=args.to)
    except ValueError as exc:
        return _fail(str(exc))
    if not outcome.success:
        return _fail(
            f"settlement of {args.periode} failed (run {outcome.run_id[:8]} in the Dagster UI): "
            + "; ".join(outcome.problems)
        )
    settled = outcome.metadata("settlement/afregning")
    sf6111 = outcome.metadata("sf6111/afsendelse")
    sf2601 = outcome.metadata("sf2601/afsendelse")
    span = args.periode if not args.to else f"{args.periode}..{args.to}"
    print(
        f"afregning {span} (run {outcome.run_id[:8]}): {settled.get('anmodninger', 0)} aktive anmodninger, "
        f"{settled.get('afregnet', 0)} afregnet ({settled.get('afregnet_kr', '0.00')} kr), "
        f"{settled.get('afvist', 0)} afvist; SF6111 sendt: {sf6111.get('filer_sendt', 0)}, "
        f"SF2601 sendt: {sf2601.get('filer_sendt', 0)}"
    )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from pipelines.generate_cli import generate

    return generate(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    return run_demo(Path(args.var))


def cmd_snapshot(args: argparse.Namespace) -> int:
    from pipelines.definitions import resources_from_env
    from pipelines.runner import check_configuration, run_job

    check_configuration()
    periode = args.periode
    if periode is None:
        periods = resources_from_env()["register"].periods("pensionssager")
        if not periods:
            return _fail("ingen pensionssager i registret (PENSIONSTRAEK_REGISTER_URL)")
        periode = periods[-1]
    try:
        outcome = run_job("sf1411_snapshot", first_periode=periode)
    except ValueError as exc:
        return _fail(str(exc))
    if not outcome.success:
        return _fail(f"snapshot {periode} failed (run {outcome.run_id[:8]} in the Dagster UI): " + "; ".join(outcome.problems))
    metadata = outcome.metadata("sf1411/opslagssnapshot")
    aktuel = "SF1411 svarer nu fra den" if metadata.get("aktuel") else "en nyere periode er stadig den aktuelle"
    print(f"snapshot {periode} (run {outcome.run_id[:8]}): {metadata.get('rows', 0)} sager, kontrakt bestået; {aktuel}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pipelines.sf1411_service import serve

    return serve(args.host, args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pensionstraek", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="make a small realistic world under ./var and run a whole month")
    demo.add_argument("--var", default="./var", help=argparse.SUPPRESS)
    demo.set_defaults(func=cmd_demo)

    exchange = commands.add_parser("exchange", help="the emulated Serviceplatformen SFTP service")
    exchange_commands = exchange.add_subparsers(dest="exchange_command", required=True)
    route = exchange_commands.add_parser("route", help="one routing pass over <root>/<account>/IN|OUT")
    route.add_argument("--root", default="./var/exchange", help="the folder of accounts (default ./var/exchange)")
    route.set_defaults(func=cmd_route)

    intake = commands.add_parser("intake", help="process every delivery and receipt waiting in IN/")
    intake.set_defaults(func=cmd_intake)

    settle = commands.add_parser("settle", help="settlement, SF6111 and SF2601 for one period (YYYY-MM)")
    settle.add_argument("periode", help="udbetalingsperiode YYYY-MM")
    settle.add_argument("--to", help="last period of a range YYYY-MM: one run over the range (a backfill)")
    settle.set_defaults(func=cmd_settle)

    generate = commands.add_parser("generate", help="synthetic register and SF6110 files (any size)")
    from pipelines.generate_cli import add_arguments

    add_arguments(generate)
    generate.set_defaults(func=cmd_generate)

    snapshot = commands.add_parser("snapshot", help="take in P's register snapshot now (contract + SF1411 look-up snapshot)")
    snapshot.add_argument("periode", nargs="?", help="YYYY-MM (default: the newest period in the register)")
    snapshot.set_defaults(func=cmd_snapshot)

    serve = commands.add_parser("serve", help="the SF1411 web service (SOAP 1.1 over mutual TLS)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443)
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted")
    except SystemExit as exc:
        if isinstance(exc.code, str):  # a message (the demo's refusals): one line, status 1
            return _fail(exc.code.removeprefix("pensionstraek: "))
        raise
    except Exception as exc:  # noqa: BLE001 - anything else still ends in one line, never a traceback
        return _fail(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
