"""`pensionstraek` as operators script it (operations.md "The command line" and "Configuration"):
subprocesses with the environment pointing at a temporary world, their runs in DAGSTER_HOME.

Exit status 0 on success; 1 with exactly one line on stderr, naming what to fix, and no traceback;
a wrong configuration value stops before any run is made."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import asyncssh
import dagster as dg
import polars as pl
import pytest

from contracts.register import (
    PENSIONSBEREGNING_SCHEMA,
    PENSIONSSAGER_SCHEMA,
    check_pensionsberegning,
    check_pensionssager,
)
from contracts.sf6110 import RequestFile, decode_request_file
from pipelines.calendar import TZ, first_open_period, last_day, previous_periode
from pipelines.generate import generate_register
from pipelines.generate_sf6110 import generate_request_files
from pipelines.runner import RANGE_END_TAG, RANGE_START_TAG
from tests.world import World

KOMMUNER = ["0101", "0751"]


def pensionstraek() -> list[str]:
    script = Path(sys.executable).parent / "pensionstraek"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]


@dataclasses.dataclass
class Setting:
    world: World
    env: dict[str, str]
    periode: str  # the first open period now: instructions received now count from it
    files: dict[str, bytes]

    @property
    def dagster_home(self) -> Path:
        return Path(self.env["DAGSTER_HOME"])

    def run(self, *args: str, **overrides: str | None) -> subprocess.CompletedProcess:
        env = dict(self.env)
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return subprocess.run(
            [*pensionstraek(), *args],
            cwd=self.world.root,
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    def runs(self) -> list[dg.DagsterRun]:
        with dg.DagsterInstance.from_config(str(self.dagster_home)) as instance:
            return list(instance.get_runs())


def one_line_failure(result: subprocess.CompletedProcess) -> str:
    """The single stderr line of a failed command (asserting there is exactly one)."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("pensionstraek: ")
    return lines[0]


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> Setting:
    root = tmp_path_factory.mktemp("cli")
    world = World(root, instance=None)
    periode = first_open_period(dt.datetime.now(TZ))
    generate_register(world.register_dir, [previous_periode(periode), periode], persons=600, seed=3)
    sager = pl.read_parquet(world.register_dir / "pensionssager" / f"{periode}.parquet")
    files = generate_request_files(sager, instructions=24, fra_periode=periode, seed=5, kommuner=KOMMUNER)
    assert sorted(name.split("_")[1] for name in files) == KOMMUNER
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENSIONSTRAEK_")}
    env.update(
        DAGSTER_HOME=str(root / "dagster"),
        PENSIONSTRAEK_EXCHANGE_URL=str(world.exchange_root / "udk-pension"),
        PENSIONSTRAEK_REGISTER_URL=str(world.register_dir),
        PENSIONSTRAEK_STATE_URL=str(world.state_dir),
    )
    return Setting(world=world, env=env, periode=periode, files=files)


# --- exchange route -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def routed(setting) -> subprocess.CompletedProcess:
    for name, data in setting.files.items():
        setting.world.send(name, data)
    return setting.run("exchange", "route", "--root", str(setting.world.exchange_root))


def test_route_prints_one_line_per_trigger(setting, routed):
    assert routed.returncode == 0, routed.stderr
    lines = routed.stdout.splitlines()
    assert len(lines) == len(setting.files) + 1, lines
    for name in setting.files:
        (line,) = [l for l in lines if f"kp/OUT/{name} " in l]
        assert re.search(r"-> udk-pension: delivered \(FileTransferUUID [0-9a-f-]{36}\)$", line), line
    assert lines[-1] == f"{len(setting.files)} trigger(s) routed, 0 with an error"
    for name in setting.files:
        assert setting.world.in_names("udk-pension", f"{name}*") == [name, f"{name}.metadata"]


def test_route_of_a_missing_folder_fails_in_one_line(setting, tmp_path):
    missing = tmp_path / "no-such-exchange"
    line = one_line_failure(setting.run("exchange", "route", "--root", str(missing)))
    assert str(missing) in line


# --- intake and settle, against DAGSTER_HOME ------------------------------------------------------


@pytest.fixture(scope="module")
def taken_in(setting, routed) -> subprocess.CompletedProcess:
    return setting.run("intake")


