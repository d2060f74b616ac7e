"""The default SQLite instance (DAGSTER_HOME without a storage section), used by a command for the
one process it lives: the same files and tables as Dagster's own SQLite storages, reached through
one SQLAlchemy engine per database file, and its connection, kept for the command instead of a
new engine and a new connection for every statement.

Dagster 1.13's SQLite storages call `create_engine` on every connection (NullPool): about 7 ms
each on the development machine, and a run stores every event through two or three of them (the
run's own database, the index, the asset tables). An empty `pensionstraek intake` made ~210, a
national intake ~900: a second and five seconds of a command's time (issue 11, "fixed cost").
Closing a WAL database's last connection also checkpoints it (an fdatasync of the database and of
the WAL): with a connection per statement, nearly every event did so (an empty intake: 330
fdatasyncs, now 70). A kept connection is between statements what a closed one is: each use is
one transaction, committed or rolled back when it ends (SQLAlchemy's reset on return), so it holds
no lock and no read snapshot that another process waits for. What reaches the disk at a commit is
the same; SQLite checkpoints when the WAL reaches its size, and the engines are disposed of (their
connections closed, the WAL checkpointed) when the command's process exits.

Dagster's storages also ask the schema what it has (a table, a column, a data migration done),
and whether a dynamic partition exists, before most statements, each time: a yes is remembered
for the command (a migration adds, it does not take away while a command runs; `_once_true`).
The run's stdout and stderr go to the same compute-log files as with Dagster's local compute-log
manager, without its mirror to the terminal (four processes a run; `_ComputeLogManager`).

Only an instance whose storages are exactly Dagster's SQLite classes (and its compute logs the
local files) is changed; PostgreSQL (deploy/dagster.yaml) and any other storage are left as they
are. The webserver and the daemon open the same files with Dagster's own classes."""

from __future__ import annotations

import atexit
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._utils import ensure_file, touch_file
from sqlalchemy import event

_engines_lock = threading.Lock()
# The engines alive, disposed of at exit. Weakly: an instance dropped (a test's) takes its engines
# and their open connections with it.
_live_engines: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _dispose_engines() -> None:
    for engine in list(_live_engines):
        engine.dispose()


def _engine(storage, conn_string: str, **kwargs):
    """The storage's engine for `conn_string`, made on first use."""
    with _engines_lock:
        engines = storage.__dict__.setdefault("_pensionstraek_engines", {})
        engine = engines.get(conn_string)
        if engine is None:
            # SQLAlchemy's pool for a SQLite file: the connections are kept, and are not bound to
            # the thread that made them.
            engine = engines[conn_string] = create_engine(conn_string, **kwargs)
            event.listen(engine, "connect", _wal_normal)
            _live_engines.add(engine)
        return engine


def _wal_normal(connection, _record) -> None:
    # SQLite's advice for WAL databases (Dagster makes every one WAL): commits wait for no fsync;
    # a killed process loses nothing, a power cut at most the last events (docs/decisions.md).
    connection.execute("PRAGMA synchronous=NORMAL")


class _RunStorage(SqliteRunStorage):
    @contextmanager
    def connect(self) -> Iterator:
        with _engine(self, self._conn_string).connect() as conn:
            with conn.begin():
                yield conn

    def has_run_stats_index_cols(self) -> bool:
        # Asked (a PRAGMA of the runs table) whenever a run is stored or read: 7 times in an empty intake.
        return _once_true(self, ("runs columns", "start_time, end_time"), super().has_run_stats_index_cols)

    def has_built_index(self, migration_name: str) -> bool:
        # Whether a data migration of the runs is complete, asked before run queries.
        base = super()
        return _once_true(self, ("secondary index", migration_name), lambda: base.has_built_index(migration_name))


class _ScheduleStorage(SqliteScheduleStorage):
    @contextmanager
    def connect(self) -> Iterator:
        with _engine(self, self._conn_string).connect() as conn:
            with conn.begin():
                yield conn


