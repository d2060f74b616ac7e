"""The national benchmark keeps working (issue 11): run tiny, it exits 0 and prints its figure
lines; and its DuckDB peer of the settlement agrees with the product's rules on a ledger full of
the hard cases. No timing is asserted here: the targets are judged by running the benchmark."""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from assets.settlement_rules import active_requests, settle
from contracts.ledger import LEDGER_SCHEMA
from contracts.register import PENSIONSBEREGNING_SCHEMA, PENSIONSSAGER_SCHEMA
from contracts.sf6111 import TRAEK_SCHEMA
from tests.registers import case_row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import peer_duckdb  # noqa: E402  (benchmarks/ is not a package)

P = "2027-03"
UTC = dt.timezone.utc


def hard_cases(seed: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """A ledger of many requests over few citizens (so that walks are long and A03 is common),
    with AENDR/OPHOER, versions not yet in force, ended requests, equal received times, deaths,
    missing calculations, netto 0 and udbetales false; and the register for P."""
    rng = random.Random(seed)
    cprs = [f"{day:02d}0{month}45{n:04d}" for n, (day, month) in enumerate((d, m) for d in range(1, 29) for m in range(1, 3))][:40]
    kommuner = ["0101", "0147", "0151"]
    rows = []
    base = dt.datetime(2027, 1, 5, 8, tzinfo=UTC)
    for number in range(300):
        kommunekode = rng.choice(kommuner)
        anmodning_id = f"R-{number:04d}"
        cpr = rng.choice(cprs)
        received = base + dt.timedelta(hours=rng.randrange(0, 5) * 24)  # many equal times
        fra = rng.choice(["2027-01", "2027-02", "2027-03", "2027-04"])
        til = rng.choice([None, None, "2027-02", "2027-03", "2027-05"])
        history = [("OPRET", fra, til, received)]
        for _ in range(rng.randrange(0, 3)):
            received = received + dt.timedelta(days=rng.randrange(0, 3))
            handling = rng.choice(["AENDR", "AENDR", "OPHOER"])
            history.append((handling, rng.choice(["2026-12", "2027-02", "2027-03", "2027-04"]), rng.choice([None, "2027-03"]), received))
        for position, (handling, fra_periode, til_periode, modtaget) in enumerate(history):
            rows.append(
                {
                    "kommunekode": kommunekode,
                    "anmodning_id": anmodning_id,
                    "cpr": cpr,
                    "handling": handling,
                    "traekart": None if handling == "OPHOER" else rng.choice(["HUSL", "PLEJ", "TILB", "MAD", "BRUG"]),
                    "fra_periode": fra_periode,
                    "til_periode": til_periode,
                    "beloeb_oere": None if handling == "OPHOER" else rng.choice([5_000, 20_000, 150_000, 300_000]),
                    "modtaget": modtaget,
                    # the same received second in two files: the later file name decides
                    "filnavn": f"SF6110_{kommunekode}_{rng.choice(['a', 'b', 'c'])}.xml",
                    "file_transfer_uuid": f"uuid-{number}-{position}",
                    "position": position,
                }
            )
    ledger = pl.DataFrame(rows, schema=LEDGER_SCHEMA)
    sager = pl.DataFrame(
        [
            case_row(cpr, doedsdato=rng.choice([None] * 6 + [dt.date(2027, 2, 10), dt.date(2027, 3, 15)]))
            for cpr in cprs[:36]  # some citizens have no case at all
        ],
        schema=PENSIONSSAGER_SCHEMA,
    )
    beregning = pl.DataFrame(
        [
            {
                "cpr": cpr,
                "periode": P,
                "brutto_oere": 700_000,
                "skat_oere": 700_000 - netto,
                "netto_oere": netto,
                "udbetales": rng.random() > 0.1,
            }
            for cpr in cprs[:33]
            for netto in [rng.choice([0, 100_000, 320_000, 600_000])]
        ],
        schema=PENSIONSBEREGNING_SCHEMA,
    )
    return ledger, sager, beregning


def write_world(root: Path, ledger: pl.DataFrame, sager: pl.DataFrame, beregning: pl.DataFrame) -> tuple[Path, Path]:
    state, register = root / "state", root / "register"
    for folder in (state / "ledger", state / "intake", register / "pensionssager", register / "pensionsberegning"):
        folder.mkdir(parents=True)
    for (uuid,), rows in ledger.group_by("file_transfer_uuid"):
        rows.write_parquet(state / "ledger" / f"{uuid}.parquet")
        (state / "intake" / f"{uuid}.json").write_text(json.dumps({"file_transfer_uuid": uuid}))
    # A ledger file without its decision (a run that died before the commit point) must not count.
    ledger.head(1).with_columns(anmodning_id=pl.lit("UNCOMMITTED")).write_parquet(state / "ledger" / "uncommitted.parquet")
    sager.write_parquet(register / "pensionssager" / f"{P}.parquet")
    beregning.write_parquet(register / "pensionsberegning" / f"{P}.parquet")
    return state, register


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_duckdb_peer_settles_exactly_as_the_product(tmp_path: Path, seed: int) -> None:
    ledger, sager, beregning = hard_cases(seed)
    state, register = write_world(tmp_path, ledger, sager, beregning)
    rows = peer_duckdb.run_peer(state, register, P, tmp_path / "peer")

    product = settle(active_requests(ledger, P), sager, beregning, P)
    peer = pl.read_parquet(tmp_path / "peer" / "afregning.parquet").select(
        [pl.col(name).cast(dtype) for name, dtype in TRAEK_SCHEMA.items()]
    )
    assert rows == product.height
    # The world is hard enough to mean something: every outcome occurs.
    assert set(product["kode"].drop_nulls().unique()) == {"A01", "A02", "A03"}
    assert product.filter(pl.col("status") == "AFREGNET").height > 20
    assert peer.sort("kommunekode", "anmodning_id").equals(product.sort("kommunekode", "anmodning_id"))


def test_the_peer_writes_the_same_sf6111_bytes_as_the_codec(tmp_path: Path) -> None:
    from contracts.sf6111 import encode_sf6111
    from pipelines.calendar import udbetalingsdato

    ledger, sager, beregning = hard_cases(4)
    state, register = write_world(tmp_path, ledger, sager, beregning)
    peer_duckdb.run_peer(state, register, P, tmp_path / "peer")
    product = settle(active_requests(ledger, P), sager, beregning, P)
    for (kommunekode,), rows in product.group_by("kommunekode"):
        expected = encode_sf6111(kommunekode, P, udbetalingsdato(P), 1, rows)
        assert (tmp_path / "peer" / f"SF6111_{kommunekode}_{P.replace('-', '')}_001.xml").read_bytes() == expected


def test_the_benchmark_runs_tiny_and_prints_its_figures(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "national.py"), "--quick", "--profiles", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=1500,  # a shared, busy machine can be very slow; normally about a minute
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for line in (
        "INTAKE ",
        "SETTLEMENT ",
        "PEAK MEMORY (max RSS of one command)",
        "FIXED COST ",
        "PEER DuckDB settlement",
        "PEER AGREES",
        "BREAKDOWN intake",
        "BREAKDOWN settle",
        "GROWTH 100%",
        "MONTH  1 ",
        "MONTH  2 ",
        "MONTHS month 2 / month 1 (CPU",
    ):
        assert line in out, f"{line!r} missing from:\n{out}"
    # The breakdown names the steps and the profiles are kept as text.
    assert "rules" in out and "parsing" in out and "Dagster" in out
    assert (tmp_path / "intake.txt").read_text().strip() and (tmp_path / "settle.txt").read_text().strip()
    # The months ran intake, settlement and a correction each: the second month's correction
    # went out, and the figures name the state store's size.
    assert "state " in out.split("MONTH  2 ")[1].splitlines()[0]
