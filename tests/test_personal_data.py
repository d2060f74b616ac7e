"""Personal data and secrets never leave in the clear (issue 7, item 8; README "Standards": a CPR
never appears unmasked in a log line, an exception or Dagster metadata).

A whole month at demo scale (the demo's own builders: a 3,000-person register, SF6110 files from
four municipalities with mistakes, a second round of changes, stops and errors, settlement, SF6111
and SF2601), with Python logging at DEBUG for every logger, is run through the Dagster definitions;
then every log line, everything written to stdout/stderr, every Dagster event of every run (step
failures and stack traces included) and every piece of asset and check metadata is scanned for
any of the world's CPR numbers, in ASCII digits or in any other Unicode digit script.

Host keys: over the real sshd, a server key that is not the one in known_hosts stops intake (in
process and from the command line) with one line naming PENSIONSTRAEK_SFTP_KNOWN_HOSTS, and the
private key's content appears nowhere: its path is configuration, never its bytes."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from contracts.sf6110 import RequestFile, decode_request_file
from pipelines.calendar import TZ, first_open_period, previous_periode
from pipelines.config import SFTP_KNOWN_HOSTS
from pipelines.demo import DEMO_KOMMUNER, _second_round
from pipelines.generate import generate_register
from pipelines.generate_sf6110 import generate_request_files
from tests.sshd import SftpServer
from tests.test_intake import ALICE, opret, write_pensionssager
from tests.world import World, request_file

# Any run of ten or more digits, in any script (str patterns: \d is every Unicode decimal digit).
_DIGIT_RUN = re.compile(r"\d{10,}")


def ascii_digits(run: str) -> str:
    return "".join(str(unicodedata.digit(c)) for c in run)


def strings_in(value) -> Iterator[str]:
    """Every string inside a JSON document (keys included), so that escaped non-ASCII digits
    (\\u0661 in serialized events) are read as the characters they stand for."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def leaked(texts: list[str], cprs: set[str]) -> list[str]:
    """The CPRs of `cprs` that appear in full in `texts`, in ASCII or any other digit script."""
    found = set()
    for text in texts:
        for run in _DIGIT_RUN.findall(text):
            digits = ascii_digits(run)
            found |= {cpr for cpr in cprs if cpr in digits} if len(digits) > 10 else ({digits} & cprs)
    return sorted(found)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # exception text and stack included


@pytest.fixture
def debug_logging() -> Iterator[Collect]:
    """DEBUG for every logger: the root, and each logger that does not pass records up."""
    handler = Collect()
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        if logger is logging.getLogger() or not logger.propagate:
            logger.addHandler(handler)
    yield handler
    for logger, level in saved:
        logger.setLevel(level)
        logger.removeHandler(handler)


def dagster_texts(instance: dg.DagsterInstance) -> list[str]:
    """Every event of every run (messages, metadata, errors with stack traces) and every run's
    tags and config, as the strings inside them."""
    texts: list[str] = []
    for run in instance.get_runs():
        texts += strings_in(json.loads(dg.serialize_value(run)))
        for event in instance.all_logs(run.run_id):
            texts += strings_in(json.loads(dg.serialize_value(event)))
    return texts


def test_the_scan_sees_a_cpr_in_any_digit_script():
    cpr = "0101401234"
    arabic = "".join(chr(0x0660 + int(d)) for d in cpr)
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in cpr)
    devanagari = "".join(chr(0x0966 + int(d)) for d in cpr)
    texts = [f"x {arabic} y", json.dumps({"v": fullwidth}), f"id={devanagari}9", "010140-****", "12345678901"]
    decoded = [s for t in texts for s in (strings_in(json.loads(t)) if t.startswith("{") else [t])]
    assert leaked(decoded, {cpr}) == [cpr]
    assert leaked(["010140-****", "0101401235"], {cpr}) == []


