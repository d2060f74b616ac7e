"""The command's SQLite instance (pipelines/sqlite_instance.py, issue 11 "fixed cost"): the same
tables and answers as Dagster's own SQLite storages, through engines kept for the command."""

from __future__ import annotations

import sys
import threading

import dagster as dg
import sqlalchemy as sa

from pipelines import runner
from pipelines.sqlite_instance import _EventLogStorage


def test_the_index_tables_are_found_and_a_table_made_later_is_found_too(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    storage = runner.instance().event_log_storage
    assert isinstance(storage, _EventLogStorage)
    assert storage.has_table("dynamic_partitions") and storage.has_table("asset_check_executions")
    # A missing table is not remembered as missing: made by another process (a migration), it is
    # found at the next question.
    assert not storage.has_table("pensionstraek_later")
    engine = sa.create_engine(storage.conn_string_for_shard("index"))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE pensionstraek_later (x INTEGER)"))
    engine.dispose()
    assert storage.has_table("pensionstraek_later")


def test_asking_for_a_table_while_dagster_holds_the_index_connection_does_not_wait(tmp_path, monkeypatch):
    # Dagster asks has_table inside its own index transaction (asset event tags): the answer must
    # not need the storage's lock that transaction holds.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    storage = runner.instance().event_log_storage
    answers: list[bool] = []
    with storage.index_transaction():
        asking = threading.Thread(target=lambda: answers.append(storage.has_table("asset_event_tags")), daemon=True)
        asking.start()
        asking.join(timeout=30)
    assert answers == [True]


def test_a_runs_output_is_in_its_compute_logs_as_the_ui_reads_them(tmp_path, monkeypatch):
    # The command's capture writes Dagster's own files (without mirroring them to the terminal):
    # the UI reads a run's stdout and stderr through the instance's compute-log manager.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    on = runner.instance()

    @dg.op
    def speaks() -> None:
        print("til stdout")
        print("til stderr", file=sys.stderr)

    @dg.job
    def speaking():
        speaks()

    result = speaking.execute_in_process(instance=on)
    [captured] = [e for e in on.all_logs(result.run_id) if e.dagster_event_type == dg.DagsterEventType.LOGS_CAPTURED]
    log_key = [result.run_id, "compute_logs", captured.dagster_event.logs_captured_data.file_key]
    manager = on.compute_log_manager
    assert manager.is_capture_complete(log_key)
    data = manager.get_log_data(log_key)
    assert b"til stdout" in data.stdout and b"til stderr" in data.stderr


def test_a_dynamic_partition_found_is_remembered_until_this_process_deletes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    on = runner.instance()
    assert not on.has_dynamic_partition("periode", "2026-05")
    on.add_dynamic_partitions("periode", ["2026-05"])
    assert on.has_dynamic_partition("periode", "2026-05")
    on.delete_dynamic_partition("periode", "2026-05")
    assert not on.has_dynamic_partition("periode", "2026-05")
    on.add_dynamic_partitions("periode", ["2026-05"])  # as sync_periods re-adds it, in order
    assert on.has_dynamic_partition("periode", "2026-05")
