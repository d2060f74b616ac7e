"""`pensionstraek`: the command line of operations.md. Operators script against these names,
arguments and exit codes: 0 on success, 1 with a one-line reason on failure (in Danish, the
spec's names as they are, never a Python class name or a stack trace: those stay in the Dagster
run for the engineer), 2 for a wrong use of the command."""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import sys
from pathlib import Path

from pipelines.config import (
    BESKEDFORDELER_CA,
    BESKEDFORDELER_CERT,
    BESKEDFORDELER_KEY,
    BESKEDFORDELER_URL,
    EXCHANGE_URL,
    MESSAGE_VARIABLES,
    REGISTER_URL,
    RUN_VARIABLE_NAMES,
    SERVICE_VARIABLES,
    SFTP_KEY,
    SFTP_KNOWN_HOSTS,
    STATE_URL,
    VARIABLES,
    ConfigError,
    env,
)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUSY = 3  # another intake runs and does the work; nothing was done (docs/decisions.md)

DESCRIPTION = (
    "Udbetaling Danmarks pipeline for træk i social pension (SF6110, SF6111, SF2601) på "
    "Serviceplatformen. Hver kommando kører de samme Dagster-definitioner mod samme instans som "
    "UI'et (DAGSTER_HOME), så dens kørsler ses dér. Exit-status 0: udført; 1: fejlet, med én "
    "linje om hvorfor; 2: forkert brug."
)


def environment_epilog(names: tuple[str, ...] | None = None) -> str:
    """The variables a command reads, with defaults (pipelines/config.py VARIABLES, one source)."""
    chosen = names if names is not None else tuple(VARIABLES)
    width = max(len(n) for n in chosen)
    lines = ["miljøvariabler (standard i parentes):"]
    lines += [f"  {name:<{width}}  {VARIABLES[name][1]} ({VARIABLES[name][0]})" for name in chosen]
    return "\n".join(lines)


# What each command reads (operations.md "Configuration").
STATE_ONLY = (STATE_URL,)
SNAPSHOT_VARIABLES = (REGISTER_URL, STATE_URL, "DAGSTER_HOME")
SERVE_VARIABLES = (*SERVICE_VARIABLES, STATE_URL)
HAENDELSER_VARIABLES = (*MESSAGE_VARIABLES, REGISTER_URL, STATE_URL, "DAGSTER_HOME")
FORDELER_VARIABLES = (BESKEDFORDELER_URL, BESKEDFORDELER_CERT, BESKEDFORDELER_KEY, BESKEDFORDELER_CA)
STATUS_VARIABLES = (EXCHANGE_URL, SFTP_KEY, SFTP_KNOWN_HOSTS, REGISTER_URL, STATE_URL)


def _fail(message: str) -> int:
    # One line, whatever the message holds (operations.md: "a one-line reason on failure").
    print(f"pensionstraek: {' '.join(str(message).split())}", file=sys.stderr)
    return EXIT_FAILED


def _run_failed(what: str, outcome) -> int:
    from pipelines.runner import summarize_problems

    return _fail(
        f"{what} fejlede (kørsel {outcome.run_id[:8]}, detaljer i Dagster UI): "
        + (summarize_problems(outcome.problems) or "se kørslens log")
    )


def cmd_route(args: argparse.Namespace) -> int:
    from pipelines.emulator import describe, route

    root = Path(args.root)
    if not root.is_dir():
        return _fail(f"{root} er ikke en mappe med konti (<rod>/<konto>/IN|OUT)")
    outcomes = route(root)
    for outcome in outcomes:
        print(describe(outcome))
    print(f"{len(outcomes)} trigger(s) routed, {sum(o.error_code is not None for o in outcomes)} with an error")
    return 0


