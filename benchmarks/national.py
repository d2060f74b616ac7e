"""National-scale benchmark (operations.md "Scale and speed", issue 11); prints its figures.

    .venv/bin/python benchmarks/national.py [--scale 1.0] [--repeat 3] [--months 36] [--quick]

Everything runs in a temporary folder on the local exchange, as an operator runs it: every
figure of intake and settlement is one `pensionstraek intake` / `pensionstraek settle P` command
in its own process (start-up, the Dagster instance under DAGSTER_HOME, the run and its asset
checks included), repeated `--repeat` times on the same world restored from a copy; min and
median are printed. Then:

- BREAKDOWN: one more run of each command under pyinstrument, its time split per step (start-up
  and imports, Dagster, reading, parsing, schema validation, rules, state-store writes, encoding,
  sending, checks); the text profiles are kept with `--profiles DIR`.
- FIXED COST: `pensionstraek intake` with nothing waiting.
- PEER: benchmarks/peer_duckdb.py, the settlement rules written independently in DuckDB SQL, on
  the same ledger and register; any difference in outcomes or in the SF6111 files fails the
  benchmark (exit status 1). The ratio is product time / peer time (≤ 1.0: the product is faster).
- GROWTH: intake and settlement at 10 %, 30 % and 100 % of the scale (wall and CPU), the CPU
  seconds per 100,000 instructions at each, and 100 % / 10 % against the 10× of the work
  (about linear; less, while the fixed cost of a command and the 98 files a period weigh).
- MONTHS: `--months` monthly cycles at `--month-scale` (default 10 %) on one state store and one
  Dagster instance, run in this process (a command's start-up is the same every month, see FIXED
  COST, so the curve shows what grows with the history): intake of the month's files, settlement, a late correction file, and the
  settlement again (the correction: next Loebenummer), with per-month times and the state
  store's size. Month N's time should stay within 1.2× of month 1's.

Targets (issue 11, this 2-core machine): intake ≤ 6 s, settlement ≤ 4 s, peak < 1 GiB, fixed cost
≤ 1.5 s. `--quick` runs a tiny world (the test suite uses it to keep the script working)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NATIONAL_PERSONS = 1_500_000
NATIONAL_INSTRUCTIONS = 300_000

# --- the per-step breakdown ------------------------------------------------------------------------

# Where a profiled frame's time goes: (category, path fragment, function names or None for any).
# The innermost matching frame decides, except that everything under an asset check counts as
# "checks" (a check's own decoding is check time).
STEP_RULES = [
    ("start-up/imports", "<frozen importlib", None),
    ("Dagster (run set-up, events, instance)", "/site-packages/dagster/", None),  # not a checkout named dagster
    ("Dagster (run set-up, events, instance)", "/dagster_shared/", None),
    ("reading", "pipelines/exchange.py", {"read", "list_deliveries", "list_receipts", "listdir", "_entries", "exists"}),
    ("reading", "pipelines/state.py", {"read", "read_frame", "read_json", "listdir", "exists", "outcomes", "sent_record", "sent_records"}),
    ("reading: ledger and decisions", "pipelines/state.py", {"ledger", "decisions"}),
    ("reading", "pipelines/register.py", {"load", "read", "periods", "newest_pensionssager"}),
    ("reading", "pipelines/deliveries.py", {"read_version", "versions", "current_versions"}),
    ("parsing", "contracts/xmlsafe.py", {"parse_xml"}),
    ("parsing", "contracts/sf6110.py", {"decode_request_file", "_instruction_frame", "decode_kvittering"}),
    ("parsing", "contracts/sf6111.py", {"decode_sf6111"}),
    ("parsing", "contracts/sf2601.py", {"decode_sf2601"}),
    ("parsing", "contracts/envelope.py", {"decode_metadata", "decode_trigger", "decode_receipt"}),
    # Intake decodes in worker processes (PENSIONSTRAEK_INTAKE_WORKERS): the profile sees only the
    # command's own process waiting for a file the workers have not finished yet.
    ("parsing (waiting for the intake workers)", "pipelines/intake.py", {"result"}),
    ("schema validation", "contracts/xmlsafe.py", {"first_schema_error", "load_schema"}),
    ("schema validation", "contracts/sf6110.py", {"request_schema", "instruction_schema"}),
    ("schema validation", "contracts/register.py", None),
    ("schema validation", "/pandera/", None),
    ("schema validation", "contracts/envelope.py", {"_validate", "validate_kombit"}),
    ("rules", "_rules.py", None),
    ("state-store writes", "pipelines/state.py", {"write", "write_once", "write_json", "write_frame", "commit_decision"}),
    ("state-store writes", "pipelines/storage.py", None),
    ("encoding (kvittering, SF6111, SF2601, envelopes)", "contracts/sf6110.py", {"encode_kvittering"}),
    ("encoding (kvittering, SF6111, SF2601, envelopes)", "contracts/sf6111.py", {"encode_sf6111"}),
    ("encoding (kvittering, SF6111, SF2601, envelopes)", "contracts/sf2601.py", {"encode_sf2601"}),
    ("encoding (kvittering, SF6111, SF2601, envelopes)", "contracts/envelope.py", {"encode_trigger", "encode_metadata"}),
    ("sending", "pipelines/outbox.py", {"send", "_put", "record_receipts"}),
    ("sending", "pipelines/deliveries.py", {"send_versions"}),
]
CHECK_FUNCTIONS = {
    "ingen_filer_i_karantaene", "afvisningsrate_pr_kommune", "anmodninger_overholder_formatet",
    "pensionssager_kontrakt", "pensionsberegning_kontrakt", "hver_anmodning_et_udfald",
    "afregnet_hoejst_netto", "filtotaler_stemmer", "ingen_fremmede_traek", "samlet_lig_overfoersel",
    "administrationskommune_mangler", "check",
}
# The Dagster steps (asset and check functions) whose total time is listed per step.
STEP_FUNCTIONS = CHECK_FUNCTIONS | {
    "traekanmodninger", "pensionssager", "pensionsberegning", "aktive_anmodninger", "afregning",
    "specifikationslister", "udbetalinger", "afsendelse",
}


def _category(frame, inherited: str, in_check: bool) -> tuple[str, bool]:
    path = frame.file_path or ""
    if path.startswith(str(ROOT / "assets")) and frame.function in CHECK_FUNCTIONS:
        return "checks", True
    if in_check:
        return "checks", True
    for category, fragment, functions in STEP_RULES:
        if fragment in path and (functions is None or frame.function in functions):
            return category, False
    return inherited, False


def breakdown(root_frame) -> tuple[dict[str, float], dict[str, float]]:
    """(seconds per category, seconds per Dagster step) of a pyinstrument frame tree."""
    per_category: dict[str, float] = {}
    per_step: dict[str, float] = {}
    stack = [(root_frame, "other (CLI, Python)", False, False)]
    while stack:
        frame, inherited, in_check, in_step = stack.pop()
        category, in_check = _category(frame, inherited, in_check)
        path = frame.file_path or ""
        if not in_step and frame.function in STEP_FUNCTIONS and path.startswith(str(ROOT / "assets")):
            step = f"{Path(path).stem}.{frame.function}"
            per_step[step] = per_step.get(step, 0.0) + frame.time
            in_step = True
        own = frame.time - sum(child.time for child in frame.children)
        per_category[category] = per_category.get(category, 0.0) + max(own, 0.0)
        stack.extend((child, category, in_check, in_step) for child in frame.children)
    return per_category, per_step


# --- one command in its own process -------------------------------------------------------------


def child(spec: dict) -> int:
    """Inside the command's process: run `pensionstraek <argv>` and report to spec["report"]."""
    started = time.perf_counter()
    profiler = None
    if spec.get("profile"):
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002)
        profiler.start()
    from pipelines.cli import main as cli_main

    sampler = _FamilyMemory()
    sampler.start()
    imported = time.perf_counter()
    status = cli_main(spec["argv"])
    finished = time.perf_counter()
    sampler.stop()
    report = {
        "status": status,
        "import_s": imported - started,
        "command_s": finished - imported,
        "peak_mib": peak_rss_mib(),
        # The command and its child processes together (the intake's decoding workers), sampled.
        "peak_family_mib": sampler.peak_mib,
    }
    if profiler is not None:
        profiler.stop()
        report["profile_s"] = profiler.last_session.duration
        session = profiler.last_session
        Path(spec["profile"]).write_text(profiler.output_text(unicode=False, color=False))
        report["categories"], report["steps"] = breakdown(session.root_frame())
    Path(spec["report"]).write_text(json.dumps(report))
    return 0