def test_a_whole_month_at_demo_scale_leaks_no_cpr_anywhere(tmp_path, debug_logging, capfd):
    w = World(tmp_path, dg.DagsterInstance.ephemeral())
    now = dt_now()
    periode = first_open_period(now)
    generate_register(w.register_dir, [previous_periode(periode), periode], persons=3000, seed=7)
    sager = pl.read_parquet(w.register_dir / "pensionssager" / f"{periode}.parquet")

    first_round = generate_request_files(
        sager, instructions=240, fra_periode=periode, seed=11, kommuner=list(DEMO_KOMMUNER), invalid_share=0.08
    )
    take_in(w, first_round)
    time.sleep(1.1)  # round 2 is received a second later, as in the demo
    second_round = _second_round(w.store().ledger(), sager, periode, first_round)
    take_in(w, second_round)
    settled = w.settle(periode)
    assert settled.success, settled.problems
    w.route()
    receipts = w.intake()  # the technical receipts of what was sent
    assert receipts.success, receipts.problems
    assert w.in_names("kp", "SF6111_*.xml") and w.in_names("ky", "SF2601_*.xml")

    cprs = set(sager["cpr"].to_list())
    for data in [*first_round.values(), *second_round.values()]:
        decoded = decode_request_file(data)
        if isinstance(decoded, RequestFile):
            cprs |= {c for c in decoded.instructions["cpr"].drop_nulls().to_list() if len(c) == 10}
    assert len(cprs) >= 3000

    events = dagster_texts(w.instance)
    captured = capfd.readouterr()
    output = (captured.out + captured.err).splitlines()
    # Not blind: the scan had something to read, and the world's CPRs are in what UDK sent.
    assert len(debug_logging.lines) > 100 and len(events) > 1000
    sent = b"".join(p.read_bytes() for p in w.inbox("kp").glob("SF6111_*.xml"))
    assert leaked([sent.decode()], cprs)

    assert leaked(debug_logging.lines, cprs) == []
    assert leaked(events, cprs) == []
    assert leaked(output, cprs) == []
    print(f"\nscanned {len(debug_logging.lines)} log lines, {len(events)} strings of Dagster events and runs, "
          f"{len(output)} lines of output, for {len(cprs)} CPRs")
    w.instance.dispose()


def take_in(w: World, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        w.send(name, data)
    w.route()
    outcome = w.intake()
    assert outcome.success, outcome.problems
    w.route()


def dt_now():
    import datetime as dt

    return dt.datetime.now(TZ)


# --- host keys and the private key --------------------------------------------------------------


def key_secrets(key: Path) -> list[str]:
    """The private key's content as it could leak: its base64 lines (the whole key and pieces)."""
    lines = [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
    body = "".join(lines)
    return [*lines, body[20:60]]


def secrets_in(texts: list[str], secrets: list[str]) -> list[str]:
    return [s for s in secrets if any(s in t for t in texts)]


@pytest.mark.sshd
def test_a_changed_host_key_stops_intake_in_one_line_and_no_secret_leaks(tmp_path, sftp_server: SftpServer, debug_logging, capfd):
    sftp_server.clear()
    key = sftp_server.key_for("udk-pension")
    w = World(tmp_path, dg.DagsterInstance.ephemeral(), exchange=sftp_server.resource_for("udk-pension"))
    write_pensionssager(w.register_dir)
    name = "SF6110_0101_20261201130000.xml"
    with sftp_server.resource_for("kp").open() as kp:
        data = request_file("0101", [opret("HK-1", ALICE, fra_periode="2027-01")])
        from contracts.envelope import encode_trigger, trigger_for

        kp.write(f"OUT/{name}", data)
        kp.write(f"OUT/{name}.trigger", encode_trigger(trigger_for(name, data, "kp", ["udk-pension"])))
    from pipelines.emulator import route

    route(sftp_server.root)
    good = w.intake()  # over SFTP at DEBUG (asyncssh logs every packet kind at DEBUG)
    assert good.success, good.problems

    # A man in the middle: the server answers with a key known_hosts does not have for it.
    w_wrong = World(
        tmp_path / "wrong",
        w.instance,
        exchange=sftp_server.resource_for("udk-pension", known_hosts=str(sftp_server.wrong_known_hosts())),
    )
    write_pensionssager(w_wrong.register_dir)
    stopped = w_wrong.intake()
    assert not stopped.success
    (problem,) = stopped.problems
    assert "\n" not in problem and SFTP_KNOWN_HOSTS in problem and str(sftp_server.wrong_known_hosts()) in problem

    # The command line, as an operator runs it: exit 1, one line on stderr naming the variable.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENSIONSTRAEK_")} | {
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "PENSIONSTRAEK_EXCHANGE_URL": sftp_server.url_for("udk-pension"),
        "PENSIONSTRAEK_SFTP_KEY": str(key),
        "PENSIONSTRAEK_SFTP_KNOWN_HOSTS": str(sftp_server.wrong_known_hosts()),
        "PENSIONSTRAEK_STATE_URL": str(tmp_path / "cli-state"),
        "PENSIONSTRAEK_REGISTER_URL": str(w.register_dir),
    }
    script = Path(sys.executable).parent / "pensionstraek"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]
    cli = subprocess.run([*command, "intake"], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert cli.returncode == 1, cli
    assert len(cli.stderr.strip().splitlines()) == 1 and SFTP_KNOWN_HOSTS in cli.stderr, cli.stderr
    assert "host key of 127.0.0.1" in cli.stderr

    captured = capfd.readouterr()
    everything = [
        *debug_logging.lines,
        *dagster_texts(w.instance),
        *dg_instance_texts(tmp_path / "dagster"),
        captured.out,
        captured.err,
        cli.stdout,
        cli.stderr,
    ]
    assert secrets_in(everything, key_secrets(key)) == []
    assert leaked(everything, {ALICE}) == []
    sftp_server.clear()


def dg_instance_texts(home: Path) -> list[str]:
    if not (home / "dagster.yaml").exists():
        return []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return dagster_texts(instance)
