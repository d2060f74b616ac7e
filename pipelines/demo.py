"""`pensionstraek demo`: a small realistic world under ./var, and one whole month through it.

It makes the accounts `udk-pension`, `kp` and `ky`, a synthetic register, and lets `kp` deliver
SF6110 files from several municipalities through the platform emulator (two rounds: new
requests, then changes, stops and some mistakes). Intake answers every file with a kvittering,
the period is settled, and SF6111 and SF2601 go to `kp` and `ky`. Everything routed stays in the
recipients' IN/ for the user to look at; the runs show up in the Dagster UI (DAGSTER_HOME)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import polars as pl

from contracts.codes import afvisningstekst, kommuner
from contracts.money import format_kroner
from contracts.sf2601 import decode_sf2601
from contracts.sf6110 import INSTRUCTION_SCHEMA, encode_request_file
from contracts.sf6111 import decode_sf6111
from pipelines.calendar import TZ, first_open_period, previous_periode
from pipelines.config import EXCHANGE_URL, PARTNERS, REGISTER_URL, STATE_URL
from pipelines.emulator import describe, route, send_from
from pipelines.generate import generate_register
from pipelines.generate_sf6110 import generate_request_files
from pipelines.state import StateStore

ACCOUNTS = ("udk-pension", "kp", "ky")
DEMO_KOMMUNER = ("0101", "0751", "0461", "0851")
MARKER = ".pensionstraek-demo"


def run_demo(var: Path) -> int:
    var = var.resolve()
    _prepare(var)
    os.environ[EXCHANGE_URL] = str(var / "exchange" / "udk-pension")
    os.environ[REGISTER_URL] = str(var / "register")
    os.environ[STATE_URL] = str(var / "state")
    os.environ.pop(PARTNERS, None)  # the built-in partners: kp speaks for all, ky receives SF2601
    os.environ.setdefault("DAGSTER_HOME", str(var / "dagster"))
    from pipelines.runner import run_job, summarize_problems  # after the environment is set: definitions read it

    now = dt.datetime.now(TZ)
    periode = first_open_period(now)
    # A period is a month (YYYY-MM), never an instant: the instant is only what made it the first open one.
    print(f"Demo-verden i {var}: periode {periode}, den første åbne periode (nu: {now.isoformat(timespec='minutes')})")

    generate_register(var / "register", [previous_periode(periode), periode], persons=3000, seed=7)
    sager = pl.read_parquet(var / "register" / "pensionssager" / f"{periode}.parquet")
    print(f"  register: {sager.height} pensionssager for {previous_periode(periode)} og {periode}")

    # Round 1: new requests from four municipalities, a few of them wrong.
    first_round = generate_request_files(
        sager, instructions=240, fra_periode=periode, seed=11, kommuner=list(DEMO_KOMMUNER), invalid_share=0.08
    )
    _deliver_and_take_in(var, first_round, run_job, "Runde 1: nye trækanmodninger")

    # Round 2: changes and stops of round 1's requests, and mistakes a careful reader expects.
    store = StateStore(str(var / "state"))
    second_round = _second_round(store.ledger(), sager, periode, first_round)
    _deliver_and_take_in(var, second_round, run_job, "Runde 2: ændringer, ophør og fejl")

    print(f"\nAfregning af {periode}")
    outcome = run_job("maanedlig_afregning", first_periode=periode)
    if not outcome.success:
        print("  afregningen fejlede: " + summarize_problems(outcome.problems))
        return 1
    _route(var, "  ")
    intake = run_job("sf6110_intake")  # records the technical receipts of what UDK sent
    if not intake.success:
        print("  registrering af tekniske kvitteringer fejlede: " + summarize_problems(intake.problems))
        return 1
    _print_settlement(var)
    _print_where(var)
    print(f"\nSe videre: `pensionstraek status` og `pensionstraek explain {DEMO_KOMMUNER[0]} {periode}` (revisionssporet)")
    return 0


def _prepare(var: Path) -> None:
    """A fresh demo world; a ./var that the demo did not make is never touched."""
    if var.exists() and any(var.iterdir()) and not (var / MARKER).exists():
        only_dagster = {p.name for p in var.iterdir()} <= {"dagster"}
        if not only_dagster:
            raise SystemExit(f"pensionstraek: {var} findes og er ikke lavet af demoen; flyt den væk først")
    var.mkdir(parents=True, exist_ok=True)
    (var / MARKER).write_text("made by `pensionstraek demo`; the demo may remake everything here but dagster/\n")
    for part in ("exchange", "register", "state"):
        shutil.rmtree(var / part, ignore_errors=True)
    for account in ACCOUNTS:
        for folder in ("IN", "OUT"):
            (var / "exchange" / account / folder).mkdir(parents=True, exist_ok=True)


def _deliver_and_take_in(var: Path, files: dict[str, bytes], run_job, title: str) -> None:
    print(f"\n{title}: kp sender {len(files)} SF6110-fil(er)")
    for name, data in files.items():
        send_from(var / "exchange" / "kp", name, data, ["udk-pension"])
    _route(var, "  ")
    outcome = run_job("sf6110_intake")
    if not outcome.success:
        from pipelines.runner import summarize_problems

        raise SystemExit("pensionstraek: intake fejlede: " + summarize_problems(outcome.problems))
    _route(var, "  ")
    _print_kvitteringer(var, set(files))
    time.sleep(1.1)  # the next round is received a second later (received time is to the second)


def _route(var: Path, indent: str) -> None:
    for outcome in route(var / "exchange"):
        print(indent + describe(outcome))


def _print_kvitteringer(var: Path, names: set[str]) -> None:
    store = StateStore(str(var / "state"))
    decisions = [d for d in store.decisions() if d["filnavn"] in names]
    per_code: Counter = Counter()
    for d in decisions:
        line = f"    {d['filnavn']}: {d['status']}"
        if d["status"] == "AFVIST":
            line += f" {d['kode']} ({afvisningstekst(d['kode'])})"
            per_code[d["kode"]] += 1
        else:
            line += f", {d['antal_modtaget']} modtaget, {d['antal_afvist']} afvist"
            per_code["MODTAGET"] += d["antal_modtaget"]
            per_code.update(d["koder"])
        print(line)
    print("  Udfald pr. kode:")
    for code, n in sorted(per_code.items()):
        text = "registreret" if code == "MODTAGET" else afvisningstekst(code)
        print(f"    {code:9} {n:5}  {text}")
    kvitteringer = sorted(p.name for p in (var / "exchange" / "kp" / "IN").glob("SF6110K_*.xml"))
    print(f"  kp har nu {len(kvitteringer)} kvittering(er) i {var / 'exchange' / 'kp' / 'IN'}")


def _second_round(ledger: pl.DataFrame, sager: pl.DataFrame, periode: str, first_round: dict[str, bytes]) -> dict[str, bytes]:
    """Changes (AENDR), stops (OPHOER) and mistakes for municipality 0101 and 0751."""
    files = {}
    stamp = dt.datetime.now(TZ).replace(microsecond=0)
    for i, kommunekode in enumerate(DEMO_KOMMUNER[:2]):
        own = ledger.filter(pl.col("kommunekode") == kommunekode).sort("anmodning_id")
        if own.height < 3:
            continue
        aendr, ophoer, again = own.row(0, named=True), own.row(1, named=True), own.row(2, named=True)
        other = sager.filter(
            (pl.col("bopaelskommune") != kommunekode) & (pl.col("administrationskommune").is_null())
        ).row(0, named=True)
        rows = [
            _instruction(aendr["anmodning_id"], aendr["cpr"], "AENDR", "MAD", periode, "450.00"),
            _instruction(ophoer["anmodning_id"], ophoer["cpr"], "OPHOER", None, periode, None),
            _instruction(again["anmodning_id"], again["cpr"], "OPRET", "BRUG", periode, "100"),  # U07
            _instruction(f"DEMO-{kommunekode}-NY", other["cpr"], "OPRET", "PLEJ", periode, "2000.00"),  # U04
            _instruction(f"DEMO-{kommunekode}-UKENDT", aendr["cpr"], "OPHOER", None, periode, None),  # U08
            _instruction(f"DEMO-{kommunekode}-LUKKET", aendr["cpr"], "OPRET", "MAD", previous_periode(periode), "300"),  # U06
            _instruction(f"DEMO-{kommunekode}-CPR", "3102501234", "OPRET", "MAD", periode, "300"),  # U01 CPR
            # Born 1925: a valid CPR, but nobody in the register (born 1930–1965): U03.
            _instruction(f"DEMO-{kommunekode}-UDEN-SAG", "0101251234", "OPRET", "MAD", periode, "300"),
        ]
        frame = pl.DataFrame(rows, schema=INSTRUCTION_SCHEMA).with_columns(
            position=pl.int_range(pl.len(), dtype=pl.Int32)
        )
        name = f"SF6110_{kommunekode}_{(stamp + dt.timedelta(seconds=i)):%Y%m%d%H%M%S}.xml"
        files[name] = encode_request_file(kommunekode, stamp.isoformat(), frame)
    # The same bytes as an accepted file of round 1, delivered again: F05.
    repeated_name, repeated_data = sorted(first_round.items())[0]
    files[repeated_name.replace(".xml", "_igen.xml")] = repeated_data
    # A file for a municipality code that does not exist: F04.
    files[f"SF6110_0102_{stamp:%Y%m%d%H%M%S}.xml"] = encode_request_file(
        "0102", stamp.isoformat(), pl.DataFrame(schema=INSTRUCTION_SCHEMA)
    )
    return files


def _instruction(anmodning_id, cpr, handling, traekart, fra, beloeb) -> dict:
    return {
        "position": 0,
        "anmodning_id": anmodning_id,
        "cpr": cpr,
        "handling": handling,
        "traekart": traekart,
        "fra_periode": fra,
        "til_periode": None,
        "samlet_beloeb": beloeb,
        "specifikation_present": beloeb is not None,
        "poster": [{"tekst": "Demo", "beloeb": beloeb}] if beloeb is not None else [],
        "reference": None,
    }


def _print_settlement(var: Path) -> None:
    names = dict(kommuner().iter_rows())
    print("  SF6111 til kp (afregnet pr. kommune):")
    for path in sorted((var / "exchange" / "kp" / "IN").glob("SF6111_*.xml")):
        header, traek = decode_sf6111(path.read_bytes())
        kk = header["kommunekode"]
        print(
            f"    {kk} {names.get(kk, ''):14} {header['antal_afregnet']:4} afregnet, {header['antal_afvist']:3} afvist "
            f"{_codes(traek)}: {format_kroner(header['samlet_afregnet_oere']):>12} kr  ({path.name})"
        )
    print("  SF2601 til ky (udbetalt til kommunens NemKonto):")
    sf2601_files = sorted((var / "exchange" / "ky" / "IN").glob("SF2601_*.xml"))
    for path in sf2601_files:
        header, persons = decode_sf2601(path.read_bytes())
        kk = header["kommunekode"]
        print(
            f"    {kk} {names.get(kk, ''):14} {header['antal_personer']:4} borgere: "
            f"{format_kroner(header['samlet_udbetalt_oere']):>12} kr  ({path.name})"
        )
    if not sf2601_files:
        print("    (ingen borgere under administration med udbetaling til kommunen)")


def _codes(traek: pl.DataFrame) -> str:
    codes = Counter(c for c in traek["kode"].to_list() if c)
    return "(" + ", ".join(f"{c} {n}" for c, n in sorted(codes.items())) + ")" if codes else ""


def _print_where(var: Path) -> None:
    print("\nHvor filerne ligger:")
    print(f"  kvitteringer og SF6111:   {var / 'exchange' / 'kp' / 'IN'} (med .metadata)")
    print(f"  SF2601:                   {var / 'exchange' / 'ky' / 'IN'} (med .metadata)")
    print(f"  tekniske kvitteringer:    kp's i {var / 'exchange' / 'kp' / 'IN'}, UDK's registreret i state/sent/")
    print(f"  arkiv, ledger, afsendt:   {var / 'state'}")
    print(f"  Dagster-instans:          {os.environ['DAGSTER_HOME']}  (DAGSTER_HOME=... dagster dev)")