class _FamilyMemory:
    """The largest sum of resident memory of this process and its children, sampled every 0.1 s
    (the children's own peaks are not in VmHWM, and ru_maxrss of children counts the parent's
    pages at the fork)."""

    def __init__(self) -> None:
        import threading

        self.peak_mib = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        me = str(os.getpid())
        while not self._done.wait(0.1):
            total = 0
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    fields = (entry / "stat").read_text().rpartition(")")[2].split()
                    if entry.name == me or fields[1] == me:
                        total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
                except (OSError, IndexError, ValueError):
                    continue
            self.peak_mib = max(self.peak_mib, total / 2**20)


def peak_rss_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the program since its exec;
    ru_maxrss would also count the benchmark's own size at the fork (the register generator)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_command(var: Path, argv: list[str], profile: Path | None = None) -> dict:
    """`pensionstraek <argv>` in a new process with var's configuration; the report with wall time."""
    report_path = var / "report.json"
    report_path.unlink(missing_ok=True)
    spec = {"argv": argv, "report": str(report_path), "profile": str(profile) if profile else None}
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        env={**os.environ, **configuration(var)},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if done.returncode != 0 or not report_path.exists():
        raise RuntimeError(f"pensionstraek {' '.join(argv)} failed: {done.stderr.strip()[-2000:]}")
    report = json.loads(report_path.read_text())
    if report["status"] != 0:
        raise RuntimeError(f"pensionstraek {' '.join(argv)} exited {report['status']}: {done.stderr.strip()[-2000:]}")
    report["wall_s"] = wall
    report["cpu_s"] = cpu
    report["stdout"] = done.stdout.strip()
    return report