def cmd_intake(args: argparse.Namespace) -> int:
    from pipelines.runner import one_at_a_time, run_job
    from pipelines.state import LockHeld

    try:
        with one_at_a_time("intake"):
            outcome = run_job("sf6110_intake")
    except LockHeld as exc:
        _fail(str(exc))
        return EXIT_BUSY
    if not outcome.success:
        return _run_failed("intake", outcome)
    metadata = outcome.metadata("sf6110/traekanmodninger")
    print(
        f"intake (run {outcome.run_id[:8]}): {metadata.get('filer', 0)} fil(er): "
        f"{metadata.get('filer_modtaget', 0)} modtaget, {metadata.get('filer_afvist', 0)} afvist, "
        f"{metadata.get('filer_karantaene', 0)} i karantæne, {metadata.get('filer_gentaget', 0)} gentaget, "
        f"{metadata.get('filer_uafgjort', 0)} uafgjort; "
        f"{metadata.get('anmodninger_modtaget', 0)} anmodninger registreret, "
        f"{metadata.get('anmodninger_afvist', 0)} afvist; "
        f"{metadata.get('tekniske_kvitteringer', 0)} teknisk(e) kvittering(er) registreret; "
        f"{metadata.get('ukendte_poster_i_in', 0)} ukendt(e) post(er) i IN/"
    )
    if metadata.get("filer_uafgjort"):
        # docs/decisions.md: a file we could not judge is a failure of ours, so the exit status says so.
        return _fail(
            f"{metadata['filer_uafgjort']} fil(er) kunne ikke afgøres og prøves igen ved næste kørsel: "
            f"{metadata['uafgjorte_filer']} (se checket alle_filer_afgjort i Dagster UI)"
        )
    return 0


def _settle_line(label: str, settled: dict, sf6111: dict | None, sf2601: dict | None) -> str:
    from contracts.money import format_kroner

    # The exact øre, never a float of kroner (the UI's plotting figure).
    line = (
        f"{label}: {settled.get('anmodninger', 0)} aktive anmodninger, "
        f"{settled.get('afregnet', 0)} afregnet ({format_kroner(int(settled.get('afregnet_oere', 0)))} kr), "
        f"{settled.get('afvist', 0)} afvist"
    )
    if sf6111 is None or sf2601 is None:
        return line
    return f"{line}; SF6111 sendt: {sf6111.get('filer_sendt', 0)}, SF2601 sendt: {sf2601.get('filer_sendt', 0)}"


def _split_by_period(metadata: dict, periode: str) -> dict | None:
    """A range's metadata with `<name>_pr_periode` breakdowns, read for one period (None when the
    materialization has no breakdown, i.e. it is the period's own)."""
    split = {k.removesuffix("_pr_periode"): v for k, v in metadata.items() if k.endswith("_pr_periode")}
    if not split:
        return None
    return {name: per.get(periode, 0) for name, per in split.items()}


SETTLE_KEYS = ("settlement/afregning", "sf6111/afsendelse", "sf2601/afsendelse")


def cmd_settle(args: argparse.Namespace) -> int:
    from pipelines.calendar import periods_between
    from pipelines.runner import run_job

    try:
        outcome = run_job("maanedlig_afregning", first_periode=args.periode, last_periode=args.to)
    except ValueError as exc:
        return _fail(str(exc))
    span = args.periode if not args.to else f"{args.periode}..{args.to}"
    if not outcome.success:
        return _run_failed(f"afregning af {span}", outcome)
    label = f"afregning {span} (run {outcome.run_id[:8]})"
    if not args.to:
        print(_settle_line(label, *(outcome.metadata(k, args.periode) for k in SETTLE_KEYS)))
        return 0
    # A range: one line per period from that period's own materialization (operations.md: a range
    # run records each period's own figures), then the run's total.
    periods = periods_between(args.periode, args.to)
    settled = {p: outcome.metadata(SETTLE_KEYS[0], p) for p in periods}
    breakdown = {p: _split_by_period(settled[p], p) for p in periods}
    if all(b is not None for b in breakdown.values()):
        # One materialization for the whole range with per-period breakdowns: the sends are known
        # for the range only, so they are in the total line.
        for p in periods:
            print(_settle_line(f"  {p}", breakdown[p], None, None))
        print(_settle_line(f"{label} i alt", *(outcome.metadata(k) for k in SETTLE_KEYS)))
        return 0
    per_period = [[outcome.metadata(k, p) for k in SETTLE_KEYS] for p in periods]
    for p, figures in zip(periods, per_period):
        print(_settle_line(f"  {p}", *figures))
    total = {
        name: sum(int(f[0].get(name, 0)) for f in per_period)
        for name in ("anmodninger", "afregnet", "afvist", "afregnet_oere")
    }
    sent = [{"filer_sendt": sum(int(f[i].get("filer_sendt", 0)) for f in per_period)} for i in (1, 2)]
    print(_settle_line(f"{label} i alt", total, *sent))
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
    from pipelines.beskedfordeler import run, serve_until_signalled

    url = args.url or env(BESKEDFORDELER_URL)
    if not url:
        return _fail(f"angiv --url eller {BESKEDFORDELER_URL} (fx amqp://guest:guest@127.0.0.1:5672/%2F)")
    from pipelines.amqp import connection_parameters

    connection_parameters(url)
    counts = run(url, once=True) if args.once else serve_until_signalled(url)
    print(f"beskedfordeler: {counts.get('modtaget', 0)} fordelt (20), {counts.get('afvist', 0)} afvist (40)")
    return 0


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


