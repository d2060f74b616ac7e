"""Hostile input, fuzzed (issue 7, item 6): grammar-aware mutations of valid files (tests/fuzzing.py)
through the SF6110 reader, the envelope readers, and intake end to end on a local exchange.

Invariants: a reader answers with its documented rejection (FileRejected F01–F03, EnvelopeError)
and nothing else escapes it, and a rejection never quotes a CPR; through intake, every delivery
is answered with a kvittering or quarantined, its raw bytes are archived, nothing is left in IN/,
and the run succeeds (exit status 0) because the product itself is healthy.

The budget here is small and derandomized (the same examples on every run, no example database),
so CI is reproducible; `python benchmarks/fuzz.py` runs the same properties with a large budget
(docs/operations.md "Fuzzing")."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import dagster as dg
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.envelope import (
    EnvelopeError,
    FileDescriptor,
    FileMetadata,
    decode_metadata,
    decode_receipt,
    decode_trigger,
    encode_metadata,
)
from contracts.sf6110 import INSTRUCTION_SCHEMA, FileRejected, RequestFile, decode_request_file, decode_kvittering
from pipelines.intake import quarantined
from tests.fuzzing import (
    mutated,
    unmasked,
    valid_metadata,
    valid_receipts,
    valid_request_files,
    valid_triggers,
)
from tests.test_intake import event_texts, write_pensionssager
from tests.test_sf6110_properties import judge_and_answer
from tests.world import World

EXAMPLES = int(os.environ.get("PENSIONSTRAEK_FUZZ_EXAMPLES", "150"))  # per reader property
INTAKE_EXAMPLES = int(os.environ.get("PENSIONSTRAEK_FUZZ_INTAKE_EXAMPLES", "6"))


def budget(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=EXAMPLES <= 1000,  # in the suite: the same examples every run
        database=None,
        suppress_health_check=list(HealthCheck),  # a loaded CI machine must not turn a budget into a failure
    )


# --- the readers ------------------------------------------------------------------------------------


def check_request_reader(data: bytes) -> None:
    decoded = decode_request_file(data)
    assert isinstance(decoded, (RequestFile, FileRejected))
    if isinstance(decoded, FileRejected):
        assert decoded.kode in ("F01", "F02", "F03"), decoded
        assert unmasked([decoded.reason]) == []
    else:
        assert decoded.instructions.schema == INSTRUCTION_SCHEMA
    judge_and_answer(data)  # the judge and the kvittering it leads to hold as well (no CPR, valid)


def check_envelope_reader(decode, data: bytes) -> None:
    try:
        decode(data)
    except EnvelopeError as exc:  # the one documented rejection; anything else fails the test
        assert unmasked([str(exc)]) == []


@budget(EXAMPLES)
@given(mutated(valid_request_files()))
def test_the_sf6110_reader_rejects_any_mutation_with_its_code(data):
    check_request_reader(data)


@budget(EXAMPLES)
@given(st.sampled_from([(decode_trigger, "trigger"), (decode_metadata, "metadata"), (decode_receipt, "receipt")]), st.data())
def test_the_envelope_readers_raise_nothing_but_envelope_error(reader, data):
    decode, kind = reader
    valid = {"trigger": valid_triggers(), "metadata": valid_metadata(), "receipt": valid_receipts()}[kind]
    check_envelope_reader(decode, data.draw(mutated(valid)))


def test_the_mutations_reach_every_outcome():
    """The fuzzer is not blind: at this budget its files are accepted, and rejected with each of
    F01, F02 and F03 (a mutation engine that only made broken XML would test one branch)."""
    seen: set[str] = set()

    # The streaming reader stops at a file's first fault, so F03 (a whole file read, then its
    # count compared) needs more mutations than the readers' budget to be reached (~10 s).
    @budget(max(EXAMPLES, 600))
    @given(mutated(valid_request_files()))
    def collect(data):
        decoded = decode_request_file(data)
        seen.add(decoded.kode if isinstance(decoded, FileRejected) else "read")

    collect()
    assert {"read", "F01", "F02", "F03"} <= seen, seen


# --- end to end through intake ------------------------------------------------------------------


@st.composite
def deliveries(draw) -> list[tuple[str, bytes, bytes]]:
    """1–4 deliveries as the platform leaves them in IN/: a data file (valid or mutated SF6110)
    and its metadata (valid, or mutated)."""
    found = []
    for i in range(draw(st.integers(1, 4))):
        name = f"SF6110_0101_2027010510{i:02d}00.xml"
        data = draw(mutated(valid_request_files()) | valid_request_files())
        metadata = encode_metadata(
            FileMetadata(
                str(uuid.UUID(int=draw(st.integers(0, 2**64)) + (i << 100))),  # unique per delivery
                FileDescriptor(name, len(data), "kp", ("udk-pension",)),
            )
        )
        if draw(st.integers(0, 3)) == 0:
            metadata = draw(mutated(st.just(metadata)))
        found.append((name, data, metadata))
    return found


def check_intake(batch: list[tuple[str, bytes, bytes]]) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-intake-") as folder:
        w = World(Path(folder), dg.DagsterInstance.ephemeral())
        write_pensionssager(w.register_dir)
        inbox = w.inbox("udk-pension")
        for name, data, metadata in batch:
            (inbox / name).write_bytes(data)
            (inbox / f"{name}.metadata").write_bytes(metadata)

        outcome = w.intake()

        assert outcome.success, outcome.problems  # exit status 0: nothing of ours is broken
        store = w.store()
        decided = {d["filnavn"]: d for d in store.decisions()}
        held = {q["filnavn"] for q in quarantined(store)}
        out = w.exchange_root / "udk-pension" / "OUT"
        for name, data, metadata in batch:
            assert (name in decided) != (name in held), name  # answered or quarantined, never both
            if name in decided:
                d = decided[name]
                assert store.read(f"archive/received/{d['file_transfer_uuid']}/{name}") == data
                kvittering = out / f"SF6110K_{d['kommunekode']}_{d['file_transfer_uuid']}.xml"
                header, _ = decode_kvittering(kvittering.read_bytes())
                assert (header["modtaget_filnavn"], header["status"]) == (name, d["status"])
            else:
                archived = [p for p in (w.state_dir / "archive" / "quarantine").rglob(name) if p.name == name]
                assert [p.read_bytes() for p in archived] == [data]
        assert w.in_names("udk-pension") == []
        assert unmasked(event_texts(w) + outcome.problems) == []
        w.instance.dispose()


@budget(INTAKE_EXAMPLES)
@given(deliveries())
def test_intake_answers_or_quarantines_every_hostile_delivery(batch):
    check_intake(batch)