def test_intake_answers_every_file_and_its_run_is_in_the_instance(setting, taken_in):
    assert taken_in.returncode == 0, taken_in.stderr
    assert f"{len(setting.files)} fil(er): {len(setting.files)} modtaget, 0 afvist" in taken_in.stdout
    kvitteringer = sorted(p.name for p in (setting.world.exchange_root / "udk-pension" / "OUT").glob("SF6110K_*.xml"))
    assert sorted(k.split("_")[1] for k in kvitteringer) == KOMMUNER
    assert setting.world.in_names("udk-pension", "SF6110_*") == []  # processed pairs leave IN/
    run_id = re.search(r"\(run ([0-9a-f]{8})\)", taken_in.stdout).group(1)
    (run,) = [r for r in setting.runs() if r.run_id.startswith(run_id)]
    assert run.job_name == "sf6110_intake" and run.status == dg.DagsterRunStatus.SUCCESS


def test_intake_again_records_the_receipts_and_judges_nothing_twice(setting, taken_in):
    setting.world.route()  # the kvitteringer go to kp; UDK gets the platform's receipts
    again = setting.run("intake")
    assert again.returncode == 0, again.stderr
    assert "0 fil(er)" in again.stdout
    assert f"{len(setting.files)} teknisk(e) kvittering(er) registreret" in again.stdout
    assert setting.world.in_names("kp", "SF6110K_*.xml") and len(setting.world.in_names("kp", "SF6110K_*.xml")) == 2


@pytest.fixture(scope="module")
def settled(setting, taken_in) -> subprocess.CompletedProcess:
    return setting.run("settle", setting.periode)


def test_settle_sends_sf6111_and_its_run_is_a_partition_in_the_instance(setting, settled):
    assert settled.returncode == 0, settled.stderr
    out = setting.world.exchange_root / "udk-pension" / "OUT"
    sf6111 = sorted(p.name for p in out.glob("SF6111_*.xml"))
    assert sorted(n.split("_")[1] for n in sf6111) == KOMMUNER
    assert all(n.endswith(f"_{setting.periode.replace('-', '')}_001.xml") for n in sf6111)
    assert f"SF6111 sendt: {len(sf6111)}" in settled.stdout
    run_id = re.search(r"\(run ([0-9a-f]{8})\)", settled.stdout).group(1)
    (run,) = [r for r in setting.runs() if r.run_id.startswith(run_id)]
    assert run.job_name == "maanedlig_afregning" and run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == setting.periode


def test_settle_a_range_is_one_run_and_sends_nothing_unchanged_again(setting, settled):
    out = setting.world.exchange_root / "udk-pension" / "OUT"
    before = sorted(p.name for p in out.iterdir())
    first = previous_periode(setting.periode)
    result = setting.run("settle", first, "--to", setting.periode)
    assert result.returncode == 0, result.stderr
    assert f"afregning {first}..{setting.periode}" in result.stdout
    # P's files are unchanged: none is sent again; only the earlier period (no requests there,
    # but SF2601 for what was paid to municipalities) adds files.
    assert "SF6111 sendt: 0" in result.stdout
    stamp = setting.periode.replace("-", "")
    after = sorted(p.name for p in out.iterdir())
    assert [n for n in after if f"_{stamp}_" in n] == [n for n in before if f"_{stamp}_" in n]
    assert all(f"_{first.replace('-', '')}_001.xml" in n for n in set(after) - set(before))
    run_id = re.search(r"\(run ([0-9a-f]{8})\)", result.stdout).group(1)
    (run,) = [r for r in setting.runs() if r.run_id.startswith(run_id)]
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert (run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) == (first, setting.periode)


# --- a wrong value stops at once, in one line naming it --------------------------------------------


@pytest.fixture(scope="module")
def ssh_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("ssh")
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(folder / "id_ed25519"))
    (folder / "known_hosts").write_text(f"[127.0.0.1]:1 {key.export_public_key().decode().strip()}\n")
    (folder / "not_a_key").write_text("this is not a private key\n")
    (folder / "broken.toml").write_text("[[partner]\naccount = 'kp'\n")
    (folder / "unknown_kommune.toml").write_text("[[partner]]\naccount = 'kp'\nsf6110_for = ['9999']\n")
    return {name: str(folder / name) for name in ("id_ed25519", "known_hosts", "not_a_key", "broken.toml", "unknown_kommune.toml")}