def configuration(var: Path) -> dict[str, str]:
    return {
        "PENSIONSTRAEK_EXCHANGE_URL": str(var / "exchange" / "udk-pension"),
        "PENSIONSTRAEK_REGISTER_URL": str(var / "register"),
        "PENSIONSTRAEK_STATE_URL": str(var / "state"),
        "DAGSTER_HOME": str(var / "dagster"),
    }


# --- worlds -------------------------------------------------------------------------------------

MUTABLE = ("exchange", "state", "dagster")


def make_world(var: Path, persons: int, periods: list[str], seed: int = 1) -> None:
    from pipelines.generate import generate_register
    from pipelines.runner import instance

    for account in ("udk-pension", "kp", "ky"):
        for folder in ("IN", "OUT"):
            (var / "exchange" / account / folder).mkdir(parents=True, exist_ok=True)
    (var / "state").mkdir(parents=True, exist_ok=True)
    generate_register(var / "register", periods, persons=persons, seed=seed)
    os.environ["DAGSTER_HOME"] = str(var / "dagster")
    instance()  # DAGSTER_HOME with the product's settings (telemetry off)


def deliver(
    var: Path,
    periode: str,
    instructions: int,
    *,
    seed: int,
    received: dt.datetime | None = None,
    til_periode: str | None = None,
    kommuner: list[str] | None = None,
    invalid_share: float = 0.02,
) -> float:
    """SF6110 files for `periode` from KP, routed into UDK's IN/; returns their size in MB. With
    `received`, the deliveries carry that received time (the metadata's mtime, exchange.md)."""
    import polars as pl

    from contracts.envelope import encode_trigger, trigger_for
    from pipelines.emulator import route
    from pipelines.generate_sf6110 import generate_request_files

    sager = pl.read_parquet(var / "register" / "pensionssager" / f"{periode}.parquet")
    files = generate_request_files(
        sager,
        instructions=instructions,
        fra_periode=periode,
        seed=seed,
        invalid_share=invalid_share,
        dannet=received,
        til_periode=til_periode,
        kommuner=kommuner,
    )
    out = var / "exchange" / "kp" / "OUT"
    for name, data in files.items():
        (out / name).write_bytes(data)
        (out / f"{name}.trigger").write_bytes(encode_trigger(trigger_for(name, data, "kp", ["udk-pension"])))
    route(var / "exchange")
    if received is not None:
        stamp = received.timestamp()
        for name in files:
            for path in (var / "exchange" / "udk-pension" / "IN" / name, var / "exchange" / "udk-pension" / "IN" / f"{name}.metadata"):
                os.utime(path, (stamp, stamp))
    return sum(len(d) for d in files.values()) / 1e6


