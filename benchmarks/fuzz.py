"""The long fuzz run, by hand (docs/operations.md "Fuzzing"): the properties of tests/test_fuzz.py
with a large, random budget, and optionally a coverage-guided atheris run over the same readers.

    .venv/bin/python benchmarks/fuzz.py                          # 5,000 per reader, 100 intakes
    .venv/bin/python benchmarks/fuzz.py --examples 50000 --intake-examples 500
    .venv/bin/python benchmarks/fuzz.py --atheris 600            # + 10 minutes of atheris (pip install atheris==3.0.0)

Prints what it ran and how the readers answered; exits 1 on the first counterexample, which
hypothesis prints in full (with the seed to replay it)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__" and "--atheris-child" in sys.argv:
    # Coverage for atheris: the readers must be instrumented as they are first imported.
    import atheris

    with atheris.instrument_imports(include=["contracts"]):
        import contracts.envelope  # noqa: F401
        import contracts.sf6110  # noqa: F401
        import contracts.xmlsafe  # noqa: F401

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from contracts.envelope import EnvelopeError, decode_metadata, decode_receipt, decode_trigger  # noqa: E402
from contracts.sf6110 import FileRejected, decode_request_file  # noqa: E402
from tests import fuzzing  # noqa: E402
from tests.test_fuzz import check_envelope_reader, check_intake, check_request_reader, deliveries  # noqa: E402

READERS = {"trigger": decode_trigger, "metadata": decode_metadata, "receipt": decode_receipt}
VALID = {"trigger": fuzzing.valid_triggers, "metadata": fuzzing.valid_metadata, "receipt": fuzzing.valid_receipts}


def long_settings(examples: int, seed: int | None):
    chosen = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )
    return (lambda test: chosen(__import__("hypothesis").seed(seed)(test))) if seed is not None else chosen


def run(title: str, test, examples: int) -> None:
    started = time.perf_counter()
    test()
    print(f"{title:42} {examples:>8} examples  {time.perf_counter() - started:7.1f} s")


def hypothesis_runs(examples: int, intake_examples: int, seed: int | None) -> Counter:
    outcomes: Counter = Counter()
    wrap = long_settings(examples, seed)

    @wrap
    @given(fuzzing.mutated(fuzzing.valid_request_files()))
    def sf6110(data):
        decoded = decode_request_file(data)
        outcomes["SF6110 " + (decoded.kode if isinstance(decoded, FileRejected) else "read")] += 1
        check_request_reader(data)

    run("SF6110 reader + judge + kvittering", sf6110, examples)
    def envelope_property(kind: str, decode):
        @wrap
        @given(fuzzing.mutated(VALID[kind]()))
        def envelope(data):
            try:
                decode(data)
                outcomes[f"{kind} read"] += 1
            except EnvelopeError:
                outcomes[f"{kind} EnvelopeError"] += 1
            check_envelope_reader(decode, data)

        return envelope

    for kind, decode in READERS.items():
        run(f"envelope reader: {kind}", envelope_property(kind, decode), examples)

    if intake_examples:

        @long_settings(intake_examples, seed)
        @given(deliveries())
        def intake(batch):
            check_intake(batch)
            outcomes["intake batches"] += 1
            outcomes["intake deliveries"] += len(batch)

        run("intake end to end (local exchange, Dagster)", intake, intake_examples)
    return outcomes


def atheris_run(seconds: int) -> None:
    """Coverage-guided bytes over the four readers, seeded with valid files; a reader that raises
    anything but its documented rejection is a crash atheris reports and saves."""
    try:
        import atheris
    except ImportError:
        raise SystemExit("atheris is not installed: .venv/bin/pip install atheris==3.0.0")

    corpus = Path(tempfile.mkdtemp(prefix="pensionstraek-fuzz-corpus-"))
    from hypothesis import find

    for i, strategy in enumerate([fuzzing.valid_request_files(), *(v() for v in VALID.values())]):
        (corpus / f"seed-{i}").write_bytes(find(strategy, lambda _: True))

    def one_input(data: bytes) -> None:
        decoded = decode_request_file(data)
        assert decoded is not None
        for decode in READERS.values():
            try:
                decode(data)
            except EnvelopeError:
                pass

    print(f"atheris for {seconds} s, corpus {corpus}")
    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", "-max_len=65536", str(corpus)], one_input)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=5000, help="examples per reader property")
    parser.add_argument("--intake-examples", type=int, default=100, help="intake runs, 1-4 deliveries each")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (hypothesis seed)")
    parser.add_argument("--atheris", type=int, default=0, metavar="SECONDS", help="then atheris for this long")
    parser.add_argument("--atheris-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.atheris_child:
        atheris_run(args.atheris_child)  # does not return: libFuzzer exits with its own status

    started = time.perf_counter()
    outcomes = hypothesis_runs(args.examples, args.intake_examples, args.seed)
    print("\nhow the readers answered:")
    for key, n in sorted(outcomes.items()):
        print(f"  {key:32} {n:>8}")
    print(f"no counterexample in {time.perf_counter() - started:.0f} s")
    if args.atheris:
        # A fresh process, so that the readers are instrumented as they are imported.
        return subprocess.run([sys.executable, __file__, "--atheris-child", str(args.atheris)]).returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
