"""`pensionstraek demo` as a new user runs it (issue 2, item 9; operations.md "The command line"):
in an empty folder, with no DAGSTER_HOME and no PENSIONSTRAEK_* variables, as a subprocess.

The demo takes some seconds, so it runs twice in this file (once, then again over its own ./var)
and every test reads what those two runs left."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from contracts.envelope import decode_metadata, decode_receipt
from contracts.sf2601 import decode_sf2601
from contracts.sf6111 import decode_sf6111

ACCOUNTS = {"udk-pension", "kp", "ky"}
DEMO_TIMEOUT_SECONDS = 180


def pensionstraek() -> list[str]:
    """The console command of this environment, or the module when it is not installed as one."""
    script = Path(sys.executable).parent / "pensionstraek"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]


def clean_env() -> dict[str, str]:
    """The environment of a user who set nothing: no DAGSTER_HOME, no PENSIONSTRAEK_*."""
    return {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME" and not k.startswith("PENSIONSTRAEK_")}


def run_demo(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*pensionstraek(), "demo"],
        cwd=cwd,
        env=clean_env(),
        check=False,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        stdin=subprocess.DEVNULL,
    )


def runs(var: Path) -> list[dg.DagsterRun]:
    """The runs in the Dagster instance the demo used (./var/dagster)."""
    with dg.DagsterInstance.from_config(str(var / "dagster")) as instance:
        return list(instance.get_runs())


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("demo")
    result = run_demo(cwd)
    assert result.returncode == 0, f"demo failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return cwd, result


@pytest.fixture(scope="module")
def first_runs(demo) -> list[dg.DagsterRun]:
    cwd, _ = demo
    return runs(cwd / "var")


@pytest.fixture(scope="module")
def second(demo, first_runs) -> subprocess.CompletedProcess:
    """The demo once more over the ./var the first run made (the first run's results are read
    before this one remakes the world)."""
    cwd, _ = demo
    return run_demo(cwd)


def test_demo_makes_the_accounts_under_var(demo):
    cwd, _ = demo
    var = cwd / "var"
    assert {p.name for p in (var / "exchange").iterdir()} == ACCOUNTS
    for account in ACCOUNTS:
        assert (var / "exchange" / account / "IN").is_dir() and (var / "exchange" / account / "OUT").is_dir()
    assert sorted(p.name for p in (var / "register").iterdir()) == ["pensionsberegning", "pensionssager"]
    assert (var / "state").is_dir() and (var / "dagster").is_dir()
    # Nothing left waiting: the platform routed everything out of every OUT/.
    for account in ACCOUNTS:
        assert [p.name for p in (var / "exchange" / account / "OUT").iterdir()] == []


def test_kp_has_one_kvittering_per_file_it_sent_with_metadata_and_receipts(demo):
    cwd, _ = demo
    kp_in = cwd / "var" / "exchange" / "kp" / "IN"
    receipts = sorted(kp_in.glob("SF6110_*.sftpreceipt"))  # the platform's receipts for kp's deliveries
    kvitteringer = sorted(kp_in.glob("SF6110K_*.xml"))
    assert len(receipts) >= 4, receipts
    for receipt in receipts:
        assert decode_receipt(receipt.read_bytes()).succeeded, receipt.name
    # sf6110.md: every file received is answered with exactly one kvittering.
    assert len(kvitteringer) == len(receipts)
    for kvittering in kvitteringer:
        metadata = decode_metadata((kp_in / f"{kvittering.name}.metadata").read_bytes())
        assert metadata.descriptor.sender == "udk-pension"
        assert metadata.descriptor.recipients == ("kp",)
        assert metadata.descriptor.size_in_bytes == kvittering.stat().st_size


def test_settlement_files_reach_kp_and_ky(demo):
    cwd, _ = demo
    kp_in = cwd / "var" / "exchange" / "kp" / "IN"
    ky_in = cwd / "var" / "exchange" / "ky" / "IN"
    sf6111 = sorted(kp_in.glob("SF6111_*.xml"))
    sf2601 = sorted(ky_in.glob("SF2601_*.xml"))
    assert sf6111 and sf2601
    for path in [*sf6111, *sf2601]:
        assert (path.parent / f"{path.name}.metadata").is_file(), path.name
    for path in sf6111:
        header, _ = decode_sf6111(path.read_bytes())
        assert path.name.startswith(f"SF6111_{header['kommunekode']}_")
    for path in sf2601:
        header, _ = decode_sf2601(path.read_bytes())
        assert path.name.startswith(f"SF2601_{header['kommunekode']}_")
    # UDK's own technical receipts were recorded (the demo's last intake) and taken out of IN/.
    assert list((cwd / "var" / "exchange" / "udk-pension" / "IN").glob("*.sftpreceipt")) == []


def test_the_summary_names_outcomes_per_code_and_per_municipality(demo):
    cwd, result = demo
    out = result.stdout
    codes = Counter(re.findall(r"^\s+([FU]\d\d)\s+\d+\s", out, re.MULTILINE))
    assert {"U01", "F04", "F05"} <= set(codes), out
    assert len({c for c in codes if c.startswith("U")}) >= 4, codes
    kp_in = cwd / "var" / "exchange" / "kp" / "IN"
    ky_in = cwd / "var" / "exchange" / "ky" / "IN"
    # One line per SF6111 (settled per municipality) and per SF2601 (paid per municipality).
    for path in kp_in.glob("SF6111_*.xml"):
        kommunekode = path.name.split("_")[1]
        assert re.search(rf"^\s+{kommunekode} .*afregnet.* kr .*{re.escape(path.name)}", out, re.MULTILINE), path.name
    for path in ky_in.glob("SF2601_*.xml"):
        kommunekode = path.name.split("_")[1]
        assert re.search(rf"^\s+{kommunekode} .* kr .*{re.escape(path.name)}", out, re.MULTILINE), path.name
    assert str(cwd / "var" / "dagster") in out  # where to point `dagster dev`


def test_no_cpr_of_the_register_is_printed(demo):
    cwd, result = demo
    cprs = pl.read_parquet(cwd / "var" / "register" / "pensionssager" / "*.parquet")["cpr"].unique().to_list()
    printed = set(re.findall(r"(?<!\d)\d{10}(?!\d)", result.stdout + result.stderr))
    assert not printed & set(cprs)


def test_the_runs_are_in_the_instance_under_var_dagster(demo, first_runs):
    cwd, result = demo
    assert (cwd / "var" / "dagster" / "dagster.yaml").is_file()
    by_job = Counter(run.job_name for run in first_runs)
    assert by_job["sf6110_intake"] >= 3, by_job  # two rounds of files, then the receipts
    assert by_job["maanedlig_afregning"] == 1, by_job
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in first_runs)
    (settlement,) = [run for run in first_runs if run.job_name == "maanedlig_afregning"]
    periode = settlement.tags["dagster/partition"]
    assert re.fullmatch(r"\d{4}-\d{2}", periode)
    assert f"Afregning af {periode}" in result.stdout


def test_the_demo_runs_again_over_its_own_var(demo, first_runs, second):
    cwd, _ = demo
    assert second.returncode == 0, f"{second.stdout[-3000:]}\n{second.stderr[-3000:]}"
    # A fresh world (exchange, register, state remade), the same instance: the runs add up.
    kp_in = cwd / "var" / "exchange" / "kp" / "IN"
    assert len(list(kp_in.glob("SF6110K_*.xml"))) == len(list(kp_in.glob("SF6110_*.sftpreceipt")))
    again = runs(cwd / "var")
    assert len(again) == 2 * len(first_runs)
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in again)


def test_a_var_the_demo_did_not_make_is_refused(tmp_path):
    mine = tmp_path / "var" / "important.txt"
    mine.parent.mkdir()
    mine.write_text("not the demo's")
    result = run_demo(tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ikke lavet af demoen" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert mine.read_text() == "not the demo's"
    assert sorted(p.name for p in (tmp_path / "var").iterdir()) == ["important.txt"]


def test_the_demo_prints_a_period_as_a_month_never_as_a_timestamp(demo):
    _, result = demo
    first = result.stdout.splitlines()[0]
    assert re.search(r": periode \d{4}-\d{2}, den første åbne periode \(nu: \d{4}-\d\d-\d\dT\d\d:\d\d[+-]\d\d:\d\d\)$", first), first
    assert not re.search(r"periode \d{4}-\d{2}-\d{2}", result.stdout)