def snapshot(var: Path, name: str) -> None:
    target = var / "snapshots" / name
    shutil.rmtree(target, ignore_errors=True)
    for folder in MUTABLE:
        shutil.copytree(var / folder, target / folder, symlinks=True)


def restore(var: Path, name: str) -> None:
    for folder in MUTABLE:
        shutil.rmtree(var / folder)
        shutil.copytree(var / "snapshots" / name / folder, var / folder, symlinks=True)


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


# --- figures ------------------------------------------------------------------------------------


def figures(values: list[float], cpu: list[float] | None = None) -> str:
    text = f"min {min(values):6.2f} s  median {statistics.median(values):6.2f} s"
    if cpu:
        text += f"  (CPU min {min(cpu):6.2f} s)"
    return text + f"  n={len(values)}"


def print_breakdown(title: str, report: dict) -> None:
    total = sum(report["categories"].values())
    print(f"BREAKDOWN {title} (one profiled run: {report['profile_s']:.2f} s profiled of {report['wall_s']:.2f} s "
          f"wall, {report['cpu_s']:.2f} s CPU; profiler overhead included)")
    for category, seconds in sorted(report["categories"].items(), key=lambda kv: -kv[1]):
        print(f"  {category:48s} {seconds:6.2f} s  {seconds / max(total, 1e-9):5.1%}")
    print("  per Dagster step (asset / check function, total):")
    for step, seconds in sorted(report["steps"].items(), key=lambda kv: -kv[1]):
        print(f"    {step:46s} {seconds:6.2f} s")