def _state_store():
    """The state store as it is, never made: a command that only reads must not create it."""
    from pipelines.config import check_local_or_url
    from pipelines.state import StateStore

    url = env(STATE_URL)
    check_local_or_url(STATE_URL, url)
    if "://" not in url and not Path(url).is_dir():
        raise ConfigError(f"{STATE_URL}={url!r}: tilstandslageret findes ikke (er intake eller demo kørt?)")
    return StateStore(url)


def cmd_explain(args: argparse.Namespace) -> int:
    from pipelines.explain import ExplainError, explain, render_text

    try:
        answer = explain(_state_store(), args.kommunekode, args.periode, anmodning_id=args.anmodning, cpr=args.cpr)
    except ExplainError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
    else:
        print(render_text(answer))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import datetime as dt

    from pipelines.exchange import ExchangeError, ExchangeResource
    from pipelines.register import RegisterError, RegisterResource
    from pipelines.status import collect, render_text

    problems: list[str] = []
    store = _state_store()
    try:
        register_periods = RegisterResource.from_env().periods("pensionssager")
    except RegisterError as exc:
        register_periods, problems = [], [*problems, f"registeret: {exc}"]
    from pipelines.config import parse_exchange_url

    client = None
    try:
        location = parse_exchange_url(env(EXCHANGE_URL))
        if location.scheme == "file" and not (Path(location.path) / "IN").is_dir():
            # Opening a local account makes its folders; status only looks.
            problems.append(f"udvekslingen: {EXCHANGE_URL}={env(EXCHANGE_URL)!r} har ingen IN/-mappe")
        else:
            client = ExchangeResource.from_env().open()
    except (ExchangeError, ConfigError) as exc:
        problems.append(f"udvekslingen ({EXCHANGE_URL}): {exc}")
    try:
        status = collect(store, client, register_periods, dt.datetime.now(dt.timezone.utc), problems)
    finally:
        if client is not None:
            client.close()
    print(json.dumps(status, ensure_ascii=False, indent=2) if args.json else render_text(status))
    return 0