SFTP = "sftp://udk@127.0.0.1:1/udk-pension"

# case: (command, environment overrides (file names from ssh_files), what the one line must name)
WRONG = {
    "unknown scheme": (["intake"], {"PENSIONSTRAEK_EXCHANGE_URL": "ftp://x"}, "PENSIONSTRAEK_EXCHANGE_URL"),
    "sftp without known_hosts": (
        ["intake"],
        {"PENSIONSTRAEK_EXCHANGE_URL": SFTP, "PENSIONSTRAEK_SFTP_KEY": "id_ed25519"},
        "PENSIONSTRAEK_SFTP_KNOWN_HOSTS",
    ),
    "missing key file": (
        ["intake"],
        {"PENSIONSTRAEK_EXCHANGE_URL": SFTP, "PENSIONSTRAEK_SFTP_KEY": "/no/such/key", "PENSIONSTRAEK_SFTP_KNOWN_HOSTS": "known_hosts"},
        "PENSIONSTRAEK_SFTP_KEY",
    ),
    "key file that is not a key": (
        ["intake"],
        {"PENSIONSTRAEK_EXCHANGE_URL": SFTP, "PENSIONSTRAEK_SFTP_KEY": "not_a_key", "PENSIONSTRAEK_SFTP_KNOWN_HOSTS": "known_hosts"},
        "PENSIONSTRAEK_SFTP_KEY",
    ),
    "unreadable partners": (["intake"], {"PENSIONSTRAEK_PARTNERS": "/no/such/partners.toml"}, "PENSIONSTRAEK_PARTNERS"),
    "broken partners": (["intake"], {"PENSIONSTRAEK_PARTNERS": "broken.toml"}, "PENSIONSTRAEK_PARTNERS"),
    "partners naming an unknown kommune": (["intake"], {"PENSIONSTRAEK_PARTNERS": "unknown_kommune.toml"}, "PENSIONSTRAEK_PARTNERS"),
    "keep deliveries maybe": (["intake"], {"PENSIONSTRAEK_KEEP_DELIVERIES": "maybe"}, "PENSIONSTRAEK_KEEP_DELIVERIES"),
    "no intake workers": (["intake"], {"PENSIONSTRAEK_INTAKE_WORKERS": "0"}, "PENSIONSTRAEK_INTAKE_WORKERS"),
    "unknown register scheme": (["intake"], {"PENSIONSTRAEK_REGISTER_URL": "nosuchscheme://x"}, "PENSIONSTRAEK_REGISTER_URL"),
    "settle with a wrong exchange URL": (["settle", "P"], {"PENSIONSTRAEK_EXCHANGE_URL": "ftp://x"}, "PENSIONSTRAEK_EXCHANGE_URL"),
    # Periods outside the monthly partitions (or not periods at all).
    "settle no such month": (["settle", "2027-13"], {}, "2027-13"),
    "settle before the partitions": (["settle", "2025-06"], {}, "2025-06"),
    "settle after the partitions": (["settle", "2099-01"], {}, "2099-01"),
    "settle a backwards range": (["settle", "P", "--to", "P-1"], {}, "går baglæns"),
}