def national(args: argparse.Namespace, var: Path, persons: int, instructions: int, periode: str) -> int:
    """The national figures at `persons`/`instructions`, with repeats, breakdown, peer."""
    from pipelines.emulator import route

    started = time.perf_counter()
    make_world(var, persons, [periode])
    print(f"register {persons:,} rows per table for {periode}: {time.perf_counter() - started:6.1f} s")
    started = time.perf_counter()
    size_mb = deliver(var, periode, instructions, seed=2)
    files = len(list((var / "exchange" / "udk-pension" / "IN").glob("SF6110_*.xml")))  # 98 at national scale
    print(f"generate {instructions:,} instructions in {files} files ({size_mb:.0f} MB) and route: {time.perf_counter() - started:6.1f} s")
    snapshot(var, "before-intake")
    profiles = Path(args.profiles) if args.profiles else var / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    # With a single run (--quick), that run is the profiled one; otherwise one extra run each.
    profile_timed = args.breakdown and args.repeat == 1

    intake_runs, intake_cpu, peaks, worker_peaks = [], [], [], []
    for attempt in range(args.repeat):
        if attempt:
            restore(var, "before-intake")
        report = run_command(var, ["intake"], profile=profiles / "intake.txt" if profile_timed else None)
        intake_runs.append(report["wall_s"])
        intake_cpu.append(report["cpu_s"])
        peaks.append(report["peak_mib"])
        worker_peaks.append(report.get("peak_family_mib", 0.0))
    print(f"  {report['stdout']}")
    intake_profiled = report
    route(var / "exchange")  # the kvitteringer reach KP, their technical receipts come back
    snapshot(var, "after-intake")
    print(f"INTAKE {instructions:,} instructions in {files} files, kvitteringer and asset checks, through the CLI: "
          f"{figures(intake_runs, intake_cpu)}  (target ≤ 6 s)")

    settle_runs, settle_cpu = [], []
    for attempt in range(args.repeat):
        if attempt:
            restore(var, "after-intake")
        report = run_command(var, ["settle", periode], profile=profiles / "settle.txt" if profile_timed else None)
        settle_runs.append(report["wall_s"])
        settle_cpu.append(report["cpu_s"])
        peaks.append(report["peak_mib"])
    print(f"  {report['stdout']}")
    settle_profiled = report
    sent = len(list((var / "exchange" / "udk-pension" / "OUT").glob("*.trigger")))
    print(f"SETTLEMENT {periode} with SF6111 + SF2601 ({sent} files sent), envelopes and checks, through the CLI: "
          f"{figures(settle_runs, settle_cpu)}  (target ≤ 4 s)")
    print(f"PEAK MEMORY (max RSS of one command): {max(peaks):,.0f} MiB  (target < 1024 MiB); "
          f"intake with its decoding workers (sampled sum) {max(worker_peaks):,.0f} MiB")

    fixed = [run_command(var, ["intake"], profile=profiles / "fixed.txt" if profile_timed else None) for _ in range(args.repeat)]
    print(f"FIXED COST `pensionstraek intake` with nothing waiting: "
          f"{figures([r['wall_s'] for r in fixed], [r['cpu_s'] for r in fixed])}  (target ≤ 1.5 s)")
    if profile_timed:
        fixed_profiled = fixed[-1]
    else:
        fixed_profiled = run_command(var, ["intake"], profile=profiles / "fixed.txt") if args.breakdown else None

    peer_runs, peer_cpu = [], []
    for _ in range(args.repeat):
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "peer_duckdb.py"), "--state", str(var / "state"),
             "--register", str(var / "register"), "--periode", periode, "--out", str(var / "peer")],
            check=True, capture_output=True,
        )
        peer_runs.append(time.perf_counter() - started)
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        peer_cpu.append(cpu_after.ru_utime - cpu_before.ru_utime + cpu_after.ru_stime - cpu_before.ru_stime)
    differences = compare_with_peer(var, periode)
    ratio = min(settle_runs) / min(peer_runs)
    print(f"PEER DuckDB settlement (rules + SF6111, own process): {figures(peer_runs, peer_cpu)}; "
          f"product/peer {ratio:.2f} wall, {min(settle_cpu) / max(min(peer_cpu), 1e-9):.2f} CPU  (target ≤ 1.0)")
    if differences:
        print("PEER DIFFERS from the product: " + "; ".join(differences))
        return 1
    print("PEER AGREES: same outcome for every active request, byte-identical SF6111 files")

    if args.breakdown:
        if not profile_timed:
            restore(var, "before-intake")
            intake_profiled = run_command(var, ["intake"], profile=profiles / "intake.txt")
            restore(var, "after-intake")
            settle_profiled = run_command(var, ["settle", periode], profile=profiles / "settle.txt")
        print_breakdown("intake (target ≤ 6 s)", intake_profiled)
        if fixed_profiled is not None:
            print_breakdown("fixed cost (`pensionstraek intake` with nothing waiting; target ≤ 1.5 s)", fixed_profiled)
        print_breakdown(f"settle {periode}", settle_profiled)
        if args.profiles:
            print(f"  profiles kept in {profiles}")
    args.national_figures = (min(intake_runs), min(settle_runs), min(intake_cpu), min(settle_cpu))
    return 0


