"""The state store's compacted index of decisions and ledger (pipelines/state.py, issue 11): what
ledger() and decisions() return never depends on whether, how often or how far compaction ran,
the originals are never touched, and a compaction that dies half-way changes nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from contracts.ledger import LEDGER_SCHEMA, empty_ledger
from pipelines.state import StateStore

UTC = dt.timezone.utc


def commit(store: StateStore, number: int) -> None:
    """Decision `number`: every third file is rejected (no ledger rows), the others register
    one or two instructions."""
    uuid = f"uuid-{number:04d}"
    received = dt.datetime(2027, 1, 1, tzinfo=UTC) + dt.timedelta(minutes=number % 7)
    rows = 0 if number % 3 == 0 else 1 + number % 2
    registered = pl.DataFrame(
        {
            "kommunekode": ["0101"] * rows,
            "anmodning_id": [f"A{number}-{i}" for i in range(rows)],
            "cpr": ["0101401234"] * rows,
            "handling": ["OPRET"] * rows,
            "traekart": ["MAD"] * rows,
            "fra_periode": ["2027-02"] * rows,
            "til_periode": [None] * rows,
            "beloeb_oere": [10_000 + number] * rows,
            "modtaget": [received] * rows,
            "filnavn": [f"SF6110_0101_{number}.xml"] * rows,
            "file_transfer_uuid": [uuid] * rows,
            "position": list(range(rows)),
        },
        schema=LEDGER_SCHEMA,
    )
    decision = {
        "file_transfer_uuid": uuid,
        "filnavn": f"SF6110_0101_{number}.xml",
        "modtaget": received.isoformat(),
        "status": "AFVIST" if rows == 0 else "MODTAGET",
        "antal_modtaget": rows,
    }
    outcomes = pl.DataFrame({"position": list(range(rows)), "status": ["MODTAGET"] * rows})
    store.commit_decision(decision, outcomes, registered)


def as_read(store: StateStore) -> tuple[pl.DataFrame, list[dict]]:
    return store.ledger().sort("file_transfer_uuid", "position"), store.decisions()


def originals(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and "index" not in p.parts}


def test_reads_are_the_same_before_and_after_every_compaction_and_merge(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    compacted = 0
    for number in range(1, 41):
        commit(store, number)
        expected_ledger, expected_decisions = as_read(store)
        before = originals(tmp_path)
        compacted += store.compact(loose_limit=3, segment_limit=2)
        assert originals(tmp_path) == before  # the auditors' files are never touched
        ledger, decisions = as_read(store)
        assert ledger.equals(expected_ledger)
        assert decisions == expected_decisions
        assert store.ledger_rows() == ledger.height  # counted from the footers alike
    assert compacted >= 10
    manifest = store.read_json("index/manifest.json")
    assert 1 <= len(manifest["segments"]) <= 2  # merged: a run reads a few files, not 40
    assert sum(len(s["uuids"]) for s in manifest["segments"]) >= 36
    assert store.ledger().height == sum(0 if n % 3 == 0 else 1 + n % 2 for n in range(1, 41))
    # Decisions come oldest received first, as without the index.
    assert [d["modtaget"] for d in store.decisions()] == sorted(d["modtaget"] for d in store.decisions())


def test_a_segment_the_manifest_does_not_name_counts_for_nothing(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    for number in range(1, 6):
        commit(store, number)
    expected = as_read(store)
    # A compaction that died after writing its segment, before the manifest: an orphan segment
    # with different content than the files it claims.
    store._write_segment({"segments": []}, ["uuid-0001"], [{"bogus": True, "modtaget": "x", "filnavn": "x"}], empty_ledger())
    ledger, decisions = as_read(store)
    assert ledger.equals(expected[0]) and decisions == expected[1]
    # The next compaction writes over the orphan and the reads still agree.
    assert store.compact(loose_limit=2)
    ledger, decisions = as_read(store)
    assert ledger.equals(expected[0]) and decisions == expected[1]


def test_removing_the_index_rebuilds_it_from_the_originals(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    for number in range(1, 20):
        commit(store, number)
        store.compact(loose_limit=4, segment_limit=2)
    expected = as_read(store)
    for path in (tmp_path / "index").iterdir():
        path.unlink()
    assert as_read(store)[0].equals(expected[0]) and as_read(store)[1] == expected[1]
    assert store.compact(loose_limit=4)
    assert as_read(store)[0].equals(expected[0]) and as_read(store)[1] == expected[1]


def test_an_uncommitted_ledger_file_is_not_read_from_the_index_either(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    for number in range(1, 8):
        commit(store, number)
    # A run that died after writing its ledger, before its decision (the commit point).
    store.write_frame("ledger/uuid-9999.parquet", store.ledger().head(1).with_columns(file_transfer_uuid=pl.lit("uuid-9999")))
    store.compact(loose_limit=2)
    assert "uuid-9999" not in store.ledger()["file_transfer_uuid"].to_list()
    assert store.ledger_rows() == store.ledger().height
    assert all(d["file_transfer_uuid"] != "uuid-9999" for d in store.decisions())


def test_the_ledger_is_counted_alike_on_any_filesystem(tmp_path: Path) -> None:
    """ledger_rows reads the footers of local files in place and of others through fsspec."""
    for url in (str(tmp_path), f"memory://{tmp_path.name}"):
        store = StateStore(url)
        for number in range(1, 12):
            commit(store, number)
            store.compact(loose_limit=3, segment_limit=2)
            assert store.ledger_rows() == store.ledger().height
        assert store.ledger_rows() == sum(0 if n % 3 == 0 else 1 + n % 2 for n in range(1, 12))


def test_the_ledger_of_requests_has_every_row_of_each_selected_request_and_no_other(tmp_path: Path) -> None:
    """ledger_of_requests (what a settlement reads): a request is in when one of its rows is
    selected, and then with all its rows, those of other files (compacted or loose) too."""
    for url in (str(tmp_path), f"memory://{tmp_path.name}"):
        store = StateStore(url)
        for number in range(1, 12):
            commit(store, number)
            store.compact(loose_limit=3, segment_limit=2)
        # A later file stops request A5-0, registered by uuid-0005 (now in a segment).
        stop = store.ledger().filter(pl.col("anmodning_id") == "A5-0").with_columns(
            handling=pl.lit("OPHOER"), traekart=pl.lit(None), beloeb_oere=pl.lit(None),
            file_transfer_uuid=pl.lit("uuid-0100"), filnavn=pl.lit("SF6110_0101_100.xml"),
        )  # fmt: skip
        decision = {"file_transfer_uuid": "uuid-0100", "filnavn": "SF6110_0101_100.xml",
                    "modtaget": "2027-01-02T00:00:00+00:00", "status": "MODTAGET", "antal_modtaget": 1}  # fmt: skip
        store.commit_decision(decision, pl.DataFrame({"position": [0], "status": ["MODTAGET"]}), stop)
        selected = store.ledger_of_requests((pl.col("file_transfer_uuid") == "uuid-0005") & (pl.col("handling") == "OPRET"))
        expected = store.ledger().filter(pl.col("anmodning_id").is_in(["A5-0", "A5-1"]))
        assert selected.schema == LEDGER_SCHEMA
        assert selected.sort("file_transfer_uuid", "anmodning_id").equals(expected.sort("file_transfer_uuid", "anmodning_id"))
        assert sorted(selected["handling"].to_list()) == ["OPHOER", "OPRET", "OPRET"]
        assert store.ledger_of_requests(pl.col("anmodning_id") == "none").height == 0