class _EventLogStorage(SqliteEventLogStorage):
    @contextmanager
    def _connect(self, shard: str) -> Iterator:
        # As SqliteEventLogStorage._connect, with the engine kept per shard.
        with self._db_lock:
            engine = _engine(
                self, self.conn_string_for_shard(shard), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
            )
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def has_table(self, table_name: str) -> bool:
        # Dagster asks whether the index has a table (asset_event_tags, dynamic_partitions,
        # asset_check_executions, ...) before most statements that use one, each time through a
        # new engine: ~80 times in a national settlement.
        # Not through `index_connection`: Dagster asks while it holds that (`_db_lock`).
        def ask() -> bool:
            engine = _engine(
                self, self.conn_string_for_shard(INDEX_SHARD_NAME), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
            )
            with engine.connect() as conn:
                return engine.dialect.has_table(conn, table_name)

        return _once_true(self, ("table", table_name), ask)

    def _has_asset_key_col_on_connection(self, conn, column_name: str) -> bool:
        # Asked (a PRAGMA of the asset_keys table) for every asset event and asset record read:
        # 20 times in an empty intake. `has_asset_key_col` asks through this one.
        base = super()
        return _once_true(
            self, ("asset_keys column", column_name), lambda: base._has_asset_key_col_on_connection(conn, column_name)
        )

    def has_secondary_index(self, name: str) -> bool:
        # Whether a data migration of the index is complete, asked before asset queries: 12 times
        # in an empty intake.
        base = super()
        return _once_true(self, ("secondary index", name), lambda: base.has_secondary_index(name))

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        # Asked for each partition key of each step's events and checks: 50 times in a settlement
        # of one period. A period or a file partition is never removed for good (sync_periods
        # deletes a period only to add it again in order, pipelines/partitions.py), and one this
        # process deletes is forgotten, so a yes stays true while the command runs.
        base = super()
        return _once_true(
            self, ("dynamic partition", partitions_def_name, partition_key),
            lambda: base.has_dynamic_partition(partitions_def_name, partition_key),
        )

    def delete_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> None:
        super().delete_dynamic_partition(partitions_def_name, partition_key)
        self.__dict__.get("_pensionstraek_known", set()).discard(("dynamic partition", partitions_def_name, partition_key))


def _once_true(storage, question: tuple[str, ...], ask) -> bool:
    """`ask()`, remembered by `storage` once it is True, for a question whose yes stays a yes while
    a command runs. What Dagster asks of a schema (a table, a column, a data migration completed)
    is made by a migration and never undone; a dynamic partition, see `has_dynamic_partition`. A
    no is asked again (another process may migrate, or add the partition, meanwhile)."""
    known = storage.__dict__.setdefault("_pensionstraek_known", set())
    if question not in known and ask():
        known.add(question)
    return question in known


class _ComputeLogManager(LocalComputeLogManager):
    """The run's stdout and stderr captured into the same files as Dagster's (the UI's "stdout" and
    "stderr" of the run, and the file saying the capture is complete), without mirroring them back
    to the terminal. Dagster's mirror is a `tail -F` of each file and a Python process watching
    each tail: four processes started and stopped per run, for output the command does not show
    (it prints its own summary, and a failure's trace stays in the run: operations.md "The command
    line")."""

    @contextmanager
    def capture_logs(self, log_key) -> Iterator[CapturedLogContext]:
        outpath = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        errpath = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        ensure_file(outpath)
        ensure_file(errpath)
        with redirect_to_file(sys.stdout, outpath), redirect_to_file(sys.stderr, errpath):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))


_FOR_COMMAND = {
    SqliteRunStorage: _RunStorage,
    SqliteScheduleStorage: _ScheduleStorage,
    SqliteEventLogStorage: _EventLogStorage,
    LocalComputeLogManager: _ComputeLogManager,
}


def for_command(instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """`instance` for a command's process: its SQLite storages reached through kept engines, its
    compute logs captured without a mirror (see the module docstring)."""
    parts = (instance.run_storage, instance.event_log_storage, instance.schedule_storage, instance.compute_log_manager)
    for part in parts:
        replacement = _FOR_COMMAND.get(type(part))
        if replacement is not None:
            part.__class__ = replacement
    return instance


# Every SQLite storage checks its schema's alembic revision when it opens a database, and a new
# run's database is stamped too: each builds a ScriptDirectory, which reads and compiles Dagster's
# ~90 migration scripts again (five times in an empty `pensionstraek intake`, about 70 ms; issue
# 11, "fixed cost"). The scripts are the installed package's and do not change while a command
# runs, so in a process that imports this module (a command, or the tests) the directory is made
# once per script location and configuration (Dagster's three storages have identical alembic.ini
# files beside them) and then shared; what alembic reads from it is the same.
_script_directories: dict[tuple, ScriptDirectory] = {}
_script_directories_lock = threading.Lock()
_script_directory_from_config = ScriptDirectory.from_config.__func__


def _kept_script_directory(cls, config: AlembicConfig) -> ScriptDirectory:
    ini = Path(config.config_file_name).read_bytes() if config.config_file_name else b""
    key = (cls, ini, config.get_alembic_option("script_location"))
    with _script_directories_lock:
        script = _script_directories.get(key)
        if script is None:
            script = _script_directories[key] = _script_directory_from_config(cls, config)
        return script


ScriptDirectory.from_config = classmethod(_kept_script_directory)