def compare_with_peer(var: Path, periode: str) -> list[str]:
    """Differences between the product's outcomes and files and the peer's (empty: they agree)."""
    import polars as pl

    from contracts.sf6111 import TRAEK_SCHEMA

    columns = list(TRAEK_SCHEMA.names())
    product = pl.read_parquet(var / "state" / "periods" / periode / "afregning.parquet").select(columns)
    peer = pl.read_parquet(var / "peer" / "afregning.parquet").select(
        [pl.col(name).cast(dtype) for name, dtype in TRAEK_SCHEMA.items()]
    )
    problems = []
    keys = ["kommunekode", "anmodning_id"]
    only_product = product.join(peer, on=keys, how="anti").height
    only_peer = peer.join(product, on=keys, how="anti").height
    if only_product or only_peer:
        problems.append(f"{only_product} requests settled only by the product, {only_peer} only by the peer")
    joined = product.join(peer, on=keys, suffix="_peer")
    for column in columns:
        if column in keys:
            continue
        differ = joined.filter(~pl.col(column).eq_missing(pl.col(f"{column}_peer"))).height
        if differ:
            problems.append(f"{differ} requests differ in {column}")
    outgoing = var / "state" / "outgoing" / "SF6111" / periode
    product_files = {p.name: p.read_bytes() for p in outgoing.glob(f"SF6111_*_{periode.replace('-', '')}_001.xml")}
    peer_files = {p.name: p.read_bytes() for p in (var / "peer").glob("SF6111_*.xml")}
    if set(product_files) != set(peer_files):
        problems.append(f"SF6111 files: {len(product_files)} by the product, {len(peer_files)} by the peer")
    unequal = [name for name in sorted(set(product_files) & set(peer_files)) if product_files[name] != peer_files[name]]
    if unequal:
        problems.append(f"{len(unequal)} SF6111 files differ, e.g. {unequal[0]}")
    return problems


def growth(args: argparse.Namespace, base: Path, persons: int, instructions: int, periode: str) -> None:
    """Intake and settlement at each share of the scale in its own world, one command each (the
    100 % figure is the national run's own when it was made)."""
    rows = []
    for share in args.scales:
        if share == 1.0 and getattr(args, "national_figures", None):
            intake_s, settle_s, intake_cpu, settle_cpu = args.national_figures
        else:
            var = base / f"growth-{share}"
            var.mkdir()
            n = max(1, round(instructions * share))
            make_world(var, max(100, round(persons * share)), [periode])
            deliver(var, periode, n, seed=2)
            intake = run_command(var, ["intake"])
            route_exchange(var)
            settle = run_command(var, ["settle", periode])
            intake_s, settle_s, intake_cpu, settle_cpu = intake["wall_s"], settle["wall_s"], intake["cpu_s"], settle["cpu_s"]
            shutil.rmtree(var)
        rows.append((share, intake_s, settle_s, intake_cpu, settle_cpu))
        target = "  (targets at 100 %: intake ≤ 6 s, settle ≤ 4 s)" if share == 1.0 else ""
        print(f"GROWTH {share:4.0%} of the scale ({round(instructions * share):,} instructions, "
              f"{round(persons * share):,} persons): intake {intake_s:6.2f} s (CPU {intake_cpu:6.2f} s)  "
              f"settle {settle_s:6.2f} s (CPU {settle_cpu:6.2f} s){target}")
    if len(rows) >= 2:
        # Linear growth: the same time per instruction at every scale, less the fixed cost of a
        # command (FIXED COST above), which weighs more the smaller the scale.
        per = "  ".join(
            f"{share:.0%}: intake {i_cpu / (instructions * share / 1e5):5.2f} s, settle {s_cpu / (instructions * share / 1e5):5.2f} s"
            for share, _, _, i_cpu, s_cpu in rows
        )
        first, last = rows[0], rows[-1]
        factor = last[0] / first[0]
        print(f"GROWTH CPU seconds per 100,000 instructions: {per}")
        print(f"GROWTH {last[0]:.0%} / {first[0]:.0%} ({factor:.0f}× the work): intake {last[3] / first[3]:.2f}×, "
              f"settle {last[4] / first[4]:.2f}× in CPU  (about linear: ≤ {factor:.0f}×)")


