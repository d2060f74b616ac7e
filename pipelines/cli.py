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


def cmd_haendelser(args: argparse.Namespace) -> int:
    from pipelines.register import RegisterResource
    from pipelines.runner import run_job

    periode = args.periode
    if periode is None:
        periods = RegisterResource.from_env().periods("pensionssager")
        if not periods:
            return _fail("ingen pensionssager-snapshot i registret (PENSIONSTRAEK_REGISTER_URL)")
        periode = periods[-1]
    try:
        outcome = run_job("haendelser", first_periode=periode)
    except ValueError as exc:
        return _fail(str(exc))
    notices = outcome.metadata("sf1411d/notifikationer")
    events = outcome.metadata("sf2610/haendelser")
    received = outcome.metadata("sf2610/overgange")
    if not outcome.success:
        return _fail(f"haendelser {periode} fejlede (run {outcome.run_id[:8]} i Dagster UI): " + "; ".join(outcome.problems))
    print(
        f"haendelser {periode} (run {outcome.run_id[:8]}): "
        f"TIP_OvergangFolkepension modtaget {received.get('modtaget_nu', 0)}, afvist {received.get('afvist_nu', 0)}; "
        f"SF1411_D {notices.get('beskeder', 0)} (leveret {notices.get('status_leveret', 0)}, venter {notices.get('status_venter', 0)}); "
        f"SF2610 {events.get('beskeder', 0)} (leveret {events.get('status_leveret', 0)}, venter {events.get('status_venter', 0)})"
    )
    return 0


def cmd_beskeder(args: argparse.Namespace) -> int:
    import json

    from pipelines.beskeder_cli import besked_rows
    from pipelines.config import STATE_URL, env
    from pipelines.state import StateStore

    rows = besked_rows(StateStore(env(STATE_URL)), args.periode)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for row in rows:
        print(f"{row['periode'] or '-':8} {row['retning']:3} {row['beskedtype']:25} {row['modtager']:14} {row['status']:8} {row['cpr']} {row['beskedid']}")
    counts: dict = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    print(f"{len(rows)} besked(er): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) if rows else "ingen beskeder")
    return 0


def cmd_beskedfordeler(args: argparse.Namespace) -> int:
    from pipelines.amqp import BESKEDFORDELER_URL
    from pipelines.beskedfordeler import run, serve_until_signalled
    from pipelines.config import env

    url = args.url or env(BESKEDFORDELER_URL)
    if not url:
        return _fail(f"angiv --url eller {BESKEDFORDELER_URL} (fx amqp://guest:guest@127.0.0.1:5672/%2F)")
    from pipelines.amqp import connection_parameters

    connection_parameters(url)
    counts = run(url, once=True) if args.once else serve_until_signalled(url)
    print(f"beskedfordeler: {counts.get('modtaget', 0)} fordelt (20), {counts.get('afvist', 0)} afvist (40)")
    return 0


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

    haendelser = commands.add_parser("haendelser", help="take in TIP_OvergangFolkepension, make P's SF1411_D and SF2610 messages, deliver what waits")
    haendelser.add_argument("periode", nargs="?", help="YYYY-MM (default: the newest snapshot)")
    haendelser.set_defaults(func=cmd_haendelser)

    beskeder = commands.add_parser("beskeder", help="the SF1411_D and SF2610 messages made, received and delivered")
    beskeder.add_argument("periode", nargs="?", help="YYYY-MM (default: all)")
    beskeder.add_argument("--json", action="store_true", help="one JSON object per message")
    beskeder.set_defaults(func=cmd_beskeder)

    fordeler = commands.add_parser("beskedfordeler", help="the emulated Beskedfordeler distribution on a RabbitMQ broker")
    fordeler.add_argument("--url", help="the broker (default PENSIONSTRAEK_BESKEDFORDELER_URL)")
    fordeler.add_argument("--once", action="store_true", help="distribute what waits now, then stop")
    fordeler.set_defaults(func=cmd_beskedfordeler)
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