@pytest.fixture(scope="module")
def refused(setting, ssh_files) -> tuple[dict[str, subprocess.CompletedProcess], tuple, tuple]:
    """Every case of WRONG, run side by side (they are independent), with the runs and the state
    folder before and after all of them."""

    def snapshot() -> tuple:
        runs = len(setting.runs()) if setting.dagster_home.exists() else 0
        state = setting.world.state_dir
        return runs, sorted(str(p.relative_to(state)) for p in state.rglob("*")) if state.exists() else []

    periods = {"P": setting.periode, "P-1": previous_periode(setting.periode)}
    before = snapshot()
    started = {}
    for case, (args, overrides, _) in WRONG.items():
        env = {**setting.env, **{name: ssh_files.get(value, value) for name, value in overrides.items()}}
        started[case] = subprocess.Popen(
            [*pensionstraek(), *(periods.get(a, a) for a in args)],
            cwd=setting.world.root, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
    results = {}
    for case, process in started.items():
        stdout, stderr = process.communicate(timeout=120)
        results[case] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results, before, snapshot()


@pytest.mark.parametrize("case", list(WRONG))
def test_a_wrong_value_stops_at_once_in_one_line_naming_it(refused, case):
    results, _, _ = refused
    line = one_line_failure(results[case])
    assert WRONG[case][2] in line, line


def test_a_refused_command_makes_no_run_and_touches_no_state(refused):
    _, before, after = refused
    assert after == before


# --- generate -------------------------------------------------------------------------------------


def test_generate_register_writes_files_that_keep_the_contract(setting, tmp_path):
    periode = setting.periode
    result = setting.run("generate", "register", "--out", str(tmp_path / "register"), "--periods", periode, "--persons", "80", "--seed", "9")
    assert result.returncode == 0, result.stderr
    sager = pl.read_parquet(tmp_path / "register" / "pensionssager" / f"{periode}.parquet")
    beregning = pl.read_parquet(tmp_path / "register" / "pensionsberegning" / f"{periode}.parquet")
    assert sager.height == 80
    assert sager.schema == PENSIONSSAGER_SCHEMA and beregning.schema == PENSIONSBEREGNING_SCHEMA
    assert check_pensionssager(sager, last_day(periode)).passed
    assert check_pensionsberegning(beregning, periode, sager).passed


def test_generate_sf6110_writes_files_that_decode(setting, tmp_path):
    periode = setting.periode
    out = tmp_path / "sf6110"
    result = setting.run(
        "generate", "sf6110", "--register", str(setting.world.register_dir), "--periode", periode,
        "--instructions", "40", "--out", str(out), "--seed", "4",
    )
    assert result.returncode == 0, result.stderr
    sager = pl.read_parquet(setting.world.register_dir / "pensionssager" / f"{periode}.parquet")
    total = 0
    for path in sorted(out.glob("SF6110_*.xml")):
        decoded = decode_request_file(path.read_bytes())
        assert isinstance(decoded, RequestFile), (path.name, decoded)
        assert path.name.startswith(f"SF6110_{decoded.kommunekode}_")
        cprs = decoded.instructions["cpr"].to_list()
        residents = sager.filter(pl.col("bopaelskommune") == decoded.kommunekode)["cpr"].to_list()
        assert set(cprs) <= set(residents), path.name
        total += decoded.antal_anmodninger
    assert total == 40


def test_generate_sf6110_without_a_register_fails_in_one_line(setting, tmp_path):
    line = one_line_failure(
        setting.run("generate", "sf6110", "--register", str(tmp_path / "none"), "--periode", setting.periode, "--out", str(tmp_path / "o"))
    )
    assert "none" in line


def test_a_failed_run_ends_in_one_line_and_stays_in_the_instance(setting):
    # A period the register holds a snapshot of, but no calculation for: the run starts and fails.
    periode = previous_periode(previous_periode(setting.periode))
    register = setting.world.register_dir
    shutil.copy(register / "pensionssager" / f"{previous_periode(setting.periode)}.parquet", register / "pensionssager" / f"{periode}.parquet")
    assert not (register / "pensionsberegning" / f"{periode}.parquet").exists()
    line = one_line_failure(setting.run("settle", periode))
    assert f"afregning af {periode} fejlede" in line and "PENSIONSTRAEK_REGISTER_URL" in line
    assert f"register/pensionsberegning: registeret har ingen pensionsberegning for {periode}" in line
    # In Danish, said once, without Python's class paths (they stay in the run's event log).
    assert line.count("PENSIONSTRAEK_REGISTER_URL") == 1, line
    assert not re.search(r"dagster\.|_core|Failure|Error|Exception|Traceback", line), line
    assert len(line) < 400, line
    run_id = re.search(r"\(kørsel ([0-9a-f]{8}), detaljer i Dagster UI\)", line).group(1)
    (run,) = [r for r in setting.runs() if r.run_id.startswith(run_id)]
    assert run.status == dg.DagsterRunStatus.FAILURE and run.tags["dagster/partition"] == periode


def test_a_runs_problems_are_said_once_without_class_paths():
    from pipelines.runner import clean_message, summarize_problems

    assert clean_message("dagster._core.definitions.events.Failure: pipelines.register.RegisterError: ingen fil\nTraceback") == "ingen fil"
    tables = [
        f"register/{t}: registeret har ingen {t} for 2026-05 (/r/{t}/2026-05.parquet findes ikke): tjek PENSIONSTRAEK_REGISTER_URL"
        for t in ("pensionsberegning", "pensionssager")
    ]
    assert summarize_problems(tables) == (
        "register/{pensionsberegning,pensionssager}: registeret har ingen {pensionsberegning,pensionssager} for 2026-05 "
        "(/r/{pensionsberegning,pensionssager}/2026-05.parquet findes ikke): tjek PENSIONSTRAEK_REGISTER_URL"
    )
    many = [f"settlement/afregning: problem nummer {n} " + "x" * 80 for n in range(10)]
    line = summarize_problems(many)
    assert len(line) < 400 and line.endswith("problem(er) mere (se kørslen)") and "nummer 0" in line


# --- help, and feeding a world by hand --------------------------------------------------------------

COMMANDS = [
    [], ["demo"], ["exchange"], ["exchange", "route"], ["intake"], ["settle"], ["explain"], ["status"],
    ["generate"], ["generate", "register"], ["generate", "sf6110"],
    ["haendelser"], ["beskeder"], ["beskedfordeler"], ["snapshot"], ["serve"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pensionstraek")
def test_every_command_says_what_it_does_its_arguments_and_its_environment(command, capsys):
    from pipelines import cli
    from pipelines.config import MESSAGE_VARIABLES, RUN_VARIABLE_NAMES, SERVICE_VARIABLES, VARIABLES

    with pytest.raises(SystemExit) as done:
        cli.main([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: pensionstraek {' '.join(command)}".rstrip())
    assert "tilvalg:" in text and "show this help" not in text
    description = text.split("\n\n")[1]
    assert len(description.split()) >= 5, text  # a sentence on what it does
    if command == []:
        for name, (default, _) in VARIABLES.items():
            assert name in text and f"({default})" in text, name
    if command in (["intake"], ["settle"]):
        for name, (default, _) in VARIABLES.items():
            assert (name in text) == (name in RUN_VARIABLE_NAMES), name
            assert name not in text or f"({default})" in text, name
    if command == ["serve"]:
        assert all(name in text for name in SERVICE_VARIABLES), text
    if command == ["haendelser"]:
        assert all(name in text for name in MESSAGE_VARIABLES), text
    if command == ["explain"]:
        assert all(a in text for a in ("KOMMUNEKODE", "YYYY-MM", "--anmodning", "--cpr", "--json", "PENSIONSTRAEK_STATE_URL"))
        assert "PENSIONSTRAEK_EXCHANGE_URL" not in text  # explain reads the state store alone
    if command == ["generate", "sf6110"]:
        assert "--deliver" in text and "exchange route" in text


def test_generate_sf6110_delivers_through_the_emulator_so_intake_takes_it_in(setting, taken_in, tmp_path):
    kp = setting.world.exchange_root / "kp"
    result = setting.run(
        "generate", "sf6110", "--register", str(setting.world.register_dir), "--periode", setting.periode,
        "--instructions", "6", "--seed", "21", "--deliver", str(kp),
    )
    assert result.returncode == 0, result.stderr
    sent = sorted(p.name for p in (kp / "OUT").glob("SF6110_*.xml"))
    assert sent and all((kp / "OUT" / f"{name}.trigger").exists() for name in sent)
    assert f"sendt fra kp til udk-pension" in result.stdout and "exchange route" in result.stdout
    routed = setting.run("exchange", "route", "--root", str(setting.world.exchange_root))
    assert routed.returncode == 0 and all(f"kp/OUT/{n} -> udk-pension: delivered" in routed.stdout for n in sent)
    intake = setting.run("intake")
    assert intake.returncode == 0, intake.stderr
    assert f"{len(sent)} fil(er): {len(sent)} modtaget" in intake.stdout and "6 anmodninger registreret" in intake.stdout


def test_generate_sf6110_to_an_account_that_is_not_one_fails_in_one_line(setting, tmp_path):
    line = one_line_failure(
        setting.run(
            "generate", "sf6110", "--register", str(setting.world.register_dir), "--periode", setting.periode,
            "--deliver", str(tmp_path / "nobody"),
        )
    )
    assert "nobody" in line and "OUT" in line


@pytest.mark.parametrize("args", [["explain", "0101"], ["bogus"], ["settle"]])
def test_a_wrong_use_is_one_line_and_exit_2(args, capsys):
    from pipelines import cli

    with pytest.raises(SystemExit) as done:
        cli.main(args)
    assert done.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("pensionstraek: forkert brug af pensionstraek") and "--help)" in line