class _Parser(argparse.ArgumentParser):
    """A wrong use is one line too (exit 2), pointing to the help."""

    def error(self, message: str):
        print(f"pensionstraek: forkert brug af {self.prog}: {message} (se {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


class _Formatter(argparse.HelpFormatter):
    """Wraps a description to the terminal; keeps text with line breaks (the epilog's table of
    variables) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _danish(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """argparse's own headings and -h text in the operator's language."""
    parser._positionals.title = "argumenter"
    parser._optionals.title = "tilvalg"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            action.help = "vis denne hjælp og afslut"
    return parser


def _add(commands, name: str, func, help: str, description: str, variables: tuple[str, ...] | None = RUN_VARIABLE_NAMES):
    parser = commands.add_parser(
        name,
        help=help,
        description=description,
        epilog=environment_epilog(variables) if variables else None,
        formatter_class=_Formatter,
    )
    parser.set_defaults(func=func)
    return _danish(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pensionstraek", description=DESCRIPTION, epilog=environment_epilog(), formatter_class=_Formatter
    )
    _danish(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="KOMMANDO", title="kommandoer")

    demo = _add(
        commands, "demo", cmd_demo,
        "en lille realistisk verden under ./var og en hel måned igennem den",
        "Laver konti (udk-pension, kp, ky), et syntetisk register og SF6110-filer fra fire kommuner "
        "under ./var, leverer dem gennem den emulerede Serviceplatform, kører intake og afregning "
        "af den første åbne periode, router SF6111 og SF2601 ud og skriver et resumé. En ./var som "
        "demoen ikke selv har lavet, røres ikke. Sætter selv PENSIONSTRAEK_EXCHANGE_URL, "
        "PENSIONSTRAEK_REGISTER_URL og PENSIONSTRAEK_STATE_URL til ./var.",
        variables=("DAGSTER_HOME",),
    )
    demo.add_argument("--var", default="./var", help=argparse.SUPPRESS)

    exchange = _danish(commands.add_parser(
        "exchange", help="den emulerede SFTP-tjeneste (Serviceplatformen)",
        description="Den lokale emulator af Serviceplatformens simple SFTP-overførsel (exchange.md).",
        formatter_class=_Formatter,
    ))
    exchange_commands = exchange.add_subparsers(
        dest="exchange_command", required=True, metavar="KOMMANDO", title="kommandoer"
    )
    route = _add(
        exchange_commands, "route", cmd_route,
        "én routing-runde over <rod>/<konto>/IN|OUT",
        "Én routing-runde: hver <afsender>/OUT/<navn>.trigger leveres til modtagernes IN/ med "
        ".metadata, og afsenderen får en teknisk kvittering (.sftpreceipt) i sin IN/ (exchange.md).",
        variables=None,
    )
    route.add_argument("--root", default="./var/exchange", help="mappen med konti (standard ./var/exchange)")

    _add(
        commands, "intake", cmd_intake,
        "behandl alle leverancer og tekniske kvitteringer, der venter i IN/",
        "Hver komplet SF6110-leverance i UDK's IN/ arkiveres, bedømmes (F01–F06, U01–U08), "
        "registreres og besvares med en kvittering, præcis én gang; tekniske kvitteringer på det, "
        "UDK har sendt, registreres. Det samme, som sensoren starter.",
    )

    settle = _add(
        commands, "settle", cmd_settle,
        "afregning, SF6111 og SF2601 for en periode (YYYY-MM) eller et interval",
        "Afregner de registrerede træk for perioden mod pensionsberegningen (settlement.md), laver "
        "SF6111 til hver kommune og SF2601 og sender det, der er nyt. Med --to køres intervallet "
        "som én kørsel (en backfill), og hver periode får sin egen linje.",
    )
    settle.add_argument("periode", metavar="YYYY-MM", help="udbetalingsperioden")
    settle.add_argument("--to", metavar="YYYY-MM", help="sidste periode i et interval: én kørsel over intervallet")

    explain = _add(
        commands, "explain", cmd_explain,
        "revisionssporet: hvad sendte vi kommunen for perioden, og hvorfor",
        "Svarer ud fra tilstandslageret alene (operations.md \"The audit trail: explain\"): for hver "
        "anmodning fra kommunen, der var aktiv i perioden eller havde en instruktion for den, hele "
        "historikken (fil, FileTransferUUID, modtaget, Handling, beløb, kvitteringens udfald og "
        "kode), versionen i kraft, afregningen (status, kode, beløb, netto, rækkefølgen i "
        "borgerens prioritetsgang) og den SF6111-leverance, der bar den (Loebenummer, sendt, "
        "teknisk kvittering). CPR vises fuldt her og kun her.",
        variables=STATE_ONLY,
    )
    explain.add_argument("kommunekode", metavar="KOMMUNEKODE", help="fire cifre, fx 0101")
    explain.add_argument("periode", metavar="YYYY-MM", help="udbetalingsperioden")
    explain.add_argument("--anmodning", metavar="ID", help="kun denne AnmodningId")
    explain.add_argument("--cpr", metavar="CPR", help="kun denne borgers anmodninger (og opslag og beskeder om borgeren)")
    explain.add_argument("--json", action="store_true", help="ét JSON-objekt i stedet for tekst")

    status = _add(
        commands, "status", cmd_status,
        "det første skærmbillede: hvad venter, er i karantæne, mangler kvittering; de nyeste perioder",
        "Hvad der venter i IN/ (leverancer, tekniske kvitteringer, andet), hvad der er i karantæne, "
        "filer sendt uden SUCCESS-kvittering (med alder), de nyeste perioder (fra registeret og "
        "tilstandslageret) med om hver er afregnet og sendt, og næste planlagte afregning "
        "(bankkalender). Læser kun: IN/'s liste, registerets mappe, tilstandslageret.",
        variables=STATUS_VARIABLES,
    )
    status.add_argument("--json", action="store_true", help="ét JSON-objekt i stedet for tekst")

    generate = _danish(commands.add_parser(
        "generate", help="syntetisk register og SF6110-filer (enhver størrelse)",
        description="Syntetiske data til demoer og benchmarks (national skala inklusive).",
        formatter_class=_Formatter,
    ))
    from pipelines.generate_cli import add_arguments

    for sub in add_arguments(generate, _Formatter):
        _danish(sub)
    generate.set_defaults(func=cmd_generate)

    haendelser = _add(
        commands, "haendelser", cmd_haendelser,
        "take in TIP_OvergangFolkepension, make P's SF1411_D and SF2610 messages, deliver what waits",
        "Takes in what waits in dueslag.udk-pension, makes period P's SF1411_D notices and SF2610 "
        "events from the snapshot comparison (P against the newest earlier snapshot), commits them "
        "to the outbox and publishes what has no StandardRetur 20. Without a broker they wait.",
        variables=HAENDELSER_VARIABLES,
    )
    haendelser.add_argument("periode", nargs="?", help="YYYY-MM (default: the newest snapshot)")

    beskeder = _add(
        commands, "beskeder", cmd_beskeder,
        "the SF1411_D and SF2610 messages made, received and delivered",
        "Lists the messages of the outbox and those received, per period: made, delivered (20), "
        "refused (40) or waiting. Reads the state store only.",
        variables=STATE_ONLY,
    )
    beskeder.add_argument("periode", nargs="?", help="YYYY-MM (default: all)")
    beskeder.add_argument("--json", action="store_true", help="one JSON object per message")

    fordeler = _add(
        commands, "beskedfordeler", cmd_beskedfordeler,
        "the emulated Beskedfordeler distribution on a RabbitMQ broker",
        "Distributes what is published to AFSEND_BESKED_EXCHANGE into the durable dueslag.* "
        "queues and answers each message with a StandardRetur, as KOMBIT's Beskedfordeler does.",
        variables=FORDELER_VARIABLES,
    )
    fordeler.add_argument("--url", help="the broker (default PENSIONSTRAEK_BESKEDFORDELER_URL)")
    fordeler.add_argument("--once", action="store_true", help="distribute what waits now, then stop")

    snapshot = _add(
        commands, "snapshot", cmd_snapshot,
        "take in P's register snapshot now (contract + SF1411 look-up snapshot)",
        "Judges P's pensionssager contract and builds the SF1411 look-up snapshot (job "
        "sf1411_snapshot); the running service answers from it within seconds.",
        variables=SNAPSHOT_VARIABLES,
    )
    snapshot.add_argument("periode", nargs="?", help="YYYY-MM (default: the newest period in the register)")

    serve = _add(
        commands, "serve", cmd_serve,
        "the SF1411 web service (SOAP 1.1 over mutual TLS)",
        "Serves SF1411_A, SF1411_B and SF1411_D IF03 over mutual TLS from the newest look-up "
        "snapshot; the agreements and certificates are judged at start. Without the certificate "
        "variables a throw-away CA and certificates are made under ./var/service/.",
        variables=SERVE_VARIABLES,
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443)
    return parser


# The commands that run a Dagster job: they load dagster and the SQLite instance's storages.
DAGSTER_COMMANDS = frozenset({"intake", "settle", "haendelser", "snapshot", "demo"})


def _load_dagster() -> None:
    """Import dagster and the instance's storages (sqlalchemy, alembic) with the cyclic collector
    paused, then move what they made to the permanent generation (issue 11, the fixed cost).
    Modules, classes and functions live as long as the process: the collector's passes over them
    while they load (a third of the import time) and again in every full pass of the run would
    free nothing. Once per process; the collector is on again when the command starts."""
    if "pipelines.sqlite_instance" in sys.modules:
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        import pipelines.runner  # noqa: F401 - dagster, fsspec
        import pipelines.sqlite_instance  # noqa: F401 - dagster's storages
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in DAGSTER_COMMANDS:
            _load_dagster()
        return args.func(args)
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("afbrudt")
    except SystemExit as exc:
        if isinstance(exc.code, str):  # a message (the demo's refusals): one line, status 1
            return _fail(exc.code.removeprefix("pensionstraek: "))
        raise
    except Exception as exc:  # noqa: BLE001 - anything else still ends in one line, never a traceback
        from pipelines.runner import clean_message

        where = env("DAGSTER_HOME")
        return _fail(
            f"{args.command} fejlede: {clean_message(str(exc)) or 'uden besked'} "
            f"(kørslerne og deres log: Dagster-instansen i {where})"
        )


def command() -> None:
    """The `pensionstraek` program (pyproject's console script, and `python -m pipelines.cli`).

    Its process ends when the command does: the cyclic collector's passes over every object at
    interpreter exit (a third of a second after a run) free nothing the OS does not take back
    anyway, so what is left is frozen first. Objects still referenced are torn down as before,
    files closed by their `with`. Only here, not for a process that imports the module (the test
    suite: an extension that counts its objects at exit, DuckDB's, would report them leaked)."""
    atexit.register(gc.freeze)
    sys.exit(main())


if __name__ == "__main__":
    command()