def route_exchange(var: Path) -> None:
    from pipelines.emulator import route

    route(var / "exchange")


def months(args: argparse.Namespace, base: Path, persons: int, instructions: int) -> int:
    """`args.months` monthly cycles on one state store; see the module docstring."""
    import dagster as dg
    import polars as pl

    from pipelines.calendar import TZ, cutoff, first_day, first_open_period, next_periode, previous_periode
    from pipelines.emulator import route
    from pipelines.partitions import periode_partitions

    # The last `months` periods up to the first open one. A code location whose periods are a
    # fixed monthly range can only settle the months in that range.
    last = first_open_period(dt.datetime.now(TZ))
    wanted = [last]
    while len(wanted) < args.months:
        wanted.insert(0, previous_periode(wanted[0]))
    if isinstance(periode_partitions, dg.MonthlyPartitionsDefinition):
        settleable = set(periode_partitions.get_partition_keys())
        periods = [p for p in wanted if p in settleable]
    else:
        periods = wanted
    if len(periods) < args.months:
        print(f"MONTHS note: this code location settles only {len(periods)} of the {args.months} months "
              f"{wanted[0]}..{wanted[-1]} (its periods start {periods[0] if periods else '?'})")

    var = base / "months"
    var.mkdir()
    n = max(10, round(instructions * args.month_scale))
    people = max(200, round(persons * args.month_scale))
    started = time.perf_counter()
    make_world(var, people, periods, seed=3)
    print(f"MONTHS {len(periods)} cycles at {args.month_scale:.1%}: {n:,} instructions a month (each lasting "
          f"its month), {people:,} persons; register made in {time.perf_counter() - started:.1f} s")
    kommuner = sorted(pl.read_parquet(var / "register" / "pensionssager" / f"{periods[0]}.parquet")["bopaelskommune"].unique().to_list())
    # In this process, on one persistent instance: the start-up of a command is the same every
    # month (FIXED COST above), so the curve shows what grows with the history.
    os.environ.update(configuration(var))
    import pandera.polars  # noqa: F401  (imported by the first run otherwise: month 1 would pay it)

    import pipelines.definitions  # noqa: F401

    first_cycle = None
    for number, periode in enumerate(periods, start=1):
        # Received on the first of the month, the correction a day later: both before P's cut-off.
        received = dt.datetime.combine(first_day(periode), dt.time(9), TZ)
        assert received + dt.timedelta(days=1) < cutoff(periode)
        deliver(var, periode, n, seed=100 + number, received=received, til_periode=periode)
        intake_s, intake_cpu = run_in_process("sf6110_intake")
        route(var / "exchange")
        settle_s, settle_cpu = run_in_process("maanedlig_afregning", first_periode=periode)
        route(var / "exchange")
        deliver(var, periode, max(1, n // 100), seed=10_000 + number, received=received + dt.timedelta(days=1),
                til_periode=periode, kommuner=kommuner[:3])
        correction_s = run_in_process("sf6110_intake")[0] + run_in_process("maanedlig_afregning", first_periode=periode)[0]
        route(var / "exchange")
        cycle = intake_cpu + settle_cpu
        first_cycle = first_cycle or cycle
        print(f"MONTH {number:2d} {periode}: intake {intake_s:6.2f} s  settle {settle_s:6.2f} s  "
              f"(CPU {intake_cpu:5.2f} + {settle_cpu:5.2f} s)  correction {correction_s:6.2f} s  "
              f"state {folder_mib(var / 'state'):7.1f} MiB  ({cycle / first_cycle:4.2f}× month 1 in CPU)")
        args.month_cycles.append((intake_s + settle_s, cycle))
    if len(args.month_cycles) >= 2:
        for what, column in (("wall", 0), ("CPU", 1)):
            values = [c[column] for c in args.month_cycles]
            head, tail = statistics.median(values[:3]), statistics.median(values[-3:])
            print(f"MONTHS month {len(values)} / month 1 ({what}, intake + settle): {values[-1] / values[0]:.2f}×; "
                  f"median of the last 3 / first 3: {tail / head:.2f}×  (target ≤ 1.2×)")
    return 0


def run_in_process(job: str, **kwargs) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of `job` in this process; raises when the run fails."""
    from pipelines.runner import run_job

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    outcome = run_job(job, **kwargs)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    if not outcome.success:
        raise RuntimeError(f"{job} failed: " + "; ".join(outcome.problems))
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def compile_bytecode() -> None:
    """The project's modules compiled to bytecode, as an installed package has them (pip compiles
    every module it installs; an editable install writes them at the first import). Without it, a
    machine with PYTHONDONTWRITEBYTECODE set would compile the 70 modules from source in every
    command measured (~0.4 s of each one's fixed cost)."""
    import compileall

    for package in ("pipelines", "assets", "contracts"):
        compileall.compile_dir(ROOT / package, quiet=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, default=1.0, help="share of national scale (1.0: 1.5 M persons, 300 k instructions)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each command (min and median are printed)")
    parser.add_argument("--months", type=int, default=36, help="monthly cycles on one state store (0: none)")
    parser.add_argument("--month-scale", type=float, default=0.1, help="share of national scale in the monthly cycles")
    parser.add_argument("--scales", default="0.1,0.3,1.0", help="growth: shares of --scale to run")
    parser.add_argument("--no-breakdown", dest="breakdown", action="store_false", help="skip the profiled runs")
    parser.add_argument("--profiles", help="keep pyinstrument's text profiles in this folder")
    parser.add_argument("--quick", action="store_true", help="a tiny world: checks that the benchmark works")
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if args.quick:
        # One run of each command (it is also the profiled one), 60 instructions, two months of
        # 30: enough to print every figure and compare with the peer, in well under a minute.
        args.scale, args.repeat, args.months, args.month_scale = 0.0002, 1, 2, 0.0001
        args.scales = "1.0"  # the growth figure from the national run itself: no second world
    args.scales = [float(s) for s in args.scales.split(",") if s.strip()]
    args.month_cycles = []
    persons = max(300, round(NATIONAL_PERSONS * args.scale))
    instructions = max(30, round(NATIONAL_INSTRUCTIONS * args.scale))

    compile_bytecode()
    from pipelines.calendar import TZ, first_open_period

    periode = first_open_period(dt.datetime.now(TZ))
    print(f"benchmark on {os.cpu_count()} cores, {dt.datetime.now(TZ):%Y-%m-%d %H:%M}, load average "
          f"{os.getloadavg()[0]:.1f} (figures are noisy when the machine is shared)")
    with tempfile.TemporaryDirectory(prefix="pensionstraek-bench-") as tmp:
        base = Path(tmp)
        (base / "national").mkdir()
        status = national(args, base / "national", persons, instructions, periode)
        if status:
            return status
        shutil.rmtree(base / "national")
        if args.scales:
            growth(args, base, persons, instructions, periode)
        if args.months:
            status = months(args, base, NATIONAL_PERSONS, NATIONAL_INSTRUCTIONS)
    print(f"PEAK MEMORY of the benchmark's own process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    return status


if __name__ == "__main__":
    sys.exit(main())
